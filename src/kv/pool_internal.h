/* kv/pool_internal: what the files of the pool share (pool.c: creation, pages, sequences and
 * reserve; pool_io.c: writing and reading; pool_compact.c: slots and compaction; pool_check.c:
 * the invariant check; pool_share.c: fork, attach, unshare and holders).  Internal to kv/:
 * the structures behind kv/pool.h's opaque types and the helpers more than one file calls. */
#ifndef KVX_KV_POOL_INTERNAL_H
#define KVX_KV_POOL_INTERNAL_H

#include "kv/pool.h"


struct kvx_kv_page {
    size_t offset;          /* from the pool base */
    int32_t cls;            /* size class */
    int32_t refs;
    int32_t next_free;      /* next page on the class free list, -1 at its end */
};

struct kvx_kv_class {
    size_t page_bytes;
    int32_t free_head;      /* -1: empty */
    int64_t n_free;
};

/* One owning layer's pages of one sequence, indexed by page number (position / page_tokens). */
struct kvx_kv_table {
    int32_t *ids;           /* -1: dropped (window layers, below `first`) */
    uint8_t **ptrs;         /* page base, NULL for a hole: what views hand out */
    int64_t n;              /* entries = ceil(reserved / page_tokens) */
    int64_t cap;            /* allocated entries */
    int64_t first;          /* window layers: entries below are dropped */
    int32_t state_id;       /* the codec state page (layers whose codecs keep state), or -1 */
    uint8_t *state;         /* its base, NULL when none */
    int64_t shift;          /* positions minus slots (tokens compaction removed); see pool.h */
};

struct kvx_kv_seq {
    struct kvx_kv_pool *pool;
    struct kvx_kv_seq *prev, *next;    /* the pool's list of live sequences */
    int64_t len, reserved;
    int64_t floor_len;                 /* length at the last window drop (reserve) */
    int64_t compact_len;               /* length at the last compaction (0: none) */
    struct kvx_kv_table *tables;       /* n_layer entries; non-owning layers stay empty */
    bool unshareable;                  /* kept out of prefix sharing (kvx_kv_seq_set_shareable) */
};

struct kvx_kv_pool {
    const struct kvx_kv_layout *layout;
    enum kvx_isa isa;
    bool compact_reencode;
    uint8_t *base;
    size_t map_bytes, budget, carved, bytes_used;
    struct kvx_kv_page *pages;
    int32_t n_pages, cap_pages;
    int64_t pages_used;
    struct kvx_kv_class *classes;
    int32_t n_classes;
    int32_t *layer_class;              /* per layer; -1 when the layer owns nothing */
    int32_t *state_class;              /* per layer; -1 when its codecs keep no state */
    const struct kvx_kv_codec_ops **k_ops, **v_ops;   /* per layer (resolved for SHARED) */
    int64_t *plan_need, *plan_freed;   /* reserve's per-class counts (n_classes each) */
    struct kvx_kv_seq *seqs;
    int64_t n_seqs;
    struct kvx_kv_holder *holders;     /* registered holders (prefix cache) */
    int32_t n_holders;
    int64_t *plan_reclaim;             /* per class: pages holders could release (2*n_layer) */
    float *compact_buf;                /* kvx_kv_seq_compact's scratch, grown on demand */
    size_t compact_cap;                /* floats */
};

/* Helpers of pool.c (their comments are with their definitions there), and the per-page
 * header hook of pool_io.c that compaction also calls. */
bool kvx_kvp_page_valid(const struct kvx_kv_pool *p, int32_t page);
int32_t kvx_kvp_page_alloc(struct kvx_kv_pool *p, int32_t cls);
int64_t kvx_kvp_table_first_needed(const struct kvx_kv_seq *s, int32_t layer, int64_t len);
bool kvx_kvp_pooled_kind(enum kvx_kv_kind k);
int64_t kvx_kvp_pages_for(const struct kvx_kv_layout *l, int32_t layer, int64_t slots);
void kvx_kvp_heads_state_truncate(struct kvx_kv_seq *s, int32_t layer, int32_t h0, int32_t h1,
                                  int64_t n_keep);
void kvx_kvp_state_truncate(struct kvx_kv_seq *s, int32_t layer, int64_t n_keep);
enum kvx_status kvx_kvp_table_grow(struct kvx_kv_table *t, int64_t n);
enum kvx_status kvx_kvp_pages_grow(struct kvx_kv_pool *p, int64_t n);
size_t kvx_kvp_plan_bytes(const struct kvx_kv_pool *p, const int64_t *extra, int64_t *new_descs);
size_t kvx_kvp_plan_fit(struct kvx_kv_pool *p, size_t *bytes, int64_t *new_descs);
int64_t kvx_kvp_cow_count(const struct kvx_kv_seq *s, int32_t layer, int64_t k0);
void kvx_kvp_cow_commit(struct kvx_kv_seq *s, int32_t layer, int64_t k0);
int64_t kvx_kvp_table_end(const struct kvx_kv_seq *s, int32_t layer, int64_t target);
void kvx_kvp_begin_page(const struct kvx_kv_seq *s, int32_t layer, int32_t h, int64_t pg);

#endif
