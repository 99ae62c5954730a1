"""GPT-2 decoder, explicit NumPy forward with adapter hook points. Spec: DEC-1, DEC-4, DEC-5.

Checkpoints store the Conv1D weights (in, out); they are transposed once at load (``normalize_keys``) so every
linear weight in ``params`` is (out, in) like the other models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..functional.activations import activation_backward, get_activation
from ..functional.backward import attention_backward, attention_forward, layer_norm_backward, layer_norm_forward, \
    linear_backward
from ..hooks import Hook
from . import decoder_common as dc
from .base import ALL_METHODS, Architecture, LayerStack, Training, attention_probs, layer_views

MODEL_TYPES = ("gpt2",)
DECODER = "decoder"
# Conv1D weights, stored (in, out) in checkpoints.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight",
                  "crossattention.c_attn.weight", "crossattention.q_attn.weight", "crossattention.c_proj.weight")


@dataclass(frozen=True)
class Config:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    layer_norm_eps: float
    hidden_act: str
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
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
        """config.json of GPT2Config (n_embd / n_layer / n_head ...; the hidden_size aliases are accepted too)."""
        g = lambda *names, default=None: next((d[n] for n in names if d.get(n) is not None), default)  # noqa: E731
        D, H = int(g("n_embd", "hidden_size", default=768)), int(g("n_head", "num_attention_heads", default=12))
        if D % H:
            raise ShapeError(f"config.json: n_embd={D} is not a multiple of n_head={H}.")
        act = g("activation_function", default="gelu_new")
        get_activation(act)  # unknown names raise here, not mid-forward
        return cls("gpt2", D, int(g("n_layer", "num_hidden_layers", default=12)), H,
                   int(g("n_inner", "intermediate_size", default=4 * D)), int(d.get("vocab_size", 50257)),
                   int(g("n_positions", "max_position_embeddings", default=1024)),
                   float(d.get("layer_norm_epsilon", 1e-5)), act,
                   bool(d.get("scale_attn_weights", True)), bool(d.get("scale_attn_by_inverse_layer_idx", False)),
                   bool(d.get("tie_word_embeddings", True)), d.get("pad_token_id"), d.get("eos_token_id"))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip 'transformer.', drop heads and attention buffers, keep 'lm_head.weight', transpose Conv1D. Spec: DEC-1."""
    prefix = ARCHITECTURE.base_model_prefix[model_type] + "."
    out = {}
    for k, v in weights.items():
        if k.startswith(prefix):
            k = k[len(prefix):]
        elif k != "lm_head.weight" and not k.startswith(("wte.", "wpe.", "h.", "ln_f.")):
            continue                                        # other heads (score., multiple_choice_head. ...)
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue                                        # causal-mask buffers of old checkpoints
        if k.split(".", 2)[-1] in CONV1D_WEIGHTS and k.startswith("h."):
            if np.ndim(v) != 2:
                raise ShapeError(f"GPT-2 checkpoint: Conv1D weight {k!r} has shape {np.shape(v)}; expected 2-D.")
            v = np.ascontiguousarray(np.asarray(v).T)       # (in, out) -> (out, in), once
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    """(out, in) shapes after the Conv1D transpose."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    s = {"wte.weight": (cfg.vocab_size, D), "wpe.weight": (cfg.max_position_embeddings, D),
         "ln_f.weight": (D,), "ln_f.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"h.{i}."
        for name, (o, n) in {"attn.c_attn": (3 * D, D), "attn.c_proj": (D, D), "mlp.c_fc": (F, D),
                             "mlp.c_proj": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("ln_1", "ln_2"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def block(i, x, mask, lp, hk, cfg: Config, ops, cache, probs=None):
    """Pre-LN GPT-2 block with hooks. Spec: DEC-1.  x: (B, T, D); mask: (B, 1, T, Tk) additive (causal baked in)."""
    N, Dh, D = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    h = ops.layer_norm(x, *lp.linear("ln_1"), cfg.layer_norm_eps)
    qkv = hk.linear(Hook.ATTN_QKV, h, *lp.linear("attn.c_attn"))           # (B, T, 3D)
    q, k, v = (dc.split_heads(qkv[..., j * D:(j + 1) * D], N, Dh) for j in range(3))
    if cache is not None:
        k, v = cache.update(i, k, v)
    K, V, m = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)
    c = (1.0 if cfg.scale_attn_weights else float(np.sqrt(Dh))) / (i + 1 if cfg.scale_attn_by_inverse_layer_idx else 1)
    if c != 1.0:
        q = q * q.dtype.type(c)                                             # scores = c · q kᵀ / √Dh
    if probs is not None:
        probs.append(attention_probs(q, K, m, ops))                         # (B, N, T, Tk)
    ctx = ops.attention(q, K, V, m)                                          # (B, N, T, Dh)
    a = ops.linear(dc.merge_heads(ctx), *lp.linear("attn.c_proj"))
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)
    h2 = ops.layer_norm(x, *lp.linear("ln_2"), cfg.layer_norm_eps)
    f = get_activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, h2, *lp.linear("mlp.c_fc")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("mlp.c_proj"))
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)
    return hk.layer_output(x)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, past_key_values=None, inputs_embeds=None, output_hidden_states=False,
            output_attentions=False):
    """wte + wpe (+ wte[token types]), hooks, blocks, ln_f. Spec: DEC-1, DEC-4.

    attention_mask: (B, past + T); position_ids default past .. past+T-1 (transformers' GPT2Model default)."""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    past = past_key_values.length if past_key_values is not None else 0
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, past)
    if position_ids.size and position_ids.max() >= cfg.max_position_embeddings:
        raise ShapeError(f"GPT-2: position {int(position_ids.max())} is beyond n_positions="
                         f"{cfg.max_position_embeddings}; use at most {cfg.max_position_embeddings} tokens.")
    words = ops.take(p["wte.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = words + ops.take(p["wpe.weight"], position_ids)
    if token_type_ids is not None:
        x = x + ops.take(p["wte.weight"], token_type_ids)                   # GPT-2 embeds token types with wte
    x = x.astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones((B, past + T), np.int64)
    x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype, disallowed=-np.inf)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = block(i, x, mask, lp, hooks.layer(DECODER, i), cfg, ops, past_key_values, probs)
        if states is not None:
            states.append(x)
    x = ops.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg.layer_norm_eps)
    if states is not None:
        states[-1] = x                                                      # transformers: the last entry is ln_f's
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# ---- training: the same block with caches, and its explicit backward. Spec: TRAIN-DEC (spec/training.md) ----------
def block_train(i, x, mask, lp, hk, cfg: Config, ops):
    """DEC-1 block through training hooks. Spec: TRAIN-DEC.  -> (B, T, D), cache"""
    N, Dh, D, eps = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size, cfg.layer_norm_eps
    h, ln1 = layer_norm_forward(x, *lp.linear("ln_1"), eps, ops=ops)
    qkv = hk.linear(Hook.ATTN_QKV, h, *lp.linear("attn.c_attn"))           # (B, T, 3D)
    q, k, v = (dc.split_heads(qkv[..., j * D:(j + 1) * D], N, Dh) for j in range(3))
    K, V, m = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)
    c = (1.0 if cfg.scale_attn_weights else float(np.sqrt(Dh))) / (i + 1 if cfg.scale_attn_by_inverse_layer_idx else 1)
    ctx, attn = attention_forward(q * q.dtype.type(c) if c != 1.0 else q, K, V, m, ops=ops,
                                  dropout=hk.attention_dropout("attn_pdrop"))
    a, m1 = hk.dropout(ops.linear(dc.merge_heads(ctx), *lp.linear("attn.c_proj")), "resid_pdrop")
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, None)
    h2, ln2 = layer_norm_forward(x, *lp.linear("ln_2"), eps, ops=ops)
    i0 = hk.linear(Hook.INTERMEDIATE, h2, *lp.linear("mlp.c_fc"))
    f, m2 = hk.dropout(hk.linear(Hook.OUTPUT, get_activation(cfg.hidden_act)(i0), *lp.linear("mlp.c_proj")),
                       "resid_pdrop")
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, None)
    return hk.layer_output(x), (ln1, attn, c, ln2, i0, m1, m2)


def block_backward(dy, cache, lp, hk, cfg: Config):
    """Reverse of block_train. Spec: TRAIN-DEC (GRAD-LN, GRAD-ATTN, GRAD-ACT, GRAD-LORA via the fused qkv hook)."""
    ln1, attn, c, ln2, i0, m1, m2 = cache
    N = cfg.num_attention_heads
    dy = hk.layer_output_backward(dy)
    df, dx = hk.residual_block_backward(Hook.OUTPUT_ADAPTER, dy)
    df = df if m2 is None else df * m2                                   # GRAD-DROPOUT
    di = activation_backward(cfg.hidden_act, i0, hk.linear_backward(Hook.OUTPUT, df))
    dx = dx + layer_norm_backward(hk.linear_backward(Hook.INTERMEDIATE, di), ln2, lp["ln_2.weight"],
                                  need_params=False)[0]
    da, dx = hk.residual_block_backward(Hook.MH_ADAPTER, dx)
    da = da if m1 is None else da * m1
    dctx = linear_backward(da, None, lp["attn.c_proj.weight"], need_weight=False)[0]
    dq, dK, dV = attention_backward(dc.split_heads(dctx, N, cfg.head_dim), attn)
    dk, dv, dh_gate = hk.prefix_backward(Hook.SELF_PREFIX, dK, dV)       # gated prefixes read h = LN₁(x)
    dqkv = np.concatenate([dc.merge_heads(dq * dq.dtype.type(c)), dc.merge_heads(dk), dc.merge_heads(dv)], -1)
    dh = hk.linear_backward(Hook.ATTN_QKV, dqkv) + (0.0 if dh_gate is None else dh_gate)
    return dx + layer_norm_backward(dh, ln1, lp["ln_1.weight"], need_params=False)[0]


def train_forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None):
    """DEC-1 forward for training (frozen embeddings, no KV cache). Spec: TRAIN-DEC.  -> fields, cache"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, 0)
    words = ops.take(p["wte.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = words + ops.take(p["wpe.weight"], position_ids)
    if token_type_ids is not None:
        x = x + ops.take(p["wte.weight"], token_type_ids)
    x, _ = hooks.dropout(x.astype(dtype, copy=False), "embd_pdrop")   # GPT2Model.drop (adapters hook after it)
    if attention_mask is None:
        attention_mask = np.ones((B, T), np.int64)
    x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype, disallowed=-np.inf)
    caches = []
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        hk = hooks.layer(DECODER, i)
        x, c = block_train(i, x, mask, lp, hk, cfg, ops)
        caches.append((hk, c))
    x, lnf = layer_norm_forward(x, p["ln_f.weight"], p["ln_f.bias"], cfg.layer_norm_eps, ops=ops)
    return {"last_hidden_state": x}, (caches, lnf)


def backward(d_hidden, cache, p, cfg: Config, hooks, ops):
    """ln_f, then the blocks in reverse; embeddings frozen. Spec: TRAIN-DEC."""
    caches, lnf = cache
    dx = layer_norm_backward(d_hidden, lnf, p["ln_f.weight"], need_params=False)[0]
    for lp, (hk, c) in reversed(list(zip(layer_views(p, STACK, cfg.num_hidden_layers), caches))):
        dx = block_backward(dx, c, lp, hk, cfg)
    return hooks.embeddings_backward(DECODER, dx)


STACK = LayerStack(DECODER, layers="h.{i}", num_layers="num_hidden_layers", embeddings="wte",
                   attn_qkv="attn.c_attn", attn_o="attn.c_proj", intermediate="mlp.c_fc", output="mlp.c_proj",
                   mh_adapter="attention_adapters", output_adapter="output_adapters", self_prefix="attn.prefix_tuning")

ARCHITECTURE = Architecture(
    name="gpt2", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"gpt2": "GPT2Model"},
    base_model_prefix={"gpt2": "transformer"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "past_key_values",
                      "inputs_embeds"}),
    methods=ALL_METHODS - {"prompt_tuning"}, embed_key="wte.weight", is_causal=True,
    training=Training(train_forward, backward))
