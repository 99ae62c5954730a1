"""DeBERTa / DeBERTa-v2 disentangled attention as pure functions. Spec: DEB-2 .. DEB-5 (spec/families.md).

Shapes: B batch, N heads, T tokens (Tq queries, Tk keys), Dh head size, S attention span (relative embeddings
used: 2S rows), D hidden size. Index tables are int64; masks additive (0 attend, dtype-min masked).
"""
from __future__ import annotations

import numpy as np


def log_bucket_position(rel, *, bucket_size: int, max_position: int):
    """Log-bucketed relative positions of DeBERTa-v2. Spec: DEB-2.

        m = bucket_size // 2;  |δ| ≤ m: δ;  else sign(δ) · (⌈log(|δ| / m) / log((max_position − 1) / m) · (m − 1)⌉ + m)
    computed in float32 as transformers does (the ceiling decides the bucket).  rel: int (…) -> int64 (…)"""
    rel = np.asarray(rel, np.int64)
    mid = bucket_size // 2
    sign = np.sign(rel)
    inside = (rel < mid) & (rel > -mid)
    abs_pos = np.where(inside, mid - 1, np.abs(rel))
    ratio = (abs_pos.astype(np.float32) / np.float32(mid)).astype(np.float32)
    denom = np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(np.log(ratio) / denom * np.float32(mid - 1)).astype(np.float32) + np.float32(mid)
    bucket = np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * sign)
    return bucket.astype(np.int64)


def relative_positions(Tq: int, Tk: int, *, bucket_size: int = -1, max_position: int = -1):
    """δ[i, j] = i − j, log-bucketed when bucket_size > 0 and max_position > 0. Spec: DEB-2.  -> (Tq, Tk) int64"""
    rel = np.arange(Tq, dtype=np.int64)[:, None] - np.arange(Tk, dtype=np.int64)[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = log_bucket_position(rel, bucket_size=bucket_size, max_position=max_position)
    return rel


def c2p_scores(q, pos_k, rel, span: int, *, ops):
    """Content-to-position term: c2p[b, n, i, j] = q[b, n, i] · pos_k[n, c(δ[i, j])], c(δ) = clamp(δ + S, 0, 2S − 1).
    Spec: DEB-3.

        q: (B, N, Tq, Dh), pos_k: (1|B, N, 2S, Dh), rel: (Tq, Tk) -> (B, N, Tq, Tk)"""
    full = ops.matmul(q, np.swapaxes(pos_k, -1, -2))                    # (B, N, Tq, 2S)
    idx = np.clip(rel + span, 0, 2 * span - 1)                          # (Tq, Tk)
    return np.take_along_axis(full, np.broadcast_to(idx, full.shape[:2] + idx.shape), axis=-1)


def p2c_scores(k, pos_q, rel, span: int, *, ops):
    """Position-to-content term: p2c[b, n, i, j] = k[b, n, j] · pos_q[n, c(−δ[j, i])] (transformers' gather on the
    keys, then a transpose; needs Tq = Tk). Spec: DEB-3.

        k: (B, N, T, Dh), pos_q: (1|B, N, 2S, Dh), rel: (T, T) -> (B, N, T, T)"""
    full = ops.matmul(k, np.swapaxes(pos_q, -1, -2))                    # (B, N, Tk, 2S)
    idx = np.clip(-rel + span, 0, 2 * span - 1)                         # (Tk, Tk): row j, column i
    g = np.take_along_axis(full, np.broadcast_to(idx, full.shape[:2] + idx.shape), axis=-1)
    return np.swapaxes(g, -1, -2)


def pairwise_mask(mask2d, dtype):
    """(B, T) 1 = token / 0 = padding -> additive (B, 1, T, T): pair (i, j) attends iff both are tokens. Spec: DEB-4.

    A padding query row is masked everywhere (uniform softmax over all keys, as transformers' masked_fill)."""
    m = np.asarray(mask2d)
    pair = (m[:, None, :, None] * m[:, None, None, :]) != 0
    return np.where(pair, np.zeros((), dtype), np.finfo(dtype).min).astype(dtype)


def prompt_pairwise_mask(mask, P: int):
    """The pairwise mask with P prompt positions in front: prompt rows and prompt columns attend everywhere
    (adapters' prefix_attention_mask along dims 3 then 2, value 1). Spec: DEB-4.  (B, 1, T, T) -> (B, 1, P+T, P+T)

    So a prompt row attends padding keys too, and a padding row attends the prompt keys (not uniform)."""
    if P == 0:
        return mask
    return np.pad(mask, ((0, 0), (0, 0), (P, 0), (P, 0)), constant_values=0)


def masked_fill(scores, mask):
    """scores where the additive mask is 0, dtype-min where it masks (transformers' masked_fill, exact). Spec: DEB-4."""
    return np.where(mask < 0, np.finfo(scores.dtype).min, scores).astype(scores.dtype, copy=False)


def conv_layer(emb, residual, mask2d, w, b, ln, *, groups: int, act, ops):
    """DeBERTa-v2's ConvLayer after the first layer. Spec: DEB-5.

        c = conv1d(emb) (kernel K, same padding (K − 1) // 2, groups); c[pad] = 0
        out = LN(residual + act(c)) ⊙ mask
    emb, residual: (B, T, D); mask2d: (B, T); w: (D, D / groups, K); b: (D,) -> (B, T, D)"""
    B, T, D = emb.shape
    Dout, Dg, K = w.shape
    pad = (K - 1) // 2
    x = np.zeros((B, T + K - 1, D), emb.dtype)
    x[:, pad:pad + T] = emb                                             # zero 'same' padding (left pad, then right)
    cols = np.stack([x[:, t:t + T] for t in range(K)], axis=-1)         # (B, T, D, K)
    outs = []
    og = Dout // groups
    for g in range(groups):
        xg = cols[:, :, g * Dg:(g + 1) * Dg].reshape(B, T, Dg * K)      # (B, T, Dg·K), index c·K + t
        outs.append(ops.linear(xg, w[g * og:(g + 1) * og].reshape(og, Dg * K), b[g * og:(g + 1) * og]))
    c = ops.concat(outs, -1) if groups > 1 else outs[0]                  # (B, T, D)
    keep = (np.asarray(mask2d) != 0)[..., None]
    c = np.where(keep, c, np.zeros((), c.dtype))
    out = ln(residual + act(c))
    return out * keep.astype(out.dtype)
