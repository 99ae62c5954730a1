"""Reading adapter files as upstream writes them: ejected prefix tuning, and hints for mismatched keys. Spec: IO-13.

adapters 1.3.0's ``eject_prefix_tuning`` replaces each prefix MLP by its output vector but keeps ``flat: false``
in the config, so its saved file has flat ``...<name>.<prefix>.control_trans`` vectors where the config
promises ``wte`` + ``control_trans.0/2`` MLP weights. We recognise those files by their keys and load them
as ``flat: true`` (spec/deviations.md). Other key mismatches get a hint naming the config field that
probably disagrees with the weights.
"""
from __future__ import annotations

import re
import warnings

_FLAT = re.compile(r"prefix_tunings\.[^.]+\.[^.]+\.control_trans$")
_MLP = re.compile(r"prefix_tunings\.[^.]+\.[^.]+\.(wte\.weight|control_trans\.\d+\.(weight|bias))$")


def _prefix_members(cfg: dict):
    """The prefix-tuning member dicts of a (possibly malformed: validated later by AdapterConfig.load) config."""
    if not isinstance(cfg, dict):
        return []
    if cfg.get("architecture") == "union":
        configs = cfg.get("configs")
        return [c for c in (configs if isinstance(configs, list) else [])
                if isinstance(c, dict) and c.get("architecture") == "prefix_tuning"]
    return [cfg] if cfg.get("architecture") == "prefix_tuning" else []


def ejected_prefix_config(cfg: dict, weights: dict, source: str) -> dict:
    """``cfg`` with ``flat=True`` for prefix tuning when the weights are flat vectors (an upstream-ejected file).
    Spec: IO-13. Returns ``cfg`` unchanged otherwise."""
    members = [m for m in _prefix_members(cfg) if not m.get("flat", False)]
    if not members:
        return cfg
    has_flat = any(_FLAT.search(k) for k in weights)
    has_mlp = any(_MLP.search(k) for k in weights)
    if not has_flat or has_mlp:
        return cfg
    warnings.warn(f"{source}: prefix tuning saved after adapters' eject_prefix_tuning (config says flat=False, the "
                  "weights are flat control_trans vectors); loading it as flat=True.")
    cfg = dict(cfg)
    if cfg.get("architecture") == "union":
        cfg["configs"] = [dict(c, flat=True) if c in members else c for c in cfg["configs"]]
    else:
        cfg["flat"] = True
    return cfg


# (pattern in a key, config field(s) that decide whether such keys exist)
_HINTS = [
    (re.compile(r"prefix_tunings\..*(control_trans|wte)"), "prefix tuning's `flat` (MLP wte/control_trans.N vs a "
                                                            "flat control_trans vector) or `cross_prefix`"),
    (re.compile(r"attention\.output\.adapters\.|attention_adapters\."), "`mh_adapter`"),
    (re.compile(r"(?<!attention)\.output\.adapters\.|output_adapters\."), "`output_adapter`"),
    (re.compile(r"adapter_norm_before"), "`ln_before`"),
    (re.compile(r"adapter_norm_after"), "`ln_after`"),
    (re.compile(r"\.gate\.|_gate\b|gate\."), "`use_gating`"),
    (re.compile(r"phm_rule|W_left|W_right|phm_"), "the PHM fields (`shared_phm_rule`, `factorized_phm_W`, "
                                                    "`phm_dim`, `shared_W_phm`)"),
    (re.compile(r"\.(query|q_proj|c_attn)\.loras\."), "`attn_matrices` ('q')"),
    (re.compile(r"\.(key|k_proj)\.loras\."), "`attn_matrices` ('k')"),
    (re.compile(r"\.(value|v_proj)\.loras\."), "`attn_matrices` ('v')"),
    (re.compile(r"intermediate\.dense\.loras\.|mlp\.(c_fc|down_proj)\.loras\."), "`intermediate_lora`"),
    (re.compile(r"output\.dense\.loras\.|mlp\.(c_proj|up_proj)\.loras\."), "`output_lora`"),
    (re.compile(r"lora_magnitude|\.m$"), "`use_dora`"),
    (re.compile(r"scaling"), "`scaling` ('learned')"),
    (re.compile(r"invertible_adapters"), "`inv_adapter`"),
    (re.compile(r"prompt_tunings"), "prompt tuning's `prompt_length` / `combine`"),
    (re.compile(r"refts\."), "ReFT's `layers` / `prefix_positions` / `suffix_positions`"),
]
_LAYER = re.compile(r"(?:layer|layers|h)\.(\d+)\.")


def key_mismatch_hint(missing, unexpected) -> str:
    """A sentence naming the config field(s) that probably disagree with the weights, or ''. Spec: IO-13."""
    keys = list(missing) + list(unexpected)
    fields = []
    for pat, field in _HINTS:
        if any(pat.search(k) for k in keys) and field not in fields:
            fields.append(field)
    miss_layers = {m.group(1) for k in missing for m in [_LAYER.search(k)] if m}
    extra_layers = {m.group(1) for k in unexpected for m in [_LAYER.search(k)] if m}
    if (miss_layers or extra_layers) and miss_layers != extra_layers:
        fields.append(f"`leave_out` (layers only expected: {sorted(miss_layers - extra_layers, key=int) or '-'}; "
                      f"only in the file: {sorted(extra_layers - miss_layers, key=int) or '-'})")
    if not fields:
        return ""
    return " The config field that probably disagrees with the weights: " + "; or ".join(fields) + "."
