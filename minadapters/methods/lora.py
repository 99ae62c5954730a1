"""The LoRA family at one wrapped linear (adapters 1.3.0's ``LoRALinear``): composition, DoRA, merge / reset.

Spec: LORA-0 .. LORA-6, LORA-8 (composition), LORA-9 (merge / reset). The fused GPT-2 ``c_attn`` layer lives in
lora_merged.py (LORA-7); the per-module math in lora_modules.py and functional/lora.py.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..composition import BatchSplit, Parallel, Stack
from ..configuration import LoRAConfig
from ..errors import CompositionError, ConfigError
from ..functional import lora as F
from . import init as winit
from .base import ComposableLayer, match_config, weighted_mean
from .lora_modules import (LoRAMergeMixin, check_config, delta_w, make_module, module_forward, module_kind,
                           shared_vera_params, split_key)


class LoRAState(NamedTuple):
    layer_input: np.ndarray              # x (B, T, K)
    hidden_states: Optional[np.ndarray]  # H: composed delta (add) or scaling vector (scale); None before any module
    layer_output: np.ndarray             # x Wᵀ + b
    last: Optional[str]


class LoRALayer(LoRAMergeMixin, ComposableLayer):
    """LoRA / IA³ / VeRA / DoRA / MTL-LoRA modules of one wrapped linear. Spec: LORA-0 .. LORA-9."""

    container = "loras"

    def __init__(self, key, path, model, weights_path=None):
        super().__init__(key, path, model, weights_path)
        self.location_key, self.attn_key = split_key(key.location)

    # ---- lifecycle -------------------------------------------------------------------------------
    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, LoRAConfig, self.layer_idx, self.location_key)
        if cfg is None or (self.attn_key is not None and self.attn_key not in (cfg["attn_matrices"] or [])):
            return False
        check_config(cfg, name)
        wk, _ = self.weight_keys()
        W = self.model.params[wk]
        out_f, in_f = W.shape
        rng = winit.rng_for(cfg, self.model)
        mod = make_module(name, cfg, in_f=in_f, out_f=out_f, W=W, model=self.model, rng=rng)
        if mod.info["kind"] == "vera":
            self._attach_vera(name, cfg, (cfg["r"], in_f), (out_f, cfg["r"]), rng)
        self.modules[name] = mod
        return True

    def _attach_vera(self, name, cfg, a_shape, b_shape, rng):
        """The first target creates the shared A/B; every later target must have the same shape. Spec: LORA-4."""
        shared = self.model.model_level["shared"].get(name)
        if "lora_A" not in shared:
            shared.update(shared_vera_params(cfg, a_shape, b_shape, rng, self.model))
            shared["_first"] = f"layer {self.layer_idx} {self.key.location}"
            return
        if shared["lora_A"].shape != a_shape or shared["lora_B"].shape != b_shape:
            raise ConfigError(
                f"VeRA adapter {name!r}: the shared lora_A {shared['lora_A'].shape} / lora_B "
                f"{shared['lora_B'].shape} (shaped by {shared.get('_first', 'the first target')}) do not fit layer "
                f"{self.layer_idx} {self.key.location} (needs {a_shape} / {b_shape}). VeRA shares A and B, so all targets must "
                "have the same shape: adapt only selfattn (or only same-shaped linears). adapters 1.3.0 fails here "
                "with RuntimeError at the first forward.")

    def confirm_adapter(self, name, config) -> None:
        shared = self.model.model_level["shared"].params
        if name in shared:
            shared[name].pop("_first", None)

    # ---- state operations ------------------------------------------------------------------------
    def vslice(self, state, idx):
        h = state.hidden_states
        return LoRAState(state.layer_input[idx], None if h is None else h[idx], state.layer_output[idx], state.last)

    def pad_and_concat(self, states):
        """Rows of children without a module here (leave_out, a bottleneck adapter beside a LoRA) keep the frozen
        layer's output: their H is the neutral element (0 added; 1 for IA³'s scaling). Spec: LORA-8."""
        hs = [s.hidden_states for s in states]
        present = [s for s in states if s.hidden_states is not None]
        if present and len(present) < len(states):
            ref = self.modules[present[-1].last].info
            if ref["dora"]:
                raise CompositionError(
                    f"layer {self.layer_idx} ({self.key.location}): a DoRA module cannot share a BatchSplit/Parallel "
                    "block with children that have no LoRA module here (DoRA rescales the whole output).")
            fill = np.ones if ref["kind"] == "ia3" else np.zeros
            H = present[-1].hidden_states
            # COMPAT(adapters): 1.3.0 fails here (TypeError: None * float); rows keep the base output instead
            hs = [h if h is not None else fill((s.layer_input.shape[0],) + H.shape[1:], H.dtype)
                  for h, s in zip(hs, states)]
            last = present[-1].last
            states = [s._replace(hidden_states=h, last=last) for s, h in zip(states, hs)]
        if hs[0] is not None and len({h.shape[1:] for h in hs}) > 1:
            kinds = sorted({self.modules[s.last].info["kind"] for s in states if s.last in self.modules})
            raise CompositionError(
                f"layer {self.layer_idx} ({self.key.location}): the children of the block produce incompatible states "
                f"({', '.join(kinds)}): IA3 (scale) modules cannot share a BatchSplit/Parallel/MultiTask block with "
                "add-mode LoRA modules (adapters 1.3.0 fails with RuntimeError).")
        cat = lambda xs: self.ops.concat(xs, 0)  # noqa: E731
        return LoRAState(cat([s.layer_input for s in states]), None if hs[0] is None else cat(hs),
                         cat([s.layer_output for s in states]), states[-1].last)

    def mean(self, states, weights):
        """mean_i(w_i H_i) = Σ w_i H_i / N. Spec: LORA-8 (COMP-AVERAGE)."""
        h = None
        if states[0].hidden_states is not None:
            h = weighted_mean([s.hidden_states for s in states], weights, self.ops)
        return LoRAState(states[0].layer_input, h, states[0].layer_output, states[-1].last)

    def compose_single(self, name, state, fwd, lvl=0):
        mod = self.modules[name]
        H, gate = module_forward(mod, state.hidden_states, state.layer_input, self._shared(name), self.ops)
        if gate is not None:
            fwd.store_gating_score(name, self.layer_idx, self.location_key, gate)
        return state._replace(hidden_states=H, last=name)

    # ---- entry -----------------------------------------------------------------------------------
    def forward(self, x, w, b, fwd):
        """y = combine_last(x Wᵀ + b, H). Spec: LORA-8 (add / scale / DoRA)."""
        y = self.ops.linear(x, w, b)
        if self.merged is not None:
            return y                       # w already is the merged weight (model.params)
        setup = self.active_setup(fwd)
        if setup is None:
            return y
        fast = self._fused_add(setup, x, y, fwd)
        if fast is not None:
            return fast
        state = self.compose(setup, LoRAState(x, None, y, None), fwd)
        return self.combine(state, w)

    # ---- fused path: same result as compose + combine for plain add-mode LoRAs ---------------------------
    def _plain(self, name, dtype):
        """The module ``name`` if it is a plain add-mode LoRA (no gate, DoRA, IA³, VeRA, MTL) in ``dtype``."""
        mod = self.modules.get(name) if isinstance(name, str) else None
        if mod is None or mod.info["kind"] != "lora" or mod.info["gating"] or mod.info["dora"]:
            return None
        ok = all(mod.params[k].dtype == dtype for k in ("lora_A", "lora_B"))
        return mod if ok else None

    def _fused_add(self, setup, x, y, fwd):
        """y + H through ops.lora_add (one plain LoRA) or ops.sgmv_lora_add (a BatchSplit / Parallel of plain
        LoRAs, rows partitioned by the block's own rule), or None when the setup needs the generic composition.
        Spec: LORA-8, OPS-8, OPS-9."""
        if x.ndim != 3:
            return None
        if isinstance(setup, Stack):
            present = [c for c in setup if not isinstance(c, str) or c in self.modules]
            if len(present) != 1:
                return None
            setup = present[0]
        if isinstance(setup, str):
            mod = self._plain(setup, x.dtype)
            if mod is None:
                return None
            return self.ops.lora_add(y, x, mod.params["lora_A"], mod.params["lora_B"], mod.info["scaling"])
        if not isinstance(setup, (BatchSplit, Parallel)):
            return None
        mods = [self._plain(c, x.dtype) for c in setup]
        if any(m is None for m in mods):
            return None
        parts = self.row_partition(setup, x.shape[0], fwd)
        return self._sgmv(mods, [sl.stop - sl.start for sl, _ in parts], x, y)

    def _sgmv(self, mods, sizes, x, y):
        B, T, K = x.shape
        seg = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64) * T
        if len({m.params["lora_A"].shape for m in mods}) == 1 and len({m.params["lora_B"].shape for m in mods}) == 1:
            A = np.stack([m.params["lora_A"] for m in mods])
            Bm = np.stack([m.params["lora_B"] for m in mods])
            scales = np.array([m.info["scaling"] for m in mods], y.dtype)
            self.ops.sgmv_lora_add(y.reshape(B * T, -1), x.reshape(B * T, K), A, Bm, seg,
                                   np.arange(len(mods), dtype=np.int64), scales)
            return y
        y2, x2 = y.reshape(B * T, -1), x.reshape(B * T, K)        # different ranks: one fused call per child
        for i, m in enumerate(mods):
            sl = slice(seg[i], seg[i + 1])
            self.ops.lora_add(y2[sl], x2[sl], m.params["lora_A"], m.params["lora_B"], m.info["scaling"])
        return y

    def combine(self, state, w):
        """The last applied module decides: add y + H, scale y ⊙ H, DoRA (m/n)(y + H). Spec: LORA-8, LORA-5."""
        if state.last is None:
            return state.layer_output
        last = self.modules[state.last]
        y, H = state.layer_output, state.hidden_states
        if last.info["dora"]:
            n = F.dora_norm(w, delta_w(last, self._shared(state.last)).astype(w.dtype))
            return F.dora_combine(y, H, last.params["m.weight"].astype(y.dtype), n.astype(y.dtype))
        if last.info["kind"] == "ia3":
            return y * H
        return y + H

    # ---- merge -----------------------------------------------------------------------------------
    def merged_weights(self, mod, W, b):
        """(W', b') with x W'ᵀ + b' == the unmerged single-adapter output. Spec: LORA-9."""
        W64 = W.astype(np.float64)
        dW = delta_w(mod, self._shared(mod.name)).astype(np.float64)
        s = float(mod.info["scaling"])
        if mod.info["kind"] == "ia3":
            v = dW.reshape(-1) * s
            return W64 * v[:, None], (None if b is None else b.astype(np.float64) * v)
        if mod.info["dora"]:
            ratio = mod.params["m.weight"].astype(np.float64).reshape(-1) / np.linalg.norm(W64 + dW, axis=1)
            return ratio[:, None] * (W64 + s * dW), (None if b is None else ratio * b.astype(np.float64))
        return W64 + s * dW, b


__all__ = ["LoRALayer", "LoRAState", "module_kind"]
