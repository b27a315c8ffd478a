/* kv/pool_check: kvx_kv_pool_check, every invariant of the pool (carving, free lists, page
 * tables, reference counts, byte accounting). */
#include "kv/pool_internal.h"

#include <stdlib.h>

#include "util/err.h"

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
    CHECK(t->n == kvx_kvp_pages_for(l, layer, slots), "layer %d: %lld table entries for %lld slots",
          (int)layer, (long long)t->n, (long long)slots);
    int64_t first = kvx_kvp_table_first_needed(s, layer, s->floor_len);
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
