"""Bottleneck adapter equations: the branch, the adapter output, the residual placement. Spec: BN-1 .. BN-4."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activations import activation_backward
from .backward import layer_norm_backward, layer_norm_forward, linear_backward
from .gate import mean_gate, mean_gate_backward

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


# ---- backward (training). Spec: GRAD-BN-1 .. GRAD-BN-3 (spec/training.md) ------------------------------------------
class BranchCache(NamedTuple):
    a: np.ndarray                 # branch input after LN_before (B, T, D)
    ln_before: object             # LNCache or None
    z0: np.ndarray                # pre-activation (B, T, d_b)
    z: np.ndarray                 # activation output (B, T, d_b)
    u: np.ndarray                 # unscaled up-projection (B, T, D)


def bottleneck_forward(a, wd, bd, wu, bu, *, act, scaling, ops, ln_before=None):
    """BN-1 with the cache its backward needs. Spec: GRAD-BN-1.

        up = s · (act(LN_before?(a) W_dᵀ + b_d) W_uᵀ + b_u)          a: (B, T, D) -> (B, T, D), BranchCache"""
    lnc = None
    if ln_before is not None:
        a, lnc = layer_norm_forward(a, ln_before[0], ln_before[1], ADAPTER_LN_EPS, ops=ops)
    z0 = ops.linear(a, wd, bd)                                        # (B, T, d_b)
    z = ops.activation(act)(z0)
    u = ops.linear(z, wu, bu)                                         # (B, T, D)
    s = scaling if np.size(scaling) > 1 else np.asarray(scaling, u.dtype).reshape(())
    return u * s, BranchCache(a, lnc, z0, z, u)


def bottleneck_backward(dup, cache: BranchCache, wd, wu, *, act, scaling, ln_before=None, has_bias=True):
    """Gradients of BN-1. Spec: GRAD-BN-1.

        du = s dup;  ds = Σ dup ⊙ u (over all entries: learned scalar; over rows: per channel)
        dz = du W_u;  dW_u = duᵀ z;  dz₀ = act'(z₀) ⊙ dz;  da' = dz₀ W_d;  dW_d = dz₀ᵀ a';  LN_before backward
    Returns (da, grads) with grads keys: wd, bd, wu, bu, scaling (an array only when ``scaling`` is one),
    ln_g, ln_b (when ln_before)."""
    s = scaling if np.size(scaling) > 1 else np.asarray(scaling, dup.dtype).reshape(())
    du = dup * s
    grads = {}
    if isinstance(scaling, np.ndarray):          # learned: (1,) scalar or (D,) per channel
        prod = (dup * cache.u).reshape(-1, cache.u.shape[-1])
        grads["scaling"] = prod.sum(0) if scaling.size > 1 else np.asarray([prod.sum()], dup.dtype)
    dz, grads["wu"], grads["bu"] = linear_backward(du, cache.z, wu, has_bias=has_bias)
    dz0 = activation_backward(act, cache.z0, dz)
    da, grads["wd"], grads["bd"] = linear_backward(dz0, cache.a, wd, has_bias=has_bias)
    if ln_before is not None:
        da, grads["ln_g"], grads["ln_b"] = layer_norm_backward(da, cache.ln_before, ln_before[0])
    return da, grads


def bn_pre_train(h, x, ln, *, residual_before_ln, original_ln_before, is_parallel):
    """BN-2 with its cache: the adapter input a and residual r from the sub-layer output h and input x.
    Spec: GRAD-BN-2.  ``ln``: the sub-layer's LayerNormFn or None.  -> a, r, cache"""
    if is_parallel:                                   # BN-2 parallel: a = r = x
        return x, x, ("x", "x", None)
    if original_ln_before and (ln is not None or x is not None):
        s = h + x
        a, ln_pre = ln.forward(s) if ln is not None else (s, None)
        a_from = "ln" if ln is not None else "s"
        r_from = {True: "h", False: "a", "post_add": "s"}[residual_before_ln]
        if r_from == "s" and ln is None:
            raise ValueError("residual_before_ln='post_add' needs original_ln_before=True and a model LayerNorm.")
        return a, {"h": h, "a": a, "s": s}[r_from], (a_from, r_from, ln_pre)
    if residual_before_ln == "post_add":
        raise ValueError("residual_before_ln='post_add' needs original_ln_before=True and a model LayerNorm.")
    return h, h, ("h", "h", None)


def bn_pre_backward(da, dr, cache, ln):
    """(dh, dx) from the gradients of a and r (BN-2 edges in reverse; dx None when x does not enter).
    Spec: GRAD-BN-2."""
    a_from, r_from, ln_pre = cache
    if a_from == "x":
        return None, da + dr
    if r_from == "a":
        da, dr = da + dr, None
    dh, ds = None, None
    if r_from == "s":
        ds = dr
    elif r_from == "h":
        dh = dr
    if a_from == "ln":
        ds = _plus(ds, ln.backward(da, ln_pre))
    elif a_from == "s":
        ds = _plus(ds, da)
    else:
        dh = _plus(dh, da)
    return _plus(dh, ds), ds


def _plus(a, b):
    return b if a is None else (a if b is None else a + b)


class AdapterCache(NamedTuple):
    branch: BranchCache
    ln_after: object              # LNCache or None
    residual_inside: bool         # o = LN_after(up + r)
    a: np.ndarray                 # adapter input (the gate reads it)
    up: np.ndarray                # scaled up-projection before the gate
    gate: object                  # (B, 1, 1) gate or None


def bn_adapter_train(a, r, p, *, act, scaling, adapter_residual_before_ln, is_parallel, ops):
    """BN-1 then BN-4: the adapter's output o and its scaled up-projection, with the cache. Spec: GRAD-BN-1,
    GRAD-BN-2, GRAD-GATE.  p: wd, bd, wu, bu, ln_before, ln_after, gate (W_g, b_g) | None.  -> o, up, cache"""
    up, branch = bottleneck_forward(a, p["wd"], p["bd"], p["wu"], p["bu"], act=act, scaling=scaling, ops=ops,
                                    ln_before=p.get("ln_before"))
    gate = None
    if p.get("gate") is not None:                     # GATE-1 on the adapter input, one value per example
        gate = mean_gate(a, p["gate"][0], p["gate"][1], ops=ops)[:, None, :]         # (B, 1, 1)
    o = up if gate is None else up * gate
    inside = bool(adapter_residual_before_ln) and not is_parallel
    o = o + r if inside else o                        # BN-4: the adapter's own residual, before or after LN_after
    lna = None
    if p.get("ln_after") is not None:
        o, lna = layer_norm_forward(o, p["ln_after"][0], p["ln_after"][1], ADAPTER_LN_EPS, ops=ops)
    if not is_parallel and not inside:
        o = o + r
    return o, up, AdapterCache(branch, lna, inside, a, up, gate)


def bn_adapter_backward(do, dup, cache: AdapterCache, p, *, act, scaling, is_parallel):
    """(da, dr, grads) of bn_adapter_train from the gradients of o and of up (fusion reads up). Spec: GRAD-BN-1,
    GRAD-BN-2.  grads: bottleneck_backward's keys plus ln_after_g, ln_after_b."""
    dr = None if (is_parallel or cache.residual_inside) else do
    grads = {}
    if cache.ln_after is not None:
        do, grads["ln_after_g"], grads["ln_after_b"] = layer_norm_backward(do, cache.ln_after, p["ln_after"][0])
    if cache.residual_inside:
        dr = do
    da_gate = None
    if cache.gate is not None:                        # o = up · g:  dup += do · g;  dg = Σ_{T,D} do ⊙ up
        dg = (do * cache.up).sum(axis=(1, 2))[:, None]                               # (B, 1)
        da_gate, grads["gate_w"], grads["gate_b"] = mean_gate_backward(dg, cache.a, p["gate"][0], p["gate"][1])
        do = do * cache.gate
    da, branch = bottleneck_backward(_plus(do, dup), cache.branch, p["wd"], p["wu"], act=act, scaling=scaling,
                                     ln_before=p.get("ln_before"))
    grads.update(branch)
    return _plus(da, da_gate), (np.zeros_like(da) if dr is None else dr), grads


def bn_post_train(o, h, x, ln, *, original_ln_after, is_parallel):
    """BN-3 with its cache: parallel adds h; LN(o + x) / o + x when original_ln_after. Spec: GRAD-BN-3.  -> y, cache"""
    if is_parallel:
        o = o + h
    ln_post = None
    if original_ln_after:
        o = o + x if x is not None else o
        if ln is not None:
            o, ln_post = ln.forward(o)
    return o, ln_post


def bn_post_backward(dy, cache, ln, *, original_ln_after, is_parallel, has_x):
    """(do, dh, dx) of bn_post_train (dh: the parallel adapter's h; None where it does not enter). Spec: GRAD-BN-3."""
    d = ln.backward(dy, cache) if cache is not None else dy
    dx = d if (original_ln_after and has_x) else None
    return d, (d if is_parallel else None), dx


def bn_block_forward(h, x, ln, p, *, act, scaling, residual_before_ln, adapter_residual_before_ln, original_ln_before,
                     original_ln_after, is_parallel, ops):
    """One bottleneck adapter replacing LN(h + x): BN-2 → BN-1 → BN-4 → BN-3, with the caches. Spec: GRAD-BN-2.

    ``ln`` is the sub-layer's LayerNormFn (or None); ``p``: wd, bd, wu, bu, ln_before (g, b) | None,
    ln_after (g, b) | None. Gating and PHM are not part of this slice."""
    a, r, pre = bn_pre_train(h, x, ln, residual_before_ln=residual_before_ln, original_ln_before=original_ln_before,
                             is_parallel=is_parallel)
    o, _, ad = bn_adapter_train(a, r, p, act=act, scaling=scaling, adapter_residual_before_ln=adapter_residual_before_ln,
                                is_parallel=is_parallel, ops=ops)
    y, post = bn_post_train(o, h, x, ln, original_ln_after=original_ln_after, is_parallel=is_parallel)
    return y, (pre, ad, post, x is not None)


def bn_block_backward(dout, cache, ln, p, *, act, scaling, original_ln_after, is_parallel, **_):
    """Gradients of one bottleneck adapter block: (dh, dx, grads). Spec: GRAD-BN-2, GRAD-BN-3."""
    pre, ad, post, has_x = cache
    do, dh, dx = bn_post_backward(dout, post, ln, original_ln_after=original_ln_after, is_parallel=is_parallel,
                                  has_x=has_x)
    da, dr, grads = bn_adapter_backward(do, None, ad, p, act=act, scaling=scaling, is_parallel=is_parallel)
    dh2, dx2 = bn_pre_backward(da, dr, pre, ln)
    zero = np.zeros_like(dout)
    return _plus(_plus(dh, dh2), zero), _plus(_plus(dx, dx2), zero), grads
