/* cli/cmd_eval: `kvx eval` — quality measurements.
 *
 *   ppl      perplexity over non-overlapping windows of the text, scored the way llama.cpp's
 *            perplexity tool scores them so that the numbers are comparable: windows of c
 *            tokens (BOS put in the first slot when the model adds one), each scored only on
 *            its second half (positions c/2 .. c-2 predicting the next token), ppl = exp(mean NLL);
 *   kld      the same windows through an f32-cache reference engine and an engine with the
 *            given cache options: KL divergence, top-1 agreement, both perplexities (eval/kld.c);
 *   passkey  retrieval of a 5-digit key hidden in corpus filler (eval/passkey.c);
 *   sweep    kld (and passkey) for each configuration of a file, with CSV/Markdown/SVG reports.
 * With eviction (--evict) ppl feeds a window as two requests, its unscored first half as a
 * prompt and then the scored half, so that policies that act at a prompt's end (snapkv)
 * compress the context before the scored tokens; the steps are the same when c/2 is a
 * multiple of the batch size, so the other policies score as with one request.
 * The measuring is eval/'s; this file reads options and files and prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/common.h"
#include "eval/eval.h"
#include "ops/cpu.h"
#include "util/err.h"

/* -log softmax(logits)[target], in double. */
static double nll(const float *logits, int32_t n_vocab, int32_t target)
{
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        sum += exp((double)(logits[i] - mx));
    return -((double)(logits[target] - mx) - log(sum));
}

static int eval_ppl(const struct cli_opts *o, struct kvx_model *m, struct kvx_engine *e,
                    const int32_t *ids, int64_t n_ids, int64_t ctx)
{
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    int64_t n_chunks = n_ids / ctx;
    if (o->chunks > 0 && o->chunks < n_chunks)
        n_chunks = o->chunks;
    if (n_chunks < 1)
        return cli_fail("eval ppl: the text has %lld tokens, fewer than one window of %lld",
                        (long long)n_ids, (long long)ctx);
    float *logits = malloc((size_t)ctx * (size_t)info.n_vocab * sizeof *logits);
    int32_t *win = malloc((size_t)ctx * sizeof *win);
    double *chunk_ppl = malloc((size_t)n_chunks * sizeof *chunk_ppl);
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    int rc = 1;
    if (!logits || !win || !chunk_ppl) {
        rc = cli_fail("out of memory");
        goto out;
    }
    if (kvx_session_create(e, &s, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
        goto out;
    }
    double total = 0.0, t0 = cli_now();
    int64_t scored = 0;
    const int64_t first = ctx / 2;
    const bool split = o->evict && strcmp(o->evict, "none") != 0;
    for (int64_t c = 0; c < n_chunks; c++) {
        memcpy(win, ids + c * ctx, (size_t)ctx * sizeof *win);
        if (info.add_bos && !o->no_bos && info.bos_id >= 0)
            win[0] = info.bos_id;
        kvx_session_truncate(s, 0, NULL);
        /* rows of `logits` from position `row0` on */
        const int64_t row0 = split ? first : 0;
        if ((split && kvx_session_feed(s, win, first, false, NULL, &err) != KVX_OK) ||
            kvx_session_feed(s, win + row0, ctx - row0, true, logits, &err) != KVX_OK) {
            rc = cli_fail_err(&err);
            goto out;
        }
        double sum = 0.0;
        for (int64_t i = first; i < ctx - 1; i++)
            sum += nll(logits + (i - row0) * info.n_vocab, info.n_vocab, ids[c * ctx + i + 1]);
        total += sum;
        scored += ctx - 1 - first;
        chunk_ppl[c] = exp(sum / (double)(ctx - 1 - first));
        fprintf(stderr, "[%lld/%lld] ppl %.4f (running %.4f)\n", (long long)c + 1,
                (long long)n_chunks, chunk_ppl[c], exp(total / (double)scored));
    }
    const double ppl = exp(total / (double)scored), secs = cli_now() - t0;
    if (o->json) {
        printf("{\"ppl\": %.6f, \"ctx\": %lld, \"chunks\": %lld, \"tokens_scored\": %lld, "
               "\"text_tokens\": %lld, \"seconds\": %.3f, \"chunk_ppl\": [", ppl, (long long)ctx,
               (long long)n_chunks, (long long)scored, (long long)n_ids, secs);
        for (int64_t c = 0; c < n_chunks; c++)
            printf("%s%.6f", c ? ", " : "", chunk_ppl[c]);
        printf("]}\n");
    } else {
        printf("perplexity %.4f over %lld tokens (%lld windows of %lld)\n", ppl, (long long)scored,
               (long long)n_chunks, (long long)ctx);
    }
    rc = 0;
out:
    kvx_session_destroy(s);
    free(chunk_ppl);
    free(win);
    free(logits);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Shared by kld, passkey and sweep */

#define DEFAULT_CORPUS "data/corpus/eval.txt"
#define MAX_LIST 64

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

/* Read and tokenize a text file (the corpus); add_bos as `eval ppl` does. */
static int load_text(const char *path, const struct kvx_model *m, bool add_bos, int32_t **ids,
                     int64_t *n)
{
    *ids = NULL;
    if (strcmp(path, DEFAULT_CORPUS) == 0 && access(path, R_OK) != 0)
        return cli_fail("cannot open '%s' (the evaluation corpus: run `make corpus`, or give "
                        "-f FILE)", path);
    char *text = NULL;
    size_t len = 0;
    if (cli_read_file(path, &text, &len))
        return 1;
    int rc = cli_tokenize(m, text, len, add_bos, false, ids, n);
    free(text);
    return rc;
}

static int open_model(const struct cli_opts *o, struct kvx_model **m)
{
    *m = NULL;
    if (!o->model)
        return cli_fail("no model given (-m FILE)");
    struct kvx_model_cfg mc;
    if (cli_model_cfg(o, &mc))
        return 1;
    struct kvx_err err = {0};
    return kvx_model_open(&mc, m, &err) == KVX_OK ? 0 : cli_fail_err(&err);
}

/* BOS for the first slot of each window, as `eval ppl` puts it; -1 for none. */
static int32_t window_bos(const struct cli_opts *o, const struct kvx_model *m)
{
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    return info.add_bos && !o->no_bos && info.bos_id >= 0 ? info.bos_id : -1;
}

/* The reference: the same model, context, threads, batch, pages and kernels, every layer's
 * K and V in f32 (exact: the forward pass computes in f32). */
static int open_reference(const struct cli_opts *o, const struct kvx_model *m, int64_t n_ctx,
                          struct kvx_engine **ref)
{
    struct kvx_engine_cfg c = kvx_engine_cfg_default();
    c.k_codec = c.v_codec = KVX_KV_CODEC_F32;
    c.n_ctx = o->ctx > n_ctx ? o->ctx : n_ctx;
    c.n_threads = (int32_t)o->threads;
    c.n_batch = (int32_t)o->batch;
    c.page_tokens = (int32_t)o->page_tokens;
    for (int i = 0; o->isa && i < KVX_ISA_COUNT; i++)
        if (strcmp(o->isa, kvx_isa_name((enum kvx_isa)i)) == 0)
            c.isa = i;
    struct kvx_err err = {0};
    if (kvx_engine_create(m, &c, ref, &err) != KVX_OK) {
        kvx_err_prefix(&err, "reference engine (f32 cache)");
        return cli_fail_err(&err);
    }
    return 0;
}

static void kld_progress(void *ud, const struct kvx_eval_progress *p)
{
    (void)ud;
    fprintf(stderr, "eval kld: window %lld/%lld, mean KLD %.6g, %.0f s\n", (long long)p->window,
            (long long)p->n_windows, p->kld_mean, p->seconds);
}

static void sweep_progress(void *ud, const struct kvx_eval_progress *p)
{
    const int32_t *n_configs = ud;
    fprintf(stderr, "eval sweep: window %lld/%lld through the reference and %d configurations, "
            "%.0f s\n", (long long)p->window, (long long)p->n_windows, (int)*n_configs,
            p->seconds);
}

static int run_kld(const struct cli_opts *o, const char *what, const int32_t *ids, int64_t n_ids,
                   const struct kvx_model *m, struct kvx_engine *ref, struct kvx_engine *const *tests,
                   int32_t n_tests, int64_t ctx, struct kvx_eval_kld_result *res)
{
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    struct kvx_eval_kld_cfg c = kvx_eval_kld_cfg_default();
    c.tokens = ids;
    c.n_tokens = n_ids;
    c.ctx = ctx;
    c.n_windows = o->chunks;
    c.chunk = o->batch;
    c.n_vocab = info.n_vocab;
    c.bos_id = window_bos(o, m);
    c.progress = n_tests == 1 ? kld_progress : sweep_progress;
    c.progress_ud = &n_tests;
    struct kvx_err err = {0};
    if (kvx_eval_kld(&c, ref, tests, n_tests, res, &err) != KVX_OK) {
        kvx_err_prefix(&err, "%s", what);
        return cli_fail_err(&err);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* eval kld */

static void print_kld(const struct cli_opts *o, const struct kvx_eval_kld_result *r, int64_t ctx,
                      size_t ref_bpt, double secs)
{
    if (o->json) {
        printf("{\"ctx\": %lld, \"windows\": %lld, \"tokens_scored\": %lld, \"scored\": "
               "\"second half of each window\", \"kld_mean\": %.9g, \"kld_p50\": %.9g, "
               "\"kld_p99\": %.9g, \"kld_max\": %.9g, \"top1\": %.9f, \"ppl_ref\": %.6f, "
               "\"ppl_test\": %.6f, \"ppl_ratio\": %.9f, \"kv_bytes_per_token\": %zu, "
               "\"kv_bytes_per_token_held\": %.1f, \"kv_bytes_per_token_effective\": %.1f, "
               "\"ref_kv_bytes_per_token\": %zu, \"kv\": ", (long long)ctx,
               (long long)r->n_windows, (long long)r->n_scored, r->kld_mean, r->kld_p50,
               r->kld_p99, r->kld_max, r->top1, r->ppl_ref, r->ppl_test, r->ppl_ratio,
               r->kv_bytes_per_token, r->kv_held_per_token, r->kv_bytes_per_token_eff, ref_bpt);
        json_str(o->kv ? o->kv : "f16");
        printf(", \"kv_k\": ");
        json_str(o->kv_k ? o->kv_k : "");
        printf(", \"kv_v\": ");
        json_str(o->kv_v ? o->kv_v : "");
        printf(", \"kv_layer\": ");
        json_str(o->kv_layer ? o->kv_layer : "");
        printf(", \"seconds\": %.3f}\n", secs);
        return;
    }
    printf("KL divergence vs the f32 cache: mean %.6g, median %.6g, p99 %.6g, max %.6g\n"
           "top-1 agreement: %.4f%%\n"
           "perplexity: reference %.4f, test %.4f, ratio %.6f\n"
           "scored %lld tokens: second half of %lld windows of %lld\n"
           "KV cache: %zu bytes/token (f32 reference %zu); pages held at the end of a window: %.1f "
           "bytes/token\n", r->kld_mean, r->kld_p50, r->kld_p99, r->kld_max, 100.0 * r->top1,
           r->ppl_ref, r->ppl_test, r->ppl_ratio, (long long)r->n_scored,
           (long long)r->n_windows, (long long)ctx, r->kv_bytes_per_token, ref_bpt,
           r->kv_held_per_token);
}

static int eval_kld(const struct cli_opts *o)
{
    if (!o->file)
        return cli_fail("eval kld: no text file given (-f FILE)");
    const int64_t ctx = o->ctx ? o->ctx : 512;
    if (ctx < 4)
        return cli_fail("eval kld: window of %lld tokens is too short", (long long)ctx);
    struct kvx_model *m = NULL;
    struct kvx_engine *e = NULL, *ref = NULL;
    if (cli_open(o, ctx, &m, &e))
        return 1;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    const double t0 = cli_now();
    int rc = open_reference(o, m, ctx, &ref);
    if (rc == 0)
        rc = load_text(o->file, m, window_bos(o, m) >= 0, &ids, &n_ids);
    struct kvx_eval_kld_result res;
    if (rc == 0)
        rc = run_kld(o, "eval kld", ids, n_ids, m, ref, &e, 1, ctx, &res);
    if (rc == 0) {
        struct kvx_kv_stats rs;
        kvx_engine_kv_stats(ref, &rs);
        print_kld(o, &res, ctx, rs.bytes_per_token, cli_now() - t0);
    }
    free(ids);
    kvx_engine_destroy(ref);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* eval passkey */

struct passkey_spec {
    int64_t lengths[MAX_LIST];
    double depths[MAX_LIST];
    int32_t n_lengths, n_depths, trials;
    int64_t max_len;
    enum kvx_eval_passkey_form form;
};

/* "1024,2048,8K": token counts (K = 1024). */
static int parse_lengths(const char *s, struct passkey_spec *p)
{
    p->n_lengths = 0;
    p->max_len = 0;
    for (const char *c = s; *c;) {
        char *end;
        double v = strtod(c, &end);
        if (end != c && (*end == 'k' || *end == 'K'))
            v *= 1024.0, end++;
        if (end == c || (*end && *end != ',') || !(v >= 1.0 && v <= 1e9) || v != floor(v))
            return cli_fail("--lengths: '%s' is not a list of token counts (e.g. 1024,4096)", s);
        if (p->n_lengths == MAX_LIST)
            return cli_fail("--lengths: more than %d lengths", MAX_LIST);
        p->lengths[p->n_lengths++] = (int64_t)v;
        p->max_len = (int64_t)v > p->max_len ? (int64_t)v : p->max_len;
        c = *end ? end + 1 : end;
    }
    return p->n_lengths ? 0 : cli_fail("--lengths: no length given");
}

static int parse_depths(const char *s, struct passkey_spec *p)
{
    p->n_depths = 0;
    for (const char *c = s; *c;) {
        char *end;
        const double v = strtod(c, &end);
        if (end == c || (*end && *end != ',') || !(v >= 0.0 && v <= 1.0))
            return cli_fail("--depths: '%s' is not a list of depths in 0..1 (e.g. 0,0.5,1)", s);
        if (p->n_depths == MAX_LIST)
            return cli_fail("--depths: more than %d depths", MAX_LIST);
        p->depths[p->n_depths++] = v;
        c = *end ? end + 1 : end;
    }
    return p->n_depths ? 0 : cli_fail("--depths: no depth given");
}

/* The grid from the options; every length must fit the model's context with the answer. */
static int passkey_spec(const struct cli_opts *o, const struct kvx_model *m, struct passkey_spec *p)
{
    if (parse_lengths(o->lengths ? o->lengths : "1024,2048,4096,8000", p) ||
        parse_depths(o->depths ? o->depths : "0,0.25,0.5,0.75,1", p))
        return 1;
    p->trials = o->trials ? (int32_t)o->trials : 2;
    p->form = o->chat ? KVX_EVAL_PASSKEY_CHAT : KVX_EVAL_PASSKEY_PLAIN;
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    const int64_t n_gen = p->form == KVX_EVAL_PASSKEY_CHAT ? 16 : 8;
    if (p->max_len + n_gen > info.n_ctx_train)
        return cli_fail("--lengths: %lld tokens and %lld answer tokens exceed the model's context "
                        "of %lld tokens", (long long)p->max_len, (long long)n_gen,
                        (long long)info.n_ctx_train);
    return 0;
}

static int64_t passkey_ctx(const struct passkey_spec *p) { return p->max_len + 16; }

struct passkey_log {
    const char *what;
    bool json;           /* collect the trials for the JSON output */
    char *trials;        /* JSON objects, comma-separated, malloc'd */
    size_t n, cap;
};

/* s as a JSON string (quotes included) into buf; false when it does not fit. */
static bool json_esc(const char *s, char *buf, size_t cap)
{
    size_t n = 0;
    buf[n++] = '"';
    for (; *s && n + 8 < cap; s++) {
        if (*s == '"' || *s == '\\')
            n += (size_t)snprintf(buf + n, cap - n, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *s);
        else
            buf[n++] = *s;
    }
    if (*s || n + 2 > cap)
        return false;
    buf[n++] = '"';
    buf[n] = '\0';
    return true;
}

static void passkey_on_trial(void *ud, const struct kvx_eval_passkey_trial_info *t)
{
    struct passkey_log *l = ud;
    char text[1024];
    if (!json_esc(t->answer->text, text, sizeof text))
        snprintf(text, sizeof text, "\"\"");
    fprintf(stderr, "%s: [%lld/%lld] length %lld depth %.2f key %d: %s, answer %s, %.0f s\n",
            l->what, (long long)t->done, (long long)t->total, (long long)t->length, t->depth,
            (int)t->key, t->answer->correct ? "correct" : "wrong", text, t->seconds);
    if (!l->json)
        return;
    char buf[1400];
    int n = snprintf(buf, sizeof buf, "%s{\"length\": %lld, \"depth\": %g, \"key\": %d, "
                     "\"correct\": %s, \"digits\": \"%s\", \"answer\": %s}", l->n ? ", " : "",
                     (long long)t->length, t->depth, (int)t->key,
                     t->answer->correct ? "true" : "false", t->answer->digits, text);
    if (n < 0 || (size_t)n >= sizeof buf)
        return;
    if (l->n + (size_t)n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        while (cap < l->n + (size_t)n + 1)
            cap *= 2;
        char *b = realloc(l->trials, cap);
        if (!b)
            return;
        l->trials = b;
        l->cap = cap;
    }
    memcpy(l->trials + l->n, buf, (size_t)n + 1);
    l->n += (size_t)n;
}

/* Run the grid on e; *acc = overall accuracy; per-cell counts in n_correct. */
static int run_passkey(const struct cli_opts *o, const struct passkey_spec *p,
                       const struct kvx_model *m, struct kvx_engine *e, const int32_t *filler,
                       int64_t n_filler, int32_t *n_correct, struct passkey_log *log)
{
    struct kvx_eval_passkey_cfg pc = {.model = m, .filler = filler, .n_filler = n_filler,
                                      .form = p->form};
    struct kvx_eval_passkey_grid g = {
        .lengths = p->lengths, .n_lengths = p->n_lengths, .depths = p->depths,
        .n_depths = p->n_depths, .trials = p->trials, .seed = (uint64_t)o->seed,
        .on_trial = passkey_on_trial, .ud = log,
    };
    struct kvx_err err = {0};
    if (kvx_eval_passkey_run(e, &pc, &g, n_correct, &err) != KVX_OK) {
        kvx_err_prefix(&err, "%s", log->what);
        return cli_fail_err(&err);
    }
    return 0;
}

static double passkey_overall(const struct passkey_spec *p, const int32_t *n_correct)
{
    int64_t sum = 0;
    for (int32_t i = 0; i < p->n_lengths * p->n_depths; i++)
        sum += n_correct[i];
    return (double)sum / ((double)p->n_lengths * p->n_depths * p->trials);
}

static void print_passkey(const struct cli_opts *o, const struct passkey_spec *p,
                          const int32_t *nc, const struct passkey_log *log)
{
    const char *form = p->form == KVX_EVAL_PASSKEY_CHAT ? "chat" : "plain";
    if (o->json) {
        printf("{\"form\": \"%s\", \"trials\": %d, \"lengths\": [", form, (int)p->trials);
        for (int32_t l = 0; l < p->n_lengths; l++)
            printf("%s%lld", l ? ", " : "", (long long)p->lengths[l]);
        printf("], \"depths\": [");
        for (int32_t d = 0; d < p->n_depths; d++)
            printf("%s%g", d ? ", " : "", p->depths[d]);
        printf("], \"accuracy\": [");
        for (int32_t l = 0; l < p->n_lengths; l++) {
            printf("%s[", l ? ", " : "");
            for (int32_t d = 0; d < p->n_depths; d++)
                printf("%s%.4f", d ? ", " : "", (double)nc[l * p->n_depths + d] / p->trials);
            printf("]");
        }
        printf("], \"overall\": %.4f, \"results\": [%s]}\n", passkey_overall(p, nc),
               log->trials ? log->trials : "");
        return;
    }
    printf("passkey retrieval accuracy (%d trial%s per cell, %s prompt, greedy)\n", (int)p->trials,
           p->trials > 1 ? "s" : "", form);
    printf("%8s |", "length");
    for (int32_t d = 0; d < p->n_depths; d++)
        printf(" d=%-5.2f", p->depths[d]);
    printf(" |   all\n");
    for (int32_t l = 0; l < p->n_lengths; l++) {
        int64_t row = 0;
        printf("%8lld |", (long long)p->lengths[l]);
        for (int32_t d = 0; d < p->n_depths; d++) {
            row += nc[l * p->n_depths + d];
            printf(" %7.2f", (double)nc[l * p->n_depths + d] / p->trials);
        }
        printf(" | %5.2f\n", (double)row / ((double)p->n_depths * p->trials));
    }
    printf("overall %.4f\n", passkey_overall(p, nc));
}

static int eval_passkey(const struct cli_opts *o)
{
    struct kvx_model *m = NULL;
    struct kvx_engine *e = NULL;
    struct passkey_spec p;
    int32_t *filler = NULL, *nc = NULL;
    int64_t n_filler = 0;
    struct passkey_log log = {.what = "eval passkey", .json = o->json};
    /* The lengths are checked against the model before an engine is sized for them. */
    int rc = open_model(o, &m);
    if (rc == 0)
        rc = passkey_spec(o, m, &p);
    if (rc == 0)
        rc = cli_open_engine(o, passkey_ctx(&p), m, &e);
    if (rc == 0 && !(nc = calloc((size_t)p.n_lengths * (size_t)p.n_depths, sizeof *nc)))
        rc = cli_fail("out of memory");
    if (rc == 0)
        rc = load_text(o->file ? o->file : DEFAULT_CORPUS, m, false, &filler, &n_filler);
    if (rc == 0)
        rc = run_passkey(o, &p, m, e, filler, n_filler, nc, &log);
    if (rc == 0)
        print_passkey(o, &p, nc, &log);
    free(log.trials);
    free(nc);
    free(filler);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* eval sweep */

#define MAX_CONFIGS 256
#define MAX_ARGS 64

struct sweep_cfg {
    char *line;              /* the line's tokens, NUL-separated; the options point into it */
    char *options;           /* the options as one string, for the reports */
    const char *name;
    int line_no;
    struct cli_opts o;
    struct kvx_engine *e;
    struct kvx_eval_kld_result kld;
    double passkey;
};

struct sweep {
    struct kvx_model *m;     /* one model, shared by every engine */
    const char *path;
    struct sweep_cfg *c;
    int32_t n;
};

/* Options that must be the same for every configuration (they choose what is measured, not
 * how the cache stores it): set on the command line only. */
static const char *fixed_option_changed(const struct cli_opts *a, const struct cli_opts *b)
{
    if (a->model != b->model) return "-m/--model";
    if (a->file != b->file) return "-f/--file";
    if (a->ctx != b->ctx) return "-c/--ctx";
    if (a->chunks != b->chunks) return "--chunks";
    if (a->configs != b->configs) return "--configs";
    if (a->out != b->out) return "--out";
    if (a->json != b->json) return "--json";
    if (a->passkey != b->passkey) return "--passkey";
    if (a->lengths != b->lengths) return "--lengths";
    if (a->depths != b->depths) return "--depths";
    if (a->trials != b->trials) return "--trials";
    if (a->seed != b->seed) return "--seed";
    if (a->chat != b->chat) return "--chat";
    if (a->no_bos != b->no_bos) return "--no-bos";
    if (a->help != b->help) return "--help";
    return NULL;
}

/* Split `line` (modified) at blanks into argv; '#' starts a comment. */
static int split_line(char *line, char **argv, int cap)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    int n = 0;
    for (char *t = strtok(line, " \t\r\n"); t; t = strtok(NULL, " \t\r\n")) {
        if (n == cap)
            return -1;
        argv[n++] = t;
    }
    return n;
}

static char *join_args(char **argv, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(argv[i]) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    *p = '\0';
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? " " : "", argv[i]);
    return s;
}

/* One line of the configurations file; 0 on a blank or comment line (c->name stays NULL). */
static int parse_config(const struct sweep *sw, const struct cli_opts *base, char *line,
                        int line_no, struct sweep_cfg *c)
{
    char *argv[MAX_ARGS];
    c->line_no = line_no;
    c->line = strdup(line);
    if (!c->line)
        return cli_fail("out of memory");
    const int argc = split_line(c->line, argv, MAX_ARGS);
    if (argc < 0)
        return cli_fail("%s:%d: more than %d words", sw->path, line_no, MAX_ARGS);
    if (argc == 0)
        return 0;
    if (argv[0][0] == '-')
        return cli_fail("%s:%d: a line starts with the configuration's name, not an option ('%s')",
                        sw->path, line_no, argv[0]);
    for (int32_t i = 0; i < sw->n; i++)
        if (strcmp(sw->c[i].name, argv[0]) == 0)
            return cli_fail("%s:%d: configuration '%s' is already defined at line %d", sw->path,
                            line_no, argv[0], sw->c[i].line_no);
    c->o = *base;
    char err[512];
    if (!cli_opts_parse(&c->o, CMD_EVAL, argc, argv, 1, err, sizeof err))
        return cli_fail("%s:%d: configuration '%s': %s", sw->path, line_no, argv[0], err);
    const char *fixed = fixed_option_changed(base, &c->o);
    if (fixed)
        return cli_fail("%s:%d: configuration '%s': %s is the same for every configuration (give "
                        "it on the command line)", sw->path, line_no, argv[0], fixed);
    if (!(c->options = join_args(argv + 1, argc - 1)))
        return cli_fail("out of memory");
    c->name = argv[0];
    c->passkey = -1.0;
    return 0;
}

static void sweep_free(struct sweep *sw)
{
    for (int32_t i = 0; sw->c && i <= sw->n; i++) {
        kvx_engine_destroy(sw->c[i].e);
        free(sw->c[i].line);
        free(sw->c[i].options);
    }
    free(sw->c);
    kvx_model_close(sw->m);
}

static int read_configs(const struct cli_opts *o, struct sweep *sw)
{
    char *text = NULL;
    size_t len = 0;
    sw->path = o->configs;
    if (cli_read_file(o->configs, &text, &len))
        return 1;
    sw->c = calloc(MAX_CONFIGS + 1, sizeof *sw->c);
    int rc = sw->c ? 0 : cli_fail("out of memory");
    int line_no = 0;
    for (char *line = text; rc == 0 && line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        line_no++;
        struct sweep_cfg *c = &sw->c[sw->n];
        rc = parse_config(sw, o, line, line_no, c);
        if (rc == 0 && c->name && sw->n == MAX_CONFIGS)
            rc = cli_fail("%s:%d: more than %d configurations", sw->path, line_no, MAX_CONFIGS);
        else if (rc == 0 && c->name)
            sw->n++;
        if (rc == 0 && !c->name) {
            free(c->line);
            c->line = NULL;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    if (rc == 0 && sw->n == 0)
        rc = cli_fail("%s: no configurations (lines are NAME OPTIONS..., # comments)", sw->path);
    return rc;
}

/* Every configuration's engine, opened before anything runs, so that a bad one fails fast. */
static int sweep_open(struct sweep *sw, int64_t n_ctx)
{
    for (int32_t i = 0; i < sw->n; i++) {
        struct sweep_cfg *c = &sw->c[i];
        fprintf(stderr, "eval sweep: config %d/%d %s (%s:%d): %s\n", (int)i + 1, (int)sw->n,
                c->name, sw->path, c->line_no, *c->options ? c->options : "(defaults)");
        if (cli_open_engine(&c->o, n_ctx, sw->m, &c->e))
            return 1;
    }
    return 0;
}

static void print_sweep(const struct cli_opts *o, const struct sweep *sw,
                        const struct kvx_eval_sweep_row *rows, int64_t ctx)
{
    bool front[MAX_CONFIGS];
    kvx_eval_pareto(rows, sw->n, front);
    if (o->json) {
        printf("{\"ctx\": %lld, \"windows\": %lld, \"tokens_scored\": %lld, \"configs\": [",
               (long long)ctx, (long long)sw->c[0].kld.n_windows,
               (long long)sw->c[0].kld.n_scored);
        for (int32_t i = 0; i < sw->n; i++) {
            const struct sweep_cfg *c = &sw->c[i];
            printf("%s{\"name\": ", i ? ", " : "");
            json_str(c->name);
            printf(", \"options\": ");
            json_str(c->options);
            printf(", \"kv_bytes_per_token\": %.1f, \"kv_bytes_per_token_layout\": %zu, "
                   "\"kld_mean\": %.9g, \"kld_p99\": %.9g, \"kld_max\": %.9g, \"top1\": %.9f, "
                   "\"ppl_ref\": %.6f, \"ppl_test\": %.6f, \"ppl_ratio\": %.9f, \"pareto\": %s",
                   c->kld.kv_bytes_per_token_eff, c->kld.kv_bytes_per_token, c->kld.kld_mean,
                   c->kld.kld_p99, c->kld.kld_max, c->kld.top1, c->kld.ppl_ref, c->kld.ppl_test,
                   c->kld.ppl_ratio, front[i] ? "true" : "false");
            if (c->passkey >= 0.0)
                printf(", \"passkey\": %.4f", c->passkey);
            printf("}");
        }
        printf("]}\n");
        return;
    }
    printf("%-16s %12s %11s %11s %8s %9s %8s %s\n", "config", "KV B/token", "mean KLD",
           "p99 KLD", "top-1", "ppl ratio", "passkey", "Pareto");
    for (int32_t i = 0; i < sw->n; i++) {
        const struct kvx_eval_sweep_row *r = &rows[i];
        printf("%-16s %12.0f %11.4g %11.4g %8.4f %9.5f ", r->name, r->bytes_per_token,
               r->kld_mean, r->kld_p99, r->top1, r->ppl_ratio);
        if (r->passkey >= 0.0)
            printf("%8.3f", r->passkey);
        else
            printf("%8s", "-");
        printf(" %s\n", front[i] ? "yes" : "");
    }
}

static int sweep_passkey(const struct cli_opts *o, struct sweep *sw, const struct passkey_spec *p)
{
    int32_t *filler = NULL, *nc = calloc((size_t)p->n_lengths * (size_t)p->n_depths, sizeof *nc);
    int64_t n_filler = 0;
    int rc = nc ? 0 : cli_fail("out of memory");
    if (rc == 0)
        rc = load_text(o->file, sw->m, false, &filler, &n_filler);
    for (int32_t i = 0; rc == 0 && i < sw->n; i++) {
        char what[128];
        snprintf(what, sizeof what, "eval sweep: passkey, config %d/%d %s", (int)i + 1,
                 (int)sw->n, sw->c[i].name);
        struct passkey_log log = {.what = what};
        rc = run_passkey(o, p, sw->m, sw->c[i].e, filler, n_filler, nc, &log);
        if (rc == 0)
            sw->c[i].passkey = passkey_overall(p, nc);
    }
    free(filler);
    free(nc);
    return rc;
}

static int sweep_report(const struct cli_opts *o, const struct sweep *sw, int64_t ctx)
{
    struct kvx_eval_sweep_row rows[MAX_CONFIGS];
    for (int32_t i = 0; i < sw->n; i++) {
        const struct sweep_cfg *c = &sw->c[i];
        rows[i] = (struct kvx_eval_sweep_row){
            .name = c->name, .options = c->options,
            .bytes_per_token = c->kld.kv_bytes_per_token_eff, .kld_mean = c->kld.kld_mean,
            .kld_p99 = c->kld.kld_p99, .top1 = c->kld.top1, .ppl_ratio = c->kld.ppl_ratio,
            .passkey = c->passkey,
        };
    }
    struct kvx_model_info info;
    kvx_model_get_info(sw->m, &info);
    char title[256];
    snprintf(title, sizeof title, "KV cache quality: %s, %lld windows of %lld tokens",
             *info.name ? info.name : o->model, (long long)sw->c[0].kld.n_windows, (long long)ctx);
    const char *prefix = o->out ? o->out : "sweep";
    struct kvx_err err = {0};
    if (kvx_eval_sweep_write(rows, sw->n, prefix, title, &err) != KVX_OK)
        return cli_fail_err(&err);
    print_sweep(o, sw, rows, ctx);
    fprintf(stderr, "eval sweep: wrote %s.csv, %s.md, %s.svg\n", prefix, prefix, prefix);
    return 0;
}

static int eval_sweep(const struct cli_opts *o)
{
    if (!o->model)
        return cli_fail("no model given (-m FILE)");
    if (!o->file)
        return cli_fail("eval sweep: no text file given (-f FILE)");
    if (!o->configs)
        return cli_fail("eval sweep: no configurations given (--configs FILE)");
    const int64_t ctx = o->ctx ? o->ctx : 512;
    if (ctx < 4)
        return cli_fail("eval sweep: window of %lld tokens is too short", (long long)ctx);
    struct sweep sw = {0};
    struct passkey_spec p = {0};
    struct kvx_engine *ref = NULL, *tests[MAX_CONFIGS];
    int32_t *ids = NULL;
    int64_t n_ids = 0, n_ctx = ctx;
    int rc = read_configs(o, &sw);
    if (rc == 0)
        rc = open_model(o, &sw.m);
    if (rc == 0 && o->passkey && (rc = passkey_spec(o, sw.m, &p)) == 0)
        n_ctx = passkey_ctx(&p) > n_ctx ? passkey_ctx(&p) : n_ctx;
    if (rc == 0)
        rc = sweep_open(&sw, n_ctx);
    if (rc == 0)
        rc = open_reference(o, sw.m, ctx, &ref);
    if (rc == 0)
        rc = load_text(o->file, sw.m, window_bos(o, sw.m) >= 0, &ids, &n_ids);
    struct kvx_eval_kld_result res[MAX_CONFIGS];
    for (int32_t i = 0; i < sw.n; i++)
        tests[i] = sw.c[i].e;
    if (rc == 0)
        rc = run_kld(o, "eval sweep", ids, n_ids, sw.m, ref, tests, sw.n, ctx, res);
    for (int32_t i = 0; rc == 0 && i < sw.n; i++)
        sw.c[i].kld = res[i];
    kvx_engine_destroy(ref);
    free(ids);
    if (rc == 0 && o->passkey)
        rc = sweep_passkey(o, &sw, &p);
    if (rc == 0)
        rc = sweep_report(o, &sw, ctx);
    sweep_free(&sw);
    return rc;
}

int cmd_eval(const struct cli_opts *o, const char *what)
{
    if (what && strcmp(what, "kld") == 0)
        return eval_kld(o);
    if (what && strcmp(what, "passkey") == 0)
        return eval_passkey(o);
    if (what && strcmp(what, "sweep") == 0)
        return eval_sweep(o);
    if (!what || strcmp(what, "ppl") != 0)
        return cli_fail("eval: unknown evaluation '%s' (available: ppl, kld, passkey, sweep)",
                        what ? what : "");
    if (!o->file)
        return cli_fail("eval ppl: no text file given (-f FILE)");
    const int64_t ctx = o->ctx ? o->ctx : 512;
    if (ctx < 4)
        return cli_fail("eval ppl: window of %lld tokens is too short", (long long)ctx);
    char *text = NULL;
    size_t len = 0;
    if (cli_read_file(o->file, &text, &len))
        return 1;
    struct kvx_model *m;
    struct kvx_engine *e;
    if (cli_open(o, ctx, &m, &e)) {
        free(text);
        return 1;
    }
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    int rc = cli_tokenize(m, text, len, info.add_bos && !o->no_bos, false, &ids, &n_ids);
    if (rc == 0)
        rc = eval_ppl(o, m, e, ids, n_ids, ctx);
    free(ids);
    free(text);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}
