"""Parameterized hypercomplex multiplication (PHM) layers of Compacter. Spec: PHM-1, PHM-2.

Pure NumPy: the Kronecker-sum weight and the PHM linear map.
"""
from __future__ import annotations

import numpy as np

from .linalg import mm


def kron_sum(rule, W):
    """H = Σ_i kron(rule[i], W[i]). Spec: PHM-1.

        rule: (n, n, n), W: (n, p, q) -> H: (n·p, n·q), H[a·p + c, b·q + d] = Σ_i rule[i, a, b] W[i, c, d]"""
    n, a, b = rule.shape
    _, p, q = W.shape
    return np.einsum("iab,icd->acbd", rule, W).reshape(a * p, b * q)


def phm_forward(x, rule, W, b=None):
    """y = x H + b, H = kron_sum(rule, W) of shape (in, out) — not transposed like a Linear. Spec: PHM-1.

        x: (..., in) -> (..., out)"""
    y = mm(x, kron_sum(rule, W).astype(x.dtype, copy=False))
    return y + b if b is not None else y


def factor_product(left, right):
    """bmm(left, right): (n, a, k) x (n, k, b) -> (n, a, b). Spec: PHM-2."""
    return np.matmul(left, right)
