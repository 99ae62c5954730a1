/* OPS-1: packed, register-blocked SGEMM  C = alpha * A . B^T (+ bias), threaded with OpenMP.
 *
 * Layout follows the BLIS/GotoBLAS loop nest: for each KC-deep slice of K, A is packed into
 * MR-row slivers and B into NR-column slivers (zero-padded), then MC x NCB tiles of C are
 * shared out between threads; inside a tile a micro-kernel keeps an MR x NR block of C in
 * registers.  Micro-kernels: portable C (6 x 16), AVX2+FMA (6 x 16), AVX-512 (6 x 32).
 */
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "internal.h"

#define MR 6
#define KC 256
#define MC 96          /* 16 * MR */
#define NCB 128        /* multiple of every NR */
#define NR_MAX 32

typedef void (*kern_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, int overwrite, const float *bias);

/* Store one accumulated row: v = alpha*acc (+bias) (+c). Shared scalar tail. */
static void store_row(float *c, const float *acc, int64_t n, float alpha, int overwrite,
                      const float *bias)
{
    for (int64_t j = 0; j < n; j++) {
        float v = alpha * acc[j];
        if (bias)
            v += bias[j];
        c[j] = overwrite ? v : c[j] + v;
    }
}

static void kern_portable(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          float alpha, int overwrite, const float *bias)
{
    float acc[MR][16];
    memset(acc, 0, sizeof acc);
    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * 16;
        for (int i = 0; i < MR; i++) {
            float ai = a[p * MR + i];
            for (int j = 0; j < 16; j++)
                acc[i][j] += ai * bp[j];
        }
    }
    for (int i = 0; i < MR; i++)
        store_row(c + i * ldc, acc[i], 16, alpha, overwrite, bias);
}

MA_AVX2_FN static inline void st8(float *c, __m256 acc, __m256 va, int overwrite, const float *bias)
{
    __m256 v = _mm256_mul_ps(acc, va);
    if (bias)
        v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
    if (!overwrite)
        v = _mm256_add_ps(v, _mm256_loadu_ps(c));
    _mm256_storeu_ps(c, v);
}

MA_AVX2_FN static void kern_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                                 float alpha, int overwrite, const float *bias)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), t;
        t = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
        a += MR;
        b += 16;
    }
    __m256 va = _mm256_set1_ps(alpha);
    const float *b8 = bias ? bias + 8 : NULL;
    st8(c, c00, va, overwrite, bias); st8(c + 8, c01, va, overwrite, b8); c += ldc;
    st8(c, c10, va, overwrite, bias); st8(c + 8, c11, va, overwrite, b8); c += ldc;
    st8(c, c20, va, overwrite, bias); st8(c + 8, c21, va, overwrite, b8); c += ldc;
    st8(c, c30, va, overwrite, bias); st8(c + 8, c31, va, overwrite, b8); c += ldc;
    st8(c, c40, va, overwrite, bias); st8(c + 8, c41, va, overwrite, b8); c += ldc;
    st8(c, c50, va, overwrite, bias); st8(c + 8, c51, va, overwrite, b8);
}

MA_AVX512_FN static inline void st16(float *c, __m512 acc, __m512 va, int overwrite, const float *bias)
{
    __m512 v = _mm512_mul_ps(acc, va);
    if (bias)
        v = _mm512_add_ps(v, _mm512_loadu_ps(bias));
    if (!overwrite)
        v = _mm512_add_ps(v, _mm512_loadu_ps(c));
    _mm512_storeu_ps(c, v);
}

MA_AVX512_FN static void kern_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                                     float alpha, int overwrite, const float *bias)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), t;
        t = _mm512_set1_ps(a[0]); c00 = _mm512_fmadd_ps(t, b0, c00); c01 = _mm512_fmadd_ps(t, b1, c01);
        t = _mm512_set1_ps(a[1]); c10 = _mm512_fmadd_ps(t, b0, c10); c11 = _mm512_fmadd_ps(t, b1, c11);
        t = _mm512_set1_ps(a[2]); c20 = _mm512_fmadd_ps(t, b0, c20); c21 = _mm512_fmadd_ps(t, b1, c21);
        t = _mm512_set1_ps(a[3]); c30 = _mm512_fmadd_ps(t, b0, c30); c31 = _mm512_fmadd_ps(t, b1, c31);
        t = _mm512_set1_ps(a[4]); c40 = _mm512_fmadd_ps(t, b0, c40); c41 = _mm512_fmadd_ps(t, b1, c41);
        t = _mm512_set1_ps(a[5]); c50 = _mm512_fmadd_ps(t, b0, c50); c51 = _mm512_fmadd_ps(t, b1, c51);
        a += MR;
        b += 32;
    }
    __m512 va = _mm512_set1_ps(alpha);
    const float *b16 = bias ? bias + 16 : NULL;
    st16(c, c00, va, overwrite, bias); st16(c + 16, c01, va, overwrite, b16); c += ldc;
    st16(c, c10, va, overwrite, bias); st16(c + 16, c11, va, overwrite, b16); c += ldc;
    st16(c, c20, va, overwrite, bias); st16(c + 16, c21, va, overwrite, b16); c += ldc;
    st16(c, c30, va, overwrite, bias); st16(c + 16, c31, va, overwrite, b16); c += ldc;
    st16(c, c40, va, overwrite, bias); st16(c + 16, c41, va, overwrite, b16); c += ldc;
    st16(c, c50, va, overwrite, bias); st16(c + 16, c51, va, overwrite, b16);
}

/* Pack rows i0 .. i0+MR-1 of A (columns p0 .. p0+kc-1) as dst[p*MR + i], zero past M. */
static void pack_a(float *dst, const float *A, int64_t lda, int64_t i0, int64_t M, int64_t p0, int64_t kc)
{
    for (int i = 0; i < MR; i++) {
        if (i0 + i < M) {
            const float *src = A + (i0 + i) * lda + p0;
            for (int64_t p = 0; p < kc; p++)
                dst[p * MR + i] = src[p];
        } else {
            for (int64_t p = 0; p < kc; p++)
                dst[p * MR + i] = 0.0f;
        }
    }
}

/* Pack rows j0 .. j0+nr-1 of B (columns of C) as dst[p*nr + j], zero past N. */
static void pack_b(float *dst, const float *B, int64_t ldb, int64_t j0, int64_t N, int64_t p0, int64_t kc, int nr)
{
    for (int j = 0; j < nr; j++) {
        if (j0 + j < N) {
            const float *src = B + (j0 + j) * ldb + p0;
            for (int64_t p = 0; p < kc; p++)
                dst[p * nr + j] = src[p];
        } else {
            for (int64_t p = 0; p < kc; p++)
                dst[p * nr + j] = 0.0f;
        }
    }
}

typedef struct {
    float *C; int64_t ldc;
    const float *Ap, *Bp, *bias;
    int64_t M, N, kc;
    float alpha;
    int overwrite, nr;
    kern_fn kern;
} tile_job;

static void run_tile(const tile_job *t, int64_t i0, int64_t j0)
{
    int64_t i1 = i0 + MC < t->M ? i0 + MC : t->M, j1 = j0 + NCB < t->N ? j0 + NCB : t->N;
    float tmp[MR * NR_MAX];
    for (int64_t jr = j0; jr < j1; jr += t->nr) {
        const float *b = t->Bp + (jr / t->nr) * t->nr * t->kc;
        int64_t nrem = j1 - jr < t->nr ? j1 - jr : t->nr;
        const float *bias = t->bias ? t->bias + jr : NULL;
        for (int64_t ir = i0; ir < i1; ir += MR) {
            const float *a = t->Ap + (ir / MR) * MR * t->kc;
            int64_t mrem = i1 - ir < MR ? i1 - ir : MR;
            float *c = t->C + ir * t->ldc + jr;
            if (mrem == MR && nrem == t->nr) {
                t->kern(t->kc, a, b, c, t->ldc, t->alpha, t->overwrite, bias);
            } else {
                t->kern(t->kc, a, b, tmp, t->nr, 1.0f, 1, NULL);
                for (int64_t i = 0; i < mrem; i++)
                    store_row(c + i * t->ldc, tmp + i * t->nr, nrem, t->alpha, t->overwrite, bias);
            }
        }
    }
}

/* K == 0: the product is zero, so C is bias (or 0), or C += bias when accumulating. */
static void gemm_k0(float *C, int64_t ldc, const float *bias, int64_t M, int64_t N, int accumulate)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float v = bias ? bias[j] : 0.0f;
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + v : v;
        }
}

int ma__gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                const float *bias, int64_t M, int64_t N, int64_t K, float alpha, int accumulate,
                int isa, int parallel)
{
    if (M == 0 || N == 0)
        return MA_OK;
    if (K == 0) {
        gemm_k0(C, ldc, bias, M, N, accumulate);
        return MA_OK;
    }
    int nr = isa == MA_ISA_AVX512 ? 32 : 16;
    kern_fn kern = isa == MA_ISA_AVX512 ? kern_avx512 : isa == MA_ISA_AVX2 ? kern_avx2 : kern_portable;
    int64_t kcmax = K < KC ? K : KC;
    int64_t na = (M + MR - 1) / MR, nb = (N + nr - 1) / nr;
    float *Ap = malloc((size_t)(na * MR * kcmax) * sizeof(float));
    float *Bp = malloc((size_t)(nb * nr * kcmax) * sizeof(float));
    if (!Ap || !Bp) {
        free(Ap);
        free(Bp);
        return MA_ERR_NOMEM;
    }
    int64_t nib = (M + MC - 1) / MC, njb = (N + NCB - 1) / NCB;
    int go_parallel = parallel && (double)M * (double)N * (double)K > 131072.0;
    (void)go_parallel;
#ifdef _OPENMP
#pragma omp parallel if (go_parallel)
#endif
    for (int64_t p0 = 0; p0 < K; p0 += KC) {
        int64_t kc = K - p0 < KC ? K - p0 : KC;
        tile_job t = {C, ldc, Ap, Bp, p0 == 0 ? bias : NULL, M, N, kc, alpha,
                      p0 == 0 && !accumulate, nr, kern};
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t s = 0; s < nb; s++)
            pack_b(Bp + s * nr * kc, B, ldb, s * nr, N, p0, kc, nr);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t s = 0; s < na; s++)
            pack_a(Ap + s * MR * kc, A, lda, s * MR, M, p0, kc);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t tt = 0; tt < nib * njb; tt++)
            run_tile(&t, (tt / njb) * MC, (tt % njb) * NCB);
    }
    free(Ap);
    free(Bp);
    return MA_OK;
}

static int linear_checked(float *y, const float *x, const float *w, const float *b,
                          int64_t rows, int64_t k, int64_t m, int isa)
{
    int64_t nx, nw, ny;
    int st;
    if ((st = ma__mul(rows, k, &nx)) || (st = ma__mul(m, k, &nw)) || (st = ma__mul(rows, m, &ny)))
        return st;
    if ((!y && ny) || (!x && nx) || (!w && nw))
        return MA_ERR_NULL;
    return ma__gemm_nt(y, m, x, k, w, k, b, rows, m, k, 1.0f, 0, isa, 1);
}

int ma_linear_f32_isa(float *y, const float *x, const float *w, const float *b,
                      int64_t rows, int64_t k, int64_t m, int isa)
{
    int resolved, st = ma__resolve_isa(isa, &resolved);
    if (st)
        return st;
    return linear_checked(y, x, w, b, rows, k, m, resolved);
}

int ma_linear_f32(float *y, const float *x, const float *w, const float *b,
                  int64_t rows, int64_t k, int64_t m)
{
    return linear_checked(y, x, w, b, rows, k, m, ma_best_isa());
}
