"""Bottleneck adapter equations (sequential, parallel) and the mean-over-tokens gate. Spec: BN-*, GATE-1."""
from __future__ import annotations

from ..composition import adjust_tensors_for_parallel
from .activations import sigmoid
from .linalg import mm


def mean_gate(x, w, b):
    """g = mean_T σ(x W_gᵀ + b_g), one value per example and gate row. Spec: GATE-1.

        x: (B, T, K), w: (G, K), b: (G,) -> (B, 1, G)"""
    return sigmoid(mm(x, w.T) + b).mean(axis=1, keepdims=True)


def sublayer_close(h, x, layer_norm):
    """The base model's residual close of a sub-layer: LN(h + x), h + x without LN, h without x. Spec: ENC-2.

    Under Parallel either side may already carry the replicated batch; the other is tiled to match."""
    if x is None:
        return h
    (x,) = adjust_tensors_for_parallel(h, x)
    (h,) = adjust_tensors_for_parallel(x, h)
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

    Sequential: LN(o + x) if original_ln_after (o + x without LN) else o. Parallel adds the saved sub-layer
    output h_in first: o + h_in, then the same."""
    if is_parallel:
        o = o + h_in
    if original_ln_after:
        return layer_norm(o + x) if layer_norm is not None else o + x
    return o
