/* ops/ops_avx512: AVX-512 versions of the element-wise kernels of ops/ops.h.
 *
 * Compiled with the AVX-512 flags (Makefile, by file name); called only through
 * kvx_swiglu_isa(KVX_ISA_AVX512) on a CPU that has it.  Empty on other processors. */
#include "ops/ops.h"

#if defined(__x86_64__) || defined(__i386__)

#include "ops/vexp.h"

/* h = g / (1 + exp(-g)) * u, 16 lanes, the tail masked.  exp by kvx_exp16_ps (relative error
 * < 3e-7 against expf), the division exact: within 1e-6 relative of kvx_swiglu (test_ops.c). */
void kvx_swiglu_avx512(float *h, const float *g, const float *u, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 z = _mm512_maskz_loadu_ps(k, g + i);
        const __m512 e = kvx_exp16_ps(_mm512_sub_ps(zero, z));
        const __m512 s = _mm512_div_ps(z, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(h + i, k, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, u + i)));
    }
}

#endif
