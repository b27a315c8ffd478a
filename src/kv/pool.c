/* kv/pool: pages under a byte budget, page tables, reference counts and the invariant check.
 *
 * Owns the budget's address space (one NORESERVE mapping), the page descriptors (offset, size
 * class, refcount, free-list link), the per-class free lists and every live sequence's page
 * tables.  Byte counts come from kv/layout; what is inside a page is kv/codec's business.
 * Two-phase changes: kvx_kv_seq_reserve plans (counts pages per class, grows bookkeeping
 * arrays) before it commits, so KV_FULL and NOMEM leave everything unchanged.
 * Sharing (fork, attach of cached prefixes) only adds references; the copy-on-write of a
 * shared page is part of the plan of the reserve before the first write into it. */
#include "kv/pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/err.h"

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

static bool page_valid(const struct kvx_kv_pool *p, int32_t page)
{
    return page >= 0 && page < p->n_pages;
}

uint8_t *kvx_kv_page_data(const struct kvx_kv_pool *p, int32_t page)
{
    return page_valid(p, page) ? p->base + p->pages[page].offset : NULL;
}

int32_t kvx_kv_page_refcount(const struct kvx_kv_pool *p, int32_t page)
{
    return page_valid(p, page) ? p->pages[page].refs : 0;
}

void kvx_kv_page_ref(struct kvx_kv_pool *p, int32_t page)
{
    if (page_valid(p, page) && p->pages[page].refs > 0)
        p->pages[page].refs++;
}

void kvx_kv_page_unref(struct kvx_kv_pool *p, int32_t page)
{
    if (!page_valid(p, page) || p->pages[page].refs <= 0)
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
static int32_t page_alloc(struct kvx_kv_pool *p, int32_t cls)
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
static int64_t table_first_needed(const struct kvx_kv_seq *s, int32_t layer, int64_t len)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    return kvx_kv_layer_first_pos(l, layer, len) / l->page_tokens;
}

static bool pooled_kind(enum kvx_kv_kind k)
{
    return k == KVX_KV_KIND_COMPRESSED || k == KVX_KV_KIND_HEAVY;
}

/* Table entries (pages) `layer` needs for `slots` slots: one entry per slot, or per `ratio`
 * tokens for COMPRESSED / HEAVY layers (kvx_kv_layer_entries). */
static int64_t pages_for(const struct kvx_kv_layout *l, int32_t layer, int64_t slots)
{
    return (kvx_kv_layer_entries(l, layer, slots) + l->page_tokens - 1) / l->page_tokens;
}

int64_t kvx_kv_seq_min_truncate(const struct kvx_kv_seq *s)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    int64_t min_keep = 1;
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_kv_table *t = &s->tables[i];
        if (pooled_kind(l->layers[i].kind) && s->len > min_keep)
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

static void heads_state_truncate(struct kvx_kv_seq *s, int32_t layer, int32_t h0, int32_t h1,
                                 int64_t n_keep);

/* Tell the codecs of `layer` that the sequence now ends at n_keep > 0 slots (their state may
 * hold tokens past it, or miss tokens it must now hold). */
static void state_truncate(struct kvx_kv_seq *s, int32_t layer, int64_t n_keep)
{
    heads_state_truncate(s, layer, 0, s->pool->layout->layers[layer].n_kv_heads, n_keep);
}

/* The same for KV heads [h0, h1) only, in slots (n_keep 0: the state is emptied). */
static void heads_state_truncate(struct kvx_kv_seq *s, int32_t layer, int32_t h0, int32_t h1,
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
        int64_t end = pages_for(l, i, n_keep - t->shift);
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
            state_truncate(s, i, n_keep - t->shift);
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

static enum kvx_status table_grow(struct kvx_kv_table *t, int64_t n)
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

static enum kvx_status pages_grow(struct kvx_kv_pool *p, int64_t n)
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
static size_t plan_bytes(const struct kvx_kv_pool *p, const int64_t *extra, int64_t *new_descs)
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
static size_t plan_fit(struct kvx_kv_pool *p, size_t *bytes, int64_t *new_descs)
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
    size_t best = plan_bytes(p, p->plan_reclaim, &descs);
    if (best > avail)
        return best - avail;
    bool released = true;
    while (*bytes > avail && released) {
        released = false;
        for (int32_t i = 0; i < p->n_holders && !released; i++)
            released = p->holders[i].reclaim_one && p->holders[i].reclaim_one(p->holders[i].ctx);
        *bytes = plan_bytes(p, NULL, new_descs);
    }
    return *bytes > avail ? *bytes - avail : 0;
}

/* Shared pages among entries k0.. of `layer` (those writes from position k0*page_tokens on
 * touch): each needs a private copy before the sequence writes. */
static int64_t cow_count(const struct kvx_kv_seq *s, int32_t layer, int64_t k0)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_table *t = &s->tables[layer];
    int64_t n = 0;
    for (int64_t k = k0 > t->first ? k0 : t->first; k < t->n; k++)
        n += t->ids[k] >= 0 && p->pages[t->ids[k]].refs > 1;
    return n;
}

/* Replace those pages by private copies (the plan has made room for them). */
static void cow_commit(struct kvx_kv_seq *s, int32_t layer, int64_t k0)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    for (int64_t k = k0 > t->first ? k0 : t->first; k < t->n; k++) {
        int32_t old = t->ids[k];
        if (old < 0 || p->pages[old].refs <= 1)
            continue;
        int32_t id = page_alloc(p, p->pages[old].cls);
        uint8_t *copy = p->base + p->pages[id].offset;
        memcpy(copy, t->ptrs[k], p->classes[p->pages[id].cls].page_bytes);
        kvx_kv_page_unref(p, old);
        t->ids[k] = id;
        t->ptrs[k] = copy;
    }
}

/* Table entries `layer` needs to hold positions [0, target): its slots are shifted. */
static int64_t table_end(const struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    return pages_for(s->pool->layout, layer, target - s->tables[layer].shift);
}

/* The first table entry a write from position `len` on touches. */
static int64_t write_entry0(const struct kvx_kv_seq *s, int32_t layer, int64_t len)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    int64_t e = pooled_kind(l->layers[layer].kind) ? kvx_kv_layer_entries(l, layer, len) : len;
    return e / l->page_tokens;
}

/* A sequence reserved up to `target` holds the codec state page of `layer` (COMPRESSED and
 * HEAVY layers: their window ring and compressor state, from the first token on). */
static bool state_needed(const struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    const struct kvx_kv_pool *p = s->pool;
    if (p->state_class[layer] < 0)
        return false;
    return pooled_kind(p->layout->layers[layer].kind) ? target > 0
                                                       : table_end(s, layer, target) > 0;
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
        const int64_t end = table_end(s, i, target);
        int64_t first = table_first_needed(s, i, s->len);
        for (int64_t k = t->first; k < first && k < t->n; k++)
            if (t->ids[k] >= 0 && p->pages[t->ids[k]].refs == 1)
                p->plan_freed[c]++;
        int64_t lo = t->n > first ? t->n : first;
        if (end > lo)
            p->plan_need[c] += end - lo;
        p->plan_need[c] += cow_count(s, i, write_entry0(s, i, s->len));
        if (state_needed(s, i, target) && t->state_id < 0)
            p->plan_need[p->state_class[i]]++;
    }
    return plan_bytes(p, NULL, new_descs);
}

/* Commit for one layer: drop window pages below the first needed one, add pages up to end. */
static void reserve_commit_table(struct kvx_kv_seq *s, int32_t layer, int64_t target)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    const int64_t end = table_end(s, layer, target);
    int64_t first = table_first_needed(s, layer, s->len);
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
        int32_t id = page_alloc(p, p->layer_class[layer]);
        t->ids[k] = id;
        t->ptrs[k] = p->base + p->pages[id].offset;
    }
    if (end > t->n)
        t->n = end;
    cow_commit(s, layer, write_entry0(s, layer, s->len));
    if (state_needed(s, layer, target) && t->state_id < 0) {
        int32_t id = page_alloc(p, p->state_class[layer]);
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
    size_t missing = plan_fit(p, &bytes, &new_descs);
    if (missing)
        return kvx_err_set(err, KVX_ERR_KV_FULL,
                           "KV budget exhausted: need %zu more bytes for %lld tokens (budget %zu, "
                           "in use %zu)", missing,
                           (long long)(target - s->reserved), p->budget, p->bytes_used);
    if (pages_grow(p, (int64_t)p->n_pages + new_descs) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv reserve: no memory for %lld page descriptors",
                           (long long)p->n_pages + (long long)new_descs);
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0 && table_grow(&s->tables[i], table_end(s, i, target)) != KVX_OK)
            return kvx_err_set(err, KVX_ERR_NOMEM, "kv reserve: no memory for a page table of %lld entries",
                               (long long)table_end(s, i, target));
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0)
            reserve_commit_table(s, i, target);
    s->reserved = target;
    s->floor_len = s->len;
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Writing and reading */

/* Page pg of the sequence's table of `layer` receives its first token: codecs with a per-page
 * header derive it for head h from the page before (kv/codec.h, k_begin_page). */
static void begin_page(const struct kvx_kv_seq *s, int32_t layer, int32_t h, int64_t pg)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    const struct kvx_kv_codec_ops *ko = p->k_ops[layer], *vo = p->v_ops[layer];
    if (pg <= 0 || (!ko->k_begin_page && !vo->v_begin_page))
        return;
    const int64_t slot0 = pg * l->page_tokens;
    const uint8_t *prev = t->ptrs[pg - 1];
    const size_t koff = kvx_kv_layer_k_offset(l, layer, h), voff = kvx_kv_layer_v_offset(l, layer, h);
    if (ko->k_begin_page) {
        const struct kvx_kv_fmt kf = kvx_kv_layer_k_fmt(l, layer);
        ko->k_begin_page(t->ptrs[pg] + koff, prev ? prev + koff : NULL, &kf, slot0);
    }
    const struct kvx_layer_cache *c = &l->layers[layer];
    if (vo->v_begin_page && c->kind != KVX_KV_KIND_LATENT && c->v_dim > 0) {
        const struct kvx_kv_fmt vf = kvx_kv_layer_v_fmt(l, layer);
        vo->v_begin_page(t->ptrs[pg] + voff, prev ? prev + voff : NULL, &vf, slot0);
    }
}

void kvx_kv_seq_write(struct kvx_kv_seq *s, int32_t layer, int64_t pos, const float *k,
                      const float *v)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    if (layer < 0 || layer >= l->n_layer || p->layer_class[layer] < 0 || pos < 0 ||
        pos >= s->reserved)
        return;
    const struct kvx_kv_table *t = &s->tables[layer];
    if (pos < s->compact_len)
        return; /* before the last compaction: no longer addressable */
    const int64_t slot = pos - t->shift;
    int64_t pg = slot / l->page_tokens;
    if (pg >= t->n || !t->ptrs[pg])
        return;
    if (p->pages[t->ids[pg]].refs > 1)
        return; /* shared: reserve makes it private first */
    const struct kvx_layer_cache *c = &l->layers[layer];
    int32_t tok = (int32_t)(slot % l->page_tokens);
    int64_t slot0 = slot - tok;
    size_t ks = kvx_kv_layer_k_head_bytes(l, layer), vs = kvx_kv_layer_v_head_bytes(l, layer);
    size_t kss = kvx_kv_layer_k_state_bytes(l, layer), vss = kvx_kv_layer_v_state_bytes(l, layer);
    uint8_t *k_base = t->ptrs[pg] + kvx_kv_layer_k_offset(l, layer, 0);
    uint8_t *v_base = t->ptrs[pg] + kvx_kv_layer_v_offset(l, layer, 0);
    uint8_t *k_state = t->state, *v_state = t->state ? t->state + (size_t)c->n_kv_heads * kss : NULL;
    struct kvx_kv_fmt kf = kvx_kv_layer_k_fmt(l, layer), vf = kvx_kv_layer_v_fmt(l, layer);
    if (tok == 0)
        for (int32_t h = 0; h < c->n_kv_heads; h++)
            begin_page(s, layer, h, pg);
    for (int32_t h = 0; h < c->n_kv_heads; h++) {
        p->k_ops[layer]->k_put(k_base + (size_t)h * ks, kss ? k_state + (size_t)h * kss : NULL, &kf,
                               slot0, tok, k + (size_t)h * (size_t)c->k_dim);
        if (c->kind != KVX_KV_KIND_LATENT && c->v_dim > 0)   /* latent: V is K; v_dim 0: none */
            p->v_ops[layer]->v_put(v_base + (size_t)h * vs, vss ? v_state + (size_t)h * vss : NULL, &vf,
                               slot0, tok, v + (size_t)h * (size_t)c->v_dim);
    }
}

struct kvx_kv_pool *kvx_kv_seq_pool(const struct kvx_kv_seq *s) { return s->pool; }

uint8_t *kvx_kv_seq_state(struct kvx_kv_seq *s, int32_t layer)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer)
        return NULL;
    return s->tables[layer].state;
}

void kvx_kv_seq_view(const struct kvx_kv_seq *s, int32_t layer, struct kvx_kv_view *out)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    memset(out, 0, sizeof *out);
    out->isa = p->isa;
    out->page_tokens = l->page_tokens;
    if (layer < 0 || layer >= l->n_layer)
        return;
    int32_t src = kvx_kv_layer_source(l, layer);
    if (p->layer_class[src] < 0)
        return;
    const struct kvx_layer_cache *c = &l->layers[src];
    const struct kvx_kv_table *t = &s->tables[src];
    out->pages = t->ptrs;
    out->n_pages = t->n;
    out->n_kv_heads = c->n_kv_heads;
    out->k_dim = c->k_dim;
    out->v_dim = c->v_dim;
    out->k_off = kvx_kv_layer_k_offset(l, src, 0);
    out->k_stride = kvx_kv_layer_k_head_bytes(l, src);
    out->v_off = kvx_kv_layer_v_offset(l, src, 0);
    out->v_stride = kvx_kv_layer_v_head_bytes(l, src);
    out->k_ops = p->k_ops[layer];
    out->v_ops = p->v_ops[layer];
    out->k_fmt = kvx_kv_layer_k_fmt(l, src);
    out->v_fmt = kvx_kv_layer_v_fmt(l, src);
    size_t kss = kvx_kv_layer_k_state_bytes(l, src), vss = kvx_kv_layer_v_state_bytes(l, src);
    if (t->state && kss) {
        out->k_state = t->state;
        out->k_state_stride = kss;
    }
    if (t->state && vss) {
        out->v_state = t->state + (size_t)c->n_kv_heads * kss;
        out->v_state_stride = vss;
    }
    if (c->kind == KVX_KV_KIND_LATENT) {
        out->v_is_k = true;
        out->v_dim = c->k_dim;
        out->v_off = out->k_off;
        out->v_stride = out->k_stride;
        out->v_ops = out->k_ops;
        out->v_fmt = out->k_fmt;
        out->v_state = out->k_state;
        out->v_state_stride = out->k_state_stride;
    }
}

bool kvx_kv_view_get_k(const struct kvx_kv_view *v, int32_t h, int64_t slot, float *out)
{
    int64_t pg = v->page_tokens > 0 ? slot / v->page_tokens : 0;
    if (h < 0 || h >= v->n_kv_heads || slot < 0 || pg >= v->n_pages || !v->pages[pg])
        return false;
    const struct kvx_kv_block b = {v->pages[pg] + v->k_off + (size_t)h * v->k_stride,
                                   v->k_state ? v->k_state + (size_t)h * v->k_state_stride : NULL,
                                   pg * v->page_tokens};
    v->k_ops->k_get(&b, &v->k_fmt, (int32_t)(slot - b.slot0), out);
    return true;
}

bool kvx_kv_view_get_v(const struct kvx_kv_view *v, int32_t h, int64_t slot, float *out)
{
    if (v->v_is_k)
        return kvx_kv_view_get_k(v, h, slot, out);
    int64_t pg = v->page_tokens > 0 ? slot / v->page_tokens : 0;
    if (h < 0 || h >= v->n_kv_heads || slot < 0 || pg >= v->n_pages || !v->pages[pg])
        return false;
    const struct kvx_kv_block b = {v->pages[pg] + v->v_off + (size_t)h * v->v_stride,
                                   v->v_state ? v->v_state + (size_t)h * v->v_state_stride : NULL,
                                   pg * v->page_tokens};
    v->v_ops->v_get(&b, &v->v_fmt, (int32_t)(slot - b.slot0), out);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Slots and compaction (eviction) */

int64_t kvx_kv_seq_slots(const struct kvx_kv_seq *s, int32_t layer)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer)
        return 0;
    int32_t src = kvx_kv_layer_source(l, layer);
    return s->pool->layer_class[src] < 0 ? 0 : s->len - s->tables[src].shift;
}

int64_t kvx_kv_seq_slot(const struct kvx_kv_seq *s, int32_t layer, int64_t pos)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer)
        return pos;
    return pos - s->tables[kvx_kv_layer_source(l, layer)].shift;
}

bool kvx_kv_seq_compacted(const struct kvx_kv_seq *s) { return s->compact_len > 0; }

int64_t kvx_kv_seq_first_slot(const struct kvx_kv_seq *s, int32_t layer, int64_t pos)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer)
        return 0;
    const int64_t first = kvx_kv_layer_first_pos(l, layer, pos);
    const int64_t slot = first - s->tables[kvx_kv_layer_source(l, layer)].shift;
    return first > 0 && slot > 0 ? slot : 0;
}

/* Check a keep list: n_keep slots per head, strictly increasing, below `slots`.  Returns the
 * first slot any head moves (n_keep when none moves). */
static enum kvx_status compact_check(const struct kvx_kv_seq *s, int32_t layer,
                                     const int64_t *keep, int64_t n_keep, int64_t slots,
                                     int64_t *first_moved, struct kvx_err *err)
{
    const struct kvx_kv_layout *l = s->pool->layout;
    if (layer < 0 || layer >= l->n_layer || l->layers[layer].kind != KVX_KV_KIND_FULL)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv compact: layer %d is not a FULL layer",
                           (int)layer);
    if (n_keep < 0 || n_keep > slots || (n_keep > 0 && !keep))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv compact: keep %lld of %lld slots",
                           (long long)n_keep, (long long)slots);
    int64_t moved = n_keep;
    for (int32_t h = 0; h < l->layers[layer].n_kv_heads; h++) {
        const int64_t *k = keep + (size_t)h * (size_t)n_keep;
        for (int64_t j = 0; j < n_keep; j++) {
            if (k[j] < j || k[j] >= slots || (j > 0 && k[j] <= k[j - 1]))
                return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv compact: layer %d head %d: "
                                   "kept slot %lld at %lld is out of order or range (%lld slots)",
                                   (int)layer, (int)h, (long long)k[j], (long long)j,
                                   (long long)slots);
            if (k[j] != j && j < moved)
                moved = j;
        }
    }
    *first_moved = moved;
    return KVX_OK;
}

/* Move head h's kept slots [d0, n_keep) of one layer down: decode every one first (a put may
 * touch what a later get reads), cut the head's codec state at d0, then put them in order. */
static void compact_head(struct kvx_kv_seq *s, int32_t layer, int32_t h, const int64_t *keep,
                         int64_t d0, int64_t n_keep, float *buf)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    const int64_t pt = l->page_tokens;
    const int32_t kd = l->layers[layer].k_dim, vd = l->layers[layer].v_dim;
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, layer, &v);
    float *kb = buf, *vb = d0 < n_keep ? buf + (size_t)(n_keep - d0) * (size_t)kd : buf;
    for (int64_t j = d0; j < n_keep; j++) {
        kvx_kv_view_get_k(&v, h, keep[j], kb + (size_t)(j - d0) * (size_t)kd);
        kvx_kv_view_get_v(&v, h, keep[j], vb + (size_t)(j - d0) * (size_t)vd);
    }
    heads_state_truncate(s, layer, h, h + 1, d0);
    const size_t ko = kvx_kv_layer_k_offset(l, layer, h), vo = kvx_kv_layer_v_offset(l, layer, h);
    size_t kss = kvx_kv_layer_k_state_bytes(l, layer), vss = kvx_kv_layer_v_state_bytes(l, layer);
    uint8_t *k_state = kss ? t->state + (size_t)h * kss : NULL;
    uint8_t *v_state = vss ? t->state + (size_t)v.n_kv_heads * kss + (size_t)h * vss : NULL;
    for (int64_t j = d0; j < n_keep; j++) {
        uint8_t *page = t->ptrs[j / pt];
        const int32_t tok = (int32_t)(j % pt);
        if (tok == 0)
            begin_page(s, layer, h, j / pt);
        p->k_ops[layer]->k_put(page + ko, k_state, &v.k_fmt, j - tok, tok,
                               kb + (size_t)(j - d0) * (size_t)kd);
        p->v_ops[layer]->v_put(page + vo, v_state, &v.v_fmt, j - tok, tok,
                               vb + (size_t)(j - d0) * (size_t)vd);
    }
}

/* The same with the codecs' raw copies (stateless codecs that store tokens independently):
 * in place, in increasing order, since keep[j] >= j never names a slot an earlier copy
 * wrote; consecutive kept slots go as one run per page of source and destination. */
static void compact_head_copy(struct kvx_kv_seq *s, int32_t layer, int32_t h, const int64_t *keep,
                              int64_t d0, int64_t n_keep)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    const int64_t pt = l->page_tokens;
    const size_t ko = kvx_kv_layer_k_offset(l, layer, h), vo = kvx_kv_layer_v_offset(l, layer, h);
    const struct kvx_kv_fmt kf = kvx_kv_layer_k_fmt(l, layer), vf = kvx_kv_layer_v_fmt(l, layer);
    for (int64_t j = d0; j < n_keep;) {
        const int64_t room = pt - (j % pt < keep[j] % pt ? keep[j] % pt : j % pt);
        int64_t n = 1;
        while (n < room && j + n < n_keep && keep[j + n] == keep[j] + n)
            n++;
        uint8_t *dst = t->ptrs[j / pt], *src = t->ptrs[keep[j] / pt];
        const int32_t to = (int32_t)(j % pt), from = (int32_t)(keep[j] % pt);
        p->k_ops[layer]->k_copy(dst + ko, to, src + ko, from, (int32_t)n, &kf);
        p->v_ops[layer]->v_copy(dst + vo, to, src + vo, from, (int32_t)n, &vf);
        j += n;
    }
}

enum kvx_status kvx_kv_seq_compact(struct kvx_kv_seq *s, int32_t layer, const int64_t *keep,
                                   int64_t n_keep, struct kvx_err *err)
{
    struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const int64_t slots = kvx_kv_seq_slots(s, layer);
    int64_t d0 = 0;
    enum kvx_status st = compact_check(s, layer, keep, n_keep, slots, &d0, err);
    if (st != KVX_OK || n_keep == slots)
        return st;
    struct kvx_kv_table *t = &s->tables[layer];
    const int64_t pt = l->page_tokens;
    for (int64_t k = d0 / pt; k < t->n; k++)
        if (p->pages[t->ids[k]].refs > 1)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv compact: layer %d page %lld is "
                               "shared (copy-on-write is not implemented for compaction)",
                               (int)layer, (long long)k);
    if (t->state_id >= 0 && p->pages[t->state_id].refs > 1)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv compact: layer %d codec state is shared",
                           (int)layer);
    const struct kvx_layer_cache *c = &l->layers[layer];
    const bool raw = p->k_ops[layer]->k_copy && p->v_ops[layer]->v_copy && !t->state &&
                     !p->compact_reencode;
    const size_t need = raw ? 0 : (size_t)(n_keep - d0) * (size_t)(c->k_dim + c->v_dim);
    if (need > p->compact_cap) {
        float *nb = realloc(p->compact_buf, need * sizeof *nb);
        if (!nb)
            return kvx_err_set(err, KVX_ERR_NOMEM, "kv compact: no memory for %zu floats", need);
        p->compact_buf = nb;
        p->compact_cap = need;
    }
    for (int32_t h = 0; h < c->n_kv_heads; h++) {
        const int64_t *kh = keep + (size_t)h * (size_t)n_keep;
        int64_t hd0 = d0;
        while (hd0 < n_keep && kh[hd0] == hd0)
            hd0++;
        if (raw)
            compact_head_copy(s, layer, h, kh, hd0, n_keep);
        else
            compact_head(s, layer, h, kh, hd0, n_keep, p->compact_buf);
    }
    t->shift += slots - n_keep;
    s->compact_len = s->len;
    const int64_t end = table_end(s, layer, s->reserved);
    for (int64_t k = end; k < t->n; k++) {
        kvx_kv_page_unref(p, t->ids[k]);
        t->ids[k] = -1;
        t->ptrs[k] = NULL;
    }
    if (t->n > end)
        t->n = end;
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The invariant check */

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            kvx_err_set(err, KVX_ERR_FORMAT, "kv pool check: " __VA_ARGS__);                   \
            return KVX_ERR_FORMAT;                                                             \
        }                                                                                      \
    } while (0)

/* Page descriptors tile [0, carved) exactly, aligned, without overlap. */
struct extent {
    size_t offset, bytes;
};

static int cmp_extent(const void *a, const void *b)
{
    size_t x = ((const struct extent *)a)->offset, y = ((const struct extent *)b)->offset;
    return x < y ? -1 : x > y;
}

static enum kvx_status check_carving(const struct kvx_kv_pool *p, struct kvx_err *err)
{
    CHECK(p->carved <= p->budget, "carved %zu > budget %zu", p->carved, p->budget);
    struct extent *ext = malloc(((size_t)p->n_pages + 1) * sizeof *ext);
    if (!ext)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool check: no memory");
    for (int32_t i = 0; i < p->n_pages; i++) {
        int32_t c = p->pages[i].cls;
        ext[i].offset = p->pages[i].offset;
        ext[i].bytes = c >= 0 && c < p->n_classes ? p->classes[c].page_bytes : 0;
    }
    qsort(ext, (size_t)p->n_pages, sizeof *ext, cmp_extent);
    size_t expect = 0;
    int32_t bad = -1;
    for (int32_t i = 0; i < p->n_pages && bad < 0; i++) {
        if (ext[i].offset != expect || ext[i].offset % KVX_KV_PAGE_ALIGN != 0 || !ext[i].bytes)
            bad = i;
        else
            expect += ext[i].bytes;
    }
    size_t bad_off = bad >= 0 ? ext[bad].offset : 0;
    free(ext);
    CHECK(bad < 0, "a page starts at offset %zu, expected %zu", bad_off, expect);
    CHECK(expect == p->carved, "pages cover %zu bytes, carved %zu", expect, p->carved);
    return KVX_OK;
}

static enum kvx_status check_free_lists(const struct kvx_kv_pool *p, uint8_t *seen,
                                        struct kvx_err *err)
{
    for (int32_t c = 0; c < p->n_classes; c++) {
        int64_t n = 0;
        for (int32_t id = p->classes[c].free_head; id >= 0; id = p->pages[id].next_free) {
            CHECK(id < p->n_pages, "class %d free list holds page %d of %d", (int)c, (int)id,
                  (int)p->n_pages);
            CHECK(!seen[id], "page %d twice on free lists", (int)id);
            seen[id] = 1;
            CHECK(p->pages[id].refs == 0, "free page %d has refcount %d", (int)id,
                  (int)p->pages[id].refs);
            CHECK(p->pages[id].cls == c, "page %d of class %d on class %d's free list", (int)id,
                  (int)p->pages[id].cls, (int)c);
            n++;
        }
        CHECK(n == p->classes[c].n_free, "class %d free list has %lld pages, counted %lld",
              (int)c, (long long)n, (long long)p->classes[c].n_free);
    }
    return KVX_OK;
}

/* One owning layer's table of one sequence; adds its references to refs[]. */
static enum kvx_status check_table(const struct kvx_kv_seq *s, int32_t layer, int32_t *refs,
                                   struct kvx_err *err)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    int64_t pt = l->page_tokens;
    CHECK(t->shift == 0 || (l->layers[layer].kind == KVX_KV_KIND_FULL && t->shift > 0 &&
                            t->shift <= s->compact_len && s->compact_len <= s->len),
          "layer %d: shift %lld (length %lld, compacted at %lld)", (int)layer,
          (long long)t->shift, (long long)s->len, (long long)s->compact_len);
    const int64_t slots = s->reserved - t->shift;
    CHECK(t->n == pages_for(l, layer, slots), "layer %d: %lld table entries for %lld slots",
          (int)layer, (long long)t->n, (long long)slots);
    int64_t first = table_first_needed(s, layer, s->floor_len);
    CHECK(t->first == first,
          "layer %d: first page %lld, expected %lld", (int)layer, (long long)t->first, (long long)first);
    CHECK(t->first * pt <= kvx_kv_layer_first_pos(l, layer, s->len),
          "layer %d: dropped keys still visible at length %lld", (int)layer, (long long)s->len);
    for (int64_t k = 0; k < t->n; k++) {
        int32_t id = t->ids[k];
        if (k < t->first) {
            CHECK(id == -1 && !t->ptrs[k], "layer %d: dropped entry %lld holds page %d", (int)layer,
                  (long long)k, (int)id);
            continue;
        }
        CHECK(id >= 0 && id < p->n_pages, "layer %d: entry %lld holds page %d", (int)layer,
              (long long)k, (int)id);
        CHECK(p->pages[id].cls == p->layer_class[layer], "layer %d: page %d has class %d",
              (int)layer, (int)id, (int)p->pages[id].cls);
        CHECK(t->ptrs[k] == p->base + p->pages[id].offset, "layer %d: entry %lld pointer", (int)layer,
              (long long)k);
        refs[id]++;
    }
    if (p->state_class[layer] >= 0 && s->reserved > 0) {
        CHECK(t->state_id >= 0 && t->state_id < p->n_pages, "layer %d: no codec state page", (int)layer);
        CHECK(p->pages[t->state_id].cls == p->state_class[layer], "layer %d: state page class",
              (int)layer);
        CHECK(t->state == p->base + p->pages[t->state_id].offset, "layer %d: state pointer",
              (int)layer);
        CHECK(p->pages[t->state_id].refs == 1, "layer %d: state page %d shared (refcount %d)",
              (int)layer, (int)t->state_id, (int)p->pages[t->state_id].refs);
        refs[t->state_id]++;
    } else {
        CHECK(t->state_id == -1 && !t->state, "layer %d: state page %d without need", (int)layer,
              (int)t->state_id);
    }
    if (l->layers[layer].kind != KVX_KV_KIND_WINDOW)
        CHECK(t->n == kvx_kv_layer_pages(l, layer, slots), "layer %d: %lld pages, layout says %lld",
              (int)layer, (long long)t->n, (long long)kvx_kv_layer_pages(l, layer, slots));
    return KVX_OK;
}

static enum kvx_status check_seqs(const struct kvx_kv_pool *p, int32_t *refs, struct kvx_err *err)
{
    int64_t n = 0;
    for (const struct kvx_kv_seq *s = p->seqs; s; s = s->next) {
        CHECK(n < p->n_seqs, "more sequences on the list than %lld", (long long)p->n_seqs);
        CHECK(s->pool == p && (s == p->seqs ? !s->prev : s->prev && s->prev->next == s),
              "sequence list links");
        CHECK(s->len >= 0 && s->len <= s->reserved, "sequence length %lld, reserved %lld",
              (long long)s->len, (long long)s->reserved);
        CHECK(s->compact_len >= 0 && s->compact_len <= s->len,
              "sequence compacted at length %lld, length %lld", (long long)s->compact_len,
              (long long)s->len);
        for (int32_t i = 0; i < p->layout->n_layer; i++) {
            if (p->layer_class[i] < 0) {
                CHECK(s->tables[i].n == 0, "layer %d owns nothing but holds pages", (int)i);
                continue;
            }
            enum kvx_status st = check_table(s, i, refs, err);
            if (st != KVX_OK)
                return st;
        }
        n++;
    }
    CHECK(n == p->n_seqs, "%lld sequences listed, %lld counted", (long long)n, (long long)p->n_seqs);
    return KVX_OK;
}

static enum kvx_status check_refs(const struct kvx_kv_pool *p, const int32_t *refs,
                                  const uint8_t *on_free_list, struct kvx_err *err)
{
    size_t used = 0;
    int64_t n_used = 0;
    for (int32_t id = 0; id < p->n_pages; id++) {
        const struct kvx_kv_page *pg = &p->pages[id];
        CHECK(pg->cls >= 0 && pg->cls < p->n_classes, "page %d has class %d", (int)id, (int)pg->cls);
        CHECK(pg->refs == refs[id], "page %d: refcount %d, %d page-table references", (int)id,
              (int)pg->refs, (int)refs[id]);
        CHECK(pg->refs > 0 || on_free_list[id], "page %d unreferenced and not on a free list",
              (int)id);
        if (pg->refs > 0) {
            used += p->classes[pg->cls].page_bytes;
            n_used++;
        }
    }
    CHECK(used == p->bytes_used, "referenced pages hold %zu bytes, accounted %zu", used,
          p->bytes_used);
    CHECK(n_used == p->pages_used, "%lld pages referenced, accounted %lld", (long long)n_used,
          (long long)p->pages_used);
    return KVX_OK;
}

enum kvx_status kvx_kv_pool_check(const struct kvx_kv_pool *p, struct kvx_err *err)
{
    enum kvx_status st = check_carving(p, err);
    if (st != KVX_OK)
        return st;
    int32_t *refs = calloc((size_t)p->n_pages + 1, sizeof *refs);
    uint8_t *seen = calloc((size_t)p->n_pages + 1, 1);
    if (!refs || !seen)
        st = kvx_err_set(err, KVX_ERR_NOMEM, "kv pool check: no memory");
    if (st == KVX_OK)
        st = check_free_lists(p, seen, err);
    if (st == KVX_OK)
        st = check_seqs(p, refs, err);
    for (int32_t i = 0; i < p->n_holders && st == KVX_OK; i++)
        st = p->holders[i].check(p->holders[i].ctx, refs, err);
    if (st == KVX_OK)
        st = check_refs(p, refs, seen, err);
    free(refs);
    free(seen);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Sharing: fork, attach, unshare, holders */

size_t kvx_kv_page_bytes(const struct kvx_kv_pool *p, int32_t page)
{
    return page_valid(p, page) ? p->classes[p->pages[page].cls].page_bytes : 0;
}

int32_t kvx_kv_page_class(const struct kvx_kv_pool *p, int32_t page)
{
    return page_valid(p, page) ? p->pages[page].cls : -1;
}

int32_t kvx_kv_pool_n_classes(const struct kvx_kv_pool *p) { return p->n_classes; }

int32_t kvx_kv_pool_n_owning(const struct kvx_kv_pool *p)
{
    int32_t n = 0;
    for (int32_t i = 0; i < p->layout->n_layer; i++)
        n += p->layer_class[i] >= 0;
    return n;
}

void kvx_kv_seq_set_shareable(struct kvx_kv_seq *s, bool shareable) { s->unshareable = !shareable; }

bool kvx_kv_seq_shareable(const struct kvx_kv_seq *s) { return !s->unshareable; }

static void plan_clear(struct kvx_kv_pool *p)
{
    memset(p->plan_need, 0, (size_t)p->n_classes * sizeof *p->plan_need);
    memset(p->plan_freed, 0, (size_t)p->n_classes * sizeof *p->plan_freed);
}

/* After a plan is counted: make it fit the budget and room for its page descriptors. */
static enum kvx_status plan_admit(struct kvx_kv_pool *p, const char *what, struct kvx_err *err)
{
    int64_t new_descs = 0;
    size_t bytes = plan_bytes(p, NULL, &new_descs);
    size_t missing = plan_fit(p, &bytes, &new_descs);
    if (missing)
        return kvx_err_set(err, KVX_ERR_KV_FULL, "KV budget exhausted: need %zu more bytes to %s "
                           "(budget %zu, in use %zu)", missing, what, p->budget, p->bytes_used);
    if (pages_grow(p, (int64_t)p->n_pages + new_descs) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory for %lld page descriptors",
                           (long long)p->n_pages + (long long)new_descs);
    return KVX_OK;
}

/* A fresh, empty codec state page for `layer` of s (planned). */
static void state_alloc(struct kvx_kv_seq *s, int32_t layer)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    t->state_id = page_alloc(p, p->state_class[layer]);
    t->state = p->base + p->pages[t->state_id].offset;
}

enum kvx_status kvx_kv_seq_fork(struct kvx_kv_seq *src, struct kvx_kv_seq **dst,
                                struct kvx_err *err)
{
    struct kvx_kv_pool *p = src->pool;
    const struct kvx_kv_layout *l = p->layout;
    *dst = NULL;
    struct kvx_kv_seq *d = NULL;
    enum kvx_status st = kvx_kv_seq_create(p, &d, err);
    if (st != KVX_OK)
        return st;
    const int64_t len = src->len;
    plan_clear(p);
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (p->layer_class[i] < 0)
            continue;
        const int64_t end = pages_for(l, i, len);
        if (table_grow(&d->tables[i], end) != KVX_OK) {
            kvx_kv_seq_destroy(d);
            return kvx_err_set(err, KVX_ERR_NOMEM, "kv fork: no memory for a page table of %lld "
                               "entries", (long long)end);
        }
        if (p->state_class[i] >= 0 && len > 0)
            p->plan_need[p->state_class[i]]++;
    }
    char what[96];
    snprintf(what, sizeof what, "fork a sequence of %lld tokens (codec state)", (long long)len);
    if ((st = plan_admit(p, what, err)) != KVX_OK) {
        kvx_kv_seq_destroy(d);
        return st;
    }
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (p->layer_class[i] < 0)
            continue;
        const struct kvx_kv_table *ts = &src->tables[i];
        struct kvx_kv_table *td = &d->tables[i];
        const int64_t end = pages_for(l, i, len);
        for (int64_t k = 0; k < end; k++) {
            td->ids[k] = ts->ids[k];
            td->ptrs[k] = ts->ptrs[k];
            if (ts->ids[k] >= 0)
                kvx_kv_page_ref(p, ts->ids[k]);
        }
        td->n = end;
        td->first = ts->first;
        if (p->state_class[i] >= 0 && len > 0) {
            state_alloc(d, i);
            memcpy(td->state, ts->state, p->classes[p->state_class[i]].page_bytes);
        }
    }
    d->len = d->reserved = len;
    d->floor_len = src->floor_len;
    d->unshareable = src->unshareable;
    *dst = d;
    return KVX_OK;
}

bool kvx_kv_seq_block_pages(const struct kvx_kv_seq *s, int64_t b, int32_t *ids)
{
    const struct kvx_kv_pool *p = s->pool;
    if (b < 0 || b >= (s->len / p->layout->page_tokens))
        return false;
    int32_t j = 0;
    for (int32_t i = 0; i < p->layout->n_layer; i++) {
        if (p->layer_class[i] < 0)
            continue;
        const struct kvx_kv_table *t = &s->tables[i];
        if (b >= t->n || t->ids[b] < 0 || pooled_kind(p->layout->layers[i].kind))
            return false; /* a block of entries does not hold one block of tokens */
        ids[j++] = t->ids[b];
    }
    return true;
}

/* Attach's checks: the layout, the mark, the range and every page id. */
static enum kvx_status attach_validate(const struct kvx_kv_seq *s, int64_t first, int64_t n_blocks,
                                       const int32_t *ids, int64_t n_tokens, struct kvx_err *err)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const int64_t pt = l->page_tokens;
    if (s->unshareable)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv attach: the sequence is marked unshareable");
    for (int32_t i = 0; i < l->n_layer; i++)
        if (l->layers[i].kind == KVX_KV_KIND_WINDOW || pooled_kind(l->layers[i].kind))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv attach: layer %d is a window or compressed layer; "
                               "prefix sharing needs layers that keep every token", (int)i);
    if (kvx_kv_layout_has_model_state(l))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv attach: the layout keeps model state per "
                           "sequence, which attached pages cannot restore");
    if (first < 0 || n_blocks < 1 || n_blocks > INT32_MAX || first > INT32_MAX - n_blocks ||
        first * pt > s->len || n_tokens <= s->len || n_tokens <= (first + n_blocks - 1) * pt ||
        n_tokens > (first + n_blocks) * pt)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv attach: blocks [%lld, %lld) for %lld "
                           "tokens do not extend a sequence of %lld", (long long)first,
                           (long long)(first + n_blocks), (long long)n_tokens, (long long)s->len);
    const int32_t n_own = kvx_kv_pool_n_owning(p);
    for (int64_t b = 0; b < n_blocks; b++) {
        int32_t j = 0;
        for (int32_t i = 0; i < l->n_layer; i++) {
            if (p->layer_class[i] < 0)
                continue;
            int32_t id = ids[b * n_own + j++];
            if (!page_valid(p, id) || p->pages[id].refs <= 0 || p->pages[id].cls != p->layer_class[i])
                return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv attach: page %d is not a live "
                                   "page of layer %d", (int)id, (int)i);
        }
    }
    return KVX_OK;
}

enum kvx_status kvx_kv_seq_attach(struct kvx_kv_seq *s, int64_t first, int64_t n_blocks,
                                  const int32_t *ids, int64_t n_tokens, struct kvx_err *err)
{
    struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    enum kvx_status st = attach_validate(s, first, n_blocks, ids, n_tokens, err);
    if (st != KVX_OK)
        return st;
    const int64_t last = first + n_blocks;
    const int32_t n_own = kvx_kv_pool_n_owning(p);
    plan_clear(p);
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (p->layer_class[i] < 0)
            continue;
        if (table_grow(&s->tables[i], last) != KVX_OK)
            return kvx_err_set(err, KVX_ERR_NOMEM, "kv attach: no memory for a page table of "
                               "%lld entries", (long long)last);
        if (p->state_class[i] >= 0 && s->tables[i].state_id < 0)
            p->plan_need[p->state_class[i]]++;
    }
    /* Take the new references first: pages held only by a holder are then not released to
     * make room for this very request. */
    for (int64_t k = 0; k < n_blocks * n_own; k++)
        kvx_kv_page_ref(p, ids[k]);
    if ((st = plan_admit(p, "attach a cached prefix (codec state)", err)) != KVX_OK) {
        for (int64_t k = 0; k < n_blocks * n_own; k++)
            kvx_kv_page_unref(p, ids[k]);
        return st;
    }
    int32_t j = 0;
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (p->layer_class[i] < 0)
            continue;
        struct kvx_kv_table *t = &s->tables[i];
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t k = first + b;
            int32_t id = ids[b * n_own + j];
            if (k < t->n && t->ids[k] >= 0)
                kvx_kv_page_unref(p, t->ids[k]);
            t->ids[k] = id;
            t->ptrs[k] = p->base + p->pages[id].offset;
        }
        if (last > t->n)
            t->n = last;
        j++;
        if (p->state_class[i] < 0)
            continue;
        if (t->state_id < 0)
            state_alloc(s, i);
        memset(t->state, 0, p->classes[p->state_class[i]].page_bytes);
    }
    if (n_tokens > s->reserved)
        s->reserved = n_tokens;
    s->len = n_tokens;
    s->floor_len = n_tokens;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->state_class[i] >= 0)
            state_truncate(s, i, n_tokens);
    return KVX_OK;
}

enum kvx_status kvx_kv_seq_unshare(struct kvx_kv_seq *s, int64_t pos, struct kvx_err *err)
{
    struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const int64_t k0 = pos > 0 ? pos / l->page_tokens : 0;
    plan_clear(p);
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0)
            p->plan_need[p->layer_class[i]] += cow_count(s, i, k0);
    enum kvx_status st = plan_admit(p, "copy shared pages", err);
    if (st != KVX_OK)
        return st;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0)
            cow_commit(s, i, k0);
    return KVX_OK;
}

size_t kvx_kv_pool_shared_bytes(const struct kvx_kv_pool *p)
{
    int32_t *refs = calloc((size_t)p->n_pages + 1, sizeof *refs);
    if (!refs)
        return 0;
    for (const struct kvx_kv_seq *s = p->seqs; s; s = s->next)
        for (int32_t i = 0; i < p->layout->n_layer; i++)
            for (int64_t k = 0; k < s->tables[i].n; k++)
                if (s->tables[i].ids[k] >= 0)
                    refs[s->tables[i].ids[k]]++;
    size_t bytes = 0;
    for (int32_t id = 0; id < p->n_pages; id++)
        if (refs[id] > 1)
            bytes += p->classes[p->pages[id].cls].page_bytes;
    free(refs);
    return bytes;
}

enum kvx_status kvx_kv_pool_add_holder(struct kvx_kv_pool *p, const struct kvx_kv_holder *h,
                                       struct kvx_err *err)
{
    if (!h || !h->check)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv pool: a holder needs a check function");
    size_t n_cls = 2 * (size_t)p->layout->n_layer;
    if (!p->plan_reclaim && !(p->plan_reclaim = calloc(n_cls, sizeof *p->plan_reclaim)))
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory");
    struct kvx_kv_holder *hs = realloc(p->holders, ((size_t)p->n_holders + 1) * sizeof *hs);
    if (!hs)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory");
    p->holders = hs;
    p->holders[p->n_holders++] = *h;
    return KVX_OK;
}

void kvx_kv_pool_remove_holder(struct kvx_kv_pool *p, const void *ctx)
{
    for (int32_t i = 0; i < p->n_holders; i++) {
        if (p->holders[i].ctx != ctx)
            continue;
        memmove(&p->holders[i], &p->holders[i + 1],
                (size_t)(p->n_holders - i - 1) * sizeof *p->holders);
        p->n_holders--;
        return;
    }
}
