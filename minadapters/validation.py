"""Sanity checks for what a user or a file hands the model: config.json sizes and forward inputs.

Spec: IO-16 (model config limits), API-2 (forward input rules). Each check runs before anything
is allocated or computed and raises a documented error type (spec/io.md, "Error vocabulary"):
ConfigError / ConfigTypeError for config.json, ShapeError / ValueError / TypeError for inputs.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError, ConfigTypeError, ShapeError

__all__ = ["MODEL_CONFIG_LIMITS", "check_model_config", "check_forward_inputs", "check_adapter_fits_model",
           "adapter_min_elements"]

# config.json size fields (all families' spellings): (minimum, maximum). Spec: IO-16.
# The maxima are far above any released checkpoint and keep a 400-byte config.json from asking
# for 10⁹ layers; the weights are compared with the implied shapes before anything is built.
MODEL_CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 1024), "n_layer": (1, 1024),
    "hidden_size": (1, 1 << 16), "n_embd": (1, 1 << 16),
    "num_attention_heads": (1, 1024), "n_head": (1, 1024), "num_key_value_heads": (1, 1024),
    "head_dim": (1, 1 << 14),
    "intermediate_size": (1, 1 << 20), "n_inner": (1, 1 << 20),
    "vocab_size": (1, 1 << 24),
    "max_position_embeddings": (1, 1 << 24), "n_positions": (1, 1 << 24),
    "type_vocab_size": (0, 1 << 16),
}
# Positive finite floats: (exclusive minimum 0, maximum).
_EPS_FIELDS = {"layer_norm_eps": 1.0, "layer_norm_epsilon": 1.0, "rms_norm_eps": 1.0}
_POSITIVE_FIELDS = {"rope_theta": 1e12}
_PROBABILITY_FIELDS = ("attention_probs_dropout_prob", "hidden_dropout_prob", "attn_pdrop", "resid_pdrop",
                       "embd_pdrop", "attention_dropout")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_model_config(raw, source: str = "config.json") -> None:
    """Check the size, epsilon and theta fields of a config.json object before any shape is derived.

    Spec: IO-16. Each present, non-null field must have the right type (ConfigTypeError) and lie
    within MODEL_CONFIG_LIMITS / be finite and > 0 (ConfigError); messages name file, field, value."""
    if not isinstance(raw, dict):
        raise ConfigTypeError(f"{source}: expected a JSON object; got {type(raw).__name__}.")
    mt = raw.get("model_type")
    if mt is None:
        raise ConfigError(f"{source}: no 'model_type' key.")
    if not isinstance(mt, str):
        raise ConfigError(f"{source}: 'model_type' must be a string naming the model family; got "
                          f"{type(mt).__name__}.")
    for name, (lo, hi) in MODEL_CONFIG_LIMITS.items():
        v = raw.get(name)
        if v is None:
            continue
        if not _is_int(v):
            raise ConfigTypeError(f"{source}: {name} must be an integer; got {_show(v)} ({type(v).__name__}).")
        if not lo <= v <= hi:
            raise ConfigError(f"{source}: {name}={_show(v)} is outside the accepted range [{lo}, {hi}].")
    for name, hi in {**_EPS_FIELDS, **_POSITIVE_FIELDS}.items():
        v = raw.get(name)
        if v is None:
            continue
        if not _is_real(v):
            raise ConfigTypeError(f"{source}: {name} must be a number; got {_show(v)} ({type(v).__name__}).")
        if not (math.isfinite(v) and 0 < v <= hi):
            raise ConfigError(f"{source}: {name}={_show(v)}; expected a finite number in (0, {hi:g}].")
    for name in _PROBABILITY_FIELDS:
        v = raw.get(name)
        if v is not None and not (_is_real(v) and math.isfinite(v) and 0 <= v <= 1):
            raise ConfigError(f"{source}: {name}={_show(v)}; expected a probability in [0, 1].")


def check_adapter_fits_model(members, *, hidden_size: int) -> None:
    """Model-dependent size checks of adapter configs, before the model allocates anything. Spec: IO-16.

    `members`: the configs (a ConfigUnion's children, or one config) as mappings. An orthogonal ReFT
    unit has r orthonormal rows in a hidden_size-dimensional space, so r <= hidden_size (a larger r
    also makes the orthogonal completion an r x r matrix: 2 GiB for r = 16384)."""
    for cfg in members:
        if cfg is not None and cfg.get("architecture") == "reft" and cfg.get("orthogonality") and cfg.get("r", 0) > hidden_size:
            raise ConfigError(f"{type(cfg).__name__}.r: got {cfg['r']}; an orthogonal ReFT unit needs r <= "
                              f"hidden_size = {hidden_size}.")


def adapter_min_elements(members, *, hidden_size: int) -> int:
    """A lower bound of the parameters a saved adapter with these configs must hold. Spec: IO-16.

    One module in one layer: LoRA r·D (A; IA³ / VeRA vectors skipped), bottleneck D·D/max(factor),
    prefix / prompt tuning length·D, ReFT r·D. load_adapter compares it with the weights file's
    element count *before* the model allocates the adapter, so a 1 KB adapter_config.json cannot
    make a large model allocate gigabytes that the file could never fill."""
    D, total = hidden_size, 0
    for c in members:
        if c is None:           # AdapterConfig.load gives None for an empty config: the default is used
            continue
        arch = c.get("architecture")
        if arch == "lora" and c.get("composition_mode") != "scale" and c.get("init_weights") != "vera" and (
                c.get("selfattn_lora") or c.get("intermediate_lora") or c.get("output_lora")):
            total += int(c.get("r", 0)) * D
        elif arch in (None, "bottleneck") and (c.get("mh_adapter") or c.get("output_adapter")):
            rf = c.get("reduction_factor")
            rf = max(rf.values()) if isinstance(rf, dict) else rf
            total += D * int(D // rf) if _is_real(rf) and rf > 0 else 0
        elif arch == "prefix_tuning":
            total += int(c.get("prefix_length", 0)) * D
        elif arch == "prompt_tuning":
            total += int(c.get("prompt_length", 0)) * D
        elif arch == "reft":
            total += int(c.get("r", 0)) * D
    return total


def _show(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def check_forward_inputs(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
                         type_vocab_size=None) -> None:
    """Forward-input rules both backends share. Spec: API-2, IO-16.

    input_ids (B, T) with B, T >= 1 (empty input raises ShapeError on every backend);
    attention_mask holds only 0 and 1 (bool, integer or float; NaN, 3, 1e30 raise ValueError);
    token_type_ids are integers in [0, type_vocab_size); position_ids are integers >= 0."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim == 2 and 0 in input_ids.shape:
        raise ShapeError(f"input_ids has shape {input_ids.shape}; expected at least one sequence of at least "
                         "one token.")
    if attention_mask is not None:
        m = np.asarray(attention_mask)
        if not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise TypeError(f"attention_mask has dtype {m.dtype}; expected bool, integer or float 0/1 values.")
        if m.dtype != np.bool_ and m.size and not np.all((m == 0) | (m == 1)):
            bad = m[~((m == 0) | (m == 1))].ravel()[0].item()
            raise ValueError(f"attention_mask holds {bad!r}; expected only 0 (masked) and 1 (attended).")
    if token_type_ids is not None:
        _check_index_array("token_type_ids", token_type_ids, type_vocab_size)
    if position_ids is not None:
        _check_index_array("position_ids", position_ids, None)


def _check_index_array(name, arr, upper) -> None:
    a = np.asarray(arr)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} has dtype {a.dtype}; expected integers.")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} contains {int(a.min())}; expected ids >= 0 (negative ids would wrap).")
    if upper is not None and a.size and a.max() >= upper:
        raise ValueError(f"{name} contains {int(a.max())}; expected ids in [0, {upper}).")
