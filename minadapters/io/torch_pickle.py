"""Read `torch.save` files (`pytorch_adapter.bin`, `pytorch_model*.bin`) without torch.

Spec: IO-1 (allowed globals and opcodes), IO-3 (zip layout), IO-4 (legacy layout), IO-5 (tensor
rebuild), IO-15 (limits).

A checkpoint is a pickle whose only job is to say "tensor = view of storage `key` with this
offset, size and stride". We read it with our own small unpickler (`unpickler.py`): it knows only
the opcodes torch writes, resolves exactly the globals torch writes for tensors (each mapped to our
own NumPy function or an inert marker) and refuses everything else before it runs. Every limit is
checked before the thing it limits is built: nesting depth, memo size, tuple and container sizes,
container types per opcode, integer widths, and the bytes a view may materialise. Storages come
from stored (uncompressed) zip records (`<root>/data/<key>`) or, in the legacy format, from raw
bytes after the pickles.
"""

from __future__ import annotations

import _compat_pickle  # pickle's own Python 2 -> 3 name table
import collections
import io
import lzma
import math
import os
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from ..errors import UnsafePickleError, WeightsError
from .unpickler import PICKLE_LIMITS, Unpickler, brief as _brief

__all__ = ["load_torch_file", "loads_torch_bytes", "bf16_to_float32", "STORAGE_DTYPES", "LIMITS"]

# Storage class -> element code. BFloat16 is kept as raw uint16 until the tensor is built, then
# widened to float32 (NumPy has no bfloat16). Spec: IO-1.
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# torch.<dtype> references (used by _rebuild_tensor_v3 and some writers). Spec: IO-1.
TORCH_DTYPES: dict[str, str] = {
    "float32": "f4", "float": "f4", "float64": "f8", "double": "f8", "float16": "f2",
    "half": "f2", "bfloat16": "bf16", "int64": "i8", "long": "i8", "int32": "i4", "int": "i4",
    "int16": "i2", "short": "i2", "int8": "i1", "uint8": "u1", "bool": "?",
}
_ITEMSIZE = {"f4": 4, "f8": 8, "f2": 2, "bf16": 2, "i8": 8, "i4": 4, "i2": 2, "i1": 1, "u1": 1, "?": 1}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Tensor limits (spec IO-15) on top of the unpickler's own.
LIMITS = {
    **PICKLE_LIMITS,
    "dim": 1 << 62,          # every size, stride, offset, numel
    "alias_factor": 8,       # bytes materialised <= 8 x storage bytes (tied weights), + 1 MiB
}

_ALIAS_SLACK = 1 << 20


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly. Spec: IO-5.

        f32_bits = bf16_bits << 16"""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _StorageType:
    """Marker for `torch.FloatStorage` etc.: not callable, not a class, so it can't be REDUCEd."""

    __brief__ = True

    __slots__ = ("name", "code")

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """One flat storage: `code` names the element type; `data` is 1-D, native byte order."""

    __brief__ = True

    __slots__ = ("key", "code", "numel", "data")

    def __init__(self, key: str, code: str, numel: int):
        self.key, self.code, self.numel, self.data = key, code, numel, None

    def __repr__(self):
        return f"storage {self.key[:40]!r}"


class _PendingTensor:
    """A tensor view recorded while unpickling; built once every storage has its bytes."""

    __brief__ = True

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __repr__(self):
        return "a tensor"


class _StateDict(collections.OrderedDict):
    """The OrderedDict a pickle builds; BUILD may attach (and we drop) torch's `_metadata`."""


def _int_tuple(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple) or not all(type(v) is int and 0 <= v < LIMITS["dim"] for v in x):
        raise WeightsError(f"tensor {what} must be a tuple of ints in [0, 2**62); got {_brief(x)}")
    return x


def _rebuild_tensor(storage, storage_offset, size, stride):
    """`torch._utils._rebuild_tensor`: record a strided view of a storage. Spec: IO-5.

    Refused before anything is allocated: a view reaching past its storage, or one with more
    elements than its storage (stride-0 or overlapping tricks that would inflate a small file)."""
    if not isinstance(storage, _Storage):
        raise WeightsError(f"_rebuild_tensor: expected a storage; got {_brief(storage)}")
    if type(storage_offset) is not int or not 0 <= storage_offset < LIMITS["dim"]:
        raise WeightsError(f"_rebuild_tensor: storage_offset must be an int in [0, 2**62); got "
                           f"{_brief(storage_offset)}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise WeightsError(f"_rebuild_tensor: size has {len(size)} dims but stride has {len(stride)}")
    numel = math.prod(size)
    if numel:  # an empty tensor touches no element
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise WeightsError(f"tensor view (offset {storage_offset}, size {size}, stride {stride}) "
                               f"reaches element {last}, but {storage!r} has {storage.numel} elements")
        if numel > storage.numel:
            raise WeightsError(f"tensor view of size {size} has {numel} elements, more than "
                               f"{storage!r} holds ({storage.numel}); stride-0 or overlapping views "
                               "that inflate a storage are not accepted")
    return _PendingTensor(storage, storage_offset, size, stride)


def _check_hooks(backward_hooks):
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise WeightsError(f"tensor backward_hooks must be an empty dict; got {_brief(backward_hooks)}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`; requires_grad and (empty) hooks are ignored. Spec: IO-5."""
    _check_hooks(collections.OrderedDict() if backward_hooks is None else backward_hooks)
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """`torch._utils._rebuild_tensor_v3`: like v2 with an explicit dtype that must match."""
    if not isinstance(dtype, _StorageType) or dtype.code != getattr(storage, "code", None):
        raise WeightsError(f"_rebuild_tensor_v3: dtype {_brief(dtype)} does not match the storage")
    return _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """`torch._utils._rebuild_parameter`: a Parameter is just its tensor here. Spec: IO-5."""
    if not isinstance(data, _PendingTensor):
        raise WeightsError(f"_rebuild_parameter: expected a tensor; got {_brief(data)}")
    _check_hooks(backward_hooks)
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """`torch._utils._rebuild_parameter_with_state`, only when the extra state is empty."""
    if not isinstance(state, (dict, type(None))) or state:
        raise WeightsError(f"_rebuild_parameter_with_state: parameter carries state ({_brief(state)}); "
                           "only plain tensors are supported")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _ordered_dict():
    """`collections.OrderedDict()`: only the empty constructor (items arrive by SETITEMS)."""
    return _StateDict()


_ALLOWED_CALLABLES: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ARITY = {_ordered_dict: (0, 0), _rebuild_tensor: (4, 4), _rebuild_tensor_v2: (4, 7),
          _rebuild_tensor_v3: (7, 8), _rebuild_parameter: (3, 3), _rebuild_parameter_with_state: (4, 4)}
_ALLOWED_CONSTANTS: dict[tuple[str, str], Any] = {
    **{("torch", n): _StorageType(n, c) for n, c in STORAGE_DTYPES.items()},
    **{("torch", n): _StorageType(n, c) for n, c in TORCH_DTYPES.items()},
}


def _find_class(source: str, module: str, name: str):
    """The object a GLOBAL names, from the allowlist only; anything else is refused unimported. Spec: IO-1."""
    key = (module, name)
    if key in _ALLOWED_CALLABLES:
        return _ALLOWED_CALLABLES[key]
    if key in _ALLOWED_CONSTANTS:
        return _ALLOWED_CONSTANTS[key]
    py3 = _py3_name(module, name)
    shown = f"'{module}.{name}'" + (f" (Python 3: '{py3}')" if py3 != f"{module}.{name}" else "")
    raise UnsafePickleError(f"{source}: pickle asks for global {shown}, which a "
                            "weights file must not need. Allowed: collections.OrderedDict, "
                            "torch._utils._rebuild_*, torch.<Type>Storage, torch.<dtype>. "
                            "Refusing to load it.")


def _allow_build(target, state) -> bool:
    """BUILD only attaches torch's `_metadata` (module versions) to a state dict; we drop it."""
    return type(target) is _StateDict and type(state) is dict and bool(state) and set(state) <= {"_metadata"}


def _unpickler(data: bytes, pos: int, source: str, persistent_load: Callable) -> Unpickler:
    return Unpickler(data, pos, source=source, persistent_load=persistent_load, find_class=_find_class,
                     callables=_ARITY, allow_build=_allow_build)

def _py3_name(module: str, name: str) -> str:
    """The Python 3 name a protocol-2 pickle's Python 2 global maps to (for messages only)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _storage_from_pid(pid, source: str, *, legacy: bool) -> tuple[str, str, int]:
    """Check a persistent id ('storage', type, key, location, numel[, view]) -> (key, code, numel)."""
    n = 6 if legacy else 5
    if not (isinstance(pid, tuple) and len(pid) == n and type(pid[0]) is str and pid[0] == "storage"):
        raise UnsafePickleError(f"{source}: persistent id {_brief(pid)} is not ('storage', type, key, "
                                "location, numel)")
    _, stype, key, location, numel = pid[:5]
    if legacy and pid[5] is not None:
        raise WeightsError(f"{source}: legacy storage views (view_metadata={_brief(pid[5])}) are not supported")
    if not isinstance(stype, _StorageType):
        raise UnsafePickleError(f"{source}: persistent id storage type {_brief(stype)} is not a torch storage")
    if not isinstance(key, str) or not isinstance(location, str) or type(numel) is not int \
            or not 0 <= numel < LIMITS["dim"]:
        raise WeightsError(f"{source}: malformed persistent id (key {_brief(key)}, location "
                           f"{_brief(location)}, numel {_brief(numel)})")
    return key, stype.code, numel


def _raw_to_array(raw: bytes, code: str, numel: int, byteorder: str, where: str) -> np.ndarray:
    nbytes = numel * _ITEMSIZE[code]
    if len(raw) < nbytes:
        raise WeightsError(f"{where}: storage has {len(raw)} bytes; expected {nbytes} "
                           f"({numel} elements of {code}). Is the file truncated?")
    prefix = "<" if byteorder == "little" else ">"
    if code == "bf16":
        dt = np.dtype(prefix + "u2")
    elif code in ("?", "i1", "u1"):
        dt = np.dtype(code)
    else:
        dt = np.dtype(prefix + code)
    arr = np.frombuffer(raw, dtype=dt, count=numel)
    return arr.astype(dt.newbyteorder("="), copy=False)


def _materialize(t: _PendingTensor) -> np.ndarray:
    """Copy a strided view out of its storage as a C-contiguous native array. Spec: IO-5."""
    st = t.storage
    item = st.data.itemsize
    if 0 in t.size:
        out = np.empty(t.size, dtype=st.data.dtype)
    else:
        base = st.data[t.offset:]
        # a size-1 dim never steps, so its stride is irrelevant (and may be huge): use 0
        strides = tuple(0 if n == 1 else s * item for n, s in zip(t.size, t.stride))
        view = np.lib.stride_tricks.as_strided(base, shape=t.size, strides=strides, writeable=False)
        out = np.array(view, order="C", copy=True)
    return bf16_to_float32(out) if st.code == "bf16" else out


def _finish(obj, source: str) -> dict[str, np.ndarray]:
    """Check the state dict and the bytes it would materialise, then build the arrays. Spec: IO-15."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a state dict (mapping of name -> tensor); "
                           f"got {_brief(obj)}")
    storages: dict[int, _Storage] = {}
    views: dict[tuple, list] = {}       # identical views (same storage, offset, size, stride) are built once
    want = 0
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, _PendingTensor):
            raise WeightsError(f"{source}: entry {_brief(k)} is {_brief(v)}; expected "
                               "str -> tensor (nested objects are not supported)")
        storages[id(v.storage)] = v.storage
        vkey = (id(v.storage), v.offset, tuple(v.size), tuple(v.stride))
        if vkey not in views:
            views[vkey] = [v, None]
            want += math.prod(v.size) * (4 if v.storage.code == "bf16" else _ITEMSIZE[v.storage.code])
    have = sum(s.numel * _ITEMSIZE[s.code] for s in storages.values())
    budget = LIMITS["alias_factor"] * have + _ALIAS_SLACK
    if want > budget:
        raise WeightsError(f"{source}: the tensors would take {want} bytes from {have} bytes of "
                           f"storage; at most {LIMITS['alias_factor']}x (+1 MiB) is accepted")
    out = {}
    for k, v in obj.items():
        slot = views[(id(v.storage), v.offset, tuple(v.size), tuple(v.stride))]
        if slot[1] is None:
            slot[1] = _materialize(v)
        out[k] = slot[1]          # keys that were one view in the file share one array (as torch shares storage)
    return out


def _zip_root(names: list[str], source: str) -> str:
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise WeightsError(f"{source}: zip archive has no single '<root>/data.pkl' record; "
                           "not a torch.save file")
    return roots[0]


def _check_zip_entries(zf: zipfile.ZipFile, archive_size: int, source: str) -> None:
    """Only stored, unencrypted records whose sizes add up to at most the archive. Spec: IO-3, IO-15."""
    total = 0
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise WeightsError(f"{source}: zip record {_brief(info.filename)} is compressed (method "
                               f"{info.compress_type}); torch.save stores records uncompressed")
        if info.flag_bits & 0x1:
            raise WeightsError(f"{source}: zip record {_brief(info.filename)} is encrypted")
        if info.file_size != info.compress_size:
            raise WeightsError(f"{source}: zip record {_brief(info.filename)} claims {info.file_size} "
                               f"bytes but stores {info.compress_size}")
        total += info.file_size
    if total > archive_size:
        raise WeightsError(f"{source}: zip records claim {total} bytes in a {archive_size}-byte archive "
                           "(overlapping records?)")


def _load_zip(fp: BinaryIO, source: str) -> dict[str, np.ndarray]:
    """Read the zip layout: <root>/data.pkl, <root>/byteorder, <root>/data/<key>. Spec: IO-3."""
    archive_size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    with zipfile.ZipFile(fp) as zf:
        _check_zip_entries(zf, archive_size, source)
        names = set(zf.namelist())
        root = _zip_root(sorted(names), source)
        byteorder = "little"  # torch < 2.1 wrote no byteorder record; those were little-endian
        if f"{root}/byteorder" in names:
            byteorder = zf.read(f"{root}/byteorder")[:16].decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise WeightsError(f"{source}: byteorder record is {_brief(byteorder)}; expected 'little' or 'big'")
        storages: dict[str, _Storage] = {}

        def persistent_load(pid):
            key, code, numel = _storage_from_pid(pid, source, legacy=False)
            if key not in storages:
                name = f"{root}/data/{key}"
                if name not in names:
                    raise WeightsError(f"{source}: storage record '{name[:200]}' is missing")
                if numel * _ITEMSIZE[code] > zf.getinfo(name).file_size:
                    raise WeightsError(f"{source}:{name[:200]}: storage has {zf.getinfo(name).file_size} "
                                       f"bytes; expected {numel * _ITEMSIZE[code]} ({numel} elements of "
                                       f"{code}). Is the file truncated?")
                st = _Storage(key, code, numel)
                st.data = _raw_to_array(zf.read(name), code, numel, byteorder, f"{source}:{name[:200]}")
                storages[key] = st
            elif storages[key].code != code:
                raise WeightsError(f"{source}: storage {_brief(key)} is used with two element types")
            return storages[key]

        obj, _ = _unpickler(zf.read(f"{root}/data.pkl"), 0, source, persistent_load).load()
    return _finish(obj, source)


def _load_legacy(data: bytes, source: str) -> dict[str, np.ndarray]:
    """Read the pre-1.6 layout: magic, protocol, sys_info, object, keys, raw storages. Spec: IO-4."""
    pos = 0

    def plain():  # header pickles hold only ints/dicts/lists: no persistent ids allowed
        nonlocal pos
        obj, pos = _unpickler(data, pos, source, _no_pid(source)).load()
        return obj

    if plain() != _LEGACY_MAGIC:
        raise WeightsError(f"{source}: wrong magic number; not a torch.save file")
    if plain() != _LEGACY_PROTOCOL:
        raise WeightsError(f"{source}: unsupported legacy protocol version")
    sys_info = plain()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    if not isinstance(little, bool):
        raise WeightsError(f"{source}: sys_info little_endian is {_brief(little)}; expected True or False")
    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
        key, code, numel = _storage_from_pid(pid, source, legacy=True)
        if key not in storages:
            storages[key] = _Storage(key, code, numel)
        elif storages[key].code != code:
            raise WeightsError(f"{source}: storage {_brief(key)} is used with two element types")
        return storages[key]

    obj, pos = _unpickler(data, pos, source, persistent_load).load()
    keys = plain()
    if not isinstance(keys, list) or not all(type(k) is str for k in keys) \
            or len(keys) != len(storages) or set(keys) != set(storages):
        raise WeightsError(f"{source}: storage key list does not match the storages the pickle uses")
    order = "<" if little else ">"
    for key in keys:
        st = storages[key]
        if pos + 8 > len(data):
            raise WeightsError(f"{source}: file ends before storage {_brief(key)}. Is it truncated?")
        (numel,) = struct.unpack(order + "q", data[pos:pos + 8])
        pos += 8
        if numel != st.numel:
            raise WeightsError(f"{source}: storage {_brief(key)} has {numel} elements; pickle says {st.numel}")
        nbytes = numel * _ITEMSIZE[st.code]
        if pos + nbytes > len(data):
            raise WeightsError(f"{source}: storage {_brief(key)} needs {nbytes} bytes but the file has "
                               f"{len(data) - pos} left. Is it truncated?")
        st.data = _raw_to_array(data[pos:pos + nbytes], st.code, numel, "little" if little else "big",
                                f"{source}:{key[:60]}")
        pos += nbytes
    return _finish(obj, source)


def _no_pid(source: str):
    def refuse(pid):
        raise UnsafePickleError(f"{source}: unexpected persistent id {_brief(pid)} in a header pickle")
    return refuse


# What the standard library may raise on a corrupt archive; all become WeightsError.
_CORRUPT = (EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, TypeError, KeyError, IndexError,
            struct.error, UnicodeDecodeError, OSError, NotImplementedError, RuntimeError, OverflowError,
            zlib.error, lzma.LZMAError, RecursionError)


def _dispatch(fp: BinaryIO, source: str) -> dict[str, np.ndarray]:
    """Zip or legacy by magic; anything the standard library raises on corrupt data becomes
    WeightsError naming the file, so only the documented vocabulary escapes. Spec: IO-17."""
    head = fp.read(4)
    fp.seek(0)
    try:
        if head[:2] == b"PK":
            return _load_zip(fp, source)
        if head[:1] == b"\x80":
            return _load_legacy(fp.read(), source)
    except (UnsafePickleError, WeightsError):
        raise
    except _CORRUPT as e:
        raise WeightsError(f"{source}: cannot read torch checkpoint ({type(e).__name__}: {str(e)[:200]}). "
                           "Is the file truncated or corrupt?") from None
    raise WeightsError(f"{source}: not a torch.save file (starts with {head!r}); expected a zip "
                       "archive or a legacy pickle stream")


def load_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save`d state dict as {name: C-contiguous native ndarray}. Spec: IO-1, IO-3..5, IO-15.

    bfloat16 tensors come back as float32. Raises FileNotFoundError if `path` is missing,
    UnsafePickleError if the pickle asks for anything but tensor rebuilding, WeightsError if
    the file is truncated, corrupt or over a limit; every message names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"torch checkpoint '{path}' does not exist")
    with open(path, "rb") as fp:
        return _dispatch(fp, path)


def loads_torch_bytes(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Like `load_torch_file` for in-memory bytes."""
    return _dispatch(io.BytesIO(data), source)
