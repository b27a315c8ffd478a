/* tests/test_arch_deepseek_v4: DeepSeek-V4 (model/deepseek_v4.c) against transformers.
 *
 * Fixtures (tools/reference/gen_arch_fixtures.py): deepseek_v4_swa (sliding-window layers
 * only, hash + learned MoE, mHC) and deepseek_v4_mix (SWA, CSA, HCA, CSA layers: CSA ratio 4
 * with a 16-head indexer keeping 3 entries, HCA ratio 8, window 8, YaRN compress rope); 56
 * tokens cross 14 CSA and 7 HCA windows.  kvx must match transformers' prefill and incremental
 * decode within V4_TOL, and its own decode must equal its prefill. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch_fixture.h"
#include "kv/codec.h"
#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

#define V4_TOL 1e-3
#define V4_SELF_TOL 1e-4

KVX_TEST(arch_deepseek_v4_swa_matches_transformers)
{
    kvx_test_arch_fixture("deepseek_v4_swa", V4_TOL, V4_SELF_TOL);
}

KVX_TEST(arch_deepseek_v4_mix_matches_transformers)
{
    kvx_test_arch_fixture("deepseek_v4_mix", V4_TOL, V4_SELF_TOL);
}

/* ------------------------------------------------------------------------------------------ */
/* Config-only: the cache layout of the released configs (tests/fixtures/configs/) */

static void count_kinds(const struct kvx_kv_layout *l, int *win, int *csa, int *hca)
{
    *win = *csa = *hca = 0;
    for (int i = 0; i < l->n_layer; i++) {
        *win += l->layers[i].kind == KVX_KV_KIND_WINDOW;
        *csa += l->layers[i].kind == KVX_KV_KIND_COMPRESSED;
        *hca += l->layers[i].kind == KVX_KV_KIND_HEAVY;
    }
}

/* Per token at BF16 (2 bytes), head_dim 512, index_head_dim 128:
 *   CSA layer (ratio 4):   (512 + 128) x 2 / 4 = 320 B;  HCA layer (ratio 128): 512 x 2 / 128 = 8 B;
 *   sliding-window layers grow nothing.
 *   Flash (compress_ratios [0, 0] + [4, 128] x 20 + [4], 43 layers): 21 CSA, 20 HCA, 2 SWA:
 *     21 x 320 + 20 x 8 = 6,880 B/token.
 *   Pro ([128, 128] + [4, 128] x 29 + [4], 61 layers): 30 CSA, 31 HCA: 30 x 320 + 31 x 8 = 9,848.
 * Window constant: every layer keeps its last 128 keys: 128 x 512 x 2 = 131,072 B (the ring in
 * a compressed layer's state block, or a window layer's pages). */
KVX_TEST(arch_deepseek_v4_released_config_layouts)
{
    char p[600];
    struct kvx_kv_layout l;
    int win, csa, hca;
    snprintf(p, sizeof p, "%s/DeepSeek-V4-Flash.json", kvx_test_fixture("configs"));
    if (kvx_test_config_layout(p, KVX_KV_CODEC_BF16, &l, NULL)) {
        count_kinds(&l, &win, &csa, &hca);
        KVX_CHECK(l.n_layer == 43 && win == 2 && csa == 21 && hca == 20);
        KVX_CHECK(l.layers[0].kind == KVX_KV_KIND_WINDOW && l.layers[2].kind == KVX_KV_KIND_COMPRESSED &&
                  l.layers[3].kind == KVX_KV_KIND_HEAVY && l.layers[42].kind == KVX_KV_KIND_COMPRESSED);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 6880);
        KVX_CHECK_EQ_INT(kvx_kv_layer_window_state_bytes(&l, 2), 131072);
        KVX_CHECK_EQ_INT(kvx_kv_layer_window_state_bytes(&l, 3), 131072);
        KVX_CHECK_EQ_INT(l.layers[0].window, 128);
        kvx_kv_layout_free(&l);
    }
    snprintf(p, sizeof p, "%s/DeepSeek-V4-Pro.json", kvx_test_fixture("configs"));
    if (kvx_test_config_layout(p, KVX_KV_CODEC_BF16, &l, NULL)) {
        count_kinds(&l, &win, &csa, &hca);
        KVX_CHECK(l.n_layer == 61 && win == 0 && csa == 30 && hca == 31);
        KVX_CHECK(l.layers[0].kind == KVX_KV_KIND_HEAVY && l.layers[1].kind == KVX_KV_KIND_HEAVY &&
                  l.layers[2].kind == KVX_KV_KIND_COMPRESSED);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 9848);
        kvx_kv_layout_free(&l);
    }
    /* the fixture folder opens config-only too, with its own small layout: per token
     * CSA (32 + 16) x 4 B / 4 = 48 B (two layers), HCA 32 x 4 / 8 = 16 B at f32 */
    snprintf(p, sizeof p, "%s/deepseek_v4_mix", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = p;
    mc.config_only = true;
    struct kvx_model *m = NULL;
    KVX_CHECK(kvx_model_open(&mc, &m, NULL) == KVX_OK);
    if (m) {
        KVX_CHECK(kvx_kv_layout_init(&l, m->hp.n_layer, 16, NULL) == KVX_OK);
        m->arch->declare_cache(m, &l, KVX_KV_CODEC_F32, KVX_KV_CODEC_F32);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 2 * 48 + 16);
        kvx_kv_layout_free(&l);
        kvx_model_close(m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Bad input: config.json errors name the key or the tensor */

KVX_TEST(arch_deepseek_v4_config_errors)
{
    static const struct kvx_test_config_edit cases[] = {
        {"\"o_groups\": 2,", "\"o_groups\": 2,", KVX_OK, ""},
        /* a missing key */
        {"\"q_lora_rank\": 32,", "", KVX_ERR_FORMAT, "'q_lora_rank' is missing"},
        {"\"sliding_window\": 8,", "", KVX_ERR_FORMAT, "'sliding_window' is missing"},
        /* keys that contradict tensor shapes */
        {"\"o_lora_rank\": 16,", "\"o_lora_rank\": 8,", KVX_ERR_FORMAT,
         "model.layers.0.attn.wo_a.weight"},
        {"\"index_head_dim\": 16,", "\"index_head_dim\": 8,", KVX_ERR_FORMAT,
         "model.layers.1.attn.indexer.compressor.wkv.weight"},
        {"\"heavily_compressed_attention\": 8", "\"heavily_compressed_attention\": 16",
         KVX_ERR_FORMAT, "model.layers.2.attn.compressor.ape"},
        {"\"hc_mult\": 4,", "\"hc_mult\": 2,", KVX_ERR_FORMAT, "model.hc_head.hc_fn"},
        /* a hash layer where the file has a learned router: its tid2eid is missing */
        {"\"moe\",\n    \"moe\",\n    \"moe\"", "\"hash_moe\",\n    \"moe\",\n    \"moe\"",
         KVX_ERR_FORMAT, "model.layers.1.ffn.gate.tid2eid"},
        /* values kvx does not run */
        {"\"scoring_func\": \"sqrtsoftplus\"", "\"scoring_func\": \"softmax\"",
         KVX_ERR_UNSUPPORTED, "scoring_func"},
        {"\"sliding_attention\",\n    \"compressed", "\"full_attention\",\n    \"compressed",
         KVX_ERR_FORMAT, "layer_types[0]"},
        {"\"rope_type\": \"yarn\"", "\"rope_type\": \"llama3\"", KVX_ERR_UNSUPPORTED, "'llama3'"},
    };
    kvx_test_arch_config_edits("deepseek_v4_mix", cases, sizeof cases / sizeof cases[0]);
}

/* A compressed layer's window ring is rewritten in place: a K codec with per-sequence state
 * (kivi2) is refused with a message naming the layer; bf16 and f16 caches run. */
KVX_TEST(arch_deepseek_v4_codecs)
{
    char p[600];
    snprintf(p, sizeof p, "%s/deepseek_v4_mix", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = p;
    struct kvx_model *m = NULL;
    KVX_CHECK(kvx_model_open(&mc, &m, NULL) == KVX_OK);
    if (!m)
        return;
    const enum kvx_kv_codec codecs[] = {KVX_KV_CODEC_KIVI2, KVX_KV_CODEC_BF16, KVX_KV_CODEC_F16};
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        struct kvx_engine_cfg ec = kvx_engine_cfg_default();
        ec.k_codec = ec.v_codec = codecs[i];
        if (codecs[i] == KVX_KV_CODEC_KIVI2) {   /* the HCA layer only (the others: dims 16) */
            ec.k_codec = ec.v_codec = KVX_KV_CODEC_F32;
            ec.kv_layers = "2:kivi2";
        }
        ec.n_ctx = 64;
        ec.n_threads = 1;
        ec.page_tokens = 32;
        struct kvx_engine *e = NULL;
        struct kvx_err err = {0};
        enum kvx_status st = kvx_engine_create(m, &ec, &e, &err);
        if (codecs[i] == KVX_KV_CODEC_KIVI2) {
            if (st != KVX_ERR_UNSUPPORTED || !strstr(err.msg, "layer 2 is a heavy layer"))
                kvx_test_fail(__FILE__, __LINE__, "kivi2: status %d, '%s'", st, err.msg);
            kvx_engine_destroy(e);
            continue;
        }
        if (st != KVX_OK)
            kvx_test_fail(__FILE__, __LINE__, "%s: %s", kvx_kv_codec_name(codecs[i]), err.msg);
        struct kvx_session *s = NULL;
        float *lg = malloc(256 * sizeof *lg);
        int32_t toks[40];
        for (int t = 0; t < 40; t++)
            toks[t] = (t * 37 + 11) % 256;
        KVX_CHECK(e && kvx_session_create(e, &s, &err) == KVX_OK);
        if (s)
            KVX_CHECK(kvx_session_feed(s, toks, 40, false, lg, &err) == KVX_OK);
        bool finite = true;
        for (int v = 0; v < 256; v++)
            finite = finite && lg[v] == lg[v] && lg[v] < 1e30f && lg[v] > -1e30f;
        KVX_CHECK(finite);
        free(lg);
        kvx_session_destroy(s);
        kvx_engine_destroy(e);
    }
    kvx_model_close(m);
}
