/* kv/codec_float: the f32, f16 and bf16 KV codecs, scalar (the specification for every SIMD
 * variant in codec_avx2.c / codec_avx512.c).
 *
 * Storage of one head's region of one page (page_tokens tokens, dim values per token), the
 * same for the three element types:
 *   K: tiles of 16 tokens, channel-major inside a tile: K[tile][c][t % 16]
 *   V: token-major: V[t][d]
 * Elements are fp32, IEEE half (round to nearest, ops/f16.h) or bfloat16 (fp32's exponent, 8
 * significant bits, round to nearest even: |x - x'| <= 2^-8 |x|).  One generic body per
 * operation takes the element type as a constant; the exported functions instantiate it. */
#include "kv/codec.h"

#include <string.h>

#include "ops/f16.h"

enum el { EL_F32, EL_F16, EL_BF16 };

#define KVX_INLINE static inline __attribute__((always_inline))

KVX_INLINE size_t el_size(enum el e) { return e == EL_F32 ? sizeof(float) : sizeof(uint16_t); }

KVX_INLINE float el_load(const void *base, size_t i, enum el e)
{
    if (e == EL_F32)
        return ((const float *)base)[i];
    const uint16_t h = ((const uint16_t *)base)[i];
    return e == EL_F16 ? kvx_f16_to_f32(h) : kvx_bf16_to_f32(h);
}

KVX_INLINE void el_store(void *base, size_t i, float x, enum el e)
{
    if (e == EL_F32)
        ((float *)base)[i] = x;
    else
        ((uint16_t *)base)[i] = e == EL_F16 ? kvx_f32_to_f16(x) : kvx_f32_to_bf16(x);
}

/* K: whole tiles of 16 tokens (page_tokens is a multiple of 16 in any valid layout). */
KVX_INLINE size_t k_region_bytes(const struct kvx_kv_fmt *f, enum el e)
{
    size_t tiles = ((size_t)f->page_tokens + KVX_KV_TILE - 1) / KVX_KV_TILE;
    return tiles * KVX_KV_TILE * (size_t)f->dim * el_size(e);
}

KVX_INLINE size_t v_region_bytes(const struct kvx_kv_fmt *f, enum el e)
{
    return (size_t)f->page_tokens * (size_t)f->dim * el_size(e);
}

/* Index of K[tok][c] in the tiled layout. */
static size_t k_index(int32_t dim, int32_t tok, int32_t c)
{
    return ((size_t)(tok / KVX_KV_TILE) * (size_t)dim + (size_t)c) * KVX_KV_TILE +
           (size_t)(tok % KVX_KV_TILE);
}

KVX_INLINE void k_put(uint8_t *data, const struct kvx_kv_fmt *f, int32_t tok, const float *k,
                      enum el e)
{
    for (int32_t c = 0; c < f->dim; c++)
        el_store(data, k_index(f->dim, tok, c), k[c], e);
}

KVX_INLINE void v_put(uint8_t *data, const struct kvx_kv_fmt *f, int32_t tok, const float *v,
                      enum el e)
{
    for (int32_t d = 0; d < f->dim; d++)
        el_store(data, (size_t)tok * (size_t)f->dim + (size_t)d, v[d], e);
}

KVX_INLINE void k_get(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                      float *k, enum el e)
{
    for (int32_t c = 0; c < f->dim; c++)
        k[c] = el_load(b->data, k_index(f->dim, tok, c), e);
}

KVX_INLINE void v_get(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                      float *v, enum el e)
{
    for (int32_t d = 0; d < f->dim; d++)
        v[d] = el_load(b->data, (size_t)tok * (size_t)f->dim + (size_t)d, e);
}

/* Copies for compaction (raw bytes, exact).  K: destination tile by tile; each channel's row
 * piece comes from at most two source tile rows (a whole destination row: both rows through
 * a 32-element buffer, fixed-size copies; otherwise element by element, in increasing order,
 * which is safe when the ranges overlap with to < from).  V: one block of rows (memmove). */
KVX_INLINE void k_copy(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                       const struct kvx_kv_fmt *f, enum el e)
{
    const size_t es = el_size(e);
    const int32_t dim = f->dim, T = KVX_KV_TILE;
    for (int32_t i = 0; i < n;) {
        const int32_t td = to + i, ts = from + i, off = ts % T;
        const int32_t len = T - td % T < n - i ? T - td % T : n - i;
        const int32_t a = T - off < len ? T - off : len; /* from the first source tile */
        for (int32_t c = 0; c < dim; c++) {
            uint8_t *d = dst + k_index(dim, td, c) * es;
            const uint8_t *s0 = src + k_index(dim, ts, c) * es;
            if (len == T && a < T) { /* rows of source tiles ts/16 and ts/16 + 1 */
                uint8_t buf[2 * KVX_KV_TILE * sizeof(float)];
                memcpy(buf, s0 - (size_t)off * es, T * es);
                memcpy(buf + T * es, src + k_index(dim, ts + a, c) * es, T * es);
                memcpy(d, buf + (size_t)off * es, T * es);
                continue;
            }
            for (int32_t x = 0; x < a; x++)
                memcpy(d + (size_t)x * es, s0 + (size_t)x * es, es);
            for (int32_t x = a; x < len; x++)
                memcpy(d + (size_t)x * es, src + k_index(dim, ts + x, c) * es, es);
        }
        i += len;
    }
}

KVX_INLINE void v_copy(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                       const struct kvx_kv_fmt *f, enum el e)
{
    const size_t row = (size_t)f->dim * el_size(e);
    memmove(dst + (size_t)to * row, src + (size_t)from * row, (size_t)n * row);
}

/* qk, scalar (the specification).
 *   scores[i*ld + t - t0] = sum_c q[i*dim + c] * K[t][c]   for i < n_q, t0 <= t < t1
 * Shapes: q n_q x dim, t0 % 16 == 0, t1 <= page_tokens.  fp32 accumulator per score, channels
 * summed in order c = 0..dim-1 (each SIMD lane does the same with FMA); each K row converted
 * once per 4 queries.  The SIMD kernels match it within 1e-5 x sum_c |q_c k_c| (test_kv.c,
 * test_kv_codec_quant.c). */
KVX_INLINE void qk(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                   int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld, enum el e)
{
    const int32_t dim = f->dim;
    for (int32_t tile0 = t0; tile0 < t1; tile0 += KVX_KV_TILE) {
        const size_t kt = (size_t)(tile0 / KVX_KV_TILE) * KVX_KV_TILE * (size_t)dim;
        int32_t n_t = t1 - tile0 < KVX_KV_TILE ? t1 - tile0 : KVX_KV_TILE;
        for (int32_t i0 = 0; i0 < n_q; i0 += 4) {
            int32_t nb = n_q - i0 < 4 ? n_q - i0 : 4;
            float acc[4][KVX_KV_TILE] = {{0}};
            for (int32_t c = 0; c < dim; c++) {
                float k[KVX_KV_TILE];
                for (int32_t j = 0; j < KVX_KV_TILE; j++)
                    k[j] = el_load(b->data, kt + (size_t)c * KVX_KV_TILE + (size_t)j, e);
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

/* pv, scalar (the specification).
 *   acc[i*dim + d] += sum_{t0 <= t < t1} p[i*ld + t - t0] * V[t][d]   for i < n_q, d < dim
 * Shapes: p n_q rows (stride ld), acc n_q x dim, any t0 < t1 <= page_tokens.  fp32
 * accumulation in token order t0..t1-1 (as the SIMD kernels do per lane); each V value
 * converted once.  SIMD matches within 1e-5 x sum_t |p_t v_t[d]|. */
KVX_INLINE void pv(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                   int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc, enum el e)
{
    const int32_t dim = f->dim;
    for (int32_t t = t0; t < t1; t++) {
        const size_t row = (size_t)t * (size_t)dim;
        for (int32_t d0 = 0; d0 < dim; d0 += 64) {
            int32_t nd = dim - d0 < 64 ? dim - d0 : 64;
            float v[64];
            for (int32_t d = 0; d < nd; d++)
                v[d] = el_load(b->data, row + (size_t)(d0 + d), e);
            for (int32_t i = 0; i < n_q; i++) {
                float w = p[(int64_t)i * ld + (t - t0)];
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)d0;
                for (int32_t d = 0; d < nd; d++)
                    ai[d] += w * v[d];
            }
        }
    }
}

/* The exported functions and the ops table of one element type. */
#define FLOAT_CODEC(cname, E, nbits)                                                             \
    size_t kvx_kv_k_region_bytes_##cname(const struct kvx_kv_fmt *f)                            \
    {                                                                                          \
        return k_region_bytes(f, E);                                                           \
    }                                                                                          \
    size_t kvx_kv_v_region_bytes_##cname(const struct kvx_kv_fmt *f)                            \
    {                                                                                          \
        return v_region_bytes(f, E);                                                           \
    }                                                                                          \
    void kvx_kv_k_put_##cname(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,        \
                             int64_t slot0, int32_t tok, const float *k)                       \
    {                                                                                          \
        (void)state, (void)slot0;                                                              \
        k_put(data, f, tok, k, E);                                                             \
    }                                                                                          \
    void kvx_kv_v_put_##cname(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,        \
                             int64_t slot0, int32_t tok, const float *v)                       \
    {                                                                                          \
        (void)state, (void)slot0;                                                              \
        v_put(data, f, tok, v, E);                                                             \
    }                                                                                          \
    void kvx_kv_k_get_##cname(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,         \
                             int32_t tok, float *k)                                            \
    {                                                                                          \
        k_get(b, f, tok, k, E);                                                                \
    }                                                                                          \
    void kvx_kv_v_get_##cname(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,         \
                             int32_t tok, float *v)                                            \
    {                                                                                          \
        v_get(b, f, tok, v, E);                                                                \
    }                                                                                          \
    void kvx_kv_k_copy_##cname(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from,      \
                              int32_t n, const struct kvx_kv_fmt *f)                           \
    {                                                                                          \
        k_copy(dst, to, src, from, n, f, E);                                                   \
    }                                                                                          \
    void kvx_kv_v_copy_##cname(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from,      \
                              int32_t n, const struct kvx_kv_fmt *f)                           \
    {                                                                                          \
        v_copy(dst, to, src, from, n, f, E);                                                   \
    }                                                                                          \
    void kvx_kv_qk_##cname##_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,   \
                                   int32_t t0, int32_t t1, const float *q, int32_t n_q,        \
                                   float *scores, int64_t ld)                                  \
    {                                                                                          \
        qk(b, f, t0, t1, q, n_q, scores, ld, E);                                               \
    }                                                                                          \
    void kvx_kv_pv_##cname##_scalar(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,   \
                                   int32_t t0, int32_t t1, const float *p, int32_t n_q,        \
                                   int64_t ld, float *acc)                                     \
    {                                                                                          \
        pv(b, f, t0, t1, p, n_q, ld, acc, E);                                                  \
    }                                                                                          \
    FLOAT_OPS_TABLE(cname, nbits)

#define FLOAT_OPS(cname, nbits, isa)                                                             \
    {                                                                                          \
        .name = #cname, .bits = nbits, .k_region_bytes = kvx_kv_k_region_bytes_##cname,          \
        .v_region_bytes = kvx_kv_v_region_bytes_##cname, .k_put = kvx_kv_k_put_##cname,         \
        .v_put = kvx_kv_v_put_##cname, .k_get = kvx_kv_k_get_##cname,                           \
        .v_get = kvx_kv_v_get_##cname, .qk = kvx_kv_qk_##cname##_##isa,                          \
        .pv = kvx_kv_pv_##cname##_##isa, .k_copy = kvx_kv_k_copy_##cname,                        \
        .v_copy = kvx_kv_v_copy_##cname,                                                        \
    }

#if defined(__x86_64__) || defined(__i386__)
#define FLOAT_SIMD(cname, nbits) FLOAT_OPS(cname, nbits, avx2), FLOAT_OPS(cname, nbits, avx512)
#else
#define FLOAT_SIMD(cname, nbits) FLOAT_OPS(cname, nbits, scalar), FLOAT_OPS(cname, nbits, scalar)
#endif

/* Rows in enum kvx_isa order: scalar, AVX2, AVX-512. */
#define FLOAT_OPS_TABLE(cname, nbits)                                                            \
    static const struct kvx_kv_codec_ops ops_##cname[KVX_ISA_COUNT] = {                         \
        FLOAT_OPS(cname, nbits, scalar), FLOAT_SIMD(cname, nbits)};                              \
    const struct kvx_kv_codec_ops *kvx_kv_codec_##cname(enum kvx_isa isa)                       \
    {                                                                                          \
        return &ops_##cname[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];       \
    }

FLOAT_CODEC(f32, EL_F32, 32)
FLOAT_CODEC(f16, EL_F16, 16)
FLOAT_CODEC(bf16, EL_BF16, 16)
