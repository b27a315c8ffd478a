/* tests/test_arch_zaya: ZAYA1 (model_type zaya) from safetensors + config.json against
 * transformers: compressed convolutional grouped-query attention (causal depthwise + grouped
 * convolutions over time on the packed q/k channels, values from the current and the previous
 * token, L2 QK norm with a learned key scale, partial RoPE), the EDA router with a skip expert,
 * residual scaling.  The convolution frames and the delayed value are per-sequence model state
 * (kv/pool.h) carried between decode steps: decode token by token equals prefill. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch_fixture.h"
#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

#define ZAYA_TOL 1e-4
#define ZAYA_SELF_TOL 2e-5

KVX_TEST(arch_zaya_fixtures_match_transformers)
{
    kvx_test_arch_fixture("zaya_cca", ZAYA_TOL, ZAYA_SELF_TOL);
    kvx_test_arch_fixture("zaya_cca3", ZAYA_TOL, ZAYA_SELF_TOL);
    kvx_test_arch_fixture("zaya_swa", ZAYA_TOL, ZAYA_SELF_TOL);
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

/* The model state through the session API, against kvx's own one-step prefill of the same
 * tokens: feeds in uneven chunks (the state crosses steps of several tokens), a fork continued
 * token by token (the fork copies the state; the source continues on its own), and a truncation
 * below the length (the session is emptied, and feeding again gives the same logits). */
KVX_TEST(arch_zaya_state_across_steps)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/zaya_cca3", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    enum { T = 50 };
    const int64_t V = m->hp.n_vocab;
    int32_t tok[T];
    for (int i = 0; i < T; i++)
        tok[i] = (int32_t)((i * 37 + 11) % V);
    float *pre = malloc((size_t)(T * V) * sizeof *pre), *got = malloc((size_t)(T * V) * sizeof *got);
    struct kvx_engine *e = kvx_test_arch_engine(m, 1);
    struct kvx_session *a = NULL, *b = NULL;
    if (!pre || !got || !e || kvx_session_create(e, &a, &err) != KVX_OK)
        goto out;
    KVX_CHECK(kvx_session_feed(a, tok, T, true, pre, &err) == KVX_OK);
    /* chunks of 1, 6, 13, 7, ... */
    KVX_CHECK(kvx_session_truncate(a, 0, &err) == KVX_OK);
    static const int chunks[] = {1, 6, 13, 7, 2, 21};
    int64_t at = 0;
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        KVX_CHECK(kvx_session_feed(a, tok + at, chunks[i], true, got + at * V, &err) == KVX_OK);
        at += chunks[i];
    }
    KVX_CHECK_EQ_INT(at, T);
    KVX_CHECK_NEAR(max_diff(got, pre, T * V), 0, ZAYA_SELF_TOL);
    /* fork at 30: both continue one token at a time */
    KVX_CHECK(kvx_session_truncate(a, 0, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(a, tok, 30, false, NULL, &err) == KVX_OK);
    KVX_CHECK(kvx_session_fork(a, &b, &err) == KVX_OK);
    for (int64_t t = 30; b && t < T; t++) {
        KVX_CHECK(kvx_session_feed(b, tok + t, 1, false, got + t * V, &err) == KVX_OK);
        if (t < 40)   /* the source, interleaved: its state is its own */
            KVX_CHECK(kvx_session_feed(a, tok + t, 1, false, got, &err) == KVX_OK);
    }
    KVX_CHECK_NEAR(max_diff(got + 30 * V, pre + 30 * V, (T - 30) * V), 0, ZAYA_SELF_TOL);
    KVX_CHECK_NEAR(max_diff(got, pre + 39 * V, V), 0, ZAYA_SELF_TOL);
    /* truncating below the length empties the session: feed again from the start */
    KVX_CHECK(kvx_session_truncate(a, 25, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_session_n_past(a), 0);
    KVX_CHECK(kvx_session_feed(a, tok, 25, false, NULL, &err) == KVX_OK);
    KVX_CHECK(kvx_session_feed(a, tok + 25, 1, false, got, &err) == KVX_OK);
    KVX_CHECK_NEAR(max_diff(got, pre + 25 * V, V), 0, ZAYA_SELF_TOL);
out:
    kvx_session_destroy(b);
    kvx_session_destroy(a);
    kvx_engine_destroy(e);
    free(pre);
    free(got);
    kvx_model_close(m);
}

KVX_TEST(arch_zaya_config_errors)
{
    static const struct kvx_test_config_edit cases[] = {
        {"\"cca_time0\": 2,", "\"cca_time0\": 2,", KVX_OK, ""},
        /* keys contradicting tensor shapes */
        {"\"cca_time0\": 2,", "\"cca_time0\": 3,", KVX_ERR_FORMAT,
         "model.layers.0.self_attn.qkv_proj.conv_qk_depthwise.weight' has shape [96, 1, 2]"},
        {"\"num_key_value_heads\": 2,", "\"num_key_value_heads\": 4,", KVX_ERR_FORMAT,
         "model.layers.0.self_attn.qkv_proj.k_proj.weight"},
        {"\"router_hidden_size\": 16,", "\"router_hidden_size\": 32,", KVX_ERR_FORMAT,
         "model.layers.0.mlp.gate.down_proj.weight"},
        {"\"num_experts\": 4,", "\"num_experts\": 3,", KVX_ERR_FORMAT,
         "model.layers.0.mlp.gate.router_mlp.out_proj.weight"},
        {"\"tie_word_embeddings\": true,", "\"tie_word_embeddings\": false,", KVX_ERR_FORMAT,
         "tensor 'lm_head.weight' is missing"},
        /* missing and unsupported keys */
        {"\"cca_time1\": 2,", "", KVX_ERR_FORMAT, "'cca_time1' is missing"},
        {"\"head_dim\": 16,", "", KVX_ERR_FORMAT, "'head_dim' is missing"},
        {"\"router_hidden_size\": 16,", "", KVX_ERR_FORMAT, "'router_hidden_size' is missing"},
        {"\"num_experts_per_tok\": 1,", "\"num_experts_per_tok\": 2,", KVX_ERR_UNSUPPORTED,
         "num_experts_per_tok"},
        {"\"attention_bias\": false,", "\"attention_bias\": true,", KVX_ERR_UNSUPPORTED,
         "attention_bias"},
        {"\"hybrid\",\n    \"hybrid\"", "\"hybrid\",\n    \"hybrid_sliding\"", KVX_ERR_FORMAT,
         "'sliding_window' is"},
        {"\"hybrid\",\n    \"hybrid\"", "\"hybrid\",\n    \"mamba\"", KVX_ERR_UNSUPPORTED,
         "layer_types[1]"},
        {"\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"", KVX_ERR_UNSUPPORTED, "'yarn'"},
    };
    kvx_test_arch_config_edits("zaya_cca", cases, sizeof cases / sizeof cases[0]);
}

KVX_TEST(arch_zaya_config_only_layout)
{
    char path[600];
    struct kvx_kv_layout l = {0};
    /* zaya_cca3: 3 layers, 4 KV heads of 16 dims: K + V = 3 x 2 x 4 x 16 x 2 B = 768 B/token.
     * Model state per layer: K = (3-1)+(2-1) = 3 frames of C = (8+4) x 16 = 192 channels, and
     * the delayed value, 4 x 16 / 2 = 32: 608 floats = 2,432 B (a multiple of 64). */
    snprintf(path, sizeof path, "%s/zaya_cca3", kvx_test_fixture("arch"));
    if (kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, NULL)) {
        KVX_CHECK_EQ_INT(l.n_layer, 3);
        for (int i = 0; i < 3; i++) {
            KVX_CHECK(l.layers[i].kind == KVX_KV_KIND_FULL);
            KVX_CHECK_EQ_INT(l.layers[i].state_floats, 608);
        }
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 768);
        KVX_CHECK_EQ_INT(kvx_kv_layout_state_bytes(&l), 3 * 2432);
        kvx_kv_layout_free(&l);
    }
    /* zaya_swa: layer 0 a window of 6, layer 1 global: growth only from layer 1,
     * 2 x 2 x 16 x 2 B = 128 B/token */
    snprintf(path, sizeof path, "%s/zaya_swa", kvx_test_fixture("arch"));
    if (kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, NULL)) {
        KVX_CHECK(l.layers[0].kind == KVX_KV_KIND_WINDOW && l.layers[0].window == 6);
        KVX_CHECK(l.layers[1].kind == KVX_KV_KIND_FULL);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 128);
        kvx_kv_layout_free(&l);
    }
    /* ZAYA1-8B (tests/fixtures/configs/zaya1-8b.json): 40 CCA layers, 2 KV heads of 128 dims:
     * 40 x 2 x 2 x 128 x 2 B = 40,960 B/token (bf16/f16).  Constant model state per sequence:
     * per layer 2 frames x (8 + 2) x 128 = 2,560 conv values + 2 x 128 / 2 = 128 delayed value
     * values = 2,688 floats = 10,752 B; x 40 = 430,080 B. */
    snprintf(path, sizeof path, "%s/zaya1-8b.json", kvx_test_fixture("configs"));
    if (kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, NULL)) {
        KVX_CHECK_EQ_INT(l.n_layer, 40);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 40960);
        KVX_CHECK_EQ_INT(kvx_kv_layout_state_bytes(&l), 430080);
        KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 1024), 1024 * 40960 + 430080);
        kvx_kv_layout_free(&l);
    }
}
