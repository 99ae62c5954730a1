"""BERT / RoBERTa / XLM-RoBERTa encoder, explicit NumPy forward with adapter hook points. Spec: ENC-1 .. ENC-4."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..composition import adjust_tensors_for_parallel
from ..errors import ShapeError

MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
BASE_MODEL_PREFIX = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}
MODEL_CLASS = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}

# adapters 1.3.0 state-dict paths of the adapter locations, relative to the model.
LAYER_PATH = "encoder.layer.{i}"
LINEAR_PATHS = {"selfattn.q": "attention.self.query", "selfattn.k": "attention.self.key",
                "selfattn.v": "attention.self.value", "intermediate": "intermediate.dense", "output": "output.dense"}
BOTTLENECK_PATHS = {"mh_adapter": "attention.output", "output_adapter": "output"}
PREFIX_PATHS = {"self_prefix": "attention.self.prefix_tuning"}
REFT_PATH = "reft_layer"


@dataclass(frozen=True)
class EncoderConfig:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int
    attention_probs_dropout_prob: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        mt = d["model_type"]
        hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
        if hidden % heads:
            raise ShapeError(f"config.json: hidden_size={hidden} is not a multiple of num_attention_heads={heads}.")
        pe = d.get("position_embedding_type", "absolute")
        if pe != "absolute":
            raise ValueError(f"config.json: position_embedding_type={pe!r} is not supported; only 'absolute'.")
        return cls(mt, hidden, int(d["num_hidden_layers"]), heads, int(d["intermediate_size"]), int(d["vocab_size"]),
                   int(d.get("max_position_embeddings", 512)), int(d.get("type_vocab_size", 2)),
                   float(d.get("layer_norm_eps", 1e-12)), d.get("hidden_act", "gelu"),
                   int(d.get("pad_token_id", 1 if mt != "bert" else 0) or 0),
                   float(d.get("attention_probs_dropout_prob", 0.1)))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task-model prefix ('bert.', 'roberta.') and rename legacy LayerNorm gamma/beta. Spec: ENC-1."""
    prefix = BASE_MODEL_PREFIX[model_type] + "."
    out = {}
    for k, v in weights.items():
        if k.startswith(prefix):
            k = k[len(prefix):]
        elif not (k.startswith("embeddings.") or k.startswith("encoder.") or k.startswith("pooler.")):
            continue  # heads of task models (cls., lm_head., classifier.) are not part of the base model
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[k] = v
    return out


def expected_shapes(cfg: EncoderConfig) -> dict:
    D, F = cfg.hidden_size, cfg.intermediate_size
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, D),
         "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, D),
         "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, D),
         "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                             "attention.self.value": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def position_ids(input_ids, cfg: EncoderConfig, T: int, B: int):
    """BERT: 0..T-1. RoBERTa: padding_idx + cumsum(ids != pad) on non-pad tokens, else padding_idx. Spec: ENC-1."""
    if cfg.model_type == "bert":
        return np.broadcast_to(np.arange(T), (B, T))
    m = (input_ids != cfg.pad_token_id).astype(np.int64)
    return np.cumsum(m, axis=1) * m + cfg.pad_token_id


def embeddings(p, cfg: EncoderConfig, input_ids, token_type_ids, ops):
    """LN(word + position + token type). Spec: ENC-1.  (B, T) int -> (B, T, D)"""
    B, T = input_ids.shape
    if T > cfg.max_position_embeddings - (cfg.pad_token_id + 1 if cfg.model_type != "bert" else 0):
        raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most "
                         f"{cfg.max_position_embeddings - (cfg.pad_token_id + 1 if cfg.model_type != 'bert' else 0)}.")
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), np.int64)
    x = (p["embeddings.word_embeddings.weight"][input_ids]
         + p["embeddings.token_type_embeddings.weight"][token_type_ids]
         + p["embeddings.position_embeddings.weight"][position_ids(input_ids, cfg, T, B)])
    return ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def split_heads(x, n):
    B, T, D = x.shape
    return x.reshape(B, T, n, D // n).transpose(0, 2, 1, 3)          # (B, N, T, Dh)


def merge_heads(x):
    B, N, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, N * Dh)             # (B, T, D)


def encoder_layer(i, x, mask, p, cfg: EncoderConfig, hk, ops):
    """Post-LN encoder layer with hooks. Spec: ENC-2.  x: (B, T, D); mask: (B, 1, 1, Tk) additive."""
    pre = f"encoder.layer.{i}."
    w = lambda name: (p[pre + name + ".weight"], p[pre + name + ".bias"])  # noqa: E731
    q = hk.linear(i, "selfattn.q", x, *w("attention.self.query"))
    k = hk.linear(i, "selfattn.k", x, *w("attention.self.key"))
    v = hk.linear(i, "selfattn.v", x, *w("attention.self.value"))
    B = max(q.shape[0], k.shape[0], v.shape[0])                      # Parallel may replicate one of them
    q, k, v = (np.concatenate([t] * (B // t.shape[0]), 0) if t.shape[0] < B else t for t in (q, k, v))
    (mask,) = adjust_tensors_for_parallel(q, mask)
    n = cfg.num_attention_heads
    K, V, mask = hk.prefix(i, "self_prefix", split_heads(k, n), split_heads(v, n), mask, x)
    (q,) = adjust_tensors_for_parallel(K, q)                         # a Parallel prefix may replicate K, V
    ctx = ops.attention(split_heads(q, n), K, V, mask)                # (B, N, T, Dh)
    a = ops.linear(merge_heads(ctx), *w("attention.output.dense"))
    ln1 = lambda t: ops.layer_norm(t, *w("attention.output.LayerNorm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(i, "mh_adapter", a, x, ln1)
    f = ops.activation(cfg.hidden_act)(hk.linear(i, "intermediate", x, *w("intermediate.dense")))
    f = hk.linear(i, "output", f, *w("output.dense"))
    ln2 = lambda t: ops.layer_norm(t, *w("output.LayerNorm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(i, "output_adapter", f, x, ln2)
    return hk.layer_output(i, x)


def extended_mask(mask2d, dtype):
    """(B, Tk) of 1 = attend / 0 = padding -> additive (B, 1, 1, Tk) with dtype-min for padding. Spec: ENC-3."""
    m = mask2d.astype(dtype)
    return ((1.0 - m) * np.finfo(dtype).min).astype(dtype)[:, None, None, :]


def forward(p, cfg: EncoderConfig, input_ids, attention_mask, token_type_ids, hk, ops, dtype):
    """Embeddings, hooks, layers, pooler. Spec: ENC-4.  Returns (last_hidden_state, pooler_output or None)."""
    x = embeddings(p, cfg, input_ids, token_type_ids, ops).astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones(input_ids.shape, np.int64)
    x, attention_mask = hk.embeddings(x, attention_mask)
    mask = extended_mask(attention_mask, dtype)
    for i in range(cfg.num_hidden_layers):
        x = encoder_layer(i, x, mask, p, cfg, hk, ops)
    pooled = None
    if "pooler.dense.weight" in p:
        pooled = np.tanh(ops.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))
    return x, pooled
