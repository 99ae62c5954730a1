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


# ---- backward (training). Spec: GRAD-PHM (spec/training.md) -------------------------------------------------------
def kron_sum_backward(dH, rule, W):
    """Gradients of H = Σ_i kron(rule[i], W[i]) (PHM-1). Spec: GRAD-PHM.

        dH viewed (a, p, b, q):  drule[i, a, b] = Σ_{c,d} dH[a, c, b, d] W[i, c, d];
                                 dW[i, c, d]    = Σ_{a,b} dH[a, c, b, d] rule[i, a, b]
    dH (n·p, n·q) -> drule (n, n, n), dW (n, p, q)"""
    n, a, b = rule.shape
    _, p, q = W.shape
    d4 = dH.reshape(a, p, b, q)
    return np.einsum("acbd,icd->iab", d4, W), np.einsum("acbd,iab->icd", d4, rule)


def factor_product_backward(dP, left, right):
    """Gradients of P = left @ right (batched, PHM-2). Spec: GRAD-PHM.  -> dleft, dright"""
    return np.matmul(dP, np.swapaxes(right, -1, -2)), np.matmul(np.swapaxes(left, -1, -2), dP)
