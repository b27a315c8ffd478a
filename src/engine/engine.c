/* engine/engine: the public engine and session API — KV pool, worker threads, scratch, and
 * feeding tokens through the model in batches.
 *
 * kvx_session_feed is two-phase: it validates the tokens, checks the context limit and
 * reserves every KV page the whole request needs before running anything, so an error leaves
 * the session exactly as it was.
 *
 * Sharing: each session keeps its token history; with the prefix cache (kv/prefix) a feed first
 * attaches the cached blocks of that history, computes only the rest and then inserts the
 * blocks it completed.  kvx_session_fork shares every page (kv/pool copies on write).
 *
 * Eviction: with a policy (kv/evict.h) a feed runs chunk by chunk instead (reserve, forward,
 * evict), so that the cache never holds more than the layers' budgets plus one chunk; such
 * sessions compact their pages in place and take no part in sharing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn.h"
#include "engine/engine.h"
#include "engine/forward.h"
#include "kv/evict.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "kv/prefix.h"
#include "model/model.h"
#include "util/err.h"
#include "util/threadpool.h"

struct kvx_engine {
    const struct kvx_model *model;
    struct kvx_engine_cfg cfg;
    enum kvx_isa isa;
    struct kvx_kv_layout layout;
    struct kvx_kv_pool *pool;
    struct kvx_threadpool *tp;
    struct kvx_forward_scratch scratch;
    void *scratch_mem;
    /* per-step batch description */
    int64_t *pos;
    struct kvx_kv_seq **seq;
    uint8_t *want;
    struct kvx_session *sessions;   /* doubly linked list of live sessions */
    struct kvx_kv_prefix *prefix;   /* the prefix cache, NULL when off or unsupported */
    int64_t tokens_reused;          /* tokens attached from it instead of computed */
    /* eviction (NULL when off): per-step attention sums the policy reads */
    struct kvx_kv_evict *ev;
    uint8_t *acc_want;
    const struct kvx_attn_acc_seq **acc_seq;
    struct kvx_attn_acc acc;
};

struct kvx_session {
    struct kvx_engine *e;
    struct kvx_kv_seq *seq;
    struct kvx_session *prev, *next;
    int32_t *hist;                  /* the tokens of the sequence (kvx_kv_seq_len of them) */
    int64_t hist_cap;
    struct kvx_kv_evict_seq *ev;    /* eviction state, NULL when the engine does not evict */
};

struct kvx_engine_cfg kvx_engine_cfg_default(void)
{
    return (struct kvx_engine_cfg){
        .kv_budget_bytes = 0,
        .n_ctx = 0,
        .k_codec = KVX_KV_CODEC_F16,
        .v_codec = KVX_KV_CODEC_F16,
        .kv_layers = NULL,
        .kivi_group = 32,
        .kivi_residual = 128,
        .page_tokens = 256,
        .n_threads = 0,
        .n_batch = 512,
        .isa = -1,
        .prefix_cache = true,
        .evict = kvx_evict_cfg_default(),
    };
}

static enum kvx_status check_cfg(const struct kvx_model *m, struct kvx_engine_cfg *c,
                                 struct kvx_err *err)
{
    if (c->n_ctx == 0)
        c->n_ctx = m->hp.n_ctx_train;
    if (c->n_ctx < 1 || c->n_ctx > ((int64_t)1 << 30))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context length %lld is outside 1..2^30",
                           (long long)c->n_ctx);
    if (c->page_tokens < 16 || c->page_tokens % 16 || c->page_tokens > 65536)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "page size %d tokens is not a multiple of "
                           "16 in 16..65536", c->page_tokens);
    if (c->n_threads == 0)
        c->n_threads = kvx_cpu_count();
    if (c->n_threads < 1 || c->n_threads > 512)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "thread count %d is outside 1..512",
                           c->n_threads);
    if (c->n_batch < 1 || c->n_batch > 8192)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "batch size %d is outside 1..8192",
                           c->n_batch);
    if (c->isa >= KVX_ISA_COUNT || (c->isa >= 0 && !kvx_cpu_has_isa((enum kvx_isa)c->isa)))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "this CPU cannot run ISA %d", c->isa);
    if (!kvx_kv_codec_ops(c->k_codec, KVX_ISA_SCALAR) || !kvx_kv_codec_ops(c->v_codec, KVX_ISA_SCALAR))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "unknown KV codec");
    return KVX_OK;
}

/* The evictor and its per-step arrays, when a policy is configured. */
static enum kvx_status evict_create(struct kvx_engine *e, struct kvx_err *err)
{
    enum kvx_status st = kvx_kv_evict_create(&e->cfg.evict, &e->layout, e->cfg.n_ctx,
                                             e->cfg.n_batch, &e->ev, err);
    if (st != KVX_OK || !e->ev)
        return st;
    e->acc_want = calloc((size_t)e->cfg.n_batch, 1);
    e->acc_seq = calloc((size_t)e->cfg.n_batch, sizeof *e->acc_seq);
    if (!e->acc_want || !e->acc_seq)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    e->acc.want = e->acc_want;
    e->acc.seq = e->acc_seq;
    return KVX_OK;
}

/* One allocation for every scratch buffer of a step of n_batch tokens. */
static enum kvx_status alloc_scratch(struct kvx_engine *e, struct kvx_err *err)
{
    const struct kvx_hparams *hp = &e->model->hp;
    const int64_t B = e->cfg.n_batch, nth = e->cfg.n_threads;
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim, nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    /* One quantized input row of the widest matmul input; f32 (4 bytes per element) is the
     * largest vec-dot format, whatever mix of weight types the file has. */
    int64_t widest = hp->n_embd > nq ? hp->n_embd : nq;
    widest = hp->n_ff > widest ? hp->n_ff : widest;
    size_t xq_row = (size_t)widest * sizeof(float);
    xq_row = (xq_row + 63) & ~(size_t)63;
    const int64_t attn_floats = (int64_t)kvx_attn_workspace_size(
        &e->scratch.attn_ws, B, e->cfg.n_ctx, (int)nth, hp->n_head, hp->n_head_kv, hp->head_dim);
    const int64_t extra = e->model->arch->scratch_floats
                              ? e->model->arch->scratch_floats(e->model, B) : 0;
    const int64_t floats[] = {
        B * hp->n_embd, B * hp->n_embd, B * nq, B * nkv, B * nkv, B * nq, B * hp->n_ff,
        B * hp->n_ff, attn_floats, B * hp->n_rot, extra,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        total += ((size_t)floats[i] * sizeof(float) + 63) & ~(size_t)63;
    total += (size_t)B * xq_row;
    if (posix_memalign(&e->scratch_mem, 64, total) != 0)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory for %zu bytes of scratch", total);
    uint8_t *p = e->scratch_mem;
    float *attn_mem = NULL;
    float **slots[] = {&e->scratch.x, &e->scratch.xn, &e->scratch.q, &e->scratch.k,
                       &e->scratch.v, &e->scratch.attn, &e->scratch.gate, &e->scratch.up,
                       &attn_mem, &e->scratch.rope_cs, &e->scratch.extra};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        *slots[i] = (float *)p;
        p += ((size_t)floats[i] * sizeof(float) + 63) & ~(size_t)63;
    }
    if (!extra)
        e->scratch.extra = NULL;
    e->scratch.xq = p;
    e->scratch.xq_stride = xq_row;
    kvx_attn_workspace_bind(&e->scratch.attn_ws, attn_mem, B, hp->n_head, hp->n_head_kv,
                            hp->head_dim);
    e->pos = calloc((size_t)B, sizeof *e->pos);
    e->seq = calloc((size_t)B, sizeof *e->seq);
    e->want = calloc((size_t)B, 1);
    if (!e->pos || !e->seq || !e->want)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    return KVX_OK;
}

/* The default KV budget: one sequence of n_ctx tokens.  A feed reserves all its tokens before
 * it runs and a window layer drops pages only at the next reserve, so during a long feed a
 * window layer holds pages for every token of it: window layers are budgeted as full ones. */
static size_t default_budget(const struct kvx_kv_layout *l, int64_t n_ctx)
{
    size_t bytes = kvx_kv_layout_seq_bytes(l, n_ctx);
    const int64_t full = (n_ctx + l->page_tokens - 1) / l->page_tokens;
    for (int32_t i = 0; i < l->n_layer; i++)
        if (l->layers[i].kind == KVX_KV_KIND_WINDOW)
            bytes += (size_t)(full - kvx_kv_layer_pages(l, i, n_ctx)) *
                     kvx_kv_layer_page_bytes(l, i);
    return bytes;
}

enum kvx_status kvx_engine_create(const struct kvx_model *m, const struct kvx_engine_cfg *cfg,
                                  struct kvx_engine **out, struct kvx_err *err)
{
    *out = NULL;
    if (m->config_only)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "the model was opened from its "
                           "configuration only (no weights): it can be planned, not run");
    struct kvx_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    e->model = m;
    e->cfg = cfg ? *cfg : kvx_engine_cfg_default();
    enum kvx_status st = check_cfg(m, &e->cfg, err);
    if (st != KVX_OK)
        goto fail;
    e->isa = e->cfg.isa >= 0 ? (enum kvx_isa)e->cfg.isa : kvx_cpu_best_isa();
    if ((st = kvx_kv_layout_init(&e->layout, m->hp.n_layer, e->cfg.page_tokens, err)) != KVX_OK)
        goto fail;
    m->arch->declare_cache(m, &e->layout, e->cfg.k_codec, e->cfg.v_codec);
    if ((st = kvx_kv_layout_set_codecs(&e->layout, e->cfg.k_codec, e->cfg.v_codec,
                                       e->cfg.kv_layers, e->cfg.kivi_group,
                                       e->cfg.kivi_residual, err)) != KVX_OK ||
        (st = kvx_kv_layout_validate(&e->layout, err)) != KVX_OK)
        goto fail;
    for (int32_t i = 0; i < e->layout.n_layer; i++) {
        /* the window ring of a compressed layer is rewritten slot by slot, out of order */
        const struct kvx_layer_cache *lc = &e->layout.layers[i];
        if ((lc->kind == KVX_KV_KIND_COMPRESSED || lc->kind == KVX_KV_KIND_HEAVY) &&
            kvx_kv_layer_k_state_bytes(&e->layout, i) > 0) {
            st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "layer %d is a %s layer: its K codec "
                             "'%s' keeps per-sequence state, which its window ring cannot use",
                             (int)i, kvx_kv_kind_name(lc->kind), kvx_kv_codec_name(lc->k_codec));
            goto fail;
        }
    }
    if (e->cfg.kv_budget_bytes == 0)
        e->cfg.kv_budget_bytes = default_budget(&e->layout, e->cfg.n_ctx);
    struct kvx_kv_pool_cfg pc = {.layout = &e->layout, .budget_bytes = e->cfg.kv_budget_bytes,
                                 .isa = e->isa};
    if ((st = kvx_kv_pool_create(&pc, &e->pool, err)) != KVX_OK ||
        (st = kvx_threadpool_create(e->cfg.n_threads, &e->tp, err)) != KVX_OK ||
        (st = alloc_scratch(e, err)) != KVX_OK || (st = evict_create(e, err)) != KVX_OK)
        goto fail;
    /* evicting sessions compact pages in place: no prefix cache then */
    if (e->cfg.prefix_cache && !e->ev && kvx_kv_prefix_supported(&e->layout) &&
        (st = kvx_kv_prefix_create(e->pool, &e->prefix, err)) != KVX_OK)
        goto fail;
    *out = e;
    return KVX_OK;
fail:
    kvx_engine_destroy(e);
    return st;
}

void kvx_engine_destroy(struct kvx_engine *e)
{
    if (!e)
        return;
    kvx_threadpool_destroy(e->tp);
    kvx_kv_prefix_destroy(e->prefix);
    kvx_kv_pool_destroy(e->pool);
    kvx_kv_layout_free(&e->layout);
    free(e->scratch_mem);
    free(e->pos);
    free(e->seq);
    free(e->want);
    kvx_kv_evict_destroy(e->ev);
    free(e->acc_want);
    free(e->acc_seq);
    free(e);
}

/* The sharing fields of kvx_kv_stats. */
static void share_stats(const struct kvx_engine *e, struct kvx_kv_stats *out)
{
    out->bytes_shared = kvx_kv_pool_shared_bytes(e->pool);
    out->prefix_tokens_reused = e->tokens_reused;
    if (!e->prefix)
        return;
    struct kvx_kv_prefix_stats ps;
    kvx_kv_prefix_get_stats(e->prefix, &ps);
    out->prefix_blocks = ps.n_blocks;
    out->prefix_bytes = ps.bytes;
    out->prefix_bytes_idle = ps.bytes_idle;
    out->prefix_blocks_evicted = ps.blocks_evicted;
}

static void evict_stats(const struct kvx_engine *e, struct kvx_kv_stats *out)
{
    out->evict_policy = (int32_t)e->cfg.evict.policy;
    for (const struct kvx_session *s = e->sessions; s; s = s->next) {
        for (int32_t l = 0; l < e->layout.n_layer; l++)
            if (e->layout.layers[l].kind == KVX_KV_KIND_FULL)
                out->layer_tokens += kvx_kv_seq_slots(s->seq, l);
        out->layer_tokens_evicted += kvx_kv_evict_seq_evicted(s->ev);
    }
}

void kvx_engine_kv_stats(const struct kvx_engine *e, struct kvx_kv_stats *out)
{
    struct kvx_kv_pool_stats ps;
    kvx_kv_pool_get_stats(e->pool, &ps);
    memset(out, 0, sizeof *out);
    out->budget_bytes = ps.budget_bytes;
    out->bytes_used = ps.bytes_used;
    out->bytes_per_token = kvx_kv_layout_bytes_per_token(&e->layout);
    out->pages_used = ps.pages_used;
    out->page_tokens = e->layout.page_tokens;
    size_t page0 = 0;
    for (int32_t l = 0; l < e->layout.n_layer; l++) {
        if (kvx_kv_layer_owns(&e->layout.layers[l])) {
            out->n_layer_caches++;
            if (!page0)
                page0 = kvx_kv_layer_page_bytes(&e->layout, l);
        }
    }
    out->pages_free_in_budget = page0 ? (int64_t)((ps.budget_bytes - ps.bytes_used) / page0) : 0;
    for (const struct kvx_session *s = e->sessions; s; s = s->next)
        out->tokens_cached += kvx_kv_seq_len(s->seq);
    share_stats(e, out);
    if (e->ev)
        evict_stats(e, out);
}

const struct kvx_kv_layout *kvx_engine_layout(const struct kvx_engine *e) { return &e->layout; }
struct kvx_kv_pool *kvx_engine_pool(const struct kvx_engine *e) { return e->pool; }
struct kvx_kv_seq *kvx_engine_session_seq(const struct kvx_session *s) { return s->seq; }

/* The eviction lines of the report: policy and budgets, stored tokens per layer. */
static size_t evict_report(const struct kvx_engine *e, const struct kvx_kv_stats *st, char *buf,
                           size_t n, size_t cap)
{
#define OUT(...) n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__)
    const struct kvx_evict_cfg *c = kvx_kv_evict_get_cfg(e->ev);
    OUT("eviction: %s, budget ", kvx_evict_policy_name(c->policy));
    if (c->budget > 0)
        OUT("%lld tokens per layer", (long long)c->budget);
    else
        OUT("%.3g of the tokens seen per layer", c->ratio);
    OUT(" (%s", c->schedule == KVX_EVICT_PYRAMID ? "pyramid" : "uniform");
    if (c->schedule == KVX_EVICT_PYRAMID)
        OUT(", beta %d", (int)c->pyramid_beta);
    OUT("), sinks %d, window ", (int)c->sinks);
    if (c->window >= 0)
        OUT("%d", (int)c->window);
    else
        OUT("%s", c->policy == KVX_EVICT_H2O      ? "half the budget"
                  : c->policy == KVX_EVICT_SNAPKV ? "the observation window"
                  : c->policy == KVX_EVICT_SINKS  ? "the rest of the budget"
                                                  : "none");
    if (c->policy == KVX_EVICT_SNAPKV)
        OUT(", observation window %d, %s pool %d", (int)c->obs_window,
            c->pooling == KVX_EVICT_POOL_AVG ? "avg" : "max", (int)c->pool_kernel);
    if (c->slack > 0)
        OUT(", slack %d", (int)c->slack);
    OUT("\nstored tokens per layer (all sessions):");
    for (int32_t l = 0; l < e->layout.n_layer; l++) {
        int64_t t = 0;
        for (const struct kvx_session *s = e->sessions; s; s = s->next)
            t += kvx_kv_seq_slots(s->seq, l);
        OUT(" %d:%lld", (int)l, (long long)t);
    }
    OUT("\ntokens evicted: %lld over all layers (%lld stored)\n",
        (long long)st->layer_tokens_evicted, (long long)st->layer_tokens);
#undef OUT
    return n;
}

char *kvx_engine_kv_report(const struct kvx_engine *e)
{
    const struct kvx_kv_layout *l = &e->layout;
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(e, &st);
    size_t cap = 512 + (size_t)l->n_layer * 160 + (e->ev ? 512 + (size_t)l->n_layer * 24 : 0);
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__)
    OUT("KV cache: %d layers, page %d tokens, budget %zu bytes\n", l->n_layer, l->page_tokens,
        st.budget_bytes);
    OUT("%-6s %-7s %-5s %-5s %-9s %-9s %12s %12s\n", "layer", "kind", "heads", "dim", "K codec",
        "V codec", "bytes/token", "page bytes");
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        const size_t page = kvx_kv_layer_page_bytes(l, i);
        if (c->kind == KVX_KV_KIND_SHARED) {   /* owns nothing: name the layer it reads */
            OUT("%-6d %-7s <- %-30d %12d %12d\n", i, kvx_kv_kind_name(c->kind),
                (int)kvx_kv_layer_source(l, i), 0, 0);
            continue;
        }
        OUT("%-6d %-7s %-5d %-5d %-9s %-9s %12zu %12zu\n", i, kvx_kv_kind_name(c->kind),
            c->n_kv_heads, c->k_dim, kvx_kv_codec_name(c->k_codec),
            c->kind == KVX_KV_KIND_LATENT ? "(K)" : kvx_kv_codec_name(c->v_codec),
            page / (size_t)l->page_tokens, page);
    }
    OUT("total: %zu bytes/token; %lld tokens cached in %lld pages = %zu bytes (%.2f MiB of "
        "%.2f MiB budget)\n", st.bytes_per_token, (long long)st.tokens_cached,
        (long long)st.pages_used, st.bytes_used, (double)st.bytes_used / 1048576.0,
        (double)st.budget_bytes / 1048576.0);
    size_t model_state = 0;
    for (int32_t i = 0; i < l->n_layer; i++)
        model_state += kvx_kv_layer_model_state_bytes(l, i);
    if (kvx_kv_layout_state_bytes(l))
        OUT("state per sequence, whatever its length: %zu bytes (%zu of them the model's own)\n",
            kvx_kv_layout_state_bytes(l), model_state);
    if (e->prefix)
        OUT("prefix cache: %lld blocks, %zu bytes (%zu used by no session); %lld tokens reused, "
            "%zu bytes shared\n", (long long)st.prefix_blocks, st.prefix_bytes,
            st.prefix_bytes_idle, (long long)st.prefix_tokens_reused, st.bytes_shared);
    if (e->ev)
        n = evict_report(e, &st, buf, n, cap);
#undef OUT
    if (n >= cap)
        buf[cap - 1] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions */

enum kvx_status kvx_session_create(struct kvx_engine *e, struct kvx_session **out,
                                   struct kvx_err *err)
{
    *out = NULL;
    struct kvx_session *s = calloc(1, sizeof *s);
    if (!s)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    enum kvx_status st = kvx_kv_seq_create(e->pool, &s->seq, err);
    if (st != KVX_OK) {
        free(s);
        return st;
    }
    if (e->ev && (st = kvx_kv_evict_seq_create(e->ev, &s->ev, err)) != KVX_OK) {
        kvx_kv_seq_destroy(s->seq);
        free(s);
        return st;
    }
    s->e = e;
    s->next = e->sessions;
    if (e->sessions)
        e->sessions->prev = s;
    e->sessions = s;
    *out = s;
    return KVX_OK;
}

void kvx_session_destroy(struct kvx_session *s)
{
    if (!s)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->e->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    kvx_kv_seq_destroy(s->seq);
    free(s->hist);
    kvx_kv_evict_seq_destroy(s->ev);
    free(s);
}

int64_t kvx_session_n_past(const struct kvx_session *s) { return kvx_kv_seq_len(s->seq); }

/* Room for n tokens of history (the tokens themselves are stored by session_reserve). */
static enum kvx_status hist_grow(struct kvx_session *s, int64_t n, struct kvx_err *err)
{
    if (n <= s->hist_cap)
        return KVX_OK;
    int64_t cap = s->hist_cap ? s->hist_cap : 256;
    while (cap < n)
        cap *= 2;
    int32_t *h = realloc(s->hist, (size_t)cap * sizeof *h);
    if (!h)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory for a history of %lld tokens",
                           (long long)n);
    s->hist = h;
    s->hist_cap = cap;
    return KVX_OK;
}

enum kvx_status kvx_session_fork(struct kvx_session *src, struct kvx_session **out,
                                 struct kvx_err *err)
{
    *out = NULL;
    struct kvx_engine *e = src->e;
    if (e->ev) /* evicting sessions compact their pages in place: nothing may share them */
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "fork: the engine evicts (--evict %s); "
                           "evicting sessions cannot share pages",
                           kvx_evict_policy_name(e->cfg.evict.policy));
    struct kvx_session *s = calloc(1, sizeof *s);
    if (!s)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    s->e = e;
    const int64_t len = kvx_kv_seq_len(src->seq);
    enum kvx_status st = hist_grow(s, len, err);
    if (st == KVX_OK)
        st = kvx_kv_seq_fork(src->seq, &s->seq, err);
    if (st != KVX_OK) {
        free(s->hist);
        free(s);
        return st;
    }
    if (len)
        memcpy(s->hist, src->hist, (size_t)len * sizeof *s->hist);
    s->next = e->sessions;
    if (e->sessions)
        e->sessions->prev = s;
    e->sessions = s;
    *out = s;
    return KVX_OK;
}

enum kvx_status kvx_session_truncate(struct kvx_session *s, int64_t n_keep, struct kvx_err *err)
{
    if (n_keep < 0 || n_keep > kvx_kv_seq_len(s->seq))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "cannot keep %lld of %lld tokens",
                           (long long)n_keep, (long long)kvx_kv_seq_len(s->seq));
    kvx_kv_seq_truncate(s->seq, n_keep);
    if (s->ev)
        kvx_kv_evict_seq_sync(s->ev, s->seq);
    return KVX_OK;
}

static enum kvx_status check_tokens(const struct kvx_session *s, const int32_t *tokens, int64_t n,
                                    struct kvx_err *err)
{
    const struct kvx_engine *e = s->e;
    const int64_t n_past = kvx_kv_seq_len(s->seq);
    if (n < 0 || (n > 0 && !tokens))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "no tokens given");
    if (n > e->cfg.n_ctx - n_past)
        return kvx_err_set(err, KVX_ERR_CONTEXT, "%lld tokens after %lld already in the session "
                           "exceed the context of %lld tokens", (long long)n, (long long)n_past,
                           (long long)e->cfg.n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->model->hp.n_vocab)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "token %lld has id %d, outside the "
                               "vocabulary of %d", (long long)i, tokens[i], e->model->hp.n_vocab);
    return KVX_OK;
}

/* Reserve the pages of n more tokens.  With the prefix cache, first attach what it holds of
 * the history beyond the session's length: *skip tokens that need no computing (never the
 * last one, whose logits are asked for, and none when every row's logits are).  When the rest
 * then does not fit, the attach is undone and the request tried without it. */
static enum kvx_status session_reserve(struct kvx_session *s, const int32_t *tokens, int64_t n,
                                       bool all_logits, int64_t *skip, struct kvx_err *err)
{
    const int64_t n_past = kvx_kv_seq_len(s->seq);
    memcpy(s->hist + n_past, tokens, (size_t)n * sizeof *tokens);
    int64_t cached = n_past;
    if (s->e->prefix && !all_logits && n > 1 &&
        kvx_kv_prefix_attach(s->e->prefix, s->seq, s->hist, n_past + n - 1, &cached, NULL) != KVX_OK)
        cached = n_past; /* the cache is an optimization: compute everything */
    enum kvx_status st = kvx_kv_seq_reserve(s->seq, n_past + n, err);
    if (st != KVX_OK && cached > n_past) {
        kvx_kv_seq_truncate(s->seq, n_past);
        cached = n_past;
        st = kvx_kv_seq_reserve(s->seq, n_past + n, err);
    }
    *skip = st == KVX_OK ? cached - n_past : 0;
    s->e->tokens_reused += *skip;
    return st;
}

/* After a feed from n_past: put the blocks it completed into the prefix cache (best effort:
 * running out of memory there only means less sharing). */
static void session_share_blocks(struct kvx_session *s, int64_t n_past)
{
    const int64_t pt = s->e->layout.page_tokens;
    if (s->e->prefix && kvx_kv_seq_len(s->seq) / pt > n_past / pt)
        (void)kvx_kv_prefix_insert(s->e->prefix, s->seq, s->hist, NULL);
}

/* One forward step over the nb tokens whose positions, sequences and logit wishes are in
 * e->pos, e->seq and e->want; acc: the eviction policy's probability sums, or NULL. */
static void run_step(struct kvx_engine *e, const int32_t *tokens, int64_t nb, float *logits,
                     const struct kvx_attn_acc *acc)
{
    struct kvx_forward f = {
        .n_tok = nb,
        .tokens = tokens,
        .pos = e->pos,
        .seq = e->seq,
        .want_logits = e->want,
        .logits = logits,
        .acc = acc,
        .tp = e->tp,
        .isa = e->isa,
        .s = &e->scratch,
    };
    e->model->arch->forward(e->model, &f);
}

/* kvx_session_feed with eviction: reserve, run and evict chunk by chunk, so that the cache
 * never holds more than the budgets plus one chunk.  The last chunk holds at least what the
 * policy needs to score a prompt's end (snapkv's observation window). */
static enum kvx_status feed_evicting(struct kvx_session *s, const int32_t *tokens, int64_t n,
                                     bool all_logits, float *logits, struct kvx_err *err)
{
    struct kvx_engine *e = s->e;
    const int64_t n_past = kvx_kv_seq_len(s->seq), n_vocab = e->model->hp.n_vocab;
    const int64_t min_last = kvx_kv_evict_last_chunk_min(e->ev);
    for (int64_t done = 0; done < n;) {
        int64_t nb = n - done < e->cfg.n_batch ? n - done : e->cfg.n_batch;
        if (n - done - nb > 0 && n - done - nb < min_last)
            nb = n - done - min_last;
        const struct kvx_kv_evict_step step = {.n_tok = nb, .feed_len = n, .last_chunk = done + nb == n};
        const struct kvx_attn_acc_seq *acc = NULL;
        enum kvx_status st = kvx_kv_seq_reserve(s->seq, n_past + done + nb, err);
        if (st == KVX_OK)
            st = kvx_kv_evict_step_begin(s->ev, s->seq, &step, e->acc_want, &acc, err);
        if (st != KVX_OK) {
            if (done > 0)
                kvx_err_prefix(err, "after %lld of %lld tokens (kept)", (long long)done, (long long)n);
            return st;
        }
        for (int64_t t = 0; t < nb; t++) {
            e->pos[t] = n_past + done + t;
            e->seq[t] = s->seq;
            e->want[t] = logits && (all_logits || done + t == n - 1);
            e->acc_seq[t] = acc;
        }
        run_step(e, tokens + done, nb, all_logits ? logits + done * n_vocab : logits,
                 acc ? &e->acc : NULL);
        kvx_kv_seq_set_len(s->seq, n_past + done + nb);
        done += nb;
        if ((st = kvx_kv_evict_step_end(s->ev, s->seq, &step, err)) != KVX_OK) {
            kvx_err_prefix(err, "after %lld of %lld tokens (kept)", (long long)done, (long long)n);
            return st;
        }
    }
    return KVX_OK;
}

enum kvx_status kvx_session_feed(struct kvx_session *s, const int32_t *tokens, int64_t n,
                                 bool all_logits, float *logits, struct kvx_err *err)
{
    struct kvx_engine *e = s->e;
    enum kvx_status st = check_tokens(s, tokens, n, err);
    if (st != KVX_OK || n == 0)
        return st;
    if (e->ev)
        return feed_evicting(s, tokens, n, all_logits, logits, err);
    const int64_t n_past = kvx_kv_seq_len(s->seq);
    int64_t skip = 0;
    if ((st = hist_grow(s, n_past + n, err)) != KVX_OK ||
        (st = session_reserve(s, tokens, n, all_logits, &skip, err)) != KVX_OK)
        return st;
    const int64_t n_vocab = e->model->hp.n_vocab;
    for (int64_t done = skip; done < n; done += e->cfg.n_batch) {
        const int64_t nb = n - done < e->cfg.n_batch ? n - done : e->cfg.n_batch;
        for (int64_t t = 0; t < nb; t++) {
            e->pos[t] = n_past + done + t;
            e->seq[t] = s->seq;
            e->want[t] = logits && (all_logits || done + t == n - 1);
        }
        run_step(e, tokens + done, nb, all_logits ? logits + done * n_vocab : logits, NULL);
        kvx_kv_seq_set_len(s->seq, n_past + done + nb);
    }
    session_share_blocks(s, n_past);
    return KVX_OK;
}

enum kvx_status kvx_engine_decode(struct kvx_engine *e, struct kvx_session *const *sessions,
                                  const int32_t *tokens, int64_t n, float *logits,
                                  struct kvx_err *err)
{
    if (n < 1 || !sessions || !tokens)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "decode: no sessions given");
    if (e->ev)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "decode: the engine evicts (--evict %s): "
                           "feed its sessions one at a time", kvx_evict_policy_name(e->cfg.evict.policy));
    enum kvx_status st = KVX_OK;
    for (int64_t i = 0; i < n && st == KVX_OK; i++) {
        struct kvx_session *s = sessions[i];
        if (!s || s->e != e)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "decode: session %lld does not belong "
                               "to this engine", (long long)i);
        for (int64_t j = 0; j < i; j++)
            if (sessions[j] == s)
                return kvx_err_set(err, KVX_ERR_INVALID_ARG, "decode: session %lld is also "
                                   "session %lld (one token per session and step)",
                                   (long long)i, (long long)j);
        if ((st = check_tokens(s, tokens + i, 1, err)) == KVX_OK)
            st = hist_grow(s, kvx_kv_seq_len(s->seq) + 1, err);
        if (st != KVX_OK)
            kvx_err_prefix(err, "decode: session %lld", (long long)i);
    }
    /* all or nothing: reserve one position in every sequence, or release what was reserved */
    int64_t n_ok = 0;
    for (; n_ok < n && st == KVX_OK; n_ok++)
        if ((st = kvx_kv_seq_reserve(sessions[n_ok]->seq, kvx_kv_seq_len(sessions[n_ok]->seq) + 1,
                                     err)) != KVX_OK)
            kvx_err_prefix(err, "decode: session %lld of %lld", (long long)n_ok, (long long)n);
    if (st != KVX_OK) {
        for (int64_t i = 0; i + 1 < n_ok; i++)
            kvx_kv_seq_truncate(sessions[i]->seq, kvx_kv_seq_len(sessions[i]->seq));
        return st;
    }
    const int64_t n_vocab = e->model->hp.n_vocab;
    for (int64_t done = 0; done < n; done += e->cfg.n_batch) {
        const int64_t nb = n - done < e->cfg.n_batch ? n - done : e->cfg.n_batch;
        for (int64_t t = 0; t < nb; t++) {
            struct kvx_session *s = sessions[done + t];
            e->pos[t] = kvx_kv_seq_len(s->seq);
            e->seq[t] = s->seq;
            e->want[t] = logits != NULL;
            s->hist[e->pos[t]] = tokens[done + t];
        }
        run_step(e, tokens + done, nb, logits ? logits + done * n_vocab : NULL, NULL);
        for (int64_t t = 0; t < nb; t++) {
            kvx_kv_seq_set_len(e->seq[t], e->pos[t] + 1);
            session_share_blocks(sessions[done + t], e->pos[t]);
        }
    }
    return KVX_OK;
}


bool kvx_session_evicts(const struct kvx_session *s) { return s->ev != NULL; }
