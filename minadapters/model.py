"""Public model API: AutoModel, the adapter-managing model class and its forward. Spec: API-1.

The forward reads AdapterSetup once, builds a ForwardState and runs the architecture's explicit forward
with AdapterHooks (or NullHooks when no adapter is active).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .adapters_config import ModelAdaptersConfig
from .composition import Fuse, parse_composition
from .concurrency import mutates, reads   # IO-18: forwards share the model, adapter-set changes are exclusive
from .context import AdapterSetup, ForwardState
from .errors import AdapterError, CompositionError, ConfigError, ShapeError, WeightsError
from .hooks import AdapterHooks, NullHooks
from .jsonio import read_json
from .ops import get_backend, get_ops
from .validation import check_adapter_fits_model, check_forward_inputs, check_model_config

_ARCHS = {}


def _arch(model_type):
    if not _ARCHS:
        from .models import bert, gpt2, llama
        for mod in (bert, gpt2, llama):
            for mt in mod.MODEL_TYPES:
                _ARCHS[mt] = mod
    if model_type not in _ARCHS:
        raise ConfigError(f"config.json: model_type={model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(_ARCHS))}.")
    return _ARCHS[model_type]


@dataclass
class ModelOutput:
    """Forward result; attribute and key access like transformers' outputs."""
    last_hidden_state: np.ndarray
    pooler_output: np.ndarray | None = None
    adapter_gating_scores: dict | None = None
    adapter_fusion_attentions: dict | None = None
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key):
        if isinstance(key, int):
            return [v for v in (self.last_hidden_state, self.pooler_output) if v is not None][key]
        return getattr(self, key)

    def keys(self):
        return [k for k in ("last_hidden_state", "pooler_output", "adapter_gating_scores", "adapter_fusion_attentions")
                if getattr(self, k) is not None]


class AdapterModel:
    """A base transformer (HF checkpoint) with adapters 1.3.0's adapter API. Spec: API-1."""

    def __init__(self, arch, config, params, *, dtype=np.float32, backend="numpy", name_or_path="", seed=None):
        self.arch = arch
        self.config = config
        self.raw_config: dict = {}
        self.params = params
        self.dtype = np.dtype(dtype)
        self.ops = get_ops(backend)
        self.backend = backend
        self.name_or_path = name_or_path
        self.rng = np.random.default_rng(seed)
        self.adapters_config = ModelAdaptersConfig()
        self.method_layers: dict = {}
        self.model_level: dict = {}
        self.lm_head_weight = None          # decoders: untied LM head from the checkpoint (generate)
        self._build_method_layers()

    # ---- construction ----------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads (GQA models have fewer than query heads)."""
        return getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.config.num_attention_heads

    def _build_method_layers(self):
        """One method layer per (layer, location), and the model-level method objects (adapters.init)."""
        from .methods.bottleneck import BottleneckLayer
        from .methods.invertible import InvertibleAdapters
        from .methods.lora import LoRALayer
        from .methods.lora_merged import LoRAMergedLayer
        from .methods.prefix_tuning import PrefixTuningLayer, PrefixTuningPool
        from .methods.prompt_tuning import PromptTuning
        from .methods.reft import ReftLayer
        from .methods.shared import SharedParameters
        a = self.arch
        for i in range(self.num_layers):
            lp = a.LAYER_PATH.format(i=i)
            for loc, sub in a.BOTTLENECK_PATHS.items():
                self.method_layers[(i, "bottleneck", loc)] = BottleneckLayer(i, f"{lp}.{sub}", self, loc)
            for key, sub in a.LINEAR_PATHS.items():
                cls = LoRAMergedLayer if key == "selfattn.qkv" else LoRALayer
                self.method_layers[(i, "lora", key)] = cls(i, f"{lp}.{sub}", self, key)
            for loc, sub in a.PREFIX_PATHS.items():
                self.method_layers[(i, "prefix", loc)] = PrefixTuningLayer(i, f"{lp}.{sub}", self, loc)
            self.method_layers[(i, "reft", "output_reft")] = ReftLayer(i, f"{lp}.{a.REFT_PATH}", self)
        self.model_level = {"shared": SharedParameters(self), "prefix_pool": PrefixTuningPool(self),
                            "invertible": InvertibleAdapters(self), "prompt": PromptTuning(self)}

    def embedding_methods(self):
        """Post-embedding methods in adapters' order: invertible adapter first, then prompt tuning."""
        return [self.model_level["invertible"], self.model_level["prompt"]]

    def _all_method_objects(self):
        return list(self.model_level.values()) + list(self.method_layers.values())

    def linear_weight(self, key: str, layer_idx: int) -> tuple:
        """(weight key, bias key) in ``params`` of the base linear at a LoRA location."""
        path = f"{self.arch.LAYER_PATH.format(i=layer_idx)}.{self.arch.LINEAR_PATHS[key]}"
        return path + ".weight", path + ".bias"

    # ---- adapters --------------------------------------------------------------------------------
    @mutates
    def add_adapter(self, adapter_name: str, config=None, overwrite_ok: bool = False, set_active: bool = False):
        """Add an adapter of any method. ``config``: str | dict | config object | JSON path. Spec: API-1."""
        from .configuration import AdapterConfig, DEFAULT_ADAPTER_CONFIG
        cfg = AdapterConfig.load(config if config is not None else DEFAULT_ADAPTER_CONFIG)
        if cfg is None:
            cfg = AdapterConfig.load(DEFAULT_ADAPTER_CONFIG)
        self._check_supported(cfg)
        if overwrite_ok and adapter_name in self.adapters_config:
            self.delete_adapter(adapter_name)
        self.adapters_config.add(adapter_name, cfg)
        try:
            for obj in self._all_method_objects():
                obj.add_adapter(adapter_name, cfg)
            for obj in self._all_method_objects():
                if hasattr(obj, "confirm_adapter"):
                    obj.confirm_adapter(adapter_name, cfg)
        except BaseException:
            self.delete_adapter(adapter_name)   # never leave a half-registered adapter behind
            raise
        if set_active:
            self.set_active_adapters(adapter_name)

    def _check_supported(self, cfg):
        from .configuration import ConfigUnion
        members = cfg.configs if isinstance(cfg, ConfigUnion) else [cfg]
        check_adapter_fits_model(members, hidden_size=self.hidden_size)     # IO-16, before any allocation
        unsupported = getattr(self.arch, "UNSUPPORTED_ARCHITECTURES", ())
        for c in members:
            if c.get("architecture") in unsupported:
                raise ConfigError(f"Adapter config architecture={c.get('architecture')!r} is not supported by "
                                  f"model_type={self.model_type!r}.")

    @mutates
    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.adapters_config:
            return
        for obj in self._all_method_objects():
            obj.delete_adapter(adapter_name)
        del self.adapters_config.adapters[adapter_name]
        for fname, (_, names) in list(self.adapters_config.fusions.items()):
            if adapter_name in names:
                self.delete_adapter_fusion(fname)
        setup = self.adapters_config.active_setup
        if setup is not None and adapter_name in setup.flatten():
            self.adapters_config.active_setup = None

    @property
    def adapters(self):
        return dict(self.adapters_config.adapters)

    @property
    def active_adapters(self):
        return self.adapters_config.active_setup

    @active_adapters.setter
    def active_adapters(self, setup):
        self.set_active_adapters(setup)

    @mutates
    def set_active_adapters(self, adapter_setup, skip_layers=None) -> None:
        """Parse, validate and activate a composition; unknown names raise. Spec: COMP-1."""
        setup = parse_composition(adapter_setup, model_type=self.model_type)
        if setup is not None:
            self._check_names(setup)
        self.reset_adapter()
        self.adapters_config.active_setup = setup
        self.adapters_config.skip_layers = skip_layers

    def _check_names(self, setup):
        for name in sorted(setup.flatten()):
            if name not in self.adapters_config:
                known = ", ".join(repr(n) for n in self.adapters_config) or "none"
                raise CompositionError(f"No adapter with name {name!r} found; known adapters: {known}.")
        self._check_fusions(setup)

    def _check_fusions(self, block):
        from .composition import AdapterCompositionBlock
        if isinstance(block, Fuse) and block.name not in self.adapters_config.fusions:
            raise CompositionError(f"{block!r} needs a fusion layer named {block.name!r}; add it with "
                                   f"add_adapter_fusion({[c if isinstance(c, str) else c.last() for c in block]!r}).")
        if isinstance(block, AdapterCompositionBlock):
            for c in block:
                self._check_fusions(c)

    # ---- fusion ----------------------------------------------------------------------------------
    @mutates
    def add_adapter_fusion(self, adapter_names, config=None, name=None, overwrite_ok=False, set_active=False):
        """Add a fusion layer over ``adapter_names`` at every location they all use. Spec: FUSION-1."""
        from .configuration import AdapterFusionConfig, ADAPTERFUSION_CONFIG_MAP, DEFAULT_ADAPTERFUSION_CONFIG
        if isinstance(adapter_names, Fuse):
            name = name or adapter_names.name
            adapter_names = list(adapter_names.children)
        elif isinstance(adapter_names, str):
            adapter_names = adapter_names.split(",")
        adapter_names = list(adapter_names)
        for n in adapter_names:
            if not isinstance(n, str):
                raise CompositionError(f"add_adapter_fusion: entry {n!r} is not an adapter name.")
            self.adapters_config.require(n)
        name = name or ",".join(adapter_names)
        if config is None:
            config = DEFAULT_ADAPTERFUSION_CONFIG
        if isinstance(config, str):
            if config not in ADAPTERFUSION_CONFIG_MAP:
                raise ConfigError(f"Invalid AdapterFusion config identifier {config!r}; known: "
                                  f"{', '.join(ADAPTERFUSION_CONFIG_MAP)} (or pass a dict / AdapterFusionConfig).")
            config = ADAPTERFUSION_CONFIG_MAP[config]
        elif isinstance(config, dict):
            config = AdapterFusionConfig.from_dict(config)
        elif not isinstance(config, AdapterFusionConfig):
            raise TypeError(f"add_adapter_fusion: config must be an identifier, dict or AdapterFusionConfig; "
                            f"got {type(config).__name__}.")
        if name in self.adapters_config.fusions:
            if not overwrite_ok:
                raise ConfigError(f"An AdapterFusion with the name {name!r} has already been added.")
            self.delete_adapter_fusion(name)
        self._check_fusion_compatible(adapter_names)
        self.adapters_config.fusions[name] = (config, adapter_names)
        for obj in self.method_layers.values():
            if hasattr(obj, "add_fusion_layer"):
                obj.add_fusion_layer(name, config, adapter_names)
        if set_active:
            self.set_active_adapters(Fuse(*adapter_names, name=name))

    def _check_fusion_compatible(self, names):
        from .configuration import BnConfig
        for key in ("mh_adapter", "output_adapter"):
            vals = []
            for n in names:
                members = self.adapters_config.members(n, BnConfig)
                vals.append(bool(members[0].get(key)) if members else None)
            if len(set(vals)) > 1:
                raise ConfigError(f"All given adapters must define the same value for config attribute {key}; "
                                  f"got {dict(zip(names, vals))}.")

    @mutates
    def delete_adapter_fusion(self, adapter_names) -> None:
        name = adapter_names.name if isinstance(adapter_names, Fuse) else (
            ",".join(adapter_names) if isinstance(adapter_names, (list, tuple)) else adapter_names)
        if name not in self.adapters_config.fusions:
            return
        del self.adapters_config.fusions[name]
        for obj in self.method_layers.values():
            if hasattr(obj, "fusions"):
                obj.fusions.pop(name, None)
        setup = self.adapters_config.active_setup
        if setup is not None and _contains_fuse(setup, name):
            self.adapters_config.active_setup = None

    # ---- state dicts -----------------------------------------------------------------------------
    def adapter_state_dict(self, adapter_name: str) -> dict:
        """All parameters of one adapter under adapters 1.3.0's state-dict keys (bare base model)."""
        self.adapters_config.require(adapter_name)
        out = {}
        for obj in self._all_method_objects():
            for k, v in obj.state_dict_items(adapter_name):
                out[k] = v
        return out

    def adapter_param_refs(self, adapter_name: str) -> dict:
        """state-dict key -> (params dict, leaf), to assign loaded arrays in place."""
        return {k: (d, leaf) for obj in self._all_method_objects() for k, d, leaf in obj.param_refs(adapter_name)}

    def fusion_param_refs(self, fusion_name: str) -> dict:
        return {k: (d, leaf) for obj in self.method_layers.values() if hasattr(obj, "fusion_param_refs")
                for k, d, leaf in obj.fusion_param_refs(fusion_name)}

    def fusion_state_dict(self, fusion_name: str) -> dict:
        return {k: d[leaf] for k, (d, leaf) in self.fusion_param_refs(fusion_name).items()}

    # ---- files -----------------------------------------------------------------------------------
    @reads
    def save_adapter(self, save_directory, adapter_name, meta_dict=None, use_safetensors=False):
        from .loading import save_adapter
        save_adapter(self, save_directory, adapter_name, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @mutates
    def load_adapter(self, adapter_name_or_path, config=None, load_as=None, leave_out=None, set_active=False,
                     use_safetensors=None, **kwargs) -> str:
        from .loading import load_adapter
        return load_adapter(self, adapter_name_or_path, load_as=load_as, leave_out=leave_out, set_active=set_active,
                            use_safetensors=use_safetensors)

    @reads
    def save_adapter_fusion(self, save_directory, adapter_names, meta_dict=None, use_safetensors=False):
        from .loading import save_adapter_fusion
        save_adapter_fusion(self, save_directory, adapter_names, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @mutates
    def load_adapter_fusion(self, adapter_fusion_name_or_path, load_as=None, set_active=False,
                            use_safetensors=None, **kwargs) -> str:
        from .loading import load_adapter_fusion
        return load_adapter_fusion(self, adapter_fusion_name_or_path, load_as=load_as, set_active=set_active,
                                   use_safetensors=use_safetensors)

    @reads
    def save_all_adapters(self, save_directory, meta_dict=None, use_safetensors=False):
        """One sub-folder per adapter (with ``config_id``). Spec: API-7."""
        from .setup_files import save_all_adapters
        save_all_adapters(self, save_directory, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @reads
    def save_all_adapter_fusions(self, save_directory, meta_dict=None, use_safetensors=False):
        """One sub-folder per fusion (with ``config_id``). Spec: API-7."""
        from .setup_files import save_all_adapter_fusions
        save_all_adapter_fusions(self, save_directory, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @reads
    def save_adapter_setup(self, save_directory, adapter_setup, meta_dict=None, use_safetensors=False):
        """adapter_setup.json + one sub-folder per adapter / fusion of the setup. Spec: API-7."""
        from .setup_files import save_adapter_setup
        save_adapter_setup(self, save_directory, adapter_setup, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @mutates
    def load_adapter_setup(self, adapter_setup_name_or_path, set_active=False, use_safetensors=False, **kwargs):
        """Load a directory written by save_adapter_setup; returns (adapter_setup, head_setup). Spec: API-7."""
        from .setup_files import load_adapter_setup
        return load_adapter_setup(self, adapter_setup_name_or_path, set_active=set_active,
                                  use_safetensors=use_safetensors)

    # ---- averaging / parameter sharing -----------------------------------------------------------
    @mutates
    def average_adapter(self, adapter_name, adapter_list, weights=None, normalize_weights=True, overwrite_ok=False,
                        set_active=False, combine_strategy="linear", svd_rank=None, **kwargs):
        """Add an adapter whose parameters are a weighted combination of existing adapters. Spec: API-5."""
        if kwargs:
            raise TypeError(f"average_adapter() got unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
        from .averaging import average_adapter
        average_adapter(self, adapter_name, adapter_list, weights=weights, normalize_weights=normalize_weights,
                        overwrite_ok=overwrite_ok, set_active=set_active, combine_strategy=combine_strategy,
                        svd_rank=svd_rank)

    @mutates
    def share_parameters(self, adapter_names, name=None, reference_adapter_name=None):
        """MTL-LoRA: share the reference adapter's lora_A / lora_B among ``adapter_names``. Spec: API-6."""
        from .sharing import share_parameters
        share_parameters(self, adapter_names, name=name, reference_adapter_name=reference_adapter_name)

    @mutates
    def unshare_parameters(self, adapter_names, name=None):
        """Remove the shared group (the adapters keep their current values). Spec: API-6."""
        from .sharing import unshare_parameters
        unshare_parameters(self, adapter_names, name=name)

    def shared_parameters_state_dict(self, name=None) -> dict:
        """``<layer>.shared_parameters.<group>.lora_A|lora_B`` of share_parameters groups. Spec: API-6."""
        from .sharing import shared_parameters_state_dict
        return shared_parameters_state_dict(self, name)

    # ---- merge / reset / eject -------------------------------------------------------------------
    @mutates
    def merge_adapter(self, name: str) -> None:
        """Fold a LoRA-family adapter into the base weights. Spec: LORA-MERGE."""
        self.adapters_config.require(name)
        layers = [l for (i, kind, _), l in self.method_layers.items() if kind == "lora" and name in l.modules]
        if not layers:
            raise ConfigError(f"merge_adapter({name!r}): adapter {name!r} has no LoRA-family modules to merge.")
        for l in layers:
            l.check_mergeable(name)
        for l in layers:
            l.merge(name)

    @mutates
    def reset_adapter(self) -> None:
        """Restore the base weights saved before any merge (bit-identical). Spec: LORA-MERGE."""
        for (i, kind, _), l in self.method_layers.items():
            if kind == "lora":
                l.reset()

    @mutates
    def eject_prefix_tuning(self, name: str) -> None:
        self.adapters_config.require(name)
        self.model_level["prefix_pool"].eject(name)

    # ---- forward ---------------------------------------------------------------------------------
    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> ModelOutput:
        return self.forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)

    @reads
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, *, output_adapter_gating_scores=False,
                output_adapter_fusion_attentions=False, task_ids=None, adapter_input_parallelized=False,
                position_ids=None, past_key_values=None, **kwargs) -> ModelOutput:
        """Run the model with the active adapter setup (AdapterSetup overrides it). Spec: API-2."""
        if kwargs:
            raise TypeError(f"forward() got unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
        past = past_key_values.length if past_key_values is not None else 0
        input_ids, attention_mask, token_type_ids = self._check_inputs(input_ids, attention_mask, token_type_ids, past)
        check_forward_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                             type_vocab_size=getattr(self.config, "type_vocab_size", None))   # Spec: API-2
        arch_kw = {k: v for k, v in (("position_ids", position_ids), ("past_key_values", past_key_values))
                   if v is not None}
        if arch_kw and self.arch.__name__.endswith(".bert"):
            raise TypeError(f"forward(): {', '.join(arch_kw)} only apply to decoder models (gpt2, llama).")
        if position_ids is not None:
            arch_kw["position_ids"] = np.broadcast_to(np.asarray(position_ids, np.int64), input_ids.shape)
        ctx = AdapterSetup.get_context()
        setup = ctx.adapter_setup if ctx is not None else self.adapters_config.active_setup
        if ctx is not None and setup is not None:
            self._check_names(setup)
        fwd = ForwardState(setup=setup, skip_layers=frozenset(self.adapters_config.skip_layers or ()),
                           attention_mask=attention_mask, task_ids=task_ids,
                           output_gating_scores=output_adapter_gating_scores,
                           output_fusion_attentions=output_adapter_fusion_attentions)
        if setup is not None and adapter_input_parallelized and setup.parallel_channels > 1:
            fwd.adapters_parallelized = True
            fwd.original_batch_size = input_ids.shape[0] // setup.parallel_channels
        hk = AdapterHooks(self, fwd) if setup is not None else NullHooks(self.ops)
        if setup is not None:
            for obj in self.model_level.values():
                if hasattr(obj, "prepare"):
                    obj.prepare(fwd, input_ids.shape[0])
        x, pooled = self.arch.forward(self.params, self.config, input_ids, attention_mask, token_type_ids, hk,
                                      self.ops, self.dtype, **arch_kw)
        out = ModelOutput(last_hidden_state=np.ascontiguousarray(x), pooler_output=pooled)
        if output_adapter_gating_scores:
            out.adapter_gating_scores = fwd.gating_scores
        if output_adapter_fusion_attentions:
            out.adapter_fusion_attentions = fwd.fusion_attentions
        return out

    def _check_inputs(self, input_ids, attention_mask, token_type_ids, past=0):
        if input_ids is None:
            raise ValueError("forward() needs input_ids, an integer array of shape (batch, tokens).")
        input_ids = np.asarray(input_ids)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
            raise ShapeError(f"input_ids has shape {input_ids.shape} and dtype {input_ids.dtype}; expected an integer "
                             "array of shape (batch, tokens).")
        V = self.config.vocab_size
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= V):
            raise ValueError(f"input_ids contains ids outside [0, {V}) (min {input_ids.min()}, max {input_ids.max()}).")
        attention_mask = _batch_2d(attention_mask, "attention_mask", (input_ids.shape[0], input_ids.shape[1] + past),
                                   "the shape of input_ids" + (f", plus {past} cached tokens" if past else ""))
        token_type_ids = _batch_2d(token_type_ids, "token_type_ids", input_ids.shape, "the shape of input_ids")
        return input_ids.astype(np.int64), attention_mask, token_type_ids

    def generate(self, input_ids, max_new_tokens=20, attention_mask=None, use_cache=True, **kwargs):
        """Greedy decoding with the active adapters (decoder models). Spec: DEC-6."""
        from .generate import generate
        return generate(self, input_ids, max_new_tokens=max_new_tokens, attention_mask=attention_mask,
                        use_cache=use_cache, **kwargs)

    def adapter_summary(self, as_dict=False):
        from .summary import model_adapter_summary
        return model_adapter_summary(self, as_dict=as_dict)


def _batch_2d(arr, name, want, what):
    """None, or ``arr`` as a 2-D array (a 1-D row gets a batch axis) of shape ``want``."""
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.shape != tuple(want):
        raise ShapeError(f"{name} has shape {arr.shape}; expected {tuple(want)} ({what}).")
    return arr


def _contains_fuse(block, name):
    from .composition import AdapterCompositionBlock
    if isinstance(block, Fuse) and block.name == name:
        return True
    return isinstance(block, AdapterCompositionBlock) and any(_contains_fuse(c, name) for c in block)


class AutoModel:
    """Load an HF checkpoint directory (config.json + model.safetensors / sharded / pytorch_model.bin). Spec: API-1."""

    @staticmethod
    def from_pretrained(path, *, dtype=np.float32, backend=None, seed=None) -> AdapterModel:
        path = os.fspath(path)
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Model directory {path!r} does not exist.")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"No config.json in {path!r}; expected a Hugging Face model directory.")
        raw = read_json(cfg_path, error=ConfigError)
        check_model_config(raw, cfg_path)           # sizes sane before any shape is derived (IO-16)
        if "model_type" not in raw:
            raise ValueError(f"{cfg_path}: no 'model_type' key.")
        arch = _arch(raw["model_type"])
        try:   # one error vocabulary (spec/io.md): config.json problems are ConfigError naming the file
            config = arch.EncoderConfig.from_dict(raw) if hasattr(arch, "EncoderConfig") else arch.Config.from_dict(raw)
        except KeyError as e:
            raise ConfigError(f"{cfg_path}: no {e} key; the {raw['model_type']} config needs it.") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, AdapterError):
                raise
            raise ConfigError(f"{cfg_path}: {e}") from None
        from .io.files import read_model_weights
        weights = arch.normalize_keys(read_model_weights(path), raw["model_type"])
        lm_head = weights.pop("lm_head.weight", None)
        params = _check_params(weights, arch.expected_shapes(config), path, dtype)
        if backend is None:
            backend = get_backend()  # set_backend(), else $MINADAPTERS_BACKEND, else "numpy"
        model = AdapterModel(arch, config, params, dtype=dtype, backend=backend,
                             name_or_path=raw.get("_name_or_path", ""), seed=seed)
        model.raw_config = raw
        if lm_head is not None:
            model.lm_head_weight = np.ascontiguousarray(lm_head, dtype=dtype)
        if lm_head is not None:
            model.lm_head_weight = np.ascontiguousarray(lm_head, dtype=dtype)
        model.model_dir = path      # prompt tuning's from_string init reads <model_dir>/tokenizer.json
        return model


def _check_params(weights, shapes, path, dtype):
    missing = [k for k in shapes if k not in weights]
    if missing:
        raise WeightsError(f"{path}: the checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}.")
    out = {}
    for k, v in weights.items():
        if k in shapes and tuple(v.shape) != tuple(shapes[k]):
            raise ShapeError(f"{path}: weight {k!r} has shape {tuple(v.shape)}; config.json implies {shapes[k]}.")
        out[k] = np.ascontiguousarray(v, dtype=dtype if np.issubdtype(v.dtype, np.floating) else v.dtype)
    return out
