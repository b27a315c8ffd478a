/* kv/prefix: the radix tree of cached blocks, its LRU order and its holder callbacks.
 *
 * Owns the nodes (one malloc each: the node, its block's tokens, its page ids) and one
 * reference per page id.  Does not own pages or sequences: attaching and copy-on-write are
 * kv/pool's.  Children of a node are a singly linked list searched by a hash of the block's
 * tokens, then compared in full; every node is also on one LRU list (newest first).  Walks over
 * the tree are iterative (parent pointers), so depth (context / page_tokens) is not bounded by
 * the C stack. */
#include "kv/prefix.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

struct node {
    struct node *parent, *child, *sibling;   /* tree: first child, next sibling */
    struct node *newer, *older;              /* LRU list */
    uint64_t hash;                           /* of tokens */
    int64_t block;                           /* depth: positions [block*pt, (block+1)*pt) */
    bool busy;                               /* scratch of reclaimable: subtree not idle */
    int32_t *tokens;                         /* page_tokens entries */
    int32_t *pages;                          /* n_own entries */
};

struct kvx_kv_prefix {
    struct kvx_kv_pool *pool;
    const struct kvx_kv_layout *layout;
    int32_t page_tokens;
    int32_t n_own;
    int32_t *own_layer;                      /* owning layer of page slot j */
    size_t block_bytes;                      /* bytes of one node's pages */
    struct node root;                        /* block -1, no tokens, not on the LRU list */
    struct node *newest, *oldest;
    int64_t n_nodes;
    int64_t tokens_attached, blocks_evicted;
};

/* FNV-1a over the 32-bit tokens of a block. */
static uint64_t block_hash(const int32_t *tokens, int32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t i = 0; i < n; i++)
        h = (h ^ (uint32_t)tokens[i]) * 0x100000001b3ull;
    return h;
}

/* ---------------------------------------------------------------------------------------------
 * LRU list */

static void lru_unlink(struct kvx_kv_prefix *t, struct node *n)
{
    if (n->newer)
        n->newer->older = n->older;
    else
        t->newest = n->older;
    if (n->older)
        n->older->newer = n->newer;
    else
        t->oldest = n->newer;
    n->newer = n->older = NULL;
}

static void lru_push_newest(struct kvx_kv_prefix *t, struct node *n)
{
    n->older = t->newest;
    n->newer = NULL;
    if (t->newest)
        t->newest->newer = n;
    else
        t->oldest = n;
    t->newest = n;
}

static void lru_touch(struct kvx_kv_prefix *t, struct node *n)
{
    if (t->newest == n)
        return;
    lru_unlink(t, n);
    lru_push_newest(t, n);
}

/* ---------------------------------------------------------------------------------------------
 * Nodes */

static struct node *find_child(const struct node *parent, const int32_t *tokens, uint64_t hash,
                               int32_t pt)
{
    for (struct node *c = parent->child; c; c = c->sibling)
        if (c->hash == hash && memcmp(c->tokens, tokens, (size_t)pt * sizeof *tokens) == 0)
            return c;
    return NULL;
}

/* A child of `parent` for block tokens[0, pt) holding s's pages of that block (referenced). */
static enum kvx_status node_add(struct kvx_kv_prefix *t, struct node *parent,
                                const int32_t *tokens, uint64_t hash, const struct kvx_kv_seq *s,
                                struct node **out, struct kvx_err *err)
{
    size_t bytes = sizeof(struct node) + ((size_t)t->page_tokens + (size_t)t->n_own) * sizeof(int32_t);
    struct node *n = calloc(1, bytes);
    if (!n)
        return kvx_err_set(err, KVX_ERR_NOMEM, "prefix cache: no memory for block %lld",
                           (long long)parent->block + 1);
    n->tokens = (int32_t *)(n + 1);
    n->pages = n->tokens + t->page_tokens;
    n->block = parent->block + 1;
    if (!kvx_kv_seq_block_pages(s, n->block, n->pages)) {
        free(n);
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "prefix cache: the sequence does not hold "
                           "block %lld whole", (long long)parent->block + 1);
    }
    memcpy(n->tokens, tokens, (size_t)t->page_tokens * sizeof *tokens);
    n->hash = hash;
    for (int32_t j = 0; j < t->n_own; j++)
        kvx_kv_page_ref(t->pool, n->pages[j]);
    n->parent = parent;
    n->sibling = parent->child;
    parent->child = n;
    lru_push_newest(t, n);
    t->n_nodes++;
    *out = n;
    return KVX_OK;
}

/* Unlink a leaf, release its references, free it. */
static void node_remove(struct kvx_kv_prefix *t, struct node *n)
{
    struct node **link = &n->parent->child;
    while (*link != n)
        link = &(*link)->sibling;
    *link = n->sibling;
    lru_unlink(t, n);
    for (int32_t j = 0; j < t->n_own; j++)
        kvx_kv_page_unref(t->pool, n->pages[j]);
    t->n_nodes--;
    free(n);
}

/* No sequence references any page of the node (the tree's is the only reference). */
static bool node_idle(const struct kvx_kv_prefix *t, const struct node *n)
{
    for (int32_t j = 0; j < t->n_own; j++)
        if (kvx_kv_page_refcount(t->pool, n->pages[j]) > 1)
            return false;
    return true;
}

/* Post-order walk: the first node to visit below n (clearing `busy` on the way down). */
static struct node *first_below(struct node *n)
{
    n->busy = false;
    while (n->child) {
        n = n->child;
        n->busy = false;
    }
    return n;
}

/* The next node of a post-order walk of the whole tree (the root comes last). */
static struct node *post_next(struct node *n)
{
    return n->sibling ? first_below(n->sibling) : n->parent;
}

/* ---------------------------------------------------------------------------------------------
 * Holder callbacks */

static enum kvx_status holder_check(const void *ctx, int32_t *refs, struct kvx_err *err)
{
    const struct kvx_kv_prefix *t = ctx;
    int64_t n_seen = 0;
    /* pre-order walk over every node */
    const struct node *n = t->root.child;
    while (n) {
        if (n->block != n->parent->block + 1 || n->hash != block_hash(n->tokens, t->page_tokens))
            return kvx_err_set(err, KVX_ERR_FORMAT, "prefix cache check: node of block %lld "
                               "has a wrong depth or hash", (long long)n->block);
        for (const struct node *c = n->sibling; c; c = c->sibling)
            if (memcmp(c->tokens, n->tokens, (size_t)t->page_tokens * sizeof *n->tokens) == 0)
                return kvx_err_set(err, KVX_ERR_FORMAT, "prefix cache check: two children of "
                                   "one node hold the same block %lld", (long long)n->block);
        for (int32_t j = 0; j < t->n_own; j++) {
            int32_t id = n->pages[j];
            size_t want = kvx_kv_layer_page_bytes(t->layout, t->own_layer[j]);
            if (kvx_kv_page_refcount(t->pool, id) < 1 || kvx_kv_page_bytes(t->pool, id) != want)
                return kvx_err_set(err, KVX_ERR_FORMAT, "prefix cache check: block %lld holds "
                                   "page %d that is not a live page of layer %d",
                                   (long long)n->block, (int)id, (int)t->own_layer[j]);
            refs[id]++;
        }
        n_seen++;
        if (n->child) {
            n = n->child;
            continue;
        }
        while (n && !n->sibling)
            n = n->parent == &t->root ? NULL : n->parent;
        if (n)
            n = n->sibling;
    }
    int64_t n_lru = 0;
    for (const struct node *m = t->newest; m; m = m->older, n_lru++)
        if ((m->older ? m->older->newer != m : t->oldest != m) || n_lru > t->n_nodes)
            return kvx_err_set(err, KVX_ERR_FORMAT, "prefix cache check: LRU list links");
    if (n_seen != t->n_nodes || n_lru != t->n_nodes)
        return kvx_err_set(err, KVX_ERR_FORMAT, "prefix cache check: %lld nodes in the tree, %lld "
                           "on the LRU list, %lld counted", (long long)n_seen, (long long)n_lru,
                           (long long)t->n_nodes);
    return KVX_OK;
}

/* Pages whose release is possible: those of nodes whose whole subtree is idle (leaves go
 * first, then their parents become leaves). */
static void holder_reclaimable(void *ctx, int64_t *pages)
{
    struct kvx_kv_prefix *t = ctx;
    if (!t->root.child)
        return;
    for (struct node *n = first_below(t->root.child); n != &t->root; n = post_next(n)) {
        n->busy = n->busy || !node_idle(t, n);
        if (n->busy) {
            n->parent->busy = true;
            continue;
        }
        for (int32_t j = 0; j < t->n_own; j++)
            pages[kvx_kv_page_class(t->pool, n->pages[j])]++;
    }
}

static bool holder_reclaim_one(void *ctx) { return kvx_kv_prefix_evict_one(ctx); }

/* ---------------------------------------------------------------------------------------------
 * Public */

bool kvx_kv_prefix_supported(const struct kvx_kv_layout *l)
{
    bool owns = false;
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (l->layers[i].kind == KVX_KV_KIND_WINDOW || l->layers[i].kind == KVX_KV_KIND_COMPRESSED ||
            l->layers[i].kind == KVX_KV_KIND_HEAVY || l->layers[i].state_floats > 0)
            return false;
        owns = owns || kvx_kv_layer_owns(&l->layers[i]);
    }
    return owns;
}

enum kvx_status kvx_kv_prefix_create(struct kvx_kv_pool *p, struct kvx_kv_prefix **out,
                                     struct kvx_err *err)
{
    *out = NULL;
    const struct kvx_kv_layout *l = kvx_kv_pool_layout(p);
    for (int32_t i = 0; i < l->n_layer; i++)
        if (l->layers[i].kind == KVX_KV_KIND_WINDOW)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "prefix cache: layer %d is a window "
                               "layer (its pages drop tokens); prefix sharing needs layers that "
                               "keep every token", (int)i);
    if (!kvx_kv_prefix_supported(l))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "prefix cache: no layer owns a cache");
    struct kvx_kv_prefix *t = calloc(1, sizeof *t);
    if (t)
        t->own_layer = malloc((size_t)l->n_layer * sizeof *t->own_layer);
    if (!t || !t->own_layer) {
        free(t);
        return kvx_err_set(err, KVX_ERR_NOMEM, "prefix cache: no memory");
    }
    t->pool = p;
    t->layout = l;
    t->page_tokens = l->page_tokens;
    t->root.block = -1;
    for (int32_t i = 0; i < l->n_layer; i++) {
        if (!kvx_kv_layer_owns(&l->layers[i]))
            continue;
        t->own_layer[t->n_own++] = i;
        t->block_bytes += kvx_kv_layer_page_bytes(l, i);
    }
    struct kvx_kv_holder h = {.ctx = t, .check = holder_check, .reclaimable = holder_reclaimable,
                              .reclaim_one = holder_reclaim_one};
    enum kvx_status st = kvx_kv_pool_add_holder(p, &h, err);
    if (st != KVX_OK) {
        free(t->own_layer);
        free(t);
        return st;
    }
    *out = t;
    return KVX_OK;
}

void kvx_kv_prefix_destroy(struct kvx_kv_prefix *t)
{
    if (!t)
        return;
    while (t->root.child) { /* remove leaves until the tree is empty */
        struct node *n = t->root.child;
        while (n->child)
            n = n->child;
        node_remove(t, n);
    }
    kvx_kv_pool_remove_holder(t->pool, t);
    free(t->own_layer);
    free(t);
}

/* Walk tokens[0, n) down the tree: whole blocks into path[0 .. *n_full), then the child agreeing
 * longest with the next block (*part, its *n_part tokens; NULL when none agrees).  path may be
 * NULL (lookup only). */
static void walk(const struct kvx_kv_prefix *t, const int32_t *tokens, int64_t n,
                 struct node **path, int64_t *n_full, struct node **part, int64_t *n_part)
{
    const int32_t pt = t->page_tokens;
    const struct node *at = &t->root;
    int64_t b = 0;
    while ((b + 1) * pt <= n) {
        struct node *c = find_child(at, tokens + b * pt, block_hash(tokens + b * pt, pt), pt);
        if (!c)
            break;
        if (path)
            path[b] = c;
        at = c;
        b++;
    }
    *n_full = b;
    *part = NULL;
    *n_part = 0;
    const int64_t rest = n - b * pt < pt ? n - b * pt : pt;
    for (struct node *c = at->child; c && rest > 0; c = c->sibling) {
        int64_t k = 0;
        while (k < rest && c->tokens[k] == tokens[b * pt + k])
            k++;
        if (k > *n_part) {
            *n_part = k;
            *part = c;
        }
    }
}

int64_t kvx_kv_prefix_lookup(const struct kvx_kv_prefix *t, const int32_t *tokens, int64_t n)
{
    int64_t n_full, n_part;
    struct node *part;
    walk(t, tokens, n, NULL, &n_full, &part, &n_part);
    return n_full * t->page_tokens + n_part;
}

enum kvx_status kvx_kv_prefix_attach(struct kvx_kv_prefix *t, struct kvx_kv_seq *s,
                                     const int32_t *tokens, int64_t n, int64_t *n_cached,
                                     struct kvx_err *err)
{
    const int64_t len = kvx_kv_seq_len(s), pt = t->page_tokens;
    *n_cached = len;
    /* Only at a block boundary: no page s wrote is replaced, so cutting s back to len undoes
     * the attach exactly (the engine does when the rest of a request does not fit). */
    if (n <= len || len % pt != 0 || !kvx_kv_seq_shareable(s) || !t->root.child)
        return KVX_OK;
    struct node **path = malloc((size_t)(n / pt + 1) * sizeof *path);
    if (!path)
        return kvx_err_set(err, KVX_ERR_NOMEM, "prefix cache: no memory for a lookup");
    int64_t n_full, n_part;
    struct node *part;
    walk(t, tokens, n, path, &n_full, &part, &n_part);
    const int64_t total = n_full * pt + n_part;
    if (total <= len) {
        free(path);
        return KVX_OK;
    }
    if (part)
        path[n_full] = part;
    const int64_t first = len / pt, last = n_full + (part ? 1 : 0);
    int32_t *ids = malloc((size_t)(last - first) * (size_t)t->n_own * sizeof *ids);
    if (!ids) {
        free(path);
        return kvx_err_set(err, KVX_ERR_NOMEM, "prefix cache: no memory for a lookup");
    }
    for (int64_t b = first; b < last; b++)
        memcpy(ids + (b - first) * t->n_own, path[b]->pages, (size_t)t->n_own * sizeof *ids);
    enum kvx_status st = kvx_kv_seq_attach(s, first, last - first, ids, total, err);
    if (st == KVX_OK) {
        for (int64_t b = 0; b < last; b++) /* root side first: deeper blocks end up newer */
            lru_touch(t, path[b]);
        t->tokens_attached += total - len;
        *n_cached = total;
    }
    free(ids);
    free(path);
    return st;
}

enum kvx_status kvx_kv_prefix_insert(struct kvx_kv_prefix *t, const struct kvx_kv_seq *s,
                                     const int32_t *tokens, struct kvx_err *err)
{
    if (!kvx_kv_seq_shareable(s))
        return KVX_OK;
    const int32_t pt = t->page_tokens;
    const int64_t n_blocks = kvx_kv_seq_len(s) / pt;
    struct node *at = &t->root;
    for (int64_t b = 0; b < n_blocks; b++) {
        const int32_t *blk = tokens + b * pt;
        const uint64_t h = block_hash(blk, pt);
        struct node *c = find_child(at, blk, h, pt);
        if (!c) {
            enum kvx_status st = node_add(t, at, blk, h, s, &c, err);
            if (st != KVX_OK)
                return st;
        }
        lru_touch(t, c);
        at = c;
    }
    return KVX_OK;
}

bool kvx_kv_prefix_evict_one(struct kvx_kv_prefix *t)
{
    for (struct node *n = t->oldest; n; n = n->newer) {
        if (n->child || !node_idle(t, n))
            continue;
        node_remove(t, n);
        t->blocks_evicted++;
        return true;
    }
    return false;
}

void kvx_kv_prefix_get_stats(const struct kvx_kv_prefix *t, struct kvx_kv_prefix_stats *out)
{
    memset(out, 0, sizeof *out);
    out->n_blocks = t->n_nodes;
    out->bytes = (size_t)t->n_nodes * t->block_bytes;
    out->tokens_attached = t->tokens_attached;
    out->blocks_evicted = t->blocks_evicted;
    for (const struct node *n = t->newest; n; n = n->older)
        for (int32_t j = 0; j < t->n_own; j++)
            if (kvx_kv_page_refcount(t->pool, n->pages[j]) == 1)
                out->bytes_idle += kvx_kv_page_bytes(t->pool, n->pages[j]);
}
