"""Checks of the suite itself: strategies cover every config class and block; the vector loader rejects
malformed or truncated files; expected-failure entries parse."""
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numpy as np

from conformance import report, vectors
from conformance.driver import resolve
from conformance.harness import Built, add_perturbed, batch, single
from conformance.strategies import (ALLOWED_NESTINGS, BLOCKS, NOT_DRAWN, REGISTRY, UPSTREAM_CONFIG_CLASSES,
                                    composition_trees, configs_for, member_kind, tree_blocks)
from conformance.tinymodels import ARCHS, write_model


def test_every_config_class_is_drawn_or_pending():
    drawn = {c for e in REGISTRY.values() for c in e.config_classes}
    missing = [c for c in UPSTREAM_CONFIG_CLASSES if c not in drawn and c not in NOT_DRAWN]
    assert not missing, f"config classes without a strategy entry: {missing}, but should be none"


def test_drawn_configs_resolve_to_their_classes():
    ma = pytest.importorskip("minadapters")
    for e in REGISTRY.values():
        @settings(max_examples=10, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        @given(cfg=e.configs())
        def check(cfg):
            got = type(ma.AdapterConfig.load(cfg)).__name__
            assert got in e.config_classes + ("BnConfig", "LoRAConfig", "ReftConfig", "ConfigUnion"), \
                f"{e.name}: config resolves to {got}, but should be one of {e.config_classes}"
        check()


def test_nothing_pending():
    assert not NOT_DRAWN, f"config classes still pending: {sorted(NOT_DRAWN)}, but should be none"


def test_union_presets_have_their_members():
    """MAM = prefix tuning + parallel bottleneck at the output; UniPELT = gated prefix + SeqBn + LoRA; generic
    unions pass ConfigUnion.validate in minadapters (member pairs compatible, CFG-3)."""
    ma = pytest.importorskip("minadapters")
    want = {"mam": ["prefix_tuning", "par_bottleneck"], "unipelt": ["prefix_tuning", "bottleneck", "lora"]}

    @settings(max_examples=30, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        for name in ("union", "mam", "unipelt"):
            cfg = data.draw(REGISTRY[name].configs(), label=name)
            loaded = ma.AdapterConfig.load(cfg)
            assert type(loaded).__name__ == "ConfigUnion", f"{name}: loads as {type(loaded).__name__}"
            kinds = [member_kind(m) for m in cfg["configs"]]
            if name in want:
                assert kinds == want[name], f"{name}: members {kinds}, but should be {want[name]}"
            if name == "unipelt":
                assert all(m["use_gating"] for m in cfg["configs"]), "UniPELT members must all be gated"
            if name == "mam":
                assert cfg["configs"][1]["is_parallel"] and cfg["configs"][1]["output_adapter"]
    check()


def test_trees_cover_every_block_and_nesting():
    seen_blocks, seen_pairs = set(), set()

    @settings(max_examples=600, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(tree=composition_trees(["a", "b", "c"], set(BLOCKS), 4, 6))
    def run(tree):
        seen_blocks.update(tree_blocks(tree["setup"]))
        _pairs(tree["setup"], seen_pairs)
    run()
    assert seen_blocks == set(BLOCKS), f"blocks drawn={sorted(seen_blocks)}, but should be {sorted(BLOCKS)}"
    allowed = {(p, c) for p, cs in ALLOWED_NESTINGS.items() for c in cs if c != "str"}
    # Parallel/MultiTask are only drawn at level 0 under Stack; Fuse never under MultiTask (runs as BatchSplit)
    # Fuse children are drawn as names only (a fusion layer is keyed by adapter names)
    unreachable = {("MultiTask", "Fuse"), ("Fuse", "Stack")}
    missing = allowed - seen_pairs - unreachable
    assert not missing, f"nestings never drawn: {sorted(missing)}"


def _pairs(node, out):
    for c in node.get("children", []):
        if isinstance(c, dict) and c["type"] != "single":
            out.add((node["type"], c["type"]))
            _pairs(c, out)


def _copy_vectors(tmp_path, suite="bottleneck"):
    src = vectors.VECTOR_DIR
    for ext in (".json", ".npz"):
        shutil.copy(os.path.join(src, suite + ext), tmp_path / (suite + ext))
    return str(tmp_path / (suite + ".json"))


def test_shipped_vectors_load():
    files = vectors.vector_files() + vectors.vector_files("rejection.schema.json")
    assert files, "no vector files shipped, but should be at least one"
    for p in files:
        vectors.load(p)
    total = sum(os.path.getsize(os.path.join(vectors.VECTOR_DIR, n)) for n in os.listdir(vectors.VECTOR_DIR))
    assert total < 5 * 2**20, f"vectors/ size={total} bytes, but should be < 5 MB"


@pytest.mark.parametrize("damage", ["truncated_json", "wrong_count", "dup_tcid", "undefined_flag", "no_spec",
                                    "truncated_npz", "missing_array", "bad_schema", "bad_result"])
def test_loader_rejects_damaged_files(tmp_path, damage):
    p = _copy_vectors(tmp_path)
    npz = p[:-5] + ".npz"
    with open(p) as f:
        doc = json.load(f)
    t0 = doc["testGroups"][0]["tests"][0]
    if damage == "truncated_json":
        text = open(p).read()
        open(p, "w").write(text[: len(text) // 2])
    elif damage == "truncated_npz":
        with open(npz, "r+b") as f:
            f.truncate(os.path.getsize(npz) // 2)
    elif damage == "missing_array":
        import numpy as np
        with np.load(npz) as z:
            arrs = {k: z[k] for k in z.files if not k.endswith(f"{t0['tcId']}/expected")}
        np.savez(npz, **arrs)
    else:
        if damage == "wrong_count":
            doc["numberOfTests"] += 1
        elif damage == "dup_tcid":
            doc["testGroups"][0]["tests"][1]["tcId"] = t0["tcId"]
        elif damage == "undefined_flag":
            t0["flags"] = ["NoSuchFlag"]
        elif damage == "no_spec":
            t0["spec"] = []
        elif damage == "bad_schema":
            doc["schema"] = "other.json"
        elif damage == "bad_result":
            t0["result"] = "maybe"
        json.dump(doc, open(p, "w"))
    with pytest.raises(vectors.VectorFormatError):
        vectors.load(p)


def test_expected_failures_file_parses():
    path = os.path.join(os.path.dirname(vectors.VECTOR_DIR), "expected_failures.txt")
    for drv, pat, reason, n in report.read_expected_failures(path):
        assert reason, f"expected_failures.txt:{n} has no reason"


def test_expected_failures_format_errors(tmp_path):
    p = tmp_path / "xf.txt"
    p.write_text("adapters test_x[*]\n")
    with pytest.raises(ValueError, match="reason"):
        report.read_expected_failures(str(p))


# ---- the draws can fail: every field moves, every drawn adapter moves the output ------------------------------
# Fields a ``ci`` run keeps at one value, with why. Everything else of every config class must take >= 2 values.
FIXED_FIELDS = {
    "architecture": "names the method (one entry per method)",
    "composition_mode": "names the method (add: LoRA family, scale: IA3)",
    "use_dora": "names the method (DoRA / DvoRA entries)",
    "phm_layer": "names the method (Compacter entry)",
    "task_specific_matrix_type": "'linear' is broken upstream (semantics §4.6)",
    "encoder_prefix": "no encoder-decoder base model in the suite (decoder-side prefixes only)",
    "cross_prefix": "no encoder-decoder base model in the suite (no cross-attention)",
    "prompt_init": "'from_string' needs a tokenizer; the tiny models have none (init values are perturbed anyway)",
    "prompt_init_text": "only read with prompt_init='from_string'",
    "init_weights_seed": "initial values are replaced by perturbed weights in every check",
    "dtype": "the driver chooses its precision (float32; the reference float64)",
    "output_reft": "no upstream config sets it False",
    "cross_adapter": "no encoder-decoder base model in the suite (no cross-attention)",
    "stochastic_depth": "> 0 needs torchvision upstream (absent from the oracle environment); eval identity anyway",
    "learn_phm": "training only (whether PHM rules get gradients)",
    "phm_init_range": "initial values only; every check perturbs them",
    "hypercomplex_nonlinearity": "initial value distribution only; every check perturbs them",
    "subtract_projection": "class constant of the ReFT family (LoReFT True, NoReFT False): drawn through the class",
}
# per-method: fields an entry fixes on purpose (its config class or its composition needs)
FIXED_BY_METHOD = {
    "compacter": {"init_weights": "PHM layers initialise as 'bert' only upstream"},
    "ia3": {"r": "IA3 is r = 1 by definition", "dropout": "IA3 (composition_mode='scale') requires dropout 0", "init_weights": "IA3 vectors start at ones ('ia3'); perturbed anyway"},
    "vera": {"selfattn_lora": "VeRA shares one A/B shape: attention only", "intermediate_lora": "as selfattn_lora",
             "output_lora": "as selfattn_lora", "use_gating": "no gated VeRA upstream", "init_weights": "'vera'"},
    "dvora": {"selfattn_lora": "VeRA shares one A/B shape: attention only", "intermediate_lora": "as selfattn_lora",
              "output_lora": "as selfattn_lora", "use_gating": "no gated DvoRA upstream", "init_weights": "'vera'"},
    "dora": {"use_gating": "no gated DoRA upstream"},
    "invertible": {"inv_adapter": "GLOW crashes in adapters 1.3.0 on the tiny models (RuntimeError: size 20 vs 10 "
                                  "at dim 2), so only NICE is compared; an open gap"},
    "mam": {"*": "MAMConfig is a preset: its parallel bottleneck's flags are the preset's"},
    "unipelt": {"*": "UniPELTConfig is a preset: gates on, SeqBn at the output"},
    "union": {"is_parallel": "keys the member kind (bottleneck / par_bottleneck): both kinds are drawn"},
}


# fields that are inactive unless their switch is on: checked only where the switch is on
PHM = ("phm_dim", "phm_rank", "phm_bias", "phm_c_init", "factorized_phm_W", "factorized_phm_rule", "shared_W_phm",
       "shared_phm_rule", "learn_phm", "phm_init_range", "hypercomplex_nonlinearity")
INACTIVE = {"bottleneck": PHM + ("inv_adapter", "inv_adapter_reduction_factor"),
            "compacter": ("inv_adapter", "inv_adapter_reduction_factor"), "invertible": PHM,
            "lora": ("vera_b", "vera_d"), "ia3": ("vera_b", "vera_d"), "dora": ("vera_b", "vera_d"),
            "mtl_lora": ("vera_b", "vera_d")}


def _flat(cfg, pre=""):
    out = {}
    for k, v in cfg.items():
        if k == "configs" and isinstance(v, list):
            for m in v:
                kind = m.get("architecture") or ("par_bottleneck" if m.get("is_parallel") else "bottleneck")
                out.update(_flat(m, f"{pre}{kind}."))
        else:
            out[pre + k] = repr(v)
    return out


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_config_field_varies(name):
    """Every field of the resolved config (defaults included) takes >= 2 values over 40 draws, or is listed in
    FIXED_FIELDS / FIXED_BY_METHOD with why (README: every config field is drawn)."""
    ma = pytest.importorskip("minadapters")
    entry, seen = REGISTRY[name], {}

    @settings(max_examples=40, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(cfg=configs_for(entry, "bert"))
    def run(cfg):
        full = ma.AdapterConfig.load(cfg).to_dict()
        for k, v in _flat(full).items():
            seen.setdefault(k, set()).add(v)
    run()
    fixed = dict(FIXED_BY_METHOD.get(name, {}), **{f: "inactive for this method" for f in INACTIVE.get(name, ())})
    if name == "union":     # members come from their own entries' strategies, whose fields are checked there
        seen = {k: v for k, v in seen.items() if "." not in k}
    stuck = sorted(k for k, v in seen.items() if len(v) < 2 and k.split(".")[-1] not in FIXED_FIELDS
                   and k.split(".")[-1] not in fixed and "*" not in fixed)
    assert not stuck, f"{name}: fields that never vary: {stuck}, but should take >= 2 values (or be listed with why)"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_drawn_adapter_moves_the_output(name, arch, model_dirs_meta):
    """The perturbed weights of every drawn config change the output (so no property passes vacuously)."""
    entry = REGISTRY[name]
    if arch not in entry.archs:
        pytest.skip(f"adapters 1.3.0 does not support {name} on {arch}")
    ref = resolve("reference")
    inert = []

    @settings(max_examples=6, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(cfg=configs_for(entry, arch), seed=st.integers(0, 2**31 - 1))
    def run(cfg, seed):
        m = Built(ref, model_dirs_meta[arch])
        ids, mask = batch(arch, seed, (2, 6, [6, 4]))
        base = m.run(None, ids, mask)
        add_perturbed(m, [], [("a", cfg)], seed)
        out = m.run(single("a"), ids, mask)
        n = min(base.shape[1], out.shape[1])
        if out.shape == base.shape and np.abs(out[:, :n] - base[:, :n]).max() < 1e-6:
            inert.append(cfg)
    run()
    assert not inert, f"{name} on {arch}: {len(inert)} drawn adapter(s) leave the output unchanged, e.g. {inert[0]}"


@pytest.fixture(scope="module")
def model_dirs_meta(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta_models")
    return {a: write_model(str(root / a), a, seed=11) for a in ARCHS}
