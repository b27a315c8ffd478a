/* ops/quant_avx2: the AVX2 + FMA + F16C kernels (this file is compiled with -mavx2 -mfma -mf16c;
 * its functions run only after kvx_cpu_has_isa(KVX_ISA_AVX2) said yes).
 *
 * Owns: vec_dot of f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K..q6_K; vec_dot_tile of
 * q4_0, q4_1, q5_0, q5_1, q8_0 (4 rows x 4 tokens); from_float of the
 * activation formats f16, bf16, q8_0, q8_1, q8_K (bit-identical to the scalar ones for every
 * non-NaN input); to_float of f16.  Everything else is the scalar kernel (see quant.c).
 *
 * The integer products go through vpmaddubsw (u8 x s8, pairs summed in int16) and vpmaddwd
 * (pairs to int32): each kernel notes why its int16 pairs cannot saturate.  All loads are
 * unaligned; nothing is allocated.  Tests: tests/test_quant.c, SIMD vs scalar within
 * 1e-5 * sum |w*a| (the difference is fp32 summation order only). */
#include <immintrin.h>

#include "ops/quant_internal.h"

/* ========================================= helpers ======================================== */

static inline __m256i loadu256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i loadu128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline float f16_at(const uint8_t *p) { return _cvtsh_ss(kvx_quant_load_u16(p)); }

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* The 32 quants of a q4 block as bytes in element order (low nibbles, then high nibbles). */
static inline __m256i q4_bytes(const uint8_t qs[16])
{
    __m128i t = loadu128(qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* The 32 quants of a q5 block (0..31): byte j gets 16 when bit j of qh is set. */
static inline __m256i q5_bytes(const uint8_t qs[16], const uint8_t qh[4])
{
    const __m256i spread =
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)kvx_quant_load_u32(qh)), spread);
    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_or_si256(q4_bytes(qs), _mm256_and_si256(h, _mm256_set1_epi8(16)));
}

/* Pairs of int16 summed to int32. */
static inline __m256i pairs_i32(__m256i p16)
{
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* maddubs(u, y) with lanes 0..7 (bytes 0..15) times sa and lanes 8..15 times sb, as 8 int32. */
static inline __m256i dot32_scaled(__m256i u, const int8_t *y, int sa, int sb)
{
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)sb), _mm_set1_epi16((short)sa));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, loadu256(y)), sc);
}

/* ====================================== float formats ===================================== */

static inline __m256 f32x8(const uint8_t *p)
{
    return _mm256_loadu_ps((const float *)(const void *)p);
}

/* s = sum_i w_i * a_i over fp32 rows (any n, any alignment).  fp32 FMA lanes, summed at the end
 * (scalar sums in double).  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_f32_f32_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] =
                _mm256_fmadd_ps(f32x8(x + 4 * (i + 8 * k)), f32x8(y + 4 * (i + 8 * k)), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(f32x8(x + 4 * i), f32x8(y + 4 * i), acc[0]);
    float sum =
        hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++)
        sum += kvx_quant_load_f32(x + 4 * i) * kvx_quant_load_f32(y + 4 * i);
    *s = sum;
}

static inline __m256 f16x8(const uint8_t *p) { return _mm256_cvtph_ps(loadu128(p)); }
static inline __m256 bf16x8(const uint8_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(loadu128(p)), 16));
}

/* s = sum_i w_i * a_i over fp16 rows (any n), both widened exactly (vcvtph2ps); fp32 FMA lanes.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_f16_f16_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(f16x8(x + 2 * i), f16x8(y + 2 * i), acc0);
        acc1 = _mm256_fmadd_ps(f16x8(x + 2 * i + 16), f16x8(y + 2 * i + 16), acc1);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(f16x8(x + 2 * i), f16x8(y + 2 * i), acc0);
    float sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += f16_at(x + 2 * i) * f16_at(y + 2 * i);
    *s = sum;
}

/* s = sum_i w_i * a_i over bf16 rows (any n), widened exactly by a 16-bit shift; fp32 FMA lanes.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_bf16_bf16_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(bf16x8(x + 2 * i), bf16x8(y + 2 * i), acc0);
        acc1 = _mm256_fmadd_ps(bf16x8(x + 2 * i + 16), bf16x8(y + 2 * i + 16), acc1);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(bf16x8(x + 2 * i), bf16x8(y + 2 * i), acc0);
    float sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += kvx_bf16_to_f32(kvx_quant_load_u16(x + 2 * i)) *
               kvx_bf16_to_f32(kvx_quant_load_u16(y + 2 * i));
    *s = sum;
}

/* dst = the n halves at src as fp32 (vcvtph2ps, exact).  Test: bit-identical to scalar. */
void kvx_to_float_f16_avx2(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, f16x8(p + 2 * i));
    for (; i < n; i++)
        dst[i] = f16_at(p + 2 * i);
}

/* dst = n halves, round to nearest even, overflow to inf (vcvtps2ph).  Test: bit-identical to
 * scalar for every non-NaN input (NaN payloads are the hardware's). */
void kvx_from_float_f16_avx2(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(p + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        kvx_quant_store_f16(p + 2 * i, src[i]);
}

/* bf16 = (x + 0x7fff + lsb) >> 16, NaN -> (x >> 16) | 0x40: kvx_f32_to_bf16 on 8 lanes. */
static inline __m256i bf16_round(__m256 v)
{
    __m256i x = _mm256_castps_si256(v);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

/* dst = n bf16, round to nearest even, NaN kept quiet (kvx_f32_to_bf16 on every lane).
 * Test: bit-identical to scalar, NaN included. */
void kvx_from_float_bf16_avx2(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r = _mm256_packus_epi32(bf16_round(_mm256_loadu_ps(src + i)),
                                        bf16_round(_mm256_loadu_ps(src + i + 8)));
        _mm256_storeu_si256((__m256i *)(p + 2 * i), _mm256_permute4x64_epi64(r, 0xd8));
    }
    for (; i < n; i++) {
        uint16_t b = kvx_f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &b, sizeof b);
    }
}

/* ============================ 32-element blocks: dot products ============================= */

/* [dw * da, mw * sa, -, -]: the first two fp16 of a weight block and of its activation block,
 * widened and multiplied (every 32-element block starts with d, then m or s, and is at least 16
 * bytes long; lanes 2 and 3 are never used).  The 16-byte form folds into vcvtph2ps ymm, m128. */
static inline __m128 head_products(const void *w, const void *a)
{
    __m128 hw = _mm256_castps256_ps128(_mm256_cvtph_ps(loadu128(w)));
    return _mm_mul_ps(hw, _mm256_castps256_ps128(_mm256_cvtph_ps(loadu128(a))));
}

/* acc + (dw*da) * (int32 lanes of p), returning the head products in *h. */
static inline __m256 scaled_acc(const void *x, const void *y, __m256i p, __m256 acc, __m128 *h)
{
    *h = head_products(x, y);
    return _mm256_fmadd_ps(_mm256_broadcastss_ps(*h), _mm256_cvtepi32_ps(p), acc);
}

/* Lane 1 (the min terms) of two head-product sums. */
static inline float min_sum(__m128 m0, __m128 m1)
{
    __m128 m = _mm_add_ps(m0, m1);
    return _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1));
}

/* The blocks of row x two at a time into acc0 / acc1, then the odd last one; BLOCK(i, acc, k)
 * adds block i to acc (k = 0 or 1 picks a min accumulator).  Prefetches the weights
 * KVX_QUANT_PREFETCH_BYTES ahead. */
#define BLOCK_LOOP(nb, acc0, acc1, BLOCK, x)                                                       \
    do {                                                                                           \
        int64_t i_ = 0;                                                                            \
        for (; i_ + 1 < (nb); i_ += 2) {                                                           \
            kvx_quant_prefetch(&(x)[i_]);                                                          \
            acc0 = BLOCK(i_, acc0, 0);                                                             \
            acc1 = BLOCK(i_ + 1, acc1, 1);                                                         \
        }                                                                                          \
        if (i_ < (nb))                                                                             \
            acc0 = BLOCK(i_, acc0, 0);                                                             \
    } while (0)

/* (qw - off) . qa of one block as 8 int32: int16 pairs maddubs(qw, qa) <= 2*31*128 and
 * maddubs(off, qa) <= 2*16*128 in magnitude, so neither they nor their difference saturate. */
static inline __m256i offset_dot(__m256i qw, int off, const int8_t *qa_p)
{
    __m256i qa = loadu256(qa_p);
    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(qw, qa),
                                 _mm256_maddubs_epi16(_mm256_set1_epi8((char)off), qa));
    return pairs_i32(p);
}

/* qw . qa of one block with qw unsigned <= 31 (int16 pairs <= 2*31*128), as 8 int32. */
static inline __m256i u_dot(__m256i qw, const int8_t *qa)
{
    return pairs_i32(_mm256_maddubs_epi16(qw, loadu256(qa)));
}

/* s = sum_b (dw*da)_b * sum_j (qw_j - 8) * qa_j.  Blocks q4_0 (18 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_0_q8_0_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 h;
#define BLOCK(i, acc, k)                                                                           \
    scaled_acc(&x[i], &y[i], offset_dot(q4_bytes(x[i].qs), 8, y[i].qs), acc, &h)
    BLOCK_LOOP(n / KVX_QK, acc0, acc1, BLOCK, x);
#undef BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

static inline __m256 q4_1_block(const struct kvx_block_q4_1 *x, const struct kvx_block_q8_1 *y,
                                __m256 acc, __m128 *m)
{
    __m128 h;
    acc = scaled_acc(x, y, u_dot(q4_bytes(x->qs), y->qs), acc, &h);
    *m = _mm_add_ps(*m, h);
    return acc;
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b (sa = fp16 of da * sum qa).  Blocks q4_1
 * (20 B) x q8_1 (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum
 * |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_1_q8_1_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 m[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
#define BLOCK(i, acc, k) q4_1_block(&x[i], &y[i], acc, &m[k])
    BLOCK_LOOP(n / KVX_QK, acc0, acc1, BLOCK, x);
#undef BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1)) + min_sum(m[0], m[1]);
}

/* s = sum_b (dw*da)_b * sum_j (qw_j - 16) * qa_j.  Blocks q5_0 (22 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q5_0_q8_0_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 h;
#define BLOCK(i, acc, k)                                                                           \
    scaled_acc(&x[i], &y[i], offset_dot(q5_bytes(x[i].qs, x[i].qh), 16, y[i].qs), acc, &h)
    BLOCK_LOOP(n / KVX_QK, acc0, acc1, BLOCK, x);
#undef BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

static inline __m256 q5_1_block(const struct kvx_block_q5_1 *x, const struct kvx_block_q8_1 *y,
                                __m256 acc, __m128 *m)
{
    __m128 h;
    acc = scaled_acc(x, y, u_dot(q5_bytes(x->qs, x->qh), y->qs), acc, &h);
    *m = _mm_add_ps(*m, h);
    return acc;
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b, qw in 0..31.  Blocks q5_1 (24 B) x q8_1
 * (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the
 * scalar kernel. */
void kvx_vec_dot_q5_1_q8_1_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 m[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
#define BLOCK(i, acc, k) q5_1_block(&x[i], &y[i], acc, &m[k])
    BLOCK_LOOP(n / KVX_QK, acc0, acc1, BLOCK, x);
#undef BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1)) + min_sum(m[0], m[1]);
}

/* qw . qa of one q8_0 block as |qw| . (qa with qw's sign) (vpsignb), as ggml does: exact when
 * qa != -128, which the q8_0 quantizer guarantees (|qa| <= 127), so int16 pairs <= 2*128*127. */
static inline __m256i q8_0_dot(const int8_t *qw_p, const int8_t *qa_p)
{
    __m256i qw = loadu256(qw_p);
    return pairs_i32(
        _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(loadu256(qa_p), qw)));
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j.  Blocks q8_0 (34 B) x q8_0.  int32 exact within a
 * block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q8_0_q8_0_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q8_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 h;
#define BLOCK(i, acc, k) scaled_acc(&x[i], &y[i], q8_0_dot(x[i].qs, y[i].qs), acc, &h)
    BLOCK_LOOP(n / KVX_QK, acc0, acc1, BLOCK, x);
#undef BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* ======================= 32-element blocks: register tiles (vec_dot_tile) ==================
 *
 * s[c*ldS + r] = w_r . a_c for r < nr, c < nc (nr, nc <= 4).  The AVX-512 tiles' layout on
 * ymm: a block of a row pair in one ymm per half (row 2p in 128-bit lane 0, row 2p + 1 in lane
 * 1; elements 0..15 in one register, 16..31 in another), a token's 16 activations broadcast to
 * both lanes (a plain load), so one vpmaddubsw pair + vpmaddwd gives the int32 sums of 2 (row,
 * token) pairs; each weight block is unpacked once for 4 tokens, each activation block loaded
 * once per row pair.  Scales: the fp16 d (and m or s) of four blocks of a row pair or a token
 * are packed in a GPR and widened by one vcvtph2ps; a vpermps spreads the rows' dw per block,
 * the tokens' da are broadcast loads from a stack copy.  q4_1 / q5_1 add mw * sa with one FMA
 * per row pair and token per 4 blocks.  int16 pairs: q4/q5 <= 2*31*128 and a block's two
 * halves with the q4_0/q5_0 offset term inside int16; q8_0 by the sign trick (vpsignb, exact
 * when qa != -128), each half widened alone.  int32 exact within a block, fp32 across blocks.
 * Test: every (r, c) within 1e-5 * sum |w*a| of the scalar vec_dot. */

enum tile_fmt { TILE_Q4_0, TILE_Q4_1, TILE_Q5_0, TILE_Q5_1, TILE_Q8_0 };

#define TILE_UNROLL _Pragma("GCC unroll 4")

/* 16 bytes at p0 in lane 0 and at p1 in lane 1; 16 bytes at p in both lanes. */
static inline __m256i rows2(const uint8_t *p0, const uint8_t *p1)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(loadu128(p0)), loadu128(p1), 1);
}
static inline __m256i bcast128(const uint8_t *p)
{
    return _mm256_broadcastsi128_si256(loadu128(p));
}

/* fp32 [h_0, h_1, h_2, h_3] of blocks 0..kb-1 (0 beyond) of the fp16 at byte `at` of blocks of
 * bs bytes at p0 (lanes 0..3) and p1 (lanes 4..7). */
static inline __m256 tile_heads(const uint8_t *p0, const uint8_t *p1, size_t bs, size_t at, int kb)
{
    uint64_t h0 = 0, h1 = 0;
    for (int k = 0; k < kb; k++) {
        h0 |= (uint64_t)kvx_quant_load_u16(p0 + (size_t)k * bs + at) << (16 * k);
        h1 |= (uint64_t)kvx_quant_load_u16(p1 + (size_t)k * bs + at) << (16 * k);
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)h1, (long long)h0));
}

/* Byte j of lane i is 16 if bit j of the 16-bit b_i is set, else 0. */
static inline __m256i bits16_to_bytes(uint32_t b0, uint32_t b1)
{
    const __m256i spread =
        _mm256_set_epi64x(0x0101010101010101, 0, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i h = _mm256_set_m128i(_mm_set1_epi16((short)b1), _mm_set1_epi16((short)b0));
    h = _mm256_shuffle_epi8(h, spread);
    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_and_si256(h, _mm256_set1_epi8(16));
}

struct tile_halves {
    __m256i lo, hi;
};

/* A block of rows x0, x1: unsigned quants (q4/q5), or q8_0's int8. */
static inline __attribute__((always_inline)) struct tile_halves
tile_weights(enum tile_fmt f, const uint8_t *x0, const uint8_t *x1)
{
    struct tile_halves h;
    if (f == TILE_Q8_0) {
        h.lo = rows2(x0 + 2, x1 + 2);
        h.hi = rows2(x0 + 18, x1 + 18);
        return h;
    }
    const bool q5 = f == TILE_Q5_0 || f == TILE_Q5_1;
    const size_t head = f == TILE_Q4_0 || f == TILE_Q5_0 ? 2 : 4;
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i v = rows2(x0 + head + (q5 ? 4 : 0), x1 + head + (q5 ? 4 : 0));
    h.lo = _mm256_and_si256(v, m4);
    h.hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (q5) {
        uint32_t q0 = kvx_quant_load_u32(x0 + head), q1 = kvx_quant_load_u32(x1 + head);
        h.lo = _mm256_or_si256(h.lo, bits16_to_bytes(q0 & 0xffffu, q1 & 0xffffu));
        h.hi = _mm256_or_si256(h.hi, bits16_to_bytes(q0 >> 16, q1 >> 16));
    }
    return h;
}

/* int32 sums of a row pair's block against a token's (row 2p in lanes 0..3, 2p + 1 in 4..7). */
static inline __attribute__((always_inline)) __m256i
tile_dot(enum tile_fmt f, const struct tile_halves *wv, __m256i alo, __m256i ahi)
{
    const __m256i ones = _mm256_set1_epi16(1);
    if (f == TILE_Q8_0)
        return _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv->lo, wv->lo),
                                                   _mm256_sign_epi8(alo, wv->lo)),
                              ones),
            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv->hi, wv->hi),
                                                   _mm256_sign_epi8(ahi, wv->hi)),
                              ones));
    __m256i p =
        _mm256_add_epi16(_mm256_maddubs_epi16(wv->lo, alo), _mm256_maddubs_epi16(wv->hi, ahi));
    if (f == TILE_Q4_0 || f == TILE_Q5_0) { /* (q - o) . a = q . a - o * sum(a) */
        const __m256i o = _mm256_set1_epi8(f == TILE_Q4_0 ? 8 : 16);
        p = _mm256_sub_epi16(p, _mm256_add_epi16(_mm256_maddubs_epi16(o, alo),
                                                 _mm256_maddubs_epi16(o, ahi)));
    }
    return _mm256_madd_epi16(p, ones);
}

/* The tile for nt tokens (a constant); rows past nr repeat the last one. */
static inline __attribute__((always_inline)) void
tile_nt(enum tile_fmt f, int nt, int64_t n, int nr, float *s, int64_t ldS, const void *w,
        size_t ws, const void *a, size_t as)
{
    static const size_t wbytes[] = {sizeof(struct kvx_block_q4_0), sizeof(struct kvx_block_q4_1),
                                    sizeof(struct kvx_block_q5_0), sizeof(struct kvx_block_q5_1),
                                    sizeof(struct kvx_block_q8_0)};
    const bool min = f == TILE_Q4_1 || f == TILE_Q5_1;
    const size_t wb = wbytes[f], ab = min ? sizeof(struct kvx_block_q8_1)
                                          : sizeof(struct kvx_block_q8_0);
    const size_t aqs = min ? 4 : 2;
    const uint8_t *xr[4], *yc[4];
    TILE_UNROLL
    for (int r = 0; r < 4; r++)
        xr[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    TILE_UNROLL
    for (int c = 0; c < 4; c++)
        yc[c] = (const uint8_t *)a + (size_t)(c < nt ? c : 0) * as;
    __m256 acc[2][4];
    TILE_UNROLL
    for (int p = 0; p < 2; p++)
        TILE_UNROLL
        for (int c = 0; c < 4; c++)
            acc[p][c] = _mm256_setzero_ps();
    const int64_t nb = n / KVX_QK;
    for (int64_t i = 0; i < nb; i += 4) {
        const int kb = nb - i < 4 ? (int)(nb - i) : 4;
        const size_t ow = (size_t)i * wb, oa = (size_t)i * ab;
        _Alignas(32) float ht[4][8]; /* per token: da of the 4 blocks, then sa */
        TILE_UNROLL
        for (int c = 0; c < nt; c += 2) {
            const uint8_t *y1 = yc[c + 1 < nt ? c + 1 : c] + oa;
            const __m256 d = tile_heads(yc[c] + oa, y1, ab, 0, kb);
            const __m256 sa = min ? tile_heads(yc[c] + oa, y1, ab, 2, kb) : _mm256_setzero_ps();
            _mm256_store_ps(ht[c], _mm256_permute2f128_ps(d, sa, 0x20));
            _mm256_store_ps(ht[c + 1 < 4 ? c + 1 : c], _mm256_permute2f128_ps(d, sa, 0x31));
        }
        __asm__ volatile("" : : "r"(ht) : "memory"); /* scales as broadcast loads */
        TILE_UNROLL
        for (int p = 0; p < 2; p++) {
            const uint8_t *x0 = xr[2 * p] + ow, *x1 = xr[2 * p + 1] + ow;
            const __m256 hd = tile_heads(x0, x1, wb, 0, kb); /* [r0 d_0..3, r1 d_0..3] */
            if (min) { /* lane 4i + j += mw_i * sa of block j */
                const __m256 hm = tile_heads(x0, x1, wb, 2, kb);
                TILE_UNROLL
                for (int c = 0; c < nt; c++)
                    acc[p][c] = _mm256_fmadd_ps(
                        hm, _mm256_broadcast_ps((const __m128 *)&ht[c][4]), acc[p][c]);
            }
            for (int k = 0; k < kb; k++) {
                const struct tile_halves wv = tile_weights(f, x0 + (size_t)k * wb,
                                                           x1 + (size_t)k * wb);
                const __m256 dw =
                    _mm256_permutevar8x32_ps(hd, _mm256_set_epi32(k + 4, k + 4, k + 4, k + 4, k, k,
                                                                  k, k));
                TILE_UNROLL
                for (int c = 0; c < nt; c++) {
                    const uint8_t *y = yc[c] + oa + (size_t)k * ab + aqs;
                    const __m256i d = tile_dot(f, &wv, bcast128(y), bcast128(y + 16));
                    acc[p][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(ht[c][k])),
                                                _mm256_cvtepi32_ps(d), acc[p][c]);
                }
            }
        }
    }
    TILE_UNROLL
    for (int p = 0; p < 2; p++)
        TILE_UNROLL
        for (int c = 0; c < nt; c++) {
            __m256 v = acc[p][c]; /* the sum of each 128-bit lane (a row) in its lane 0 */
            v = _mm256_add_ps(v, _mm256_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
            v = _mm256_add_ps(v, _mm256_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
            _Alignas(32) float t[8];
            _mm256_store_ps(t, v);
            for (int i = 0; i < 2; i++)
                if (2 * p + i < nr)
                    s[c * ldS + 2 * p + i] = t[4 * i];
        }
}

static inline __attribute__((always_inline)) void tile(enum tile_fmt f, int64_t n, int nr, int nc,
                                                       float *s, int64_t ldS, const void *w,
                                                       size_t ws, const void *a, size_t as)
{
    switch (nc) {
    case 1: tile_nt(f, 1, n, nr, s, ldS, w, ws, a, as); break;
    case 2: tile_nt(f, 2, n, nr, s, ldS, w, ws, a, as); break;
    case 3: tile_nt(f, 3, n, nr, s, ldS, w, ws, a, as); break;
    default: tile_nt(f, 4, n, nr, s, ldS, w, ws, a, as); break;
    }
}

/* q4_0 x q8_0 tile: (qw - 8) . qa as qw . qa - 8 * sum(qa) on int16 pairs. */
void kvx_vec_dot_tile_q4_0_q8_0_avx2(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                     const void *w, size_t w_stride, const void *a,
                                     size_t a_stride)
{
    tile(TILE_Q4_0, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q4_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block. */
void kvx_vec_dot_tile_q4_1_q8_1_avx2(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                     const void *w, size_t w_stride, const void *a,
                                     size_t a_stride)
{
    tile(TILE_Q4_1, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_0 x q8_0 tile: (qw - 16) . qa as qw . qa - 16 * sum(qa) on int16 pairs, qw in 0..31. */
void kvx_vec_dot_tile_q5_0_q8_0_avx2(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                     const void *w, size_t w_stride, const void *a,
                                     size_t a_stride)
{
    tile(TILE_Q5_0, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block, qw in 0..31. */
void kvx_vec_dot_tile_q5_1_q8_1_avx2(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                     const void *w, size_t w_stride, const void *a,
                                     size_t a_stride)
{
    tile(TILE_Q5_1, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q8_0 x q8_0 tile: |qw| . (qa with qw's sign), each half widened alone. */
void kvx_vec_dot_tile_q8_0_q8_0_avx2(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                     const void *w, size_t w_stride, const void *a,
                                     size_t a_stride)
{
    tile(TILE_Q8_0, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* ================================ K-quants: dot products ================================== */

/* sum_g sc[g] * bsum[g] over the 16 groups, as 8 int32 lanes (sc given as 16 int16). */
static inline __m256i bsums_scaled(const struct kvx_block_q8_K *y, __m256i sc16)
{
    return _mm256_madd_epi16(loadu256(y->bsums), sc16);
}

/* s = sum_sb (dw*da) * sum_j (sc_j & 15) * dot_j - (dmin*da) * sum_j (sc_j >> 4) * bsum_j.
 * Blocks q2_K (84 B) x q8_K (292 B); quants 0..3 (int16 pairs <= 2*3*128), scales <= 15: both sums
 * int32 exact per super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q2_K_q8_K_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q2_K *x = w;
    const struct kvx_block_q8_K *y = a;
    const __m256i three = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        const uint8_t *sc = x[i].scales;
        __m128i s8 = loadu128(sc);
        __m256i mn16 =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(15)));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = loadu256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), three);
                int k = 8 * h + 2 * j;
                sumi = _mm256_add_epi32(
                    sumi, dot32_scaled(u, y[i].qs + 16 * k, sc[k] & 15, sc[k + 1] & 15));
            }
        }
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(da * f16_at(x[i].d)), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(da * f16_at(x[i].dmin)),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], mn16)), accm);
    }
    *s = hsum_ps(acc) - hsum_ps(accm);
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 4 * bsum_j), sc_j in -32..31, quants 0..7 (int16
 * pairs <= 2*7*128).  Blocks q3_K (110 B) x q8_K; int32 exact per super-block, fp32 across.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q3_K_q8_K_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q3_K *x = w;
    const struct kvx_block_q8_K *y = a;
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    int8_t sc[16];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q3_k_scales(x[i].scales, sc);
        __m256i hm = loadu256(x[i].hmask);
        /* the -4 offset: 4 * sum_j sc_j * bsum_j */
        __m256i sumi =
            _mm256_slli_epi32(bsums_scaled(&y[i], _mm256_cvtepi8_epi16(loadu128(sc))), 2);
        sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
        for (int h = 0; h < 2; h++) {
            __m256i q = loadu256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                __m256i lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), three);
                __m256i hi =
                    _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * h + j)), one);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                int k = 8 * h + 2 * j;
                sumi = _mm256_add_epi32(sumi, dot32_scaled(u, y[i].qs + 16 * k, sc[k], sc[k + 1]));
            }
        }
        float d = f16_at(x[i].d) * kvx_quant_load_f32(y[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* The 8 mins of a q4_K/q5_K super-block, each repeated for its two bsum groups, as int16. */
static inline __m256i q4_k_mins16(const uint8_t mn[8])
{
    __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    return _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m));
}

/* sum_j sc_j * dot_j of a q4_K/q5_K super-block; `qh` is the fifth-bit array (q5_K) or NULL. */
static inline __m256i q45_k_sumi(const uint8_t *qs, const uint8_t *qh, const int8_t *qa,
                                 const uint8_t sc[8])
{
    const __m256i low4 = _mm256_set1_epi8(15), bit4 = _mm256_set1_epi8(16);
    __m256i sumi = _mm256_setzero_si256();
    __m256i hb = qh ? loadu256(qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i q = loadu256(qs + 32 * c);
        __m256i lo = _mm256_and_si256(q, low4),
                hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        __m256i h = _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * c));
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
        sumi = _mm256_add_epi32(sumi, dot32_scaled(lo, qa + 64 * c, sc[2 * c], sc[2 * c]));
        sumi = _mm256_add_epi32(sumi,
                                dot32_scaled(hi, qa + 64 * c + 32, sc[2 * c + 1], sc[2 * c + 1]));
    }
    return sumi;
}

/* s = sum_sb (dw*da) * sum_j sc_j * dot_j - (dmin*da) * sum_g mn_{g/2} * bsum_g.  Blocks q4_K
 * (144 B) x q8_K; quants 0..15 (int16 pairs <= 2*15*128), 6-bit scales: int32 exact per
 * super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_K_q8_K_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q4_k_scales(x[i].scales, sc, mn);
        __m256i sumi = q45_k_sumi(x[i].qs, NULL, y[i].qs, sc);
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].d) * da), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].dmin) * da),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], q4_k_mins16(mn))), accm);
    }
    *s = hsum_ps(acc) - hsum_ps(accm);
}

/* As q4_K with quants 0..31 (int16 pairs <= 2*31*128).  Blocks q5_K (176 B) x q8_K; int32 exact
 * per super-block, fp32 across.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q5_K_q8_K_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_K *x = w;
    const struct kvx_block_q8_K *y = a;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    uint8_t sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        kvx_quant_q4_k_scales(x[i].scales, sc, mn);
        __m256i sumi = q45_k_sumi(x[i].qs, x[i].qh, y[i].qs, sc);
        float da = kvx_quant_load_f32(y[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].d) * da), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(x[i].dmin) * da),
                               _mm256_cvtepi32_ps(bsums_scaled(&y[i], q4_k_mins16(mn))), accm);
    }
    *s = hsum_ps(acc) - hsum_ps(accm);
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 32 * bsum_j), sc_j int8, quants 0..63 (int16 pairs
 * <= 2*63*128 < 2^15).  Blocks q6_K (210 B) x q8_K; int32 exact per super-block, fp32 across.
 * Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q6_K_q8_K_avx2(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q6_K *x = w;
    const struct kvx_block_q8_K *y = a;
    const __m256i low4 = _mm256_set1_epi8(15), three = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        kvx_quant_prefetch_span(&x[i], sizeof x[i]);
        const int8_t *sc = x[i].scales;
        __m256i sumi =
            _mm256_slli_epi32(bsums_scaled(&y[i], _mm256_cvtepi8_epi16(loadu128(sc))), 5);
        sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
        for (int h = 0; h < 2; h++) {
            __m256i ql[2] = {loadu256(x[i].ql + 64 * h), loadu256(x[i].ql + 64 * h + 32)};
            __m256i qh = loadu256(x[i].qh + 32 * h);
            for (int k = 0; k < 4; k++) {
                __m256i lo = _mm256_and_si256(
                    _mm256_srl_epi16(ql[k & 1], _mm_cvtsi32_si128(4 * (k >> 1))), low4);
                __m256i hi =
                    _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), three);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                int g = 8 * h + 2 * k;
                sumi = _mm256_add_epi32(sumi, dot32_scaled(u, y[i].qs + 16 * g, sc[g], sc[g + 1]));
            }
        }
        float d = f16_at(x[i].d) * kvx_quant_load_f32(y[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

/* ============================== activation quantizers ===================================== */

/* 4 x 8 int32 in -128..127 to 32 int8 in order. */
static inline __m256i pack_i32_i8(const __m256i q[4])
{
    __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* q = rne(x * 127/amax) of one 32-block (the q8_0/q8_1 rule of kvx_from_float_q8_0_scalar);
 * returns sum(q).  *d = amax / 127. */
static inline int q8_block(const float *x, int8_t *qs, float *d_out)
{
    __m256 v[4], amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, abs_ps(v[k]));
    }
    const float mx = hmax_ps(amax), d = mx / 127.0f;
    __m256 id = _mm256_set1_ps(mx != 0 ? 127.0f / mx : 0.0f);
    __m256i q[4], sum = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)); /* rounds half to even */
        sum = _mm256_add_epi32(sum, q[k]);
    }
    _mm256_storeu_si256((__m256i *)qs, pack_i32_i8(q));
    *d_out = d;
    return kvx_quant_hsum8_epi32(sum);
}

/* Bit-identical to kvx_from_float_q8_0_scalar . */
void kvx_from_float_q8_0_avx2(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        q8_block(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
    }
}

/* Bit-identical to kvx_from_float_q8_1_scalar . */
void kvx_from_float_q8_1_avx2(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        int sum = q8_block(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
        kvx_quant_store_f16(b->s, d * (float)sum);
    }
}

/* The element of largest magnitude of 256 (first on ties), given that magnitude. */
static inline float first_with_abs(const float *x, float amax)
{
    for (int c = 0; c < 32; c++) {
        int m = _mm256_movemask_ps(
            _mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + 8 * c)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
        if (m)
            return x[8 * c + __builtin_ctz((unsigned)m)];
    }
    return 0;
}

/* Bit-identical to kvx_from_float_q8_K_scalar: q = min(127, rne(x * (-127/max))) (vcvtps2dq
 * rounds to nearest even like ggml's nearest_int), d = 1/iscale, bsums of 16. */
void kvx_from_float_q8_K_avx2(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        __m256 amax = _mm256_setzero_ps();
        for (int c = 0; c < 32; c++)
            amax = _mm256_max_ps(amax, abs_ps(_mm256_loadu_ps(src + 8 * c)));
        float max = first_with_abs(src, hmax_ps(amax));
        if (max == 0) {
            memset(b, 0, sizeof *b);
            continue;
        }
        float iscale = -127.0f / max;
        __m256 is = _mm256_set1_ps(iscale);
        for (int g = 0; g < 8; g++) { /* 32 elements = 2 bsum groups */
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(src + 32 * g + 8 * k)));
                q[k] = _mm256_min_epi32(q[k], _mm256_set1_epi32(127));
            }
            _mm256_storeu_si256((__m256i *)(b->qs + 32 * g), pack_i32_i8(q));
            kvx_quant_store_i16(b->bsums + 4 * g,
                                (int16_t)kvx_quant_hsum8_epi32(_mm256_add_epi32(q[0], q[1])));
            kvx_quant_store_i16(b->bsums + 4 * g + 2,
                                (int16_t)kvx_quant_hsum8_epi32(_mm256_add_epi32(q[2], q[3])));
        }
        kvx_quant_store_f32(b->d, 1 / iscale);
    }
}
