"""Prompt tuning: trained embeddings put in front of the embedded input (model level, after the embeddings).

Spec: PROMPT-1 .. PROMPT-4. adapters 1.3.0: src/adapters/methods/prompt_tuning.py, utils.prefix_attention_mask.
State-dict key: ``prompt_tuning.prompt_tunings.<name>.prompt_embedding.weight`` (P, D).
"""
from __future__ import annotations

import os

import numpy as np
from tokenizers import Tokenizer

from ..configuration import PromptTuningConfig
from ..errors import ConfigError
from ..functional.prefix import combine_prompt, prompt_ids
from . import init as winit
from .base import AdapterModule, MethodObject, match_config

KEY = "prompt_tuning.prompt_tunings"


def _tokenizer_file(model) -> str:
    """tokenizer.json to initialise from: ``model.tokenizer_name_or_path`` if set, else config.json's
    ``tokenizer_name_or_path`` (adapters reads that model-config attribute), else the model directory."""
    src = model.tokenizer_name_or_path or model.raw_config.get("tokenizer_name_or_path") or model.model_dir
    if not src:
        raise ConfigError("prompt_init='from_string' needs a tokenizer: set model.tokenizer_name_or_path to a "
                          "tokenizer.json file or a directory holding one (the model was not loaded from a directory).")
    src = os.fspath(src)
    path = os.path.join(src, "tokenizer.json") if os.path.isdir(src) else src
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt_init='from_string': no tokenizer file {path!r}; put the model's "
                                "tokenizer.json there or set model.tokenizer_name_or_path (Hub names are not supported).")
    return path


def tokenize(model, text: str) -> list:
    """Token ids of ``text`` with the tokenizer's special tokens (as ``tokenizer(text)["input_ids"]``)."""
    return list(Tokenizer.from_file(_tokenizer_file(model)).encode(text).ids)


def init_prompt(cfg, model, rng) -> np.ndarray:
    """(P, D) initial prompt: U(−s, s) (s = random_uniform_scale, 0.5) or word embeddings of the repeated,
    truncated token ids of prompt_init_text. Spec: PROMPT-1."""
    P, D = int(cfg["prompt_length"]), model.hidden_size
    if cfg["prompt_init"] == "random_uniform":
        s = float(getattr(cfg, "random_uniform_scale", 0.5))
        return rng.uniform(-s, s, (P, D)).astype(np.float32)
    if cfg["prompt_init"] == "from_string":
        text = cfg["prompt_init_text"]
        if text is None:
            raise ConfigError("prompt_init='from_string' needs prompt_init_text (got None).")
        ids = prompt_ids(tokenize(model, text), P)
        emb = model.params[model.arch.embed_key]
        bad = [i for i in ids if not 0 <= i < emb.shape[0]]
        if bad:
            raise ConfigError(f"prompt_init_text tokenizes to ids {bad[:5]} outside this model's vocabulary "
                              f"[0, {emb.shape[0]}); is the tokenizer.json the model's own?")
        return np.ascontiguousarray(emb[ids], dtype=np.float32)
    raise ConfigError(f"prompt_init={cfg['prompt_init']!r}; expected 'random_uniform' or 'from_string'.")


class PromptTuning(MethodObject):
    """Prompt embeddings of every prompt-tuning adapter; runs as an embedding method. Spec: PROMPT-2."""

    def __init__(self, model):
        self.model = model
        self.modules: dict[str, AdapterModule] = {}

    def add_adapter(self, name, config) -> bool:
        cfg = match_config(config, PromptTuningConfig)
        if cfg is None:
            return False
        if self.model.arch.embed_key not in self.model.params:
            raise ConfigError(f"Prompt tuning is not supported by model_type={self.model.model_type!r}.")
        rng = winit.rng_for(cfg, self.model)
        self.modules[name] = AdapterModule(name, cfg, {"prompt_embedding.weight": init_prompt(cfg, self.model, rng)})
        return True

    def delete_adapter(self, name) -> None:
        self.modules.pop(name, None)

    def param_refs(self, name):
        mod = self.modules.get(name)
        if mod is not None:
            for leaf in mod.params:
                yield f"{KEY}.{name}.{leaf}", mod.params, leaf

    def forward(self, x, mask2d, fwd):
        """Only the setup's first adapter counts; x (B, T, D) -> (B, P + T, D), mask (B, P + T). Spec: PROMPT-2."""
        setup = fwd.setup
        if setup is None:
            return x, mask2d
        first = setup.first()
        mod = self.modules.get(first)
        if mod is None:
            return x, mask2d
        out, mask2d = combine_prompt(mod.params["prompt_embedding.weight"], x, mask2d, combine=mod.config["combine"],
                                     ops=self.model.ops)
        fwd.prompt_tokens_length = mod.params["prompt_embedding.weight"].shape[0]
        return out, mask2d
