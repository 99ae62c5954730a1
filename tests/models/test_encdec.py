"""Encoder-decoder plumbing on a tiny random BART (no torch): input checks, encoder_outputs reuse, adapters' layer
numbering across stacks, caches and generate invariants. Spec: ENCDEC-1 .. ENCDEC-5, BART-1, ARCH-1.
"""
import numpy as np
import pytest

import minadapters as ma
from minadapters import generate as gen
from minadapters.errors import ConfigError, ShapeError
from minadapters.models import LayerKey
from minadapters.models import encdec_common as ed
from minadapters.tiny import write_tiny_bart


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory):
    return write_tiny_bart(str(tmp_path_factory.mktemp("bart")), layers=2)


@pytest.fixture
def model(bart_dir):
    return ma.AutoModel.from_pretrained(bart_dir, seed=0)


def batch(B=3, S=7, T=5, seed=0, V=40):
    rng = np.random.default_rng(seed)
    ids, dec = rng.integers(5, V, (B, S)), rng.integers(5, V, (B, T))
    mask = np.ones((B, S), np.int64)
    mask[1, -2:] = 0
    return np.where(mask == 1, ids, 1), mask, dec


def perturbed(model, name, config, scale=0.2):
    model.add_adapter(name, config=config)
    rng = np.random.default_rng(len(name))
    for _, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, scale, d[leaf].shape)).astype(d[leaf].dtype)


@pytest.mark.spec("ENCDEC-1")
def test_bad_inputs_raise_clear_errors(model):
    ids, mask, dec = batch()
    with pytest.raises(ShapeError, match="decoder_input_ids has 2 rows"):
        model(ids, mask, dec[:2])
    with pytest.raises(ValueError, match="decoder_attention_mask was given without decoder_input_ids"):
        model(ids, mask, decoder_attention_mask=np.ones((3, 5)))
    with pytest.raises(ShapeError, match="decoder_attention_mask has shape"):
        model(ids, mask, dec, np.ones((3, 4)))
    with pytest.raises(ShapeError, match="encoder_outputs holds an array of shape"):
        model(attention_mask=mask, decoder_input_ids=dec, encoder_outputs=np.zeros((3, 7, 5), np.float32))
    with pytest.raises(ValueError, match="decoder_input_ids contains ids outside"):
        model(ids, mask, dec + 1000)
    with pytest.raises(TypeError, match="at most 4 positional arguments"):
        model(ids, mask, dec, None, None)
    with pytest.raises(TypeError, match="token_type_ids"):
        model(ids, mask, dec, token_type_ids=np.zeros_like(ids))
    with pytest.raises(ValueError, match="shift input_ids right"):
        model(attention_mask=mask, encoder_outputs=np.zeros((3, 7, model.hidden_size), np.float32))


@pytest.mark.spec("ENCDEC-1")
def test_positional_order_and_encoder_outputs_reuse(model):
    """model(ids, mask, dec, dmask) is the keyword call; encoder_outputs (output, tuple, array) skips the encoder
    and gives the same decoder states; Parallel replicates encoder_outputs with the rest."""
    ids, mask, dec = batch()
    dmask = np.ones(dec.shape, np.int64)
    dmask[2, -1] = 0
    full = model(ids, mask, dec, dmask)
    kw = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
    np.testing.assert_array_equal(full.last_hidden_state, kw.last_hidden_state)
    assert full.last_hidden_state.shape == (3, 5, model.hidden_size)
    assert full.encoder_last_hidden_state.shape == (3, 7, model.hidden_size)
    for enc in (full, (full.encoder_last_hidden_state,), full.encoder_last_hidden_state):
        again = model(None, mask, dec, dmask, encoder_outputs=enc)
        np.testing.assert_array_equal(again.last_hidden_state, full.last_hidden_state)
    for n in ("a", "b"):
        perturbed(model, n, "seq_bn[cross_adapter=True, mh_adapter=True]")
    model.active_adapters = ma.Parallel("a", "b")
    enc = model(ids, mask, dec).encoder_last_hidden_state[:3]
    model.active_adapters = "a"
    alone = model(ids, mask, dec).last_hidden_state
    model.active_adapters = ma.Parallel("a", "b")
    par = model(None, mask, dec, encoder_outputs=enc).last_hidden_state
    np.testing.assert_allclose(par[:3], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.spec("ARCH-1")
def test_decoder_layers_count_on_after_the_encoders(model):
    """adapters' layer index of decoder layer i is encoder_layers + i: leave_out=[2] leaves out decoder layer 0
    (state-dict paths keep the per-stack index)."""
    assert model.method_layer("bottleneck", "cross_adapter", 0, "decoder").layer_idx == 2
    model.add_adapter("x", "seq_bn[cross_adapter=True, leave_out=[2]]")
    keys = list(model.adapter_state_dict("x"))
    assert not any(k.startswith("decoder.layers.0.") for k in keys)
    assert any(k.startswith("decoder.layers.1.cross_attention_adapters.adapters.x.") for k in keys)
    assert any(k.startswith("encoder.layers.0.output_adapters.adapters.x.") for k in keys)
    assert LayerKey("encoder", 0, "bottleneck", "cross_adapter") not in model.method_layers


@pytest.mark.spec("ENCDEC-2")
def test_shift_tokens_right():
    ids = np.array([[5, 6, 2, 1], [7, -100, 2, 1]])
    np.testing.assert_array_equal(ed.shift_tokens_right(ids, 1, 2), [[2, 5, 6, 2], [2, 7, 1, 2]])
    # transformers takes the token at index (#non-pad - 1): row 1 has 2 non-pad tokens after -100 -> pad
    np.testing.assert_array_equal(ed.shift_tokens_right_wrap(ids, 1), [[2, 5, 6, 2], [1, 7, 1, 2]])
    np.testing.assert_array_equal(ed.shift_tokens_right_wrap(np.array([[5, 6, 9, 1]]), 1), [[9, 5, 6, 9]])
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        ed.shift_tokens_right(ids, 1, None)


@pytest.mark.spec("ENCDEC-4")
@pytest.mark.spec("ENCDEC-5")
def test_generate_runs_the_encoder_once_and_cross_kv_once(model, monkeypatch):
    """With the cache: one encoder pass per generate call, each decoder layer's cross K/V computed once, the same
    tokens as without the cache (a union of prefix tuning, cross adapter and LoRA active)."""
    perturbed(model, "u", "prefix_tuning[prefix_length=3]|seq_bn[cross_adapter=True]|lora[r=2]")
    model.active_adapters = "u"
    ids, mask, _ = batch()
    from minadapters.models import bart
    calls = {"encode": 0, "cross": 0}
    real_encode, real_cross = bart.encode, ed.cross_kv

    def encode(*a, **k):
        calls["encode"] += 1
        return real_encode(*a, **k)

    def cross_kv(cache, i, compute):
        def counted():
            calls["cross"] += 1
            return compute()
        return real_cross(cache, i, counted)
    monkeypatch.setattr(bart, "encode", encode)
    monkeypatch.setattr(bart.ed, "cross_kv", cross_kv)
    cached = model.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    assert calls == {"encode": 1, "cross": model.config.decoder_layers}, calls
    assert cached.shape == (3, 7) and (cached[:, 0] == model.config.decoder_start_token_id).all()
    np.testing.assert_array_equal(model.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=False,
                                                 eos_token_id=None), cached)
    calls["cross"] = 0
    model.generate(ids, attention_mask=mask, max_new_tokens=3, use_cache=False, eos_token_id=None)
    assert calls["cross"] == 3 * model.config.decoder_layers      # no cache: recomputed every step


@pytest.mark.spec("ENCDEC-5")
def test_generate_stops_and_refuses_what_it_cannot_do(model):
    ids, mask, _ = batch()
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None, forced_eos_token_id=None)
    eos = int(out[0, 3])
    j = 1 + int(np.argmax(out[0, 1:] == eos))                    # row 0's first emission of that token
    stopped = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, forced_eos_token_id=None)
    np.testing.assert_array_equal(stopped[0, :j + 1], out[0, :j + 1])
    assert (stopped[0, j + 1:] == model.config.pad_token_id).all()
    forced = model.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None, forced_eos_token_id=7)
    assert (forced[:, -1] == 7).all() and forced.shape == (3, 5)
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        model.generate(ids, attention_mask=mask, decoder_start_token_id=None)
    for n in ("a", "b"):
        model.add_adapter(n, "seq_bn")
    model.active_adapters = ma.Parallel("a", "b")
    with pytest.raises(ConfigError, match="Parallel"):
        model.generate(ids, attention_mask=mask)


@pytest.mark.spec("ENCDEC-4")
def test_cache_serves_one_batch(model):
    ids, mask, dec = batch()
    cache = ed.EncDecCache(model.config.decoder_layers)
    out = model(ids, mask, dec[:, :1], past_key_values=cache)
    assert cache.length == 1
    with pytest.raises(ShapeError, match="cache"):
        model(attention_mask=mask[:2], decoder_input_ids=dec[:2, 1:2], past_key_values=cache,
              encoder_outputs=out.encoder_last_hidden_state[:2])
    with pytest.raises(ShapeError, match="plus 1 cached tokens"):
        model(None, mask, dec[:, 1:2], np.ones((3, 1)), past_key_values=cache, encoder_outputs=out)


@pytest.mark.spec("BART-1")
def test_lm_logits_add_the_checkpoint_bias(model):
    """The bare model's generate projection: tied embedding plus final_logits_bias when the checkpoint has one."""
    h = np.random.default_rng(0).normal(size=(2, model.hidden_size)).astype(np.float32)
    W = gen.lm_head_weight(model)
    base = gen.lm_logits(model, h, W)
    model.lm_head_bias = np.arange(model.config.vocab_size, dtype=np.float32)
    np.testing.assert_allclose(gen.lm_logits(model, h, W) - base, np.broadcast_to(model.lm_head_bias, base.shape),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.spec("ENCDEC-5")
def test_tied_lm_scale_rescales_only_a_tied_projection(model):
    """A family's tied_lm_scale (T5: d_model ** -0.5) multiplies the decoder state before the tied projection."""
    import dataclasses
    h = np.random.default_rng(1).normal(size=(2, model.hidden_size)).astype(np.float32)
    W = gen.lm_head_weight(model)
    base = gen.lm_logits(model, h, W)
    model.arch = dataclasses.replace(model.arch, tied_lm_scale=lambda cfg: 0.25)
    np.testing.assert_allclose(gen.lm_logits(model, h, W), 0.25 * base, rtol=1e-5, atol=1e-6)
    model.config = dataclasses.replace(model.config, tie_word_embeddings=False)
    np.testing.assert_allclose(gen.lm_logits(model, h, W), base, rtol=1e-6)
