"""ELECTRA encoder: BERT's layers (ENC-2) under adapters 1.3.0's BERT placement, factorised embeddings with the
``embeddings_project`` linear when embedding_size differs from hidden_size, no pooler. Spec: FAM-EL-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..functional.activations import get_activation
from .base import ALL_METHODS, Architecture, check_encoder_config, config_int, layer_views
from .bert import STACK as BERT_STACK
from .bert import encoder_layer, extended_mask

MODEL_TYPES = ("electra",)
ENCODER = BERT_STACK.name
PROJECT = "embeddings_project"


@dataclass(frozen=True)
class Config:
    """ElectraConfig as the forward reads it. Spec: FAM-EL-1."""
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

    @property
    def has_projection(self) -> bool:
        return self.embedding_size != self.hidden_size

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of ElectraConfig (transformers' defaults for missing keys). Spec: FAM-EL-1."""
        integer = lambda key, default, minimum=1: config_int(d, key, default, minimum)  # noqa: E731
        D, H = integer("hidden_size", 256), integer("num_attention_heads", 4)
        check_encoder_config(d, D, H)
        act = d.get("hidden_act", "gelu")
        get_activation(act)
        return cls("electra", D, integer("embedding_size", 128), integer("num_hidden_layers", 12), H,
                   integer("intermediate_size", 1024), integer("vocab_size", 30522),
                   integer("max_position_embeddings", 512), integer("type_vocab_size", 2),
                   float(d.get("layer_norm_eps", 1e-12)), act, integer("pad_token_id", 0, minimum=0))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip a task model's 'electra.' prefix; drop heads (discriminator_predictions, classifier ...).
    Spec: FAM-EL-1."""
    out = {}
    for k, v in weights.items():
        if k.startswith("electra."):
            k = k[len("electra."):]
        elif not k.startswith(("embeddings.", "encoder.", PROJECT + ".")):
            continue
        out[k] = v
    return out


def expected_shapes(cfg: Config) -> dict:
    D, E, F = cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size
    s = {"embeddings.word_embeddings.weight": (cfg.vocab_size, E),
         "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, E),
         "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, E),
         "embeddings.LayerNorm.weight": (E,), "embeddings.LayerNorm.bias": (E,)}
    if cfg.has_projection:
        s[PROJECT + ".weight"], s[PROJECT + ".bias"] = (D, E), (D,)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                             "attention.self.value": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            s[p + name + ".weight"], s[p + name + ".bias"] = (o, n), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (D,), (D,)
    return s


def embeddings(p, cfg: Config, input_ids, token_type_ids, positions, ops, *, inputs_embeds=None):
    """LN(word + position + token type) in embedding_size E. Spec: FAM-EL-1.  (B, T) -> (B, T, E)"""
    B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
    if T > cfg.max_position_embeddings:
        raise ShapeError(f"input_ids has {T} tokens; this model's position table allows at most "
                         f"{cfg.max_position_embeddings}.")
    if token_type_ids is None:
        token_type_ids = np.zeros((B, T), np.int64)
    if positions is None:
        positions = np.broadcast_to(np.arange(T), (B, T))
    words = ops.take(p["embeddings.word_embeddings.weight"], input_ids) if inputs_embeds is None else inputs_embeds
    x = (words + ops.take(p["embeddings.token_type_embeddings.weight"], token_type_ids)
         + ops.take(p["embeddings.position_embeddings.weight"], positions))
    return ops.layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """Embeddings, embedding hook, projection E -> D, BERT layers. Spec: FAM-EL-1, ENC-2.

    COMPAT(adapters): the embedding hook (invertible adapters, prompt tuning) sits on the embeddings module's
    output, before ``embeddings_project``, as adapters registers it on ``model.embeddings``."""
    x = embeddings(p, cfg, input_ids, token_type_ids, position_ids, ops,
                   inputs_embeds=inputs_embeds).astype(dtype, copy=False)          # (B, T, E)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    if cfg.has_projection:
        x = ops.linear(x, p[PROJECT + ".weight"], p[PROJECT + ".bias"])            # (B, T, D)
    mask = extended_mask(attention_mask, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, BERT_STACK, cfg.num_hidden_layers)):
        x = encoder_layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs)
        if states is not None:
            states.append(x)
    return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


ARCHITECTURE = Architecture(
    name="electra", model_types=MODEL_TYPES, config_class=Config, stacks=(BERT_STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"electra": "ElectraModel"},
    base_model_prefix={"electra": "electra"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds"}),
    methods=ALL_METHODS, embed_key="embeddings.word_embeddings.weight")
