"""Read `torch.save` files (`pytorch_adapter.bin`, `pytorch_model*.bin`) without torch.

Spec: IO-1 (allowed globals), IO-3 (zip layout), IO-4 (legacy layout), IO-5 (tensor rebuild).

A checkpoint is a pickle whose only job is to say "tensor = view of storage `key` with this
offset, size and stride". We unpickle it with a restricted unpickler that resolves exactly the
globals torch writes for that, each mapped to our own NumPy function, and refuses everything else
before it runs. Storages come from zip records (`<root>/data/<key>`) or, in the legacy format,
from raw bytes after the pickles.
"""

from __future__ import annotations

import _compat_pickle  # pickle's own Python 2 -> 3 name table
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from ..errors import UnsafePickleError, WeightsError

__all__ = ["load_torch_file", "loads_torch_bytes", "bf16_to_float32", "STORAGE_DTYPES"]

# Storage class -> (numpy dtype, itemsize). BFloat16 is kept as raw uint16 until the tensor is
# built, then widened to float32 (NumPy has no bfloat16). Spec: IO-1.
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


class _StorageType:
    """Marker for `torch.FloatStorage` etc.: not callable, not a class, so it can't be REDUCEd."""

    __slots__ = ("name", "code")

    def __init__(self, name: str, code: str):
        self.name, self.code = name, code

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """One flat storage: `code` names the element type; `data` is 1-D, native byte order."""

    __slots__ = ("key", "code", "numel", "data")

    def __init__(self, key: str, code: str, numel: int):
        self.key, self.code, self.numel, self.data = key, code, numel, None


class _PendingTensor:
    """A tensor view recorded while unpickling; built once every storage has its bytes."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly. Spec: IO-5.

        f32_bits = bf16_bits << 16"""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _int_tuple(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple) or not all(type(v) is int for v in x):
        raise WeightsError(f"tensor {what} must be a tuple of ints; got {x!r}")
    return x


def _rebuild_tensor(storage, storage_offset, size, stride):
    """`torch._utils._rebuild_tensor`: record a strided view of a storage. Spec: IO-5."""
    if not isinstance(storage, _Storage):
        raise WeightsError(f"_rebuild_tensor: expected a storage; got {type(storage).__name__}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise WeightsError(f"_rebuild_tensor: storage_offset must be an int >= 0; got {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(v < 0 for v in size + stride):
        raise WeightsError(f"_rebuild_tensor: size {size} and stride {stride} must be non-negative "
                           "and of equal length")
    if all(size):  # an empty tensor touches no element
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise WeightsError(f"tensor view (offset {storage_offset}, size {size}, stride {stride}) "
                               f"reaches element {last}, but storage '{storage.key}' has "
                               f"{storage.numel} elements")
    return _PendingTensor(storage, storage_offset, size, stride)


def _check_hooks(backward_hooks):
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise WeightsError(f"tensor backward_hooks must be an empty dict; got {backward_hooks!r}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`; requires_grad and (empty) hooks are ignored. Spec: IO-5."""
    _check_hooks(collections.OrderedDict() if backward_hooks is None else backward_hooks)
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """`torch._utils._rebuild_tensor_v3`: like v2 with an explicit dtype that must match."""
    if not isinstance(dtype, _StorageType) or dtype.code != getattr(storage, "code", None):
        raise WeightsError(f"_rebuild_tensor_v3: dtype {dtype!r} does not match the storage")
    return _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    """`torch._utils._rebuild_parameter`: a Parameter is just its tensor here. Spec: IO-5."""
    if not isinstance(data, _PendingTensor):
        raise WeightsError(f"_rebuild_parameter: expected a tensor; got {type(data).__name__}")
    _check_hooks(backward_hooks)
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """`torch._utils._rebuild_parameter_with_state`, only when the extra state is empty."""
    if state:
        raise WeightsError(f"_rebuild_parameter_with_state: parameter carries state {state!r}; "
                           "only plain tensors are supported")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED_CALLABLES: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ALLOWED_CONSTANTS: dict[tuple[str, str], Any] = {
    **{("torch", n): _StorageType(n, c) for n, c in STORAGE_DTYPES.items()},
    **{("torch", n): _StorageType(n, c) for n, c in TORCH_DTYPES.items()},
}
_CALLABLE_IDS = {id(f) for f in _ALLOWED_CALLABLES.values()}


def _refuse(opname: str):
    def handler(self):
        raise UnsafePickleError(f"{self.source}: pickle opcode {opname} is not allowed in a "
                                "weights file (only tensor rebuilding is)")
    return handler


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler for torch checkpoints that can only rebuild tensors. Spec: IO-1.

    The pure-Python unpickler is used so that opcodes can be restricted too: REDUCE only calls
    our own rebuild functions; BUILD, INST, OBJ, NEWOBJ(_EX) and EXT* are refused outright.
    `find_class` maps allowed torch names to our functions or inert markers and raises
    `UnsafePickleError` (naming module.qualname) for anything else, before it is imported.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    for _op in ("BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _op)[0]] = _refuse(_op)
    del _op

    def __init__(self, file: BinaryIO, *, source: str, persistent_load: Callable):
        super().__init__(file)
        self.source = source
        self._persistent = persistent_load

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in _CALLABLE_IDS or not isinstance(args, tuple):
            raise UnsafePickleError(f"{self.source}: pickle REDUCE of {func!r} is not allowed; "
                                    "only tensor rebuild functions may be called")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[key]
        if key in _ALLOWED_CONSTANTS:
            return _ALLOWED_CONSTANTS[key]
        py3 = _py3_name(module, name)
        shown = f"'{module}.{name}'" + (f" (Python 3: '{py3}')" if py3 != f"{module}.{name}" else "")
        raise UnsafePickleError(f"{self.source}: pickle asks for global {shown}, which a "
                                "weights file must not need. Allowed: collections.OrderedDict, "
                                "torch._utils._rebuild_*, torch.<Type>Storage, torch.<dtype>. "
                                "Refusing to load it.")

    def persistent_load(self, pid):
        return self._persistent(pid)


def _py3_name(module: str, name: str) -> str:
    """The Python 3 name a protocol-2 pickle's Python 2 global maps to (for messages only)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _storage_from_pid(pid, source: str, *, legacy: bool) -> tuple[str, str, int]:
    """Check a persistent id ('storage', type, key, location, numel[, view]) -> (key, code, numel)."""
    n = 6 if legacy else 5
    if not (isinstance(pid, tuple) and len(pid) == n and pid[0] == "storage"):
        raise UnsafePickleError(f"{source}: persistent id {pid!r} is not ('storage', type, key, "
                                "location, numel)")
    _, stype, key, location, numel = pid[:5]
    if legacy and pid[5] is not None:
        raise WeightsError(f"{source}: legacy storage views (view_metadata={pid[5]!r}) are not supported")
    if not isinstance(stype, _StorageType):
        raise UnsafePickleError(f"{source}: persistent id storage type {stype!r} is not a torch storage")
    if not isinstance(key, str) or not isinstance(location, str) or type(numel) is not int or numel < 0:
        raise WeightsError(f"{source}: malformed persistent id {pid!r}")
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
        view = np.lib.stride_tricks.as_strided(base, shape=t.size,
                                               strides=tuple(s * item for s in t.stride),
                                               writeable=False)
        out = np.array(view, order="C", copy=True)
    return bf16_to_float32(out) if st.code == "bf16" else out


def _finish(obj, source: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a state dict (mapping of name -> tensor); "
                           f"got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, _PendingTensor):
            raise WeightsError(f"{source}: entry {k!r} is a {type(v).__name__}; expected "
                               "str -> tensor (nested objects are not supported)")
        out[k] = _materialize(v)
    return out


def _zip_root(names: list[str], source: str) -> str:
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise WeightsError(f"{source}: zip archive has no single '<root>/data.pkl' record; "
                           "not a torch.save file")
    return roots[0]


def _load_zip(fp: BinaryIO, source: str) -> dict[str, np.ndarray]:
    """Read the zip layout: <root>/data.pkl, <root>/byteorder, <root>/data/<key>. Spec: IO-3."""
    with zipfile.ZipFile(fp) as zf:
        names = zf.namelist()
        root = _zip_root(names, source)
        byteorder = "little"  # torch < 2.1 wrote no byteorder record; those were little-endian
        if f"{root}/byteorder" in names:
            byteorder = zf.read(f"{root}/byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise WeightsError(f"{source}: byteorder record is {byteorder!r}; expected 'little' or 'big'")
        storages: dict[str, _Storage] = {}

        def persistent_load(pid):
            key, code, numel = _storage_from_pid(pid, source, legacy=False)
            if key not in storages:
                name = f"{root}/data/{key}"
                if name not in names:
                    raise WeightsError(f"{source}: storage record '{name}' is missing")
                st = _Storage(key, code, numel)
                st.data = _raw_to_array(zf.read(name), code, numel, byteorder, f"{source}:{name}")
                storages[key] = st
            elif storages[key].code != code:
                raise WeightsError(f"{source}: storage '{key}' is used with two element types")
            return storages[key]

        with zf.open(f"{root}/data.pkl") as pkl:
            obj = RestrictedUnpickler(io.BytesIO(pkl.read()), source=source,
                                      persistent_load=persistent_load).load()
    return _finish(obj, source)


def _load_legacy(fp: BinaryIO, source: str) -> dict[str, np.ndarray]:
    """Read the pre-1.6 layout: magic, protocol, sys_info, object, keys, raw storages. Spec: IO-4."""
    def plain():  # header pickles hold only ints/dicts/lists: no globals or persistent ids allowed
        return RestrictedUnpickler(fp, source=source, persistent_load=_no_pid).load()

    if plain() != _LEGACY_MAGIC:
        raise WeightsError(f"{source}: wrong magic number; not a torch.save file")
    if plain() != _LEGACY_PROTOCOL:
        raise WeightsError(f"{source}: unsupported legacy protocol version")
    sys_info = plain()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}

    def persistent_load(pid):
        key, code, numel = _storage_from_pid(pid, source, legacy=True)
        if key not in storages:
            storages[key] = _Storage(key, code, numel)
        return storages[key]

    obj = RestrictedUnpickler(fp, source=source, persistent_load=persistent_load).load()
    keys = plain()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise WeightsError(f"{source}: storage key list does not match the storages the pickle uses")
    order = "<" if little else ">"
    for key in keys:
        st = storages[key]
        head = fp.read(8)
        if len(head) != 8:
            raise WeightsError(f"{source}: file ends before storage '{key}'. Is it truncated?")
        (numel,) = struct.unpack(order + "q", head)
        if numel != st.numel:
            raise WeightsError(f"{source}: storage '{key}' has {numel} elements; pickle says {st.numel}")
        raw = fp.read(numel * _ITEMSIZE[st.code])
        st.data = _raw_to_array(raw, st.code, numel, "little" if little else "big", f"{source}:{key}")
    return _finish(obj, source)


def _no_pid(pid):
    raise UnsafePickleError(f"unexpected persistent id {pid!r} in a header pickle")


def _dispatch(fp: BinaryIO, source: str) -> dict[str, np.ndarray]:
    head = fp.read(4)
    fp.seek(0)
    try:
        if head[:2] == b"PK":
            return _load_zip(fp, source)
        if head[:1] == b"\x80":
            return _load_legacy(fp, source)
    except (UnsafePickleError, WeightsError):
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
            KeyError, IndexError, struct.error, UnicodeDecodeError, OSError) as e:
        raise WeightsError(f"{source}: cannot read torch checkpoint ({type(e).__name__}: {e}). "
                           "Is the file truncated or corrupt?") from e
    raise WeightsError(f"{source}: not a torch.save file (starts with {head!r}); expected a zip "
                       "archive or a legacy pickle stream")


def load_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a `torch.save`d state dict as {name: C-contiguous native ndarray}. Spec: IO-1, IO-3..5.

    bfloat16 tensors come back as float32. Raises FileNotFoundError if `path` is missing,
    UnsafePickleError if the pickle asks for anything but tensor rebuilding, WeightsError if
    the file is truncated or corrupt; every message names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"torch checkpoint '{path}' does not exist")
    with open(path, "rb") as fp:
        return _dispatch(fp, path)


def loads_torch_bytes(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Like `load_torch_file` for in-memory bytes."""
    return _dispatch(io.BytesIO(data), source)
