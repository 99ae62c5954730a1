"""Hypothesis strategies: valid configs per method (a registry, one entry per method), composition trees per
ALLOWED_NESTINGS, perturbed adapter weights and padded batches.

Core only: numpy + hypothesis. Configs are plain dicts in adapters 1.3.0's field names, so every driver can
take them. A method entry is enabled for a run when the driver under test (and, for differential checks, the
reference) reports its capability ``method:<name>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st

from .tinymodels import ARCHS, ENCODER_DECODERS, ENCODERS, LLAMA_LIKE, PRE_LN, SIZES

D, L = SIZES["hidden_size"], SIZES["num_hidden_layers"]
ACTIVATIONS = ["relu", "swish", "gelu", "gelu_new", "tanh", "sigmoid", "quick_gelu", "relu6", "leakyrelu", "mish"]
BLOCKS = ("Stack", "Fuse", "Split", "BatchSplit", "Parallel", "MultiTask", "Average")
# Spec: COMP-1. ALLOWED_NESTINGS of adapters 1.3.0 (composition.py), by block name; "str" = an adapter name.
ALLOWED_NESTINGS = {
    "Stack": ("str", "Fuse", "Split", "Parallel", "BatchSplit", "Average", "MultiTask"),
    "Fuse": ("str", "Stack"),
    "Split": ("str", "Split", "Stack", "BatchSplit", "Average"),
    "Parallel": ("str", "Stack", "BatchSplit", "Average"),
    "MultiTask": ("str", "Stack", "Average", "Fuse"),
    "BatchSplit": ("str", "Stack", "Split", "BatchSplit", "Average"),
    "Average": ("str", "Stack", "Split", "BatchSplit"),
}
# adapters 1.3.0 config classes (the meta tests check each is drawn by some entry or listed here as pending)
UPSTREAM_CONFIG_CLASSES = (
    "BnConfig", "SeqBnConfig", "DoubleSeqBnConfig", "ParBnConfig", "SeqBnInvConfig", "DoubleSeqBnInvConfig",
    "CompacterConfig", "CompacterPlusPlusConfig", "AdapterPlusConfig", "LoRAConfig", "IA3Config", "VeraConfig",
    "DoRAConfig", "DvoRAConfig", "MTLLoRAConfig", "PrefixTuningConfig", "PromptTuningConfig", "ReftConfig",
    "LoReftConfig", "NoReftConfig", "DiReftConfig", "ConfigUnion", "MAMConfig", "UniPELTConfig",
)
NOT_DRAWN = {}  # class -> why no entry draws it yet (none: every upstream config class is drawn)


# ---- adapter configs ------------------------------------------------------------------------------------
def _dropout():
    """Dropout is the identity in eval mode: drawing it checks that an implementation does not apply it."""
    return st.sampled_from([0.0, 0.1])


def _leave_out():
    return st.lists(st.integers(0, L - 1), max_size=1, unique=True)


@st.composite
def bottleneck_configs(draw, phm=False, inv=False):
    """BnConfig dicts with every field drawn (Spec: BN-1..BN-5)."""
    mh, out = draw(st.sampled_from([(False, True), (True, False), (True, True)]), label="mh_adapter, output_adapter")
    rbl = draw(st.sampled_from([True, False, "post_add"]), label="residual_before_ln")
    olnb = True if rbl == "post_add" else draw(st.booleans(), label="original_ln_before")
    cfg = {"mh_adapter": mh, "output_adapter": out,
           "reduction_factor": draw(st.sampled_from([2, 5, 7, 20, 0.5, {"1": 4, "default": 10}]), label="rf"),
           "non_linearity": draw(st.sampled_from(ACTIVATIONS), label="non_linearity"),
           "original_ln_before": olnb, "original_ln_after": draw(st.booleans(), label="original_ln_after"),
           "ln_before": draw(st.booleans(), label="ln_before"), "ln_after": draw(st.booleans(), label="ln_after"),
           "init_weights": draw(st.sampled_from(["bert", "mam_adapter", "houlsby"]), label="init_weights"),
           "is_parallel": draw(st.booleans(), label="is_parallel"),
           "scaling": draw(st.sampled_from([1.0, 0.5, 2.0, "learned", "channel"]), label="scaling"),
           "use_gating": draw(st.booleans(), label="use_gating"), "residual_before_ln": rbl,
           "adapter_residual_before_ln": draw(st.booleans(), label="adapter_residual_before_ln"),
           "dropout": draw(_dropout(), label="dropout"),
           "leave_out": draw(_leave_out(), label="leave_out")}
    if phm:
        cfg.update(init_weights="bert", phm_layer=True, reduction_factor=draw(st.sampled_from([5, 10]), label="rf"),
                   phm_rank=draw(st.integers(1, 2), label="phm_rank"),
                   factorized_phm_W=draw(st.booleans(), label="factorized_phm_W"),
                   shared_phm_rule=draw(st.booleans(), label="shared_phm_rule"),
                   factorized_phm_rule=draw(st.booleans(), label="factorized_phm_rule"),
                   phm_c_init=draw(st.sampled_from(["normal", "uniform"]), label="phm_c_init"),
                   phm_bias=draw(st.booleans(), label="phm_bias"))
        cfg["shared_W_phm"] = cfg["factorized_phm_W"] and draw(st.booleans(), label="shared_W_phm")
        # phm_dim divides D (20 / 24) and the bottleneck (D // rf = 4 for rf 5, 2 for rf 10)
        cfg["phm_dim"] = draw(st.sampled_from([2, 4]), label="phm_dim") if cfg["reduction_factor"] == 5 else 2
    if inv:
        # GLOW is not drawn: adapters 1.3.0 crashes on it here (RuntimeError: size 20 vs 10 at dim 2)
        cfg.update(inv_adapter="nice",
                   inv_adapter_reduction_factor=draw(st.sampled_from([2, 3]), label="inv_rf"))
    return cfg


def _lora_targets(draw, attn_only=False):
    sa = True if attn_only else draw(st.booleans(), label="selfattn_lora")
    inter = False if attn_only else draw(st.booleans(), label="intermediate_lora")
    out = False if attn_only else draw(st.booleans(), label="output_lora")
    if not (sa or inter or out):
        sa = True
    mats = draw(st.lists(st.sampled_from(["q", "k", "v"]), min_size=1, max_size=3, unique=True), label="attn_matrices")
    return {"selfattn_lora": sa, "intermediate_lora": inter, "output_lora": out, "attn_matrices": sorted(mats),
            "leave_out": draw(_leave_out(), label="leave_out")}


@st.composite
def lora_configs(draw, kind="lora"):
    """LoRAConfig-family dicts: kind lora / ia3 / vera / dora / dvora / mtl (Spec: LORA-*)."""
    cfg = {"architecture": "lora", "dropout": draw(_dropout(), label="dropout"), **_lora_targets(draw, attn_only=kind in ("vera", "dvora"))}
    if kind == "ia3":
        cfg.update(composition_mode="scale", r=1, dropout=0.0, alpha=draw(st.sampled_from([1, 2, 3]), label="alpha"),
                   init_weights="ia3", use_gating=draw(st.booleans(), label="use_gating"))
        return cfg
    cfg.update(composition_mode="add", r=draw(st.integers(1, 4), label="r"),
               alpha=draw(st.sampled_from([1, 2, 8]), label="alpha"),
               use_gating=draw(st.booleans(), label="use_gating") if kind == "lora" else False,
               init_weights=draw(st.sampled_from(["lora", "bert"]), label="init_weights"))
    if kind in ("vera", "dvora"):
        cfg.update(vera_d=draw(st.sampled_from([0.1, 0.5]), label="vera_d"),
                   vera_b=draw(st.sampled_from([0.0, 0.1]), label="vera_b"), init_weights="vera")
    if kind in ("dora", "dvora"):
        cfg["use_dora"] = True
    if kind == "mtl":       # task_specific_matrix_type="linear" is broken upstream (semantics §4.6)
        cfg.update(architecture="mtl_lora", use_gating=draw(st.booleans(), label="use_gating"),
                   n_up_projection=draw(st.integers(1, 3), label="n_up_projection"),
                   task_specific_matrix_type="singular_values",
                   weights_sharpness=draw(st.sampled_from([0.05, 0.5, 2.0]), label="weights_sharpness"))
    return cfg


@st.composite
def prefix_configs(draw):
    return {"architecture": "prefix_tuning", "encoder_prefix": True, "cross_prefix": True,
            "flat": draw(st.booleans(), label="flat"), "prefix_length": draw(st.integers(1, 5), label="prefix_length"),
            "bottleneck_size": draw(st.integers(2, 9), label="bottleneck_size"),
            "non_linearity": draw(st.sampled_from(["tanh", "relu", "gelu"]), label="non_linearity"),
            "use_gating": draw(st.booleans(), label="use_gating"),
            "shared_gating": draw(st.booleans(), label="shared_gating"), "leave_out": draw(_leave_out(), label="leave_out"),
            "dropout": draw(_dropout(), label="dropout")}


@st.composite
def prompt_configs(draw):
    return {"architecture": "prompt_tuning", "prompt_length": draw(st.integers(1, 4), label="prompt_length"),
            "prompt_init": "random_uniform",
            "combine": draw(st.sampled_from(["prefix", "prefix_after_bos"]), label="combine")}


@st.composite
def reft_configs(draw):
    layers = draw(st.sampled_from(["all", [0], [1], [0, 1]]), label="layers")
    return {"architecture": "reft", "layers": layers, "r": draw(st.integers(1, 3), label="r"),
            # at least one position, so that every drawn ReFT adapter intervenes somewhere
            **draw(st.sampled_from([(p, s) for p in range(4) for s in range(3) if p + s]).map(
                lambda ps: {"prefix_positions": ps[0], "suffix_positions": ps[1]}), label="prefix, suffix positions"),
            "orthogonality": draw(st.booleans(), label="orthogonality"),
            "non_linearity": draw(st.sampled_from([None, "tanh", "gelu"]), label="non_linearity"),
            "tied_weights": draw(st.booleans(), label="tied_weights"), "dropout": draw(_dropout(), label="dropout")}


# ---- config unions (Spec: CFG-3, CFG-5) ------------------------------------------------------------------
# member kind -> blocks adapters 1.3.0 supports for it (semantics §6.6); a union supports their intersection
_MEMBER_BLOCKS = {
    "bottleneck": frozenset(BLOCKS), "par_bottleneck": frozenset(BLOCKS) - {"Parallel"},
    "lora": frozenset({"Stack", "BatchSplit", "Parallel", "MultiTask", "Average"}),
    "prefix_tuning": frozenset({"Stack", "BatchSplit", "Parallel", "MultiTask"}), "reft": frozenset({"Stack"}),
}


def member_kind(c) -> str:
    arch = c.get("architecture")
    if arch is None:
        return "par_bottleneck" if c.get("is_parallel") else "bottleneck"
    return "lora" if arch in ("lora", "mtl_lora") else arch


@st.composite
def union_configs(draw):
    """ConfigUnion dicts of compatible members: 2-4 of bottleneck (one, or one per location), LoRA or IA3,
    prefix tuning, ReFT (same-architecture members other than bottlenecks at different locations are invalid)."""
    kinds = draw(st.lists(st.sampled_from(["bottleneck", "bottleneck2", "lora", "ia3", "prefix_tuning", "reft"]),
                          min_size=2, max_size=4, unique=True).filter(lambda k: not {"lora", "ia3"} <= set(k)
                                                                       and (k.count("bottleneck2") == 0
                                                                            or "bottleneck" in k)),
                 label="union members")
    members = []
    for k in kinds:
        if k.startswith("bottleneck"):
            c = draw(bottleneck_configs(), label=f"member {k}")
            if "bottleneck2" in kinds:   # two bottlenecks: one per location (CFG-3)
                c.update(mh_adapter=k == "bottleneck", output_adapter=k == "bottleneck2")
        elif k in ("lora", "ia3"):
            c = draw(lora_configs(k), label=f"member {k}")
        else:
            c = draw({"prefix_tuning": prefix_configs, "reft": reft_configs}[k](), label=f"member {k}")
        members.append(c)
    return {"architecture": "union", "configs": members}


@st.composite
def mam_configs(draw):
    """MAMConfig(prefix_tuning, adapter)'s to_dict form: prefix tuning + a ParBnConfig-style parallel
    bottleneck at the FFN output (drawn sizes instead of the defaults 800 / reduction factor 2)."""
    prefix = dict(draw(prefix_configs(), label="prefix member"),
                  bottleneck_size=draw(st.sampled_from([8, 33, 800]), label="prefix bottleneck_size"))
    adapter = {"mh_adapter": False, "output_adapter": True, "reduction_factor": draw(st.sampled_from([2, 5, 7]),
                                                                                      label="rf"),
               "non_linearity": draw(st.sampled_from(["relu", "tanh", "gelu"]), label="non_linearity"),
               "original_ln_before": False, "original_ln_after": True, "ln_before": False, "ln_after": False,
               "init_weights": draw(st.sampled_from(["mam_adapter", "bert"]), label="init_weights"),
               "is_parallel": True, "scaling": draw(st.sampled_from([4.0, 1.0, "learned"]), label="scaling"),
               "use_gating": draw(st.booleans(), label="use_gating"), "residual_before_ln": False,
               "adapter_residual_before_ln": False, "leave_out": []}
    return {"architecture": "union", "configs": [prefix, adapter]}


@st.composite
def unipelt_configs(draw):
    """UniPELTConfig's to_dict form: gated prefix tuning + gated SeqBn + gated LoRA (every member use_gating)."""
    prefix = dict(draw(prefix_configs(), label="prefix member"), use_gating=True)
    bn = dict(draw(bottleneck_configs(), label="bottleneck member"), use_gating=True, mh_adapter=False,
              output_adapter=True, is_parallel=False)
    lora = dict(draw(lora_configs(), label="lora member"), use_gating=True)
    return {"architecture": "union", "configs": [prefix, bn, lora]}


# ---- zero-effect weights (metamorphic: the adapter then leaves the base model unchanged) -----------------
def _zero(keys_match):
    def f(tensors, cfg):
        return {k: (np.zeros_like(v) if keys_match(k) else v) for k, v in tensors.items()}
    return f


def bn_identity_config(cfg):
    """Flags under which a zero up-projection gives exactly the base sub-layer (Spec: BN-2 closed forms)."""
    out = dict(cfg, ln_after=False, original_ln_after=True)
    if out.get("residual_before_ln") != True:  # noqa: E712  (False or "post_add")
        out.update(residual_before_ln=True)
    return out


def _shared_caveat(cfg):
    if cfg.get("vera_d") is not None or cfg.get("vera_b") is not None:
        return "adapters 1.3.0 does not save VeRA's shared A/B from bare base models (semantics §9.7)"
    if cfg.get("shared_phm_rule") or cfg.get("shared_W_phm"):
        return "adapters 1.3.0 does not save shared PHM parameters from bare base models (semantics §9.7)"
    return None


def ia3_identity(tensors, cfg):
    return {k: (np.full_like(v, 1.0 / cfg["alpha"]) if k.endswith("lora_B") else v) for k, v in tensors.items()}


def _ia3_identity_config(c):
    """No gate; all of q, k, v: GPT-2's fused c_attn pads the thirds IA3 does not adapt with 1 and then scales
    the whole width by alpha (semantics §4.8), so 1/alpha vectors are the identity only when all are adapted."""
    return dict(c, use_gating=False, attn_matrices=["k", "q", "v"])


def _is_up(k):
    leaf = k.split(".adapters.")[-1] if ".adapters." in k else ""
    return ".adapter_up." in "." + leaf or any(s in k for s in (".W_up_left", ".W_up_right")) \
        or ".F.2." in k or ".G.2." in k or ".s1.2." in k or ".s2.2." in k


@dataclass(frozen=True)
class MethodEntry:
    """One adapter method as the suite sees it."""

    name: str                                 # capability "method:<name>"
    configs: Callable                         # () -> strategy of config dicts
    config_classes: tuple                     # adapters config classes these dicts resolve to
    spec: tuple                               # spec IDs the method's checks cover
    blocks: frozenset                         # blocks adapters 1.3.0 supports for it (semantics §6.6)
    zero_weights: Optional[Callable] = None   # (tensors, cfg) -> tensors giving the base model
    identity_config: Callable = staticmethod(lambda cfg: cfg)   # flags under which zero_weights is identity
    composable: Callable = staticmethod(lambda cfg: cfg)        # flags under which trees are well-defined
    mergeable: Optional[Callable] = None      # cfg -> bool
    ejectable: bool = False
    extra_tokens: Callable = staticmethod(lambda cfg: 0)        # tokens the method prepends to the output
    multitask_separable: bool = True          # MultiTask == each row with its adapter alone
    rows_separable: bool = True               # BatchSplit / Parallel == each part with its adapter alone
    location_fields: tuple = ()               # fields every adapter of one tree shares (same locations)
    min_tokens: Callable = staticmethod(lambda cfg: 1)          # shortest unpadded row the config accepts
    file_caveat: Callable = staticmethod(lambda cfg: None)      # why a saved file cannot round-trip, or None
    tree_exclusions: frozenset = frozenset()  # (parent, child) nestings upstream crashes on for this method
    quirks: dict = field(default_factory=dict)  # driver capability "quirk:<x>" -> blocks it cannot run
    notes: dict = field(default_factory=dict)
    archs: frozenset = frozenset(ARCHS)       # base models adapters 1.3.0 supports the method on
    arch_blocks: dict = field(default_factory=dict)   # arch -> the only blocks upstream runs there
    arch_fit: Callable = staticmethod(lambda cfg, arch, tree: cfg)   # make a drawn config valid on arch
    config_blocks: Callable = staticmethod(lambda cfg: None)         # blocks this config allows (None: all)


# blocks run the first adapter's pre_forward and the last one's post_forward for all children (COMP-*)
_BN_SHARED = ("mh_adapter", "output_adapter", "cross_adapter", "original_ln_before", "original_ln_after",
              "residual_before_ln", "is_parallel")
_LORA_LOC = ("selfattn_lora", "intermediate_lora", "output_lora", "attn_matrices")
def _lora_composable(c):
    """Trees over LoRAs: chained Stacks need in == out (q/k/v only); Parallel on BERT needs q, k and v all
    adapted upstream (else the unreplicated projection crashes attention: RuntimeError)."""
    return dict(c, selfattn_lora=True, intermediate_lora=False, output_lora=False, leave_out=[],
                attn_matrices=["k", "q", "v"])


def _lora_fit(c, arch, tree):
    """LLaMA, Mistral, Qwen2 (GQA): k/v project to N_kv·Dh = 12 != 24, so a LoRA Stack (which chains deltas, in == out) can
    only run on q. VeRA shares one A/B shaped by the first adapted linear: q with k or v breaks upstream."""
    if arch not in LLAMA_LIKE or not c.get("selfattn_lora"):
        return c
    if tree and c.get("architecture") in ("lora", "mtl_lora") and c.get("composition_mode") != "scale":
        return dict(c, attn_matrices=["q"])
    if c.get("vera_d") is not None and "q" in c["attn_matrices"] and len(c["attn_matrices"]) > 1:
        return dict(c, attn_matrices=[m for m in c["attn_matrices"] if m != "q"])
    return c


# Families adapters 1.3.0 reaches through its AdapterModelInterface: no prefix / prompt tuning, no Parallel
# (composition.SUPPORTED_MODELS), bottlenecks hooked on the projections (spec/families.md FAM-LL-3).
PLUGIN_ARCHS = frozenset({"qwen2"})
ARCH_REFUSED_BLOCKS = {"qwen2": frozenset({"Parallel"})}
_NO_PLUGIN = frozenset(ARCHS) - PLUGIN_ARCHS


# GPT-2's fused c_attn (LoRAMergedLinear) runs single adapters only: any block touching it raises ValueError
# upstream (semantics §4.8), and LoRA trees always adapt the attention, so no LoRA block is drawn on GPT-2.
_GPT2_SINGLE = {"gpt2": frozenset()}
_NO_GPT2 = frozenset(ARCHS) - {"gpt2"}      # VeRA / DoRA: not on the fused c_attn / Conv1D (semantics §4.4-4.5)


def _member_entry(c):
    return {"bottleneck": "bottleneck", "par_bottleneck": "bottleneck", "lora": "lora",
            "prefix_tuning": "prefix_tuning", "reft": "reft"}[member_kind(c)]


def _union_composable(c):
    """Each member made composable as its own method entry would be (parallel bottlenecks stay parallel)."""
    out = []
    for m in c["configs"]:
        par = m.get("is_parallel")
        entry = REGISTRY["ia3" if m.get("composition_mode") == "scale" else _member_entry(m)]
        m = entry.composable(m)
        out.append(dict(m, is_parallel=True) if par else m)
    return dict(c, configs=out)


def _bn_fit(c, arch, tree):
    """Pre-LN models (the decoders, T5) have no LayerNorm after the sub-layer: residual_before_ln="post_add" cannot apply there
    (upstream UnboundLocalError, ours ValueError: BN-2), so it becomes True. Plugin-interface families (Qwen2)
    refuse original_ln_after=False (adapters' LAYER_HOOK_UNSUPPORTED), so it becomes True there. Encoder-decoders
    also get a cross adapter wherever the draw put an mh_adapter (no extra draw: other architectures' examples are
    unchanged)."""
    if arch in PRE_LN and c.get("residual_before_ln") == "post_add":
        c = dict(c, residual_before_ln=True)
    if arch in PLUGIN_ARCHS and c.get("original_ln_after") is False:
        c = dict(c, original_ln_after=True)
    if arch in ENCODER_DECODERS and "mh_adapter" in c:
        c = dict(c, cross_adapter=bool(c["mh_adapter"]))
    return c


def _member_fit(m, arch, tree):
    kind = member_kind(m)
    return _lora_fit(m, arch, tree) if kind == "lora" else _bn_fit(m, arch, tree) if "bottleneck" in kind else m


def _union_fit(c, arch, tree):
    """Members fit to ``arch``; on a plugin-interface family a prefix-tuning member (refused there) is dropped
    (the union keeps at least one member: the draws have two or more, and at most one prefix tuning)."""
    members = [_member_fit(m, arch, tree) for m in c["configs"]]
    if arch in PLUGIN_ARCHS:
        members = [m for m in members if m.get("architecture") != "prefix_tuning"]
    return dict(c, configs=members)


def _union_blocks(c):
    return frozenset.intersection(*[_MEMBER_BLOCKS[member_kind(m)] for m in c["configs"]])


def _union_min_tokens(c):
    return max([1] + [m["prefix_positions"] + m["suffix_positions"] for m in c["configs"]
                      if m.get("architecture") == "reft"])


def _union_gpt2(c):
    return any(member_kind(m) == "lora" for m in c["configs"])


# adapters 1.3.0 raises RuntimeError (batch2 size mismatch) for LoRA-family blocks nested in Parallel
_LORA_EXCL = frozenset({("Parallel", "Stack"), ("Parallel", "Average"), ("Parallel", "BatchSplit")})
_LORA_QUIRKS = {"quirk:lora-parallel-crash": frozenset({"Parallel"})}
_ALL_BUT_FUSE_SPLIT = frozenset({"Stack", "BatchSplit", "Parallel", "MultiTask", "Average"})

REGISTRY = {e.name: e for e in [
    MethodEntry("bottleneck", bottleneck_configs, ("BnConfig", "SeqBnConfig", "DoubleSeqBnConfig", "ParBnConfig",
                                                   "AdapterPlusConfig"),
                ("BN-1", "BN-2", "BN-3", "BN-4", "BN-5", "GATE-1"), frozenset(BLOCKS),
                zero_weights=_zero(_is_up), identity_config=bn_identity_config,
                composable=lambda c: dict(c, is_parallel=False, leave_out=[]),
                multitask_separable=False, arch_fit=_bn_fit, location_fields=_BN_SHARED,
                notes={"MultiTask": "adapters runs the bottleneck pre_block twice under MultiTask (COMP-MULTITASK)"}),
    MethodEntry("compacter", lambda: bottleneck_configs(phm=True), ("CompacterConfig", "CompacterPlusPlusConfig"),
                ("PHM-1", "PHM-2", "PHM-3"), frozenset(BLOCKS), file_caveat=_shared_caveat, zero_weights=_zero(_is_up), identity_config=bn_identity_config,
                composable=lambda c: dict(c, is_parallel=False, leave_out=[]), multitask_separable=False,
                arch_fit=_bn_fit, location_fields=_BN_SHARED),
    MethodEntry("invertible", lambda: bottleneck_configs(inv=True), ("SeqBnInvConfig", "DoubleSeqBnInvConfig"),
                ("INV-1", "INV-4"), frozenset({"Stack"}), zero_weights=_zero(_is_up), identity_config=bn_identity_config,
                composable=lambda c: dict(c, is_parallel=False, leave_out=[]), multitask_separable=False,
                arch_fit=_bn_fit, location_fields=_BN_SHARED),
    MethodEntry("lora", lora_configs, ("LoRAConfig",), ("LORA-0", "LORA-1", "LORA-2"), _ALL_BUT_FUSE_SPLIT,
                zero_weights=_zero(lambda k: k.endswith("lora_B")),
                composable=_lora_composable,
                mergeable=lambda c: not c.get("use_gating"), location_fields=_LORA_LOC, tree_exclusions=_LORA_EXCL,
                quirks=_LORA_QUIRKS, arch_blocks=_GPT2_SINGLE, arch_fit=_lora_fit),
    MethodEntry("ia3", lambda: lora_configs("ia3"), ("IA3Config",), ("LORA-3",), _ALL_BUT_FUSE_SPLIT,
                zero_weights=ia3_identity, identity_config=_ia3_identity_config,
                composable=lambda c: dict(c, leave_out=[], attn_matrices=["k", "q", "v"]),
                mergeable=lambda c: not c.get("use_gating"),
                location_fields=_LORA_LOC, tree_exclusions=_LORA_EXCL,
                quirks=_LORA_QUIRKS, arch_blocks=_GPT2_SINGLE, arch_fit=_lora_fit),
    MethodEntry("vera", lambda: lora_configs("vera"), ("VeraConfig",), ("LORA-4",), _ALL_BUT_FUSE_SPLIT,
                file_caveat=_shared_caveat,
                zero_weights=_zero(lambda k: k.endswith("vera_B")), composable=lambda c: dict(c, leave_out=[]),
                mergeable=lambda c: True, location_fields=_LORA_LOC, tree_exclusions=_LORA_EXCL,
                quirks=_LORA_QUIRKS, archs=_NO_GPT2, arch_fit=_lora_fit),
    # DoRA rescales with the LAST adapter of the composition for every row (LORA-5), so blocks mix adapters
    MethodEntry("dora", lambda: lora_configs("dora"), ("DoRAConfig",), ("LORA-5",), _ALL_BUT_FUSE_SPLIT,
                rows_separable=False, multitask_separable=False,
                notes={"MultiTask": "DoRA's magnitude comes from the last adapter of the block for all rows"},
                composable=_lora_composable,
                location_fields=_LORA_LOC, tree_exclusions=_LORA_EXCL,
                quirks=_LORA_QUIRKS, archs=_NO_GPT2, arch_fit=_lora_fit),
    MethodEntry("dvora", lambda: lora_configs("dvora"), ("DvoRAConfig",), ("LORA-4", "LORA-5"), _ALL_BUT_FUSE_SPLIT,
                rows_separable=False, multitask_separable=False, file_caveat=_shared_caveat,
                notes={"MultiTask": "DoRA's magnitude comes from the last adapter of the block for all rows"},
                composable=lambda c: dict(c, leave_out=[]), location_fields=_LORA_LOC,
                tree_exclusions=_LORA_EXCL, quirks=_LORA_QUIRKS, archs=_NO_GPT2, arch_fit=_lora_fit),
    # MTL-LoRA: its point is MultiTask with task_ids (each row through its task's adapter)
    MethodEntry("mtl_lora", lambda: lora_configs("mtl"), ("MTLLoRAConfig",), ("LORA-6",), _ALL_BUT_FUSE_SPLIT,
                zero_weights=_zero(lambda k: k.endswith("lora_B")), composable=_lora_composable,
                location_fields=_LORA_LOC, tree_exclusions=_LORA_EXCL, quirks=_LORA_QUIRKS,
                archs=_NO_GPT2 - PLUGIN_ARCHS, arch_fit=_lora_fit,
                notes={"gpt2": "MTL-LoRA on GPT-2's fused c_attn is not supported upstream",
                       "qwen2": "no AdapterModelInterface lists mtl_lora among its adapter_methods"}),
    MethodEntry("prefix_tuning", prefix_configs, ("PrefixTuningConfig",), ("PREFIX-1", "PREFIX-2", "PREFIX-3"),
                frozenset({"Stack", "BatchSplit", "Parallel", "MultiTask"}), ejectable=True,
                composable=lambda c: dict(c, leave_out=[]), archs=_NO_PLUGIN),
    MethodEntry("prompt_tuning", prompt_configs, ("PromptTuningConfig",), ("PROMPT-1", "PROMPT-2"), frozenset({"Stack"}),
                extra_tokens=lambda c: c["prompt_length"], archs=frozenset(ENCODERS) - {"distilbert"},
                notes={"decoders": "adapters 1.3.0 rejects prompt tuning on GPT-2 / LLaMA (add_adapter ValueError)",
                       "distilbert": "adapters 1.3.0's DistilBERT block fails in the forward (FAM-DB-2)",
                       "bart": "adapters 1.3.0's BART sets support_prompt_tuning = False (add_adapter ValueError)",
                       "t5": "adapters 1.3.0's T5 sets support_prompt_tuning = False (add_adapter ValueError)"}),
    MethodEntry("reft", reft_configs, ("ReftConfig", "LoReftConfig", "NoReftConfig", "DiReftConfig"), ("REFT-1", "REFT-3", "REFT-4"),
                frozenset({"Stack"}), min_tokens=lambda c: c["prefix_positions"] + c["suffix_positions"]),
    # unions: every adapter of a tree gets the first one's member list (same locations, same prefix lengths)
    MethodEntry("union", union_configs, ("ConfigUnion",), ("CFG-3",), frozenset(BLOCKS) - {"Fuse", "Split"},
                composable=_union_composable, arch_fit=_union_fit, config_blocks=_union_blocks,
                min_tokens=_union_min_tokens, multitask_separable=False, location_fields=("configs",),
                tree_exclusions=_LORA_EXCL, quirks=_LORA_QUIRKS, arch_blocks=_GPT2_SINGLE),
    MethodEntry("mam", mam_configs, ("MAMConfig",), ("CFG-5", "BN-4", "PREFIX-1"),
                frozenset({"Stack", "BatchSplit", "MultiTask"}), composable=_union_composable, arch_fit=_union_fit,
                multitask_separable=False, location_fields=("configs",), archs=_NO_PLUGIN,
                notes={"Parallel": "a parallel bottleneck under Parallel crashes upstream (deviations row 12)"}),
    MethodEntry("unipelt", unipelt_configs, ("UniPELTConfig",), ("CFG-5", "GATE-1"),
                frozenset({"Stack", "BatchSplit", "Parallel", "MultiTask"}), composable=_union_composable,
                arch_fit=_union_fit, multitask_separable=False, location_fields=("configs",),
                tree_exclusions=_LORA_EXCL, quirks=_LORA_QUIRKS, arch_blocks=_GPT2_SINGLE, archs=_NO_PLUGIN),
]}


def blocks_for(entry, arch="bert", cfg=None) -> set:
    """Blocks adapters 1.3.0 runs for ``entry`` on ``arch`` (and for the drawn ``cfg``, e.g. a union's members)."""
    out = (set(entry.blocks) & set(entry.arch_blocks.get(arch, entry.blocks))) - ARCH_REFUSED_BLOCKS.get(arch, set())
    allowed = entry.config_blocks(cfg) if cfg is not None else None
    return out if allowed is None else out & set(allowed)


def without_gating(cfg):
    """``cfg`` with every gate off (a union's members too)."""
    if cfg.get("architecture") == "union":
        return dict(cfg, configs=[without_gating(m) for m in cfg["configs"]])
    return dict(cfg, use_gating=False) if "use_gating" in cfg else cfg


def configs_for(entry, arch):
    """Strategy of ``entry``'s configs valid on ``arch``."""
    return entry.configs().map(lambda c: entry.arch_fit(c, arch, False))


def runnable_blocks(entry, *drivers, arch="bert", cfg=None) -> set:
    """Blocks of ``entry`` every driver supports, minus those a driver's declared quirks crash on."""
    out = {b for b in blocks_for(entry, arch, cfg) if all(f"block:{b}" in d.capabilities for d in drivers)}
    for d in drivers:
        for quirk, blocks in entry.quirks.items():
            if quirk in d.capabilities:
                out -= blocks
    return out


def why_not_runnable(entry, blk, *drivers, arch="bert") -> Optional[str]:
    """Why ``blk`` is not among runnable_blocks(entry, *drivers, arch=arch): the real cause, or None."""
    if blk not in blocks_for(entry, arch):
        return f"adapters 1.3.0 does not support {blk} for {entry.name} on {arch}"
    for d in drivers:
        if f"block:{blk}" not in d.capabilities:
            return f"driver {d.name!r} lacks block:{blk}"
        for quirk, blocks in entry.quirks.items():
            if quirk in d.capabilities and blk in blocks:
                return f"driver {d.name!r} declares {quirk} (its {blk} crashes for {entry.name})"
    return None


def method_of(cfg) -> Optional[str]:
    """The registry method (capability ``method:<name>``) a config dict belongs to; None for a string or an
    unknown architecture (every implementation must reject those)."""
    if not isinstance(cfg, dict):
        return None
    a = cfg.get("architecture")
    if a in (None, "bottleneck"):
        return "compacter" if cfg.get("phm_layer") else "invertible" if cfg.get("inv_adapter") else "bottleneck"
    if a == "lora":
        if cfg.get("composition_mode") == "scale":
            return "ia3"
        vera = cfg.get("vera_d") is not None or cfg.get("vera_b") is not None
        return ("dvora" if vera else "dora") if cfg.get("use_dora") else "vera" if vera else "lora"
    return a if a in ("mtl_lora", "prefix_tuning", "prompt_tuning", "reft", "union") else None


def method_ids():
    return list(REGISTRY)


# ---- weights ------------------------------------------------------------------------------------------
ALIASES = (("adapter_norm_before.", "adapter_down.0."),)   # adapters registers ln_before twice


def perturb(tensors: dict, seed: int, scale: float = 0.3) -> dict:
    """Seeded weights for every tensor, independent of the driver's random fresh init (so runs repeat exactly):
    tensors that start as all ones (LayerNorm gains, IA3 vectors, learned scalings) become 1 + noise, all others
    noise. Aliased keys get identical values. The ``original`` of an orthogonal parametrization (ReFT) keeps
    a diagonal of magnitude in [1, 2): torch's Householder map multiplies column j by trunc(diag_j), so a noise
    diagonal would make the projection 0 and the adapter a no-op (REFT-2)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in sorted(tensors):
        v = np.asarray(tensors[k], np.float32)
        base = 1.0 if (v.size and np.all(v == 1)) else 0.0
        out[k] = (base + rng.standard_normal(v.shape) * scale).astype(np.float32)
        if k.endswith("parametrizations.weight.original") and v.ndim == 2:
            d = np.diagonal(v)
            sign = np.where(d > 0, 1.0, -1.0)
            mag = 1.0 + np.minimum(np.abs(rng.standard_normal(d.shape)) * scale, 0.9)
            np.fill_diagonal(out[k], (sign * mag).astype(np.float32))
    for alias, target in ALIASES:
        for k in out:
            if alias in k and k.replace(alias, target) in out:
                out[k] = out[k.replace(alias, target)].copy()
    return out


seeds = st.integers(0, 2**31 - 1)


def tree_configs(entry, configs: list, arch="bert") -> list:
    """Make drawn configs fit one tree: composable flags, and the first config's locations for all."""
    configs = [entry.arch_fit(entry.composable(c), arch, True) for c in configs]
    loc = {f: configs[0][f] for f in entry.location_fields if f in configs[0]}
    return [dict(c, **loc) for c in configs]


# ---- batches ------------------------------------------------------------------------------------------
@st.composite
def batch_shapes(draw, min_B=1, max_B=4, min_T=2, max_T=9, min_len=1):
    """(B, T, lengths): every row has at least ``min_len`` real tokens; row 0 is unpadded."""
    B = draw(st.integers(min_B, max_B), label="B")
    T = draw(st.integers(max(min_T, min_len), max(max_T, min_len)), label="T")
    lengths = [T] + [draw(st.integers(max(1, min_len), T), label=f"len[{i}]") for i in range(1, B)]
    return B, T, lengths


# ---- composition trees --------------------------------------------------------------------------------
def leaf(name):
    return {"type": "single", "children": [name]}


def block(kind, children, **kwargs):
    d = {"type": kind, "children": children}
    if kwargs:
        d["kwargs"] = kwargs
    return d


def _partition(draw, total, n, label):
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=n - 1, max_size=n - 1, unique=True), label=label)) \
        if n > 1 else []
    edges = [0] + cuts + [total]
    return [edges[i + 1] - edges[i] for i in range(n)]


@st.composite
def composition_trees(draw, names, blocks, B, T, top=None, exclude=frozenset()):
    """A valid setup (to_dict form) over adapter ``names`` using only ``blocks``, for a (B, T) batch.

    Returns dict(setup, fusions (lists of names), task_ids or None, blocks used, channels). Nesting follows
    ALLOWED_NESTINGS, depth <= 2, Stack below level 0 holds names only (Spec: COMP-1); Split/BatchSplit sizes
    sum to the tokens/rows their block sees; Parallel and MultiTask appear at most once, at level <= 1 under a
    Stack, never together."""
    info = {"fusions": [], "task_ids": None, "blocks": set(), "channels": 1, "exclude": exclude}
    kind = top or draw(st.sampled_from(sorted(blocks)), label="top block")
    info["setup"] = _node(draw, kind, names, blocks, B, T, 0, info)
    return info


def _node(draw, kind, names, blocks, B, T, level, info):
    info["blocks"].add(kind)
    if kind == "Parallel" and level > 0:
        info["nested_parallel"] = True
    if kind == "Parallel":
        info["channels"] = n = draw(st.integers(2, 3), label="Parallel children")
    elif kind == "Split":
        n = draw(st.integers(1, min(3, T)), label="Split children")
    elif kind == "BatchSplit":
        n = draw(st.integers(1, min(3, B)), label="BatchSplit children")
    elif kind == "Fuse":
        n = draw(st.integers(2, min(3, len(names))), label="Fuse children")
    else:
        n = draw(st.integers(1, 3), label=f"{kind} children")
    sizes = None
    if kind == "Split":
        sizes = _partition(draw, T, n, "splits")
    if kind == "BatchSplit":
        sizes = _partition(draw, B, n, "batch_sizes")
    if kind == "Fuse":
        chosen = draw(st.lists(st.sampled_from(names), min_size=n, max_size=n, unique=True), label="fused")
        info["fusions"].append(chosen)
        return block("Fuse", [leaf(c) for c in chosen])
    children, cur_B = [], B
    for i in range(n):
        cB = sizes[i] if kind == "BatchSplit" else cur_B
        cT = sizes[i] if kind == "Split" else T
        options = ["str"]
        if level == 0 or kind != "Stack":
            options += [c for c in ALLOWED_NESTINGS[kind] if c != "str" and c in blocks and _may_nest(c, level, info, kind)
                        and (kind, c) not in info["exclude"]]
            if level >= 1:
                options = [o for o in options if o in ("str", "Stack")]
        choice = draw(st.sampled_from(options), label=f"{kind}[{i}] child") if len(options) > 1 else "str"
        if choice == "str":
            children.append(leaf(draw(st.sampled_from(names), label="name")))
        else:
            children.append(_node(draw, choice, names, blocks, cB, cT, level + 1, info))
            if choice == "Parallel":      # later Stack siblings see the replicated batch
                cur_B = B * info["channels"]
    kwargs = {}
    if kind == "Split":
        kwargs["splits"] = sizes
    elif kind == "BatchSplit":
        kwargs["batch_sizes"] = sizes
    elif kind == "Average":
        w = [draw(st.sampled_from([1.0, 2.0, 0.5, 3.0]), label="weight") for _ in range(n)]
        kwargs["weights"] = w             # raw: the block normalises them unless normalize_weights=False
        kwargs["normalize_weights"] = draw(st.booleans(), label="normalize_weights")
    elif kind == "MultiTask":
        info["task_ids"] = [draw(st.integers(0, n - 1), label="task_id") for _ in range(B)]
    return block(kind, children, **kwargs)


def _may_nest(kind, level, info, parent=None):
    if parent == "MultiTask" and kind == "Fuse":
        return False   # allowed by ALLOWED_NESTINGS, but MultiTask runs as a BatchSplit, which rejects Fuse
    if kind in ("Parallel", "MultiTask"):
        # a Parallel under Stack replicates the batch for every later layer, so no BatchSplit may sit beside it
        return level == 0 and "Parallel" not in info["blocks"] and "MultiTask" not in info["blocks"] \
            and not (kind == "Parallel" and "BatchSplit" in info["blocks"])
    if kind == "BatchSplit":
        return not info.get("nested_parallel")
    return True


def tree_names(setup) -> list:
    """Adapter names in a to_dict setup, in order of appearance (with repeats)."""
    if setup["type"] == "single":
        return [setup["children"][0]]
    return [n for c in setup["children"] for n in tree_names(c)]


def tree_blocks(setup) -> set:
    if setup["type"] == "single":
        return set()
    return {setup["type"]}.union(*[tree_blocks(c) for c in setup["children"]])


def render(setup) -> str:
    """Python spelling of a to_dict setup, for notes and messages."""
    if setup["type"] == "single":
        return repr(setup["children"][0])
    args = [render(c) for c in setup["children"]] + [f"{k}={v!r}" for k, v in setup.get("kwargs", {}).items()]
    return f"{setup['type']}({', '.join(args)})"
