/* kv/codec_kivi_avx512: AVX-512 kernels of the kivi2 and kivi4 KV codecs.
 *
 * Same layout and results as the scalar specification (codec_kivi.c); the slots the codec
 * state holds go through the f16 codec's AVX-512 kernels (kvx_kivi_qk_drive / _pv_drive).
 * A B-bit code becomes a float without a conversion: lane i's code sits in word i % u of the
 * unit (u = B/2 words) at bit p = B (i / u); broadcasting the unit (a dword, or a qword whose
 * dwords then alternate between lanes) and rotating it right by p - (23 - B) puts the code on
 * mantissa bits 23-B..22, and one vpternlogd keeps those bits and sets the exponent of 1.0,
 * giving x = 1 + code / 2^B (2 ALU ops per 16 values).  With D = 2^B:
 *   qk:  score_t = sum_c (q_c s_c) code_ct + sum_c q_c m_c
 *              = sum_c qs_c x_ct + bias,  qs_c = D q_c s_c,  bias = sum_c (q_c m_c - qs_c):
 *        the per-channel scale folds into the query once per group, then one FMA per channel
 *        and query gives 16 scores.
 *   pv:  v = m + s code = (D s) x + (m - D s): one FMA dequantizes 16 values, shared by up to
 *        4 queries; the scales and mins of 16 tokens are converted at once.
 * The code width is a constant of each inlined kernel body.
 * Compiled with the AVX-512 flags (Makefile, by file name); called only after
 * kvx_cpu_has_isa(KVX_ISA_AVX512).  Empty on processors other than x86. */
#include "kv/codec_lowbit.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")

/* Channels whose folded query a qk pass keeps on the stack. */
#define QK_CHANNELS 256
/* Scales (and mins) pv converts at once. */
#define PV_PARAMS 1024

struct dec {
    __m512i rot, mask, one;
};

KVX_INLINE struct dec dec_make(const int B)
{
    int32_t r[16];
    for (int i = 0; i < 16; i++)
        r[i] = (B * (i / (B / 2)) - (23 - B)) & 31;
    return (struct dec){_mm512_loadu_si512(r), _mm512_set1_epi32(((1 << B) - 1) << (23 - B)),
                        _mm512_set1_epi32(0x3f800000)};
}

/* 1 + code_i / 2^B for the 16 codes of the unit at w. */
KVX_INLINE __m512 dec_unit(const struct dec *d, const uint32_t *w, const int B)
{
    __m512i x;
    if (B == 2) {
        x = _mm512_set1_epi32((int)*w);
    } else {
        long long q;
        memcpy(&q, w, sizeof q);
        x = _mm512_set1_epi64(q);
    }
    __m512i r = _mm512_rorv_epi32(x, d->rot);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(r, d->mask, d->one, 0xEA)); /* (a&b)|c */
}

/* Tiles [tile, tile + nt) (nt <= 2) of a group for nq (<= 4) queries over channels
 * [c0, c0 + nc), the folded queries in qs; the first channel chunk stores, later ones add. */
KVX_INLINE void qk_tiles(const uint32_t *tiles, int32_t dim, int32_t tile, int nt, int32_t a,
                         int32_t b, const float (*qs)[QK_CHANNELS], const float *bias, int nq,
                         int32_t c0, int32_t nc, const struct dec *d, float *scores, int64_t ld,
                         const int B)
{
    __m512 acc[4][2];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            acc[j][u] = _mm512_set1_ps(bias[j]);
    for (int32_t c = 0; c < nc; c++) {
        __m512 x[2];
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            x[u] = dec_unit(d, tiles + ((size_t)(tile + u) * (size_t)dim + (size_t)(c0 + c)) * (size_t)(B / 2), B);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m512 qb = _mm512_set1_ps(qs[j][c]);
            KVX_UNROLL
            for (int u = 0; u < nt; u++)
                acc[j][u] = _mm512_fmadd_ps(qb, x[u], acc[j][u]);
        }
    }
    KVX_UNROLL
    for (int u = 0; u < nt; u++) {
        const int32_t tok0 = (tile + u) * KVX_KV_TILE;
        const int32_t n_valid = b - tok0 < KVX_KV_TILE ? b - tok0 : KVX_KV_TILE;
        const __mmask16 m = (__mmask16)((1u << n_valid) - 1u);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            float *out = scores + (int64_t)j * ld + (tok0 - a);
            __m512 v = acc[j][u];
            if (c0 > 0)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, out));
            _mm512_mask_storeu_ps(out, m, v);
        }
    }
}

KVX_INLINE void qk_queries(const uint8_t *group, int32_t dim, int32_t a, int32_t b, const float *q,
                           int nq, float *scores, int64_t ld, const int B)
{
    const uint16_t *sc = (const uint16_t *)group, *mn = sc + dim;
    const uint32_t *tiles = (const uint32_t *)(group + 4 * (size_t)dim);
    const struct dec d = dec_make(B);
    float qs[4][QK_CHANNELS], bias[4];
    for (int32_t c0 = 0; c0 < dim; c0 += QK_CHANNELS) {
        const int32_t nc = dim - c0 < QK_CHANNELS ? dim - c0 : QK_CHANNELS; /* a multiple of 32 */
        __m512 bv[4];
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            bv[j] = _mm512_setzero_ps();
        for (int32_t c = 0; c < nc; c += 16) {
            __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + c0 + c)));
            __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mn + c0 + c)));
            __m512 s4 = _mm512_mul_ps(s, _mm512_set1_ps((float)(1 << B)));
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m512 qv = _mm512_loadu_ps(q + (size_t)j * (size_t)dim + (size_t)(c0 + c));
                __m512 f = _mm512_mul_ps(qv, s4);
                _mm512_storeu_ps(qs[j] + c, f);
                bv[j] = _mm512_add_ps(bv[j], _mm512_fmsub_ps(qv, m, f));
            }
        }
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            bias[j] = _mm512_reduce_add_ps(bv[j]);
        int32_t tile = a / KVX_KV_TILE;
        for (; (tile + 1) * KVX_KV_TILE < b; tile += 2)
            qk_tiles(tiles, dim, tile, 2, a, b, qs, bias, nq, c0, nc, &d, scores, ld, B);
        if (tile * KVX_KV_TILE < b)
            qk_tiles(tiles, dim, tile, 1, a, b, qs, bias, nq, c0, nc, &d, scores, ld, B);
    }
}

KVX_INLINE void qk_group(const uint8_t *group, int32_t dim, int32_t a, int32_t b,
                         const float *q, int32_t n_q, float *scores, int64_t ld, const int B)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float *si = scores + (int64_t)i * ld;
        switch (n_q - i) {
        case 1: qk_queries(group, dim, a, b, qi, 1, si, ld, B); break;
        case 2: qk_queries(group, dim, a, b, qi, 2, si, ld, B); break;
        case 3: qk_queries(group, dim, a, b, qi, 3, si, ld, B); break;
        default: qk_queries(group, dim, a, b, qi, 4, si, ld, B); break;
        }
    }
}

/* qk of a sealed group, AVX-512:
 *   scores[i*ld + t - a] = sum_c (D q_ic s_c)(1 + code_ct / D) + sum_c (q_ic m_c - D q_ic s_c)
 * for a <= t < b, D = 2^B; fp32 FMA in channel order per chunk of 256 channels.  Test: within
 * 1e-5 x sum_c |q_ic k_tc| of kvx_kivi_qk_group_scalar (test_kv_codec_lowbit.c). */
void kvx_kivi_qk_group_avx512(int32_t bits, const uint8_t *group, const struct kvx_kv_fmt *f,
                              int32_t a, int32_t b, const float *q, int32_t n_q, float *scores,
                              int64_t ld)
{
    if (bits == 4)
        qk_group(group, f->dim, a, b, q, n_q, scores, ld, 4);
    else
        qk_group(group, f->dim, a, b, q, n_q, scores, ld, 2);
}

/* acc[j][d0 .. d0 + 16 nv) += sum_t p_j[t] v_t[...] for nq (<= 4) queries, nv (2 or 4) vectors
 * from d0 (a multiple of 32). */
KVX_INLINE void pv_chunk(const uint8_t *region, const struct kvx_kv_fmt *f, int32_t d0, int nv,
                         int32_t t0, int32_t t1, const float *p, int nq, int64_t ld, float *acc,
                         const int B)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const uint16_t *sc = (const uint16_t *)region;
    const uint16_t *mn = (const uint16_t *)(region + kvx_kivi_v_min_off(f));
    const uint32_t *units = (const uint32_t *)(region + kvx_kivi_v_codes_off(f));
    const int32_t per = PV_PARAMS / nb < KVX_KV_TILE ? PV_PARAMS / nb : KVX_KV_TILE;
    const struct dec d = dec_make(B);
    float D[PV_PARAMS], M[PV_PARAMS];
    __m512 acc_v[4][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            acc_v[j][u] = _mm512_loadu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u);
    for (int32_t tc = t0; tc < t1; tc += per) {
        const int32_t te = t1 - tc < per ? t1 : tc + per, n = (te - tc) * nb;
        const size_t base = (size_t)tc * (size_t)nb;
        for (int32_t k = 0; k < n; k += 16) { /* D = 2^B s, M = m - 2^B s */
            const __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1u);
            __m512 s4 = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sc + base + k)),
                                      _mm512_set1_ps((float)(1 << B)));
            __m512 mv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, mn + base + k));
            _mm512_mask_storeu_ps(D + k, m, s4);
            _mm512_mask_storeu_ps(M + k, m, _mm512_sub_ps(mv, s4));
        }
        for (int32_t t = tc; t < te; t++) {
            __m512 v[4];
            KVX_UNROLL
            for (int u = 0; u < nv; u++) {
                const int32_t blk = d0 / 32 + u / 2, pi = (t - tc) * nb + blk;
                const uint32_t *w = units + (((size_t)t * (size_t)nb + (size_t)blk) * 2 + (size_t)(u & 1)) * (size_t)(B / 2);
                v[u] = _mm512_fmadd_ps(dec_unit(&d, w, B), _mm512_set1_ps(D[pi]), _mm512_set1_ps(M[pi]));
            }
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m512 pb = _mm512_set1_ps(p[(int64_t)j * ld + (t - t0)]);
                KVX_UNROLL
                for (int u = 0; u < nv; u++)
                    acc_v[j][u] = _mm512_fmadd_ps(pb, v[u], acc_v[j][u]);
            }
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            _mm512_storeu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u, acc_v[j][u]);
}

KVX_INLINE void pv_queries(const uint8_t *region, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *p, int nq, int64_t ld, float *acc, const int B)
{
    int32_t d0 = 0;
    for (; d0 + 64 <= f->dim; d0 += 64)
        pv_chunk(region, f, d0, 4, t0, t1, p, nq, ld, acc, B);
    if (d0 < f->dim) /* dim is a multiple of 32 */
        pv_chunk(region, f, d0, 2, t0, t1, p, nq, ld, acc, B);
}

KVX_INLINE void pv_page(const uint8_t *region, const struct kvx_kv_fmt *f, int32_t t0,
                        int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc,
                        const int B)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *pi = p + (int64_t)i * ld;
        float *ai = acc + (size_t)i * (size_t)f->dim;
        switch (n_q - i) {
        case 1: pv_queries(region, f, t0, t1, pi, 1, ld, ai, B); break;
        case 2: pv_queries(region, f, t0, t1, pi, 2, ld, ai, B); break;
        case 3: pv_queries(region, f, t0, t1, pi, 3, ld, ai, B); break;
        default: pv_queries(region, f, t0, t1, pi, 4, ld, ai, B); break;
        }
    }
}

/* pv over quantized rows, AVX-512: acc[i*dim + d] += sum_t p[i*ld + t - t0] ((D s_tb) x + (m_tb -
 * D s_tb)), x = 1 + code / D, D = 2^B.  fp32 FMA in token order.  Test: within 1e-5 x
 * sum_t p_t |v_t[d]| of kvx_kivi_pv_page_scalar. */
void kvx_kivi_pv_page_avx512(int32_t bits, const uint8_t *region, const struct kvx_kv_fmt *f,
                             int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                             float *acc)
{
    if (bits == 4)
        pv_page(region, f, t0, t1, p, n_q, ld, acc, 4);
    else
        pv_page(region, f, t0, t1, p, n_q, ld, acc, 2);
}

static const struct kvx_kivi_kernels kernels = {kvx_kivi_qk_group_avx512, kvx_kivi_pv_page_avx512,
                                                kvx_kv_qk_f16_avx512, kvx_kv_pv_f16_avx512};

/* qk / pv of kivi2 and kivi4, AVX-512: the state's f16 slots through the f16 kernels, the
 * others above. */
KVX_KIVI_ENTRIES(avx512, kernels)

#endif
