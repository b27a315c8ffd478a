/* tests/test_kv_model_state: the model's own per-sequence state of a layer
 * (kvx_layer_cache.state_floats, kvx_kv_seq_model_state): sized in the layer's state block,
 * zero in a new sequence, copied by fork, emptied by truncation below the length, kept out of
 * prefix sharing; every step checked with kvx_kv_pool_check. */
#include <string.h>

#include "kv/layout.h"
#include "kv/pool.h"
#include "kv/prefix.h"
#include "kvx.h"
#include "test.h"

static bool check(const struct kvx_kv_pool *p)
{
    struct kvx_err err = {0};
    if (kvx_kv_pool_check(p, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "pool check: %s", err.msg);
        return false;
    }
    return true;
}

KVX_TEST(kv_model_state_layout_and_pool)
{
    struct kvx_kv_layout l;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_kv_layout_init(&l, 2, 16, NULL) == KVX_OK);
    for (int i = 0; i < 2; i++)
        l.layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 2,
                                               .k_dim = 16, .v_dim = 16,
                                               .k_codec = KVX_KV_CODEC_F32,
                                               .v_codec = KVX_KV_CODEC_F32};
    l.layers[1].state_floats = 20;   /* 80 bytes, one 128-byte aligned block */
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_kv_layer_model_state_bytes(&l, 0), 0);
    KVX_CHECK_EQ_INT(kvx_kv_layer_model_state_bytes(&l, 1), 128);
    KVX_CHECK_EQ_INT(kvx_kv_layer_state_bytes(&l, 1), 128);
    KVX_CHECK_EQ_INT(kvx_kv_layout_state_bytes(&l), 128);
    KVX_CHECK(kvx_kv_layout_has_model_state(&l));
    KVX_CHECK(!kvx_kv_prefix_supported(&l));
    /* growth per token is unchanged: 2 layers x (K + V) x 2 heads x 16 x 4 B */
    KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 512);
    KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 16), 16 * 512 + 128);

    struct kvx_kv_pool_cfg cfg = {.layout = &l, .budget_bytes = 1 << 20};
    struct kvx_kv_pool *p = NULL;
    KVX_CHECK(kvx_kv_pool_create(&cfg, &p, &err) == KVX_OK);
    struct kvx_kv_seq *a = NULL, *b = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &a, &err) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_model_state(a, 1) == NULL);   /* nothing reserved yet */
    KVX_CHECK(kvx_kv_seq_reserve(a, 5, &err) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_model_state(a, 0) == NULL);   /* the layer declares none */
    float *st = kvx_kv_seq_model_state(a, 1);
    KVX_CHECK(st != NULL);
    bool zero = true;
    for (int i = 0; st && i < 20; i++) {
        zero = zero && st[i] == 0.0f;
        st[i] = (float)(i + 1);
    }
    KVX_CHECK(zero);
    kvx_kv_seq_set_len(a, 5);
    check(p);
    /* fork: its own copy */
    KVX_CHECK(kvx_kv_seq_fork(a, &b, &err) == KVX_OK);
    float *sb = b ? kvx_kv_seq_model_state(b, 1) : NULL;
    KVX_CHECK(sb != NULL && sb != st);
    KVX_CHECK(sb && st && memcmp(sb, st, 20 * sizeof *st) == 0);
    if (sb)
        sb[0] = -1.0f;
    KVX_CHECK(st && st[0] == 1.0f);
    check(p);
    /* truncating below the length empties the sequence (its state describes token 4) */
    KVX_CHECK_EQ_INT(kvx_kv_seq_min_truncate(a), 5);
    kvx_kv_seq_truncate(a, 3);
    KVX_CHECK_EQ_INT(kvx_kv_seq_len(a), 0);
    KVX_CHECK(kvx_kv_seq_model_state(a, 1) == NULL);
    check(p);
    KVX_CHECK(kvx_kv_seq_reserve(a, 2, &err) == KVX_OK);
    st = kvx_kv_seq_model_state(a, 1);
    KVX_CHECK(st && st[0] == 0.0f && st[19] == 0.0f);
    check(p);
    /* prefix attach is refused */
    int32_t ids[2] = {0, 0};
    KVX_CHECK(kvx_kv_seq_attach(a, 0, 1, ids, 3, &err) == KVX_ERR_UNSUPPORTED);
    check(p);
    kvx_kv_seq_destroy(a);
    kvx_kv_seq_destroy(b);
    check(p);
    kvx_kv_pool_destroy(p);
    /* only FULL and WINDOW layers keep model state */
    l.layers[1].kind = KVX_KV_KIND_LATENT;
    l.layers[1].n_kv_heads = 1;
    l.layers[1].v_dim = 8;
    KVX_CHECK(kvx_kv_layout_validate(&l, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "state_floats") != NULL);
    kvx_kv_layout_free(&l);
}
