/* minadapters native CPU kernels: the whole C API.  Spec: spec/ops.md (OPS-1 .. OPS-10, OPS-13).
 *
 * Declarations only: this file is passed unchanged to cffi's cdef, so it holds no #include,
 * no #ifdef and no function-like macros.  C sources include <stdint.h> before it.
 *
 * Conventions: float32, row-major; sizes are int64_t; arguments are ordered outputs, inputs,
 * sizes, scalars; inputs are const.  Every kernel returns an int status (MA_OK = 0) that
 * ma_strerror() describes.  A pointer may be NULL only where noted or where the buffer it
 * stands for holds zero elements.  The caller (minadapters/ops/native.py) validates shapes,
 * dtypes and contiguity first; the kernels still refuse NULL pointers, negative sizes, size
 * products that overflow and unknown enum values.  No kernel prints, exits or keeps state.
 */

enum {
    MA_ABI_VERSION = 4
};

enum ma_status {
    MA_OK = 0,
    MA_ERR_NULL = 1,         /* a required pointer is NULL */
    MA_ERR_SIZE = 2,         /* a size or stride is negative */
    MA_ERR_OVERFLOW = 3,     /* a product of sizes overflows int64_t */
    MA_ERR_NOMEM = 4,        /* scratch allocation failed */
    MA_ERR_ARG = 5,          /* an enum value, segment table or adapter index is invalid */
    MA_ERR_ISA = 6           /* the requested instruction set is not supported by this CPU */
};

enum ma_isa {
    MA_ISA_AUTO = 0,         /* best available: AVX-512 > AVX2+FMA > portable */
    MA_ISA_PORTABLE = 1,
    MA_ISA_AVX2 = 2,
    MA_ISA_AVX512 = 3
};

enum ma_act {
    MA_ACT_IDENTITY = 0,
    MA_ACT_RELU = 1,
    MA_ACT_GELU = 2,         /* exact: x * Phi(x) */
    MA_ACT_GELU_TANH = 3,    /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    MA_ACT_SILU = 4,         /* x * sigmoid(x) */
    MA_ACT_QUICK_GELU = 5,   /* x * sigmoid(1.702 x) */
    MA_ACT_SIGMOID = 6
};

int ma_abi_version(void);
const char *ma_strerror(int status);

/* Bit set: 1 = AVX2+FMA usable, 2 = AVX-512F usable, 4 = built with OpenMP. */
int ma_cpu_features(void);
/* The instruction set MA_ISA_AUTO resolves to on this CPU. */
int ma_best_isa(void);
/* OpenMP threads used by the kernels (1 without OpenMP); set wraps omp_set_num_threads. */
int ma_get_num_threads(void);
int ma_set_num_threads(int n);

/* OPS-1  y(rows, m) = x(rows, k) . w(m, k)^T + b(m);  b may be NULL. */
int ma_linear_f32(float *y, const float *x, const float *w, const float *b,
                  int64_t rows, int64_t k, int64_t m);
/* OPS-1 with an explicit instruction set (enum ma_isa), for tests and benchmarks. */
int ma_linear_f32_isa(float *y, const float *x, const float *w, const float *b,
                      int64_t rows, int64_t k, int64_t m, int isa);

/* OPS-10  batched product with B stored (k, n):  y[i](m, n) = a[i](m, k) . b[i](k, n) + bias(n),
 * i < batch.  y is (batch, m, n) contiguous; a[i] starts at a + i * stride_a and b[i] at b + i * stride_b
 * (element strides; 0 repeats one matrix for every i); each matrix is row-major contiguous; bias may be NULL.
 * With batch = 1 it is OPS-1 for a weight stored transposed (NativeOps.linear reads w.T views in place). */
int ma_matmul_f32(float *y, const float *a, const float *b, const float *bias,
                  int64_t batch, int64_t m, int64_t k, int64_t n, int64_t stride_a, int64_t stride_b);

/* OPS-2  out = softmax(scale * q k^T + mask) v per (batch, head).
 * strides: 15 element strides, (batch, head, token) for out, q, k, v, mask in that order;
 * the last axis of every array is contiguous.  A zero mask stride broadcasts that axis.
 * mask may be NULL (then its strides are ignored).  q, out: (B, N, Tq, Dh); k, v: (B, N, Tk, Dh). */
int ma_attention_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                     const int64_t *strides, int64_t batch, int64_t heads, int64_t tq, int64_t tk,
                     int64_t head_dim, float scale);

/* OPS-2, fused and blocked (online softmax over key blocks; the (Tq, Tk) scores are never formed), with
 * GQA: k, v hold kv_heads heads (kv_heads divides heads, MA_ERR_ARG otherwise) and query head h reads kv head
 * h / (heads / kv_heads); the k and v strides are over kv heads.  causal != 0: query row i sees key j only
 * when j <= i + tk - tq; window > 0: only when j > i + tk - tq - window (0: no window).  Unseen keys weigh
 * exactly 0; a row that sees no key gives 0.  ma_attention_f32 is this with kv_heads = heads, no rule. */
int ma_attention_ex_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                        const int64_t *strides, int64_t batch, int64_t heads, int64_t kv_heads, int64_t tq,
                        int64_t tk, int64_t head_dim, float scale, int causal, int64_t window);

/* OPS-3  row-wise softmax over the last axis of (rows, n). */
int ma_softmax_f32(float *y, const float *x, int64_t rows, int64_t n);

/* OPS-4  (x - mean) / sqrt(var + eps) * g + b over rows of length n; b may be NULL. */
int ma_layer_norm_f32(float *y, const float *x, const float *g, const float *b,
                      int64_t rows, int64_t n, float eps);

/* OPS-5  x / sqrt(mean(x^2) + eps) * g. */
int ma_rms_norm_f32(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps);

/* OPS-6  y = act(x) elementwise over n values (enum ma_act); y may equal x. */
int ma_activation_f32(float *y, const float *x, int64_t n, int act);

/* OPS-3 .. OPS-6 with an explicit instruction set (enum ma_isa), for tests: every path a CPU can take. */
int ma_softmax_f32_isa(float *y, const float *x, int64_t rows, int64_t n, int isa);
int ma_layer_norm_f32_isa(float *y, const float *x, const float *g, const float *b,
                          int64_t rows, int64_t n, float eps, int isa);
int ma_rms_norm_f32_isa(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps, int isa);
int ma_activation_f32_isa(float *y, const float *x, int64_t n, int act, int isa);

/* OPS-7  fused bottleneck: y(rows, d) = scale * (act(x wd^T + bd) wu^T + bu);
 * wd (r, d), wu (d, r); bd, bu may be NULL. */
int ma_bottleneck_f32(float *y, const float *x, const float *wd, const float *bd,
                      const float *wu, const float *bu, int64_t rows, int64_t d, int64_t r,
                      float scale, int act);

/* OPS-8  fused LoRA delta, in place: y(rows, m) += scale * (x(rows, k) a(r, k)^T) b(m, r)^T. */
int ma_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                    int64_t rows, int64_t k, int64_t r, int64_t m, float scale);

/* OPS-9  segmented LoRA (SGMV): rows seg_start[s] .. seg_start[s+1]-1 use adapter
 * seg_adapter[s] (-1 = none):  y[rows] += scales[i] * (x[rows] a[i]^T) b[i]^T.
 * a (n_adapters, r, k), b (n_adapters, m, r); seg_start has n_seg + 1 nondecreasing
 * entries from 0 to rows. */
int ma_sgmv_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                         const int64_t *seg_start, const int64_t *seg_adapter, const float *scales,
                         int64_t rows, int64_t k, int64_t r, int64_t m, int64_t n_seg,
                         int64_t n_adapters);

/* OPS-9 with the adapters given as one pointer each (a[i] (ranks[i], k), b[i] (m, ranks[i]), row-major) instead of
 * one stacked array: no copy of the adapters per call, and mixed ranks in one call (BatchSplit of many LoRAs). */
int ma_sgmv_lora_add_ptr_f32(float *y, const float *x, const float *const *a, const float *const *b,
                             const int64_t *ranks, const int64_t *seg_start, const int64_t *seg_adapter,
                             const float *scales, int64_t rows, int64_t k, int64_t m, int64_t n_seg,
                             int64_t n_adapters);

/* OPS-13  rotary position embedding:  y = x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1]
 * (x2 = the last dh - dh/2 values).  x, y: (batch, heads, t, dh) contiguous; cos, sin: (batch, t, dh) with
 * batch element stride cs_stride (t * dh, or 0 to share one table), broadcast over heads.  y may not alias x. */
int ma_rope_f32(float *y, const float *x, const float *cos, const float *sin,
                int64_t batch, int64_t heads, int64_t t, int64_t dh, int64_t cs_stride);

/* ---- Scalar references (native/src/reference.c) ---------------------------------------------------
 * One plain loop nest per kernel above, same arguments and statuses (NULL / negative size / bad enum /
 * bad segment table; no overflow or ISA logic), sums in double.  Every optimised kernel is tested
 * against its ma_ref_* (native/tests/test_reference.c under ASan + UBSan, tests/ops/test_reference.py),
 * and so will a device kernel be.  Not tuned: never call them on a hot path. */
int ma_ref_linear_f32(float *y, const float *x, const float *w, const float *b,
                      int64_t rows, int64_t k, int64_t m);
int ma_ref_matmul_f32(float *y, const float *a, const float *b, const float *bias,
                      int64_t batch, int64_t m, int64_t k, int64_t n, int64_t stride_a, int64_t stride_b);
int ma_ref_attention_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                         const int64_t *strides, int64_t batch, int64_t heads, int64_t tq, int64_t tk,
                         int64_t head_dim, float scale);
int ma_ref_attention_ex_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                            const int64_t *strides, int64_t batch, int64_t heads, int64_t kv_heads, int64_t tq,
                            int64_t tk, int64_t head_dim, float scale, int causal, int64_t window);
int ma_ref_softmax_f32(float *y, const float *x, int64_t rows, int64_t n);
int ma_ref_layer_norm_f32(float *y, const float *x, const float *g, const float *b,
                          int64_t rows, int64_t n, float eps);
int ma_ref_rms_norm_f32(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps);
int ma_ref_activation_f32(float *y, const float *x, int64_t n, int act);
int ma_ref_bottleneck_f32(float *y, const float *x, const float *wd, const float *bd,
                          const float *wu, const float *bu, int64_t rows, int64_t d, int64_t r,
                          float scale, int act);
int ma_ref_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                        int64_t rows, int64_t k, int64_t r, int64_t m, float scale);
int ma_ref_sgmv_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                             const int64_t *seg_start, const int64_t *seg_adapter, const float *scales,
                             int64_t rows, int64_t k, int64_t r, int64_t m, int64_t n_seg,
                             int64_t n_adapters);
int ma_ref_sgmv_lora_add_ptr_f32(float *y, const float *x, const float *const *a, const float *const *b,
                                 const int64_t *ranks, const int64_t *seg_start, const int64_t *seg_adapter,
                                 const float *scales, int64_t rows, int64_t k, int64_t m, int64_t n_seg,
                                 int64_t n_adapters);
int ma_ref_rope_f32(float *y, const float *x, const float *cos, const float *sin,
                    int64_t batch, int64_t heads, int64_t t, int64_t dh, int64_t cs_stride);
