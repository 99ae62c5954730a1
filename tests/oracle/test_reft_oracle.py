"""Oracle: ReFT (LoReFT, NoReFT, DiReFT) forwards match adapters 1.3.0, files load both ways.

Spec: REFT-1 .. REFT-4. Model: hidden 40, 3 layers, perturbed base weights, perturbed adapter weights (including the
orthogonal parametrization's `original` and `base`), padded batches (right and left). Upstream creates the ReFT
units in training mode when add_adapter follows model.eval() (spec REFT-1 note), so every upstream model is put
back into eval mode after adding/loading.
"""
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.configuration import DiReftConfig
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward

MODEL_TYPES = ["bert", "roberta"]
CASES = [
    "loreft",
    "noreft",
    "loreft[prefix_positions=2, suffix_positions=3, r=2, layers=[0, 2]]",
    "noreft[tied_weights=True, prefix_positions=2, suffix_positions=2, non_linearity='tanh']",
    "loreft[tied_weights=True, prefix_positions=1, suffix_positions=4, r=3, non_linearity='gelu']",
    "noreft[prefix_positions=0, suffix_positions=2, r=4, layers=[1]]",
    "loreft[r=40, prefix_positions=2, suffix_positions=1]",            # r == D: matrix-exponential map
    "loreft[r=3, prefix_positions=4, suffix_positions=4, layers=[0, 1]]",  # prefix/suffix overlap on short rows
]


class Env:
    def __init__(self, model_type, tmp):
        self.model_type, self.tmp = model_type, tmp
        self.torch_model = hf_model(model_type)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.n = 0

    def name(self):
        self.n += 1
        return f"r{self.n}"

    def upstream(self, name, config, seed):
        m = self.torch_model
        m.add_adapter(name, config=config)
        perturb_adapter(m, name, seed=seed)
        m.eval()
        d = os.path.join(self.tmp, name)
        m.save_adapter(d, name)
        return d

    def compare(self, name, ids, mask, what):
        self.torch_model.set_active_adapters(name)
        self.ours.active_adapters = name
        expected = torch_forward(self.torch_model, ids, mask).last_hidden_state.numpy()
        got = self.ours(input_ids=ids, attention_mask=mask).last_hidden_state
        assert_close(got, expected, what=f"{self.model_type} {what}")
        return got


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


@pytest.mark.spec("REFT-1")
@pytest.mark.spec("REFT-2")
@pytest.mark.spec("REFT-3")
@pytest.mark.spec("REFT-4")
@pytest.mark.parametrize("config", CASES)
def test_upstream_file_forward(env, config):
    name = env.name()
    d = env.upstream(name, config, seed=env.n)
    env.ours.load_adapter(d)
    for pad in ("right", "left"):
        ids, mask = batch(B=3, T=9, pad_side=pad, model_type=env.model_type, seed=env.n)
        env.compare(name, ids, mask, f"{config} ({pad} padding)")


@pytest.mark.spec("REFT-3")
def test_no_attention_mask(env):
    name = env.name()
    env.ours.load_adapter(env.upstream(name, "noreft[prefix_positions=2, suffix_positions=2]", seed=7))
    ids, _ = batch(B=2, T=7, model_type=env.model_type)
    ids[:] = np.maximum(ids, 3)
    env.torch_model.set_active_adapters(name)
    env.ours.active_adapters = name
    import torch
    with torch.no_grad():
        expected = env.torch_model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    assert_close(env.ours(input_ids=ids).last_hidden_state, expected, what="no mask")


@pytest.mark.spec("REFT-4")
def test_suffix_longer_than_sequence_reads_upstream_window(env):
    """s > T: upstream writes out[:, -s:][:, :T] to the suffix positions (spec REFT-4 note)."""
    name = env.name()
    env.ours.load_adapter(env.upstream(name, "noreft[prefix_positions=2, suffix_positions=6]", seed=11))
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])
    env.compare(name, ids, np.ones_like(ids), "suffix 6 > T 4")


@pytest.mark.spec("REFT-1")
def test_direft_forward_with_copied_weights(env):
    """A DiReFT adapter (no projection subtraction) compared before any file round trip."""
    name = env.name()
    env.upstream(name, "direft[prefix_positions=2, suffix_positions=2, r=2]", seed=13)
    env.ours.add_adapter(name, DiReftConfig(prefix_positions=2, suffix_positions=2, r=2))
    sd = {k: v.detach().numpy() for k, v in env.torch_model.state_dict().items() if f".refts.{name}." in k}
    refs = env.ours.adapter_param_refs(name)
    assert set(sd) == set(refs)
    for k, (dct, leaf) in refs.items():
        dct[leaf] = sd[k].copy()
    ids, mask = batch(B=3, T=8, pad_side="left", model_type=env.model_type)
    env.compare(name, ids, mask, "direft")


@pytest.mark.spec("REFT-1")
def test_direft_file_reload_matches_upstream_reload(env):
    """Both libraries reload a saved DiReFT as ReftConfig with subtraction on (spec REFT-1 note)."""
    name = env.name()
    d = env.upstream(name, "direft[prefix_positions=2, suffix_positions=1]", seed=17)
    env.torch_model.load_adapter(d, load_as=name + "_re")
    env.torch_model.eval()
    env.ours.load_adapter(d, load_as=name + "_re")
    ids, mask = batch(B=3, T=8, model_type=env.model_type)
    env.compare(name + "_re", ids, mask, "direft reloaded")


@pytest.mark.spec("REFT-2")
@pytest.mark.parametrize("config", ["loreft[prefix_positions=2, suffix_positions=2, r=3]",
                                    "noreft[tied_weights=True, suffix_positions=3]"])
def test_ours_to_upstream(env, config):
    name = env.name()
    env.ours.add_adapter(name, config)
    rng = np.random.default_rng(env.n)
    for k, (dct, leaf) in env.ours.adapter_param_refs(name).items():
        dct[leaf] = dct[leaf] + (rng.standard_normal(dct[leaf].shape) * 0.1).astype(np.float32)
    d = os.path.join(env.tmp, name + "_ours")
    env.ours.save_adapter(d, name, use_safetensors=True)
    env.torch_model.load_adapter(d, use_safetensors=True)
    env.torch_model.eval()
    ids, mask = batch(B=3, T=9, pad_side="left", model_type=env.model_type)
    env.compare(name, ids, mask, f"ours->upstream {config}")
