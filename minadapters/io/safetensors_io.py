"""Read and write `*.safetensors` files as {name: ndarray}. Spec: IO-7.

Layout: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
tensor bytes (little-endian, C order; offsets are relative to the end of the header).

Reading parses the header here because `safetensors.numpy` has no bfloat16 (BF16 becomes float32,
exactly). Writing goes through `safetensors.numpy.save`, with `{"format": "pt"}` metadata as torch
writers (transformers) put it, so `safetensors.torch.load_file` reads it.
"""

from __future__ import annotations

import math
import mmap as _mmap
import os
import struct
import sys
from typing import Mapping

import numpy as np
from safetensors.numpy import save as _st_save

from ..errors import WeightsError
from ..jsonio import loads_json
from .atomic import atomic_write_bytes
from .torch_pickle import bf16_to_float32

__all__ = ["load_safetensors", "loads_safetensors_bytes", "save_safetensors",
           "dumps_safetensors_bytes", "read_safetensors_metadata"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
           "BOOL": "?"}
_MAX_HEADER = 100_000_000  # same bound as the safetensors crate
_MAX_HEADER_DEPTH = 4      # {name: {"shape": [...]}}: 3 levels
_MAX_RANK = 64


def _brief(x) -> str:
    """A short description of an untrusted header value (never a full repr)."""
    if isinstance(x, str):
        return repr(x[:60]) + ("..." if len(x) > 60 else "")
    if isinstance(x, (int, float, bool, type(None))):
        return repr(x) if len(repr(x)) < 40 else f"a {type(x).__name__}"
    return f"a {type(x).__name__}" + (f" of {len(x)} items" if isinstance(x, (list, dict)) else "")


def _parse_header(head8: bytes, read, source: str, total: int) -> tuple[dict, int]:
    """Header length, then the JSON header through the one JSON reader. Spec: IO-7, IO-13."""
    if len(head8) != 8:
        raise WeightsError(f"{source}: file is shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", head8)
    if n > _MAX_HEADER:
        raise WeightsError(f"{source}: header length {n} is implausible; not a safetensors file?")
    if n > total - 8:
        raise WeightsError(f"{source}: header is truncated (the file has {total - 8} of {n} bytes)")
    raw = read(n)
    if len(raw) != n:
        raise WeightsError(f"{source}: header is truncated ({len(raw)} of {n} bytes)")
    header = loads_json(raw, source=f"{source} (safetensors header)", max_bytes=_MAX_HEADER,
                        max_depth=_MAX_HEADER_DEPTH)
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: header must be a JSON object; got {_brief(header)}")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise WeightsError(f"{source}: __metadata__ must be an object of strings; got {_brief(meta)}")
    return header, 8 + n


def _tensor_entries(header: dict, data_len: int, source: str):
    """Validate every entry, then return [(name, dtype code, shape, begin, end)]. Spec: IO-7, IO-15.

    Each entry must cover exactly prod(shape)*itemsize bytes inside the data, and no two entries
    may overlap, so the arrays built never exceed the file's size."""
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise WeightsError(f"{source}: tensor {_brief(name)} has a malformed header entry ({_brief(info)}); "
                               "expected an object with dtype, shape and data_offsets")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise WeightsError(f"{source}: tensor {_brief(name)} has dtype {_brief(code)}; supported: "
                               f"{sorted(_DTYPES)}")
        if not isinstance(shape, list) or len(shape) > _MAX_RANK or not isinstance(offsets, list) \
                or len(offsets) != 2:
            raise WeightsError(f"{source}: tensor {_brief(name)}: shape must be a list of at most "
                               f"{_MAX_RANK} ints and data_offsets [begin, end]")
        if all(type(v) is int for v in offsets) and max(offsets) > data_len:
            raise WeightsError(f"{source}: tensor {_brief(name)} ends at byte {max(offsets)} of "
                               f"{data_len} data bytes. Is the file truncated?")
        if not all(type(v) is int and v >= 0 for v in offsets) or \
                not all(type(v) is int and 0 <= v < 2 ** 62 for v in shape):
            raise WeightsError(f"{source}: tensor {_brief(name)} has bad shape/offsets (shape "
                               f"{[_brief(v) for v in shape[:8]]}, data_offsets {[_brief(v) for v in offsets]}); "
                               f"expected non-negative ints within the {data_len} data bytes")
        begin, end = offsets
        want = math.prod(shape) * np.dtype(_DTYPES[code]).itemsize
        if end - begin != want:
            raise WeightsError(f"{source}: tensor {_brief(name)} spans bytes [{begin}, {end}) of "
                               f"{data_len}; expected {want} bytes for shape {tuple(shape)} {code}. "
                               "Is the file truncated?")
        out.append((name, code, tuple(shape), begin, end))
    spans = sorted((b, e) for _, _, _, b, e in out if e > b)
    for (_, e0), (b1, _) in zip(spans, spans[1:]):
        if b1 < e0:
            raise WeightsError(f"{source}: two tensors share bytes [{b1}, {e0}); safetensors entries "
                               "must not overlap")
    return out


def _decode(raw: bytes, code: str, shape: tuple) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=_DTYPES[code]).reshape(shape)
    if code == "BF16":
        return bf16_to_float32(arr)
    return arr.astype(arr.dtype.newbyteorder("="), copy=True)   # own, writable, native order


def mmap_enabled() -> bool:
    """Whether model checkpoints are memory-mapped (IO-19); `MINADAPTERS_MMAP=0` turns it off."""
    return os.environ.get("MINADAPTERS_MMAP", "1").strip().lower() not in ("0", "false", "no", "off")


def _mapped(mm, start: int, code: str, shape: tuple, begin: int, end: int):
    """A zero-copy view of one tensor in a copy-on-write map, or None when a view cannot be used.

    Only for dtypes kept as they are (not BF16, which is widened) in native byte order, at an offset aligned to
    the item size (safetensors writers align every tensor; a hand-made file may not). Spec: IO-19."""
    dt = np.dtype(_DTYPES[code])
    if code == "BF16" or (dt.byteorder == "<" and sys.byteorder != "little") or (start + begin) % dt.itemsize:
        return None
    count = (end - begin) // dt.itemsize
    return np.frombuffer(mm, dtype=dt.newbyteorder("="), count=count, offset=start + begin).reshape(shape)


def load_safetensors(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, np.ndarray]:
    """Read a safetensors file as {name: C-contiguous native ndarray}; BF16 -> float32. Spec: IO-7, IO-19.

    With `mmap=True` the file is mapped copy-on-write and each tensor that can be used in place is a writable
    view of the map (no copy until a page is written; the map lives as long as any view). The header and every
    entry are validated first, exactly as for a read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors file '{path}' does not exist")
    with open(path, "rb") as fp:
        total = os.fstat(fp.fileno()).st_size
        header, start = _parse_header(fp.read(8), fp.read, path, total)
        data_len = total - start
        entries = _tensor_entries(header, data_len, path)
        mm = _mmap.mmap(fp.fileno(), 0, access=_mmap.ACCESS_COPY) if mmap and total > 0 else None
        out = {}
        for name, code, shape, begin, end in entries:
            view = _mapped(mm, start, code, shape, begin, end) if mm is not None else None
            if view is not None:
                out[name] = view
                continue
            fp.seek(start + begin)
            out[name] = _decode(fp.read(end - begin), code, shape)
    return out


def loads_safetensors_bytes(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Like `load_safetensors` for in-memory bytes."""
    header, start = _parse_header(data[:8], lambda n: data[8:8 + n], source, len(data))
    body = memoryview(data)[start:]
    return {name: _decode(bytes(body[b:e]), code, shape)
            for name, code, shape, b, e in _tensor_entries(header, len(body), source)}


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` object of a safetensors file ({} if absent)."""
    path = os.fspath(path)
    with open(path, "rb") as fp:
        header, _ = _parse_header(fp.read(8), fp.read, path, os.fstat(fp.fileno()).st_size)
    return dict(header.get("__metadata__") or {})


def dumps_safetensors_bytes(arrays: Mapping[str, np.ndarray],
                            metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize {name: ndarray} with `safetensors.numpy.save`; metadata defaults to {"format": "pt"}."""
    prepared = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.newbyteorder("=").str.lstrip("<>=|") not in {np.dtype(d).str.lstrip("<>=|")
                                                                for d in _DTYPES.values()}:
            raise WeightsError(f"tensor '{name}' has dtype {a.dtype}; safetensors supports "
                               "float16/32/64, (u)int8..64 and bool")
        prepared[name] = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C", copy=None)  # keeps 0-d
    return _st_save(prepared, metadata=dict(metadata) if metadata is not None else {"format": "pt"})


def save_safetensors(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write {name: ndarray} as safetensors (adapters' `use_safetensors=True`). Spec: IO-2, IO-7."""
    atomic_write_bytes(path, dumps_safetensors_bytes(arrays, metadata))
