"""Oracle: every composition block (and nested setups ALLOWED_NESTINGS permits) over bottleneck adapters and
AdapterFusion match adapters 1.3.0, on bert and roberta, batch 3 with padding.

Spec: COMP-STACK, COMP-FUSE, COMP-SPLIT, COMP-BATCHSPLIT, COMP-PARALLEL, COMP-AVERAGE, COMP-MULTITASK, FUSION-1.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import adapters.composition as ac  # noqa: E402
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward  # noqa: E402

ADAPTERS = {"a": "seq_bn", "b": "seq_bn[reduction_factor=4, non_linearity='gelu']",
            "c": "seq_bn[use_gating=True, ln_after=True]", "d": "double_seq_bn[reduction_factor=8]"}
FUSIONS = {"a,b": "dynamic", "b,c": "static", "a,b,c": {"key": True, "query": True, "value": True,
           "query_before_ln": True, "regularization": False, "residual_before": True, "temperature": False,
           "value_before_softmax": False, "value_initialized": False, "dropout_prob": None},
           "a,c": {"key": False, "query": True, "value": False, "query_before_ln": False, "regularization": False,
                   "residual_before": False, "temperature": True, "value_before_softmax": True,
                   "value_initialized": False, "dropout_prob": None}}

S, F, Sp, B, P, A, M = (("Stack",), ("Fuse",), ("Split",), ("BatchSplit",), ("Parallel",), ("Average",), ("MultiTask",))
# (ours, theirs) built from one description: (block name, children..., kwargs)
SETUPS = {
    "stack2": ("Stack", "a", "b"),
    "stack3_double": ("Stack", "d", "a", "c"),
    "fuse_dynamic": ("Fuse", "a", "b"),
    "fuse_static": ("Fuse", "b", "c"),
    "fuse3_custom": ("Fuse", "a", "b", "c"),
    "fuse_temperature": ("Fuse", "a", "c"),
    "stack_fuse": ("Stack", "c", ("Fuse", "a", "b")),
    "fuse_of_stack": ("Fuse", "a", ("Stack", "c", "b")),
    "split": ("Split", "a", "b", {"splits": [4, 5]}),
    "split_int": ("Split", "a", "c", "b", {"splits": 3}),
    "stack_split": ("Stack", "c", ("Split", "a", "b", {"splits": [2, 7]})),
    "split_of_stack": ("Split", ("Stack", "a", "b"), "c", {"splits": [5, 4]}),
    "split_of_batchsplit": ("Split", "a", ("BatchSplit", "b", "c", {"batch_sizes": [1, 2]}), {"splits": [3, 6]}),
    "batchsplit": ("BatchSplit", "a", "b", "c", {"batch_sizes": 1}),
    "batchsplit_stack": ("BatchSplit", ("Stack", "a", "b"), "c", {"batch_sizes": [2, 1]}),
    "stack_batchsplit": ("Stack", "c", ("BatchSplit", "b", "a", {"batch_sizes": [1, 2]})),
    "batchsplit_average": ("BatchSplit", "a", ("Average", "b", "c"), {"batch_sizes": [1, 2]}),
    "parallel": ("Parallel", "a", "b"),
    "parallel3": ("Parallel", "a", "b", "c"),
    "parallel_stack": ("Parallel", ("Stack", "a", "b"), "c"),
    "stack_parallel": ("Stack", "c", ("Parallel", "b", "a")),
    "parallel_batchsplit": ("Parallel", ("BatchSplit", "a", "b", {"batch_sizes": [2, 1]}), "c"),
    "average": ("Average", "a", "b"),
    "average_weights": ("Average", "a", "b", "c", {"weights": [1, 2, 3]}),
    "average_unnormalized": ("Average", "a", "b", {"weights": [0.5, 2.0], "normalize_weights": False}),
    "average_stack": ("Average", ("Stack", "a", "b"), "c"),
    "stack_average": ("Stack", "c", ("Average", "b", "a", {"weights": [0.3, 0.7]})),
    "multitask": ("MultiTask", "a", "b"),
    "multitask_stack": ("MultiTask", ("Stack", "a", "b"), "c"),
    "stack_multitask": ("Stack", "c", ("MultiTask", "a", "b")),
}
TASK_IDS = [1, 0, 1]


def build(desc, lib):
    if isinstance(desc, str):
        return desc
    name, *rest = desc
    kwargs = rest.pop() if rest and isinstance(rest[-1], dict) else {}
    return getattr(lib, name)(*[build(c, lib) for c in rest], **kwargs)


class Env:
    def __init__(self, model_type, tmp):
        self.torch_model = m = hf_model(model_type, seed=3)
        save_model(m, os.path.join(tmp, "model"))
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.ids, self.mask = batch(model_type=model_type, B=3, T=9)
        for i, (name, cfg) in enumerate(ADAPTERS.items()):
            m.add_adapter(name, config=cfg)
            perturb_adapter(m, name, seed=10 + i)
            m.save_adapter(os.path.join(tmp, name), name)
            self.ours.load_adapter(os.path.join(tmp, name))
        for fname, fcfg in FUSIONS.items():
            m.add_adapter_fusion(fname.split(","), config=fcfg)
            perturb_adapter(m, fname, seed=5)
            m.save_adapter_fusion(os.path.join(tmp, "fusion_" + fname), fname.split(","))
            self.ours.load_adapter_fusion(os.path.join(tmp, "fusion_" + fname))
        m.eval()


@pytest.fixture(scope="module", params=["bert", "roberta"])
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp("comp" + request.param)))


def _fresh_temperature(m):
    for mod in m.modules():
        if type(mod).__name__ == "BertFusion":
            mod.T = 50.0 if mod.config["temperature"] else 1.0


@pytest.mark.parametrize("key", list(SETUPS))
def test_block(env, key):
    desc = SETUPS[key]
    m = env.torch_model
    _fresh_temperature(m)   # upstream decays the temperature on every call (spec FUSION-2)
    kw = {"task_ids": __import__("torch").tensor(TASK_IDS)} if "multitask" in key else {}
    m.set_active_adapters(build(desc, ac))
    expected = torch_forward(m, env.ids, env.mask, **kw).last_hidden_state.numpy()
    env.ours.active_adapters = build(desc, ma)
    got = env.ours(input_ids=env.ids, attention_mask=env.mask,
                   task_ids=TASK_IDS if "multitask" in key else None).last_hidden_state
    assert_close(got, expected, what=f"{key}: {build(desc, ma)!r}")


def test_adapter_setup_context(env):
    m = env.torch_model
    setup = ("Parallel", ("Stack", "a", "b"), "c")
    import adapters
    with adapters.AdapterSetup(build(setup, ac)):
        expected = torch_forward(m, env.ids, env.mask).last_hidden_state.numpy()
    env.ours.active_adapters = "d"
    with ma.AdapterSetup(build(setup, ma)):
        got = env.ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
    assert_close(got, expected, what="AdapterSetup(Parallel(Stack(a,b),c))")


def test_gating_scores(env):
    m = env.torch_model
    m.set_active_adapters(ac.Stack("a", "c"))
    want = torch_forward(m, env.ids, env.mask, output_adapter_gating_scores=True).adapter_gating_scores
    env.ours.active_adapters = ma.Stack("a", "c")
    got = env.ours(input_ids=env.ids, attention_mask=env.mask, output_adapter_gating_scores=True).adapter_gating_scores
    # Upstream deviation (spec GATE-2): for an ungated bottleneck adapter upstream stores its up-projection
    # (B, T, D) as a "gating score". We store gates only.
    assert want["a"][0]["output_adapter"].shape == env.ids.shape + (40,)
    assert set(got) == {"c"}, f"adapters with gates: {set(got)}, but should be {{'c'}}"
    for name in ["c"]:
        assert set(got[name]) == set(want[name])
        for layer in want[name]:
            assert set(got[name][layer]) == set(want[name][layer])
            for loc, arr in want[name][layer].items():
                assert_close(got[name][layer][loc], arr, rtol=1e-5, what=f"gate {name}/{layer}/{loc}")


def test_fusion_attentions(env):
    m = env.torch_model
    _fresh_temperature(m)
    m.set_active_adapters(ac.Fuse("a", "b"))
    want = torch_forward(m, env.ids, env.mask, output_adapter_fusion_attentions=True).adapter_fusion_attentions
    env.ours.active_adapters = ma.Fuse("a", "b")
    got = env.ours(input_ids=env.ids, attention_mask=env.mask,
                   output_adapter_fusion_attentions=True).adapter_fusion_attentions
    for layer, locs in want["a,b"].items():
        for loc, arr in locs.items():
            assert_close(got["a,b"][layer][loc], arr, rtol=1e-4, what=f"fusion attentions {layer}/{loc}")


def test_fusion_ours_to_adapters(env, tmp_path):
    """A fusion we save loads in adapters 1.3.0 and gives the same output. Spec: IO-12."""
    ours = env.ours
    refs = ours.fusion_param_refs("a,b")
    rng = np.random.default_rng(0)
    for k, (d, leaf) in refs.items():
        d[leaf] = d[leaf] + rng.normal(0, 0.05, d[leaf].shape).astype(np.float32)
    ours.active_adapters = ma.Fuse("a", "b")
    got = ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
    ours.save_adapter_fusion(tmp_path / "f", ["a", "b"])
    m = env.torch_model
    m.delete_adapter_fusion("a,b")
    m.load_adapter_fusion(str(tmp_path / "f"))
    _fresh_temperature(m)
    m.set_active_adapters(ac.Fuse("a", "b"))
    expected = torch_forward(m, env.ids, env.mask).last_hidden_state.numpy()
    assert_close(got, expected, what="fusion saved by minadapters, run by adapters")
