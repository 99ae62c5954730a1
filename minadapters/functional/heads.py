"""Prediction-head equations (inference: dropout is identity). Spec: spec/heads.md.

A head body is a list of steps, each one of
    ("linear", W (out, in), b (out,) or None)
    ("act", activation name)
    ("ln", weight, bias, eps)
applied in order, as adapters' heads apply their nn.Sequential children.
"""
from __future__ import annotations

import numpy as np


def run_body(x, steps, ops):
    """The head's layers in order: linear, activation, LayerNorm. Spec: HEAD-1."""
    for step in steps:
        kind = step[0]
        if kind == "linear":
            x = ops.linear(x, step[1], step[2])
        elif kind == "act":
            x = ops.activation(step[1])(x)
        elif kind == "ln":
            x = ops.layer_norm(x, step[1], step[2], step[3])
        else:
            raise ValueError(f"unknown head step {kind!r}; allowed: linear, act, ln")
    return x


def cls_input(hidden, pooled=None, use_pooler=False, last_index=None):
    """The sequence representation a sentence-level head reads. Spec: HEAD-2.

    Decoders (``last_index`` given): h[b, last_index[b]] (negative indices count from the end, as torch indexes);
    encoders: the pooler output when ``use_pooler``, else h[:, 0]."""
    if last_index is not None:
        return hidden[np.arange(hidden.shape[0]), last_index]
    if use_pooler:
        if pooled is None:
            raise ValueError("use_pooler=True but the model has no pooler output (checkpoint without pooler.dense).")
        return pooled
    return hidden[:, 0]


def eos_token_index(input_ids, eos_token_id, hidden_len):
    """BART-family sentence heads (adapters' get_cls_from_eos_tokens): per row the position of the last
    ``eos_token_id`` in the encoder's input_ids, read from the decoder's states. Spec: ENCDEC-6.

    Every row must hold the same number of eos tokens (ValueError otherwise, as adapters); (B, S) -> (B,)"""
    if input_ids is None:
        raise ValueError("a classification head of an encoder-decoder reads the last <eos> token of input_ids; "
                         "pass input_ids.")
    ids = np.asarray(input_ids)
    eos = ids == eos_token_id
    counts = eos.sum(axis=1)
    if len(np.unique(counts)) > 1 or not counts.size or counts[0] == 0:
        raise ValueError("All examples must have the same number of <eos> tokens." if counts.size and counts[0]
                         else f"input_ids hold no <eos> token (eos_token_id={eos_token_id}); the head reads the last.")
    idx = ids.shape[1] - 1 - np.argmax(eos[:, ::-1], axis=1)
    if idx.max() >= hidden_len:
        raise ValueError(f"the last <eos> token of input_ids is at position {int(idx.max())}, beyond the "
                         f"{hidden_len} decoder positions; pass decoder inputs at least as long as input_ids.")
    return idx


def last_token_index(input_ids, pad_token_id, rows):
    """adapters' decoder CLS position: (#tokens != pad) - 1 per row, -1 without pad id or ids. Spec: HEAD-2."""
    if pad_token_id is None or input_ids is None:
        return np.full(rows, -1, np.int64)
    return (np.asarray(input_ids) != pad_token_id).sum(-1).astype(np.int64) - 1


def choice_logits(scores, num_choices):
    """Multiple choice: one score per (example, choice) row, reshaped to (B, C). Spec: HEAD-4."""
    if scores.size % num_choices:
        raise ValueError(f"multiple choice head with num_choices={num_choices} got {scores.size} rows; the input "
                         f"must have shape (batch, {num_choices}, tokens).")
    return scores.reshape(-1, num_choices)


def span_logits(logits):
    """Question answering: split the last axis into start and end logits. Spec: HEAD-5."""
    if logits.shape[-1] != 2:
        raise ValueError(f"question answering head has {logits.shape[-1]} outputs per token; start/end needs 2.")
    return np.ascontiguousarray(logits[..., 0]), np.ascontiguousarray(logits[..., 1])


def lm_logits(hidden, body, out_weight, out_bias, ops, inverse=None):
    """LM heads: body, then the inverse invertible coupling (MAD-X) if given, then the vocabulary projection,
    whose weight is the input embedding matrix when tied. Spec: HEAD-6."""
    x = run_body(hidden, body, ops)
    if inverse is not None:
        x = inverse(x)
    return ops.linear(x, out_weight, out_bias)


def merge_subwords(hidden, word_starts, pad_token_id):
    """Word vectors for the parsing head: for row b, the starts s = word_starts[b] without pad_token_id entries;
    word j = mean(h[b, s_j : s_{j+1}]) for j < len(s) − 1, stopping at the first s_{j+1} <= 0; zero rows pad to
    T words. Spec: HEAD-11.  (B, T, D), (B, T') -> (B, T, D)"""
    B, T, Dm = hidden.shape
    out = np.zeros((B, T, Dm), hidden.dtype)
    for b in range(B):
        starts = np.asarray(word_starts[b])
        starts = starts[starts != pad_token_id]
        for j in range(min(len(starts) - 1, T)):
            if starts[j + 1] <= 0:
                break
            out[b, j] = hidden[b, starts[j]:starts[j + 1]].mean(0)
    return out


def biaffine(x, weight, y, bias_x, bias_y):
    """s[b, o, i, j] = [x_bi, 1] W_o [y_bj, 1]ᵀ (the 1s where bias_x / bias_y). Spec: HEAD-11."""
    if bias_x:
        x = np.concatenate([x, np.ones(x.shape[:-1] + (1,), x.dtype)], -1)
    if bias_y:
        y = np.concatenate([y, np.ones(y.shape[:-1] + (1,), y.dtype)], -1)
    return np.einsum("bxi,oij,byj->boxy", x, weight, y, optimize=True).astype(x.dtype, copy=False)


def parse_scores(hidden, word_starts, pad_token_id, arc_weight, rel_weight):
    """Biaffine dependency parsing: dependents = merged words, heads = [h[:, 0]; words];
    arc_preds (B, T, T+1), rel_preds (B, T, T+1, labels). Spec: HEAD-11."""
    words = merge_subwords(hidden, word_starts, pad_token_id)
    heads = np.concatenate([hidden[:, :1], words], axis=1)
    arcs = biaffine(words, arc_weight, heads, True, False)[:, 0]
    rels = biaffine(words, rel_weight, heads, True, True).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(arcs), np.ascontiguousarray(rels)
