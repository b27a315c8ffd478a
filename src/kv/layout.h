/* kv/layout: the per-layer cache declaration, and every KV byte count derived from it.
 *
 * Each model layer declares, through a struct kvx_layer_cache, what one token adds to its cache
 * and how it is stored.  From that declaration alone this module computes bytes per token, page
 * geometry and bytes per sequence; the pool allocates with these numbers, `kvx inspect` and the
 * planner print them, and a test checks that the pool's bytes equal the prediction.  Nobody
 * else multiplies heads by dimensions by element sizes.
 *
 * Page geometry (one page = page_tokens tokens of one layer):
 *   [K head 0][K head 1]...[K head n_kv-1][V head 0]...[V head n_kv-1]
 * each region sized by the K or V codec (kv/codec.h) for page_tokens tokens of one head, its
 * stride rounded up to KVX_KV_PAGE_ALIGN bytes (so every region of every page is 64-byte
 * aligned; the f32/f16 codecs with page_tokens % 16 == 0 and even dims need no padding).
 *
 * Window layers (WINDOW, `window` = w): a query at position p sees keys [p-w+1, p]
 * (kvx_kv_layer_first_pos).  The pool drops a window layer's pages that lie wholly before the
 * first key any later query can see; kvx_kv_layer_pages counts, for a sequence of n tokens, the
 * pages overlapping positions [max(0, n-w), n): the keys of the query at n-1 (whose page
 * is the one being filled).  That is exactly what a sequence grown one token per reserve holds
 * (decode); during a multi-token step a sequence holds more (see kv/pool.h). */
#ifndef KVX_KV_LAYOUT_H
#define KVX_KV_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

/* Every page, and every K/V region inside it, starts at a multiple of this many bytes. */
#define KVX_KV_PAGE_ALIGN 64

enum kvx_kv_kind {
    KVX_KV_KIND_NONE = 0,     /* the layer keeps no per-token state */
    KVX_KV_KIND_FULL,         /* K and V for every token (MHA / GQA / MQA) */
    KVX_KV_KIND_WINDOW,       /* K and V for the last `window` tokens only */
    KVX_KV_KIND_SHARED,       /* reads layer `shared_from`'s cache; holds nothing itself */
    KVX_KV_KIND_LATENT,       /* one vector per token read as both K and V (MLA, see below) */
    KVX_KV_KIND_COMPRESSED,   /* one entry per `ratio` tokens (DeepSeek V4 CSA): the pooled
                               * entry (K, k_dim; it is also the value) and the indexer key
                               * (V, v_dim); per sequence also a ring of the last `window` raw
                               * tokens and the compressor's pending/overlap state */
    KVX_KV_KIND_HEAVY,        /* one entry per `ratio` tokens, attended densely (DeepSeek V4
                               * HCA): the pooled entry (K, k_dim; v_dim 0); + window ring and
                               * compressor state per sequence */
    KVX_KV_KIND_COUNT,
};

/* LATENT layers (multi-head latent attention, DeepSeek-V2/V3): each token stores one vector
 * [c (v_dim values) | k_rope (k_dim - v_dim)] in the K codec (n_kv_heads = 1); every query
 * head scores against the whole vector and takes the latent c as its value, so nothing else is
 * stored (no V region, v_codec unused).  A view of a LATENT layer reads V from the K region
 * (kvx_kv_view.v_is_k) and attention returns sum_s p_s K_s, k_dim values per head, of which the
 * first v_dim are the latent output (the model discards the rest). */
struct kvx_layer_cache {
    enum kvx_kv_kind kind;
    int32_t n_kv_heads;       /* FULL, WINDOW (LATENT, COMPRESSED, HEAVY: 1) */
    int32_t k_dim, v_dim;     /* per head; v_dim 0: no V region (the key is also the value);
                               * LATENT: latent + rope dims, latent dims (no V region) */
    int64_t window;           /* WINDOW: tokens visible including the current one;
                               * COMPRESSED, HEAVY: raw tokens kept in the per-sequence ring */
    int32_t ratio;            /* COMPRESSED, HEAVY: tokens pooled into one entry */
    int32_t shared_from;      /* SHARED: the layer whose cache is read */
    enum kvx_kv_codec k_codec, v_codec;
    int32_t group, residual;  /* kivi2 parameters (kv/codec.h); ignored by other codecs */
    int32_t state_floats;     /* FULL, WINDOW: f32 values of the model's own per-sequence
                               * state (e.g. ZAYA's convolution frames and delayed value),
                               * zero in a new sequence, see kvx_kv_seq_model_state */
};

struct kvx_kv_layout {
    int32_t n_layer;
    int32_t page_tokens;      /* multiple of 16 */
    struct kvx_layer_cache *layers;  /* n_layer entries, owned */
};

const char *kvx_kv_kind_name(enum kvx_kv_kind k);

/* Allocate a layout of n_layer NONE layers with the given page size. */
enum kvx_status kvx_kv_layout_init(struct kvx_kv_layout *l, int32_t n_layer, int32_t page_tokens,
                                   struct kvx_err *err);
void kvx_kv_layout_free(struct kvx_kv_layout *l);
/* Check every declaration (dims > 0, shared_from names an earlier owning layer, ...). */
enum kvx_status kvx_kv_layout_validate(const struct kvx_kv_layout *l, struct kvx_err *err);

/* Set every owning layer's codecs to k / v and kivi2 parameters, then apply the per-layer
 * overrides of `spec` ("0-3:q8,4-29:q4" sets K and V; "0-3:q4/q8" sets K/V; a single layer
 * "5:f16"; NULL or "" for none).  KVX_ERR_INVALID_ARG naming an unknown codec, a malformed
 * item or a layer outside the model; the layout is unchanged on error. */
enum kvx_status kvx_kv_layout_set_codecs(struct kvx_kv_layout *l, enum kvx_kv_codec k,
                                         enum kvx_kv_codec v, const char *spec, int32_t group,
                                         int32_t residual, struct kvx_err *err);

/* True when the layer owns cache memory (every kind but NONE and SHARED). */
bool kvx_kv_layer_owns(const struct kvx_layer_cache *c);
/* Bytes of the K (resp. V) region of one head in one page. */
size_t kvx_kv_layer_k_head_bytes(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_v_head_bytes(const struct kvx_kv_layout *l, int32_t layer);
/* Bytes of one page of `layer` (0 for layers that own nothing). */
size_t kvx_kv_layer_page_bytes(const struct kvx_kv_layout *l, int32_t layer);
/* The codec formats of one head's K and V in this layer's pages. */
struct kvx_kv_fmt kvx_kv_layer_k_fmt(const struct kvx_kv_layout *l, int32_t layer);
struct kvx_kv_fmt kvx_kv_layer_v_fmt(const struct kvx_kv_layout *l, int32_t layer);
/* Per-sequence state of the codecs (e.g. kivi2's f16 residual): bytes of one head's K (V)
 * state block, rounded up to KVX_KV_PAGE_ALIGN, and of the whole layer
 * ([K head 0]...[K head n-1][V head 0]...[V head n-1]); 0 when the codecs keep none. */
size_t kvx_kv_layer_k_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_v_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
/* The model's own state (state_floats f32 values) follows the compressor state in the layer's
 * state block, rounded up to KVX_KV_PAGE_ALIGN; 0 bytes when the layer declares none. */
size_t kvx_kv_layer_model_state_offset(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_model_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
/* True when some layer keeps model state: such a sequence cannot be cut back to a shorter
 * length (kvx_kv_seq_min_truncate is its length) nor share prefix pages. */
bool kvx_kv_layout_has_model_state(const struct kvx_kv_layout *l);
/* COMPRESSED / HEAVY layers also keep, per sequence, after the codec state in the same block:
 * the ring of the last `window` raw tokens (K codec, window rounded up to 16 tokens) and the
 * compressor state in f32: HEAVY (ratio-1) pending tokens x (value + gate) x k_dim; COMPRESSED
 * (ratio-1) pending tokens x 4 (k_dim + v_dim) (two overlapping halves, values and gates, for
 * entry and indexer key) plus the overlap carried to the next block, ratio x 2 (k_dim + v_dim).
 * Offsets are from the start of the layer's state block; 0 bytes for other kinds. */
size_t kvx_kv_layer_window_state_offset(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_window_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_compressor_state_offset(const struct kvx_kv_layout *l, int32_t layer);
size_t kvx_kv_layer_compressor_state_bytes(const struct kvx_kv_layout *l, int32_t layer);
/* Entries a layer stores for n_tokens tokens: n_tokens, or n_tokens / ratio (COMPRESSED,
 * HEAVY); pages hold page_tokens entries. */
int64_t kvx_kv_layer_entries(const struct kvx_kv_layout *l, int32_t layer, int64_t n_tokens);
/* Byte offsets inside a page of the K and V regions of head h. */
size_t kvx_kv_layer_k_offset(const struct kvx_kv_layout *l, int32_t layer, int32_t h);
size_t kvx_kv_layer_v_offset(const struct kvx_kv_layout *l, int32_t layer, int32_t h);
/* Pages `layer` holds for a sequence of n_tokens tokens (window layers: only the pages that
 * can still hold visible tokens: those overlapping [max(0, n_tokens - window), n_tokens)). */
int64_t kvx_kv_layer_pages(const struct kvx_kv_layout *l, int32_t layer, int64_t n_tokens);
/* First key position visible to a query at position `pos`: max(0, pos - window + 1) for a
 * WINDOW layer (a SHARED layer answers for the layer it reads), 0 for every other kind. */
int64_t kvx_kv_layer_first_pos(const struct kvx_kv_layout *l, int32_t layer, int64_t pos);
/* The layer whose cache `layer` reads: shared_from for SHARED, `layer` itself otherwise. */
int32_t kvx_kv_layer_source(const struct kvx_kv_layout *l, int32_t layer);

/* Growth of the cache per extra token, all layers, K and V, at the declared codecs (the
 * asymptotic rate; window layers count 0): the sum over FULL and LATENT layers of page bytes
 * / page_tokens and over COMPRESSED and HEAVY layers of page bytes / (page_tokens x ratio),
 * rounded up (exact whenever regions need no alignment padding). */
size_t kvx_kv_layout_bytes_per_token(const struct kvx_kv_layout *l);
/* Bytes of codec state a non-empty sequence holds whatever its length (all layers). */
size_t kvx_kv_layout_state_bytes(const struct kvx_kv_layout *l);
/* Bytes a sequence of n_tokens tokens holds in the pool, whole pages and, when n_tokens > 0,
 * the codec state included. */
size_t kvx_kv_layout_seq_bytes(const struct kvx_kv_layout *l, int64_t n_tokens);
/* Pages of all layers for a sequence of n_tokens tokens. */
int64_t kvx_kv_layout_seq_pages(const struct kvx_kv_layout *l, int64_t n_tokens);

#endif
