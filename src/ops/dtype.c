/* ops/dtype: block geometry of the tensor formats. */
#include "ops/dtype.h"

struct dtype_info {
    const char *name;
    int64_t block_size;
    size_t block_bytes;
};

static const struct dtype_info dtype_table[KVX_DTYPE_COUNT] = {
    [KVX_DTYPE_F32] = {"f32", 1, 4},
    [KVX_DTYPE_F16] = {"f16", 1, 2},
    [KVX_DTYPE_BF16] = {"bf16", 1, 2},
    [KVX_DTYPE_Q4_0] = {"q4_0", 32, 2 + 16},
    [KVX_DTYPE_Q4_1] = {"q4_1", 32, 2 + 2 + 16},
    [KVX_DTYPE_Q5_0] = {"q5_0", 32, 2 + 4 + 16},
    [KVX_DTYPE_Q5_1] = {"q5_1", 32, 2 + 2 + 4 + 16},
    [KVX_DTYPE_Q8_0] = {"q8_0", 32, 2 + 32},
    [KVX_DTYPE_Q8_1] = {"q8_1", 32, 2 + 2 + 32},
    [KVX_DTYPE_Q2_K] = {"q2_k", 256, 16 + 64 + 2 + 2},
    [KVX_DTYPE_Q3_K] = {"q3_k", 256, 32 + 64 + 12 + 2},
    [KVX_DTYPE_Q4_K] = {"q4_k", 256, 2 + 2 + 12 + 128},
    [KVX_DTYPE_Q5_K] = {"q5_k", 256, 2 + 2 + 12 + 32 + 128},
    [KVX_DTYPE_Q6_K] = {"q6_k", 256, 128 + 64 + 16 + 2},
    [KVX_DTYPE_Q8_K] = {"q8_k", 256, 4 + 256 + 32},
};

static const struct dtype_info *dtype_get(uint32_t t)
{
    if (t >= KVX_DTYPE_COUNT || dtype_table[t].name == NULL)
        return NULL;
    return &dtype_table[t];
}

bool kvx_dtype_supported(uint32_t t) { return dtype_get(t) != NULL; }

const char *kvx_dtype_name(uint32_t t)
{
    const struct dtype_info *d = dtype_get(t);
    return d ? d->name : "unknown";
}

int64_t kvx_dtype_block_size(uint32_t t)
{
    const struct dtype_info *d = dtype_get(t);
    return d ? d->block_size : 0;
}

size_t kvx_dtype_block_bytes(uint32_t t)
{
    const struct dtype_info *d = dtype_get(t);
    return d ? d->block_bytes : 0;
}

bool kvx_dtype_row_bytes(uint32_t t, int64_t n, size_t *out)
{
    const struct dtype_info *d = dtype_get(t);
    if (!d || n < 0 || n % d->block_size != 0)
        return false;
    uint64_t blocks = (uint64_t)(n / d->block_size);
    if (blocks > SIZE_MAX / d->block_bytes)
        return false;
    *out = (size_t)blocks * d->block_bytes;
    return true;
}
