"""Files as adapters 1.3.0 writes them after eject_prefix_tuning (flat weights, config flat: false) load; key
mismatches name the config field that probably disagrees. Spec: IO-13."""
import json
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.file_compat import ejected_prefix_config, key_mismatch_hint
from minadapters.tiny import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("compat")), seed=8)


def _ids():
    return np.random.default_rng(1).integers(5, 30, (2, 7))


def _set_config_field(path, **fields):
    p = os.path.join(path, "adapter_config.json")
    with open(p) as f:
        d = json.load(f)
    d["config"].update(fields)
    with open(p, "w") as f:
        json.dump(d, f)


@pytest.mark.spec("IO-13")
@pytest.mark.parametrize("config", ["prefix_tuning[prefix_length=5]", "mam"])
def test_upstream_style_ejected_prefix_file_loads(tiny, tmp_path, config):
    m = ma.AutoModel.from_pretrained(tiny, seed=0)
    m.add_adapter("p", config=config)
    refs = m.adapter_param_refs("p")
    rng = np.random.default_rng(2)
    for d, leaf in refs.values():
        d[leaf] = (d[leaf] + 0.1 * rng.standard_normal(d[leaf].shape)).astype(d[leaf].dtype)
    m.set_active_adapters("p")
    want = m(input_ids=_ids()).last_hidden_state
    m.eject_prefix_tuning("p")
    m.save_adapter(str(tmp_path / "p"), "p")
    # what adapters 1.3.0 writes: the same flat vectors, but the config still says flat: false
    p = os.path.join(tmp_path / "p", "adapter_config.json")
    with open(p) as f:
        d = json.load(f)
    members = d["config"]["configs"] if d["config"].get("architecture") == "union" else [d["config"]]
    for c in members:
        if c.get("architecture") == "prefix_tuning":
            c["flat"] = False
    with open(p, "w") as f:
        json.dump(d, f)
    fresh = ma.AutoModel.from_pretrained(tiny, seed=0)
    with pytest.warns(UserWarning, match="eject_prefix_tuning"):
        fresh.load_adapter(str(tmp_path / "p"), set_active=True)
    np.testing.assert_allclose(fresh(input_ids=_ids()).last_hidden_state, want, rtol=1e-5, atol=1e-6)


def test_ejected_recognition_leaves_other_configs_alone():
    cfg = {"architecture": "prefix_tuning", "flat": False}
    mlp = {"x.prefix_tunings.p.self_prefix.wte.weight": 0, "x.prefix_tunings.p.self_prefix.control_trans.0.weight": 0}
    assert ejected_prefix_config(cfg, mlp, "src") is cfg
    assert ejected_prefix_config({"architecture": "lora"}, {"a.control_trans": 0}, "src") == {"architecture": "lora"}
    flat = {"prefix_tuning.prefix_tunings.p.self_prefix.control_trans": 0}
    with pytest.warns(UserWarning):
        assert ejected_prefix_config(cfg, flat, "src")["flat"] is True
    assert cfg["flat"] is False, "the caller's dict must not change"


@pytest.mark.spec("IO-13")
def test_mismatched_keys_name_the_config_field(tiny, tmp_path):
    m = ma.AutoModel.from_pretrained(tiny, seed=0)
    m.add_adapter("a", config="seq_bn")
    m.save_adapter(str(tmp_path / "a"), "a")
    _set_config_field(str(tmp_path / "a"), mh_adapter=True)
    with pytest.raises(ma.WeightsError, match=r"missing.*probably disagrees.*`mh_adapter`"):
        ma.AutoModel.from_pretrained(tiny).load_adapter(str(tmp_path / "a"))
    m.add_adapter("l", config="lora")
    m.save_adapter(str(tmp_path / "l"), "l")
    _set_config_field(str(tmp_path / "l"), leave_out=[1])
    with pytest.raises(ma.WeightsError, match=r"`leave_out` \(layers only expected: -; only in the file: \['1'\]\)"):
        ma.AutoModel.from_pretrained(tiny).load_adapter(str(tmp_path / "l"))
    _set_config_field(str(tmp_path / "l"), leave_out=[], attn_matrices=["q", "k", "v"])
    with pytest.raises(ma.WeightsError, match=r"`attn_matrices` \('k'\)"):
        ma.AutoModel.from_pretrained(tiny).load_adapter(str(tmp_path / "l"))
    assert key_mismatch_hint([], []) == ""
