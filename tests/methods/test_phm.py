"""PHM / Compacter layers: Kronecker structure, factorisation, shared parameters, errors (no torch).

Spec: PHM-1 .. PHM-4.
"""
import numpy as np
import pytest

from minadapters.errors import ConfigError
from minadapters.functional.phm import kron_sum, phm_forward
from minadapters.model import AdapterModel
from minadapters.models import bert


def tiny_model(D=16, L=2, seed=0):
    cfg = bert.EncoderConfig("bert", D, L, 2, 24, 50, 32, 2, 1e-12, "gelu", 0)
    rng = np.random.default_rng(seed)
    params = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in bert.expected_shapes(cfg).items()}
    return AdapterModel(bert.ARCHITECTURE, cfg, params, seed=seed)


@pytest.mark.spec("PHM-1")
def test_kron_sum_equals_numpy_kron():
    rng = np.random.default_rng(0)
    rule, W = rng.standard_normal((3, 3, 3)), rng.standard_normal((3, 2, 5))
    H = kron_sum(rule, W)
    assert H.shape == (6, 15)
    np.testing.assert_allclose(H, sum(np.kron(rule[i], W[i]) for i in range(3)), atol=1e-12)


@pytest.mark.spec("PHM-1")
def test_phm_forward_hand_case_not_transposed():
    rule = np.array([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 0.0]]])     # n = 2
    W = np.array([[[1.0]], [[3.0]]])                                          # (2, 1, 1): in = out = 2
    # H = kron(rule0, 1) + kron(rule1, 3) = [[1, 3], [0, 2]];  x H for x = [1, 1] -> [1, 5]
    np.testing.assert_allclose(phm_forward(np.array([[1.0, 1.0]]), rule, W, np.array([0.5, 0.0])), [[1.5, 5.0]])


@pytest.mark.spec("PHM-3")
def test_compacter_keys_and_shared_rule():
    m = tiny_model()
    m.add_adapter("c", "compacter[reduction_factor=4]")     # D=16, d_b=4, phm_dim 4
    sd = m.adapter_state_dict("c")
    assert sd["shared_parameters.c.phm_rule"].shape == (4, 4, 4)
    assert sd["encoder.layer.0.output.adapters.c.adapter_down.0.W_left"].shape == (4, 4, 1)
    assert sd["encoder.layer.0.output.adapters.c.adapter_down.0.W_right"].shape == (4, 1, 1)
    assert sd["encoder.layer.1.attention.output.adapters.c.adapter_up.W_left"].shape == (4, 1, 1)
    assert sd["encoder.layer.1.attention.output.adapters.c.adapter_up.b"].shape == (16,)
    assert not any(k.endswith("phm_rule") and "adapters.c" in k for k in sd)


@pytest.mark.spec("PHM-3")
def test_shared_w_and_per_layer_variants():
    m = tiny_model()
    m.add_adapter("s", "compacter++[reduction_factor=2, shared_W_phm=True, phm_rank=2, factorized_phm_rule=True]")
    sd = m.adapter_state_dict("s")
    assert sd["shared_parameters.s.W_down_left"].shape == (4, 4, 2)
    assert sd["shared_parameters.s.W_down_right"].shape == (4, 2, 2)
    assert sd["shared_parameters.s.W_up_left"].shape == (4, 2, 2)
    assert sd["shared_parameters.s.W_up_right"].shape == (4, 2, 4)
    assert {"shared_parameters.s.phm_rule_left", "shared_parameters.s.phm_rule_right"} <= set(sd)
    assert not any(".W_left" in k or ".W_right" in k for k in sd)
    m.add_adapter("p", "compacter++[reduction_factor=2, shared_phm_rule=False, factorized_phm_W=False, phm_bias=False]")
    sd = m.adapter_state_dict("p")
    assert not any(k.startswith("shared_parameters") for k in sd)
    assert sd["encoder.layer.0.output.adapters.p.adapter_down.0.W"].shape == (4, 4, 2)
    assert sd["encoder.layer.0.output.adapters.p.adapter_down.0.phm_rule"].shape == (4, 4, 4)
    assert not any(k.endswith(".b") for k in sd)
    m.add_adapter("u", "compacter[reduction_factor=2, shared_W_phm=True, factorized_phm_W=False]")
    assert m.adapter_state_dict("u")["shared_parameters.u.W_up"].shape == (4, 2, 4)


@pytest.mark.spec("PHM-1")
def test_adapter_up_equals_explicit_kron_with_ln_before():
    m = tiny_model()
    m.add_adapter("c", "compacter[reduction_factor=4, ln_before=True, shared_phm_rule=False]")
    layer = m.method_layer("bottleneck", "output_adapter", 0)
    mod = layer.modules["c"]
    assert "adapter_down.1.W_left" in mod.params
    from minadapters.methods.phm import phm_weight
    x = np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)
    p = mod.params
    W = p["adapter_down.1.W_left"] @ p["adapter_down.1.W_right"]
    H = sum(np.kron(p["adapter_down.1.phm_rule"][i], W[i]) for i in range(4))
    w, b = phm_weight(m, mod, "adapter_down.1", "down")
    np.testing.assert_allclose(x @ w.T + b, x @ H + p["adapter_down.1.b"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.spec("PHM-3")
def test_indivisible_sizes_raise_config_error_and_leave_nothing():
    m = tiny_model()
    with pytest.raises(ConfigError, match=r"phm_dim=4.*in_features=16, out_features=2"):
        m.add_adapter("c", "compacter[reduction_factor=8]")
    assert "c" not in m.adapters_config and not m.model_level["shared"].params.get("c")


@pytest.mark.spec("PHM-3")
def test_shared_w_with_per_layer_reduction_factor_raises():
    m = tiny_model()
    with pytest.raises(ConfigError, match="shared_W_phm"):
        m.add_adapter("c", "compacter[reduction_factor={'0': 4, 'default': 2}, shared_W_phm=True]")


@pytest.mark.spec("PHM-4")
def test_init_statistics():
    m = tiny_model(D=64)
    m.add_adapter("c", "compacter[reduction_factor=2, phm_rank=8, phm_c_init='uniform', shared_phm_rule=False]")
    p = m.method_layer("bottleneck", "output_adapter", 0).modules["c"].params
    left = p["adapter_down.0.W_left"]          # (4, 16, 8): xavier std sqrt(2 / 24)
    assert abs(left.std() - np.sqrt(2 / 24)) < 0.05
    rule = p["adapter_down.0.phm_rule"]
    assert np.abs(rule).max() <= 0.01 and np.abs(rule).max() > 0.005
    assert np.all(p["adapter_down.0.b"] == 0)
    m.add_adapter("s", "compacter[reduction_factor=2, phm_c_init='uniform']")
    shared = m.adapter_state_dict("s")["shared_parameters.s.phm_rule"]
    assert np.abs(shared).max() <= 1.0 and np.abs(shared).max() > 0.5


@pytest.mark.spec("PHM-1")
def test_round_trip_with_shared_parameters(tmp_path):
    m = tiny_model()
    m.add_adapter("c", "compacter[reduction_factor=4]", set_active=True)
    for k, (d, leaf) in m.adapter_param_refs("c").items():
        d[leaf] = d[leaf] + np.random.default_rng(len(k)).standard_normal(d[leaf].shape).astype(np.float32) * 0.3
    ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    out = m(input_ids=ids, attention_mask=mask).last_hidden_state
    m.save_adapter(tmp_path / "c", "c")
    m2 = tiny_model()
    m2.load_adapter(tmp_path / "c", set_active=True)
    np.testing.assert_array_equal(m2(input_ids=ids, attention_mask=mask).last_hidden_state, out)
