"""Tiny random base models written as Hugging Face checkpoint directories, using NumPy only.

The suite needs a base model that every driver can load: ``config.json`` plus ``model.safetensors``
(written here byte by byte, so the core needs neither torch nor the safetensors package). Sizes are
deliberately awkward (hidden 20 with 4 heads of 5, FFN 37, vocab 53, two layers) so layout bugs show.
Weights are float32 draws from a seeded generator, including non-zero biases and LayerNorm affine parts.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

SIZES = dict(hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=53,
             max_position_embeddings=40)
ARCHS = ("bert", "roberta")
PAD_ID = {"bert": 0, "roberta": 1}


def write_safetensors(path: str, tensors: dict) -> None:
    """Write float32/int64 arrays in the safetensors layout: u64 header length, JSON header, raw data."""
    names = sorted(tensors)
    header, offset, blobs = {}, 0, []
    for n in names:
        a = np.ascontiguousarray(tensors[n])
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float64): "F64"}[a.dtype]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[n] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def hf_config(arch: str) -> dict:
    """transformers-compatible config.json for a tiny encoder of ``arch``."""
    s = dict(SIZES)
    cls = {"bert": "BertModel", "roberta": "RobertaModel"}[arch]
    cfg = {"architectures": [cls], "model_type": arch, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
           "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
           "position_embedding_type": "absolute", "pad_token_id": PAD_ID[arch], "torch_dtype": "float32",
           "type_vocab_size": 2 if arch == "bert" else 1, "_attn_implementation": "eager", **s}
    if arch == "roberta":
        cfg.update(bos_token_id=0, eos_token_id=2, max_position_embeddings=s["max_position_embeddings"] + 2)
    return cfg


def random_weights(cfg: dict, seed: int) -> dict:
    """Every base weight of a BERT-style encoder (HF names, (out, in)), random with non-zero biases."""
    rng = np.random.default_rng(seed)
    D, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    nrm = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    ln = lambda: (1 + nrm(D, s=0.1), nrm(D, s=0.1))  # noqa: E731
    w = {"embeddings.word_embeddings.weight": nrm(cfg["vocab_size"], D, s=1.0),
         "embeddings.position_embeddings.weight": nrm(cfg["max_position_embeddings"], D, s=0.5),
         "embeddings.token_type_embeddings.weight": nrm(cfg["type_vocab_size"], D, s=0.5)}
    w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"] = ln()
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                             "attention.self.value": (D, D), "attention.output.dense": (D, D),
                             "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            w[p + name + ".weight"] = nrm(o, n, s=1.0 / np.sqrt(n))
            w[p + name + ".bias"] = nrm(o, s=0.1)
        for lname in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + lname + ".weight"], w[p + lname + ".bias"] = ln()
    w["pooler.dense.weight"], w["pooler.dense.bias"] = nrm(D, D, s=1.0 / np.sqrt(D)), nrm(D, s=0.1)
    return w


def write_model(directory: str, arch: str, seed: int = 0) -> str:
    """Write a tiny ``arch`` checkpoint into ``directory`` (created) and return it."""
    if arch not in ARCHS:
        raise ValueError(f"write_model: arch={arch!r}; known tiny architectures: {', '.join(ARCHS)}")
    os.makedirs(directory, exist_ok=True)
    cfg = hf_config(arch)
    write_safetensors(os.path.join(directory, "model.safetensors"), random_weights(cfg, seed))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    return directory


def padded_batch(arch: str, rng: np.random.Generator, B: int, T: int, lengths=None):
    """input_ids (B, T) int64 and attention_mask (B, T) with right padding to ``lengths`` (default: T)."""
    V, pad = SIZES["vocab_size"], PAD_ID[arch]
    ids = rng.integers(3, V, size=(B, T)).astype(np.int64)
    lengths = [T] * B if lengths is None else list(lengths)
    mask = (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return np.where(mask == 1, ids, pad).astype(np.int64), mask
