/* attn: full / GQA attention over a layer's cache view, one key range at a time, and the merge
 * of ranges (flash-decoding).
 *
 * Owns the order of work, not the numbers: the codec's qk/pv kernels read pages in place, the
 * softmax pieces (attn/internal.h) are per ISA.  Two passes per range:
 *   1. scores of the n_q queries for every key of the range, page by page, into scratch
 *      (whole 16-token tiles from the tile holding k0: the leading extra scores are ignored);
 *   2. per query: m = max scale*s, p = exp(scale*s - m), l = sum p;
 *   3. acc = sum p v, page by page.
 * The scratch row stride is the range's length plus the up to 15 keys before k0 in its first
 * tile, rounded up to 16 floats.  Holds no state and allocates nothing. */
#include "attn/attn.h"

#include <math.h>
#include <string.h>

#include "attn/internal.h"

static const struct kvx_attn_softmax_ops softmax_table[KVX_ISA_COUNT] = {
    [KVX_ISA_SCALAR] = {kvx_attn_scale_max_scalar, kvx_attn_exp_sum_scalar},
#if defined(__x86_64__) || defined(__i386__)
    [KVX_ISA_AVX2] = {kvx_attn_scale_max_avx2, kvx_attn_exp_sum_avx2},
    [KVX_ISA_AVX512] = {kvx_attn_scale_max_avx512, kvx_attn_exp_sum_avx512},
#else
    [KVX_ISA_AVX2] = {kvx_attn_scale_max_scalar, kvx_attn_exp_sum_scalar},
    [KVX_ISA_AVX512] = {kvx_attn_scale_max_scalar, kvx_attn_exp_sum_scalar},
#endif
};

const struct kvx_attn_softmax_ops *kvx_attn_softmax_ops(enum kvx_isa isa)
{
    if ((int)isa < 0 || isa >= KVX_ISA_COUNT)
        isa = KVX_ISA_SCALAR;
    return &softmax_table[isa];
}

/* scale_max, scalar (the specification): s[t] *= scale; max over t. */
float kvx_attn_scale_max_scalar(float *s, int64_t n, float scale)
{
    float m = -INFINITY;
    for (int64_t t = 0; t < n; t++) {
        s[t] *= scale;
        if (s[t] > m)
            m = s[t];
    }
    return m;
}

/* exp_sum, scalar (the specification): s[t] = expf(s[t] - m), summed in fp64. */
float kvx_attn_exp_sum_scalar(float *s, int64_t n, float m)
{
    double sum = 0;
    for (int64_t t = 0; t < n; t++) {
        s[t] = expf(s[t] - m);
        sum += s[t];
    }
    return (float)sum;
}

/* Row stride of the score scratch for a range of n_keys keys starting anywhere in a tile. */
static int64_t scores_ld(int64_t n_keys)
{
    return (n_keys + (KVX_KV_TILE - 1) + (KVX_KV_TILE - 1)) / KVX_KV_TILE * KVX_KV_TILE;
}

int64_t kvx_attn_scratch_floats(int32_t n_q, int64_t n_keys, int32_t k_dim)
{
    /* pages start on tile boundaries, so only k0's tile adds keys */
    if (n_q <= 0 || n_keys <= 0)
        return 0;
    return (int64_t)n_q * (scores_ld(n_keys) + k_dim) + k_dim;
}

/* p·V for a LATENT view, whose V is the stored K vector: decode each key once (k_get, in the
 * model's basis) and accumulate it into every query's row.
 *   acc[i][d] += sum_{a<=t<b} p[i*ld + (t - a)] * k_t[d]     (scalar; fp32) */
static void pv_from_k(const struct kvx_kv_view *v, const struct kvx_kv_block *blk, int32_t a,
                      int32_t b, const float *p, int32_t n_q, int64_t ld, float *kbuf, float *acc)
{
    for (int32_t t = a; t < b; t++) {
        v->k_ops->k_get(blk, &v->k_fmt, t, kbuf);
        for (int32_t i = 0; i < n_q; i++) {
            const float w = p[(int64_t)i * ld + (t - a)];
            float *o = acc + (size_t)i * (size_t)v->v_dim;
            for (int32_t d = 0; d < v->v_dim; d++)
                o[d] += w * kbuf[d];
        }
    }
}

/* The part [a, b) of page pg that [k0, k1) covers, in page-local token indices. */
static void page_span(const struct kvx_kv_view *v, int64_t pg, int64_t k0, int64_t k1, int32_t *a,
                      int32_t *b)
{
    int64_t start = pg * v->page_tokens;
    *a = (int32_t)((k0 > start ? k0 : start) - start);
    *b = (int32_t)((k1 < start + v->page_tokens ? k1 : start + v->page_tokens) - start);
}

/* Pass 1: raw scores of keys [k0, k1) into rows of `ld` floats that start at the tile holding
 * k0 (base = k0 rounded down to 16); q_rot: n_q * k_dim floats for rotated queries. */
static void scores_pass(const struct kvx_kv_view *v, int32_t kv_head, int64_t k0, int64_t k1,
                        const float *q, int32_t n_q, float *scores, int64_t ld, float *q_rot)
{
    const int64_t pt = v->page_tokens, base = k0 / KVX_KV_TILE * KVX_KV_TILE;
    const size_t k_reg = v->k_off + (size_t)kv_head * v->k_stride;
    const uint8_t *k_state = v->k_state ? v->k_state + (size_t)kv_head * v->k_state_stride : NULL;
    if (v->k_ops->q_rotate) { /* queries into the basis K is stored in */
        memcpy(q_rot, q, (size_t)n_q * (size_t)v->k_dim * sizeof *q_rot);
        v->k_ops->q_rotate(q_rot, n_q, v->k_dim);
        q = q_rot;
    }
    for (int64_t pg = k0 / pt; pg * pt < k1; pg++) {
        int32_t a, b;
        page_span(v, pg, k0, k1, &a, &b);
        int32_t a0 = a / KVX_KV_TILE * KVX_KV_TILE;
        const struct kvx_kv_block blk = {v->pages[pg] + k_reg, k_state, pg * pt};
        v->k_ops->qk(&blk, &v->k_fmt, a0, b, q, n_q, scores + (pg * pt + a0 - base), ld);
    }
}

void kvx_attn_scores(const struct kvx_kv_view *v, int32_t kv_head, int64_t k0, int64_t k1,
                     const float *q, int32_t n_q, float *scores, int64_t ld, float *q_rot)
{
    if (k1 > k0)
        scores_pass(v, kv_head, k0, k1, q, n_q, scores, ld, q_rot);
}

void kvx_attn_partial(const struct kvx_kv_view *v, int32_t kv_head, int64_t k0, int64_t k1,
                      const float *q, int32_t n_q, float scale, float *scratch, float *m, float *l,
                      float *acc)
{
    memset(acc, 0, (size_t)n_q * (size_t)v->v_dim * sizeof *acc);
    if (k1 <= k0) {
        for (int32_t i = 0; i < n_q; i++) {
            m[i] = -INFINITY;
            l[i] = 0;
        }
        return;
    }
    const int64_t pt = v->page_tokens, base = k0 / KVX_KV_TILE * KVX_KV_TILE;
    const int64_t ld = scores_ld(k1 - k0);
    const size_t v_reg = v->v_off + (size_t)kv_head * v->v_stride;
    const uint8_t *v_state = v->v_state ? v->v_state + (size_t)kv_head * v->v_state_stride : NULL;
    scores_pass(v, kv_head, k0, k1, q, n_q, scratch, ld, scratch + (int64_t)n_q * ld);
    const struct kvx_attn_softmax_ops *sm = kvx_attn_softmax_ops(v->isa);
    for (int32_t i = 0; i < n_q; i++) {
        float *s = scratch + (int64_t)i * ld + (k0 - base);
        m[i] = sm->scale_max(s, k1 - k0, scale);
        l[i] = sm->exp_sum(s, k1 - k0, m[i]);
    }
    float *kbuf = scratch + (int64_t)n_q * (ld + v->k_dim);
    for (int64_t pg = k0 / pt; pg * pt < k1; pg++) {
        int32_t a, b;
        page_span(v, pg, k0, k1, &a, &b);
        const struct kvx_kv_block blk = {v->pages[pg] + v_reg, v_state, pg * pt};
        if (v->v_is_k)
            pv_from_k(v, &blk, a, b, scratch + (pg * pt + a - base), n_q, ld, kbuf, acc);
        else
            v->v_ops->pv(&blk, &v->v_fmt, a, b, scratch + (pg * pt + a - base), n_q, ld, acc);
    }
    if (v->v_ops->out_unrotate && !v->v_is_k)   /* k_get already un-rotates */
        v->v_ops->out_unrotate(acc, n_q, v->v_dim);
}

void kvx_attn_merge(int32_t n_parts, int32_t n_q, int32_t v_dim, const float *m, const float *l,
                    const float *acc, float *out)
{
    for (int32_t i = 0; i < n_q; i++) {
        float *o = out + (size_t)i * (size_t)v_dim;
        float mx = -INFINITY;
        for (int32_t r = 0; r < n_parts; r++)
            if (m[(size_t)r * (size_t)n_q + (size_t)i] > mx)
                mx = m[(size_t)r * (size_t)n_q + (size_t)i];
        memset(o, 0, (size_t)v_dim * sizeof *o);
        if (mx == -INFINITY)
            continue; /* every part empty */
        double den = 0;
        for (int32_t r = 0; r < n_parts; r++) {
            size_t ri = (size_t)r * (size_t)n_q + (size_t)i;
            if (m[ri] == -INFINITY)
                continue;
            float w = expf(m[ri] - mx);
            den += (double)w * l[ri];
            const float *a = acc + ri * (size_t)v_dim;
            for (int32_t d = 0; d < v_dim; d++)
                o[d] += w * a[d];
        }
        float inv = den > 0 ? (float)(1.0 / den) : 0.0f;
        for (int32_t d = 0; d < v_dim; d++)
            o[d] *= inv;
    }
}
