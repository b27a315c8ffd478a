/* tests/test_gguf: the GGUF reader and writer (io/gguf.c, io/gguf_write.c).
 *
 * Round trips of every value type (nested and string arrays included) and of tensors of several
 * formats; a v2 file made byte by byte; hostile files (every truncation of a valid file, lying
 * counts and lengths, bad alignment, tensors out of range, unsupported types, overflowing
 * shapes, duplicates, deep nesting), each checked for the status and for a message that names
 * the offending key or tensor; the real model when it is present; and the fuzz seeds.
 *
 * KVX_GGUF_WRITE_SEEDS=<dir> makes gguf_fuzz_seeds also write the seed files into <dir>
 * (they live in fuzz/seeds/fuzz_gguf/). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/gguf.h"
#include "io/gguf_write.h"
#include "ops/dtype.h"
#include "test.h"

/* ---------------------------------------------------------------------------------------------
 * Helpers */

static void check_msg_(const char *file, int line, const struct kvx_err *err, const char *needle)
{
    if (!strstr(err->msg, needle))
        kvx_test_fail(file, line, "message \"%s\" lacks \"%s\"", err->msg, needle);
}
#define CHECK_MSG(err, needle) check_msg_(__FILE__, __LINE__, &(err), needle)

/* Parses a private copy of exactly `size` bytes (so ASan sees any over-read) and checks the
 * status, that nothing is returned on failure, and that the message names n1 and n2. */
static void expect_parse_(const char *file, int line, const uint8_t *img, size_t size,
                          enum kvx_status want, const char *n1, const char *n2)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (size)
        memcpy(buf, img, size);
    struct kvx_err err = {0};
    struct kvx_gguf *g = (struct kvx_gguf *)&err; /* must be overwritten */
    enum kvx_status st = kvx_gguf_parse(buf, size, &g, &err);
    if (st != want)
        kvx_test_fail(file, line, "status '%s', expected '%s' (message: %s)", kvx_status_str(st),
                      kvx_status_str(want), err.msg);
    if (st != KVX_OK && (g != NULL || err.status != st || err.msg[0] == '\0'))
        kvx_test_fail(file, line, "failed parse left out=%p, err.status=%d, msg=\"%s\"",
                      (void *)g, (int)err.status, err.msg);
    if (n1 && !strstr(err.msg, n1))
        kvx_test_fail(file, line, "message \"%s\" lacks \"%s\"", err.msg, n1);
    if (n2 && !strstr(err.msg, n2))
        kvx_test_fail(file, line, "message \"%s\" lacks \"%s\"", err.msg, n2);
    if (st == KVX_OK)
        kvx_gguf_close(g);
    free(buf);
}
#define EXPECT_PARSE(img, size, want, n1, n2) \
    expect_parse_(__FILE__, __LINE__, img, size, want, n1, n2)

static struct kvx_gguf_writer *new_writer(uint32_t alignment)
{
    struct kvx_gguf_writer *w = NULL;
    struct kvx_err err = {0};
    if (kvx_gguf_writer_create(alignment, &w, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "writer_create: %s", err.msg);
    return w;
}

/* Finishes and destroys the writer. */
static uint8_t *finish(struct kvx_gguf_writer *w, size_t *size)
{
    uint8_t *img = NULL;
    struct kvx_err err = {0};
    if (kvx_gguf_writer_finish(w, &img, size, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "writer_finish: %s", err.msg);
    kvx_gguf_writer_destroy(w);
    return img;
}

static struct kvx_gguf *parse_ok(const uint8_t *img, size_t size)
{
    struct kvx_gguf *g = NULL;
    struct kvx_err err = {0};
    if (kvx_gguf_parse(img, size, &g, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "parse: %s", err.msg);
    return g;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Offset just after the length-prefixed string `s` in the image (its first occurrence). */
static size_t after_str(const uint8_t *img, size_t size, const char *s)
{
    uint64_t len = strlen(s);
    for (size_t i = 0; i + 8 + len <= size; i++)
        if (memcmp(img + i, &len, 8) == 0 && memcmp(img + i + 8, s, len) == 0)
            return i + 8 + (size_t)len;
    kvx_test_fail(__FILE__, __LINE__, "string '%s' not found in the image", s);
    return 0;
}

/* Offsets of a tensor info's fields: n_dims, ne[0], type, data offset. */
struct info_at {
    size_t n_dims, ne, type, offset;
};
static struct info_at tensor_info_at(const uint8_t *img, size_t size, const char *name)
{
    size_t p = after_str(img, size, name);
    uint32_t nd;
    memcpy(&nd, img + p, 4);
    return (struct info_at){p, p + 4, p + 4 + 8 * nd, p + 8 + 8 * nd};
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + seed * 31 + 1);
}

static void add_pattern_tensor(struct kvx_gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const int64_t *ne, unsigned seed)
{
    size_t row, nbytes;
    int64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++)
        rows *= ne[d];
    KVX_CHECK(kvx_dtype_row_bytes(type, ne[0], &row));
    nbytes = row * (size_t)rows;
    uint8_t *data = malloc(nbytes);
    fill_pattern(data, nbytes, seed);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_tensor(w, name, type, n_dims, ne, data, nbytes), KVX_OK);
    free(data);
}

static struct kvx_gguf_value arr_value(enum kvx_gguf_type elem, uint64_t n, const void *raw,
                                       struct kvx_gguf_str *strs, struct kvx_gguf_value *items)
{
    struct kvx_gguf_value v = {.type = KVX_GGUF_ARRAY};
    v.v.arr.elem = elem;
    v.v.arr.n = n;
    v.v.arr.raw = raw;
    v.v.arr.strs = strs;
    v.v.arr.items = items;
    return v;
}

/* The array at `key` with n elements of type elem, or NULL after reporting a failure. */
static const struct kvx_gguf_value *want_arr_(const char *file, int line,
                                              const struct kvx_gguf *g, const char *key,
                                              enum kvx_gguf_type elem, uint64_t n)
{
    const struct kvx_gguf_value *a = NULL;
    struct kvx_err err = {0};
    if (kvx_gguf_get_arr(g, key, elem, &a, &err) != KVX_OK) {
        kvx_test_fail(file, line, "%s", err.msg);
        return NULL;
    }
    if (a->v.arr.n != n) {
        kvx_test_fail(file, line, "key '%s': %llu elements, expected %llu", key,
                      (unsigned long long)a->v.arr.n, (unsigned long long)n);
        return NULL;
    }
    return a;
}
#define want_arr(g, key, elem, n) want_arr_(__FILE__, __LINE__, g, key, elem, n)

/* The value of `key`, or a zero value after reporting that it is missing. */
static struct kvx_gguf_value find_val_(const char *file, int line, const struct kvx_gguf *g,
                                       const char *key)
{
    const struct kvx_gguf_kv *kv = kvx_gguf_find(g, key);
    if (!kv) {
        kvx_test_fail(file, line, "key '%s' not found", key);
        return (struct kvx_gguf_value){.type = KVX_GGUF_TYPE_COUNT};
    }
    return kv->val;
}
#define find_val(g, key) find_val_(__FILE__, __LINE__, g, key)

/* ---------------------------------------------------------------------------------------------
 * Images used by several tests (and written as fuzz seeds) */

/* One key of every scalar type, named after it. */
static uint8_t *scalars_image(size_t *size)
{
    struct kvx_gguf_writer *w = new_writer(32);
    struct kvx_gguf_value v[] = {
        {.type = KVX_GGUF_UINT8, .v.u64 = 200},
        {.type = KVX_GGUF_INT8, .v.i64 = -100},
        {.type = KVX_GGUF_UINT16, .v.u64 = 60000},
        {.type = KVX_GGUF_INT16, .v.i64 = -30000},
        {.type = KVX_GGUF_UINT32, .v.u64 = 4000000000u},
        {.type = KVX_GGUF_INT32, .v.i64 = -2000000000},
        {.type = KVX_GGUF_FLOAT32, .v.f64 = 1.5},
        {.type = KVX_GGUF_BOOL, .v.b = true},
        {.type = KVX_GGUF_STRING, .v.str = {6, "h\xc3\xa9llo"}},
        {.type = KVX_GGUF_UINT64, .v.u64 = (1ull << 63) + 5},
        {.type = KVX_GGUF_INT64, .v.i64 = -(1ll << 62)},
        {.type = KVX_GGUF_FLOAT64, .v.f64 = 3.141592653589793},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, kvx_gguf_type_name(v[i].type), &v[i]),
                         KVX_OK);
    return finish(w, size);
}

/* Scalar arrays of every type ("arr.<type>", 3 elements), string arrays and nested arrays. */
static uint8_t *arrays_image(size_t *size)
{
    struct kvx_gguf_writer *w = new_writer(32);
    uint8_t u8[] = {0, 7, 255};
    int8_t i8[] = {-128, 0, 127};
    uint16_t u16[] = {1, 2, 65535};
    int16_t i16[] = {-32768, 5, 32767};
    uint32_t u32[] = {0, 123456, 4294967295u};
    int32_t i32[] = {-1, 0, 2147483647};
    float f32[] = {0.5f, -2.25f, 1e30f};
    uint8_t bools[] = {1, 0, 1};
    uint64_t u64[] = {0, 1ull << 40, UINT64_MAX};
    int64_t i64[] = {INT64_MIN, -1, INT64_MAX};
    double f64[] = {0.1, -1e300, 2.5};
    const void *raws[] = {u8, i8, u16, i16, u32, i32, f32, bools, NULL, NULL, u64, i64, f64};
    for (int t = 0; t < KVX_GGUF_TYPE_COUNT; t++) {
        if (!raws[t])
            continue;
        char key[32];
        snprintf(key, sizeof key, "arr.%s", kvx_gguf_type_name((enum kvx_gguf_type)t));
        KVX_CHECK_EQ_INT(kvx_gguf_writer_add_arr(w, key, (enum kvx_gguf_type)t, raws[t], 3),
                         KVX_OK);
    }
    static const char *const toks[] = {"", "a", "hello world", "\xe2\x96\x81x"};
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_str_arr(w, "arr.strings", toks, 4), KVX_OK);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_str_arr(w, "arr.empty", NULL, 0), KVX_OK);
    /* [[1, 2, 3], ["p", "q"], []] and [[[7]]] */
    int32_t ints[] = {1, 2, 3}, seven = 7;
    struct kvx_gguf_str pq[] = {{1, "p"}, {1, "q"}};
    struct kvx_gguf_value inner[3] = {
        arr_value(KVX_GGUF_INT32, 3, ints, NULL, NULL),
        arr_value(KVX_GGUF_STRING, 2, NULL, pq, NULL),
        arr_value(KVX_GGUF_FLOAT64, 0, NULL, NULL, NULL),
    };
    struct kvx_gguf_value mixed = arr_value(KVX_GGUF_ARRAY, 3, NULL, NULL, inner);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, "arr.nested", &mixed), KVX_OK);
    struct kvx_gguf_value l3 = arr_value(KVX_GGUF_INT32, 1, &seven, NULL, NULL);
    struct kvx_gguf_value l2 = arr_value(KVX_GGUF_ARRAY, 1, NULL, NULL, &l3);
    struct kvx_gguf_value l1 = arr_value(KVX_GGUF_ARRAY, 1, NULL, NULL, &l2);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, "arr.deep", &l1), KVX_OK);
    return finish(w, size);
}

/* A small model-like file: a few keys, a token list and three tensors. */
static uint8_t *sample_image(size_t *size)
{
    struct kvx_gguf_writer *w = new_writer(32);
    kvx_gguf_writer_add_str(w, "general.architecture", "llama");
    kvx_gguf_writer_add_u32(w, "llama.block_count", 2);
    kvx_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
    kvx_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    static const char *const toks[] = {"a", "bb", "", "ccc"};
    kvx_gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", toks, 4);
    int32_t types[] = {1, 1, 3, 1};
    kvx_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KVX_GGUF_INT32, types, 4);
    int32_t ints[] = {1, 2};
    struct kvx_gguf_value inner = arr_value(KVX_GGUF_INT32, 2, ints, NULL, NULL);
    struct kvx_gguf_value outer = arr_value(KVX_GGUF_ARRAY, 1, NULL, NULL, &inner);
    kvx_gguf_writer_add_value(w, "test.nested", &outer);
    add_pattern_tensor(w, "tok.weight", KVX_DTYPE_Q8_0, 2, (int64_t[]){32, 2}, 1);
    add_pattern_tensor(w, "out.weight", KVX_DTYPE_Q4_0, 1, (int64_t[]){64}, 2);
    add_pattern_tensor(w, "norm.weight", KVX_DTYPE_F32, 1, (int64_t[]){4}, 3);
    return finish(w, size);
}

/* Tensors of several formats, 64-byte alignment (written by the writer as general.alignment). */
static uint8_t *tensors_image(size_t *size, uint32_t alignment)
{
    struct kvx_gguf_writer *w = new_writer(alignment);
    kvx_gguf_writer_add_str(w, "general.architecture", "test");
    add_pattern_tensor(w, "a.f32", KVX_DTYPE_F32, 2, (int64_t[]){3, 2}, 1);
    add_pattern_tensor(w, "b.f16", KVX_DTYPE_F16, 1, (int64_t[]){5}, 2);
    add_pattern_tensor(w, "c.q4_0", KVX_DTYPE_Q4_0, 2, (int64_t[]){64, 2}, 3);
    add_pattern_tensor(w, "d.q8_0", KVX_DTYPE_Q8_0, 3, (int64_t[]){32, 3, 2}, 4);
    add_pattern_tensor(w, "e.q4_k", KVX_DTYPE_Q4_K, 1, (int64_t[]){256}, 5);
    add_pattern_tensor(w, "f.bf16", KVX_DTYPE_BF16, 4, (int64_t[]){7, 1, 1, 2}, 6);
    add_pattern_tensor(w, "g.q6_k", KVX_DTYPE_Q6_K, 2, (int64_t[]){256, 1}, 7);
    add_pattern_tensor(w, "h.q4_1", KVX_DTYPE_Q4_1, 1, (int64_t[]){32}, 8);
    return finish(w, size);
}

/* A version-2 file made byte by byte (not by the writer): two keys, alignment 16, one f32
 * tensor [4] whose data is 1, 2, 3, 4. */
static uint8_t *v2_image(size_t *size)
{
    uint8_t *p = calloc(1, 256);
    size_t n = 0;
    memcpy(p, "GGUF", 4), n = 4;
    put_u32(p + n, 2), n += 4;
    put_u64(p + n, 1), n += 8; /* tensors */
    put_u64(p + n, 2), n += 8; /* key/value pairs */
    put_u64(p + n, 20), memcpy(p + n + 8, "general.architecture", 20), n += 28;
    put_u32(p + n, KVX_GGUF_STRING), n += 4;
    put_u64(p + n, 5), memcpy(p + n + 8, "llama", 5), n += 13;
    put_u64(p + n, 17), memcpy(p + n + 8, "general.alignment", 17), n += 25;
    put_u32(p + n, KVX_GGUF_UINT32), n += 4;
    put_u32(p + n, 16), n += 4;
    put_u64(p + n, 1), memcpy(p + n + 8, "t", 1), n += 9;
    put_u32(p + n, 1), n += 4;    /* n_dims */
    put_u64(p + n, 4), n += 8;    /* ne[0] */
    put_u32(p + n, KVX_DTYPE_F32), n += 4;
    put_u64(p + n, 0), n += 8;    /* offset */
    n = (n + 15) / 16 * 16;
    float data[4] = {1, 2, 3, 4};
    memcpy(p + n, data, sizeof data), n += sizeof data;
    *size = n;
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * Round trips */

KVX_TEST(gguf_scalars_roundtrip)
{
    size_t size;
    uint8_t *img = scalars_image(&size);
    struct kvx_gguf *g = parse_ok(img, size);
    if (!g) {
        free(img);
        return;
    }
    KVX_CHECK_EQ_INT(g->version, 3);
    KVX_CHECK_EQ_INT(g->n_kv, 12);
    KVX_CHECK_EQ_INT(g->n_tensors, 0);
    KVX_CHECK_EQ_INT(g->alignment, 32);
    for (uint64_t i = 0; i < g->n_kv; i++)
        KVX_CHECK(kvx_gguf_str_eq(g->kv[i].key, kvx_gguf_type_name(g->kv[i].val.type)));
    KVX_CHECK_EQ_INT(find_val(g, "uint8").v.u64, 200);
    KVX_CHECK_EQ_INT(find_val(g, "int8").v.i64, -100);
    KVX_CHECK_EQ_INT(find_val(g, "uint16").v.u64, 60000);
    KVX_CHECK_EQ_INT(find_val(g, "int16").v.i64, -30000);
    KVX_CHECK(find_val(g, "uint64").v.u64 == (1ull << 63) + 5);
    KVX_CHECK_EQ_INT(find_val(g, "int64").v.i64, -(1ll << 62));
    KVX_CHECK(find_val(g, "float64").v.f64 == 3.141592653589793);

    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f = 0;
    bool b = false;
    struct kvx_gguf_str s = {0, NULL};
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "uint8", &u32, &err), KVX_OK);
    KVX_CHECK_EQ_INT(u32, 200);
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "uint32", &u32, &err), KVX_OK);
    KVX_CHECK(u32 == 4000000000u);
    KVX_CHECK_EQ_INT(kvx_gguf_get_i64(g, "int32", &i64, &err), KVX_OK);
    KVX_CHECK_EQ_INT(i64, -2000000000);
    KVX_CHECK_EQ_INT(kvx_gguf_get_i64(g, "uint16", &i64, &err), KVX_OK);
    KVX_CHECK_EQ_INT(i64, 60000);
    KVX_CHECK_EQ_INT(kvx_gguf_get_f32(g, "float32", &f, &err), KVX_OK);
    KVX_CHECK(f == 1.5f);
    KVX_CHECK_EQ_INT(kvx_gguf_get_f32(g, "float64", &f, &err), KVX_OK);
    KVX_CHECK_NEAR(f, 3.14159265, 1e-6);
    KVX_CHECK_EQ_INT(kvx_gguf_get_f32(g, "int16", &f, &err), KVX_OK);
    KVX_CHECK(f == -30000.0f);
    KVX_CHECK_EQ_INT(kvx_gguf_get_bool(g, "bool", &b, &err), KVX_OK);
    KVX_CHECK(b);
    KVX_CHECK_EQ_INT(kvx_gguf_get_str(g, "string", &s, &err), KVX_OK);
    KVX_CHECK(kvx_gguf_str_eq(s, "h\xc3\xa9llo"));
    kvx_gguf_close(g);
    free(img);
}

KVX_TEST(gguf_getter_errors)
{
    size_t size;
    uint8_t *img = scalars_image(&size);
    struct kvx_gguf *g = parse_ok(img, size);
    if (!g) {
        free(img);
        return;
    }
    uint32_t u32 = 77;
    int64_t i64 = 0;
    float f = 0;
    bool b = false;
    struct kvx_gguf_str s;
    const struct kvx_gguf_value *arr;
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "int8", &u32, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'int8'");
    CHECK_MSG(err, "-100 (int8) is out of range for uint32");
    KVX_CHECK_EQ_INT(u32, 77); /* untouched on error */
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "uint64", &u32, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "out of range for uint32");
    KVX_CHECK_EQ_INT(kvx_gguf_get_i64(g, "uint64", &i64, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'uint64'");
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "string", &u32, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'string': expected an integer, found string");
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "float32", &u32, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "found float32");
    KVX_CHECK_EQ_INT(kvx_gguf_get_f32(g, "bool", &f, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'bool': expected a number, found bool");
    KVX_CHECK_EQ_INT(kvx_gguf_get_bool(g, "uint8", &b, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "expected bool, found uint8");
    KVX_CHECK_EQ_INT(kvx_gguf_get_str(g, "int64", &s, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'int64': expected string, found int64");
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "string", KVX_GGUF_STRING, &arr, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "expected array of string, found string");
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "no.such.key", &u32, &err), KVX_ERR_NOT_FOUND);
    CHECK_MSG(err, "key 'no.such.key' not found");
    KVX_CHECK_EQ_INT(err.status, KVX_ERR_NOT_FOUND);
    KVX_CHECK_EQ_INT(kvx_gguf_get_str(g, "nope", &s, NULL), KVX_ERR_NOT_FOUND);
    KVX_CHECK(kvx_gguf_find(g, "nope") == NULL);
    KVX_CHECK(kvx_gguf_find(g, NULL) == NULL);
    KVX_CHECK(kvx_gguf_find_tensor(g, "nope") == NULL);
    kvx_gguf_close(g);
    free(img);

    /* A float64 too large for float32 */
    struct kvx_gguf_writer *w = new_writer(0);
    struct kvx_gguf_value big = {.type = KVX_GGUF_FLOAT64, .v.f64 = 1e300};
    kvx_gguf_writer_add_value(w, "big", &big);
    img = finish(w, &size);
    g = parse_ok(img, size);
    if (g) {
        KVX_CHECK_EQ_INT(kvx_gguf_get_f32(g, "big", &f, &err), KVX_ERR_FORMAT);
        CHECK_MSG(err, "key 'big'");
        CHECK_MSG(err, "out of range for float32");
        kvx_gguf_close(g);
    }
    free(img);
}

KVX_TEST(gguf_scalar_arrays_roundtrip)
{
    size_t size;
    uint8_t *img = arrays_image(&size);
    struct kvx_gguf *g = parse_ok(img, size);
    if (!g) {
        free(img);
        return;
    }
    struct kvx_err err = {0};
    const struct kvx_gguf_value *a = NULL;
    static const double want[KVX_GGUF_TYPE_COUNT][3] = {
        [KVX_GGUF_UINT8] = {0, 7, 255},       [KVX_GGUF_INT8] = {-128, 0, 127},
        [KVX_GGUF_UINT16] = {1, 2, 65535},    [KVX_GGUF_INT16] = {-32768, 5, 32767},
        [KVX_GGUF_UINT32] = {0, 123456, 4294967295.0},
        [KVX_GGUF_INT32] = {-1, 0, 2147483647},
        [KVX_GGUF_FLOAT32] = {0.5, -2.25, 1e30f},
        [KVX_GGUF_BOOL] = {1, 0, 1},
        [KVX_GGUF_UINT64] = {0, 1099511627776.0, 18446744073709551615.0},
        [KVX_GGUF_INT64] = {-9223372036854775808.0, -1, 9223372036854775807.0},
        [KVX_GGUF_FLOAT64] = {0.1, -1e300, 2.5},
    };
    for (int t = 0; t < KVX_GGUF_TYPE_COUNT; t++) {
        if (t == KVX_GGUF_STRING || t == KVX_GGUF_ARRAY)
            continue;
        char key[32];
        snprintf(key, sizeof key, "arr.%s", kvx_gguf_type_name((enum kvx_gguf_type)t));
        KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, key, (enum kvx_gguf_type)t, &a, &err), KVX_OK);
        if (!a)
            continue;
        KVX_CHECK_EQ_INT(a->v.arr.n, 3);
        for (uint64_t i = 0; i < 3; i++)
            KVX_CHECK(kvx_gguf_arr_f64(a, i) == want[t][i]);
        KVX_CHECK(kvx_gguf_arr_f64(a, 3) == 0.0); /* out of range */
        a = NULL;
    }
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "arr.int32", KVX_GGUF_INT32, &a, &err), KVX_OK);
    KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(a, 0), -1);
    KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(a, 2), 2147483647);
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "arr.int64", KVX_GGUF_INT64, &a, &err), KVX_OK);
    KVX_CHECK(kvx_gguf_arr_i64(a, 0) == INT64_MIN);
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "arr.uint64", KVX_GGUF_UINT64, &a, &err), KVX_OK);
    KVX_CHECK(kvx_gguf_arr_i64(a, 2) == INT64_MAX); /* saturates */
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "arr.float64", KVX_GGUF_FLOAT64, &a, &err), KVX_OK);
    KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(a, 1), 0); /* -1e300 is outside int64 */
    KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(a, 2), 2);
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "arr.uint8", KVX_GGUF_INT32, &a, &err), KVX_ERR_FORMAT);
    CHECK_MSG(err, "key 'arr.uint8': expected array of int32, found array of uint8");
    kvx_gguf_close(g);
    free(img);
}

KVX_TEST(gguf_string_and_nested_arrays_roundtrip)
{
    size_t size;
    uint8_t *img = arrays_image(&size);
    struct kvx_gguf *g = parse_ok(img, size);
    if (!g) {
        free(img);
        return;
    }
    const struct kvx_gguf_value *a = want_arr(g, "arr.strings", KVX_GGUF_STRING, 4);
    if (a) {
        KVX_CHECK(kvx_gguf_str_eq(a->v.arr.strs[0], ""));
        KVX_CHECK(kvx_gguf_str_eq(a->v.arr.strs[1], "a"));
        KVX_CHECK(kvx_gguf_str_eq(a->v.arr.strs[2], "hello world"));
        KVX_CHECK(kvx_gguf_str_eq(a->v.arr.strs[3], "\xe2\x96\x81x"));
        KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(a, 0), 0); /* not a scalar array */
    }
    want_arr(g, "arr.empty", KVX_GGUF_STRING, 0);
    a = want_arr(g, "arr.nested", KVX_GGUF_ARRAY, 3);
    if (a) {
        const struct kvx_gguf_value *it = a->v.arr.items;
        KVX_CHECK(it[0].type == KVX_GGUF_ARRAY && it[0].v.arr.elem == KVX_GGUF_INT32);
        KVX_CHECK_EQ_INT(it[0].v.arr.n, 3);
        KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(&it[0], 2), 3);
        KVX_CHECK(it[1].v.arr.elem == KVX_GGUF_STRING && it[1].v.arr.n == 2);
        KVX_CHECK(it[1].v.arr.n == 2 && kvx_gguf_str_eq(it[1].v.arr.strs[1], "q"));
        KVX_CHECK(it[2].v.arr.elem == KVX_GGUF_FLOAT64 && it[2].v.arr.n == 0);
    }
    a = want_arr(g, "arr.deep", KVX_GGUF_ARRAY, 1);
    if (a && a->v.arr.items[0].v.arr.n == 1) {
        const struct kvx_gguf_value *l3 = &a->v.arr.items[0].v.arr.items[0];
        KVX_CHECK(l3->type == KVX_GGUF_ARRAY && l3->v.arr.elem == KVX_GGUF_INT32);
        KVX_CHECK_EQ_INT(kvx_gguf_arr_i64(l3, 0), 7);
    } else {
        KVX_CHECK(!"arr.deep has the wrong shape");
    }
    kvx_gguf_close(g);
    free(img);
}

/* Copying every parsed value into a new writer reproduces the file byte for byte. */
KVX_TEST(gguf_copy_values_identical)
{
    uint8_t *(*makers[])(size_t *) = {scalars_image, arrays_image};
    for (size_t m = 0; m < 2; m++) {
        size_t size, size2 = 0;
        uint8_t *img = makers[m](&size);
        struct kvx_gguf *g = parse_ok(img, size);
        if (!g) {
            free(img);
            continue;
        }
        struct kvx_gguf_writer *w = new_writer(32);
        for (uint64_t i = 0; i < g->n_kv; i++) {
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)g->kv[i].key.len, g->kv[i].key.ptr);
            KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, key, &g->kv[i].val), KVX_OK);
        }
        uint8_t *img2 = finish(w, &size2);
        KVX_CHECK_EQ_INT(size2, size);
        KVX_CHECK(size2 == size && memcmp(img, img2, size) == 0);
        kvx_gguf_close(g);
        free(img);
        free(img2);
    }
}

static void check_tensors(uint32_t alignment)
{
    size_t size;
    uint8_t *img = tensors_image(&size, alignment);
    struct kvx_gguf *g = parse_ok(img, size);
    if (!g) {
        free(img);
        return;
    }
    KVX_CHECK_EQ_INT(g->alignment, alignment);
    KVX_CHECK_EQ_INT(g->n_tensors, 8);
    KVX_CHECK_EQ_INT(g->data_offset % alignment, 0);
    uint32_t a = 0;
    if (alignment != 32) {
        KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "general.alignment", &a, NULL), KVX_OK);
        KVX_CHECK_EQ_INT(a, alignment);
    }
    static const struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[4];
        size_t nbytes;
    } want[] = {
        {"a.f32", KVX_DTYPE_F32, 2, {3, 2, 1, 1}, 24},
        {"b.f16", KVX_DTYPE_F16, 1, {5, 1, 1, 1}, 10},
        {"c.q4_0", KVX_DTYPE_Q4_0, 2, {64, 2, 1, 1}, 72},
        {"d.q8_0", KVX_DTYPE_Q8_0, 3, {32, 3, 2, 1}, 204},
        {"e.q4_k", KVX_DTYPE_Q4_K, 1, {256, 1, 1, 1}, 144},
        {"f.bf16", KVX_DTYPE_BF16, 4, {7, 1, 1, 2}, 28},
        {"g.q6_k", KVX_DTYPE_Q6_K, 2, {256, 1, 1, 1}, 210},
        {"h.q4_1", KVX_DTYPE_Q4_1, 1, {32, 1, 1, 1}, 20},
    };
    uint64_t expect_offset = 0;
    for (unsigned i = 0; i < 8; i++) {
        const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(g, want[i].name);
        KVX_CHECK(t == &g->tensors[i]);
        if (!t)
            continue;
        KVX_CHECK_EQ_INT(t->type, want[i].type);
        KVX_CHECK_EQ_INT(t->n_dims, want[i].n_dims);
        for (int d = 0; d < 4; d++)
            KVX_CHECK_EQ_INT(t->ne[d], want[i].ne[d]);
        KVX_CHECK_EQ_INT(t->nbytes, want[i].nbytes);
        KVX_CHECK_EQ_INT(t->offset, expect_offset);
        KVX_CHECK_EQ_INT(t->offset % alignment, 0);
        KVX_CHECK((const uint8_t *)t->data == g->base + g->data_offset + t->offset);
        KVX_CHECK_EQ_INT(((const uint8_t *)t->data - g->base) % alignment, 0);
        uint8_t *expect = malloc(t->nbytes);
        fill_pattern(expect, t->nbytes, i + 1);
        KVX_CHECK(memcmp(t->data, expect, t->nbytes) == 0);
        free(expect);
        expect_offset = (t->offset + t->nbytes + alignment - 1) / alignment * alignment;
    }
    KVX_CHECK_EQ_INT(g->data_offset + expect_offset, size);
    kvx_gguf_close(g);
    free(img);
}

KVX_TEST(gguf_tensors_roundtrip)
{
    check_tensors(32);
    check_tensors(64);
    check_tensors(4096);
}

KVX_TEST(gguf_v2_handmade)
{
    size_t size;
    uint8_t *img = v2_image(&size);
    struct kvx_gguf *g = parse_ok(img, size);
    if (g) {
        KVX_CHECK_EQ_INT(g->version, 2);
        KVX_CHECK_EQ_INT(g->alignment, 16);
        KVX_CHECK_EQ_INT(g->data_offset, 144); /* 135 header bytes, rounded up to 16 */
        struct kvx_gguf_str arch;
        KVX_CHECK_EQ_INT(kvx_gguf_get_str(g, "general.architecture", &arch, NULL), KVX_OK);
        KVX_CHECK(kvx_gguf_str_eq(arch, "llama"));
        const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(g, "t");
        KVX_CHECK(t != NULL);
        if (t) {
            float x[4];
            memcpy(x, t->data, sizeof x);
            KVX_CHECK(t->nbytes == 16 && x[0] == 1 && x[3] == 4);
        }
        kvx_gguf_close(g);
    }
    /* The same bytes as version 3 parse the same way; 1 and 4 are refused. */
    put_u32(img + 4, 3);
    EXPECT_PARSE(img, size, KVX_OK, NULL, NULL);
    put_u32(img + 4, 1);
    EXPECT_PARSE(img, size, KVX_ERR_UNSUPPORTED, "version 1", NULL);
    put_u32(img + 4, 4);
    EXPECT_PARSE(img, size, KVX_ERR_UNSUPPORTED, "version 4", NULL);
    put_u32(img + 4, 0x03000000u); /* a big-endian file's version */
    EXPECT_PARSE(img, size, KVX_ERR_UNSUPPORTED, "big-endian", NULL);
    free(img);
}

/* ---------------------------------------------------------------------------------------------
 * Hostile files */

KVX_TEST(gguf_truncated_everywhere)
{
    uint8_t *(*makers[])(size_t *) = {sample_image, scalars_image, arrays_image, v2_image};
    for (size_t m = 0; m < 4; m++) {
        size_t size;
        uint8_t *img = makers[m](&size);
        struct kvx_gguf *g = parse_ok(img, size);
        if (!g) {
            free(img);
            continue;
        }
        /* The shortest valid prefix ends with the last tensor's data (or the header). */
        size_t need = g->n_tensors ? 0 : g->data_offset;
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            size_t end = (size_t)((const uint8_t *)g->tensors[i].data - g->base) +
                         g->tensors[i].nbytes;
            need = end > need ? end : need;
        }
        if (!g->n_tensors) { /* without tensors the padding is not needed either */
            need = 0;
            for (size_t k = 0; k <= size && !need; k++) {
                struct kvx_gguf *h = NULL;
                if (kvx_gguf_parse(img, k, &h, NULL) == KVX_OK)
                    need = k;
                kvx_gguf_close(h);
            }
            KVX_CHECK(need > 24 && need <= size);
        }
        kvx_gguf_close(g);
        for (size_t k = 0; k < need; k++)
            EXPECT_PARSE(img, k, KVX_ERR_FORMAT, NULL, NULL);
        for (size_t k = need; k <= size; k++)
            EXPECT_PARSE(img, k, KVX_OK, NULL, NULL);
        free(img);
    }
}

KVX_TEST(gguf_hostile_header)
{
    size_t size;
    uint8_t *img = sample_image(&size);
    uint8_t *bad = malloc(size);
    EXPECT_PARSE(img, 0, KVX_ERR_FORMAT, "too short", NULL);
    memcpy(bad, img, size), bad[0] = 'X';
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "bad magic", NULL);
    memcpy(bad, img, size), put_u64(bad + 8, 1ull << 60);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "1152921504606846976 tensors", NULL);
    memcpy(bad, img, size), put_u64(bad + 16, 1ull << 60);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "1152921504606846976 key/value pairs", NULL);
    memcpy(bad, img, size), put_u64(bad + 16, UINT64_MAX);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key/value pairs", NULL);
    /* counts that are plausible but wrong */
    for (uint64_t n = 0; n < 20; n++) {
        memcpy(bad, img, size), put_u64(bad + 16, n);
        if (n != 7)
            EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, NULL, NULL);
        memcpy(bad, img, size), put_u64(bad + 8, n);
        if (n > 3)
            EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, NULL, NULL);
    }
    struct kvx_gguf *g = NULL;
    KVX_CHECK_EQ_INT(kvx_gguf_parse(NULL, 5, &g, NULL), KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(kvx_gguf_parse(img, size, NULL, NULL), KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(kvx_gguf_parse(NULL, 0, &g, NULL), KVX_ERR_FORMAT);
    KVX_CHECK(g == NULL);
    free(bad);
    free(img);
}

KVX_TEST(gguf_hostile_strings_and_arrays)
{
    size_t size;
    uint8_t *img = sample_image(&size);
    uint8_t *bad = malloc(size);
    /* string 1 of the token list claims 2^40 bytes */
    size_t s1 = after_str(img, size, "bb") - 2 - 8;
    memcpy(bad, img, size), put_u64(bad + s1, 1ull << 40);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'tokenizer.ggml.tokens': array of 4 strings: "
                 "string 1 at offset", "has length 1099511627776, past the end of the file");
    /* the token list claims 2^60 strings: refused before allocating */
    size_t s0 = after_str(img, size, "a") - 1 - 8;
    memcpy(bad, img, size), put_u64(bad + s0 - 8, 1ull << 60);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'tokenizer.ggml.tokens'",
                 "array of 1152921504606846976 strings");
    /* its element type is unknown */
    memcpy(bad, img, size), put_u32(bad + s0 - 12, 13);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'tokenizer.ggml.tokens'", "element type 13");
    /* the first key claims 2^62 bytes */
    memcpy(bad, img, size), put_u64(bad + 24, 1ull << 62);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key/value pair 0", "4611686018427387904");
    /* a value type that does not exist */
    size_t ty = after_str(img, size, "llama.block_count");
    memcpy(bad, img, size), put_u32(bad + ty, 13);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'llama.block_count'", "unknown value type 13");
    /* a bool that is neither 0 nor 1 */
    size_t bo = after_str(img, size, "tokenizer.ggml.add_bos_token") + 4;
    memcpy(bad, img, size), bad[bo] = 2;
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'tokenizer.ggml.add_bos_token'", "0 or 1");
    /* the inner array of test.nested claims 2^61 int32 */
    size_t nest = after_str(img, size, "test.nested") + 4 + 12;
    memcpy(bad, img, size), put_u64(bad + nest + 4, 1ull << 61);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "key 'test.nested': array of 1 arrays: element 0",
                 "array of 2305843009213693952 int32");
    free(bad);
    free(img);
}

KVX_TEST(gguf_hostile_nesting)
{
    int32_t seven = 7;
    struct kvx_gguf_value chain[12];
    for (int depth = 7; depth <= 12; depth++) {
        for (int i = 0; i < depth - 1; i++)
            chain[i] = arr_value(KVX_GGUF_ARRAY, 1, NULL, NULL, &chain[i + 1]);
        chain[depth - 1] = arr_value(KVX_GGUF_INT32, 1, &seven, NULL, NULL);
        struct kvx_gguf_writer *w = new_writer(32);
        KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, "deep", &chain[0]), KVX_OK);
        size_t size;
        uint8_t *img = finish(w, &size);
        if (depth <= 8)
            EXPECT_PARSE(img, size, KVX_OK, NULL, NULL);
        else
            EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "key 'deep'", "nested more than 8 levels");
        free(img);
    }
}

KVX_TEST(gguf_hostile_duplicates)
{
    struct kvx_gguf_writer *w = new_writer(32);
    kvx_gguf_writer_add_u32(w, "a.key", 1);
    kvx_gguf_writer_add_str(w, "b.key", "x");
    kvx_gguf_writer_add_u32(w, "a.key", 2);
    size_t size;
    uint8_t *img = finish(w, &size);
    EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "key 'a.key' appears twice", "entries 0 and 2");
    free(img);

    w = new_writer(32);
    int64_t ne = 4;
    float x[4] = {0};
    kvx_gguf_writer_add_tensor(w, "w", KVX_DTYPE_F32, 1, &ne, x, sizeof x);
    kvx_gguf_writer_add_tensor(w, "v", KVX_DTYPE_F32, 1, &ne, x, sizeof x);
    kvx_gguf_writer_add_tensor(w, "w", KVX_DTYPE_F32, 1, &ne, x, sizeof x);
    img = finish(w, &size);
    EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "tensor 'w' appears twice", NULL);
    free(img);
}

KVX_TEST(gguf_hostile_alignment)
{
    struct {
        struct kvx_gguf_value v;
        const char *msg;
    } cases[] = {
        {{.type = KVX_GGUF_UINT32, .v.u64 = 48}, "is 48; it must be a power of two"},
        {{.type = KVX_GGUF_UINT32, .v.u64 = 0}, "is 0; it must be a power of two"},
        {{.type = KVX_GGUF_STRING, .v.str = {2, "32"}}, "expected an integer, found string"},
        {{.type = KVX_GGUF_INT64, .v.i64 = 1ll << 40}, "out of range for uint32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kvx_gguf_writer *w = new_writer(32);
        kvx_gguf_writer_add_value(w, "general.alignment", &cases[i].v);
        add_pattern_tensor(w, "t", KVX_DTYPE_F32, 1, (int64_t[]){8}, 1);
        size_t size;
        uint8_t *img = finish(w, &size);
        EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "general.alignment", cases[i].msg);
        free(img);
    }
    /* alignment 2^31 is legal but the data section would start past the end of the file */
    struct kvx_gguf_writer *w = new_writer(32);
    kvx_gguf_writer_add_u32(w, "general.alignment", 1u << 31);
    add_pattern_tensor(w, "t", KVX_DTYPE_F32, 1, (int64_t[]){8}, 1);
    size_t size;
    uint8_t *img = finish(w, &size);
    EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "tensor 't'", "past the end of the file");
    free(img);
}

KVX_TEST(gguf_hostile_tensor_offsets)
{
    size_t size;
    uint8_t *img = sample_image(&size);
    uint8_t *bad = malloc(size);
    struct info_at at = tensor_info_at(img, size, "norm.weight");
    memcpy(bad, img, size), put_u64(bad + at.offset, 1u << 20);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT,
                 "tensor 'norm.weight': data [offset 1048576, 16 bytes] runs past the end of "
                 "the file", "file size");
    memcpy(bad, img, size), put_u64(bad + at.offset, UINT64_MAX - 31);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor 'norm.weight'", "past the end");
    memcpy(bad, img, size), put_u64(bad + at.offset, 4);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor 'norm.weight'",
                 "not a multiple of the alignment 32");
    /* type q4_0 [64] -> q8_0 [64]: the same offset now runs 4 bytes into norm.weight, which is
     * allowed (overlaps are not checked), so make the tensor claim more rows instead */
    at = tensor_info_at(img, size, "out.weight");
    memcpy(bad, img, size), put_u64(bad + at.ne, 64 * 1024);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor 'out.weight'", "runs past the end");
    /* n_dims out of range */
    memcpy(bad, img, size), put_u32(bad + at.n_dims, 5);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor 'out.weight'", "5 dimensions");
    memcpy(bad, img, size), put_u32(bad + at.n_dims, 0);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor 'out.weight'", "0 dimensions");
    /* tensor name length past the end */
    memcpy(bad, img, size), put_u64(bad + at.n_dims - 10 - 8, 1ull << 33);
    EXPECT_PARSE(bad, size, KVX_ERR_FORMAT, "tensor info 1", "tensor name at offset");
    free(bad);
    free(img);
}

KVX_TEST(gguf_hostile_tensor_shapes)
{
    static const struct {
        uint32_t type, n_dims;
        int64_t ne[4];
        enum kvx_status st;
        const char *msg;
    } cases[] = {
        {16, 1, {256}, KVX_ERR_UNSUPPORTED, "tensor type 16 is not supported"},
        {99, 1, {32}, KVX_ERR_UNSUPPORTED, "tensor type 99 is not supported"},
        {KVX_DTYPE_Q4_0, 1, {33}, KVX_ERR_FORMAT, "ne[0] = 33 is not a multiple of the q4_0 "
                                                  "block size 32"},
        {KVX_DTYPE_Q4_K, 2, {128, 2}, KVX_ERR_FORMAT, "block size 256"},
        {KVX_DTYPE_F32, 2, {1ll << 40, 1ll << 40}, KVX_ERR_FORMAT, "overflows"},
        {KVX_DTYPE_F32, 1, {1ll << 62}, KVX_ERR_FORMAT, "overflows"},          /* bytes */
        {KVX_DTYPE_F32, 4, {1 << 16, 1 << 16, 1 << 16, 1 << 16}, KVX_ERR_FORMAT, "overflows"},
        {KVX_DTYPE_F32, 2, {4, -1}, KVX_ERR_FORMAT, "more than 2^63-1"},      /* 2^64-1 */
        {KVX_DTYPE_F32, 2, {4, INT64_MIN}, KVX_ERR_FORMAT, "ne[1]"},          /* 2^63 */
        {KVX_DTYPE_F32, 2, {4, 0}, KVX_ERR_UNSUPPORTED, "empty tensors"},
        {KVX_DTYPE_F32, 1, {1ll << 40}, KVX_ERR_FORMAT, "runs past the end"}, /* fits size_t */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kvx_gguf_writer *w = new_writer(32);
        kvx_gguf_writer_add_str(w, "general.architecture", "x");
        float data[8] = {0};
        kvx_gguf_writer_add_tensor(w, "blk.3.attn_q.weight", cases[i].type, cases[i].n_dims,
                                   cases[i].ne, data, sizeof data);
        size_t size;
        uint8_t *img = finish(w, &size);
        EXPECT_PARSE(img, size, cases[i].st, "tensor 'blk.3.attn_q.weight'", cases[i].msg);
        free(img);
    }
}

/* Names from the file are quoted with control bytes replaced and long names cut. */
KVX_TEST(gguf_hostile_names_quoted)
{
    char key[300];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    key[3] = '\n';
    struct kvx_gguf_writer *w = new_writer(32);
    kvx_gguf_writer_add_u32(w, key, 1);
    kvx_gguf_writer_add_u32(w, key, 2);
    size_t size;
    uint8_t *img = finish(w, &size);
    EXPECT_PARSE(img, size, KVX_ERR_FORMAT, "key 'kkk?kkkk", "...' appears twice");
    free(img);
}

/* ---------------------------------------------------------------------------------------------
 * Writer */

KVX_TEST(gguf_writer_errors)
{
    struct kvx_gguf_writer *w = NULL;
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_gguf_writer_create(3, &w, &err), KVX_ERR_INVALID_ARG);
    CHECK_MSG(err, "power of two");
    KVX_CHECK(w == NULL);
    kvx_gguf_writer_destroy(NULL);

    w = new_writer(0); /* the default, 32 */
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_u32(w, "ok", 1), KVX_OK);
    struct kvx_gguf_value big = {.type = KVX_GGUF_UINT8, .v.u64 = 300};
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_value(w, "too.big", &big), KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_u32(w, "later", 1), KVX_ERR_INVALID_ARG); /* sticky */
    uint8_t *img = NULL;
    size_t size = 0;
    KVX_CHECK_EQ_INT(kvx_gguf_writer_finish(w, &img, &size, &err), KVX_ERR_INVALID_ARG);
    CHECK_MSG(err, "key 'too.big'");
    KVX_CHECK(img == NULL);
    kvx_gguf_writer_destroy(w);

    w = new_writer(0);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_arr(w, "s", KVX_GGUF_STRING, NULL, 1),
                     KVX_ERR_INVALID_ARG);
    kvx_gguf_writer_destroy(w);
    w = new_writer(0);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_add_tensor(w, "t", KVX_DTYPE_F32, 5, (int64_t[]){1, 1, 1, 1,
                                                1}, NULL, 0), KVX_ERR_INVALID_ARG);
    KVX_CHECK_EQ_INT(kvx_gguf_writer_finish(w, &img, &size, &err), KVX_ERR_INVALID_ARG);
    CHECK_MSG(err, "tensor 't'");
    kvx_gguf_writer_destroy(w);

    /* An empty file: header only, 32-byte aligned. */
    w = new_writer(0);
    img = finish(w, &size);
    KVX_CHECK_EQ_INT(size, 32);
    struct kvx_gguf *g = parse_ok(img, size);
    KVX_CHECK(g && g->n_kv == 0 && g->n_tensors == 0 && g->data_offset == 32);
    kvx_gguf_close(g);
    free(img);
}

KVX_TEST(gguf_open_file)
{
    char path[] = "/tmp/kvx-test-gguf-XXXXXX";
    int fd = mkstemp(path);
    KVX_CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);
    struct kvx_gguf_writer *w = new_writer(64);
    kvx_gguf_writer_add_str(w, "general.architecture", "llama");
    add_pattern_tensor(w, "t", KVX_DTYPE_Q8_0, 2, (int64_t[]){64, 3}, 9);
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_gguf_writer_save(w, path, &err), KVX_OK);
    kvx_gguf_writer_destroy(w);

    struct kvx_gguf *g = NULL;
    KVX_CHECK_EQ_INT(kvx_gguf_open(path, &g, &err), KVX_OK);
    if (g) {
        KVX_CHECK(g->owns_map);
        KVX_CHECK_EQ_INT(g->alignment, 64);
        const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(g, "t");
        KVX_CHECK(t && t->nbytes == 6 * 34);
        KVX_CHECK(t && ((uintptr_t)t->data % 64) == 0); /* the mapping is page-aligned */
        kvx_gguf_close(g);
    }
    /* a broken file: the message starts with the path */
    FILE *f = fopen(path, "r+b");
    KVX_CHECK(f != NULL);
    if (f) {
        fputc('X', f);
        fclose(f);
    }
    KVX_CHECK_EQ_INT(kvx_gguf_open(path, &g, &err), KVX_ERR_FORMAT);
    KVX_CHECK(g == NULL);
    CHECK_MSG(err, path);
    CHECK_MSG(err, "bad magic");
    f = fopen(path, "wb");
    if (f)
        fclose(f);
    KVX_CHECK_EQ_INT(kvx_gguf_open(path, &g, &err), KVX_ERR_FORMAT);
    unlink(path);
    KVX_CHECK_EQ_INT(kvx_gguf_open(path, &g, &err), KVX_ERR_IO);
    CHECK_MSG(err, path);
    KVX_CHECK_EQ_INT(kvx_gguf_open("/tmp", &g, &err), KVX_ERR_IO);
    CHECK_MSG(err, "not a regular file");
}

/* ---------------------------------------------------------------------------------------------
 * The real model and the fuzz seeds */

KVX_TEST(gguf_real_model)
{
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("model not present (make model)");
        return;
    }
    struct kvx_gguf *g = NULL;
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_gguf_open(path, &g, &err), KVX_OK);
    if (!g) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    KVX_CHECK_EQ_INT(g->version, 3);
    KVX_CHECK_EQ_INT(g->n_tensors, 272);
    KVX_CHECK_EQ_INT(g->n_kv, 33);
    KVX_CHECK_EQ_INT(g->alignment, 32);
    uint32_t v = 0;
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "llama.block_count", &v, &err), KVX_OK);
    KVX_CHECK_EQ_INT(v, 30);
    KVX_CHECK_EQ_INT(kvx_gguf_get_u32(g, "llama.embedding_length", &v, &err), KVX_OK);
    KVX_CHECK_EQ_INT(v, 576);
    const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(g, "token_embd.weight");
    KVX_CHECK(t != NULL);
    if (t) {
        KVX_CHECK_EQ_INT(t->type, KVX_DTYPE_Q8_0);
        KVX_CHECK_EQ_INT(t->n_dims, 2);
        KVX_CHECK_EQ_INT(t->ne[0], 576);
        KVX_CHECK_EQ_INT(t->ne[1], 49152);
        KVX_CHECK_EQ_INT(t->nbytes, 576 / 32 * 34 * 49152);
    }
    const struct kvx_gguf_value *toks = NULL;
    KVX_CHECK_EQ_INT(kvx_gguf_get_arr(g, "tokenizer.ggml.tokens", KVX_GGUF_STRING, &toks, &err),
                     KVX_OK);
    KVX_CHECK(toks && toks->v.arr.n == 49152);
    size_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        total += g->tensors[i].nbytes;
    KVX_CHECK(total > 0 && g->data_offset + total <= g->size);
    /* Its header cut in the token list, and its header without the data. */
    size_t hdr = g->data_offset;
    uint8_t *copy = malloc(hdr);
    memcpy(copy, g->base, hdr);
    kvx_gguf_close(g);
    EXPECT_PARSE(copy, hdr / 2, KVX_ERR_FORMAT, "key 'tokenizer.ggml.", "array of ");
    EXPECT_PARSE(copy, hdr, KVX_ERR_FORMAT, "tensor '", "runs past the end of the file");
    free(copy);
}

struct seed {
    const char *name;
    uint8_t *(*make)(size_t *);
};

static uint8_t *tensors64_image(size_t *size) { return tensors_image(size, 64); }

static uint8_t *empty_image(size_t *size) { return finish(new_writer(32), size); }

static const struct seed seeds[] = {
    {"sample.gguf", sample_image}, {"scalars.gguf", scalars_image},
    {"arrays.gguf", arrays_image}, {"tensors.gguf", tensors64_image},
    {"v2.gguf", v2_image},         {"empty.gguf", empty_image},
};

static void write_seeds(const char *dir)
{
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, seeds[i].name);
        size_t size;
        uint8_t *img = seeds[i].make(&size);
        FILE *f = fopen(path, "wb");
        KVX_CHECK(f && fwrite(img, 1, size, f) == size);
        if (f)
            fclose(f);
        free(img);
    }
}

/* Every seed of the fuzz target parses (so the fuzzer starts from valid files). */
KVX_TEST(gguf_fuzz_seeds)
{
    const char *out = getenv("KVX_GGUF_WRITE_SEEDS");
    if (out)
        write_seeds(out);
    const char *dir = "fuzz/seeds/fuzz_gguf";
    DIR *d = opendir(dir);
    if (!d) {
        kvx_test_skip("fuzz/seeds/fuzz_gguf not found (run from the repository root)");
        return;
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct kvx_gguf *g = NULL;
        struct kvx_err err = {0};
        if (kvx_gguf_open(path, &g, &err) != KVX_OK)
            kvx_test_fail(__FILE__, __LINE__, "seed %s: %s", path, err.msg);
        kvx_gguf_close(g);
        n++;
    }
    closedir(d);
    KVX_CHECK(n >= (int)(sizeof seeds / sizeof seeds[0]));
}
