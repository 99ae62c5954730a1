"""The house takes more than one stack: a toy encoder-decoder declared as one Architecture record. Spec: ARCH-1, HOOK-1.

No real family: the forward below is a minimal two-stack model (encoder: self-attention + FFN; decoder: self-attention,
cross-attention, FFN) whose every hook is declared in its record, so adapters land in both stacks under keys that say
which stack they belong to, and the model's output carries both stacks.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import minadapters as ma
from minadapters.hooks import Hook
from minadapters.model import AdapterModel
from minadapters.models import LayerKey
from minadapters.models.base import Architecture, LayerStack, layer_views

D, F, V, L = 8, 11, 13, 2
ROOT = Path(__file__).resolve().parents[1]


class ToyConfig:
    model_type = "toy-encdec"
    hidden_size, num_attention_heads, vocab_size = D, 2, V
    num_hidden_layers = num_decoder_layers = L


def _attend(q, k, v, ops):
    B, T, _ = q.shape
    split = lambda t: t.reshape(t.shape[0], t.shape[1], 2, D // 2).transpose(0, 2, 1, 3)  # noqa: E731
    return split(q), split(k), split(v)


def _layer(x, lp, hk, ops, memory=None):
    q = hk.linear(Hook.ATTN_Q, x, *lp.linear("q"))
    k = hk.linear(Hook.ATTN_K, x, *lp.linear("k"))
    v = hk.linear(Hook.ATTN_V, x, *lp.linear("v"))
    q, k, v = _attend(q, k, v, ops)
    k, v, mask = hk.prefix(Hook.ENCODER_PREFIX if memory is None else Hook.SELF_PREFIX, k, v, None, x)
    a = ops.attention(q, k, v, mask).transpose(0, 2, 1, 3).reshape(x.shape)
    x = hk.residual_block(Hook.MH_ADAPTER, ops.linear(a, *lp.linear("o")), x, None)
    if memory is not None:
        q = hk.linear(Hook.CROSS_Q, x, *lp.linear("cq"))
        k = hk.linear(Hook.CROSS_K, memory, *lp.linear("ck"))
        v = hk.linear(Hook.CROSS_V, memory, *lp.linear("cv"))
        q, k, v = _attend(q, k, v, ops)
        k, v, mask = hk.prefix(Hook.CROSS_PREFIX, k, v, None, x)
        c = ops.attention(q, k, v, mask).transpose(0, 2, 1, 3).reshape(x.shape)
        x = hk.residual_block(Hook.CROSS_ADAPTER, c, x, None)
    f = hk.linear(Hook.OUTPUT, ops.activation("relu")(hk.linear(Hook.INTERMEDIATE, x, *lp.linear("fi"))),
                  *lp.linear("fo"))
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)
    return hk.layer_output(x)


def toy_forward(p, cfg, hooks, ops, dtype, *, input_ids, decoder_input_ids, output_hidden_states=False):
    x = ops.take(p["enc.emb"], input_ids)
    x, _ = hooks.embeddings("encoder", x, np.ones(input_ids.shape, np.int64))
    for i, lp in enumerate(layer_views(p, ENC, L)):
        x = _layer(x, lp, hooks.layer("encoder", i), ops)
    y = ops.take(p["enc.emb"], decoder_input_ids)
    y, _ = hooks.embeddings("decoder", y, np.ones(decoder_input_ids.shape, np.int64))
    for i, lp in enumerate(layer_views(p, DEC, L)):
        y = _layer(y, lp, hooks.layer("decoder", i), ops, memory=x)
    return {"last_hidden_state": y, "encoder_last_hidden_state": x}


_ATTN = dict(attn_q="q", attn_k="k", attn_v="v", attn_o="o", intermediate="fi", output="fo",
             mh_adapter="attention_adapters", output_adapter="output_adapters")
ENC = LayerStack("encoder", layers="enc.layer.{i}", num_layers="num_hidden_layers", embeddings="enc.emb",
                 encoder_prefix="self_attn.prefix_tuning", **_ATTN)
DEC = LayerStack("decoder", layers="dec.layer.{i}", num_layers="num_decoder_layers", cross_q="cq", cross_k="ck",
                 cross_v="cv", cross_adapter="cross_attention_adapters", self_prefix="self_attn.prefix_tuning",
                 cross_prefix="cross_attn.prefix_tuning", **_ATTN)


def toy_shapes(cfg):
    s = {"enc.emb": (V, D)}
    for stack, names in ((ENC, "q k v o"), (DEC, "q k v o cq ck cv")):
        for i in range(L):
            for n in names.split():
                s[f"{stack.layer_path(i)}.{n}.weight"], s[f"{stack.layer_path(i)}.{n}.bias"] = (D, D), (D,)
            s[f"{stack.layer_path(i)}.fi.weight"], s[f"{stack.layer_path(i)}.fo.weight"] = (F, D), (D, F)
    return s


TOY = Architecture(name="toy-encdec", model_types=("toy-encdec",), config_class=ToyConfig, stacks=(ENC, DEC),
                   forward=toy_forward, normalize_keys=lambda w, mt: w, expected_shapes=toy_shapes,
                   model_class={"toy-encdec": "ToyModel"}, base_model_prefix={"toy-encdec": "model"},
                   inputs=frozenset({"input_ids", "decoder_input_ids"}))


def toy_model(seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in toy_shapes(ToyConfig).items()}
    return AdapterModel(TOY, ToyConfig(), params, backend="numpy", seed=seed)


def run(model, **kw):
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    return model(input_ids=ids, decoder_input_ids=ids[:, :3], **kw)


def perturb(model, name):
    rng = np.random.default_rng(7)
    for _, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.2, d[leaf].shape)).astype(d[leaf].dtype)


@pytest.mark.spec("ARCH-1")
def test_every_method_layer_key_names_its_stack():
    m = toy_model()
    stacks = {k.stack for k in m.method_layers}
    assert stacks == {"encoder", "decoder"}, f"stacks={stacks}, but should be both"
    assert LayerKey("decoder", 1, "bottleneck", Hook.CROSS_ADAPTER) in m.method_layers
    assert LayerKey("encoder", 1, "bottleneck", Hook.CROSS_ADAPTER) not in m.method_layers
    assert LayerKey("encoder", 0, "prefix", Hook.ENCODER_PREFIX) in m.method_layers
    assert LayerKey("decoder", 0, "lora", Hook.CROSS_Q) in m.method_layers


@pytest.mark.spec("ARCH-1")
def test_adapters_land_in_both_stacks_with_distinct_keys_and_move_both_outputs():
    m = toy_model()
    base = run(m)
    m.add_adapter("a", ma.SeqBnConfig(reduction_factor=2, mh_adapter=True, cross_adapter=True))
    m.add_adapter("l", "lora[r=2, attn_matrices=['q', 'k', 'v']]")
    keys = list(m.adapter_state_dict("a"))
    assert any(k.startswith("enc.layer.0.") for k in keys) and any(k.startswith("dec.layer.1.") for k in keys)
    assert any(".cross_attention_adapters.adapters.a." in k for k in keys)
    assert not any(k.startswith("enc.") and "cross_attention_adapters" in k for k in keys)
    assert any("dec.layer.0.cq.loras.l" in k for k in m.adapter_state_dict("l"))
    for name in ("a", "l"):
        perturb(m, name)
        m.active_adapters = name
        out = run(m)
        assert out.encoder_last_hidden_state.shape == (2, 4, D) and out.last_hidden_state.shape == (2, 3, D)
        assert not np.allclose(out.encoder_last_hidden_state, base.encoder_last_hidden_state), name
        assert not np.allclose(out.last_hidden_state, base.last_hidden_state), name


@pytest.mark.spec("COMP-PARALLEL")
def test_parallel_replicates_both_stacks_inputs_once_at_the_edge():
    m = toy_model()
    for n in ("a", "b"):
        m.add_adapter(n, ma.SeqBnConfig(reduction_factor=2, cross_adapter=True))
        perturb(m, n)
    m.active_adapters = ma.Parallel("a", "b")
    out = run(m)
    assert out.last_hidden_state.shape == (4, 3, D)
    for i, n in enumerate(("a", "b")):
        m.active_adapters = n
        alone = run(m)
        np.testing.assert_allclose(out.last_hidden_state[2 * i:2 * i + 2], alone.last_hidden_state, rtol=1e-5,
                                   atol=1e-6, err_msg=f"channel {i} ({n}) should equal {n} alone")


@pytest.mark.spec("ARCH-1")
def test_records_reject_bad_declarations():
    with pytest.raises(ValueError, match="distinct"):
        Architecture(name="x", model_types=("x",), config_class=ToyConfig, stacks=(ENC, ENC), forward=None,
                     normalize_keys=None, expected_shapes=None, model_class={}, base_model_prefix={})
    with pytest.raises(ValueError, match="unknown methods"):
        Architecture(name="x", model_types=("x",), config_class=ToyConfig, stacks=(ENC,), forward=None,
                     normalize_keys=None, expected_shapes=None, model_class={}, base_model_prefix={},
                     methods=frozenset({"lora", "telepathy"}))


@pytest.mark.spec("HOOK-1")
def test_a_hook_the_stack_does_not_declare_raises():
    m = toy_model()
    m.add_adapter("a", "seq_bn")
    hooks = ma.model.ModelHooks(m, ma.ForwardState(setup=ma.Stack("a")))
    with pytest.raises(KeyError, match="not declared for layer 0 of stack 'encoder'"):
        hooks.layer("encoder", 0).residual_block(Hook.CROSS_ADAPTER, np.zeros((1, 1, D)), None, None)


@pytest.mark.spec("ARCH-1")
def test_unsupported_input_is_a_type_error_naming_the_family():
    m = toy_model()
    with pytest.raises(TypeError, match="token_type_ids do not apply to model_type='toy-encdec'"):
        run(m, token_type_ids=np.zeros((2, 4), np.int64))


@pytest.mark.spec("COMP-PARALLEL")
def test_base_models_and_equations_never_mention_parallel_composition():
    """Parallel is replicated once at the model's edge; models/ and functional/ never see it."""
    pat = re.compile(r"\bParallel\b|parallel_channels|parallelized|adjust_tensors_for_parallel")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for d in ("minadapters/models", "minadapters/functional") for p in sorted((ROOT / d).rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pat.search(line)]
    assert not hits, "Parallel composition mentioned where it must not be:\n" + "\n".join(hits)


@pytest.mark.spec("ARCH-2")
def test_no_attribute_sniffing_on_architecture_or_method_objects():
    """The model calls the declared interfaces; no hasattr dispatch in the house's core modules."""
    files = ["minadapters/model.py", "minadapters/hooks.py", "minadapters/summary.py", "minadapters/generate.py",
             *(str(p.relative_to(ROOT)) for d in ("models", "methods") for p in (ROOT / "minadapters" / d).glob("*.py"))]
    hits = [f"{f}:{i}" for f in files for i, line in enumerate((ROOT / f).read_text().splitlines(), 1)
            if "hasattr(" in line or "__name__.endswith" in line]
    assert not hits, f"attribute sniffing at {hits}"


@pytest.mark.spec("ARCH-1")
def test_registered_families_declare_the_blocks_adapters_supports_for_them():
    """adapters 1.3.0 lists the model types that support Parallel (composition.SUPPORTED_MODELS); each record's
    declared blocks must agree, so a new family cannot silently claim (or lose) Parallel."""
    from minadapters.composition import SUPPORTED_MODELS
    from minadapters.models import REGISTRY
    for mt, arch in REGISTRY.items():
        for block, types in SUPPORTED_MODELS.items():
            assert (block.__name__ in arch.blocks) == (mt in types), \
                f"{arch.name} ({mt}): declares {block.__name__}={block.__name__ in arch.blocks}, adapters: {mt in types}"
