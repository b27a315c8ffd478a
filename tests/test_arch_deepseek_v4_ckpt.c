/* tests/test_arch_deepseek_v4_ckpt: DeepSeek-V4 in its released checkpoint format.
 *
 * The deepseek_v4_mix fixture is rewritten here in the format of deepseek-ai/DeepSeek-V4-*:
 * upstream names ("layers.N.*", "embed.weight", "norm.weight", "hc_head_fn", ...), the
 * attention and shared-expert projections as FP8 E4M3 with F8_E8M0 block scales ("<stem>.scale",
 * 16x16 blocks here, a different power of two in every block), the routed experts as FP4 E2M1
 * packed two a byte (I8, element 2j in the low nibble) with one F8_E8M0 scale per 32 inputs.
 * The same quantized-then-dequantized weights are also written as F32 under the names
 * transformers saves; kvx must give bit-identical logits for both (FP8/FP4 times a power of two
 * is exact in BF16 and F32), and count the same parameters.  A truncated, mis-shaped or missing
 * scale tensor, or a NaN E8M0 scale, is an error naming the scale tensor. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch_fixture.h"
#include "io/safetensors.h"
#include "kvx.h"
#include "model/model.h"
#include "test.h"

/* ------------------------------------------------------------------------------------------ */
/* The value tables */

KVX_TEST(st_fp4_e2m1_and_e8m0_values)
{
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int n = 0; n < 16; n++) {
        const float v = kvx_st_fp4_e2m1_to_f32((uint8_t)n);
        KVX_CHECK(fabsf(v) == mag[n & 7] && (signbit(v) != 0) == (n >= 8));
    }
    KVX_CHECK(kvx_st_e8m0_to_f32(127) == 1.0f && kvx_st_e8m0_to_f32(130) == 8.0f &&
              kvx_st_e8m0_to_f32(120) == 0x1p-7f && kvx_st_e8m0_to_f32(0) == 0x1p-127f &&
              isnan(kvx_st_e8m0_to_f32(0xFF)));
    /* nibble order and scale layout: w [2, 2] bytes = 2 rows of 4 values, block 2 */
    const uint8_t wb[4] = {0x2F, 0x71, 0x08, 0xA5};
    const uint8_t sb[4] = {127, 128, 126, 129};   /* 1, 2 | 0.5, 4 */
    struct kvx_st_tensor w = {.name = "w", .dtype = KVX_ST_I8, .n_dims = 2, .shape = {2, 2},
                              .n_elem = 4, .nbytes = 4, .data = wb};
    struct kvx_st_tensor s = {.name = "w.scale", .dtype = KVX_ST_F8_E8M0, .n_dims = 2,
                              .shape = {2, 2}, .n_elem = 4, .nbytes = 4, .data = sb};
    float d[8];
    struct kvx_err err = {0};
    KVX_CHECK(kvx_st_dequant_fp4(&w, &s, 2, d, &err) == KVX_OK);
    const float want[8] = {-6.0f, 1.0f, 1.0f, 12.0f, -0.0f, 0.0f, 12.0f, -4.0f};
    for (int i = 0; i < 8; i++)
        KVX_CHECK(d[i] == want[i]);
    s.shape[1] = 1;   /* a grid that does not fit: both tensors named */
    s.n_elem = s.nbytes = 2;
    KVX_CHECK(kvx_st_dequant_fp4(&w, &s, 2, d, &err) == KVX_ERR_FORMAT &&
              strstr(err.msg, "'w.scale'") && strstr(err.msg, "'w'"));
}

/* ------------------------------------------------------------------------------------------ */
/* A safetensors writer */

struct stw {
    char *hdr;
    size_t hn, hcap;
    uint8_t *data;
    size_t n, cap;
};

static void stw_add(struct stw *o, const char *name, const char *dtype, int nd,
                    const int64_t *shape, const void *p, size_t bytes)
{
    if (o->n + bytes > o->cap) {
        o->cap = (o->n + bytes) * 2;
        o->data = realloc(o->data, o->cap);
    }
    memcpy(o->data + o->n, p, bytes);
    if (o->hn + 512 > o->hcap) {
        o->hcap = (o->hn + 512) * 2;
        o->hdr = realloc(o->hdr, o->hcap);
    }
    o->hn += (size_t)snprintf(o->hdr + o->hn, o->hcap - o->hn, "%s\"%s\":{\"dtype\":\"%s\","
                              "\"shape\":[", o->hn ? "," : "{", name, dtype);
    for (int d = 0; d < nd; d++)
        o->hn += (size_t)snprintf(o->hdr + o->hn, o->hcap - o->hn, "%s%lld", d ? "," : "",
                                  (long long)shape[d]);
    o->hn += (size_t)snprintf(o->hdr + o->hn, o->hcap - o->hn, "],\"data_offsets\":[%zu,%zu]}",
                              o->n, o->n + bytes);
    o->n += bytes;
}

static void stw_write(struct stw *o, const char *dir, const char *config, const char *extra)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    const uint64_t hl = o->hn + 1;
    KVX_CHECK(f && fwrite(&hl, 8, 1, f) == 1 && fwrite(o->hdr, 1, o->hn, f) == o->hn &&
              fwrite("}", 1, 1, f) == 1 && fwrite(o->data, 1, o->n, f) == o->n);
    if (f)
        fclose(f);
    snprintf(p, sizeof p, "%s/config.json", dir);
    f = fopen(p, "wb");
    KVX_CHECK(f != NULL);
    if (f) {
        fprintf(f, "{%s%s", extra, config + 1);   /* extra keys after the opening brace */
        fclose(f);
    }
    free(o->hdr);
    free(o->data);
    memset(o, 0, sizeof *o);
}

static void rm_model(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* Quantizers (nearest value; a block whose scale was lowered saturates at the format's largest) */

/* Nearest FP8 E4M3 byte to x (|x| <= 448): magnitudes increase with the byte value. */
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

/* Nearest FP4 E2M1 nibble to x (|x| <= 6). */
static uint8_t to_fp4(float x)
{
    int best = 0;
    for (int n = 1; n < 8; n++)
        if (fabsf(fabsf(x) - kvx_st_fp4_e2m1_to_f32((uint8_t)n)) <
            fabsf(fabsf(x) - kvx_st_fp4_e2m1_to_f32((uint8_t)best)))
            best = n;
    return (uint8_t)(best | (x < 0 ? 8 : 0));
}

/* The E8M0 exponent of a scale 2^k for a block whose largest magnitude is mx and whose format's
 * largest is top, lowered by `lower` (so some blocks use their range only in part). */
static int scale_exp(float mx, float top, int lower)
{
    return mx > 0 ? (int)ceilf(log2f(mx / top)) - lower : 0;
}

#define FP8_B 16   /* weight_block_size of the written config */

enum bad_scale { BAD_NONE = 0, BAD_FP8_TRUNCATED, BAD_FP4_SHAPE, BAD_NAN, BAD_MISSING };

/* The released name of a fixture (save_pretrained) name, into buf. */
static const char *released_name(const char *name, char *buf, size_t cap)
{
    static const char *const top[][2] = {
        {"model.embed_tokens.weight", "embed.weight"}, {"model.norm.weight", "norm.weight"},
        {"model.hc_head.hc_fn", "hc_head_fn"},         {"model.hc_head.hc_base", "hc_head_base"},
        {"model.hc_head.hc_scale", "hc_head_scale"},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(name, top[i][0]) == 0)
            return top[i][1];
    snprintf(buf, cap, "%s", strncmp(name, "model.", 6) == 0 ? name + 6 : name);
    return buf;
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* Write the fixture in the released format into `rel` and, with the same dequantized weights
 * as F32 under the saved names, into `ref` (NULL: skip).  `bad` spoils one scale tensor. */
static void write_pair(const struct kvx_safetensors *st, const char *config, const char *rel,
                       const char *ref, enum bad_scale bad)
{
    struct stw orel = {0}, oref = {0};
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const struct kvx_st_tensor *t = &st->tensors[i];
        char nb[256], sname[300];
        const char *rn = released_name(t->name, nb, sizeof nb);
        const bool expert = has(t->name, ".ffn.experts."),
                   fp8 = t->n_dims == 2 && has(t->name, ".weight") && !expert &&
                         ((has(t->name, ".attn.") && !has(t->name, ".compressor.")) ||
                          has(t->name, ".shared_experts."));
        if (t->dtype != KVX_ST_F32 || !(expert || fp8)) {
            stw_add(&orel, rn, kvx_st_dtype_name(t->dtype), (int)t->n_dims, t->shape, t->data,
                    t->nbytes);
            if (ref)
                stw_add(&oref, t->name, kvx_st_dtype_name(t->dtype), (int)t->n_dims, t->shape,
                        t->data, t->nbytes);
            continue;
        }
        const int64_t R = t->shape[0], C = t->shape[1];
        float *f = malloc((size_t)(R * C) * sizeof *f), *deq = malloc((size_t)(R * C) * sizeof *deq);
        kvx_st_read_f32(t, f, R * C, NULL);
        snprintf(sname, sizeof sname, "%.*s.scale", (int)(strlen(rn) - 7), rn);
        if (fp8) {
            const int64_t br = (R + FP8_B - 1) / FP8_B, bc = (C + FP8_B - 1) / FP8_B;
            uint8_t *q = malloc((size_t)(R * C)), *sc = malloc((size_t)(br * bc));
            for (int64_t bi = 0; bi < br * bc; bi++) {
                float mx = 0;
                for (int64_t r = (bi / bc) * FP8_B; r < R && r < (bi / bc + 1) * FP8_B; r++)
                    for (int64_t c = (bi % bc) * FP8_B; c < C && c < (bi % bc + 1) * FP8_B; c++)
                        mx = fmaxf(mx, fabsf(f[r * C + c]));
                sc[bi] = (uint8_t)(127 + scale_exp(mx, 448.0f, (int)(bi % 3)));
            }
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    const float s = kvx_st_e8m0_to_f32(sc[(r / FP8_B) * bc + c / FP8_B]);
                    const float x = f[r * C + c] / s;
                    q[r * C + c] = to_fp8(fmaxf(-448.0f, fminf(448.0f, x)));
                    deq[r * C + c] = kvx_st_fp8_e4m3_to_f32(q[r * C + c]) * s;
                }
            int64_t ss[2] = {br, bc};
            const bool spoil = strcmp(rn, "layers.1.attn.wq_a.weight") == 0;
            if (spoil && bad == BAD_FP8_TRUNCATED)
                ss[0] = br - 1;
            if (spoil && bad == BAD_NAN)
                sc[br * bc - 1] = 0xFF;
            stw_add(&orel, rn, "F8_E4M3", 2, t->shape, q, (size_t)(R * C));
            if (!(spoil && bad == BAD_MISSING))
                stw_add(&orel, sname, "F8_E8M0", 2, ss, sc, (size_t)(ss[0] * ss[1]));
            free(q);
            free(sc);
        } else {
            const int64_t bc = (C + 31) / 32;
            uint8_t *q = calloc((size_t)(R * C / 2), 1), *sc = malloc((size_t)(R * bc));
            for (int64_t r = 0; r < R; r++)
                for (int64_t b = 0; b < bc; b++) {
                    float mx = 0;
                    for (int64_t c = b * 32; c < C && c < (b + 1) * 32; c++)
                        mx = fmaxf(mx, fabsf(f[r * C + c]));
                    sc[r * bc + b] = (uint8_t)(127 + scale_exp(mx, 6.0f, (int)((r + b) % 2)));
                }
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++) {
                    const float s = kvx_st_e8m0_to_f32(sc[r * bc + c / 32]);
                    const uint8_t n = to_fp4(fmaxf(-6.0f, fminf(6.0f, f[r * C + c] / s)));
                    q[(r * C + c) / 2] |= (uint8_t)(c % 2 ? n << 4 : n);
                    deq[r * C + c] = kvx_st_fp4_e2m1_to_f32(n) * s;
                }
            const int64_t ws[2] = {R, C / 2};
            int64_t ss[2] = {R, bc};
            if (bad == BAD_FP4_SHAPE && strcmp(rn, "layers.2.ffn.experts.1.w2.weight") == 0)
                ss[0] = R / 2, ss[1] = 2 * bc;   /* the same bytes, the wrong grid */
            stw_add(&orel, rn, "I8", 2, ws, q, (size_t)(R * C / 2));
            stw_add(&orel, sname, "F8_E8M0", 2, ss, sc, (size_t)(R * bc));
            free(q);
            free(sc);
        }
        if (ref)
            stw_add(&oref, t->name, "F32", 2, t->shape, deq, (size_t)(R * C) * sizeof *deq);
        free(f);
        free(deq);
    }
    stw_write(&orel, rel, config, "\"expert_dtype\": \"fp4\", \"quantization_config\": "
              "{\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\", "
              "\"scale_fmt\": \"ue8m0\", \"weight_block_size\": [16, 16]}, ");
    if (ref)
        stw_write(&oref, ref, config, "");
    else
        free(oref.hdr), free(oref.data);
}

static bool load_fixture(struct kvx_safetensors **st, char *config, size_t cap)
{
    char p[600];
    struct kvx_err err = {0};
    snprintf(p, sizeof p, "%s/deepseek_v4_mix/config.json", kvx_test_fixture("arch"));
    FILE *cf = fopen(p, "rb");
    size_t cn = cf ? fread(config, 1, cap - 1, cf) : 0;
    config[cn] = '\0';
    if (cf)
        fclose(cf);
    snprintf(p, sizeof p, "%s/deepseek_v4_mix/model.safetensors", kvx_test_fixture("arch"));
    if (cn == 0 || kvx_st_open(p, st, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "deepseek_v4_mix: %s", err.msg);
        return false;
    }
    return true;
}

#define T_TOK 24

/* Logits of T_TOK tokens through the model in `dir` (false after a reported failure). */
static bool run_logits(const char *dir, float *logits, uint64_t *n_params)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", dir, err.msg);
        return false;
    }
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    *n_params = info.n_params;
    int32_t toks[T_TOK];
    for (int i = 0; i < T_TOK; i++)
        toks[i] = (int32_t)((i * 37 + 11) % 256);
    struct kvx_engine *e = kvx_test_arch_engine(m, 1);
    struct kvx_session *s = NULL;
    bool ok = e && kvx_session_create(e, &s, &err) == KVX_OK &&
              kvx_session_feed(s, toks, T_TOK, true, logits, &err) == KVX_OK;
    if (!ok)
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", dir, err.msg);
    kvx_session_destroy(s);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return ok;
}

KVX_TEST(arch_deepseek_v4_released_format_equals_dequantized)
{
    struct kvx_safetensors *st = NULL;
    char config[8192];
    if (!load_fixture(&st, config, sizeof config)) {
        kvx_st_close(st);
        return;
    }
    char drel[] = "/tmp/kvx-v4rel-XXXXXX", dref[] = "/tmp/kvx-v4ref-XXXXXX";
    KVX_CHECK(mkdtemp(drel) && mkdtemp(dref));
    write_pair(st, config, drel, dref, BAD_NONE);
    kvx_st_close(st);
    float *lrel = malloc(T_TOK * 256 * sizeof *lrel), *lref = malloc(T_TOK * 256 * sizeof *lref);
    uint64_t prel = 0, pref = 0;
    if (run_logits(drel, lrel, &prel) && run_logits(dref, lref, &pref)) {
        KVX_CHECK(memcmp(lrel, lref, T_TOK * 256 * sizeof *lrel) == 0);
        double spread = 0;
        for (int i = 0; i < T_TOK * 256; i++)
            spread = fmax(spread, fabs(lrel[i]));
        KVX_CHECK(spread > 1e-3 && isfinite(spread));   /* not all zeros */
        KVX_CHECK(prel == pref && prel > 0);
    }
    free(lrel);
    free(lref);
    rm_model(drel);
    rm_model(dref);
}

KVX_TEST(arch_deepseek_v4_released_format_bad_scales)
{
    struct kvx_safetensors *st = NULL;
    char config[8192];
    if (!load_fixture(&st, config, sizeof config)) {
        kvx_st_close(st);
        return;
    }
    static const struct {
        enum bad_scale bad;
        const char *name;
    } cases[] = {
        {BAD_FP8_TRUNCATED, "'layers.1.attn.wq_a.scale'"},
        {BAD_FP4_SHAPE, "'layers.2.ffn.experts.1.w2.scale'"},
        {BAD_NAN, "'layers.1.attn.wq_a.scale'"},
        {BAD_MISSING, "'layers.1.attn.wq_a.scale'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char d[] = "/tmp/kvx-v4bad-XXXXXX";
        KVX_CHECK(mkdtemp(d) != NULL);
        write_pair(st, config, d, NULL, cases[i].bad);
        struct kvx_model_cfg mc = kvx_model_cfg_default();
        mc.path = d;
        struct kvx_model *m = NULL;
        struct kvx_err err = {0};
        KVX_CHECK(kvx_model_open(&mc, &m, &err) == KVX_ERR_FORMAT && m == NULL);
        if (!strstr(err.msg, cases[i].name))
            kvx_test_fail(__FILE__, __LINE__, "case %zu: '%s' does not name %s", i, err.msg,
                          cases[i].name);
        kvx_model_close(m);
        rm_model(d);
    }
    kvx_st_close(st);
}
