"""NativeOps: the C99 kernels of native/ (minadapters._native, built with cffi). Spec: spec/ops.md.

Same methods and results (within the OPS tolerance table) as NumpyOps.  Float32 only: a call
whose array arguments are not all float32 ndarrays (float64, float16, ints, or a float64 mask)
goes to NumpyOps for that call, so dtype promotion stays exactly NumPy's.  Other per-call
fallbacks to NumPy: softmax over an axis other than the last; attention whose q/k/v are not
4-D with matching (B, N) and head size; norms whose weights are not 1-D of the row length.
Activations (``activation(name)``) run natively for relu, gelu/gelu_python (exact erf),
gelu_new/gelu_pytorch_tanh/gelu_accurate/gelu_fast (tanh form), silu/swish, quick_gelu and
sigmoid; relu6, leaky_relu, tanh, mish and linear/None use the NumPy functions.

Importing this module raises ImportError (get_ops turns it into BackendUnavailableError) when the
extension is missing or was built for another ABI version.
"""
from __future__ import annotations

import ctypes
import math
import os

import numpy as np

from ..errors import ShapeError
from ..functional import activations as act
from .numpy import NumpyOps

ABI_VERSION = 2
_FIX = ("rebuild it with `pip install .` (needs a C compiler) or, in a source checkout, "
        "`python native/build_native.py`")


def _load():
    try:
        from .. import _native
    except ImportError as e:
        raise ImportError(f"the compiled extension minadapters._native cannot be imported ({e}); {_FIX}") from e
    check_abi(_native.lib.ma_abi_version())
    return _native.ffi, _native.lib


def check_abi(found: int) -> None:
    """ImportError naming both versions and the fix unless the extension's ABI is ours."""
    if found != ABI_VERSION:
        raise ImportError(f"minadapters._native has ABI version {found} but minadapters/ops/native.py expects "
                          f"ABI version {ABI_VERSION}; the extension is stale: {_FIX}")


ffi, lib = _load()


def tune_malloc() -> bool:
    """glibc: serve buffers up to 32 MiB from the heap and keep up to 512 MiB of freed heap (mallopt
    M_MMAP_THRESHOLD / M_TRIM_THRESHOLD).  With the defaults every fresh activation-sized array is a new
    mmap whose pages fault in (and are zeroed) on first touch: about a fifth of a BERT-base forward at
    8x128.  Process-wide and it keeps freed memory, so it is opt-in: call this, or set MINADAPTERS_MALLOPT=1
    before import; `minadapters bench` calls it and says so.  A no-op where there is no mallopt (non-glibc)
    or a MALLOC_* variable is set (the user chose).  Returns whether it applied.  Spec: OPS-0."""
    global MALLOC_TUNED
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    MALLOC_TUNED = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))
    return MALLOC_TUNED


MALLOC_TUNED = False
if os.environ.get("MINADAPTERS_MALLOPT") == "1":
    tune_malloc()

_ACT_CODES = {"relu": lib.MA_ACT_RELU, "gelu": lib.MA_ACT_GELU, "gelu_python": lib.MA_ACT_GELU,
              "gelu_new": lib.MA_ACT_GELU_TANH, "gelu_pytorch_tanh": lib.MA_ACT_GELU_TANH,
              "gelu_accurate": lib.MA_ACT_GELU_TANH, "gelu_fast": lib.MA_ACT_GELU_TANH,
              "silu": lib.MA_ACT_SILU, "swish": lib.MA_ACT_SILU, "quick_gelu": lib.MA_ACT_QUICK_GELU,
              "sigmoid": lib.MA_ACT_SIGMOID}
_F32 = np.dtype(np.float32)


def _is_f32(*arrays) -> bool:
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype == _F32) for a in arrays)


def _c(a):
    """C-contiguous float32 view/copy, or None."""
    return None if a is None else np.ascontiguousarray(a)


def _ptr(a):
    """float* to a C-contiguous array (ffi.NULL for None)."""
    return ffi.NULL if a is None else ffi.from_buffer("float[]", a)


def _addr(a):
    return ffi.cast("float *", a.__array_interface__["data"][0])


def _check(status: int, op: str) -> None:
    """Raise on a non-zero status from a kernel, with ma_strerror's text."""
    if status:
        msg = ffi.string(lib.ma_strerror(status)).decode()
        if status == lib.MA_ERR_NOMEM:
            raise MemoryError(f"native {op}: {msg}")
        raise ValueError(f"native {op}: kernel returned status {status}: {msg}")


def _rowwise(x, n: int, op: str):
    """(contiguous x, rows) for an op over the last axis of length n."""
    x = np.ascontiguousarray(x)
    if x.ndim == 0 or x.shape[-1] != n:
        raise ShapeError(f"{op}: x has shape {x.shape}; expected (..., {n}) to match the weights")
    return x, math.prod(x.shape[:-1])


def _head_strides(a):
    """Element strides (batch, head, token) of a 4-D float32 array whose last axis is contiguous,
    copying it first when that does not hold."""
    if any(s < 0 or s % 4 for s in a.strides) or (a.shape[-1] > 1 and a.strides[-1] != 4):
        a = np.ascontiguousarray(a)
    return a, [s // 4 for s in a.strides[:3]]


class NativeOps:
    """float32 C kernels; per-call NumPy fallback as the module docstring lists. Spec: OPS-1 .. OPS-9.

    ``num_threads`` sets the OpenMP thread count (process-wide, as omp_set_num_threads does)."""

    name = "native"

    def __init__(self, num_threads: int | None = None):
        self._np = NumpyOps()
        if num_threads is not None:
            if int(num_threads) < 1:
                raise ValueError(f"num_threads={num_threads!r}; expected an integer >= 1")
            _check(lib.ma_set_num_threads(int(num_threads)), "set_num_threads")

    @staticmethod
    def info() -> dict:
        """Build/CPU facts: instruction set chosen, OpenMP, threads."""
        f = lib.ma_cpu_features()
        isa = {lib.MA_ISA_PORTABLE: "portable", lib.MA_ISA_AVX2: "avx2+fma", lib.MA_ISA_AVX512: "avx512f"}
        return {"abi": lib.ma_abi_version(), "isa": isa[lib.ma_best_isa()], "openmp": bool(f & 4),
                "threads": lib.ma_get_num_threads(), "malloc_tuned": MALLOC_TUNED}

    def linear(self, x, w, b=None):
        """y = x wᵀ + b. Spec: OPS-1.  (..., K), (M, K), (M,) -> (..., M)"""
        if not _is_f32(x, w, b):
            return self._np.linear(x, w, b)
        if w.ndim != 2:
            raise ShapeError(f"linear: w has shape {w.shape}; expected (out, in)")
        m, k = w.shape
        if b is not None and b.shape != (m,):
            raise ShapeError(f"linear: b has shape {b.shape}; expected ({m},) to match w {w.shape}")
        x, rows = _rowwise(x, k, "linear")
        y = np.empty(x.shape[:-1] + (m,), np.float32)
        if not w.flags.c_contiguous and w.T.flags.c_contiguous:     # a transposed view: read it as (k, m)
            _check(lib.ma_matmul_f32(_ptr(y), _ptr(x), _ptr(w.T), _ptr(_c(b)), rows, k, m), "linear")
        else:
            _check(lib.ma_linear_f32(_ptr(y), _ptr(x), _ptr(_c(w)), _ptr(_c(b)), rows, k, m), "linear")
        return y

    def attention(self, q, k, v, mask):
        """softmax(q kᵀ / √Dh + mask) v. Spec: OPS-2.  (B, N, Tq, Dh), (B, N, Tk, Dh) x2, additive mask
        broadcastable to (B, N, Tq, Tk) -> (B, N, Tq, Dh), a view of a (B, Tq, N, Dh) buffer."""
        if not (_is_f32(q, k, v, mask) and q.ndim == 4 and k.ndim == 4 and k.shape == v.shape
                and q.shape[:2] == k.shape[:2] and q.shape[3] == k.shape[3]):
            return self._np.attention(q, k, v, mask)
        B, N, Tq, Dh = q.shape
        Tk = k.shape[2]
        (q, sq), (k, sk), (v, sv) = _head_strides(q), _head_strides(k), _head_strides(v)
        sm, mptr, keep = [0, 0, 0], ffi.NULL, None
        if mask is not None:
            try:
                m4 = np.broadcast_to(mask, (B, N, Tq, Tk))
            except ValueError:
                raise ShapeError(f"attention: mask of shape {mask.shape} does not broadcast to "
                                 f"(B, N, Tq, Tk) = {(B, N, Tq, Tk)}") from None
            keep, sm = _head_strides(m4)
            mptr = _addr(keep)
        buf = np.empty((B, Tq, N, Dh), np.float32)
        out = buf.transpose(0, 2, 1, 3)
        strides = ffi.new("int64_t[15]", [s // 4 for s in out.strides[:3]] + sq + sk + sv + sm)
        _check(lib.ma_attention_f32(_addr(out), _addr(q), _addr(k), _addr(v), mptr, strides, B, N, Tq, Tk, Dh,
                                    float(1.0 / np.sqrt(np.float32(Dh))) if Dh else 1.0), "attention")
        return out

    def softmax(self, x, axis=-1):
        """Spec: OPS-3."""
        if not _is_f32(x) or x.ndim == 0 or axis not in (-1, x.ndim - 1):
            return self._np.softmax(x, axis=axis)
        x, rows = _rowwise(x, x.shape[-1], "softmax")
        y = np.empty_like(x)
        _check(lib.ma_softmax_f32(_ptr(y), _ptr(x), rows, x.shape[-1]), "softmax")
        return y

    def layer_norm(self, x, g, b, eps):
        """(x - mean) / sqrt(var + eps) * g + b over the last axis (biased variance). Spec: OPS-4."""
        if not (_is_f32(x, g, b) and x.ndim >= 1 and g.shape == x.shape[-1:]
                and (b is None or b.shape == g.shape)):
            return self._np.layer_norm(x, g, b, eps)
        x, rows = _rowwise(x, g.shape[0], "layer_norm")
        y = np.empty_like(x)
        _check(lib.ma_layer_norm_f32(_ptr(y), _ptr(x), _ptr(_c(g)), _ptr(_c(b)), rows, g.shape[0], float(eps)),
               "layer_norm")
        return y

    def rms_norm(self, x, g, eps):
        """x / sqrt(mean(x²) + eps) * g. Spec: OPS-5."""
        if not (_is_f32(x, g) and x.ndim >= 1 and g.shape == x.shape[-1:]):
            return self._np.rms_norm(x, g, eps)
        x, rows = _rowwise(x, g.shape[0], "rms_norm")
        y = np.empty_like(x)
        _check(lib.ma_rms_norm_f32(_ptr(y), _ptr(x), _ptr(_c(g)), rows, g.shape[0], float(eps)), "rms_norm")
        return y

    def activation(self, name):
        """The activation called ``name``: native where listed in the module docstring. Spec: OPS-6, ACT-1."""
        ref = act.get_activation(name)              # validates the name
        code = _ACT_CODES.get(str(name).lower()) if name is not None else None
        if code is None:
            return ref

        def native_act(x):
            if not _is_f32(x):
                return ref(x)
            x = np.ascontiguousarray(x)
            y = np.empty_like(x)
            _check(lib.ma_activation_f32(_ptr(y), _ptr(x), x.size, code), f"activation {name!r}")
            return y

        native_act.__name__ = f"native_{str(name).lower()}"
        return native_act

    # ---------------------------------------------------------------- fused adapter kernels

    def bottleneck(self, x, wd, bd, wu, bu, scale=1.0, non_linearity="relu"):
        """scale · (act(x wdᵀ + bd) wuᵀ + bu), the residual-free bottleneck branch. Spec: OPS-7.
        x (..., D), wd (R, D), wu (D, R)."""
        code = _ACT_CODES.get(str(non_linearity).lower(), None) if non_linearity is not None else 0
        if not _is_f32(x, wd, bd, wu, bu) or code is None:
            h = self.activation(non_linearity)(self._np.linear(x, wd, bd))
            return self._np.linear(h, wu, bu) * np.asarray(scale, dtype=np.result_type(x, wu))
        r, d = wd.shape
        if wu.shape != (d, r):
            raise ShapeError(f"bottleneck: wu has shape {wu.shape}; expected {(d, r)} to match wd {wd.shape}")
        x, rows = _rowwise(x, d, "bottleneck")
        y = np.empty_like(x)
        _check(lib.ma_bottleneck_f32(_ptr(y), _ptr(x), _ptr(_c(wd)), _ptr(_c(bd)), _ptr(_c(wu)), _ptr(_c(bu)),
                                     rows, d, r, float(scale), code), "bottleneck")
        return y

    def lora_add(self, y, x, a, b, scale):
        """y += scale · (x aᵀ) bᵀ in place (y must be C-contiguous float32); returns y. Spec: OPS-8.
        x (..., K), a (R, K), b (M, R), y (..., M)."""
        r, k = a.shape
        m = b.shape[0]
        if b.shape != (m, r) or y.shape != x.shape[:-1] + (m,):
            raise ShapeError(f"lora_add: shapes y {y.shape}, x {x.shape}, a {a.shape}, b {b.shape} do not "
                             f"form y (..., M) += x (..., K) a (R, K)ᵀ b (M, R)ᵀ")
        if not (_is_f32(y, x, a, b) and y.flags.c_contiguous):
            y += np.asarray(scale, y.dtype) * ((x @ a.T) @ b.T)
            return y
        x, rows = _rowwise(x, k, "lora_add")
        _check(lib.ma_lora_add_f32(_ptr(y), _ptr(x), _ptr(_c(a)), _ptr(_c(b)), rows, k, r, m, float(scale)),
               "lora_add")
        return y

    def sgmv_lora_add(self, y, x, a, b, seg_start, seg_adapter, scales):
        """Segmented LoRA (SGMV): rows seg_start[s]:seg_start[s+1] of x (rows, K) add
        scales[i] · (x a[i]ᵀ) b[i]ᵀ to y (rows, M), i = seg_adapter[s] (-1: none). a (A, R, K),
        b (A, M, R). In place; returns y. Spec: OPS-9."""
        seg_start = np.ascontiguousarray(seg_start, np.int64)
        seg_adapter = np.ascontiguousarray(seg_adapter, np.int64)
        scales = np.ascontiguousarray(scales, np.float32)
        n_ad, r, k = a.shape
        m = b.shape[1]
        rows = x.shape[0]
        if (x.ndim != 2 or b.shape != (n_ad, m, r) or y.shape != (rows, m) or scales.shape != (n_ad,)
                or seg_start.shape != (seg_adapter.shape[0] + 1,)):
            raise ShapeError(f"sgmv_lora_add: shapes y {y.shape}, x {x.shape}, a {a.shape}, b {b.shape}, "
                             f"seg_start {seg_start.shape}, seg_adapter {seg_adapter.shape}, scales {scales.shape} "
                             f"are inconsistent")
        if not (_is_f32(y, x, a, b) and y.flags.c_contiguous):
            raise TypeError("sgmv_lora_add: y, x, a, b must be float32 and y C-contiguous")
        st = lib.ma_sgmv_lora_add_f32(_ptr(y), _ptr(_c(x)), _ptr(_c(a)), _ptr(_c(b)),
                                      ffi.from_buffer("int64_t[]", seg_start),
                                      ffi.from_buffer("int64_t[]", seg_adapter), _ptr(scales),
                                      rows, k, r, m, seg_adapter.shape[0], n_ad)
        if st == lib.MA_ERR_ARG:
            raise ValueError(f"sgmv_lora_add: seg_start must rise from 0 to {rows} and seg_adapter values lie in "
                             f"[-1, {n_ad}); got seg_start={seg_start.tolist()}, seg_adapter={seg_adapter.tolist()}")
        _check(st, "sgmv_lora_add")
        return y
