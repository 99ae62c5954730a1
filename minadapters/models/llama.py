"""LLaMA decoder (RMSNorm, RoPE, SwiGLU, GQA): one ``LlamaLike`` declaration; the forward is llama_like's.

Spec: DEC-2, DEC-3, DEC-4, DEC-5, FAM-LL-1. adapters 1.3.0 names the MLP LoRA locations the other way round from
BERT: ``intermediate`` is ``mlp.down_proj`` and ``output`` is ``mlp.up_proj`` (adapters:
src/adapters/models/llama/modeling_llama.py); that is llama_like's native (non-plugin) placement, FAM-LL-3.
Mistral, Qwen2/3 and Gemma are declared the same way (llama_like.py), and so can a user's family.
"""
from __future__ import annotations

import numpy as np

from ..functional.activations import activation_backward, get_activation
from ..functional.backward import (attention_backward, attention_forward, linear_backward, repeat_kv_backward,
                                   rms_norm_backward, rms_norm_forward, rope_backward)
from ..hooks import Hook
from . import decoder_common as dc
from .base import Training, layer_views
from .llama_like import DECODER, LlamaLike, declare, stack_for
from .llama_like import Config as _Cfg      # the config record the forward reads

MODEL_TYPES = ("llama",)

# q/k/v/o biases iff config.attention_bias, MLP biases iff config.mlp_bias; LlamaForQuestionAnswering keeps its base
# model under 'transformer.'.
LLAMA = LlamaLike(name="llama", model_types=MODEL_TYPES, model_class="LlamaModel", attention_bias="config",
                  mlp_bias=True, task_prefixes=("transformer",))

STACK = stack_for(LLAMA)


# ---- training: the same layer with caches, and its explicit backward. Spec: TRAIN-DEC (spec/training.md) ----------
def decoder_layer_train(x, mask, rope, lp, hk, cfg: _Cfg, ops):
    """DEC-2 layer through training hooks. Spec: TRAIN-DEC.  -> (B, T, D), cache"""
    N, Nkv, Dh, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    h, n1 = rms_norm_forward(x, lp["input_layernorm.weight"], eps, ops=ops)
    q = hk.linear(Hook.ATTN_Q, h, *lp.linear("self_attn.q_proj"))
    k = hk.linear(Hook.ATTN_K, h, *lp.linear("self_attn.k_proj"))
    v = hk.linear(Hook.ATTN_V, h, *lp.linear("self_attn.v_proj"))
    q, k, v = dc.split_heads(q, N, Dh), dc.split_heads(k, Nkv, Dh), dc.split_heads(v, Nkv, Dh)
    q, k = ops.rope(q, *rope), ops.rope(k, *rope)
    K, V, m = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)
    ctx, attn = attention_forward(q, dc.repeat_kv(K, N // Nkv), dc.repeat_kv(V, N // Nkv), m, ops=ops,
                                  dropout=hk.attention_dropout("attention_dropout"))
    a = ops.linear(dc.merge_heads(ctx), *lp.linear("self_attn.o_proj"))
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)
    h2, n2 = rms_norm_forward(x, lp["post_attention_layernorm.weight"], eps, ops=ops)
    g0 = ops.linear(h2, *lp.linear("mlp.gate_proj"))
    gate = get_activation(cfg.hidden_act)(g0)
    up = hk.linear(Hook.OUTPUT, h2, *lp.linear("mlp.up_proj"))
    f = hk.linear(Hook.INTERMEDIATE, gate * up, *lp.linear("mlp.down_proj"))
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)
    return hk.layer_output(x), (n1, attn, n2, g0, gate, up)


def decoder_layer_backward(dy, cache, rope, lp, hk, cfg: _Cfg):
    """Reverse of decoder_layer_train. Spec: TRAIN-DEC (GRAD-RMS, GRAD-ROPE, GRAD-ATTN with GQA, GRAD-ACT)."""
    n1, attn, n2, g0, gate, up = cache
    N, Nkv, Dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    dy = hk.layer_output_backward(dy)
    df, dx = hk.residual_block_backward(Hook.OUTPUT_ADAPTER, dy)
    dgu = hk.linear_backward(Hook.INTERMEDIATE, df)                       # d(gate ⊙ up)
    dg0 = activation_backward(cfg.hidden_act, g0, dgu * up)
    dh2 = hk.linear_backward(Hook.OUTPUT, dgu * gate)
    dh2 = dh2 + linear_backward(dg0, None, lp["mlp.gate_proj.weight"], need_weight=False)[0]
    dx = dx + rms_norm_backward(dh2, n2, lp["post_attention_layernorm.weight"])
    da, dx = hk.residual_block_backward(Hook.MH_ADAPTER, dx)
    dctx = linear_backward(da, None, lp["self_attn.o_proj.weight"], need_weight=False)[0]
    dq, dK, dV = attention_backward(dc.split_heads(dctx, N, Dh), attn)
    dk, dv, dh_gate = hk.prefix_backward(Hook.SELF_PREFIX, repeat_kv_backward(dK, N // Nkv),
                                         repeat_kv_backward(dV, N // Nkv))          # gated prefixes read h
    dq, dk = rope_backward(dq, *rope), rope_backward(dk, *rope)
    dh = hk.linear_backward(Hook.ATTN_Q, dc.merge_heads(dq)) + hk.linear_backward(Hook.ATTN_K, dc.merge_heads(dk))
    dh = dh if dh_gate is None else dh + dh_gate
    dh = dh + hk.linear_backward(Hook.ATTN_V, dc.merge_heads(dv))
    return dx + rms_norm_backward(dh, n1, lp["input_layernorm.weight"])


def train_forward(p, cfg: _Cfg, hooks, ops, dtype, *, input_ids=None, attention_mask=None, position_ids=None,
                  inputs_embeds=None):
    """DEC-2 forward for training (frozen embeddings, no KV cache). Spec: TRAIN-DEC.  -> fields, cache"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, 0)
    x = (ops.take(p["embed_tokens.weight"], input_ids) if inputs_embeds is None else inputs_embeds).astype(
        dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones((B, T), np.int64)
    x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype)
    rope = dc.rope_cos_sin(position_ids, dc.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling), dtype)
    caches = []
    for lp in layer_views(p, STACK, cfg.num_hidden_layers):
        hk = hooks.layer(DECODER, len(caches))
        x, c = decoder_layer_train(x, mask, rope, lp, hk, cfg, ops)
        caches.append((hk, c))
    x, nf = rms_norm_forward(x, p["norm.weight"], cfg.rms_norm_eps, ops=ops)
    return {"last_hidden_state": x}, (caches, nf, rope)


def backward(d_hidden, cache, p, cfg: _Cfg, hooks, ops):
    """Final RMSNorm, then the layers in reverse; embeddings frozen. Spec: TRAIN-DEC."""
    caches, nf, rope = cache
    dx = rms_norm_backward(d_hidden, nf, p["norm.weight"])
    for lp, (hk, c) in reversed(list(zip(layer_views(p, STACK, cfg.num_hidden_layers), caches))):
        dx = decoder_layer_backward(dx, c, rope, lp, hk, cfg)
    return hooks.embeddings_backward(DECODER, dx)


# Training is declared for LLaMA itself; the other LLaMA-like records (norm offsets, q/k norms, windows, plugin
# placement) have no backward yet, so training refuses them (spec/training.md).
ARCHITECTURE = declare(LLAMA, training=Training(train_forward, backward))
Config = ARCHITECTURE.config_class
expected_shapes = ARCHITECTURE.expected_shapes
forward = ARCHITECTURE.forward

__all__ = ["ARCHITECTURE", "Config", "DECODER", "LLAMA", "MODEL_TYPES", "STACK", "expected_shapes", "forward"]
