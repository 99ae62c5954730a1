"""Head files in adapters 1.3.0's layout: head_config.json + pytorch_model_head.bin / model_head.safetensors.

Spec: HEAD-8. Weights go through the same readers and writers as adapters (io/: the restricted unpickler,
safetensors); keys are ``heads.<name>.<i>.<leaf>``.
"""
from __future__ import annotations

import os
import warnings

from ..hub import resolve_adapter_dir
from ..io.files import read_artifact_weights, read_json, save_artifact
from ..loading import VERSION, assign_weights
from .static import STATIC_HEADS, rename_static_weights, static_head_config

HEAD_CONFIG = "head_config.json"
HEAD_BIN = "pytorch_model_head.bin"
HEAD_SAFETENSORS = "model_head.safetensors"


def _class_names(model) -> set:
    """model_class values whose heads load here without conversion (adapters: same class, or the old
    ``<X>ModelWithHeads`` twin)."""
    name = type(model).__name__
    return {name, name.replace("AdapterModel", "ModelWithHeads")}


def save_head(model, save_directory, head_name=None, *, use_safetensors=False) -> None:
    """Write head_config.json and the head's weights. Spec: HEAD-8."""
    if head_name is None:
        if len(model.heads) != 1:
            raise ValueError(f"save_head: pass head_name; the model has {len(model.heads)} heads "
                             f"({', '.join(map(repr, model.heads)) or 'none'}).")
        head_name = next(iter(model.heads))
    if head_name not in model.heads:
        raise ValueError(f"Unknown head_name {head_name!r}; heads: {', '.join(map(repr, model.heads)) or 'none'}.")
    save_directory = os.fspath(save_directory)
    if os.path.exists(save_directory) and not os.path.isdir(save_directory):
        raise NotADirectoryError(f"save_head: {save_directory!r} exists and is not a directory.")
    head = model.heads[head_name]
    full = {"model_type": model.model_type, "hidden_size": model.hidden_size, "name": head_name,
            "model_name": model.name_or_path or "", "model_class": type(model).__name__,
            "config": head.config, "version": VERSION}
    save_artifact(save_directory, HEAD_CONFIG, full, head.state_dict(model), use_safetensors=use_safetensors,
                  basename_bin=HEAD_BIN, basename_safetensors=HEAD_SAFETENSORS)


def _has_weights(path) -> bool:
    return any(os.path.isfile(os.path.join(path, n)) for n in (HEAD_BIN, HEAD_SAFETENSORS))


def _skip(msg, missing_ok):
    if not missing_ok:
        raise ValueError(msg)
    warnings.warn(msg + " The adapter loads without this head.", stacklevel=3)


def load_head(model, path, *, load_as=None, id2label=None, use_safetensors=False, set_active=True,
              missing_ok=False, warn_overwrite=True, main_load_name=None):
    """Add the head saved in ``path``; returns its name (None when ``missing_ok`` and there is no head, or a
    warning says why it was not loaded). Spec: HEAD-8."""
    path = os.fspath(path)
    has_cfg = os.path.isfile(os.path.join(path, HEAD_CONFIG))
    if not _has_weights(path):
        if missing_ok and not has_cfg:
            return None
        _skip(f"{path}: no head weights ({HEAD_BIN} or {HEAD_SAFETENSORS})"
              + (f" beside {HEAD_CONFIG}." if has_cfg else "; expected a directory written by save_head."),
              missing_ok)
        return None
    if not has_cfg:
        _skip(f"{path}: head weights without {HEAD_CONFIG}; the head type is unknown.", missing_ok)
        return None
    saved = read_json(os.path.join(path, HEAD_CONFIG))
    if isinstance(saved, dict) and saved.get("config") is None and saved.get("model_class") in STATIC_HEADS:
        return _load_static_head(model, path, saved, load_as or main_load_name, id2label, use_safetensors,
                                 set_active)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "name" not in saved:
        raise ValueError(f"{path}/{HEAD_CONFIG}: expected an object with 'name' and 'config' (a head config); "
                         f"got keys {sorted(saved) if isinstance(saved, dict) else type(saved).__name__}.")
    saved_class = saved.get("model_class")
    if saved_class not in _class_names(model):
        _skip(f"{path}/{HEAD_CONFIG}: model_class={saved_class!r} of the saved head does not match this model "
              f"class {type(model).__name__!r} (static task heads are not converted here).", missing_ok)
        return None
    old = saved["name"]
    name = load_as or old
    config = dict(saved["config"])
    if id2label:
        config["label2id"] = {lab: int(i) for i, lab in id2label.items()}
        config.pop("id2label", None)
    weights = read_artifact_weights(path, saved, HEAD_CONFIG, basename_bin=HEAD_BIN,
                                    basename_safetensors=HEAD_SAFETENSORS, prefer_safetensors=bool(use_safetensors))
    prefix = f"heads.{old}."
    renamed = {f"heads.{name}.{k[len(prefix):]}": v for k, v in weights.items() if k.startswith(prefix)}
    previous = model.heads.get(name)
    was_active = model._active_heads
    if previous is not None and warn_overwrite:
        warnings.warn(f"Overwriting existing head {name!r}.", stacklevel=3)
    model.add_prediction_head_from_config(name, config, overwrite_ok=True, set_active=set_active)
    try:
        assign_weights(model.heads[name].param_refs(model), renamed, what=f"head {name!r}", source=path)
    except BaseException:
        if previous is None:
            del model.heads[name]
        else:
            model.heads[name] = previous
        model._active_heads = was_active
        raise
    return name


def _load_static_head(model, path, saved, name, id2label, use_safetensors, set_active):
    """A head saved from a transformers task model (``config: null``, ``model_class`` a task class): converted to
    a flex head named like the adapter (or ``load_as``), as adapters does. Spec: HEAD-9."""
    cls = saved["model_class"]
    if name is None:
        raise ValueError(f"{path}/{HEAD_CONFIG}: a static {cls} head has no name; pass load_as=<head name>.")
    label2id = {lab: int(i) for i, lab in id2label.items()} if id2label else saved.get("label2id")
    config, modules = static_head_config(cls, label2id, num_labels=saved.get("num_labels"))
    weights = read_artifact_weights(path, saved, HEAD_CONFIG, basename_bin=HEAD_BIN,
                                    basename_safetensors=HEAD_SAFETENSORS, prefer_safetensors=bool(use_safetensors))
    renamed = rename_static_weights(modules, weights, name)
    previous, was_active = model.heads.get(name), model._active_heads
    model.add_prediction_head_from_config(name, config, overwrite_ok=True, set_active=set_active)
    try:
        assign_weights(model.heads[name].param_refs(model), renamed, what=f"the {cls} head {name!r}", source=path)
    except BaseException:
        if previous is None:
            del model.heads[name]
        else:
            model.heads[name] = previous
        model._active_heads = was_active
        raise
    return name


def resolved_dir(name_or_path, config_name="adapter_config.json", **kwargs) -> str:
    return resolve_adapter_dir(name_or_path, config_name, **kwargs)


def warn_if_head_skipped(path) -> None:
    """load_adapter(with_head=False) on a directory with head files says so."""
    if os.path.isfile(os.path.join(os.fspath(path), HEAD_CONFIG)):
        warnings.warn(f"{path}: has a prediction head ({HEAD_CONFIG}) that is not loaded (with_head=False).",
                      stacklevel=3)
