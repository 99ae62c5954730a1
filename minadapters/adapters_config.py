"""The model's registry of adapters, fusions and the active setup (adapters' ModelAdaptersConfig)."""
from __future__ import annotations

from .configuration import ConfigUnion
from .errors import AdapterNotFoundError, ConfigError


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
        config = self.get(name)
        if config is None:
            return None
        members = config.configs if isinstance(config, ConfigUnion) else [config]
        found = []
        for c in members:
            if not isinstance(c, config_type):
                continue
            if layer_idx is not None and layer_idx in (c.get("leave_out", []) or []):
                continue
            if location_key is not None and not c.get(location_key, False):
                continue
            found.append(c)
        if len(found) > 1:
            raise ConfigError(f"Multiple adapter definitions conflict for adapter {name!r} in layer {layer_idx} "
                              f"at {location_key!r}; use one adaptation block per location and adapter.")
        return found[0] if found else None

    def members(self, name, config_type):
        """All union members (or the config itself) of ``config_type``."""
        config = self.get(name)
        if config is None:
            return []
        members = config.configs if isinstance(config, ConfigUnion) else [config]
        return [c for c in members if isinstance(c, config_type)]
