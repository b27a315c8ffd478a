/* ops/repack: weight rows interleaved in groups of 16 ("x16"), for one-token matrix products
 * that run at memory speed.
 *
 * Why.  A decode step multiplies every weight matrix by one activation row.  With the file's
 * row layout each output needs its own dot product and a horizontal sum at the end of its
 * short row (576 elements are 18 blocks), and a 4-bit block must be shuffled before an
 * AVX-512 multiply can use it: the row kernel is compute bound, slower than one core's share of
 * DRAM.  Interleaved, one 64-byte load holds 4 bytes of each of 16 rows, one vpdpbusd against
 * 4 broadcast activation bytes advances 16 outputs, and no horizontal sum is left (AVX2:
 * vpmaddubsw + vpmaddwd, 8 rows a register).  One core, q4_1 x 576 from L2
 * (`KVX_BENCH=1 build/kvx-tests repack_bench`): rows 13.2 GB/s, x16 44.1 GB/s with AVX-512
 * VNNI; rows 12.8, x16 27.3 with AVX2.
 *
 * Layout.  For q4_0, q4_1 and q8_0 matrices (32-element blocks, ops/quant.h), rows 16g..16g+15
 * form group g and occupy exactly the bytes those 16 rows occupy in the file (group g starts at
 * g * 16 * row_bytes).  Inside a group, the 16 rows' block b is one "block16" of 16 x block size
 * bytes, at b * 16 * block size:
 *
 *   q4_0 (288 B):  d[16] fp16 (row r at byte 2r) | qs: 4 chunks of 64 B
 *   q4_1 (320 B):  d[16] fp16 | m[16] fp16       | qs: 4 chunks of 64 B
 *   q8_0 (544 B):  d[16] fp16 |                    qs: 8 chunks of 64 B, each byte q + 128
 *
 * Chunk k holds bytes qs[4k .. 4k+3] of row r at offset 4r: for q4, the low nibbles are
 * elements 4k..4k+3 and the high nibbles elements 16+4k..16+4k+3 (ggml's nibble order); for
 * q8_0, elements 4k..4k+3 biased to unsigned so that vpdpbusd (u8 x s8) takes them.  Rows past
 * the last whole group (n_out % 16 of them) keep the row layout.  Values are unchanged: every
 * product equals the row kernels' up to fp32 summation order.
 *
 * The repacked matrix is used only through ops/matmul (products) and kvx_x16_row_to_float
 * (embedding lookups of a tied output matrix); nothing else may read its rows. */
#ifndef KVX_OPS_REPACK_H
#define KVX_OPS_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/cpu.h"
#include "ops/dtype.h"

/* Rows per group. */
#define KVX_X16 16
/* Widest input a repacked matrix may have (the kernels keep per-block sums on the stack). */
#define KVX_X16_MAX_IN 32768

/* True when matrices of format t with n_in inputs can be repacked (q4_0, q4_1, q8_0, n_in a
 * multiple of 32 up to KVX_X16_MAX_IN). */
bool kvx_x16_supported(enum kvx_dtype t, int64_t n_in);

/* Rewrite the whole groups of a row-layout matrix (n_out rows) into the x16 layout, in place;
 * kvx_x16_unpack is its inverse.  Both need kvx_x16_supported; false when out of memory for a
 * copy of one group (the matrix is then unchanged). */
bool kvx_x16_pack(enum kvx_dtype t, int64_t n_in, int64_t n_out, uint8_t *data);
bool kvx_x16_unpack(enum kvx_dtype t, int64_t n_in, int64_t n_out, uint8_t *data);

/* Row r of a repacked matrix of n_out rows as n_in floats (the format's own dequantization). */
void kvx_x16_row_to_float(enum kvx_dtype t, int64_t n_in, int64_t n_out, const uint8_t *data,
                          int64_t r, float *dst);

/* The product of n_groups whole groups (16 * n_groups rows from `w`, the first group's start)
 * with nt <= 4 activation rows at `a` (the format's vec-dot type, a_stride bytes apart):
 *
 *   y[c * ldy + 16 * g + r] = sum_i W[16g + r][i] * A[c][i]      g < n_groups, r < 16, c < nt
 *
 * int32-exact within a block, fp32 across blocks in block order, as the row kernels (a q4_1
 * row's min terms in a sum of their own, as the AVX-512 row kernel keeps them). */
typedef void (*kvx_x16_matmul_fn)(enum kvx_dtype t, int64_t n_in, const uint8_t *w,
                                  int64_t n_groups, int nt, const uint8_t *a, size_t a_stride,
                                  float *y, int64_t ldy);

/* The kernel for `isa`: AVX-512 VNNI (when the CPU has VNNI), AVX2 (for AVX2, and AVX-512
 * without VNNI), else the scalar specification. */
kvx_x16_matmul_fn kvx_x16_matmul(enum kvx_isa isa);

/* True when kvx_x16_matmul(best ISA) is a SIMD kernel (repacking then pays: on the default
 * model it beats the row kernels of the same ISA, AVX2 as AVX-512). */
bool kvx_x16_fast(void);

void kvx_x16_matmul_scalar(enum kvx_dtype t, int64_t n_in, const uint8_t *w, int64_t n_groups,
                           int nt, const uint8_t *a, size_t a_stride, float *y, int64_t ldy);
void kvx_x16_matmul_avx2(enum kvx_dtype t, int64_t n_in, const uint8_t *w, int64_t n_groups,
                         int nt, const uint8_t *a, size_t a_stride, float *y, int64_t ldy);
void kvx_x16_matmul_avx512vnni(enum kvx_dtype t, int64_t n_in, const uint8_t *w,
                               int64_t n_groups, int nt, const uint8_t *a, size_t a_stride,
                               float *y, int64_t ldy);

#endif
