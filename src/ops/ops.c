/* ops/ops: norms, RoPE, activations (fp32 reference kernels). */
#include "ops/ops.h"

#include <math.h>

void kvx_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * (double)x[i];
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    if (w)
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * scale * w[i];
    else
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * scale;
}

void kvx_rope_cache(float *cs, int32_t n_rot, int64_t pos, float theta_base, float freq_scale)
{
    /* theta_i = pos * base^(-2i/n_rot), computed by repeated multiplication like ggml so that
     * the angles agree with llama.cpp to the last bit where it matters. */
    const float step = powf(theta_base, -2.0f / (float)n_rot);
    float theta = (float)pos * freq_scale;
    for (int32_t i = 0; i < n_rot / 2; i++) {
        cs[2 * i] = cosf(theta);
        cs[2 * i + 1] = sinf(theta);
        theta *= step;
    }
}

void kvx_rope_apply(float *x, const float *cs, int32_t n_rot, enum kvx_rope_kind kind)
{
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        const int32_t a = kind == KVX_ROPE_NEOX ? i : 2 * i;
        const int32_t b = kind == KVX_ROPE_NEOX ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

void kvx_swiglu(float *h, const float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kvx_swiglu_isa(enum kvx_isa isa, float *h, const float *g, const float *u, int64_t n)
{
#if defined(__x86_64__) || defined(__i386__)
    if (isa >= KVX_ISA_AVX512 && kvx_cpu_has_isa(KVX_ISA_AVX512)) {
        kvx_swiglu_avx512(h, g, u, n);
        return;
    }
    if (isa >= KVX_ISA_AVX2 && kvx_cpu_has_isa(KVX_ISA_AVX2)) {
        kvx_swiglu_avx2(h, g, u, n);
        return;
    }
#else
    (void)isa;
#endif
    kvx_swiglu(h, g, u, n);
}

void kvx_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void kvx_rope_yarn_inv_freq(float *inv, int32_t n_rot, double theta, double factor, double orig_ctx,
                            double beta_fast, double beta_slow, bool truncate)
{
    const double pi = 3.14159265358979323846, R = n_rot;
    double low = R * log(orig_ctx / (beta_fast * 2 * pi)) / (2 * log(theta));
    double high = R * log(orig_ctx / (beta_slow * 2 * pi)) / (2 * log(theta));
    if (truncate) {
        low = floor(low);
        high = ceil(high);
    }
    low = low > 0 ? low : 0;
    high = high < R - 1 ? high : R - 1;
    if (low == high)
        high += 0.001;
    for (int32_t i = 0; i < n_rot / 2; i++) {
        const float pos_freq = powf((float)theta, (float)(2 * i) / (float)n_rot);
        float ramp = (float)(((double)i - low) / (high - low));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        const float extra = 1.0f - ramp;   /* weight of the unscaled frequency */
        inv[i] = (1.0f / ((float)factor * pos_freq)) * (1.0f - extra) + (1.0f / pos_freq) * extra;
    }
}
