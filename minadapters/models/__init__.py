"""Explicit forwards of the supported families and their registry. They never name an adapter method.

Each family module declares one ``Architecture`` record (models/base.py); ``REGISTRY`` maps every
``model_type`` of config.json to its record. Adding a family = one module + one line below.
"""
from __future__ import annotations

from ..errors import ConfigError
from . import bert, gpt2, llama
from .base import Architecture, LayerKey, LayerStack, ParamView

FAMILIES = (bert.ARCHITECTURE, gpt2.ARCHITECTURE, llama.ARCHITECTURE)


def _registry(families) -> dict:
    out = {}
    for arch in families:
        for mt in arch.model_types:
            if mt in out:
                raise ValueError(f"model_type {mt!r} is declared by both {out[mt].name!r} and {arch.name!r}.")
            out[mt] = arch
    return out


REGISTRY = _registry(FAMILIES)


def architecture(model_type: str) -> Architecture:
    """The record of ``model_type``; ConfigError (a ValueError) naming the supported types otherwise."""
    try:
        return REGISTRY[model_type]
    except (KeyError, TypeError):
        raise ConfigError(f"config.json: model_type={model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(REGISTRY))}.") from None


__all__ = ["Architecture", "LayerKey", "LayerStack", "ParamView", "REGISTRY", "FAMILIES", "architecture"]
