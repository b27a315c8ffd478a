/* tests/json_mini: recursive-descent JSON reader for fixtures (see json_mini.h). */
#include "json_mini.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 256

struct parser {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errcap;
    bool failed;
};

static bool fail(struct parser *p, const char *what)
{
    if (!p->failed && p->err && p->errcap)
        snprintf(p->err, p->errcap, "json: %s at byte %zu", what, p->pos);
    p->failed = true;
    return false;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && strchr(" \t\r\n", p->s[p->pos]) && p->s[p->pos])
        p->pos++;
}

static bool literal(struct parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "bad literal");
    p->pos += n;
    return true;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* \uXXXX (p->pos just after the 'u'), joining a surrogate pair when one follows. */
static bool unicode_escape(struct parser *p, char *o, size_t *n)
{
    if (p->len - p->pos < 4 || hex4(p->s + p->pos) < 0)
        return fail(p, "bad \\u escape");
    uint32_t cp = (uint32_t)hex4(p->s + p->pos);
    p->pos += 4;
    if (cp >= 0xD800 && cp < 0xDC00 && p->len - p->pos >= 6 && p->s[p->pos] == '\\' &&
        p->s[p->pos + 1] == 'u') {
        int lo = hex4(p->s + p->pos + 2);
        if (lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (uint32_t)(lo - 0xDC00);
            p->pos += 6;
        }
    }
    *n += put_utf8(o + *n, cp);
    return true;
}

/* A string; p->pos at the opening quote.  The output is never longer than the input. */
static char *parse_string(struct parser *p, size_t *out_len)
{
    size_t start = ++p->pos, n = 0, end = start;
    while (end < p->len && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    char *o = malloc(end - start + 1);
    if (!o) {
        fail(p, "out of memory");
        return NULL;
    }
    while (p->pos < p->len && p->s[p->pos] != '"') {
        char c = p->s[p->pos++];
        if (c != '\\') {
            o[n++] = c;
            continue;
        }
        if (p->pos >= p->len)
            break;
        char e = p->s[p->pos++];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = strchr(from, e);
        if (e == 'u') {
            if (!unicode_escape(p, o, &n))
                break;
        } else if (k && e) {
            o[n++] = to[k - from];
        } else {
            fail(p, "bad escape");
            break;
        }
    }
    if (p->failed || p->pos >= p->len) {
        fail(p, "unterminated string");
        free(o);
        return NULL;
    }
    p->pos++;
    o[n] = '\0';
    *out_len = n;
    return o;
}

static bool parse_value(struct parser *p, struct kvx_json *v, int depth);

static bool push_item(struct parser *p, struct kvx_json *v, size_t *cap, bool with_key)
{
    if (v->len < *cap)
        return true;
    size_t c = *cap ? *cap * 2 : 8;
    struct kvx_json *items = realloc(v->items, c * sizeof *items);
    if (items)
        v->items = items;
    char **keys = with_key && items ? realloc(v->keys, c * sizeof *keys) : NULL;
    if (with_key && keys)
        v->keys = keys;
    if (!items || (with_key && !keys))
        return fail(p, "out of memory");
    *cap = c;
    return true;
}

/* Array or object; p->pos at '[' or '{'. */
static bool parse_container(struct parser *p, struct kvx_json *v, int depth, bool object)
{
    char close = object ? '}' : ']';
    size_t cap = 0;
    v->type = object ? KVX_JSON_OBJECT : KVX_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return true;
    }
    for (;;) {
        if (!push_item(p, v, &cap, object))
            return false;
        struct kvx_json *item = &v->items[v->len];
        memset(item, 0, sizeof *item);
        if (object) {
            size_t kl;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail(p, "expected key");
            v->keys[v->len] = parse_string(p, &kl);
            if (!v->keys[v->len])
                return false;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos++] != ':') {
                free(v->keys[v->len]);
                return fail(p, "expected ':'");
            }
        }
        v->len++;
        if (!parse_value(p, item, depth + 1))
            return false;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return true;
        }
        return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool parse_number(struct parser *p, struct kvx_json *v)
{
    char buf[64];
    size_t n = 0;
    while (p->pos < p->len && n + 1 < sizeof buf && strchr("+-0123456789.eE", p->s[p->pos]) &&
           p->s[p->pos])
        buf[n++] = p->s[p->pos++];
    buf[n] = '\0';
    char *end;
    v->type = KVX_JSON_NUMBER;
    v->num = strtod(buf, &end);
    if (n == 0 || *end)
        return fail(p, "bad number");
    return true;
}

static bool parse_value(struct parser *p, struct kvx_json *v, int depth)
{
    if (depth > MAX_DEPTH)
        return fail(p, "nested too deep");
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "unexpected end");
    switch (p->s[p->pos]) {
    case '{': return parse_container(p, v, depth, true);
    case '[': return parse_container(p, v, depth, false);
    case '"':
        v->type = KVX_JSON_STRING;
        v->str = parse_string(p, &v->len);
        return v->str != NULL;
    case 't': v->type = KVX_JSON_BOOL; v->b = true; return literal(p, "true");
    case 'f': v->type = KVX_JSON_BOOL; v->b = false; return literal(p, "false");
    case 'n': v->type = KVX_JSON_NULL; return literal(p, "null");
    default: return parse_number(p, v);
    }
}

static void free_value(struct kvx_json *v)
{
    free(v->str);
    for (size_t i = 0; i < v->len && v->items; i++) {
        free_value(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void kvx_json_free(struct kvx_json *j)
{
    if (!j)
        return;
    free_value(j);
    free(j);
}

struct kvx_json *kvx_json_parse(const char *text, size_t len, char *errbuf, size_t errcap)
{
    struct parser p = {text, len, 0, errbuf, errcap, false};
    struct kvx_json *j = calloc(1, sizeof *j);
    if (!j) {
        fail(&p, "out of memory");
        return NULL;
    }
    if (parse_value(&p, j, 0)) {
        skip_ws(&p);
        if (p.pos != p.len)
            fail(&p, "trailing characters");
    }
    if (p.failed) {
        kvx_json_free(j);
        return NULL;
    }
    return j;
}

struct kvx_json *kvx_json_parse_file(const char *path, char *errbuf, size_t errcap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errbuf && errcap)
            snprintf(errbuf, errcap, "json: cannot open %s", path);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (!b)
                break;
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    struct kvx_json *j = buf ? kvx_json_parse(buf, n, errbuf, errcap) : NULL;
    free(buf);
    return j;
}

const struct kvx_json *kvx_json_get(const struct kvx_json *j, const char *key)
{
    if (!j || j->type != KVX_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < j->len; i++)
        if (strcmp(j->keys[i], key) == 0)
            return &j->items[i];
    return NULL;
}

const struct kvx_json *kvx_json_at(const struct kvx_json *j, size_t i)
{
    if (!j || (j->type != KVX_JSON_ARRAY && j->type != KVX_JSON_OBJECT) || i >= j->len)
        return NULL;
    return &j->items[i];
}

const char *kvx_json_str(const struct kvx_json *j, const char *key, const char *fallback)
{
    const struct kvx_json *v = kvx_json_get(j, key);
    return v && v->type == KVX_JSON_STRING ? v->str : fallback;
}

double kvx_json_num(const struct kvx_json *j, const char *key, double fallback)
{
    const struct kvx_json *v = kvx_json_get(j, key);
    return v && v->type == KVX_JSON_NUMBER ? v->num : fallback;
}

bool kvx_json_bool(const struct kvx_json *j, const char *key, bool fallback)
{
    const struct kvx_json *v = kvx_json_get(j, key);
    return v && v->type == KVX_JSON_BOOL ? v->b : fallback;
}
