"""GPT-J decoder (partial interleaved rotary, parallel attention + MLP on one LayerNorm), explicit NumPy forward
with adapter hook points. Spec: FAM-GJ-1, FAM-GJ-2, DEC-4, DEC-5.

adapters 1.3.0 (src/adapters/models/gptj): LoRA on q/k/v_proj ("selfattn"), fc_in ("intermediate"), fc_out
("output"); prefix tuning on the attention (location key ``self_prefix``); bottlenecks ``attention_adapters`` and
``output_adapters`` close the block one after the other; the invertible adapter hooks the embedding dropout; no
prompt tuning (``support_prompt_tuning = False``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..hooks import Hook
from . import decoder_common as dc
from .base import ALL_METHODS, Architecture, LayerStack, attention_probs, config_int, layer_views

MODEL_TYPES = ("gptj",)
DECODER = "decoder"


@dataclass(frozen=True)
class Config:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    rotary_dim: int
    vocab_size: int
    max_position_embeddings: int
    layer_norm_eps: float
    hidden_act: str
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    eos_token_id: object = None

    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of GPTJConfig (n_embd, n_layer, n_head, n_inner, rotary_dim, n_positions). Spec: FAM-GJ-1."""
        D, H = config_int(d, "n_embd", 4096), config_int(d, "n_head", 16)
        if D % H:
            raise ShapeError(f"config.json: n_embd={D} is not a multiple of n_head={H}.")
        Dh = D // H
        rot = d.get("rotary_dim", 64)
        if rot is None or isinstance(rot, bool) or not isinstance(rot, int) or rot < 2 or rot % 2 or rot > Dh:
            # transformers 4.57 sizes its sin/cos table by n_embd when rotary_dim is null, which only fits one head
            raise ConfigError(f"config.json: rotary_dim={rot!r} must be an even integer in [2, head_dim={Dh}].")
        inner = d.get("n_inner")
        act = d.get("activation_function", "gelu_new")
        get_activation(act)                       # unknown names raise here, not mid-forward
        return cls("gptj", D, config_int(d, "n_layer", 28), H,
                   4 * D if inner is None else config_int(d, "n_inner", 4 * D), rot,
                   config_int(d, "vocab_size", 50400), config_int(d, "n_positions", 2048),
                   float(d.get("layer_norm_epsilon", 1e-5)), act, bool(d.get("tie_word_embeddings", False)),
                   d.get("pad_token_id"), d.get("eos_token_id"))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip 'transformer.', drop other heads and the attention buffers, keep lm_head.weight/.bias. Spec: FAM-GJ-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("transformer."):
            k = k[len("transformer."):]
        elif k not in ("lm_head.weight", "lm_head.bias") and not k.startswith(("wte.", "h.", "ln_f.")):
            continue                                        # score., qa_outputs. ...
        if k.endswith((".attn.bias", ".attn.masked_bias", ".attn.embed_positions")):
            continue                                        # causal-mask / sinusoid buffers of old checkpoints
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, F = cfg.hidden_size, cfg.intermediate_size
    s = {"wte.weight": (cfg.vocab_size, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"attn.{name}.weight"] = (D, D)           # no biases
        s[p + "mlp.fc_in.weight"], s[p + "mlp.fc_in.bias"] = (F, D), (F,)
        s[p + "mlp.fc_out.weight"], s[p + "mlp.fc_out.bias"] = (D, F), (D,)
        s[p + "ln_1.weight"], s[p + "ln_1.bias"] = (D,), (D,)
    return s


def interleaved_to_halves(rot: int):
    """Index permutation taking GPT-J's interleaved pairs (x0, x1), (x2, x3) … to RoPE's halves [x0 x2 …, x1 x3 …],
    and its inverse. Spec: FAM-GJ-2."""
    perm = np.concatenate([np.arange(0, rot, 2), np.arange(1, rot, 2)])
    return perm, np.argsort(perm)


def partial_rotary(x, cos, sin, rot, ops):
    """GPT-J's rotation of the first ``rot`` features of each head, pairs interleaved; the rest pass. Spec: FAM-GJ-2.

    Computed as OPS-13 (rotate_half) on the permuted features, then permuted back: for pair j,
    (x₂ⱼ, x₂ⱼ₊₁) ← (x₂ⱼ cosⱼ − x₂ⱼ₊₁ sinⱼ, x₂ⱼ₊₁ cosⱼ + x₂ⱼ sinⱼ).  x: (B, N, T, Dh); cos, sin: (B, T, rot)"""
    perm, inv = interleaved_to_halves(rot)
    r = ops.rope(np.ascontiguousarray(x[..., perm]), cos, sin)[..., inv]          # (B, N, T, rot)
    return r if rot == x.shape[-1] else np.concatenate([r, x[..., rot:]], axis=-1)


def block(i, x, mask, rope, lp, hk, cfg: Config, ops, cache, probs=None):
    """GPT-J block with hooks: x + attn(LN(x)) + mlp(LN(x)), the bottlenecks closing one after the other.
    Spec: FAM-GJ-1.  x: (B, T, D); mask: (B, 1, T, Tk) additive (causal baked in)."""
    N, Dh = cfg.num_attention_heads, cfg.head_dim
    h = ops.layer_norm(x, *lp.linear("ln_1"), cfg.layer_norm_eps)
    q = dc.split_heads(hk.linear(Hook.ATTN_Q, h, *lp.linear("attn.q_proj")), N, Dh)
    k = dc.split_heads(hk.linear(Hook.ATTN_K, h, *lp.linear("attn.k_proj")), N, Dh)
    v = dc.split_heads(hk.linear(Hook.ATTN_V, h, *lp.linear("attn.v_proj")), N, Dh)
    q, k = partial_rotary(q, *rope, cfg.rotary_dim, ops), partial_rotary(k, *rope, cfg.rotary_dim, ops)
    if cache is not None:
        k, v = cache.update(i, k, v)
    k, v, m = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)                  # (B, N, P+Tk, Dh), after the rotation
    if probs is not None:
        probs.append(attention_probs(q, k, m, ops))                         # (B, N, T, Tk)
    a = ops.linear(dc.merge_heads(ops.attention(q, k, v, m)), *lp.linear("attn.out_proj"))
    f = get_activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, h, *lp.linear("mlp.fc_in")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("mlp.fc_out"))
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)                     # adapters: attention_adapters(a, x)
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)                 # then output_adapters(f, x + a)
    return hk.layer_output(x)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, past_key_values=None, inputs_embeds=None, output_hidden_states=False,
            output_attentions=False):
    """wte (+ wte[token types]), embedding hook, blocks, ln_f. Spec: FAM-GJ-1, FAM-GJ-2, DEC-4."""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    past = past_key_values.length if past_key_values is not None else 0
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, past)
    if position_ids.size and position_ids.max() >= cfg.max_position_embeddings:
        raise ShapeError(f"GPT-J: position {int(position_ids.max())} is beyond n_positions="
                         f"{cfg.max_position_embeddings}; use at most {cfg.max_position_embeddings} tokens.")
    x = ops.take(p["wte.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    if token_type_ids is not None:
        x = x + ops.take(p["wte.weight"], token_type_ids)                   # GPT-J embeds token types with wte
    x = x.astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones((B, past + T), np.int64)
    x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)        # adapters hooks the embedding dropout
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype)
    inv = dc.rope_inv_freq(cfg.rotary_dim, 10000.0, None)                   # sinusoids over rotary_dim
    rope = dc.rope_cos_sin(position_ids, inv, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = block(i, x, mask, rope, lp, hooks.layer(DECODER, i), cfg, ops, past_key_values, probs)
        if states is not None:
            states.append(x)
    x = ops.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg.layer_norm_eps)
    if states is not None:
        states[-1] = x                                                      # transformers: the last entry is ln_f's
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


STACK = LayerStack(DECODER, layers="h.{i}", num_layers="num_hidden_layers", embeddings="wte",
                   attn_q="attn.q_proj", attn_k="attn.k_proj", attn_v="attn.v_proj", attn_o="attn.out_proj",
                   intermediate="mlp.fc_in", output="mlp.fc_out", mh_adapter="attention_adapters",
                   output_adapter="output_adapters", self_prefix="attn.prefix_tuning")

ARCHITECTURE = Architecture(
    name="gptj", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"gptj": "GPTJModel"},
    base_model_prefix={"gptj": "transformer"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "past_key_values",
                      "inputs_embeds"}),
    methods=ALL_METHODS - {"prompt_tuning"}, embed_key="wte.weight", is_causal=True)
