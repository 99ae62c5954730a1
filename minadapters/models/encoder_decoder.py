"""transformers' ``EncoderDecoderModel`` with a BERT encoder and a BERT decoder (BERT2BERT): two stacks of BERT's own
layers (``models/bert.py``), the decoder's with causal self-attention and a cross-attention sub-layer, and the
decoder's ``cls.predictions`` LM head. Spec: B2B-1 .. B2B-4, ENCDEC-1 .. ENCDEC-5.

Hook locations and state-dict paths are adapters 1.3.0's (EncoderDecoderModelAdaptersMixin wraps each submodel with
BERT's mixins): the decoder's ``crossattention.output`` is a BertSelfOutput, so its bottleneck has location_key
``mh_adapter`` (``cross_adapter`` is never read); the cross-attention prefix is ``cross_prefix``; the encoder's
self-attention prefix is ``self_prefix`` (``encoder_prefix`` is never read); each submodel has its own prefix pool
(``encoder.prefix_tuning``, ``decoder.bert.prefix_tuning``); layer indices restart at 0 in the decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..validation import check_model_config
from . import bert
from . import encdec_common as ed
from .base import ALL_METHODS, Architecture, LayerStack, ParamView, layer_views
from .llama_like import blocks_for

MODEL_TYPES = ("encoder-decoder",)
ENCODER, DECODER = "encoder", "decoder"
ENC_BASE, DEC_BASE, LM = "encoder", "decoder.bert", "decoder.cls.predictions"


@dataclass(frozen=True)
class EncoderDecoderConfig:
    """The composite config: BERT configs of both submodels, and the generation ids of the top level."""
    model_type: str
    encoder: bert.EncoderConfig
    decoder: bert.EncoderConfig
    hidden_size: int
    num_hidden_layers: int          # the encoder's (adapters numbers each submodel's layers from 0)
    decoder_layers: int
    num_attention_heads: int
    vocab_size: int                 # the encoder's; decoder ids are checked against the decoder's table
    decoder_vocab_size: int
    pad_token_id: int | None
    eos_token_id: int | None
    decoder_start_token_id: int | None
    tie_word_embeddings: bool       # the decoder's: cls.predictions.decoder reads decoder word embeddings

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderDecoderConfig":
        """config.json of an EncoderDecoderModel: ``encoder`` / ``decoder`` sub-configs (BERT only). Spec: B2B-1."""
        subs = {}
        for side in (ENCODER, DECODER):
            sub = d.get(side)
            if not isinstance(sub, dict):
                raise ConfigError(f"config.json: model_type='encoder-decoder' needs an {side!r} object (the "
                                  f"{side}'s config); got {type(sub).__name__}.")
            check_model_config(sub, f"config.json {side}")
            if sub.get("model_type") != "bert":
                raise ConfigError(f"config.json: {side}.model_type={sub.get('model_type')!r} is not supported in an "
                                  "encoder-decoder; supported: 'bert' (BERT2BERT).")
            subs[side] = bert.EncoderConfig.from_dict(sub)
        dec = d[DECODER]
        if not (dec.get("is_decoder") and dec.get("add_cross_attention")):
            raise ConfigError("config.json: decoder.is_decoder and decoder.add_cross_attention must both be true "
                              f"(got {dec.get('is_decoder')!r}, {dec.get('add_cross_attention')!r}).")
        e, c = subs[ENCODER], subs[DECODER]
        if (e.hidden_size, e.num_attention_heads) != (c.hidden_size, c.num_attention_heads):
            raise ConfigError(f"config.json: encoder hidden_size/num_attention_heads = {e.hidden_size}/"
                              f"{e.num_attention_heads} and decoder's = {c.hidden_size}/{c.num_attention_heads} "
                              "differ; only equal sizes are supported (no enc_to_dec_proj).")
        if d.get("tie_encoder_decoder"):
            raise ConfigError("config.json: tie_encoder_decoder=true is not supported (encoder and decoder weights "
                              "must both be in the checkpoint).")
        return cls("encoder-decoder", e, c, e.hidden_size, e.num_hidden_layers, c.num_hidden_layers,
                   e.num_attention_heads, e.vocab_size, c.vocab_size, d.get("pad_token_id"), d.get("eos_token_id"),
                   d.get("decoder_start_token_id"), bool(dec.get("tie_word_embeddings", True)))


def normalize_keys(weights: dict, model_type: str) -> dict:
    """Keep transformers' keys (``encoder.*``, ``decoder.bert.*``, ``decoder.cls.predictions.*``); legacy
    gamma/beta renamed; the decoder's tied LM matrix dropped where it equals its word embeddings. Spec: B2B-1."""
    out = {}
    for k, v in weights.items():
        if not k.startswith((ENC_BASE + ".", DEC_BASE + ".", LM + ".")) or k.startswith(DEC_BASE + ".pooler."):
            continue
        out[k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")] = v
    return out


def expected_shapes(cfg: EncoderDecoderConfig) -> dict:
    s = {f"{ENC_BASE}.{k}": v for k, v in bert.expected_shapes(cfg.encoder).items()}
    D, dec = cfg.hidden_size, bert.expected_shapes(cfg.decoder)
    for i in range(cfg.decoder_layers):
        p = f"encoder.layer.{i}.crossattention."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            dec[p + name + ".weight"], dec[p + name + ".bias"] = (D, D), (D,)
        dec[p + "output.LayerNorm.weight"], dec[p + "output.LayerNorm.bias"] = (D,), (D,)
    s.update({f"{DEC_BASE}.{k}": v for k, v in dec.items()})
    s.update({f"{LM}.transform.dense.weight": (D, D), f"{LM}.transform.dense.bias": (D,),
              f"{LM}.transform.LayerNorm.weight": (D,), f"{LM}.transform.LayerNorm.bias": (D,),
              f"{LM}.bias": (cfg.decoder_vocab_size,)})
    if not cfg.tie_word_embeddings:
        s[f"{LM}.decoder.weight"] = (cfg.decoder_vocab_size, D)
    return s


def lm_logits(p, cfg: EncoderDecoderConfig, ops, h):
    """BertLMHeadModel's head: LN(act(h W_tᵀ + b_t)) Eᵀ + b, E = the decoder's word embeddings when tied. Spec: B2B-3.

    (…, D) -> (…, V_dec)"""
    c = cfg.decoder
    t = ops.activation(c.hidden_act)(ops.linear(h, p[f"{LM}.transform.dense.weight"], p[f"{LM}.transform.dense.bias"]))
    t = ops.layer_norm(t, p[f"{LM}.transform.LayerNorm.weight"], p[f"{LM}.transform.LayerNorm.bias"], c.layer_norm_eps)
    W = p[f"{DEC_BASE}.embeddings.word_embeddings.weight"] if cfg.tie_word_embeddings else p[f"{LM}.decoder.weight"]
    return ops.linear(t, W, p[f"{LM}.bias"])


def encode(p, cfg, hooks, ops, dtype, input_ids, attention_mask, token_type_ids, inputs_embeds, states, probs):
    """The BERT encoder (embeddings, invertible adapter, layers; its pooler is not used). Spec: B2B-2.  -> (B, S, D)"""
    c = cfg.encoder
    x = bert.embeddings(ParamView(p, ENC_BASE), c, input_ids, token_type_ids, ops,
                        inputs_embeds=inputs_embeds).astype(dtype, copy=False)
    x, attention_mask = hooks.embeddings(ENCODER, x, attention_mask)
    mask = ed.padding_mask(attention_mask, dtype)
    if states is not None:
        states.append(x)
    for i, lp in enumerate(layer_views(p, ENC_STACK, c.num_hidden_layers)):
        x = bert.encoder_layer(x, mask, lp, hooks.layer(ENCODER, i), c, ops, probs)
        if states is not None:
            states.append(x)
    return x


def forward(p, cfg: EncoderDecoderConfig, hooks, ops, dtype, *, input_ids=None, attention_mask=None,
            token_type_ids=None, inputs_embeds=None, decoder_input_ids=None, decoder_attention_mask=None,
            encoder_outputs=None, past_key_values=None, output_hidden_states=False, output_attentions=False):
    """Encoder (unless ``encoder_outputs``), then the BERT decoder over it and its LM head. Spec: B2B-2, ENCDEC-1.

    -> {last_hidden_state (decoder), logits, encoder_last_hidden_state, hidden states and attentions}"""
    enc_states = [] if output_hidden_states and encoder_outputs is None else None
    enc_probs = [] if output_attentions and encoder_outputs is None else None
    if encoder_outputs is None:
        if attention_mask is None:
            shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
            attention_mask = np.ones(shape, np.int64)
        memory = encode(p, cfg, hooks, ops, dtype, input_ids, attention_mask, token_type_ids, inputs_embeds,
                        enc_states, enc_probs)
    else:
        memory = encoder_outputs
        if attention_mask is None:
            attention_mask = np.ones(memory.shape[:2], np.int64)
    if decoder_input_ids is None:
        raise ValueError("forward(): an encoder-decoder (BERT2BERT) needs decoder_input_ids (transformers' "
                         "EncoderDecoderModel shifts only labels, which inference does not take).")
    c = cfg.decoder
    B, T = decoder_input_ids.shape
    past = past_key_values.length if past_key_values is not None else 0
    ed.check_cache(past_key_values, B)
    if past + T > c.max_position_embeddings:
        raise ShapeError(f"decoder: {past + T} positions exceed max_position_embeddings={c.max_position_embeddings}.")
    if decoder_attention_mask is None:
        decoder_attention_mask = np.ones((B, past + T), np.int64)
    pos = np.broadcast_to(np.arange(past, past + T), (B, T))
    y = bert.embeddings(ParamView(p, DEC_BASE), c, decoder_input_ids, None, ops, positions=pos).astype(dtype,
                                                                                                        copy=False)
    y, _ = hooks.embeddings(DECODER, y, decoder_attention_mask)
    mask = ed.causal_padding_mask(decoder_attention_mask, T, dtype)           # (B, 1, T, past + T)
    cross_mask = ed.padding_mask(attention_mask, dtype)                        # (B, 1, 1, S)
    states = [y] if output_hidden_states else None
    probs, cross_probs = ([], []) if output_attentions else (None, None)
    cache = past_key_values
    for i, lp in enumerate(layer_views(p, DEC_STACK, c.num_hidden_layers)):
        self_kv = None if cache is None else (lambda compute, i=i: cache.update(i, *compute()))
        cross_kv = None if cache is None else (lambda compute, i=i: ed.cross_kv(cache, i, compute))
        y = bert.encoder_layer(y, mask, lp, hooks.layer(DECODER, i), c, ops, probs, memory=memory,
                               cross_mask=cross_mask, self_kv=self_kv, cross_kv=cross_kv, cross_probs=cross_probs)
        if states is not None:
            states.append(y)
    tup = lambda v: tuple(v) if v is not None else None  # noqa: E731
    return {"last_hidden_state": y, "logits": lm_logits(p, cfg, ops, y), "encoder_last_hidden_state": memory,
            "decoder_hidden_states": tup(states), "decoder_attentions": tup(probs),
            "cross_attentions": tup(cross_probs), "encoder_hidden_states": tup(enc_states),
            "encoder_attentions": tup(enc_probs)}


ENC_STACK = LayerStack(ENCODER, layers=f"{ENC_BASE}.{bert.STACK.layers}", num_layers="num_hidden_layers",
                       embeddings=f"{ENC_BASE}.embeddings", attn_q=bert.STACK.attn_q, attn_k=bert.STACK.attn_k,
                       attn_v=bert.STACK.attn_v, attn_o=bert.STACK.attn_o, intermediate=bert.STACK.intermediate,
                       output=bert.STACK.output, mh_adapter=bert.STACK.mh_adapter,
                       output_adapter=bert.STACK.output_adapter, self_prefix=bert.STACK.self_prefix,
                       prefix_pool=f"{ENC_BASE}.prefix_tuning")
DEC_STACK = LayerStack(DECODER, layers=f"{DEC_BASE}.{bert.STACK.layers}", num_layers="decoder_layers",
                       embeddings=f"{DEC_BASE}.embeddings", attn_q=bert.STACK.attn_q, attn_k=bert.STACK.attn_k,
                       attn_v=bert.STACK.attn_v, attn_o=bert.STACK.attn_o, intermediate=bert.STACK.intermediate,
                       output=bert.STACK.output, mh_adapter=bert.STACK.mh_adapter,
                       output_adapter=bert.STACK.output_adapter, self_prefix=bert.STACK.self_prefix,
                       cross_q="crossattention.self.query", cross_k="crossattention.self.key",
                       cross_v="crossattention.self.value", cross_adapter="crossattention.output",
                       cross_adapter_key="mh_adapter", cross_prefix="crossattention.self.prefix_tuning",
                       prefix_pool=f"{DEC_BASE}.prefix_tuning", reft_mask="decoder_attention_mask")

ARCHITECTURE = Architecture(
    name="encoder-decoder", model_types=MODEL_TYPES, config_class=EncoderDecoderConfig, stacks=(ENC_STACK, DEC_STACK),
    forward=forward, normalize_keys=normalize_keys, expected_shapes=expected_shapes,
    model_class={"encoder-decoder": "EncoderDecoderModelWithAdapters"},
    base_model_prefix={"encoder-decoder": "encoder_decoder"},
    inputs=frozenset({"input_ids", "attention_mask", "token_type_ids", "inputs_embeds", "decoder_input_ids",
                      "decoder_attention_mask", "encoder_outputs", "past_key_values"}),
    methods=ALL_METHODS - {"prompt_tuning"},   # adapters: EncoderDecoderModelAdaptersMixin.support_prompt_tuning = False
    blocks=blocks_for(MODEL_TYPES),            # adapters' SUPPORTED_MODELS restricts one block, without this type
    embed_key=f"{ENC_BASE}.embeddings.word_embeddings.weight", invertible_base="encoder", is_encoder_decoder=True,
    call_order=("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"),
    pooler=(f"{ENC_BASE}.pooler.dense.weight", f"{ENC_BASE}.pooler.dense.bias"), lm_logits=lm_logits,
    saved_aliases=(("invertible_adapters.", None), (f"{DEC_BASE}.invertible_adapters.", None),
                   ("encoder.shared_parameters.", "shared_parameters."), (f"{DEC_BASE}.shared_parameters.", None)))
