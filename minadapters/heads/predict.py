"""Readable predictions of the active head(s) for ``minadapters run``: one line per input and per head. Spec: HEAD-12.
"""
from __future__ import annotations

import numpy as np

from ..composition import BatchSplit
from ..outputs import MultiHeadOutput

TOP_K = 3
MAX_TAGS = 12


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _label(labels, i):
    return str(labels.get(int(i), f"LABEL_{int(i)}")) if labels else f"LABEL_{int(i)}"


def _token(tok, i):
    return tok.decode([int(i)], skip_special_tokens=False).strip() or repr(int(i))


def _mask_id(tok):
    try:
        return tok.mask_token_id
    except AttributeError:          # a tokenizer without a mask token: the last real position
        return None


def head_groups(model, out, rows):
    """(head name, its output, the input rows it covers) for a forward's output."""
    used = model._active_heads
    if isinstance(out, MultiHeadOutput):
        if isinstance(used, BatchSplit):
            starts = np.cumsum([0] + list(used.batch_sizes))
            return [(n, o, list(range(a, b))) for n, o, a, b in zip(used.children, out, starts[:-1], starts[1:])]
        return [(n, o, list(range(rows))) for n, o in zip(used, out)]
    return [(used[0], out, list(range(rows)))]


def describe(model, head_name, o, j, b, tok, ids, mask) -> str:
    """One input's prediction by one head: labels with probabilities, tags, a span or top tokens. Spec: HEAD-12.

    ``j`` indexes the head's output rows, ``b`` the input row (ids / mask)."""
    head = model.heads[head_name]
    kind = head.head_type
    labels = model.get_labels_dict(head_name)
    if kind == "classification":
        p = softmax(o.logits[j])
        top = np.argsort(-p, kind="stable")[:TOP_K]
        return ", ".join(f"{_label(labels, k)} {p[k]:.3f}" for k in top)
    if kind == "multilabel_classification":
        p = sigmoid(o.logits[j])
        on = [f"{_label(labels, k)} {p[k]:.3f}" for k in np.flatnonzero(p >= 0.5)]
        return ", ".join(on) if on else f"no label >= 0.5 (max {_label(labels, p.argmax())} {p.max():.3f})"
    real = np.flatnonzero(mask[b] == 1)
    if kind == "tagging":
        tags = o.logits[j].argmax(-1)
        shown = [f"{_token(tok, ids[b, t])}/{_label(labels, tags[t])}" for t in real[:MAX_TAGS]]
        return " ".join(shown) + (" ..." if len(real) > MAX_TAGS else "")
    if kind == "question_answering":
        s, e = np.asarray(o.start_logits[j], np.float64), np.asarray(o.end_logits[j], np.float64)
        best = max(((s[a] + e[c], a, c) for a in real for c in real if a <= c), default=None)
        if best is None:
            return "no span"
        _, a, c = best
        return f"span [{a}, {c}]: {tok.decode([int(i) for i in ids[b, a:c + 1]], skip_special_tokens=False)!r}"
    if kind in ("causal_lm", "masked_lm"):
        mask_id = _mask_id(tok) if kind == "masked_lm" else None
        pos = [t for t in real if mask_id is not None and ids[b, t] == mask_id] or [int(real[-1])]
        parts = []
        for t in pos[:4]:
            p = softmax(o.logits[j, t])
            top = np.argsort(-p, kind="stable")[:TOP_K]
            parts.append(f"@{t}: " + ", ".join(f"{_token(tok, k)!r} {p[k]:.3f}" for k in top))
        return "; ".join(parts)
    raise ValueError(f"minadapters run: head {head_name!r} of type {kind!r} has no readable prediction here.")


def prediction_lines(model, out, tok, texts, ids, mask) -> list:
    """Lines ``<head> [b] 'text': prediction`` for every head and input. Spec: HEAD-12."""
    lines = []
    for name, o, rows in head_groups(model, out, len(texts)):
        lines.append(f"head {name!r} ({model.heads[name].head_type}):")
        for j, b in enumerate(rows):
            lines.append(f"  [{b}] {texts[b][:40]!r}: {describe(model, name, o, j, b, tok, ids, mask)}")
    return lines
