"""The mutants and the driver that runs one of them.

    MINADAPTERS_MUTANT=<id> pytest conformance --driver=conformance.mutants.mutants:make_driver

A mutant is one small semantic change to a minadapters function (a wrong scaling, a swapped axis, a missing
residual, ...). It is active only while the mutant driver's own methods run, so the reference driver (the
same minadapters, in the same process) stays clean. The runner (run.py) gives each mutant the tests that
reached its target function in a recorded clean run (RecordingDriver); a mutant's ``select`` only says where one
would look first and is not used to choose tests.
"""
from __future__ import annotations

import atexit
import functools
import json
from collections.abc import Mapping
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from conformance.drivers.minadapters_driver import MinadaptersDriver

ENV = "MINADAPTERS_MUTANT"
_ACTIVE = [False]


@dataclass(frozen=True)
class Mutant:
    id: str
    target: str          # "module:function" or "module:Class.method"
    what: str            # the semantic change, in words
    wrap: Callable       # (orig, args, kwargs) -> result
    select: str = ""     # where one would look first (not used: the runner selects by recorded reachability)
    excluded: str = ""   # non-empty: not counted, with the reason ("equivalent: ..." or "out of scope: ...")


def _kw(**over):
    """Call the original with some keyword arguments replaced (a value or a function of the old value)."""
    def wrap(orig, a, k):
        k = dict(k)
        for n, v in over.items():
            k[n] = v(k[n]) if callable(v) else v
        return orig(*a, **k)
    return wrap


def _arg(i, fn):
    """Call the original with positional argument i replaced by fn(old)."""
    def wrap(orig, a, k):
        a = list(a)
        a[i] = fn(a[i])
        return orig(*a, **k)
    return wrap


def _out(fn):
    def wrap(orig, a, k):
        return fn(orig(*a, **k), a, k)
    return wrap


F = "minadapters.functional."
A = "minadapters.functional.activations:"
LORA_K = "lora and (bert- or llama-) and (single or zero or merge or vector)"
MUTANTS = [
    Mutant("lora-scale-1", F + "lora:lora_delta", "LoRA delta without alpha/r", _kw(scale=lambda s: 1.0 if np.ndim(s) == 0 else s), LORA_K),
    Mutant("lora-scale-x2", F + "lora:lora_delta", "LoRA delta scaled twice", _kw(scale=lambda s: s * 2), LORA_K),
    Mutant("lora-no-delta", F + "lora:lora_delta", "LoRA delta dropped", _out(lambda y, a, k: y * 0), LORA_K),
    Mutant("lora-gate-ignored", F + "lora:lora_delta", "gated LoRA uses 1 instead of the gate",
           _kw(scale=lambda s: s if np.ndim(s) == 0 else np.ones_like(s)), LORA_K),
    Mutant("ia3-as-delta", F + "lora:ia3_vector", "IA3 vector applied as 1 + l (a delta, not a scale)",
           _out(lambda y, a, k: y + 1.0), "ia3 and (bert- or gpt2-) and (single or vector)"),
    Mutant("vera-lambda-d-T", F + "lora:vera_delta_w", "VeRA Λ_D transposed", _arg(2, lambda D: D.T),
           "vera and bert- and (single or vector)"),
    Mutant("vera-lambda-b-T", F + "lora:vera_delta_w", "VeRA Λ_B transposed", _arg(3, lambda Bv: Bv.T),
           "vera and bert- and (single or vector)"),
    Mutant("dora-norm-of-w", F + "lora:dora_norm", "DoRA norm of W alone (ΔW left out)",
           lambda o, a, k: o(a[0], np.zeros_like(a[1])), "dora and bert- and single"),
    Mutant("dora-no-magnitude", F + "lora:dora_combine", "DoRA ignores the magnitude vector",
           lambda o, a, k: a[0] + a[1], "dora and bert- and single"),
    Mutant("mtl-sharpness-1", F + "lora:mtl_delta", "MTL-LoRA ignores weights_sharpness", _kw(sharpness=1.0),
           "mtl_lora and bert- and (single or tree)"),
    Mutant("bn-scaling-1", F + "bottleneck:bottleneck", "bottleneck ignores scaling", _kw(scaling=lambda s: 1.0 if np.size(s) == 1 else s),
           "bottleneck and bert- and single"),
    Mutant("bn-act-relu", F + "bottleneck:bottleneck", "bottleneck always uses relu", _kw(act="relu"),
           "bottleneck and bert- and single"),
    Mutant("bn-no-ln-before", F + "bottleneck:bottleneck", "bottleneck skips ln_before", _kw(ln_before=None),
           "bottleneck and bert- and single"),
    Mutant("bn-gate-ignored", F + "bottleneck:adapter_output", "bottleneck gate ignored", _kw(gate=None),
           "bottleneck and bert- and single"),
    Mutant("bn-residual-flag", F + "bottleneck:adapter_output", "residual_before_ln flipped",
           _kw(residual_before_ln=lambda r: not r), "bottleneck and bert- and single"),
    Mutant("bn-no-ln-after", F + "bottleneck:adapter_output", "bottleneck skips ln_after", _kw(ln_after=None),
           "bottleneck and bert- and single"),
    Mutant("gate-first-token", F + "gate:mean_gate", "gate from the first token instead of the mean over T",
           lambda o, a, k: o(a[0][:, :1], *a[1:], **k), "(lora or bottleneck or prefix) and bert- and single"),
    Mutant("nice-reverse", F + "invertible:nice_coupling", "NICE runs its inverse", _kw(rev=lambda r: not r),
           "invertible and bert- and single"),
    Mutant("phm-kron-swap", F + "phm:kron_sum", "Kronecker factors swapped", lambda o, a, k: o(a[0].swapaxes(-1, -2), a[1]),
           "compacter and bert- and single"),
    Mutant("prefix-act-identity", F + "prefix:prefix_mlp", "prefix MLP without its non-linearity", _kw(act=lambda f: (lambda x: x)),
           "prefix and bert- and single"),
    Mutant("prefix-kv-swap", F + "prefix:prepend_prefix", "prefix keys and values swapped",
           lambda o, a, k: o(a[0], a[1], a[2], a[4], a[3], **k), "prefix and bert- and single"),
    Mutant("prefix-masked", F + "prefix:prepend_prefix", "prefix positions masked out",
           _out(lambda r, a, k: (r[0], r[1], None if r[2] is None else np.concatenate(
               [np.full(r[2].shape[:-1] + (a[3].shape[2],), np.finfo(np.float32).min, r[2].dtype),
                r[2][..., a[3].shape[2]:]], -1))), "prefix and bert- and single"),
    Mutant("prompt-combine-swap", F + "prefix:combine_prompt", "prompt placed after BOS when it belongs first",
           _kw(combine=lambda c: "prefix_after_bos" if c == "prefix" else "prefix"), "prompt and bert- and single"),
    Mutant("reft-no-subtract", F + "reft:reft_unit", "ReFT without subtracting the projection", _arg(5, lambda s: not s),
           "reft and bert- and single"),
    Mutant("reft-positions-swap", F + "reft:reft_positions", "ReFT prefix / suffix counts swapped",
           lambda o, a, k: o(a[0], a[1], a[2], a[4], a[3]), "reft and (bert- or gpt2-) and single"),
    Mutant("reft-not-orthogonal", F + "reft:orthogonal_weight", "orthogonal weight = the raw 'original'",
           lambda o, a, k: np.asarray(a[0]), "reft and bert- and single"),
    Mutant("average-uniform", F + "averaging:weighted_sum", "average_adapter ignores its weights",
           lambda o, a, k: o(a[0], [1.0 / len(a[0])] * len(a[0])), "Average or average or merge",
           excluded="out of scope: the protocol has no average_adapter (API-5) operation; tests/oracle covers it"),
    Mutant("batchsplit-children-reversed", "minadapters.methods.base:ComposableLayer.row_partition",
           "BatchSplit / Parallel rows go to the children in reverse order",
           _out(lambda r, a, k: [(rows, child) for (rows, _), (_, child) in zip(r, reversed(r))]),
           "(batchsplit or parallel or tree or multitask) and bert- and (lora or bottleneck)"),
    Mutant("stack-first-only", "minadapters.methods.base:ComposableLayer.compose_stack",
           "a Stack runs its first child only",
           lambda o, a, k: o(a[0], type(a[1])(*list(a[1])[:1]), *a[2:], **k) if len(list(a[1])) > 1 else o(*a, **k),
           "tree and bert- and (lora or bottleneck or prefix)"),
    Mutant("average-no-div-n", "minadapters.methods.bottleneck:" + "BottleneckLayer.mean",
           "Average without upstream's extra /N (bottleneck)",
           lambda o, a, k: (lambda st: st._replace(hidden_states=st.hidden_states * len(a[1])))(o(*a, **k)),
           "(tree or average) and bert- and bottleneck"),
]

# ---- second batch: activations, gates, residuals, fusion, PHM, prompt/prefix layout, ReFT details, merge, ops ----
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _mask_prompt(r, a, k):
    P = a[0].shape[0]
    if r[1] is None:
        return r
    m = np.array(r[1], copy=True)
    m[:, :P] = 0
    return r[0], m


def _dora_norm_axis0(o, a, k):
    w = a[0] + a[1]
    return np.linalg.norm(w, axis=0) if w.shape[0] == w.shape[1] else o(*a, **k)


MUTANTS += [
    Mutant("act-gelu-tanh", A + "gelu", "exact GELU replaced by the tanh approximation",
           lambda o, a, k: 0.5 * a[0] * (1 + np.tanh(np.sqrt(2 / np.pi) * (a[0] + 0.044715 * a[0] ** 3))),
           "base_model and bert"),
    Mutant("act-leakyrelu-slope", A + "leaky_relu", "leaky ReLU slope 0.2 instead of 0.01",
           lambda o, a, k: np.where(a[0] > 0, a[0], 0.2 * a[0]).astype(a[0].dtype), "bottleneck and bert- and single"),
    Mutant("act-quick-gelu-1", A + "quick_gelu", "quick GELU without its 1.702 factor",
           lambda o, a, k: (a[0] * _sig(a[0])).astype(a[0].dtype), "bottleneck and bert- and single"),
    Mutant("act-relu6-uncapped", A + "relu6", "relu6 without the cap at 6", lambda o, a, k: np.maximum(a[0], 0),
           "bottleneck and bert- and single"),
    Mutant("act-mish-is-swish", A + "mish", "mish computed as swish",
           lambda o, a, k: (a[0] * _sig(a[0])).astype(a[0].dtype), "bottleneck and bert- and single"),
    Mutant("gate-no-sigmoid", F + "gate:mean_gate", "gate without its sigmoid",
           lambda o, a, k: k["ops"].linear(a[0], a[1], a[2]).mean(axis=1), "(lora or bottleneck or prefix) and bert- and single"),
    Mutant("bn-no-up-bias", F + "bottleneck:bottleneck", "bottleneck drops the up-projection bias",
           _arg(4, lambda b: None if b is None else np.zeros_like(b)), "bottleneck and bert- and single"),
    Mutant("bn-no-down-bias", F + "bottleneck:bottleneck", "bottleneck drops the down-projection bias",
           _arg(2, lambda b: None if b is None else np.zeros_like(b)), "bottleneck and bert- and single"),
    Mutant("bn-parallel-flag", F + "bottleneck:adapter_output", "is_parallel flipped in the adapter output",
           _kw(is_parallel=lambda p: not p), "bottleneck and bert- and single"),
    Mutant("bn-original-ln-before", F + "bottleneck:bn_pre_forward", "original_ln_before flipped",
           _kw(original_ln_before=lambda v: not v), "bottleneck and bert- and single"),
    Mutant("bn-original-ln-after", F + "bottleneck:bn_post_forward", "original_ln_after flipped",
           _kw(original_ln_after=lambda v: not v), "bottleneck and bert- and single"),
    Mutant("sublayer-no-residual", F + "bottleneck:sublayer_close", "a sub-layer closes without its residual",
           lambda o, a, k: o(a[0], None if a[1] is None else a[1] * 0, a[2]), "bottleneck and bert- and single"),
    Mutant("fusion-temperature-x2", F + "fusion:fusion_attention", "fusion softmax at twice the temperature",
           _kw(T=lambda t: t * 2), "fusion or fuse"),
    Mutant("fusion-no-residual-before", F + "fusion:fusion_attention", "fusion ignores residual_before",
           _arg(4, lambda c: dict(c, residual_before=False) if isinstance(c, Mapping) else c), "fusion or fuse"),
    Mutant("phm-no-bias", "minadapters.methods.phm:phm_weight", "PHM projection drops its bias",
           _out(lambda r, a, k: (r[0], None)), "compacter and bert- and single"),
    Mutant("prefix-layer-order", F + "prefix:split_prefix_kv", "prefix layers in reverse order",
           _out(lambda r, a, k: r[::-1].copy()), "prefix and bert- and single"),
    Mutant("prefix-head-order", F + "prefix:split_prefix_kv", "prefix heads in reverse order",
           _out(lambda r, a, k: r[:, :, ::-1].copy()), "prefix and bert- and single"),
    Mutant("prompt-masked", F + "prefix:combine_prompt", "prompt positions masked out", _out(_mask_prompt),
           "prompt and bert- and single"),
    Mutant("reft-act-ignored", F + "reft:reft_unit", "ReFT ignores its non_linearity", _arg(4, lambda f: (lambda x: x)),
           "reft and bert- and single"),
    Mutant("reft-suffix-off-by-one", F + "reft:reft_positions", "ReFT suffix positions one token early",
           _out(lambda r, a, k: (r[0], np.maximum(r[1] - 1, 0))), "reft and (bert- or gpt2-) and single"),
    Mutant("reft-householder-tau", F + "reft:householder_product", "Householder reflectors with half tau",
           lambda o, a, k: o(a[0], a[1] * 0.5), "reft and bert- and single"),
    Mutant("lora-merge-transposed", "minadapters.methods.lora_modules:delta_w", "merge adds (B A)ᵀ for square weights",
           _out(lambda y, a, k: y.T if y.ndim == 2 and y.shape[0] == y.shape[1] else y), "merge and bert-"),
    Mutant("dora-norm-axis0", F + "lora:dora_norm", "DoRA norm over input columns", _dora_norm_axis0,
           "dora and bert- and single"),
    Mutant("mtl-weights-negated", F + "lora:mtl_delta", "MTL-LoRA mixes up-projections with exp(-w / s)",
           _arg(4, lambda w: -w), "mtl_lora and bert- and (single or tree)"),
    Mutant("ia3-thirds-fill-0", F + "lora:scatter_thirds", "IA3 on GPT-2 fills unadapted thirds with 0",
           lambda o, a, k: o(a[0], a[1], 0.0 if a[2] == 1 else a[2]), "ia3 and gpt2-"),
    Mutant("ln-eps-1e-5", "minadapters.ops.numpy:NumpyOps.layer_norm", "every LayerNorm with eps 1e-5",
           lambda o, a, k: o(a[0], a[1], a[2], a[3], 1e-5), "base_model",
           excluded="equivalent at the suite's precision: ~1e-6 relative on unit-variance rows, below rtol 1e-4 "
                    "(the base-model golden vectors hold it at 1e-4 too)"),
    Mutant("attention-no-mask", "minadapters.ops.numpy:NumpyOps.attention", "attention ignores the padding mask",
           lambda o, a, k: o(a[0], a[1], a[2], a[3], None), "base_model"),
]


# ---- third batch: sequences of operations, files, defaults, inverse path, blocks, heads -------------------
def _remerge_after(o, a, k):
    """set_active_adapters keeps the LoRA modules merged before the call (instead of unmerging them)."""
    model = a[0]
    merged = [(lyr, lyr.merged) for lyr in model.layers_of("lora") if lyr.merged]
    out = o(*a, **k)
    for lyr, name in merged:
        lyr.merge(name)
    return out


def _split_shifted(o, a, k):
    block = a[1]
    sp = list(block.splits)
    if len(sp) > 1 and sp[-1] > 1:
        block = type(block)(*block.children, splits=[sp[0] + 1] + sp[1:-1] + [sp[-1] - 1])
    return o(a[0], block, *a[2:], **k)


def _task_ids_reversed(o, a, k):
    fwd = a[3]
    old = fwd.task_ids
    n = len(a[1])
    if old is not None and len(old) and not isinstance(old[0], str):
        fwd.task_ids = [n - 1 - int(t) for t in old]
    try:
        return o(*a, **k)
    finally:
        fwd.task_ids = old


def _default(arch, field, value, source=None):
    """AdapterConfig.load with another default: when the given dict (or preset string ``source``) leaves
    ``field`` out, the built config has ``value`` instead of adapters' default."""
    def wrap(o, a, k):
        cfg = o(*a, **k)
        given = a[0]
        from_dict = isinstance(given, Mapping) and given.get("architecture") == arch and field not in given
        if (from_dict and source is None) or (source is not None and given == source):
            return cfg.replace(**{field: value})
        return cfg
    return wrap


def _zero_bias(r, a, k):
    return {n: (np.zeros_like(v) if n.endswith("bias") else v) for n, v in r.items()}


MUTANTS += [
    Mutant("merge-kept-on-switch", "minadapters.model:AdapterModel.set_active_adapters",
           "a new active setup keeps an earlier merge folded into the base weights (no unmerge)", _remerge_after,
           "merge"),
    Mutant("load-as-ignored", "minadapters.loading:load_adapter", "load_adapter ignores load_as (keeps the saved name)",
           _kw(load_as=None), "load or save"),
    Mutant("load-as-keys-not-renamed", "minadapters.loading:_rename_key",
           "load_as renames the adapter but not the keys of its weights", lambda o, a, k: o(a[0], a[1], a[1], a[3]),
           "load or save"),
    Mutant("inverse-is-forward", F + "invertible:nice_coupling", "the inverse NICE coupling (LM heads) runs forward",
           _kw(rev=lambda r: False), "head"),
    Mutant("head-file-no-bias", "minadapters.heads.head:PredictionHead.state_dict",
           "head weights written with zero biases", _out(_zero_bias), "head"),
    Mutant("average-always-normalised", "minadapters.composition:Average.__init__",
           "Average normalises its weights even with normalize_weights=False", _kw(normalize_weights=True), "Average"),
    Mutant("split-off-by-one", "minadapters.methods.bottleneck:BottleneckLayer.compose_split",
           "Split gives its first child one token more, its last one token less", _split_shifted, "Split or tree"),
    Mutant("multitask-ids-reversed", "minadapters.methods.base:ComposableLayer.compose_multi_task",
           "MultiTask maps task id t to child N-1-t", _task_ids_reversed, "multitask or mtl"),
    Mutant("default-lora-alpha", "minadapters.configuration.base:AdapterConfig.load",
           "LoRA's default alpha 16 instead of 8", _default("lora", "alpha", 16), "default"),
    Mutant("default-prefix-act", "minadapters.configuration.base:AdapterConfig.load",
           "prefix tuning's default non_linearity relu instead of tanh", _default("prefix_tuning", "non_linearity", "relu"),
           "default"),
    Mutant("default-seq-bn-act", "minadapters.configuration.base:AdapterConfig.load",
           "the seq_bn preset with non_linearity gelu instead of relu", _default(None, "non_linearity", "gelu",
                                                                                  source="seq_bn"), "default"),
    Mutant("default-ia3-scaling", "minadapters.configuration.base:AdapterConfig.load",
           "the ia3 preset with alpha 2 instead of 1 (scaling 2)", _default(None, "alpha", 2, source="ia3"),
           "default"),
    Mutant("vera-lambda-b-ignored", F + "lora:vera_delta_w", "VeRA ignores Λ_B", _arg(3, lambda Bv: np.ones_like(Bv)),
           "vera"),
]
BY_ID = {m.id: m for m in MUTANTS}


def _install(m: Mutant, wrap=None):
    """Patch m.target so that m.wrap (or ``wrap``) runs instead of it while a driver call is active."""
    wrap = wrap or m.wrap
    mod_name, attr = m.target.split(":")
    mod = importlib.import_module(mod_name)
    owner, _, name = attr.rpartition(".")
    owner = getattr(mod, owner) if owner else mod
    orig = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    bound = isinstance(orig, classmethod)
    fn = orig.__func__ if bound else orig

    @functools.wraps(fn)
    def mutated(*a, **k):
        if _ACTIVE[0]:
            return wrap(functools.partial(fn, a[0]), a[1:], k) if bound else wrap(fn, a, k)
        return fn(*a, **k)

    if isinstance(owner, type):                          # a method: patch the class (subclasses inherit it)
        setattr(owner, name, classmethod(mutated) if bound else mutated)
        return
    for mname, module in list(sys.modules.items()):     # every module that imported the function by name,
        if not mname.startswith("minadapters"):          # and every name -> function table holding it
            continue
        if getattr(module, name, None) is orig:
            setattr(module, name, mutated)
        for table in list(vars(module).values()):
            if isinstance(table, dict):
                for key in [k for k, v in table.items() if v is orig]:
                    table[key] = mutated


class MutantDriver(MinadaptersDriver):
    """minadapters float32 with one mutant active during this driver's own calls."""

    def __init__(self, mutant_id):
        super().__init__(backend="numpy")
        if mutant_id not in BY_ID:
            raise ValueError(f"{ENV}={mutant_id!r}; known mutants: {', '.join(BY_ID)}")
        self.mutant = BY_ID[mutant_id]
        self.name = f"mutant-{mutant_id}"
        _load_all()
        _install(self.mutant)


def _load_all():
    importlib.import_module("minadapters")      # load every module before patching
    for sub in ("methods.lora", "methods.bottleneck", "methods.phm", "methods.invertible", "methods.prefix_tuning",
                "methods.prompt_tuning", "methods.reft", "model", "composition", "loading", "heads.head",
                "heads.files", "heads.model"):
        importlib.import_module("minadapters." + sub)


REACH_ENV = "MINADAPTERS_MUTANT_REACH"


class RecordingDriver(MinadaptersDriver):
    """The clean minadapters float32 driver with a recorder on every mutant's target: while one of this driver's
    own calls runs (exactly when a mutant would act), a call of a target records the current test's node id.
    At exit it writes {target: [node ids]} to $MINADAPTERS_MUTANT_REACH. run.py gives each mutant the tests
    that reached its target: any other test calls the same code as the clean driver, so it cannot fail there."""

    def __init__(self):
        super().__init__(backend="numpy")
        self.name = "minadapters"          # the clean driver's expected failures apply to the recording run
        self.reach = {}
        _load_all()
        for target in sorted({m.target for m in MUTANTS}):
            probe = Mutant(target, target, "recorder", None)
            _install(probe, wrap=self._recorder(target))
        atexit.register(self._write)

    def _recorder(self, target):
        def wrap(orig, a, k):
            test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
            if test:
                self.reach.setdefault(target, set()).add(test)
            return orig(*a, **k)
        return wrap

    def _write(self):
        path = os.environ.get(REACH_ENV)
        if path:
            with open(path, "w", encoding="utf-8") as f:
                json.dump({t: sorted(v) for t, v in sorted(self.reach.items())}, f, indent=0)


def _active(fn):
    @functools.wraps(fn)
    def run(*a, **k):
        _ACTIVE[0] = True
        try:
            return fn(*a, **k)
        finally:
            _ACTIVE[0] = False
    return run


# every protocol method of the driver (adapter, fusion, merge, files, heads) runs with the mutant active
for _n, _f in list(vars(MinadaptersDriver).items()):
    if callable(_f) and not _n.startswith("_"):
        setattr(MutantDriver, _n, _active(_f))
        setattr(RecordingDriver, _n, _active(_f))


def make_driver():
    return MutantDriver(os.environ.get(ENV, ""))


def make_recording_driver():
    return RecordingDriver()
