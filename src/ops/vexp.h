/* ops/vexp: vectorized exp for the SIMD files (attention's softmax, SwiGLU).
 *
 * Header-only: each function exists in a file compiled with its ISA's flags (Makefile, by file
 * name: *_avx512.c, *_avx2.c) and is called only after run-time detection. */
#ifndef KVX_OPS_VEXP_H
#define KVX_OPS_VEXP_H

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#if defined(__AVX512F__)
/* exp(x), 16 lanes: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n ln2),
 * exp(r) by the Cephes degree-6 minimax polynomial (relative error < 2e-7), then scaled by
 * 2^n with vscalefps.  x < -87.3365 (exp(x) < FLT_MIN) gives 0; x is clamped at 88.
 * Test: within 3e-7 relative of expf on [-87, 0] (test_attn.c). */
static inline __attribute__((always_inline)) __m512 kvx_exp16_ps(__m512 x)
{
    __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(y, n));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
/* exp(x), 8 lanes: as kvx_exp16_ps (Cephes reduction and degree-6 polynomial), with
 * 2^n built in the exponent field (n in [-126, 127] after the clamp to [-87.3365, 88]).
 * x < -87.3365 gives 0.  Test: within 3e-7 relative of expf on [-87, 0] (test_attn.c). */
static inline __attribute__((always_inline)) __m256 kvx_exp8_ps(__m256 x)
{
    __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), live);
}
#endif

#endif
#endif
