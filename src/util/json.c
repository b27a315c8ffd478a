/* util/json: strict recursive-descent JSON reader (see json.h for what "strict" means). */
#include "util/json.h"

#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

struct jp {
    const char *s;
    size_t n, pos;
    struct kvx_err *err;
};

static enum kvx_status jp_fail(struct jp *p, size_t at, const char *what)
{
    return kvx_err_set(p->err, KVX_ERR_FORMAT, "JSON: %s at byte %zu", what, at);
}

static void skip_ws(struct jp *p)
{
    while (p->pos < p->n) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static bool match_word(struct jp *p, const char *w)
{
    size_t l = strlen(w);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, w, l) != 0)
        return false;
    p->pos += l;
    return true;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p->pos (after "\u"); -1 when malformed. */
static long read_hex4(struct jp *p)
{
    if (p->n - p->pos < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_val(p->s[p->pos + (size_t)i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    p->pos += 4;
    return v;
}

static size_t put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
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

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 when invalid (overlong,
 * surrogate, above U+10FFFF, truncated). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t l;
    unsigned long cp, min;
    if ((s[0] & 0xE0) == 0xC0) { l = 2; cp = s[0] & 0x1F; min = 0x80; }
    else if ((s[0] & 0xF0) == 0xE0) { l = 3; cp = s[0] & 0x0F; min = 0x800; }
    else if ((s[0] & 0xF8) == 0xF0) { l = 4; cp = s[0] & 0x07; min = 0x10000; }
    else return 0;
    if (n < l) return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return l;
}

/* A string at p->pos (which is at the opening quote) into a malloc'd NUL-terminated buffer.
 * The decoded form is never longer than the source, so one allocation of the raw span is
 * enough (a 6-byte "\uXXXX" gives at most 3 bytes, a 12-byte pair 4). */
static enum kvx_status parse_string(struct jp *p, char **out, size_t *out_len)
{
    const size_t start = p->pos++;
    size_t end = p->pos;
    while (end < p->n && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->n)
        return jp_fail(p, start, "unterminated string");
    char *o = malloc(end - p->pos + 1);
    if (!o)
        return kvx_err_set(p->err, KVX_ERR_NOMEM, "out of memory");
    size_t k = 0;
    while (p->pos < end) {
        const unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(o);
            return jp_fail(p, p->pos, "control character in string");
        }
        if (c != '\\') {
            size_t l = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
            if (!l) {
                free(o);
                return jp_fail(p, p->pos, "invalid UTF-8 in string");
            }
            memcpy(o + k, p->s + p->pos, l);
            k += l;
            p->pos += l;
            continue;
        }
        const size_t esc = p->pos++;
        const char e = p->s[p->pos++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            o[k++] = map[simple - "\"\\/bfnrt"];
            continue;
        }
        long cp = e == 'u' ? read_hex4(p) : -1;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = -1;
            if (p->pos + 1 < end && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                p->pos += 2;
                lo = read_hex4(p);
            }
            cp = lo >= 0xDC00 && lo <= 0xDFFF ? 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                                              : -1;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = -1;
        }
        if (cp < 0 || p->pos > end) {
            free(o);
            return jp_fail(p, esc, "bad escape in string");
        }
        k += put_utf8(o + k, (unsigned long)cp);
    }
    o[k] = '\0';
    p->pos = end + 1;
    *out = o;
    *out_len = k;
    return KVX_OK;
}

static enum kvx_status parse_number(struct jp *p, struct kvx_jv *v)
{
    const size_t start = p->pos;
    size_t q = p->pos;
    bool neg = false, integral = true;
    if (q < p->n && p->s[q] == '-') {
        neg = true;
        q++;
    }
    if (q >= p->n || p->s[q] < '0' || p->s[q] > '9')
        return jp_fail(p, start, "bad number");
    /* exact integer part, with overflow detection (as a magnitude up to 2^63) */
    uint64_t mag = 0;
    bool fits = true;
    if (p->s[q] == '0') {
        q++;
        if (q < p->n && p->s[q] >= '0' && p->s[q] <= '9')
            return jp_fail(p, start, "leading zero in number");
    } else {
        while (q < p->n && p->s[q] >= '0' && p->s[q] <= '9') {
            unsigned d = (unsigned)(p->s[q++] - '0');
            if (mag > (UINT64_MAX - d) / 10)
                fits = false;
            else
                mag = mag * 10 + d;
        }
    }
    if (q < p->n && p->s[q] == '.') {
        integral = false;
        if (++q >= p->n || p->s[q] < '0' || p->s[q] > '9')
            return jp_fail(p, start, "bad fraction in number");
        while (q < p->n && p->s[q] >= '0' && p->s[q] <= '9')
            q++;
    }
    if (q < p->n && (p->s[q] == 'e' || p->s[q] == 'E')) {
        integral = false;
        q++;
        if (q < p->n && (p->s[q] == '+' || p->s[q] == '-'))
            q++;
        if (q >= p->n || p->s[q] < '0' || p->s[q] > '9')
            return jp_fail(p, start, "bad exponent in number");
        while (q < p->n && p->s[q] >= '0' && p->s[q] <= '9')
            q++;
    }
    char buf[64];
    const size_t l = q - start;
    char *tmp = l < sizeof buf ? buf : malloc(l + 1);
    if (!tmp)
        return kvx_err_set(p->err, KVX_ERR_NOMEM, "out of memory");
    memcpy(tmp, p->s + start, l);
    tmp[l] = '\0';
    /* strtod reads the locale's decimal point: give it that one (JSON always writes '.') */
    const char *dp = localeconv()->decimal_point;
    char *dot = strchr(tmp, '.');
    if (dot && dp && dp[0] && dp[0] != '.' && !dp[1])
        *dot = dp[0];
    v->num = strtod(tmp, NULL);
    if (tmp != buf)
        free(tmp);
    v->type = KVX_JV_NUMBER;
    if (integral && fits && mag <= (uint64_t)INT64_MAX + (neg ? 1u : 0u)) {
        v->is_int = true;
        v->i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    }
    p->pos = q;
    return KVX_OK;
}

static int cmp_key_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys: sort a copy of the key pointers and compare neighbours. */
static enum kvx_status check_unique_keys(struct jp *p, const struct kvx_jv *v)
{
    if (v->len < 2)
        return KVX_OK;
    char **k = malloc(v->len * sizeof *k);
    if (!k)
        return kvx_err_set(p->err, KVX_ERR_NOMEM, "out of memory");
    memcpy(k, v->keys, v->len * sizeof *k);
    qsort(k, v->len, sizeof *k, cmp_key_ptr);
    enum kvx_status st = KVX_OK;
    for (size_t i = 1; i < v->len && st == KVX_OK; i++)
        if (strcmp(k[i - 1], k[i]) == 0)
            st = kvx_err_set(p->err, KVX_ERR_FORMAT, "JSON: duplicate key \"%.100s\" in the "
                             "object at byte %zu", k[i], v->offset);
    free(k);
    return st;
}

static enum kvx_status parse_value(struct jp *p, struct kvx_jv *v, int depth);

/* Grow an array/object's member storage to hold one more. */
static enum kvx_status grow(struct jp *p, struct kvx_jv *v, size_t *cap, bool with_keys)
{
    if (v->len < *cap)
        return KVX_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    struct kvx_jv *it = realloc(v->items, nc * sizeof *it);
    if (!it)
        return kvx_err_set(p->err, KVX_ERR_NOMEM, "out of memory");
    v->items = it;
    if (with_keys) {
        char **k = realloc(v->keys, nc * sizeof *k);
        if (!k)
            return kvx_err_set(p->err, KVX_ERR_NOMEM, "out of memory");
        v->keys = k;
    }
    *cap = nc;
    return KVX_OK;
}

static enum kvx_status parse_container(struct jp *p, struct kvx_jv *v, int depth)
{
    const bool obj = p->s[p->pos] == '{';
    const char close = obj ? '}' : ']';
    v->type = obj ? KVX_JV_OBJECT : KVX_JV_ARRAY;
    if (depth >= KVX_JV_MAX_DEPTH)
        return jp_fail(p, p->pos, "nesting too deep");
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == close) {
        p->pos++;
        return KVX_OK;
    }
    for (;;) {
        enum kvx_status st = grow(p, v, &cap, obj);
        if (st != KVX_OK)
            return st;
        skip_ws(p);
        if (obj) {
            size_t klen;
            if (p->pos >= p->n || p->s[p->pos] != '"')
                return jp_fail(p, p->pos, "expected a string key");
            const size_t kpos = p->pos;
            if ((st = parse_string(p, &v->keys[v->len], &klen)) != KVX_OK)
                return st;
            memset(&v->items[v->len], 0, sizeof v->items[0]);
            v->len++; /* owns the key now; the value is a NULL until parsed */
            if (strlen(v->keys[v->len - 1]) != klen)
                return jp_fail(p, kpos, "object key holds U+0000");
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':')
                return jp_fail(p, p->pos, "expected ':'");
            p->pos++;
        } else {
            memset(&v->items[v->len], 0, sizeof v->items[0]);
            v->len++;
        }
        if ((st = parse_value(p, &v->items[v->len - 1], depth + 1)) != KVX_OK)
            return st;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->n && p->s[p->pos] == close) {
            p->pos++;
            return obj ? check_unique_keys(p, v) : KVX_OK;
        }
        return jp_fail(p, p->pos, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static enum kvx_status parse_value(struct jp *p, struct kvx_jv *v, int depth)
{
    skip_ws(p);
    v->offset = p->pos;
    if (p->pos >= p->n)
        return jp_fail(p, p->pos, "unexpected end of text");
    const char c = p->s[p->pos];
    if (c == '{' || c == '[')
        return parse_container(p, v, depth);
    if (c == '"') {
        v->type = KVX_JV_STRING;
        return parse_string(p, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(p, v);
    if (match_word(p, "true") || match_word(p, "false")) {
        v->type = KVX_JV_BOOL;
        v->b = c == 't';
        return KVX_OK;
    }
    if (match_word(p, "null"))
        return KVX_OK;
    return jp_fail(p, p->pos, "unexpected character");
}

static void free_members(struct kvx_jv *v)
{
    if (v->type == KVX_JV_STRING)
        free(v->str);
    if (v->type == KVX_JV_ARRAY || v->type == KVX_JV_OBJECT) {
        for (size_t i = 0; i < v->len; i++) {
            free_members(&v->items[i]);
            if (v->keys)
                free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

enum kvx_status kvx_jv_parse(const char *text, size_t len, struct kvx_jv **out,
                             struct kvx_err *err)
{
    *out = NULL;
    struct kvx_jv *v = calloc(1, sizeof *v);
    if (!v)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    struct jp p = {.s = text, .n = len, .pos = 0, .err = err};
    enum kvx_status st = parse_value(&p, v, 0);
    if (st == KVX_OK) {
        skip_ws(&p);
        if (p.pos != p.n)
            st = jp_fail(&p, p.pos, "text after the value");
    }
    if (st != KVX_OK) {
        kvx_jv_free(v);
        return st;
    }
    *out = v;
    return KVX_OK;
}

enum kvx_status kvx_jv_parse_file(const char *path, struct kvx_jv **out, struct kvx_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kvx_err_set(err, errno == ENOENT ? KVX_ERR_NOT_FOUND : KVX_ERR_IO,
                           "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 14, n = 0;
    char *buf = malloc(cap);
    enum kvx_status st = KVX_OK;
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= KVX_JV_MAX_FILE) {
            st = kvx_err_set(err, KVX_ERR_FORMAT, "'%s' is larger than %zu bytes", path,
                             KVX_JV_MAX_FILE);
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (st == KVX_OK && !buf)
        st = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory reading '%s'", path);
    else if (st == KVX_OK && ferror(f))
        st = kvx_err_set(err, KVX_ERR_IO, "error reading '%s'", path);
    fclose(f);
    if (st == KVX_OK && (st = kvx_jv_parse(buf, n, out, err)) != KVX_OK)
        kvx_err_prefix(err, "%s", path);
    free(buf);
    return st;
}

void kvx_jv_free(struct kvx_jv *v)
{
    if (!v)
        return;
    free_members(v);
    free(v);
}

const struct kvx_jv *kvx_jv_get(const struct kvx_jv *v, const char *key)
{
    if (!v || v->type != KVX_JV_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->len; i++)
        if (strcmp(v->keys[i], key) == 0)
            return &v->items[i];
    return NULL;
}

const char *kvx_jv_type_name(enum kvx_jv_type t)
{
    static const char *const names[] = {"null", "bool", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}
