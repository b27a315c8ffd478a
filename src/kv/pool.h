/* kv/pool: KV pages under one byte budget, and the per-sequence page tables.
 *
 * The pool reserves its budget as address space (touched only as pages are used) and carves
 * fixed-size pages from it, one size class per distinct page size in the layout.  Pages are
 * reference-counted so that later sequences can share them (prefix sharing, fork).  A sequence
 * (struct kvx_kv_seq) holds, for every layer that owns a cache, the ordered list of its pages.
 *
 * Changes are two-phase: kvx_kv_seq_reserve first counts the pages it needs and fails with
 * KVX_ERR_KV_FULL, changing nothing, when the budget cannot hold them.
 * kvx_kv_pool_check verifies every invariant (refcounts equal table references, free lists
 * hold only unreferenced pages, byte accounting adds up); tests call it after each operation.
 * Not thread-safe: the engine calls it from one thread; kernels only read page memory. */
#ifndef KVX_KV_POOL_H
#define KVX_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "kv/codec.h"
#include "kv/layout.h"
#include "kvx.h"

struct kvx_kv_pool;
struct kvx_kv_seq;

struct kvx_kv_pool_cfg {
    const struct kvx_kv_layout *layout;   /* borrowed; must outlive the pool */
    size_t budget_bytes;
    enum kvx_isa isa;                     /* picks the codec kernels of views */
};

enum kvx_status kvx_kv_pool_create(const struct kvx_kv_pool_cfg *cfg, struct kvx_kv_pool **out,
                                   struct kvx_err *err);
/* Destroys the pool; every sequence must have been destroyed first. */
void kvx_kv_pool_destroy(struct kvx_kv_pool *p);

struct kvx_kv_pool_stats {
    size_t budget_bytes;
    size_t bytes_used;          /* sum of the sizes of referenced pages */
    size_t bytes_carved;        /* address space handed out to pages so far (used + free lists) */
    int64_t pages_used;
    int64_t pages_free;         /* pages on free lists */
    int64_t n_seqs;
};
void kvx_kv_pool_get_stats(const struct kvx_kv_pool *p, struct kvx_kv_pool_stats *out);
enum kvx_status kvx_kv_pool_check(const struct kvx_kv_pool *p, struct kvx_err *err);
const struct kvx_kv_layout *kvx_kv_pool_layout(const struct kvx_kv_pool *p);

enum kvx_status kvx_kv_seq_create(struct kvx_kv_pool *p, struct kvx_kv_seq **out,
                                  struct kvx_err *err);
/* Releases the sequence's page references. */
void kvx_kv_seq_destroy(struct kvx_kv_seq *s);

/* Tokens whose K/V are stored (positions 0 .. n-1). */
int64_t kvx_kv_seq_len(const struct kvx_kv_seq *s);
/* Ensure pages exist for positions [0, n_tokens) in every owning layer.  All or nothing:
 * KVX_ERR_KV_FULL (naming how many bytes were missing) leaves the sequence unchanged. */
enum kvx_status kvx_kv_seq_reserve(struct kvx_kv_seq *s, int64_t n_tokens, struct kvx_err *err);
/* Mark positions [0, n_tokens) as written (n_tokens <= reserved capacity). */
void kvx_kv_seq_set_len(struct kvx_kv_seq *s, int64_t n_tokens);
/* Forget positions >= n_keep and release pages no longer needed. */
void kvx_kv_seq_truncate(struct kvx_kv_seq *s, int64_t n_keep);

/* Store the K and V rows of position `pos` of `layer` (k: n_kv_heads*k_dim floats, v likewise);
 * the position must be reserved.  For a SHARED layer this is an error of the caller. */
void kvx_kv_seq_write(struct kvx_kv_seq *s, int32_t layer, int64_t pos, const float *k,
                      const float *v);

/* What attention needs to read one layer of one sequence (a SHARED layer resolves to the layer
 * it reads).  Valid until the sequence next changes. */
struct kvx_kv_view {
    uint8_t *const *pages;                 /* page base pointers in token order */
    int64_t n_pages;
    int32_t page_tokens;
    int32_t n_kv_heads, k_dim, v_dim;
    size_t k_off, k_stride;                /* K region of head h: page + k_off + h*k_stride */
    size_t v_off, v_stride;
    const struct kvx_kv_codec_ops *k_ops, *v_ops;
};
void kvx_kv_seq_view(const struct kvx_kv_seq *s, int32_t layer, struct kvx_kv_view *out);

#endif
