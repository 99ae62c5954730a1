"""Per-architecture adapter layout, generated from the registry (minadapters.models.FAMILIES and their records).

    python -m conformance.layout            # rewrites conformance/LAYOUT.md
    python -m conformance.layout --check    # exit 1 when the page differs from what the registry gives

For every family record and every method, one adapter with every location of that method switched on is added to
a weightless shell of a tiny checkpoint (tinymodels.hf_config for the suite's architectures, TINY_CONFIGS
below for the others), and each state-dict key of its layer 0 (and its model-level keys) is listed with its shape,
the location key (the record's hook name, adapters' ``AdapterModelInterface`` spelling) and the module it hooks
(the path the record declares, ``method_layer_keys``). Methods a family refuses are listed with the refusal.
``tests/test_conformance_layout.py`` regenerates the page and fails on drift.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import minadapters as ma
from minadapters.models import FAMILIES
from minadapters.tiny import shell_model

from .tinymodels import ARCHS, hf_config

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "LAYOUT.md")

# The suite's checkpoints for its architectures; small configs of the same sizes for the other families.
_DEC = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=37,
            vocab_size=41, max_position_embeddings=32)
_BERT = dict(hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=41,
             max_position_embeddings=32, type_vocab_size=2)
TINY_CONFIGS = {
    "distilbert": dict(model_type="distilbert", dim=20, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=41,
                       max_position_embeddings=32),
    "electra": dict(model_type="electra", hidden_size=20, embedding_size=12, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "albert": dict(model_type="albert", hidden_size=20, embedding_size=12, num_hidden_layers=2, num_hidden_groups=1,
                   num_attention_heads=4, intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "bert-generation": dict(model_type="bert-generation", hidden_size=20, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, vocab_size=41, max_position_embeddings=32),
    "mistral": dict(_DEC, model_type="mistral", sliding_window=3),
    "qwen2": dict(_DEC, model_type="qwen2"),
    "qwen3": dict(_DEC, model_type="qwen3", head_dim=6),
    "gemma": dict(_DEC, model_type="gemma", head_dim=6),
    "deberta": dict(model_type="deberta", hidden_size=20, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, vocab_size=41, max_position_embeddings=32, relative_attention=True,
                    pos_att_type=["c2p", "p2c"], max_relative_positions=8),
    "gptj": dict(model_type="gptj", n_embd=20, n_layer=2, n_head=4, rotary_dim=4, n_inner=37, vocab_size=41,
                 n_positions=32),
    "xmod": dict(model_type="xmod", hidden_size=20, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 vocab_size=41, max_position_embeddings=34, pad_token_id=1, languages=["en_XX"]),
    "encoder-decoder": dict(model_type="encoder-decoder", decoder_start_token_id=0, pad_token_id=0,
                            encoder=dict(_BERT, model_type="bert"),
                            decoder=dict(_BERT, model_type="bert", is_decoder=True, add_cross_attention=True)),
}
SUITE_ARCHS = ARCHS       # the suite's own tiny checkpoints (tinymodels.hf_config)

_ALL_LORA = dict(selfattn_lora=True, intermediate_lora=True, output_lora=True, attn_matrices=["q", "k", "v"])
# (row name, config): every location of the method switched on, every optional weight present
METHOD_CONFIGS = (
    ("bottleneck", ma.DoubleSeqBnConfig(reduction_factor=4, ln_before=True, ln_after=True, use_gating=True)),
    ("compacter", ma.CompacterConfig(phm_bias=True, reduction_factor=10, phm_dim=2)),
    ("invertible (nice)", ma.SeqBnInvConfig(reduction_factor=4)),
    ("invertible (glow)", ma.SeqBnInvConfig(reduction_factor=4, inv_adapter="glow")),
    ("lora", ma.LoRAConfig(use_gating=True, **_ALL_LORA)),
    ("ia3", ma.IA3Config(**_ALL_LORA)),
    ("vera", ma.VeraConfig(attn_matrices=["q"])),       # one shared A/B shape: q only fits every family
    ("dora", ma.DoRAConfig(**_ALL_LORA)),
    ("dvora", ma.DvoRAConfig(attn_matrices=["q"])),
    ("mtl_lora", ma.MTLLoRAConfig(**_ALL_LORA)),
    ("prefix_tuning", ma.PrefixTuningConfig(prefix_length=3, bottleneck_size=8)),
    ("prefix_tuning (flat)", ma.PrefixTuningConfig(prefix_length=3, flat=True)),
    ("prompt_tuning", ma.PromptTuningConfig(prompt_length=3)),
    ("reft (loreft)", ma.LoReftConfig(r=2, prefix_positions=1, suffix_positions=1)),
    ("reft (noreft)", ma.NoReftConfig(r=2, prefix_positions=1, suffix_positions=1)),
    ("reft (direft)", ma.DiReftConfig(r=2, prefix_positions=1, suffix_positions=1)),
)


def raw_config(family) -> dict:
    mt = next((a for a in SUITE_ARCHS if a in family.model_types), None)
    if mt is not None:
        return hf_config(mt)
    return TINY_CONFIGS[family.model_types[0]]


def _size_line(cfg) -> str:
    keys = ("hidden_size", "dim", "embedding_size", "intermediate_size", "hidden_dim", "num_attention_heads",
            "n_heads", "num_key_value_heads", "head_dim", "num_hidden_layers", "n_layers", "n_layer", "n_embd",
            "n_head", "n_inner")
    return ", ".join(f"{k}={cfg[k]}" for k in keys if cfg.get(k) is not None)


def _first_layer_index(key: str):
    m = re.search(r"(?:^|\.)(?:layer|layers|h|albert_layer_groups)\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def _targets(model):
    """[(module path, location key, base weight)] of every declared hook of every layer, longest path first."""
    out = [(path, key.location, base) for key, path, base in model.arch.method_layer_keys(model.config)]
    return sorted(out, key=lambda t: -len(t[0]))


def family_rows(family):
    raw = raw_config(family)
    rows = []
    for method, cfg in METHOD_CONFIGS:
        model = shell_model(raw)
        try:
            model.add_adapter("a", config=cfg)
            sd = model.adapter_state_dict("a")
        except Exception as e:  # noqa: BLE001  (a refusal is a row of the table, whatever its kind)
            msg = str(e).splitlines()[0][:150].replace("|", "/")
            rows.append((method, "-", "-", f"refused: {type(e).__name__}: {msg}", "-"))
            continue
        targets = _targets(model)
        for k in sorted(sd):
            if _first_layer_index(k) not in (None, 0):
                continue
            hit = next(((p, loc) for p, loc, _ in targets if k.startswith(p + ".")), None)
            loc, target = (hit[1], hit[0]) if hit else ("model", "-")
            rows.append((method, loc, target, k, "×".join(map(str, sd[k].shape)) or "scalar"))
    return raw, rows


def generate() -> str:
    out = ["# Adapter layout per architecture (generated)", "",
           "Generated by `python -m conformance.layout` from `minadapters.models.FAMILIES` (do not edit by hand;",
           "`tests/test_conformance_layout.py` fails when this page and the registry differ). For each family:",
           "every state-dict key an adapter of each method has in layer 0 (other layers repeat it with their index)",
           "and at model level, its shape on the tiny checkpoint named in the heading, the location key (the hook",
           "of the family's record: `selfattn.q`/`.k`/`.v`, fused `selfattn.qkv`, `intermediate`, `output`,",
           "`mh_adapter`, `output_adapter`, `reft`, ...; `model` = not under a hooked module: shared parameters,",
           "the prefix pool, prompts, invertible adapters) and the module it hooks. The keys are those of a bare",
           "base model, as `get_adapter_weights` returns them; LoRA's (out, in) orientation is the stored one.",
           "Adapter name `a`; configs: every location of the method on (`METHOD_CONFIGS` in conformance/layout.py).",
           ""]
    for family in FAMILIES:
        raw, rows = family_rows(family)
        out += [f"## {family.name} (model types: {', '.join(family.model_types)})", "",
                f"Tiny checkpoint: model_type={raw['model_type']}, {_size_line(raw)}.", "",
                "| method | location | module target | weight key | shape |", "|---|---|---|---|---|"]
        out += [f"| {m} | {loc} | `{t}` | `{k}` | {s} |" if not k.startswith("refused") else
                f"| {m} | - | - | {k} | - |" for m, loc, t, k, s in rows]
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    text = generate()
    if a.check:
        with open(PAGE, encoding="utf-8") as f:
            same = f.read() == text
        print("up to date" if same else f"{PAGE} differs from the registry; run python -m conformance.layout")
        return 0 if same else 1
    with open(PAGE, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
