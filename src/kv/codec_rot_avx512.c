/* kv/codec_rot_avx512: AVX-512 qk/pv kernels of the rot4 and rot3 KV codecs.
 *
 * Same layout and results as the scalar specification (codec_rot.c; bit orders in
 * codec_lowbit.h).  A 16-lane vector of codebook values is decoded from one broadcast word:
 *   rot4: lane i shifts the broadcast qword's dword (i & 1) right by 4 (i >> 1); vpermps reads
 *         the low 4 bits as the index into the 16 levels (2 ALU ops per 16 values);
 *   rot3: bits 0..1 from the low-bits word shifted right by 2i, bit 2 from the high-bits word
 *         rotated so that the lane's bit lands on bit 2, merged by one vpternlogd; vpermps into
 *         the 8 levels stored twice (bit 3 is don't-care) (4 ALU ops per 16 values).
 *   qk: per 32-channel block, sum_c q_c L[code] for 2 tiles x up to 4 queries, then
 *       acc += s (16 tokens' f16 scales, one vcvtph2ps) * block sum.
 *   pv: V rows decoded and scaled once per token for up to 4 queries; 64 channels = 4 zmm
 *       accumulators per query; the f16 scales of 16 tokens converted at once.
 * Compiled with the AVX-512 flags (Makefile, by file name); called only after
 * kvx_cpu_has_isa(KVX_ISA_AVX512).  Empty on processors other than x86. */
#include "kv/codec_lowbit.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")

/* Decoding constants of one codec. */
struct dec {
    __m512 lut;      /* the levels (rot3: twice) */
    __m512i sh;      /* rot4: 4 (i >> 1); rot3: 2i */
    __m512i rot[2];  /* rot3: the high bit of lane i at bit 16h + i, rotated to bit 2 */
    __m512i mask3;
};

KVX_INLINE struct dec dec_make(int bits)
{
    struct dec d;
    int32_t sh[16], r0[16], r1[16];
    for (int i = 0; i < 16; i++) {
        sh[i] = bits == 4 ? 4 * (i >> 1) : 2 * i;
        r0[i] = (i - 2) & 31;
        r1[i] = (16 + i - 2) & 31;
    }
    d.sh = _mm512_loadu_si512(sh);
    d.rot[0] = _mm512_loadu_si512(r0);
    d.rot[1] = _mm512_loadu_si512(r1);
    d.mask3 = _mm512_set1_epi32(3);
    if (bits == 4) {
        d.lut = _mm512_loadu_ps(kvx_rot4_levels);
    } else {
        __m256 l8 = _mm256_loadu_ps(kvx_rot3_levels);
        d.lut = _mm512_insertf32x8(_mm512_castps256_ps512(l8), l8, 1);
    }
    return d;
}

/* 16 levels: rot4 from a qword of 16 nibbles (lane i in dword i & 1, nibble i >> 1). */
KVX_INLINE __m512 dec4(const struct dec *d, const uint8_t *w64)
{
    int64_t w;
    memcpy(&w, w64, 8);
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi64(w), d->sh), d->lut);
}

/* 16 levels: rot3 from a word of 16 two-bit lows (lane i at bits 2i) and the word holding
 * the lanes' high bits at bits 16h + i. */
KVX_INLINE __m512 dec3(const struct dec *d, const uint8_t *lo32, const uint8_t *hi32, int h)
{
    int32_t lo, hi;
    memcpy(&lo, lo32, 4);
    memcpy(&hi, hi32, 4);
    __m512i l = _mm512_srlv_epi32(_mm512_set1_epi32(lo), d->sh);
    __m512i g = _mm512_rorv_epi32(_mm512_set1_epi32(hi), d->rot[h]);
    /* bits 0..1 from l, the rest from g: mask ? l : g */
    __m512i idx = _mm512_ternarylogic_epi32(l, g, d->mask3, 0xE4);
    return _mm512_permutexvar_ps(idx, d->lut);
}

/* Channel c of a K tile's codes. */
KVX_INLINE __m512 dec_k(const struct dec *d, int bits, const uint8_t *codes, int32_t dim, int32_t c)
{
    if (bits == 4)
        return dec4(d, codes + 8 * (size_t)c);
    return dec3(d, codes + 2 * (size_t)dim + 4 * (size_t)c, codes + 4 * (size_t)(c / 2), c & 1);
}

/* Scores of nq (<= 4) queries against nt (<= 2) tiles from `tile`, stored below t1. */
KVX_INLINE void qk_tiles(const uint8_t *K, int bits, const struct dec *d, int32_t dim,
                         int32_t tile, int nt, int32_t t0, int32_t t1, const float *q, int nq,
                         float *scores, int64_t ld)
{
    const size_t tb = kvx_rot_k_tile_bytes(bits, dim);
    const int32_t nb = dim / 32;
    __m512 acc[4][2];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            acc[j][u] = _mm512_setzero_ps();
    for (int32_t blk = 0; blk < nb; blk++) {
        __m512 part[4][2];
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            KVX_UNROLL
            for (int u = 0; u < nt; u++)
                part[j][u] = _mm512_setzero_ps();
        for (int32_t c = 32 * blk; c < 32 * blk + 32; c++) {
            __m512 kv[2];
            KVX_UNROLL
            for (int u = 0; u < nt; u++)
                kv[u] = dec_k(d, bits, K + (size_t)(tile + u) * tb + (size_t)nb * 32, dim, c);
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m512 qb = _mm512_set1_ps(q[(size_t)j * (size_t)dim + (size_t)c]);
                KVX_UNROLL
                for (int u = 0; u < nt; u++)
                    part[j][u] = _mm512_fmadd_ps(qb, kv[u], part[j][u]);
            }
        }
        KVX_UNROLL
        for (int u = 0; u < nt; u++) {
            const uint8_t *sc = K + (size_t)(tile + u) * tb + (size_t)blk * 32;
            __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
            KVX_UNROLL
            for (int j = 0; j < nq; j++)
                acc[j][u] = _mm512_fmadd_ps(s, part[j][u], acc[j][u]);
        }
    }
    KVX_UNROLL
    for (int u = 0; u < nt; u++) {
        int32_t tok0 = (tile + u) * KVX_KV_TILE;
        int32_t n_valid = t1 - tok0 < KVX_KV_TILE ? t1 - tok0 : KVX_KV_TILE;
        __mmask16 m = (__mmask16)((1u << n_valid) - 1u);
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            _mm512_mask_storeu_ps(scores + (int64_t)j * ld + (tok0 - t0), m, acc[j][u]);
    }
}

KVX_INLINE void qk_queries(const uint8_t *K, int bits, int32_t dim, int32_t t0, int32_t t1,
                           const float *q, int nq, float *scores, int64_t ld)
{
    const struct dec d = dec_make(bits);
    int32_t tile = t0 / KVX_KV_TILE;
    for (; (tile + 1) * KVX_KV_TILE < t1; tile += 2) /* both tiles hold tokens below t1 */
        qk_tiles(K, bits, &d, dim, tile, 2, t0, t1, q, nq, scores, ld);
    if (tile * KVX_KV_TILE < t1)
        qk_tiles(K, bits, &d, dim, tile, 1, t0, t1, q, nq, scores, ld);
}

KVX_INLINE void qk_avx512(const struct kvx_kv_block *b, int bits, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores,
                          int64_t ld)
{
    const int32_t dim = f->dim;
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float *si = scores + (int64_t)i * ld;
        switch (n_q - i) {
        case 1: qk_queries(b->data, bits, dim, t0, t1, qi, 1, si, ld); break;
        case 2: qk_queries(b->data, bits, dim, t0, t1, qi, 2, si, ld); break;
        case 3: qk_queries(b->data, bits, dim, t0, t1, qi, 3, si, ld); break;
        default: qk_queries(b->data, bits, dim, t0, t1, qi, 4, si, ld); break;
        }
    }
}

/* Tokens whose scales pv converts at once, for nb blocks per token (a 1024-float buffer). */
#define PV_SCALES 1024

/* acc[j][d0 .. d0 + 16 nv) += sum_t p_j[t] s_tb L[code_t[d]] for nq (<= 4) queries and nv
 * (2 or 4) vectors of channels from d0 (a multiple of 32). */
KVX_INLINE void pv_chunk(const uint8_t *V, int bits, const struct dec *d,
                         const struct kvx_kv_fmt *f, int32_t d0, int nv, int32_t t0, int32_t t1,
                         const float *p, int nq, int64_t ld, float *acc)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const size_t rb = kvx_rot_v_codes_bytes(bits, dim), bb = bits == 4 ? 16 : 12;
    const uint8_t *codes = V + kvx_rot_v_codes_off(f);
    const uint16_t *sc = (const uint16_t *)V;
    const int32_t per = PV_SCALES / nb < KVX_KV_TILE ? PV_SCALES / nb : KVX_KV_TILE;
    float scale[PV_SCALES];
    __m512 a[4][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            a[j][u] = _mm512_loadu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u);
    for (int32_t tc = t0; tc < t1; tc += per) {
        const int32_t te = t1 - tc < per ? t1 : tc + per;
        const int32_t n = (te - tc) * nb; /* the scales of tokens [tc, te) are contiguous */
        int32_t k = 0;
        for (; k + 16 <= n; k += 16)
            _mm512_storeu_ps(scale + k, _mm512_cvtph_ps(_mm256_loadu_si256(
                                            (const __m256i *)(sc + (size_t)tc * (size_t)nb + k))));
        if (k < n) {
            __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
            _mm512_mask_storeu_ps(scale + k, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                                                    m, sc + (size_t)tc * (size_t)nb + k)));
        }
        for (int32_t t = tc; t < te; t++) {
            const uint8_t *row = codes + (size_t)t * rb;
            __m512 v[4];
            KVX_UNROLL
            for (int u = 0; u < nv; u++) {
                const int32_t blk = d0 / 32 + u / 2, h = u & 1;
                const uint8_t *bp = row + (size_t)blk * bb;
                __m512 lv = bits == 4 ? dec4(d, bp + 8 * h) : dec3(d, bp + 4 + 4 * h, bp, h);
                v[u] = _mm512_mul_ps(lv, _mm512_set1_ps(scale[(t - tc) * nb + blk]));
            }
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m512 pb = _mm512_set1_ps(p[(int64_t)j * ld + (t - t0)]);
                KVX_UNROLL
                for (int u = 0; u < nv; u++)
                    a[j][u] = _mm512_fmadd_ps(pb, v[u], a[j][u]);
            }
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            _mm512_storeu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u, a[j][u]);
}

KVX_INLINE void pv_queries(const uint8_t *V, int bits, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *p, int nq, int64_t ld, float *acc)
{
    const struct dec d = dec_make(bits);
    int32_t d0 = 0;
    for (; d0 + 64 <= f->dim; d0 += 64)
        pv_chunk(V, bits, &d, f, d0, 4, t0, t1, p, nq, ld, acc);
    if (d0 < f->dim) /* dim is a multiple of 32 */
        pv_chunk(V, bits, &d, f, d0, 2, t0, t1, p, nq, ld, acc);
}

KVX_INLINE void pv_avx512(const struct kvx_kv_block *b, int bits, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                          float *acc)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *pi = p + (int64_t)i * ld;
        float *ai = acc + (size_t)i * (size_t)f->dim;
        switch (n_q - i) {
        case 1: pv_queries(b->data, bits, f, t0, t1, pi, 1, ld, ai); break;
        case 2: pv_queries(b->data, bits, f, t0, t1, pi, 2, ld, ai); break;
        case 3: pv_queries(b->data, bits, f, t0, t1, pi, 3, ld, ai); break;
        default: pv_queries(b->data, bits, f, t0, t1, pi, 4, ld, ai); break;
        }
    }
}

/* qk, rot4 / rot3 K, AVX-512: scores[i*ld + t - t0] = sum_b s_tb sum_{c in b} q_ic L[code_t[c]]
 * (q rotated).  fp32 FMA, block sums in channel order.  Test: within 1e-5 x sum_c |q_ic k_tc|
 * of the scalar kernel (test_kv_codec_lowbit.c). */
void kvx_kv_qk_rot4_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx512(b, 4, f, t0, t1, q, n_q, scores, ld);
}

void kvx_kv_qk_rot3_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx512(b, 3, f, t0, t1, q, n_q, scores, ld);
}

/* pv, rot4 / rot3 V, AVX-512: acc[i*dim + d] += sum_t p[i*ld + t - t0] s_tb L[code_t[d]] in the
 * rotated basis.  fp32 FMA in token order.  Test: within 1e-5 x sum_t p_t |v_t[d]| of the
 * scalar kernel. */
void kvx_kv_pv_rot4_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx512(b, 4, f, t0, t1, p, n_q, ld, acc);
}

void kvx_kv_pv_rot3_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                           int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx512(b, 3, f, t0, t1, p, n_q, ld, acc);
}

#endif
