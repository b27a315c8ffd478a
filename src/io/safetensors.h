/* io/safetensors: reading safetensors model files — one file, or a sharded set described by
 * model.safetensors.index.json — mmap'd, every header field checked.
 *
 * File format: an 8-byte little-endian header length N, N bytes of a JSON object, then the
 * tensor data.  The object maps each tensor name to {"dtype": "F32", "shape": [d0, d1, ...],
 * "data_offsets": [begin, end]} (offsets from the first byte after the header, row-major data,
 * little-endian), plus an optional "__metadata__" object of strings.
 *
 * What a successful open guarantees: the header length fits the file (and is at most
 * KVX_ST_MAX_HEADER); the header is strict JSON (util/json.h) whose members are all tensor
 * entries with exactly the three keys above, or __metadata__ with string values; every dtype
 * is one safetensors defines; every shape has at most KVX_ST_MAX_DIMS non-negative integer
 * dims whose product times the element size does not overflow and equals end - begin;
 * 0 <= begin <= end <= data size; no two tensors' byte ranges overlap; tensor names are unique
 * over all shards; for a sharded model, every tensor the index names is in the shard the index
 * says and every shard's tensors are in the index.  Errors are KVX_ERR_FORMAT (or _IO,
 * _NOT_FOUND for a missing shard) naming the file, the tensor, the key and the byte offset.
 * Gaps between tensors are allowed.  Little-endian hosts only.
 *
 * Tensor data are views into the mappings and live as long as the struct kvx_safetensors.
 * The reader knows nothing of architectures; block-scaled FP8 and FP4 weights are dequantized
 * by the helpers below when a model binds them. */
#ifndef KVX_IO_SAFETENSORS_H
#define KVX_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

#define KVX_ST_MAX_DIMS 8
#define KVX_ST_MAX_HEADER ((uint64_t)100 << 20)   /* 100 MiB, as the reference reader */

enum kvx_st_dtype {
    KVX_ST_BOOL = 0,
    KVX_ST_U8, KVX_ST_I8, KVX_ST_U16, KVX_ST_I16, KVX_ST_U32, KVX_ST_I32,
    KVX_ST_U64, KVX_ST_I64,
    KVX_ST_F16, KVX_ST_BF16, KVX_ST_F32, KVX_ST_F64,
    KVX_ST_F8_E4M3, KVX_ST_F8_E5M2, KVX_ST_F8_E8M0,
    KVX_ST_DTYPE_COUNT,
};

struct kvx_st_tensor {
    const char *name;               /* NUL-terminated, owned by the struct kvx_safetensors */
    enum kvx_st_dtype dtype;
    uint32_t n_dims;
    int64_t shape[KVX_ST_MAX_DIMS]; /* row-major: shape[n_dims-1] is contiguous */
    int64_t n_elem;
    size_t nbytes;
    const uint8_t *data;            /* into the shard's mapping; alignment not guaranteed */
    uint32_t shard;                 /* index into kvx_safetensors.shards */
};

struct kvx_st_shard {
    char *path;                     /* as opened (NULL for an in-memory image) */
    const uint8_t *base;            /* the whole file */
    size_t size;
    size_t data_offset;             /* 8 + header length */
    bool owns_map;
};

struct kvx_safetensors {
    uint32_t n_shards;
    struct kvx_st_shard *shards;
    uint64_t n_tensors;
    struct kvx_st_tensor *tensors;  /* sorted by name */
    char *dir;                      /* the folder of the model (for config.json); may be NULL */
    uint32_t n_meta;                /* __metadata__ entries of every shard (first one wins) */
    const char **meta_keys, **meta_vals;
};

/* Open a model: `path` is a .safetensors file, a model.safetensors.index.json, or a folder
 * holding one of model.safetensors.index.json / model.safetensors. */
enum kvx_status kvx_st_open(const char *path, struct kvx_safetensors **out, struct kvx_err *err);
/* Parse one safetensors image already in memory (borrowed; must outlive the result). */
enum kvx_status kvx_st_parse(const void *data, size_t size, struct kvx_safetensors **out,
                             struct kvx_err *err);
void kvx_st_close(struct kvx_safetensors *st);

/* The tensor named `name` (binary search), or NULL. */
const struct kvx_st_tensor *kvx_st_find(const struct kvx_safetensors *st, const char *name);

/* The __metadata__ value of `key`, or NULL. */
const char *kvx_st_metadata(const struct kvx_safetensors *st, const char *key);

/* "F32", "BF16", ... */
const char *kvx_st_dtype_name(enum kvx_st_dtype t);
/* Bytes per element (1 for the FP8 formats and BOOL). */
size_t kvx_st_dtype_size(enum kvx_st_dtype t);

/* Value of one FP8 E4M3 byte ("e4m3fn": bias 7, no infinities, S.1111.111 is NaN, max 448). */
float kvx_st_fp8_e4m3_to_f32(uint8_t b);

/* Value of one F8_E8M0 byte ("e8m0fnu": an unsigned power of two, 2^(b - 127); 0xFF is NaN;
 * there is no zero and no sign). */
float kvx_st_e8m0_to_f32(uint8_t b);

/* Value of one FP4 E2M1 nibble (low 4 bits of n): sign bit 3, exponent bits 2..1 (bias 1),
 * mantissa bit 0: the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6; 8..15 their negatives. */
float kvx_st_fp4_e2m1_to_f32(uint8_t n);

/* Elements [0, n) of a F32/F16/BF16/F8_E4M3 tensor as floats (any other dtype:
 * KVX_ERR_UNSUPPORTED naming the tensor).  n <= t->n_elem. */
enum kvx_status kvx_st_read_f32(const struct kvx_st_tensor *t, float *dst, int64_t n,
                                struct kvx_err *err);

/* Dequantize a 2-D FP8 E4M3 weight [rows, cols] with its block scales (DeepSeek-V3's
 * `<name>_scale_inv`, F32 or BF16; DeepSeek-V4's `<stem>.scale`, F8_E8M0), shape
 * [ceil(rows/block_rows), ceil(cols/block_cols)]:
 *   dst[r][c] = fp8(w[r][c]) * scale[r / block_rows][c / block_cols]
 * into rows*cols floats.  Shapes and dtypes are checked, and a NaN E8M0 scale (0xFF) is
 * refused (KVX_ERR_FORMAT naming the tensors). */
enum kvx_status kvx_st_dequant_fp8(const struct kvx_st_tensor *w,
                                   const struct kvx_st_tensor *scale_inv, int64_t block_rows,
                                   int64_t block_cols, float *dst, struct kvx_err *err);

/* Dequantize a 2-D FP4 E2M1 weight (DeepSeek-V4's routed experts): w is I8 or U8
 * [rows, cols/2], two values per byte, element 2j in the LOW nibble of byte j and element
 * 2j+1 in the high nibble; scale is F8_E8M0 (or F32/BF16) [rows, ceil(cols/block_cols)], one
 * scale per block_cols consecutive inputs of a row:
 *   dst[r][c] = e2m1(nibble(w, r, c)) * scale[r][c / block_cols]
 * into rows*cols floats (cols = 2 * w->shape[1]).  Errors as kvx_st_dequant_fp8. */
enum kvx_status kvx_st_dequant_fp4(const struct kvx_st_tensor *w, const struct kvx_st_tensor *scale,
                                   int64_t block_cols, float *dst, struct kvx_err *err);

#endif
