/* tests/test_arch_laguna: Laguna (model_type laguna) from safetensors + config.json against
 * transformers: per-layer query-head counts, global and sliding-window layers (windows 8 and
 * 5, crossed by the fixtures' 56 tokens), partial RoPE per layer type (default and YaRN),
 * softplus output gates (per head, per element), sigmoid-routed MoE with a shared expert.
 * Also: config errors name the key or tensor, and the cache layout of a config alone (a
 * fixture's and the released Laguna XS.2's) gives the hand-computed bytes per token. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch_fixture.h"
#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

#define LAGUNA_TOL 1e-4
#define LAGUNA_SELF_TOL 2e-5

KVX_TEST(arch_laguna_fixtures_match_transformers)
{
    kvx_test_arch_fixture("laguna_swa", LAGUNA_TOL, LAGUNA_SELF_TOL);
    kvx_test_arch_fixture("laguna_mix", LAGUNA_TOL, LAGUNA_SELF_TOL);
}

KVX_TEST(arch_laguna_config_errors)
{
    static const struct kvx_test_config_edit cases[] = {
        {"\"head_dim\": 16,", "\"head_dim\": 16,", KVX_OK, ""},
        /* a key contradicting a tensor's shape */
        {"\"head_dim\": 16,", "\"head_dim\": 8,", KVX_ERR_FORMAT, "model.layers.0.self_attn.q_norm.weight"},
        {"\"num_attention_heads_per_layer\": [\n    4,", "\"num_attention_heads_per_layer\": [\n    6,",
         KVX_ERR_FORMAT, "model.layers.0.self_attn.q_proj.weight"},
        {"\"gating\": true,", "\"gating\": \"per-element\",", KVX_ERR_FORMAT,
         "model.layers.0.self_attn.g_proj.weight"},
        {"\"gating\": true,", "\"gating\": false,", KVX_ERR_FORMAT,
         "model.layers.0.self_attn.g_proj.weight"},
        /* a tensor the config needs and the file lacks */
        {"    \"dense\"\n  ],", "    \"sparse\"\n  ],", KVX_ERR_FORMAT,
         "tensor 'model.layers.3.mlp.gate.weight' is missing"},
        {"\"attention_bias\": false,", "\"attention_bias\": true,", KVX_ERR_FORMAT,
         "tensor 'model.layers.0.self_attn.q_proj.bias' is missing"},
        /* missing or bad keys */
        {"\"use_cache\": true,\n  \"vocab_size\": 256", "\"use_cache\": true", KVX_ERR_FORMAT,
         "'vocab_size' is missing"},
        {"\"num_key_value_heads\": 2,", "", KVX_ERR_FORMAT, "'num_key_value_heads' is missing"},
        {"\"head_dim\": 16,", "", KVX_ERR_FORMAT, "'head_dim' is missing"},
        {"\"num_experts\": 4,", "", KVX_ERR_FORMAT, "'num_experts' is missing"},
        {"\"num_attention_heads_per_layer\": [\n    4,", "\"num_attention_heads_per_layer\": [\n    3,",
         KVX_ERR_FORMAT, "layer 0 has 3 query heads"},
        {"\"layer_types\": [\n    \"full_attention\",", "\"layer_types\": [\n    \"chunked_attention\",",
         KVX_ERR_UNSUPPORTED, "layer_types[0]"},
        {"\"gating\": true,", "\"gating\": \"sigmoid\",", KVX_ERR_UNSUPPORTED, "'gating'"},
        {"\"factor\": 32.0,", "", KVX_ERR_FORMAT, "yarn needs 'factor'"},
        {"\"rope_type\": \"yarn\"", "\"rope_type\": \"llama3\"", KVX_ERR_UNSUPPORTED, "'llama3'"},
        {"\"moe_apply_router_weight_on_input\": false,", "\"moe_apply_router_weight_on_input\": true,",
         KVX_ERR_UNSUPPORTED, "moe_apply_router_weight_on_input"},
    };
    kvx_test_arch_config_edits("laguna_swa", cases, sizeof cases / sizeof cases[0]);
}

KVX_TEST(arch_laguna_config_only_layout)
{
    char path[600];
    struct kvx_kv_layout l = {0};
    /* laguna_swa: layer 0 global, layers 1-3 sliding (window 8); 2 KV heads of 16 dims.
     * Growth: only the global layer, K + V: 1 x 2 x 2 x 16 x 2 B = 128 B/token. */
    snprintf(path, sizeof path, "%s/laguna_swa", kvx_test_fixture("arch"));
    if (kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, NULL)) {
        KVX_CHECK_EQ_INT(l.n_layer, 4);
        KVX_CHECK(l.layers[0].kind == KVX_KV_KIND_FULL);
        for (int i = 1; i < 4; i++) {
            KVX_CHECK(l.layers[i].kind == KVX_KV_KIND_WINDOW);
            KVX_CHECK_EQ_INT(l.layers[i].window, 8);
        }
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 128);
        kvx_kv_layout_free(&l);
    }
    /* Laguna XS.2 (tests/fixtures/configs/laguna-xs.2.json): 40 layers, [full, sliding x 3] x
     * 10, 8 KV heads of 128 dims on every layer (48 / 64 query heads), window 512.  Growth: the
     * 10 global layers, K + V: 10 x 2 x 8 x 128 x 2 B = 40,960 B/token (bf16/f16); the 30
     * sliding layers hold at most 512 tokens: 30 x 512 x 2 x 8 x 128 x 2 B = 62,914,560 B. */
    snprintf(path, sizeof path, "%s/laguna-xs.2.json", kvx_test_fixture("configs"));
    if (kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, NULL)) {
        KVX_CHECK_EQ_INT(l.n_layer, 40);
        int full = 0, window = 0;
        for (int i = 0; i < 40; i++) {
            full += l.layers[i].kind == KVX_KV_KIND_FULL;
            window += l.layers[i].kind == KVX_KV_KIND_WINDOW && l.layers[i].window == 512;
            KVX_CHECK_EQ_INT(l.layers[i].n_kv_heads, 8);
        }
        KVX_CHECK_EQ_INT(full, 10);
        KVX_CHECK_EQ_INT(window, 30);
        KVX_CHECK_EQ_INT(kvx_kv_layout_bytes_per_token(&l), 40960);
        /* 512 tokens fill every window: 512 x 40,960 + 62,914,560 */
        KVX_CHECK_EQ_INT(kvx_kv_layout_seq_bytes(&l, 512), 512 * 40960 + 62914560);
        kvx_kv_layout_free(&l);
    }
}
