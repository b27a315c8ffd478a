/* kv/pool: pages under a byte budget, page tables, reference counts and the invariant check.
 *
 * Owns the budget's address space (one NORESERVE mapping), the page descriptors (offset, size
 * class, refcount, free-list link), the per-class free lists and every live sequence's page
 * tables.  Byte counts come from kv/layout; what is inside a page is kv/codec's business.
 * Two-phase changes: kvx_kv_seq_reserve plans (counts pages per class, grows bookkeeping
 * arrays) before it commits, so KV_FULL and NOMEM leave everything unchanged.
 * Sharing (fork, attach of cached prefixes) only adds references; the copy-on-write of a
 * shared page is part of the plan of the reserve before the first write into it.
 * This file: creation, pages, sequences and reserve.  The rest of the pool: pool_io.c (writing
 * and reading), pool_compact.c (slots, compaction), pool_check.c (the invariant check),
 * pool_share.c (fork, attach, unshare, holders); their shared structures: pool_internal.h. */
#include "kv/pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/err.h"

/* ---------------------------------------------------------------------------------------------
 * Creation */

/* The size class of pages of `bytes` bytes, added when new. */
static int32_t class_for(struct kvx_kv_pool *p, size_t bytes)
{
    int32_t c = 0;
    while (c < p->n_classes && p->classes[c].page_bytes != bytes)
        c++;
    if (c == p->n_classes) {
        p->classes[c] = (struct kvx_kv_class){.page_bytes = bytes, .free_head = -1};
        p->n_classes++;
    }
    return c;
}

static enum kvx_status pool_classes(struct kvx_kv_pool *p, struct kvx_err *err)
{
    const struct kvx_kv_layout *l = p->layout;
    size_t n = (size_t)l->n_layer;
    p->layer_class = malloc(n * sizeof *p->layer_class);
    p->state_class = malloc(n * sizeof *p->state_class);
    p->classes = calloc(2 * n, sizeof *p->classes);
    p->k_ops = calloc(n, sizeof *p->k_ops);
    p->v_ops = calloc(n, sizeof *p->v_ops);
    p->plan_need = calloc(2 * n, sizeof *p->plan_need);
    p->plan_freed = calloc(2 * n, sizeof *p->plan_freed);
    if (!p->layer_class || !p->state_class || !p->classes || !p->k_ops || !p->v_ops || !p->plan_need ||
        !p->plan_freed)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory for %d layers", (int)n);
    for (int32_t i = 0; i < l->n_layer; i++) {
        p->layer_class[i] = -1;
        p->state_class[i] = -1;
        const struct kvx_layer_cache *src = &l->layers[kvx_kv_layer_source(l, i)];
        if (kvx_kv_layer_owns(src)) {
            p->k_ops[i] = kvx_kv_codec_ops(src->k_codec, p->isa);
            p->v_ops[i] = src->kind == KVX_KV_KIND_LATENT ? p->k_ops[i]   /* V is K */
                                                          : kvx_kv_codec_ops(src->v_codec, p->isa);
        }
        if (!kvx_kv_layer_owns(&l->layers[i]))
            continue;
        p->layer_class[i] = class_for(p, kvx_kv_layer_page_bytes(l, i));
        size_t state = kvx_kv_layer_state_bytes(l, i);
        if (state)
            p->state_class[i] = class_for(p, state);
    }
    return KVX_OK;
}

static enum kvx_status pool_map(struct kvx_kv_pool *p, struct kvx_err *err)
{
    if (p->budget == 0)
        return KVX_OK;
    long os_page = sysconf(_SC_PAGESIZE);
    size_t page = os_page > 0 ? (size_t)os_page : 4096;
    if (p->budget > SIZE_MAX - page)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv pool: budget %zu bytes too large",
                           p->budget);
    p->map_bytes = (p->budget + page - 1) / page * page;
    void *m = mmap(NULL, p->map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        p->map_bytes = 0;
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: cannot reserve %zu bytes of address space: %s",
                           p->budget, strerror(errno));
    }
    p->base = m;
#ifdef MADV_HUGEPAGE
    /* attention streams through whole pages: 2 MiB pages spare the TLB (advice only) */
    madvise(m, p->map_bytes, MADV_HUGEPAGE);
#endif
    return KVX_OK;
}

enum kvx_status kvx_kv_pool_create(const struct kvx_kv_pool_cfg *cfg, struct kvx_kv_pool **out,
                                   struct kvx_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->layout)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv pool: no layout");
    enum kvx_status st = kvx_kv_layout_validate(cfg->layout, err);
    if (st != KVX_OK)
        return st;
    if ((int)cfg->isa < 0 || cfg->isa >= KVX_ISA_COUNT || !kvx_cpu_has_isa(cfg->isa))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv pool: this CPU cannot run ISA %s",
                           kvx_isa_name(cfg->isa));
    struct kvx_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory");
    p->layout = cfg->layout;
    p->isa = cfg->isa;
    p->compact_reencode = cfg->compact_reencode;
    p->budget = cfg->budget_bytes;
    st = pool_classes(p, err);
    if (st == KVX_OK)
        st = pool_map(p, err);
    if (st != KVX_OK) {
        kvx_kv_pool_destroy(p);
        return st;
    }
    *out = p;
    return KVX_OK;
}

void kvx_kv_pool_destroy(struct kvx_kv_pool *p)
{
    if (!p)
        return;
    while (p->seqs) /* caller error (documented): free them anyway */
        kvx_kv_seq_destroy(p->seqs);
    if (p->base)
        munmap(p->base, p->map_bytes);
    free(p->pages);
    free(p->classes);
    free(p->layer_class);
    free(p->state_class);
    free(p->k_ops);
    free(p->v_ops);
    free(p->plan_need);
    free(p->plan_freed);
    free(p->holders);
    free(p->plan_reclaim);
    free(p->compact_buf);
    free(p);
}

const struct kvx_kv_layout *kvx_kv_pool_layout(const struct kvx_kv_pool *p) { return p->layout; }

void kvx_kv_pool_get_stats(const struct kvx_kv_pool *p, struct kvx_kv_pool_stats *out)
{
    int64_t n_free = 0;
    for (int32_t c = 0; c < p->n_classes; c++)
        n_free += p->classes[c].n_free;
    *out = (struct kvx_kv_pool_stats){
        .budget_bytes = p->budget,
        .bytes_used = p->bytes_used,
        .bytes_carved = p->carved,
        .pages_used = p->pages_used,
        .pages_free = n_free,
        .n_seqs = p->n_seqs,
    };
}

/* ---------------------------------------------------------------------------------------------
 * Pages */

bool kvx_kvp_page_valid(const struct kvx_kv_pool *p, int32_t page)
{
    return page >= 0 && page < p->n_pages;
}

uint8_t *kvx_kv_page_data(const struct kvx_kv_pool *p, int32_t page)
{
    return kvx_kvp_page_valid(p, page) ? p->base + p->pages[page].offset : NULL;
}

int32_t kvx_kv_page_refcount(const struct kvx_kv_pool *p, int32_t page)
{
    return kvx_kvp_page_valid(p, page) ? p->pages[page].refs : 0;
}

void kvx_kv_page_ref(struct kvx_kv_pool *p, int32_t page)
{
    if (kvx_kvp_page_valid(p, page) && p->pages[page].refs > 0)
        p->pages[page].refs++;
}

void kvx_kv_page_unref(struct kvx_kv_pool *p, int32_t page)
{
    if (!kvx_kvp_page_valid(p, page) || p->pages[page].refs <= 0)
        return;
    struct kvx_kv_page *pg = &p->pages[page];
    if (--pg->refs > 0)
        return;
    struct kvx_kv_class *c = &p->classes[pg->cls];
    pg->next_free = c->free_head;
    c->free_head = page;
    c->n_free++;
    p->bytes_used -= c->page_bytes;
    p->pages_used--;
}

/* A page of class `cls` with one reference: from the free list, else carved.  The caller has
 * checked (reserve's plan) that one exists and that the descriptor array has room. */
int32_t kvx_kvp_page_alloc(struct kvx_kv_pool *p, int32_t cls)
{
    struct kvx_kv_class *c = &p->classes[cls];
    int32_t id = c->free_head;
    if (id >= 0) {
        c->free_head = p->pages[id].next_free;
        c->n_free--;
    } else {
        id = p->n_pages++;
        p->pages[id] = (struct kvx_kv_page){.offset = p->carved, .cls = cls};
        p->carved += c->page_bytes;
    }
    p->pages[id].refs = 1;
    p->pages[id].next_free = -1;
    p->bytes_used += c->page_bytes;
    p->pages_used++;
    return id;
}

/* ---------------------------------------------------------------------------------------------
 * Sequences */

enum kvx_status kvx_kv_seq_create(struct kvx_kv_pool *p, struct kvx_kv_seq **out,
                                  struct kvx_err *err)
{
    *out = NULL;
    struct kvx_kv_seq *s = calloc(1, sizeof *s);
    if (s)
        s->tables = calloc((size_t)p->layout->n_layer, sizeof *s->tables);
    if (!s || !s->tables) {
        free(s);
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory for a sequence");
    }
    for (int32_t i = 0; i < p->layout->n_layer; i++)
        s->tables[i].state_id = -1;
    s->pool = p;
    s->next = p->seqs;
    if (p->seqs)
        p->seqs->prev = s;
    p->seqs = s;
    p->n_seqs++;
    *out = s;
    return KVX_OK;
}

static void seq_free(struct kvx_kv_seq *s)
{
    for (int32_t i = 0; i < s->pool->layout->n_layer; i++) {
        free(s->tables[i].ids);
        free(s->tables[i].ptrs);
    }
    free(s->tables);
    free(s);
}

void kvx_kv_seq_destroy(struct kvx_kv_seq *s)
{
    if (!s)
        return;
    kvx_kv_seq_truncate(s, 0);
    struct kvx_kv_pool *p = s->pool;
    if (s->prev)
        s->prev->next = s->next;
    else
        p->seqs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    p->n_seqs--;
    seq_free(s);
}

int64_t kvx_kv_seq_len(const struct kvx_kv_seq *s) { return s->len; }

int64_t kvx_kv_seq_reserved(const struct kvx_kv_seq *s) { return s->reserved; }

void kvx_kv_seq_set_len(struct kvx_kv_seq *s, int64_t n_tokens)
{
    if (n_tokens > s->reserved)
        n_tokens = s->reserved;
    if (n_tokens > s->len)
        s->len = n_tokens;
}

/* First page a window layer must keep once `len` tokens are written (0 for FULL layers). */
int64_t kvx_kvp_table_first_needed(const struct kvx_kv_seq *s, int32_t layer, int64_t len)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    return kvx_kv_layer_first_pos(l, layer, len) / l->page_tokens;
}

bool kvx_kvp_pooled_kind(enum kvx_kv_kind k)
{
    return k == KVX_KV_KIND_COMPRESSED || k == KVX_KV_KIND_HEAVY;
}

/* Table entries (pages) `layer` needs for `slots` slots: one entry per slot, or per `ratio`
 * tokens for COMPRESSED / HEAVY layers (kvx_kv_layer_entries). */
int64_t kvx_kvp_pages_for(const struct kvx_kv_layout *l, int32_t layer, int64_t slots)
{
    return (kvx_kv_layer_entries(l, layer, slots) + l->page_tokens - 1) / l->page_tokens;
}

int64_t kvx_kv_seq_min_truncate(const struct kvx_kv_seq *s)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    int64_t min_keep = 1;
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_kv_table *t = &s->tables[i];
        if (kvx_kvp_pooled_kind(l->layers[i].kind) && s->len > min_keep)
            min_keep = s->len; /* the compressor state cannot be rewound */
        if (l->layers[i].kind != KVX_KV_KIND_WINDOW || t->first == 0)
            continue;
        /* first_pos(n) = n - w + 1 >= first * page_tokens */
        int64_t need = t->first * l->page_tokens + l->layers[i].window - 1;
        if (need > min_keep)
            min_keep = need;
    }
    if (kvx_kv_layout_has_model_state(l) && s->len > min_keep)
        min_keep = s->len;   /* the model state describes the last token only */
    return s->compact_len > min_keep ? s->compact_len : min_keep;
}

float *kvx_kv_seq_model_state(struct kvx_kv_seq *s, int32_t layer)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer || !kvx_kv_layer_model_state_bytes(l, layer) ||
        !s->tables[layer].state)
        return NULL;
    return (float *)(s->tables[layer].state + kvx_kv_layer_model_state_offset(l, layer));
}

/* Tell the codecs of `layer` that the sequence now ends at n_keep > 0 slots (their state may
 * hold tokens past it, or miss tokens it must now hold). */
void kvx_kvp_state_truncate(struct kvx_kv_seq *s, int32_t layer, int64_t n_keep)
{
    kvx_kvp_heads_state_truncate(s, layer, 0, s->pool->layout->layers[layer].n_kv_heads, n_keep);
}

/* The same for KV heads [h0, h1) only, in slots (n_keep 0: the state is emptied). */
void kvx_kvp_heads_state_truncate(struct kvx_kv_seq *s, int32_t layer, int32_t h0, int32_t h1,
                                 int64_t n_keep)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    const struct kvx_layer_cache *c = &l->layers[layer];
    int64_t pg = n_keep > 0 ? (n_keep - 1) / l->page_tokens : 0;
    const uint8_t *page = n_keep > 0 && pg < t->n ? t->ptrs[pg] : NULL;
    struct kvx_kv_fmt kf = kvx_kv_layer_k_fmt(l, layer), vf = kvx_kv_layer_v_fmt(l, layer);
    size_t kss = kvx_kv_layer_k_state_bytes(l, layer), vss = kvx_kv_layer_v_state_bytes(l, layer);
    int64_t slot0 = pg * l->page_tokens;
    for (int32_t h = h0; h < h1; h++) {
        if (kss && p->k_ops[layer]->k_truncate)
            p->k_ops[layer]->k_truncate(page ? page + kvx_kv_layer_k_offset(l, layer, h) : NULL,
                                        t->state + (size_t)h * kss, &kf, slot0, n_keep);
        if (vss && p->v_ops[layer]->v_truncate)
            p->v_ops[layer]->v_truncate(page ? page + kvx_kv_layer_v_offset(l, layer, h) : NULL,
                                        t->state + (size_t)c->n_kv_heads * kss + (size_t)h * vss,
                                        &vf, slot0, n_keep);
    }
}

void kvx_kv_seq_truncate(struct kvx_kv_seq *s, int64_t n_keep)
{
    if (n_keep < 0)
        n_keep = 0;
    if (n_keep >= s->reserved)
        return;
    if (n_keep > 0 && n_keep < s->len && n_keep < kvx_kv_seq_min_truncate(s))
        n_keep = 0; /* a window layer lost keys position n_keep would see, or compaction */
    struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    for (int32_t i = 0; i < l->n_layer; i++) {
        struct kvx_kv_table *t = &s->tables[i];
        if (n_keep == 0)
            t->shift = 0;
        int64_t end = kvx_kvp_pages_for(l, i, n_keep - t->shift);
        for (int64_t k = end; k < t->n; k++) {
            if (t->ids[k] >= 0)
                kvx_kv_page_unref(p, t->ids[k]);
            t->ids[k] = -1;
            t->ptrs[k] = NULL;
        }
        if (t->n > end)
            t->n = end;
        if (n_keep == 0)
            t->first = 0;
        if (t->state_id >= 0 && n_keep == 0) {
            kvx_kv_page_unref(p, t->state_id);
            t->state_id = -1;
            t->state = NULL;
        } else if (t->state_id >= 0) {
            kvx_kvp_state_truncate(s, i, n_keep - t->shift);
        }
    }
    s->reserved = n_keep;
    if (s->len > n_keep)
        s->len = n_keep;
    if (n_keep == 0) {
        s->floor_len = 0;
        s->compact_len = 0;
        s->unshareable = false; /* nothing evicted is left */
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reserve: plan, then commit */

enum kvx_status kvx_kvp_table_grow(struct kvx_kv_table *t, int64_t n)
{
    if (n <= t->cap)
        return KVX_OK;
    int64_t cap = t->cap ? t->cap : 8;
    while (cap < n)
        cap *= 2;
    int32_t *ids = realloc(t->ids, (size_t)cap * sizeof *ids);
    if (!ids)
        return KVX_ERR_NOMEM;
    t->ids = ids;
    uint8_t **ptrs = realloc(t->ptrs, (size_t)cap * sizeof *ptrs);
    if (!ptrs)
        return KVX_ERR_NOMEM;
    t->ptrs = ptrs;
    t->cap = cap;
    return KVX_OK;
}

enum kvx_status kvx_kvp_pages_grow(struct kvx_kv_pool *p, int64_t n)
{
    if (n <= p->cap_pages)
        return KVX_OK;
    if (n > INT32_MAX)
        return KVX_ERR_NOMEM;
    int64_t cap = p->cap_pages ? p->cap_pages : 64;
    while (cap < n)
        cap *= 2;
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    struct kvx_kv_page *pages = realloc(p->pages, (size_t)cap * sizeof *pages);
    if (!pages)
        return KVX_ERR_NOMEM;
    p->pages = pages;
    p->cap_pages = (int32_t)cap;
    return KVX_OK;
}

/* Bytes the uncarved budget must supply for the per-class page counts of a plan (plan_need,
 * less the free lists, the pages the plan frees and `extra` more free pages per class when
 * not NULL), and the page descriptors carving adds. */
size_t kvx_kvp_plan_bytes(const struct kvx_kv_pool *p, const int64_t *extra, int64_t *new_descs)
{
    size_t bytes = 0;
    *new_descs = 0;
    for (int32_t c = 0; c < p->n_classes; c++) {
        int64_t short_pages = p->plan_need[c] - p->classes[c].n_free - p->plan_freed[c] -
                              (extra ? extra[c] : 0);
        if (short_pages <= 0)
            continue;
        size_t page_bytes = p->classes[c].page_bytes;
        if ((uint64_t)short_pages > (SIZE_MAX - bytes) / page_bytes)
            return SIZE_MAX; /* saturate: more than any budget */
        bytes += (size_t)short_pages * page_bytes;
        *new_descs += short_pages;
    }
    return bytes;
}

/* Make a plan fit: when the uncarved budget cannot supply *bytes, ask the holders what they
 * could release; if all of it would make the plan fit, release least recently used units until
 * it does (otherwise release nothing).  Returns the bytes still missing, 0 when it fits;
 * *bytes and *new_descs follow the free lists. */
size_t kvx_kvp_plan_fit(struct kvx_kv_pool *p, size_t *bytes, int64_t *new_descs)
{
    const size_t avail = p->budget - p->carved;
    if (*bytes <= avail)
        return 0;
    if (!p->plan_reclaim)
        return *bytes - avail;
    memset(p->plan_reclaim, 0, (size_t)p->n_classes * sizeof *p->plan_reclaim);
    for (int32_t i = 0; i < p->n_holders; i++)
        if (p->holders[i].reclaimable)
            p->holders[i].reclaimable(p->holders[i].ctx, p->plan_reclaim);
    int64_t descs = 0;
    size_t best = kvx_kvp_plan_bytes(p, p->plan_reclaim, &descs);
    if (best > avail)
        return best - avail;
    bool released = true;
    while (*bytes > avail && released) {
        released = false;
        for (int32_t i = 0; i < p->n_holders && !released; i++)
            released = p->holders[i].reclaim_one && p->holders[i].reclaim_one(p->holders[i].ctx);
        *bytes = kvx_kvp_plan_bytes(p, NULL, new_descs);
    }
    return *bytes > avail ? *bytes - avail : 0;
}

/* Shared pages among entries k0.. of `layer` (those writes from position k0*page_tokens on
 * touch): each needs a private copy before the sequence writes. */
int64_t kvx_kvp_cow_count(const struct kvx_kv_seq *s, int32_t layer, int64_t k0)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_table *t = &s->tables[layer];
    int64_t n = 0;
    for (int64_t k = k0 > t->first ? k0 : t->first; k < t->n; k++)
        n += t->ids[k] >= 0 && p->pages[t->ids[k]].refs > 1;
    return n;
}

/* Replace those pages by private copies (the plan has made room for them). */
void kvx_kvp_cow_commit(struct kvx_kv_seq *s, int32_t layer, int64_t k0)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    for (int64_t k = k0 > t->first ? k0 : t->first; k < t->n; k++) {
        int32_t old = t->ids[k];
        if (old < 0 || p->pages[old].refs <= 1)
            continue;
        int32_t id = kvx_kvp_page_alloc(p, p->pages[old].cls);
        uint8_t *copy = p->base + p->pages[id].offset;
        memcpy(copy, t->ptrs[k], p->classes[p->pages[id].cls].page_bytes);
        kvx_kv_page_unref(p, old);
        t->ids[k] = id;
        t->ptrs[k] = copy;
    }
}

/* Table entries `layer` needs to hold positions [0, target): its slots are shifted. */
int64_t kvx_kvp_table_end(const struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    return kvx_kvp_pages_for(s->pool->layout, layer, target - s->tables[layer].shift);
}

/* The first table entry a write from position `len` on touches. */
static int64_t write_entry0(const struct kvx_kv_seq *s, int32_t layer, int64_t len)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    int64_t e = kvx_kvp_pooled_kind(l->layers[layer].kind) ? kvx_kv_layer_entries(l, layer, len) : len;
    return e / l->page_tokens;
}

/* A sequence reserved up to `target` holds the codec state page of `layer` (COMPRESSED and
 * HEAVY layers: their window ring and compressor state, from the first token on). */
static bool state_needed(const struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    const struct kvx_kv_pool *p = s->pool;
    if (p->state_class[layer] < 0)
        return false;
    return kvx_kvp_pooled_kind(p->layout->layers[layer].kind) ? target > 0
                                                       : kvx_kvp_table_end(s, layer, target) > 0;
}

/* Count, per class, the pages reserving positions [0, target) needs and the pages the window
 * drops free (those only this sequence references).  Returns the bytes the budget must supply
 * and the descriptors carving will add. */
static size_t reserve_plan(const struct kvx_kv_seq *s, int64_t target, int64_t *new_descs)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    memset(p->plan_need, 0, (size_t)p->n_classes * sizeof *p->plan_need);
    memset(p->plan_freed, 0, (size_t)p->n_classes * sizeof *p->plan_freed);
    for (int32_t i = 0; i < l->n_layer; i++) {
        int32_t c = p->layer_class[i];
        if (c < 0)
            continue;
        const struct kvx_kv_table *t = &s->tables[i];
        const int64_t end = kvx_kvp_table_end(s, i, target);
        int64_t first = kvx_kvp_table_first_needed(s, i, s->len);
        for (int64_t k = t->first; k < first && k < t->n; k++)
            if (t->ids[k] >= 0 && p->pages[t->ids[k]].refs == 1)
                p->plan_freed[c]++;
        int64_t lo = t->n > first ? t->n : first;
        if (end > lo)
            p->plan_need[c] += end - lo;
        p->plan_need[c] += kvx_kvp_cow_count(s, i, write_entry0(s, i, s->len));
        if (state_needed(s, i, target) && t->state_id < 0)
            p->plan_need[p->state_class[i]]++;
    }
    return kvx_kvp_plan_bytes(p, NULL, new_descs);
}

/* Commit for one layer: drop window pages below the first needed one, add pages up to end. */
static void reserve_commit_table(struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    const int64_t end = kvx_kvp_table_end(s, layer, target);
    int64_t first = kvx_kvp_table_first_needed(s, layer, s->len);
    for (int64_t k = t->first; k < first && k < t->n; k++) {
        if (t->ids[k] >= 0)
            kvx_kv_page_unref(p, t->ids[k]);
        t->ids[k] = -1;
        t->ptrs[k] = NULL;
    }
    if (first > t->first)
        t->first = first;
    for (int64_t k = t->n; k < end; k++) {
        if (k < t->first) {
            t->ids[k] = -1;
            t->ptrs[k] = NULL;
            continue;
        }
        int32_t id = kvx_kvp_page_alloc(p, p->layer_class[layer]);
        t->ids[k] = id;
        t->ptrs[k] = p->base + p->pages[id].offset;
    }
    if (end > t->n)
        t->n = end;
    kvx_kvp_cow_commit(s, layer, write_entry0(s, layer, s->len));
    if (state_needed(s, layer, target) && t->state_id < 0) {
        int32_t id = kvx_kvp_page_alloc(p, p->state_class[layer]);
        t->state_id = id;
        t->state = p->base + p->pages[id].offset;
        memset(t->state, 0, p->classes[p->state_class[layer]].page_bytes); /* empty state */
    }
}

enum kvx_status kvx_kv_seq_reserve(struct kvx_kv_seq *s, int64_t n_tokens, struct kvx_err *err)
{
    struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    if (n_tokens < 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv reserve: %lld tokens", (long long)n_tokens);
    if (n_tokens / l->page_tokens >= INT32_MAX) /* page ids are int32: no budget holds this */
        return kvx_err_set(err, KVX_ERR_KV_FULL, "KV budget exhausted: %lld tokens is more than "
                           "any budget holds (budget %zu, in use %zu)", (long long)n_tokens,
                           p->budget, p->bytes_used);
    int64_t target = n_tokens > s->reserved ? n_tokens : s->reserved;
    int64_t new_descs = 0;
    size_t bytes = reserve_plan(s, target, &new_descs);
    size_t missing = kvx_kvp_plan_fit(p, &bytes, &new_descs);
    if (missing)
        return kvx_err_set(err, KVX_ERR_KV_FULL,
                           "KV budget exhausted: need %zu more bytes for %lld tokens (budget %zu, "
                           "in use %zu)", missing,
                           (long long)(target - s->reserved), p->budget, p->bytes_used);
    if (kvx_kvp_pages_grow(p, (int64_t)p->n_pages + new_descs) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv reserve: no memory for %lld page descriptors",
                           (long long)p->n_pages + (long long)new_descs);
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0 && kvx_kvp_table_grow(&s->tables[i], kvx_kvp_table_end(s, i, target)) != KVX_OK)
            return kvx_err_set(err, KVX_ERR_NOMEM, "kv reserve: no memory for a page table of %lld entries",
                               (long long)kvx_kvp_table_end(s, i, target));
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0)
            reserve_commit_table(s, i, target);
    s->reserved = target;
    s->floor_len = s->len;
    return KVX_OK;
}

