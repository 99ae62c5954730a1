"""Checks of the suite itself: strategies cover every config class and block; the vector loader rejects
malformed or truncated files; expected-failure entries parse."""
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import report, vectors
from conformance.strategies import (ALLOWED_NESTINGS, BLOCKS, NOT_DRAWN, REGISTRY, UPSTREAM_CONFIG_CLASSES,
                                    composition_trees, member_kind, tree_blocks)


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

    @settings(max_examples=300, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
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
