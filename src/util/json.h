/* util/json: a small strict JSON reader (RFC 8259) for the files that come with safetensors
 * models: the safetensors header, model.safetensors.index.json and config.json.
 *
 * Why in-tree rather than a library (cJSON is packaged by Debian): those files come from
 * outside and feed byte offsets, so the reader must be exact and strict where general-purpose
 * parsers are lenient — integers are kept exactly as int64 (a double loses offsets past 2^53),
 * duplicate object keys are an error (a header naming a tensor twice is malformed, not "last
 * one wins"), object keys may not hold U+0000, strings must be valid UTF-8, nesting is
 * bounded, and every error names the byte offset.  It is one file of plain C, fuzzed through fuzz/fuzz_safetensors.c, and keeps the
 * engine's dependencies at libc, libm and pthreads.
 *
 * A parsed document is a tree of struct kvx_jv nodes that owns all its memory (one
 * kvx_jv_free releases it).  Strings are decoded to NUL-terminated UTF-8 (a string holding
 * "\u0000" keeps `len` exact).  Numbers are doubles; `is_int` marks an integer literal (no
 * fraction or exponent) that fits int64, whose exact value is in `i`. */
#ifndef KVX_UTIL_JSON_H
#define KVX_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

enum kvx_jv_type {
    KVX_JV_NULL = 0,
    KVX_JV_BOOL,
    KVX_JV_NUMBER,
    KVX_JV_STRING,
    KVX_JV_ARRAY,
    KVX_JV_OBJECT,
};

struct kvx_jv {
    enum kvx_jv_type type;
    bool b;                    /* BOOL */
    bool is_int;               /* NUMBER: an integer literal within int64 */
    int64_t i;                 /* NUMBER with is_int */
    double num;                /* NUMBER */
    char *str;                 /* STRING */
    size_t len;                /* STRING: bytes; ARRAY/OBJECT: members */
    struct kvx_jv *items;      /* ARRAY elements, OBJECT values */
    char **keys;               /* OBJECT keys, parallel to items, unique */
    size_t offset;             /* byte offset of the value in the text (for messages) */
};

/* Nesting deeper than this is refused. */
#define KVX_JV_MAX_DEPTH 64

/* Parse text[0..len) (the whole text must be one value, surrounded by whitespace only).
 * KVX_ERR_FORMAT with the byte offset on malformed input, KVX_ERR_NOMEM. */
enum kvx_status kvx_jv_parse(const char *text, size_t len, struct kvx_jv **out,
                             struct kvx_err *err);
/* Read and parse a whole file (at most KVX_JV_MAX_FILE bytes); errors start with the path. */
#define KVX_JV_MAX_FILE ((size_t)256 << 20)
enum kvx_status kvx_jv_parse_file(const char *path, struct kvx_jv **out, struct kvx_err *err);
void kvx_jv_free(struct kvx_jv *v);

/* Member `key` of an object, NULL when absent or when v is not an object. */
const struct kvx_jv *kvx_jv_get(const struct kvx_jv *v, const char *key);
const char *kvx_jv_type_name(enum kvx_jv_type t);

#endif
