"""Oracle: fresh adapters have the same parameter keys, shapes and init statistics as adapters 1.3.0's.

Spec: INIT-1, INIT-2, INIT-3, PREFIX-1, PROMPT-1. Values differ (NumPy's generator, not torch's); per tensor the
mean and standard deviation must agree, and tensors that are constant upstream (zeros, ones, identity) must be equal.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
from oracle_utils import hf_model, save_model  # noqa: E402

CONFIGS = ["seq_bn", "double_seq_bn[use_gating=True, ln_before=True]", "par_bn", "seq_bn[init_weights='houlsby']",
           "lora", "lora[init_weights='bert', use_gating=True]", "ia3", "vera", "dora", "prefix_tuning",
           "prefix_tuning_flat", "prompt_tuning", "noreft", "compacter", "seq_bn_inv"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("init"))
    m = hf_model("bert", hidden_size=128, num_attention_heads=4, intermediate_size=160, num_hidden_layers=2)
    save_model(m, os.path.join(tmp, "model"))
    return m, ma.AutoModel.from_pretrained(os.path.join(tmp, "model"), seed=0)


@pytest.mark.parametrize("config", CONFIGS)
def test_fresh_adapter_statistics(env, config):
    m, ours = env
    name = f"i{CONFIGS.index(config)}"
    m.add_adapter(name, config=config)
    theirs = {k: v.detach().numpy() for k, v in m.state_dict().items()
              if f".{name}." in k or k.startswith(f"{name}.") and "prefix_tuning.pool" not in k}
    theirs = {k: v for k, v in theirs.items() if ".prefix_tuning.pool." not in k}
    ours.add_adapter(name, config=config)
    mine = ours.adapter_state_dict(name)
    assert set(mine) == set(theirs), (f"keys differ: only ours {sorted(set(mine) - set(theirs))[:4]}, "
                                      f"only adapters {sorted(set(theirs) - set(mine))[:4]}")
    for k, want in theirs.items():
        got = np.asarray(mine[k], np.float64)
        want = want.astype(np.float64)
        assert got.shape == want.shape, f"{k}: shape {got.shape}, but should be {want.shape}"
        flat = want.reshape(-1)
        is_identity = want.ndim == 2 and want.shape[0] == want.shape[1] and np.allclose(want, np.diag(np.diag(want)))
        if np.all(flat == 0) or np.all(flat == 1) or (is_identity and want.shape[0] > 1):
            np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{config}: {k} is a fixed init upstream")
            continue
        if want.size < 32:   # too few values for statistics (e.g. a random gate bias)
            continue
        tol = 4 / np.sqrt(want.size)   # sampling error of the std estimate, generously
        assert abs(got.mean() - want.mean()) <= tol * want.std() + 1e-6, \
            f"{config}: {k} mean {got.mean():.4g}, but should be ≈{want.mean():.4g}"
        assert abs(got.std() / want.std() - 1) <= max(tol, 0.1), \
            f"{config}: {k} std {got.std():.4g}, but should be ≈{want.std():.4g}"
