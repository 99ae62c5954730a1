"""Configs against the oracle, adapters 1.3.0. Spec: CFG-1..CFG-5."""

import json

import pytest

adapters = pytest.importorskip("adapters", reason="oracle: adapters 1.3.0 not installed")
from adapters.utils import get_adapter_config_hash as upstream_hash  # noqa: E402

import minadapters.configuration as C  # noqa: E402

pytestmark = pytest.mark.upstream


def norm(d):
    """JSON-normalised dict (tuples -> lists), keeping key order out of the comparison."""
    return json.loads(json.dumps(d))


@pytest.mark.parametrize("key", sorted(adapters.ADAPTER_CONFIG_MAP))
def test_adapter_map_entry(key):
    theirs, ours = adapters.ADAPTER_CONFIG_MAP[key], C.ADAPTER_CONFIG_MAP[key]
    assert type(ours).__name__ == type(theirs).__name__
    assert norm(ours.to_dict()) == norm(theirs.to_dict()), f"[{key}] to_dict differs"
    assert list(ours.to_dict()) == list(theirs.to_dict()), f"[{key}] field order differs"
    assert list(ours) == list(theirs), f"[{key}] Mapping iteration differs"
    assert C.get_adapter_config_hash(ours) == upstream_hash(theirs), f"[{key}] object hash differs"
    assert C.get_adapter_config_hash(ours.to_dict()) == upstream_hash(theirs.to_dict()), f"[{key}] dict hash differs"


def test_map_keys_and_defaults():
    assert set(C.ADAPTER_CONFIG_MAP) == set(adapters.ADAPTER_CONFIG_MAP)
    assert C.DEFAULT_ADAPTER_CONFIG == adapters.DEFAULT_ADAPTER_CONFIG
    assert set(C.ADAPTERFUSION_CONFIG_MAP) == set(adapters.ADAPTERFUSION_CONFIG_MAP)
    assert C.DEFAULT_ADAPTERFUSION_CONFIG == adapters.DEFAULT_ADAPTERFUSION_CONFIG


@pytest.mark.parametrize("key", sorted(adapters.ADAPTERFUSION_CONFIG_MAP))
def test_fusion_map_entry(key):
    theirs, ours = adapters.ADAPTERFUSION_CONFIG_MAP[key], C.ADAPTERFUSION_CONFIG_MAP[key]
    assert type(ours).__name__ == type(theirs).__name__
    assert list(ours.to_dict().items()) == list(theirs.to_dict().items())
    assert C.get_adapter_config_hash(ours) == upstream_hash(theirs)


@pytest.mark.parametrize("name", ["AdapterPlusConfig", "BnConfig", "ReftConfig", "AdapterFusionConfig"])
def test_classes_outside_the_map_have_same_fields(name):
    import dataclasses

    theirs = [(f.name, f.default) for f in dataclasses.fields(getattr(adapters, name))]
    ours = [(f.name, f.default) for f in dataclasses.fields(getattr(C, name))]
    assert ours == theirs


STRINGS = [
    "seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "compacter", "compacter++", "seq_bn_inv", "pfeiffer+inv",
    "prefix_tuning", "prefix_tuning_flat", "prompt_tuning", "lora", "ia3", "vera", "dora", "dvora", "mtl_lora",
    "loreft", "noreft", "direft", "mam", "unipelt", "mam[]",
    "lora[r=4]", "lora[r=4, alpha=16, attn_matrices=['q','k','v']]", "lora[dropout=0.1,intermediate_lora=True]",
    "ia3[alpha=2.0]", "vera[r=16, vera_d=0.5]", "dora[r=2, dtype='float32']", "mtl_lora[n_up_projection=3]",
    "seq_bn[reduction_factor=2]", "seq_bn[reduction_factor={'1': 8, 'default': 16}]",
    "seq_bn[leave_out=[0, 1], ln_after=True]", "double_seq_bn[non_linearity='gelu', scaling=0.5]",
    "par_bn[scaling='learned']", "compacter[phm_dim=8, phm_rank=2]", "seq_bn[inv_adapter='glow', inv_adapter_reduction_factor=4]",
    "prefix_tuning[prefix_length=5, bottleneck_size=64]", "prompt_tuning[prompt_length=3, combine='prefix_after_bos']",
    "loreft[r=2, layers=[0, 1], suffix_positions=1]",
    "par_bn[reduction_factor=2]|prefix_tuning[bottleneck_size=800]", "lora|prefix_tuning|seq_bn|loreft",
    "ia3|direft", "seq_bn[leave_out=[0]]|seq_bn", "double_seq_bn[output_adapter=False]|seq_bn[mh_adapter=False]",
]


def _load_both(spec, **kwargs):
    return C.AdapterConfig.load(spec, **kwargs), adapters.AdapterConfig.load(spec, **kwargs)


@pytest.mark.parametrize("spec", STRINGS)
def test_load_strings_agree(spec):
    ours, theirs = _load_both(spec)
    assert type(ours).__name__ == type(theirs).__name__
    assert norm(ours.to_dict()) == norm(theirs.to_dict())
    assert C.get_adapter_config_hash(ours) == upstream_hash(theirs)


REJECTED = [
    "seq_bn|double_seq_bn", "seq_bn|seq_bn", "lora|ia3", "lora|vera", "prefix_tuning|prefix_tuning_flat",
    "loreft|noreft", "mam|lora", "unipelt|seq_bn", "double_seq_bn[mh_adapter=False]|seq_bn[output_adapter=False]",
    "nope", "seq_bn [x=1]", "lora[foo=1]", "lora[r=x]", "lora[4]", "|", "seq_bn]", "lora[r=2",
    "prompt_tuning[prompt_init_text='a=b']",
]


@pytest.mark.parametrize("spec", REJECTED)
def test_load_strings_both_reject(spec):
    with pytest.raises(Exception) as theirs:
        adapters.AdapterConfig.load(spec)
    with pytest.raises(Exception) as ours:
        C.AdapterConfig.load(spec)
    # ours subclasses the builtin upstream raises
    assert isinstance(ours.value, type(theirs.value)), f"upstream {theirs.value!r}, ours {ours.value!r}"


def _pairs():
    import itertools

    keys = ["seq_bn", "double_seq_bn", "par_bn", "compacter", "prefix_tuning", "prompt_tuning", "lora", "ia3",
            "vera", "mtl_lora", "loreft", "direft"]
    return list(itertools.combinations(keys, 2)) + [(k, k) for k in keys]


@pytest.mark.parametrize("a, b", _pairs())
def test_union_validation_agrees(a, b):
    def build(mod, union):
        return union(mod.ADAPTER_CONFIG_MAP[a], mod.ADAPTER_CONFIG_MAP[b])

    try:
        build(adapters, adapters.ConfigUnion)
        upstream_ok = True
    except (TypeError, ValueError):
        upstream_ok = False
    if upstream_ok:
        build(C, C.ConfigUnion)
    else:
        with pytest.raises((TypeError, ValueError)):
            build(C, C.ConfigUnion)


@pytest.mark.parametrize("cfg", ["lora", "ia3", "direft", "unipelt", "mam", "compacter", "prompt_tuning"])
def test_dict_reload_class_agrees(cfg):
    ours, theirs = _load_both(C.ADAPTER_CONFIG_MAP[cfg].to_dict())
    assert type(ours).__name__ == type(theirs).__name__
    assert norm(ours.to_dict()) == norm(theirs.to_dict())


def test_load_kwargs_agree():
    ours, theirs = _load_both("lora", r=2, alpha=None, leave_out=[1])
    assert norm(ours.to_dict()) == norm(theirs.to_dict())
    with pytest.warns(UserWarning):
        ours = C.AdapterConfig.load("mam", leave_out=[0])
    theirs = adapters.AdapterConfig.load("mam", leave_out=[0])
    assert norm(ours.to_dict()) == norm(theirs.to_dict())


def test_json_file_agrees(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"config": adapters.LoRAConfig(r=2).to_dict(), "model_name": "x"}))
    ours, theirs = _load_both(str(path))
    assert norm(ours.to_dict()) == norm(theirs.to_dict())


@pytest.mark.parametrize("spec, kwargs", [("dynamic", {}), ("static", {"temperature": True}),
                                          ("static[temperature=True]", {}), ("dynamic", {"dropout_prob": 0.1})])
def test_fusion_load_agrees(spec, kwargs):
    ours = C.AdapterFusionConfig.load(spec, **kwargs)
    theirs = adapters.AdapterFusionConfig.load(spec, **kwargs)
    assert type(ours).__name__ == type(theirs).__name__ == "AdapterFusionConfig"
    assert ours.to_dict() == theirs.to_dict()


def test_legacy_invertible_adapter_agrees():
    d = {**adapters.SeqBnConfig().to_dict(), "invertible_adapter": {"block_type": "nice", "reduction_factor": 4}}
    ours, theirs = _load_both(dict(d))
    assert ours.to_dict() == theirs.to_dict()
