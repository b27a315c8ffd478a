/* cli/cmd_bench: `kvx bench` — prefill and decode speed at a context depth, measured like
 * llama-bench -d: the context is first filled with `depth` tokens (not timed), then
 *   prefill: n_prompt tokens in batches (timed), then the cache is cut back to `depth`;
 *   decode:  n_gen single-token steps (timed).
 * Tokens are drawn from the vocabulary with a fixed seed.  With --reps N the best of N runs
 * of each phase is reported.  With eviction (--evict) the cache holds the layers' budgets
 * rather than `depth` tokens, and cutting back means feeding the depth again (not timed). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/common.h"
#include "engine/engine.h"
#include "ops/cpu.h"
#include "util/threadpool.h"

static uint64_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

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
    const int64_t depth = o->depth, n_prompt = o->n_prompt, n_gen = o->n_predict;
    struct kvx_model *m;
    struct kvx_engine *e;
    if (cli_open(o, depth + n_prompt + n_gen + 1, &m, &e))
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
