/* ops/repack_avx512vnni: the x16 matrix product (ops/repack.h) with AVX-512 VNNI.
 *
 * Per block16 (16 rows x 32 elements) and token c:
 *
 *   s_r   = sum_k  wv_k[r] . a_c[4k .. 4k+3]            (k < 8: eight vpdpbusd, int32 exact)
 *   y_r  += (dw_r * da_c) * (s_r - o * sum(a_c))          q4_0: o = 8, q8_0: o = 128, q4_1: 0
 *   ym_r += mw_r * sa_c                                   q4_1 only (sa = fp16(da * sum(a)))
 *
 * wv_k is 4 bytes of each of the 16 rows: a 64-byte load for q8_0 (stored + 128, so u8), for
 * q4 the low (k < 4) or high (k >= 4) nibbles of chunk k % 4, one and / shift per half.  The
 * broadcast activation bytes are loads, not shuffles; a block16 costs 12 (q4) or 8 (q8) vector
 * ops for the weights, shared by up to 4 tokens, and 8 vpdpbusd + 4 float ops per token.  No
 * horizontal sums: each zmm lane is one output row.  The offset term o * sum(a) is computed once
 * per (token, block) before the groups, and starts the int32 sum.  Weights stream through once;
 * each block16 is prefetched KVX_QUANT_PREFETCH_BYTES ahead (the groups of a matrix are
 * contiguous).
 *
 * Test (tests/test_repack.c): every output within 1e-5 * sum |w*a| of the scalar row kernel. */
#include "ops/repack.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "ops/quant_internal.h"

#define X16_INLINE static inline __attribute__((always_inline))
/* The loops over tokens and weight vectors have constant trip counts after inlining; unrolled,
 * their arrays live in registers. */
#define X16_UNROLL _Pragma("GCC unroll 8")

enum fmt { F_Q4_0, F_Q4_1, F_Q8_0 };

/* out[c * nb + b] = -o * sum_j a_c[b].qs[j]: the start of each (token, block) int32 sum. */
static void offset_terms(int64_t nb, int nt, const uint8_t *a, size_t a_stride, int o,
                         int32_t *out)
{
    const __m256i ones = _mm256_set1_epi8(1);
    for (int c = 0; c < nt; c++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *qs = a + (size_t)c * a_stride + (size_t)b * sizeof(struct kvx_block_q8_0) + 2;
            __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones,
                                            _mm256_loadu_si256((const __m256i *)qs));
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
            out[(int64_t)c * nb + b] = -o * _mm_cvtsi128_si32(h);
        }
}

X16_INLINE __m512i bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

X16_INLINE void groups(enum fmt f, int nt, int64_t nb, const uint8_t *w, int64_t n_groups,
                       const uint8_t *a, size_t a_stride, const int32_t *corr, float *y,
                       int64_t ldy)
{
    const bool q8 = f == F_Q8_0, min = f == F_Q4_1;
    const size_t b16 = KVX_X16 * (f == F_Q4_0 ? 18 : f == F_Q4_1 ? 20 : 34);
    const size_t hdr = min ? 64 : 32;
    const size_t ab = min ? sizeof(struct kvx_block_q8_1) : sizeof(struct kvx_block_q8_0);
    const size_t aqs = min ? 4 : 2;
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t g = 0; g < n_groups; g++) {
        const uint8_t *p = w + (size_t)g * (size_t)nb * b16;
        __m512 acc[4], accm[4];
        X16_UNROLL
        for (int c = 0; c < nt; c++)
            acc[c] = accm[c] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; b++, p += b16) {
            for (size_t o = 0; o < b16; o += 64)
                kvx_quant_prefetch(p + o);
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
            const __m512 mw = min ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)))
                                  : _mm512_setzero_ps();
            __m512i wv[8];
            X16_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m512i v = _mm512_loadu_si512(p + hdr + 64 * (size_t)k);
                if (q8) {
                    wv[k] = v;
                    wv[k + 4] = _mm512_loadu_si512(p + hdr + 64 * (size_t)(k + 4));
                } else {
                    wv[k] = _mm512_and_si512(v, m4);
                    wv[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                }
            }
            X16_UNROLL
            for (int c = 0; c < nt; c++) {
                const uint8_t *ac = a + (size_t)c * a_stride + (size_t)b * ab;
                __m512i s0 = min ? _mm512_setzero_si512() : _mm512_set1_epi32(corr[c * nb + b]);
                __m512i s1 = _mm512_setzero_si512();
                X16_UNROLL
                for (int k = 0; k < 8; k += 2) {
                    s0 = _mm512_dpbusd_epi32(s0, wv[k], bcast4(ac + aqs + 4 * (size_t)k));
                    s1 = _mm512_dpbusd_epi32(s1, wv[k + 1], bcast4(ac + aqs + 4 * (size_t)k + 4));
                }
                const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(kvx_quant_load_f16(ac)));
                acc[c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[c]);
                if (min)
                    accm[c] = _mm512_fmadd_ps(mw, _mm512_set1_ps(kvx_quant_load_f16(ac + 2)),
                                              accm[c]);
            }
        }
        X16_UNROLL
        for (int c = 0; c < nt; c++)
            _mm512_storeu_ps(y + (int64_t)c * ldy + KVX_X16 * g,
                             min ? _mm512_add_ps(acc[c], accm[c]) : acc[c]);
    }
}

#define X16_BY_NT(F)                                                                               \
    switch (nt) {                                                                                  \
    case 1: groups(F, 1, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    case 2: groups(F, 2, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    case 3: groups(F, 3, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    default: groups(F, 4, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                      \
    }

void kvx_x16_matmul_avx512vnni(enum kvx_dtype t, int64_t n_in, const uint8_t *w,
                               int64_t n_groups, int nt, const uint8_t *a, size_t a_stride,
                               float *y, int64_t ldy)
{
    const int64_t nb = n_in / KVX_QK;
    int32_t corr[4 * (KVX_X16_MAX_IN / KVX_QK)];
    switch (t) {
    case KVX_DTYPE_Q4_0:
        offset_terms(nb, nt, a, a_stride, 8, corr);
        X16_BY_NT(F_Q4_0);
        break;
    case KVX_DTYPE_Q4_1:
        X16_BY_NT(F_Q4_1);
        break;
    case KVX_DTYPE_Q8_0:
        offset_terms(nb, nt, a, a_stride, 128, corr);
        X16_BY_NT(F_Q8_0);
        break;
    default:
        break;
    }
}

#endif
