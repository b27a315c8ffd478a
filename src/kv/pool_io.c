/* kv/pool_io: writing K and V into a sequence's pages (with the codecs' per-page headers)
 * and reading them: views for attention, decoded vectors for tests and export. */
#include "kv/pool_internal.h"

#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Writing and reading */

/* Page pg of the sequence's table of `layer` receives its first token: codecs with a per-page
 * header derive it for head h from the page before (kv/codec.h, k_begin_page). */
void kvx_kvp_begin_page(const struct kvx_kv_seq *s, int32_t layer, int32_t h, int64_t pg)
{
    const struct kvx_kv_pool *p = s->pool;
    const struct kvx_kv_layout *l = p->layout;
    const struct kvx_kv_table *t = &s->tables[layer];
    const struct kvx_kv_codec_ops *ko = p->k_ops[layer], *vo = p->v_ops[layer];
    if (!ko->k_begin_page && !vo->v_begin_page)
        return;
    const int64_t slot0 = pg * l->page_tokens;
    const uint8_t *prev = pg > 0 ? t->ptrs[pg - 1] : NULL;
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
            kvx_kvp_begin_page(s, layer, h, pg);
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
