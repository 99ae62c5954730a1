"""Bottleneck adapter equations: the branch, the adapter output, the residual placement. Spec: BN-1 .. BN-4."""
from __future__ import annotations

import numpy as np

# nn.LayerNorm's default eps, used by every LayerNorm inside an adapter (adapter_norm_before / _after).
ADAPTER_LN_EPS = 1e-5


def bottleneck(a, wd, bd, wu, bu, *, act, scaling, ops, ln_before=None):
    """Down-project, non-linearity, up-project, scale. Spec: BN-1.

        up = s · (act(LN_before?(a) W_dᵀ + b_d) W_uᵀ + b_u)          a: (B, T, D) -> (B, T, D)
    W_d (d_b, D), W_u (D, d_b) are the effective weights (PHM layers pass their Kronecker sums, PHM-1);
    ``act`` is the activation's name, ``scaling`` a number or the learned (1,) scale; ``ln_before`` (g, b)."""
    if ln_before is not None:
        a = ops.layer_norm(a, ln_before[0], ln_before[1], ADAPTER_LN_EPS)
    if np.size(scaling) > 1:                         # scaling="channel": one learned scale per hidden unit
        return ops.bottleneck(a, wd, bd, wu, bu, 1.0, act) * scaling
    return ops.bottleneck(a, wd, bd, wu, bu, scaling, act)


def adapter_output(up, r, *, gate, is_parallel, residual_before_ln, ln_after, ops):
    """The adapter's output o from its scaled up-projection. Spec: BN-1, BN-4.

        o = up · g (g = GATE-1 gate or 1); sequential: o + r then LN_after, or LN_after then + r
        (residual_before_ln); parallel: LN_after(o), no residual.        up, r: (B, T, D); gate: (B, 1, 1)"""
    o = up if gate is None else up * gate
    norm = (lambda t: t) if ln_after is None else (
        lambda t: ops.layer_norm(t, ln_after[0], ln_after[1], ADAPTER_LN_EPS))  # noqa: E731
    if is_parallel:
        return norm(o)
    return norm(o + r) if residual_before_ln else norm(o) + r


def sublayer_close(h, x, layer_norm):
    """The base model's residual close of a sub-layer: LN(h + x), h + x without LN, h without x. Spec: ENC-2."""
    if x is None:
        return h
    return layer_norm(h + x) if layer_norm is not None else h + x


def bn_pre_forward(h, x, layer_norm, *, residual_before_ln, original_ln_before, query_before_ln=None):
    """Adapter input a, fusion query q and adapter residual r of a sequential adapter. Spec: BN-2.

    ``layer_norm`` is the sub-layer's own LN (callable) or None (pre-LN models); ``x`` the sub-layer input.
    ``query_before_ln`` is None when not fusing. Returns (a, q, r)."""
    q = None
    r = h if residual_before_ln is True else None
    if query_before_ln:
        q = h
    if original_ln_before:
        if layer_norm is not None:
            h = h + x
            if residual_before_ln == "post_add":
                r = h
            h = layer_norm(h)
        elif x is not None:
            h = h + x
    if not residual_before_ln:
        r = h
    if r is None:
        # COMPAT(adapters): "post_add" without original_ln_before and a model LayerNorm leaves the residual
        # unbound upstream (UnboundLocalError); we reject it with a clear message instead (spec BN-2 note).
        raise ValueError("residual_before_ln='post_add' needs original_ln_before=True and a model with a "
                         "LayerNorm after this sub-layer (post-LN); this adapter config cannot run here.")
    if query_before_ln is not None and not query_before_ln:
        q = h
    return h, q, r


def bn_post_forward(o, h_in, x, layer_norm, *, original_ln_after, is_parallel):
    """Closing residual / LayerNorm of the adapter block. Spec: BN-3.

    Sequential: LN(o + x) if original_ln_after (o + x without LN) else o. A parallel adapter (is_parallel) adds the saved sub-layer
    output h_in first: o + h_in, then the same."""
    if is_parallel:
        o = o + h_in
    if original_ln_after:
        return layer_norm(o + x) if layer_norm is not None else o + x
    return o
