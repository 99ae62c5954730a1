"""Prefix tuning and prompt tuning as pure functions. Spec: PREFIX-1 .. PREFIX-5, PROMPT-1 .. PROMPT-3.

Shapes: P prefix/prompt length, L participating layers, H key/value heads, Dh head dim, D hidden size,
B batch, T tokens, Tk keys. Masks are additive (0 = attend, dtype-min = masked), as ops.attention takes them.
"""
from __future__ import annotations

import math

import numpy as np



def prefix_mlp(wte, w0, b0, w2, b2, *, act, ops):
    """Reparametrisation network over the P prefix embeddings. Spec: PREFIX-1.

        KV = act(E W0ᵀ + b0) W2ᵀ + b2          E = wte (P, D) -> (P, L·2·H·Dh)"""
    z = act(ops.linear(wte, w0, b0))                          # (P, bottleneck)
    return ops.linear(z, w2, b2)                              # (P, L·2·H·Dh)


def split_prefix_kv(flat, *, P, L, H, Dh):
    """Row-major layout of the network output: index ((l·2 + kv)·H + h)·Dh + d on the last axis. Spec: PREFIX-1.

    flat: (P·L·2·H·Dh,) or (P, L·2·H·Dh) -> (L, 2, H, P, Dh); [l, 0] keys, [l, 1] values of layer rank l."""
    kv = np.asarray(flat).reshape(P, L, 2, H, Dh)
    return np.ascontiguousarray(kv.transpose(1, 2, 3, 0, 4))  # (L, 2, H, P, Dh)


def prepend_prefix(K, V, mask, PK, PV, *, ops):
    """K' = [P_K ; K], V' = [P_V ; V] on the key axis; the mask gets a block of zeros (attended). Spec: PREFIX-2.

    K, V: (B, H, Tk, Dh); PK, PV: (B, H, P, Dh); mask: (B, 1, Tq|1, Tk) additive or None -> Tk' = P + Tk."""
    K2 = ops.concat([PK.astype(K.dtype, copy=False), K], 2)
    V2 = ops.concat([PV.astype(V.dtype, copy=False), V], 2)
    if mask is None:
        return K2, V2, None
    B, P = mask.shape[0], PK.shape[2]
    block = np.zeros((B,) + mask.shape[1:-1] + (P,), dtype=mask.dtype)
    return K2, V2, ops.concat([block, mask], -1)


def left_pad_keys(K, V, mask, n, *, ops):
    """Prepend ``n`` masked-out keys (K = V = 0, mask = dtype-min) so rows of different prefix lengths can be
    concatenated; each row's attention equals its unpadded attention. Spec: PREFIX-4.

    K, V: (B, H, Tk, Dh); mask: (B, 1, Tq|1, Tk) -> Tk + n on the key axis."""
    if n == 0:
        return K, V, mask
    zeros = np.zeros(K.shape[:2] + (n, K.shape[3]), K.dtype)
    K, V = ops.concat([zeros, K], 2), ops.concat([zeros.astype(V.dtype, copy=False), V], 2)
    if mask is None:
        mask = np.zeros((K.shape[0], 1, 1, K.shape[2] - n), dtype=K.dtype)
    fill = np.finfo(mask.dtype).min if np.issubdtype(mask.dtype, np.floating) else np.finfo(np.float32).min
    block = np.full(mask.shape[:-1] + (n,), fill, dtype=mask.dtype)
    return K, V, ops.concat([block, mask], -1)


def prompt_ids(token_ids, P: int):
    """Token ids repeated ceil(P / n) times (only if n < P), truncated to P. Spec: PROMPT-1."""
    ids = list(token_ids)
    if not ids:
        raise ValueError("prompt_init_text tokenizes to zero tokens; it cannot initialise a prompt.")
    if len(ids) < P:
        ids = ids * math.ceil(P / len(ids))
    return ids[:P]


def combine_prompt(prompt, x, mask2d, *, combine: str, ops):
    """Put the prompt into the embedded input and extend the 2-D mask by P ones at the front. Spec: PROMPT-2.

        "prefix":            [prompt ; x]
        "prefix_after_bos":  [x_0 ; prompt ; x_1..]
    The mask always gets its P ones prepended (adapters prepends them for both combine modes).
    prompt: (P, D), x: (B, T, D), mask2d: (B, T) -> (B, P + T, D), (B, P + T)"""
    B = x.shape[0]
    P = prompt.shape[0]
    tiled = np.broadcast_to(prompt.astype(x.dtype, copy=False), (B,) + prompt.shape)   # (B, P, D)
    if combine == "prefix":
        out = ops.concat([tiled, x], 1)
    elif combine == "prefix_after_bos":
        out = ops.concat([x[:, :1], tiled, x[:, 1:]], 1)
    else:
        raise ValueError(f"combine={combine!r}; expected 'prefix' or 'prefix_after_bos'.")
    if mask2d is None:
        return out, None
    mask2d = np.asarray(mask2d)
    ones = np.ones((mask2d.shape[0], P), dtype=mask2d.dtype)
    return out, ops.concat([ones, mask2d], 1)
