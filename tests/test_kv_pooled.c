/* tests/test_kv_pooled: the pool with COMPRESSED and HEAVY layers (DeepSeek V4 CSA / HCA).
 *
 * Such layers store one entry per `ratio` tokens and, per sequence, one state block (window
 * ring + compressor state).  Checked here: the pool's bytes equal kv/layout's prediction for
 * every length grown one token at a time and in jumps (kvx_kv_layout_seq_bytes), the state
 * block exists from the first token, starts zeroed and has the layout's size, entries written
 * by index read back through a view, fork shares entry pages and copies the state, truncation
 * cannot rewind the state (it empties the sequence), and kvx_kv_pool_check stays valid. */
#include <stdlib.h>
#include <string.h>

#include "kv/layout.h"
#include "kv/pool.h"
#include "ops/cpu.h"
#include "test.h"

static void pooled_layout(struct kvx_kv_layout *l)
{
    KVX_CHECK(kvx_kv_layout_init(l, 4, 16, NULL) == KVX_OK);
    l->layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_WINDOW, .n_kv_heads = 1,
                                            .k_dim = 32, .v_dim = 32, .window = 8,
                                            .shared_from = -1};
    l->layers[1] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_COMPRESSED, .n_kv_heads = 1,
                                            .k_dim = 32, .v_dim = 16, .window = 8, .ratio = 4,
                                            .shared_from = -1};
    l->layers[2] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_HEAVY, .n_kv_heads = 1,
                                            .k_dim = 32, .v_dim = 0, .window = 8, .ratio = 8,
                                            .shared_from = -1};
    l->layers[3] = l->layers[1];
    for (int i = 0; i < 4; i++)
        l->layers[i].k_codec = l->layers[i].v_codec = KVX_KV_CODEC_F32;
    struct kvx_err err = {0};
    if (kvx_kv_layout_validate(l, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
}

static struct kvx_kv_pool *pooled_pool(const struct kvx_kv_layout *l)
{
    struct kvx_kv_pool_cfg cfg = {.layout = l, .budget_bytes = (size_t)8 << 20,
                                  .isa = kvx_cpu_best_isa()};
    struct kvx_kv_pool *p = NULL;
    KVX_CHECK(kvx_kv_pool_create(&cfg, &p, NULL) == KVX_OK);
    return p;
}

static void check_pool(const struct kvx_kv_pool *p)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(p, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
}

static size_t used(const struct kvx_kv_pool *p)
{
    struct kvx_kv_pool_stats st;
    kvx_kv_pool_get_stats(p, &st);
    return st.bytes_used;
}

KVX_TEST(kv_pool_pooled_bytes_match_layout)
{
    struct kvx_kv_layout l;
    pooled_layout(&l);
    /* entries: CSA 32 + 16 floats (192 B/entry), HCA 32 floats (128 B/entry), pages of 16 */
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 1), 16 * 192);
    KVX_CHECK_EQ_INT(kvx_kv_layer_page_bytes(&l, 2), 16 * 128);
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 2 * 192 / 4 + 128 / 8);
    struct kvx_kv_pool *p = pooled_pool(&l);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_state(s, 1) == NULL);
    for (int64_t n = 1; n <= 300; n++) {   /* decode: one token per reserve */
        KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
        kvx_kv_seq_set_len(s, n);
        KVX_CHECK_EQ_INT(used(p), kvx_kv_layout_seq_bytes(&l, n));
        if (n % 37 == 0)
            check_pool(p);
    }
    /* the state block: layout's size, zeroed at first reserve */
    const uint8_t *st = kvx_kv_seq_state(s, 1);
    KVX_CHECK(st != NULL && kvx_kv_seq_state(s, 2) != NULL);
    KVX_CHECK(kvx_kv_layer_state_bytes(&l, 1) >=
              kvx_kv_layer_compressor_state_offset(&l, 1) +
                  kvx_kv_layer_compressor_state_bytes(&l, 1));
    /* the state cannot be rewound: a shorter truncation empties the sequence */
    KVX_CHECK_EQ_INT(kvx_kv_seq_min_truncate(s), 300);
    kvx_kv_seq_truncate(s, 200);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(s), 0);
    KVX_CHECK_EQ_INT(used(p), 0);
    check_pool(p);
    const int64_t jumps[] = {3, 4, 64, 65, 129, 500, 1000};
    for (size_t i = 0; i < sizeof jumps / sizeof jumps[0]; i++) {   /* prefill-sized steps */
        KVX_CHECK(kvx_kv_seq_reserve(s, jumps[i], NULL) == KVX_OK);
        kvx_kv_seq_set_len(s, jumps[i]);
        /* the window layer drops what the step's first queries still saw at the next reserve */
        KVX_CHECK(kvx_kv_seq_reserve(s, jumps[i], NULL) == KVX_OK);
        KVX_CHECK_EQ_INT(used(p), kvx_kv_layout_seq_bytes(&l, jumps[i]));
        check_pool(p);
    }
    kvx_kv_seq_destroy(s);
    check_pool(p);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}

KVX_TEST(kv_pool_pooled_entries_state_fork)
{
    struct kvx_kv_layout l;
    pooled_layout(&l);
    struct kvx_kv_pool *p = pooled_pool(&l);
    struct kvx_kv_seq *s = NULL, *f = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(s, 100, NULL) == KVX_OK);
    const size_t sb = kvx_kv_layer_state_bytes(&l, 1);
    uint8_t *st = kvx_kv_seq_state(s, 1);
    KVX_CHECK(st != NULL);
    for (size_t i = 0; i < sb; i++)
        if (st[i] != 0) {
            KVX_CHECK(st[i] == 0);
            break;
        }
    memset(st, 0x5a, sb);
    /* 100 tokens: 25 CSA entries (K 32 + V 16), 12 HCA entries (K 32) */
    float k[32], v[16], out[32];
    for (int64_t e = 0; e < 25; e++) {
        for (int j = 0; j < 32; j++)
            k[j] = (float)(e * 100 + j);
        for (int j = 0; j < 16; j++)
            v[j] = (float)(-e * 100 - j);
        kvx_kv_seq_write(s, 1, e, k, v);
        if (e < 12)
            kvx_kv_seq_write(s, 2, e, k, NULL);
    }
    kvx_kv_seq_set_len(s, 100);
    struct kvx_kv_view vw;
    kvx_kv_seq_view(s, 1, &vw);
    KVX_CHECK_EQ_INT(vw.n_pages, 2);
    KVX_CHECK(kvx_kv_view_get_k(&vw, 0, 24, out) && out[5] == 2405.0f);
    KVX_CHECK(kvx_kv_view_get_v(&vw, 0, 17, out) && out[3] == -1703.0f);
    kvx_kv_seq_view(s, 2, &vw);
    KVX_CHECK_EQ_INT(vw.n_pages, 1);
    KVX_CHECK(kvx_kv_view_get_k(&vw, 0, 11, out) && out[31] == 1131.0f);
    /* fork: entry pages shared, state copied */
    const size_t before = used(p);
    KVX_CHECK(kvx_kv_seq_fork(s, &f, NULL) == KVX_OK);
    check_pool(p);
    KVX_CHECK_EQ_INT(used(p), before + kvx_kv_layout_state_bytes(&l));
    KVX_CHECK(kvx_kv_seq_state(f, 1) != st && memcmp(kvx_kv_seq_state(f, 1), st, sb) == 0);
    /* the fork grows on its own: the shared last entry page is copied before it is written */
    KVX_CHECK(kvx_kv_seq_reserve(f, 104, NULL) == KVX_OK);
    k[0] = 7.0f;
    kvx_kv_seq_write(f, 1, 25, k, v);
    kvx_kv_seq_set_len(f, 104);
    check_pool(p);
    kvx_kv_seq_view(s, 1, &vw);
    KVX_CHECK(kvx_kv_view_get_k(&vw, 0, 24, out) && out[5] == 2405.0f);
    kvx_kv_seq_view(f, 1, &vw);
    KVX_CHECK(kvx_kv_view_get_k(&vw, 0, 25, out) && out[0] == 7.0f);
    /* no prefix sharing of entry pages */
    int32_t ids[8];
    KVX_CHECK(!kvx_kv_seq_block_pages(s, 0, ids));
    kvx_kv_seq_destroy(f);
    kvx_kv_seq_destroy(s);
    check_pool(p);
    KVX_CHECK_EQ_INT(used(p), 0);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&l);
}
