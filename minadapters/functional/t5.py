"""T5's own equations: relative position buckets and bias, the RMS layer norm without bias. Spec: T5-RELPOS-1,
T5-RELPOS-2, T5-NORM (spec/encoder_decoder.md, "T5 and MT5"). Pure functions: arrays and integers in, arrays out."""
from __future__ import annotations

import math

import numpy as np


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int, max_distance: int):
    """Bucket of each relative position r = key position − query position. Spec: T5-RELPOS-1.

        bidirectional: n = num_buckets // 2, offset = n · [r > 0], d = |r|
        unidirectional: n = num_buckets, offset = 0, d = max(−r, 0)          (keys after the query: bucket 0)
        e = n // 2;  bucket = offset + (d                                                  if d < e
                                        min(e + ⌊log(d / e) / log(max_distance / e) · (n − e)⌋, n − 1)  else)
    The logarithm is taken in float32 as transformers does (the truncation decides bucket edges).
    int array -> int64 array of the same shape, values in [0, num_buckets)."""
    r = np.asarray(relative_position, dtype=np.int64)
    n = int(num_buckets)
    buckets = np.zeros(r.shape, np.int64)
    if bidirectional:
        n //= 2
        buckets += (r > 0).astype(np.int64) * n
        d = np.abs(r)
    else:
        d = -np.minimum(r, 0)
    e = n // 2
    d_large = np.maximum(d, e).astype(np.float32)          # the log branch is used only where d >= e
    scaled = np.log(d_large / np.float32(e)) / np.float32(math.log(max_distance / e))
    large = e + (scaled * np.float32(n - e)).astype(np.int64)
    large = np.minimum(large, n - 1)
    return buckets + np.where(d < e, d, large)


def relative_position_bias(table, query_positions, key_length: int, *, bidirectional: bool, num_buckets: int,
                           max_distance: int):
    """The additive attention bias of the first layer of a stack. Spec: T5-RELPOS-2.

        bias[0, h, i, j] = table[bucket(j − query_positions[i]), h]          j = 0 .. key_length − 1
    table: (num_buckets, N); query_positions: (Tq,) ints -> (1, N, Tq, key_length), table's dtype."""
    q = np.asarray(query_positions, dtype=np.int64)
    rel = np.arange(key_length, dtype=np.int64)[None, :] - q[:, None]                    # (Tq, Tk)
    b = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                 max_distance=max_distance)
    return np.ascontiguousarray(table[b].transpose(2, 0, 1)[None])                     # (1, N, Tq, Tk)


def t5_layer_norm(x, g, eps: float, ops):
    """T5LayerNorm: g · x / √(mean(x²) + eps), no mean subtraction and no bias, the mean of squares in float32.
    Spec: T5-NORM.  (..., D), (D,) -> (..., D)"""
    if x.dtype == np.float64:
        return ops.rms_norm(x, g, eps)
    return ops.rms_norm(x.astype(np.float32, copy=False), g.astype(np.float32, copy=False), eps).astype(x.dtype)
