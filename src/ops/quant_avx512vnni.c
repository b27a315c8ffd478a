/* ops/quant_avx512vnni: the AVX-512 VNNI (vpdpbusd) dot products of the 32-element formats:
 * q4_0, q4_1, q5_0, q5_1 and q8_0 against their q8 activations.  Compiled with the AVX-512 flags
 * plus -mavx512vnni; quant.c puts these in the AVX-512 table only when kvx_cpu_has_avx512_vnni().
 *
 * The same row loop as quant_avx512.c (kvx_quant512_row in quant_internal.h: two blocks per zmm,
 * scales of four blocks per vcvtph2ps, prefetch ahead), but u8 x s8 goes through vpdpbusd, which
 * sums four products straight into int32 (no int16 stage, so nothing can saturate).  These carry
 * the default model (q4_1 weights, q8_0 output head).  Tests: tests/test_quant.c, SIMD vs scalar
 * within 1e-5 * sum |w*a| (fp32 summation order).  The register tiles (vec_dot_tile) of the
 * same formats follow the vec_dot kernels. */
#include "ops/quant_internal.h"

#if !defined(__AVX512VNNI__)
#error "quant_avx512vnni.c needs -mavx512vnni (see the Makefile's ISA flags)"
#endif

/* s = sum_b (dw*da)_b * sum_j (qw_j - 8) * qa_j.  Blocks q4_0 (18 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks (kvx_quant512_row).  Test: within 1e-5 * sum |w*a| of the
 * scalar kernel. */
void kvx_vec_dot_q4_0_q8_0_avx512vnni(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q4_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q4_0, false, true);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b (sa = fp16 of da * sum qa).  Blocks q4_1
 * (20 B) x q8_1 (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum
 * |w*a| of the scalar kernel. */
void kvx_vec_dot_q4_1_q8_1_avx512vnni(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q4_1), a, sizeof(struct kvx_block_q8_1),
                          kvx_quant512_q4_1, true, true);
}

/* s = sum_b (dw*da)_b * sum_j (qw_j - 16) * qa_j.  Blocks q5_0 (22 B) x q8_0 (34 B).  int32 exact
 * within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q5_0_q8_0_avx512vnni(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q5_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q5_0, false, true);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j + mw_b * sa_b, qw in 0..31.  Blocks q5_1 (24 B) x q8_1
 * (36 B).  int32 exact within a block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the
 * scalar kernel. */
void kvx_vec_dot_q5_1_q8_1_avx512vnni(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q5_1), a, sizeof(struct kvx_block_q8_1),
                          kvx_quant512_q5_1, true, true);
}

/* s = sum_b (dw*da)_b * sum_j qw_j * qa_j.  Blocks q8_0 (34 B) x q8_0.  int32 exact within a
 * block, fp32 across blocks.  Test: within 1e-5 * sum |w*a| of the scalar kernel. */
void kvx_vec_dot_q8_0_q8_0_avx512vnni(int64_t n, float *s, const void *w, const void *a)
{
    *s = kvx_quant512_row(n, w, sizeof(struct kvx_block_q8_0), a, sizeof(struct kvx_block_q8_0),
                          kvx_quant512_q8_0, false, true);
}

/* ===================== register tiles (vec_dot_tile): up to 4 rows x 4 tokens ==============
 *
 * s[c*ldS + r] = w_r . a_c for r < nr, c < nc (nr, nc <= 4), as vec_dot above but every
 * weight block unpacked once for 4 tokens and every activation block loaded once for 4 rows
 * (kvx_quant512_tile in quant_internal.h: 4 rows per zmm against a broadcast token, one
 * vpdpbusd pair gives 4 (row, token) block sums).  int32 exact within a block (offsets applied
 * in int32), fp32 across blocks.  Test: every (r, c) within 1e-5 * sum |w*a| of the scalar
 * vec_dot, nothing outside the tile written. */

/* q4_0 x q8_0 tile: (qw - 8) . qa as qw . qa - 8 * sum(qa). */
void kvx_vec_dot_tile_q4_0_q8_0_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q4_0, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q4_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block. */
void kvx_vec_dot_tile_q4_1_q8_1_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q4_1, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_0 x q8_0 tile: (qw - 16) . qa as qw . qa - 16 * sum(qa), qw in 0..31. */
void kvx_vec_dot_tile_q5_0_q8_0_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q5_0, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_1 x q8_1 tile: (dw*da) qw . qa + mw * sa per block, qw in 0..31. */
void kvx_vec_dot_tile_q5_1_q8_1_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q5_1, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q8_0 x q8_0 tile: qw . qa as (qw + 128) . qa - 128 * sum(qa) (u8 x s8, exact for any int8). */
void kvx_vec_dot_tile_q8_0_q8_0_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_tile(KVX_QUANT512_Q8_0, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* K-quant tiles (kvx_quant512_ktile): per sub-block, vpmaddubsw int16 pairs (quants <= 63)
 * times the row's sub-block scale by vpdpwssd, int32 exact per super-block; fp32 across
 * super-blocks.  Test: every (r, c) within 1e-5 * sum |w*a| of the scalar vec_dot. */

/* q4_K x q8_K tile: (dw*da) sum_j sc_j dot_j - (dmin*da) sum_g mn_{g/2} bsum_g per super-block. */
void kvx_vec_dot_tile_q4_K_q8_K_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q4_K, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q5_K x q8_K tile: as q4_K with quants 0..31. */
void kvx_vec_dot_tile_q5_K_q8_K_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q5_K, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}

/* q6_K x q8_K tile: (dw*da) sum_j sc_j (dot_j - 32 bsum_j), sc_j int8, quants 0..63. */
void kvx_vec_dot_tile_q6_K_q8_K_avx512vnni(int64_t n, int nr, int nc, float *s, int64_t ldS,
                                           const void *w, size_t w_stride, const void *a,
                                           size_t a_stride)
{
    kvx_quant512_ktile(KVX_QUANT512_Q6_K, true, n, nr, nc, s, ldS, w, w_stride, a, a_stride);
}
