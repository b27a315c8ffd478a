/* fuzz/fuzz_gguf: libFuzzer target for the GGUF reader (io/gguf.c).
 *
 * Parses the input with kvx_gguf_parse; on success walks every key/value pair (calling each
 * typed getter and reading every array element, nested arrays included) and every tensor
 * (lookup by name, first and last data byte), so ASan sees any view that points outside the
 * input.  Seeds: fuzz/seeds/fuzz_gguf/ (written by tests/test_gguf.c). */
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "io/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned fuzz_touch_str(struct kvx_gguf_str s)
{
    unsigned h = (unsigned)s.len;
    if (s.len) /* first and last byte: the whole view must be inside the input */
        h += (unsigned char)s.ptr[0] + (unsigned char)s.ptr[s.len - 1];
    return h;
}

static unsigned fuzz_walk_value(const struct kvx_gguf_value *v, int depth)
{
    unsigned h = (unsigned)v->type;
    if (depth > 16) /* the reader limits nesting to 8: deeper means it is broken */
        __builtin_trap();
    if (v->type == KVX_GGUF_STRING)
        return h + fuzz_touch_str(v->v.str);
    if (v->type != KVX_GGUF_ARRAY)
        return h;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (v->v.arr.elem == KVX_GGUF_STRING)
            h += fuzz_touch_str(v->v.arr.strs[i]);
        else if (v->v.arr.elem == KVX_GGUF_ARRAY)
            h += fuzz_walk_value(&v->v.arr.items[i], depth + 1);
        else
            h += (unsigned)kvx_gguf_arr_i64(v, i) + (unsigned)(kvx_gguf_arr_f64(v, i) != 0.0);
    }
    h += (unsigned)kvx_gguf_arr_i64(v, v->v.arr.n); /* one past the end: must return 0 */
    return h;
}

/* Every getter on one key; the key must name the first pair with that name. */
static unsigned fuzz_getters(const struct kvx_gguf *g, const struct kvx_gguf_kv *kv)
{
    char key[256];
    if (kv->key.len >= sizeof key || memchr(kv->key.ptr, '\0', kv->key.len))
        return 0;
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = '\0';
    if (kvx_gguf_find(g, key) != kv)
        __builtin_trap(); /* duplicate keys must have been rejected */
    struct kvx_err err;
    uint32_t u32;
    int64_t i64;
    float f;
    bool b;
    struct kvx_gguf_str s;
    const struct kvx_gguf_value *arr;
    unsigned h = 0;
    h += kvx_gguf_get_u32(g, key, &u32, &err) == KVX_OK ? u32 : (unsigned)strlen(err.msg);
    h += kvx_gguf_get_i64(g, key, &i64, &err) == KVX_OK ? (unsigned)i64 : 1;
    h += kvx_gguf_get_f32(g, key, &f, &err) == KVX_OK ? (unsigned)isnan(f) : 1;
    h += kvx_gguf_get_bool(g, key, &b, &err) == KVX_OK ? b : 1;
    h += kvx_gguf_get_str(g, key, &s, NULL) == KVX_OK ? fuzz_touch_str(s) : 1;
    for (int t = 0; t < KVX_GGUF_TYPE_COUNT; t++)
        h += kvx_gguf_get_arr(g, key, (enum kvx_gguf_type)t, &arr, &err) == KVX_OK;
    return h;
}

static unsigned fuzz_tensors(const struct kvx_gguf *g)
{
    unsigned h = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const struct kvx_gguf_tensor *t = &g->tensors[i];
        const uint8_t *p = t->data;
        if (p < g->base + g->data_offset || t->nbytes == 0 || t->n_dims < 1 ||
            t->n_dims > KVX_GGUF_MAX_DIMS || (size_t)(p - g->base) % g->alignment != 0)
            __builtin_trap();
        h += p[0] + p[t->nbytes - 1] + fuzz_touch_str(t->name);
        char name[256];
        if (t->name.len < sizeof name && !memchr(t->name.ptr, '\0', t->name.len)) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = '\0';
            if (kvx_gguf_find_tensor(g, name) != t)
                __builtin_trap(); /* duplicate names must have been rejected */
        }
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvx_gguf *g = NULL;
    struct kvx_err err;
    err.msg[0] = '\0';
    if (kvx_gguf_parse(data, size, &g, &err) != KVX_OK) {
        if (g != NULL || err.msg[0] == '\0' || strlen(err.msg) >= sizeof err.msg)
            __builtin_trap(); /* a failure returns nothing and always says why */
        return 0;
    }
    volatile unsigned sink = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        sink += fuzz_walk_value(&g->kv[i].val, 0) + fuzz_touch_str(g->kv[i].key);
        sink += fuzz_getters(g, &g->kv[i]);
    }
    sink += fuzz_tensors(g);
    (void)sink;
    kvx_gguf_close(g);
    return 0;
}
