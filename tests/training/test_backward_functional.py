"""Finite-difference checks (float64) of every backward function in functional/. Spec: GRAD-*, LOSS-*.

Each check draws random inputs, a random cotangent R and compares the analytic gradient of L = Σ R ⊙ f(inputs)
with central differences, entry by entry (small tensors, so every entry is checked)."""
from __future__ import annotations

import numpy as np
import pytest

from minadapters.functional import activations as A
from minadapters.functional import backward as FB
from minadapters.functional import bottleneck as BN
from minadapters.functional import fusion as FU
from minadapters.functional import heads as H
from minadapters.functional import invertible as IV
from minadapters.functional import phm as PH
from minadapters.functional import reft as RF
from minadapters.functional.gate import mean_gate, mean_gate_backward
from minadapters.functional import lora as LF
from minadapters.functional import losses as LS
from minadapters.functional import prefix as PF
from minadapters.models import decoder_common as dc
from minadapters.ops.numpy import NumpyOps
from minadapters.training.heads import lm_loss, span_loss

OPS = NumpyOps()
EPS = 1e-6
TOL = 1e-6


def rng(seed=0):
    return np.random.default_rng(seed)


def numeric_grad(f, x):
    """Central differences of the scalar f() with respect to every entry of x (modified in place, restored)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + EPS
        hi = f()
        x[i] = old - EPS
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * EPS)
    return g


def check(analytic, f, x, what):
    num = numeric_grad(f, x)
    err = np.abs(np.asarray(analytic) - num).max() / max(np.abs(num).max(), 1e-3)
    assert err < TOL * 1e3, f"{what}: max relative error {err:.3g}, analytic vs numeric differ"


@pytest.mark.spec("GRAD-LINEAR")
def test_linear_backward():
    r = rng()
    x, w, b = r.standard_normal((2, 3, 5)), r.standard_normal((4, 5)), r.standard_normal(4)
    R = r.standard_normal((2, 3, 4))
    f = lambda: (R * OPS.linear(x, w, b)).sum()  # noqa: E731
    dx, dw, db = FB.linear_backward(R, x, w)
    check(dx, f, x, "dx")
    check(dw, f, w, "dW")
    check(db, f, b, "db")
    assert FB.linear_backward(R, x, w, need_weight=False)[1:] == (None, None)


@pytest.mark.spec("GRAD-LN")
def test_layer_norm_backward():
    r = rng(1)
    x, g, b = r.standard_normal((3, 4, 6)) * 2 + 1, 1 + 0.3 * r.standard_normal(6), r.standard_normal(6)
    R = r.standard_normal(x.shape)
    f = lambda: (R * OPS.layer_norm(x, g, b, 1e-5)).sum()  # noqa: E731
    y, c = FB.layer_norm_forward(x, g, b, 1e-5, ops=OPS)
    np.testing.assert_allclose(y, OPS.layer_norm(x, g, b, 1e-5))
    dx, dg, db = FB.layer_norm_backward(R, c, g)
    check(dx, f, x, "dx")
    check(dg, f, g, "dg")
    check(db, f, b, "db")
    fn = FB.LayerNormFn(g, b, 1e-5, OPS)
    y2, c2 = fn.forward(x)
    np.testing.assert_allclose(fn.backward(R, c2), dx)


@pytest.mark.spec("GRAD-ACT")
@pytest.mark.parametrize("name", sorted(A.ACTIVATION_GRADS))
def test_activation_backward(name):
    x = rng(2).standard_normal((4, 7)) * 2
    x[np.abs(x) < 1e-3] = 0.5                       # relu / leaky_relu kink
    R = rng(3).standard_normal(x.shape)
    f = lambda: (R * A.get_activation(name)(x)).sum()  # noqa: E731
    check(A.activation_backward(name, x, R), f, x, name)


def test_activation_without_derivative_is_refused():
    with pytest.raises(ValueError, match="mish"):
        A.activation_backward("mish", np.ones(3), np.ones(3))


@pytest.mark.spec("GRAD-ATTN")
def test_attention_backward_with_padding_mask():
    r = rng(4)
    q, k, v = (r.standard_normal((2, 3, 4, 5)) for _ in range(3))
    k, v = r.standard_normal((2, 3, 6, 5)), r.standard_normal((2, 3, 6, 5))
    mask = np.zeros((2, 1, 1, 6))
    mask[1, ..., 4:] = np.finfo(np.float64).min        # row 1 pads its last two keys
    R = r.standard_normal((2, 3, 4, 5))
    f = lambda: (R * OPS.attention(q, k, v, mask)).sum()  # noqa: E731
    ctx, c = FB.attention_forward(q, k, v, mask, ops=OPS)
    np.testing.assert_allclose(ctx, OPS.attention(q, k, v, mask), rtol=1e-12)
    dq, dk, dv = FB.attention_backward(R, c)
    check(dq, f, q, "dq")
    check(dk, f, k, "dk")
    check(dv, f, v, "dv")
    assert np.all(dk[1, :, 4:] == 0) and np.all(dv[1, :, 4:] == 0), "padded keys must get no gradient"


def _bn_params(r, D, d, ln_before, ln_after):
    p = {"wd": r.standard_normal((d, D)) * 0.5, "bd": r.standard_normal(d) * 0.1, "wu": r.standard_normal((D, d)) * 0.5,
         "bu": r.standard_normal(D) * 0.1}
    p["ln_before"] = (1 + 0.2 * r.standard_normal(D), 0.1 * r.standard_normal(D)) if ln_before else None
    p["ln_after"] = (1 + 0.2 * r.standard_normal(D), 0.1 * r.standard_normal(D)) if ln_after else None
    return p


@pytest.mark.spec("GRAD-BN-1")
@pytest.mark.parametrize("scaling", ["float", "learned", "channel"])
@pytest.mark.parametrize("ln_before", [False, True])
def test_bottleneck_branch_backward(scaling, ln_before):
    r = rng(5)
    D, d = 6, 3
    p = _bn_params(r, D, d, ln_before, False)
    s = {"float": 0.7, "learned": np.array([1.3]), "channel": 1 + 0.3 * r.standard_normal(D)}[scaling]
    a = r.standard_normal((2, 3, D))
    R = r.standard_normal(a.shape)

    def f():
        up, _ = BN.bottleneck_forward(a, p["wd"], p["bd"], p["wu"], p["bu"], act="gelu", scaling=s, ops=OPS,
                                      ln_before=p["ln_before"])
        return (R * up).sum()
    up, c = BN.bottleneck_forward(a, p["wd"], p["bd"], p["wu"], p["bu"], act="gelu", scaling=s, ops=OPS,
                                  ln_before=p["ln_before"])
    ref = BN.bottleneck(a, p["wd"], p["bd"], p["wu"], p["bu"], act="gelu", scaling=s, ops=OPS, ln_before=p["ln_before"])
    np.testing.assert_allclose(up, ref, rtol=1e-12)
    da, g = BN.bottleneck_backward(R, c, p["wd"], p["wu"], act="gelu", scaling=s, ln_before=p["ln_before"])
    check(da, f, a, "da")
    for name in ("wd", "bd", "wu", "bu"):
        check(g[name], f, p[name], name)
    if isinstance(s, np.ndarray):
        check(g["scaling"], f, s, "scaling")
    else:
        assert "scaling" not in g
    if ln_before:
        check(g["ln_g"], f, p["ln_before"][0], "ln_before g")
        check(g["ln_b"], f, p["ln_before"][1], "ln_before b")


BLOCK_FLAGS = [
    dict(residual_before_ln=True, adapter_residual_before_ln=False, original_ln_before=True, original_ln_after=True),
    dict(residual_before_ln=False, adapter_residual_before_ln=False, original_ln_before=True, original_ln_after=True),
    dict(residual_before_ln="post_add", adapter_residual_before_ln=True, original_ln_before=True,
         original_ln_after=False),
    dict(residual_before_ln=True, adapter_residual_before_ln=True, original_ln_before=False, original_ln_after=True),
    dict(residual_before_ln=False, adapter_residual_before_ln=False, original_ln_before=False, original_ln_after=False),
]


@pytest.mark.spec("GRAD-BN-2", "GRAD-BN-3")
@pytest.mark.parametrize("flags", BLOCK_FLAGS, ids=lambda f: "-".join(f"{k[:12]}={v}" for k, v in f.items()))
@pytest.mark.parametrize("ln_after", [False, True])
@pytest.mark.parametrize("is_parallel", [False, True])
@pytest.mark.parametrize("model_ln", [True, False])
def test_bottleneck_block_backward(flags, ln_after, is_parallel, model_ln):
    """Every residual / LN placement of BN-2..BN-4, compared with the inference path's own functions."""
    r = rng(6)
    D, d = 5, 2
    p = _bn_params(r, D, d, False, ln_after)
    ln = FB.LayerNormFn(1 + 0.2 * r.standard_normal(D), 0.1 * r.standard_normal(D), 1e-12, OPS) if model_ln else None
    h, x = r.standard_normal((2, 3, D)), r.standard_normal((2, 3, D))
    R = r.standard_normal(h.shape)
    kw = dict(act="tanh", scaling=0.8, is_parallel=is_parallel, **flags)
    if flags["residual_before_ln"] == "post_add" and (ln is None or not flags["original_ln_before"]) and not is_parallel:
        with pytest.raises(ValueError):          # post_add needs the model's LN, as in the inference path
            BN.bn_block_forward(h, x, ln, p, ops=OPS, **kw)
        return

    def f():
        return (R * BN.bn_block_forward(h, x, ln, p, ops=OPS, **kw)[0]).sum()
    out, c = BN.bn_block_forward(h, x, ln, p, ops=OPS, **kw)
    # the same block through the inference functions (BN-2 pre, BN-1, BN-4 output, BN-3 post)
    if is_parallel:
        a, r_ = x, x
    else:
        a, _, r_ = BN.bn_pre_forward(h, x, ln, residual_before_ln=flags["residual_before_ln"],
                                     original_ln_before=flags["original_ln_before"])
    up = BN.bottleneck(a, p["wd"], p["bd"], p["wu"], p["bu"], act="tanh", scaling=0.8, ops=OPS)
    o = BN.adapter_output(up, r_, gate=None, is_parallel=is_parallel,
                          residual_before_ln=flags["adapter_residual_before_ln"], ln_after=p["ln_after"], ops=OPS)
    ref = BN.bn_post_forward(o, h, x, ln, original_ln_after=flags["original_ln_after"], is_parallel=is_parallel)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    bkw = {k: v for k, v in kw.items() if k not in ("residual_before_ln", "original_ln_before")}
    dh, dx, g = BN.bn_block_backward(R, c, ln, p, **bkw)
    check(dh, f, h, "dh")
    check(dx, f, x, "dx")
    for name in ("wd", "bu"):
        check(g[name], f, p[name], name)
    if ln_after:
        check(g["ln_after_g"], f, p["ln_after"][0], "ln_after g")


@pytest.mark.spec("GRAD-LORA")
def test_lora_backward():
    r = rng(7)
    x, A_, B_ = r.standard_normal((2, 3, 5)), r.standard_normal((2, 5)), r.standard_normal((4, 2))
    R = r.standard_normal((2, 3, 4))
    f = lambda: (R * LF.lora_delta(x, A_, B_, scale=1.5, ops=OPS)).sum()  # noqa: E731
    dx, dA, dB = LF.lora_backward(R, x, A_, B_, scale=1.5)
    check(dx, f, x, "dx")
    check(dA, f, A_, "dA")
    check(dB, f, B_, "dB")


@pytest.mark.spec("GRAD-IA3")
def test_ia3_backward():
    r = rng(8)
    y, v = r.standard_normal((2, 3, 4)), r.standard_normal(4)
    R = r.standard_normal(y.shape)
    f = lambda: (R * (y * v)).sum()  # noqa: E731
    dy, dv = LF.ia3_backward(R, y, v)
    check(dy, f, y, "dy")
    check(dv, f, v, "dv")


@pytest.mark.spec("GRAD-PREFIX")
def test_prefix_mlp_backward():
    r = rng(9)
    P, D, bn, W = 3, 4, 5, 2 * 2 * 2 * 3
    E, w0, b0, w2, b2 = (r.standard_normal((P, D)), r.standard_normal((bn, D)), r.standard_normal(bn),
                         r.standard_normal((W, bn)), r.standard_normal(W))
    R = r.standard_normal((P, W))
    f = lambda: (R * PF.prefix_mlp(E, w0, b0, w2, b2, act=np.tanh, ops=OPS)).sum()  # noqa: E731
    out, c = PF.prefix_mlp_forward(E, w0, b0, w2, b2, act="tanh", ops=OPS)
    g = PF.prefix_mlp_backward(R, E, w0, w2, c, act="tanh")
    for name, arr in (("wte.weight", E), ("control_trans.0.weight", w0), ("control_trans.0.bias", b0),
                      ("control_trans.2.weight", w2), ("control_trans.2.bias", b2)):
        check(g[name], f, arr, name)


@pytest.mark.spec("GRAD-PREFIX")
def test_split_and_prepend_backward_are_adjoints():
    """⟨split(x), y⟩ = ⟨x, splitᵀ(y)⟩ and the prefix part of K' sums over the batch."""
    r = rng(10)
    P, L, Hh, Dh = 3, 2, 2, 4
    x, y = r.standard_normal((P, L * 2 * Hh * Dh)), r.standard_normal((L, 2, Hh, P, Dh))
    lhs = (PF.split_prefix_kv(x, P=P, L=L, H=Hh, Dh=Dh) * y).sum()
    assert abs(lhs - (x * PF.split_prefix_kv_backward(y)).sum()) < 1e-10
    K, V = r.standard_normal((2, Hh, 5, Dh)), r.standard_normal((2, Hh, 5, Dh))
    PK, PV = r.standard_normal((Hh, P, Dh)), r.standard_normal((Hh, P, Dh))
    RK, RV = r.standard_normal((2, Hh, P + 5, Dh)), r.standard_normal((2, Hh, P + 5, Dh))

    def f():
        K2, V2, _ = PF.prepend_prefix(K, V, None, np.broadcast_to(PK, (2,) + PK.shape),
                                      np.broadcast_to(PV, (2,) + PV.shape), ops=OPS)
        return (RK * K2).sum() + (RV * V2).sum()
    dK, dV, dPK, dPV = PF.prepend_prefix_backward(RK, RV, P)
    for a, g, n in ((K, dK, "dK"), (V, dV, "dV"), (PK, dPK, "dPK"), (PV, dPV, "dPV")):
        check(g, f, a, n)


@pytest.mark.spec("GRAD-HEAD")
def test_head_body_backward():
    r = rng(11)
    steps = [("linear", r.standard_normal((5, 4)), r.standard_normal(5)), ("act", "tanh"),
             ("ln", 1 + 0.1 * r.standard_normal(5), r.standard_normal(5), 1e-12),
             ("linear", r.standard_normal((3, 5)), None)]
    x = r.standard_normal((2, 4))
    R = r.standard_normal((2, 3))
    f = lambda: (R * H.run_body(x, steps, OPS)).sum()  # noqa: E731
    y, inputs = H.run_body_forward(x, steps, OPS)
    np.testing.assert_allclose(y, H.run_body(x, steps, OPS))
    dx, g = H.run_body_backward(R, steps, inputs)
    check(dx, f, x, "dx")
    check(g[0][0], f, steps[0][1], "W0")
    check(g[0][1], f, steps[0][2], "b0")
    check(g[2][0], f, steps[2][1], "ln g")
    check(g[3][0], f, steps[3][1], "W3")
    assert g[3][1] is None


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


@pytest.mark.spec("LOSS-CE")
def test_cross_entropy_with_ignore_index():
    r = rng(12)
    z = r.standard_normal((5, 4))
    y = np.array([0, 3, -100, 2, -100])
    loss, g = LS.cross_entropy(z, y)
    lp = _log_softmax(z)
    assert loss == pytest.approx(-(lp[0, 0] + lp[1, 3] + lp[3, 2]) / 3, rel=1e-12)
    check(g, lambda: LS.cross_entropy(z, y)[0], z, "dz")
    assert np.all(g[[2, 4]] == 0)
    nan_loss, g0 = LS.cross_entropy(z, np.full(5, -100))
    assert np.isnan(nan_loss) and not g0.any()
    with pytest.raises(ValueError, match="labels contains 4"):
        LS.cross_entropy(z, np.array([0, 4, 1, 1, 1]))


@pytest.mark.spec("LOSS-MSE")
def test_mse():
    z, t = np.array([0.5, -1.0, 2.0]), np.array([1.0, 1.0, 1.0])
    loss, g = LS.mse(z, t)
    assert loss == pytest.approx((0.25 + 4 + 1) / 3)
    check(g, lambda: LS.mse(z, t)[0], z, "dz")


@pytest.mark.spec("LOSS-BCE")
def test_bce_with_logits():
    r = rng(13)
    z, t = r.standard_normal((3, 4)) * 3, r.integers(0, 2, (3, 4)).astype(np.float64)
    loss, g = LS.bce_with_logits(z, t)
    sig = 1 / (1 + np.exp(-z))
    assert loss == pytest.approx(-(t * np.log(sig) + (1 - t) * np.log(1 - sig)).mean(), rel=1e-10)
    check(g, lambda: LS.bce_with_logits(z, t)[0], z, "dz")


@pytest.mark.spec("GRAD-PROMPT")
@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
def test_combine_prompt_backward(combine):
    r = rng(14)
    prompt, x = r.standard_normal((3, 4)), r.standard_normal((2, 5, 4))
    R = r.standard_normal((2, 8, 4))
    f = lambda: (R * PF.combine_prompt(prompt, x, None, combine=combine, ops=OPS)[0]).sum()  # noqa: E731
    dp, dx = PF.combine_prompt_backward(R, 3, combine=combine)
    check(dp, f, prompt, "d prompt")
    check(dx, f, x, "dx")


@pytest.mark.spec("GRAD-RMS")
def test_rms_norm_backward():
    r = rng(15)
    x, g = r.standard_normal((2, 3, 6)) + 0.5, 1 + 0.3 * r.standard_normal(6)
    R = r.standard_normal(x.shape)
    f = lambda: (R * OPS.rms_norm(x, g, 1e-6)).sum()  # noqa: E731
    y, c = FB.rms_norm_forward(x, g, 1e-6, ops=OPS)
    np.testing.assert_allclose(y, OPS.rms_norm(x, g, 1e-6), rtol=1e-12)
    check(FB.rms_norm_backward(R, c, g), f, x, "dx")


@pytest.mark.spec("GRAD-ROPE")
def test_rope_backward():
    r = rng(16)
    x = r.standard_normal((2, 3, 4, 6))
    ang = r.standard_normal((2, 4, 3))
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    R = r.standard_normal(x.shape)
    f = lambda: (R * OPS.rope(x, cos, sin)).sum()  # noqa: E731
    check(FB.rope_backward(R, cos, sin), f, x, "dx")


@pytest.mark.spec("GRAD-ATTN")
def test_repeat_kv_backward():
    r = rng(17)
    x, R = r.standard_normal((2, 2, 3, 4)), r.standard_normal((2, 6, 3, 4))
    check(FB.repeat_kv_backward(R, 3), lambda: (R * dc.repeat_kv(x, 3)).sum(), x, "dx")


@pytest.mark.spec("GRAD-LORA")
@pytest.mark.parametrize("enabled", [(True, False, True), (False, True, False), (True, True, True)])
def test_fused_qkv_lora_backward(enabled):
    """The fused q|k|v LoRA (LORA-7): grouped deltas scattered into the enabled thirds."""
    r = rng(18)
    g, Mo, K, rk = sum(enabled), 3, 5, 2
    x, A_, B_ = r.standard_normal((2, 3, K)), r.standard_normal((g * rk, K)), r.standard_normal((g * Mo, rk))
    R = r.standard_normal((2, 3, 3 * Mo))
    f = lambda: (R * LF.scatter_thirds(LF.grouped_delta(x, A_, B_, g, ops=OPS), enabled, 0.0) * 1.5).sum()  # noqa
    dx, dA, dB = LF.grouped_delta_backward(LF.gather_thirds(R, enabled), x, A_, B_, g, scale=1.5)
    check(dx, f, x, "dx")
    check(dA, f, A_, "dA")
    check(dB, f, B_, "dB")


@pytest.mark.spec("LOSS-LM")
@pytest.mark.parametrize("shift,P", [(True, 0), (False, 0), (True, 2)])
def test_lm_loss(shift, P):
    r = rng(19)
    z = r.standard_normal((2, 5 + P, 7))
    y = r.integers(0, 7, (2, 5))
    y[1, 3] = -100
    loss, g = lm_loss(z, y, shift=shift, prompt_length=P)
    zz = z[:, :-1] if shift else z
    yy = y[:, 1:] if shift else y
    yy = np.concatenate([np.full((2, P), -100), yy], 1)
    keep = yy.reshape(-1) != -100
    lp = _log_softmax(zz.reshape(-1, 7))[keep]
    assert loss == pytest.approx(-lp[np.arange(keep.sum()), yy.reshape(-1)[keep]].mean(), rel=1e-12)
    check(g, lambda: lm_loss(z, y, shift=shift, prompt_length=P)[0], z, "dz")


@pytest.mark.spec("GRAD-FUSION")
@pytest.mark.parametrize("flags", [dict(query=True, key=True, value=True, residual_before=False),
                                   dict(query=False, key=True, value=False, residual_before=True),
                                   dict(query=True, key=False, value=True, residual_before=True)],
                         ids=["dynamic", "key-residual-before", "query-value"])
def test_fusion_attention_backward(flags):

    r = rng(20)
    D, N = 4, 3
    cfg = dict(flags, value_before_softmax=True, query_before_ln=False, temperature=False)
    p = {"query.weight": r.standard_normal((D, D)), "query.bias": r.standard_normal(D),
         "key.weight": r.standard_normal((D, D)), "key.bias": r.standard_normal(D),
         "value.weight": r.standard_normal((D, D))}
    q, U, res = r.standard_normal((2, 3, D)), r.standard_normal((2, 3, N, D)), r.standard_normal((2, 3, D))
    R = r.standard_normal((2, 3, D))
    f = lambda: (R * FU.fusion_attention(q, U, res, p, cfg, T=1.7, ops=OPS)[0]).sum()  # noqa: E731
    c, cache = FU.fusion_attention_forward(q, U, res, p, cfg, T=1.7, ops=OPS)
    np.testing.assert_allclose(c, FU.fusion_attention(q, U, res, p, cfg, T=1.7, ops=OPS)[0], rtol=1e-10)
    dq, dU, dr, g = FU.fusion_attention_backward(R, cache, p, cfg)
    check(dq, f, q, "dq")
    check(dU, f, U, "dU")
    check(dr, f, res, "dr")
    for k, v in g.items():
        check(v, f, p[k], k)


@pytest.mark.spec("LOSS-QA")
def test_span_loss():
    r = rng(21)
    z = r.standard_normal((3, 5, 2))
    start, end = np.array([1, 9, 0]), np.array([4, 2, -3])          # 9: ignored (clamped to T = 5); -3 -> 0
    loss, g = span_loss(z, start, end)
    ls = _log_softmax(z[..., 0])
    le = _log_softmax(z[..., 1])
    want = (-(ls[0, 1] + ls[2, 0]) / 2 - (le[0, 4] + le[1, 2] + le[2, 0]) / 3) / 2
    assert loss == pytest.approx(want, rel=1e-12)
    check(g, lambda: span_loss(z, start, end)[0], z, "dz")


@pytest.mark.spec("GRAD-GATE")
def test_mean_gate_backward():
    r = rng(22)
    x, w, b = r.standard_normal((2, 4, 5)), r.standard_normal((2, 5)), r.standard_normal(2)
    R = r.standard_normal((2, 2))
    f = lambda: (R * mean_gate(x, w, b, ops=OPS)).sum()  # noqa: E731
    dx, dw, db = mean_gate_backward(R, x, w, b)
    check(dx, f, x, "dx")
    check(dw, f, w, "dW")
    check(db, f, b, "db")


@pytest.mark.spec("GRAD-PHM")
def test_kron_sum_and_factor_product_backward():

    r = rng(23)
    rule, W = r.standard_normal((2, 2, 2)), r.standard_normal((2, 3, 4))
    R = r.standard_normal((6, 8))
    f = lambda: (R * PH.kron_sum(rule, W)).sum()  # noqa: E731
    drule, dW = PH.kron_sum_backward(R, rule, W)
    check(drule, f, rule, "d rule")
    check(dW, f, W, "dW")
    left, right = r.standard_normal((2, 3, 1)), r.standard_normal((2, 1, 4))
    R2 = r.standard_normal((2, 3, 4))
    g = lambda: (R2 * PH.factor_product(left, right)).sum()  # noqa: E731
    dl, dr = PH.factor_product_backward(R2, left, right)
    check(dl, g, left, "d left")
    check(dr, g, right, "d right")


@pytest.mark.spec("GRAD-REFT")
@pytest.mark.parametrize("subtract", [True, False])
def test_reft_unit_backward(subtract):

    r = rng(24)
    h, W, b, R_ = r.standard_normal((2, 3, 5)), r.standard_normal((2, 5)), r.standard_normal(2), r.standard_normal((2, 5))
    G = r.standard_normal(h.shape)
    act = A.get_activation("tanh")
    f = lambda: (G * RF.reft_unit(h, W, b, R_, act, subtract)).sum()  # noqa: E731
    dh, dW, db, dR = RF.reft_unit_backward(G, h, W, b, R_, "tanh", subtract)
    for g, arr, n in ((dh, h, "dh"), (dW, W, "dW"), (db, b, "db"), (dR, R_, "dR")):
        check(g, f, arr, n)


@pytest.mark.spec("GRAD-INV")
def test_nice_coupling_backward():

    r = rng(25)
    E, hdim = 6, 4
    p = {}
    for pre, d_in, d_out in (("F", 3, 3), ("G", 3, 3)):
        p[pre + ".0.weight"], p[pre + ".0.bias"] = r.standard_normal((hdim, d_in)), r.standard_normal(hdim)
        p[pre + ".2.weight"], p[pre + ".2.bias"] = r.standard_normal((d_out, hdim)), r.standard_normal(d_out)
    x = r.standard_normal((2, 3, E))
    R = r.standard_normal(x.shape)
    f = lambda: (R * IV.nice_coupling(p, x, A.get_activation("relu"), ops=OPS)).sum()  # noqa: E731
    dx, g = IV.nice_coupling_backward(R, p, x, "relu", ops=OPS)
    check(dx, f, x, "dx")
    for k, v in g.items():
        check(v, f, p[k], k)


@pytest.mark.spec("GRAD-REFT")
def test_orthogonal_weight_backward():
    """Through torch's Householder map (r < D); the diagonal only feeds trunc() (a constant), so it is skipped."""
    r = rng(26)
    orig, base = RF.orthogonal_init(r.standard_normal((3, 7)), r)
    orig = orig.astype(np.float64) + 0.3 * r.standard_normal((3, 7)) * (1 - np.eye(3, 7))
    G = r.standard_normal((3, 7))
    f = lambda: (G * RF.orthogonal_weight(orig, base)).sum()  # noqa: E731
    g = RF.orthogonal_weight_backward(G, orig, base)
    num = numeric_grad(f, orig) * (1 - np.eye(3, 7))
    assert np.abs(g - num).max() <= 1e-5 * np.abs(num).max(), "Householder backward"
    assert not np.diagonal(g).any()


@pytest.mark.spec("GRAD-INV")
def test_nice_inverse_backward():
    r = rng(27)
    p = {}
    for pre in ("F", "G"):
        p[pre + ".0.weight"], p[pre + ".0.bias"] = r.standard_normal((4, 3)), r.standard_normal(4)
        p[pre + ".2.weight"], p[pre + ".2.bias"] = r.standard_normal((3, 4)), r.standard_normal(3)
    x = r.standard_normal((2, 3, 6))
    R = r.standard_normal(x.shape)
    f = lambda: (R * IV.nice_coupling(p, x, A.get_activation("tanh"), rev=True, ops=OPS)).sum()  # noqa: E731
    dx, g = IV.nice_inverse_backward(R, p, x, "tanh", ops=OPS)
    check(dx, f, x, "dx")
    for k, v in g.items():
        check(v, f, p[k], k)
