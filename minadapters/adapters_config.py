"""The model's registry of adapters, fusions and the active setup (adapters' ModelAdaptersConfig)."""
from __future__ import annotations

from .configuration import ConfigUnion
from .errors import AdapterNotFoundError, ConfigError
from .methods.base import match_config


class ModelAdaptersConfig:
    """name -> config object; fusion name -> (fusion config, adapter names); active setup; skip_layers."""

    def __init__(self):
        self.adapters: dict = {}
        self.fusions: dict = {}
        self.active_setup = None
        self.skip_layers = None

    def __contains__(self, name):
        return name in self.adapters

    def __iter__(self):
        return iter(self.adapters)

    def __len__(self):
        return len(self.adapters)

    def get(self, name):
        return self.adapters.get(name)

    def require(self, name):
        if name not in self.adapters:
            known = ", ".join(repr(n) for n in self.adapters) or "none"
            raise AdapterNotFoundError(f"No adapter named {name!r}; known adapters: {known}.")
        return self.adapters[name]

    def add(self, name, config) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"adapter name must be a non-empty string; got {name!r}.")
        if name in self.adapters:
            raise ConfigError(f"An adapter with the name {name!r} has already been added.")
        self.adapters[name] = config

    def match(self, name, config_type, layer_idx=None, location_key=None):
        """The config (or the single union member) of type ``config_type`` that targets this layer/location."""
        return match_config(self.get(name), config_type, layer_idx, location_key)

    def members(self, name, config_type):
        """All union members (or the config itself) of ``config_type``."""
        config = self.get(name)
        if config is None:
            return []
        members = config.configs if isinstance(config, ConfigUnion) else [config]
        return [c for c in members if isinstance(c, config_type)]
