"""Oracle: prefix tuning (MLP and flat, gating, leave_out, Stack / Parallel / BatchSplit, eject, files both ways)
matches adapters 1.3.0.

Spec: PREFIX-1 .. PREFIX-6. Model: odd sizes (hidden 40, 4 heads, 3 layers), perturbed base weights, perturbed
adapter weights, padded batch of 3 (BatchSplit: 4).
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import adapters.composition as ac  # noqa: E402
from adapters import ConfigUnion, PrefixTuningConfig, SeqBnConfig  # noqa: E402
from adapters.methods.prefix_tuning import PrefixTuningLayer as UpstreamLayer  # noqa: E402
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward  # noqa: E402

MODEL_TYPES = ["bert", "roberta"]
CASES = [
    dict(prefix_length=5, bottleneck_size=12),
    dict(prefix_length=1, bottleneck_size=3, non_linearity="relu"),
    dict(prefix_length=7, bottleneck_size=9, non_linearity="gelu"),
    dict(prefix_length=3, flat=True),
    dict(prefix_length=4, bottleneck_size=8, leave_out=[0, 2]),
    dict(prefix_length=2, flat=True, leave_out=[1]),
    dict(prefix_length=3, bottleneck_size=8, use_gating=True),
    dict(prefix_length=3, bottleneck_size=8, use_gating=True, shared_gating=False, leave_out=[1]),
    dict(prefix_length=6, flat=True, use_gating=True, shared_gating=False),
]


def relink_pool(model):
    """transformers' save_pretrained drops the pool alias from every PrefixTuningLayer; put it back."""
    for mod in model.modules():
        if isinstance(mod, UpstreamLayer):
            mod.set_pool(model.prefix_tuning)


class Env:
    def __init__(self, model_type, tmp):
        self.model_type, self.tmp, self.n = model_type, tmp, 0
        self.torch_model = hf_model(model_type)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        relink_pool(self.torch_model)
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.ids, self.mask = batch(model_type=model_type)

    def add(self, config, name=None):
        """Add + perturb upstream, save, load into ours. Returns the name."""
        self.n += 1
        name = name or f"p{self.n}"
        self.torch_model.add_adapter(name, config=config)
        perturb_adapter(self.torch_model, name, seed=self.n)
        d = os.path.join(self.tmp, name)
        self.torch_model.save_adapter(d, name)
        assert self.ours.load_adapter(d) == name
        return name

    def compare(self, setup_theirs, setup_ours, ids=None, mask=None, what="", gating=False):
        ids = self.ids if ids is None else ids
        mask = self.mask if mask is None else mask
        self.torch_model.set_active_adapters(setup_theirs)
        self.ours.active_adapters = setup_ours
        exp = torch_forward(self.torch_model, ids, mask, output_adapter_gating_scores=gating)
        got = self.ours(input_ids=ids, attention_mask=mask, output_adapter_gating_scores=gating)
        assert_close(got.last_hidden_state, exp.last_hidden_state.numpy(), what=f"{self.model_type} {what}")
        return got, exp


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


@pytest.mark.spec("PREFIX-1")
@pytest.mark.spec("PREFIX-2")
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_single_prefix(env, case):
    name = env.add(PrefixTuningConfig(**case))
    got, exp = env.compare(name, name, what=str(case), gating=True)
    if case.get("use_gating"):
        theirs = exp.adapter_gating_scores[name]
        ours = got.adapter_gating_scores[name]
        assert sorted(ours) == sorted(theirs)
        for layer, locs in theirs.items():
            assert sorted(ours[layer]) == sorted(locs) == ["self_prefix"]
            assert_close(ours[layer]["self_prefix"], locs["self_prefix"], what=f"gate layer {layer}")


@pytest.mark.spec("PREFIX-1")
def test_state_dict_keys_and_shapes(env):
    """Our keys are adapters' keys minus its per-layer pool aliases; shapes equal."""
    name = env.add(PrefixTuningConfig(prefix_length=4, bottleneck_size=6, use_gating=True, leave_out=[1]))
    theirs = {k: tuple(v.shape) for k, v in env.torch_model.state_dict().items()
              if f".{name}." in k and ".pool." not in k}
    ours = {k: tuple(v.shape) for k, v in env.ours.adapter_state_dict(name).items()}
    assert ours == theirs


@pytest.mark.spec("PREFIX-5")
def test_stack_of_two_prefixes(env):
    a = env.add(PrefixTuningConfig(prefix_length=3, bottleneck_size=8, use_gating=True))
    b = env.add(PrefixTuningConfig(prefix_length=5, flat=True, leave_out=[2]))
    env.compare(ac.Stack(a, b), ma.Stack(a, b), what="Stack")
    env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack reversed")


@pytest.mark.spec("PREFIX-4")
def test_parallel_same_lengths(env):
    a = env.add(PrefixTuningConfig(prefix_length=4, bottleneck_size=8, use_gating=True, shared_gating=False))
    b = env.add(PrefixTuningConfig(prefix_length=4, flat=True))
    env.compare(ac.Parallel(a, b), ma.Parallel(a, b), what="Parallel")


@pytest.mark.spec("PREFIX-4")
def test_batch_split_same_lengths(env):
    a = env.add(PrefixTuningConfig(prefix_length=3, bottleneck_size=8))
    b = env.add(PrefixTuningConfig(prefix_length=3, flat=True, use_gating=True))
    ids, mask = batch(B=4, T=7, seed=3, model_type=env.model_type)
    env.compare(ac.BatchSplit(a, b, batch_sizes=[1, 3]), ma.BatchSplit(a, b, batch_sizes=[1, 3]), ids, mask,
                what="BatchSplit")


@pytest.mark.spec("PREFIX-2")
def test_union_with_bottleneck(env):
    """A ConfigUnion of prefix tuning and a bottleneck: both act in the same forward."""
    name = env.add(ConfigUnion(PrefixTuningConfig(prefix_length=3, bottleneck_size=5), SeqBnConfig(reduction_factor=8)))
    env.compare(name, name, what="union prefix + seq_bn")


@pytest.mark.spec("PREFIX-6")
def test_eject_matches_and_file_loads_upstream(env):
    """Eject keeps the output; our ejected file (flat=True) loads into adapters and gives the same output."""
    name = env.add(PrefixTuningConfig(prefix_length=4, bottleneck_size=7, use_gating=True, leave_out=[0]))
    got, _ = env.compare(name, name, what="before eject")
    env.ours.eject_prefix_tuning(name)
    after = env.ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
    np.testing.assert_allclose(after, got.last_hidden_state, rtol=0, atol=1e-5)
    env.torch_model.eject_prefix_tuning(name)                        # upstream's own eject agrees too
    env.compare(name, name, what="both ejected")
    d = os.path.join(env.tmp, name + "_ours_ejected")
    env.ours.save_adapter(d, name)
    fresh = name + "_reloaded"
    env.torch_model.load_adapter(d, load_as=fresh)
    env.torch_model.set_active_adapters(fresh)
    exp = torch_forward(env.torch_model, env.ids, env.mask).last_hidden_state.numpy()
    assert_close(after, exp, what="ejected file in adapters")


@pytest.mark.spec("PREFIX-1")
@pytest.mark.parametrize("cfg", [dict(prefix_length=3, bottleneck_size=6, use_gating=True),
                                 dict(prefix_length=2, flat=True, leave_out=[1], use_gating=True,
                                      shared_gating=False)], ids=["mlp", "flat"])
def test_ours_to_adapters(env, cfg, tmp_path):
    """A fresh adapter of ours (random init, no perturbation needed) saved and loaded by adapters: same output."""
    env.n += 1
    name = f"o{env.n}"
    env.ours.add_adapter(name, ma.PrefixTuningConfig(**cfg))
    env.ours.save_adapter(str(tmp_path / name), name)
    assert env.torch_model.load_adapter(str(tmp_path / name)) == name
    env.compare(name, name, what=f"ours->adapters {cfg}")
