"""share_parameters / unshare_parameters for MTL-LoRA (no torch). Spec: API-6."""
import numpy as np
import pytest

import minadapters as ma

IDS = np.array([[2, 5, 7, 9, 11, 3], [2, 6, 8, 3, 0, 0], [2, 9, 9, 4, 3, 0]])
MASK = (IDS != 0).astype(np.int64)
CFG = "mtl_lora[n_up_projection=2, init_weights='bert', intermediate_lora=True]"


def lora_layers(model, name):
    return [l for l in model.layers_of("lora") if name in l.modules]


def setup(model, names=("t1", "t2"), config=CFG):
    for n in names:
        model.add_adapter(n, config)
    return names


@pytest.mark.spec("API-6")
@pytest.mark.parametrize("ref", [None, "t2"])
def test_share_copies_reference_and_ties(model, ref):
    setup(model)
    before = {l.path: {leaf: l.modules[ref or "t1"].params[leaf].copy() for leaf in ("lora_A", "lora_B")}
              for l in lora_layers(model, "t1")}
    own = {l.path: l.modules["t1"].params["weights"].copy() for l in lora_layers(model, "t1")}
    model.share_parameters(["t1", "t2"], reference_adapter_name=ref)
    layers = lora_layers(model, "t1")
    assert len(layers) == 2 * 2 + 2      # q, v in 2 layers + intermediate
    sd = model.shared_parameters_state_dict("t1,t2")
    for l in layers:
        for leaf in ("lora_A", "lora_B"):
            a, b = l.modules["t1"].params[leaf], l.modules["t2"].params[leaf]
            assert a is b
            np.testing.assert_array_equal(a, before[l.path][leaf])
            assert sd[f"{l.path}.shared_parameters.t1,t2.{leaf}"] is a
        np.testing.assert_array_equal(l.modules["t1"].params["weights"], own[l.path])   # task-specific: not shared
    assert "encoder.layer.0.attention.self.query.shared_parameters.t1,t2.lora_A" in sd
    assert len(sd) == 2 * len(layers)


@pytest.mark.spec("API-6")
def test_multitask_rows_equal_single_task_after_sharing(model):
    setup(model)
    model.share_parameters(ma.MultiTask("t1", "t2"))
    model.active_adapters = ma.MultiTask("t1", "t2")
    out = model(IDS, MASK, task_ids=[1, 0, 1]).last_hidden_state
    for task, rows in (("t1", [1]), ("t2", [0, 2])):
        model.active_adapters = task
        single = model(IDS[rows], MASK[rows]).last_hidden_state
        np.testing.assert_allclose(out[rows], single, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("API-6")
def test_unshare_keeps_values_and_unties(model):
    setup(model)
    model.share_parameters("t1,t2", name="grp")
    model.unshare_parameters(["t1", "t2"], name="grp")
    assert model.parameter_shares == {}
    for l in lora_layers(model, "t1"):
        a, b = l.modules["t1"].params["lora_A"], l.modules["t2"].params["lora_A"]
        assert a is not b
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match="grp"):
        model.shared_parameters_state_dict("grp")
    model.unshare_parameters(["t1", "t2"], name="grp")     # unknown group: no-op, as upstream


@pytest.mark.spec("API-6")
def test_saved_file_holds_shared_values(model, tmp_path, tiny_dir):
    setup(model)
    model.share_parameters(["t1", "t2"])
    model.save_adapter(str(tmp_path / "t2"), "t2")
    fresh = ma.AutoModel.from_pretrained(tiny_dir, seed=1)
    fresh.load_adapter(str(tmp_path / "t2"))
    for k, v in fresh.adapter_state_dict("t2").items():
        np.testing.assert_array_equal(v, model.adapter_state_dict("t2")[k])
        if k.endswith("lora_A"):
            np.testing.assert_array_equal(v, model.adapter_state_dict("t1")[k.replace(".t2.", ".t1.")])


@pytest.mark.spec("API-6")
@pytest.mark.parametrize("configs, kw, exc, msg", [
    (("lora", "lora"), {}, TypeError, "MultiTaskConfig"),
    ((CFG, CFG), {"reference_adapter_name": "t3"}, ValueError, "Reference adapter 't3'"),
    ((CFG, CFG.replace("n_up_projection=2", "n_up_projection=3")), {}, ValueError, "shapes"),
    ((CFG, "mtl_lora[r=4, init_weights='bert', intermediate_lora=True, n_up_projection=2]"), {}, ValueError,
     "shapes"),
])
def test_share_errors_change_nothing(model, configs, kw, exc, msg):
    model.add_adapter("t1", configs[0])
    model.add_adapter("t2", configs[1])
    before = {n: {k: v for k, v in model.adapter_state_dict(n).items()} for n in ("t1", "t2")}
    with pytest.raises(exc, match=msg):
        model.share_parameters(["t1", "t2"], **kw)
    assert getattr(model, "parameter_shares", {}) == {}
    for n in ("t1", "t2"):
        for k, v in model.adapter_state_dict(n).items():
            assert v is before[n][k]


@pytest.mark.spec("API-6")
def test_share_unknown_and_empty(model):
    setup(model)
    with pytest.raises(KeyError, match="zzz"):
        model.share_parameters(["t1", "zzz"])
    with pytest.raises(ValueError, match="at least one"):
        model.share_parameters([])
    with pytest.raises(TypeError, match="not an adapter name"):
        model.share_parameters(["t1", ma.Stack("t2")])
