"""A prediction head's loss and its backward to the base model's output. Spec: GRAD-HEAD, LOSS-CE, LOSS-MSE,
LOSS-BCE (spec/training.md); the losses are those of adapters 1.3.0's heads (heads/base.py)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..functional.backward import dropout_mask, linear_backward
from ..functional.heads import last_token_index, run_body_backward, run_body_forward
from ..functional.losses import IGNORE_INDEX, bce_with_logits, cross_entropy, mse

TRAINABLE_HEADS = ("classification", "multilabel_classification", "tagging", "multiple_choice", "question_answering",
                   "causal_lm", "masked_lm")


def head_steps(model, head, rng=None):
    """(steps, layout indices) of the head body; its dropouts become ("drop", mask maker) steps when ``rng`` is
    given (train() mode) and the head's probability is > 0, else they are left out (identity); a tied LM
    projection reads the (frozen) input embedding matrix."""
    steps, index = [], []
    p = head_dropout(model, head)
    for i, m in enumerate(head.layout):
        if m[0] == "drop":
            if rng is None or p == 0.0:
                continue
            steps.append(("drop", lambda shape, dtype: dropout_mask(rng, shape, p, dtype)))
        elif m[0] == "linear":
            w = model.params[head.tied_key] if (i == head.out_index and head.tied_key) else head.params[f"{i}.weight"]
            steps.append(("linear", w, head.params.get(f"{i}.bias")))
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


def head_loss(model, head, fields, targets: dict, attention_mask, grads: dict, trainable: frozenset):
    """Loss of ``head`` on the base output ``fields`` and dL/d last_hidden_state; adds the gradients of the head's
    ``trainable`` parameters to ``grads`` under ``heads.<name>.<i>.<leaf>``. Spec: GRAD-HEAD.
    -> (loss, logits, d_hidden)"""
    htype = head.head_type
    if htype not in TRAINABLE_HEADS:
        raise ConfigError(f"training head {head.name!r}: head type {htype!r} has no loss backward in minadapters yet; "
                          f"trainable: {', '.join(TRAINABLE_HEADS)}.")
    h = fields["last_hidden_state"]
    d_hidden = np.zeros_like(h)
    per_token = htype in ("tagging", "question_answering", "causal_lm", "masked_lm")
    use_pooler = bool(head.config.get("use_pooler", False)) and not per_token
    rows = np.arange(h.shape[0])
    last = None
    if model.arch.is_causal and not per_token:    # decoders read the last non-padding token (HEAD-2)
        last = last_token_index(fields.get("input_ids"), getattr(model.config, "pad_token_id", None), h.shape[0])
    if per_token:
        x = h
    elif use_pooler:
        x = fields["pooler_output"]
    else:
        x = h[rows, last] if last is not None else h[:, 0]
    steps, index = head_steps(model, head, fields.get("dropout_rng"))
    inv_name = None
    if htype in ("causal_lm", "masked_lm") and fields.get("inverse_adapter") is not None:
        inv_name, blk = fields["inverse_adapter"]      # HEAD-6: the inverse coupling before the projection
        if blk["kind"] != "nice":
            raise ConfigError(f"training head {head.name!r}: the inverse of inv_adapter={blk['kind']!r} has no "
                              "backward in minadapters yet; allowed: 'nice'.")
        steps.insert(len(steps) - 1, ("inverse", blk["params"], blk["act"], model.ops))
        index.insert(len(index) - 1, None)
    logits, inputs = run_body_forward(x, steps, model.ops)
    labels = np.asarray(targets.get("labels"))
    if htype == "question_answering":
        loss, dlogits = span_loss(logits, targets["start_positions"], targets["end_positions"])
    elif htype == "multiple_choice":
        loss, dlogits = choice_loss(logits, labels, head.config["num_choices"])
    elif htype in ("causal_lm", "masked_lm"):
        loss, dlogits = lm_loss(logits, labels, shift=bool(head.config.get("shift_labels", False)),
                                prompt_length=fields.get("prompt_tokens_length", 0))
    elif htype == "tagging":
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
    for j, gj in g.items():
        if index[j] is None:                            # the inverse coupling: the adapter's own parameters
            for leaf, grad in gj.items():
                key = f"invertible_adapters.{inv_name}.{leaf}"
                if key in trainable:
                    _add(grads, key, grad)
            continue
        dw, db = gj
        for leaf, grad in (("weight", dw), ("bias", db)):
            key = f"heads.{head.name}.{index[j]}.{leaf}"
            if grad is not None and key in trainable:
                _add(grads, key, grad)
    if per_token:
        d_hidden += dx
    elif last is not None:
        np.add.at(d_hidden, (rows, last), dx)
    elif use_pooler:                                         # pooled = tanh(h_0 W_pᵀ + b_p), W_p frozen
        pooled = fields["pooler_output"]
        d_hidden[:, 0] += linear_backward(dx * (1.0 - pooled * pooled), None, model.params["pooler.dense.weight"],
                                          need_weight=False)[0]
    else:
        d_hidden[:, 0] += dx
    return loss, logits, d_hidden


def choice_loss(scores, labels, num_choices: int):
    """adapters' MultipleChoiceHead: one score per (example, choice) row viewed as (B, C), cross-entropy against
    the chosen index. Spec: LOSS-MC.  scores (B·C, 1) -> (loss, dL/dscores)"""
    loss, dz = cross_entropy(scores.reshape(-1, num_choices), np.asarray(labels).reshape(-1).astype(np.int64))
    return loss, dz.reshape(scores.shape)


def span_loss(logits, start_positions, end_positions):
    """adapters' QuestionAnsweringHead: positions clamped to [0, T], T ignored; (CE(start) + CE(end)) / 2.
    Spec: LOSS-QA.  logits (B, T, 2) -> (loss, dL/dlogits)"""
    T = logits.shape[1]
    d = np.zeros_like(logits)
    losses = []
    for j, pos in enumerate((start_positions, end_positions)):
        pos = np.clip(np.asarray(pos).reshape(-1).astype(np.int64), 0, T)
        loss, dz = cross_entropy(np.ascontiguousarray(logits[..., j]), pos, ignore_index=T)
        losses.append(loss)
        d[..., j] = dz / 2
    return logits.dtype.type((losses[0] + losses[1]) / 2), d


def lm_loss(logits, labels, *, shift, prompt_length=0):
    """adapters' LM head loss: cross-entropy over the vocabulary, logits[:, :-1] against labels[:, 1:] when
    ``shift``; with prompt tuning P ignored labels go in front (after the shift). Spec: LOSS-LM.
    -> (loss, dL/dlogits of the logits' shape)"""
    labels = labels.astype(np.int64)
    z = logits[:, :-1] if shift else logits
    if shift:
        labels = labels[:, 1:]
    if prompt_length:
        labels = np.concatenate([np.full((labels.shape[0], prompt_length), IGNORE_INDEX), labels], axis=1)
    if labels.shape != z.shape[:2]:
        raise ValueError(f"labels has shape {labels.shape} after the shift; the LM logits give {z.shape[:2]}.")
    loss, dz = cross_entropy(z.reshape(-1, z.shape[-1]), labels.reshape(-1))
    d = np.zeros_like(logits)
    if shift:
        d[:, :-1] = dz.reshape(z.shape)
    else:
        d[...] = dz.reshape(z.shape)
    return loss, d


def _add(grads, key, g):
    if key in grads:
        grads[key] += g
    else:
        grads[key] = np.array(g, copy=True)
