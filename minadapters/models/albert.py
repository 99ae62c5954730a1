"""ALBERT encoder: factorised embeddings (E) mapped to D, layer groups whose one set of weights is used by several
layers, pooler. Spec: FAM-AL-1.

COMPAT(adapters): adapters 1.3.0 attaches its adapters to the shared AlbertLayer modules (``iter_layers`` walks the
modules of ``albert_layer_groups``), so an adapter is shared exactly as the base weights are: the stack's layers are
the groups, and the forward calls group ``g = i // (L / G)``'s hooks for layer i. Only ``inner_group_num = 1`` (every
released checkpoint) is supported. Its attention block calls ``attention_adapters(x, a, LayerNorm)``: the
bottleneck's input is the layer input x and its residual the attention output a (BERT passes them the other way).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..functional.activations import get_activation
from ..hooks import Hook
from .base import (ALL_METHODS, Architecture, LayerStack, attention_probs, check_encoder_config, config_int,
                   layer_views)
from .bert import extended_mask, merge_heads, split_heads
from .electra import embeddings as electra_embeddings      # same embedding equations (FAM-EL-1)

MODEL_TYPES = ("albert",)
ENCODER = "encoder"
MAP_IN = "encoder.embedding_hidden_mapping_in"


@dataclass(frozen=True)
class Config:
    """AlbertConfig as the forward reads it. Spec: FAM-AL-1."""
    model_type: str
    hidden_size: int
    embedding_size: int
    num_hidden_layers: int
    num_hidden_groups: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int

    def group_of(self, i: int) -> int:
        """transformers: layer i uses group int(i / (L / G))."""
        return int(i / (self.num_hidden_layers / self.num_hidden_groups))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of AlbertConfig (transformers' defaults for missing keys). Spec: FAM-AL-1."""
        integer = lambda key, default, minimum=1: config_int(d, key, default, minimum)  # noqa: E731
        D, H = integer("hidden_size", 4096), integer("num_attention_heads", 64)
        check_encoder_config(d, D, H)
        L, G = integer("num_hidden_layers", 12), integer("num_hidden_groups", 1)
        if G > L:
            raise ConfigError(f"config.json: num_hidden_groups={G} exceeds num_hidden_layers={L}.")
        if integer("inner_group_num", 1) != 1:
            raise ConfigError(f"config.json: inner_group_num={d['inner_group_num']!r} is not supported; only 1.")
        act = d.get("hidden_act", "gelu_new")
        get_activation(act)
        return cls("albert", D, integer("embedding_size", 128), L, G, H, integer("intermediate_size", 16384),
                   integer("vocab_size", 30000), integer("max_position_embeddings", 512),
                   integer("type_vocab_size", 2), float(d.get("layer_norm_eps", 1e-12)), act,
                   integer("pad_token_id", 0, minimum=0))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task model's 'albert.' prefix; drop heads (predictions, sop_classifier ...). Spec: FAM-AL-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("albert."):
            k = k[len("albert."):]
        elif not k.startswith(("embeddings.", "encoder.", "pooler.")):
            continue
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, E, F = cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, E),
         "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, E),
         "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, E),
         "embeddings.LayerNorm.weight": (E,), "embeddings.LayerNorm.bias": (E,),
         MAP_IN + ".weight": (D, E), MAP_IN + ".bias": (D,)}
    for g in range(cfg.num_hidden_groups):
        p = STACK.params_path(g) + "."
        for name, (o, n) in {"attention.query": (D, D), "attention.key": (D, D), "attention.value": (D, D),
                             "attention.dense": (D, D), "ffn": (F, D), "ffn_output": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("attention.LayerNorm", "full_layer_layer_norm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def albert_layer(x, mask, lp, hk, cfg: Config, ops, probs=None):
    """ALBERT layer (post-LN, BERT's equations) with hooks. Spec: FAM-AL-1.  x: (B, T, D)."""
    n = cfg.num_attention_heads
    q = split_heads(hk.linear(Hook.ATTN_Q, x, *lp.linear("attention.query")), n)
    k = hk.linear(Hook.ATTN_K, x, *lp.linear("attention.key"))
    v = hk.linear(Hook.ATTN_V, x, *lp.linear("attention.value"))
    K, V, mask = hk.prefix(Hook.SELF_PREFIX, split_heads(k, n), split_heads(v, n), mask, x)
    if probs is not None:
        probs.append(attention_probs(q, K, mask, ops))
    a = ops.linear(merge_heads(ops.attention(q, K, V, mask)), *lp.linear("attention.dense"))
    ln1 = lambda t: ops.layer_norm(t, *lp.linear("attention.LayerNorm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(Hook.MH_ADAPTER, x, a, ln1)      # COMPAT(adapters): input x as h, attention a as residual
    f = ops.activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, x, *lp.linear("ffn")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("ffn_output"))
    ln2 = lambda t: ops.layer_norm(t, *lp.linear("full_layer_layer_norm"), cfg.layer_norm_eps)  # noqa: E731
    x = hk.residual_block(Hook.OUTPUT_ADAPTER, f, x, ln2)
    return hk.layer_output(x)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """Embeddings (E), embedding hook, E -> D mapping, layers on shared group weights, pooler. Spec: FAM-AL-1."""
    x = electra_embeddings(p, cfg, input_ids, token_type_ids, position_ids, ops,
                   inputs_embeds=inputs_embeds).astype(dtype, copy=False)          # (B, T, E)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    x = ops.linear(x, p[MAP_IN + ".weight"], p[MAP_IN + ".bias"])                 # (B, T, D)
    mask = extended_mask(attention_mask, dtype)
    groups = layer_views(p, STACK, cfg.num_hidden_groups)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i in range(cfg.num_hidden_layers):
        g = cfg.group_of(i)
        x = albert_layer(x, mask, groups[g], hooks.layer(ENCODER, g), cfg, ops, probs)
        if states is not None:
            states.append(x)
    pooled = None
    if "pooler.weight" in p:
        pooled = np.tanh(ops.linear(x[:, 0], p["pooler.weight"], p["pooler.bias"]))
    return {"last_hidden_state": x, "pooler_output": pooled,
            "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


# adapters 1.3.0 paths: one method layer per shared module (group), num_layers = the number of groups.
STACK = LayerStack(ENCODER, layers="encoder.albert_layer_groups.{i}.albert_layers.0",
                   num_layers="num_hidden_groups", embeddings="embeddings",
                   attn_q="attention.query", attn_k="attention.key", attn_v="attention.value",
                   attn_o="attention.dense", intermediate="ffn", output="ffn_output",
                   mh_adapter="attention.attention_adapters", output_adapter="output_adapters",
                   self_prefix="attention.prefix_tuning")

ARCHITECTURE = Architecture(
    name="albert", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"albert": "AlbertModel"},
    base_model_prefix={"albert": "albert"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds"}),
    embed_key="embeddings.word_embeddings.weight", pooler=("pooler.weight", "pooler.bias"), methods=ALL_METHODS)
