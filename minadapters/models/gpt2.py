"""GPT-2 decoder, explicit NumPy forward with adapter hook points. Spec: DEC-1, DEC-4, DEC-5.

Checkpoints store the Conv1D weights (in, out); they are transposed once at load (``normalize_keys``) so every
linear weight in ``params`` is (out, in) like the other models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..composition import adjust_tensors_for_parallel
from ..errors import ShapeError
from ..functional.activations import get_activation
from . import decoder_common as dc

MODEL_TYPES = ("gpt2",)
BASE_MODEL_PREFIX = {"gpt2": "transformer"}
MODEL_CLASS = {"gpt2": "GPT2Model"}

LAYER_PATH = "h.{i}"
LINEAR_PATHS = {"selfattn.qkv": "attn.c_attn", "intermediate": "mlp.c_fc", "output": "mlp.c_proj"}
BOTTLENECK_PATHS = {"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"}
PREFIX_PATHS = {"self_prefix": "attn.prefix_tuning"}
REFT_PATH = "reft_layer"
UNSUPPORTED_ARCHITECTURES = ("prompt_tuning",)
EMBED_KEY = "wte.weight"                      # tied LM head
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
    prefix = BASE_MODEL_PREFIX[model_type] + "."
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


def block(i, x, mask, p, cfg: Config, hk, ops, cache):
    """Pre-LN GPT-2 block with hooks. Spec: DEC-1.  x: (B, T, D); mask: (B, 1, T, Tk) additive (causal baked in)."""
    pre = f"h.{i}."
    w = lambda name: (p[pre + name + ".weight"], p[pre + name + ".bias"])  # noqa: E731
    (mask,) = adjust_tensors_for_parallel(x, mask)
    N, Dh, D = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    h = ops.layer_norm(x, *w("ln_1"), cfg.layer_norm_eps)
    qkv = hk.linear(i, "selfattn.qkv", h, *w("attn.c_attn"))                   # (B, T, 3D)
    q, k, v = (dc.split_heads(qkv[..., j * D:(j + 1) * D], N, Dh) for j in range(3))
    if cache is not None:
        k, v = cache.update(i, k, v)
    K, V, m = hk.prefix(i, "self_prefix", k, v, mask, h)
    (q,) = adjust_tensors_for_parallel(K, q)
    c = (1.0 if cfg.scale_attn_weights else float(np.sqrt(Dh))) / (i + 1 if cfg.scale_attn_by_inverse_layer_idx else 1)
    if c != 1.0:
        q = q * q.dtype.type(c)                                             # scores = c · q kᵀ / √Dh
    ctx = ops.attention(q, K, V, m)                                          # (B, N, T, Dh)
    a = ops.linear(dc.merge_heads(ctx), *w("attn.c_proj"))
    x = hk.residual_block(i, "mh_adapter", a, x, None)
    h2 = ops.layer_norm(x, *w("ln_2"), cfg.layer_norm_eps)
    f = get_activation(cfg.hidden_act)(hk.linear(i, "intermediate", h2, *w("mlp.c_fc")))
    f = hk.linear(i, "output", f, *w("mlp.c_proj"))
    x = hk.residual_block(i, "output_adapter", f, x, None)
    return hk.layer_output(i, x)


def forward(p, cfg: Config, input_ids, attention_mask, token_type_ids, hk, ops, dtype, *, position_ids=None,
            past_key_values=None):
    """wte + wpe (+ wte[token types]), hooks, blocks, ln_f. Spec: DEC-1, DEC-4.  Returns (last_hidden_state, None).

    attention_mask: (B, past + T); position_ids default past .. past+T-1 (transformers' GPT2Model default)."""
    B, T = input_ids.shape
    past = past_key_values.length if past_key_values is not None else 0
    if position_ids is None:
        position_ids = dc.default_position_ids(B, T, past)
    if position_ids.size and position_ids.max() >= cfg.max_position_embeddings:
        raise ShapeError(f"GPT-2: position {int(position_ids.max())} is beyond n_positions="
                         f"{cfg.max_position_embeddings}; use at most {cfg.max_position_embeddings} tokens.")
    x = p["wte.weight"][input_ids] + p["wpe.weight"][position_ids]
    if token_type_ids is not None:
        x = x + p["wte.weight"][token_type_ids]                             # GPT-2 embeds token types with wte
    x = x.astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones((B, past + T), np.int64)
    x, attention_mask = hk.embeddings(x, attention_mask)
    mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype, disallowed=-np.inf)
    for i in range(cfg.num_hidden_layers):
        x = block(i, x, mask, p, cfg, hk, ops, past_key_values)
    return ops.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], cfg.layer_norm_eps), None

