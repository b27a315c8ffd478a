/* eval/passkey: the passkey retrieval test — build a prompt of an exact token length with a
 * random 5-digit key hidden at a depth of corpus filler, decode greedily, check the digits.
 * The sentences below are the test's fixed instruction and question; the filler is always the
 * caller's corpus.  Owns no engine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/eval.h"
#include "util/err.h"

static const char INTRO[] = "There is a pass key hidden in the text below. Find it and "
                            "remember it: you will be asked for it at the end.\n\n";
static const char KEY_FMT[] = "\n\nThe pass key is %d. Remember it. %d is the pass key.\n\n";
static const char QUESTION_PLAIN[] = "\n\nWhat is the pass key? The pass key is";
static const char QUESTION_CHAT[] = "\n\nWhat is the pass key? Answer with the number only.";
static const char MARK[] = "@@KVX-PASSKEY@@";
#define SNAP_BACK 32

/* A growable token array. */
struct toks {
    int32_t *v;
    int64_t n, cap;
};

static enum kvx_status toks_push(struct toks *t, const int32_t *ids, int64_t n, struct kvx_err *err)
{
    if (t->n + n > t->cap) {
        int64_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n)
            cap *= 2;
        int32_t *v = realloc(t->v, (size_t)cap * sizeof *v);
        if (!v)
            return kvx_err_set(err, KVX_ERR_NOMEM, "passkey: out of memory");
        t->v = v;
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->v + t->n, ids, (size_t)n * sizeof *ids);
    t->n += n;
    return KVX_OK;
}

/* Append the tokens of `text` (special-token texts recognised when `special`). */
static enum kvx_status toks_text(struct toks *t, const struct kvx_model *m, const char *text,
                                 bool bos, bool special, struct kvx_err *err)
{
    const size_t len = strlen(text);
    int64_t need = 0;
    int32_t *ids = malloc((len + 8) * sizeof *ids);
    if (!ids)
        return kvx_err_set(err, KVX_ERR_NOMEM, "passkey: out of memory");
    enum kvx_status st = kvx_tokenize(m, text, len, bos, special, ids, (int64_t)len + 8, &need, err);
    if (st == KVX_OK)
        st = toks_push(t, ids, need, err);
    free(ids);
    return st;
}

/* The chat template around the user message: pre and post (malloc'd into *buf, split in place). */
static enum kvx_status chat_parts(const struct kvx_model *m, char **buf, const char **pre,
                                  const char **post, struct kvx_err *err)
{
    const struct kvx_chat_msg msg = {"user", MARK};
    enum kvx_status st = kvx_chat_render(m, &msg, 1, true, buf, err);
    if (st != KVX_OK)
        return st;
    char *at = strstr(*buf, MARK);
    if (!at)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "passkey: the chat template dropped the "
                           "user message");
    *at = '\0';
    *pre = *buf;
    *post = at + strlen(MARK);
    return KVX_OK;
}

/* head, key and tail token runs of the prompt. */
static enum kvx_status parts(const struct kvx_eval_passkey_cfg *c, int32_t key, struct toks *head,
                             struct toks *keyt, struct toks *tail, struct kvx_err *err)
{
    struct kvx_model_info info;
    kvx_model_get_info(c->model, &info);
    const bool chat = c->form == KVX_EVAL_PASSKEY_CHAT;
    char *tmpl = NULL;
    const char *pre = "", *post = "";
    enum kvx_status st = chat ? chat_parts(c->model, &tmpl, &pre, &post, err) : KVX_OK;
    char ks[160];
    snprintf(ks, sizeof ks, KEY_FMT, key, key);
    if (st == KVX_OK)
        st = toks_text(head, c->model, pre, info.add_bos, true, err);
    if (st == KVX_OK)
        st = toks_text(head, c->model, INTRO, false, false, err);
    if (st == KVX_OK)
        st = toks_text(keyt, c->model, ks, false, false, err);
    if (st == KVX_OK)
        st = toks_text(tail, c->model, chat ? QUESTION_CHAT : QUESTION_PLAIN, false, false, err);
    if (st == KVX_OK && chat)
        st = toks_text(tail, c->model, post, false, true, err);
    free(tmpl);
    return st;
}

/* Does token `id` end a line or a sentence? */
static bool ends_sentence(const struct kvx_model *m, int32_t id)
{
    char piece[64];
    size_t n = kvx_token_piece(m, id, false, piece, sizeof piece);
    if (n == 0 || n > sizeof piece)
        return false;
    const char last = piece[n - 1];
    return last == '\n' || last == '.' || last == '!' || last == '?';
}

enum kvx_status kvx_eval_passkey_build(const struct kvx_eval_passkey_cfg *cfg, int64_t length,
                                       double depth, int32_t key, int64_t filler_off,
                                       struct kvx_eval_passkey_prompt *out, struct kvx_err *err)
{
    memset(out, 0, sizeof *out);
    if (!cfg->model || !cfg->filler || key < 10000 || key > 99999 || !(depth >= 0.0) ||
        depth > 1.0 || filler_off < 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "passkey: bad arguments (key %d, depth %g)",
                           (int)key, depth);
    struct toks head = {0}, keyt = {0}, tail = {0}, all = {0};
    enum kvx_status st = parts(cfg, key, &head, &keyt, &tail, err);
    const int64_t fixed = head.n + keyt.n + tail.n, F = length - fixed;
    if (st == KVX_OK && F < 0)
        st = kvx_err_set(err, KVX_ERR_INVALID_ARG, "a passkey prompt of %lld tokens cannot hold "
                         "the instruction, key and question (%lld tokens)", (long long)length,
                         (long long)fixed);
    else if (st == KVX_OK && F > cfg->n_filler)
        st = kvx_err_set(err, KVX_ERR_INVALID_ARG, "the filler text is too short: a passkey "
                         "prompt of %lld tokens needs %lld tokens of it, has %lld",
                         (long long)length, (long long)F, (long long)cfg->n_filler);
    if (st == KVX_OK) {
        const int32_t *fill = cfg->filler + filler_off % (cfg->n_filler - F + 1);
        int64_t a = (int64_t)(depth * (double)F + 0.5);
        for (int64_t b = a; a > 0 && a < F && b > 0 && b >= a - SNAP_BACK; b--)
            if (ends_sentence(cfg->model, fill[b - 1])) {
                a = b;
                break;
            }
        if ((st = toks_push(&all, head.v, head.n, err)) == KVX_OK &&
            (st = toks_push(&all, fill, a, err)) == KVX_OK &&
            (st = toks_push(&all, keyt.v, keyt.n, err)) == KVX_OK &&
            (st = toks_push(&all, fill + a, F - a, err)) == KVX_OK)
            st = toks_push(&all, tail.v, tail.n, err);
        out->key_at = head.n + a;
        out->filler_len = F;
        out->depth = F > 0 ? (double)a / (double)F : depth;
    }
    free(head.v);
    free(keyt.v);
    free(tail.v);
    if (st != KVX_OK) {
        free(all.v);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->tokens = all.v;
    out->n = all.n;
    out->key = key;
    return KVX_OK;
}

void kvx_eval_passkey_prompt_free(struct kvx_eval_passkey_prompt *p)
{
    if (!p)
        return;
    free(p->tokens);
    memset(p, 0, sizeof *p);
}

/* The first run of ASCII digits of s into out ("" if none). */
static void first_digits(const char *s, char *out, size_t cap)
{
    while (*s && (*s < '0' || *s > '9'))
        s++;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n + 1 < cap) {
        out[n] = s[n];
        n++;
    }
    out[n] = '\0';
}

enum kvx_status kvx_eval_passkey_trial(struct kvx_engine *e, const struct kvx_eval_passkey_cfg *cfg,
                                       const struct kvx_eval_passkey_prompt *p,
                                       struct kvx_eval_passkey_answer *out, struct kvx_err *err)
{
    memset(out, 0, sizeof *out);
    struct kvx_model_info info;
    kvx_model_get_info(cfg->model, &info);
    const int32_t n_gen = cfg->n_gen > 0 ? cfg->n_gen : cfg->form == KVX_EVAL_PASSKEY_CHAT ? 16 : 8;
    float *logits = malloc((size_t)info.n_vocab * sizeof *logits);
    size_t n_text = 0;
    struct kvx_session *s = NULL;
    if (!logits)
        return kvx_err_set(err, KVX_ERR_NOMEM, "passkey: out of memory");
    enum kvx_status st = kvx_session_create(e, &s, err);
    if (st == KVX_OK)
        st = kvx_session_feed(s, p->tokens, p->n, false, logits, err);
    for (int32_t i = 0; st == KVX_OK && i < n_gen; i++) {
        const int32_t tok = kvx_eval_argmax(logits, info.n_vocab);
        if (kvx_token_is_eog(cfg->model, tok))
            break;
        const size_t room = sizeof out->text - 1 - n_text;
        const size_t n = kvx_token_piece(cfg->model, tok, false, out->text + n_text, room);
        n_text += n < room ? n : room;
        out->text[n_text] = '\0';
        if (i + 1 < n_gen)
            st = kvx_session_feed(s, &tok, 1, false, logits, err);
    }
    kvx_session_destroy(s);
    free(logits);
    if (st != KVX_OK)
        return st;
    first_digits(out->text, out->digits, sizeof out->digits);
    char want[16];
    snprintf(want, sizeof want, "%d", (int)p->key);
    out->correct = strcmp(out->digits, want) == 0;
    return KVX_OK;
}

/* splitmix64: a small, well-mixed generator for keys and offsets. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

enum kvx_status kvx_eval_passkey_run(struct kvx_engine *e, const struct kvx_eval_passkey_cfg *cfg,
                                     const struct kvx_eval_passkey_grid *g, int32_t *n_correct,
                                     struct kvx_err *err)
{
    const int64_t total = (int64_t)g->n_lengths * g->n_depths * g->trials;
    uint64_t rng = g->seed;
    int64_t done = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(n_correct, 0, (size_t)g->n_lengths * (size_t)g->n_depths * sizeof *n_correct);
    /* Every length must be buildable before the first trial runs. */
    for (int32_t l = 0; l < g->n_lengths; l++) {
        struct kvx_eval_passkey_prompt p;
        enum kvx_status st = kvx_eval_passkey_build(cfg, g->lengths[l], 0.0, 10000, 0, &p, err);
        kvx_eval_passkey_prompt_free(&p);
        if (st != KVX_OK)
            return st;
    }
    for (int32_t l = 0; l < g->n_lengths; l++)
        for (int32_t d = 0; d < g->n_depths; d++)
            for (int32_t t = 0; t < g->trials; t++) {
                const int32_t key = 10000 + (int32_t)(next_rand(&rng) % 90000);
                const int64_t off = (int64_t)(next_rand(&rng) >> 2);
                struct kvx_eval_passkey_prompt p;
                enum kvx_status st =
                    kvx_eval_passkey_build(cfg, g->lengths[l], g->depths[d], key, off, &p, err);
                struct kvx_eval_passkey_answer ans;
                if (st == KVX_OK)
                    st = kvx_eval_passkey_trial(e, cfg, &p, &ans, err);
                kvx_eval_passkey_prompt_free(&p);
                if (st != KVX_OK)
                    return st;
                n_correct[l * g->n_depths + d] += ans.correct;
                done++;
                if (g->on_trial) {
                    const struct kvx_eval_passkey_trial_info info = {
                        .length = g->lengths[l], .depth = g->depths[d], .length_idx = l,
                        .depth_idx = d, .trial = t, .key = key, .answer = &ans,
                        .done = done, .total = total, .seconds = since(&t0),
                    };
                    g->on_trial(g->ud, &info);
                }
            }
    return KVX_OK;
}
