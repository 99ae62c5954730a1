"""The mean-over-tokens gate shared by gated bottleneck, LoRA and prefix-tuning adapters. Spec: GATE-1."""
from __future__ import annotations

from .activations import sigmoid


def mean_gate(x, w, b, *, ops):
    """g = mean_T σ(x W_gᵀ + b_g): one value per example and gate row. Spec: GATE-1 (LORA-2, PREFIX-3).

        x: (B, T, K), w: (G, K), b: (G,) -> (B, G)"""
    return sigmoid(ops.linear(x, w, b)).mean(axis=1)
