"""Write `pytorch_adapter.bin` files that `torch.load(weights_only=True)` accepts, without torch.

Spec: IO-3 (zip layout), IO-6 (what we write).

The pickle is emitted opcode by opcode (protocol 2, as torch.save does): an OrderedDict whose
values are `torch._utils._rebuild_tensor_v2(<persistent storage id>, 0, size, stride, False,
OrderedDict())`. Each array gets its own storage record, stored uncompressed and 64-byte aligned.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
from typing import BinaryIO, Mapping

import numpy as np

from ..errors import WeightsError
from .atomic import atomic_write

__all__ = ["save_torch_file", "dumps_torch_bytes", "pickle_state_dict"]

# numpy dtype -> torch storage class name. Spec: IO-6.
_NP_TO_STORAGE = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage",
}
_ALIGN = 64
_FORMAT_VERSION = b"1"
_VERSION = b"3\n"


def _int(n: int) -> bytes:
    """Smallest pickle opcode for a non-negative int (BININT1 / BININT2 / BININT / LONG1)."""
    if 0 <= n < 0x100:
        return pickle.BININT1 + bytes([n])
    if 0 <= n < 0x10000:
        return pickle.BININT2 + struct.pack("<H", n)
    if -0x80000000 <= n < 0x80000000:
        return pickle.BININT + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _tuple(items: list[bytes]) -> bytes:
    if not items:
        return pickle.EMPTY_TUPLE
    if len(items) <= 3:
        return b"".join(items) + (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(items) - 1]
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


_EMPTY_ORDERED_DICT = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _check_array(name, a) -> np.ndarray:
    if not isinstance(name, str):
        raise WeightsError(f"state dict key {name!r} must be a str")
    a = np.asarray(a)
    if a.dtype.newbyteorder("=") not in _NP_TO_STORAGE:
        raise WeightsError(f"tensor '{name}' has dtype {a.dtype}; torch files support "
                           f"{sorted(str(d) for d in _NP_TO_STORAGE)}")
    return np.array(a, dtype=a.dtype.newbyteorder("<"), order="C", copy=None)  # keeps 0-d


def pickle_state_dict(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The data.pkl bytes: OrderedDict of _rebuild_tensor_v2 calls, storage i for entry i. Spec: IO-6.

        ('storage', torch.<Type>Storage, '<i>', 'cpu', numel) -> _rebuild_tensor_v2(s, 0, size,
        contiguous stride, False, OrderedDict())"""
    out = [pickle.PROTO + b"\x02", _EMPTY_ORDERED_DICT, pickle.MARK]
    for i, (name, a) in enumerate(arrays.items()):
        stride, acc = [], 1
        for n in reversed(a.shape):                  # contiguous strides, in elements
            stride.insert(0, acc)
            acc *= max(n, 1)
        pid = _tuple([_str("storage"), _global("torch", _NP_TO_STORAGE[a.dtype.newbyteorder("=")]),
                      _str(str(i)), _str("cpu"), _int(a.size)])
        args = _tuple([pid + pickle.BINPERSID, _int(0), _tuple([_int(n) for n in a.shape]),
                       _tuple([_int(s) for s in stride]), pickle.NEWFALSE, _EMPTY_ORDERED_DICT])
        out += [_str(name), _global("torch._utils", "_rebuild_tensor_v2"), args, pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def _aligned_info(fp: BinaryIO, name: str) -> zipfile.ZipInfo:
    """A stored ZipInfo whose data starts on a 64-byte boundary, padded like torch ('FB' extra)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = fp.tell() + 30 + len(name.encode("utf-8"))     # 30 = fixed local header size
    pad = (-(start + 4)) % _ALIGN                          # 4 = extra field id + length
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    return info


def _write_zip(fp: BinaryIO, root: str, arrays: dict[str, np.ndarray]) -> None:
    """Records in torch.save's order. Spec: IO-3."""
    data_pkl = pickle_state_dict(arrays)
    digest = hashlib.sha256(data_pkl)
    records = [("data.pkl", data_pkl), (".format_version", _FORMAT_VERSION),
               (".storage_alignment", str(_ALIGN).encode()), ("byteorder", b"little")]
    for i, a in enumerate(arrays.values()):
        records.append((f"data/{i}", a))
        digest.update(a.tobytes())
    # torch writes a random id; ours is derived from the content so saves are reproducible
    serial = str(int.from_bytes(digest.digest()[:16], "little")).zfill(40)[:40].encode()
    records += [("version", _VERSION), (".data/serialization_id", serial)]
    with zipfile.ZipFile(fp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, payload in records:
            info = _aligned_info(fp, f"{root}/{name}")
            zf.writestr(info, payload.tobytes() if isinstance(payload, np.ndarray) else payload)


def _prepare(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: _check_array(name, a) for name, a in arrays.items()}


def dumps_torch_bytes(arrays: Mapping[str, np.ndarray], *, root: str = "archive") -> bytes:
    """The bytes of a torch zip checkpoint holding `arrays`. Spec: IO-6."""
    buf = io.BytesIO()
    _write_zip(buf, root, _prepare(arrays))
    return buf.getvalue()


def save_torch_file(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write `arrays` as a torch zip checkpoint (like `torch.save(state_dict, path)`).

    Spec: IO-2, IO-6. The archive root is the file's stem, as torch names it. Supported dtypes:
    float16/32/64, int8/16/32/64, uint8, bool; others raise WeightsError."""
    path = os.fspath(path)
    prepared = _prepare(arrays)                    # validate before touching the disk
    root = os.path.splitext(os.path.basename(path))[0] or "archive"
    atomic_write(path, lambda fp: _write_zip(fp, root, prepared))
