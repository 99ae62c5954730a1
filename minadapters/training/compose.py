"""Composition blocks in a training forward, each with its backward. Spec: TRAIN-COMP (spec/training.md).

The forward of every block is the one of methods/base.py and methods/bottleneck.py / lora.py (same order of
pre-processing, slicing, concatenation, averaging, same "last adapter present" rule); here each block returns its
output state and a function taking the gradient of that state to the gradient of its input state (the block's
explicit backward, llm.c style, not a graph). A state's gradient is a dict with the state's array fields
(missing or None: zero).

Bottleneck state: h (hidden), x (sub-layer input), r (adapter residual), up (last up-projection), last (name).
LoRA state: x (layer input), H (composed delta / IA³ vector), last (name).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..composition import Average, BatchSplit, Fuse, MultiTask, Parallel, Split, Stack
from ..errors import CompositionError, CompositionIndexError
from ..functional import lora as LF
from ..functional.bottleneck import (bn_adapter_backward, bn_adapter_train, bn_post_backward, bn_post_train,
                                     bn_pre_backward, bn_pre_train)
from ..functional.fusion import fusion_attention_backward, fusion_attention_forward
from ..functional.gate import mean_gate, mean_gate_backward
from ..functional.prefix import left_pad_keys, prepend_prefix, prepend_prefix_backward


def _plus(a, b):
    return b if a is None else (a if b is None else a + b)


def _sum_grads(gs):
    out = {}
    for g in gs:
        for k, v in g.items():
            out[k] = _plus(out.get(k), v)
    return out


def _cat(xs, axis):
    return None if any(x is None for x in xs) else np.concatenate(xs, axis)


def _identity(g):
    return g


class BnState(NamedTuple):
    h: np.ndarray
    x: Optional[np.ndarray]
    r: Optional[np.ndarray]
    up: Optional[np.ndarray] = None
    last: Optional[str] = None


class BnComposer:
    """The bottleneck blocks of one location (BottleneckLayer) for training: Stack, Fuse, Split, BatchSplit,
    Average. Spec: TRAIN-COMP."""

    def __init__(self, layer, state, ln, params_of):
        self.layer, self.state, self.ln, self.ops = layer, state, ln, layer.ops
        self.params_of = params_of                    # module -> (arrays, flags) (training/hooks.py bn_params)

    # ---- entry ---------------------------------------------------------------------------------------------------
    def forward(self, setup, h, x):
        """LN(h + x) replaced by the setup's adapters (BottleneckLayer.forward). Spec: TRAIN-COMP.  -> y, back"""
        S, back = self.compose(setup, BnState(h, x, x), 0)
        if S.last is None:                            # no adapter of the setup here: the sub-layer's own close
            s = S.h + x if x is not None else S.h
            if self.ln is None:
                return s, lambda dy: self._finish(back({"h": dy, "x": dy if x is not None else None}), None)
            y, c = self.ln.forward(s)

            def back_ln(dy):
                d = self.ln.backward(dy, c)
                return self._finish(back({"h": d, "x": d if x is not None else None}), None)
            return y, back_ln
        cfg = self.layer.modules[S.last].config
        flags = dict(original_ln_after=cfg["original_ln_after"], is_parallel=bool(cfg["is_parallel"]))
        y, c = bn_post_train(S.h, h, S.x, self.ln, **flags)

        def back_post(dy):
            do, dh0, dx = bn_post_backward(dy, c, self.ln, has_x=x is not None, **flags)
            return self._finish(back({"h": do, "x": dx}), dh0)
        return y, back_post

    def _finish(self, g, dh0):
        """(dh, dx) of the block's inputs; the initial residual r is x."""
        dh = _plus(g.get("h"), dh0)
        dx = _plus(g.get("x"), g.get("r"))
        return dh, dx

    # ---- blocks ----------------------------------------------------------------------------------------------------
    def compose(self, block, S, lvl):
        if isinstance(block, str):
            return self.single(block, S) if block in self.layer.modules else (S, _identity)
        fn = {Stack: self.stack, Fuse: self.fuse, Split: self.split, BatchSplit: self.batch_split,
              Average: self.average}.get(type(block))
        if fn is None:
            why = "inference only" if isinstance(block, (Parallel, MultiTask)) else "not implemented"
            raise CompositionError(f"training under {block!r}: {type(block).__name__} is not trainable ({why}).")
        return fn(block, S, lvl)

    def _child(self, parent, child, S, lvl):
        """A child's result, or None when it names an adapter without a module here."""
        if isinstance(child, str):
            return self.single(child, S) if child in self.layer.modules else None
        self.layer.check_nesting(parent, child, lvl)
        return self.compose(child, S, lvl + 1)

    def pre_block(self, setup, S, fusion_config=None):
        """BN-2 with the first (Fuse: last) adapter of ``setup`` present here. Spec: TRAIN-COMP.  -> S, back, q"""
        name = self.layer._present(setup, last=fusion_config is not None)
        if name is None:
            return S, _identity, None
        cfg = self.layer.modules[name].config
        parallel = bool(cfg["is_parallel"])
        a, r, c = bn_pre_train(S.h, S.x, self.ln, residual_before_ln=cfg["residual_before_ln"],
                               original_ln_before=cfg["original_ln_before"], is_parallel=parallel)
        q_from_h = fusion_config is not None and not parallel and bool(fusion_config["query_before_ln"])
        q = None if fusion_config is None else (S.h if q_from_h else a)

        def back(g):
            da, dr = g.get("h"), g.get("r")
            dq = g.get("q")
            if dq is not None and not q_from_h:
                da = _plus(da, dq)
            zero = np.zeros_like(a)
            dh, dx = bn_pre_backward(_plus(da, zero), _plus(dr, zero), c, self.ln)
            if dq is not None and q_from_h:
                dh = _plus(dh, dq)
            return {"h": dh, "x": _plus(g.get("x"), dx), "r": None, "up": g.get("up")}
        return S._replace(h=a, r=r), back, q

    def single(self, name, S):
        """One adapter's BN-1 and BN-4 on (h, r). Spec: GRAD-BN-1, GRAD-BN-2."""
        mod = self.layer.modules[name]
        p, kw = self.params_of(mod)
        o, up, c = bn_adapter_train(S.h, S.r, p, act=kw["act"], scaling=kw["scaling"], ops=self.ops,
                                    adapter_residual_before_ln=kw["adapter_residual_before_ln"],
                                    is_parallel=kw["is_parallel"])

        def back(g):
            do = g.get("h")
            da, dr, grads = bn_adapter_backward(_plus(do, np.zeros_like(o)), g.get("up"), c, p, act=kw["act"],
                                                scaling=kw["scaling"], is_parallel=kw["is_parallel"])
            self.state.add_bottleneck(self.layer, mod, grads)
            return {"h": da, "x": g.get("x"), "r": _plus(g.get("r"), dr), "up": None}
        return S._replace(h=o, up=up, last=name), back

    def stack(self, block, S, lvl):
        """Children in order, each after its own BN-2 (compose_stack). Spec: TRAIN-COMP."""
        backs = []
        for child in block:
            if isinstance(child, str):
                if child not in self.layer.modules:
                    continue
                S, b1, _ = self.pre_block(child, S)
                S, b2 = self.single(child, S)
                backs += [b1, b2]
            else:
                self.layer.check_nesting(block, child, lvl)
                S, b = self.compose(child, S, lvl + 1)
                backs.append(b)

        def back(g):
            for b in reversed(backs):
                g = b(g)
            return g
        return S, back

    def _rows(self, S, rows):
        return BnState(S.h[rows], None if S.x is None else S.x[rows], None if S.r is None else S.r[rows],
                       None if S.up is None else S.up[rows], None)

    def batch_split(self, block, S, lvl):
        """Rows per child after the block's BN-2, concatenated (compose_batch_split). Spec: TRAIN-COMP."""
        S1, b1, _ = self.pre_block(block, S)
        parts, backs, slices = [], [], []
        for rows, child in self.layer.row_partition(block, S1.h.shape[0], self.state.fwd):
            part = self._rows(S1, rows)
            res = self._child(block, child, part, lvl)
            parts.append(part if res is None else res[0])
            backs.append(_identity if res is None else res[1])
            slices.append(rows)
        last = next((p.last for p in reversed(parts) if p.last is not None), None)
        out = BnState(_cat([p.h for p in parts], 0), _cat([p.x for p in parts], 0), _cat([p.r for p in parts], 0),
                      _cat([p.up for p in parts], 0), last)

        def back(g):
            full = {k: None for k in ("h", "x", "r", "up")}
            for rows, b, p in zip(slices, backs, parts):
                gi = b({k: (None if v is None else v[rows]) for k, v in g.items()})
                for k, v in gi.items():
                    if v is None:
                        continue
                    if full[k] is None:
                        full[k] = np.zeros((S1.h.shape[0],) + v.shape[1:], v.dtype)
                    full[k][rows] += v
            return b1(full)
        return out, back

    def split(self, block, S, lvl):
        """Tokens per child after the block's BN-2, concatenated on the sequence axis (compose_split).
        Spec: TRAIN-COMP."""
        T = S.h.shape[1]
        if sum(block.splits) != T:
            raise CompositionIndexError(f"Split: the input has {T} tokens but splits={block.splits} sum to "
                                        f"{sum(block.splits)}; they must be equal.")
        S1, b1, _ = self.pre_block(block, S)
        outs, backs, cuts, last, start = [], [], [], None, 0
        for child, n in zip(block, block.splits):
            sl = (slice(None), slice(start, start + n))
            part = BnState(S1.h[sl], None if S1.x is None else S1.x[sl], None if S1.r is None else S1.r[sl],
                           None if S1.up is None else S1.up[sl])
            res = self._child(block, child, part, lvl)
            outs.append(part.h if res is None else res[0].h)
            backs.append(_identity if res is None else res[1])
            if res is not None:
                last = res[0].last or last
            cuts.append(sl)
            start += n
        if last is None:
            return S1, b1

        def back(g):
            full = {"x": g.get("x"), "r": g.get("r"), "up": g.get("up"), "h": None}
            dh = g.get("h")
            for sl, b in zip(cuts, backs):
                gi = b({"h": None if dh is None else dh[sl]})
                for k, v in gi.items():
                    if v is None:
                        continue
                    z = np.zeros(S1.h.shape, v.dtype)
                    z[sl] = v
                    full[k] = _plus(full.get(k), z)
            return b1(full)
        return S1._replace(h=np.concatenate(outs, 1), last=last), back

    def average(self, block, S, lvl):
        """mean_i(w_i · out_i) = Σ w_i out_i / N over the children present (compose_average, COMP-AVERAGE).
        Spec: TRAIN-COMP."""
        S1, b1, _ = self.pre_block(block, S)
        res = [r for r in (self._child(block, c, S1, lvl) for c in block) if r is not None]
        w = np.asarray(block.weights, dtype=S.h.dtype)
        n = len(w)
        if len(res) == 1 and n > 1:                   # COMPAT(adapters): one child present: out · Σw / N
            coef = [w.sum() / n]
        elif len(res) != n:
            raise CompositionError(f"Average: {len(res)} of the {len(block)} children of {block!r} exist in layer "
                                   f"{self.layer.layer_idx}; each weight needs its adapter there.")
        else:
            coef = list(w / n)
        h = sum(c * r[0].h for c, r in zip(coef, res))

        def back(g):
            gs = []
            for i, (c, (_, b)) in enumerate(zip(coef, res)):
                gi = {"h": None if g.get("h") is None else g["h"] * c}
                if i == 0:                            # the other fields are the first child's
                    gi.update({k: g.get(k) for k in ("x", "r", "up")})
                gs.append(b(gi))
            return b1(_sum_grads(gs))
        return res[0][0]._replace(h=h, last=res[-1][0].last), back

    def fuse(self, block, S, lvl):
        """AdapterFusion over the children's up-projections (compose_fuse, FUSION-1). Spec: GRAD-FUSION."""
        fusion = self.layer.fusions.get(block.name)
        if fusion is None:
            if set(self.layer.modules).isdisjoint(block.flatten()):
                return S, _identity
            raise CompositionError(f"{block!r}: no fusion layer named {block.name!r}; call add_adapter_fusion first.")
        last = self.layer._present(block, last=True)
        if last is None:
            return S, _identity
        S2, b_pre, q = self.pre_block(block, S, fusion_config=fusion.config)
        res = [r for r in (self._child(block, c, S2, lvl) for c in block) if r is not None]
        if not res:
            return S2._replace(last=last), b_pre
        U = np.stack([r[0].up for r in res], axis=2)                            # (B, T, N, D)
        c_out, cache = fusion_attention_forward(q, U, S2.r, fusion.params, fusion.config, T=fusion.info["T"],
                                                ops=self.ops)

        def back(g):
            dq, dU, dr, grads = fusion_attention_backward(g.get("h"), cache, fusion.params, fusion.config)
            self.state.add_fusion(self.layer, block.name, grads)
            gs = [b({"up": dU[:, :, i]}) for i, (_, b) in enumerate(res)]
            total = _sum_grads(gs + [{"q": dq, "r": _plus(dr, g.get("r")), "x": g.get("x"), "up": g.get("up")}])
            return b_pre(total)
        return S2._replace(h=c_out, last=last), back


# ---- LoRA / IA³ --------------------------------------------------------------------------------------------------
class _ModuleComposer:
    """A leaf (its own module, or the identity where the layer has none) and Stack (children in order, gradients
    back in reverse) for one layer's per-adapter modules; subclasses add their blocks in ``other``. Spec: TRAIN-COMP."""

    def __init__(self, layer, state):
        self.layer, self.state, self.ops = layer, state, layer.ops

    def compose(self, block, S, lvl=0):
        if isinstance(block, str):
            return self.single(block, S) if block in self.layer.modules else (S, _identity)
        if isinstance(block, Stack):
            backs = []
            for child in block:
                if isinstance(child, str) and child not in self.layer.modules:
                    continue
                S, b = self.compose(child, S, lvl + 1)
                backs.append(b)

            def back(g):
                for b in reversed(backs):
                    g = b(g)
                return g
            return S, back
        return self.other(block, S, lvl)


class LoraState(NamedTuple):
    x: np.ndarray
    H: Optional[np.ndarray]
    last: Optional[str] = None


class LoraComposer(_ModuleComposer):
    """LoRA / IA³ modules of one linear for training: Stack (chained deltas), BatchSplit, Average. Spec: TRAIN-COMP."""

    def other(self, block, S, lvl):
        if isinstance(block, BatchSplit):
            return self._batch_split(block, S, lvl)
        if isinstance(block, Average):
            return self._average(block, S, lvl)
        why = "trainable (inference only)" if isinstance(block, (Parallel, MultiTask)) else "implemented"
        raise CompositionError(f"training under {block!r}: {type(block).__name__} over LoRA modules is not {why}.")

    def single(self, name, S):
        """H' = s · δ(H or x) (LoRA, chained) or s · (H ⊙ l) (IA³). Spec: GRAD-LORA, GRAD-IA3."""
        mod = self.layer.modules[name]
        s = S.x.dtype.type(mod.info["scaling"])
        gate = None
        if mod.info["gating"]:                        # GATE-1 on the layer input replaces alpha / r (LORA-2)
            gate = mean_gate(S.x, mod.params["gate.weight"], mod.params["gate.bias"], ops=self.ops)[:, :, None]
            s = gate                                  # (B, 1, 1)

        def gate_back(dH, unscaled):
            """dx of the gate from dH ⊙ (H / g); adds the gate's gradients."""
            if gate is None:
                return None
            dg = (dH * unscaled).sum(axis=(1, 2))[:, None]
            dx, dw, db = mean_gate_backward(dg, S.x, mod.params["gate.weight"], mod.params["gate.bias"])
            self.state.add(name, self._key(name, "gate.weight"), dw)
            self.state.add(name, self._key(name, "gate.bias"), db)
            return dx
        if mod.info["kind"] == "ia3":
            v = mod.params["lora_B"].reshape(1, 1, -1).astype(S.x.dtype)
            base = np.ones((S.x.shape[0], 1, v.shape[-1]), S.x.dtype) if S.H is None else S.H
            H = base * v * s

            def back_ia3(g):
                dH = g.get("H")
                dl = (dH * base * s).reshape(-1, dH.shape[-1]).sum(0)
                self.state.add(name, self._key(name, "lora_B"), dl.reshape(-1, 1))
                dx = gate_back(dH, base * v)
                return {"x": _plus(g.get("x"), dx), "H": None if S.H is None else dH * v * s}
            return S._replace(H=H, last=name), back_ia3
        h = S.x if S.H is None else S.H
        if mod.info["kind"] == "vera":
            return self._vera(name, mod, S, h, s, gate, gate_back)
        if h.shape[-1] != mod.params["lora_A"].shape[1]:
            raise CompositionError(f"Stack of LoRA modules: adapter {name!r} receives the previous adapter's output "
                                   f"of width {h.shape[-1]} but its lora_A expects {mod.params['lora_A'].shape[1]} "
                                   "inputs (adapters 1.3.0 chains deltas, which needs in_features == out_features).")
        unscaled = LF.lora_delta(h, mod.params["lora_A"], mod.params["lora_B"], scale=1.0, ops=self.ops)
        H = unscaled * s

        def back_lora(g):
            dH = g.get("H")
            dh, dA, dB = LF.lora_backward(dH * s if gate is not None else dH, h, mod.params["lora_A"],
                                          mod.params["lora_B"], scale=1.0 if gate is not None else s)
            self.state.add(name, self._key(name, "lora_A"), dA)
            self.state.add(name, self._key(name, "lora_B"), dB)
            dx = _plus(g.get("x"), gate_back(dH, unscaled))
            if S.H is None:
                return {"x": _plus(dx, dh), "H": None}
            return {"x": dx, "H": dh}
        return S._replace(H=H, last=name), back_lora

    def _vera(self, name, mod, S, h, s, gate, gate_back):
        """VeRA: H = s · h ΔWᵀ, ΔW = Λ_B B Λ_D A with the shared (frozen) A, B. Spec: GRAD-VERA."""
        shared = self.layer._shared(name)
        A, B = shared["lora_A"], shared["lora_B"]
        D, Bv = mod.params["vera_D"], mod.params["vera_B"]
        dW = LF.vera_delta_w(A, B, D, Bv).astype(S.x.dtype)
        unscaled = self.ops.linear(h, dW)
        H = unscaled * s

        def back_vera(g):
            dH = g.get("H")
            dHs = dH * s
            ddW = dHs.reshape(-1, dHs.shape[-1]).T @ h.reshape(-1, h.shape[-1])
            dD, dBv = LF.vera_delta_w_backward(ddW, A, B, D, Bv)
            self.state.add(name, self._key(name, "vera_D"), dD)
            self.state.add(name, self._key(name, "vera_B"), dBv)
            dh = dHs @ dW
            dx = _plus(g.get("x"), gate_back(dH, unscaled))
            if S.H is None:
                return {"x": _plus(dx, dh), "H": None}
            return {"x": dx, "H": dh}
        return S._replace(H=H, last=name), back_vera

    def _key(self, name, leaf):
        return f"{self.layer.path}.{self.layer.container}.{name}.{leaf}"

    def _batch_split(self, block, S, lvl):
        parts, backs, slices = [], [], []
        for rows, child in self.layer.row_partition(block, S.x.shape[0], self.state.fwd):
            part = LoraState(S.x[rows], None if S.H is None else S.H[rows])
            sub, b = self.compose(child, part, lvl + 1)
            parts.append(sub)
            backs.append(b)
            slices.append(rows)
        Hs = [p.H for p in parts]
        if any(H is None for H in Hs) and not all(H is None for H in Hs):
            raise CompositionError(f"{block!r}: some children have no LoRA module at layer {self.layer.layer_idx} "
                                   f"({self.layer.key.location}); give every child a module here.")
        out = LoraState(S.x, None if Hs[0] is None else np.concatenate(Hs, 0), parts[-1].last)

        def back(g):
            dx = np.zeros_like(S.x) if g.get("x") is None else g["x"].copy()
            dH = None if S.H is None else np.zeros_like(S.H)
            for rows, b in zip(slices, backs):
                gi = b({"x": None, "H": None if g.get("H") is None else g["H"][rows]})
                if gi.get("x") is not None:
                    dx[rows] += gi["x"]
                if gi.get("H") is not None:
                    dH[rows] += gi["H"]
            return {"x": dx, "H": dH}
        return out, back

    def _average(self, block, S, lvl):
        res = [self.compose(c, S, lvl + 1) for c in block if not isinstance(c, str) or c in self.layer.modules]
        w = np.asarray(block.weights, dtype=S.x.dtype)
        n = len(w)
        if len(res) == 1 and n > 1:
            coef = [w.sum() / n]
        elif len(res) != n:
            raise CompositionError(f"Average: {len(res)} of the {len(block)} children of {block!r} have a LoRA "
                                   f"module at layer {self.layer.layer_idx}; each weight needs its adapter there.")
        else:
            coef = list(w / n)
        H = sum(c * r[0].H for c, r in zip(coef, res))

        def back(g):
            return _sum_grads([b({"H": g["H"] * c, "x": g.get("x") if i == 0 else None})
                               for i, (c, (_, b)) in enumerate(zip(coef, res))])
        return LoraState(S.x, H, res[-1][0].last), back


# ---- prefix tuning -------------------------------------------------------------------------------------------------
class PrefixState(NamedTuple):
    K: np.ndarray                 # (B, H, Tk, Dh)
    V: np.ndarray
    x: np.ndarray                 # the attention input (gates read it)
    mask: Optional[np.ndarray]


class PrefixComposer(_ModuleComposer):
    """Prefix tuning at one attention module for training: a name, Stack (each prefix prepended in turn),
    BatchSplit (rows per child, shorter key axes left-padded with masked keys, PREFIX-4). Spec: TRAIN-COMP."""

    def other(self, block, S, lvl):
        if isinstance(block, BatchSplit):
            return self._batch_split(block, S, lvl)
        why = "trainable (inference only)" if isinstance(block, (Parallel, MultiTask)) else "implemented"
        raise CompositionError(f"training under {block!r}: {type(block).__name__} over prefix tuning is not {why}.")

    def single(self, name, S):
        """Gate and prepend one adapter's prefix (PREFIX-2, PREFIX-3). Spec: GRAD-PREFIX, GRAD-GATE."""
        layer, mod = self.layer, self.layer.modules[name]
        kv = self.state.fwd.prefix_states[name][layer.location_key][mod.info["prefix_id"]]     # (2, H, P, Dh)
        B = S.K.shape[0]
        PK = np.broadcast_to(kv[0], (B,) + kv[0].shape)
        PV = np.broadcast_to(kv[1], (B,) + kv[1].shape)
        gate = None
        if mod.params:                                # PREFIX-3: gates on the attention input scale P_K and P_V
            gate = mean_gate(S.x, mod.params["weight"], mod.params["bias"], ops=self.ops)           # (B, 1|2)
            PK = PK * gate[:, 0, None, None, None].astype(PK.dtype)
            PV = PV * gate[:, -1, None, None, None].astype(PV.dtype)
        K, V, mask = prepend_prefix(S.K, S.V, S.mask, PK, PV, ops=self.ops)
        P = kv.shape[2]

        def back(g):
            dK, dV, dPK, dPV = prepend_prefix_backward(g["K"], g["V"], P, per_row=True)   # (B, H, P, Dh) each
            dx = g.get("x")
            if gate is not None:
                dg = np.zeros_like(gate)
                dg[:, 0] += (dPK * kv[0]).sum(axis=(1, 2, 3))
                dg[:, -1] += (dPV * kv[1]).sum(axis=(1, 2, 3))
                dPK = dPK * gate[:, 0, None, None, None]
                dPV = dPV * gate[:, -1, None, None, None]
                gx, dw, db = mean_gate_backward(dg, S.x, mod.params["weight"], mod.params["bias"])
                self.state.add(name, f"{layer.path}.{layer.container}.{name}.weight", dw)
                self.state.add(name, f"{layer.path}.{layer.container}.{name}.bias", db)
                dx = _plus(dx, gx)
            acc = self.state.prefix_grads.setdefault((name, layer.location_key), {})
            d = np.stack([dPK.sum(0), dPV.sum(0)])                                           # (2, H, P, Dh)
            acc[mod.info["prefix_id"]] = _plus(acc.get(mod.info["prefix_id"]), d)
            return {"K": dK, "V": dV, "x": dx}
        return PrefixState(K, V, S.x, mask), back

    def _batch_split(self, block, S, lvl):
        parts, backs, slices = [], [], []
        for rows, child in self.layer.row_partition(block, S.K.shape[0], self.state.fwd):
            part = PrefixState(S.K[rows], S.V[rows], S.x[rows], None if S.mask is None else S.mask[rows])
            sub, b = self.compose(child, part, lvl + 1)
            parts.append(sub)
            backs.append(b)
            slices.append(rows)
        Tk = max(p.K.shape[2] for p in parts)
        pads = [Tk - p.K.shape[2] for p in parts]
        need_mask = any(p.mask is not None for p in parts) or any(pads)
        padded = []
        for p, n in zip(parts, pads):
            m = p.mask if (p.mask is not None or not need_mask) else np.zeros((p.K.shape[0], 1, 1, p.K.shape[2]),
                                                                                p.K.dtype)
            padded.append(left_pad_keys(p.K, p.V, m, n, ops=self.ops))
        out = PrefixState(np.concatenate([q[0] for q in padded], 0), np.concatenate([q[1] for q in padded], 0), S.x,
                          np.concatenate([q[2] for q in padded], 0) if need_mask else None)

        def back(g):
            dK, dV = np.zeros_like(S.K), np.zeros_like(S.V)
            dx = g.get("x")
            dx = np.zeros_like(S.x) if dx is None else dx.copy()
            for rows, b, n in zip(slices, backs, pads):
                gi = b({"K": g["K"][rows][:, :, n:], "V": g["V"][rows][:, :, n:], "x": None})
                dK[rows] += gi["K"]
                dV[rows] += gi["V"]
                if gi.get("x") is not None:
                    dx[rows] += gi["x"]
            return {"K": dK, "V": dV, "x": dx}
        return out, back
