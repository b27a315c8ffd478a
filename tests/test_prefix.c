/* tests/test_prefix: sharing KV pages between sequences — fork and copy-on-write, the prefix
 * cache (radix tree of blocks, attach, insert, LRU release under the budget) with the pool's
 * invariant check after every operation; then, on the default model, cached prefixes and forks
 * against fresh sessions (bit-exact with f32 KV), the memory of N sessions sharing a prefix, and
 * KV_FULL leaving other sessions intact.
 *
 * Pool-level tests store a pattern that depends on a hash of the whole token prefix up to each
 * position (as real K/V do), so attaching a wrong block, or a write leaking into a shared page,
 * shows up as a wrong value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "kv/prefix.h"
#include "kvx.h"
#include "test.h"

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

/* Hash of tokens[0..pos] given the hash up to pos - 1. */
static uint64_t prefix_mix(uint64_t h, int32_t tok)
{
    h ^= (uint64_t)(uint32_t)tok + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xbf58476d1ce4e5b9ull;
}

/* The value stored for component idx of K (kv 0) or V (kv 1) at a position whose token
 * prefix hashes to h: multiples of 1/8 below 256, exact in f16. */
static float pattern(uint64_t h, int32_t layer, int32_t idx, int kv)
{
    float x = (float)(((h >> 20) + (uint64_t)layer * 17 + (uint64_t)idx * 7) % 2048) / 8.0f;
    return kv ? -x : x;
}

/* A small layout: two FULL layers of different page sizes (two size classes), a SHARED one
 * and one that keeps nothing. */
static void small_layout(struct kvx_kv_layout *l, int32_t page_tokens)
{
    KVX_CHECK(kvx_kv_layout_init(l, 4, page_tokens, NULL) == KVX_OK);
    l->layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 2, .k_dim = 8,
                                            .v_dim = 12, .shared_from = -1,
                                            .k_codec = KVX_KV_CODEC_F16, .v_codec = KVX_KV_CODEC_F16};
    l->layers[1] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED, .shared_from = 0};
    l->layers[2] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 1, .k_dim = 5,
                                            .v_dim = 3, .shared_from = -1,
                                            .k_codec = KVX_KV_CODEC_F32, .v_codec = KVX_KV_CODEC_F16};
    KVX_CHECK(kvx_kv_layout_validate(l, NULL) == KVX_OK);
}

static struct kvx_kv_pool *make_pool(const struct kvx_kv_layout *l, size_t budget)
{
    struct kvx_kv_pool_cfg cfg = {.layout = l, .budget_bytes = budget, .isa = kvx_cpu_best_isa()};
    struct kvx_kv_pool *p = NULL;
    struct kvx_err err = {0};
    if (kvx_kv_pool_create(&cfg, &p, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "pool create: %s", err.msg);
    return p;
}

static bool pool_ok(const struct kvx_kv_pool *p, int step)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(p, &err) == KVX_OK)
        return true;
    kvx_test_fail(__FILE__, __LINE__, "step %d: %s", step, err.msg);
    return false;
}

/* A sequence and its token history, with the prefix hash of every position. */
struct tseq {
    struct kvx_kv_seq *s;
    int32_t tok[512];
    uint64_t h[512];
    int32_t tmpl;          /* random workload: its prompt */
    int64_t cut;           /* and where its own tokens begin */
};

static void tseq_set(struct tseq *t, int64_t pos, int32_t tok)
{
    t->tok[pos] = tok;
    t->h[pos] = prefix_mix(pos ? t->h[pos - 1] : 0, tok);
}

/* Store the pattern of positions [from, to) in every owning layer. */
static void tseq_write(struct tseq *t, const struct kvx_kv_layout *l, int64_t from, int64_t to)
{
    float k[64], v[64];
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        if (!kvx_kv_layer_owns(c))
            continue;
        for (int64_t pos = from; pos < to; pos++) {
            for (int32_t j = 0; j < c->n_kv_heads * c->k_dim; j++)
                k[j] = pattern(t->h[pos], i, j, 0);
            for (int32_t j = 0; j < c->n_kv_heads * c->v_dim; j++)
                v[j] = pattern(t->h[pos], i, j, 1);
            kvx_kv_seq_write(t->s, i, pos, k, v);
        }
    }
}

/* Values at `pos` of `layer` (through its view) that differ from the sequence's pattern. */
static int tseq_bad(const struct tseq *t, const struct kvx_kv_layout *l, int32_t layer, int64_t pos)
{
    struct kvx_kv_view v;
    kvx_kv_seq_view(t->s, layer, &v);
    int32_t src = kvx_kv_layer_source(l, layer);
    if (v.n_pages == 0)
        return 0; /* owns nothing */
    float buf[64];
    int bad = 0;
    for (int32_t h = 0; h < v.n_kv_heads; h++) {
        if (!kvx_kv_view_get_k(&v, h, pos, buf) || !kvx_kv_view_get_v(&v, h, pos, buf + 32))
            return 1;
        for (int32_t c = 0; c < v.k_dim; c++)
            bad += buf[c] != pattern(t->h[pos], src, h * v.k_dim + c, 0);
        for (int32_t c = 0; c < v.v_dim; c++)
            bad += buf[32 + c] != pattern(t->h[pos], src, h * v.v_dim + c, 1);
    }
    return bad;
}

static int tseq_verify_all(const struct tseq *t, const struct kvx_kv_layout *l)
{
    int bad = 0;
    for (int64_t pos = 0; pos < kvx_kv_seq_len(t->s); pos++)
        for (int32_t i = 0; i < l->n_layer; i++)
            bad += tseq_bad(t, l, i, pos);
    return bad;
}

/* Grow t to n tokens the way the engine does: attach what the cache holds of the history
 * (at most max_attach tokens), reserve the rest (undo the attach when the rest does not fit,
 * then try without it), write the computed positions, insert the new whole blocks. */
static enum kvx_status tseq_grow(struct tseq *t, const struct kvx_kv_layout *l,
                                 struct kvx_kv_prefix *tree, int64_t n, int64_t max_attach,
                                 int64_t *attached, struct kvx_err *err)
{
    const int64_t len = kvx_kv_seq_len(t->s);
    int64_t start = len;
    *attached = 0;
    if (tree) {
        enum kvx_status st = kvx_kv_prefix_attach(tree, t->s, t->tok, max_attach, &start, err);
        if (st != KVX_OK)
            return st;
    }
    enum kvx_status st = kvx_kv_seq_reserve(t->s, n, err);
    if (st != KVX_OK && start > len) {
        kvx_kv_seq_truncate(t->s, len);
        start = len;
        st = kvx_kv_seq_reserve(t->s, n, err);
    }
    if (st != KVX_OK)
        return st;
    *attached = start - len;
    tseq_write(t, l, start, n);
    kvx_kv_seq_set_len(t->s, n);
    if (tree)
        KVX_CHECK(kvx_kv_prefix_insert(tree, t->s, t->tok, NULL) == KVX_OK);
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Fork and copy-on-write */

KVX_TEST(prefix_fork_copy_on_write)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    const size_t block = kvx_kv_layout_seq_bytes(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, 8 * block);
    struct tseq *a = calloc(2, sizeof *a), *b = a + 1;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_seq_create(p, &a->s, NULL) == KVX_OK);
    for (int64_t i = 0; i < 40; i++)
        tseq_set(a, i, (int32_t)(i * 3 + 1));
    KVX_CHECK(kvx_kv_seq_reserve(a->s, 40, NULL) == KVX_OK);
    tseq_write(a, &l, 0, 40);
    kvx_kv_seq_set_len(a->s, 40);
    struct kvx_kv_pool_stats st0, st1;
    kvx_kv_pool_get_stats(p, &st0);
    KVX_CHECK(kvx_kv_seq_fork(a->s, &b->s, &err) == KVX_OK);
    memcpy(b->tok, a->tok, sizeof a->tok);
    memcpy(b->h, a->h, sizeof a->h);
    pool_ok(p, 0);
    /* the fork holds no page of its own: 3 pages per layer, referenced twice */
    kvx_kv_pool_get_stats(p, &st1);
    KVX_CHECK_EQ_INT(st1.bytes_used, st0.bytes_used);
    KVX_CHECK_EQ_INT(kvx_kv_pool_shared_bytes(p), kvx_kv_layout_seq_bytes(&l, 40));
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(b->s), 40);
    KVX_CHECK_EQ_INT(tseq_verify_all(b, &l), 0);
    /* a write into a shared page without reserve is refused */
    float junk[64] = {0};
    kvx_kv_seq_write(b->s, 0, 39, junk, junk);
    KVX_CHECK_EQ_INT(tseq_verify_all(a, &l), 0);
    /* both continue differently: the shared partial page (tokens 32..39) is copied once each */
    for (int64_t i = 40; i < 60; i++) {
        tseq_set(a, i, 7);
        tseq_set(b, i, 8);
    }
    KVX_CHECK(kvx_kv_seq_reserve(b->s, 60, &err) == KVX_OK);
    tseq_write(b, &l, 40, 60);
    kvx_kv_seq_set_len(b->s, 60);
    pool_ok(p, 1);
    KVX_CHECK(kvx_kv_seq_reserve(a->s, 60, &err) == KVX_OK);
    tseq_write(a, &l, 40, 60);
    kvx_kv_seq_set_len(a->s, 60);
    pool_ok(p, 2);
    KVX_CHECK_EQ_INT(tseq_verify_all(a, &l), 0);
    KVX_CHECK_EQ_INT(tseq_verify_all(b, &l), 0);
    /* blocks 0 and 1 are still shared; block 2 was copied, block 3 is each one's own */
    KVX_CHECK_EQ_INT(kvx_kv_pool_shared_bytes(p), kvx_kv_layout_seq_bytes(&l, 32));
    kvx_kv_pool_get_stats(p, &st1);
    KVX_CHECK_EQ_INT(st1.bytes_used, kvx_kv_layout_seq_bytes(&l, 32) + 2 * kvx_kv_layout_seq_bytes(&l, 32));
    /* truncating into the shared blocks and writing copies the page first */
    kvx_kv_seq_truncate(a->s, 20);
    for (int64_t i = 20; i < 30; i++)
        tseq_set(a, i, 99);
    KVX_CHECK(kvx_kv_seq_reserve(a->s, 30, &err) == KVX_OK);
    tseq_write(a, &l, 20, 30);
    kvx_kv_seq_set_len(a->s, 30);
    pool_ok(p, 3);
    KVX_CHECK_EQ_INT(tseq_verify_all(a, &l), 0);
    KVX_CHECK_EQ_INT(tseq_verify_all(b, &l), 0);
    /* unshare: b gets private copies of everything from position 0 on */
    KVX_CHECK(kvx_kv_seq_unshare(b->s, 0, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_kv_pool_shared_bytes(p), 0);
    KVX_CHECK_EQ_INT(tseq_verify_all(b, &l), 0);
    pool_ok(p, 4);
    kvx_kv_seq_destroy(a->s);
    kvx_kv_seq_destroy(b->s);
    kvx_kv_pool_get_stats(p, &st1);
    KVX_CHECK_EQ_INT(st1.bytes_used, 0);
    pool_ok(p, 5);
    free(a);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* The copy of a shared page is part of reserve's plan: when it does not fit, nothing changes. */
KVX_TEST(prefix_copy_on_write_is_all_or_nothing)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    const size_t block = kvx_kv_layout_seq_bytes(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, 2 * block);
    struct kvx_kv_seq *a = NULL, *b = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_seq_create(p, &a, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(a, 24, NULL) == KVX_OK);
    kvx_kv_seq_set_len(a, 24);
    KVX_CHECK(kvx_kv_seq_fork(a, &b, &err) == KVX_OK);
    struct kvx_kv_pool_stats before, after;
    kvx_kv_pool_get_stats(p, &before);
    /* the budget is full: b's write into the shared page 1 needs a copy that does not fit */
    KVX_CHECK(kvx_kv_seq_reserve(b, 25, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(strstr(err.msg, "KV budget exhausted: need ") != NULL);
    kvx_kv_pool_get_stats(p, &after);
    KVX_CHECK(memcmp(&before, &after, sizeof before) == 0);
    KVX_CHECK_EQ_INT(kvx_kv_seq_reserved(b), 24);
    pool_ok(p, 0);
    /* once a lets go of the page, b writes in place */
    kvx_kv_seq_destroy(a);
    KVX_CHECK(kvx_kv_seq_reserve(b, 25, &err) == KVX_OK);
    pool_ok(p, 1);
    kvx_kv_seq_destroy(b);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * The prefix cache */

/* N sequences with the same P-token prefix hold P + N * own tokens of KV, not N * (P + own),
 * up to page rounding; every one of them reads its own values. */
KVX_TEST(prefix_shared_prefix_memory)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)1 << 20);
    struct kvx_kv_prefix *tree = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_prefix_create(p, &tree, &err) == KVX_OK);
    enum { N = 5, P = 80, OWN = 30 };
    struct tseq *ts = calloc(N, sizeof *ts);
    int64_t reused = 0;
    for (int i = 0; i < N; i++) {
        KVX_CHECK(kvx_kv_seq_create(p, &ts[i].s, NULL) == KVX_OK);
        for (int64_t pos = 0; pos < P + OWN; pos++)
            tseq_set(&ts[i], pos, pos < P ? (int32_t)(pos * 5 % 11) : (int32_t)(100 + i));
        int64_t attached = 0;
        KVX_CHECK(tseq_grow(&ts[i], &l, tree, P + OWN, P + OWN - 1, &attached, &err) == KVX_OK);
        KVX_CHECK_EQ_INT(attached, i ? P : 0); /* P = 5 whole blocks */
        reused += attached;
        pool_ok(p, i);
    }
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    /* prefix blocks once; the block holding P + OWN - 1 and the ones between per sequence */
    KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(&l, P) +
                                        N * (kvx_kv_layout_seq_bytes(&l, P + OWN) -
                                             kvx_kv_layout_seq_bytes(&l, P)));
    KVX_CHECK(st.bytes_used < (size_t)N * kvx_kv_layout_seq_bytes(&l, P + OWN) / 2);
    struct kvx_kv_prefix_stats ps;
    kvx_kv_prefix_get_stats(tree, &ps);
    KVX_CHECK_EQ_INT(ps.tokens_attached, reused);
    KVX_CHECK_EQ_INT(ps.n_blocks, P / 16 + N); /* the prefix, then one own block each */
    KVX_CHECK_EQ_INT(ps.bytes_idle, 0);
    KVX_CHECK_EQ_INT(kvx_kv_pool_shared_bytes(p), kvx_kv_layout_seq_bytes(&l, P));
    for (int i = 0; i < N; i++)
        KVX_CHECK_EQ_INT(tseq_verify_all(&ts[i], &l), 0);
    /* lookups: whole blocks, then the agreeing part of the next one */
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[0].tok, 200), P + 16);
    int32_t other[100];
    memcpy(other, ts[0].tok, sizeof other);
    other[37] = 12345;
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, other, 100), 37);
    for (int i = 0; i < N; i++)
        kvx_kv_seq_destroy(ts[i].s);
    kvx_kv_prefix_get_stats(tree, &ps);
    KVX_CHECK_EQ_INT(ps.bytes_idle, ps.bytes);
    pool_ok(p, N);
    kvx_kv_prefix_destroy(tree);
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, 0);
    pool_ok(p, N + 1);
    free(ts);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* A partly agreeing block is attached for the tokens that agree and copied before the first
 * write; the attach is refused for window layouts and unshareable sequences. */
KVX_TEST(prefix_partial_block_and_refusals)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)1 << 20);
    struct kvx_kv_prefix *tree = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_prefix_create(p, &tree, &err) == KVX_OK);
    struct tseq *ts = calloc(3, sizeof *ts);
    for (int i = 0; i < 3; i++) {
        KVX_CHECK(kvx_kv_seq_create(p, &ts[i].s, NULL) == KVX_OK);
        for (int64_t pos = 0; pos < 64; pos++)
            tseq_set(&ts[i], pos, pos < 40 ? (int32_t)pos : (int32_t)(1000 * i + pos));
    }
    int64_t attached = 0;
    KVX_CHECK(tseq_grow(&ts[0], &l, tree, 48, 48, &attached, &err) == KVX_OK);
    /* 40 tokens agree: blocks 0, 1 whole and 8 tokens of block 2 */
    KVX_CHECK(tseq_grow(&ts[1], &l, tree, 50, 50, &attached, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(attached, 40);
    pool_ok(p, 0);
    KVX_CHECK_EQ_INT(tseq_verify_all(&ts[0], &l), 0);
    KVX_CHECK_EQ_INT(tseq_verify_all(&ts[1], &l), 0);
    /* a whole cached history may be attached without computing anything */
    for (int64_t pos = 0; pos < 48; pos++)
        tseq_set(&ts[2], pos, ts[0].tok[pos]);
    KVX_CHECK(tseq_grow(&ts[2], &l, tree, 48, 48, &attached, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(attached, 48);
    KVX_CHECK_EQ_INT(tseq_verify_all(&ts[2], &l), 0);
    pool_ok(p, 1);
    /* unshareable: not attached, not inserted */
    kvx_kv_seq_truncate(ts[2].s, 0);
    kvx_kv_seq_set_shareable(ts[2].s, false);
    KVX_CHECK(!kvx_kv_seq_shareable(ts[2].s));
    KVX_CHECK(tseq_grow(&ts[2], &l, tree, 48, 48, &attached, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(attached, 0);
    int32_t ids[8];
    KVX_CHECK(kvx_kv_seq_block_pages(ts[0].s, 0, ids));
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 3, 1, ids, 60, &err) == KVX_ERR_UNSUPPORTED);
    kvx_kv_seq_truncate(ts[2].s, 0);
    KVX_CHECK(kvx_kv_seq_shareable(ts[2].s));
    /* bad ranges and page ids */
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 1, 1, ids, 20, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 0, 1, ids, 17, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 0, 1, ids, 0, &err) == KVX_ERR_INVALID_ARG);
    int32_t swapped[2] = {ids[1], ids[0]};
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 0, 1, swapped, 16, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "not a live page") != NULL);
    KVX_CHECK(kvx_kv_seq_attach(ts[2].s, 0, 1, ids, 16, &err) == KVX_OK);
    pool_ok(p, 2);
    /* the check sees a reference nobody accounts for */
    kvx_kv_page_ref(p, ids[0]);
    KVX_CHECK(kvx_kv_pool_check(p, &err) == KVX_ERR_FORMAT);
    kvx_kv_page_unref(p, ids[0]);
    pool_ok(p, 3);
    for (int i = 0; i < 3; i++)
        kvx_kv_seq_destroy(ts[i].s);
    kvx_kv_prefix_destroy(tree);
    free(ts);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);

    /* window layers do not take part */
    KVX_CHECK(kvx_kv_layout_init(&l, 1, 16, NULL) == KVX_OK);
    l.layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_WINDOW, .n_kv_heads = 1, .k_dim = 8,
                                           .v_dim = 8, .window = 20, .shared_from = -1,
                                           .k_codec = KVX_KV_CODEC_F16, .v_codec = KVX_KV_CODEC_F16};
    p = make_pool(&l, (size_t)1 << 20);
    KVX_CHECK(!kvx_kv_prefix_supported(&l));
    KVX_CHECK(kvx_kv_prefix_create(p, &tree, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(tree == NULL && strstr(err.msg, "window") != NULL);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* When the budget runs out, idle cached blocks go least recently used first, and only when
 * that makes the request fit; blocks a sequence uses never go. */
KVX_TEST(prefix_lru_release_under_budget)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    const size_t block = kvx_kv_layout_seq_bytes(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, 6 * block);
    struct kvx_kv_prefix *tree = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_prefix_create(p, &tree, &err) == KVX_OK);
    struct tseq *ts = calloc(4, sizeof *ts);
    int64_t attached;
    /* three two-block prefixes A, B, C, then idle */
    for (int i = 0; i < 3; i++) {
        KVX_CHECK(kvx_kv_seq_create(p, &ts[i].s, NULL) == KVX_OK);
        for (int64_t pos = 0; pos < 32; pos++)
            tseq_set(&ts[i], pos, (int32_t)(i * 100 + pos));
        KVX_CHECK(tseq_grow(&ts[i], &l, tree, 32, 31, &attached, &err) == KVX_OK);
        kvx_kv_seq_destroy(ts[i].s);
        ts[i].s = NULL;
    }
    struct kvx_kv_prefix_stats ps;
    kvx_kv_prefix_get_stats(tree, &ps);
    KVX_CHECK_EQ_INT(ps.n_blocks, 6);
    KVX_CHECK_EQ_INT(ps.bytes_idle, 6 * block);
    /* using A makes B the least recently used */
    KVX_CHECK(kvx_kv_seq_create(p, &ts[3].s, NULL) == KVX_OK);
    memcpy(ts[3].tok, ts[0].tok, sizeof ts[0].tok);
    memcpy(ts[3].h, ts[0].h, sizeof ts[0].h);
    KVX_CHECK(tseq_grow(&ts[3], &l, tree, 32, 32, &attached, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(attached, 32);
    kvx_kv_seq_truncate(ts[3].s, 0);
    /* a request the budget cannot hold even without the cache changes nothing */
    KVX_CHECK(kvx_kv_seq_reserve(ts[3].s, 7 * 16, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(strstr(err.msg, "need ") != NULL);
    kvx_kv_prefix_get_stats(tree, &ps);
    KVX_CHECK_EQ_INT(ps.n_blocks, 6);
    /* two blocks: B's go (leaf first, then its parent) */
    for (int64_t pos = 0; pos < 32; pos++)
        tseq_set(&ts[3], pos, (int32_t)(500 + pos));
    KVX_CHECK(tseq_grow(&ts[3], &l, tree, 32, 31, &attached, &err) == KVX_OK);
    pool_ok(p, 0);
    kvx_kv_prefix_get_stats(tree, &ps);
    KVX_CHECK_EQ_INT(ps.blocks_evicted, 2);
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[0].tok, 32), 32);
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[1].tok, 32), 0);
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[2].tok, 32), 32);
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[3].tok, 32), 32);
    /* ts[3]'s blocks are in use: a request for 5 more blocks may only take A's and C's */
    KVX_CHECK(kvx_kv_seq_create(p, &ts[0].s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(ts[0].s, 5 * 16, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(kvx_kv_seq_reserve(ts[0].s, 4 * 16, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_kv_prefix_lookup(tree, ts[3].tok, 32), 32);
    KVX_CHECK_EQ_INT(tseq_verify_all(&ts[3], &l), 0);
    pool_ok(p, 1);
    KVX_CHECK(!kvx_kv_prefix_evict_one(tree));
    kvx_kv_seq_destroy(ts[0].s);
    kvx_kv_seq_destroy(ts[3].s);
    KVX_CHECK(kvx_kv_prefix_evict_one(tree));
    pool_ok(p, 2);
    kvx_kv_prefix_destroy(tree);
    free(ts);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Randomized workload: create, grow (attach + reserve + write + insert), fork, truncate,
 * unshare, destroy, under a budget small enough for KV_FULL and LRU releases; the invariant
 * check after every operation and stored values compared with each history. */

#define RW_SEQS 6

/* Three prompts, then tokens from a vocabulary of three (so that histories also meet by
 * chance). */
static int32_t rw_token(uint64_t *rng, const struct tseq *t, int64_t pos)
{
    return pos < t->cut ? t->tmpl * 1000 + (int32_t)(pos % 5) : (int32_t)(10 + rng_int(rng, 3));
}

struct rw_stats {
    int64_t full, grown, attached, forks;
};

static void rw_grow(struct tseq *t, const struct kvx_kv_layout *l, struct kvx_kv_pool *p,
                    struct kvx_kv_prefix *tree, uint64_t *rng, struct rw_stats *rs)
{
    const int64_t len = kvx_kv_seq_len(t->s), n = len + 1 + rng_int(rng, 40);
    if (n > 500)
        return;
    for (int64_t pos = len; pos < n; pos++)
        tseq_set(t, pos, rw_token(rng, t, pos));
    struct kvx_kv_pool_stats before, after;
    kvx_kv_pool_get_stats(p, &before);
    struct kvx_err err = {0};
    int64_t attached = 0;
    int64_t max_attach = rng_int(rng, 2) ? n : n - 1;
    enum kvx_status st = tseq_grow(t, l, tree, n, max_attach, &attached, &err);
    if (st == KVX_ERR_KV_FULL) {
        kvx_kv_pool_get_stats(p, &after);
        KVX_CHECK(memcmp(&before, &after, sizeof before) == 0);
        KVX_CHECK_EQ_INT(kvx_kv_seq_len(t->s), len);
        KVX_CHECK(strstr(err.msg, "KV budget exhausted: need ") != NULL);
        rs->full++;
        return;
    }
    KVX_CHECK(st == KVX_OK);
    rs->grown++;
    rs->attached += attached;
}

static void rw_step(struct tseq *ts, const struct kvx_kv_layout *l, struct kvx_kv_pool *p,
                    struct kvx_kv_prefix *tree, uint64_t *rng, struct rw_stats *rs)
{
    struct tseq *t = &ts[rng_int(rng, RW_SEQS)];
    int op = (int)rng_int(rng, 20);
    if (!t->s) {
        KVX_CHECK(kvx_kv_seq_create(p, &t->s, NULL) == KVX_OK);
        t->tmpl = (int32_t)rng_int(rng, 3);
        t->cut = 40 + rng_int(rng, 80);
    } else if (op == 0) {
        kvx_kv_seq_destroy(t->s);
        t->s = NULL;
    } else if (op <= 2) {
        struct tseq *d = &ts[rng_int(rng, RW_SEQS)];
        if (d == t)
            return;
        kvx_kv_seq_destroy(d->s); /* the fork takes its slot */
        struct kvx_err err = {0};
        struct kvx_kv_seq *fork = NULL;
        KVX_CHECK(kvx_kv_seq_fork(t->s, &fork, &err) == KVX_OK);
        *d = *t;
        d->s = fork;
        rs->forks++;
    } else if (op <= 5) {
        kvx_kv_seq_truncate(t->s, rng_int(rng, kvx_kv_seq_len(t->s) + 1));
    } else if (op == 6) {
        struct kvx_err err = {0};
        enum kvx_status st = kvx_kv_seq_unshare(t->s, rng_int(rng, kvx_kv_seq_len(t->s) + 1), &err);
        KVX_CHECK(st == KVX_OK || st == KVX_ERR_KV_FULL);
    } else {
        rw_grow(t, l, p, tree, rng, rs);
    }
}

KVX_TEST(prefix_random_workload)
{
    struct kvx_kv_layout l;
    small_layout(&l, 16);
    struct kvx_kv_pool *p = make_pool(&l, 24 * kvx_kv_layout_seq_bytes(&l, 16));
    struct kvx_kv_prefix *tree = NULL;
    KVX_CHECK(kvx_kv_prefix_create(p, &tree, NULL) == KVX_OK);
    struct tseq *ts = calloc(RW_SEQS, sizeof *ts);
    struct rw_stats rs = {0};
    uint64_t rng = 2024;
    for (int step = 0; step < 3000; step++) {
        rw_step(ts, &l, p, tree, &rng, &rs);
        if (!pool_ok(p, step))
            break;
        int bad = 0;
        for (int i = 0; i < RW_SEQS; i++) {
            if (!ts[i].s || !kvx_kv_seq_len(ts[i].s))
                continue;
            if (step % 100 == 0) {
                bad += tseq_verify_all(&ts[i], &l);
                continue;
            }
            for (int k = 0; k < 3; k++)
                bad += tseq_bad(&ts[i], &l, (int32_t)rng_int(&rng, 4),
                                rng_int(&rng, kvx_kv_seq_len(ts[i].s)));
        }
        if (bad) {
            kvx_test_fail(__FILE__, __LINE__, "step %d: %d stored values differ", step, bad);
            break;
        }
    }
    struct kvx_kv_prefix_stats ps;
    kvx_kv_prefix_get_stats(tree, &ps);
    /* every path was taken */
    if (!(rs.full > 20 && rs.grown > 300 && rs.attached > 500 && rs.forks > 50 &&
          ps.blocks_evicted > 20))
        kvx_test_fail(__FILE__, __LINE__, "workload too narrow: %lld full, %lld grown, %lld "
                      "attached, %lld forks, %lld evicted", (long long)rs.full,
                      (long long)rs.grown, (long long)rs.attached, (long long)rs.forks,
                      (long long)ps.blocks_evicted);
    for (int i = 0; i < RW_SEQS; i++)
        kvx_kv_seq_destroy(ts[i].s);
    pool_ok(p, -1);
    kvx_kv_prefix_destroy(tree);
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, 0);
    free(ts);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * On the default model */

static struct kvx_model *model_open(void)
{
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("default model not present (make model)");
        return NULL;
    }
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "open: %s", err.msg);
    return m;
}

/* f32 KV, 16-token pages, 2 threads; prefix cache on or off. */
static struct kvx_engine *engine_make(struct kvx_model *m, bool prefix_cache, size_t budget)
{
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 256;
    ec.page_tokens = 16;
    ec.n_threads = 2;
    ec.k_codec = ec.v_codec = KVX_KV_CODEC_F32;
    ec.prefix_cache = prefix_cache;
    ec.kv_budget_bytes = budget;
    struct kvx_engine *e = NULL;
    struct kvx_err err = {0};
    if (kvx_engine_create(m, &ec, &e, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
    return e;
}

static void model_tokens(int32_t *t, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % 49152u);
    }
}

/* Feed, then return the session (NULL when it failed). */
static struct kvx_session *feed_new(struct kvx_engine *e, const int32_t *a, int na,
                                    const int32_t *b, int nb, float *logits)
{
    struct kvx_session *s = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_session_create(e, &s, &err) == KVX_OK);
    if (na && kvx_session_feed(s, a, na, false, logits, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "feed: %s", err.msg);
    if (nb && kvx_session_feed(s, b, nb, false, logits, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "feed: %s", err.msg);
    return s;
}

static bool engine_ok(struct kvx_engine *e)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(kvx_engine_pool(e), &err) == KVX_OK)
        return true;
    kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return false;
}

/* A session that attaches a cached prefix computes the same logits, bit for bit, as one that
 * computed the prefix itself (f32 KV; the same prefill chunks). */
KVX_TEST(prefix_engine_attached_equals_fresh)
{
    struct kvx_model *m = model_open();
    if (!m)
        return;
    enum { P = 32, R = 8 };
    const size_t V = 49152;
    int32_t pre[P], ra[R], rb[R], all[P + R];
    model_tokens(pre, P, 1);
    model_tokens(ra, R, 2);
    model_tokens(rb, R, 3);
    memcpy(all, pre, sizeof pre);
    memcpy(all + P, rb, sizeof rb);
    float *got = malloc(V * sizeof *got), *want = malloc(V * sizeof *want);
    struct kvx_engine *shared = engine_make(m, true, 0), *plain = engine_make(m, false, 0);
    struct kvx_session *a = feed_new(shared, pre, P, ra, R, NULL);
    struct kvx_session *b = feed_new(shared, all, P + R, NULL, 0, got);
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(shared, &st);
    KVX_CHECK_EQ_INT(st.prefix_tokens_reused, P);
    KVX_CHECK_EQ_INT(kvx_session_n_past(b), P + R);
    struct kvx_session *c = feed_new(plain, pre, P, rb, R, want);
    KVX_CHECK(memcmp(got, want, V * sizeof *got) == 0);
    /* and the next decode step too */
    struct kvx_err err = {0};
    KVX_CHECK(kvx_session_feed(b, ra, 1, false, got, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(c, ra, 1, false, want, &err) == KVX_OK);
    KVX_CHECK(memcmp(got, want, V * sizeof *got) == 0);
    engine_ok(shared);
    kvx_session_destroy(a);
    kvx_session_destroy(b);
    kvx_session_destroy(c);
    kvx_engine_destroy(shared);
    kvx_engine_destroy(plain);
    kvx_model_close(m);
    free(got);
    free(want);
}

/* A fork that then continues differently from its source gives, on both sides, the logits of
 * independent sessions (the shared partial page is copied, not overwritten). */
KVX_TEST(prefix_engine_fork_continues_independently)
{
    struct kvx_model *m = model_open();
    if (!m)
        return;
    enum { X = 21, Y = 5 };
    const size_t V = 49152;
    int32_t x[X], y1[Y], y2[Y];
    model_tokens(x, X, 4);
    model_tokens(y1, Y, 5);
    model_tokens(y2, Y, 6);
    float *la = malloc(V * sizeof *la), *lb = malloc(V * sizeof *lb), *ref = malloc(V * sizeof *ref);
    struct kvx_engine *e = engine_make(m, true, 0), *plain = engine_make(m, false, 0);
    struct kvx_err err = {0};
    struct kvx_session *a = feed_new(e, x, X, NULL, 0, NULL), *b = NULL;
    KVX_CHECK(kvx_session_fork(a, &b, &err) == KVX_OK);
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(e, &st);
    KVX_CHECK_EQ_INT(st.bytes_shared, kvx_kv_layout_seq_bytes(kvx_engine_layout(e), X));
    KVX_CHECK_EQ_INT(kvx_session_n_past(b), X);
    engine_ok(e);
    KVX_CHECK(kvx_session_feed(a, y1, Y, false, la, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(b, y2, Y, false, lb, &err) == KVX_OK);
    engine_ok(e);
    struct kvx_session *c = feed_new(plain, x, X, y1, Y, ref);
    KVX_CHECK(memcmp(la, ref, V * sizeof *la) == 0);
    struct kvx_session *d = feed_new(plain, x, X, y2, Y, ref);
    KVX_CHECK(memcmp(lb, ref, V * sizeof *lb) == 0);
    kvx_session_destroy(a);
    KVX_CHECK(kvx_session_feed(b, y1, 1, false, lb, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(d, y1, 1, false, ref, &err) == KVX_OK);
    KVX_CHECK(memcmp(lb, ref, V * sizeof *lb) == 0);
    engine_ok(e);
    kvx_session_destroy(b);
    kvx_session_destroy(c);
    kvx_session_destroy(d);
    kvx_engine_destroy(e);
    kvx_engine_destroy(plain);
    kvx_model_close(m);
    free(la);
    free(lb);
    free(ref);
}

/* The requirement: N sessions with a shared P-token prefix hold P + N * (own tokens)
 * of KV, not N * (P + own), up to page rounding. */
KVX_TEST(prefix_engine_shared_prefix_memory)
{
    struct kvx_model *m = model_open();
    if (!m)
        return;
    enum { N = 4, P = 48, OWN = 6, GEN = 3 };
    struct kvx_engine *e = engine_make(m, true, 0);
    const struct kvx_kv_layout *l = kvx_engine_layout(e);
    int32_t pre[P], own[OWN + GEN];
    model_tokens(pre, P, 7);
    struct kvx_session *s[N];
    struct kvx_err err = {0};
    for (int i = 0; i < N; i++) {
        int32_t prompt[P + OWN];
        model_tokens(own, OWN + GEN, 100 + (uint32_t)i);
        memcpy(prompt, pre, sizeof pre);
        memcpy(prompt + P, own, OWN * sizeof *own);
        s[i] = feed_new(e, prompt, P + OWN, NULL, 0, NULL);
        for (int g = 0; g < GEN; g++)
            KVX_CHECK(kvx_session_feed(s[i], own + OWN + g, 1, false, NULL, &err) == KVX_OK);
    }
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(e, &st);
    const size_t own_bytes = kvx_kv_layout_seq_bytes(l, P + OWN + GEN) - kvx_kv_layout_seq_bytes(l, P);
    KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(l, P) + N * own_bytes);
    KVX_CHECK(st.bytes_used < N * kvx_kv_layout_seq_bytes(l, P + OWN + GEN) / 2);
    KVX_CHECK_EQ_INT(st.prefix_tokens_reused, (N - 1) * P);
    KVX_CHECK_EQ_INT(st.bytes_shared, kvx_kv_layout_seq_bytes(l, P));
    KVX_CHECK_EQ_INT(st.tokens_cached, N * (P + OWN + GEN));
    engine_ok(e);
    for (int i = 0; i < N; i++)
        kvx_session_destroy(s[i]);
    kvx_engine_destroy(e);
    kvx_model_close(m);
}

/* A request that does not fit fails with KV_FULL naming the missing bytes and changes no other
 * session; cached blocks no session uses make room, least recently used first. */
KVX_TEST(prefix_engine_kv_full_keeps_others)
{
    struct kvx_model *m = model_open();
    if (!m)
        return;
    const size_t V = 49152;
    struct kvx_engine *plain = engine_make(m, false, 0);
    const size_t block = kvx_kv_layout_seq_bytes(kvx_engine_layout(plain), 16);
    struct kvx_engine *e = engine_make(m, true, 6 * block);
    int32_t ta[48], tb[64];
    model_tokens(ta, 48, 8);
    model_tokens(tb, 64, 9);
    float *got = malloc(V * sizeof *got), *want = malloc(V * sizeof *want);
    struct kvx_err err = {0};
    struct kvx_session *a = feed_new(e, ta, 40, NULL, 0, NULL), *b = NULL;
    KVX_CHECK(kvx_session_create(e, &b, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(b, tb, 64, false, got, &err) == KVX_ERR_KV_FULL);
    char expect[96];
    snprintf(expect, sizeof expect, "need %zu more bytes", block);
    if (!strstr(err.msg, expect))
        kvx_test_fail(__FILE__, __LINE__, "message '%s' lacks '%s'", err.msg, expect);
    KVX_CHECK_EQ_INT(kvx_session_n_past(b), 0);
    engine_ok(e);
    /* a goes on as if nothing happened */
    KVX_CHECK(kvx_session_feed(a, ta + 40, 8, false, got, &err) == KVX_OK);
    struct kvx_session *c = feed_new(plain, ta, 40, ta + 40, 8, want);
    KVX_CHECK(memcmp(got, want, V * sizeof *got) == 0);
    /* once a is gone its three cached blocks may go: b needs one, a leaf (the last) */
    kvx_session_destroy(a);
    KVX_CHECK(kvx_session_feed(b, tb, 64, false, got, &err) == KVX_OK);
    struct kvx_kv_stats st;
    kvx_engine_kv_stats(e, &st);
    KVX_CHECK_EQ_INT(st.prefix_blocks_evicted, 1);
    KVX_CHECK_EQ_INT(st.prefix_blocks, 6); /* a's first two blocks and b's four */
    KVX_CHECK_EQ_INT(st.bytes_used, 6 * block);
    engine_ok(e);
    kvx_session_destroy(b);
    kvx_session_destroy(c);
    kvx_engine_destroy(e);
    kvx_engine_destroy(plain);
    kvx_model_close(m);
    free(got);
    free(want);
}
