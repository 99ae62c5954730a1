"""Forward results with transformers' access patterns. Spec: API-2.

Fields that are None are absent: ``out[0]`` is the first present field, ``out["logits"]`` a key access,
``out.to_tuple()`` what ``return_dict=False`` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class ModelOutput:
    """Outputs of one forward. Encoder-decoder stacks fill the ``encoder_*`` fields; heads fill ``logits``."""
    last_hidden_state: np.ndarray | None = None
    pooler_output: np.ndarray | None = None
    logits: np.ndarray | None = None
    start_logits: np.ndarray | None = None     # question answering heads
    end_logits: np.ndarray | None = None
    rel_preds: np.ndarray | None = None        # dependency parsing heads
    arc_preds: np.ndarray | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    decoder_hidden_states: tuple | None = None    # encoder-decoders (transformers' Seq2SeqModelOutput names)
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    encoder_last_hidden_state: np.ndarray | None = None
    encoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    adapter_gating_scores: dict | None = None
    adapter_fusion_attentions: dict | None = None

    def keys(self) -> list:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        if key not in self.keys():
            raise KeyError(f"{key!r} is not among this output's fields: {', '.join(self.keys())}.")
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class MultiHeadOutput:
    """One output per head (Parallel, BatchSplit, several active heads), as adapters' MultiHeadOutput: ``out[i]``
    and iteration give the heads' outputs (``out1, out2 = model(...)``), ``out["loss"]`` / ``out.logits`` (the
    heads' logits stacked with vstack) the combined fields. Spec: HEAD-7."""

    def __init__(self, head_outputs, loss=None, hidden_states=None, adapter_gating_scores=None,
                 adapter_fusion_attentions=None):
        self.head_outputs = list(head_outputs)
        self.loss = loss
        self.hidden_states = hidden_states
        self.adapter_gating_scores = adapter_gating_scores
        self.adapter_fusion_attentions = adapter_fusion_attentions

    @property
    def logits(self):
        return np.vstack([o["logits"] for o in self.head_outputs])

    def keys(self) -> list:
        names = ("head_outputs", "loss", "hidden_states", "adapter_gating_scores", "adapter_fusion_attentions")
        return [k for k in names if getattr(self, k) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.head_outputs[key]
        if key not in self.keys():
            raise KeyError(f"{key!r} is not among this output's fields: {', '.join(self.keys())}.")
        return getattr(self, key)

    def __iter__(self):
        return iter(self.head_outputs)

    def __len__(self) -> int:
        return len(self.head_outputs)

    def __repr__(self):
        return f"MultiHeadOutput({len(self.head_outputs)} heads: {self.head_outputs!r})"
