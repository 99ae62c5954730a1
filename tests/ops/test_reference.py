"""The C scalar references (native/src/reference.c, reached through cffi) against NumpyOps, and the optimised
kernels against them from Python.  These are what a device kernel will be tested against, so they must hold
the spec's equations themselves.  Spec: spec/ops.md (the C reference rule); tolerance rtol 1e-4, atol 1e-5 of
max|expected| (spec/00-notation.md)."""
import numpy as np
import pytest

pytestmark = pytest.mark.native
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def nat(native):
    from minadapters.ops import native as mod
    return mod


def f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def close(got, want, exact=False):
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    elif want.size:
        err = float(np.max(np.abs(got.astype(np.float64) - want)))
        assert err <= ATOL + RTOL * float(np.max(np.abs(want))), err


def _linear(nat, ref, rng):
    for rows, k, m in [(0, 3, 2), (1, 1, 1), (7, 33, 17), (5, 0, 3)]:
        x, w, b = f32(rng, rows, k), f32(rng, m, k), f32(rng, m)
        y = np.full((rows, m), np.nan, np.float32)
        assert nat.lib.ma_ref_linear_f32(nat._ptr(y), nat._ptr(x), nat._ptr(w), nat._ptr(b), rows, k, m) == 0
        close(y, ref.linear(x, w, b))


def _matmul(nat, ref, rng):
    for batch, m, k, n, sa, sb in [(1, 4, 5, 3, 1, 1), (3, 2, 7, 5, 1, 0), (3, 2, 7, 5, 0, 1), (0, 2, 2, 2, 1, 1)]:
        a = f32(rng, batch if sa else 1, m, k)
        b = f32(rng, batch if sb else 1, k, n)
        bias = f32(rng, n)
        y = np.full((batch, m, n), np.nan, np.float32)
        st = nat.lib.ma_ref_matmul_f32(nat._ptr(y), nat._ptr(a), nat._ptr(b), nat._ptr(bias), batch, m, k, n,
                                       sa * m * k, sb * k * n)
        assert st == 0
        close(y, ref.matmul(a, b) + bias if batch else y)


def _attention(nat, ref, rng):
    for B, N, Tq, Tk, Dh in [(2, 3, 5, 7, 9), (1, 1, 1, 1, 1), (1, 2, 4, 0, 4)]:
        q, k, v = f32(rng, B, N, Tq, Dh), f32(rng, B, N, Tk, Dh), f32(rng, B, N, Tk, Dh)
        mask = np.where(rng.random((B, 1, 1, Tk)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
        out = np.full(q.shape, np.nan, np.float32)
        m4 = np.ascontiguousarray(np.broadcast_to(mask, (B, N, Tq, Tk)))
        strides = [s // 4 for t in (out, q, k, v, m4) for s in t.strides[:3]]
        st = nat.lib.ma_ref_attention_f32(nat._ptr(out), nat._ptr(q), nat._ptr(k), nat._ptr(v), nat._ptr(m4),
                                          nat.ffi.new("int64_t[15]", strides), B, N, Tq, Tk, Dh,
                                          float(1 / np.sqrt(np.float32(Dh))))
        assert st == 0
        close(out, ref.attention(q, k, v, mask))


def _attention_ex(nat, ref, rng):
    """ma_ref_attention_ex_f32 (GQA, causal, sliding window) vs NumpyOps with the same rules as an additive mask."""
    for B, N, Nkv, Tq, Tk, Dh, causal, window in [(2, 4, 2, 5, 7, 9, 1, 3), (1, 3, 1, 4, 4, 8, 0, 0),
                                                   (1, 2, 2, 3, 6, 4, 1, 0), (2, 6, 3, 1, 11, 8, 1, 4)]:
        q, k, v = f32(rng, B, N, Tq, Dh), f32(rng, B, Nkv, Tk, Dh), f32(rng, B, Nkv, Tk, Dh)
        mask = np.where(rng.random((B, 1, 1, Tk)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
        mask[..., -1] = 0                                      # the newest key is always visible
        pos = Tk - Tq + np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        seen = ((j <= pos) if causal else np.ones((Tq, Tk), bool)) & ((j > pos - window) if window else True)
        full = np.where(seen, mask, -np.inf).astype(np.float32)      # (B, 1, Tq, Tk): unseen keys weigh 0
        out = np.full(q.shape, np.nan, np.float32)
        m4 = np.ascontiguousarray(np.broadcast_to(mask, (B, N, Tq, Tk)))
        strides = [s // 4 for t in (out, q, k, v, m4) for s in t.strides[:3]]
        st = nat.lib.ma_ref_attention_ex_f32(nat._ptr(out), nat._ptr(q), nat._ptr(k), nat._ptr(v), nat._ptr(m4),
                                             nat.ffi.new("int64_t[15]", strides), B, N, Nkv, Tq, Tk, Dh,
                                             float(1 / np.sqrt(np.float32(Dh))), causal, window)
        assert st == 0
        close(out, ref.attention(q, k, v, full))


def _softmax(nat, ref, rng):
    for rows, n in [(0, 4), (1, 1), (5, 37)]:
        x, y = f32(rng, rows, n, scale=4), np.full((rows, n), np.nan, np.float32)
        assert nat.lib.ma_ref_softmax_f32(nat._ptr(y), nat._ptr(x), rows, n) == 0
        close(y, ref.softmax(x))


def _layer_norm(nat, ref, rng):
    for rows, n, with_b in [(3, 37, True), (1, 1, False), (0, 5, True)]:
        x, g, b = f32(rng, rows, n, scale=3), f32(rng, n), f32(rng, n) if with_b else None
        y = np.full((rows, n), np.nan, np.float32)
        assert nat.lib.ma_ref_layer_norm_f32(nat._ptr(y), nat._ptr(x), nat._ptr(g), nat._ptr(b), rows, n, 1e-5) == 0
        close(y, ref.layer_norm(x, g, b, 1e-5))


def _rms_norm(nat, ref, rng):
    for rows, n in [(3, 37), (1, 1)]:
        x, g, y = f32(rng, rows, n, scale=3), f32(rng, n), np.full((rows, n), np.nan, np.float32)
        assert nat.lib.ma_ref_rms_norm_f32(nat._ptr(y), nat._ptr(x), nat._ptr(g), rows, n, 1e-6) == 0
        close(y, ref.rms_norm(x, g, 1e-6))


_ACT = {"identity": None, "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu",
        "quick_gelu": "quick_gelu", "sigmoid": "sigmoid"}


def _activation(nat, ref, rng):
    x = f32(rng, 301, scale=6)
    for code, name in _ACT.items():
        y = np.full_like(x, np.nan)
        assert nat.lib.ma_ref_activation_f32(nat._ptr(y), nat._ptr(x), x.size, getattr(nat.lib, f"MA_ACT_{code.upper()}")) == 0
        close(y, ref.activation(name)(x))
    assert nat.lib.ma_ref_activation_f32(nat._ptr(y), nat._ptr(x), x.size, 99) == nat.lib.MA_ERR_ARG


def _bottleneck(nat, ref, rng):
    for rows, d, r, code, name in [(9, 20, 3, "GELU", "gelu"), (1, 1, 1, "RELU", "relu"), (0, 4, 2, "SILU", "silu")]:
        x, wd, bd, wu, bu = f32(rng, rows, d), f32(rng, r, d), f32(rng, r), f32(rng, d, r), f32(rng, d)
        y = np.full((rows, d), np.nan, np.float32)
        st = nat.lib.ma_ref_bottleneck_f32(*(nat._ptr(t) for t in (y, x, wd, bd, wu, bu)), rows, d, r, 0.75,
                                           getattr(nat.lib, f"MA_ACT_{code}"))
        assert st == 0
        close(y, ref.bottleneck(x, wd, bd, wu, bu, 0.75, name))


def _lora_add(nat, ref, rng):
    for rows, k, r, m in [(13, 20, 3, 11), (1, 1, 1, 1), (4, 5, 0, 3)]:
        x, a, b, y0 = f32(rng, rows, k), f32(rng, r, k), f32(rng, m, r), f32(rng, rows, m)
        y = y0.copy()
        assert nat.lib.ma_ref_lora_add_f32(*(nat._ptr(t) for t in (y, x, a, b)), rows, k, r, m, 1.5) == 0
        close(y, ref.lora_add(y0.copy(), x, a, b, 1.5))


def _sgmv_lora_add(nat, ref, rng):
    rows, k, r, m = 12, 9, 2, 5
    x, a, b, y0 = f32(rng, rows, k), f32(rng, 2, r, k), f32(rng, 2, m, r), f32(rng, rows, m)
    starts, ads, scales = np.array([0, 4, 4, 12]), np.array([1, 0, -1]), np.array([0.5, 2.0], np.float32)
    y = y0.copy()
    st = nat.lib.ma_ref_sgmv_lora_add_f32(*(nat._ptr(t) for t in (y, x, a, b)),
                                          nat.ffi.from_buffer("int64_t[]", starts),
                                          nat.ffi.from_buffer("int64_t[]", ads), nat._ptr(scales), rows, k, r, m, 3, 2)
    assert st == 0
    close(y, ref.sgmv_lora_add(y0.copy(), x, a, b, starts, ads, scales))
    bad = np.array([0, 13, 13, 12])
    assert nat.lib.ma_ref_sgmv_lora_add_f32(*(nat._ptr(t) for t in (y, x, a, b)),
                                            nat.ffi.from_buffer("int64_t[]", bad),
                                            nat.ffi.from_buffer("int64_t[]", ads), nat._ptr(scales),
                                            rows, k, r, m, 3, 2) == nat.lib.MA_ERR_ARG


def _sgmv_lora_add_ptr(nat, ref, rng):
    """Pointer form, mixed ranks (2 and 5), vs NumpyOps over the same per-adapter arrays."""
    rows, k, m = 12, 9, 5
    x, y0 = f32(rng, rows, k), f32(rng, rows, m)
    a, b = [f32(rng, 2, k), f32(rng, 5, k)], [f32(rng, m, 2), f32(rng, m, 5)]
    starts, ads, scales = np.array([0, 4, 4, 12]), np.array([1, 0, -1]), np.array([0.5, 2.0], np.float32)
    ranks = np.array([2, 5], np.int64)
    y = y0.copy()
    st = nat.lib.ma_ref_sgmv_lora_add_ptr_f32(nat._ptr(y), nat._ptr(x),
                                              nat.ffi.new("float *[]", [nat._ptr(t) for t in a]),
                                              nat.ffi.new("float *[]", [nat._ptr(t) for t in b]),
                                              nat.ffi.from_buffer("int64_t[]", ranks),
                                              nat.ffi.from_buffer("int64_t[]", starts),
                                              nat.ffi.from_buffer("int64_t[]", ads), nat._ptr(scales), rows, k, m, 3, 2)
    assert st == 0
    close(y, ref.sgmv_lora_add(y0.copy(), x, a, b, starts, ads, scales))


def _rope(nat, ref, rng):
    for B, N, T, Dh, shared in [(2, 3, 5, 8, False), (1, 2, 7, 9, False), (2, 2, 3, 4, True)]:
        x = f32(rng, B, N, T, Dh, scale=3)
        c, s = f32(rng, 1 if shared else B, T, Dh), f32(rng, 1 if shared else B, T, Dh)
        y = np.full_like(x, np.nan)
        assert nat.lib.ma_ref_rope_f32(*(nat._ptr(t) for t in (y, x, c, s)), B, N, T, Dh, 0 if shared else T * Dh) == 0
        close(y, ref.rope(x, c, s), exact=True)


REFERENCES = {"ma_ref_linear_f32": _linear, "ma_ref_matmul_f32": _matmul, "ma_ref_attention_f32": _attention,
              "ma_ref_attention_ex_f32": _attention_ex,
              "ma_ref_softmax_f32": _softmax, "ma_ref_layer_norm_f32": _layer_norm, "ma_ref_rms_norm_f32": _rms_norm,
              "ma_ref_activation_f32": _activation, "ma_ref_bottleneck_f32": _bottleneck,
              "ma_ref_lora_add_f32": _lora_add, "ma_ref_sgmv_lora_add_f32": _sgmv_lora_add,
              "ma_ref_sgmv_lora_add_ptr_f32": _sgmv_lora_add_ptr,
              "ma_ref_rope_f32": _rope}


def test_every_kernel_has_a_reference_and_every_reference_a_test(nat):
    names = set(dir(nat.lib))
    refs = {n for n in names if n.startswith("ma_ref_")}
    assert refs == set(REFERENCES)
    kernels = {n for n in names if n.startswith("ma_") and n.endswith("_f32") and not n.startswith("ma_ref_")}
    assert {"ma_ref_" + n[3:] for n in kernels} == refs


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_c_reference_matches_numpy(nat, ref, name):
    REFERENCES[name](nat, ref, np.random.default_rng(len(name)))
