"""Greedy decoding for the decoder models (GPT-2, LLaMA) and the encoder-decoders (BART, T5 ...), with and without a
KV cache. Spec: DEC-5, DEC-6, ENCDEC-4, ENCDEC-5.

Follows transformers 4.57 ``generate(do_sample=False)``: position ids from the attention mask
(cumsum − 1, 1 at padding), logits of the last position through the LM head, argmax (first maximum),
rows that produced an EOS token continue with ``pad_token_id``, stop when every row is finished.
"""
from __future__ import annotations

import numpy as np

from .context import AdapterSetup
from .errors import ConfigError, ShapeError
from .models import decoder_common as dc
from .models.encdec_common import EncDecCache


def lm_head_weight(model):
    """(V, D) output embedding: the checkpoint's lm_head.weight, or the input embedding when tied. Spec: DEC-6."""
    key = model.arch.embed_key
    if not (model.arch.is_causal or model.arch.is_encoder_decoder):
        raise ConfigError(f"generate(): model_type={model.model_type!r} is not a decoder model (nor an "
                          "encoder-decoder); generation needs a decoder family (gpt2, gptj, llama, ...) or an "
                          "encoder-decoder (bart, ...).")
    if model.arch.lm_logits is not None:
        return None                  # the family's own LM head (lm_logits)
    if getattr(model.config, "tie_word_embeddings", False):
        return model.params[key]
    if model.lm_head_weight is None:
        raise ConfigError("generate(): the checkpoint has no 'lm_head.weight' and tie_word_embeddings is false; "
                          "load a checkpoint saved from the ...ForCausalLM / ...LMHeadModel class.")
    return model.lm_head_weight


def _token_set(value, name):
    if value is None:
        return set()
    vals = value if isinstance(value, (list, tuple)) else [value]
    for v in vals:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"generate(): {name} must be an int or a list of ints; got {value!r}.")
    return {int(v) for v in vals}


def _check(model, input_ids, attention_mask, max_new_tokens):
    if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"generate(): max_new_tokens must be an int >= 0; got {max_new_tokens!r}.")
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or ids.shape[1] == 0:
        raise ShapeError(f"generate(): input_ids has shape {ids.shape} and dtype {ids.dtype}; expected a non-empty "
                         "integer array of shape (batch, tokens).")
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != ids.shape:
        raise ShapeError(f"generate(): attention_mask has shape {mask.shape}; expected {ids.shape}.")
    setup = model.active_adapters
    if setup is not None and setup.parallel_channels > 1:
        raise ConfigError("generate(): a Parallel composition multiplies the batch; generate with one channel.")
    return ids.astype(np.int64), mask.astype(np.int64)


def _reft_active(model) -> bool:
    ctx = AdapterSetup.get_context()
    setup = ctx.adapter_setup if ctx is not None else model.active_adapters
    if setup is None:
        return False
    names = setup.flatten()
    return any(names & set(layer.modules) for layer in model.layers_of("reft"))


def lm_logits(model, hidden, W):
    """hidden Wᵀ (+ the checkpoint's logits bias, BART's final_logits_bias); a family's ``tied_lm_scale`` rescales
    the state first when the projection is the tied embedding (T5). Spec: DEC-6, ENCDEC-5."""
    if model.arch.lm_logits is not None:
        return model.arch.lm_logits(model.params, model.config, model.ops, hidden)
    scale = model.arch.tied_lm_scale
    if scale is not None and getattr(model.config, "tie_word_embeddings", False):
        hidden = hidden * np.asarray(scale(model.config), hidden.dtype)
    logits = model.ops.linear(hidden, W)
    return logits if model.lm_head_bias is None else logits + model.lm_head_bias    # GPT-J's lm_head bias, BART's
                                                                                    # final_logits_bias


def generate(model, input_ids, max_new_tokens=20, attention_mask=None, use_cache=True, eos_token_id="config",
             pad_token_id="config", logits_fn=None, decoder_start_token_id="config", forced_bos_token_id="config",
             forced_eos_token_id="config"):
    """Greedy decoding; returns (B, T + n) token ids, n <= max_new_tokens. Spec: DEC-6.

    use_cache=True runs only the new token through the layers, with cached keys/values (DEC-5);
    use_cache=False recomputes the whole sequence each step. Both give the same tokens.
    ``logits_fn(forward output) -> (B, T, V)`` replaces the checkpoint's LM projection (AdapterModel classes
    with an active causal LM head, HEAD-10)."""
    ids, mask = _check(model, input_ids, attention_mask, max_new_tokens)
    if use_cache and _reft_active(model):
        raise ConfigError("generate(use_cache=True): a ReFT adapter is active, and its intervention positions depend "
                          "on the whole sequence, which a cached step does not see; pass use_cache=False.")
    W = lm_head_weight(model) if logits_fn is None else None
    eos = _token_set(model.config.eos_token_id if eos_token_id == "config" else eos_token_id, "eos_token_id")
    pad = model.config.pad_token_id if pad_token_id == "config" else pad_token_id
    if pad is None and eos:
        pad = min(eos)               # transformers: pad_token_id defaults to the (first) eos token
    if model.arch.is_encoder_decoder:
        cfg = lambda v, name: _default(model, name) if v == "config" else v  # noqa: E731
        return _generate_seq2seq(model, ids, mask, int(max_new_tokens), use_cache, eos, pad, W, logits_fn,
                                 cfg(decoder_start_token_id, "decoder_start_token_id"),
                                 cfg(forced_bos_token_id, "forced_bos_token_id"),
                                 cfg(forced_eos_token_id, "forced_eos_token_id"))
    unfinished = np.ones(ids.shape[0], bool)
    cache = dc.KVCache(model.num_layers) if use_cache else None
    new = ids
    for _ in range(int(max_new_tokens)):
        pos = dc.generation_position_ids(mask)
        if cache is not None:
            pos = pos[:, mask.shape[1] - new.shape[1]:]
            out = model.forward(new, attention_mask=mask, position_ids=pos, past_key_values=cache)
        else:
            out = model.forward(ids, attention_mask=mask, position_ids=pos)
        if logits_fn is None:
            logits = lm_logits(model, out.last_hidden_state[:, -1], W)            # (B, V)
        else:                                                                     # an AdapterModel's LM head
            logits = logits_fn(out)[:, -1]
        nxt = np.argmax(logits, axis=-1).astype(np.int64)
        if eos:
            if pad is None:
                raise ConfigError("generate(): eos_token_id is set but pad_token_id is None.")
            nxt = np.where(unfinished, nxt, pad)
            unfinished &= ~np.isin(nxt, list(eos))
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), np.int64)], axis=1)
        new = nxt[:, None]
        if not unfinished.any():
            break
    return ids


def _default(model, name):
    """A generation default as transformers reads it: generation_config.json first, then config.json."""
    if name in model.generation_config:
        return model.generation_config[name]
    return getattr(model.config, name, None)


def _finish_step(logits, unfinished, eos, pad):
    """Greedy choice; finished rows emit pad; rows that emit an EOS finish. Spec: DEC-6."""
    nxt = np.argmax(logits, axis=-1).astype(np.int64)
    if eos:
        if pad is None:
            raise ConfigError("generate(): eos_token_id is set but pad_token_id is None.")
        nxt = np.where(unfinished, nxt, pad)
        unfinished &= ~np.isin(nxt, list(eos))
    return nxt


def _force(logits, token):
    """transformers' ForcedBOS/ForcedEOS processors: every score -inf except ``token`` (0)."""
    out = np.full_like(logits, -np.inf)
    out[:, token] = 0
    return out


def _generate_seq2seq(model, ids, mask, n_new, use_cache, eos, pad, W, logits_fn, start, forced_bos, forced_eos):
    """Greedy seq2seq decoding. Spec: ENCDEC-5.

    The encoder runs once (first step); the decoder starts from ``decoder_start_token_id`` and, with the cache,
    runs only the newest token, its self-attention keys/values appended and its cross-attention keys/values computed
    at the first step (ENCDEC-4); without the cache it reruns the whole decoder sequence. transformers' processors
    from the config: forced_bos_token_id at the first new token, forced_eos_token_id at the last (max length).
    Returns the decoder sequences (B, 1 + n), n <= max_new_tokens, starting with the start token."""
    if start is None:
        raise ConfigError("generate(): decoder_start_token_id is not set in config.json; pass it explicitly.")
    B = ids.shape[0]
    dec = np.full((B, 1), int(start), np.int64)
    cache = EncDecCache(model.arch.num_layers(model.config, model.arch.stacks[-1])) if use_cache else None
    unfinished = np.ones(B, bool)
    encoder_out = None
    max_len = 1 + n_new
    for _ in range(n_new):
        step = dict(attention_mask=mask, decoder_input_ids=dec[:, -1:] if cache is not None else dec,
                    past_key_values=cache)
        if encoder_out is None:
            out = model.forward(ids, **step)
            encoder_out = out.encoder_last_hidden_state        # reused: the encoder runs once
        else:
            out = model.forward(encoder_outputs=encoder_out, **step)
        logits = lm_logits(model, out.last_hidden_state[:, -1], W) if logits_fn is None else logits_fn(out)[:, -1]
        if forced_bos is not None and dec.shape[1] == 1:
            logits = _force(logits, int(forced_bos))
        if forced_eos is not None and dec.shape[1] == max_len - 1:
            logits = _force(logits, int(forced_eos))
        nxt = _finish_step(logits, unfinished, eos, pad)
        dec = np.concatenate([dec, nxt[:, None]], axis=1)
        if not unfinished.any():
            break
    return dec
