"""AdapterFusion attention over adapter outputs. Spec: FUSION-1."""
from __future__ import annotations

import numpy as np


def fusion_attention(q, U, r, p, cfg, *, T, ops):
    """Attend from the query over the N adapter outputs at each token. Spec: FUSION-1.

        q: (B, T, D) query, U: (B, T, N, D) scaled up-projections, r: (B, T, D) residual
        scores = (W_q q + b_q) · (W_k U + b_k)   (no 1/√D)     p = softmax(scores / T)
        c = Σ_i p_i V_i (+ r unless residual_before)  -> (B, T, D), p: (B, T, N)"""
    if cfg["residual_before"]:
        U = U + r[:, :, None, :]          # COMPAT(adapters): enters the keys as well as the values
    Q = ops.linear(q, p["query.weight"], p["query.bias"]) if cfg["query"] else q
    K = ops.linear(U, p["key.weight"], p["key.bias"]) if cfg["key"] else U
    V = ops.linear(U, p["value.weight"]) if (cfg["value"] and cfg["value_before_softmax"]) else U
    scores = np.einsum("btd,btnd->btn", Q, K)
    probs = ops.softmax(scores / scores.dtype.type(T), axis=-1)
    c = np.einsum("btn,btnd->btd", probs, V)
    if cfg["value"] and not cfg["value_before_softmax"]:
        c = ops.linear(c, p["value.weight"])
    if not cfg["residual_before"]:
        c = c + r
    return c, probs
