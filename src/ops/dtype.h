/* ops/dtype: tensor element formats (the GGUF/ggml numbering) and their block geometry.
 *
 * A quantized row of n elements is n / block_size blocks of block_bytes each; n must be a
 * multiple of block_size.  Sizes that come from files go through kvx_dtype_row_bytes, which
 * checks for overflow. */
#ifndef KVX_OPS_DTYPE_H
#define KVX_OPS_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kvx_dtype {
    KVX_DTYPE_F32 = 0,
    KVX_DTYPE_F16 = 1,
    KVX_DTYPE_Q4_0 = 2,
    KVX_DTYPE_Q4_1 = 3,
    KVX_DTYPE_Q5_0 = 6,
    KVX_DTYPE_Q5_1 = 7,
    KVX_DTYPE_Q8_0 = 8,
    KVX_DTYPE_Q8_1 = 9,
    KVX_DTYPE_Q2_K = 10,
    KVX_DTYPE_Q3_K = 11,
    KVX_DTYPE_Q4_K = 12,
    KVX_DTYPE_Q5_K = 13,
    KVX_DTYPE_Q6_K = 14,
    KVX_DTYPE_Q8_K = 15,
    KVX_DTYPE_BF16 = 30,
    KVX_DTYPE_COUNT = 31,
};

/* True for the formats kvx reads and computes with. */
bool kvx_dtype_supported(uint32_t t);
/* "q4_1", "f16", ...; "unknown" for anything else. */
const char *kvx_dtype_name(uint32_t t);
/* Elements per block (1 for f32/f16/bf16, 32 for Q*_0/1, 256 for K-quants); 0 if unsupported. */
int64_t kvx_dtype_block_size(uint32_t t);
/* Bytes per block; 0 if unsupported. */
size_t kvx_dtype_block_bytes(uint32_t t);
/* Bytes of a row of n elements into *out.  False when n is not a multiple of the block size,
 * the type is unsupported, or the size overflows. */
bool kvx_dtype_row_bytes(uint32_t t, int64_t n, size_t *out);

#endif
