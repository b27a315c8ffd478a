/* kv/pool_share: sharing pages between sequences: fork, attach of cached prefix blocks,
 * unshare before a write, and the holders (the prefix cache) that release pages on demand. */
#include "kv/pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* ---------------------------------------------------------------------------------------------
 * Sharing: fork, attach, unshare, holders */

size_t kvx_kv_page_bytes(const struct kvx_kv_pool *p, int32_t page)
{
    return kvx_kvp_page_valid(p, page) ? p->classes[p->pages[page].cls].page_bytes : 0;
}

int32_t kvx_kv_page_class(const struct kvx_kv_pool *p, int32_t page)
{
    return kvx_kvp_page_valid(p, page) ? p->pages[page].cls : -1;
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
    size_t bytes = kvx_kvp_plan_bytes(p, NULL, &new_descs);
    size_t missing = kvx_kvp_plan_fit(p, &bytes, &new_descs);
    if (missing)
        return kvx_err_set(err, KVX_ERR_KV_FULL, "KV budget exhausted: need %zu more bytes to %s "
                           "(budget %zu, in use %zu)", missing, what, p->budget, p->bytes_used);
    if (kvx_kvp_pages_grow(p, (int64_t)p->n_pages + new_descs) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv pool: no memory for %lld page descriptors",
                           (long long)p->n_pages + (long long)new_descs);
    return KVX_OK;
}

/* A fresh, empty codec state page for `layer` of s (planned). */
static void state_alloc(struct kvx_kv_seq *s, int32_t layer)
{
    struct kvx_kv_pool *p = s->pool;
    struct kvx_kv_table *t = &s->tables[layer];
    t->state_id = kvx_kvp_page_alloc(p, p->state_class[layer]);
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
        const int64_t end = kvx_kvp_pages_for(l, i, len);
        if (kvx_kvp_table_grow(&d->tables[i], end) != KVX_OK) {
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
        const int64_t end = kvx_kvp_pages_for(l, i, len);
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
        if (b >= t->n || t->ids[b] < 0 || kvx_kvp_pooled_kind(p->layout->layers[i].kind))
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
        if (l->layers[i].kind == KVX_KV_KIND_WINDOW || kvx_kvp_pooled_kind(l->layers[i].kind))
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
            if (!kvx_kvp_page_valid(p, id) || p->pages[id].refs <= 0 || p->pages[id].cls != p->layer_class[i])
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
        if (kvx_kvp_table_grow(&s->tables[i], last) != KVX_OK)
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
            kvx_kvp_state_truncate(s, i, n_tokens);
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
            p->plan_need[p->layer_class[i]] += kvx_kvp_cow_count(s, i, k0);
    enum kvx_status st = plan_admit(p, "copy shared pages", err);
    if (st != KVX_OK)
        return st;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (p->layer_class[i] >= 0)
            kvx_kvp_cow_commit(s, i, k0);
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
