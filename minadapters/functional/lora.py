"""LoRA-family equations as pure functions (no state, no context). Spec: LORA-1 .. LORA-9.

Shapes: x (B, T, K) layer input, W (M, K) base weight (out, in), b (M,) or None.
"""
from __future__ import annotations

import numpy as np



def lora_delta(h, A, B, *, scale, ops):
    """δ = (h Aᵀ) Bᵀ · scale; ``scale`` is alpha/r, or the (B, 1, 1) gate. Spec: LORA-1.

        h: (B, T, K), A: (r, K), B: (M, r) -> (B, T, M)"""
    return ops.linear(ops.linear(h, A), B) * scale


def ia3_vector(l_B, batch: int, *, scale):
    """v = l_Bᵀ broadcast to the batch, times scale (alpha or the gate). Spec: LORA-3.

        l_B: (M, 1) -> (batch, 1, M)"""
    v = np.broadcast_to(l_B.reshape(1, 1, -1), (batch, 1, l_B.size))
    return v * scale


def vera_delta_w(A, B, D, Bv):
    """ΔW = Λ_B B Λ_D A with full (trainable) Λ matrices. Spec: LORA-4.

        A: (r, K), B: (M, r), D: (r, r), Bv: (M, M) -> (M, K)"""
    return Bv @ B @ D @ A


def dora_norm(W, dW):
    """n = ‖W + ΔW‖₂ per output row (ΔW unscaled, as adapters). Spec: LORA-5.  -> (M,)"""
    return np.linalg.norm(W + dW, axis=1)


def dora_combine(base, H, m, n):
    """y = (m / n) ⊙ (base + H), bias inside. Spec: LORA-5.  base, H: (B, T, M); m: (M, 1); n: (M,)"""
    return (m.reshape(-1) / n) * (base + H)


def mtl_delta(h, A, values, B, weights, *, sharpness, scale, ops):
    """δ = Σ_k w_k (h Aᵀ diag(values) B_kᵀ) / Σ_k w_k · scale, w = exp(weights / sharpness). Spec: LORA-6.

        h: (B, T, K), A: (r, K), values: (r,), B: (n, M, r), weights: (n,) -> (B, T, M)"""
    xa = ops.linear(h, A) * values                              # (B, T, r)
    w = np.exp(weights / sharpness).astype(xa.dtype)
    per_up = [ops.linear(xa, B[k]) * (w[k] / w.sum()) for k in range(B.shape[0])]    # n x (B, T, M)
    return sum(per_up[1:], per_up[0]) * scale


def grouped_delta(h, A, B, groups: int, *, ops):
    """Fused-qkv LoRA: group j maps h through A_j = A[j·r:(j+1)·r], B_j = B[j·M':(j+1)·M']. Spec: LORA-7.

        h: (B, T, K), A: (g·r, K), B: (g·M', r) -> (B, T, g·M')  (the groups concatenated)"""
    r = A.shape[0] // groups
    mo = B.shape[0] // groups
    xa = ops.linear(h, A)                                       # (B, T, g·r)
    outs = [ops.linear(xa[..., j * r:(j + 1) * r], B[j * mo:(j + 1) * mo]) for j in range(groups)]
    return ops.concat(outs, -1)


def grouped_delta_w(A, B, groups: int):
    """ΔW of the fused-qkv LoRA: the stacked per-group B_j A_j. Spec: LORA-7.  -> (g·M', K)"""
    r = A.shape[0] // groups
    mo = B.shape[0] // groups
    return np.concatenate([B[j * mo:(j + 1) * mo] @ A[j * r:(j + 1) * r] for j in range(groups)], axis=0)


def scatter_thirds(x, enabled, fill):
    """Place the enabled thirds' columns into a (…, 3·M') array filled with ``fill``. Spec: LORA-7.

        x: (…, g·M') with g = sum(enabled), enabled: 3 bools -> (…, 3·M')"""
    g = sum(enabled)
    mo = x.shape[-1] // g
    out = np.full(x.shape[:-1] + (3 * mo,), fill, dtype=x.dtype)
    j = 0
    for third, on in enumerate(enabled):
        if on:
            out[..., third * mo:(third + 1) * mo] = x[..., j * mo:(j + 1) * mo]
            j += 1
    return out


# ---- backward (training). Spec: GRAD-LORA, GRAD-IA3 (spec/training.md) ---------------------------------------------
def lora_backward(dd, x, A, B, *, scale):
    """Gradients of δ = s · (x Aᵀ) Bᵀ (LORA-1) with respect to x, A and B. Spec: GRAD-LORA.

        g = s · dδ B  (…, r);   dx = g A;   dA = Σ_rows gᵀ x;   dB = s · Σ_rows dδᵀ (x Aᵀ)
    dd (…, M), x (…, K), A (r, K), B (M, r) -> dx (…, K), dA (r, K), dB (M, r)"""
    d2, x2 = dd.reshape(-1, dd.shape[-1]), x.reshape(-1, x.shape[-1])
    g = (d2 @ B) * scale                                              # (rows, r)
    dx = (g @ A).reshape(x.shape)
    dA = g.T @ x2
    dB = (d2 * scale).T @ (x2 @ A.T)
    return dx, dA, dB


def ia3_backward(dout, y, v):
    """Gradients of out = y ⊙ v (LORA-3, v = alpha · l_Bᵀ) with respect to y and v. Spec: GRAD-IA3.

        dy = dout ⊙ v;   dv = Σ_rows dout ⊙ y          dout, y (…, M), v (M,) -> dy (…, M), dv (M,)"""
    return dout * v, (dout * y).reshape(-1, y.shape[-1]).sum(0)


def gather_thirds(y, enabled):
    """Adjoint of scatter_thirds: the enabled thirds' columns of a (…, 3·M') array, concatenated. Spec: GRAD-LORA.
    -> (…, g·M')"""
    mo = y.shape[-1] // 3
    return np.concatenate([y[..., t * mo:(t + 1) * mo] for t, on in enumerate(enabled) if on], axis=-1)


def grouped_delta_backward(dd, x, A, B, groups: int, *, scale):
    """Gradients of s · grouped_delta (LORA-7): GRAD-LORA per group j with A_j, B_j. Spec: GRAD-LORA.

    dd (…, g·M') -> dx (…, K), dA (g·r, K), dB (g·M', r)"""
    r, mo = A.shape[0] // groups, B.shape[0] // groups
    dx, dA, dB = np.zeros(x.shape, dd.dtype), np.zeros_like(A, dtype=dd.dtype), np.zeros_like(B, dtype=dd.dtype)
    for j in range(groups):
        a, b = A[j * r:(j + 1) * r], B[j * mo:(j + 1) * mo]
        gx, dA[j * r:(j + 1) * r], dB[j * mo:(j + 1) * mo] = lora_backward(dd[..., j * mo:(j + 1) * mo], x, a, b,
                                                                           scale=scale)
        dx += gx
    return dx, dA, dB


def vera_delta_w_backward(dW, A, B, D, Bv):
    """Gradients of ΔW = Λ_B B Λ_D A (LORA-4) with respect to the trainable Λ_D (vera_D) and Λ_B (vera_B); the
    shared A and B are frozen. Spec: GRAD-VERA.  dW (M, K) -> dD (r, r), dBv (M, M)"""
    return (Bv @ B).T @ dW @ A.T, dW @ (B @ D @ A).T


def dora_backward(dout, base, H, m, n, W, dW_):
    """Gradients of y = (m / n) ⊙ (base + H), n = ‖W + ΔW‖ per output row (LORA-5, ΔW unscaled). Spec: GRAD-DORA.

        u = base + H;  du = dout ⊙ m/n;  dm = Σ_rows dout ⊙ u / n;  dn = −Σ_rows dout ⊙ m ⊙ u / n²
        dΔW = (dn / n) ⊙ (W + ΔW)   (row-wise)
    -> du (…, M) (the gradient of base and of H), dm (M, 1), dΔW (M, K)"""
    u = base + H
    mv = m.reshape(-1)
    du = dout * (mv / n)
    flat = (dout * u).reshape(-1, u.shape[-1]).sum(0)
    dm = (flat / n).reshape(-1, 1)
    dn = -flat * mv / (n * n)
    return du, dm, (dn / n)[:, None] * (W + dW_)
