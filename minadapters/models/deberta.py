"""DeBERTa and DeBERTa-v2 encoders: disentangled relative attention, explicit NumPy forward with adapter hook points.
Spec: DEB-1 .. DEB-6 (spec/families.md).

One module, two records (their hook locations differ): DeBERTa (v1) projects q|k|v with one fused, bias-free
``in_proj`` (heads interleaved, ``q_bias``/``v_bias`` added after the split; adapters 1.3.0 wraps it as a merged
LoRA layer), DeBERTa-v2 with ``query_proj/key_proj/value_proj``. Both add the c2p / p2c relative terms (DEB-3) to
the content scores; v2 adds log position buckets, ``share_att_key``, ``norm_rel_ebd`` and the ConvLayer.
Dropout (StableDropout) is off: inference only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional import deberta as F
from ..functional.activations import get_activation
from ..hooks import Hook
from .base import Architecture, LayerStack, config_int, layer_views
from .bert import merge_heads, split_heads

ENCODER = "encoder"
REL = "encoder.rel_embeddings.weight"


def _bool(d, key, default):
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"config.json: {key}={v!r} must be true or false.")
    return v


def _pos_att_type(d) -> tuple:
    v = d.get("pos_att_type")
    if v is None:
        return ()
    if isinstance(v, str):                       # transformers' backwards compatibility: "p2c|c2p"
        v = [x.strip() for x in v.lower().split("|")]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"config.json: pos_att_type={v!r} must be a list of 'c2p' / 'p2c' (or 'p2c|c2p').")
    return tuple(v)


@dataclass(frozen=True)
class Config:
    """DebertaConfig / DebertaV2Config as the forward reads them (transformers' getattr defaults). Spec: DEB-1."""
    model_type: str
    hidden_size: int
    embedding_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int
    position_biased_input: bool
    relative_attention: bool
    pos_att_type: tuple
    max_relative_positions: int       # resolved: max_position_embeddings when the config says < 1
    position_buckets: int             # v2 only (-1: none)
    share_att_key: bool               # v2 only
    norm_rel_ebd: tuple               # v2 only: ("none",) or ("layer_norm",)
    conv_kernel_size: int             # v2 only (0: no ConvLayer)
    conv_groups: int
    conv_act: str
    talking_head: bool                # v1 only

    @property
    def is_v2(self) -> bool:
        return self.model_type == "deberta-v2"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def scale_factor(self) -> int:
        """1 + number of relative terms: v1 counts every pos_att_type entry, v2 only c2p and p2c. Spec: DEB-3."""
        if self.is_v2:
            return 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        return 1 + len(self.pos_att_type)

    @property
    def span(self) -> int:
        """v2's attention span S (position_buckets when set, else max_relative_positions). Spec: DEB-2."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def rel_rows(self) -> int:
        return 2 * (self.span if self.is_v2 else self.max_relative_positions)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of DebertaConfig / DebertaV2Config (transformers' defaults for missing keys). Spec: DEB-1."""
        mt = d["model_type"]
        v2 = mt == "deberta-v2"
        integer = lambda key, default, minimum=1: config_int(d, key, default, minimum)  # noqa: E731
        D, H = integer("hidden_size", 1536 if v2 else 768), integer("num_attention_heads", 24 if v2 else 12)
        if D % H:
            raise ShapeError(f"config.json: hidden_size={D} is not a multiple of num_attention_heads={H}.")
        if d.get("attention_head_size", D // H) != D // H:
            raise ConfigError(f"config.json: attention_head_size={d['attention_head_size']!r} must equal "
                              f"hidden_size / num_attention_heads = {D // H} (the output projection is D x D).")
        act = d.get("hidden_act", "gelu")
        get_activation(act)
        maxpos = integer("max_position_embeddings", 512)
        mrp = d.get("max_relative_positions", -1)
        if isinstance(mrp, bool) or not isinstance(mrp, int):
            raise ConfigError(f"config.json: max_relative_positions={mrp!r} must be an integer.")
        buckets = d.get("position_buckets", -1) if v2 else -1
        if isinstance(buckets, bool) or not isinstance(buckets, int):
            raise ConfigError(f"config.json: position_buckets={buckets!r} must be an integer.")
        norm = tuple(x.strip() for x in str(d.get("norm_rel_ebd", "none")).lower().split("|")) if v2 else ("none",)
        kernel = integer("conv_kernel_size", 0, minimum=0) if v2 else 0
        if kernel and kernel % 2 == 0:
            raise ConfigError(f"config.json: conv_kernel_size={kernel} must be odd (an even kernel shortens the "
                              f"sequence and transformers' ConvLayer fails).")
        groups = integer("conv_groups", 1) if v2 else 1
        if kernel and D % groups:
            raise ConfigError(f"config.json: conv_groups={groups} must divide hidden_size={D}.")
        conv_act = d.get("conv_act", "tanh")
        if kernel:
            get_activation(conv_act)
        return cls(mt, D, integer("embedding_size", D), integer("num_hidden_layers", 24 if v2 else 12), H,
                   integer("intermediate_size", 6144 if v2 else 3072), integer("vocab_size", 128100 if v2 else 50265),
                   maxpos, integer("type_vocab_size", 0, minimum=0), float(d.get("layer_norm_eps", 1e-7)), act,
                   integer("pad_token_id", 0, minimum=0), _bool(d, "position_biased_input", True),
                   _bool(d, "relative_attention", False), _pos_att_type(d), mrp if mrp >= 1 else maxpos, buckets,
                   _bool(d, "share_att_key", False) if v2 else False, norm, kernel, groups, conv_act,
                   False if v2 else _bool(d, "talking_head", False))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task model's 'deberta.' prefix; drop heads (pooler, classifier, lm_predictions ...). Spec: DEB-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("deberta."):
            k = k[len("deberta."):]
        elif not k.startswith(("embeddings.", "encoder.")):
            continue
        out[k] = v
    return out


def _lin(s, name, o, i, bias=True):
    s[name + ".weight"] = (o, i)
    if bias:
        s[name + ".bias"] = (o,)


def expected_shapes(cfg: Config) -> dict:
    """Every base weight the forward reads, with its shape. Spec: DEB-1.  (A DeBERTa v1 checkpoint may also carry
    an ``in_proj.bias``: adapters adds one when it wraps in_proj; the forward uses it when present, DEB-6.)"""
    D, E, F_, N = cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size, cfg.num_attention_heads
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, E),
         "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    if cfg.position_biased_input:
        s["embeddings.position_embeddings.weight"] = (cfg.max_position_embeddings, E)
    if cfg.type_vocab_size > 0:
        s["embeddings.token_type_embeddings.weight"] = (cfg.type_vocab_size, E)
    if E != D:
        s["embeddings.embed_proj.weight"] = (D, E)
    if cfg.relative_attention:
        s[REL] = (cfg.rel_rows, D)
    if "layer_norm" in cfg.norm_rel_ebd:
        s["encoder.LayerNorm.weight"], s["encoder.LayerNorm.bias"] = (D,), (D,)
    if cfg.conv_kernel_size:
        s["encoder.conv.conv.weight"] = (D, D // cfg.conv_groups, cfg.conv_kernel_size)
        s["encoder.conv.conv.bias"] = (D,)
        s["encoder.conv.LayerNorm.weight"], s["encoder.conv.LayerNorm.bias"] = (D,), (D,)
    c2p, p2c = "c2p" in cfg.pos_att_type, "p2c" in cfg.pos_att_type
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        a = p + "attention.self."
        if cfg.is_v2:
            for name in ("query_proj", "key_proj", "value_proj"):
                _lin(s, a + name, D, D)
            if cfg.relative_attention and not cfg.share_att_key:
                if c2p:
                    _lin(s, a + "pos_key_proj", D, D)
                if p2c:
                    _lin(s, a + "pos_query_proj", D, D)
        else:
            _lin(s, a + "in_proj", 3 * D, D, bias=False)
            s[a + "q_bias"], s[a + "v_bias"] = (D,), (D,)
            if cfg.relative_attention and c2p:
                _lin(s, a + "pos_proj", D, D, bias=False)
            if cfg.relative_attention and p2c:
                _lin(s, a + "pos_q_proj", D, D)
            if cfg.talking_head:
                _lin(s, a + "head_logits_proj", N, N, bias=False)
                _lin(s, a + "head_weights_proj", N, N, bias=False)
        _lin(s, p + "attention.output.dense", D, D)
        _lin(s, p + "intermediate.dense", F_, D)
        _lin(s, p + "output.dense", D, F_)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def embeddings(p, cfg: Config, input_ids, token_type_ids, positions, mask2d, ops, *, inputs_embeds=None):
    """LN(proj(word [+ position] [+ token type])) ⊙ mask. Spec: DEB-1.  (B, T) -> (B, T, D)"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    x = ops.take(p["embeddings.word_embeddings.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    if cfg.position_biased_input:
        if positions is None:
            if T > cfg.max_position_embeddings:
                raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most "
                                 f"{cfg.max_position_embeddings}.")
            positions = np.broadcast_to(np.arange(T), (B, T))
        x = x + ops.take(p["embeddings.position_embeddings.weight"], positions)
    if cfg.type_vocab_size > 0:
        tt = np.zeros((B, T), np.int64) if token_type_ids is None else token_type_ids
        x = x + ops.take(p["embeddings.token_type_embeddings.weight"], tt)
    if cfg.embedding_size != cfg.hidden_size:
        x = ops.linear(x, p["embeddings.embed_proj.weight"])                # (B, T, D)
    x = ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)
    return x * np.asarray(mask2d)[..., None].astype(x.dtype)


def _scale(cfg: Config, dtype):
    return np.sqrt(np.float32(cfg.head_size * cfg.scale_factor)).astype(dtype)


def _heads_v1(qkv, N):
    """in_proj's (B, T, 3D) output -> q, k, v (B, N, T, Dh): per head [q | k | v] (transformers' layout)."""
    B, T, D3 = qkv.shape
    t = qkv.reshape(B, T, N, D3 // N).transpose(0, 2, 1, 3)            # (B, N, T, 3Dh)
    Dh = D3 // N // 3
    return t[..., :Dh], t[..., Dh:2 * Dh], t[..., 2 * Dh:]


def attention_v1(x, mask, lp, hk, cfg: Config, rel, rel_emb, ops):
    """DeBERTa's disentangled self-attention. Spec: DEB-3 (v1).  x: (B, T, D); mask: (B, 1, T, T) additive
    -> context (B, T, D), probs (B, N, T, Tk)"""
    N, T = cfg.num_attention_heads, x.shape[1]
    qkv = hk.linear(Hook.ATTN_QKV, x, *lp.linear("attention.self.in_proj"))  # (B, T, 3D); bias only if stored
    q, k, v = _heads_v1(qkv, N)
    q = q + split_heads(lp["attention.self.q_bias"][None, None], N)
    v = v + split_heads(lp["attention.self.v_bias"][None, None], N)
    K, V, mask = hk.prefix(Hook.SELF_PREFIX, k, v, mask, x)             # Tk = P + T
    scale = _scale(cfg, q.dtype)
    q = q / scale
    scores = ops.matmul(q, np.swapaxes(K, -1, -2))                      # (B, N, T, Tk)
    if cfg.relative_attention:
        S = min(T, cfg.max_relative_positions)
        re = rel_emb[cfg.max_relative_positions - S:cfg.max_relative_positions + S][None]   # (1, 2S, D)
        bias = 0
        if "c2p" in cfg.pos_att_type:
            pk = split_heads(ops.linear(re, lp["attention.self.pos_proj.weight"]), N)
            bias = bias + F.c2p_scores(q, pk, rel, S, ops=ops)
        if "p2c" in cfg.pos_att_type:
            pq = split_heads(ops.linear(re, *lp.linear("attention.self.pos_q_proj")), N) / scale
            bias = bias + F.p2c_scores(k, pq, rel, S, ops=ops)
        scores = _add_right(scores, bias)
    if cfg.talking_head:
        scores = _mix_heads(scores, lp["attention.self.head_logits_proj.weight"], ops)
    probs = ops.softmax(F.masked_fill(scores, mask), axis=-1)
    if cfg.talking_head:
        probs = _mix_heads(probs, lp["attention.self.head_weights_proj.weight"], ops)
    return merge_heads(ops.matmul(probs, V)), probs


def attention_v2(x, mask, lp, hk, cfg: Config, rel, rel_emb, ops):
    """DeBERTa-v2's disentangled self-attention. Spec: DEB-3 (v2).  x: (B, T, D); mask: (B, 1, T, T) additive
    -> context (B, T, D), probs (B, N, T, Tk)"""
    N = cfg.num_attention_heads
    q = split_heads(hk.linear(Hook.ATTN_Q, x, *lp.linear("attention.self.query_proj")), N)
    k = split_heads(hk.linear(Hook.ATTN_K, x, *lp.linear("attention.self.key_proj")), N)
    v = split_heads(hk.linear(Hook.ATTN_V, x, *lp.linear("attention.self.value_proj")), N)
    K, V, mask = hk.prefix(Hook.SELF_PREFIX, k, v, mask, x)             # Tk = P + T
    scale = _scale(cfg, q.dtype)
    scores = ops.matmul(q, np.swapaxes(K, -1, -2) / scale)              # (B, N, T, Tk)
    if cfg.relative_attention:
        S = cfg.span
        re = rel_emb[:2 * S][None]                                      # (1, 2S, D)
        c2p, p2c = "c2p" in cfg.pos_att_type, "p2c" in cfg.pos_att_type
        if cfg.share_att_key:
            # COMPAT(adapters): the shared projections are the LoRA-wrapped query/key_proj, so LoRA / IA³ on q, k
            # also act on the relative embeddings (adapters calls the wrapped module on them).
            pq = split_heads(hk.linear(Hook.ATTN_Q, re, *lp.linear("attention.self.query_proj")), N) if p2c else None
            pk = split_heads(hk.linear(Hook.ATTN_K, re, *lp.linear("attention.self.key_proj")), N) if c2p else None
        else:
            pk = split_heads(ops.linear(re, *lp.linear("attention.self.pos_key_proj")), N) if c2p else None
            pq = split_heads(ops.linear(re, *lp.linear("attention.self.pos_query_proj")), N) if p2c else None
        bias = 0
        if c2p:
            bias = bias + F.c2p_scores(q, pk, rel, S, ops=ops) / scale
        if p2c:
            bias = bias + F.p2c_scores(k, pq, rel, S, ops=ops) / scale
        scores = _add_right(scores, bias)
    probs = ops.softmax(F.masked_fill(scores, mask), axis=-1)
    return merge_heads(ops.matmul(probs, V)), probs


def _add_right(scores, bias):
    """scores + bias on the last T key columns (prefix keys get no relative term, as adapters pads with zeros)."""
    if isinstance(bias, int):
        return scores
    T = bias.shape[-1]
    out = scores.copy()
    out[..., scores.shape[-1] - T:] += bias
    return out


def _mix_heads(s, w, ops):
    """Talking heads: s'[b, :, i, j] = W s[b, :, i, j] (a linear over the head axis). Spec: DEB-3."""
    return np.moveaxis(ops.linear(np.moveaxis(s, 1, -1), w), -1, 1)


def layer(x, mask, lp, hk, cfg: Config, rel, rel_emb, ops, probs=None):
    """Post-LN DeBERTa layer with hooks (BERT's placement). Spec: DEB-3, ENC-2.  x: (B, T, D)"""
    attend = attention_v2 if cfg.is_v2 else attention_v1
    ctx, p = attend(x, mask, lp, hk, cfg, rel, rel_emb, ops)
    if probs is not None:
        probs.append(p)
    a = ops.linear(ctx, *lp.linear("attention.output.dense"))
    ln1 = lambda t: ops.layer_norm(t, *lp.linear("attention.output.LayerNorm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, ln1)
    f = ops.activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, x, *lp.linear("intermediate.dense")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("output.dense"))
    ln2 = lambda t: ops.layer_norm(t, *lp.linear("output.LayerNorm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, ln2)
    return hk.layer_output(x)


def relative_inputs(p, cfg: Config, T: int, ops):
    """The relative positions (T, T) and the relative embedding table (after norm_rel_ebd). Spec: DEB-2."""
    if not cfg.relative_attention:
        return None, None
    rel = F.relative_positions(T, T, bucket_size=cfg.position_buckets, max_position=cfg.max_relative_positions)
    emb = p[REL]
    if "layer_norm" in cfg.norm_rel_ebd:
        emb = ops.layer_norm(emb, p["encoder.LayerNorm.weight"], p["encoder.LayerNorm.bias"], cfg.layer_norm_eps)
    return rel, emb


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """Embeddings, embedding hook, layers (v2: ConvLayer after the first). Spec: DEB-1 .. DEB-5.
    -> {last_hidden_state, hidden_states, attentions}"""
    shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if attention_mask is None:
        attention_mask = np.ones(shape, np.int64)
    x = embeddings(p, cfg, input_ids, token_type_ids, position_ids, attention_mask, ops,
                   inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    T0 = x.shape[1]
    x, _ = hooks.embeddings(ENCODER, x, attention_mask)
    P = x.shape[1] - T0                                                 # prompt tuning's prompt length
    # COMPAT(adapters): the prompt is prepended to the (B, 1, T, T) mask, not to the 2-D one (DEB-4)
    mask = F.prompt_pairwise_mask(F.pairwise_mask(attention_mask, dtype), P)
    if P and cfg.conv_kernel_size:
        raise ValueError(f"model_type={cfg.model_type!r} with conv_kernel_size={cfg.conv_kernel_size}: prompt tuning "
                         f"is not supported (adapters 1.3.0's ConvLayer masks with the {T0}-token input mask and "
                         f"fails on the {T0 + P} positions); deactivate the prompt-tuning adapter.")
    rel, rel_emb = relative_inputs(p, cfg, x.shape[1], ops)
    emb = x
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    stack = STACK_V2 if cfg.is_v2 else STACK_V1
    for i, lp in enumerate(layer_views(p, stack, cfg.num_hidden_layers)):
        x = layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, rel, rel_emb, ops, probs)
        if i == 0 and cfg.conv_kernel_size:
            ln = lambda t: ops.layer_norm(t, p["encoder.conv.LayerNorm.weight"],  # noqa: E731
                                          p["encoder.conv.LayerNorm.bias"], cfg.layer_norm_eps)
            x = F.conv_layer(emb, x, attention_mask, p["encoder.conv.conv.weight"], p["encoder.conv.conv.bias"], ln,
                             groups=cfg.conv_groups, act=ops.activation(cfg.conv_act), ops=ops)
        if states is not None:
            states.append(x)
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# adapters 1.3.0 state-dict paths (adapters/models/deberta*/mixin_deberta*.py; BERT's layer mixins).
_COMMON = dict(layers="encoder.layer.{i}", num_layers="num_hidden_layers", embeddings="embeddings",
               attn_o="attention.output.dense", intermediate="intermediate.dense", output="output.dense",
               mh_adapter="attention.output", output_adapter="output", self_prefix="attention.self.prefix_tuning")
STACK_V1 = LayerStack(ENCODER, attn_qkv="attention.self.in_proj", **_COMMON)
STACK_V2 = LayerStack(ENCODER, attn_q="attention.self.query_proj", attn_k="attention.self.key_proj",
                      attn_v="attention.self.value_proj", **_COMMON)
_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds"})

DEBERTA = Architecture(
    name="deberta", model_types=("deberta",), config_class=Config, stacks=(STACK_V1,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"deberta": "DebertaModel"},
    base_model_prefix={"deberta": "deberta"}, inputs=_INPUTS, embed_key="embeddings.word_embeddings.weight",
    notes={"lora": "fused in_proj: LoRA / IA³ only, one adapter at a time (adapters' LoRAMergedLinear); "
                   "DoRA / VeRA refused"})
DEBERTA_V2 = Architecture(
    name="deberta-v2", model_types=("deberta-v2",), config_class=Config, stacks=(STACK_V2,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"deberta-v2": "DebertaV2Model"},
    base_model_prefix={"deberta-v2": "deberta"}, inputs=_INPUTS, embed_key="embeddings.word_embeddings.weight")
ARCHITECTURES = (DEBERTA, DEBERTA_V2)
