/* tests/json_mini: a small JSON reader for test fixtures.
 *
 * Parses a whole document into a tree that owns all its memory (kvx_json_free releases it).
 * Strings are decoded (escapes, \uXXXX with surrogate pairs) into NUL-terminated UTF-8 that
 * may also contain NUL bytes (use `len`); numbers are doubles.  Depth is limited to 256.
 * Not for untrusted input at scale: it is simple, not fast. */
#ifndef KVX_TESTS_JSON_MINI_H
#define KVX_TESTS_JSON_MINI_H

#include <stdbool.h>
#include <stddef.h>

enum kvx_json_type {
    KVX_JSON_NULL = 0,
    KVX_JSON_BOOL,
    KVX_JSON_NUMBER,
    KVX_JSON_STRING,
    KVX_JSON_ARRAY,
    KVX_JSON_OBJECT,
};

struct kvx_json {
    enum kvx_json_type type;
    bool b;                    /* BOOL */
    double num;                /* NUMBER */
    char *str;                 /* STRING */
    size_t len;                /* STRING: bytes; ARRAY/OBJECT: element count */
    struct kvx_json *items;    /* ARRAY elements, OBJECT values */
    char **keys;               /* OBJECT keys (NUL-terminated), parallel to items */
};

/* Parse text[0..len).  Returns NULL on error with a message (naming the byte offset) in
 * errbuf when it is not NULL. */
struct kvx_json *kvx_json_parse(const char *text, size_t len, char *errbuf, size_t errcap);
/* Read and parse a file. */
struct kvx_json *kvx_json_parse_file(const char *path, char *errbuf, size_t errcap);
void kvx_json_free(struct kvx_json *j);

/* Member `key` of an object, or NULL (also when j is not an object). */
const struct kvx_json *kvx_json_get(const struct kvx_json *j, const char *key);
/* Element i of an array (or value i of an object), or NULL. */
const struct kvx_json *kvx_json_at(const struct kvx_json *j, size_t i);
/* Convenience: the member's string / number / bool, or the fallback when absent or of
 * another type. */
const char *kvx_json_str(const struct kvx_json *j, const char *key, const char *fallback);
double kvx_json_num(const struct kvx_json *j, const char *key, double fallback);
bool kvx_json_bool(const struct kvx_json *j, const char *key, bool fallback);

#endif
