"""LoRA family (no torch): hand-computed layer outputs, compositions, merge / reset, init, validation.

Spec: LORA-0 .. LORA-6, LORA-8, LORA-9, INIT-3. Expected values are written from the equations, never from
our own output.
"""
import math

import numpy as np
import pytest

import minadapters as ma
from minadapters.context import ForwardState
from minadapters.model import AdapterModel
from minadapters.models import bert

D, I_, L = 8, 12, 2


def tiny(seed=0):
    """A 2-layer BERT (hidden 8, FFN 12) with random non-zero weights and biases."""
    rng = np.random.default_rng(seed)
    cfg = bert.EncoderConfig("bert", D, L, 2, I_, 30, 16, 2, 1e-12, "gelu", 0)
    p = {}

    def lin(n, o, i):
        p[n + ".weight"] = rng.normal(0, 0.3, (o, i)).astype(np.float32)
        p[n + ".bias"] = rng.normal(0, 0.3, o).astype(np.float32)

    def ln(n):
        p[n + ".weight"] = (1 + rng.normal(0, 0.1, D)).astype(np.float32)
        p[n + ".bias"] = rng.normal(0, 0.1, D).astype(np.float32)

    for name, rows in (("word", 30), ("position", 16), ("token_type", 2)):
        p[f"embeddings.{name}_embeddings.weight"] = rng.normal(0, 1, (rows, D)).astype(np.float32)
    ln("embeddings.LayerNorm")
    for i in range(L):
        pre = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            lin(pre + n, D, D)
        ln(pre + "attention.output.LayerNorm")
        lin(pre + "intermediate.dense", I_, D)
        lin(pre + "output.dense", D, I_)
        ln(pre + "output.LayerNorm")
    return AdapterModel(bert.ARCHITECTURE, cfg, p, seed=seed)


IDS = np.array([[1, 2, 3, 4, 5], [5, 6, 7, 0, 0], [9, 8, 7, 6, 0]])
MASK = (IDS != 0).astype(np.int64)


def run(m, setup=None, **kw):
    if setup is not None:
        m.active_adapters = setup
    return m(input_ids=IDS, attention_mask=MASK, **kw).last_hidden_state


def perturb(m, name, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in m.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, scale, d[leaf].shape)).astype(d[leaf].dtype)


def layer(m, key="selfattn.q", i=0):
    return m.method_layer("lora", key, i)


def params(m, name, key="selfattn.q", i=0):
    return layer(m, key, i).modules[name].params


def call(m, setup, key="selfattn.q", i=0, x=None, **fwd_kw):
    """Run one LoRA layer directly on x (B=3, T=4): returns (y, x, W, b)."""
    wk, bk = m.linear_weight(key, i)
    W, b = m.params[wk], m.params[bk]
    if x is None:
        x = np.random.default_rng(7).normal(0, 1, (3, 4, W.shape[1])).astype(np.float32)
    fwd = ForwardState(setup=ma.composition.parse_composition(setup), **fwd_kw)
    return layer(m, key, i).forward(x, W, b, fwd), x, W, b


def sig(z):
    return 1 / (1 + np.exp(-z))


# ---- single modules, hand-computed --------------------------------------------------------------------------
@pytest.mark.spec("LORA-1")
def test_lora_hand_computed():
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(r=3, alpha=5))
    perturb(m, "a")
    p = params(m, "a")
    y, x, W, b = call(m, "a")
    expected = x @ W.T + b + (5 / 3) * (x @ p["lora_A"].T) @ p["lora_B"].T
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-1")
def test_fresh_lora_is_identity():
    m = tiny()
    base = run(m)
    m.add_adapter("a", ma.LoRAConfig(intermediate_lora=True, output_lora=True))
    assert not np.any(params(m, "a")["lora_B"])
    np.testing.assert_array_equal(run(m, "a"), base)


@pytest.mark.spec("LORA-2")
def test_gating_replaces_scaling_and_is_stored():
    m = tiny()
    m.add_adapter("g", ma.LoRAConfig(r=2, alpha=16, use_gating=True))
    perturb(m, "g")
    p = params(m, "g")
    fwd_kw = dict(output_gating_scores=True)
    fwd = ForwardState(setup=ma.composition.parse_composition("g"), **fwd_kw)
    wk, bk = m.linear_weight("selfattn.q", 0)
    x = np.random.default_rng(3).normal(0, 1, (3, 4, D)).astype(np.float32)
    y = layer(m).forward(x, m.params[wk], m.params[bk], fwd)
    g = sig(x @ p["gate.weight"].T + p["gate.bias"]).mean(axis=1)          # (B, 1)
    expected = x @ m.params[wk].T + m.params[bk] + ((x @ p["lora_A"].T) @ p["lora_B"].T) * g[:, :, None]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fwd.gating_scores["g"][0]["selfattn_lora"], g[:, 0], rtol=1e-6)


@pytest.mark.spec("LORA-3")
def test_ia3_scales_output_and_bias():
    m = tiny()
    m.add_adapter("s", ma.IA3Config(alpha=3))
    perturb(m, "s")
    l = params(m, "s", "selfattn.k")["lora_B"]
    assert l.shape == (D, 1)
    y, x, W, b = call(m, "s", "selfattn.k")
    np.testing.assert_allclose(y, (x @ W.T + b) * (l[:, 0] * 3), rtol=1e-5, atol=1e-6)


@pytest.mark.spec("LORA-4")
def test_vera_hand_computed_and_shared():
    m = tiny()
    m.add_adapter("v", ma.VeraConfig(r=4, alpha=2, vera_d=0.5, vera_b=0.2))
    perturb(m, "v")
    sh = m.model_level["shared"].get("v")
    assert sh["lora_A"].shape == (4, D) and sh["lora_B"].shape == (D, 4)
    p = params(m, "v", "selfattn.v", 1)
    assert p["vera_D"].shape == (4, 4) and p["vera_B"].shape == (D, D)
    y, x, W, b = call(m, "v", "selfattn.v", 1)
    dW = p["vera_B"] @ sh["lora_B"] @ p["vera_D"] @ sh["lora_A"]
    np.testing.assert_allclose(y, x @ W.T + b + 0.5 * x @ dW.T, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-4")
def test_fresh_vera_is_identity_and_diagonal():
    m = tiny()
    base = run(m)
    m.add_adapter("v", "vera")
    p = params(m, "v")
    np.testing.assert_array_equal(p["vera_D"], np.diag(np.full(8, 0.1, np.float32)))
    np.testing.assert_array_equal(p["vera_B"], np.zeros((D, D)))
    np.testing.assert_array_equal(run(m, "v"), base)


@pytest.mark.spec("LORA-5")
def test_dora_hand_computed():
    m = tiny()
    wk, _ = m.linear_weight("selfattn.q", 0)
    W0 = m.params[wk].copy()
    m.add_adapter("d", ma.DoRAConfig(r=2, alpha=6))
    p = params(m, "d")
    np.testing.assert_allclose(p["m.weight"][:, 0], np.linalg.norm(W0, axis=1), rtol=1e-6)
    perturb(m, "d")
    y, x, W, b = call(m, "d")
    n = np.linalg.norm(W + p["lora_B"] @ p["lora_A"], axis=1)          # unscaled BA (upstream)
    expected = p["m.weight"][:, 0] / n * (x @ W.T + b + 3 * (x @ p["lora_A"].T) @ p["lora_B"].T)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-6")
def test_mtl_lora_hand_computed():
    m = tiny()
    m.add_adapter("t", ma.MTLLoRAConfig(r=3, alpha=6, n_up_projection=2, weights_sharpness=0.5))
    perturb(m, "t")
    p = params(m, "t")
    assert p["lora_B"].shape == (2, D, 3)
    y, x, W, b = call(m, "t")
    xa = (x @ p["lora_A"].T) * p["task_specific.values"]
    w = np.exp(p["weights"] / 0.5)
    delta = sum(w[k] * xa @ p["lora_B"][k].T for k in range(2)) / w.sum() * 2
    np.testing.assert_allclose(y, x @ W.T + b + delta, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-0")
def test_targets_follow_config():
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(attn_matrices=["k"], intermediate_lora=True, output_lora=True, leave_out=[1]))
    where = {(l.layer_idx, l.key.location) for l in m.layers_of("lora") if "a" in l.modules}
    assert where == {(0, "selfattn.k"), (0, "intermediate"), (0, "output")}
    keys = m.adapter_state_dict("a")
    assert "encoder.layer.0.attention.self.key.loras.a.lora_A" in keys
    assert keys["encoder.layer.0.intermediate.dense.loras.a.lora_B"].shape == (I_, 8)
    assert keys["encoder.layer.0.output.dense.loras.a.lora_A"].shape == (8, I_)


# ---- composition --------------------------------------------------------------------------------------------
@pytest.mark.spec("LORA-8")
def test_stack_chains_deltas():
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(r=2, alpha=4))
    m.add_adapter("b", ma.LoRAConfig(r=3, alpha=3))
    perturb(m, "a", 1)
    perturb(m, "b", 2)
    pa, pb = params(m, "a"), params(m, "b")
    y, x, W, b = call(m, ma.Stack("a", "b"))
    h1 = 2 * (x @ pa["lora_A"].T) @ pa["lora_B"].T
    h2 = 1 * (h1 @ pb["lora_A"].T) @ pb["lora_B"].T
    np.testing.assert_allclose(y, x @ W.T + b + h2, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
def test_stack_width_mismatch_is_a_composition_error():
    m = tiny()
    for n in ("a", "b"):
        m.add_adapter(n, ma.LoRAConfig(selfattn_lora=False, intermediate_lora=True))
        perturb(m, n)
    with pytest.raises(ma.CompositionError, match="in_features == out_features"):
        run(m, ma.Stack("a", "b"))


@pytest.mark.spec("LORA-8")
def test_average_divides_by_n_again():
    m = tiny()
    for n, s in (("a", 1), ("b", 2)):
        m.add_adapter(n, ma.LoRAConfig(r=2, alpha=2))
        perturb(m, n, s)
    pa, pb = params(m, "a"), params(m, "b")
    y, x, W, b = call(m, ma.Average("a", "b", weights=[0.2, 0.6], normalize_weights=False))
    da = (x @ pa["lora_A"].T) @ pa["lora_B"].T
    db = (x @ pb["lora_A"].T) @ pb["lora_B"].T
    np.testing.assert_allclose(y, x @ W.T + b + (0.2 * da + 0.6 * db) / 2, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
def test_average_single_present_child_broadcasts_weights():
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(r=2, alpha=2, attn_matrices=["q"]))
    m.add_adapter("b", ma.LoRAConfig(r=2, alpha=2, attn_matrices=["v"]))
    perturb(m, "a")
    pa = params(m, "a")
    y, x, W, b = call(m, ma.Average("a", "b", weights=[0.2, 0.6], normalize_weights=False))
    da = (x @ pa["lora_A"].T) @ pa["lora_B"].T
    np.testing.assert_allclose(y, x @ W.T + b + (0.8 / 2) * da, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
def test_batch_split_equals_separate_runs():
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(intermediate_lora=True))
    m.add_adapter("b", ma.LoRAConfig(intermediate_lora=True, alpha=3, r=2, init_weights="bert"))
    perturb(m, "a", 1)
    perturb(m, "b", 2)
    split = run(m, ma.BatchSplit("a", "b", batch_sizes=[1, 2]))
    np.testing.assert_allclose(split[:1], run(m, "a")[:1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split[1:], run(m, "b")[1:], rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
def test_last_child_decides_combination_for_all_rows():
    """BatchSplit(lora, dora): the DoRA rescaling (last child) applies to the LoRA rows too (upstream)."""
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(r=2, alpha=2))
    m.add_adapter("d", ma.DoRAConfig(r=2, alpha=2))
    perturb(m, "a", 1)
    perturb(m, "d", 2)
    pa, pd = params(m, "a"), params(m, "d")
    y, x, W, b = call(m, ma.BatchSplit("a", "d", batch_sizes=[1, 2]))
    ratio = pd["m.weight"][:, 0] / np.linalg.norm(W + pd["lora_B"] @ pd["lora_A"], axis=1)
    ha = (x[:1] @ pa["lora_A"].T) @ pa["lora_B"].T
    np.testing.assert_allclose(y[:1], ratio * (x[:1] @ W.T + b + ha), rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
@pytest.mark.parametrize("attn", [["q"], ["q", "k", "v"]], ids=["q-only", "qkv"])
def test_parallel_equals_each_alone(attn):
    m = tiny()
    m.add_adapter("a", ma.LoRAConfig(attn_matrices=attn, output_lora=True))
    m.add_adapter("b", ma.IA3Config(attn_matrices=attn))
    perturb(m, "a", 1)
    perturb(m, "b", 2)
    m.add_adapter("c", ma.LoRAConfig(attn_matrices=attn, output_lora=True, r=2))
    perturb(m, "c", 3)
    out = run(m, ma.Parallel("a", "c"))
    assert out.shape[0] == 6
    np.testing.assert_allclose(out[:3], run(m, "a"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[3:], run(m, "c"), rtol=1e-5, atol=1e-5)
    ia3_par = run(m, ma.Parallel("b", "b"))
    np.testing.assert_allclose(ia3_par[3:], run(m, "b"), rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
def test_multitask_routes_rows_by_task_id():
    m = tiny()
    for n, s in (("t1", 1), ("t2", 2)):
        m.add_adapter(n, ma.MTLLoRAConfig(n_up_projection=2))
        perturb(m, n, s)
    out = run(m, ma.MultiTask("t1", "t2"), task_ids=[1, 0, 1])
    np.testing.assert_allclose(out[[0, 2]], run(m, "t2")[[0, 2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], run(m, "t1")[1], rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-8")
@pytest.mark.parametrize("block", [lambda: ma.Fuse("a", "b"), lambda: ma.Split("a", "b", splits=[2, 3])],
                         ids=["Fuse", "Split"])
def test_fuse_and_split_are_rejected(block):
    m = tiny()
    m.add_adapter("a", "lora")
    m.add_adapter("b", "lora")
    with pytest.raises(ma.CompositionError, match="not supported by LoRA"):
        call(m, block())


@pytest.mark.spec("LORA-8")
def test_mixed_add_and_scale_in_batch_split_is_rejected():
    m = tiny()
    m.add_adapter("a", "lora")
    m.add_adapter("b", ma.IA3Config(attn_matrices=["q", "v"]))
    with pytest.raises(ma.CompositionError, match="IA3"):
        run(m, ma.BatchSplit("a", "b", batch_sizes=[1, 2]))


# ---- merge / reset ------------------------------------------------------------------------------------------
MERGE_CASES = {
    "lora": ma.LoRAConfig(r=3, alpha=7, intermediate_lora=True, output_lora=True),
    "ia3": ma.IA3Config(alpha=3, output_lora=True),
    "vera": ma.VeraConfig(r=4, alpha=3, attn_matrices=["q", "k", "v"]),
    "dora": ma.DoRAConfig(r=2, alpha=9, intermediate_lora=True),
    "dvora": ma.DvoRAConfig(r=3, alpha=5),
}


@pytest.mark.spec("LORA-9")
@pytest.mark.parametrize("kind", list(MERGE_CASES))
def test_merged_equals_unmerged_and_reset_is_bit_identical(kind):
    m = tiny()
    m.add_adapter("x", MERGE_CASES[kind])
    perturb(m, "x")
    before = {k: v for k, v in m.params.items()}
    copies = {k: v.copy() for k, v in m.params.items()}
    unmerged = run(m, "x")
    m.merge_adapter("x")
    changed = [k for k in m.params if m.params[k] is not before[k]]
    assert changed, "merge must replace base weights"
    if kind == "ia3":
        assert any(k.endswith(".bias") for k in changed), "IA3 merge must scale the bias too"
    merged = m(input_ids=IDS, attention_mask=MASK).last_hidden_state     # setup still active; layers bypassed
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    m.merge_adapter("x")                                                # same name again: no-op
    assert all(m.params[k] is not before[k] for k in changed)
    m.reset_adapter()
    for k, v in m.params.items():
        assert v is before[k]
        np.testing.assert_array_equal(v, copies[k])


@pytest.mark.spec("LORA-9")
def test_merge_errors():
    m = tiny()
    m.add_adapter("a", "lora")
    m.add_adapter("b", "lora")
    m.add_adapter("g", ma.LoRAConfig(use_gating=True))
    m.add_adapter("t", "mtl_lora")
    with pytest.raises(ma.ConfigError, match="Cannot merge LoRA layer with gating."):
        m.merge_adapter("g")
    with pytest.raises(ma.ConfigError, match="MTL-LoRA"):
        m.merge_adapter("t")
    m.merge_adapter("a")
    with pytest.raises(ma.ConfigError, match="already has the merged LoRA module 'a'"):
        m.merge_adapter("b")
    m.reset_adapter()
    m.merge_adapter("b")


@pytest.mark.spec("LORA-9")
def test_set_active_and_delete_reset_a_merge():
    m = tiny()
    wk, _ = m.linear_weight("selfattn.q", 0)
    W = m.params[wk]
    m.add_adapter("a", "lora")
    perturb(m, "a")
    m.merge_adapter("a")
    assert m.params[wk] is not W
    m.set_active_adapters("a")
    assert m.params[wk] is W
    m.merge_adapter("a")
    m.delete_adapter("a")
    assert m.params[wk] is W


# ---- init ---------------------------------------------------------------------------------------------------
@pytest.mark.spec("INIT-3")
def test_init_schemes():
    m = tiny()
    m.add_adapter("l", ma.LoRAConfig(r=8, selfattn_lora=False, intermediate_lora=True))
    p = params(m, "l", "intermediate")
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / D)                  # kaiming_uniform(a=√5), fan_in = D
    assert np.abs(p["lora_A"]).max() <= bound and np.abs(p["lora_A"]).max() > 0.5 * bound
    assert not p["lora_B"].any()
    m.add_adapter("b", ma.LoRAConfig(r=8, init_weights="bert", intermediate_lora=True))
    assert 0.01 < params(m, "b", "intermediate")["lora_B"].std() < 0.03
    m.add_adapter("i", ma.LoRAConfig(r=2, init_weights="ia3"))
    assert (params(m, "i")["lora_A"] == 1).all() and (params(m, "i")["lora_B"] == 1).all()
    m.add_adapter("v", ma.LoRAConfig(r=8, init_weights="vera"))
    bound0 = math.sqrt(2) * math.sqrt(3 / 8)                            # kaiming_uniform(a=0) on B (8, r=8)
    assert 0.5 * bound0 < np.abs(params(m, "v")["lora_B"]).max() <= bound0
    m.add_adapter("s", ma.IA3Config())
    assert (params(m, "s", "selfattn.k")["lora_B"] == 1).all()
    m.add_adapter("s0", ma.IA3Config(init_weights="lora"))
    assert not params(m, "s0", "selfattn.v")["lora_B"].any()
    m.add_adapter("gt", ma.LoRAConfig(use_gating=True))
    gb = params(m, "gt")["gate.bias"]
    assert gb.shape == (1,) and abs(gb[0]) <= 1 / math.sqrt(D)
    assert params(m, "gt")["gate.weight"].shape == (1, D)


@pytest.mark.spec("INIT-3")
def test_init_weights_seed_reproducible():
    m1, m2 = tiny(0), tiny(1)
    cfg = ma.LoRAConfig(init_weights="bert", init_weights_seed=42)
    m1.add_adapter("a", cfg)
    m2.add_adapter("a", cfg)
    for k, v in m1.adapter_state_dict("a").items():
        np.testing.assert_array_equal(v, m2.adapter_state_dict("a")[k])


@pytest.mark.spec("INIT-3")
def test_dtype_field_sets_storage_dtype():
    m = tiny()
    m.add_adapter("h", ma.LoRAConfig(dtype="float16", init_weights="bert", use_dora=True))
    p = params(m, "h")
    assert p["lora_A"].dtype == np.float16 and p["m.weight"].dtype == np.float16
    assert run(m, "h").dtype == np.float32


# ---- validation ---------------------------------------------------------------------------------------------
@pytest.mark.spec("LORA-0")
@pytest.mark.parametrize("config,match", [
    (dict(r=0), "r"),
    (dict(composition_mode="scale", r=2), "r"),
    (dict(attn_matrices=["q", "o"]), "attn_matrices"),
    (dict(composition_mode="scale", r=1, dropout=0.1), "dropout"),
], ids=["r0", "scale-r2", "attn-o", "scale-dropout"])
def test_invalid_configs(config, match):
    m = tiny()
    with pytest.raises(ValueError, match=match):
        m.add_adapter("a", dict(architecture="lora", **config))
    assert "a" not in m.adapters_config


@pytest.mark.spec("LORA-4")
def test_vera_on_differently_shaped_targets_is_rejected_at_add_time():
    m = tiny()
    with pytest.raises(ma.ConfigError, match="same shape"):
        m.add_adapter("v", ma.VeraConfig(intermediate_lora=True))
    assert "v" not in m.adapters_config
    assert "v" not in m.model_level["shared"].params
    assert not any("v" in l.modules for l in m.method_layers.values())


@pytest.mark.spec("LORA-6")
def test_mtl_linear_task_matrix_is_rejected():
    m = tiny()
    with pytest.raises(ma.ConfigError, match="task_specific_matrix_type"):
        m.add_adapter("t", ma.MTLLoRAConfig(task_specific_matrix_type="linear"))
