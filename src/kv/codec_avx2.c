/* kv/codec_avx2: AVX2 + FMA + F16C qk/pv kernels of the f32, f16 and bf16 KV codecs.
 *
 * Same page layout and results as the scalar specification (codec_float.c), with
 * 8 lanes: a 16-token K tile row is two ymm, so one tile and up to 4 queries take 8
 * accumulators; each K row / V row is loaded (f16: converted with vcvtph2ps) once for up to 4
 * queries.  pv handles channels in chunks of 32, then 8, then a scalar tail (< 8 channels).
 * Compiled with -mavx2 -mfma -mf16c (Makefile, by file name); called only after
 * kvx_cpu_has_isa(KVX_ISA_AVX2).  Empty on processors other than x86. */
#include "kv/codec.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "ops/f16.h"

#define KVX_INLINE static inline __attribute__((always_inline))
/* The loops over queries and vectors have constant trip counts after inlining; unrolled, their
 * accumulator arrays live in registers. */
#define KVX_UNROLL _Pragma("GCC unroll 4")

/* Software prefetch (the hardware streamers stop at every 4 KiB): qk fetches the tile
 * KVX_QK_PREFETCH_TILES ahead while it computes one, pv the V row KVX_PV_PREFETCH_ROWS ahead.
 * Neither reaches past the end of the range it reads. */
#define KVX_QK_PREFETCH_TILES 4
#define KVX_PV_PREFETCH_ROWS 16

/* The element type of a page: f32, f16 or bf16 (a compile-time constant after inlining, so
 * the branches on it disappear). */
enum elem { ELEM_F32, ELEM_F16, ELEM_BF16 };

KVX_INLINE size_t elem_bytes(enum elem el) { return el == ELEM_F32 ? 4 : 2; }

/* 8 fp32 values at element index idx of an array of el (halves: vcvtph2ps; bfloat16s:
 * zero-extended and shifted into the upper half of each fp32, exact). */
KVX_INLINE __m256 load8(const void *base, size_t idx, enum elem el)
{
    const __m128i *h = (const __m128i *)((const uint16_t *)base + idx);
    if (el == ELEM_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128(h));
    if (el == ELEM_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(h)), 16));
    return _mm256_loadu_ps((const float *)base + idx);
}

KVX_INLINE float load1(const void *base, size_t idx, enum elem el)
{
    if (el == ELEM_F32)
        return ((const float *)base)[idx];
    uint16_t h = ((const uint16_t *)base)[idx];
    return el == ELEM_F16 ? kvx_f16_to_f32(h) : kvx_bf16_to_f32(h);
}

/* Lanes i < n set (n may be <= 0 or >= 8). */
KVX_INLINE __m256i lane_mask(int32_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Scores of nq (<= 4, constant after inlining) queries against one tile. */
KVX_INLINE void qk_tile(const void *K, int32_t dim, int32_t tile, int32_t t0, int32_t t1,
                        const float *q, int nq, enum elem el, float *scores, int64_t ld)
{
    const size_t base = (size_t)tile * KVX_KV_TILE * (size_t)dim;
    __m256 lo[4], hi[4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        lo[j] = hi[j] = _mm256_setzero_ps();
    const size_t row_bytes = KVX_KV_TILE * elem_bytes(el);
    const char *pf = (const char *)K + (base + KVX_QK_PREFETCH_TILES * KVX_KV_TILE * (size_t)dim) * elem_bytes(el);
    const bool do_pf = (tile + KVX_QK_PREFETCH_TILES + 1) * KVX_KV_TILE <= t1;
    for (int32_t c = 0; c < dim; c++) {
        if (do_pf)
            _mm_prefetch(pf + (size_t)c * row_bytes, _MM_HINT_T0);
        __m256 k0 = load8(K, base + (size_t)c * KVX_KV_TILE, el);
        __m256 k1 = load8(K, base + (size_t)c * KVX_KV_TILE + 8, el);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m256 qb = _mm256_set1_ps(q[(size_t)j * (size_t)dim + (size_t)c]);
            lo[j] = _mm256_fmadd_ps(qb, k0, lo[j]);
            hi[j] = _mm256_fmadd_ps(qb, k1, hi[j]);
        }
    }
    int32_t tok0 = tile * KVX_KV_TILE;
    int32_t n_valid = t1 - tok0;
    KVX_UNROLL
    for (int j = 0; j < nq; j++) {
        float *out = scores + (int64_t)j * ld + (tok0 - t0);
        if (n_valid >= KVX_KV_TILE) {
            _mm256_storeu_ps(out, lo[j]);
            _mm256_storeu_ps(out + 8, hi[j]);
        } else {
            _mm256_maskstore_ps(out, lane_mask(n_valid), lo[j]);
            _mm256_maskstore_ps(out + 8, lane_mask(n_valid - 8), hi[j]);
        }
    }
}

KVX_INLINE void qk_avx2(const void *K, int32_t dim, int32_t t0, int32_t t1, const float *q,
                        int32_t n_q, enum elem el, float *scores, int64_t ld)
{
    for (int32_t i = 0; i < n_q; i += 4) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float *si = scores + (int64_t)i * ld;
        for (int32_t tile = t0 / KVX_KV_TILE; tile * KVX_KV_TILE < t1; tile++) {
            switch (n_q - i) {
            case 1: qk_tile(K, dim, tile, t0, t1, qi, 1, el, si, ld); break;
            case 2: qk_tile(K, dim, tile, t0, t1, qi, 2, el, si, ld); break;
            case 3: qk_tile(K, dim, tile, t0, t1, qi, 3, el, si, ld); break;
            default: qk_tile(K, dim, tile, t0, t1, qi, 4, el, si, ld); break;
            }
        }
    }
}

/* qk, f32 K, AVX2.  scores[i*ld + t - t0] = q_i · K[t] for i < n_q, t0 <= t < t1
 * (t0 % 16 == 0).  fp32 FMA accumulation in channel order, 8 scores per FMA.
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_f32_scalar (test_kv.c). */
void kvx_kv_qk_f32_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    qk_avx2(region, dim, t0, t1, q, n_q, ELEM_F32, scores, ld);
}

/* qk, f16 K, AVX2: as kvx_kv_qk_f32_avx2 with K rows converted by vcvtph2ps (exact).
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_f16_scalar. */
void kvx_kv_qk_f16_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    qk_avx2(region, dim, t0, t1, q, n_q, ELEM_F16, scores, ld);
}

/* qk, bf16 K, AVX2: as kvx_kv_qk_f32_avx2 with K rows widened to fp32 (exact).
 * Test: within 1e-5 x sum_c |q_c k_c| of kvx_kv_qk_bf16_scalar. */
void kvx_kv_qk_bf16_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                         int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    qk_avx2(b->data, f->dim, t0, t1, q, n_q, ELEM_BF16, scores, ld);
}

/* acc[j][d0 .. d0 + 8*nv) += sum_t p_j[t] V[t][...] for nq (<= 4) queries, nv (<= 4) vectors. */
KVX_INLINE void pv_chunk(const void *V, int32_t dim, int32_t d0, int nv, int32_t t0, int32_t t1,
                         const float *p, int nq, int64_t ld, float *acc, enum elem el)
{
    __m256 a[4][4];
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            a[j][u] = _mm256_loadu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 8 * (size_t)u);
    const size_t elem = elem_bytes(el);
    for (int32_t t = t0; t < t1; t++) {
        size_t row = (size_t)t * (size_t)dim + (size_t)d0;
        if (t + KVX_PV_PREFETCH_ROWS < t1) {
            const char *pa = (const char *)V + (row + (size_t)KVX_PV_PREFETCH_ROWS * (size_t)dim) * elem;
            for (size_t o = 0; o < (size_t)nv * 8 * elem; o += 64)
                _mm_prefetch(pa + o, _MM_HINT_T0);
        }
        __m256 vv[4];
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            vv[u] = load8(V, row + 8 * (size_t)u, el);
        KVX_UNROLL
        for (int j = 0; j < nq; j++) {
            __m256 pb = _mm256_set1_ps(p[(int64_t)j * ld + (t - t0)]);
            KVX_UNROLL
            for (int u = 0; u < nv; u++)
                a[j][u] = _mm256_fmadd_ps(pb, vv[u], a[j][u]);
        }
    }
    KVX_UNROLL
    for (int j = 0; j < nq; j++)
        KVX_UNROLL
        for (int u = 0; u < nv; u++)
            _mm256_storeu_ps(acc + (size_t)j * (size_t)dim + (size_t)d0 + 8 * (size_t)u, a[j][u]);
}

/* Channels d0..dim-1 (fewer than 8) one at a time, in the same token order. */
static void pv_tail(const void *V, int32_t dim, int32_t d0, int32_t t0, int32_t t1,
                    const float *p, int32_t nq, int64_t ld, float *acc, enum elem el)
{
    for (int32_t j = 0; j < nq; j++)
        for (int32_t d = d0; d < dim; d++) {
            float a = acc[(size_t)j * (size_t)dim + (size_t)d];
            for (int32_t t = t0; t < t1; t++)
                a += p[(int64_t)j * ld + (t - t0)] * load1(V, (size_t)t * (size_t)dim + (size_t)d, el);
            acc[(size_t)j * (size_t)dim + (size_t)d] = a;
        }
}

KVX_INLINE void pv_queries(const void *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
                           int nq, int64_t ld, float *acc, enum elem el)
{
    int32_t d0 = 0;
    for (; d0 + 32 <= dim; d0 += 32)
        pv_chunk(V, dim, d0, 4, t0, t1, p, nq, ld, acc, el);
    for (; d0 + 8 <= dim; d0 += 8)
        pv_chunk(V, dim, d0, 1, t0, t1, p, nq, ld, acc, el);
    if (d0 < dim)
        pv_tail(V, dim, d0, t0, t1, p, nq, ld, acc, el);
}

KVX_INLINE void pv_avx2(const void *V, int32_t dim, int32_t t0, int32_t t1, const float *p,
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

/* pv, f32 V, AVX2.  acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + t - t0] V[t][d].
 * fp32 FMA accumulation in token order.  Test: within 1e-5 x sum_t |p_t v_t[d]| of
 * kvx_kv_pv_f32_scalar. */
void kvx_kv_pv_f32_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    pv_avx2(region, dim, t0, t1, p, n_q, ld, acc, ELEM_F32);
}

/* pv, f16 V, AVX2: as kvx_kv_pv_f32_avx2 with V rows converted by vcvtph2ps.
 * Test: within 1e-5 x sum_t |p_t v_t[d]| of kvx_kv_pv_f16_scalar. */
void kvx_kv_pv_f16_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                        int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    pv_avx2(region, dim, t0, t1, p, n_q, ld, acc, ELEM_F16);
}

/* pv, bf16 V, AVX2: as kvx_kv_pv_f32_avx2 with V rows widened to fp32.
 * Test: within 1e-5 x sum_t |p_t v_t[d]| of kvx_kv_pv_bf16_scalar. */
void kvx_kv_pv_bf16_avx2(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                         int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    pv_avx2(b->data, f->dim, t0, t1, p, n_q, ld, acc, ELEM_BF16);
}

#endif
