/* tests/test_attn_causal.c: batched causal attention (attn/causal.h) against a naive
 * double-precision softmax over the same stored K/V, for a prefill chunk that starts deep in
 * a sequence (shared-prefix chunks + causal triangle), a decode step split across threads,
 * and a batch mixing two sequences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "test.h"
#include "ops/cpu.h"
#include "util/threadpool.h"

enum { HKV = 2, G = 3, HD = 32, NH = HKV * G };

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* out[h] = softmax(scale q_h . K[f..pos]) V[f..pos] for KV head h / G, in double, f the
 * first slot the query sees (0, or pos - window + 1 in a window layer). */
static void naive(struct kvx_kv_seq *s, int64_t pos, const float *q, float scale, double *out)
{
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, 0, &v);
    const int64_t f = kvx_kv_seq_first_slot(s, 0, pos);
    double *w = malloc((size_t)(pos + 1) * sizeof *w);
    float k[HD], val[HD];
    for (int h = 0; h < NH; h++) {
        const int g = h / G;
        double mx = -INFINITY, den = 0;
        for (int64_t t = f; t <= pos; t++) {
            kvx_kv_view_get_k(&v, g, t, k);
            double d = 0;
            for (int c = 0; c < HD; c++)
                d += (double)q[h * HD + c] * k[c];
            w[t] = d * scale;
            mx = w[t] > mx ? w[t] : mx;
        }
        for (int c = 0; c < HD; c++)
            out[h * HD + c] = 0;
        for (int64_t t = f; t <= pos; t++) {
            kvx_kv_view_get_v(&v, g, t, val);
            const double e = exp(w[t] - mx);
            den += e;
            for (int c = 0; c < HD; c++)
                out[h * HD + c] += e * val[c];
        }
        for (int c = 0; c < HD; c++)
            out[h * HD + c] /= den;
    }
    free(w);
}

static void fill(struct kvx_kv_seq *s, int64_t n, uint64_t *rng)
{
    KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
    float k[HKV * HD], v[HKV * HD];
    for (int64_t t = 0; t < n; t++) {
        for (int i = 0; i < HKV * HD; i++) {
            k[i] = 2.0f * frand(rng);
            v[i] = frand(rng);
        }
        kvx_kv_seq_write(s, 0, t, k, v);
    }
    kvx_kv_seq_set_len(s, n);
}

/* Run kvx_attn_causal over tokens (seq[i], pos[i]) and compare every output row. */
static void check_batch(struct kvx_threadpool *tp, int64_t n_ctx, int64_t n_tok,
                        struct kvx_kv_seq **seq, const int64_t *pos, uint64_t *rng)
{
    struct kvx_attn_workspace ws;
    size_t floats = kvx_attn_workspace_size(&ws, n_tok, n_ctx, kvx_threadpool_size(tp), NH, HKV, HD);
    float *mem = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    kvx_attn_workspace_bind(&ws, mem, n_tok, NH, HKV, HD);
    float *q = malloc((size_t)(n_tok * NH * HD) * sizeof *q);
    float *out = malloc((size_t)(n_tok * NH * HD) * sizeof *out);
    for (int64_t i = 0; i < n_tok * NH * HD; i++)
        q[i] = frand(rng);
    const float scale = 1.0f / sqrtf((float)HD);
    struct kvx_attn_batch b = {.n_tok = n_tok, .pos = pos, .seq = seq, .layer = 0, .n_head = NH,
                               .n_head_kv = HKV, .head_dim = HD, .q = q, .q_ld = NH * HD,
                               .out = out, .out_ld = NH * HD, .scale = scale};
    kvx_attn_causal(tp, &b, &ws);
    double ref[NH * HD], worst = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        naive(seq[t], pos[t], q + t * NH * HD, scale, ref);
        for (int i = 0; i < NH * HD; i++) {
            double d = fabs(ref[i] - out[t * NH * HD + i]);
            worst = d > worst ? d : worst;
        }
    }
    KVX_CHECK_NEAR(worst, 0.0, 2e-5);
    free(q);
    free(out);
    free(mem);
}

KVX_TEST(attn_causal_matches_naive)
{
    struct kvx_kv_layout lay;
    KVX_CHECK(kvx_kv_layout_init(&lay, 1, 64, NULL) == KVX_OK);
    lay.layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = HKV,
                                             .k_dim = HD, .v_dim = HD,
                                             .k_codec = KVX_KV_CODEC_F16, .v_codec = KVX_KV_CODEC_F16};
    const int64_t n_ctx = 3000;
    struct kvx_kv_pool_cfg pc = {.layout = &lay, .budget_bytes = 3 * kvx_kv_layout_seq_bytes(&lay, n_ctx),
                                 .isa = kvx_cpu_best_isa()};
    struct kvx_kv_pool *pool = NULL;
    struct kvx_kv_seq *a = NULL, *b2 = NULL;
    struct kvx_threadpool *tp = NULL;
    KVX_CHECK(kvx_kv_pool_create(&pc, &pool, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_create(pool, &a, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_create(pool, &b2, NULL) == KVX_OK);
    KVX_CHECK(kvx_threadpool_create(3, &tp, NULL) == KVX_OK);
    uint64_t rng = 99;
    fill(a, 2600, &rng);
    fill(b2, 300, &rng);
    /* a prefill chunk of 37 tokens starting at 2563: 2 shared-prefix chunks + triangles */
    struct kvx_kv_seq *seqs[64];
    int64_t pos[64];
    for (int i = 0; i < 37; i++) {
        seqs[i] = a;
        pos[i] = 2563 + i;
    }
    check_batch(tp, n_ctx, 37, seqs, pos, &rng);
    /* decode steps at several depths, split across threads */
    const int64_t dec[] = {0, 1, 15, 16, 17, 255, 1031, 2599};
    for (size_t i = 0; i < sizeof dec / sizeof dec[0]; i++) {
        seqs[0] = a;
        pos[0] = dec[i];
        check_batch(tp, n_ctx, 1, seqs, pos, &rng);
    }
    /* a batch that is not one run: two sequences interleaved */
    for (int i = 0; i < 6; i++) {
        seqs[i] = i % 2 ? b2 : a;
        pos[i] = i % 2 ? 290 + i : 2000 + i;
    }
    check_batch(tp, n_ctx, 6, seqs, pos, &rng);
    kvx_threadpool_destroy(tp);
    kvx_kv_seq_destroy(a);
    kvx_kv_seq_destroy(b2);
    kvx_kv_pool_destroy(pool);
    kvx_kv_layout_free(&lay);
}

/* A window layer: each query sees its last `window` keys.  Windows shorter than a prefill
 * block (no keys shared by the whole block), about as long, and spanning several chunks. */
KVX_TEST(attn_causal_window_matches_naive)
{
    const int64_t windows[] = {1, 7, 16, 40, 1500};
    struct kvx_threadpool *tp = NULL;
    KVX_CHECK(kvx_threadpool_create(3, &tp, NULL) == KVX_OK);
    uint64_t rng = 7;
    for (size_t wi = 0; wi < sizeof windows / sizeof windows[0]; wi++) {
        struct kvx_kv_layout lay;
        KVX_CHECK(kvx_kv_layout_init(&lay, 1, 16, NULL) == KVX_OK);
        lay.layers[0] = (struct kvx_layer_cache){
            .kind = KVX_KV_KIND_WINDOW, .n_kv_heads = HKV, .k_dim = HD, .v_dim = HD,
            .k_codec = KVX_KV_CODEC_F16, .v_codec = KVX_KV_CODEC_F16, .window = windows[wi]};
        const int64_t n_ctx = 2200;
        struct kvx_kv_pool_cfg pc = {.layout = &lay, .budget_bytes = 2 * (size_t)n_ctx * 4 * HKV * HD * 2,
                                     .isa = kvx_cpu_best_isa()};
        struct kvx_kv_pool *pool = NULL;
        struct kvx_kv_seq *a = NULL;
        KVX_CHECK(kvx_kv_pool_create(&pc, &pool, NULL) == KVX_OK);
        KVX_CHECK(kvx_kv_seq_create(pool, &a, NULL) == KVX_OK);
        fill(a, 2100, &rng);
        struct kvx_kv_seq *seqs[64];
        int64_t pos[64];
        /* prefill chunks: one at the start, one deep */
        const int64_t starts[] = {0, 2050};
        for (int si = 0; si < 2; si++) {
            for (int i = 0; i < 45; i++) {
                seqs[i] = a;
                pos[i] = starts[si] + i;
            }
            check_batch(tp, n_ctx, 45, seqs, pos, &rng);
        }
        const int64_t dec[] = {0, 5, 39, 40, 1499, 1500, 2099};
        for (size_t i = 0; i < sizeof dec / sizeof dec[0]; i++) {
            seqs[0] = a;
            pos[0] = dec[i];
            check_batch(tp, n_ctx, 1, seqs, pos, &rng);
        }
        kvx_kv_seq_destroy(a);
        kvx_kv_pool_destroy(pool);
        kvx_kv_layout_free(&lay);
    }
    kvx_threadpool_destroy(tp);
}
