"""AdapterFusion attention over adapter outputs. Spec: FUSION-1."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backward import linear_backward, softmax_backward

# adapters' AdapterFusion with temperature=True starts at T = 50 (it decays only while training).
TEMPERATURE_START = 50.0


def fusion_attention(q, U, r, p, cfg, *, T, ops):
    """Attend from the query over the N adapter outputs at each token. Spec: FUSION-1.

        q: (B, T, D) query, U: (B, T, N, D) scaled up-projections, r: (B, T, D) residual
        scores = (W_q q + b_q) · (W_k U + b_k)   (no 1/√D)     p = softmax(scores / T)
        c = Σ_i p_i V_i (+ r unless residual_before)  -> (B, T, D), p: (B, T, N)
    Computed as (W_kᵀ Q)·u_i + Q·b_k and W_v Σ_i p_i u_i (the same sums, reassociated; V has no bias)."""
    if cfg["residual_before"]:
        U = U + r[:, :, None, :]          # COMPAT(adapters): enters the keys as well as the values
    Q = ops.linear(q, p["query.weight"], p["query.bias"]) if cfg["query"] else q
    if cfg["key"]:
        # Q·(W_k u + b_k) = (Wₖᵀ Q)·u + Q·b_k: one product per token instead of one per adapter output.
        w_k = p["key.weight"]
        scores = ops.matmul(U, ops.linear(Q, w_k.T)[..., None])[..., 0]              # (B, T, N)
        if p.get("key.bias") is not None:
            scores = scores + ops.linear(Q, p["key.bias"].astype(Q.dtype, copy=False)[None, :])
    else:
        scores = ops.matmul(U, Q[..., None])[..., 0]
    probs = ops.softmax(scores / scores.dtype.type(T), axis=-1)
    c = ops.matmul(probs[:, :, None, :], U)[:, :, 0, :]                               # (B, T, D)
    if cfg["value"]:
        # value has no bias, so Σ_i p_i (W_v u_i) = W_v Σ_i p_i u_i whether it is applied before or after softmax
        c = ops.linear(c, p["value.weight"])
    if not cfg["residual_before"]:
        c = c + r
    return c, probs


# ---- backward (training). Spec: GRAD-FUSION (spec/training.md) ----------------------------------------------------
class FusionCache(NamedTuple):
    q: np.ndarray         # (B, T, D) query input
    Q: np.ndarray         # (B, T, D) projected query
    U: np.ndarray         # (B, T, N, D) values / keys input (U + r when residual_before)
    K: np.ndarray         # (B, T, N, D) keys
    probs: np.ndarray     # (B, T, N)
    mix: np.ndarray       # (B, T, D) Σ_i p_i U_i
    T: float


def fusion_attention_forward(q, U, r, p, cfg, *, T, ops):
    """FUSION-1 written out with its cache (keys computed per adapter output). Spec: GRAD-FUSION.  -> c, cache"""
    if not (cfg["query"] or cfg["key"] or cfg["value"]):
        raise ValueError("training: an AdapterFusion without query, key and value has no backward in minadapters.")
    if cfg["residual_before"]:
        U = U + r[:, :, None, :]
    Q = ops.linear(q, p["query.weight"], p["query.bias"]) if cfg["query"] else q
    K = ops.linear(U, p["key.weight"], p.get("key.bias")) if cfg["key"] else U
    scores = (K * Q[:, :, None, :]).sum(-1)                                       # (B, T, N)
    probs = ops.softmax(scores / scores.dtype.type(T), axis=-1)
    mix = (probs[..., None] * U).sum(2)                                           # (B, T, D)
    c = ops.linear(mix, p["value.weight"]) if cfg["value"] else mix
    if not cfg["residual_before"]:
        c = c + r
    return c, FusionCache(q, Q, U, K, probs, mix, float(T))


def fusion_attention_backward(dc, cache: FusionCache, p, cfg):
    """Gradients of FUSION-1. Spec: GRAD-FUSION.

        dmix = dc W_v;  dW_v = Σ dcᵀ mix;  dp_i = dmix · U_i;  dU_i = p_i dmix
        dS = softmax'(dp) / T;  dQ = Σ_i dS_i K_i;  dK_i = dS_i Q  →  dU_i += dK_i W_k;  dW_k, db_k
        dq = dQ W_q;  dW_q, db_q;  residual: dr = dc (after) or Σ_i dU_i (before, U' = U + r)
    -> dq (B, T, D), dU (B, T, N, D), dr (B, T, D), grads {leaf: array}"""
    q, Q, U, K, probs, mix, T = cache
    grads = {}
    dr = None if cfg["residual_before"] else dc
    if cfg["value"]:
        dmix, grads["value.weight"], _ = linear_backward(dc, mix, p["value.weight"], has_bias=False)
    else:
        dmix = dc
    dp = (dmix[:, :, None, :] * U).sum(-1)                                        # (B, T, N)
    dU = probs[..., None] * dmix[:, :, None, :]
    ds = softmax_backward(dp, probs) / dp.dtype.type(T)
    dQ = (ds[..., None] * K).sum(2)
    dK = ds[..., None] * Q[:, :, None, :]
    if cfg["key"]:
        dUk, grads["key.weight"], db = linear_backward(dK, U, p["key.weight"], has_bias=p.get("key.bias") is not None)
        if db is not None:
            grads["key.bias"] = db
        dU = dU + dUk
    else:
        dU = dU + dK
    if cfg["query"]:
        dq, grads["query.weight"], grads["query.bias"] = linear_backward(dQ, q, p["query.weight"])
    else:
        dq = dQ
    if cfg["residual_before"]:
        dr = dU.sum(2)
    return dq, dU, dr, grads
