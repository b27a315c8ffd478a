/* kv/codec_quant_avx512vnni: qk kernels of the q8 and q4 KV codecs with AVX-512 VNNI.
 *
 * Same page layout and integers as the scalar specification (codec_q8.c, codec_q4.c;
 * geometry in kv/codec_quant.h).  A K tile row of 64 bytes holds 4 channels (q8) or 8 channels
 * in two nibbles (q4) of 16 tokens, 4 bytes per token: one vpdpbusd with the query's 4 int8
 * values broadcast adds 4 products into each token's int32 lane, so 16 scores take
 * dim/4 vpdpbusd per query (q4: plus a mask and a shift per 64 bytes, shared by the queries).
 * Per (tile, group) the int32 sums are scaled once: s += (dk[t] dq) I[t] (+ mk[t] S for q4).
 * q8 codes are stored as k_int + 128 (vpdpbusd takes one unsigned operand): the accumulator
 * starts at -128 sum_c qi_c, which makes it exactly sum_c qi_c k_int_c.
 * Up to 4 queries x 2 tiles per pass (8 independent accumulator chains hide vpdpbusd's
 * latency); tiles KVX_QUANT_QK_PREFETCH_TILES ahead are prefetched while a pair is computed.
 * Compiled with the AVX-512 flags plus -mavx512vnni (Makefile, by file name); the q8/q4 ops
 * tables hand these out for KVX_ISA_AVX512 only when kvx_cpu_has_avx512_vnni().  Empty on
 * processors other than x86. */
#include "kv/codec_quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#define KVX_INLINE static inline __attribute__((always_inline))
#define KVX_UNROLL _Pragma("GCC unroll 8")
/* Software prefetch distance in tiles: while tiles [tile, tile + nt) are computed, tiles
 * [tile + d, tile + d + nt) are fetched, d = max(this, nt), never past the range. */
#ifndef KVX_QUANT_QK_PREFETCH_TILES
#define KVX_QUANT_QK_PREFETCH_TILES 4
#endif

/* Query quantization (the rule in kv/codec_quant.h), 16 lanes: amax, sums and the codes of
 * one 32-channel group per step.  Codes and integer sums equal the scalar ones bit for bit;
 * the fp32 sum S differs by summation order. */
static void qquery_avx512(const float *q, int32_t dim, int32_t nq, int32_t c0, int32_t nc,
                          struct kvx_kv_qquery *out)
{
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int32_t i = 0; i < nq; i++)
        for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
            const float *x = q + (size_t)i * (size_t)dim + (size_t)c0 + (size_t)g * KVX_KV_QGROUP;
            __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(x0, abs_mask),
                                                            _mm512_and_ps(x1, abs_mask)));
            float id = amax >= KVX_KV_QQ_TINY ? 127.0f / amax : 0.0f;
            __m512 vid = _mm512_set1_ps(id);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid)); /* rint (MXCSR: nearest) */
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
            _mm_storeu_si128((__m128i *)(out->q[i] + g * KVX_KV_QGROUP), _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(out->q[i] + g * KVX_KV_QGROUP + 16), _mm512_cvtsepi32_epi8(q1));
            out->isum[i][g] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            out->sum[i][g] = _mm512_reduce_add_ps(_mm512_add_ps(x0, x1));
            out->d[i][g] = amax >= KVX_KV_QQ_TINY ? amax / 127.0f : 0.0f;
        }
}

/* The 4 int8 query values qi[c .. c+4) broadcast to every 32-bit lane. */
KVX_INLINE __m512i bcast4(const int8_t *qi)
{
    int32_t v;
    memcpy(&v, qi, sizeof v);
    return _mm512_set1_epi32(v);
}

/* Scores of nq (<= 4) quantized queries against nt (<= 2) tiles from `tile`, channels
 * [c0, c0 + nc) of the quantized block qq (c0 > 0: added to the scores already stored).
 * q4 selects the codec; all shape arguments are constants after inlining. */
KVX_INLINE void qk_tiles(const uint8_t *K, int32_t dim, int32_t tile, int nt, int32_t t0,
                         int32_t t1, const struct kvx_kv_qquery *qq, int nq, int32_t c0,
                         int32_t nc, bool q4, float *scores, int64_t ld)
{
    const size_t stride = q4 ? kvx_kv_q4_block_bytes(dim) : kvx_kv_q8_block_bytes(dim);
    const size_t code_bytes = q4 ? (size_t)8 * (size_t)dim : (size_t)16 * (size_t)dim;
    const int32_t ng = dim / KVX_KV_QGROUP;
    const uint8_t *base = K + (size_t)tile * stride;
    /* prefetch nt tiles further on while computing these (not past the range) */
    const int pf_d = KVX_QUANT_QK_PREFETCH_TILES > nt ? KVX_QUANT_QK_PREFETCH_TILES : nt;
    const bool do_pf = (tile + pf_d + nt - 1) * KVX_KV_TILE < t1;
    const uint8_t *pf = base + (size_t)pf_d * stride;
    __mmask16 valid[2];
    __m512 s[4][2];
    KVX_UNROLL
    for (int u = 0; u < nt; u++) {
        int32_t tok0 = (tile + u) * KVX_KV_TILE;
        int32_t n_valid = t1 - tok0 < KVX_KV_TILE ? t1 - tok0 : KVX_KV_TILE;
        valid[u] = (__mmask16)((1u << n_valid) - 1u);
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            s[j][u] = c0 == 0 ? _mm512_setzero_ps()
                              : _mm512_maskz_loadu_ps(valid[u], scores + (int64_t)j * ld + (tok0 - t0));
    }
    const __m512i nib = _mm512_set1_epi8(0x0f);
    for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
        const int32_t gg = c0 / KVX_KV_QGROUP + g; /* the group's index in the head */
        __m512i acc[4][2];
        KVX_UNROLL
        for (int j = 0; j < nq; j++)
            KVX_UNROLL
            for (int u = 0; u < nt; u++)
                acc[j][u] = q4 ? _mm512_setzero_si512() : _mm512_set1_epi32(-128 * qq->isum[j][g]);
        const int32_t rows = q4 ? KVX_KV_QGROUP / 8 : KVX_KV_QGROUP / 4; /* 64-byte rows */
        KVX_UNROLL
        for (int32_t r = 0; r < rows; r++) {
            const size_t off = ((size_t)gg * (size_t)rows + (size_t)r) * 64;
            if (do_pf)
                KVX_UNROLL
                for (int u = 0; u < nt; u++)
                    _mm_prefetch((const char *)pf + (size_t)u * stride + off, _MM_HINT_T0);
            if (q4) {
                __m512i lo[2], hi[2];
                KVX_UNROLL
                for (int u = 0; u < nt; u++) {
                    __m512i x = _mm512_loadu_si512(base + (size_t)u * stride + off);
                    lo[u] = _mm512_and_si512(x, nib);
                    hi[u] = _mm512_and_si512(_mm512_srli_epi16(x, 4), nib);
                }
                KVX_UNROLL
                for (int j = 0; j < nq; j++) {
                    const int8_t *qj = qq->q[j] + g * KVX_KV_QGROUP + r * 8;
                    __m512i ql = bcast4(qj), qh = bcast4(qj + 4);
                    KVX_UNROLL
                    for (int u = 0; u < nt; u++) {
                        acc[j][u] = _mm512_dpbusd_epi32(acc[j][u], lo[u], ql);
                        acc[j][u] = _mm512_dpbusd_epi32(acc[j][u], hi[u], qh);
                    }
                }
            } else {
                __m512i kv[2];
                KVX_UNROLL
                for (int u = 0; u < nt; u++)
                    kv[u] = _mm512_loadu_si512(base + (size_t)u * stride + off);
                KVX_UNROLL
                for (int j = 0; j < nq; j++) {
                    __m512i qb = bcast4(qq->q[j] + g * KVX_KV_QGROUP + r * 4);
                    KVX_UNROLL
                    for (int u = 0; u < nt; u++)
                        acc[j][u] = _mm512_dpbusd_epi32(acc[j][u], kv[u], qb);
                }
            }
        }
        /* s += (dk dq) I (+ mk S) */
        KVX_UNROLL
        for (int u = 0; u < nt; u++) {
            const uint16_t *sc = (const uint16_t *)(base + (size_t)u * stride + code_bytes);
            __m512 dk = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + gg * KVX_KV_TILE)));
            __m512 mk = q4 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                 (const __m256i *)(sc + (ng + gg) * KVX_KV_TILE)))
                           : _mm512_setzero_ps();
            KVX_UNROLL
            for (int j = 0; j < nq; j++) {
                __m512 w = _mm512_mul_ps(dk, _mm512_set1_ps(qq->d[j][g]));
                s[j][u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j][u]), w, s[j][u]);
                if (q4)
                    s[j][u] = _mm512_fmadd_ps(mk, _mm512_set1_ps(qq->sum[j][g]), s[j][u]);
            }
        }
    }
    if (do_pf) /* the scales of those tiles */
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            for (size_t o = code_bytes; o < stride; o += 64)
                _mm_prefetch((const char *)pf + (size_t)u * stride + o, _MM_HINT_T0);
    KVX_UNROLL
    for (int u = 0; u < nt; u++) {
        int32_t tok0 = (tile + u) * KVX_KV_TILE;
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            float *o = scores + (int64_t)j * ld + (tok0 - t0);
            if (valid[u] == 0xffff)
                _mm512_storeu_ps(o, s[j][u]);
            else
                _mm512_mask_storeu_ps(o, valid[u], s[j][u]);
        }
    }
}

/* All tiles of [t0, t1) for nq quantized queries: two at a time, then one by one. */
KVX_INLINE void qk_queries(const uint8_t *K, int32_t dim, int32_t t0, int32_t t1,
                           const struct kvx_kv_qquery *qq, int nq, int32_t c0, int32_t nc,
                           bool q4, float *scores, int64_t ld)
{
    int32_t tile = t0 / KVX_KV_TILE;
    for (; (tile + 2) * KVX_KV_TILE <= t1; tile += 2)
        qk_tiles(K, dim, tile, 2, t0, t1, qq, nq, c0, nc, q4, scores, ld);
    for (; tile * KVX_KV_TILE < t1; tile++)
        qk_tiles(K, dim, tile, 1, t0, t1, qq, nq, c0, nc, q4, scores, ld);
}

KVX_INLINE void qk_vnni(const uint8_t *K, int32_t dim, int32_t t0, int32_t t1, const float *q,
                        int32_t n_q, bool q4, float *scores, int64_t ld)
{
    struct kvx_kv_qquery qq;
    for (int32_t i = 0; i < n_q; i += KVX_KV_QQ_ROWS) {
        const int32_t nb = n_q - i < KVX_KV_QQ_ROWS ? n_q - i : KVX_KV_QQ_ROWS;
        float *si = scores + (int64_t)i * ld;
        for (int32_t c0 = 0; c0 < dim; c0 += KVX_KV_QQ_CH) {
            const int32_t nc = dim - c0 < KVX_KV_QQ_CH ? dim - c0 : KVX_KV_QQ_CH;
            qquery_avx512(q + (size_t)i * (size_t)dim, dim, nb, c0, nc, &qq);
            switch (nb) {
            case 1: qk_queries(K, dim, t0, t1, &qq, 1, c0, nc, q4, si, ld); break;
            case 2: qk_queries(K, dim, t0, t1, &qq, 2, c0, nc, q4, si, ld); break;
            case 3: qk_queries(K, dim, t0, t1, &qq, 3, c0, nc, q4, si, ld); break;
            default: qk_queries(K, dim, t0, t1, &qq, 4, c0, nc, q4, si, ld); break;
            }
        }
    }
}

/* qk, q8 K, AVX-512 VNNI.  scores[i*ld + t - t0] = sum_g (dk_g[t] dq_ig) I_ig[t] with
 * I_ig[t] = sum_{c in g} qi_ic k_int_c[t] exact in int32 (vpdpbusd), fp32 FMA epilogue per
 * group in group order.  Test: within 1e-6 x sum_g |dk dq I| of kvx_kv_qk_q8_scalar
 * (test_kv_codec_quant.c). */
void kvx_kv_qk_q8_avx512vnni(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                             int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_vnni(b->data, f->dim, t0, t1, q, n_q, false, scores, ld);
}

/* qk, q4 K, AVX-512 VNNI.  scores[i*ld + t - t0] = sum_g (dk_g[t] dq_ig) I_ig[t] + mk_g[t] S_ig,
 * I exact in int32 (vpdpbusd on the unpacked nibbles), fp32 FMA epilogue per group.
 * Test: within 1e-6 x sum_g (|dk dq I| + |mk| sum |q|) of kvx_kv_qk_q4plain_scalar. */
void kvx_kv_qk_q4plain_avx512vnni(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                             int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_vnni(b->data, f->dim, t0, t1, q, n_q, true, scores, ld);
}

#endif
