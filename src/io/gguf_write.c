/* io/gguf_write: a GGUF v3 writer that builds the whole image in memory.
 *
 * Owns: encoding key/value pairs (every value type, nested arrays included) and tensor infos,
 * laying tensor data out at aligned offsets, and writing the image to a file.
 *
 * It is deliberately permissive about tensors: the type, shape and byte count are written as
 * given (only n_dims <= KVX_GGUF_MAX_DIMS is required, to bound the info), so tests can make
 * lying files; the reader is the one that checks.  Scalar values must fit their type.
 *
 * Errors from the add_* calls are sticky: the first one is kept and reported again by finish
 * and save, so a caller may check only the last call. */
#include "io/gguf_write.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

#define GGUF_W_DEFAULT_ALIGNMENT 32
#define GGUF_W_MAX_NEST 64 /* deeper than the reader allows, so tests can write hostile files */

struct gguf_wbuf {
    uint8_t *p;
    size_t len, cap;
};

struct gguf_wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[KVX_GGUF_MAX_DIMS];
    uint8_t *data;
    size_t nbytes;
};

struct kvx_gguf_writer {
    uint32_t alignment;
    struct gguf_wbuf kv;        /* the encoded key/value pairs, in order */
    uint64_t n_kv;
    bool has_alignment_key;     /* the caller wrote general.alignment itself */
    struct gguf_wtensor *tensors;
    size_t n_tensors, cap_tensors;
    struct kvx_err first_err;   /* status != KVX_OK once an add_* call failed */
};

static bool wbuf_put(struct gguf_wbuf *b, const void *src, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return false;
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    return true;
}

static bool wbuf_u32(struct gguf_wbuf *b, uint32_t x) { return wbuf_put(b, &x, sizeof x); }
static bool wbuf_u64(struct gguf_wbuf *b, uint64_t x) { return wbuf_put(b, &x, sizeof x); }

static bool wbuf_str(struct gguf_wbuf *b, const char *s, uint64_t len)
{
    return wbuf_u64(b, len) && wbuf_put(b, s, (size_t)len);
}

static const char *gguf_w_nz(const char *s) { return s ? s : "(null)"; }

/* Records the first failure; returns `status`. */
static enum kvx_status gguf_w_fail(struct kvx_gguf_writer *w, enum kvx_status status,
                                   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static enum kvx_status gguf_w_fail(struct kvx_gguf_writer *w, enum kvx_status status,
                                   const char *fmt, ...)
{
    if (w && w->first_err.status == KVX_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first_err.msg, sizeof w->first_err.msg, fmt, ap);
        va_end(ap);
        w->first_err.status = status;
    }
    return status;
}

enum kvx_status kvx_gguf_writer_create(uint32_t alignment, struct kvx_gguf_writer **out,
                                       struct kvx_err *err)
{
    if (!out)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kvx_gguf_writer_create: NULL out");
    *out = NULL;
    if (alignment == 0)
        alignment = GGUF_W_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "GGUF alignment %" PRIu32 " is not a power of two", alignment);
    struct kvx_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    w->alignment = alignment;
    *out = w;
    return KVX_OK;
}

void kvx_gguf_writer_destroy(struct kvx_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* ---------------------------------------------------------------------------------------------
 * Values */

static size_t gguf_w_scalar_size(uint32_t t)
{
    switch (t) {
    case KVX_GGUF_UINT8: case KVX_GGUF_INT8: case KVX_GGUF_BOOL: return 1;
    case KVX_GGUF_UINT16: case KVX_GGUF_INT16: return 2;
    case KVX_GGUF_UINT32: case KVX_GGUF_INT32: case KVX_GGUF_FLOAT32: return 4;
    case KVX_GGUF_UINT64: case KVX_GGUF_INT64: case KVX_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Encodes a scalar value; false when it does not fit its type. */
static bool gguf_w_scalar(struct gguf_wbuf *b, const struct kvx_gguf_value *v, bool *fits)
{
    uint64_t u = v->v.u64;
    int64_t i = v->v.i64;
    *fits = true;
    switch (v->type) {
    case KVX_GGUF_UINT8: *fits = u <= UINT8_MAX; return wbuf_put(b, &(uint8_t){(uint8_t)u}, 1);
    case KVX_GGUF_UINT16: *fits = u <= UINT16_MAX; return wbuf_put(b, &(uint16_t){(uint16_t)u}, 2);
    case KVX_GGUF_UINT32: *fits = u <= UINT32_MAX; return wbuf_u32(b, (uint32_t)u);
    case KVX_GGUF_UINT64: return wbuf_u64(b, u);
    case KVX_GGUF_INT8:
        *fits = i >= INT8_MIN && i <= INT8_MAX;
        return wbuf_put(b, &(int8_t){(int8_t)i}, 1);
    case KVX_GGUF_INT16:
        *fits = i >= INT16_MIN && i <= INT16_MAX;
        return wbuf_put(b, &(int16_t){(int16_t)i}, 2);
    case KVX_GGUF_INT32:
        *fits = i >= INT32_MIN && i <= INT32_MAX;
        return wbuf_put(b, &(int32_t){(int32_t)i}, 4);
    case KVX_GGUF_INT64: return wbuf_put(b, &i, 8);
    case KVX_GGUF_FLOAT32: return wbuf_put(b, &(float){(float)v->v.f64}, 4);
    case KVX_GGUF_FLOAT64: return wbuf_put(b, &v->v.f64, 8);
    case KVX_GGUF_BOOL: return wbuf_put(b, &(uint8_t){v->v.b ? 1 : 0}, 1);
    default: *fits = false; return true;
    }
}

/* An array body: element type, count, elements.  Returns INVALID_ARG or NOMEM. */
static enum kvx_status gguf_w_array(struct gguf_wbuf *b, const struct kvx_gguf_value *v,
                                    int depth)
{
    uint32_t elem = v->v.arr.elem;
    uint64_t n = v->v.arr.n;
    if (depth >= GGUF_W_MAX_NEST || elem >= KVX_GGUF_TYPE_COUNT)
        return KVX_ERR_INVALID_ARG;
    if (!wbuf_u32(b, elem) || !wbuf_u64(b, n))
        return KVX_ERR_NOMEM;
    if (n == 0)
        return KVX_OK;
    if (elem == KVX_GGUF_STRING) {
        if (!v->v.arr.strs)
            return KVX_ERR_INVALID_ARG;
        for (uint64_t i = 0; i < n; i++)
            if (!wbuf_str(b, v->v.arr.strs[i].ptr, v->v.arr.strs[i].len))
                return KVX_ERR_NOMEM;
        return KVX_OK;
    }
    if (elem == KVX_GGUF_ARRAY) {
        if (!v->v.arr.items)
            return KVX_ERR_INVALID_ARG;
        for (uint64_t i = 0; i < n; i++) {
            if (v->v.arr.items[i].type != KVX_GGUF_ARRAY)
                return KVX_ERR_INVALID_ARG;
            enum kvx_status st = gguf_w_array(b, &v->v.arr.items[i], depth + 1);
            if (st != KVX_OK)
                return st;
        }
        return KVX_OK;
    }
    size_t esz = gguf_w_scalar_size(elem);
    if (!v->v.arr.raw || n > SIZE_MAX / esz)
        return KVX_ERR_INVALID_ARG;
    return wbuf_put(b, v->v.arr.raw, (size_t)n * esz) ? KVX_OK : KVX_ERR_NOMEM;
}

static enum kvx_status gguf_w_value(struct gguf_wbuf *b, const struct kvx_gguf_value *v)
{
    if (v->type == KVX_GGUF_ARRAY)
        return gguf_w_array(b, v, 0);
    if (v->type == KVX_GGUF_STRING)
        return (v->v.str.len && !v->v.str.ptr) ? KVX_ERR_INVALID_ARG
               : wbuf_str(b, v->v.str.ptr, v->v.str.len) ? KVX_OK
                                                          : KVX_ERR_NOMEM;
    bool fits;
    if (!gguf_w_scalar(b, v, &fits))
        return KVX_ERR_NOMEM;
    return fits ? KVX_OK : KVX_ERR_INVALID_ARG;
}

/* Any value, nested arrays included: the representation the reader produces.  Not in the
 * header's original list; added so tests can round-trip every type and copy values across. */
enum kvx_status kvx_gguf_writer_add_value(struct kvx_gguf_writer *w, const char *key,
                                          const struct kvx_gguf_value *v)
{
    if (!w)
        return KVX_ERR_INVALID_ARG;
    if (w->first_err.status != KVX_OK)
        return w->first_err.status;
    if (!key || !v || (unsigned)v->type >= KVX_GGUF_TYPE_COUNT)
        return gguf_w_fail(w, KVX_ERR_INVALID_ARG, "key '%s': invalid value", gguf_w_nz(key));
    size_t mark = w->kv.len;
    enum kvx_status st = KVX_ERR_NOMEM;
    if (wbuf_str(&w->kv, key, strlen(key)) && wbuf_u32(&w->kv, (uint32_t)v->type))
        st = gguf_w_value(&w->kv, v);
    if (st != KVX_OK) {
        w->kv.len = mark;
        return gguf_w_fail(w, st, "key '%s': %s", key,
                           st == KVX_ERR_NOMEM ? "out of memory"
                                               : "invalid value (out of range, NULL data, bad "
                                                 "type or nested too deep)");
    }
    w->n_kv++;
    if (strcmp(key, "general.alignment") == 0)
        w->has_alignment_key = true;
    return KVX_OK;
}

enum kvx_status kvx_gguf_writer_add_u32(struct kvx_gguf_writer *w, const char *key, uint32_t v)
{
    struct kvx_gguf_value x = {.type = KVX_GGUF_UINT32, .v.u64 = v};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_i32(struct kvx_gguf_writer *w, const char *key, int32_t v)
{
    struct kvx_gguf_value x = {.type = KVX_GGUF_INT32, .v.i64 = v};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_u64(struct kvx_gguf_writer *w, const char *key, uint64_t v)
{
    struct kvx_gguf_value x = {.type = KVX_GGUF_UINT64, .v.u64 = v};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_f32(struct kvx_gguf_writer *w, const char *key, float v)
{
    struct kvx_gguf_value x = {.type = KVX_GGUF_FLOAT32, .v.f64 = v};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_bool(struct kvx_gguf_writer *w, const char *key, bool v)
{
    struct kvx_gguf_value x = {.type = KVX_GGUF_BOOL, .v.b = v};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_str(struct kvx_gguf_writer *w, const char *key, const char *v)
{
    if (!v)
        return gguf_w_fail(w, KVX_ERR_INVALID_ARG, "key '%s': NULL string", gguf_w_nz(key));
    struct kvx_gguf_value x = {.type = KVX_GGUF_STRING, .v.str = {strlen(v), v}};
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_arr(struct kvx_gguf_writer *w, const char *key,
                                        enum kvx_gguf_type elem, const void *data, uint64_t n)
{
    if (gguf_w_scalar_size(elem) == 0)
        return gguf_w_fail(w, KVX_ERR_INVALID_ARG,
                           "key '%s': add_arr takes scalar elements (use add_str_arr or "
                           "add_value)", gguf_w_nz(key));
    struct kvx_gguf_value x = {.type = KVX_GGUF_ARRAY};
    x.v.arr.elem = elem;
    x.v.arr.n = n;
    x.v.arr.raw = data;
    return kvx_gguf_writer_add_value(w, key, &x);
}

enum kvx_status kvx_gguf_writer_add_str_arr(struct kvx_gguf_writer *w, const char *key,
                                            const char *const *strs, uint64_t n)
{
    if (!w)
        return KVX_ERR_INVALID_ARG;
    if (w->first_err.status != KVX_OK)
        return w->first_err.status;
    if (!key || (n && !strs))
        return gguf_w_fail(w, KVX_ERR_INVALID_ARG, "key '%s': NULL strings", gguf_w_nz(key));
    size_t mark = w->kv.len;
    bool ok = wbuf_str(&w->kv, key, strlen(key)) && wbuf_u32(&w->kv, KVX_GGUF_ARRAY) &&
              wbuf_u32(&w->kv, KVX_GGUF_STRING) && wbuf_u64(&w->kv, n);
    for (uint64_t i = 0; i < n && ok; i++) {
        if (!strs[i]) {
            w->kv.len = mark;
            return gguf_w_fail(w, KVX_ERR_INVALID_ARG, "key '%s': NULL string in array", key);
        }
        ok = wbuf_str(&w->kv, strs[i], strlen(strs[i]));
    }
    if (!ok) {
        w->kv.len = mark;
        return gguf_w_fail(w, KVX_ERR_NOMEM, "key '%s': out of memory", key);
    }
    w->n_kv++;
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Tensors and the finished image */

enum kvx_status kvx_gguf_writer_add_tensor(struct kvx_gguf_writer *w, const char *name,
                                           uint32_t type, uint32_t n_dims, const int64_t *ne,
                                           const void *data, size_t nbytes)
{
    if (!w)
        return KVX_ERR_INVALID_ARG;
    if (w->first_err.status != KVX_OK)
        return w->first_err.status;
    if (!name || n_dims > KVX_GGUF_MAX_DIMS || (n_dims && !ne) || (nbytes && !data))
        return gguf_w_fail(w, KVX_ERR_INVALID_ARG, "tensor '%s': invalid arguments",
                           gguf_w_nz(name));
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        struct gguf_wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            return gguf_w_fail(w, KVX_ERR_NOMEM, "tensor '%s': out of memory", name);
        w->tensors = t;
        w->cap_tensors = cap;
    }
    struct gguf_wtensor t = {.type = type, .n_dims = n_dims, .nbytes = nbytes};
    for (uint32_t d = 0; d < n_dims; d++)
        t.ne[d] = ne[d];
    t.name = strdup(name);
    t.data = malloc(nbytes ? nbytes : 1);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return gguf_w_fail(w, KVX_ERR_NOMEM, "tensor '%s': out of memory", name);
    }
    if (nbytes)
        memcpy(t.data, data, nbytes);
    w->tensors[w->n_tensors++] = t;
    return KVX_OK;
}

static size_t gguf_w_align(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Zero bytes up to the next multiple of `a`. */
static bool wbuf_pad(struct gguf_wbuf *b, size_t a)
{
    static const uint8_t zeros[64];
    while (b->len % a) {
        size_t n = a - b->len % a;
        if (!wbuf_put(b, zeros, n < sizeof zeros ? n : sizeof zeros))
            return false;
    }
    return true;
}

/* The key/value section, tensor infos and tensor data laid out in `b` (which starts empty). */
static bool gguf_w_image(const struct kvx_gguf_writer *w, struct gguf_wbuf *b)
{
    bool auto_align = w->alignment != GGUF_W_DEFAULT_ALIGNMENT && !w->has_alignment_key;
    bool ok = wbuf_put(b, "GGUF", 4) && wbuf_u32(b, 3) && wbuf_u64(b, w->n_tensors) &&
              wbuf_u64(b, w->n_kv + (auto_align ? 1 : 0)) && wbuf_put(b, w->kv.p, w->kv.len);
    if (ok && auto_align)
        ok = wbuf_str(b, "general.alignment", strlen("general.alignment")) &&
             wbuf_u32(b, KVX_GGUF_UINT32) && wbuf_u32(b, w->alignment);
    size_t offset = 0;
    for (size_t i = 0; i < w->n_tensors && ok; i++) {
        const struct gguf_wtensor *t = &w->tensors[i];
        ok = wbuf_str(b, t->name, strlen(t->name)) && wbuf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && ok; d++)
            ok = wbuf_u64(b, (uint64_t)t->ne[d]);
        ok = ok && wbuf_u32(b, t->type) && wbuf_u64(b, offset);
        offset = gguf_w_align(offset + t->nbytes, w->alignment);
    }
    ok = ok && wbuf_pad(b, w->alignment);
    for (size_t i = 0; i < w->n_tensors && ok; i++)
        ok = wbuf_put(b, w->tensors[i].data, w->tensors[i].nbytes) && wbuf_pad(b, w->alignment);
    return ok;
}

enum kvx_status kvx_gguf_writer_finish(struct kvx_gguf_writer *w, uint8_t **out, size_t *size,
                                       struct kvx_err *err)
{
    if (!w || !out || !size)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kvx_gguf_writer_finish: NULL argument");
    *out = NULL;
    *size = 0;
    if (w->first_err.status != KVX_OK)
        return kvx_err_set(err, w->first_err.status, "%s", w->first_err.msg);
    struct gguf_wbuf b = {0};
    if (!gguf_w_image(w, &b)) {
        free(b.p);
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory building the GGUF image");
    }
    *out = b.p;
    *size = b.len;
    return KVX_OK;
}

enum kvx_status kvx_gguf_writer_save(struct kvx_gguf_writer *w, const char *path,
                                     struct kvx_err *err)
{
    if (!path)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kvx_gguf_writer_save: NULL path");
    uint8_t *img;
    size_t size;
    enum kvx_status st = kvx_gguf_writer_finish(w, &img, &size, err);
    if (st != KVX_OK)
        return st;
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(img, 1, size, f) == size;
    if (f && fclose(f) != 0)
        ok = false;
    free(img);
    if (!ok)
        return kvx_err_set(err, KVX_ERR_IO, "cannot write '%s'", path);
    return KVX_OK;
}
