/* tests/test_safetensors: the safetensors reader (io/safetensors.c), the JSON reader
 * (util/json.c) and config.json → hyper-parameters (model/hf_config.c, model/llama.c).
 *
 * Header validation: every way a header can lie (truncated, length past the file, offsets past
 * the data, size ≠ shape × dtype, overlapping tensors, unknown dtype, shape overflow, bad JSON,
 * duplicate names) is refused with a message naming the tensor/key/offset.  Sharded sets: an
 * index naming a missing shard, a tensor the index puts in the wrong shard.  FP8 E4M3 against
 * hand-computed values, with block scales.  config.json: legacy keys and defaults (head_dim,
 * num_key_value_heads absent; rope_scaling vs rope_parameters), errors naming the key, a
 * config contradicting a tensor shape, unknown model_type, no tokenizer.
 *
 * KVX_ST_WRITE_SEEDS=<dir> makes st_fuzz_seeds write the fuzz seeds into <dir> (they live in
 * fuzz/seeds/fuzz_safetensors/). */
#include <dirent.h>
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "kvx.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "test.h"
#include "util/json.h"

/* ------------------------------------------------------------------------------------------ */
/* Building images */

/* 8-byte length + header + data_len bytes (byte i = i & 0xff). */
static uint8_t *image(const char *header, size_t data_len, size_t *size)
{
    const size_t h = strlen(header);
    *size = 8 + h + data_len;
    uint8_t *b = malloc(*size);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++)
        b[8 + h + i] = (uint8_t)i;
    return b;
}

/* Parse; expect `want` and, on error, every word of `needles` (|-separated) in the message. */
static void expect(const char *header, size_t data_len, enum kvx_status want, const char *needles)
{
    size_t size;
    uint8_t *b = image(header, data_len, &size);
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    enum kvx_status s = kvx_st_parse(b, size, &st, &err);
    if (s != want)
        kvx_test_fail(__FILE__, __LINE__, "header %s: status %d, want %d (%s)", header, s, want,
                      err.msg);
    if (s != KVX_OK) {
        KVX_CHECK(st == NULL);
        char buf[256];
        snprintf(buf, sizeof buf, "%s", needles ? needles : "");
        for (char *w = strtok(buf, "|"); w; w = strtok(NULL, "|"))
            if (!strstr(err.msg, w))
                kvx_test_fail(__FILE__, __LINE__, "message '%s' does not name '%s'", err.msg, w);
    }
    kvx_st_close(st);
    free(b);
}

#define T1B "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
#define T1 "{" T1B

KVX_TEST(st_parse_valid)
{
    size_t size;
    uint8_t *b = image("{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[20,28]},"
                       "\"e\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[28,28]}}  ",
                       28, &size);
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_st_parse(b, size, &st, &err) == KVX_OK);
    if (!st) {
        fprintf(stderr, "  %s\n", err.msg);
        free(b);
        return;
    }
    KVX_CHECK_EQ_INT(st->n_tensors, 4);
    const struct kvx_st_tensor *w = kvx_st_find(st, "w"), *a = kvx_st_find(st, "a"),
                               *s = kvx_st_find(st, "s"), *e = kvx_st_find(st, "e");
    KVX_CHECK(w && a && s && e && !kvx_st_find(st, "x") && !kvx_st_find(st, "__metadata__"));
    if (w && a && s && e) {
        KVX_CHECK(w->dtype == KVX_ST_BF16 && w->n_dims == 2 && w->shape[0] == 2 &&
                  w->shape[1] == 3 && w->n_elem == 6 && w->nbytes == 12);
        KVX_CHECK(w->data == b + size - 28 + 8);
        KVX_CHECK(s->n_dims == 0 && s->n_elem == 1 && s->nbytes == 8);
        KVX_CHECK(e->n_elem == 0 && e->nbytes == 0);
        float f[2];
        KVX_CHECK(kvx_st_read_f32(a, f, 2, &err) == KVX_OK);
        uint8_t raw[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        float want[2];
        memcpy(want, raw, 8);
        KVX_CHECK(memcmp(f, want, 8) == 0);
        KVX_CHECK(kvx_st_read_f32(s, f, 1, &err) == KVX_ERR_UNSUPPORTED && strstr(err.msg, "'s'"));
    }
    KVX_CHECK(kvx_st_metadata(st, "format") && strcmp(kvx_st_metadata(st, "format"), "pt") == 0);
    kvx_st_close(st);
    free(b);
}

KVX_TEST(st_header_truncated_and_lying_length)
{
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    const uint8_t short_file[5] = {1, 0, 0, 0, 0};
    KVX_CHECK(kvx_st_parse(short_file, sizeof short_file, &st, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(strstr(err.msg, "8-byte") != NULL);
    size_t size;
    uint8_t *b = image(T1 "}", 8, &size);
    b[0] = 0xff; /* header length 255 + ... > file */
    KVX_CHECK(kvx_st_parse(b, size, &st, &err) == KVX_ERR_FORMAT && strstr(err.msg, "header length"));
    b[0] = 0; b[7] = 0x80; /* 2^63 */
    KVX_CHECK(kvx_st_parse(b, size, &st, &err) == KVX_ERR_FORMAT && strstr(err.msg, "header length"));
    free(b);
    /* the image cut in the middle of the data */
    b = image(T1 "}", 8, &size);
    KVX_CHECK(kvx_st_parse(b, size - 1, &st, &err) == KVX_ERR_FORMAT && strstr(err.msg, "'a'"));
    /* cut in the middle of the header */
    KVX_CHECK(kvx_st_parse(b, 20, &st, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(st == NULL);
    free(b);
}

KVX_TEST(st_header_lying_offsets)
{
    expect(T1 "}", 8, KVX_OK, NULL);
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, KVX_ERR_FORMAT,
           "'a'|[0, 16]|outside");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, KVX_ERR_FORMAT,
           "'a'|outside");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, KVX_ERR_FORMAT,
           "'a'|needs 12");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, KVX_ERR_FORMAT,
           "'a'|data_offsets");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, KVX_ERR_FORMAT,
           "'a'|data_offsets");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|data_offsets");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]}}", 8,
           KVX_ERR_FORMAT, "'a'|data_offsets");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, KVX_ERR_FORMAT, "'a'|data_offsets|missing");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
           KVX_ERR_FORMAT, "'a'|unknown key 'x'");
    expect("{\"a\":[1,2]}", 8, KVX_ERR_FORMAT, "'a'|not an object");
    expect("[1]", 8, KVX_ERR_FORMAT, "not an object");
}

KVX_TEST(st_header_overlap)
{
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, KVX_ERR_FORMAT,
           "'a'|'b'|overlap");
    /* one inside another */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]},"
           "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[16,18]}}", 18, KVX_ERR_FORMAT,
           "'a'|'b'|overlap");
    /* adjacent, a gap, and empty tensors anywhere: fine */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},"
           "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
           "\"c\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}", 20, KVX_OK, NULL);
}

KVX_TEST(st_header_dtype_and_shape)
{
    expect("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|'F33'|dtype");
    expect("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|dtype");
    expect("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|dtype");
    /* 2^32 * 2^32 elements overflows 64 bits; 2^62 F32 elements overflow the byte count */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
           8, KVX_ERR_FORMAT, "'a'|overflow");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}",
           8, KVX_ERR_FORMAT, "'a'|overflow");
    /* a zero dim makes the product 0 even with a huge other dim */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]}}",
           8, KVX_OK, NULL);
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|shape[0]");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|shape[0]");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
           KVX_ERR_FORMAT, "'a'|shape");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "'a'|shape");
}

KVX_TEST(st_header_json)
{
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, KVX_ERR_FORMAT,
           "JSON|byte");
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, KVX_ERR_FORMAT,
           "text after");
    /* the same tensor named twice */
    expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, KVX_ERR_FORMAT,
           "duplicate key \"a\"");
    expect("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, KVX_ERR_FORMAT,
           "empty");
    expect("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           KVX_ERR_FORMAT, "U+0000");
    expect("{\"__metadata__\":{\"k\":1}," T1B "}", 8, KVX_ERR_FORMAT, "__metadata__|'k'");
    expect("{\"__metadata__\":[]," T1B "}", 8, KVX_ERR_FORMAT, "__metadata__");
    expect("{}", 0, KVX_OK, NULL);
}

KVX_TEST(st_json_reader)
{
    struct kvx_jv *v = NULL;
    struct kvx_err err = {0};
    const char *doc = " {\"i\": 9007199254740993, \"n\": -9223372036854775808, \"big\": "
                      "18446744073709551616, \"f\": 1.5e3, \"s\": \"a\\u00e9\\ud83d\\ude00\\n\","
                      " \"t\": true, \"z\": null, \"a\": [1, [2, {}]]} ";
    KVX_CHECK(kvx_jv_parse(doc, strlen(doc), &v, &err) == KVX_OK);
    if (v) {
        const struct kvx_jv *i = kvx_jv_get(v, "i"), *n = kvx_jv_get(v, "n"),
                            *big = kvx_jv_get(v, "big"), *f = kvx_jv_get(v, "f"),
                            *s = kvx_jv_get(v, "s"), *a = kvx_jv_get(v, "a");
        KVX_CHECK(i && i->is_int && i->i == 9007199254740993LL); /* exact past 2^53 */
        KVX_CHECK(n && n->is_int && n->i == INT64_MIN);
        KVX_CHECK(big && !big->is_int && big->num > 1.8e19);
        KVX_CHECK(f && !f->is_int && f->num == 1500.0);
        KVX_CHECK(s && s->len == 8 && memcmp(s->str, "a\xc3\xa9\xf0\x9f\x98\x80\n", 8) == 0);
        KVX_CHECK(kvx_jv_get(v, "t")->b && kvx_jv_get(v, "z")->type == KVX_JV_NULL);
        KVX_CHECK(a && a->len == 2 && a->items[1].items[1].type == KVX_JV_OBJECT);
    }
    kvx_jv_free(v);
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "1e", "\"\\x\"", "\"\\ud800\"",
        "\"\\udc00x\"", "\"a\tb\"", "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "tru",
        "nul", "{\"a\":1,\"a\":2}", "[1] [2]", "\"unterminated",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        v = NULL;
        if (kvx_jv_parse(bad[k], strlen(bad[k]), &v, &err) != KVX_ERR_FORMAT || v)
            kvx_test_fail(__FILE__, __LINE__, "'%s' was accepted", bad[k]);
        kvx_jv_free(v);
    }
    /* a locale whose decimal point is ',' does not change how JSON numbers read */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        v = NULL;
        KVX_CHECK(kvx_jv_parse("[2.5e-1]", 8, &v, &err) == KVX_OK && v && v->items[0].num == 0.25);
        kvx_jv_free(v);
        setlocale(LC_NUMERIC, "C");
    }
    /* nesting: 64 levels accepted, 65 refused */
    char deep[200];
    for (int d = 64; d <= 65; d++) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        v = NULL;
        enum kvx_status s = kvx_jv_parse(deep, (size_t)(2 * d), &v, &err);
        KVX_CHECK(d == 64 ? s == KVX_OK : s == KVX_ERR_FORMAT && strstr(err.msg, "deep"));
        kvx_jv_free(v);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* FP8 */

KVX_TEST(st_fp8_e4m3_values)
{
    /* s eeee mmm, bias 7: 0x38 = 2^0, 0x40 = 2^1, 0x3C = 1.5, 0x7E = 2^8 * 1.75 = 448 (max),
     * 0x08 = 2^-6 (smallest normal), 0x01 = 2^-9 (smallest subnormal), 0x07 = 7 * 2^-9 */
    const struct { uint8_t b; float v; } cases[] = {
        {0x00, 0.0f}, {0x38, 1.0f}, {0x40, 2.0f}, {0x3C, 1.5f}, {0xC0, -2.0f}, {0x7E, 448.0f},
        {0xFE, -448.0f}, {0x08, 0.015625f}, {0x01, 0.001953125f}, {0x07, 0.013671875f},
        {0x30, 0.5f}, {0x4C, 6.0f}, {0x46, 3.5f}, {0x78, 256.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (kvx_st_fp8_e4m3_to_f32(cases[i].b) != cases[i].v)
            kvx_test_fail(__FILE__, __LINE__, "fp8 0x%02x = %g, want %g", cases[i].b,
                          (double)kvx_st_fp8_e4m3_to_f32(cases[i].b), (double)cases[i].v);
    KVX_CHECK(isnan(kvx_st_fp8_e4m3_to_f32(0x7F)) && isnan(kvx_st_fp8_e4m3_to_f32(0xFF)));
    /* every byte: sign symmetry and monotone magnitudes */
    for (int b = 1; b < 0x7F; b++)
        KVX_CHECK(kvx_st_fp8_e4m3_to_f32((uint8_t)b) > kvx_st_fp8_e4m3_to_f32((uint8_t)(b - 1)) &&
                  kvx_st_fp8_e4m3_to_f32((uint8_t)(b | 0x80)) == -kvx_st_fp8_e4m3_to_f32((uint8_t)b));
}

KVX_TEST(st_fp8_block_dequant)
{
    /* w: 3x3 FP8, blocks of 2x2 → a 2x2 grid of F32 scales */
    char hdr[512];
    snprintf(hdr, sizeof hdr, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[3,3],\"data_offsets\":[0,9]},"
             "\"w_scale_inv\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[12,28]},"
             "\"bad_scale\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[28,36]}}");
    size_t size;
    uint8_t *b = image(hdr, 36, &size);
    uint8_t *data = b + size - 36;
    const uint8_t w[9] = {0x38, 0x40, 0x3C, 0xC0, 0x30, 0x01, 0x7E, 0x08, 0x00};
    const float sc[4] = {2.0f, 0.5f, -1.0f, 10.0f};
    memcpy(data, w, 9);
    memcpy(data + 12, sc, 16);
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_st_parse(b, size, &st, &err) == KVX_OK);
    if (st) {
        float out[9];
        KVX_CHECK(kvx_st_dequant_fp8(kvx_st_find(st, "w"), kvx_st_find(st, "w_scale_inv"), 2, 2,
                                     out, &err) == KVX_OK);
        /* rows 0-1 x cols 0-1: scale 2; rows 0-1 x col 2: 0.5; row 2 x cols 0-1: -1; row 2 col 2: 10 */
        const float want[9] = {1 * 2.0f, 2 * 2.0f, 1.5f * 0.5f, -2 * 2.0f, 0.5f * 2.0f,
                               0.001953125f * 0.5f, 448 * -1.0f, 0.015625f * -1.0f, 0};
        for (int i = 0; i < 9; i++)
            KVX_CHECK(out[i] == want[i]);
        KVX_CHECK(kvx_st_dequant_fp8(kvx_st_find(st, "w"), kvx_st_find(st, "bad_scale"), 2, 2, out,
                                     &err) == KVX_ERR_FORMAT);
        KVX_CHECK(strstr(err.msg, "'bad_scale'") && strstr(err.msg, "'w'"));
        /* the same weight, one 4x4 block: the whole grid is one scale (1x1 expected: refused) */
        KVX_CHECK(kvx_st_dequant_fp8(kvx_st_find(st, "w"), kvx_st_find(st, "w_scale_inv"), 4, 4,
                                     out, &err) == KVX_ERR_FORMAT);
        float f[3];
        KVX_CHECK(kvx_st_read_f32(kvx_st_find(st, "w"), f, 3, &err) == KVX_OK);
        KVX_CHECK(f[0] == 1.0f && f[1] == 2.0f && f[2] == 1.5f);
    }
    kvx_st_close(st);
    free(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Files on disk: sharded sets, config.json */

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    KVX_CHECK(f && fwrite(data, 1, n, f) == n);
    if (f)
        fclose(f);
}

static void write_str(const char *dir, const char *name, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_file(p, text, strlen(text));
}

static void write_image(const char *dir, const char *name, const char *header, size_t data_len)
{
    size_t size;
    uint8_t *b = image(header, data_len, &size);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_file(p, b, size);
    free(b);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

KVX_TEST(st_sharded_index)
{
    char dir[] = "/tmp/kvx-st-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    write_image(dir, "s1.safetensors", T1 "}", 8);
    write_image(dir, "s2.safetensors",
                "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    char idx[1024];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    /* a good index; opened through the folder too */
    write_str(dir, "model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":"
              "{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    write_image(dir, "s3.safetensors",
                "{\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                "\"d\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4);
    KVX_CHECK(kvx_st_open(dir, &st, &err) == KVX_OK);
    KVX_CHECK(st && st->n_shards == 2 && st->n_tensors == 2 && kvx_st_find(st, "b") &&
              kvx_st_find(st, "b")->shard == 1);
    kvx_st_close(st);
    st = NULL;
    struct { const char *index; enum kvx_status want; const char *needle; } cases[] = {
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"missing.safetensors\"}}",
         KVX_ERR_NOT_FOUND, "missing.safetensors"},
        {"{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s2.safetensors\"}}", KVX_ERR_FORMAT,
         "'a'"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", KVX_ERR_FORMAT,
         "'b'"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\",\"c\":\"s3.safetensors\"}}",
         KVX_ERR_FORMAT, "'d' of shard 's3.safetensors' is not in the index"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"../s2.safetensors\"}}",
         KVX_ERR_FORMAT, "weight_map['b']"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
         KVX_ERR_FORMAT, "duplicate"},
        {"{\"metadata\":{}}", KVX_ERR_FORMAT, "weight_map"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"", KVX_ERR_FORMAT,
         "model.safetensors.index.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_str(dir, "model.safetensors.index.json", cases[i].index);
        enum kvx_status s = kvx_st_open(idx, &st, &err);
        if (s != cases[i].want || st || !strstr(err.msg, cases[i].needle))
            kvx_test_fail(__FILE__, __LINE__, "index %s: status %d, '%s'", cases[i].index, s,
                          err.msg);
        kvx_st_close(st);
        st = NULL;
    }
    /* the same tensor in two shards */
    write_image(dir, "s2.safetensors", T1 "}", 8);
    write_str(dir, "model.safetensors.index.json",
              "{\"weight_map\":{\"a\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}}");
    KVX_CHECK(kvx_st_open(idx, &st, &err) == KVX_ERR_FORMAT && strstr(err.msg, "twice"));
    /* a shard whose header lies: the message names the shard file */
    write_image(dir, "s2.safetensors",
                "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    write_str(dir, "model.safetensors.index.json",
              "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}");
    KVX_CHECK(kvx_st_open(idx, &st, &err) == KVX_ERR_FORMAT && strstr(err.msg, "s2.safetensors") &&
              strstr(err.msg, "'b'"));
    /* an empty folder */
    unlink(idx);
    char p[1024];
    snprintf(p, sizeof p, "%s/s1.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/s2.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/s3.safetensors", dir);
    unlink(p);
    KVX_CHECK(kvx_st_open(dir, &st, &err) == KVX_ERR_NOT_FOUND && strstr(err.msg, "neither"));
    rm_dir(dir);
}

/* A folder holding config.json `cfg` and a symlink to the llama_gqa fixture's weights. */
static void model_dir(char *dir, const char *cfg)
{
    char target[PATH_MAX], abs_target[PATH_MAX], link[1100];
    snprintf(target, sizeof target, "%s/llama_gqa/model.safetensors", kvx_test_fixture("arch"));
    if (!realpath(target, abs_target))
        snprintf(abs_target, sizeof abs_target, "%s", target);
    snprintf(link, sizeof link, "%s/model.safetensors", dir);
    unlink(link);
    KVX_CHECK(symlink(abs_target, link) == 0);
    write_str(dir, "config.json", cfg);
}

/* The llama_gqa fixture's config with `edit` spliced in after the opening brace (a later
 * duplicate would be refused, so the keys edited here are left out of the base). */
static enum kvx_status open_with(const char *dir, const char *edit, const char *drop,
                                 struct kvx_model **m, struct kvx_err *err)
{
    static const char *const base[] = {
        "\"model_type\": \"llama\"", "\"hidden_size\": 64", "\"intermediate_size\": 128",
        "\"num_hidden_layers\": 3", "\"num_attention_heads\": 4", "\"num_key_value_heads\": 2",
        "\"vocab_size\": 256", "\"rms_norm_eps\": 1e-05", "\"max_position_embeddings\": 256",
        "\"tie_word_embeddings\": false", "\"head_dim\": 16",
        "\"rope_parameters\": {\"rope_theta\": 10000.0, \"rope_type\": \"default\"}",
    };
    char cfg[2048] = "{";
    size_t n = 1;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        char key[64];
        sscanf(base[i], "\"%63[^\"]", key);
        if ((drop && strstr(drop, key)) || (edit && strstr(edit, key)))
            continue;
        n += (size_t)snprintf(cfg + n, sizeof cfg - n, "%s%s", n > 1 ? ", " : "", base[i]);
    }
    if (edit && *edit)
        n += (size_t)snprintf(cfg + n, sizeof cfg - n, ", %s", edit);
    snprintf(cfg + n, sizeof cfg - n, "}");
    model_dir((char *)dir, cfg);
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    *m = NULL;
    return kvx_model_open(&mc, m, err);
}

KVX_TEST(st_config_keys)
{
    char dir[] = "/tmp/kvx-cfg-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    struct kvx_model_info info;
    /* the base config opens; head_dim absent → hidden / heads */
    KVX_CHECK(open_with(dir, NULL, "head_dim", &m, &err) == KVX_OK);
    if (m) {
        kvx_model_get_info(m, &info);
        KVX_CHECK(info.head_dim == 16 && info.n_head_kv == 2 && info.n_layer == 3 &&
                  info.n_vocab == 256 && strcmp(info.arch, "llama") == 0 && !info.has_tokenizer);
        int32_t ids[4];
        int64_t n_out = -1;
        KVX_CHECK(kvx_tokenize(m, "hi", 2, false, false, ids, 4, &n_out, &err) ==
                  KVX_ERR_UNSUPPORTED && strstr(err.msg, "tokenizer") && n_out == 0);
        kvx_model_close(m);
    }
    /* "head_dim": null also means hidden / heads; legacy rope_theta + rope_scaling linear */
    KVX_CHECK(open_with(dir, "\"head_dim\": null, \"rope_theta\": 5000.0, \"rope_scaling\": "
                        "{\"type\": \"linear\", \"factor\": 4.0}", "rope_parameters", &m, &err) == KVX_OK);
    if (m) {
        KVX_CHECK(m->hp.head_dim == 16 && m->hp.rope_theta == 5000.0f &&
                  m->hp.rope_freq_scale == 0.25f && m->hp.rope_kind == KVX_ROPE_NEOX);
        kvx_model_close(m);
    }
    /* num_key_value_heads absent → heads: the fixture's k_proj (2 heads) then contradicts it */
    KVX_CHECK(open_with(dir, NULL, "num_key_value_heads", &m, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(strstr(err.msg, "model.layers.0.self_attn.k_proj.weight") &&
              strstr(err.msg, "[32, 64]") && strstr(err.msg, "[64, 64]"));
    struct { const char *edit, *drop; enum kvx_status want; const char *needle; } cases[] = {
        {NULL, "hidden_size", KVX_ERR_FORMAT, "'hidden_size' is missing"},
        {NULL, "model_type", KVX_ERR_FORMAT, "'model_type' is missing"},
        {"\"model_type\": \"gpt_oss\"", NULL, KVX_ERR_UNSUPPORTED, "'gpt_oss'"},
        {"\"num_hidden_layers\": 4", NULL, KVX_ERR_FORMAT, "model.layers.3.input_layernorm.weight"},
        {"\"num_hidden_layers\": \"3\"", NULL, KVX_ERR_FORMAT, "'num_hidden_layers' is a string"},
        {"\"vocab_size\": 300", NULL, KVX_ERR_FORMAT, "model.embed_tokens.weight"},
        {"\"num_attention_heads\": 3", "head_dim", KVX_ERR_FORMAT, "head_dim"},
        {"\"num_key_value_heads\": 3", NULL, KVX_ERR_FORMAT, "num_key_value_heads"},
        {"\"intermediate_size\": 96", NULL, KVX_ERR_FORMAT, "mlp.gate_proj.weight"},
        {"\"tie_word_embeddings\": true", NULL, KVX_OK, ""},
        {"\"attention_bias\": true", NULL, KVX_ERR_FORMAT, "self_attn.q_proj.bias"},
        {"\"hidden_act\": \"gelu\"", NULL, KVX_ERR_UNSUPPORTED, "hidden_act"},
        {"\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", NULL,
         KVX_ERR_UNSUPPORTED, "'yarn'"},
        {"\"rope_parameters\": {\"rope_type\": \"linear\"}", NULL, KVX_ERR_FORMAT, "factor"},
        {"\"rope_parameters\": 3", NULL, KVX_ERR_FORMAT, "rope_parameters"},
        {"\"rms_norm_eps\": -1", NULL, KVX_ERR_FORMAT, "rms_norm_eps"},
        {"\"model_type\": \"qwen3\"", NULL, KVX_ERR_FORMAT, "self_attn.q_norm.weight"},
        {"\"model_type\": \"qwen2\"", NULL, KVX_ERR_FORMAT, "self_attn.q_proj.bias"},
        {"\"layer_types\": [\"sliding_attention\", \"full_attention\", \"full_attention\"]", NULL,
         KVX_ERR_UNSUPPORTED, "layer_types[0]"},
        {"\"model_type\": \"mistral\", \"layer_types\": [\"sliding_attention\", "
         "\"sliding_attention\", \"sliding_attention\"]", NULL, KVX_ERR_UNSUPPORTED,
         "layer_types[0]"},
        {"\"layer_types\": [\"full_attention\"]", NULL, KVX_ERR_FORMAT, "has 1 entries"},
        {"\"model_type\": \"mistral\", \"sliding_window\": 100", NULL, KVX_OK, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err.msg[0] = '\0';
        enum kvx_status s = open_with(dir, cases[i].edit, cases[i].drop, &m, &err);
        if (s != cases[i].want || (s != KVX_OK && (m || !strstr(err.msg, cases[i].needle))))
            kvx_test_fail(__FILE__, __LINE__, "config +%s -%s: status %d, '%s'",
                          cases[i].edit ? cases[i].edit : "", cases[i].drop ? cases[i].drop : "",
                          s, err.msg);
        if (m && i + 1 == sizeof cases / sizeof cases[0]) {
            /* the window makes WINDOW layers; the context stays max_position_embeddings */
            KVX_CHECK_EQ_INT(m->hp.n_ctx_train, 256);
            struct kvx_kv_layout l = {0};
            if (kvx_kv_layout_init(&l, m->hp.n_layer, 16, &err) == KVX_OK) {
                m->arch->declare_cache(m, &l, KVX_KV_CODEC_F32, KVX_KV_CODEC_F32);
                for (int j = 0; j < l.n_layer; j++)
                    KVX_CHECK(l.layers[j].kind == KVX_KV_KIND_WINDOW && l.layers[j].window == 100);
                kvx_kv_layout_free(&l);
            }
        }
        kvx_model_close(m);
        m = NULL;
    }
    /* the config.json path itself opens the model too; a missing config.json is named */
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = p;
    KVX_CHECK(kvx_model_open(&mc, &m, &err) == KVX_OK);
    kvx_model_close(m);
    m = NULL;
    unlink(p);
    mc.path = dir;
    KVX_CHECK(kvx_model_open(&mc, &m, &err) != KVX_OK && strstr(err.msg, "config.json") && !m);
    rm_dir(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* Fuzz seeds */

static const struct { const char *name, *header; size_t data; } seeds[] = {
    {"one.safetensors", T1 "}", 8},
    {"meta.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"\\u00e9\"},"
                         "\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 20},
    {"fp8.safetensors", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[3,3],\"data_offsets\":[0,9]},"
                        "\"w_scale_inv\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[12,28]}}",
     28},
    {"types.safetensors", "{\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
                          "\"c\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[8,10]}}",
     10},
    {"empty.safetensors", "{}", 0},
    {"fp4.safetensors", "{\"w.weight\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                        "\"w.scale\":{\"dtype\":\"F8_E8M0\",\"shape\":[2,1],\"data_offsets\":[4,6]},"
                        "\"v.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[3,3],\"data_offsets\":[6,15]},"
                        "\"v.scale\":{\"dtype\":\"F8_E8M0\",\"shape\":[1,1],\"data_offsets\":[15,16]}}",
     16},
};

KVX_TEST(st_fuzz_seeds)
{
    const char *out = getenv("KVX_ST_WRITE_SEEDS");
    for (size_t i = 0; out && i < sizeof seeds / sizeof seeds[0]; i++)
        write_image(out, seeds[i].name, seeds[i].header, seeds[i].data);
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        expect(seeds[i].header, seeds[i].data, KVX_OK, NULL);
    const char *dir = "fuzz/seeds/fuzz_safetensors";
    DIR *d = opendir(dir);
    if (!d) {
        kvx_test_skip("fuzz/seeds/fuzz_safetensors not found (run from the repository root)");
        return;
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct kvx_safetensors *st = NULL;
        struct kvx_err err = {0};
        if (kvx_st_open(path, &st, &err) != KVX_OK)
            kvx_test_fail(__FILE__, __LINE__, "seed %s: %s", path, err.msg);
        kvx_st_close(st);
        n++;
    }
    closedir(d);
    KVX_CHECK(n >= (int)(sizeof seeds / sizeof seeds[0]));
}
