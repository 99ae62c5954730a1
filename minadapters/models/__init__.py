"""Explicit forwards of the supported families and their registry. They never name an adapter method.

Each family module declares one ``Architecture`` record (models/base.py); ``REGISTRY`` maps every
``model_type`` of config.json to its record. Adding a family = one module + one line below.
"""
from __future__ import annotations

from ..errors import ConfigError
from . import albert, bart, bert, bert_generation, deberta, distilbert, electra, encoder_decoder, gpt2, gptj, llama, llama_like, t5, xmod
from .base import Architecture, LayerKey, LayerStack, ParamView

FAMILIES = (albert.ARCHITECTURE, bart.ARCHITECTURE, bert.ARCHITECTURE, bert_generation.ARCHITECTURE,
            distilbert.ARCHITECTURE, electra.ARCHITECTURE, *deberta.ARCHITECTURES,
            gpt2.ARCHITECTURE, gptj.ARCHITECTURE, llama.ARCHITECTURE, t5.ARCHITECTURE,
            encoder_decoder.ARCHITECTURE,
            *llama_like.ARCHITECTURES, xmod.ARCHITECTURE)


def _registry(families) -> dict:
    out = {}
    for arch in families:
        for mt in arch.model_types:
            if mt in out:
                raise ValueError(f"model_type {mt!r} is declared by both {out[mt].name!r} and {arch.name!r}.")
            out[mt] = arch
    return out


REGISTRY = _registry(FAMILIES)


def register(arch: Architecture) -> Architecture:
    """Add a user-declared family (e.g. ``llama_like.declare(LlamaLike(...))``) to ``REGISTRY``. Spec: FAM-LL-1.

    ValueError when one of its model types is already declared (families are never replaced silently)."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"register() takes an Architecture record; got {type(arch).__name__}.")
    taken = [mt for mt in arch.model_types if mt in REGISTRY]
    if taken:
        raise ValueError(f"register({arch.name!r}): model_type {taken[0]!r} is already declared by family "
                         f"{REGISTRY[taken[0]].name!r}.")
    for mt in arch.model_types:
        REGISTRY[mt] = arch
    return arch


def architecture(model_type: str) -> Architecture:
    """The record of ``model_type``; ConfigError (a ValueError) naming the supported types otherwise."""
    try:
        return REGISTRY[model_type]
    except (KeyError, TypeError):
        raise ConfigError(f"config.json: model_type={model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(REGISTRY))}.") from None


__all__ = ["Architecture", "LayerKey", "LayerStack", "ParamView", "REGISTRY", "FAMILIES", "architecture", "register"]
