"""Prefix tuning, prompt tuning, the LoRA family and ReFT configs. Spec: CFG-5, CFG-6."""

from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from ..errors import ConfigError
from . import _checks as ck
from .base import AdapterConfig

LORA_INIT_WEIGHTS = ("lora", "bert", "ia3", "vera")
ATTN_MATRICES = ("q", "k", "v")
COMPOSITION_MODES = ("add", "scale")
PROMPT_INIT = ("random_uniform", "from_string")
PROMPT_COMBINE = ("prefix", "prefix_after_bos")
TASK_SPECIFIC_MATRIX_TYPES = ("singular_values", "linear")


def _check_architecture(cfg):
    ck.check_str(cfg, "architecture", cfg.architecture)


@dataclass(eq=False)
class PrefixTuningConfig(AdapterConfig, family="prefix_tuning"):
    """Prefix tuning (Li & Liang, 2021): trained key/value prefixes per attention layer. Spec: CFG-5."""

    architecture: Optional[str] = "prefix_tuning"

    encoder_prefix: bool = True
    cross_prefix: bool = True
    leave_out: List[int] = field(default_factory=list)

    flat: bool = False
    prefix_length: int = 30
    bottleneck_size: int = 512
    non_linearity: str = "tanh"
    dropout: float = 0.0
    use_gating: bool = False
    shared_gating: bool = True
    init_weights_seed: Optional[int] = None

    def _check_fields(self):
        """Spec: CFG-6 (prefix tuning)."""
        _check_architecture(self)
        for name in ("encoder_prefix", "cross_prefix", "flat", "use_gating", "shared_gating"):
            ck.check_bool(self, name, getattr(self, name))
        ck.check_int_list(self, "leave_out", self.leave_out)
        ck.check_size(self, "prefix_length", self.prefix_length)
        ck.check_size(self, "bottleneck_size", self.bottleneck_size)
        # COMPAT(adapters): only the non-flat reparametrisation MLP reads non_linearity (.lower()).
        ck.check_activation(self, "non_linearity", self.non_linearity, optional=bool(self.flat))
        ck.check_probability(self, "dropout", self.dropout)
        ck.check_seed(self, "init_weights_seed", self.init_weights_seed)


@dataclass(eq=False)
class PromptTuningConfig(AdapterConfig, family="prompt_tuning"):
    """Prompt tuning (Lester et al., 2021): trained embeddings prepended to the input. Spec: CFG-5.

    `random_uniform_scale` is a class attribute, not a field (as upstream): it is never serialised.
    """

    architecture: str = "prompt_tuning"

    prompt_length: int = 10
    prompt_init: str = "random_uniform"
    prompt_init_text: Optional[str] = None
    random_uniform_scale = 0.5
    combine: str = "prefix"
    init_weights_seed: Optional[int] = None

    def _check_fields(self):
        """Spec: CFG-6 (prompt tuning)."""
        _check_architecture(self)
        ck.check_size(self, "prompt_length", self.prompt_length)
        ck.check_choice(self, "prompt_init", self.prompt_init, PROMPT_INIT)
        ck.check_str(self, "prompt_init_text", self.prompt_init_text, optional=True)
        if self.prompt_init == "from_string" and self.prompt_init_text is None:
            raise ConfigError(
                f"{type(self).__name__}.prompt_init_text: got None with prompt_init='from_string'; "
                "expected the text to initialise the prompt from."
            )
        ck.check_choice(self, "combine", self.combine, PROMPT_COMBINE)
        ck.check_seed(self, "init_weights_seed", self.init_weights_seed)


@dataclass(eq=False)
class LoRAConfig(AdapterConfig, family="lora"):
    """LoRA (Hu et al., 2021); with composition_mode='scale' it is (IA)^3, with vera_d/vera_b VeRA,
    with use_dora DoRA. Spec: CFG-5."""

    architecture: Optional[str] = "lora"

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: List[int] = field(default_factory=list)

    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    attn_matrices: List[str] = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: Optional[int] = None
    use_gating: bool = False
    use_dora: bool = False
    vera_d: Optional[float] = None
    vera_b: Optional[float] = None
    dtype: Optional[str] = None

    def _check_fields(self):
        """Spec: CFG-6 (LoRA family)."""
        _check_architecture(self)
        for name in ("selfattn_lora", "intermediate_lora", "output_lora", "use_gating", "use_dora"):
            ck.check_bool(self, name, getattr(self, name))
        ck.check_int_list(self, "leave_out", self.leave_out)
        ck.check_size(self, "r", self.r)
        ck.check_real(self, "alpha", self.alpha)
        ck.check_probability(self, "dropout", self.dropout)
        ck.check_str_list(self, "attn_matrices", self.attn_matrices, ATTN_MATRICES)
        ck.check_choice(self, "composition_mode", self.composition_mode, COMPOSITION_MODES)
        ck.check_choice(self, "init_weights", self.init_weights, LORA_INIT_WEIGHTS)
        ck.check_seed(self, "init_weights_seed", self.init_weights_seed)
        # COMPAT(adapters): VeRA is chosen by isinstance(vera_d or vera_b, float); ints select plain LoRA.
        ck.check_real(self, "vera_d", self.vera_d, optional=True)
        ck.check_real(self, "vera_b", self.vera_b, optional=True)
        ck.check_dtype(self, "dtype", self.dtype)
        if self.composition_mode == "scale":
            _check_scale_mode(self)


def _check_scale_mode(cfg):
    """(IA)^3 limits, raised by adapters only when the module is added. Spec: CFG-6."""
    name = type(cfg).__name__
    if cfg.r != 1:
        raise ConfigError(f"{name}.r: got {cfg.r!r} with composition_mode='scale'; 'scale' requires r == 1.")
    if cfg.dropout > 0.0:
        raise ConfigError(f"{name}.dropout: got {cfg.dropout!r} with composition_mode='scale'; expected 0.0.")
    if cfg.use_dora:
        raise ConfigError(f"{name}.use_dora: got True with composition_mode='scale'; DoRA needs 'add'.")
    if cfg.init_weights == "vera":
        raise ConfigError(
            f"{name}.init_weights: got 'vera' with composition_mode='scale'; expected 'ia3', 'lora' or 'bert'."
        )


@dataclass(eq=False)
class IA3Config(LoRAConfig):
    """(IA)^3 (Liu et al., 2022): learned vectors scale k, v and the FFN intermediate. Spec: CFG-5."""

    selfattn_lora: bool = True
    intermediate_lora: bool = True
    output_lora: bool = False
    leave_out: List[int] = field(default_factory=list)

    r: int = 1
    alpha: int = 1
    dropout: float = 0.0
    attn_matrices: List[str] = field(default_factory=lambda: ["k", "v"])
    composition_mode: str = "scale"
    init_weights: str = "ia3"
    use_gating: bool = False
    dtype: Optional[str] = None


@dataclass(eq=False)
class VeraConfig(LoRAConfig):
    """VeRA (Kopiczko et al., 2024): frozen shared random A/B, trained scaling vectors. Spec: CFG-5."""

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False

    r: int = 8
    vera_d: Optional[float] = 0.1
    vera_b: Optional[float] = 0.0
    init_weights: str = "vera"
    composition_mode: str = "add"
    dtype: Optional[str] = None


@dataclass(eq=False)
class DoRAConfig(LoRAConfig):
    """DoRA (Liu et al., 2024): LoRA with a learned magnitude per output row. Spec: CFG-5."""

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: List[int] = field(default_factory=list)

    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    attn_matrices: List[str] = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: Optional[int] = None
    use_gating: bool = False
    use_dora: bool = True


@dataclass(eq=False)
class DvoRAConfig(LoRAConfig):
    """DoRA on top of VeRA. Spec: CFG-5."""

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: List[int] = field(default_factory=list)

    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    vera_d: Optional[float] = 0.1
    vera_b: Optional[float] = 0.0
    init_weights: str = "vera"
    composition_mode: str = "add"
    use_gating: bool = False
    use_dora: bool = True


class MultiTaskConfig(AdapterConfig):
    """Marker base class of multi-task methods; defines no fields. Spec: CFG-5."""


@dataclass(eq=False)
class MTLLoRAConfig(LoRAConfig, MultiTaskConfig, family="mtl_lora"):
    """MTL-LoRA (Yang et al., 2024): shared A, task-specific matrix, several weighted B. Spec: CFG-5."""

    architecture: Optional[str] = "mtl_lora"
    n_up_projection: int = 1
    task_specific_matrix_type: Literal["singular_values", "linear"] = "singular_values"
    weights_sharpness: float = 0.05

    def _check_fields(self):
        """Spec: CFG-6 (MTL-LoRA)."""
        super()._check_fields()
        ck.check_size(self, "n_up_projection", self.n_up_projection)
        ck.check_choice(self, "task_specific_matrix_type", self.task_specific_matrix_type, TASK_SPECIFIC_MATRIX_TYPES)
        ck.check_real(self, "weights_sharpness", self.weights_sharpness)
        if self.weights_sharpness == 0:
            raise ConfigError(f"{type(self).__name__}.weights_sharpness: got 0; expected a non-zero number (it divides).")


@dataclass(eq=False)
class ReftConfig(AdapterConfig, family="reft"):
    """ReFT (Wu et al., 2024): interventions on layer outputs at prefix/suffix positions. Spec: CFG-5.

    `subtract_projection` is a class attribute, not a field (never serialised; see CFG-5 DiReFT note).
    """

    layers: Union[Literal["all"], List[int]]
    prefix_positions: int
    suffix_positions: int
    r: int
    orthogonality: bool
    tied_weights: bool = False
    subtract_projection = True
    dropout: float = 0.05
    non_linearity: Optional[str] = None
    dtype: Optional[str] = None

    architecture: str = "reft"

    output_reft: bool = True
    init_weights_seed: Optional[int] = None

    def _check_fields(self):
        """Spec: CFG-6 (ReFT)."""
        _check_architecture(self)
        if self.layers != "all":
            if isinstance(self.layers, str):
                raise ConfigError(f"{type(self).__name__}.layers: got {self.layers!r}; expected 'all' or a list of ints >= 0.")
            ck.check_int_list(self, "layers", self.layers)
        ck.check_size(self, "prefix_positions", self.prefix_positions, minimum=0)
        ck.check_size(self, "suffix_positions", self.suffix_positions, minimum=0)
        ck.check_size(self, "r", self.r)
        for name in ("orthogonality", "tied_weights", "output_reft"):
            ck.check_bool(self, name, getattr(self, name))
        ck.check_probability(self, "dropout", self.dropout)
        ck.check_activation(self, "non_linearity", self.non_linearity, optional=True)
        ck.check_dtype(self, "dtype", self.dtype)
        ck.check_seed(self, "init_weights_seed", self.init_weights_seed)


@dataclass(eq=False)
class LoReftConfig(ReftConfig):
    """LoReFT: orthogonal low-rank intervention on the first 3 positions of every layer. Spec: CFG-5."""

    layers: Union[Literal["all"], List[int]] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = True
    tied_weights: bool = False
    dtype: Optional[str] = None


@dataclass(eq=False)
class NoReftConfig(ReftConfig):
    """LoReFT without the orthogonality constraint. Spec: CFG-5."""

    layers: Union[Literal["all"], List[int]] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = False
    tied_weights: bool = False
    dtype: Optional[str] = None


@dataclass(eq=False)
class DiReftConfig(ReftConfig):
    """DiReFT: no orthogonality, no projection subtraction (class attribute). Spec: CFG-5."""

    layers: Union[Literal["all"], List[int]] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = False
    tied_weights: bool = False
    subtract_projection = False
    dtype: Optional[str] = None
