"""Weight-file discovery for saved adapters and model checkpoints. Spec: IO-8, IO-9.

The atomic writers live in `atomic.py` and the JSON reader in `minadapters/jsonio.py`; both are
re-exported here for callers of the old names. Imports flow one way: files -> readers/writers ->
atomic, so the io package has no import circle."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np

from ..errors import WeightsError
from ..jsonio import read_json
from .atomic import atomic_write, atomic_write_bytes, atomic_write_json, fsync_dir, remove_stale_temps
from .safetensors_io import (dumps_safetensors_bytes, load_safetensors, loads_safetensors_bytes, mmap_enabled,
                             save_safetensors)
from .torch_pickle import load_torch_file, loads_torch_bytes
from .torch_save import dumps_torch_bytes, save_torch_file

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "read_json",
           "read_weights", "write_weights", "read_model_weights", "save_artifact", "read_artifact_weights",
           "WEIGHTS_RECORD"]

# Key of adapter_config.json (and the fusion / head configs) naming the weights file of the same
# save: {"file": name, "bytes": n, "sha256": hex}. Spec: IO-14.
WEIGHTS_RECORD = "minadapters_weights"


def read_weights(directory: str | os.PathLike, basename_bin: str = "pytorch_adapter.bin",
                 basename_safetensors: str = "adapter.safetensors", *,
                 prefer_safetensors: bool = False) -> dict[str, np.ndarray]:
    """Read the weights file of a saved adapter, head or fusion. Spec: IO-8.

    Looks for `basename_bin` then `basename_safetensors` (the other way round when
    `prefer_safetensors`), reads the first that exists. This is one step more lenient than
    adapters, which needs the .bin unless use_safetensors=True. Raises FileNotFoundError naming
    the directory and both names if neither exists."""
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
    for shard in weight_map.values():
        if not isinstance(shard, str) or not shard or os.path.basename(shard) != shard or shard in (".", ".."):
            shown = repr(shard[:100]) if isinstance(shard, str) else f"a {type(shard).__name__}"
            raise WeightsError(f"{index_path}: shard name {shown} must be a plain file name")
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if not os.path.isfile(os.path.join(model_dir, shard)):
            raise WeightsError(f"{index_path}: names shard '{shard[:100]}', which is not in '{model_dir}'.")
        tensors = reader(os.path.join(model_dir, shard))
        for key, file in weight_map.items():
            if file == shard:
                if key not in tensors:
                    raise WeightsError(f"{index_path}: '{key[:200]}' should be in shard '{shard}' but is not")
                out[key] = tensors[key]
    return out


def _mapped_safetensors(path):
    return load_safetensors(path, mmap=True)


def read_model_weights(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Hugging Face checkpoint directory into {name: ndarray}. Spec: IO-9.

    Order tried (as transformers does): model.safetensors, model.safetensors.index.json
    (sharded, via weight_map), pytorch_model.bin, pytorch_model.bin.index.json."""
    model_dir = os.fspath(model_dir)
    st = _mapped_safetensors if mmap_enabled() else load_safetensors     # IO-19: checkpoints are mapped
    options = [("model.safetensors", st, False),
               ("model.safetensors.index.json", st, True),
               ("pytorch_model.bin", load_torch_file, False),
               ("pytorch_model.bin.index.json", load_torch_file, True)]
    for name, reader, sharded in options:
        if os.path.isfile(os.path.join(model_dir, name)):
            if sharded:
                return _read_sharded(model_dir, name, reader)
            return reader(os.path.join(model_dir, name))
    raise FileNotFoundError(f"no model weights in '{model_dir}': looked for "
                            f"{', '.join(n for n, _, _ in options)}")


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def save_artifact(directory: str | os.PathLike, config_name: str, config: Mapping[str, Any],
                  arrays: Mapping[str, np.ndarray], *, use_safetensors: bool, basename_bin: str,
                  basename_safetensors: str) -> str:
    """Save a config + weights directory so that no reader ever sees files of two saves. Spec: IO-14.

    1. Serialise both files in memory (bad dtypes or JSON raise before the disk is touched).
    2. Remove temp files an interrupted save left, and the old config: from here until step 5 the
       directory holds no config, so a loader refuses it instead of mixing.
    3. Write the weights atomically (IO-2).   4. Remove the other format's stale weights file.
    5. Write the config atomically, with `WEIGHTS_RECORD` = name, size and SHA-256 of the weights:
       the commit point. A loader reading through the record notices a weights file from another
       save (a concurrent writer, a hand edit) instead of using it.
    Returns the weights file's path."""
    directory = os.fspath(directory)
    name = basename_safetensors if use_safetensors else basename_bin
    stale = basename_bin if use_safetensors else basename_safetensors
    if use_safetensors:
        payload = dumps_safetensors_bytes(arrays)
    else:
        payload = dumps_torch_bytes(arrays, root=os.path.splitext(name)[0] or "archive")
    record = {"file": name, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    text = json.dumps({**config, WEIGHTS_RECORD: record}, indent=2, sort_keys=True).encode("utf-8")
    os.makedirs(directory, exist_ok=True)
    remove_stale_temps(directory, (config_name, basename_bin, basename_safetensors))
    if _unlink(os.path.join(directory, config_name)):
        fsync_dir(directory)
    path = os.path.join(directory, name)
    atomic_write_bytes(path, payload)
    if _unlink(os.path.join(directory, stale)):
        fsync_dir(directory)
    atomic_write_bytes(os.path.join(directory, config_name), text)
    return path


def read_artifact_weights(directory: str | os.PathLike, saved: Mapping[str, Any], config_name: str, *,
                          basename_bin: str, basename_safetensors: str,
                          prefer_safetensors: bool = False) -> dict[str, np.ndarray]:
    """The weights that belong to the config `saved` read from `directory`. Spec: IO-8, IO-14.

    With a `WEIGHTS_RECORD` (our saves): exactly that file, checked by size before reading and by
    SHA-256 before parsing; a mismatch raises WeightsError. Without one (adapters' saves): IO-8."""
    directory = os.fspath(directory)
    record = saved.get(WEIGHTS_RECORD)
    if record is None:
        return read_weights(directory, basename_bin, basename_safetensors, prefer_safetensors=prefer_safetensors)
    where = os.path.join(directory, config_name)
    if not (isinstance(record, dict) and record.get("file") in (basename_bin, basename_safetensors)
            and type(record.get("bytes")) is int and isinstance(record.get("sha256"), str)):
        raise WeightsError(f"{where}: '{WEIGHTS_RECORD}' must be {{\"file\": {basename_bin!r} or "
                           f"{basename_safetensors!r}, \"bytes\": int, \"sha256\": hex string}}")
    path = os.path.join(directory, record["file"])
    if not os.path.isfile(path):
        raise WeightsError(f"{where} names weights file {record['file']!r}, which is missing: the "
                           "directory holds an incomplete save.")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != record["bytes"]:
            raise WeightsError(f"{path} has {size} bytes; {config_name} of the same save says "
                               f"{record['bytes']}. The files come from two different saves (or were modified).")
        payload = f.read(size + 1)
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise WeightsError(f"{path}: SHA-256 differs from the one in {config_name}. The files come "
                           "from two different saves (or were modified).")
    reader = loads_safetensors_bytes if record["file"] == basename_safetensors else loads_torch_bytes
    return reader(payload, source=path)
