/* io/gguf: reading (and writing, see gguf_write.h) GGUF model files, v2 and v3.
 *
 * kvx_gguf_open reads the file into private memory backed by huge pages (read-only once
 * loaded; see load_file in gguf.c); strings, arrays and tensor data are views into it and
 * live as long as the struct kvx_gguf.  Every count, length, offset and size read from the file
 * is bounds- and overflow-checked before use: a truncated, lying or hostile file yields
 * KVX_ERR_FORMAT with a message naming the key or tensor and the byte offset, never a crash.
 * The reader knows nothing of architectures.
 *
 * What parsing guarantees on success: keys are unique and so are tensor names; arrays nest at
 * most 8 levels; bools are 0 or 1; general.alignment (any integer type) is a power of two
 * (default 32); every tensor has 1 to 4 dims, each ne >= 1 (empty tensors are UNSUPPORTED), a
 * supported type (UNSUPPORTED otherwise) with ne[0] a multiple of its block size, an element
 * count below 2^63, and data [offset, offset + nbytes) inside the file, with offset a multiple of
 * the alignment (so `data` is aligned relative to the start of the file; the mapping made by
 * kvx_gguf_open is page-aligned).  Overlapping tensors are not rejected.  Versions 2 and 3 are
 * read; version 1 and big-endian files are refused with UNSUPPORTED.  Little-endian hosts only. */
#ifndef KVX_IO_GGUF_H
#define KVX_IO_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

enum kvx_gguf_type {
    KVX_GGUF_UINT8 = 0,
    KVX_GGUF_INT8 = 1,
    KVX_GGUF_UINT16 = 2,
    KVX_GGUF_INT16 = 3,
    KVX_GGUF_UINT32 = 4,
    KVX_GGUF_INT32 = 5,
    KVX_GGUF_FLOAT32 = 6,
    KVX_GGUF_BOOL = 7,
    KVX_GGUF_STRING = 8,
    KVX_GGUF_ARRAY = 9,
    KVX_GGUF_UINT64 = 10,
    KVX_GGUF_INT64 = 11,
    KVX_GGUF_FLOAT64 = 12,
    KVX_GGUF_TYPE_COUNT,
};

/* A string inside the file: not NUL-terminated. */
struct kvx_gguf_str {
    uint64_t len;
    const char *ptr;
};

struct kvx_gguf_value {
    enum kvx_gguf_type type;
    union {
        uint64_t u64;          /* UINT8/16/32/64 */
        int64_t i64;           /* INT8/16/32/64 */
        double f64;            /* FLOAT32/64 */
        bool b;                /* BOOL */
        struct kvx_gguf_str str;
        struct {
            enum kvx_gguf_type elem;
            uint64_t n;
            /* elem is a scalar type: n packed little-endian elements (possibly unaligned; read
             * them with kvx_gguf_arr_* below).  elem == STRING: `strs`.  elem == ARRAY: `items`. */
            const uint8_t *raw;
            struct kvx_gguf_str *strs;
            struct kvx_gguf_value *items;
        } arr;
    } v;
};

struct kvx_gguf_kv {
    struct kvx_gguf_str key;
    struct kvx_gguf_value val;
};

#define KVX_GGUF_MAX_DIMS 4

struct kvx_gguf_tensor {
    struct kvx_gguf_str name;
    uint32_t n_dims;
    int64_t ne[KVX_GGUF_MAX_DIMS];  /* ne[0] is the row length (contiguous); unused dims are 1 */
    uint32_t type;                  /* an enum kvx_dtype value (checked supported) */
    uint64_t offset;                /* from the start of the data section */
    size_t nbytes;
    const void *data;               /* into the mapping, aligned to `alignment` */
};

struct kvx_gguf {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    struct kvx_gguf_kv *kv;
    struct kvx_gguf_tensor *tensors;
    uint64_t alignment;
    size_t data_offset;             /* start of the tensor data section in the file */
    const uint8_t *base;            /* the whole file */
    size_t size;
    bool owns_map;                  /* kvx_gguf_open mapped it; kvx_gguf_parse borrowed it */
};

/* Read `path` into memory (2 MiB-aligned, huge pages advised, read-only) and parse it. */
enum kvx_status kvx_gguf_open(const char *path, struct kvx_gguf **out, struct kvx_err *err);
/* Make the bytes kvx_gguf_open read writable (true) or read-only again (false), for a model
 * that rewrites its weights in place once after loading (ops/repack.h).  False, and nothing
 * changed, when g borrowed its bytes (kvx_gguf_parse) or the protection cannot change. */
bool kvx_gguf_set_writable(struct kvx_gguf *g, bool writable);
/* Parse a GGUF image already in memory (borrowed; must outlive the result).  Fuzz target. */
enum kvx_status kvx_gguf_parse(const void *data, size_t size, struct kvx_gguf **out,
                               struct kvx_err *err);
void kvx_gguf_close(struct kvx_gguf *g);

const struct kvx_gguf_kv *kvx_gguf_find(const struct kvx_gguf *g, const char *key);
const struct kvx_gguf_tensor *kvx_gguf_find_tensor(const struct kvx_gguf *g, const char *name);

/* Typed getters.  Integer getters accept any integer type whose value fits; float getters
 * accept FLOAT32/64 and integers.  KVX_ERR_NOT_FOUND when absent, KVX_ERR_FORMAT (naming the
 * key) when the type or range is wrong. */
enum kvx_status kvx_gguf_get_u32(const struct kvx_gguf *g, const char *key, uint32_t *out,
                                 struct kvx_err *err);
enum kvx_status kvx_gguf_get_i64(const struct kvx_gguf *g, const char *key, int64_t *out,
                                 struct kvx_err *err);
enum kvx_status kvx_gguf_get_f32(const struct kvx_gguf *g, const char *key, float *out,
                                 struct kvx_err *err);
enum kvx_status kvx_gguf_get_bool(const struct kvx_gguf *g, const char *key, bool *out,
                                  struct kvx_err *err);
enum kvx_status kvx_gguf_get_str(const struct kvx_gguf *g, const char *key,
                                 struct kvx_gguf_str *out, struct kvx_err *err);
/* An array value whose elements have type `elem`. */
enum kvx_status kvx_gguf_get_arr(const struct kvx_gguf *g, const char *key,
                                 enum kvx_gguf_type elem, const struct kvx_gguf_value **out,
                                 struct kvx_err *err);

/* Element i of a scalar array, converted. */
int64_t kvx_gguf_arr_i64(const struct kvx_gguf_value *arr, uint64_t i);
double kvx_gguf_arr_f64(const struct kvx_gguf_value *arr, uint64_t i);

/* True when the string equals the NUL-terminated `s`. */
bool kvx_gguf_str_eq(struct kvx_gguf_str a, const char *s);

const char *kvx_gguf_type_name(enum kvx_gguf_type t);

#endif
