/* kv/codec_q8: the q8 KV codec, scalar (the specification for every SIMD variant), and the
 * query quantization every q8/q4 qk kernel starts with.
 *
 * Values: per (token, group of 32 channels) a symmetric int8 code with an f16 scale, like
 * llama.cpp's q8_0:  d = amax / 127 rounded to f16 (d'),  x_int = clamp(rint(x / d'), -127, 127),
 * x' = d' x_int.  Error: |x - x'| <= d'/2 + 127 |d - d'| (the second term is f16's rounding of
 * d, at most 127 d 2^-11 = 0.062 d' for a normal d'; the clamp only bites by that much).
 * Byte layout: kv/codec_quant.h.  Owns put/get, the scalar qk/pv kernels and the ops table;
 * SIMD kernels live in codec_quant_avx2.c, codec_quant_avx512.c, codec_quant_avx512vnni.c. */
#include <math.h>

#include "kv/codec_quant.h"
#include "ops/cpu.h"
#include "ops/f16.h"

size_t kvx_kv_k_region_bytes_q8(const struct kvx_kv_fmt *f)
{
    size_t tiles = ((size_t)f->page_tokens + KVX_KV_TILE - 1) / KVX_KV_TILE;
    return tiles * kvx_kv_q8_block_bytes(f->dim);
}

size_t kvx_kv_v_region_bytes_q8(const struct kvx_kv_fmt *f) { return kvx_kv_k_region_bytes_q8(f); }

/* The f16 scale of one group of n values and their codes (d' and x_int above). */
static uint16_t quantize_group(const float *x, int32_t n, int8_t *out)
{
    float amax = 0.0f;
    for (int32_t c = 0; c < n; c++)
        amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    uint16_t h = kvx_f32_to_f16(amax / 127.0f);
    if ((h & 0x7fffu) > 0x7bffu)
        h = 0x7bff; /* beyond half's range (or NaN): the largest finite scale */
    float d = kvx_f16_to_f32(h);
    for (int32_t c = 0; c < n; c++) {
        float v = d > 0.0f ? x[c] / d : 0.0f;
        v = v >= -127.0f ? v : -127.0f; /* also maps NaN to a code */
        v = v <= 127.0f ? v : 127.0f;
        out[c] = (int8_t)kvx_kv_rint(v);
    }
    return h;
}

/* Offset of the 16-token block holding tok.  Inside a K tile the codes of channels 4j..4j+3
 * start at 64 j, token t's 4 bytes at + 4 t; inside a V block token t's row starts at t dim.
 * Scales d[g][t] follow the 16 dim code bytes. */
static size_t block_off(int32_t dim, int32_t tok)
{
    return (size_t)(tok / KVX_KV_TILE) * kvx_kv_q8_block_bytes(dim);
}

void kvx_kv_k_put_q8(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                     int32_t tok, const float *k)
{
    (void)state;
    (void)slot0;
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    uint8_t *tile = data + block_off(dim, tok);
    uint16_t *scales = (uint16_t *)(tile + (size_t)KVX_KV_TILE * (size_t)dim);
    int8_t codes[KVX_KV_QGROUP];
    for (int32_t g = 0; g < dim / KVX_KV_QGROUP; g++) {
        scales[g * KVX_KV_TILE + t] = quantize_group(k + g * KVX_KV_QGROUP, KVX_KV_QGROUP, codes);
        for (int32_t c = 0; c < KVX_KV_QGROUP; c++) {
            int32_t ch = g * KVX_KV_QGROUP + c;
            tile[(size_t)(ch / 4) * 64 + (size_t)t * 4 + (size_t)(ch % 4)] = (uint8_t)(codes[c] + 128);
        }
    }
}

void kvx_kv_v_put_q8(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                     int32_t tok, const float *v)
{
    (void)state;
    (void)slot0;
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    uint8_t *blk = data + block_off(dim, tok);
    int8_t *row = (int8_t *)blk + (size_t)t * (size_t)dim;
    uint16_t *scales = (uint16_t *)(blk + (size_t)KVX_KV_TILE * (size_t)dim);
    for (int32_t g = 0; g < dim / KVX_KV_QGROUP; g++)
        scales[g * KVX_KV_TILE + t] = quantize_group(v + g * KVX_KV_QGROUP, KVX_KV_QGROUP,
                                                     row + g * KVX_KV_QGROUP);
}

void kvx_kv_k_get_q8(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                     float *k)
{
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    const uint8_t *tile = b->data + block_off(dim, tok);
    const uint16_t *scales = (const uint16_t *)(tile + (size_t)KVX_KV_TILE * (size_t)dim);
    for (int32_t c = 0; c < dim; c++) {
        int32_t code = (int32_t)tile[(size_t)(c / 4) * 64 + (size_t)t * 4 + (size_t)(c % 4)] - 128;
        k[c] = kvx_f16_to_f32(scales[(c / KVX_KV_QGROUP) * KVX_KV_TILE + t]) * (float)code;
    }
}

void kvx_kv_v_get_q8(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                     float *v)
{
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    const uint8_t *blk = b->data + block_off(dim, tok);
    const int8_t *row = (const int8_t *)blk + (size_t)t * (size_t)dim;
    const uint16_t *scales = (const uint16_t *)(blk + (size_t)KVX_KV_TILE * (size_t)dim);
    for (int32_t d = 0; d < dim; d++)
        v[d] = kvx_f16_to_f32(scales[(d / KVX_KV_QGROUP) * KVX_KV_TILE + t]) * (float)row[d];
}

/* Query quantization (the rule in kv/codec_quant.h), scalar. */
void kvx_kv_qquery_scalar(const float *q, int32_t dim, int32_t nq, int32_t c0, int32_t nc,
                          struct kvx_kv_qquery *out)
{
    for (int32_t i = 0; i < nq; i++)
        for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
            const float *x = q + (size_t)i * (size_t)dim + (size_t)c0 + (size_t)g * KVX_KV_QGROUP;
            int8_t *qi = out->q[i] + g * KVX_KV_QGROUP;
            float amax = 0.0f, sum = 0.0f;
            for (int32_t c = 0; c < KVX_KV_QGROUP; c++) {
                amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
                sum += x[c];
            }
            int32_t isum = 0;
            float id = amax >= KVX_KV_QQ_TINY ? 127.0f / amax : 0.0f;
            for (int32_t c = 0; c < KVX_KV_QGROUP; c++) {
                float v = x[c] * id;
                v = v >= -127.0f ? v : -127.0f;
                v = v <= 127.0f ? v : 127.0f;
                qi[c] = (int8_t)kvx_kv_rint(v);
                isum += qi[c];
            }
            out->d[i][g] = amax >= KVX_KV_QQ_TINY ? amax / 127.0f : 0.0f;
            out->sum[i][g] = sum;
            out->isum[i][g] = isum;
        }
}

/* qk, q8 K, scalar (the specification).
 *   scores[i*ld + t - t0] = sum_g (dk_g[t] * dq_ig) * I_ig[t],
 *   I_ig[t] = sum_{c in g} qi_ic * k_int_c[t]  (exact int32; qi: the query quantized per
 *   group as in kv/codec_quant.h)
 * for i < n_q, t0 <= t < t1 (t0 % 16 == 0); groups added in order g = 0, 1, ... in fp32.
 * So the score is q'·k' for the quantized query q' (|q - q'| <= dq/2 per channel) and the
 * stored key k'.  SIMD variants: same integers, fp32 epilogue rounded differently (FMA):
 * within 1e-6 x sum_g |dk dq I| (test_kv_codec_quant.c). */
void kvx_kv_qk_q8_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const int32_t dim = f->dim;
    const size_t stride = kvx_kv_q8_block_bytes(dim);
    struct kvx_kv_qquery qq;
    for (int32_t i0 = 0; i0 < n_q; i0 += KVX_KV_QQ_ROWS) {
        int32_t nb = n_q - i0 < KVX_KV_QQ_ROWS ? n_q - i0 : KVX_KV_QQ_ROWS;
        for (int32_t c0 = 0; c0 < dim; c0 += KVX_KV_QQ_CH) {
            int32_t nc = dim - c0 < KVX_KV_QQ_CH ? dim - c0 : KVX_KV_QQ_CH;
            kvx_kv_qquery_scalar(q + (size_t)i0 * (size_t)dim, dim, nb, c0, nc, &qq);
            for (int32_t tile0 = t0; tile0 < t1; tile0 += KVX_KV_TILE) {
                const uint8_t *tile = b->data + (size_t)(tile0 / KVX_KV_TILE) * stride;
                const uint16_t *dk = (const uint16_t *)(tile + (size_t)KVX_KV_TILE * (size_t)dim);
                int32_t n_t = t1 - tile0 < KVX_KV_TILE ? t1 - tile0 : KVX_KV_TILE;
                for (int32_t i = 0; i < nb; i++)
                    for (int32_t t = 0; t < n_t; t++) {
                        float *out = scores + (int64_t)(i0 + i) * ld + (tile0 - t0) + t;
                        float s = c0 == 0 ? 0.0f : *out;
                        for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
                            int32_t acc = 0;
                            for (int32_t c = g * KVX_KV_QGROUP; c < (g + 1) * KVX_KV_QGROUP; c++) {
                                int32_t ch = c0 + c;
                                int32_t k = (int32_t)tile[(size_t)(ch / 4) * 64 + (size_t)t * 4 +
                                                          (size_t)(ch % 4)] - 128;
                                acc += (int32_t)qq.q[i][c] * k;
                            }
                            int32_t gg = c0 / KVX_KV_QGROUP + g;
                            float w = kvx_f16_to_f32(dk[gg * KVX_KV_TILE + t]) * qq.d[i][g];
                            s += (float)acc * w;
                        }
                        *out = s;
                    }
            }
        }
    }
}

/* pv, q8 V, scalar (the specification).
 *   acc[i*dim + d] += sum_{t0 <= t < t1} w_ig[t] * v_int_d[t],  w_ig[t] = p[i*ld + t - t0] * dv_g[t]
 * (g the group of d) for i < n_q, any t0 < t1 <= page_tokens; fp32, tokens in order.  SIMD
 * variants accumulate the same products with FMA: within 1e-5 x sum_t |w v_int| (tests). */
void kvx_kv_pv_q8_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const int32_t dim = f->dim;
    for (int32_t t = t0; t < t1; t++) {
        const uint8_t *blk = b->data + (size_t)(t / KVX_KV_TILE) * kvx_kv_q8_block_bytes(dim);
        const int8_t *row = (const int8_t *)blk + (size_t)(t % KVX_KV_TILE) * (size_t)dim;
        const uint16_t *dv = (const uint16_t *)(blk + (size_t)KVX_KV_TILE * (size_t)dim);
        for (int32_t g = 0; g < dim / KVX_KV_QGROUP; g++) {
            float d = kvx_f16_to_f32(dv[g * KVX_KV_TILE + t % KVX_KV_TILE]);
            for (int32_t i = 0; i < n_q; i++) {
                float w = p[(int64_t)i * ld + (t - t0)] * d;
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)g * KVX_KV_QGROUP;
                for (int32_t c = 0; c < KVX_KV_QGROUP; c++)
                    ai[c] += w * (float)row[g * KVX_KV_QGROUP + c];
            }
        }
    }
}

KVX_KV_QUANT_CODEC(q8, 8.5)
