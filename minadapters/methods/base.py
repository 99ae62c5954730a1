"""Method-agnostic composition: one function per block, over a method's state. Spec: COMP-*.

Every method layer (bottleneck, LoRA, prefix tuning, ...) sits at one hook location of one model
layer, holds ``modules[name] -> AdapterModule`` and implements the state operations ``vslice``,
``pad_and_concat``, ``repeat``, ``mean``, ``compose_single`` (and optionally ``pre_block``). The
block semantics below are those of adapters 1.3.0 (methods/adapter_layer_base.py), including its
deviations from the docs (Average divides by N again: COMP-AVERAGE).
"""
from __future__ import annotations

import numpy as np

from ..composition import (ALLOWED_NESTINGS, AdapterCompositionBlock, Average, BatchSplit, Fuse, MultiTask,
                           Parallel, Split, Stack)
from ..errors import CompositionError, CompositionIndexError


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


class AdapterLayer:
    """Base of all per-location method layers. ``path`` + ``container`` + name + leaf = state-dict key."""

    container = "adapters"          # state-dict segment: adapters, loras, refts, prefix_gates ...
    location_key = ""

    def __init__(self, layer_idx: int, path: str, model):
        self.layer_idx = layer_idx
        self.path = path
        self.model = model          # the owning model (config, adapters_config, ops)
        self.modules: dict[str, AdapterModule] = {}

    @property
    def ops(self):
        return self.model.ops

    def add_adapter(self, name: str, config) -> bool:
        """Create this location's module for adapter ``name`` if its config targets it."""
        raise NotImplementedError

    def delete_adapter(self, name: str) -> None:
        self.modules.pop(name, None)

    def param_refs(self, name: str):
        """Yield (full state-dict key, params dict, leaf) for adapter ``name`` at this location."""
        mod = self.modules.get(name)
        if mod is None:
            return
        for leaf in mod.params:
            yield f"{self.path}.{self.container}.{name}.{leaf}", mod.params, leaf

    def state_dict_items(self, name: str):
        """Yield (full key, array) for adapter ``name`` at this location."""
        for key, d, leaf in self.param_refs(name):
            yield key, d[leaf]

    def active_setup(self, state):
        """The setup if it touches this layer's adapters, else None (layer runs as the base model)."""
        setup = state.layer_setup(self.layer_idx) if state is not None else None
        if setup is None or not (set(self.modules) & setup.flatten()):
            return None
        return setup


class ComposableLayer(AdapterLayer):
    """Generic composition over a method state (a NamedTuple whose field 0 has the batch axis first)."""

    allow_multi_parallelize = False

    # ---- state operations each method implements -------------------------------------------------
    def pre_block(self, setup, state, fwd):
        return state

    def vslice(self, state, idx):
        raise NotImplementedError

    def pad_and_concat(self, states):
        raise NotImplementedError

    def repeat(self, state, channels: int):
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
        if set(self.modules).isdisjoint(block.flatten()):
            return state
        raise CompositionError(f"Split is not supported by {self._method_name()} adapters "
                               f"(adapters 1.3.0 raises NotImplementedError): {block!r}.")

    def compose_batch_split(self, block, state, fwd, lvl):
        """Child i gets rows [Σ_{<i}, Σ_{≤i}); outputs concatenated on the batch axis. Spec: COMP-BATCHSPLIT."""
        bsz = self._bsz(state)
        if sum(block.batch_sizes) != bsz:
            raise CompositionIndexError(f"BatchSplit: the batch has {bsz} rows but batch_sizes={block.batch_sizes} "
                                   f"sum to {sum(block.batch_sizes)}; they must be equal.")
        state = self.pre_block(block, state, fwd)
        outs, start = [], 0
        for child, size in zip(block, block.batch_sizes):
            part = self.vslice(state, slice(start, start + size))
            res = self._child(block, child, part, fwd, lvl)
            outs.append(part if res is None else res)
            start += size
        return self.pad_and_concat(outs)

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
        """Replicate the batch once per child (first time only); child i gets copy i. Spec: COMP-PARALLEL."""
        channels = block.parallel_channels
        if not fwd.adapters_parallelized:
            orig = self._bsz(state)
            state = self.repeat(state, channels)
            fwd.adapters_parallelized = True
            fwd.original_batch_size = orig
        else:
            bsz = self._bsz(state)
            if self.allow_multi_parallelize and bsz == fwd.original_batch_size:
                state = self.repeat(state, channels)
                orig = bsz
            elif bsz % channels != 0:
                raise CompositionError(f"Parallel: the batch has {bsz} rows, not divisible by the {channels} "
                                       "parallel channels.")
            else:
                orig = bsz // channels
        state = self.pre_block(block, state, fwd)
        outs = []
        for i, child in enumerate(block):
            part = self.vslice(state, slice(i * orig, (i + 1) * orig))
            res = self._child(block, child, part, fwd, lvl)
            outs.append(part if res is None else res)
        return self.pad_and_concat(outs)

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
