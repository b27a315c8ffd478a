/* tests/test_arch_gemma4: Gemma 4 (model/gemma4.c) against transformers, and its cache layout.
 *
 * Fixtures (tools/reference/gen_arch_fixtures.py), each checked by kvx_test_arch_fixture
 * (prefill, incremental decode, decode == prefill; f32 KV cache):
 *   gemma4_e    E-like: KV sharing, per-layer embeddings, double-wide MLP, window 12 crossed
 *               many times by the 56 tokens, two full layers, final logit softcap
 *   gemma4_31b  31B-like: K = V full layers with their own KV-head count, no sharing, no PLE,
 *               untied lm_head, config.json with global_head_dim as released
 *   gemma4_mm   the multimodal layout: text_config, weights under model.language_model.
 *   gemma4_moe  26B-A4B-like: the dense MLP plus a routed mixture of 4 experts (top 2)
 * Config only: the released E2B and 31B config.json give the hand-computed bytes per token.
 * Bad input: missing tensors and keys, contradicting shapes. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv/layout.h"
#include "kvx.h"
#include "model/model.h"
#include "arch_fixture.h"
#include "test.h"

#define G4_TOL 1e-4
#define G4_SELF_TOL 5e-5   /* transformers' own prefill and decode differ by 3e-5 on gemma4_e */

KVX_TEST(arch_gemma4_fixtures_match_transformers)
{
    static const char *const fixtures[] = {"gemma4_e", "gemma4_31b", "gemma4_mm", "gemma4_moe"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        kvx_test_arch_fixture(fixtures[i], G4_TOL, G4_SELF_TOL);
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers: a temporary model folder whose config.json is `src` with `from` replaced by `to`
 * (NULL: unchanged), and, when `weights` names a fixture, a link to its model.safetensors. */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = s ? fread(s, 1, (size_t)n, f) : 0;
    fclose(f);
    if (s)
        s[got] = '\0';
    return s;
}

static bool write_edited(const char *dir, const char *src, const char *from, const char *to)
{
    char *text = read_text(src);
    KVX_CHECK(text != NULL);
    if (!text)
        return false;
    const char *at = from ? strstr(text, from) : NULL;
    KVX_CHECK(!from || at != NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        if (at) {
            fwrite(text, 1, (size_t)(at - text), f);
            fputs(to, f);
            fputs(at + strlen(from), f);
        } else {
            fputs(text, f);
        }
        fclose(f);
    }
    free(text);
    return f != NULL && (!from || at != NULL);
}

static enum kvx_status open_dir(const char *dir, bool config_only, struct kvx_model **m,
                                struct kvx_err *err)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    mc.config_only = config_only;
    return kvx_model_open(&mc, m, err);
}

static void remove_dir(const char *dir)
{
    char p[700];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

/* The layout a model declares (bf16 K and V, pages of 16 tokens). */
static bool layout_of(const struct kvx_model *m, struct kvx_kv_layout *l)
{
    struct kvx_err err = {0};
    if (kvx_kv_layout_init(l, m->hp.n_layer, 16, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return false;
    }
    m->arch->declare_cache(m, l, KVX_KV_CODEC_BF16, KVX_KV_CODEC_BF16);
    if (kvx_kv_layout_validate(l, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kvx_kv_layout_free(l);
        return false;
    }
    return true;
}

/* Bytes per token and bytes of one 4096-token sequence of a released config.json (copied to
 * dir as config.json, with `from` -> `to`). */
static bool released_bytes(const char *dir, const char *name, const char *from, const char *to,
                           size_t *per_token, size_t *seq4096)
{
    char src[600];
    snprintf(src, sizeof src, "%s/%s/config.json", kvx_test_fixture("configs"), name);
    if (!write_edited(dir, src, from, to))
        return false;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (open_dir(dir, true, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", name, err.msg);
        return false;
    }
    struct kvx_kv_layout l;
    bool ok = layout_of(m, &l);
    if (ok) {
        *per_token = kvx_kv_layout_bytes_per_token(&l);
        *seq4096 = kvx_kv_layout_seq_bytes(&l, 4096);
        kvx_kv_layout_free(&l);
    }
    kvx_model_close(m);
    return ok;
}

/* The released Gemma 4 configs, planned from config.json alone (bf16 K and V, 2 bytes):
 *
 * E2B: 35 layers, full at 4, 9, ..., 34 (every 5th); the last 20 (15..34) share, so layers
 *   0..14 own caches: full 4, 9, 14 and 12 sliding ones.  Full: 2 (K, V) x 1 KV head x 512 x
 *   2 B = 2,048 B/token each -> 3 x 2,048 = 6,144 B/token.  Sliding: 2 x 1 x 256 x 2 =
 *   1,024 B/token each, bounded by the window: 512 tokens -> 12 x 512 x 1,024 = 6,291,456 B.
 *   A 4096-token sequence: 3 x 4096 x 2048 + 6,291,456 = 31,457,280 B.
 *   Without sharing (num_kv_shared_layers 0): 7 full layers -> 14,336 B/token, and 28
 *   sliding ones -> 28 x 512 x 1024 = 14,680,064 B; at 4096 tokens 73,400,320 B.
 *   Sharing saves 8,192 of 14,336 B/token (57 %).
 * 31B: 60 layers, full every 6th (10), no sharing; full layers K = V with 4 KV heads of 512
 *   (K and V both stored): 10 x 2 x 4 x 512 x 2 = 81,920 B/token.  Sliding: 50 layers x 2 x
 *   16 x 256 x 2 = 16,384 B/token each over a 1024-token window: 50 x 1024 x 16,384 =
 *   838,860,800 B.  At 4096 tokens: 4096 x 81,920 + 838,860,800 = 1,174,405,120 B.
 * (4096 and both windows are multiples of the 16-token page: no partial pages.) */
KVX_TEST(arch_gemma4_released_configs_plan)
{
    char dir[] = "/tmp/kvx-g4-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    size_t bpt = 0, seq = 0;
    if (released_bytes(dir, "gemma-4-e2b", NULL, NULL, &bpt, &seq)) {
        KVX_CHECK_EQ_INT(bpt, 6144);
        KVX_CHECK_EQ_INT(seq, 31457280);
    }
    if (released_bytes(dir, "gemma-4-e2b", "\"num_kv_shared_layers\": 20",
                       "\"num_kv_shared_layers\": 0", &bpt, &seq)) {
        KVX_CHECK_EQ_INT(bpt, 14336);
        KVX_CHECK_EQ_INT(seq, 73400320);
    }
    if (released_bytes(dir, "gemma-4-31b", NULL, NULL, &bpt, &seq)) {
        KVX_CHECK_EQ_INT(bpt, 81920);
        KVX_CHECK_EQ_INT(seq, 1174405120);
    }
    remove_dir(dir);
}

/* The E2B layout itself: the kinds, the donors (sliding shared layers read 13, full 14), and
 * what the model tells the engine (widest head dim, fewest KV heads, double-wide MLP). */
KVX_TEST(arch_gemma4_e2b_layout)
{
    char dir[] = "/tmp/kvx-g4-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    char src[600];
    snprintf(src, sizeof src, "%s/gemma-4-e2b/config.json", kvx_test_fixture("configs"));
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    struct kvx_kv_layout l;
    if (write_edited(dir, src, NULL, NULL) && open_dir(dir, true, &m, &err) == KVX_OK &&
        layout_of(m, &l)) {
        for (int i = 0; i < 35; i++) {
            const struct kvx_layer_cache *c = &l.layers[i];
            const bool full = i % 5 == 4;
            if (i >= 15) {
                KVX_CHECK_EQ_INT(c->kind, KVX_KV_KIND_SHARED);
                KVX_CHECK_EQ_INT(c->shared_from, full ? 14 : 13);
            } else {
                KVX_CHECK_EQ_INT(c->kind, full ? KVX_KV_KIND_FULL : KVX_KV_KIND_WINDOW);
                KVX_CHECK_EQ_INT(c->k_dim, full ? 512 : 256);
                KVX_CHECK_EQ_INT(c->n_kv_heads, 1);
                KVX_CHECK_EQ_INT(c->window, full ? 0 : 512);
            }
        }
        KVX_CHECK_EQ_INT(m->hp.head_dim, 512);
        KVX_CHECK_EQ_INT(m->hp.n_head_kv, 1);
        KVX_CHECK_EQ_INT(m->hp.n_ff, 2 * 6144);
        kvx_kv_layout_free(&l);
    } else if (err.msg[0]) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
    }
    kvx_model_close(m);
    remove_dir(dir);
}

/* param_count from config.json alone equals the fixtures' own tensor count (transformers saves
 * exactly the tensors the forward pass reads: none for the shared layers' k/v). */
KVX_TEST(arch_gemma4_param_count)
{
    static const char *const fixtures[] = {"gemma4_e", "gemma4_31b", "gemma4_mm", "gemma4_moe"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/%s", kvx_test_fixture("arch"), fixtures[i]);
        struct kvx_model *m = NULL;
        struct kvx_err err = {0};
        if (open_dir(dir, false, &m, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "%s: %s", fixtures[i], err.msg);
            continue;
        }
        struct kvx_model_info info;
        kvx_model_get_info(m, &info);
        struct kvx_param_count pc;
        KVX_CHECK_EQ_INT(m->arch->param_count(m, &pc, &err), KVX_OK);
        if ((double)info.n_params != pc.total)
            kvx_test_fail(__FILE__, __LINE__, "%s: param_count %.0f, the file holds %llu",
                          fixtures[i], pc.total, (unsigned long long)info.n_params);
        KVX_CHECK(pc.active < pc.total);
        kvx_model_close(m);
    }
}

/* The released configs' parameter counts against the published ones (within 1%: they are
 * rounded): 31B "30.7B" (model card; text model only, the vision encoder aside); E2B "2.3B
 * effective" (model card: without the per-layer embedding table), which is param_count's
 * active (the table is read one row per token).  E2B's "5.1B with embeddings" includes the
 * audio and vision encoders kvx does not count. */
KVX_TEST(arch_gemma4_released_param_counts)
{
    static const struct { const char *name; double total, active; } cases[] = {
        {"gemma-4-31b", 30.7e9, 0},
        {"gemma-4-e2b", 0, 2.3e9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/%s", kvx_test_fixture("configs"), cases[i].name);
        struct kvx_model *m = NULL;
        struct kvx_err err = {0};
        if (open_dir(dir, true, &m, &err) != KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "%s: %s", cases[i].name, err.msg);
            continue;
        }
        struct kvx_param_count pc = {0};
        KVX_CHECK_EQ_INT(m->arch->param_count(m, &pc, &err), KVX_OK);
        if (cases[i].total > 0)
            KVX_CHECK_NEAR(pc.total / cases[i].total, 1.0, 0.01);
        if (cases[i].active > 0)
            KVX_CHECK_NEAR(pc.active / cases[i].active, 1.0, 0.01);
        kvx_model_close(m);
    }
}

/* The gemma4_e fixture with one config.json edit: the error names the key or tensor. */
KVX_TEST(arch_gemma4_config_errors)
{
    char dir[] = "/tmp/kvx-g4-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    char src[600], st_src[600], link[700], target[PATH_MAX];
    snprintf(src, sizeof src, "%s/gemma4_e/config.json", kvx_test_fixture("arch"));
    snprintf(st_src, sizeof st_src, "%s/gemma4_e/model.safetensors", kvx_test_fixture("arch"));
    snprintf(link, sizeof link, "%s/model.safetensors", dir);
    if (realpath(st_src, target))
        KVX_CHECK(symlink(target, link) == 0);
    const struct { const char *from, *to; enum kvx_status want; const char *needle; } cases[] = {
        {"\"head_dim\": 16,", "\"head_dim\": 16,", KVX_OK, ""},
        /* a missing key */
        {"\"head_dim\": 16,", "", KVX_ERR_FORMAT, "'head_dim' is missing"},
        {"\"num_hidden_layers\": 5,", "", KVX_ERR_FORMAT, "'num_hidden_layers' is missing"},
        /* keys that contradict tensor shapes */
        {"\"intermediate_size\": 64,", "\"intermediate_size\": 80,", KVX_ERR_FORMAT,
         "model.layers.0.mlp.gate_proj.weight"},
        {"\"use_double_wide_mlp\": true", "\"use_double_wide_mlp\": false", KVX_ERR_FORMAT,
         "model.layers.3.mlp.gate_proj.weight"},
        {"\"hidden_size_per_layer_input\": 8,", "\"hidden_size_per_layer_input\": 16,",
         KVX_ERR_FORMAT, "embed_tokens_per_layer.weight"},
        /* a missing tensor: layer 3 no longer shares, so it needs its own k_proj */
        {"\"num_kv_shared_layers\": 2,", "\"num_kv_shared_layers\": 1,", KVX_ERR_FORMAT,
         "'model.layers.3.self_attn.k_proj.weight' is missing"},
        /* malformed or unsupported */
        {"\"full_attention\",", "\"global\",", KVX_ERR_FORMAT, "layer_types[1]"},
        {"\"rope_type\": \"proportional\"", "\"rope_type\": \"yarn\"", KVX_ERR_UNSUPPORTED,
         "'yarn'"},
        {"\"num_kv_shared_layers\": 2,", "\"num_kv_shared_layers\": 5,", KVX_ERR_UNSUPPORTED,
         "num_kv_shared_layers"},
        {"\"num_attention_heads\": 4,", "\"num_attention_heads\": 3,", KVX_ERR_FORMAT,
         "not a multiple"},
        {"\"enable_moe_block\": false,", "\"enable_moe_block\": true,", KVX_ERR_FORMAT,
         "'num_experts' is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kvx_err err = {0};
        struct kvx_model *m = NULL;
        enum kvx_status st = write_edited(dir, src, cases[i].from, cases[i].to)
                                 ? open_dir(dir, false, &m, &err) : KVX_ERR_INVALID_ARG;
        kvx_model_close(m);
        if (st != cases[i].want || (st != KVX_OK && !strstr(err.msg, cases[i].needle)))
            kvx_test_fail(__FILE__, __LINE__, "'%s' -> '%s': status %d, '%s'", cases[i].from,
                          cases[i].to, st, err.msg);
    }
    /* a mixture-of-experts config on a dense checkpoint: the first MoE tensor is missing;
     * config only, it plans */
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (write_edited(dir, src, "\"enable_moe_block\": false", "\"enable_moe_block\": true") &&
        write_edited(dir, cfg, "\"num_experts\": null", "\"num_experts\": 4") &&
        write_edited(dir, cfg, "\"top_k_experts\": null", "\"top_k_experts\": 2") &&
        write_edited(dir, cfg, "\"moe_intermediate_size\": null", "\"moe_intermediate_size\": 16")) {
        struct kvx_err err = {0};
        struct kvx_model *m = NULL;
        KVX_CHECK_EQ_INT(open_dir(dir, false, &m, &err), KVX_ERR_FORMAT);
        KVX_CHECK(strstr(err.msg, "'model.layers.0.post_feedforward_layernorm_1.weight' is "
                                  "missing") != NULL);
        kvx_model_close(m);
        m = NULL;
        KVX_CHECK_EQ_INT(open_dir(dir, true, &m, &err), KVX_OK);
        kvx_model_close(m);
    }
    remove_dir(dir);
}
