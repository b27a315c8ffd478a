/* ops/quant_internal: the block layouts of the ggml formats and the prototypes of every kernel,
 * shared by the dispatch tables (quant.c) and the kernel files (quant_scalar.c, quant_avx2.c,
 * quant_avx512.c, quant_avx512vnni.c).  Internal to ops/; the public contract is ops/quant.h.
 *
 * Layouts are bit-compatible with ggml-common.h.  Every block struct is made of byte arrays
 * only, so its alignment is 1: a kernel may be handed blocks at any address (tensors in an
 * mmap'd GGUF file are aligned to nothing in particular) and reads the multi-byte fields with
 * the kvx_quant_load_* helpers below, which compile to plain unaligned loads.  Little-endian,
 * as GGUF is. */
#ifndef KVX_OPS_QUANT_INTERNAL_H
#define KVX_OPS_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/f16.h"
#include "ops/quant.h"

#define KVX_QK 32    /* elements per block of q4_0, q4_1, q5_0, q5_1, q8_0, q8_1 */
#define KVX_QK_K 256 /* elements per super-block of the K-quants and q8_K */

/* q4_0: x = d * (q - 8), q in 0..15; qs[j] holds element j (low nibble) and j + 16 (high). */
struct kvx_block_q4_0 {
    uint8_t d[2]; /* fp16 */
    uint8_t qs[16];
};
/* q4_1: x = d * q + m, q in 0..15; nibbles as q4_0. */
struct kvx_block_q4_1 {
    uint8_t d[2], m[2]; /* fp16 */
    uint8_t qs[16];
};
/* q5_0: x = d * (q - 16), q in 0..31; low 4 bits as q4_0, bit 4 of element j is bit j of qh. */
struct kvx_block_q5_0 {
    uint8_t d[2];
    uint8_t qh[4]; /* little-endian uint32 */
    uint8_t qs[16];
};
/* q5_1: x = d * q + m, q in 0..31; bits as q5_0. */
struct kvx_block_q5_1 {
    uint8_t d[2], m[2];
    uint8_t qh[4];
    uint8_t qs[16];
};
/* q8_0: x = d * q, q in -128..127 (the activation quantizer produces -127..127). */
struct kvx_block_q8_0 {
    uint8_t d[2];
    int8_t qs[32];
};
/* q8_1: x = d * q; s = fp16(d * sum(q)) lets q4_1/q5_1 apply their min with one multiply. */
struct kvx_block_q8_1 {
    uint8_t d[2], s[2];
    int8_t qs[32];
};
/* q2_K: 16 sub-blocks of 16; x = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3.
 * Element e = 128h + 32j + l (h < 2, j < 4, l < 32): q = (qs[32h + l] >> 2j) & 3,
 * sc = scales[8h + 2j + l / 16]. */
struct kvx_block_q2_K {
    uint8_t scales[16];
    uint8_t qs[64];
    uint8_t d[2], dmin[2];
};
/* q3_K: 16 sub-blocks of 16; x = d * (sc - 32) * (q - 4), q in 0..7 (q3 = 2 low bits as q2_K,
 * bit 2 of element 128h + 32j + l is bit 4h + j of hmask[l]); sc are 6-bit, packed as
 * kvx_quant_q3_k_scales unpacks them. */
struct kvx_block_q3_K {
    uint8_t hmask[32];
    uint8_t qs[64];
    uint8_t scales[12];
    uint8_t d[2];
};
/* q4_K: 8 sub-blocks of 32; x = d * sc * q - dmin * m, q in 0..15, 6-bit sc/m packed in 12
 * bytes (kvx_quant_q4_k_scales).  Element 64c + l (l < 32) is qs[32c + l] & 15, element
 * 64c + 32 + l is qs[32c + l] >> 4; sub-block = element / 32. */
struct kvx_block_q4_K {
    uint8_t d[2], dmin[2];
    uint8_t scales[12];
    uint8_t qs[128];
};
/* q5_K: as q4_K with a fifth bit: element 64c + l takes bit 2c of qh[l], element 64c + 32 + l
 * bit 2c + 1; q in 0..31. */
struct kvx_block_q5_K {
    uint8_t d[2], dmin[2];
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
};
/* q6_K: 16 sub-blocks of 16; x = d * sc * (q - 32), q in 0..63, sc int8.  For half h and l < 32:
 * element 128h + 32k + l has low bits (ql[64h + l + 32(k & 1)] >> 4(k >> 1)) & 15 and high
 * bits (qh[32h + l] >> 2k) & 3; sub-block = element / 16. */
struct kvx_block_q6_K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint8_t d[2];
};
/* q8_K: x = d * q with d fp32; bsums[g] = sum of q over elements 16g .. 16g + 15 (int16). */
struct kvx_block_q8_K {
    uint8_t d[4];
    int8_t qs[256];
    uint8_t bsums[32];
};

_Static_assert(sizeof(struct kvx_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct kvx_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct kvx_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(struct kvx_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(struct kvx_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct kvx_block_q8_1) == 36, "q8_1 block");
_Static_assert(sizeof(struct kvx_block_q2_K) == 84, "q2_K block");
_Static_assert(sizeof(struct kvx_block_q3_K) == 110, "q3_K block");
_Static_assert(sizeof(struct kvx_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(struct kvx_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(struct kvx_block_q6_K) == 210, "q6_K block");
_Static_assert(sizeof(struct kvx_block_q8_K) == 292, "q8_K block");
_Static_assert(_Alignof(struct kvx_block_q8_K) == 1, "blocks are byte arrays");

/* ---- field access (any alignment) ---- */

static inline uint16_t kvx_quant_load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t kvx_quant_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline float kvx_quant_load_f16(const uint8_t *p)
{
    return kvx_f16_to_f32(kvx_quant_load_u16(p));
}
static inline float kvx_quant_load_f32(const uint8_t *p)
{
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void kvx_quant_store_f16(uint8_t *p, float v)
{
    uint16_t h = kvx_f32_to_f16(v);
    memcpy(p, &h, sizeof h);
}
static inline void kvx_quant_store_f32(uint8_t *p, float v) { memcpy(p, &v, sizeof v); }
static inline int16_t kvx_quant_load_i16(const uint8_t *p)
{
    int16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void kvx_quant_store_i16(uint8_t *p, int16_t v) { memcpy(p, &v, sizeof v); }

/* How far ahead of the weight stream the SIMD vec_dot kernels prefetch.  Rows are short (576
 * elements of q4_1 are 360 bytes) and a matmul walks them in order, so the prefetch runs into
 * the following rows; a page ahead measured best for single-thread streaming (quant_bench_*). */
#define KVX_QUANT_PREFETCH_BYTES 4096

/* Prefetch the line KVX_QUANT_PREFETCH_BYTES past p (a hint: never faults). */
static inline void kvx_quant_prefetch(const void *p)
{
    __builtin_prefetch((const void *)((uintptr_t)p + KVX_QUANT_PREFETCH_BYTES), 0, 3);
}

/* kvx_quant_prefetch for each line of the `bytes` at p (one K-quant super-block). */
static inline void kvx_quant_prefetch_span(const void *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        kvx_quant_prefetch((const uint8_t *)p + o);
}

/* Round to nearest, ties to even, for |f| < 2^22 (ggml's nearest_int): adding 1.5 * 2^23 leaves
 * the rounded integer in the low mantissa bits. */
static inline int kvx_quant_nearest_int(float f)
{
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* q4_K / q5_K: the 8 6-bit scales and 8 6-bit mins.  Sub-blocks 0..3 keep theirs in the low 6
 * bits of bytes 0..3 (scale) and 4..7 (min); sub-blocks 4..7 keep the low 4 bits in bytes
 * 8..11 (scale low nibble, min high nibble) and the top 2 bits in the top 2 bits of bytes
 * 0..3 (scale) and 4..7 (min). */
static inline void kvx_quant_q4_k_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* q3_K: the 16 6-bit scales minus 32.  Scale j keeps its low 4 bits in the low (j < 8) or high
 * (j >= 8) nibble of byte j % 8 and its top 2 bits at bit 2(j / 4) of byte 8 + j % 4. */
static inline void kvx_quant_q3_k_scales(const uint8_t s[12], int8_t sc[16])
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* ---- kernels: kvx_to_float_<fmt>_<isa>, kvx_from_float_<fmt>_<isa>,
 *      kvx_vec_dot_<fmt>_<vec-dot fmt>_<isa> (signatures of struct kvx_quant_kernels) ---- */

#define KVX_QUANT_TO_FLOAT(name) void name(const void *src, float *dst, int64_t n)
#define KVX_QUANT_FROM_FLOAT(name) void name(const float *src, void *dst, int64_t n)
#define KVX_QUANT_VEC_DOT(name) void name(int64_t n, float *s, const void *w, const void *a)

/* scalar: the specification */
KVX_QUANT_TO_FLOAT(kvx_to_float_f32_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_f16_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_bf16_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q4_0_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q4_1_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q5_0_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q5_1_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q8_0_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q8_1_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q2_K_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q3_K_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q4_K_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q5_K_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q6_K_scalar);
KVX_QUANT_TO_FLOAT(kvx_to_float_q8_K_scalar);

KVX_QUANT_FROM_FLOAT(kvx_from_float_f32_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_f16_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_bf16_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q4_0_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q4_1_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q5_0_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q5_1_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_0_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_1_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q2_K_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q3_K_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q4_K_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q5_K_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q6_K_scalar);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_K_scalar);

KVX_QUANT_VEC_DOT(kvx_vec_dot_f32_f32_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_f16_f16_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_bf16_bf16_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_0_q8_0_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_1_q8_1_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_0_q8_0_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_1_q8_1_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_0_q8_0_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_1_q8_1_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q2_K_q8_K_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q3_K_q8_K_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_K_q8_K_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_K_q8_K_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q6_K_q8_K_scalar);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_K_q8_K_scalar);

/* AVX2 + FMA + F16C (quant_avx2.c) */
KVX_QUANT_TO_FLOAT(kvx_to_float_f16_avx2);
KVX_QUANT_FROM_FLOAT(kvx_from_float_f16_avx2);
KVX_QUANT_FROM_FLOAT(kvx_from_float_bf16_avx2);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_0_avx2);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_1_avx2);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_K_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_f32_f32_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_f16_f16_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_bf16_bf16_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_0_q8_0_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_1_q8_1_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_0_q8_0_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_1_q8_1_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_0_q8_0_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q2_K_q8_K_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q3_K_q8_K_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_K_q8_K_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_K_q8_K_avx2);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q6_K_q8_K_avx2);

/* AVX-512 F/BW/DQ/VL (quant_avx512.c) */
KVX_QUANT_TO_FLOAT(kvx_to_float_f16_avx512);
KVX_QUANT_FROM_FLOAT(kvx_from_float_f16_avx512);
KVX_QUANT_FROM_FLOAT(kvx_from_float_bf16_avx512);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_0_avx512);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_1_avx512);
KVX_QUANT_FROM_FLOAT(kvx_from_float_q8_K_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_f32_f32_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_f16_f16_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_bf16_bf16_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_0_q8_0_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_1_q8_1_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_0_q8_0_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_1_q8_1_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_0_q8_0_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q2_K_q8_K_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q3_K_q8_K_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_K_q8_K_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_K_q8_K_avx512);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q6_K_q8_K_avx512);

/* AVX-512 + VNNI (quant_avx512vnni.c) */
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_0_q8_0_avx512vnni);

/* The AVX-512 table without the VNNI kernels, whatever the CPU has (tests and benchmarks use it
 * to exercise both variants); NULL if `t` is unsupported.  Same contract as kvx_quant_kernels. */
const struct kvx_quant_kernels *kvx_quant_kernels_avx512_novnni(enum kvx_dtype t);

/* ===================== AVX-512 rows of the 32-element formats (q4_0 .. q8_0) ==================
 *
 * Shared by quant_avx512.c and quant_avx512vnni.c, which differ only in how u8 x s8 products
 * are summed to int32 (vpmaddubsw + vpmaddwd, or vpdpbusd: the `vnni` argument, a constant at
 * every call site).  Compiled only where the including file has the AVX-512 flags.
 *
 * Two blocks per zmm: bytes 0..31 are block i, bytes 32..63 block i + 1, and the fp32 scale
 * vector carries (dw*da) of block i in lanes 0..7 and of block i + 1 in lanes 8..15.  Rows go
 * four blocks at a time so that one vcvtph2ps widens the scales of all four: with the weights in
 * cache, widening the fp16 scales costs about as much as the integer dot itself.  The weights
 * are prefetched KVX_QUANT_PREFETCH_BYTES ahead (that doubles single-thread streaming here). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) &&                      \
    defined(__AVX512VL__) && defined(__F16C__)
#include <immintrin.h>
#include <stdbool.h>

/* Two q4 blocks' quants as 64 bytes in element order: [qs0 lo, qs0 hi, qs1 lo, qs1 hi]. */
static inline __m512i kvx_quant512_q4_pair(const uint8_t *qs0, const uint8_t *qs1)
{
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qs0));
    v = _mm512_mask_broadcast_i32x4(v, 0xff00, _mm_loadu_si128((const __m128i *)qs1));
    v = _mm512_mask_srli_epi16(v, 0xff00ff00, v, 4);
    return _mm512_and_si512(v, _mm512_set1_epi8(15));
}

/* q4_pair plus 16 in every byte whose bit is set in qh0 (bytes 0..31) or qh1 (32..63). */
static inline __m512i kvx_quant512_q5_pair(const uint8_t *qs0, const uint8_t *qh0,
                                           const uint8_t *qs1, const uint8_t *qh1)
{
    __mmask64 hi = (__mmask64)kvx_quant_load_u32(qh0) | ((__mmask64)kvx_quant_load_u32(qh1) << 32);
    __m512i q = kvx_quant512_q4_pair(qs0, qs1);
    return _mm512_mask_add_epi8(q, hi, q, _mm512_set1_epi8(16));
}

/* The 32 int8 at a and the 32 at b (two), or those at a and zeros (the odd last block). */
static inline __m512i kvx_quant512_i8_pair(const int8_t *a, const int8_t *b, bool two)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)a);
    if (!two)
        return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)b),
                              1);
}

/* Sum of u*s over each 4 bytes (u unsigned, s signed) as int32.  Without VNNI the products go
 * through int16 pairs, which the callers keep below 2^15 (|u| <= 128, |s| <= 127). */
static inline __m512i kvx_quant512_dot(__m512i u, __m512i s, bool vnni)
{
#if defined(__AVX512VNNI__)
    if (vnni)
        return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
    (void)vnni;
#endif
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

/* (u - off) . s over each 4 bytes as int32, u <= 31, off <= 16: without VNNI the difference is
 * taken on the int16 pairs (<= 2*31*128 and 2*16*128 in magnitude, no saturation). */
static inline __m512i kvx_quant512_offset_dot(__m512i u, int off, __m512i s, bool vnni)
{
    __m512i o = _mm512_set1_epi8((char)off);
#if defined(__AVX512VNNI__)
    if (vnni)
        return _mm512_sub_epi32(kvx_quant512_dot(u, s, true), kvx_quant512_dot(o, s, true));
#else
    (void)vnni;
#endif
    __m512i p = _mm512_sub_epi16(_mm512_maddubs_epi16(u, s), _mm512_maddubs_epi16(o, s));
    return _mm512_madd_epi16(p, _mm512_set1_epi16(1));
}

/* The int32 lanes of blocks x[0], x[1] (or x[0] alone) against y[0], y[1], before scaling.
 * q8_0 . q8_0 multiplies |qw| by qa with qw's sign, as ggml does: exact when qa != -128, which
 * the q8_0 quantizer guarantees. */
static inline __m512i kvx_quant512_q4_0(const void *w, const void *a, bool two, bool vnni)
{
    const struct kvx_block_q4_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m512i qa = kvx_quant512_i8_pair(y[0].qs, y[two].qs, two);
    return kvx_quant512_offset_dot(kvx_quant512_q4_pair(x[0].qs, x[two].qs), 8, qa, vnni);
}
static inline __m512i kvx_quant512_q4_1(const void *w, const void *a, bool two, bool vnni)
{
    const struct kvx_block_q4_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    __m512i qa = kvx_quant512_i8_pair(y[0].qs, y[two].qs, two);
    return kvx_quant512_dot(kvx_quant512_q4_pair(x[0].qs, x[two].qs), qa, vnni);
}
static inline __m512i kvx_quant512_q5_0(const void *w, const void *a, bool two, bool vnni)
{
    const struct kvx_block_q5_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m512i qa = kvx_quant512_i8_pair(y[0].qs, y[two].qs, two);
    __m512i qw = kvx_quant512_q5_pair(x[0].qs, x[0].qh, x[two].qs, x[two].qh);
    return kvx_quant512_offset_dot(qw, 16, qa, vnni);
}
static inline __m512i kvx_quant512_q5_1(const void *w, const void *a, bool two, bool vnni)
{
    const struct kvx_block_q5_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    __m512i qa = kvx_quant512_i8_pair(y[0].qs, y[two].qs, two);
    __m512i qw = kvx_quant512_q5_pair(x[0].qs, x[0].qh, x[two].qs, x[two].qh);
    return kvx_quant512_dot(qw, qa, vnni);
}
static inline __m512i kvx_quant512_q8_0(const void *w, const void *a, bool two, bool vnni)
{
    const struct kvx_block_q8_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    __m512i qw = kvx_quant512_i8_pair(x[0].qs, x[two].qs, two);
    __m512i qa = kvx_quant512_i8_pair(y[0].qs, y[two].qs, two);
    __m512i sa = _mm512_mask_sub_epi8(qa, _mm512_movepi8_mask(qw), _mm512_setzero_si512(), qa);
    return kvx_quant512_dot(_mm512_abs_epi8(qw), sa, vnni);
}

/* Every 32-element block starts with its fp16 d, then m (q4_1, q5_1) or s (q8_1) or quants.
 * [dw*da, mw*sa, -, -] of one block pair (the 16-byte load folds into vcvtph2ps; lanes 2 and 3
 * are never used). */
static inline __m128 kvx_quant512_heads(const void *w, const void *a)
{
    __m128 hw = _mm256_castps256_ps128(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w)));
    __m128 ha = _mm256_castps256_ps128(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)a)));
    return _mm_mul_ps(hw, ha);
}

/* The same for four blocks (strides ws, as bytes): lanes 2k, 2k + 1 = dw*da, mw*sa of block k. */
static inline __m256 kvx_quant512_quad_heads(const uint8_t *w, size_t ws, const uint8_t *a,
                                             size_t as)
{
    __m128i hw = _mm_cvtsi32_si128((int)kvx_quant_load_u32(w));
    __m128i ha = _mm_cvtsi32_si128((int)kvx_quant_load_u32(a));
    hw = _mm_insert_epi32(hw, (int)kvx_quant_load_u32(w + ws), 1);
    ha = _mm_insert_epi32(ha, (int)kvx_quant_load_u32(a + as), 1);
    hw = _mm_insert_epi32(hw, (int)kvx_quant_load_u32(w + 2 * ws), 2);
    ha = _mm_insert_epi32(ha, (int)kvx_quant_load_u32(a + 2 * as), 2);
    hw = _mm_insert_epi32(hw, (int)kvx_quant_load_u32(w + 3 * ws), 3);
    ha = _mm_insert_epi32(ha, (int)kvx_quant_load_u32(a + 3 * as), 3);
    return _mm256_mul_ps(_mm256_cvtph_ps(hw), _mm256_cvtph_ps(ha));
}

/* Scale vector of a pair from heads: lanes 0..7 = lane i of h, lanes 8..15 = lane j of h. */
static inline __m512 kvx_quant512_scales(__m512 h, int i, int j)
{
    __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(i), _mm256_set1_epi32(j), 1);
    return _mm512_permutexvar_ps(idx, h);
}

/* The int32 lanes of one or two blocks of a format (kvx_quant512_q4_0 ...). */
typedef __m512i (*kvx_quant512_dot_fn)(const void *w, const void *a, bool two, bool vnni);

/* s = sum_b (dw*da)_b * dot_b (+ sum_b mw_b * sa_b when `min`, q4_1 and q5_1) over a row of n
 * elements in blocks of wbytes (weights) and abytes (activations).  int32 exact within a block,
 * fp32 across blocks.  Always inlined, so that `dot`, `min` and `vnni` are constants. */
static inline __attribute__((always_inline)) float
kvx_quant512_row(int64_t n, const void *w, size_t wbytes, const void *a, size_t abytes,
                 kvx_quant512_dot_fn dot, bool min, bool vnni)
{
    const uint8_t *x = w, *y = a;
    int64_t nb = n / KVX_QK, i = 0;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m256 mq = _mm256_setzero_ps();
    __m128 mt = _mm_setzero_ps();
    for (; i + 3 < nb; i += 4) {
        const uint8_t *xi = x + (size_t)i * wbytes, *yi = y + (size_t)i * abytes;
        kvx_quant_prefetch(xi);
        kvx_quant_prefetch(xi + 2 * wbytes);
        __m256 h = kvx_quant512_quad_heads(xi, wbytes, yi, abytes);
        mq = _mm256_add_ps(mq, h);
        __m512 hz = _mm512_castps256_ps512(h);
        __m512i p0 = dot(xi, yi, true, vnni),
                p1 = dot(xi + 2 * wbytes, yi + 2 * abytes, true, vnni);
        acc0 = _mm512_fmadd_ps(kvx_quant512_scales(hz, 0, 2), _mm512_cvtepi32_ps(p0), acc0);
        acc1 = _mm512_fmadd_ps(kvx_quant512_scales(hz, 4, 6), _mm512_cvtepi32_ps(p1), acc1);
    }
    for (; i < nb; i += 2) { /* the last 1..3 blocks */
        const uint8_t *xi = x + (size_t)i * wbytes, *yi = y + (size_t)i * abytes;
        bool two = i + 1 < nb;
        __m128 h0 = kvx_quant512_heads(xi, yi);
        __m128 h1 = two ? kvx_quant512_heads(xi + wbytes, yi + abytes) : _mm_setzero_ps();
        mt = _mm_add_ps(mt, _mm_add_ps(h0, h1));
        __m512 d = _mm512_permutex2var_ps(
            _mm512_castps128_ps512(h0),
            _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(16), 1),
            _mm512_castps128_ps512(h1));
        acc0 = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot(xi, yi, two, vnni)), acc0);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (min) { /* the odd lanes of mq, lane 1 of mt */
        __m128 m = _mm_add_ps(_mm256_castps256_ps128(mq), _mm256_extractf128_ps(mq, 1));
        m = _mm_add_ps(_mm_add_ps(m, _mm_movehl_ps(m, m)), mt);
        sum += _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1));
    }
    return sum;
}
#endif /* AVX-512 */

#endif
