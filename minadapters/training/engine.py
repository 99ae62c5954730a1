"""One training forward and backward of a model: what is refused, the prefix networks, the layers. Spec: TRAIN-1,
TRAIN-2 (spec/training.md)."""
from __future__ import annotations

import numpy as np

from ..composition import Fuse, Parallel
from ..configuration import BnConfig, LoRAConfig, PrefixTuningConfig, ReftConfig
from ..context import ForwardState
from ..errors import CompositionError, ConfigError
from ..functional.prefix import (prefix_mlp_backward, prefix_mlp_forward, split_prefix_kv,
                                 split_prefix_kv_backward)
from ..models import REGISTRY
from .hooks import TrainHooks, TrainState


def _contains_parallel(block) -> bool:
    return isinstance(block, Parallel) or (not isinstance(block, str) and any(_contains_parallel(c) for c in block))


# config.json dropout keys each family's training forward applies (GRAD-DROPOUT)
DROPOUT_KEYS = {"bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
                "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"), "llama": ("attention_dropout",)}


def _fuse_names(block) -> set:
    if isinstance(block, str):
        return set()
    own = {block.name} if isinstance(block, Fuse) else set()
    return own.union(*(_fuse_names(c) for c in block))


def model_dropouts(model) -> dict:
    """The base model's dropout probabilities that a training forward would apply (config.json)."""
    raw = model.raw_config
    keys = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
            "attention_dropout", "hidden_dropout", "dropout")
    return {k: float(raw[k]) for k in keys if isinstance(raw.get(k), (int, float)) and not isinstance(raw[k], bool)}


def check_trainable(model, setup) -> None:
    """Refuse what this slice cannot differentiate, naming the field and what is allowed. Spec: TRAIN-1."""
    if model.arch.training is None:
        with_backward = sorted(t for a in REGISTRY.values() if a.training is not None for t in a.model_types)
        raise ConfigError(f"training: model_type={model.model_type!r} (family {model.arch.name!r}) has no backward "
                          f"in minadapters yet; model types with one: {', '.join(with_backward)}.")
    if not getattr(model, "model_frozen", False):
        raise ConfigError("training: the base model is not frozen; call model.train_adapter(name) (or "
                          "freeze_model(True)). minadapters trains adapters and heads, not the base weights.")
    if setup is None:
        raise ConfigError("training: no active adapter; call model.train_adapter(name) first.")
    if _contains_parallel(setup):
        # COMPAT(adapters): the docs state Parallel is for inference only (adapters' composition docs)
        raise CompositionError(f"training under {setup!r}: Parallel composition is for inference only (adapters "
                               "documents it so); train each adapter on its own, or with BatchSplit.")
    if model.training:
        drops = {k: v for k, v in model_dropouts(model).items() if v > 0 and k not in DROPOUT_KEYS[model.arch.name]}
        if drops:
            raise ConfigError(f"training: model.train() would apply config.json's {drops}, which minadapters' "
                              f"{model.arch.name} training forward does not implement; set them to 0.0 or call "
                              "model.eval() to train without dropout.")
        fuse_p = model.raw_config.get("attention_probs_dropout_prob") or 0.0
        if _fuse_names(setup) and fuse_p > 0:
            raise ConfigError(f"training under a Fuse in train() mode: AdapterFusion's score dropout "
                              f"(attention_probs_dropout_prob={fuse_p}) is not implemented; call model.eval().")
    for fname in sorted(_fuse_names(setup)):
        fcfg = model.adapters_config.fusions[fname][0]
        if fcfg["temperature"]:
            # COMPAT(adapters): upstream lowers T after every forward (spec FUSION-2); we keep T fixed, so a
            # training run would not follow upstream's
            raise ConfigError(f"training under Fuse {fname!r}: AdapterFusionConfig.temperature=True is not "
                              "implemented in minadapters' training (upstream lowers T after every forward); "
                              "use temperature=False.")
    merged = sorted({layer.merged for layer in model.layers_of("lora") if layer.merged is not None})
    if merged:
        raise ConfigError(f"training: LoRA adapter(s) {merged} are merged into the base weights; call "
                          "model.reset_adapter() before training.")
    ac = model.adapters_config
    for name in sorted(setup.flatten()):
        for cfg in ac.members(name, ReftConfig):
            if cfg["orthogonality"] and cfg["r"] >= model.hidden_size:
                raise ConfigError(f"training adapter {name!r}: {type(cfg).__name__}.r={cfg['r']} >= hidden size: the "
                                  "orthogonal parametrization's matrix-exponential map has no backward in minadapters "
                                  "yet; use r < hidden size.")
        for cfg in ac.members(name, BnConfig):
            if cfg.get("inv_adapter") not in (None, "nice"):
                raise ConfigError(f"training adapter {name!r}: {type(cfg).__name__}.inv_adapter="
                                  f"{cfg.get('inv_adapter')!r} has no backward in minadapters yet; allowed: 'nice'.")
        for cfg in ac.members(name, LoRAConfig):
            if type(cfg).__name__ == "MTLLoRAConfig":
                raise ConfigError(f"training adapter {name!r}: MTLLoRAConfig has no backward in minadapters yet; "
                                  "trainable: LoRA, IA3, VeRA, DoRA.")
        for cfg in (ac.members(name, LoRAConfig) + ac.members(name, PrefixTuningConfig) + ac.members(name, ReftConfig)
                    + ac.members(name, BnConfig)):
            if model.training and cfg.get("dropout", 0.0) > 0:
                raise ConfigError(f"training adapter {name!r}: {type(cfg).__name__}.dropout={cfg['dropout']!r}; "
                                  "dropout is not implemented in minadapters' training yet: use 0.0 (or model.eval()).")


def _prefix_forward(model, state: TrainState) -> dict:
    """Evaluate the active prefix networks with their caches into the forward state. Spec: GRAD-PREFIX."""
    pool = model.model_level["prefix_pool"]
    caches = {}
    for name in sorted(state.fwd.setup.flatten()):
        for loc, mod in pool.groups.get(name, {}).items():
            i, p = mod.info, mod.params
            if i["flat"]:
                out, c = p["control_trans"].reshape(i["P"], -1), None
            else:
                act = str(mod.config["non_linearity"]).lower()
                out, c = prefix_mlp_forward(p["wte.weight"], p["control_trans.0.weight"], p["control_trans.0.bias"],
                                            p["control_trans.2.weight"], p["control_trans.2.bias"], act=act,
                                            ops=model.ops)
            kv = split_prefix_kv(out, P=i["P"], L=i["L"], H=i["H"], Dh=i["Dh"]).astype(model.dtype, copy=False)
            state.fwd.prefix_states.setdefault(name, {})[loc] = kv
            caches[(name, loc)] = (mod, c, kv.shape)
    return caches


def _prefix_backward(state: TrainState, caches: dict) -> None:
    """Gather each layer's prefix gradient and run the pool network's backward. Spec: GRAD-PREFIX."""
    for (name, loc), (mod, c, shape) in caches.items():
        per_layer = state.prefix_grads.get((name, loc), {})
        dkv = np.zeros(shape, per_layer[next(iter(per_layer))].dtype if per_layer else np.float32)
        for l, g in per_layer.items():
            dkv[l] = g
        dflat = split_prefix_kv_backward(dkv)                         # (P, L·2·H·Dh)
        key = f"prefix_tuning.prefix_tunings.{name}.{loc}."
        if c is None:
            state.add(name, key + "control_trans", dflat.reshape(-1))
            continue
        p = mod.params
        act = str(mod.config["non_linearity"]).lower()
        for leaf, g in prefix_mlp_backward(dflat, p["wte.weight"], p["control_trans.0.weight"],
                                           p["control_trans.2.weight"], c, act=act).items():
            state.add(name, key + leaf, g)


def forward_backward(model, inputs: dict, setup, trainable: frozenset, grads: dict, loss_and_grad):
    """Training forward, ``loss_and_grad(fields) -> (loss, d_last_hidden_state, extra)``, backward; gradients of
    the trainable adapters are added to ``grads``. Spec: TRAIN-2.  -> (loss, fields, extra)"""
    check_trainable(model, setup)
    rows = (inputs.get("input_ids") if inputs.get("input_ids") is not None else inputs["inputs_embeds"]).shape[0]
    fwd = ForwardState(setup=setup, skip_layers=frozenset(model.adapters_config.skip_layers or ()),
                       original_batch_size=rows)
    fwd.attention_mask = inputs.get("attention_mask")
    state = TrainState(model, fwd, trainable, grads, rng=model.dropout_generator() if model.training else None)
    hooks = TrainHooks(model, state)
    prefix_caches = _prefix_forward(model, state)
    fields, cache = model.arch.training.forward(model.params, model.config, hooks, model.ops, model.dtype, **inputs)
    fields["prompt_tokens_length"] = fwd.prompt_tokens_length
    fields["input_ids"] = inputs.get("input_ids")
    fields["dropout_rng"] = state.rng
    loss, d_hidden, extra = loss_and_grad(fields)
    model.arch.training.backward(d_hidden.astype(model.dtype, copy=False), cache, model.params, model.config, hooks,
                                 model.ops)
    _prefix_backward(state, prefix_caches)
    return loss, fields, extra
