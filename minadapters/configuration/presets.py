"""Identifier -> preset config instance (adapters 1.3.0 `ADAPTER_CONFIG_MAP`). Spec: CFG-2."""

from .bottleneck import (
    CompacterConfig,
    CompacterPlusPlusConfig,
    DoubleSeqBnConfig,
    DoubleSeqBnInvConfig,
    ParBnConfig,
    SeqBnConfig,
    SeqBnInvConfig,
)
from .methods import (
    DiReftConfig,
    DoRAConfig,
    DvoRAConfig,
    IA3Config,
    LoRAConfig,
    LoReftConfig,
    MTLLoRAConfig,
    NoReftConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    VeraConfig,
)
from .base import declare_presets
from .union import MAMConfig, UniPELTConfig

# Read-only view: presets are shared instances, never replaced at run time. `AdapterConfig.load` reads the same table.
ADAPTER_CONFIG_MAP = declare_presets(
    {
        # deprecated identifiers, still resolved
        "pfeiffer": SeqBnConfig(),
        "houlsby": DoubleSeqBnConfig(),
        "parallel": ParBnConfig(),
        "scaled_parallel": ParBnConfig(scaling="learned"),
        "pfeiffer+inv": SeqBnInvConfig(),
        "houlsby+inv": DoubleSeqBnInvConfig(),
        # current identifiers
        "seq_bn": SeqBnConfig(),
        "double_seq_bn": DoubleSeqBnConfig(),
        "par_bn": ParBnConfig(),
        "scaled_par_bn": ParBnConfig(scaling="learned"),
        "seq_bn_inv": SeqBnInvConfig(),
        "double_seq_bn_inv": DoubleSeqBnInvConfig(),
        "compacter++": CompacterPlusPlusConfig(),
        "compacter": CompacterConfig(),
        "prefix_tuning": PrefixTuningConfig(),
        "prefix_tuning_flat": PrefixTuningConfig(flat=True),
        "prompt_tuning": PromptTuningConfig(),
        "mtl_lora": MTLLoRAConfig(),
        "lora": LoRAConfig(),
        "ia3": IA3Config(),
        "vera": VeraConfig(),
        "dora": DoRAConfig(),
        "dvora": DvoRAConfig(),
        "loreft": LoReftConfig(),
        "noreft": NoReftConfig(),
        "direft": DiReftConfig(),
        "mam": MAMConfig(),
        "unipelt": UniPELTConfig(),
    }
)

DEFAULT_ADAPTER_CONFIG = "seq_bn"
