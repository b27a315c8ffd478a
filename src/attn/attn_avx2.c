/* attn/attn_avx2: AVX2 + FMA softmax pieces (scale + max, vectorized exp + sum).
 *
 * Compiled with -mavx2 -mfma -mf16c (Makefile, by file name); called only through
 * kvx_attn_softmax_ops(KVX_ISA_AVX2) on a CPU that has it.  Empty on other processors. */
#include "attn/internal.h"
#include "ops/vexp.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>

#define KVX_INLINE static inline __attribute__((always_inline))

KVX_INLINE __m256i tail_mask(int64_t left)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

KVX_INLINE float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

KVX_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* s[t] *= scale, returns max_t s[t]: 4 independent max chains, masked tail. */
float kvx_attn_scale_max_avx2(float *s, int64_t n, float scale)
{
    const __m256 vs = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
    int64_t t = 0;
    for (; t + 32 <= n; t += 32) {
        __m256 a = _mm256_mul_ps(_mm256_loadu_ps(s + t), vs);
        __m256 b = _mm256_mul_ps(_mm256_loadu_ps(s + t + 8), vs);
        __m256 c = _mm256_mul_ps(_mm256_loadu_ps(s + t + 16), vs);
        __m256 d = _mm256_mul_ps(_mm256_loadu_ps(s + t + 24), vs);
        _mm256_storeu_ps(s + t, a);
        _mm256_storeu_ps(s + t + 8, b);
        _mm256_storeu_ps(s + t + 16, c);
        _mm256_storeu_ps(s + t + 24, d);
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
        m2 = _mm256_max_ps(m2, c);
        m3 = _mm256_max_ps(m3, d);
    }
    for (; t < n; t += 8) {
        __m256i k = tail_mask(n - t);
        __m256 a = _mm256_mul_ps(_mm256_maskload_ps(s + t, k), vs);
        _mm256_maskstore_ps(s + t, k, a);
        m0 = _mm256_max_ps(m0, _mm256_blendv_ps(ninf, a, _mm256_castsi256_ps(k)));
    }
    return hmax8(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
}

/* s[t] = exp(s[t] - m), returns sum_t s[t] (two fp32 8-lane accumulators). */
float kvx_attn_exp_sum_avx2(float *s, int64_t n, float m)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 16 <= n; t += 16) {
        __m256 a = kvx_exp8_ps(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
        __m256 b = kvx_exp8_ps(_mm256_sub_ps(_mm256_loadu_ps(s + t + 8), vm));
        _mm256_storeu_ps(s + t, a);
        _mm256_storeu_ps(s + t + 8, b);
        sum0 = _mm256_add_ps(sum0, a);
        sum1 = _mm256_add_ps(sum1, b);
    }
    for (; t < n; t += 8) {
        __m256i k = tail_mask(n - t);
        __m256 a = kvx_exp8_ps(_mm256_sub_ps(_mm256_maskload_ps(s + t, k), vm));
        a = _mm256_and_ps(a, _mm256_castsi256_ps(k));
        _mm256_maskstore_ps(s + t, k, a);
        sum0 = _mm256_add_ps(sum0, a);
    }
    return hsum8(_mm256_add_ps(sum0, sum1));
}

#endif
