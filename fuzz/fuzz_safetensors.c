/* fuzz/fuzz_safetensors: libFuzzer target for the safetensors reader (io/safetensors.c) and,
 * through it, the JSON reader (util/json.c).
 *
 * Parses the input with kvx_st_parse; on success checks what the header promised: every
 * tensor's bytes lie inside the input after the header (first and last byte touched, so ASan
 * sees a view that points outside), sizes equal shape x dtype, names are unique and found by
 * lookup, no two non-empty tensors overlap; F32/F16/BF16/FP8 tensors are converted (the first
 * elements).  The input is also parsed as a bare JSON text (config.json / index files go
 * through the same reader).  Seeds: fuzz/seeds/fuzz_safetensors/ (written by
 * tests/test_safetensors.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "util/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned fuzz_tensor(const struct kvx_safetensors *st, const struct kvx_st_tensor *t,
                            const uint8_t *data, size_t size)
{
    const struct kvx_st_shard *sh = &st->shards[0];
    if (t->shard != 0 || sh->data_offset > size || t->data < data + sh->data_offset ||
        t->data + t->nbytes > data + size || kvx_st_find(st, t->name) != t ||
        t->nbytes != (size_t)t->n_elem * kvx_st_dtype_size(t->dtype))
        __builtin_trap();
    unsigned h = (unsigned)t->n_dims;
    if (t->nbytes)
        h += t->data[0] + t->data[t->nbytes - 1];
    float f[8];
    int64_t n = t->n_elem < 8 ? t->n_elem : 8;
    if (kvx_st_read_f32(t, f, n, NULL) == KVX_OK)
        for (int64_t i = 0; i < n; i++)
            h += f[i] > 0.0f;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kvx_jv *jv = NULL;
    struct kvx_err err;
    err.msg[0] = '\0';
    if (kvx_jv_parse((const char *)data, size, &jv, &err) == KVX_OK) {
        if (!jv)
            __builtin_trap();
        (void)kvx_jv_get(jv, "weight_map");
    } else if (jv || err.msg[0] == '\0') {
        __builtin_trap();
    }
    kvx_jv_free(jv);

    struct kvx_safetensors *st = NULL;
    err.msg[0] = '\0';
    if (kvx_st_parse(data, size, &st, &err) != KVX_OK) {
        if (st != NULL || err.msg[0] == '\0' || strlen(err.msg) >= sizeof err.msg)
            __builtin_trap(); /* a failure returns nothing and always says why */
        return 0;
    }
    volatile unsigned sink = 0;
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        sink += fuzz_tensor(st, &st->tensors[i], data, size);
        if (i && strcmp(st->tensors[i - 1].name, st->tensors[i].name) >= 0)
            __builtin_trap(); /* sorted and unique */
    }
    /* overlap, checked the slow way */
    for (uint64_t i = 0; i < st->n_tensors && st->n_tensors < 64; i++)
        for (uint64_t j = i + 1; j < st->n_tensors; j++) {
            const struct kvx_st_tensor *a = &st->tensors[i], *b = &st->tensors[j];
            if (a->nbytes && b->nbytes && a->data < b->data + b->nbytes &&
                b->data < a->data + a->nbytes)
                __builtin_trap();
        }
    for (uint32_t i = 0; i < st->n_meta; i++)
        sink += (unsigned)strlen(st->meta_keys[i]) + (unsigned)strlen(st->meta_vals[i]);
    (void)sink;
    kvx_st_close(st);
    return 0;
}
