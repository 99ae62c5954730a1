"""The reference Ops: plain NumPy. Spec: OPS-1 .. OPS-6 (spec/00-notation.md)."""
from __future__ import annotations

import numpy as np

from ..functional import activations as act
from ..functional.linalg import mm


class NumpyOps:
    """float32 (or float64) in and out. Weights are (out, in)."""

    name = "numpy"

    def linear(self, x, w, b=None):
        """y = x wᵀ + b. Spec: OPS-1.  (..., K), (M, K), (M,) -> (..., M)"""
        # A 2-D product: NumPy's stacked (3-D @ 2-D) matmul skips BLAS for transposed operands and is slow.
        y = mm(x, w.T)
        if b is not None:
            y = y + b
        return y

    def attention(self, q, k, v, mask):
        """softmax(q kᵀ / √Dh + mask) v. Spec: OPS-2.  (B, N, Tq, Dh), (B, N, Tk, Dh) x2, mask broadcastable
        to (B, N, Tq, Tk) and additive -> (B, N, Tq, Dh)"""
        scores = (q @ np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]).astype(q.dtype)
        if mask is not None:
            scores = scores + mask
        return self.softmax(scores) @ v

    def softmax(self, x, axis=-1):
        """Spec: OPS-3."""
        x = x - np.max(x, axis=axis, keepdims=True)
        e = np.exp(x)
        return e / np.sum(e, axis=axis, keepdims=True)

    def layer_norm(self, x, g, b, eps):
        """(x - mean) / sqrt(var + eps) * g + b over the last axis (biased variance). Spec: OPS-4."""
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(-1, keepdims=True)
        y = xc / np.sqrt(var + x.dtype.type(eps))
        return y * g + b if b is not None else y * g

    def rms_norm(self, x, g, eps):
        """x / sqrt(mean(x²) + eps) * g, computed in float32 as transformers does. Spec: OPS-5."""
        var = (x * x).mean(-1, keepdims=True)
        return g * (x / np.sqrt(var + x.dtype.type(eps)))

    def activation(self, name):
        """The activation function called ``name`` (adapters' names). Spec: ACT-1."""
        return act.get_activation(name)
