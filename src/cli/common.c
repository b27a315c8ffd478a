/* cli/common: shared helpers of the kvx subcommands. */
#include "cli/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kv/codec.h"
#include "ops/cpu.h"

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvx: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_err(const struct kvx_err *err)
{
    return cli_fail("%s", err->msg[0] ? err->msg : kvx_status_str(err->status));
}

static int parse_isa(const char *s, int32_t *out)
{
    if (!s || strcmp(s, "auto") == 0) {
        *out = -1;
        return 0;
    }
    for (int i = 0; i < KVX_ISA_COUNT; i++)
        if (strcmp(s, kvx_isa_name((enum kvx_isa)i)) == 0) {
            *out = i;
            return 0;
        }
    return cli_fail("--isa: unknown instruction set '%s' (auto, scalar, avx2, avx512)", s);
}

static int parse_codec(const char *flag, const char *s, enum kvx_kv_codec *out)
{
    if (!s)
        return 0;
    if (!kvx_kv_codec_parse(s, out))
        return cli_fail("%s: unknown KV codec '%s' (f32, f16, bf16, q8, q4, q4plain, kivi2, kivi4, rot4, rot3)",
                        flag, s);
    return 0;
}

/* "1024" tokens per layer, or a ratio: "0.5", "25%". */
static int parse_evict_budget(const char *s, struct kvx_evict_cfg *c)
{
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    const bool pct = *end == '%';
    if (end == s || errno || (pct ? end[1] != '\0' : *end != '\0') || !(v > 0))
        return cli_fail("--evict-budget: '%s' is not a token count (1024) or a ratio (0.5, 25%%) "
                        "above 0", s);
    if (pct || strchr(s, '.') || strchr(s, 'e') || strchr(s, 'E')) {
        c->ratio = pct ? v / 100.0 : v;
        if (!(c->ratio > 0 && c->ratio <= 1))
            return cli_fail("--evict-budget: ratio %s is outside (0, 1]", s);
        return 0;
    }
    if (v > 1e15)
        return cli_fail("--evict-budget: %s tokens is too many", s);
    c->budget = (int64_t)v;
    return 0;
}

/* --evict and its parameters into c. */
static int parse_evict(const struct cli_opts *o, struct kvx_evict_cfg *c)
{
    if (o->evict && !kvx_evict_policy_parse(o->evict, &c->policy))
        return cli_fail("--evict: unknown policy '%s' (none, sinks, h2o, snapkv, tova)", o->evict);
    const bool extra = o->evict_budget || o->evict_schedule || o->evict_pool || o->evict_slack ||
                       o->evict_sinks >= 0 || o->evict_window >= 0 || o->evict_obs >= 0;
    if (c->policy == KVX_EVICT_NONE)
        return extra ? cli_fail("--evict-* options need --evict POLICY") : 0;
    if (!o->evict_budget)
        return cli_fail("--evict %s needs --evict-budget N|RATIO", o->evict);
    if (parse_evict_budget(o->evict_budget, c))
        return 1;
    if (o->evict_schedule && strcmp(o->evict_schedule, "uniform") == 0)
        c->schedule = KVX_EVICT_UNIFORM;
    else if (o->evict_schedule && strcmp(o->evict_schedule, "pyramid") == 0)
        c->schedule = KVX_EVICT_PYRAMID;
    else if (o->evict_schedule)
        return cli_fail("--evict-schedule: unknown schedule '%s' (uniform, pyramid)",
                        o->evict_schedule);
    if (o->evict_pool) {
        const char *k = strchr(o->evict_pool, ':');
        const size_t len = k ? (size_t)(k - o->evict_pool) : strlen(o->evict_pool);
        if (len == 3 && strncmp(o->evict_pool, "max", 3) == 0)
            c->pooling = KVX_EVICT_POOL_MAX;
        else if (len == 3 && strncmp(o->evict_pool, "avg", 3) == 0)
            c->pooling = KVX_EVICT_POOL_AVG;
        else
            return cli_fail("--evict-pool: '%s' is not max or avg[:K]", o->evict_pool);
        char *end = NULL;
        if (k) {
            long w = strtol(k + 1, &end, 10);
            if (end == k + 1 || *end || w < 1 || w > 255 || w % 2 == 0)
                return cli_fail("--evict-pool: width '%s' is not odd in 1..255", k + 1);
            c->pool_kernel = (int32_t)w;
        }
    }
    c->sinks = (int32_t)o->evict_sinks;
    c->window = (int32_t)o->evict_window;
    if (o->evict_obs >= 0)
        c->obs_window = (int32_t)o->evict_obs;
    c->slack = (int32_t)o->evict_slack;
    return 0;
}

/* The cache and kernel options into an engine configuration (messages on stderr). */
static int parse_engine_opts(const struct cli_opts *o, struct kvx_engine_cfg *ec)
{
    return parse_isa(o->isa, &ec->isa) || parse_codec("--kv", o->kv, &ec->k_codec) ||
           parse_codec("--kv", o->kv, &ec->v_codec) ||
           parse_codec("--kv-k", o->kv_k, &ec->k_codec) ||
           parse_codec("--kv-v", o->kv_v, &ec->v_codec) || parse_evict(o, &ec->evict);
}

int cli_model_cfg(const struct cli_opts *o, struct kvx_model_cfg *mc)
{
    *mc = kvx_model_cfg_default();
    mc->path = o->model;
    if (o->weights && strcmp(o->weights, "f32") == 0)
        mc->weights_f32 = true;
    else if (o->weights && strcmp(o->weights, "rows") == 0)
        mc->weights_rows = true;
    else if (o->weights && strcmp(o->weights, "stored") != 0)
        return cli_fail("--weights '%s': expected stored, rows or f32", o->weights);
    if (!o->mla || strcmp(o->mla, "absorbed") == 0)
        return 0;
    if (strcmp(o->mla, "naive") == 0) {
        mc->mla = KVX_MLA_NAIVE;
        return 0;
    }
    return cli_fail("--mla '%s': expected absorbed or naive", o->mla);
}

int cli_open(const struct cli_opts *o, int64_t n_ctx, struct kvx_model **m, struct kvx_engine **e)
{
    *m = NULL;
    *e = NULL;
    if (!o->model)
        return cli_fail("no model given (-m FILE)");
    struct kvx_engine_cfg check = kvx_engine_cfg_default();
    if (parse_engine_opts(o, &check)) /* bad options fail before the model is read */
        return 1;
    struct kvx_err err = {0};
    struct kvx_model_cfg mc;
    if (cli_model_cfg(o, &mc))
        return 1;
    if (kvx_model_open(&mc, m, &err) != KVX_OK)
        return cli_fail_err(&err);
    if (cli_open_engine(o, n_ctx, *m, e)) {
        kvx_model_close(*m);
        *m = NULL;
        return 1;
    }
    return 0;
}

int cli_open_engine(const struct cli_opts *o, int64_t n_ctx, const struct kvx_model *m,
                    struct kvx_engine **e)
{
    *e = NULL;
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    if (parse_engine_opts(o, &ec))
        return 1;
    struct kvx_err err = {0};
    ec.n_ctx = o->ctx > n_ctx ? o->ctx : n_ctx;
    ec.n_threads = (int32_t)o->threads;
    ec.n_batch = (int32_t)o->batch;
    ec.page_tokens = (int32_t)o->page_tokens;
    ec.kv_budget_bytes = (size_t)o->kv_budget;
    ec.kv_layers = o->kv_layer;
    ec.prefix_cache = !o->no_prefix_cache;
    if (o->kivi_group)
        ec.kivi_group = (int32_t)o->kivi_group;
    if (o->kivi_residual >= 0)
        ec.kivi_residual = (int32_t)o->kivi_residual;
    if (kvx_engine_create(m, &ec, e, &err) != KVX_OK)
        return cli_fail_err(&err);
    return 0;
}

int cli_read_file(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return cli_fail("cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b)
        return cli_fail("out of memory reading '%s'", path);
    if (bad) {
        free(b);
        return cli_fail("error reading '%s'", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

int cli_tokenize(const struct kvx_model *m, const char *text, size_t len, bool add_bos,
                 bool special, int32_t **ids, int64_t *n)
{
    struct kvx_err err = {0};
    int64_t cap = (int64_t)len + 16;
    *ids = malloc((size_t)cap * sizeof **ids);
    if (!*ids)
        return cli_fail("out of memory tokenizing %zu bytes", len);
    if (kvx_tokenize(m, text, len, add_bos, special, *ids, cap, n, &err) != KVX_OK) {
        free(*ids);
        *ids = NULL;
        return cli_fail_err(&err);
    }
    return 0;
}

size_t cli_peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
