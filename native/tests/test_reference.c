/* Every optimised kernel against its scalar reference (native/src/reference.c) on random inputs, edge sizes
 * included (0 rows, 1 row, sizes off the SIMD widths 8 / 16 / 32 and the GEMM blocks), every instruction set
 * this CPU has where a kernel takes one (the *_isa entry points: linear, softmax, norms, activations).
 * Bound (spec/ops.md, spec/00-notation.md): |y - ref| <= ATOL + RTOL * max|ref| per output array; RoPE must
 * be bit-equal.  Run by native/run_sanitizers.sh under ASan + UBSan. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "minadapters.h"

#define RTOL 1e-4
#define ATOL 1e-5

static int failures = 0, checks = 0;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *randv(int64_t n, float scale)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = scale * frand();
    return p;
}

static float *nanv(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

static float *copyv(const float *src, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (n > 0)
        memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

/* Statuses equal and |y - ref| <= ATOL + RTOL max|ref| (exact: bit-equal). */
static void compare(const char *what, int st, int st_ref, const float *y, const float *ref, int64_t n, int exact)
{
    checks++;
    if (st != MA_OK || st_ref != MA_OK) {
        failures++;
        printf("FAIL %s: status %d, reference status %d\n", what, st, st_ref);
        return;
    }
    double mx = 0.0;
    for (int64_t i = 0; i < n; i++)
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)y[i] - ref[i]);
        int bad = exact ? memcmp(&y[i], &ref[i], sizeof(float)) != 0 : !(err <= ATOL + RTOL * mx);
        if (bad) {
            failures++;
            printf("FAIL %s at %lld: %.9g vs reference %.9g (max|ref| %g)\n", what, (long long)i, y[i], ref[i], mx);
            return;
        }
    }
}

static void test_linear(int64_t rows, int64_t k, int64_t m, int bias)
{
    float *x = randv(rows * k, 1), *w = randv(m * k, 1), *b = bias ? randv(m, 1) : NULL, *r = nanv(rows * m);
    char what[96];
    int st_ref = ma_ref_linear_f32(r, x, w, b, rows, k, m);
    for (int isa = MA_ISA_AUTO; isa <= MA_ISA_AVX512; isa++) {
        float *y = nanv(rows * m);
        int st = ma_linear_f32_isa(y, x, w, b, rows, k, m, isa);
        snprintf(what, sizeof what, "linear isa %d (%lld, %lld, %lld) bias %d", isa, (long long)rows,
                 (long long)k, (long long)m, bias);
        if (st != MA_ERR_ISA)                        /* an instruction set this CPU lacks */
            compare(what, st, st_ref, y, r, rows * m, 0);
        free(y);
    }
    float *y = nanv(rows * m);
    compare("linear (auto entry point)", ma_linear_f32(y, x, w, b, rows, k, m), st_ref, y, r, rows * m, 0);
    free(x); free(w); free(b); free(r); free(y);
}

static void test_matmul(int64_t batch, int64_t m, int64_t k, int64_t n, int share_a, int share_b, int bias)
{
    int64_t sa = share_a ? 0 : m * k, sb = share_b ? 0 : k * n;
    int64_t na = share_a ? m * k : batch * m * k, nb = share_b ? k * n : batch * k * n;
    float *a = randv(na, 1), *b = randv(nb, 1), *bi = bias ? randv(n, 1) : NULL;
    float *y = nanv(batch * m * n), *r = nanv(batch * m * n);
    char what[128];
    snprintf(what, sizeof what, "matmul batch %lld (%lld, %lld, %lld) shared %d%d bias %d", (long long)batch,
             (long long)m, (long long)k, (long long)n, share_a, share_b, bias);
    compare(what, ma_matmul_f32(y, a, b, bi, batch, m, k, n, sa, sb),
            ma_ref_matmul_f32(r, a, b, bi, batch, m, k, n, sa, sb), y, r, batch * m * n, 0);
    free(a); free(b); free(bi); free(y); free(r);
}

/* Contiguous (B, N, T, Dh) q / k / v; mask (B, 1, Tq, Tk) broadcast over heads, or none, or a fully
 * masked first row (-FLT_MAX, the finfo(float32).min models use). */
static void test_attention(int64_t B, int64_t N, int64_t Tq, int64_t Tk, int64_t Dh, int mask_kind)
{
    float *q = randv(B * N * Tq * Dh, 2), *k = randv(B * N * Tk * Dh, 2), *v = randv(B * N * Tk * Dh, 1);
    float *mask = mask_kind ? randv(B * Tq * Tk, 3) : NULL;
    if (mask_kind == 2)
        for (int64_t j = 0; j < Tk && B * Tq > 0; j++)
            mask[j] = -FLT_MAX;
    float *y = nanv(B * N * Tq * Dh), *r = nanv(B * N * Tq * Dh);
    int64_t s[15] = {N * Tq * Dh, Tq * Dh, Dh, N * Tq * Dh, Tq * Dh, Dh, N * Tk * Dh, Tk * Dh, Dh,
                     N * Tk * Dh, Tk * Dh, Dh, Tq * Tk, 0, Tk};
    float scale = Dh ? 1.0f / sqrtf((float)Dh) : 1.0f;
    char what[128];
    snprintf(what, sizeof what, "attention (%lld, %lld, %lld, %lld, %lld) mask %d", (long long)B, (long long)N,
             (long long)Tq, (long long)Tk, (long long)Dh, mask_kind);
    compare(what, ma_attention_f32(y, q, k, v, mask, s, B, N, Tq, Tk, Dh, scale),
            ma_ref_attention_f32(r, q, k, v, mask, s, B, N, Tq, Tk, Dh, scale), y, r, B * N * Tq * Dh, 0);
    free(q); free(k); free(v); free(mask); free(y); free(r);
}

/* The fused kernel with GQA, causal / sliding-window rules and mask layouts against ma_ref_attention_ex_f32:
 * out written (B, Tq, N, Dh) as NativeOps lays it out; mask 0 none, 1 (B, 1, Tq, Tk) broadcast over heads,
 * 2 per head (B, N, Tq, Tk), 3 key padding (B, 1, 1, Tk) with -FLT_MAX at padded keys (stride 0 over rows),
 * 4 kind 1 with a first row of -FLT_MAX.  Sizes cross the query (256) and key (256) blocks. */
static void test_attention_ex(int64_t B, int64_t N, int64_t Nkv, int64_t Tq, int64_t Tk, int64_t Dh, int mask_kind,
                              int causal, int64_t window)
{
    float *q = randv(B * N * Tq * Dh, 2), *k = randv(B * Nkv * Tk * Dh, 2), *v = randv(B * Nkv * Tk * Dh, 1);
    int64_t nm = mask_kind == 2 ? B * N * Tq * Tk : mask_kind == 3 ? B * Tk : B * Tq * Tk;
    float *mask = mask_kind ? randv(nm, 3) : NULL;
    int64_t ms[3] = {Tq * Tk, 0, Tk};
    if (mask_kind == 2)
        ms[0] = N * Tq * Tk, ms[1] = Tq * Tk;
    if (mask_kind == 3) {
        ms[0] = Tk, ms[2] = 0;
        for (int64_t i = 0; i < nm; i++)
            mask[i] = (i % 3 == 1) ? -FLT_MAX : 0.0f;
    }
    if (mask_kind == 4)
        for (int64_t j = 0; j < Tk && B * Tq > 0; j++)
            mask[j] = -FLT_MAX;
    float *y = nanv(B * N * Tq * Dh), *r = nanv(B * N * Tq * Dh);
    int64_t s[15] = {Tq * N * Dh, Dh, N * Dh, N * Tq * Dh, Tq * Dh, Dh, Nkv * Tk * Dh, Tk * Dh, Dh,
                     Nkv * Tk * Dh, Tk * Dh, Dh, ms[0], ms[1], ms[2]};
    float scale = Dh ? 1.0f / sqrtf((float)Dh) : 1.0f;
    char what[160];
    snprintf(what, sizeof what, "attention_ex (%lld, %lld/%lld, %lld, %lld, %lld) mask %d causal %d window %lld",
             (long long)B, (long long)N, (long long)Nkv, (long long)Tq, (long long)Tk, (long long)Dh, mask_kind,
             causal, (long long)window);
    compare(what, ma_attention_ex_f32(y, q, k, v, mask, s, B, N, Nkv, Tq, Tk, Dh, scale, causal, window),
            ma_ref_attention_ex_f32(r, q, k, v, mask, s, B, N, Nkv, Tq, Tk, Dh, scale, causal, window), y, r,
            B * N * Tq * Dh, 0);
    free(q); free(k); free(v); free(mask); free(y); free(r);
}

/* Statuses of the fused kernel: kv_heads not dividing heads, negative window, and a row of -inf scores = NaN. */
static void test_attention_ex_edges(void)
{
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8}, o[8], mask[2] = {-INFINITY, -INFINITY};
    int64_t s[15] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0};
    checks += 4;
    if (ma_attention_ex_f32(o, q, q, q, NULL, s, 1, 3, 2, 1, 1, 2, 1.0f, 0, 0) != MA_ERR_ARG)
        failures++, printf("FAIL attention_ex: heads 3 / kv_heads 2 accepted\n");
    if (ma_attention_ex_f32(o, q, q, q, NULL, s, 1, 1, 1, 1, 1, 2, 1.0f, 0, -1) != MA_ERR_SIZE)
        failures++, printf("FAIL attention_ex: negative window accepted\n");
    if (ma_attention_ex_f32(o, q, q, q, mask, s, 1, 1, 1, 1, 2, 2, 1.0f, 0, 0) != MA_OK || o[0] == o[0])
        failures++, printf("FAIL attention_ex: a row of -inf scores gives %g, not NaN\n", o[0]);
    if (ma_attention_ex_f32(o, q, q, q, NULL, s, 1, 1, 1, 2, 1, 2, 1.0f, 1, 0) != MA_OK || o[0] != 0.0f)
        failures++, printf("FAIL attention_ex: a causal row with no key gives %g, not 0\n", o[0]);
}

static void test_rows(int64_t rows, int64_t n)
{
    float *x = randv(rows * n, 4), *g = randv(n, 1), *b = randv(n, 1);
    float *y = nanv(rows * n), *r = nanv(rows * n);
    char what[96];
    for (int isa = MA_ISA_AUTO; isa <= MA_ISA_AVX512; isa++) {
        if (ma_softmax_f32_isa(y, x, rows, n, isa) == MA_ERR_ISA)     /* an instruction set this CPU lacks */
            continue;
        snprintf(what, sizeof what, "softmax isa %d (%lld, %lld)", isa, (long long)rows, (long long)n);
        compare(what, ma_softmax_f32_isa(y, x, rows, n, isa), ma_ref_softmax_f32(r, x, rows, n), y, r, rows * n, 0);
        for (int with_b = 0; with_b < 2; with_b++) {
            snprintf(what, sizeof what, "layer_norm isa %d (%lld, %lld) bias %d", isa, (long long)rows,
                     (long long)n, with_b);
            compare(what, ma_layer_norm_f32_isa(y, x, g, with_b ? b : NULL, rows, n, 1e-5f, isa),
                    ma_ref_layer_norm_f32(r, x, g, with_b ? b : NULL, rows, n, 1e-5f), y, r, rows * n, 0);
        }
        snprintf(what, sizeof what, "rms_norm isa %d (%lld, %lld)", isa, (long long)rows, (long long)n);
        compare(what, ma_rms_norm_f32_isa(y, x, g, rows, n, 1e-6f, isa),
                ma_ref_rms_norm_f32(r, x, g, rows, n, 1e-6f), y, r, rows * n, 0);
    }
    snprintf(what, sizeof what, "softmax / norms (auto entry points) (%lld, %lld)", (long long)rows, (long long)n);
    compare(what, ma_softmax_f32(y, x, rows, n), ma_ref_softmax_f32(r, x, rows, n), y, r, rows * n, 0);
    compare(what, ma_layer_norm_f32(y, x, g, b, rows, n, 1e-5f), ma_ref_layer_norm_f32(r, x, g, b, rows, n, 1e-5f),
            y, r, rows * n, 0);
    compare(what, ma_rms_norm_f32(y, x, g, rows, n, 1e-6f), ma_ref_rms_norm_f32(r, x, g, rows, n, 1e-6f),
            y, r, rows * n, 0);
    free(x); free(g); free(b); free(y); free(r);
}

static void test_activations(int64_t n)
{
    float *x = randv(n, 8), *y = nanv(n), *r = nanv(n);
    if (n > 2) {
        x[0] = -100.0f;                                  /* the exp clamp */
        x[1] = 100.0f;
    }
    char what[64];
    for (int act = MA_ACT_IDENTITY; act <= MA_ACT_SIGMOID; act++) {
        for (int isa = MA_ISA_AUTO; isa <= MA_ISA_AVX512; isa++) {
            int st = ma_activation_f32_isa(y, x, n, act, isa);
            if (st == MA_ERR_ISA)
                continue;
            snprintf(what, sizeof what, "activation %d isa %d n %lld", act, isa, (long long)n);
            compare(what, st, ma_ref_activation_f32(r, x, n, act), y, r, n, 0);
        }
        snprintf(what, sizeof what, "activation %d n %lld", act, (long long)n);
        compare(what, ma_activation_f32(y, x, n, act), ma_ref_activation_f32(r, x, n, act), y, r, n, 0);
    }
    checks++;
    if (ma_ref_activation_f32(r, x, n, 99) != MA_ERR_ARG || ma_activation_f32(y, x, n, 99) != MA_ERR_ARG ||
        ma_activation_f32_isa(y, x, n, MA_ACT_RELU, 77) != MA_ERR_ARG) {
        failures++;
        printf("FAIL activation: unknown act or isa code not MA_ERR_ARG\n");
    }
    free(x); free(y); free(r);
}

static void test_bottleneck(int64_t rows, int64_t d, int64_t r, int act, int bias)
{
    float *x = randv(rows * d, 1), *wd = randv(r * d, 1), *wu = randv(d * r, 1);
    float *bd = bias ? randv(r, 1) : NULL, *bu = bias ? randv(d, 1) : NULL;
    float *y = nanv(rows * d), *ref = nanv(rows * d);
    char what[96];
    snprintf(what, sizeof what, "bottleneck (%lld, %lld, %lld) act %d bias %d", (long long)rows, (long long)d,
             (long long)r, act, bias);
    compare(what, ma_bottleneck_f32(y, x, wd, bd, wu, bu, rows, d, r, 0.75f, act),
            ma_ref_bottleneck_f32(ref, x, wd, bd, wu, bu, rows, d, r, 0.75f, act), y, ref, rows * d, 0);
    free(x); free(wd); free(wu); free(bd); free(bu); free(y); free(ref);
}

static void test_lora(int64_t rows, int64_t k, int64_t r, int64_t m)
{
    float *x = randv(rows * k, 1), *a = randv(2 * r * k, 1), *b = randv(2 * m * r, 1), *y0 = randv(rows * m, 1);
    float *y = copyv(y0, rows * m), *ref = copyv(y0, rows * m);
    char what[96];
    snprintf(what, sizeof what, "lora_add (%lld, %lld, %lld, %lld)", (long long)rows, (long long)k, (long long)r,
             (long long)m);
    compare(what, ma_lora_add_f32(y, x, a, b, rows, k, r, m, 1.5f),
            ma_ref_lora_add_f32(ref, x, a, b, rows, k, r, m, 1.5f), y, ref, rows * m, 0);
    /* segments: adapter 1, an empty one, none (-1), adapter 0 */
    int64_t cut1 = rows / 3, cut2 = rows / 2;
    int64_t starts[5] = {0, cut1, cut1, cut2, rows}, ads[4] = {1, 0, -1, 0};
    float scales[2] = {0.5f, 2.0f};
    memcpy(y, y0, (size_t)(rows * m > 0 ? rows * m : 0) * sizeof(float));
    memcpy(ref, y0, (size_t)(rows * m > 0 ? rows * m : 0) * sizeof(float));
    snprintf(what, sizeof what, "sgmv_lora_add (%lld, %lld, %lld, %lld)", (long long)rows, (long long)k,
             (long long)r, (long long)m);
    compare(what, ma_sgmv_lora_add_f32(y, x, a, b, starts, ads, scales, rows, k, r, m, 4, 2),
            ma_ref_sgmv_lora_add_f32(ref, x, a, b, starts, ads, scales, rows, k, r, m, 4, 2), y, ref, rows * m, 0);
    /* pointer form, mixed ranks: adapter 0 has rank r, adapter 1 rank r + 3 (its own arrays) */
    {
        float *a1 = randv((r + 3) * k, 1), *b1 = randv(m * (r + 3), 1);
        const float *ap[2] = {a, a1}, *bp[2] = {b, b1};
        int64_t ranks[2] = {r, r + 3};
        memcpy(y, y0, (size_t)(rows * m > 0 ? rows * m : 0) * sizeof(float));
        memcpy(ref, y0, (size_t)(rows * m > 0 ? rows * m : 0) * sizeof(float));
        snprintf(what, sizeof what, "sgmv_lora_add_ptr (%lld, %lld, %lld, %lld)", (long long)rows, (long long)k,
                 (long long)r, (long long)m);
        compare(what, ma_sgmv_lora_add_ptr_f32(y, x, ap, bp, ranks, starts, ads, scales, rows, k, m, 4, 2),
                ma_ref_sgmv_lora_add_ptr_f32(ref, x, ap, bp, ranks, starts, ads, scales, rows, k, m, 4, 2), y, ref,
                rows * m, 0);
        ranks[1] = -1;
        checks++;
        if (ma_sgmv_lora_add_ptr_f32(y, x, ap, bp, ranks, starts, ads, scales, rows, k, m, 4, 2) != MA_ERR_SIZE)
            failures++, printf("FAIL sgmv_lora_add_ptr accepted a negative rank\n");
        free(a1); free(b1);
    }
    starts[1] = rows + 1;
    checks++;
    if (ma_ref_sgmv_lora_add_f32(ref, x, a, b, starts, ads, scales, rows, k, r, m, 4, 2) != MA_ERR_ARG) {
        failures++;
        printf("FAIL sgmv reference accepted a bad segment table\n");
    }
    free(x); free(a); free(b); free(y0); free(y); free(ref);
}

static void test_rope(int64_t B, int64_t N, int64_t T, int64_t Dh, int shared)
{
    int64_t cs = shared ? 0 : T * Dh, ncs = shared ? T * Dh : B * T * Dh;
    float *x = randv(B * N * T * Dh, 3), *c = randv(ncs, 1), *s = randv(ncs, 1);
    float *y = nanv(B * N * T * Dh), *r = nanv(B * N * T * Dh);
    char what[96];
    snprintf(what, sizeof what, "rope (%lld, %lld, %lld, %lld) shared %d", (long long)B, (long long)N, (long long)T,
             (long long)Dh, shared);
    compare(what, ma_rope_f32(y, x, c, s, B, N, T, Dh, cs), ma_ref_rope_f32(r, x, c, s, B, N, T, Dh, cs),
            y, r, B * N * T * Dh, 1);
    free(x); free(c); free(s); free(y); free(r);
}

int main(void)
{
    static const int64_t lin[][3] = {{0, 5, 3}, {1, 1, 1}, {1, 768, 33}, {7, 9, 13}, {6, 16, 16}, {5, 0, 4},
                                     {3, 4, 0}, {97, 257, 129}, {130, 64, 31}, {200, 300, 70}, {2, 1025, 5},
                                     /* GEMV shapes (1..8 rows, K >= 64): the dot-product paths, K across DOT_KC */
                                     {3, 100, 9}, {8, 300, 70}, {5, 64, 4}, {7, 1030, 13}, {1, 2049, 6}, {9, 64, 5}};
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
        for (int bias = 0; bias < 2; bias++)
            test_linear(lin[i][0], lin[i][1], lin[i][2], bias);

    static const int64_t mm[][4] = {{0, 3, 4, 5}, {1, 0, 4, 5}, {1, 7, 0, 5}, {1, 1, 1, 1}, {1, 13, 17, 33},
                                    {3, 1, 64, 7}, {4, 9, 31, 16}, {2, 97, 129, 40}, {5, 6, 8, 0},
                                    {3, 5, 41, 3}, {1, 9, 70, 2}, {1, 2, 3, 4}, {6, 1, 3, 5}};
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++)
        for (int share = 0; share < 3; share++)
            test_matmul(mm[i][0], mm[i][1], mm[i][2], mm[i][3], share == 1, share == 2, (int)i % 2);

    static const int64_t at[][5] = {{1, 1, 1, 1, 1}, {2, 3, 5, 7, 9}, {1, 2, 0, 4, 8}, {2, 1, 3, 0, 4},
                                    {1, 4, 17, 33, 16}, {2, 2, 9, 130, 64}, {1, 1, 1, 8, 0}};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        for (int mk = 0; mk < 3; mk++)
            test_attention(at[i][0], at[i][1], at[i][2], at[i][3], at[i][4], mk);

    /* B, N, Nkv, Tq, Tk, Dh, window */
    static const int64_t ax[][7] = {{1, 1, 1, 1, 1, 1, 0}, {2, 4, 2, 5, 7, 9, 3}, {1, 6, 1, 70, 300, 16, 0},
                                    {1, 4, 4, 1, 513, 64, 100}, {2, 2, 1, 9, 4, 8, 2}, {1, 3, 3, 130, 130, 33, 40},
                                    {1, 2, 2, 0, 4, 8, 0}, {1, 2, 1, 3, 0, 4, 0}, {1, 2, 1, 260, 270, 16, 100}};
    for (size_t i = 0; i < sizeof ax / sizeof ax[0]; i++)
        for (int mk = 0; mk < 5; mk++)
            for (int causal = 0; causal < 2; causal++)
                test_attention_ex(ax[i][0], ax[i][1], ax[i][2], ax[i][3], ax[i][4], ax[i][5], mk, causal,
                                  (mk + causal) % 2 ? ax[i][6] : 0);
    test_attention_ex_edges();

    static const int64_t rows[][2] = {{0, 8}, {1, 1}, {1, 7}, {5, 8}, {3, 9}, {4, 33}, {2, 300}, {7, 768}, {3, 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        test_rows(rows[i][0], rows[i][1]);

    static const int64_t acts[] = {0, 1, 7, 8, 9, 17, 33, 1000, 5000};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        test_activations(acts[i]);

    static const int64_t bn[][3] = {{0, 8, 2}, {1, 1, 1}, {13, 20, 3}, {9, 33, 16}, {40, 64, 8}, {3, 5, 0}};
    for (size_t i = 0; i < sizeof bn / sizeof bn[0]; i++)
        for (int act = MA_ACT_IDENTITY; act <= MA_ACT_SIGMOID; act++)
            test_bottleneck(bn[i][0], bn[i][1], bn[i][2], act, (act + (int)i) % 2);

    static const int64_t lo[][4] = {{0, 4, 2, 3}, {1, 1, 1, 1}, {13, 20, 3, 11}, {30, 64, 8, 33}, {6, 9, 0, 5},
                                    {7, 0, 2, 4}};
    for (size_t i = 0; i < sizeof lo / sizeof lo[0]; i++)
        test_lora(lo[i][0], lo[i][1], lo[i][2], lo[i][3]);

    static const int64_t rp[][4] = {{1, 1, 1, 2}, {2, 3, 5, 8}, {1, 2, 7, 9}, {2, 4, 3, 64}, {0, 2, 3, 4},
                                    {1, 1, 1, 1}, {3, 2, 0, 4}};
    for (size_t i = 0; i < sizeof rp / sizeof rp[0]; i++)
        for (int shared = 0; shared < 2; shared++)
            test_rope(rp[i][0], rp[i][1], rp[i][2], rp[i][3], shared);

    printf("%s: %d kernel-vs-reference checks, %d failures\n", failures ? "FAILED" : "all passed", checks, failures);
    return failures ? 1 : 0;
}
