"""The C boundary: statuses for NULL / negative / overflowing / invalid arguments, ABI check, availability."""
import sys

import numpy as np
import pytest

import minadapters
import minadapters.ops
from minadapters.errors import BackendUnavailableError, ShapeError
from minadapters.ops import get_ops

pytestmark = pytest.mark.native


@pytest.fixture(scope="module")
def nat(native):
    from minadapters.ops import native as mod
    return mod


def test_strerror_names_every_status(nat):
    lib, ffi = nat.lib, nat.ffi
    texts = {ffi.string(lib.ma_strerror(s)).decode() for s in range(7)}
    assert len(texts) == 7 and "unknown status code" not in texts
    assert ffi.string(lib.ma_strerror(99)).decode() == "unknown status code"


def test_linear_rejects_null_negative_overflow_and_bad_isa(nat):
    lib, ffi = nat.lib, nat.ffi
    y, x, w = (np.zeros((2, 2), np.float32) for _ in range(3))
    P = nat._ptr
    assert lib.ma_linear_f32(ffi.NULL, P(x), P(w), ffi.NULL, 2, 2, 2) == lib.MA_ERR_NULL
    assert lib.ma_linear_f32(P(y), P(x), ffi.NULL, ffi.NULL, 2, 2, 2) == lib.MA_ERR_NULL
    assert lib.ma_linear_f32(P(y), P(x), P(w), ffi.NULL, -1, 2, 2) == lib.MA_ERR_SIZE
    assert lib.ma_linear_f32(P(y), P(x), P(w), ffi.NULL, 2, 2, -3) == lib.MA_ERR_SIZE
    assert lib.ma_linear_f32(P(y), P(x), P(w), ffi.NULL, 2**40, 2**40, 2) == lib.MA_ERR_OVERFLOW
    assert lib.ma_linear_f32_isa(P(y), P(x), P(w), ffi.NULL, 2, 2, 2, 77) == lib.MA_ERR_ARG
    # zero-size buffers may be NULL: the result is defined (nothing to write)
    assert lib.ma_linear_f32(ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, 0, 0, 0) == lib.MA_OK


def test_other_kernels_reject_bad_arguments(nat):
    lib, ffi, P = nat.lib, nat.ffi, nat._ptr
    a = np.ones(16, np.float32)
    assert lib.ma_activation_f32(P(a), P(a), 16, 42) == lib.MA_ERR_ARG
    assert lib.ma_activation_f32(P(a), ffi.NULL, 16, lib.MA_ACT_GELU) == lib.MA_ERR_NULL
    assert lib.ma_softmax_f32(P(a), P(a), -1, 4) == lib.MA_ERR_SIZE
    assert lib.ma_layer_norm_f32(P(a), P(a), ffi.NULL, ffi.NULL, 4, 4, 1e-5) == lib.MA_ERR_NULL
    assert lib.ma_rms_norm_f32(P(a), P(a), P(a), 4, -4, 1e-5) == lib.MA_ERR_SIZE
    strides = ffi.new("int64_t[15]", [1] * 14 + [-1])
    assert lib.ma_attention_f32(P(a), P(a), P(a), P(a), P(a), strides, 1, 1, 2, 2, 2, 1.0) == lib.MA_ERR_SIZE
    assert lib.ma_attention_f32(P(a), P(a), P(a), P(a), ffi.NULL, ffi.NULL, 1, 1, 2, 2, 2, 1.0) == lib.MA_ERR_NULL
    assert lib.ma_bottleneck_f32(P(a), P(a), P(a), ffi.NULL, P(a), ffi.NULL, 2, 2, 2, 1.0, -1) == lib.MA_ERR_ARG
    assert lib.ma_lora_add_f32(P(a), P(a), P(a), ffi.NULL, 2, 2, 2, 2, 1.0) == lib.MA_ERR_NULL


@pytest.mark.parametrize("starts, adapters", [([0, 3, 2], [0, 0]), ([1, 4], [0]), ([0, 4], [2]), ([0, 4], [-2]),
                                              ([0, 3], [0])])
def test_sgmv_rejects_bad_segment_tables(native, starts, adapters):
    y, x = np.zeros((4, 3), np.float32), np.ones((4, 5), np.float32)
    a, b = np.ones((2, 2, 5), np.float32), np.ones((2, 3, 2), np.float32)
    with pytest.raises(ValueError, match="seg_start must rise"):
        native.sgmv_lora_add(y, x, a, b, starts, adapters, [1.0, 1.0])


def test_shape_errors_name_the_shapes(native):
    with pytest.raises(ShapeError, match=r"x has shape \(2, 3\); expected \(\.\.\., 4\)"):
        native.linear(np.ones((2, 3), np.float32), np.ones((5, 4), np.float32))
    with pytest.raises(ShapeError, match=r"b has shape"):
        native.linear(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), np.ones(4, np.float32))
    q = np.ones((2, 1, 3, 4), np.float32)
    with pytest.raises(ShapeError, match="does not broadcast"):
        native.attention(q, q, q, np.zeros((3, 1, 1, 3), np.float32))


def test_abi_mismatch_names_both_versions_and_the_fix(nat):
    with pytest.raises(ImportError, match=r"ABI version 999 .* expects ABI version 4.*build_native.py"):
        nat.check_abi(999)
    nat.check_abi(nat.lib.ma_abi_version())


def test_missing_extension_is_backend_unavailable(monkeypatch):
    monkeypatch.delitem(sys.modules, "minadapters.ops.native", raising=False)
    monkeypatch.setitem(sys.modules, "minadapters.ops._native", None)   # import of the extension fails
    monkeypatch.delattr(minadapters.ops, "_native", raising=False)
    with pytest.raises(BackendUnavailableError, match="native.*not available.*pip install"):
        get_ops("native")
    assert get_ops("numpy").name == "numpy"
    assert minadapters.AutoModel is not None


def test_num_threads(native):
    from minadapters.ops.native import NativeOps
    with pytest.raises(ValueError, match="num_threads"):
        NativeOps(num_threads=0)
    n = NativeOps.info()["threads"]
    NativeOps(num_threads=1)
    assert NativeOps.info()["threads"] == 1
    NativeOps(num_threads=n)
