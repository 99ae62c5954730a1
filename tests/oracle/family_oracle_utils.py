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
    if model_type == "electra":
        kw = dict(hidden_size=40, embedding_size=28, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.ElectraConfig(**dict(kw, **overrides), attn_implementation="eager"), t.ElectraModel
    if model_type == "albert":
        kw = dict(hidden_size=40, embedding_size=28, num_hidden_layers=4, num_hidden_groups=2, num_attention_heads=4,
                  intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.AlbertConfig(**dict(kw, **overrides), attn_implementation="eager"), t.AlbertModel
    if model_type == "bert-generation":
        kw = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                  vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        return t.BertGenerationConfig(**dict(kw, **overrides), attn_implementation="eager"), t.BertGenerationEncoder
    if model_type == "xmod":       # two languages; adapters.init deletes the language adapters
        kw = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, vocab_size=VOCAB,
                  max_position_embeddings=64, pad_token_id=0, languages=["en_XX", "de_DE"], adapter_reduction_factor=4)
        return t.XmodConfig(**dict(kw, **overrides), attn_implementation="eager"), t.XmodModel
    if model_type == "gptj":       # head_dim 10, rotary on 6 of them (interleaved pairs), lm_head with a bias
        kw = dict(n_embd=40, n_layer=3, n_head=4, rotary_dim=6, n_inner=68, vocab_size=VOCAB, n_positions=64,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
        return t.GPTJConfig(**dict(kw, **overrides), attn_implementation="eager"), t.GPTJModel
    classes = {"mistral": (t.MistralConfig, t.MistralModel), "qwen2": (t.Qwen2Config, t.Qwen2Model),
               "qwen3": (t.Qwen3Config, t.Qwen3Model), "gemma": (t.GemmaConfig, t.GemmaModel)}
    cfg_cls, model_cls = classes[model_type]
    return (cfg_cls(**dict(DECODER_SIZES, **overrides), attn_implementation="eager", pad_token_id=0,
                    eos_token_id=2, bos_token_id=1), model_cls)


def gemma_interface():
    """adapters 1.3.0 has no interface for Gemma (v1): the declaration a user passes to adapters.init, the same data
    as minadapters' GEMMA record (LLaMA-like, up_proj = intermediate, pre-norms only)."""
    return adapters.AdapterModelInterface(
        adapter_methods=["bottleneck", "lora", "reft", "invertible"], model_embeddings="embed_tokens",
        model_layers="layers", layer_self_attn="self_attn", layer_cross_attn=None, attn_k_proj="k_proj",
        attn_q_proj="q_proj", attn_v_proj="v_proj", attn_o_proj="o_proj", layer_intermediate_proj="mlp.up_proj",
        layer_output_proj="mlp.down_proj", layer_pre_self_attn="input_layernorm",
        layer_pre_ffn="post_attention_layernorm", layer_ln_1=None, layer_ln_2=None)


def hf_family_model(model_type, seed=0, scale=0.05, lm=False, **overrides):
    """A small random transformers base model of ``model_type``, every parameter perturbed (biases nonzero);
    ``lm``: the ...ForCausalLM class."""
    torch.manual_seed(seed)
    cfg, cls = _config(model_type, overrides)
    if lm:
        cls = getattr(transformers, cls.__name__.replace("Model", "ForCausalLM"))
    model = cls(cfg)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval()
    adapters.init(model, interface=gemma_interface() if model_type == "gemma" else None)
    return model
