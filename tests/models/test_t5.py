"""T5 / MT5 without torch: config validation, relative position buckets worked by hand from the spec, adapters'
state-dict keys at T5's locations, decoder defaults, cached decoding. Spec: T5-1, T5-3, T5-4, T5-5, T5-RELPOS-1.
(Parity with transformers / adapters 1.3.0 is tests/oracle/test_t5_oracle.py.)
"""
import json

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import ConfigError
from minadapters.functional.t5 import relative_position_bucket
from minadapters.io.safetensors_io import save_safetensors
from minadapters.models import architecture

RAW = dict(model_type="t5", vocab_size=41, d_model=24, d_kv=5, d_ff=37, num_layers=2, num_decoder_layers=3,
           num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20)


def write_model(tmp_path, **overrides):
    raw = dict(RAW, **overrides)
    arch = architecture(raw["model_type"])
    cfg = arch.config_class.from_dict(raw)
    rng = np.random.default_rng(0)
    w = {k: (rng.standard_normal(s) * 0.3 + (1.0 if k.endswith("layer_norm.weight") else 0.0)).astype(np.float32)
         for k, s in arch.expected_shapes(cfg).items()}
    save_safetensors(str(tmp_path / "model.safetensors"), w)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return ma.AutoModel.from_pretrained(tmp_path)


@pytest.mark.spec("T5-RELPOS-1")
@pytest.mark.parametrize("r,bidirectional,bucket", [
    # 8 buckets, max distance 20. bidirectional: n = 4, e = 2, offset 4 for r > 0
    (0, True, 0), (-1, True, 1), (1, True, 5), (-2, True, 2),           # d = 2: 2 + ⌊log(1)/log(10)·2⌋ = 2
    (-9, True, 3), (-20, True, 3), (-500, True, 3),                     # ⌊log(4.5)/log(10)·2⌋ = 1 -> 3; capped n-1
    (3, True, 6), (7, True, 7),                                         # 4 + 2 + ⌊log(3.5)/log(10)·2⌋ = 4 + 3
    # unidirectional: n = 8, e = 4, keys after the query -> 0
    (5, False, 0), (0, False, 0), (-3, False, 3), (-4, False, 4),
    (-6, False, 5), (-9, False, 6), (-19, False, 7), (-1000, False, 7),   # 4 + ⌊log(d/4)/log(5)·4⌋: 1.0, 2.0, 3.9
])
def test_relative_position_bucket_by_hand(r, bidirectional, bucket):
    got = relative_position_bucket(np.array([r]), bidirectional=bidirectional, num_buckets=8, max_distance=20)
    assert int(got[0]) == bucket, f"r={r} bidirectional={bidirectional}: bucket {int(got[0])}, but should be {bucket}"


@pytest.mark.spec("T5-1")
@pytest.mark.parametrize("proj", ["gated-relu-x", "silly-gelu", 3, "gated-nonsense"])
def test_bad_feed_forward_proj_is_refused(proj):
    with pytest.raises(ValueError, match="feed_forward_proj|nonsense"):
        architecture("t5").config_class.from_dict(dict(RAW, feed_forward_proj=proj))


@pytest.mark.spec("T5-1")
def test_mt5_defaults_are_gated_and_untied():
    cfg = architecture("mt5").config_class.from_dict(dict(RAW, model_type="mt5"))
    assert cfg.is_gated_act and cfg.dense_act_fn == "gelu_new" and not cfg.tie_word_embeddings
    cfg = architecture("t5").config_class.from_dict(RAW)
    assert not cfg.is_gated_act and cfg.dense_act_fn == "relu" and cfg.tie_word_embeddings
    assert cfg.num_decoder_layers == 3 and cfg.head_dim == 5 and cfg.hidden_size == 24


@pytest.mark.spec("T5-4")
@pytest.mark.spec("T5-5")
@pytest.mark.parametrize("proj,wi", [("relu", "wi"), ("gated-gelu", "wi_1")])
def test_adapter_keys_at_t5_locations(proj, wi, tmp_path):
    """adapters' state-dict keys: LoRA on q/k/v of both attentions and on wi (wi_1 when gated); bottlenecks on the
    sub-layer modules; prefixes per location; the invertible adapter under encoder."""
    m = write_model(tmp_path, feed_forward_proj=proj)
    m.add_adapter("l", "lora[attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]")
    keys = set(m.adapter_state_dict("l"))
    for k in (f"encoder.block.1.layer.1.DenseReluDense.{wi}.loras.l.lora_A", "decoder.block.2.layer.2.DenseReluDense."
              f"{wi}.loras.l.lora_B", "decoder.block.0.layer.1.EncDecAttention.k.loras.l.lora_A",
              "decoder.block.0.layer.2.DenseReluDense.wo.loras.l.lora_A", "encoder.block.0.layer.0.SelfAttention.q."
              "loras.l.lora_A"):
        assert k in keys, f"{k} missing; have e.g. {sorted(keys)[:4]}"
    assert not any("wi_0" in k or ".o.loras" in k for k in keys)
    m.add_adapter("b", "double_seq_bn[cross_adapter=True, inv_adapter='nice', inv_adapter_reduction_factor=2]")
    keys = set(m.adapter_state_dict("b"))
    for k in ("encoder.block.0.layer.0.adapters.b.adapter_down.0.weight",
              "encoder.block.0.layer.1.adapters.b.adapter_up.weight",
              "decoder.block.1.layer.1.adapters.b.adapter_up.weight",
              "decoder.block.1.layer.2.adapters.b.adapter_up.weight", "encoder.invertible_adapters.b.F.0.weight"):
        assert k in keys, f"{k} missing"
    m.add_adapter("p", "prefix_tuning[prefix_length=2, bottleneck_size=4, flat=True]")
    shapes = {k: v.shape for k, v in m.adapter_state_dict("p").items()}
    # K/V width N·Dh = 15 (d_kv 5), not d_model 24: encoder 2 layers, decoder 3 (self and cross)
    assert shapes == {"prefix_tuning.prefix_tunings.p.encoder_prefix.control_trans": (2 * 2 * 2 * 15,),
                      "prefix_tuning.prefix_tunings.p.self_prefix.control_trans": (2 * 3 * 2 * 15,),
                      "prefix_tuning.prefix_tunings.p.cross_prefix.control_trans": (2 * 3 * 2 * 15,)}


@pytest.mark.spec("T5-5")
def test_prompt_tuning_is_refused(tmp_path):
    m = write_model(tmp_path)
    with pytest.raises(ConfigError, match="prompt_tuning.*t5"):
        m.add_adapter("pt", "prompt_tuning")


@pytest.mark.spec("T5-3")
def test_decoder_inputs_default_to_shifted_input_ids_and_cache_equals_full(tmp_path):
    m = write_model(tmp_path, feed_forward_proj="gated-gelu")
    m.add_adapter("a", "prefix_tuning[prefix_length=2]|seq_bn[cross_adapter=True]", set_active=True)
    ids = np.array([[5, 6, 7, 8, 9, 1], [10, 11, 12, 1, 0, 0]])
    mask = (np.arange(6) < np.array([[6], [4]])).astype(np.int64)
    shifted = np.concatenate([np.zeros((2, 1), np.int64), ids[:, :-1]], axis=1)
    np.testing.assert_array_equal(m(ids, mask).last_hidden_state, m(ids, mask, shifted).last_hidden_state)
    np.testing.assert_array_equal(m.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None),
                                  m.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None,
                                             use_cache=False))


@pytest.mark.spec("T5-1")
@pytest.mark.parametrize("arch", ["t5", "mt5"])
def test_tiny_t5_run_prints_generated_text(arch, tmp_path, capsys):
    """`minadapters tiny-model --arch t5|mt5` writes a random T5 (tied) / MT5 (untied lm_head) with a tokenizer;
    `minadapters run` prints, per input, the decoding of model.generate's tokens with the demo adapter active."""
    from minadapters.cli import main
    d = tmp_path / arch
    assert main(["tiny-model", str(d), "--arch", arch, "--adapter", "seq_bn[cross_adapter=True]|lora[r=4]"]) == 0
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_adapter"), "--max-new-tokens", "6",
                 "hello adapters world", "the model"]) == 0
    out = capsys.readouterr().out
    assert f"({arch}, 2+2 layers" in out and "generated: (2, 7)" in out, out
    m = ma.AutoModel.from_pretrained(d)
    m.load_adapter(str(d / "demo_adapter"), set_active=True)
    tok = ma.AutoTokenizer.from_pretrained(d)
    enc = tok(["hello adapters world", "the model"], padding=True)
    ids = m.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=6)
    for b, row in enumerate(ids):
        text = tok.decode(row.tolist(), skip_special_tokens=True)
        assert text.strip() and f"[{b}] " in out and f"-> {text!r}" in out, (text, out)
