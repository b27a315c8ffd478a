/* io/gguf_write: a small GGUF v3 writer, for tests (hand-made and hostile files) and for
 * conversion.  Builds the whole file in memory; no mmap. */
#ifndef KVX_IO_GGUF_WRITE_H
#define KVX_IO_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "io/gguf.h"

struct kvx_gguf_writer;

enum kvx_status kvx_gguf_writer_create(uint32_t alignment, struct kvx_gguf_writer **out,
                                       struct kvx_err *err);
void kvx_gguf_writer_destroy(struct kvx_gguf_writer *w);

/* Key/value pairs, in the order they will appear in the file. */
enum kvx_status kvx_gguf_writer_add_u32(struct kvx_gguf_writer *w, const char *key, uint32_t v);
enum kvx_status kvx_gguf_writer_add_i32(struct kvx_gguf_writer *w, const char *key, int32_t v);
enum kvx_status kvx_gguf_writer_add_u64(struct kvx_gguf_writer *w, const char *key, uint64_t v);
enum kvx_status kvx_gguf_writer_add_f32(struct kvx_gguf_writer *w, const char *key, float v);
enum kvx_status kvx_gguf_writer_add_bool(struct kvx_gguf_writer *w, const char *key, bool v);
enum kvx_status kvx_gguf_writer_add_str(struct kvx_gguf_writer *w, const char *key, const char *v);
/* An array of n scalar elements of type `elem` read from `data` (host little-endian layout). */
enum kvx_status kvx_gguf_writer_add_arr(struct kvx_gguf_writer *w, const char *key,
                                        enum kvx_gguf_type elem, const void *data, uint64_t n);
enum kvx_status kvx_gguf_writer_add_str_arr(struct kvx_gguf_writer *w, const char *key,
                                            const char *const *strs, uint64_t n);
/* Any value in the reader's representation (io/gguf.h): every scalar type, strings, and arrays
 * of anything including arrays of arrays (items[i].type must be KVX_GGUF_ARRAY).  Scalars must
 * fit their type (INVALID_ARG otherwise); FLOAT32 is narrowed from v.f64.  A value parsed from
 * one file can be passed here to copy it into another. */
enum kvx_status kvx_gguf_writer_add_value(struct kvx_gguf_writer *w, const char *key,
                                          const struct kvx_gguf_value *v);
/* A tensor: `data` (copied) holds the row-major bytes of shape ne[0..n_dims) in `type`. */
enum kvx_status kvx_gguf_writer_add_tensor(struct kvx_gguf_writer *w, const char *name,
                                           uint32_t type, uint32_t n_dims, const int64_t *ne,
                                           const void *data, size_t nbytes);

/* The finished file image (malloc'd; free() it) or written to `path`.  The writer is not
 * consumed: more may be added and finish called again.  When the alignment given to
 * kvx_gguf_writer_create is not the default 32 and no "general.alignment" key was added, one
 * (uint32) is appended after the other key/value pairs.  Type, shape and nbytes of tensors are
 * written as given, unchecked, so tests can make lying files.  The first error of any add_*
 * call is sticky and returned here (with its message). */
enum kvx_status kvx_gguf_writer_finish(struct kvx_gguf_writer *w, uint8_t **out, size_t *size,
                                       struct kvx_err *err);
enum kvx_status kvx_gguf_writer_save(struct kvx_gguf_writer *w, const char *path,
                                     struct kvx_err *err);

#endif
