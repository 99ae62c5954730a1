"""The one interface every compute backend implements completely. Spec: spec/ops.md (OPS-0 .. OPS-14).

Arrays are float32 in and out (NumpyOps also takes float64 and keeps it); weights are (out, in);
masks are additive.  A backend is a class with every member below; ``check_conforms`` says which
are missing.  Callers never test for a member (no ``hasattr``): what is declared here is there.
"""
from __future__ import annotations

import inspect
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Ops(Protocol):
    """Compute backend. Shapes: B batch, N heads, T tokens, D / K in, M out, r rank, Dh head size."""

    name: str

    def linear(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """y = x wᵀ + b. OPS-1.  (..., K), (M, K), (M,) -> (..., M)"""
        ...

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a @ b with np.matmul's batching and broadcasting, both at least 2-D. OPS-10."""
        ...

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """softmax(q kᵀ / √Dh + mask) v. OPS-2.  (B, N, Tq, Dh), (B, Nkv, Tk, Dh) x2 -> (B, N, Tq, Dh);
        Nkv divides N (GQA: query head h reads kv head h // (N / Nkv))."""
        ...

    def softmax(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """OPS-3."""
        ...

    def layer_norm(self, x: np.ndarray, g: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
        """(x − μ) / √(σ² + eps) · g + b over the last axis. OPS-4."""
        ...

    def rms_norm(self, x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
        """x / √(mean(x²) + eps) · g. OPS-5."""
        ...

    def activation(self, name: str | None) -> Callable[[np.ndarray], np.ndarray]:
        """The elementwise activation called ``name`` (ACT-1 names). OPS-6."""
        ...

    def bottleneck(self, x: np.ndarray, wd: np.ndarray, bd: np.ndarray | None, wu: np.ndarray,
                   bu: np.ndarray | None, scale: float = 1.0, non_linearity: str | None = "relu") -> np.ndarray:
        """scale · (act(x wdᵀ + bd) wuᵀ + bu). OPS-7.  (..., D), (r, D), (r,), (D, r), (D,) -> (..., D)"""
        ...

    def lora_add(self, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
        """y += scale · (x aᵀ) bᵀ in place; returns y. OPS-8.  y (..., M), x (..., K), a (r, K), b (M, r)"""
        ...

    def sgmv_lora_add(self, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, seg_start: Sequence[int],
                      seg_adapter: Sequence[int], scales: Sequence[float]) -> np.ndarray:
        """Segmented LoRA: rows seg_start[s]:seg_start[s+1] add scales[i] · (x a[i]ᵀ) b[i]ᵀ, i = seg_adapter[s]
        (−1: none); in place, returns y. OPS-9.  y (rows, M), x (rows, K), a (A, r, K), b (A, M, r)"""
        ...

    def concat(self, arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
        """np.concatenate(arrays, axis). OPS-11."""
        ...

    def take(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """table[ids] row gather; ids.shape + (D,); IndexError outside [0, V). OPS-12.  (V, D), ids -> (..., D)"""
        ...

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """x·cos + rotate_half(x)·sin. OPS-13.  (B, N, T, Dh), (B, T, Dh) x2 -> (B, N, T, Dh)"""
        ...

    def repeat_batch(self, x: np.ndarray, n: int) -> np.ndarray:
        """n copies along axis 0, channel-major: np.concatenate([x] * n, 0). OPS-14."""
        ...


def protocol_members(protocol: type = Ops) -> tuple:
    """The member names a backend must have: the Protocol's annotated attributes and its methods."""
    names = set(protocol.__annotations__)
    names |= {k for k, v in vars(protocol).items() if callable(v) and not k.startswith("_")}
    return tuple(sorted(names))


def missing_members(backend: object, protocol: type = Ops) -> list:
    """Members of ``protocol`` that ``backend`` (an instance or a class) lacks; [] when it conforms.
    Methods must be callable; annotated attributes (``name``) must be a str.  The conformance check only:
    dispatch never asks what a backend has."""
    has = dict(inspect.getmembers(backend))
    missing = []
    for member in protocol_members(protocol):
        value = has.get(member)
        ok = isinstance(value, str) if member in protocol.__annotations__ else callable(value)
        if not ok:
            missing.append(member)
    return missing


def check_conforms(backend: object, protocol: type = Ops) -> None:
    """Raise TypeError naming every member of the Ops protocol ``backend`` lacks. Spec: OPS-0."""
    missing = missing_members(backend, protocol)
    if missing:
        label = backend.__name__ if isinstance(backend, type) else type(backend).__name__
        raise TypeError(f"{label} does not implement the Ops protocol: missing {', '.join(missing)} "
                        f"(required: {', '.join(protocol_members(protocol))})")
