"""AdapterFusion configs and their identifier map. Spec: CFG-5, CFG-6, CFG-2."""

from dataclasses import dataclass
from types import MappingProxyType

from . import _checks as ck
from .base import AdapterConfig
from .strings import resolve_adapter_config

FUSION_BOOL_FIELDS = (
    "key", "query", "value", "query_before_ln", "regularization", "residual_before", "temperature",
    "value_before_softmax",
)


@dataclass(eq=False)
class AdapterFusionConfig(AdapterConfig):
    """Architecture of an AdapterFusion layer (attention over adapter outputs). Spec: CFG-5."""

    key: bool
    query: bool
    value: bool
    query_before_ln: bool
    regularization: bool
    residual_before: bool
    temperature: bool
    value_before_softmax: bool
    value_initialized: str
    dropout_prob: float

    def _check_fields(self):
        """Spec: CFG-6 (fusion)."""
        for name in FUSION_BOOL_FIELDS:
            ck.check_bool(self, name, getattr(self, name))
        # COMPAT(adapters): annotated `str` but only its truth value is used; presets store bools.
        if not (ck._is_bool(self.value_initialized) or isinstance(self.value_initialized, str)):
            ck.check_bool(self, "value_initialized", self.value_initialized)
        ck.check_probability(self, "dropout_prob", self.dropout_prob, optional=True)

    @classmethod
    def load(cls, config, **kwargs):
        """Resolve a fusion specifier against ADAPTERFUSION_CONFIG_MAP. Spec: CFG-2.

        Mapping/object, identifier ("static", "dynamic"), JSON path or config string; then ALL kwargs
        (None included, as upstream) override fields. Always returns a base AdapterFusionConfig.
        """
        resolved = resolve_adapter_config(config, local_map=ADAPTERFUSION_CONFIG_MAP, kind="AdapterFusion")
        config_dict = resolved.to_dict() if isinstance(resolved, AdapterConfig) else dict(resolved)
        config_dict.update(kwargs)
        return AdapterFusionConfig.from_dict(config_dict)


@dataclass(eq=False)
class StaticAdapterFusionConfig(AdapterFusionConfig):
    """Fusion without a value matrix (Pfeiffer et al., 2021). Spec: CFG-5."""

    key: bool = True
    query: bool = True
    value: bool = False
    query_before_ln: bool = False
    regularization: bool = False
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: str = False
    dropout_prob: float = None


@dataclass(eq=False)
class DynamicAdapterFusionConfig(AdapterFusionConfig):
    """Fusion with an identity-initialised value matrix and its regulariser. Spec: CFG-5."""

    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: str = True
    dropout_prob: float = None


ADAPTERFUSION_CONFIG_MAP = MappingProxyType(
    {"static": StaticAdapterFusionConfig(), "dynamic": DynamicAdapterFusionConfig()}
)

DEFAULT_ADAPTERFUSION_CONFIG = "dynamic"
