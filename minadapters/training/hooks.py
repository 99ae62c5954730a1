"""The hook view of a training forward: every hook runs its method's forward with a cache, and has a backward.

Spec: TRAIN-2 (spec/training.md). A family's training forward calls the same hook points as its inference forward
(``linear``, ``prefix``, ``residual_block``, ``layer_output``); its backward calls ``*_backward`` at the same
points in reverse. Caches live in the layer's view (one entry per hook: each hook runs once per layer), gradients
of trainable parameters are added to ``TrainState.grads`` under adapters' state-dict keys.

Compositions run through training/compose.py (Stack, Fuse, Split, BatchSplit, Average for bottlenecks; Stack,
BatchSplit, Average for LoRA / IA³ / VeRA / DoRA; Stack, BatchSplit for prefix tuning); GPT-2's fused q|k|v layer
takes one adapter per location. Model-level methods (invertible adapters, prompt tuning) run at the embedding hook.
"""
from __future__ import annotations

import numpy as np

from ..composition import Stack
from ..errors import CompositionError, ConfigError
from ..functional import lora as LF
from ..functional.activations import get_activation
from ..functional.backward import dropout_mask, linear_backward
from ..functional.invertible import nice_coupling, nice_coupling_backward
from ..functional.phm import factor_product_backward, kron_sum_backward
from ..functional.prefix import combine_prompt, combine_prompt_backward
from ..functional.reft import (gather_rows, gather_rows_backward, orthogonal_weight_backward, reft_positions,
                               reft_unit, reft_unit_backward, scatter_owner, scatter_rows)
from ..hooks import Hook
from ..methods.phm import _weights as phm_factors, phm_weight
from ..methods.reft import BASE as REFT_BASE, ORIG as REFT_ORIG
from .compose import BnComposer, LoraComposer, LoraState, PrefixComposer, PrefixState


def single_adapter(layer, setup):
    """The one adapter of ``setup`` with a module at ``layer`` (None: none), or CompositionError. Spec: TRAIN-1."""
    if setup is None:
        return None
    children = [setup] if isinstance(setup, str) else (list(setup) if isinstance(setup, Stack) else None)
    if children is None or not all(isinstance(c, str) for c in children):
        raise CompositionError(f"training under {setup!r} over GPT-2's fused q|k|v LoRA is not implemented in "
                               "minadapters yet; train one adapter there (a name, or a Stack of names with at most "
                               "one module per location).")
    present = [c for c in children if c in layer.modules]
    if len(present) > 1:
        raise CompositionError(f"training under {setup!r}: {present} all have modules at layer {layer.layer_idx} "
                               f"({layer.key.location}); stacking several adapters at one location is not implemented "
                               "in minadapters' training yet.")
    return present[0] if present else None


class TrainState:
    """Per-step training facts: the forward state, which adapters take gradients, the gradient sums, the dropout
    generator (train() mode only)."""

    def __init__(self, model, fwd, trainable: frozenset, grads: dict, rng=None):
        self.model, self.fwd, self.trainable, self.grads = model, fwd, trainable, grads
        self.prefix_grads: dict = {}          # (name, location) -> (L, 2, H, P, Dh) gradient of the prefix states
        self.rng = rng                        # None: no dropout (eval() mode)

    def dropout_p(self, key: str) -> float:
        """config.json's dropout probability ``key`` when training with dropout, else 0."""
        if self.rng is None:
            return 0.0
        v = self.model.raw_config.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0

    def dropout_fn(self, key: str):
        """A mask maker ``(shape, dtype) -> scaled mask`` for config.json's ``key``, or None at p = 0.
        Spec: GRAD-DROPOUT."""
        p = self.dropout_p(key)
        if p == 0.0:
            return None
        return lambda shape, dtype: dropout_mask(self.rng, shape, p, dtype)

    def add(self, name: str, key: str, g) -> None:
        """grads[key] += g when adapter ``name`` is trained (frozen ones get none)."""
        if name not in self.trainable or g is None:
            return
        g = np.asarray(g)
        if key in self.grads:
            self.grads[key] += g.reshape(self.grads[key].shape)
        else:
            self.grads[key] = g.astype(self.model.dtype).copy()


    def add_bottleneck(self, layer, mod, grads: dict) -> None:
        """A bottleneck module's gradients (bn_adapter_backward names) under its state-dict keys; PHM projections
        pass theirs on to the rule and W factors (shared ones under ``shared_parameters.<name>.``)."""
        for leaf, gk in bn_grad_leaves(mod).items():
            if gk in grads:
                self.add(mod.name, f"{layer.path}.{layer.container}.{mod.name}.{leaf}", grads[gk])
        if mod.config["phm_layer"]:
            for which, prefix, gw, gb in (("down", mod.info["down_prefix"], "wd", "bd"),
                                          ("up", "adapter_up", "wu", "bu")):
                for key, g in phm_grads(self.model, mod, prefix, which, grads[gw]):
                    self.add(mod.name, key if key.startswith("shared_parameters.")
                             else f"{layer.path}.{layer.container}.{mod.name}.{key}", g)
                if mod.params.get(f"{prefix}.b") is not None:
                    self.add(mod.name, f"{layer.path}.{layer.container}.{mod.name}.{prefix}.b", grads[gb])

    def add_fusion(self, layer, fusion: str, grads: dict) -> None:
        """A fusion layer's gradients under ``<path>.adapter_fusion_layer.<fusion>.<leaf>``."""
        for leaf, g in grads.items():
            self.add(fusion, f"{layer.path}.adapter_fusion_layer.{fusion}.{leaf}", g)


class TrainHooks:
    """Training counterpart of ModelHooks: ``layer(stack, i)`` gives that layer's caching view."""

    def dropout(self, x, key: str):
        """(x ⊙ mask, mask | None): inverted dropout with config.json's probability ``key`` (train() mode).
        Spec: GRAD-DROPOUT."""
        fn = self.state.dropout_fn(key)
        if fn is None:
            return x, None
        m = fn(x.shape, x.dtype)
        return x * m, m

    def attention_dropout(self, key: str):
        """The mask maker for attention probabilities (attention_forward's ``dropout``), or None."""
        return self.state.dropout_fn(key)

    def __init__(self, model, state: TrainState):
        self.model, self.state, self.ops = model, state, model.ops
        self.prompt = self.inv = None

    def embeddings(self, stack, x, mask):
        """The setup's first adapter's invertible adapter (NICE), then its prompt (first stack only, in adapters'
        order, as the inference forward). Spec: GRAD-INV, GRAD-PROMPT."""
        self.prompt = self.inv = None
        setup = self.state.fwd.setup
        if stack != self.model.arch.stacks[0].name or setup is None:
            return x, mask
        blk = self.model.model_level["invertible"].blocks.get(setup.first())
        if blk is not None:
            if blk["kind"] != "nice":
                raise ConfigError(f"training adapter {setup.first()!r}: inv_adapter={blk['kind']!r} has no backward in "
                                  "minadapters yet; allowed: 'nice'.")
            self.inv = (setup.first(), blk, x)
            x = nice_coupling(blk["params"], x, get_activation(blk["act"]), ops=self.ops).astype(x.dtype, copy=False)
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
        if stack != self.model.arch.stacks[0].name:
            return dx
        if self.prompt is not None:
            mod, combine, P = self.prompt
            d_prompt, dx = combine_prompt_backward(dx, P, combine=combine)
            self.state.add(mod.name, f"prompt_tuning.prompt_tunings.{mod.name}.prompt_embedding.weight", d_prompt)
        if self.inv is not None:
            name, blk, x = self.inv
            dx, grads = nice_coupling_backward(dx, blk["params"], x, blk["act"], ops=self.ops)
            for leaf, g in grads.items():
                self.state.add(name, f"invertible_adapters.{name}.{leaf}", g)
        return dx

    def layer(self, stack, i):
        return TrainLayerHooks(self.model.hook_table[stack][i], self.state, self.ops)


class TrainLayerHooks:
    """One layer's hooks in a training forward, with the backward of each. Spec: TRAIN-2."""

    def __init__(self, table, state: TrainState, ops):
        self.table, self.state, self.ops = table, state, ops
        self.cache: dict = {}

    dropout = TrainHooks.dropout
    attention_dropout = TrainHooks.attention_dropout

    # ---- linear (LoRA, IA³) ------------------------------------------------------------------------------------
    def linear(self, key, x, w, b=None):
        """y = x Wᵀ + b, with the setup's LoRA / IA³ modules of this location (LORA-8 composition; the fused q|k|v
        layer takes one module, LORA-7). Spec: GRAD-LORA, GRAD-IA3, TRAIN-COMP."""
        layer = self.table[key]
        setup = layer.active_setup(self.state.fwd)
        y = self.ops.linear(x, w, b)
        if setup is None:
            self.cache[key] = (None, x, w)
            return y
        if key == Hook.ATTN_QKV:
            return self._fused_linear(key, layer, single_adapter(layer, setup), x, w, y)
        S, back = LoraComposer(layer, self.state).compose(setup, LoraState(x, None))
        if S.last is None:
            self.cache[key] = (None, x, w)
            return y
        last = layer.modules[S.last]
        if last.info["dora"]:                                 # LORA-5: (m / n) ⊙ (y + H), n = ‖W + ΔW‖
            dW = unscaled_delta_w(last, layer._shared(S.last)).astype(w.dtype, copy=False)
            n = LF.dora_norm(w, dW).astype(y.dtype)
            self.cache[key] = ("dora", x, w, y, S.H, last, dW, n, back, layer)
            return LF.dora_combine(y, S.H, last.params["m.weight"].astype(y.dtype), n)
        ia3 = last.info["kind"] == "ia3"                      # the last module decides: y ⊙ H or y + H
        self.cache[key] = ("compose", x, w, y, S.H, ia3, back)
        return y * S.H if ia3 else y + S.H

    def _fused_linear(self, key, layer, name, x, w, y):
        if name is None:
            self.cache[key] = (None, x, w)
            return y
        mod = layer.modules[name]
        if mod.info["gating"]:
            raise ConfigError(f"training adapter {name!r}: a gated LoRA on the fused q|k|v projection ({layer.path}) "
                              "has no backward in minadapters yet; allowed: use_gating=False there.")
        en, s = mod.info["enabled"], x.dtype.type(mod.info["scaling"])
        self.cache[key] = ("fused", layer, mod, x, w, y)
        if mod.info["kind"] == "ia3":
            return y * (LF.scatter_thirds(mod.params["lora_B"].reshape(-1).astype(x.dtype), en, 1.0) * s)
        delta = LF.grouped_delta(x, mod.params["lora_A"], mod.params["lora_B"], sum(en), ops=self.ops)
        return y + LF.scatter_thirds(delta, en, 0.0) * s

    def linear_backward(self, key, dy):
        """dx of the hooked linear; adds the modules' parameter gradients. Spec: GRAD-LINEAR, GRAD-LORA, GRAD-IA3."""
        c = self.cache.pop(key)
        if c[0] is None:
            return linear_backward(dy, c[1], c[2], need_weight=False)[0]
        if c[0] == "fused":
            return self._fused_backward(dy, *c[1:])
        if c[0] == "dora":
            return self._dora_backward(dy, *c[1:])
        _, x, w, y, H, ia3, back = c
        if ia3:
            dH = dy * y
            if H.shape[1] == 1 and dy.shape[1] != 1:          # the IA³ vector is broadcast over the tokens
                dH = dH.sum(1, keepdims=True)
            g = back({"H": dH, "x": None})
            dy = dy * H
        else:
            g = back({"H": dy, "x": None})
        dx = linear_backward(dy, x, w, need_weight=False)[0]
        return dx if g.get("x") is None else dx + g["x"]

    def _dora_backward(self, dout, x, w, y, H, last, dW, n, back, layer):
        """DoRA's combine backward: m, and the norm's path into ΔW (A, B or VeRA's Λ). Spec: GRAD-DORA."""
        du, dm, ddW = LF.dora_backward(dout, y, H, last.params["m.weight"], n, w, dW)
        name = last.name
        keyof = lambda leaf: f"{layer.path}.{layer.container}.{name}.{leaf}"  # noqa: E731
        self.state.add(name, keyof("m.weight"), dm)
        if last.info["kind"] == "vera":
            shared = layer._shared(name)
            dD, dBv = LF.vera_delta_w_backward(ddW, shared["lora_A"], shared["lora_B"], last.params["vera_D"],
                                               last.params["vera_B"])
            self.state.add(name, keyof("vera_D"), dD)
            self.state.add(name, keyof("vera_B"), dBv)
        else:                                                 # ΔW = B A
            self.state.add(name, keyof("lora_A"), last.params["lora_B"].T @ ddW)
            self.state.add(name, keyof("lora_B"), ddW @ last.params["lora_A"].T)
        g = back({"H": du, "x": None})
        dx = linear_backward(du, x, w, need_weight=False)[0]
        return dx if g.get("x") is None else dx + g["x"]

    def _fused_backward(self, dy, layer, mod, x, w, y):
        s = x.dtype.type(mod.info["scaling"])
        en = mod.info["enabled"]
        keyof = lambda leaf: f"{layer.path}.{layer.container}.{mod.name}.{leaf}"  # noqa: E731
        if mod.info["kind"] == "ia3":
            v = LF.scatter_thirds(mod.params["lora_B"].reshape(-1).astype(x.dtype), en, 1.0) * s
            dy, dv = LF.ia3_backward(dy, y, v)
            self.state.add(mod.name, keyof("lora_B"), (LF.gather_thirds(dv, en) * s).reshape(-1, 1))
            return linear_backward(dy, x, w, need_weight=False)[0]
        dx, dA, dB = LF.grouped_delta_backward(LF.gather_thirds(dy, en), x, mod.params["lora_A"], mod.params["lora_B"],
                                               sum(en), scale=s)
        self.state.add(mod.name, keyof("lora_A"), dA)
        self.state.add(mod.name, keyof("lora_B"), dB)
        return dx + linear_backward(dy, x, w, need_weight=False)[0]

    # ---- bottleneck ----------------------------------------------------------------------------------------------
    def residual_block(self, key, h, x, layer_norm):
        """The adapter block replacing LN(h + x) (``layer_norm``: a LayerNormFn or None), any trainable
        composition. Spec: GRAD-BN-2, TRAIN-COMP."""
        layer = self.table[key]
        setup = layer.active_setup(self.state.fwd)
        if setup is None:
            s = h + x if x is not None else h
            if layer_norm is None:
                self.cache[key] = lambda d: (d, d if x is not None else None)
                return s
            y, c = layer_norm.forward(s)

            def back(d):
                d = layer_norm.backward(d, c)
                return d, (d if x is not None else None)
            self.cache[key] = back
            return y
        y, back = BnComposer(layer, self.state, layer_norm, lambda mod: bn_params(mod, layer.model)).forward(setup, h,
                                                                                                        x)
        self.cache[key] = back
        return y

    def residual_block_backward(self, key, dout):
        """(dh, dx) of the residual block. Spec: GRAD-BN-2, GRAD-BN-3, TRAIN-COMP."""
        return self.cache.pop(key)(dout)

    # ---- prefix tuning -------------------------------------------------------------------------------------------
    def prefix(self, key, k, v, mask, attn_input):
        """[P ; K], [P ; V], mask [0 ; m] for the setup's prefixes (a name, Stack, BatchSplit; PREFIX-2..4).
        Spec: GRAD-PREFIX, TRAIN-COMP."""
        layer = self.table[key]
        setup = layer.active_setup(self.state.fwd)
        if setup is None:
            self.cache[key] = None
            return k, v, mask
        S, back = PrefixComposer(layer, self.state).compose(setup, PrefixState(k, v, attn_input, mask))
        self.cache[key] = back
        return S.K, S.V, S.mask

    def prefix_backward(self, key, dK, dV):
        """(dK, dV, d attn_input | None) of the un-prefixed keys and values; the prefixes' part goes to the pool's
        gradient, the gates' to their parameters and the attention input. Spec: GRAD-PREFIX, GRAD-GATE."""
        back = self.cache.pop(key)
        if back is None:
            return dK, dV, None
        g = back({"K": dK, "V": dV})
        return g["K"], g["V"], g.get("x")

    # ---- layer output (ReFT) ---------------------------------------------------------------------------------------
    def layer_output(self, x):
        """The setup's first adapter's ReFT intervention on the layer output (REFT-4), with its cache.
        Spec: GRAD-REFT."""
        layer = self.table.get(Hook.LAYER_OUTPUT)
        setup = None if layer is None else layer.active_setup(self.state.fwd)
        if setup is None or setup.first() not in layer.modules:
            self.cache[Hook.LAYER_OUTPUT] = None
            return x
        mod = layer.modules[setup.first()]
        cfg, p = mod.config, mod.params
        B, T, _ = x.shape
        npre, nsuf = cfg["prefix_positions"], cfg["suffix_positions"]
        pref, suff = reft_positions(self.state.fwd.attention_mask, B, T, npre, nsuf)
        units = [(p[f"units.{k}.learned_source.weight"], p[f"units.{k}.learned_source.bias"],
                  layer.projection(mod, k).astype(x.dtype, copy=False)) for k in range(mod.info["n_units"])]
        act, sub = get_activation(cfg["non_linearity"]), mod.info["subtract"]
        prefix, suffix = gather_rows(x, pref), gather_rows(x, suff)
        if len(units) == 1:
            inputs = [np.concatenate([prefix, suffix], 1)]
        else:
            inputs = [prefix, suffix]
        outs = [reft_unit(h, *u, act, sub).astype(x.dtype) for h, u in zip(inputs, units)]
        out = np.concatenate(outs, 1)
        writes, starts = [], []
        if npre > 0:
            x = scatter_rows(x, pref, out[:, :pref.shape[1]])
            writes.append(pref)
            starts.append(0)
        if nsuf > 0:
            # COMPAT(adapters): the suffix window starts at len(out) − s (spec REFT-4 note), as the inference path
            start = max(out.shape[1] - nsuf, 0)
            x = scatter_rows(x, suff, out[:, start:start + suff.shape[1]])
            writes.append(suff)
            starts.append(start)
        self.cache[Hook.LAYER_OUTPUT] = (layer, mod, pref, suff, inputs, units, out.shape, writes, starts)
        return x

    def layer_output_backward(self, dy):
        """dL/d(layer output before ReFT): overwritten positions route to the units, then back to their gathered
        inputs. Spec: GRAD-REFT."""
        c = self.cache.pop(Hook.LAYER_OUTPUT, None)
        if c is None:
            return dy
        layer, mod, pref, suff, inputs, units, out_shape, writes, starts = c
        B, T, _ = dy.shape
        owner, slot = scatter_owner(B, T, writes)
        d_out = np.zeros(out_shape, dy.dtype)
        b_idx, t_idx = np.nonzero(owner >= 0)
        cols = np.asarray(starts, np.int64)[owner[b_idx, t_idx]] + slot[b_idx, t_idx]
        np.add.at(d_out, (b_idx, cols), dy[b_idx, t_idx])
        dx = dy * (owner < 0)[..., None]
        sizes = [h.shape[1] for h in inputs]
        d_ins = []
        for k, (h, u, d) in enumerate(zip(inputs, units, np.split(d_out, np.cumsum(sizes)[:-1], axis=1))):
            dh, dW, db, dR = reft_unit_backward(d, h, *u, mod.config["non_linearity"], mod.info["subtract"])
            key = f"{layer.path}.{layer.container}.{mod.name}.units.{k}."
            self.state.add(mod.name, key + "learned_source.weight", dW)
            self.state.add(mod.name, key + "learned_source.bias", db)
            orig = mod.params.get(f"units.{k}.{REFT_ORIG}")
            if orig is None:
                self.state.add(mod.name, key + "projection.weight", dR)
            else:                                     # LoReFT: through torch's orthogonal parametrization (REFT-2)
                self.state.add(mod.name, key + REFT_ORIG,
                               orthogonal_weight_backward(dR, orig, mod.params[f"units.{k}.{REFT_BASE}"]))
            d_ins.append(dh)
        d_all = np.concatenate(d_ins, 1)
        P = pref.shape[1]
        return dx + gather_rows_backward(d_all[:, :P], pref, T) + gather_rows_backward(d_all[:, P:], suff, T)


def unscaled_delta_w(mod, shared):
    """ΔW (out, in) in the parameters' own dtype: B A (LoRA), Λ_B B Λ_D A (VeRA). Spec: GRAD-DORA."""
    p = mod.params
    if mod.info["kind"] == "vera":
        return LF.vera_delta_w(shared["lora_A"], shared["lora_B"], p["vera_D"], p["vera_B"])
    return p["lora_B"] @ p["lora_A"]


def phm_grads(model, mod, prefix, which, d_weight):
    """(key, gradient) of the PHM factors behind one projection's effective (out, in) weight gradient: the rule
    (or its left / right factors) and W (or W_left / W_right), per layer or shared. Spec: GRAD-PHM."""
    cfg, p = mod.config, mod.params
    shared = model.model_level["shared"].get(mod.name) if (cfg["shared_phm_rule"] or cfg["shared_W_phm"]) else {}
    rule, W, _ = phm_factors(model, mod, prefix, which)
    d_rule, d_W = kron_sum_backward(d_weight.T, rule, W)             # the effective weight is Hᵀ
    out = []
    sp = f"shared_parameters.{mod.name}."
    if cfg["shared_W_phm"]:
        names = (sp + f"W_{which}_left", sp + f"W_{which}_right") if cfg["factorized_phm_W"] else (sp + f"W_{which}",)
        src = shared
        leaves = [n[len(sp):] for n in names]
    else:
        names = leaves = (f"{prefix}.W_left", f"{prefix}.W_right") if cfg["factorized_phm_W"] else (f"{prefix}.W",)
        src = p
    if len(names) == 2:
        out += list(zip(names, factor_product_backward(d_W, src[leaves[0]], src[leaves[1]])))
    else:
        out.append((names[0], d_W))
    rsrc, rpre, rkey = (shared, "", sp) if cfg["shared_phm_rule"] else (p, prefix + ".", prefix + ".")
    if cfg["factorized_phm_rule"]:
        dl, dr = factor_product_backward(d_rule, rsrc[rpre + "phm_rule_left"], rsrc[rpre + "phm_rule_right"])
        out += [(rkey + "phm_rule_left", dl), (rkey + "phm_rule_right", dr)]
    else:
        out.append((rkey + "phm_rule", d_rule))
    return out


def bn_params(mod, model):
    """Arrays and flags of one bottleneck module for bn_block_forward / _backward (PHM projections as their
    effective (out, in) weights, PHM-1). Spec: GRAD-BN-2."""
    cfg, p = mod.config, mod.params
    dp = mod.info["down_prefix"]
    if cfg["phm_layer"]:
        (wd, bd), (wu, bu) = phm_weight(model, mod, dp, "down"), phm_weight(model, mod, "adapter_up", "up")
    else:
        wd, bd, wu, bu = p[dp + ".weight"], p[dp + ".bias"], p["adapter_up.weight"], p["adapter_up.bias"]
    arrays = {"wd": wd, "bd": bd, "wu": wu, "bu": bu,
              "ln_before": (p["adapter_down.0.weight"], p["adapter_down.0.bias"]) if cfg["ln_before"] else None,
              "ln_after": (p["adapter_norm_after.weight"], p["adapter_norm_after.bias"]) if cfg["ln_after"] else None,
              "gate": (p["gate.weight"], p["gate.bias"]) if cfg["use_gating"] else None}
    scaling = p["scaling"] if isinstance(cfg["scaling"], str) else float(cfg["scaling"])
    flags = dict(act=cfg["non_linearity"], scaling=scaling, residual_before_ln=cfg["residual_before_ln"],
                 adapter_residual_before_ln=cfg["adapter_residual_before_ln"],
                 original_ln_before=cfg["original_ln_before"], original_ln_after=cfg["original_ln_after"],
                 is_parallel=bool(cfg["is_parallel"]))
    return arrays, flags


def bn_grad_leaves(mod) -> dict:
    """State-dict leaf -> gradient name of bn_block_backward."""
    dp = mod.info["down_prefix"]
    out = {"adapter_norm_after.weight": "ln_after_g", "adapter_norm_after.bias": "ln_after_b"}
    if not mod.config["phm_layer"]:            # PHM projections: see phm_grads
        out.update({dp + ".weight": "wd", dp + ".bias": "bd", "adapter_up.weight": "wu", "adapter_up.bias": "bu"})
    if mod.config["use_gating"]:
        out.update({"gate.weight": "gate_w", "gate.bias": "gate_b"})
    if mod.config["ln_before"]:                  # adapter_down.0 is the LayerNorm, adapter_down.1 the linear
        out.update({"adapter_down.0.weight": "ln_g", "adapter_down.0.bias": "ln_b"})
    if isinstance(mod.config["scaling"], str):
        out["scaling"] = "scaling"
    return out
