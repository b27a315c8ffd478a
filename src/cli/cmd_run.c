/* cli/cmd_run: `kvx run` — prompt in, generated text out (stdout), statistics to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"

static int build_prompt(const struct cli_opts *o, const struct kvx_model *m, char **text,
                        size_t *len)
{
    char *raw = NULL;
    size_t raw_len = 0;
    if (o->file) {
        if (cli_read_file(o->file, &raw, &raw_len))
            return 1;
    } else if (o->prompt) {
        raw = strdup(o->prompt);
        raw_len = raw ? strlen(raw) : 0;
    } else {
        return cli_fail("run: no prompt given (-p TEXT or -f FILE)");
    }
    if (!raw)
        return cli_fail("out of memory");
    if (!o->chat) {
        *text = raw;
        *len = raw_len;
        return 0;
    }
    struct kvx_chat_msg msgs[2];
    size_t n = 0;
    if (o->system)
        msgs[n++] = (struct kvx_chat_msg){"system", o->system};
    msgs[n++] = (struct kvx_chat_msg){"user", raw};
    struct kvx_err err = {0};
    enum kvx_status st = kvx_chat_render(m, msgs, n, true, text, &err);
    free(raw);
    if (st != KVX_OK)
        return cli_fail_err(&err);
    *len = strlen(*text);
    return 0;
}

static int generate(const struct cli_opts *o, const struct kvx_model *m, struct kvx_session *s,
                    const int32_t *ids, int64_t n_ids)
{
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    struct kvx_sampler_cfg sc = kvx_sampler_cfg_default();
    sc.temperature = o->temp;
    sc.top_k = (int32_t)o->top_k;
    sc.top_p = o->top_p;
    sc.min_p = o->min_p;
    sc.repeat_penalty = o->repeat_penalty;
    sc.repeat_last_n = (int32_t)o->repeat_last_n;
    sc.seed = (uint64_t)o->seed;
    struct kvx_err err = {0};
    struct kvx_sampler *smp = NULL;
    float *logits = malloc((size_t)info.n_vocab * sizeof *logits);
    if (!logits)
        return cli_fail("out of memory");
    if (kvx_sampler_create(&sc, info.n_vocab, &smp, &err) != KVX_OK) {
        free(logits);
        return cli_fail_err(&err);
    }
    for (int64_t i = 0; i < n_ids; i++)
        kvx_sampler_accept(smp, ids[i]);
    int rc = 0;
    double t0 = cli_now();
    if (kvx_session_feed(s, ids, n_ids, false, logits, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
        goto done;
    }
    double t1 = cli_now();
    int64_t n_gen = 0;
    char piece[256];
    while (n_gen < o->n_predict) {
        int32_t tok = kvx_sampler_sample(smp, logits);
        if (kvx_token_is_eog(m, tok))
            break;
        kvx_sampler_accept(smp, tok);
        size_t np = kvx_token_piece(m, tok, false, piece, sizeof piece);
        fwrite(piece, 1, np < sizeof piece ? np : sizeof piece, stdout);
        fflush(stdout);
        if (++n_gen == o->n_predict)
            break; /* no need to run the last token through the model */
        if (kvx_session_feed(s, &tok, 1, false, logits, &err) != KVX_OK) {
            rc = cli_fail_err(&err);
            goto done;
        }
    }
    double t2 = cli_now();
    fputc('\n', stdout);
    fprintf(stderr, "\nprompt: %lld tokens in %.3f s (%.1f tok/s); generated %lld tokens in "
            "%.3f s (%.1f tok/s)\n", (long long)n_ids, t1 - t0, (double)n_ids / (t1 - t0),
            (long long)n_gen, t2 - t1, n_gen > 0 ? (double)n_gen / (t2 - t1) : 0.0);
done:
    kvx_sampler_destroy(smp);
    free(logits);
    return rc;
}

int cmd_run(const struct cli_opts *o)
{
    struct kvx_model *m;
    struct kvx_engine *e;
    if (cli_open(o, 0, &m, &e))
        return 1;
    int rc = 1;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    if (build_prompt(o, m, &text, &len) ||
        cli_tokenize(m, text, len, info.add_bos && !o->no_bos, o->chat, &ids, &n_ids))
        goto out;
    if (n_ids == 0) {
        rc = cli_fail("run: the prompt is empty");
        goto out;
    }
    if (kvx_session_create(e, &s, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
        goto out;
    }
    rc = generate(o, m, s, ids, n_ids);
    if (rc == 0 && o->kv_report) {
        char *rep = kvx_engine_kv_report(e);
        if (rep)
            fputs(rep, stderr);
        free(rep);
    }
out:
    kvx_session_destroy(s);
    free(ids);
    free(text);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}
