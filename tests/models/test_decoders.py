"""GPT-2 / LLaMA: config validation, masks, RoPE, GQA, KV cache and generate invariants (no torch).

Spec: DEC-1 .. DEC-6.
"""
import json

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import ConfigError, ShapeError
from minadapters.io.safetensors_io import save_safetensors as write_safetensors
from minadapters.model import AdapterModel
from minadapters.models import decoder_common as dc
from minadapters.models import gpt2, llama

GPT2_RAW = dict(model_type="gpt2", n_embd=24, n_layer=2, n_head=4, n_inner=40, vocab_size=37, n_positions=32)
LLAMA_RAW = dict(model_type="llama", hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=40, vocab_size=37, max_position_embeddings=32, eos_token_id=None)


def tiny(raw, seed=0, scale=0.5):
    arch = gpt2 if raw["model_type"] == "gpt2" else llama
    cfg = arch.Config.from_dict(raw)
    rng = np.random.default_rng(seed)
    params = {k: (rng.standard_normal(s) * scale + (1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight",
                                                                      "layernorm.weight", "norm.weight")) else 0))
              .astype(np.float32) for k, s in arch.expected_shapes(cfg).items()}
    model = AdapterModel(arch.ARCHITECTURE, cfg, params, seed=seed)
    model.raw_config = dict(raw)
    if not getattr(cfg, "tie_word_embeddings", True):
        model.lm_head_weight = (rng.standard_normal((cfg.vocab_size, cfg.hidden_size)) * scale).astype(np.float32)
    return model


def ids_mask(B=3, T=7, seed=1, side="left"):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 37, (B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        if side == "left":
            mask[b, :b * 2] = 0
        else:
            mask[b, T - b * 2:] = 0
    return np.where(mask == 1, ids, 0), mask


MODELS = [GPT2_RAW, LLAMA_RAW]
mt_ids = ["gpt2", "llama"]


# ---- configs -----------------------------------------------------------------------------------------
@pytest.mark.spec("DEC-2")
@pytest.mark.parametrize("change,err,needle", [
    (dict(num_key_value_heads=3), ShapeError, "num_key_value_heads=3"),
    (dict(head_dim=5), ShapeError, "head_dim=5"),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), ConfigError, "'dynamic'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), ConfigError, "'yarn'"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), ConfigError, "low_freq_factor"),
    (dict(rope_scaling={"rope_type": "linear"}), ConfigError, "'factor'"),
    (dict(rope_scaling="linear"), ConfigError, "rope_scaling"),
    (dict(partial_rotary_factor=0.5), ConfigError, "partial_rotary_factor"),
    (dict(hidden_act="nope"), ValueError, "nope"),
])
def test_llama_config_rejections(change, err, needle):
    with pytest.raises(err, match=needle):
        llama.Config.from_dict(dict(LLAMA_RAW, **change))


@pytest.mark.spec("DEC-1")
def test_gpt2_config_aliases_and_rejection():
    cfg = gpt2.Config.from_dict(dict(GPT2_RAW, n_inner=None))
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (24, 2, 4, 96)
    assert cfg.num_key_value_heads == 4 and cfg.head_dim == 6
    with pytest.raises(ShapeError, match="n_head=5"):
        gpt2.Config.from_dict(dict(GPT2_RAW, n_head=5))


@pytest.mark.spec("DEC-1")
def test_gpt2_conv1d_transposed_once_at_load(tmp_path):
    """Checkpoint (in, out) Conv1D -> params (out, in); a wrong shape is rejected naming the key."""
    model = tiny(GPT2_RAW)
    ckpt = {f"transformer.{k}": (v.T if k.split(".", 2)[-1] in gpt2.CONV1D_WEIGHTS else v)
            for k, v in model.params.items()}
    ckpt["transformer.h.0.attn.bias"] = np.ones((1, 1, 32, 32), np.float32)      # old causal buffer: dropped
    write_safetensors(str(tmp_path / "model.safetensors"), ckpt)
    (tmp_path / "config.json").write_text(json.dumps(GPT2_RAW))
    loaded = ma.AutoModel.from_pretrained(tmp_path)
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v, err_msg=k)
    ckpt["transformer.h.1.mlp.c_fc.weight"] = model.params["h.1.mlp.c_fc.weight"]  # not transposed
    write_safetensors(str(tmp_path / "model.safetensors"), ckpt)
    with pytest.raises(ShapeError, match="h.1.mlp.c_fc.weight"):
        ma.AutoModel.from_pretrained(tmp_path)


@pytest.mark.spec("DEC-1")
@pytest.mark.parametrize("raw", MODELS, ids=mt_ids)
def test_prompt_tuning_rejected(raw):
    with pytest.raises(ConfigError, match="prompt_tuning"):
        tiny(raw).add_adapter("p", config="prompt_tuning")


# ---- masks, RoPE, GQA ---------------------------------------------------------------------------------
@pytest.mark.spec("DEC-4")
def test_causal_padding_mask_pattern():
    mask2d = np.array([[0, 1, 1, 1, 1]])
    m = dc.causal_padding_mask(mask2d, 2, np.float32)                            # 3 cached + 2 new
    mn = np.finfo(np.float32).min
    expected = np.array([[mn, 0, 0, 0, mn], [mn, 0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(m[0, 0], expected)
    g = dc.causal_padding_mask(mask2d, 2, np.float32, disallowed=-np.inf)
    assert g[0, 0, 0, 4] == -np.inf and g[0, 0, 0, 0] == mn


@pytest.mark.spec("DEC-6")
def test_generation_position_ids():
    np.testing.assert_array_equal(dc.generation_position_ids(np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])),
                                  [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])


@pytest.mark.spec("DEC-3")
@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 4.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}])
def test_rope_is_relative_and_norm_preserving(scaling):
    """q·k after RoPE depends only on the position difference; |RoPE(x)| = |x|."""
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 1, 1, 1, 8))
    inv = dc.rope_inv_freq(8, 10000.0, scaling)
    def rot(x, pos):
        cos, sin = dc.rope_cos_sin(np.array([[pos]]), inv, np.float64)
        return dc.apply_rope(x, cos, sin)
    d1 = (rot(q, 7) * rot(k, 3)).sum()
    d2 = (rot(q, 14) * rot(k, 10)).sum()
    assert abs(d1 - d2) < 1e-5 and abs(d1 - (q * k).sum()) > 1e-4
    np.testing.assert_allclose(np.linalg.norm(rot(q, 5)), np.linalg.norm(q), rtol=1e-6)


@pytest.mark.spec("DEC-3")
def test_rope_linear_scaling_divides_positions():
    a = dc.rope_inv_freq(8, 10000.0, {"type": "linear", "factor": 4.0})
    np.testing.assert_allclose(a * 4, dc.rope_inv_freq(8, 10000.0, None), rtol=1e-6)


@pytest.mark.spec("DEC-2")
def test_repeat_kv_maps_query_head_to_kv_head():
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    r = dc.repeat_kv(x, 3)
    for h in range(6):
        np.testing.assert_array_equal(r[:, h], x[:, h // 3])


# ---- forward invariants ----------------------------------------------------------------------------------
@pytest.mark.spec("DEC-4")
@pytest.mark.parametrize("raw", MODELS, ids=mt_ids)
def test_causal_future_tokens_do_not_matter(raw):
    model = tiny(raw)
    ids, _ = ids_mask(B=2, side="none")
    ids2 = ids.copy()
    ids2[:, 5:] = (ids2[:, 5:] + 3) % 37
    a, b = model(ids).last_hidden_state, model(ids2).last_hidden_state
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


@pytest.mark.spec("DEC-4")
@pytest.mark.parametrize("raw", MODELS, ids=mt_ids)
def test_left_padding_with_generation_positions_equals_unpadded(raw):
    """Padded keys are masked: a left-padded row with cumsum positions equals the unpadded sequence."""
    model = tiny(raw)
    ids = np.array([[5, 6, 7, 8]])
    padded, mask = np.array([[0, 0, 5, 6, 7, 8]]), np.array([[0, 0, 1, 1, 1, 1]])
    a = model(ids).last_hidden_state
    b = model(padded, attention_mask=mask, position_ids=dc.generation_position_ids(mask)).last_hidden_state
    np.testing.assert_allclose(b[:, 2:], a, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("DEC-5")
@pytest.mark.parametrize("raw", MODELS, ids=mt_ids)
@pytest.mark.parametrize("config", [None, "seq_bn", "par_bn"])
def test_kv_cache_step_equals_full_forward(raw, config):
    model = tiny(raw)
    if config:
        model.add_adapter("a", config=config, set_active=True)
        for k, (d, leaf) in model.adapter_param_refs("a").items():
            d[leaf] = d[leaf] + np.float32(0.2)
    ids, mask = ids_mask(side="left")
    full = model(ids, attention_mask=mask).last_hidden_state
    cache = dc.KVCache(model.num_layers)
    first = model(ids[:, :4], attention_mask=mask[:, :4], past_key_values=cache).last_hidden_state
    rest = model(ids[:, 4:], attention_mask=mask, past_key_values=cache).last_hidden_state
    real = mask == 1           # fully masked (padding) queries attend to whatever keys exist so far: not compared
    # float32 sums over different row blockings (1 vs T rows per GEMM): tolerance table, rtol 1e-4
    np.testing.assert_allclose(np.concatenate([first, rest], 1)[real], full[real], rtol=1e-4, atol=1e-4)
    assert cache.length == ids.shape[1]


@pytest.mark.spec("DEC-5")
def test_kv_cache_appends_in_place_and_grows_geometrically():
    cache = dc.KVCache(2)
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((2, 3, t, 4)).astype(np.float32) for t in [5] + [1] * 40]
    buffers = set()
    for t, c in enumerate(chunks):
        k, v = cache.update(1, c, -c)
        buffers.add(id(cache._kbuf[1]))
        assert k.base is cache._kbuf[1] and v.base is cache._vbuf[1]          # views, no per-token copy
    want = np.concatenate(chunks, axis=2)
    np.testing.assert_array_equal(cache.keys[1], want)
    np.testing.assert_array_equal(cache.values[1], -want)
    assert cache.keys[1].shape == (2, 3, 45, 4) and cache.capacity(1) == 64    # 16 -> 32 -> 64
    assert len(buffers) == 3
    with pytest.raises(ShapeError, match="heads, head size or dtype"):
        cache.update(1, chunks[1][:, :2], chunks[1][:, :2])


@pytest.mark.spec("DEC-5")
def test_cache_mask_shape_checked():
    model = tiny(LLAMA_RAW)
    cache = dc.KVCache(model.num_layers)
    model(np.array([[1, 2, 3]]), past_key_values=cache)
    with pytest.raises(ShapeError, match=r"plus 3 cached tokens"):
        model(np.array([[4]]), attention_mask=np.ones((1, 1)), past_key_values=cache)


@pytest.mark.spec("DEC-1")
def test_input_errors():
    with pytest.raises(ShapeError, match="n_positions=32"):
        tiny(GPT2_RAW)(np.ones((1, 33), np.int64))
    with pytest.raises(TypeError, match="token_type_ids do not apply to model_type='llama'"):
        tiny(LLAMA_RAW)(np.ones((1, 3), np.int64), token_type_ids=np.zeros((1, 3), np.int64))


# ---- generate ---------------------------------------------------------------------------------------------
@pytest.mark.spec("DEC-6")
@pytest.mark.parametrize("raw", MODELS + [dict(LLAMA_RAW, tie_word_embeddings=True)], ids=mt_ids + ["llama-tied"])
def test_generate_cache_equals_no_cache_and_is_greedy(raw):
    model = tiny(raw)
    model.add_adapter("a", config="seq_bn", set_active=True)
    ids, mask = ids_mask(side="left")
    a = model.generate(ids, 8, attention_mask=mask, use_cache=True)
    b = model.generate(ids, 8, attention_mask=mask, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, ids.shape[1] + 8)
    np.testing.assert_array_equal(a[:, :ids.shape[1]], ids)
    # greedy: each new token is the argmax of the head over the last hidden state of the prefix
    W = model.params[model.arch.embed_key] if model.config.tie_word_embeddings or raw["model_type"] == "gpt2" \
        else model.lm_head_weight
    T = ids.shape[1]
    m2 = np.concatenate([mask, np.ones((3, 2), np.int64)], 1)
    h = model(a[:, :T + 2], attention_mask=m2, position_ids=dc.generation_position_ids(m2)).last_hidden_state
    np.testing.assert_array_equal(a[:, T + 2], np.argmax(h[:, -1] @ W.T, -1))


@pytest.mark.spec("DEC-6")
def test_generate_eos_and_edges():
    model = tiny(GPT2_RAW)
    ids, mask = ids_mask(side="left")
    free = model.generate(ids, 6, attention_mask=mask, eos_token_id=None)
    np.testing.assert_array_equal(model.generate(ids, 0, attention_mask=mask), ids)
    eos = int(free[0, ids.shape[1]])                          # row 0 stops at once
    out = model.generate(ids, 6, attention_mask=mask, eos_token_id=[eos], pad_token_id=0)
    assert out[0, ids.shape[1]] == eos and (out[0, ids.shape[1] + 1:] == 0).all()
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, -1)
    with pytest.raises(TypeError, match="eos_token_id"):
        model.generate(ids, 2, eos_token_id="x")
    with pytest.raises(ShapeError, match="attention_mask"):
        model.generate(ids, 2, attention_mask=mask[:, 1:])


@pytest.mark.spec("DEC-6")
def test_generate_needs_head():
    model = tiny(LLAMA_RAW)
    model.lm_head_weight = None
    with pytest.raises(ConfigError, match="lm_head.weight"):
        model.generate(np.array([[1, 2]]), 2)


@pytest.mark.spec("DEC-6")
def test_generate_rejects_parallel_and_encoders():
    model = tiny(GPT2_RAW)
    model.add_adapter("a", config="seq_bn")
    model.add_adapter("b", config="seq_bn")
    model.active_adapters = ma.Parallel("a", "b")
    with pytest.raises(ConfigError, match="Parallel"):
        model.generate(np.array([[1, 2]]), 2)
    from minadapters.models import bert
    raw = dict(model_type="bert", hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
               vocab_size=11, max_position_embeddings=8)
    cfg = bert.EncoderConfig.from_dict(raw)
    enc = AdapterModel(bert.ARCHITECTURE, cfg, {k: np.zeros(s, np.float32) for k, s in bert.expected_shapes(cfg).items()})
    with pytest.raises(ConfigError, match="not a decoder model"):
        enc.generate(np.array([[1, 2]]), 2)
    with pytest.raises(TypeError, match="past_key_values do not apply to model_type='bert'"):
        enc(np.array([[1, 2]]), past_key_values=dc.KVCache(1))


def test_generate_with_reft_needs_no_cache(tmp_path):
    """ReFT positions depend on the whole sequence: a cached step is refused with a clear message. Spec: DEC-6."""
    model = tiny(GPT2_RAW)
    model.add_adapter("r", config="loreft[r=2]", set_active=True)
    ids = np.array([[3, 5, 7, 9]])
    with pytest.raises(ValueError, match="use_cache=False"):
        model.generate(ids, max_new_tokens=2)
    assert model.generate(ids, max_new_tokens=2, use_cache=False).shape == (1, 6)
