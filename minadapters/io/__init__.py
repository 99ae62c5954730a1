"""File layer: torch checkpoints without torch, safetensors, atomic writes. Spec: spec/io.md."""

from ..jsonio import read_json
from .atomic import atomic_write, atomic_write_bytes, atomic_write_json
from .files import read_model_weights, read_weights, write_weights
from .safetensors_io import load_safetensors, save_safetensors
from .torch_pickle import load_torch_file
from .torch_save import save_torch_file

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "read_json",
           "read_weights", "write_weights", "read_model_weights", "load_safetensors",
           "save_safetensors", "load_torch_file", "save_torch_file"]
