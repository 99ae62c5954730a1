"""Parameter counts per adapter, like adapters' ``adapter_summary``, from real models or architecture presets.

Spec: API-3. Every function takes the model object; this module does not import model.py (model.py imports it).
Presets need no weights: ``tiny.shell_model`` builds a model whose base parameters are zero-stride arrays.
"""
from __future__ import annotations

import numpy as np

from .configuration import ConfigUnion

# The table adapters' adapter_summary prints: (column, alignment, width, number format), 80 characters wide.
SUMMARY_COLUMNS = (("name", "<", 25, ""), ("architecture", "<", 15, ""), ("#param", ">", 12, ","),
                   ("%param", ">", 12, ".3f"), ("active", ">", 8, ""), ("train", ">", 8, ""))
SUMMARY_WIDTH = 80

ARCH_PRESETS = {
    "bert-base-uncased": dict(model_type="bert", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, vocab_size=30522, max_position_embeddings=512,
                              type_vocab_size=2, pad_token_id=0),
    "bert-large-uncased": dict(model_type="bert", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, vocab_size=30522, max_position_embeddings=512,
                               type_vocab_size=2, pad_token_id=0),
    "roberta-base": dict(model_type="roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1),
    "roberta-large": dict(model_type="roberta", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                          pad_token_id=1),
    "xlm-roberta-base": dict(model_type="xlm-roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, vocab_size=250002, max_position_embeddings=514,
                             type_vocab_size=1, pad_token_id=1),
    "distilbert-base-uncased": dict(model_type="distilbert", dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                                    vocab_size=30522, max_position_embeddings=512, sinusoidal_pos_embds=False,
                                    activation="gelu", pad_token_id=0),
    "distilbert-base-multilingual-cased": dict(model_type="distilbert", dim=768, n_layers=6, n_heads=12,
                                               hidden_dim=3072, vocab_size=119547, max_position_embeddings=512,
                                               activation="gelu", pad_token_id=0),
    "albert-base-v2": dict(model_type="albert", hidden_size=768, embedding_size=128, num_hidden_layers=12,
                           num_hidden_groups=1, num_attention_heads=12, intermediate_size=3072, vocab_size=30000,
                           max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu_new"),
    "google/electra-base-discriminator": dict(model_type="electra", hidden_size=768, embedding_size=768,
                                              num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                              vocab_size=30522, max_position_embeddings=512, type_vocab_size=2),
    "google/electra-small-discriminator": dict(model_type="electra", hidden_size=256, embedding_size=128,
                                               num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024,
                                               vocab_size=30522, max_position_embeddings=512, type_vocab_size=2),
    "google/bert_for_seq_generation_L-24_bbc_encoder": dict(model_type="bert-generation", hidden_size=1024,
                                                             num_hidden_layers=24, num_attention_heads=16,
                                                             intermediate_size=4096, vocab_size=50358,
                                                             max_position_embeddings=512),
    "microsoft/deberta-base": dict(model_type="deberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, vocab_size=50265, max_position_embeddings=512,
                                   type_vocab_size=0, relative_attention=True, pos_att_type="c2p|p2c",
                                   max_relative_positions=-1, position_biased_input=False, layer_norm_eps=1e-7),
    "microsoft/deberta-v3-base": dict(model_type="deberta-v2", hidden_size=768, num_hidden_layers=12,
                                      num_attention_heads=12, intermediate_size=3072, vocab_size=128100,
                                      max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                                      position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                                      pos_att_type="p2c|c2p", max_relative_positions=-1,
                                      position_biased_input=False, layer_norm_eps=1e-7),
    "mistralai/Mistral-7B-v0.1": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                                      vocab_size=32000, max_position_embeddings=32768, rms_norm_eps=1e-5,
                                      sliding_window=4096),
    "mistral-7b-v0.1": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                            num_key_value_heads=8, intermediate_size=14336, vocab_size=32000,
                            max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=4096),
    "Qwen/Qwen2.5-0.5B": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                              num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                              max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                              tie_word_embeddings=True, use_sliding_window=False, max_window_layers=24),
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                            num_key_value_heads=8, head_dim=128, intermediate_size=3072, vocab_size=151936,
                            max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
                            tie_word_embeddings=True),
    "google/gemma-2b": dict(model_type="gemma", hidden_size=2048, num_hidden_layers=18, num_attention_heads=8,
                            num_key_value_heads=1, head_dim=256, intermediate_size=16384, vocab_size=256000,
                            max_position_embeddings=8192, rms_norm_eps=1e-6, hidden_act="gelu"),
    "facebook/bart-base": dict(model_type="bart", d_model=768, encoder_layers=6, decoder_layers=6,
                               encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                               decoder_ffn_dim=3072, vocab_size=50265, max_position_embeddings=1024),
    "facebook/bart-large": dict(model_type="bart", d_model=1024, encoder_layers=12, decoder_layers=12,
                                encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                                decoder_ffn_dim=4096, vocab_size=50265, max_position_embeddings=1024),
    "facebook/mbart-large-cc25": dict(model_type="mbart", d_model=1024, encoder_layers=12, decoder_layers=12,
                                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                                      decoder_ffn_dim=4096, vocab_size=250027, max_position_embeddings=1024,
                                      scale_embedding=True),
    "uclanlp/plbart-base": dict(model_type="plbart", d_model=768, encoder_layers=6, decoder_layers=6,
                                encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                                decoder_ffn_dim=3072, vocab_size=50005, max_position_embeddings=1024,
                                scale_embedding=True),
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
    "EleutherAI/gpt-j-6b": dict(model_type="gptj", n_embd=4096, n_layer=28, n_head=16, rotary_dim=64, n_inner=None,
                                vocab_size=50400, n_positions=2048, activation_function="gelu_new",
                                layer_norm_epsilon=1e-5, tie_word_embeddings=False),
    "facebook/xmod-base": dict(model_type="xmod", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, vocab_size=250002, max_position_embeddings=514,
                               type_vocab_size=1, pad_token_id=1, pre_norm=False, adapter_layer_norm=False,
                               adapter_reuse_layer_norm=True, ln_before_adapter=True, adapter_reduction_factor=2),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5),
    "t5-base": dict(model_type="t5", d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128,
                    feed_forward_proj="relu", tie_word_embeddings=True),
    "google/mt5-small": dict(model_type="mt5", d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                             vocab_size=250112, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def adapter_param_count(model, name: str) -> int:
    """Number of parameters of one adapter; arrays registered under several keys count once."""
    seen: set = set()
    return sum(obj.summary_param_count(name, seen) for obj in model._all_method_objects())


def model_adapter_summary(model, as_dict: bool = False):
    """Rows: name, architecture, #param, %param (of the base model), active, train. Spec: API-3."""
    rows = []
    active = model.active_adapters
    for name, cfg in model.adapters_config.adapters.items():
        arch = "union" if isinstance(cfg, ConfigUnion) else (cfg.get("architecture") or "bottleneck")
        rows.append({"name": name, "architecture": arch, "#param": adapter_param_count(model, name),
                     "active": active is not None and name in active.flatten(), "train": True})
    # parameters only: checkpoints may carry integer buffers (embeddings.position_ids) that are not parameters
    base = int(sum(np.prod(v.shape) for v in model.params.values() if np.issubdtype(v.dtype, np.floating)))
    for r in rows:
        r["%param"] = r["#param"] / base * 100
    rows.append({"name": "Full model", "#param": base, "%param": 100.0, "train": True})
    if as_dict:
        return rows
    header = [name for name, *_ in SUMMARY_COLUMNS]
    title = "".join(f"{{:{align}{width}}}" for _, align, width, _ in SUMMARY_COLUMNS)
    fmt = "".join(f"{{:{align}{width}{spec}}}" for _, align, width, spec in SUMMARY_COLUMNS)
    rule, thin = "=" * SUMMARY_WIDTH, "-" * SUMMARY_WIDTH
    out = [rule, title.format(*[h.title() for h in header]), thin]
    out += [fmt.format(*[r.get(h, "") for h in header]) for r in rows]
    out.insert(len(out) - 1, thin)  # a rule above the "Full model" row
    out.append(rule)
    return "\n".join(out)
