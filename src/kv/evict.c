/* kv/evict: the eviction driver shared by every policy — configuration and budgets, the
 * per-sequence rows of positions and scores, the selection (sinks, window, top priorities),
 * and the compaction of the pool and the rows after each step.  The policies themselves
 * (evict_<name>.c) only say which attention they read and how it ranks slots. */
#include "kv/evict.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

struct kvx_kv_evict {
    struct kvx_evict_cfg cfg;          /* sinks resolved; window -1 = the policy's default */
    const struct kvx_kv_evict_ops *ops;
    const struct kvx_kv_layout *layout;
    int32_t n_heads;                   /* most KV heads of a FULL layer: rows per layer */
    int32_t n_full;                    /* FULL layers */
    int32_t *full_rank;                /* per layer: index among FULL layers, or -1 */
    int64_t *by_rank;                  /* pyramid budgets per FULL layer */
    /* step_end's scratch, grown on demand */
    int64_t *budgets;                  /* per layer */
    int64_t *keep;                     /* n_heads x scratch_cap */
    float *prio;                       /* n_heads x scratch_cap */
    void *sel;                         /* kvx_kv_evict_select_scratch(scratch_cap) */
    int64_t scratch_cap;
};

struct kvx_kv_evict_seq {
    struct kvx_kv_evict *ev;
    int64_t cap;                       /* slots per row */
    int32_t *pos;                      /* row (layer, head) at ((layer * n_heads) + head) * cap */
    float *score;
    float **rows;                      /* per layer: its score rows, NULL unless FULL */
    int64_t *n;                        /* per layer: slots held */
    int64_t evicted;
    bool step_reads;                   /* the current step reads attention */
    struct kvx_attn_acc_seq acc;
};

static const struct kvx_kv_evict_ops *const policies[KVX_EVICT_COUNT] = {
    [KVX_EVICT_SINKS] = &kvx_kv_evict_sinks,
    [KVX_EVICT_H2O] = &kvx_kv_evict_h2o,
    [KVX_EVICT_SNAPKV] = &kvx_kv_evict_snapkv,
    [KVX_EVICT_TOVA] = &kvx_kv_evict_tova,
};

const struct kvx_kv_evict_ops *kvx_kv_evict_ops(enum kvx_evict_policy p)
{
    return (int)p > 0 && p < KVX_EVICT_COUNT ? policies[p] : NULL;
}

const char *kvx_evict_policy_name(enum kvx_evict_policy p)
{
    if (p == KVX_EVICT_NONE)
        return "none";
    const struct kvx_kv_evict_ops *o = kvx_kv_evict_ops(p);
    return o ? o->name : "unknown";
}

bool kvx_evict_policy_parse(const char *s, enum kvx_evict_policy *out)
{
    for (int p = 0; s && p < KVX_EVICT_COUNT; p++)
        if (strcmp(s, kvx_evict_policy_name((enum kvx_evict_policy)p)) == 0) {
            *out = (enum kvx_evict_policy)p;
            return true;
        }
    return false;
}

struct kvx_evict_cfg kvx_evict_cfg_default(void)
{
    return (struct kvx_evict_cfg){
        .policy = KVX_EVICT_NONE,
        .budget = 0,
        .ratio = 0,
        .schedule = KVX_EVICT_UNIFORM,
        .pyramid_beta = 20,
        .sinks = -1,
        .window = -1,
        .obs_window = 32,
        .pool_kernel = 7,
        .pooling = KVX_EVICT_POOL_MAX,
        .slack = 0,
    };
}

/* ---------------------------------------------------------------------------------------------
 * Configuration and budgets */

/* The mean budget once n_seen tokens were seen (at least 1). */
static int64_t mean_budget(const struct kvx_kv_evict *ev, int64_t n_seen)
{
    if (ev->cfg.budget > 0)
        return ev->cfg.budget;
    int64_t b = (int64_t)ceil(ev->cfg.ratio * (double)n_seen - 1e-9);
    return b < 1 ? 1 : b;
}

static int64_t window_for(const struct kvx_kv_evict *ev, int64_t mean)
{
    return ev->cfg.window >= 0 ? ev->cfg.window : ev->ops->window(&ev->cfg, mean);
}

void kvx_kv_evict_protected(const struct kvx_kv_evict *ev, int64_t mean, int64_t layer_budget,
                            int64_t *sinks, int64_t *window)
{
    *sinks = ev->cfg.sinks < layer_budget ? ev->cfg.sinks : layer_budget;
    const int64_t w = window_for(ev, mean);
    *window = w < layer_budget - *sinks ? w : layer_budget - *sinks;
}

/* PyramidKV over the FULL layers (rank r of L): every layer gets the protected part f, and
 * the scored part P = mean - f is an arithmetic sequence from hi = 2P - lo at r = 0 down to
 * lo = P / beta at r = L - 1, rounded down, the shortfall given one token each to the lowest
 * layers so that the sum is exactly L * mean and the sequence stays non-increasing. */
static void pyramid(const struct kvx_kv_evict *ev, int64_t mean, int64_t *by_rank)
{
    const int64_t L = ev->n_full;
    int64_t s, w;
    kvx_kv_evict_protected(ev, mean, mean, &s, &w);
    const int64_t f = s + w, P = mean - f;
    const int64_t lo = P / ev->cfg.pyramid_beta, hi = 2 * P - lo;
    int64_t sum = 0;
    for (int64_t r = 0; r < L; r++) {
        by_rank[r] = L > 1 ? hi - ((hi - lo) * r + (L - 2)) / (L - 1) : P;
        sum += by_rank[r];
    }
    for (int64_t r = 0; r < L && sum < L * P; r++, sum++)
        by_rank[r]++;
    for (int64_t r = 0; r < L; r++)
        by_rank[r] += f;
}

void kvx_kv_evict_budgets(const struct kvx_kv_evict *ev, int64_t n_seen, int64_t *out)
{
    const struct kvx_kv_layout *l = ev->layout;
    const int64_t mean = mean_budget(ev, n_seen);
    if (ev->cfg.schedule == KVX_EVICT_PYRAMID && ev->n_full > 0) {
        pyramid(ev, mean, ev->by_rank);
        for (int32_t i = 0; i < l->n_layer; i++)
            out[i] = ev->full_rank[i] >= 0 ? ev->by_rank[ev->full_rank[i]] : -1;
        return;
    }
    for (int32_t i = 0; i < l->n_layer; i++)
        out[i] = ev->full_rank[i] >= 0 ? mean : -1;
}

int64_t kvx_kv_evict_last_chunk_min(const struct kvx_kv_evict *ev)
{
    return ev && ev->ops == &kvx_kv_evict_snapkv ? ev->cfg.obs_window : 0;
}

const struct kvx_evict_cfg *kvx_kv_evict_get_cfg(const struct kvx_kv_evict *ev) { return &ev->cfg; }

static enum kvx_status check_cfg(const struct kvx_evict_cfg *c, int64_t n_ctx, int32_t n_batch,
                                 struct kvx_err *err)
{
    const char *name = kvx_evict_policy_name(c->policy);
    if (!kvx_kv_evict_ops(c->policy))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "unknown eviction policy %d (none, sinks, "
                           "h2o, snapkv, tova)", (int)c->policy);
    if (c->budget < 0 || c->budget > n_ctx)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction budget of %lld tokens is outside "
                           "1..%lld (the context)", (long long)c->budget, (long long)n_ctx);
    if (c->budget == 0 && !(c->ratio > 0 && c->ratio <= 1))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction (%s) needs a budget: at least 1 "
                           "token per layer, or a ratio of the tokens seen in (0, 1] (got %g)",
                           name, c->ratio);
    if ((int)c->schedule < 0 || c->schedule >= KVX_EVICT_SCHEDULE_COUNT)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "unknown eviction schedule %d (uniform, "
                           "pyramid)", (int)c->schedule);
    if (c->pyramid_beta < 1 || c->pyramid_beta > 1000000)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "pyramid beta %d is outside 1..1000000",
                           (int)c->pyramid_beta);
    if (c->slack < 0 || c->slack > n_ctx)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction slack %d is outside 0..%lld",
                           (int)c->slack, (long long)n_ctx);
    if (c->sinks < -1 || c->sinks > n_ctx || c->window < -1 || c->window > n_ctx)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction sinks %d / window %d outside "
                           "0..%lld (-1: default)", (int)c->sinks, (int)c->window, (long long)n_ctx);
    if (c->policy == KVX_EVICT_SNAPKV) {
        if (c->obs_window < 1 || c->obs_window > n_batch)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "snapkv observation window %d is outside "
                               "1..%d (the batch size)", (int)c->obs_window, (int)n_batch);
        if (c->pool_kernel < 1 || c->pool_kernel % 2 == 0 || c->pool_kernel > 255)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "snapkv pooling kernel %d is not odd in "
                               "1..255", (int)c->pool_kernel);
        if (c->pooling != KVX_EVICT_POOL_MAX && c->pooling != KVX_EVICT_POOL_AVG)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "unknown snapkv pooling %d (max, avg)",
                               (int)c->pooling);
    }
    return KVX_OK;
}

void kvx_kv_evict_destroy(struct kvx_kv_evict *ev)
{
    if (!ev)
        return;
    free(ev->full_rank);
    free(ev->by_rank);
    free(ev->budgets);
    free(ev->keep);
    free(ev->prio);
    free(ev->sel);
    free(ev);
}

enum kvx_status kvx_kv_evict_create(const struct kvx_evict_cfg *cfg,
                                    const struct kvx_kv_layout *layout, int64_t n_ctx,
                                    int32_t n_batch, struct kvx_kv_evict **out,
                                    struct kvx_err *err)
{
    *out = NULL;
    if (!cfg || cfg->policy == KVX_EVICT_NONE)
        return KVX_OK;
    enum kvx_status st = check_cfg(cfg, n_ctx, n_batch, err);
    if (st != KVX_OK)
        return st;
    struct kvx_kv_evict *ev = calloc(1, sizeof *ev);
    if (!ev)
        return kvx_err_set(err, KVX_ERR_NOMEM, "eviction: no memory");
    ev->cfg = *cfg;
    ev->ops = kvx_kv_evict_ops(cfg->policy);
    ev->layout = layout;
    if (ev->cfg.sinks < 0)
        ev->cfg.sinks = ev->ops->sinks;
    ev->full_rank = malloc((size_t)layout->n_layer * sizeof *ev->full_rank);
    ev->budgets = malloc((size_t)layout->n_layer * sizeof *ev->budgets);
    ev->by_rank = malloc((size_t)layout->n_layer * sizeof *ev->by_rank);
    if (!ev->full_rank || !ev->budgets || !ev->by_rank) {
        kvx_kv_evict_destroy(ev);
        return kvx_err_set(err, KVX_ERR_NOMEM, "eviction: no memory");
    }
    for (int32_t i = 0; i < layout->n_layer; i++) {
        const struct kvx_layer_cache *c = &layout->layers[i];
        ev->full_rank[i] = c->kind == KVX_KV_KIND_FULL ? ev->n_full++ : -1;
        if (c->kind == KVX_KV_KIND_FULL && c->n_kv_heads > ev->n_heads)
            ev->n_heads = c->n_kv_heads;
    }
    if (cfg->budget > 0 && ev->cfg.sinks + window_for(ev, cfg->budget) > cfg->budget) {
        st = kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction: sinks %d + window %lld exceed the "
                         "budget of %lld tokens", (int)ev->cfg.sinks,
                         (long long)window_for(ev, cfg->budget), (long long)cfg->budget);
        kvx_kv_evict_destroy(ev);
        return st;
    }
    *out = ev;
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Selection */

struct cand {
    float prio;
    int32_t pos;
    int64_t slot;
};

/* The total order of candidates: higher priority first, then the newer token. */
static bool better(const struct cand *a, const struct cand *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->pos > b->pos);
}

static void swap_cand(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange c[0, n) so that its k best come first (in any order): quickselect with a
 * median-of-three pivot; positions are distinct, so the order is total.  O(n) expected. */
static void select_best(struct cand *c, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n;
    while (hi - lo > 1 && k > lo && k < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (better(&c[mid], &c[lo]))
            swap_cand(&c[mid], &c[lo]);
        if (better(&c[hi - 1], &c[lo]))
            swap_cand(&c[hi - 1], &c[lo]);
        if (better(&c[hi - 1], &c[mid]))
            swap_cand(&c[hi - 1], &c[mid]);
        swap_cand(&c[mid], &c[hi - 1]); /* the median, as pivot, at the end */
        const struct cand pv = c[hi - 1];
        int64_t i = lo;
        for (int64_t j = lo; j < hi - 1; j++)
            if (better(&c[j], &pv))
                swap_cand(&c[i++], &c[j]);
        swap_cand(&c[i], &c[hi - 1]); /* [lo, i) better than the pivot, now at i */
        if (i == k)
            return;
        if (i < k)
            lo = i + 1;
        else
            hi = i;
    }
}

size_t kvx_kv_evict_select_scratch(int64_t n)
{
    return (size_t)n * (sizeof(struct cand) + 1);
}

void kvx_kv_evict_select(const int32_t *pos, const float *prio, int64_t n, int64_t budget,
                         int64_t sinks, int64_t window, int64_t *keep, void *scratch)
{
    if (n <= budget) {
        for (int64_t j = 0; j < n; j++)
            keep[j] = j;
        return;
    }
    struct cand *c = scratch;
    uint8_t *kept = (uint8_t *)(c + n);
    memset(kept, 0, (size_t)n);
    int64_t k = 0;
    for (int64_t j = 0; j < n && pos[j] < sinks && k < budget; j++, k++)
        kept[j] = 1;
    for (int64_t j = n - 1, w = 0; j >= 0 && w < window && k < budget; j--)
        if (!kept[j]) {
            kept[j] = 1;
            k++;
            w++;
        }
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++)
        if (!kept[j])
            c[m++] = (struct cand){prio ? prio[j] : 0.0f, pos[j], j};
    select_best(c, m, budget - k);
    for (int64_t i = 0; i < budget - k; i++)
        kept[c[i].slot] = 1;
    for (int64_t j = 0, o = 0; j < n; j++)
        if (kept[j])
            keep[o++] = j;
}

/* ---------------------------------------------------------------------------------------------
 * Per-sequence rows */

enum kvx_status kvx_kv_evict_seq_create(struct kvx_kv_evict *ev, struct kvx_kv_evict_seq **out,
                                        struct kvx_err *err)
{
    *out = NULL;
    struct kvx_kv_evict_seq *es = calloc(1, sizeof *es);
    const size_t nl = (size_t)ev->layout->n_layer;
    if (es) {
        es->n = calloc(nl, sizeof *es->n);
        es->rows = calloc(nl, sizeof *es->rows);
    }
    if (!es || !es->n || !es->rows) {
        kvx_kv_evict_seq_destroy(es);
        return kvx_err_set(err, KVX_ERR_NOMEM, "eviction: no memory for a sequence");
    }
    es->ev = ev;
    es->acc.layer = es->rows;
    *out = es;
    return KVX_OK;
}

void kvx_kv_evict_seq_destroy(struct kvx_kv_evict_seq *es)
{
    if (!es)
        return;
    free(es->pos);
    free(es->score);
    free(es->rows);
    free(es->n);
    free(es);
}

static size_t row_off(const struct kvx_kv_evict_seq *es, int32_t layer, int32_t head)
{
    return ((size_t)layer * (size_t)es->ev->n_heads + (size_t)head) * (size_t)es->cap;
}

/* Make rows hold `need` slots (copying what they hold); all or nothing. */
static enum kvx_status rows_grow(struct kvx_kv_evict_seq *es, int64_t need)
{
    if (need <= es->cap)
        return KVX_OK;
    const struct kvx_kv_evict *ev = es->ev;
    int64_t cap = es->cap ? es->cap : 64;
    while (cap < need)
        cap *= 2;
    const size_t n_rows = (size_t)ev->layout->n_layer * (size_t)ev->n_heads;
    int32_t *pos = malloc(n_rows * (size_t)cap * sizeof *pos);
    float *score = malloc(n_rows * (size_t)cap * sizeof *score);
    if (!pos || !score) {
        free(pos);
        free(score);
        return KVX_ERR_NOMEM;
    }
    for (size_t r = 0; r < n_rows && es->cap; r++) {
        const size_t l = r / (size_t)ev->n_heads;
        memcpy(pos + r * (size_t)cap, es->pos + r * (size_t)es->cap, (size_t)es->n[l] * sizeof *pos);
        memcpy(score + r * (size_t)cap, es->score + r * (size_t)es->cap,
               (size_t)es->n[l] * sizeof *score);
    }
    free(es->pos);
    free(es->score);
    es->pos = pos;
    es->score = score;
    es->cap = cap;
    es->acc.ld = cap;
    for (int32_t l = 0; l < ev->layout->n_layer; l++)
        es->rows[l] = ev->full_rank[l] >= 0 ? score + row_off(es, l, 0) : NULL;
    return KVX_OK;
}

struct kvx_kv_evict_layer kvx_kv_evict_seq_layer(struct kvx_kv_evict_seq *es, int32_t layer)
{
    struct kvx_kv_evict_layer L = {.layer = layer};
    if (layer < 0 || layer >= es->ev->layout->n_layer || es->ev->full_rank[layer] < 0 || !es->cap)
        return L;
    L.n_heads = es->ev->layout->layers[layer].n_kv_heads;
    L.n = es->n[layer];
    L.ld = es->cap;
    L.pos = es->pos + row_off(es, layer, 0);
    L.score = es->score + row_off(es, layer, 0);
    return L;
}

int64_t kvx_kv_evict_seq_evicted(const struct kvx_kv_evict_seq *es) { return es->evicted; }

void kvx_kv_evict_seq_sync(struct kvx_kv_evict_seq *es, const struct kvx_kv_seq *s)
{
    for (int32_t l = 0; l < es->ev->layout->n_layer; l++) {
        const int64_t slots = kvx_kv_seq_slots(s, l);
        if (es->ev->full_rank[l] >= 0 && slots < es->n[l])
            es->n[l] = slots;
    }
    if (kvx_kv_seq_len(s) == 0)
        es->evicted = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Steps */

enum kvx_status kvx_kv_evict_step_begin(struct kvx_kv_evict_seq *es, const struct kvx_kv_seq *s,
                                        const struct kvx_kv_evict_step *st, uint8_t *want,
                                        const struct kvx_attn_acc_seq **acc, struct kvx_err *err)
{
    const struct kvx_kv_evict *ev = es->ev;
    const struct kvx_kv_layout *lay = ev->layout;
    int64_t need = 0;
    for (int32_t l = 0; l < lay->n_layer; l++) {
        if (ev->full_rank[l] >= 0 && es->n[l] != kvx_kv_seq_slots(s, l))
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "eviction: layer %d tracks %lld slots, "
                               "the cache holds %lld (tokens written past the evictor?)", (int)l,
                               (long long)es->n[l], (long long)kvx_kv_seq_slots(s, l));
        need = es->n[l] + st->n_tok > need ? es->n[l] + st->n_tok : need;
    }
    if (rows_grow(es, need) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "eviction: no memory for %lld slots per layer",
                           (long long)need);
    memset(want, 0, (size_t)st->n_tok);
    bool reset = false;
    const bool reads = ev->ops->want && ev->ops->want(&ev->cfg, st, want, &reset);
    for (int32_t l = 0; l < lay->n_layer; l++) {
        if (ev->full_rank[l] < 0)
            continue;
        for (int32_t h = 0; h < lay->layers[l].n_kv_heads; h++) {
            float *row = es->score + row_off(es, l, h);
            const int64_t from = reset ? 0 : es->n[l];
            for (int64_t j = from; j < es->n[l] + st->n_tok; j++)
                row[j] = reads ? 0.0f : ev->ops->new_score;
        }
    }
    *acc = reads ? &es->acc : NULL;
    es->step_reads = reads;
    return KVX_OK;
}

/* Grow step_end's scratch to n slots per head. */
static enum kvx_status scratch_grow(struct kvx_kv_evict *ev, int64_t n)
{
    if (n <= ev->scratch_cap)
        return KVX_OK;
    const size_t heads = (size_t)ev->n_heads;
    int64_t *keep = realloc(ev->keep, heads * (size_t)n * sizeof *keep);
    if (keep)
        ev->keep = keep;
    float *prio = realloc(ev->prio, heads * (size_t)n * sizeof *prio);
    if (prio)
        ev->prio = prio;
    void *sel = realloc(ev->sel, kvx_kv_evict_select_scratch(n));
    if (sel)
        ev->sel = sel;
    if (!keep || !prio || !sel)
        return KVX_ERR_NOMEM;
    ev->scratch_cap = n;
    return KVX_OK;
}

/* Evict one layer down to `budget` slots: choose per head, compact the pool, then the rows. */
static enum kvx_status evict_layer(struct kvx_kv_evict_seq *es, struct kvx_kv_seq *s,
                                   int32_t layer, int64_t mean, int64_t budget, struct kvx_err *err)
{
    struct kvx_kv_evict *ev = es->ev;
    struct kvx_kv_evict_layer L = kvx_kv_evict_seq_layer(es, layer);
    if (scratch_grow(ev, L.n) != KVX_OK)
        return kvx_err_set(err, KVX_ERR_NOMEM, "eviction: no memory for %lld slots", (long long)L.n);
    if (ev->ops->rank)
        ev->ops->rank(&ev->cfg, &L, ev->prio);
    int64_t sinks, window;
    kvx_kv_evict_protected(ev, mean, budget, &sinks, &window);
    for (int32_t h = 0; h < L.n_heads; h++)
        kvx_kv_evict_select(L.pos + h * L.ld, ev->ops->rank ? ev->prio + h * L.n : NULL, L.n,
                            budget, sinks, window, ev->keep + h * budget, ev->sel);
    enum kvx_status st = kvx_kv_seq_compact(s, layer, ev->keep, budget, err);
    if (st != KVX_OK)
        return st;
    for (int32_t h = 0; h < L.n_heads; h++) {
        int32_t *pos = L.pos + h * L.ld;
        float *score = L.score + h * L.ld;
        const int64_t *keep = ev->keep + h * budget;
        for (int64_t j = 0; j < budget; j++) { /* keep[j] >= j: in place, in order */
            pos[j] = pos[keep[j]];
            score[j] = score[keep[j]];
        }
    }
    es->evicted += L.n - budget;
    es->n[layer] = budget;
    return KVX_OK;
}

enum kvx_status kvx_kv_evict_step_end(struct kvx_kv_evict_seq *es, struct kvx_kv_seq *s,
                                      const struct kvx_kv_evict_step *st, struct kvx_err *err)
{
    struct kvx_kv_evict *ev = es->ev;
    const struct kvx_kv_layout *lay = ev->layout;
    const int64_t len = kvx_kv_seq_len(s), pos0 = len - st->n_tok;
    for (int32_t l = 0; l < lay->n_layer; l++) {
        if (ev->full_rank[l] < 0)
            continue;
        for (int32_t h = 0; h < lay->layers[l].n_kv_heads; h++) {
            int32_t *row = es->pos + row_off(es, l, h);
            for (int64_t i = 0; i < st->n_tok; i++)
                row[es->n[l] + i] = (int32_t)(pos0 + i);
        }
        es->n[l] += st->n_tok;
    }
    if (ev->ops->absorb && es->step_reads) {
        for (int32_t l = 0; l < lay->n_layer; l++) {
            if (ev->full_rank[l] < 0)
                continue;
            struct kvx_kv_evict_layer L = kvx_kv_evict_seq_layer(es, l);
            ev->ops->absorb(&ev->cfg, st, &L);
        }
    }
    const int64_t mean = mean_budget(ev, len);
    kvx_kv_evict_budgets(ev, len, ev->budgets);
    for (int32_t l = 0; l < lay->n_layer; l++) {
        if (ev->full_rank[l] < 0 || es->n[l] <= ev->budgets[l] + ev->cfg.slack)
            continue;
        enum kvx_status r = evict_layer(es, s, l, mean, ev->budgets[l], err);
        if (r != KVX_OK)
            return r;
    }
    return KVX_OK;
}
