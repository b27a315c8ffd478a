/* tests/arch_fixture: see arch_fixture.h. */
#include "arch_fixture.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "io/safetensors.h"
#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

struct ref {
    struct kvx_safetensors *st;
    int32_t *tokens;
    int64_t n_tok, n_vocab, prefix;
    float *prefill, *decode;
};

static void ref_free(struct ref *r)
{
    free(r->tokens);
    free(r->prefill);
    free(r->decode);
    kvx_st_close(r->st);
}

static bool ref_load(const char *name, struct ref *r)
{
    memset(r, 0, sizeof *r);
    char path[512];
    snprintf(path, sizeof path, "%s/%s/reference.safetensors", kvx_test_fixture("arch"), name);
    struct kvx_err err = {0};
    if (kvx_st_open(path, &r->st, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return false;
    }
    const struct kvx_st_tensor *tok = kvx_st_find(r->st, "tokens"),
                               *pf = kvx_st_find(r->st, "prefill_logits"),
                               *dc = kvx_st_find(r->st, "decode_logits");
    KVX_CHECK(tok && pf && dc);
    if (!tok || !pf || !dc || tok->dtype != KVX_ST_I32 || pf->n_dims != 2)
        return false;
    r->n_tok = tok->n_elem;
    r->n_vocab = pf->shape[1];
    r->tokens = malloc((size_t)r->n_tok * sizeof *r->tokens);
    r->prefill = malloc(pf->nbytes);
    r->decode = malloc(dc->nbytes);
    if (!r->tokens || !r->prefill || !r->decode)
        return false;
    memcpy(r->tokens, tok->data, tok->nbytes);
    KVX_CHECK(kvx_st_read_f32(pf, r->prefill, pf->n_elem, NULL) == KVX_OK);
    KVX_CHECK(kvx_st_read_f32(dc, r->decode, dc->n_elem, NULL) == KVX_OK);
    /* P, where transformers' incremental run switched from one prefill to single tokens */
    const char *p = kvx_st_metadata(r->st, "prefix");
    r->prefix = p ? atoll(p) : 0;
    KVX_CHECK(r->prefix > 0 && r->prefix < r->n_tok);
    return r->prefix > 0 && r->prefix < r->n_tok;
    return true;
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m))
            m = d;  /* NaN propagates as a failure */
    }
    return m;
}

struct kvx_engine *kvx_test_arch_engine(const struct kvx_model *m, int32_t n_threads)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.k_codec = ec.v_codec = KVX_KV_CODEC_F32;
    ec.n_ctx = 128;
    ec.n_threads = n_threads;
    ec.page_tokens = 16;   /* several pages per sequence */
    struct kvx_engine *e = NULL;
    struct kvx_err err = {0};
    if (kvx_engine_create(m, &ec, &e, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return e;
}

void kvx_test_arch_fixture(const char *name, double tol, double self_tol)
{
    const struct kvx_model_cfg mc = kvx_model_cfg_default();
    kvx_test_arch_fixture_cfg(name, &mc, tol, self_tol);
}

void kvx_test_arch_fixture_cfg(const char *name, const struct kvx_model_cfg *base, double tol,
                               double self_tol)
{
    struct ref r;
    if (!ref_load(name, &r)) {
        ref_free(&r);
        return;
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", kvx_test_fixture("arch"), name);
    struct kvx_model_cfg mc = *base;
    mc.path = dir;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        ref_free(&r);
        return;
    }
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    KVX_CHECK_EQ_INT(info.n_vocab, r.n_vocab);
    char tj[600];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    KVX_CHECK(info.has_tokenizer == (access(tj, R_OK) == 0));
    const int64_t T = r.n_tok, V = r.n_vocab, P = r.prefix;
    float *pre = malloc((size_t)(T * V) * sizeof *pre), *dec = malloc((size_t)(T * V) * sizeof *dec);
    struct kvx_engine *e = kvx_test_arch_engine(m, 1);
    struct kvx_session *s = NULL;
    if (!pre || !dec || !e || kvx_session_create(e, &s, &err) != KVX_OK)
        goto out;
    /* prefill: all T tokens in one call */
    if (kvx_session_feed(s, r.tokens, T, true, pre, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "%s: prefill: %s", name, err.msg);
    double d_pre = max_diff(pre, r.prefill, T * V);
    /* decode: P tokens, then one at a time, in a fresh sequence */
    KVX_CHECK(kvx_session_truncate(s, 0, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(s, r.tokens, P, true, dec, &err) == KVX_OK);
    for (int64_t t = P; t < T; t++)
        KVX_CHECK(kvx_session_feed(s, r.tokens + t, 1, false, dec + t * V, &err) == KVX_OK);
    double d_dec = max_diff(dec, r.decode, T * V);
    double d_self = max_diff(dec + P * V, pre + P * V, (T - P) * V);
    fprintf(stderr, "  %-18s max |dlogit| prefill %.2e, decode %.2e, kvx decode vs prefill "
            "%.2e\n", name, d_pre, d_dec, d_self);
    KVX_CHECK_NEAR(d_pre, 0, tol);
    KVX_CHECK_NEAR(d_dec, 0, tol);
    KVX_CHECK_NEAR(d_self, 0, self_tol);
    /* the pool holds what kv/layout predicts for T tokens (besides cached prefix blocks no
     * session uses: the first run's, after the truncation) */
    struct kvx_kv_stats ks;
    kvx_engine_kv_stats(e, &ks);
    if (ks.bytes_used - ks.prefix_bytes_idle != kvx_kv_layout_seq_bytes(kvx_engine_layout(e), T))
        kvx_test_fail(__FILE__, __LINE__, "%s: the pool holds %zu bytes (%zu idle), kv/layout "
                      "predicts %zu for %lld tokens", name, ks.bytes_used, ks.prefix_bytes_idle,
                      kvx_kv_layout_seq_bytes(kvx_engine_layout(e), T), (long long)T);
out:
    kvx_session_destroy(s);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    free(pre);
    free(dec);
    ref_free(&r);
}

enum kvx_status kvx_test_arch_open_edited(const char *dir, const char *name, const char *from,
                                          const char *to, struct kvx_err *err)
{
    char src[512], text[8192], out[8400], link[600], target[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s/config.json", kvx_test_fixture("arch"), name);
    FILE *f = fopen(src, "rb");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    const char *at = strstr(text, from);
    KVX_CHECK(at != NULL);
    if (!at)
        return KVX_ERR_INVALID_ARG;
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    f = fopen(cfg, "wb");
    if (f) {
        fputs(out, f);
        fclose(f);
    }
    snprintf(src, sizeof src, "%s/%s/model.safetensors", kvx_test_fixture("arch"), name);
    snprintf(link, sizeof link, "%s/model.safetensors", dir);
    unlink(link);
    if (realpath(src, target))
        KVX_CHECK(symlink(target, link) == 0);
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct kvx_model *m = NULL;
    enum kvx_status st = kvx_model_open(&mc, &m, err);
    kvx_model_close(m);
    return st;
}

void kvx_test_arch_config_edits(const char *fixture, const struct kvx_test_config_edit *edits,
                                size_t n)
{
    char dir[] = "/tmp/kvx-edit-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct kvx_err err = {0};
        enum kvx_status st = kvx_test_arch_open_edited(dir, fixture, edits[i].from, edits[i].to,
                                                       &err);
        if (st != edits[i].want || (st != KVX_OK && !strstr(err.msg, edits[i].needle)))
            kvx_test_fail(__FILE__, __LINE__, "%s: '%s' -> '%s': status %d, '%s'", fixture,
                          edits[i].from, edits[i].to, st, err.msg);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

bool kvx_test_config_layout(const char *path, enum kvx_kv_codec codec, struct kvx_kv_layout *l,
                            int64_t *n_ctx_train)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    mc.config_only = true;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        return false;
    }
    if (n_ctx_train)
        *n_ctx_train = m->hp.n_ctx_train;
    bool ok = kvx_kv_layout_init(l, m->hp.n_layer, 16, &err) == KVX_OK;
    if (ok) {
        m->arch->declare_cache(m, l, codec, codec);
        ok = kvx_kv_layout_validate(l, &err) == KVX_OK;
    }
    if (!ok)
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
    kvx_model_close(m);
    return ok;
}
