/* OPS-2: fused, blocked scaled dot-product attention (flash-attention style, float32 accumulation).
 *
 * The (Tq, Tk) score matrix is never formed: a work unit is one (batch, head, block of QB query rows);
 * it walks the keys in blocks of KB, computes the QB x KB score block with a single-threaded packed GEMM
 * (S = scale q k^T), adds the additive mask (any broadcast through zero strides), applies the causal /
 * sliding-window rule, and folds the block into a running row max m, row sum l and output accumulator acc
 * (online softmax: acc and l are rescaled by exp(m_old - m_new) when the max grows), then acc += P v with v
 * read in place (a packed GEMM with B stored (K, N)).  Scratch per thread: QB x KB + QB x Dh floats.
 *
 * GQA: query head h reads key/value head h / (heads / kv_heads); K and V are never repeated.
 * Causal (causal != 0): query row i sees key j only when j <= i + (Tk - Tq) (the last Tq of Tk positions);
 * window w > 0: only when j > i + (Tk - Tq) - w.  Keys outside the rule are skipped (weight exactly 0), whole
 * key blocks at a time where they can be.  A row with no key left gives 0 (as Tk = 0 does); a row whose every
 * score is -inf gives NaN (as the softmax of NumPy's reference does). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define QB 256
#define KB 256

typedef struct {
    float *out;
    const float *q, *k, *v, *mask;
    const int64_t *st;     /* 15 strides: out, q, k, v, mask x (batch, head, token) */
    int64_t heads, group, tq, tk, dh, window, n_qblocks;
    float scale;
    int causal, isa;
} attn_job;

/* Keys [lo, hi) that query row i may see under the causal / window rule. */
static void key_range(const attn_job *j, int64_t i, int64_t *lo, int64_t *hi)
{
    int64_t pos = i + j->tk - j->tq;
    *lo = 0;
    *hi = j->tk;
    if (j->causal)
        *hi = pos + 1 < 0 ? 0 : (pos + 1 < j->tk ? pos + 1 : j->tk);
    if (j->window > 0) {
        int64_t first = pos - j->window + 1;
        *lo = first < 0 ? 0 : (first > j->tk ? j->tk : first);
    }
    if (*hi < *lo)
        *hi = *lo;
}

static int one_block(const attn_job *j, int64_t unit, float *S, float *acc)
{
    int64_t bn = unit / j->n_qblocks, q0 = (unit % j->n_qblocks) * QB;
    int64_t b = bn / j->heads, h = bn % j->heads, hk = h / j->group;
    int64_t nq = j->tq - q0 < QB ? j->tq - q0 : QB, dh = j->dh;
    const int64_t *s = j->st;
    const float *q = j->q + b * s[3] + h * s[4] + q0 * s[5];
    const float *k = j->k + b * s[6] + hk * s[7];
    const float *v = j->v + b * s[9] + hk * s[10];
    const float *mrow0 = j->mask ? j->mask + b * s[12] + h * s[13] + q0 * s[14] : NULL;
    float m[QB], l[QB];
    int64_t lo[QB], hi[QB], kmin = j->tk, kmax = 0;
    for (int64_t i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        key_range(j, q0 + i, &lo[i], &hi[i]);
        if (hi[i] > lo[i]) {
            kmin = lo[i] < kmin ? lo[i] : kmin;
            kmax = hi[i] > kmax ? hi[i] : kmax;
        }
    }
    memset(acc, 0, (size_t)(nq * dh) * sizeof(float));
    for (int64_t k0 = kmin; k0 < kmax; k0 += KB) {
        int64_t nk = kmax - k0 < KB ? kmax - k0 : KB;
        int st = ma__gemm_nt(S, KB, q, s[5], k + k0 * s[8], s[8], NULL, nq, nk, dh, j->scale, 0, j->isa, 0);
        if (st)
            return st;
        for (int64_t i = 0; i < nq; i++) {
            float *row = S + i * KB;
            int64_t a = lo[i] - k0, e = hi[i] - k0;          /* allowed columns of this block: [a, e) */
            a = a < 0 ? 0 : a;
            e = e > nk ? nk : e;
            if (e <= a) {
                memset(row, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float mx = ma__add_max_row(row + a, mrow0 ? mrow0 + i * s[14] + k0 + a : NULL, e - a, j->isa);
            float mnew = mx > m[i] ? mx : m[i];
            if (mnew == -INFINITY) {                          /* every score so far is -inf: nothing to add */
                memset(row, 0, (size_t)nk * sizeof(float));
                continue;
            }
            if (mnew > m[i]) {
                float r = m[i] == -INFINITY ? 0.0f : expf(m[i] - mnew);
                l[i] *= r;
                for (int64_t d = 0; d < dh; d++)
                    acc[i * dh + d] *= r;
                m[i] = mnew;
            }
            memset(row, 0, (size_t)a * sizeof(float));
            l[i] += ma__exp_shift_row(row + a, row + a, e - a, mnew, j->isa);
            memset(row + e, 0, (size_t)(nk - e) * sizeof(float));
        }
        st = ma__gemm_nn(acc, dh, S, KB, v + k0 * s[11], s[11], nq, dh, nk, 1.0f, 1, j->isa);
        if (st)
            return st;
    }
    for (int64_t i = 0; i < nq; i++) {
        float *o = j->out + b * s[0] + h * s[1] + (q0 + i) * s[2];
        float inv = hi[i] <= lo[i] ? 0.0f : (l[i] > 0.0f ? 1.0f / l[i] : NAN);
        for (int64_t d = 0; d < dh; d++)
            o[d] = hi[i] <= lo[i] ? 0.0f : acc[i * dh + d] * inv;
    }
    return MA_OK;
}

static int check_attention(const float *out, const float *q, const float *k, const float *v,
                           const int64_t *strides, int64_t batch, int64_t heads, int64_t kv_heads, int64_t tq,
                           int64_t tk, int64_t dh, int64_t window, int64_t *n_heads)
{
    int64_t sq, sk, tmp;
    int st;
    if (!strides)
        return MA_ERR_NULL;
    if (batch < 0 || heads < 0 || kv_heads < 0 || tq < 0 || tk < 0 || dh < 0 || window < 0)
        return MA_ERR_SIZE;
    if (heads > 0 && (kv_heads == 0 || heads % kv_heads))
        return MA_ERR_ARG;
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

int ma_attention_ex_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                        const int64_t *strides, int64_t batch, int64_t heads, int64_t kv_heads, int64_t tq,
                        int64_t tk, int64_t head_dim, float scale, int causal, int64_t window)
{
    int64_t nbn, units;
    int st = check_attention(out, q, k, v, strides, batch, heads, kv_heads, tq, tk, head_dim, window, &nbn);
    if (st || nbn == 0 || tq == 0 || head_dim == 0)
        return st;
    int64_t nqb = (tq + QB - 1) / QB;
    if ((st = ma__mul(nbn, nqb, &units)))
        return st;
    attn_job job = {out, q, k, v, mask, strides, heads, heads / kv_heads, tq, tk, head_dim, window, nqb,
                    scale, causal != 0, ma_best_isa()};
    int err = MA_OK;
#ifdef _OPENMP
#pragma omp parallel if (units > 1 && tq * tk * head_dim > 4096)
#endif
    {
        float *S = malloc((size_t)(QB * KB + QB * head_dim) * sizeof(float));
        int mine = S ? MA_OK : MA_ERR_NOMEM;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t u = 0; u < units; u++)
            if (!mine)
                mine = one_block(&job, u, S, S + QB * KB);
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

int ma_attention_f32(float *out, const float *q, const float *k, const float *v, const float *mask,
                     const int64_t *strides, int64_t batch, int64_t heads, int64_t tq, int64_t tk,
                     int64_t head_dim, float scale)
{
    return ma_attention_ex_f32(out, q, k, v, mask, strides, batch, heads, heads ? heads : 1, tq, tk, head_dim,
                               scale, 0, 0);
}
