"""The declared shape of a model family: one frozen ``Architecture`` record per family. Spec: ARCH-1.

A family module declares its stacks of layers and, per stack, where each adapter hook sits, with the field
names of adapters 1.3.0's plugin interface (``AdapterModelInterface``: model_embeddings, model_layers,
layer_self_attn / layer_cross_attn, attn_q/k/v_proj or attn_qkv_proj, attn_o_proj, layer_intermediate_proj,
layer_output_proj). The model builds its method layers from the record alone; nothing is sniffed from modules.

Adding a family = one module in ``models/`` that declares one ``Architecture`` and registers it
(``models/__init__.py``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from ..composition import BLOCKS
from ..errors import ConfigError, ShapeError
from ..hooks import Hook, KIND_OF_HOOK

# adapters 1.3.0's method names (AdapterMethod.get_from_config: AdapterModelInterface.adapter_methods, prefix tuning,
# and a config's own architecture such as "mtl_lora", which no plugin interface lists).
ALL_METHODS = frozenset({"bottleneck", "lora", "mtl_lora", "prefix_tuning", "prompt_tuning", "reft", "invertible"})
ALL_BLOCKS = frozenset(BLOCKS)            # composition block class names


def config_int(d: dict, key: str, default: int, minimum: int = 1) -> int:
    """``d[key]`` (or ``default``) as an integer >= ``minimum``; ConfigError naming the key otherwise."""
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"config.json: {key}={v!r} must be an integer >= {minimum}.")
    return v


def check_encoder_config(d: dict, hidden: int, heads: int) -> None:
    """The checks every BERT-like config shares: heads divide the hidden size, absolute positions only."""
    if hidden % heads:
        raise ShapeError(f"config.json: hidden_size={hidden} is not a multiple of num_attention_heads={heads}.")
    pe = d.get("position_embedding_type", "absolute")
    if pe != "absolute":
        raise ConfigError(f"config.json: position_embedding_type={pe!r} is not supported; only 'absolute'.")


class LayerKey(NamedTuple):
    """Where a method layer sits: stack, layer index, method kind, hook location."""
    stack: str
    layer: int
    kind: str          # "lora" | "bottleneck" | "prefix" | "reft"
    location: str      # a Hook constant


@dataclass(frozen=True, eq=False)
class LayerStack:
    """One stack of layers and its hook locations (paths relative to the layer path). Spec: ARCH-1.

    ``layers`` is adapters' ``model_layers`` as a state-dict path template (``"encoder.layer.{i}"``);
    ``params`` is where layer i's base weights live (defaults to ``layers``; a family that shares one set of
    weights among several layers, like ALBERT, points it at the shared group)."""
    name: str
    layers: str
    num_layers: str                           # config attribute holding the layer count
    embeddings: str | None = None             # model_embeddings (state-dict prefix), None: no embedding hook
    # attention projections (AdapterModelInterface: layer_self_attn + attn_*_proj), relative to the layer
    attn_q: str | None = None
    attn_k: str | None = None
    attn_v: str | None = None
    attn_qkv: str | None = None               # fused q/k/v (GPT-2's c_attn)
    attn_o: str | None = None
    cross_q: str | None = None                # layer_cross_attn + attn_*_proj (encoder-decoder stacks)
    cross_k: str | None = None
    cross_v: str | None = None
    intermediate: str | None = None           # layer_intermediate_proj: the linear adapters calls "intermediate"
    output: str | None = None                 # layer_output_proj: the linear adapters calls "output"
    # bottleneck containers and prefix-tuning modules (adapters' state-dict paths)
    mh_adapter: str | None = None
    cross_adapter: str | None = None
    output_adapter: str | None = None
    self_prefix: str | None = None
    encoder_prefix: str | None = None         # an encoder-decoder's encoder self-attention (adapters' location)
    cross_prefix: str | None = None
    reft: str | None = "reft_layer"
    params: str | None = None
    # adapters' location_key of the self-attention PrefixTuningLayer (state-dict segment
    # prefix_tunings.<name>.<key>): "self_prefix" for most families, "self" for DistilBERT
    self_prefix_key: str = "self_prefix"
    # adapters' location_key of the bottleneck after cross-attention: "cross_adapter" (BART, T5); BERT decoders
    # (EncoderDecoderModel) reuse BertSelfOutput there, whose location_key is "mh_adapter"
    cross_adapter_key: str = "cross_adapter"
    # state-dict path of the prefix pool holding this stack's prefix networks (adapters' PrefixTuningPool of the
    # (sub)model the stack belongs to: EncoderDecoderModel has one per submodel)
    prefix_pool: str = "prefix_tuning"
    # the mask whose padding ReFT's positions count from (adapters' ForwardContext of the (sub)model running the
    # stack): "attention_mask" (the encoder's, also for BART / T5 decoders) or "decoder_attention_mask" (a BERT
    # decoder of EncoderDecoderModel opens its own context with the decoder's mask)
    reft_mask: str = "attention_mask"
    # bottlenecks placed as adapters' plugin interface does (is_layer_hooked: a hook on o_proj / the output
    # projection, the model adds the residual; original_ln_after forced off, and refused when set False)
    bottleneck_hooked: bool = False
    # config attribute added to i for adapters' layer index of layer i (leave_out, skip_layers, per-layer
    # reduction factors, gating-score keys): BART and T5 number the decoder's layers after the encoder's
    # (their iter_layers), adapters' EncoderDecoderModel restarts at 0 (None)
    layer_offset: str | None = None

    def layer_path(self, i: int) -> str:
        return self.layers.format(i=i)

    def params_path(self, i: int) -> str:
        return (self.params or self.layers).format(i=i)

    def location_key(self, hook: str) -> str:
        """adapters' location_key of the method layer at ``hook`` (differs for self prefix tuning and, in BERT
        decoders, the cross-attention bottleneck)."""
        if hook == Hook.SELF_PREFIX:
            return self.self_prefix_key
        return self.cross_adapter_key if hook == Hook.CROSS_ADAPTER else hook

    def hooks(self) -> dict:
        """Hook constant -> path relative to the layer, for every hook this stack declares."""
        # Order = the order method layers are built (and fresh adapters draw from the model's RNG).
        table = {Hook.MH_ADAPTER: self.mh_adapter, Hook.CROSS_ADAPTER: self.cross_adapter,
                 Hook.OUTPUT_ADAPTER: self.output_adapter, Hook.ATTN_Q: self.attn_q, Hook.ATTN_K: self.attn_k,
                 Hook.ATTN_V: self.attn_v, Hook.ATTN_QKV: self.attn_qkv, Hook.CROSS_Q: self.cross_q,
                 Hook.CROSS_K: self.cross_k, Hook.CROSS_V: self.cross_v, Hook.INTERMEDIATE: self.intermediate,
                 Hook.OUTPUT: self.output, Hook.SELF_PREFIX: self.self_prefix,
                 Hook.ENCODER_PREFIX: self.encoder_prefix, Hook.CROSS_PREFIX: self.cross_prefix,
                 Hook.LAYER_OUTPUT: self.reft}
        return {k: v for k, v in table.items() if v is not None}


class Training(NamedTuple):
    """A family's training forward and explicit backward. Spec: TRAIN-2.

    forward(params, config, hooks, ops, dtype, **inputs) -> (fields, cache) computes what ``Architecture.forward``
    computes, through training hooks (training/hooks.py) that keep caches; backward(d_last_hidden_state, cache,
    params, config, hooks, ops) walks the layers in reverse, calling each hook's ``*_backward``."""
    forward: Callable
    backward: Callable


@dataclass(frozen=True, eq=False)
class Architecture:
    """Everything the model needs to know about a family, declared once. Spec: ARCH-1.

    forward(params, config, hooks, ops, dtype, **inputs) -> dict of output fields (``last_hidden_state``,
    ``pooler_output``, ``hidden_states`` ...); it reads only the inputs named in ``inputs``."""
    name: str
    model_types: tuple
    config_class: type                        # .from_dict(config.json dict) -> frozen config
    stacks: tuple
    forward: Callable
    normalize_keys: Callable                  # (checkpoint weights, model_type) -> base-model keys
    expected_shapes: Callable                 # config -> {key: shape}
    model_class: Mapping                      # model_type -> transformers base class name (saved configs)
    base_model_prefix: Mapping                # model_type -> prefix of task checkpoints ("bert", "transformer")
    inputs: frozenset = frozenset({"input_ids", "attention_mask"})
    methods: frozenset = ALL_METHODS
    blocks: frozenset = ALL_BLOCKS
    embed_key: str | None = None              # input embedding matrix (a tied LM head reads it)
    is_causal: bool = False                   # decoder-only: generate() and the KV cache apply
    invertible_base: str | None = None        # adapters' invertible_adapters_base_name ("encoder": BART, T5)
    # config -> factor on the decoder state before a *tied* LM projection (T5: d_model ** -0.5); None: none
    tied_lm_scale: Callable | None = None
    is_encoder_decoder: bool = False          # two stacks: seq2seq generate(), encoder_outputs reuse (ENCDEC-1)
    # positional order of __call__ (transformers' forward signature of the family's base model)
    call_order: tuple = ("input_ids", "attention_mask", "token_type_ids")
    pooler: tuple = ()                        # optional base weights kept when present (BERT's pooler)
    # config -> {name: str} filled into "{name}" fields of hook paths (T5's FFN input: "wi", or "wi_1" when gated)
    hook_vars: Callable | None = None
    # (params, config, ops, decoder state) -> logits: the family's own LM head for generate (BERT2BERT's
    # cls.predictions); None: a projection on embed_key / lm_head.weight (generate.lm_logits)
    lm_logits: Callable | None = None
    # (key prefix, canonical prefix or None) pairs: adapters saves some modules under several paths
    # (EncoderDecoderModel's invertible adapter and shared PHM parameters, once per submodel); on load a key with
    # the prefix is renamed to the canonical prefix, or dropped (None)
    saved_aliases: tuple = ()
    notes: Mapping = field(default_factory=dict)
    training: Training | None = None          # explicit backward (spec/training.md); None: training is refused

    def __post_init__(self):
        names = [s.name for s in self.stacks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Architecture {self.name!r}: stack names {names!r} must be non-empty and distinct.")
        for s in self.stacks:
            for hook in s.hooks():
                if hook not in KIND_OF_HOOK:
                    raise ValueError(f"Architecture {self.name!r}, stack {s.name!r}: unknown hook {hook!r}.")
        unknown = (set(self.methods) - ALL_METHODS) | (set(self.blocks) - ALL_BLOCKS)
        if unknown:
            raise ValueError(f"Architecture {self.name!r}: unknown methods/blocks {sorted(unknown)}.")

    def stack(self, name: str) -> LayerStack:
        for s in self.stacks:
            if s.name == name:
                return s
        raise KeyError(f"Architecture {self.name!r} has no stack {name!r}; stacks: {[s.name for s in self.stacks]}.")

    def num_layers(self, config, stack: LayerStack) -> int:
        return int(getattr(config, stack.num_layers))

    def adapters_layer_index(self, config, stack: LayerStack, i: int) -> int:
        """adapters' layer index of layer ``i`` of ``stack`` (its ``iter_layers`` numbering). Spec: ARCH-1."""
        return i + (int(getattr(config, stack.layer_offset)) if stack.layer_offset else 0)

    def method_layer_keys(self, config):
        """(LayerKey, state-dict path of the hooked module, path of its base weights) for every declared hook
        of every layer. Spec: ARCH-1. (Unsupported methods are refused when an adapter is added.)"""
        names = self.hook_vars(config) if self.hook_vars is not None else {}
        for s in self.stacks:
            hooks = {hook: sub.format(**names) for hook, sub in s.hooks().items()}
            for i in range(self.num_layers(config, s)):
                for hook, sub in hooks.items():
                    yield (LayerKey(s.name, i, KIND_OF_HOOK[hook], hook), f"{s.layer_path(i)}.{sub}",
                           f"{s.params_path(i)}.{sub}")


class ParamView(Mapping):
    """One layer's base parameters, leaf name -> array, read through to the model's dict at each access
    (a merge replaces arrays there). Spec: ARCH-1 (per-layer parameter views, picoGPT's per-block dicts)."""

    __slots__ = ("_params", "_prefix")

    def __init__(self, params: dict, prefix: str):
        self._params = params
        self._prefix = prefix + "."

    def __getitem__(self, name):
        return self._params[self._prefix + name]

    def get(self, name, default=None):
        return self._params.get(self._prefix + name, default)

    def __contains__(self, name):
        return self._prefix + name in self._params

    def __iter__(self):
        n = len(self._prefix)
        return (k[n:] for k in self._params if k.startswith(self._prefix))

    def __len__(self):
        return sum(1 for _ in self)

    def linear(self, name):
        """(weight, bias or None) of the linear module ``name``."""
        return self._params[self._prefix + name + ".weight"], self._params.get(self._prefix + name + ".bias")


def attention_probs(q, k, mask, ops):
    """softmax(q kᵀ / √Dh + mask): the attention weights a forward returns with output_attentions. Spec: OPS-2.

        q: (B, N, Tq, Dh), k: (B, N, Tk, Dh), mask additive, broadcastable -> (B, N, Tq, Tk)"""
    scores = ops.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]).astype(q.dtype)
    return ops.softmax(scores if mask is None else scores + mask, axis=-1)


def layer_views(params: dict, stack: LayerStack, n: int) -> list:
    """ParamView of each of the ``n`` layers of ``stack``."""
    return [ParamView(params, stack.params_path(i)) for i in range(n)]
