/* Shared internals of the native kernels (not part of the C API). */
#ifndef MA_INTERNAL_H
#define MA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "minadapters.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define MA_AVX2_FN __attribute__((target("avx2,fma")))
#define MA_AVX512_FN __attribute__((target("avx512f,avx2,fma")))

/* Resolve a requested enum ma_isa into a usable one; returns a status. */
int ma__resolve_isa(int requested, int *isa);

/* out = a * b unless it overflows int64 (or either is negative). */
int ma__mul(int64_t a, int64_t b, int64_t *out);

/* C(M, N; ldc) (=|+=) alpha * A(M, K; lda) . B(N, K; ldb)^T (+ bias(N) when bias != NULL).
 * accumulate = 0 overwrites C.  parallel = 0 keeps it on the calling thread. */
int ma__gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                const float *bias, int64_t M, int64_t N, int64_t K, float alpha, int accumulate,
                int isa, int parallel);

/* C(M, N; ldc) (=|+=) alpha * A(M, K; lda) . B(K, N; ldb), B stored (K, N) row-major; single-threaded. */
int ma__gemm_nn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int64_t M, int64_t N, int64_t K, float alpha, int accumulate, int isa);

/* Row-wise helpers used by several kernels (single-threaded on one row). */
void ma__softmax_row(float *y, const float *x, int64_t n, int isa);
void ma__act_span(float *y, const float *x, int64_t n, int act, int isa);
/* p[i] = exp(s[i] - m) for i < n (p may equal s); returns the float32 sum of p (online softmax). */
float ma__exp_shift_row(float *p, const float *s, int64_t n, float m, int isa);
/* row[i] += mask[i] (mask may be NULL) for i < n; returns max row[i] (-inf for n = 0; NaN entries are skipped). */
float ma__add_max_row(float *row, const float *mask, int64_t n, int isa);

#endif
