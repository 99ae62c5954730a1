"""Bottleneck adapter configs: `BnConfig` and its presets. Spec: CFG-5, CFG-6."""

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from typing import List, Optional, Union

from ..errors import ConfigError
from . import _checks as ck
from .base import AdapterConfig

BN_INIT_WEIGHTS = ("bert", "mam_adapter", "houlsby")
INV_ADAPTER_TYPES = ("nice", "glow")
PHM_C_INIT = ("normal", "uniform")
PHM_W_INIT = ("phm", "glorot-normal", "glorot-uniform", "normal")
BN_BOOL_FIELDS = (
    "mh_adapter", "output_adapter", "original_ln_before", "original_ln_after", "ln_before", "ln_after",
    "is_parallel", "use_gating", "adapter_residual_before_ln", "cross_adapter", "phm_layer",
)
PHM_OPTIONAL_BOOL_FIELDS = (
    "factorized_phm_W", "shared_W_phm", "shared_phm_rule", "factorized_phm_rule", "learn_phm", "phm_bias",
)


@dataclass(eq=False)
class BnConfig(AdapterConfig, family=None):
    """Architecture of a bottleneck adapter (sequential or parallel). Spec: CFG-5.

    `reduction_factor` is a number > 0 or a mapping {'<layer>': rf, 'default': rf}; the bottleneck
    width is max(1, int(hidden_size // rf)).
    """

    # Required options
    mh_adapter: bool
    output_adapter: bool
    reduction_factor: Union[float, Mapping]
    non_linearity: str

    # Options with defaults (order = adapters 1.3.0's to_dict order)
    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    init_weights_seed: Optional[int] = None
    is_parallel: bool = False
    scaling: Union[float, str] = 1.0
    use_gating: bool = False
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    inv_adapter: Optional[str] = None
    inv_adapter_reduction_factor: Optional[float] = None
    cross_adapter: bool = False
    leave_out: List[int] = field(default_factory=list)
    dropout: float = 0.0
    phm_layer: bool = False
    phm_dim: int = 4
    factorized_phm_W: Optional[bool] = True
    shared_W_phm: Optional[bool] = False
    shared_phm_rule: Optional[bool] = True
    factorized_phm_rule: Optional[bool] = False
    phm_c_init: Optional[str] = "normal"
    phm_init_range: Optional[float] = 0.0001
    learn_phm: Optional[bool] = True
    hypercomplex_nonlinearity: Optional[str] = "glorot-uniform"
    phm_rank: Optional[int] = 1
    phm_bias: Optional[bool] = True
    stochastic_depth: Optional[float] = 0.0

    def __setattr__(self, name, value):
        if name in self.__dict__:
            raise FrozenInstanceError(f"cannot assign to field {name!r} of {type(self).__name__}; use .replace()")
        if name == "invertible_adapter":
            _apply_legacy_invertible_adapter(self, value)
            return
        object.__setattr__(self, name, value)

    def _check_fields(self):
        """Spec: CFG-6 (bottleneck table)."""
        for name in BN_BOOL_FIELDS:
            ck.check_bool(self, name, getattr(self, name))
        ck.check_reduction_factor(self, "reduction_factor", self.reduction_factor)
        # COMPAT(adapters): the bottleneck calls non_linearity.lower(), so None cannot run.
        ck.check_activation(self, "non_linearity", self.non_linearity)
        ck.check_choice(self, "init_weights", self.init_weights, BN_INIT_WEIGHTS)
        ck.check_seed(self, "init_weights_seed", self.init_weights_seed)
        _check_scaling(self)
        _check_residual_before_ln(self)
        ck.check_choice(self, "inv_adapter", self.inv_adapter, INV_ADAPTER_TYPES, optional=True)
        # the coupling blocks compute int(dims_in // rf): a number, never a mapping
        ck.check_factor(self, "inv_adapter_reduction_factor", self.inv_adapter_reduction_factor, optional=True)
        if self.inv_adapter is not None and self.inv_adapter_reduction_factor is None:
            raise ConfigError(
                f"{type(self).__name__}.inv_adapter_reduction_factor: got None with inv_adapter={self.inv_adapter!r}; "
                "expected a number > 0 (e.g. 2)."
            )
        ck.check_int_list(self, "leave_out", self.leave_out)
        ck.check_probability(self, "dropout", self.dropout)
        ck.check_probability(self, "stochastic_depth", self.stochastic_depth, optional=True)
        _check_phm(self)


def _check_scaling(cfg):
    # COMPAT(adapters): Adapter() accepts isinstance(scaling, float) or "learned"/"channel" only;
    # an int such as 2 raises "Unknown scaling type" when the adapter is added.
    value = cfg.scaling
    if isinstance(value, str):
        ck.check_choice(cfg, "scaling", value, ("learned", "channel"))
    elif not isinstance(value, float):
        raise ConfigError(
            f"{type(cfg).__name__}.scaling: got {value!r} ({type(value).__name__}); expected a float "
            f"(write {float(value) if ck.is_real(value) else 1.0!r}), 'learned' or 'channel'."
        )
    else:
        ck.check_real(cfg, "scaling", value)   # finite: NaN / inf scale every output (IO-16)


def _check_residual_before_ln(cfg):
    value = cfg.residual_before_ln
    if not (ck._is_bool(value) or value == "post_add"):
        raise ConfigError(
            f"{type(cfg).__name__}.residual_before_ln: got {value!r}; expected True, False or 'post_add'."
        )
    if value == "post_add" and not cfg.original_ln_before and not cfg.is_parallel:
        # COMPAT(adapters): the sequential adapter only defines the residual for "post_add" inside
        # the original_ln_before branch (UnboundLocalError at forward otherwise).
        raise ConfigError(
            f"{type(cfg).__name__}.residual_before_ln: 'post_add' requires original_ln_before=True; "
            "got original_ln_before=False."
        )


def _check_phm(cfg):
    ck.check_size(cfg, "phm_dim", cfg.phm_dim)
    ck.check_size(cfg, "phm_rank", cfg.phm_rank, optional=True)
    for name in PHM_OPTIONAL_BOOL_FIELDS:
        value = getattr(cfg, name)
        if value is not None:
            ck.check_bool(cfg, name, value)
    ck.check_real(cfg, "phm_init_range", cfg.phm_init_range, low=0.0, optional=True)
    # The PHM layer asserts these only when it is built; unused values are left alone.
    if not cfg.phm_layer:
        ck.check_str(cfg, "phm_c_init", cfg.phm_c_init, optional=True)
        ck.check_str(cfg, "hypercomplex_nonlinearity", cfg.hypercomplex_nonlinearity, optional=True)
        return
    ck.check_choice(cfg, "phm_c_init", cfg.phm_c_init, PHM_C_INIT)
    ck.check_choice(cfg, "hypercomplex_nonlinearity", cfg.hypercomplex_nonlinearity, PHM_W_INIT)
    if cfg.phm_rank is None:
        raise ConfigError(f"{type(cfg).__name__}.phm_rank: got None with phm_layer=True; expected an int >= 1.")


def _apply_legacy_invertible_adapter(cfg, value):
    """v1 `invertible_adapter: {block_type, reduction_factor}` -> inv_adapter fields. Spec: CFG-5."""
    if not value:
        return
    if not isinstance(value, Mapping) or "block_type" not in value or "reduction_factor" not in value:
        raise ConfigError(
            f"{type(cfg).__name__}.invertible_adapter (legacy): got {value!r}; expected a dict with "
            "'block_type' ('nice' or 'glow') and 'reduction_factor'."
        )
    ck.check_choice(cfg, "invertible_adapter['block_type']", value["block_type"], INV_ADAPTER_TYPES)
    ck.check_factor(cfg, "invertible_adapter['reduction_factor']", value["reduction_factor"])
    object.__setattr__(cfg, "inv_adapter", value["block_type"])
    object.__setattr__(cfg, "inv_adapter_reduction_factor", value["reduction_factor"])


@dataclass(eq=False)
class SeqBnConfig(BnConfig):
    """Sequential bottleneck adapter after the FFN (Pfeiffer et al., 2020). Spec: CFG-5."""

    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = False
    output_adapter: bool = True
    non_linearity: str = "relu"
    reduction_factor: Union[float, Mapping] = 16


@dataclass(eq=False)
class CompacterPlusPlusConfig(SeqBnConfig):
    """Compacter++ (Mahabadi et al., 2021): SeqBn with PHM layers. Spec: CFG-5."""

    phm_layer: bool = True
    reduction_factor: Union[float, Mapping] = 32
    non_linearity: str = "gelu"


@dataclass(eq=False)
class SeqBnInvConfig(SeqBnConfig):
    """SeqBn plus a NICE invertible adapter on the embeddings. Spec: CFG-5."""

    inv_adapter: Optional[str] = "nice"
    inv_adapter_reduction_factor: Optional[float] = 2


@dataclass(eq=False)
class DoubleSeqBnConfig(BnConfig):
    """Adapters after attention and FFN (Houlsby et al., 2019). Spec: CFG-5."""

    original_ln_before: bool = False
    original_ln_after: bool = True
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = True
    output_adapter: bool = True
    non_linearity: str = "swish"
    reduction_factor: Union[float, Mapping] = 16


@dataclass(eq=False)
class CompacterConfig(DoubleSeqBnConfig):
    """Compacter (Mahabadi et al., 2021): DoubleSeqBn with PHM layers. Spec: CFG-5."""

    phm_layer: bool = True
    reduction_factor: Union[float, Mapping] = 32
    non_linearity: str = "gelu"


@dataclass(eq=False)
class DoubleSeqBnInvConfig(DoubleSeqBnConfig):
    """DoubleSeqBn plus a NICE invertible adapter on the embeddings. Spec: CFG-5."""

    inv_adapter: Optional[str] = "nice"
    inv_adapter_reduction_factor: Optional[float] = 2


@dataclass(eq=False)
class ParBnConfig(BnConfig):
    """Parallel bottleneck adapter (He et al., 2021). Spec: CFG-5."""

    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = False
    output_adapter: bool = True
    non_linearity: str = "relu"
    reduction_factor: Union[float, Mapping] = 2

    init_weights: str = "mam_adapter"
    is_parallel: bool = True
    scaling: Union[float, str] = 4.0


@dataclass(eq=False)
class AdapterPlusConfig(BnConfig):
    """Adapter+ (Steitz & Roth, 2024); stochastic depth needs torchvision upstream. Spec: CFG-5."""

    original_ln_after: bool = False
    original_ln_before: bool = True
    residual_before_ln: bool = False
    stochastic_depth: float = 0.1
    init_weights: str = "houlsby"
    scaling: Union[float, str] = "channel"

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: Union[float, Mapping] = 96
    non_linearity: str = "gelu"
