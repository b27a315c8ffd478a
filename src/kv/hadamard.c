/* kv/hadamard: the randomized Walsh–Hadamard rotation (see hadamard.h for the math). */
#include "kv/hadamard.h"

#include <math.h>

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int32_t kvx_kv_hadamard_block(int32_t dim)
{
    return dim > 0 ? (int32_t)((uint32_t)dim & (0u - (uint32_t)dim)) : 1;
}

int kvx_kv_rot_sign(int32_t c)
{
    return (int)((splitmix64(KVX_KV_ROT_SEED + (uint64_t)(c >> 6)) >> (c & 63)) & 1u);
}

/* x[c] = -x[c] where D negates channel c (D is its own inverse). */
static void apply_signs(float *x, int32_t dim)
{
    for (int32_t c0 = 0; c0 < dim; c0 += 64) {
        uint64_t bits = splitmix64(KVX_KV_ROT_SEED + (uint64_t)(c0 >> 6));
        int32_t n = dim - c0 < 64 ? dim - c0 : 64;
        for (int32_t j = 0; j < n; j++)
            if ((bits >> j) & 1u)
                x[c0 + j] = -x[c0 + j];
    }
}

/* x <- H x / sqrt(n) on each block of n channels: butterflies (a, b) -> (a + b, a - b) at
 * strides 1, 2, 4, ..., n/2 (Sylvester order), then one scaling. */
static void fwht_blocks(float *x, int32_t dim)
{
    const int32_t n = kvx_kv_hadamard_block(dim);
    const float scale = (float)(1.0 / sqrt((double)n));
    for (int32_t b = 0; b < dim; b += n) {
        float *y = x + b;
        for (int32_t h = 1; h < n; h *= 2)
            for (int32_t i = 0; i < n; i += 2 * h)
                for (int32_t j = i; j < i + h; j++) {
                    float a = y[j], c = y[j + h];
                    y[j] = a + c;
                    y[j + h] = a - c;
                }
        for (int32_t j = 0; j < n; j++)
            y[j] *= scale;
    }
}

void kvx_kv_rotate(float *x, int32_t n, int32_t dim)
{
    for (int32_t r = 0; r < n; r++) {
        float *row = x + (int64_t)r * dim;
        apply_signs(row, dim);
        fwht_blocks(row, dim);
    }
}

void kvx_kv_unrotate(float *x, int32_t n, int32_t dim)
{
    for (int32_t r = 0; r < n; r++) {
        float *row = x + (int64_t)r * dim;
        fwht_blocks(row, dim);
        apply_signs(row, dim);
    }
}
