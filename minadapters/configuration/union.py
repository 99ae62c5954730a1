"""`ConfigUnion` and the two preset unions, MAM and UniPELT. Spec: CFG-3, CFG-5."""

import numbers
from typing import Optional

from ..errors import ConfigError, ConfigTypeError
from .base import AdapterConfig, config_class_for
from .bottleneck import BnConfig, ParBnConfig, SeqBnConfig
from .methods import LoRAConfig, PrefixTuningConfig


class ConfigUnion(AdapterConfig, family="union"):
    """Several method configs applied together as one adapter. Spec: CFG-3, CFG-5.

    `cfg[i]` is the i-th config, `cfg["i.key"]` a key of it; iteration yields "i.key" strings.
    """

    architecture: Optional[str] = "union"

    def __init__(self, *configs):
        self.validate(configs)
        self.configs = configs

    @staticmethod
    def validate(configs):
        """Check that `configs` can be combined. Spec: CFG-3.

        1. each item is an AdapterConfig and not itself a union (TypeError);
        2. for each pair (later, earlier) with the same architecture: skip if either has a non-empty
           leave_out; bottlenecks (architecture None) need different mh_adapter AND different
           output_adapter; any other shared architecture is rejected (ValueError).
        """
        for i, config in enumerate(configs):
            if not isinstance(config, AdapterConfig):
                raise ConfigTypeError(
                    f"ConfigUnion: item {i} is {config!r} ({type(config).__name__}), not an instance of AdapterConfig."
                )
            if isinstance(config, ConfigUnion):
                raise ConfigTypeError(
                    f"ConfigUnion: item {i} is a {type(config).__name__}; a union is not supported in a config union "
                    "(list its members instead)."
                )
        for i, c_a in enumerate(configs):
            for j, c_b in enumerate(configs[:i]):
                _check_pair(i, c_a, j, c_b)

    def __getitem__(self, key):
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            return self.configs[key]
        if not isinstance(key, str):
            raise KeyError(key)
        if key in ("architecture", "configs") or (hasattr(type(self), key) and isinstance(getattr(type(self), key), property)):
            return getattr(self, key)
        index, sep, child_key = key.partition(".")
        if not sep or not index.isdigit() or int(index) >= len(self.configs):
            raise KeyError(f"ConfigUnion has no key {key!r}; use an int index, 'i.key' or 'architecture'.")
        return self.configs[int(index)][child_key]

    def __iter__(self):
        for i, config in enumerate(self.configs):
            for key in config:
                yield f"{i}.{key}"

    def __len__(self):
        return sum(len(c) for c in self.configs)

    def __eq__(self, other):
        # Deviation: adapters zips children, so a union equals any union it is a prefix of.
        if not isinstance(other, AdapterConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(repr(c) for c in self.configs)})"

    def to_dict(self):
        """{"architecture": "union", "configs": [child.to_dict(), ...]}. Spec: CFG-5."""
        return {"architecture": self.architecture, "configs": [c.to_dict() for c in self.configs]}

    def replace(self, **changes):
        """Apply `changes` to every child; returns a plain ConfigUnion. Spec: CFG-5."""
        return ConfigUnion(*[c.replace(**changes) for c in self.configs])

    @classmethod
    def from_dict(cls, config):
        """Children resolved by their `architecture` (CFG-5), then `cls(*children)`."""
        if isinstance(config, AdapterConfig):
            return config
        if not hasattr(config, "get") or not isinstance(config.get("configs"), (list, tuple)):
            raise ConfigTypeError(f"{cls.__name__}.from_dict: got a {type(config).__name__}; expected a dict with a "
                                  "'configs' list.")
        children = [config_class_for(c).from_dict(c) for c in config["configs"]]
        return cls(*children)


def _check_pair(i, c_a, j, c_b):
    """Spec: CFG-3 rule 2."""
    if c_a.architecture != c_b.architecture:
        return
    # COMPAT(adapters): with a leave_out the layers may not overlap, so no decision is made here.
    if c_a.get("leave_out", []) or c_b.get("leave_out", []):
        return
    if c_a.architecture is None or c_a.architecture == "bottleneck":
        if c_a.mh_adapter != c_b.mh_adapter and c_a.output_adapter != c_b.output_adapter:
            return
        raise ConfigError(
            f"ConfigUnion: bottleneck configs {j} ({type(c_b).__name__}) and {i} ({type(c_a).__name__}) cannot be "
            f"combined: they must differ in both mh_adapter and output_adapter (got mh_adapter "
            f"{c_b.mh_adapter}/{c_a.mh_adapter}, output_adapter {c_b.output_adapter}/{c_a.output_adapter}) "
            "unless one has a leave_out."
        )
    raise ConfigError(
        f"ConfigUnion: configs {j} ({type(c_b).__name__}) and {i} ({type(c_a).__name__}) have the same adapter "
        f"architecture {c_a.architecture!r} and cannot be combined (unless one has a leave_out)."
    )


class MAMConfig(ConfigUnion):
    """Mix-and-Match adapter (He et al., 2021): prefix tuning + parallel bottleneck. Spec: CFG-5."""

    def __init__(self, prefix_tuning=None, adapter=None):
        prefix_tuning = prefix_tuning or PrefixTuningConfig(bottleneck_size=800)
        adapter = adapter or ParBnConfig()
        if not isinstance(prefix_tuning, PrefixTuningConfig):
            raise ConfigTypeError(f"MAMConfig.prefix_tuning: got {type(prefix_tuning).__name__}; expected a PrefixTuningConfig.")
        if not isinstance(adapter, BnConfig):
            raise ConfigTypeError(f"MAMConfig.adapter: got {type(adapter).__name__}; expected a BnConfig.")
        super().__init__(prefix_tuning, adapter)

    @property
    def prefix_tuning(self):
        return self[0]

    @property
    def adapter(self):
        return self[1]


class UniPELTConfig(ConfigUnion):
    """UniPELT (Mao et al., 2022): gated prefix tuning + SeqBn + LoRA. Spec: CFG-5."""

    def __init__(self, prefix_tuning=None, adapter=None, lora=None):
        components = [
            prefix_tuning or PrefixTuningConfig(prefix_length=10),
            adapter or SeqBnConfig(reduction_factor=16),
            lora or LoRAConfig(r=8, alpha=2),
        ]
        super().__init__(*[c.replace(use_gating=True) for c in components])
