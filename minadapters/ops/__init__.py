"""Compute backends behind one Ops protocol (ops/base.py). ``numpy`` is the reference; ``native`` (C kernels)
must match it within the tolerance table; ``auto`` is native when it loads and passes a self-check, else
numpy. Spec: spec/ops.md (OPS-0)."""
from .backend import BACKEND_NAMES, get_backend, get_ops, native_self_check, resolve_backend, set_backend
from .base import Ops, check_conforms
from .numpy import NumpyOps

__all__ = ["Ops", "NumpyOps", "BACKEND_NAMES", "get_ops", "get_backend", "set_backend", "resolve_backend",
           "native_self_check", "check_conforms"]
