"""Prefix tuning: the model-level pool of prefix networks and the per-attention layer that prepends them.

Spec: PREFIX-1 .. PREFIX-6, COMP-*. adapters 1.3.0: src/adapters/methods/prefix_tuning.py.

State-dict keys (bare base model):
    prefix_tuning.prefix_tunings.<name>.<location>.wte.weight                    (P, D)
    prefix_tuning.prefix_tunings.<name>.<location>.control_trans.{0,2}.{weight,bias}
    prefix_tuning.prefix_tunings.<name>.<location>.control_trans                 (P·L·2·H·Dh,)  flat / ejected
(``prefix_tuning`` is the stack's ``prefix_pool``: EncoderDecoderModel has ``encoder.prefix_tuning`` and
``decoder.bert.prefix_tuning``)
    <layer path>.prefix_tuning.prefix_gates.<name>.{weight,bias}                 (1|2, D), (1|2,)
adapters also writes a copy of the pool under every layer (``...prefix_tuning.pool.prefix_tunings...``); it needs
no such copy to load a file (it loads with strict=False and the pool's tensors are shared), so we write none.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..configuration import ConfigUnion, PrefixTuningConfig
from ..errors import CompositionError, ConfigError
from ..functional.gate import mean_gate
from ..functional.prefix import left_pad_keys, prefix_mlp, prepend_prefix, split_prefix_kv
from . import init as winit
from .base import AdapterModule, ComposableLayer, MethodObject, match_config



DEFAULT_POOL = "prefix_tuning"         # a bare model's pool (LayerStack.prefix_pool's default)


def _seeded(cfg, model, salt: int):
    """The config's seeded generator (distinct per ``salt``), else the model's generator."""
    seed = cfg.get("init_weights_seed")
    return np.random.default_rng((int(seed), salt)) if seed else model.rng


class PrefixTuningPool(MethodObject):
    """All prefix networks of a model: adapter name -> location key -> network. Spec: PREFIX-1.

    Layers announce themselves in add_adapter (``indicate``: their rank among the layers of that location that
    hold the adapter); ``confirm_adapter`` then builds one network per location with L = that count."""

    def __init__(self, model):
        self.model = model
        self.counts: dict[str, dict[str, int]] = {}
        self.groups: dict[str, dict[str, AdapterModule]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------
    def add_adapter(self, name, config) -> bool:
        self.counts.pop(name, None)
        return False            # the networks are built in confirm_adapter, once the layers are counted

    def indicate(self, name: str, location_key) -> int:
        """Count one more layer holding ``name`` at ``location_key`` (a pool slot, PrefixTuningLayer.pool_slot);
        return its rank (prefix id)."""
        locs = self.counts.setdefault(name, {})
        locs[location_key] = locs.get(location_key, 0) + 1
        return locs[location_key] - 1

    def confirm_adapter(self, name, config) -> bool:
        """Build the prefix network of every location that has layers. Spec: PREFIX-1."""
        cfg = match_config(config, PrefixTuningConfig)
        counts = self.counts.pop(name, {})
        if cfg is None:
            return False
        if not counts:
            raise ConfigError(f"Prefix tuning {name!r}: no layer takes a prefix (leave_out={cfg.get('leave_out')!r} "
                              f"covers all {self.model.num_layers} layers); leave at least one layer in.")
        m = self.model
        H, Dh, D, P = m.num_kv_heads, m.head_dim, m.hidden_size, int(cfg["prefix_length"])
        group = {}
        for j, (loc, L) in enumerate(counts.items()):
            rng = _seeded(cfg, m, 1000 + j)
            width = L * 2 * H * Dh
            if cfg["flat"]:
                params = {"control_trans": winit.normal(rng, (P * width,), 1.0)}
            else:
                w0, b0 = winit.linear_default(rng, int(cfg["bottleneck_size"]), D)
                w2, b2 = winit.linear_default(rng, width, int(cfg["bottleneck_size"]))
                params = {"wte.weight": winit.normal(rng, (P, D), 1.0), "control_trans.0.weight": w0,
                          "control_trans.0.bias": b0, "control_trans.2.weight": w2, "control_trans.2.bias": b2}
            group[loc] = AdapterModule(name, cfg, params, L=L, H=H, Dh=Dh, P=P, flat=bool(cfg["flat"]))
        self.groups[name] = group
        return True

    def delete_adapter(self, name) -> None:
        self.counts.pop(name, None)
        self.groups.pop(name, None)

    def param_refs(self, name):
        for slot, mod in self.groups.get(name, {}).items():
            pool, _, loc = slot.rpartition("/")
            pool = pool or DEFAULT_POOL
            for leaf in mod.params:
                yield f"{pool}.prefix_tunings.{name}.{loc}.{leaf}", mod.params, leaf

    # ---- forward ---------------------------------------------------------------------------------
    def network_output(self, mod) -> np.ndarray:
        """(P, L·2·H·Dh): the flat vector viewed row-major, or the MLP over wte. Spec: PREFIX-1."""
        p, info = mod.params, mod.info
        if info["flat"]:
            return p["control_trans"].reshape(info["P"], -1)
        act = self.model.ops.activation(str(mod.config["non_linearity"]).lower())
        return prefix_mlp(p["wte.weight"], p["control_trans.0.weight"], p["control_trans.0.bias"],
                          p["control_trans.2.weight"], p["control_trans.2.bias"], act=act, ops=self.model.ops)

    def prefix_kv(self, name: str, location_key) -> np.ndarray:
        """(L, 2, H, P, Dh) prefix keys/values of every participating layer of ``location_key``. Spec: PREFIX-1."""
        mod = self.groups[name][location_key]
        i = mod.info
        return split_prefix_kv(self.network_output(mod), P=i["P"], L=i["L"], H=i["H"], Dh=i["Dh"])

    def prepare(self, fwd, batch_size: int) -> None:
        """Evaluate every active prefix network once per forward (inference: no dropout, identical rows, so the
        batch axis is added by broadcasting where a layer uses them). Spec: PREFIX-1."""
        setup = fwd.setup
        if setup is None:
            return
        names = setup.flatten()
        for name in sorted(names):
            if name in self.groups:
                fwd.prefix_states[name] = {loc: self.prefix_kv(name, loc) for loc in self.groups[name]}

    # ---- eject -----------------------------------------------------------------------------------
    def eject(self, name: str) -> None:
        """Replace each MLP network by the flat vector of its output; outputs are unchanged. Spec: PREFIX-6.

        The stored config becomes ``flat=True`` so a saved file describes its own weights (adapters 1.3.0 keeps
        flat=False and cannot load its own ejected files). Works for any H·Dh (adapters fails when H·Dh ≠ D)."""
        if name not in self.groups:
            raise ConfigError(f"eject_prefix_tuning({name!r}): adapter {name!r} has no prefix tuning.")
        new_cfg = None
        for mod in self.groups[name].values():
            if mod.info["flat"]:
                continue
            vec = np.ascontiguousarray(self.network_output(mod), dtype=np.float32).reshape(-1)
            mod.params.clear()
            mod.params["control_trans"] = vec
            mod.info["flat"] = True
            if new_cfg is None:
                new_cfg = mod.config.replace(flat=True)
            mod.config = new_cfg
        if new_cfg is not None:
            self._replace_config(name, new_cfg)

    def _replace_config(self, name, new_cfg) -> None:
        ac = self.model.adapters_config
        old = ac.adapters[name]
        if isinstance(old, ConfigUnion):
            members = [new_cfg if isinstance(c, PrefixTuningConfig) else c for c in old.configs]
            ac.adapters[name] = ConfigUnion(*members)
        else:
            ac.adapters[name] = new_cfg
        for layer in self.model.layers_of("prefix"):
            if name in layer.modules:
                layer.modules[name].config = new_cfg


class PrefixState(NamedTuple):
    key_states: np.ndarray              # (B, H, Tk, Dh)
    value_states: np.ndarray            # (B, H, Tk, Dh)
    attn_input: np.ndarray              # (B, T, D) the attention module's input (gating)
    mask: Optional[np.ndarray]          # (B, 1, Tq|1, Tk) additive, or None


class PrefixTuningLayer(ComposableLayer):
    """Prefix tuning at one attention module (location ``self_prefix`` / ``cross_prefix`` ...). Spec: PREFIX-2..5."""

    container = "prefix_gates"

    @property
    def pool(self) -> PrefixTuningPool:
        return self.model.model_level["prefix_pool"]

    @property
    def pool_slot(self) -> str:
        """The location key, prefixed by ``<pool path>/`` when the stack's pool is not the model's own
        ``prefix_tuning``: one prefix network per slot (EncoderDecoderModel's submodels each have their own pool,
        so the encoder's and the decoder's self_prefix are distinct networks)."""
        pool = self.stack_record.prefix_pool
        return self.location_key if pool == DEFAULT_POOL else f"{pool}/{self.location_key}"

    def add_adapter(self, name, config) -> bool:
        """Only ``encoder_*`` / ``cross_*`` locations have a config flag; ``self_prefix`` always matches."""
        key = self.location_key if self.location_key.startswith(("cross", "encoder")) else None
        cfg = match_config(config, PrefixTuningConfig, self.layer_idx, key)
        if cfg is None:
            return False
        prefix_id = self.pool.indicate(name, self.pool_slot)
        params = {}
        if cfg["use_gating"]:
            n, D = (1 if cfg["shared_gating"] else 2), self.model.hidden_size
            rng = _seeded(cfg, self.model, self.layer_idx)
            params["weight"] = winit.normal(rng, (n, D), 0.02)
            params["bias"] = winit.linear_default(rng, n, D)[1]
        self.modules[name] = AdapterModule(name, cfg, params, prefix_id=prefix_id)
        return True

    # ---- state operations ------------------------------------------------------------------------
    def vslice(self, state, idx):
        return PrefixState(state.key_states[idx], state.value_states[idx], state.attn_input[idx],
                           None if state.mask is None else state.mask[idx])

    def pad_and_concat(self, states):
        """Rows whose prefixes are shorter get masked-out keys in front. Spec: PREFIX-4."""
        Tk = max(s.key_states.shape[2] for s in states)
        need_mask = any(s.mask is not None or s.key_states.shape[2] != Tk for s in states)
        padded = []
        for s in states:
            K, V, m = s.key_states, s.value_states, s.mask
            if need_mask and m is None:
                m = np.zeros((K.shape[0], 1, 1, K.shape[2]), dtype=K.dtype)
            padded.append(left_pad_keys(K, V, m, Tk - K.shape[2], ops=self.ops))
        cat = lambda i: self.ops.concat([p[i] for p in padded], 0)  # noqa: E731
        mask = cat(2) if need_mask else None
        return PrefixState(cat(0), cat(1), self.ops.concat([s.attn_input for s in states], 0), mask)

    def mean(self, states, weights):
        raise CompositionError("Average is not supported by prefix tuning (adapters 1.3.0 raises NotImplementedError).")

    def compose_average(self, block, state, fwd, lvl):
        # COMPAT(adapters): upstream's PrefixTuningLayer.mean raises NotImplementedError for any Average it reaches.
        raise CompositionError(f"Average is not supported by prefix tuning (adapters 1.3.0 raises "
                               f"NotImplementedError): {block!r}.")

    def compose_single(self, name, state, fwd, lvl=0):
        """Gate and prepend this adapter's prefix: [P_K ; K], [P_V ; V], mask [0 ; m]. Spec: PREFIX-2, PREFIX-3."""
        mod = self.modules[name]
        states = fwd.prefix_states.get(name)
        if states is None or self.pool_slot not in states:
            raise CompositionError(f"Prefix tuning {name!r}: no prefix states in this forward; the model-level "
                                   "pool must prepare them (run the model, not the layer, with this setup).")
        kv = states[self.pool_slot][mod.info["prefix_id"]]           # (2, H, P, Dh)
        B = state.key_states.shape[0]
        PK = np.broadcast_to(kv[0], (B,) + kv[0].shape)              # (B, H, P, Dh)
        PV = np.broadcast_to(kv[1], (B,) + kv[1].shape)
        if mod.params:
            g = mean_gate(state.attn_input, mod.params["weight"], mod.params["bias"], ops=self.ops)     # (B, 1|2)
            fwd.store_gating_score(name, self.layer_idx, self.location_key, g)
            PK = PK * g[:, 0, None, None, None].astype(PK.dtype)
            PV = PV * g[:, -1, None, None, None].astype(PV.dtype)
        K, V, mask = prepend_prefix(state.key_states, state.value_states, state.mask, PK, PV, ops=self.ops)
        return state._replace(key_states=K, value_states=V, mask=mask)

    # ---- entry -----------------------------------------------------------------------------------
    def forward(self, K, V, mask, attn_input, fwd):
        """(K, V, mask) -> (K', V', mask') with Tk' = Tk + Σ prefix lengths of the setup's adapters. Spec: PREFIX-2."""
        setup = self.active_setup(fwd)
        if setup is None:
            return K, V, mask
        state = self.compose(setup, PrefixState(K, V, attn_input, mask), fwd)
        return state.key_states, state.value_states, state.mask
