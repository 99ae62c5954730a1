"""The `AdapterConfig` base: a read-only Mapping over dataclass fields plus extra attributes.

Spec: CFG-5 (object model), CFG-2 (resolution order of `load`).

This module imports none of the config classes built on it. The two tables `load` needs, which class rebuilds a
dict of each `architecture` and the named presets, are filled by the modules that define them: a family's base
class declares itself with a class keyword (``class LoRAConfig(AdapterConfig, family="lora")``) and presets.py
hands over ADAPTER_CONFIG_MAP. ``minadapters.configuration`` imports every one of them, and Python runs that package
before any of its modules, so both tables are complete before a config can be loaded.
"""

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from types import MappingProxyType

from ..errors import ConfigError, ConfigTypeError
from .strings import resolve_adapter_config

_NO_FAMILY = object()  # `family=None` is the bottleneck family, so "not declared" needs its own marker
_FAMILY_CLASSES = {}  # architecture -> the class a config dict with that architecture is rebuilt as
_PRESETS = {}  # identifier -> preset config instance (ADAPTER_CONFIG_MAP), handed over by presets.py


class UnknownArchitectureError(ConfigError, KeyError):
    """A config dict names an `architecture` no config class handles (adapters raises KeyError)."""

    def __str__(self):  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class AdapterConfig(Mapping):
    """Base class of every adaptation-method config. Abstract. Spec: CFG-5.

    A read-only Mapping over the instance `__dict__` (dataclass fields, then extra attributes set
    by `from_dict`). Existing attributes cannot be set again or deleted.
    """

    architecture = None

    def __init_subclass__(cls, family=_NO_FAMILY, **kwargs):
        """`family=<architecture>` declares `cls` as the class that dicts of that architecture rebuild as (CFG-5)."""
        super().__init_subclass__(**kwargs)
        if family is _NO_FAMILY:
            return
        if family in _FAMILY_CLASSES:
            raise TypeError(f"{cls.__name__}: architecture {family!r} already belongs to "
                            f"{_FAMILY_CLASSES[family].__name__}; a family has one class.")
        _FAMILY_CLASSES[family] = cls

    def __init__(self):
        raise TypeError("AdapterConfig is an abstract class and cannot be instantiated.")

    def __post_init__(self):
        self._check_fields()

    def _check_fields(self):
        """Validate field types and value domains (overridden per class). Spec: CFG-6."""

    # Pseudo-immutability: new attributes may be added, existing ones never change.
    def __setattr__(self, name, value):
        if name in self.__dict__:
            raise FrozenInstanceError(f"cannot assign to field {name!r} of {type(self).__name__}; use .replace()")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r} of {type(self).__name__}")

    def __getitem__(self, key):
        return self.__dict__[key]

    def __iter__(self):
        return iter(self.__dict__)

    def __len__(self):
        return len(self.__dict__)

    def __eq__(self, other):
        if not isinstance(other, AdapterConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable lists inside; adapters' configs are unhashable too

    def to_dict(self):
        """Dataclass fields only, deep-copied into plain containers. Spec: CFG-5."""
        return dataclasses.asdict(self)

    def replace(self, **changes):
        """A new config of the same class with `changes` applied (validated again). Spec: CFG-5."""
        _check_known_fields(type(self), changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, config):
        """Build `cls` from a dict; keys that are not fields become extra attributes. Spec: CFG-5."""
        if isinstance(config, AdapterConfig):
            return config
        if not isinstance(config, Mapping):
            raise ConfigTypeError(f"{cls.__name__}.from_dict: got {config!r} ({type(config).__name__}); expected a dict.")
        field_names = cls.__dataclass_fields__.keys()
        known = {k: v for k, v in config.items() if k in field_names}
        extra = {k: v for k, v in config.items() if k not in field_names}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in known and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigTypeError(
                f"{cls.__name__}.from_dict: missing required field(s) {', '.join(map(repr, missing))}; "
                f"got keys {sorted(map(str, config))}."
            )
        obj = cls(**known)
        for key, value in extra.items():
            setattr(obj, key, value)
        return obj

    @classmethod
    def load(cls, config, download_kwargs=None, **kwargs):
        """Resolve any config specifier to a config object. Spec: CFG-2.

        None/""/{} -> None; Mapping or config object; identifier in ADAPTER_CONFIG_MAP; path to a JSON
        file; config string (CFG-1). Then non-None `kwargs` override fields and the class is chosen by
        the object's class or the dict's `architecture` (CFG-5).
        """
        if not config:
            return None
        force = bool(download_kwargs and download_kwargs.get("force_download", False))
        resolved = resolve_adapter_config(config, local_map=None if force else _PRESETS)
        if isinstance(resolved, AdapterConfig):
            target = type(resolved)
            config_dict = resolved.to_dict()
        else:
            if not isinstance(resolved, Mapping):
                raise ConfigTypeError(
                    f"AdapterConfig.load: {config!r} resolved to {type(resolved).__name__}; expected a config dict."
                )
            target = config_class_for(resolved)
            config_dict = dict(resolved)  # never mutate the caller's dict
        overrides = {k: v for k, v in kwargs.items() if v is not None}
        if overrides and config_dict.get("architecture") == "union":
            # COMPAT(adapters): overrides become an unused top-level key of a union; children keep theirs.
            warnings.warn(
                f"AdapterConfig.load: overrides {sorted(overrides)} are ignored for a config union; "
                "use union.replace(...) to change every child.",
                UserWarning,
                stacklevel=2,
            )
        config_dict.update(overrides)
        return target.from_dict(config_dict)


def config_class_for(config_dict):
    """The config class for a dict, chosen by its `architecture` key. Spec: CFG-5.

    COMPAT(adapters): only the base class of each family is recoverable (IA3/VeRA/DoRA -> LoRAConfig,
    LoReFT/NoReFT/DiReFT -> ReftConfig, MAM/UniPELT -> ConfigUnion, bottlenecks -> BnConfig).
    """
    if not isinstance(config_dict, Mapping):   # e.g. a list inside a file's "configs" (IO-16)
        raise ConfigTypeError(f"an adapter config must be a dict (JSON object); got a {type(config_dict).__name__}.")
    architecture = config_dict.get("architecture", None)
    try:
        return _FAMILY_CLASSES[architecture]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in sorted(_FAMILY_CLASSES, key=lambda k: (k is None, str(k))))
        raise UnknownArchitectureError(
            f"unknown adapter architecture {architecture!r}; expected one of {known} (None or missing = bottleneck)."
        ) from None


def declare_presets(presets):
    """Hand the identifier -> preset table to `AdapterConfig.load` (called once, by presets.py); returns it read-only."""
    if _PRESETS:
        raise RuntimeError("the adapter config presets are declared once, by minadapters.configuration.presets")
    _PRESETS.update(presets)
    return MappingProxyType(_PRESETS)


def _check_known_fields(cls, changes):
    """Unknown keys in replace()/config strings -> ConfigTypeError naming key, class and fields."""
    names = list(cls.__dataclass_fields__)
    unknown = [k for k in changes if k not in names]
    if unknown:
        raise ConfigTypeError(
            f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; allowed fields: {', '.join(names)}."
        )
