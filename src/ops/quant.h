/* ops/quant: dequantization and dot-product kernels for every weight format, per ISA.
 *
 * The design follows the ggml formats exactly (bit-compatible with GGUF files): a weight row in
 * format W is multiplied by an activation row first quantized to W's "vec-dot type"
 * (kvx_quant_vec_dot_type), so that the inner loop is integer arithmetic:
 *
 *   W        vec-dot type      W                vec-dot type
 *   f32      f32               q8_0             q8_0
 *   f16      f16               q4_0, q5_0       q8_0
 *   bf16     bf16              q4_1, q5_1       q8_1
 *   q2_K..q6_K  q8_K
 *
 * The scalar kernels (KVX_ISA_SCALAR) are the specification; each AVX2/AVX-512 kernel is tested
 * against them on random data and odd lengths.  A table entry an ISA does not implement falls
 * back to the scalar kernel, so kvx_quant_kernels never returns NULL function pointers for a
 * supported format, except the optional vec_dot_tile.  Kernels do not allocate. */
#ifndef KVX_OPS_QUANT_H
#define KVX_OPS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "ops/cpu.h"
#include "ops/dtype.h"

struct kvx_quant_kernels {
    /* dst[0..n) = the values of n elements of this format at src.  n % block_size == 0. */
    void (*to_float)(const void *src, float *dst, int64_t n);
    /* Quantize n floats into this format (round to nearest, same rounding as ggml's reference
     * quantizers for the activation formats f16, bf16, q8_0, q8_1, q8_K).  n % block_size == 0. */
    void (*from_float)(const float *src, void *dst, int64_t n);
    /* *s = sum_{i<n} w[i] * a[i], with w a row in this format and a a row in the vec-dot type.
     * Accumulation is exact in int32 within a block, fp32 across blocks. */
    void (*vec_dot)(int64_t n, float *s, const void *w, const void *a);
    /* A register tile of vec_dots, for matmuls over several tokens (prefill):
     *   s[c*ldS + r] = vec_dot(n, w + r*w_stride, a + c*a_stride),  r < nr, c < nc,
     * with 1 <= nr, nc <= KVX_QUANT_TILE_MAX, any strides and alignment; nothing else in s is
     * written.  A SIMD tile unpacks each weight block once for the nc tokens and loads each
     * activation block once for the nr rows, accumulating in registers.  Results equal
     * vec_dot's up to fp32 summation order (the same int32-exact block sums; tested within
     * 1e-5 * sum |w*a| per entry).  Optional: NULL where an ISA has no tile for the format (the
     * caller then loops over vec_dot); the scalar table has one for every format, the loop over
     * vec_dot that defines it. */
    void (*vec_dot_tile)(int64_t n, int nr, int nc, float *s, int64_t ldS, const void *w,
                         size_t w_stride, const void *a, size_t a_stride);
};

/* The largest nr and nc a vec_dot_tile takes (the AVX-512 tiles are 4 rows x 4 tokens). */
#define KVX_QUANT_TILE_MAX 4

/* The activation format that `w`'s vec_dot consumes. */
enum kvx_dtype kvx_quant_vec_dot_type(enum kvx_dtype w);

/* Kernels of format `t` for `isa` (falls back to scalar per entry); NULL if `t` unsupported. */
const struct kvx_quant_kernels *kvx_quant_kernels(enum kvx_dtype t, enum kvx_isa isa);

#endif
