/* fuzz/fuzz_safetensors: libFuzzer target for the safetensors reader (io/safetensors.c) and,
 * through it, the JSON reader (util/json.c).
 *
 * Parses the input with kvx_st_parse; on success checks what the header promised: every
 * tensor's bytes lie inside the input after the header (first and last byte touched, so ASan
 * sees a view that points outside), sizes equal shape x dtype, names are unique and found by
 * lookup, no two non-empty tensors overlap; F32/F16/BF16/FP8 tensors are converted (the first
 * elements); every 2-D F8_E4M3 or I8/U8 tensor is dequantized (FP8 block scales, packed FP4)
 * against every tensor as its scale grid.  The input is also parsed as a bare JSON text (config.json / index files go
 * through the same reader).  Seeds: fuzz/seeds/fuzz_safetensors/ (written by
 * tests/test_safetensors.c). */
#include <stdbool.h>
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

/* Dequantize w against scale s: FP8 in 2x2 and 128x128 blocks, FP4 in blocks of 1 and 32
 * inputs.  A failure must say why. */
static unsigned fuzz_dequant(const struct kvx_st_tensor *w, const struct kvx_st_tensor *s)
{
    const bool fp8 = w->dtype == KVX_ST_F8_E4M3,
               fp4 = w->dtype == KVX_ST_I8 || w->dtype == KVX_ST_U8;
    if (w->n_dims != 2 || (!fp8 && !fp4) || w->n_elem > 4096)
        return 0;
    float *dst = malloc((size_t)w->n_elem * 2 * sizeof *dst + 1);
    if (!dst)
        return 0;
    unsigned h = 0;
    for (int k = 0; k < 2; k++) {
        struct kvx_err err;
        err.msg[0] = '\0';
        const int64_t b = k ? (fp8 ? 128 : 32) : (fp8 ? 2 : 1);
        const enum kvx_status st = fp8 ? kvx_st_dequant_fp8(w, s, b, b, dst, &err)
                                       : kvx_st_dequant_fp4(w, s, b, dst, &err);
        if (st != KVX_OK && err.msg[0] == '\0')
            __builtin_trap();
        if (st == KVX_OK)
            for (int64_t i = 0; i < w->n_elem * (fp4 ? 2 : 1); i++)
                h += dst[i] > 0.0f;
    }
    free(dst);
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
    for (uint64_t i = 0; i < st->n_tensors && st->n_tensors < 16; i++)
        for (uint64_t j = 0; j < st->n_tensors; j++)
            sink += fuzz_dequant(&st->tensors[i], &st->tensors[j]);
    for (uint32_t i = 0; i < st->n_meta; i++)
        sink += (unsigned)strlen(st->meta_keys[i]) + (unsigned)strlen(st->meta_vals[i]);
    (void)sink;
    kvx_st_close(st);
    return 0;
}
