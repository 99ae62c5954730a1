"""Oracle: average_adapter (every method, all three combine strategies), share_parameters with MultiTask, and
adapter setup directories match adapters 1.3.0.

Spec: API-5, API-6, API-7. Model: hidden 40, 3 layers, FFN 72, perturbed base weights; every source adapter
perturbed. Sources are added and perturbed upstream, saved, loaded into ours; both sides then average (or share)
on their own and the averaged adapter's forward is compared.
"""
import json
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("adapters", reason="oracle tests need adapters 1.3.0 + torch")

import minadapters as ma  # noqa: E402
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward  # noqa: E402

import adapters  # noqa: E402
import torch  # noqa: E402

COUNT = {}


class Env:
    """One upstream bert + our model loaded from its saved base weights."""

    def __init__(self, tmp, model_type="bert"):
        self.tmp = tmp
        self.model_type = model_type
        self.torch_model = hf_model(model_type)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.ids, self.mask = batch(model_type=model_type)
        self.n = 0

    def add(self, config, prefix="s"):
        """Add + perturb upstream, save, load into ours; model-level shared parameters copied (bare models don't
        save them)."""
        self.n += 1
        name = f"{prefix}{self.n}"
        m = self.torch_model
        m.add_adapter(name, config=config)
        perturb_adapter(m, name, seed=self.n)
        d = os.path.join(self.tmp, name)
        m.save_adapter(d, name)
        shared = m.base_model.shared_parameters
        if name in shared:
            with pytest.warns(UserWarning, match="shared parameters"):
                self.ours.load_adapter(d)
            ours_shared = self.ours.model_level["shared"].get(name)
            for leaf, p in shared[name].items():
                ours_shared[leaf] = p.detach().numpy().copy()
        else:
            self.ours.load_adapter(d)
        return name

    def compare(self, setup_theirs, setup_ours, what, rtol=1e-4, **kw):
        self.torch_model.set_active_adapters(setup_theirs)
        self.torch_model.eval()     # upstream creates some new modules (ReFT, LoRA) in training mode
        tkw = dict(kw)
        if "task_ids" in tkw:
            tkw["task_ids"] = torch.tensor(tkw["task_ids"])
        expected = torch_forward(self.torch_model, self.ids, self.mask, **tkw).last_hidden_state.numpy()
        self.ours.active_adapters = setup_ours
        got = self.ours(input_ids=self.ids, attention_mask=self.mask, **kw).last_hidden_state
        assert_close(got, expected, rtol=rtol, what=what)
        return got, expected


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(str(tmp_path_factory.mktemp("avg")))


# config, combine_strategy, weights, normalize_weights, svd_rank
LINEAR_CASES = {
    "seq_bn-default-weights": ("seq_bn", None, True),
    "seq_bn-weights-normalized": ("seq_bn[reduction_factor=8, non_linearity='gelu']", [0.3, 0.9], True),
    "double_seq_bn-negative-unnormalized": ("double_seq_bn", [1.5, -0.5], False),
    "par_bn-scaling-learned": ("par_bn[scaling='learned']", [2.0, 1.0], True),
    "seq_bn-gating": ("seq_bn[use_gating=True]", [0.2, 0.8], False),
    "compacter-shared-rule": ("compacter[reduction_factor=5]", [0.6, 0.4], True),
    "seq_bn_inv": ("seq_bn_inv", [0.25, 0.75], True),
    "lora": ("lora[r=4, alpha=8, intermediate_lora=True]", [0.3, 0.7], True),
    "lora-unnormalized": ("lora[r=4, alpha=8]", [1.2, -0.4], False),
    "lora-gating": ("lora[use_gating=True]", [0.5, 1.5], True),
    "ia3": ("ia3[output_lora=True]", [0.4, 0.8], True),
    "ia3-unnormalized": ("ia3", [0.7, 0.6], False),
    "dora": ("dora[alpha=16, r=4]", [0.3, 0.7], True),
    "vera": ("vera[r=4]", [0.3, 0.7], True),
    "mtl_lora": ("mtl_lora[n_up_projection=2]", [0.5, 0.5], True),
    "prefix_tuning": ("prefix_tuning[prefix_length=5, bottleneck_size=16]", [0.3, 0.7], True),
    "prefix_tuning-unnormalized": ("prefix_tuning[prefix_length=4, bottleneck_size=12]", [0.9, 0.3], False),
    "prefix_tuning-flat-gating": ("prefix_tuning[flat=True, prefix_length=3, use_gating=True]", [0.5, 0.25], True),
    "prompt_tuning": ("prompt_tuning[prompt_length=4]", [0.4, 0.6], True),
    "loreft": ("loreft[r=2]", [0.3, 0.7], True),
    "mam-union": ("mam", [0.5, 1.0], True),
    "unipelt-union": ("unipelt", None, True),
}


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear_average(env, case):
    config, weights, normalize = LINEAR_CASES[case]
    a, b = env.add(config), env.add(config)
    new = f"avg_{a}_{b}"
    env.torch_model.average_adapter(new, [a, b], weights=weights, normalize_weights=normalize)
    env.ours.average_adapter(new, [a, b], weights=weights, normalize_weights=normalize)
    env.compare(new, new, f"linear {case}")
    COUNT["linear"] = COUNT.get("linear", 0) + 1


@pytest.mark.spec("API-5")
def test_linear_three_sources_and_state(env):
    """Three LoRA sources: our averaged tensors equal upstream's tensor for tensor (no SVD sign ambiguity here)."""
    names = [env.add("lora[r=3, attn_matrices=['q','k','v']]") for _ in range(3)]
    env.torch_model.average_adapter("avg3", names, weights=[1.0, 2.0, -0.5])
    env.ours.average_adapter("avg3", names, weights=[1.0, 2.0, -0.5])
    theirs = {k: v.detach().numpy() for k, v in env.torch_model.state_dict().items() if ".loras.avg3." in k}
    ours = env.ours.adapter_state_dict("avg3")
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        assert_close(ours[k], theirs[k], rtol=1e-6, what=k)
    env.compare("avg3", "avg3", "linear three sources")


LORA_STRATEGY_CASES = {
    "negate_b-lora-normalized": ("lora[r=4, alpha=8]", "lora_linear_only_negate_b", [2.0, -1.0], True, None),
    "negate_b-lora-unnormalized": ("lora[r=4, intermediate_lora=True]", "lora_linear_only_negate_b", [0.7, -0.6],
                                   False, None),
    "negate_b-ia3": ("ia3", "lora_linear_only_negate_b", [1.5, -0.5], False, None),
    "svd-rank3": ("lora[r=4, alpha=8]", "lora_delta_w_svd", [0.3, 0.7], True, 3),
    "svd-rank6-unnormalized-negative": ("lora[r=4, alpha=8, output_lora=True]", "lora_delta_w_svd", [1.0, -1.0],
                                        False, 6),
    "svd-same-rank": ("lora[r=2, alpha=3, attn_matrices=['k']]", "lora_delta_w_svd", None, True, 2),
}


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("case", list(LORA_STRATEGY_CASES), ids=list(LORA_STRATEGY_CASES))
def test_lora_strategies(env, case):
    config, strategy, weights, normalize, rank = LORA_STRATEGY_CASES[case]
    a, b = env.add(config), env.add(config)
    new = f"{strategy}_{a}_{b}"
    kw = dict(weights=weights, normalize_weights=normalize, combine_strategy=strategy, svd_rank=rank)
    env.torch_model.average_adapter(new, [a, b], **kw)
    env.ours.average_adapter(new, [a, b], **kw)
    if rank is not None:   # the new adapter's r (and scaling alpha / svd_rank) as upstream
        assert env.ours.adapters_config.get(new)["r"] == env.torch_model.adapters_config.get(new).r == rank
    env.compare(new, new, f"{strategy} {case}")
    COUNT[strategy] = COUNT.get(strategy, 0) + 1


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("what", ["config-mismatch", "vera-negate_b", "bottleneck-svd", "prefix-negate_b",
                                  "svd-without-rank", "unknown-strategy"])
def test_rejected_by_both(env, what):
    cfgs = {"config-mismatch": ("lora[r=4]", "lora[r=2]", "linear", None),
            "vera-negate_b": ("vera", "vera", "lora_linear_only_negate_b", None),
            "bottleneck-svd": ("seq_bn", "seq_bn", "lora_delta_w_svd", 2),
            "prefix-negate_b": ("prefix_tuning[prefix_length=2]", "prefix_tuning[prefix_length=2]",
                                "lora_linear_only_negate_b", None),
            "svd-without-rank": ("lora", "lora", "lora_delta_w_svd", None),
            "unknown-strategy": ("lora", "lora", "mean", None)}
    c1, c2, strategy, rank = cfgs[what]
    a, b = env.add(c1), env.add(c2)
    with pytest.raises(ValueError):
        env.torch_model.average_adapter(f"bad_{a}", [a, b], combine_strategy=strategy, svd_rank=rank)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")      # bottleneck-svd: "svd_rank ignored" as upstream
        env.ours.average_adapter(f"bad_{a}", [a, b], combine_strategy=strategy, svd_rank=rank)
    assert f"bad_{a}" not in env.ours.adapters_config
    COUNT["rejected"] = COUNT.get("rejected", 0) + 1


@pytest.mark.spec("API-5")
def test_dropout_and_init_weights_may_differ(env):
    a, b = env.add("lora[r=4, dropout=0.1, init_weights='bert']"), env.add("lora[r=4, dropout=0.0]")
    env.torch_model.average_adapter("avg_drop", [a, b])
    env.ours.average_adapter("avg_drop", [a, b])
    assert env.ours.adapters_config.get("avg_drop")["dropout"] == 0.1     # the first adapter's config
    env.compare("avg_drop", "avg_drop", "dropout/init_weights differ")


@pytest.mark.spec("API-5")
def test_upstream_fails_on_dict_adapter_list(env):
    """Reproduction of the upstream deviation: adapters documents adapter_list as a dict name -> weight but fails
    on one (KeyError 0, ``adapter_list[0]``); ours uses the dict's weights."""
    a, b = env.add("seq_bn"), env.add("seq_bn")
    with pytest.raises(KeyError):
        env.torch_model.average_adapter("dict_up", {a: 0.1, b: 0.9})
    env.ours.average_adapter("dict_ours", {a: 0.1, b: 0.9})
    env.ours.average_adapter("list_ours", [a, b], weights=[0.1, 0.9])
    s1, s2 = env.ours.adapter_state_dict("dict_ours"), env.ours.adapter_state_dict("list_ours")
    for k, v in s1.items():
        np.testing.assert_array_equal(v, s2[k.replace("dict_ours", "list_ours")])


# ---- share_parameters ------------------------------------------------------------------------------
@pytest.mark.spec("API-6")
@pytest.mark.parametrize("reference", [None, "second"])
def test_share_parameters_multitask(env, reference):
    cfg = "mtl_lora[n_up_projection=2, intermediate_lora=True]"
    t1, t2 = env.add(cfg, prefix="t"), env.add(cfg, prefix="t")      # distinct, perturbed, saved before sharing
    ref = t2 if reference == "second" else None
    group = f"{t1},{t2}"
    env.torch_model.share_parameters([t1, t2], reference_adapter_name=ref)
    env.ours.share_parameters(ma.MultiTask(t1, t2), reference_adapter_name=ref)
    theirs = {k: v.detach().numpy() for k, v in env.torch_model.state_dict().items()
              if f".shared_parameters.{group}." in k}
    ours = env.ours.shared_parameters_state_dict(group)
    assert theirs and sorted(ours) == sorted(theirs)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=0)
    env.compare(adapters.composition.MultiTask(t1, t2), ma.MultiTask(t1, t2), "shared MultiTask",
                task_ids=[1, 0, 1])
    env.compare(t1, t1, "shared single task")
    COUNT["share"] = COUNT.get("share", 0) + 1


# ---- setup files -----------------------------------------------------------------------------------
def _fresh_upstream(model_type="bert"):
    return hf_model(model_type)      # same seed: same base weights as env.torch_model


def _setups(mod, a, b, fuse_name=None):
    kw = {"name": fuse_name} if fuse_name else {}
    return {"Stack": mod.Stack(a, b), "Fuse": mod.Fuse(a, b, **kw), "Parallel": mod.Parallel(a, b),
            "BatchSplit": mod.BatchSplit(a, b, batch_sizes=[1, 2]), "Average": mod.Average(a, b, weights=[0.3, 0.9]),
            "Stack-Fuse": mod.Stack(a, mod.Fuse(a, b, **kw))}


def _with_fusion(env, a, b, name=None):
    """Add + perturb the fusion upstream, save it, load into ours."""
    fname = name or f"{a},{b}"
    env.torch_model.add_adapter_fusion([a, b], name=name)
    perturb_adapter(env.torch_model, fname, seed=99)
    d = os.path.join(env.tmp, f"fusion-{fname}")
    env.torch_model.save_adapter_fusion(d, fname)
    env.ours.load_adapter_fusion(d)
    return fname


@pytest.mark.spec("API-7")
@pytest.mark.parametrize("kind", ["Stack", "Fuse", "Parallel", "BatchSplit", "Average", "Stack-Fuse", "Fuse-named"])
def test_setup_written_by_us_loads_upstream(env, tmp_path, kind):
    a, b = env.add("seq_bn[reduction_factor=4]"), env.add("seq_bn[reduction_factor=4]")
    named = kind == "Fuse-named"
    kind = "Fuse" if named else kind
    fname = f"fz_{a}" if named else None
    if "Fuse" in kind:
        _with_fusion(env, a, b, fname)
    ours_setup = _setups(ma, a, b, fname)[kind]
    theirs_setup = _setups(adapters.composition, a, b, fname)[kind]
    env.ours.save_adapter_setup(str(tmp_path / "setup"), ours_setup)
    up = _fresh_upstream()
    loaded, head = up.load_adapter_setup(str(tmp_path / "setup"), set_active=True)
    up.eval()
    assert head is None and loaded == theirs_setup
    expected = torch_forward(up, env.ids, env.mask).last_hidden_state.numpy()
    env.ours.active_adapters = ours_setup
    got = env.ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
    assert_close(got, expected, what=f"setup {kind} ours -> adapters")
    COUNT["setup"] = COUNT.get("setup", 0) + 1


@pytest.mark.spec("API-7")
@pytest.mark.parametrize("kind", ["Stack", "Fuse", "Parallel", "BatchSplit", "Average", "Stack-Fuse"])
def test_setup_written_by_upstream_loads_ours(env, tmp_path, kind):
    a, b = env.add("seq_bn[reduction_factor=4]"), env.add("seq_bn[reduction_factor=4]")
    if "Fuse" in kind:
        _with_fusion(env, a, b)
    theirs_setup = _setups(adapters.composition, a, b)[kind]
    up_dir, our_dir = str(tmp_path / "up"), str(tmp_path / "ours")
    env.torch_model.save_adapter_setup(up_dir, theirs_setup)
    ours = ma.AutoModel.from_pretrained(os.path.join(env.tmp, "model"))
    setup, head = ours.load_adapter_setup(up_dir, set_active=True)
    assert head is None and setup == _setups(ma, a, b)[kind]
    env.torch_model.set_active_adapters(theirs_setup)
    env.torch_model.eval()
    expected = torch_forward(env.torch_model, env.ids, env.mask).last_hidden_state.numpy()
    got = ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
    assert_close(got, expected, what=f"setup {kind} adapters -> ours")
    # the same layout: adapter_setup.json content and the sub-folders / file names
    env.ours.save_adapter_setup(our_dir, _setups(ma, a, b)[kind])
    with open(os.path.join(up_dir, "adapter_setup.json")) as f1, open(os.path.join(our_dir, "adapter_setup.json")) as f2:
        assert json.load(f1) == json.load(f2)
    tree = lambda d: sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)  # noqa
    assert tree(up_dir) == tree(our_dir)
    COUNT["setup"] = COUNT.get("setup", 0) + 1


@pytest.mark.spec("API-7")
def test_upstream_loses_custom_fuse_name(env, tmp_path):
    """Reproduction: adapters' own save/load of a custom-named Fuse fails (name not in to_dict); ours writes it."""
    a, b = env.add("seq_bn[reduction_factor=4]"), env.add("seq_bn[reduction_factor=4]")
    fname = _with_fusion(env, a, b, f"custom_{a}")
    env.torch_model.save_adapter_setup(str(tmp_path / "up"), adapters.composition.Fuse(a, b, name=fname))
    with open(tmp_path / "up" / "adapter_setup.json") as f:
        assert "kwargs" not in json.load(f)["adapter_setup"]
    with pytest.raises(Exception):
        _fresh_upstream().load_adapter_setup(str(tmp_path / "up"))
    env.ours.save_adapter_setup(str(tmp_path / "ours"), ma.Fuse(a, b, name=fname))
    with open(tmp_path / "ours" / "adapter_setup.json") as f:
        assert json.load(f)["adapter_setup"]["kwargs"] == {"name": fname}


@pytest.mark.spec("API-7")
def test_save_all_adapters_layout(env, tmp_path):
    a = env.add("seq_bn[reduction_factor=4]")
    up_dir, our_dir = tmp_path / "up", tmp_path / "ours"
    env.torch_model.save_all_adapters(str(up_dir))
    env.ours.save_all_adapters(str(our_dir))
    with open(up_dir / a / "adapter_config.json") as f1, open(our_dir / a / "adapter_config.json") as f2:
        c1, c2 = json.load(f1), json.load(f2)
    assert c1["config_id"] == c2["config_id"]
    assert c1["config"] == c2["config"]
    env.torch_model.save_all_adapter_fusions(str(tmp_path / "fu"))
    env.ours.save_all_adapter_fusions(str(tmp_path / "fo"))
    for name in env.ours.adapters_config.fusions:
        with open(tmp_path / "fu" / name / "adapter_fusion_config.json") as f1, \
                open(tmp_path / "fo" / name / "adapter_fusion_config.json") as f2:
            assert json.load(f1)["config_id"] == json.load(f2)["config_id"]
