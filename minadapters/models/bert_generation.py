"""BertGeneration encoder: word + position embeddings (no token types), BERT's layers (ENC-2) under adapters 1.3.0's
BERT placement, no pooler; causal self-attention when ``is_decoder``. Spec: FAM-BG-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from . import decoder_common as dc
from .base import ALL_METHODS, Architecture, check_encoder_config, config_int, layer_views
from .bert import STACK as BERT_STACK
from .bert import encoder_layer, extended_mask

MODEL_TYPES = ("bert-generation",)
ENCODER = BERT_STACK.name


@dataclass(frozen=True)
class Config:
    """BertGenerationConfig as the forward reads it. Spec: FAM-BG-1."""
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    layer_norm_eps: float
    hidden_act: str
    is_decoder: bool
    pad_token_id: int

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of BertGenerationConfig (transformers' defaults for missing keys). Spec: FAM-BG-1."""
        integer = lambda key, default, minimum=1: config_int(d, key, default, minimum)  # noqa: E731
        D, H = integer("hidden_size", 1024), integer("num_attention_heads", 16)
        check_encoder_config(d, D, H)
        act = d.get("hidden_act", "gelu")
        get_activation(act)
        dec = d.get("is_decoder", False)
        if not isinstance(dec, bool):
            raise ConfigError(f"config.json: is_decoder={dec!r} must be true or false.")
        return cls("bert-generation", D, integer("num_hidden_layers", 24), H, integer("intermediate_size", 4096),
                   integer("vocab_size", 50358), integer("max_position_embeddings", 512),
                   float(d.get("layer_norm_eps", 1e-12)), act, dec, integer("pad_token_id", 0, minimum=0))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a BertGenerationDecoder's 'bert.' prefix; drop its lm_head. Spec: FAM-BG-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("bert."):
            k = k[len("bert."):]
        elif not k.startswith(("embeddings.", "encoder.")):
            continue
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, F = cfg.hidden_size, cfg.intermediate_size
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, D),
         "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, D),
         "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                             "attention.self.value": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def embeddings(p, cfg: Config, input_ids, positions, ops, *, inputs_embeds=None):
    """LN(word + position), positions 0..T-1, no token types. Spec: FAM-BG-1.  (B, T) -> (B, T, D)"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if T > cfg.max_position_embeddings:
        raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most "
                         f"{cfg.max_position_embeddings}.")
    if positions is None:
        positions = np.broadcast_to(np.arange(T), (B, T))
    words = ops.take(p["embeddings.word_embeddings.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = words + ops.take(p["embeddings.position_embeddings.weight"], positions)
    return ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, position_ids=None,
            inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """Embeddings, hooks, BERT layers (causal mask when is_decoder). Spec: FAM-BG-1, ENC-2, ENC-3, DEC-4."""
    x = embeddings(p, cfg, input_ids, position_ids, ops, inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    if cfg.is_decoder:
        mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype)            # (B, 1, T, T)
    else:
        mask = extended_mask(attention_mask, dtype)                                 # (B, 1, 1, T)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, BERT_STACK, cfg.num_hidden_layers)):
        x = encoder_layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs)
        if states is not None:
            states.append(x)
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


ARCHITECTURE = Architecture(
    name="bert-generation", model_types=MODEL_TYPES, config_class=Config, stacks=(BERT_STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes,
    model_class={"bert-generation": "BertGenerationEncoder"}, base_model_prefix={"bert-generation": "bert"},
    inputs=frozenset({"input_ids", "attention_mask", "position_ids", "inputs_embeds"}),
    methods=ALL_METHODS, embed_key="embeddings.word_embeddings.weight")
