"""Backward of the base layers a Transformer is built from: linear, LayerNorm, masked softmax attention.

Spec: GRAD-LINEAR, GRAD-LN, GRAD-ATTN (spec/training.md). llm.c style: each ``*_forward`` returns its output
and the cache its ``*_backward`` reads; no graph, no engine. Plain NumPy in the array's own dtype (float64 for the
finite-difference checks); the forwards use ``ops`` so a training forward computes what the inference forward does.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def linear_backward(dy, x, w, *, need_weight=True, has_bias=True):
    """Gradients of y = x Wᵀ + b. Spec: GRAD-LINEAR.

        dx = dy W          dW = Σ_rows dyᵀ x          db = Σ_rows dy
    dy (..., M), x (..., K), W (M, K) -> dx (..., K), dW (M, K) | None, db (M,) | None.
    ``need_weight=False`` (a frozen linear) skips dW and db."""
    dx = (_rows(dy) @ w).reshape(dy.shape[:-1] + (w.shape[1],))
    if not need_weight:
        return dx, None, None
    dw = _rows(dy).T @ _rows(x)
    db = _rows(dy).sum(0) if has_bias else None
    return dx, dw, db


class LNCache(NamedTuple):
    xhat: np.ndarray      # (..., D) normalised input
    rstd: np.ndarray      # (..., 1) 1 / sqrt(var + eps)


def layer_norm_forward(x, g, b, eps, *, ops):
    """y = x̂ g + b with x̂ = (x − μ) / √(σ² + eps). Spec: GRAD-LN.  (..., D) -> (..., D), LNCache"""
    y = ops.layer_norm(x, g, b, eps)
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + x.dtype.type(eps))
    return y, LNCache(xc * rstd, rstd)


def layer_norm_backward(dy, cache: LNCache, g, *, need_params=True):
    """Gradients of LayerNorm. Spec: GRAD-LN.

        ĝ = dy g;   dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ x̂))
        dg = Σ_rows dy x̂;   db = Σ_rows dy
    dy (..., D) -> dx (..., D), dg (D,) | None, db (D,) | None."""
    dxhat = dy * g
    dx = cache.rstd * (dxhat - dxhat.mean(-1, keepdims=True)
                       - cache.xhat * (dxhat * cache.xhat).mean(-1, keepdims=True))
    if not need_params:
        return dx, None, None
    return dx, _rows(dy * cache.xhat).sum(0), _rows(dy).sum(0)


class AttnCache(NamedTuple):
    q: np.ndarray         # (B, N, Tq, Dh)
    k: np.ndarray         # (B, N, Tk, Dh)
    v: np.ndarray         # (B, N, Tk, Dh)
    probs: np.ndarray     # (B, N, Tq, Tk)
    keep: object = None   # (B, N, Tq, Tk) scaled dropout mask of the probabilities, or None


def attention_forward(q, k, v, mask, *, ops, dropout=None):
    """ctx = drop(softmax(q kᵀ / √Dh + mask)) v. Spec: GRAD-ATTN, GRAD-DROPOUT.
    (B, N, Tq, Dh), (B, N, Tk, Dh) x2 -> (B, N, Tq, Dh); ``dropout(shape, dtype)`` gives a scaled mask or None."""
    scores = ops.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]).astype(q.dtype)
    probs = ops.softmax(scores if mask is None else scores + mask, axis=-1)
    keep = None if dropout is None else dropout(probs.shape, probs.dtype)
    return ops.matmul(probs if keep is None else probs * keep, v), AttnCache(q, k, v, probs, keep)


def softmax_backward(dp, p):
    """d softmax: ds = p ⊙ (dp − Σ_j dp_j p_j) over the last axis. Spec: GRAD-ATTN."""
    return p * (dp - (dp * p).sum(-1, keepdims=True))


def attention_backward(dctx, cache: AttnCache):
    """Gradients of masked softmax attention. Spec: GRAD-ATTN.

        dP = dctx Vᵀ;   dV = Pᵀ dctx;   dS = P ⊙ (dP − Σ_j dP P) / √Dh;   dQ = dS K;   dK = dSᵀ Q
    The additive mask is a constant: masked keys have P = 0, so they get no gradient."""
    q, k, v, p, keep = cache
    dv = np.swapaxes(p if keep is None else p * keep, -1, -2) @ dctx
    dp = dctx @ np.swapaxes(v, -1, -2)
    ds = softmax_backward(dp if keep is None else dp * keep, p) / np.sqrt(q.shape[-1]).astype(q.dtype)
    return ds @ k, np.swapaxes(ds, -1, -2) @ q, dv


def dropout_mask(rng, shape, p: float, dtype):
    """Inverted dropout's scaled mask: 1[u ≥ p] / (1 − p), u ~ U[0, 1) from ``rng`` (a NumPy Generator).
    Spec: GRAD-DROPOUT.  y = x ⊙ mask;  dx = dy ⊙ mask"""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p!r}; expected a number in [0, 1).")
    return ((rng.random(shape) >= p) / (1.0 - p)).astype(dtype)


class LayerNormFn:
    """A LayerNorm with fixed parameters as a forward / backward pair, passed where a forward passes the closure
    ``layer_norm(t)`` (a sub-layer's own LN, frozen in adapter training). Spec: GRAD-LN."""

    __slots__ = ("g", "b", "eps", "ops")

    def __init__(self, g, b, eps, ops):
        self.g, self.b, self.eps, self.ops = g, b, eps, ops

    def __call__(self, x):
        return self.ops.layer_norm(x, self.g, self.b, self.eps)

    def forward(self, x):
        return layer_norm_forward(x, self.g, self.b, self.eps, ops=self.ops)

    def backward(self, dy, cache):
        return layer_norm_backward(dy, cache, self.g, need_params=False)[0]


class RMSCache(NamedTuple):
    xhat: np.ndarray      # (..., D) x · r
    rstd: np.ndarray      # (..., 1) r = 1 / sqrt(mean(x²) + eps)


def rms_norm_forward(x, g, eps, *, ops):
    """y = g · x / √(mean(x²) + eps), with its cache (float32 at least, as the forward). Spec: GRAD-RMS."""
    xf = x if x.dtype == np.float64 else x.astype(np.float32)
    y = ops.rms_norm(xf, g.astype(xf.dtype, copy=False), eps).astype(x.dtype, copy=False)
    rstd = 1.0 / np.sqrt((xf * xf).mean(-1, keepdims=True) + xf.dtype.type(eps))
    return y, RMSCache(xf * rstd, rstd)


def rms_norm_backward(dy, cache: RMSCache, g):
    """Gradients of RMSNorm with respect to x (frozen g). Spec: GRAD-RMS.

        ĝ = dy ⊙ g;   dx = r · (ĝ − x̂ · mean(ĝ ⊙ x̂))"""
    dxhat = dy * g
    return (cache.rstd * (dxhat - cache.xhat * (dxhat * cache.xhat).mean(-1, keepdims=True))).astype(dy.dtype,
                                                                                                     copy=False)


def rope_backward(dy, cos, sin):
    """Gradient of y = x·cos + rotate_half(x)·sin (OPS-13): dx = dy·cos + rotate_halfᵀ(dy·sin),
    rotate_halfᵀ([a, b]) = [b, −a]. Spec: GRAD-ROPE.  dy (B, N, T, Dh); cos, sin (B, T, Dh)"""
    s = dy * sin[:, None]
    h = dy.shape[-1] // 2
    return dy * cos[:, None] + np.concatenate([s[..., h:], -s[..., :h]], axis=-1)


def repeat_kv_backward(dy, n_rep: int):
    """Gradient of GQA's repeat (query head h reads key/value head h // n_rep): the sum over each group.
    Spec: GRAD-ATTN.  (B, Nkv·n_rep, T, Dh) -> (B, Nkv, T, Dh)"""
    if n_rep == 1:
        return dy
    B, N, T, Dh = dy.shape
    return dy.reshape(B, N // n_rep, n_rep, T, Dh).sum(2)
