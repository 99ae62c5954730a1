"""The Driver protocol: how the suite talks to an implementation (NumPy in, NumPy out).

A driver wraps one implementation (minadapters on a backend, adapters + torch, yours). The suite names the
driver under test and the reference explicitly (``--driver``, ``--reference``; fallback ``MINADAPTERS_DRIVER``)
and resolves them lazily in a fixture, never at import time. Capabilities turn tests into skips with a reason.

Weights cross the boundary as ``{state-dict key: float32 array}`` with adapters 1.3.0's keys for a bare base
model (``encoder.layer.0.output.adapters.<name>.adapter_up.weight``, ``h.0.attn.c_attn.loras.<name>.lora_A``);
compositions as ``Block.to_dict()``; configs as adapters' dicts (``ConfigUnion`` as ``{"architecture": "union",
"configs": [...]}``).
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Protocol, runtime_checkable

import numpy as np

BUILTIN_DRIVERS = {
    "reference": "conformance.drivers.reference:make_driver",
    "minadapters": "conformance.drivers.minadapters_driver:make_driver",
    "minadapters-numpy": "conformance.drivers.minadapters_driver:make_numpy_driver",
    "minadapters-native": "conformance.drivers.minadapters_driver:make_native_driver",
    "adapters": "conformance.drivers.adapters_driver:make_driver",
}
ENV_DRIVER = "MINADAPTERS_DRIVER"
ENV_REFERENCE = "MINADAPTERS_REFERENCE"

# Capability vocabulary (a driver may add more; README "The protocol" defines each). "arch:<model_type>",
# "method:<registry name>", "block:<Block>", "io:roundtrip" (saves and reloads its own files),
# "io:adapters-format" (reads and writes adapters 1.3.0's directories), "op:merge", "op:reset", "op:eject",
# "op:fusion", "op:task_ids", "config:strings" (accepts adapters' config strings, e.g. "lora[r=4]"),
# "precision:float64" (outputs carry float64 accuracy: the suite then compares with the float64 tolerances).
# "io:save" + "io:load" (older drivers) mean both io capabilities. "op:heads": the optional head methods below.
BLOCKS = ("Stack", "Fuse", "Split", "BatchSplit", "Parallel", "MultiTask", "Average")


class Unsupported(Exception):
    """Raised by a driver for a valid input it does not implement ("LoRA yes, gated LoRA no", "Stack of one
    adapter only"). The suite books it as a declined draw, never as an error: the example ends there, later
    draws still run, and a test whose every draw was declined is reported as skipped with this message (the
    driver's reason). Raise it from any Driver method, or answer ``supports(config)`` before add_adapter."""


@runtime_checkable
class Driver(Protocol):
    """What an implementation provides. Every method may raise the implementation's own errors; the suite
    classifies them by builtin type (ValueError, TypeError, KeyError, ...)."""

    name: str
    version: str
    capabilities: frozenset

    def load_model(self, model_dir: str) -> object: ...

    # Optional: ``supports(config) -> True | str``. Anything but True declines the config before add_adapter
    # (a str is the reason shown). Drivers without it accept every config or raise Unsupported themselves.

    def add_adapter(self, model, name: str, config: dict) -> None: ...

    def set_adapter_weights(self, model, name: str, tensors: dict) -> None: ...

    def get_adapter_weights(self, model, name: str) -> dict: ...

    def set_active(self, model, setup: Optional[dict]) -> None: ...

    def forward(self, model, input_ids: np.ndarray, attention_mask: np.ndarray, **kw) -> np.ndarray:
        """last_hidden_state (B', T', D) as float32. ``kw`` may hold ``task_ids`` (int array (B,), capability
        ``op:task_ids``): row b runs the MultiTask child ``task_ids[b]`` (MTL-LoRA, any method under MultiTask)."""
        ...

    def save_adapter(self, model, name: str, directory: str) -> None: ...

    def load_adapter(self, model, directory: str, load_as: Optional[str] = None) -> str: ...

    def add_fusion(self, model, names: list, config: dict | str | None = None) -> str: ...

    def get_fusion_weights(self, model, fusion_name: str) -> dict: ...

    def set_fusion_weights(self, model, fusion_name: str, tensors: dict) -> None: ...

    def merge(self, model, name: str) -> None: ...

    def reset(self, model) -> None: ...

    def eject(self, model, name: str) -> None: ...

    # Optional, capability "op:heads" (adapters' flexible heads; configs as head_config.json's "config"):
    # load_head_model(model_dir) -> model of the family's AdapterModel class;
    # add_head(model, name, config: dict) (active); get_head_weights / set_head_weights(model, name[, tensors])
    # with keys "heads.<name>.<i>.<leaf>"; set_active_head(model, name | list of names);
    # forward_heads(model, input_ids, attention_mask, **kw) -> one {field: array} per head output
    # ("logits", or "start_logits" / "end_logits"); save_adapter / load_adapter include the same-named head.


def check_supported(drv, config) -> None:
    """Raise Unsupported when ``drv`` declares (through its optional ``supports``) that it lacks ``config``."""
    fn = getattr(drv, "supports", None)
    if fn is None:
        return
    ok = fn(config)
    if ok is not True:
        why = ok if isinstance(ok, str) and ok else "supports(config) returned " + repr(ok)
        raise Unsupported(why)


def capabilities(drv) -> frozenset:
    """``drv.capabilities`` with the legacy io names expanded: io:save + io:load -> io:roundtrip and
    io:adapters-format (the built-in drivers read and write adapters' directories)."""
    caps = set(drv.capabilities)
    if {"io:save", "io:load"} <= caps:
        caps |= {"io:roundtrip", "io:adapters-format"}
    return frozenset(caps)


def precision(drv) -> str:
    """"float64" when the driver declares ``precision:float64`` (or a ``precision`` attribute), else "float32"."""
    p = getattr(drv, "precision", None)
    if p in ("float32", "float64"):
        return p
    return "float64" if "precision:float64" in getattr(drv, "capabilities", ()) else "float32"


class DriverLoadError(RuntimeError):
    """The named driver cannot be constructed here (missing dependency, bad name)."""


def resolve(spec: str) -> Driver:
    """Build the driver named ``spec``: a built-in name (see BUILTIN_DRIVERS) or ``module:factory``."""
    target = BUILTIN_DRIVERS.get(spec, spec)
    if ":" not in target:
        raise DriverLoadError(f"--driver={spec!r} is neither a built-in driver ({', '.join(BUILTIN_DRIVERS)}) "
                              "nor 'module:factory'.")
    mod_name, factory = target.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise DriverLoadError(f"driver {spec!r}: cannot import {mod_name!r}: {e}") from e
    fn = getattr(mod, factory, None)
    if fn is None:
        raise DriverLoadError(f"driver {spec!r}: module {mod_name!r} has no {factory!r}.")
    drv = fn()
    missing = [a for a in ("name", "version", "capabilities", "load_model", "add_adapter", "forward")
               if not hasattr(drv, a)]
    if missing:
        raise DriverLoadError(f"driver {spec!r}: object from {target} lacks {', '.join(missing)} (see Driver).")
    return drv


def default_driver_name(option: Optional[str]) -> str:
    return option or os.environ.get(ENV_DRIVER) or "minadapters"


def default_reference_name(option: Optional[str]) -> str:
    return option or os.environ.get(ENV_REFERENCE) or "reference"


def describe(drv: Driver) -> str:
    caps = ", ".join(sorted(drv.capabilities))
    return f"{drv.name} {drv.version} [{caps}]"
