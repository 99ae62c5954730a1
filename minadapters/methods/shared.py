"""Model-level shared parameters of an adapter (VeRA's frozen A/B, Compacter's shared PHM rule / W).

State-dict keys: ``shared_parameters.<name>.<leaf>``. adapters 1.3.0 saves them only from models with heads
(AdapterModels); from a bare base model its filter misses them (spec IO-11 note), so loading such a
file keeps our fresh initialisation, with a warning.
"""
from __future__ import annotations

from .base import MethodObject


class SharedParameters(MethodObject):
    """name -> {leaf: array}. Methods fill it in their add_adapter / confirm_adapter."""

    def __init__(self, model):
        self.model = model
        self.params: dict[str, dict] = {}

    # add_adapter: the default no-op; entries are created by the methods that need them (VeRA, Compacter).

    def delete_adapter(self, name) -> None:
        self.params.pop(name, None)

    def get(self, name) -> dict:
        return self.params.setdefault(name, {})

    def param_refs(self, name):
        d = self.params.get(name)
        if d:
            for leaf in d:
                yield f"shared_parameters.{name}.{leaf}", d, leaf
