/* tests/test_arch_mla: DeepSeek-V3 multi-head latent attention in its two forms.
 *
 * The naive form (kvx_model_cfg.mla = KVX_MLA_NAIVE: per-head K = [W_UK c ; k_rope],
 * V = W_UV c, a FULL cache of n_head KV heads) must reproduce every deepseek_v3 fixture's
 * transformers logits like the absorbed form does (ARCH_TOL, prefill and decode), and the two
 * forms must give the same logits on the same tokens (MLA_FORMS_TOL: they differ only by
 * float summation order).  The naive cache costs the multi-head-equivalent bytes per token,
 *   L x H x (qk_nope + qk_rope + v_head_dim) x element bytes,
 * against the latent cache's L x (kv_lora_rank + qk_rope) x element bytes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_fixture.h"
#include "kv/codec.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

#define ARCH_TOL 1e-4
#define ARCH_SELF_TOL 2e-5
#define MLA_FORMS_TOL 1e-4

static const char *const mla_fixtures[] = {"deepseek_v3_mla", "deepseek_v3_qproj",
                                           "deepseek_v3_moe"};

KVX_TEST(arch_mla_naive_fixtures_match_transformers)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.mla = KVX_MLA_NAIVE;
    for (size_t i = 0; i < sizeof mla_fixtures / sizeof mla_fixtures[0]; i++)
        kvx_test_arch_fixture_cfg(mla_fixtures[i], &mc, ARCH_TOL, ARCH_SELF_TOL);
}

/* Logits of every position of `tokens` through a fresh engine on the fixture in form `mla`
 * (malloc'd n x n_vocab; NULL after a failure), and the engine's KV bytes per token. */
static float *run_form(const char *name, enum kvx_mla_mode mla, const int32_t *tokens, int64_t n,
                       int32_t *n_vocab, size_t *bytes_per_token, struct kvx_mla_hparams *a,
                       struct kvx_hparams *hp)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", kvx_test_fixture("arch"), name);
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    mc.mla = mla;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        return NULL;
    }
    *a = m->mla;
    *hp = m->hp;
    *n_vocab = m->hp.n_vocab;
    float *logits = malloc((size_t)n * (size_t)*n_vocab * sizeof *logits);
    struct kvx_engine *e = kvx_test_arch_engine(m, 2);
    struct kvx_session *s = NULL;
    bool ok = logits && e && kvx_session_create(e, &s, &err) == KVX_OK &&
              kvx_session_feed(s, tokens, n, true, logits, &err) == KVX_OK;
    KVX_CHECK(ok);
    if (e) {
        struct kvx_kv_stats ks;
        kvx_engine_kv_stats(e, &ks);
        *bytes_per_token = ks.bytes_per_token;
    }
    kvx_session_destroy(s);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    if (!ok) {
        free(logits);
        return NULL;
    }
    return logits;
}

KVX_TEST(arch_mla_absorbed_equals_naive)
{
    int32_t tokens[48];
    for (size_t fi = 0; fi < sizeof mla_fixtures / sizeof mla_fixtures[0]; fi++) {
        const char *name = mla_fixtures[fi];
        int32_t va = 0, vn = 0;
        size_t ba = 0, bn = 0;
        struct kvx_mla_hparams a;
        struct kvx_hparams hp;
        /* a fixed token pattern inside any fixture's vocabulary (>= 64 tokens) */
        for (int i = 0; i < 48; i++)
            tokens[i] = (int32_t)((7 * i + 3) % 64);
        float *la = run_form(name, KVX_MLA_ABSORBED, tokens, 48, &va, &ba, &a, &hp);
        float *ln = run_form(name, KVX_MLA_NAIVE, tokens, 48, &vn, &bn, &a, &hp);
        KVX_CHECK(la && ln && va == vn);
        double d = 0;
        for (int64_t i = 0; la && ln && va == vn && i < 48 * (int64_t)va; i++) {
            const double x = la[i] > ln[i] ? la[i] - ln[i] : ln[i] - la[i];
            d = x > d || x != x ? x : d;
        }
        fprintf(stderr, "  %-18s max |absorbed - naive| %.2e\n", name, d);
        KVX_CHECK_NEAR(d, 0, MLA_FORMS_TOL);
        /* f32 cache (kvx_test_arch_engine): 4 bytes per value */
        const size_t latent = (size_t)hp.n_layer * (size_t)(a.kv_lora + a.rope) * 4;
        const size_t mha = (size_t)hp.n_layer * (size_t)hp.n_head *
                           (size_t)(a.nope + a.rope + a.v) * 4;
        KVX_CHECK_EQ_INT((long long)ba, (long long)latent);
        KVX_CHECK_EQ_INT((long long)bn, (long long)mha);
        free(la);
        free(ln);
    }
}

/* KV codecs on the latent cache: deepseek_v3_wide caches a 64-wide [latent | rope key] vector
 * per layer, which q8 stores as int8 with an f16 scale per 32 values: 2 layers x (64 + 2 x 2)
 * = 136 bytes per token, against 2 x 64 x 4 = 512 in f32.  Fed in one prefill and token by
 * token, its logits stay close to the f32 cache's.  These tiny random models magnify any change
 * of the cache: an f16 cache moves their logits by 4e-4 on average, q8 (a rounding step about
 * 20 times f16's) by 1.3e-2, the same on a GQA fixture (qwen3_qknorm: 1.4e-2) as on this
 * latent cache; the bounds below are those, with room: mean 0.03, max 0.3. */
static float *run_codec(const struct kvx_model *m, enum kvx_kv_codec codec, const int32_t *tok,
                        int64_t n, bool decode, size_t *bytes_per_token)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.k_codec = ec.v_codec = codec;
    ec.n_ctx = 128;
    ec.n_threads = 2;
    ec.page_tokens = 32;
    struct kvx_engine *e = NULL;
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    const size_t V = (size_t)m->hp.n_vocab;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    bool ok = logits && kvx_engine_create(m, &ec, &e, &err) == KVX_OK &&
              kvx_session_create(e, &s, &err) == KVX_OK;
    for (int64_t t = 0; ok && t < n; t += decode ? 1 : n)
        ok = kvx_session_feed(s, tok + t, decode ? 1 : n, true, logits + (size_t)t * V, &err) == KVX_OK;
    if (!ok)
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", kvx_kv_codec_name(codec), err.msg);
    if (e) {
        struct kvx_kv_stats ks;
        kvx_engine_kv_stats(e, &ks);
        *bytes_per_token = ks.bytes_per_token;
    }
    kvx_session_destroy(s);
    kvx_engine_destroy(e);
    if (!ok) {
        free(logits);
        return NULL;
    }
    return logits;
}

KVX_TEST(arch_mla_q8_latent_cache)
{
    kvx_test_arch_fixture("deepseek_v3_wide", ARCH_TOL, ARCH_SELF_TOL);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/deepseek_v3_wide", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    int32_t tok[48];
    for (int i = 0; i < 48; i++)
        tok[i] = (int32_t)((i * 37 + 11) % m->hp.n_vocab);
    const size_t V = (size_t)m->hp.n_vocab, n = 48 * V;
    size_t b32 = 0, b8 = 0, b8d = 0;
    float *ref = run_codec(m, KVX_KV_CODEC_F32, tok, 48, false, &b32);
    float *pre = run_codec(m, KVX_KV_CODEC_Q8, tok, 48, false, &b8);
    float *dec = run_codec(m, KVX_KV_CODEC_Q8, tok, 48, true, &b8d);
    if (ref && pre && dec) {
        double worst = 0, sum = 0, worst_dec = 0;
        for (size_t i = 0; i < n; i++) {
            const double d = fabs((double)pre[i] - ref[i]), dd = fabs((double)dec[i] - ref[i]);
            worst = d > worst ? d : worst;
            worst_dec = dd > worst_dec ? dd : worst_dec;
            sum += d;
        }
        fprintf(stderr, "  q8 latent: max |dlogit| %.3g (decode %.3g), mean %.3g; %zu vs %zu "
                "bytes/token\n", worst, worst_dec, sum / (double)n, b8, b32);
        KVX_CHECK_NEAR(worst, 0, 0.3);
        KVX_CHECK_NEAR(worst_dec, 0, 0.3);
        KVX_CHECK_NEAR(sum / (double)n, 0, 0.03);
    }
    KVX_CHECK_EQ_INT((long long)b32, 512);
    KVX_CHECK_EQ_INT((long long)b8, 136);
    KVX_CHECK_EQ_INT((long long)b8d, 136);
    free(ref);
    free(pre);
    free(dec);
    kvx_model_close(m);
}
