"""Pieces shared by the decoder-only models (GPT-2, LLaMA): causal+padding masks, position ids, RoPE, GQA, KV cache.

Spec: DEC-3 (RoPE), DEC-4 (causal + padding mask), DEC-5 (KV cache). Pure functions except ``KVCache``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, ShapeError


# ---- masks and positions -------------------------------------------------------------------------
def causal_padding_mask(mask2d, Tq: int, dtype, *, disallowed=None):
    """Additive mask (B, 1, Tq, Tk) for Tq new queries after Tk - Tq cached keys. Spec: DEC-4.

        allowed[b, q, k] = (k <= Tk - Tq + q) and mask2d[b, k] == 1
        mask = 0 where allowed, finfo(dtype).min elsewhere; ``disallowed`` (GPT-2: -inf) replaces the value at
        causally forbidden keys (GPT-2 applies its causal buffer as min and then adds the min-valued mask).
    mask2d: (B, Tk) of 1 = attend / 0 = padding."""
    dtype = np.dtype(dtype)
    B, Tk = mask2d.shape
    mn = np.finfo(dtype).min
    causal = np.arange(Tk)[None, :] <= (Tk - Tq + np.arange(Tq))[:, None]           # (Tq, Tk)
    pad = mask2d.astype(bool)[:, None, None, :]                                     # (B, 1, 1, Tk)
    out = np.where(causal[None, None] & pad, dtype.type(0), mn).astype(dtype)       # (B, 1, Tq, Tk)
    if disallowed is not None:
        out = np.where(causal[None, None], out, dtype.type(disallowed)).astype(dtype)
    return out


def default_position_ids(B: int, T: int, past: int):
    """transformers' default when no position_ids are passed: past .. past+T-1 for every row (padding ignored).
    Spec: DEC-4."""
    return np.broadcast_to(np.arange(past, past + T, dtype=np.int64), (B, T))


def generation_position_ids(mask2d):
    """transformers' generate(): cumsum(mask) - 1, with 1 at padded positions. Spec: DEC-6.  (B, Tk) -> (B, Tk)"""
    pos = np.cumsum(mask2d.astype(np.int64), axis=1) - 1
    return np.where(mask2d == 0, 1, pos).astype(np.int64)


# ---- heads -----------------------------------------------------------------------------------------
def split_heads(x, n: int, dh: int):
    """(B, T, n·dh) -> (B, n, T, dh)"""
    B, T, _ = x.shape
    return x.reshape(B, T, n, dh).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, n, T, dh) -> (B, T, n·dh)"""
    B, N, T, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, N * Dh)


def repeat_kv(x, n_rep: int):
    """GQA: query head h reads key/value head h // n_rep. Spec: DEC-2.  (B, Nkv, T, Dh) -> (B, Nkv·n_rep, T, Dh)"""
    return x if n_rep == 1 else np.repeat(x, n_rep, axis=1)


# ---- RoPE ------------------------------------------------------------------------------------------
ROPE_TYPES = ("default", "linear", "llama3")


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None):
    """Inverse frequencies θ^(−2j/Dh), j < Dh/2, with transformers 4.57's 'linear' and 'llama3' scaling. Spec: DEC-3.

    float32, computed like transformers (float32 powers)."""
    exps = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv = (np.float32(1.0) / np.power(np.float32(theta), exps)).astype(np.float32)
    kind = rope_type(scaling)
    if kind == "default":
        return inv
    factor = np.float32(scaling["factor"])
    if kind == "linear":
        return (inv / factor).astype(np.float32)
    low, high = np.float32(scaling["low_freq_factor"]), np.float32(scaling["high_freq_factor"])
    old = np.float32(scaling["original_max_position_embeddings"])
    low_wl, high_wl = old / low, old / high
    wavelen = np.float32(2 * math.pi) / inv
    inv_l = np.where(wavelen > low_wl, inv / factor, inv).astype(np.float32)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, inv_l).astype(np.float32)


def rope_type(scaling: dict | None) -> str:
    if scaling is None:
        return "default"
    return scaling.get("rope_type", scaling.get("type", "default"))


def check_rope_scaling(scaling, where="config.json") -> None:
    """Only the RoPE types whose frequencies do not depend on the sequence length are supported. Spec: DEC-3."""
    if scaling is None:
        return
    if not isinstance(scaling, dict):
        raise ConfigError(f"{where}: rope_scaling must be null or an object; got {scaling!r}.")
    kind = rope_type(scaling)
    if kind not in ROPE_TYPES:
        raise ConfigError(f"{where}: rope_scaling type {kind!r} is not supported; supported: "
                          f"{', '.join(ROPE_TYPES)} (dynamic/yarn/longrope are not implemented).")
    need = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                              "original_max_position_embeddings")}.get(kind, ())
    for k in need:
        if k not in scaling:
            raise ConfigError(f"{where}: rope_scaling of type {kind!r} needs the key {k!r}; got {scaling!r}.")
    if kind == "linear" and float(scaling["factor"]) < 1.0:
        raise ConfigError(f"{where}: rope_scaling factor={scaling['factor']!r} must be >= 1.")


def rope_cos_sin(position_ids, inv_freq, dtype):
    """cos, sin of (position · inv_freq) duplicated over both halves, float32 then cast. Spec: DEC-3.
    (B, T) -> (B, T, Dh) each"""
    freqs = position_ids.astype(np.float32)[..., None] * inv_freq[None, None, :]   # (B, T, Dh/2)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(dtype), np.sin(emb).astype(dtype)


def apply_rope(x, cos, sin):
    """x·cos + rotate_half(x)·sin with rotate_half([x1, x2]) = [−x2, x1]. Spec: DEC-3.
    x: (B, N, T, Dh); cos, sin: (B, T, Dh)"""
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos[:, None] + rot * sin[:, None]


# ---- KV cache --------------------------------------------------------------------------------------
class KVCache:
    """Per-layer keys/values of the tokens seen so far (after RoPE, before prefix tuning and GQA repeat).
    Spec: DEC-5.

    Appending never reallocates per token: each layer keeps (B, N, capacity, Dh) buffers, grown geometrically
    (doubled, at least to the tokens needed) when full, and ``keys[i]`` / ``values[i]`` are views of the first
    ``length`` tokens (their last axis contiguous, so attention reads them in place).  A generation of n tokens
    copies O(log n) times instead of n times."""

    def __init__(self, num_layers: int):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers
        self._kbuf = [None] * num_layers
        self._vbuf = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def capacity(self, i: int) -> int:
        """Tokens layer i can hold before its buffers grow."""
        return 0 if self._kbuf[i] is None else self._kbuf[i].shape[2]

    def update(self, i: int, k, v):
        """Append (B, N, T, Dh) keys/values of layer i; returns all keys/values of layer i (views of the buffers)."""
        old = 0 if self.keys[i] is None else self.keys[i].shape[2]
        if self.keys[i] is not None and (self.keys[i].shape[0] != k.shape[0] or self.keys[i].dtype != k.dtype
                                         or self.keys[i].shape[1::2] != k.shape[1::2]):
            if self.keys[i].shape[0] != k.shape[0]:
                raise ShapeError(f"KV cache of layer {i} holds batch {self.keys[i].shape[0]} but the new tokens have "
                                 f"batch {k.shape[0]}; a cache serves one batch of one size.")
            raise ShapeError(f"KV cache of layer {i} holds keys {self.keys[i].shape} {self.keys[i].dtype}; the new "
                             f"keys {k.shape} {k.dtype} differ in heads, head size or dtype.")
        need = old + k.shape[2]
        if self._kbuf[i] is None or need > self._kbuf[i].shape[2]:
            cap = max(need, 2 * self.capacity(i), 16)
            kb = np.empty(k.shape[:2] + (cap,) + k.shape[3:], k.dtype)
            vb = np.empty(v.shape[:2] + (cap,) + v.shape[3:], v.dtype)
            if old:
                kb[:, :, :old], vb[:, :, :old] = self.keys[i], self.values[i]
            self._kbuf[i], self._vbuf[i] = kb, vb
        self._kbuf[i][:, :, old:need] = k
        self._vbuf[i][:, :, old:need] = v
        self.keys[i], self.values[i] = self._kbuf[i][:, :, :need], self._vbuf[i][:, :, :need]
        return self.keys[i], self.values[i]
