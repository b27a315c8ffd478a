/* tests/test_engine.c: the engine on the default model — decode equals prefill, every ISA
 * equals the scalar reference, the pool holds exactly what kv/layout predicts, and requests
 * that do not fit fail cleanly without changing the session. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "kvx.h"
#include "ops/cpu.h"
#include "test.h"

struct fixture {
    struct kvx_model *m;
    struct kvx_engine *e;
    struct kvx_model_info info;
};

static bool open_model(struct fixture *f, struct kvx_engine_cfg *ec)
{
    memset(f, 0, sizeof *f);
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("default model not present (make model)");
        return false;
    }
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &f->m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "open: %s", err.msg);
        return false;
    }
    kvx_model_get_info(f->m, &f->info);
    if (ec && kvx_engine_create(f->m, ec, &f->e, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
        kvx_model_close(f->m);
        return false;
    }
    return true;
}

static void close_model(struct fixture *f)
{
    kvx_engine_destroy(f->e);
    kvx_model_close(f->m);
}

static void make_tokens(int32_t *t, int n, int32_t n_vocab, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

/* Two runs of the network that differ only in summation order (SIMD width, thread count,
 * how a prefill is chunked) do not give bit-equal logits: activations are re-quantized to 8
 * bits before every matmul, so a last-bit difference can flip a rounding, and flips compound
 * over 30 layers (llama.cpp differs from itself the same way across KV precisions; see
 * tools/reference/agreement_floor.py).  The kernels themselves are compared exactly in the
 * unit tests; here "close" means: mean |dlogit| below 0.3 and the top-1 token of every row
 * within the other run's top 5.  A wrong kernel or a corrupted cache moves logits by whole
 * units and fails both. */
static void check_logits_close(const char *what, const float *a, const float *b, int rows,
                               size_t V)
{
    double sum = 0;
    int top_ok = 0;
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
        size_t best = 0;
        for (size_t i = 0; i < V; i++) {
            sum += x[i] > y[i] ? x[i] - y[i] : y[i] - x[i];
            best = x[i] > x[best] ? i : best;
        }
        int above = 0; /* tokens that y ranks above x's best */
        for (size_t i = 0; i < V; i++)
            above += y[i] > y[best];
        top_ok += above < 5;
    }
    const double mean = sum / ((double)rows * (double)V);
    if (mean > 0.3 || top_ok < rows)
        kvx_test_fail(__FILE__, __LINE__, "%s: mean |dlogit| %.3g, top-1 within top-5 at %d/%d",
                      what, mean, top_ok, rows);
}

KVX_TEST(engine_model_info)
{
    struct fixture f;
    if (!open_model(&f, NULL))
        return;
    KVX_CHECK(strcmp(f.info.arch, "llama") == 0);
    KVX_CHECK_EQ_INT(f.info.n_vocab, 49152);
    KVX_CHECK_EQ_INT(f.info.n_layer, 30);
    KVX_CHECK_EQ_INT(f.info.n_embd, 576);
    KVX_CHECK_EQ_INT(f.info.n_head, 9);
    KVX_CHECK_EQ_INT(f.info.n_head_kv, 3);
    KVX_CHECK_EQ_INT(f.info.head_dim, 64);
    KVX_CHECK_EQ_INT(f.info.n_ctx_train, 8192);
    close_model(&f);
}

/* Feeding 40 tokens at once, or 7 + 1 + 32 in pieces with a small batch, gives the same
 * logits at the positions both compute: the cache written by prefill is what decode reads. */
KVX_TEST(engine_decode_equals_prefill)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 256;
    ec.n_threads = 2;
    ec.page_tokens = 16; /* the default budget (one n_ctx sequence) then holds both sessions */
    struct fixture f;
    if (!open_model(&f, &ec))
        return;
    const int n = 40;
    const size_t V = (size_t)f.info.n_vocab;
    int32_t toks[40];
    make_tokens(toks, n, f.info.n_vocab, 7);
    float *all = malloc((size_t)n * V * sizeof *all), *step = malloc((size_t)n * V * sizeof *step);
    struct kvx_session *a = NULL, *b = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_session_create(f.e, &a, &err) == KVX_OK);
    KVX_CHECK(kvx_session_create(f.e, &b, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(a, toks, n, true, all, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(b, toks, 7, true, step, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(b, toks + 7, 1, true, step + 7 * V, &err) == KVX_OK);
    for (int i = 8; i < n; i++)
        KVX_CHECK(kvx_session_feed(b, toks + i, 1, false, step + (size_t)i * V, &err) == KVX_OK);
    check_logits_close("prefill vs decode", all, step, n, V);
    KVX_CHECK_EQ_INT(kvx_session_n_past(a), n);
    KVX_CHECK_EQ_INT(kvx_session_n_past(b), n);
    kvx_session_destroy(a);
    kvx_session_destroy(b);
    free(all);
    free(step);
    close_model(&f);
}

/* Every ISA the CPU has, and every thread count, against the scalar single-thread engine. */
KVX_TEST(engine_isa_and_threads_match_scalar)
{
    struct fixture f;
    if (!open_model(&f, NULL))
        return;
    const int n = 24;
    const size_t V = (size_t)f.info.n_vocab;
    int32_t toks[24];
    make_tokens(toks, n, f.info.n_vocab, 11);
    float *ref = malloc((size_t)n * V * sizeof *ref), *got = malloc((size_t)n * V * sizeof *got);
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        for (int nth = 1; nth <= 3; nth += 2) {
            struct kvx_engine_cfg ec = kvx_engine_cfg_default();
            ec.n_ctx = 128;
            ec.isa = isa;
            ec.n_threads = nth;
            ec.n_batch = 16; /* two batches */
            struct kvx_engine *e = NULL;
            struct kvx_session *s = NULL;
            struct kvx_err err = {0};
            KVX_CHECK(kvx_engine_create(f.m, &ec, &e, &err) == KVX_OK);
            KVX_CHECK(e && kvx_session_create(e, &s, &err) == KVX_OK);
            KVX_CHECK(s && kvx_session_feed(s, toks, n, true, isa == 0 && nth == 1 ? ref : got,
                                            &err) == KVX_OK);
            if (isa || nth > 1) {
                char what[64];
                snprintf(what, sizeof what, "isa %d, %d threads vs scalar", isa, nth);
                check_logits_close(what, ref, got, n, V);
            }
            kvx_session_destroy(s);
            kvx_engine_destroy(e);
        }
    }
    free(ref);
    free(got);
    close_model(&f);
}

/* The pool holds exactly what kv/layout predicts, at page granularity, and frees it. */
KVX_TEST(engine_pool_bytes_match_layout)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 1024;
    ec.page_tokens = 64;
    ec.n_threads = 2;
    struct fixture f;
    if (!open_model(&f, &ec))
        return;
    const struct kvx_kv_layout *l = kvx_engine_layout(f.e);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(l), 30 * 3 * 64 * 2 * 2); /* f16 K and V */
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_session_create(f.e, &s, &err) == KVX_OK);
    int32_t toks[200];
    make_tokens(toks, 200, f.info.n_vocab, 3);
    const int steps[] = {1, 63, 1, 70, 65};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        KVX_CHECK(kvx_session_feed(s, toks + total, steps[i], false, NULL, &err) == KVX_OK);
        total += steps[i];
        struct kvx_kv_stats st;
        kvx_engine_kv_stats(f.e, &st);
        KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(l, total));
        KVX_CHECK_EQ_INT(st.tokens_cached, total);
        KVX_CHECK(kvx_kv_pool_check(kvx_engine_pool(f.e), &err) == KVX_OK);
    }
    /* the whole blocks stay in the prefix cache, counted apart once no session uses them */
    KVX_CHECK(kvx_session_truncate(s, 10, &err) == KVX_OK);
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(f.e, &st);
    KVX_CHECK_EQ_INT(st.bytes_used - st.prefix_bytes_idle, kvx_kv_layout_seq_bytes(l, 10));
    KVX_CHECK_EQ_INT(st.prefix_bytes, 3 * kvx_kv_layout_seq_bytes(l, 64));
    kvx_session_destroy(s);
    kvx_engine_kv_stats(f.e, &st);
    KVX_CHECK_EQ_INT(st.bytes_used - st.prefix_bytes_idle, 0);
    close_model(&f);
}

/* A request that does not fit the budget or the context fails and leaves the session as it
 * was: the next feed continues as if the failed one never happened. */
KVX_TEST(engine_refusals_leave_session_unchanged)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 512;
    ec.page_tokens = 16;
    ec.n_threads = 1;
    struct fixture f;
    if (!open_model(&f, &ec))
        return;
    kvx_engine_destroy(f.e);
    f.e = NULL;
    struct kvx_err err = {0};
    /* budget: exactly 32 tokens (two pages of 16 in each of 30 layers) */
    ec.kv_budget_bytes = 32 * (size_t)(30 * 3 * 64 * 2 * 2);
    KVX_CHECK(kvx_engine_create(f.m, &ec, &f.e, &err) == KVX_OK);
    struct kvx_session *s = NULL;
    KVX_CHECK(kvx_session_create(f.e, &s, &err) == KVX_OK);
    int32_t toks[600];
    make_tokens(toks, 600, f.info.n_vocab, 5);
    const size_t V = (size_t)f.info.n_vocab;
    float *l1 = malloc(V * sizeof *l1), *l2 = malloc(V * sizeof *l2);
    KVX_CHECK(kvx_session_feed(s, toks, 20, false, NULL, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(s, toks + 20, 13, false, NULL, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(strstr(err.msg, "budget") != NULL);
    KVX_CHECK_EQ_INT(kvx_session_n_past(s), 20);
    KVX_CHECK(kvx_kv_pool_check(kvx_engine_pool(f.e), &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(s, toks + 20, 600 - 20, false, NULL, &err) == KVX_ERR_CONTEXT);
    KVX_CHECK_EQ_INT(kvx_session_n_past(s), 20);
    int32_t bad = f.info.n_vocab;
    KVX_CHECK(kvx_session_feed(s, &bad, 1, false, NULL, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_session_feed(s, toks + 20, 12, false, l1, &err) == KVX_OK);
    /* same 32 tokens in a fresh session give the same last logits */
    struct kvx_session *s2 = NULL;
    kvx_session_destroy(s);
    KVX_CHECK(kvx_session_create(f.e, &s2, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(s2, toks, 32, false, l2, &err) == KVX_OK);
    check_logits_close("after refusals vs fresh", l1, l2, 1, V);
    kvx_session_destroy(s2);
    free(l1);
    free(l2);
    close_model(&f);
}

/* kvx_engine_decode: three sessions at different depths stepped together give the logits of
 * stepping each alone (in another engine); a refused step (a session twice, a bad token, a
 * page that does not fit the budget) changes no session.  On a tiny float32 model
 * (tests/fixtures/arch/llama_gqa), where batching changes only summation order. */
static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabsf(a[i] - b[i]) > m ? fabsf(a[i] - b[i]) : m;
    return m;
}

KVX_TEST(engine_batched_decode_equals_single)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/llama_gqa", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct fixture f = {0};
    struct kvx_err err = {0};
    KVX_CHECK(kvx_model_open(&mc, &f.m, &err) == KVX_OK);
    if (!f.m)
        return;
    kvx_model_get_info(f.m, &f.info);
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 96;
    ec.n_threads = 2;
    ec.page_tokens = 16;
    ec.k_codec = ec.v_codec = KVX_KV_CODEC_F32;
    KVX_CHECK(kvx_engine_create(f.m, &ec, &f.e, &err) == KVX_OK);
    /* the batched engine: steps of at most 2 tokens (three sessions take two passes), and a
     * budget of exactly 6 pages of 16 tokens */
    struct kvx_engine_cfg bc = ec;
    bc.n_batch = 2;
    bc.kv_budget_bytes = f.e ? 6 * 16 * kvx_kv_layout_bytes_per_token(kvx_engine_layout(f.e)) : 0;
    struct kvx_engine *be = NULL;
    KVX_CHECK(kvx_engine_create(f.m, &bc, &be, &err) == KVX_OK);
    const size_t V = (size_t)f.info.n_vocab;
    const int len[3] = {5, 17, 33};      /* 1, 2 and 3 pages */
    int32_t toks[3][64];
    struct kvx_session *one[3] = {0}, *bat[3] = {0};
    float *ref = malloc(3 * V * sizeof *ref), *got = malloc(3 * V * sizeof *got);
    for (int i = 0; i < 3 && be; i++) {
        make_tokens(toks[i], 64, f.info.n_vocab, 100 + (uint32_t)i);
        KVX_CHECK(kvx_session_create(f.e, &one[i], &err) == KVX_OK);
        KVX_CHECK(kvx_session_create(be, &bat[i], &err) == KVX_OK);
        KVX_CHECK(kvx_session_feed(one[i], toks[i], len[i], false, NULL, &err) == KVX_OK);
        KVX_CHECK(kvx_session_feed(bat[i], toks[i], len[i], false, NULL, &err) == KVX_OK);
    }
    /* 11 steps fill session 0's first page (positions 5..15) */
    for (int step = 0; step < 11 && be; step++) {
        int32_t next[3];
        for (int i = 0; i < 3; i++) {
            next[i] = toks[i][len[i] + step];
            KVX_CHECK(kvx_session_feed(one[i], &next[i], 1, false, ref + (size_t)i * V, &err) == KVX_OK);
        }
        KVX_CHECK(kvx_engine_decode(be, bat, next, 3, got, &err) == KVX_OK);
        KVX_CHECK_NEAR(max_abs_diff(ref, got, 3 * V), 0, 2e-5);
    }
    if (be) {
        int32_t next[3] = {toks[0][16], toks[1][28], toks[2][44]};
        /* session 0 needs a seventh page: nothing changes */
        KVX_CHECK(kvx_engine_decode(be, bat, next, 3, got, &err) == KVX_ERR_KV_FULL);
        KVX_CHECK(strstr(err.msg, "session 0") != NULL);
        struct kvx_session *twice[2] = {bat[1], bat[1]};
        KVX_CHECK(kvx_engine_decode(be, twice, next, 2, got, &err) == KVX_ERR_INVALID_ARG);
        int32_t bad[3] = {next[0], next[1], f.info.n_vocab};
        KVX_CHECK(kvx_engine_decode(be, bat, bad, 3, got, &err) == KVX_ERR_INVALID_ARG);
        KVX_CHECK(strstr(err.msg, "session 2") != NULL);
        for (int i = 0; i < 3; i++)
            KVX_CHECK_EQ_INT(kvx_session_n_past(bat[i]), len[i] + 11);
        KVX_CHECK(kvx_kv_pool_check(kvx_engine_pool(be), &err) == KVX_OK);
        /* sessions 1 and 2 still step on */
        for (int i = 1; i < 3; i++)
            KVX_CHECK(kvx_session_feed(one[i], &next[i], 1, false, ref + (size_t)i * V, &err) == KVX_OK);
        KVX_CHECK(kvx_engine_decode(be, bat + 1, next + 1, 2, got + V, &err) == KVX_OK);
        KVX_CHECK_NEAR(max_abs_diff(ref + V, got + V, 2 * V), 0, 2e-5);
    }
    for (int i = 0; i < 3; i++) {
        kvx_session_destroy(one[i]);
        kvx_session_destroy(bat[i]);
    }
    kvx_engine_destroy(be);
    free(ref);
    free(got);
    close_model(&f);
}

/* Batched decode on every architecture: three sessions at different depths stepped together
 * (kvx_engine_decode, one forward pass) give the logits of stepping each alone — the
 * architectures' forward passes take tokens of several sequences in one batch (window
 * layers, shared layers, compressed layers with their compressor state, model state). */
KVX_TEST(engine_batched_decode_every_architecture)
{
    static const char *const names[] = {"deepseek_v3_moe", "deepseek_v4_mix", "gemma4_e",
                                        "laguna_swa", "zaya_swa", "mistral_swa"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", kvx_test_fixture("arch"), names[n]);
        struct kvx_model_cfg mc = kvx_model_cfg_default();
        mc.path = dir;
        struct kvx_model *m = NULL;
        struct kvx_err err = {0};
        if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "%s: %s", names[n], err.msg);
            continue;
        }
        struct kvx_model_info info;
        kvx_model_get_info(m, &info);
        struct kvx_engine_cfg ec = kvx_engine_cfg_default();
        ec.n_ctx = 96;
        ec.n_threads = 2;
        ec.page_tokens = 16;
        ec.k_codec = ec.v_codec = KVX_KV_CODEC_F32;
        ec.kv_budget_bytes = 64u << 20;
        struct kvx_engine *e1 = NULL, *e3 = NULL;
        KVX_CHECK(kvx_engine_create(m, &ec, &e1, &err) == KVX_OK);
        KVX_CHECK(kvx_engine_create(m, &ec, &e3, &err) == KVX_OK);
        const size_t V = (size_t)info.n_vocab;
        const int len[3] = {5, 17, 33};
        int32_t toks[3][64];
        struct kvx_session *one[3] = {0}, *bat[3] = {0};
        float *ref = malloc(3 * V * sizeof *ref), *got = malloc(3 * V * sizeof *got);
        double worst = 0;
        for (int i = 0; i < 3 && e1 && e3; i++) {
            make_tokens(toks[i], 64, info.n_vocab, 200 + (uint32_t)i);
            KVX_CHECK(kvx_session_create(e1, &one[i], &err) == KVX_OK);
            KVX_CHECK(kvx_session_create(e3, &bat[i], &err) == KVX_OK);
            KVX_CHECK(kvx_session_feed(one[i], toks[i], len[i], false, NULL, &err) == KVX_OK);
            KVX_CHECK(kvx_session_feed(bat[i], toks[i], len[i], false, NULL, &err) == KVX_OK);
        }
        for (int step = 0; step < 9 && e1 && e3; step++) {
            int32_t next[3];
            for (int i = 0; i < 3; i++) {
                next[i] = toks[i][len[i] + step];
                KVX_CHECK(kvx_session_feed(one[i], &next[i], 1, false, ref + (size_t)i * V,
                                           &err) == KVX_OK);
            }
            if (kvx_engine_decode(e3, bat, next, 3, got, &err) != KVX_OK) {
                kvx_test_fail(__FILE__, __LINE__, "%s: %s", names[n], err.msg);
                break;
            }
            const double d = max_abs_diff(ref, got, 3 * V);
            worst = d > worst ? d : worst;
        }
        if (worst > 5e-5)
            kvx_test_fail(__FILE__, __LINE__, "%s: batched decode differs from single by %.3g",
                          names[n], worst);
        for (int i = 0; i < 3; i++) {
            kvx_session_destroy(one[i]);
            kvx_session_destroy(bat[i]);
        }
        kvx_engine_destroy(e1);
        kvx_engine_destroy(e3);
        free(ref);
        free(got);
        kvx_model_close(m);
    }
}

/* A codec with per-sequence state (kivi4: the newest keys and values stay in f16 until their
 * group fills) gives a prefill the logits of a token-by-token decode: each query reads the
 * cache as it stands after its own token, whatever the batch (model/steps.h,
 * kvx_step_store_attend).  f16 (no state) is the control.  On the tiny float32 llama fixture,
 * where batching changes only summation order. */
KVX_TEST(engine_stateful_codec_prefill_equals_decode)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen3_qknorm", kvx_test_fixture("arch"));
    const enum kvx_kv_codec codecs[2] = {KVX_KV_CODEC_KIVI4, KVX_KV_CODEC_F16};
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct fixture f = {0};
    struct kvx_err err = {0};
    KVX_CHECK(kvx_model_open(&mc, &f.m, &err) == KVX_OK);
    if (!f.m)
        return;
    kvx_model_get_info(f.m, &f.info);
    enum { N = 70 };
    const size_t V = (size_t)f.info.n_vocab;
    int32_t toks[N];
    make_tokens(toks, N, f.info.n_vocab, 77);
    float *pre = malloc(N * V * sizeof *pre), *dec = malloc(N * V * sizeof *dec);
    for (int c = 0; c < 2 && pre && dec; c++) {
        struct kvx_engine_cfg ec = kvx_engine_cfg_default();
        ec.n_ctx = 96;
        ec.n_threads = 2;
        ec.page_tokens = 16;
        ec.k_codec = ec.v_codec = codecs[c];
        ec.kivi_group = 16;
        ec.kivi_residual = 8;
        ec.kv_budget_bytes = 16u << 20;
        if (kvx_engine_create(f.m, &ec, &f.e, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "codec %d: %s", (int)codecs[c], err.msg);
            continue;
        }
        struct kvx_session *a = NULL, *b = NULL;
        KVX_CHECK(kvx_session_create(f.e, &a, &err) == KVX_OK);
        KVX_CHECK(kvx_session_create(f.e, &b, &err) == KVX_OK);
        if (a && b) {
            KVX_CHECK(kvx_session_feed(a, toks, N, true, pre, &err) == KVX_OK);
            for (int t = 0; t < N; t++)
                KVX_CHECK(kvx_session_feed(b, toks + t, 1, false, dec + (size_t)t * V, &err) ==
                          KVX_OK);
            const float d = max_abs_diff(pre, dec, N * V);
            fprintf(stderr, "  codec %d: max |prefill - decode| %.3g\n", (int)codecs[c], d);
            if (d > 5e-5)
                kvx_test_fail(__FILE__, __LINE__, "codec %d: prefill differs from decode by %.3g",
                              (int)codecs[c], d);
        }
        kvx_session_destroy(a);
        kvx_session_destroy(b);
        kvx_engine_destroy(f.e);
        f.e = NULL;
    }
    free(pre);
    free(dec);
    close_model(&f);
}

/* kvx_model_cfg.weights_f32 on the default model (Q4_1 and Q8_0 matrices): every matrix is
 * converted to f32, so products take f32 activations; the logits stay those of the stored
 * weights up to the 8-bit activation rounding the stored path does (same top token, small
 * differences), and the f32 path is deterministic. */
KVX_TEST(engine_weights_f32)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 64;
    ec.n_threads = 2;
    ec.kv_budget_bytes = 16u << 20;
    struct fixture q;
    if (!open_model(&q, &ec))
        return;
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = kvx_test_model_path();
    mc.weights_f32 = true;
    struct fixture w = {0};
    struct kvx_err err = {0};
    KVX_CHECK(kvx_model_open(&mc, &w.m, &err) == KVX_OK);
    if (w.m)
        KVX_CHECK(kvx_engine_create(w.m, &ec, &w.e, &err) == KVX_OK);
    const size_t V = (size_t)q.info.n_vocab;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b), *c = malloc(V * sizeof *c);
    const int32_t toks[8] = {1, 504, 3575, 282, 4649, 314, 1, 28};
    struct kvx_session *sa = NULL, *sb = NULL, *sc = NULL;
    if (w.e && a && b && c && kvx_session_create(q.e, &sa, &err) == KVX_OK &&
        kvx_session_create(w.e, &sb, &err) == KVX_OK &&
        kvx_session_create(w.e, &sc, &err) == KVX_OK) {
        KVX_CHECK(kvx_session_feed(sa, toks, 8, false, a, &err) == KVX_OK);
        KVX_CHECK(kvx_session_feed(sb, toks, 8, false, b, &err) == KVX_OK);
        KVX_CHECK(kvx_session_feed(sc, toks, 8, false, c, &err) == KVX_OK);
        size_t ia = 0, ib = 0;
        double mean = 0;
        for (size_t i = 0; i < V; i++) {
            ia = a[i] > a[ia] ? i : ia;
            ib = b[i] > b[ib] ? i : ib;
            mean += fabs((double)a[i] - b[i]) / (double)V;
        }
        KVX_CHECK_EQ_INT((long long)ia, (long long)ib);
        KVX_CHECK(mean > 0 && mean < 0.3);
        KVX_CHECK(memcmp(b, c, V * sizeof *b) == 0);
        fprintf(stderr, "  mean |logit(stored) - logit(f32 weights)| %.4f\n", mean);
    }
    kvx_session_destroy(sa);
    kvx_session_destroy(sb);
    kvx_session_destroy(sc);
    free(a);
    free(b);
    free(c);
    close_model(&w);
    close_model(&q);
}
