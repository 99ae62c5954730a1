"""A toy implementation and its driver: BERT + plain LoRA in NumPy, written against the Driver protocol only.

It shows what a *partial* implementation declares and how it says "valid, but not here":
capabilities list one architecture, one method and one block; ``supports(config)`` declines gated LoRA;
``set_active`` raises ``Unsupported`` for a Stack of more than one adapter. The suite turns both into declined
draws (skips with these reasons), never errors. tests/test_conformance.py runs the suite on it.

    pytest conformance --driver=conformance.examples.numpy_lora_driver:make_driver

LoRA (spec/lora.md LORA-1): y = x Wᵀ + b + (x Aᵀ) Bᵀ · alpha / r on the query / key / value projections
(``attn_matrices``), ``intermediate.dense`` (intermediate_lora) and ``output.dense`` (output_lora).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from safetensors.numpy import load_file

from conformance.driver import Unsupported

LORA_DEFAULTS = {"r": 8, "alpha": 8, "selfattn_lora": True, "intermediate_lora": False, "output_lora": False,
                 "attn_matrices": ["q", "v"], "composition_mode": "add", "use_gating": False, "leave_out": []}
ATTN = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value"}
_erf = np.vectorize(math.erf)


class ToyModel:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        if self.cfg.get("model_type") != "bert":
            raise Unsupported(f"model_type {self.cfg.get('model_type')!r}: the toy runs BERT only")
        self.w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
        self.loras = {}      # name -> (config, {module: {"lora_A": A, "lora_B": B}})
        self.active = None
        self.merged = None   # name merged into self.w, original weights kept in self.saved
        self.saved = {}


def _modules(cfg, n_layers):
    out = []
    for i in range(n_layers):
        if i in cfg["leave_out"]:
            continue
        p = f"encoder.layer.{i}."
        if cfg["selfattn_lora"]:
            out += [p + ATTN[m] for m in sorted(cfg["attn_matrices"])]
        if cfg["intermediate_lora"]:
            out.append(p + "intermediate.dense")
        if cfg["output_lora"]:
            out.append(p + "output.dense")
    return out


class NumpyLoraDriver:
    name = "toy-numpy-lora"
    version = "0.1 (NumPy float64)"
    precision = "float32"          # float64 inside, but declare the float32 tolerances: no need to be tighter
    capabilities = frozenset({"arch:bert", "method:lora", "block:Stack", "op:merge", "op:reset", "io:roundtrip"})

    def supports(self, config):
        if not isinstance(config, dict) or config.get("architecture") != "lora":
            return "the toy implements plain LoRA configs given as dicts only"
        if config.get("use_gating"):
            return "gated LoRA (use_gating=True) is not implemented in the toy"
        if config.get("composition_mode", "add") != "add":
            return "composition_mode='scale' (IA3) is not implemented in the toy"
        return True

    def load_model(self, model_dir):
        return ToyModel(model_dir)

    def add_adapter(self, model, name, config):
        why = self.supports(config)
        if why is not True:
            raise Unsupported(why)
        cfg = {**LORA_DEFAULTS, **config}
        if not isinstance(cfg["r"], int) or cfg["r"] <= 0:
            raise ValueError(f"LoRA r={cfg['r']!r}; expected a positive int")
        if name in model.loras:
            raise ValueError(f"adapter {name!r} already exists")
        rng = np.random.default_rng(0)
        mods = {}
        for m in _modules(cfg, model.cfg["num_hidden_layers"]):
            out_f, in_f = model.w[m + ".weight"].shape
            mods[m] = {"lora_A": rng.standard_normal((cfg["r"], in_f)) * 0.02, "lora_B": np.zeros((out_f, cfg["r"]))}
        model.loras[name] = (cfg, mods)

    def _tensors(self, model, name):
        if name not in model.loras:
            raise KeyError(f"no adapter named {name!r}")
        return model.loras[name][1]

    def get_adapter_weights(self, model, name):
        return {f"{m}.loras.{name}.{k}": v.astype(np.float32) for m, d in self._tensors(model, name).items()
                for k, v in d.items()}

    def set_adapter_weights(self, model, name, tensors):
        mods = self._tensors(model, name)
        for key, v in tensors.items():
            m, _, leaf = key.partition(f".loras.{name}.")
            if m not in mods or leaf not in mods[m]:
                raise KeyError(f"adapter {name!r}: unknown weight key {key!r}")
            if mods[m][leaf].shape != np.shape(v):
                raise ValueError(f"{key} has shape {np.shape(v)}, but should be {mods[m][leaf].shape}")
            mods[m][leaf] = np.asarray(v, np.float64)

    def set_active(self, model, setup):
        self.reset(model)           # a new active setup undoes a merge first (as adapters' set_active_adapters)
        while setup is not None and setup["type"] == "Stack" and len(setup["children"]) == 1:
            setup = setup["children"][0]
        if setup is None:
            model.active = None
        elif setup["type"] == "single":
            if setup["children"][0] not in model.loras:
                raise ValueError(f"set_active: no adapter named {setup['children'][0]!r} (added: {sorted(model.loras)})")
            model.active = setup["children"][0]
        elif setup["type"] == "Stack":
            raise Unsupported("a Stack of more than one adapter is not implemented in the toy")
        else:
            raise Unsupported(f"block {setup['type']} is not implemented in the toy")

    def _linear(self, model, x, m):
        y = x @ model.w[m + ".weight"].T + model.w[m + ".bias"]
        name = model.active
        if name is not None and name != model.merged and m in model.loras[name][1]:
            cfg, mods = model.loras[name]
            y = y + (x @ mods[m]["lora_A"].T) @ mods[m]["lora_B"].T * (cfg["alpha"] / cfg["r"])
        return y

    def forward(self, model, input_ids, attention_mask, **kw):
        if kw:
            raise Unsupported(f"forward options {sorted(kw)} are not implemented in the toy")
        c, w = model.cfg, model.w
        B, T = input_ids.shape
        N = c["num_attention_heads"]
        Dh = c["hidden_size"] // N
        x = w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][:T] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, w, "embeddings.LayerNorm", c["layer_norm_eps"])
        bias = (1.0 - np.asarray(attention_mask, np.float64))[:, None, None, :] * -1e30
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(model, x, p + ATTN[m]).reshape(B, T, N, Dh).transpose(0, 2, 1, 3) for m in "qkv")
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dh) + bias
            a = np.exp(s - s.max(-1, keepdims=True))
            ctx = (a / a.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(B, T, N * Dh)
            x = _ln(self._linear(model, ctx, p + "attention.output.dense") + x, w, p + "attention.output.LayerNorm",
                    c["layer_norm_eps"])
            h = self._linear(model, x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _ln(self._linear(model, h, p + "output.dense") + x, w, p + "output.LayerNorm", c["layer_norm_eps"])
        return x.astype(np.float32)

    def merge(self, model, name):
        if model.merged is not None:
            raise Unsupported("merging a second adapter is not implemented in the toy")
        cfg, mods = model.loras[name]
        for m, d in mods.items():
            model.saved[m] = model.w[m + ".weight"]
            model.w[m + ".weight"] = model.w[m + ".weight"] + d["lora_B"] @ d["lora_A"] * (cfg["alpha"] / cfg["r"])
        model.merged = name
        model.active = name

    def reset(self, model):
        for m, W in model.saved.items():
            model.w[m + ".weight"] = W
        model.saved, model.merged = {}, None

    def save_adapter(self, model, name, directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "toy_config.json"), "w") as f:
            json.dump({"name": name, "config": model.loras[name][0]}, f)
        np.savez(os.path.join(directory, "toy_weights.npz"), **self.get_adapter_weights(model, name))

    def load_adapter(self, model, directory, load_as=None):
        with open(os.path.join(directory, "toy_config.json")) as f:
            saved = json.load(f)
        name = load_as or saved["name"]
        self.add_adapter(model, name, saved["config"])
        with np.load(os.path.join(directory, "toy_weights.npz")) as z:
            self.set_adapter_weights(model, name, {k.replace(f".loras.{saved['name']}.", f".loras.{name}."): z[k]
                                                   for k in z.files})
        return name

    def add_fusion(self, model, names, config=None):
        raise Unsupported("AdapterFusion is not implemented in the toy")

    def eject(self, model, name):
        raise Unsupported("prefix tuning (eject) is not implemented in the toy")


def _ln(x, w, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]


def make_driver():
    return NumpyLoraDriver()
