"""Public model API: AutoModel, the adapter-managing model class and its forward. Spec: API-1.

The forward reads AdapterSetup once, builds a ForwardState and runs the architecture's explicit forward
with ModelHooks (or NullHooks when no adapter is active). Spec: ARCH-1 (what a family declares).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from . import averaging, generate as _generate, loading, sentence, setup_files, sharing, summary
from .adapters_config import ModelAdaptersConfig
from .composition import AdapterCompositionBlock, Fuse, parse_composition
from .configuration import (ADAPTERFUSION_CONFIG_MAP, DEFAULT_ADAPTER_CONFIG, DEFAULT_ADAPTERFUSION_CONFIG,
                            AdapterConfig, AdapterFusionConfig, BnConfig, ConfigUnion, LoRAConfig, MTLLoRAConfig,
                            PrefixTuningConfig, PromptTuningConfig, ReftConfig)
from .concurrency import mutates, reads   # IO-18: forwards share the model, adapter-set changes are exclusive
from .context import AdapterSetup, ForwardState
from .errors import AdapterError, CompositionError, ConfigError, FusionNotFoundError, ShapeError, WeightsError
from .hooks import ModelHooks, NullHooks
from .hub import resolve_adapter_dir, resolve_model_dir
from .io.files import read_model_weights
from .jsonio import read_json
from .methods.bottleneck import BottleneckLayer
from .methods.invertible import InvertibleAdapters
from .methods.lora import LoRALayer
from .methods.lora_merged import LoRAMergedLayer
from .methods.prefix_tuning import PrefixTuningLayer, PrefixTuningPool
from .methods.prompt_tuning import PromptTuning
from .methods.reft import ReftLayer
from .methods.shared import SharedParameters
from .models import LayerKey, architecture
from .ops import get_backend, get_ops
from .outputs import ModelOutput
from .training.api import TrainingMixin
from .validation import check_adapter_fits_model, check_forward_inputs, check_model_config

METHOD_OF_CONFIG = ((BnConfig, "bottleneck"), (LoRAConfig, "lora"), (MTLLoRAConfig, "mtl_lora"),
                    (PrefixTuningConfig, "prefix_tuning"), (PromptTuningConfig, "prompt_tuning"), (ReftConfig, "reft"))
# Inputs forward() validates itself; a family may declare more (passed through as arrays).
KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
                          "past_key_values", "decoder_input_ids", "decoder_attention_mask", "encoder_outputs"})
# Method layer class per hook kind (the fused q/k/v linear has its own LoRA layer).
LAYER_CLASSES = {"bottleneck": BottleneckLayer, "lora": LoRALayer, "prefix": PrefixTuningLayer, "reft": ReftLayer}


def _methods_of(config) -> set:
    """adapters' method names a config needs (a union: each member's; inv_adapter: "invertible")."""
    members = config.configs if isinstance(config, ConfigUnion) else [config]
    out = {name for c in members for cls, name in METHOD_OF_CONFIG if isinstance(c, cls)}
    out |= {"invertible" for c in members if isinstance(c, BnConfig) and c.get("inv_adapter")}
    return out


class AdapterModel(TrainingMixin):
    """A base transformer (HF checkpoint) with adapters 1.3.0's adapter API (training: TrainingMixin). Spec: API-1."""

    def __init__(self, arch, config, params, *, dtype=np.float32, backend="numpy", name_or_path="", seed=None):
        self.arch = arch
        self.config = config
        self.raw_config: dict = {}
        self.params = params
        self.dtype = np.dtype(dtype)
        self.set_backend(backend)
        self.name_or_path = name_or_path
        self.rng = np.random.default_rng(seed)
        self.adapters_config = ModelAdaptersConfig()
        self.lm_head_weight = None          # decoders: untied LM head from the checkpoint (generate)
        self.lm_head_bias = None            # its bias, where the family has one (GPT-J; BART's final_logits_bias)
        self.model_dir = None               # the checkpoint directory (prompt tuning's from_string reads its tokenizer)
        self.tokenizer_name_or_path = None  # overrides where from_string / encode find a tokenizer
        self.parameter_shares: dict = {}    # share_parameters groups (MTL-LoRA)
        self.generation_config: dict = {}   # the checkpoint's generation_config.json (generate's defaults)
        self._build_method_layers()

    def set_backend(self, name: str) -> None:
        """Switch this model's compute backend ("numpy", "native", ...). Spec: OPS-0."""
        self.ops = get_ops(name)
        self.backend = self.ops.name

    def __repr__(self):
        active = self.adapters_config.active_setup
        return (f"AdapterModel(model_type={self.model_type!r}, layers={self.num_layers}, hidden={self.hidden_size}, "
                f"backend={self.backend!r}, adapters={list(self.adapters_config)}, active={active!r})")

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
        """One method layer per declared hook of every layer of every stack (from the Architecture record), and
        the model-level method objects. Spec: ARCH-1."""
        self.method_layers: dict = {}
        self.hook_table = {s.name: [{} for _ in range(self.arch.num_layers(self.config, s))] for s in self.arch.stacks}
        for key, path, weights_path in self.arch.method_layer_keys(self.config):
            cls = LoRAMergedLayer if key.location == "selfattn.qkv" else LAYER_CLASSES[key.kind]
            layer = cls(key, path, self, weights_path)
            self.method_layers[key] = layer
            self.hook_table[key.stack][key.layer][key.location] = layer
        self.model_level = {"shared": SharedParameters(self), "prefix_pool": PrefixTuningPool(self),
                            "invertible": InvertibleAdapters(self), "prompt": PromptTuning(self)}

    def embedding_methods(self, stack: str):
        """Post-embedding methods of ``stack`` in adapters' order: invertible adapter, then prompt tuning (first
        stack only, as adapters applies them to the encoder's embeddings)."""
        if stack != self.arch.stacks[0].name:
            return []
        return [self.model_level["invertible"], self.model_level["prompt"]]

    def _all_method_objects(self):
        return list(self.model_level.values()) + list(self.method_layers.values())

    def layers_of(self, kind: str):
        """The method layers of one kind ("lora", "bottleneck", "prefix", "reft"), in build order."""
        return [layer for key, layer in self.method_layers.items() if key.kind == kind]

    def method_layer(self, kind: str, location: str, layer: int, stack: str | None = None):
        """The method layer at (stack, layer, kind, location); the first stack when ``stack`` is None."""
        return self.method_layers[LayerKey(stack or self.arch.stacks[0].name, layer, kind, location)]

    def linear_weight(self, key: str, layer_idx: int, stack: str | None = None) -> tuple:
        """(weight key, bias key) in ``params`` of the base linear at a LoRA location."""
        return self.method_layer("lora", key, layer_idx, stack).weight_keys()

    # ---- adapters ----------------------------------------------------------------------------------
    @mutates
    def add_adapter(self, adapter_name: str, config=None, overwrite_ok: bool = False, set_active: bool = False):
        """Add an adapter of any method. ``config``: str | dict | config object | JSON path. Spec: API-1."""
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
                obj.confirm_adapter(adapter_name, cfg)
        except BaseException:
            self.delete_adapter(adapter_name)   # never leave a half-registered adapter behind
            raise
        if set_active:
            self.set_active_adapters(adapter_name)

    def _check_supported(self, cfg):
        check_adapter_fits_model(cfg.configs if isinstance(cfg, ConfigUnion) else [cfg],
                                 hidden_size=self.hidden_size)     # IO-16, before any allocation
        unsupported = sorted(m for m in _methods_of(cfg) if m not in self.arch.methods)
        if unsupported:
            raise ConfigError(f"Adapter config architecture={unsupported[0]!r} is not supported by "
                              f"model_type={self.model_type!r} (family {self.arch.name!r} supports "
                              f"{', '.join(sorted(self.arch.methods))}).")

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
        setup = parse_composition(adapter_setup)        # block support: the family's record (_check_blocks)
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
        self._check_blocks(setup)

    def _check_blocks(self, block):
        """Blocks the family declares, and a fusion layer for every Fuse."""
        if not isinstance(block, AdapterCompositionBlock):
            return
        if type(block).__name__ not in self.arch.blocks:
            raise CompositionError(f"Models of type {self.model_type} don't support adapter composition using "
                                   f"{type(block).__name__}.")
        if isinstance(block, Fuse) and block.name not in self.adapters_config.fusions:
            raise FusionNotFoundError(f"{block!r} needs a fusion layer named {block.name!r}; add it with "
                                      f"add_adapter_fusion({[c if isinstance(c, str) else c.last() for c in block]!r}).")
        for c in block:
            self._check_blocks(c)

    # ---- fusion ----------------------------------------------------------------------------------
    @mutates
    def add_adapter_fusion(self, adapter_names, config=None, name=None, overwrite_ok=False, set_active=False):
        """Add a fusion layer over ``adapter_names`` at every location they all use. Spec: FUSION-1."""
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
        config = _fusion_config(config)
        if name in self.adapters_config.fusions:
            if not overwrite_ok:
                raise ConfigError(f"An AdapterFusion with the name {name!r} has already been added.")
            self.delete_adapter_fusion(name)
        self._check_fusion_compatible(adapter_names)
        self.adapters_config.fusions[name] = (config, adapter_names)
        members = [self.adapters_config.get(n) for n in adapter_names]
        for obj in self.method_layers.values():
            obj.add_fusion_layer(name, config, adapter_names, members)
        if set_active:
            self.set_active_adapters(Fuse(*adapter_names, name=name))

    def _check_fusion_compatible(self, names):
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
            obj.delete_fusion_layer(name)
        setup = self.adapters_config.active_setup
        if setup is not None and _contains_fuse(setup, name):
            self.adapters_config.active_setup = None

    # ---- state dicts -----------------------------------------------------------------------------
    def adapter_state_dict(self, adapter_name: str) -> dict:
        """All parameters of one adapter under adapters 1.3.0's state-dict keys (bare base model)."""
        self.adapters_config.require(adapter_name)
        return {k: v for obj in self._all_method_objects() for k, v in obj.state_dict_items(adapter_name)}

    def adapter_param_refs(self, adapter_name: str) -> dict:
        """state-dict key -> (params dict, leaf), to assign loaded arrays in place."""
        return {k: (d, leaf) for obj in self._all_method_objects() for k, d, leaf in obj.param_refs(adapter_name)}

    def fusion_param_refs(self, fusion_name: str) -> dict:
        return {k: (d, leaf) for obj in self.method_layers.values() for k, d, leaf in obj.fusion_param_refs(fusion_name)}

    def fusion_state_dict(self, fusion_name: str) -> dict:
        return {k: d[leaf] for k, (d, leaf) in self.fusion_param_refs(fusion_name).items()}

    # ---- files -----------------------------------------------------------------------------------
    @reads
    def save_adapter(self, save_directory, adapter_name, meta_dict=None, use_safetensors=False):
        loading.save_adapter(self, save_directory, adapter_name, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @mutates
    def load_adapter(self, adapter_name_or_path, config=None, load_as=None, leave_out=None, set_active=False,
                     use_safetensors=None, **kwargs) -> str:
        adapter_name_or_path = resolve_adapter_dir(adapter_name_or_path, **kwargs)   # HF ids: cache or download
        name = loading.load_adapter(self, adapter_name_or_path, load_as=load_as, leave_out=leave_out,
                                    set_active=set_active, use_safetensors=use_safetensors)
        if _has_unloaded_head(adapter_name_or_path):
            warnings.warn(f"{adapter_name_or_path}: the prediction head saved with adapter {name!r} is not loaded; "
                          "this bare model has no heads (load the model with AutoAdapterModel to use it).",
                          stacklevel=3)
        return name

    @reads
    def save_adapter_fusion(self, save_directory, adapter_names, meta_dict=None, use_safetensors=False):
        loading.save_adapter_fusion(self, save_directory, adapter_names, meta_dict=meta_dict,
                                    use_safetensors=use_safetensors)

    @mutates
    def load_adapter_fusion(self, adapter_fusion_name_or_path, load_as=None, set_active=False,
                            use_safetensors=None, **kwargs) -> str:
        adapter_fusion_name_or_path = resolve_adapter_dir(adapter_fusion_name_or_path, "adapter_fusion_config.json",
                                                          **kwargs)
        return loading.load_adapter_fusion(self, adapter_fusion_name_or_path, load_as=load_as, set_active=set_active,
                                           use_safetensors=use_safetensors)

    @reads
    def save_all_adapters(self, save_directory, meta_dict=None, use_safetensors=False):
        """One sub-folder per adapter (with ``config_id``). Spec: API-7."""
        setup_files.save_all_adapters(self, save_directory, meta_dict=meta_dict, use_safetensors=use_safetensors)

    @reads
    def save_all_adapter_fusions(self, save_directory, meta_dict=None, use_safetensors=False):
        """One sub-folder per fusion (with ``config_id``). Spec: API-7."""
        setup_files.save_all_adapter_fusions(self, save_directory, meta_dict=meta_dict,
                                             use_safetensors=use_safetensors)

    @reads
    def save_adapter_setup(self, save_directory, adapter_setup, meta_dict=None, use_safetensors=False):
        """adapter_setup.json + one sub-folder per adapter / fusion of the setup. Spec: API-7."""
        setup_files.save_adapter_setup(self, save_directory, adapter_setup, meta_dict=meta_dict,
                                       use_safetensors=use_safetensors)

    @mutates
    def load_adapter_setup(self, adapter_setup_name_or_path, set_active=False, use_safetensors=False, **kwargs):
        """Load a directory written by save_adapter_setup; returns (adapter_setup, head_setup). Spec: API-7."""
        return setup_files.load_adapter_setup(self, adapter_setup_name_or_path, set_active=set_active,
                                              use_safetensors=use_safetensors)

    # ---- averaging / parameter sharing -----------------------------------------------------------
    @mutates
    def average_adapter(self, adapter_name, adapter_list, weights=None, normalize_weights=True, overwrite_ok=False,
                        set_active=False, combine_strategy="linear", svd_rank=None, **kwargs):
        """Add an adapter whose parameters are a weighted combination of existing adapters. Spec: API-5."""
        if kwargs:
            raise TypeError(f"average_adapter() got unexpected keyword arguments: {', '.join(sorted(kwargs))}.")
        averaging.average_adapter(self, adapter_name, adapter_list, weights=weights,
                                  normalize_weights=normalize_weights, overwrite_ok=overwrite_ok,
                                  set_active=set_active, combine_strategy=combine_strategy, svd_rank=svd_rank)

    @mutates
    def share_parameters(self, adapter_names, name=None, reference_adapter_name=None):
        """MTL-LoRA: share the reference adapter's lora_A / lora_B among ``adapter_names``. Spec: API-6."""
        sharing.share_parameters(self, adapter_names, name=name, reference_adapter_name=reference_adapter_name)

    @mutates
    def unshare_parameters(self, adapter_names, name=None):
        """Remove the shared group (the adapters keep their current values). Spec: API-6."""
        sharing.unshare_parameters(self, adapter_names, name=name)

    def shared_parameters_state_dict(self, name=None) -> dict:
        """``<layer>.shared_parameters.<group>.lora_A|lora_B`` of share_parameters groups. Spec: API-6."""
        return sharing.shared_parameters_state_dict(self, name)

    # ---- merge / reset / eject -------------------------------------------------------------------
    @mutates
    def merge_adapter(self, name: str) -> None:
        """Fold a LoRA-family adapter into the base weights. Spec: LORA-MERGE."""
        self.adapters_config.require(name)
        layers = [l for l in self.layers_of("lora") if name in l.modules]
        if not layers:
            raise ConfigError(f"merge_adapter({name!r}): adapter {name!r} has no LoRA-family modules to merge.")
        for l in layers:
            l.check_mergeable(name)
        for l in layers:
            l.merge(name)

    @mutates
    def reset_adapter(self) -> None:
        """Restore the base weights saved before any merge (bit-identical). Spec: LORA-MERGE."""
        for l in self.layers_of("lora"):
            l.reset()

    @mutates
    def eject_prefix_tuning(self, name: str) -> None:
        self.adapters_config.require(name)
        self.model_level["prefix_pool"].eject(name)

    # ---- forward ---------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Positional arguments in the family's order (``arch.call_order``: transformers' base-model signature,
        e.g. input_ids, attention_mask, decoder_input_ids, decoder_attention_mask for BART)."""
        order = self.arch.call_order
        if len(args) > len(order):
            raise TypeError(f"{type(self).__name__}() takes at most {len(order)} positional arguments "
                            f"({', '.join(order)}); got {len(args)}.")
        for name, value in zip(order, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}.")
            kwargs[name] = value
        return self.forward(**kwargs)

    @reads
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, *, position_ids=None,
                inputs_embeds=None, past_key_values=None, output_hidden_states=False, output_attentions=False,
                return_dict=True, output_adapter_gating_scores=False, output_adapter_fusion_attentions=False,
                task_ids=None, adapter_input_parallelized=False, **kwargs):
        """Run the model with the active adapter setup (AdapterSetup overrides it). Spec: API-2, COMP-PARALLEL.

        Returns a ModelOutput (a tuple of its present fields when ``return_dict=False``)."""
        unknown = sorted(k for k in kwargs if k not in self.arch.inputs)
        if unknown:
            raise TypeError(f"forward() got unexpected keyword arguments: {', '.join(unknown)} (model_type="
                            f"{self.model_type!r} takes {', '.join(sorted(self.arch.inputs))}).")
        inputs = self._check_inputs(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                    position_ids=position_ids, inputs_embeds=inputs_embeds,
                                    past_key_values=past_key_values, **kwargs)
        check_forward_inputs(inputs.get("input_ids", np.zeros((1, 1), np.int64)), inputs.get("attention_mask"),
                             inputs.get("token_type_ids"), inputs.get("position_ids"),
                             # type_vocab_size 0 (DeBERTa's default): no token types, the ids are ignored as
                             # transformers ignores them
                             type_vocab_size=getattr(self.config, "type_vocab_size", None) or None)   # API-2, IO-16
        if "decoder_input_ids" in inputs or "decoder_attention_mask" in inputs:
            check_forward_inputs(inputs.get("decoder_input_ids", np.zeros((1, 1), np.int64)),
                                 inputs.get("decoder_attention_mask"))
        for key in ("attention_mask", "decoder_attention_mask"):
            if key in inputs:
                inputs[key] = inputs[key].astype(np.int64)
        ctx = AdapterSetup.get_context()
        setup = ctx.adapter_setup if ctx is not None else self.adapters_config.active_setup
        if ctx is not None and setup is not None:
            self._check_names(setup)
        fwd = ForwardState(setup=setup, skip_layers=frozenset(self.adapters_config.skip_layers or ()),
                           task_ids=task_ids, output_gating_scores=output_adapter_gating_scores,
                           output_fusion_attentions=output_adapter_fusion_attentions)
        inputs = self._replicate_for_channels(inputs, setup, fwd, adapter_input_parallelized)
        fwd.attention_mask = inputs.get("attention_mask")
        fwd.decoder_attention_mask = inputs.get("decoder_attention_mask")
        hooks = ModelHooks(self, fwd) if setup is not None else NullHooks(self.ops)
        if setup is not None:
            rows = _rows(inputs)
            for obj in self.model_level.values():
                obj.prepare(fwd, rows)
        flags = {k: True for k, v in (("output_hidden_states", output_hidden_states),
                                      ("output_attentions", output_attentions)) if v}
        fields = self.arch.forward(self.params, self.config, hooks, self.ops, self.dtype, **flags, **inputs)
        out = ModelOutput(**{k: v for k, v in fields.items() if v is not None})
        out.last_hidden_state = np.ascontiguousarray(out.last_hidden_state)
        if output_adapter_gating_scores:
            out.adapter_gating_scores = fwd.gating_scores
        if output_adapter_fusion_attentions:
            out.adapter_fusion_attentions = fwd.fusion_attentions
        return out if return_dict else out.to_tuple()

    def _replicate_for_channels(self, inputs, setup, fwd, already):
        """Parallel at the edge: replicate every batch input once per channel (channel-major) and record the
        rows per channel; rows of one channel are identical until the first adapter. Spec: COMP-PARALLEL."""
        rows = _rows(inputs)
        channels = setup.parallel_channels if setup is not None else 1
        fwd.channels, fwd.original_batch_size = channels, rows
        if channels == 1:
            return inputs
        if inputs.get("past_key_values") is not None:
            raise CompositionError(f"{setup!r} multiplies the batch by {channels}; it cannot run with a KV cache.")
        if already:
            if rows % channels:
                raise CompositionError(f"adapter_input_parallelized=True but the batch has {rows} rows, not a "
                                       f"multiple of the {channels} channels of {setup!r}.")
            fwd.original_batch_size = rows // channels
            return inputs
        return {k: (v if v is None or k == "past_key_values" else self.ops.repeat_batch(v, channels))
                for k, v in inputs.items()}

    def _check_inputs(self, **given):
        """Validate the forward's inputs against the family's declared inputs; returns those given. Spec: API-2."""
        given = {k: v for k, v in given.items() if v is not None}
        for k in set(given) - KNOWN_INPUTS:             # other inputs a family declares
            given[k] = np.asarray(given[k])
        extra = sorted(set(given) - set(self.arch.inputs))
        if extra:
            raise TypeError(f"forward(): {', '.join(extra)} do not apply to model_type={self.model_type!r} "
                            f"(it takes {', '.join(sorted(self.arch.inputs))}).")
        if self.arch.is_encoder_decoder:
            return self._check_encdec_inputs(given)
        return self._check_encoder_inputs(given, given["past_key_values"].length if "past_key_values" in given else 0)

    def _check_encoder_inputs(self, given, past):
        """input_ids / inputs_embeds, attention_mask (covering ``past`` cached tokens), token types, positions."""
        ids, embeds = given.get("input_ids"), given.get("inputs_embeds")
        if (ids is None) == (embeds is None):
            raise ValueError("forward() needs exactly one of input_ids (an integer array of shape (batch, tokens)) "
                             "and inputs_embeds (a float array of shape (batch, tokens, hidden)).")
        if ids is not None:
            ids = given["input_ids"] = _int_2d(ids, "input_ids", None, "(batch, tokens)")
            V = self.config.vocab_size
            if ids.size and (ids.min() < 0 or ids.max() >= V):
                raise ValueError(f"input_ids contains ids outside [0, {V}) (min {ids.min()}, max {ids.max()}).")
            shape = ids.shape
        else:
            embeds = np.asarray(embeds)
            if embeds.ndim == 2:
                embeds = embeds[None]
            E = getattr(self.config, "embedding_size", None) or self.hidden_size   # word-embedding width
            if embeds.ndim != 3 or embeds.shape[-1] != E or not np.issubdtype(embeds.dtype, np.floating):
                raise ShapeError(f"inputs_embeds has shape {embeds.shape} and dtype {embeds.dtype}; expected floats "
                                 f"of shape (batch, tokens, {E}).")
            given["inputs_embeds"] = np.ascontiguousarray(embeds, dtype=self.dtype)
            shape = embeds.shape[:2]
        if "attention_mask" in given:
            given["attention_mask"] = _mask_2d(given["attention_mask"], (shape[0], shape[1] + past),
                                               "the shape of input_ids" + (f", plus {past} cached tokens" if past
                                                                           else ""))
        if "token_type_ids" in given:
            given["token_type_ids"] = _int_2d(given["token_type_ids"], "token_type_ids", shape,
                                              "the shape of input_ids")
        if "position_ids" in given:
            pos = np.asarray(given["position_ids"])
            if not np.issubdtype(pos.dtype, np.integer):
                raise ShapeError(f"position_ids has dtype {pos.dtype}; expected integers.")
            try:
                pos = np.ascontiguousarray(np.broadcast_to(pos.astype(np.int64), shape))
            except ValueError:
                raise ShapeError(f"position_ids has shape {pos.shape}; expected {shape} (or broadcastable).") from None
            given["position_ids"] = pos
        return given

    def _check_encdec_inputs(self, given):
        """Encoder-decoder inputs: the encoder's (input_ids | inputs_embeds | encoder_outputs, attention_mask) and
        the decoder's (decoder_input_ids, decoder_attention_mask covering the cached tokens). Spec: ENCDEC-1."""
        enc = given.pop("encoder_outputs", None)
        if enc is not None:
            enc = encoder_hidden_array(enc, self.hidden_size, self.dtype)
            if "input_ids" in given or "inputs_embeds" in given:
                given.pop("input_ids", None)           # transformers: given encoder outputs, the encoder is skipped
                given.pop("inputs_embeds", None)
            given["encoder_outputs"] = enc
            if "attention_mask" in given:
                given["attention_mask"] = _mask_2d(given["attention_mask"], enc.shape[:2],
                                                   "the shape of encoder_outputs' hidden states (batch, tokens)")
        else:
            self._check_encoder_inputs(given, 0)
        past = given["past_key_values"].length if "past_key_values" in given else 0
        dec = given.get("decoder_input_ids")
        if dec is not None:
            dec = given["decoder_input_ids"] = _int_2d(dec, "decoder_input_ids", None, "(batch, tokens)")
            V = self.config.vocab_size
            if dec.size and (dec.min() < 0 or dec.max() >= V):
                raise ValueError(f"decoder_input_ids contains ids outside [0, {V}) (min {dec.min()}, max {dec.max()}).")
            if dec.shape[0] != _rows(given):
                raise ShapeError(f"decoder_input_ids has {dec.shape[0]} rows but the encoder input has "
                                 f"{_rows(given)}; both stacks take one batch.")
        if "decoder_attention_mask" in given:
            if dec is None:
                raise ValueError("decoder_attention_mask was given without decoder_input_ids.")
            given["decoder_attention_mask"] = _mask_2d(
                given["decoder_attention_mask"], (dec.shape[0], dec.shape[1] + past),
                "the shape of decoder_input_ids" + (f", plus {past} cached tokens" if past else ""),
                "decoder_attention_mask")
        return given

    def generate(self, input_ids, max_new_tokens=20, attention_mask=None, use_cache=True, **kwargs):
        """Greedy decoding with the active adapters (decoder models). Spec: DEC-6."""
        return _generate.generate(self, input_ids, max_new_tokens=max_new_tokens, attention_mask=attention_mask,
                                  use_cache=use_cache, **kwargs)

    def encode(self, sentences, batch_size=32, normalize_embeddings=False, **kwargs):
        """Sentence embeddings (sentence-transformers directories: pooling, Normalize). Spec: ST-1."""
        return sentence.encode(self, sentences, batch_size=batch_size, normalize_embeddings=normalize_embeddings, **kwargs)

    def adapter_summary(self, as_dict=False):
        return summary.model_adapter_summary(self, as_dict=as_dict)

    def loaded_from_checkpoint(self, weights: dict) -> None:
        """Called by from_pretrained with every weight of the checkpoint (task heads included); the bare model
        keeps nothing more, AdapterModel classes with heads convert a static head (heads/)."""


# a static head_config.json of these task classes describes the checkpoint's own LM head, which the bare
# model already uses for generate (no warning then)
_OWN_LM_HEADS = ("GPT2LMHeadModel", "LlamaForCausalLM")


def _has_unloaded_head(path) -> bool:
    """The adapter directory holds a head the bare model cannot use (spec HEAD-8)."""
    file = os.path.join(path, "head_config.json")
    if not os.path.isfile(file):
        return False
    try:
        saved = read_json(file)
    except WeightsError:
        return True
    return not (isinstance(saved, dict) and saved.get("config") is None and saved.get("model_class") in _OWN_LM_HEADS)


def _rows(inputs) -> int:
    for key in ("input_ids", "inputs_embeds", "encoder_outputs"):
        if inputs.get(key) is not None:
            return inputs[key].shape[0]
    raise ValueError("forward() needs input_ids, inputs_embeds or encoder_outputs.")


def encoder_hidden_array(encoder_outputs, hidden: int, dtype):
    """The encoder's last hidden state from ``encoder_outputs``: a ModelOutput (its encoder_last_hidden_state when
    it is a whole encoder-decoder output, else last_hidden_state), a tuple / list (element 0, as transformers'
    BaseModelOutput tuples) or an array (B, Ts, D). Spec: ENCDEC-1."""
    if isinstance(encoder_outputs, ModelOutput):
        x = (encoder_outputs.encoder_last_hidden_state if encoder_outputs.encoder_last_hidden_state is not None
             else encoder_outputs.last_hidden_state)
    elif isinstance(encoder_outputs, (tuple, list)):
        if not encoder_outputs:
            raise ValueError("encoder_outputs is an empty sequence; expected (last_hidden_state, ...).")
        x = encoder_outputs[0]
    else:
        x = encoder_outputs
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != hidden or not np.issubdtype(x.dtype, np.floating):
        raise ShapeError(f"encoder_outputs holds an array of shape {x.shape} and dtype {x.dtype}; expected floats of "
                         f"shape (batch, tokens, {hidden}).")
    return np.ascontiguousarray(x, dtype=dtype)


def _int_2d(arr, name, want, what):
    """``arr`` as a 2-D int64 array (a 1-D row gets a batch axis), of shape ``want`` when given."""
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ShapeError(f"{name} has shape {arr.shape} and dtype {arr.dtype}; expected an integer array of shape "
                         f"{tuple(want) if want else what}.")
    if want is not None and arr.shape != tuple(want):
        raise ShapeError(f"{name} has shape {arr.shape}; expected {tuple(want)} ({what}).")
    return arr.astype(np.int64)


def _mask_2d(mask, want, what, name="attention_mask"):
    """The attention mask as a 2-D array of shape ``want``."""
    mask = np.asarray(mask)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.shape != tuple(want):
        raise ShapeError(f"{name} has shape {mask.shape}; expected {tuple(want)} ({what}).")
    return mask          # values: validation.check_forward_inputs (0/1 only)


def _fusion_config(config):
    """AdapterFusionConfig from None (the default), an identifier, a dict or a config object."""
    if config is None:
        config = DEFAULT_ADAPTERFUSION_CONFIG
    if isinstance(config, str):
        if config not in ADAPTERFUSION_CONFIG_MAP:
            raise ConfigError(f"Invalid AdapterFusion config identifier {config!r}; known: "
                              f"{', '.join(ADAPTERFUSION_CONFIG_MAP)} (or pass a dict / AdapterFusionConfig).")
        return ADAPTERFUSION_CONFIG_MAP[config]
    if isinstance(config, dict):
        return AdapterFusionConfig.from_dict(config)
    if not isinstance(config, AdapterFusionConfig):
        raise TypeError(f"add_adapter_fusion: config must be an identifier, dict or AdapterFusionConfig; "
                        f"got {type(config).__name__}.")
    return config


def _contains_fuse(block, name):
    if isinstance(block, Fuse) and block.name == name:
        return True
    return isinstance(block, AdapterCompositionBlock) and any(_contains_fuse(c, name) for c in block)


class AutoModel:
    """Load an HF checkpoint directory (config.json + model.safetensors / sharded / pytorch_model.bin). Spec: API-1."""

    @staticmethod
    def from_pretrained(path, *, dtype=np.float32, backend=None, seed=None, revision=None, local_files_only=False,
                        cache_dir=None, token=None) -> AdapterModel:
        """``path``: a model directory or a Hugging Face id (cache, else download; see minadapters.hub)."""
        return load_pretrained(AdapterModel, path, dtype=dtype, backend=backend, seed=seed, revision=revision,
                               local_files_only=local_files_only, cache_dir=cache_dir, token=token)


def load_pretrained(model_class, path, *, dtype=np.float32, backend=None, seed=None, revision=None,
                    local_files_only=False, cache_dir=None, token=None, class_for=None):
    """Build ``model_class`` (or ``class_for(model_type)``) from a checkpoint. Spec: API-1.

    Every weight of the checkpoint (task heads included) goes to ``model.loaded_from_checkpoint``."""
    path = resolve_model_dir(path, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir,
                             token=token)
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Model directory {path!r} does not exist.")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"No config.json in {path!r}; expected a Hugging Face model directory.")
    raw = read_json(cfg_path, error=ConfigError)
    check_model_config(raw, cfg_path)           # sizes sane before any shape is derived (IO-16)
    if "model_type" not in raw:
        raise ConfigError(f"{cfg_path}: no 'model_type' key.")
    arch = architecture(raw["model_type"])
    try:   # one error vocabulary (spec/io.md): config.json problems are ConfigError naming the file
        config = arch.config_class.from_dict(raw)
    except KeyError as e:
        raise ConfigError(f"{cfg_path}: no {e} key; the {raw['model_type']} config needs it.") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, AdapterError):
            raise
        raise ConfigError(f"{cfg_path}: {e}") from None
    all_weights = read_model_weights(path)
    weights = arch.normalize_keys(all_weights, raw["model_type"])
    lm_head = weights.pop("lm_head.weight", None)
    lm_bias = weights.pop("lm_head.bias", None)      # GPT-J's lm_head bias; BART's final_logits_bias (normalize_keys)
    params = _check_params(weights, arch.expected_shapes(config), path, dtype)
    if class_for is not None:
        model_class = class_for(raw["model_type"])
    model = model_class(arch, config, params, dtype=dtype, backend=backend or get_backend(),
                        name_or_path=raw.get("_name_or_path", ""), seed=seed)
    model.raw_config = raw
    if lm_head is not None:
        model.lm_head_weight = np.ascontiguousarray(lm_head, dtype=dtype)
    if lm_bias is not None:                          # BART: a bias beside a tied projection (no lm_head.weight)
        model.lm_head_bias = np.ascontiguousarray(np.reshape(lm_bias, -1), dtype=dtype)
    model.model_dir = path      # prompt tuning's from_string init reads <model_dir>/tokenizer.json
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):    # transformers moves generation defaults (forced_bos_token_id ...) here
        gen = read_json(gen_path, error=ConfigError)
        model.generation_config = gen if isinstance(gen, dict) else {}
    model.loaded_from_checkpoint(all_weights)
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
