"""AdapterSetup (the one thread-local) and ForwardState (per-forward facts, passed explicitly).

Spec: COMP-SETUP.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .composition import parse_composition

_local = threading.local()


class AdapterSetup:
    """Context manager that overrides ``model.active_adapters`` for the current thread. Spec: COMP-SETUP.

        with AdapterSetup(Parallel("a", "b")):
            out = model(input_ids=ids)
    """

    def __init__(self, adapter_setup, head_setup=None, ignore_empty: bool = False):
        self.adapter_setup = parse_composition(adapter_setup)
        self.head_setup = head_setup
        self.ignore_empty = ignore_empty

    def __enter__(self):
        if not self.ignore_empty or self.adapter_setup is not None:
            self._stack().append(self)
            self._pushed = True
        else:
            self._pushed = False
        return self

    def __exit__(self, *exc):
        if self._pushed:
            self._stack().pop()
        return False

    @staticmethod
    def _stack() -> list:
        if not hasattr(_local, "stack"):
            _local.stack = []
        return _local.stack

    @classmethod
    def get_context(cls) -> "AdapterSetup | None":
        stack = cls._stack()
        return stack[-1] if stack else None

    @classmethod
    def get_context_adapter_setup(cls):
        ctx = cls.get_context()
        return ctx.adapter_setup if ctx is not None else None


@dataclass
class ForwardState:
    """Everything one forward pass needs to know beyond the tensors. Built once at the model's edge."""

    setup: Any                                   # active composition block or None
    skip_layers: frozenset = frozenset()
    attention_mask: np.ndarray | None = None     # (B, T) of 0/1 as given by the caller
    decoder_attention_mask: np.ndarray | None = None   # encoder-decoders: the decoder's (B, T_dec), as given
    task_ids: Any = None
    output_gating_scores: bool = False
    output_fusion_attentions: bool = False
    original_batch_size: int | None = None      # rows per channel; the batch has channels · this many rows
    channels: int = 1                            # > 1: the model's edge replicated the inputs (COMP-PARALLEL)
    prompt_tokens_length: int = 0
    prefix_states: dict = field(default_factory=dict)   # adapter -> location -> list[(K, V)] per layer
    gating_scores: dict = field(default_factory=dict)   # adapter -> layer -> location -> array
    fusion_attentions: dict = field(default_factory=dict)

    def layer_setup(self, layer_idx: int):
        """The setup seen by layer ``layer_idx`` of any stack (None where skip_layers names it)."""
        if self.setup is None or layer_idx in self.skip_layers:
            return None
        return self.setup

    def store_gating_score(self, adapter: str, layer: int, location: str, gate: np.ndarray) -> None:
        """Record a gate as adapters does: squeeze, 0-d -> 1-d, a second gate column-stacked. Spec: GATE-2."""
        if not self.output_gating_scores:
            return
        g = np.squeeze(np.asarray(gate, dtype=np.float32))
        if g.ndim == 0:
            g = g[None]
        per_layer = self.gating_scores.setdefault(adapter, {}).setdefault(layer, {})
        prev = per_layer.get(location)
        per_layer[location] = g if prev is None else np.column_stack((prev, g))

    def store_fusion_attentions(self, fusion: str, layer: int, location: str, attn: np.ndarray) -> None:
        if self.output_fusion_attentions:
            self.fusion_attentions.setdefault(fusion, {}).setdefault(layer, {})[location] = attn
