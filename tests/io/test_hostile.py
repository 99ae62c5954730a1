"""Hostile inputs from issue 12, one test per finding: no crash, no hang, no blow-up, one error
vocabulary, accepted means sane, atomic directories, a concurrency contract.

Spec: IO-13 .. IO-17, API-2, IO-18."""
import io
import json
import os
import pickle
import resource
import struct
import threading
import time
import zipfile

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import AdapterError, CompositionError, ConfigError, ConfigTypeError, ShapeError, WeightsError
from minadapters.io.safetensors_io import loads_safetensors_bytes
from minadapters.io.torch_pickle import LIMITS, loads_torch_bytes
from minadapters.jsonio import MAX_JSON_DEPTH, loads_json, read_json
from minadapters.tiny import write_tiny_model

P2 = pickle.PROTO + b"\x02"


def _glob(m, n):
    return pickle.GLOBAL + f"{m}\n{n}\n".encode()


def _long(n):
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _str(s):
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


ODICT = _glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _view_pickle(numel, size, stride, offset=0):
    pid = (pickle.MARK + _str("storage") + _glob("torch", "FloatStorage") + _str("0") + _str("cpu") + _long(numel)
           + pickle.TUPLE + pickle.BINPERSID)
    args = (pickle.MARK + pid + _long(offset) + pickle.MARK + b"".join(map(_long, size)) + pickle.TUPLE
            + pickle.MARK + b"".join(map(_long, stride)) + pickle.TUPLE + pickle.NEWFALSE + ODICT + pickle.TUPLE)
    return (P2 + ODICT + pickle.MARK + _str("w") + _glob("torch._utils", "_rebuild_tensor_v2") + args
            + pickle.REDUCE + pickle.SETITEMS + pickle.STOP)


def _zip(pkl, storages=None, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for k, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{k}", raw)
    return buf.getvalue()


def _legacy(obj_pkl, keys_pkl, tail=b""):
    return (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
            + pickle.dumps({"little_endian": True}, protocol=2) + obj_pkl + keys_pkl + tail)


class _MemoryCap:
    """RLIMIT_AS = current address space + `mib` for the with-block (the fuzz campaign's budget)."""

    def __init__(self, mib=256):
        self.mib = mib

    def __enter__(self):
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        self.old = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + (self.mib << 20), self.old[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_AS, self.old)


# ---- 1. crashes: nesting that used to recurse without limit ------------------------------------------

@pytest.mark.spec("IO-15")
def test_deep_tuple_dict_key_is_refused_quickly():
    """~1 MB pickle: a dict key that is a tuple nested 10^6 deep (hashing it crashed the process)."""
    deep = P2 + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 10 ** 6 + pickle.NONE + pickle.SETITEM + pickle.STOP
    t = time.perf_counter()
    with pytest.raises(WeightsError, match="nest deeper than"):
        loads_torch_bytes(_zip(deep))
    assert time.perf_counter() - t < 5
    keys = P2 + pickle.EMPTY_LIST + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 10 ** 5 + pickle.APPEND + pickle.STOP
    with pytest.raises(WeightsError, match="nest deeper than"):      # the legacy key list holding one
        loads_torch_bytes(_legacy(pickle.dumps({}, protocol=2), keys))


@pytest.mark.spec("IO-15")
@pytest.mark.parametrize("body,match", [
    (pickle.NONE + pickle.NONE + pickle.APPEND, "only lists can be appended"),
    (pickle.MARK + pickle.NONE + pickle.APPENDS, "underflow|only lists"),
    (_str("x") + pickle.NONE + pickle.NONE + pickle.SETITEM, "only dicts take items"),
    (pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.NONE + pickle.SETITEM, "only str and int keys"),
    (pickle.MARK * (LIMITS["marks"] + 1), "open MARKs"),
    (pickle.NONE + pickle.BINPUT + b"\0" + pickle.MARK + (pickle.BINGET + b"\0") * 100 + pickle.TUPLE, "tuple has 100"),
    (pickle.LONG1 + b"\xff" + b"\1" * 255, "integer of 255 bytes"),
    (pickle.EMPTY_LIST + pickle.BINPUT + b"\0" + pickle.BINGET + b"\0" + pickle.APPEND, "inside itself"),
    (pickle.BINGET + b"\7", "read before it is written"),
    (pickle.FRAME + struct.pack("<Q", 2 ** 60), "FRAME"),
])
def test_pickle_structure_limits(body, match):
    with pytest.raises(WeightsError, match=match) as ei:
        loads_torch_bytes(_zip(P2 + body + pickle.STOP))
    assert len(str(ei.value)) < 400, "messages must not repr untrusted objects in full"


@pytest.mark.spec("IO-15")
def test_container_frozen_after_placement():
    """A list put inside a tuple can't grow afterwards (that would defeat the depth bound)."""
    body = (pickle.EMPTY_LIST + pickle.BINPUT + b"\0" + pickle.TUPLE1 + pickle.BINGET + b"\0"
            + pickle.NONE + pickle.APPEND)
    with pytest.raises(WeightsError, match="modified after it was placed"):
        loads_torch_bytes(_zip(P2 + body + pickle.STOP))


# ---- 3. small files, huge allocations -------------------------------------------------------------

@pytest.mark.spec("IO-15")
@pytest.mark.parametrize("size,stride,match", [
    ((16384, 20000), (20000, 1), "reaches element"),                # one float viewed as 1.25 GiB
    ((16384, 20000), (0, 0), "elements, more than"),                # stride-0 view of the same
    ((2 ** 31,), (0,), "elements, more than"),
    ((2, 3), (2 ** 70, 1), r"\[0, 2\*\*62\)"),                       # overflowing stride
    ((1, 2 ** 63), (1, 1), r"\[0, 2\*\*62\)"),
])
def test_views_never_outgrow_their_storage(size, stride, match):
    data = _zip(_view_pickle(1, size, stride), {"0": b"\0\0\0\0"})
    assert len(data) < 1024
    with _MemoryCap(64), pytest.raises(WeightsError, match=match):
        loads_torch_bytes(data)


@pytest.mark.spec("IO-15")
def _aliasing_views(n, size, offset_of):
    """A torch file of ``n`` views of ``size`` floats into one 256 KiB storage, view i at ``offset_of(i)``."""
    storage = np.zeros(1 << 16, np.float32).tobytes()              # 256 KiB
    pid = (pickle.MARK + _str("storage") + _glob("torch", "FloatStorage") + _str("0") + _str("cpu") + _long(1 << 16)
           + pickle.TUPLE + pickle.BINPERSID)
    entries = b"".join(_str(f"t{i}") + _glob("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + pid
                       + _long(offset_of(i)) + pickle.MARK + _long(size) + pickle.TUPLE + pickle.MARK + _long(1)
                       + pickle.TUPLE + pickle.NEWFALSE + ODICT + pickle.TUPLE + pickle.REDUCE for i in range(n))
    pkl = P2 + ODICT + pickle.MARK + entries + pickle.SETITEMS + pickle.STOP
    return _zip(pkl, {"0": storage})


@pytest.mark.spec("IO-15")
def test_tied_views_are_bounded_by_file_size():
    """Many distinct tensors aliasing one storage: total bytes built <= 8x the storage (+1 MiB)."""
    with pytest.raises(WeightsError, match="at most 8x"):
        loads_torch_bytes(_aliasing_views(64, 1 << 15, lambda i: i))


@pytest.mark.spec("IO-15")
def test_identical_views_are_built_once():
    """adapters writes its prefix pool once per prefix layer (37 copies for a 12+12-layer BART): identical views
    (same storage, offset, shape, stride) cost one array, so such files load; distinct offsets still count."""
    out = loads_torch_bytes(_aliasing_views(64, 1 << 16, lambda i: 0))
    assert len(out) == 64 and len({id(v) for v in out.values()}) == 1


@pytest.mark.spec("IO-3")
@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compressed_zip_records_are_refused_before_inflating(compression):
    bomb = _zip(P2 + pickle.NONE + pickle.STOP + b"\0" * (50 << 20), compression=compression)
    assert len(bomb) < 300_000
    t = time.perf_counter()
    with pytest.raises(WeightsError, match="compressed"):
        loads_torch_bytes(bomb)
    assert time.perf_counter() - t < 2


@pytest.mark.spec("IO-3")
def test_encrypted_and_overlapping_zip_records():
    data = bytearray(_zip(P2 + pickle.NONE + pickle.STOP))
    i = data.index(b"PK\x01\x02")                                   # central directory: set the encrypted flag
    data[i + 8] |= 1
    with pytest.raises(WeightsError, match="encrypted|cannot read"):
        loads_torch_bytes(bytes(data))


@pytest.mark.spec("IO-4")
def test_legacy_huge_numel_is_refused_before_reading():
    obj = _view_pickle(2 ** 61, (1,), (1,)).replace(b"\x00" * 0, b"")
    pid_legacy = obj.replace(pickle.TUPLE + pickle.BINPERSID, pickle.NONE + pickle.TUPLE + pickle.BINPERSID, 1)
    data = _legacy(pid_legacy, pickle.dumps(["0"], protocol=2), struct.pack("<q", 2 ** 61))
    with _MemoryCap(64), pytest.raises(WeightsError, match="needs .* bytes but the file has"):
        loads_torch_bytes(data)


@pytest.mark.spec("IO-7")
def test_safetensors_overlap_and_deep_header():
    raw = np.arange(4, dtype=np.float32).tobytes()
    head = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                       "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    with pytest.raises(WeightsError, match="must not overlap"):
        loads_safetensors_bytes(len(head).to_bytes(8, "little") + head + raw)
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(WeightsError, match="deeper than"):
        loads_safetensors_bytes(len(deep).to_bytes(8, "little") + deep)
    inf = b'{"a": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 16]}}'
    with pytest.raises(WeightsError, match="Infinity"):
        loads_safetensors_bytes(len(inf).to_bytes(8, "little") + inf + raw)


# ---- one JSON reader ------------------------------------------------------------------------------

@pytest.mark.spec("IO-13")
@pytest.mark.parametrize("text,match", [
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "deeper than"),
    ('{"a":' * 10 ** 5 + "1" + "}" * 10 ** 5, "deeper than"),
    ('{"r": NaN}', "NaN is not allowed"),
    ('{"r": -Infinity}', "Infinity is not allowed"),
    ('{"r": 1e400}', "overflows"),
    ('{"r": ' + "9" * 5000 + "}", "invalid JSON"),
    ('{"a": "\\"[[[[["}', None),                      # brackets inside strings don't count
])
def test_json_reader_limits(text, match):
    if match is None:
        assert loads_json(text) == {"a": '"[[[[['}
        return
    with pytest.raises(WeightsError, match=match):
        loads_json(text)
    with pytest.raises(ConfigError, match=match):
        loads_json(text, error=ConfigError)


def test_json_size_limit(tmp_path):
    p = tmp_path / "big.json"
    p.write_text("[" + "1," * 100 + "1]")
    with pytest.raises(WeightsError, match="limit is 100"):
        read_json(p, max_bytes=100)


# ---- model and adapter configs -----------------------------------------------------------------

@pytest.fixture()
def model_dir(tmp_path):
    return write_tiny_model(tmp_path / "m", seed=2)


def _edit_config(model_dir, **changes):
    p = os.path.join(model_dir, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(p, "w") as f:
        f.write(json.dumps(cfg).replace('"@inf@"', "Infinity"))


@pytest.mark.spec("IO-16")
@pytest.mark.parametrize("changes,exc,match", [
    (dict(num_hidden_layers=10 ** 9), ConfigError, r"num_hidden_layers=1000000000 is outside"),
    (dict(num_attention_heads=0), ConfigError, "num_attention_heads=0"),
    (dict(hidden_size=1.5), ConfigTypeError, "hidden_size must be an integer"),
    (dict(vocab_size="@inf@"), ConfigError, "Infinity is not allowed"),
    (dict(layer_norm_eps=0), ConfigError, "layer_norm_eps=0"),
    (dict(layer_norm_eps=-1e-5), ConfigError, "layer_norm_eps"),
    (dict(num_key_value_heads=1e-300), ConfigTypeError, "num_key_value_heads must be an integer"),
    (dict(rope_theta=0), ConfigError, "rope_theta=0"),
    (dict(model_type=["bert"]), ConfigError, "must be a string"),
    (dict(model_type="whisper"), ConfigError, "not supported"),
    (dict(position_embedding_type="relative_key"), ConfigError, "position_embedding_type"),
])
def test_model_config_sanity(model_dir, changes, exc, match):
    _edit_config(model_dir, **changes)
    t = time.perf_counter()
    with pytest.raises(exc, match=match):
        ma.AutoModel.from_pretrained(model_dir)
    assert time.perf_counter() - t < 2


@pytest.mark.spec("IO-16")
def test_missing_required_key_is_config_error(model_dir):
    p = os.path.join(model_dir, "config.json")
    cfg = json.load(open(p))
    del cfg["hidden_size"]
    json.dump(cfg, open(p, "w"))
    with pytest.raises(ConfigError, match="no 'hidden_size' key"):
        ma.AutoModel.from_pretrained(model_dir)


@pytest.mark.spec("IO-16")
@pytest.mark.parametrize("spec,exc", [
    ("seq_bn[reduction_factor=1e-9]", ConfigError), ("lora[r=2**31]", ConfigError),
    ("lora[r=2097152]", ConfigError), ("prompt_tuning[prompt_length=100000000]", ConfigError),
    ("prefix_tuning[prefix_length=4000000]", ConfigError), ("seq_bn[scaling=float('nan')]", ConfigError),
    ("lora[alpha=float('nan')]", ConfigError), ("seq_bn[reduction_factor={'default': 1e-9}]", ConfigError),
    ("loreft[r=16384]", ConfigError), ("loreft[r=33]", ConfigError),     # orthogonal rows: r <= hidden (32)
    ("lora[init_weights_seed=-1]", ConfigError),                        # NumPy generators need seeds >= 0
])
def test_adapter_sizes_are_bounded_before_allocation(model_dir, spec, exc):
    model = ma.AutoModel.from_pretrained(model_dir)
    with _MemoryCap(256), pytest.raises(exc):
        model.add_adapter("x", spec)
    assert "x" not in model.adapters_config


@pytest.mark.spec("IO-16")
def test_adapter_config_file_with_huge_rank_is_refused(model_dir, tmp_path):
    model = ma.AutoModel.from_pretrained(model_dir)
    model.add_adapter("a", "lora[r=4]")
    model.save_adapter(tmp_path / "a", "a")
    model.delete_adapter("a")
    p = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["config"]["r"] = 2 ** 21
    p.write_text(json.dumps(cfg))
    with _MemoryCap(256), pytest.raises(ConfigError, match=r"r: got 2097152"):
        model.load_adapter(tmp_path / "a")
    assert "a" not in model.adapters_config


# ---- wrong-shaped JSON files -----------------------------------------------------------------------

@pytest.fixture()
def model(model_dir):
    return ma.AutoModel.from_pretrained(model_dir, seed=1)


def _saved_fusion(model, d):
    for n in "ab":
        model.add_adapter(n, "seq_bn")
    model.add_adapter_fusion(["a", "b"], "dynamic")
    model.save_adapter_fusion(d, ["a", "b"])
    model.delete_adapter_fusion("a,b")


@pytest.mark.spec("IO-12")
@pytest.mark.parametrize("edit,match", [
    (lambda c: [c], "expected an object"),
    (lambda c: dict(c, name=""), "non-empty string"),
    (lambda c: dict(c, name=["a,b"]), "non-empty string"),
    (lambda c: dict(c, adapter_names="a,b"), "adapter_names"),
    (lambda c: dict(c, adapter_names=["a", ""]), "adapter_names"),
    (lambda c: dict(c, config=[1]), "'config' must be"),
])
def test_fusion_config_of_wrong_shape(model, tmp_path, edit, match):
    _saved_fusion(model, tmp_path / "f")
    p = tmp_path / "f" / "adapter_fusion_config.json"
    p.write_text(json.dumps(edit(json.loads(p.read_text()))))
    with pytest.raises(WeightsError, match=match):
        model.load_adapter_fusion(tmp_path / "f")
    assert not model.adapters_config.fusions, "a failed load must leave no fusion behind"


@pytest.mark.spec("IO-12")
def test_failed_fusion_load_keeps_an_existing_fusion(model, tmp_path):
    _saved_fusion(model, tmp_path / "f")
    model.add_adapter_fusion(["a", "b"], "dynamic")
    before = {k: np.array(d[leaf]) for k, (d, leaf) in model.fusion_param_refs("a,b").items()}
    from minadapters.io import load_torch_file, save_torch_file
    w = load_torch_file(tmp_path / "f" / "pytorch_model_adapter_fusion.bin")
    k = next(iter(w))
    w[k] = np.zeros(tuple(s + 1 for s in w[k].shape), np.float32)
    save_torch_file(tmp_path / "f" / "pytorch_model_adapter_fusion.bin", w)
    with pytest.raises(WeightsError, match="two different saves"):
        model.load_adapter_fusion(tmp_path / "f")
    assert "a,b" in model.adapters_config.fusions
    after = {k: np.array(d[leaf]) for k, (d, leaf) in model.fusion_param_refs("a,b").items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.spec("IO-10")
def test_union_entries_and_setup_files_of_wrong_shape(model, tmp_path):
    model.add_adapter("a", "seq_bn|lora[r=4]")
    model.save_adapter(tmp_path / "a", "a")
    model.delete_adapter("a")
    p = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["config"]["configs"] = [[c] for c in cfg["config"]["configs"]]
    p.write_text(json.dumps(cfg))
    with pytest.raises(ConfigTypeError, match="must be a dict"):
        model.load_adapter(tmp_path / "a")
    model.add_adapter("p", "seq_bn")
    model.save_adapter_setup(tmp_path / "s", ma.Stack("p"))
    model.delete_adapter("p")
    for bad in ([1], {"adapter_setup": []}, {"adapter_setup": {"type": "Stack", "children": "p"}},
                {"adapter_setup": {"type": ["Stack"], "children": ["p"]}},
                {"adapter_setup": {"type": "Stack", "children": ["p"], "kwargs": {"bogus": 1}}},
                {"adapter_setup": {"type": "Stack", "children": ["", "p"]}},
                {"adapter_setup": {"type": "Stack", "children": ["../p"]}},
                {"adapter_setup": {"type": "Stack", "children": [".."]}}):
        (tmp_path / "s" / "adapter_setup.json").write_text(json.dumps(bad))
        with pytest.raises((WeightsError, CompositionError)):
            model.load_adapter_setup(tmp_path / "s")
    assert list(model.adapters_config) == []


@pytest.mark.spec("COMP-0")
def test_deep_composition_is_refused_when_built():
    block = "a"
    with pytest.raises(CompositionError, match="at most 32 levels"):
        for _ in range(300):
            block = ma.Stack(block)
    data = {"type": "single", "children": ["a"]}
    for _ in range(40):
        data = {"type": "Stack", "children": [data]}
    with pytest.raises(CompositionError, match="at most 32 levels"):
        ma.Stack.from_dict(data)


# ---- 5. atomic directories --------------------------------------------------------------------

@pytest.mark.spec("IO-14")
def test_interrupted_save_is_refused_not_mixed(model, tmp_path, monkeypatch):
    """A crash after the weights and before the config: the loader refuses instead of mixing."""
    model.add_adapter("a", "lora[r=4, alpha=4]")
    model.save_adapter(tmp_path / "a", "a")
    model.delete_adapter("a")
    model.add_adapter("a", "lora[r=4, alpha=16]")
    import minadapters.io.files as files
    real, calls = files.atomic_write_bytes, []

    def crash_on_config(path, data):
        calls.append(os.path.basename(path))
        if os.path.basename(path) == "adapter_config.json":
            raise KeyboardInterrupt("killed")
        real(path, data)
    monkeypatch.setattr(files, "atomic_write_bytes", crash_on_config)
    with pytest.raises(KeyboardInterrupt):
        model.save_adapter(tmp_path / "a", "a")
    assert calls == ["pytorch_adapter.bin", "adapter_config.json"]
    monkeypatch.undo()
    model.delete_adapter("a")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        model.load_adapter(tmp_path / "a")


@pytest.mark.spec("IO-14")
def test_weights_from_another_save_are_refused(model, tmp_path):
    model.add_adapter("a", "lora[r=4, alpha=4]")
    model.save_adapter(tmp_path / "old", "a")
    model.save_adapter(tmp_path / "new", "a", use_safetensors=True)
    model.delete_adapter("a")
    os.replace(tmp_path / "old" / "pytorch_adapter.bin", tmp_path / "new" / "pytorch_adapter.bin")
    cfg = json.loads((tmp_path / "new" / "adapter_config.json").read_text())
    cfg["minadapters_weights"]["file"] = "pytorch_adapter.bin"
    (tmp_path / "new" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="two different saves"):
        model.load_adapter(tmp_path / "new")
    assert "a" not in model.adapters_config


@pytest.mark.spec("IO-14")
def test_stale_format_and_temp_files_are_removed(model, tmp_path):
    model.add_adapter("a", "seq_bn")
    d = tmp_path / "a"
    model.save_adapter(d, "a")
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for stale in (f".adapter_config.json.{dead}.abc.tmp", f".pytorch_adapter.bin.{dead}.x1.tmp",
                  ".adapter.safetensors.legacy.tmp"):
        (d / stale).write_bytes(b"junk")
    (d / "README.md").write_text("kept")
    model.save_adapter(d, "a", use_safetensors=True)
    assert sorted(os.listdir(d)) == ["README.md", "adapter.safetensors", "adapter_config.json"]
    model.delete_adapter("a")
    assert model.load_adapter(d) == "a"


@pytest.mark.spec("IO-14")
def test_live_writers_temp_file_is_kept(tmp_path):
    from minadapters.io.atomic import remove_stale_temps
    mine = tmp_path / f".x.json.{os.getpid()}.abc.tmp"
    mine.write_bytes(b"")
    assert remove_stale_temps(tmp_path, ["x.json"]) == [] and mine.exists()


# ---- 6. accepted means sane: forward inputs on both backends ----------------------------------------

BACKENDS = ["numpy", pytest.param("native", marks=pytest.mark.native)]


@pytest.fixture(params=BACKENDS)
def backend_model(request, model_dir):
    try:
        m = ma.AutoModel.from_pretrained(model_dir, seed=1, backend=request.param)
    except ma.BackendUnavailableError as e:
        pytest.skip(f"native backend unavailable: {e}")
    m.add_adapter("a", "lora[r=4]", set_active=True)
    return m


@pytest.mark.spec("API-2")
@pytest.mark.parametrize("mask,match", [
    ([[1, 1, 3]], "holds 3"), ([[1, 1e30, 1]], "holds 1e"), ([[1, float("nan"), 1]], "holds nan"),
    ([[1, -1, 1]], "holds -1"), ([[1, 0.5, 1]], "holds 0.5"),
])
def test_attention_mask_only_zero_one(backend_model, mask, match):
    with pytest.raises(ValueError, match=match):
        backend_model(input_ids=[[5, 6, 7]], attention_mask=np.array(mask))


@pytest.mark.spec("API-2")
def test_negative_and_out_of_range_ids(backend_model):
    with pytest.raises(ValueError, match="token_type_ids contains -1"):
        backend_model(input_ids=[[5, 6, 7]], token_type_ids=[[0, -1, 0]])
    with pytest.raises(ValueError, match="token_type_ids contains 9"):
        backend_model(input_ids=[[5, 6, 7]], token_type_ids=[[0, 9, 0]])
    ok = backend_model(input_ids=[[5, 6, 7]], attention_mask=np.array([[True, True, False]])).last_hidden_state
    assert np.isfinite(ok).all()


@pytest.mark.spec("API-2")
@pytest.mark.parametrize("shape", [(1, 0), (0, 3), (0, 0)])
def test_empty_input_is_refused_the_same_on_every_backend(backend_model, shape):
    with pytest.raises(ShapeError, match="at least one"):
        backend_model(input_ids=np.zeros(shape, np.int64))


@pytest.mark.spec("API-2")
def test_negative_position_ids_gpt2(tmp_path):
    from conformance.tinymodels import write_model
    m = ma.AutoModel.from_pretrained(write_model(str(tmp_path / "g"), "gpt2", seed=1))
    with pytest.raises(ValueError, match="position_ids contains -1"):
        m(input_ids=[[1, 2, 3]], position_ids=[[-1, 0, 1]])


# ---- 2. one error vocabulary: nothing else escapes the public loaders -----------------------------

DOCUMENTED = (AdapterError, FileNotFoundError, NotADirectoryError)


@pytest.mark.spec("IO-17")
def test_nothing_undocumented_escapes_the_public_loaders(model, tmp_path):
    """A short slice of the fuzz campaign run in-process (the full one is tests/fuzz/fuzz_run.py)."""
    import random
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fuzz"))
    import fuzz_mutate as mu
    model.add_adapter("s", "seq_bn|lora[r=4]")
    model.save_adapter(tmp_path / "s", "s")
    model.save_adapter(tmp_path / "t", "s", use_safetensors=True)
    model.delete_adapter("s")
    files = {"pytorch_adapter.bin": tmp_path / "s", "adapter.safetensors": tmp_path / "t",
             "adapter_config.json": tmp_path / "s"}
    seeds = {n: (d / n).read_bytes() for n, d in files.items()}
    rng = random.Random(12)
    seen = {}
    for i in range(150):
        name = list(files)[i % 3]
        d = files[name]
        data = mu.mutate_json(rng, seeds[name]) if name.endswith(".json") else (
            mu.mutate_torch_zip(rng, seeds[name]) if name.endswith(".bin") else mu.mutate_bytes(rng, seeds[name]))
        (d / name).write_bytes(data)
        if name != "adapter_config.json":      # let mutated weights reach the parser
            cfg = json.loads(seeds["adapter_config.json"])
            cfg.pop("minadapters_weights")
            (d / "adapter_config.json").write_text(json.dumps(cfg))
        try:
            model.delete_adapter(model.load_adapter(d, load_as="x"))
        except DOCUMENTED as e:
            seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1
        (d / name).write_bytes(seeds[name])
        (d / "adapter_config.json").write_bytes(seeds["adapter_config.json"])
        assert list(model.adapters_config) == [], f"input {i} left an adapter behind"
    assert "WeightsError" in seen, seen


# ---- 7. concurrency contract ------------------------------------------------------------------

def _ids():
    rng = np.random.default_rng(0)
    return rng.integers(5, 40, size=(2, 7)), np.array([[1] * 7, [1] * 5 + [0] * 2])


@pytest.mark.spec("IO-18")
def test_forwards_under_different_setups_run_concurrently(model):
    for n, cfg in (("a", "seq_bn"), ("b", "seq_bn[reduction_factor=4]"), ("c", "prefix_tuning"),
                   ("d", "lora[r=4, init_weights='bert']")):
        model.add_adapter(n, cfg)
    ids, mask = _ids()
    setups = ["a", "b", "c", "d", ma.Stack("a", "b"), ma.Parallel("a", "b"), ma.Stack("c", "d")]
    want = {}
    for s in setups:
        with ma.AdapterSetup(s):
            want[str(s)] = model(input_ids=ids, attention_mask=mask).last_hidden_state
    errors = []

    def worker(k):
        try:
            for j in range(12):
                s = setups[(k + j) % len(setups)]
                with ma.AdapterSetup(s):
                    got = model(input_ids=ids, attention_mask=mask).last_hidden_state
                if not np.array_equal(got, want[str(s)]):
                    errors.append(f"thread {k}: {s} differs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {k}: {type(e).__name__}: {e}")
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.spec("IO-18")
def test_reloading_an_adapter_while_forwards_run(model, tmp_path):
    """Forwards see the adapter either absent (a documented error) or complete -- never its random init."""
    model.add_adapter("a", "lora[r=4, init_weights='bert']")
    for _, (d, leaf) in model.adapter_param_refs("a").items():
        d[leaf] = d[leaf] + 0.3
    model.save_adapter(tmp_path / "a", "a")
    ids, mask = _ids()
    with ma.AdapterSetup("a"):
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
    stop, problems, seen = threading.Event(), [], {"ok": 0, "absent": 0}

    def forward_loop():
        while not stop.is_set():
            try:
                with ma.AdapterSetup("a"):
                    got = model(input_ids=ids, attention_mask=mask).last_hidden_state
            except CompositionError:
                seen["absent"] += 1
                continue
            except Exception as e:  # noqa: BLE001
                problems.append(f"{type(e).__name__}: {e}")
                continue
            if np.array_equal(got, want):
                seen["ok"] += 1
            else:
                problems.append(f"different output (max diff {np.abs(got - want).max():.3g})")
    threads = [threading.Thread(target=forward_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            model.delete_adapter("a")
            model.load_adapter(tmp_path / "a")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    assert seen["ok"] > 0, seen


@pytest.mark.spec("IO-18")
def test_change_from_inside_a_forward_is_refused():
    from minadapters.concurrency import AdapterSetLock
    lock = AdapterSetLock()
    with lock.reading(), pytest.raises(RuntimeError, match="wait for itself"):
        with lock.writing():
            pass
    with lock.writing(), lock.writing(), lock.reading():     # re-entrant; reads inside a change are fine
        pass


@pytest.mark.spec("IO-16")
@pytest.mark.parametrize("field,value", [("r", 16384), ("prefix_length", 16384), ("reduction_factor", 1 / 64)])
def test_config_larger_than_its_weights_is_refused_before_allocation(tmp_path, field, value):
    """A bigger model (D=256): a 1 KB edit of adapter_config.json must not allocate before the file is compared."""
    model = ma.AutoModel.from_pretrained(write_tiny_model(tmp_path / "m", seed=1, hidden=256, heads=4, ffn=64))
    spec = {"r": "lora[r=4]", "prefix_length": "prefix_tuning[prefix_length=2]", "reduction_factor": "seq_bn"}[field]
    model.add_adapter("a", spec)
    model.save_adapter(tmp_path / "a", "a")
    model.delete_adapter("a")
    p = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["config"][field] = value
    p.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="refusing before allocating"):
        model.load_adapter(tmp_path / "a")
    assert list(model.adapters_config) == []
