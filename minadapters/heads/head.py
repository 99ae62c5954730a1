"""One prediction head: its adapters-format config, its parameters under adapters' keys, its forward.

Spec: HEAD-0 (records and keys), HEAD-1 .. HEAD-6 (equations in functional/heads.py).
"""
from __future__ import annotations

import numpy as np

from ..functional import heads as F
from .types import HeadType


def ties_embeddings(model) -> bool:
    """transformers' ``tie_word_embeddings`` (default True; LLaMA's config class defaults it to False)."""
    if hasattr(model.config, "tie_word_embeddings"):
        return bool(model.config.tie_word_embeddings)
    return bool(model.raw_config.get("tie_word_embeddings", True))


def head_dims(model) -> dict:
    # adapters reads ``layer_norm_eps`` from the transformers config, 1e-12 when the family names it otherwise
    return {"hidden_size": model.hidden_size, "layer_norm_eps": float(model.raw_config.get("layer_norm_eps", 1e-12))}


class PredictionHead:
    """A head of type ``htype`` named ``name``; ``params`` maps ``"<i>.weight"`` / ``"<i>.bias"`` (i = index in
    adapters' nn.Sequential) to arrays. LM heads tied to the input embeddings read their projection weight from
    the model's embedding matrix (one array, as adapters shares one parameter). Spec: HEAD-0."""

    def __init__(self, model, name: str, htype: HeadType, config: dict):
        self.name, self.type, self.config = name, htype, config
        self.layout = htype.layout(config, head_dims(model))
        self.out_index = max((i for i, m in enumerate(self.layout) if m[0] == "linear"), default=-1)
        self.params: dict = {}
        std = float(model.raw_config.get("initializer_range", 0.02))
        dtype = model.dtype
        for i, m in enumerate(self.layout):
            if m[0] == "linear":
                _, n_in, n_out, bias = m
                self.params[f"{i}.weight"] = (model.rng.standard_normal((n_out, n_in)) * std).astype(dtype)
                if bias:
                    self.params[f"{i}.bias"] = np.zeros(n_out, dtype)
            elif m[0] == "ln":
                self.params[f"{i}.weight"] = np.ones(m[1], dtype)
                self.params[f"{i}.bias"] = np.zeros(m[1], dtype)
            elif m[0] == "biaffine":                     # adapters initialises biaffine scorers with zeros
                _, key, n_in, n_out, bx, by = m
                self.params[f"{key}.weight"] = np.zeros((n_out, n_in + bx, n_in + by), dtype)
        self.tied_key = None
        if htype.output == "lm" and ties_embeddings(model) and model.arch.embed_key:
            emb = model.params[model.arch.embed_key]
            if emb.shape == self.params[f"{self.out_index}.weight"].shape:
                self.tied_key = model.arch.embed_key
                del self.params[f"{self.out_index}.weight"]

    @property
    def head_type(self) -> str:
        return self.type.name

    def param_refs(self, model) -> dict:
        """``heads.<name>.<i>.<leaf>`` -> (dict, key) to read or assign, the tied weight included."""
        refs = {f"heads.{self.name}.{k}": (self.params, k) for k in self.params}
        if self.tied_key is not None:
            refs[f"heads.{self.name}.{self.out_index}.weight"] = (model.params, self.tied_key)
        return dict(sorted(refs.items(), key=lambda kv: _key_order(kv[0])))

    def state_dict(self, model) -> dict:
        return {k: d[leaf] for k, (d, leaf) in self.param_refs(model).items()}

    def _steps(self, model, stop: int) -> list:
        steps = []
        for i, m in enumerate(self.layout[:stop]):
            if m[0] == "linear":
                steps.append(("linear", self._weight(model, i), self.params.get(f"{i}.bias")))
            elif m[0] == "act":
                steps.append(("act", m[1]))
            elif m[0] == "ln":
                steps.append(("ln", self.params[f"{i}.weight"], self.params[f"{i}.bias"], m[2]))
        return steps

    def _weight(self, model, i):
        if i == self.out_index and self.tied_key is not None:
            return model.params[self.tied_key]
        return self.params[f"{i}.weight"]

    def forward(self, model, hidden, cls, inverse=None, word_starts=None) -> dict:
        """Output fields of this head for the base output ``hidden`` (B, T, D); ``cls.resolve(use_pooler)`` gives
        the (B, D) sequence representation. Spec: HEAD-3, HEAD-4, HEAD-5, HEAD-6."""
        out = self.type.output
        if out == "parse":
            if word_starts is None:
                raise ValueError(f"dependency parsing head {self.name!r} needs word_starts=(batch, tokens) "
                                 "(the first sub-token of each word, padded with pad_token_id).")
            arcs, rels = F.parse_scores(hidden, word_starts, model.config.pad_token_id,
                                        self.params["biaffine_arcs.weight"], self.params["biaffine_rels.weight"])
            return {"rel_preds": rels, "arc_preds": arcs}
        if out == "lm":
            W = self._weight(model, self.out_index)
            b = self.params.get(f"{self.out_index}.bias")
            return {"logits": F.lm_logits(hidden, self._steps(model, self.out_index), W, b, model.ops, inverse)}
        x = cls.resolve(self.config.get("use_pooler", False)) if self.type.reads == "cls" else hidden
        logits = F.run_body(x, self._steps(model, len(self.layout)), model.ops)
        if out == "choices":
            return {"logits": F.choice_logits(logits, self.config["num_choices"])}
        if out == "span":
            start, end = F.span_logits(logits)
            return {"start_logits": start, "end_logits": end}
        return {"logits": logits}


def _key_order(key: str):
    parts = key.split(".")
    return (int(parts[-2]) if parts[-2].isdigit() else 0, parts[-2], parts[-1] != "weight")
