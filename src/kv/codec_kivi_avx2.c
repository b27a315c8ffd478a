/* kv/codec_kivi_avx2: AVX2 kernels of the kivi2 and kivi4 KV codecs.
 *
 * Same layout and results as the scalar specification (codec_kivi.c); the slots the codec
 * state holds go through the f16 codec's AVX2 kernels (kvx_kivi_qk_drive / _pv_drive).  A unit
 * of 16 B-bit codes (B = 2: one word; B = 4: two, even codes in the first) gives 8 lanes by one
 * variable shift of the broadcast unit, a mask and a conversion.
 *   qk:  score_t = sum_c (q_c s_c) code_ct + sum_c q_c m_c: the scale folds into the query once
 *        per group, then one FMA per channel and query gives 8 scores;
 *   pv:  v = m + s code (one FMA per 8 values, shared by up to 2 queries).
 * The code width is a constant of each inlined kernel body.
 * Compiled with -mavx2 -mfma -mf16c (Makefile, by file name); called only after
 * kvx_cpu_has_isa(KVX_ISA_AVX2).  Empty on processors other than x86. */
#include "kv/codec_lowbit.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "ops/f16.h"

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")

#define QK_CHANNELS 256

struct dec {
    __m256i sh[2], mask;
};

/* Lane l of half e reads code i = 8e + l: word i % u (the broadcast unit alternates words
 * when u = 2, and 8e is even) at bit B (i / u). */
KVX_INLINE struct dec dec_make(const int B)
{
    struct dec d;
    const int u = B / 2;
    int32_t s[16];
    for (int i = 0; i < 16; i++)
        s[i] = B * (i / u);
    d.sh[0] = _mm256_loadu_si256((const __m256i *)s);
    d.sh[1] = _mm256_loadu_si256((const __m256i *)(s + 8));
    d.mask = _mm256_set1_epi32((1 << B) - 1);
    return d;
}

/* Codes 8e..8e+7 of the unit at w, as floats. */
KVX_INLINE __m256 dec_unit(const struct dec *d, const uint32_t *w, int e, const int B)
{
    __m256i x;
    if (B == 2) {
        x = _mm256_set1_epi32((int)*w);
    } else {
        long long q;
        memcpy(&q, w, sizeof q);
        x = _mm256_set1_epi64x(q);
    }
    x = _mm256_srlv_epi32(x, d->sh[e]);
    return _mm256_cvtepi32_ps(_mm256_and_si256(x, d->mask));
}

/* One tile of a group for nq (<= 2) queries over channels [c0, c0 + nc); the first channel
 * chunk stores, later ones add. */
KVX_INLINE void qk_tile(const uint32_t *tiles, int32_t dim, int32_t tile, int32_t a, int32_t b,
                        const float (*qs)[QK_CHANNELS], const float *bias, int nq, int32_t c0,
                        int32_t nc, const struct dec *d, float *scores, int64_t ld, const int B)
{
    __m256 acc[2][2];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        acc[j][0] = acc[j][1] = _mm256_set1_ps(bias[j]);
    const uint32_t *units = tiles + ((size_t)tile * (size_t)dim + (size_t)c0) * (size_t)(B / 2);
    for (int32_t c = 0; c < nc; c++) {
        const uint32_t *w = units + (size_t)c * (size_t)(B / 2);
        __m256 x0 = dec_unit(d, w, 0, B), x1 = dec_unit(d, w, 1, B);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m256 qb = _mm256_broadcast_ss(&qs[j][c]);
            acc[j][0] = _mm256_fmadd_ps(qb, x0, acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(qb, x1, acc[j][1]);
        }
    }
    const int32_t tok0 = tile * KVX_KV_TILE;
    const int32_t n_valid = b - tok0 < KVX_KV_TILE ? b - tok0 : KVX_KV_TILE;
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        float tmp[16], *out = scores + (int64_t)j * ld + (tok0 - a);
        _mm256_storeu_ps(tmp, acc[j][0]);
        _mm256_storeu_ps(tmp + 8, acc[j][1]);
        for (int32_t i = 0; i < n_valid; i++)
            out[i] = c0 > 0 ? out[i] + tmp[i] : tmp[i];
    }
}

KVX_INLINE void qk_queries(const uint8_t *group, int32_t dim, int32_t a, int32_t b, const float *q,
                           int nq, float *scores, int64_t ld, const int B)
{
    const uint16_t *sc = (const uint16_t *)group, *mn = sc + dim;
    const uint32_t *tiles = (const uint32_t *)(group + 4 * (size_t)dim);
    const struct dec d = dec_make(B);
    float qs[2][QK_CHANNELS], bias[2];
    for (int32_t c0 = 0; c0 < dim; c0 += QK_CHANNELS) {
        const int32_t nc = dim - c0 < QK_CHANNELS ? dim - c0 : QK_CHANNELS; /* a multiple of 32 */
        __m256 bv[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int32_t c = 0; c < nc; c += 8) {
            __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + c0 + c)));
            __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mn + c0 + c)));
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m256 qv = _mm256_loadu_ps(q + (size_t)j * (size_t)dim + (size_t)(c0 + c));
                _mm256_storeu_ps(qs[j] + c, _mm256_mul_ps(qv, s));
                bv[j] = _mm256_fmadd_ps(qv, m, bv[j]);
            }
        }
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            float t[8];
            _mm256_storeu_ps(t, bv[j]);
            bias[j] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
        }
        for (int32_t tile = a / KVX_KV_TILE; tile * KVX_KV_TILE < b; tile++)
            qk_tile(tiles, dim, tile, a, b, qs, bias, nq, c0, nc, &d, scores, ld, B);
    }
}

KVX_INLINE void qk_group(const uint8_t *group, int32_t dim, int32_t a, int32_t b,
                         const float *q, int32_t n_q, float *scores, int64_t ld, const int B)
{
    for (int32_t i = 0; i < n_q; i += 2) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float *si = scores + (int64_t)i * ld;
        if (n_q - i == 1)
            qk_queries(group, dim, a, b, qi, 1, si, ld, B);
        else
            qk_queries(group, dim, a, b, qi, 2, si, ld, B);
    }
}

/* qk of a sealed group, AVX2: scores[i*ld + t - a] = sum_c (q_ic s_c) code_ct + sum_c q_ic m_c
 * for a <= t < b; fp32 FMA in channel order per chunk of 256 channels.  Test: within
 * 1e-5 x sum_c |q_ic k_tc| of kvx_kivi_qk_group_scalar (test_kv_codec_lowbit.c). */
void kvx_kivi_qk_group_avx2(int32_t bits, const uint8_t *group, const struct kvx_kv_fmt *f,
                            int32_t a, int32_t b, const float *q, int32_t n_q, float *scores,
                            int64_t ld)
{
    if (bits == 4)
        qk_group(group, f->dim, a, b, q, n_q, scores, ld, 4);
    else
        qk_group(group, f->dim, a, b, q, n_q, scores, ld, 2);
}

/* acc[j][32 blk .. 32 blk + 32) += sum_t p_j[t] (m_tb + s_tb code) for nq (<= 2) queries. */
KVX_INLINE void pv_block(const uint8_t *region, const struct kvx_kv_fmt *f, int32_t blk,
                         int32_t t0, int32_t t1, const float *p, int nq, int64_t ld, float *acc,
                         const int B)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const uint16_t *sc = (const uint16_t *)region + blk;
    const uint16_t *mn = (const uint16_t *)(region + kvx_kivi_v_min_off(f)) + blk;
    const uint32_t *units = (const uint32_t *)(region + kvx_kivi_v_codes_off(f)) +
                            2 * (size_t)blk * (size_t)(B / 2);
    const struct dec d = dec_make(B);
    __m256 a[2][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < 4; u++)
            a[j][u] = _mm256_loadu_ps(acc + (size_t)j * (size_t)dim + 32 * (size_t)blk + 8 * (size_t)u);
    for (int32_t t = t0; t < t1; t++) {
        const size_t r = (size_t)t * (size_t)nb;
        const __m256 s = _mm256_set1_ps(kvx_f16_to_f32(sc[r])), m = _mm256_set1_ps(kvx_f16_to_f32(mn[r]));
        __m256 v[4];
        KVX_UNROLL
        for (int u = 0; u < 4; u++) /* u = 2h + e: unit h, lanes 8e.. */
            v[u] = _mm256_fmadd_ps(dec_unit(&d, units + (2 * r + (size_t)(u >> 1)) * (size_t)(B / 2), u & 1, B),
                                   s, m);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m256 pb = _mm256_broadcast_ss(p + (int64_t)j * ld + (t - t0));
            KVX_UNROLL
            for (int u = 0; u < 4; u++)
                a[j][u] = _mm256_fmadd_ps(pb, v[u], a[j][u]);
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < 4; u++)
            _mm256_storeu_ps(acc + (size_t)j * (size_t)dim + 32 * (size_t)blk + 8 * (size_t)u, a[j][u]);
}

KVX_INLINE void pv_page(const uint8_t *region, const struct kvx_kv_fmt *f, int32_t t0,
                        int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc,
                        const int B)
{
    for (int32_t blk = 0; blk < f->dim / 32; blk++)
        for (int32_t i = 0; i < n_q; i += 2) {
            const float *pi = p + (int64_t)i * ld;
            float *ai = acc + (size_t)i * (size_t)f->dim;
            if (n_q - i == 1)
                pv_block(region, f, blk, t0, t1, pi, 1, ld, ai, B);
            else
                pv_block(region, f, blk, t0, t1, pi, 2, ld, ai, B);
        }
}

/* pv over quantized rows, AVX2: acc[i*dim + d] += sum_t p[i*ld + t - t0] (m_tb + s_tb code_t[d]).
 * fp32 FMA in token order.  Test: within 1e-5 x sum_t p_t |v_t[d]| of kvx_kivi_pv_page_scalar. */
void kvx_kivi_pv_page_avx2(int32_t bits, const uint8_t *region, const struct kvx_kv_fmt *f,
                           int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                           float *acc)
{
    if (bits == 4)
        pv_page(region, f, t0, t1, p, n_q, ld, acc, 4);
    else
        pv_page(region, f, t0, t1, p, n_q, ld, acc, 2);
}

static const struct kvx_kivi_kernels kernels = {kvx_kivi_qk_group_avx2, kvx_kivi_pv_page_avx2,
                                                kvx_kv_qk_f16_avx2, kvx_kv_pv_f16_avx2};

/* qk / pv of kivi2 and kivi4, AVX2: the state's f16 slots through the f16 kernels, the others
 * above. */
KVX_KIVI_ENTRIES(avx2, kernels)

#endif
