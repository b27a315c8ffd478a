/* kv/layout: per-layer cache declarations -> page geometry and byte counts.
 *
 * Owns every KV byte formula (bytes per token, per page, per sequence).  Region sizes come from
 * the codecs (kv/codec.h), so a codec with per-tile scales changes the numbers here without a
 * new formula.  Does not allocate cache memory (kv/pool) and does not know about models. */
#include "kv/layout.h"

#include <stdlib.h>

#include "kv/codec.h"
#include "util/err.h"

/* Bounds that keep every size product below 2^50 (declarations may come from model files). */
#define KVX_KV_MAX_DIM 65536
#define KVX_KV_MAX_HEADS 4096
#define KVX_KV_MAX_PAGE_TOKENS 65536

const char *kvx_kv_kind_name(enum kvx_kv_kind k)
{
    switch (k) {
    case KVX_KV_KIND_NONE: return "none";
    case KVX_KV_KIND_FULL: return "full";
    case KVX_KV_KIND_WINDOW: return "window";
    case KVX_KV_KIND_SHARED: return "shared";
    case KVX_KV_KIND_COUNT: break;
    }
    return "unknown";
}

enum kvx_status kvx_kv_layout_init(struct kvx_kv_layout *l, int32_t n_layer, int32_t page_tokens,
                                   struct kvx_err *err)
{
    l->n_layer = 0;
    l->page_tokens = 0;
    l->layers = NULL;
    if (n_layer <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: n_layer %d must be > 0",
                           (int)n_layer);
    if (page_tokens <= 0 || page_tokens % KVX_KV_TILE != 0 || page_tokens > KVX_KV_MAX_PAGE_TOKENS)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "kv layout: page_tokens %d must be a positive multiple of %d (at most %d)",
                           (int)page_tokens, KVX_KV_TILE, KVX_KV_MAX_PAGE_TOKENS);
    l->layers = calloc((size_t)n_layer, sizeof *l->layers);
    if (!l->layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "kv layout: no memory for %d layers", (int)n_layer);
    for (int32_t i = 0; i < n_layer; i++) {
        l->layers[i].kind = KVX_KV_KIND_NONE;
        l->layers[i].shared_from = -1;
    }
    l->n_layer = n_layer;
    l->page_tokens = page_tokens;
    return KVX_OK;
}

void kvx_kv_layout_free(struct kvx_kv_layout *l)
{
    if (!l)
        return;
    free(l->layers);
    l->layers = NULL;
    l->n_layer = 0;
}

bool kvx_kv_layer_owns(const struct kvx_layer_cache *c)
{
    return c->kind == KVX_KV_KIND_FULL || c->kind == KVX_KV_KIND_WINDOW;
}

static enum kvx_status validate_owner(const struct kvx_layer_cache *c, int32_t i,
                                      struct kvx_err *err)
{
    if (c->n_kv_heads <= 0 || c->n_kv_heads > KVX_KV_MAX_HEADS)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: n_kv_heads %d out of range [1, %d]",
                           (int)i, (int)c->n_kv_heads, KVX_KV_MAX_HEADS);
    if (c->k_dim <= 0 || c->k_dim > KVX_KV_MAX_DIM || c->v_dim <= 0 || c->v_dim > KVX_KV_MAX_DIM)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "kv layout: layer %d: k_dim %d / v_dim %d out of range [1, %d]", (int)i,
                           (int)c->k_dim, (int)c->v_dim, KVX_KV_MAX_DIM);
    if (!kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR) || !kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv layout: layer %d: unknown codec (k %d, v %d)",
                           (int)i, (int)c->k_codec, (int)c->v_codec);
    if (c->kind == KVX_KV_KIND_WINDOW && c->window <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: window %lld must be > 0",
                           (int)i, (long long)c->window);
    return KVX_OK;
}

enum kvx_status kvx_kv_layout_validate(const struct kvx_kv_layout *l, struct kvx_err *err)
{
    if (!l->layers || l->n_layer <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: no layers");
    if (l->page_tokens <= 0 || l->page_tokens % KVX_KV_TILE != 0 ||
        l->page_tokens > KVX_KV_MAX_PAGE_TOKENS)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "kv layout: page_tokens %d must be a positive multiple of %d",
                           (int)l->page_tokens, KVX_KV_TILE);
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        switch (c->kind) {
        case KVX_KV_KIND_NONE:
            break;
        case KVX_KV_KIND_FULL:
        case KVX_KV_KIND_WINDOW: {
            enum kvx_status st = validate_owner(c, i, err);
            if (st != KVX_OK)
                return st;
            break;
        }
        case KVX_KV_KIND_SHARED:
            if (c->shared_from < 0 || c->shared_from >= i ||
                !kvx_kv_layer_owns(&l->layers[c->shared_from]))
                return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                                   "kv layout: layer %d: shared_from %d is not an earlier layer "
                                   "that owns a cache", (int)i, (int)c->shared_from);
            break;
        default:
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv layout: layer %d: unknown kind %d",
                               (int)i, (int)c->kind);
        }
    }
    return KVX_OK;
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static const struct kvx_layer_cache *owner(const struct kvx_kv_layout *l, int32_t layer)
{
    if (layer < 0 || layer >= l->n_layer || !kvx_kv_layer_owns(&l->layers[layer]))
        return NULL;
    return &l->layers[layer];
}

/* Region strides: the codec's bytes rounded up to the page alignment. */
size_t kvx_kv_layer_k_head_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR);
    return ops ? align_up(ops->k_region_bytes(l->page_tokens, c->k_dim), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_v_head_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR);
    return ops ? align_up(ops->v_region_bytes(l->page_tokens, c->v_dim), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_page_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    return (size_t)c->n_kv_heads *
           (kvx_kv_layer_k_head_bytes(l, layer) + kvx_kv_layer_v_head_bytes(l, layer));
}

size_t kvx_kv_layer_k_offset(const struct kvx_kv_layout *l, int32_t layer, int32_t h)
{
    return (size_t)h * kvx_kv_layer_k_head_bytes(l, layer);
}

size_t kvx_kv_layer_v_offset(const struct kvx_kv_layout *l, int32_t layer, int32_t h)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    return (size_t)c->n_kv_heads * kvx_kv_layer_k_head_bytes(l, layer) +
           (size_t)h * kvx_kv_layer_v_head_bytes(l, layer);
}

int32_t kvx_kv_layer_source(const struct kvx_kv_layout *l, int32_t layer)
{
    if (layer >= 0 && layer < l->n_layer && l->layers[layer].kind == KVX_KV_KIND_SHARED)
        return l->layers[layer].shared_from;
    return layer;
}

int64_t kvx_kv_layer_first_pos(const struct kvx_kv_layout *l, int32_t layer, int64_t pos)
{
    int32_t src = kvx_kv_layer_source(l, layer);
    if (src < 0 || src >= l->n_layer || l->layers[src].kind != KVX_KV_KIND_WINDOW)
        return 0;
    int64_t first = pos - l->layers[src].window + 1;
    return first > 0 ? first : 0;
}

int64_t kvx_kv_layer_pages(const struct kvx_kv_layout *l, int32_t layer, int64_t n_tokens)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || n_tokens <= 0)
        return 0;
    int64_t pt = l->page_tokens;
    int64_t end = (n_tokens + pt - 1) / pt;
    if (c->kind == KVX_KV_KIND_FULL)
        return end;
    /* WINDOW: pages overlapping [first_pos(n-1), n) = [max(0, n - w), n). */
    return end - kvx_kv_layer_first_pos(l, layer, n_tokens - 1) / pt;
}

size_t kvx_kv_layout_bytes_per_token(const struct kvx_kv_layout *l)
{
    size_t page_sum = 0;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (l->layers[i].kind == KVX_KV_KIND_FULL)
            page_sum += kvx_kv_layer_page_bytes(l, i);
    size_t pt = (size_t)l->page_tokens;
    return pt ? (page_sum + pt - 1) / pt : 0;
}

size_t kvx_kv_layout_seq_bytes(const struct kvx_kv_layout *l, int64_t n_tokens)
{
    size_t bytes = 0;
    for (int32_t i = 0; i < l->n_layer; i++)
        bytes += (size_t)kvx_kv_layer_pages(l, i, n_tokens) * kvx_kv_layer_page_bytes(l, i);
    return bytes;
}

int64_t kvx_kv_layout_seq_pages(const struct kvx_kv_layout *l, int64_t n_tokens)
{
    int64_t pages = 0;
    for (int32_t i = 0; i < l->n_layer; i++)
        pages += kvx_kv_layer_pages(l, i, n_tokens);
    return pages;
}
