/* cli/cmd_eval: `kvx eval ppl` — perplexity over non-overlapping windows of the text, scored
 * the way llama.cpp's perplexity tool scores them so that the numbers are comparable:
 * windows of c tokens (BOS put in the first slot when the model adds one), each scored only
 * on its second half (positions c/2 .. c-2 predicting the next token), ppl = exp(mean NLL).
 * With eviction (--evict) a window is fed as two requests, its unscored first half as a
 * prompt and then the scored half, so that policies that act at a prompt's end (snapkv)
 * compress the context before the scored tokens; the steps are the same when c/2 is a
 * multiple of the batch size, so the other policies score as with one request. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"

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

int cmd_eval(const struct cli_opts *o, const char *what)
{
    if (!what || strcmp(what, "ppl") != 0)
        return cli_fail("eval: unknown evaluation '%s' (available: ppl)", what ? what : "");
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
