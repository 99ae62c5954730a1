"""Families of issue #15 without torch: config validation, checkpoint keys, refusals, block invariants, backends.

Spec: FAM-DB-1, FAM-DB-2, FAM-LL-1, FAM-LL-2. (Parity with transformers / adapters 1.3.0 is in
tests/oracle/test_families_oracle.py.)
"""
import json

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import ConfigError, ShapeError
from minadapters.io.safetensors_io import save_safetensors
from minadapters.models import architecture

DEC = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=37,
           vocab_size=41, max_position_embeddings=32)
RAWS = {
    "distilbert": dict(model_type="distilbert", dim=24, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=41,
                       max_position_embeddings=32),
    "electra": dict(model_type="electra", hidden_size=24, embedding_size=20, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "albert": dict(model_type="albert", hidden_size=24, embedding_size=20, num_hidden_layers=4, num_hidden_groups=2,
                   num_attention_heads=4, intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "bert-generation": dict(model_type="bert-generation", hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "deberta": dict(model_type="deberta", hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, vocab_size=41, max_position_embeddings=32, type_vocab_size=2,
                    relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=6),
    "deberta-v2": dict(model_type="deberta-v2", hidden_size=24, embedding_size=20, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=37, vocab_size=41, max_position_embeddings=32,
                       relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=4,
                       max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm",
                       position_biased_input=False, conv_kernel_size=3),
    "mistral": dict(DEC, model_type="mistral", sliding_window=3),
    "qwen2": dict(DEC, model_type="qwen2", use_sliding_window=True, sliding_window=3, max_window_layers=1),
    "qwen3": dict(DEC, model_type="qwen3", head_dim=8),
    "gemma": dict(DEC, model_type="gemma", head_dim=6),
    "llama": dict(DEC, model_type="llama", attention_bias=True, mlp_bias=True),
    "gptj": dict(model_type="gptj", n_embd=24, n_layer=2, n_head=4, rotary_dim=4, n_inner=37, vocab_size=41,
                 n_positions=32),
    "xmod": dict(model_type="xmod", hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 vocab_size=41, max_position_embeddings=32, pad_token_id=0),
}


def weights(raw, seed=0, scale=0.3):
    arch = architecture(raw["model_type"])
    cfg = arch.config_class.from_dict(raw)
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in arch.expected_shapes(cfg).items():
        w = rng.standard_normal(s) * scale
        if k.endswith(("norm.weight", "LayerNorm.weight", "layer_norm.weight")):
            w += 1.0
        out[k] = w.astype(np.float32)
    return out


def write(tmp_path, raw, w, seed=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    save_safetensors(str(tmp_path / "model.safetensors"), w)
    return ma.AutoModel.from_pretrained(str(tmp_path), seed=seed)


def ids_mask(B=3, T=7, seed=1, vocab=41):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    for b, n in ((1, 2), (2, 4)):
        if b < B:
            mask[b, -n:] = 0
    return np.where(mask == 1, ids, 0), mask


@pytest.fixture(params=sorted(RAWS))
def family(request, tmp_path):
    raw = RAWS[request.param]
    return raw, write(tmp_path / "m", raw, weights(raw))


@pytest.mark.spec("FAM-DB-1")
@pytest.mark.parametrize("change,err,pattern", [
    (dict(dim=25), ShapeError, "dim=25 is not a multiple of n_heads=4"),
    (dict(activation="silu"), ConfigError, "activation='silu'.*'gelu' or 'relu'"),
    (dict(n_layers=0), ConfigError, "n_layers=0 must be an integer >= 1"),
    (dict(n_heads="4"), ConfigError, "n_heads='4'"),
    (dict(sinusoidal_pos_embds="yes"), ConfigError, "sinusoidal_pos_embds='yes'"),
])
def test_distilbert_config_errors(change, err, pattern):
    arch = architecture("distilbert")
    with pytest.raises(err, match=pattern):
        arch.config_class.from_dict(dict(RAWS["distilbert"], **change))


@pytest.mark.spec("FAM-DB-1")
def test_distilbert_task_checkpoint_loads_base_model(tmp_path):
    """A DistilBertForSequenceClassification file ('distilbert.' keys + heads) gives the same base model."""
    raw = RAWS["distilbert"]
    w = weights(raw)
    base = write(tmp_path / "base", raw, w)
    task = {"distilbert." + k: v for k, v in w.items()}
    task["pre_classifier.weight"] = np.ones((24, 24), np.float32)
    task["classifier.weight"] = np.ones((2, 24), np.float32)
    other = write(tmp_path / "task", raw, task)
    ids, mask = ids_mask()
    np.testing.assert_array_equal(base(ids, attention_mask=mask).last_hidden_state,
                                  other(ids, attention_mask=mask).last_hidden_state)
    assert not any(k.startswith(("classifier", "pre_classifier")) for k in other.params)


@pytest.mark.spec("FAM-DB-1")
def test_distilbert_refuses_token_type_ids_and_prompt_tuning(tmp_path):
    raw = RAWS["distilbert"]
    m = write(tmp_path, raw, weights(raw))
    ids, mask = ids_mask()
    with pytest.raises(TypeError, match="token_type_ids"):
        m(ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
    with pytest.raises(ValueError, match="prompt_tuning.*distilbert"):
        m.add_adapter("p", config="prompt_tuning")
    assert "p" not in m.adapters_config.adapters


@pytest.mark.spec("FAM-DB-1")
def test_too_long_input_names_the_limit(tmp_path):
    raw = RAWS["distilbert"]
    m = write(tmp_path, raw, weights(raw))
    ids = np.ones((1, 40), np.int64)
    with pytest.raises(ShapeError, match="at most 32"):
        m(ids)


@pytest.mark.spec("FAM-DB-2")
def test_padding_does_not_change_real_tokens(family):
    _, m = family
    ids, mask = ids_mask()
    cfg = "seq_bn[reduction_factor=4]|lora[r=2]" + ("|prefix_tuning[prefix_length=3]"
                                                  if "prefix_tuning" in m.arch.methods else "")
    m.add_adapter("a", config=cfg)
    m.active_adapters = "a"
    full = m(ids, attention_mask=mask).last_hidden_state
    short = m(ids[2:, :3], attention_mask=mask[2:, :3]).last_hidden_state
    np.testing.assert_allclose(full[2:, :3], short, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("FAM-DB-2")
def test_batchsplit_and_parallel_invariants(family):
    _, m = family
    for n in ("a", "b"):
        m.add_adapter(n, config="double_seq_bn[reduction_factor=3]")
        for k, v in m.adapter_state_dict(n).items():
            v += np.random.default_rng(len(k)).standard_normal(v.shape).astype(np.float32) * 0.1
    ids, mask = ids_mask()
    m.active_adapters = ma.BatchSplit("a", "b", batch_sizes=[1, 2])
    split = m(ids, attention_mask=mask).last_hidden_state
    m.active_adapters = "a"
    first = m(ids[:1], attention_mask=mask[:1]).last_hidden_state
    m.active_adapters = "b"
    rest = m(ids[1:], attention_mask=mask[1:]).last_hidden_state
    # other batch compositions sum in another BLAS order: float32 agreement, not bit equality (spec 00-notation)
    np.testing.assert_allclose(split, np.concatenate([first, rest]), rtol=1e-4, atol=1e-5)
    if "Parallel" not in m.arch.blocks:
        with pytest.raises(ValueError, match="Parallel"):
            m.active_adapters = ma.Parallel("a", "b")
        return
    m.active_adapters = ma.Parallel("a", "b")
    par = m(ids, attention_mask=mask).last_hidden_state
    assert par.shape[0] == 6, f"Parallel gives batch {par.shape[0]}, but should be 6"
    np.testing.assert_allclose(par[:3], _run(m, "a", ids, mask), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(par[3:], _run(m, "b", ids, mask), rtol=1e-4, atol=1e-5)


def _run(m, name, ids, mask):
    m.active_adapters = name
    return m(ids, attention_mask=mask).last_hidden_state


@pytest.mark.native
def test_native_equals_numpy(family):
    _, m = family
    m.add_adapter("a", config="lora[r=2, intermediate_lora=True]|seq_bn")
    m.active_adapters = "a"
    ids, mask = ids_mask()
    want = m(ids, attention_mask=mask).last_hidden_state
    try:
        m.set_backend("native")
    except ma.errors.BackendUnavailableError as e:     # pragma: no cover - depends on the build
        pytest.skip(f"native backend unavailable: {e}")
    np.testing.assert_allclose(m(ids, attention_mask=mask).last_hidden_state, want, rtol=1e-4, atol=1e-5)


@pytest.mark.spec("FAM-EL-1")
def test_electra_projection_only_when_sizes_differ():
    arch = architecture("electra")
    with_proj = arch.expected_shapes(arch.config_class.from_dict(RAWS["electra"]))
    assert with_proj["embeddings_project.weight"] == (24, 20)
    same = arch.expected_shapes(arch.config_class.from_dict(dict(RAWS["electra"], embedding_size=24)))
    assert "embeddings_project.weight" not in same
    with pytest.raises(ConfigError, match="position_embedding_type='relative_key'"):
        arch.config_class.from_dict(dict(RAWS["electra"], position_embedding_type="relative_key"))
    with pytest.raises(ShapeError, match="hidden_size=25"):
        arch.config_class.from_dict(dict(RAWS["electra"], hidden_size=25))


@pytest.mark.spec("FAM-LL-1")
@pytest.mark.parametrize("model_type,change,err,pattern", [
    ("mistral", dict(num_key_value_heads=3), ShapeError, "not a multiple of num_key_value_heads=3"),
    ("qwen3", dict(head_dim=7), ShapeError, "head_dim=7 must be an even integer"),
    ("qwen2", dict(layer_types=["full_attention"]), ConfigError, "layer_types=.*each of the 2 layers"),
    ("qwen2", dict(layer_types=["full_attention", "chunked"]), ConfigError, "layer_types"),
    ("gemma", dict(num_hidden_layers=0), ConfigError, "num_hidden_layers=0"),
    ("mistral", dict(hidden_act="nope"), ValueError, "nope"),
    ("qwen2", dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), ConfigError, "yarn"),
    ("llama", dict(partial_rotary_factor=0.5), ConfigError, "partial_rotary_factor=0.5 is not supported by llama"),
    ("gptj", dict(rotary_dim=None), ConfigError, "rotary_dim=None must be an even integer in \\[2, head_dim=6\\]"),
    ("gptj", dict(rotary_dim=8), ConfigError, "rotary_dim=8"),
    ("gptj", dict(rotary_dim=3), ConfigError, "rotary_dim=3"),
    ("gptj", dict(n_head=5), ShapeError, "n_embd=24 is not a multiple of n_head=5"),
    ("xmod", dict(adapter_layer_norm=False, adapter_reuse_layer_norm=False), ConfigError, "adapter_reuse_layer_norm"),
    ("xmod", dict(pre_norm="yes"), ConfigError, "pre_norm='yes'"),
])
def test_llama_like_config_errors(model_type, change, err, pattern):
    with pytest.raises(err, match=pattern):
        architecture(model_type).config_class.from_dict(dict(RAWS[model_type], **change))


@pytest.mark.spec("FAM-LL-2")
@pytest.mark.parametrize("model_type,expected", [
    ("mistral", (3, 3)), ("qwen2", (None, 3)), ("qwen3", (None, None)), ("gemma", (None, None))])
def test_sliding_windows_per_layer(model_type, expected):
    cfg = architecture(model_type).config_class.from_dict(RAWS[model_type])
    assert cfg.windows == expected, f"{model_type}: windows {cfg.windows}, but should be {expected}"
    types = architecture("qwen2").config_class.from_dict(
        dict(RAWS["qwen2"], layer_types=["sliding_attention", "full_attention"]))
    assert types.windows == (3, None)


@pytest.mark.spec("FAM-LL-2")
def test_sliding_window_mask_cuts_old_keys():
    from minadapters.models.decoder_common import causal_padding_mask
    from minadapters.models.llama_like import sliding_window_mask
    base = causal_padding_mask(np.ones((1, 5), np.int64), 2, np.float32)          # 2 new queries after 3 cached
    m = sliding_window_mask(base, 2, np.float32)[0, 0]
    allowed = m == 0
    np.testing.assert_array_equal(allowed, [[False, False, True, True, False], [False, False, False, True, True]])


@pytest.mark.spec("FAM-LL-2")
def test_sliding_window_changes_only_late_positions(tmp_path):
    """Window 3: the first 3 positions see the same keys with or without a window; later ones do not."""
    raw = RAWS["mistral"]
    w = weights(raw)
    windowed = write(tmp_path / "w", raw, w)
    full = write(tmp_path / "f", dict(raw, sliding_window=None), w)
    ids, _ = ids_mask(B=1, T=6)
    a, b = windowed(ids).last_hidden_state, full(ids).last_hidden_state
    np.testing.assert_allclose(a[:, :3], b[:, :3], rtol=1e-6, atol=1e-6)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-3


@pytest.mark.spec("FAM-LL-1")
def test_user_declared_family_equals_its_twin(tmp_path):
    """The documented example: a family declared as data and registered loads and computes like qwen2."""
    from minadapters.models import REGISTRY, register
    from minadapters.models.llama_like import LlamaLike, declare
    arch = declare(LlamaLike(name="my_decoder", model_types=("my_decoder",), model_class="MyDecoderModel",
                             attention_bias="qkv", sliding="layer_types", plugin=True))
    register(arch)
    try:
        with pytest.raises(ValueError, match="'my_decoder' is already declared by family 'my_decoder'"):
            register(arch)
        with pytest.raises(ValueError, match="'qwen2' is already declared by family 'qwen2'"):
            register(declare(LlamaLike(name="other", model_types=("qwen2",), model_class="X")))
        raw = RAWS["qwen2"]
        w = weights(raw)
        twin = write(tmp_path / "q", raw, w, seed=3)
        mine = write(tmp_path / "m", dict(raw, model_type="my_decoder"), w, seed=3)
        ids, mask = ids_mask()
        for m in (twin, mine):
            m.add_adapter("a", config="lora[r=2]|seq_bn")
            m.active_adapters = "a"
        np.testing.assert_array_equal(mine(ids, attention_mask=mask).last_hidden_state,
                                      twin(ids, attention_mask=mask).last_hidden_state)
        with pytest.raises(ValueError, match="prefix_tuning.*my_decoder"):
            mine.add_adapter("p", config="prefix_tuning")
    finally:
        REGISTRY.pop("my_decoder", None)


@pytest.mark.spec("FAM-LL-3")
@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "gemma"])
def test_plugin_families_refuse_what_adapters_refuses(model_type, tmp_path):
    raw = RAWS[model_type]
    m = write(tmp_path, raw, weights(raw))
    for config in ("prefix_tuning", "prompt_tuning", "mtl_lora"):
        with pytest.raises(ValueError, match=f"{config}.*{model_type}"):
            m.add_adapter("x", config=config)
    with pytest.raises(ValueError, match="original_ln_after=False"):
        m.add_adapter("y", config="seq_bn[original_ln_after=False]")


@pytest.mark.spec("FAM-LL-3")
@pytest.mark.parametrize("model_type", ["qwen2", "gemma"])
def test_hooked_bottleneck_with_zero_up_projection_is_identity(model_type, tmp_path):
    """seq_bn with init_weights='mam_adapter' (zero up-projection) on a plugin family: output equals the base
    model, so the hooked block adds no second residual."""
    raw = RAWS[model_type]
    m = write(tmp_path, raw, weights(raw))
    ids, mask = ids_mask()
    base = m(ids, attention_mask=mask).last_hidden_state
    m.add_adapter("z", config="seq_bn[init_weights='mam_adapter']")
    m.active_adapters = "z"
    np.testing.assert_allclose(m(ids, attention_mask=mask).last_hidden_state, base, rtol=1e-5, atol=1e-6)


@pytest.mark.spec("FAM-BG-1")
def test_bert_generation_is_decoder_is_causal(tmp_path):
    """is_decoder: a token's output does not depend on later tokens; without it, it does."""
    raw = RAWS["bert-generation"]
    w = weights(raw)
    causal = write(tmp_path / "c", dict(raw, is_decoder=True), w)
    full = write(tmp_path / "f", raw, w)
    ids, _ = ids_mask(B=1, T=6)
    other = ids.copy()
    other[0, -1] = (other[0, -1] + 1) % 41
    np.testing.assert_array_equal(causal(ids).last_hidden_state[:, :5], causal(other).last_hidden_state[:, :5])
    assert np.abs(full(ids).last_hidden_state[:, :5] - full(other).last_hidden_state[:, :5]).max() > 1e-4
    with pytest.raises(ConfigError, match="is_decoder='yes'"):
        architecture("bert-generation").config_class.from_dict(dict(raw, is_decoder="yes"))


@pytest.mark.spec("FAM-AL-1")
def test_albert_groups_share_weights_and_adapters(tmp_path):
    """4 layers on 2 groups: weights and adapters exist once per group; config errors name the field."""
    raw = RAWS["albert"]
    arch = architecture("albert")
    cfg = arch.config_class.from_dict(raw)
    assert [cfg.group_of(i) for i in range(4)] == [0, 0, 1, 1]
    assert sum(k.endswith("ffn.weight") for k in arch.expected_shapes(cfg)) == 2
    m = write(tmp_path, raw, weights(raw))
    m.add_adapter("a", config="seq_bn")
    assert sum(k.endswith("adapter_up.weight") for k in m.adapter_state_dict("a")) == 2
    for change, pattern in ((dict(inner_group_num=2), "inner_group_num=2"),
                            (dict(num_hidden_groups=5), "num_hidden_groups=5 exceeds num_hidden_layers=4")):
        with pytest.raises(ConfigError, match=pattern):
            arch.config_class.from_dict(dict(raw, **change))


@pytest.mark.spec("FAM-LL-1")
def test_llama_is_one_llama_like_declaration():
    """LLaMA's record comes from llama_like.declare (one forward for every LLaMA-like family); its task checkpoints'
    'transformer.' prefix is stripped, heads dropped, lm_head kept."""
    from minadapters.models import llama, llama_like
    arch = architecture("llama")
    assert arch is llama.ARCHITECTURE and arch.notes["family"] is llama.LLAMA
    assert isinstance(llama.LLAMA, llama_like.LlamaLike) and arch.methods == architecture("mistral").methods
    keys = arch.normalize_keys({"transformer.norm.weight": 1, "model.layers.0.x": 2, "qa_outputs.weight": 3,
                                "lm_head.weight": 4, "model.rotary_emb.inv_freq": 5}, "llama")
    assert keys == {"norm.weight": 1, "layers.0.x": 2, "lm_head.weight": 4}


@pytest.mark.spec("FAM-GJ-2")
def test_gptj_partial_rotary_by_hand():
    """Pairs (x0, x1), (x2, x3) of the first R features rotate; the rest pass unchanged (both backends)."""
    from minadapters.models import gptj
    from minadapters.ops import get_ops
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3, 6)).astype(np.float32)
    theta = np.array([1.0, 0.01], np.float32)                            # 10000^(-2j/4), j = 0, 1
    pos = np.arange(3, dtype=np.float32)[:, None] * theta                 # (T, R/2)
    want = x.copy()
    for j in range(2):
        c, s_ = np.cos(pos[:, j]), np.sin(pos[:, j])
        want[..., 2 * j] = x[..., 2 * j] * c - x[..., 2 * j + 1] * s_
        want[..., 2 * j + 1] = x[..., 2 * j + 1] * c + x[..., 2 * j] * s_
    from minadapters.models import decoder_common as dc
    cos, sin = dc.rope_cos_sin(np.arange(3)[None], dc.rope_inv_freq(4, 10000.0, None), np.float32)
    for backend in ("numpy", "native"):
        try:
            ops = get_ops(backend)
        except Exception as e:                                              # native not built here
            pytest.skip(f"native backend unavailable: {e}")
        np.testing.assert_allclose(gptj.partial_rotary(x, cos, sin, 4, ops), want, rtol=1e-5, atol=1e-6)
