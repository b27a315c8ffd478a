/* kv/pool_compact: slots (positions less the tokens compaction removed) and compaction, the
 * moving of kept tokens down that eviction uses (kv/evict.h). */
#include "kv/pool_internal.h"

#include <stdlib.h>

#include "util/err.h"

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
    kvx_kvp_heads_state_truncate(s, layer, h, h + 1, d0);
    const size_t ko = kvx_kv_layer_k_offset(l, layer, h), vo = kvx_kv_layer_v_offset(l, layer, h);
    size_t kss = kvx_kv_layer_k_state_bytes(l, layer), vss = kvx_kv_layer_v_state_bytes(l, layer);
    uint8_t *k_state = kss ? t->state + (size_t)h * kss : NULL;
    uint8_t *v_state = vss ? t->state + (size_t)v.n_kv_heads * kss + (size_t)h * vss : NULL;
    for (int64_t j = d0; j < n_keep; j++) {
        uint8_t *page = t->ptrs[j / pt];
        const int32_t tok = (int32_t)(j % pt);
        if (tok == 0)
            kvx_kvp_begin_page(s, layer, h, j / pt);
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
    const int64_t end = kvx_kvp_table_end(s, layer, s->reserved);
    for (int64_t k = end; k < t->n; k++) {
        kvx_kv_page_unref(p, t->ids[k]);
        t->ids[k] = -1;
        t->ptrs[k] = NULL;
    }
    if (t->n > end)
        t->n = end;
    return KVX_OK;
}
