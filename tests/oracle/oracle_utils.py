"""Shared oracle helpers: tiny random HF models with adapters 1.3.0, perturbed adapter weights, comparisons.

Only imported by oracle tests (they skip with a reason when torch / adapters are missing).
"""
from __future__ import annotations

import os

import numpy as np

import pytest

# Importing this helper skips the importing test module (reason shown with -rs) when the oracle is missing.
torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

RTOL = 1e-4
SIZES = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, intermediate_size=72, vocab_size=101,
             max_position_embeddings=64)


def hf_model(model_type="bert", seed=0, **overrides):
    """A small random transformers base model (eager attention), every base weight and bias perturbed."""
    torch.manual_seed(seed)
    kw = dict(SIZES, **overrides)
    if model_type == "bert":
        cfg = transformers.BertConfig(**kw, type_vocab_size=2, attn_implementation="eager")
        model = transformers.BertModel(cfg)
    elif model_type in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if model_type == "roberta" else transformers.XLMRobertaConfig
        kw["max_position_embeddings"] = kw["max_position_embeddings"] + 2
        cfg = cls(**kw, type_vocab_size=1, pad_token_id=1, attn_implementation="eager")
        mcls = transformers.RobertaModel if model_type == "roberta" else transformers.XLMRobertaModel
        model = mcls(cfg)
    else:
        raise ValueError(model_type)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    adapters.init(model)
    return model


def perturb_adapter(model, name, seed=1, scale=0.1):
    """Add noise to every parameter of adapter `name` (many methods start as identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f".{name}." in n or n.startswith(f"{name}.") or f"_{name}." in n:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def save_model(model, directory):
    """Save the base weights in HF format (model.safetensors + config.json), without adapter keys."""
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    # save_pretrained sets every PrefixTuningLayer's `pool` alias to None; adding a prefix afterwards would fail
    from adapters.methods.prefix_tuning import PrefixTuningLayer
    for mod in model.modules():
        if isinstance(mod, PrefixTuningLayer) and hasattr(model, "prefix_tuning"):
            mod.set_pool(model.prefix_tuning)
    return directory


def batch(vocab=101, B=3, T=9, seed=0, pad_side="right", model_type="bert"):
    """input_ids and attention_mask with padding in some rows."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(B, T))
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        n = min(b * 2, T - 2)
        if pad_side == "right":
            mask[b, T - n:] = 0
        else:
            mask[b, :n] = 0
    pad = 1 if model_type != "bert" else 0
    ids = np.where(mask == 1, ids, pad)
    return ids.astype(np.int64), mask


def torch_forward(model, ids, mask, **kw):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
    return out


def assert_close(ours, theirs, rtol=RTOL, what=""):
    """|a - e| <= rtol * max|e| (relative to the tensor's scale), with a readable message."""
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, but should be {theirs.shape}"
    scale = max(np.abs(theirs).max(), 1e-6)
    err = np.abs(ours - theirs).max() / scale
    assert err <= rtol, f"{what}: max relative error {err:.3g} > {rtol} (scale {scale:.3g})"


class OracleEnv:
    """One upstream model + its saved base weights + our model loaded from them + a padded batch."""

    def __init__(self, model_type, tmp, **model_kw):
        import minadapters as ma
        self.model_type = model_type
        self.tmp = tmp
        self.torch_model = hf_model(model_type, **model_kw)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.ids, self.mask = batch(model_type=model_type)
        self.n = 0
