"""Parameter counts per adapter, like adapters' ``adapter_summary``, from real models or architecture presets.

Spec: API-3. Presets need no weights: base parameters are zero-stride arrays (no memory).
"""
from __future__ import annotations

import numpy as np

ARCH_PRESETS = {
    "bert-base-uncased": dict(model_type="bert", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, vocab_size=30522, max_position_embeddings=512,
                              type_vocab_size=2, pad_token_id=0),
    "bert-large-uncased": dict(model_type="bert", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, vocab_size=30522, max_position_embeddings=512,
                               type_vocab_size=2, pad_token_id=0),
    "roberta-base": dict(model_type="roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                         pad_token_id=1),
    "roberta-large": dict(model_type="roberta", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                          pad_token_id=1),
    "xlm-roberta-base": dict(model_type="xlm-roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, vocab_size=250002, max_position_embeddings=514,
                             type_vocab_size=1, pad_token_id=1),
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5),
}


def shell_model(raw_config: dict, with_pooler: bool = True):
    """An AdapterModel whose base weights are zero-stride zeros of the right shapes (no memory)."""
    from .model import AdapterModel, _arch
    arch = _arch(raw_config["model_type"])
    cfg_cls = getattr(arch, "EncoderConfig", None) or arch.Config
    config = cfg_cls.from_dict(raw_config)
    shapes = dict(arch.expected_shapes(config))
    if with_pooler and hasattr(arch, "EncoderConfig"):
        D = config.hidden_size
        shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (D, D), (D,)
    params = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    model = AdapterModel(arch, config, params, name_or_path="", seed=0)
    model.raw_config = dict(raw_config)
    return model


def adapter_param_count(model, name: str) -> int:
    """Number of parameters of one adapter; arrays registered under several keys count once."""
    seen, total = set(), 0
    for obj in model._all_method_objects():
        counter = getattr(obj, "summary_param_count", None)
        if counter is not None:
            total += counter(name)
            continue
        for key, d, leaf in obj.param_refs(name):
            arr = d[leaf]
            if id(arr) in seen:
                continue
            seen.add(id(arr))
            total += int(arr.size)
    return total


def model_adapter_summary(model, as_dict: bool = False):
    """Rows: name, architecture, #param, %param (of the base model), active, train. Spec: API-3."""
    from .configuration import ConfigUnion
    rows = []
    active = model.active_adapters
    for name, cfg in model.adapters_config.adapters.items():
        arch = "union" if isinstance(cfg, ConfigUnion) else (cfg.get("architecture") or "bottleneck")
        rows.append({"name": name, "architecture": arch, "#param": adapter_param_count(model, name),
                     "active": active is not None and name in active.flatten(), "train": True})
    # parameters only: checkpoints may carry integer buffers (embeddings.position_ids) that are not parameters
    base = int(sum(np.prod(v.shape) for v in model.params.values() if np.issubdtype(v.dtype, np.floating)))
    for r in rows:
        r["%param"] = r["#param"] / base * 100
    rows.append({"name": "Full model", "#param": base, "%param": 100.0, "train": True})
    if as_dict:
        return rows
    header = ["name", "architecture", "#param", "%param", "active", "train"]
    line = "=" * 80
    out = [line, "{:<25}{:<15}{:>12}{:>12}{:>8}{:>8}".format(*[h.title() for h in header]), "-" * 80]
    fmt = "{:<25}{:<15}{:>12,}{:>12.3f}{:>8}{:>8}"
    for r in rows:
        out.append(fmt.format(*[r.get(h, "") for h in header]))
    out.insert(len(out) - 1, "-" * 80)
    out.append(line)
    return "\n".join(out)
