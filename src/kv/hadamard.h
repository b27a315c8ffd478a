/* kv/hadamard: the fixed random orthogonal rotation of the rot4/rot3 KV codecs.
 *
 *   R x = H D x / sqrt(n)
 *
 * D: diagonal of ±1; channel c is negated when bit (c % 64) of splitmix64(KVX_KV_ROT_SEED +
 *    c / 64) is set (splitmix64 as in Steele et al., "Fast splittable pseudorandom number
 *    generators": add 0x9e3779b97f4a7c15, then the two xor-shift-multiply rounds).  The signs
 *    depend only on the channel index, so every head of every layer and every run uses the same
 *    rotation for a given head dimension.
 * H: the Walsh–Hadamard matrix (Sylvester order, entries ±1) applied independently to each block
 *    of n consecutive channels, n the largest power of two dividing the head dimension (64 for
 *    dim 64, 32 for dim 96).  Computed by the fast transform: log2(n) butterfly passes.
 * R is orthogonal (H H = n I, D D = I), so R^T y = D H y / sqrt(n) and (R q)·(R k) = q·k.
 *
 * fp32 throughout; each output is a sum of n inputs with ±1 weights, so the round-off is about
 * log2(n) x 2^-24 relative to the vector's norm.  Stateless and reentrant. */
#ifndef KVX_KV_HADAMARD_H
#define KVX_KV_HADAMARD_H

#include <stdint.h>

#define KVX_KV_ROT_SEED 0x6b76782d726f7431ull /* "kvx-rot1" */

/* Largest power of two dividing dim (dim > 0). */
int32_t kvx_kv_hadamard_block(int32_t dim);
/* True when channel c is negated by D. */
int kvx_kv_rot_sign(int32_t c);
/* x (n rows of dim floats) <- R x, row by row, in place. */
void kvx_kv_rotate(float *x, int32_t n, int32_t dim);
/* x (n rows of dim floats) <- R^T x, row by row, in place. */
void kvx_kv_unrotate(float *x, int32_t n, int32_t dim);

#endif
