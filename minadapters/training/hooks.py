"""The hook view of a training forward: every hook runs its method's forward with a cache, and has a backward.

Spec: TRAIN-2 (spec/training.md). A family's training forward calls the same hook points as its inference forward
(``linear``, ``prefix``, ``residual_block``, ``layer_output``); its backward calls ``*_backward`` at the same
points in reverse. Caches live in the layer's view (one entry per hook: each hook runs once per layer), gradients
of trainable parameters are added to ``TrainState.grads`` under adapters' state-dict keys.

This slice trains one adapter per location: a name, or a Stack whose children are names of which at most one
has a module at each location. Other blocks are refused with CompositionError (spec/training.md TRAIN-1).
"""
from __future__ import annotations

import numpy as np

from ..composition import Stack
from ..errors import CompositionError
from ..functional import lora as LF
from ..functional.backward import linear_backward
from ..functional.bottleneck import bn_block_backward, bn_block_forward
from ..functional.prefix import combine_prompt, combine_prompt_backward, prepend_prefix, prepend_prefix_backward
from ..hooks import Hook


def single_adapter(layer, setup):
    """The one adapter of ``setup`` with a module at ``layer`` (None: none), or CompositionError. Spec: TRAIN-1."""
    if setup is None:
        return None
    children = [setup] if isinstance(setup, str) else (list(setup) if isinstance(setup, Stack) else None)
    if children is None or not all(isinstance(c, str) for c in children):
        raise CompositionError(f"training under {setup!r} is not implemented in minadapters yet; train one adapter "
                               "(a name, or a Stack of names with at most one module per location).")
    present = [c for c in children if c in layer.modules]
    if len(present) > 1:
        raise CompositionError(f"training under {setup!r}: {present} all have modules at layer {layer.layer_idx} "
                               f"({layer.key.location}); stacking several adapters at one location is not implemented "
                               "in minadapters' training yet.")
    return present[0] if present else None


class TrainState:
    """Per-step training facts: the forward state, which adapters take gradients, the gradient sums."""

    def __init__(self, model, fwd, trainable: frozenset, grads: dict):
        self.model, self.fwd, self.trainable, self.grads = model, fwd, trainable, grads
        self.prefix_grads: dict = {}          # (name, location) -> (L, 2, H, P, Dh) gradient of the prefix states

    def add(self, name: str, key: str, g) -> None:
        """grads[key] += g when adapter ``name`` is trained (frozen ones get none)."""
        if name not in self.trainable or g is None:
            return
        g = np.asarray(g)
        if key in self.grads:
            self.grads[key] += g.reshape(self.grads[key].shape)
        else:
            self.grads[key] = g.astype(self.model.dtype).copy()


class TrainHooks:
    """Training counterpart of ModelHooks: ``layer(stack, i)`` gives that layer's caching view."""

    def __init__(self, model, state: TrainState):
        self.model, self.state, self.ops = model, state, model.ops
        self.prompt = None

    def embeddings(self, stack, x, mask):
        """Prompt tuning of the setup's first adapter (first stack only, as the inference forward); invertible
        adapters are refused before the forward runs. Spec: GRAD-PROMPT."""
        self.prompt = None
        setup = self.state.fwd.setup
        if stack != self.model.arch.stacks[0].name or setup is None:
            return x, mask
        mod = self.model.model_level["prompt"].modules.get(setup.first())
        if mod is None:
            return x, mask
        prompt = mod.params["prompt_embedding.weight"]
        out, mask = combine_prompt(prompt, x, mask, combine=mod.config["combine"], ops=self.ops)
        self.state.fwd.prompt_tokens_length = prompt.shape[0]
        self.prompt = (mod, mod.config["combine"], prompt.shape[0])
        return out, mask

    def embeddings_backward(self, stack, dx):
        """dL/d prompt from dL/d (prompted embeddings); returns dL/d (embedded input). Spec: GRAD-PROMPT."""
        if self.prompt is None or stack != self.model.arch.stacks[0].name:
            return dx
        mod, combine, P = self.prompt
        d_prompt, dx = combine_prompt_backward(dx, P, combine=combine)
        self.state.add(mod.name, f"prompt_tuning.prompt_tunings.{mod.name}.prompt_embedding.weight", d_prompt)
        return dx

    def layer(self, stack, i):
        return TrainLayerHooks(self.model.hook_table[stack][i], self.state, self.ops)


class TrainLayerHooks:
    """One layer's hooks in a training forward, with the backward of each. Spec: TRAIN-2."""

    def __init__(self, table, state: TrainState, ops):
        self.table, self.state, self.ops = table, state, ops
        self.cache: dict = {}

    def _name(self, key):
        layer = self.table[key]
        return layer, single_adapter(layer, layer.active_setup(self.state.fwd))

    # ---- linear (LoRA, IA³) ------------------------------------------------------------------------------------
    def linear(self, key, x, w, b=None):
        """y = x Wᵀ + b, plus the active LoRA / IA³ module of this location. Spec: GRAD-LORA, GRAD-IA3."""
        layer, name = self._name(key)
        y = self.ops.linear(x, w, b)
        if name is None:
            self.cache[key] = (None, None, x, w, None)
            return y
        mod = layer.modules[name]
        s = x.dtype.type(mod.info["scaling"])
        fused = key == Hook.ATTN_QKV             # LORA-7: one module over the enabled thirds of q|k|v
        if mod.info["kind"] == "ia3":
            v = mod.params["lora_B"].reshape(-1).astype(x.dtype)
            v = (LF.scatter_thirds(v, mod.info["enabled"], 1.0) if fused else v) * s
            self.cache[key] = (layer, mod, x, w, y)
            return y * v
        self.cache[key] = (layer, mod, x, w, None)
        if fused:
            en = mod.info["enabled"]
            delta = LF.grouped_delta(x, mod.params["lora_A"], mod.params["lora_B"], sum(en), ops=self.ops)
            return y + LF.scatter_thirds(delta, en, 0.0) * s
        return self.ops.lora_add(y, x, mod.params["lora_A"], mod.params["lora_B"], s)

    def linear_backward(self, key, dy):
        """dx of the hooked linear; adds the module's parameter gradients. Spec: GRAD-LINEAR, GRAD-LORA, GRAD-IA3."""
        layer, mod, x, w, y = self.cache.pop(key)
        if mod is None:
            return linear_backward(dy, x, w, need_weight=False)[0]
        s = x.dtype.type(mod.info["scaling"])
        keyof = lambda leaf: f"{layer.path}.{layer.container}.{mod.name}.{leaf}"  # noqa: E731
        fused = key == Hook.ATTN_QKV
        if mod.info["kind"] == "ia3":
            v = mod.params["lora_B"].reshape(-1).astype(x.dtype)
            v = (LF.scatter_thirds(v, mod.info["enabled"], 1.0) if fused else v) * s
            dy, dv = LF.ia3_backward(dy, y, v)
            dv = LF.gather_thirds(dv, mod.info["enabled"]) if fused else dv
            self.state.add(mod.name, keyof("lora_B"), (dv * s).reshape(-1, 1))
            return linear_backward(dy, x, w, need_weight=False)[0]
        if fused:
            en = mod.info["enabled"]
            dx, dA, dB = LF.grouped_delta_backward(LF.gather_thirds(dy, en), x, mod.params["lora_A"],
                                                   mod.params["lora_B"], sum(en), scale=s)
        else:
            dx, dA, dB = LF.lora_backward(dy, x, mod.params["lora_A"], mod.params["lora_B"], scale=s)
        self.state.add(mod.name, keyof("lora_A"), dA)
        self.state.add(mod.name, keyof("lora_B"), dB)
        return dx + linear_backward(dy, x, w, need_weight=False)[0]

    # ---- bottleneck ----------------------------------------------------------------------------------------------
    def residual_block(self, key, h, x, layer_norm):
        """The adapter block replacing LN(h + x) (``layer_norm``: a LayerNormFn or None). Spec: GRAD-BN-2."""
        layer, name = self._name(key)
        if name is None:
            s = h + x if x is not None else h
            if layer_norm is None:
                self.cache[key] = (None, None, None, None, x is not None)
                return s
            y, c = layer_norm.forward(s)
            self.cache[key] = (None, layer_norm, c, None, x is not None)
            return y
        mod = layer.modules[name]
        p, kw = bn_params(mod)
        out, c = bn_block_forward(h, x, layer_norm, p, ops=self.ops, **kw)
        self.cache[key] = (layer, layer_norm, c, mod, x is not None)
        return out

    def residual_block_backward(self, key, dout):
        """(dh, dx) of the residual block. Spec: GRAD-BN-2, GRAD-BN-3."""
        layer, layer_norm, c, mod, has_x = self.cache.pop(key)
        if mod is None:
            d = dout if layer_norm is None else layer_norm.backward(dout, c)
            return d, (d if has_x else None)
        p, kw = bn_params(mod)
        kw.pop("original_ln_before")
        kw.pop("residual_before_ln")
        dh, dx, g = bn_block_backward(dout, c, layer_norm, p, **kw)
        for leaf, gk in bn_grad_leaves(mod).items():
            if gk in g:
                self.state.add(mod.name, f"{layer.path}.{layer.container}.{mod.name}.{leaf}", g[gk])
        return dh, dx

    # ---- prefix tuning -------------------------------------------------------------------------------------------
    def prefix(self, key, k, v, mask, attn_input):
        """[P_K ; K], [P_V ; V], mask [0 ; m] with the prefix states of the pool's network. Spec: GRAD-PREFIX."""
        layer, name = self._name(key)
        if name is None:
            self.cache[key] = None
            return k, v, mask
        mod = layer.modules[name]
        kv = self.state.fwd.prefix_states[name][layer.location_key][mod.info["prefix_id"]]   # (2, H, P, Dh)
        B = k.shape[0]
        PK = np.broadcast_to(kv[0], (B,) + kv[0].shape)
        PV = np.broadcast_to(kv[1], (B,) + kv[1].shape)
        self.cache[key] = (layer, mod, kv.shape[2])
        return prepend_prefix(k, v, mask, PK, PV, ops=self.ops)

    def prefix_backward(self, key, dK, dV):
        """(dK, dV) of the un-prefixed keys and values; the prefix part goes to the pool's gradient. Spec: GRAD-PREFIX."""
        c = self.cache.pop(key)
        if c is None:
            return dK, dV
        layer, mod, P = c
        dK, dV, dPK, dPV = prepend_prefix_backward(dK, dV, P)
        acc = self.state.prefix_grads.setdefault((mod.name, layer.location_key), {})
        acc[mod.info["prefix_id"]] = np.stack([dPK, dPV])                  # (2, H, P, Dh)
        return dK, dV

    # ---- layer output (ReFT: refused before the forward) -----------------------------------------------------------
    def layer_output(self, x):
        return x

    def layer_output_backward(self, dy):
        return dy


def bn_params(mod):
    """Arrays and flags of one bottleneck module for bn_block_forward / _backward. Spec: GRAD-BN-2."""
    cfg, p = mod.config, mod.params
    dp = mod.info["down_prefix"]
    arrays = {"wd": p[dp + ".weight"], "bd": p[dp + ".bias"], "wu": p["adapter_up.weight"], "bu": p["adapter_up.bias"],
              "ln_before": (p["adapter_down.0.weight"], p["adapter_down.0.bias"]) if cfg["ln_before"] else None,
              "ln_after": (p["adapter_norm_after.weight"], p["adapter_norm_after.bias"]) if cfg["ln_after"] else None}
    scaling = p["scaling"] if isinstance(cfg["scaling"], str) else float(cfg["scaling"])
    flags = dict(act=cfg["non_linearity"], scaling=scaling, residual_before_ln=cfg["residual_before_ln"],
                 adapter_residual_before_ln=cfg["adapter_residual_before_ln"],
                 original_ln_before=cfg["original_ln_before"], original_ln_after=cfg["original_ln_after"],
                 is_parallel=bool(cfg["is_parallel"]))
    return arrays, flags


def bn_grad_leaves(mod) -> dict:
    """State-dict leaf -> gradient name of bn_block_backward."""
    dp = mod.info["down_prefix"]
    out = {dp + ".weight": "wd", dp + ".bias": "bd", "adapter_up.weight": "wu", "adapter_up.bias": "bu",
           "adapter_norm_after.weight": "ln_after_g", "adapter_norm_after.bias": "ln_after_b"}
    if mod.config["ln_before"]:                  # adapter_down.0 is the LayerNorm, adapter_down.1 the linear
        out.update({"adapter_down.0.weight": "ln_g", "adapter_down.0.bias": "ln_b"})
    if isinstance(mod.config["scaling"], str):
        out["scaling"] = "scaling"
    return out
