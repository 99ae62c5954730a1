"""Declared prediction-head types: one ``HeadType`` record per adapters 1.3.0 head type. Spec: HEAD-0.

A record names the head type as adapters does (``head_config.json``'s ``config.head_type``), the constructor
arguments of adapters' head class with their defaults (the keys of the saved config), the layer layout
(which index of adapters' nn.Sequential holds which module, so state-dict keys are ``heads.<name>.<i>.<leaf>``),
what the head reads (the sequence representation or every token) and what it outputs.

Adding a head type = one record in ``HEAD_TYPES``; a family offers the types listed in its AdapterModel class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..functional.activations import get_activation

# module descriptors of a layout: ("drop",) | ("linear", in, out, bias) | ("act", name) | ("ln", dim, eps)


def classifier_layout(cfg: dict, dims: dict) -> list:
    """adapters' PredictionHead.build: per layer a dropout, then a hidden linear (+ activation) or the output
    linear (num_labels outputs; 1 for multiple choice). Spec: HEAD-1."""
    D, layers = dims["hidden_size"], cfg["layers"]
    out = []
    for i in range(layers):
        out.append(("drop",))
        if i < layers - 1:
            out.append(("linear", D, D, True))
            if cfg["activation_function"]:
                out.append(("act", cfg["activation_function"]))
        else:
            n = cfg["num_labels"] if "num_labels" in cfg else 1
            out.append(("linear", D, n, cfg.get("bias", True)))
    return out


def lm_layout(cfg: dict, dims: dict) -> list:
    """adapters' CausalLMHead.build: layers-1 transforms (linear, activation, LayerNorm), then the vocabulary
    projection (the output embedding). Spec: HEAD-6."""
    D, E = dims["hidden_size"], cfg["embedding_size"]
    out = []
    for i in range(cfg["layers"] - 1):
        out.append(("linear", D if i == 0 else E, E, True))
        if cfg["activation_function"]:
            out.append(("act", cfg["activation_function"]))
        if cfg.get("layer_norm", False):
            out.append(("ln", E, dims["layer_norm_eps"]))
    out.append(("linear", E, cfg["vocab_size"], cfg["bias"]))
    return out


def seq2seq_lm_layout(cfg: dict, dims: dict) -> list:
    """adapters' Seq2SeqLMHead: CausalLMHead.build with embedding_size = the hidden size (its config has no
    embedding_size). Spec: HEAD-6."""
    return lm_layout(dict(cfg, embedding_size=dims["hidden_size"]), dims)


def biaffine_layout(cfg: dict, dims: dict) -> list:
    """adapters' BiaffineParsingHead: an arc scorer (bias on the dependent side) and a relation scorer.
    Spec: HEAD-11."""
    D = dims["hidden_size"]
    return [("biaffine", "biaffine_arcs", D, 1, True, False),
            ("biaffine", "biaffine_rels", D, cfg["num_labels"], True, True)]


@dataclass(frozen=True)
class HeadType:
    """One head type. ``args``: (name, default) of adapters' head-class constructor, in order; ``reads``:
    "cls" (one vector per sequence) or "tokens"; ``output``: "logits", "choices", "span", "lm" or "parse"."""
    name: str
    args: tuple
    layout: Callable
    reads: str
    output: str
    label_key: str | None = "num_labels"      # config key that sizes the default LABEL_i map

    def config(self, model, **given) -> dict:
        """The config dict adapters stores for this head (``head_config.json``'s ``config``)."""
        known = dict(self.args)
        unknown = sorted(set(given) - set(known) - {"id2label"})
        if unknown:
            raise TypeError(f"head type {self.name!r} got unexpected argument(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(known)}, id2label.")
        cfg = {"head_type": self.name}
        for k, default in self.args:
            cfg[k] = given.get(k, default)
        if self.output == "lm":
            cfg["vocab_size"] = cfg["vocab_size"] or model.config.vocab_size
            if "embedding_size" in known:
                cfg["embedding_size"] = cfg["embedding_size"] or model.raw_config.get("embedding_size",
                                                                                       model.hidden_size)
        id2label = given.get("id2label")
        cfg["label2id"] = {lab: int(i) for i, lab in id2label.items()} if id2label is not None else None
        _check(self, cfg)
        return cfg


def _check(ht: HeadType, cfg: dict) -> None:
    """Integers where adapters needs them; a QA head must output start and end. Errors name the field."""
    for key in ("num_labels", "num_choices", "layers", "vocab_size", "embedding_size"):
        if key in cfg:
            v = cfg[key]
            low = 0 if key == "layers" and ht.output != "lm" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{ht.name} head: {key}={v!r} must be an int >= {low}.")
    if ht.output not in ("lm", "parse") and cfg["layers"] < 1:
        raise ValueError(f"{ht.name} head: layers={cfg['layers']} must be >= 1.")
    if ht.output == "span" and cfg["num_labels"] != 2:
        # COMPAT(adapters): upstream accepts any num_labels and fails in forward when splitting start/end.
        raise ValueError(f"question_answering head: num_labels={cfg['num_labels']} must be 2 (start and end).")
    act = cfg.get("activation_function")
    if act is not None:
        get_activation(act)


_CLS = (("num_labels", 2), ("layers", 2), ("activation_function", "tanh"), ("use_pooler", False), ("bias", True),
        ("dropout_prob", None))
_TOKEN = (("num_labels", 2), ("layers", 1), ("activation_function", "tanh"), ("dropout_prob", None))
_LM = (("vocab_size", None), ("embedding_size", None), ("layers", 1), ("activation_function", None),
       ("layer_norm", False), ("bias", False), ("shift_labels", True), ("dropout_prob", None))

HEAD_TYPES = {h.name: h for h in (
    HeadType("classification", _CLS, classifier_layout, "cls", "logits"),
    HeadType("multilabel_classification", _CLS, classifier_layout, "cls", "logits"),
    HeadType("multiple_choice", (("num_choices", 2), ("layers", 2), ("activation_function", "tanh"),
                                 ("use_pooler", False), ("dropout_prob", None)),
             classifier_layout, "cls", "choices", label_key="num_choices"),
    HeadType("tagging", _TOKEN, classifier_layout, "tokens", "logits"),
    HeadType("question_answering", _TOKEN, classifier_layout, "tokens", "span"),
    HeadType("dependency_parsing", (("num_labels", 2),), biaffine_layout, "tokens", "parse"),
    HeadType("causal_lm", _LM, lm_layout, "tokens", "lm", label_key=None),
    HeadType("seq2seq_lm", (("vocab_size", None), ("layers", 1), ("activation_function", None),
                            ("layer_norm", False), ("bias", False), ("shift_labels", False)),
             seq2seq_lm_layout, "tokens", "lm", label_key=None),
    HeadType("masked_lm", (("vocab_size", None), ("embedding_size", None), ("layers", 2),
                           ("activation_function", "gelu"), ("layer_norm", True), ("bias", True),
                           ("shift_labels", False)),
             lm_layout, "tokens", "lm", label_key=None),
)}


def head_type(name) -> HeadType:
    try:
        return HEAD_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"head_type={name!r} is not known; known head types: {', '.join(HEAD_TYPES)}.") from None
