"""The mean-over-tokens gate shared by gated bottleneck, LoRA and prefix-tuning adapters. Spec: GATE-1."""
from __future__ import annotations

from .activations import sigmoid


def mean_gate(x, w, b, *, ops):
    """g = mean_T σ(x W_gᵀ + b_g): one value per example and gate row. Spec: GATE-1 (LORA-2, PREFIX-3).

        x: (B, T, K), w: (G, K), b: (G,) -> (B, G)"""
    return sigmoid(ops.linear(x, w, b)).mean(axis=1)


def mean_gate_backward(dg, x, w, b):
    """Gradients of g = mean_T σ(x W_gᵀ + b_g) (GATE-1). Spec: GRAD-GATE.

        s = σ(z);  dz = dg / T ⊙ s (1 − s) (every token);  dx = dz W_g;  dW_g = Σ dzᵀ x;  db_g = Σ dz
    dg (B, G), x (B, T, K) -> dx (B, T, K), dW (G, K), db (G,)"""
    z = x @ w.T + b                                                   # (B, T, G)
    s = sigmoid(z)
    dz = (dg[:, None, :] / x.shape[1]) * s * (1.0 - s)
    dz = dz.astype(x.dtype, copy=False)
    return dz @ w, dz.reshape(-1, dz.shape[-1]).T @ x.reshape(-1, x.shape[-1]), dz.reshape(-1, dz.shape[-1]).sum(0)
