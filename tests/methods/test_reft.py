"""ReFT: orthogonal parametrization, positions, unit equation, layer behaviour (no torch). Spec: REFT-1 .. REFT-5."""
import numpy as np
import pytest

from minadapters.composition import Stack
from minadapters.context import ForwardState
from minadapters.errors import ShapeError
from minadapters.functional.activations import identity
from minadapters.functional.reft import (expm_skew, householder_product, orthogonal_init, orthogonal_weight,
                                         reft_positions, reft_unit, scatter_rows)
from minadapters.model import AdapterModel
from minadapters.models import bert


def tiny_model(D=16, L=3, seed=0):
    cfg = bert.EncoderConfig("bert", D, L, 2, 24, 50, 32, 2, 1e-12, "gelu", 0)
    rng = np.random.default_rng(seed)
    params = {k: (rng.standard_normal(s) * 0.2).astype(np.float32) for k, s in bert.expected_shapes(cfg).items()}
    return AdapterModel(bert.ARCHITECTURE, cfg, params, seed=seed)


# ---- REFT-2 --------------------------------------------------------------------------------------------

@pytest.mark.spec("REFT-2")
@pytest.mark.parametrize("r,D", [(1, 6), (3, 6), (6, 6), (8, 5)])
def test_fresh_orthogonal_init_gives_orthonormal_rows(r, D):
    rng = np.random.default_rng(r)
    W = rng.standard_normal((r, D)).astype(np.float32)
    orig, base = orthogonal_init(W, rng)
    assert orig.shape == (r, D) and base.shape == (max(r, D),) * 2
    R = orthogonal_weight(orig, base).astype(np.float64)
    gram = R @ R.T if r <= D else R.T @ R
    np.testing.assert_allclose(gram, np.eye(min(r, D)), atol=1e-6)
    if r < D:   # the fresh R spans the original weight's rows (QR of Wᵀ)
        P = R.T @ R
        np.testing.assert_allclose(P @ W.T.astype(np.float64), W.T, atol=1e-5)


@pytest.mark.spec("REFT-2")
def test_householder_factors_are_exact_reflectors():
    rng = np.random.default_rng(1)
    A = np.tril(rng.standard_normal((5, 3)), -1)
    tau = 2.0 / (1.0 + (A * A).sum(0))
    Q = householder_product(A, tau)
    np.testing.assert_allclose(Q.T @ Q, np.eye(3), atol=1e-12)
    # first column by hand: H_0 e_0 after H_1, H_2 leave e_0 alone = e_0 − τ_0 v_0 (v_0 · e_0)
    v0 = np.r_[1.0, A[1:, 0]]
    np.testing.assert_allclose(Q[:, 0], np.eye(5)[:, 0] - tau[0] * v0, atol=1e-12)


@pytest.mark.spec("REFT-2")
def test_drifted_diagonal_is_truncated_like_torch_int_cast():
    rng = np.random.default_rng(2)
    orig, base = orthogonal_init(rng.standard_normal((2, 5)).astype(np.float32), rng)
    R0 = orthogonal_weight(orig, base)
    orig = orig.copy()
    orig[1, 1] = -0.7            # int(-0.7) = 0: the second row vanishes
    R = orthogonal_weight(orig, base)
    assert np.abs(R[1]).max() == 0.0 and np.array_equal(R[0], R0[0])
    orig[1, 1] = 1.3             # int(1.3) = 1: the row flips sign relative to the −1 diagonal
    np.testing.assert_allclose(orthogonal_weight(orig, base)[1], -R0[1], atol=1e-7)


@pytest.mark.spec("REFT-2")
def test_expm_skew_matches_power_series():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 4)) * 0.3
    A = X - X.T
    series, term = np.eye(4), np.eye(4)
    for k in range(1, 30):
        term = term @ A / k
        series = series + term
    np.testing.assert_allclose(expm_skew(A), series, atol=1e-12)


@pytest.mark.spec("REFT-2")
def test_bad_base_shape_raises():
    with pytest.raises(ShapeError, match="base"):
        orthogonal_weight(np.zeros((2, 5), np.float32), np.eye(4, dtype=np.float32))


# ---- REFT-1 --------------------------------------------------------------------------------------------

@pytest.mark.spec("REFT-1")
def test_unit_hand_case():
    h = np.array([[[1.0, 2.0]]])          # (1, 1, 2)
    W, b, R = np.array([[0.5, -1.0]]), np.array([0.25]), np.array([[0.6, 0.8]])
    # source = 0.5 - 2 + 0.25 = -1.25; proj = 0.6 + 1.6 = 2.2; (source - proj) R = -3.45 * [0.6, 0.8]
    np.testing.assert_allclose(reft_unit(h, W, b, R, identity, True), [[[1 - 2.07, 2 - 2.76]]])
    np.testing.assert_allclose(reft_unit(h, W, b, R, identity, False), [[[1 - 0.75, 2 - 1.0]]])
    np.testing.assert_allclose(reft_unit(h, W, b, R, np.tanh, False),
                               h + np.tanh(-1.25) * R[None], atol=1e-12)


# ---- REFT-3 --------------------------------------------------------------------------------------------

@pytest.mark.spec("REFT-3")
def test_positions_right_and_left_padding_and_no_mask():
    right = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    pref, suff = reft_positions(right, 2, 6, 2, 2)
    assert pref.tolist() == [[0, 1], [0, 1]] and suff.tolist() == [[4, 5], [2, 3]]
    left = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    pref, suff = reft_positions(left, 2, 6, 2, 1)
    assert pref.tolist() == [[0, 1], [3, 4]] and suff.tolist() == [[5], [5]]
    pref, suff = reft_positions(None, 2, 6, 3, 0)
    assert pref.tolist() == [[0, 1, 2]] * 2 and suff.shape == (2, 0)


@pytest.mark.spec("REFT-3")
def test_positions_clip_to_sequence_length():
    pref, suff = reft_positions(None, 1, 3, 5, 7)
    assert pref.tolist() == [[0, 1, 2]] and suff.tolist() == [[0, 1, 2]]


@pytest.mark.spec("REFT-3")
@pytest.mark.parametrize("mask,p,s", [([[1, 1, 1, 0, 0, 0]], 0, 4),     # suffix before position 0
                                      ([[0, 0, 0, 0, 1, 1]], 3, 0),     # prefix past the end (left padding)
                                      ([[0, 0, 0, 0, 0, 0]], 0, 1)])    # empty row
def test_positions_outside_sequence_raise(mask, p, s):
    with pytest.raises(ShapeError, match="row 0"):
        reft_positions(np.array(mask), 1, 6, p, s)


@pytest.mark.spec("REFT-3")
def test_mask_rows_must_match_the_batch():
    """The model's edge replicates the mask with the batch (COMP-PARALLEL); a mask of other rows is an error."""
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1]])
    pref, _ = reft_positions(mask, 2, 4, 1, 0)
    assert pref[:, 0].tolist() == [0, 1]
    for rows in (3, 4):
        with pytest.raises(ShapeError):
            reft_positions(mask, rows, 4, 1, 0)


@pytest.mark.spec("REFT-4")
def test_scatter_later_wins():
    x = np.zeros((1, 3, 1))
    y = scatter_rows(scatter_rows(x, np.array([[0, 1]]), np.ones((1, 2, 1))), np.array([[1]]), np.full((1, 1, 1), 5.0))
    assert y[0, :, 0].tolist() == [1.0, 5.0, 0.0] and x.sum() == 0


# ---- layer / model -------------------------------------------------------------------------------------

def _fwd(model, mask=None, setup="r"):
    return ForwardState(setup=Stack(setup), attention_mask=mask)


@pytest.mark.spec("REFT-4")
def test_keys_units_and_layers():
    m = tiny_model()
    m.add_adapter("r", "loreft[layers=[0, 2], prefix_positions=1, suffix_positions=1]")
    m.add_adapter("t", "noreft[tied_weights=True]")
    keys = m.adapter_state_dict("r")
    assert {k.split(".")[2] for k in keys} == {"0", "2"}
    assert "encoder.layer.0.reft_layer.refts.r.units.1.projection.parametrizations.weight.original" in keys
    base = "encoder.layer.0.reft_layer.refts.r.units.0.projection.parametrizations.weight.0.base"
    assert keys[base].shape == (16, 16)
    tkeys = m.adapter_state_dict("t")
    assert not any(".units.1." in k for k in tkeys)
    assert "encoder.layer.1.reft_layer.refts.t.units.0.projection.weight" in tkeys


@pytest.mark.spec("REFT-4")
def test_only_prefix_and_suffix_positions_change_and_suffix_wins():
    m = tiny_model()
    m.add_adapter("r", "noreft[prefix_positions=2, suffix_positions=2, r=2]")
    layer = m.method_layer("reft", "output_reft", 0)
    mod = layer.modules["r"]
    for leaf in ("units.0.learned_source.bias", "units.1.learned_source.bias"):
        mod.params[leaf] = mod.params[leaf] + 1.0
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    y = layer.forward(x, _fwd(m, mask))
    changed = np.abs(y - x).max(-1) > 1e-6
    assert changed.tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 0, 0]]
    # row 1: positions 1 and 2 are suffix positions (len 3): position 1 gets unit 1 (suffix written last)
    p = mod.params
    R1 = p["units.1.projection.weight"]
    want = reft_unit(x[1:2, 1:2], p["units.1.learned_source.weight"], p["units.1.learned_source.bias"], R1,
                     identity, True)
    np.testing.assert_allclose(y[1, 1], want[0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.spec("REFT-4")
def test_first_adapter_only_and_skip():
    m = tiny_model()
    m.add_adapter("r", "noreft")
    m.add_adapter("b", "seq_bn")
    layer = m.method_layer("reft", "output_reft", 1)
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    assert np.array_equal(layer.forward(x, ForwardState(setup=Stack("b", "r"))), x)
    assert not np.array_equal(layer.forward(x, ForwardState(setup=Stack("r", "b"))), x)
    assert np.array_equal(layer.forward(x, ForwardState(setup=Stack("r"), skip_layers=frozenset({1}))), x)
    assert np.array_equal(layer.forward(x, None), x)


@pytest.mark.spec("REFT-1")
def test_direft_has_no_subtraction_and_reload_turns_it_on(tmp_path):
    m = tiny_model()
    m.add_adapter("d", "direft")
    assert m.method_layer("reft", "output_reft", 0).modules["d"].info["subtract"] is False
    m.save_adapter(tmp_path / "d", "d")
    m2 = tiny_model()
    m2.load_adapter(tmp_path / "d")
    assert m2.method_layer("reft", "output_reft", 0).modules["d"].info["subtract"] is True


@pytest.mark.spec("REFT-4")
def test_model_forward_with_left_padding_and_round_trip(tmp_path):
    m = tiny_model()
    m.add_adapter("r", "loreft[prefix_positions=2, suffix_positions=1]", set_active=True)
    for k, (d, leaf) in m.adapter_param_refs("r").items():
        if "learned_source" in k:
            d[leaf] = d[leaf] + 0.3
    ids = np.array([[5, 6, 7, 8, 9], [0, 0, 6, 7, 8]])
    mask = (ids != 0).astype(np.int64)
    out = m(input_ids=ids, attention_mask=mask).last_hidden_state
    m.save_adapter(tmp_path / "r", "r", use_safetensors=True)
    m2 = tiny_model()
    m2.load_adapter(tmp_path / "r", set_active=True)
    np.testing.assert_array_equal(m2(input_ids=ids, attention_mask=mask).last_hidden_state, out)
    m2.active_adapters = None
    assert np.abs(m2(input_ids=ids, attention_mask=mask).last_hidden_state - out).max() > 1e-3


@pytest.mark.spec("REFT-2")
def test_param_count_excludes_orthogonal_base_buffer():
    m = tiny_model()
    m.add_adapter("r", "loreft[layers=[0], r=2]")          # 2 units: (2·16 + 2) + 2·16 each
    assert m.method_layer("reft", "output_reft", 0).summary_param_count("r") == 2 * (2 * 16 + 2 + 2 * 16)
