/* eval/kld: KL divergence, top-1 agreement and perplexity of test engines against a reference
 * engine over windows of text (the math and the lockstep run; eval.h has the definitions).
 * Owns no engine: the caller creates and configures them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/eval.h"
#include "util/err.h"

int32_t kvx_eval_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Two passes over the vocabulary: the maxima, then the three sums
 *   sr = sum e^{r_i - mr},  st = sum e^{t_i - mt},  sd = sum e^{r_i - mr} (r_i - t_i),
 * all in double; then lse(x) = m + log s and kld = sd / sr + lse(t) - lse(r). */
void kvx_eval_compare(const float *ref, const float *test, int32_t n_vocab, int32_t target,
                      struct kvx_eval_pos *out)
{
    const int32_t ar = kvx_eval_argmax(ref, n_vocab), at = kvx_eval_argmax(test, n_vocab);
    const double mr = ref[ar], mt = test[at];
    double sr = 0.0, st = 0.0, sd = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const double r = ref[i], t = test[i];
        const double er = exp(r - mr);
        sr += er;
        st += exp(t - mt);
        sd += er * (r - t);
    }
    const double lse_r = mr + log(sr), lse_t = mt + log(st);
    const double kld = sd / sr + (lse_t - lse_r);
    out->kld = kld > 0.0 ? kld : 0.0;
    out->nll_ref = lse_r - (double)ref[target];
    out->nll_test = lse_t - (double)test[target];
    out->top1_same = ar == at;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double kvx_eval_percentile(double *v, int64_t n, double p)
{
    if (n <= 0)
        return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    p = p < 0.0 ? 0.0 : p > 1.0 ? 1.0 : p;
    const double h = p * (double)(n - 1);
    const int64_t lo = (int64_t)floor(h), hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (h - (double)lo) * (v[hi] - v[lo]);
}

struct kvx_eval_kld_cfg kvx_eval_kld_cfg_default(void)
{
    return (struct kvx_eval_kld_cfg){.ctx = 512, .chunk = 512, .bos_id = -1};
}

/* Running sums of one test engine. */
struct acc {
    double kld, nll_ref, nll_test, held;
    int64_t top1, n;
    double *klds;          /* every scored position's KLD, for the quantiles */
};

static enum kvx_status feed(struct kvx_session *s, const int32_t *tok, int64_t n, float *logits,
                            const char *who, int32_t idx, struct kvx_err *err)
{
    enum kvx_status st = kvx_session_feed(s, tok, n, true, logits, err);
    if (st != KVX_OK) {
        if (idx < 0)
            kvx_err_prefix(err, "%s", who);
        else
            kvx_err_prefix(err, "%s %d", who, (int)idx);
    }
    return st;
}

/* Score positions [p0, p0 + n) of the window, whose logits rows are ref/test (row 0 =
 * position p0); `next` is the window's token array (target of position i is next[i + 1]). */
static void score(struct acc *a, const float *ref, const float *test, int32_t n_vocab,
                  const int32_t *next, int64_t p0, int64_t n, int64_t first, int64_t last)
{
    for (int64_t i = 0; i < n; i++) {
        const int64_t pos = p0 + i;
        if (pos < first || pos > last)
            continue;
        struct kvx_eval_pos r;
        kvx_eval_compare(ref + i * n_vocab, test + i * n_vocab, n_vocab, next[pos + 1], &r);
        a->kld += r.kld;
        a->nll_ref += r.nll_ref;
        a->nll_test += r.nll_test;
        a->top1 += r.top1_same;
        a->klds[a->n++] = r.kld;
    }
}

struct run {
    const struct kvx_eval_kld_cfg *cfg;
    struct kvx_session *ref;
    struct kvx_session **tests;
    struct kvx_engine *const *test_engines;
    int32_t n_tests;
    float *lr, *lt;        /* chunk x n_vocab logits of the reference and of one test engine */
    int32_t *win;
    struct acc *acc;
};

static enum kvx_status run_window(struct run *r, int64_t w, struct kvx_err *err)
{
    const struct kvx_eval_kld_cfg *c = r->cfg;
    const int64_t ctx = c->ctx, first = ctx / 2, last = ctx - 2;
    memcpy(r->win, c->tokens + w * ctx, (size_t)ctx * sizeof *r->win);
    if (c->bos_id >= 0)
        r->win[0] = c->bos_id;
    enum kvx_status st = kvx_session_truncate(r->ref, 0, err);
    for (int32_t j = 0; j < r->n_tests && st == KVX_OK; j++)
        st = kvx_session_truncate(r->tests[j], 0, err);
    for (int64_t p0 = 0; p0 < ctx && st == KVX_OK; p0 += c->chunk) {
        const int64_t n = ctx - p0 < c->chunk ? ctx - p0 : c->chunk;
        if ((st = feed(r->ref, r->win + p0, n, r->lr, "reference", -1, err)) != KVX_OK)
            break;
        for (int32_t j = 0; j < r->n_tests && st == KVX_OK; j++) {
            if ((st = feed(r->tests[j], r->win + p0, n, r->lt, "test engine", j, err)) == KVX_OK)
                score(&r->acc[j], r->lr, r->lt, c->n_vocab, r->win, p0, n, first, last);
        }
    }
    if (st != KVX_OK)
        return st;
    /* What each test cache holds once the whole window is in it. */
    for (int32_t j = 0; j < r->n_tests; j++) {
        struct kvx_kv_stats ks;
        kvx_engine_kv_stats(r->test_engines[j], &ks);
        r->acc[j].held += (double)ks.bytes_used / (double)ctx;
    }
    return KVX_OK;
}

static void finish(const struct acc *a, int64_t n_windows, struct kvx_engine *e,
                   struct kvx_eval_kld_result *out)
{
    struct kvx_kv_stats ks;
    kvx_engine_kv_stats(e, &ks);
    memset(out, 0, sizeof *out);
    out->n_windows = n_windows;
    out->n_scored = a->n;
    const double n = a->n > 0 ? (double)a->n : 1.0;
    out->kld_mean = a->kld / n;
    out->kld_max = a->n > 0 ? kvx_eval_percentile(a->klds, a->n, 1.0) : 0.0;
    out->kld_p50 = kvx_eval_percentile(a->klds, a->n, 0.50);
    out->kld_p99 = kvx_eval_percentile(a->klds, a->n, 0.99);
    out->top1 = (double)a->top1 / n;
    out->ppl_ref = exp(a->nll_ref / n);
    out->ppl_test = exp(a->nll_test / n);
    out->ppl_ratio = out->ppl_test / out->ppl_ref;
    out->kv_bytes_per_token = ks.bytes_per_token;
    out->kv_held_per_token = n_windows > 0 ? a->held / (double)n_windows : 0.0;
    out->kv_bytes_per_token_eff = out->kv_held_per_token < (double)ks.bytes_per_token
                                      ? out->kv_held_per_token
                                      : (double)ks.bytes_per_token;
}

static enum kvx_status check_cfg(const struct kvx_eval_kld_cfg *c, int32_t n_tests,
                                 int64_t *n_windows, struct kvx_err *err)
{
    if (!c->tokens || c->ctx < 4 || c->n_vocab < 1 || c->chunk < 1 || c->n_windows < 0 ||
        n_tests < 1)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kld: bad configuration (ctx %lld, chunk "
                           "%lld, %d test engines)", (long long)c->ctx, (long long)c->chunk,
                           (int)n_tests);
    const int64_t have = c->n_tokens / c->ctx, want = c->n_windows ? c->n_windows : have;
    if (have < 1 || want > have)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "the text is too short: %lld window%s of "
                           "%lld tokens needs %lld tokens, has %lld", (long long)(want ? want : 1),
                           want > 1 ? "s" : "", (long long)c->ctx,
                           (long long)((want ? want : 1) * c->ctx), (long long)c->n_tokens);
    *n_windows = want;
    return KVX_OK;
}

static void run_free(struct run *r)
{
    kvx_session_destroy(r->ref);
    for (int32_t j = 0; r->tests && j < r->n_tests; j++)
        kvx_session_destroy(r->tests[j]);
    for (int32_t j = 0; r->acc && j < r->n_tests; j++)
        free(r->acc[j].klds);
    free(r->tests);
    free(r->acc);
    free(r->lr);
    free(r->lt);
    free(r->win);
}

static enum kvx_status run_alloc(struct run *r, struct kvx_engine *ref, int64_t n_scored,
                                 struct kvx_err *err)
{
    const struct kvx_eval_kld_cfg *c = r->cfg;
    const size_t rows = (size_t)(c->chunk < c->ctx ? c->chunk : c->ctx);
    r->lr = malloc(rows * (size_t)c->n_vocab * sizeof *r->lr);
    r->lt = malloc(rows * (size_t)c->n_vocab * sizeof *r->lt);
    r->win = malloc((size_t)c->ctx * sizeof *r->win);
    r->tests = calloc((size_t)r->n_tests, sizeof *r->tests);
    r->acc = calloc((size_t)r->n_tests, sizeof *r->acc);
    if (!r->lr || !r->lt || !r->win || !r->tests || !r->acc)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kld: out of memory for %zu logits rows", rows);
    for (int32_t j = 0; j < r->n_tests; j++)
        if (!(r->acc[j].klds = malloc((size_t)(n_scored > 0 ? n_scored : 1) * sizeof(double))))
            return kvx_err_set(err, KVX_ERR_NOMEM, "kld: out of memory");
    enum kvx_status st = kvx_session_create(ref, &r->ref, err);
    for (int32_t j = 0; j < r->n_tests && st == KVX_OK; j++)
        st = kvx_session_create(r->test_engines[j], &r->tests[j], err);
    return st;
}

enum kvx_status kvx_eval_kld(const struct kvx_eval_kld_cfg *cfg, struct kvx_engine *ref,
                             struct kvx_engine *const *tests, int32_t n_tests,
                             struct kvx_eval_kld_result *out, struct kvx_err *err)
{
    int64_t n_windows = 0;
    enum kvx_status st = check_cfg(cfg, n_tests, &n_windows, err);
    if (st != KVX_OK)
        return st;
    struct run r = {.cfg = cfg, .test_engines = tests, .n_tests = n_tests};
    const int64_t per_window = cfg->ctx - 1 - cfg->ctx / 2;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((st = run_alloc(&r, ref, n_windows * per_window, err)) == KVX_OK) {
        for (int64_t w = 0; w < n_windows && st == KVX_OK; w++) {
            if ((st = run_window(&r, w, err)) != KVX_OK || !cfg->progress)
                continue;
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            struct kvx_eval_progress p = {
                .window = w + 1, .n_windows = n_windows,
                .seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
                .kld_mean = r.acc[0].kld / (double)(r.acc[0].n > 0 ? r.acc[0].n : 1),
            };
            cfg->progress(cfg->progress_ud, &p);
        }
    }
    for (int32_t j = 0; st == KVX_OK && j < n_tests; j++)
        finish(&r.acc[j], n_windows, tests[j], &out[j]);
    run_free(&r);
    return st;
}
