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
        return cli_fail("%s: unknown KV codec '%s' (f32, f16, bf16, q8, q4, kivi2, rot4, rot3)",
                        flag, s);
    return 0;
}

int cli_open(const struct cli_opts *o, int64_t n_ctx, struct kvx_model **m, struct kvx_engine **e)
{
    *m = NULL;
    *e = NULL;
    if (!o->model)
        return cli_fail("no model given (-m FILE)");
    struct kvx_err err = {0};
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = o->model;
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
    if (parse_isa(o->isa, &ec.isa) || parse_codec("--kv", o->kv, &ec.k_codec) ||
        parse_codec("--kv", o->kv, &ec.v_codec) || parse_codec("--kv-k", o->kv_k, &ec.k_codec) ||
        parse_codec("--kv-v", o->kv_v, &ec.v_codec))
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
