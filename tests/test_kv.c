/* tests/test_kv: kv/layout byte counts, kv/pool accounting and invariants (KV_FULL, truncate,
 * window pages, a randomized multi-sequence workload), kv/codec round trips and the SIMD
 * qk/pv kernels against the scalar specification. */
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "ops/f16.h"
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

static float rng_float(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 40) / (double)(1ull << 23) - 1.0);
}

static void set_full(struct kvx_kv_layout *l, int32_t i, int32_t heads, int32_t kd, int32_t vd,
                     enum kvx_kv_codec kc, enum kvx_kv_codec vc)
{
    l->layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = heads,
                                            .k_dim = kd, .v_dim = vd, .shared_from = -1,
                                            .k_codec = kc, .v_codec = vc};
}

static void set_window(struct kvx_kv_layout *l, int32_t i, int32_t heads, int32_t kd, int32_t vd,
                       int64_t w, enum kvx_kv_codec c)
{
    set_full(l, i, heads, kd, vd, c, c);
    l->layers[i].kind = KVX_KV_KIND_WINDOW;
    l->layers[i].window = w;
}

static void set_shared(struct kvx_kv_layout *l, int32_t i, int32_t from)
{
    l->layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED, .shared_from = from};
}

/* The default model's shape: 30 layers, 3 KV heads, head dim 64. */
static void default_layout(struct kvx_kv_layout *l, enum kvx_kv_codec c, int32_t page_tokens)
{
    KVX_CHECK(kvx_kv_layout_init(l, 30, page_tokens, NULL) == KVX_OK);
    for (int32_t i = 0; i < 30; i++)
        set_full(l, i, 3, 64, 64, c, c);
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

static bool pool_ok(const struct kvx_kv_pool *p)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(p, &err) == KVX_OK)
        return true;
    kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
    return false;
}

/* Pages of a window layer for n tokens, counted one page at a time. */
static int64_t window_pages_brute(int64_t n, int64_t w, int64_t pt)
{
    int64_t lo = n - w > 0 ? n - w : 0, count = 0;
    for (int64_t pg = 0; pg * pt < n; pg++)
        if ((pg + 1) * pt > lo)
            count++;
    return count;
}

/* ---------------------------------------------------------------------------------------------
 * Layout */

KVX_TEST(kv_layout_default_model_bytes)
{
    struct kvx_kv_layout l;
    default_layout(&l, KVX_KV_CODEC_F16, 64);
    KVX_CHECK(kvx_kv_layout_validate(&l, NULL) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 30 * 3 * 64 * 2 * 2);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 23040);
    KVX_CHECK_EQ_INT(kvx_kv_layer_k_head_bytes(&l, 0), 64 * 64 * 2);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 7), 64 * 768);
    KVX_CHECK_EQ_INT(kvx_kv_layer_k_offset(&l, 3, 2), 2 * 64 * 64 * 2);
    KVX_CHECK_EQ_INT(kvx_kv_layer_v_offset(&l, 3, 1), 3 * 64 * 64 * 2 + 64 * 64 * 2);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 1), 30 * 64 * 768);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 64), 64 * 23040);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 65), 128 * 23040);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_pages(&l, 8000), 30 * 125);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 0), 0);
    kvx_kv_layout_free(&l);

    default_layout(&l, KVX_KV_CODEC_F32, 16);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 46080);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 17), 32 * 46080);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_layout_mixed_layers)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 5, 32, NULL) == KVX_OK);
    set_full(&l, 0, 2, 64, 32, KVX_KV_CODEC_F16, KVX_KV_CODEC_F32);
    set_window(&l, 1, 4, 16, 16, 100, KVX_KV_CODEC_F16);
    set_shared(&l, 2, 0);
    /* layer 3 stays NONE */
    set_full(&l, 4, 1, 24, 24, KVX_KV_CODEC_F32, KVX_KV_CODEC_F32);
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_OK);
    size_t full0 = 2 * (64 * 2 + 32 * 4), full4 = 24 * 4 + 24 * 4;
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), full0 + full4);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 0), 32 * full0);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 1), 32 * 4 * (16 * 2 + 16 * 2));
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 2), 0);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 3), 0);
    KVX_CHECK(kvx_kv_layer_owns(&l.layers[1]) && !kvx_kv_layer_owns(&l.layers[2]));
    KVX_CHECK_EQ_INT(kvx_kv_layer_source(&l, 2), 0);
    KVX_CHECK_EQ_INT(kvx_kv_layer_source(&l, 1), 1);
    for (int64_t n = 0; n < 500; n += 7) {
        KVX_CHECK_EQ_INT(kvx_kv_layer_pages(&l, 0, n), (n + 31) / 32);
        KVX_CHECK_EQ_INT(kvx_kv_layer_pages(&l, 1, n), window_pages_brute(n, 100, 32));
        KVX_CHECK_EQ_INT(kvx_kv_layer_pages(&l, 2, n), 0);
        KVX_CHECK_EQ_INT(kvx_kv_layer_pages(&l, 3, n), 0);
        size_t expect = (size_t)((n + 31) / 32) * 32 * (full0 + full4) +
                        (size_t)window_pages_brute(n, 100, 32) * kvx_kv_layer_page_bytes(&l, 1);
        KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, n), expect);
        KVX_CHECK_EQ_INT(kvx_kv_layer_first_pos(&l, 1, n), n >= 99 ? n - 99 : 0);
        KVX_CHECK_EQ_INT(kvx_kv_layer_first_pos(&l, 0, n), 0);
    }
    /* a window layer holds ceil(w / pt) or ceil(w / pt) + 1 pages once n >= w */
    int64_t most = 0, least = 1 << 30;
    for (int64_t n = 100; n < 5000; n++) {
        int64_t pages = kvx_kv_layer_pages(&l, 1, n);
        most = pages > most ? pages : most;
        least = pages < least ? pages : least;
    }
    KVX_CHECK_EQ_INT(most, 5);
    KVX_CHECK_EQ_INT(least, 4);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_layout_alignment_padding)
{
    /* f16, 16 tokens x dim 3: 96-byte regions are padded to 128 so pages stay 64-aligned */
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 1, 16, NULL) == KVX_OK);
    set_full(&l, 0, 2, 3, 3, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16);
    KVX_CHECK_EQ_INT(kvx_kv_layer_k_head_bytes(&l, 0), 128);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 0), 512);
    KVX_CHECK_EQ_INT(kvx_kv_layer_v_offset(&l, 0, 1), 384);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 32);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_layout_validate_errors)
{
    struct kvx_kv_layout l;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_layout_init(&l, 3, 24, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "page_tokens") != NULL);
    KVX_CHECK(kvx_kv_layout_init(&l, 0, 16, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_kv_layout_init(&l, 3, 16, &err) == KVX_OK);
    set_full(&l, 0, 1, 8, 8, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16);
    set_shared(&l, 1, 2); /* a later layer */
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "layer 1") != NULL);
    set_shared(&l, 1, 1); /* itself */
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    set_shared(&l, 2, 1); /* a layer that owns nothing */
    set_shared(&l, 1, 0);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "layer 2") != NULL);
    set_full(&l, 2, 0, 8, 8, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    set_full(&l, 2, 1, 8, 8, (enum kvx_kv_codec)77, KVX_KV_CODEC_F16);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_UNSUPPORTED);
    set_window(&l, 2, 1, 8, 8, 0, KVX_KV_CODEC_F16);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    set_window(&l, 2, 1, 8, 8, 5, KVX_KV_CODEC_F16);
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_OK);
    l.layers[2].kind = (enum kvx_kv_kind)42;
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_UNSUPPORTED);
    kvx_kv_layout_free(&l);
    kvx_kv_layout_free(NULL);
}

KVX_TEST(kv_codec_names)
{
    enum kvx_kv_codec c;
    KVX_CHECK(kvx_kv_codec_parse("f16", &c) && c == KVX_KV_CODEC_F16);
    KVX_CHECK(kvx_kv_codec_parse("f32", &c) && c == KVX_KV_CODEC_F32);
    KVX_CHECK(kvx_kv_codec_parse("q4", &c) && c == KVX_KV_CODEC_Q4);
    KVX_CHECK(!kvx_kv_codec_parse("q5", &c));
    KVX_CHECK(strcmp(kvx_kv_codec_name(KVX_KV_CODEC_F16), "f16") == 0);
    KVX_CHECK(kvx_kv_codec_ops(KVX_KV_CODEC_COUNT, KVX_ISA_SCALAR) == NULL);
    KVX_CHECK(strcmp(kvx_kv_kind_name(KVX_KV_KIND_WINDOW), "window") == 0);
}

/* ---------------------------------------------------------------------------------------------
 * Pool accounting */

KVX_TEST(kv_pool_bytes_match_layout)
{
    struct kvx_kv_layout l;
    default_layout(&l, KVX_KV_CODEC_F16, 32);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)64 << 20);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    const int64_t lens[] = {1, 2, 31, 32, 33, 100, 64, 65, 1000, 1500, 2000, 7, 0, 513};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        int64_t n = lens[i];
        if (n < kvx_kv_seq_reserved(s))
            kvx_kv_seq_truncate(s, n);
        KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
        kvx_kv_seq_set_len(s, n);
        struct kvx_kv_pool_stats st;
        kvx_kv_pool_get_stats(p, &st);
        KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(&l, n));
        KVX_CHECK_EQ_INT(st.pages_used, kvx_kv_layout_seq_pages(&l, n));
        KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), n);
        pool_ok(p);
    }
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* Mixed layers grown one token per reserve (decode): the pool holds what the layout says. */
KVX_TEST(kv_pool_mixed_bytes_match_layout)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 4, 16, NULL) == KVX_OK);
    set_full(&l, 0, 2, 8, 12, KVX_KV_CODEC_F16, KVX_KV_CODEC_F32);
    set_window(&l, 1, 1, 16, 16, 37, KVX_KV_CODEC_F32);
    set_shared(&l, 2, 1);
    set_window(&l, 3, 3, 4, 4, 1, KVX_KV_CODEC_F16);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)4 << 20);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    for (int64_t n = 1; n <= 400; n++) {
        KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
        kvx_kv_seq_set_len(s, n);
        struct kvx_kv_pool_stats st;
        kvx_kv_pool_get_stats(p, &st);
        KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(&l, n));
        if (n % 50 == 0)
            pool_ok(p);
    }
    kvx_kv_seq_destroy(s);
    pool_ok(p);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_pool_full_is_all_or_nothing)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 3, 16, NULL) == KVX_OK);
    set_full(&l, 0, 2, 16, 16, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16); /* 2048 B pages */
    set_full(&l, 1, 1, 16, 16, KVX_KV_CODEC_F32, KVX_KV_CODEC_F32); /* 2048 B pages */
    set_full(&l, 2, 1, 8, 8, KVX_KV_CODEC_F32, KVX_KV_CODEC_F32);   /* 1024 B pages */
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 16), 5120);
    struct kvx_kv_pool *p = make_pool(&l, 5120 * 8);
    struct kvx_kv_seq *a = NULL, *b = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &a, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_create(p, &b, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(a, 100, NULL) == KVX_OK); /* 7 pages per layer */
    kvx_kv_seq_set_len(a, 90);
    struct kvx_kv_pool_stats before, after;
    kvx_kv_pool_get_stats(p, &before);
    KVX_CHECK_EQ_INT(before.bytes_used, 7 * 5120);
    struct kvx_err err = {0};
    /* b needs 2 pages per layer = 10240 B; 5120 are left */
    KVX_CHECK(kvx_kv_seq_reserve(b, 20, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(strstr(err.msg, "KV budget exhausted: need 5120 more bytes for 20 tokens "
                              "(budget 40960, in use 35840)") != NULL);
    kvx_kv_pool_get_stats(p, &after);
    KVX_CHECK(memcmp(&before, &after, sizeof before) == 0);
    KVX_CHECK_EQ_INT(kvx_kv_seq_reserved(b), 0);
    KVX_CHECK(kvx_kv_seq_reserve(a, 130, &err) == KVX_ERR_KV_FULL); /* 9 pages: one too many */
    KVX_CHECK(kvx_kv_seq_reserve(a, INT64_MAX, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(kvx_kv_seq_reserve(a, (int64_t)1 << 34, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK_EQ_INT(kvx_kv_seq_reserved(a), 100);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(a), 90);
    pool_ok(p);
    KVX_CHECK(kvx_kv_seq_reserve(b, 16, NULL) == KVX_OK); /* exactly the rest */
    kvx_kv_pool_get_stats(p, &after);
    KVX_CHECK_EQ_INT(after.bytes_used, after.budget_bytes);
    KVX_CHECK(kvx_kv_seq_reserve(b, 17, &err) == KVX_ERR_KV_FULL);
    /* freeing a's pages lets b grow from the free lists, without carving */
    kvx_kv_seq_destroy(a);
    pool_ok(p);
    KVX_CHECK(kvx_kv_seq_reserve(b, 128, NULL) == KVX_OK);
    kvx_kv_pool_get_stats(p, &after);
    KVX_CHECK_EQ_INT(after.bytes_carved, 40960);
    KVX_CHECK_EQ_INT(after.pages_free, 0);
    pool_ok(p);
    kvx_kv_seq_destroy(b);
    kvx_kv_pool_destroy(p);

    /* a zero budget holds nothing, and says so */
    p = make_pool(&l, 0);
    KVX_CHECK(kvx_kv_seq_create(p, &a, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(a, 1, &err) == KVX_ERR_KV_FULL);
    KVX_CHECK(kvx_kv_seq_reserve(a, 0, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(a, -1, NULL) == KVX_ERR_INVALID_ARG);
    pool_ok(p);
    kvx_kv_pool_destroy(p); /* with a live sequence: documented caller error, still freed */
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_pool_truncate_frees_pages)
{
    struct kvx_kv_layout l;
    default_layout(&l, KVX_KV_CODEC_F16, 16);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)32 << 20);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(s, 1000, NULL) == KVX_OK);
    kvx_kv_seq_set_len(s, 1000);
    kvx_kv_seq_truncate(s, 100);
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), 100);
    KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(&l, 100));
    KVX_CHECK_EQ_INT(st.pages_free, 30 * (63 - 7));
    KVX_CHECK_EQ_INT(st.bytes_carved, kvx_kv_layout_seq_bytes(&l, 1000));
    pool_ok(p);
    /* capacity beyond the length goes too */
    KVX_CHECK(kvx_kv_seq_reserve(s, 300, NULL) == KVX_OK);
    kvx_kv_seq_truncate(s, 150);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), 100);
    KVX_CHECK_EQ_INT(kvx_kv_seq_reserved(s), 150);
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, kvx_kv_layout_seq_bytes(&l, 150));
    /* growing again reuses freed pages: nothing new is carved */
    KVX_CHECK(kvx_kv_seq_reserve(s, 1000, NULL) == KVX_OK);
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_carved, kvx_kv_layout_seq_bytes(&l, 1000));
    KVX_CHECK_EQ_INT(st.pages_free, 0);
    kvx_kv_seq_truncate(s, 0);
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, 0);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), 0);
    pool_ok(p);
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* The check must catch a broken invariant, or it proves nothing. */
KVX_TEST(kv_pool_check_detects_stray_reference)
{
    struct kvx_kv_layout l;
    default_layout(&l, KVX_KV_CODEC_F16, 16);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)8 << 20);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(s, 40, NULL) == KVX_OK);
    pool_ok(p);
    KVX_CHECK_EQ_INT(kvx_kv_page_refcount(p, 0), 1);
    kvx_kv_page_ref(p, 0);
    KVX_CHECK_EQ_INT(kvx_kv_page_refcount(p, 0), 2);
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_pool_check(p, &err) == KVX_ERR_FORMAT);
    KVX_CHECK(strstr(err.msg, "refcount 2") != NULL);
    kvx_kv_page_unref(p, 0);
    pool_ok(p);
    KVX_CHECK(kvx_kv_page_data(p, 0) != NULL && kvx_kv_page_data(p, 1 << 20) == NULL);
    KVX_CHECK((uintptr_t)kvx_kv_page_data(p, 5) % KVX_KV_PAGE_ALIGN == 0);
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Window layers */

static float pattern(int64_t tag, int32_t layer, int64_t pos, int32_t idx)
{
    /* multiples of 1/8 below 256: exact in f16 */
    return (float)((tag * 131 + layer * 17 + pos * 7 + idx) % 2048) / 8.0f;
}

static void write_pattern(struct kvx_kv_seq *s, const struct kvx_kv_layout *l, int64_t tag,
                          int64_t from, int64_t to)
{
    float k[256], v[256];
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        if (!kvx_kv_layer_owns(c))
            continue;
        for (int64_t pos = from; pos < to; pos++) {
            for (int32_t j = 0; j < c->n_kv_heads * c->k_dim; j++)
                k[j] = pattern(tag, i, pos, j);
            for (int32_t j = 0; j < c->n_kv_heads * c->v_dim; j++)
                v[j] = -pattern(tag, i, pos, j);
            kvx_kv_seq_write(s, i, pos, k, v);
        }
    }
}

/* Position `pos` of `layer`, read through its view, holds the pattern written for the layer it
 * reads; returns the number of values that differ. */
static int check_pattern(const struct kvx_kv_seq *s, const struct kvx_kv_layout *l, int32_t layer,
                         int64_t tag, int64_t pos)
{
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, layer, &v);
    int32_t src = kvx_kv_layer_source(l, layer);
    if (pos / v.page_tokens >= v.n_pages || !v.pages[pos / v.page_tokens])
        return 1;
    int bad = 0;
    float buf[256];
    for (int32_t h = 0; h < v.n_kv_heads; h++) {
        kvx_kv_view_get_k(&v, h, pos, buf);
        for (int32_t c = 0; c < v.k_dim; c++)
            bad += buf[c] != pattern(tag, src, pos, h * v.k_dim + c);
        kvx_kv_view_get_v(&v, h, pos, buf);
        for (int32_t c = 0; c < v.v_dim; c++)
            bad += buf[c] != -pattern(tag, src, pos, h * v.v_dim + c);
    }
    return bad;
}

KVX_TEST(kv_pool_window_pages_freed_and_reused)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 2, 16, NULL) == KVX_OK);
    set_window(&l, 0, 2, 8, 8, 40, KVX_KV_CODEC_F16);
    set_shared(&l, 1, 0);
    struct kvx_kv_pool *p = make_pool(&l, (size_t)1 << 20);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    size_t page = kvx_kv_layer_page_bytes(&l, 0);
    for (int64_t n = 1; n <= 300; n++) {
        KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
        write_pattern(s, &l, 1, n - 1, n);
        kvx_kv_seq_set_len(s, n);
        struct kvx_kv_pool_stats st;
        kvx_kv_pool_get_stats(p, &st);
        KVX_CHECK_EQ_INT(st.pages_used, window_pages_brute(n, 40, 16));
        /* never more than ceil(40/16) + 1 pages carved: dropped pages are reused */
        KVX_CHECK(st.bytes_carved <= 4 * page);
        /* every key the next query sees is there, through the shared layer too */
        for (int64_t pos = kvx_kv_layer_first_pos(&l, 1, n); pos < n; pos++)
            KVX_CHECK_EQ_INT(check_pattern(s, &l, 1, 1, pos), 0);
        if (n % 25 == 0)
            pool_ok(p);
    }
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, 0, &v);
    KVX_CHECK_EQ_INT(v.n_pages, 19);
    KVX_CHECK(v.pages[0] == NULL && v.pages[15] == NULL && v.pages[16] != NULL && v.pages[18] != NULL);
    /* a multi-token step keeps the keys its first query sees: [first_pos(300), 364) */
    KVX_CHECK(kvx_kv_seq_reserve(s, 364, NULL) == KVX_OK);
    kvx_kv_seq_view(s, 0, &v);
    KVX_CHECK(v.pages[16] != NULL);
    write_pattern(s, &l, 1, 300, 364);
    kvx_kv_seq_set_len(s, 364);
    pool_ok(p);
    /* truncation that keeps the window intact is honoured; deeper empties the sequence */
    int64_t min_keep = kvx_kv_seq_min_truncate(s);
    KVX_CHECK_EQ_INT(min_keep, 16 * 16 + 39);
    kvx_kv_seq_truncate(s, min_keep);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), min_keep);
    for (int64_t pos = kvx_kv_layer_first_pos(&l, 0, min_keep); pos < min_keep; pos++)
        KVX_CHECK_EQ_INT(check_pattern(s, &l, 0, 1, pos), 0);
    pool_ok(p);
    kvx_kv_seq_truncate(s, min_keep - 1);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), 0);
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, 0);
    KVX_CHECK_EQ_INT(kvx_kv_seq_min_truncate(s), 1);
    pool_ok(p);
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Randomized workload: create / reserve / write / truncate / destroy with the check after
 * every operation and the stored values compared with what was written. */

#define WL_SEQS 5

struct wl_seq {
    struct kvx_kv_seq *s;
    int64_t tag;
};

static int wl_verify(const struct kvx_kv_layout *l, const struct wl_seq *seqs, uint64_t *rng)
{
    int bad = 0;
    for (int i = 0; i < WL_SEQS; i++) {
        if (!seqs[i].s)
            continue;
        int64_t len = kvx_kv_seq_len(seqs[i].s);
        for (int k = 0; k < 4 && len > 0; k++) {
            int32_t layer = (int32_t)rng_int(rng, l->n_layer);
            if (!kvx_kv_layer_owns(&l->layers[kvx_kv_layer_source(l, layer)]))
                continue;
            int64_t lo = kvx_kv_layer_first_pos(l, layer, len);
            int64_t pos = lo + rng_int(rng, len - lo);
            bad += check_pattern(seqs[i].s, l, layer, seqs[i].tag, pos);
        }
    }
    return bad;
}

static void wl_grow(struct kvx_kv_pool *p, const struct kvx_kv_layout *l, struct wl_seq *w,
                    uint64_t *rng)
{
    int64_t len = kvx_kv_seq_len(w->s), n = len + 1 + rng_int(rng, 40);
    struct kvx_kv_pool_stats before, after;
    kvx_kv_pool_get_stats(p, &before);
    int64_t reserved = kvx_kv_seq_reserved(w->s);
    struct kvx_err err = {0};
    enum kvx_status st = kvx_kv_seq_reserve(w->s, n, &err);
    if (st == KVX_ERR_KV_FULL) {
        kvx_kv_pool_get_stats(p, &after);
        KVX_CHECK(memcmp(&before, &after, sizeof before) == 0);
        KVX_CHECK_EQ_INT(kvx_kv_seq_reserved(w->s), reserved);
        KVX_CHECK(strstr(err.msg, "KV budget exhausted") != NULL);
        return;
    }
    KVX_CHECK(st == KVX_OK);
    write_pattern(w->s, l, w->tag, len, n);
    if (rng_int(rng, 4))
        kvx_kv_seq_set_len(w->s, n);
}

static void wl_truncate(struct wl_seq *w, uint64_t *rng)
{
    int64_t len = kvx_kv_seq_len(w->s), reserved = kvx_kv_seq_reserved(w->s);
    int64_t n_keep = rng_int(rng, reserved + 2);
    int64_t min_keep = kvx_kv_seq_min_truncate(w->s);
    kvx_kv_seq_truncate(w->s, n_keep);
    int64_t expect = n_keep < len ? n_keep : len;
    if (n_keep > 0 && n_keep < len && n_keep < min_keep)
        expect = 0;
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(w->s), expect);
}

KVX_TEST(kv_pool_random_workload)
{
    struct kvx_kv_layout l;
    KVX_CHECK(kvx_kv_layout_init(&l, 5, 16, NULL) == KVX_OK);
    set_full(&l, 0, 2, 8, 12, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16);
    set_window(&l, 1, 1, 16, 16, 37, KVX_KV_CODEC_F32);
    set_shared(&l, 2, 0);
    set_full(&l, 3, 1, 5, 3, KVX_KV_CODEC_F32, KVX_KV_CODEC_F16);
    set_shared(&l, 4, 1);
    size_t budget = 3 * kvx_kv_layout_seq_bytes(&l, 160);
    struct kvx_kv_pool *p = make_pool(&l, budget);
    struct wl_seq seqs[WL_SEQS] = {{0}};
    uint64_t rng = 12345;
    int64_t next_tag = 1, n_full = 0, n_ok = 0;
    for (int step = 0; step < 1000; step++) {
        struct wl_seq *w = &seqs[rng_int(&rng, WL_SEQS)];
        int op = (int)rng_int(&rng, 10);
        if (!w->s) {
            KVX_CHECK(kvx_kv_seq_create(p, &w->s, NULL) == KVX_OK);
            w->tag = next_tag++;
        } else if (op == 0) {
            kvx_kv_seq_destroy(w->s);
            w->s = NULL;
        } else if (op <= 6) {
            struct kvx_kv_pool_stats st;
            kvx_kv_pool_get_stats(p, &st);
            wl_grow(p, &l, w, &rng);
            struct kvx_kv_pool_stats st2;
            kvx_kv_pool_get_stats(p, &st2);
            if (memcmp(&st, &st2, sizeof st) == 0)
                n_full++;
            else
                n_ok++;
        } else {
            wl_truncate(w, &rng);
        }
        struct kvx_err err = {0};
        if (kvx_kv_pool_check(p, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "step %d: %s", step, err.msg);
            break;
        }
        int bad = wl_verify(&l, seqs, &rng);
        if (bad) {
            kvx_test_fail(__FILE__, __LINE__, "step %d: %d stored values differ", step, bad);
            break;
        }
    }
    /* the workload must have exercised both outcomes of reserve */
    KVX_CHECK(n_full > 10 && n_ok > 100);
    for (int i = 0; i < WL_SEQS; i++)
        kvx_kv_seq_destroy(seqs[i].s);
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    KVX_CHECK_EQ_INT(st.bytes_used, 0);
    KVX_CHECK_EQ_INT(st.n_seqs, 0);
    pool_ok(p);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

/* ---------------------------------------------------------------------------------------------
 * Codecs */

/* Half precision: relative 2^-11 for normals, half the smallest subnormal (2^-25) below. */
static float half_tol(float x)
{
    float rel = fabsf(x) / 2048.0f, abs_min = 2.98023224e-08f;
    return rel > abs_min ? rel : abs_min;
}

KVX_TEST(kv_codec_put_get_round_trip)
{
    uint64_t rng = 7;
    const int32_t pt = 48, dims[] = {1, 7, 64, 130};
    for (int c = 0; c < 2; c++) {
        const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops((enum kvx_kv_codec)c, KVX_ISA_SCALAR);
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
            int32_t dim = dims[di];
            const struct kvx_kv_fmt f = {.page_tokens = pt, .dim = dim};
            size_t kb = ops->k_region_bytes(&f), vb = ops->v_region_bytes(&f);
            KVX_CHECK_EQ_INT(kb, (size_t)pt * dim * (c == KVX_KV_CODEC_F32 ? 4 : 2));
            uint8_t *kr = calloc(1, kb), *vr = calloc(1, vb);
            float *ref = malloc(sizeof(float) * (size_t)(pt * dim)), got[130];
            for (int32_t t = 0; t < pt; t++) {
                for (int32_t d = 0; d < dim; d++)
                    ref[t * dim + d] = rng_float(&rng) * (d % 3 == 0 ? 1000.0f : 0.01f);
                ops->k_put(kr, NULL, &f, 0, t, ref + t * dim);
                ops->v_put(vr, NULL, &f, 0, t, ref + t * dim);
            }
            int bad = 0;
            for (int32_t t = 0; t < pt; t++) {
                const struct kvx_kv_block kb_ = {kr, NULL, 0}, vb_ = {vr, NULL, 0};
                ops->k_get(&kb_, &f, t, got);
                for (int32_t d = 0; d < dim; d++) {
                    float x = ref[t * dim + d];
                    float want = c == KVX_KV_CODEC_F32 ? x : kvx_f16_to_f32(kvx_f32_to_f16(x));
                    bad += got[d] != want;
                    bad += fabsf(got[d] - x) > half_tol(x);
                }
                ops->v_get(&vb_, &f, t, got);
                for (int32_t d = 0; d < dim; d++)
                    bad += fabsf(got[d] - ref[t * dim + d]) > half_tol(ref[t * dim + d]);
            }
            KVX_CHECK_EQ_INT(bad, 0);
            /* the K tile layout: channel-major inside 16-token tiles */
            if (c == KVX_KV_CODEC_F32)
                KVX_CHECK(((float *)kr)[(1 * dim + 0) * 16 + 3] == ref[19 * dim + 0]);
            free(kr);
            free(vr);
            free(ref);
        }
    }
}

/* One ISA's qk and pv against the scalar kernels of the same codec on random pages. */
static void codec_simd_case(enum kvx_kv_codec codec, enum kvx_isa isa, int32_t pt, int32_t dim,
                            int32_t n_q, uint64_t *rng)
{
    const struct kvx_kv_codec_ops *ref = kvx_kv_codec_ops(codec, KVX_ISA_SCALAR);
    const struct kvx_kv_codec_ops *simd = kvx_kv_codec_ops(codec, isa);
    const struct kvx_kv_fmt f = {.page_tokens = pt, .dim = dim};
    uint8_t *kr = malloc(ref->k_region_bytes(&f)), *vr = malloc(ref->v_region_bytes(&f));
    const struct kvx_kv_block kb = {kr, NULL, 0}, vb = {vr, NULL, 0};
    float *row = malloc(sizeof(float) * (size_t)dim), *q = malloc(sizeof(float) * (size_t)(n_q * dim));
    float *sa = malloc(sizeof(float) * (size_t)(n_q * (pt + 8))), *sb = malloc(sizeof(float) * (size_t)(n_q * (pt + 8)));
    float *aa = malloc(sizeof(float) * (size_t)(n_q * dim)), *ab = malloc(sizeof(float) * (size_t)(n_q * dim));
    for (int32_t t = 0; t < pt; t++) {
        for (int32_t d = 0; d < dim; d++)
            row[d] = rng_float(rng);
        ref->k_put(kr, NULL, &f, 0, t, row);
        ref->v_put(vr, NULL, &f, 0, t, row);
    }
    for (int32_t i = 0; i < n_q * dim; i++)
        q[i] = rng_float(rng);
    int64_t ld = pt + 8;
    int32_t t0 = (int32_t)rng_int(rng, pt / 16) * 16, t1 = t0 + 1 + (int32_t)rng_int(rng, pt - t0);
    for (int64_t i = 0; i < n_q * ld; i++)
        sa[i] = sb[i] = 12345.0f; /* entries outside [t0, t1) must stay */
    ref->qk(&kb, &f, t0, t1, q, n_q, sa, ld);
    simd->qk(&kb, &f, t0, t1, q, n_q, sb, ld);
    int bad = 0;
    for (int32_t i = 0; i < n_q; i++)
        for (int64_t t = 0; t < ld; t++) {
            float x = sa[i * ld + t], y = sb[i * ld + t];
            bad += t >= t1 - t0 ? (x != 12345.0f || y != 12345.0f) : !(fabsf(x - y) <= 1e-5f * dim);
        }
    /* pv from any t0, with the probabilities the scores give */
    int32_t p0 = (int32_t)rng_int(rng, pt), p1 = p0 + 1 + (int32_t)rng_int(rng, pt - p0);
    for (int32_t i = 0; i < n_q * dim; i++)
        aa[i] = ab[i] = rng_float(rng);
    for (int64_t i = 0; i < n_q * ld; i++)
        sa[i] = (rng_float(rng) + 1.0f) * 0.5f;
    ref->pv(&vb, &f, p0, p1, sa, n_q, ld, aa);
    simd->pv(&vb, &f, p0, p1, sa, n_q, ld, ab);
    for (int32_t i = 0; i < n_q * dim; i++)
        bad += !(fabsf(aa[i] - ab[i]) <= 1e-5f * (float)(p1 - p0 + 1));
    if (bad)
        kvx_test_fail(__FILE__, __LINE__, "%s %s pt %d dim %d n_q %d [%d,%d) [%d,%d): %d bad",
                      kvx_kv_codec_name(codec), kvx_isa_name(isa), (int)pt, (int)dim, (int)n_q,
                      (int)t0, (int)t1, (int)p0, (int)p1, bad);
    free(kr);
    free(vr);
    free(row);
    free(q);
    free(sa);
    free(sb);
    free(aa);
    free(ab);
}

KVX_TEST(kv_codec_simd_matches_scalar)
{
    uint64_t rng = 99;
    const int32_t dims[] = {1, 3, 8, 15, 16, 17, 33, 64, 72, 100, 128, 200};
    const int32_t pts[] = {16, 48, 80};
    int tested = 0;
    for (int isa = KVX_ISA_AVX2; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        for (int c = 0; c < 2; c++)
            for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
                for (size_t pi = 0; pi < sizeof pts / sizeof pts[0]; pi++)
                    for (int32_t n_q = 1; n_q <= 9; n_q += (n_q < 5 ? 1 : 4)) {
                        for (int rep = 0; rep < 3; rep++)
                            codec_simd_case((enum kvx_kv_codec)c, (enum kvx_isa)isa, pts[pi],
                                            dims[di], n_q, &rng);
                        tested++;
                    }
    }
    if (!tested)
        kvx_test_skip("no SIMD ISA on this CPU");
}

KVX_TEST(kv_pool_rejects_bad_config)
{
    struct kvx_kv_layout l;
    default_layout(&l, KVX_KV_CODEC_F16, 16);
    struct kvx_kv_pool *p = (struct kvx_kv_pool *)&l;
    struct kvx_err err = {0};
    struct kvx_kv_pool_cfg cfg = {.layout = &l, .budget_bytes = 1 << 20, .isa = (enum kvx_isa)7};
    KVX_CHECK(kvx_kv_pool_create(&cfg, &p, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(p == NULL);
    cfg.isa = KVX_ISA_SCALAR;
    l.layers[3].n_kv_heads = 0;
    KVX_CHECK(kvx_kv_pool_create(&cfg, &p, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "layer 3") != NULL);
    cfg.layout = NULL;
    KVX_CHECK(kvx_kv_pool_create(&cfg, &p, &err) == KVX_ERR_INVALID_ARG);
    kvx_kv_pool_destroy(NULL);
    kvx_kv_seq_destroy(NULL);
    kvx_kv_layout_free(&l);
}
