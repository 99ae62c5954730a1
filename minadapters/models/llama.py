"""LLaMA decoder (RMSNorm, RoPE, SwiGLU, GQA), explicit NumPy forward with adapter hook points.

Spec: DEC-2, DEC-3, DEC-4, DEC-5. adapters 1.3.0 names the MLP LoRA locations the other way round from BERT:
``intermediate`` is ``mlp.down_proj`` and ``output`` is ``mlp.up_proj`` (adapters: src/adapters/models/llama/modeling_llama.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..hooks import Hook
from . import decoder_common as dc
from .base import ALL_METHODS, Architecture, LayerStack, attention_probs, layer_views

MODEL_TYPES = ("llama",)
DECODER = "decoder"


@dataclass(frozen=True)
class Config:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    hidden_act: str
    rope_theta: float
    rope_scaling: dict | None
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    eos_token_id: object = None

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of LlamaConfig. Rejects what this forward does not compute. Spec: DEC-2, DEC-3."""
        D, H = int(d["hidden_size"]), int(d["num_attention_heads"])
        Hkv = int(d.get("num_key_value_heads") or H)
        if H % Hkv:
            raise ShapeError(f"config.json: num_attention_heads={H} is not a multiple of num_key_value_heads={Hkv}.")
        Dh = int(d.get("head_dim") or D // H)
        if Dh % 2:
            raise ShapeError(f"config.json: head_dim={Dh} must be even for RoPE.")
        scaling = d.get("rope_scaling")
        dc.check_rope_scaling(scaling)
        prf = d.get("partial_rotary_factor", 1.0)
        if prf not in (None, 1, 1.0):
            raise ConfigError(f"config.json: partial_rotary_factor={prf!r} is not supported by LLaMA; only 1.0.")
        act = d.get("hidden_act", "silu")
        get_activation(act)
        return cls("llama", D, int(d["num_hidden_layers"]), H, Hkv, Dh, int(d["intermediate_size"]),
                   int(d.get("vocab_size", 32000)), int(d.get("max_position_embeddings", 2048)),
                   float(d.get("rms_norm_eps", 1e-6)), act, float(d.get("rope_theta", 10000.0)),
                   dict(scaling) if scaling is not None else None, bool(d.get("attention_bias", False)),
                   bool(d.get("mlp_bias", False)), bool(d.get("tie_word_embeddings", False)),
                   d.get("pad_token_id"), d.get("eos_token_id"))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip 'model.' ('transformer.' in LlamaForQuestionAnswering), drop heads and rotary buffers, keep
    'lm_head.weight'. Spec: DEC-2."""
    prefixes = (ARCHITECTURE.base_model_prefix[model_type] + ".", "transformer.")
    out = {}
    for k, v in weights.items():
        prefix = next((p for p in prefixes if k.startswith(p)), None)
        if prefix is not None:
            k = k[len(prefix):]
        elif k != "lm_head.weight" and not k.startswith(("embed_tokens.", "layers.", "norm.")):
            continue                                        # other heads (score., qa_outputs. ...)
        if k.endswith("rotary_emb.inv_freq"):
            continue
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, F, Dh = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    Nq, Nkv = cfg.num_attention_heads * Dh, cfg.num_key_value_heads * Dh
    s = {"embed_tokens.weight": (cfg.vocab_size, D), "norm.weight": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        lin = {"self_attn.q_proj": ((Nq, D), cfg.attention_bias), "self_attn.k_proj": ((Nkv, D), cfg.attention_bias),
               "self_attn.v_proj": ((Nkv, D), cfg.attention_bias), "self_attn.o_proj": ((D, Nq), cfg.attention_bias),
               "mlp.gate_proj": ((F, D), cfg.mlp_bias), "mlp.up_proj": ((F, D), cfg.mlp_bias),
               "mlp.down_proj": ((D, F), cfg.mlp_bias)}
        for name, (shape, bias) in lin.items():
            s[p + name + ".weight"] = shape
            if bias:
                s[p + name + ".bias"] = (shape[0],)
        s[p + "input_layernorm.weight"] = s[p + "post_attention_layernorm.weight"] = (D,)
    return s


def rms_norm(x, g, eps, ops):
    """g · x / √(mean(x²) + eps), computed in float32 at least. Spec: DEC-2."""
    if x.dtype == np.float64:
        return ops.rms_norm(x, g, eps)
    return ops.rms_norm(x.astype(np.float32), g.astype(np.float32), eps).astype(x.dtype)


def decoder_layer(i, x, mask, rope, lp, hk, cfg: Config, ops, cache, probs=None):
    """Pre-RMSNorm LLaMA layer with hooks. Spec: DEC-2.  x: (B, T, D); mask: (B, 1, T, Tk); rope: (cos, sin)."""
    N, Nkv, Dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    h = rms_norm(x, lp["input_layernorm.weight"], cfg.rms_norm_eps, ops)
    q = hk.linear(Hook.ATTN_Q, h, *lp.linear("self_attn.q_proj"))
    k = hk.linear(Hook.ATTN_K, h, *lp.linear("self_attn.k_proj"))
    v = hk.linear(Hook.ATTN_V, h, *lp.linear("self_attn.v_proj"))
    q, k, v = dc.split_heads(q, N, Dh), dc.split_heads(k, Nkv, Dh), dc.split_heads(v, Nkv, Dh)
    q, k = ops.rope(q, *rope), ops.rope(k, *rope)
    if cache is not None:
        k, v = cache.update(i, k, v)
    K, V, m = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)                 # (B, Nkv, P+Tk, Dh), after RoPE
    if probs is not None:
        probs.append(attention_probs(q, dc.repeat_kv(K, N // Nkv), m, ops))  # (B, N, T, Tk)
    ctx = ops.attention(q, K, V, m)                                     # GQA inside OPS-2: K, V never repeated
    a = ops.linear(dc.merge_heads(ctx), *lp.linear("self_attn.o_proj"))
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)
    h2 = rms_norm(x, lp["post_attention_layernorm.weight"], cfg.rms_norm_eps, ops)
    gate = get_activation(cfg.hidden_act)(ops.linear(h2, *lp.linear("mlp.gate_proj")))
    up = hk.linear(Hook.OUTPUT, h2, *lp.linear("mlp.up_proj"))           # adapters: up_proj is "output"
    f = hk.linear(Hook.INTERMEDIATE, gate * up, *lp.linear("mlp.down_proj"))   # adapters: down_proj is "intermediate"
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)
    return hk.layer_output(x)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, position_ids=None,
            past_key_values=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """embed_tokens, hooks, layers, final RMSNorm. Spec: DEC-2 .. DEC-5."""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    past = past_key_values.length if past_key_values is not None else 0
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, past)
    x = (ops.take(p["embed_tokens.weight"], input_ids) if inputs_embeds is None else inputs_embeds).astype(
        dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones((B, past + T), np.int64)
    x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype)
    inv = dc.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    rope = dc.rope_cos_sin(position_ids, inv, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = decoder_layer(i, x, mask, rope, lp, hooks.layer(DECODER, i), cfg, ops, past_key_values, probs)
        if states is not None:
            states.append(x)
    x = rms_norm(x, p["norm.weight"], cfg.rms_norm_eps, ops)
    if states is not None:
        states[-1] = x                                                      # transformers: the last entry is normed
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# COMPAT(adapters): adapters 1.3.0's LLaMA wraps mlp.down_proj as "intermediate" and mlp.up_proj as "output"
# (the reverse of BERT's order; adapters: src/adapters/models/llama/modeling_llama.py).
STACK = LayerStack(DECODER, layers="layers.{i}", num_layers="num_hidden_layers", embeddings="embed_tokens",
                   attn_q="self_attn.q_proj", attn_k="self_attn.k_proj", attn_v="self_attn.v_proj",
                   attn_o="self_attn.o_proj", intermediate="mlp.down_proj", output="mlp.up_proj",
                   mh_adapter="attention_adapters", output_adapter="output_adapters",
                   self_prefix="self_attn.prefix_tuning")

ARCHITECTURE = Architecture(
    name="llama", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"llama": "LlamaModel"},
    base_model_prefix={"llama": "model"},
    inputs=frozenset({"input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds"}),
    methods=ALL_METHODS - {"prompt_tuning"}, embed_key="embed_tokens.weight", is_causal=True)
