/* kv/codec_rot_avx2: AVX2 qk/pv kernels of the rot4 and rot3 KV codecs.
 *
 * Same layout and results as the scalar specification (codec_rot.c; bit orders in
 * codec_lowbit.h).  An 8-lane vector of codebook values is decoded from one broadcast word:
 *   rot4: a variable shift brings each lane's nibble to bits 0..3; vpermps reads 3 index bits,
 *         so the 16 levels are two tables and bit 3 (moved to the sign bit) picks one by
 *         vblendvps (5 ops per 8 values);
 *   rot3: bits 0..1 shifted from the low-bits word, bit 2 from the high-bits word, then vpermps
 *         into the 8 levels (6 ops per 8 values).
 *   qk: per 32-channel block, sum_c q_c L[code] for the two 8-token halves of a tile and up to
 *       2 queries, then acc += s * block sum;
 *   pv: V rows decoded and scaled once per token for up to 2 queries, 32 channels at a time.
 * Compiled with -mavx2 -mfma -mf16c (Makefile, by file name); called only after
 * kvx_cpu_has_isa(KVX_ISA_AVX2).  Empty on processors other than x86. */
#include "kv/codec_lowbit.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "ops/f16.h"

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")

struct dec {
    __m256 lut_lo, lut_hi;   /* rot4: levels 0..7 and 8..15; rot3: the 8 levels in lut_lo */
    __m256i sh[2];           /* rot4: 16e + 4 (i >> 1); rot3: 2 (8e + i), for half e */
    __m256i shh[2][2];       /* rot3: the high bit of lane i of half e in word half h */
    __m256i mask3;
};

KVX_INLINE struct dec dec_make(int bits)
{
    struct dec d;
    int32_t sh[2][8], shh[2][2][8];
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 8; i++) {
            sh[e][i] = bits == 4 ? 16 * e + 4 * (i >> 1) : 2 * (8 * e + i);
            for (int h = 0; h < 2; h++)
                shh[h][e][i] = 16 * h + 8 * e + i;
        }
    for (int e = 0; e < 2; e++) {
        d.sh[e] = _mm256_loadu_si256((const __m256i *)sh[e]);
        for (int h = 0; h < 2; h++)
            d.shh[h][e] = _mm256_loadu_si256((const __m256i *)shh[h][e]);
    }
    d.mask3 = _mm256_set1_epi32(3);
    if (bits == 4) {
        d.lut_lo = _mm256_loadu_ps(kvx_rot4_levels);
        d.lut_hi = _mm256_loadu_ps(kvx_rot4_levels + 8);
    } else {
        d.lut_lo = d.lut_hi = _mm256_loadu_ps(kvx_rot3_levels);
    }
    return d;
}

/* Levels of lanes 8e..8e+7 from a qword of 16 nibbles (rot4). */
KVX_INLINE __m256 dec4(const struct dec *d, const uint8_t *w64, int e)
{
    int64_t w;
    memcpy(&w, w64, 8);
    __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi64x(w), d->sh[e]);
    __m256 lo = _mm256_permutevar8x32_ps(d->lut_lo, idx), hi = _mm256_permutevar8x32_ps(d->lut_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* Levels of lanes 8e..8e+7 from a word of 16 two-bit lows and the word holding their high bits
 * at 16h + lane (rot3). */
KVX_INLINE __m256 dec3(const struct dec *d, const uint8_t *lo32, const uint8_t *hi32, int h, int e)
{
    int32_t lo, hi;
    memcpy(&lo, lo32, 4);
    memcpy(&hi, hi32, 4);
    __m256i l = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(lo), d->sh[e]), d->mask3);
    __m256i g = _mm256_slli_epi32(_mm256_srlv_epi32(_mm256_set1_epi32(hi), d->shh[h][e]), 2);
    return _mm256_permutevar8x32_ps(d->lut_lo, _mm256_or_si256(l, g)); /* index bits 0..2 */
}

KVX_INLINE __m256 dec_k(const struct dec *d, int bits, const uint8_t *codes, int32_t dim,
                        int32_t c, int e)
{
    if (bits == 4)
        return dec4(d, codes + 8 * (size_t)c, e);
    return dec3(d, codes + 2 * (size_t)dim + 4 * (size_t)c, codes + 4 * (size_t)(c / 2), c & 1, e);
}

/* Scores of nq (<= 2) queries against one tile, stored below t1. */
KVX_INLINE void qk_tile(const uint8_t *K, int bits, const struct dec *d, int32_t dim, int32_t tile,
                        int32_t t0, int32_t t1, const float *q, int nq, float *scores, int64_t ld)
{
    const int32_t nb = dim / 32;
    const uint8_t *base = K + (size_t)tile * kvx_rot_k_tile_bytes(bits, dim);
    const uint8_t *codes = base + (size_t)nb * 32;
    __m256 acc[2][2];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int32_t blk = 0; blk < nb; blk++) {
        __m256 part[2][2];
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            part[j][0] = part[j][1] = _mm256_setzero_ps();
        for (int32_t c = 32 * blk; c < 32 * blk + 32; c++) {
            __m256 k0 = dec_k(d, bits, codes, dim, c, 0), k1 = dec_k(d, bits, codes, dim, c, 1);
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m256 qb = _mm256_broadcast_ss(q + (size_t)j * (size_t)dim + (size_t)c);
                part[j][0] = _mm256_fmadd_ps(qb, k0, part[j][0]);
                part[j][1] = _mm256_fmadd_ps(qb, k1, part[j][1]);
            }
        }
        const __m128i *sp = (const __m128i *)(base + (size_t)blk * 32);
        __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(sp)), s1 = _mm256_cvtph_ps(_mm_loadu_si128(sp + 1));
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            acc[j][0] = _mm256_fmadd_ps(s0, part[j][0], acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(s1, part[j][1], acc[j][1]);
        }
    }
    const int32_t tok0 = tile * KVX_KV_TILE;
    const int32_t n_valid = t1 - tok0 < KVX_KV_TILE ? t1 - tok0 : KVX_KV_TILE;
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        float *out = scores + (int64_t)j * ld + (tok0 - t0);
        if (n_valid == KVX_KV_TILE) {
            _mm256_storeu_ps(out, acc[j][0]);
            _mm256_storeu_ps(out + 8, acc[j][1]);
        } else {
            float tmp[16];
            _mm256_storeu_ps(tmp, acc[j][0]);
            _mm256_storeu_ps(tmp + 8, acc[j][1]);
            memcpy(out, tmp, (size_t)n_valid * sizeof *out);
        }
    }
}

KVX_INLINE void qk_avx2(const struct kvx_kv_block *b, int bits, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores,
                        int64_t ld)
{
    const int32_t dim = f->dim;
    const struct dec d = dec_make(bits);
    for (int32_t tile = t0 / KVX_KV_TILE; tile * KVX_KV_TILE < t1; tile++)
        for (int32_t i = 0; i < n_q; i += 2) {
            const float *qi = q + (size_t)i * (size_t)dim;
            float *si = scores + (int64_t)i * ld;
            if (n_q - i == 1)
                qk_tile(b->data, bits, &d, dim, tile, t0, t1, qi, 1, si, ld);
            else
                qk_tile(b->data, bits, &d, dim, tile, t0, t1, qi, 2, si, ld);
        }
}

/* acc[j][32 blk .. 32 blk + 32) += sum_t p_j[t] s_tb L[code_t[...]] for nq (<= 2) queries. */
KVX_INLINE void pv_block(const uint8_t *V, int bits, const struct dec *d,
                         const struct kvx_kv_fmt *f, int32_t blk, int32_t t0, int32_t t1,
                         const float *p, int nq, int64_t ld, float *acc)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const size_t rb = kvx_rot_v_codes_bytes(bits, dim), bb = bits == 4 ? 16 : 12;
    const uint8_t *codes = V + kvx_rot_v_codes_off(f) + (size_t)blk * bb;
    const uint16_t *sc = (const uint16_t *)V + blk;
    __m256 a[2][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < 4; u++)
            a[j][u] = _mm256_loadu_ps(acc + (size_t)j * (size_t)dim + 32 * (size_t)blk + 8 * (size_t)u);
    for (int32_t t = t0; t < t1; t++) {
        const uint8_t *bp = codes + (size_t)t * rb;
        const __m256 s = _mm256_set1_ps(kvx_f16_to_f32(sc[(size_t)t * (size_t)nb]));
        __m256 v[4];
        KVX_UNROLL
        for (int u = 0; u < 4; u++) { /* u = 2h + e: channels 16h + 8e .. */
            const int h = u >> 1, e = u & 1;
            __m256 lv = bits == 4 ? dec4(d, bp + 8 * h, e) : dec3(d, bp + 4 + 4 * h, bp, h, e);
            v[u] = _mm256_mul_ps(lv, s);
        }
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

KVX_INLINE void pv_avx2(const struct kvx_kv_block *b, int bits, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                        float *acc)
{
    const struct dec d = dec_make(bits);
    for (int32_t blk = 0; blk < f->dim / 32; blk++)
        for (int32_t i = 0; i < n_q; i += 2) {
            const float *pi = p + (int64_t)i * ld;
            float *ai = acc + (size_t)i * (size_t)f->dim;
            if (n_q - i == 1)
                pv_block(b->data, bits, &d, f, blk, t0, t1, pi, 1, ld, ai);
            else
                pv_block(b->data, bits, &d, f, blk, t0, t1, pi, 2, ld, ai);
        }
}

/* qk, rot4 / rot3 K, AVX2: scores[i*ld + t - t0] = sum_b s_tb sum_{c in b} q_ic L[code_t[c]]
 * (q rotated).  fp32 FMA, block sums in channel order.  Test: within 1e-5 x sum_c |q_ic k_tc|
 * of the scalar kernel (test_kv_codec_lowbit.c). */
void kvx_kv_qk_rot4_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx2(b, 4, f, t0, t1, q, n_q, scores, ld);
}

void kvx_kv_qk_rot3_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx2(b, 3, f, t0, t1, q, n_q, scores, ld);
}

/* pv, rot4 / rot3 V, AVX2: acc[i*dim + d] += sum_t p[i*ld + t - t0] s_tb L[code_t[d]] in the
 * rotated basis.  fp32 FMA in token order.  Test: within 1e-5 x sum_t p_t |v_t[d]| of the
 * scalar kernel. */
void kvx_kv_pv_rot4_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx2(b, 4, f, t0, t1, p, n_q, ld, acc);
}

void kvx_kv_pv_rot3_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx2(b, 3, f, t0, t1, p, n_q, ld, acc);
}

#endif
