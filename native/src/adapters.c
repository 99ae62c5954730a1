/* OPS-7 fused bottleneck adapter, OPS-8 fused LoRA delta, OPS-9 segmented LoRA (SGMV).
 * All are compositions of the packed GEMM with a small intermediate kept in one scratch buffer. */
#include <stdlib.h>
#include "internal.h"

static int check_ptrs3(const void *a, int64_t na, const void *b, int64_t nb, const void *c, int64_t nc)
{
    return ((na && !a) || (nb && !b) || (nc && !c)) ? MA_ERR_NULL : MA_OK;
}

int ma_bottleneck_f32(float *y, const float *x, const float *wd, const float *bd,
                      const float *wu, const float *bu, int64_t rows, int64_t d, int64_t r,
                      float scale, int act)
{
    int64_t nx, nw, nh;
    int st;
    if ((st = ma__mul(rows, d, &nx)) || (st = ma__mul(r, d, &nw)) || (st = ma__mul(rows, r, &nh)))
        return st;
    if (act < MA_ACT_IDENTITY || act > MA_ACT_SIGMOID)
        return MA_ERR_ARG;
    if ((st = check_ptrs3(y, nx, x, nx, wd, nw)) || (st = check_ptrs3(wu, nw, NULL, 0, NULL, 0)))
        return st;
    if (nx == 0)
        return MA_OK;
    int isa = ma_best_isa();
    float *h = malloc((size_t)(nh + 1) * sizeof(float));
    if (!h)
        return MA_ERR_NOMEM;
    st = ma__gemm_nt(h, r, x, d, wd, d, bd, rows, r, d, 1.0f, 0, isa, 1);
    if (!st) {
        ma__act_span(h, h, nh, act, isa);
        /* y = scale * (h wu^T + bu):  bias is added before scaling, so pre-scale it. */
        st = ma__gemm_nt(y, d, h, r, wu, r, NULL, rows, d, r, scale, 0, isa, 1);
        if (!st && bu)
            for (int64_t i = 0; i < rows; i++)
                for (int64_t j = 0; j < d; j++)
                    y[i * d + j] += scale * bu[j];
    }
    free(h);
    return st;
}

int ma_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                    int64_t rows, int64_t k, int64_t r, int64_t m, float scale)
{
    int64_t nx, na, nb, ny, nh;
    int st;
    if ((st = ma__mul(rows, k, &nx)) || (st = ma__mul(r, k, &na)) || (st = ma__mul(m, r, &nb)) ||
        (st = ma__mul(rows, m, &ny)) || (st = ma__mul(rows, r, &nh)))
        return st;
    if ((st = check_ptrs3(y, ny, x, nx, a, na)) || (st = check_ptrs3(b, nb, NULL, 0, NULL, 0)))
        return st;
    if (ny == 0)
        return MA_OK;
    int isa = ma_best_isa();
    float *h = malloc((size_t)(nh + 1) * sizeof(float));
    if (!h)
        return MA_ERR_NOMEM;
    st = ma__gemm_nt(h, r, x, k, a, k, NULL, rows, r, k, scale, 0, isa, 1);
    if (!st)
        st = ma__gemm_nt(y, m, h, r, b, r, NULL, rows, m, r, 1.0f, 1, isa, 1);
    free(h);
    return st;
}

static int check_segments(const int64_t *seg_start, const int64_t *seg_adapter, int64_t rows,
                          int64_t n_seg, int64_t n_adapters)
{
    if (seg_start[0] != 0 || seg_start[n_seg] != rows)
        return MA_ERR_ARG;
    for (int64_t s = 0; s < n_seg; s++)
        if (seg_start[s + 1] < seg_start[s] || seg_adapter[s] < -1 || seg_adapter[s] >= n_adapters)
            return MA_ERR_ARG;
    return MA_OK;
}

int ma_sgmv_lora_add_f32(float *y, const float *x, const float *a, const float *b,
                         const int64_t *seg_start, const int64_t *seg_adapter, const float *scales,
                         int64_t rows, int64_t k, int64_t r, int64_t m, int64_t n_seg,
                         int64_t n_adapters)
{
    int64_t nx, ny, na1, nb1, na, nb, nh;
    int st;
    if (n_seg < 0 || n_adapters < 0)
        return MA_ERR_SIZE;
    if ((st = ma__mul(rows, k, &nx)) || (st = ma__mul(rows, m, &ny)) || (st = ma__mul(r, k, &na1)) ||
        (st = ma__mul(m, r, &nb1)) || (st = ma__mul(na1, n_adapters, &na)) ||
        (st = ma__mul(nb1, n_adapters, &nb)) || (st = ma__mul(rows, r, &nh)))
        return st;
    if (!seg_start || (n_seg && !seg_adapter) || (n_adapters && !scales))
        return MA_ERR_NULL;
    if ((st = check_ptrs3(y, ny, x, nx, a, na)) || (st = check_ptrs3(b, nb, NULL, 0, NULL, 0)))
        return st;
    if ((st = check_segments(seg_start, seg_adapter, rows, n_seg, n_adapters)))
        return st;
    if (ny == 0)
        return MA_OK;
    int isa = ma_best_isa();
    float *h = malloc((size_t)(nh + 1) * sizeof(float));
    if (!h)
        return MA_ERR_NOMEM;
    for (int64_t s = 0; s < n_seg && !st; s++) {
        int64_t i0 = seg_start[s], n = seg_start[s + 1] - i0, ad = seg_adapter[s];
        if (ad < 0 || n == 0)
            continue;
        st = ma__gemm_nt(h + i0 * r, r, x + i0 * k, k, a + ad * na1, k, NULL, n, r, k, scales[ad], 0, isa, 1);
        if (!st)
            st = ma__gemm_nt(y + i0 * m, m, h + i0 * r, r, b + ad * nb1, r, NULL, n, m, r, 1.0f, 1, isa, 1);
    }
    free(h);
    return st;
}

/* OPS-9 with one pointer per adapter and per-adapter ranks (no stacked copy; mixed ranks in one call). */
int ma_sgmv_lora_add_ptr_f32(float *y, const float *x, const float *const *a, const float *const *b,
                             const int64_t *ranks, const int64_t *seg_start, const int64_t *seg_adapter,
                             const float *scales, int64_t rows, int64_t k, int64_t m, int64_t n_seg,
                             int64_t n_adapters)
{
    int64_t nx, ny, rmax = 0, nh, tmp;
    int st;
    if (n_seg < 0 || n_adapters < 0)
        return MA_ERR_SIZE;
    if ((st = ma__mul(rows, k, &nx)) || (st = ma__mul(rows, m, &ny)))
        return st;
    if (!seg_start || (n_seg && !seg_adapter) || (n_adapters && (!scales || !ranks || !a || !b)))
        return MA_ERR_NULL;
    for (int64_t i = 0; i < n_adapters; i++) {
        if (ranks[i] < 0)
            return MA_ERR_SIZE;
        if ((st = ma__mul(ranks[i], k, &tmp)) || (st = ma__mul(ranks[i], m, &tmp)))
            return st;
        if (ranks[i] && ((k && !a[i]) || (m && !b[i])))
            return MA_ERR_NULL;
        rmax = ranks[i] > rmax ? ranks[i] : rmax;
    }
    if ((st = ma__mul(rows, rmax, &nh)) || (st = check_ptrs3(y, ny, x, nx, NULL, 0)))
        return st;
    if ((st = check_segments(seg_start, seg_adapter, rows, n_seg, n_adapters)))
        return st;
    if (ny == 0)
        return MA_OK;
    int isa = ma_best_isa();
    float *h = malloc((size_t)(nh + 1) * sizeof(float));
    if (!h)
        return MA_ERR_NOMEM;
    for (int64_t s = 0; s < n_seg && !st; s++) {
        int64_t i0 = seg_start[s], n = seg_start[s + 1] - i0, ad = seg_adapter[s];
        if (ad < 0 || n == 0 || ranks[ad] == 0)
            continue;
        int64_t r = ranks[ad];
        st = ma__gemm_nt(h, r, x + i0 * k, k, a[ad], k, NULL, n, r, k, scales[ad], 0, isa, 1);
        if (!st)
            st = ma__gemm_nt(y + i0 * m, m, h, r, b[ad], r, NULL, n, m, r, 1.0f, 1, isa, 1);
    }
    free(h);
    return st;
}
