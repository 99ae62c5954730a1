"""Compute backends. ``numpy`` is the reference; others must match it within the tolerance table."""
from .backend import get_backend, set_backend
from .numpy import NumpyOps

_BACKENDS = {"numpy": NumpyOps}

__all__ = ["NumpyOps", "get_ops", "get_backend", "set_backend"]


def get_ops(name: str = "numpy"):
    """Return the Ops implementation called ``name`` ("numpy" or "native"); raise if unavailable."""
    from ..errors import BackendUnavailableError
    if name == "native":
        try:
            from .native import NativeOps
        except ImportError as e:  # the native module reports why it cannot load
            raise BackendUnavailableError(f"backend 'native' is not available: {e}") from e
        return NativeOps()
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: numpy, native")
    return _BACKENDS[name]()
