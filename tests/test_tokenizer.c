/* tests/test_tokenizer: text/tokenizer against llama.cpp's ids (fixture made by
 * tools/reference/gen_tokenizer_fixtures.py), decode round trips, special tokens, end of
 * generation, and hand-made vocabularies (via io/gguf_write) that pin down BPE merge order,
 * the not-a-token fallback and the errors, without the model. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/gguf.h"
#include "io/gguf_write.h"
#include "json_mini.h"
#include "test.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

#define FIXTURE "tokenizer_smollm2.json"

struct model_tok {
    struct kvx_tokenizer *tok;
    struct kvx_json *fx;
};

/* The default model's tokenizer and the fixture; false (test skipped) without the model. */
static bool open_model(struct model_tok *m)
{
    memset(m, 0, sizeof *m);
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("model not present");
        return false;
    }
    struct kvx_err err = {0};
    struct kvx_gguf *g = NULL;
    KVX_CHECK(kvx_gguf_open(path, &g, &err) == KVX_OK);
    if (!g)
        return false;
    enum kvx_status st = kvx_tokenizer_create(g, &m->tok, &err);
    kvx_gguf_close(g);                /* the tokenizer must not borrow from the file */
    if (st != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "tokenizer_create: %s", err.msg);
        return false;
    }
    char msg[256] = "";
    m->fx = kvx_json_parse_file(kvx_test_fixture(FIXTURE), msg, sizeof msg);
    if (!m->fx) {
        kvx_test_fail(__FILE__, __LINE__, "fixture: %s", msg);
        kvx_tokenizer_destroy(m->tok);
        return false;
    }
    return true;
}

static void close_model(struct model_tok *m)
{
    kvx_tokenizer_destroy(m->tok);
    kvx_json_free(m->fx);
}

static int hexdigit(char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* The input bytes of a fixture entry ("text" or "hex"); malloc'd. */
static char *entry_bytes(const struct kvx_json *e, size_t *len)
{
    const struct kvx_json *t = kvx_json_get(e, "text");
    if (t && t->type == KVX_JSON_STRING) {
        char *s = malloc(t->len + 1);
        memcpy(s, t->str, t->len + 1);
        *len = t->len;
        return s;
    }
    const char *hex = kvx_json_str(e, "hex", "");
    *len = strlen(hex) / 2;
    char *s = malloc(*len + 1);
    for (size_t i = 0; i < *len; i++)
        s[i] = (char)(hexdigit(hex[2 * i]) * 16 + hexdigit(hex[2 * i + 1]));
    s[*len] = '\0';
    return s;
}

static void print_ids(const char *label, const int32_t *ids, int64_t n)
{
    fprintf(stderr, "    %s:", label);
    for (int64_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Every entry of fixture array `key` must encode to exactly its "ids". */
static void check_encode_list(struct model_tok *m, const char *key, bool parse_special)
{
    const struct kvx_json *list = kvx_json_get(m->fx, key);
    KVX_CHECK(list && list->len > 0);
    size_t bad = 0, n_list = list ? list->len : 0;
    for (size_t i = 0; i < n_list; i++) {
        const struct kvx_json *e = kvx_json_at(list, i), *ids = kvx_json_get(e, "ids");
        size_t len;
        char *text = entry_bytes(e, &len);
        int64_t cap = (int64_t)len * 2 + 8, n = -1;
        int32_t *out = malloc((size_t)cap * sizeof *out);
        struct kvx_err err = {0};
        enum kvx_status st = kvx_tokenizer_encode(m->tok, text, len, false, parse_special, out,
                                                  cap, &n, &err);
        bool same = st == KVX_OK && ids && (size_t)n == ids->len;
        for (int64_t k = 0; same && k < n; k++)
            same = out[k] == (int32_t)ids->items[k].num;
        if (!same && ++bad <= 5) {
            kvx_test_fail(__FILE__, __LINE__, "%s[%zu] \"%.60s\" (%zu bytes): st=%d n=%lld", key,
                          i, text, len, (int)st, (long long)n);
            print_ids("kvx", out, n > 0 ? n : 0);
            int32_t want[256];
            size_t nw = ids && ids->len < 256 ? ids->len : 0;
            for (size_t k = 0; k < nw; k++)
                want[k] = (int32_t)ids->items[k].num;
            print_ids("llama.cpp", want, (int64_t)nw);
        }
        free(out);
        free(text);
    }
    if (bad)
        kvx_test_fail(__FILE__, __LINE__, "%s: %zu of %zu strings differ from llama.cpp", key,
                      bad, n_list);
    else
        fprintf(stderr, "  %s: %zu/%zu strings match llama.cpp\n", key, n_list, n_list);
}

KVX_TEST(tokenizer_matches_llamacpp)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    KVX_CHECK(kvx_json_get(m.fx, "encode")->len >= 250);
    check_encode_list(&m, "encode", false);
    close_model(&m);
}

KVX_TEST(tokenizer_matches_llamacpp_special)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    check_encode_list(&m, "encode_special", true);
    close_model(&m);
}

KVX_TEST(tokenizer_vocab_facts)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    KVX_CHECK_EQ_INT(kvx_tokenizer_n_vocab(m.tok), kvx_json_num(m.fx, "n_vocab", -1));
    KVX_CHECK_EQ_INT(kvx_tokenizer_bos(m.tok), kvx_json_num(m.fx, "bos", -2));
    KVX_CHECK_EQ_INT(kvx_tokenizer_eos(m.tok), kvx_json_num(m.fx, "eos", -2));
    KVX_CHECK(!kvx_tokenizer_add_bos(m.tok));
    KVX_CHECK_EQ_INT(kvx_tokenizer_find(m.tok, "<|im_start|>"), 1);
    KVX_CHECK_EQ_INT(kvx_tokenizer_find(m.tok, "<|im_end|>"), 2);
    KVX_CHECK_EQ_INT(kvx_tokenizer_find(m.tok, "no such token text"), -1);
    /* add_bos asks for BOS only when the model does (SmolLM2 does not). */
    int32_t ids[8];
    int64_t n;
    KVX_CHECK(kvx_tokenizer_encode(m.tok, "Hi", 2, true, false, ids, 8, &n, NULL) == KVX_OK);
    KVX_CHECK(n >= 1 && ids[0] != kvx_tokenizer_bos(m.tok));
    close_model(&m);
}

KVX_TEST(tokenizer_eog_set)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const struct kvx_json *eog = kvx_json_get(m.fx, "eog");
    int32_t n_vocab = kvx_tokenizer_n_vocab(m.tok);
    char *want = calloc((size_t)n_vocab, 1);
    for (size_t i = 0; eog && i < eog->len; i++)
        want[(int32_t)eog->items[i].num] = 1;
    int bad = 0;
    for (int32_t id = 0; id < n_vocab; id++)
        if (kvx_tokenizer_is_eog(m.tok, id) != (want[id] != 0) && ++bad <= 5)
            kvx_test_fail(__FILE__, __LINE__, "is_eog(%d) = %d", id, !want[id]);
    KVX_CHECK(kvx_tokenizer_is_eog(m.tok, kvx_tokenizer_find(m.tok, "<|im_end|>")));
    KVX_CHECK(kvx_tokenizer_is_eog(m.tok, kvx_tokenizer_find(m.tok, "<|endoftext|>")));
    KVX_CHECK(!kvx_tokenizer_is_eog(m.tok, kvx_tokenizer_find(m.tok, "<|im_start|>")));
    KVX_CHECK(!kvx_tokenizer_is_eog(m.tok, -1));
    KVX_CHECK(!kvx_tokenizer_is_eog(m.tok, n_vocab));
    free(want);
    close_model(&m);
}

KVX_TEST(tokenizer_pieces_match_llamacpp)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const struct kvx_json *list = kvx_json_get(m.fx, "pieces");
    KVX_CHECK(list && list->len > 100);
    for (size_t i = 0; list && i < list->len; i++) {
        const struct kvx_json *e = kvx_json_at(list, i);
        size_t len;
        char *want = entry_bytes(e, &len);
        char buf[256];
        int32_t id = (int32_t)kvx_json_num(e, "id", -1);
        size_t n = kvx_tokenizer_piece(m.tok, id, kvx_json_bool(e, "special", false), buf,
                                       sizeof buf);
        if (n != len || memcmp(buf, want, len) != 0)
            kvx_test_fail(__FILE__, __LINE__, "piece(%d, special=%d): %zu bytes, want %zu", id,
                          kvx_json_bool(e, "special", false), n, len);
        free(want);
    }
    /* Size query and truncation: the full size is returned, at most cap bytes written. */
    int32_t id = kvx_tokenizer_find(m.tok, "<|im_start|>");
    char small[4] = {'x', 'x', 'x', 'x'};
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(m.tok, id, true, NULL, 0), 12);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(m.tok, id, true, small, 3), 12);
    KVX_CHECK(memcmp(small, "<|ix", 4) == 0);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(m.tok, id, false, small, 4), 0);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(m.tok, -1, true, small, 4), 0);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(m.tok, 1 << 30, true, small, 4), 0);
    close_model(&m);
}

/* Concatenated pieces of the encoding of `text` equal `text`. */
static bool round_trips(const struct kvx_tokenizer *t, const char *text, size_t len, bool special)
{
    int64_t cap = (int64_t)len + 8, n;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    char *back = malloc(len + 64);
    size_t pos = 0;
    bool ok = kvx_tokenizer_encode(t, text, len, false, special, ids, cap, &n, NULL) == KVX_OK;
    for (int64_t i = 0; ok && i < n; i++) {
        size_t k = kvx_tokenizer_piece(t, ids[i], special, back + pos, len + 64 - pos);
        pos += k;
        ok = pos <= len;
    }
    ok = ok && pos == len && memcmp(back, text, len) == 0;
    free(ids);
    free(back);
    return ok;
}

KVX_TEST(tokenizer_round_trip)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const char *lists[] = {"encode", "encode_special"};
    size_t n_checked = 0;
    for (int l = 0; l < 2; l++) {
        const struct kvx_json *list = kvx_json_get(m.fx, lists[l]);
        for (size_t i = 0; list && i < list->len; i++) {
            const struct kvx_json *t = kvx_json_get(kvx_json_at(list, i), "text");
            if (!t)
                continue;                  /* invalid UTF-8 does not round-trip (U+FFFD) */
            n_checked++;
            if (!round_trips(m.tok, t->str, t->len, l == 1))
                kvx_test_fail(__FILE__, __LINE__, "%s[%zu] does not round-trip: \"%.60s\"",
                              lists[l], i, t->str);
        }
    }
    KVX_CHECK(n_checked > 250);
    close_model(&m);
}

KVX_TEST(tokenizer_special_parsing)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const char *s = "<|im_start|>user\nHi<|im_end|>";
    int32_t a[32], b[32];
    int64_t na, nb;
    KVX_CHECK(kvx_tokenizer_encode(m.tok, s, strlen(s), false, true, a, 32, &na, NULL) == KVX_OK);
    KVX_CHECK(kvx_tokenizer_encode(m.tok, s, strlen(s), false, false, b, 32, &nb, NULL) == KVX_OK);
    KVX_CHECK(na >= 3 && a[0] == 1 && a[na - 1] == 2);
    KVX_CHECK(nb > na);                        /* markup spelled out as ordinary text */
    for (int64_t i = 0; i < nb; i++)
        KVX_CHECK(b[i] != 1 && b[i] != 2);
    close_model(&m);
}

KVX_TEST(tokenizer_cap_too_small)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const char *s = "one two three four five";
    int32_t ids[3] = {-7, -7, -7}, all[32];
    int64_t n = -1, n_all;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_tokenizer_encode(m.tok, s, strlen(s), false, false, all, 32, &n_all, NULL) ==
              KVX_OK);
    KVX_CHECK(kvx_tokenizer_encode(m.tok, s, strlen(s), false, false, ids, 2, &n, &err) ==
              KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(n, n_all);
    KVX_CHECK(ids[0] == all[0] && ids[1] == all[1] && ids[2] == -7);
    KVX_CHECK(err.msg[0] != '\0');
    KVX_CHECK(kvx_tokenizer_encode(m.tok, s, strlen(s), false, false, NULL, 0, &n, NULL) ==
              KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(n, n_all);
    KVX_CHECK(kvx_tokenizer_encode(m.tok, "", 0, false, false, NULL, 0, &n, NULL) == KVX_OK);
    KVX_CHECK_EQ_INT(n, 0);
    close_model(&m);
}

/* Sanitizers slow encoding down ~4x; the bound is for plain optimized builds. */
#if defined(__SANITIZE_ADDRESS__)
#define SPEED_LIMIT_S 5.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define SPEED_LIMIT_S 5.0
#endif
#endif
#ifndef SPEED_LIMIT_S
#define SPEED_LIMIT_S 1.0
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 MiB of the fixture's text (prose, code, CJK, emoji) must encode well under a second;
 * and encoding is context-free across special-token-free paragraph joins, so a sample of the
 * result is checked for consistency with encoding the pieces alone. */
KVX_TEST(tokenizer_speed_1mb)
{
    struct model_tok m;
    if (!open_model(&m))
        return;
    const struct kvx_json *list = kvx_json_get(m.fx, "encode");
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; len < cap; i = (i + 1) % list->len) {
        const struct kvx_json *t = kvx_json_get(kvx_json_at(list, i), "text");
        if (!t)
            continue;
        for (size_t k = 0; k < t->len && len < cap; k++)
            text[len++] = t->str[k];
    }
    int64_t n, out_cap = (int64_t)len;
    int32_t *ids = malloc((size_t)out_cap * sizeof *ids);
    double t0 = now_s();
    KVX_CHECK(kvx_tokenizer_encode(m.tok, text, len, false, false, ids, out_cap, &n, NULL) ==
              KVX_OK);
    double dt = now_s() - t0;
    fprintf(stderr, "  encoded %zu bytes into %lld tokens in %.3f s (%.1f MB/s)\n", len,
            (long long)n, dt, (double)len / dt / 1e6);
    KVX_CHECK(dt < SPEED_LIMIT_S);
    KVX_CHECK(n > (int64_t)len / 16 && n < (int64_t)len);
    free(ids);
    free(text);
    close_model(&m);
}

/* ------------------------------------------------------------------------------------------
 * Hand-made vocabularies */

struct tiny_spec {
    const char *model, *pre;
    const char *const *merges;
    size_t n_merges;
    const char *const *extra;          /* tokens after the 256 byte tokens */
    const int32_t *extra_types;
    size_t n_extra;
    const float *extra_scores;         /* SentencePiece ("llama") vocabularies */
};

/* Byte tokens first (id = byte value: GPT-2 printable form, or "<0xXX>" for SentencePiece),
 * then spec->extra. */
static enum kvx_status tiny_tokenizer(const struct tiny_spec *sp, struct kvx_tokenizer **out,
                                      struct kvx_err *err)
{
    size_t n = 256 + sp->n_extra;
    bool spm = strcmp(sp->model, "llama") == 0;
    char (*bytes)[8] = calloc(256, sizeof *bytes);
    const char **toks = calloc(n, sizeof *toks);
    int32_t *types = calloc(n, sizeof *types);
    float *scores = calloc(n, sizeof *scores);
    for (int b = 0; b < 256; b++) {
        if (spm)
            snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        else
            kvx_utf8_encode(kvx_unicode_byte_to_cp((uint8_t)b), (uint8_t *)bytes[b]);
        toks[b] = bytes[b];
        types[b] = spm ? 6 : 1;
    }
    for (size_t i = 0; i < sp->n_extra; i++) {
        toks[256 + i] = sp->extra[i];
        types[256 + i] = sp->extra_types ? sp->extra_types[i] : 1;
        scores[256 + i] = sp->extra_scores ? sp->extra_scores[i] : 0;
    }
    struct kvx_gguf_writer *w = NULL;
    uint8_t *img = NULL;
    size_t size = 0;
    struct kvx_gguf *g = NULL;
    enum kvx_status st = kvx_gguf_writer_create(32, &w, err);
    if (!st) {
        kvx_gguf_writer_add_str(w, "tokenizer.ggml.model", sp->model);
        if (sp->pre)
            kvx_gguf_writer_add_str(w, "tokenizer.ggml.pre", sp->pre);
        kvx_gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", toks, n);
        kvx_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KVX_GGUF_INT32, types, n);
        if (sp->merges)
            kvx_gguf_writer_add_str_arr(w, "tokenizer.ggml.merges", sp->merges, sp->n_merges);
        if (sp->extra_scores)
            kvx_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KVX_GGUF_FLOAT32, scores, n);
        kvx_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 256);
        kvx_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 256);
        st = kvx_gguf_writer_finish(w, &img, &size, err);
    }
    if (!st)
        st = kvx_gguf_parse(img, size, &g, err);
    if (!st)
        st = kvx_tokenizer_create(g, out, err);
    kvx_gguf_close(g);
    free(img);     /* the tokenizer keeps its own copy: freeing the image must be safe */
    kvx_gguf_writer_destroy(w);
    free(bytes);
    free(toks);
    free(types);
    free(scores);
    return st;
}

static int64_t enc(const struct kvx_tokenizer *t, const char *s, bool special, int32_t *ids)
{
    int64_t n = -1;
    KVX_CHECK(kvx_tokenizer_encode(t, s, strlen(s), false, special, ids, 64, &n, NULL) == KVX_OK);
    return n;
}

static const char *const EXTRA[] = {"<s>", "ab", "bc", "aa", "abc", "<ctl>", "<usr>"};
static const int32_t EXTRA_TYPES[] = {3, 1, 1, 1, 1, 3, 4};
enum { T_BOS = 256, T_AB, T_BC, T_AA, T_ABC, T_CTL, T_USR };

KVX_TEST(tokenizer_tiny_merge_rank_order)
{
    static const char *const ab_first[] = {"a b", "b c", "a a", "ab c", "x y"};
    static const char *const bc_first[] = {"b c", "a b", "a a", "ab c"};
    struct tiny_spec sp = {"gpt2", "gpt-2", ab_first, 5, EXTRA, EXTRA_TYPES, 7, NULL};
    struct kvx_tokenizer *t = NULL, *u = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_OK);
    sp.merges = bc_first;
    sp.n_merges = 4;
    KVX_CHECK(tiny_tokenizer(&sp, &u, &err) == KVX_OK);
    if (!t || !u) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kvx_tokenizer_destroy(t);
        kvx_tokenizer_destroy(u);
        return;
    }
    int32_t ids[64];
    /* "a b" ranks first: ab, then "ab c" -> abc.  "b c" first: a + bc, and no "a bc". */
    KVX_CHECK(enc(t, "abc", false, ids) == 1 && ids[0] == T_ABC);
    KVX_CHECK(enc(u, "abc", false, ids) == 2 && ids[0] == 'a' && ids[1] == T_BC);
    /* Equal ranks: the leftmost pair merges first. */
    KVX_CHECK(enc(t, "aaa", false, ids) == 2 && ids[0] == T_AA && ids[1] == 'a');
    /* A merge whose result is not a token: llama.cpp emits the symbol's bytes. */
    KVX_CHECK(enc(t, "xy", false, ids) == 2 && ids[0] == 'x' && ids[1] == 'y');
    /* Words never merge across the pre-tokenizer's boundaries. */
    KVX_CHECK(enc(t, "ab ab", false, ids) == 3 && ids[0] == T_AB && ids[1] == ' ' &&
              ids[2] == T_AB);
    kvx_tokenizer_destroy(t);
    kvx_tokenizer_destroy(u);
}

KVX_TEST(tokenizer_tiny_special_and_pieces)
{
    static const char *const merges[] = {"a b"};
    struct tiny_spec sp = {"gpt2", "smollm", merges, 1, EXTRA, EXTRA_TYPES, 7, NULL};
    struct kvx_tokenizer *t = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_OK);
    if (!t) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    int32_t ids[64];
    /* Control tokens only with parse_special; user-defined tokens always. */
    KVX_CHECK(enc(t, "<ctl>", true, ids) == 1 && ids[0] == T_CTL);
    KVX_CHECK(enc(t, "<ctl>", false, ids) == 5 && ids[0] == '<');
    KVX_CHECK(enc(t, "x<usr>y", false, ids) == 3 && ids[1] == T_USR);
    /* Longest special text wins: "<s>" inside "<ctl>"-free text still splits. */
    KVX_CHECK(enc(t, "ab<s>ab", true, ids) == 3 && ids[0] == T_AB && ids[1] == T_BOS);
    /* Pieces: control rendered only when asked; byte-level text decoded to raw bytes. */
    char buf[16];
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(t, T_CTL, false, buf, sizeof buf), 0);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(t, T_CTL, true, buf, sizeof buf), 5);
    KVX_CHECK_EQ_INT(kvx_tokenizer_piece(t, T_USR, false, buf, sizeof buf), 5);
    for (int b = 0; b < 256; b++) {
        size_t n = kvx_tokenizer_piece(t, b, false, buf, sizeof buf);
        KVX_CHECK(n == 1 && (uint8_t)buf[0] == b);
    }
    /* smollm isolates digits: "12" is two words even though nothing merges anyway. */
    KVX_CHECK(enc(t, "12", false, ids) == 2 && ids[0] == '1' && ids[1] == '2');
    KVX_CHECK(kvx_tokenizer_is_eog(t, T_BOS));           /* eos_token_id = 256 */
    kvx_tokenizer_destroy(t);
}

/* Invalid UTF-8 never crashes; bytes that do not decode become U+FFFD, as in llama.cpp. */
KVX_TEST(tokenizer_tiny_invalid_utf8)
{
    struct tiny_spec sp = {"gpt2", "gpt-2", NULL, 0, EXTRA, EXTRA_TYPES, 7, NULL};
    static const char *const merges[] = {"a b"};
    sp.merges = merges;
    sp.n_merges = 1;
    struct kvx_tokenizer *t = NULL;
    KVX_CHECK(tiny_tokenizer(&sp, &t, NULL) == KVX_OK);
    if (!t)
        return;
    int32_t ids[64];
    uint8_t fffd[4];
    kvx_utf8_encode(KVX_UNICODE_REPLACEMENT, fffd);
    /* 0xFF -> EF BF BD: three byte tokens. */
    KVX_CHECK(enc(t, "\xff", false, ids) == 3 && ids[0] == fffd[0] && ids[2] == fffd[2]);
    /* F5..F7 leads (which abort llama.cpp) are one invalid byte each. */
    KVX_CHECK(enc(t, "\xf5\x80\x80\x80", false, ids) == 12);
    uint64_t x = 88172645463325252ull;
    char buf[48];
    int64_t n;
    for (int iter = 0; iter < 2000; iter++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (char)(x & 0xFF);
        }
        int32_t out[256];
        KVX_CHECK(kvx_tokenizer_encode(t, buf, sizeof buf, false, true, out, 256, &n, NULL) ==
                  KVX_OK);
    }
    kvx_tokenizer_destroy(t);
}

KVX_TEST(tokenizer_tiny_errors)
{
    static const char *const merges[] = {"a b"};
    struct tiny_spec sp = {"gpt2", "no-such-pre", merges, 1, EXTRA, EXTRA_TYPES, 7, NULL};
    struct kvx_tokenizer *t = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(strstr(err.msg, "no-such-pre") != NULL);
    KVX_CHECK(t == NULL);
    sp.pre = "gpt-2";
    sp.model = "bert";
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(strstr(err.msg, "bert") != NULL);
    sp.model = "gpt2";
    sp.merges = NULL;
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(strstr(err.msg, "merges") != NULL);
    static const char *const dup[] = {"ab", "ab"};
    sp.merges = merges;
    sp.extra = dup;
    sp.extra_types = NULL;
    sp.n_extra = 2;
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(strstr(err.msg, "duplicate") != NULL);
    sp.pre = NULL;                          /* no tokenizer.ggml.pre: llama.cpp's "default" */
    sp.extra = EXTRA;
    sp.extra_types = EXTRA_TYPES;
    sp.n_extra = 7;
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_OK);
    int32_t ids[64];
    if (t)
        KVX_CHECK(enc(t, "1234", false, ids) == 4);
    kvx_tokenizer_destroy(t);
    kvx_tokenizer_destroy(NULL);
}

/* SentencePiece: spaces as U+2581 with a leading one, highest-scoring merge first, bytes
 * that form no token as <0xXX> tokens, BOS added by default. */
KVX_TEST(tokenizer_tiny_sentencepiece)
{
    static const char *const toks[] = {"<s>", "\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"),
                                       "ab", "bb", "<ctl>"};
    static const int32_t types[] = {3, 1, 1, 1, 1, 1, 1, 3};
    static const float spa_first[] = {0, -1, -1, -1, -2, -3, -5, 0};
    static const float ab_first[] = {0, -1, -1, -1, -3, -2, -5, 0};
    enum { S_BOS = 256, S_SP, S_A, S_B, S_SPA, S_AB, S_BB, S_CTL };
    struct tiny_spec sp = {"llama", NULL, NULL, 0, toks, types, 8, spa_first};
    struct kvx_tokenizer *t = NULL, *u = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(tiny_tokenizer(&sp, &t, &err) == KVX_OK);
    sp.extra_scores = ab_first;
    KVX_CHECK(tiny_tokenizer(&sp, &u, &err) == KVX_OK);
    if (!t || !u) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kvx_tokenizer_destroy(t);
        kvx_tokenizer_destroy(u);
        return;
    }
    int32_t ids[64];
    int64_t n;
    /* "ab" is "\u2581ab": the higher score of "\u2581a" and "ab" decides. */
    KVX_CHECK(enc(t, "ab", false, ids) == 2 && ids[0] == S_SPA && ids[1] == S_B);
    KVX_CHECK(enc(u, "ab", false, ids) == 2 && ids[0] == S_SP && ids[1] == S_AB);
    /* A pair made stale by an earlier merge is skipped. */
    KVX_CHECK(enc(t, "abb", false, ids) == 2 && ids[0] == S_SPA && ids[1] == S_BB);
    /* Unknown characters fall back to byte tokens; a space prefix after special tokens. */
    KVX_CHECK(enc(t, "\xc3\xa9", false, ids) == 3 && ids[0] == S_SP && ids[1] == 0xC3 &&
              ids[2] == 0xA9);
    KVX_CHECK(enc(t, "<ctl>a", true, ids) == 2 && ids[0] == S_CTL && ids[1] == S_SPA);
    KVX_CHECK(kvx_tokenizer_add_bos(t));
    KVX_CHECK(kvx_tokenizer_encode(t, "a", 1, true, false, ids, 64, &n, NULL) == KVX_OK);
    KVX_CHECK(n == 2 && ids[0] == S_BOS && ids[1] == S_SPA);
    char buf[16];
    KVX_CHECK(kvx_tokenizer_piece(t, S_SPA, false, buf, sizeof buf) == 2 &&
              memcmp(buf, " a", 2) == 0);
    KVX_CHECK(kvx_tokenizer_piece(t, 0x41, false, buf, sizeof buf) == 1 && buf[0] == 'A');
    KVX_CHECK(kvx_tokenizer_piece(t, S_BOS, false, buf, sizeof buf) == 0);
    kvx_tokenizer_destroy(t);
    kvx_tokenizer_destroy(u);
}

/* A token with U+2581 inside ("a\u2581b") can join words, so the text must then be merged as
 * one sequence, not word by word. */
KVX_TEST(tokenizer_tiny_sentencepiece_cross_word)
{
    static const char *const toks[] = {"<s>", "\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"),
                                       ("\xe2\x96\x81" "b"), ("a\xe2\x96\x81" "b")};
    static const int32_t types[] = {3, 1, 1, 1, 1, 1, 1};
    static const float scores[] = {0, -5, -5, -5, -2, -1.5f, -1};
    enum { S_SP = 257, S_A_SP_B = 262 };
    struct tiny_spec sp = {"llama", NULL, NULL, 0, toks, types, 7, scores};
    struct kvx_tokenizer *t = NULL;
    KVX_CHECK(tiny_tokenizer(&sp, &t, NULL) == KVX_OK);
    int32_t ids[64];
    if (t)
        KVX_CHECK(enc(t, "a b", false, ids) == 2 && ids[0] == S_SP && ids[1] == S_A_SP_B);
    kvx_tokenizer_destroy(t);
}
