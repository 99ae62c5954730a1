"""DistilBERT encoder, explicit NumPy forward with adapter hook points. Spec: FAM-DB-1, FAM-DB-2.

No token types, no pooler; a position table (learned, or sinusoidal as transformers initialises it when
``sinusoidal_pos_embds``); attention projections
named ``q_lin/k_lin/v_lin/out_lin``. adapters 1.3.0 places its adapters like BERT's: LoRA on the attention's
q/k/v_lin and on ``ffn.lin1`` (intermediate) / ``ffn.lin2`` (output), bottlenecks ``attention_adapters`` /
``output_adapters`` of the TransformerBlock, prefix tuning in ``attention.prefix_tuning``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..hooks import Hook
from .base import ALL_METHODS, Architecture, LayerStack, attention_probs, layer_views
from .bert import extended_mask, merge_heads, split_heads

MODEL_TYPES = ("distilbert",)
ENCODER = "encoder"
LN_EPS = 1e-12                       # transformers hard-codes it for every DistilBERT LayerNorm
POSITIONS = "embeddings.position_embeddings.weight"


def _int(d, key, default=None, *, minimum=1):
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"config.json: {key}={v!r} must be an integer >= {minimum}.")
    return v


@dataclass(frozen=True)
class Config:
    """DistilBertConfig under the names the model reads (hidden_size = dim, ...). Spec: FAM-DB-1."""
    model_type: str
    hidden_size: int                  # dim
    num_hidden_layers: int            # n_layers
    num_attention_heads: int          # n_heads
    intermediate_size: int            # hidden_dim
    vocab_size: int
    max_position_embeddings: int
    sinusoidal_pos_embds: bool
    hidden_act: str                   # activation
    pad_token_id: int

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of DistilBertConfig (transformers' defaults for missing keys). Spec: FAM-DB-1."""
        D, H = _int(d, "dim", 768), _int(d, "n_heads", 12)
        if D % H:
            raise ShapeError(f"config.json: dim={D} is not a multiple of n_heads={H}.")
        act = d.get("activation", "gelu")
        if act not in ("gelu", "relu"):        # DistilBertConfig accepts only these two
            raise ConfigError(f"config.json: activation={act!r} is not supported by DistilBERT; expected 'gelu' "
                              f"or 'relu'.")
        get_activation(act)
        sin = d.get("sinusoidal_pos_embds", False)
        if not isinstance(sin, bool):
            raise ConfigError(f"config.json: sinusoidal_pos_embds={sin!r} must be true or false.")
        return cls("distilbert", D, _int(d, "n_layers", 6), H, _int(d, "hidden_dim", 3072),
                   _int(d, "vocab_size", 30522), _int(d, "max_position_embeddings", 512), sin, act,
                   _int(d, "pad_token_id", 0, minimum=0))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task model's 'distilbert.' prefix; drop heads (vocab_transform, classifier, qa_outputs ...).
    Spec: FAM-DB-1."""
    prefix = ARCHITECTURE.base_model_prefix[model_type] + "."
    out = {}
    for k, v in weights.items():
        if k.startswith(prefix):
            k = k[len(prefix):]
        elif not k.startswith(("embeddings.", "transformer.")):
            continue
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, F = cfg.hidden_size, cfg.intermediate_size
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, D),
         "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    # sinusoidal_pos_embds only changes how transformers initialises this table; checkpoints always carry it
    s[POSITIONS] = (cfg.max_position_embeddings, D)
    for i in range(cfg.num_hidden_layers):
        p = f"transformer.layer.{i}."
        for name, (o, n) in {"attention.q_lin": (D, D), "attention.k_lin": (D, D), "attention.v_lin": (D, D),
                             "attention.out_lin": (D, D), "ffn.lin1": (F, D), "ffn.lin2": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("sa_layer_norm", "output_layer_norm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def embeddings(p, cfg: Config, input_ids, ops, *, inputs_embeds=None):
    """LN(word + position), positions 0..T-1, no token types. Spec: FAM-DB-1.  (B, T) int -> (B, T, D)"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if T > cfg.max_position_embeddings:
        raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most "
                         f"{cfg.max_position_embeddings}.")
    words = ops.take(p["embeddings.word_embeddings.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = words + p[POSITIONS][:T][None]                                 # positions 0..T-1
    return ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], LN_EPS)


def transformer_block(x, mask, lp, hk, cfg: Config, ops, probs=None):
    """Post-LN DistilBERT block with hooks. Spec: FAM-DB-2 (= ENC-2 with DistilBERT's module names).
    x: (B, T, D); mask: (B, 1, 1, Tk) additive; ``probs``: a list that collects the attention weights."""
    n = cfg.num_attention_heads
    q = hk.linear(Hook.ATTN_Q, x, *lp.linear("attention.q_lin"))
    k = hk.linear(Hook.ATTN_K, x, *lp.linear("attention.k_lin"))
    v = hk.linear(Hook.ATTN_V, x, *lp.linear("attention.v_lin"))
    K, V, mask = hk.prefix(Hook.SELF_PREFIX, split_heads(k, n), split_heads(v, n), mask, x)   # Tk = T + P
    q = split_heads(q, n)
    if probs is not None:
        probs.append(attention_probs(q, K, mask, ops))               # (B, N, T, Tk)
    ctx = ops.attention(q, K, V, mask)                                # (B, N, T, Dh)
    a = ops.linear(merge_heads(ctx), *lp.linear("attention.out_lin"))
    ln1 = lambda t: ops.layer_norm(t, *lp.linear("sa_layer_norm"), LN_EPS)  # noqa: E731
    x = hk.residual_block(Hook.MH_ADAPTER, a, x, ln1)
    f = ops.activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, x, *lp.linear("ffn.lin1")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("ffn.lin2"))
    ln2 = lambda t: ops.layer_norm(t, *lp.linear("output_layer_norm"), LN_EPS)  # noqa: E731
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, ln2)
    return hk.layer_output(x)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, inputs_embeds=None,
            output_hidden_states=False, output_attentions=False):
    """Embeddings, hooks, blocks. Spec: FAM-DB-1, FAM-DB-2.  -> {last_hidden_state, hidden_states, attentions}"""
    x = embeddings(p, cfg, input_ids, ops, inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    mask = extended_mask(attention_mask, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = transformer_block(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs)
        if states is not None:
            states.append(x)
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# adapters 1.3.0 state-dict paths (adapters/models/distilbert/mixin_distilbert.py).
STACK = LayerStack(ENCODER, layers="transformer.layer.{i}", num_layers="num_hidden_layers", embeddings="embeddings",
                   attn_q="attention.q_lin", attn_k="attention.k_lin", attn_v="attention.v_lin",
                   attn_o="attention.out_lin", intermediate="ffn.lin1", output="ffn.lin2",
                   mh_adapter="attention_adapters", output_adapter="output_adapters",
                   self_prefix="attention.prefix_tuning", self_prefix_key="self")

ARCHITECTURE = Architecture(
    name="distilbert", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"distilbert": "DistilBertModel"},
    base_model_prefix={"distilbert": "distilbert"},
    inputs=frozenset({"input_ids", "attention_mask", "inputs_embeds"}),
    # COMPAT(adapters): adapters 1.3.0's DistilBERT block prefixes the 2-D attention mask along dims 2 and 3
    # (modeling_distilbert.py) and raises IndexError once a prompt is active: prompt tuning is refused here.
    methods=ALL_METHODS - {"prompt_tuning"}, embed_key="embeddings.word_embeddings.weight",
    notes={"prompt_tuning": "adapters 1.3.0 fails on DistilBERT with prompt tuning (2-D mask prefixed on dim 2)"})
