/* kv/codec_rot: the rot4 and rot3 KV codecs, scalar: byte layout, put/get, the scalar qk/pv
 * kernels (the specification for codec_rot_avx2.c / _avx512.c) and the ops tables.
 *
 * In the family of QuaRot (Ashkboos et al. 2024) and TurboQuant (Zandieh et al. 2025): each K
 * and V vector of a head is rotated by a fixed random orthogonal R (kv/hadamard.h: signs, then
 * a Walsh–Hadamard transform), which spreads outlier channels over all channels and makes the
 * values near-Gaussian; then every 32 rotated values get one f16 scale s and 4-bit (rot4) or
 * 3-bit (rot3) indices into a codebook L tuned for that distribution:  y ~ s L[code].
 * rot4: 4 + 16/32 = 4.5 bits per value; rot3: 3.5.  Layouts in codec_lowbit.h.
 *
 * Attention needs no un-rotation per key: scores use q·k = (R q)·(R k), so q_rotate maps the
 * queries once per range; p·V is linear, so out_unrotate maps the accumulated R (sum p v)
 * back once.  k_get/v_get return vectors in the model's basis.
 *
 * Encoding a block of 32 values y (Lloyd-style, per block): s = max |y| (L's outermost level is
 * 1, so the largest value is exact); codes = nearest levels of y / s; s = sum y L[code] /
 * sum L[code]^2 (the least-squares scale for those codes); codes again; s again; codes again.
 * Measured on K/V of SmolLM2-135M (30 layers, 2048 tokens), relative squared error
 * sum (y - s L)^2 / sum y^2 (K, V):
 *   rot4: uniform 16 levels, s = max/7.5: 0.0075 0.0081;  this codebook and scale: 0.0059 0.0062
 *   rot3: uniform 8 levels,  s = max/3.5: 0.0345 0.0373;  this codebook and scale: 0.0266 0.0280
 * (without the rotation, the uniform rot4 error on K is 0.018: K's outlier channels).
 * Codebooks: Lloyd–Max iterations (300, from uniform levels) on 4M values, each a standard
 * normal sample divided by the largest magnitude among the 32 samples of its block, the result
 * symmetrized and divided by its outermost level. */
#include <math.h>

#include "kv/codec_lowbit.h"
#include "kv/hadamard.h"
#include "ops/f16.h"

/* The largest head dimension the rotating codecs store (stack buffer of put). */
#define ROT_MAX_DIM 4096

const float kvx_rot4_levels[16] = {
    -1.000000f, -0.800257f, -0.639077f, -0.501357f, -0.378143f, -0.264508f, -0.156442f, -0.051788f,
    0.051788f,  0.156442f,  0.264508f,  0.378143f,  0.501357f,  0.639077f,  0.800257f,  1.000000f,
};
const float kvx_rot3_levels[8] = {
    -1.000000f, -0.631835f, -0.355543f, -0.115025f, 0.115025f, 0.355543f, 0.631835f, 1.000000f,
};

static const float *levels_of(int bits) { return bits == 4 ? kvx_rot4_levels : kvx_rot3_levels; }

/* Scale and codes of 32 values (see the file comment) for a codebook of 2 half levels.  The
 * codebook is symmetric, so the nearest level of u is found from |u| and the midpoints between
 * the positive levels (counted, not searched: independent compares) and the sign of u.  The
 * sums run in 4 interleaved partial sums (shorter dependency chains). */
static inline __attribute__((always_inline)) uint16_t quant_block_n(const float *y, const float *L,
                                                                   const int half, uint8_t *codes)
{
    float mid[7];
    for (int k = 0; k < half - 1; k++)
        mid[k] = 0.5f * (L[half + k] + L[half + k + 1]);
    float s = 0;
    for (int j = 0; j < 32; j++)
        s = fabsf(y[j]) > s ? fabsf(y[j]) : s;
    if (!(s > 0) || !(s < INFINITY)) {
        for (int j = 0; j < 32; j++)
            codes[j] = (uint8_t)half;
        return 0;
    }
    for (int pass = 0; pass < 3; pass++) {
        const float inv = 1.0f / s;
        float num[4] = {0}, den[4] = {0};
        for (int j = 0; j < 32; j++) {
            const float a = fabsf(y[j]) * inv;
            int m = 0;
            _Pragma("GCC unroll 8")
            for (int k = 0; k < half - 1; k++)
                m += a > mid[k];
            const int c = y[j] < 0 ? half - 1 - m : half + m;
            codes[j] = (uint8_t)c;
            num[j & 3] += y[j] * L[c];
            den[j & 3] += L[c] * L[c];
        }
        const float nu = (num[0] + num[1]) + (num[2] + num[3]), de = (den[0] + den[1]) + (den[2] + den[3]);
        if (pass < 2 && nu > 0 && de > 0)
            s = nu / de;
    }
    return kvx_f32_to_f16(s < 65504.0f ? s : 65504.0f);
}

static uint16_t quant_block(const float *y, int bits, uint8_t *codes)
{
    if (bits == 4)
        return quant_block_n(y, kvx_rot4_levels, 8, codes);
    return quant_block_n(y, kvx_rot3_levels, 4, codes);
}

/* ---------------------------------------------------------------------------------------------
 * Codes in the page (bit orders in codec_lowbit.h) */

static uint64_t load64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static uint32_t load32(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* Code of channel c, token i of a K tile's codes. */
static uint32_t k_code(const uint8_t *codes, int bits, int32_t dim, int32_t c, int32_t i)
{
    if (bits == 4)
        return (uint32_t)(load64(codes + 8 * (size_t)c) >> (32 * (i & 1) + 4 * (i >> 1))) & 15u;
    uint32_t hi = (load32(codes + 4 * (size_t)(c / 2)) >> (16 * (c & 1) + i)) & 1u;
    uint32_t lo = (load32(codes + 2 * (size_t)dim + 4 * (size_t)c) >> (2 * i)) & 3u;
    return hi << 2 | lo;
}

/* Code of channel j (0..31) of a V block's codes. */
static uint32_t v_code(const uint8_t *blk, int bits, int32_t j)
{
    const int32_t h = j / 16, jj = j % 16;
    if (bits == 4)
        return (uint32_t)(load64(blk + 8 * h) >> (32 * (jj & 1) + 4 * (jj >> 1))) & 15u;
    uint32_t hi = (load32(blk) >> j) & 1u;
    uint32_t lo = (load32(blk + 4 + 4 * h) >> (2 * jj)) & 3u;
    return hi << 2 | lo;
}

static size_t k_region_bytes(int bits, const struct kvx_kv_fmt *f)
{
    return (size_t)((f->page_tokens + KVX_KV_TILE - 1) / KVX_KV_TILE) *
           kvx_rot_k_tile_bytes(bits, f->dim);
}

static size_t v_region_bytes(int bits, const struct kvx_kv_fmt *f)
{
    return kvx_rot_v_codes_off(f) + (size_t)f->page_tokens * kvx_rot_v_codes_bytes(bits, f->dim);
}

/* Rotate k into y (the stack buffer of ROT_MAX_DIM floats). */
static void rotated(const float *x, int32_t dim, float *y)
{
    memcpy(y, x, (size_t)dim * sizeof *y);
    kvx_kv_rotate(y, 1, dim);
}

static void k_put(int bits, uint8_t *data, const struct kvx_kv_fmt *f, int32_t tok, const float *k)
{
    const int32_t dim = f->dim, nb = dim / 32, i = tok % KVX_KV_TILE;
    float y[ROT_MAX_DIM];
    rotated(k, dim, y);
    uint8_t *tile = data + (size_t)(tok / KVX_KV_TILE) * kvx_rot_k_tile_bytes(bits, dim);
    uint8_t *codes = tile + (size_t)nb * 32;
    for (int32_t b = 0; b < nb; b++) {
        uint8_t cb[32];
        uint16_t s = quant_block(y + 32 * b, bits, cb);
        memcpy(tile + ((size_t)b * KVX_KV_TILE + (size_t)i) * 2, &s, 2);
        for (int32_t j = 0; j < 32; j++) {
            const int32_t c = 32 * b + j;
            if (bits == 4) {
                uint8_t *p = codes + 8 * (size_t)c;
                const int sh = 32 * (i & 1) + 4 * (i >> 1);
                uint64_t w = (load64(p) & ~((uint64_t)15 << sh)) | (uint64_t)cb[j] << sh;
                memcpy(p, &w, 8);
            } else {
                uint8_t *ph = codes + 4 * (size_t)(c / 2), *pl = codes + 2 * (size_t)dim + 4 * (size_t)c;
                const int sh = 16 * (c & 1) + i;
                uint32_t wh = (load32(ph) & ~(1u << sh)) | (uint32_t)(cb[j] >> 2) << sh;
                uint32_t wl = (load32(pl) & ~(3u << 2 * i)) | (uint32_t)(cb[j] & 3u) << 2 * i;
                memcpy(ph, &wh, 4);
                memcpy(pl, &wl, 4);
            }
        }
    }
}

static void v_put(int bits, uint8_t *data, const struct kvx_kv_fmt *f, int32_t tok, const float *v)
{
    const int32_t dim = f->dim, nb = dim / 32;
    float y[ROT_MAX_DIM];
    rotated(v, dim, y);
    const size_t bb = bits == 4 ? 16 : 12;
    uint8_t *row = data + kvx_rot_v_codes_off(f) + (size_t)tok * kvx_rot_v_codes_bytes(bits, dim);
    for (int32_t b = 0; b < nb; b++) {
        uint8_t cb[32];
        uint16_t s = quant_block(y + 32 * b, bits, cb);
        memcpy(data + ((size_t)tok * (size_t)nb + (size_t)b) * 2, &s, 2);
        uint8_t *blk = row + (size_t)b * bb;
        if (bits == 4) {
            for (int h = 0; h < 2; h++) {
                uint64_t w = 0;
                for (int jj = 0; jj < 16; jj++)
                    w |= (uint64_t)cb[16 * h + jj] << (32 * (jj & 1) + 4 * (jj >> 1));
                memcpy(blk + 8 * h, &w, 8);
            }
        } else {
            uint32_t w[3] = {0, 0, 0};
            for (int j = 0; j < 32; j++) {
                w[0] |= (uint32_t)(cb[j] >> 2) << j;
                w[1 + j / 16] |= (uint32_t)(cb[j] & 3u) << (2 * (j % 16));
            }
            memcpy(blk, w, 12);
        }
    }
}

static void k_get(int bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                  int32_t tok, float *k)
{
    const int32_t dim = f->dim, nb = dim / 32, i = tok % KVX_KV_TILE;
    const float *L = levels_of(bits);
    const uint8_t *tile = b->data + (size_t)(tok / KVX_KV_TILE) * kvx_rot_k_tile_bytes(bits, dim);
    const uint16_t *sc = (const uint16_t *)tile;
    for (int32_t c = 0; c < dim; c++)
        k[c] = kvx_f16_to_f32(sc[(c / 32) * KVX_KV_TILE + i]) *
               L[k_code(tile + (size_t)nb * 32, bits, dim, c, i)];
    kvx_kv_unrotate(k, 1, dim);
}

static void v_get(int bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                  int32_t tok, float *v)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const float *L = levels_of(bits);
    const uint16_t *sc = (const uint16_t *)b->data + (size_t)tok * (size_t)nb;
    const uint8_t *row = b->data + kvx_rot_v_codes_off(f) + (size_t)tok * kvx_rot_v_codes_bytes(bits, dim);
    const size_t bb = bits == 4 ? 16 : 12;
    for (int32_t d = 0; d < dim; d++)
        v[d] = kvx_f16_to_f32(sc[d / 32]) * L[v_code(row + (size_t)(d / 32) * bb, bits, d % 32)];
    kvx_kv_unrotate(v, 1, dim);
}

/* qk, scalar (the specification).  With K stored as s_tb L[code] in the rotated basis and q
 * already rotated:
 *   scores[i*ld + t - t0] = sum_b s_tb (sum_{c in block b} q_ic L[code_t[c]])
 * for t0 <= t < t1 (t0 % 16 == 0).  fp32; block sums in channel order, then blocks in order.
 * The SIMD kernels match within 1e-5 x sum_c |q_ic k_tc| (test_kv_codec_lowbit.c). */
static void qk(int bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
               int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const float *L = levels_of(bits);
    for (int32_t tile0 = t0; tile0 < t1; tile0 += KVX_KV_TILE) {
        const uint8_t *tile = b->data + (size_t)(tile0 / KVX_KV_TILE) * kvx_rot_k_tile_bytes(bits, dim);
        const uint16_t *sc = (const uint16_t *)tile;
        const uint8_t *codes = tile + (size_t)nb * 32;
        const int32_t n_t = t1 - tile0 < KVX_KV_TILE ? t1 - tile0 : KVX_KV_TILE;
        for (int32_t i0 = 0; i0 < n_q; i0 += 4) { /* each block decoded once per 4 queries */
            const int32_t nq = n_q - i0 < 4 ? n_q - i0 : 4;
            float acc[4][KVX_KV_TILE] = {{0}};
            for (int32_t blk = 0; blk < nb; blk++) {
                float kv[32][KVX_KV_TILE], part[4][KVX_KV_TILE] = {{0}};
                for (int32_t c = 0; c < 32; c++)
                    for (int32_t j = 0; j < KVX_KV_TILE; j++)
                        kv[c][j] = L[k_code(codes, bits, dim, 32 * blk + c, j)];
                for (int32_t i = 0; i < nq; i++) {
                    const float *qi = q + (size_t)(i0 + i) * (size_t)dim + (size_t)(32 * blk);
                    for (int32_t c = 0; c < 32; c++)
                        for (int32_t j = 0; j < KVX_KV_TILE; j++)
                            part[i][j] += qi[c] * kv[c][j];
                    for (int32_t j = 0; j < KVX_KV_TILE; j++)
                        acc[i][j] += kvx_f16_to_f32(sc[blk * KVX_KV_TILE + j]) * part[i][j];
                }
            }
            for (int32_t i = 0; i < nq; i++)
                for (int32_t j = 0; j < n_t; j++)
                    scores[(int64_t)(i0 + i) * ld + (tile0 - t0) + j] = acc[i][j];
        }
    }
}

/* pv, scalar (the specification), in the rotated basis:
 *   acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + t - t0] * (s_tb L[code_t[d]])   (b = d / 32)
 * fp32, tokens in order (out_unrotate maps acc back after the range).  SIMD matches within
 * 1e-5 x sum_t p_t |v_t[d]|. */
static void pv(int bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
               int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const float *L = levels_of(bits);
    const size_t bb = bits == 4 ? 16 : 12;
    for (int32_t t = t0; t < t1; t++) {
        const uint16_t *sc = (const uint16_t *)b->data + (size_t)t * (size_t)nb;
        const uint8_t *row = b->data + kvx_rot_v_codes_off(f) + (size_t)t * kvx_rot_v_codes_bytes(bits, dim);
        for (int32_t blk = 0; blk < nb; blk++) {
            const float s = kvx_f16_to_f32(sc[blk]);
            float v[32];
            for (int32_t j = 0; j < 32; j++)
                v[j] = s * L[v_code(row + (size_t)blk * bb, bits, j)];
            for (int32_t i = 0; i < n_q; i++) {
                const float w = p[(int64_t)i * ld + (t - t0)];
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)(32 * blk);
                for (int32_t j = 0; j < 32; j++)
                    ai[j] += w * v[j];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * rot4 and rot3 entry points and ops tables */

#define ROT_CODEC(name, nbits)                                                                  \
    static size_t k_region_bytes_##name(const struct kvx_kv_fmt *f)                             \
    {                                                                                           \
        return k_region_bytes(nbits, f);                                                        \
    }                                                                                           \
    static size_t v_region_bytes_##name(const struct kvx_kv_fmt *f)                             \
    {                                                                                           \
        return v_region_bytes(nbits, f);                                                        \
    }                                                                                           \
    static void k_put_##name(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,         \
                             int64_t slot0, int32_t tok, const float *k)                        \
    {                                                                                           \
        (void)state;                                                                            \
        (void)slot0;                                                                            \
        k_put(nbits, data, f, tok, k);                                                          \
    }                                                                                           \
    static void v_put_##name(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,         \
                             int64_t slot0, int32_t tok, const float *v)                        \
    {                                                                                           \
        (void)state;                                                                            \
        (void)slot0;                                                                            \
        v_put(nbits, data, f, tok, v);                                                          \
    }                                                                                           \
    static void k_get_##name(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,          \
                             int32_t tok, float *k)                                             \
    {                                                                                           \
        k_get(nbits, b, f, tok, k);                                                             \
    }                                                                                           \
    static void v_get_##name(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,          \
                             int32_t tok, float *v)                                             \
    {                                                                                           \
        v_get(nbits, b, f, tok, v);                                                             \
    }                                                                                           \
    void kvx_kv_qk_##name##_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,    \
                                   int32_t t0, int32_t t1, const float *q, int32_t n_q,         \
                                   float *scores, int64_t ld)                                   \
    {                                                                                           \
        qk(nbits, b, f, t0, t1, q, n_q, scores, ld);                                            \
    }                                                                                           \
    void kvx_kv_pv_##name##_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,    \
                                   int32_t t0, int32_t t1, const float *p, int32_t n_q,         \
                                   int64_t ld, float *acc)                                      \
    {                                                                                           \
        pv(nbits, b, f, t0, t1, p, n_q, ld, acc);                                               \
    }

ROT_CODEC(rot4, 4)
ROT_CODEC(rot3, 3)

#define OPS_ROT(cd, isa, nbits)                                                               \
    {                                                                                           \
        .name = #cd, .bits = nbits + 0.5, .k_region_bytes = k_region_bytes_##cd,             \
        .v_region_bytes = v_region_bytes_##cd, .k_put = k_put_##cd, .v_put = v_put_##cd,  \
        .k_get = k_get_##cd, .v_get = v_get_##cd, .qk = kvx_kv_qk_##cd##_##isa,           \
        .pv = kvx_kv_pv_##cd##_##isa, .q_rotate = kvx_kv_rotate,                              \
        .out_unrotate = kvx_kv_unrotate,                                                        \
    }

#if defined(__x86_64__) || defined(__i386__)
#define OPS_ROT_TABLE(cd, nbits)                                                              \
    {                                                                                           \
        [KVX_ISA_SCALAR] = OPS_ROT(cd, scalar, nbits),                                        \
        [KVX_ISA_AVX2] = OPS_ROT(cd, avx2, nbits),                                            \
        [KVX_ISA_AVX512] = OPS_ROT(cd, avx512, nbits),                                        \
    }
#else
#define OPS_ROT_TABLE(cd, nbits)                                                              \
    {                                                                                           \
        [KVX_ISA_SCALAR] = OPS_ROT(cd, scalar, nbits),                                        \
        [KVX_ISA_AVX2] = OPS_ROT(cd, scalar, nbits),                                          \
        [KVX_ISA_AVX512] = OPS_ROT(cd, scalar, nbits),                                        \
    }
#endif

static const struct kvx_kv_codec_ops ops_rot4[KVX_ISA_COUNT] = OPS_ROT_TABLE(rot4, 4);
static const struct kvx_kv_codec_ops ops_rot3[KVX_ISA_COUNT] = OPS_ROT_TABLE(rot3, 3);

const struct kvx_kv_codec_ops *kvx_kv_codec_rot4(enum kvx_isa isa)
{
    return &ops_rot4[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];
}

const struct kvx_kv_codec_ops *kvx_kv_codec_rot3(enum kvx_isa isa)
{
    return &ops_rot3[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];
}
