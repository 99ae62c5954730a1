"""Process-wide default compute backend. Spec: spec/ops.md (OPS-0).

Precedence when a model is built: an explicit ``backend=`` argument, then ``set_backend``,
then the environment variable MINADAPTERS_BACKEND, then "numpy".
"""
from __future__ import annotations

import os

_BACKEND_NAMES = ("numpy", "native")
_default: str | None = None


def set_backend(name: str | None) -> None:
    """Make ``name`` ("numpy" or "native") the default for models built afterwards; None clears it.
    Raises ValueError for an unknown name and BackendUnavailableError when "native" cannot load.
    Existing models keep the ops they were built with."""
    global _default
    if name is None:
        _default = None
        return
    from . import get_ops
    get_ops(name)                      # validates the name and that the backend loads
    _default = name


def get_backend() -> str:
    """The backend a model gets when none is named (see the module docstring for precedence)."""
    if _default is not None:
        return _default
    return os.environ.get("MINADAPTERS_BACKEND") or "numpy"
