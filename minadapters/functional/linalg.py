"""Matrix products over the last axis, as 2-D BLAS calls."""
from __future__ import annotations

import math


def mm(x, m):
    """x @ m over the last axis of x. (..., K), (K, M) -> (..., M).

    NumPy's stacked matmul (3-D @ 2-D) does not use BLAS for transposed operands and is many times slower."""
    return (x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) @ m).reshape(x.shape[:-1] + (m.shape[-1],))
