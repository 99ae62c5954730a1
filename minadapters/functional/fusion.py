"""AdapterFusion attention over adapter outputs. Spec: FUSION-1."""
from __future__ import annotations

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
