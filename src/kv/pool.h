/* kv/pool: KV pages under one byte budget, and the per-sequence page tables.
 *
 * The pool reserves its budget as address space (touched only as pages are used) and carves
 * fixed-size pages from it, one size class per distinct page size in the layout.  Pages are
 * reference-counted so that later sequences can share them (prefix sharing, fork).  A sequence
 * (struct kvx_kv_seq) holds, for every layer that owns a cache, the ordered list of its pages.
 *
 * Changes are two-phase: kvx_kv_seq_reserve first counts the pages it needs and fails with
 * KVX_ERR_KV_FULL, changing nothing, when the budget cannot hold them (after asking holders
 * such as the prefix cache to release pages nobody else uses, which they do only when that
 * makes the request fit).
 * kvx_kv_pool_check verifies every invariant (refcounts equal table references, free lists
 * hold only unreferenced pages, byte accounting adds up); tests call it after each operation.
 * Not thread-safe: the engine calls it from one thread; kernels only read page memory.
 *
 * Memory: the budget is one mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) reservation, so
 * pages never touched cost no RSS; pages of each size class are carved from it by a bump
 * pointer and go back to a per-class free list when their last reference goes.  Every page is
 * KVX_KV_PAGE_ALIGN-aligned.  The mapping is advised MADV_HUGEPAGE (attention streams through
 * pages; measured ~1.3x faster at depth 8000), so RSS grows in steps of up to 2 MiB.
 *
 * Window layers (kv/layout.h): a sequence's page table keeps an entry for every page index
 * from 0, with holes (id -1, NULL in views) for dropped pages.  kvx_kv_seq_reserve, called when
 * the sequence has L tokens written, drops every window page lying wholly before
 * kvx_kv_layer_first_pos(L) (the first key a query at position >= L can see) and reuses it,
 * so during a step that writes and attends positions [L, n) a window layer holds the pages
 * overlapping [first_pos(L), n); a sequence grown one token per reserve holds exactly
 * kvx_kv_layer_pages(n).  Dropped tokens cannot come back: see kvx_kv_seq_truncate. */
#ifndef KVX_KV_POOL_H
#define KVX_KV_POOL_H

#include <stdbool.h>
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
    bool compact_reencode;                /* tests: compaction moves tokens through get/put
                                           * even where the codecs copy raw bytes */
};

enum kvx_status kvx_kv_pool_create(const struct kvx_kv_pool_cfg *cfg, struct kvx_kv_pool **out,
                                   struct kvx_err *err);
/* Destroys the pool; every sequence must have been destroyed first (a caller error otherwise:
 * the pool then frees the remaining sequences too, and their handles become invalid). */
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
/* Verify: page descriptors tile [0, bytes_carved) exactly and carved <= budget; every page's
 * refcount equals its page-table references over all live sequences plus the references the
 * registered holders report (each holder also checks itself); codec state pages have one
 * reference; free-list pages have
 * refcount 0, the right class and appear once, and every unreferenced page is on one;
 * bytes_used and pages_used equal the referenced pages' sum; each sequence has
 * ceil((reserved - shift) / page_tokens) entries per owning layer, FULL layers exactly
 * kvx_kv_layer_pages(reserved - shift) pages, window layers holes exactly below the first page
 * the last reserve kept and every key the next query sees present; a layer's shift is 0
 * unless it is FULL and at most the length at the last compaction, which is at most the
 * length.  KVX_ERR_FORMAT naming the
 * first violation (KVX_ERR_NOMEM if its bookkeeping cannot be allocated). */
enum kvx_status kvx_kv_pool_check(const struct kvx_kv_pool *p, struct kvx_err *err);
const struct kvx_kv_layout *kvx_kv_pool_layout(const struct kvx_kv_pool *p);

enum kvx_status kvx_kv_seq_create(struct kvx_kv_pool *p, struct kvx_kv_seq **out,
                                  struct kvx_err *err);
/* Releases the sequence's page references. */
void kvx_kv_seq_destroy(struct kvx_kv_seq *s);

/* Positions written (0 .. n-1): the next token's position.  A compacted layer stores fewer
 * tokens: kvx_kv_seq_slots. */
int64_t kvx_kv_seq_len(const struct kvx_kv_seq *s);
/* Ensure pages exist for positions [0, n_tokens) in every owning layer (and drop the window
 * pages no query from kvx_kv_seq_len on can see, see above), and that every page holding a
 * position >= kvx_kv_seq_len is the sequence's own (shared ones are copied: copy-on-write,
 * below).  All or nothing: KVX_ERR_KV_FULL (naming how many bytes were missing) or
 * KVX_ERR_NOMEM leaves the sequence and the pool unchanged. */
enum kvx_status kvx_kv_seq_reserve(struct kvx_kv_seq *s, int64_t n_tokens, struct kvx_err *err);
/* Mark positions [0, n_tokens) as written (n_tokens <= reserved capacity, clamped to it).
 * Never shrinks the sequence (use kvx_kv_seq_truncate) and never frees pages. */
void kvx_kv_seq_set_len(struct kvx_kv_seq *s, int64_t n_tokens);
/* Forget positions >= n_keep and release pages no longer needed (reserved capacity beyond
 * n_keep included).  A window layer that already dropped keys a query at position n_keep
 * would see cannot serve n_keep: when 0 < n_keep < kvx_kv_seq_min_truncate(s) the sequence is
 * emptied instead (length 0, every page released) and the caller must recompute it. */
void kvx_kv_seq_truncate(struct kvx_kv_seq *s, int64_t n_keep);
/* The model's own per-sequence state of `layer` (kvx_layer_cache.state_floats f32 values; zero
 * in a new or emptied sequence, copied by fork), or NULL when the layer declares none or the
 * sequence holds nothing reserved yet.  The model reads and updates it during a step; the pool
 * never interprets it.  Since it describes the sequence's last token, a sequence with model
 * state is emptied by any truncation below its length (kvx_kv_seq_min_truncate = length) and
 * cannot attach prefix pages. */
float *kvx_kv_seq_model_state(struct kvx_kv_seq *s, int32_t layer);
/* Positions [0, n) for which pages exist (>= kvx_kv_seq_len). */
int64_t kvx_kv_seq_reserved(const struct kvx_kv_seq *s);
/* The smallest n_keep > 0 that kvx_kv_seq_truncate keeps as asked: 1 when no window layer has
 * dropped a page, otherwise a value <= kvx_kv_seq_len. */
int64_t kvx_kv_seq_min_truncate(const struct kvx_kv_seq *s);

/* Store the K and V rows of position `pos` of `layer` (k: n_kv_heads*k_dim floats, v likewise;
 * v is not read for a LATENT layer or one with v_dim 0 and may be NULL there);
 * the position must be reserved.  Calls for one sequence must not run concurrently (codecs keep
 * per-sequence state and pack several tokens into shared bytes) and write positions in
 * increasing order (an earlier position is a rewrite: kv/codec.h).  For a SHARED layer this is
 * an error of the caller (and, like an unreserved or dropped position, the call does nothing).
 * The page is written in place; a page other holders also reference (fork, prefix cache) is
 * never written: kvx_kv_seq_reserve gives the sequence private copies of the pages from
 * position kvx_kv_seq_len on, so writing into a shared page (without that reserve) is a caller
 * error and does nothing. */
void kvx_kv_seq_write(struct kvx_kv_seq *s, int32_t layer, int64_t pos, const float *k,
                      const float *v);

/* COMPRESSED and HEAVY layers (kv/layout.h) store entries, not tokens: for them `pos` in
 * kvx_kv_seq_write is an entry index (entry e pools tokens [e*ratio, (e+1)*ratio)), a view's
 * slots are entries, and a sequence reserved for n tokens holds kvx_kv_layer_entries(n)
 * of them.  Their per-sequence state block (kvx_kv_layer_state_bytes: codec state, the ring of
 * the last `window` raw tokens, the compressor's pending and overlap state, at the offsets
 * kv/layout gives) exists from the first reserve on, starts zeroed, and belongs to the model,
 * which reads and writes it through kvx_kv_seq_state.  That state cannot be rewound:
 * kvx_kv_seq_min_truncate is the length (a shorter truncation empties the sequence), and such
 * layers take no part in prefix sharing (block pages, attach). */
/* The state block of `layer` (NULL when the layer keeps none, or nothing is reserved yet). */
uint8_t *kvx_kv_seq_state(struct kvx_kv_seq *s, int32_t layer);
/* The pool a sequence belongs to. */
struct kvx_kv_pool *kvx_kv_seq_pool(const struct kvx_kv_seq *s);

/* What attention needs to read one layer of one sequence (a SHARED layer resolves to the layer
 * it reads).  Valid until the sequence next changes. */
struct kvx_kv_view {
    uint8_t *const *pages;                 /* page base pointers in slot order */
    int64_t n_pages;
    int32_t page_tokens;
    int32_t n_kv_heads, k_dim, v_dim;
    size_t k_off, k_stride;                /* K region of head h: page + k_off + h*k_stride */
    size_t v_off, v_stride;
    const struct kvx_kv_codec_ops *k_ops, *v_ops;
    struct kvx_kv_fmt k_fmt, v_fmt;        /* one head's formats */
    bool v_is_k;                           /* LATENT: V is the stored K vector (v_dim = k_dim,
                                            * the v_* fields repeat the k_* ones); read it with
                                            * k_ops->k_get, never v_ops */
    const uint8_t *k_state, *v_state;      /* codec state of head h: k_state + h*k_state_stride */
    size_t k_state_stride, v_state_stride; /* (NULL / 0 when the codecs keep none) */
    enum kvx_isa isa;                      /* the pool's ISA (attention picks its exp by it) */
};
/* pages[i] is NULL for a page a window layer dropped; a layer that owns nothing (NONE) gives
 * n_pages = 0. */
void kvx_kv_seq_view(const struct kvx_kv_seq *s, int32_t layer, struct kvx_kv_view *out);
/* Decode the K (V) vector of `slot` of KV head h through a view (tests, export); false when
 * the view does not hold that slot. */
bool kvx_kv_view_get_k(const struct kvx_kv_view *v, int32_t h, int64_t slot, float *out);
bool kvx_kv_view_get_v(const struct kvx_kv_view *v, int32_t h, int64_t slot, float *out);

/* ---------------------------------------------------------------------------------------------
 * Slots and compaction, for eviction (kv/evict.h).
 *
 * A FULL layer stores its tokens in slots 0, 1, ... (pages in slot order).  Until the first
 * compaction slot = position.  kvx_kv_seq_compact keeps chosen slots of one layer, moves them
 * down in order and frees the pages no longer needed; the layer's `shift` (positions minus
 * slots) then grows by the number of tokens removed, so that positions from the sequence's
 * length at the compaction on go to slot pos - shift (reserve, write and attention all map
 * positions through it).  Layers compact independently and may hold different numbers of
 * slots.  K is stored after RoPE, so kept keys keep their original positions.  Positions
 * below the length at the last compaction can no longer be addressed: writes there do
 * nothing and kvx_kv_seq_min_truncate is at least that length.  Compacted pages are written
 * in place, so a compacted sequence must not share pages (kvx_kv_seq_compacted). */

/* Tokens `layer` stores (slots [0, n)); kvx_kv_seq_len for a layer never compacted, 0 for a
 * layer that owns nothing.  A SHARED layer answers for the layer it reads. */
int64_t kvx_kv_seq_slots(const struct kvx_kv_seq *s, int32_t layer);
/* The slot position `pos` is (or will be) stored in: pos - shift (pos itself for a layer
 * never compacted).  Meaningful for pos >= the length at the last compaction. */
int64_t kvx_kv_seq_slot(const struct kvx_kv_seq *s, int32_t layer, int64_t pos);
/* True once a compaction removed tokens from any layer (until truncated to 0): slots are no
 * longer positions, so the sequence's pages must not be shared as a prefix. */
bool kvx_kv_seq_compacted(const struct kvx_kv_seq *s);
/* The first slot a query at position `pos` sees in `layer`: the slot of
 * kvx_kv_layer_first_pos (a window layer), 0 for every other kind. */
int64_t kvx_kv_seq_first_slot(const struct kvx_kv_seq *s, int32_t layer, int64_t pos);
/* In FULL layer `layer`, keep in KV head h only the n_keep slots keep[h*n_keep + j]
 * (j < n_keep, strictly increasing, each < kvx_kv_seq_slots), moved to slots 0..n_keep-1 in
 * that order; every head keeps the same number.  Values move as raw bytes where the codecs
 * store tokens independently (k_copy / v_copy, e.g. f32, f16), otherwise through the codecs'
 * get and put (quantizing codecs then re-quantize the moved tokens) with their state (e.g. a
 * residual) truncated and rebuilt by the codec's own ops; then pages beyond the new reserved
 * slots are freed.  All or nothing: KVX_ERR_INVALID_ARG (bad layer or keep
 * list), KVX_ERR_UNSUPPORTED (a page to rewrite is shared) or KVX_ERR_NOMEM leave the
 * sequence unchanged.  Allocates only when its scratch must grow. */
enum kvx_status kvx_kv_seq_compact(struct kvx_kv_seq *s, int32_t layer, const int64_t *keep,
                                   int64_t n_keep, struct kvx_err *err);

/* ---------------------------------------------------------------------------------------------
 * Page references, for modules of kv/ that share pages (prefix, fork).  Page ids are int32
 * indices into the pool's page descriptors.  A page whose count drops to 0 goes back to its
 * class's free list.  kvx_kv_pool_check requires every reference to be a page-table entry of
 * a live sequence or one a registered holder reports (kvx_kv_pool_add_holder below). */
void kvx_kv_page_ref(struct kvx_kv_pool *p, int32_t page);
void kvx_kv_page_unref(struct kvx_kv_pool *p, int32_t page);
int32_t kvx_kv_page_refcount(const struct kvx_kv_pool *p, int32_t page);
/* Base address of a page (NULL for an id out of range). */
uint8_t *kvx_kv_page_data(const struct kvx_kv_pool *p, int32_t page);
/* Bytes of a page (0 for an id out of range). */
size_t kvx_kv_page_bytes(const struct kvx_kv_pool *p, int32_t page);

/* ---------------------------------------------------------------------------------------------
 * Sharing: fork, attach, copy-on-write, holders.
 *
 * A page may be referenced by several sequences (fork) and by holders outside any sequence (the
 * prefix cache, kv/prefix.h).  Shared pages are read-only: kvx_kv_seq_reserve first copies
 * every shared page the coming writes touch (those from the page of position kvx_kv_seq_len on),
 * the copies counted in its all-or-nothing plan, so a KV_FULL leaves everything unchanged.
 * Codec state pages are never shared (each sequence has its own). */

/* A new sequence holding the same tokens as src: it references src's pages for positions
 * [0, len) (no copy; reserved capacity beyond len is not shared) and gets a copy of src's codec
 * state pages.  Window layers' dropped entries are copied as holes.  KV_FULL (the state pages do
 * not fit) or NOMEM leaves src, the pool and *dst (NULL) unchanged. */
enum kvx_status kvx_kv_seq_fork(struct kvx_kv_seq *src, struct kvx_kv_seq **dst,
                                struct kvx_err *err);

/* Layers that own pages, in layer order: the j-th entry of a block's page list belongs to the
 * j-th of them. */
int32_t kvx_kv_pool_n_owning(const struct kvx_kv_pool *p);
/* The pages of block b (positions [b*page_tokens, (b+1)*page_tokens)) in every owning layer,
 * written to ids (kvx_kv_pool_n_owning entries); false when s does not hold the block whole
 * (fewer than (b+1)*page_tokens tokens written, or a window layer dropped it). */
bool kvx_kv_seq_block_pages(const struct kvx_kv_seq *s, int64_t b, int32_t *ids);
/* Make blocks [first, first + n_blocks) of s reference the pages ids[i*n_owning + j] (block
 * first + i, owning layer j; pages someone already references) instead of what s held there,
 * and set its length to n_tokens, which must lie in ((first+n_blocks-1)*pt, (first+n_blocks)*pt]
 * (the last block may be used partly) and exceed the length, with first*pt <= the length.  The
 * caller guarantees the pages hold the K/V of s's own tokens at those positions (kv/prefix
 * does).  Codec state: allocated empty when s had none, else emptied, then brought in line
 * through the codecs' truncate hook as for a sequence cut to n_tokens.  Refused
 * (KVX_ERR_UNSUPPORTED) for layouts with window layers and for unshareable sequences;
 * KVX_ERR_INVALID_ARG for bad ranges or page ids.  All or nothing (KV_FULL, NOMEM). */
enum kvx_status kvx_kv_seq_attach(struct kvx_kv_seq *s, int64_t first, int64_t n_blocks,
                                  const int32_t *ids, int64_t n_tokens, struct kvx_err *err);
/* Give s private copies of every shared page holding positions >= pos (for code that rewrites
 * pages in place, e.g. eviction).  All or nothing (KV_FULL, NOMEM). */
enum kvx_status kvx_kv_seq_unshare(struct kvx_kv_seq *s, int64_t pos, struct kvx_err *err);
/* A sequence whose pages no longer hold exactly the K/V of its tokens at their positions (e.g.
 * tokens were evicted) must not take part in prefix sharing: mark it unshareable.  A sequence
 * starts shareable and becomes so again when truncated to 0; a fork inherits the mark. */
void kvx_kv_seq_set_shareable(struct kvx_kv_seq *s, bool shareable);
bool kvx_kv_seq_shareable(const struct kvx_kv_seq *s);
/* Bytes of the pages that two or more sequences' page tables reference (each counted once). */
size_t kvx_kv_pool_shared_bytes(const struct kvx_kv_pool *p);

/* A holder keeps page references outside any sequence (the prefix cache).  The pool asks it to
 * account for them in kvx_kv_pool_check and, when a request does not fit the budget, to
 * release what nobody else uses, least recently used first. */
struct kvx_kv_holder {
    void *ctx;
    /* Add 1 to refs[id] for every page reference held and verify the holder's own structure
     * (KVX_ERR_FORMAT naming the violation). */
    enum kvx_status (*check)(const void *ctx, int32_t *refs, struct kvx_err *err);
    /* Optional.  Add to pages[c] the pages of size class c (kvx_kv_page_class) that releasing
     * everything reclaimable would return to the free lists. */
    void (*reclaimable)(void *ctx, int64_t *pages);
    /* Optional.  Release the least recently used reclaimable unit; false when none is left. */
    bool (*reclaim_one)(void *ctx);
};
/* Register (the struct is copied) / unregister by ctx.  A holder must release its references
 * and unregister before the pool is destroyed. */
enum kvx_status kvx_kv_pool_add_holder(struct kvx_kv_pool *p, const struct kvx_kv_holder *h,
                                       struct kvx_err *err);
void kvx_kv_pool_remove_holder(struct kvx_kv_pool *p, const void *ctx);
/* Size class of a page (-1 for an id out of range) and the number of classes. */
int32_t kvx_kv_page_class(const struct kvx_kv_pool *p, int32_t page);
int32_t kvx_kv_pool_n_classes(const struct kvx_kv_pool *p);

#endif
