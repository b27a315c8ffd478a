/* kv/codec_quant_avx2: qk and pv kernels of the q8 and q4 KV codecs with AVX2 + FMA + F16C.
 *
 * Same page layout, integers and products as the scalar specification (codec_q8.c,
 * codec_q4.c; geometry in kv/codec_quant.h), 8 lanes: a 64-byte K tile row is two ymm of
 * 8 tokens x 4 bytes.
 *   qk, q8: vpmaddubsw multiplies u8 by s8 into saturating int16 pairs, so the codes go in as
 *     signed k_int (code ^ 0x80) and the query's sign moves onto them (vpsignb): |qi| x
 *     (sign(qi) k_int), each pair at most 2 x 127 x 127 < 2^15; vpmaddwd by 1 widens to int32.
 *   qk, q4: nibbles (0..15) x qi in int16 pairs, summed over the group's 4 rows (at most
 *     8 x 2 x 15 x 127 = 30480 < 2^15), then widened once per group.
 *   pv: per 16-token block the weights w[t] = p[t] dv[t] are formed 8 at a time; per token a
 *     group's 32 codes are widened to fp32 once (4 ymm) for up to 3 queries.
 * The int32 sums are exactly the scalar ones; only the fp32 epilogue rounds differently.
 * Also the kernels of KVX_ISA_AVX512 on processors without VNNI (qk).  Compiled with
 * -mavx2 -mfma -mf16c (Makefile, by file name); called only after kvx_cpu_has_isa(KVX_ISA_AVX2).
 * Empty on processors other than x86. */
#include "kv/codec_quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")

KVX_INLINE float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

KVX_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KVX_INLINE int32_t hsum8i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 8 int32 lanes to 8 int8 (values already within -127..127). */
KVX_INLINE void store8_epi8(int8_t *dst, __m256i v)
{
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    w = _mm_packs_epi16(w, w);
    _mm_storel_epi64((__m128i *)dst, w);
}

/* Query quantization (the rule in kv/codec_quant.h), 8 lanes.  Codes and integer sums equal
 * the scalar ones bit for bit; the fp32 sum S differs by summation order. */
static void qquery_avx2(const float *q, int32_t dim, int32_t nq, int32_t c0, int32_t nc,
                        struct kvx_kv_qquery *out)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int32_t i = 0; i < nq; i++)
        for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
            const float *x = q + (size_t)i * (size_t)dim + (size_t)c0 + (size_t)g * KVX_KV_QGROUP;
            __m256 xv[4], mx = _mm256_setzero_ps(), sum = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm256_loadu_ps(x + 8 * k);
                mx = _mm256_max_ps(mx, _mm256_and_ps(xv[k], abs_mask));
                sum = _mm256_add_ps(sum, xv[k]);
            }
            float amax = hmax8(mx);
            __m256 vid = _mm256_set1_ps(amax >= KVX_KV_QQ_TINY ? 127.0f / amax : 0.0f);
            __m256i isum = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                __m256i qi = _mm256_cvtps_epi32(_mm256_mul_ps(xv[k], vid)); /* rint */
                isum = _mm256_add_epi32(isum, qi);
                store8_epi8(out->q[i] + g * KVX_KV_QGROUP + 8 * k, qi);
            }
            out->isum[i][g] = hsum8i(isum);
            out->sum[i][g] = hsum8(sum);
            out->d[i][g] = amax >= KVX_KV_QQ_TINY ? amax / 127.0f : 0.0f;
        }
}

KVX_INLINE __m256i bcast4(const int8_t *qi)
{
    int32_t v;
    memcpy(&v, qi, sizeof v);
    return _mm256_set1_epi32(v);
}

/* Lanes i < n set (n may be <= 0 or >= 8). */
KVX_INLINE __m256i lane_mask(int32_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Scores of nq (<= 4, constant after inlining) quantized queries against one tile, channels
 * [c0, c0 + nc) of qq (c0 > 0: added to the stored scores). */
KVX_INLINE void qk_tile(const uint8_t *K, int32_t dim, int32_t tile, int32_t t0, int32_t t1,
                        const struct kvx_kv_qquery *qq, int nq, int32_t c0, int32_t nc, bool q4,
                        float *scores, int64_t ld)
{
    const size_t stride = q4 ? kvx_kv_q4_block_bytes(dim) : kvx_kv_q8_block_bytes(dim);
    const size_t code_bytes = q4 ? (size_t)8 * (size_t)dim : (size_t)16 * (size_t)dim;
    const int32_t ng = dim / KVX_KV_QGROUP, tok0 = tile * KVX_KV_TILE;
    const int32_t n_valid = t1 - tok0 < KVX_KV_TILE ? t1 - tok0 : KVX_KV_TILE;
    const uint8_t *base = K + (size_t)tile * stride;
    const bool do_pf = tok0 + 2 * KVX_KV_TILE <= t1 + KVX_KV_TILE - 1;
    const __m256i ones = _mm256_set1_epi16(1), nib = _mm256_set1_epi8(0x0f);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    _Alignas(32) float s[4][KVX_KV_TILE];
    for (int j = 0; j < nq; j++)
        for (int32_t t = 0; t < KVX_KV_TILE; t++)
            s[j][t] = c0 == 0 || t >= n_valid ? 0.0f : scores[(int64_t)j * ld + (tok0 - t0) + t];
    for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
        const int32_t gg = c0 / KVX_KV_QGROUP + g;
        const int32_t rows = q4 ? KVX_KV_QGROUP / 8 : KVX_KV_QGROUP / 4;
        __m256i acc[4][2];
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            acc[j][0] = acc[j][1] = _mm256_setzero_si256();
        for (int32_t r = 0; r < rows; r++) {
            const uint8_t *row = base + ((size_t)gg * (size_t)rows + (size_t)r) * 64;
            if (do_pf)
                _mm_prefetch((const char *)row + stride, _MM_HINT_T0);
            __m256i k0 = _mm256_loadu_si256((const __m256i *)row);
            __m256i k1 = _mm256_loadu_si256((const __m256i *)(row + 32));
            if (q4) {
                __m256i l0 = _mm256_and_si256(k0, nib), l1 = _mm256_and_si256(k1, nib);
                __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(k0, 4), nib);
                __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(k1, 4), nib);
                KVX_UNROLL
                for (int j = 0; j < nq; j++) { /* int16 pairs, widened after the group */
                    const int8_t *qj = qq->q[j] + g * KVX_KV_QGROUP + r * 8;
                    __m256i ql = bcast4(qj), qh = bcast4(qj + 4);
                    acc[j][0] = _mm256_add_epi16(acc[j][0], _mm256_add_epi16(
                        _mm256_maddubs_epi16(l0, ql), _mm256_maddubs_epi16(h0, qh)));
                    acc[j][1] = _mm256_add_epi16(acc[j][1], _mm256_add_epi16(
                        _mm256_maddubs_epi16(l1, ql), _mm256_maddubs_epi16(h1, qh)));
                }
            } else {
                k0 = _mm256_xor_si256(k0, flip); /* k_int as s8 */
                k1 = _mm256_xor_si256(k1, flip);
                KVX_UNROLL
                for (int j = 0; j < nq; j++) {
                    __m256i qb = bcast4(qq->q[j] + g * KVX_KV_QGROUP + r * 4);
                    __m256i qa = _mm256_abs_epi8(qb);
                    __m256i p0 = _mm256_maddubs_epi16(qa, _mm256_sign_epi8(k0, qb));
                    __m256i p1 = _mm256_maddubs_epi16(qa, _mm256_sign_epi8(k1, qb));
                    acc[j][0] = _mm256_add_epi32(acc[j][0], _mm256_madd_epi16(p0, ones));
                    acc[j][1] = _mm256_add_epi32(acc[j][1], _mm256_madd_epi16(p1, ones));
                }
            }
        }
        const uint16_t *sc = (const uint16_t *)(base + code_bytes);
        KVX_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256 dk = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + gg * KVX_KV_TILE + 8 * h)));
            __m256 mk = q4 ? _mm256_cvtph_ps(_mm_loadu_si128(
                                 (const __m128i *)(sc + (ng + gg) * KVX_KV_TILE + 8 * h)))
                           : _mm256_setzero_ps();
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m256i iacc = q4 ? _mm256_madd_epi16(acc[j][h], ones) : acc[j][h];
                __m256 w = _mm256_mul_ps(dk, _mm256_set1_ps(qq->d[j][g]));
                __m256 sj = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc), w, _mm256_load_ps(s[j] + 8 * h));
                if (q4)
                    sj = _mm256_fmadd_ps(mk, _mm256_set1_ps(qq->sum[j][g]), sj);
                _mm256_store_ps(s[j] + 8 * h, sj);
            }
        }
    }
    if (do_pf)
        for (size_t o = code_bytes; o < stride; o += 64)
            _mm_prefetch((const char *)base + stride + o, _MM_HINT_T0);
    for (int j = 0; j < nq; j++) {
        float *o = scores + (int64_t)j * ld + (tok0 - t0);
        if (n_valid == KVX_KV_TILE) {
            _mm256_storeu_ps(o, _mm256_load_ps(s[j]));
            _mm256_storeu_ps(o + 8, _mm256_load_ps(s[j] + 8));
        } else {
            _mm256_maskstore_ps(o, lane_mask(n_valid), _mm256_load_ps(s[j]));
            _mm256_maskstore_ps(o + 8, lane_mask(n_valid - 8), _mm256_load_ps(s[j] + 8));
        }
    }
}

KVX_INLINE void qk_avx2(const uint8_t *K, int32_t dim, int32_t t0, int32_t t1, const float *q,
                        int32_t n_q, bool q4, float *scores, int64_t ld)
{
    struct kvx_kv_qquery qq;
    for (int32_t i = 0; i < n_q; i += KVX_KV_QQ_ROWS) {
        const int32_t nb = n_q - i < KVX_KV_QQ_ROWS ? n_q - i : KVX_KV_QQ_ROWS;
        float *si = scores + (int64_t)i * ld;
        for (int32_t c0 = 0; c0 < dim; c0 += KVX_KV_QQ_CH) {
            const int32_t nc = dim - c0 < KVX_KV_QQ_CH ? dim - c0 : KVX_KV_QQ_CH;
            qquery_avx2(q + (size_t)i * (size_t)dim, dim, nb, c0, nc, &qq);
            for (int32_t tile = t0 / KVX_KV_TILE; tile * KVX_KV_TILE < t1; tile++) {
                switch (nb) {
                case 1: qk_tile(K, dim, tile, t0, t1, &qq, 1, c0, nc, q4, si, ld); break;
                case 2: qk_tile(K, dim, tile, t0, t1, &qq, 2, c0, nc, q4, si, ld); break;
                case 3: qk_tile(K, dim, tile, t0, t1, &qq, 3, c0, nc, q4, si, ld); break;
                default: qk_tile(K, dim, tile, t0, t1, &qq, 4, c0, nc, q4, si, ld); break;
                }
            }
        }
    }
}

/* qk, q8 K, AVX2.  scores[i*ld + t - t0] = sum_g (dk_g[t] dq_ig) I_ig[t], I exact in int32
 * (sign trick + vpmaddubsw + vpmaddwd), fp32 FMA epilogue per group in group order.
 * Test: within 1e-6 x sum_g |dk dq I| of kvx_kv_qk_q8_scalar (test_kv_codec_quant.c). */
void kvx_kv_qk_q8_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx2(b->data, f->dim, t0, t1, q, n_q, false, scores, ld);
}

/* qk, q4 K, AVX2.  scores[i*ld + t - t0] = sum_g (dk_g[t] dq_ig) I_ig[t] + mk_g[t] S_ig, I exact
 * in int32.  Test: within 1e-6 x sum_g (|dk dq I| + |mk| sum |q|) of kvx_kv_qk_q4plain_scalar. */
void kvx_kv_qk_q4plain_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx2(b->data, f->dim, t0, t1, q, n_q, true, scores, ld);
}

/* acc[j][d0 .. d0 + 32) += sum_{t0 <= t < t1} (w_jg[t] v_d[t] (+ p_jt mv_g[t] for q4)) for
 * nq (<= 3, constant after inlining) queries and the group g starting at channel d0. */
KVX_INLINE void pv_group(const uint8_t *V, int32_t dim, int32_t d0, int32_t t0, int32_t t1,
                         const float *p, int nq, int64_t ld, float *acc, bool q4)
{
    const size_t stride = q4 ? kvx_kv_q4_block_bytes(dim) : kvx_kv_q8_block_bytes(dim);
    const size_t code_bytes = q4 ? (size_t)8 * (size_t)dim : (size_t)16 * (size_t)dim;
    const size_t row_bytes = q4 ? (size_t)dim / 2 : (size_t)dim;
    const int32_t ng = dim / KVX_KV_QGROUP, g = d0 / KVX_KV_QGROUP;
    _Alignas(32) float w[3][KVX_KV_TILE], pb[KVX_KV_TILE];
    __m256 a[3][4], msum[3];
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        KVX_UNROLL
        for (int u = 0; u < 4; u++)
            a[j][u] = _mm256_loadu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 8 * (size_t)u);
        msum[j] = _mm256_setzero_ps();
    }
    const __m256i nib = _mm256_set1_epi32(0x0f);
    for (int32_t blk = t0 / KVX_KV_TILE; blk * KVX_KV_TILE < t1; blk++) {
        const int32_t b0 = blk * KVX_KV_TILE;
        const int32_t lo = t0 > b0 ? t0 : b0, hi = t1 < b0 + KVX_KV_TILE ? t1 : b0 + KVX_KV_TILE;
        const uint8_t *base = V + (size_t)blk * stride;
        const uint16_t *sc = (const uint16_t *)(base + code_bytes);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            const float *pj = p + (int64_t)j * ld + (lo - t0);
            if (hi - lo < KVX_KV_TILE) { /* a partial block: the tokens outside weigh 0 */
                memset(pb, 0, sizeof pb);
                memcpy(pb + (lo - b0), pj, (size_t)(hi - lo) * sizeof *pb);
                pj = pb;
            }
            KVX_UNROLL
            for (int h = 0; h < 2; h++) {
                __m256 pv = _mm256_loadu_ps(pj + 8 * h);
                __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + g * KVX_KV_TILE + 8 * h)));
                _mm256_store_ps(w[j] + 8 * h, _mm256_mul_ps(pv, dv));
                if (q4) {
                    __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(
                        (const __m128i *)(sc + (ng + g) * KVX_KV_TILE + 8 * h)));
                    msum[j] = _mm256_fmadd_ps(pv, mv, msum[j]);
                }
            }
        }
        const bool do_pf = hi - lo == KVX_KV_TILE && b0 + 2 * KVX_KV_TILE <= t1 + KVX_KV_TILE - 1;
        if (do_pf)
            for (size_t o = code_bytes; o < stride; o += 64)
                _mm_prefetch((const char *)base + stride + o, _MM_HINT_T0);
        for (int32_t t = lo; t < hi; t++) {
            const int32_t tl = t - b0;
            const uint8_t *row = base + (size_t)tl * row_bytes + (q4 ? (size_t)d0 / 2 : (size_t)d0);
            if (do_pf)
                _mm_prefetch((const char *)row + stride, _MM_HINT_T0);
            __m256 vv[4];
            if (q4) {
                __m256i z0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)row));
                __m256i z1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(row + 8)));
                vv[0] = _mm256_cvtepi32_ps(_mm256_and_si256(z0, nib));
                vv[1] = _mm256_cvtepi32_ps(_mm256_and_si256(z1, nib));
                vv[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(z0, 4));
                vv[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(z1, 4));
            } else {
                KVX_UNROLL
                for (int u = 0; u < 4; u++)
                    vv[u] = _mm256_cvtepi32_ps(
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + 8 * u))));
            }
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m256 wb = _mm256_broadcast_ss(&w[j][tl]);
                KVX_UNROLL
                for (int u = 0; u < 4; u++)
                    a[j][u] = _mm256_fmadd_ps(wb, vv[u], a[j][u]);
            }
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        __m256 m = q4 ? _mm256_set1_ps(hsum8(msum[j])) : _mm256_setzero_ps();
        KVX_UNROLL
        for (int u = 0; u < 4; u++) {
            if (q4)
                a[j][u] = _mm256_add_ps(a[j][u], m);
            _mm256_storeu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 8 * (size_t)u, a[j][u]);
        }
    }
}

KVX_INLINE void pv_avx2(const uint8_t *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
                        int32_t n_q, int64_t ld, float *acc, bool q4)
{
    for (int32_t i = 0; i < n_q; i += 3) {
        const float *pi = p + (int64_t)i * ld;
        float *ai = acc + (size_t)i * (size_t)dim;
        for (int32_t d0 = 0; d0 < dim; d0 += KVX_KV_QGROUP) {
            switch (n_q - i) {
            case 1: pv_group(V, dim, d0, t0, t1, pi, 1, ld, ai, q4); break;
            case 2: pv_group(V, dim, d0, t0, t1, pi, 2, ld, ai, q4); break;
            default: pv_group(V, dim, d0, t0, t1, pi, 3, ld, ai, q4); break;
            }
        }
    }
}

/* pv, q8 V, AVX2.  acc[i*dim + d] += sum_t (p_it dv_g[t]) v_int_d[t], fp32 FMA in token order.
 * Test: within 1e-5 x sum_t |w v_int| of kvx_kv_pv_q8_scalar (test_kv_codec_quant.c). */
void kvx_kv_pv_q8_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx2(b->data, f->dim, t0, t1, p, n_q, ld, acc, false);
}

/* pv, q4 V, AVX2.  acc[i*dim + d] += sum_t (p_it dv_g[t]) v_q_d[t] + sum_t p_it mv_g[t], fp32
 * FMA in token order, the minimum's share per lane then across lanes.
 * Test: within 1e-5 x sum_t (|w v_q| + |p mv|) of kvx_kv_pv_q4plain_scalar. */
void kvx_kv_pv_q4plain_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx2(b->data, f->dim, t0, t1, p, n_q, ld, acc, true);
}

/* The q4 codec's centre share (kvx_kv_q4_centre_*_scalar in codec_q4.c), 8 lanes: two
 * accumulators for the dot product and the sum, scalar tails.  Test: test_kv_codec_q4.c. */

void kvx_kv_q4_centre_qk_avx2(const float *q, int32_t n_q, int32_t dim, const float *c,
                              float *scores, int64_t ld, int32_t n)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *qi = q + (size_t)i * (size_t)dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int32_t d = 0;
        for (; d + 16 <= dim; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), _mm256_loadu_ps(c + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d + 8), _mm256_loadu_ps(c + d + 8), a1);
        }
        float s = hsum8(_mm256_add_ps(a0, a1));
        for (; d < dim; d++)
            s += qi[d] * c[d];
        float *row = scores + (int64_t)i * ld;
        const __m256 vs = _mm256_set1_ps(s);
        int32_t t = 0;
        for (; t + 8 <= n; t += 8)
            _mm256_storeu_ps(row + t, _mm256_add_ps(_mm256_loadu_ps(row + t), vs));
        for (; t < n; t++)
            row[t] += s;
    }
}

void kvx_kv_q4_centre_pv_avx2(const float *p, int32_t n_q, int64_t ld, int32_t n,
                              const float *c, int32_t dim, float *acc)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *pi = p + (int64_t)i * ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int32_t t = 0;
        for (; t + 16 <= n; t += 16) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(pi + t));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(pi + t + 8));
        }
        float w = hsum8(_mm256_add_ps(a0, a1));
        for (; t < n; t++)
            w += pi[t];
        float *ai = acc + (size_t)i * (size_t)dim;
        const __m256 vw = _mm256_set1_ps(w);
        int32_t d = 0;
        for (; d + 8 <= dim; d += 8)
            _mm256_storeu_ps(ai + d, _mm256_fmadd_ps(vw, _mm256_loadu_ps(c + d), _mm256_loadu_ps(ai + d)));
        for (; d < dim; d++)
            ai[d] += w * c[d];
    }
}

#endif
