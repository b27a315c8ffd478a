/* attn/attn_avx512: AVX-512 softmax pieces (scale + max, vectorized exp + sum).
 *
 * Compiled with the AVX-512 flags (Makefile, by file name); called only through
 * kvx_attn_softmax_ops(KVX_ISA_AVX512) on a CPU that has it.  Empty on other processors. */
#include "attn/internal.h"
#include "ops/vexp.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>

#define KVX_INLINE static inline __attribute__((always_inline))

/* s[t] *= scale, returns max_t s[t]: 4 independent max chains, masked tail. */
float kvx_attn_scale_max_avx512(float *s, int64_t n, float scale)
{
    const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    int64_t t = 0;
    for (; t + 64 <= n; t += 64) {
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(s + t), vs);
        __m512 b = _mm512_mul_ps(_mm512_loadu_ps(s + t + 16), vs);
        __m512 c = _mm512_mul_ps(_mm512_loadu_ps(s + t + 32), vs);
        __m512 d = _mm512_mul_ps(_mm512_loadu_ps(s + t + 48), vs);
        _mm512_storeu_ps(s + t, a);
        _mm512_storeu_ps(s + t + 16, b);
        _mm512_storeu_ps(s + t + 32, c);
        _mm512_storeu_ps(s + t + 48, d);
        m0 = _mm512_max_ps(m0, a);
        m1 = _mm512_max_ps(m1, b);
        m2 = _mm512_max_ps(m2, c);
        m3 = _mm512_max_ps(m3, d);
    }
    for (; t < n; t += 16) {
        __mmask16 k = n - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - t)) - 1u);
        __m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + t), vs);
        _mm512_mask_storeu_ps(s + t, k, a);
        m0 = _mm512_mask_max_ps(m0, k, m0, a);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

/* s[t] = exp(s[t] - m), returns sum_t s[t] (two fp32 16-lane accumulators). */
float kvx_attn_exp_sum_avx512(float *s, int64_t n, float m)
{
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    int64_t t = 0;
    for (; t + 32 <= n; t += 32) {
        __m512 a = kvx_exp16_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t), vm));
        __m512 b = kvx_exp16_ps(_mm512_sub_ps(_mm512_loadu_ps(s + t + 16), vm));
        _mm512_storeu_ps(s + t, a);
        _mm512_storeu_ps(s + t + 16, b);
        sum0 = _mm512_add_ps(sum0, a);
        sum1 = _mm512_add_ps(sum1, b);
    }
    for (; t < n; t += 16) {
        __mmask16 k = n - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - t)) - 1u);
        __m512 a = _mm512_maskz_mov_ps(k, kvx_exp16_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + t), vm)));
        _mm512_mask_storeu_ps(s + t, k, a);
        sum0 = _mm512_add_ps(sum0, a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
}

#endif
