/* tests/test_kv_latent: LATENT cache layers (kv/layout.h) — one vector per token, read as the
 * key by every query head and, through its first v_dim values, as the value (MLA).
 *
 * Layout: bytes come from the K codec only (no V region, no V state); a latent layer must have
 * one head and v_dim <= k_dim.  Pool: pages and bytes equal the layout's prediction and
 * kvx_kv_pool_check holds; a view reads V as K.  Attention: kvx_attn_partial over a latent
 * view equals the softmax-weighted sum of the decoded keys (computed here from
 * kvx_kv_view_get_k), for every codec that can store the vector. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "test.h"

#define KD 32   /* latent 24 + rope 8 */
#define VD 24

static float frand(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void make_layout(struct kvx_kv_layout *l, enum kvx_kv_codec kc)
{
    KVX_CHECK(kvx_kv_layout_init(l, 2, 16, NULL) == KVX_OK);
    l->layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_LATENT, .n_kv_heads = 1,
                                            .k_dim = KD, .v_dim = VD, .k_codec = kc,
                                            .v_codec = KVX_KV_CODEC_F16, .group = 32,
                                            .residual = 128};
    l->layers[1] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 2,
                                            .k_dim = 16, .v_dim = 16, .k_codec = KVX_KV_CODEC_F32,
                                            .v_codec = KVX_KV_CODEC_F32};
}

KVX_TEST(kv_latent_layout)
{
    struct kvx_kv_layout l;
    make_layout(&l, KVX_KV_CODEC_F32);
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_OK);
    KVX_CHECK(kvx_kv_layer_owns(&l.layers[0]));
    KVX_CHECK(strcmp(kvx_kv_kind_name(KVX_KV_KIND_LATENT), "latent") == 0);
    /* f32: 16 tokens x 32 values x 4 bytes, no V region */
    KVX_CHECK_EQ_INT(kvx_kv_layer_v_head_bytes(&l, 0), 0);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 0), 16 * KD * 4);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), KD * 4 + 2 * 2 * 16 * 4);
    KVX_CHECK_EQ_INT(kvx_kv_layer_pages(&l, 0, 33), 3);
    KVX_CHECK_EQ_INT(kvx_kv_layer_v_fmt(&l, 0).dim, KD);   /* V is read in K's format */
    l.layers[0].n_kv_heads = 2;
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG && strstr(err.msg, "latent"));
    l.layers[0].n_kv_heads = 1;
    l.layers[0].v_dim = KD + 1;
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG && strstr(err.msg, "v_dim"));
    kvx_kv_layout_free(&l);
}

/* Write n random latent vectors, then check pool accounting, the view, and attention. */
static void check_codec(enum kvx_kv_codec kc)
{
    struct kvx_err err = {0};
    if (!kvx_kv_codec_ops(kc, KVX_ISA_SCALAR) || kvx_kv_codec_check(kc, 16, KD, 32, 128, &err) != KVX_OK)
        return;   /* a codec not implemented yet, or one that cannot hold KD values */
    struct kvx_kv_layout l;
    make_layout(&l, kc);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_OK);
    struct kvx_kv_pool_cfg pc = {.layout = &l, .budget_bytes = 1 << 22, .isa = KVX_ISA_SCALAR};
    struct kvx_kv_pool *pool = NULL;
    struct kvx_kv_seq *seq = NULL;
    if (kvx_kv_pool_create(&pc, &pool, &err) != KVX_OK ||
        kvx_kv_seq_create(pool, &seq, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kvx_kv_pool_destroy(pool);
        kvx_kv_layout_free(&l);
        return;
    }
    const int64_t n = 45;
    KVX_CHECK(kvx_kv_seq_reserve(seq, n, &err) == KVX_OK);
    uint32_t rs = 7u + (uint32_t)kc;
    float k[KD], kv2[2 * 16], v2[2 * 16];
    for (int64_t pos = 0; pos < n; pos++) {
        for (int d = 0; d < KD; d++)
            k[d] = frand(&rs);
        for (int d = 0; d < 32; d++)
            kv2[d] = v2[d] = frand(&rs);
        kvx_kv_seq_write(seq, 0, pos, k, NULL);
        kvx_kv_seq_write(seq, 1, pos, kv2, v2);
    }
    kvx_kv_seq_set_len(seq, n);
    KVX_CHECK(kvx_kv_pool_check(pool, &err) == KVX_OK);
    struct kvx_kv_pool_stats ps;
    kvx_kv_pool_get_stats(pool, &ps);
    KVX_CHECK_EQ_INT(ps.bytes_used, kvx_kv_layout_seq_bytes(&l, n));
    struct kvx_kv_view v;
    kvx_kv_seq_view(seq, 0, &v);
    KVX_CHECK(v.v_is_k && v.v_dim == KD && v.n_kv_heads == 1);
    float keys[45][KD], vv[KD];
    for (int64_t s = 0; s < n; s++) {
        KVX_CHECK(kvx_kv_view_get_k(&v, 0, s, keys[s]));
        KVX_CHECK(kvx_kv_view_get_v(&v, 0, s, vv) && memcmp(vv, keys[s], sizeof vv) == 0);
    }
    /* attention of 3 queries over [5, 45) against the decoded keys */
    enum { NQ = 3 };
    float q[NQ * KD], m[NQ], lsum[NQ], acc[NQ * KD];
    for (int i = 0; i < NQ * KD; i++)
        q[i] = frand(&rs);
    const float scale = 0.3f;
    float *scratch = malloc((size_t)kvx_attn_scratch_floats(NQ, 40, KD) * sizeof *scratch);
    kvx_attn_partial(&v, 0, 5, 45, q, NQ, scale, scratch, m, lsum, acc);
    for (int i = 0; i < NQ; i++) {
        double sc[45], mx = -1e30, den = 0, ref[KD] = {0};
        for (int64_t s = 5; s < 45; s++) {
            /* the scores use the stored key; rotating codecs score in their basis, equal up to
             * rounding */
            double d = 0;
            for (int c = 0; c < KD; c++)
                d += (double)q[i * KD + c] * keys[s][c];
            sc[s] = scale * d;
            mx = sc[s] > mx ? sc[s] : mx;
        }
        for (int64_t s = 5; s < 45; s++) {
            const double p = exp(sc[s] - mx);
            den += p;
            for (int c = 0; c < KD; c++)
                ref[c] += p * keys[s][c];
        }
        const double tol = kc == KVX_KV_CODEC_F32 || kc == KVX_KV_CODEC_F16 ? 1e-4 : 2e-2;
        KVX_CHECK_NEAR(m[i], mx, tol);
        KVX_CHECK_NEAR(lsum[i] / exp(mx - m[i]), den, tol * den);
        for (int c = 0; c < KD; c++)
            KVX_CHECK_NEAR(acc[i * KD + c] / exp(mx - m[i]), ref[c], tol * den);
    }
    free(scratch);
    /* truncation keeps the accounting exact */
    kvx_kv_seq_truncate(seq, 20);
    KVX_CHECK(kvx_kv_pool_check(pool, &err) == KVX_OK);
    kvx_kv_pool_get_stats(pool, &ps);
    KVX_CHECK_EQ_INT(ps.bytes_used, kvx_kv_layout_seq_bytes(&l, 20));
    kvx_kv_seq_destroy(seq);
    kvx_kv_pool_destroy(pool);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_latent_pool_and_attention)
{
    int n = 0;
    for (int c = 0; c < KVX_KV_CODEC_COUNT; c++) {
        n += kvx_kv_codec_ops((enum kvx_kv_codec)c, KVX_ISA_SCALAR) != NULL;
        check_codec((enum kvx_kv_codec)c);
    }
    KVX_CHECK(n >= 2);   /* f32 and f16 at least */
}
