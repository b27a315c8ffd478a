/* tests/test_evict.c: KV eviction (kv/evict.h) and the pool's compaction (kv/pool.h).
 *
 * - the shared selection and each policy on hand-made score patterns keep exactly the budget
 *   and the right tokens;
 * - the attention's probability sums equal a naive softmax, also after compaction;
 * - attention over a compacted layer equals a reference attention over the kept (k, v) at
 *   their original positions, for a decode token and a prefill block written afterwards;
 * - compaction with f32 and f16 across page boundaries keeps the values, frees pages, and
 *   kvx_kv_pool_check passes after every step of a randomized run;
 * - pyramid budgets sum to the uniform total; bad configurations fail with clear errors;
 * - on the real model: a budget >= the context changes no logit bit, and a long run under
 *   every policy keeps the pool consistent and within budget (skipped without the model). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/causal.h"
#include "engine/engine.h"
#include "kv/evict.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "kvx.h"
#include "ops/cpu.h"
#include "ops/f16.h"
#include "test.h"
#include "util/threadpool.h"

/* ---------------------------------------------------------------------------------------------
 * Helpers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t rng_int(uint64_t *s, int64_t n) { return n > 0 ? (int64_t)(rng_next(s) % (uint64_t)n) : 0; }

static float rng_float(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 40) / (double)(1ull << 23) - 1.0);
}

static void set_full(struct kvx_kv_layout *l, int32_t i, int32_t heads, int32_t dim,
                     enum kvx_kv_codec c)
{
    l->layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = heads,
                                            .k_dim = dim, .v_dim = dim, .shared_from = -1,
                                            .k_codec = c, .v_codec = c};
}

static struct kvx_kv_pool *make_pool_mode(const struct kvx_kv_layout *l, size_t budget,
                                          bool reencode)
{
    struct kvx_kv_pool_cfg cfg = {.layout = l, .budget_bytes = budget, .isa = kvx_cpu_best_isa(),
                                  .compact_reencode = reencode};
    struct kvx_kv_pool *p = NULL;
    struct kvx_err err = {0};
    if (kvx_kv_pool_create(&cfg, &p, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "pool create: %s", err.msg);
    return p;
}

static struct kvx_kv_pool *make_pool(const struct kvx_kv_layout *l, size_t budget)
{
    return make_pool_mode(l, budget, false);
}

static bool pool_ok(const struct kvx_kv_pool *p, int line)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(p, &err) == KVX_OK)
        return true;
    kvx_test_fail(__FILE__, line, "%s", err.msg);
    return false;
}

/* A value exact in f16: small multiples of 1/8 that depend on (layer, position, index, K/V). */
static float val(int32_t layer, int64_t pos, int32_t idx, int kv)
{
    return (float)((pos * 7 + idx * 3 + layer * 5 + kv * 11) % 64) / 8.0f - 4.0f;
}

static void write_tokens(struct kvx_kv_seq *s, const struct kvx_kv_layout *l, int64_t from,
                         int64_t to)
{
    float k[512], v[512];
    for (int64_t p = from; p < to; p++)
        for (int32_t i = 0; i < l->n_layer; i++) {
            const struct kvx_layer_cache *c = &l->layers[i];
            if (!kvx_kv_layer_owns(c))
                continue;
            for (int32_t x = 0; x < c->n_kv_heads * c->k_dim; x++)
                k[x] = val(i, p, x, 0);
            for (int32_t x = 0; x < c->n_kv_heads * c->v_dim; x++)
                v[x] = val(i, p, x, 1);
            kvx_kv_seq_write(s, i, p, k, v);
        }
    kvx_kv_seq_set_len(s, to);
}

/* Does slot j of head h in `layer` hold the values of position `pos`? */
static bool slot_holds(const struct kvx_kv_seq *s, int32_t layer, int32_t h, int64_t j, int64_t pos)
{
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, layer, &v);
    float k[256], x[256];
    if (!kvx_kv_view_get_k(&v, h, j, k) || !kvx_kv_view_get_v(&v, h, j, x))
        return false;
    for (int32_t c = 0; c < v.k_dim; c++)
        if (k[c] != val(layer, pos, h * v.k_dim + c, 0))
            return false;
    for (int32_t c = 0; c < v.v_dim; c++)
        if (x[c] != val(layer, pos, h * v.v_dim + c, 1))
            return false;
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Selection */

static bool keeps(const int64_t *keep, int64_t n, const int64_t *want)
{
    for (int64_t i = 0; i < n; i++)
        if (keep[i] != want[i])
            return false;
    return true;
}

KVX_TEST(evict_select_hand_patterns)
{
    int32_t pos[12];
    float prio[12];
    int64_t keep[12];
    uint8_t scratch[12 * 32];
    KVX_CHECK(kvx_kv_evict_select_scratch(12) <= sizeof scratch);
    for (int i = 0; i < 12; i++) {
        pos[i] = 100 + 3 * i; /* positions need not be contiguous */
        prio[i] = 0;
    }
    /* equal priorities: recency fills the budget (StreamingLLM without sinks) */
    kvx_kv_evict_select(pos, NULL, 12, 5, 0, 0, keep, scratch);
    KVX_CHECK(keeps(keep, 5, (const int64_t[]){7, 8, 9, 10, 11}));
    /* sinks are positions below `sinks`, not the first slots */
    kvx_kv_evict_select(pos, NULL, 12, 5, 104, 0, keep, scratch);
    KVX_CHECK(keeps(keep, 5, (const int64_t[]){0, 1, 9, 10, 11}));
    /* heavy hitters plus a window of 2, ties going to the newer token */
    prio[2] = 5;
    prio[6] = 4;
    prio[3] = 1;
    prio[4] = 1;
    kvx_kv_evict_select(pos, prio, 12, 6, 0, 2, keep, scratch);
    KVX_CHECK(keeps(keep, 6, (const int64_t[]){2, 3, 4, 6, 10, 11}));
    kvx_kv_evict_select(pos, prio, 12, 5, 0, 2, keep, scratch);
    KVX_CHECK(keeps(keep, 5, (const int64_t[]){2, 4, 6, 10, 11}));
    /* the window is clipped to what the sinks leave of the budget */
    kvx_kv_evict_select(pos, prio, 12, 3, 106, 5, keep, scratch);
    KVX_CHECK(keeps(keep, 3, (const int64_t[]){0, 1, 11}));
    /* within budget: everything */
    kvx_kv_evict_select(pos, prio, 4, 4, 0, 0, keep, scratch);
    KVX_CHECK(keeps(keep, 4, (const int64_t[]){0, 1, 2, 3}));
    /* a large random case against a brute-force ranking */
    uint64_t rng = 5;
    enum { N = 600 };
    int32_t *bp = malloc(N * sizeof *bp);
    float *bq = malloc(N * sizeof *bq);
    int64_t *bk = malloc(N * sizeof *bk);
    void *bs = malloc(kvx_kv_evict_select_scratch(N));
    for (int i = 0; i < N; i++) {
        bp[i] = 2 * i;
        bq[i] = (float)rng_int(&rng, 50); /* many ties */
    }
    const int64_t budget = 211, sinks = 6, window = 40; /* sinks: positions 0, 2, 4 */
    kvx_kv_evict_select(bp, bq, N, budget, sinks, window, bk, bs);
    int bad = 0;
    for (int64_t i = 0; i < budget; i++)
        bad += i > 0 && bk[i] <= bk[i - 1];
    /* every dropped slot ranks below every kept, unprotected one */
    uint8_t *kept = calloc(N, 1);
    for (int64_t i = 0; i < budget; i++)
        kept[bk[i]] = 1;
    for (int i = 0; i < 3; i++)
        bad += !kept[i];
    for (int i = N - (int)window; i < N; i++)
        bad += !kept[i];
    for (int a = 3; a < N - window; a++)
        for (int b = 3; b < N - window; b++)
            if (kept[a] && !kept[b])
                bad += bq[b] > bq[a] || (bq[b] == bq[a] && b > a);
    KVX_CHECK_EQ_INT(bad, 0);
    free(kept);
    free(bp);
    free(bq);
    free(bk);
    free(bs);
}

/* ---------------------------------------------------------------------------------------------
 * Policies through the evictor and a pool, with attention sums written by hand */

struct rig {
    struct kvx_kv_layout layout;
    struct kvx_kv_pool *pool;
    struct kvx_kv_seq *seq;
    struct kvx_kv_evict *ev;
    struct kvx_kv_evict_seq *es;
};

static bool rig_open_shape(struct rig *r, int32_t n_layer, int32_t heads, int32_t dim,
                           enum kvx_kv_codec c, int32_t pt, size_t budget,
                           const struct kvx_evict_cfg *cfg)
{
    memset(r, 0, sizeof *r);
    KVX_CHECK(kvx_kv_layout_init(&r->layout, n_layer, pt, NULL) == KVX_OK);
    for (int32_t i = 0; i < n_layer; i++)
        set_full(&r->layout, i, heads, dim, c);
    r->pool = make_pool(&r->layout, budget);
    struct kvx_err err = {0};
    if (!r->pool || kvx_kv_seq_create(r->pool, &r->seq, &err) != KVX_OK ||
        kvx_kv_evict_create(cfg, &r->layout, 8192, 512, &r->ev, &err) != KVX_OK ||
        kvx_kv_evict_seq_create(r->ev, &r->es, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "rig: %s", err.msg);
        return false;
    }
    return true;
}

static bool rig_open(struct rig *r, int32_t n_layer, enum kvx_kv_codec c, int32_t pt,
                     const struct kvx_evict_cfg *cfg)
{
    return rig_open_shape(r, n_layer, 2, 16, c, pt, 1 << 22, cfg);
}

static void rig_close(struct rig *r)
{
    kvx_kv_evict_seq_destroy(r->es);
    kvx_kv_evict_destroy(r->ev);
    kvx_kv_seq_destroy(r->seq);
    kvx_kv_pool_destroy(r->pool);
    kvx_kv_layout_free(&r->layout);
}

/* The score a hand-made attention pattern gives slot j of (layer, head), or NaN: none. */
typedef float (*pattern_fn)(int32_t layer, int32_t head, int64_t slot, int64_t n_slots);

/* One step of n tokens of a feed of feed_len: the sums the policy asks for are filled from
 * `pattern` (added, as the attention would), then the step ends.  Returns the wanted count. */
static int64_t rig_step(struct rig *r, int64_t n, int64_t feed_len, bool last, pattern_fn pattern)
{
    const int64_t len = kvx_kv_seq_len(r->seq);
    const struct kvx_kv_evict_step st = {.n_tok = n, .feed_len = feed_len, .last_chunk = last};
    uint8_t want[512];
    const struct kvx_attn_acc_seq *acc = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_seq_reserve(r->seq, len + n, &err) == KVX_OK);
    KVX_CHECK(kvx_kv_evict_step_begin(r->es, r->seq, &st, want, &acc, &err) == KVX_OK);
    write_tokens(r->seq, &r->layout, len, len + n);
    int64_t wanted = 0;
    for (int64_t i = 0; i < n; i++)
        wanted += want[i];
    if (acc && pattern)
        for (int32_t l = 0; l < r->layout.n_layer; l++) {
            const int64_t slots = kvx_kv_seq_slots(r->seq, l);
            for (int32_t h = 0; h < r->layout.layers[l].n_kv_heads; h++)
                for (int64_t j = 0; j < slots; j++)
                    acc->layer[l][h * acc->ld + j] += pattern(l, h, j, slots);
        }
    if (kvx_kv_evict_step_end(r->es, r->seq, &st, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "step end: %s", err.msg);
    pool_ok(r->pool, __LINE__);
    return wanted;
}

/* Kept positions of (layer, head) equal `want` and the pool holds their values. */
static void expect_kept(struct rig *r, int32_t layer, int32_t head, const int64_t *want, int64_t n,
                        int line)
{
    const struct kvx_kv_evict_layer L = kvx_kv_evict_seq_layer(r->es, layer);
    if (L.n != n || kvx_kv_seq_slots(r->seq, layer) != n) {
        kvx_test_fail(__FILE__, line, "layer %d: %lld slots (pool %lld), want %lld", (int)layer,
                      (long long)L.n, (long long)kvx_kv_seq_slots(r->seq, layer), (long long)n);
        return;
    }
    for (int64_t j = 0; j < n; j++)
        if (L.pos[head * L.ld + j] != want[j] || !slot_holds(r->seq, layer, head, j, want[j])) {
            kvx_test_fail(__FILE__, line, "layer %d head %d slot %lld: position %d, want %lld",
                          (int)layer, (int)head, (long long)j, (int)L.pos[head * L.ld + j],
                          (long long)want[j]);
            return;
        }
}

KVX_TEST(evict_sinks_keeps_first_and_recent)
{
    struct kvx_evict_cfg c = kvx_evict_cfg_default();
    c.policy = KVX_EVICT_SINKS;
    c.budget = 8;
    c.sinks = 2;
    struct rig r;
    if (!rig_open(&r, 2, KVX_KV_CODEC_F32, 16, &c))
        return;
    KVX_CHECK_EQ_INT(rig_step(&r, 20, 20, true, NULL), 0); /* reads no attention */
    const int64_t want[] = {0, 1, 14, 15, 16, 17, 18, 19};
    expect_kept(&r, 0, 0, want, 8, __LINE__);
    expect_kept(&r, 1, 1, want, 8, __LINE__);
    for (int i = 0; i < 5; i++) /* decode: one in, the oldest non-sink out */
        rig_step(&r, 1, 1, true, NULL);
    const int64_t want2[] = {0, 1, 19, 20, 21, 22, 23, 24};
    expect_kept(&r, 1, 0, want2, 8, __LINE__);
    KVX_CHECK_EQ_INT(kvx_kv_evict_seq_evicted(r.es), 2 * (12 + 5));
    rig_close(&r);
    /* with a slack of 3 a layer runs up to 11 tokens, then drops back to 8 */
    c.slack = 3;
    if (!rig_open(&r, 1, KVX_KV_CODEC_F32, 16, &c))
        return;
    rig_step(&r, 20, 20, true, NULL);
    const int64_t held[] = {9, 10, 11, 8, 9, 10, 11, 8};
    for (int i = 0; i < 8; i++) {
        rig_step(&r, 1, 1, true, NULL);
        KVX_CHECK_EQ_INT(kvx_kv_seq_slots(r.seq, 0), held[i]);
    }
    expect_kept(&r, 0, 1, (const int64_t[]){0, 1, 22, 23, 24, 25, 26, 27}, 8, __LINE__);
    rig_close(&r);
}

/* h2o: head 0 attends to odd slots, head 1 to multiples of 3, more to older ones. */
static float h2o_pattern(int32_t layer, int32_t head, int64_t slot, int64_t n)
{
    (void)layer;
    (void)n;
    if (head == 0)
        return slot % 2 ? 1.0f / (float)(slot + 1) : 0.0f;
    return slot % 3 == 0 ? 1.0f / (float)(slot + 1) : 0.0f;
}

KVX_TEST(evict_h2o_keeps_heavy_hitters_per_head)
{
    struct kvx_evict_cfg c = kvx_evict_cfg_default();
    c.policy = KVX_EVICT_H2O;
    c.budget = 8;
    c.window = 2;
    struct rig r;
    if (!rig_open(&r, 1, KVX_KV_CODEC_F16, 16, &c))
        return;
    KVX_CHECK_EQ_INT(rig_step(&r, 24, 24, true, h2o_pattern), 24); /* every query */
    /* window {22, 23}; six heaviest: head 0 odd slots 1..11, head 1 multiples of 3, 0..15 */
    expect_kept(&r, 0, 0, (const int64_t[]){1, 3, 5, 7, 9, 11, 22, 23}, 8, __LINE__);
    expect_kept(&r, 0, 1, (const int64_t[]){0, 3, 6, 9, 12, 15, 22, 23}, 8, __LINE__);
    /* the scores moved with their slots: next step adds nothing, so slot 22 (position 22,
     * score 0 for head 0) goes first when position 24 arrives */
    rig_step(&r, 1, 1, true, NULL);
    expect_kept(&r, 0, 0, (const int64_t[]){1, 3, 5, 7, 9, 11, 23, 24}, 8, __LINE__);
    rig_close(&r);
}

/* tova: the newest query attends to the slots whose position is a multiple of 4 (head 0)
 * and to slot 1 a lot (head 1): averaged over heads, one choice for both heads. */
static float tova_pattern(int32_t layer, int32_t head, int64_t slot, int64_t n)
{
    (void)layer;
    (void)n;
    if (head == 0)
        return slot % 4 == 0 ? 0.1f : 0.0f;
    return slot == 1 ? 0.5f : 0.0f;
}

KVX_TEST(evict_tova_drops_least_attended_same_for_all_heads)
{
    struct kvx_evict_cfg c = kvx_evict_cfg_default();
    c.policy = KVX_EVICT_TOVA;
    c.budget = 5;
    struct rig r;
    if (!rig_open(&r, 2, KVX_KV_CODEC_F32, 16, &c))
        return;
    KVX_CHECK_EQ_INT(rig_step(&r, 20, 20, true, tova_pattern), 1); /* the newest query */
    /* slot 1 (0.5), then multiples of 4 (0.1) newest first: 16, 12, 8, 4 */
    expect_kept(&r, 0, 0, (const int64_t[]){1, 4, 8, 12, 16}, 5, __LINE__);
    expect_kept(&r, 1, 1, (const int64_t[]){1, 4, 8, 12, 16}, 5, __LINE__);
    rig_close(&r);
}

/* snapkv: the observation window (the prompt's last 4 queries) votes for slot 9 and a little
 * for slot 5 (head 0), for slot 2 (head 1); max pooling of width 3 brings neighbours along. */
static float snap_pattern(int32_t layer, int32_t head, int64_t slot, int64_t n)
{
    (void)layer;
    if (slot >= n - 4)
        return 0.01f; /* the window's own votes (not pooled) */
    if (head == 0)
        return slot == 9 ? 1.0f : slot == 5 ? 0.3f : 0.0f;
    return slot == 2 ? 1.0f : 0.0f;
}

KVX_TEST(evict_snapkv_votes_pooled_then_window)
{
    struct kvx_evict_cfg c = kvx_evict_cfg_default();
    c.policy = KVX_EVICT_SNAPKV;
    c.budget = 8;
    c.sinks = 0;
    c.obs_window = 4;
    c.pool_kernel = 3;
    struct rig r;
    if (!rig_open(&r, 1, KVX_KV_CODEC_F16, 16, &c))
        return;
    /* a prompt of 24 tokens in two chunks: the first is not its end, reads nothing, and keeps
     * the budget by recency (no votes yet) */
    KVX_CHECK_EQ_INT(rig_step(&r, 16, 24, false, snap_pattern), 0);
    expect_kept(&r, 0, 0, (const int64_t[]){8, 9, 10, 11, 12, 13, 14, 15}, 8, __LINE__);
    /* the prompt's end: slots 0..15 hold positions 8..23, the window is slots 12..15.  Pooled
     * votes, head 0: slots 8-10 = 1, 4-6 = 0.3 -> keep 8, 9, 10 and the newest of 4-6 (6);
     * head 1: slots 1-3 = 1, the rest 0 -> 1, 2, 3 and the newest unvoted (11) */
    KVX_CHECK_EQ_INT(rig_step(&r, 8, 24, true, snap_pattern), 4);
    expect_kept(&r, 0, 0, (const int64_t[]){14, 16, 17, 18, 20, 21, 22, 23}, 8, __LINE__);
    expect_kept(&r, 0, 1, (const int64_t[]){9, 10, 11, 19, 20, 21, 22, 23}, 8, __LINE__);
    /* decoding: later tokens score below every vote, so the window slides past the selection
     * (the old window's tokens keep their small votes until they are the lowest voted) */
    rig_step(&r, 1, 1, true, snap_pattern);
    expect_kept(&r, 0, 0, (const int64_t[]){14, 16, 17, 18, 21, 22, 23, 24}, 8, __LINE__);
    expect_kept(&r, 0, 1, (const int64_t[]){9, 10, 11, 20, 21, 22, 23, 24}, 8, __LINE__);
    for (int i = 0; i < 4; i++)
        rig_step(&r, 1, 1, true, snap_pattern);
    expect_kept(&r, 0, 0, (const int64_t[]){14, 16, 17, 18, 25, 26, 27, 28}, 8, __LINE__);
    /* head 1 still holds position 23: its small vote beats position 24's none */
    expect_kept(&r, 0, 1, (const int64_t[]){9, 10, 11, 23, 25, 26, 27, 28}, 8, __LINE__);
    rig_close(&r);
}

/* ---------------------------------------------------------------------------------------------
 * Attention over a compacted layer, and its probability sums, against a naive reference */

enum { HKV = 2, G = 3, HD = 32, NH = HKV * G, LD = 512 };

/* A sequence of one layer with the original K/V of every position, and what each head's
 * slots hold. */
struct ref_seq {
    struct kvx_kv_seq *s;
    float k[256][HKV * HD], v[256][HKV * HD];
    int64_t slot_pos[HKV][256];
    int64_t n_slots;
};

static void ref_append(struct ref_seq *r, int64_t from, int64_t to, uint64_t *rng)
{
    KVX_CHECK(kvx_kv_seq_reserve(r->s, to, NULL) == KVX_OK);
    for (int64_t p = from; p < to; p++) {
        for (int i = 0; i < HKV * HD; i++) { /* f16-exact: the reference sees what is stored */
            r->k[p][i] = kvx_f16_to_f32(kvx_f32_to_f16(2.0f * rng_float(rng)));
            r->v[p][i] = kvx_f16_to_f32(kvx_f32_to_f16(rng_float(rng)));
        }
        kvx_kv_seq_write(r->s, 0, p, r->k[p], r->v[p]);
        for (int g = 0; g < HKV; g++)
            r->slot_pos[g][r->n_slots] = p;
        r->n_slots++;
    }
    kvx_kv_seq_set_len(r->s, to);
}

/* Keep n_keep random slots per head (different per head). */
static void ref_compact(struct ref_seq *r, int64_t n_keep, uint64_t *rng)
{
    int64_t keep[HKV][256];
    for (int g = 0; g < HKV; g++) {
        uint8_t pick[256] = {0};
        for (int64_t c = 0; c < n_keep;) {
            int64_t j = rng_int(rng, r->n_slots);
            if (!pick[j]) {
                pick[j] = 1;
                c++;
            }
        }
        for (int64_t j = 0, o = 0; j < r->n_slots; j++)
            if (pick[j])
                keep[g][o++] = j;
    }
    int64_t flat[HKV * 256];
    for (int g = 0; g < HKV; g++)
        memcpy(flat + g * n_keep, keep[g], (size_t)n_keep * sizeof *flat);
    struct kvx_err err = {0};
    if (kvx_kv_seq_compact(r->s, 0, flat, n_keep, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "compact: %s", err.msg);
    for (int g = 0; g < HKV; g++)
        for (int64_t j = 0; j < n_keep; j++)
            r->slot_pos[g][j] = r->slot_pos[g][keep[g][j]];
    r->n_slots = n_keep;
}

/* Naive attention of query q (NH heads) at position pos over the slots holding positions <=
 * pos: out (NH x HD) and each slot's probability summed over the group (sum, HKV x LD). */
static void ref_attend(const struct ref_seq *r, int64_t pos, const float *q, float scale,
                       double *out, double *sum)
{
    for (int h = 0; h < NH; h++) {
        const int g = h / G;
        double w[256], mx = -INFINITY, den = 0;
        int64_t n = 0;
        while (n < r->n_slots && r->slot_pos[g][n] <= pos)
            n++;
        for (int64_t j = 0; j < n; j++) {
            const float *k = r->k[r->slot_pos[g][j]] + g * HD;
            double d = 0;
            for (int c = 0; c < HD; c++)
                d += (double)q[h * HD + c] * k[c];
            w[j] = d * scale;
            mx = w[j] > mx ? w[j] : mx;
        }
        for (int c = 0; c < HD; c++)
            out[h * HD + c] = 0;
        for (int64_t j = 0; j < n; j++) {
            w[j] = exp(w[j] - mx);
            den += w[j];
        }
        for (int64_t j = 0; j < n; j++) {
            const float *v = r->v[r->slot_pos[g][j]] + g * HD;
            for (int c = 0; c < HD; c++)
                out[h * HD + c] += w[j] / den * v[c];
            sum[g * LD + j] += w[j] / den;
        }
    }
}

/* Run kvx_attn_causal with probability sums for tokens (seqs[i], pos[i]) and compare. */
static void check_attention(struct kvx_threadpool *tp, struct ref_seq **refs, int64_t n_tok,
                            const int64_t *pos, const int *which, const uint8_t *want,
                            uint64_t *rng, int line)
{
    struct kvx_attn_workspace ws;
    size_t floats = kvx_attn_workspace_size(&ws, n_tok, 256, kvx_threadpool_size(tp), NH, HKV, HD);
    float *mem = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    kvx_attn_workspace_bind(&ws, mem, n_tok, NH, HKV, HD);
    float *q = malloc((size_t)(n_tok * NH * HD) * sizeof *q);
    float *out = malloc((size_t)(n_tok * NH * HD) * sizeof *out);
    float *sums[2] = {calloc(HKV * LD, sizeof(float)), calloc(HKV * LD, sizeof(float))};
    double *ref_sums[2] = {calloc(HKV * LD, sizeof(double)), calloc(HKV * LD, sizeof(double))};
    struct kvx_attn_acc_seq acc_seq[2] = {{.layer = &sums[0], .ld = LD}, {.layer = &sums[1], .ld = LD}};
    const struct kvx_attn_acc_seq *acc_of[64];
    struct kvx_kv_seq *seq[64];
    for (int64_t t = 0; t < n_tok; t++) {
        seq[t] = refs[which[t]]->s;
        acc_of[t] = &acc_seq[which[t]];
    }
    for (int64_t i = 0; i < n_tok * NH * HD; i++)
        q[i] = rng_float(rng);
    const float scale = 1.0f / sqrtf((float)HD);
    const struct kvx_attn_acc acc = {.want = want, .seq = acc_of};
    const struct kvx_attn_batch b = {
        .n_tok = n_tok, .pos = pos, .seq = seq, .layer = 0, .n_head = NH, .n_head_kv = HKV,
        .head_dim = HD, .q = q, .q_ld = NH * HD, .out = out, .out_ld = NH * HD, .scale = scale,
        .acc = &acc,
    };
    kvx_attn_causal(tp, &b, &ws);
    double ref[NH * HD], worst = 0, worst_p = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        double scratch_sum[HKV * LD] = {0};
        ref_attend(refs[which[t]], pos[t], q + t * NH * HD, scale, ref,
                   want[t] ? ref_sums[which[t]] : scratch_sum);
        for (int i = 0; i < NH * HD; i++)
            worst = fabs(ref[i] - out[t * NH * HD + i]) > worst ? fabs(ref[i] - out[t * NH * HD + i]) : worst;
    }
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < HKV * LD; i++)
            worst_p = fabs(ref_sums[s][i] - sums[s][i]) > worst_p ? fabs(ref_sums[s][i] - sums[s][i]) : worst_p;
    if (worst > 2e-5 || worst_p > 2e-5)
        kvx_test_fail(__FILE__, line, "attention off by %.3g, probability sums by %.3g", worst, worst_p);
    free(mem);
    free(q);
    free(out);
    for (int s = 0; s < 2; s++) {
        free(sums[s]);
        free(ref_sums[s]);
    }
}

KVX_TEST(evict_attention_over_kept_tokens_at_original_positions)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 1, 16, NULL) == KVX_OK);
    set_full(&l, 0, HKV, HD, KVX_KV_CODEC_F16);
    struct kvx_kv_pool *p = make_pool(&l, 1 << 22);
    struct kvx_threadpool *tp = NULL;
    KVX_CHECK(kvx_threadpool_create(2, &tp, NULL) == KVX_OK);
    static struct ref_seq ra, rb; /* large: not on the stack */
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    KVX_CHECK(kvx_kv_seq_create(p, &ra.s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_create(p, &rb.s, NULL) == KVX_OK);
    struct ref_seq *refs[2] = {&ra, &rb};
    uint64_t rng = 11;
    ref_append(&ra, 0, 70, &rng);
    ref_append(&rb, 0, 33, &rng);
    int64_t pos[64];
    int which[64];
    uint8_t want[64];
    /* before any compaction: a decode token, every query's sums */
    pos[0] = 69;
    which[0] = 0;
    want[0] = 1;
    check_attention(tp, refs, 1, pos, which, want, &rng, __LINE__);
    /* compact a to 41 of 70 slots (different per head): pages freed, positions kept */
    struct kvx_kv_pool_stats before, after;
    kvx_kv_pool_get_stats(p, &before);
    ref_compact(&ra, 41, &rng);
    kvx_kv_pool_get_stats(p, &after);
    KVX_CHECK(after.bytes_used < before.bytes_used);
    KVX_CHECK_EQ_INT(kvx_kv_seq_slots(ra.s, 0), 41);
    KVX_CHECK_EQ_INT(kvx_kv_seq_slot(ra.s, 0, 70), 41);
    pool_ok(p, __LINE__);
    /* a prefill block of 20 written after the compaction (positions 70..89, slots 41..60),
     * some of its queries summed */
    ref_append(&ra, 70, 90, &rng);
    for (int t = 0; t < 20; t++) {
        pos[t] = 70 + t;
        which[t] = 0;
        want[t] = t % 3 != 1;
    }
    check_attention(tp, refs, 20, pos, which, want, &rng, __LINE__);
    /* compact again, then a batch mixing both sequences' decode tokens */
    ref_compact(&ra, 30, &rng);
    ref_append(&ra, 90, 91, &rng);
    ref_append(&rb, 33, 34, &rng);
    pos[0] = 90, which[0] = 0, want[0] = 1;
    pos[1] = 33, which[1] = 1, want[1] = 1;
    check_attention(tp, refs, 2, pos, which, want, &rng, __LINE__);
    pool_ok(p, __LINE__);
    kvx_kv_seq_destroy(ra.s);
    kvx_kv_seq_destroy(rb.s);
    kvx_threadpool_destroy(tp);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Compaction: a randomized run over two sequences, f32 and f16, pages of 16 */

struct wl {
    struct kvx_kv_seq *s;
    int64_t pos[2][3][400];   /* [FULL layer][head][slot] = position held */
    int64_t n[2];             /* slots per FULL layer */
};

/* Layout: FULL (3 heads, dim 16), FULL (1 head, dim 32), SHARED reading layer 0. */
static void wl_layout(struct kvx_kv_layout *l, enum kvx_kv_codec c, int32_t pt)
{
    KVX_CHECK(kvx_kv_layout_init(l, 3, pt, NULL) == KVX_OK);
    set_full(l, 0, 3, 16, c);
    set_full(l, 1, 1, 32, c);
    l->layers[2] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED, .shared_from = 0};
}

static int wl_verify(const struct wl *w, const struct kvx_kv_layout *l, int line)
{
    int bad = 0;
    for (int32_t i = 0; i < 2; i++) {
        bad += kvx_kv_seq_slots(w->s, i) != w->n[i];
        for (int32_t h = 0; h < l->layers[i].n_kv_heads; h++)
            for (int64_t j = 0; j < w->n[i]; j++)
                bad += !slot_holds(w->s, i, h, j, w->pos[i][h][j]);
    }
    bad += kvx_kv_seq_slots(w->s, 2) != w->n[0];
    if (bad)
        kvx_test_fail(__FILE__, line, "%d slots differ from the model", bad);
    return bad;
}

static void wl_append(struct wl *w, const struct kvx_kv_layout *l, int64_t n)
{
    const int64_t len = kvx_kv_seq_len(w->s);
    KVX_CHECK(kvx_kv_seq_reserve(w->s, len + n, NULL) == KVX_OK);
    write_tokens(w->s, l, len, len + n);
    for (int32_t i = 0; i < 2; i++) {
        for (int32_t h = 0; h < l->layers[i].n_kv_heads; h++)
            for (int64_t t = 0; t < n; t++)
                w->pos[i][h][w->n[i] + t] = len + t;
        w->n[i] += n;
    }
}

/* Compact FULL layer i: a random subset per head, or (one time in three) all but a few slots
 * near the front, as StreamingLLM drops them: long runs moved by a small shift. */
static void wl_compact(struct wl *w, const struct kvx_kv_layout *l, int32_t i, uint64_t *rng)
{
    const int32_t heads = l->layers[i].n_kv_heads;
    const bool shift = rng_int(rng, 3) == 0 && w->n[i] > 8;
    const int64_t n = w->n[i], drop = 1 + rng_int(rng, 5);
    const int64_t n_keep = shift ? n - drop : rng_int(rng, n + 1);
    int64_t *keep = malloc((size_t)(heads * (n_keep + 1)) * sizeof *keep);
    for (int32_t h = 0; h < heads; h++) {
        if (shift) { /* slots [s, s + drop) go */
            const int64_t s0 = rng_int(rng, 4);
            for (int64_t j = 0, o = 0; j < n; j++)
                if (j < s0 || j >= s0 + drop)
                    keep[h * n_keep + o++] = j;
            continue;
        }
        /* a random subset of size n_keep, in order: choose each slot with the right odds */
        int64_t need = n_keep, o = 0;
        for (int64_t j = 0; j < n && need > 0; j++)
            if (rng_int(rng, n - j) < need) {
                keep[h * n_keep + o++] = j;
                need--;
            }
    }
    struct kvx_err err = {0};
    if (kvx_kv_seq_compact(w->s, i, keep, n_keep, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "compact: %s", err.msg);
    for (int32_t h = 0; h < heads; h++)
        for (int64_t j = 0; j < n_keep; j++)
            w->pos[i][h][j] = w->pos[i][h][keep[h * n_keep + j]];
    w->n[i] = n_keep;
    free(keep);
}

static void wl_truncate(struct wl *w, uint64_t *rng)
{
    const int64_t len = kvx_kv_seq_len(w->s), n_keep = rng_int(rng, len + 1);
    const bool empties = n_keep < kvx_kv_seq_min_truncate(w->s);
    kvx_kv_seq_truncate(w->s, n_keep);
    for (int32_t i = 0; i < 2; i++) {
        if (empties) {
            w->n[i] = 0;
            continue;
        }
        while (w->n[i] > 0 && w->pos[i][0][w->n[i] - 1] >= n_keep) /* positions past the */
            w->n[i]--;                                             /* last compaction only */
    }
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(w->s), empties ? 0 : n_keep);
}

/* Pages the FULL layers of all sequences need, from their slot counts. */
static int64_t wl_pages(const struct wl *ws, int n, int64_t pt)
{
    int64_t pages = 0;
    for (int k = 0; k < n; k++)
        for (int32_t i = 0; i < 2; i++)
            pages += (ws[k].n[i] + pt - 1) / pt;
    return pages;
}

static void compaction_run(enum kvx_kv_codec codec, bool reencode, int32_t pt, uint64_t seed)
{
    struct kvx_kv_layout l;
    wl_layout(&l, codec, pt);
    struct kvx_kv_pool *p = make_pool_mode(&l, 1 << 22, reencode);
    static struct wl ws[2];
    memset(ws, 0, sizeof ws);
    for (int k = 0; k < 2; k++)
        KVX_CHECK(kvx_kv_seq_create(p, &ws[k].s, NULL) == KVX_OK);
    uint64_t rng = seed;
    int bad = 0, compactions = 0, shrank = 0;
    for (int step = 0; step < 300 && !bad; step++) {
        struct wl *w = &ws[rng_int(&rng, 2)];
        const int64_t op = rng_int(&rng, 10);
        struct kvx_kv_pool_stats before, after;
        kvx_kv_pool_get_stats(p, &before);
        if (op < 5 && w->n[0] < 300 && w->n[1] < 300 && kvx_kv_seq_len(w->s) < 700) {
            wl_append(w, &l, 1 + rng_int(&rng, 40));
        } else if (op < 9) {
            wl_compact(w, &l, (int32_t)rng_int(&rng, 2), &rng);
            kvx_kv_pool_get_stats(p, &after);
            compactions++;
            shrank += after.bytes_used < before.bytes_used;
            KVX_CHECK(after.bytes_used <= before.bytes_used);
        } else {
            wl_truncate(w, &rng);
        }
        bad += !pool_ok(p, __LINE__);
        kvx_kv_pool_get_stats(p, &after);
        if (after.pages_used != wl_pages(ws, 2, pt)) {
            kvx_test_fail(__FILE__, __LINE__, "step %d: %lld pages used, slots need %lld", step,
                          (long long)after.pages_used, (long long)wl_pages(ws, 2, pt));
            bad++;
        }
        if (step % 10 == 0)
            for (int k = 0; k < 2; k++)
                bad += wl_verify(&ws[k], &l, __LINE__);
    }
    KVX_CHECK(compactions > 50 && shrank > 5);
    for (int k = 0; k < 2; k++) {
        bad += wl_verify(&ws[k], &l, __LINE__);
        kvx_kv_seq_destroy(ws[k].s);
    }
    pool_ok(p, __LINE__);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* Raw copies (what f32/f16 use) and the get/put path (what codecs without copies use); pages
 * of one tile (runs cut at every tile) and of four (runs realigned across tiles). */
KVX_TEST(evict_compaction_random_f32_f16)
{
    compaction_run(KVX_KV_CODEC_F32, false, 16, 1);
    compaction_run(KVX_KV_CODEC_F16, false, 16, 2);
    compaction_run(KVX_KV_CODEC_F32, false, 64, 5);
    compaction_run(KVX_KV_CODEC_F16, false, 64, 6);
    compaction_run(KVX_KV_CODEC_F32, true, 16, 3);
    compaction_run(KVX_KV_CODEC_F16, true, 64, 4);
}

KVX_TEST(evict_compaction_rejects_bad_keep_lists)
{
    struct kvx_kv_layout l;
    wl_layout(&l, KVX_KV_CODEC_F32, 16);
    struct kvx_kv_pool *p = make_pool(&l, 1 << 22);
    static struct wl w;
    memset(&w, 0, sizeof w);
    KVX_CHECK(kvx_kv_seq_create(p, &w.s, NULL) == KVX_OK);
    wl_append(&w, &l, 40);
    struct kvx_err err = {0};
    const int64_t unordered[3] = {5, 3, 7}, out_of_range[1] = {40}, ok[1] = {39};
    KVX_CHECK(kvx_kv_seq_compact(w.s, 1, unordered, 3, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "out of order") != NULL);
    KVX_CHECK(kvx_kv_seq_compact(w.s, 1, out_of_range, 1, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_kv_seq_compact(w.s, 2, ok, 1, &err) == KVX_ERR_INVALID_ARG); /* SHARED */
    KVX_CHECK(strstr(err.msg, "not a FULL layer") != NULL);
    wl_verify(&w, &l, __LINE__);
    KVX_CHECK(!kvx_kv_seq_compacted(w.s));
    /* a shared page (another reference, as prefix sharing would add) cannot be rewritten */
    struct kvx_kv_view v;
    kvx_kv_seq_view(w.s, 1, &v);
    int32_t id = 0;
    while (kvx_kv_page_data(p, id) && kvx_kv_page_data(p, id) != v.pages[0])
        id++;
    kvx_kv_page_ref(p, id);
    KVX_CHECK(kvx_kv_seq_compact(w.s, 1, ok, 1, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(strstr(err.msg, "shared") != NULL);
    kvx_kv_page_unref(p, id);
    wl_verify(&w, &l, __LINE__);
    KVX_CHECK(kvx_kv_seq_compact(w.s, 1, ok, 1, &err) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_compacted(w.s));
    KVX_CHECK_EQ_INT(kvx_kv_seq_slots(w.s, 1), 1);
    KVX_CHECK_EQ_INT(kvx_kv_seq_min_truncate(w.s), 40);
    kvx_kv_seq_destroy(w.s);
    pool_ok(p, __LINE__);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Budgets and configuration */

KVX_TEST(evict_pyramid_budgets_sum_right)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 31, 16, NULL) == KVX_OK);
    for (int32_t i = 0; i < 31; i++)
        set_full(&l, i, 3, 64, KVX_KV_CODEC_F16);
    l.layers[7].kind = KVX_KV_KIND_WINDOW; /* does not evict, gets no budget */
    l.layers[7].window = 64;
    const struct {
        enum kvx_evict_policy policy;
        int64_t budget;
        double ratio;
        int64_t seen;
        int32_t sinks, window, beta;
    } cases[] = {
        {KVX_EVICT_SINKS, 1024, 0, 5000, -1, -1, 20},   /* f = 4 */
        {KVX_EVICT_H2O, 1024, 0, 5000, -1, -1, 20},     /* f = 512 */
        {KVX_EVICT_SNAPKV, 333, 0, 5000, 2, -1, 7},     /* f = 34, odd sizes */
        {KVX_EVICT_TOVA, 40, 0, 5000, 0, 0, 20},        /* P / beta = 2 */
        {KVX_EVICT_TOVA, 0, 0.25, 4000, 0, 0, 20},      /* ratio: mean 1000 */
        {KVX_EVICT_SINKS, 0, 0.5, 3, -1, -1, 20},       /* tiny: mean 2, all protected */
    };
    int64_t b[31];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct kvx_evict_cfg cfg = kvx_evict_cfg_default();
        cfg.policy = cases[c].policy;
        cfg.budget = cases[c].budget;
        cfg.ratio = cases[c].ratio;
        cfg.schedule = KVX_EVICT_PYRAMID;
        cfg.sinks = cases[c].sinks;
        cfg.window = cases[c].window;
        cfg.pyramid_beta = cases[c].beta;
        struct kvx_kv_evict *ev = NULL;
        struct kvx_err err = {0};
        if (kvx_kv_evict_create(&cfg, &l, 8192, 512, &ev, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "case %zu: %s", c, err.msg);
            continue;
        }
        kvx_kv_evict_budgets(ev, cases[c].seen, b);
        const int64_t mean = cases[c].budget ? cases[c].budget
                                             : (int64_t)ceil(cases[c].ratio * (double)cases[c].seen);
        int64_t sum = 0, prev = INT64_MAX, first = -1, last = -1;
        int bad = b[7] != -1;
        for (int32_t i = 0; i < 31; i++) {
            if (i == 7)
                continue;
            sum += b[i];
            bad += b[i] > prev || b[i] < 1;
            prev = b[i];
            first = first < 0 ? b[i] : first;
            last = b[i];
        }
        int64_t s, w;
        kvx_kv_evict_protected(ev, mean, mean, &s, &w);
        const int64_t lo = (mean - s - w) / cases[c].beta;
        if (bad || sum != 30 * mean || last != s + w + lo || (mean - s - w > 30 && first <= last))
            kvx_test_fail(__FILE__, __LINE__, "case %zu: sum %lld (want %lld), first %lld, last "
                          "%lld (want %lld), %d out of order", c, (long long)sum,
                          (long long)(30 * mean), (long long)first, (long long)last,
                          (long long)(s + w + lo), bad);
        /* uniform: the mean everywhere */
        kvx_kv_evict_destroy(ev);
        cfg.schedule = KVX_EVICT_UNIFORM;
        KVX_CHECK(kvx_kv_evict_create(&cfg, &l, 8192, 512, &ev, NULL) == KVX_OK);
        kvx_kv_evict_budgets(ev, cases[c].seen, b);
        KVX_CHECK(b[0] == mean && b[30] == mean && b[7] == -1);
        kvx_kv_evict_destroy(ev);
    }
    kvx_kv_layout_free(&l);
}

KVX_TEST(evict_config_errors_are_clear)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 2, 16, NULL) == KVX_OK);
    set_full(&l, 0, 2, 16, KVX_KV_CODEC_F32);
    set_full(&l, 1, 2, 16, KVX_KV_CODEC_F32);
    struct {
        int policy;
        int64_t budget;
        double ratio;
        int32_t sinks, window, obs, kernel, schedule;
        const char *needle;
    } cases[] = {
        {99, 64, 0, -1, -1, 32, 7, 0, "unknown eviction policy"},
        {KVX_EVICT_H2O, 0, 0, -1, -1, 32, 7, 0, "needs a budget"},
        {KVX_EVICT_H2O, 0, 1.5, -1, -1, 32, 7, 0, "needs a budget"},
        {KVX_EVICT_H2O, -3, 0, -1, -1, 32, 7, 0, "outside 1..4096"},
        {KVX_EVICT_TOVA, 5000, 0, -1, -1, 32, 7, 0, "outside 1..4096"},
        {KVX_EVICT_SINKS, 8, 0, 4, 10, 32, 7, 0, "exceed the budget"},
        {KVX_EVICT_SNAPKV, 16, 0, -1, -1, 32, 7, 0, "exceed the budget"},
        {KVX_EVICT_SNAPKV, 256, 0, -1, -1, 100, 7, 0, "observation window 100"},
        {KVX_EVICT_SNAPKV, 256, 0, -1, -1, 32, 4, 0, "kernel 4"},
        {KVX_EVICT_SINKS, 256, 0, -1, -1, 32, 7, 9, "unknown eviction schedule"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct kvx_evict_cfg cfg = kvx_evict_cfg_default();
        cfg.policy = (enum kvx_evict_policy)cases[c].policy;
        cfg.budget = cases[c].budget;
        cfg.ratio = cases[c].ratio;
        cfg.sinks = cases[c].sinks;
        cfg.window = cases[c].window;
        cfg.obs_window = cases[c].obs;
        cfg.pool_kernel = cases[c].kernel;
        cfg.schedule = (enum kvx_evict_schedule)cases[c].schedule;
        struct kvx_kv_evict *ev = NULL;
        struct kvx_err err = {0};
        enum kvx_status st = kvx_kv_evict_create(&cfg, &l, 4096, 64, &ev, &err);
        if (st != KVX_ERR_INVALID_ARG || ev || !strstr(err.msg, cases[c].needle))
            kvx_test_fail(__FILE__, __LINE__, "case %zu: status %d, message '%s' (want '%s')",
                          c, (int)st, err.msg, cases[c].needle);
        kvx_kv_evict_destroy(ev);
    }
    struct kvx_evict_cfg none = kvx_evict_cfg_default();
    struct kvx_kv_evict *ev = (struct kvx_kv_evict *)&none;
    KVX_CHECK(kvx_kv_evict_create(&none, &l, 4096, 64, &ev, NULL) == KVX_OK && ev == NULL);
    enum kvx_evict_policy pol;
    KVX_CHECK(kvx_evict_policy_parse("snapkv", &pol) && pol == KVX_EVICT_SNAPKV);
    KVX_CHECK(!kvx_evict_policy_parse("lru", &pol));
    KVX_CHECK(strcmp(kvx_evict_policy_name(KVX_EVICT_TOVA), "tova") == 0);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * The real model */

struct model_fix {
    struct kvx_model *m;
    struct kvx_model_info info;
};

static bool model_open(struct model_fix *f)
{
    memset(f, 0, sizeof *f);
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("default model not present (make model)");
        return false;
    }
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &f->m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "open: %s", err.msg);
        return false;
    }
    kvx_model_get_info(f->m, &f->info);
    return true;
}

static struct kvx_engine_cfg small_cfg(void)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 256;
    ec.n_threads = 2;
    ec.n_batch = 16;
    ec.page_tokens = 16;
    return ec;
}

/* Feed 32 prompt tokens (2 chunks of 16) and 4 decode tokens; every row of logits to out. */
static bool run_tokens(struct kvx_engine *e, const int32_t *toks, float *out, size_t V)
{
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    bool ok = kvx_session_create(e, &s, &err) == KVX_OK &&
              kvx_session_feed(s, toks, 32, true, out, &err) == KVX_OK;
    for (int i = 0; ok && i < 4; i++)
        ok = kvx_session_feed(s, toks + 32 + i, 1, true, out + (32 + (size_t)i) * V, &err) == KVX_OK;
    if (!ok)
        kvx_test_fail(__FILE__, __LINE__, "feed: %s", err.msg);
    kvx_session_destroy(s);
    return ok;
}

KVX_TEST(evict_budget_at_context_changes_nothing)
{
    struct model_fix f;
    if (!model_open(&f))
        return;
    const size_t V = (size_t)f.info.n_vocab;
    int32_t toks[36];
    uint64_t rng = 3;
    for (int i = 0; i < 36; i++)
        toks[i] = (int32_t)rng_int(&rng, f.info.n_vocab);
    float *base = malloc(36 * V * sizeof *base), *got = malloc(36 * V * sizeof *got);
    struct kvx_engine_cfg ec = small_cfg();
    struct kvx_engine *e = NULL;
    KVX_CHECK(kvx_engine_create(f.m, &ec, &e, NULL) == KVX_OK);
    bool ok = e && run_tokens(e, toks, base, V);
    kvx_engine_destroy(e);
    for (int p = KVX_EVICT_SINKS; ok && p <= KVX_EVICT_COUNT; p++) {
        ec = small_cfg();
        ec.evict.policy = p < KVX_EVICT_COUNT ? (enum kvx_evict_policy)p : KVX_EVICT_H2O;
        ec.evict.budget = p < KVX_EVICT_COUNT ? 256 : 0; /* the context */
        ec.evict.ratio = 1.0;                            /* or everything seen */
        ec.evict.obs_window = 16;
        struct kvx_err err = {0};
        if (kvx_engine_create(f.m, &ec, &e, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
            break;
        }
        memset(got, 0, 36 * V * sizeof *got);
        if (run_tokens(e, toks, got, V) && memcmp(base, got, 36 * V * sizeof *got) != 0)
            kvx_test_fail(__FILE__, __LINE__, "policy %s: logits differ from no eviction",
                          kvx_evict_policy_name(ec.evict.policy));
        kvx_engine_destroy(e);
    }
    free(base);
    free(got);
    kvx_model_close(f.m);
}

/* Every policy on a prompt and decode, in a pool that holds only 48 of the 70 tokens fed:
 * the pool stays consistent after every step, each layer holds its budget, and logits stay
 * finite; truncation then refeeding works. */
KVX_TEST(evict_real_model_runs_within_budget)
{
    struct model_fix f;
    if (!model_open(&f))
        return;
    const size_t V = (size_t)f.info.n_vocab;
    int32_t toks[70];
    uint64_t rng = 9;
    for (int i = 0; i < 70; i++)
        toks[i] = (int32_t)rng_int(&rng, f.info.n_vocab);
    float *logits = malloc(V * sizeof *logits);
    const int64_t per_token = 30 * 3 * 64 * 2 * 2; /* f16 K and V, 30 layers, 3 KV heads */
    for (int p = KVX_EVICT_SINKS; p < KVX_EVICT_COUNT; p++) {
        struct kvx_engine_cfg ec = small_cfg();
        ec.kv_budget_bytes = (size_t)(48 * per_token);
        ec.evict.policy = (enum kvx_evict_policy)p;
        ec.evict.budget = 20;
        ec.evict.obs_window = 8;
        ec.evict.schedule = p == KVX_EVICT_H2O ? KVX_EVICT_PYRAMID : KVX_EVICT_UNIFORM;
        struct kvx_engine *e = NULL;
        struct kvx_session *s = NULL;
        struct kvx_err err = {0};
        if (kvx_engine_create(f.m, &ec, &e, &err) != KVX_OK ||
            kvx_session_create(e, &s, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
            kvx_engine_destroy(e);
            continue;
        }
        const char *name = kvx_evict_policy_name(ec.evict.policy);
        struct kvx_kv_pool *pool = kvx_engine_pool(e);
        bool ok = kvx_session_feed(s, toks, 66, false, logits, &err) == KVX_OK;
        for (int i = 0; ok && i < 4; i++) {
            ok = kvx_session_feed(s, toks + 66 + i, 1, false, logits, &err) == KVX_OK &&
                 pool_ok(pool, __LINE__);
            for (size_t x = 0; ok && x < V; x++)
                ok = isfinite(logits[x]);
        }
        if (!ok)
            kvx_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        struct kvx_kv_stats st;
        kvx_engine_kv_stats(e, &st);
        KVX_CHECK_EQ_INT(st.tokens_cached, 70);
        KVX_CHECK_EQ_INT(st.layer_tokens, 30 * 20);
        KVX_CHECK_EQ_INT(st.layer_tokens_evicted, 30 * (70 - 20));
        KVX_CHECK(st.evict_policy == (int32_t)ec.evict.policy);
        KVX_CHECK(kvx_session_evicts(s) && kvx_kv_seq_compacted(kvx_engine_session_seq(s)));
        if (ec.evict.schedule == KVX_EVICT_UNIFORM)
            KVX_CHECK_EQ_INT(kvx_kv_seq_slots(kvx_engine_session_seq(s), 29), 20);
        else
            KVX_CHECK(kvx_kv_seq_slots(kvx_engine_session_seq(s), 0) > kvx_kv_seq_slots(kvx_engine_session_seq(s), 29));
        char *rep = kvx_engine_kv_report(e);
        KVX_CHECK(rep && strstr(rep, "eviction: ") && strstr(rep, name));
        free(rep);
        /* truncating below the last eviction empties the session; it runs again */
        KVX_CHECK(kvx_session_truncate(s, 50, &err) == KVX_OK);
        KVX_CHECK_EQ_INT(kvx_session_n_past(s), 0);
        kvx_engine_kv_stats(e, &st);
        KVX_CHECK_EQ_INT(st.layer_tokens + st.layer_tokens_evicted, 0);
        KVX_CHECK(kvx_session_feed(s, toks, 8, false, logits, &err) == KVX_OK);
        pool_ok(pool, __LINE__);
        kvx_session_destroy(s);
        kvx_engine_destroy(e);
    }
    free(logits);
    kvx_model_close(f.m);
}

/* ---------------------------------------------------------------------------------------------
 * Benchmark (KVX_BENCH=1): the cost eviction adds to a decode step, without the model — the
 * default model's cache shape (30 layers, 3 KV heads, dim 64, f16, pages of 256), a budget of
 * 2048, one token in and one out per layer each step. */

static float bench_pattern(int32_t layer, int32_t head, int64_t slot, int64_t n)
{
    (void)n;
    uint64_t x = (uint64_t)(layer * 7919 + head * 104729) + (uint64_t)slot * 2654435761u;
    return (float)(rng_next(&x) % 1000) * 1e-6f;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

KVX_TEST(evict_bench_decode_step)
{
    const char *on = getenv("KVX_BENCH");
    if (!on || strcmp(on, "1") != 0) {
        kvx_test_skip("set KVX_BENCH=1");
        return;
    }
    const struct {
        int policy, reencode, slack;
    } runs[] = {
        {KVX_EVICT_SINKS, 0, 0}, {KVX_EVICT_SINKS, 1, 0}, {KVX_EVICT_SINKS, 0, 32},
        {KVX_EVICT_H2O, 0, 0},   {KVX_EVICT_H2O, 0, 32},  {KVX_EVICT_SNAPKV, 0, 0},
        {KVX_EVICT_TOVA, 0, 0},  {KVX_EVICT_TOVA, 0, 32},
    };
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        struct kvx_evict_cfg c = kvx_evict_cfg_default();
        c.policy = (enum kvx_evict_policy)runs[k].policy;
        c.budget = 2048;
        c.slack = runs[k].slack;
        struct rig r;
        if (!rig_open_shape(&r, 30, 3, 64, KVX_KV_CODEC_F16, 256, (size_t)1 << 30, &c))
            return;
        if (runs[k].reencode) { /* the same, moving tokens through get/put */
            kvx_kv_seq_destroy(r.seq);
            kvx_kv_pool_destroy(r.pool);
            r.pool = make_pool_mode(&r.layout, (size_t)1 << 30, true);
            KVX_CHECK(kvx_kv_seq_create(r.pool, &r.seq, NULL) == KVX_OK);
        }
        for (int i = 0; i < 4; i++)
            rig_step(&r, 512, 2048, i == 3, bench_pattern);
        const int steps = 64;
        double t = 0;
        for (int i = 0; i < steps; i++) {
            const int64_t len = kvx_kv_seq_len(r.seq);
            const struct kvx_kv_evict_step st = {.n_tok = 1, .feed_len = 1, .last_chunk = true};
            uint8_t want[1];
            const struct kvx_attn_acc_seq *acc = NULL;
            KVX_CHECK(kvx_kv_seq_reserve(r.seq, len + 1, NULL) == KVX_OK);
            KVX_CHECK(kvx_kv_evict_step_begin(r.es, r.seq, &st, want, &acc, NULL) == KVX_OK);
            write_tokens(r.seq, &r.layout, len, len + 1);
            const double t0 = cpu_ms();
            KVX_CHECK(kvx_kv_evict_step_end(r.es, r.seq, &st, NULL) == KVX_OK);
            t += cpu_ms() - t0;
        }
        pool_ok(r.pool, __LINE__);
        printf("  %-6s %-7s slack %2d: eviction %.2f ms per decode step\n",
               kvx_evict_policy_name(c.policy), runs[k].reencode ? "get/put" : "copy",
               runs[k].slack, t / steps);
        rig_close(&r);
    }
}
