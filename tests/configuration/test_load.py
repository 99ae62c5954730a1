"""AdapterConfig.load / AdapterFusionConfig.load resolution order and config strings. Spec: CFG-1, CFG-2."""

import json

import pytest

import minadapters.configuration as C
from minadapters.errors import ConfigError, ConfigTypeError


@pytest.mark.parametrize("value", [None, "", {}])
def test_falsy_gives_none(value):
    assert C.AdapterConfig.load(value) is None


def test_dict_and_instance():
    d = {"architecture": "lora", "r": 4}
    cfg = C.AdapterConfig.load(d, alpha=16, dropout=None)
    assert type(cfg) is C.LoRAConfig and (cfg.r, cfg.alpha, cfg.dropout) == (4, 16, 0.0)
    assert d == {"architecture": "lora", "r": 4}  # the caller's dict is not mutated
    ia3 = C.AdapterConfig.load(C.IA3Config(), leave_out=[1])
    assert type(ia3) is C.IA3Config and ia3.leave_out == [1]


def test_identifier_returns_preset_and_overrides():
    assert C.AdapterConfig.load("seq_bn") == C.SeqBnConfig()
    assert type(C.AdapterConfig.load("pfeiffer")) is C.SeqBnConfig
    assert C.AdapterConfig.load("par_bn", reduction_factor=8).reduction_factor == 8
    assert C.LoRAConfig.load("ia3") == C.IA3Config()  # the class used for load does not matter


def test_union_overrides_are_ignored_with_warning():
    with pytest.warns(UserWarning, match="ignored for a config union"):
        mam = C.AdapterConfig.load(C.MAMConfig(), leave_out=[0])
    assert type(mam) is C.MAMConfig and mam[0].leave_out == [] and mam[1].leave_out == []


@pytest.mark.parametrize("nested", [True, False])
def test_json_path(tmp_path, nested):
    d = C.LoRAConfig(r=2).to_dict()
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"config": d, "name": "x"} if nested else d))
    for spec in (str(path), path):
        cfg = C.AdapterConfig.load(spec, alpha=4)
        assert type(cfg) is C.LoRAConfig and (cfg.r, cfg.alpha) == (2, 4)


def test_json_path_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json.*could not be read as JSON"):
        C.AdapterConfig.load(str(bad))
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ConfigTypeError, match="holds a list; expected a JSON object"):
        C.AdapterConfig.load(str(lst))
    with pytest.raises(ConfigError, match="not an existing file"):
        C.AdapterConfig.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not an existing file either"):
        C.AdapterConfig.load(str(tmp_path / "missing.json"))


def test_force_download_skips_local_map():
    with pytest.raises(ConfigError, match="local map is skipped"):
        C.AdapterConfig.load("lora", download_kwargs={"force_download": True})
    assert C.AdapterConfig.load("lora", download_kwargs={"force_download": False}) == C.LoRAConfig()


def test_non_string_specifier():
    with pytest.raises(TypeError, match="expected a dict, a config object, an identifier"):
        C.AdapterConfig.load(42)


class TestStrings:
    def test_single_with_kwargs(self):
        cfg = C.AdapterConfig.load("lora[r=4, attn_matrices=['q','k','v'], dropout=0.1]")
        assert type(cfg) is C.LoRAConfig and cfg.r == 4 and cfg.attn_matrices == ["q", "k", "v"] and cfg.dropout == 0.1

    def test_union(self):
        u = C.AdapterConfig.load("par_bn[reduction_factor=2]|prefix_tuning[bottleneck_size=800]")
        assert type(u) is C.ConfigUnion
        assert type(u[0]) is C.ParBnConfig and u[0].reduction_factor == 2 and u[1].bottleneck_size == 800

    def test_union_keeps_child_classes(self):
        u = C.AdapterConfig.load("ia3|direft")
        assert [type(c) for c in u.configs] == [C.IA3Config, C.DiReftConfig]

    def test_mapping_value(self):
        cfg = C.AdapterConfig.load("seq_bn[reduction_factor={'1': 8, 'default': 16}]")
        assert cfg.reduction_factor == {"1": 8, "default": 16}

    def test_literals(self):
        cfg = C.AdapterConfig.load("seq_bn[scaling=0.5, leave_out=(0, 1), init_weights_seed=None, ln_after=True]")
        assert (cfg.scaling, cfg.leave_out, cfg.init_weights_seed, cfg.ln_after) == (0.5, (0, 1), None, True)
        assert C.AdapterConfig.load("prompt_tuning[prompt_init_text='hi there', prompt_init='from_string']").prompt_init_text == "hi there"

    def test_empty_brackets_give_plain_union_for_mam(self):
        assert type(C.AdapterConfig.load("mam[]")) is C.ConfigUnion
        assert type(C.AdapterConfig.load("mam")) is C.MAMConfig

    def test_parse_function(self):
        assert C.parse_adapter_config_string("lora[r=2]|seq_bn") == [("lora", {"r": 2}), ("seq_bn", {})]

    @pytest.mark.parametrize("text, exc, pattern", [
        ("nope", ValueError, r"Could not identify 'nope'.*Known identifiers: compacter, compacter\+\+"),
        ("lora|nope[r=2]", ValueError, r"'nope' .*in 'lora\|nope\[r=2\]'"),
        ("seq_bn [reduction_factor=2]", ValueError, "no spaces are allowed between the name and"),
        ("|", ValueError, "Invalid adapter config string format: chunk ''"),
        ("seq_bn[reduction_factor=2", ValueError, r"chunk 'seq_bn\[reduction_factor=2'.*name\[key=value"),
        ("seq_bn]", ValueError, "Invalid adapter config string format"),
        ("lora[r=x]", ValueError, r"'r=x' in chunk 'lora\[r=x\]': a value is not a Python literal"),
        ("lora[r=4,,]", ValueError, "syntax error"),
        ("prompt_tuning[prompt_init_text='a=b']", ValueError, "an '=' inside a quoted value is not supported"),
        ("lora[4]", TypeError, "got a set, expected key=value pairs"),
        ("lora[rank=4]", TypeError, "LoRAConfig has no field 'rank'"),
        ("lora[r=0]", ValueError, r"LoRAConfig.r: got 0; expected an int >= 1"),
        ("par_bn[scaling=2]", ValueError, r"ParBnConfig.scaling: got 2 \(int\); expected a float \(write 2.0\)"),
        ("seq_bn|double_seq_bn", ValueError, "cannot be combined"),
        ("mam|lora", TypeError, "union is not supported in a config union"),
        ("lora[r=__import__('os')]", ValueError, "not a Python literal"),
    ])
    def test_errors(self, text, exc, pattern):
        with pytest.raises(exc, match=pattern):
            C.AdapterConfig.load(text)


class TestFusionLoad:
    def test_identifiers_and_overrides(self):
        cfg = C.AdapterFusionConfig.load("dynamic", temperature=True)
        assert type(cfg) is C.AdapterFusionConfig and cfg.temperature is True and cfg.value is True
        assert C.AdapterFusionConfig.load("static[temperature=True]").temperature is True
        assert C.AdapterFusionConfig.load(C.StaticAdapterFusionConfig()).to_dict() == C.StaticAdapterFusionConfig().to_dict()

    def test_dict_and_none_kwargs_kept(self):
        d = {**C.DynamicAdapterFusionConfig().to_dict(), "dropout_prob": 0.1}
        assert C.AdapterFusionConfig.load(d, dropout_prob=None).dropout_prob is None  # all kwargs, as upstream

    def test_errors(self):
        with pytest.raises(ValueError, match=r"'fancy' as a valid AdapterFusion configuration.*dynamic, static"):
            C.AdapterFusionConfig.load("fancy")
        with pytest.raises(TypeError, match="missing required field"):
            C.AdapterFusionConfig.load({"key": True})
        with pytest.raises(TypeError):
            C.AdapterFusionConfig.load(None)
