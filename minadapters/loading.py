"""AdapterHub files: save_adapter / load_adapter and their fusion counterparts, in adapters 1.3.0's layout.

Spec: IO-10 (adapter directory), IO-11 (key renaming on load), IO-12 (fusion directory).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from .composition import Fuse
from .configuration import AdapterConfig
from .errors import ConfigError, ShapeError, WeightsError
from .file_compat import ejected_prefix_config, key_mismatch_hint
from .io.files import read_artifact_weights, read_json, save_artifact
from .validation import adapter_min_elements

VERSION = "adapters.1.3.0"
ACTIVATION_RENAME = {"gelu": "gelu_new", "gelu_orig": "gelu"}
CONTAINERS = ("adapters", "prefix_tunings", "prefix_gates", "loras", "shared_parameters", "refts", "prompt_tunings",
              "invertible_adapters")
LEGACY_RENAMES = (("attention_text_task_adapters", "adapters"), ("attention_text_lang_adapters", "adapters"),
                  ("layer_text_task_adapters", "adapters"), ("layer_text_lang_adapters", "adapters"),
                  ("invertible_lang_adapters", "invertible_adapters"))
# Keys that adapters saves twice: every prefix-tuning layer registers the model-level pool as a submodule.
ALIAS_MARKERS = (".prefix_tuning.pool.",)
KEY_EXAMPLES = 3  # how many missing / unexpected keys an error message names


def _full_config(model, config_dict: dict, name: str, model_class=None, **extra) -> dict:
    d = {"model_type": model.model_type, "hidden_size": model.hidden_size,
         "model_class": model_class or model.arch.model_class[model.model_type],
         "model_name": model.name_or_path or "", "name": name}
    d.update(extra)
    d["config"] = config_dict
    d["version"] = VERSION
    return d


def save_adapter(model, save_directory, adapter_name, meta_dict=None, use_safetensors=False, *, model_class=None,
                 key_prefix="") -> None:
    """Write adapter_config.json and the weights (pytorch_adapter.bin, or adapter.safetensors). Spec: IO-10.

    Through `save_artifact` (IO-14): the config is the commit record written last, a stale weights
    file of the other format is removed, so a crash never leaves a directory mixing two saves."""
    config = model.adapters_config.require(adapter_name)
    save_directory = os.fspath(save_directory)
    if os.path.exists(save_directory) and not os.path.isdir(save_directory):
        raise NotADirectoryError(f"save_adapter: {save_directory!r} exists and is not a directory.")
    state = {key_prefix + k: np.ascontiguousarray(v, dtype=np.float32 if np.issubdtype(v.dtype, np.floating)
                                                  else v.dtype)
             for k, v in model.adapter_state_dict(adapter_name).items()}
    full = _full_config(model, config.to_dict(), adapter_name, model_class=model_class)
    for k, v in (meta_dict or {}).items():
        full.setdefault(k, v)
    save_artifact(save_directory, "adapter_config.json", full, state, use_safetensors=use_safetensors,
                  basename_bin="pytorch_adapter.bin", basename_safetensors="adapter.safetensors")


def _fix_saved_config(saved: dict, path: str) -> dict:
    """adapters' backward-compatibility edits of old adapter_config.json files. Spec: IO-10."""
    cfg = saved.get("config")
    if not isinstance(cfg, dict):
        raise WeightsError(f"{path}: 'config' must be an object with the adapter configuration; got a "
                           f"{type(cfg).__name__}.")
    cfg = dict(cfg)
    version = saved.get("version")
    if version is None and cfg.get("non_linearity") in ACTIVATION_RENAME:
        cfg["non_linearity"] = ACTIVATION_RENAME[cfg["non_linearity"]]
    if isinstance(version, str) and version.startswith("adapters."):
        if _version_tuple(version[len("adapters."):]) < (1, 1, 0) and cfg.get("architecture") == "lora" \
                and cfg.get("r") != cfg.get("alpha"):
            warnings.warn(f"{path}: LoRA saved by adapters {version} used alpha = r in training; setting alpha = r.")
            cfg["alpha"] = cfg["r"]
    return cfg


def _version_tuple(v: str):
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _rename_key(key: str, old: str, new: str, base_prefix: str) -> str:
    """Strip the AdapterModel prefix, apply legacy renames and ``.<old>.`` -> ``.<new>.``. Spec: IO-11."""
    if key.startswith(base_prefix + "."):
        key = key[len(base_prefix) + 1:]
    for a, b in LEGACY_RENAMES:
        key = key.replace(a, b)
    if old != new:
        for c in CONTAINERS:
            key = key.replace(f"{c}.{old}.", f"{c}.{new}.")
    return key


def assign_weights(refs: dict, weights: dict, *, what: str, source: str, optional_missing=()) -> None:
    """Check keys and shapes, then copy arrays in. Spec: IO-11."""
    unexpected = sorted(k for k in weights if k not in refs)
    missing = sorted(k for k in refs if k not in weights and not any(m in k for m in optional_missing))
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:KEY_EXAMPLES]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:KEY_EXAMPLES]})")
        raise WeightsError(f"{source}: weights do not fit {what}: {'; '.join(parts)}. Was it saved for another "
                           f"model type or configuration?{key_mismatch_hint(missing, unexpected)}")
    for k, arr in weights.items():
        d, leaf = refs[k]
        if tuple(arr.shape) != tuple(d[leaf].shape):
            raise ShapeError(f"{source}: {k} has shape {tuple(arr.shape)}; {what} expects {tuple(d[leaf].shape)}. "
                             "Was it saved for a different base model?")
    for k, arr in weights.items():
        d, leaf = refs[k]
        d[leaf] = np.array(arr, dtype=d[leaf].dtype)


def _check_dir(path, config_name):
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a directory; expected a saved adapter directory "
                                f"({config_name} + weights) or a Hugging Face id.")
    if not os.path.isfile(os.path.join(path, config_name)):
        raise FileNotFoundError(f"No {config_name} in {path!r}.")
    return path


def load_adapter(model, path, *, load_as=None, leave_out=None, set_active=False, use_safetensors=None) -> str:
    """Read an AdapterHub adapter directory and add it to the model. Returns its name. Spec: IO-10, IO-11."""
    path = _check_dir(path, "adapter_config.json")
    saved = read_json(os.path.join(path, "adapter_config.json"))
    if not isinstance(saved, dict) or not _is_name(saved.get("name")):
        raise WeightsError(f"{path}/adapter_config.json: expected an object with 'name' (a non-empty string) "
                           "and 'config'.")
    if load_as is not None and not _is_name(load_as):
        raise ConfigError(f"load_adapter: load_as must be a non-empty string; got {type(load_as).__name__}.")
    saved_type = saved.get("model_type")
    if saved_type is not None and not isinstance(saved_type, str):
        raise WeightsError(f"{path}/adapter_config.json: 'model_type' must be a string; got {type(saved_type).__name__}.")
    if saved_type is not None and saved_type != model.model_type and not (
            {saved_type, model.model_type} <= {"roberta", "xlm-roberta"}):
        # COMPAT(adapters): upstream never checks model_type and silently adds a fresh random adapter (spec IO-10).
        raise ConfigError(f"{path}: adapter was saved for model_type={saved_type!r}; this model is "
                          f"{model.model_type!r}.")
    cfg_dict = _fix_saved_config(saved, path)
    if leave_out:
        cfg_dict["leave_out"] = sorted(set(list(leave_out) + list(cfg_dict.get("leave_out") or [])))
    name = load_as or saved["name"]
    if name in model.adapters_config:
        raise ConfigError(f"load_adapter: an adapter named {name!r} already exists; pass load_as=<new name> or "
                          "delete_adapter it first.")
    weights = read_artifact_weights(path, saved, "adapter_config.json", basename_bin="pytorch_adapter.bin",
                                    basename_safetensors="adapter.safetensors",
                                    prefer_safetensors=bool(use_safetensors))
    cfg_dict = ejected_prefix_config(cfg_dict, weights, path)
    config = AdapterConfig.load(cfg_dict)
    _check_size_against_file(config, weights, model, path)      # before the model allocates (IO-16)
    model.add_adapter(name, config)
    try:
        prefix = model.arch.base_model_prefix[model.model_type]
        renamed = {}
        for k, v in weights.items():
            if any(m in k for m in ALIAS_MARKERS):
                continue
            k = _canonical_key(k, model.arch.saved_aliases)
            if k is None:
                continue
            renamed[_rename_key(k, saved["name"], name, prefix)] = v
        missing_ok = _missing_ok(model, renamed, name)
        assign_weights(model.adapter_param_refs(name), renamed, what=f"adapter {name!r}", source=path,
                       optional_missing=missing_ok)
    except BaseException:
        model.delete_adapter(name)
        raise
    if set_active:
        model.set_active_adapters(name)
    return name


def _canonical_key(key: str, aliases) -> str | None:
    """A family's aliased key renamed to its canonical path, or None when it is a copy to drop. Spec: IO-11."""
    for prefix, canonical in aliases:
        if key.startswith(prefix):
            return None if canonical is None else canonical + key[len(prefix):]
    return key


def _check_size_against_file(config, weights, model, path):
    members = config.configs if hasattr(config, "configs") else [config]
    need = adapter_min_elements(members, hidden_size=model.hidden_size)
    have = sum(int(np.prod(a.shape)) for a in weights.values())
    if need > 2 * have + (1 << 20):
        raise WeightsError(f"{path}: adapter_config.json describes an adapter of at least {need} parameters, but the "
                           f"weights file holds {have}; refusing before allocating it. Was the config edited?")


def _is_name(x) -> bool:
    return isinstance(x, str) and bool(x.strip())


def _missing_ok(model, weights, name):
    """adapters never saves model-level shared parameters from a bare base model; those keep their init."""
    marker = f"shared_parameters.{name}."
    if not any(k.startswith(marker) for k in weights):
        if any(k.startswith(marker) for k in model.adapter_param_refs(name)):
            warnings.warn(f"adapter {name!r}: the file has no shared parameters ({marker}*); adapters 1.3.0 does "
                          "not save them from base models, so they keep their fresh initialisation.")
        return (marker,)
    return ()


def save_adapter_fusion(model, save_directory, adapter_names, meta_dict=None, use_safetensors=False, *,
                        model_class=None, key_prefix="") -> None:
    """Write adapter_fusion_config.json and the fusion weights. Spec: IO-12.

    AdapterModel classes (heads/) write ``model_class`` and keys under the base-model prefix, as adapters' flex
    models do (adapters 1.3.0 loads fusion weights into a flex model only with that prefix)."""
    name = adapter_names.name if isinstance(adapter_names, Fuse) else (
        ",".join(adapter_names) if isinstance(adapter_names, (list, tuple)) else adapter_names)
    if name not in model.adapters_config.fusions:
        known = ", ".join(repr(n) for n in model.adapters_config.fusions) or "none"
        raise ConfigError(f"Unknown AdapterFusion {name!r}; known fusions: {known}.")
    fconfig, names = model.adapters_config.fusions[name]
    full = _full_config(model, fconfig.to_dict(), name, model_class=model_class, adapter_names=list(names))
    for k, v in (meta_dict or {}).items():
        full.setdefault(k, v)
    state = {key_prefix + k: v for k, v in model.fusion_state_dict(name).items()}
    save_artifact(save_directory, "adapter_fusion_config.json", full, state,
                  use_safetensors=use_safetensors, basename_bin="pytorch_model_adapter_fusion.bin",
                  basename_safetensors="model_adapter_fusion.safetensors")


def load_adapter_fusion(model, path, *, load_as=None, set_active=False, use_safetensors=None) -> str:
    """Read a saved fusion directory; the fused adapters must already be in the model. Spec: IO-12."""
    path = _check_dir(path, "adapter_fusion_config.json")
    where = os.path.join(path, "adapter_fusion_config.json")
    saved = read_json(where)
    if not isinstance(saved, dict) or not _is_name(saved.get("name")):
        raise WeightsError(f"{where}: expected an object with 'name' (a non-empty string), 'adapter_names' "
                           "and 'config'.")
    if load_as is not None and not _is_name(load_as):
        raise ConfigError(f"load_adapter_fusion: load_as must be a non-empty string; got {type(load_as).__name__}.")
    old = saved["name"]
    name = load_as or old
    names = saved.get("adapter_names") or name.split(",")
    if not isinstance(names, list) or not names or not all(_is_name(n) for n in names):
        raise WeightsError(f"{where}: 'adapter_names' must be a non-empty list of adapter names.")
    if not isinstance(saved.get("config"), (dict, str, type(None))):
        raise WeightsError(f"{where}: 'config' must be an object, a config name or null; got "
                           f"{type(saved.get('config')).__name__}.")
    weights = read_artifact_weights(path, saved, "adapter_fusion_config.json",
                                    basename_bin="pytorch_model_adapter_fusion.bin",
                                    basename_safetensors="model_adapter_fusion.safetensors",
                                    prefer_safetensors=bool(use_safetensors))
    added = name not in model.adapters_config.fusions
    if added:
        model.add_adapter_fusion(list(names), saved.get("config"), name=name)
    prefix = model.arch.base_model_prefix[model.model_type] + "."
    renamed = {}
    for k, v in weights.items():
        k = k[len(prefix):] if k.startswith(prefix) else k
        if old != name:
            k = k.replace(f"adapter_fusion_layer.{old}.", f"adapter_fusion_layer.{name}.")
        renamed[k] = v
    try:
        assign_weights(model.fusion_param_refs(name), renamed, what=f"fusion {name!r}", source=path)
    except BaseException:
        if added:   # a failed load leaves no trace; a fusion that was there before stays
            model.delete_adapter_fusion(name)
        raise
    if set_active:
            model.set_active_adapters(Fuse(*names, name=name))
    return name
