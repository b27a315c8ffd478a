/* ops/quant_avx512vnni: the AVX-512 VNNI (vpdpbusd) dot products of the 32-element formats:
 * q4_0, q4_1, q5_0, q5_1 and q8_0 against their q8 activations.  Compiled with the AVX-512 flags
 * plus -mavx512vnni; quant.c puts these in the AVX-512 table only when kvx_cpu_has_avx512_vnni().
 *
 * The same row loop as quant_avx512.c (kvx_quant512_row in quant_internal.h: two blocks per zmm,
 * scales of four blocks per vcvtph2ps, prefetch ahead), but u8 x s8 goes through vpdpbusd, which
 * sums four products straight into int32 (no int16 stage, so nothing can saturate).  These carry
 * the default model (q4_1 weights, q8_0 output head).  Tests: tests/test_quant.c, SIMD vs scalar
 * within 1e-5 * sum |w*a| (fp32 summation order). */
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
