"""Invertible adapter couplings (NICE, GLOW) and their inverses as pure functions. Spec: INV-1, INV-2.

``p`` holds one block's parameters with adapters' leaf names (F.0/F.2/G.0/G.2 or s1.*/s2.*).
"""
from __future__ import annotations

import numpy as np

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
