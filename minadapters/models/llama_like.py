"""LLaMA-like decoders declared as data: one explicit forward, parameterised by a ``LlamaLike`` record.

Spec: FAM-LL-1 .. FAM-LL-3 (on top of DEC-2 .. DEC-5). A family is a ``LlamaLike`` record (what sets it apart:
attention biases, q/k norms, (1 + w) RMSNorm, scaled embeddings, sliding windows, how adapters 1.3.0 reaches it)
turned into an ``Architecture`` by ``declare``. LLaMA itself is one such record (models/llama.py). Mistral is native in adapters 1.3.0 (LLaMA's placement: LoRA
"intermediate" = ``mlp.down_proj``); Qwen2 / Qwen3 come through its ``AdapterModelInterface`` (wrappers/interfaces.py:
"intermediate" = ``mlp.up_proj``, bottlenecks hooked on ``o_proj`` / ``down_proj`` outputs, no prefix or prompt
tuning; composition blocks as adapters' composition.SUPPORTED_MODELS allows them per model type). Gemma has no
interface in adapters 1.3.0: its record is the one a user passes to ``adapters.init(model, interface=...)``
(spec/families.md, FAM-LL-3).

Declaring another family (see spec/families.md for the worked example)::

    from minadapters.models import register
    from minadapters.models.llama_like import LlamaLike, declare
    register(declare(LlamaLike(name="my_decoder", model_types=("my_decoder",), model_class="MyDecoderModel",
                               attention_bias="qkv", plugin=True)))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional.activations import get_activation
from ..hooks import Hook
from . import decoder_common as dc
from ..composition import SUPPORTED_MODELS
from .base import ALL_BLOCKS, ALL_METHODS, Architecture, LayerStack, attention_probs, layer_views

DECODER = "decoder"
PLUGIN_METHODS = frozenset({"bottleneck", "lora", "reft", "invertible"})   # AdapterModelInterface.adapter_methods
ATTENTION_BIAS = ("config", "qkv", "none")
SLIDING = ("none", "all", "layer_types")


@dataclass(frozen=True)
class LlamaLike:
    """What sets one LLaMA-like family apart. Spec: FAM-LL-1.

    attention_bias: "config" (q/k/v/o biases when config.attention_bias), "qkv" (q/k/v always, o never), "none".
    sliding: "none"; "all" (every layer when config.sliding_window is set: Mistral); "layer_types" (config.layer_types,
    else layers >= max_window_layers when use_sliding_window: Qwen2/3).
    plugin: adapters reaches the family through AdapterModelInterface (else: LLaMA's native placement)."""
    name: str
    model_types: tuple
    model_class: str
    attention_bias: str = "config"
    mlp_bias: bool = False                    # config.mlp_bias read (LLaMA); else no MLP biases
    qk_norm: bool = False                     # RMSNorm over head_dim of q and k (Qwen3)
    norm_offset: float = 0.0                  # RMSNorm weight is (offset + w) (Gemma: 1)
    scale_embeddings: bool = False            # embeddings · sqrt(D) after the embedding hook (Gemma)
    sliding: str = "none"
    default_act: str = "silu"
    default_head_dim: int | None = None       # Gemma: 256; None: hidden_size // num_attention_heads
    default_tie: bool = False
    plugin: bool = False
    base_model_prefix: str = "model"
    task_prefixes: tuple = ()                 # further prefixes of task checkpoints (LLaMA's QA model: "transformer")

    def __post_init__(self):
        if self.attention_bias not in ATTENTION_BIAS or self.sliding not in SLIDING:
            raise ValueError(f"LlamaLike {self.name!r}: attention_bias={self.attention_bias!r} (allowed "
                             f"{ATTENTION_BIAS}), sliding={self.sliding!r} (allowed {SLIDING}).")


@dataclass(frozen=True)
class Config:
    """config.json of a LLaMA-like family, as the forward reads it. Spec: FAM-LL-1."""
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    hidden_act: str
    rope_theta: float
    rope_scaling: dict | None
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    windows: tuple                             # per layer: sliding window (int) or None
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    eos_token_id: object = None


def _int(d, key, default=None, minimum=1):
    v = d.get(key, default)
    if v is None and default is None:
        raise ConfigError(f"config.json: {key} is missing; expected an integer >= {minimum}.")
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"config.json: {key}={v!r} must be an integer >= {minimum}.")
    return v


def _windows(fam: LlamaLike, d: dict, L: int) -> tuple:
    """Sliding window of each layer, as transformers 4.57 derives it. Spec: FAM-LL-2."""
    if fam.sliding == "none":
        return (None,) * L
    if fam.sliding == "all":
        w = d.get("sliding_window", 4096)
        return (None if w is None else _int(d, "sliding_window", 4096),) * L
    w = _int(d, "sliding_window", 4096) if d.get("use_sliding_window", False) else None
    types = d.get("layer_types")
    if types is None:
        first = _int(d, "max_window_layers", 28, minimum=0)
        return tuple(w if (w is not None and i >= first) else None for i in range(L))
    if not isinstance(types, list) or len(types) != L or set(types) - {"full_attention", "sliding_attention"}:
        raise ConfigError(f"config.json: layer_types={types!r} must list 'full_attention' / 'sliding_attention' "
                          f"for each of the {L} layers.")
    return tuple(w if t == "sliding_attention" else None for t in types)


def config_from_dict(fam: LlamaLike, d: dict) -> Config:
    """Validate config.json for ``fam``; rejects what the forward does not compute. Spec: FAM-LL-1."""
    D, H, L = _int(d, "hidden_size"), _int(d, "num_attention_heads"), _int(d, "num_hidden_layers")
    Hkv = _int(d, "num_key_value_heads", d.get("num_key_value_heads") or H)
    if H % Hkv:
        raise ShapeError(f"config.json: num_attention_heads={H} is not a multiple of num_key_value_heads={Hkv}.")
    Dh = d.get("head_dim") or fam.default_head_dim or D // H
    if not isinstance(Dh, int) or Dh % 2:
        raise ShapeError(f"config.json: head_dim={Dh!r} must be an even integer for RoPE.")
    scaling = d.get("rope_scaling")
    dc.check_rope_scaling(scaling)
    prf = d.get("partial_rotary_factor", 1.0)
    if prf not in (None, 1, 1.0):
        raise ConfigError(f"config.json: partial_rotary_factor={prf!r} is not supported by {fam.name}; only 1.0 "
                          "(RoPE over the whole head).")
    act = d.get("hidden_act", fam.default_act)
    get_activation(act)
    bias = bool(d.get("attention_bias", False))
    qkv_bias, o_bias = {"config": (bias, bias), "qkv": (True, False), "none": (False, False)}[fam.attention_bias]
    return Config(d["model_type"], D, L, H, Hkv, Dh, _int(d, "intermediate_size"), _int(d, "vocab_size", 32000),
                  _int(d, "max_position_embeddings", 2048), float(d.get("rms_norm_eps", 1e-6)), act,
                  float(d.get("rope_theta", 10000.0)), dict(scaling) if scaling is not None else None,
                  qkv_bias, o_bias, bool(d.get("mlp_bias", False)) and fam.mlp_bias, _windows(fam, d, L),
                  bool(d.get("tie_word_embeddings", fam.default_tie)), d.get("pad_token_id"), d.get("eos_token_id"))


def normalize_keys_for(prefixes, weights: dict) -> dict:
    """Strip '<prefix>.' (the base-model prefix, then any task prefix), drop heads and rotary buffers, keep
    'lm_head.weight'. Spec: FAM-LL-1."""
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    out = {}
    for k, v in weights.items():
        prefix = next((p for p in prefixes if k.startswith(p + ".")), None)
        if prefix is not None:
            k = k[len(prefix) + 1:]
        elif k != "lm_head.weight" and not k.startswith(("embed_tokens.", "layers.", "norm.")):
            continue
        if not k.endswith("rotary_emb.inv_freq"):
            out[k] = v
    return out


def shapes_for(fam: LlamaLike, cfg: Config) -> dict:
    D, F, Dh = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    Nq, Nkv = cfg.num_attention_heads * Dh, cfg.num_key_value_heads * Dh
    s = {"embed_tokens.weight": (cfg.vocab_size, D), "norm.weight": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        lin = {"self_attn.q_proj": ((Nq, D), cfg.qkv_bias), "self_attn.k_proj": ((Nkv, D), cfg.qkv_bias),
               "self_attn.v_proj": ((Nkv, D), cfg.qkv_bias), "self_attn.o_proj": ((D, Nq), cfg.o_bias),
               "mlp.gate_proj": ((F, D), cfg.mlp_bias), "mlp.up_proj": ((F, D), cfg.mlp_bias),
               "mlp.down_proj": ((D, F), cfg.mlp_bias)}
        for name, (shape, bias) in lin.items():
            s[p + name + ".weight"] = shape
            if bias:
                s[p + name + ".bias"] = (shape[0],)
        s[p + "input_layernorm.weight"] = s[p + "post_attention_layernorm.weight"] = (D,)
        if fam.qk_norm:
            s[p + "self_attn.q_norm.weight"] = s[p + "self_attn.k_norm.weight"] = (Dh,)
    return s


def rms_norm(x, g, eps, offset, ops):
    """(offset + g) · x / √(mean(x²) + eps), in float32 at least. Spec: DEC-2, FAM-LL-1 (Gemma: offset 1)."""
    if offset:
        g = g.astype(np.float32) + np.float32(offset)
    if x.dtype == np.float64:
        return ops.rms_norm(x, g, eps)
    return ops.rms_norm(x.astype(np.float32), g.astype(np.float32), eps).astype(x.dtype)


def sliding_window_mask(mask, window: int, dtype):
    """DEC-4's mask with keys at or before q − window also masked (transformers: k > q − window). Spec: FAM-LL-2.
    mask: (B, 1, Tq, Tk) for the last Tq of Tk positions."""
    Tq, Tk = mask.shape[-2:]
    q_abs = Tk - Tq + np.arange(Tq)
    inside = np.arange(Tk)[None, :] > (q_abs[:, None] - window)                  # (Tq, Tk)
    return np.where(inside[None, None], mask, np.finfo(dtype).min).astype(dtype)


def decoder_layer(fam, i, x, mask, rope, lp, hk, cfg: Config, ops, cache, probs=None):
    """Pre-RMSNorm LLaMA-like layer with hooks. Spec: DEC-2, FAM-LL-1, FAM-LL-3.  x: (B, T, D)."""
    N, Nkv, Dh, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
    h = rms_norm(x, lp["input_layernorm.weight"], eps, fam.norm_offset, ops)
    q = dc.split_heads(hk.linear(Hook.ATTN_Q, h, *lp.linear("self_attn.q_proj")), N, Dh)
    k = dc.split_heads(hk.linear(Hook.ATTN_K, h, *lp.linear("self_attn.k_proj")), Nkv, Dh)
    v = dc.split_heads(hk.linear(Hook.ATTN_V, h, *lp.linear("self_attn.v_proj")), Nkv, Dh)
    if fam.qk_norm:                                                       # Qwen3: per-head RMSNorm before RoPE
        q = rms_norm(q, lp["self_attn.q_norm.weight"], eps, fam.norm_offset, ops)
        k = rms_norm(k, lp["self_attn.k_norm.weight"], eps, fam.norm_offset, ops)
    q, k = ops.rope(q, *rope), ops.rope(k, *rope)
    if cache is not None:
        k, v = cache.update(i, k, v)
    if cfg.windows[i] is not None:
        mask = sliding_window_mask(mask, cfg.windows[i], mask.dtype)
    if not fam.plugin:
        k, v, mask = hk.prefix(Hook.SELF_PREFIX, k, v, mask, h)          # (B, Nkv, P+Tk, Dh), after RoPE
    if probs is not None:
        probs.append(attention_probs(q, dc.repeat_kv(k, N // Nkv), mask, ops))   # (B, N, T, Tk)
    ctx = ops.attention(q, k, v, mask)                                  # GQA inside OPS-2: k, v never repeated
    a = ops.linear(dc.merge_heads(ctx), *lp.linear("self_attn.o_proj"))
    x = _close(fam, hk, Hook.MH_ADAPTER, a, x)
    h2 = rms_norm(x, lp["post_attention_layernorm.weight"], eps, fam.norm_offset, ops)
    up_hook, down_hook = (Hook.INTERMEDIATE, Hook.OUTPUT) if fam.plugin else (Hook.OUTPUT, Hook.INTERMEDIATE)
    gate = get_activation(cfg.hidden_act)(ops.linear(h2, *lp.linear("mlp.gate_proj")))
    up = hk.linear(up_hook, h2, *lp.linear("mlp.up_proj"))
    f = hk.linear(down_hook, gate * up, *lp.linear("mlp.down_proj"))
    x = _close(fam, hk, Hook.OUTPUT_ADAPTER, f, x)
    return hk.layer_output(x)


def _close(fam, hk, key, h, x):
    """Residual close of a sub-layer: adapters' native block (DEC-2) or, through its plugin interface, a hook on the
    projection's output followed by the model's own residual add. Spec: FAM-LL-3."""
    if fam.plugin:
        # COMPAT(adapters): a hook on the projection's output (BottleneckLayer is_layer_hooked); the layer adds x.
        return x + hk.hooked_residual(key, h, x)
    return hk.residual_block(key, h, x, None)


def make_forward(fam: LlamaLike, stack: LayerStack):
    def forward(p, cfg: Config, hooks, ops, dtype, *, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, output_hidden_states=False, output_attentions=False):
        """embed_tokens, hooks, (· √D), layers, final RMSNorm. Spec: DEC-2 .. DEC-5, FAM-LL-1 .. FAM-LL-3."""
        B, T = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
        past = past_key_values.length if past_key_values is not None else 0
        if position_ids is None:
            position_ids = dc.default_position_ids(B, T, past)
        x = (ops.take(p["embed_tokens.weight"], input_ids) if inputs_embeds is None else inputs_embeds).astype(
            dtype, copy=False)
        if attention_mask is None:
            attention_mask = np.ones((B, past + T), np.int64)
        x, attention_mask = hooks.embeddings(DECODER, x, attention_mask)   # adapters hooks embed_tokens' output
        if fam.scale_embeddings:
            x = x * np.asarray(cfg.hidden_size ** 0.5, dtype=x.dtype)
        mask = dc.causal_padding_mask(attention_mask, x.shape[1], dtype)
        inv = dc.rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        rope = dc.rope_cos_sin(position_ids, inv, dtype)
        states = [x] if output_hidden_states else None
        probs = [] if output_attentions else None
        for i, lp in enumerate(layer_views(p, stack, cfg.num_hidden_layers)):
            x = decoder_layer(fam, i, x, mask, rope, lp, hooks.layer(DECODER, i), cfg, ops, past_key_values, probs)
            if states is not None:
                states.append(x)
        x = rms_norm(x, p["norm.weight"], cfg.rms_norm_eps, fam.norm_offset, ops)
        if states is not None:
            states[-1] = x
        return {"last_hidden_state": x, "hidden_states": tuple(states) if states is not None else None,
                "attentions": tuple(probs) if probs is not None else None}
    return forward


def stack_for(fam: LlamaLike) -> LayerStack:
    """Hook locations as adapters 1.3.0 places them (native LLaMA mixin, or AdapterModelInterface). Spec: FAM-LL-3."""
    if fam.plugin:      # interface: layer_intermediate_proj = mlp.up_proj, layer_output_proj = mlp.down_proj
        return LayerStack(DECODER, layers="layers.{i}", num_layers="num_hidden_layers", embeddings="embed_tokens",
                          attn_q="self_attn.q_proj", attn_k="self_attn.k_proj", attn_v="self_attn.v_proj",
                          attn_o="self_attn.o_proj", intermediate="mlp.up_proj", output="mlp.down_proj",
                          mh_adapter="attention_adapters", output_adapter="output_adapters",
                          bottleneck_hooked=True)
    return LayerStack(DECODER, layers="layers.{i}", num_layers="num_hidden_layers", embeddings="embed_tokens",
                      attn_q="self_attn.q_proj", attn_k="self_attn.k_proj", attn_v="self_attn.v_proj",
                      attn_o="self_attn.o_proj", intermediate="mlp.down_proj", output="mlp.up_proj",
                      mh_adapter="attention_adapters", output_adapter="output_adapters",
                      self_prefix="self_attn.prefix_tuning")


def blocks_for(model_types) -> frozenset:
    """Composition blocks adapters 1.3.0 allows on every one of ``model_types`` (its SUPPORTED_MODELS lists the model
    types of the blocks it restricts; a user-declared type is in none of those lists)."""
    return ALL_BLOCKS - {b.__name__ for b, types in SUPPORTED_MODELS.items() if not set(model_types) <= set(types)}


def declare(fam: LlamaLike, training=None) -> Architecture:
    """The Architecture record of a LLaMA-like family (``training``: its explicit backward, spec TRAIN-2, if it has
    one). Spec: ARCH-1, FAM-LL-1."""
    stack = stack_for(fam)
    config_class = type(f"{fam.name.title().replace('_', '')}Config", (), {
        "from_dict": staticmethod(lambda d: config_from_dict(fam, d)), "__doc__": f"config.json of {fam.name}."})
    methods = PLUGIN_METHODS if fam.plugin else ALL_METHODS - {"prompt_tuning"}
    return Architecture(
        name=fam.name, model_types=fam.model_types, config_class=config_class, stacks=(stack,),
        forward=make_forward(fam, stack),
        normalize_keys=lambda w, mt: normalize_keys_for((fam.base_model_prefix, *fam.task_prefixes), w),
        expected_shapes=lambda cfg: shapes_for(fam, cfg), model_class={mt: fam.model_class for mt in fam.model_types},
        base_model_prefix={mt: fam.base_model_prefix for mt in fam.model_types},
        inputs=frozenset({"input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds"}),
        methods=methods, blocks=blocks_for(fam.model_types), embed_key="embed_tokens.weight", is_causal=True,
        notes={"family": fam}, training=training)


MISTRAL = LlamaLike(name="mistral", model_types=("mistral",), model_class="MistralModel", attention_bias="none",
                    sliding="all")
QWEN2 = LlamaLike(name="qwen2", model_types=("qwen2",), model_class="Qwen2Model", attention_bias="qkv",
                  sliding="layer_types", plugin=True)
QWEN3 = LlamaLike(name="qwen3", model_types=("qwen3",), model_class="Qwen3Model", qk_norm=True,
                  sliding="layer_types", plugin=True)
GEMMA = LlamaLike(name="gemma", model_types=("gemma",), model_class="GemmaModel", norm_offset=1.0,
                  scale_embeddings=True, default_act="gelu_pytorch_tanh", default_head_dim=256, default_tie=True,
                  plugin=True)

ARCHITECTURES = tuple(declare(f) for f in (MISTRAL, QWEN2, QWEN3, GEMMA))
