/* OPS-3 softmax, OPS-4 layer_norm, OPS-5 rms_norm, OPS-6 activations.
 *
 * exp is a Cephes-style range reduction + degree-5 polynomial (about 2 ulp), with the argument
 * clamped to [-87, 88] so 2^n never leaves the normal range; NaN propagates.  Exact GELU uses
 * the Numerical Recipes erfc (fractional error < 1.2e-7), the same formula as the NumPy
 * reference in functional/activations.py, written as x*(1 - erfc/2) for x >= 0 and
 * x*erfc/2 for x < 0 so that neither branch cancels.
 */
#include <math.h>
#include <string.h>
#include <immintrin.h>
#include "internal.h"

#define EXP_LO (-87.0f)
#define EXP_HI 88.0f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
#define INV_SQRT2 0.70710678118654752f
#define GELU_C 0.79788456080286536f     /* sqrt(2/pi) */
#define CHUNK 4096

static const float ERFC_C[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f,
                                 0.27886807f, -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};

/* ---------------------------------------------------------------- scalar (portable) */

static inline float exp_s(float x)
{
    x = x < EXP_LO ? EXP_LO : x;           /* NaN fails both compares and passes through */
    x = x > EXP_HI ? EXP_HI : x;
    float n = floorf(x * LOG2E + 0.5f);
    float r = x - n * LN2_HI - n * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    if (n != n)
        return p;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float gelu_s(float x)
{
    float z = fabsf(x) * INV_SQRT2;
    float t = 1.0f / (1.0f + 0.5f * z);
    float poly = ERFC_C[9];
    for (int i = 8; i >= 0; i--)
        poly = poly * t + ERFC_C[i];
    float h = 0.5f * t * exp_s(-z * z + poly);      /* erfc(z) / 2 */
    return x >= 0.0f ? x * (1.0f - h) : x * h;
}

static inline float act_s(float x, int act)
{
    switch (act) {
    case MA_ACT_RELU: return x > 0.0f ? x : 0.0f * x;
    case MA_ACT_GELU: return gelu_s(x);
    case MA_ACT_GELU_TANH: return x / (1.0f + exp_s(-2.0f * GELU_C * (x + 0.044715f * x * x * x)));
    case MA_ACT_SILU: return x / (1.0f + exp_s(-x));
    case MA_ACT_QUICK_GELU: return x / (1.0f + exp_s(-1.702f * x));
    case MA_ACT_SIGMOID: return 1.0f / (1.0f + exp_s(-x));
    default: return x;
    }
}

/* ---------------------------------------------------------------- AVX2 + FMA */

MA_AVX2_FN static inline __m256 exp_v(__m256 x)
{
    x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);       /* second operand NaN -> NaN kept */
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

MA_AVX2_FN static inline __m256 gelu_v(__m256 x)
{
    __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(INV_SQRT2));
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, one));
    __m256 poly = _mm256_set1_ps(ERFC_C[9]);
    for (int i = 8; i >= 0; i--)
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERFC_C[i]));
    __m256 h = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t),
                             exp_v(_mm256_fnmadd_ps(z, z, poly)));
    __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_mul_ps(x, _mm256_blendv_ps(h, _mm256_sub_ps(one, h), pos));
}

/* x / (1 + exp(c * u)) */
MA_AVX2_FN static inline __m256 div_1pexp(__m256 x, __m256 u, float c)
{
    __m256 e = exp_v(_mm256_mul_ps(_mm256_set1_ps(c), u));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

MA_AVX2_FN static void act_span_avx2(float *y, const float *x, int64_t n, int act)
{
    int64_t i = 0;
    __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), r;
        switch (act) {
        case MA_ACT_RELU: r = _mm256_max_ps(_mm256_setzero_ps(), v); break;   /* NaN kept */
        case MA_ACT_GELU: r = gelu_v(v); break;
        case MA_ACT_GELU_TANH: {
            __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
            r = div_1pexp(v, _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v), -2.0f * GELU_C);
            break;
        }
        case MA_ACT_SILU: r = div_1pexp(v, v, -1.0f); break;
        case MA_ACT_QUICK_GELU: r = div_1pexp(v, v, -1.702f); break;
        case MA_ACT_SIGMOID: r = div_1pexp(one, v, -1.0f); break;
        default: r = v;
        }
        _mm256_storeu_ps(y + i, r);
    }
    for (; i < n; i++)
        y[i] = act_s(x[i], act);
}

MA_AVX2_FN static void softmax_row_avx2(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    float mx = -INFINITY;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8)
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float tmp[8];
    _mm256_storeu_ps(tmp, vm);
    for (int j = 0; j < 8; j++)
        mx = tmp[j] > mx ? tmp[j] : mx;
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    __m256 vmx = _mm256_set1_ps(mx), vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_v(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(y + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    _mm256_storeu_ps(tmp, vs);
    float s = 0.0f;
    for (int j = 0; j < 8; j++)
        s += tmp[j];
    for (; i < n; i++) {
        y[i] = exp_s(x[i] - mx);
        s += y[i];
    }
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv));
    for (; i < n; i++)
        y[i] *= 1.0f / s;
}

/* ---------------------------------------------------------------- online-softmax helper (attention) */

MA_AVX2_FN static float exp_shift_avx2(float *p, const float *s, int64_t n, float m)
{
    int64_t i = 0;
    __m256 vm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_v(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(p + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float tmp[8], sum = 0.0f;
    _mm256_storeu_ps(tmp, vs);
    for (int j = 0; j < 8; j++)
        sum += tmp[j];
    for (; i < n; i++) {
        p[i] = exp_s(s[i] - m);
        sum += p[i];
    }
    return sum;
}

MA_AVX2_FN static float add_max_avx2(float *row, const float *mask, int64_t n)
{
    int64_t i = 0;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(row + i);
        if (mask) {
            x = _mm256_add_ps(x, _mm256_loadu_ps(mask + i));
            _mm256_storeu_ps(row + i, x);
        }
        vm = _mm256_max_ps(vm, x);
    }
    float tmp[8], mx = -INFINITY;
    _mm256_storeu_ps(tmp, vm);
    for (int j = 0; j < 8; j++)
        mx = tmp[j] > mx ? tmp[j] : mx;
    for (; i < n; i++) {
        if (mask)
            row[i] += mask[i];
        mx = row[i] > mx ? row[i] : mx;
    }
    return mx;
}

float ma__add_max_row(float *row, const float *mask, int64_t n, int isa)
{
    if (isa >= MA_ISA_AVX2)
        return add_max_avx2(row, mask, n);
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (mask)
            row[i] += mask[i];
        mx = row[i] > mx ? row[i] : mx;
    }
    return mx;
}

float ma__exp_shift_row(float *p, const float *s, int64_t n, float m, int isa)
{
    if (isa >= MA_ISA_AVX2)
        return exp_shift_avx2(p, s, n, m);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        p[i] = exp_s(s[i] - m);
        sum += p[i];
    }
    return sum;
}

/* ---------------------------------------------------------------- dispatch + rows */

static void softmax_row_portable(float *y, const float *x, int64_t n)
{
    float mx = -INFINITY, s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) {
        y[i] = exp_s(x[i] - mx);
        s += y[i];
    }
    for (int64_t i = 0; i < n; i++)
        y[i] *= 1.0f / s;
}

void ma__softmax_row(float *y, const float *x, int64_t n, int isa)
{
    if (n == 0)
        return;
    if (isa >= MA_ISA_AVX2)
        softmax_row_avx2(y, x, n);
    else
        softmax_row_portable(y, x, n);
}

void ma__act_span(float *y, const float *x, int64_t n, int act, int isa)
{
    if (isa >= MA_ISA_AVX2) {
        act_span_avx2(y, x, n, act);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        y[i] = act_s(x[i], act);
}

/* Mean and biased variance of one row, accumulated in double. */
static void moments(const float *x, int64_t n, double *mean, double *var, int center)
{
    double s = 0.0, q = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    double mu = center && n ? s / (double)n : 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mu;
        q += d * d;
    }
    *mean = mu;
    *var = n ? q / (double)n : 0.0;
}

/* moments() with AVX-512: 4 independent double accumulators (the serial double sums are add-latency bound). */
MA_AVX512_FN static void moments_avx512(const float *x, int64_t n, double *mean, double *var, int center)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
        s2 = _mm512_add_pd(s2, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)));
        s3 = _mm512_add_pd(s3, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)));
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
    for (; i < n; i++)
        s += x[i];
    double mu = center && n ? s / (double)n : 0.0;
    __m512d vm = _mm512_set1_pd(mu), q0 = _mm512_setzero_pd(), q1 = q0, q2 = q0, q3 = q0, d;
    for (i = 0; i + 32 <= n; i += 32) {
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), vm); q0 = _mm512_fmadd_pd(d, d, q0);
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), vm); q1 = _mm512_fmadd_pd(d, d, q1);
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)), vm); q2 = _mm512_fmadd_pd(d, d, q2);
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)), vm); q3 = _mm512_fmadd_pd(d, d, q3);
    }
    for (; i + 8 <= n; i += 8) {
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), vm);
        q0 = _mm512_fmadd_pd(d, d, q0);
    }
    double q = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(q0, q1), _mm512_add_pd(q2, q3)));
    for (; i < n; i++) {
        double e = x[i] - mu;
        q += e * e;
    }
    *mean = mu;
    *var = n ? q / (double)n : 0.0;
}

/* y = (x - mu) / sigma * g + b with x - mu in double: a float-rounded mean loses the low bits of
 * x - mu when the variance is tiny against eps (|x| large, values nearly equal). */
static void ln_scale(float *y, const float *x, const float *g, const float *b, int64_t n, double mu, double rs)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)(((double)x[i] - mu) * rs) * g[i] + (b ? b[i] : 0.0f);
}

MA_AVX512_FN static void ln_scale_avx512(float *y, const float *x, const float *g, const float *b, int64_t n,
                                         double mu, double rs)
{
    if (b)
        for (int64_t i = 0; i < n; i++)
            y[i] = (float)(((double)x[i] - mu) * rs) * g[i] + b[i];
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = (float)(((double)x[i] - mu) * rs) * g[i];
}

static int check_rows(const float *y, const float *x, int64_t rows, int64_t n, int64_t *total)
{
    int st = ma__mul(rows, n, total);
    if (st)
        return st;
    if (*total && (!y || !x))
        return MA_ERR_NULL;
    return MA_OK;
}

static int softmax_rows(float *y, const float *x, int64_t rows, int64_t n, int isa)
{
    int64_t total;
    int st = check_rows(y, x, rows, n, &total);
    if (st || total == 0)
        return st;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (total > 32768)
#endif
    for (int64_t r = 0; r < rows; r++)
        ma__softmax_row(y + r * n, x + r * n, n, isa);
    return MA_OK;
}

int ma_softmax_f32(float *y, const float *x, int64_t rows, int64_t n)
{
    return softmax_rows(y, x, rows, n, ma_best_isa());
}

int ma_softmax_f32_isa(float *y, const float *x, int64_t rows, int64_t n, int isa)
{
    int resolved, st = ma__resolve_isa(isa, &resolved);
    return st ? st : softmax_rows(y, x, rows, n, resolved);
}

/* LayerNorm (center = 1: (x - mean) / sqrt(var + eps) * g + b) and RMSNorm (center = 0: x / sqrt(mean(x^2) + eps)
 * * g) share the checks and the row loop; only the moments and the final scaling differ. */
static int norm_rows(float *y, const float *x, const float *g, const float *b, int64_t rows, int64_t n,
                     float eps, int center, int isa)
{
    int64_t total;
    int st = check_rows(y, x, rows, n, &total);
    if (st || total == 0)
        return st;
    if (!g)
        return MA_ERR_NULL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (total > 32768)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double mu, var;
        if (isa == MA_ISA_AVX512)
            moments_avx512(xr, n, &mu, &var, center);
        else
            moments(xr, n, &mu, &var, center);
        if (center) {
            double rs = 1.0 / sqrt(var + (double)eps);
            if (isa == MA_ISA_AVX512)
                ln_scale_avx512(yr, xr, g, b, n, mu, rs);
            else
                ln_scale(yr, xr, g, b, n, mu, rs);
        } else {
            float rs = (float)(1.0 / sqrt(var + (double)eps));
            for (int64_t i = 0; i < n; i++)
                yr[i] = g[i] * (xr[i] * rs);
        }
    }
    return MA_OK;
}

int ma_layer_norm_f32(float *y, const float *x, const float *g, const float *b,
                      int64_t rows, int64_t n, float eps)
{
    return norm_rows(y, x, g, b, rows, n, eps, 1, ma_best_isa());
}

int ma_rms_norm_f32(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps)
{
    return norm_rows(y, x, g, NULL, rows, n, eps, 0, ma_best_isa());
}

int ma_layer_norm_f32_isa(float *y, const float *x, const float *g, const float *b,
                          int64_t rows, int64_t n, float eps, int isa)
{
    int resolved, st = ma__resolve_isa(isa, &resolved);
    return st ? st : norm_rows(y, x, g, b, rows, n, eps, 1, resolved);
}

int ma_rms_norm_f32_isa(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps, int isa)
{
    int resolved, st = ma__resolve_isa(isa, &resolved);
    return st ? st : norm_rows(y, x, g, NULL, rows, n, eps, 0, resolved);
}

static int activation_span(float *y, const float *x, int64_t n, int act, int isa)
{
    if (n < 0)
        return MA_ERR_SIZE;
    if (act < MA_ACT_IDENTITY || act > MA_ACT_SIGMOID)
        return MA_ERR_ARG;
    if (n == 0)
        return MA_OK;
    if (!y || !x)
        return MA_ERR_NULL;
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > 32768)
#endif
    for (int64_t c = 0; c < chunks; c++) {
        int64_t i0 = c * CHUNK, len = n - i0 < CHUNK ? n - i0 : CHUNK;
        ma__act_span(y + i0, x + i0, len, act, isa);
    }
    return MA_OK;
}

int ma_activation_f32(float *y, const float *x, int64_t n, int act)
{
    return activation_span(y, x, n, act, ma_best_isa());
}

int ma_activation_f32_isa(float *y, const float *x, int64_t n, int act, int isa)
{
    int resolved, st = ma__resolve_isa(isa, &resolved);
    return st ? st : activation_span(y, x, n, act, resolved);
}
