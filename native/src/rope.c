/* OPS-13: rotary position embedding, y = x * cos + rotate_half(x) * sin.
 * Each product is rounded to float before the sum (no FMA contraction: ISO C mode, -std=c99), so the
 * result equals NumPy's float32 x * cos + rot * sin bit for bit. */
#include "internal.h"

/* One (t, dh) slice: rotate_half([x1, x2]) = [-x2, x1] with x1 = x[:h], x2 = x[h:], h = dh / 2. */
static void rope_slice(float *y, const float *x, const float *c, const float *s, int64_t t, int64_t dh)
{
    int64_t h = dh / 2, h2 = dh - h;       /* h2 = len(x2): rot[i] = -x[h + i] for i < h2, else x[i - h2] */
    for (int64_t p = 0; p < t; p++, y += dh, x += dh, c += dh, s += dh) {
        for (int64_t i = 0; i < h2; i++) {
            float a = x[i] * c[i], b = -x[h + i] * s[i];
            y[i] = a + b;
        }
        for (int64_t i = h2; i < dh; i++) {
            float a = x[i] * c[i], b = x[i - h2] * s[i];
            y[i] = a + b;
        }
    }
}

int ma_rope_f32(float *y, const float *x, const float *cos, const float *sin,
                int64_t batch, int64_t heads, int64_t t, int64_t dh, int64_t cs_stride)
{
    int64_t bn, slice, total, cs_end;
    int st;
    if (cs_stride < 0)
        return MA_ERR_SIZE;
    if ((st = ma__mul(batch, heads, &bn)) || (st = ma__mul(t, dh, &slice)) || (st = ma__mul(bn, slice, &total)) ||
        (st = ma__mul(batch > 0 ? batch - 1 : 0, cs_stride, &cs_end)))
        return st;
    if (total == 0)
        return MA_OK;
    if (!y || !x || !cos || !sin)
        return MA_ERR_NULL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (total > 32768)
#endif
    for (int64_t i = 0; i < bn; i++) {
        int64_t b = i / heads;
        rope_slice(y + i * slice, x + i * slice, cos + b * cs_stride, sin + b * cs_stride, t, dh);
    }
    return MA_OK;
}
