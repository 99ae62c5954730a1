"""Bottleneck adapters (SeqBn, DoubleSeqBn, ParBn, AdapterPlus, Compacter) and AdapterFusion at one location.

Spec: BN-1 .. BN-5, FUSION-1, COMP-*.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Optional

import numpy as np

from ..configuration import BnConfig
from ..errors import CompositionError, CompositionIndexError, ConfigError, ConfigKeyError
from ..functional.bottleneck import adapter_output, bn_post_forward, bn_pre_forward, bottleneck, sublayer_close
from ..functional.fusion import TEMPERATURE_START, fusion_attention
from ..functional.gate import mean_gate
from . import init as winit
from .base import AdapterModule, ComposableLayer, match_config, weighted_mean
from .phm import phm_params, phm_weight


class BottleneckState(NamedTuple):
    hidden_states: np.ndarray          # (B, T, D)
    input_tensor: Optional[np.ndarray]  # sub-layer residual input x
    adapter_residual: Optional[np.ndarray]
    layer_norm: object                 # callable or None
    bottleneck_up: Optional[np.ndarray] = None
    last: Optional[str] = None


def bottleneck_size(config, hidden: int, layer_idx: int) -> int:
    """d_b = max(int(D // rf), 1) with a per-layer rf mapping. Spec: BN-1."""
    rf = config["reduction_factor"]
    if isinstance(rf, Mapping):
        if str(layer_idx) in rf:
            rf = rf[str(layer_idx)]
        elif "default" in rf:
            rf = rf["default"]
        else:
            raise ConfigKeyError(f"reduction_factor={dict(rf)!r} gives no value for layer {layer_idx} and no 'default'; "
                              'add a default like {"1": 16, "default": 16}.')
    return max(int(hidden // rf), 1)


class BottleneckLayer(ComposableLayer):
    """Bottleneck adapters of one location (``mh_adapter`` / ``output_adapter``) of one layer. Spec: BN-*."""

    container = "adapters"

    def __init__(self, key, path, model, weights_path=None):
        super().__init__(key, path, model, weights_path)
        self.fusions: dict[str, AdapterModule] = {}

    # ---- lifecycle -------------------------------------------------------------------------------
    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, BnConfig, self.layer_idx, self.location_key)
        if cfg is None:
            return False
        if self.is_hooked and cfg["original_ln_after"] is False:
            # COMPAT(adapters): LAYER_HOOK_UNSUPPORTED in adapters/methods/bottleneck.py
            raise ConfigError(f"adapter {name!r}: original_ln_after=False is not supported where bottlenecks are "
                              f"hooked on a projection's output (model_type={self.model.model_type!r}, adapters' "
                              f"plugin interface); set original_ln_after=True.")
        D = self.model.hidden_size
        d_b = bottleneck_size(cfg, D, self.layer_idx)
        rng = winit.rng_for(cfg, self.model)
        phm = lambda down: {**phm_params(cfg, D, d_b, rng, down, "down", self.model, name),  # noqa: E731
                            **phm_params(cfg, d_b, D, rng, "adapter_up", "up", self.model, name)}
        self.modules[name] = AdapterModule(name, cfg, winit.bottleneck_params(cfg, D, d_b, rng, phm), d_b=d_b,
                                           down_prefix="adapter_down.1" if cfg["ln_before"] else "adapter_down.0")
        return True

    def fusion_param_refs(self, fusion_name):
        mod = self.fusions.get(fusion_name)
        if mod is not None:
            for leaf in mod.params:
                yield f"{self.path}.adapter_fusion_layer.{fusion_name}.{leaf}", mod.params, leaf

    def add_fusion_layer(self, fusion_name, fusion_config, adapter_names, configs) -> None:
        """A fusion exists here only if all fused adapters share a truthy value for this location. Spec: FUSION-1."""
        vals = [c.get(self.location_key) for c in configs]
        if not all(vals) or any(v != vals[0] for v in vals):
            return
        rng = winit.rng_for(None, self.model)
        self.fusions[fusion_name] = AdapterModule(fusion_name, fusion_config,
                                                  winit.fusion_params(fusion_config, self.model.hidden_size, rng),
                                                  T=TEMPERATURE_START if fusion_config["temperature"] else 1.0)

    def delete_fusion_layer(self, fusion_name) -> None:
        self.fusions.pop(fusion_name, None)

    # ---- adapter math (equations in functional/bottleneck.py) ------------------------------------
    def _weights(self, mod):
        """(W_d, b_d, W_u, b_u) as (out, in) linears: stored, or PHM Kronecker sums. Spec: BN-1, PHM-1."""
        p, dp = mod.params, mod.info["down_prefix"]
        if mod.config["phm_layer"]:
            (wd, bd), (wu, bu) = phm_weight(self.model, mod, dp, "down"), phm_weight(self.model, mod, "adapter_up",
                                                                                       "up")
            return wd, bd, wu, bu
        return p[dp + ".weight"], p[dp + ".bias"], p["adapter_up.weight"], p["adapter_up.bias"]

    def _up(self, mod, a):
        """The adapter's scaled up-projection of a (BN-1's branch, before the residual). Spec: BN-1."""
        cfg, p = mod.config, mod.params
        scaling = p["scaling"] if isinstance(cfg["scaling"], str) else float(cfg["scaling"])
        ln_before = (p["adapter_down.0.weight"], p["adapter_down.0.bias"]) if cfg["ln_before"] else None
        return bottleneck(a, *self._weights(mod), act=cfg["non_linearity"], scaling=scaling, ops=self.ops,
                          ln_before=ln_before)

    def _adapter_forward(self, mod, a, r, fwd):
        """(o, up): the adapter's output and its scaled up-projection (fusion's values). Spec: BN-1, BN-4."""
        cfg, p = mod.config, mod.params
        up = self._up(mod, a)
        gate = None
        if cfg["use_gating"]:
            gate = mean_gate(a, p["gate.weight"], p["gate.bias"], ops=self.ops)[:, None, :]   # (B, 1, 1)
            fwd.store_gating_score(mod.name, self.layer_idx, self.location_key, gate)
        ln_after = (p["adapter_norm_after.weight"], p["adapter_norm_after.bias"]) if cfg["ln_after"] else None
        o = adapter_output(up, r, gate=gate, is_parallel=bool(cfg["is_parallel"]),
                           residual_before_ln=cfg["adapter_residual_before_ln"], ln_after=ln_after, ops=self.ops)
        return o, up

    def _pre_forward(self, name, h, x, ln, fusion_config=None):
        cfg = self.modules[name].config
        qbl = None if fusion_config is None else bool(fusion_config["query_before_ln"])
        if cfg["is_parallel"]:
            return x, (x if fusion_config is not None else None), x
        return bn_pre_forward(h, x, ln, residual_before_ln=cfg["residual_before_ln"],
                              original_ln_before=cfg["original_ln_before"], query_before_ln=qbl)

    # ---- state operations ------------------------------------------------------------------------
    def _present(self, setup, last: bool = False):
        """The block's first (or last) adapter present at this location; None if none is.

        Upstream assumes setup.first() / last() exist at every location and raises KeyError (spec COMP-0)."""
        if isinstance(setup, str):
            return setup if setup in self.modules else None
        for child in (reversed(list(setup)) if last else setup):
            name = self._present(child, last)
            if name is not None:
                return name
        return None

    def pre_block(self, setup, state, fwd):
        name = self._present(setup)
        if name is None:
            return state
        h, _, r = self._pre_forward(name, state.hidden_states, state.input_tensor, state.layer_norm)
        return state._replace(hidden_states=h, adapter_residual=r)

    def vslice(self, state, idx):
        return BottleneckState(state.hidden_states[idx], _sl(state.input_tensor, idx), _sl(state.adapter_residual, idx),
                               state.layer_norm, _sl(state.bottleneck_up, idx), state.last)

    def pad_and_concat(self, states):
        cat = lambda xs: None if any(x is None for x in xs) else self.ops.concat(xs, 0)  # noqa: E731
        # Slices whose child is absent here pass through unchanged (last=None); the block's last adapter present
        # decides the closing residual / LN (upstream crashes on such setups; spec COMP-0 note).
        last = next((s.last for s in reversed(states) if s.last is not None), None)
        return BottleneckState(cat([s.hidden_states for s in states]), cat([s.input_tensor for s in states]),
                               cat([s.adapter_residual for s in states]), states[0].layer_norm,
                               cat([s.bottleneck_up for s in states]), last)

    def mean(self, states, weights):
        h = weighted_mean([s.hidden_states for s in states], weights, self.ops)
        return states[0]._replace(hidden_states=h, last=states[-1].last)

    def compose_single(self, name, state, fwd, lvl=0):
        o, up = self._adapter_forward(self.modules[name], state.hidden_states, state.adapter_residual, fwd)
        return state._replace(hidden_states=o, bottleneck_up=up, last=name)

    def compose_batch_split(self, block, state, fwd, lvl):
        """Child i gets rows [Σ_{<i}, Σ_{≤i}); outputs concatenated on the batch axis. Spec: COMP-BATCHSPLIT.

        Children that are all adapters of this location with no gate and no LN after (and the same is_parallel /
        adapter_residual_before_ln) run row-wise into one up-projection buffer and close with one BN-1 output
        over the whole batch: no per-child state slices and no concatenation of four (B, T, D) arrays per block.
        Anything else takes the generic path (same results)."""
        mods = [self.modules.get(c) if isinstance(c, str) else None for c in block]
        flags = {(bool(m.config["is_parallel"]), m.config["adapter_residual_before_ln"]) for m in mods
                 if m is not None}
        if (any(m is None or m.config["use_gating"] or m.config["ln_after"] for m in mods) or len(flags) != 1
                or self._bsz(state) == 0):
            return super().compose_batch_split(block, state, fwd, lvl)
        state = self.pre_block(block, state, fwd)
        a = state.hidden_states
        up = None
        for (rows, _), mod in zip(self.row_partition(block, a.shape[0], fwd), mods):
            if rows.stop > rows.start:
                u = self._up(mod, a[rows])
                if up is None:
                    up = np.empty(a.shape[:1] + u.shape[1:], u.dtype)
                up[rows] = u
        (is_parallel, before_ln), = flags
        o = adapter_output(up, state.adapter_residual, gate=None, is_parallel=is_parallel,
                           residual_before_ln=before_ln, ln_after=None, ops=self.ops)
        return state._replace(hidden_states=o, bottleneck_up=up, last=mods[-1].name)

    def compose_split(self, block, state, fwd, lvl):
        """Child i gets tokens [Σ_{<i}, Σ_{≤i}); concatenated on the sequence axis. Spec: COMP-SPLIT."""
        T = state.hidden_states.shape[1]
        if sum(block.splits) != T:
            raise CompositionIndexError(f"Split: the input has {T} tokens but splits={block.splits} sum to "
                                   f"{sum(block.splits)}; they must be equal.")
        state = self.pre_block(block, state, fwd)
        outs, last, start = [], None, 0
        for child, n in zip(block, block.splits):
            sl = (slice(None), slice(start, start + n))
            part = BottleneckState(state.hidden_states[sl], _sl(state.input_tensor, sl),
                                   _sl(state.adapter_residual, sl), state.layer_norm, _sl(state.bottleneck_up, sl))
            res = self._child(block, child, part, fwd, lvl)
            outs.append(part if res is None else res)       # a child absent here passes its tokens through (COMP-0)
            if res is not None:
                last = res.last or last
            start += n
        if last is None:
            return state
        return state._replace(hidden_states=self.ops.concat([o.hidden_states for o in outs], 1), last=last)

    def compose_fuse(self, block, state, fwd, lvl):
        """AdapterFusion: attention over the children's up-projections. Spec: FUSION-1."""
        if block.name not in self.fusions:
            if set(self.modules).isdisjoint(block.flatten()):
                return state
            raise CompositionError(f"Fuse({', '.join(map(str, block.children))}): no fusion layer named "
                                   f"{block.name!r}; call add_adapter_fusion({list(block.children)!r}) first.")
        fusion = self.fusions[block.name]
        last = self._present(block, last=True)
        if last is None:
            return state
        h, q, r = self._pre_forward(last, state.hidden_states, state.input_tensor, state.layer_norm,
                                    fusion_config=fusion.config)
        state = state._replace(hidden_states=h, adapter_residual=r)
        ups = []
        for child in block:
            res = self._child(block, child, state, fwd, lvl)
            if res is not None:
                ups.append(res.bottleneck_up)
        if ups:
            U = self.ops.concat([u[:, :, None] for u in ups], 2)              # (B, T, N, D)
            h, probs = fusion_attention(q, U, r, fusion.params, fusion.config, T=fusion.info["T"], ops=self.ops)
            fwd.store_fusion_attentions(block.name, self.layer_idx, self.location_key, probs)
        return state._replace(hidden_states=h, last=last)

    # ---- entry -----------------------------------------------------------------------------------
    def forward(self, h, x, layer_norm, fwd):
        """The adapter block replacing LN(h + x). Spec: BN-2, BN-3."""
        setup = self.active_setup(fwd)
        if setup is None:
            return sublayer_close(h, x, layer_norm)
        state = self.compose(setup, BottleneckState(h, x, x, layer_norm), fwd)
        if state.last is None:  # no adapter of the setup ran here
            return sublayer_close(state.hidden_states, x, layer_norm)
        last = self.modules[state.last]
        return bn_post_forward(state.hidden_states, h, state.input_tensor, layer_norm,
                               original_ln_after=last.config["original_ln_after"],
                               is_parallel=bool(last.config["is_parallel"]))

    @property
    def is_hooked(self) -> bool:
        return self.model.arch.stack(self.key.stack).bottleneck_hooked

    def forward_hooked(self, h, x, fwd):
        """adapters' plugin-interface placement (``is_layer_hooked``): a forward hook on the projection's output h,
        with the residual x taken before the pre-norm; the model adds x afterwards itself. Spec: BN-2, FAM-LL-3.

            no active adapter here: h        else: the BN-2 block of (h, x), no layer norm, original_ln_after off"""
        setup = self.active_setup(fwd)
        if setup is None:
            return h
        state = self.compose(setup, BottleneckState(h, x, x, None), fwd)
        if state.last is None:
            return state.hidden_states
        last = self.modules[state.last]
        # COMPAT(adapters): a hooked adapter's original_ln_after is forced to False (the model adds x itself)
        return bn_post_forward(state.hidden_states, h, state.input_tensor, None, original_ln_after=False,
                               is_parallel=bool(last.config["is_parallel"]))


def _sl(t, idx):
    return None if t is None else t[idx]
