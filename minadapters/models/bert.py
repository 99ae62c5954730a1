"""BERT / RoBERTa / XLM-RoBERTa encoder, explicit NumPy forward with adapter hook points. Spec: ENC-1 .. ENC-4."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..functional.activations import activation_backward
from ..functional.backward import LayerNormFn, attention_backward, attention_forward, linear_backward
from ..hooks import Hook
from .base import Architecture, LayerStack, Training, attention_probs, layer_views

MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
ENCODER = "encoder"


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
    prefix = ARCHITECTURE.base_model_prefix[model_type] + "."
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


def max_tokens(cfg: EncoderConfig) -> int:
    """Longest input the position table allows (RoBERTa's positions start after padding_idx). Spec: ENC-1."""
    return cfg.max_position_embeddings - (cfg.pad_token_id + 1 if cfg.model_type != "bert" else 0)


def embeddings(p, cfg: EncoderConfig, input_ids, token_type_ids, ops, *, positions=None, inputs_embeds=None):
    """LN(word + position + token type). Spec: ENC-1.  (B, T) int -> (B, T, D)"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if T > max_tokens(cfg):
        raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most {max_tokens(cfg)}.")
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), np.int64)
    if positions is None:
        if inputs_embeds is None:
            positions = position_ids(input_ids, cfg, T, B)
        else:  # transformers: sequential positions when only embeddings are given
            start = 0 if cfg.model_type == "bert" else cfg.pad_token_id + 1
            positions = np.broadcast_to(np.arange(start, start + T), (B, T))
    words = ops.take(p["embeddings.word_embeddings.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = (words + ops.take(p["embeddings.token_type_embeddings.weight"], token_type_ids)
         + ops.take(p["embeddings.position_embeddings.weight"], positions))
    return ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def split_heads(x, n):
    B, T, D = x.shape
    return x.reshape(B, T, n, D // n).transpose(0, 2, 1, 3)          # (B, N, T, Dh)


def merge_heads(x):
    B, N, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, N * Dh)             # (B, T, D)


def attention_sublayer(lp, name, hk, hooks_qkv, prefix_hook, x, memory, mask, cfg, ops, probs=None, kv=None):
    """One BERT attention module ``name`` ("attention", or a decoder's "crossattention"): q from x, k/v from
    ``memory`` (x itself for self-attention), prefix, softmax, ``<name>.output.dense``. Spec: ENC-2, B2B-2.

    ``kv(compute) -> (k, v)`` obtains the keys/values through a decoder's cache (ENCDEC-4: self-attention appends
    ``compute()``, cross-attention calls it once); default ``compute()``.  -> (B, T, D)"""
    n = cfg.num_attention_heads
    hq, hk_, hv = hooks_qkv
    q = split_heads(hk.linear(hq, x, *lp.linear(f"{name}.self.query")), n)
    compute = lambda: (split_heads(hk.linear(hk_, memory, *lp.linear(f"{name}.self.key")), n),  # noqa: E731
                       split_heads(hk.linear(hv, memory, *lp.linear(f"{name}.self.value")), n))
    k, v = compute() if kv is None else kv(compute)
    K, V, mask = hk.prefix(prefix_hook, k, v, mask, x)               # Tk = P + T
    if probs is not None:
        probs.append(attention_probs(q, K, mask, ops))               # (B, N, T, Tk)
    ctx = ops.attention(q, K, V, mask)                                # (B, N, T, Dh)
    return ops.linear(merge_heads(ctx), *lp.linear(f"{name}.output.dense"))


SELF_QKV = (Hook.ATTN_Q, Hook.ATTN_K, Hook.ATTN_V)
CROSS_QKV = (Hook.CROSS_Q, Hook.CROSS_K, Hook.CROSS_V)


def encoder_layer(x, mask, lp, hk, cfg: EncoderConfig, ops, probs=None, *, memory=None, cross_mask=None,
                  self_kv=None, cross_kv=None, cross_probs=None):
    """Post-LN encoder layer with hooks. Spec: ENC-2.  x: (B, T, D); mask: (B, 1, 1, Tk) additive;
    lp: this layer's parameters; hk: this layer's hooks; ``probs``: a list that collects the attention weights.

    With ``memory`` (B, S, D) it is a BERT decoder layer (``is_decoder`` + ``add_cross_attention``, B2B-2): after
    the self-attention sub-layer, ``crossattention`` over ``memory`` with ``cross_mask`` and its own residual +
    LayerNorm (hook cross_adapter); ``self_kv`` / ``cross_kv`` are the caches' key/value functions."""
    ln = lambda name: (lambda t: ops.layer_norm(t, *lp.linear(name), cfg.layer_norm_eps))  # noqa: E731
    a = attention_sublayer(lp, "attention", hk, SELF_QKV, Hook.SELF_PREFIX, x, x, mask, cfg, ops, probs, self_kv)
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, ln("attention.output.LayerNorm"))
    if memory is not None:
        c = attention_sublayer(lp, "crossattention", hk, CROSS_QKV, Hook.CROSS_PREFIX, x, memory, cross_mask, cfg,
                               ops, cross_probs, cross_kv)
        x = hk.residual_block(Hook.CROSS_ADAPTER, c, x, ln("crossattention.output.LayerNorm"))
    f = ops.activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, x, *lp.linear("intermediate.dense")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("output.dense"))
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, ln("output.LayerNorm"))
    return hk.layer_output(x)


def extended_mask(mask2d, dtype):
    """(B, Tk) of 1 = attend / 0 = padding -> additive (B, 1, 1, Tk) with dtype-min for padding. Spec: ENC-3."""
    m = mask2d.astype(dtype)
    return ((1.0 - m) * np.finfo(dtype).min).astype(dtype)[:, None, None, :]


def forward(p, cfg: EncoderConfig, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """Embeddings, hooks, layers, pooler. Spec: ENC-4.  -> {last_hidden_state, pooler_output, hidden_states,
    attentions}"""
    x = embeddings(p, cfg, input_ids, token_type_ids, ops, positions=position_ids,
                   inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    mask = extended_mask(attention_mask, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = encoder_layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs)
        if states is not None:
            states.append(x)
    pooled = None
    if "pooler.dense.weight" in p:
        pooled = np.tanh(ops.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))
    return {"last_hidden_state": x, "pooler_output": pooled,
            "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# ---- training: the same layer with caches, and its explicit backward. Spec: TRAIN-ENC (spec/training.md) -----------
def encoder_layer_train(x, mask, lp, hk, cfg: EncoderConfig, ops):
    """ENC-2 through training hooks, keeping what encoder_layer_backward reads. Spec: TRAIN-ENC.  -> (B, T, D), cache"""
    n, eps = cfg.num_attention_heads, cfg.layer_norm_eps
    q = hk.linear(Hook.ATTN_Q, x, *lp.linear("attention.self.query"))
    k = hk.linear(Hook.ATTN_K, x, *lp.linear("attention.self.key"))
    v = hk.linear(Hook.ATTN_V, x, *lp.linear("attention.self.value"))
    K, V, mask = hk.prefix(Hook.SELF_PREFIX, split_heads(k, n), split_heads(v, n), mask, x)   # Tk = T + P
    ctx, attn = attention_forward(split_heads(q, n), K, V, mask, ops=ops,
                                  dropout=hk.attention_dropout("attention_probs_dropout_prob"))   # (B, N, T, Dh)
    a, m1 = hk.dropout(ops.linear(merge_heads(ctx), *lp.linear("attention.output.dense")), "hidden_dropout_prob")
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, LayerNormFn(*lp.linear("attention.output.LayerNorm"), eps, ops))
    i0 = hk.linear(Hook.INTERMEDIATE, x, *lp.linear("intermediate.dense"))
    f, m2 = hk.dropout(hk.linear(Hook.OUTPUT, ops.activation(cfg.hidden_act)(i0), *lp.linear("output.dense")),
                       "hidden_dropout_prob")
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, LayerNormFn(*lp.linear("output.LayerNorm"), eps, ops))
    return hk.layer_output(x), (attn, i0, m1, m2)


def encoder_layer_backward(dy, cache, lp, hk, cfg: EncoderConfig):
    """Reverse of encoder_layer_train: dL/dx from dL/dy, hook backwards adding the adapters' gradients.
    Spec: TRAIN-ENC (GRAD-LINEAR, GRAD-LN via the residual blocks, GRAD-ACT, GRAD-ATTN)."""
    attn, i0, m1, m2 = cache
    n = cfg.num_attention_heads
    dy = hk.layer_output_backward(dy)
    df, dx1 = hk.residual_block_backward(Hook.OUTPUT_ADAPTER, dy)
    df = df if m2 is None else df * m2                                   # GRAD-DROPOUT
    di = activation_backward(cfg.hidden_act, i0, hk.linear_backward(Hook.OUTPUT, df))
    dx1 = dx1 + hk.linear_backward(Hook.INTERMEDIATE, di)
    da, dx = hk.residual_block_backward(Hook.MH_ADAPTER, dx1)
    da = da if m1 is None else da * m1
    dctx = linear_backward(da, None, lp["attention.output.dense.weight"], need_weight=False)[0]
    dq, dK, dV = attention_backward(split_heads(dctx, n), attn)
    dk, dv, dx_gate = hk.prefix_backward(Hook.SELF_PREFIX, dK, dV)       # gated prefixes read x
    dx = dx + hk.linear_backward(Hook.ATTN_Q, merge_heads(dq)) + (0.0 if dx_gate is None else dx_gate)
    dx = dx + hk.linear_backward(Hook.ATTN_K, merge_heads(dk))
    return dx + hk.linear_backward(Hook.ATTN_V, merge_heads(dv))


def train_forward(p, cfg: EncoderConfig, hooks, ops, dtype, *, input_ids=None, attention_mask=None,
                  token_type_ids=None, position_ids=None, inputs_embeds=None):
    """ENC-4 for training (embeddings frozen, no pooler gradient here). Spec: TRAIN-ENC.  -> fields, cache"""
    x = embeddings(p, cfg, input_ids, token_type_ids, ops, positions=position_ids,
                   inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    x, _ = hooks.dropout(x, "hidden_dropout_prob")                      # BertEmbeddings' dropout (frozen below)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    mask = extended_mask(attention_mask, dtype)
    caches = []
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        hk = hooks.layer(ENCODER, i)
        x, c = encoder_layer_train(x, mask, lp, hk, cfg, ops)
        caches.append((hk, c))
    pooled = None
    if "pooler.dense.weight" in p:
        pooled = np.tanh(ops.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))
    return {"last_hidden_state": x, "pooler_output": pooled}, caches


def backward(d_hidden, caches, p, cfg: EncoderConfig, hooks, ops):
    """Layers in reverse from dL/d last_hidden_state; the embeddings are frozen. Spec: TRAIN-ENC."""
    dx = d_hidden
    for lp, (hk, c) in reversed(list(zip(layer_views(p, STACK, cfg.num_hidden_layers), caches))):
        dx = encoder_layer_backward(dx, c, lp, hk, cfg)
    return hooks.embeddings_backward(ENCODER, dx)


# adapters 1.3.0 state-dict paths of the hook locations (BertLayer's modules).
STACK = LayerStack(ENCODER, layers="encoder.layer.{i}", num_layers="num_hidden_layers", embeddings="embeddings",
                   attn_q="attention.self.query", attn_k="attention.self.key", attn_v="attention.self.value",
                   attn_o="attention.output.dense", intermediate="intermediate.dense", output="output.dense",
                   mh_adapter="attention.output", output_adapter="output",
                   self_prefix="attention.self.prefix_tuning")

ARCHITECTURE = Architecture(
    name="bert", model_types=MODEL_TYPES, config_class=EncoderConfig, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes,
    model_class={"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"},
    base_model_prefix={"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds"}),
    embed_key="embeddings.word_embeddings.weight", pooler=("pooler.dense.weight", "pooler.dense.bias"),
    training=Training(train_forward, backward))
