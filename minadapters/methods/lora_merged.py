"""LoRA / IA³ on a fused q|k|v projection (GPT-2 ``c_attn``; adapters 1.3.0's ``LoRAMergedLinear``). Spec: LORA-7.

Our base weight is (3·M', K) (out, in): the model loader has already transposed GPT-2's Conv1D (in, out) weight.
Only a single adapter is supported; any other setup touching this layer raises CompositionError (upstream:
ValueError "Invalid adapter setup. Cannot use <setup> with LoRA.").
"""
from __future__ import annotations

import numpy as np

from ..composition import AdapterCompositionBlock
from ..configuration import LoRAConfig
from ..errors import CompositionError, ConfigError
from ..functional import lora as F
from ..functional.gate import mean_gate
from . import init as winit
from .base import AdapterLayer, match_config
from .lora_modules import LoRAMergeMixin, check_config, make_module, module_kind, split_key


class LoRAMergedLayer(LoRAMergeMixin, AdapterLayer):
    """LoRA / IA³ modules of one fused qkv linear. Spec: LORA-7, LORA-9."""

    container = "loras"

    def __init__(self, key, path, model, weights_path=None):
        super().__init__(key, path, model, weights_path)
        self.location_key, _ = split_key(key.location)

    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, LoRAConfig, self.layer_idx, self.location_key)
        if cfg is None:
            return False
        check_config(cfg, name)
        enabled = tuple(m in (cfg["attn_matrices"] or []) for m in ("q", "k", "v"))
        g = sum(enabled)
        if g == 0:
            return False   # upstream builds a zero-size module and fails at forward (spec LORA-7 note)
        kind = module_kind(cfg)
        if kind not in ("lora", "ia3") or cfg["use_dora"]:
            what = "DoRA" if cfg["use_dora"] else {"vera": "VeRA", "mtl": "MTL-LoRA"}[kind]
            raise ConfigError(f"adapter {name!r}: {what} is not supported on the fused qkv projection "
                              f"({self.path}); adapters 1.3.0 fails on it. Use plain LoRA or IA3 here.")
        wk, _ = self.weight_keys()
        W = self.model.params[wk]
        out_f, in_f = W.shape
        if out_f % 3:
            raise ConfigError(f"{self.path}: fused qkv weight has {out_f} rows, not divisible by 3.")
        r = cfg["r"]
        mod = make_module(name, cfg, in_f=in_f, out_f=out_f, W=W, model=self.model, rng=winit.rng_for(cfg, self.model),
                          heads=g, a_rows=r * g, b_rows=out_f // 3 * g)
        mod.info["enabled"] = enabled
        self.modules[name] = mod
        return True

    def _single(self, setup):
        """The one adapter name of a single-adapter setup, else CompositionError. Spec: LORA-7."""
        if isinstance(setup, str):
            name = setup
        elif isinstance(setup, AdapterCompositionBlock) and len(setup) == 1 and isinstance(setup[0], str):
            name = setup[0]
        else:
            name = None
        if name is None or name not in self.modules:
            raise CompositionError(f"Invalid adapter setup. Cannot use {setup!r} with LoRA on the fused qkv "
                                   f"projection {self.path}: only a single LoRA/IA3 adapter is supported there.")
        return name

    def forward(self, x, w, b, fwd):
        """y = x Wᵀ + b + pad₀(δ)·s (add) or (x Wᵀ + b) ⊙ pad₁(l)·s (scale). Spec: LORA-7."""
        y = self.ops.linear(x, w, b)
        if self.merged is not None:
            return y
        setup = self.active_setup(fwd)
        if setup is None:
            return y
        name = self._single(setup)
        mod = self.modules[name]
        en, g = mod.info["enabled"], sum(mod.info["enabled"])
        dt = y.dtype
        if mod.info["kind"] == "ia3":
            delta = mod.params["lora_B"].astype(dt).reshape(1, 1, -1)
        else:
            delta = F.grouped_delta(x, mod.params["lora_A"].astype(dt), mod.params["lora_B"].astype(dt), g,
                                    ops=self.ops)
        fill = 0.0 if mod.info["kind"] != "ia3" else 1.0
        if mod.info["gating"]:
            gate = mean_gate(x, mod.params["gate.weight"].astype(dt), mod.params["gate.bias"].astype(dt),
                             ops=self.ops)                                                         # (B, g)
            fwd.store_gating_score(name, self.layer_idx, self.location_key, gate)
            scale = F.scatter_thirds(np.repeat(gate, y.shape[-1] // 3, axis=-1), en, 1.0)[:, None, :]
        else:
            scale = dt.type(mod.info["scaling"])
        padded = F.scatter_thirds(delta, en, fill)
        return y * (padded * scale) if mod.info["kind"] == "ia3" else y + padded * scale

    def merged_weights(self, mod, W, b):
        """Exact merged (W', b'): add W + s·pad₀(ΔW); scale rows (and bias) by pad₁(l)·alpha. Spec: LORA-9."""
        en, g = mod.info["enabled"], sum(mod.info["enabled"])
        s = float(mod.info["scaling"])
        W64 = W.astype(np.float64)
        if mod.info["kind"] == "ia3":
            v = F.scatter_thirds(mod.params["lora_B"].astype(np.float64).reshape(-1), en, 1.0) * s
            return W64 * v[:, None], (None if b is None else b.astype(np.float64) * v)
        dW = F.grouped_delta_w(mod.params["lora_A"].astype(np.float64), mod.params["lora_B"].astype(np.float64), g)
        return W64 + s * F.scatter_thirds(dW.T, en, 0.0).T, b
