/* kv/layout: per-layer cache declarations -> page geometry and byte counts.
 *
 * Owns every KV byte formula (bytes per token, per page, per sequence).  Region sizes come from
 * the codecs (kv/codec.h), so a codec with per-tile scales changes the numbers here without a
 * new formula.  Does not allocate cache memory (kv/pool) and does not know about models. */
#include "kv/layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    case KVX_KV_KIND_LATENT: return "latent";
    case KVX_KV_KIND_COMPRESSED: return "compressed";
    case KVX_KV_KIND_HEAVY: return "heavy";
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
    return c->kind == KVX_KV_KIND_FULL || c->kind == KVX_KV_KIND_WINDOW ||
           c->kind == KVX_KV_KIND_LATENT || c->kind == KVX_KV_KIND_COMPRESSED ||
           c->kind == KVX_KV_KIND_HEAVY;
}

static bool pooled(const struct kvx_layer_cache *c)
{
    return c->kind == KVX_KV_KIND_COMPRESSED || c->kind == KVX_KV_KIND_HEAVY;
}

static enum kvx_status validate_owner(const struct kvx_layer_cache *c, int32_t i,
                                      int32_t page_tokens, struct kvx_err *err)
{
    if (c->n_kv_heads <= 0 || c->n_kv_heads > KVX_KV_MAX_HEADS)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: n_kv_heads %d out of range [1, %d]",
                           (int)i, (int)c->n_kv_heads, KVX_KV_MAX_HEADS);
    if (c->k_dim <= 0 || c->k_dim > KVX_KV_MAX_DIM || c->v_dim < 0 || c->v_dim > KVX_KV_MAX_DIM)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "kv layout: layer %d: k_dim %d / v_dim %d out of range [1 (v: 0), %d]",
                           (int)i, (int)c->k_dim, (int)c->v_dim, KVX_KV_MAX_DIM);
    if (c->kind != KVX_KV_KIND_FULL && c->kind != KVX_KV_KIND_WINDOW && c->n_kv_heads != 1)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: a %s layer has one "
                           "head, not %d", (int)i, kvx_kv_kind_name(c->kind), (int)c->n_kv_heads);
    if (pooled(c) && (c->ratio < 2 || c->ratio > 65536 || c->window < 0 || c->window > (1 << 20)))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: %s needs a ratio in "
                           "2..65536 (got %d) and a window in 0..2^20 (got %lld)", (int)i,
                           kvx_kv_kind_name(c->kind), (int)c->ratio, (long long)c->window);
    if (!kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR) || !kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "kv layout: layer %d: unknown codec (k %d, v %d)",
                           (int)i, (int)c->k_codec, (int)c->v_codec);
    if (c->kind == KVX_KV_KIND_LATENT && (c->n_kv_heads != 1 || c->v_dim > c->k_dim))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: a latent layer has one "
                           "head and v_dim %d <= k_dim %d (it has %d heads)", (int)i,
                           (int)c->v_dim, (int)c->k_dim, (int)c->n_kv_heads);
    struct kvx_err e2 = {0};
    if (kvx_kv_codec_check(c->k_codec, page_tokens, c->k_dim, c->group, c->residual, &e2) != KVX_OK ||
        (c->v_dim > 0 && c->kind != KVX_KV_KIND_LATENT &&
         kvx_kv_codec_check(c->v_codec, page_tokens, c->v_dim, c->group, c->residual, &e2) != KVX_OK))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: %s", (int)i, e2.msg);
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
        case KVX_KV_KIND_WINDOW:
        case KVX_KV_KIND_LATENT:
        case KVX_KV_KIND_COMPRESSED:
        case KVX_KV_KIND_HEAVY: {
            enum kvx_status st = validate_owner(c, i, l->page_tokens, err);
            if (st != KVX_OK)
                return st;
            if (c->state_floats < 0 || c->state_floats > (1 << 26) ||
                (c->state_floats && c->kind != KVX_KV_KIND_FULL && c->kind != KVX_KV_KIND_WINDOW))
                return kvx_err_set(err, KVX_ERR_INVALID_ARG, "kv layout: layer %d: state_floats "
                                   "%d (FULL and WINDOW layers only, at most 2^26)", (int)i,
                                   (int)c->state_floats);
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

struct kvx_kv_fmt kvx_kv_layer_k_fmt(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return (struct kvx_kv_fmt){0};
    return kvx_kv_fmt_make(c->k_codec, l->page_tokens, c->k_dim, c->group, c->residual);
}

struct kvx_kv_fmt kvx_kv_layer_v_fmt(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return (struct kvx_kv_fmt){0};
    if (c->kind == KVX_KV_KIND_LATENT)   /* V is read from the K region */
        return kvx_kv_layer_k_fmt(l, layer);
    return kvx_kv_fmt_make(c->v_codec, l->page_tokens, c->v_dim, c->group, c->residual);
}

/* Region strides: the codec's bytes rounded up to the page alignment. */
size_t kvx_kv_layer_k_head_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR);
    struct kvx_kv_fmt f = kvx_kv_layer_k_fmt(l, layer);
    return ops ? align_up(ops->k_region_bytes(&f), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_v_head_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || c->kind == KVX_KV_KIND_LATENT)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR);
    struct kvx_kv_fmt f = kvx_kv_layer_v_fmt(l, layer);
    return ops && c->v_dim > 0 ? align_up(ops->v_region_bytes(&f), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_k_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR);
    struct kvx_kv_fmt f = kvx_kv_layer_k_fmt(l, layer);
    return ops && ops->k_state_bytes ? align_up(ops->k_state_bytes(&f), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_v_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || c->kind == KVX_KV_KIND_LATENT)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR);
    struct kvx_kv_fmt f = kvx_kv_layer_v_fmt(l, layer);
    return ops && ops->v_state_bytes && c->v_dim > 0
               ? align_up(ops->v_state_bytes(&f), KVX_KV_PAGE_ALIGN)
               : 0;
}

size_t kvx_kv_layer_window_state_offset(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c)
        return 0;
    return (size_t)c->n_kv_heads *
           (kvx_kv_layer_k_state_bytes(l, layer) + kvx_kv_layer_v_state_bytes(l, layer));
}

size_t kvx_kv_layer_window_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || !pooled(c) || c->window == 0)
        return 0;
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR);
    int32_t w = (int32_t)((c->window + KVX_KV_TILE - 1) / KVX_KV_TILE * KVX_KV_TILE);
    struct kvx_kv_fmt f = kvx_kv_fmt_make(c->k_codec, w, c->k_dim, c->group, c->residual);
    return ops ? align_up(ops->k_region_bytes(&f), KVX_KV_PAGE_ALIGN) : 0;
}

size_t kvx_kv_layer_compressor_state_offset(const struct kvx_kv_layout *l, int32_t layer)
{
    return kvx_kv_layer_window_state_offset(l, layer) + kvx_kv_layer_window_state_bytes(l, layer);
}

size_t kvx_kv_layer_compressor_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || !pooled(c))
        return 0;
    size_t m = (size_t)c->ratio, d = (size_t)c->k_dim, ci = (size_t)c->v_dim, floats;
    if (c->kind == KVX_KV_KIND_HEAVY)
        floats = (m - 1) * 2 * d;
    else
        floats = (m - 1) * 4 * (d + ci) + m * 2 * (d + ci);
    return align_up(floats * sizeof(float), KVX_KV_PAGE_ALIGN);
}

size_t kvx_kv_layer_model_state_offset(const struct kvx_kv_layout *l, int32_t layer)
{
    return kvx_kv_layer_compressor_state_offset(l, layer) +
           kvx_kv_layer_compressor_state_bytes(l, layer);
}

size_t kvx_kv_layer_model_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || c->state_floats <= 0)
        return 0;
    return align_up((size_t)c->state_floats * sizeof(float), KVX_KV_PAGE_ALIGN);
}

bool kvx_kv_layout_has_model_state(const struct kvx_kv_layout *l)
{
    for (int32_t i = 0; i < l->n_layer; i++)
        if (kvx_kv_layer_model_state_bytes(l, i))
            return true;
    return false;
}

size_t kvx_kv_layer_state_bytes(const struct kvx_kv_layout *l, int32_t layer)
{
    return kvx_kv_layer_model_state_offset(l, layer) + kvx_kv_layer_model_state_bytes(l, layer);
}

int64_t kvx_kv_layer_entries(const struct kvx_kv_layout *l, int32_t layer, int64_t n_tokens)
{
    const struct kvx_layer_cache *c = owner(l, layer);
    if (!c || n_tokens <= 0)
        return 0;
    return pooled(c) ? n_tokens / c->ratio : n_tokens;
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
    int64_t end = (kvx_kv_layer_entries(l, layer, n_tokens) + pt - 1) / pt;
    if (c->kind != KVX_KV_KIND_WINDOW)
        return end;
    /* WINDOW: pages overlapping [first_pos(n-1), n) = [max(0, n - w), n). */
    return end - kvx_kv_layer_first_pos(l, layer, n_tokens - 1) / pt;
}

size_t kvx_kv_layout_bytes_per_token(const struct kvx_kv_layout *l)
{
    /* sum_i page_bytes_i / (page_tokens * ratio_i), exactly: numerators over the product of
     * the distinct ratios (at most a few), then one rounding up */
    uint64_t den = 1;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (pooled(&l->layers[i]) && den % (uint64_t)l->layers[i].ratio &&
            den <= ((uint64_t)1 << 40)) /* beyond that (hostile ratios) rounding is per layer */
            den *= (uint64_t)l->layers[i].ratio;
    unsigned __int128 num = 0;
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        if (c->kind == KVX_KV_KIND_FULL || c->kind == KVX_KV_KIND_LATENT)
            num += (unsigned __int128)kvx_kv_layer_page_bytes(l, i) * den;
        else if (pooled(c))
            num += ((unsigned __int128)kvx_kv_layer_page_bytes(l, i) * den + (uint64_t)c->ratio - 1) /
                   (uint64_t)c->ratio;
    }
    unsigned __int128 d = (unsigned __int128)den * (uint64_t)l->page_tokens;
    return d ? (size_t)((num + d - 1) / d) : 0;
}

size_t kvx_kv_layout_state_bytes(const struct kvx_kv_layout *l)
{
    size_t bytes = 0;
    for (int32_t i = 0; i < l->n_layer; i++)
        bytes += kvx_kv_layer_state_bytes(l, i);
    return bytes;
}

size_t kvx_kv_layout_seq_bytes(const struct kvx_kv_layout *l, int64_t n_tokens)
{
    size_t bytes = n_tokens > 0 ? kvx_kv_layout_state_bytes(l) : 0;
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

/* One "A-B:K[/V]" item of a per-layer codec spec, [p, end) without the comma. */
static enum kvx_status parse_codec_item(const char *p, const char *end, int32_t n_layer,
                                        int32_t *lo, int32_t *hi, enum kvx_kv_codec *k,
                                        enum kvx_kv_codec *v, struct kvx_err *err)
{
    char item[96];
    size_t len = (size_t)(end - p);
    if (len == 0 || len >= sizeof item)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "--kv-layer: empty or overlong item");
    memcpy(item, p, len);
    item[len] = '\0';
    char *colon = strchr(item, ':');
    if (!colon)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "--kv-layer: '%s' is not LAYERS:CODEC (e.g. 0-3:q8 or 0-3:q4/q8)", item);
    *colon = '\0';
    long a, b;
    char tail;
    if (sscanf(item, "%ld-%ld%c", &a, &b, &tail) != 2) {
        if (sscanf(item, "%ld%c", &a, &tail) != 1)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "--kv-layer: '%s' is not a layer range",
                               item);
        b = a;
    }
    if (a < 0 || b < a || b >= n_layer)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "--kv-layer: layers %ld-%ld are outside the model's 0-%d", a, b,
                           (int)n_layer - 1);
    char *codecs = colon + 1, *slash = strchr(codecs, '/');
    if (slash)
        *slash = '\0';
    if (!kvx_kv_codec_parse(codecs, k))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "--kv-layer: unknown codec '%s'", codecs);
    *v = *k;
    if (slash && !kvx_kv_codec_parse(slash + 1, v))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "--kv-layer: unknown codec '%s'", slash + 1);
    *lo = (int32_t)a;
    *hi = (int32_t)b;
    return KVX_OK;
}

enum kvx_status kvx_kv_layout_set_codecs(struct kvx_kv_layout *l, enum kvx_kv_codec k,
                                         enum kvx_kv_codec v, const char *spec, int32_t group,
                                         int32_t residual, struct kvx_err *err)
{
    /* parse everything first: the layout changes only when the whole spec is valid */
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ',');
        end = end ? end : p + strlen(p);
        int32_t lo, hi;
        enum kvx_kv_codec kc, vc;
        enum kvx_status st = parse_codec_item(p, end, l->n_layer, &lo, &hi, &kc, &vc, err);
        if (st != KVX_OK)
            return st;
        p = *end ? end + 1 : end;
    }
    for (int32_t i = 0; i < l->n_layer; i++) {
        struct kvx_layer_cache *c = &l->layers[i];
        c->k_codec = k;
        c->v_codec = v;
        c->group = group;
        c->residual = residual;
    }
    for (const char *p = spec; p && *p;) {
        const char *end = strchr(p, ',');
        end = end ? end : p + strlen(p);
        int32_t lo, hi;
        enum kvx_kv_codec kc, vc;
        parse_codec_item(p, end, l->n_layer, &lo, &hi, &kc, &vc, err);
        for (int32_t i = lo; i <= hi; i++) {
            l->layers[i].k_codec = kc;
            l->layers[i].v_codec = vc;
        }
        p = *end ? end + 1 : end;
    }
    return KVX_OK;
}
