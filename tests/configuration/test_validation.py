"""Field validation beyond adapters 1.3.0 (it fails late, at add/forward time, or never). Spec: CFG-6."""

import numpy as np
import pytest

import minadapters.configuration as C
from minadapters.errors import ConfigError, ConfigTypeError

E, T = ConfigError, ConfigTypeError

REJECT = [
    # (factory, kwargs, error, regex naming class.field and got value)
    (C.SeqBnConfig, dict(reduction_factor=0), E, r"SeqBnConfig.reduction_factor: got 0; expected a number > 0"),
    (C.SeqBnConfig, dict(reduction_factor=-4), E, r"reduction_factor: got -4"),
    (C.SeqBnConfig, dict(reduction_factor=float("inf")), E, "finite"),
    (C.SeqBnConfig, dict(reduction_factor="16"), T, r"reduction_factor: got '16' \(str\)"),
    (C.SeqBnConfig, dict(reduction_factor=True), T, r"reduction_factor: got True"),
    (C.SeqBnConfig, dict(reduction_factor={1: 8, "default": 16}), E, r"mapping key 1 is not a layer index string"),
    (C.SeqBnConfig, dict(reduction_factor={"x": 8}), E, r"mapping key 'x'"),
    (C.SeqBnConfig, dict(reduction_factor={"default": 0}), E, r"reduction_factor\['default'\]: got 0"),
    (C.SeqBnConfig, dict(reduction_factor={}), E, "non-empty mapping"),
    (C.SeqBnConfig, dict(non_linearity="relux"), E, r"SeqBnConfig.non_linearity: got 'relux'; expected an activation name \(.*gelu"),
    (C.SeqBnConfig, dict(non_linearity=None), T, r"non_linearity: got None"),
    (C.SeqBnConfig, dict(scaling=2), E, r"scaling: got 2 \(int\); expected a float \(write 2.0\), 'learned' or 'channel'"),
    (C.SeqBnConfig, dict(scaling=np.float32(2)), E, r"scaling: got .*float32"),
    (C.SeqBnConfig, dict(scaling="auto"), E, r"scaling: got 'auto'; expected one of 'learned', 'channel'"),
    (C.SeqBnConfig, dict(residual_before_ln="pre"), E, r"residual_before_ln: got 'pre'; expected True, False or 'post_add'"),
    (C.DoubleSeqBnConfig, dict(residual_before_ln="post_add"), E, "'post_add' requires original_ln_before=True"),
    (C.SeqBnConfig, dict(init_weights="lora"), E, r"init_weights: got 'lora'; expected one of 'bert', 'mam_adapter', 'houlsby'"),
    (C.SeqBnConfig, dict(init_weights_seed=1.5), T, r"init_weights_seed: got 1.5"),
    (C.SeqBnConfig, dict(mh_adapter=1), T, r"SeqBnConfig.mh_adapter: got 1 \(int\); expected True or False"),
    (C.SeqBnConfig, dict(inv_adapter="real-nvp"), E, r"inv_adapter: got 'real-nvp'; expected one of 'nice', 'glow' or None"),
    (C.SeqBnConfig, dict(inv_adapter="nice"), E, r"inv_adapter_reduction_factor: got None with inv_adapter='nice'"),
    (C.SeqBnConfig, dict(inv_adapter="nice", inv_adapter_reduction_factor={"default": 2}), T, r"inv_adapter_reduction_factor: got \{"),
    (C.SeqBnConfig, dict(leave_out=[0, -1]), E, r"leave_out\[1\]: got -1; expected an int >= 0"),
    (C.SeqBnConfig, dict(leave_out=[0, "1"]), T, r"leave_out\[1\]: got '1'"),
    (C.SeqBnConfig, dict(leave_out=3), T, r"leave_out: got 3 \(int\); expected a list of ints"),
    (C.SeqBnConfig, dict(dropout=1.5), E, r"dropout: got 1.5; expected a number in \[0.0, 1.0\]"),
    (C.SeqBnConfig, dict(stochastic_depth=-0.1), E, r"stochastic_depth: got -0.1"),
    (C.SeqBnConfig, dict(phm_dim=0), E, r"phm_dim: got 0; expected an int >= 1"),
    (C.CompacterConfig, dict(phm_c_init="zeros"), E, r"CompacterConfig.phm_c_init: got 'zeros'; expected one of 'normal', 'uniform'"),
    (C.CompacterConfig, dict(hypercomplex_nonlinearity="xavier"), E, r"hypercomplex_nonlinearity: got 'xavier'"),
    (C.SeqBnConfig, dict(learn_phm="yes"), T, r"learn_phm: got 'yes'"),
    (C.PrefixTuningConfig, dict(prefix_length=0), E, r"PrefixTuningConfig.prefix_length: got 0; expected an int >= 1"),
    (C.PrefixTuningConfig, dict(bottleneck_size=2.5), T, r"bottleneck_size: got 2.5"),
    (C.PrefixTuningConfig, dict(non_linearity=None), T, r"non_linearity: got None"),
    (C.PrefixTuningConfig, dict(flat="yes"), T, r"flat: got 'yes'"),
    (C.PromptTuningConfig, dict(prompt_init="zeros"), E, r"prompt_init: got 'zeros'; expected one of 'random_uniform', 'from_string'"),
    (C.PromptTuningConfig, dict(prompt_init="from_string"), E, r"prompt_init_text: got None with prompt_init='from_string'"),
    (C.PromptTuningConfig, dict(combine="suffix"), E, r"combine: got 'suffix'; expected one of 'prefix', 'prefix_after_bos'"),
    (C.PromptTuningConfig, dict(prompt_length=0), E, r"prompt_length: got 0"),
    (C.LoRAConfig, dict(r=0), E, r"LoRAConfig.r: got 0; expected an int >= 1"),
    (C.LoRAConfig, dict(r=True), T, r"LoRAConfig.r: got True \(bool\); expected an int"),
    (C.LoRAConfig, dict(r=4.0), T, r"r: got 4.0 \(float\)"),
    (C.LoRAConfig, dict(alpha="8"), T, r"alpha: got '8' \(str\); expected a number"),
    (C.LoRAConfig, dict(attn_matrices=["q", "o"]), E, r"attn_matrices\[1\]: got 'o'; expected one of 'q', 'k', 'v'"),
    (C.LoRAConfig, dict(attn_matrices="qv"), T, r"attn_matrices: got 'qv' \(str\); expected a list of strings"),
    (C.LoRAConfig, dict(composition_mode="mul"), E, r"composition_mode: got 'mul'; expected one of 'add', 'scale'"),
    (C.LoRAConfig, dict(composition_mode="scale"), E, r"LoRAConfig.r: got 8 with composition_mode='scale'; 'scale' requires r == 1"),
    (C.IA3Config, dict(r=2), E, r"IA3Config.r: got 2 with composition_mode='scale'"),
    (C.IA3Config, dict(dropout=0.1), E, r"IA3Config.dropout: got 0.1 with composition_mode='scale'"),
    (C.IA3Config, dict(use_dora=True), E, r"use_dora: got True with composition_mode='scale'"),
    (C.IA3Config, dict(init_weights="vera"), E, r"init_weights: got 'vera' with composition_mode='scale'"),
    (C.LoRAConfig, dict(init_weights="kaiming"), E, r"init_weights: got 'kaiming'; expected one of 'lora', 'bert', 'ia3', 'vera'"),
    (C.LoRAConfig, dict(vera_d="0.1"), T, r"vera_d: got '0.1'"),
    (C.LoRAConfig, dict(dtype="int8"), E, r"dtype: got 'int8'; expected one of 'bfloat16'"),
    (C.LoRAConfig, dict(dtype=np.float16), T, r"dtype: got"),
    (C.LoRAConfig, dict(use_gating=None), T, r"use_gating: got None"),
    (C.MTLLoRAConfig, dict(task_specific_matrix_type="diag"), E, r"task_specific_matrix_type: got 'diag'; expected one of 'singular_values', 'linear'"),
    (C.MTLLoRAConfig, dict(n_up_projection=0), E, r"n_up_projection: got 0"),
    (C.MTLLoRAConfig, dict(weights_sharpness=0), E, r"weights_sharpness: got 0"),
    (C.LoReftConfig, dict(layers="some"), E, r"LoReftConfig.layers: got 'some'; expected 'all' or a list of ints"),
    (C.LoReftConfig, dict(layers=[0, -2]), E, r"layers\[1\]: got -2"),
    (C.LoReftConfig, dict(prefix_positions=-1), E, r"prefix_positions: got -1; expected an int >= 0"),
    (C.LoReftConfig, dict(suffix_positions=1.0), T, r"suffix_positions: got 1.0"),
    (C.LoReftConfig, dict(r=0), E, r"LoReftConfig.r: got 0"),
    (C.LoReftConfig, dict(orthogonality=1), T, r"orthogonality: got 1"),
    (C.LoReftConfig, dict(non_linearity="bogus"), E, r"non_linearity: got 'bogus'"),
    (C.DynamicAdapterFusionConfig, dict(temperature="yes"), T, r"DynamicAdapterFusionConfig.temperature: got 'yes'"),
    (C.StaticAdapterFusionConfig, dict(dropout_prob=2.0), E, r"dropout_prob: got 2.0"),
    (C.StaticAdapterFusionConfig, dict(value_initialized=None), T, r"value_initialized: got None"),
]


@pytest.mark.parametrize("factory, kwargs, exc, pattern", REJECT, ids=[f"{f.__name__}-{sorted(k)[0]}-{i}" for i, (f, k, _, _) in enumerate(REJECT)])
def test_rejects(factory, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        factory(**kwargs)
    with pytest.raises(exc, match=pattern):  # replace() validates as well
        factory().replace(**kwargs)


def test_error_classes_are_builtin_compatible():
    with pytest.raises(ValueError):
        C.LoRAConfig(r=0)
    with pytest.raises(TypeError):
        C.LoRAConfig(r="8")


ACCEPT = [
    (C.LoRAConfig, dict(alpha=16.0)), (C.LoRAConfig, dict(alpha=np.int64(16))), (C.LoRAConfig, dict(r=np.int64(4))),
    (C.LoRAConfig, dict(attn_matrices=[])), (C.LoRAConfig, dict(attn_matrices=("q", "k", "v"))),
    (C.LoRAConfig, dict(vera_d=1, vera_b=0)), (C.LoRAConfig, dict(dtype="bfloat16")), (C.LoRAConfig, dict(init_weights_seed=0)),
    (C.LoRAConfig, dict(leave_out=[np.int64(3)])), (C.LoRAConfig, dict(dropout=1)), (C.LoRAConfig, dict(use_gating=np.bool_(True))),
    (C.IA3Config, dict(alpha=2.5)), (C.IA3Config, dict(init_weights="bert")),
    (C.SeqBnConfig, dict(reduction_factor=0.5)), (C.SeqBnConfig, dict(reduction_factor=np.int64(8))),
    (C.SeqBnConfig, dict(reduction_factor={"1": 8, "default": 16})), (C.SeqBnConfig, dict(reduction_factor={"0": 2, "1": 4})),
    (C.SeqBnConfig, dict(scaling=np.float64(2.0))), (C.SeqBnConfig, dict(scaling="learned")),
    (C.SeqBnConfig, dict(residual_before_ln="post_add")), (C.ParBnConfig, dict(residual_before_ln="post_add")),
    (C.SeqBnConfig, dict(non_linearity="Swish")), (C.SeqBnConfig, dict(non_linearity="leakyrelu")),
    (C.SeqBnConfig, dict(non_linearity="gelu_new")), (C.SeqBnConfig, dict(phm_c_init=None, hypercomplex_nonlinearity="xx")),
    (C.SeqBnConfig, dict(inv_adapter="glow", inv_adapter_reduction_factor=4)), (C.AdapterPlusConfig, {}),
    (C.PrefixTuningConfig, dict(flat=True, non_linearity=None)), (C.PrefixTuningConfig, dict(non_linearity="RELU")),
    (C.PromptTuningConfig, dict(prompt_init="from_string", prompt_init_text="hello")),
    (C.LoReftConfig, dict(layers=[0, 2], suffix_positions=2, non_linearity="tanh", tied_weights=True)),
    (C.NoReftConfig, dict(prefix_positions=0, dtype="float16")),
    (C.MTLLoRAConfig, dict(task_specific_matrix_type="linear", n_up_projection=3, weights_sharpness=1)),
    (C.DynamicAdapterFusionConfig, dict(dropout_prob=0.1, value_initialized="True")),
]


@pytest.mark.parametrize("factory, kwargs", ACCEPT, ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(ACCEPT)])
def test_accepts(factory, kwargs):
    cfg = factory(**kwargs)
    for key, value in kwargs.items():
        assert cfg[key] is value or cfg[key] == value


def test_explicit_reft_needs_required_fields():
    with pytest.raises(TypeError):
        C.ReftConfig(layers="all", prefix_positions=1, suffix_positions=0, r=1)
    cfg = C.ReftConfig(layers="all", prefix_positions=1, suffix_positions=0, r=1, orthogonality=False)
    assert cfg.subtract_projection is True
