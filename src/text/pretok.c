/* text/pretok: pre-tokenizer table and split steps (see pretok.h).
 *
 * The GPT2 and LLAMA3 steps follow the hand-written matchers in llama.cpp's src/unicode.cpp
 * (unicode_regex_split_custom_gpt2/_llama3) branch by branch, including their edges: a
 * segment boundary from an earlier step acts as end of text (so `\s+(?!\S)` keeps the last
 * space only when a character follows inside the same segment), and the case-insensitive
 * contractions of LLAMA3 fold ASCII only (no other code point lowercases to s/t/m/d/r/e/v/l). */
#include "text/pretok.h"

#include <stdlib.h>
#include <string.h>

#include "text/unicode.h"

#define L_ KVX_UNICODE_LETTER
#define N_ KVX_UNICODE_NUMBER
#define S_ KVX_UNICODE_SPACE

#define RUN(fl, ascii, lo, hi) {KVX_PRETOK_STEP_RUN, (fl), (ascii), (lo), (hi)}
#define GPT2 {KVX_PRETOK_STEP_GPT2, 0, NULL, 0, 0}
#define LLAMA3(k) {KVX_PRETOK_STEP_LLAMA3, 0, NULL, 1, (k)}

/* Names and regex lists as in llama.cpp's llama_vocab::impl::load / llm_tokenizer_bpe. */
static const struct kvx_pretok PRETOKS[] = {
    {"default", 4,
     {RUN(KVX_UNICODE_PUNCT, "$+<=>^~|", 1, 0), GPT2, RUN(N_, NULL, 1, 0),
      RUN(0, "0123456789", 3, 3)},
     false, false},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|modern-bert|"
     "mpt|olmo|jais|trillion|granite-docling|exaone4",
     1, {GPT2}, false, false},
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva-7b|mellum2", 2,
     {RUN(N_, NULL, 1, 1), GPT2}, false, false},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2|jina-v5-nano", 1,
     {LLAMA3(3)}, true, true},
    {"dbrx|smaug-bpe", 1, {LLAMA3(3)}, false, false},
    {"qwen2|deepseek-r1-qwen|kormo|f2llmv2|stablelm2|megrez|hunyuan|solar-open", 1,
     {LLAMA3(1)}, false, false},
};

static bool names_contain(const char *names, const char *name, size_t len)
{
    const char *p = names;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && memcmp(p, name, len) == 0)
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

const struct kvx_pretok *kvx_pretok_find(const char *name, size_t len)
{
    if (len == 0) {
        name = "default";
        len = strlen(name);
    }
    for (size_t i = 0; i < sizeof PRETOKS / sizeof PRETOKS[0]; i++)
        if (names_contain(PRETOKS[i].names, name, len))
            return &PRETOKS[i];
    return NULL;
}

void kvx_pretok_segs_free(struct kvx_pretok_segs *s)
{
    if (!s)
        return;
    free(s->len);
    s->len = NULL;
    s->n = s->cap = 0;
}

static bool segs_push(struct kvx_pretok_segs *s, size_t len)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        size_t *p = realloc(s->len, cap * sizeof *p);
        if (!p)
            return false;
        s->len = p;
        s->cap = cap;
    }
    s->len[s->n++] = len;
    return true;
}

/* One input segment [ini, end) being split; positions past `end` read as "no character". */
struct seg {
    const uint32_t *cps;
    const uint8_t *fl;
    size_t ini, end, prev_end;
    struct kvx_pretok_segs *out;
    bool oom;
};

#define NO_CP 0xFFFFFFFFu

static uint32_t cp_at(const struct seg *s, size_t pos)
{
    return pos < s->end ? s->cps[pos] : NO_CP;
}

static unsigned fl_at(const struct seg *s, size_t pos)
{
    return pos < s->end ? s->fl[pos] : 0;
}

/* Close the piece that ends at `end` (empty pieces are dropped). */
static void emit(struct seg *s, size_t end)
{
    if (end > s->prev_end && !segs_push(s->out, end - s->prev_end))
        s->oom = true;
    s->prev_end = end;
}

/* Length of the contraction at pos ('s 't 'm 'd 're 've 'll), or 0; `fold` = ASCII case. */
static size_t contraction(const struct seg *s, size_t pos, bool fold)
{
    if (cp_at(s, pos) != '\'' || pos + 1 >= s->end)
        return 0;
    uint32_t a = cp_at(s, pos + 1);
    if (fold && a >= 'A' && a <= 'Z')
        a += 'a' - 'A';
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 >= s->end)
        return 0;
    uint32_t b = cp_at(s, pos + 2);
    if (fold && b >= 'A' && b <= 'Z')
        b += 'a' - 'A';
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* \s+(?!\S)|\s+ at pos; returns false when pos is not whitespace. */
static bool whitespace_run(struct seg *s, size_t *pos)
{
    size_t n = 0;
    while (fl_at(s, *pos + n) & S_)
        n++;
    if (n > 1 && *pos + n < s->end)
        *pos += n - 1;          /* leave the last space to prefix the next word */
    else if (n > 0)
        *pos += n;
    else
        return false;
    emit(s, *pos);
    return true;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(struct seg *s)
{
    size_t pos = s->ini;
    while (pos < s->end) {
        uint32_t cp = cp_at(s, pos);
        size_t c = contraction(s, pos, false);
        if (c) {
            pos += c;
            emit(s, pos);
            continue;
        }
        unsigned f2 = cp == ' ' ? fl_at(s, pos + 1) : fl_at(s, pos);
        unsigned want = (f2 & L_) ? L_ : (f2 & N_) ? N_ : 0;
        if (want) {                                         /*  ?\p{L}+ and  ?\p{N}+ */
            pos += cp == ' ';
            while (fl_at(s, pos) & want)
                pos++;
            emit(s, pos);
            continue;
        }
        if (f2 && !(f2 & (S_ | L_ | N_))) {                 /*  ?[^\s\p{L}\p{N}]+ */
            pos += cp == ' ';
            while (fl_at(s, pos) && !(fl_at(s, pos) & (S_ | L_ | N_)))
                pos++;
            emit(s, pos);
            continue;
        }
        if (!whitespace_run(s, &pos))
            emit(s, ++pos);
    }
}

/* \p{N}{1,k} */
static void llama3_number(struct seg *s, size_t *pos, uint32_t k)
{
    size_t ini = *pos;
    while (fl_at(s, *pos) & N_) {
        if (++*pos - ini >= k) {
            emit(s, *pos);
            ini = *pos;
        }
    }
    emit(s, *pos);
}

/* \s*[\r\n]+|\s+(?!\S)|\s+ ; returns false when pos is not whitespace. */
static bool llama3_whitespace(struct seg *s, size_t *pos)
{
    size_t n = 0, last_rn = 0;
    while (fl_at(s, *pos + n) & S_) {
        uint32_t c = cp_at(s, *pos + n);
        if (c == '\r' || c == '\n')
            last_rn = *pos + n + 1;
        n++;
    }
    if (last_rn > 0) {
        *pos = last_rn;
        emit(s, *pos);
        return true;
    }
    return whitespace_run(s, pos);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(struct seg *s, uint32_t k)
{
    size_t pos = s->ini;
    while (pos < s->end) {
        uint32_t cp = cp_at(s, pos);
        unsigned f = fl_at(s, pos);
        size_t c = contraction(s, pos, true);
        if (c) {
            pos += c;
            emit(s, pos);
            continue;
        }
        if (!(cp == '\r' || cp == '\n' || (f & N_)) && ((f & L_) || (fl_at(s, pos + 1) & L_))) {
            pos++;
            while (fl_at(s, pos) & L_)
                pos++;
            emit(s, pos);
            continue;
        }
        if (f & N_) {
            llama3_number(s, &pos, k);
            continue;
        }
        unsigned f2 = cp == ' ' ? fl_at(s, pos + 1) : f;
        if (f && !(f2 & (S_ | L_ | N_))) {     /* llama.cpp tests f, not f2, for "defined" */
            pos += cp == ' ';
            while (fl_at(s, pos) && !(fl_at(s, pos) & (S_ | L_ | N_)))
                pos++;
            while (cp_at(s, pos) == '\r' || cp_at(s, pos) == '\n')
                pos++;
            emit(s, pos);
            continue;
        }
        if (!llama3_whitespace(s, &pos))
            emit(s, ++pos);
    }
}

static bool in_class(const struct seg *s, const struct kvx_pretok_step *st, size_t pos)
{
    uint32_t cp = s->cps[pos];
    if (s->fl[pos] & st->flags)
        return true;
    return st->ascii && cp > 0 && cp < 128 && strchr(st->ascii, (int)cp) != NULL;
}

/* Isolate X{min,max} matches (max 0: X{min,}); the gaps between them stay segments. */
static void split_run(struct seg *s, const struct kvx_pretok_step *st)
{
    size_t pos = s->ini;
    while (pos < s->end) {
        if (!in_class(s, st, pos)) {
            pos++;
            continue;
        }
        size_t r = pos;
        while (r < s->end && in_class(s, st, r))
            r++;
        size_t left = r - pos;
        while (left >= st->min) {
            size_t take = st->max && left > st->max ? st->max : left;
            emit(s, pos);
            emit(s, pos + take);
            pos += take;
            left -= take;
        }
        pos = r;
    }
    emit(s, s->end);
}

static void split_segment(struct seg *s, const struct kvx_pretok_step *st)
{
    switch (st->kind) {
    case KVX_PRETOK_STEP_RUN: split_run(s, st); break;
    case KVX_PRETOK_STEP_GPT2: split_gpt2(s); break;
    case KVX_PRETOK_STEP_LLAMA3: split_llama3(s, st->max); break;
    }
}

enum kvx_status kvx_pretok_split(const struct kvx_pretok *p, const uint32_t *cps, size_t n,
                                 struct kvx_pretok_segs *out, struct kvx_pretok_segs *tmp)
{
    out->n = 0;
    if (n == 0)
        return KVX_OK;
    uint8_t *fl = malloc(n);
    if (!fl || !segs_push(out, n)) {
        free(fl);
        return KVX_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        fl[i] = (uint8_t)kvx_unicode_flags(cps[i]);
    for (int k = 0; k < p->n_steps; k++) {
        tmp->n = 0;
        struct seg s = {.cps = cps, .fl = fl, .out = tmp};
        size_t start = 0;
        for (size_t i = 0; i < out->n && !s.oom; i++) {
            s.ini = s.prev_end = start;
            s.end = start + out->len[i];
            split_segment(&s, &p->steps[k]);
            start = s.end;
        }
        if (s.oom) {
            free(fl);
            return KVX_ERR_NOMEM;
        }
        struct kvx_pretok_segs t = *out;
        *out = *tmp;
        *tmp = t;
    }
    free(fl);
    return KVX_OK;
}
