"""Weight-file discovery for saved adapters and model checkpoints. Spec: IO-8, IO-9.

The atomic writers live in `atomic.py` and the JSON reader in `minadapters/jsonio.py`; both are
re-exported here for callers of the old names. Imports flow one way: files -> readers/writers ->
atomic, so the io package has no import circle."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from ..errors import WeightsError
from ..jsonio import read_json
from .atomic import atomic_write, atomic_write_bytes, atomic_write_json
from .safetensors_io import load_safetensors, save_safetensors
from .torch_pickle import load_torch_file
from .torch_save import save_torch_file

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "read_json",
           "read_weights", "write_weights", "read_model_weights"]


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
        tensors = reader(os.path.join(model_dir, shard))
        for key, file in weight_map.items():
            if file == shard:
                if key not in tensors:
                    raise WeightsError(f"{index_path}: '{key[:200]}' should be in shard '{shard}' but is not")
                out[key] = tensors[key]
    return out


def read_model_weights(model_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Hugging Face checkpoint directory into {name: ndarray}. Spec: IO-9.

    Order tried (as transformers does): model.safetensors, model.safetensors.index.json
    (sharded, via weight_map), pytorch_model.bin, pytorch_model.bin.index.json."""
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
