/* ops/quant_scalar: the reference kernels of every format, the specification the SIMD kernels
 * are tested against.  Per format: to_float (dequantize), from_float (quantize) and the dot
 * product of a weight row with an activation row in its vec-dot type.
 *
 * Owns the ggml semantics: block layouts (quant_internal.h), the rounding of ggml's reference
 * quantizers (q4_0..q5_1, q8_0, q8_1, q8_K are bit-exact with quantize_row_*_ref), and sums that
 * are exact in int32 within a block and fp32 across blocks in ggml's order.  The K-quant
 * quantizers (q2_K..q6_K) are simple min/max quantizers of our own with a proven error bound,
 * not ggml's iterative ones.  Does not own dispatch (quant.c) or SIMD.
 *
 * Also the reference register tiles (vec_dot_tile), loops over each format's vec_dot.
 *
 * Every kernel requires n % block_size == 0, takes blocks at any address, and does not allocate.
 * Tests (tests/test_quant.c): to_float on hand-built blocks; from_float -> to_float within each
 * format's bound; vec_dot within 1e-5 * sum |w*a| of the fp64 dot of the dequantized rows (plus
 * the fp16 rounding of q8_1's s for q4_1/q5_1). */
#include <float.h>
#include <math.h>

#include "ops/quant_internal.h"

/* ===================================== float formats ===================================== */

void kvx_to_float_f32_scalar(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void kvx_to_float_f16_scalar(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = kvx_quant_load_f16(p + 2 * i);
}

void kvx_to_float_bf16_scalar(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = kvx_bf16_to_f32(kvx_quant_load_u16(p + 2 * i));
}

void kvx_from_float_f32_scalar(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* Round to nearest even; overflow to inf (what F16C's vcvtps2ph does, and so ggml on x86). */
void kvx_from_float_f16_scalar(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++)
        kvx_quant_store_f16(p + 2 * i, src[i]);
}

/* Round to nearest even; NaN stays a quiet NaN (ggml_compute_fp32_to_bf16). */
void kvx_from_float_bf16_scalar(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t b = kvx_f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &b, sizeof b);
    }
}

/* s = sum w[i]*a[i]: each product in fp32, the sum in double (ggml's scalar ggml_vec_dot_f32). */
void kvx_vec_dot_f32_f32_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(kvx_quant_load_f32(x + 4 * i) * kvx_quant_load_f32(y + 4 * i));
    *s = (float)sum;
}

/* As f32, after widening both halves exactly. */
void kvx_vec_dot_f16_f16_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(kvx_quant_load_f16(x + 2 * i) * kvx_quant_load_f16(y + 2 * i));
    *s = (float)sum;
}

void kvx_vec_dot_bf16_bf16_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float xf = kvx_bf16_to_f32(kvx_quant_load_u16(x + 2 * i));
        float yf = kvx_bf16_to_f32(kvx_quant_load_u16(y + 2 * i));
        sum += (double)(xf * yf);
    }
    *s = (float)sum;
}

/* ============================ 32-element blocks: dequantization =========================== */

/* The quant of element j (0..31) of a q4/q5 block, before any offset. */
static inline int q4_at(const uint8_t qs[16], int j)
{
    return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
}
static inline int q5_at(const uint8_t qs[16], uint32_t qh, int j)
{
    return q4_at(qs, j) | (int)(((qh >> j) & 1u) << 4);
}

void kvx_to_float_q4_0_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)(q4_at(b->qs, j) - 8) * d;
    }
}

void kvx_to_float_q4_1_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d), m = kvx_quant_load_f16(b->m);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)q4_at(b->qs, j) * d + m;
    }
}

void kvx_to_float_q5_0_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d);
        uint32_t qh = kvx_quant_load_u32(b->qh);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)(q5_at(b->qs, qh, j) - 16) * d;
    }
}

void kvx_to_float_q5_1_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d), m = kvx_quant_load_f16(b->m);
        uint32_t qh = kvx_quant_load_u32(b->qh);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)q5_at(b->qs, qh, j) * d + m;
    }
}

void kvx_to_float_q8_0_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)b->qs[j] * d;
    }
}

void kvx_to_float_q8_1_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, dst += KVX_QK) {
        float d = kvx_quant_load_f16(b->d);
        for (int j = 0; j < KVX_QK; j++)
            dst[j] = (float)b->qs[j] * d;
    }
}

/* ============================= 32-element blocks: quantization ============================ */

/* The element of largest magnitude, first one on ties (its sign picks the scale's sign). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *min, float *max)
{
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        *min = x[j] < *min ? x[j] : *min;
        *max = x[j] > *max ? x[j] : *max;
    }
}

/* ggml quantize_row_q4_0_ref: d = max / -8 (max = signed largest magnitude), q = x/d + 8.5
 * truncated, capped at 15. */
void kvx_from_float_q4_0_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d = signed_absmax(src, KVX_QK) / -8;
        float id = d != 0 ? 1.0f / d : 0.0f;
        kvx_quant_store_f16(b->d, d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(src[j] * id + 8.5f), q1 = (int)(src[j + 16] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ggml quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = (x - min)/d + 0.5 truncated. */
void kvx_from_float_q4_1_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float min, max;
        min_max(src, KVX_QK, &min, &max);
        float d = (max - min) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        kvx_quant_store_f16(b->d, d);
        kvx_quant_store_f16(b->m, min);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)((src[j] - min) * id + 0.5f), q1 = (int)((src[j + 16] - min) * id + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* Store the 32 5-bit quants q[] as low nibbles + a 32-bit mask of fifth bits. */
static void q5_pack(const int q[32], uint8_t qs[16], uint8_t qh_out[4])
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh_out, &qh, sizeof qh);
}

/* ggml quantize_row_q5_0_ref: d = max / -16, q = x/d + 16.5 truncated, capped at 31. */
void kvx_from_float_q5_0_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d = signed_absmax(src, KVX_QK) / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        kvx_quant_store_f16(b->d, d);
        int q[32];
        for (int j = 0; j < KVX_QK; j++) {
            q[j] = (int)(src[j] * id + 16.5f);
            q[j] = q[j] < 31 ? q[j] : 31;
        }
        q5_pack(q, b->qs, b->qh);
    }
}

/* ggml quantize_row_q5_1_ref: d = (max - min) / 31, q = (x - min)/d + 0.5 truncated. */
void kvx_from_float_q5_1_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float min, max;
        min_max(src, KVX_QK, &min, &max);
        float d = (max - min) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        kvx_quant_store_f16(b->d, d);
        kvx_quant_store_f16(b->m, min);
        int q[32];
        for (int j = 0; j < KVX_QK; j++) {
            q[j] = (int)((src[j] - min) * id + 0.5f);
            q[j] = q[j] < 31 ? q[j] : 31;
        }
        q5_pack(q, b->qs, b->qh);
    }
}

/* Activation quantizer of q8_0 and q8_1, the rule llama.cpp applies at run time on x86
 * (its AVX path, not quantize_row_q8_0_ref), so that kvx quantizes activations exactly as the
 * reference it is checked against:
 *   d = amax / 127 (stored as fp16), id = 127 / amax (0 when amax = 0),
 *   q = round-half-to-even(x * id).
 * Returns sum(q) (q8_1 stores s = fp16(d * sum(q))). */
static int q8_block_scalar(const float *x, int8_t *qs, float *d_out)
{
    float amax = 0;
    for (int j = 0; j < KVX_QK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < KVX_QK; j++) {
        qs[j] = (int8_t)rintf(x[j] * id);
        sum += qs[j];
    }
    *d_out = amax / 127.0f;
    return sum;
}

void kvx_from_float_q8_0_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        q8_block_scalar(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
    }
}

void kvx_from_float_q8_1_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / KVX_QK; i++, b++, src += KVX_QK) {
        float d;
        const int sum = q8_block_scalar(src, b->qs, &d);
        kvx_quant_store_f16(b->d, d);
        kvx_quant_store_f16(b->s, d * (float)sum);
    }
}

/* ============================= 32-element blocks: dot products ============================ */

/* s = sum_b (sumi_b * dw_b) * da_b, sumi_b = sum_j (qw_j - 8) * qa_j exact in int32.
 * ggml_vec_dot_q4_0_q8_0 (same fp32 operation order). */
void kvx_vec_dot_q4_0_q8_0_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += (q4_at(x[i].qs, j) - 8) * y[i].qs[j];
        sum += (float)sumi * kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d);
    }
    *s = sum;
}

/* s = sum_b (dw_b * da_b) * sumi_b + mw_b * sa_b, sumi_b = sum_j qw_j * qa_j (int32); the min
 * term uses the activation's stored s = d * sum(qa).  ggml_vec_dot_q4_1_q8_1. */
void kvx_vec_dot_q4_1_q8_1_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += q4_at(x[i].qs, j) * y[i].qs[j];
        sum += kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d) * (float)sumi +
               kvx_quant_load_f16(x[i].m) * kvx_quant_load_f16(y[i].s);
    }
    *s = sum;
}

/* s = sum_b (dw_b * da_b) * sumi_b, sumi_b = sum_j (qw_j - 16) * qa_j.  ggml_vec_dot_q5_0_q8_0. */
void kvx_vec_dot_q5_0_q8_0_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        uint32_t qh = kvx_quant_load_u32(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += (q5_at(x[i].qs, qh, j) - 16) * y[i].qs[j];
        sum += kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d) * (float)sumi;
    }
    *s = sum;
}

/* As q4_1 with 5-bit quants.  ggml_vec_dot_q5_1_q8_1. */
void kvx_vec_dot_q5_1_q8_1_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        uint32_t qh = kvx_quant_load_u32(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += q5_at(x[i].qs, qh, j) * y[i].qs[j];
        sum += kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d) * (float)sumi +
               kvx_quant_load_f16(x[i].m) * kvx_quant_load_f16(y[i].s);
    }
    *s = sum;
}

/* s = sum_b sumi_b * (dw_b * da_b), sumi_b = sum_j qw_j * qa_j.  ggml_vec_dot_q8_0_q8_0. */
void kvx_vec_dot_q8_0_q8_0_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q8_0 *x = w;
    const struct kvx_block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sum += (float)sumi * (kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d));
    }
    *s = sum;
}

/* q8_1 . q8_1 (no ggml counterpart; here so that every table entry is a kernel). */
void kvx_vec_dot_q8_1_q8_1_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q8_1 *x = w;
    const struct kvx_block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK; i++) {
        int sumi = 0;
        for (int j = 0; j < KVX_QK; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        sum += (float)sumi * (kvx_quant_load_f16(x[i].d) * kvx_quant_load_f16(y[i].d));
    }
    *s = sum;
}

/* ================================ K-quants: element decoding ============================== */

/* The unsigned quants of a super-block, in element order (before the offset the format
 * subtracts: none for q2_K/q4_K/q5_K, 4 for q3_K, 32 for q6_K). */
static void q2_k_quants(const struct kvx_block_q2_K *b, uint8_t q[256])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, j = (e % 128) / 32, l = e % 32;
        q[e] = (uint8_t)((b->qs[32 * h + l] >> (2 * j)) & 3);
    }
}

static void q3_k_quants(const struct kvx_block_q3_K *b, uint8_t q[256])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, j = (e % 128) / 32, l = e % 32;
        int hi = (b->hmask[l] >> (4 * h + j)) & 1;
        q[e] = (uint8_t)(((b->qs[32 * h + l] >> (2 * j)) & 3) | (hi << 2));
    }
}

static void q4_k_quants(const uint8_t qs[128], uint8_t q[256])
{
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = qs[32 * c + l] & 15;
            q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
    }
}

static void q5_k_quants(const struct kvx_block_q5_K *b, uint8_t q[256])
{
    q4_k_quants(b->qs, q);
    for (int e = 0; e < 256; e++)
        q[e] |= (uint8_t)(((b->qh[e % 32] >> (e / 32)) & 1) << 4);
}

static void q6_k_quants(const struct kvx_block_q6_K *b, uint8_t q[256])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
        int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
        q[e] = (uint8_t)(lo | (hi << 4));
    }
}

/* ================================ K-quants: dequantization ================================ */

void kvx_to_float_q2_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q2_K *b = src;
    uint8_t q[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f16(b->d), dmin = kvx_quant_load_f16(b->dmin);
        q2_k_quants(b, q);
        for (int e = 0; e < 256; e++) {
            int sc = b->scales[e / 16];
            dst[e] = d * (float)(sc & 15) * (float)q[e] - dmin * (float)(sc >> 4);
        }
    }
}

void kvx_to_float_q3_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q3_K *b = src;
    uint8_t q[256];
    int8_t sc[16];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f16(b->d);
        q3_k_quants(b, q);
        kvx_quant_q3_k_scales(b->scales, sc);
        for (int e = 0; e < 256; e++)
            dst[e] = d * (float)sc[e / 16] * (float)(q[e] - 4);
    }
}

void kvx_to_float_q4_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q4_K *b = src;
    uint8_t q[256], sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f16(b->d), dmin = kvx_quant_load_f16(b->dmin);
        q4_k_quants(b->qs, q);
        kvx_quant_q4_k_scales(b->scales, sc, mn);
        for (int e = 0; e < 256; e++)
            dst[e] = d * (float)sc[e / 32] * (float)q[e] - dmin * (float)mn[e / 32];
    }
}

void kvx_to_float_q5_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q5_K *b = src;
    uint8_t q[256], sc[8], mn[8];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f16(b->d), dmin = kvx_quant_load_f16(b->dmin);
        q5_k_quants(b, q);
        kvx_quant_q4_k_scales(b->scales, sc, mn);
        for (int e = 0; e < 256; e++)
            dst[e] = d * (float)sc[e / 32] * (float)q[e] - dmin * (float)mn[e / 32];
    }
}

void kvx_to_float_q6_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q6_K *b = src;
    uint8_t q[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f16(b->d);
        q6_k_quants(b, q);
        for (int e = 0; e < 256; e++)
            dst[e] = d * (float)b->scales[e / 16] * (float)(q[e] - 32);
    }
}

void kvx_to_float_q8_K_scalar(const void *src, float *dst, int64_t n)
{
    const struct kvx_block_q8_K *b = src;
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, dst += KVX_QK_K) {
        float d = kvx_quant_load_f32(b->d);
        for (int e = 0; e < 256; e++)
            dst[e] = (float)b->qs[e] * d;
    }
}

/* ================================ K-quants: dot products ================================== */

/* sum_{e in sub-block} q[e] * qa[e] for the sub-blocks of `len` elements. */
static void k_dots(const uint8_t *q, const int8_t *qa, int len, int32_t *dots)
{
    for (int j = 0; j < 256 / len; j++) {
        int32_t sum = 0;
        for (int l = 0; l < len; l++)
            sum += q[len * j + l] * qa[len * j + l];
        dots[j] = sum;
    }
}

static int16_t q8_k_bsum(const struct kvx_block_q8_K *y, int g)
{
    return kvx_quant_load_i16(y->bsums + 2 * g);
}

/* s = sum_sb da*dw * sum_j (sc_j & 15) * dot_j - da*dmin * sum_j (sc_j >> 4) * bsum_j; the two
 * sums are exact in int32 per super-block.  ggml_vec_dot_q2_K_q8_K. */
void kvx_vec_dot_q2_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q2_K *x = w;
    const struct kvx_block_q8_K *y = a;
    uint8_t q[256];
    int32_t dots[16];
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        q2_k_quants(&x[i], q);
        k_dots(q, y[i].qs, 16, dots);
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (x[i].scales[j] & 15) * dots[j];
            summ += (x[i].scales[j] >> 4) * q8_k_bsum(&y[i], j);
        }
        float da = kvx_quant_load_f32(y[i].d);
        sum += da * kvx_quant_load_f16(x[i].d) * (float)sumi -
               da * kvx_quant_load_f16(x[i].dmin) * (float)summ;
    }
    *s = sum;
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 4 * bsum_j), sc_j = 6-bit scale - 32, q in 0..7. */
void kvx_vec_dot_q3_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q3_K *x = w;
    const struct kvx_block_q8_K *y = a;
    uint8_t q[256];
    int8_t sc[16];
    int32_t dots[16];
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        q3_k_quants(&x[i], q);
        kvx_quant_q3_k_scales(x[i].scales, sc);
        k_dots(q, y[i].qs, 16, dots);
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += sc[j] * (dots[j] - 4 * q8_k_bsum(&y[i], j));
        sum += kvx_quant_load_f16(x[i].d) * kvx_quant_load_f32(y[i].d) * (float)sumi;
    }
    *s = sum;
}

/* sum_j sc_j * dot_j and sum_g mn_{g/2} * bsum_g of a q4_K/q5_K super-block (int32, exact). */
static void q45_k_sums(const uint8_t q[256], const uint8_t scales[12],
                       const struct kvx_block_q8_K *y, int32_t *sumi, int32_t *summ)
{
    uint8_t sc[8], mn[8];
    int32_t dots[8];
    kvx_quant_q4_k_scales(scales, sc, mn);
    k_dots(q, y->qs, 32, dots);
    *sumi = *summ = 0;
    for (int j = 0; j < 8; j++)
        *sumi += sc[j] * dots[j];
    for (int g = 0; g < 16; g++)
        *summ += mn[g / 2] * q8_k_bsum(y, g);
}

/* s = sum_sb (dw*da) * sum_j sc_j * dot_j - (dmin*da) * sum_g mn_{g/2} * bsum_g. */
void kvx_vec_dot_q4_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q4_K *x = w;
    const struct kvx_block_q8_K *y = a;
    uint8_t q[256];
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        int32_t sumi, summ;
        q4_k_quants(x[i].qs, q);
        q45_k_sums(q, x[i].scales, &y[i], &sumi, &summ);
        float da = kvx_quant_load_f32(y[i].d);
        sum += kvx_quant_load_f16(x[i].d) * da * (float)sumi -
               kvx_quant_load_f16(x[i].dmin) * da * (float)summ;
    }
    *s = sum;
}

/* As q4_K with 5-bit quants. */
void kvx_vec_dot_q5_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q5_K *x = w;
    const struct kvx_block_q8_K *y = a;
    uint8_t q[256];
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        int32_t sumi, summ;
        q5_k_quants(&x[i], q);
        q45_k_sums(q, x[i].scales, &y[i], &sumi, &summ);
        float da = kvx_quant_load_f32(y[i].d);
        sum += kvx_quant_load_f16(x[i].d) * da * (float)sumi -
               kvx_quant_load_f16(x[i].dmin) * da * (float)summ;
    }
    *s = sum;
}

/* s = sum_sb (dw*da) * sum_j sc_j * (dot_j - 32 * bsum_j), sc_j int8, q in 0..63. */
void kvx_vec_dot_q6_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q6_K *x = w;
    const struct kvx_block_q8_K *y = a;
    uint8_t q[256];
    int32_t dots[16];
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        q6_k_quants(&x[i], q);
        k_dots(q, y[i].qs, 16, dots);
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += x[i].scales[j] * (dots[j] - 32 * q8_k_bsum(&y[i], j));
        sum += kvx_quant_load_f16(x[i].d) * kvx_quant_load_f32(y[i].d) * (float)sumi;
    }
    *s = sum;
}

/* q8_K . q8_K (no ggml counterpart; here so that every table entry is a kernel). */
void kvx_vec_dot_q8_K_q8_K_scalar(int64_t n, float *s, const void *w, const void *a)
{
    const struct kvx_block_q8_K *x = w;
    const struct kvx_block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / KVX_QK_K; i++) {
        int32_t sumi = 0;
        for (int e = 0; e < 256; e++)
            sumi += x[i].qs[e] * y[i].qs[e];
        sum += kvx_quant_load_f32(x[i].d) * kvx_quant_load_f32(y[i].d) * (float)sumi;
    }
    *s = sum;
}

/* ================================ K-quants: quantization ================================== */

/* The K-quant quantizers below are ours: per sub-block min/max with every rounding chosen so
 * that the grid covers the sub-block (scales and mins rounded up, never clamped), which bounds
 * the error by half an effective step d*sc <= s_j + d.  With A the super-block's largest
 * magnitude that is |x - x'| <= 0.368 A (q2_K), 0.172 A (q3_K), 0.0684 A (q4_K), 0.0331 A (q5_K),
 * 0.0163 A (q6_K), what quant_roundtrip_error checks.  q3_K and q6_K use the symmetric levels
 * -3..3 and -31..31 (not the format's extra -4 / -32) to keep that bound simple. */

/* Smallest fp16 value >= v (v >= 0, finite): the super-block scales are rounded up so that
 * ceil(s_j / d) never exceeds the largest code. */
static float f16_ceil(float v, uint8_t out[2])
{
    uint16_t h = kvx_f32_to_f16(v);
    if (kvx_f16_to_f32(h) < v)
        h++;
    memcpy(out, &h, sizeof h);
    return kvx_f16_to_f32(h);
}

/* Code k in 0..kmax with k * d >= v (d > 0), or 0 when d == 0. */
static int ceil_code(float v, float d, int kmax)
{
    if (d <= 0)
        return 0;
    int k = (int)ceilf(v / d);
    if ((float)k * d < v)
        k++;
    return k < 0 ? 0 : k > kmax ? kmax : k;
}

/* Asymmetric sub-blocks (q2_K, q4_K, q5_K): x ~ (d*sc) * L - (dmin*m), L in 0..lmax.  sub =
 * elements per sub-block, smax = largest scale/min code.  Writes the codes and the quants L. */
static void k_asym_quantize(const float *x, int sub, int lmax, int smax, uint8_t *d_out,
                            uint8_t *dmin_out, uint8_t *sc, uint8_t *mn, uint8_t *L)
{
    int nsub = 256 / sub;
    float lo[16], hi[16], mmax = 0;
    for (int j = 0; j < nsub; j++) {
        min_max(x + sub * j, sub, &lo[j], &hi[j]);
        lo[j] = lo[j] < 0 ? lo[j] : 0; /* the offset can only subtract */
        mmax = fmaxf(mmax, -lo[j]);
    }
    float dmin = f16_ceil(mmax / (float)smax, dmin_out);
    float s[16], smaxv = 0;
    for (int j = 0; j < nsub; j++) {
        mn[j] = (uint8_t)ceil_code(-lo[j], dmin, smax);
        s[j] = (hi[j] + dmin * (float)mn[j]) / (float)lmax;
        smaxv = fmaxf(smaxv, s[j]);
    }
    float d = f16_ceil(smaxv / (float)smax, d_out);
    for (int j = 0; j < nsub; j++) {
        sc[j] = (uint8_t)ceil_code(s[j], d, smax);
        float step = d * (float)sc[j], off = dmin * (float)mn[j];
        for (int l = 0; l < sub; l++) {
            int q = step > 0 ? kvx_quant_nearest_int((x[sub * j + l] + off) / step) : 0;
            L[sub * j + l] = (uint8_t)(q < 0 ? 0 : q > lmax ? lmax : q);
        }
    }
}

/* Symmetric sub-blocks of 16 (q3_K, q6_K): x ~ (d*sc) * L, L in -lmax..lmax, sc in 0..smax. */
static void k_sym_quantize(const float *x, int lmax, int smax, uint8_t *d_out, int *sc, int *L)
{
    float s[16], smaxv = 0;
    for (int j = 0; j < 16; j++) {
        float amax = 0;
        for (int l = 0; l < 16; l++)
            amax = fmaxf(amax, fabsf(x[16 * j + l]));
        s[j] = amax / (float)lmax;
        smaxv = fmaxf(smaxv, s[j]);
    }
    float d = f16_ceil(smaxv / (float)smax, d_out);
    for (int j = 0; j < 16; j++) {
        sc[j] = ceil_code(s[j], d, smax);
        float step = d * (float)sc[j];
        for (int l = 0; l < 16; l++) {
            int q = step > 0 ? kvx_quant_nearest_int(x[16 * j + l] / step) : 0;
            L[16 * j + l] = q < -lmax ? -lmax : q > lmax ? lmax : q;
        }
    }
}

void kvx_from_float_q2_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q2_K *b = dst;
    uint8_t sc[16], mn[16], L[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        k_asym_quantize(src, 16, 3, 15, b->d, b->dmin, sc, mn, L);
        for (int j = 0; j < 16; j++)
            b->scales[j] = (uint8_t)(sc[j] | (mn[j] << 4));
        memset(b->qs, 0, sizeof b->qs);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32;
            b->qs[32 * h + l] |= (uint8_t)(L[e] << (2 * j));
        }
    }
}

void kvx_from_float_q3_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q3_K *b = dst;
    int sc[16], L[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        k_sym_quantize(src, 3, 31, b->d, sc, L);
        memset(b->scales, 0, sizeof b->scales);
        for (int j = 0; j < 16; j++) {
            int code = sc[j] + 32; /* stored biased by 32 */
            b->scales[j % 8] |= (uint8_t)((code & 15) << (j < 8 ? 0 : 4));
            b->scales[8 + j % 4] |= (uint8_t)((code >> 4) << (2 * (j / 4)));
        }
        memset(b->qs, 0, sizeof b->qs);
        memset(b->hmask, 0, sizeof b->hmask);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32, q = L[e] + 4;
            b->qs[32 * h + l] |= (uint8_t)((q & 3) << (2 * j));
            b->hmask[l] |= (uint8_t)((q >> 2) << (4 * h + j));
        }
    }
}

/* Pack 8 6-bit scales and mins into the 12-byte q4_K/q5_K layout (see kvx_quant_q4_k_scales). */
static void q4_k_pack_scales(const uint8_t sc[8], const uint8_t mn[8], uint8_t s[12])
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

void kvx_from_float_q4_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q4_K *b = dst;
    uint8_t sc[8], mn[8], L[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        k_asym_quantize(src, 32, 15, 63, b->d, b->dmin, sc, mn, L);
        q4_k_pack_scales(sc, mn, b->scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

void kvx_from_float_q5_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q5_K *b = dst;
    uint8_t sc[8], mn[8], L[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        k_asym_quantize(src, 32, 31, 63, b->d, b->dmin, sc, mn, L);
        q4_k_pack_scales(sc, mn, b->scales);
        memset(b->qh, 0, sizeof b->qh);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int q0 = L[64 * c + l], q1 = L[64 * c + 32 + l];
                b->qs[32 * c + l] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
                b->qh[l] |= (uint8_t)(((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1)));
            }
        }
    }
}

void kvx_from_float_q6_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q6_K *b = dst;
    int sc[16], L[256];
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        k_sym_quantize(src, 31, 127, b->d, sc, L);
        for (int j = 0; j < 16; j++)
            b->scales[j] = (int8_t)sc[j];
        memset(b->ql, 0, sizeof b->ql);
        memset(b->qh, 0, sizeof b->qh);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32, q = L[e] + 32;
            b->ql[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (4 * (k >> 1)));
            b->qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

/* ggml quantize_row_q8_K_ref: max = signed largest magnitude (first on ties), iscale = -127/max,
 * q = min(127, nearest_int(iscale * x)) (ties to even), d = 1/iscale in fp32, bsums of 16.
 * An all-zero block gets d = 0 and zero quants and sums. */
void kvx_from_float_q8_K_scalar(const float *src, void *dst, int64_t n)
{
    struct kvx_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / KVX_QK_K; i++, b++, src += KVX_QK_K) {
        float max = signed_absmax(src, KVX_QK_K);
        if (max == 0) {
            memset(b, 0, sizeof *b);
            continue;
        }
        float iscale = -127.0f / max;
        for (int e = 0; e < 256; e++) {
            int v = kvx_quant_nearest_int(iscale * src[e]);
            b->qs[e] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += b->qs[16 * g + l];
            kvx_quant_store_i16(b->bsums + 2 * g, (int16_t)sum);
        }
        kvx_quant_store_f32(b->d, 1 / iscale);
    }
}

/* ============================== register tiles: the specification ========================= */

/* s[c*ldS + r] = dot(n, w + r*w_stride, a + c*a_stride) for r < nr, c < nc: what every SIMD
 * vec_dot_tile computes (up to fp32 summation order), here as the plain loop over vec_dot.  Any
 * nr, nc >= 1 (the SIMD tiles take at most KVX_QUANT_TILE_MAX). */
static void tile_loop(KVX_QUANT_VEC_DOT((*dot)), int64_t n, int nr, int nc, float *s, int64_t ldS,
                      const void *w, size_t w_stride, const void *a, size_t a_stride)
{
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++)
            dot(n, &s[c * ldS + r], (const uint8_t *)w + (size_t)r * w_stride,
                (const uint8_t *)a + (size_t)c * a_stride);
}

#define SCALAR_TILE(wf, af)                                                                        \
    KVX_QUANT_VEC_DOT_TILE(kvx_vec_dot_tile_##wf##_##af##_scalar)                                  \
    {                                                                                              \
        tile_loop(kvx_vec_dot_##wf##_##af##_scalar, n, nr, nc, s, ldS, w, w_stride, a, a_stride); \
    }

SCALAR_TILE(f32, f32)
SCALAR_TILE(f16, f16)
SCALAR_TILE(bf16, bf16)
SCALAR_TILE(q4_0, q8_0)
SCALAR_TILE(q4_1, q8_1)
SCALAR_TILE(q5_0, q8_0)
SCALAR_TILE(q5_1, q8_1)
SCALAR_TILE(q8_0, q8_0)
SCALAR_TILE(q8_1, q8_1)
SCALAR_TILE(q2_K, q8_K)
SCALAR_TILE(q3_K, q8_K)
SCALAR_TILE(q4_K, q8_K)
SCALAR_TILE(q5_K, q8_K)
SCALAR_TILE(q6_K, q8_K)
SCALAR_TILE(q8_K, q8_K)
