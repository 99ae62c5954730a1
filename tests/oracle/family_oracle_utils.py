"""Tiny random transformers models of the families added after BERT/GPT-2/LLaMA (odd sizes, eager attention,
every weight and bias perturbed, adapters.init applied). Only imported by oracle tests.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

VOCAB = 101
DECODER_SIZES = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=68, vocab_size=VOCAB, max_position_embeddings=64)


def _config(model_type, overrides):
    t = transformers
    if model_type == "distilbert":
        kw = dict(dim=36, n_layers=3, n_heads=4, hidden_dim=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.DistilBertConfig(**dict(kw, **overrides), attn_implementation="eager"), t.DistilBertModel
    classes = {"mistral": (t.MistralConfig, t.MistralModel), "qwen2": (t.Qwen2Config, t.Qwen2Model),
               "qwen3": (t.Qwen3Config, t.Qwen3Model), "gemma": (t.GemmaConfig, t.GemmaModel)}
    cfg_cls, model_cls = classes[model_type]
    return (cfg_cls(**dict(DECODER_SIZES, **overrides), attn_implementation="eager", pad_token_id=0,
                    eos_token_id=2, bos_token_id=1), model_cls)


def hf_family_model(model_type, seed=0, scale=0.05, **overrides):
    """A small random transformers base model of ``model_type``, every parameter perturbed (biases nonzero)."""
    torch.manual_seed(seed)
    cfg, cls = _config(model_type, overrides)
    model = cls(cfg)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval()
    adapters.init(model)
    return model
