"""Backend selection: get_ops, resolve_backend ("auto"), and the process-wide default. Spec: spec/ops.md (OPS-0).

Precedence when a model is built: an explicit ``backend=`` argument, then ``set_backend``,
then the environment variable MINADAPTERS_BACKEND, then "auto" (native when it loads and passes
its self-check, else numpy).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import BackendUnavailableError
from .base import Ops
from .numpy import NumpyOps

BACKEND_NAMES = ("auto", "numpy", "native")
_default: str | None = None


def set_backend(name: str | None) -> None:
    """Make ``name`` ("auto", "numpy" or "native") the default for models built afterwards; None clears it.
    Raises ValueError for an unknown name and BackendUnavailableError when "native" cannot load ("auto"
    never raises). Existing models keep the ops they were built with."""
    global _default
    if name is None:
        _default = None
        return
    get_ops(name)                      # validates the name and that the backend loads
    _default = name


def get_backend() -> str:
    """The backend name a model gets when none is named (see the module docstring for precedence)."""
    if _default is not None:
        return _default
    return os.environ.get("MINADAPTERS_BACKEND") or "auto"


def _native_ops():
    """A NativeOps, or BackendUnavailableError naming why the extension cannot load."""
    try:
        from .native import NativeOps      # imported on demand: loading the extension is the availability test
    except ImportError as e:              # the native module reports why it cannot load
        raise BackendUnavailableError(f"backend 'native' is not available: {e}") from e
    return NativeOps()


@functools.lru_cache(maxsize=1)
def native_self_check() -> str | None:
    """None when the native backend loads and a tiny linear and attention agree with NumpyOps (rtol 1e-4,
    atol 1e-5), else the reason it does not. Run once per process. Spec: OPS-0."""
    try:
        nat, ref = _native_ops(), NumpyOps()
        rng = np.random.default_rng(0)
        x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 37), (19, 37), (19,)))
        q, k, v = (rng.standard_normal((2, 2, 5, 8)).astype(np.float32) for _ in range(3))
        mask = np.where(np.arange(5) < 4, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None, None]
        for op, got, want in (("linear", nat.linear(x, w, b), ref.linear(x, w, b)),
                              ("attention", nat.attention(q, k, v, mask), ref.attention(q, k, v, mask))):
            err = float(np.max(np.abs(got - want)))
            if got.shape != want.shape or not err <= 1e-5 + 1e-4 * float(np.max(np.abs(want))):
                return f"self-check: native {op} differs from numpy by {err:g}"
    except Exception as e:  # noqa: BLE001 — "auto" never raises: any failure means numpy, and the reason is kept
        return f"{type(e).__name__}: {e}"
    return None


def resolve_backend(name: str | None = None) -> str:
    """The concrete backend ("numpy" or "native") that ``get_ops(name)`` gives; None means ``get_backend()``.
    "auto" is "native" when the extension loads and passes native_self_check(), else "numpy"; never raises
    for it. ValueError for an unknown name. Spec: OPS-0."""
    name = get_backend() if name is None else name
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        return "native" if native_self_check() is None else "numpy"
    return name


def get_ops(name: str | None = None) -> Ops:
    """The Ops called ``name`` ("auto", "numpy" or "native"; None: ``get_backend()``). "native" raises
    BackendUnavailableError when the extension cannot load; "auto" falls back to numpy. Spec: OPS-0."""
    concrete = resolve_backend(name)
    return _native_ops() if concrete == "native" else NumpyOps()
