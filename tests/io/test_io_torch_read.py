"""Reading torch checkpoints without torch: hand-built pickles, views, errors, malicious input.

Spec: IO-1, IO-3, IO-4, IO-5."""

import builtins
import collections
import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from minadapters.errors import UnsafePickleError, WeightsError
from minadapters.io.torch_pickle import bf16_to_float32, load_torch_file, loads_torch_bytes
from minadapters.io.torch_save import dumps_torch_bytes

# ---- hand-written pickle opcodes (what torch.save emits), so no torch is needed --------------


def _int(n):
    return pickle.BININT + struct.pack("<i", n)


def _str(s):
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _tup(*items):
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _glob(m, n):
    return pickle.GLOBAL + f"{m}\n{n}\n".encode()


ODICT = _glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _tensor(storage_type, key, numel, offset, size, stride, *, legacy=False, rebuild="_rebuild_tensor_v2"):
    pid = [_str("storage"), _glob("torch", storage_type), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        pid.append(pickle.NONE)
    args = _tup(_tup(*pid) + pickle.BINPERSID, _int(offset), _tup(*map(_int, size)),
                _tup(*map(_int, stride)), pickle.NEWFALSE, ODICT)
    return _glob("torch._utils", rebuild) + args + pickle.REDUCE


def _state_pickle(entries, **kw):
    """entries: list of (name, storage_type, key, numel, offset, size, stride)."""
    body = b"".join(_str(n) + _tensor(*rest, **kw) for n, *rest in entries)
    return pickle.PROTO + b"\x02" + ODICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def _zip(data_pkl, storages, *, root="archive", byteorder=b"little", extra=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{root}/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"{root}/data/{key}", raw)
        zf.writestr(f"{root}/version", b"3\n")
        for name, raw in (extra or {}).items():
            zf.writestr(name, raw)
    return buf.getvalue()


def _legacy(obj_pkl, storages, *, little=True):
    order = "<" if little else ">"
    out = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
           pickle.dumps({"protocol_version": 1001, "little_endian": little,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
           obj_pkl, pickle.dumps(list(storages), protocol=2)]
    for arr in storages.values():
        out += [struct.pack(order + "q", arr.size), arr.astype(arr.dtype.newbyteorder(order)).tobytes()]
    return b"".join(out)


BASE = np.arange(12, dtype=np.float32)
SHARED = [("w", "FloatStorage", "0", 12, 0, (3, 4), (4, 1)),        # the whole storage
          ("wt", "FloatStorage", "0", 12, 0, (4, 3), (1, 4)),       # transposed view
          ("row", "FloatStorage", "0", 12, 8, (4,), (1,)),          # offset view
          ("col", "FloatStorage", "0", 12, 1, (3,), (4,)),          # strided column
          ("bcast", "FloatStorage", "0", 12, 5, (2, 3), (0, 1))]    # expanded (stride 0)
SHARED_WANT = {"w": BASE.reshape(3, 4), "wt": BASE.reshape(3, 4).T, "row": BASE[8:],
               "col": BASE[1::4], "bcast": np.broadcast_to(BASE[5:8], (2, 3))}


def _check(got, want):
    assert list(got) == list(want), f"keys={list(got)}, but should be {list(want)}"
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{k}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        assert np.array_equal(g, w), f"{k}: {g} != {w}"
        assert g.flags.c_contiguous and g.flags.writeable and g.dtype.isnative, k
    for a in got:
        for b in got:
            assert a == b or not np.shares_memory(got[a], got[b]), f"{a} and {b} share memory"


@pytest.mark.spec("IO-5")
@pytest.mark.parametrize("root", ["archive", "pytorch_adapter", "x y"])
def test_zip_shared_storage_views(root):
    data = _zip(_state_pickle(SHARED), {"0": BASE.tobytes()}, root=root)
    _check(loads_torch_bytes(data), SHARED_WANT)


@pytest.mark.spec("IO-4")
@pytest.mark.parametrize("little", [True, False])
def test_legacy_shared_storage_views(little):
    data = _legacy(_state_pickle(SHARED, legacy=True), {"0": BASE}, little=little)
    _check(loads_torch_bytes(data), SHARED_WANT)


@pytest.mark.spec("IO-3")
def test_zip_big_endian_and_missing_byteorder():
    be = _zip(_state_pickle([("a", "LongStorage", "k", 3, 0, (3,), (1,))]),
              {"k": np.array([1, -2, 3], ">i8").tobytes()}, byteorder=b"big")
    _check(loads_torch_bytes(be), {"a": np.array([1, -2, 3], np.int64)})
    old = _zip(_state_pickle([("a", "IntStorage", "k", 2, 0, (2,), (1,))]),
               {"k": np.array([7, 8], "<i4").tobytes()}, byteorder=None)
    _check(loads_torch_bytes(old), {"a": np.array([7, 8], np.int32)})


DTYPE_CASES = [("FloatStorage", np.float32), ("DoubleStorage", np.float64), ("HalfStorage", np.float16),
               ("LongStorage", np.int64), ("IntStorage", np.int32), ("ShortStorage", np.int16),
               ("CharStorage", np.int8), ("ByteStorage", np.uint8), ("BoolStorage", np.bool_)]


@pytest.mark.spec("IO-5")
@pytest.mark.parametrize("stype,dtype", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_dtypes(stype, dtype):
    arr = (np.arange(6) % 3).astype(dtype).reshape(2, 3)
    data = _zip(_state_pickle([("t", stype, "0", 6, 0, (2, 3), (3, 1))]), {"0": arr.tobytes()})
    _check(loads_torch_bytes(data), {"t": arr})


@pytest.mark.spec("IO-5")
def test_bfloat16_widens_exactly():
    f = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], np.float32)
    bits = (f.view(np.uint32) >> 16).astype(np.uint16)
    data = _zip(_state_pickle([("b", "BFloat16Storage", "0", 5, 0, (5,), (1,))]), {"0": bits.tobytes()})
    _check(loads_torch_bytes(data), {"b": f})
    assert np.array_equal(bf16_to_float32(np.array([0x3F80], np.uint16)), [1.0])


@pytest.mark.spec("IO-5")
def test_parameter_and_empty_and_scalar():
    par = (_str("p") + _glob("torch._utils", "_rebuild_parameter")
           + _tup(_tensor("FloatStorage", "0", 2, 0, (2,), (1,)), pickle.NEWTRUE, ODICT) + pickle.REDUCE)
    rest = (_str("e") + _tensor("FloatStorage", "1", 0, 0, (0, 4), (4, 1))
            + _str("s") + _tensor("DoubleStorage", "2", 1, 0, (), ()))
    pkl = pickle.PROTO + b"\x02" + ODICT + pickle.MARK + par + rest + pickle.SETITEMS + pickle.STOP
    data = _zip(pkl, {"0": np.ones(2, np.float32).tobytes(), "1": b"", "2": np.float64(4).tobytes()})
    _check(loads_torch_bytes(data), {"p": np.ones(2, np.float32), "e": np.zeros((0, 4), np.float32),
                                     "s": np.array(4.0)})


@pytest.mark.spec("IO-6")
def test_our_writer_round_trip(tmp_path):
    arrays = {"a": np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32),
              "b": np.arange(4, dtype=np.int64), "c": np.array(True)}
    _check(loads_torch_bytes(dumps_torch_bytes(arrays)), arrays)


# ---- malicious and corrupt input ------------------------------------------------------------


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _evil_payloads(marker):
    cmd = f"touch {marker}"
    return {"os.system": _Evil(os.system, cmd),
            "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)]),
            "nested-in-state-dict": collections.OrderedDict(w=_Evil(os.system, cmd))}


@pytest.mark.spec("IO-1")
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.call", "nested-in-state-dict"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, kind, fmt, protocol):
    marker = tmp_path / "pwned"
    pkl = pickle.dumps(_evil_payloads(marker)[kind], protocol=protocol)
    data = {"zip": lambda: _zip(pkl, {}), "legacy": lambda: _legacy(pkl, {}), "raw": lambda: pkl}[fmt]()
    path = tmp_path / "pytorch_adapter.bin"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as ei:
        load_torch_file(path)
    want = {"os.system": "posix.system", "builtins.eval": "builtins.eval",
            "subprocess.call": "subprocess.call", "nested-in-state-dict": "posix.system"}[kind]
    if os.name != "posix":
        want = want.replace("posix", "nt")
    assert want in str(ei.value), f"message {ei.value!s} should name {want!r}"
    assert not marker.exists(), "the malicious pickle ran"


@pytest.mark.spec("IO-1")
@pytest.mark.parametrize("opcode_name,body", [
    ("BUILD", ODICT + pickle.EMPTY_DICT + pickle.BUILD),
    ("NEWOBJ", _glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.NEWOBJ),
    ("INST", pickle.MARK + pickle.INST + b"collections\nOrderedDict\n"),
    ("EXT1", pickle.EXT1 + b"\x01"),
])
def test_refused_opcodes(opcode_name, body):
    with pytest.raises(UnsafePickleError, match=opcode_name):
        loads_torch_bytes(_zip(pickle.PROTO + b"\x02" + body + pickle.STOP, {}))


@pytest.mark.spec("IO-1")
def test_reduce_of_non_callable_marker_and_bad_persistent_id():
    storage_reduce = _glob("torch", "FloatStorage") + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.STOP
    with pytest.raises(UnsafePickleError, match="REDUCE"):
        loads_torch_bytes(_zip(pickle.PROTO + b"\x02" + storage_reduce, {}))
    bad_pid = pickle.PROTO + b"\x02" + _tup(_str("module"), _str("os")) + pickle.BINPERSID + pickle.STOP
    with pytest.raises(UnsafePickleError, match="persistent id"):
        loads_torch_bytes(_zip(bad_pid, {}))


def _valid_zip():
    return _zip(_state_pickle(SHARED[:1]), {"0": BASE.tobytes()})


@pytest.mark.spec("IO-3")
@pytest.mark.parametrize("cut", [10, 100, 200, -30])
def test_truncated_zip_names_file(tmp_path, cut):
    path = tmp_path / "pytorch_adapter.bin"
    path.write_bytes(_valid_zip()[:cut])
    with pytest.raises(WeightsError, match="pytorch_adapter.bin"):
        load_torch_file(path)


@pytest.mark.spec("IO-4")
@pytest.mark.parametrize("cut", [5, 40, -20, -1])
def test_truncated_legacy(cut):
    data = _legacy(_state_pickle(SHARED, legacy=True), {"0": BASE})
    with pytest.raises(WeightsError):
        loads_torch_bytes(data[:cut])


@pytest.mark.spec("IO-3")
@pytest.mark.parametrize("case,match", [
    ("missing-storage", "storage record 'archive/data/0' is missing"),
    ("short-storage", "storage has 8 bytes"),
    ("no-data-pkl", "data.pkl"),
    ("out-of-bounds-view", "reaches element 15"),
    ("bad-byteorder", "byteorder"),
    ("not-a-dict", "state dict"),
])
def test_corrupt_zip(case, match):
    pkl = _state_pickle(SHARED[:1])
    data = {"missing-storage": lambda: _zip(pkl, {}),
            "short-storage": lambda: _zip(pkl, {"0": BASE[:2].tobytes()}),
            "no-data-pkl": lambda: _zip(b"", {}, root="a/b"),
            "out-of-bounds-view": lambda: _zip(_state_pickle([("x", "FloatStorage", "0", 12, 4, (3, 4), (4, 1))]),
                                               {"0": BASE.tobytes()}),
            "bad-byteorder": lambda: _zip(pkl, {"0": BASE.tobytes()}, byteorder=b"middle"),
            "not-a-dict": lambda: _zip(pickle.dumps([1, 2], protocol=2), {}),
            }[case]()
    with pytest.raises(WeightsError, match=match):
        loads_torch_bytes(data)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not a torch.save file"):
        loads_torch_bytes(b"hello world")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        load_torch_file(tmp_path / "nope.bin")
