"""Prefix tuning and prompt tuning as pure functions. Spec: PREFIX-1 .. PREFIX-5, PROMPT-1 .. PROMPT-3.

Shapes: P prefix/prompt length, L participating layers, H key/value heads, Dh head dim, D hidden size,
B batch, T tokens, Tk keys. Masks are additive (0 = attend, dtype-min = masked), as ops.attention takes them.
"""
from __future__ import annotations

import math

import numpy as np

from .activations import activation_backward
from .backward import linear_backward


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


# ---- backward (training). Spec: GRAD-PREFIX (spec/training.md) ----------------------------------------------------
def prefix_mlp_forward(wte, w0, b0, w2, b2, *, act, ops):
    """PREFIX-1 with its cache (E, pre-activation, activation). Spec: GRAD-PREFIX.  -> (P, L·2·H·Dh), cache"""
    z0 = ops.linear(wte, w0, b0)                                      # (P, bottleneck)
    z = ops.activation(act)(z0)
    return ops.linear(z, w2, b2), (z0, z)


def prefix_mlp_backward(dkv, wte, w0, w2, cache, *, act):
    """Gradients of the reparametrisation network. Spec: GRAD-PREFIX.

        dz = dKV W2;  dW2 = dKVᵀ z;  db2 = Σ dKV;  dz₀ = act'(z₀) dz;  dW0 = dz₀ᵀ E;  db0 = Σ dz₀;  dE = dz₀ W0
    -> dict with the state-dict leaves wte.weight, control_trans.{0,2}.{weight,bias}"""
    z0, z = cache
    dz, dw2, db2 = linear_backward(dkv, z, w2)
    dz0 = activation_backward(act, z0, dz)
    dE, dw0, db0 = linear_backward(dz0, wte, w0)
    return {"wte.weight": dE, "control_trans.0.weight": dw0, "control_trans.0.bias": db0,
            "control_trans.2.weight": dw2, "control_trans.2.bias": db2}


def split_prefix_kv_backward(dkv):
    """Transpose of split_prefix_kv: (L, 2, H, P, Dh) -> (P, L·2·H·Dh). Spec: GRAD-PREFIX."""
    P = dkv.shape[3]
    return np.ascontiguousarray(dkv.transpose(3, 0, 1, 2, 4)).reshape(P, -1)


def prepend_prefix_backward(dK2, dV2, P, *, per_row=False):
    """Gradients of K' = [P_K ; K], V' = [P_V ; V] (PREFIX-2), the prefix broadcast over the batch. Spec: GRAD-PREFIX.

    dK2, dV2 (B, H, P + Tk, Dh) -> dK, dV (B, H, Tk, Dh), dP_K, dP_V (H, P, Dh) summed over the batch
    (``per_row``: (B, H, P, Dh), for gated prefixes whose rows differ)."""
    if per_row:
        return dK2[:, :, P:], dV2[:, :, P:], dK2[:, :, :P], dV2[:, :, :P]
    return dK2[:, :, P:], dV2[:, :, P:], dK2[:, :, :P].sum(0), dV2[:, :, :P].sum(0)


def combine_prompt_backward(dout, P: int, *, combine: str):
    """Gradients of combine_prompt (PROMPT-2): the prompt's rows summed over the batch, and the input's rows.
    Spec: GRAD-PROMPT.  dout (B, P + T, D) -> d_prompt (P, D), dx (B, T, D)"""
    if combine == "prefix":
        return dout[:, :P].sum(0), dout[:, P:]
    if combine == "prefix_after_bos":
        return dout[:, 1:1 + P].sum(0), np.concatenate([dout[:, :1], dout[:, 1 + P:]], axis=1)
    raise ValueError(f"combine={combine!r}; expected 'prefix' or 'prefix_after_bos'.")
