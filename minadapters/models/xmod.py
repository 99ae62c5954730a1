"""X-MOD encoder as adapters 1.3.0 wraps it: RoBERTa embeddings, BERT-named layers, X-MOD's built-in language adapters
removed. Spec: FAM-XM-1.

adapters 1.3.0 (src/adapters/models/xmod) deletes every layer's ``output.adapter_modules`` when it wraps the model,
refuses ``lang_ids``, and routes both sub-layers through its bottleneck layer: the attention block with no layer
norm (X-MOD applies ``attention.output.LayerNorm`` itself, after or before), the output block with
``output.adapter_layer_norm`` (config ``adapter_layer_norm``) or ``output.LayerNorm`` (``adapter_reuse_layer_norm``),
after which a post-norm X-MOD layer applies ``output.LayerNorm`` once more. The forward below is that model's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..hooks import Hook
from . import bert
from .base import Architecture, attention_probs, check_encoder_config, config_int, layer_views

MODEL_TYPES = ("xmod",)
ENCODER = "encoder"


@dataclass(frozen=True)
class Config:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int
    pre_norm: bool
    adapter_layer_norm: bool                   # output block's layer norm: its own (True) or output.LayerNorm

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """config.json of XmodConfig; the language-adapter fields only decide the output block's layer norm.
        Spec: FAM-XM-1."""
        D, H = config_int(d, "hidden_size", 768), config_int(d, "num_attention_heads", 12)
        check_encoder_config(d, D, H)
        flags = {k: d.get(k, dflt) for k, dflt in (("pre_norm", False), ("adapter_layer_norm", False),
                                                    ("adapter_reuse_layer_norm", True))}
        for k, v in flags.items():
            if not isinstance(v, bool):
                raise ConfigError(f"config.json: {k}={v!r} must be true or false.")
        if not flags["adapter_layer_norm"] and not flags["adapter_reuse_layer_norm"]:
            # adapters 1.3.0's XmodOutput then reads an unbound layer norm (UnboundLocalError on every forward)
            raise ConfigError("config.json: adapter_layer_norm=false with adapter_reuse_layer_norm=false is not "
                              "supported; adapters 1.3.0's X-MOD output block needs one of them true.")
        pad = d.get("pad_token_id", 1)
        return cls("xmod", D, config_int(d, "num_hidden_layers", 12), H, config_int(d, "intermediate_size", 3072),
                   config_int(d, "vocab_size", 30522), config_int(d, "max_position_embeddings", 512),
                   config_int(d, "type_vocab_size", 2), float(d.get("layer_norm_eps", 1e-12)),
                   d.get("hidden_act", "gelu"), int(pad if pad is not None else 1), flags["pre_norm"],
                   flags["adapter_layer_norm"])


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Strip 'roberta.', drop heads and X-MOD's language adapters (adapters 1.3.0 deletes them). Spec: FAM-XM-1."""
    return {k: v for k, v in bert.normalize_keys(weights, "roberta").items() if ".output.adapter_modules." not in k}


def expected_shapes(cfg: Config) -> dict:
    s = bert.expected_shapes(cfg)
    D = cfg.hidden_size
    for i in range(cfg.num_hidden_layers):
        if cfg.adapter_layer_norm:
            p = f"encoder.layer.{i}.output.adapter_layer_norm."
            s[p + "weight"], s[p + "bias"] = (D,), (D,)
    if cfg.pre_norm:
        s["encoder.LayerNorm.weight"], s["encoder.LayerNorm.bias"] = (D,), (D,)
    return s


def xmod_layer(x, mask, lp, hk, cfg: Config, ops, probs=None):
    """X-MOD layer under adapters 1.3.0 (post-norm, or pre-norm with ``pre_norm``). Spec: FAM-XM-1.
    x: (B, T, D); mask: (B, 1, 1, Tk) additive."""
    n, eps = cfg.num_attention_heads, cfg.layer_norm_eps
    ln_a = lambda t: ops.layer_norm(t, *lp.linear("attention.output.LayerNorm"), eps)  # noqa: E731
    ln_o = lambda t: ops.layer_norm(t, *lp.linear("output.LayerNorm"), eps)  # noqa: E731
    h = ln_a(x) if cfg.pre_norm else x
    q = bert.split_heads(hk.linear(Hook.ATTN_Q, h, *lp.linear("attention.self.query")), n)
    k = hk.linear(Hook.ATTN_K, h, *lp.linear("attention.self.key"))
    v = hk.linear(Hook.ATTN_V, h, *lp.linear("attention.self.value"))
    K, V, m = hk.prefix(Hook.SELF_PREFIX, bert.split_heads(k, n), bert.split_heads(v, n), mask, h)
    if probs is not None:
        probs.append(attention_probs(q, K, m, ops))                      # (B, N, T, Tk)
    a = ops.linear(bert.merge_heads(ops.attention(q, K, V, m)), *lp.linear("attention.output.dense"))
    a = hk.residual_block(Hook.MH_ADAPTER, a, x, None)                   # no layer norm inside the block
    if not cfg.pre_norm:
        a = ln_a(a)
    h2 = ln_o(a) if cfg.pre_norm else a
    f = ops.activation(cfg.hidden_act)(hk.linear(Hook.INTERMEDIATE, h2, *lp.linear("intermediate.dense")))
    f = hk.linear(Hook.OUTPUT, f, *lp.linear("output.dense"))
    ln_block = ((lambda t: ops.layer_norm(t, *lp.linear("output.adapter_layer_norm"), eps))
                if cfg.adapter_layer_norm else ln_o)
    y = hk.residual_block(Hook.OUTPUT_ADAPTER, f, a, ln_block)
    if not cfg.pre_norm:
        y = ln_o(y)                                                      # Upstream note: a second LayerNorm
    return hk.layer_output(y)


def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, token_type_ids=None,
            position_ids=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
    """RoBERTa embeddings, hooks, X-MOD layers, (final LayerNorm when pre_norm), pooler. Spec: FAM-XM-1, ENC-1."""
    x = bert.embeddings(p, cfg, input_ids, token_type_ids, ops, positions=position_ids,
                        inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    if attention_mask is None:
        attention_mask = np.ones(x.shape[:2], np.int64)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    mask = bert.extended_mask(attention_mask, dtype)
    states = [x] if output_hidden_states else None
    probs = [] if output_attentions else None
    for i, lp in enumerate(layer_views(p, STACK, cfg.num_hidden_layers)):
        x = xmod_layer(x, mask, lp, hooks.layer(ENCODER, i), cfg, ops, probs)
        if states is not None:
            states.append(x)
    if cfg.pre_norm:
        x = ops.layer_norm(x, p["encoder.LayerNorm.weight"], p["encoder.LayerNorm.bias"], cfg.layer_norm_eps)
        if states is not None:
            states[-1] = x
    pooled = None
    if "pooler.dense.weight" in p:
        pooled = np.tanh(ops.linear(x[:, 0], p["pooler.dense.weight"], p["pooler.dense.bias"]))
    return {"last_hidden_state": x, "pooler_output": pooled,
            "hidden_states": tuple(states) if states is not None else None,
            "attentions": tuple(probs) if probs is not None else None}


STACK = bert.STACK          # adapters 1.3.0 places X-MOD's hooks at BERT's module paths

ARCHITECTURE = Architecture(
    name="xmod", model_types=MODEL_TYPES, config_class=Config, stacks=(STACK,), forward=forward,
    normalize_keys=normalize_keys, expected_shapes=expected_shapes, model_class={"xmod": "XmodModel"},
    base_model_prefix={"xmod": "roberta"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds"}),
    embed_key="embeddings.word_embeddings.weight", pooler=("pooler.dense.weight", "pooler.dense.bias"))
