/* kv/codec_q4: the q4 KV codec: q4plain's 4-bit storage (kv/codec_q4plain.c: per token and group
 * of 32 channels an f16 scale and minimum) of vectors that are first centred per page and, for K,
 * rotated.  Both transforms are exact for attention; they only move the values to where 4 bits
 * lose less.
 *
 * Centring.  Each page p of a head stores a centre c_p (dim f32 in a header before the codes)
 * and the residuals y_t = x_t - c_p.  c_p is the mean of the decoded vectors of the sequence's
 * page before, slot 0 left out (the first token is usually an attention sink whose keys sit far
 * from the rest):
 *   c_0 = 0,   c_p = c_{p-1} + (sum over the counted slots t of page p-1 of y'_t) / n_{p-1},
 *   y'_t the decoded residual, n_{p-1} the counted slots (page_tokens, one less for page 0),
 * which is the mean of the decoded vectors x'_t = c_{p-1} + y'_t of page p-1.  The centre comes
 * from the stored bytes of the page before only (k_begin_page), so it is the same for a prefill
 * and a decode, for a sequence that attached a shared prefix, after a truncation or a
 * compaction, and it needs no per-sequence state.  Attention adds the centre back per page:
 *   q·k_t = q·y'_t + q·c_p   (one dot product per query and page, qk below),
 *   sum_t p_t v_t = sum_t p_t y'_t + (sum_t p_t) c_p   (one axpy per query and page, pv below).
 * Why: K of many models carries large per-channel offsets (SmolLM2-135M: a few channels an
 * order of magnitude above the rest); with 32 channels per scale, such a channel takes the
 * whole 4-bit range of its group.  The page before follows the offsets as they drift (RoPE
 * turns them slowly with the position): simulated on SmolLM2-135M (K and V 4-bit, pages of
 * 256, 4096 tokens), mean KLD 0.023 against 0.026-0.029 for the running mean of all earlier
 * pages and 0.054 without centring or rotation.
 *
 * Rotation (K only).  The K residual is stored rotated, y = R x - c_p with R the Hadamard
 * rotation of kv/hadamard.h (c_p kept in the rotated basis), so what is left of the outliers
 * spreads over all channels; queries are rotated once per range (q_rotate), scores need nothing
 * else.  V is not rotated: on SmolLM2-135M rotating V cost quality (simulated with K rotated,
 * both centred on running means, 4-bit, pages of 256: ppl +3.6% against +2.4%).
 *
 * Cost: the header, dim f32 per head and page (page_tokens 256, dim 64: 1 byte per token and
 * head against q4plain's 40).  The SIMD kernels are q4plain's; the per-page corrections are
 * scalar, in a fixed order, so every ISA adds the same values. */
#include <string.h>

#include "kv/codec_quant.h"
#include "kv/hadamard.h"

/* The largest head dimension the codec stores (stack buffers; kv/codec.c checks it). */
#define Q4_MAX_DIM 4096

static size_t header_bytes(const struct kvx_kv_fmt *f) { return (size_t)f->dim * sizeof(float); }

static size_t k_region_bytes(const struct kvx_kv_fmt *f)
{
    return header_bytes(f) + kvx_kv_k_region_bytes_q4plain(f);
}

static size_t v_region_bytes(const struct kvx_kv_fmt *f)
{
    return header_bytes(f) + kvx_kv_v_region_bytes_q4plain(f);
}

typedef void (*get_fn)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                       float *x);

/* c_p from the page before (see the top of the file); get decodes that page's residuals. */
static void begin_page(uint8_t *data, const uint8_t *prev, const struct kvx_kv_fmt *f,
                       int64_t slot0, get_fn get)
{
    float *c = (float *)data;
    const int32_t dim = f->dim;
    if (!prev || slot0 <= 1) {
        memset(c, 0, header_bytes(f));
        return;
    }
    const float *pc = (const float *)prev;
    const int64_t prev0 = slot0 - f->page_tokens;
    const struct kvx_kv_block b = {prev + header_bytes(f), NULL, prev0};
    float sum[Q4_MAX_DIM], y[Q4_MAX_DIM];
    memset(sum, 0, (size_t)dim * sizeof *sum);
    for (int32_t t = prev0 == 0 ? 1 : 0; t < f->page_tokens; t++) {
        get(&b, f, t, y);
        for (int32_t i = 0; i < dim; i++)
            sum[i] += y[i];
    }
    const float inv = 1.0f / (float)(prev0 == 0 ? f->page_tokens - 1 : f->page_tokens);
    for (int32_t i = 0; i < dim; i++)
        c[i] = pc[i] + sum[i] * inv;
}

static void k_begin_page(uint8_t *data, const uint8_t *prev, const struct kvx_kv_fmt *f,
                         int64_t slot0)
{
    begin_page(data, prev, f, slot0, kvx_kv_k_get_q4plain);
}

static void v_begin_page(uint8_t *data, const uint8_t *prev, const struct kvx_kv_fmt *f,
                         int64_t slot0)
{
    begin_page(data, prev, f, slot0, kvx_kv_v_get_q4plain);
}

/* y = x - c (x already in the stored basis); a first page starts its header (c = 0). */
static void centred(uint8_t *data, const struct kvx_kv_fmt *f, int64_t slot0, int32_t tok,
                    const float *x, float *y)
{
    float *c = (float *)data;
    if (slot0 == 0 && tok == 0)
        memset(c, 0, header_bytes(f));
    for (int32_t i = 0; i < f->dim; i++)
        y[i] = x[i] - c[i];
}

static void k_put(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *k)
{
    float r[Q4_MAX_DIM];
    memcpy(r, k, (size_t)f->dim * sizeof *r);
    kvx_kv_rotate(r, 1, f->dim);
    centred(data, f, slot0, tok, r, r);
    kvx_kv_k_put_q4plain(data + header_bytes(f), state, f, slot0, tok, r);
}

static void v_put(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *v)
{
    float y[Q4_MAX_DIM];
    centred(data, f, slot0, tok, v, y);
    kvx_kv_v_put_q4plain(data + header_bytes(f), state, f, slot0, tok, y);
}

/* x' = c + y' in the stored basis. */
static void decentred(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok,
                      float *x, get_fn get)
{
    const struct kvx_kv_block in = {b->data + header_bytes(f), b->state, b->slot0};
    get(&in, f, tok, x);
    const float *c = (const float *)b->data;
    for (int32_t i = 0; i < f->dim; i++)
        x[i] += c[i];
}

static void k_get(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok, float *k)
{
    decentred(b, f, tok, k, kvx_kv_k_get_q4plain);
    kvx_kv_unrotate(k, 1, f->dim);
}

static void v_get(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok, float *v)
{
    decentred(b, f, tok, v, kvx_kv_v_get_q4plain);
}

typedef void (*qk_fn)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                      int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld);
typedef void (*pv_fn)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                      int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc);

/* sum_j a_j b_j (b NULL: sum_j a_j), j < n, in 16 independent partial sums added in a fixed
 * order: no serial chain of n dependent adds (this runs once per query and page; the compiler
 * can keep the 16 sums in vector registers), and the same value on every ISA. */
static float sum16(const float *restrict a, const float *restrict b, int32_t n)
{
    float part[16] = {0};
    int32_t j = 0;
    if (b)
        for (; j + 16 <= n; j += 16)
            for (int u = 0; u < 16; u++)
                part[u] += a[j + u] * b[j + u];
    else
        for (; j + 16 <= n; j += 16)
            for (int u = 0; u < 16; u++)
                part[u] += a[j + u];
    for (; j < n; j++)
        part[j % 16] += a[j] * (b ? b[j] : 1.0f);
    for (int w = 8; w > 0; w /= 2)
        for (int u = 0; u < w; u++)
            part[u] += part[u + w];
    return part[0];
}

/* x[j] += s for j < n. */
static void add_all(float *restrict x, int32_t n, float s)
{
    int32_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int u = 0; u < 16; u++)
            x[j + u] += s;
    for (; j < n; j++)
        x[j] += s;
}

/* scores[i*ld + t - t0] = q_i·y'_t + q_i·c  (q rotated; q4plain's kernel for the first term). */
static void qk_centred(qk_fn inner, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                       int32_t t0, int32_t t1, const float *q, int32_t n_q, float *scores,
                       int64_t ld)
{
    const struct kvx_kv_block in = {b->data + header_bytes(f), b->state, b->slot0};
    inner(&in, f, t0, t1, q, n_q, scores, ld);
    if (b->slot0 == 0)
        return; /* c_0 = 0 */
    const float *c = (const float *)b->data;
    for (int32_t i = 0; i < n_q; i++) {
        const float s = sum16(q + (size_t)i * (size_t)f->dim, c, f->dim);
        add_all(scores + (int64_t)i * ld, t1 - t0, s);
    }
}

/* acc_i += sum_t p_it y'_t + (sum_t p_it) c. */
static void pv_centred(pv_fn inner, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                       int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                       float *acc)
{
    const struct kvx_kv_block in = {b->data + header_bytes(f), b->state, b->slot0};
    inner(&in, f, t0, t1, p, n_q, ld, acc);
    if (b->slot0 == 0)
        return;
    const float *c = (const float *)b->data;
    for (int32_t i = 0; i < n_q; i++) {
        const float w = sum16(p + (int64_t)i * ld, NULL, t1 - t0);
        float *ai = acc + (size_t)i * (size_t)f->dim;
        for (int32_t d = 0; d < f->dim; d++)
            ai[d] += w * c[d];
    }
}

/* The kernels of one ISA: q4plain's qk_isa and pv_isa with the corrections above. */
#define Q4_KERNELS(tag, qk_isa, pv_isa)                                                          \
    static void qk_##tag(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,  \
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)    \
    {                                                                                            \
        qk_centred(kvx_kv_qk_q4plain_##qk_isa, b, f, t0, t1, q, n_q, scores, ld);                \
    }                                                                                            \
    static void pv_##tag(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,  \
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)       \
    {                                                                                            \
        pv_centred(kvx_kv_pv_q4plain_##pv_isa, b, f, t0, t1, p, n_q, ld, acc);                   \
    }

#define Q4_OPS(tag)                                                                              \
    {                                                                                            \
        .name = "q4", .bits = 5.125, .k_region_bytes = k_region_bytes,                           \
        .v_region_bytes = v_region_bytes, .k_put = k_put, .v_put = v_put,                        \
        .k_begin_page = k_begin_page, .v_begin_page = v_begin_page, .k_get = k_get,             \
        .v_get = v_get, .qk = qk_##tag, .pv = pv_##tag, .q_rotate = kvx_kv_rotate,               \
    }

Q4_KERNELS(scalar, scalar, scalar)
#if defined(__x86_64__) || defined(__i386__)
Q4_KERNELS(avx2, avx2, avx2)
Q4_KERNELS(avx512, avx2, avx512)
Q4_KERNELS(avx512vnni, avx512vnni, avx512)

static const struct kvx_kv_codec_ops ops_q4[KVX_ISA_COUNT] = {
    [KVX_ISA_SCALAR] = Q4_OPS(scalar),
    [KVX_ISA_AVX2] = Q4_OPS(avx2),
    [KVX_ISA_AVX512] = Q4_OPS(avx512),
};
static const struct kvx_kv_codec_ops ops_q4_vnni = Q4_OPS(avx512vnni);

const struct kvx_kv_codec_ops *kvx_kv_codec_q4(enum kvx_isa isa)
{
    if ((int)isa < 0 || isa >= KVX_ISA_COUNT)
        isa = KVX_ISA_SCALAR;
    if (isa == KVX_ISA_AVX512 && kvx_cpu_has_avx512_vnni())
        return &ops_q4_vnni;
    return &ops_q4[isa];
}
#else
static const struct kvx_kv_codec_ops ops_q4 = Q4_OPS(scalar);

const struct kvx_kv_codec_ops *kvx_kv_codec_q4(enum kvx_isa isa)
{
    (void)isa;
    return &ops_q4;
}
#endif
