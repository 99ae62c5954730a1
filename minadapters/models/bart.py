"""BART, mBART and PLBart: encoder-decoder with learned positions (offset 2), explicit NumPy forward with adapter
hook points in both stacks. Spec: BART-1 .. BART-3, ENCDEC-1 .. ENCDEC-4.

BART and PLBart are post-LN; mBART is pre-LN with a final layer norm after each stack. Hook locations and
state-dict paths are adapters 1.3.0's (BartEncoderLayerAdaptersMixin, BartDecoderLayerAdaptersMixin): bottlenecks
``attention_adapters`` / ``cross_attention_adapters`` / ``output_adapters``, LoRA on ``q_proj`` / ``k_proj`` /
``v_proj`` of both attentions (adapters wraps the cross-attention's projections as "selfattn" too), ``fc1`` /
``fc2``; prefix tuning ``encoder_prefix`` (encoder self-attention), ``self_prefix`` (decoder self-attention),
``cross_prefix`` (decoder cross-attention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..hooks import Hook
from . import encdec_common as ed
from .base import ALL_METHODS, Architecture, LayerStack, attention_probs, check_encoder_config, config_int, layer_views
from .decoder_common import merge_heads, split_heads

MODEL_TYPES = ("bart", "mbart", "plbart")
ENCODER, DECODER = "encoder", "decoder"
POSITION_OFFSET = 2                 # BartLearnedPositionalEmbedding: position p reads row p + 2
LN_EPS = 1e-5                       # nn.LayerNorm's default; BART configs carry no epsilon


@dataclass(frozen=True)
class BartConfig:
    model_type: str
    hidden_size: int                # d_model
    num_hidden_layers: int          # encoder_layers (transformers' attribute_map)
    decoder_layers: int
    num_attention_heads: int        # encoder_attention_heads (adapters sizes prefixes with it, in both stacks)
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int
    max_position_embeddings: int
    activation_function: str
    scale_embedding: bool
    pad_token_id: int | None
    eos_token_id: int | None
    decoder_start_token_id: int | None
    tie_word_embeddings: bool
    forced_bos_token_id: int | None = None      # generation: transformers' processors read these from the config
    forced_eos_token_id: int | None = 2

    @property
    def encoder_layers(self) -> int:
        return self.num_hidden_layers

    @property
    def pre_ln(self) -> bool:
        """mBART normalises before each sub-layer and after each stack. Spec: BART-2."""
        return self.model_type == "mbart"

    @classmethod
    def from_dict(cls, d: dict) -> "BartConfig":
        D = config_int(d, "d_model", 1024)
        enc_heads = config_int(d, "encoder_attention_heads", 16)
        dec_heads = config_int(d, "decoder_attention_heads", 16)
        check_encoder_config(d, D, enc_heads)
        if D % dec_heads:
            raise ShapeError(f"config.json: d_model={D} is not a multiple of decoder_attention_heads={dec_heads}.")
        return cls(d["model_type"], D, config_int(d, "encoder_layers", 12), config_int(d, "decoder_layers", 12),
                   enc_heads, dec_heads, config_int(d, "encoder_ffn_dim", 4096), config_int(d, "decoder_ffn_dim", 4096),
                   config_int(d, "vocab_size", 50265), config_int(d, "max_position_embeddings", 1024),
                   str(d.get("activation_function", "gelu")), bool(d.get("scale_embedding", False)),
                   d.get("pad_token_id", 1), d.get("eos_token_id", 2), d.get("decoder_start_token_id", 2),
                   bool(d.get("tie_word_embeddings", True)), d.get("forced_bos_token_id"),
                   d.get("forced_eos_token_id", 2))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task model's 'model.' prefix; keep the LM head ('lm_head.weight', final_logits_bias as 'lm_head.bias');
    drop other heads; keep a stack's own embed_tokens only where it differs from 'shared'. Spec: BART-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("model."):
            k = k[len("model."):]
        if k == "final_logits_bias":
            out["lm_head.bias"] = v
        elif k == "lm_head.weight" or k.startswith(("shared.", "encoder.", "decoder.")):
            out[k] = v
    shared = out.get("shared.weight")
    for stack in (ENCODER, DECODER):
        key = f"{stack}.embed_tokens.weight"
        if key in out:
            if shared is None:
                shared = out["shared.weight"] = out.pop(key)
            elif np.shape(out[key]) == np.shape(shared) and np.array_equal(out[key], shared):
                del out[key]        # tied to shared (transformers ties both stacks' tables when tie_word_embeddings)
    return out


def expected_shapes(cfg: BartConfig) -> dict:
    D, P = cfg.hidden_size, cfg.max_position_embeddings + POSITION_OFFSET
    s = {"shared.weight": (cfg.vocab_size, D)}
    for stack, n, F in ((ENCODER, cfg.num_hidden_layers, cfg.encoder_ffn_dim),
                        (DECODER, cfg.decoder_layers, cfg.decoder_ffn_dim)):
        s[f"{stack}.embed_positions.weight"] = (P, D)
        lns = ["layernorm_embedding"] + (["layer_norm"] if cfg.pre_ln else [])
        for ln in lns:
            s[f"{stack}.{ln}.weight"], s[f"{stack}.{ln}.bias"] = (D,), (D,)
        attns = ("self_attn",) + (("encoder_attn",) if stack == DECODER else ())
        for i in range(n):
            p = f"{stack}.layers.{i}."
            lin = {"fc1": (F, D), "fc2": (D, F)}
            for a in attns:
                lin.update({f"{a}.{m}_proj": (D, D) for m in ("q", "k", "v", "out")})
            for name, (o, k) in lin.items():
                s[p + name + ".weight"], s[p + name + ".bias"] = (o, k), (o,)
            for ln in [f"{a}_layer_norm" for a in attns] + ["final_layer_norm"]:
                s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def embed(p, cfg: BartConfig, stack: str, ids, inputs_embeds, past: int, ops, dtype):
    """LN_emb(scale · E[ids] + P[past + t + 2]). Spec: BART-1.  (B, T) -> (B, T, D)

    scale = √D when scale_embedding (applied to looked-up ids only, as BartScaledWordEmbedding); positions count
    from 0 whatever the padding."""
    B, T = ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if past + T > cfg.max_position_embeddings:
        raise ShapeError(f"{stack}: {past + T} positions exceed max_position_embeddings={cfg.max_position_embeddings}.")
    if inputs_embeds is None:
        table = p.get(f"{stack}.embed_tokens.weight", p["shared.weight"])
        words = ops.take(table, ids)
        if cfg.scale_embedding:
            words = words * np.float32(math.sqrt(cfg.hidden_size)).astype(words.dtype)
    else:
        words = inputs_embeds
    pos = ops.take(p[f"{stack}.embed_positions.weight"], np.arange(past, past + T) + POSITION_OFFSET)   # (T, D)
    x = (words + pos[None]).astype(dtype, copy=False)
    return ops.layer_norm(x, p[f"{stack}.layernorm_embedding.weight"], p[f"{stack}.layernorm_embedding.bias"], LN_EPS)


def attention(lp, name, hk, hooks_qkv, prefix_hook, x, memory, mask, n, ops, cache, i, probs):
    """One BART attention module: q from x, k/v from ``memory`` (x itself for self-attention), prefix, softmax,
    out_proj. Spec: ENCDEC-3.  x: (B, T, D), memory: (B, S, D) -> (B, T, D)

    ``cache``: self-attention appends this step's k/v (ENCDEC-4); cross-attention computes k/v once."""
    hq, hk_, hv = hooks_qkv
    q = split_heads(hk.linear(hq, x, *lp.linear(f"{name}.q_proj")), n, x.shape[-1] // n)
    kv = lambda: (split_heads(hk.linear(hk_, memory, *lp.linear(f"{name}.k_proj")), n, x.shape[-1] // n),  # noqa: E731
                  split_heads(hk.linear(hv, memory, *lp.linear(f"{name}.v_proj")), n, x.shape[-1] // n))
    if prefix_hook == Hook.CROSS_PREFIX:
        k, v = ed.cross_kv(cache, i, kv)
    else:
        k, v = kv()
        if cache is not None:
            k, v = cache.update(i, k, v)
    K, V, m = hk.prefix(prefix_hook, k, v, mask, x)                         # Tk = P + S
    if probs is not None:
        probs.append(attention_probs(q, K, m, ops))
    ctx = ops.attention(q, K, V, m)                                          # (B, N, T, Dh)
    return ops.linear(merge_heads(ctx), *lp.linear(f"{name}.out_proj"))


SELF_QKV = (Hook.ATTN_Q, Hook.ATTN_K, Hook.ATTN_V)
CROSS_QKV = (Hook.CROSS_Q, Hook.CROSS_K, Hook.CROSS_V)


def layer(x, mask, lp, hk, cfg: BartConfig, ops, *, decoder=False, memory=None, cross_mask=None, cache=None, i=0,
          probs=None, cross_probs=None):
    """One encoder or decoder layer with its hooks. Spec: BART-2, ENCDEC-3.

        post-LN (BART, PLBart):  x = LN(x + attn(x))            pre-LN (mBART):  x = x + attn(LN(x))
    for self-attention, cross-attention (decoder) and the FFN fc2(act(fc1 ·)); each sum is the hook point of
    mh_adapter / cross_adapter / output_adapter."""
    n = cfg.decoder_attention_heads if decoder else cfg.num_attention_heads
    ln = lambda name: (lambda t: ops.layer_norm(t, *lp.linear(name), LN_EPS))  # noqa: E731
    pre = (lambda name, t: ln(name)(t)) if cfg.pre_ln else (lambda name, t: t)
    close = (lambda name: None) if cfg.pre_ln else ln

    h = pre("self_attn_layer_norm", x)
    a = attention(lp, "self_attn", hk, SELF_QKV, Hook.SELF_PREFIX if decoder else Hook.ENCODER_PREFIX, h, h, mask,
                  n, ops, cache if decoder else None, i, probs)
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, close("self_attn_layer_norm"))
    if decoder:
        h = pre("encoder_attn_layer_norm", x)
        c = attention(lp, "encoder_attn", hk, CROSS_QKV, Hook.CROSS_PREFIX, h, memory, cross_mask, n, ops, cache, i,
                      cross_probs)
        x = hk.residual_block(Hook.CROSS_ADAPTER, c, x, close("encoder_attn_layer_norm"))
    h = pre("final_layer_norm", x)
    f = ops.activation(cfg.activation_function)(hk.linear(Hook.INTERMEDIATE, h, *lp.linear("fc1")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("fc2"))
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, close("final_layer_norm"))
    return hk.layer_output(x)


def encode(p, cfg: BartConfig, hooks, ops, dtype, input_ids, attention_mask, inputs_embeds, states, probs):
    """Encoder stack. Spec: BART-3.  -> (B, S, D)"""
    x = embed(p, cfg, ENCODER, input_ids, inputs_embeds, 0, ops, dtype)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)        # invertible adapter (adapters' hook)
    mask = ed.padding_mask(attention_mask, dtype)
    for i, lp in enumerate(layer_views(p, ENC_STACK, cfg.num_hidden_layers)):
        if states is not None:
            states.append(x)
        x = layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs=probs)
    if cfg.pre_ln:
        x = ops.layer_norm(x, p["encoder.layer_norm.weight"], p["encoder.layer_norm.bias"], LN_EPS)
    if states is not None:
        states.append(x)
    return x


def default_decoder_inputs(cfg: BartConfig, input_ids):
    """transformers' decoder inputs when none are given: the encoder ids shifted right. Spec: ENCDEC-2."""
    if input_ids is None:
        raise ValueError("forward(): without decoder_input_ids, BART-family models shift input_ids right to make "
                         "them; pass input_ids or decoder_input_ids.")
    if cfg.model_type == "bart":
        return ed.shift_tokens_right(input_ids, cfg.pad_token_id, cfg.decoder_start_token_id)
    return ed.shift_tokens_right_wrap(input_ids, cfg.pad_token_id)


def forward(p, cfg: BartConfig, hooks, ops, dtype, *, input_ids=None, attention_mask=None, inputs_embeds=None,
            decoder_input_ids=None, decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
            output_hidden_states=False, output_attentions=False):
    """Encoder (unless ``encoder_outputs`` is given), then decoder over it. Spec: BART-3, ENCDEC-1.

    -> {last_hidden_state (decoder), encoder_last_hidden_state, decoder/encoder hidden states and attentions}"""
    enc_states = [] if output_hidden_states and encoder_outputs is None else None
    enc_probs = [] if output_attentions and encoder_outputs is None else None
    if encoder_outputs is None:
        if attention_mask is None:
            shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
            attention_mask = np.ones(shape, np.int64)
        memory = encode(p, cfg, hooks, ops, dtype, input_ids, attention_mask, inputs_embeds, enc_states, enc_probs)
    else:
        memory = encoder_outputs
        if attention_mask is None:
            attention_mask = np.ones(memory.shape[:2], np.int64)
    if decoder_input_ids is None:
        decoder_input_ids = default_decoder_inputs(cfg, input_ids)
    B, T = decoder_input_ids.shape
    past = past_key_values.length if past_key_values is not None else 0
    if past_key_values is not None:
        ed.check_cache(past_key_values, B)
    if decoder_attention_mask is None:
        decoder_attention_mask = np.ones((B, past + T), np.int64)
    y = embed(p, cfg, DECODER, decoder_input_ids, None, past, ops, dtype)
    y, _ = hooks.embeddings(DECODER, y, decoder_attention_mask)
    mask = ed.causal_padding_mask(decoder_attention_mask, T, dtype)          # (B, 1, T, past + T)
    cross_mask = ed.padding_mask(attention_mask, dtype)                       # (B, 1, 1, S)
    states = [] if output_hidden_states else None
    probs, cross_probs = ([], []) if output_attentions else (None, None)
    for i, lp in enumerate(layer_views(p, DEC_STACK, cfg.decoder_layers)):
        if states is not None:
            states.append(y)
        y = layer(y, mask, lp, hooks.layer(DECODER, i), cfg, ops, decoder=True, memory=memory, cross_mask=cross_mask,
                  cache=past_key_values, i=i, probs=probs, cross_probs=cross_probs)
    if cfg.pre_ln:
        y = ops.layer_norm(y, p["decoder.layer_norm.weight"], p["decoder.layer_norm.bias"], LN_EPS)
    if states is not None:
        states.append(y)
    tup = lambda v: tuple(v) if v is not None else None  # noqa: E731
    return {"last_hidden_state": y, "encoder_last_hidden_state": memory, "decoder_hidden_states": tup(states),
            "decoder_attentions": tup(probs), "cross_attentions": tup(cross_probs),
            "encoder_hidden_states": tup(enc_states), "encoder_attentions": tup(enc_probs)}


_COMMON = dict(attn_q="self_attn.q_proj", attn_k="self_attn.k_proj", attn_v="self_attn.v_proj",
               attn_o="self_attn.out_proj", intermediate="fc1", output="fc2", mh_adapter="attention_adapters",
               output_adapter="output_adapters")
ENC_STACK = LayerStack(ENCODER, layers="encoder.layers.{i}", num_layers="num_hidden_layers", embeddings="shared",
                       encoder_prefix="self_attn.prefix_tuning", **_COMMON)
DEC_STACK = LayerStack(DECODER, layers="decoder.layers.{i}", num_layers="decoder_layers",
                       cross_q="encoder_attn.q_proj", cross_k="encoder_attn.k_proj", cross_v="encoder_attn.v_proj",
                       cross_adapter="cross_attention_adapters", self_prefix="self_attn.prefix_tuning",
                       cross_prefix="encoder_attn.prefix_tuning", layer_offset="num_hidden_layers", **_COMMON)

ARCHITECTURE = Architecture(
    name="bart", model_types=MODEL_TYPES, config_class=BartConfig, stacks=(ENC_STACK, DEC_STACK), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes,
    model_class={"bart": "BartModel", "mbart": "MBartModel", "plbart": "PLBartModel"},
    base_model_prefix={"bart": "model", "mbart": "model", "plbart": "model"},
    inputs=frozenset({"input_ids", "attention_mask", "inputs_embeds", "decoder_input_ids", "decoder_attention_mask",
                      "encoder_outputs", "past_key_values"}),
    methods=ALL_METHODS - {"prompt_tuning"},        # adapters: support_prompt_tuning = False (BartModelAdaptersMixin)
    embed_key="shared.weight", invertible_base="encoder", is_encoder_decoder=True,
    call_order=("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"))
