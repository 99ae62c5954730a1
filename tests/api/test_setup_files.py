"""Adapter setup directories and save_all_adapters / save_all_adapter_fusions (no torch). Spec: API-7."""
import json
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.configuration.strings import get_adapter_config_hash

IDS = np.array([[2, 5, 7, 9, 11, 3], [2, 6, 8, 3, 0, 0], [2, 9, 9, 4, 3, 0]])
MASK = (IDS != 0).astype(np.int64)


def perturb(model, name, seed=0):
    rng = np.random.default_rng(seed)
    for k, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.2, d[leaf].shape)).astype(d[leaf].dtype)


@pytest.fixture
def src(model):
    for i, n in enumerate(("a", "b")):
        model.add_adapter(n, "seq_bn[reduction_factor=4]")
        perturb(model, n, i)
    model.add_adapter_fusion(["a", "b"])
    model.add_adapter_fusion(["a", "b"], name="myfuse")
    for f in ("a,b", "myfuse"):
        for k, (d, leaf) in model.fusion_param_refs(f).items():
            d[leaf] = d[leaf] + np.float32(0.1)
    return model


SETUPS = {"Stack": ma.Stack("a", "b"), "Fuse": ma.Fuse("a", "b"), "Fuse-named": ma.Fuse("a", "b", name="myfuse"),
          "Parallel": ma.Parallel("a", "b"), "BatchSplit": ma.BatchSplit("a", "b", batch_sizes=[1, 2]),
          "Average": ma.Average("a", "b", weights=[1.0, 3.0]), "Stack-Fuse": ma.Stack("b", ma.Fuse("a", "b")),
          "name": "a"}


@pytest.mark.spec("API-7")
@pytest.mark.parametrize("kind", list(SETUPS))
def test_round_trip(src, tiny_dir, tmp_path, kind):
    setup = SETUPS[kind]
    d = str(tmp_path / "setup")
    src.save_adapter_setup(d, setup)
    with open(os.path.join(d, "adapter_setup.json")) as f:
        data = json.load(f)
    block = ma.parse_composition(setup)
    assert list(data) == ["adapter_setup", "head_setup", "version"]
    assert data["head_setup"] is None and data["version"] == "adapters.1.3.0"
    expected_dict = block.to_dict()
    if kind == "Fuse-named":
        expected_dict["kwargs"] = {"name": "myfuse"}
    assert data["adapter_setup"] == expected_dict
    folders = sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e)))
    fusions = {"Fuse": ["a,b"], "Fuse-named": ["myfuse"], "Stack-Fuse": ["a,b"]}.get(kind, [])
    assert folders == sorted(set(block.flatten()) | set(fusions))
    for fu in fusions:
        assert os.path.isfile(os.path.join(d, fu, "adapter_fusion_config.json"))
    fresh = ma.AutoModel.from_pretrained(tiny_dir, seed=5)
    loaded, head = fresh.load_adapter_setup(d, set_active=True)
    assert loaded == block and head is None and fresh.active_adapters == block
    src.active_adapters = block
    np.testing.assert_array_equal(fresh(IDS, MASK).last_hidden_state, src(IDS, MASK).last_hidden_state)


@pytest.mark.spec("API-7")
def test_not_active_unless_asked(src, tiny_dir, tmp_path):
    src.save_adapter_setup(str(tmp_path), ma.Stack("a", "b"), use_safetensors=True)
    assert os.path.isfile(tmp_path / "a" / "adapter.safetensors")
    fresh = ma.AutoModel.from_pretrained(tiny_dir)
    fresh.load_adapter_setup(str(tmp_path), use_safetensors=True)
    assert fresh.active_adapters is None and sorted(fresh.adapters_config) == ["a", "b"]


@pytest.mark.spec("API-7")
def test_unknown_adapter_writes_nothing(src, tmp_path):
    with pytest.raises(ma.CompositionError, match="zzz"):
        src.save_adapter_setup(str(tmp_path / "s"), ma.Stack("a", "zzz"))
    assert not os.path.exists(tmp_path / "s")
    with pytest.raises(ma.CompositionError):
        src.save_adapter_setup(str(tmp_path / "s"), ma.Fuse("a", "b", name="nofusion"))


@pytest.mark.spec("API-7")
def test_failed_load_rolls_back(src, tiny_dir, tmp_path):
    d = tmp_path / "s"
    src.save_adapter_setup(str(d), ma.Stack("a", ma.Fuse("a", "b")))
    os.remove(d / "a,b" / "adapter_fusion_config.json")
    fresh = ma.AutoModel.from_pretrained(tiny_dir)
    with pytest.raises(FileNotFoundError):
        fresh.load_adapter_setup(str(d))
    assert list(fresh.adapters_config) == [] and not fresh.adapters_config.fusions
    with pytest.raises(FileNotFoundError, match="adapter_setup.json"):
        fresh.load_adapter_setup(str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_setup.json").write_text('{"adapter_setup": "a"}')
    with pytest.raises(ValueError, match="adapter_setup"):
        fresh.load_adapter_setup(str(tmp_path / "bad"))


@pytest.mark.spec("API-7")
def test_existing_adapter_is_not_overwritten(src, tmp_path):
    src.save_adapter_setup(str(tmp_path), "a")
    with pytest.raises(ValueError, match="already exists"):
        src.load_adapter_setup(str(tmp_path))
    assert sorted(src.adapters_config) == ["a", "b"]


@pytest.mark.spec("API-7")
def test_head_setup_warns(src, tiny_dir, tmp_path):
    src.save_adapter_setup(str(tmp_path), "a")
    p = tmp_path / "adapter_setup.json"
    data = json.loads(p.read_text())
    data["head_setup"] = "a"
    p.write_text(json.dumps(data))
    fresh = ma.AutoModel.from_pretrained(tiny_dir)
    with pytest.warns(UserWarning, match="head setup"):
        _, head = fresh.load_adapter_setup(str(tmp_path))
    assert head == "a"


@pytest.mark.spec("API-7")
def test_save_all(src, tmp_path):
    meta = {"author": "me"}
    src.save_all_adapters(str(tmp_path / "ad"), meta_dict=meta)
    assert meta == {"author": "me"}                 # not mutated (upstream adds config_id to the caller's dict)
    for n in ("a", "b"):
        cfg = json.loads((tmp_path / "ad" / n / "adapter_config.json").read_text())
        assert cfg["config_id"] == get_adapter_config_hash(src.adapters_config.get(n)) and cfg["author"] == "me"
    src.save_all_adapter_fusions(str(tmp_path / "fu"))
    assert sorted(os.listdir(tmp_path / "fu")) == ["a,b", "myfuse"]
    cfg = json.loads((tmp_path / "fu" / "myfuse" / "adapter_fusion_config.json").read_text())
    assert cfg["config_id"] == get_adapter_config_hash(src.adapters_config.fusions["myfuse"][0])
