"""``share_parameters`` / ``unshare_parameters``: multi-task adapters (MTL-LoRA) with one shared lora_A / lora_B.

Spec: API-6. adapters 1.3.0: ``ModelAdaptersMixin.share_parameters``, ``LoRALayer.share_parameters`` (copies the
reference adapter's ``lora_A`` / ``lora_B`` once per layer and hands the same tensors to every listed adapter;
the layer's state dict shows the copy as ``<layer path>.shared_parameters.<name>.lora_A|lora_B``).

Here the adapters' ``params`` dicts hold the same array objects; the registry ``model.parameter_shares`` keeps
them per layer for ``shared_parameters_state_dict``.
"""
from __future__ import annotations

from .composition import MultiTask
from .configuration import MultiTaskConfig
from .errors import ConfigError, ConfigTypeError

SHARABLE = ("lora_A", "lora_B")


def _names(adapter_names):
    if isinstance(adapter_names, MultiTask):
        names = list(adapter_names.children)
    elif isinstance(adapter_names, str):
        names = adapter_names.split(",")
    elif isinstance(adapter_names, (list, tuple)):
        names = list(adapter_names)
    else:
        raise TypeError(f"adapter_names must be a MultiTask block, a list of names or 'a,b'; got "
                        f"{type(adapter_names).__name__}.")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"share_parameters: entry {n!r} is not an adapter name (blocks are not allowed here).")
    return names


def registry(model) -> dict:
    """name -> {"adapters": [...], "reference": str, "layers": {layer path: {leaf: array}}}."""
    return model.parameter_shares


def _lora_layers(model, names):
    """LoRA-family layers holding every adapter of ``names`` (upstream shares only where all are present)."""
    return [layer for layer in model.layers_of("lora") if all(n in layer.modules for n in names)]


def share_parameters(model, adapter_names, name=None, reference_adapter_name=None) -> None:
    """Give every adapter of ``adapter_names`` a copy of the reference's lora_A / lora_B, shared. Spec: API-6."""
    names = _names(adapter_names)
    if not names or any(not n for n in names):
        raise ValueError(f"share_parameters: expected at least one adapter name; got {adapter_names!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"share_parameters: adapter names {names} contain duplicates.")
    name = name or ",".join(names)
    ref = reference_adapter_name or names[0]
    configs = [model.adapters_config.require(n) for n in names]
    for n, c in zip(names, configs):
        if not isinstance(c, MultiTaskConfig):
            raise ConfigTypeError(f"Expected adapter configuration of type 'MultiTaskConfig' for adapter {n!r}, but "
                                  f"got {type(c).__name__!r} instead (share_parameters is for MTL-LoRA).")
    if len({type(c) for c in configs}) > 1:
        raise ConfigTypeError(f"All adapter configurations must be of the same type; got "
                              f"{sorted({type(c).__name__ for c in configs})}.")
    if ref not in names:
        raise ConfigError(f"Reference adapter {ref!r} not found in the provided adapter names: {names}.")
    layers = _lora_layers(model, names)
    for layer in layers:                               # check everything before changing anything
        want = {leaf: layer.modules[ref].params[leaf].shape for leaf in SHARABLE if leaf in layer.modules[ref].params}
        for n in names:
            got = {leaf: layer.modules[n].params[leaf].shape for leaf in want}
            if got != want:
                raise ConfigError(f"share_parameters: {n!r} at {layer.path} has lora_A/lora_B shapes {got} but the "
                                  f"reference {ref!r} has {want}; shared adapters need the same r, n_up_projection "
                                  "and targets (adapters 1.3.0 fails at the first forward).")
    shared_layers = {}
    for layer in layers:
        src = layer.modules[ref].params
        shared = {leaf: src[leaf].copy() for leaf in SHARABLE if leaf in src}
        for n in names:
            layer.modules[n].params.update(shared)      # the same array objects in every adapter
        shared_layers[layer.path] = shared
    registry(model)[name] = {"adapters": list(names), "reference": ref, "layers": shared_layers}


def unshare_parameters(model, adapter_names, name=None) -> None:
    """Drop the shared group ``name``; each adapter keeps its current values in arrays of its own. Spec: API-6.

    Upstream note: adapters only deletes the layer's ``shared_parameters`` entry; the adapters keep pointing at the
    same Parameter objects (tied in training). Inference outputs are the same either way."""
    names = _names(adapter_names)
    name = name or ",".join(names)
    entry = registry(model).pop(name, None)
    if entry is None:
        return
    for layer in _lora_layers(model, []):
        shared = entry["layers"].get(layer.path)
        if not shared:
            continue
        for mod in layer.modules.values():
            for leaf, arr in shared.items():
                if mod.params.get(leaf) is arr:
                    mod.params[leaf] = arr.copy()


def shared_parameters_state_dict(model, name=None) -> dict:
    """``<layer path>.shared_parameters.<name>.<leaf>`` -> array, as in adapters' full model state dict."""
    reg = registry(model)
    names = [name] if name is not None else list(reg)
    out = {}
    for n in names:
        if n not in reg:
            raise KeyError(f"No shared parameter group named {n!r}; known: {sorted(reg) or 'none'}.")
        for path, shared in reg[n]["layers"].items():
            for leaf, arr in shared.items():
                out[f"{path}.shared_parameters.{n}.{leaf}"] = arr
    return out
