"""The reference Ops: plain NumPy, every member of the Ops protocol. Spec: spec/ops.md (OPS-1 .. OPS-14).

The fused ops (bottleneck, lora_add, sgmv_lora_add) are written here as the unfused products they
stand for, in the order the generic paths compute them, so a model gives identical results whether
it calls the fused op or composes linear / activation itself on this backend.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ..functional import activations as act


def mm(x, m):
    """x @ m over the last axis as one 2-D product.  (..., K), (K, M) -> (..., M)
    NumPy's stacked matmul (3-D @ 2-D) skips BLAS for transposed operands and is many times slower."""
    return (x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) @ m).reshape(x.shape[:-1] + (m.shape[-1],))


def scalar(scale, dtype, op: str):
    """A Python number or a 0-d / 1-element array as a 0-d array of ``dtype``; ShapeError otherwise."""
    s = np.asarray(scale, dtype=dtype)
    if s.size != 1:
        raise ShapeError(f"{op}: scale has shape {s.shape}; expected a number or a 0-d / 1-element array")
    return s.reshape(())


def check_bottleneck(x, wd, bd, wu, bu) -> None:
    """ShapeError unless x (..., D), wd (r, D), bd (r,) | None, wu (D, r), bu (D,) | None."""
    if wd.ndim != 2 or x.ndim < 1 or x.shape[-1] != wd.shape[1]:
        raise ShapeError(f"bottleneck: x {x.shape} and wd {wd.shape} do not form x (..., D), wd (r, D)")
    r, d = wd.shape
    if wu.shape != (d, r) or (bd is not None and bd.shape != (r,)) or (bu is not None and bu.shape != (d,)):
        raise ShapeError(f"bottleneck: wu {wu.shape}, bd {None if bd is None else bd.shape}, bu "
                         f"{None if bu is None else bu.shape}; expected wu {(d, r)}, bd ({r},), bu ({d},) "
                         f"to match wd {wd.shape}")


def check_lora(y, x, a, b, op: str = "lora_add") -> None:
    """ShapeError unless y (..., M) += x (..., K) a (r, K)ᵀ b (M, r)ᵀ."""
    if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or x.ndim < 1 or x.shape[-1] != a.shape[1] \
            or y.shape != x.shape[:-1] + (b.shape[0],):
        raise ShapeError(f"{op}: shapes y {y.shape}, x {x.shape}, a {a.shape}, b {b.shape} do not form "
                         f"y (..., M) += x (..., K) a (r, K)ᵀ b (M, r)ᵀ")


def per_adapter(a) -> bool:
    """True when an SGMV operand is a sequence of per-adapter 2-D arrays (mixed ranks allowed), not one stack."""
    return isinstance(a, (list, tuple))


def _sgmv_shapes_ok(y, x, a, b, seg_start, seg_adapter, scales) -> bool:
    if not (x.ndim == 2 and y.ndim == 2 and y.shape[0] == x.shape[0] and seg_start.ndim == 1
            and seg_adapter.ndim == 1 and seg_start.shape == (seg_adapter.shape[0] + 1,)):
        return False
    k, m = x.shape[1], y.shape[1]
    if per_adapter(a) or per_adapter(b):
        if not (per_adapter(a) and per_adapter(b) and len(a) == len(b) and scales.shape == (len(a),)):
            return False
        return all(ai.ndim == 2 and bi.ndim == 2 and ai.shape[1] == k and bi.shape == (m, ai.shape[0])
                   for ai, bi in zip(a, b))
    if a.ndim != 3 or b.ndim != 3:
        return False
    n_ad, r, _ = a.shape
    return a.shape[2] == k and b.shape == (n_ad, m, r) and scales.shape == (n_ad,)


def check_segments(y, x, a, b, seg_start, seg_adapter, scales):
    """The SGMV tables as int64 / float32 arrays, after checking them and the shapes (ShapeError for shapes,
    ValueError for a segment table that does not rise from 0 to rows or names an adapter outside [-1, A)).
    a, b: stacks (A, r, K), (A, M, r), or sequences of A per-adapter arrays (r_i, K), (M, r_i)."""
    seg_start = np.ascontiguousarray(seg_start, np.int64)
    seg_adapter = np.ascontiguousarray(seg_adapter, np.int64)
    scales = np.ascontiguousarray(scales, np.float32)
    ok = _sgmv_shapes_ok(y, x, a, b, seg_start, seg_adapter, scales)
    if ok:
        rows, n_ad = x.shape[0], len(a)
    if not ok:
        a_s = [t.shape for t in a] if per_adapter(a) else a.shape
        b_s = [t.shape for t in b] if per_adapter(b) else b.shape
        raise ShapeError(f"sgmv_lora_add: shapes y {y.shape}, x {x.shape}, a {a_s}, b {b_s}, seg_start "
                         f"{seg_start.shape}, seg_adapter {seg_adapter.shape}, scales {scales.shape} are inconsistent; "
                         f"expected y (rows, M), x (rows, K), a (A, r, K), b (A, M, r) (or A arrays (r_i, K), "
                         f"(M, r_i)), scales (A,), seg_start (S + 1,), seg_adapter (S,)")
    if (seg_start[0] != 0 or seg_start[-1] != rows or np.any(np.diff(seg_start) < 0)
            or np.any(seg_adapter < -1) or np.any(seg_adapter >= n_ad)):
        raise ValueError(f"sgmv_lora_add: seg_start must rise from 0 to {rows} and seg_adapter values lie in "
                         f"[-1, {n_ad}); got seg_start={seg_start.tolist()}, seg_adapter={seg_adapter.tolist()}")
    return seg_start, seg_adapter, scales


def repeat_kv_heads(q, kv):
    """GQA for OPS-2: kv (B, Nkv, T, Dh) repeated to q's N heads (head h reads kv head h // (N / Nkv)) when both are
    4-D and Nkv divides N; kv unchanged otherwise (equal heads, or shapes np.matmul broadcasts or refuses)."""
    if q.ndim == 4 and kv.ndim == 4 and 0 < kv.shape[1] < q.shape[1] and q.shape[1] % kv.shape[1] == 0:
        return np.repeat(kv, q.shape[1] // kv.shape[1], axis=1)
    return kv


def check_ids(table, ids, op: str = "take"):
    """ids as an integer ndarray with every value in [0, V) (V = len(table)); TypeError / IndexError otherwise.
    Negative ids are errors, never counted from the end."""
    ids = np.asarray(ids)
    if table.ndim < 1:
        raise ShapeError(f"{op}: table has shape {table.shape}; expected (V, ...)")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids have dtype {ids.dtype}; expected an integer array")
    v = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise IndexError(f"{op}: id {int(bad)} is outside [0, {v}) (the table has {v} rows)")
    return ids


class NumpyOps:
    """float32 (or float64) in and out. Weights are (out, in). Spec: OPS-1 .. OPS-14."""

    name = "numpy"

    def linear(self, x, w, b=None):
        """y = x wᵀ + b. Spec: OPS-1.  (..., K), (M, K), (M,) -> (..., M)"""
        y = mm(x, w.T)
        if b is not None:
            y = y + b
        return y

    def matmul(self, a, b):
        """a @ b, np.matmul's batching and broadcasting over the leading axes. Spec: OPS-10.
        (..., m, k), (..., k, n) -> (..., m, n)"""
        if b.ndim == 2 and a.ndim >= 2:
            return mm(a, b)                    # one BLAS call for a stack against one matrix
        return np.matmul(a, b)

    def attention(self, q, k, v, mask):
        """softmax(q kᵀ / √Dh + mask) v. Spec: OPS-2.  (B, N, Tq, Dh), (B, Nkv, Tk, Dh) x2, mask broadcastable
        to (B, N, Tq, Tk) and additive -> (B, N, Tq, Dh).  Tk = 0: zeros (an empty weighted sum).
        GQA: with 4-D k / v of Nkv heads, Nkv dividing N and Nkv ≠ N, query head h reads kv head h // (N / Nkv)
        (k and v repeated per head here, the reference)."""
        k, v = repeat_kv_heads(q, k), repeat_kv_heads(q, v)
        if k.shape[-2] == 0:
            return np.zeros(np.broadcast_shapes(q.shape[:-2], v.shape[:-2]) + (q.shape[-2], v.shape[-1]),
                            np.result_type(q, k, v))
        scores = (q @ np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]).astype(q.dtype)
        if mask is not None:
            scores = scores + mask
        return self.softmax(scores) @ v

    def softmax(self, x, axis=-1):
        """exp(x − max x) / Σ exp(x − max x). Spec: OPS-3."""
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
        """The activation function called ``name`` (adapters' names; None: identity). Spec: OPS-6, ACT-1."""
        return act.get_activation(name)

    def bottleneck(self, x, wd, bd, wu, bu, scale=1.0, non_linearity="relu"):
        """scale · (act(x wdᵀ + bd) wuᵀ + bu), the residual-free bottleneck branch. Spec: OPS-7.
        x (..., D), wd (r, D), bd (r,), wu (D, r), bu (D,) -> (..., D)"""
        check_bottleneck(x, wd, bd, wu, bu)
        h = self.activation(non_linearity)(self.linear(x, wd, bd))       # (..., r)
        y = self.linear(h, wu, bu)                                         # (..., D)
        return y * scalar(scale, y.dtype, "bottleneck")

    def lora_add(self, y, x, a, b, scale):
        """y += scale · (x aᵀ) bᵀ in place; returns y. Spec: OPS-8.  y (..., M), x (..., K), a (r, K), b (M, r)"""
        check_lora(y, x, a, b)
        y += self.linear(self.linear(x, a), b) * scalar(scale, y.dtype, "lora_add")
        return y

    def sgmv_lora_add(self, y, x, a, b, seg_start, seg_adapter, scales):
        """Segmented LoRA (SGMV): rows seg_start[s]:seg_start[s+1] of x add scales[i] · (x a[i]ᵀ) b[i]ᵀ to y,
        i = seg_adapter[s] (−1: none); in place, returns y. Spec: OPS-9.
        y (rows, M), x (rows, K), a (A, r, K), b (A, M, r), scales (A,); or a, b as sequences of A per-adapter
        arrays (r_i, K), (M, r_i) (mixed ranks, nothing stacked)"""
        seg_start, seg_adapter, scales = check_segments(y, x, a, b, seg_start, seg_adapter, scales)
        for s, i in enumerate(seg_adapter.tolist()):
            lo, hi = int(seg_start[s]), int(seg_start[s + 1])
            if i >= 0 and hi > lo:
                self.lora_add(y[lo:hi], x[lo:hi], a[i], b[i], scales[i])
        return y

    def concat(self, arrays, axis):
        """np.concatenate(arrays, axis) (state concatenation: prefixes, prompts, caches). Spec: OPS-11."""
        return np.concatenate(arrays, axis=axis)

    def take(self, table, ids):
        """table[ids]: rows of table gathered by integer ids of any shape. Spec: OPS-12.
        (V, D), ids (...) -> (..., D); an id outside [0, V) raises IndexError (negative ids never wrap)."""
        return table[check_ids(table, ids)]

    def rope(self, x, cos, sin):
        """x·cos + rotate_half(x)·sin, rotate_half([x1, x2]) = [−x2, x1]. Spec: OPS-13 (DEC-3).
        x (B, N, T, Dh); cos, sin (B, T, Dh) broadcast over the heads -> (B, N, T, Dh)"""
        h = x.shape[-1] // 2
        rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return x * cos[:, None] + rot * sin[:, None]

    def repeat_batch(self, x, n):
        """n copies of x along axis 0, channel-major: [x; x; …] = np.concatenate([x] * n, 0). Spec: OPS-14."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"repeat_batch: n={n!r}; expected an integer >= 1")
        return np.concatenate([x] * int(n), axis=0)
