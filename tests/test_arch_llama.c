/* tests/test_arch_llama: models from safetensors + config.json against transformers — the Llama
 * family (llama, mistral, qwen2, qwen3) and DeepSeek-V3 (MLA with a latent cache, MoE).
 *
 * Each folder tests/fixtures/arch/<name>/ holds a tiny random model saved by transformers
 * (config.json, safetensors — one of them sharded) and reference.safetensors with its float32
 * logits (tools/reference/gen_arch_fixtures.py).  kvx, with an f32 KV cache, must reproduce:
 *   prefill  one forward over all T tokens: every row within ARCH_TOL;
 *   decode   the first P tokens in one step, then one token per step: every row within
 *            ARCH_TOL of transformers' own incremental run;
 *   and kvx's decode equals kvx's prefill on the same tokens (within ARCH_SELF_TOL: the two
 *   differ only by matmul summation order — tiled kernels in prefill, vec_dot in decode).
 * FP8: a copy of a fixture with FP8 E4M3 weights and block scales runs exactly like the same
 * weights in BF16.  DeepSeek-V3's config.json errors name the key or tensor. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "kvx.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "arch_fixture.h"
#include "test.h"
#include "util/json.h"

#define ARCH_TOL 1e-4
#define ARCH_SELF_TOL 2e-5

static const char *const fixtures[] = {"llama_gqa", "llama_tied", "qwen2_bias", "qwen3_qknorm",
                                       "mistral_gqa", "mistral_swa", "qwen3_swa",
                                       "deepseek_v3_mla", "deepseek_v3_qproj", "deepseek_v3_moe"};

KVX_TEST(arch_llama_fixtures_match_transformers)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        kvx_test_arch_fixture(fixtures[i], ARCH_TOL, ARCH_SELF_TOL);
}

/* Sliding windows as transformers applies them: Mistral on every layer, Qwen3 on the layers
 * layer_types marks sliding (max_window_layers 1 of 3 here); the context is not capped. */
KVX_TEST(arch_llama_sliding_window_layers)
{
    static const struct {
        const char *name;
        int n_layer;
        int64_t ctx;
        bool window[3];
    } cases[] = {{"mistral_swa", 2, 512, {true, true}},
                 {"qwen3_swa", 3, 256, {false, true, true}},
                 {"mistral_gqa", 2, 512, {true, true}},   /* window 128 > the 56 tokens */
                 {"qwen3_qknorm", 2, 256, {false, false}}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", kvx_test_fixture("arch"), cases[i].name);
        struct kvx_kv_layout l = {0};
        int64_t ctx = 0;
        if (!kvx_test_config_layout(path, KVX_KV_CODEC_F16, &l, &ctx))
            continue;
        KVX_CHECK_EQ_INT(l.n_layer, cases[i].n_layer);
        KVX_CHECK_EQ_INT(ctx, cases[i].ctx);
        for (int j = 0; j < l.n_layer && j < 3; j++) {
            const bool w = cases[i].window[j];
            KVX_CHECK(l.layers[j].kind == (w ? KVX_KV_KIND_WINDOW : KVX_KV_KIND_FULL));
            KVX_CHECK_EQ_INT(l.layers[j].window, w ? (strcmp(cases[i].name, "mistral_gqa") ? 8
                                                                                              : 128)
                                                   : 0);
        }
        kvx_kv_layout_free(&l);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* FP8 weights through the model loader */

/* Nearest FP8 E4M3 byte to x (|x| <= 448): the magnitudes increase with the byte value, so a
 * binary search over bytes 0..0x7E finds the nearest. */
static uint8_t to_fp8(float x)
{
    const float a = fabsf(x);
    int lo = 0, hi = 0x7E;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (kvx_st_fp8_e4m3_to_f32((uint8_t)mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    const int best = a - kvx_st_fp8_e4m3_to_f32((uint8_t)lo) <=
                             kvx_st_fp8_e4m3_to_f32((uint8_t)hi) - a ? lo : hi;
    return (uint8_t)(best | (x < 0 ? 0x80 : 0));
}

struct st_out {
    char hdr[16384];
    size_t hn;
    uint8_t *data;
    size_t n, cap;
};

static void st_add(struct st_out *o, const char *name, const char *dtype, int64_t rows,
                   int64_t cols, const void *p, size_t bytes)
{
    if (o->n + bytes > o->cap) {
        o->cap = (o->n + bytes) * 2;
        o->data = realloc(o->data, o->cap);
    }
    memcpy(o->data + o->n, p, bytes);
    char shape[64];
    if (rows)
        snprintf(shape, sizeof shape, "%lld,%lld", (long long)rows, (long long)cols);
    else
        snprintf(shape, sizeof shape, "%lld", (long long)cols);
    o->hn += (size_t)snprintf(o->hdr + o->hn, sizeof o->hdr - o->hn,
                              "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                              o->hn > 1 ? "," : "", name, dtype, shape, o->n, o->n + bytes);
    o->n += bytes;
}

static void st_write(struct st_out *o, const char *dir, const char *config, const char *extra)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    o->hn += (size_t)snprintf(o->hdr + o->hn, sizeof o->hdr - o->hn, "}");
    uint64_t hl = o->hn;
    KVX_CHECK(f && fwrite(&hl, 8, 1, f) == 1 && fwrite(o->hdr, 1, o->hn, f) == o->hn &&
              fwrite(o->data, 1, o->n, f) == o->n);
    if (f)
        fclose(f);
    snprintf(p, sizeof p, "%s/config.json", dir);
    f = fopen(p, "wb");
    KVX_CHECK(f != NULL);
    if (f) {
        fprintf(f, "{%s%s", extra, config + 1);   /* extra keys after the opening brace */
        fclose(f);
    }
}

/* FP8 E4M3 weights with 32x32 block scales (powers of two, different in every block) must run
 * exactly like BF16 weights holding the dequantized values: FP8 × 2^k is exact in BF16. */
KVX_TEST(arch_llama_fp8_weights_equal_bf16)
{
    char src[512], cfg_path[600];
    snprintf(src, sizeof src, "%s/llama_gqa/model.safetensors", kvx_test_fixture("arch"));
    snprintf(cfg_path, sizeof cfg_path, "%s/llama_gqa/config.json", kvx_test_fixture("arch"));
    struct kvx_safetensors *st = NULL;
    struct kvx_err err = {0};
    FILE *cf = fopen(cfg_path, "rb");
    char config[4096] = "";
    size_t cn = cf ? fread(config, 1, sizeof config - 1, cf) : 0;
    config[cn] = '\0';
    if (cf)
        fclose(cf);
    if (kvx_st_open(src, &st, &err) != KVX_OK || cn == 0) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        kvx_st_close(st);
        return;
    }
    char d8[] = "/tmp/kvx-fp8-XXXXXX", d16[] = "/tmp/kvx-bf16-XXXXXX";
    KVX_CHECK(mkdtemp(d8) && mkdtemp(d16));
    struct st_out o8 = {.hn = 1, .hdr = "{"}, o16 = {.hn = 1, .hdr = "{"};
    const int64_t B = 32;
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const struct kvx_st_tensor *t = &st->tensors[i];
        float *f = malloc((size_t)t->n_elem * sizeof *f);
        kvx_st_read_f32(t, f, t->n_elem, NULL);
        if (t->n_dims == 1) {
            st_add(&o8, t->name, "F32", 0, t->shape[0], f, t->nbytes);
            st_add(&o16, t->name, "F32", 0, t->shape[0], f, t->nbytes);
            free(f);
            continue;
        }
        const int64_t R = t->shape[0], C = t->shape[1], br = (R + B - 1) / B, bc = (C + B - 1) / B;
        uint8_t *q = malloc((size_t)(R * C));
        uint16_t *h = malloc((size_t)(R * C) * sizeof *h);
        float *sc = malloc((size_t)(br * bc) * sizeof *sc);
        for (int64_t bi = 0; bi < br * bc; bi++) {
            float mx = 0;
            for (int64_t r = (bi / bc) * B; r < R && r < (bi / bc + 1) * B; r++)
                for (int64_t c = (bi % bc) * B; c < C && c < (bi % bc + 1) * B; c++)
                    mx = fabsf(f[r * C + c]) > mx ? fabsf(f[r * C + c]) : mx;
            sc[bi] = ldexpf(1.0f, mx > 0 ? (int)ceilf(log2f(mx / 448.0f)) - (int)(bi % 3) : 0);
        }
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) {
                const float s = sc[(r / B) * bc + c / B];
                const float x = f[r * C + c] / s;
                q[r * C + c] = to_fp8(x > 448 ? 448 : x < -448 ? -448 : x);
                const float deq = kvx_st_fp8_e4m3_to_f32(q[r * C + c]) * s;
                uint32_t bits;
                memcpy(&bits, &deq, 4);
                KVX_CHECK((bits & 0xffff) == 0);   /* exact in BF16 */
                h[r * C + c] = (uint16_t)(bits >> 16);
            }
        char sname[256];
        snprintf(sname, sizeof sname, "%s_scale_inv", t->name);
        st_add(&o8, t->name, "F8_E4M3", R, C, q, (size_t)(R * C));
        st_add(&o8, sname, "F32", br, bc, sc, (size_t)(br * bc) * sizeof *sc);
        st_add(&o16, t->name, "BF16", R, C, h, (size_t)(R * C) * sizeof *h);
        free(q);
        free(h);
        free(sc);
        free(f);
    }
    kvx_st_close(st);
    st_write(&o8, d8, config, "\"quantization_config\": {\"quant_method\": \"fp8\", "
             "\"weight_block_size\": [32, 32]}, ");
    st_write(&o16, d16, config, "");
    free(o8.data);
    free(o16.data);
    /* both models over the same tokens */
    struct kvx_model *m8 = NULL, *m16 = NULL;
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = d8;
    KVX_CHECK(kvx_model_open(&mc, &m8, &err) == KVX_OK);
    mc.path = d16;
    KVX_CHECK(kvx_model_open(&mc, &m16, &err) == KVX_OK);
    const int32_t toks[8] = {3, 200, 17, 45, 99, 1, 250, 8};
    float *l8 = malloc(8 * 256 * sizeof *l8), *l16 = malloc(8 * 256 * sizeof *l16);
    struct kvx_engine *e8 = m8 ? kvx_test_arch_engine(m8, 1) : NULL, *e16 = m16 ? kvx_test_arch_engine(m16, 1) : NULL;
    struct kvx_session *s8 = NULL, *s16 = NULL;
    if (e8 && e16 && kvx_session_create(e8, &s8, &err) == KVX_OK &&
        kvx_session_create(e16, &s16, &err) == KVX_OK) {
        KVX_CHECK(kvx_session_feed(s8, toks, 8, true, l8, &err) == KVX_OK);
        KVX_CHECK(kvx_session_feed(s16, toks, 8, true, l16, &err) == KVX_OK);
        KVX_CHECK(memcmp(l8, l16, 8 * 256 * sizeof *l8) == 0);
        double spread = 0;
        for (int i = 0; i < 8 * 256; i++)
            spread = fabs(l8[i]) > spread ? fabs(l8[i]) : spread;
        KVX_CHECK(spread > 1.0);   /* not all zeros */
    }
    /* the same FP8 file with a block size the scales do not fit: the scale tensor is named */
    kvx_session_destroy(s8);
    kvx_session_destroy(s16);
    kvx_engine_destroy(e8);
    kvx_engine_destroy(e16);
    kvx_model_close(m8);
    kvx_model_close(m16);
    free(l8);
    free(l16);
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", d8);
    FILE *f = fopen(p, "wb");
    if (f) {
        fprintf(f, "{\"quantization_config\": {\"weight_block_size\": [64, 64]}, %s", config + 1);
        fclose(f);
    }
    mc.path = d8;
    m8 = NULL;
    KVX_CHECK(kvx_model_open(&mc, &m8, &err) == KVX_ERR_FORMAT && strstr(err.msg, "_scale_inv"));
    kvx_model_close(m8);
    const char *dirs[2] = {d8, d16};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/model.safetensors", dirs[i]);
        unlink(p);
        snprintf(p, sizeof p, "%s/config.json", dirs[i]);
        unlink(p);
        rmdir(dirs[i]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* DeepSeek-V3 config.json errors */

KVX_TEST(arch_deepseek_config_errors)
{
    static const struct kvx_test_config_edit cases[] = {
        {"\"n_group\": 4,", "\"n_group\": 4,", KVX_OK, ""},
        {"\"n_group\": 4,", "\"n_group\": 3,", KVX_ERR_FORMAT, "n_group"},
        {"\"n_group\": 4,", "\"n_group\": 4, \"scoring_func\": \"softmax\",", KVX_ERR_UNSUPPORTED,
         "scoring_func"},
        {"\"kv_lora_rank\": 16,", "", KVX_ERR_FORMAT, "'kv_lora_rank' is missing"},
        {"\"q_lora_rank\": 32,", "", KVX_ERR_FORMAT, "'q_lora_rank' is missing"},
        {"\"q_lora_rank\": 32,", "\"q_lora_rank\": null,", KVX_ERR_FORMAT,
         "self_attn.q_proj.weight"},
        {"\"kv_lora_rank\": 16,", "\"kv_lora_rank\": 32,", KVX_ERR_FORMAT,
         "self_attn.kv_a_proj_with_mqa.weight"},
        {"\"rope_type\": \"yarn\"", "\"rope_type\": \"llama3\"", KVX_ERR_UNSUPPORTED, "'llama3'"},
        {"\"first_k_dense_replace\": 1,", "\"first_k_dense_replace\": 2,", KVX_ERR_FORMAT,
         "model.layers.1.mlp.gate_proj.weight"},
        {"\"first_k_dense_replace\": 1,", "\"first_k_dense_replace\": 0,", KVX_ERR_FORMAT,
         "model.layers.0.mlp.gate.weight"},
    };
    kvx_test_arch_config_edits("deepseek_v3_moe", cases, sizeof cases / sizeof cases[0]);
}
