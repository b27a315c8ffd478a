/* kv/codec_f16: the f16 KV codec, scalar (the specification for every SIMD variant).
 *
 * Storage of one head's region of one page (page_tokens tokens, dim values per token):
 *   K: tiles of 16 tokens, channel-major inside a tile: K[tile][c][t % 16] (IEEE half)
 *   V: token-major: V[t][d] (IEEE half)
 * Stores round to the nearest representable value (ops/f16.h for half).  Owns the byte layout,
 * put/get and the scalar qk/pv kernels; the SIMD kernels live in
 * codec_avx2.c / codec_avx512.c, the ops tables in codec.c. */
#include "kv/codec.h"

#include <string.h>

#include "ops/f16.h"

/* K: whole tiles of 16 tokens (page_tokens is a multiple of 16 in any valid layout). */
size_t kvx_kv_k_region_bytes_f16(const struct kvx_kv_fmt *f)
{
    const int32_t page_tokens = f->page_tokens, dim = f->dim;
    size_t tiles = ((size_t)page_tokens + KVX_KV_TILE - 1) / KVX_KV_TILE;
    return tiles * KVX_KV_TILE * (size_t)dim * sizeof(uint16_t);
}

size_t kvx_kv_v_region_bytes_f16(const struct kvx_kv_fmt *f)
{
    const int32_t page_tokens = f->page_tokens, dim = f->dim;
    return (size_t)page_tokens * (size_t)dim * sizeof(uint16_t);
}

/* Index of K[tok][c] in the tiled layout. */
static size_t k_index(int32_t dim, int32_t tok, int32_t c)
{
    return ((size_t)(tok / KVX_KV_TILE) * (size_t)dim + (size_t)c) * KVX_KV_TILE +
           (size_t)(tok % KVX_KV_TILE);
}

void kvx_kv_k_put_f16(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                      int64_t slot0, int32_t tok, const float *k)
{
    (void)state;
    (void)slot0;
    void *region = data;
    const int32_t dim = f->dim;
    uint16_t *K = region;
    for (int32_t c = 0; c < dim; c++)
        K[k_index(dim, tok, c)] = kvx_f32_to_f16(k[c]);
}

void kvx_kv_v_put_f16(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                      int64_t slot0, int32_t tok, const float *v)
{
    (void)state;
    (void)slot0;
    void *region = data;
    const int32_t dim = f->dim;
    uint16_t *row = (uint16_t *)region + (size_t)tok * (size_t)dim;
    for (int32_t d = 0; d < dim; d++)
        row[d] = kvx_f32_to_f16(v[d]);
}

void kvx_kv_k_get_f16(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                      int32_t tok, float *k)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    const uint16_t *K = region;
    for (int32_t c = 0; c < dim; c++)
        k[c] = kvx_f16_to_f32(K[k_index(dim, tok, c)]);
}

void kvx_kv_v_get_f16(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                      int32_t tok, float *v)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    const uint16_t *row = (const uint16_t *)region + (size_t)tok * (size_t)dim;
    for (int32_t d = 0; d < dim; d++)
        v[d] = kvx_f16_to_f32(row[d]);
}

/* Copies for compaction.  K: destination tile by tile; each channel's row piece comes from
 * at most two source tile rows (a whole destination row: both rows through a 32-value buffer,
 * fixed-size copies; otherwise element by element, in increasing order, which is safe when
 * the ranges overlap with to < from).  V: one block of rows (memmove). */
void kvx_kv_k_copy_f16(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                       const struct kvx_kv_fmt *f)
{
    uint16_t *D = (void *)dst;
    const uint16_t *S = (const void *)src;
    const int32_t dim = f->dim, T = KVX_KV_TILE;
    for (int32_t i = 0; i < n;) {
        const int32_t td = to + i, ts = from + i, off = ts % T;
        const int32_t len = T - td % T < n - i ? T - td % T : n - i;
        const int32_t a = T - off < len ? T - off : len; /* from the first source tile */
        for (int32_t c = 0; c < dim; c++) {
            uint16_t *d = D + k_index(dim, td, c);
            const uint16_t *s0 = S + k_index(dim, ts, c);
            if (len == T && a < T) { /* rows of source tiles ts/16 and ts/16 + 1 */
                uint16_t buf[2 * KVX_KV_TILE];
                memcpy(buf, s0 - off, sizeof buf / 2);
                memcpy(buf + T, S + k_index(dim, ts + a, c), sizeof buf / 2);
                memcpy(d, buf + off, sizeof buf / 2);
                continue;
            }
            for (int32_t e = 0; e < a; e++)
                d[e] = s0[e];
            for (int32_t e = a; e < len; e++)
                d[e] = S[k_index(dim, ts + e, c)];
        }
        i += len;
    }
}

void kvx_kv_v_copy_f16(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                       const struct kvx_kv_fmt *f)
{
    const size_t row = (size_t)f->dim * sizeof(uint16_t);
    memmove(dst + (size_t)to * row, src + (size_t)from * row, (size_t)n * row);
}

/* qk, f16 K, scalar (the specification).
 *   scores[i*ld + t - t0] = sum_c q[i*dim + c] * K[t][c]   for i < n_q, t0 <= t < t1
 * Shapes: q n_q x dim, t0 % 16 == 0, t1 <= page_tokens.  fp32 accumulator per score, channels
 * summed in order c = 0..dim-1 (each SIMD lane does the same with FMA).  The SIMD kernels match
 * it within 1e-5 x sum_c |q_c k_c| (test_kv.c). */
void kvx_kv_qk_f16_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    const uint16_t *K = region;
    for (int32_t tile0 = t0; tile0 < t1; tile0 += KVX_KV_TILE) {
        const uint16_t *kt = K + (size_t)(tile0 / KVX_KV_TILE) * KVX_KV_TILE * (size_t)dim;
        int32_t n_t = t1 - tile0 < KVX_KV_TILE ? t1 - tile0 : KVX_KV_TILE;
        for (int32_t i0 = 0; i0 < n_q; i0 += 4) { /* each K row converted once per 4 queries */
            int32_t nb = n_q - i0 < 4 ? n_q - i0 : 4;
            float acc[4][KVX_KV_TILE] = {{0}};
            for (int32_t c = 0; c < dim; c++) {
                float k[KVX_KV_TILE];
                for (int32_t j = 0; j < KVX_KV_TILE; j++)
                    k[j] = kvx_f16_to_f32(kt[(size_t)c * KVX_KV_TILE + (size_t)j]);
                for (int32_t i = 0; i < nb; i++) {
                    float qc = q[(size_t)(i0 + i) * (size_t)dim + (size_t)c];
                    for (int32_t j = 0; j < KVX_KV_TILE; j++)
                        acc[i][j] += qc * k[j];
                }
            }
            for (int32_t i = 0; i < nb; i++)
                for (int32_t j = 0; j < n_t; j++)
                    scores[(int64_t)(i0 + i) * ld + (tile0 - t0) + j] = acc[i][j];
        }
    }
}

/* pv, f16 V, scalar (the specification).
 *   acc[i*dim + d] += sum_{t0 <= t < t1} p[i*ld + t - t0] * V[t][d]   for i < n_q, d < dim
 * Shapes: p n_q rows (stride ld), acc n_q x dim, any t0 < t1 <= page_tokens.  fp32
 * accumulation in token order t0..t1-1 (as the SIMD kernels do per lane); SIMD matches within
 * 1e-5 x sum_t |p_t v_t[d]| (test_kv.c). */
void kvx_kv_pv_f16_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                          int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    const void *region = b->data;
    const int32_t dim = f->dim;
    const uint16_t *V = region;
    for (int32_t t = t0; t < t1; t++) {
        const uint16_t *row = V + (size_t)t * (size_t)dim;
        for (int32_t d0 = 0; d0 < dim; d0 += 64) { /* each V value converted once */
            int32_t nd = dim - d0 < 64 ? dim - d0 : 64;
            float v[64];
            for (int32_t d = 0; d < nd; d++)
                v[d] = kvx_f16_to_f32(row[d0 + d]);
            for (int32_t i = 0; i < n_q; i++) {
                float w = p[(int64_t)i * ld + (t - t0)];
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)d0;
                for (int32_t d = 0; d < nd; d++)
                    ai[d] += w * v[d];
            }
        }
    }
}

#define OPS_f16(isa)                                                                              \
    {                                                                                            \
        .name = "f16", .bits = 16, .k_region_bytes = kvx_kv_k_region_bytes_f16,                \
        .v_region_bytes = kvx_kv_v_region_bytes_f16, .k_put = kvx_kv_k_put_f16,                    \
        .v_put = kvx_kv_v_put_f16, .k_get = kvx_kv_k_get_f16, .v_get = kvx_kv_v_get_f16,            \
        .qk = kvx_kv_qk_f16_##isa, .pv = kvx_kv_pv_f16_##isa,                                   \
        .k_copy = kvx_kv_k_copy_f16, .v_copy = kvx_kv_v_copy_f16,                           \
    }

static const struct kvx_kv_codec_ops ops_f16[KVX_ISA_COUNT] = {
    [KVX_ISA_SCALAR] = OPS_f16(scalar),
#if defined(__x86_64__) || defined(__i386__)
    [KVX_ISA_AVX2] = OPS_f16(avx2),
    [KVX_ISA_AVX512] = OPS_f16(avx512),
#else
    [KVX_ISA_AVX2] = OPS_f16(scalar),
    [KVX_ISA_AVX512] = OPS_f16(scalar),
#endif
};

const struct kvx_kv_codec_ops *kvx_kv_codec_f16(enum kvx_isa isa)
{
    return &ops_f16[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];
}
