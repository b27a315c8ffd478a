/* ops/ops_avx2: AVX2 + FMA versions of the element-wise kernels of ops/ops.h.
 *
 * Compiled with -mavx2 -mfma -mf16c (Makefile, by file name); called only through
 * kvx_swiglu_isa(KVX_ISA_AVX2) on a CPU that has it.  Empty on other processors. */
#include "ops/ops.h"

#if defined(__x86_64__) || defined(__i386__)

#include "ops/vexp.h"

/* h = g / (1 + exp(-g)) * u, 8 lanes, then the tail in scalar.  exp by kvx_exp8_ps (relative
 * error < 3e-7 against expf), the division exact: within 1e-6 relative of kvx_swiglu
 * (test_ops.c). */
void kvx_swiglu_avx2(float *h, const float *g, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 z = _mm256_loadu_ps(g + i);
        const __m256 e = kvx_exp8_ps(_mm256_sub_ps(zero, z));
        const __m256 s = _mm256_div_ps(z, _mm256_add_ps(one, e));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    if (i < n)
        kvx_swiglu(h + i, g + i, u + i, n - i);
}

#endif
