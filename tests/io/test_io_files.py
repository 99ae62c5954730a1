"""Atomic writes, our torch/safetensors writers, weight discovery. Spec: IO-2, IO-3, IO-6..IO-9."""

import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from minadapters.errors import WeightsError
from minadapters.io import (atomic_write, atomic_write_bytes, atomic_write_json, load_safetensors,
                            load_torch_file, read_model_weights, read_weights, save_safetensors,
                            save_torch_file, write_weights)
from minadapters.io.safetensors_io import (dumps_safetensors_bytes, loads_safetensors_bytes,
                                           read_safetensors_metadata)
from minadapters.io.torch_save import dumps_torch_bytes

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    out = {f"layer.{i}.{dt}": (rng.standard_normal((3, 5)) * 10).astype(dt) for i, dt in enumerate(DTYPES)}
    out["scalar"] = np.array(1.5, np.float32)
    out["empty"] = np.zeros((0, 7), np.float32)
    out["fortran"] = np.asfortranarray(rng.standard_normal((4, 6)))
    out["transposed"] = np.arange(12, dtype=np.float32).reshape(3, 4).T
    out["big_endian"] = np.arange(5, dtype=">f4")
    return out


def _same(got, want):
    assert set(got) == set(want), f"keys {sorted(got)} vs {sorted(want)}"
    for k, w in want.items():
        g = got[k]
        assert g.shape == w.shape and g.dtype == w.dtype.newbyteorder("="), f"{k}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        assert np.array_equal(g, w), k
        assert g.flags.c_contiguous and g.dtype.isnative, k


def _dir_listing(d):
    return sorted(os.listdir(d))


# ---- IO-2 atomic writes ---------------------------------------------------------------------

@pytest.mark.spec("IO-2")
def test_atomic_write_failure_leaves_nothing(tmp_path):
    dest = tmp_path / "pytorch_adapter.bin"

    def writer(fp):
        fp.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(dest, writer)
    assert _dir_listing(tmp_path) == [], "no destination and no temp file may remain"


@pytest.mark.spec("IO-2")
def test_atomic_write_failure_keeps_old_content_and_mode(tmp_path):
    dest = tmp_path / "adapter_config.json"
    dest.write_bytes(b"old")
    os.chmod(dest, 0o600)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(dest, lambda fp: (fp.write(b"new"), (_ for _ in ()).throw(KeyboardInterrupt()))[0])
    assert dest.read_bytes() == b"old" and _dir_listing(tmp_path) == ["adapter_config.json"]
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and os.stat(dest).st_mode & 0o777 == 0o600
    fresh = tmp_path / "fresh"
    atomic_write_bytes(fresh, b"x")
    assert os.stat(fresh).st_mode & 0o777 == 0o644


@pytest.mark.spec("IO-2")
def test_atomic_write_json_matches_adapters_format(tmp_path):
    obj = {"name": "a", "config": {"reduction_factor": 16, "architecture": "bottleneck"}, "hidden_size": None}
    path = tmp_path / "adapter_config.json"
    atomic_write_json(path, obj)
    assert path.read_text() == json.dumps(obj, indent=2, sort_keys=True)
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and _dir_listing(tmp_path) == ["adapter_config.json"]


@pytest.mark.spec("IO-2")
def test_failed_torch_save_validation_touches_nothing(tmp_path):
    with pytest.raises(WeightsError, match="complex64"):
        save_torch_file(tmp_path / "w.bin", {"a": np.zeros(2, np.complex64)})
    assert _dir_listing(tmp_path) == []


# ---- IO-3 / IO-6 our torch files ------------------------------------------------------------

@pytest.mark.spec("IO-6")
def test_torch_round_trip(tmp_path):
    arrays = _arrays()
    save_torch_file(tmp_path / "pytorch_adapter.bin", arrays)
    got = load_torch_file(tmp_path / "pytorch_adapter.bin")
    assert list(got) == list(arrays), "insertion order is kept"
    _same(got, arrays)


@pytest.mark.spec("IO-3")
def test_torch_zip_layout_and_alignment(tmp_path):
    path = tmp_path / "pytorch_adapter.bin"
    save_torch_file(path, {"a": np.ones(3, np.float32), "b": np.zeros(2, np.int64)})
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == ["pytorch_adapter/data.pkl", "pytorch_adapter/.format_version",
                         "pytorch_adapter/.storage_alignment", "pytorch_adapter/byteorder",
                         "pytorch_adapter/data/0", "pytorch_adapter/data/1", "pytorch_adapter/version",
                         "pytorch_adapter/.data/serialization_id"], names
        assert zf.read("pytorch_adapter/byteorder") == b"little"
        assert zf.read("pytorch_adapter/version") == b"3\n"
        assert len(zf.read("pytorch_adapter/.data/serialization_id")) == 40
        raw = path.read_bytes()
        for info in infos:
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
                int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            assert start % 64 == 0, f"{info.filename} data starts at {start}, not 64-aligned"


@pytest.mark.spec("IO-6")
def test_torch_save_is_reproducible():
    assert dumps_torch_bytes(_arrays()) == dumps_torch_bytes(_arrays())
    assert dumps_torch_bytes(_arrays(0)) != dumps_torch_bytes(_arrays(1))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
@pytest.mark.spec("IO-6")
def test_torch_and_safetensors_round_trip_property(data):
    n = data.draw(st.integers(0, 4), label="n_tensors")
    arrays = {}
    for i in range(n):
        dt = data.draw(st.sampled_from(DTYPES), label=f"dtype{i}")
        shape = tuple(data.draw(st.lists(st.integers(0, 4), max_size=3), label=f"shape{i}"))
        seed = data.draw(st.integers(0, 2**16), label=f"seed{i}")
        arrays[f"t{i}"] = (np.random.default_rng(seed).standard_normal(shape) * 50).astype(dt)
    note(f"arrays = {{{', '.join(f'{k!r}: np.zeros({a.shape}, {a.dtype.name!r})' for k, a in arrays.items())}}}")
    from minadapters.io.torch_pickle import loads_torch_bytes
    _same(loads_torch_bytes(dumps_torch_bytes(arrays)), arrays)
    _same(loads_safetensors_bytes(dumps_safetensors_bytes(arrays)), arrays)


# ---- IO-7 safetensors -----------------------------------------------------------------------

@pytest.mark.spec("IO-7")
def test_safetensors_round_trip_and_metadata(tmp_path):
    arrays = _arrays()
    path = tmp_path / "adapter.safetensors"
    save_safetensors(path, arrays)
    _same(load_safetensors(path), arrays)
    assert read_safetensors_metadata(path) == {"format": "pt"}
    from safetensors.numpy import load_file        # the package agrees with our parser
    _same(load_file(str(path)), arrays)


def _st_bytes(header, body=b""):
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


@pytest.mark.spec("IO-7")
def test_safetensors_bf16_is_widened():
    f = np.array([[1.0, -0.5], [3.140625, -np.inf]], np.float32)
    bits = (f.view(np.uint32) >> 16).astype("<u2")
    data = _st_bytes({"b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}, bits.tobytes())
    _same(loads_safetensors_bytes(data), {"b": f})


@pytest.mark.spec("IO-7")
@pytest.mark.parametrize("data,match", [
    (b"\x01\x02", "shorter than"),
    ((10**12).to_bytes(8, "little"), "implausible"),
    ((50).to_bytes(8, "little") + b"{}", "truncated"),
    ((2).to_bytes(8, "little") + b"[]", "JSON object"),
    (_st_bytes({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "truncated"),
    (_st_bytes({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16), "expected 16 bytes"),
    (_st_bytes({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "F8_E4M3"),
    (_st_bytes({"x": {"shape": [1]}}), "malformed"),
], ids=["short", "huge-header", "cut-header", "not-object", "cut-data", "bad-offsets", "fp8", "no-dtype"])
def test_safetensors_corrupt(data, match):
    with pytest.raises(WeightsError, match=match):
        loads_safetensors_bytes(data)


# ---- IO-8 / IO-9 discovery ------------------------------------------------------------------

@pytest.mark.spec("IO-8")
def test_read_weights_prefers_and_falls_back(tmp_path):
    a, b = {"x": np.ones(2, np.float32)}, {"x": np.zeros(2, np.float32)}
    with pytest.raises(FileNotFoundError) as ei:
        read_weights(tmp_path)
    assert str(tmp_path) in str(ei.value) and "pytorch_adapter.bin" in str(ei.value) \
        and "adapter.safetensors" in str(ei.value)
    assert write_weights(tmp_path, b, use_safetensors=True).endswith("adapter.safetensors")
    _same(read_weights(tmp_path), b)                         # only safetensors exists
    write_weights(tmp_path, a)
    _same(read_weights(tmp_path), a)                         # bin wins by default
    _same(read_weights(tmp_path, prefer_safetensors=True), b)
    write_weights(tmp_path, a, basename_bin="pytorch_model_head.bin")
    _same(read_weights(tmp_path, "pytorch_model_head.bin", "model_head.safetensors"), a)


@pytest.mark.spec("IO-9")
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("sharded", [False, True])
def test_read_model_weights(tmp_path, fmt, sharded):
    arrays = {"embeddings.word.weight": np.ones((3, 2), np.float32), "encoder.w": np.arange(4.0),
              "pooler.b": np.zeros(2, np.float16)}
    save = save_safetensors if fmt == "safetensors" else save_torch_file
    base = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    if sharded:
        stem, ext = base.split(".", 1)
        shard = [f"{stem}-0000{i}-of-00002.{ext}" for i in (1, 2)]
        keys = list(arrays)
        save(tmp_path / shard[0], {k: arrays[k] for k in keys[:2]})
        save(tmp_path / shard[1], {k: arrays[k] for k in keys[2:]})
        weight_map = {k: shard[0] if i < 2 else shard[1] for i, k in enumerate(keys)}
        atomic_write_json(tmp_path / f"{base}.index.json", {"metadata": {}, "weight_map": weight_map})
    else:
        save(tmp_path / base, arrays)
    _same(read_model_weights(tmp_path), arrays)


@pytest.mark.spec("IO-9")
def test_read_model_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_model_weights(tmp_path)
    save_safetensors(tmp_path / "s1.safetensors", {"a": np.ones(1, np.float32)})
    atomic_write_json(tmp_path / "model.safetensors.index.json", {"weight_map": {"a": "s1.safetensors",
                                                                                 "b": "s1.safetensors"}})
    with pytest.raises(WeightsError, match="'b' should be in shard"):
        read_model_weights(tmp_path)
    atomic_write_json(tmp_path / "model.safetensors.index.json", {"weight_map": {"a": "../s1.safetensors"}})
    with pytest.raises(WeightsError, match="plain file name"):
        read_model_weights(tmp_path)
