/* kv/codec_quant_avx512: pv kernels of the q8 and q4 KV codecs with AVX-512 (F/BW/DQ/VL).
 *
 * Same page layout and products as the scalar specification (codec_q8.c, codec_q4.c; geometry
 * in kv/codec_quant.h).  Per 16-token block the weights w[t] = p[t] dv[t] of every (query,
 * group) are formed 16 at a time into a small table; then per token the codes of 64 (or 32)
 * channels are widened to fp32 once (q8: vpmovsxbd + vcvtdq2ps; q4: one vpmovzxbd, then vpermps
 * from the table 0..15 (it reads only an index's low nibble) and a shift give channels j and
 * j + 16 of a group) and FMA'd into the accumulators of up to 4
 * queries with w[t] broadcast from the table.  q4's minimum adds sum_t p[t] mv[t] per (query,
 * group): 16 tokens per FMA lane, summed across lanes at the end.  The block
 * KVX_QUANT_PV_PREFETCH_BLOCKS ahead is prefetched while one is computed.
 * Compiled with the AVX-512 flags (Makefile, by file name); the q8/q4 ops tables hand these
 * out for KVX_ISA_AVX512 (qk: codec_quant_avx512vnni.c, or AVX2's without VNNI).  Empty on
 * processors other than x86. */
#include "kv/codec_quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 4")
/* Software prefetch distance in 16-token blocks (never past the range). */
#ifndef KVX_QUANT_PV_PREFETCH_BLOCKS
#define KVX_QUANT_PV_PREFETCH_BLOCKS 2
#endif

/* acc[j][d0 .. d0 + 16 nv) += sum_{t0 <= t < t1} (w_jg[t] v_d[t] (+ p_jt mv_g[t] for q4)) for nq
 * (<= 4) queries; nv is 4 (two groups) or 2 (one group).  All shape arguments are constants after
 * inlining. */
KVX_INLINE void pv_chunk(const uint8_t *V, int32_t dim, int32_t d0, int nv, int32_t t0,
                         int32_t t1, const float *p, int nq, int64_t ld, float *acc, bool q4)
{
    const size_t stride = q4 ? kvx_kv_q4_block_bytes(dim) : kvx_kv_q8_block_bytes(dim);
    const size_t code_bytes = q4 ? (size_t)8 * (size_t)dim : (size_t)16 * (size_t)dim;
    const size_t row_bytes = q4 ? (size_t)dim / 2 : (size_t)dim;
    const int32_t ng = dim / KVX_KV_QGROUP, g0 = d0 / KVX_KV_QGROUP, ngc = nv / 2;
    _Alignas(64) float w[4][2][KVX_KV_TILE];
    __m512 a[4][4], msum[4][2];
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            a[j][u] = _mm512_loadu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u);
        msum[j][0] = msum[j][1] = _mm512_setzero_ps();
    }
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int32_t blk = t0 / KVX_KV_TILE; blk * KVX_KV_TILE < t1; blk++) {
        const int32_t b0 = blk * KVX_KV_TILE;
        const int32_t lo = t0 > b0 ? t0 : b0, hi = t1 < b0 + KVX_KV_TILE ? t1 : b0 + KVX_KV_TILE;
        const __mmask16 m = (__mmask16)(((1u << (hi - lo)) - 1u) << (lo - b0));
        const uint8_t *base = V + (size_t)blk * stride;
        const uint16_t *sc = (const uint16_t *)(base + code_bytes);
        /* w[j][g][t] = p_j[t] dv_g[t] for the block's tokens (0 outside [lo, hi)) */
        __m512 dv[2], mv[2];
        KVX_UNROLL
        for (int g = 0; g < ngc; g++) {
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + (g0 + g) * KVX_KV_TILE)));
            mv[g] = q4 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                             (const __m256i *)(sc + (ng + g0 + g) * KVX_KV_TILE)))
                       : _mm512_setzero_ps();
        }
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            const float *pj = p + (int64_t)j * ld + (lo - t0);
            __m512 pv = m == 0xffff ? _mm512_loadu_ps(pj) : _mm512_maskz_expandloadu_ps(m, pj);
            KVX_UNROLL
            for (int g = 0; g < ngc; g++) {
                _mm512_store_ps(w[j][g], _mm512_mul_ps(pv, dv[g]));
                if (q4)
                    msum[j][g] = _mm512_fmadd_ps(pv, mv[g], msum[j][g]);
            }
        }
        /* the block KVX_QUANT_PV_PREFETCH_BLOCKS on: its scales here, its rows one per token below */
        const size_t pf_off = (size_t)KVX_QUANT_PV_PREFETCH_BLOCKS * stride;
        const bool do_pf = hi - lo == KVX_KV_TILE && b0 + KVX_QUANT_PV_PREFETCH_BLOCKS * KVX_KV_TILE < t1;
        if (do_pf)
            for (size_t o = code_bytes; o < stride; o += 64)
                _mm_prefetch((const char *)base + pf_off + o, _MM_HINT_T0);
        for (int32_t t = lo; t < hi; t++) {
            const int32_t tl = t - b0;
            const uint8_t *row = base + (size_t)tl * row_bytes + (q4 ? (size_t)d0 / 2 : (size_t)d0);
            if (do_pf)
                _mm_prefetch((const char *)row + pf_off, _MM_HINT_T0);
            __m512 vv[4];
            if (q4) {
                KVX_UNROLL
                for (int g = 0; g < ngc; g++) { /* vpermps reads only an index's low 4 bits */
                    __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(row + 16 * g)));
                    vv[2 * g] = _mm512_permutexvar_ps(z, iota);
                    vv[2 * g + 1] = _mm512_permutexvar_ps(_mm512_srli_epi32(z, 4), iota);
                }
            } else {
                KVX_UNROLL
                for (int u = 0; u < nv; u++)
                    vv[u] = _mm512_cvtepi32_ps(
                        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + 16 * u))));
            }
            KVX_UNROLL
            for (int j = 0; j < nq; j++)
                KVX_UNROLL
                for (int u = 0; u < nv; u++)
                    a[j][u] = _mm512_fmadd_ps(_mm512_set1_ps(w[j][u / 2][tl]), vv[u], a[j][u]);
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++) {
            if (q4)
                a[j][u] = _mm512_add_ps(a[j][u], _mm512_set1_ps(_mm512_reduce_add_ps(msum[j][u / 2])));
            _mm512_storeu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 16 * (size_t)u, a[j][u]);
        }
}

KVX_INLINE void pv_queries(const uint8_t *V, int32_t dim, int32_t t0, int32_t t1,
                           const float *p, int nq, int64_t ld, float *acc, bool q4)
{
    int32_t d0 = 0;
    for (; d0 + 64 <= dim; d0 += 64)
        pv_chunk(V, dim, d0, 4, t0, t1, p, nq, ld, acc, q4);
    if (d0 < dim) /* dim % 64 == 32 */
        pv_chunk(V, dim, d0, 2, t0, t1, p, nq, ld, acc, q4);
}

KVX_INLINE void pv_avx512(const uint8_t *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
                          int32_t n_q, int64_t ld, float *acc, bool q4)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *pi = p + (int64_t)i * ld;
        float *ai = acc + (size_t)i * (size_t)dim;
        switch (n_q - i) {
        case 1: pv_queries(V, dim, t0, t1, pi, 1, ld, ai, q4); break;
        case 2: pv_queries(V, dim, t0, t1, pi, 2, ld, ai, q4); break;
        case 3: pv_queries(V, dim, t0, t1, pi, 3, ld, ai, q4); break;
        default: pv_queries(V, dim, t0, t1, pi, 4, ld, ai, q4); break;
        }
    }
}

/* pv, q8 V, AVX-512.  acc[i*dim + d] += sum_t (p_it dv_g[t]) v_int_d[t], fp32 FMA in token
 * order.  Test: within 1e-5 x sum_t |w v_int| of kvx_kv_pv_q8_scalar (test_kv_codec_quant.c). */
void kvx_kv_pv_q8_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx512(b->data, f->dim, t0, t1, p, n_q, ld, acc, false);
}

/* pv, q4 V, AVX-512.  acc[i*dim + d] += sum_t (p_it dv_g[t]) v_q_d[t] + sum_t p_it mv_g[t],
 * fp32 FMA in token order, the minimum's share summed per lane then across lanes.
 * Test: within 1e-5 x sum_t (|w v_q| + |p mv|) of kvx_kv_pv_q4plain_scalar. */
void kvx_kv_pv_q4plain_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx512(b->data, f->dim, t0, t1, p, n_q, ld, acc, true);
}

/* The q4 codec's centre share (kvx_kv_q4_centre_*_scalar in codec_q4.c), 16 lanes with masked
 * tails.  Test: test_kv_codec_q4.c. */
static __mmask16 tail_mask(int32_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u); }

void kvx_kv_q4_centre_qk_avx512(const float *q, int32_t n_q, int32_t dim, const float *c,
                                float *scores, int64_t ld, int32_t n)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *qi = q + (size_t)i * (size_t)dim;
        __m512 a = _mm512_setzero_ps();
        for (int32_t d = 0; d < dim; d += 16) {
            const __mmask16 k = tail_mask(dim - d);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, qi + d), _mm512_maskz_loadu_ps(k, c + d), a);
        }
        const __m512 vs = _mm512_set1_ps(_mm512_reduce_add_ps(a));
        float *row = scores + (int64_t)i * ld;
        for (int32_t t = 0; t < n; t += 16) {
            const __mmask16 k = tail_mask(n - t);
            _mm512_mask_storeu_ps(row + t, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, row + t), vs));
        }
    }
}

void kvx_kv_q4_centre_pv_avx512(const float *p, int32_t n_q, int64_t ld, int32_t n,
                                const float *c, int32_t dim, float *acc)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *pi = p + (int64_t)i * ld;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int32_t t = 0;
        for (; t + 32 <= n; t += 32) {
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(pi + t));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(pi + t + 16));
        }
        for (; t < n; t += 16)
            a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(tail_mask(n - t), pi + t));
        const __m512 vw = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a0, a1)));
        float *ai = acc + (size_t)i * (size_t)dim;
        for (int32_t d = 0; d < dim; d += 16) {
            const __mmask16 k = tail_mask(dim - d);
            _mm512_mask_storeu_ps(ai + d, k, _mm512_fmadd_ps(vw, _mm512_maskz_loadu_ps(k, c + d),
                                                             _mm512_maskz_loadu_ps(k, ai + d)));
        }
    }
}

#endif
