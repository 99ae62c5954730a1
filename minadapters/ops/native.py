"""NativeOps: the C99 kernels of native/ (minadapters.ops._native, built with cffi). Spec: spec/ops.md.

Every member of the Ops protocol, with the results of NumpyOps within the OPS tolerance table.
C kernels: linear, matmul, attention, softmax, layer_norm, rms_norm, the activations listed below,
bottleneck, lora_add, sgmv_lora_add (stacked or per-adapter) and rope.  concat, take and repeat_batch are memory moves
on host memory and use NumPy (the same code as NumpyOps).

Float32 only: a call whose array arguments are not all float32 ndarrays (float64, float16, ints, or a
float64 mask) goes to NumpyOps for that call, so dtype promotion stays exactly NumPy's.  Other per-call
fallbacks to NumPy: softmax over an axis other than the last; attention whose q/k/v are not 4-D with
matching B and head size and kv heads dividing the query heads; norms whose weights are not 1-D of the row length; matmul of a 1-D
operand; rope whose cos/sin are not (B or 1, T, Dh).  Activations (``activation(name)``) run natively
for relu, gelu/gelu_python (exact erf), gelu_new/gelu_pytorch_tanh/gelu_accurate/gelu_fast (tanh
form), silu/swish, quick_gelu and sigmoid; the other ACT-1 names use the NumPy functions, and a
bottleneck with one of them runs as linear, activation, linear (native products).

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
from .numpy import NumpyOps, check_bottleneck, check_ids, check_lora, check_segments, per_adapter, scalar

ABI_VERSION = 4
# Batched matmul entries with fewer multiply-adds than this run through NumPy (measured: AdapterFusion's
# (8·128) x (3, 768) @ (768, 1) products take ~5x longer as one GEMM call per entry).
SMALL_BATCHED_PRODUCT = 1 << 14
_FIX = ("rebuild it with `pip install .` (needs a C compiler) or, in a source checkout, "
        "`python native/build_native.py`")


def _load():
    try:
        from ._native import ffi, lib   # deferred: a missing/stale build becomes this module's ImportError
    except ImportError as e:
        raise ImportError(f"the compiled extension minadapters.ops._native cannot be imported ({e}); {_FIX}") from e
    check_abi(lib.ma_abi_version())
    return ffi, lib


def check_abi(found: int) -> None:
    """ImportError naming both versions and the fix unless the extension's ABI is ours."""
    if found != ABI_VERSION:
        raise ImportError(f"minadapters.ops._native has ABI version {found} but minadapters/ops/native.py expects "
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


def _batched(a, lead):
    """(C-contiguous stack of matrices, element stride between them) for an operand broadcast to lead:
    stride 0 when one matrix repeats, a broadcast copy only for a partial broadcast."""
    mat = a.shape[-2:]
    if math.prod(a.shape[:-2]) == 1:
        return np.ascontiguousarray(a.reshape(mat)), 0
    if a.shape[:-2] != lead[len(lead) - (a.ndim - 2):] or math.prod(a.shape[:-2]) != math.prod(lead):
        a = np.broadcast_to(a, lead + mat)
    return np.ascontiguousarray(a), math.prod(mat)


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
            _check(lib.ma_matmul_f32(_ptr(y), _ptr(x), _ptr(w.T), _ptr(_c(b)), 1, rows, k, m, 0, 0), "linear")
        else:
            _check(lib.ma_linear_f32(_ptr(y), _ptr(x), _ptr(_c(w)), _ptr(_c(b)), rows, k, m), "linear")
        return y

    def matmul(self, a, b):
        """a @ b, np.matmul's batching and broadcasting over the leading axes. Spec: OPS-10.
        (..., m, k), (..., k, n) -> (..., m, n).  A stack against one matrix is one GEMM; otherwise one
        GEMM per broadcast batch entry (threads share the entries), an operand that repeats along the
        batch read once (stride 0)."""
        if not _is_f32(a, b) or a.ndim < 2 or b.ndim < 2:
            return self._np.matmul(a, b)
        (m, k), (k2, n) = a.shape[-2:], b.shape[-2:]
        try:
            lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            lead = None
        if k2 != k or lead is None:
            raise ShapeError(f"matmul: a {a.shape} and b {b.shape} do not form (..., m, k) @ (..., k, n) with "
                             f"broadcastable leading axes")
        if math.prod(b.shape[:-2]) != 1 and m * n * k < SMALL_BATCHED_PRODUCT:
            # many tiny products (fusion's per-token (N, D) x (D, 1)): NumPy's loop beats a GEMM call per entry
            return self._np.matmul(a, b)
        y = np.empty(lead + (m, n), np.float32)
        if math.prod(b.shape[:-2]) == 1:               # one matrix on the right: all rows of a in one GEMM
            a2 = np.ascontiguousarray(np.broadcast_to(a, lead + (m, k)))
            _check(lib.ma_matmul_f32(_ptr(y), _ptr(a2), _ptr(_c(b)), ffi.NULL, 1, math.prod(lead) * m, k, n, 0, 0),
                   "matmul")
            return y
        (a2, sa), (b2, sb) = _batched(a, lead), _batched(b, lead)
        _check(lib.ma_matmul_f32(_ptr(y), _ptr(a2), _ptr(b2), ffi.NULL, math.prod(lead), m, k, n, sa, sb), "matmul")
        return y

    def attention(self, q, k, v, mask):
        """softmax(q kᵀ / √Dh + mask) v. Spec: OPS-2.  (B, N, Tq, Dh), (B, Nkv, Tk, Dh) x2 (Nkv divides N: GQA,
        never repeated), additive mask broadcastable to (B, N, Tq, Tk) -> (B, N, Tq, Dh), a view of a
        (B, Tq, N, Dh) buffer.  One fused C call (ma_attention_ex_f32: online softmax over key blocks, the scores
        never formed); the mask is read through its broadcast strides (a (B, 1, Tq, Tk) or (B, 1, 1, Tk) mask
        is never expanded over heads or rows)."""
        if not (_is_f32(q, k, v, mask) and q.ndim == 4 and k.ndim == 4 and k.shape == v.shape
                and q.shape[0] == k.shape[0] and q.shape[3] == k.shape[3]
                and 0 < k.shape[1] <= q.shape[1] and q.shape[1] % k.shape[1] == 0):
            return self._np.attention(q, k, v, mask)
        B, N, Tq, Dh = q.shape
        Nkv, Tk = k.shape[1], k.shape[2]
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
        _check(lib.ma_attention_ex_f32(_addr(out), _addr(q), _addr(k), _addr(v), mptr, strides, B, N, Nkv, Tq, Tk,
                                       Dh, float(1.0 / np.sqrt(np.float32(Dh))) if Dh else 1.0, 0, 0), "attention")
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
        x (..., D), wd (r, D), bd (r,), wu (D, r), bu (D,) -> (..., D).  One C call for the natively listed
        activations; any other ACT-1 name: native linear, the NumPy activation, native linear."""
        if not _is_f32(x, wd, bd, wu, bu):
            return self._np.bottleneck(x, wd, bd, wu, bu, scale, non_linearity)
        check_bottleneck(x, wd, bd, wu, bu)
        s = scalar(scale, np.float32, "bottleneck")
        code = lib.MA_ACT_IDENTITY if non_linearity is None else _ACT_CODES.get(str(non_linearity).lower())
        if code is None:
            h = self.activation(non_linearity)(self.linear(x, wd, bd))
            return self.linear(h, wu, bu) * s
        r, d = wd.shape
        x, rows = _rowwise(x, d, "bottleneck")
        y = np.empty_like(x)
        _check(lib.ma_bottleneck_f32(_ptr(y), _ptr(x), _ptr(_c(wd)), _ptr(_c(bd)), _ptr(_c(wu)), _ptr(_c(bu)),
                                     rows, d, r, float(s), code), "bottleneck")
        return y

    def lora_add(self, y, x, a, b, scale):
        """y += scale · (x aᵀ) bᵀ in place; returns y. Spec: OPS-8.  y (..., M), x (..., K), a (r, K), b (M, r).
        A y that is not C-contiguous float32 is updated by NumpyOps."""
        check_lora(y, x, a, b)
        if not (_is_f32(y, x, a, b) and y.flags.c_contiguous and y.flags.writeable):
            return self._np.lora_add(y, x, a, b, scale)
        (r, k), m = a.shape, b.shape[0]
        x, rows = _rowwise(x, k, "lora_add")
        _check(lib.ma_lora_add_f32(_ptr(y), _ptr(x), _ptr(_c(a)), _ptr(_c(b)), rows, k, r, m,
                                   float(scalar(scale, np.float32, "lora_add"))), "lora_add")
        return y

    def sgmv_lora_add(self, y, x, a, b, seg_start, seg_adapter, scales):
        """Segmented LoRA (SGMV): rows seg_start[s]:seg_start[s+1] of x add scales[i] · (x a[i]ᵀ) b[i]ᵀ to y,
        i = seg_adapter[s] (−1: none); in place, returns y. Spec: OPS-9.
        y (rows, M), x (rows, K), a (A, r, K), b (A, M, r), scales (A,); or a, b as sequences of A per-adapter
        arrays (r_i, K), (M, r_i): then one C call reads each adapter where it lies through a pointer table
        (ma_sgmv_lora_add_ptr_f32: no stacked copy per call, mixed ranks)."""
        seg_start, seg_adapter, scales = check_segments(y, x, a, b, seg_start, seg_adapter, scales)
        if per_adapter(a):
            return self._sgmv_ptr(y, x, a, b, seg_start, seg_adapter, scales)
        if not (_is_f32(y, x, a, b) and y.flags.c_contiguous and y.flags.writeable):
            return self._np.sgmv_lora_add(y, x, a, b, seg_start, seg_adapter, scales)
        n_ad, r, k = a.shape
        _check(lib.ma_sgmv_lora_add_f32(_ptr(y), _ptr(_c(x)), _ptr(_c(a)), _ptr(_c(b)),
                                        ffi.from_buffer("int64_t[]", seg_start),
                                        ffi.from_buffer("int64_t[]", seg_adapter), _ptr(scales),
                                        x.shape[0], k, r, b.shape[1], seg_adapter.shape[0], n_ad), "sgmv_lora_add")
        return y

    def _sgmv_ptr(self, y, x, a, b, seg_start, seg_adapter, scales):
        """OPS-9 over per-adapter arrays: a table of pointers and ranks, one C call (checked by check_segments)."""
        if not (_is_f32(y, x, *a, *b) and y.flags.c_contiguous and y.flags.writeable):
            return self._np.sgmv_lora_add(y, x, a, b, seg_start, seg_adapter, scales)
        a = [t if t.flags.c_contiguous else np.ascontiguousarray(t) for t in a]   # kept alive until the call ends
        b = [t if t.flags.c_contiguous else np.ascontiguousarray(t) for t in b]
        ranks = np.array([t.shape[0] for t in a], np.int64)
        x = _c(x)
        _check(lib.ma_sgmv_lora_add_ptr_f32(_ptr(y), _ptr(x), ffi.new("float *[]", [_addr(t) for t in a]),
                                            ffi.new("float *[]", [_addr(t) for t in b]),
                                            ffi.from_buffer("int64_t[]", ranks),
                                            ffi.from_buffer("int64_t[]", seg_start),
                                            ffi.from_buffer("int64_t[]", seg_adapter), _ptr(scales), x.shape[0],
                                            x.shape[1], y.shape[1], seg_adapter.shape[0], len(a)), "sgmv_lora_add")
        return y

    # ---------------------------------------------------------------- state and position ops

    def concat(self, arrays, axis):
        """np.concatenate(arrays, axis): a host-memory move, NumPy's code. Spec: OPS-11."""
        return np.concatenate(arrays, axis=axis)

    def take(self, table, ids):
        """table[ids], ids.shape + (D,); IndexError for an id outside [0, V). Host-memory gather. Spec: OPS-12."""
        return table[check_ids(table, ids)]

    def rope(self, x, cos, sin):
        """x·cos + rotate_half(x)·sin, bit-equal to NumpyOps (products rounded before the sum). Spec: OPS-13.
        x (B, N, T, Dh); cos, sin (B, T, Dh) or (1, T, Dh) -> (B, N, T, Dh)"""
        if not (_is_f32(x, cos, sin) and x.ndim == 4 and cos.ndim == 3 and sin.shape == cos.shape
                and cos.shape[1:] == x.shape[2:] and cos.shape[0] in (1, x.shape[0])):
            return self._np.rope(x, cos, sin)
        B, N, T, Dh = x.shape
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        stride = 0 if cos.shape[0] == 1 else T * Dh
        _check(lib.ma_rope_f32(_ptr(y), _ptr(x), _ptr(_c(cos)), _ptr(_c(sin)), B, N, T, Dh, stride), "rope")
        return y

    def repeat_batch(self, x, n):
        """n copies of x along axis 0, channel-major (np.concatenate([x] * n, 0)). Spec: OPS-14."""
        return self._np.repeat_batch(x, n)
