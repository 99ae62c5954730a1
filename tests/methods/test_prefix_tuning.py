"""Prefix tuning, our own behaviour (no torch): layout, shapes, masks, gating, composition, eject, files.

Spec: PREFIX-1 .. PREFIX-6.
"""
import json
import os
import types

import numpy as np
import pytest
from safetensors.numpy import save_file

import minadapters as ma
from minadapters.models import architecture
from minadapters.adapters_config import ModelAdaptersConfig
from minadapters.context import ForwardState
from minadapters.errors import CompositionError, ConfigError
from minadapters.functional.prefix import left_pad_keys, split_prefix_kv
from minadapters.methods.prefix_tuning import PrefixTuningLayer, PrefixTuningPool
from minadapters.models import LayerKey
from minadapters.ops.numpy import NumpyOps

D, L_MODEL, H = 24, 3, 4


def make_model_dir(path, model_type="bert", seed=0):
    from minadapters.models import bert
    raw = dict(model_type=model_type, hidden_size=D, num_hidden_layers=L_MODEL, num_attention_heads=H,
               intermediate_size=36, vocab_size=50, max_position_embeddings=40, type_vocab_size=2,
               pad_token_id=0 if model_type == "bert" else 1)
    rng = np.random.default_rng(seed)
    shapes = bert.expected_shapes(bert.EncoderConfig.from_dict(raw))
    w = {k: (rng.standard_normal(s) * 0.2 + (1.0 if k.endswith("LayerNorm.weight") else 0.0)).astype(np.float32)
         for k, s in shapes.items()}
    os.makedirs(path, exist_ok=True)
    save_file(w, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(raw, f)
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def model(model_dir):
    return ma.AutoModel.from_pretrained(model_dir, seed=0)


def inputs(B=3, T=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 50, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    if B > 2:
        mask[2, -4:] = 0
    return ids, mask


def run(model, setup, ids, mask, **kw):
    model.active_adapters = setup
    return model(input_ids=ids, attention_mask=mask, **kw)


# ---- PREFIX-1: parameters and layout -------------------------------------------------------------
@pytest.mark.spec("PREFIX-1")
def test_split_prefix_kv_layout():
    P, L, Hh, Dh = 2, 3, 2, 5
    flat = np.arange(P * L * 2 * Hh * Dh, dtype=np.float32)
    kv = split_prefix_kv(flat, P=P, L=L, H=Hh, Dh=Dh)
    assert kv.shape == (L, 2, Hh, P, Dh)
    for l, k, h, p, d in [(0, 0, 0, 0, 0), (2, 1, 1, 1, 4), (1, 0, 1, 1, 2), (2, 0, 0, 1, 3)]:
        assert kv[l, k, h, p, d] == p * (L * 2 * Hh * Dh) + ((l * 2 + k) * Hh + h) * Dh + d


@pytest.mark.spec("PREFIX-1")
def test_parameter_shapes_and_ranks(model):
    model.add_adapter("p", ma.PrefixTuningConfig(prefix_length=5, bottleneck_size=7, leave_out=[1], use_gating=True,
                                                 shared_gating=False))
    sd = model.adapter_state_dict("p")
    pre = "prefix_tuning.prefix_tunings.p.self_prefix."
    Lp, Dh = 2, D // H
    assert sd[pre + "wte.weight"].shape == (5, D)
    assert sd[pre + "control_trans.0.weight"].shape == (7, D)
    assert sd[pre + "control_trans.2.weight"].shape == (Lp * 2 * H * Dh, 7)
    assert sd[pre + "control_trans.2.bias"].shape == (Lp * 2 * H * Dh,)
    gates = sorted(k for k in sd if "prefix_gates" in k)
    assert gates == [f"encoder.layer.{i}.attention.self.prefix_tuning.prefix_gates.p.{leaf}"
                     for i in (0, 2) for leaf in ("bias", "weight")]
    assert sd[gates[1]].shape == (2, D)
    ranks = {i: model.method_layer("prefix", "self_prefix", i).modules.get("p") for i in range(L_MODEL)}
    assert ranks[1] is None and ranks[0].info["prefix_id"] == 0 and ranks[2].info["prefix_id"] == 1


@pytest.mark.spec("PREFIX-1")
def test_flat_parameter_and_all_left_out(model):
    model.add_adapter("f", ma.PrefixTuningConfig(prefix_length=3, flat=True))
    sd = model.adapter_state_dict("f")
    assert list(sd) == ["prefix_tuning.prefix_tunings.f.self_prefix.control_trans"]
    assert sd["prefix_tuning.prefix_tunings.f.self_prefix.control_trans"].shape == (3 * L_MODEL * 2 * D,)
    with pytest.raises(ConfigError, match="leave_out"):
        model.add_adapter("none", ma.PrefixTuningConfig(leave_out=[0, 1, 2]))
    assert "none" not in model.adapters_config


# ---- PREFIX-2: concatenation and mask ------------------------------------------------------------
def _layer_call(model, setup, i=0, B=2, T=5, mask=None):
    fwd = ForwardState(setup=ma.parse_composition(setup) if isinstance(setup, str) else setup)
    model.model_level["prefix_pool"].prepare(fwd, B)
    rng = np.random.default_rng(3)
    K, V = rng.standard_normal((2, B, H, T, D // H)).astype(np.float32)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    if mask is None:
        mask = np.zeros((B, 1, 1, T), np.float32)
    layer = model.method_layer("prefix", "self_prefix", i)
    return layer.forward(K, V, mask, x, fwd), (K, V, mask), fwd


@pytest.mark.spec("PREFIX-2")
def test_concat_shapes_and_mask(model):
    model.add_adapter("p", ma.PrefixTuningConfig(prefix_length=4, bottleneck_size=6))
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[1, ..., -2:] = np.finfo(np.float32).min
    (K2, V2, m2), (K, V, _), fwd = _layer_call(model, "p", mask=mask)
    assert K2.shape == (2, H, 9, D // H) and V2.shape == K2.shape and m2.shape == (2, 1, 1, 9)
    np.testing.assert_array_equal(K2[:, :, 4:], K)
    np.testing.assert_array_equal(m2[..., :4], 0.0)
    np.testing.assert_array_equal(m2[..., 4:], mask)
    kv = fwd.prefix_states["p"]["self_prefix"][0]
    np.testing.assert_array_equal(K2[1, :, :4], kv[0])
    np.testing.assert_array_equal(V2[0, :, :4], kv[1])


@pytest.mark.spec("PREFIX-5")
def test_stack_prepends_in_turn(model):
    model.add_adapter("a", ma.PrefixTuningConfig(prefix_length=2, bottleneck_size=4))
    model.add_adapter("b", ma.PrefixTuningConfig(prefix_length=3, flat=True))
    (K2, _, m2), (K, _, _), fwd = _layer_call(model, ma.Stack("a", "b"), i=1)
    assert K2.shape[2] == 2 + 3 + 5
    np.testing.assert_array_equal(K2[0, :, :3], fwd.prefix_states["b"]["self_prefix"][1][0])   # last first
    np.testing.assert_array_equal(K2[0, :, 3:5], fwd.prefix_states["a"]["self_prefix"][1][0])
    np.testing.assert_array_equal(K2[:, :, 5:], K)


def test_model_output_length_unchanged_and_base_without_setup(model):
    ids, mask = inputs()
    base = model(input_ids=ids, attention_mask=mask).last_hidden_state
    model.add_adapter("p", ma.PrefixTuningConfig(prefix_length=4, bottleneck_size=6))
    out = run(model, "p", ids, mask).last_hidden_state
    assert out.shape == base.shape and not np.allclose(out, base)
    model.active_adapters = None
    np.testing.assert_array_equal(model(input_ids=ids, attention_mask=mask).last_hidden_state, base)


# ---- PREFIX-3: gating ----------------------------------------------------------------------------
@pytest.mark.spec("PREFIX-3")
@pytest.mark.parametrize("shared", [True, False])
def test_gating_scores_shapes_and_open_gate(model, shared):
    ids, mask = inputs()
    model.add_adapter("g", ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=5, use_gating=True,
                                                 shared_gating=shared))
    out = run(model, "g", ids, mask, output_adapter_gating_scores=True)
    scores = out.adapter_gating_scores["g"]
    assert sorted(scores) == [0, 1, 2]
    assert scores[0]["self_prefix"].shape == ((3,) if shared else (3, 2))
    assert np.all((scores[0]["self_prefix"] > 0) & (scores[0]["self_prefix"] < 1))
    # an open gate (σ(+60) = 1 in float32) gives exactly the ungated prefix
    ungated = run(model, "g", ids, mask).last_hidden_state
    for i in range(L_MODEL):
        p = model.method_layer("prefix", "self_prefix", i).modules["g"].params
        p["weight"][:] = 0.0
        p["bias"][:] = 60.0
    opened = run(model, "g", ids, mask).last_hidden_state
    for i in range(L_MODEL):
        model.method_layer("prefix", "self_prefix", i).modules["g"].params.clear()
    np.testing.assert_allclose(opened, run(model, "g", ids, mask).last_hidden_state, rtol=0, atol=1e-6)
    assert not np.allclose(opened, ungated)


@pytest.mark.spec("PREFIX-3")
def test_closed_gate_zeroes_prefix(model):
    model.add_adapter("g", ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=5, use_gating=True,
                                                 shared_gating=False))
    p = model.method_layer("prefix", "self_prefix", 0).modules["g"].params
    p["weight"][:] = 0.0
    p["bias"][:] = [-200.0, 60.0]            # keys closed, values open
    (K2, V2, _), _, fwd = _layer_call(model, "g")
    np.testing.assert_array_equal(K2[:, :, :3], 0.0)
    np.testing.assert_allclose(V2[:, :, :3], np.broadcast_to(fwd.prefix_states["g"]["self_prefix"][0][1],
                                                             V2[:, :, :3].shape))


# ---- PREFIX-4: BatchSplit / Parallel -------------------------------------------------------------
@pytest.mark.spec("PREFIX-4")
def test_left_pad_keys_is_invisible():
    rng = np.random.default_rng(0)
    q, K, V = rng.standard_normal((3, 2, 2, 4, 3)).astype(np.float32)
    mask = np.zeros((2, 1, 1, 4), np.float32)
    mask[1, ..., -1] = np.finfo(np.float32).min
    K2, V2, m2 = left_pad_keys(K, V, mask, 3, ops=NumpyOps())
    ops = NumpyOps()
    np.testing.assert_allclose(ops.attention(q, K2, V2, m2), ops.attention(q, K, V, mask), rtol=1e-6, atol=1e-7)


@pytest.mark.spec("PREFIX-4")
@pytest.mark.parametrize("la,lb,leave_a", [(3, 3, []), (2, 5, []), (4, 1, [1])])
def test_batch_split_equals_separate_runs(model, la, lb, leave_a):
    ids, mask = inputs(B=4, T=7)
    model.add_adapter("a", ma.PrefixTuningConfig(prefix_length=la, bottleneck_size=5, leave_out=leave_a,
                                                 use_gating=True))
    model.add_adapter("b", ma.PrefixTuningConfig(prefix_length=lb, flat=True))
    out = run(model, ma.BatchSplit("a", "b", batch_sizes=[1, 3]), ids, mask).last_hidden_state
    ra = run(model, "a", ids[:1], mask[:1]).last_hidden_state
    rb = run(model, "b", ids[1:], mask[1:]).last_hidden_state
    np.testing.assert_allclose(out, np.concatenate([ra, rb]), rtol=1e-5, atol=1e-5)


@pytest.mark.spec("PREFIX-4")
def test_parallel_equals_separate_runs(model):
    ids, mask = inputs()
    model.add_adapter("a", ma.PrefixTuningConfig(prefix_length=2, bottleneck_size=5, leave_out=[0]))
    model.add_adapter("b", ma.PrefixTuningConfig(prefix_length=6, flat=True, use_gating=True))
    out = run(model, ma.Parallel("a", "b"), ids, mask).last_hidden_state
    assert out.shape[0] == 6
    ra = run(model, "a", ids, mask).last_hidden_state
    rb = run(model, "b", ids, mask).last_hidden_state
    np.testing.assert_allclose(out, np.concatenate([ra, rb]), rtol=1e-5, atol=1e-5)


@pytest.mark.spec("PREFIX-5")
@pytest.mark.parametrize("block", ["Average", "Split", "Fuse"])
def test_unsupported_blocks(model, block):
    ids, mask = inputs()
    model.add_adapter("a", ma.PrefixTuningConfig(prefix_length=2, bottleneck_size=4))
    model.add_adapter("b", ma.PrefixTuningConfig(prefix_length=2, bottleneck_size=4))
    if block == "Fuse":
        model.add_adapter_fusion(["a", "b"])
        setup = ma.Fuse("a", "b")
    elif block == "Split":
        setup = ma.Split("a", "b", splits=[3, 3])
    else:
        setup = ma.Average("a", "b", weights=[0.5, 0.5])
    with pytest.raises(CompositionError, match="not supported by"):
        run(model, setup, ids, mask)


# ---- PREFIX-6: eject -----------------------------------------------------------------------------
@pytest.mark.spec("PREFIX-6")
def test_eject_keeps_output_and_round_trips(model, tmp_path):
    ids, mask = inputs()
    model.add_adapter("p", ma.PrefixTuningConfig(prefix_length=4, bottleneck_size=6, leave_out=[2], use_gating=True))
    before = run(model, "p", ids, mask).last_hidden_state
    model.eject_prefix_tuning("p")
    assert model.adapters_config.get("p")["flat"] is True
    sd = model.adapter_state_dict("p")
    key = "prefix_tuning.prefix_tunings.p.self_prefix.control_trans"
    assert sd[key].shape == (4 * 2 * 2 * D,) and not any("wte" in k for k in sd)
    after = run(model, "p", ids, mask).last_hidden_state
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    model.eject_prefix_tuning("p")                                   # idempotent
    model.save_adapter(str(tmp_path / "p"), "p")
    assert json.load(open(tmp_path / "p" / "adapter_config.json"))["config"]["flat"] is True
    model.load_adapter(str(tmp_path / "p"), load_as="p2")
    np.testing.assert_array_equal(run(model, "p2", ids, mask).last_hidden_state, after)


@pytest.mark.spec("PREFIX-6")
def test_eject_errors(model):
    model.add_adapter("bn", "seq_bn")
    with pytest.raises(ConfigError, match="no prefix tuning"):
        model.eject_prefix_tuning("bn")
    with pytest.raises(KeyError):
        model.eject_prefix_tuning("missing")


@pytest.mark.spec("PREFIX-6")
def test_eject_gqa_pool():
    """H·Dh ≠ D (2 kv heads of 5 for hidden 24): eject keeps the network output (adapters fails here)."""
    cfg = ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=4)
    m = types.SimpleNamespace(num_kv_heads=2, head_dim=5, hidden_size=D, num_layers=2, ops=NumpyOps(),
                              rng=np.random.default_rng(0), adapters_config=ModelAdaptersConfig(), layers_of=lambda kind: [],
                              arch=architecture("bert"))   # method layers read their location key from the record
    m.adapters_config.add("g", cfg)
    pool = PrefixTuningPool(m)
    m.model_level = {"prefix_pool": pool}
    layers = [PrefixTuningLayer(LayerKey("encoder", i, "prefix", "self_prefix"), f"l{i}", m) for i in range(2)]
    for layer in layers:
        assert layer.add_adapter("g", cfg)
    pool.confirm_adapter("g", cfg)
    before = pool.prefix_kv("g", "self_prefix")
    assert before.shape == (2, 2, 2, 3, 5)
    pool.eject("g")
    np.testing.assert_allclose(pool.prefix_kv("g", "self_prefix"), before, rtol=0, atol=1e-6)
    assert m.adapters_config.get("g")["flat"] is True


# ---- files, lifecycle ----------------------------------------------------------------------------
def test_save_load_round_trip_and_delete(model, tmp_path):
    ids, mask = inputs()
    model.add_adapter("p", ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=5, use_gating=True))
    exp = run(model, "p", ids, mask).last_hidden_state
    model.save_adapter(str(tmp_path / "p"), "p")
    model.delete_adapter("p")
    assert "p" not in model.model_level["prefix_pool"].groups
    assert all("p" not in l.modules for l in model.layers_of("prefix"))
    assert model.load_adapter(str(tmp_path / "p"), load_as="q") == "q"
    np.testing.assert_array_equal(run(model, "q", ids, mask).last_hidden_state, exp)


def test_seeded_init_reproducible(model_dir):
    cfg = ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=5, init_weights_seed=7, use_gating=True)
    a = ma.AutoModel.from_pretrained(model_dir, seed=1)
    b = ma.AutoModel.from_pretrained(model_dir, seed=2)
    a.add_adapter("p", cfg)
    b.add_adapter("p", cfg)
    sa, sb = a.adapter_state_dict("p"), b.adapter_state_dict("p")
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    g = "encoder.layer.{}.attention.self.prefix_tuning.prefix_gates.p.weight"
    assert not np.array_equal(sa[g.format(0)], sa[g.format(1)])
