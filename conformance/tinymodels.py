"""Tiny random base models written as Hugging Face checkpoint directories, using NumPy only.

The suite needs a base model that every driver can load: ``config.json`` plus ``model.safetensors``
(written here byte by byte, so the core needs neither torch nor the safetensors package). Sizes are
deliberately awkward (hidden 20 with 4 heads of 5, FFN 37, vocab 53, two layers) so layout bugs show.
Weights are float32 draws from a seeded generator, including non-zero biases and LayerNorm affine parts.

DeBERTa-v2 (``DebertaV2Model``, deberta-v3's options: no absolute positions, relative attention with c2p and p2c,
log position buckets 8 of max_relative_positions 40, LayerNorm on the relative embeddings; own pos_key/pos_query
projections, ``share_att_key`` off) keeps hidden 20 / 4 heads / FFN 37 and pads on the right.

Decoders (transformers' ``GPT2Model`` / ``LlamaModel`` / ``MistralModel`` / ``Qwen2Model``, loaded with
``attn_implementation="eager"``):
GPT-2 keeps hidden 20 / 4 heads / FFN 37 and stores its Conv1D weights ``(in, out)`` as the checkpoints do;
LLaMA has hidden 24 with 4 query heads and 2 key-value heads of 6 (GQA; RoPE needs an even head size),
SwiGLU FFN 37; Mistral and Qwen2 are LLaMA's sizes with a sliding window of 5 (Mistral: every layer; Qwen2: layers
>= 1) and, for Qwen2, q/k/v biases. DistilBERT (encoder) has BERT's sizes under its own names, no token types.
Decoder batches are padded on the left or the right (``pad_side``).

Encoder-decoders (transformers' ``BartModel``): hidden 20, 4 heads, FFN 37 / 29 (encoder / decoder), 2 encoder layers
and 1 decoder layer (adapters numbers it 2; one decoder layer keeps the float32 error of the 3 layers plus
cross-attention within the differential tolerance). The suite hands them ``input_ids`` only: the decoder
reads them shifted right (``decoder_start_token_id`` first), and the output is the decoder's states (B, T, D).
Their batches are right-padded (learned positions count padding).
T5 (``T5Model``): hidden 20, 4 heads of d_kv 5 (heads·d_kv = d_model, so LoRA Stacks can chain deltas; the oracle
tests cover d_kv != d_model / heads), gated-gelu FFN 37, 8 relative buckets of
max distance 6 (the drawn batches reach the logarithmic buckets), 2 encoder layers and 1 decoder layer, untied; the
drivers shift input_ids right for the decoder as BART does (adapters' bare T5Model needs them passed: the adapters
driver passes ``model._shift_right(input_ids)``; T5AdapterModel and minadapters shift by themselves).
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

SIZES = dict(hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=53,
             max_position_embeddings=40)
ARCHS = ("bert", "roberta", "gpt2", "llama", "distilbert", "mistral", "qwen2", "deberta-v2", "bart", "t5")
ENCODERS = ("bert", "roberta", "distilbert", "deberta-v2")
DECODERS = ("gpt2", "llama", "mistral", "qwen2")
ENCODER_DECODERS = ("bart", "t5")
PRE_LN = (*DECODERS, "t5")    # no LayerNorm after a sub-layer: residual_before_ln="post_add" cannot apply
LLAMA_LIKE = ("llama", "mistral", "qwen2")          # GQA decoders with LLaMA's module names
PAD_ID = {"bert": 0, "roberta": 1, "gpt2": 0, "llama": 0, "distilbert": 0, "mistral": 0, "qwen2": 0,
          "deberta-v2": 0, "bart": 1, "t5": 0}
DEBERTA_V2 = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=-1,
                  norm_rel_ebd="layer_norm", share_att_key=False, position_biased_input=False, type_vocab_size=0,
                  layer_norm_eps=1e-7)
LLAMA_SIZES = dict(SIZES, hidden_size=24, num_key_value_heads=2)
SLIDING_WINDOW = 5      # Mistral / Qwen2 (layers >= 1): shorter than the longest drawn batch (9), so it cuts


def write_safetensors(path: str, tensors: dict) -> None:
    """Write float32/int64 arrays in the safetensors layout: u64 header length, JSON header, raw data."""
    names = sorted(tensors)
    header, offset, blobs = {}, 0, []
    for n in names:
        a = np.ascontiguousarray(tensors[n])
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float64): "F64"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[n] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def hf_config(arch: str) -> dict:
    """transformers-compatible config.json for a tiny model of ``arch``."""
    if arch in DECODERS:
        return _decoder_config(arch)
    if arch == "bart":
        return _bart_config()
    if arch == "t5":
        return _t5_config()
    s = dict(SIZES)
    if arch == "distilbert":
        return {"architectures": ["DistilBertModel"], "model_type": "distilbert", "dim": s["hidden_size"],
                "n_layers": s["num_hidden_layers"], "n_heads": s["num_attention_heads"],
                "hidden_dim": s["intermediate_size"], "vocab_size": s["vocab_size"],
                "max_position_embeddings": s["max_position_embeddings"], "activation": "gelu",
                "sinusoidal_pos_embds": False, "dropout": 0.1, "attention_dropout": 0.1, "pad_token_id": 0,
                "initializer_range": 0.02, "torch_dtype": "float32", "_attn_implementation": "eager"}
    if arch == "deberta-v2":
        return {"architectures": ["DebertaV2Model"], "model_type": arch, "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
                "pad_token_id": PAD_ID[arch], "torch_dtype": "float32", "_attn_implementation": "eager",
                **DEBERTA_V2, **s}
    cls = {"bert": "BertModel", "roberta": "RobertaModel"}[arch]
    cfg = {"architectures": [cls], "model_type": arch, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
           "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
           "position_embedding_type": "absolute", "pad_token_id": PAD_ID[arch], "torch_dtype": "float32",
           "type_vocab_size": 2 if arch == "bert" else 1, "_attn_implementation": "eager", **s}
    if arch == "roberta":
        cfg.update(bos_token_id=0, eos_token_id=2, max_position_embeddings=s["max_position_embeddings"] + 2)
    return cfg


def _decoder_config(arch: str) -> dict:
    s = dict(SIZES)
    common = {"torch_dtype": "float32", "_attn_implementation": "eager", "pad_token_id": PAD_ID[arch],
              "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "vocab_size": s["vocab_size"]}
    if arch == "gpt2":
        return {"architectures": ["GPT2Model"], "model_type": "gpt2", "n_embd": s["hidden_size"],
                "n_layer": s["num_hidden_layers"], "n_head": s["num_attention_heads"], "n_inner": s["intermediate_size"],
                "n_positions": s["max_position_embeddings"], "activation_function": "gelu_new",
                "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "use_cache": False, **common}
    s = dict(LLAMA_SIZES)
    if arch == "mistral":
        common.update(sliding_window=SLIDING_WINDOW)
    elif arch == "qwen2":
        common.update(use_sliding_window=True, sliding_window=SLIDING_WINDOW, max_window_layers=1)
    cls = {"llama": "LlamaModel", "mistral": "MistralModel", "qwen2": "Qwen2Model"}[arch]
    return {"architectures": [cls], "model_type": arch, "hidden_size": s["hidden_size"],
            "num_hidden_layers": s["num_hidden_layers"], "num_attention_heads": s["num_attention_heads"],
            "num_key_value_heads": s["num_key_value_heads"], "intermediate_size": s["intermediate_size"],
            "max_position_embeddings": s["max_position_embeddings"], "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
            "attention_dropout": 0.0, "tie_word_embeddings": False, "use_cache": False, **common}


def _bart_config() -> dict:
    s = dict(SIZES)
    return {"architectures": ["BartModel"], "model_type": "bart", "d_model": s["hidden_size"],
            "encoder_layers": s["num_hidden_layers"], "decoder_layers": 1, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": s["intermediate_size"], "decoder_ffn_dim": 29,
            "vocab_size": s["vocab_size"], "max_position_embeddings": s["max_position_embeddings"],
            "activation_function": "gelu", "scale_embedding": False, "pad_token_id": PAD_ID["bart"],
            "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2, "forced_eos_token_id": 2,
            "torch_dtype": "float32", "_attn_implementation": "eager", "use_cache": False, "init_std": 0.02}


def _bart_weights(cfg: dict, nrm) -> dict:
    """BartModel base weights: shared embedding, learned positions (+2 rows), two stacks; the decoder's layers
    have cross-attention (encoder_attn)."""
    D = cfg["d_model"]
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"shared.weight": nrm(cfg["vocab_size"], D, s=1.0)}
    for stack, L, F in (("encoder", cfg["encoder_layers"], cfg["encoder_ffn_dim"]),
                        ("decoder", cfg["decoder_layers"], cfg["decoder_ffn_dim"])):
        w[f"{stack}.embed_positions.weight"] = nrm(cfg["max_position_embeddings"] + 2, D, s=0.5)
        w[f"{stack}.layernorm_embedding.weight"], w[f"{stack}.layernorm_embedding.bias"] = ln()
        attns = ("self_attn", "encoder_attn") if stack == "decoder" else ("self_attn",)
        for i in range(L):
            p = f"{stack}.layers.{i}."
            lin = {"fc1": (F, D), "fc2": (D, F)}
            lin.update({f"{a}.{m}_proj": (D, D) for a in attns for m in ("q", "k", "v", "out")})
            for name, (o, n) in lin.items():       # half the encoders' scale: softer attention, so the float32
                w[p + name + ".weight"] = nrm(o, n, s=0.5 / np.sqrt(n))    # error of 3 layers stays in bound
                w[p + name + ".bias"] = nrm(o, s=0.1)
            for lname in [f"{a}_layer_norm" for a in attns] + ["final_layer_norm"]:
                w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    return w


def _t5_config() -> dict:
    s = dict(SIZES)
    return {"architectures": ["T5Model"], "model_type": "t5", "d_model": s["hidden_size"], "d_kv": 5,
            "num_heads": s["num_attention_heads"], "d_ff": s["intermediate_size"], "num_layers": s["num_hidden_layers"],
            "num_decoder_layers": 1, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
            "relative_attention_num_buckets": 8, "relative_attention_max_distance": 6, "layer_norm_epsilon": 1e-6,
            "vocab_size": s["vocab_size"], "pad_token_id": PAD_ID["t5"], "eos_token_id": 1,
            "decoder_start_token_id": 0, "dropout_rate": 0.1, "initializer_factor": 1.0, "is_encoder_decoder": True,
            "torch_dtype": "float32", "_attn_implementation": "eager", "use_cache": False}


def _t5_weights(cfg: dict, nrm) -> dict:
    """T5Model base weights (no biases): shared embedding, per block q/k/v/o of width heads·d_kv,
    the first block's relative attention table, the decoder's EncDecAttention, gated wi_0/wi_1/wo, RMS scales."""
    D, N, Dh, F = cfg["d_model"], cfg["num_heads"], cfg["d_kv"], cfg["d_ff"]
    w = {"shared.weight": nrm(cfg["vocab_size"], D, s=1.0)}
    for stack, L in (("encoder", cfg["num_layers"]), ("decoder", cfg["num_decoder_layers"])):
        w[f"{stack}.final_layer_norm.weight"] = 1 + nrm(D, s=0.1)
        attns = ("SelfAttention", "EncDecAttention") if stack == "decoder" else ("SelfAttention",)
        for i in range(L):
            p = f"{stack}.block.{i}.layer."
            for j, a in enumerate(attns):
                for m, (o, n) in {"q": (N * Dh, D), "k": (N * Dh, D), "v": (N * Dh, D), "o": (D, N * Dh)}.items():
                    w[f"{p}{j}.{a}.{m}.weight"] = nrm(o, n, s=0.5 / np.sqrt(n))   # soft: T5 has no 1/sqrt(Dh)
                w[f"{p}{j}.layer_norm.weight"] = 1 + nrm(D, s=0.1)
            if i == 0:
                w[f"{p}0.SelfAttention.relative_attention_bias.weight"] = nrm(cfg["relative_attention_num_buckets"], N,
                                                                              s=0.5)
            j = len(attns)
            for m, (o, n) in {"wi_0": (F, D), "wi_1": (F, D), "wo": (D, F)}.items():
                w[f"{p}{j}.DenseReluDense.{m}.weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            w[f"{p}{j}.layer_norm.weight"] = 1 + nrm(D, s=0.1)
    return w


def _gpt2_weights(cfg: dict, nrm) -> dict:
    """GPT-2 base weights; Conv1D weights stored (in, out) as in GPT-2 checkpoints."""
    D, F = cfg["n_embd"], cfg["n_inner"]
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"wte.weight": nrm(cfg["vocab_size"], D, s=1.0), "wpe.weight": nrm(cfg["n_positions"], D, s=0.5)}
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        for name, (n, o) in {"attn.c_attn": (D, 3 * D), "attn.c_proj": (D, D), "mlp.c_fc": (D, F),
                             "mlp.c_proj": (F, D)}.items():
            w[p + name + ".weight"] = nrm(n, o, s=1.0 / np.sqrt(n))          # (in, out)
            w[p + name + ".bias"] = nrm(o, s=0.1)
        for lname in ("ln_1", "ln_2"):
            w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    w["ln_f.weight"], w["ln_f.bias"] = ln()
    return w


def _llama_weights(cfg: dict, nrm) -> dict:
    """LLaMA / Mistral / Qwen2 base weights; Qwen2 has q/k/v biases."""
    D, F, N, Nkv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    Dh = D // N
    w = {"embed_tokens.weight": nrm(cfg["vocab_size"], D, s=1.0), "norm.weight": 1 + nrm(D, s=0.1)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        for name, (o, n) in {"self_attn.q_proj": (N * Dh, D), "self_attn.k_proj": (Nkv * Dh, D),
                             "self_attn.v_proj": (Nkv * Dh, D), "self_attn.o_proj": (D, N * Dh),
                             "mlp.gate_proj": (F, D), "mlp.up_proj": (F, D), "mlp.down_proj": (D, F)}.items():
            w[p + name + ".weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            if cfg["model_type"] == "qwen2" and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                w[p + name + ".bias"] = nrm(o, s=0.1)
        w[p + "input_layernorm.weight"] = 1 + nrm(D, s=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + nrm(D, s=0.1)
    return w


def _distilbert_weights(cfg: dict, nrm) -> dict:
    """DistilBERT base weights (q_lin/k_lin/v_lin/out_lin, sa_layer_norm, ffn.lin1/lin2, output_layer_norm)."""
    D, F = cfg["dim"], cfg["hidden_dim"]
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"embeddings.word_embeddings.weight": nrm(cfg["vocab_size"], D, s=1.0),
         "embeddings.position_embeddings.weight": nrm(cfg["max_position_embeddings"], D, s=0.5)}
    w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"] = ln()
    for i in range(cfg["n_layers"]):
        p = f"transformer.layer.{i}."
        for name, (o, n) in {"attention.q_lin": (D, D), "attention.k_lin": (D, D), "attention.v_lin": (D, D),
                             "attention.out_lin": (D, D), "ffn.lin1": (F, D), "ffn.lin2": (D, F)}.items():
            w[p + name + ".weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            w[p + name + ".bias"] = nrm(o, s=0.1)
        for lname in ("sa_layer_norm", "output_layer_norm"):
            w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    return w


def _deberta_v2_weights(cfg: dict, nrm) -> dict:
    D, F = cfg["hidden_size"], cfg["intermediate_size"]
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"embeddings.word_embeddings.weight": nrm(cfg["vocab_size"], D, s=1.0),
         "encoder.rel_embeddings.weight": nrm(2 * cfg["position_buckets"], D, s=1.0)}
    w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"] = ln()
    w["encoder.LayerNorm.weight"], w["encoder.LayerNorm.bias"] = ln()
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query_proj": (D, D), "attention.self.key_proj": (D, D),
                             "attention.self.value_proj": (D, D), "attention.self.pos_key_proj": (D, D),
                             "attention.self.pos_query_proj": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            w[p + name + ".weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            w[p + name + ".bias"] = nrm(o, s=0.1)
        for lname in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    return w


def random_weights(cfg: dict, seed: int) -> dict:
    """Every base weight of the tiny model (HF names), random with non-zero biases."""
    rng = np.random.default_rng(seed)
    if cfg["model_type"] in DECODERS:
        nrm = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
        return (_gpt2_weights if cfg["model_type"] == "gpt2" else _llama_weights)(cfg, nrm)
    if cfg["model_type"] == "bart":
        return _bart_weights(cfg, lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32))
    if cfg["model_type"] == "t5":
        return _t5_weights(cfg, lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32))
    nrm = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    if cfg["model_type"] == "deberta-v2":
        return _deberta_v2_weights(cfg, nrm)
    if cfg["model_type"] == "distilbert":
        return _distilbert_weights(cfg, nrm)
    D, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"embeddings.word_embeddings.weight": nrm(cfg["vocab_size"], D, s=1.0),
         "embeddings.position_embeddings.weight": nrm(cfg["max_position_embeddings"], D, s=0.5),
         "embeddings.token_type_embeddings.weight": nrm(cfg["type_vocab_size"], D, s=0.5)}
    w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"] = ln()
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                             "attention.self.value": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            w[p + name + ".weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            w[p + name + ".bias"] = nrm(o, s=0.1)
        for lname in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    w["pooler.dense.weight"], w["pooler.dense.bias"] = nrm(D, D, s=1.0 / np.sqrt(D)), nrm(D, s=0.1)
    return w


def write_model(directory: str, arch: str, seed: int = 0) -> str:
    """Write a tiny ``arch`` checkpoint into ``directory`` (created) and return it."""
    if arch not in ARCHS:
        raise ValueError(f"write_model: arch={arch!r}; known tiny architectures: {', '.join(ARCHS)}")
    os.makedirs(directory, exist_ok=True)
    cfg = hf_config(arch)
    write_safetensors(os.path.join(directory, "model.safetensors"), random_weights(cfg, seed))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    return directory


def pad_side(arch: str, seed: int) -> str:
    """Encoders: right padding. Decoders: left or right, chosen by the (drawn) batch seed."""
    return "left" if arch in DECODERS and seed % 2 else "right"


def padded_batch(arch: str, rng: np.random.Generator, B: int, T: int, lengths=None, side: str = "right"):
    """input_ids (B, T) int64 and attention_mask (B, T) padded to ``lengths`` (default: T) on ``side``."""
    V, pad = SIZES["vocab_size"], PAD_ID[arch]
    ids = rng.integers(3, V, size=(B, T)).astype(np.int64)
    lengths = [T] * B if lengths is None else list(lengths)
    mask = (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    if side == "left":
        mask = mask[:, ::-1].copy()
    elif side != "right":
        raise ValueError(f"padded_batch: side={side!r}; expected 'left' or 'right'")
    return np.where(mask == 1, ids, pad).astype(np.int64), mask
