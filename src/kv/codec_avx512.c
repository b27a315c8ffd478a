/* kv/codec_avx512: AVX-512 qk/pv kernels of the f32, f16 and bf16 KV codecs.
 *
 * Same page layout and results as the scalar specification (codec_float.c):
 *   qk: a 16-token K tile row K[tile][c][0..16) is one zmm, so one FMA with q[c] broadcast gives
 *       16 scores; each K row is loaded (and, for f16, converted with vcvtph2ps) once for up to
 *       4 queries and 4 tiles at a time (16 independent accumulators hide the FMA latency).
 *   pv: each V row is loaded once for up to 4 queries; 64 channels = 4 zmm accumulators per
 *       query, the probability broadcast.
 * Cost for the default shape (3 queries, dim 64, f16): per key 24 FMAs and 8 vcvtph2ps, which
 * compete for the same vector ports; measured from L2 about 9 ns per key (all 3 queries, qk +
 * softmax + pv) at 2.3 GHz, ~29 GB/s of K+V, so from DRAM the kernels run at memory speed.
 * Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c (Makefile, by file name);
 * called only after kvx_cpu_has_isa(KVX_ISA_AVX512).  Empty on processors other than x86. */
#include "kv/codec.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define KVX_INLINE static inline __attribute__((always_inline))
/* The loops over queries and vectors have constant trip counts after inlining; unrolled, their
 * accumulator arrays live in registers. */
#define KVX_UNROLL _Pragma("GCC unroll 4")

/* Software prefetch (the hardware streamers stop at every 4 KiB, and qk reads 4 interleaved
 * streams): qk fetches the next block of 4 tiles while it computes one, pv the V row
 * KVX_PV_PREFETCH_ROWS ahead into L1 and the row KVX_PV_PREFETCH_FAR ahead into L2 (the second
 * stream of requests took pv from DRAM from 11.3 to 12.7-13.5 GB/s on one thread, and decode
 * attention, K and V, from 22.7 to 24.1 GB/s on two; the same for qk gained nothing).  Neither
 * reaches past the end of the range it reads. */
#define KVX_PV_PREFETCH_ROWS 16
#define KVX_PV_PREFETCH_FAR 64

/* The element type of a page: f32, f16 or bf16 (a compile-time constant after inlining, so
 * the branches on it disappear). */
enum elem { ELEM_F32, ELEM_F16, ELEM_BF16 };

KVX_INLINE size_t elem_bytes(enum elem el) { return el == ELEM_F32 ? 4 : 2; }

/* 16 fp32 values from 16 halves (vcvtph2ps) or bfloat16s (zero-extended, shifted into the
 * upper half of each fp32: exact). */
KVX_INLINE __m512 cvt16(__m256i h, enum elem el)
{
    if (el == ELEM_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* 16 fp32 values at element index idx of an array of el. */
KVX_INLINE __m512 load16(const void *base, size_t idx, enum elem el)
{
    if (el != ELEM_F32)
        return cvt16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + idx)), el);
    return _mm512_loadu_ps((const float *)base + idx);
}

KVX_INLINE __m512 load16_mask(const void *base, size_t idx, __mmask16 m, enum elem el)
{
    if (el != ELEM_F32)
        return cvt16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + idx), el);
    return _mm512_maskz_loadu_ps(m, (const float *)base + idx);
}

/* Scores of nq queries against nt consecutive tiles starting at `tile`, stored for the tokens
 * below t1 (relative to t0).  nq <= 4 and nt <= 4 are constants after inlining. */
KVX_INLINE void qk_tiles(const void *K, int32_t dim, int32_t tile, int nt, int32_t t0, int32_t t1,
                         const float *q, int nq, enum elem el, float *scores, int64_t ld)
{
    const size_t tstride = (size_t)KVX_KV_TILE * (size_t)dim;
    const size_t base = (size_t)tile * tstride;
    __m512 acc[4][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            acc[j][u] = _mm512_setzero_ps();
    /* the next block of nt tiles: nt * 16 * elem bytes per channel step */
    const size_t pf_step = (size_t)nt * KVX_KV_TILE * elem_bytes(el);
    const char *pf = (const char *)K + (base + (size_t)nt * tstride) * elem_bytes(el);
    const bool do_pf = nt == 4 && (tile + 2 * nt) * KVX_KV_TILE <= t1;
    for (int32_t c = 0; c < dim; c++) {
        if (do_pf)
            for (size_t o = 0; o < pf_step; o += 64)
                _mm_prefetch(pf + (size_t)c * pf_step + o, _MM_HINT_T0);
        __m512 kv[4];
        KVX_UNROLL
        for (int u = 0; u < nt; u++)
            kv[u] = load16(K, base + (size_t)u * tstride + (size_t)c * KVX_KV_TILE, el);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m512 qb = _mm512_set1_ps(q[(size_t)j * (size_t)dim + (size_t)c]);
            KVX_UNROLL
            for (int u = 0; u < nt; u++)
                acc[j][u] = _mm512_fmadd_ps(qb, kv[u], acc[j][u]);
        }
    }
    KVX_UNROLL
    for (int u = 0; u < nt; u++) {
        int32_t tok0 = (tile + u) * KVX_KV_TILE;
        int32_t n_valid = t1 - tok0 < KVX_KV_TILE ? t1 - tok0 : KVX_KV_TILE;
        __mmask16 m = (__mmask16)((1u << n_valid) - 1u);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            float *out = scores + (int64_t)j * ld + (tok0 - t0);
            if (n_valid == KVX_KV_TILE)
                _mm512_storeu_ps(out, acc[j][u]);
            else
                _mm512_mask_storeu_ps(out, m, acc[j][u]);
        }
    }
}

/* All tiles of [t0, t1) for nq (<= 4) queries: 4 whole tiles at a time, then one by one. */
KVX_INLINE void qk_queries(const void *K, int32_t dim, int32_t t0, int32_t t1, const float *q,
                           int nq, enum elem el, float *scores, int64_t ld)
{
    int32_t tile = t0 / KVX_KV_TILE;
    for (; (tile + 4) * KVX_KV_TILE <= t1; tile += 4)
        qk_tiles(K, dim, tile, 4, t0, t1, q, nq, el, scores, ld);
    for (; tile * KVX_KV_TILE < t1; tile++)
        qk_tiles(K, dim, tile, 1, t0, t1, q, nq, el, scores, ld);
}

KVX_INLINE void qk_avx512(const void *K, int32_t dim, int32_t t0, int32_t t1, const float *q,
                          int32_t n_q, enum elem el, float *scores, int64_t ld)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float *si = scores + (int64_t)i * ld;
        switch (n_q - i) {
        case 1: qk_queries(K, dim, t0, t1, qi, 1, el, si, ld); break;
        case 2: qk_queries(K, dim, t0, t1, qi, 2, el, si, ld); break;
        case 3: qk_queries(K, dim, t0, t1, qi, 3, el, si, ld); break;
        default: qk_queries(K, dim, t0, t1, qi, 4, el, si, ld); break;
        }
    }
}

/* qk, f32 K, AVX-512.  scores[i*ld + t - t0] = q_i · K[t] for i < n_q, t0 <= t < t1
 * (t0 % 16 == 0).  fp32 FMA accumulation in channel order, 16 scores per FMA.
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_f32_scalar (test_kv.c). */
void kvx_kv_qk_f32_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    qk_avx512(region, dim, t0, t1, q, n_q, ELEM_F32, scores, ld);
}

/* qk, f16 K, AVX-512: as kvx_kv_qk_f32_avx512 with each K row converted by vcvtph2ps (exact).
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_f16_scalar. */
void kvx_kv_qk_f16_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    qk_avx512(region, dim, t0, t1, q, n_q, ELEM_F16, scores, ld);
}

/* qk, bf16 K, AVX-512: as kvx_kv_qk_f32_avx512 with each K row widened to fp32 (exact).
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_bf16_scalar. */
void kvx_kv_qk_bf16_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                           int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx512(b->data, f->dim, t0, t1, q, n_q, ELEM_BF16, scores, ld);
}

/* acc[j][d0 .. d0 + 16*nv) += sum_t p_j[t] V[t][...] for nq (<= 4) queries; the last of the nv
 * (<= 4) vectors is masked by `last` when `tail`.  All shape arguments constant after inlining. */
KVX_INLINE void pv_chunk(const void *V, int32_t dim, int32_t d0, int nv, bool tail, __mmask16 last,
                         int32_t t0, int32_t t1, const float *p, int nq, int64_t ld, float *acc,
                         enum elem el)
{
    __m512 a[4][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        float *aj = acc + (size_t)j * (size_t)dim + (size_t)d0;
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            a[j][u] = tail && u == nv - 1 ? _mm512_maskz_loadu_ps(last, aj + 16 * u)
                                          : _mm512_loadu_ps(aj + 16 * u);
    }
    const size_t elem = elem_bytes(el);
    for (int32_t t = t0; t < t1; t++) {
        size_t row = (size_t)t * (size_t)dim + (size_t)d0;
        if (t + KVX_PV_PREFETCH_ROWS < t1) {
            const char *pa = (const char *)V + (row + (size_t)KVX_PV_PREFETCH_ROWS * (size_t)dim) * elem;
            for (size_t o = 0; o < (size_t)nv * 16 * elem; o += 64)
                _mm_prefetch(pa + o, _MM_HINT_T0);
        }
        if (t + KVX_PV_PREFETCH_FAR < t1) {
            const char *pa = (const char *)V + (row + (size_t)KVX_PV_PREFETCH_FAR * (size_t)dim) * elem;
            for (size_t o = 0; o < (size_t)nv * 16 * elem; o += 64)
                _mm_prefetch(pa + o, _MM_HINT_T2);
        }
        __m512 vv[4];
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            vv[u] = tail && u == nv - 1 ? load16_mask(V, row + 16 * (size_t)u, last, el)
                                        : load16(V, row + 16 * (size_t)u, el);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m512 pb = _mm512_set1_ps(p[(int64_t)j * ld + (t - t0)]);
            KVX_UNROLL
            for (int u = 0; u < nv; u++)
                a[j][u] = _mm512_fmadd_ps(pb, vv[u], a[j][u]);
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        float *aj = acc + (size_t)j * (size_t)dim + (size_t)d0;
        KVX_UNROLL
        for (int u = 0; u < nv; u++) {
            if (tail && u == nv - 1)
                _mm512_mask_storeu_ps(aj + 16 * u, last, a[j][u]);
            else
                _mm512_storeu_ps(aj + 16 * u, a[j][u]);
        }
    }
}

/* All channels for nq queries: chunks of 64, then one masked chunk of 1..3 vectors. */
KVX_INLINE void pv_queries(const void *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
                           int nq, int64_t ld, float *acc, enum elem el)
{
    int32_t d0 = 0;
    for (; d0 + 64 <= dim; d0 += 64)
        pv_chunk(V, dim, d0, 4, false, 0, t0, t1, p, nq, ld, acc, el);
    int32_t rest = dim - d0;
    if (rest == 0)
        return;
    int32_t r16 = rest % 16;
    __mmask16 last = r16 ? (__mmask16)((1u << r16) - 1u) : (__mmask16)0xffff;
    switch ((rest + 15) / 16) {
    case 1: pv_chunk(V, dim, d0, 1, true, last, t0, t1, p, nq, ld, acc, el); break;
    case 2: pv_chunk(V, dim, d0, 2, true, last, t0, t1, p, nq, ld, acc, el); break;
    default: pv_chunk(V, dim, d0, 3, true, last, t0, t1, p, nq, ld, acc, el); break;
    }
}

KVX_INLINE void pv_avx512(const void *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
                          int32_t n_q, int64_t ld, float *acc, enum elem el)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *pi = p + (int64_t)i * ld;
        float *ai = acc + (size_t)i * (size_t)dim;
        switch (n_q - i) {
        case 1: pv_queries(V, dim, t0, t1, pi, 1, ld, ai, el); break;
        case 2: pv_queries(V, dim, t0, t1, pi, 2, ld, ai, el); break;
        case 3: pv_queries(V, dim, t0, t1, pi, 3, ld, ai, el); break;
        default: pv_queries(V, dim, t0, t1, pi, 4, ld, ai, el); break;
        }
    }
}

/* pv, f32 V, AVX-512.  acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + t - t0] V[t][d].
 * fp32 FMA accumulation in token order.  Test: within 1e-5 x sum_t |p_t v_t[d]| of
 * kvx_kv_pv_f32_scalar. */
void kvx_kv_pv_f32_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    pv_avx512(region, dim, t0, t1, p, n_q, ld, acc, ELEM_F32);
}

/* pv, f16 V, AVX-512: as kvx_kv_pv_f32_avx512 with each V row converted by vcvtph2ps.
 * Test: within 1e-5 x sum_t |p_t v_t[d]| of kvx_kv_pv_f16_scalar. */
void kvx_kv_pv_f16_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    pv_avx512(region, dim, t0, t1, p, n_q, ld, acc, ELEM_F16);
}

/* pv, bf16 V, AVX-512: as kvx_kv_pv_f32_avx512 with each V row widened to fp32.
 * Test: within 1e-5 x sum_t |p_t v_t[d]| of kvx_kv_pv_bf16_scalar. */
void kvx_kv_pv_bf16_avx512(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                           int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx512(b->data, f->dim, t0, t1, p, n_q, ld, acc, ELEM_BF16);
}

#endif
