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
#define KVX_QUANT_VEC_DOT_TILE(name)                                                               \
    void name(int64_t n, int nr, int nc, float *s, int64_t ldS, const void *w, size_t w_stride,   \
              const void *a, size_t a_stride)

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

/* vec_dot_tile of every format: the loop over vec_dot (r, c) that defines the tile. */
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_f32_f32_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_f16_f16_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_bf16_bf16_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_0_q8_0_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_1_q8_1_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_0_q8_0_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_1_q8_1_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_0_q8_0_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_1_q8_1_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q2_K_q8_K_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q3_K_q8_K_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_K_q8_K_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_K_q8_K_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q6_K_q8_K_scalar);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_K_q8_K_scalar);

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
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_0_q8_0_avx2);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_1_q8_1_avx2);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_0_q8_0_avx2);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_1_q8_1_avx2);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_0_q8_0_avx2);

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
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_0_q8_0_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_1_q8_1_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_0_q8_0_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_1_q8_1_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_0_q8_0_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_K_q8_K_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_K_q8_K_avx512);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q6_K_q8_K_avx512);

/* AVX-512 + VNNI (quant_avx512vnni.c) */
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q4_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q5_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT(kvx_vec_dot_q8_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_1_q8_1_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q8_0_q8_0_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q4_K_q8_K_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q5_K_q8_K_avx512vnni);
KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_q6_K_q8_K_avx512vnni);

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
#if defined(__AVX2__)
#include <immintrin.h>

/* The sum of the 8 int32 lanes of v (files compiled with the AVX2 or AVX-512 flags). */
static inline int32_t kvx_quant_hsum8_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
#endif

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

/* ================ AVX-512 register tiles of the 32-element formats (vec_dot_tile) ============
 *
 * Shared by quant_avx512.c (vnni = false) and quant_avx512vnni.c (vnni = true).  A tile is 4
 * weight rows x up to 4 tokens.  For one block, the 4 rows sit in one zmm, row r in 128-bit
 * lane r (16 elements: the block's elements 0..15 in one register, 16..31 in another), and a
 * token's 16 activations are broadcast to all four lanes (a plain load), so one u8 x s8 dot
 * makes the int32 sums of 4 (row, token) pairs: lane 4r + j of token c's sum belongs to row r.
 * Each weight block is unpacked once for all tokens and each activation block loaded once for
 * the 4 rows; a block costs, per token, 2 dots, one int32 -> fp32 conversion, one multiply by
 * the scales and one FMA.
 *
 * Scales come four blocks at a time: a vpermt2w picks the fp16 d (and m or s) of four blocks of
 * two rows or two tokens and one vcvtph2ps widens them; per block, one vpermt2ps spreads the 4
 * rows' dw to their lanes, and the tokens' da are broadcast from a small stack copy (a load,
 * not a shuffle).  q4_1 / q5_1 add mw * sa per block: one FMA per token per 4 blocks, row r's
 * mw of block j times token c's sa of block j in lane 4r + j, into accumulators of their own
 * that are added at the end, as vec_dot sums them apart.  Offsets are applied in int32:
 * (q - o) . a = q . a - o * sum(a) with o * sum(a) per token (q4_0: 8, q5_0: 16, q8_0 with VNNI:
 * its weights biased by 128 into u8, exact for any int8).  Without VNNI, q8_0 uses the sign
 * trick of kvx_quant512_q8_0 (exact when qa != -128).
 *
 * Port 0/5 micro-ops bound the loop (the loads are broadcasts and cost nothing there): about 32
 * per q4_1 block for 16 (row, token) pairs with VNNI, against 40 for a layout of 2 rows x 2
 * tokens per zmm that was tried first (each row pair and token pair then needs a merge).  On
 * one core here: 65-75 GMAC/s for q4_1 (3x the vec_dot loop), about 50 for q8_0. */

/* The loops over tokens and blocks have constant trip counts; unrolled, the accumulators live
 * in registers instead of stack arrays. */
#define KVX_QUANT512_UNROLL _Pragma("GCC unroll 4")

enum kvx_quant512_fmt {
    KVX_QUANT512_Q4_0,
    KVX_QUANT512_Q4_1,
    KVX_QUANT512_Q5_0,
    KVX_QUANT512_Q5_1,
    KVX_QUANT512_Q8_0,
};

static inline size_t kvx_quant512_wbytes(enum kvx_quant512_fmt f)
{
    static const size_t b[] = {sizeof(struct kvx_block_q4_0), sizeof(struct kvx_block_q4_1),
                               sizeof(struct kvx_block_q5_0), sizeof(struct kvx_block_q5_1),
                               sizeof(struct kvx_block_q8_0)};
    return b[f];
}
/* q4_1 and q5_1 take q8_1 activations (and add mw * sa per block); the others q8_0. */
static inline bool kvx_quant512_has_min(enum kvx_quant512_fmt f)
{
    return f == KVX_QUANT512_Q4_1 || f == KVX_QUANT512_Q5_1;
}
/* q4_0, q5_0 and (with VNNI) q8_0 subtract o * sum(a) per token. */
static inline bool kvx_quant512_has_offset(enum kvx_quant512_fmt f, bool vnni)
{
    return f == KVX_QUANT512_Q4_0 || f == KVX_QUANT512_Q5_0 || (f == KVX_QUANT512_Q8_0 && vnni);
}

/* 16 bytes at x[r] + off into 128-bit lane r, r < 4. */
static inline __m512i kvx_quant512_rows4(const uint8_t *const x[4], size_t off)
{
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(x[0] + off)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(x[1] + off)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(x[2] + off)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(x[3] + off)), 3);
}

/* One block of 4 rows (weights) or one token (activations): elements 0..15 in lo, 16..31 in
 * hi.  Weights are u8 (q4/q5 quants, q8_0 + 128 with VNNI, |q8_0| without, signs in klo/khi). */
struct kvx_quant512_halves {
    __m512i lo, hi;
    __mmask64 klo, khi;
};

static inline __attribute__((always_inline)) struct kvx_quant512_halves
kvx_quant512_tile_weights(enum kvx_quant512_fmt f, const uint8_t *const x[4], size_t off,
                          bool vnni)
{
    struct kvx_quant512_halves h = {0};
    if (f == KVX_QUANT512_Q8_0) {
        h.lo = kvx_quant512_rows4(x, off + 2);
        h.hi = kvx_quant512_rows4(x, off + 18);
        if (vnni) {
            h.lo = _mm512_xor_si512(h.lo, _mm512_set1_epi8((char)0x80));
            h.hi = _mm512_xor_si512(h.hi, _mm512_set1_epi8((char)0x80));
        } else {
            h.klo = _mm512_movepi8_mask(h.lo);
            h.khi = _mm512_movepi8_mask(h.hi);
            h.lo = _mm512_abs_epi8(h.lo);
            h.hi = _mm512_abs_epi8(h.hi);
        }
        return h;
    }
    const bool q5 = f == KVX_QUANT512_Q5_0 || f == KVX_QUANT512_Q5_1;
    const size_t head = f == KVX_QUANT512_Q4_0 || f == KVX_QUANT512_Q5_0 ? 2 : 4;
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i v = kvx_quant512_rows4(x, off + head + (q5 ? 4 : 0));
    h.lo = _mm512_and_si512(v, m4);
    h.hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (q5) { /* bit 4 of element j is bit j of qh: 0..15 go with lo, 16..31 with hi */
        uint64_t lo = 0, hi = 0;
        for (int r = 0; r < 4; r++) {
            lo |= (uint64_t)kvx_quant_load_u16(x[r] + off + head) << (16 * r);
            hi |= (uint64_t)kvx_quant_load_u16(x[r] + off + head + 2) << (16 * r);
        }
        const __m512i b4 = _mm512_set1_epi8(16);
        h.lo = _mm512_mask_add_epi8(h.lo, (__mmask64)lo, h.lo, b4);
        h.hi = _mm512_mask_add_epi8(h.hi, (__mmask64)hi, h.hi, b4);
    }
    return h;
}

/* The bytes at p of which the first `bytes` may be read (masked load beyond). */
static inline __m512i kvx_quant512_load_upto(const uint8_t *p, size_t bytes)
{
    if (bytes >= 64)
        return _mm512_loadu_si512(p);
    return _mm512_maskz_loadu_epi8(bytes ? ~0ull >> (64 - bytes) : 0, p);
}

/* fp32 [d_0, d_1, d_2, d_3, f_0, f_1, f_2, f_3] of blocks 0..3 at p0 (lanes 0..7) and p1 (lanes
 * 8..15), blocks of bs bytes starting with fp16 d and f (q4_1/q5_1: m, q8_1: s, others: whatever
 * follows d, never used); only kb blocks are read, the lanes of the others are 0. */
static inline __attribute__((always_inline)) __m512 kvx_quant512_tile_heads(const uint8_t *p0,
                                                                           const uint8_t *p1,
                                                                           size_t bs, int kb)
{
    const size_t bytes = (size_t)kb * bs;
    const int w = (int)(bs / 2); /* words per block */
    if (3 * bs + 4 <= 64) {      /* every head in the first 64 bytes: one permute for the pair */
        __m512i idx = _mm512_set_epi16(
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32 + 3 * w + 1, 32 + 2 * w + 1,
            32 + w + 1, 33, 32 + 3 * w, 32 + 2 * w, 32 + w, 32, 3 * w + 1, 2 * w + 1, w + 1, 1,
            3 * w, 2 * w, w, 0);
        __m512i t = _mm512_permutex2var_epi16(kvx_quant512_load_upto(p0, bytes), idx,
                                              kvx_quant512_load_upto(p1, bytes));
        return _mm512_cvtph_ps(_mm512_castsi512_si256(t));
    }
    __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3 * w + 1,
                                   2 * w + 1, w + 1, 1, 3 * w, 2 * w, w, 0, 3 * w + 1, 2 * w + 1,
                                   w + 1, 1, 3 * w, 2 * w, w, 0);
    const size_t hb = bytes > 64 ? bytes - 64 : 0;
    __m512i t0 = _mm512_permutex2var_epi16(kvx_quant512_load_upto(p0, bytes), idx,
                                           kvx_quant512_load_upto(p0 + 64, hb));
    __m512i t1 = _mm512_permutex2var_epi16(kvx_quant512_load_upto(p1, bytes), idx,
                                           kvx_quant512_load_upto(p1 + 64, hb));
    __m512i t = _mm512_mask_blend_epi16(0xff00, t0, t1);
    return _mm512_cvtph_ps(_mm512_castsi512_si256(t));
}

/* The offset term of a token: VNNI: -o * sum(a) per int32 lane (the dot's start value); else
 * o * sum(a) per int16 pair (|.| <= 4*16*127). */
static inline __attribute__((always_inline)) __m512i
kvx_quant512_tile_corr(enum kvx_quant512_fmt f, __m512i alo, __m512i ahi, bool vnni)
{
    const int o = f == KVX_QUANT512_Q4_0 ? 8 : f == KVX_QUANT512_Q5_0 ? 16 : 128;
    const __m512i ov = _mm512_set1_epi8((char)o);
#if defined(__AVX512VNNI__)
    if (vnni) {
        __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ov, alo);
        c = _mm512_dpbusd_epi32(c, ov, ahi);
        return _mm512_sub_epi32(_mm512_setzero_si512(), c);
    }
#else
    (void)vnni;
#endif
    return _mm512_add_epi16(_mm512_maddubs_epi16(ov, alo), _mm512_maddubs_epi16(ov, ahi));
}

/* int32 sums of the 4 rows against one token (row r in lane 4r + j). */
static inline __attribute__((always_inline)) __m512i
kvx_quant512_tile_dot(enum kvx_quant512_fmt f, const struct kvx_quant512_halves *wv, __m512i alo,
                      __m512i ahi, bool vnni)
{
    const bool off = kvx_quant512_has_offset(f, vnni);
    const __m512i corr = off ? kvx_quant512_tile_corr(f, alo, ahi, vnni) : _mm512_setzero_si512();
#if defined(__AVX512VNNI__)
    if (vnni)
        return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(corr, wv->lo, alo), wv->hi, ahi);
#endif
    const __m512i ones = _mm512_set1_epi16(1);
    if (f == KVX_QUANT512_Q8_0) { /* pairs of |qw| * +-qa fill int16: widen each half alone */
        __m512i z = _mm512_setzero_si512();
        __m512i slo = _mm512_mask_sub_epi8(alo, wv->klo, z, alo);
        __m512i shi = _mm512_mask_sub_epi8(ahi, wv->khi, z, ahi);
        return _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(wv->lo, slo), ones),
                                _mm512_madd_epi16(_mm512_maddubs_epi16(wv->hi, shi), ones));
    }
    /* q4/q5: int16 pairs <= 2*31*127, two of them and the offset sum stay inside int16 */
    __m512i p =
        _mm512_add_epi16(_mm512_maddubs_epi16(wv->lo, alo), _mm512_maddubs_epi16(wv->hi, ahi));
    if (off)
        p = _mm512_sub_epi16(p, corr);
    return _mm512_madd_epi16(p, ones);
}

/* kb (1..4) blocks from block i on, for nt tokens, into acc[c]. */
static inline __attribute__((always_inline)) void
kvx_quant512_tile_quad(enum kvx_quant512_fmt f, int nt, bool vnni, const uint8_t *const xr[4],
                       const uint8_t *const yc[4], int64_t i, int kb, __m512 acc[4],
                       __m512 macc[4])
{
    const size_t wb = kvx_quant512_wbytes(f);
    const size_t ab = kvx_quant512_has_min(f) ? sizeof(struct kvx_block_q8_1)
                                              : sizeof(struct kvx_block_q8_0);
    const size_t aqs = kvx_quant512_has_min(f) ? 4 : 2;
    const size_t ow = (size_t)i * wb, oa = (size_t)i * ab;
    /* rows: [d_0..d_3, f_0..f_3] of rows 0, 1 and of rows 2, 3; tokens the same, kept in memory
     * so that each scale is a broadcast load */
    const __m512 h01 = kvx_quant512_tile_heads(xr[0] + ow, xr[1] + ow, wb, kb);
    const __m512 h23 = kvx_quant512_tile_heads(xr[2] + ow, xr[3] + ow, wb, kb);
    _Alignas(64) float ht[32];
    _mm512_store_ps(ht, kvx_quant512_tile_heads(yc[0] + oa, yc[1] + oa, ab, kb));
    if (nt > 2)
        _mm512_store_ps(ht + 16, kvx_quant512_tile_heads(yc[2] + oa, yc[3] + oa, ab, kb));
    /* ht escapes into an empty asm that may write it: each scale is then read back as a
     * broadcast load, not a register shuffle (the loads are free, the shuffle port is not) */
    __asm__ volatile("" : : "r"(ht) : "memory");
    if (kvx_quant512_has_min(f)) { /* lane 4r + j += mw_r * sa_c of block j */
        const __m512 mw = _mm512_permutex2var_ps(
            h01, _mm512_set_epi32(31, 30, 29, 28, 23, 22, 21, 20, 15, 14, 13, 12, 7, 6, 5, 4),
            h23);
        KVX_QUANT512_UNROLL
        for (int c = 0; c < nt; c++)
            macc[c] = _mm512_fmadd_ps(mw, _mm512_broadcast_f32x4(_mm_load_ps(ht + 8 * c + 4)),
                                      macc[c]);
    }
    KVX_QUANT512_UNROLL
    for (int k = 0; k < kb; k++) {
        const size_t owk = ow + (size_t)k * wb, oak = oa + (size_t)k * ab + aqs;
        const struct kvx_quant512_halves wv = kvx_quant512_tile_weights(f, xr, owk, vnni);
        /* dw of block k for row r in lanes 4r..4r+3 */
        const __m512 dw = _mm512_permutex2var_ps(
            h01,
            _mm512_add_epi32(
                _mm512_set_epi32(24, 24, 24, 24, 16, 16, 16, 16, 8, 8, 8, 8, 0, 0, 0, 0),
                _mm512_set1_epi32(k)),
            h23);
        KVX_QUANT512_UNROLL
        for (int c = 0; c < nt; c++) {
            const __m512i alo =
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yc[c] + oak)));
            const __m512i ahi =
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yc[c] + oak + 16)));
            const __m512i d = kvx_quant512_tile_dot(f, &wv, alo, ahi, vnni);
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(ht[8 * c + k]));
            acc[c] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(d), acc[c]);
        }
    }
}

/* Each 128-bit lane's sum in all four of its lanes. */
static inline __m512 kvx_quant512_lane_sums(__m512 v)
{
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* The tile for nt tokens (a constant): rows past nr repeat the last one (computed, not
 * stored).  int32 exact within a block, fp32 across blocks. */
static inline __attribute__((always_inline)) void
kvx_quant512_tile_nt(enum kvx_quant512_fmt f, int nt, bool vnni, int64_t n, int nr, float *s,
                     int64_t ldS, const void *w, size_t ws, const void *a, size_t as)
{
    const uint8_t *xr[4], *yc[4];
    KVX_QUANT512_UNROLL
    for (int r = 0; r < 4; r++)
        xr[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    KVX_QUANT512_UNROLL
    for (int c = 0; c < 4; c++) /* tokens past nt: heads read (from token 0), never used */
        yc[c] = (const uint8_t *)a + (size_t)(c < nt ? c : 0) * as;
    /* acc: the dw*da terms; macc: the mw*sa terms (q4_1, q5_1), summed apart as vec_dot does */
    __m512 acc[4], macc[4];
    KVX_QUANT512_UNROLL
    for (int c = 0; c < 4; c++)
        acc[c] = macc[c] = _mm512_setzero_ps();
    const int64_t nb = n / KVX_QK;
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4)
        kvx_quant512_tile_quad(f, nt, vnni, xr, yc, i, 4, acc, macc);
    if (i < nb)
        kvx_quant512_tile_quad(f, nt, vnni, xr, yc, i, (int)(nb - i), acc, macc);
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++) {
        _Alignas(64) float t[16], m[16];
        _mm512_store_ps(t, kvx_quant512_lane_sums(acc[c]));
        _mm512_store_ps(m, kvx_quant512_lane_sums(macc[c]));
        for (int r = 0; r < nr; r++)
            s[c * ldS + r] = kvx_quant512_has_min(f) ? t[4 * r] + m[4 * r] : t[4 * r];
    }
}

/* vec_dot_tile of format f (nr, nc <= 4): picks the token count.  Always inlined, so that f
 * and vnni are constants in each exported kernel. */
static inline __attribute__((always_inline)) void
kvx_quant512_tile(enum kvx_quant512_fmt f, bool vnni, int64_t n, int nr, int nc, float *s,
                  int64_t ldS, const void *w, size_t ws, const void *a, size_t as)
{
    switch (nc) {
    case 1: kvx_quant512_tile_nt(f, 1, vnni, n, nr, s, ldS, w, ws, a, as); break;
    case 2: kvx_quant512_tile_nt(f, 2, vnni, n, nr, s, ldS, w, ws, a, as); break;
    case 3: kvx_quant512_tile_nt(f, 3, vnni, n, nr, s, ldS, w, ws, a, as); break;
    default: kvx_quant512_tile_nt(f, 4, vnni, n, nr, s, ldS, w, ws, a, as); break;
    }
}

/* ====================== AVX-512 register tiles of the K-quants (vec_dot_tile) ===============
 *
 * q4_K, q5_K and q6_K against q8_K, 4 rows x up to 4 tokens, in the layout of the tiles above:
 * the 4 rows' 16 quants of a sub-block half in one zmm (row r in 128-bit lane r), a token's 16
 * activations broadcast.  A super-block's sub-block scales are integers, so everything up to
 * the super-block stays in int32 as in vec_dot: per sub-block and token, vpmaddubsw gives int16
 * pairs (quants <= 63, |qa| <= 128: <= 2*63*128) and vpdpwssd (VNNI; else vpmaddwd + add)
 * multiplies them by the row's sub-block scale in int16 and accumulates; one conversion and one
 * FMA per token then apply dw * da.  The scales of the 4 rows are unpacked together in vector
 * registers (q4_K/q5_K: the 6-bit packing of kvx_quant_q4_k_scales on 32-bit lanes), and the
 * per-super-block integer terms (q4_K/q5_K: sum_g mn_{g/2} * bsum_g, q6_K: 32 * sum_j sc_j *
 * bsum_j) are one vpmaddwd of the rows' scales against the token's bsums. */

enum kvx_quant512_kfmt {
    KVX_QUANT512_Q4_K,
    KVX_QUANT512_Q5_K,
    KVX_QUANT512_Q6_K,
};

/* int16 words (2k, 2k + 1) of each 128-bit lane of v, broadcast over the lane. */
static inline __m512i kvx_quant512_word_bcast(__m512i v, int k)
{
    return _mm512_shuffle_epi8(v, _mm512_set1_epi16((short)((2 * k + 1) << 8 | 2 * k)));
}

/* q4_K/q5_K: from lane r = a row's [d, dmin, scales[12]], lane r = its [sc_0..sc_7, mn_0..mn_7]
 * as bytes (kvx_quant_q4_k_scales on four rows at once). */
static inline __m512i kvx_quant512_q4k_scales(__m512i v)
{
    const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f),
                  k3 = _mm512_set1_epi32(0x03030303);
    /* dwords of a lane: v = [d|dmin, s0..3, s4..7, s8..11]; p = [s0..3, s0..3, s4..7, s4..7] */
    __m512i p = _mm512_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 1, 1));
    __m512i q = _mm512_srlv_epi32(_mm512_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 3, 3)),
                                  _mm512_set4_epi32(4, 0, 0, 0)); /* [-, s8..11, -, s8..11 >> 4] */
    __m512i lo = _mm512_mask_and_epi32(_mm512_and_si512(p, k1), 0xaaaa, q, k2);
    __m512i hi = _mm512_slli_epi32(_mm512_maskz_and_epi32(0xaaaa, _mm512_srli_epi32(p, 6), k3), 4);
    return _mm512_or_si512(lo, hi);
}

/* Rows' 16 int16 values as pairs for vpmaddwd against a token's 16 int16 (a 256-bit broadcast):
 * x lane r = row r's values 0..7, y lane r = 8..15 -> p01 = [x0, y0, x1, y1], p23 = [x2, y2, x3,
 * y3] (128-bit lanes). */
static inline void kvx_quant512_row_pairs(__m512i x, __m512i y, __m512i *p01, __m512i *p23)
{
    *p01 = _mm512_permutex2var_epi64(x, _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), y);
    *p23 = _mm512_permutex2var_epi64(x, _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4), y);
}

/* sum_k p_r[k] * b[k] per row r, as 4 int32 partial sums in lane r (b: 16 int16 at bp). */
static inline __m512i kvx_quant512_row_dot16(__m512i p01, __m512i p23, const uint8_t *bp)
{
    __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)bp));
    __m512i m01 = _mm512_madd_epi16(p01, b), m23 = _mm512_madd_epi16(p23, b);
    __m512i e = _mm512_permutex2var_epi64(m01, _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0), m23);
    __m512i o = _mm512_permutex2var_epi64(m01, _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2), m23);
    return _mm512_add_epi32(e, o);
}

/* acc += p (int16 pairs) * sc (int16 per pair), pairwise summed into int32. */
static inline __attribute__((always_inline)) __m512i kvx_quant512_dot16(__m512i acc, __m512i p,
                                                                       __m512i sc, bool vnni)
{
#if defined(__AVX512VNNI__)
    if (vnni)
        return _mm512_dpwssd_epi32(acc, p, sc);
#else
    (void)vnni;
#endif
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc));
}

/* fp32 of the fp16 at word w of each row's lane, repeated over the lane (lanes 4r..4r+3). */
static inline __m512 kvx_quant512_lane_f16(__m512i v, int w)
{
    __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24 + w, 24 + w,
                                   24 + w, 24 + w, 16 + w, 16 + w, 16 + w, 16 + w, 8 + w, 8 + w,
                                   8 + w, 8 + w, w, w, w, w);
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx, v)));
}

/* One q4_K / q5_K super-block (offsets ow, oa) of 4 rows x nt tokens into acc[c]:
 * d*da * sum_j sc_j dot_j - dmin*da * sum_g mn_{g/2} bsum_g, the sums in int32. */
static inline __attribute__((always_inline)) void
kvx_quant512_ktile_q45(bool q5, int nt, bool vnni, const uint8_t *const xr[4],
                       const uint8_t *const yc[4], size_t ow, size_t oa, __m512 acc[4])
{
    const __m512i m4 = _mm512_set1_epi8(15);
    const size_t aqs = 4, abs = 4 + KVX_QK_K; /* q8_K: d (fp32), qs, bsums */
    __m512i sumi[4];
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++)
        sumi[c] = _mm512_setzero_si512();
    const __m512i head = kvx_quant512_rows4(xr, ow); /* d, dmin, scales */
    const __m512i scm = kvx_quant512_q4k_scales(head);
    const size_t qs = q5 ? 48 : 16;
    __m512i qh0 = _mm512_setzero_si512(), qh1 = _mm512_setzero_si512();
    if (q5) {
        qh0 = kvx_quant512_rows4(xr, ow + 16);
        qh1 = kvx_quant512_rows4(xr, ow + 32);
    }
    KVX_QUANT512_UNROLL
    for (int c2 = 0; c2 < 4; c2++) { /* sub-blocks 2c2 (low nibbles), 2c2 + 1 (high) */
        const __m512i v0 = kvx_quant512_rows4(xr, ow + qs + 32 * (size_t)c2);
        const __m512i v1 = kvx_quant512_rows4(xr, ow + qs + 32 * (size_t)c2 + 16);
        __m512i wq[2][2] = {
            {_mm512_and_si512(v0, m4), _mm512_and_si512(v1, m4)},
            {_mm512_and_si512(_mm512_srli_epi16(v0, 4), m4),
             _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4)}};
        if (q5) /* bit 4 of element 32j + l is bit j of qh[l] */
            for (int t = 0; t < 2; t++) {
                const __m512i bit = _mm512_set1_epi8((char)(1 << (2 * c2 + t)));
                const __m512i b4 = _mm512_set1_epi8(16);
                wq[t][0] = _mm512_mask_add_epi8(wq[t][0], _mm512_test_epi8_mask(qh0, bit),
                                                wq[t][0], b4);
                wq[t][1] = _mm512_mask_add_epi8(wq[t][1], _mm512_test_epi8_mask(qh1, bit),
                                                wq[t][1], b4);
            }
        /* the sub-blocks' scales as int16 (pshufb zeroes the bytes whose index has bit 7) */
        const __m512i sc0 =
            _mm512_shuffle_epi8(scm, _mm512_set1_epi16((short)(0x8000 | (2 * c2))));
        const __m512i sc1 =
            _mm512_shuffle_epi8(scm, _mm512_set1_epi16((short)(0x8000 | (2 * c2 + 1))));
        KVX_QUANT512_UNROLL
        for (int c = 0; c < nt; c++) {
            const uint8_t *y = yc[c] + oa + aqs + 64 * (size_t)c2;
            __m512i a[4];
            for (int k = 0; k < 4; k++)
                a[k] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y + 16 * k)));
            /* int16 pairs <= 2*31*128, two halves of a sub-block <= 15872 */
            __m512i p0 = _mm512_add_epi16(_mm512_maddubs_epi16(wq[0][0], a[0]),
                                          _mm512_maddubs_epi16(wq[0][1], a[1]));
            __m512i p1 = _mm512_add_epi16(_mm512_maddubs_epi16(wq[1][0], a[2]),
                                          _mm512_maddubs_epi16(wq[1][1], a[3]));
            sumi[c] = kvx_quant512_dot16(sumi[c], p0, sc0, vnni);
            sumi[c] = kvx_quant512_dot16(sumi[c], p1, sc1, vnni);
        }
    }
    /* mins: words mn_0, mn_0, mn_1, mn_1, ... against bsum_0, bsum_1, ... */
    __m512i p01, p23;
    const __m512i mn03 = _mm512_broadcast_i32x4(_mm_setr_epi8(
        8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128));
    const __m512i mn47 = _mm512_broadcast_i32x4(_mm_setr_epi8(
        12, -128, 12, -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128));
    kvx_quant512_row_pairs(_mm512_shuffle_epi8(scm, mn03), _mm512_shuffle_epi8(scm, mn47), &p01,
                           &p23);
    const __m512 d = kvx_quant512_lane_f16(head, 0), dmin = kvx_quant512_lane_f16(head, 1);
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++) {
        const uint8_t *y = yc[c] + oa;
        __m512i summ = kvx_quant512_row_dot16(p01, p23, y + abs);
        __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(sumi[c]), d,
                                   _mm512_mul_ps(_mm512_cvtepi32_ps(summ), dmin));
        acc[c] = _mm512_fmadd_ps(t, _mm512_set1_ps(kvx_quant_load_f32(y)), acc[c]);
    }
}

/* One q6_K super-block: d*da * sum_j sc_j (dot_j - 32 bsum_j), the sums in int32. */
static inline __attribute__((always_inline)) void
kvx_quant512_ktile_q6(int nt, bool vnni, const uint8_t *const xr[4], const uint8_t *const yc[4],
                      size_t ow, size_t oa, __m512 acc[4])
{
    const __m512i m4 = _mm512_set1_epi8(15);
    const size_t aqs = 4, abs = 4 + KVX_QK_K; /* q8_K: d (fp32), qs, bsums */
    __m512i sumi[4];
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++)
        sumi[c] = _mm512_setzero_si512();
    /* ql[128], qh[64], scales[16] (int8), d */
    const __m512i s8 = kvx_quant512_rows4(xr, ow + 192);
    const __m512i sw[2] = {_mm512_srai_epi16(_mm512_unpacklo_epi8(s8, s8), 8),
                           _mm512_srai_epi16(_mm512_unpackhi_epi8(s8, s8), 8)};
    KVX_QUANT512_UNROLL
    for (int h = 0; h < 2; h++) {
        /* element 128h + 32k + l: low 4 bits (ql[64h + 32(k & 1) + l] >> 4(k >> 1)), high 2
         * bits (qh[32h + l] >> 2k) & 3; sub-block j = 8h + 2k + l / 16 */
        const size_t ql = ow + 64 * (size_t)h, qh = ow + 128 + 32 * (size_t)h;
        const __m512i l4[2][2] = {
            {kvx_quant512_rows4(xr, ql), kvx_quant512_rows4(xr, ql + 16)},
            {kvx_quant512_rows4(xr, ql + 32), kvx_quant512_rows4(xr, ql + 48)}};
        const __m512i h2[2] = {kvx_quant512_rows4(xr, qh), kvx_quant512_rows4(xr, qh + 16)};
        KVX_QUANT512_UNROLL
        for (int k = 0; k < 4; k++)
            for (int t = 0; t < 2; t++) {
                const int j = 8 * h + 2 * k + t;
                __m512i lo = l4[k & 1][t], hb = h2[t];
                if (k >> 1)
                    lo = _mm512_srli_epi16(lo, 4);
                hb = 2 * k <= 4 ? _mm512_slli_epi16(hb, 4 - 2 * k) : _mm512_srli_epi16(hb, 2);
                hb = _mm512_and_si512(hb, _mm512_set1_epi8(0x30));
                const __m512i q = _mm512_ternarylogic_epi32(lo, hb, m4, 0xec); /* lo & 15 | hb */
                const __m512i sc = kvx_quant512_word_bcast(sw[j / 8], j % 8);
                KVX_QUANT512_UNROLL
                for (int c = 0; c < nt; c++) {
                    const __m512i a = _mm512_broadcast_i32x4(
                        _mm_loadu_si128((const __m128i *)(yc[c] + oa + aqs + 16 * (size_t)j)));
                    /* int16 pairs <= 2*63*128; times |sc| <= 128, int32 */
                    sumi[c] = kvx_quant512_dot16(sumi[c], _mm512_maddubs_epi16(q, a), sc, vnni);
                }
            }
    }
    __m512i p01, p23;
    kvx_quant512_row_pairs(sw[0], sw[1], &p01, &p23);
    /* d (bytes 208, 209) is word 7 of the 16 bytes at 194, the last 16 inside the block */
    const __m512 d = kvx_quant512_lane_f16(kvx_quant512_rows4(xr, ow + 194), 7);
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++) {
        const uint8_t *y = yc[c] + oa;
        __m512i off = _mm512_slli_epi32(kvx_quant512_row_dot16(p01, p23, y + abs), 5);
        __m512 t = _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[c], off));
        acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(kvx_quant_load_f32(y))), t,
                                 acc[c]);
    }
}

/* The K-quant tile for nt tokens (a constant); rows past nr repeat the last one. */
static inline __attribute__((always_inline)) void
kvx_quant512_ktile_nt(enum kvx_quant512_kfmt f, int nt, bool vnni, int64_t n, int nr, float *s,
                      int64_t ldS, const void *w, size_t ws, const void *a, size_t as)
{
    static const size_t wbytes[] = {sizeof(struct kvx_block_q4_K), sizeof(struct kvx_block_q5_K),
                                    sizeof(struct kvx_block_q6_K)};
    const uint8_t *xr[4], *yc[4];
    KVX_QUANT512_UNROLL
    for (int r = 0; r < 4; r++)
        xr[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    KVX_QUANT512_UNROLL
    for (int c = 0; c < 4; c++)
        yc[c] = (const uint8_t *)a + (size_t)(c < nt ? c : 0) * as;
    __m512 acc[4];
    KVX_QUANT512_UNROLL
    for (int c = 0; c < 4; c++)
        acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        const size_t ow = (size_t)i * wbytes[f], oa = (size_t)i * sizeof(struct kvx_block_q8_K);
        if (f == KVX_QUANT512_Q6_K)
            kvx_quant512_ktile_q6(nt, vnni, xr, yc, ow, oa, acc);
        else
            kvx_quant512_ktile_q45(f == KVX_QUANT512_Q5_K, nt, vnni, xr, yc, ow, oa, acc);
    }
    KVX_QUANT512_UNROLL
    for (int c = 0; c < nt; c++) {
        _Alignas(64) float t[16];
        _mm512_store_ps(t, kvx_quant512_lane_sums(acc[c]));
        for (int r = 0; r < nr; r++)
            s[c * ldS + r] = t[4 * r];
    }
}

/* vec_dot_tile of K-quant format f (nr, nc <= 4). */
static inline __attribute__((always_inline)) void
kvx_quant512_ktile(enum kvx_quant512_kfmt f, bool vnni, int64_t n, int nr, int nc, float *s,
                   int64_t ldS, const void *w, size_t ws, const void *a, size_t as)
{
    switch (nc) {
    case 1: kvx_quant512_ktile_nt(f, 1, vnni, n, nr, s, ldS, w, ws, a, as); break;
    case 2: kvx_quant512_ktile_nt(f, 2, vnni, n, nr, s, ldS, w, ws, a, as); break;
    case 3: kvx_quant512_ktile_nt(f, 3, vnni, n, nr, s, ldS, w, ws, a, as); break;
    default: kvx_quant512_ktile_nt(f, 4, vnni, n, nr, s, ldS, w, ws, a, as); break;
    }
}
#endif /* AVX-512 */

#endif
