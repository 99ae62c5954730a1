/* OPS-2: scaled dot-product attention with an additive, broadcastable mask.
 * Heads are shared out between OpenMP threads; each head runs two single-threaded packed GEMMs
 * (S = scale q k^T, then out = P v through a transposed copy of v) around a fused
 * mask-add + softmax over the rows of S. */
#include <stdlib.h>
#include "internal.h"

typedef struct {
    float *out;
    const float *q, *k, *v, *mask;
    const int64_t *st;     /* 15 strides: out, q, k, v, mask x (batch, head, token) */
    int64_t heads, tq, tk, dh;
    float scale;
    int isa;
} attn_job;

static int one_head(const attn_job *j, int64_t bn, float *S, float *Vt)
{
    int64_t b = bn / j->heads, h = bn % j->heads;
    const int64_t *s = j->st;
    float *out = j->out + b * s[0] + h * s[1];
    const float *q = j->q + b * s[3] + h * s[4];
    const float *k = j->k + b * s[6] + h * s[7];
    const float *v = j->v + b * s[9] + h * s[10];
    int st = ma__gemm_nt(S, j->tk, q, s[5], k, s[8], NULL, j->tq, j->tk, j->dh, j->scale, 0, j->isa, 0);
    if (st)
        return st;
    for (int64_t i = 0; i < j->tq; i++) {
        float *row = S + i * j->tk;
        if (j->mask) {
            const float *m = j->mask + b * s[12] + h * s[13] + i * s[14];
            for (int64_t c = 0; c < j->tk; c++)
                row[c] += m[c];
        }
        ma__softmax_row(row, row, j->tk, j->isa);
    }
    for (int64_t t = 0; t < j->tk; t++)
        for (int64_t d = 0; d < j->dh; d++)
            Vt[d * j->tk + t] = v[t * s[11] + d];
    return ma__gemm_nt(out, s[2], S, j->tk, Vt, j->tk, NULL, j->tq, j->dh, j->tk, 1.0f, 0, j->isa, 0);
}

static int check_attention(const float *out, const float *q, const float *k, const float *v,
                           const int64_t *strides, int64_t batch, int64_t heads, int64_t tq,
                           int64_t tk, int64_t dh, int64_t *n_heads)
{
    int64_t sq, sk, tmp;
    int st;
    if (!strides)
        return MA_ERR_NULL;
    if (batch < 0 || heads < 0 || tq < 0 || tk < 0 || dh < 0)
        return MA_ERR_SIZE;
    for (int i = 0; i < 15; i++)
        if (strides[i] < 0)
            return MA_ERR_SIZE;
    if ((st = ma__mul(batch, heads, n_heads)) || (st = ma__mul(*n_heads, tq, &tmp)) ||
        (st = ma__mul(tmp, dh, &sq)) || (st = ma__mul(*n_heads, tk, &tmp)) || (st = ma__mul(tmp, dh, &sk)) ||
        (st = ma__mul(tq, tk, &tmp)))
        return st;
    if ((sq && (!out || !q)) || (sk && (!k || !v)))
        return MA_ERR_NULL;
    return MA_OK;
}

int ma_attention_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                     const int64_t *strides, int64_t batch, int64_t heads, int64_t tq, int64_t tk,
                     int64_t head_dim, float scale)
{
    int64_t nbn;
    int st = check_attention(out, q, k, v, strides, batch, heads, tq, tk, head_dim, &nbn);
    if (st || nbn == 0 || tq == 0 || head_dim == 0)
        return st;
    attn_job job = {out, q, k, v, mask, strides, heads, tq, tk, head_dim, scale, ma_best_isa()};
    int err = MA_OK;
#ifdef _OPENMP
#pragma omp parallel if (nbn > 1 && tq * tk * head_dim > 4096)
#endif
    {
        float *S = malloc((size_t)(tq * tk + head_dim * tk + 1) * sizeof(float));
        float *Vt = S ? S + tq * tk : NULL;
        int mine = S ? MA_OK : MA_ERR_NOMEM;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t bn = 0; bn < nbn; bn++)
            if (!mine)
                mine = one_head(&job, bn, S, Vt);
        free(S);
        if (mine) {
#ifdef _OPENMP
#pragma omp critical(ma_attention_err)
#endif
            err = mine;
        }
    }
    return err;
}
