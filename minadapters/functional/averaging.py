"""Weight averaging of adapters (``model.average_adapter``) as pure functions. Spec: API-5.

Arrays are combined in float64 and returned in float64; callers cast to the parameter's dtype.
"""
from __future__ import annotations

import numpy as np


def weighted_sum(arrays, weights) -> np.ndarray:
    """Σ_i w_i t_i over same-shaped arrays. Spec: API-5 (linear)."""
    out = np.zeros(np.shape(arrays[0]), np.float64)
    for t, w in zip(arrays, weights):
        out += float(w) * np.asarray(t, np.float64)
    return out


def negate_b_sum(arrays, weights, leaf: str) -> np.ndarray:
    """lora_A: Σ |w_i| A_i; lora_B: Σ w_i B_i (Zhang et al. 2023). Spec: API-5 (lora_linear_only_negate_b)."""
    if leaf == "lora_A":
        return weighted_sum(arrays, [abs(float(w)) for w in weights])
    if leaf == "lora_B":
        return weighted_sum(arrays, weights)
    raise ValueError(f"lora_linear_only_negate_b combines only lora_A and lora_B; got {leaf!r}.")


def svd_lora(As, Bs, weights, rank: int):
    """ΔW = Σ w_i B_i A_i (unscaled, (out, in)); ΔW ≈ U_k diag(S_k) V_kᵀ -> (A = V_kᵀ (k, in), B = U_k diag(S_k) (out, k)).

    Spec: API-5 (lora_delta_w_svd)."""
    dw = np.zeros((np.shape(Bs[0])[0], np.shape(As[0])[1]), np.float64)       # (out, in)
    for A, B, w in zip(As, Bs, weights):
        dw += float(w) * (np.asarray(B, np.float64) @ np.asarray(A, np.float64))
    U, S, Vh = np.linalg.svd(dw, full_matrices=False)                      # U (out, m), S (m,), Vh (m, in)
    return Vh[:rank], U[:, :rank] * S[:rank]
