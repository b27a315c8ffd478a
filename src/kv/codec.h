/* kv/codec: how K and V values are stored inside a page, and the fused attention kernels that
 * read them in place (no dequantized copy of the cache).
 *
 * A codec owns the byte layout of one head's region of one page (page_tokens tokens × dim
 * values).  The f32/f16 codecs store
 *   K tiled: 16 tokens × dim channels per tile, channel-major inside the tile, so that one
 *            16-lane FMA computes 16 scores (q[c] broadcast × K[tile][c][0..16));
 *   V token-major: dim values per token, so p·V is a broadcast-and-FMA per token.
 * Every codec has a scalar reference and AVX2/AVX-512 variants chosen by ISA. */
#ifndef KVX_KV_CODEC_H
#define KVX_KV_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"
#include "ops/cpu.h"

#define KVX_KV_TILE 16

struct kvx_kv_codec_ops {
    const char *name;
    /* Bytes of one head's K (V) region for page_tokens tokens of dimension dim. */
    size_t (*k_region_bytes)(int32_t page_tokens, int32_t dim);
    size_t (*v_region_bytes)(int32_t page_tokens, int32_t dim);
    /* Store the K (V) vector of token `tok` (0 <= tok < page_tokens) of one head. */
    void (*k_put)(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *k);
    void (*v_put)(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *v);
    /* Read back the stored vector of token `tok` (tests, debugging, export). */
    void (*k_get)(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *k);
    void (*v_get)(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *v);
    /* scores[i*ld + (t - t0)] = q_i · k_t  for i < n_q, t0 <= t < t1 (t0 % 16 == 0; t1 <= page_tokens).
     * q is n_q rows of dim floats.  Writes nothing outside those entries (a partial last tile
     * is computed whole and stored masked). */
    void (*qk)(const void *region, int32_t page_tokens, int32_t dim, int32_t t0, int32_t t1,
               const float *q, int32_t n_q, float *scores, int64_t ld);
    /* acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + (t - t0)] * v_t[d]  for i < n_q (any t0). */
    void (*pv)(const void *region, int32_t page_tokens, int32_t dim, int32_t t0, int32_t t1,
               const float *p, int32_t n_q, int64_t ld, float *acc);
};

/* ---------------------------------------------------------------------------------------------
 * The kernels behind the ops tables (kv/codec*.c), declared here for the table and the tests.
 * Arguments as in struct kvx_kv_codec_ops.  The *_avx2 / *_avx512 kernels exist on x86 only
 * and must be called only when kvx_cpu_has_isa says so; kvx_kv_codec_ops does that. */
size_t kvx_kv_k_region_bytes_f32(int32_t page_tokens, int32_t dim);
size_t kvx_kv_v_region_bytes_f32(int32_t page_tokens, int32_t dim);
void kvx_kv_k_put_f32(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *k);
void kvx_kv_v_put_f32(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *v);
void kvx_kv_k_get_f32(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *k);
void kvx_kv_v_get_f32(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *v);
size_t kvx_kv_k_region_bytes_f16(int32_t page_tokens, int32_t dim);
size_t kvx_kv_v_region_bytes_f16(int32_t page_tokens, int32_t dim);
void kvx_kv_k_put_f16(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *k);
void kvx_kv_v_put_f16(void *region, int32_t page_tokens, int32_t dim, int32_t tok, const float *v);
void kvx_kv_k_get_f16(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *k);
void kvx_kv_v_get_f16(const void *region, int32_t page_tokens, int32_t dim, int32_t tok, float *v);

#define KVX_KV_DECLARE_KERNELS(codec, isa)                                                      \
    void kvx_kv_qk_##codec##_##isa(const void *region, int32_t page_tokens, int32_t dim,        \
                                   int32_t t0, int32_t t1, const float *q, int32_t n_q,         \
                                   float *scores, int64_t ld);                                  \
    void kvx_kv_pv_##codec##_##isa(const void *region, int32_t page_tokens, int32_t dim,        \
                                   int32_t t0, int32_t t1, const float *p, int32_t n_q,         \
                                   int64_t ld, float *acc)
KVX_KV_DECLARE_KERNELS(f32, scalar);
KVX_KV_DECLARE_KERNELS(f16, scalar);
KVX_KV_DECLARE_KERNELS(f32, avx2);
KVX_KV_DECLARE_KERNELS(f16, avx2);
KVX_KV_DECLARE_KERNELS(f32, avx512);
KVX_KV_DECLARE_KERNELS(f16, avx512);

/* Kernels of codec `c` for `isa` (an ISA without its own variant gets the scalar one);
 * NULL for an unknown codec. */
const struct kvx_kv_codec_ops *kvx_kv_codec_ops(enum kvx_kv_codec c, enum kvx_isa isa);
const char *kvx_kv_codec_name(enum kvx_kv_codec c);
/* Parse "f32", "f16" -> codec; false if unknown. */
bool kvx_kv_codec_parse(const char *s, enum kvx_kv_codec *out);

#endif
