"""Pieces shared by the encoder-decoder families (BART, mBART, PLBart, T5, ...): masks, the decoder-input shift,
and the two caches of seq2seq decoding. Spec: ENCDEC-1 .. ENCDEC-4. Pure functions except ``EncDecCache``.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from .decoder_common import KVCache, causal_padding_mask

__all__ = ["EncDecCache", "causal_padding_mask", "cross_kv", "padding_mask", "shift_tokens_right",
           "shift_tokens_right_wrap"]


def padding_mask(mask2d, dtype):
    """(B, Tk) of 1 = attend / 0 = padding -> additive (B, 1, 1, Tk): 0 or finfo(dtype).min. Spec: ENCDEC-1.

    The encoder's self-attention mask and every decoder layer's cross-attention mask (keys = encoder tokens)."""
    m = mask2d.astype(dtype)
    return ((1.0 - m) * np.finfo(dtype).min).astype(dtype)[:, None, None, :]


def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: [start, y_0 .. y_{T-2}], -100 -> pad (BART, T5). Spec: ENCDEC-2."""
    if decoder_start_token_id is None:
        raise ConfigError("config.json: decoder_start_token_id is not set; pass decoder_input_ids explicitly.")
    if pad_token_id is None:
        raise ConfigError("config.json: pad_token_id is not set; pass decoder_input_ids explicitly.")
    out = np.empty_like(input_ids)
    out[:, 1:] = input_ids[:, :-1]
    out[:, 0] = decoder_start_token_id
    return np.where(out == -100, pad_token_id, out)


def shift_tokens_right_wrap(input_ids, pad_token_id):
    """mBART / PLBart: shift right and put each row's last non-pad token (the language id) first. Spec: ENCDEC-2."""
    if pad_token_id is None:
        raise ConfigError("config.json: pad_token_id is not set; pass decoder_input_ids explicitly.")
    ids = np.where(input_ids == -100, pad_token_id, input_ids)
    last = (ids != pad_token_id).sum(axis=1) - 1                     # -1 (all pad) wraps to the last column
    start = ids[np.arange(ids.shape[0]), last]
    out = np.empty_like(ids)
    out[:, 1:] = ids[:, :-1]
    out[:, 0] = start
    return out


class EncDecCache:
    """Seq2seq decoding state: the decoder's self-attention keys/values (grow by one token per step) and each
    decoder layer's cross-attention keys/values (computed from the encoder output at the first step, then
    reused). Both are stored before prefix tuning, which is prepended at every step. Spec: ENCDEC-4."""

    def __init__(self, num_decoder_layers: int):
        self.self_attention = KVCache(num_decoder_layers)
        self.cross = [None] * num_decoder_layers

    @property
    def length(self) -> int:
        """Decoder tokens seen so far (the decoder_attention_mask covers these plus the new ones)."""
        return self.self_attention.length

    def update(self, i: int, k, v):
        """Append the new tokens' self-attention keys/values of decoder layer i; returns all of them."""
        return self.self_attention.update(i, k, v)


def cross_kv(cache, i: int, compute):
    """Cross-attention (K, V) of decoder layer i: ``compute()`` once, then the cached pair. Spec: ENCDEC-4."""
    if cache is None:
        return compute()
    if cache.cross[i] is None:
        cache.cross[i] = compute()
    k, v = cache.cross[i]
    return k, v


def check_cache(cache, rows: int):
    """The cache serves the batch it was filled with."""
    if cache is not None and cache.cross[0] is not None and cache.cross[0][0].shape[0] != rows:
        raise ShapeError(f"the encoder-decoder cache holds batch {cache.cross[0][0].shape[0]}; the decoder input has "
                         f"{rows} rows.")
