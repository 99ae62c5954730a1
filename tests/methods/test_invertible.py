"""Invertible adapters: NICE / GLOW couplings, inverse round trips, creation and application (no torch).

Spec: INV-1 .. INV-4.
"""
import numpy as np
import pytest

from minadapters.composition import Stack
from minadapters.context import ForwardState
from minadapters.errors import ConfigError
from minadapters.functional.activations import get_activation
from minadapters.functional.invertible import glow_coupling, glow_e, nice_coupling
from minadapters.ops import NumpyOps
from minadapters.model import AdapterModel
from minadapters.models import bert


def tiny_model(D=17, L=1, seed=0):
    cfg = bert.EncoderConfig("bert", D, L, 1, 24, 50, 32, 2, 1e-12, "gelu", 0)
    rng = np.random.default_rng(seed)
    params = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in bert.expected_shapes(cfg).items()}
    return AdapterModel(bert.ARCHITECTURE, cfg, params, seed=seed)


def perturb(m, name, scale=0.3):
    for k, (d, leaf) in m.adapter_param_refs(name).items():
        if "invertible" in k:
            d[leaf] = d[leaf] + np.random.default_rng(len(k)).standard_normal(d[leaf].shape).astype(np.float32) * scale


@pytest.mark.spec("INV-1")
def test_nice_hand_case():
    # E = 3: x1 = x[:1], x2 = x[1:]; F: 2 -> 1 (hidden 1), G: 1 -> 2 (hidden 0 → only bias)
    p = {"F.0.weight": np.array([[1.0, 1.0]]), "F.0.bias": np.array([0.0]),
         "F.2.weight": np.array([[2.0]]), "F.2.bias": np.array([1.0]),
         "G.0.weight": np.zeros((0, 1)), "G.0.bias": np.zeros(0),
         "G.2.weight": np.zeros((2, 0)), "G.2.bias": np.array([0.5, -0.5])}
    x = np.array([[[1.0, 2.0, 3.0]]])
    # y1 = 1 + 2·relu(5) + 1 = 12; y2 = [2, 3] + [0.5, -0.5]
    y = nice_coupling(p, x, get_activation("relu"), ops=NumpyOps())
    np.testing.assert_allclose(y, [[[12.0, 2.5, 2.5]]])
    np.testing.assert_allclose(nice_coupling(p, y, get_activation("relu"), rev=True, ops=NumpyOps()), x)


@pytest.mark.spec("INV-1")
@pytest.mark.spec("INV-2")
@pytest.mark.parametrize("kind", ["nice", "glow"])
@pytest.mark.parametrize("act", ["relu", "tanh", None])
def test_inverse_round_trip(kind, act):
    m = tiny_model()
    m.add_adapter("a", f"seq_bn_inv[inv_adapter='{kind}', inv_adapter_reduction_factor=2, non_linearity={act!r}]"
                  if act else f"seq_bn_inv[inv_adapter='{kind}']")
    perturb(m, "a")
    inv = m.model_level["invertible"]
    x = np.random.default_rng(1).standard_normal((2, 5, 17)).astype(np.float64)
    y, _ = inv.forward(x, None, ForwardState(setup=Stack("a")))
    assert np.abs(y - x).max() > 1e-2
    np.testing.assert_allclose(inv.inverse("a", y), x, atol=1e-10)
    np.testing.assert_allclose(inv.inverse_for_setup(Stack("a"), y), x, atol=1e-10)


@pytest.mark.spec("INV-2")
def test_glow_scale_clamped():
    s = np.array([-1e6, 0.0, 1e6])
    e = glow_e(s)
    assert e[1] == 1.0 and np.exp(-5 * 0.636 * np.pi / 2) - 1e-9 < e[0] < e[2] < np.exp(5 * 0.636 * np.pi / 2) + 1e-9


@pytest.mark.spec("INV-2")
def test_glow_zero_subnets_is_identity():
    p = {f"{s}.{i}.{w}": np.zeros(shape) for s, (a, b) in {"s1": (2, 6), "s2": (3, 4)}.items()
         for i, w, shape in ((0, "weight", (1, a)), (0, "bias", (1,)), (2, "weight", (b, 1)), (2, "bias", (b,)))}
    x = np.random.default_rng(0).standard_normal((1, 2, 5))
    np.testing.assert_allclose(glow_coupling(p, x, np.tanh, ops=NumpyOps()), x)


@pytest.mark.spec("INV-3")
def test_keys_shapes_and_creation():
    m = tiny_model()
    m.add_adapter("n", "double_seq_bn_inv")          # E = 17: E1 = 8, E2 = 9, rf 2
    sd = {k: v.shape for k, v in m.adapter_state_dict("n").items() if k.startswith("invertible")}
    assert sd == {"invertible_adapters.n.F.0.weight": (4, 9), "invertible_adapters.n.F.0.bias": (4,),
                  "invertible_adapters.n.F.2.weight": (8, 4), "invertible_adapters.n.F.2.bias": (8,),
                  "invertible_adapters.n.G.0.weight": (4, 8), "invertible_adapters.n.G.0.bias": (4,),
                  "invertible_adapters.n.G.2.weight": (9, 4), "invertible_adapters.n.G.2.bias": (9,)}
    m.add_adapter("g", "seq_bn_inv[inv_adapter='glow', inv_adapter_reduction_factor=4]")
    sd = {k: v.shape for k, v in m.adapter_state_dict("g").items() if k.startswith("invertible")}
    assert sd["invertible_adapters.g.s1.0.weight"] == (2, 8) and sd["invertible_adapters.g.s1.2.weight"] == (18, 2)
    assert sd["invertible_adapters.g.s2.0.weight"] == (2, 9) and sd["invertible_adapters.g.s2.2.weight"] == (16, 2)
    m.add_adapter("plain", "seq_bn")
    assert not any(k.startswith("invertible") for k in m.adapter_state_dict("plain"))
    m.delete_adapter("n")
    assert "n" not in m.model_level["invertible"].blocks


@pytest.mark.spec("INV-3")
def test_missing_reduction_factor_rejected():
    m = tiny_model()
    with pytest.raises(ConfigError, match="inv_adapter_reduction_factor"):
        m.add_adapter("x", {"mh_adapter": False, "output_adapter": True,
                            "reduction_factor": 4, "non_linearity": "relu", "inv_adapter": "nice"})


@pytest.mark.spec("INV-4")
def test_applied_for_first_adapter_only_and_round_trip(tmp_path):
    m = tiny_model()
    m.add_adapter("inv", "seq_bn_inv")
    m.add_adapter("plain", "seq_bn")
    perturb(m, "inv")
    inv = m.model_level["invertible"]
    x = np.random.default_rng(0).standard_normal((1, 3, 17)).astype(np.float32)
    mask = np.ones((1, 3))
    y, mk = inv.forward(x, mask, ForwardState(setup=Stack("plain", "inv")))
    assert y is x and mk is mask
    y, _ = inv.forward(x, mask, ForwardState(setup=Stack("inv", "plain")))
    assert np.abs(y - x).max() > 1e-3
    assert inv.forward(x, mask, ForwardState(setup=None))[0] is x
    with pytest.raises(KeyError, match="inv"):
        inv.inverse("plain", x)
    ids = np.array([[3, 4, 5]])
    m.active_adapters = "inv"
    out = m(input_ids=ids).last_hidden_state
    m.save_adapter(tmp_path / "inv", "inv")
    m2 = tiny_model()
    m2.load_adapter(tmp_path / "inv", set_active=True)
    np.testing.assert_array_equal(m2(input_ids=ids).last_hidden_state, out)
