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

/* The geometry a codec stores one head of one page in. */
struct kvx_kv_fmt {
    int32_t page_tokens;      /* a multiple of 16 (and of `group` for codecs that group tokens) */
    int32_t dim;              /* values per token of this head */
    int32_t group;            /* kivi2/4: tokens per K quantization group (G); 0 for other codecs */
    int32_t residual;         /* kivi2/4: newest V tokens also kept in f16 (R); 0 for other codecs */
};

/* What a kernel reads: one head's region of one page, and the head's per-sequence state.
 * Sequence slots are the indices of stored tokens in a sequence (0, 1, ...); page p holds
 * slots [p*page_tokens, (p+1)*page_tokens). */
struct kvx_kv_block {
    const uint8_t *data;      /* the head's region in the page */
    const uint8_t *state;     /* the head's state block (codecs whose state_bytes > 0), else NULL */
    int64_t slot0;            /* slot of the page's token 0 */
};

struct kvx_kv_codec_ops {
    const char *name;
    /* Bytes of one head's K (V) region for fmt->page_tokens tokens. */
    size_t (*k_region_bytes)(const struct kvx_kv_fmt *f);
    size_t (*v_region_bytes)(const struct kvx_kv_fmt *f);
    /* Bytes of one head's per-sequence K (V) state, e.g. the f16 residual of kivi2; NULL when
     * the codec keeps none.  The pool zero-fills a new state block: all zeros = empty. */
    size_t (*k_state_bytes)(const struct kvx_kv_fmt *f);
    size_t (*v_state_bytes)(const struct kvx_kv_fmt *f);
    /* Store the K (V) vector of page token `tok` (slot slot0 + tok) of one head.  Slots are
     * written in increasing order; a slot that does not follow the state's newest one starts
     * the state afresh (a sequence attached to shared pages).  state is NULL when
     * *_state_bytes is NULL. */
    void (*k_put)(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *k);
    void (*v_put)(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f, int64_t slot0,
                  int32_t tok, const float *v);
    /* Codecs with a per-page header derived from the page before (q4: the page's centre).
     * Called before the put of token 0 of every page: data is the head's region of the new
     * page (slot0 its first slot), prev that of the sequence's page before it, complete (NULL
     * for the first page, or when there is none: evicted or never stored).  An all-zero
     * header is the first page's, so a zero-filled region (a state block) needs no call.
     * NULL for codecs whose pages stand alone. */
    void (*k_begin_page)(uint8_t *data, const uint8_t *prev, const struct kvx_kv_fmt *f,
                         int64_t slot0);
    void (*v_begin_page)(uint8_t *data, const uint8_t *prev, const struct kvx_kv_fmt *f,
                         int64_t slot0);
    /* Read back the stored vector, decoded, in the model's basis (rot codecs un-rotate). */
    void (*k_get)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok, float *k);
    void (*v_get)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t tok, float *v);
    /* scores[i*ld + (t - t0)] = q_i · k_t  for i < n_q, t0 <= t < t1 (t0 % 16 == 0;
     * t1 <= page_tokens), q already rotated by q_rotate.  Writes nothing outside those
     * entries. */
    void (*qk)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0, int32_t t1,
               const float *q, int32_t n_q, float *scores, int64_t ld);
    /* acc[i*dim + d] += sum_{t0<=t<t1} p[i*ld + (t - t0)] * v_t[d]  for i < n_q (any t0). */
    void (*pv)(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f, int32_t t0, int32_t t1,
               const float *p, int32_t n_q, int64_t ld, float *acc);
    /* The sequence is cut to its first n_keep slots: bring the head's state in line (NULL when
     * there is no state).  data is the head's region of the page holding slot n_keep - 1 and
     * slot0 that page's first slot (data NULL when n_keep == 0). */
    void (*k_truncate)(const uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                       int64_t slot0, int64_t n_keep);
    void (*v_truncate)(const uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,
                       int64_t slot0, int64_t n_keep);
    /* Rotating codecs (rot4, rot3) store R x for an orthogonal R.  q_rotate (K codec) maps n
     * query rows in place to R q so that scores need no un-rotation; out_unrotate (V codec)
     * maps n accumulator rows back with R^T (p·V is linear, so once per range suffices).
     * NULL for codecs that do not rotate. */
    void (*q_rotate)(float *x, int32_t n, int32_t dim);
    void (*out_unrotate)(float *x, int32_t n, int32_t dim);
    /* Copy the stored K (V) of tokens [from, from + n) of one head's region `src` to tokens
     * [to, to + n) of the region `dst` (same format), bytes unchanged: eviction's compaction
     * moves runs of kept tokens with it (kv/pool.h).  dst may be src with to <= from (tokens
     * move down; the ranges may overlap).  NULL for codecs whose tokens are not stored
     * independently (grouped scales, per-sequence state): compaction then re-encodes through
     * get and put. */
    void (*k_copy)(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                   const struct kvx_kv_fmt *f);
    void (*v_copy)(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from, int32_t n,
                   const struct kvx_kv_fmt *f);
    /* Nominal storage bits per value (scales included) at the default geometry; for reports. */
    double bits;
};

/* ---------------------------------------------------------------------------------------------
 * Codecs.  Each codec file (kv/codec_<name>*.c) defines its kernels and a getter returning its
 * ops for an ISA (the scalar ops for an ISA without its own variant, or on non-x86 builds);
 * kvx_kv_codec_ops dispatches on the enum.  SIMD kernels are only handed out for an ISA the
 * caller has checked with kvx_cpu_has_isa (the pool refuses an ISA the CPU lacks). */
const struct kvx_kv_codec_ops *kvx_kv_codec_f32(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_f16(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_bf16(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_q8(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_q4(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_q4plain(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_kivi2(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_rot4(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_rot3(enum kvx_isa isa);
const struct kvx_kv_codec_ops *kvx_kv_codec_kivi4(enum kvx_isa isa);

/* Kernel prototypes for a codec's files. */
#define KVX_KV_DECLARE_KERNELS(codec, isa)                                                      \
    void kvx_kv_qk_##codec##_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,    \
                                   int32_t t0, int32_t t1, const float *q, int32_t n_q,         \
                                   float *scores, int64_t ld);                                  \
    void kvx_kv_pv_##codec##_##isa(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,    \
                                   int32_t t0, int32_t t1, const float *p, int32_t n_q,         \
                                   int64_t ld, float *acc)
#define KVX_KV_DECLARE_STORE(codec)                                                             \
    size_t kvx_kv_k_region_bytes_##codec(const struct kvx_kv_fmt *f);                           \
    size_t kvx_kv_v_region_bytes_##codec(const struct kvx_kv_fmt *f);                           \
    void kvx_kv_k_put_##codec(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,        \
                              int64_t slot0, int32_t tok, const float *k);                      \
    void kvx_kv_v_put_##codec(uint8_t *data, uint8_t *state, const struct kvx_kv_fmt *f,        \
                              int64_t slot0, int32_t tok, const float *v);                      \
    void kvx_kv_k_get_##codec(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,         \
                              int32_t tok, float *k);                                           \
    void kvx_kv_v_get_##codec(const struct kvx_kv_block *b, const struct kvx_kv_fmt *f,         \
                              int32_t tok, float *v);                                           \
    void kvx_kv_k_copy_##codec(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from,      \
                               int32_t n, const struct kvx_kv_fmt *f);                          \
    void kvx_kv_v_copy_##codec(uint8_t *dst, int32_t to, const uint8_t *src, int32_t from,      \
                               int32_t n, const struct kvx_kv_fmt *f)
KVX_KV_DECLARE_STORE(f32);
KVX_KV_DECLARE_STORE(f16);
KVX_KV_DECLARE_STORE(bf16);
KVX_KV_DECLARE_KERNELS(f32, scalar);
KVX_KV_DECLARE_KERNELS(f16, scalar);
KVX_KV_DECLARE_KERNELS(bf16, scalar);
KVX_KV_DECLARE_KERNELS(f32, avx2);
KVX_KV_DECLARE_KERNELS(f16, avx2);
KVX_KV_DECLARE_KERNELS(bf16, avx2);
KVX_KV_DECLARE_KERNELS(f32, avx512);
KVX_KV_DECLARE_KERNELS(f16, avx512);
KVX_KV_DECLARE_KERNELS(bf16, avx512);

/* Ops of codec `c` for `isa`; NULL for an unknown codec. */
const struct kvx_kv_codec_ops *kvx_kv_codec_ops(enum kvx_kv_codec c, enum kvx_isa isa);
const char *kvx_kv_codec_name(enum kvx_kv_codec c);
/* Parse a codec name ("f32", "f16", "bf16", "q8", "q4", "kivi2", "rot4", "rot3", "kivi4",
 * "q4plain");
 * false if unknown. */
bool kvx_kv_codec_parse(const char *s, enum kvx_kv_codec *out);
/* The format of one head of dimension dim in pages of page_tokens tokens, with the kivi2
 * parameters (group, residual) where the codec uses them. */
struct kvx_kv_fmt kvx_kv_fmt_make(enum kvx_kv_codec c, int32_t page_tokens, int32_t dim,
                                  int32_t group, int32_t residual);
/* Can codec c store heads of dimension dim in pages of page_tokens tokens (with kivi2's
 * group and residual)?  KVX_ERR_INVALID_ARG naming the constraint when not. */
enum kvx_status kvx_kv_codec_check(enum kvx_kv_codec c, int32_t page_tokens, int32_t dim,
                                   int32_t group, int32_t residual, struct kvx_err *err);

#endif
