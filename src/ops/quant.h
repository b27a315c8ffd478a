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
 * supported format.  Kernels do not allocate. */
#ifndef KVX_OPS_QUANT_H
#define KVX_OPS_QUANT_H

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
};

/* The activation format that `w`'s vec_dot consumes. */
enum kvx_dtype kvx_quant_vec_dot_type(enum kvx_dtype w);

/* Kernels of format `t` for `isa` (falls back to scalar per entry); NULL if `t` unsupported. */
const struct kvx_quant_kernels *kvx_quant_kernels(enum kvx_dtype t, enum kvx_isa isa);

#endif
