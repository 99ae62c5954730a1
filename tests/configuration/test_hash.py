"""get_adapter_config_hash. Spec: CFG-4."""

import pytest

import minadapters.configuration as C


def test_seq_bn_hash_matches_upstream_value():
    assert C.get_adapter_config_hash(C.SeqBnConfig()) == "9076f36a74755ac4"
    assert C.get_adapter_config_hash(C.SeqBnConfig().to_dict()) == "9076f36a74755ac4"


def test_length_and_determinism():
    h = C.get_adapter_config_hash(C.LoRAConfig(), length=40)
    assert len(h) == 40 and h.startswith(C.get_adapter_config_hash(C.LoRAConfig()))


def test_falsy_values_and_ignored_defaults_do_not_change_hash():
    base = {"architecture": "lora", "r": 8}
    h = C.get_adapter_config_hash(base)
    assert C.get_adapter_config_hash({**base, "leave_out": [], "dtype": None, "dropout": 0.0}) == h
    assert C.get_adapter_config_hash({**base, "phm_layer": True, "scaling": 1.0, "init_weights": "bert"}) == h
    assert C.get_adapter_config_hash({**base, "init_weights": "lora"}) != h
    assert C.get_adapter_config_hash({**base, "nested": {"a": 0, "b": 1}}) == C.get_adapter_config_hash({**base, "nested": {"b": 1}})
    # an all-falsy mapping is itself truthy, so it stays as {} (upstream behaviour)
    assert C.get_adapter_config_hash({**base, "nested": {"a": 0}}) != C.get_adapter_config_hash({**base, "nested": {}})


def test_ignore_params():
    assert C.get_adapter_config_hash({"r": 8, "alpha": 2}, ignore_params=["alpha"]) == C.get_adapter_config_hash({"r": 8})


def test_extra_attributes_enter_object_hash():
    cfg = C.LoRAConfig.from_dict({"note": "x"})
    assert C.get_adapter_config_hash(cfg) != C.get_adapter_config_hash(cfg.to_dict())


@pytest.mark.parametrize("name", ["mam", "unipelt"])
def test_union_object_hash_uses_prefixed_keys(name):
    u = C.ADAPTER_CONFIG_MAP[name]
    assert C.get_adapter_config_hash(u) != C.get_adapter_config_hash(u.to_dict())
