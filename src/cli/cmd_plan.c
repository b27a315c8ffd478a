/* cli/cmd_plan: `kvx plan` — prints what plan/ computes (KV bytes per token and per sequence,
 * what fits, decode roofline, $/Mtok) as a table, JSON or CSV, and writes the --curve SVG.
 * Presets are read from data/plan/ ($KVX_PLAN_DATA, ./data/plan, or beside the binary). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/common.h"
#include "plan/plan.h"

#define MAX_MODELS 8

struct plan_run {
    struct kvx_plan_kv kv[MAX_MODELS];
    struct kvx_plan_result res[MAX_MODELS];
    int32_t n;
    struct kvx_plan_hw hw;
    struct kvx_plan_cfg cfg;
    const char *dtype;
};

/* data/plan: $KVX_PLAN_DATA, ./data/plan, then <dir of the binary>/../data/plan. */
static void data_path(const char *file, char *out, size_t cap)
{
    const char *env = getenv("KVX_PLAN_DATA");
    if (env) {
        snprintf(out, cap, "%s/%s", env, file);
        return;
    }
    snprintf(out, cap, "data/plan/%s", file);
    if (access(out, R_OK) == 0)
        return;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    char alt[PATH_MAX + 64];
    snprintf(alt, sizeof alt, "%s/../data/plan/%s", exe, file);
    size_t len = strlen(alt);
    if (len < cap && access(alt, R_OK) == 0)
        memcpy(out, alt, len + 1);
}

/* Next comma-separated item of *s into buf; false at the end. */
static bool next_item(const char **s, char *buf, size_t cap)
{
    if (!*s || !**s)
        return false;
    size_t n = strcspn(*s, ",");
    snprintf(buf, cap, "%.*s", (int)n, *s);
    *s += n + ((*s)[n] == ',');
    return true;
}

static int add_presets(struct plan_run *r, const char *list, const struct kvx_plan_kv_cfg *kc)
{
    char path[PATH_MAX], name[128];
    data_path("models.tsv", path, sizeof path);
    struct kvx_plan_model *models;
    int32_t n_models;
    struct kvx_err err = {0};
    if (kvx_plan_models_load(path, &models, &n_models, &err) != KVX_OK)
        return cli_fail_err(&err);
    int rc = 0;
    while (rc == 0 && next_item(&list, name, sizeof name)) {
        const struct kvx_plan_model *pm;
        if (r->n == MAX_MODELS)
            rc = cli_fail("plan: at most %d models", MAX_MODELS);
        else if (kvx_plan_model_find(models, n_models, name, &pm, &err) != KVX_OK ||
                 kvx_plan_kv_from_model(pm, kc, &r->kv[r->n], &err) != KVX_OK)
            rc = cli_fail_err(&err);
        else
            r->n++;
    }
    free(models);
    return rc;
}

static int add_files(struct plan_run *r, const char *list, const struct kvx_plan_kv_cfg *kc)
{
    char path[PATH_MAX];
    struct kvx_err err = {0};
    while (next_item(&list, path, sizeof path)) {
        if (r->n == MAX_MODELS)
            return cli_fail("plan: at most %d models", MAX_MODELS);
        if (kvx_plan_kv_from_path(path, kc, &r->kv[r->n], &err) != KVX_OK)
            return cli_fail_err(&err);
        const struct kvx_plan_kv *kv = &r->kv[r->n++];
        if (kv->config_only && kv->n_params <= 0 && r->cfg.weight_bytes <= 0)
            fprintf(stderr, "kvx plan: %s: its architecture cannot count parameters from "
                    "config.json; weights are sized 0 (give --weights-bytes)\n", path);
    }
    return 0;
}

static int get_hw(const struct cli_opts *o, struct kvx_plan_hw *hw)
{
    struct kvx_err err = {0};
    const char *name = o->gpu ? o->gpu : o->measure ? "cpu" : "h100";
    if (strcmp(name, "cpu") == 0) {
        if (kvx_plan_measure_cpu(0, 1.0, hw, &err) != KVX_OK)
            return cli_fail_err(&err);
        return 0;
    }
    char path[PATH_MAX];
    data_path("hardware.tsv", path, sizeof path);
    struct kvx_plan_hw *list;
    int32_t n;
    if (kvx_plan_hw_load(path, &list, &n, &err) != KVX_OK)
        return cli_fail_err(&err);
    const struct kvx_plan_hw *found;
    int rc = 0;
    if (kvx_plan_hw_find(list, n, name, &found, &err) != KVX_OK)
        rc = cli_fail("%s (or cpu)", err.msg);
    else
        *hw = *found;
    free(list);
    return rc;
}

static int get_cfg(const struct cli_opts *o, struct plan_run *r, struct kvx_plan_kv_cfg *kc)
{
    struct kvx_err err = {0};
    *kc = kvx_plan_kv_cfg_default();
    const char *k = o->kv_k ? o->kv_k : o->kv, *v = o->kv_v ? o->kv_v : o->kv;
    if ((k && !kvx_plan_codec_parse(k, &kc->k)) || (v && !kvx_plan_codec_parse(v, &kc->v)))
        return cli_fail("plan: unknown KV codec '%s' (f32, f16, bf16, q8, q4, q4plain, kivi2, kivi4, rot4, rot3, fp8, fp4)",
                        k && !kvx_plan_codec_parse(k, &kc->k) ? k : v);
    if (o->kivi_group > 0)
        kc->kivi_group = (int32_t)o->kivi_group;
    if (o->kivi_residual >= 0)
        kc->kivi_residual = (int32_t)o->kivi_residual;
    r->cfg = kvx_plan_cfg_default();
    if (o->plan_ctx && kvx_plan_parse_ctx_list(o->plan_ctx, &r->cfg, &err) != KVX_OK)
        return cli_fail_err(&err);
    r->cfg.concurrency = o->concurrency;
    r->cfg.tp = (int32_t)o->tp;
    r->cfg.gpus = (int32_t)o->gpus;
    r->cfg.util = o->util;
    r->cfg.reserve_bytes = (double)o->reserve_gb * 1e9;
    r->cfg.prefix_shared = o->prefix_shared;
    r->cfg.price_per_hour = o->price;
    r->cfg.weight_bytes = (double)o->weights_bytes;
    /* without --weights-dtype: a bare config's own dtype, presets bf16 (fit.c) */
    r->dtype = o->weights_dtype ? o->weights_dtype : "auto";
    if (o->weights_dtype && !kvx_plan_weight_dtype_bytes(r->dtype, &r->cfg.bytes_per_param))
        return cli_fail("plan: unknown weights dtype '%s' (bf16, f16, f32, fp8, int8, q8_0, q4_0, "
                        "q4_1, int4, fp4)", r->dtype);
    if (o->mla && strcmp(o->mla, "naive") == 0)
        kc->mla = KVX_MLA_NAIVE;
    else if (o->mla && strcmp(o->mla, "absorbed") != 0)
        return cli_fail("plan: --mla '%s': expected absorbed or naive", o->mla);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Output */

static const char *gb(double b, char *buf, size_t cap)
{
    if (b < 0) {
        char pos[32];
        snprintf(buf, cap, "-%s", gb(-b, pos, sizeof pos));
        return buf;
    }
    if (b < 1e6)
        snprintf(buf, cap, "%.1f KB", b / 1e3);
    else if (b < 1e9)
        snprintf(buf, cap, "%.1f MB", b / 1e6);
    else
        snprintf(buf, cap, "%.2f GB", b / 1e9);
    return buf;
}

static void print_kinds(const struct kvx_plan_kv *kv)
{
    int32_t count[KVX_PLAN_LKIND_COUNT] = {0};
    for (int32_t i = 0; i < kv->layout.n_layer; i++)
        count[kv->kind[i]]++;
    printf("model %s: %d layers (", kv->name, (int)kv->layout.n_layer);
    for (int k = 1, first = 1; k < KVX_PLAN_LKIND_COUNT; k++)
        if (count[k]) {
            printf("%s%d %s", first ? "" : ", ", (int)count[k], kvx_plan_lkind_name(k));
            first = 0;
        }
    printf("), KV K %s / V %s, pages of %d tokens\n", kv->k.name, kv->v.name,
           (int)kv->layout.page_tokens);
}

static void print_header(const struct plan_run *r, int32_t m)
{
    const struct kvx_plan_kv *kv = &r->kv[m];
    const struct kvx_plan_result *s = &r->res[m];
    char b1[32], b2[32], b3[32];
    print_kinds(kv);
    printf("  KV bytes per token: %zu", s->bytes_per_token);
    for (int k = 1; k < KVX_PLAN_LKIND_COUNT; k++)
        if (s->kind_per_token[k])
            printf("  (%s %zu)", kvx_plan_lkind_name(k), s->kind_per_token[k]);
    printf("; constant part (full windows, codec state): %s\n", gb((double)s->const_bytes, b1, sizeof b1));
    printf("  weights: %s%s, read per decode step: %s", gb(s->weight_bytes, b1, sizeof b1),
           kv->weight_bytes ? " (file)" : "", gb(s->weight_read_bytes, b2, sizeof b2));
    if (kv->n_params > 0)
        printf(" (%.4gB parameters, %.4gB active)", kv->n_params / 1e9, kv->n_active / 1e9);
    printf("\n");
    printf("  %s x %d (tp %d, %lld replica%s): %s usable at util %.2f, for KV: %s\n", r->hw.name,
           (int)(r->cfg.gpus ? r->cfg.gpus : r->cfg.tp), (int)r->cfg.tp, (long long)s->replicas,
           s->replicas == 1 ? "" : "s", gb(s->mem_bytes, b1, sizeof b1), r->cfg.util,
           gb(s->kv_avail_bytes, b3, sizeof b3));
    if (!s->weights_fit)
        printf("  DOES NOT FIT: the weights alone exceed the usable memory by %s\n",
               gb(-s->kv_avail_bytes, b1, sizeof b1));
}

static void print_table(const struct plan_run *r, int32_t m)
{
    const struct kvx_plan_result *s = &r->res[m];
    char b1[32], b2[32], b3[32];
    print_header(r, m);
    printf("\n  %9s %11s %13s %9s %8s %10s %12s %9s  %s\n", "context", "KV/seq",
           "KV at C", "max seqs", "step ms", "tok/s/seq", "tok/s total", "$/Mtok", "fits");
    for (int32_t i = 0; i < s->n_at; i++) {
        const struct kvx_plan_at *a = &s->at[i];
        char cost[16] = "-", fit[64] = "yes";
        if (a->usd_per_mtok > 0)
            snprintf(cost, sizeof cost, "%.3f", a->usd_per_mtok);
        if (!a->fits)
            snprintf(fit, sizeof fit, "NO, short by %s", gb(a->short_bytes, b3, sizeof b3));
        printf("  %9lld %11s %13s %9lld %8.2f %10.1f %12.1f %9s  %s\n", (long long)a->ctx,
               gb((double)a->seq_bytes, b1, sizeof b1), gb(a->kv_bytes_at_c, b2, sizeof b2),
               (long long)a->max_seqs, a->step_s * 1e3, a->tok_s_seq, a->tok_s_total, cost, fit);
    }
    printf("  (C = %lld sequences per replica", (long long)r->cfg.concurrency);
    if (r->cfg.prefix_shared)
        printf(", %lld prefix tokens stored once", (long long)r->cfg.prefix_shared);
    printf("; GB = 1e9 bytes; speeds are a memory-bandwidth roofline at %.0f GB/s per device)\n",
           r->hw.bw_bytes_s / 1e9);
    if (s->max_ctx_at_c >= KVX_PLAN_CTX_UNBOUNDED)
        printf("  longest context for C = %lld: unbounded (every layer is window-bounded)",
               (long long)r->cfg.concurrency);
    else
        printf("  longest context for C = %lld: %lld tokens", (long long)r->cfg.concurrency,
               (long long)s->max_ctx_at_c);
    if (r->kv[m].ctx_max && s->max_ctx_at_c > r->kv[m].ctx_max)
        printf(" (beyond the model's %lld)", (long long)r->kv[m].ctx_max);
    printf("\n\n");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void json_at(const struct kvx_plan_at *a)
{
    printf("{\"context\": %lld, \"seq_bytes\": %zu, \"seq_bytes_by_kind\": {", (long long)a->ctx,
           a->seq_bytes);
    for (int k = 1; k < KVX_PLAN_LKIND_COUNT; k++)
        printf("%s\"%s\": %zu", k > 1 ? ", " : "", kvx_plan_lkind_name(k), a->kind_bytes[k]);
    printf("}, \"kv_bytes_at_concurrency\": %.0f, \"fits\": %s, \"short_bytes\": %.0f, "
           "\"max_sequences\": %lld, \"step_s\": %.6g, \"tok_s_per_seq\": %.6g, "
           "\"tok_s_total\": %.6g, \"usd_per_mtok\": %.6g}",
           a->kv_bytes_at_c, a->fits ? "true" : "false", a->short_bytes, (long long)a->max_seqs,
           a->step_s, a->tok_s_seq, a->tok_s_total, a->usd_per_mtok);
}

static void json_model(const struct plan_run *r, int32_t m)
{
    const struct kvx_plan_kv *kv = &r->kv[m];
    const struct kvx_plan_result *s = &r->res[m];
    printf("{\"name\": ");
    json_str(kv->name);
    printf(", \"n_layer\": %d, \"page_tokens\": %d, \"kv_k\": \"%s\", \"kv_v\": \"%s\", "
           "\"kv_bytes_per_token\": %zu, \"kv_bytes_per_token_by_kind\": {",
           (int)kv->layout.n_layer, (int)kv->layout.page_tokens, kv->k.name, kv->v.name,
           s->bytes_per_token);
    for (int k = 1; k < KVX_PLAN_LKIND_COUNT; k++)
        printf("%s\"%s\": %zu", k > 1 ? ", " : "", kvx_plan_lkind_name(k), s->kind_per_token[k]);
    printf("}, \"n_params\": %.0f, \"n_active\": %.0f, \"config_only\": %s", kv->n_params,
           kv->n_active, kv->config_only ? "true" : "false");
    printf(", \"constant_bytes\": %zu, \"weight_bytes\": %.0f, \"weight_read_bytes\": %.0f, "
           "\"mem_bytes\": %.0f, \"kv_avail_bytes\": %.0f, \"weights_fit\": %s, \"replicas\": %lld, "
           "\"max_context_at_concurrency\": %lld, \"ctx_max\": %lld, \"at\": [",
           s->const_bytes, s->weight_bytes, s->weight_read_bytes, s->mem_bytes, s->kv_avail_bytes,
           s->weights_fit ? "true" : "false", (long long)s->replicas, (long long)s->max_ctx_at_c,
           (long long)kv->ctx_max);
    for (int32_t i = 0; i < s->n_at; i++) {
        printf(i ? ", " : "");
        json_at(&s->at[i]);
    }
    printf("]}");
}

static void print_json(const struct plan_run *r)
{
    printf("{\"hardware\": {\"name\": ");
    json_str(r->hw.name);
    printf(", \"mem_bytes\": %.0f, \"bw_bytes_s\": %.6g, \"source\": ", r->hw.mem_bytes,
           r->hw.bw_bytes_s);
    json_str(r->hw.source);
    printf("}, \"concurrency\": %lld, \"tp\": %d, \"gpus\": %d, \"util\": %g, \"reserve_bytes\": "
           "%.0f, \"prefix_shared\": %lld, \"price_per_hour\": %g, \"weights_dtype\": \"%s\", "
           "\"models\": [", (long long)r->cfg.concurrency, (int)r->cfg.tp,
           (int)(r->cfg.gpus ? r->cfg.gpus : r->cfg.tp), r->cfg.util, r->cfg.reserve_bytes,
           (long long)r->cfg.prefix_shared, r->cfg.price_per_hour, r->dtype);
    for (int32_t m = 0; m < r->n; m++) {
        printf(m ? ", " : "");
        json_model(r, m);
    }
    printf("]}\n");
}

static void print_csv(const struct plan_run *r)
{
    printf("model,context,kv_bytes_per_token,seq_bytes,kv_bytes_at_c,fits,short_bytes,max_seqs,"
           "max_ctx_at_c,weight_bytes,step_s,tok_s_seq,tok_s_total,usd_per_mtok\n");
    for (int32_t m = 0; m < r->n; m++)
        for (int32_t i = 0; i < r->res[m].n_at; i++) {
            const struct kvx_plan_at *a = &r->res[m].at[i];
            printf("%s,%lld,%zu,%zu,%.0f,%d,%.0f,%lld,%lld,%.0f,%.6g,%.6g,%.6g,%.6g\n",
                   r->kv[m].name, (long long)a->ctx, r->res[m].bytes_per_token, a->seq_bytes,
                   a->kv_bytes_at_c, a->fits, a->short_bytes, (long long)a->max_seqs,
                   (long long)r->res[m].max_ctx_at_c, r->res[m].weight_bytes, a->step_s,
                   a->tok_s_seq, a->tok_s_total, a->usd_per_mtok);
        }
}

static int write_curve(const struct plan_run *r, const char *svg)
{
    char csv[PATH_MAX];
    size_t n = strlen(svg);
    if (n > 4 && strcmp(svg + n - 4, ".svg") == 0)
        snprintf(csv, sizeof csv, "%.*s.csv", (int)(n - 4), svg);
    else
        snprintf(csv, sizeof csv, "%s.csv", svg);
    const struct kvx_plan_kv *list[MAX_MODELS];
    for (int32_t m = 0; m < r->n; m++)
        list[m] = &r->kv[m];
    struct kvx_err err = {0};
    if (kvx_plan_curve_write(list, r->n, svg, csv, &err) != KVX_OK)
        return cli_fail_err(&err);
    fprintf(stderr, "kvx plan: wrote %s and %s\n", svg, csv);
    return 0;
}

/* Several models or codecs: one table, each row against the first. */
static void print_compare(const struct plan_run *r)
{
    char b1[32];
    printf("comparison, ratios to the first row (GB = 1e9 bytes):\n");
    for (int32_t i = 0; i < r->res[0].n_at; i++) {
        printf("\n  context %lld, concurrency %lld\n", (long long)r->res[0].at[i].ctx,
               (long long)r->cfg.concurrency);
        printf("  %-34s %10s %6s %11s %6s %9s %6s %10s %6s %9s\n", "model [K/V]", "KV B/tok",
               "x", "KV/seq", "x", "max seqs", "x", "tok/s/seq", "x", "$/Mtok");
        const struct kvx_plan_result *f = &r->res[0];
        const struct kvx_plan_at *fa = &f->at[i];
        for (int32_t m = 0; m < r->n; m++) {
            const struct kvx_plan_result *s = &r->res[m];
            const struct kvx_plan_at *a = &s->at[i];
            char name[96], cost[16] = "-";
            snprintf(name, sizeof name, "%s [%s/%s]", r->kv[m].name, r->kv[m].k.name,
                     r->kv[m].v.name);
            if (a->usd_per_mtok > 0)
                snprintf(cost, sizeof cost, "%.3f", a->usd_per_mtok);
            printf("  %-34.34s %10zu %6.3f %11s %6.3f %9lld %6.2f %10.1f %6.2f %9s\n", name,
                   s->bytes_per_token,
                   f->bytes_per_token ? (double)s->bytes_per_token / (double)f->bytes_per_token : 0,
                   gb((double)a->seq_bytes, b1, sizeof b1),
                   fa->seq_bytes ? (double)a->seq_bytes / (double)fa->seq_bytes : 0,
                   (long long)a->max_seqs,
                   fa->max_seqs ? (double)a->max_seqs / (double)fa->max_seqs : 0, a->tok_s_seq,
                   fa->tok_s_seq > 0 ? a->tok_s_seq / fa->tok_s_seq : 0, cost);
        }
    }
    printf("\n");
}

/* Models from -m and --preset, once per codec of a --kv list ("f16,q8,q4"). */
static int add_models(const struct cli_opts *o, struct plan_run *r)
{
    const char *list = o->kv && strchr(o->kv, ',') ? o->kv : NULL;
    if (list && (o->kv_k || o->kv_v))
        return cli_fail("plan: --kv with a list of codecs cannot be combined with --kv-k/--kv-v");
    char item[32];
    do {
        struct cli_opts one = *o;
        if (list) {
            next_item(&list, item, sizeof item);
            one.kv = item;
        }
        struct kvx_plan_kv_cfg kc;
        int rc = get_cfg(&one, r, &kc);
        if (rc || (o->model && (rc = add_files(r, o->model, &kc))) ||
            (o->preset && (rc = add_presets(r, o->preset, &kc))))
            return rc;
    } while (list && *list);
    return 0;
}

static int run(const struct cli_opts *o, struct plan_run *r)
{
    int rc = add_models(o, r);
    if (rc)
        return rc;
    if (r->n == 0)
        return cli_fail("plan: no model given (-m FILE or --preset NAME; see data/plan/models.tsv)");
    if ((rc = get_hw(o, &r->hw)))
        return rc;
    struct kvx_err err = {0};
    for (int32_t m = 0; m < r->n; m++)
        if (kvx_plan_compute(&r->kv[m], &r->hw, &r->cfg, &r->res[m], &err) != KVX_OK)
            return cli_fail_err(&err);
    if (o->curve && (rc = write_curve(r, o->curve)))
        return rc;
    if (o->json)
        print_json(r);
    else if (o->csv)
        print_csv(r);
    else {
        for (int32_t m = 0; m < r->n; m++)
            print_table(r, m);
        if (r->n > 1 || o->compare)
            print_compare(r);
    }
    return 0;
}

int cmd_plan(const struct cli_opts *o)
{
    struct plan_run *r = calloc(1, sizeof *r);
    if (!r)
        return cli_fail("plan: out of memory");
    int rc = run(o, r);
    for (int32_t m = 0; m < r->n; m++)
        kvx_plan_kv_free(&r->kv[m]);
    free(r);
    return rc;
}
