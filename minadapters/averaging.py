"""``model.average_adapter``: a new adapter whose parameters are weighted combinations of existing ones.

Spec: API-5. adapters 1.3.0: ``ModelAdaptersMixin.average_adapter`` / ``_pre_average_adapter_checks``,
``AdapterLayerBase.average_adapter``, ``LoRALayer.average_adapter``, ``PrefixTuningPool.average_prefix``,
``_average_shared_parameters``, ``_average_invertible_adapter``.

Every parameter tensor of the new adapter (per-layer modules, prefix networks and gates, prompt embeddings,
invertible adapters, model-level shared parameters) is combined from the tensors at the same state-dict key
of the source adapters. The result is computed before the model is touched, so a failure changes nothing and
``average_adapter("a", ["a", "b"], overwrite_ok=True)`` works.
"""
from __future__ import annotations

import math
import numbers
import warnings

from .configuration import ConfigUnion, LoRAConfig
from .configuration.strings import get_adapter_config_hash
from .errors import ConfigError, ShapeError
from .functional import averaging as F
from .loading import CONTAINERS, KEY_EXAMPLES
from .methods.lora_modules import module_kind

STRATEGIES = ("linear", "lora_linear_only_negate_b", "lora_delta_w_svd")
# adapters sets support_lora_delta_w_svd = False for these model types (GPT-2: fused Conv1D c_attn; DeBERTa).
NO_SVD_MODEL_TYPES = ("gpt2", "deberta", "deberta-v2")
HASH_IGNORE = ("dropout", "init_weights")


# ---- inputs ----------------------------------------------------------------------------------------
def resolve_weights(adapter_list, weights=None, normalize_weights=True, *, what="average_adapter", noun="adapter"):
    """(names, weights). Default: 1/N each (``normalize_weights`` is then irrelevant, as upstream); given weights are
    divided by their sum if ``normalize_weights``. A dict maps names to weights. Spec: API-5 (weights).
    ``what`` / ``noun`` name the calling operation in messages (average_head shares the rule, HEAD-13)."""
    if isinstance(adapter_list, dict):
        if weights is not None:
            raise ValueError(f"{what}: pass the weights either as a dict {noun}_list or as weights=, "
                             "not both.")
        names, weights = list(adapter_list), list(adapter_list.values())
    elif isinstance(adapter_list, (list, tuple)):
        names = list(adapter_list)
    else:
        raise TypeError(f"{what}: {noun}_list must be a list of {noun} names or a dict name -> weight; "
                        f"got {type(adapter_list).__name__} {adapter_list!r}.")
    if not names:
        raise ValueError(f"No {noun}s to average. Please provide at least one {noun} to average.")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{what}: {noun}_list entry {n!r} is not a {noun} name (str).")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what}: {noun}_list names {dup} more than once; list each {noun} once "
                         "(give it a larger weight instead).")
    if weights is None:
        return names, [1.0 / len(names)] * len(names)
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"{what}: weights must be a list of numbers; got {weights!r}.")
    weights = list(weights)
    if len(weights) != len(names):
        raise ValueError(f"{what}: {len(weights)} weights {weights} for {len(names)} {noun}s {names}; "
                         f"give one weight per {noun}.")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(float(w)):
            raise ValueError(f"{what}: weight {w!r} is not a finite number.")
    weights = [float(w) for w in weights]
    if normalize_weights:
        total = sum(weights)
        if total == 0:
            raise ValueError(f"{what}: weights {weights} sum to 0 and cannot be normalized; pass "
                             "normalize_weights=False or other weights.")
        weights = [w / total for w in weights]
    return names, weights


def common_config(model, names):
    """The first adapter's config, after checking every config hashes equal ignoring dropout and init_weights."""
    configs = [model.adapters_config.require(n) for n in names]
    ref = get_adapter_config_hash(configs[0], ignore_params=HASH_IGNORE)
    for n, c in zip(names[1:], configs[1:]):
        if get_adapter_config_hash(c, ignore_params=HASH_IGNORE) != ref:
            raise ConfigError(f"Cannot average adapters with different configurations: {names[0]!r} and {n!r} "
                              f"differ in {_config_diff(configs[0], c)} (only dropout and init_weights may "
                              "differ). Please make sure all adapters have the same configuration.")
    return configs[0]


def _config_diff(a, b) -> str:
    da, db = a.to_dict(), b.to_dict()
    keys = [k for k in sorted(set(da) | set(db)) if k not in HASH_IGNORE and da.get(k) != db.get(k)]
    return ", ".join(f"{k}: {da.get(k)!r} vs {db.get(k)!r}" for k in keys) or "their config class"


def check_strategy(model, config, strategy, svd_rank):
    """Reject what adapters rejects or crashes on; return the new adapter's config. Spec: API-5 (edge cases)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"Invalid combine_strategy {strategy!r}. Must be one of {list(STRATEGIES)}.")
    is_lora = isinstance(config, LoRAConfig)
    if svd_rank is not None:
        if isinstance(svd_rank, bool) or not isinstance(svd_rank, numbers.Integral) or svd_rank < 1:
            raise ConfigError(f"average_adapter: svd_rank={svd_rank!r}; expected an int >= 1.")
        if not is_lora:
            warnings.warn("SVD rank can only be set when averaging LoRA adapters. Ignoring svd_rank.")
            svd_rank = None
        elif strategy != "lora_delta_w_svd" and svd_rank != config["r"]:
            # COMPAT(adapters): upstream sets r = svd_rank anyway and fails loading r-shaped averages (RuntimeError).
            raise ConfigError(f"average_adapter: svd_rank={svd_rank} only applies to combine_strategy="
                              f"'lora_delta_w_svd'; with {strategy!r} the averaged adapter keeps r={config['r']}.")
    if strategy == "linear":
        return config if svd_rank is None else config.replace(r=int(svd_rank))
    if strategy == "lora_delta_w_svd" and model.model_type in NO_SVD_MODEL_TYPES:
        raise ConfigError(f"model_type={model.model_type!r} does not support 'lora_delta_w_svd' as a merging method "
                          "(adapters: support_lora_delta_w_svd = False). Use another combine_strategy.")
    if isinstance(config, ConfigUnion):
        raise ConfigError("Combining adapters with ConfigUnion is only supported with the 'linear' combine_strategy.")
    if not is_lora:
        raise ConfigError(f"Combine strategy {strategy!r} is only supported for LoRA adapters; "
                          f"{type(config).__name__} adapters support only 'linear'.")
    _check_lora_strategy(config, strategy, svd_rank)
    return config if svd_rank is None else config.replace(r=int(svd_rank))


def _check_lora_strategy(config, strategy, svd_rank):
    kind = module_kind(config)
    what = {"vera": "VeRA", "mtl": "MTL-LoRA", "ia3": "IA3", "lora": "LoRA"}[kind]
    if kind == "vera":
        raise ConfigError("VeRA only supports linear averaging. The combine_strategy must be 'linear'.")
    extra = [f for f, on in (("use_gating", config["use_gating"]), ("use_dora", config["use_dora"])) if on]
    if kind == "mtl" or extra:
        extra_s = f" with {', '.join(f'{f}=True' for f in extra)}" if extra else ""
        raise ConfigError(f"combine_strategy={strategy!r} combines only lora_A and lora_B; {what}{extra_s} has "
                          "further parameters (gate, DoRA magnitude, MTL weights). Use 'linear'.")
    if strategy == "lora_delta_w_svd":
        if kind == "ia3":
            raise ConfigError("combine_strategy='lora_delta_w_svd' needs add-mode LoRA; IA3 (composition_mode="
                              "'scale') has no low-rank product to decompose. Use 'linear'.")
        if svd_rank is None:
            raise ConfigError("svd_rank must be set when using 'lora_delta_w_svd'.")


# ---- combination -----------------------------------------------------------------------------------
def _relative(key: str, name: str) -> str:
    """A state-dict key with the adapter name replaced by a placeholder (container-delimited, as IO-11)."""
    for c in CONTAINERS:
        seg = f"{c}.{name}."
        if key.startswith(seg) or f".{seg}" in key:
            return key.replace(seg, f"{c}.<adapter>.", 1) if key.startswith(seg) else \
                key.replace(f".{seg}", f".{c}.<adapter>.", 1)
    raise KeyError(f"state-dict key {key!r} has no container segment for adapter {name!r}")


def _source_tensors(model, names):
    """{relative key: [array per source]}; every source must have the same keys and shapes."""
    per = []
    for n in names:
        per.append({_relative(k, n): d[leaf] for k, (d, leaf) in model.adapter_param_refs(n).items()})
    for n, m in zip(names[1:], per[1:]):
        if set(m) != set(per[0]):
            diff = sorted(set(m) ^ set(per[0]))[:KEY_EXAMPLES]
            raise ConfigError(f"Cannot average {names[0]!r} and {n!r}: their parameters differ (e.g. {diff}); "
                              "was one of them ejected (eject_prefix_tuning) or loaded with another layout?")
        for k, arr in m.items():
            if arr.shape != per[0][k].shape:
                raise ShapeError(f"Cannot average {names[0]!r} and {n!r}: {k} has shape {per[0][k].shape} vs "
                                 f"{arr.shape}.")
    return {k: [m[k] for m in per] for k in per[0]}


def combine(model, names, weights, strategy, svd_rank=None) -> dict:
    """{relative key: averaged float64 array}. Spec: API-5."""
    tensors = _source_tensors(model, names)
    if strategy == "linear":
        return {k: F.weighted_sum(ts, weights) for k, ts in tensors.items()}
    if strategy == "lora_linear_only_negate_b":
        return {k: F.negate_b_sum(ts, weights, k.rsplit(".", 1)[-1]) for k, ts in tensors.items()}
    out = {}
    for k in tensors:
        if not k.endswith(".lora_A"):
            if not k.endswith(".lora_B"):
                raise ConfigError(f"lora_delta_w_svd: parameter {k} is neither lora_A nor lora_B.")
            continue
        kb = k[:-len("lora_A")] + "lora_B"
        As, Bs = tensors[k], tensors[kb]
        out_f, in_f = Bs[0].shape[0], As[0].shape[1]
        if svd_rank > min(out_f, in_f):
            raise ConfigError(f"svd_rank={svd_rank} exceeds the rank min(out, in) = {min(out_f, in_f)} of the "
                              f"weight at {k[:-len('.loras.<adapter>.lora_A')]}.")
        out[k], out[kb] = F.svd_lora(As, Bs, weights, int(svd_rank))
    return out


# ---- entry -----------------------------------------------------------------------------------------
def average_adapter(model, adapter_name, adapter_list, weights=None, normalize_weights=True, overwrite_ok=False,
                    set_active=False, combine_strategy="linear", svd_rank=None):
    """Add ``adapter_name`` as a weighted combination of the adapters in ``adapter_list``. Spec: API-5."""
    names, w = resolve_weights(adapter_list, weights, normalize_weights)
    if not isinstance(adapter_name, str) or not adapter_name:
        raise ConfigError(f"average_adapter: adapter_name must be a non-empty string; got {adapter_name!r}.")
    config = common_config(model, names)
    new_config = check_strategy(model, config, combine_strategy, svd_rank)
    if adapter_name in model.adapters_config and not overwrite_ok:
        raise ConfigError(f"An adapter with the name {adapter_name!r} has already been added; pass "
                          "overwrite_ok=True to replace it.")
    averaged = combine(model, names, w, combine_strategy, svd_rank if combine_strategy == "lora_delta_w_svd" else None)
    if adapter_name in model.adapters_config:
        model.delete_adapter(adapter_name)
    model.add_adapter(adapter_name, new_config)
    try:
        _assign(model, adapter_name, averaged)
    except BaseException:
        model.delete_adapter(adapter_name)
        raise
    if set_active:
        model.set_active_adapters(adapter_name)


def _assign(model, name, averaged):
    refs = {_relative(k, name): v for k, v in model.adapter_param_refs(name).items()}
    if set(refs) != set(averaged):
        diff = sorted(set(refs) ^ set(averaged))[:KEY_EXAMPLES]
        raise ConfigError(f"average_adapter: the new adapter's parameters do not match the averaged ones "
                          f"(e.g. {diff}).")
    for k, arr in averaged.items():
        d, leaf = refs[k]
        if tuple(d[leaf].shape) != arr.shape:
            raise ShapeError(f"average_adapter: {k} has shape {arr.shape}; the new adapter expects "
                             f"{tuple(d[leaf].shape)}.")
    for k, arr in averaged.items():
        d, leaf = refs[k]
        d[leaf] = arr.astype(d[leaf].dtype)


__all__ = ["average_adapter", "resolve_weights", "common_config", "check_strategy", "combine", "STRATEGIES"]
