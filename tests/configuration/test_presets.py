"""Preset classes: fields, order and defaults (adapters 1.3.0). Spec: CFG-5."""

import dataclasses

import pytest

import minadapters.configuration as C

BN_DEFAULTS = {
    "original_ln_before": False, "original_ln_after": True, "ln_before": False, "ln_after": False,
    "init_weights": "bert", "init_weights_seed": None, "is_parallel": False, "scaling": 1.0,
    "use_gating": False, "residual_before_ln": True, "adapter_residual_before_ln": False,
    "inv_adapter": None, "inv_adapter_reduction_factor": None, "cross_adapter": False, "leave_out": [],
    "dropout": 0.0, "phm_layer": False, "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False,
    "shared_phm_rule": True, "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001,
    "learn_phm": True, "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True,
    "stochastic_depth": 0.0,
}
BN_ORDER = ["mh_adapter", "output_adapter", "reduction_factor", "non_linearity", *BN_DEFAULTS]

BN_PRESETS = {
    "SeqBnConfig": dict(original_ln_before=True, mh_adapter=False, output_adapter=True, non_linearity="relu", reduction_factor=16),
    "CompacterPlusPlusConfig": dict(original_ln_before=True, mh_adapter=False, output_adapter=True, non_linearity="gelu", reduction_factor=32, phm_layer=True),
    "SeqBnInvConfig": dict(original_ln_before=True, mh_adapter=False, output_adapter=True, non_linearity="relu", reduction_factor=16, inv_adapter="nice", inv_adapter_reduction_factor=2),
    "DoubleSeqBnConfig": dict(mh_adapter=True, output_adapter=True, non_linearity="swish", reduction_factor=16),
    "CompacterConfig": dict(mh_adapter=True, output_adapter=True, non_linearity="gelu", reduction_factor=32, phm_layer=True),
    "DoubleSeqBnInvConfig": dict(mh_adapter=True, output_adapter=True, non_linearity="swish", reduction_factor=16, inv_adapter="nice", inv_adapter_reduction_factor=2),
    "ParBnConfig": dict(mh_adapter=False, output_adapter=True, non_linearity="relu", reduction_factor=2, init_weights="mam_adapter", is_parallel=True, scaling=4.0),
    "AdapterPlusConfig": dict(original_ln_after=False, original_ln_before=True, residual_before_ln=False, stochastic_depth=0.1, init_weights="houlsby", scaling="channel", mh_adapter=False, output_adapter=True, reduction_factor=96, non_linearity="gelu"),
}

LORA_BASE = {
    "architecture": "lora", "selfattn_lora": True, "intermediate_lora": False, "output_lora": False, "leave_out": [],
    "r": 8, "alpha": 8, "dropout": 0.0, "attn_matrices": ["q", "v"], "composition_mode": "add", "init_weights": "lora",
    "init_weights_seed": None, "use_gating": False, "use_dora": False, "vera_d": None, "vera_b": None, "dtype": None,
}
LORA_PRESETS = {
    "LoRAConfig": {},
    "IA3Config": dict(intermediate_lora=True, r=1, alpha=1, attn_matrices=["k", "v"], composition_mode="scale", init_weights="ia3"),
    "VeraConfig": dict(vera_d=0.1, vera_b=0.0, init_weights="vera"),
    "DoRAConfig": dict(use_dora=True),
    "DvoRAConfig": dict(vera_d=0.1, vera_b=0.0, init_weights="vera", use_dora=True),
}
REFT_ORDER = ["layers", "prefix_positions", "suffix_positions", "r", "orthogonality", "tied_weights", "dropout",
              "non_linearity", "dtype", "architecture", "output_reft", "init_weights_seed"]


@pytest.mark.parametrize("name", list(BN_PRESETS))
def test_bottleneck_presets(name):
    cfg = getattr(C, name)()
    want = {**BN_DEFAULTS, **BN_PRESETS[name]}
    got = cfg.to_dict()
    assert list(got) == BN_ORDER, f"{name} field order {list(got)}"
    assert got == {k: want[k] for k in BN_ORDER}, f"{name}.to_dict()={got}"
    assert "architecture" not in got and cfg.architecture is None


def test_bnconfig_requires_four_fields():
    with pytest.raises(TypeError):
        C.BnConfig()
    cfg = C.BnConfig(mh_adapter=True, output_adapter=False, reduction_factor=4, non_linearity="relu")
    assert cfg.to_dict() == {**dict(mh_adapter=True, output_adapter=False, reduction_factor=4, non_linearity="relu"), **BN_DEFAULTS}


@pytest.mark.parametrize("name", list(LORA_PRESETS))
def test_lora_presets(name):
    got = getattr(C, name)().to_dict()
    assert list(got) == list(LORA_BASE)
    assert got == {**LORA_BASE, **LORA_PRESETS[name]}


def test_mtl_lora_fields():
    got = C.MTLLoRAConfig().to_dict()
    assert list(got) == list(LORA_BASE) + ["n_up_projection", "task_specific_matrix_type", "weights_sharpness"]
    assert got == {**LORA_BASE, "architecture": "mtl_lora", "n_up_projection": 1,
                   "task_specific_matrix_type": "singular_values", "weights_sharpness": 0.05}
    assert isinstance(C.MTLLoRAConfig(), C.MultiTaskConfig)
    assert isinstance(C.MTLLoRAConfig(), C.LoRAConfig)


def test_prefix_prompt_defaults():
    assert C.PrefixTuningConfig().to_dict() == {
        "architecture": "prefix_tuning", "encoder_prefix": True, "cross_prefix": True, "leave_out": [], "flat": False,
        "prefix_length": 30, "bottleneck_size": 512, "non_linearity": "tanh", "dropout": 0.0, "use_gating": False,
        "shared_gating": True, "init_weights_seed": None}
    p = C.PromptTuningConfig()
    assert p.to_dict() == {"architecture": "prompt_tuning", "prompt_length": 10, "prompt_init": "random_uniform",
                           "prompt_init_text": None, "combine": "prefix", "init_weights_seed": None}
    assert p.random_uniform_scale == 0.5 and "random_uniform_scale" not in p
    with pytest.raises(TypeError):
        C.PromptTuningConfig(random_uniform_scale=1.0)
    q = C.PromptTuningConfig.from_dict({"random_uniform_scale": 0.1})
    assert q["random_uniform_scale"] == 0.1 and "random_uniform_scale" not in q.to_dict()


@pytest.mark.parametrize("name, orth, subtract", [("LoReftConfig", True, True), ("NoReftConfig", False, True), ("DiReftConfig", False, False)])
def test_reft_presets(name, orth, subtract):
    cfg = getattr(C, name)()
    got = cfg.to_dict()
    assert list(got) == REFT_ORDER
    assert got == {"layers": "all", "prefix_positions": 3, "suffix_positions": 0, "r": 1, "orthogonality": orth,
                   "tied_weights": False, "dropout": 0.05, "non_linearity": None, "dtype": None,
                   "architecture": "reft", "output_reft": True, "init_weights_seed": None}
    assert cfg.subtract_projection is subtract and "subtract_projection" not in got


def test_direft_reload_turns_subtraction_on():
    # COMPAT(adapters): subtract_projection is a class attribute; the dict cannot carry it.
    reloaded = C.AdapterConfig.load(C.DiReftConfig().to_dict())
    assert type(reloaded) is C.ReftConfig and reloaded.subtract_projection is True


def test_fusion_presets():
    fields = ["key", "query", "value", "query_before_ln", "regularization", "residual_before", "temperature",
              "value_before_softmax", "value_initialized", "dropout_prob"]
    s, d = C.StaticAdapterFusionConfig().to_dict(), C.DynamicAdapterFusionConfig().to_dict()
    assert list(s) == fields == list(d)
    assert [s[f] for f in fields] == [True, True, False, False, False, False, False, True, False, None]
    assert [d[f] for f in fields] == [True, True, True, False, True, False, False, True, True, None]
    assert set(C.ADAPTERFUSION_CONFIG_MAP) == {"static", "dynamic"} and C.DEFAULT_ADAPTERFUSION_CONFIG == "dynamic"


def test_config_map_identifiers():
    want = {
        "pfeiffer": "SeqBnConfig", "houlsby": "DoubleSeqBnConfig", "parallel": "ParBnConfig",
        "scaled_parallel": "ParBnConfig", "pfeiffer+inv": "SeqBnInvConfig", "houlsby+inv": "DoubleSeqBnInvConfig",
        "seq_bn": "SeqBnConfig", "double_seq_bn": "DoubleSeqBnConfig", "par_bn": "ParBnConfig",
        "scaled_par_bn": "ParBnConfig", "seq_bn_inv": "SeqBnInvConfig", "double_seq_bn_inv": "DoubleSeqBnInvConfig",
        "compacter++": "CompacterPlusPlusConfig", "compacter": "CompacterConfig", "prefix_tuning": "PrefixTuningConfig",
        "prefix_tuning_flat": "PrefixTuningConfig", "prompt_tuning": "PromptTuningConfig", "mtl_lora": "MTLLoRAConfig",
        "lora": "LoRAConfig", "ia3": "IA3Config", "vera": "VeraConfig", "dora": "DoRAConfig", "dvora": "DvoRAConfig",
        "loreft": "LoReftConfig", "noreft": "NoReftConfig", "direft": "DiReftConfig", "mam": "MAMConfig",
        "unipelt": "UniPELTConfig",
    }
    assert {k: type(v).__name__ for k, v in C.ADAPTER_CONFIG_MAP.items()} == want
    assert C.ADAPTER_CONFIG_MAP["scaled_par_bn"].scaling == "learned"
    assert C.ADAPTER_CONFIG_MAP["prefix_tuning_flat"].flat is True
    assert C.DEFAULT_ADAPTER_CONFIG == "seq_bn"
    with pytest.raises(TypeError):
        C.ADAPTER_CONFIG_MAP["new"] = C.LoRAConfig()  # read-only view


def test_mam_and_unipelt():
    mam = C.MAMConfig()
    assert mam.prefix_tuning == C.PrefixTuningConfig(bottleneck_size=800) and mam.adapter == C.ParBnConfig()
    assert mam.to_dict()["architecture"] == "union"
    uni = C.UniPELTConfig()
    assert [type(c).__name__ for c in uni.configs] == ["PrefixTuningConfig", "SeqBnConfig", "LoRAConfig"]
    assert all(c.use_gating for c in uni.configs)
    assert uni[0].prefix_length == 10 and uni[2].r == 8 and uni[2].alpha == 2
    with pytest.raises(TypeError, match="PrefixTuningConfig"):
        C.MAMConfig(prefix_tuning=C.LoRAConfig())
    with pytest.raises(TypeError, match="BnConfig"):
        C.MAMConfig(adapter=C.LoRAConfig())


def test_every_class_is_a_dataclass_with_post_init_validation():
    for name in ["BnConfig", "LoRAConfig", "ReftConfig", "PrefixTuningConfig", "PromptTuningConfig", "AdapterFusionConfig"]:
        assert dataclasses.is_dataclass(getattr(C, name))
