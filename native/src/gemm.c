/* OPS-1: packed, register-blocked SGEMM  C = alpha * A . B^T (+ bias), threaded with OpenMP.
 *
 * BLIS/GotoBLAS-style: B is packed once into NR-column slivers per KC-deep block (zero-padded);
 * each thread packs MC x KC blocks of A privately and runs an MR x NR register-blocked
 * micro-kernel over them.  Many rows: threads split the rows and share packing B (one barrier);
 * few rows: threads split the columns and pack only their own slivers (no barrier).
 * Micro-kernels: portable C (6 x 16), AVX2+FMA (6 x 16), AVX-512F (6 x 32).
 */
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "internal.h"

#define MR 6
#define KC 256
#define MC 96          /* 16 * MR */
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

/* Pack columns j0 .. j0+nr-1 of B stored (K, N) row-major (B not transposed) as dst[p*nr + j]. */
static void pack_b_kn(float *dst, const float *B, int64_t ldb, int64_t j0, int64_t N, int64_t p0, int64_t kc, int nr)
{
    int64_t w = N - j0 < nr ? N - j0 : nr;
    for (int64_t p = 0; p < kc; p++) {
        const float *src = B + (p0 + p) * ldb + j0;
        float *d = dst + p * nr;
        int64_t j = 0;
        for (; j < w; j++)
            d[j] = src[j];
        for (; j < nr; j++)
            d[j] = 0.0f;
    }
}

typedef struct {
    float *C; int64_t ldc;
    const float *A; int64_t lda;
    const float *Bp, *bias;   /* Bp: all of B packed, KC block after KC block */
    int64_t M, N, K, nb;
    float alpha;
    int accumulate, nr;
    kern_fn kern;
    int b_kn;                 /* B is (K, N) row-major instead of (N, K) */
} gemm_job;

/* Rows [r0, r1) x column slivers [s0, s1) of C, A packed privately into Ap (MC x KC). */
static void run_block(const gemm_job *t, float *Ap, int64_t r0, int64_t r1, int64_t s0, int64_t s1)
{
    float tmp[MR * NR_MAX];
    int nr = t->nr;
    for (int64_t i0 = r0; i0 < r1; i0 += MC) {
        int64_t i1 = i0 + MC < r1 ? i0 + MC : r1;
        for (int64_t p0 = 0; p0 < t->K; p0 += KC) {
            int64_t kc = t->K - p0 < KC ? t->K - p0 : KC;
            int overwrite = p0 == 0 && !t->accumulate;
            for (int64_t ir = i0; ir < i1; ir += MR)
                pack_a(Ap + (ir - i0) * kc, t->A, t->lda, ir, i1, p0, kc);
            for (int64_t s = s0; s < s1; s++) {
                int64_t jr = s * nr, nrem = t->N - jr < nr ? t->N - jr : nr;
                const float *b = t->Bp + p0 * t->nb * nr + s * nr * kc;
                const float *bias = (t->bias && p0 == 0) ? t->bias + jr : NULL;
                for (int64_t ir = i0; ir < i1; ir += MR) {
                    const float *a = Ap + (ir - i0) * kc;
                    int64_t mrem = i1 - ir < MR ? i1 - ir : MR;
                    float *c = t->C + ir * t->ldc + jr;
                    if (mrem == MR && nrem == nr) {
                        t->kern(kc, a, b, c, t->ldc, t->alpha, overwrite, bias);
                    } else {
                        t->kern(kc, a, b, tmp, nr, 1.0f, 1, NULL);
                        for (int64_t i = 0; i < mrem; i++)
                            store_row(c + i * t->ldc, tmp + i * nr, nrem, t->alpha, overwrite, bias);
                    }
                }
            }
        }
    }
}

/* Pack column slivers [s0, s1) of B for every KC block. */
static void pack_b_range(const gemm_job *t, float *Bp, const float *B, int64_t ldb, int64_t s0, int64_t s1)
{
    for (int64_t p0 = 0; p0 < t->K; p0 += KC) {
        int64_t kc = t->K - p0 < KC ? t->K - p0 : KC;
        for (int64_t s = s0; s < s1; s++) {
            float *dst = Bp + p0 * t->nb * t->nr + s * t->nr * kc;
            if (t->b_kn)
                pack_b_kn(dst, B, ldb, s * t->nr, t->N, p0, kc, t->nr);
            else
                pack_b(dst, B, ldb, s * t->nr, t->N, p0, kc, t->nr);
        }
    }
}

/* Split [0, n) into nt parts aligned to `align`; part i is [*lo, *hi). */
static void share(int64_t n, int64_t align, int i, int nt, int64_t *lo, int64_t *hi)
{
    int64_t units = (n + align - 1) / align;
    *lo = units * i / nt * align;
    *hi = units * (i + 1) / nt * align;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
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

/* ---- few rows (M <= DOT_MAX_M): dot products straight from unpacked B (AVX-512) ----------------
 * With few rows, packing B (the weight, read once per call anyway) costs as much as the product.
 * Here each 4 x 4 tile of C is 16 dot products along K over rows of A and B as they lie in memory;
 * K is walked in DOT_KC chunks so the four B rows stay in L1 while the rows of A stream past. */
#define DOT_MAX_M 128
#define DOT_KC 1024

/* [sum a0, sum a1, sum a2, sum a3] */
MA_AVX512_FN static inline __m128 sum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3)
{
    __m256 y0 = _mm256_add_ps(_mm512_castps512_ps256(a0), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a0), 1)));
    __m256 y1 = _mm256_add_ps(_mm512_castps512_ps256(a1), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a1), 1)));
    __m256 y2 = _mm256_add_ps(_mm512_castps512_ps256(a2), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a2), 1)));
    __m256 y3 = _mm256_add_ps(_mm512_castps512_ps256(a3), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a3), 1)));
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(y0, y1), _mm256_hadd_ps(y2, y3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* part[i*4 + j] += dot(a_i[0:kc], b_j[0:kc]) for the 4 x 4 tile; a_i / b_j may repeat (tails). */
MA_AVX512_FN static void dot_tile(float *part, const float *const *a, const float *const *b, int64_t kc)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    int64_t p = 0;
    for (; p < kc; p += 16) {
        __mmask16 m = kc - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (kc - p)) - 1u);
        __m512 b0 = _mm512_maskz_loadu_ps(m, b[0] + p), b1 = _mm512_maskz_loadu_ps(m, b[1] + p);
        __m512 b2 = _mm512_maskz_loadu_ps(m, b[2] + p), b3 = _mm512_maskz_loadu_ps(m, b[3] + p), t;
        t = _mm512_maskz_loadu_ps(m, a[0] + p);
        c00 = _mm512_fmadd_ps(t, b0, c00); c01 = _mm512_fmadd_ps(t, b1, c01);
        c02 = _mm512_fmadd_ps(t, b2, c02); c03 = _mm512_fmadd_ps(t, b3, c03);
        t = _mm512_maskz_loadu_ps(m, a[1] + p);
        c10 = _mm512_fmadd_ps(t, b0, c10); c11 = _mm512_fmadd_ps(t, b1, c11);
        c12 = _mm512_fmadd_ps(t, b2, c12); c13 = _mm512_fmadd_ps(t, b3, c13);
        t = _mm512_maskz_loadu_ps(m, a[2] + p);
        c20 = _mm512_fmadd_ps(t, b0, c20); c21 = _mm512_fmadd_ps(t, b1, c21);
        c22 = _mm512_fmadd_ps(t, b2, c22); c23 = _mm512_fmadd_ps(t, b3, c23);
        t = _mm512_maskz_loadu_ps(m, a[3] + p);
        c30 = _mm512_fmadd_ps(t, b0, c30); c31 = _mm512_fmadd_ps(t, b1, c31);
        c32 = _mm512_fmadd_ps(t, b2, c32); c33 = _mm512_fmadd_ps(t, b3, c33);
    }
    _mm_storeu_ps(part, _mm_add_ps(_mm_loadu_ps(part), sum4(c00, c01, c02, c03)));
    _mm_storeu_ps(part + 4, _mm_add_ps(_mm_loadu_ps(part + 4), sum4(c10, c11, c12, c13)));
    _mm_storeu_ps(part + 8, _mm_add_ps(_mm_loadu_ps(part + 8), sum4(c20, c21, c22, c23)));
    _mm_storeu_ps(part + 12, _mm_add_ps(_mm_loadu_ps(part + 12), sum4(c30, c31, c32, c33)));
}

/* Columns [j0, j1) of C, all M rows; part: scratch of 4 * DOT_MAX_M floats. */
static void dot_cols(const gemm_job *t, const float *B, int64_t ldb, int64_t j0, int64_t j1, float *part)
{
    for (int64_t j = j0; j < j1; j += 4) {
        int64_t nj = j1 - j < 4 ? j1 - j : 4;
        const float *b[4];
        for (int q = 0; q < 4; q++)
            b[q] = B + (j + (q < nj ? q : 0)) * ldb;
        memset(part, 0, (size_t)(4 * ((t->M + 3) / 4) * 4) * sizeof(float));
        for (int64_t p0 = 0; p0 < t->K; p0 += DOT_KC) {
            int64_t kc = t->K - p0 < DOT_KC ? t->K - p0 : DOT_KC;
            const float *bp[4] = {b[0] + p0, b[1] + p0, b[2] + p0, b[3] + p0};
            for (int64_t i = 0; i < t->M; i += 4) {
                const float *a[4];
                for (int q = 0; q < 4; q++)
                    a[q] = t->A + (i + (i + q < t->M ? q : 0)) * t->lda + p0;
                dot_tile(part + i * 4, a, bp, kc);
            }
        }
        for (int64_t i = 0; i < t->M; i++)
            store_row(t->C + i * t->ldc + j, part + i * 4, nj, t->alpha, !t->accumulate,
                      t->bias ? t->bias + j : NULL);
    }
}

static int gemm_dot(gemm_job *t, const float *B, int64_t ldb, int parallel)
{
    int nt = 1;
#ifdef _OPENMP
    if (parallel && (double)t->M * (double)t->N * (double)t->K > 131072.0 && !omp_in_parallel())
        nt = omp_get_max_threads();
#endif
    (void)parallel;
    (void)nt;                      /* only read by the OpenMP pragma */
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        float part[4 * DOT_MAX_M];
        int64_t j0, j1;
        share(t->N, 4, id, n, &j0, &j1);
        dot_cols(t, B, ldb, j0, j1, part);
    }
    return MA_OK;
}

/* ---- GEMV-shaped products on AVX2 (M <= GEMV_MAX_M): the same dot-product scheme as above, 2 x 4 tiles ------
 * Decode (1 to 8 rows against a weight) reads each weight row once from memory, straight from where it lies;
 * the packed path would copy the whole weight into a packed buffer first (three passes over it). */
#define GEMV_MAX_M 8

MA_AVX2_FN static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(s);
}

/* part[i*4 + j] += dot(a_i[0:kc], b_j[0:kc]) for i < 2, j < 4; a_i / b_j may repeat (tails). */
MA_AVX2_FN static void dot_tile_avx2(float *part, const float *const *a, const float *const *b, int64_t kc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 b0 = _mm256_loadu_ps(b[0] + p), b1 = _mm256_loadu_ps(b[1] + p);
        __m256 b2 = _mm256_loadu_ps(b[2] + p), b3 = _mm256_loadu_ps(b[3] + p), t;
        t = _mm256_loadu_ps(a[0] + p);
        c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        c02 = _mm256_fmadd_ps(t, b2, c02); c03 = _mm256_fmadd_ps(t, b3, c03);
        t = _mm256_loadu_ps(a[1] + p);
        c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        c12 = _mm256_fmadd_ps(t, b2, c12); c13 = _mm256_fmadd_ps(t, b3, c13);
    }
    float r[8] = {hsum8(c00), hsum8(c01), hsum8(c02), hsum8(c03), hsum8(c10), hsum8(c11), hsum8(c12), hsum8(c13)};
    for (; p < kc; p++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                r[i * 4 + j] += a[i][p] * b[j][p];
    for (int q = 0; q < 8; q++)
        part[q] += r[q];
}

/* Columns [j0, j1) of C, all M <= GEMV_MAX_M rows, K walked in DOT_KC chunks (four B rows stay in L1). */
static void dot_cols_avx2(const gemm_job *t, const float *B, int64_t ldb, int64_t j0, int64_t j1)
{
    float part[4 * GEMV_MAX_M];
    for (int64_t j = j0; j < j1; j += 4) {
        int64_t nj = j1 - j < 4 ? j1 - j : 4;
        const float *b[4];
        for (int q = 0; q < 4; q++)
            b[q] = B + (j + (q < nj ? q : 0)) * ldb;
        memset(part, 0, sizeof part);
        for (int64_t p0 = 0; p0 < t->K; p0 += DOT_KC) {
            int64_t kc = t->K - p0 < DOT_KC ? t->K - p0 : DOT_KC;
            const float *bp[4] = {b[0] + p0, b[1] + p0, b[2] + p0, b[3] + p0};
            for (int64_t i = 0; i < t->M; i += 2) {
                const float *a[2] = {t->A + i * t->lda + p0, t->A + (i + 1 < t->M ? i + 1 : i) * t->lda + p0};
                dot_tile_avx2(part + i * 4, a, bp, kc);
            }
        }
        for (int64_t i = 0; i < t->M; i++)
            store_row(t->C + i * t->ldc + j, part + i * 4, nj, t->alpha, !t->accumulate,
                      t->bias ? t->bias + j : NULL);
    }
}

static int gemv_avx2(gemm_job *t, const float *B, int64_t ldb, int parallel)
{
    int nt = 1;
#ifdef _OPENMP
    if (parallel && (double)t->M * (double)t->N * (double)t->K > 131072.0 && !omp_in_parallel())
        nt = omp_get_max_threads();
#endif
    (void)parallel;
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        int64_t j0, j1;
        share(t->N, 4, id, n, &j0, &j1);
        dot_cols_avx2(t, B, ldb, j0, j1);
    }
    return MA_OK;
}

static int gemm(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                const float *bias, int64_t M, int64_t N, int64_t K, float alpha, int accumulate,
                int isa, int parallel, int b_kn)
{
    if (M == 0 || N == 0)
        return MA_OK;
    if (K == 0) {
        gemm_k0(C, ldc, bias, M, N, accumulate);
        return MA_OK;
    }
    if (isa == MA_ISA_AVX512 && M <= DOT_MAX_M && K >= 64 && parallel && !b_kn) {
        gemm_job d = {C, ldc, A, lda, NULL, bias, M, N, K, 0, alpha, accumulate, 0, NULL, 0};
        return gemm_dot(&d, B, ldb, parallel);
    }
    if (isa == MA_ISA_AVX2 && M <= GEMV_MAX_M && K >= 64 && parallel && !b_kn) {
        gemm_job d = {C, ldc, A, lda, NULL, bias, M, N, K, 0, alpha, accumulate, 0, NULL, 0};
        return gemv_avx2(&d, B, ldb, parallel);
    }
    int nr = isa == MA_ISA_AVX512 ? 32 : 16;
    kern_fn kern = isa == MA_ISA_AVX512 ? kern_avx512 : isa == MA_ISA_AVX2 ? kern_avx2 : kern_portable;
    int64_t nb = (N + nr - 1) / nr;
    float *Bp = malloc((size_t)(nb * nr * K) * sizeof(float));
    if (!Bp)
        return MA_ERR_NOMEM;
    gemm_job t = {C, ldc, A, lda, Bp, bias, M, N, K, nb, alpha, accumulate, nr, kern, b_kn};
    int nt = 1, err = MA_OK;
#ifdef _OPENMP
    if (parallel && (double)M * (double)N * (double)K > 131072.0 && !omp_in_parallel())
        nt = omp_get_max_threads();
#endif
    /* Many rows: threads take row ranges and share the packing of B (one barrier).
     * Few rows: threads take column ranges, pack only their own part of B (no barrier). */
    int split_rows = M >= (int64_t)nt * 4 * MR;
    (void)split_rows;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        int64_t r0 = 0, r1 = M, s0 = 0, s1 = nb;
        float *Ap = malloc((size_t)(MC * KC) * sizeof(float));
        if (n > 1 && split_rows) {
            int64_t b0, b1;
            share(nb, 1, id, n, &b0, &b1);
            pack_b_range(&t, Bp, B, ldb, b0, b1);
#ifdef _OPENMP
#pragma omp barrier
#endif
            share(M, MR, id, n, &r0, &r1);
        } else {
            share(nb, 1, id, n, &s0, &s1);
            pack_b_range(&t, Bp, B, ldb, s0, s1);
        }
        if (Ap)
            run_block(&t, Ap, r0, r1, s0, s1);
        else {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            err = MA_ERR_NOMEM;
        }
        free(Ap);
    }
    free(Bp);
    return err;
}

int ma__gemm_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                const float *bias, int64_t M, int64_t N, int64_t K, float alpha, int accumulate,
                int isa, int parallel)
{
    return gemm(C, ldc, A, lda, B, ldb, bias, M, N, K, alpha, accumulate, isa, parallel, 0);
}

int ma__gemm_nn(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int64_t M, int64_t N, int64_t K, float alpha, int accumulate, int isa)
{
    return gemm(C, ldc, A, lda, B, ldb, NULL, M, N, K, alpha, accumulate, isa, 0, 1);
}

/* MA_OK when (batch - 1) * stride + size, one past the last element a batched operand touches, fits int64. */
static int check_extent(int64_t batch, int64_t stride, int64_t size)
{
    int64_t off;
    int st;
    if (stride < 0)
        return MA_ERR_SIZE;
    if ((st = ma__mul(batch > 0 ? batch - 1 : 0, stride, &off)))
        return st;
    return off > INT64_MAX - size ? MA_ERR_OVERFLOW : MA_OK;
}

/* y(m, n) = a(m, k) b(k, n) + bias as row updates y_i += a_ip b_p (b read in place).  For a few rows or a few
 * columns, packing b (k x 16 or 32 padded) costs as much as the product itself: fusion's per-token
 * (1, D) x (D, A) products are 10x faster this way than through the packed GEMM. */
#define SMALL_MATMUL 4
static void matmul_small(float *y, const float *a, const float *b, const float *bias, int64_t m, int64_t k,
                         int64_t n)
{
    if (n <= SMALL_MATMUL) {               /* a few columns: dot products along k (a row read once per column) */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const float *ai = a + i * k;
                float acc0 = 0.0f, acc1 = 0.0f;  /* two chains: half the add latency */
                int64_t p = 0;
                for (; p + 2 <= k; p += 2) {
                    acc0 += ai[p] * b[p * n + j];
                    acc1 += ai[p + 1] * b[(p + 1) * n + j];
                }
                if (p < k)
                    acc0 += ai[p] * b[p * n + j];
                y[i * n + j] = (bias ? bias[j] : 0.0f) + (acc0 + acc1);
            }
        return;
    }
    for (int64_t i = 0; i < m; i++) {
        float *yi = y + i * n;
        for (int64_t j = 0; j < n; j++)
            yi[j] = bias ? bias[j] : 0.0f;
        for (int64_t p = 0; p < k; p++) {
            float aip = a[i * k + p];
            const float *bp = b + p * n;
            for (int64_t j = 0; j < n; j++)
                yi[j] += aip * bp[j];
        }
    }
}

int ma_matmul_f32(float *y, const float *a, const float *b, const float *bias,
                  int64_t batch, int64_t m, int64_t k, int64_t n, int64_t stride_a, int64_t stride_b)
{
    int64_t na, nb, nyb, ny;
    int st;
    if (batch < 0)
        return MA_ERR_SIZE;
    if ((st = ma__mul(m, k, &na)) || (st = ma__mul(k, n, &nb)) || (st = ma__mul(m, n, &nyb)) ||
        (st = ma__mul(nyb, batch, &ny)) || (st = check_extent(batch, stride_a, na)) ||
        (st = check_extent(batch, stride_b, nb)))
        return st;
    if (ny == 0)
        return MA_OK;
    if (!y || (na && !a) || (nb && !b))
        return MA_ERR_NULL;
    int isa = ma_best_isa(), small = m <= SMALL_MATMUL || n <= SMALL_MATMUL;
    if (batch == 1 && !small)
        return gemm(y, n, a, k, b, n, bias, m, n, k, 1.0f, 0, isa, 1, 1);
    /* Many products: one per thread (each single-threaded), as attention shares out its heads. */
    int err = MA_OK;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)ny * (double)k > 131072.0 && !omp_in_parallel())
#endif
    for (int64_t i = 0; i < batch; i++) {
        const float *ai = na ? a + i * stride_a : a, *bi = nb ? b + i * stride_b : b;   /* no offset on NULL */
        int mine = MA_OK;
        if (small)
            matmul_small(y + i * nyb, ai, bi, bias, m, k, n);
        else
            mine = gemm(y + i * nyb, n, ai, k, bi, n, bias, m, n, k, 1.0f, 0, isa, 0, 1);
        if (mine) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            err = mine;
        }
    }
    return err;
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
