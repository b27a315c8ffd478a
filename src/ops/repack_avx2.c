/* ops/repack_avx2: the x16 matrix product (ops/repack.h) with AVX2 (and FMA, F16C).
 *
 * A 64-byte chunk of a block16 is two ymm: rows 0..7 and rows 8..15.  Without vpdpbusd, the
 * 4-byte dot products of each row take vpmaddubsw (u8 x s8 -> int16 pairs) and vpmaddwd by 1
 * (pairs -> int32), as the row kernels do.  For 1 or 2 tokens both halves go through each
 * block together; for 3 or 4, each half of the group is one pass over its blocks (the second
 * reads the group from L1), so that the accumulators fit in the 16 ymm registers:
 *
 *   q4_0 / q4_1: the 8 products of a block (4 chunks x low / high nibbles) are summed in int16
 *     before one vpmaddwd: |w0 a0 + w1 a1| <= 2 * 15 * 127 per pair, 8 of them <= 30480;
 *   q8_0: stored + 128, so the signed quants come back with one xor; |w| x (a with w's sign)
 *     keeps each pair within int16 (|a| <= 127: the q8_0 quantizer never gives -128), and each
 *     chunk is widened on its own.
 *
 * Then, per block and token: y_r += (dw_r * da) * (s_r - o * sum(a)) (q4_0: o = 8), and q4_1's
 * mw_r * sa in a sum of its own.  Test (tests/test_repack.c): every output within
 * 1e-5 * sum |w*a| of the scalar row kernel. */
#include "ops/repack.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#include "ops/quant_internal.h"

#define X16_INLINE static inline __attribute__((always_inline))
#define X16_UNROLL _Pragma("GCC unroll 8")

enum fmt { F_Q4_0, F_Q4_1, F_Q8_0 };

X16_INLINE __m256i bcast4(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* out[c * nb + b] = -8 * sum_j a_c[b].qs[j] (q4_0's offset, the start of each int32 sum). */
static void offset_terms(int64_t nb, int nt, const uint8_t *a, size_t a_stride, int32_t *out)
{
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int c = 0; c < nt; c++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *qs = a + (size_t)c * a_stride + (size_t)b * sizeof(struct kvx_block_q8_0) + 2;
            __m256i s = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)qs));
            out[(int64_t)c * nb + b] = -8 * kvx_quant_hsum8_epi32(_mm256_madd_epi16(s, ones16));
        }
}

/* The int32 sums of 8 rows (half h of a block16 at p) against one token's block `ac`. */
X16_INLINE __m256i half_dot(enum fmt f, const uint8_t *p, size_t hdr, int h, const uint8_t *ac,
                            size_t aqs)
{
    const __m256i ones16 = _mm256_set1_epi16(1);
    if (f == F_Q8_0) {
        const __m256i bias = _mm256_set1_epi8((char)0x80);
        __m256i s = _mm256_setzero_si256();
        X16_UNROLL
        for (int k = 0; k < 8; k++) {
            const __m256i w = _mm256_xor_si256(
                _mm256_loadu_si256((const __m256i *)(p + hdr + 64 * (size_t)k + 32 * (size_t)h)),
                bias);
            const __m256i prod = _mm256_maddubs_epi16(
                _mm256_abs_epi8(w), _mm256_sign_epi8(bcast4(ac + aqs + 4 * (size_t)k), w));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(prod, ones16));
        }
        return s;
    }
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i s16 = _mm256_setzero_si256();
    X16_UNROLL
    for (int k = 0; k < 4; k++) {
        const __m256i v =
            _mm256_loadu_si256((const __m256i *)(p + hdr + 64 * (size_t)k + 32 * (size_t)h));
        const __m256i lo = _mm256_and_si256(v, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo, bcast4(ac + aqs + 4 * (size_t)k)));
        s16 = _mm256_add_epi16(s16,
                               _mm256_maddubs_epi16(hi, bcast4(ac + aqs + 16 + 4 * (size_t)k)));
    }
    return _mm256_madd_epi16(s16, ones16);
}

X16_INLINE void groups(enum fmt f, int nt, int64_t nb, const uint8_t *w, int64_t n_groups,
                       const uint8_t *a, size_t a_stride, const int32_t *corr, float *y,
                       int64_t ldy)
{
    const bool min = f == F_Q4_1;
    const size_t b16 = KVX_X16 * (f == F_Q4_0 ? 18 : f == F_Q4_1 ? 20 : 34);
    const size_t hdr = min ? 64 : 32;
    const size_t ab = min ? sizeof(struct kvx_block_q8_1) : sizeof(struct kvx_block_q8_0);
    const size_t aqs = min ? 4 : 2;
    /* both halves in one pass over the blocks while their accumulators fit (1 or 2 tokens) */
    const int hp = nt <= 2 ? 2 : 1;
    for (int64_t g = 0; g < n_groups; g++)
        for (int h0 = 0; h0 < 2; h0 += hp) {
            const uint8_t *p = w + (size_t)g * (size_t)nb * b16;
            __m256 acc[2][4], accm[2][4];
            X16_UNROLL
            for (int hh = 0; hh < hp; hh++)
                X16_UNROLL
                for (int c = 0; c < nt; c++)
                    acc[hh][c] = accm[hh][c] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++, p += b16) {
                if (h0 == 0)
                    for (size_t o = 0; o < b16; o += 64)
                        kvx_quant_prefetch(p + o);
                X16_UNROLL
                for (int hh = 0; hh < hp; hh++) {
                    const int h = h0 + hh;
                    const __m256 dw =
                        _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
                    const __m256 mw =
                        min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32 + 16 * h)))
                            : _mm256_setzero_ps();
                    X16_UNROLL
                    for (int c = 0; c < nt; c++) {
                        const uint8_t *ac = a + (size_t)c * a_stride + (size_t)b * ab;
                        __m256i s = half_dot(f, p, hdr, h, ac, aqs);
                        if (f == F_Q4_0)
                            s = _mm256_add_epi32(s, _mm256_set1_epi32(corr[c * nb + b]));
                        const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(kvx_quant_load_f16(ac)));
                        acc[hh][c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[hh][c]);
                        if (min)
                            accm[hh][c] = _mm256_fmadd_ps(
                                mw, _mm256_set1_ps(kvx_quant_load_f16(ac + 2)), accm[hh][c]);
                    }
                }
            }
            X16_UNROLL
            for (int hh = 0; hh < hp; hh++)
                X16_UNROLL
                for (int c = 0; c < nt; c++)
                    _mm256_storeu_ps(y + (int64_t)c * ldy + KVX_X16 * g + 8 * (h0 + hh),
                                     min ? _mm256_add_ps(acc[hh][c], accm[hh][c]) : acc[hh][c]);
        }
}

#define X16_BY_NT(F)                                                                               \
    switch (nt) {                                                                                  \
    case 1: groups(F, 1, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    case 2: groups(F, 2, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    case 3: groups(F, 3, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                       \
    default: groups(F, 4, nb, w, n_groups, a, a_stride, corr, y, ldy); break;                      \
    }

void kvx_x16_matmul_avx2(enum kvx_dtype t, int64_t n_in, const uint8_t *w, int64_t n_groups,
                         int nt, const uint8_t *a, size_t a_stride, float *y, int64_t ldy)
{
    const int64_t nb = n_in / KVX_QK;
    int32_t corr[4 * (KVX_X16_MAX_IN / KVX_QK)];
    switch (t) {
    case KVX_DTYPE_Q4_0:
        offset_terms(nb, nt, a, a_stride, corr);
        X16_BY_NT(F_Q4_0);
        break;
    case KVX_DTYPE_Q4_1:
        X16_BY_NT(F_Q4_1);
        break;
    case KVX_DTYPE_Q8_0:
        X16_BY_NT(F_Q8_0);
        break;
    default:
        break;
    }
}

#endif
