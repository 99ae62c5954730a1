"""Invertible adapter couplings (NICE, GLOW) and their inverses as pure functions. Spec: INV-1, INV-2.

``p`` holds one block's parameters with adapters' leaf names (F.0/F.2/G.0/G.2 or s1.*/s2.*).
"""
from __future__ import annotations

import numpy as np

from .activations import activation_backward, get_activation
from .backward import linear_backward

GLOW_CLAMP = 5.0


def subnet(p, prefix, x, act, ops):
    """Linear, act, Linear (adapters' get_subnet_constructor). Spec: INV-1."""
    h = act(ops.linear(x, p[prefix + ".0.weight"], p[prefix + ".0.bias"]))
    return ops.linear(h, p[prefix + ".2.weight"], p[prefix + ".2.bias"])


def nice_coupling(p, x, act, rev=False, *, ops):
    """y1 = x1 + F(x2), y2 = x2 + G(y1); inverse y2 = x2 − G(x1), y1 = x1 − F(y2). Spec: INV-1.

    Split on the feature axis at E1 = E // 2.  x: (..., E) -> (..., E)"""
    E1 = x.shape[-1] // 2
    x1, x2 = x[..., :E1], x[..., E1:]
    if not rev:
        y1 = x1 + subnet(p, "F", x2, act, ops)
        y2 = x2 + subnet(p, "G", y1, act, ops)
    else:
        y2 = x2 - subnet(p, "G", x1, act, ops)
        y1 = x1 - subnet(p, "F", y2, act, ops)
    return ops.concat([y1, y2], -1)


def glow_e(s, clamp=GLOW_CLAMP):
    """Soft-clamped scale exp(clamp · 0.636 · atan(s / clamp)). Spec: INV-2."""
    return np.exp(clamp * 0.636 * np.arctan(s / clamp)).astype(s.dtype, copy=False)


def glow_coupling(p, x, act, rev=False, *, ops):
    """Affine coupling along the feature axis (the design adapters' GLOWCouplingBlock intends). Spec: INV-2.

    forward: [s2|t2] = s2(x2), y1 = e(s2)·x1 + t2; [s1|t1] = s1(y1), y2 = e(s1)·x2 + t1.
    inverse: [s1|t1] = s1(x1), y2 = (x2 − t1)/e(s1); [s2|t2] = s2(y2), y1 = (x1 − t2)/e(s2)."""
    E1 = x.shape[-1] // 2
    E2 = x.shape[-1] - E1
    x1, x2 = x[..., :E1], x[..., E1:]
    if not rev:
        r2 = subnet(p, "s2", x2, act, ops)
        y1 = glow_e(r2[..., :E1]) * x1 + r2[..., E1:]
        r1 = subnet(p, "s1", y1, act, ops)
        y2 = glow_e(r1[..., :E2]) * x2 + r1[..., E2:]
    else:
        r1 = subnet(p, "s1", x1, act, ops)
        y2 = (x2 - r1[..., E2:]) / glow_e(r1[..., :E2])
        r2 = subnet(p, "s2", y2, act, ops)
        y1 = (x1 - r2[..., E1:]) / glow_e(r2[..., :E1])
    return ops.concat([y1, y2], -1)


# ---- backward (training). Spec: GRAD-INV (spec/training.md) ------------------------------------------------------
def subnet_backward(dout, p, prefix, x, act_name, ops):
    """Gradients of Linear, act, Linear (INV-1's subnets). Spec: GRAD-INV.  -> dx, {leaf: grad}"""
    h0 = ops.linear(x, p[prefix + ".0.weight"], p[prefix + ".0.bias"])
    h = get_activation(act_name)(h0)
    dh, dw2, db2 = linear_backward(dout, h, p[prefix + ".2.weight"])
    dh0 = activation_backward(act_name, h0, dh)
    dx, dw0, db0 = linear_backward(dh0, x, p[prefix + ".0.weight"])
    return dx, {prefix + ".0.weight": dw0, prefix + ".0.bias": db0, prefix + ".2.weight": dw2,
                prefix + ".2.bias": db2}


def nice_coupling_backward(dy, p, x, act_name, *, ops):
    """Gradients of the NICE forward y1 = x1 + F(x2), y2 = x2 + G(y1) (INV-1). Spec: GRAD-INV.

        dy1' = dy1 + Gᵀ(dy2);  dx1 = dy1';  dx2 = dy2 + Fᵀ(dy1')          x, dy: (..., E) -> dx, {leaf: grad}"""
    act = get_activation(act_name)
    E1 = x.shape[-1] // 2
    x1, x2 = x[..., :E1], x[..., E1:]
    y1 = x1 + subnet(p, "F", x2, act, ops)
    dy1, dy2 = dy[..., :E1], dy[..., E1:]
    dg_in, grads = subnet_backward(dy2, p, "G", y1, act_name, ops)
    dy1 = dy1 + dg_in
    df_in, gf = subnet_backward(dy1, p, "F", x2, act_name, ops)
    grads.update(gf)
    return np.concatenate([dy1, dy2 + df_in], -1), grads


def nice_inverse_backward(dy, p, x, act_name, *, ops):
    """Gradients of the NICE inverse y2 = x2 − G(x1), y1 = x1 − F(y2) (INV-1, MAD-X LM heads). Spec: GRAD-INV.

        dy2' = dy2 − Fᵀ(dy1);   dx2 = dy2';   dx1 = dy1 − Gᵀ(dy2')          -> dx, {leaf: grad}"""
    act = get_activation(act_name)
    E1 = x.shape[-1] // 2
    x1, x2 = x[..., :E1], x[..., E1:]
    y2 = x2 - subnet(p, "G", x1, act, ops)
    dy1, dy2 = dy[..., :E1], dy[..., E1:]
    df_in, grads = subnet_backward(-dy1, p, "F", y2, act_name, ops)
    dy2 = dy2 + df_in
    dg_in, gg = subnet_backward(-dy2, p, "G", x1, act_name, ops)
    grads.update(gg)
    return np.concatenate([dy1 + dg_in, dy2], -1), grads
