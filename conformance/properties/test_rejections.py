"""Rejection cases from vectors/rejections.json: invalid configs, strings, compositions and files must raise
one of the listed builtin error kinds (NOT_REJECTED if accepted, WRONG_ERROR if another error).

Each case needs what it exercises: the method of its config(s) (``method:<name>``), config strings
(``config:strings``), the blocks of its setup, and for files either ``io:roundtrip`` (a missing or empty
directory: any loader must refuse it) or ``io:adapters-format`` (damaged adapters-format directories)."""
import json
import os

import numpy as np
import pytest

from conformance import vectors
from conformance.driver import check_supported
from conformance.harness import need
from conformance.strategies import method_of, tree_blocks
from conformance.outcomes import error_kinds, expect_rejection
from conformance.tinymodels import padded_batch

CASES = vectors.cases("rejection.schema.json")


def _param(doc, g, t):
    return pytest.param(g, t, id=f"{g['kind']}-{t['tcId']}-{t['comment'].replace(' ', '_')[:40]}",
                        marks=[pytest.mark.spec(*t["spec"]), pytest.mark.conformance(method="rejection",
                                                                                   block=g["kind"])])


def _need_config(driver, cfg):
    if isinstance(cfg, str):
        need(driver, "config:strings")
    elif method_of(cfg) is not None:
        need(driver, f"method:{method_of(cfg)}")


@pytest.mark.parametrize("group, case", [_param(*c) for c in CASES])
def test_rejection(driver, model_dirs, group, case, tmp_path):
    need(driver, "arch:bert")
    if group["kind"] == "config":
        _need_config(driver, case["config"])
    elif group["kind"] == "setup":
        for a in group["adapters"]:
            _need_config(driver, a["config"])
        need(driver, *[f"block:{b}" for b in sorted(tree_blocks(case["setup"]))])
    else:
        _need_config(driver, group["adapter"]["config"])
        need(driver, "io:roundtrip" if case["file"] in ("missing", "empty") else "io:adapters-format")
    model = driver.load_model(model_dirs["bert"])
    kinds = error_kinds(case["errors"])
    what = f"tcId {case['tcId']} ({case['comment']})"
    if group["kind"] == "config":
        act = lambda: driver.add_adapter(model, "x", case["config"])  # noqa: E731
    elif group["kind"] == "setup":
        for a in group["adapters"]:
            check_supported(driver, a["config"])
            driver.add_adapter(model, a["name"], a["config"])
        ids, mask = padded_batch("bert", np.random.default_rng(0), *group["batch"])

        def act():
            driver.set_active(model, case["setup"])
            driver.forward(model, ids, mask)
    else:
        d = _make_file_case(driver, group, case["file"], str(tmp_path))
        act = lambda: driver.load_adapter(driver.load_model(model_dirs["bert"]), d)  # noqa: E731
    if case["result"] == "acceptable":
        try:
            act()
        except kinds:
            pass
        return
    expect_rejection(act, kinds, what=what)


def _make_file_case(driver, group, kind, tmp):
    if kind == "missing":
        return os.path.join(tmp, "does-not-exist")
    if kind == "empty":
        os.makedirs(os.path.join(tmp, "empty"))
        return os.path.join(tmp, "empty")
    a = group["adapter"]
    cfg = dict(a["config"], reduction_factor=2) if kind == "shape_mismatch" else a["config"]
    return _saved(driver, group, cfg, kind, tmp)


def _saved(driver, group, cfg, kind, tmp):
    from conformance.tinymodels import write_model
    model_dir = write_model(os.path.join(tmp, "model"), "bert", seed=3)
    m = driver.load_model(model_dir)
    driver.add_adapter(m, "a", cfg)
    d = os.path.join(tmp, "a")
    driver.save_adapter(m, "a", d)
    if kind == "truncated_weights":
        w = [f for f in os.listdir(d) if f != "adapter_config.json"][0]
        with open(os.path.join(d, w), "r+b") as f:
            f.truncate(os.path.getsize(os.path.join(d, w)) // 2)
    elif kind == "truncated_config":
        p = os.path.join(d, "adapter_config.json")
        with open(p) as f:
            text = f.read()
        with open(p, "w") as f:
            f.write(text[: len(text) // 2])
    elif kind == "shape_mismatch":
        p = os.path.join(d, "adapter_config.json")
        with open(p) as f:
            cj = json.load(f)
        cj["config"]["reduction_factor"] = group["adapter"]["config"]["reduction_factor"]
        with open(p, "w") as f:
            json.dump(cj, f)
    return d
