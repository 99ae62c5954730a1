"""Adapter setup directories (``save_adapter_setup`` / ``load_adapter_setup``) and ``save_all_adapters`` /
``save_all_adapter_fusions``, in adapters 1.3.0's layout. Spec: API-7.

    <dir>/adapter_setup.json   {"adapter_setup": block.to_dict(), "head_setup": null, "version": "adapters.1.3.0"}
    <dir>/<adapter name>/      save_adapter layout (IO-10), one per adapter of the setup
    <dir>/<fusion name>/       save_adapter_fusion layout (IO-12), one per Fuse block of the setup
"""
from __future__ import annotations

import json
import os
import warnings

from .composition import AdapterCompositionBlock, Fuse, composition_from_dict, parse_composition
from .configuration.strings import get_adapter_config_hash
from .errors import CompositionError, WeightsError
from .io.files import atomic_write_bytes, read_json
from .loading import VERSION

SETUP_CONFIG_NAME = "adapter_setup.json"


def _fusions(setup):
    """Fuse blocks at level 0 and 1 (the only levels where validate_composition allows them), in order."""
    out = [setup] if isinstance(setup, Fuse) else []
    out += [c for c in setup.children if isinstance(c, Fuse)]
    return out


def setup_to_dict(setup) -> dict:
    """``block.to_dict()``, plus ``kwargs.name`` for a Fuse with a custom name. Spec: API-7.

    Upstream note: adapters' Fuse.to_dict drops a custom ``name`` while the fusion folder is named after it, so
    adapters cannot load its own file; writing ``"kwargs": {"name": ...}`` makes both load it."""
    d = setup.to_dict()
    if isinstance(setup, Fuse) and setup._name and setup._name != ",".join(
            c if isinstance(c, str) else c.last() for c in setup.children):
        d.setdefault("kwargs", {})["name"] = setup._name
    if isinstance(setup, AdapterCompositionBlock):
        d["children"] = [setup_to_dict(c) if isinstance(c, AdapterCompositionBlock) else dc
                         for c, dc in zip(setup.children, d["children"])]
    return d


def save_adapter_setup(model, save_directory, adapter_setup, meta_dict=None, use_safetensors=False,
                       head_setup=None) -> None:
    """Write adapter_setup.json and one sub-folder per adapter and fusion of the setup. Spec: API-7.

    ``head_setup`` (AdapterModel classes with heads: a name, a list or a block) is recorded as adapters does."""
    setup = parse_composition(adapter_setup, model_type=model.model_type)
    if setup is None:
        raise CompositionError(f"save_adapter_setup: {adapter_setup!r} is an empty adapter setup.")
    model._check_names(setup)     # unknown adapters or fusions fail before anything is written
    save_directory = os.fspath(save_directory)
    os.makedirs(save_directory, exist_ok=True)
    heads = setup_to_dict(head_setup) if isinstance(head_setup, AdapterCompositionBlock) else head_setup
    config = {"adapter_setup": setup_to_dict(setup), "head_setup": heads, "version": VERSION}
    atomic_write_bytes(os.path.join(save_directory, SETUP_CONFIG_NAME), json.dumps(config, indent=2).encode("utf-8"))
    for name in sorted(setup.flatten()):
        model.save_adapter(os.path.join(save_directory, name), name, meta_dict=meta_dict,
                           use_safetensors=use_safetensors)
    for fuse in _fusions(setup):
        model.save_adapter_fusion(os.path.join(save_directory, fuse.name), fuse, meta_dict=meta_dict,
                                  use_safetensors=use_safetensors)


def read_setup_config(path):
    """(adapter_setup, head_setup) from ``<path>/adapter_setup.json``. Spec: API-7."""
    file = os.path.join(path, SETUP_CONFIG_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"No {SETUP_CONFIG_NAME} in {path!r}; expected a directory written by "
                                "save_adapter_setup. Hub downloads are not supported.")
    data = read_json(file)
    if not isinstance(data, dict) or not isinstance(data.get("adapter_setup"), dict):
        raise WeightsError(f"{file}: expected an object with 'adapter_setup' (a composition dict).")
    setup = composition_from_dict(data["adapter_setup"])
    if isinstance(setup, str):
        setup = parse_composition(setup)
    for name in setup.flatten() if hasattr(setup, "flatten") else [setup]:
        if os.path.basename(name) != name or name in (".", ".."):   # names are sub-directories (IO-14)
            raise WeightsError(f"{file}: adapter name {name[:80]!r} is not a plain directory name.")
    head = data.get("head_setup")
    if isinstance(head, dict):
        head = composition_from_dict(head)
    return setup, head


def load_adapter_setup(model, path, set_active=False, use_safetensors=False, heads_supported=False):
    """Load every adapter and fusion of a saved setup; returns (adapter_setup, head_setup). Spec: API-7.

    On failure the adapters and fusions loaded so far are removed again (upstream keeps them)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a directory; expected one written by save_adapter_setup.")
    setup, head = read_setup_config(path)
    loaded, fusions = [], []
    try:
        for name in sorted(setup.flatten()):
            loaded.append(model.load_adapter(os.path.join(path, name), use_safetensors=use_safetensors))
        for fuse in _fusions(setup):
            if fuse.name not in model.adapters_config.fusions:
                fusions.append(model.load_adapter_fusion(os.path.join(path, fuse.name),
                                                         use_safetensors=use_safetensors))
        if set_active:
            model.set_active_adapters(setup)
    except BaseException:
        for f in fusions:
            model.delete_adapter_fusion(f)
        for n in loaded:
            model.delete_adapter(n)
        raise
    if head and not heads_supported:
        warnings.warn("Loaded adapter setup contains a head setup that is not supported by the current model.")
    return setup, head


def save_all_adapters(model, save_directory, meta_dict=None, use_safetensors=False) -> None:
    """One sub-folder per adapter; each adapter_config.json gets ``config_id`` (its config hash). Spec: API-7."""
    os.makedirs(save_directory, exist_ok=True)
    for name in model.adapters_config:
        meta = dict(meta_dict or {}, config_id=get_adapter_config_hash(model.adapters_config.get(name)))
        model.save_adapter(os.path.join(save_directory, name), name, meta_dict=meta, use_safetensors=use_safetensors)


def save_all_adapter_fusions(model, save_directory, meta_dict=None, use_safetensors=False) -> None:
    """One sub-folder per fusion, with ``config_id``. Spec: API-7."""
    os.makedirs(save_directory, exist_ok=True)
    for name, (fconfig, _) in model.adapters_config.fusions.items():
        meta = dict(meta_dict or {}, config_id=get_adapter_config_hash(fconfig))
        model.save_adapter_fusion(os.path.join(save_directory, name), name, meta_dict=meta,
                                  use_safetensors=use_safetensors)
