"""Tiny random encoder-decoder models (BART family; T5/MT5 extend ``_config``) for oracle tests: odd sizes, eager
attention, every weight and bias perturbed, adapters.init applied; padded batches for both stacks; an Env that adds
the same perturbed adapter to upstream and to us (through a saved file) and compares both stacks' outputs.

Only imported by oracle tests (they importorskip adapters first).
"""
from __future__ import annotations

import os

import numpy as np

import pytest

torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

import minadapters as ma  # noqa: E402
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

VOCAB = 101
# encoder 2 layers, decoder 3 (the decoder's adapters' layer indices start at 2), hidden 36, 4 heads, FFN 37 / 41
BART_SIZES = dict(d_model=36, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=37, decoder_ffn_dim=41, vocab_size=VOCAB, max_position_embeddings=40,
                  pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
# T5 / MT5: d_kv · heads = 35 ≠ d_model 36, FFN 37, 2 encoder / 3 decoder layers; 8 buckets with max distance 20, so
# T5_BATCH's 23 encoder tokens reach the logarithmic buckets
T5_SIZES = dict(vocab_size=VOCAB, d_model=36, d_kv=7, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=5,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
T5_BATCH = dict(S=23, pad=0)                     # encdec_batch arguments for T5 (pad id 0)
# BERT2BERT (transformers' EncoderDecoderModel): BERT encoder of 2 layers (FFN 37), BERT decoder of 3 layers (FFN
# 41) with cross-attention; hidden 36, 4 heads; gelu encoder, relu decoder
B2B_SIZES = dict(encoder=dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
                 decoder=dict(hidden_size=36, num_hidden_layers=3, num_attention_heads=4, intermediate_size=41,
                              hidden_act="relu", layer_norm_eps=1e-6),
                 vocab_size=VOCAB, max_position_embeddings=40, pad_token_id=1, decoder_start_token_id=2)


def _config(model_type, overrides):
    """(config, base model class, LM model class) of a tiny ``model_type``."""
    t = transformers
    if model_type in ("bart", "mbart", "plbart"):
        prefix = {"bart": "Bart", "mbart": "MBart", "plbart": "PLBart"}[model_type]
        cfg = getattr(t, prefix + "Config")(**dict(BART_SIZES, **overrides), attn_implementation="eager")
        return cfg, getattr(t, prefix + "Model"), getattr(t, prefix + "ForConditionalGeneration")
    if model_type in ("t5", "mt5"):
        prefix = {"t5": "T5", "mt5": "MT5"}[model_type]
        cfg = getattr(t, prefix + "Config")(**dict(T5_SIZES, **overrides), attn_implementation="eager")
        return cfg, getattr(t, prefix + "Model"), getattr(t, prefix + "ForConditionalGeneration")
    if model_type == "encoder-decoder":
        sizes = dict(B2B_SIZES, **overrides)
        common = dict(vocab_size=sizes["vocab_size"], max_position_embeddings=sizes["max_position_embeddings"],
                      attn_implementation="eager")
        enc = t.BertConfig(**common, **sizes["encoder"])
        dec = t.BertConfig(**common, **sizes["decoder"], is_decoder=True, add_cross_attention=True)
        cfg = t.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
        cfg.pad_token_id, cfg.decoder_start_token_id = sizes["pad_token_id"], sizes["decoder_start_token_id"]
        for c in (cfg, cfg.encoder, cfg.decoder):      # from_encoder_decoder_configs drops the submodels' choice
            c._attn_implementation = "eager"
        return cfg, t.EncoderDecoderModel, t.EncoderDecoderModel
    raise ValueError(f"no tiny config for {model_type!r}; add it to encdec_oracle_utils._config")


def hf_encdec(model_type="bart", seed=0, lm=False, scale=0.05, init=True, cls=None, **overrides):
    """A small random transformers encoder-decoder (``lm``: the ...ForConditionalGeneration class; ``cls``: any
    class taking the config, e.g. adapters' BartAdapterModel), every parameter perturbed, eval mode, adapters.init
    applied (unless ``init=False`` or an adapters class)."""
    torch.manual_seed(seed)
    cfg, base, lm_cls = _config(model_type, overrides)
    model = (cls or (lm_cls if lm else base))(cfg)
    init = init and cls is None
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
        for n, b in model.named_buffers():
            if n.endswith("final_logits_bias"):          # BART's LM bias is a buffer: make it matter too
                b.add_(torch.randn_like(b) * scale)
    model.eval()
    if init:
        adapters.init(model)
    return model


def encdec_batch(B=3, S=9, T=6, seed=0, pad_side="right", vocab=VOCAB, pad=1):
    """(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask): encoder rows padded on ``pad_side``
    (0, 2, 4 tokens), decoder rows right-padded (0, 1, 2 tokens; causal attention needs the first token)."""
    rng = np.random.default_rng(seed)
    ids, dec = rng.integers(3, vocab, size=(B, S)), rng.integers(3, vocab, size=(B, T))
    mask, dmask = np.ones((B, S), np.int64), np.ones((B, T), np.int64)
    for b in range(1, B):
        n = min(2 * b, S - 2)
        if pad_side == "right":
            mask[b, S - n:] = 0
        elif pad_side == "left":
            mask[b, :n] = 0
        dmask[b, T - min(b, T - 1):] = 0
    return (np.where(mask == 1, ids, pad).astype(np.int64), mask, np.where(dmask == 1, dec, pad).astype(np.int64),
            dmask)


def torch_encdec(model, ids, mask, dec=None, dmask=None, **kw):
    """Upstream forward (no grad) of an encoder-decoder; numpy arrays in."""
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    with torch.no_grad():
        return model(input_ids=t(ids), attention_mask=t(mask), decoder_input_ids=t(dec),
                     decoder_attention_mask=t(dmask), **kw)


def relink_pool(model):
    """save_pretrained drops every PrefixTuningLayer's pool alias; put it back (the pool of the nearest enclosing
    (sub)model: EncoderDecoderModel's encoder and decoder each have their own)."""
    from adapters.methods.prefix_tuning import PrefixTuningLayer, PrefixTuningPool
    pools = {n: getattr(m, "prefix_tuning") for n, m in model.named_modules()
             if isinstance(getattr(m, "prefix_tuning", None), PrefixTuningPool)}
    for name, mod in model.named_modules():
        if isinstance(mod, PrefixTuningLayer):
            owner = max((p for p in pools if p == "" or name.startswith(p + ".")), key=len, default=None)
            if owner is not None:
                mod.set_pool(pools[owner])


def compare_encdec(ours_out, theirs_out, what, rtol=1e-4):
    """Decoder and encoder last hidden states agree (and the logits, where upstream's output has them: BERT2BERT's
    EncoderDecoderModel returns logits and the decoder states only with output_hidden_states)."""
    dec = getattr(theirs_out, "last_hidden_state", None)
    if dec is None:
        dec = theirs_out.decoder_hidden_states[-1]
    assert_close(ours_out.last_hidden_state, dec.numpy(), rtol=rtol, what=f"{what} decoder")
    if getattr(theirs_out, "logits", None) is not None:
        assert_close(ours_out.logits, theirs_out.logits.numpy(), rtol=rtol, what=f"{what} logits")
    assert_close(ours_out.encoder_last_hidden_state, theirs_out.encoder_last_hidden_state.numpy(), rtol=rtol,
                 what=f"{what} encoder")


def ours_block(block):
    """adapters' composition block (or name) as minadapters' equal block."""
    if isinstance(block, str):
        return block
    children = [ours_block(c) for c in block.children]
    kind = type(block).__name__
    if kind == "BatchSplit":
        return ma.BatchSplit(*children, batch_sizes=block.batch_sizes)
    if kind == "Average":
        return ma.Average(*children, weights=block.weights)
    return getattr(ma, kind)(*children)


class EncDecEnv:
    """One upstream encoder-decoder + ours loaded from its saved weights; ``add`` adds a perturbed adapter upstream,
    saves it and loads the file into ours; ``compare`` runs both with a setup on padded batches."""

    def __init__(self, model_type, tmp, batch_kw=None, **overrides):
        self.model_type, self.tmp, self.n = model_type, tmp, 0
        self.batch_kw = dict(T5_BATCH if model_type in ("t5", "mt5") else {}, **(batch_kw or {}))
        self.torch_model = hf_encdec(model_type, **overrides)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        relink_pool(self.torch_model)
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))

    def add(self, config, name=None):
        self.n += 1
        name = name or f"a{self.n}"
        self.torch_model.add_adapter(name, config=config)
        perturb_adapter(self.torch_model, name, seed=self.n)
        self.torch_model.eval()
        d = os.path.join(self.tmp, name)
        self.torch_model.save_adapter(d, name)
        assert self.ours.load_adapter(d) == name
        return name

    def compare(self, theirs, ours=None, what="", sides=("left", "right"), B=3, rtol=1e-4, decoder_mask=True):
        """``decoder_mask=False``: no decoder_attention_mask (adapters' Parallel does not replicate it)."""
        self.torch_model.set_active_adapters(theirs)
        self.ours.active_adapters = ours_block(theirs) if ours is None else ours
        for side in sides:
            ids, mask, dec, dmask = encdec_batch(B=B, seed=self.n + len(side), pad_side=side, **self.batch_kw)
            dmask = dmask if decoder_mask else None
            got = self.ours(ids, mask, dec, dmask)
            kw = dict(output_hidden_states=True) if self.model_type == "encoder-decoder" else {}
            compare_encdec(got, torch_encdec(self.torch_model, ids, mask, dec, dmask, **kw),
                           f"{self.model_type} {what} {side}", rtol=rtol)


ADAPTER_MODEL_CLASSES = {"bart": "BartAdapterModel", "mbart": "MBartAdapterModel", "plbart": "PLBartAdapterModel",
                         "t5": "T5AdapterModel", "mt5": "MT5AdapterModel"}


def flex_pair(model_type, tmp, head_fn, adapter="seq_bn[mh_adapter=True, cross_adapter=True, reduction_factor=4]",
              **overrides):
    """adapters' <X>AdapterModel with adapter "a" and a head named "a" (added by ``head_fn``), perturbed; ours from
    the saved model and the adapter directory (with its head), via AutoAdapterModel."""
    cls_name = ADAPTER_MODEL_CLASSES[model_type]
    m = hf_encdec(model_type, scale=0.2, cls=getattr(adapters, cls_name), **overrides)
    save_model(m, os.path.join(tmp, "model"))
    relink_pool(m)
    m.add_adapter("a", config=adapter)
    head_fn(m)
    perturb_adapter(m, "a", scale=0.3)
    m.set_active_adapters("a")
    m.eval()
    m.save_adapter(os.path.join(tmp, "a"), "a")
    ours = ma.AutoAdapterModel.from_pretrained(os.path.join(tmp, "model"))
    assert type(ours).__name__ == cls_name
    ours.load_adapter(os.path.join(tmp, "a"), set_active=True)
    assert ours.active_head == "a"
    return m, ours
