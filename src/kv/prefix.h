/* kv/prefix: the prefix cache — a radix tree over blocks of tokens whose nodes hold KV pages, so
 * that a sequence whose tokens begin with a cached prefix attaches those pages instead of
 * computing them.
 *
 * One block is page_tokens tokens, one page per owning layer: block b of a sequence holds
 * positions [b*page_tokens, (b+1)*page_tokens).  A node at depth b holds the tokens of its
 * block and the page id of every owning layer (kvx_kv_pool_n_owning order); its path from the
 * root spells the tokens of blocks 0..b, which is everything the K/V of that block depends on
 * (for one engine: one model, one cache layout).  Children of a node differ in their tokens.
 * Sharing is by whole identical blocks; a lookup may end inside the first differing block,
 * attaching that page for the tokens that agree (the pool copies it before the sequence writes
 * into it: copy-on-write).
 *
 * References: a node holds one reference on each of its pages; the pool counts them through a
 * registered holder (kv/pool.h), so kvx_kv_pool_check verifies them and the tree itself.  A
 * node whose pages nobody else references is idle; when a request does not fit the budget, the
 * pool releases idle leaves, least recently used first (lookups and inserts count as use), and
 * only when that makes the request fit.
 *
 * Who takes part: layouts with window layers do not (their pages drop tokens; create refuses
 * them), nor do sequences marked unshareable (kvx_kv_seq_set_shareable: e.g. evicted tokens,
 * whose pages no longer hold the K/V of their tokens at their positions).
 * Not thread-safe (the engine's thread, like the pool). */
#ifndef KVX_KV_PREFIX_H
#define KVX_KV_PREFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/layout.h"
#include "kv/pool.h"
#include "kvx.h"

struct kvx_kv_prefix;

/* True when the layout can share prefixes (it has owning layers, no window layer and no layer
 * keeping model state). */
bool kvx_kv_prefix_supported(const struct kvx_kv_layout *l);
/* An empty tree over the pool's pages, registered as a holder of the pool.
 * KVX_ERR_UNSUPPORTED for a layout kvx_kv_prefix_supported refuses (naming the layer). */
enum kvx_status kvx_kv_prefix_create(struct kvx_kv_pool *p, struct kvx_kv_prefix **out,
                                     struct kvx_err *err);
/* Releases every node's references and unregisters; before the pool is destroyed. */
void kvx_kv_prefix_destroy(struct kvx_kv_prefix *t);

/* Tokens of tokens[0, n) that the cache holds: whole blocks, then the longest agreeing part
 * of one more block. */
int64_t kvx_kv_prefix_lookup(const struct kvx_kv_prefix *t, const int32_t *tokens, int64_t n);

/* s's token history is tokens[0, n) (its kvx_kv_seq_len stored tokens first).  When the cache
 * holds more of it than s stores and s's length is a multiple of page_tokens (so no page s
 * wrote is replaced, and kvx_kv_seq_truncate back to that length undoes the attach), attach
 * the cached pages from that block on (kvx_kv_seq_attach) and set *n_cached to the new
 * length; otherwise change nothing and set *n_cached to s's length.  Unshareable sequences are
 * left alone.  All or nothing: KV_FULL (codec state pages) or NOMEM leave s as it was. */
enum kvx_status kvx_kv_prefix_attach(struct kvx_kv_prefix *t, struct kvx_kv_seq *s,
                                     const int32_t *tokens, int64_t n, int64_t *n_cached,
                                     struct kvx_err *err);

/* Add s's whole blocks (tokens = its history, at least kvx_kv_seq_len entries) that the tree
 * lacks, referencing s's pages.  Unshareable sequences add nothing.  NOMEM leaves the tree with
 * the blocks added before it (each node complete). */
enum kvx_status kvx_kv_prefix_insert(struct kvx_kv_prefix *t, const struct kvx_kv_seq *s,
                                     const int32_t *tokens, struct kvx_err *err);

/* Release the least recently used idle leaf; false when there is none. */
bool kvx_kv_prefix_evict_one(struct kvx_kv_prefix *t);

struct kvx_kv_prefix_stats {
    int64_t n_blocks;          /* nodes */
    size_t bytes;              /* bytes of the pages the nodes reference */
    size_t bytes_idle;         /* of which no sequence references (the cache alone holds) */
    int64_t tokens_attached;   /* tokens sequences attached instead of computing, all time */
    int64_t blocks_evicted;    /* nodes released to make room, all time */
};
void kvx_kv_prefix_get_stats(const struct kvx_kv_prefix *t, struct kvx_kv_prefix_stats *out);

#endif
