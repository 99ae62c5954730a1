"""Tiny random GPT-2 / LLaMA models (eager attention, adapters.init, perturbed weights) for decoder oracle tests.

Only imported by oracle tests (they importorskip adapters first).
"""
from __future__ import annotations

import numpy as np

import pytest

torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

GPT2_SIZES = dict(n_embd=36, n_layer=3, n_head=4, n_inner=68, vocab_size=101, n_positions=64)
LLAMA_SIZES = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=68, vocab_size=101, max_position_embeddings=64)


def hf_decoder(model_type="gpt2", seed=0, lm=False, scale=0.05, **overrides):
    """A small random transformers decoder (eager), every weight perturbed; ``lm`` adds the LM head class."""
    torch.manual_seed(seed)
    if model_type == "gpt2":
        cfg = transformers.GPT2Config(**dict(GPT2_SIZES, **overrides), attn_implementation="eager")
        model = (transformers.GPT2LMHeadModel if lm else transformers.GPT2Model)(cfg)
    elif model_type == "llama":
        cfg = transformers.LlamaConfig(**dict(LLAMA_SIZES, **overrides), attn_implementation="eager",
                                       pad_token_id=0, eos_token_id=2, bos_token_id=1)
        model = (transformers.LlamaForCausalLM if lm else transformers.LlamaModel)(cfg)
    else:
        raise ValueError(model_type)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval()
    adapters.init(model)
    return model


def batch(vocab=101, B=3, T=9, seed=0, pad_side="right", pad=0):
    """input_ids and attention_mask with 0, 2, 4 padded tokens in rows 0, 1, 2."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        n = min(b * 2, T - 2)
        if pad_side == "right":
            mask[b, T - n:] = 0
        elif pad_side == "left":
            mask[b, :n] = 0
    return np.where(mask == 1, ids, pad).astype(np.int64), mask
