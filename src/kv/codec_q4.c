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
 * head against q4plain's 40), and the centre's share per query and page (centre_qk, centre_pv
 * below; SIMD in codec_quant_avx2.c / codec_quant_avx512.c).  The code kernels are q4plain's. */
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

/* y = x - c (x already in the stored basis). */
static void centred(const uint8_t *data, const struct kvx_kv_fmt *f, const float *x, float *y)
{
    const float *c = (const float *)data;
    for (int32_t i = 0; i < f->dim; i++)
        y[i] = x[i] - c[i];
}

static void k_put(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *k)
{
    float r[Q4_MAX_DIM];
    memcpy(r, k, (size_t)f->dim * sizeof *r);
    kvx_kv_rotate(r, 1, f->dim);
    centred(data, f, r, r);
    kvx_kv_k_put_q4plain(data + header_bytes(f), state, f, slot0, tok, r);
}

static void v_put(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *v)
{
    float y[Q4_MAX_DIM];
    centred(data, f, v, y);
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

/* The centre's share, scalar (the specification; AVX2 / AVX-512 in codec_quant_avx2.c /
 * codec_quant_avx512.c differ by fp32 summation order only):
 *   centre_qk: scores[i*ld + t] += q_i·c  for t < n, i < n_q;
 *   centre_pv: acc[i*dim + d] += (sum_{t<n} p[i*ld + t]) c_d. */
void kvx_kv_q4_centre_qk_scalar(const float *q, int32_t n_q, int32_t dim, const float *c,
                                float *scores, int64_t ld, int32_t n)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *qi = q + (size_t)i * (size_t)dim;
        float s = 0.0f;
        for (int32_t d = 0; d < dim; d++)
            s += qi[d] * c[d];
        float *row = scores + (int64_t)i * ld;
        for (int32_t t = 0; t < n; t++)
            row[t] += s;
    }
}

void kvx_kv_q4_centre_pv_scalar(const float *p, int32_t n_q, int64_t ld, int32_t n,
                                const float *c, int32_t dim, float *acc)
{
    for (int32_t i = 0; i < n_q; i++) {
        const float *pi = p + (int64_t)i * ld;
        float w = 0.0f;
        for (int32_t t = 0; t < n; t++)
            w += pi[t];
        float *ai = acc + (size_t)i * (size_t)dim;
        for (int32_t d = 0; d < dim; d++)
            ai[d] += w * c[d];
    }
}

typedef void (*centre_qk_fn)(const float *q, int32_t n_q, int32_t dim, const float *c,
                             float *scores, int64_t ld, int32_t n);
typedef void (*centre_pv_fn)(const float *p, int32_t n_q, int64_t ld, int32_t n, const float *c,
                             int32_t dim, float *acc);

/* scores[i*ld + t - t0] = q_i·y'_t + q_i·c  (q rotated; q4plain's kernel for the first term). */
static void qk_centred(qk_fn inner, centre_qk_fn centre, const struct kvx_kv_block *b,
                       const struct kvx_kv_fmt *f, int32_t t0, int32_t t1, const float *q,
                       int32_t n_q, float *scores, int64_t ld)
{
    const struct kvx_kv_block in = {b->data + header_bytes(f), b->state, b->slot0};
    inner(&in, f, t0, t1, q, n_q, scores, ld);
    if (b->slot0 != 0) /* c_0 = 0 */
        centre(q, n_q, f->dim, (const float *)b->data, scores, ld, t1 - t0);
}

/* acc_i += sum_t p_it y'_t + (sum_t p_it) c. */
static void pv_centred(pv_fn inner, centre_pv_fn centre, const struct kvx_kv_block *b,
                       const struct kvx_kv_fmt *f, int32_t t0, int32_t t1, const float *p,
                       int32_t n_q, int64_t ld, float *acc)
{
    const struct kvx_kv_block in = {b->data + header_bytes(f), b->state, b->slot0};
    inner(&in, f, t0, t1, p, n_q, ld, acc);
    if (b->slot0 != 0)
        centre(p, n_q, ld, t1 - t0, (const float *)b->data, f->dim, acc);
}

/* The kernels of one ISA: q4plain's qk_isa and pv_isa with the centre's share of c_isa. */
#define Q4_KERNELS(tag, qk_isa, pv_isa, c_isa)                                                   \
    static void qk_##tag(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,  \
                         int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)    \
    {                                                                                            \
        qk_centred(kvx_kv_qk_q4plain_##qk_isa, kvx_kv_q4_centre_qk_##c_isa, b, f, t0, t1, q,    \
                   n_q, scores, ld);                                                             \
    }                                                                                            \
    static void pv_##tag(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,  \
                         int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)       \
    {                                                                                            \
        pv_centred(kvx_kv_pv_q4plain_##pv_isa, kvx_kv_q4_centre_pv_##c_isa, b, f, t0, t1, p,    \
                   n_q, ld, acc);                                                                \
    }

#define Q4_OPS(tag)                                                                              \
    {                                                                                            \
        .name = "q4", .bits = 5.125, .k_region_bytes = k_region_bytes,                           \
        .v_region_bytes = v_region_bytes, .k_put = k_put, .v_put = v_put,                        \
        .k_begin_page = k_begin_page, .v_begin_page = v_begin_page, .k_get = k_get,             \
        .v_get = v_get, .qk = qk_##tag, .pv = pv_##tag, .q_rotate = kvx_kv_rotate,               \
    }

Q4_KERNELS(scalar, scalar, scalar, scalar)
#if defined(__x86_64__) || defined(__i386__)
Q4_KERNELS(avx2, avx2, avx2, avx2)
Q4_KERNELS(avx512, avx2, avx512, avx512)
Q4_KERNELS(avx512vnni, avx512vnni, avx512, avx512)

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
