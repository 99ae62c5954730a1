"""AdapterConfig object model: Mapping, immutability, to_dict/replace/from_dict, unions. Spec: CFG-5, CFG-3."""

import dataclasses

import pytest

import minadapters.configuration as C
from minadapters.errors import ConfigError, ConfigTypeError


def test_abstract_base():
    with pytest.raises(TypeError, match="abstract"):
        C.AdapterConfig()
    with pytest.raises(TypeError, match="abstract"):
        C.MultiTaskConfig()


def test_mapping_interface():
    cfg = C.LoRAConfig(r=4)
    assert cfg["r"] == 4 and cfg.get("r") == 4 and cfg.get("missing", 7) == 7
    assert list(cfg) == list(cfg.to_dict()) and len(cfg) == len(cfg.to_dict())
    with pytest.raises(KeyError):
        cfg["missing"]


def test_pseudo_immutable():
    cfg = C.SeqBnConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.reduction_factor = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del cfg.reduction_factor
    cfg.custom = 1  # new attributes are allowed ...
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.custom = 2  # ... once
    assert cfg["custom"] == 1 and "custom" in list(cfg) and "custom" not in cfg.to_dict()


def test_eq_and_unhashable():
    assert C.SeqBnConfig() == C.SeqBnConfig()
    assert C.SeqBnConfig() != C.SeqBnConfig(reduction_factor=8)
    assert C.LoRAConfig() != {"r": 8}
    with pytest.raises(TypeError):
        hash(C.LoRAConfig())


def test_replace():
    cfg = C.LoRAConfig().replace(r=4, alpha=16)
    assert type(cfg) is C.LoRAConfig and (cfg.r, cfg.alpha) == (4, 16)
    with pytest.raises(TypeError, match=r"LoRAConfig has no field 'rank'.*allowed fields: architecture"):
        C.LoRAConfig().replace(rank=4)
    with pytest.raises(ConfigError, match="r: got 0"):
        C.LoRAConfig().replace(r=0)


def test_from_dict_extras_and_required():
    cfg = C.LoRAConfig.from_dict({"r": 2, "note": "hi"})
    assert cfg.r == 2 and cfg["note"] == "hi" and "note" not in cfg.to_dict()
    assert C.LoRAConfig.from_dict(cfg) is cfg
    with pytest.raises(TypeError, match="missing required field.*'mh_adapter'"):
        C.BnConfig.from_dict({"output_adapter": True, "reduction_factor": 2, "non_linearity": "relu"})
    with pytest.raises(TypeError, match="expected a dict"):
        C.LoRAConfig.from_dict([("r", 2)])


def test_legacy_invertible_adapter():
    d = C.SeqBnConfig().to_dict()
    d["invertible_adapter"] = {"block_type": "glow", "reduction_factor": 4}
    cfg = C.AdapterConfig.load(d)
    assert type(cfg) is C.BnConfig and (cfg.inv_adapter, cfg.inv_adapter_reduction_factor) == ("glow", 4)
    assert "invertible_adapter" not in cfg
    d["invertible_adapter"] = None  # falsy: ignored
    assert C.AdapterConfig.load(d).inv_adapter is None
    with pytest.raises(TypeError):
        C.SeqBnConfig(invertible_adapter={"block_type": "nice", "reduction_factor": 2})
    d["invertible_adapter"] = {"block_type": "real-nvp", "reduction_factor": 2}
    with pytest.raises(ConfigError, match="block_type.*'real-nvp'.*'nice', 'glow'"):
        C.AdapterConfig.load(d)
    d["invertible_adapter"] = {"type": "nice"}
    with pytest.raises(ConfigError, match="block_type"):
        C.AdapterConfig.load(d)


@pytest.mark.parametrize("cls, arch", [
    (C.IA3Config, C.LoRAConfig), (C.VeraConfig, C.LoRAConfig), (C.DoRAConfig, C.LoRAConfig), (C.DvoRAConfig, C.LoRAConfig),
    (C.LoReftConfig, C.ReftConfig), (C.NoReftConfig, C.ReftConfig), (C.SeqBnConfig, C.BnConfig),
    (C.MTLLoRAConfig, C.MTLLoRAConfig), (C.PrefixTuningConfig, C.PrefixTuningConfig),
    (C.PromptTuningConfig, C.PromptTuningConfig), (C.MAMConfig, C.ConfigUnion), (C.UniPELTConfig, C.ConfigUnion),
])
def test_dict_round_trip_class_by_architecture(cls, arch):
    cfg = cls()
    back = C.AdapterConfig.load(cfg.to_dict())
    assert type(back) is arch and back.to_dict() == cfg.to_dict()


def test_unknown_architecture():
    with pytest.raises(KeyError, match="unknown adapter architecture 'bottleneck'"):
        C.AdapterConfig.load({"architecture": "bottleneck"})
    with pytest.raises(ConfigError):
        C.AdapterConfig.load({"architecture": "adapterdrop"})


class TestUnion:
    def test_indexing_iteration(self):
        u = C.ConfigUnion(C.LoRAConfig(r=4), C.PrefixTuningConfig())
        assert u[0].r == 4 and u["0.r"] == 4 and u["1.prefix_length"] == 30 and u["architecture"] == "union"
        assert list(u)[0] == "0.architecture" and len(u) == len(u[0]) + len(u[1])
        assert u.get("nope") is None
        with pytest.raises(KeyError):
            u["5.r"]
        assert u.to_dict() == {"architecture": "union", "configs": [u[0].to_dict(), u[1].to_dict()]}

    def test_replace_every_child(self):
        u = C.ConfigUnion(C.LoRAConfig(), C.PrefixTuningConfig()).replace(use_gating=True)
        assert type(u) is C.ConfigUnion and all(c.use_gating for c in u.configs)
        with pytest.raises(TypeError, match="PromptTuningConfig has no field 'use_gating'"):
            C.ConfigUnion(C.LoRAConfig(), C.PromptTuningConfig()).replace(use_gating=True)
        assert type(C.MAMConfig().replace(dropout=0.1)) is C.ConfigUnion

    def test_from_dict(self):
        d = C.ConfigUnion(C.IA3Config(), C.SeqBnConfig()).to_dict()
        u = C.ConfigUnion.from_dict(d)
        assert [type(c) for c in u.configs] == [C.LoRAConfig, C.BnConfig] and u.to_dict() == d
        with pytest.raises(TypeError, match="'configs' list"):
            C.ConfigUnion.from_dict({"architecture": "union"})

    def test_eq_includes_length(self):
        a = C.ConfigUnion(C.LoRAConfig())
        assert a == C.ConfigUnion(C.LoRAConfig())
        assert a != C.ConfigUnion(C.LoRAConfig(), C.PrefixTuningConfig())  # adapters says equal (zip)

    @pytest.mark.parametrize("configs, exc, pattern", [
        ((C.LoRAConfig(), {"r": 2}), TypeError, r"item 1 is \{'r': 2\}.*not an instance of AdapterConfig"),
        ((C.LoRAConfig(), C.MAMConfig()), TypeError, "item 1 is a MAMConfig; a union is not supported"),
        ((C.LoRAConfig(), C.IA3Config()), ValueError, "same adapter architecture 'lora'"),
        ((C.LoRAConfig(), C.VeraConfig()), ValueError, "same adapter architecture"),
        ((C.PrefixTuningConfig(), C.PrefixTuningConfig(flat=True)), ValueError, "'prefix_tuning'"),
        ((C.SeqBnConfig(), C.SeqBnConfig()), ValueError, "must differ in both mh_adapter and output_adapter"),
        ((C.SeqBnConfig(), C.DoubleSeqBnConfig()), ValueError, "mh_adapter False/True, output_adapter True/True"),
        ((C.LoReftConfig(), C.NoReftConfig()), ValueError, "'reft'"),
    ])
    def test_validate_rejects(self, configs, exc, pattern):
        with pytest.raises(exc, match=pattern):
            C.ConfigUnion(*configs)

    @pytest.mark.parametrize("configs", [
        (C.LoRAConfig(), C.PrefixTuningConfig(), C.SeqBnConfig(), C.LoReftConfig()),
        (C.LoRAConfig(leave_out=[0]), C.IA3Config()),
        (C.SeqBnConfig(), C.SeqBnConfig(leave_out=[1])),
        (C.DoubleSeqBnConfig(mh_adapter=True, output_adapter=False), C.SeqBnConfig(mh_adapter=False, output_adapter=True)),
        (C.MTLLoRAConfig(), C.LoRAConfig()),
        (),
    ])
    def test_validate_accepts(self, configs):
        assert len(C.ConfigUnion(*configs).configs) == len(configs)
