"""One LoRA-family module (LoRA, IA³, VeRA, DoRA, DvoRA, MTL-LoRA) at one wrapped linear: its parameters, its
initialisation and its per-module math. Spec: LORA-1 .. LORA-6, INIT-3.

Leaf names are adapters 1.3.0's state-dict leaves: ``lora_A``, ``lora_B``, ``vera_D``, ``vera_B``, ``m.weight``
(DoRA magnitude, an ``nn.Linear(1, out)`` upstream), ``gate.weight``/``gate.bias``, ``task_specific.values``,
``weights``.
"""
from __future__ import annotations

import numpy as np

from typing import Optional

from ..configuration import MTLLoRAConfig
from ..errors import CompositionError, ConfigError
from ..functional import lora as F
from ..functional.gate import mean_gate
from . import init as winit
from .base import AdapterModule

LOCATION_KEYS = {"selfattn": "selfattn_lora", "crossattn": "selfattn_lora", "intermediate": "intermediate_lora",
                 "output": "output_lora"}

_NP_DTYPES = {"float16": np.float16, "half": np.float16, "float32": np.float32, "float": np.float32,
              "float64": np.float64, "double": np.float64}


def module_kind(cfg) -> str:
    """'lora' | 'ia3' | 'vera' | 'mtl', chosen as adapters 1.3.0 does. Spec: LORA-0."""
    mode = cfg["composition_mode"]
    if mode == "scale":
        return "ia3"
    if mode != "add":
        raise ConfigError(f"composition_mode={mode!r} is unknown; use 'add' or 'scale'.")
    if isinstance(cfg, MTLLoRAConfig):
        return "mtl"
    # COMPAT(adapters): VeRA is selected by isinstance(vera_d or vera_b, float); an int gives plain LoRA.
    if _is_float(cfg.get("vera_d")) or _is_float(cfg.get("vera_b")):
        return "vera"
    return "lora"


def _is_float(v) -> bool:
    return isinstance(v, float)


def check_config(cfg, name: str) -> None:
    """Reject at add time what adapters 1.3.0 rejects (or crashes on) later. Spec: LORA-0 edge cases."""
    cls = type(cfg).__name__
    r = cfg["r"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"adapter {name!r}: {cls}.r={r!r}; expected an int >= 1.")
    bad = [m for m in (cfg["attn_matrices"] or []) if m not in ("q", "k", "v")]
    if bad:
        raise ConfigError(f"adapter {name!r}: {cls}.attn_matrices has {bad!r}; allowed entries: 'q', 'k', 'v'.")
    kind = module_kind(cfg)
    if kind == "ia3":
        if r != 1:
            raise ConfigError(f"adapter {name!r}: {cls}.r={r!r} with composition_mode='scale'; 'scale' needs r == 1.")
        if cfg["dropout"] > 0:
            raise ConfigError(f"adapter {name!r}: {cls}.dropout={cfg['dropout']!r} with composition_mode='scale'; "
                              "IA3 does not support dropout (use 0.0).")
        if cfg["use_dora"]:
            raise ConfigError(f"adapter {name!r}: {cls}.use_dora=True with composition_mode='scale'; DoRA needs 'add'.")
        if cfg["init_weights"] not in ("ia3", "lora", "bert"):
            raise ConfigError(f"adapter {name!r}: {cls}.init_weights={cfg['init_weights']!r} with "
                              "composition_mode='scale'; use 'ia3', 'lora' or 'bert'.")
    if kind == "vera":
        for f in ("vera_d", "vera_b"):
            v = cfg.get(f)
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"adapter {name!r}: {cls}.{f}={v!r}; VeRA (selected by a float vera_d or vera_b) "
                                  "needs both vera_d and vera_b as numbers.")
    if kind == "mtl":
        if cfg["use_dora"]:
            raise ConfigError(f"adapter {name!r}: {cls}.use_dora=True; MTL-LoRA does not support DoRA "
                              "(adapters 1.3.0 fails with KeyError('w_o')).")
        if cfg["task_specific_matrix_type"] != "singular_values":
            raise ConfigError(f"adapter {name!r}: {cls}.task_specific_matrix_type="
                              f"{cfg['task_specific_matrix_type']!r} is broken in adapters 1.3.0 (its module skips "
                              "nn.Module.__init__); use 'singular_values'.")
        if _is_float(cfg.get("vera_d")) or _is_float(cfg.get("vera_b")):
            raise ConfigError(f"adapter {name!r}: {cls} with float vera_d/vera_b; adapters 1.3.0 silently builds "
                              "MTL-LoRA and ignores VeRA. Set vera_d=vera_b=None.")


def param_dtype(cfg, model):
    """Storage dtype of the leaves adapters creates with ``dtype=config.dtype`` (bfloat16: the model's dtype)."""
    d = cfg.get("dtype")
    return np.dtype(_NP_DTYPES.get(d, model.dtype)) if d else np.dtype(model.dtype)


def init_pair(scheme, rng, a_shape, b_shape, dtype):
    """(A, B) by init scheme. Spec: INIT-3.  'lora': A kaiming(a=√5), B=0; 'bert': N(0,0.02); 'ia3': ones;
    'vera': kaiming(a=0) both."""
    if scheme == "lora":
        return winit.kaiming_uniform(rng, a_shape, dtype=dtype), np.zeros(b_shape, dtype)
    if scheme == "bert":
        return winit.normal(rng, a_shape, 0.02, dtype), winit.normal(rng, b_shape, 0.02, dtype)
    if scheme == "ia3":
        return np.ones(a_shape, dtype), np.ones(b_shape, dtype)
    if scheme == "vera":
        return winit.kaiming_uniform(rng, a_shape, a=0.0, dtype=dtype), winit.kaiming_uniform(rng, b_shape, a=0.0,
                                                                                                dtype=dtype)
    raise ConfigError(f"init_weights={scheme!r} is unknown; use 'lora', 'bert', 'ia3' or 'vera'.")


def gate_params(rng, heads: int, in_f: int) -> dict:
    """gate = Linear(in, heads): weight N(0, 0.02), bias torch's default U(±1/√in) (always float32)."""
    _, bias = winit.linear_default(rng, heads, in_f)
    return {"gate.weight": winit.normal(rng, (heads, in_f), 0.02), "gate.bias": bias}


def make_module(name, cfg, *, in_f, out_f, W, model, rng, heads=1, a_rows=None, b_rows=None) -> AdapterModule:
    """Parameters and derived facts of one module. ``a_rows``/``b_rows`` override the A/B row counts (fused qkv).

    Spec: LORA-1 .. LORA-6, INIT-3."""
    kind = module_kind(cfg)
    r = cfg["r"]
    dt = param_dtype(cfg, model)
    a_shape = (a_rows or r, in_f)
    b_shape = (b_rows or out_f, r)
    p = {}
    if kind in ("lora", "mtl"):
        p["lora_A"], p["lora_B"] = init_pair(cfg["init_weights"], rng, a_shape, b_shape, dt)
        scaling = cfg["alpha"] / r
    elif kind == "ia3":
        scheme = cfg["init_weights"]
        b = {"lora": np.zeros(b_shape, np.float32), "ia3": np.ones(b_shape, np.float32)}.get(scheme)
        p["lora_B"] = b if b is not None else winit.normal(rng, b_shape, 0.02)
        scaling = cfg["alpha"]
    else:  # vera: full square matrices initialised diagonal (float32: adapters ignores dtype here)
        p["vera_D"] = np.diag(np.full(a_shape[0], cfg["vera_d"], np.float32))
        p["vera_B"] = np.diag(np.full(b_shape[0], cfg["vera_b"], np.float32))
        scaling = cfg["alpha"] / r
    if kind == "mtl":
        n = cfg["n_up_projection"]
        p["lora_B"] = (winit.normal(rng, (n,) + b_shape, 0.02, dt) if cfg["init_weights"] == "bert"
                       else np.zeros((n,) + b_shape, dt))
        p["task_specific.values"] = np.ones(r, np.float32)
        p["weights"] = np.ones(n, np.float32)
    if cfg["use_dora"]:
        p["m.weight"] = np.linalg.norm(W.astype(np.float64), axis=1).astype(dt)[:, None]
    if cfg["use_gating"]:
        p.update(gate_params(rng, heads, in_f))
    return AdapterModule(name, cfg, p, kind=kind, scaling=scaling, dora=bool(cfg["use_dora"]),
                         gating=bool(cfg["use_gating"]))


def shared_vera_params(cfg, a_shape, b_shape, rng, model) -> dict:
    """Frozen shared A (r, in), B (out, r) of a VeRA adapter, shaped by its first target. Spec: LORA-4, INIT-3."""
    A, B = init_pair(cfg["init_weights"], rng, a_shape, b_shape, param_dtype(cfg, model))
    return {"lora_A": A, "lora_B": B}


# ---- per-module math -------------------------------------------------------------------------------
def _p(mod, leaf, dtype):
    return mod.params[leaf].astype(dtype, copy=False)


def gate_of(mod, x, ops):
    """(B, 1, 1) mean gate of a single-head module. Spec: LORA-2 (GATE-1)."""
    g = mean_gate(x, _p(mod, "gate.weight", x.dtype), _p(mod, "gate.bias", x.dtype), ops=ops)   # (B, 1)
    return g[:, :, None]


def module_forward(mod, h, x, shared, ops):
    """H of one module given the running hidden state h (None: start from x) and the layer input x.

    Returns (H, gate or None). The gate replaces alpha/r (IA³: alpha). ``ops`` runs the LoRA products.
    Spec: LORA-1 .. LORA-6."""
    dt = x.dtype
    gate = gate_of(mod, x, ops) if mod.info["gating"] else None
    s = gate if gate is not None else dt.type(mod.info["scaling"])
    kind = mod.info["kind"]
    if kind == "ia3":
        v = F.ia3_vector(_p(mod, "lora_B", dt), x.shape[0], scale=1.0)
        return (v if h is None else h * v) * s, gate
    h = x if h is None else h
    A_in = mod.params["lora_A"].shape[1] if kind != "vera" else shared["lora_A"].shape[1]
    if h.shape[-1] != A_in:
        raise CompositionError(f"Stack of LoRA modules: adapter {mod.name!r} receives the previous adapter's "
                               f"output of width {h.shape[-1]} but its lora_A expects {A_in} inputs (adapters 1.3.0 "
                               "chains deltas, which needs in_features == out_features).")
    if kind == "lora":
        return F.lora_delta(h, _p(mod, "lora_A", dt), _p(mod, "lora_B", dt), scale=s, ops=ops), gate
    if kind == "vera":
        return ops.linear(h, delta_w(mod, shared).astype(dt)) * s, gate
    return F.mtl_delta(h, _p(mod, "lora_A", dt), _p(mod, "task_specific.values", dt), _p(mod, "lora_B", dt),
                       _p(mod, "weights", dt), sharpness=mod.config["weights_sharpness"], scale=s, ops=ops), gate


def delta_w(mod, shared):
    """Unscaled ΔW (out, in): B A (LoRA), Λ_B B Λ_D A (VeRA); IA³: l_B (out, 1). Spec: LORA-1, LORA-4, LORA-5."""
    kind = mod.info["kind"]
    p = mod.params
    if kind == "lora":
        dt = np.result_type(p["lora_B"], np.float32)      # float32 at least (float16 leaves), float64 stays
        return p["lora_B"].astype(dt) @ p["lora_A"].astype(dt)
    if kind == "vera":
        if not shared or "lora_A" not in shared:
            raise ConfigError(f"VeRA adapter {mod.name!r}: shared parameters shared_parameters.{mod.name}.lora_A/B "
                              "are missing.")
        dt = np.result_type(shared["lora_A"], np.float32)
        return F.vera_delta_w(shared["lora_A"].astype(dt), shared["lora_B"].astype(dt), p["vera_D"], p["vera_B"])
    if kind == "ia3":
        return p["lora_B"]
    raise ConfigError(f"adapter {mod.name!r}: MTL-LoRA has no single ΔW (3-D lora_B); it cannot be merged.")



def split_key(key: str):
    """'selfattn.q' -> ('selfattn_lora', 'q'); 'intermediate' -> ('intermediate_lora', None). Cross-attention
    projections use adapters' ``selfattn`` location too."""
    loc, _, attn = key.partition(".")
    if loc not in LOCATION_KEYS:
        raise ValueError(f"LoRA layer key {key!r} is unknown; expected selfattn.<q|k|v|qkv>, crossattn.<q|k|v>, "
                         "intermediate or output.")
    return LOCATION_KEYS[loc], (attn or None)


class LoRAMergeMixin:
    """Exact merge / bit-identical reset shared by LoRALayer and LoRAMergedLayer. Spec: LORA-9."""

    merged: Optional[str] = None
    _originals = None

    def weight_keys(self):
        """(weight key, bias key) of the wrapped base linear in the model's params."""
        return self.weights_path + ".weight", self.weights_path + ".bias"

    def _shared(self, name):
        return self.model.model_level["shared"].params.get(name)

    def check_mergeable(self, name: str) -> None:
        """Spec: LORA-9 edge cases."""
        if name not in self.modules:
            return
        mod = self.modules[name]
        if self.merged is not None and self.merged != name:
            raise ConfigError(f"merge_adapter({name!r}): layer {self.layer_idx} ({self.location_key}) already has "
                              f"the merged LoRA module {self.merged!r}. Please reset it first (model.reset_adapter()).")
        if mod.info["gating"]:
            raise ConfigError("Cannot merge LoRA layer with gating.")
        if mod.info["kind"] == "mtl":
            raise ConfigError(f"merge_adapter({name!r}): MTL-LoRA modules cannot be merged (task-specific 3-D "
                              "lora_B; adapters 1.3.0 fails with RuntimeError).")

    def merge(self, name: str) -> None:
        """Replace the base W (and b) by weights giving exactly the unmerged output. Spec: LORA-9."""
        if name not in self.modules or self.merged == name:
            return
        self.check_mergeable(name)
        wk, bk = self.weight_keys()
        W = self.model.params[wk]
        b = self.model.params.get(bk)
        W2, b2 = self.merged_weights(self.modules[name], W, b)
        self._originals = (wk, W, bk, b)
        self.model.params[wk] = W2.astype(W.dtype)
        if b is not None:
            self.model.params[bk] = b2.astype(b.dtype)
        self.merged = name

    def reset(self) -> None:
        """Restore the arrays stored by merge (bit-identical). Spec: LORA-9."""
        if self.merged is None:
            return
        wk, W, bk, b = self._originals
        self.model.params[wk] = W
        if b is not None:
            self.model.params[bk] = b
        self._originals = None
        self.merged = None

    def delete_adapter(self, name: str) -> None:
        if self.merged == name:
            self.reset()      # upstream keeps the weights merged and later fails in reset_adapter
        self.modules.pop(name, None)
