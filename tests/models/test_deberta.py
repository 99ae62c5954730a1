"""DeBERTa / DeBERTa-v2 without torch: config validation, refusals, checkpoint keys, token types. Spec: DEB-1 .. DEB-6.
(Parity with transformers / adapters 1.3.0: tests/oracle/test_deberta_oracle.py; padding, BatchSplit / Parallel and
native invariants: tests/models/test_model_families.py.)"""
import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import ConfigError, ShapeError
from minadapters.functional import deberta as F
from minadapters.models import architecture

from test_model_families import RAWS, ids_mask, weights, write


@pytest.mark.spec("DEB-1")
@pytest.mark.parametrize("model_type,change,err,pattern", [
    ("deberta", dict(hidden_size=25), ShapeError, "hidden_size=25 is not a multiple of num_attention_heads=4"),
    ("deberta-v2", dict(attention_head_size=8), ConfigError, "attention_head_size=8 must equal"),
    ("deberta-v2", dict(conv_kernel_size=4), ConfigError, "conv_kernel_size=4 must be odd"),
    ("deberta-v2", dict(conv_groups=5), ConfigError, "conv_groups=5 must divide hidden_size=24"),
    ("deberta", dict(pos_att_type=[1]), ConfigError, "pos_att_type=\\[1\\]"),
    ("deberta", dict(relative_attention="yes"), ConfigError, "relative_attention='yes'"),
    ("deberta-v2", dict(position_buckets=2.5), ConfigError, "position_buckets=2.5"),
])
def test_config_errors(model_type, change, err, pattern):
    with pytest.raises(err, match=pattern):
        architecture(model_type).config_class.from_dict(dict(RAWS[model_type], **change))


@pytest.mark.spec("DEB-2")
def test_relative_positions_and_span():
    """δ = i − j without buckets; buckets keep |δ| < b/2 and stay odd-symmetric; v2's span is the bucket count."""
    np.testing.assert_array_equal(F.relative_positions(3, 3), [[0, -1, -2], [1, 0, -1], [2, 1, 0]])
    rel = F.relative_positions(40, 40, bucket_size=8, max_position=64)
    assert np.array_equal(rel, -rel.T), "log buckets must be odd-symmetric"
    small = np.abs(F.relative_positions(40, 40)) < 4
    np.testing.assert_array_equal(rel[small], F.relative_positions(40, 40)[small])
    cfg = architecture("deberta-v2").config_class.from_dict(RAWS["deberta-v2"])
    assert (cfg.span, cfg.rel_rows, cfg.scale_factor) == (4, 8, 3)
    v1 = architecture("deberta").config_class.from_dict(dict(RAWS["deberta"], pos_att_type=["c2p", "p2c", "p2c"]))
    assert v1.scale_factor == 4, "v1 counts every pos_att_type entry (transformers' len(pos_att_type))"


@pytest.mark.spec("DEB-4")
def test_pairwise_mask_and_prompt_prefix():
    m = F.pairwise_mask(np.array([[1, 1, 0]]), np.float32)
    assert m.shape == (1, 1, 3, 3) and (m[0, 0, 2] < 0).all() and (m[0, 0, :2, :2] == 0).all()
    p = F.prompt_pairwise_mask(m, 2)
    assert p.shape == (1, 1, 5, 5)
    assert (p[0, 0, :2] == 0).all() and (p[0, 0, :, :2] == 0).all(), "prompt rows / columns attend everywhere"
    assert (p[0, 0, 4, 2:] < 0).all(), "a padding row still masks the real keys"


@pytest.mark.spec("DEB-5")
def test_prompt_tuning_with_conv_layer_is_refused(tmp_path):
    raw = dict(RAWS["deberta-v2"], embedding_size=24)
    m = write(tmp_path / "m", raw, weights(raw))
    m.add_adapter("p", config="prompt_tuning[prompt_length=2]", set_active=True)
    ids, mask = ids_mask()
    with pytest.raises(ValueError, match="conv_kernel_size=3: prompt tuning"):
        m(ids, attention_mask=mask)


@pytest.mark.spec("DEB-6")
def test_v1_fused_in_proj_refusals_and_stored_bias(tmp_path):
    """DoRA / VeRA refused on the fused in_proj; LoRA blocks refused there; an in_proj.bias in the checkpoint is
    used (a model saved after adapters.init carries one)."""
    raw = RAWS["deberta"]
    w = weights(raw)
    m = write(tmp_path / "a", raw, w)
    for cfg in ("lora[use_dora=True]", "vera[r=2]"):
        with pytest.raises(ConfigError, match="fused qkv"):
            m.add_adapter("x", config=cfg)
    m.add_adapter("l1", config="lora[r=2]")
    m.add_adapter("l2", config="lora[r=2]")
    ids, mask = ids_mask()
    m.active_adapters = ma.Stack("l1", "l2")
    with pytest.raises(ValueError, match="Invalid adapter setup"):
        m(ids, attention_mask=mask)
    m.active_adapters = None
    base = m(ids, attention_mask=mask).last_hidden_state
    w2 = dict(w, **{f"encoder.layer.{i}.attention.self.in_proj.bias": np.full(72, 0.3, np.float32)
                    for i in range(2)})
    biased = write(tmp_path / "b", raw, w2)(ids, attention_mask=mask).last_hidden_state
    assert np.abs(biased - base).max() > 1e-3, "a stored in_proj.bias must change the output"


@pytest.mark.spec("DEB-1")
def test_token_types_ignored_without_a_table(tmp_path):
    """type_vocab_size = 0 (deberta-v3): token_type_ids are ignored, as transformers ignores them."""
    raw = RAWS["deberta-v2"]
    m = write(tmp_path / "m", raw, weights(raw))
    ids, mask = ids_mask()
    a = m(ids, attention_mask=mask).last_hidden_state
    b = m(ids, attention_mask=mask, token_type_ids=np.ones_like(ids)).last_hidden_state
    np.testing.assert_array_equal(a, b)
    assert "embeddings.token_type_embeddings.weight" in weights(RAWS["deberta"])
