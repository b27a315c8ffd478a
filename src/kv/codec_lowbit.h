/* kv/codec_lowbit: what the files of the low-bit KV codecs (kivi2 and kivi4: codec_kivi*.c;
 * rot4 and rot3: codec_rot*.c) share between their scalar specification and SIMD variants: byte
 * layouts, codec-state headers, codebooks and kernel prototypes.  Internal to kv/.
 *
 * kivi2 / kivi4 (KIVI: K per channel over groups of G tokens, V per token; B = 2 or 4 bits,
 * asymmetric).  Codes are packed 16 to a unit of B/2 u32 words (u = B/2): code i of a unit
 * is in word i % u at bits B (i / u) .. B (i / u) + B - 1 (B = 2: one word, code i at bit 2i;
 * B = 4: even codes in word 0, odd in word 1, code i at bit 4 (i / 2)).
 *   K region: page_tokens / G groups, group g at g * kvx_kivi_k_group_bytes:
 *     [scale: dim f16][min: dim f16][G/16 tiles: dim units each]
 *     in tile j, unit c holds channel c of tokens 16j..16j+15 (code i = token 16j + i).
 *     k = min_c + scale_c * code.
 *   K state: [header (struct kvx_kivi_k_hdr) | pad to 64][Rk = G + ceil(R / G) G rows of f16,
 *     tiled like the f16 codec: tile j, channel c, row i at ((j * dim + c) * 16 + i)]: a ring
 *     of whole groups, slot s in row s % Rk, holding slots [lo, hi), lo a multiple of G: the
 *     group being filled and the sealed groups before it.
 *   V region: [scale: page_tokens x nb f16][min: page_tokens x nb f16][codes: page_tokens x
 *     nb x 2 units], nb = dim / 32; token t, block b: units 2b, 2b+1 of row t hold channels
 *     32b..32b+15 and 32b+16..32b+31 (code j = channel 16h + j of the block).
 *     v = min_tb + scale_tb * code.
 *   V state: [header (struct kvx_kivi_v_hdr) | pad to 64][R rows of dim f16]: a ring, slot s
 *     in row s % R, holding slots [lo, hi) (hi - lo <= R).
 * The unit's bit order lets a SIMD lane i find its code with one variable shift (or rotate) of
 * the unit broadcast (a dword for B = 2, a qword for B = 4: dwords then alternate between
 * even and odd lanes).
 *
 * rot4 / rot3 (x -> R x, kv/hadamard.h, then per token and 32 channels one f16 scale s and
 * 4- or 3-bit indices into a codebook L; value = s * L[code]).
 *   K region: tiles of 16 tokens: [scales: nb x 16 f16 (block b, token i)][codes]
 *     rot4 codes: dim u64; token i of channel c in bits 32 * (i & 1) + 4 * (i >> 1).
 *     rot3 codes: [hi: dim/2 u32][lo: dim u32]; bit 2 of the code of token i, channel c is bit
 *       16 * (c & 1) + i of hi[c / 2]; bits 0..1 are bits 2i..2i+1 of lo[c].
 *   V region: [scales: page_tokens x nb f16][codes: page_tokens x nb blocks]
 *     rot4 block: 2 u64, channel 16h + j in bits 32 * (j & 1) + 4 * (j >> 1) of word h.
 *     rot3 block: [hi u32][lo 2 x u32]: bit 2 of channel j is bit j of hi, bits 0..1 are bits
 *       2 (j % 16) .. 2 (j % 16) + 1 of lo[j / 16].
 * These bit orders let a SIMD lane i find its code with one variable shift of a broadcast word
 * (a qword for rot4, so the two dwords alternate between even and odd lanes). */
#ifndef KVX_KV_CODEC_LOWBIT_H
#define KVX_KV_CODEC_LOWBIT_H

#include <string.h>

#include "kv/codec.h"

/* Bytes before the f16 data of a codec state block (the data stay 64-byte aligned). */
#define KVX_KV_STATE_HDR 64

/* ---------------------------------------------------------------------------------------------
 * kivi2 / kivi4 */

/* The K state holds slots [lo, hi) (lo a multiple of G, or lo = hi: none). */
struct kvx_kivi_k_hdr {
    int64_t lo, hi;
};
/* The V state holds slots [lo, hi). */
struct kvx_kivi_v_hdr {
    int64_t lo, hi;
};

static inline struct kvx_kivi_k_hdr kvx_kivi_k_hdr_get(const uint8_t *state)
{
    struct kvx_kivi_k_hdr h;
    memcpy(&h, state, sizeof h);
    return h;
}

static inline struct kvx_kivi_v_hdr kvx_kivi_v_hdr_get(const uint8_t *state)
{
    struct kvx_kivi_v_hdr h;
    memcpy(&h, state, sizeof h);
    return h;
}

/* Code i (0..15) of the unit at `unit`, B bits. */
static inline uint32_t kvx_kivi_code(const uint32_t *unit, int32_t bits, int32_t i)
{
    const int32_t u = bits / 2;
    return (unit[i % u] >> (bits * (i / u))) & ((1u << bits) - 1u);
}

/* Bytes of one K group: scales, mins and G/16 tiles of dim units of B/2 words. */
static inline size_t kvx_kivi_k_group_bytes(const struct kvx_kv_fmt *f, int32_t bits)
{
    return (size_t)f->dim * 4u + (size_t)(f->group / KVX_KV_TILE) * (size_t)f->dim * 2u * (size_t)bits;
}

/* Offsets inside the V region; a token row of codes is nb * 2 units = nb * B words. */
static inline size_t kvx_kivi_v_min_off(const struct kvx_kv_fmt *f)
{
    return (size_t)f->page_tokens * (size_t)(f->dim / 32) * 2u;
}
static inline size_t kvx_kivi_v_codes_off(const struct kvx_kv_fmt *f)
{
    return 2u * kvx_kivi_v_min_off(f);
}

/* The kernels of one ISA for slots the codec state does not hold (bits: 2 or 4). */
typedef void (*kvx_kivi_qk_group_fn)(int32_t bits, const uint8_t *group,
                                     const struct kvx_kv_fmt *f, int32_t a, int32_t b,
                                     const float *q, int32_t n_q, float *scores, int64_t ld);
typedef void (*kvx_kivi_pv_page_fn)(int32_t bits, const uint8_t *region,
                                    const struct kvx_kv_fmt *f, int32_t t0, int32_t t1,
                                    const float *p, int32_t n_q, int64_t ld, float *acc);
/* The f16 codec's kernels of the same ISA read the state's f16 tokens. */
struct kvx_kivi_kernels {
    kvx_kivi_qk_group_fn qk_group;
    kvx_kivi_pv_page_fn pv_page;
    void (*qk_f16)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                   int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld);
    void (*pv_f16)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                   int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc);
};
/* Split [t0, t1) between the state and the page and call the ISA's kernels (codec_kivi.c). */
void kvx_kivi_qk_drive(const struct kvx_kivi_kernels *k, int32_t bits,
                       const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *q, int32_t n_q, float *scores, int64_t ld);
void kvx_kivi_pv_drive(const struct kvx_kivi_kernels *k, int32_t bits,
                       const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0,
                       int32_t t1, const float *p, int32_t n_q, int64_t ld, float *acc);

/* The ops entry points of kivi2 and kivi4 for one ISA: the drive with that ISA's kernels. */
#define KVX_KIVI_ENTRIES(isa, kernels)                                                          \
    void kvx_kv_qk_kivi2_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,        \
                               int32_t t0, int32_t t1, const float *q, int32_t n_q,             \
                               float *scores, int64_t ld)                                       \
    {                                                                                           \
        kvx_kivi_qk_drive(&kernels, 2, b, f, t0, t1, q, n_q, scores, ld);                       \
    }                                                                                           \
    void kvx_kv_pv_kivi2_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,        \
                               int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, \
                               float *acc)                                                      \
    {                                                                                           \
        kvx_kivi_pv_drive(&kernels, 2, b, f, t0, t1, p, n_q, ld, acc);                          \
    }                                                                                           \
    void kvx_kv_qk_kivi4_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,        \
                               int32_t t0, int32_t t1, const float *q, int32_t n_q,             \
                               float *scores, int64_t ld)                                       \
    {                                                                                           \
        kvx_kivi_qk_drive(&kernels, 4, b, f, t0, t1, q, n_q, scores, ld);                       \
    }                                                                                           \
    void kvx_kv_pv_kivi4_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,        \
                               int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, \
                               float *acc)                                                      \
    {                                                                                           \
        kvx_kivi_pv_drive(&kernels, 4, b, f, t0, t1, p, n_q, ld, acc);                          \
    }

#define KVX_KIVI_DECLARE(isa)                                                                   \
    void kvx_kivi_qk_group_##isa(int32_t bits, const uint8_t *group, const struct kvx_kv_fmt *f, \
                                 int32_t a, int32_t b, const float *q, int32_t n_q,             \
                                 float *scores, int64_t ld);                                    \
    void kvx_kivi_pv_page_##isa(int32_t bits, const uint8_t *region, const struct kvx_kv_fmt *f, \
                                int32_t t0, int32_t t1, const float *p, int32_t n_q, int64_t ld, \
                                float *acc);                                                    \
    KVX_KV_DECLARE_KERNELS(kivi2, isa);                                                         \
    KVX_KV_DECLARE_KERNELS(kivi4, isa)
KVX_KIVI_DECLARE(scalar);
KVX_KIVI_DECLARE(avx2);
KVX_KIVI_DECLARE(avx512);

/* ---------------------------------------------------------------------------------------------
 * rot4 / rot3 */

/* Codebooks, ascending, outermost level 1: Lloyd–Max levels for 32 N(0,1) samples divided by
 * their largest magnitude (codec_rot.c says how they were computed). */
extern const float kvx_rot4_levels[16];
extern const float kvx_rot3_levels[8];

/* Bytes of one K tile (16 tokens) and of one V token row's codes. */
static inline size_t kvx_rot_k_tile_bytes(int32_t bits, int32_t dim)
{
    return (size_t)(dim / 32) * 32u + (size_t)dim * (bits == 4 ? 8u : 6u);
}
static inline size_t kvx_rot_v_codes_bytes(int32_t bits, int32_t dim)
{
    return (size_t)(dim / 32) * (bits == 4 ? 16u : 12u);
}
/* Offset of the codes inside the V region. */
static inline size_t kvx_rot_v_codes_off(const struct kvx_kv_fmt *f)
{
    return (size_t)f->page_tokens * (size_t)(f->dim / 32) * 2u;
}

KVX_KV_DECLARE_KERNELS(rot4, scalar);
KVX_KV_DECLARE_KERNELS(rot3, scalar);
KVX_KV_DECLARE_KERNELS(rot4, avx2);
KVX_KV_DECLARE_KERNELS(rot3, avx2);
KVX_KV_DECLARE_KERNELS(rot4, avx512);
KVX_KV_DECLARE_KERNELS(rot3, avx512);

#endif
