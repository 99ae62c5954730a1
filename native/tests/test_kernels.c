/* Plain-C tests of the native kernels against naive references; run under ASan/UBSan by
 * native/run_sanitizers.sh.  Exit status 0 = all passed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "minadapters.h"

static int failures = 0;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static uint64_t rng_state = 88172645463325252ull;
static float frand(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static float *randv(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static void test_linear(int64_t rows, int64_t k, int64_t m, int isa)
{
    float *x = randv(rows * k), *w = randv(m * k), *b = randv(m), *y = randv(rows * m);
    int st = ma_linear_f32_isa(y, x, w, b, rows, k, m, isa);
    if (st == MA_ERR_ISA)
        goto out;
    CHECK(st == MA_OK, "linear status %d", st);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = b[j], mag = fabs(b[j]);
            for (int64_t p = 0; p < k; p++) {
                acc += (double)x[i * k + p] * w[j * k + p];
                mag += fabs((double)x[i * k + p] * w[j * k + p]);
            }
            if (fabs(y[i * m + j] - acc) > 1e-4 * mag + 1e-30) {
                CHECK(0, "linear isa %d (%lld,%lld,%lld) at %lld,%lld: %g vs %g", isa, (long long)rows,
                      (long long)k, (long long)m, (long long)i, (long long)j, y[i * m + j], acc);
                goto out;
            }
        }
out:
    free(x); free(w); free(b); free(y);
}

static void test_softmax_norms_acts(void)
{
    int64_t rows = 5, n = 37;
    float *x = randv(rows * n), *y = randv(rows * n), *g = randv(n), *b = randv(n);
    CHECK(ma_softmax_f32(y, x, rows, n) == MA_OK, "softmax");
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += y[r * n + i];
        CHECK(fabs(s - 1.0) < 1e-5, "softmax row sum %g", s);
    }
    CHECK(ma_layer_norm_f32(y, x, g, b, rows, n, 1e-5f) == MA_OK, "layer_norm");
    CHECK(ma_rms_norm_f32(y, x, g, rows, n, 1e-6f) == MA_OK, "rms_norm");
    for (int act = MA_ACT_IDENTITY; act <= MA_ACT_SIGMOID; act++) {
        CHECK(ma_activation_f32(y, x, rows * n, act) == MA_OK, "act %d", act);
        for (int64_t i = 0; i < rows * n; i++) {
            float v = x[i], want = v;
            if (act == MA_ACT_GELU) want = 0.5f * v * (1.0f + erff(v / sqrtf(2.0f)));
            if (act == MA_ACT_SILU) want = v / (1.0f + expf(-v));
            if (act == MA_ACT_RELU) want = v > 0 ? v : 0;
            if (act == MA_ACT_SIGMOID) want = 1.0f / (1.0f + expf(-v));
            if (act == MA_ACT_GELU || act == MA_ACT_SILU || act == MA_ACT_RELU || act == MA_ACT_SIGMOID ||
                act == MA_ACT_IDENTITY)
                CHECK(fabsf(y[i] - want) <= 1e-6f, "act %d x=%g: %g vs %g", act, v, y[i], want);
        }
    }
    CHECK(ma_activation_f32(y, x, n, 99) == MA_ERR_ARG, "bad act");
    free(x); free(y); free(g); free(b);
}

static void test_attention(void)
{
    int64_t B = 2, N = 3, Tq = 5, Tk = 7, Dh = 9;
    float *q = randv(B * N * Tq * Dh), *k = randv(B * N * Tk * Dh), *v = randv(B * N * Tk * Dh);
    float *o = randv(B * N * Tq * Dh), *mask = randv(B * Tk);
    int64_t s[15] = {N * Tq * Dh, Tq * Dh, Dh, N * Tq * Dh, Tq * Dh, Dh, N * Tk * Dh, Tk * Dh, Dh,
                     N * Tk * Dh, Tk * Dh, Dh, Tk, 0, 0};
    CHECK(ma_attention_f32(o, q, k, v, mask, s, B, N, Tq, Tk, Dh, 1.0f / 3.0f) == MA_OK, "attention");
    for (int64_t bn = 0; bn < B * N; bn++)
        for (int64_t i = 0; i < Tq; i++) {
            double sc[7], mx = -1e300, sum = 0;
            for (int64_t j = 0; j < Tk; j++) {
                double d = 0;
                for (int64_t e = 0; e < Dh; e++)
                    d += (double)q[(bn * Tq + i) * Dh + e] * k[(bn * Tk + j) * Dh + e];
                sc[j] = d / 3.0 + mask[(bn / N) * Tk + j];
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int64_t j = 0; j < Tk; j++)
                sum += (sc[j] = exp(sc[j] - mx));
            for (int64_t e = 0; e < Dh; e++) {
                double want = 0;
                for (int64_t j = 0; j < Tk; j++)
                    want += sc[j] / sum * v[(bn * Tk + j) * Dh + e];
                CHECK(fabs(o[(bn * Tq + i) * Dh + e] - want) < 1e-5, "attention %g vs %g",
                      o[(bn * Tq + i) * Dh + e], want);
            }
        }
    s[14] = -1;
    CHECK(ma_attention_f32(o, q, k, v, mask, s, B, N, Tq, Tk, Dh, 1.0f) == MA_ERR_SIZE, "neg stride");
    free(q); free(k); free(v); free(o); free(mask);
}

static void test_adapters(void)
{
    int64_t rows = 13, d = 20, r = 3, m = 11;
    float *x = randv(rows * d), *wd = randv(r * d), *wu = randv(d * r), *y = randv(rows * d);
    float *a = randv(2 * r * d), *b = randv(2 * m * r), *y2 = randv(rows * m), *y3 = malloc(rows * m * sizeof(float));
    CHECK(ma_bottleneck_f32(y, x, wd, NULL, wu, NULL, rows, d, r, 0.5f, MA_ACT_RELU) == MA_OK, "bottleneck");
    for (int64_t i = 0; i < rows * m; i++)
        y3[i] = y2[i];
    CHECK(ma_lora_add_f32(y2, x, a, b, rows, d, r, m, 2.0f) == MA_OK, "lora");
    int64_t starts[3] = {0, 6, rows}, ads[2] = {0, -1};
    float scales[2] = {2.0f, 1.0f};
    CHECK(ma_sgmv_lora_add_f32(y3, x, a, b, starts, ads, scales, rows, d, r, m, 2, 2) == MA_OK, "sgmv");
    for (int64_t i = 0; i < 6 * m; i++)
        CHECK(fabsf(y2[i] - y3[i]) < 1e-5f, "sgmv vs lora %g %g", y2[i], y3[i]);
    starts[1] = 20;
    CHECK(ma_sgmv_lora_add_f32(y3, x, a, b, starts, ads, scales, rows, d, r, m, 2, 2) == MA_ERR_ARG, "bad seg");
    CHECK(ma_lora_add_f32(y2, x, a, NULL, rows, d, r, m, 2.0f) == MA_ERR_NULL, "null");
    free(x); free(wd); free(wu); free(y); free(a); free(b); free(y2); free(y3);
}

int main(void)
{
    int64_t shapes[][3] = {{0, 5, 3}, {1, 1, 1}, {1, 768, 33}, {7, 9, 13}, {6, 16, 16}, {97, 257, 129},
                           {200, 300, 70}, {5, 0, 4}, {3, 4, 0}};
    CHECK(ma_abi_version() == MA_ABI_VERSION, "abi");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int isa = MA_ISA_AUTO; isa <= MA_ISA_AVX512; isa++)
            test_linear(shapes[s][0], shapes[s][1], shapes[s][2], isa);
    CHECK(ma_linear_f32(NULL, NULL, NULL, NULL, 2, 2, 2) == MA_ERR_NULL, "null");
    CHECK(ma_linear_f32(NULL, NULL, NULL, NULL, -2, 2, 2) == MA_ERR_SIZE, "negative");
    test_softmax_norms_acts();
    test_attention();
    test_adapters();
    printf("%s (%d failures)\n", failures ? "FAILED" : "all native C tests passed", failures);
    return failures ? 1 : 0;
}
