/* Scalar references, one per optimised kernel (llama2.c run.c style): plain loops, sums in double,
 * nothing tuned.  Same arguments and statuses as the kernels they stand beside (minadapters.h), minus the
 * overflow and instruction-set logic.  Every optimised kernel is tested against these
 * (native/tests/test_reference.c, tests/ops/test_reference.py); a device kernel will be too. */
#include <math.h>
#include <stdlib.h>
#include "internal.h"

#define SQRT_2_OVER_PI 0.79788456080286535588

static int sizes_ok(int64_t a, int64_t b, int64_t c, int64_t d)
{
    return a >= 0 && b >= 0 && c >= 0 && d >= 0;
}

/* OPS-6 on one value, in double: the equations of spec/ops.md, not the kernels' polynomials. */
static float act_ref(float v, int act)
{
    double x = v;
    switch (act) {
    case MA_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case MA_ACT_GELU: return (float)(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
    case MA_ACT_GELU_TANH:
        return (float)(0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))));
    case MA_ACT_SILU: return (float)(x / (1.0 + exp(-x)));
    case MA_ACT_QUICK_GELU: return (float)(x / (1.0 + exp(-1.702 * x)));
    case MA_ACT_SIGMOID: return (float)(1.0 / (1.0 + exp(-x)));
    default: return v;
    }
}

static int act_known(int act)
{
    return act >= MA_ACT_IDENTITY && act <= MA_ACT_SIGMOID;
}

/* OPS-1  y = x w^T + b */
int ma_ref_linear_f32(float *y, const float *x, const float *w, const float *b,
                      int64_t rows, int64_t k, int64_t m)
{
    if (!sizes_ok(rows, k, m, 0))
        return MA_ERR_SIZE;
    if ((rows && m && !y) || (rows && k && !x) || (m && k && !w))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = b ? b[j] : 0.0;
            for (int64_t p = 0; p < k; p++)
                acc += (double)x[i * k + p] * w[j * k + p];
            y[i * m + j] = (float)acc;
        }
    return MA_OK;
}

/* OPS-10  y[i] = a[i] b[i] + bias, b stored (k, n) */
int ma_ref_matmul_f32(float *y, const float *a, const float *b, const float *bias,
                      int64_t batch, int64_t m, int64_t k, int64_t n, int64_t stride_a, int64_t stride_b)
{
    if (!sizes_ok(batch, m, k, n) || stride_a < 0 || stride_b < 0)
        return MA_ERR_SIZE;
    if (!batch || !m || !n)
        return MA_OK;
    if (!y || (m && k && !a) || (k && n && !b))
        return MA_ERR_NULL;
    for (int64_t e = 0; e < batch; e++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = bias ? bias[j] : 0.0;
                for (int64_t p = 0; p < k; p++)
                    acc += (double)a[e * stride_a + i * k + p] * b[e * stride_b + p * n + j];
                y[(e * m + i) * n + j] = (float)acc;
            }
    return MA_OK;
}

/* OPS-2  out = softmax(scale q k^T + mask) v.  Scores are rounded to float and the mask added in float, as
 * NumPy does in float32 (a row masked with -FLT_MAX everywhere then gives uniform weights); Tk = 0 gives 0. */
static float score_ref(const float *q, const float *k, const float *mask, int64_t dh, float scale)
{
    double dot = 0.0;
    for (int64_t e = 0; e < dh; e++)
        dot += (double)q[e] * k[e];
    return (float)dot * scale + (mask ? *mask : 0.0f);
}

int ma_ref_attention_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                         const int64_t *strides, int64_t batch, int64_t heads, int64_t tq, int64_t tk,
                         int64_t head_dim, float scale)
{
    const int64_t *s = strides;
    if (!s)
        return MA_ERR_NULL;
    if (!sizes_ok(batch, heads, tq, tk) || head_dim < 0)
        return MA_ERR_SIZE;
    for (int i = 0; i < 15; i++)
        if (s[i] < 0)
            return MA_ERR_SIZE;
    if (!batch || !heads || !tq || !head_dim)
        return MA_OK;
    if (!out || !q || (tk && (!k || !v)))
        return MA_ERR_NULL;
    double *w = malloc((size_t)(tk + 1) * sizeof(double));        /* one row of weights */
    if (!w)
        return MA_ERR_NOMEM;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < tq; i++) {
                const float *qi = q + b * s[3] + h * s[4] + i * s[5];
                const float *mi = mask ? mask + b * s[12] + h * s[13] + i * s[14] : NULL;
                float *oi = out + b * s[0] + h * s[1] + i * s[2];
                double mx = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < tk; j++) {
                    w[j] = score_ref(qi, k + b * s[6] + h * s[7] + j * s[8], mi ? mi + j : NULL, head_dim, scale);
                    mx = w[j] > mx ? w[j] : mx;
                }
                for (int64_t j = 0; j < tk; j++)
                    sum += (w[j] = exp(w[j] - mx));
                for (int64_t e = 0; e < head_dim; e++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < tk; j++)
                        acc += w[j] / sum * v[b * s[9] + h * s[10] + j * s[11] + e];
                    oi[e] = (float)acc;
                }
            }
    free(w);
    return MA_OK;
}

/* OPS-2 with GQA (query head h reads kv head h / (heads / kv_heads)), causal and sliding-window rules:
 * key j is seen by query row i only when (causal: j <= i + Tk - Tq) and (window w > 0: j > i + Tk - Tq - w);
 * unseen keys get weight 0; a row that sees no key gives 0, a row whose every seen score is -inf gives NaN. */
int ma_ref_attention_ex_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                            const int64_t *strides, int64_t batch, int64_t heads, int64_t kv_heads, int64_t tq,
                            int64_t tk, int64_t head_dim, float scale, int causal, int64_t window)
{
    const int64_t *s = strides;
    if (!s)
        return MA_ERR_NULL;
    if (!sizes_ok(batch, heads, tq, tk) || head_dim < 0 || kv_heads < 0 || window < 0)
        return MA_ERR_SIZE;
    if (heads > 0 && (kv_heads == 0 || heads % kv_heads))
        return MA_ERR_ARG;
    for (int i = 0; i < 15; i++)
        if (s[i] < 0)
            return MA_ERR_SIZE;
    if (!batch || !heads || !tq || !head_dim)
        return MA_OK;
    if (!out || !q || (tk && (!k || !v)))
        return MA_ERR_NULL;
    double *w = malloc((size_t)(tk + 1) * sizeof(double));
    if (!w)
        return MA_ERR_NOMEM;
    int64_t group = heads / kv_heads;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < tq; i++) {
                const float *qi = q + b * s[3] + h * s[4] + i * s[5];
                const float *mi = mask ? mask + b * s[12] + h * s[13] + i * s[14] : NULL;
                float *oi = out + b * s[0] + h * s[1] + i * s[2];
                int64_t hk = h / group, pos = i + tk - tq, seen = 0;
                double mx = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < tk; j++) {
                    int ok = (!causal || j <= pos) && (window == 0 || j > pos - window);
                    w[j] = ok ? score_ref(qi, k + b * s[6] + hk * s[7] + j * s[8], mi ? mi + j : NULL, head_dim,
                                          scale) : NAN;
                    seen += ok;
                    if (ok)
                        mx = w[j] > mx ? w[j] : mx;
                }
                for (int64_t j = 0; j < tk; j++)
                    sum += (w[j] = w[j] == w[j] ? exp(w[j] - mx) : 0.0);
                for (int64_t e = 0; e < head_dim; e++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < tk; j++)
                        acc += w[j] * v[b * s[9] + hk * s[10] + j * s[11] + e];
                    oi[e] = seen == 0 ? 0.0f : (float)(acc / sum);
                }
            }
    free(w);
    return MA_OK;
}

/* OPS-3  softmax over rows of length n */
int ma_ref_softmax_f32(float *y, const float *x, int64_t rows, int64_t n)
{
    if (!sizes_ok(rows, n, 0, 0))
        return MA_ERR_SIZE;
    if (rows && n && (!y || !x))
        return MA_ERR_NULL;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            mx = xr[i] > mx ? xr[i] : mx;
        for (int64_t i = 0; i < n; i++)
            sum += exp(xr[i] - mx);
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = (float)(exp(xr[i] - mx) / sum);
    }
    return MA_OK;
}

/* OPS-4 (center = 1) and OPS-5 (center = 0) */
static int norm_ref(float *y, const float *x, const float *g, const float *b, int64_t rows, int64_t n,
                    float eps, int center)
{
    if (!sizes_ok(rows, n, 0, 0))
        return MA_ERR_SIZE;
    if (!rows || !n)
        return MA_OK;
    if (!y || !x || !g)
        return MA_ERR_NULL;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double mu = 0.0, var = 0.0;
        if (center) {
            for (int64_t i = 0; i < n; i++)
                mu += xr[i];
            mu /= (double)n;
        }
        for (int64_t i = 0; i < n; i++)
            var += ((double)xr[i] - mu) * ((double)xr[i] - mu);
        var /= (double)n;
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = (float)(((double)xr[i] - mu) / sqrt(var + (double)eps) * g[i] + (b ? b[i] : 0.0));
    }
    return MA_OK;
}

int ma_ref_layer_norm_f32(float *y, const float *x, const float *g, const float *b,
                          int64_t rows, int64_t n, float eps)
{
    return norm_ref(y, x, g, b, rows, n, eps, 1);
}

int ma_ref_rms_norm_f32(float *y, const float *x, const float *g, int64_t rows, int64_t n, float eps)
{
    return norm_ref(y, x, g, NULL, rows, n, eps, 0);
}

/* OPS-6 */
int ma_ref_activation_f32(float *y, const float *x, int64_t n, int act)
{
    if (n < 0)
        return MA_ERR_SIZE;
    if (!act_known(act))
        return MA_ERR_ARG;
    if (n && (!y || !x))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < n; i++)
        y[i] = act_ref(x[i], act);
    return MA_OK;
}

/* OPS-7  y = scale (act(x wd^T + bd) wu^T + bu), the hidden row kept in double */
int ma_ref_bottleneck_f32(float *y, const float *x, const float *wd, const float *bd,
                          const float *wu, const float *bu, int64_t rows, int64_t d, int64_t r,
                          float scale, int act)
{
    if (!sizes_ok(rows, d, r, 0))
        return MA_ERR_SIZE;
    if (!act_known(act))
        return MA_ERR_ARG;
    if (!rows || !d)
        return MA_OK;
    if (!y || !x || (r && (!wd || !wu)))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++) {
            double acc = bu ? bu[j] : 0.0;
            for (int64_t p = 0; p < r; p++) {
                double h = bd ? bd[p] : 0.0;
                for (int64_t e = 0; e < d; e++)
                    h += (double)x[i * d + e] * wd[p * d + e];
                acc += (double)act_ref((float)h, act) * wu[j * r + p];
            }
            y[i * d + j] = (float)((double)scale * acc);
        }
    return MA_OK;
}

/* OPS-8  y += scale (x a^T) b^T */
int ma_ref_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                        int64_t rows, int64_t k, int64_t r, int64_t m, float scale)
{
    if (!sizes_ok(rows, k, r, m))
        return MA_ERR_SIZE;
    if (!rows || !m)
        return MA_OK;
    if (!y || (k && !x) || (r && k && !a) || (r && !b))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = 0.0;
            for (int64_t p = 0; p < r; p++) {
                double h = 0.0;
                for (int64_t e = 0; e < k; e++)
                    h += (double)x[i * k + e] * a[p * k + e];
                acc += h * b[j * r + p];
            }
            y[i * m + j] = (float)(y[i * m + j] + (double)scale * acc);
        }
    return MA_OK;
}

/* OPS-9  per segment, ma_ref_lora_add_f32 with that segment's adapter (-1: none) */
int ma_ref_sgmv_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                             const int64_t *seg_start, const int64_t *seg_adapter, const float *scales,
                             int64_t rows, int64_t k, int64_t r, int64_t m, int64_t n_seg,
                             int64_t n_adapters)
{
    if (!sizes_ok(rows, k, r, m) || n_seg < 0 || n_adapters < 0)
        return MA_ERR_SIZE;
    if (!seg_start || (n_seg && !seg_adapter) || (n_adapters && !scales))
        return MA_ERR_NULL;
    if (seg_start[0] != 0 || seg_start[n_seg] != rows)
        return MA_ERR_ARG;
    for (int64_t s = 0; s < n_seg; s++)
        if (seg_start[s + 1] < seg_start[s] || seg_adapter[s] < -1 || seg_adapter[s] >= n_adapters)
            return MA_ERR_ARG;
    for (int64_t s = 0; s < n_seg; s++) {
        int64_t i0 = seg_start[s], n = seg_start[s + 1] - i0, ad = seg_adapter[s];
        if (ad < 0 || n == 0 || m == 0)
            continue;
        int st = ma_ref_lora_add_f32(y + i0 * m, x + i0 * k, a + ad * r * k, b + ad * m * r, n, k, r, m, scales[ad]);
        if (st)
            return st;
    }
    return MA_OK;
}

/* OPS-9, one pointer and one rank per adapter */
int ma_ref_sgmv_lora_add_ptr_f32(float *y, const float *x, const float *const *a, const float *const *b,
                                 const int64_t *ranks, const int64_t *seg_start, const int64_t *seg_adapter,
                                 const float *scales, int64_t rows, int64_t k, int64_t m, int64_t n_seg,
                                 int64_t n_adapters)
{
    if (!sizes_ok(rows, k, m, 0) || n_seg < 0 || n_adapters < 0)
        return MA_ERR_SIZE;
    if (!seg_start || (n_seg && !seg_adapter) || (n_adapters && (!scales || !ranks || !a || !b)))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < n_adapters; i++)
        if (ranks[i] < 0)
            return MA_ERR_SIZE;
    if (seg_start[0] != 0 || seg_start[n_seg] != rows)
        return MA_ERR_ARG;
    for (int64_t s = 0; s < n_seg; s++)
        if (seg_start[s + 1] < seg_start[s] || seg_adapter[s] < -1 || seg_adapter[s] >= n_adapters)
            return MA_ERR_ARG;
    for (int64_t s = 0; s < n_seg; s++) {
        int64_t i0 = seg_start[s], n = seg_start[s + 1] - i0, ad = seg_adapter[s];
        if (ad < 0 || n == 0 || m == 0)
            continue;
        int st = ma_ref_lora_add_f32(y + i0 * m, x + i0 * k, a[ad], b[ad], n, k, ranks[ad], m, scales[ad]);
        if (st)
            return st;
    }
    return MA_OK;
}

/* OPS-13  y = x cos + rotate_half(x) sin, each product rounded to float as NumPy's float32 arithmetic does */
int ma_ref_rope_f32(float *y, const float *x, const float *cos, const float *sin,
                    int64_t batch, int64_t heads, int64_t t, int64_t dh, int64_t cs_stride)
{
    if (!sizes_ok(batch, heads, t, dh) || cs_stride < 0)
        return MA_ERR_SIZE;
    if (!batch || !heads || !t || !dh)
        return MA_OK;
    if (!y || !x || !cos || !sin)
        return MA_ERR_NULL;
    int64_t half = dh / 2, len2 = dh - half;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t p = 0; p < t; p++)
                for (int64_t i = 0; i < dh; i++) {
                    const float *xr = x + ((b * heads + h) * t + p) * dh;
                    int64_t c = b * cs_stride + p * dh + i;
                    float rot = i < len2 ? -xr[half + i] : xr[i - len2];
                    float u = xr[i] * cos[c], w = rot * sin[c];
                    y[((b * heads + h) * t + p) * dh + i] = u + w;
                }
    return MA_OK;
}
