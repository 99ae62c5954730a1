"""Atomic file writes and weight-file discovery. Spec: IO-2, IO-8, IO-9."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from ..errors import WeightsError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "read_json",
           "read_weights", "write_weights", "read_model_weights"]

_NEW_FILE_MODE = 0o644


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], Any]) -> None:
    """Write a file all-or-nothing. Spec: IO-2.

    `writer(fp)` fills a temporary file in the same directory; it is flushed, fsynced and renamed
    over `path` with os.replace. If anything raises, the temporary file is removed and `path` is
    left as it was. The new file keeps the mode of the file it replaces (else 0o644)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fp:
            writer(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable (POSIX); platforms that can't open directories skip this."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write` of a bytes object. Spec: IO-2."""
    atomic_write(path, lambda fp: fp.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON as adapters does (`json.dump(obj, f, indent=2, sort_keys=True)`), atomically.

    Spec: IO-2. Serialisation happens before the file is opened, so a TypeError leaves no trace."""
    text = json.dumps(obj, indent=2, sort_keys=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a UTF-8 JSON file; a parse error becomes WeightsError naming the file."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise WeightsError(f"{path}: invalid JSON ({e})") from e


def read_weights(directory: str | os.PathLike, basename_bin: str = "pytorch_adapter.bin",
                 basename_safetensors: str = "adapter.safetensors", *,
                 prefer_safetensors: bool = False) -> dict[str, np.ndarray]:
    """Read the weights file of a saved adapter, head or fusion. Spec: IO-8.

    Looks for `basename_bin` then `basename_safetensors` (the other way round when
    `prefer_safetensors`), reads the first that exists. This is one step more lenient than
    adapters, which needs the .bin unless use_safetensors=True. Raises FileNotFoundError naming
    the directory and both names if neither exists."""
    from .safetensors_io import load_safetensors
    from .torch_pickle import load_torch_file

    directory = os.fspath(directory)
    candidates = [(basename_bin, load_torch_file), (basename_safetensors, load_safetensors)]
    if prefer_safetensors:
        candidates.reverse()
    for name, reader in candidates:
        if name and os.path.isfile(os.path.join(directory, name)):
            return reader(os.path.join(directory, name))
    raise FileNotFoundError(f"no weights file in '{directory}': looked for "
                            f"{' and '.join(repr(n) for n, _ in candidates if n)}")


def write_weights(directory: str | os.PathLike, arrays: Mapping[str, np.ndarray], *,
                  use_safetensors: bool = False, basename_bin: str = "pytorch_adapter.bin",
                  basename_safetensors: str = "adapter.safetensors") -> str:
    """Write weights as adapters' `save_adapter` would; returns the path written. Spec: IO-6, IO-7."""
    from .safetensors_io import save_safetensors
    from .torch_save import save_torch_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    if use_safetensors:
        path = os.path.join(directory, basename_safetensors)
        save_safetensors(path, arrays)
    else:
        path = os.path.join(directory, basename_bin)
        save_torch_file(path, arrays)
    return path


def _read_sharded(model_dir: str, index_name: str, reader) -> dict[str, np.ndarray]:
    index_path = os.path.join(model_dir, index_name)
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index_path}: no 'weight_map' object")
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or os.path.basename(shard) != shard:
            raise WeightsError(f"{index_path}: shard name {shard!r} must be a plain file name")
        tensors = reader(os.path.join(model_dir, shard))
        for key, file in weight_map.items():
            if file == shard:
                if key not in tensors:
                    raise WeightsError(f"{index_path}: '{key}' should be in shard '{shard}' but is not")
                out[key] = tensors[key]
    return out


def read_model_weights(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Hugging Face checkpoint directory into {name: ndarray}. Spec: IO-9.

    Order tried (as transformers does): model.safetensors, model.safetensors.index.json
    (sharded, via weight_map), pytorch_model.bin, pytorch_model.bin.index.json."""
    from .safetensors_io import load_safetensors
    from .torch_pickle import load_torch_file

    model_dir = os.fspath(model_dir)
    options = [("model.safetensors", load_safetensors, False),
               ("model.safetensors.index.json", load_safetensors, True),
               ("pytorch_model.bin", load_torch_file, False),
               ("pytorch_model.bin.index.json", load_torch_file, True)]
    for name, reader, sharded in options:
        if os.path.isfile(os.path.join(model_dir, name)):
            if sharded:
                return _read_sharded(model_dir, name, reader)
            return reader(os.path.join(model_dir, name))
    raise FileNotFoundError(f"no model weights in '{model_dir}': looked for "
                            f"{', '.join(n for n, _, _ in options)}")
