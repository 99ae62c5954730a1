"""save_adapter / load_adapter / fusion directories: layout, round trips, and every rejection. Spec: IO-10..IO-12."""
import json
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.io.files import read_weights
from minadapters.tiny import write_tiny_model


@pytest.fixture()
def model(tmp_path):
    m = ma.AutoModel.from_pretrained(write_tiny_model(tmp_path / "bert", seed=2), seed=1)
    return m


@pytest.fixture()
def ids():
    rng = np.random.default_rng(3)
    return rng.integers(5, 40, size=(2, 6)), np.array([[1] * 6, [1] * 4 + [0] * 2])


def _perturb(model, name, seed=0):
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = d[leaf] + rng.normal(0, 0.1, d[leaf].shape).astype(np.float32)


@pytest.mark.spec("IO-10")
@pytest.mark.parametrize("use_safetensors", [False, True])
def test_round_trip_and_layout(model, ids, tmp_path, use_safetensors):
    model.add_adapter("a", config="double_seq_bn[use_gating=True, ln_before=True]")
    _perturb(model, "a")
    model.active_adapters = "a"
    want = model(input_ids=ids[0], attention_mask=ids[1]).last_hidden_state
    model.save_adapter(tmp_path / "a", "a", meta_dict={"config_id": "x"}, use_safetensors=use_safetensors)
    files = sorted(os.listdir(tmp_path / "a"))
    assert files == sorted(["adapter.safetensors" if use_safetensors else "pytorch_adapter.bin", "adapter_config.json"])
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["name"] == "a" and cfg["version"] == "adapters.1.3.0"
    assert cfg["model_class"] == "BertModel" and cfg["config_id"] == "x" and cfg["hidden_size"] == 32
    keys = read_weights(tmp_path / "a", prefer_safetensors=use_safetensors)
    assert "encoder.layer.1.attention.output.adapters.a.adapter_down.1.weight" in keys
    model.delete_adapter("a")
    assert model.load_adapter(tmp_path / "a", load_as="b", set_active=True) == "b"
    got = model(input_ids=ids[0], attention_mask=ids[1]).last_hidden_state
    np.testing.assert_array_equal(got, want)


def test_missing_directory_and_config(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        model.load_adapter(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        model.load_adapter(tmp_path / "empty")


def _saved(model, tmp_path, name="a", config="seq_bn", *, hand_edited=False):
    """Save and delete an adapter. hand_edited: drop our weights record (IO-14), as in a directory that
    adapters wrote, so that the tests below may replace the weights file by hand."""
    model.add_adapter(name, config=config)
    model.save_adapter(tmp_path / name, name)
    model.delete_adapter(name)
    if hand_edited:
        p = tmp_path / name / "adapter_config.json"
        cfg = json.loads(p.read_text())
        del cfg["minadapters_weights"]
        p.write_text(json.dumps(cfg))
    return tmp_path / name


@pytest.mark.spec("IO-10")
def test_model_type_mismatch_is_rejected(model, tmp_path):
    d = _saved(model, tmp_path)
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="gpt2"):
        model.load_adapter(d)
    assert "a" not in model.adapters_config


@pytest.mark.spec("IO-10")
def test_unexpected_and_missing_keys_are_rejected(model, tmp_path):
    d = _saved(model, tmp_path, hand_edited=True)
    from minadapters.io import load_torch_file, save_torch_file
    w = load_torch_file(d / "pytorch_adapter.bin")
    w["encoder.layer.0.output.adapters.a.extra"] = np.zeros(3, np.float32)
    save_torch_file(d / "pytorch_adapter.bin", w)
    with pytest.raises(ValueError, match="unexpected"):
        model.load_adapter(d)
    del w["encoder.layer.0.output.adapters.a.extra"]
    del w["encoder.layer.1.output.adapters.a.adapter_up.bias"]
    save_torch_file(d / "pytorch_adapter.bin", w)
    with pytest.raises(ValueError, match="missing"):
        model.load_adapter(d)
    assert "a" not in model.adapters_config, "a failed load must not leave the adapter behind"


@pytest.mark.spec("IO-10")
def test_misshapen_weights_are_rejected(model, tmp_path):
    d = _saved(model, tmp_path, hand_edited=True)
    from minadapters.io import load_torch_file, save_torch_file
    w = load_torch_file(d / "pytorch_adapter.bin")
    k = "encoder.layer.0.output.adapters.a.adapter_up.weight"
    w[k] = np.zeros((w[k].shape[0], w[k].shape[1] + 1), np.float32)
    save_torch_file(d / "pytorch_adapter.bin", w)
    with pytest.raises(ma.ShapeError, match="adapter_up.weight"):
        model.load_adapter(d)


def test_legacy_activation_rename(model, tmp_path):
    d = _saved(model, tmp_path, config="seq_bn[non_linearity='gelu']")
    cfg = json.loads((d / "adapter_config.json").read_text())
    del cfg["version"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    model.load_adapter(d)
    assert model.adapters_config.get("a")["non_linearity"] == "gelu_new"


def test_duplicate_name_is_rejected(model, tmp_path):
    d = _saved(model, tmp_path)
    model.add_adapter("a", config="seq_bn")
    with pytest.raises(ValueError, match="load_as"):
        model.load_adapter(d)


@pytest.mark.spec("IO-12")
def test_fusion_round_trip(model, ids, tmp_path):
    for n in "ab":
        model.add_adapter(n, config="seq_bn")
        _perturb(model, n, seed=ord(n))
    model.add_adapter_fusion(["a", "b"], "dynamic", set_active=True)
    rng = np.random.default_rng(5)
    for _, (d, leaf) in model.fusion_param_refs("a,b").items():
        d[leaf] = d[leaf] + rng.normal(0, 0.1, d[leaf].shape).astype(np.float32)
    want = model(input_ids=ids[0], attention_mask=ids[1]).last_hidden_state
    model.save_adapter_fusion(tmp_path / "f", ["a", "b"])
    assert sorted(os.listdir(tmp_path / "f")) == ["adapter_fusion_config.json", "pytorch_model_adapter_fusion.bin"]
    model.delete_adapter_fusion("a,b")
    assert model.active_adapters is None
    assert model.load_adapter_fusion(tmp_path / "f", set_active=True) == "a,b"
    np.testing.assert_array_equal(model(input_ids=ids[0], attention_mask=ids[1]).last_hidden_state, want)


def test_failed_write_leaves_no_file(model, tmp_path, monkeypatch):
    model.add_adapter("a", config="seq_bn")
    import minadapters.io.torch_save as ts

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ts, "_write_zip", boom)
    with pytest.raises(RuntimeError):
        model.save_adapter(tmp_path / "a", "a")
    # serialisation happens before the directory is touched (IO-14): nothing is created
    assert not (tmp_path / "a").exists(), sorted(os.listdir(tmp_path / "a"))
