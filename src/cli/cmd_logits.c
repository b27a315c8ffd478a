/* cli/cmd_logits: `kvx logits` — the model's logits at every position as one JSON object,
 * for checks against reference implementations. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"

static int parse_token_list(const char *s, int32_t **ids, int64_t *n)
{
    int64_t cap = 16;
    *n = 0;
    *ids = malloc((size_t)cap * sizeof **ids);
    while (*ids) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            return 0;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return cli_fail("--tokens: '%.20s' is not a token id", s);
        }
        if (*n == cap) {
            int32_t *p = realloc(*ids, (size_t)(cap *= 2) * sizeof *p);
            if (!p)
                break;
            *ids = p;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    free(*ids);
    *ids = NULL;
    return cli_fail("out of memory");
}

/* Indices of the k largest values of x[0..n), best first (ties: lower id first). */
static void top_k(const float *x, int32_t n, int32_t k, int32_t *idx)
{
    int32_t have = 0;
    for (int32_t i = 0; i < n; i++) {
        if (have == k && x[i] <= x[idx[k - 1]])
            continue;
        int32_t j = have < k ? have++ : k - 1;
        while (j > 0 && x[idx[j - 1]] < x[i]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

static void print_json(const int32_t *ids, int64_t n, const float *logits, int32_t n_vocab,
                       int64_t top)
{
    printf("{\"tokens\": [");
    for (int64_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"%s\": [", top ? "top" : "logits");
    int32_t idx[1024];
    for (int64_t t = 0; t < n; t++) {
        const float *row = logits + t * n_vocab;
        printf("%s[", t ? ",\n" : "\n");
        if (top) {
            int32_t k = (int32_t)(top < n_vocab ? top : n_vocab);
            k = k < 1024 ? k : 1024;
            top_k(row, n_vocab, k, idx);
            for (int32_t j = 0; j < k; j++)
                printf("%s[%d, %.6g]", j ? ", " : "", idx[j], (double)row[idx[j]]);
        } else {
            for (int32_t j = 0; j < n_vocab; j++)
                printf("%s%.6g", j ? ", " : "", (double)row[j]);
        }
        printf("]");
    }
    printf("]}\n");
}

int cmd_logits(const struct cli_opts *o)
{
    if (!o->prompt == !o->tokens)
        return cli_fail("logits: give exactly one of -p TEXT or --tokens \"ID ...\"");
    struct kvx_model *m;
    struct kvx_engine *e;
    if (cli_open(o, 0, &m, &e))
        return 1;
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    int rc = 1;
    int32_t *ids = NULL;
    int64_t n = 0;
    float *logits = NULL;
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    if (o->tokens ? parse_token_list(o->tokens, &ids, &n)
                  : cli_tokenize(m, o->prompt, strlen(o->prompt), info.add_bos && !o->no_bos,
                                 false, &ids, &n))
        goto out;
    if (n == 0) {
        rc = cli_fail("logits: no tokens");
        goto out;
    }
    logits = malloc((size_t)n * (size_t)info.n_vocab * sizeof *logits);
    if (!logits) {
        rc = cli_fail("out of memory for %lld x %d logits", (long long)n, info.n_vocab);
        goto out;
    }
    if (kvx_session_create(e, &s, &err) != KVX_OK ||
        kvx_session_feed(s, ids, n, true, logits, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
        goto out;
    }
    print_json(ids, n, logits, info.n_vocab, o->top);
    rc = 0;
out:
    kvx_session_destroy(s);
    free(logits);
    free(ids);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return rc;
}
