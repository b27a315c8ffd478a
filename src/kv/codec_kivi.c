/* kv/codec_kivi: the kivi2 and kivi4 KV codecs (KIVI, Liu et al. 2024: "KIVI: A Tuning-Free
 * Asymmetric 2bit Quantization for KV Cache"; kivi4 is the same design at 4 bits), scalar: byte
 * layout, put/get/truncate, the scalar qk/pv kernels (the specification for codec_kivi_avx2.c /
 * _avx512.c) and the ops tables.  One implementation, parameterised by the code width B.
 *
 * K is quantized per channel over groups of G tokens (outlier channels of K get their own
 * range), V per token over blocks of 32 channels; both asymmetric B-bit with an f16 scale and
 * min:  x ~ min + scale * code,  min = min x,  scale = (max x - min) / L,  L = 2^B - 1,
 * code = round((x - min) / scale) in 0..L.  Layouts are in codec_lowbit.h.  Bits per value:
 * K B + 32 / G, V B + 1 (kivi2 at G = 32: 3 and 3; kivi4 at G = 32: 5 and 5, at G = 64: 4.5).
 *
 * Codec state (per sequence and head), all zeros = empty:
 *   K: an f16 ring of whole groups: the group being filled and the sealed groups before it,
 *      at least R tokens of them (as KIVI keeps the newest keys in full precision).  Put of a
 *      group's last token quantizes the group into the page (from the f16 copies); the group
 *      stays in the ring until a new group needs its rows.  The kernels read every slot the
 *      ring holds from the ring, so at least the newest ceil(R/G) G + 1 keys are exact to f16
 *      (R = 0: the open group only).  What a query reads thus depends on how many tokens were
 *      put after its own: the engine attends each prefill query right after its own put
 *      (kvx_step_store_attend, model/steps.h), so a prefill reads what decoding reads.
 *   V: every token is quantized into the page at once; the newest R tokens are also kept in an
 *      f16 ring, and the kernels read a slot from the ring while it holds it.
 * The state is a constant per sequence and head (2G + 2R tokens of f16 at most), not a cost
 * per token.
 * A put that does not follow the newest slot the state holds (a sequence cut or attached to
 * other pages) first brings the state in line as a cut at that slot would (see truncate).
 * Values beyond the f16 range saturate at ±65504; inputs must be finite. */
#include <math.h>

#include "kv/codec_lowbit.h"
#include "ops/f16.h"

#define F16_MAX 65504.0f

static float clamp_f16(float x) { return x > F16_MAX ? F16_MAX : x < -F16_MAX ? -F16_MAX : x; }

/* Largest code of B bits. */
static uint32_t levels(int32_t bits) { return (1u << bits) - 1u; }

/* The f16 min and scale of values in [mn, mx]: min rounded to f16 first, so that the codes
 * are computed against the min the decoder sees. */
static void q_params(int32_t bits, float mn, float mx, uint16_t *s16, uint16_t *m16)
{
    *m16 = kvx_f32_to_f16(clamp_f16(mn));
    float s = (clamp_f16(mx) - kvx_f16_to_f32(*m16)) / (float)levels(bits);
    *s16 = kvx_f32_to_f16(s > 0 ? (s < F16_MAX ? s : F16_MAX) : 0.0f);
}

/* round((x - m) / s) clamped to 0..L (inv = 1/s, 0 when s is 0), ties up: the number of
 * thresholds k - 1/2 (k = 1..L) that u = (x - m) inv reaches.  u - floor(u) is exact. */
static uint32_t q_code(int32_t bits, float x, float m, float inv)
{
    const float L = (float)levels(bits);
    float u = (x - m) * inv;
    u = u > 0 ? (u < L ? u : L) : 0.0f;
    uint32_t c = (uint32_t)u;
    return c + (u - (float)c >= 0.5f);
}

/* Pack 16 codes into a unit of B/2 words (code i in word i % u at bits B (i / u)). */
static void pack_unit(int32_t bits, const uint32_t *codes, uint32_t *unit)
{
    const int32_t u = bits / 2;
    for (int32_t w = 0; w < u; w++)
        unit[w] = 0;
    for (int32_t i = 0; i < 16; i++)
        unit[i % u] |= codes[i] << (bits * (i / u));
}

static float inv_or_zero(float s) { return s > 0 ? 1.0f / s : 0.0f; }

/* ---------------------------------------------------------------------------------------------
 * Sizes */

static size_t k_region_bytes(int32_t bits, const struct kvx_kv_fmt *f)
{
    return (size_t)(f->page_tokens / f->group) * kvx_kivi_k_group_bytes(f, bits);
}

static size_t v_region_bytes(int32_t bits, const struct kvx_kv_fmt *f)
{
    return (size_t)f->page_tokens * (size_t)(f->dim / 32) * (4u + 4u * (size_t)bits);
}

/* Tokens of the K ring: the open group and R more, rounded up to whole groups. */
static int32_t k_ring(const struct kvx_kv_fmt *f)
{
    return f->group + (f->residual + f->group - 1) / f->group * f->group;
}

static size_t k_state_bytes(const struct kvx_kv_fmt *f)
{
    return KVX_KV_STATE_HDR + (size_t)k_ring(f) * (size_t)f->dim * 2u;
}

static size_t v_state_bytes(const struct kvx_kv_fmt *f)
{
    return f->residual > 0 ? KVX_KV_STATE_HDR + (size_t)f->residual * (size_t)f->dim * 2u : 0;
}

/* ---------------------------------------------------------------------------------------------
 * K: groups in the page, the open group in the state */

/* Index of token i (of the group, or row i of the ring), channel c in the state's f16 tiles. */
static size_t st_index(int32_t dim, int32_t i, int32_t c)
{
    return ((size_t)(i / KVX_KV_TILE) * (size_t)dim + (size_t)c) * KVX_KV_TILE +
           (size_t)(i % KVX_KV_TILE);
}

/* The unit of token tile `tile`, channel c of a sealed group. */
static const uint32_t *k_unit(int32_t bits, const uint8_t *grp, int32_t dim, int32_t tile, int32_t c)
{
    return (const uint32_t *)(grp + 4 * (size_t)dim) +
           ((size_t)tile * (size_t)dim + (size_t)c) * (size_t)(bits / 2);
}

/* Token i (of the group), channel c of a sealed group: min_c + scale_c * code. */
static float k_group_value(int32_t bits, const uint8_t *grp, int32_t dim, int32_t i, int32_t c)
{
    const uint16_t *sc = (const uint16_t *)grp, *mn = sc + dim;
    uint32_t code = kvx_kivi_code(k_unit(bits, grp, dim, i / KVX_KV_TILE, c), bits, i % KVX_KV_TILE);
    return kvx_f16_to_f32(mn[c]) + kvx_f16_to_f32(sc[c]) * (float)code;
}

/* Quantize the G f16 tokens of the state into the page's group. */
static void k_seal(int32_t bits, uint8_t *grp, const uint16_t *st, const struct kvx_kv_fmt *f)
{
    const int32_t dim = f->dim, G = f->group;
    uint16_t *sc = (uint16_t *)grp, *mn = sc + dim;
    for (int32_t c = 0; c < dim; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int32_t i = 0; i < G; i++) {
            float x = kvx_f16_to_f32(st[st_index(dim, i, c)]);
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        q_params(bits, lo, hi, &sc[c], &mn[c]);
        const float m = kvx_f16_to_f32(mn[c]), inv = inv_or_zero(kvx_f16_to_f32(sc[c]));
        for (int32_t j = 0; j < G / KVX_KV_TILE; j++) {
            uint32_t codes[KVX_KV_TILE];
            for (int32_t i = 0; i < KVX_KV_TILE; i++)
                codes[i] = q_code(bits, kvx_f16_to_f32(st[st_index(dim, j * KVX_KV_TILE + i, c)]), m, inv);
            pack_unit(bits, codes, (uint32_t *)k_unit(bits, grp, dim, j, c));
        }
    }
}

/* Make the K ring end at n_keep and hold the open group's slots [gs, n_keep), gs = n_keep -
 * n_keep % G: when it holds them already it keeps them (and the sealed groups before them,
 * exact), else it restarts at gs with those slots decoded from the group in the page (`data`,
 * the region of the page holding them, first slot slot0; NULL when unknown: the ring then
 * holds none, lo = hi = n_keep, and the next put decodes them). */
static void k_state_cut(int32_t bits, uint8_t *state, const uint8_t *data,
                        const struct kvx_kv_fmt *f, int64_t slot0, int64_t n_keep)
{
    const int32_t G = f->group, dim = f->dim, Rk = k_ring(f);
    struct kvx_kivi_k_hdr h = kvx_kivi_k_hdr_get(state);
    const int64_t gs = n_keep - n_keep % G;
    if (h.lo <= gs && n_keep <= h.hi && h.lo % G == 0) {
        h.hi = n_keep;
    } else if (n_keep > gs && !data) {
        h.lo = h.hi = n_keep;
    } else {
        uint16_t *st = (uint16_t *)(state + KVX_KV_STATE_HDR) +
                       (size_t)(gs % Rk / KVX_KV_TILE) * (size_t)dim * KVX_KV_TILE;
        if (n_keep > gs) {
            const uint8_t *grp = data + (size_t)((gs - slot0) / G) * kvx_kivi_k_group_bytes(f, bits);
            for (int32_t i = 0; i < (int32_t)(n_keep - gs); i++)
                for (int32_t c = 0; c < dim; c++)
                    st[st_index(dim, i, c)] = kvx_f32_to_f16(k_group_value(bits, grp, dim, i, c));
        }
        h.lo = gs;
        h.hi = n_keep;
    }
    memcpy(state, &h, sizeof h);
}

static void k_put(int32_t bits, uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                  int64_t slot0, int32_t tok, const float *k)
{
    const int32_t G = f->group, dim = f->dim, Rk = k_ring(f);
    const int64_t slot = slot0 + tok, gs = slot - slot % G;
    struct kvx_kivi_k_hdr h = kvx_kivi_k_hdr_get(state);
    if (h.hi != slot || h.lo > gs || h.lo % G) {
        k_state_cut(bits, state, data, f, slot0, slot);
        h = kvx_kivi_k_hdr_get(state);
    }
    if (slot == gs && slot + G - h.lo > Rk)
        h.lo = slot + G - Rk; /* the oldest groups give their rows to the new one */
    uint16_t *grp = (uint16_t *)(state + KVX_KV_STATE_HDR) +
                    (size_t)(gs % Rk / KVX_KV_TILE) * (size_t)dim * KVX_KV_TILE;
    for (int32_t c = 0; c < dim; c++)
        grp[st_index(dim, (int32_t)(slot - gs), c)] = kvx_f32_to_f16(clamp_f16(k[c]));
    h.hi = slot + 1;
    if (h.hi - gs == G)
        k_seal(bits, data + (size_t)((gs - slot0) / G) * kvx_kivi_k_group_bytes(f, bits), grp, f);
    memcpy(state, &h, sizeof h);
}

static bool k_in_state(const uint8_t *state, int64_t slot)
{
    if (!state)
        return false;
    struct kvx_kivi_k_hdr h = kvx_kivi_k_hdr_get(state);
    return slot >= h.lo && slot < h.hi;
}

static void k_get(int32_t bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                  int32_t tok, float *k)
{
    const int32_t G = f->group, dim = f->dim;
    const int64_t slot = b->slot0 + tok;
    if (k_in_state(b->state, slot)) {
        const uint16_t *st = (const uint16_t *)(b->state + KVX_KV_STATE_HDR);
        const int32_t i = (int32_t)(slot % k_ring(f));
        for (int32_t c = 0; c < dim; c++)
            k[c] = kvx_f16_to_f32(st[st_index(dim, i, c)]);
        return;
    }
    const uint8_t *grp = b->data + (size_t)(tok / G) * kvx_kivi_k_group_bytes(f, bits);
    for (int32_t c = 0; c < dim; c++)
        k[c] = k_group_value(bits, grp, dim, tok % G, c);
}

static void k_truncate(int32_t bits, const uint8_t *data, uint8_t *state,
                       const struct kvx_kv_fmt *f, int64_t slot0, int64_t n_keep)
{
    if (state)
        k_state_cut(bits, state, data, f, slot0, n_keep);
}

/* ---------------------------------------------------------------------------------------------
 * V: every token in the page, the newest R also in the f16 ring */

/* The unit of token t, channels 32 blk + 16 h .. + 15 in a V region. */
static const uint32_t *v_unit(int32_t bits, const uint8_t *region, const struct kvx_kv_fmt *f,
                              int32_t t, int32_t blk, int32_t h)
{
    const size_t nb = (size_t)(f->dim / 32);
    return (const uint32_t *)(region + kvx_kivi_v_codes_off(f)) +
           (((size_t)t * nb + (size_t)blk) * 2u + (size_t)h) * (size_t)(bits / 2);
}

static void v_put(int32_t bits, uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                  int64_t slot0, int32_t tok, const float *v)
{
    const int32_t dim = f->dim, nb = dim / 32;
    uint16_t *sc = (uint16_t *)data + (size_t)tok * (size_t)nb;
    uint16_t *mn = (uint16_t *)(data + kvx_kivi_v_min_off(f)) + (size_t)tok * (size_t)nb;
    for (int32_t b = 0; b < nb; b++) {
        const float *x = v + 32 * b;
        float lo = x[0], hi = x[0];
        for (int32_t j = 1; j < 32; j++) {
            lo = x[j] < lo ? x[j] : lo;
            hi = x[j] > hi ? x[j] : hi;
        }
        q_params(bits, lo, hi, &sc[b], &mn[b]);
        const float m = kvx_f16_to_f32(mn[b]), inv = inv_or_zero(kvx_f16_to_f32(sc[b]));
        for (int32_t h = 0; h < 2; h++) {
            uint32_t codes[16];
            for (int32_t j = 0; j < 16; j++)
                codes[j] = q_code(bits, x[16 * h + j], m, inv);
            pack_unit(bits, codes, (uint32_t *)v_unit(bits, data, f, tok, b, h));
        }
    }
    if (!state || f->residual <= 0)
        return;
    const int64_t slot = slot0 + tok, R = f->residual;
    struct kvx_kivi_v_hdr h = kvx_kivi_v_hdr_get(state);
    if (h.lo <= slot && slot <= h.hi)
        h.hi = slot; /* a rewrite forgets the slots after it */
    else
        h.lo = h.hi = slot;
    uint16_t *row = (uint16_t *)(state + KVX_KV_STATE_HDR) + (size_t)(slot % R) * (size_t)dim;
    for (int32_t d = 0; d < dim; d++)
        row[d] = kvx_f32_to_f16(clamp_f16(v[d]));
    h.hi = slot + 1;
    if (h.hi - h.lo > R)
        h.lo = h.hi - R;
    memcpy(state, &h, sizeof h);
}

static void v_get(int32_t bits, const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,
                  int32_t tok, float *v)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const int64_t slot = b->slot0 + tok;
    if (b->state && f->residual > 0) {
        struct kvx_kivi_v_hdr h = kvx_kivi_v_hdr_get(b->state);
        if (slot >= h.lo && slot < h.hi) {
            const uint16_t *row = (const uint16_t *)(b->state + KVX_KV_STATE_HDR) +
                                  (size_t)(slot % f->residual) * (size_t)dim;
            for (int32_t d = 0; d < dim; d++)
                v[d] = kvx_f16_to_f32(row[d]);
            return;
        }
    }
    const uint16_t *sc = (const uint16_t *)b->data + (size_t)tok * (size_t)nb;
    const uint16_t *mn = (const uint16_t *)(b->data + kvx_kivi_v_min_off(f)) + (size_t)tok * (size_t)nb;
    for (int32_t d = 0; d < dim; d++) {
        int32_t blk = d / 32, j = d % 32;
        uint32_t code = kvx_kivi_code(v_unit(bits, b->data, f, tok, blk, j / 16), bits, j % 16);
        v[d] = kvx_f16_to_f32(mn[blk]) + kvx_f16_to_f32(sc[blk]) * (float)code;
    }
}

static void v_truncate(const uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                       int64_t slot0, int64_t n_keep)
{
    (void)data;
    (void)f;
    (void)slot0;
    if (!state)
        return;
    struct kvx_kivi_v_hdr h = kvx_kivi_v_hdr_get(state);
    if (h.lo <= n_keep && n_keep <= h.hi)
        h.hi = n_keep;
    else
        h.lo = h.hi = n_keep; /* the ring held none of the slots before the cut */
    memcpy(state, &h, sizeof h);
}

/* ---------------------------------------------------------------------------------------------
 * Kernels: the split between state and page, then the scalar specification */

void kvx_kivi_qk_drive(const struct kvx_kivi_kernels *k, int32_t bits,
                       const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld)
{
    const int32_t G = f->group, Rk = k_ring(f);
    const size_t gb = kvx_kivi_k_group_bytes(f, bits);
    struct kvx_kivi_k_hdr h = {0};
    if (b->state)
        h = kvx_kivi_k_hdr_get(b->state);
    for (int32_t g = t0 / G; g * G < t1; g++) {
        int32_t a = t0 > g * G ? t0 : g * G, e = t1 < (g + 1) * G ? t1 : (g + 1) * G;
        float *out = scores + (a - t0);
        const int64_t gs = b->slot0 + (int64_t)g * G;
        if (gs >= h.lo && gs < h.hi) { /* the ring holds the group (its slots below hi) */
            const struct kvx_kv_block sb = {
                b->state + KVX_KV_STATE_HDR + (size_t)(gs % Rk) * (size_t)f->dim * 2u, NULL, 0};
            const struct kvx_kv_fmt sf = {.page_tokens = G, .dim = f->dim};
            k->qk_f16(&sb, &sf, a - g * G, e - g * G, q, n_q, out, ld);
        } else {
            k->qk_group(bits, b->data + (size_t)g * gb, f, a - g * G, e - g * G, q, n_q, out, ld);
        }
    }
}

void kvx_kivi_pv_drive(const struct kvx_kivi_kernels *k, int32_t bits,
                       const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc)
{
    int32_t r0 = t1, r1 = t1; /* the part [r0, r1) the ring holds */
    struct kvx_kivi_v_hdr h = {0};
    if (b->state && f->residual > 0)
        h = kvx_kivi_v_hdr_get(b->state);
    if (h.hi > h.lo && h.lo < b->slot0 + t1 && h.hi > b->slot0 + t0) {
        r0 = h.lo > b->slot0 + t0 ? (int32_t)(h.lo - b->slot0) : t0;
        r1 = h.hi < b->slot0 + t1 ? (int32_t)(h.hi - b->slot0) : t1;
    }
    if (r0 > t0)
        k->pv_page(bits, b->data, f, t0, r0, p, n_q, ld, acc);
    if (t1 > r1)
        k->pv_page(bits, b->data, f, r1, t1, p + (r1 - t0), n_q, ld, acc);
    const int32_t R = f->residual;
    const struct kvx_kv_block rb = {b->state ? b->state + KVX_KV_STATE_HDR : NULL, NULL, 0};
    const struct kvx_kv_fmt rf = {.page_tokens = R, .dim = f->dim};
    for (int32_t t = r0; t < r1;) { /* runs of the ring without wrap-around */
        int32_t row = (int32_t)((b->slot0 + t) % R), n = r1 - t < R - row ? r1 - t : R - row;
        k->pv_f16(&rb, &rf, row, row + n, p + (t - t0), n_q, ld, acc);
        t += n;
    }
}

/* qk of a sealed group, scalar (the specification).
 *   scores[i*ld + t - a] = sum_c (q_ic s_c) code_c[t] + sum_c q_ic m_c   for a <= t < b
 * (s_c, m_c: the group's f16 scale and min of channel c; a % 16 == 0, b <= G).  fp32, channels
 * in order.  That is q_i · k_t of the decoded keys, reassociated; the SIMD kernels match it
 * within 1e-5 x sum_c |q_ic| (|m_c| + L s_c) (test_kv_codec_lowbit.c). */
void kvx_kivi_qk_group_scalar(int32_t bits, const uint8_t *group, const struct kvx_kv_fmt *f,
                              int32_t a, int32_t b, const float *q, int32_t n_q, float *scores,
                              int64_t ld)
{
    const int32_t dim = f->dim;
    const uint16_t *sc = (const uint16_t *)group, *mn = sc + dim;
    for (int32_t tile0 = a; tile0 < b; tile0 += KVX_KV_TILE) {
        const int32_t tile = tile0 / KVX_KV_TILE;
        const int32_t n_t = b - tile0 < KVX_KV_TILE ? b - tile0 : KVX_KV_TILE;
        for (int32_t i = 0; i < n_q; i++) {
            const float *qi = q + (size_t)i * (size_t)dim;
            float acc[KVX_KV_TILE] = {0}, bias = 0;
            for (int32_t c = 0; c < dim; c++) {
                const uint32_t *unit = k_unit(bits, group, dim, tile, c);
                float qs = qi[c] * kvx_f16_to_f32(sc[c]);
                bias += qi[c] * kvx_f16_to_f32(mn[c]);
                for (int32_t j = 0; j < KVX_KV_TILE; j++)
                    acc[j] += qs * (float)kvx_kivi_code(unit, bits, j);
            }
            float *out = scores + (int64_t)i * ld + (tile0 - a);
            for (int32_t j = 0; j < n_t; j++)
                out[j] = acc[j] + bias;
        }
    }
}

/* pv over quantized rows, scalar (the specification).
 *   acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + t - t0] * (m_tb + s_tb * code_t[d])   (b = d / 32)
 * fp32, tokens in order.  SIMD matches within 1e-5 x sum_t p_t (|m_tb| + L s_tb). */
void kvx_kivi_pv_page_scalar(int32_t bits, const uint8_t *region, const struct kvx_kv_fmt *f,
                             int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld,
                             float *acc)
{
    const int32_t dim = f->dim, nb = dim / 32;
    const uint16_t *sc = (const uint16_t *)region;
    const uint16_t *mn = (const uint16_t *)(region + kvx_kivi_v_min_off(f));
    for (int32_t t = t0; t < t1; t++)
        for (int32_t b = 0; b < nb; b++) {
            const size_t tb = (size_t)t * (size_t)nb + (size_t)b;
            const float s = kvx_f16_to_f32(sc[tb]), m = kvx_f16_to_f32(mn[tb]);
            float v[32];
            for (int32_t j = 0; j < 32; j++)
                v[j] = m + s * (float)kvx_kivi_code(v_unit(bits, region, f, t, b, j / 16), bits, j % 16);
            for (int32_t i = 0; i < n_q; i++) {
                const float w = p[(int64_t)i * ld + (t - t0)];
                float *ai = acc + (size_t)i * (size_t)dim + (size_t)(32 * b);
                for (int32_t j = 0; j < 32; j++)
                    ai[j] += w * v[j];
            }
        }
}

static const struct kvx_kivi_kernels kernels_scalar = {
    kvx_kivi_qk_group_scalar, kvx_kivi_pv_page_scalar, kvx_kv_qk_f16_scalar,
    kvx_kv_pv_f16_scalar};

/* qk / pv of kivi2 and kivi4, scalar: the slots the state holds through the f16 kernels, the
 * others through the kernels above. */
KVX_KIVI_ENTRIES(scalar, kernels_scalar)

/* ---------------------------------------------------------------------------------------------
 * Ops tables: the functions above at a fixed code width */

#define KIVI_WIDTH(B)                                                                          \
    static size_t k_region_bytes_##B(const struct kvx_kv_fmt *f) { return k_region_bytes(B, f); } \
    static size_t v_region_bytes_##B(const struct kvx_kv_fmt *f) { return v_region_bytes(B, f); } \
    static void k_put_##B(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,          \
                          int64_t slot0, int32_t tok, const float *k)                          \
    {                                                                                          \
        k_put(B, data, state, f, slot0, tok, k);                                               \
    }                                                                                          \
    static void v_put_##B(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,          \
                          int64_t slot0, int32_t tok, const float *v)                          \
    {                                                                                          \
        v_put(B, data, state, f, slot0, tok, v);                                               \
    }                                                                                          \
    static void k_get_##B(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,           \
                          int32_t tok, float *k)                                               \
    {                                                                                          \
        k_get(B, b, f, tok, k);                                                                \
    }                                                                                          \
    static void v_get_##B(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,           \
                          int32_t tok, float *v)                                               \
    {                                                                                          \
        v_get(B, b, f, tok, v);                                                                \
    }                                                                                          \
    static void k_truncate_##B(const uint8_t *data, uint8_t *state,                            \
                               const struct kvx_kv_fmt *f, int64_t slot0, int64_t n_keep)      \
    {                                                                                          \
        k_truncate(B, data, state, f, slot0, n_keep);                                          \
    }
KIVI_WIDTH(2)
KIVI_WIDTH(4)

/* .bits: nominal bits per value at the engine's default G = 32 (K: B + 32/G, V: B + 1). */
#define OPS_KIVI(B, isa)                                                                       \
    {                                                                                          \
        .name = "kivi" #B, .bits = B + 1, .k_region_bytes = k_region_bytes_##B,                \
        .v_region_bytes = v_region_bytes_##B, .k_state_bytes = k_state_bytes,                  \
        .v_state_bytes = v_state_bytes, .k_put = k_put_##B, .v_put = v_put_##B,                \
        .k_get = k_get_##B, .v_get = v_get_##B, .qk = kvx_kv_qk_kivi##B##_##isa,               \
        .pv = kvx_kv_pv_kivi##B##_##isa, .k_truncate = k_truncate_##B, .v_truncate = v_truncate, \
    }

#if defined(__x86_64__) || defined(__i386__)
#define OPS_KIVI_ALL(B)                                                                        \
    {[KVX_ISA_SCALAR] = OPS_KIVI(B, scalar), [KVX_ISA_AVX2] = OPS_KIVI(B, avx2),               \
     [KVX_ISA_AVX512] = OPS_KIVI(B, avx512)}
#else
#define OPS_KIVI_ALL(B)                                                                        \
    {[KVX_ISA_SCALAR] = OPS_KIVI(B, scalar), [KVX_ISA_AVX2] = OPS_KIVI(B, scalar),             \
     [KVX_ISA_AVX512] = OPS_KIVI(B, scalar)}
#endif

static const struct kvx_kv_codec_ops ops_kivi2[KVX_ISA_COUNT] = OPS_KIVI_ALL(2);
static const struct kvx_kv_codec_ops ops_kivi4[KVX_ISA_COUNT] = OPS_KIVI_ALL(4);

const struct kvx_kv_codec_ops *kvx_kv_codec_kivi2(enum kvx_isa isa)
{
    return &ops_kivi2[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];
}

const struct kvx_kv_codec_ops *kvx_kv_codec_kivi4(enum kvx_isa isa)
{
    return &ops_kivi4[(int)isa >= 0 && isa < KVX_ISA_COUNT ? isa : KVX_ISA_SCALAR];
}
