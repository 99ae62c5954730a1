"""Golden vectors written by adapters 1.3.0 (conformance/generate_vectors.py): same model, weights and inputs,
the driver's output must match the stored one within the group's tolerance."""
import hashlib
import os

import numpy as np
import pytest

from conformance import vectors
from conformance.harness import need
from conformance.outcomes import WrongValue, assert_close
from conformance.strategies import tree_blocks
from conformance.tinymodels import write_model

CASES = vectors.cases("adapter_forward.schema.json")
_METHOD_CAPS = {"lora": None, "prefix_tuning": "method:prefix_tuning"}


def _caps(doc, t):
    caps = set()
    for a in t["adapters"]:
        c = a["config"]
        arch = c.get("architecture")
        if arch is None:
            caps.add("method:bottleneck")
        elif arch == "lora":
            vera, dora = c.get("init_weights") == "vera", bool(c.get("use_dora"))
            caps.add("method:ia3" if c.get("composition_mode") == "scale" else
                     "method:dvora" if vera and dora else "method:vera" if vera else
                     "method:dora" if dora else "method:lora")
        else:
            caps.add(f"method:{arch}")
    caps |= {f"block:{b}" for b in tree_blocks(t["setup"])}
    if t["fusions"]:
        caps.add("op:fusion")
    return sorted(caps)


def _param(doc, g, t):
    method = doc["suite"]
    return pytest.param(doc, g, t, id=f"{doc['suite']}-{g['model']['arch']}-{t['tcId']}",
                        marks=[pytest.mark.spec(*t["spec"]), pytest.mark.conformance(method=method, block="vectors")])


@pytest.fixture(scope="session")
def vector_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vector_models")
    cache = {}

    def get(model):
        key = (model["arch"], model["seed"])
        if key not in cache:
            d = write_model(str(root / f"{model['arch']}-{model['seed']}"), model["arch"], seed=model["seed"])
            with open(os.path.join(d, "model.safetensors"), "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            if sha != model["sha256"]:
                raise WrongValue(f"tiny model sha256={sha[:12]}…, but should be {model['sha256'][:12]}… "
                                 "(tinymodels changed since the vectors were generated; regenerate them)")
            cache[key] = d
        return cache[key]
    return get


@pytest.mark.parametrize("doc, group, case", [_param(*c) for c in CASES])
def test_vector(driver, vector_models, doc, group, case):
    need(driver, f"arch:{group['model']['arch']}", *_caps(doc, case))
    arr, tc = doc["_arrays"], case["tcId"]
    m = driver.load_model(vector_models(group["model"]))
    for a in case["adapters"]:
        driver.add_adapter(m, a["name"], a["config"])
        driver.set_adapter_weights(m, a["name"], {k: arr[f"{tc}/w/{a['name']}/{k}"] for k in a["weights"]})
    for fu in case["fusions"]:
        name = driver.add_fusion(m, fu["adapters"], fu["config"])
        driver.set_fusion_weights(m, name, {k: arr[f"{tc}/f/{fu['name']}/{k}"] for k in fu["weights"]})
    driver.set_active(m, case["setup"])
    kw = {k: np.asarray(v) for k, v in case.get("forwardKwargs", {}).items()}
    got = driver.forward(m, arr[f"{tc}/input_ids"], arr[f"{tc}/attention_mask"], **kw)
    assert_close(got, arr[f"{tc}/expected"], rtol=group["rtol"], atol=group["atol"], what="last_hidden_state",
                 context=f"{doc['suite']}.json tcId {tc}: {case['comment']}")
