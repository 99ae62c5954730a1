"""Tiny random encoder-decoder models (eager attention, adapters.init, every weight perturbed) and padded
encoder/decoder batches for the encoder-decoder oracle tests. Only imported by oracle tests.
"""
from __future__ import annotations

import numpy as np

import pytest

torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

# ---- T5 / MT5 --------------------------------------------------------------------------------------
# d_kv · heads = 35 ≠ d_model 36; 8 buckets with max distance 20 < 23 encoder tokens (logarithmic buckets used)
T5_SIZES = dict(vocab_size=101, d_model=36, d_kv=7, d_ff=37, num_layers=2, num_heads=5,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
T5_ENC_T, T5_DEC_T = 23, 6


def hf_t5(model_type="t5", seed=0, scale=0.05, lm=False, **overrides):
    """A small random T5Model / MT5Model (``lm``: ...ForConditionalGeneration), every parameter perturbed,
    adapters.init applied."""
    torch.manual_seed(seed)
    t = transformers
    cfg_cls = t.T5Config if model_type == "t5" else t.MT5Config
    cfg = cfg_cls(**dict(T5_SIZES, **overrides), attn_implementation="eager")
    name = ("T5" if model_type == "t5" else "MT5") + ("ForConditionalGeneration" if lm else "Model")
    model = getattr(t, name)(cfg)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval()
    adapters.init(model)
    return model


def t5_batch(vocab=101, B=3, T=T5_ENC_T, Td=T5_DEC_T, seed=0, pad_side="right", decoder_mask=True):
    """input_ids / attention_mask (rows 1, 2 padded on ``pad_side``; None: no masks) and decoder_input_ids /
    decoder_attention_mask (row 2 right-padded; ``decoder_mask=False``: none), as a dict of NumPy arrays."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(B, T))
    dids = rng.integers(2, vocab, size=(B, Td))
    if pad_side is None:
        return {"input_ids": ids, "decoder_input_ids": dids}
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        n = min(b * 3, T - 2)
        if pad_side == "right":
            mask[b, T - n:] = 0
        else:
            mask[b, :n] = 0
    dmask = np.ones((B, Td), np.int64)
    if B > 2:
        dmask[2, Td - 2:] = 0
    out = {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask,
           "decoder_input_ids": np.where(dmask == 1, dids, 0), "decoder_attention_mask": dmask}
    if not decoder_mask:
        del out["decoder_attention_mask"]
    return out
