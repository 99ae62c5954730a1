"""Adapter and AdapterFusion configuration (adapters 1.3.0 classes, fields and defaults).

Spec: spec/config.md (CFG-1 string grammar, CFG-2 resolution, CFG-3 unions, CFG-4 hash,
CFG-5 object model, CFG-6 validation).
"""

from .base import AdapterConfig, UnknownArchitectureError
from .bottleneck import (
    AdapterPlusConfig,
    BnConfig,
    CompacterConfig,
    CompacterPlusPlusConfig,
    DoubleSeqBnConfig,
    DoubleSeqBnInvConfig,
    ParBnConfig,
    SeqBnConfig,
    SeqBnInvConfig,
)
from .fusion import (
    ADAPTERFUSION_CONFIG_MAP,
    DEFAULT_ADAPTERFUSION_CONFIG,
    AdapterFusionConfig,
    DynamicAdapterFusionConfig,
    StaticAdapterFusionConfig,
)
from .methods import (
    DiReftConfig,
    DoRAConfig,
    DvoRAConfig,
    IA3Config,
    LoRAConfig,
    LoReftConfig,
    MTLLoRAConfig,
    MultiTaskConfig,
    NoReftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    ReftConfig,
    VeraConfig,
)
from .presets import ADAPTER_CONFIG_MAP, DEFAULT_ADAPTER_CONFIG
from .strings import get_adapter_config_hash, parse_adapter_config_string, resolve_adapter_config
from .union import ConfigUnion, MAMConfig, UniPELTConfig

__all__ = [
    "ADAPTERFUSION_CONFIG_MAP",
    "ADAPTER_CONFIG_MAP",
    "DEFAULT_ADAPTERFUSION_CONFIG",
    "DEFAULT_ADAPTER_CONFIG",
    "AdapterConfig",
    "AdapterFusionConfig",
    "AdapterPlusConfig",
    "BnConfig",
    "CompacterConfig",
    "CompacterPlusPlusConfig",
    "ConfigUnion",
    "DiReftConfig",
    "DoRAConfig",
    "DoubleSeqBnConfig",
    "DoubleSeqBnInvConfig",
    "DvoRAConfig",
    "DynamicAdapterFusionConfig",
    "IA3Config",
    "LoRAConfig",
    "LoReftConfig",
    "MAMConfig",
    "MTLLoRAConfig",
    "MultiTaskConfig",
    "NoReftConfig",
    "ParBnConfig",
    "PrefixTuningConfig",
    "PromptTuningConfig",
    "ReftConfig",
    "SeqBnConfig",
    "SeqBnInvConfig",
    "StaticAdapterFusionConfig",
    "UniPELTConfig",
    "UnknownArchitectureError",
    "VeraConfig",
    "get_adapter_config_hash",
    "parse_adapter_config_string",
    "resolve_adapter_config",
]
