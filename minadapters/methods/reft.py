"""ReFT interventions (LoReFT, NoReFT, DiReFT) on a layer's output. Spec: REFT-1 .. REFT-5.

State-dict keys (adapters 1.3.0): ``encoder.layer.{i}.reft_layer.refts.<name>.units.{k}.<leaf>`` with leaves
``learned_source.weight`` (r, D), ``learned_source.bias`` (r,), and either ``projection.weight`` (r, D) or, with
orthogonality, ``projection.parametrizations.weight.original`` (r, D) + ``projection.parametrizations.weight.0.base``.
"""
from __future__ import annotations

import numpy as np

from ..configuration import ReftConfig
from ..functional.activations import get_activation
from ..functional.reft import (gather_rows, orthogonal_init, orthogonal_weight, reft_positions, reft_unit,
                               scatter_rows)
from . import init as winit
from .base import AdapterLayer, AdapterModule, match_config

ORIG = "projection.parametrizations.weight.original"
BASE = "projection.parametrizations.weight.0.base"


def unit_params(cfg, D: int, rng) -> dict:
    """One unit: learned_source = Linear(D, r) default init; projection Linear(D, r, no bias). Spec: REFT-5."""
    r = cfg["r"]
    p = {}
    p["learned_source.weight"], p["learned_source.bias"] = winit.linear_default(rng, r, D)
    proj = winit.kaiming_uniform(rng, (r, D))
    if cfg["orthogonality"]:
        p[ORIG], p[BASE] = orthogonal_init(proj, rng)
    else:
        p["projection.weight"] = proj
    return p


class ReftLayer(AdapterLayer):
    """The ReFT interventions after layer ``layer_idx`` (adapters' ``reft_layer``). Spec: REFT-4."""

    container = "refts"

    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, ReftConfig, self.layer_idx, self.location_key)
        if cfg is None or not (cfg["layers"] == "all" or self.layer_idx in cfg["layers"]):
            return False
        D = self.model.hidden_size
        rng = winit.rng_for(cfg, self.model)
        n_units = 1 if cfg["tied_weights"] else 2
        params = {}
        for k in range(n_units):
            if cfg.get("init_weights_seed"):
                rng = winit.rng_for(cfg, self.model)   # upstream re-seeds before every unit
            for leaf, v in unit_params(cfg, D, rng).items():
                params[f"units.{k}.{leaf}"] = v
        self.modules[name] = AdapterModule(name, cfg, params, n_units=n_units,
                                           subtract=bool(type(cfg).subtract_projection))
        return True

    def summary_param_count(self, name, seen=None) -> int:
        """Trainable parameters as adapters counts them: the orthogonal ``base`` is a buffer, not a parameter."""
        mod = self.modules.get(name)
        return 0 if mod is None else sum(int(v.size) for k, v in mod.params.items() if not k.endswith(BASE))

    def projection(self, mod, k: int) -> np.ndarray:
        """R (r, D) of unit k: stored, or materialised from the orthogonal parametrization. Spec: REFT-2."""
        p = mod.params
        if f"units.{k}.projection.weight" in p:
            return p[f"units.{k}.projection.weight"]
        return orthogonal_weight(p[f"units.{k}.{ORIG}"], p[f"units.{k}.{BASE}"])

    def intervene(self, mod, x, fwd):
        """Gather prefix/suffix states, apply the units, scatter back (suffix last). Spec: REFT-3, REFT-4."""
        cfg = mod.config
        B, T, D = x.shape
        p, s = cfg["prefix_positions"], cfg["suffix_positions"]
        mask = None
        if fwd is not None:
            own = self.stack_record.reft_mask == "decoder_attention_mask"
            mask = fwd.decoder_attention_mask if own else fwd.attention_mask
        pref, suff = reft_positions(mask, B, T, p, s)
        act = get_activation(cfg["non_linearity"])
        prefix, suffix = gather_rows(x, pref), gather_rows(x, suff)
        units = []
        for k in range(mod.info["n_units"]):
            pk = mod.params
            units.append((pk[f"units.{k}.learned_source.weight"], pk[f"units.{k}.learned_source.bias"],
                          self.projection(mod, k)))
        run = lambda h, u: reft_unit(h, u[0], u[1], u[2], act, mod.info["subtract"]).astype(x.dtype)  # noqa: E731
        if mod.info["n_units"] == 1:
            out = run(self.ops.concat([prefix, suffix], 1), units[0])
        else:
            out = self.ops.concat([run(prefix, units[0]), run(suffix, units[1])], 1)
        if p > 0:
            x = scatter_rows(x, pref, out[:, :pref.shape[1]])
        if s > 0:
            # COMPAT(adapters): upstream scatters out[:, -s:] read from its start; when s > T this window
            # begins inside the prefix outputs (spec REFT-4 note). Identical to the suffix outputs otherwise.
            start = max(out.shape[1] - s, 0)
            x = scatter_rows(x, suff, out[:, start:start + suff.shape[1]])
        return x

    def forward(self, x, fwd):
        """Intervene with the setup's first adapter, if it is a ReFT adapter of this layer. Spec: REFT-4."""
        setup = self.active_setup(fwd)
        if setup is None:
            return x
        first = setup.first()
        if first not in self.modules:
            return x
        return self.intervene(self.modules[first], x, fwd)
