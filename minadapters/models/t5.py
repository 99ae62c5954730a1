"""T5 / MT5 encoder-decoder, explicit NumPy forward with adapter hook points. Spec: T5-1 .. T5-5, T5-RELPOS-1/2,
T5-NORM (spec/encoder_decoder.md, "T5 and MT5").

Two stacks, ``encoder`` and ``decoder``. Every sub-layer is pre-norm with T5's RMS layer norm (no mean, no bias);
attention has no 1/√Dh scaling and adds a bucketed relative position bias that the first layer of each stack
computes (its ``relative_attention_bias`` table) and every later layer reuses; the head size is ``d_kv``, not
d_model / heads. The FFN is ReLU (``wi``, ``wo``) or gated (``wi_0``, ``wi_1``, ``wo``; T5 v1.1 / MT5).
adapters 1.3.0 locations (src/adapters/models/t5/mixin_t5.py): LoRA on q/k/v of every attention (cross-attention
included, under adapters' ``selfattn`` location), on ``wi`` (``wi_1`` when gated) as "intermediate" and ``wo`` as
"output"; bottlenecks on the sub-layer modules ``layer.0`` (mh_adapter), decoder ``layer.1`` (cross_adapter) and the
FFN layer (output_adapter); prefix tuning ``encoder_prefix`` (encoder self-attention), ``self_prefix`` (decoder
self-attention), ``cross_prefix``; invertible adapters on the encoder's embeddings; no prompt tuning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..functional.t5 import relative_position_bias, t5_layer_norm
from ..hooks import Hook
from . import decoder_common as dc, encdec_common as ed
from .base import ALL_METHODS, Architecture, LayerStack, config_int, layer_views

MODEL_TYPES = ("t5", "mt5")
ENCODER, DECODER = "encoder", "decoder"
MODEL_CLASS = {"t5": "T5Model", "mt5": "MT5Model"}


@dataclass(frozen=True)
class T5Config:
    """config.json of T5Config / MT5Config (the fields this forward reads). Spec: T5-1."""
    model_type: str
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    vocab_size: int
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    layer_norm_epsilon: float
    feed_forward_proj: str
    dense_act_fn: str
    is_gated_act: bool
    tie_word_embeddings: bool
    pad_token_id: int
    eos_token_id: object
    decoder_start_token_id: int

    # the names the rest of the package reads (adapters' config aliases for T5: d_model, num_heads, num_layers)
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        return self.num_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.num_layers

    @property
    def head_dim(self) -> int:
        return self.d_kv

    @classmethod
    def from_dict(cls, d: dict) -> "T5Config":
        mt = d["model_type"]
        proj = d.get("feed_forward_proj", "gated-gelu" if mt == "mt5" else "relu")
        if not isinstance(proj, str):
            raise ConfigError(f"config.json: feed_forward_proj={proj!r} must be a string such as 'relu' or "
                              "'gated-gelu'.")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ConfigError(f"config.json: feed_forward_proj={proj!r} is not valid; expected '<act>' or "
                              "'gated-<act>' (e.g. 'relu', 'gated-gelu').")
        act = "gelu_new" if proj == "gated-gelu" else parts[-1]      # transformers: gated-gelu means gelu_new
        get_activation(act)
        L = config_int(d, "num_layers", 6)
        Ld = d.get("num_decoder_layers")
        buckets = config_int(d, "relative_attention_num_buckets", 32, minimum=4)
        tie = d.get("tie_word_embeddings", mt != "mt5")
        pad = d.get("pad_token_id", 0)
        pad = 0 if pad is None else int(pad)
        start = d.get("decoder_start_token_id")
        return cls(mt, config_int(d, "d_model", 512), config_int(d, "d_kv", 64), config_int(d, "d_ff", 2048), L,
                   L if Ld is None else config_int(d, "num_decoder_layers", L), config_int(d, "num_heads", 8),
                   config_int(d, "vocab_size", 32128), buckets,
                   config_int(d, "relative_attention_max_distance", 128),
                   float(d.get("layer_norm_epsilon", 1e-6)), proj, act, parts[0] == "gated" and len(parts) == 2,
                   bool(tie), pad, d.get("eos_token_id", 1), pad if start is None else int(start))


def ffn_input(cfg: T5Config) -> str:
    """The FFN linear adapters wraps as "intermediate": ``wi``, or ``wi_1`` in the gated FFN. Spec: T5-4."""
    return "wi_1" if cfg.is_gated_act else "wi"


def hook_vars(cfg: T5Config) -> dict:
    return {"wi": ffn_input(cfg)}


def tied_lm_scale(cfg: T5Config) -> float:
    """d_model^-0.5: the factor on the decoder states before a tied LM projection (Mesh TensorFlow's tied softmax;
    T5ForConditionalGeneration and T5AdapterModel's heads). Spec: T5-6."""
    return cfg.d_model ** -0.5


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip adapters' ``transformer.`` (T5AdapterModel); keep shared / encoder / decoder and ``lm_head.weight``;
    the tied ``embed_tokens`` copies become ``shared.weight`` when only they are present. Spec: T5-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("transformer."):
            k = k[len("transformer."):]
        if k == "lm_head.weight" or k.startswith(("shared.", "encoder.", "decoder.")):
            out[k] = v
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        v = out.pop(alias, None)
        if v is not None and "shared.weight" not in out:
            out["shared.weight"] = v
    # old checkpoints carry an unused table on the first cross-attention (transformers ignores it)
    out.pop("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", None)
    return out


def expected_shapes(cfg: T5Config) -> dict:
    D, F, I, N = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv, cfg.num_heads
    s = {"shared.weight": (cfg.vocab_size, D), "encoder.final_layer_norm.weight": (D,),
         "decoder.final_layer_norm.weight": (D,)}
    ffn = ({"wi_0": (F, D), "wi_1": (F, D)} if cfg.is_gated_act else {"wi": (F, D)}) | {"wo": (D, F)}
    for stack, n, attn_names in ((ENCODER, cfg.num_layers, ("SelfAttention",)),
                                 (DECODER, cfg.num_decoder_layers, ("SelfAttention", "EncDecAttention"))):
        for i in range(n):
            p = f"{stack}.block.{i}.layer."
            for j, a in enumerate(attn_names):
                for m, shape in (("q", (I, D)), ("k", (I, D)), ("v", (I, D)), ("o", (D, I))):
                    s[f"{p}{j}.{a}.{m}.weight"] = shape
                s[f"{p}{j}.layer_norm.weight"] = (D,)
            f = len(attn_names)
            for m, shape in ffn.items():
                s[f"{p}{f}.DenseReluDense.{m}.weight"] = shape
            s[f"{p}{f}.layer_norm.weight"] = (D,)
        s[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            cfg.relative_attention_num_buckets, N)
    return s


def attention(h, memory, mask, bias, lp, hk, hooks: tuple, *, table, bidirectional, query_positions, cfg, ops,
              cache=None, i=0, probs=None):
    """One T5 attention (self when ``memory`` is None, else cross over ``memory``). Spec: T5-2.

        q, k, v = h W_qᵀ, m W_kᵀ, m W_vᵀ  (m = h or memory)     hooks: LoRA q/k/v, then prefix on (K, V, mask)
        bias    = reused from the previous layer if its key length matches, else
                  (table ? relative_position_bias : 0) + mask          (the first layer's table only)
        a       = softmax(q Kᵀ + bias) V W_oᵀ                         no 1/√Dh
    ``hooks`` = (q, k, v, prefix) hook keys; ``cache`` (EncDecCache, decoder): self-attention K/V appended, cross
    K/V computed once (ENCDEC-4). Returns (a, bias) — the bias the next layer receives."""
    N, Dh = cfg.num_heads, cfg.d_kv
    kv_in = h if memory is None else memory
    q = dc.split_heads(hk.linear(hooks[0], h, *lp.linear("q")), N, Dh)                  # (B, N, T, Dh)

    def kv():
        return (dc.split_heads(hk.linear(hooks[1], kv_in, *lp.linear("k")), N, Dh),
                dc.split_heads(hk.linear(hooks[2], kv_in, *lp.linear("v")), N, Dh))
    if memory is not None:
        k, v = ed.cross_kv(cache, i, kv)                                                # cross K/V computed once
    else:
        k, v = kv()
        if cache is not None:
            k, v = cache.update(i, k, v)
    K, V, m = hk.prefix(hooks[3], k, v, mask, h)                                        # Tk' = P + Tk
    Tk = K.shape[2]
    scores = ops.matmul(q, np.swapaxes(K, -1, -2))                                      # (B, N, T, Tk')
    if bias is None or bias.shape[3] != Tk:
        if table is not None:
            bias = relative_position_bias(table, query_positions, Tk, bidirectional=bidirectional,
                                          num_buckets=cfg.relative_attention_num_buckets,
                                          max_distance=cfg.relative_attention_max_distance).astype(scores.dtype)
        else:
            bias = np.zeros((1, N, q.shape[2], Tk), scores.dtype)
        if m is not None:
            bias = bias + m[..., :Tk]
    w = ops.softmax(scores + bias, axis=-1)
    if probs is not None:
        probs.append(w)
    ctx = ops.matmul(w, V)                                                              # (B, N, T, Dh)
    return ops.linear(dc.merge_heads(ctx), *lp.linear("o")), bias


def feed_forward(x, lp, hk, cfg: T5Config, ops):
    """Pre-norm FFN with its residual. Spec: T5-4.

        h = T5Norm(x);  f = act(h wiᵀ) woᵀ  (ReLU),  or  f = (act(h wi_0ᵀ) ⊙ h wi_1ᵀ) woᵀ  (gated)
        x = bottleneck_block(f, x)         hooks: intermediate (wi / wi_1), output (wo), output_adapter"""
    act = ops.activation(cfg.dense_act_fn)
    h = t5_layer_norm(x, lp["layer_norm.weight"], cfg.layer_norm_epsilon, ops)
    if cfg.is_gated_act:
        f = act(ops.linear(h, lp["DenseReluDense.wi_0.weight"])) * hk.linear(
            Hook.INTERMEDIATE, h, lp["DenseReluDense.wi_1.weight"])
    else:
        f = act(hk.linear(Hook.INTERMEDIATE, h, lp["DenseReluDense.wi.weight"]))
    f = hk.linear(Hook.OUTPUT, f, lp["DenseReluDense.wo.weight"])
    return hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)


_SELF_HOOKS = {ENCODER: (Hook.ATTN_Q, Hook.ATTN_K, Hook.ATTN_V, Hook.ENCODER_PREFIX),
               DECODER: (Hook.ATTN_Q, Hook.ATTN_K, Hook.ATTN_V, Hook.SELF_PREFIX)}
_CROSS_HOOKS = (Hook.CROSS_Q, Hook.CROSS_K, Hook.CROSS_V, Hook.CROSS_PREFIX)


class _Sub:
    """The parameters of sub-layer ``j`` of a T5 block (``layer.{j}``), attention weights under ``name``."""

    __slots__ = ("lp", "j", "name")

    def __init__(self, lp, j, name=None):
        self.lp, self.j, self.name = lp, j, name

    def __getitem__(self, leaf):
        return self.lp[f"layer.{self.j}.{leaf}"]

    def linear(self, m):
        return self.lp[f"layer.{self.j}.{self.name}.{m}.weight"], None


def stack_forward(stack, x, mask, hooks, p, cfg: T5Config, ops, *, memory=None, memory_mask=None, positions,
                  cache=None, states=None, probs=None, cross_probs=None):
    """Layers of one stack and its final norm. Spec: T5-3.  x: (B, T, D); mask, memory_mask additive."""
    n = cfg.num_layers if stack == ENCODER else cfg.num_decoder_layers
    table = p[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    bias = cross_bias = None
    for i, lp in enumerate(layer_views(p, STACKS[stack], n)):
        if states is not None:
            states.append(x)
        hk = hooks.layer(stack, i)
        sa = _Sub(lp, 0, "SelfAttention")
        h = t5_layer_norm(x, sa["layer_norm.weight"], cfg.layer_norm_epsilon, ops)
        a, bias = attention(h, None, mask, bias, sa, hk, _SELF_HOOKS[stack], table=table if i == 0 else None,
                            bidirectional=stack == ENCODER, query_positions=positions, cfg=cfg, ops=ops,
                            cache=cache, i=i, probs=probs)
        x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)
        if memory is not None:
            ca = _Sub(lp, 1, "EncDecAttention")
            h = t5_layer_norm(x, ca["layer_norm.weight"], cfg.layer_norm_epsilon, ops)
            c, cross_bias = attention(h, memory, memory_mask, cross_bias, ca, hk, _CROSS_HOOKS, table=None,
                                      bidirectional=False, query_positions=positions, cfg=cfg, ops=ops,
                                      cache=cache, i=i, probs=cross_probs)
            x = hk.residual_block(Hook.CROSS_ADAPTER, c, x, None)
        x = feed_forward(x, _Sub(lp, 2 if memory is not None else 1), hk, cfg, ops)
        x = hk.layer_output(x)
    x = t5_layer_norm(x, p[f"{stack}.final_layer_norm.weight"], cfg.layer_norm_epsilon, ops)
    if states is not None:
        states.append(x)
    return x


def encode(p, cfg: T5Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, inputs_embeds=None,
           output_hidden_states=False, output_attentions=False):
    """The encoder stack: shared embeddings (no scaling), the embedding hook, layers, final norm. Spec: T5-3.
    -> (last_hidden_state, attention_mask (B, T) as used, hidden_states, attentions)"""
    x = (ops.take(p["shared.weight"], input_ids) if inputs_embeds is None else inputs_embeds).astype(dtype,
                                                                                                   copy=False)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    states = [] if output_hidden_states else None
    probs = [] if output_attentions else None
    x = stack_forward(ENCODER, x, ed.padding_mask(attention_mask, dtype), hooks, p, cfg, ops,
                      positions=np.arange(x.shape[1]), states=states, probs=probs)
    return x, attention_mask, states, probs


def forward(p, cfg: T5Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, decoder_input_ids=None,
            decoder_attention_mask=None, encoder_outputs=None, inputs_embeds=None, past_key_values=None,
            output_hidden_states=False, output_attentions=False):
    """Encoder (unless ``encoder_outputs`` is given), then the decoder over it. Spec: T5-3.

    -> {last_hidden_state (decoder), encoder_last_hidden_state, decoder_hidden_states, decoder_attentions,
    cross_attentions, encoder_hidden_states, encoder_attentions, past_key_values}"""
    enc_states = enc_probs = None
    if encoder_outputs is None:
        memory, attention_mask, enc_states, enc_probs = encode(
            p, cfg, hooks, ops, dtype, input_ids=input_ids, attention_mask=attention_mask,
            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions)
    else:
        memory = encoder_outputs                                   # (B, S, D), checked at the model's edge
        if attention_mask is None:
            attention_mask = np.ones(memory.shape[:2], np.int64)
    if decoder_input_ids is None:               # T5AdapterModel: input_ids shifted right (T5Model raises instead)
        if input_ids is None:
            raise ValueError("forward(): T5 needs decoder_input_ids, or input_ids to shift right into them.")
        decoder_input_ids = ed.shift_tokens_right(input_ids, cfg.pad_token_id, cfg.decoder_start_token_id)
    y = ops.take(p["shared.weight"], decoder_input_ids).astype(dtype, copy=False)
    B, T = y.shape[:2]
    past = past_key_values.length if past_key_values is not None else 0
    ed.check_cache(past_key_values, B)
    if decoder_attention_mask is None:
        decoder_attention_mask = np.ones((B, past + T), np.int64)
    if memory.shape[0] != B:
        raise ShapeError(f"the encoder output has batch {memory.shape[0]} but the decoder input has batch {B}.")
    states = [] if output_hidden_states else None
    probs = [] if output_attentions else None
    cross = [] if output_attentions else None
    y = stack_forward(DECODER, y, ed.causal_padding_mask(decoder_attention_mask, T, dtype), hooks, p, cfg, ops,
                      memory=memory, memory_mask=ed.padding_mask(attention_mask, dtype),
                      positions=np.arange(past, past + T), cache=past_key_values, states=states, probs=probs,
                      cross_probs=cross)
    tup = lambda xs: tuple(xs) if xs is not None else None  # noqa: E731
    return {"last_hidden_state": y, "encoder_last_hidden_state": memory, "decoder_hidden_states": tup(states),
            "decoder_attentions": tup(probs), "cross_attentions": tup(cross), "encoder_hidden_states": tup(enc_states),
            "encoder_attentions": tup(enc_probs)}


# adapters 1.3.0 state-dict paths of the hook locations (T5Block's modules: layer.0 self-attention,
# decoder layer.1 cross-attention, the last layer the FFN). "{wi}" is wi, or wi_1 in the gated FFN.
ENCODER_STACK = LayerStack(
    ENCODER, layers="encoder.block.{i}", num_layers="num_layers", embeddings="shared",
    attn_q="layer.0.SelfAttention.q", attn_k="layer.0.SelfAttention.k", attn_v="layer.0.SelfAttention.v",
    attn_o="layer.0.SelfAttention.o", intermediate="layer.1.DenseReluDense.{wi}", output="layer.1.DenseReluDense.wo",
    mh_adapter="layer.0", output_adapter="layer.1", encoder_prefix="layer.0.SelfAttention.prefix_tuning")
DECODER_STACK = LayerStack(
    DECODER, layers="decoder.block.{i}", num_layers="num_decoder_layers",
    attn_q="layer.0.SelfAttention.q", attn_k="layer.0.SelfAttention.k", attn_v="layer.0.SelfAttention.v",
    attn_o="layer.0.SelfAttention.o", cross_q="layer.1.EncDecAttention.q", cross_k="layer.1.EncDecAttention.k",
    cross_v="layer.1.EncDecAttention.v", intermediate="layer.2.DenseReluDense.{wi}",
    output="layer.2.DenseReluDense.wo", mh_adapter="layer.0", cross_adapter="layer.1", output_adapter="layer.2",
    self_prefix="layer.0.SelfAttention.prefix_tuning", cross_prefix="layer.1.EncDecAttention.prefix_tuning",
    layer_offset="num_layers")                                  # adapters' iter_layers: decoder after encoder
STACKS = {ENCODER: ENCODER_STACK, DECODER: DECODER_STACK}

ARCHITECTURE = Architecture(
    name="t5", model_types=MODEL_TYPES, config_class=T5Config, stacks=(ENCODER_STACK, DECODER_STACK),
    forward=forward, normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class=MODEL_CLASS,
    base_model_prefix={"t5": "transformer", "mt5": "transformer"},
    inputs=frozenset({"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask",
                      "encoder_outputs", "inputs_embeds", "past_key_values"}),
    methods=ALL_METHODS - {"prompt_tuning"},        # adapters 1.3.0: T5ModelAdaptersMixin.support_prompt_tuning = False
    embed_key="shared.weight", hook_vars=hook_vars, tied_lm_scale=tied_lm_scale, invertible_base="encoder",
    is_encoder_decoder=True, call_order=("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"))
