"""Config families declare themselves to the base class (no import of subclasses from base.py). Spec: CFG-5."""
import dataclasses

import pytest

import minadapters.configuration as C
from minadapters.configuration.base import config_class_for, declare_presets


@pytest.mark.spec("CFG-5")
@pytest.mark.parametrize("architecture, cls", [
    (None, C.BnConfig), ("lora", C.LoRAConfig), ("mtl_lora", C.MTLLoRAConfig), ("prefix_tuning", C.PrefixTuningConfig),
    ("prompt_tuning", C.PromptTuningConfig), ("reft", C.ReftConfig), ("union", C.ConfigUnion)])
def test_each_family_rebuilds_as_its_declared_class(architecture, cls):
    assert config_class_for({"architecture": architecture}) is cls


@pytest.mark.spec("CFG-5")
def test_every_preset_round_trips_through_its_family():
    for name, preset in C.ADAPTER_CONFIG_MAP.items():
        rebuilt = C.AdapterConfig.load(preset.to_dict())
        assert isinstance(preset, type(rebuilt)), name
        assert rebuilt.to_dict() == preset.to_dict(), name


def test_a_second_class_for_one_family_is_refused():
    with pytest.raises(TypeError, match=r"architecture 'lora' already belongs to LoRAConfig"):
        @dataclasses.dataclass(eq=False)
        class OtherLoRA(C.AdapterConfig, family="lora"):
            r: int = 1


def test_presets_are_declared_once_and_read_only():
    with pytest.raises(RuntimeError, match="declared once"):
        declare_presets({"x": C.LoRAConfig()})
    with pytest.raises(TypeError):
        C.ADAPTER_CONFIG_MAP["x"] = C.LoRAConfig()
    assert "x" not in C.ADAPTER_CONFIG_MAP
