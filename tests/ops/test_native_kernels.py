"""NativeOps and the C kernels against NumPy references (spec/ops.md tolerance table)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minadapters.functional import activations as act

pytestmark = pytest.mark.native
SET = settings(max_examples=40, deadline=None)
dims = st.one_of(st.integers(0, 3), st.integers(1, 70), st.sampled_from([8, 16, 31, 97, 129, 257]))
pos = st.one_of(st.integers(1, 40), st.sampled_from([7, 8, 9, 33, 64, 130, 300]))


def arr(seed, *shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def gemm_close(y, x, w, b=None, rtol=1e-4):
    """|y - x wᵀ - b| <= rtol (|x| |w|ᵀ + |b|): the natural float32 GEMM error bound."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = x64 @ w64.T + (0 if b is None else b)
    bound = rtol * (np.abs(x64) @ np.abs(w64).T + (0 if b is None else np.abs(b))) + 1e-30
    assert y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= bound), float(np.max(np.abs(y - ref) - bound))


@pytest.fixture(scope="module")
def nat(native):
    from minadapters.ops import native as mod
    return mod


@pytest.mark.spec("OPS-1")
@SET
@given(rows=dims, k=dims, m=dims, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_all_isas(nat, rows, k, m, bias, seed):
    x, w, b = arr(seed, rows, k), arr(seed + 1, m, k), arr(seed + 2, m) if bias else None
    lib, ffi = nat.lib, nat.ffi
    isas = [lib.MA_ISA_PORTABLE] + ([lib.MA_ISA_AVX2] if lib.ma_cpu_features() & 1 else []) \
        + ([lib.MA_ISA_AVX512] if lib.ma_cpu_features() & 2 else [])
    for isa in isas:
        y = np.full((rows, m), np.nan, np.float32)
        st_ = lib.ma_linear_f32_isa(nat._ptr(y), nat._ptr(x), nat._ptr(w), nat._ptr(b), rows, k, m, isa)
        assert st_ == 0
        gemm_close(y, x, w, b)


@pytest.mark.spec("OPS-1")
@SET
@given(lead=st.lists(st.integers(0, 5), min_size=0, max_size=2), k=pos, m=pos, seed=st.integers(0, 2**16))
def test_linear_ops(native, lead, k, m, seed):
    x, w, b = arr(seed, *lead, k), arr(seed + 1, m, k), arr(seed + 2, m)
    y = native.linear(x, w, b)
    assert y.dtype == np.float32 and y.shape == tuple(lead) + (m,)
    gemm_close(y.reshape(-1, m), x.reshape(-1, k), w, b)


@pytest.mark.spec("OPS-1")
def test_linear_k0_is_bias_and_noncontiguous_x(native):
    b = arr(0, 5)
    np.testing.assert_array_equal(native.linear(np.zeros((3, 0), np.float32), np.zeros((5, 0), np.float32), b),
                                  np.broadcast_to(b, (3, 5)))
    x = arr(1, 4, 9, 6)[:, ::2, 1:5]                     # strided view
    w = arr(2, 3, 4)
    gemm_close(native.linear(x, w).reshape(-1, 3), np.ascontiguousarray(x).reshape(-1, 4), w)


def attention_ref(q, k, v, mask):
    q, k, v = (t.astype(np.float64) for t in (q, k, v))
    if k.shape[-2] == 0:                                  # no keys: an empty weighted sum (OPS-2 edge case)
        return np.zeros(q.shape)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.spec("OPS-2")
@SET
@given(B=st.integers(1, 3), N=st.integers(1, 4), tq=st.integers(1, 20), tk=st.integers(0, 40),
       dh=st.sampled_from([1, 3, 8, 16, 17, 64]), mask_kind=st.sampled_from(["none", "keys", "full", "per_q"]),
       seed=st.integers(0, 2**16))
def test_attention(native, B, N, tq, tk, dh, mask_kind, seed):
    q, k, v = arr(seed, B, N, tq, dh), arr(seed + 1, B, N, tk, dh), arr(seed + 2, B, N, tk, dh)
    rng = np.random.default_rng(seed)
    mask = {"none": None,
            "keys": np.where(rng.random((B, 1, 1, tk)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32),
            "full": arr(seed + 3, B, N, tq, tk),
            "per_q": arr(seed + 4, B, 1, tq, tk)}[mask_kind]
    out = native.attention(q, k, v, mask)
    assert out.shape == (B, N, tq, dh) and out.dtype == np.float32
    np.testing.assert_allclose(out, attention_ref(q, k, v, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.spec("OPS-2")
def test_attention_strided_heads_and_fully_masked_row(native, ref):
    x = arr(0, 2, 5, 3 * 16)                              # (B, T, 3 * D) as a fused qkv projection
    q, k, v = (x[..., i * 16:(i + 1) * 16].reshape(2, 5, 2, 8).transpose(0, 2, 1, 3) for i in range(3))
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[1] = np.finfo(np.float32).min                    # every key masked in batch 1: uniform weights
    np.testing.assert_allclose(native.attention(q, k, v, mask), ref.attention(q, k, v, mask), rtol=1e-4, atol=1e-6)


@pytest.mark.spec("OPS-3")
@SET
@given(rows=st.integers(0, 9), n=pos, scale=st.sampled_from([0.1, 1.0, 30.0]), seed=st.integers(0, 2**16))
def test_softmax(native, ref, rows, n, scale, seed):
    x = arr(seed, rows, n, scale=scale)
    np.testing.assert_allclose(native.softmax(x), ref.softmax(x.astype(np.float64)), rtol=1e-4, atol=1e-7)


@pytest.mark.spec("OPS-4")
@SET
@given(rows=st.integers(0, 9), n=pos, bias=st.booleans(), shift=st.sampled_from([0.0, 100.0]),
       seed=st.integers(0, 2**16))
def test_layer_norm(native, ref, rows, n, bias, shift, seed):
    x, g = arr(seed, rows, n) + np.float32(shift), arr(seed + 1, n)
    b = arr(seed + 2, n) if bias else None
    want = ref.layer_norm(x.astype(np.float64), g.astype(np.float64), b, 1e-5)
    np.testing.assert_allclose(native.layer_norm(x, g, b, 1e-5), want, rtol=1e-4, atol=1e-5)


@pytest.mark.spec("OPS-5")
@SET
@given(rows=st.integers(0, 9), n=pos, seed=st.integers(0, 2**16))
def test_rms_norm(native, ref, rows, n, seed):
    x, g = arr(seed, rows, n), arr(seed + 1, n)
    want = ref.rms_norm(x.astype(np.float64), g.astype(np.float64), 1e-6)
    np.testing.assert_allclose(native.rms_norm(x, g, 1e-6), want, rtol=1e-4, atol=1e-6)


NATIVE_ACTS = ["relu", "gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_accurate", "gelu_fast",
               "silu", "swish", "quick_gelu", "sigmoid"]


@pytest.mark.spec("OPS-6")
@pytest.mark.parametrize("name", sorted(act.ACTIVATIONS))
@SET
@given(n=st.integers(0, 70), scale=st.sampled_from([0.5, 3.0, 12.0]), seed=st.integers(0, 2**16))
def test_activations(native, name, n, scale, seed):
    x = arr(seed, n, scale=scale)
    fn = native.activation(name)
    assert fn.__name__.startswith("native_") == (name in NATIVE_ACTS)
    want = act.get_activation(name)(x.astype(np.float64))
    np.testing.assert_allclose(fn(x), want, rtol=1e-4, atol=1e-6)


@pytest.mark.spec("OPS-6")
def test_gelu_exact_within_1e6_abs(native):
    x = np.linspace(-20, 20, 400_001, dtype=np.float32)
    assert np.max(np.abs(native.activation("gelu")(x) - act.gelu(x))) <= 1e-6
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    got = native.activation("gelu")(special)
    assert np.isnan(got[0]) and got[1] == np.inf and got[3] == 0 and got[4] == 0


@pytest.mark.spec("OPS-6")
def test_activation_float64_uses_numpy(native):
    x = np.linspace(-3, 3, 11)
    y = native.activation("gelu")(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, act.gelu(x))


@pytest.mark.spec("OPS-7")
@SET
@given(rows=dims, d=pos, r=st.integers(1, 20), nl=st.sampled_from(["relu", "gelu", "silu", "tanh", None]),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_bottleneck(native, rows, d, r, nl, bias, seed):
    x, wd, wu = arr(seed, rows, d), arr(seed + 1, r, d), arr(seed + 2, d, r)
    bd, bu = (arr(seed + 3, r), arr(seed + 4, d)) if bias else (None, None)
    h = act.get_activation(nl)(x.astype(np.float64) @ wd.T + (0 if bd is None else bd))
    want = 0.7 * (h @ wu.T + (0 if bu is None else bu))
    got = native.bottleneck(x, wd, bd, wu, bu, scale=0.7, non_linearity=nl)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.sqrt(d * r))


@pytest.mark.spec("OPS-8")
@SET
@given(rows=dims, k=pos, r=st.integers(0, 16), m=pos, seed=st.integers(0, 2**16))
def test_lora_add(native, rows, k, r, m, seed):
    x, a, b, y0 = arr(seed, rows, k), arr(seed + 1, r, k), arr(seed + 2, m, r), arr(seed + 3, rows, m)
    want = y0 + 0.5 * ((x.astype(np.float64) @ a.T) @ b.T)
    y = y0.copy()
    assert native.lora_add(y, x, a, b, 0.5) is y
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=2e-5 * np.sqrt(k * max(r, 1)))


@pytest.mark.spec("OPS-9")
@SET
@given(sizes=st.lists(st.integers(0, 40), min_size=0, max_size=6), n_ad=st.integers(1, 4), k=pos, m=pos,
       r=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_sgmv(native, sizes, n_ad, k, m, r, seed):
    rng = np.random.default_rng(seed)
    rows = sum(sizes)
    seg_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    seg_ad = rng.integers(-1, n_ad, len(sizes))
    x, a, b = arr(seed, rows, k), arr(seed + 1, n_ad, r, k), arr(seed + 2, n_ad, m, r)
    scales, y0 = rng.random(n_ad).astype(np.float32), arr(seed + 3, rows, m)
    want = y0.astype(np.float64)
    for s, ad in enumerate(seg_ad):
        sl = slice(seg_start[s], seg_start[s + 1])
        if ad >= 0:
            want[sl] += scales[ad] * ((x[sl].astype(np.float64) @ a[ad].T) @ b[ad].T)
    y = native.sgmv_lora_add(y0.copy(), x, a, b, seg_start, seg_ad, scales)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=2e-5 * np.sqrt(k * r))


def test_float64_inputs_take_the_numpy_path(native, ref):
    x, w, b = np.ones((2, 3)), np.ones((4, 3)), np.ones(4)
    assert native.linear(x, w, b).dtype == np.float64
    assert native.softmax(np.ones((2, 3))).dtype == np.float64
    assert native.layer_norm(np.ones((2, 3)), np.ones(3), np.zeros(3), 1e-5).dtype == np.float64
    q = np.ones((1, 1, 2, 4), np.float32)
    m64 = np.zeros((1, 1, 1, 2))                          # a float64 mask promotes, exactly as NumPy does
    assert native.attention(q, q, q, m64).dtype == ref.attention(q, q, q, m64).dtype == np.float64
    x3 = arr(0, 2, 3, 4)
    np.testing.assert_allclose(native.softmax(x3, axis=1), ref.softmax(x3, axis=1), rtol=1e-6)
