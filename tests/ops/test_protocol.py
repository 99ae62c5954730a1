"""Every backend implements the whole Ops protocol (read from ops/base.py, not listed here) and agrees with
the NumPy reference on random inputs, edge shapes included. Spec: OPS-0 .. OPS-14; tolerance: spec/ops.md
(= spec/00-notation.md, native vs NumPy: |a − e| ≤ atol + rtol·max|e|, rtol 1e-4, atol 1e-5)."""
import inspect

import numpy as np
import pytest

from minadapters.functional.activations import ACTIVATIONS
from minadapters.ops import NumpyOps, Ops, check_conforms
from minadapters.ops.base import missing_members, protocol_members

RTOL, ATOL = 1e-4, 1e-5
EXACT = (0.0, 0.0)
METHODS = [m for m in protocol_members(Ops) if m != "name"]


def f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


@pytest.fixture(params=["numpy", "native"])
def backend(request, ref):
    """Each backend class in turn (NumpyOps against itself checks the table's own plumbing)."""
    return ref if request.param == "numpy" else request.getfixturevalue("native")


# ---------------------------------------------------------------- conformance

@pytest.mark.spec("OPS-0")
def test_protocol_lists_the_declared_members():
    assert "name" in protocol_members(Ops)
    for m in METHODS:
        assert callable(getattr(Ops, m))
    assert {"linear", "matmul", "attention", "bottleneck", "sgmv_lora_add", "take", "rope"} <= set(METHODS)


@pytest.mark.spec("OPS-0")
def test_backend_implements_every_member_with_the_protocol_signature(backend):
    check_conforms(backend)
    check_conforms(type(backend))
    assert isinstance(backend, Ops) and isinstance(backend.name, str)
    for m in METHODS:
        want = list(inspect.signature(getattr(Ops, m)).parameters)[1:]          # without self
        got = list(inspect.signature(getattr(backend, m)).parameters)
        assert got == want, f"{type(backend).__name__}.{m}{got} vs Ops.{m}{want}"
        for p, q in zip(inspect.signature(getattr(Ops, m)).parameters.values(),
                        list(inspect.signature(getattr(type(backend), m)).parameters.values())):
            assert p.default == q.default, f"{type(backend).__name__}.{m}: default of {p.name}"


@pytest.mark.spec("OPS-0")
@pytest.mark.parametrize("member", protocol_members(Ops))
def test_a_backend_missing_one_member_fails_the_check(member):
    broken = type("Broken", (), {k: v for k, v in vars(NumpyOps).items() if k != member and not k.startswith("__")})
    assert missing_members(broken) == [member]
    with pytest.raises(TypeError, match=f"Broken does not implement the Ops protocol: missing {member} "):
        check_conforms(broken())
    if member != "name":                   # runtime_checkable isinstance sees methods; `name` is a class attr
        assert not isinstance(broken(), Ops)


def test_a_non_callable_method_or_non_str_name_fails_the_check():
    broken = type("Broken", (NumpyOps,), {"rope": None, "take": 3, "name": 7})
    assert missing_members(broken) == ["name", "rope", "take"]


# ---------------------------------------------------------------- agreement: op -> input builder -> tolerance
# Each case builds (args, kwargs); in-place ops get fresh copies per backend.  Shapes include 0 rows, 1 row,
# sizes off the SIMD widths and the GEMM blocks.

def _linear(rng, case):
    lead, k, m, bias = [((0,), 5, 3, True), ((1,), 1, 1, False), ((2, 7), 33, 17, True), ((97,), 129, 40, True),
                        ((3,), 0, 4, True), ((4,), 8, 0, False)][case]
    return (f32(rng, *lead, k), f32(rng, m, k), f32(rng, m) if bias else None), {}


def _matmul(rng, case):
    sa, sb = [((3, 4), (4, 5)), ((2, 3, 7, 9), (9, 6)), ((2, 3, 7, 9), (3, 9, 6)), ((5, 1, 8), (5, 8, 3)),
              ((1, 6, 4), (3, 4, 2)), ((2, 1, 3, 4), (1, 5, 4, 2)), ((0, 3, 4), (4, 2)), ((2, 0, 4), (2, 4, 3)),
              ((2, 3, 0), (2, 0, 5)), ((1, 1), (1, 1)), ((4, 97, 33), (4, 33, 65)), ((6, 1, 768), (6, 768, 3)),
              ((2, 4, 1, 3), (4, 3, 70)), ((9, 41), (41, 2))][case]
    return (f32(rng, *sa), f32(rng, *sb)), {}


def _attention(rng, case):
    B, N, Tq, Tk, Dh, mk, Nkv = [(1, 1, 1, 1, 1, 0, 1), (2, 3, 5, 7, 9, 1, 3), (2, 2, 4, 4, 8, 2, 2),
                                 (1, 2, 0, 3, 4, 1, 2), (2, 1, 3, 0, 4, 0, 1), (1, 4, 17, 33, 16, 1, 4),
                                 (2, 2, 9, 130, 64, 2, 2), (2, 6, 70, 300, 16, 2, 2),   # GQA, across blocks
                                 (1, 4, 1, 9, 8, 1, 1)][case]                          # MQA, one query (decode)
    q, k, v = f32(rng, B, N, Tq, Dh), f32(rng, B, Nkv, Tk, Dh), f32(rng, B, Nkv, Tk, Dh)
    mask = None
    if mk == 1:                                                        # padding mask (B, 1, 1, Tk)
        mask = np.where(rng.random((B, 1, 1, Tk)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
    elif mk == 2:                                                      # causal (1, 1, Tq, Tk), one row all masked
        mask = np.triu(np.full((Tq, Tk), np.finfo(np.float32).min, np.float32), 1)[None, None]
        mask[..., 0, :] = np.finfo(np.float32).min
    return (q, k, v, mask), {}


def _rows(rng, case):
    return [(0, 8), (1, 1), (5, 7), (3, 9), (4, 33), (2, 300), (7, 768)][case]


def _softmax(rng, case):
    rows, n = _rows(rng, case)
    return (f32(rng, rows, n, scale=4),), {}


def _layer_norm(rng, case):
    rows, n = _rows(rng, case)
    return (f32(rng, 2, rows, n, scale=3), f32(rng, n), f32(rng, n) if case % 2 else None, 1e-5), {}


def _rms_norm(rng, case):
    rows, n = _rows(rng, case)
    return (f32(rng, rows, n, scale=3), f32(rng, n), 1e-6), {}


ACT_NAMES = sorted(ACTIVATIONS) + [None]


def _activation(rng, case):
    return (ACT_NAMES[case], f32(rng, 3, 37, scale=4)), {}


def _bottleneck(rng, case):
    rows, d, r = [(0, 8, 2), (1, 1, 1), (13, 20, 3), (9, 33, 16), (2, 64, 8)][case % 5]
    act = ACT_NAMES[case % len(ACT_NAMES)]
    scale = [1.0, 0.5, np.float32(2.0), np.array(0.25, np.float32), np.array([1.5], np.float32)][case % 5]
    bias = case % 3 != 0
    return (f32(rng, 2, rows, d), f32(rng, r, d), f32(rng, r) if bias else None, f32(rng, d, r),
            f32(rng, d) if bias else None), {"scale": scale, "non_linearity": act}


def _lora_add(rng, case):
    lead, k, r, m = [((0,), 4, 2, 3), ((1,), 1, 1, 1), ((2, 13), 20, 3, 11), ((30,), 64, 8, 33), ((6,), 9, 0, 5),
                     ((7,), 0, 2, 4)][case]
    return (f32(rng, *lead, m), f32(rng, *lead, k), f32(rng, r, k), f32(rng, m, r), [1.5, 0.25][case % 2]), {}


def _sgmv_lora_add(rng, case):
    rows, k, r, m = [(0, 4, 2, 3), (1, 1, 1, 1), (13, 20, 3, 11), (30, 64, 8, 33), (13, 20, 3, 11),
                     (64, 96, 4, 70)][case]
    starts = [0, rows // 3, rows // 3, rows // 2, rows]                # an empty segment
    ads = [1, 0, -1, 0]
    if case >= 4:                                                      # per-adapter arrays, mixed ranks
        return (f32(rng, rows, m), f32(rng, rows, k), [f32(rng, r, k), f32(rng, r + 5, k)],
                [f32(rng, m, r), f32(rng, m, r + 5)], starts, ads, [0.5, 2.0]), {}
    return (f32(rng, rows, m), f32(rng, rows, k), f32(rng, 2, r, k), f32(rng, 2, m, r), starts, ads,
            [0.5, 2.0]), {}


def _concat(rng, case):
    shapes, axis = [([(2, 3), (4, 3)], 0), ([(2, 3, 4), (2, 1, 4), (2, 0, 4)], 1), ([(2, 3), (2, 5)], -1),
                    ([(0, 3), (1, 3)], 0)][case]
    return ([f32(rng, *s) for s in shapes], axis), {}


def _take(rng, case):
    v, d, ids = [(10, 4, np.array([[0, 9, 3], [3, 3, 1]])), (1, 1, np.zeros((2, 0), np.int64)),
                 (50, 33, np.arange(50, dtype=np.int32)), (7, 5, np.array(6))][case]
    return (f32(rng, v, d), ids), {}


def _rope(rng, case):
    B, N, T, Dh, shared = [(1, 1, 1, 2, False), (2, 3, 5, 8, False), (1, 2, 7, 9, False), (2, 4, 3, 64, True),
                           (0, 2, 3, 4, False), (3, 2, 0, 4, False)][case]
    cs = (1 if shared else B, T, Dh)
    return (f32(rng, B, N, T, Dh, scale=3), f32(rng, *cs), f32(rng, *cs)), {}


def _repeat_batch(rng, case):
    shape, n = [((2, 3), 1), ((2, 3, 4), 3), ((0, 5), 2), ((1,), 4)][case]
    return (f32(rng, *shape), n), {}


# op -> (builder, number of cases, (rtol, atol), index of the array updated in place or None)
OPS = {
    "linear": (_linear, 6, (RTOL, ATOL), None),
    "matmul": (_matmul, 14, (RTOL, ATOL), None),
    "attention": (_attention, 9, (RTOL, ATOL), None),
    "softmax": (_softmax, 7, (RTOL, ATOL), None),
    "layer_norm": (_layer_norm, 7, (RTOL, ATOL), None),
    "rms_norm": (_rms_norm, 7, (RTOL, ATOL), None),
    "activation": (_activation, len(ACT_NAMES), (RTOL, ATOL), None),
    "bottleneck": (_bottleneck, len(ACT_NAMES), (RTOL, ATOL), None),
    "lora_add": (_lora_add, 6, (RTOL, ATOL), 0),
    "sgmv_lora_add": (_sgmv_lora_add, 6, (RTOL, ATOL), 0),
    "concat": (_concat, 4, EXACT, None),
    "take": (_take, 4, EXACT, None),
    "rope": (_rope, 6, EXACT, None),
    "repeat_batch": (_repeat_batch, 4, EXACT, None),
}
CASES = [(op, i) for op, (_, n, _, _) in OPS.items() for i in range(n)]


def test_the_op_table_covers_every_protocol_method():
    assert sorted(OPS) == sorted(METHODS)


def _call(ops, op, args, kwargs, inplace):
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    if op == "activation":
        return ops.activation(args[0])(args[1]), None
    out = getattr(ops, op)(*args, **kwargs)
    if inplace is not None:
        assert out is args[inplace], f"{op} must update its argument {inplace} in place and return it"
    return out, args


@pytest.mark.spec("OPS-0")
@pytest.mark.parametrize("op, case", CASES, ids=[f"{op}-{i}" for op, i in CASES])
def test_backend_agrees_with_numpy(backend, ref, op, case):
    build, _, (rtol, atol), inplace = OPS[op]
    args, kwargs = build(np.random.default_rng(1000 + case), case)
    want, _ = _call(ref, op, args, kwargs, inplace)
    got, _ = _call(backend, op, args, kwargs, inplace)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32, (type(got), getattr(got, "dtype", None))
    assert got.shape == want.shape
    if rtol == atol == 0:
        np.testing.assert_array_equal(got, want)
    elif want.size:
        err = np.max(np.abs(got.astype(np.float64) - want))
        assert err <= atol + rtol * np.max(np.abs(want)), f"{op} case {case}: max error {err:g}"


# ---------------------------------------------------------------- the NumPy references are the unfused ops

def test_fused_references_equal_the_unfused_composition(ref):
    rng = np.random.default_rng(5)
    x, wd, bd, wu, bu = f32(rng, 2, 6, 10), f32(rng, 3, 10), f32(rng, 3), f32(rng, 10, 3), f32(rng, 10)
    unfused = ref.linear(ref.activation("gelu")(ref.linear(x, wd, bd)), wu, bu) * np.float32(0.5)
    np.testing.assert_array_equal(ref.bottleneck(x, wd, bd, wu, bu, 0.5, "gelu"), unfused)
    a, b, y = f32(rng, 4, 10), f32(rng, 7, 4), f32(rng, 2, 6, 7)
    want = y + ref.linear(ref.linear(x, a), b) * np.float32(2.0)
    np.testing.assert_array_equal(ref.lora_add(y.copy(), x, a, b, 2.0), want)
    seg = ref.sgmv_lora_add(y.reshape(12, 7).copy(), x.reshape(12, 10), np.stack([a, 2 * a]), np.stack([b, b]),
                            [0, 5, 12], [1, -1], [1.0, 2.0])
    np.testing.assert_array_equal(seg[5:], y.reshape(12, 7)[5:])
    np.testing.assert_array_equal(seg[:5], ref.lora_add(y.reshape(12, 7)[:5].copy(), x.reshape(12, 10)[:5],
                                                        2 * a, b, 2.0))


@pytest.mark.spec("OPS-13")
def test_rope_equals_the_decoder_helper(backend):
    from minadapters.models.decoder_common import apply_rope
    for case in (1, 2, 3):                                  # even and odd Dh, cos/sin shared over the batch
        args, _ = _rope(np.random.default_rng(3), case)
        np.testing.assert_array_equal(backend.rope(*args), apply_rope(*args))


@pytest.mark.spec("OPS-11")
def test_concat_is_numpy_concatenate(backend):
    rng = np.random.default_rng(4)
    parts = [f32(rng, 2, 1, 4), f32(rng, 2, 3, 4)]
    np.testing.assert_array_equal(backend.concat(parts, 1), np.concatenate(parts, 1))
    np.testing.assert_array_equal(backend.concat(tuple(parts), -2), np.concatenate(parts, 1))
    with pytest.raises(ValueError):
        backend.concat([f32(rng, 2, 3), f32(rng, 3, 2)], 0)


# ---------------------------------------------------------------- errors and argument forms, both backends

@pytest.mark.spec("OPS-12")
def test_take_raises_index_error_naming_the_range(backend):
    table = np.zeros((5, 3), np.float32)
    for bad in (5, -1):
        with pytest.raises(IndexError, match=rf"take: id {bad} is outside \[0, 5\)"):
            backend.take(table, np.array([0, bad]))
    with pytest.raises(TypeError, match="integer"):
        backend.take(table, np.array([0.0, 1.0]))


@pytest.mark.spec("OPS-14")
def test_repeat_batch_is_channel_major_and_checks_n(backend):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(backend.repeat_batch(x, 3), np.concatenate([x, x, x], 0))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="repeat_batch: n="):
            backend.repeat_batch(x, bad)


@pytest.mark.spec("OPS-10")
def test_matmul_shape_errors(backend):
    with pytest.raises(ValueError):
        backend.matmul(np.ones((2, 3, 4), np.float32), np.ones((5, 2), np.float32))
    with pytest.raises(ValueError):
        backend.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 2), np.float32))


@pytest.mark.spec("OPS-7")
def test_bottleneck_scale_forms_and_bad_scale(backend, ref):
    rng = np.random.default_rng(9)
    x, wd, wu = f32(rng, 4, 6), f32(rng, 2, 6), f32(rng, 6, 2)
    want = ref.bottleneck(x, wd, None, wu, None, 0.5, "relu")
    for s in (0.5, np.float32(0.5), np.array(0.5), np.array([0.5], np.float32)):
        np.testing.assert_allclose(backend.bottleneck(x, wd, None, wu, None, s, "relu"), want, rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="scale has shape"):
        backend.bottleneck(x, wd, None, wu, None, np.ones(2, np.float32), "relu")
    with pytest.raises(ValueError, match="not a known activation"):
        backend.bottleneck(x, wd, None, wu, None, 1.0, "nope")
    with pytest.raises(ValueError, match="bottleneck: wu"):
        backend.bottleneck(x, wd, None, wu.T.copy(), None, 1.0, "relu")


def test_float64_stays_float64(backend, ref):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    assert backend.linear(x, w).dtype == np.float64
    assert backend.matmul(x, w.T).dtype == np.float64
    assert backend.bottleneck(x, w[:2], None, w[:2].T.copy(), None, 1.0, "gelu").dtype == np.float64
    np.testing.assert_allclose(backend.matmul(x, w.T), ref.matmul(x, w.T), rtol=1e-12)
