"""The size-dependent code paths of the native kernels: the few-rows dot-product GEMM (OPS-1, rows <= 128,
K >= 64, AVX-512), its accumulate / alpha use inside lora_add and sgmv (OPS-8, OPS-9), crossing its tile
(4), chunk (1024) and row-limit (128) edges."""
import numpy as np
import pytest

pytestmark = pytest.mark.native


def arr(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def gemm_close(y, x, w, b=None, rtol=1e-4):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = x64 @ w64.T + (0 if b is None else b)
    bound = rtol * (np.abs(x64) @ np.abs(w64).T + (0 if b is None else np.abs(b))) + 1e-30
    assert np.all(np.abs(y - ref) <= bound), float(np.max(np.abs(y - ref) - bound))


@pytest.mark.spec("OPS-1")
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 33, 127, 128, 129])
@pytest.mark.parametrize("k,m", [(64, 1), (77, 5), (1030, 8), (2100, 33)])
def test_linear_few_rows(native, rows, k, m):
    x, w, b = arr(rows, rows, k), arr(k, m, k), arr(m, m)
    gemm_close(native.linear(x, w, b), x, w, b)
    gemm_close(native.linear(x, w), x, w)


@pytest.mark.spec("OPS-8")
@pytest.mark.parametrize("rows,k,r,m", [(7, 100, 64, 9), (33, 1030, 70, 6), (200, 64, 65, 3)])
def test_lora_add_wide_rank(native, rows, k, r, m):
    """r >= 64 sends the second product (K = r) down the dot path with accumulation."""
    x, a, b, y0 = arr(1, rows, k), arr(2, r, k), arr(3, m, r), arr(4, rows, m)
    want = y0 + 0.25 * ((x.astype(np.float64) @ a.T) @ b.T)
    y = native.lora_add(y0.copy(), x, a, b, 0.25)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=2e-5 * np.sqrt(k * r))


@pytest.mark.spec("OPS-1")
@pytest.mark.parametrize("rows,k,m", [(0, 5, 3), (1, 0, 4), (3, 7, 5), (32, 768, 97), (130, 300, 33), (7, 257, 64)])
def test_linear_transposed_weight_view(native, rows, k, m):
    """w given as the transpose of a (in, out) array: read in place (ma_matmul_f32), same result."""
    x, wt, b = arr(1, rows, k), arr(2, k, m), arr(3, m)
    w = wt.T
    assert not w.flags.c_contiguous or m == 1 or k <= 1
    gemm_close(native.linear(x, w, b), x, w, b)
    gemm_close(native.linear(x, w), x, w)


@pytest.mark.spec("OPS-0")
def test_malloc_tuning_is_opt_in(native, monkeypatch):
    import os
    import subprocess
    import sys
    from minadapters.ops import native as mod
    env = {k: v for k, v in os.environ.items() if k != "MINADAPTERS_MALLOPT"}
    code = "from minadapters.ops import get_ops; print(get_ops('native').info()['malloc_tuned'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "importing the backend must not change malloc settings"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")          # a user's own MALLOC_* choice wins
    assert mod.tune_malloc() is False
