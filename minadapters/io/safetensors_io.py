"""Read and write `*.safetensors` files as {name: ndarray}. Spec: IO-7.

Layout: an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
tensor bytes (little-endian, C order; offsets are relative to the end of the header).

Reading parses the header here because `safetensors.numpy` has no bfloat16 (BF16 becomes float32,
exactly). Writing goes through `safetensors.numpy.save`, with `{"format": "pt"}` metadata as torch
writers (transformers) put it, so `safetensors.torch.load_file` reads it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Mapping

import numpy as np

from ..errors import WeightsError
from .files import atomic_write_bytes
from .torch_pickle import bf16_to_float32

__all__ = ["load_safetensors", "loads_safetensors_bytes", "save_safetensors",
           "dumps_safetensors_bytes", "read_safetensors_metadata"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
           "BOOL": "?"}
_MAX_HEADER = 100_000_000  # same bound as the safetensors crate


def _parse_header(head8: bytes, read, source: str) -> tuple[dict, int]:
    if len(head8) != 8:
        raise WeightsError(f"{source}: file is shorter than the 8-byte safetensors header length")
    (n,) = struct.unpack("<Q", head8)
    if n > _MAX_HEADER:
        raise WeightsError(f"{source}: header length {n} is implausible; not a safetensors file?")
    raw = read(n)
    if len(raw) != n:
        raise WeightsError(f"{source}: header is truncated ({len(raw)} of {n} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{source}: header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: header must be a JSON object")
    return header, 8 + n


def _tensor_entries(header: dict, data_len: int, source: str):
    """Validate each entry; yield (name, dtype code, shape, begin, end). Spec: IO-7."""
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise WeightsError(f"{source}: tensor '{name}' has a malformed header entry {info!r}") from e
        if code not in _DTYPES:
            raise WeightsError(f"{source}: tensor '{name}' has dtype {code!r}; supported: "
                               f"{sorted(_DTYPES)}")
        if not all(type(v) is int and v >= 0 for v in shape + (begin, end)):
            raise WeightsError(f"{source}: tensor '{name}' has bad shape/offsets {info!r}")
        want = math.prod(shape) * np.dtype(_DTYPES[code]).itemsize
        if end - begin != want or end > data_len:
            raise WeightsError(f"{source}: tensor '{name}' spans bytes [{begin}, {end}) of "
                               f"{data_len}; expected {want} bytes for shape {shape} {code}. "
                               "Is the file truncated?")
        yield name, code, shape, begin, end


def _decode(raw: bytes, code: str, shape: tuple) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=_DTYPES[code]).reshape(shape)
    if code == "BF16":
        return bf16_to_float32(arr)
    return arr.astype(arr.dtype.newbyteorder("="), copy=True)   # own, writable, native order


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file as {name: C-contiguous native ndarray}; BF16 -> float32. Spec: IO-7."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors file '{path}' does not exist")
    with open(path, "rb") as fp:
        header, start = _parse_header(fp.read(8), fp.read, path)
        data_len = os.fstat(fp.fileno()).st_size - start
        out = {}
        for name, code, shape, begin, end in _tensor_entries(header, data_len, path):
            fp.seek(start + begin)
            out[name] = _decode(fp.read(end - begin), code, shape)
    return out


def loads_safetensors_bytes(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Like `load_safetensors` for in-memory bytes."""
    header, start = _parse_header(data[:8], lambda n: data[8:8 + n], source)
    body = memoryview(data)[start:]
    return {name: _decode(bytes(body[b:e]), code, shape)
            for name, code, shape, b, e in _tensor_entries(header, len(body), source)}


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` object of a safetensors file ({} if absent)."""
    path = os.fspath(path)
    with open(path, "rb") as fp:
        header, _ = _parse_header(fp.read(8), fp.read, path)
    return dict(header.get("__metadata__") or {})


def dumps_safetensors_bytes(arrays: Mapping[str, np.ndarray],
                            metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize {name: ndarray} with `safetensors.numpy.save`; metadata defaults to {"format": "pt"}."""
    from safetensors.numpy import save  # imported here: only writers need the package

    prepared = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.newbyteorder("=").str.lstrip("<>=|") not in {np.dtype(d).str.lstrip("<>=|")
                                                                for d in _DTYPES.values()}:
            raise WeightsError(f"tensor '{name}' has dtype {a.dtype}; safetensors supports "
                               "float16/32/64, (u)int8..64 and bool")
        prepared[name] = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C", copy=None)  # keeps 0-d
    return save(prepared, metadata=dict(metadata) if metadata is not None else {"format": "pt"})


def save_safetensors(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write {name: ndarray} as safetensors (adapters' `use_safetensors=True`). Spec: IO-2, IO-7."""
    atomic_write_bytes(path, dumps_safetensors_bytes(arrays, metadata))
