"""Invertible adapters (MAD-X): a NICE (or GLOW) coupling block on the embedding output. Spec: INV-1 .. INV-4.

Model-level, one per adapter whose bottleneck config sets ``inv_adapter``. State-dict keys (bare base model):
``invertible_adapters.<name>.F.0.weight`` ... (NICE: F.0, F.2, G.0, G.2; GLOW: s1.0, s1.2, s2.0, s2.2).
"""
from __future__ import annotations

import numpy as np

from ..configuration import BnConfig
from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..functional.invertible import glow_coupling, nice_coupling
from . import init as winit
from .base import MethodObject, match_config

def _subnet_params(rng, prefix, d_in, d_out, rf):
    """Both Linears N(0, 0.02), bias 0 (Adapter.init_bert_weights). Hidden width int(d_in // rf). Spec: INV-3."""
    h = int(d_in // rf)
    return {f"{prefix}.0.weight": winit.normal(rng, (h, d_in), 0.02), f"{prefix}.0.bias": np.zeros(h, np.float32),
            f"{prefix}.2.weight": winit.normal(rng, (d_out, h), 0.02), f"{prefix}.2.bias": np.zeros(d_out, np.float32)}

class InvertibleAdapters(MethodObject):
    """name -> coupling block parameters; applied at the embedding hook for ``setup.first()``. Spec: INV-3, INV-4."""

    def __init__(self, model):
        self.model = model
        self.blocks: dict[str, dict] = {}      # name -> {"kind": "nice"|"glow", "act": str|None, "params": {...}}

    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, BnConfig, location_key="inv_adapter")
        if cfg is None or not cfg["inv_adapter"]:
            return False
        kind, rf = cfg["inv_adapter"], cfg["inv_adapter_reduction_factor"]
        if kind not in ("nice", "glow"):
            raise ConfigError(f"inv_adapter={kind!r} is not an invertible adapter type; use 'nice' or 'glow'.")
        if rf is None or isinstance(rf, bool) or not rf > 0:
            raise ConfigError(f"inv_adapter={kind!r} needs inv_adapter_reduction_factor > 0; got {rf!r}.")
        E = getattr(self.model.config, "embedding_size", None) or self.model.hidden_size
        E1, E2 = E // 2, E - E // 2
        rng = winit.rng_for(cfg, self.model)
        if kind == "nice":
            p = {**_subnet_params(rng, "F", E2, E1, rf), **_subnet_params(rng, "G", E1, E2, rf)}
        else:
            p = {**_subnet_params(rng, "s1", E1, 2 * E2, rf), **_subnet_params(rng, "s2", E2, 2 * E1, rf)}
        get_activation(cfg["non_linearity"])   # fail early on an unknown name
        self.blocks[name] = {"kind": kind, "act": cfg["non_linearity"], "params": p}
        return True

    def delete_adapter(self, name) -> None:
        self.blocks.pop(name, None)

    def param_refs(self, name):
        blk = self.blocks.get(name)
        if blk is not None:
            for leaf in blk["params"]:
                yield f"{self.path}.{name}.{leaf}", blk["params"], leaf

    @property
    def path(self) -> str:
        """``invertible_adapters``, under adapters' invertible_adapters_base_name where the family has one."""
        base = self.model.arch.invertible_base
        return f"{base}.invertible_adapters" if base else "invertible_adapters"

    def _apply(self, name, x, rev):
        blk = self.blocks[name]
        E = x.shape[-1]
        want = blk["params"]["F.2.weight" if blk["kind"] == "nice" else "s1.0.weight"].shape
        if (blk["kind"] == "nice" and want[0] != E // 2) or (blk["kind"] == "glow" and want[1] != E // 2):
            raise ShapeError(f"invertible adapter {name!r} was built for another embedding width; input has {E}.")
        fn = nice_coupling if blk["kind"] == "nice" else glow_coupling
        return fn(blk["params"], x, get_activation(blk["act"]), rev=rev, ops=self.model.ops).astype(x.dtype, copy=False)

    def forward(self, x, mask2d, fwd):
        """Embedding hook: apply the first adapter's coupling block (if it has one). Spec: INV-4."""
        setup = fwd.setup if fwd is not None else None
        if setup is None:
            return x, mask2d
        first = setup.first()
        if first in self.blocks:
            x = self._apply(first, x, rev=False)
        return x, mask2d

    def inverse(self, name, x):
        """The inverse coupling (LM heads apply it before the vocabulary projection). Spec: INV-1, INV-2."""
        if name not in self.blocks:
            raise KeyError(f"adapter {name!r} has no invertible adapter; adapters with one: "
                           f"{', '.join(map(repr, self.blocks)) or 'none'}.")
        return self._apply(name, x, rev=True)

    def inverse_for_setup(self, setup, x):
        """Inverse of the block forward() applied for ``setup`` (identity if none). Spec: INV-4."""
        if setup is None or setup.first() not in self.blocks:
            return x
        return self.inverse(setup.first(), x)

__all__ = ["InvertibleAdapters"]
