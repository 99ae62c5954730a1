"""Fresh-adapter initialisation with the same distributions as adapters 1.3.0 (values differ: NumPy RNG).

Spec: INIT-1 (bottleneck), INIT-2 (fusion). torch's RNG stream is not reproduced; statistics are.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def rng_for(config, model) -> np.random.Generator:
    """A seeded generator when the config has a truthy init_weights_seed (seed 0 is ignored, as upstream)."""
    seed = config.get("init_weights_seed") if config is not None else None
    if seed:
        return np.random.default_rng(seed)
    return model.rng


def normal(rng, shape, std, dtype=np.float32):
    return (rng.standard_normal(shape) * std).astype(dtype)


def kaiming_uniform(rng, shape, a=math.sqrt(5), dtype=np.float32):
    """torch.nn.init.kaiming_uniform_ on a (out, in) weight: U(±gain·√(3/fan_in)), gain = √(2/(1+a²))."""
    fan_in = shape[1] if len(shape) > 1 else shape[0]
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


def trunc_normal(rng, shape, std, lo, hi, dtype=np.float32):
    out = rng.standard_normal(shape) * std
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum())) * std
        bad = (out < lo) | (out > hi)
    return out.astype(dtype)


def linear_default(rng, out_f, in_f, dtype=np.float32):
    """torch.nn.Linear's default init: W kaiming_uniform(a=√5), b U(±1/√in)."""
    bound = 1.0 / math.sqrt(in_f) if in_f > 0 else 0.0
    return kaiming_uniform(rng, (out_f, in_f), dtype=dtype), rng.uniform(-bound, bound, (out_f,)).astype(dtype)


def bottleneck_params(cfg, D: int, d_b: int, rng, projections=None) -> dict:
    """Parameters of one bottleneck adapter with upstream leaf names. Spec: INIT-1, BN-1.

    ``projections(down_prefix)`` builds the down/up projections of PHM layers (methods/phm.py)."""
    p = {}
    scheme = cfg["init_weights"]
    if scheme not in ("bert", "mam_adapter", "houlsby"):
        raise ConfigError(f"init_weights={scheme!r} is not a bottleneck init; use 'bert', 'mam_adapter' or 'houlsby'.")
    down = "adapter_down.0"
    if cfg["ln_before"]:
        p["adapter_down.0.weight"] = np.ones(D, np.float32)
        p["adapter_down.0.bias"] = np.zeros(D, np.float32)
        # adapters registers this LayerNorm twice (attribute and Sequential entry): both keys are in its files
        p["adapter_norm_before.weight"] = p["adapter_down.0.weight"]
        p["adapter_norm_before.bias"] = p["adapter_down.0.bias"]
        down = "adapter_down.1"
    if cfg["phm_layer"]:
        if scheme != "bert":
            raise ConfigError(f"init_weights={scheme!r} cannot be used with phm_layer=True; use 'bert'.")
        p.update(projections(down))
    elif scheme == "bert":
        p[down + ".weight"], p[down + ".bias"] = normal(rng, (d_b, D), 0.02), np.zeros(d_b, np.float32)
        p["adapter_up.weight"], p["adapter_up.bias"] = normal(rng, (D, d_b), 0.02), np.zeros(D, np.float32)
    elif scheme == "mam_adapter":
        p[down + ".weight"], p[down + ".bias"] = kaiming_uniform(rng, (d_b, D)), np.zeros(d_b, np.float32)
        p["adapter_up.weight"], p["adapter_up.bias"] = np.zeros((D, d_b), np.float32), np.zeros(D, np.float32)
    else:  # houlsby
        p[down + ".weight"] = trunc_normal(rng, (d_b, D), 0.01, -0.02, 0.02)
        p[down + ".bias"] = np.zeros(d_b, np.float32)
        p["adapter_up.weight"] = trunc_normal(rng, (D, d_b), 0.01, -0.02, 0.02)
        p["adapter_up.bias"] = np.zeros(D, np.float32)
    scaling = cfg["scaling"]
    if scaling == "learned":
        p["scaling"] = np.ones(1, np.float32)
    elif scaling == "channel":
        p["scaling"] = np.ones(D, np.float32)
    elif isinstance(scaling, bool) or not isinstance(scaling, float):
        raise ConfigError(f"scaling={scaling!r} is not allowed; use a float, 'learned' or 'channel'.")
    if cfg["ln_after"]:
        p["adapter_norm_after.weight"] = np.ones(D, np.float32)
        p["adapter_norm_after.bias"] = np.zeros(D, np.float32)
    if cfg["use_gating"]:
        if scheme == "houlsby":
            p["gate.weight"], p["gate.bias"] = linear_default(rng, 1, D)
        else:
            p["gate.weight"], p["gate.bias"] = normal(rng, (1, D), 0.02), np.zeros(1, np.float32)
    return p


def fusion_params(fcfg, D: int, rng) -> dict:
    """query/key N(0, 0.02) with zero bias; value identity (+1e-6 off-diagonal) if value_initialized. Spec: INIT-2."""
    p = {}
    if not (fcfg["query"] or fcfg["key"] or fcfg["value"]):
        p["dense.weight"], p["dense.bias"] = normal(rng, (1, D), 0.02), np.zeros(1, np.float32)
    for k in ("query", "key"):
        if fcfg[k]:
            p[f"{k}.weight"], p[f"{k}.bias"] = normal(rng, (D, D), 0.02), np.zeros(D, np.float32)
    if fcfg["value"]:
        if fcfg["value_initialized"]:
            w = np.full((D, D), 1e-6, np.float32)
            np.fill_diagonal(w, 1.0)
        else:
            w = normal(rng, (D, D), 0.02)
        p["value.weight"] = w
    return p
