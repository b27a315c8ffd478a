/* tests/test_kv_codec_q4: the q4 KV codec (kv/codec_q4.c): q4plain's storage of vectors centred
 * per page on the running mean of the pages before, K rotated.
 *
 *   - each page's centre is the mean of the decoded vectors of the page before it (slot 0 left
 *     out), in the stored basis, and k_begin_page reproduces every stored centre from the page before,
 *     also after truncations, forks, compactions and writes into a shared prefix's successor;
 *   - put/get round trip: far smaller error than q4plain on rows with per-channel offsets;
 *   - scores and attention over a pool against a double-precision reference over the decoded
 *     vectors, every ISA; the centre's share of each ISA against the scalar one, odd sizes;
 *   - the engine on the real model: q4 logits closer to f16's than q4plain's. */
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "engine/engine.h"
#include "kv/codec.h"
#include "kv/codec_quant.h"
#include "kv/hadamard.h"
#include "kv/pool.h"
#include "kvx.h"
#include "ops/cpu.h"
#include "test.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_float(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 40) / (double)(1ull << 23) - 1.0);
}

#define HD 64
#define HEADS 2

/* A row like the K of many models: noise plus large per-channel offsets (channel 3: +12,
 * channel 40: -7), slot 0 (a sink) far off. */
static void offset_row(float *x, int64_t pos, uint64_t *rng)
{
    for (int32_t c = 0; c < HD; c++)
        x[c] = rng_float(rng) + (c == 3 ? 12.0f : c == 40 ? -7.0f : 0.0f) + (pos == 0 ? 30.0f : 0.0f);
}

static struct kvx_kv_pool *make_pool(struct kvx_kv_layout *lay, enum kvx_kv_codec kc,
                                     enum kvx_kv_codec vc, int32_t pt, enum kvx_isa isa)
{
    KVX_CHECK(kvx_kv_layout_init(lay, 1, pt, NULL) == KVX_OK);
    lay->layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = HEADS,
                                              .k_dim = HD, .v_dim = HD, .shared_from = -1,
                                              .k_codec = kc, .v_codec = vc};
    struct kvx_kv_pool_cfg cfg = {.layout = lay, .budget_bytes = (size_t)4 << 20, .isa = isa};
    struct kvx_kv_pool *p = NULL;
    struct kvx_err err = {0};
    if (kvx_kv_pool_create(&cfg, &p, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "pool: %s", err.msg);
    return p;
}

/* Append tokens [len, len + n) of offset rows (K and V alike). */
static void append(struct kvx_kv_seq *s, int64_t n, uint64_t *rng)
{
    const int64_t len = kvx_kv_seq_len(s);
    KVX_CHECK(kvx_kv_seq_reserve(s, len + n, NULL) == KVX_OK);
    float k[HEADS * HD], v[HEADS * HD];
    for (int64_t pos = len; pos < len + n; pos++) {
        for (int h = 0; h < HEADS; h++) {
            offset_row(k + h * HD, pos, rng);
            offset_row(v + h * HD, pos, rng);
        }
        kvx_kv_seq_write(s, 0, pos, k, v);
    }
    kvx_kv_seq_set_len(s, len + n);
}

/* Every page after the first: its stored K and V centres equal what k_begin_page derives from
 * the page before, bit for bit, and (in the model's basis) the mean of the decoded vectors of
 * that page's slots (slot 0 left out) within fp32 rounding.  Returns mismatches. */
static int centres_consistent(const struct kvx_kv_seq *s, int line)
{
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, 0, &v);
    const int64_t slots = kvx_kv_seq_slots(s, 0), pt = v.page_tokens;
    int bad = 0;
    uint8_t *scratch = malloc(v.k_stride > v.v_stride ? v.k_stride : v.v_stride);
    for (int64_t pg = 1; pg * pt < slots; pg++)
        for (int32_t h = 0; h < v.n_kv_heads; h++)
            for (int kv = 0; kv < 2; kv++) {
                const size_t off = (kv ? v.v_off + (size_t)h * v.v_stride : v.k_off + (size_t)h * v.k_stride);
                const struct kvx_kv_fmt *f = kv ? &v.v_fmt : &v.k_fmt;
                (kv ? v.v_ops->v_begin_page : v.k_ops->k_begin_page)(scratch, v.pages[pg - 1] + off, f, pg * pt);
                const float *stored = (const float *)(v.pages[pg] + off);
                bad += memcmp(scratch, stored, (size_t)HD * sizeof(float)) != 0;
                double mean[HD] = {0};
                float x[HD];
                const int64_t t0 = pg == 1 ? 1 : (pg - 1) * pt;
                for (int64_t t = t0; t < pg * pt; t++) {
                    (kv ? kvx_kv_view_get_v : kvx_kv_view_get_k)(&v, h, t, x);
                    for (int c = 0; c < HD; c++)
                        mean[c] += x[c];
                }
                float c_model[HD];
                memcpy(c_model, stored, sizeof c_model);
                if (!kv)
                    kvx_kv_unrotate(c_model, 1, HD);
                for (int c = 0; c < HD; c++)
                    bad += !(fabs(mean[c] / (double)(pg * pt - t0) - c_model[c]) <= 1e-3);
            }
    free(scratch);
    if (bad)
        kvx_test_fail(__FILE__, line, "%d page centres differ", bad);
    return bad;
}

KVX_TEST(kv_q4_centres_follow_the_page_before)
{
    struct kvx_kv_layout lay;
    struct kvx_kv_pool *p = make_pool(&lay, KVX_KV_CODEC_Q4, KVX_KV_CODEC_Q4, 32, KVX_ISA_SCALAR);
    struct kvx_kv_seq *a = NULL, *b = NULL, *c = NULL;
    struct kvx_err err = {0};
    uint64_t rng = 7;
    KVX_CHECK(kvx_kv_seq_create(p, &a, &err) == KVX_OK);
    append(a, 1, &rng);  /* one token, then the rest: a decode and a prefill write alike */
    append(a, 150, &rng);
    centres_consistent(a, __LINE__);
    /* the first page's centre is zero, the second's far from it (the offsets) */
    struct kvx_kv_view v;
    kvx_kv_seq_view(a, 0, &v);
    const float *c0 = (const float *)(v.pages[0] + v.v_off), *c1 = (const float *)(v.pages[1] + v.v_off);
    KVX_CHECK(c0[3] == 0.0f && c0[40] == 0.0f);
    KVX_CHECK_NEAR(c1[3], 12.0, 0.5);
    KVX_CHECK_NEAR(c1[40], -7.0, 0.5);
    /* truncate into page 2, write again: page 3 is derived from the rewritten page 2 */
    kvx_kv_seq_truncate(a, 75);
    append(a, 60, &rng);
    centres_consistent(a, __LINE__);
    /* a fork writes its own pages after the shared ones */
    KVX_CHECK(kvx_kv_seq_fork(a, &b, &err) == KVX_OK);
    append(b, 70, &rng);
    append(a, 5, &rng);
    centres_consistent(a, __LINE__);
    centres_consistent(b, __LINE__);
    /* compaction (re-encoding through get and put) keeps every centre derived */
    KVX_CHECK(kvx_kv_seq_fork(b, &c, &err) == KVX_OK);
    kvx_kv_seq_destroy(b);
    b = NULL;
    const int64_t slots = kvx_kv_seq_slots(c, 0), n_keep = slots - 45;
    int64_t *keep = malloc((size_t)(HEADS * n_keep) * sizeof *keep);
    for (int h = 0; h < HEADS; h++)
        for (int64_t j = 0, o = 0; j < slots; j++)
            if (j < 4 + h || j >= 49 + h)
                keep[h * n_keep + o++] = j;
    /* c shares its pages with a: compaction refuses, so cut a loose first */
    kvx_kv_seq_destroy(a);
    a = NULL;
    KVX_CHECK(kvx_kv_seq_compact(c, 0, keep, n_keep, &err) == KVX_OK);
    centres_consistent(c, __LINE__);
    append(c, 40, &rng);
    centres_consistent(c, __LINE__);
    KVX_CHECK(kvx_kv_pool_check(p, &err) == KVX_OK);
    free(keep);
    kvx_kv_seq_destroy(c);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&lay);
}

/* The same offset rows through q4 and q4plain, pages of 64: on the centred pages (all but the
 * first) q4's RMS error is a fraction of q4plain's. */
KVX_TEST(kv_q4_round_trip_beats_q4plain)
{
    double e2[2] = {0}, s2 = 0;
    const enum kvx_kv_codec cs[2] = {KVX_KV_CODEC_Q4, KVX_KV_CODEC_Q4PLAIN};
    for (int k = 0; k < 2; k++) {
        struct kvx_kv_layout lay;
        struct kvx_kv_pool *p = make_pool(&lay, cs[k], cs[k], 64, kvx_cpu_best_isa());
        struct kvx_kv_seq *s = NULL;
        KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
        uint64_t rng = 11, rng2 = 11;
        append(s, 300, &rng);
        struct kvx_kv_view v;
        kvx_kv_seq_view(s, 0, &v);
        float x[HD], ref[HEADS * HD];
        for (int64_t t = 0; t < 300; t++) {
            for (int h = 0; h < HEADS; h++) {
                offset_row(ref + h * HD, t, &rng2);     /* K of head h */
                float vref[HD];
                offset_row(vref, t, &rng2);             /* V (same distribution) */
                KVX_CHECK(kvx_kv_view_get_k(&v, h, t, x));
                const double w = t >= 64; /* the first page is not centred */
                for (int c = 0; c < HD; c++) {
                    double d = (double)x[c] - ref[h * HD + c];
                    e2[k] += w * d * d;
                    s2 += k == 0 ? w * ref[h * HD + c] * ref[h * HD + c] : 0;
                }
                KVX_CHECK(kvx_kv_view_get_v(&v, h, t, x));
                for (int c = 0; c < HD; c++) {
                    double d = (double)x[c] - vref[c];
                    e2[k] += w * d * d;
                }
            }
        }
        kvx_kv_seq_destroy(s);
        kvx_kv_pool_destroy(p);
        kvx_kv_layout_free(&lay);
    }
    const double r4 = sqrt(e2[0] / (2 * s2)), rp = sqrt(e2[1] / (2 * s2));
    fprintf(stderr, "  relative RMS error on offset rows after the first page: q4 %.5f, q4plain %.5f\n",
            r4, rp);
    KVX_CHECK(r4 < 0.25 * rp);
}

/* q·k' and softmax(q·k') v' over the decoded vectors (double). */
static void reference(const struct kvx_kv_view *v, int32_t h, int64_t k0, int64_t k1,
                      const float *q, double *scores, double *out)
{
    float kr[HD], vr[HD];
    double mx = -INFINITY, sum = 0;
    for (int64_t t = k0; t < k1; t++) {
        kvx_kv_view_get_k(v, h, t, kr);
        double d = 0;
        for (int c = 0; c < HD; c++)
            d += (double)q[c] * kr[c];
        scores[t - k0] = d;
        mx = d * 0.125 > mx ? d * 0.125 : mx;
    }
    for (int c = 0; c < HD; c++)
        out[c] = 0;
    for (int64_t t = k0; t < k1; t++) {
        double w = exp(scores[t - k0] * 0.125 - mx);
        sum += w;
        kvx_kv_view_get_v(v, h, t, vr);
        for (int c = 0; c < HD; c++)
            out[c] += w * vr[c];
    }
    for (int c = 0; c < HD; c++)
        out[c] /= sum;
}

/* A query whose rotation is exactly what the kernels' 8-bit query rounding keeps
 * (kv/codec_quant.h): in the rotated basis, per group of 32, integers times amax/127 with one
 * channel at +-127, rotated back.  Up to the fp32 rounding of the rotations, the kernels then
 * compute exact dot products, and the reference over the decoded vectors is exact. */
static void exact_rotated_query(float *q, float amax, uint64_t *rng)
{
    for (int c = 0; c < HD; c++) {
        float i = (float)(int)(127.0f * rng_float(rng));
        q[c] = (c % 32 == 5 ? 127.0f : i) * (amax / 127.0f);
    }
    kvx_kv_unrotate(q, 1, HD);
}

/* Scores and attention outputs against the double-precision reference (relative 1e-4 of the
 * magnitudes involved), every ISA, ranges across page and tile boundaries. */
KVX_TEST(kv_q4_attention_matches_reference)
{
    uint64_t rng = 5;
    float q[HD];
    const int64_t ranges[][2] = {{0, 300}, {5, 300}, {31, 33}, {33, 290}, {64, 96}, {299, 300}, {100, 229}};
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        struct kvx_kv_layout lay;
        struct kvx_kv_pool *p = make_pool(&lay, KVX_KV_CODEC_Q4, KVX_KV_CODEC_Q4, 32, (enum kvx_isa)isa);
        struct kvx_kv_seq *s = NULL;
        KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
        uint64_t data_rng = 3;
        append(s, 300, &data_rng);
        struct kvx_kv_view v;
        kvx_kv_seq_view(s, 0, &v);
        int bad = 0;
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
            const int64_t k0 = ranges[r][0], k1 = ranges[r][1], n = k1 - k0, base = k0 / 16 * 16;
            const int32_t h = (int32_t)(r % HEADS);
            exact_rotated_query(q, 0.02f + 0.01f * (float)r, &rng);
            double *ref_s = malloc(sizeof(double) * (size_t)n), ref_o[HD];
            reference(&v, h, k0, k1, q, ref_s, ref_o);
            const int64_t ld = k1 - base + 16;
            float *sc = malloc(sizeof(float) * (size_t)(ld + HD));
            kvx_attn_scores(&v, h, k0, k1, q, 1, sc, ld, sc + ld);
            float kr[HD];
            for (int64_t t = k0; t < k1; t++) {
                kvx_kv_view_get_k(&v, h, t, kr);
                double mag = 0;
                for (int c = 0; c < HD; c++)
                    mag += fabs((double)q[c] * kr[c]);
                bad += !(fabs(sc[t - base] - ref_s[t - k0]) <= 1e-4 * mag + 1e-6);
            }
            float m, l, acc[HD], out[HD];
            float *scr = malloc(sizeof(float) * (size_t)kvx_attn_scratch_floats(1, n, HD));
            kvx_attn_partial(&v, h, k0, k1, q, 1, 0.125f, scr, &m, &l, acc);
            kvx_attn_merge(1, 1, HD, &m, &l, acc, out);
            for (int c = 0; c < HD; c++)
                bad += !(fabs(out[c] - ref_o[c]) <= 1e-4 * (1 + fabs(ref_o[c])));
            free(scr);
            free(sc);
            free(ref_s);
        }
        if (bad)
            kvx_test_fail(__FILE__, __LINE__, "%s: %d mismatches", kvx_isa_name((enum kvx_isa)isa), bad);
        kvx_kv_seq_destroy(s);
        kvx_kv_pool_destroy(p);
        kvx_kv_layout_free(&lay);
    }
}

/* kvx_kv_q4_centre_{qk,pv}_ISA against _scalar: any n (tails), head dims 32 and 96, up to 5
 * query rows; entries past n untouched. */
KVX_TEST(kv_q4_centre_share_simd_matches_scalar)
{
#if defined(__x86_64__) || defined(__i386__)
    typedef void (*qk_fn)(const float *, int32_t, int32_t, const float *, float *, int64_t, int32_t);
    typedef void (*pv_fn)(const float *, int32_t, int64_t, int32_t, const float *, int32_t, float *);
    const qk_fn qks[] = {kvx_kv_q4_centre_qk_scalar, kvx_kv_q4_centre_qk_avx2, kvx_kv_q4_centre_qk_avx512};
    const pv_fn pvs[] = {kvx_kv_q4_centre_pv_scalar, kvx_kv_q4_centre_pv_avx2, kvx_kv_q4_centre_pv_avx512};
    const enum kvx_isa isas[] = {KVX_ISA_SCALAR, KVX_ISA_AVX2, KVX_ISA_AVX512};
    uint64_t rng = 13;
    enum { LD = 80, DIM = 96, NQ = 5 };
    float q[NQ * DIM], c[DIM], p[NQ * LD], s_ref[NQ * LD], s_got[NQ * LD], a_ref[NQ * DIM], a_got[NQ * DIM];
    int bad = 0;
    for (int k = 1; k < 3; k++) {
        if (!kvx_cpu_has_isa(isas[k]))
            continue;
        for (int32_t dim = 32; dim <= DIM; dim += 64)
            for (int32_t n = 1; n <= 70; n += 3)
                for (int32_t n_q = 1; n_q <= NQ; n_q += 2) {
                    for (int i = 0; i < NQ * DIM; i++)
                        q[i] = rng_float(&rng), a_ref[i] = a_got[i] = rng_float(&rng);
                    for (int i = 0; i < DIM; i++)
                        c[i] = 10.0f * rng_float(&rng);
                    for (int i = 0; i < NQ * LD; i++)
                        p[i] = 0.5f + 0.5f * rng_float(&rng), s_ref[i] = s_got[i] = rng_float(&rng);
                    qks[0](q, n_q, dim, c, s_ref, LD, n);
                    qks[k](q, n_q, dim, c, s_got, LD, n);
                    pvs[0](p, n_q, LD, n, c, dim, a_ref);
                    pvs[k](p, n_q, LD, n, c, dim, a_got);
                    for (int i = 0; i < NQ * LD; i++)
                        bad += !(fabs(s_got[i] - s_ref[i]) <= 1e-5 * (1 + fabs(s_ref[i])));
                    for (int i = 0; i < NQ * DIM; i++)
                        bad += !(fabs(a_got[i] - a_ref[i]) <= 1e-5 * (1 + fabs(a_ref[i])));
                }
    }
    KVX_CHECK_EQ_INT(bad, 0);
#else
    kvx_test_skip("no SIMD variants on this processor");
#endif
}

KVX_TEST(kv_q4_ops_tables)
{
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        const struct kvx_kv_codec_ops *o = kvx_kv_codec_ops(KVX_KV_CODEC_Q4, (enum kvx_isa)isa);
        KVX_CHECK(o && o->q_rotate && !o->out_unrotate && o->k_begin_page && o->v_begin_page &&
                  !o->k_copy && !o->v_copy && !o->k_state_bytes && strcmp(o->name, "q4") == 0);
        const struct kvx_kv_fmt f = {.page_tokens = 256, .dim = 64};
        KVX_CHECK_EQ_INT(o->k_region_bytes(&f), 256 + 16 * 640);
        KVX_CHECK_EQ_INT(o->v_region_bytes(&f), 256 + 16 * 640);
    }
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_codec_check(KVX_KV_CODEC_Q4, 256, 8192, 0, 0, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "4096") != NULL);
    enum kvx_kv_codec c;
    KVX_CHECK(kvx_kv_codec_parse("q4plain", &c) && c == KVX_KV_CODEC_Q4PLAIN);
}
