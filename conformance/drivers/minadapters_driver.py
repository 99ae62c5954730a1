"""Driver for minadapters (float32 on a selectable backend). Imports minadapters only when constructed.

    --driver=minadapters           backend from MINADAPTERS_BACKEND (default numpy)
    --driver=minadapters-numpy     NumPy backend
    --driver=minadapters-native    native backend (BackendUnavailableError if it cannot load: no silent fallback)
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

# capability -> minadapters module that must exist for it
METHOD_MODULES = {
    "method:bottleneck": "minadapters.methods.bottleneck",
    "method:compacter": "minadapters.methods.phm",
    "method:invertible": "minadapters.methods.invertible",
    "method:lora": "minadapters.methods.lora",
    "method:ia3": "minadapters.methods.lora",
    "method:vera": "minadapters.methods.lora",       # VeRA / DoRA live in lora_modules.py
    "method:dora": "minadapters.methods.lora",
    "method:dvora": "minadapters.methods.lora",
    "method:mtl_lora": "minadapters.methods.lora",
    "method:union": "minadapters.configuration.union",      # members: bottleneck, LoRA/IA3, prefix, ReFT
    "method:mam": "minadapters.configuration.union",
    "method:unipelt": "minadapters.configuration.union",
    "method:prefix_tuning": "minadapters.methods.prefix_tuning",
    "method:prompt_tuning": "minadapters.methods.prompt_tuning",
    "method:reft": "minadapters.methods.reft",
    "arch:gpt2": "minadapters.models.gpt2",
    "arch:llama": "minadapters.models.llama",
    "arch:distilbert": "minadapters.models.distilbert",
    "arch:mistral": "minadapters.models.llama_like",
    "arch:qwen2": "minadapters.models.llama_like",
    "arch:deberta-v2": "minadapters.models.deberta",
    "arch:bart": "minadapters.models.bart",
    "arch:t5": "minadapters.models.t5",
}
BLOCKS = ("Stack", "Fuse", "Split", "BatchSplit", "Parallel", "MultiTask", "Average")


def _exists(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


def minadapters_capabilities() -> frozenset:
    """What this minadapters build can do, from the modules that exist."""
    caps = {"arch:bert", "arch:roberta", "io:save", "io:load", "op:fusion", "op:task_ids", "config:strings"}
    if _exists("minadapters.heads"):
        caps.add("op:heads")
    caps |= {f"block:{b}" for b in BLOCKS}
    caps |= {c for c, m in METHOD_MODULES.items() if _exists(m)}
    if "method:lora" in caps:
        caps |= {"op:merge", "op:reset"}
    if "method:prefix_tuning" in caps:
        caps.add("op:eject")
    return frozenset(caps)


class MinadaptersDriver:
    """minadapters' public API behind the Driver protocol."""

    def __init__(self, *, dtype=np.float32, backend=None, name="minadapters"):
        import minadapters
        self._ma = minadapters
        self.dtype = np.dtype(dtype)
        self.backend = backend or os.environ.get("MINADAPTERS_BACKEND", "numpy")
        from minadapters.ops import get_ops
        get_ops(self.backend)                      # raises BackendUnavailableError now, not mid-suite
        self.name = name if backend is None else f"{name}-{self.backend}"
        self.version = f"{minadapters.__version__} ({self.backend}, {self.dtype.name})"
        self.precision = self.dtype.name          # declared, not read from the version string
        self.capabilities = minadapters_capabilities()

    def load_model(self, model_dir):
        return self._ma.AutoModel.from_pretrained(model_dir, dtype=self.dtype, backend=self.backend)

    def add_adapter(self, model, name, config):
        model.add_adapter(name, config=config)

    def get_adapter_weights(self, model, name):
        return {k: np.array(v, dtype=np.float32) for k, v in model.adapter_state_dict(name).items()}

    def set_adapter_weights(self, model, name, tensors):
        _assign(model.adapter_param_refs(name), tensors, self.dtype, f"adapter {name!r}")

    def get_fusion_weights(self, model, fusion_name):
        return {k: np.array(v, dtype=np.float32) for k, v in model.fusion_state_dict(fusion_name).items()}

    def set_fusion_weights(self, model, fusion_name, tensors):
        _assign(model.fusion_param_refs(fusion_name), tensors, self.dtype, f"fusion {fusion_name!r}")

    def set_active(self, model, setup):
        from minadapters.composition import composition_from_dict
        model.set_active_adapters(None if setup is None else composition_from_dict(setup))

    def forward(self, model, input_ids, attention_mask, **kw):
        return np.asarray(model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state)

    def save_adapter(self, model, name, directory):
        model.save_adapter(directory, name)

    def load_adapter(self, model, directory, load_as=None):
        return model.load_adapter(directory, load_as=load_as)

    def add_fusion(self, model, names, config=None):
        model.add_adapter_fusion(list(names), config)
        return ",".join(names)

    def merge(self, model, name):
        model.merge_adapter(name)

    def reset(self, model):
        model.reset_adapter()

    def eject(self, model, name):
        model.eject_prefix_tuning(name)

    # ---- prediction heads (capability op:heads) ----------------------------------------------------
    def load_head_model(self, model_dir):
        return self._ma.AutoAdapterModel.from_pretrained(model_dir, dtype=self.dtype, backend=self.backend)

    def add_head(self, model, name, config):
        model.add_prediction_head_from_config(name, dict(config), overwrite_ok=True, set_active=True)

    def get_head_weights(self, model, name):
        return {k: np.array(v, dtype=np.float32) for k, v in model.head_state_dict(name).items()}

    def set_head_weights(self, model, name, tensors):
        _assign(model.heads[name].param_refs(model), tensors, self.dtype, f"head {name!r}")

    def set_active_head(self, model, heads):
        model.active_head = heads

    def forward_heads(self, model, input_ids, attention_mask, **kw):
        out = model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        outs = list(out) if isinstance(out, self._ma.MultiHeadOutput) else [out]
        return [{k: np.asarray(v) for k, v in o.items() if isinstance(v, np.ndarray)} for o in outs]


def _assign(refs, tensors, dtype, what):
    unknown = sorted(set(tensors) - set(refs))
    if unknown:
        raise KeyError(f"{what}: unknown weight keys {unknown[:3]} (known e.g. {sorted(refs)[:3]})")
    for k, arr in tensors.items():
        d, leaf = refs[k]
        if tuple(np.shape(arr)) != tuple(d[leaf].shape):
            raise ValueError(f"{what}: {k} has shape {np.shape(arr)}, but should be {tuple(d[leaf].shape)}")
        d[leaf] = np.array(arr, dtype=dtype)


def make_driver():
    return MinadaptersDriver()


def make_numpy_driver():
    return MinadaptersDriver(backend="numpy")


def make_native_driver():
    return MinadaptersDriver(backend="native")
