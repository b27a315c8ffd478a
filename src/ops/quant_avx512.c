/* ops/quant_avx512: the AVX-512 F/BW/DQ/VL kernels (compiled with -mavx512f -mavx512bw
 * -mavx512dq -mavx512vl -mfma -mf16c -mavx2; run only after kvx_cpu_has_isa(KVX_ISA_AVX512)).
 *
 * Owns: vec_dot of f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K..q6_K and vec_dot_tile of
 * q4_0, q4_1, q5_0, q5_1, q8_0, all without VNNI (the vpdpbusd variants of the 32-element
 * formats are in quant_avx512vnni.c); from_float of f16, bf16, q8_0, q8_1, q8_K (bit-identical
 * to the scalar ones for every non-NaN input); to_float of f16.  Everything else is the scalar
 * kernel (see quant.c).
 *
 * The 32-element formats run kvx_quant512_row (quant_internal.h, two blocks per zmm).  Integer
 * products use vpmaddubsw (u8 x s8, pairs in int16) + vpmaddwd; each kernel notes why its pairs
 * cannot saturate.  Unaligned loads only; no allocation.  Tests:
 * tests/test_quant.c, SIMD vs scalar within 1e-5 * sum |w*a| (fp32 summation order). */
#include <immintrin.h>
#include <stdbool.h>

#include "ops/quant_internal.h"

/* ========================================= helpers ======================================== */

static inline __m512i loadu512(const void *p) { return _mm512_loadu_si512(p); }
static inline __m256i loadu256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i loadu128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline float f16_at(const uint8_t *p) { return _cvtsh_ss(kvx_quant_load_u16(p)); }

static inline float hsum256_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Mask of the first r (0 < r < 16) lanes. */
static inline __mmask16 first16(int64_t r) { return (__mmask16)((1u << r) - 1); }

/* int16 lanes 0..15 = a, 16..31 = b. */
static inline __m512i halves16(int a, int b)
{
    return _mm512_inserti64x4(_mm512_set1_epi16((short)a), _mm256_set1_epi16((short)b), 1);
}

/* ====================================== float formats ===================================== */

static inline __m512 f32x16(const uint8_t *p) { return _mm512_loadu_ps(p); }
static inline __m512 f16x16(const uint8_t *p) { return _mm512_cvtph_ps(loadu256(p)); }
static inline __m512 bf16x16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* s = sum_i w_i * a_i over fp32 rows (any n, any alignment).  fp32 FMA lanes, summed at the end
 * (scalar sums in double).  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_f32_f32_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++)
            acc[k] =
                _mm512_fmadd_ps(f32x16(x + 4 * (i + 16 * k)), f32x16(y + 4 * (i + 16 * k)), acc[k]);
    for (; i + 16 <= n; i += 16)
        acc[0] = _mm512_fmadd_ps(f32x16(x + 4 * i), f32x16(y + 4 * i), acc[0]);
    if (i < n) {
        __mmask16 k = first16(n - i);
        acc[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + 4 * i),
                                 _mm512_maskz_loadu_ps(k, y + 4 * i), acc[1]);
    }
    *s = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

/* s = sum_i w_i * a_i over fp16 rows (any n), both widened exactly (vcvtph2ps); fp32 FMA lanes.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_f16_f16_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(f16x16(x + 2 * i), f16x16(y + 2 * i), acc0);
        acc1 = _mm512_fmadd_ps(f16x16(x + 2 * i + 32), f16x16(y + 2 * i + 32), acc1);
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm512_fmadd_ps(f16x16(x + 2 * i), f16x16(y + 2 * i), acc0);
    if (i < n) {
        __mmask16 k = first16(n - i);
        __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, x + 2 * i));
        acc1 = _mm512_fmadd_ps(xv, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, y + 2 * i)), acc1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* s = sum_i w_i * a_i over bf16 rows (any n), widened exactly by a 16-bit shift; fp32 FMA lanes.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_bf16_bf16_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(bf16x16(loadu256(x + 2 * i)), bf16x16(loadu256(y + 2 * i)), acc0);
        acc1 = _mm512_fmadd_ps(bf16x16(loadu256(x + 2 * i + 32)), bf16x16(loadu256(y + 2 * i + 32)),
                               acc1);
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm512_fmadd_ps(bf16x16(loadu256(x + 2 * i)), bf16x16(loadu256(y + 2 * i)), acc0);
    if (i < n) {
        __mmask16 k = first16(n - i);
        acc1 = _mm512_fmadd_ps(bf16x16(_mm256_maskz_loadu_epi16(k, x + 2 * i)),
                               bf16x16(_mm256_maskz_loadu_epi16(k, y + 2 * i)), acc1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* dst = the n halves at src as fp32 (vcvtph2ps, exact).  Test: bit-identical to scalar. */
void kvx_to_float_f16_avx512(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, f16x16(p + 2 * i));
    if (i < n) {
        __mmask16 k = first16(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + 2 * i)));
    }
}

/* dst = n halves, round to nearest even, overflow to inf (vcvtps2ph).  Test: bit-identical to
 * scalar for every non-NaN input (NaN payloads are the hardware's). */
void kvx_from_float_f16_avx512(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(p + 2 * i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 k = first16(n - i);
        _mm256_mask_storeu_epi16(
            p + 2 * i, k,
            _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, src + i), _MM_FROUND_TO_NEAREST_INT));
    }
}

/* bf16 = (x + 0x7fff + lsb) >> 16, NaN -> (x >> 16) | 0x40: kvx_f32_to_bf16 on 16 lanes. */
static inline __m256i bf16_round(__m512 v)
{
    __m512i x = _mm512_castps_si512(v);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

/* dst = n bf16, round to nearest even, NaN kept quiet (kvx_f32_to_bf16 on every lane).
 * Test: bit-identical to scalar, NaN included. */
void kvx_from_float_bf16_avx512(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(p + 2 * i), bf16_round(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 k = first16(n - i);
        _mm256_mask_storeu_epi16(p + 2 * i, k, bf16_round(_mm512_maskz_loadu_ps(k, src + i)));
    }
}

/* ============================ 32-element blocks: dot products ============================= */

/* The row loop and the per-format pair dots are shared with quant_avx512vnni.c (quant_internal.h,
 * kvx_quant512_row); here the u8 x s8 sums go through vpmaddubsw + vpmaddwd. */

/* s = sum_b (dw*da)_b * sum_j (qw_j - 8) * qa_j.  Blocks q4_0 (18 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks (kvx_quant512_row).  Test: within 1e-5 * sum |w*a| of the
 * scalar kernel. */
void kvx_vec_dot_q4_0_q8_0_avx512(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q4_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q4_0, false, false);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b (sa = fp16 of da * sum qa).  Blocks q4_1
 * (20 B) x q8_1 (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum
 * |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_1_q8_1_avx512(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q4_1), a, sizeof(struct kvx_block_q8_1),
                          kvx_quant512_q4_1, true, false);
}

/* s = sum_b (dw*da)_b * sum_j (qw_j - 16) * qa_j.  Blocks q5_0 (22 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q5_0_q8_0_avx512(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q5_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q5_0, false, false);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b, qw in 0..31.  Blocks q5_1 (24 B) x q8_1
 * (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the
 * scalar kernel. */
void kvx_vec_dot_q5_1_q8_1_avx512(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q5_1), a, sizeof(struct kvx_block_q8_1),
                          kvx_quant512_q5_1, true, false);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j.  Blocks q8_0 (34 B) x q8_0.  int32 exact within a
 * block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q8_0_q8_0_avx512(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q8_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q8_0, false, false);
}

/* ======================= 32-element blocks: register tiles (vec_dot_tile) ==================
 *
 * s[c*ldS + r] = w_r . a_c for r < nr, c < nc (nr, nc <= 4): kvx_quant512_tile
 * (quant_internal.h), shared with quant_avx512vnni.c, here with vpmaddubsw + vpmaddwd: 4 rows
 * per zmm against a broadcast token, each weight block unpacked once for 4 tokens, each
 * activation block loaded once for 4 rows.  int16 pairs stay unsaturated as noted in
 * kvx_quant512_tile_dot; int32 exact within a block, fp32 across blocks.  Test: every (r, c)
 * within 1e-5 * sum |w*a| of the scalar vec_dot, nothing outside the tile written. */

/* q4_0 x q8_0 tile: (qw - 8) . qa as qw . qa - 8 * sum(qa) on int16 pairs. */
void kvx_vec_dot_tile_q4_0_q8_0_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q4_0, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q4_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block. */
void kvx_vec_dot_tile_q4_1_q8_1_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q4_1, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_0 x q8_0 tile: (qw - 16) . qa as qw . qa - 16 * sum(qa) on int16 pairs, qw in 0..31. */
void kvx_vec_dot_tile_q5_0_q8_0_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q5_0, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block, qw in 0..31. */
void kvx_vec_dot_tile_q5_1_q8_1_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q5_1, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q8_0 x q8_0 tile: |qw| . (qa with qw's sign), each half widened alone (exact when
 * qa != -128, which the q8_0 quantizer guarantees). */
void kvx_vec_dot_tile_q8_0_q8_0_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q8_0, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* K-quant tiles (kvx_quant512_ktile): per sub-block, vpmaddubsw int16 pairs (quants <= 63)
 * times the row's sub-block scale by vpmaddwd, int32 exact per super-block; fp32 across
 * super-blocks.  Test: every (r, c) within 1e-5 * sum |w*a| of the scalar vec_dot. */

/* q4_K x q8_K tile: (dw*da) sum_j sc_j dot_j - (dmin*da) sum_g mn_{g/2} bsum_g per super-block. */
void kvx_vec_dot_tile_q4_K_q8_K_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q4_K, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_K x q8_K tile: as q4_K with quants 0..31. */
void kvx_vec_dot_tile_q5_K_q8_K_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q5_K, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q6_K x q8_K tile: (dw*da) sum_j sc_j (dot_j - 32 bsum_j), sc_j int8, quants 0..63. */
void kvx_vec_dot_tile_q6_K_q8_K_avx512(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                       const void *w, size_t w_stride, const void *a,
                                       size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q6_K, false, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* ================================ K-quants: dot products ================================== */

/* The 16 group scales as int16 lanes 0..15 of a zmm. */
static inline __m512i scales16_i8(const int8_t *sc)
{
    return _mm512_castsi256_si512(_mm256_cvtepi8_epi16(loadu128(sc)));
}

/* int16 scale vector of 64 elements = groups g0..g0+3 of 16: [sc[g0] x8, ..., sc[g0+3] x8]. */
static inline __m512i group_scales(__m512i sc16, int g0)
{
    static const int16_t base[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    __m512i idx = _mm512_add_epi16(loadu512(base), _mm512_set1_epi16((short)g0));
    return _mm512_permutexvar_epi16(idx, sc16);
}

/* sum over 64 elements of u*qa, scaled per group by the int16 lanes of sc, as 16 int32. */
static inline __m512i dot64_scaled(__m512i u, const int8_t *qa, __m512i sc)
{
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, loadu512(qa)), sc);
}

/* 64 bytes: v shifted right by a bits (bytes 0..31) and by b bits (bytes 32..63), & mask. */
static inline __m512i shifted_pair(__m256i v, int a, int b, int mask)
{
    __m512i w = _mm512_broadcast_i64x4(v);
    return _mm512_and_si512(_mm512_srlv_epi16(w, halves16(a, b)), _mm512_set1_epi8((char)mask));
}

/* sum_g sc[g] * bsum[g] as 8 int32 (sc as 16 int16). */
static inline __m256i bsums_scaled(const struct kvx_block_q8_K *y, __m256i sc16)
{
    return _mm256_madd_epi16(loadu256(y->bsums), sc16);
}

/* s = sum_sb (dw*da) * sum_j (sc_j & 15) * dot_j - (dmin*da) * sum_j (sc_j >> 4) * bsum_j.
 * Blocks q2_K (84 B) x q8_K (292 B); quants 0..3 (int16 pairs <= 2*3*128), scales <= 15: both sums
 * int32 exact per super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q2_K_q8_K_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q2_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        __m128i s8 = loadu128(x[i].scales);
        __m512i sc16 =
            _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(s8, _mm_set1_epi8(15))));
        __m256i mn16 =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(15)));
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            __m256i q = loadu256(x[i].qs + 32 * h);
            __m512i u0 = shifted_pair(q, 0, 2, 3), u1 = shifted_pair(q, 4, 6, 3);
            sumi = _mm512_add_epi32(sumi,
                                    dot64_scaled(u0, y[i].qs + 128 * h, group_scales(sc16, 8 * h)));
            sumi = _mm512_add_epi32(
                sumi, dot64_scaled(u1, y[i].qs + 128 * h + 64, group_scales(sc16, 8 * h + 4)));
        }
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(da * f16_at(x[i].d)), _mm512_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(da * f16_at(x[i].dmin)),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], mn16)), accm);
    }
    *s = _mm512_reduce_add_ps(acc) - hsum256_ps(accm);
}

/* 64 q3_K quants (0..7) of half h, pair p (p = 0: j = 0, 1; p = 1: j = 2, 3). */
static inline __m512i q3_k_quants64(const struct kvx_block_q3_K *x, int h, int p)
{
    __m512i lo = shifted_pair(loadu256(x->qs + 32 * h), 4 * p, 4 * p + 2, 3);
    __m512i hm = _mm512_broadcast_i64x4(loadu256(x->hmask));
    int b = 4 * h + 2 * p;
    __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << b)),
                                     _mm256_set1_epi8((char)(1 << (b + 1))), 1);
    return _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(hm, sel), lo, _mm512_set1_epi8(4));
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 4 * bsum_j), sc_j in -32..31, quants 0..7 (int16
 * pairs <= 2*7*128).  Blocks q3_K (110 B) x q8_K; int32 exact per super-block, fp32 across.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q3_K_q8_K_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q3_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    int8_t sc[16];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q3_k_scales(x[i].scales, sc);
        __m512i sc16 = scales16_i8(sc);
        __m256i off = _mm256_slli_epi32(bsums_scaled(&y[i], _mm512_castsi512_si256(sc16)), 2);
        __m512i sumi = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), off));
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < 2; p++)
                sumi = _mm512_add_epi32(sumi, dot64_scaled(q3_k_quants64(&x[i], h, p),
                                                           y[i].qs + 128 * h + 64 * p,
                                                           group_scales(sc16, 8 * h + 4 * p)));
        float d = f16_at(x[i].d) * kvx_quant_load_f32(y[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}

/* The 8 mins of a q4_K/q5_K super-block, each repeated for its two bsum groups, as int16. */
static inline __m256i q4_k_mins16(const uint8_t mn[8])
{
    __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    return _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m));
}

/* sum_j sc_j * dot_j of a q4_K/q5_K super-block (qh = fifth bits, or NULL for q4_K), 16 int32.
 * Chunk c is elements 64c..64c+63: low nibbles of qs[32c..] then high nibbles. */
static inline __m512i q45_k_sumi(const uint8_t *qs, const uint8_t *qh, const int8_t *qa,
                                 const uint8_t sc[8])
{
    __m512i sumi = _mm512_setzero_si512();
    __m512i hb = qh ? _mm512_broadcast_i64x4(loadu256(qh)) : _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i u = shifted_pair(loadu256(qs + 32 * c), 0, 4, 15);
        if (qh) {
            __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))),
                                             _mm256_set1_epi8((char)(2 << (2 * c))), 1);
            u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(hb, sel), u, _mm512_set1_epi8(16));
        }
        sumi = _mm512_add_epi32(sumi,
                                dot64_scaled(u, qa + 64 * c, halves16(sc[2 * c], sc[2 * c + 1])));
    }
    return sumi;
}

/* s = sum_sb (dw*da) * sum_j sc_j * dot_j - (dmin*da) * sum_g mn_{g/2} * bsum_g.  Blocks q4_K
 * (144 B) x q8_K; quants 0..15 (int16 pairs <= 2*15*128), 6-bit scales: int32 exact per
 * super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_K_q8_K_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q4_k_scales(x[i].scales, sc, mn);
        __m512i sumi = q45_k_sumi(x[i].qs, NULL, y[i].qs, sc);
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(x[i].d) * da), _mm512_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].dmin) * da),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], q4_k_mins16(mn))), accm);
    }
    *s = _mm512_reduce_add_ps(acc) - hsum256_ps(accm);
}

/* As q4_K with quants 0..31 (int16 pairs <= 2*31*128).  Blocks q5_K (176 B) x q8_K; int32 exact
 * per super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q5_K_q8_K_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    __m256 accm = _mm256_setzero_ps();
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q4_k_scales(x[i].scales, sc, mn);
        __m512i sumi = q45_k_sumi(x[i].qs, x[i].qh, y[i].qs, sc);
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(x[i].d) * da), _mm512_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].dmin) * da),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], q4_k_mins16(mn))), accm);
    }
    *s = _mm512_reduce_add_ps(acc) - hsum256_ps(accm);
}

/* 64 q6_K quants (0..63) of half h: p = 0 -> elements 128h + 0..63, p = 1 -> 128h + 64..127. */
static inline __m512i q6_k_quants64(const struct kvx_block_q6_K *x, int h, int p)
{
    __m512i lo =
        _mm512_and_si512(_mm512_srli_epi16(loadu512(x->ql + 64 * h), 4 * p), _mm512_set1_epi8(15));
    __m512i hi = shifted_pair(loadu256(x->qh + 32 * h), 4 * p, 4 * p + 2, 3);
    return _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 32 * bsum_j), sc_j int8, quants 0..63 (int16 pairs
 * <= 2*63*128 < 2^15).  Blocks q6_K (210 B) x q8_K; int32 exact per super-block, fp32 across.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q6_K_q8_K_avx512(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q6_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        __m512i sc16 = scales16_i8(x[i].scales);
        __m256i off = _mm256_slli_epi32(bsums_scaled(&y[i], _mm512_castsi512_si256(sc16)), 5);
        __m512i sumi = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), off));
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < 2; p++)
                sumi = _mm512_add_epi32(sumi, dot64_scaled(q6_k_quants64(&x[i], h, p),
                                                           y[i].qs + 128 * h + 64 * p,
                                                           group_scales(sc16, 8 * h + 4 * p)));
        float d = f16_at(x[i].d) * kvx_quant_load_f32(y[i].d);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    *s = _mm512_reduce_add_ps(acc);
}

/* ============================== activation quantizers ===================================== */

/* q = roundf(x * id) of one 32-block (the q8_0/q8_1 rule); returns sum(q); *d = amax / 127. */
static inline int q8_block(const float *x, int8_t *qs, float *d_out)
{
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = mx / 127.0f;
    __m512 id = _mm512_set1_ps(mx != 0 ? 127.0f / mx : 0.0f);
    /* vcvtps2dq rounds half to even, the rule of kvx_from_float_q8_0_scalar */
    __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtepi32_epi8(q1));
    *d_out = d;
    return _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
}

/* Bit-identical to kvx_from_float_q8_0_scalar . */
void kvx_from_float_q8_0_avx512(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        q8_block(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
    }
}

/* Bit-identical to kvx_from_float_q8_1_scalar . */
void kvx_from_float_q8_1_avx512(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        int sum = q8_block(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
        kvx_quant_store_f16(b->s, d * (float)sum);
    }
}

/* Bit-identical to kvx_from_float_q8_K_scalar: max = first element of largest magnitude,
 * q = min(127, rne(x * (-127/max))) (vcvtps2dq rounds to nearest even like ggml's nearest_int),
 * d = 1/iscale, one bsum per 16 lanes. */
void kvx_from_float_q8_K_avx512(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        __m512 amax = _mm512_setzero_ps();
        for (int g = 0; g < 16; g++)
            amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(src + 16 * g)));
        __m512 am = _mm512_set1_ps(_mm512_reduce_max_ps(amax));
        float max = 0;
        for (int g = 0; g < 16; g++) {
            __mmask16 k =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(src + 16 * g)), am, _CMP_EQ_OQ);
            if (k) {
                max = src[16 * g + __builtin_ctz(k)];
                break;
            }
        }
        if (max == 0) {
            memset(b, 0, sizeof *b);
            continue;
        }
        float iscale = -127.0f / max;
        for (int g = 0; g < 16; g++) {
            __m512i q = _mm512_cvtps_epi32(
                _mm512_mul_ps(_mm512_set1_ps(iscale), _mm512_loadu_ps(src + 16 * g)));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(b->qs + 16 * g), _mm512_cvtepi32_epi8(q));
            kvx_quant_store_i16(b->bsums + 2 * g, (int16_t)_mm512_reduce_add_epi32(q));
        }
        kvx_quant_store_f32(b->d, 1 / iscale);
    }
}
