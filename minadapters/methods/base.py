"""Method-agnostic composition: one function per block, over a method's state. Spec: COMP-*.

Every method layer (bottleneck, LoRA, prefix tuning, ...) sits at one hook location of one model
layer, holds ``modules[name] -> AdapterModule`` and implements the state operations ``vslice``,
``pad_and_concat``, ``mean``, ``compose_single`` (and optionally ``pre_block``). Parallel never replicates
here: the model's edge did (COMP-PARALLEL); blocks only slice. The
block semantics below are those of adapters 1.3.0 (methods/adapter_layer_base.py), including its
deviations from the docs (Average divides by N again: COMP-AVERAGE).
"""
from __future__ import annotations

import numpy as np

from ..composition import (ALLOWED_NESTINGS, AdapterCompositionBlock, Average, BatchSplit, Fuse, MultiTask,
                           Parallel, Split, Stack)
from ..configuration import ConfigUnion
from ..errors import CompositionError, CompositionIndexError, ConfigError


class AdapterModule:
    """The parameters of one adapter at one location: leaf name -> array (upstream state-dict leaf names)."""

    def __init__(self, name: str, config, params: dict | None = None, **info):
        self.name = name
        self.config = config
        self.params: dict[str, np.ndarray] = params if params is not None else {}
        self.info = info          # derived facts (bottleneck width, scaling kind, ...)

    def __repr__(self):
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.params.items())
        return f"AdapterModule({self.name!r}, {{{shapes}}})"


def match_config(config, config_type, layer_idx=None, location_key=None):
    """The config (or the single union member) of ``config_type`` that targets this layer and location, else
    None. ``leave_out`` excludes layers; ``location_key`` must be truthy in the member. Spec: COMP-0."""
    if config is None:
        return None
    members = config.configs if isinstance(config, ConfigUnion) else [config]
    found = [c for c in members if isinstance(c, config_type)
             and not (layer_idx is not None and layer_idx in (c.get("leave_out", []) or []))
             and not (location_key is not None and not c.get(location_key, False))]
    if len(found) > 1:
        raise ConfigError(f"Multiple adapter definitions conflict in layer {layer_idx} at {location_key!r}; use one "
                          "adaptation block per location and adapter.")
    return found[0] if found else None


def weighted_mean(arrays, weights, ops):
    """mean_i(w_i · x_i) = Σ_i w_i x_i / N over N same-shaped states. Spec: COMP-AVERAGE."""
    w = np.asarray(weights, dtype=arrays[0].dtype).reshape((-1,) + (1,) * arrays[0].ndim)
    return (ops.concat([a[None] for a in arrays], 0) * w).mean(0)


class MethodObject:
    """Declared interface of every method object (per-location layers and model-level ones), with no-op
    defaults: the model calls each of these on every object, never asks which it has. Spec: ARCH-2."""

    def add_adapter(self, name: str, config) -> bool:
        """Create this object's part of adapter ``name`` (config: the adapter's whole config) if it has one."""
        return False

    def confirm_adapter(self, name: str, config) -> None:
        """Called once every object has seen add_adapter (model-level objects finish here)."""

    def delete_adapter(self, name: str) -> None:
        """Forget adapter ``name``."""

    def add_fusion_layer(self, fusion_name: str, fusion_config, adapter_names, configs) -> None:
        """Create a fusion layer over ``adapter_names`` if this location fuses."""

    def delete_fusion_layer(self, fusion_name: str) -> None:
        """Forget fusion ``fusion_name``."""

    def param_refs(self, name: str):
        """Yield (full state-dict key, params dict, leaf) for adapter ``name``."""
        return iter(())

    def fusion_param_refs(self, fusion_name: str):
        """Yield (full state-dict key, params dict, leaf) for fusion ``fusion_name``."""
        return iter(())

    def state_dict_items(self, name: str):
        """Yield (full key, array) for adapter ``name``."""
        for key, d, leaf in self.param_refs(name):
            yield key, d[leaf]

    def prepare(self, fwd, batch_size: int) -> None:
        """Once per forward, before the layers run (model-level objects)."""

    def summary_param_count(self, name: str, seen: set) -> int:
        """Trainable parameters of adapter ``name`` here, as adapters counts them; arrays whose id is in
        ``seen`` (registered under several keys) count once. Spec: API-3."""
        total = 0
        for _, d, leaf in self.param_refs(name):
            arr = d[leaf]
            if id(arr) not in seen:
                seen.add(id(arr))
                total += int(arr.size)
        return total


class AdapterLayer(MethodObject):
    """Base of all per-location method layers. ``path`` + ``container`` + name + leaf = state-dict key.

    ``key`` is the layer's LayerKey (stack, layer, kind, location); ``weights_path`` the base module's weights."""

    container = "adapters"          # state-dict segment: adapters, loras, refts, prefix_gates ...

    def __init__(self, key, path: str, model, weights_path: str | None = None):
        self.key = key
        stack = model.arch.stack(key.stack)
        # adapters' numbering (a decoder stack may count on after the encoder's layers, ARCH-1)
        self.layer_idx = key.layer if stack.layer_offset is None else model.arch.adapters_layer_index(
            model.config, stack, key.layer)
        self.location_key = stack.location_key(key.location)
        self.stack_record = stack
        self.path = path
        self.weights_path = weights_path or path
        self.model = model          # the owning model (hidden size, ops, rng, shared parameters)
        self.modules: dict[str, AdapterModule] = {}

    @property
    def ops(self):
        return self.model.ops

    def delete_adapter(self, name: str) -> None:
        self.modules.pop(name, None)

    def param_refs(self, name: str):
        mod = self.modules.get(name)
        if mod is None:
            return
        for leaf in mod.params:
            yield f"{self.path}.{self.container}.{name}.{leaf}", mod.params, leaf

    def active_setup(self, state):
        """The setup if it touches this layer's adapters, else None (layer runs as the base model)."""
        setup = state.layer_setup(self.layer_idx) if state is not None else None
        if setup is None or not (set(self.modules) & setup.flatten()):
            return None
        return setup


class ComposableLayer(AdapterLayer):
    """Generic composition over a method state (a NamedTuple whose field 0 has the batch axis first)."""

    # ---- state operations each method implements -------------------------------------------------
    def pre_block(self, setup, state, fwd):
        return state

    def vslice(self, state, idx):
        raise NotImplementedError

    def pad_and_concat(self, states):
        raise NotImplementedError

    def mean(self, states, weights):
        raise NotImplementedError

    def compose_single(self, name: str, state, fwd, lvl: int = 0):
        raise NotImplementedError

    def _bsz(self, state) -> int:
        return state[0].shape[0]

    # ---- block semantics ---------------------------------------------------------------------------
    def _method_name(self):
        return type(self).__name__.replace("Layer", "")

    def check_nesting(self, parent, child, lvl: int) -> None:
        """Run-time nesting check. Spec: COMP-1."""
        if isinstance(parent, Stack) and lvl >= 1:
            raise CompositionError(f"Specified adapter setup is too deep: cannot have {child!r} inside "
                                   f"{parent!r} at level {lvl}.")
        if type(child) not in ALLOWED_NESTINGS[type(parent)]:
            allowed = ", ".join("str" if t is str else t.__name__ for t in ALLOWED_NESTINGS[type(parent)])
            raise CompositionError(f"Cannot nest {child!r} inside {type(parent).__name__}; allowed: {allowed}.")

    def _child(self, parent, child, state, fwd, lvl):
        """Run one child of ``parent``; None if it names an adapter this layer lacks."""
        if isinstance(child, AdapterCompositionBlock):
            self.check_nesting(parent, child, lvl)
            return self.compose_block(child, state, fwd, lvl + 1)
        if child in self.modules:
            return self.compose_single(child, state, fwd, lvl + 1)
        return None

    def compose_block(self, block, state, fwd, lvl: int):
        fn = {Stack: self.compose_stack, Fuse: self.compose_fuse, Split: self.compose_split,
              BatchSplit: self.compose_batch_split, Parallel: self.compose_parallel,
              MultiTask: self.compose_multi_task, Average: self.compose_average}[type(block)]
        return fn(block, state, fwd, lvl)

    def compose(self, setup, state, fwd):
        """Entry point: run ``setup`` over ``state``. Spec: COMP-0."""
        if isinstance(setup, AdapterCompositionBlock):
            return self.compose_block(setup, state, fwd, 0)
        if setup in self.modules:
            return self.compose_single(setup, state, fwd, 0)
        raise CompositionError(f"Invalid adapter setup {setup!r}: not an adapter name or composition block.")

    def compose_stack(self, block, state, fwd, lvl):
        """Children in order; names this layer lacks are skipped. Spec: COMP-STACK."""
        for child in block:
            if isinstance(child, AdapterCompositionBlock):
                self.check_nesting(block, child, lvl)
                state = self.compose_block(child, state, fwd, lvl + 1)
            elif child in self.modules:
                state = self.pre_block(child, state, fwd)
                state = self.compose_single(child, state, fwd, lvl + 1)
        return state

    def compose_fuse(self, block, state, fwd, lvl):
        if set(self.modules).isdisjoint(block.flatten()):
            return state
        raise CompositionError(f"Fuse is not supported by {self._method_name()} adapters "
                               f"(adapters 1.3.0 raises NotImplementedError): {block!r}.")

    def compose_split(self, block, state, fwd, lvl):
        """Methods without a token split pass a Split through when none of its adapters is here. Spec: COMP-SPLIT."""
        if set(self.modules).isdisjoint(block.flatten()):
            return state
        raise CompositionError(f"Split is not supported by {self._method_name()} adapters "
                               f"(adapters 1.3.0 raises NotImplementedError): {block!r}.")

    def row_partition(self, block, bsz: int, fwd):
        """[(rows, child)] of a BatchSplit (batch_sizes) or a Parallel (channel i of the batch the model's edge
        replicated). The one statement of both row rules. Spec: COMP-BATCHSPLIT, COMP-PARALLEL."""
        if isinstance(block, BatchSplit):
            if sum(block.batch_sizes) != bsz:
                raise CompositionIndexError(f"BatchSplit: the batch has {bsz} rows but batch_sizes={block.batch_sizes} "
                                       f"sum to {sum(block.batch_sizes)}; they must be equal.")
            sizes = block.batch_sizes
        else:
            n, orig = len(block), fwd.original_batch_size
            if orig is None or bsz != n * orig:
                raise CompositionError(f"{block!r}: the batch here has {bsz} rows, but {n} channels of {orig} rows "
                                       "were expected; only one Parallel level can run in a setup.")
            sizes = [orig] * n
        starts = np.cumsum([0] + list(sizes))
        return [(slice(int(starts[i]), int(starts[i + 1])), child) for i, child in enumerate(block)]

    def _compose_rows(self, block, state, fwd, lvl):
        state = self.pre_block(block, state, fwd)
        outs = []
        for rows, child in self.row_partition(block, self._bsz(state), fwd):
            part = self.vslice(state, rows)
            res = self._child(block, child, part, fwd, lvl)
            outs.append(part if res is None else res)
        return self.pad_and_concat(outs)

    def compose_batch_split(self, block, state, fwd, lvl):
        """Child i gets rows [Σ_{<i}, Σ_{≤i}); outputs concatenated on the batch axis. Spec: COMP-BATCHSPLIT."""
        return self._compose_rows(block, state, fwd, lvl)

    def compose_multi_task(self, block, state, fwd, lvl):
        """Rows sorted by task id, run as a BatchSplit, restored. Spec: COMP-MULTITASK."""
        state = self.pre_block(block, state, fwd)
        task_ids = fwd.task_ids
        if task_ids is None:
            raise CompositionError(f"{block!r} needs task_ids= in the forward call (one task per batch row).")
        if len(task_ids) and isinstance(task_ids[0], str):
            names = list(block.children)
            task_ids = [names.index(t) for t in task_ids]
        task_ids = np.asarray(task_ids, dtype=np.int64)
        order = np.argsort(task_ids, kind="stable")
        sizes = np.bincount(task_ids, minlength=1).tolist()
        sizes += [0] * (len(block) - len(sizes))
        inner = BatchSplit(*block.children, batch_sizes=sizes[:len(block)])
        out = self.compose_batch_split(inner, self.vslice(state, order), fwd, lvl)
        return self.vslice(out, np.argsort(order, kind="stable"))

    def compose_parallel(self, block, state, fwd, lvl):
        """Child i gets channel i of the batch, which the model's edge replicated. Spec: COMP-PARALLEL."""
        return self._compose_rows(block, state, fwd, lvl)

    def compose_average(self, block, state, fwd, lvl):
        """mean_i(w_i · out_i) over the children present = Σ w_i out_i / N. Spec: COMP-AVERAGE."""
        state = self.pre_block(block, state, fwd)
        outs = []
        for child in block:
            res = self._child(block, child, state, fwd, lvl)
            if res is not None:
                outs.append(res)
        weights = np.asarray(block.weights)
        if len(outs) == 1 and len(weights) > 1:
            # COMPAT(adapters): one child present broadcasts against all N weights: out · Σw / N (spec COMP-AVERAGE)
            return self.mean(outs * len(weights), weights)
        if len(outs) != len(weights):
            raise CompositionError(f"Average: {len(outs)} of the {len(block)} children of {block!r} exist in layer "
                                   f"{self.layer_idx} ({self.location_key}); each weight needs its adapter there.")
        return self.mean(outs, weights)
