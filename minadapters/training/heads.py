"""A prediction head's loss and its backward to the base model's output. Spec: GRAD-HEAD, LOSS-CE, LOSS-MSE,
LOSS-BCE (spec/training.md); the losses are those of adapters 1.3.0's heads (heads/base.py)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..functional.backward import linear_backward
from ..functional.heads import run_body_backward, run_body_forward
from ..functional.losses import IGNORE_INDEX, bce_with_logits, cross_entropy, mse

TRAINABLE_HEADS = ("classification", "multilabel_classification", "tagging")


def head_steps(model, head):
    """(steps, layout indices) of the head body without its dropouts (identity at p = 0)."""
    steps, index = [], []
    for i, m in enumerate(head.layout):
        if m[0] == "linear":
            steps.append(("linear", head.params[f"{i}.weight"], head.params.get(f"{i}.bias")))
        elif m[0] == "act":
            steps.append(("act", m[1]))
        elif m[0] == "ln":
            steps.append(("ln", head.params[f"{i}.weight"], head.params[f"{i}.bias"], m[2]))
        else:
            continue
        index.append(i)
    return steps, index


def head_dropout(model, head) -> float:
    """adapters' head dropout: the head config's dropout_prob, else classifier_dropout, else hidden_dropout_prob."""
    for v in (head.config.get("dropout_prob"), model.raw_config.get("classifier_dropout"),
              model.raw_config.get("hidden_dropout_prob")):
        if v is not None:
            return float(v)
    return 0.0


def head_loss(model, head, fields, labels, attention_mask, grads: dict):
    """Loss of ``head`` on the base output ``fields`` and dL/d last_hidden_state; adds the head's parameter
    gradients to ``grads`` under ``heads.<name>.<i>.<leaf>``. Spec: GRAD-HEAD.  -> (loss, logits, d_hidden)"""
    htype = head.head_type
    if htype not in TRAINABLE_HEADS:
        raise ConfigError(f"training head {head.name!r}: head type {htype!r} has no loss backward in minadapters yet; "
                          f"trainable: {', '.join(TRAINABLE_HEADS)}.")
    if model.training and head_dropout(model, head) > 0:
        raise ConfigError(f"training head {head.name!r}: dropout {head_dropout(model, head)} (head dropout_prob / "
                          "config.json) is not implemented in minadapters yet; set it to 0.0 or call model.eval().")
    h = fields["last_hidden_state"]
    d_hidden = np.zeros_like(h)
    use_pooler = bool(head.config.get("use_pooler", False)) and htype != "tagging"
    if htype == "tagging":
        x = h
    elif use_pooler:
        x = fields["pooler_output"]
    else:
        x = h[:, 0]
    steps, index = head_steps(model, head)
    logits, inputs = run_body_forward(x, steps, model.ops)
    labels = np.asarray(labels)
    if htype == "tagging":
        lab = labels.astype(np.int64)
        P = fields.get("prompt_tokens_length", 0)
        if P:   # COMPAT(adapters): TaggingHead puts P ignored labels (and P mask ones) in front, whatever `combine`
            lab = np.concatenate([np.full((lab.shape[0], P), IGNORE_INDEX), lab], axis=1)
            if attention_mask is not None:
                attention_mask = np.concatenate([np.ones((lab.shape[0], P), np.int64), attention_mask], axis=1)
        lab = lab.reshape(-1)
        if attention_mask is not None:         # adapters' TaggingHead: padding tokens take ignore_index
            lab = np.where(np.asarray(attention_mask).reshape(-1) == 1, lab, IGNORE_INDEX)
        loss, dlogits = cross_entropy(logits.reshape(-1, logits.shape[-1]), lab)
    elif htype == "multilabel_classification":
        loss, dlogits = bce_with_logits(logits, labels.astype(logits.dtype))
    elif head.config["num_labels"] == 1:       # adapters' ClassificationHead: regression
        loss, dlogits = mse(logits.reshape(-1), labels.reshape(-1))
    else:
        loss, dlogits = cross_entropy(logits, labels.reshape(-1).astype(np.int64))
    dx, g = run_body_backward(dlogits.reshape(logits.shape), steps, inputs)
    for j, (dw, db) in g.items():
        i = index[j]
        _add(grads, f"heads.{head.name}.{i}.weight", dw)
        if db is not None:
            _add(grads, f"heads.{head.name}.{i}.bias", db)
    if htype == "tagging":
        d_hidden += dx
    elif use_pooler:                                         # pooled = tanh(h_0 W_pᵀ + b_p), W_p frozen
        pooled = fields["pooler_output"]
        d_hidden[:, 0] += linear_backward(dx * (1.0 - pooled * pooled), None, model.params["pooler.dense.weight"],
                                          need_weight=False)[0]
    else:
        d_hidden[:, 0] += dx
    return loss, logits, d_hidden


def _add(grads, key, g):
    if key in grads:
        grads[key] += g
    else:
        grads[key] = np.array(g, copy=True)
