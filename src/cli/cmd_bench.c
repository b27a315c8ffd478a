/* cli/cmd_bench: `kvx bench` — prefill and decode speed at a context depth, measured like
 * llama-bench -d: the context is first filled with `depth` tokens (not timed), then
 *   prefill: n_prompt tokens in batches (timed), then the cache is cut back to `depth`;
 *   decode:  n_gen single-token steps (timed).
 * Tokens are drawn from the vocabulary with a fixed seed.  With --reps N the best of N runs
 * of each phase is reported.  The prefix cache is off here (each repetition would find the
 * last one's tokens cached).  With eviction (--evict) the cache holds the layers' budgets
 * rather than `depth` tokens, and cutting back means feeding the depth again (not timed).
 *
 * With --sessions N --shared-prefix P: N sessions sharing a prompt prefix (bench_sessions). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/common.h"
#include "engine/engine.h"
#include "kv/layout.h"
#include "ops/cpu.h"
#include "util/threadpool.h"

static uint64_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static int bench_sessions(const struct cli_opts *o);

/* Cut the session back to `depth` tokens; with eviction that empties it (evicted tokens
 * cannot come back), so the depth is fed again (not timed). */
static int back_to_depth(struct kvx_session *s, const int32_t *toks, int64_t depth,
                         float *logits, struct kvx_err *err)
{
    kvx_session_truncate(s, depth, NULL);
    if (kvx_session_n_past(s) == depth)
        return 0;
    kvx_session_truncate(s, 0, NULL);
    return kvx_session_feed(s, toks, depth, false, logits, err) != KVX_OK;
}

int cmd_bench(const struct cli_opts *o)
{
    if (o->sessions > 0)
        return bench_sessions(o);
    const int64_t depth = o->depth, n_prompt = o->n_prompt, n_gen = o->n_predict;
    struct kvx_model *m;
    struct kvx_engine *e;
    struct cli_opts no_cache = *o;
    no_cache.no_prefix_cache = true;
    if (cli_open(&no_cache, depth + n_prompt + n_gen + 1, &m, &e))
        return 1;
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    const int64_t n_tok = depth + (n_prompt > n_gen ? n_prompt : n_gen);
    int32_t *toks = malloc((size_t)n_tok * sizeof *toks);
    float *logits = malloc((size_t)info.n_vocab * sizeof *logits);
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    int rc = 1;
    if (!toks || !logits) {
        rc = cli_fail("out of memory");
        goto out;
    }
    uint64_t seed = 42;
    for (int64_t i = 0; i < n_tok; i++)
        toks[i] = (int32_t)(next_rand(&seed) % (uint64_t)info.n_vocab);
    if (kvx_session_create(e, &s, &err) != KVX_OK ||
        kvx_session_feed(s, toks, depth, false, logits, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
        goto out;
    }
    double best_pp = 1e30, best_tg = 1e30;
    for (int64_t r = 0; r < o->reps; r++) {
        double t0 = cli_now();
        if (n_prompt > 0 &&
            kvx_session_feed(s, toks + depth, n_prompt, false, logits, &err) != KVX_OK) {
            rc = cli_fail_err(&err);
            goto out;
        }
        double t1 = cli_now();
        if (back_to_depth(s, toks, depth, logits, &err)) {
            rc = cli_fail_err(&err);
            goto out;
        }
        const double t1d = cli_now();
        for (int64_t i = 0; i < n_gen; i++)
            if (kvx_session_feed(s, toks + depth + i, 1, false, logits, &err) != KVX_OK) {
                rc = cli_fail_err(&err);
                goto out;
            }
        double t2 = cli_now();
        if (back_to_depth(s, toks, depth, logits, &err)) {
            rc = cli_fail_err(&err);
            goto out;
        }
        best_pp = t1 - t0 < best_pp ? t1 - t0 : best_pp;
        best_tg = t2 - t1d < best_tg ? t2 - t1d : best_tg;
    }
    struct kvx_kv_stats kv;
    kvx_engine_kv_stats(e, &kv);
    const double pp = n_prompt ? (double)n_prompt / best_pp : 0, tg = n_gen ? (double)n_gen / best_tg : 0;
    int nth = o->threads ? (int)o->threads : kvx_cpu_count();
    if (o->json)
        printf("{\"model\": \"%s\", \"threads\": %d, \"depth\": %lld, \"prefill_tokens\": %lld, "
               "\"prefill_tok_s\": %.3f, \"decode_tokens\": %lld, \"decode_tok_s\": %.3f, "
               "\"peak_rss_bytes\": %zu, \"kv_bytes_per_token\": %zu, \"weight_bytes\": %zu, "
               "\"isa\": \"%s\"}\n", o->model, nth, (long long)depth, (long long)n_prompt, pp,
               (long long)n_gen, tg, cli_peak_rss(), kv.bytes_per_token, info.weight_bytes,
               o->isa ? o->isa : kvx_isa_name(kvx_cpu_best_isa()));
    else
        printf("depth %lld: prefill %lld tokens %.1f tok/s, decode %lld tokens %.1f tok/s, "
               "peak RSS %.1f MiB\n", (long long)depth, (long long)n_prompt, pp, (long long)n_gen,
               tg, (double)cli_peak_rss() / 1048576.0);
    rc = 0;
out:
    kvx_session_destroy(s);
    free(logits);
    free(toks);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * `kvx bench --sessions N --shared-prefix P [-p OWN] [-n GEN]`: N sessions, each the same
 * P-token prefix followed by its own OWN prompt tokens (one feed per session: the prefill,
 * timed over all sessions), then GEN rounds of one batched decode step for all sessions
 * (kvx_engine_decode; one session per step with --serial-decode or when the engine evicts)
 * (timed).  Reports
 * the KV bytes the pool holds against what N independent sequences of P + OWN + GEN tokens
 * hold (kv/layout), the bytes whole-block sharing predicts (the prefix once, rounded down to a
 * page, the rest per session), and the prefill tokens the prefix cache let the engine skip.
 * The prefix is drawn with one fixed seed, each session's own tokens with another.  Unless
 * --kv-budget is given, the budget holds N independent sequences, so that the same command
 * with --no-prefix-cache runs too. */

struct sessions_run {
    int64_t n, prefix, own, gen, len;
    bool serial;               /* decode one session per step (--serial-decode, or the engine
                                  evicts) */
    double prefill_s, decode_s;
    struct kvx_kv_stats kv;
};

/* Open the engine; without --kv-budget, one that holds n independent sequences of len tokens. */
static int sessions_open(const struct cli_opts *o, int64_t n, int64_t len, struct kvx_model **m,
                         struct kvx_engine **e)
{
    if (cli_open(o, len + 1, m, e))
        return 1;
    if (o->kv_budget)
        return 0;
    size_t one = kvx_kv_layout_seq_bytes(kvx_engine_layout(*e), len);
    kvx_engine_destroy(*e);
    kvx_model_close(*m);
    if (one && (uint64_t)n > (uint64_t)INT64_MAX / one)
        return cli_fail("--sessions %lld: %lld x %zu bytes of KV is too large", (long long)n,
                        (long long)n, one);
    struct cli_opts sized = *o;
    sized.kv_budget = (int64_t)((size_t)n * one);
    return cli_open(&sized, len + 1, m, e);
}

/* Token i of session s: the shared prefix, then the session's own tokens. */
static void sessions_tokens(int32_t *row, int64_t s, const struct sessions_run *r, int32_t n_vocab)
{
    uint64_t shared = 42, own = 1000 + (uint64_t)s;
    for (int64_t i = 0; i < r->len; i++) {
        uint64_t x = next_rand(i < r->prefix ? &shared : &own);
        row[i] = (int32_t)(x % (uint64_t)n_vocab);
    }
}

static int sessions_run(struct kvx_engine *e, int32_t n_vocab, struct sessions_run *r)
{
    int32_t *toks = malloc((size_t)(r->n * r->len) * sizeof *toks);
    int32_t *next = malloc((size_t)r->n * sizeof *next);
    float *logits = malloc((size_t)(r->n * n_vocab) * sizeof *logits);
    struct kvx_session **ss = calloc((size_t)r->n, sizeof *ss);
    struct kvx_err err = {0};
    int rc = 0;
    if (!toks || !next || !logits || !ss) {
        rc = cli_fail("out of memory");
        goto out;
    }
    for (int64_t s = 0; s < r->n; s++)
        sessions_tokens(toks + s * r->len, s, r, n_vocab);
    double t0 = cli_now();
    for (int64_t s = 0; s < r->n && !rc; s++)
        if (kvx_session_create(e, &ss[s], &err) != KVX_OK ||
            kvx_session_feed(ss[s], toks + s * r->len, r->prefix + r->own, false, logits, &err) != KVX_OK)
            rc = cli_fail_err(&err);
    double t1 = cli_now();
    /* decode: one batched step for all sessions per round (each session alone when the
     * engine evicts, which kvx_engine_decode refuses) */
    for (int64_t g = 0; g < r->gen && !rc; g++) {
        for (int64_t s = 0; s < r->n; s++)
            next[s] = toks[s * r->len + r->prefix + r->own + g];
        if (!r->serial) {
            if (kvx_engine_decode(e, ss, next, r->n, logits, &err) != KVX_OK)
                rc = cli_fail_err(&err);
            continue;
        }
        for (int64_t s = 0; s < r->n && !rc; s++)
            if (kvx_session_feed(ss[s], next + s, 1, false, logits, &err) != KVX_OK)
                rc = cli_fail_err(&err);
    }
    double t2 = cli_now();
    r->prefill_s = t1 - t0;
    r->decode_s = t2 - t1;
    kvx_engine_kv_stats(e, &r->kv);
out:
    for (int64_t s = 0; ss && s < r->n; s++)
        kvx_session_destroy(ss[s]);
    free(ss);
    free(logits);
    free(next);
    free(toks);
    return rc;
}

static void sessions_report(const struct cli_opts *o, const struct kvx_kv_layout *l,
                            const struct sessions_run *r)
{
    const int64_t pb = r->prefix / l->page_tokens * l->page_tokens;
    const size_t independent = (size_t)r->n * kvx_kv_layout_seq_bytes(l, r->len);
    const size_t expected = kvx_kv_layout_seq_bytes(l, pb) +
                            (size_t)r->n * (kvx_kv_layout_seq_bytes(l, r->len) - kvx_kv_layout_seq_bytes(l, pb));
    const int64_t prefill = r->n * (r->prefix + r->own), skipped = r->kv.prefix_tokens_reused;
    const double pp = r->prefill_s > 0 ? (double)(prefill - skipped) / r->prefill_s : 0;
    const double tg = r->decode_s > 0 ? (double)(r->n * r->gen) / r->decode_s : 0;
    if (o->json) {
        printf("{\"model\": \"%s\", \"sessions\": %lld, \"shared_prefix\": %lld, \"prompt_tokens\": "
               "%lld, \"decode_tokens\": %lld, \"page_tokens\": %d, \"prefix_cache\": %s, "
               "\"kv_bytes_held\": %zu, \"kv_bytes_independent\": %zu, \"kv_bytes_expected\": %zu, "
               "\"kv_bytes_shared\": %zu, \"prefix_blocks\": %lld, \"prefill_tokens\": %lld, "
               "\"prefill_tokens_skipped\": %lld, \"prefill_s\": %.4f, \"prefill_tok_s\": %.3f, "
               "\"decode_s\": %.4f, \"decode_tok_s\": %.3f, \"decode_batched\": %s, "
               "\"peak_rss_bytes\": %zu}\n",
               o->model, (long long)r->n, (long long)r->prefix, (long long)r->own,
               (long long)r->gen, (int)l->page_tokens, o->no_prefix_cache ? "false" : "true",
               r->kv.bytes_used, independent, expected, r->kv.bytes_shared,
               (long long)r->kv.prefix_blocks, (long long)prefill, (long long)skipped,
               r->prefill_s, pp, r->decode_s, tg, r->serial ? "false" : "true", cli_peak_rss());
        return;
    }
    printf("%lld sessions x (shared prefix %lld + own prompt %lld + decode %lld tokens), pages of "
           "%d tokens, prefix cache %s\n", (long long)r->n, (long long)r->prefix,
           (long long)r->own, (long long)r->gen, (int)l->page_tokens,
           o->no_prefix_cache ? "off" : "on");
    printf("  KV held: %.2f MiB; %lld independent sequences would hold %.2f MiB (%.2fx); "
           "block sharing predicts %.2f MiB\n", (double)r->kv.bytes_used / 1048576.0,
           (long long)r->n, (double)independent / 1048576.0,
           independent ? (double)r->kv.bytes_used / (double)independent : 0,
           (double)expected / 1048576.0);
    printf("  prefill: %lld of %lld tokens skipped (cached prefix), %lld computed in %.3f s "
           "(%.1f tok/s)\n", (long long)skipped, (long long)prefill, (long long)(prefill - skipped),
           r->prefill_s, pp);
    printf("  decode: %lld tokens in %.3f s (%.1f tok/s, %s)\n", (long long)(r->n * r->gen),
           r->decode_s, tg, r->serial ? "one session per step"
                                      : "all sessions in one batched step per round");
}

static int bench_sessions(const struct cli_opts *o)
{
    struct sessions_run r = {.n = o->sessions, .prefix = o->shared_prefix, .own = o->n_prompt,
                             .gen = o->n_predict, .serial = o->serial_decode || o->evict};
    r.len = r.prefix + r.own + r.gen;
    if (r.prefix + r.own < 1)
        return cli_fail("bench --sessions: no prompt tokens (--shared-prefix + -p is 0)");
    struct kvx_model *m;
    struct kvx_engine *e;
    if (sessions_open(o, r.n, r.len, &m, &e))
        return 1;
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    int rc = sessions_run(e, info.n_vocab, &r);
    if (!rc)
        sessions_report(o, kvx_engine_layout(e), &r);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}
