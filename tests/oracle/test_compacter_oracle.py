"""Oracle: Compacter / Compacter++ (PHM layers) match adapters 1.3.0, including the shared parameters.

Spec: PHM-1 .. PHM-3, IO-11. adapters saves `shared_parameters.<name>.*` only from models with heads, so the
upstream side is an `AutoAdapterModel` (file keys prefixed `bert.` / `roberta.`, stripped by our loader) loaded
from the same perturbed base weights; its base model's output is compared. Hidden 48 so that phm_dim 4 divides
the bottleneck (rf 12 -> 4, rf 6 -> 8).
"""
import os

import numpy as np
import pytest

import minadapters as ma
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model

import adapters  # noqa: E402
import torch  # noqa: E402

MODEL_TYPES = ["bert", "roberta"]
CASES = [
    "compacter[reduction_factor=12]",
    "compacter++[reduction_factor=6]",
    "compacter++[reduction_factor=12, factorized_phm_rule=True]",
    "compacter[reduction_factor=6, shared_phm_rule=False]",
    "compacter[reduction_factor=6, shared_phm_rule=False, factorized_phm_rule=True, phm_c_init='uniform']",
    "compacter++[reduction_factor=12, factorized_phm_W=False, phm_bias=False]",
    "compacter[reduction_factor=6, shared_W_phm=True, phm_rank=3]",
    "compacter++[reduction_factor=4, shared_W_phm=True, factorized_phm_rule=True, phm_rank=2]",
    "compacter[reduction_factor=4, phm_dim=2, phm_rank=5, non_linearity='relu']",
    "compacter++[reduction_factor=6, phm_dim=8, ln_before=True, ln_after=True]",
    "compacter[reduction_factor={'1': 6, 'default': 12}, shared_phm_rule=False, scaling=0.5]",
]


class Env:
    def __init__(self, model_type, tmp):
        self.model_type, self.tmp = model_type, tmp
        base = hf_model(model_type, hidden_size=48)
        save_model(base, os.path.join(tmp, "model"))
        self.am = adapters.AutoAdapterModel.from_pretrained(os.path.join(tmp, "model"), attn_implementation="eager")
        self.am.eval()
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.n = 0

    def compare(self, name, what):
        self.am.set_active_adapters(name)
        self.ours.active_adapters = name
        for pad in ("right", "left"):
            ids, mask = batch(B=3, T=9, pad_side=pad, model_type=self.model_type, seed=self.n)
            with torch.no_grad():
                expected = self.am.base_model(input_ids=torch.tensor(ids),
                                              attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
            got = self.ours(input_ids=ids, attention_mask=mask).last_hidden_state
            assert_close(got, expected, what=f"{self.model_type} {what} ({pad})")


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


@pytest.mark.spec("PHM-1")
@pytest.mark.spec("PHM-2")
@pytest.mark.spec("PHM-3")
@pytest.mark.parametrize("config", CASES)
def test_upstream_file_forward(env, config):
    env.n += 1
    name = f"c{env.n}"
    env.am.add_adapter(name, config=config)
    perturb_adapter(env.am, name, seed=env.n, scale=0.2)
    env.am.eval()
    d = os.path.join(env.tmp, name)
    # upstream cannot write ln_before adapters as safetensors (the LayerNorm is registered twice: shared memory)
    env.am.save_adapter(d, name, use_safetensors=env.n % 2 == 0 and "ln_before" not in config)
    env.ours.load_adapter(d)
    shared = env.am.base_model.shared_parameters
    if name in shared:   # the file really carried the shared parameters
        ours_sd = env.ours.adapter_state_dict(name)
        for leaf, p in shared[name].items():
            np.testing.assert_array_equal(ours_sd[f"shared_parameters.{name}.{leaf}"], p.detach().numpy())
    env.compare(name, config)


@pytest.mark.spec("PHM-3")
@pytest.mark.parametrize("config", ["compacter[reduction_factor=12]",
                                    "compacter++[reduction_factor=6, shared_W_phm=True, factorized_phm_rule=True]"])
def test_ours_to_upstream(env, config):
    env.n += 1
    name = f"o{env.n}"
    env.ours.add_adapter(name, config)
    rng = np.random.default_rng(env.n)
    for k, (dct, leaf) in env.ours.adapter_param_refs(name).items():
        dct[leaf] = dct[leaf] + (rng.standard_normal(dct[leaf].shape) * 0.2).astype(np.float32)
    d = os.path.join(env.tmp, name + "_ours")
    env.ours.save_adapter(d, name)
    env.am.load_adapter(d)
    env.am.eval()
    env.compare(name, "ours->upstream " + config)


@pytest.mark.spec("PHM-3")
def test_bare_model_file_without_shared_parameters(env, tmp_path):
    """A bare base model's file has no shared rule: we warn and keep ours; with the rule copied outputs match."""
    tm = hf_model(env.model_type, hidden_size=48)
    tm.add_adapter("bare", config="compacter[reduction_factor=12]")
    perturb_adapter(tm, "bare", seed=3, scale=0.2)
    tm.eval()
    tm.save_adapter(str(tmp_path / "bare"), "bare")
    save_model(tm, str(tmp_path / "m"))
    ours = ma.AutoModel.from_pretrained(str(tmp_path / "m"))
    with pytest.warns(UserWarning, match="shared parameters"):
        ours.load_adapter(tmp_path / "bare", set_active=True)
    ours.model_level["shared"].get("bare")["phm_rule"] = tm.shared_parameters["bare"]["phm_rule"].detach().numpy()
    tm.set_active_adapters("bare")
    ids, mask = batch(B=2, T=7, model_type=env.model_type)
    with torch.no_grad():
        expected = tm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    assert_close(ours(input_ids=ids, attention_mask=mask).last_hidden_state, expected, what="bare compacter")
