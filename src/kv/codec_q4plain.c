/* kv/codec_q4plain: the q4plain KV codec, scalar (the specification for every SIMD variant).
 * It is also the storage of the q4 codec, which centres and rotates the vectors before they
 * come here (kv/codec_q4.c).
 *
 * Values: per (token, group of 32 channels) a 4-bit code with an f16 scale and minimum, like
 * llama.cpp's q4_1:  x' = d' x_q + m',  x_q in 0..15.  m' is the group's minimum rounded down
 * to f16 and d' = (max - m') / 15 rounded up to f16, so every (x - m') / d' lies in [0, 15] and
 * x_q = rint((x - m') / d') gives |x - x'| <= d'/2 (plus fp32 rounding of d' x_q + m'), for
 * values within half's range (|x| <= 65504).  Byte layout: kv/codec_quant.h.
 * Owns put/get, the scalar qk/pv kernels and the ops table; SIMD kernels live in
 * codec_quant_avx2.c, codec_quant_avx512.c, codec_quant_avx512vnni.c. */
#include <math.h>
#include <stdbool.h>

#include "kv/codec_quant.h"
#include "ops/cpu.h"
#include "ops/f16.h"

size_t kvx_kv_k_region_bytes_q4plain(const struct kvx_kv_fmt *f)
{
    size_t tiles = ((size_t)f->page_tokens + KVX_KV_TILE - 1) / KVX_KV_TILE;
    return tiles * kvx_kv_q4_block_bytes(f->dim);
}

size_t kvx_kv_v_region_bytes_q4plain(const struct kvx_kv_fmt *f) { return kvx_kv_k_region_bytes_q4plain(f); }

/* x rounded to a half <= x (NaN kept; below -65504: -65504). */
static uint16_t f16_down(float x)
{
    uint16_t h = kvx_f32_to_f16(x);
    if ((h & 0x7fffu) > 0x7c00u)
        return h;
    if (kvx_f16_to_f32(h) > x)
        h = h == 0 ? 0x8001u : (h & 0x8000u) ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
    return (h & 0x7fffu) >= 0x7c00u ? (uint16_t)((h & 0x8000u) | 0x7bffu) : h;
}

/* x >= 0 rounded to a half >= x (at most 65504). */
static uint16_t f16_up(float x)
{
    uint16_t h = kvx_f32_to_f16(x);
    if ((h & 0x7fffu) > 0x7c00u)
        return 0x7bff;
    if (kvx_f16_to_f32(h) < x)
        h = (uint16_t)(h + 1);
    return (h & 0x7fffu) >= 0x7c00u ? 0x7bff : h;
}

/* Codes 0..15 of one group of 32 values; *d, *m: its f16 scale and minimum. */
static void quantize_group(const float *x, uint8_t *codes, uint16_t *d, uint16_t *m)
{
    float lo = x[0], hi = x[0];
    for (int32_t c = 1; c < KVX_KV_QGROUP; c++) {
        lo = x[c] < lo ? x[c] : lo;
        hi = x[c] > hi ? x[c] : hi;
    }
    *m = f16_down(lo);
    float mf = kvx_f16_to_f32(*m);
    *d = f16_up((hi - mf) / 15.0f);
    float df = kvx_f16_to_f32(*d);
    for (int32_t c = 0; c < KVX_KV_QGROUP; c++) {
        float v = df > 0.0f ? (x[c] - mf) / df : 0.0f;
        v = v >= 0.0f ? v : 0.0f; /* also maps NaN to a code */
        v = v <= 15.0f ? v : 15.0f;
        codes[c] = (uint8_t)kvx_kv_rint(v);
    }
}

static size_t block_off(int32_t dim, int32_t tok)
{
    return (size_t)(tok / KVX_KV_TILE) * kvx_kv_q4_block_bytes(dim);
}

/* Byte of K channel c of tile token t, and the nibble (0 low, 4 high) inside it. */
static size_t k_byte(int32_t c, int32_t t) { return (size_t)(c / 8) * 64 + (size_t)t * 4 + (size_t)(c % 4); }
static int k_shift(int32_t c) { return c % 8 < 4 ? 0 : 4; }
/* Byte of V channel c in a token's row, and its nibble. */
static size_t v_byte(int32_t c) { return (size_t)(c / 32) * 16 + (size_t)(c % 16); }
static int v_shift(int32_t c) { return c % 32 < 16 ? 0 : 4; }

/* Quantize the dim values x of block token t: codes into `base` (K: the tile, laid out by
 * k_byte; V: the token's row, by v_byte), scales d[g][t] and m[g][t] at `scales`.  Writes only
 * token t's nibbles. */
static void put_groups(const float *x, int32_t dim, int32_t t, bool k_layout, uint8_t *base,
                       uint16_t *scales)
{
    const int32_t ng = dim / KVX_KV_QGROUP;
    for (int32_t g = 0; g < ng; g++) {
        uint8_t codes[KVX_KV_QGROUP];
        quantize_group(x + g * KVX_KV_QGROUP, codes, &scales[g * KVX_KV_TILE + t],
                       &scales[(ng + g) * KVX_KV_TILE + t]);
        for (int32_t c = g * KVX_KV_QGROUP; c < (g + 1) * KVX_KV_QGROUP; c++) {
            uint8_t *byte = base + (k_layout ? k_byte(c, t) : v_byte(c));
            int sh = k_layout ? k_shift(c) : v_shift(c);
            *byte = (uint8_t)((*byte & ~(0xfu << sh)) | (unsigned)codes[c % KVX_KV_QGROUP] << sh);
        }
    }
}

void kvx_kv_k_put_q4plain(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                     int32_t tok, const float *k)
{
    (void)state;
    (void)slot0;
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    uint8_t *tile = data + block_off(dim, tok);
    uint16_t *scales = (uint16_t *)(tile + (size_t)8 * (size_t)dim);
    put_groups(k, dim, t, true, tile, scales);
}

void kvx_kv_v_put_q4plain(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                     int32_t tok, const float *v)
{
    (void)state;
    (void)slot0;
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE;
    uint8_t *blk = data + block_off(dim, tok);
    uint8_t *row = blk + (size_t)t * (size_t)(dim / 2);
    uint16_t *scales = (uint16_t *)(blk + (size_t)8 * (size_t)dim);
    put_groups(v, dim, t, false, row, scales);
}

void kvx_kv_k_get_q4plain(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                     float *k)
{
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE, ng = dim / KVX_KV_QGROUP;
    const uint8_t *tile = b->data + block_off(dim, tok);
    const uint16_t *scales = (const uint16_t *)(tile + (size_t)8 * (size_t)dim);
    for (int32_t c = 0; c < dim; c++) {
        int32_t g = c / KVX_KV_QGROUP, code = (tile[k_byte(c, t)] >> k_shift(c)) & 0xf;
        k[c] = kvx_f16_to_f32(scales[g * KVX_KV_TILE + t]) * (float)code +
               kvx_f16_to_f32(scales[(ng + g) * KVX_KV_TILE + t]);
    }
}

void kvx_kv_v_get_q4plain(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                     float *v)
{
    const int32_t dim = f->dim, t = tok % KVX_KV_TILE, ng = dim / KVX_KV_QGROUP;
    const uint8_t *blk = b->data + block_off(dim, tok);
    const uint8_t *row = blk + (size_t)t * (size_t)(dim / 2);
    const uint16_t *scales = (const uint16_t *)(blk + (size_t)8 * (size_t)dim);
    for (int32_t c = 0; c < dim; c++) {
        int32_t g = c / KVX_KV_QGROUP, code = (row[v_byte(c)] >> v_shift(c)) & 0xf;
        v[c] = kvx_f16_to_f32(scales[g * KVX_KV_TILE + t]) * (float)code +
               kvx_f16_to_f32(scales[(ng + g) * KVX_KV_TILE + t]);
    }
}

/* qk, q4 K, scalar (the specification).
 *   scores[i*ld + t - t0] = sum_g (dk_g[t] * dq_ig) * I_ig[t] + mk_g[t] * S_ig,
 *   I_ig[t] = sum_{c in g} qi_ic * k_q_c[t]  (exact int32, k_q in 0..15; qi: the query quantized
 *   per group as in kv/codec_quant.h),  S_ig = sum_{c in g} q_ic  (the unquantized query)
 * for i < n_q, t0 <= t < t1 (t0 % 16 == 0); groups added in order in fp32.  The score is
 * sum_c (q'_c d_k k_q + q_c m_k) with q' the quantized query: the minimum's share is exact.
 * SIMD variants: same integers, fp32 epilogue and S_ig rounded differently (FMA, summation
 * order): within 1e-6 x sum_g (|dk dq I| + |mk| sum_c |q_c|) (test_kv_codec_quant.c). */
void kvx_kv_qk_q4plain_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const int32_t dim = f->dim, ng = dim / KVX_KV_QGROUP;
    const size_t stride = kvx_kv_q4_block_bytes(dim);
    struct kvx_kv_qquery qq;
    for (int32_t i0 = 0; i0 < n_q; i0 += KVX_KV_QQ_ROWS) {
        int32_t nb = n_q - i0 < KVX_KV_QQ_ROWS ? n_q - i0 : KVX_KV_QQ_ROWS;
        for (int32_t c0 = 0; c0 < dim; c0 += KVX_KV_QQ_CH) {
            int32_t nc = dim - c0 < KVX_KV_QQ_CH ? dim - c0 : KVX_KV_QQ_CH;
            kvx_kv_qquery_scalar(q + (size_t)i0 * (size_t)dim, dim, nb, c0, nc, &qq);
            for (int32_t tile0 = t0; tile0 < t1; tile0 += KVX_KV_TILE) {
                const uint8_t *tile = b->data + (size_t)(tile0 / KVX_KV_TILE) * stride;
                const uint16_t *sc = (const uint16_t *)(tile + (size_t)8 * (size_t)dim);
                int32_t n_t = t1 - tile0 < KVX_KV_TILE ? t1 - tile0 : KVX_KV_TILE;
                for (int32_t i = 0; i < nb; i++)
                    for (int32_t t = 0; t < n_t; t++) {
                        float *out = scores + (int64_t)(i0 + i) * ld + (tile0 - t0) + t;
                        float s = c0 == 0 ? 0.0f : *out;
                        for (int32_t g = 0; g < nc / KVX_KV_QGROUP; g++) {
                            int32_t acc = 0;
                            for (int32_t c = g * KVX_KV_QGROUP; c < (g + 1) * KVX_KV_QGROUP; c++) {
                                int32_t ch = c0 + c;
                                int32_t k = (tile[k_byte(ch, t)] >> k_shift(ch)) & 0xf;
                                acc += (int32_t)qq.q[i][c] * k;
                            }
                            int32_t gg = c0 / KVX_KV_QGROUP + g;
                            float w = kvx_f16_to_f32(sc[gg * KVX_KV_TILE + t]) * qq.d[i][g];
                            s += (float)acc * w;
                            s += kvx_f16_to_f32(sc[(ng + gg) * KVX_KV_TILE + t]) * qq.sum[i][g];
                        }
                        *out = s;
                    }
            }
        }
    }
}

/* pv, q4 V, scalar (the specification).
 *   acc[i*dim + d] += sum_{t0 <= t < t1} (w_ig[t] * v_q_d[t] + p_it * mv_g[t]),
 *   w_ig[t] = p_it * dv_g[t],  p_it = p[i*ld + t - t0]  (g the group of d)
 * for i < n_q, any t0 < t1 <= page_tokens; fp32, tokens in order.  SIMD variants sum the
 * minimum's share sum_t p_it mv_g[t] separately (16 tokens per lane, then across lanes):
 * within 1e-5 x sum_t (|w v_q| + |p mv|) (tests). */
void kvx_kv_pv_q4plain_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const int32_t dim = f->dim, ng = dim / KVX_KV_QGROUP;
    for (int32_t t = t0; t < t1; t++) {
        const uint8_t *blk = b->data + block_off(dim, t);
        const uint8_t *row = blk + (size_t)(t % KVX_KV_TILE) * (size_t)(dim / 2);
        const uint16_t *sc = (const uint16_t *)(blk + (size_t)8 * (size_t)dim);
        for (int32_t g = 0; g < ng; g++) {
            float d = kvx_f16_to_f32(sc[g * KVX_KV_TILE + t % KVX_KV_TILE]);
            float m = kvx_f16_to_f32(sc[(ng + g) * KVX_KV_TILE + t % KVX_KV_TILE]);
            for (int32_t i = 0; i < n_q; i++) {
                float pt = p[(int64_t)i * ld + (t - t0)], w = pt * d, pm = pt * m;
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)g * KVX_KV_QGROUP;
                for (int32_t c = 0; c < KVX_KV_QGROUP; c++) {
                    int32_t ch = g * KVX_KV_QGROUP + c;
                    ai[c] += w * (float)((row[v_byte(ch)] >> v_shift(ch)) & 0xf) + pm;
                }
            }
        }
    }
}

KVX_KV_QUANT_CODEC(q4plain, 5.0)
