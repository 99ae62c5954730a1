"""Oracle: parameter counts of `adapter_summary` equal adapters 1.3.0's for every preset. Spec: API-3."""
import importlib.util
import os

import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
from oracle_utils import hf_model, save_model

NEEDS = {"lora": "lora", "ia3": "lora", "vera": "lora", "dora": "lora", "dvora": "lora", "mtl_lora": "lora",
         "prefix_tuning": "prefix_tuning", "prefix_tuning_flat": "prefix_tuning", "prompt_tuning": "prompt_tuning",
         "loreft": "reft", "noreft": "reft", "direft": "reft", "mam": "prefix_tuning", "unipelt": "lora",
         "compacter": "phm", "compacter++": "phm", "seq_bn_inv": "invertible", "double_seq_bn_inv": "invertible",
         "pfeiffer+inv": "invertible", "houlsby+inv": "invertible"}
CONFIGS = sorted(ma.ADAPTER_CONFIG_MAP) + ["lora[r=4, intermediate_lora=True]", "seq_bn[reduction_factor=5]"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("summary"))
    m = hf_model("bert", hidden_size=48, intermediate_size=72)
    save_model(m, os.path.join(d, "m"))
    return m, d


@pytest.mark.parametrize("config", CONFIGS)
def test_param_count(models, config):
    base_id = config.split("[")[0]
    need = NEEDS.get(base_id)
    if need and importlib.util.find_spec(f"minadapters.methods.{need}") is None:
        pytest.skip(f"minadapters.methods.{need} not built yet")
    torch_model, d = models
    name = f"x{CONFIGS.index(config)}"
    try:
        torch_model.add_adapter(name, config=config)
    except (ValueError, AssertionError) as e:   # e.g. PHM sizes not divisible by phm_dim
        ours = ma.AutoModel.from_pretrained(os.path.join(d, "m"))
        with pytest.raises(ValueError):
            ours.add_adapter(name, config=config)
        return
    want = {r["name"]: r["#param"] for r in torch_model.adapter_summary(as_dict=True)}
    ours = ma.AutoModel.from_pretrained(os.path.join(d, "m"))
    ours.add_adapter(name, config=config)
    got = {r["name"]: r["#param"] for r in ours.adapter_summary(as_dict=True)}
    assert got[name] == want[name], f"#param of {config}: {got[name]}, but should be {want[name]}"
    assert got["Full model"] == want["Full model"], (
        f"base #param {got['Full model']}, but should be {want['Full model']}")
