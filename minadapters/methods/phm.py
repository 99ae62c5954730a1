"""PHM (Compacter) projections inside bottleneck adapters: parameters and forward. Spec: PHM-1 .. PHM-4.

Per-layer leaves under ``<prefix>.`` (prefix ``adapter_down.0|1`` or ``adapter_up``): ``W`` or ``W_left``/``W_right``
(unless shared_W_phm), ``phm_rule`` or ``phm_rule_left``/``phm_rule_right`` (unless shared_phm_rule), ``b``
(phm_bias). Shared leaves live at model level, ``shared_parameters.<name>.<leaf>``: ``phm_rule`` /
``phm_rule_left`` / ``phm_rule_right`` and ``W_down_left``, ``W_down_right``, ``W_up_left``, ``W_up_right``
(or ``W_down`` / ``W_up``, see PHM-3 note).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.phm import factor_product, kron_sum
from . import init as winit


def xavier_normal(rng, shape, dtype=np.float32):
    """torch.nn.init.xavier_normal_ on one (fan_out, fan_in) = shape slice: N(0, 2/(fan_in + fan_out))."""
    std = math.sqrt(2.0 / (shape[0] + shape[1]))
    return winit.normal(rng, shape, std, dtype)


def _init_W(rng, n, a, b, rank, factorized):
    """W slices xavier-normal (every hypercomplex_nonlinearity upstream accepts takes this branch). Spec: PHM-4."""
    if factorized:
        left = np.stack([xavier_normal(rng, (a, rank)) for _ in range(n)])
        right = np.stack([xavier_normal(rng, (rank, b)) for _ in range(n)])
        return {"left": left, "right": right}
    return {"W": np.stack([xavier_normal(rng, (a, b)) for _ in range(n)])}


def _init_rule(cfg, rng, shared):
    """Rules: per-layer N(0, 0.01) / U(±0.01); shared N(0, phm_init_range) / U(±1). Spec: PHM-4."""
    n = cfg["phm_dim"]
    shapes = {"phm_rule_left": (n, n, 1), "phm_rule_right": (n, 1, n)} if cfg["factorized_phm_rule"] \
        else {"phm_rule": (n, n, n)}
    out = {}
    for leaf, shape in shapes.items():
        if cfg["phm_c_init"] == "normal":
            out[leaf] = winit.normal(rng, shape, cfg["phm_init_range"] if shared else 0.01)
        else:
            lim = 1.0 if shared else 0.01
            out[leaf] = rng.uniform(-lim, lim, shape).astype(np.float32)
    return out


def _check_divisible(cfg, in_f, out_f, which):
    n = cfg["phm_dim"]
    if in_f % n or out_f % n:
        raise ConfigError(f"phm_dim={n} must divide both sizes of the PHM {which}-projection "
                          f"(in_features={in_f}, out_features={out_f}); choose phm_dim or reduction_factor so "
                          "that hidden size and bottleneck size are multiples of phm_dim.")


def _shared_params(cfg, in_f, out_f, rng, which, model, name) -> None:
    """Create (once per adapter) or check the model-level shared rule / W. Spec: PHM-3."""
    if not (cfg["shared_phm_rule"] or cfg["shared_W_phm"]):
        return
    shared = model.model_level["shared"].get(name)
    D, d_b = (in_f, out_f) if which == "down" else (out_f, in_f)
    n, rank = cfg["phm_dim"], cfg["phm_rank"]
    fact = cfg["factorized_phm_W"]
    if cfg["shared_W_phm"]:
        right = "W_down_right" if fact else "W_down"
        if right not in shared:
            for pos, (a, b) in (("down", (D // n, d_b // n)), ("up", (d_b // n, D // n))):
                w = _init_W(rng, n, a, b, rank, fact)
                if fact:
                    shared[f"W_{pos}_left"], shared[f"W_{pos}_right"] = w["left"], w["right"]
                else:
                    shared[f"W_{pos}"] = w["W"]
        elif shared[right].shape[2] * n != d_b:
            raise ConfigError(f"adapter {name!r}: shared_W_phm=True shares one W across layers, but the bottleneck "
                              f"size differs between layers ({shared[right].shape[2] * n} vs {d_b}); use one "
                              "reduction_factor for all layers.")
    rule_leaf = "phm_rule_left" if cfg["factorized_phm_rule"] else "phm_rule"
    if cfg["shared_phm_rule"] and rule_leaf not in shared:
        shared.update(_init_rule(cfg, rng, shared=True))


def phm_params(cfg, in_f, out_f, rng, prefix, which, model, name) -> dict:
    """Per-layer PHM leaves under ``prefix`` (creating the adapter's shared ones on first use). Spec: PHM-1..4."""
    _check_divisible(cfg, in_f, out_f, which)
    n, rank = cfg["phm_dim"], cfg["phm_rank"]
    _shared_params(cfg, in_f, out_f, rng, which, model, name)
    p = {}
    if not cfg["shared_W_phm"]:
        w = _init_W(rng, n, in_f // n, out_f // n, rank, cfg["factorized_phm_W"])
        if cfg["factorized_phm_W"]:
            p[f"{prefix}.W_left"], p[f"{prefix}.W_right"] = w["left"], w["right"]
        else:
            p[f"{prefix}.W"] = w["W"]
    if not cfg["shared_phm_rule"]:
        for leaf, v in _init_rule(cfg, rng, shared=False).items():
            p[f"{prefix}.{leaf}"] = v
    if cfg["phm_bias"]:
        p[f"{prefix}.b"] = np.zeros(out_f, np.float32)
    return p


def _weights(model, mod, prefix, which):
    """(rule (n, n, n), W (n, in/n, out/n), b or None) of one PHM projection. Spec: PHM-2, PHM-3."""
    cfg, p = mod.config, mod.params
    shared = model.model_level["shared"].get(mod.name) if (cfg["shared_phm_rule"] or cfg["shared_W_phm"]) else {}
    if cfg["shared_W_phm"]:
        W = factor_product(shared[f"W_{which}_left"], shared[f"W_{which}_right"]) if cfg["factorized_phm_W"] \
            else shared[f"W_{which}"]
    elif cfg["factorized_phm_W"]:
        W = factor_product(p[f"{prefix}.W_left"], p[f"{prefix}.W_right"])
    else:
        W = p[f"{prefix}.W"]
    src, pre = (shared, "") if cfg["shared_phm_rule"] else (p, prefix + ".")
    if cfg["factorized_phm_rule"]:
        rule = factor_product(src[pre + "phm_rule_left"], src[pre + "phm_rule_right"])
    else:
        rule = src[pre + "phm_rule"]
    return rule, W, p.get(f"{prefix}.b")


def phm_weight(model, mod, prefix, which):
    """(H ᵀ (out, in), b or None): the PHM projection as a linear layer, H = Σ_i kron(rule_i, W_i). Spec: PHM-1."""
    rule, W, b = _weights(model, mod, prefix, which)
    n = mod.config["phm_dim"]
    if rule.shape != (n, n, n) or W.shape[0] != n:
        raise ShapeError(f"adapter {mod.name!r} {prefix}: PHM rule {rule.shape} / W {W.shape} do not fit "
                         f"phm_dim={n}.")
    return kron_sum(rule, W).T, b
