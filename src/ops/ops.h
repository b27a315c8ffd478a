/* ops/ops: the element-wise and row-wise kernels of a transformer forward pass (fp32).
 * These are a small share of the work (the matmuls and attention dominate), so they are plain
 * C that the compiler vectorizes; each is its own reference.  SwiGLU, whose exp the compiler
 * cannot vectorize, has AVX2 and AVX-512 versions (ops_avx2.c, ops_avx512.c). */
#ifndef KVX_OPS_OPS_H
#define KVX_OPS_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "ops/cpu.h"

/* y = x / sqrt(mean(x^2) + eps) * w   (n floats; w may be NULL for no weight; y may alias x).
 * Sum of squares accumulated in double, as llama.cpp's ggml_rms_norm does (ggml_float). */
void kvx_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);

/* Rotary embedding of one head vector x (head_dim floats, rotating the first n_rot), in place,
 * at position pos, with inverse frequencies theta^(-2i/n_rot):
 *   normal (GPT-J / llama GGUF): pairs (2i, 2i+1)
 *   neox:                        pairs (i, i + n_rot/2)
 * kvx_rope_cache computes cs[2i] = cos, cs[2i+1] = sin of pos * freq_scale * theta_i once per
 * position (freq_scale: linear scaling, 1 for none); kvx_rope_apply rotates a head with it. */
enum kvx_rope_kind { KVX_ROPE_NORMAL = 0, KVX_ROPE_NEOX };
void kvx_rope_cache(float *cs, int32_t n_rot, int64_t pos, float theta_base, float freq_scale);
void kvx_rope_apply(float *x, const float *cs, int32_t n_rot, enum kvx_rope_kind kind);

/* YaRN inverse frequencies for n_rot rotated dims (transformers' _compute_yarn_parameters):
 *   inv[i] = θ^(-2i/R) (1 - ramp_i) + θ^(-2i/R) / factor · ramp_i,   i < R/2,
 *   ramp_i = clamp((i - low) / (high - low), 0, 1),
 *   low = max(R ln(L0 / (β_fast 2π)) / (2 ln θ), 0), high = min(R ln(L0 / (β_slow 2π)) / (2 ln θ), R-1)
 * with low rounded down and high up when `truncate` (transformers' default), L0 the original
 * context (original_max_position_embeddings). */
void kvx_rope_yarn_inv_freq(float *inv, int32_t n_rot, double theta, double factor, double orig_ctx,
                            double beta_fast, double beta_slow, bool truncate);

/* h[i] = silu(g[i]) * u[i],  silu(z) = z / (1 + exp(-z)) (h may alias g).  kvx_swiglu is the
 * reference (expf); kvx_swiglu_isa runs the SIMD version of `isa` where the CPU has it (a
 * vectorized exp, within 1e-6 relative): SwiGLU runs once per token and layer on one thread,
 * and 1536 scalar expf took about 4% of a decode step at depth 0. */
void kvx_swiglu(float *h, const float *g, const float *u, int64_t n);
void kvx_swiglu_isa(enum kvx_isa isa, float *h, const float *g, const float *u, int64_t n);
void kvx_swiglu_avx2(float *h, const float *g, const float *u, int64_t n);
void kvx_swiglu_avx512(float *h, const float *g, const float *u, int64_t n);

/* y[i] += x[i]. */
void kvx_add(float *y, const float *x, int64_t n);

#endif
