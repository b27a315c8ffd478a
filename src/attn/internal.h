/* attn/internal: the softmax pieces of attention per ISA (shared by attn.c and the tests).
 *
 * kvx_attn_partial computes a key range's scores into scratch, then per query row
 *   m = max_t scale * s_t            (scale_max, in place: s_t <- scale * s_t)
 *   l = sum_t exp(s_t - m)           (exp_sum, in place: s_t <- exp(s_t - m))
 * and hands the probabilities to the codec's pv kernel.  The AVX2/AVX-512 variants evaluate
 * exp with a Cephes-style polynomial (relative error ~1e-7 on [-87.3, 88]; exp(x) = 0 below,
 * where expf would give a subnormal < 1.2e-38); the scalar variant uses expf.  All variants
 * read and write only s[0 .. n). */
#ifndef KVX_ATTN_INTERNAL_H
#define KVX_ATTN_INTERNAL_H

#include <stdint.h>

#include "ops/cpu.h"

struct kvx_attn_softmax_ops {
    /* s[t] *= scale for t < n; returns the largest s[t] (-inf when n == 0). */
    float (*scale_max)(float *s, int64_t n, float scale);
    /* s[t] = exp(s[t] - m) for t < n; returns their sum (fp32 lanes; scalar: fp64). */
    float (*exp_sum)(float *s, int64_t n, float m);
};

/* The variant for `isa` (scalar for an ISA without its own; never NULL). */
const struct kvx_attn_softmax_ops *kvx_attn_softmax_ops(enum kvx_isa isa);

float kvx_attn_scale_max_scalar(float *s, int64_t n, float scale);
float kvx_attn_exp_sum_scalar(float *s, int64_t n, float m);
float kvx_attn_scale_max_avx2(float *s, int64_t n, float scale);
float kvx_attn_exp_sum_avx2(float *s, int64_t n, float m);
float kvx_attn_scale_max_avx512(float *s, int64_t n, float scale);
float kvx_attn_exp_sum_avx512(float *s, int64_t n, float m);

#endif
