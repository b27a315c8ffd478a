/* tests/test_plan.c: the KV cost model (plan/).  Bytes per token against numbers computed by
 * hand (derivations next to each), the planner against an engine's own layout for the default
 * model, the presets files, fit / roofline arithmetic, and `kvx plan` on bad input. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine.h"
#include "json_mini.h"
#include "plan/plan.h"
#include "test.h"

static struct kvx_plan_model gqa(const char *name, int32_t layers, int32_t heads, int32_t dim)
{
    struct kvx_plan_model m = {.n_layer = layers, .kv_heads = heads, .head_dim = dim,
                               .n_params = 1e9};
    snprintf(m.name, sizeof m.name, "%s", name);
    snprintf(m.pattern, sizeof m.pattern, "F");
    return m;
}

static size_t per_token(const struct kvx_plan_model *m, const char *k, const char *v)
{
    struct kvx_plan_kv_cfg c = kvx_plan_kv_cfg_default();
    KVX_CHECK(kvx_plan_codec_parse(k, &c.k) && kvx_plan_codec_parse(v, &c.v));
    struct kvx_plan_kv kv;
    struct kvx_err err = {0};
    if (kvx_plan_kv_from_model(m, &c, &kv, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return 0;
    }
    size_t b = kvx_plan_kv_bytes_per_token(&kv);
    kvx_plan_kv_free(&kv);
    return b;
}

KVX_TEST(plan_bytes_per_token_by_hand)
{
    /* Llama-3-70B f16: 80 layers x 8 kv heads x 128 dim x 2 (K, V) x 2 B = 327,680 B. */
    struct kvx_plan_model l70 = gqa("l70", 80, 8, 128);
    KVX_CHECK_EQ_INT(per_token(&l70, "f16", "f16"), 327680);
    /* f32: 4 B per element -> 655,360; fp8 (1 B) -> 163,840; K f16 + V fp8 -> 163,840 + 81,920. */
    KVX_CHECK_EQ_INT(per_token(&l70, "f32", "f32"), 655360);
    KVX_CHECK_EQ_INT(per_token(&l70, "fp8", "fp8"), 163840);
    KVX_CHECK_EQ_INT(per_token(&l70, "f16", "fp8"), 245760);
    /* fp4 = MXFP4, 4 bits + one 8-bit scale per 32 = 4.25 bits: 327,680 x 4.25 / 16 = 87,040. */
    KVX_CHECK_EQ_INT(per_token(&l70, "fp4", "fp4"), 87040);
    /* SmolLM2-135M f16: 30 layers x 3 kv heads x 64 dim x 2 (K, V) x 2 B = 23,040 B. */
    struct kvx_plan_model smol = gqa("smol", 30, 3, 64);
    KVX_CHECK_EQ_INT(per_token(&smol, "f16", "f16"), 23040);
    /* DeepSeek-V3 MLA latent bf16: 61 layers x (512 c_KV + 64 rope) x 2 B = 70,272 B. */
    struct kvx_plan_model ds = {.n_layer = 61, .latent_c = 512, .latent_rope = 64, .n_params = 1};
    snprintf(ds.name, sizeof ds.name, "ds");
    snprintf(ds.pattern, sizeof ds.pattern, "L");
    KVX_CHECK_EQ_INT(per_token(&ds, "bf16", "bf16"), 70272);
    /* DeepSeek-V4 (docs/ARCHITECTURES.md A.11), 16-bit entries: a CSA layer stores one 512-dim
     * entry + one 128-dim indexer key per 4 tokens = (1024 + 256) / 4 = 320 B/token, an HCA
     * layer one 512-dim entry per 128 tokens = 8 B/token; SWA-only layers grow by nothing.
     * Flash: 21 CSA + 20 HCA = 6,880 B; Pro: 30 CSA + 31 HCA = 9,848 B. */
    struct kvx_plan_model v4 = {.n_layer = 43, .kv_heads = 1, .head_dim = 512, .window = 128,
                                .ratio_c = 4, .ratio_h = 128, .index_dim = 128, .n_params = 1};
    snprintf(v4.name, sizeof v4.name, "v4-flash");
    for (int i = 0; i < 43; i++) /* SS, then CH x 20, C */
        v4.pattern[i] = i < 2 ? 'S' : i % 2 == 0 ? 'C' : 'H';
    KVX_CHECK_EQ_INT(per_token(&v4, "f16", "f16"), 6880);
    v4.n_layer = 61;
    for (int i = 0; i < 61; i++) /* HH, then CH x 29, C */
        v4.pattern[i] = i < 2 ? 'H' : i % 2 == 0 ? 'C' : 'H';
    KVX_CHECK_EQ_INT(per_token(&v4, "f16", "f16"), 9848);
    struct kvx_plan_kv kv;
    struct kvx_plan_kv_cfg kc = kvx_plan_kv_cfg_default();
    struct kvx_err err = {0};
    KVX_CHECK(kvx_plan_kv_from_model(&v4, &kc, &kv, &err) == KVX_OK);
    /* 1M tokens: 2^20 / 4 = 262,144 CSA entries (1024 pages of 256) x (1024 + 256) B x 30
     * + 2^20 / 128 = 8,192 HCA entries (32 pages) x 1024 B x 31 = 10,326,376,448 B of pages,
     * plus the per-sequence state (window rings and compressor buffers) */
    size_t state = kvx_kv_layout_state_bytes(&kv.layout);
    KVX_CHECK_EQ_INT(kvx_plan_kv_seq_bytes(&kv, (int64_t)1 << 20) - state,
                     30ull * 1024 * 256 * 1280 + 31ull * 32 * 256 * 1024);
    /* each ring holds 128 tokens x 1024 B; HCA pending: 127 tokens x 2 x 512 floats */
    KVX_CHECK(state >= 61ull * 128 * 1024 + 31ull * 127 * 2 * 512 * 4);
    kvx_plan_kv_free(&kv);
}

KVX_TEST(plan_windows_and_sharing)
{
    /* Gemma-4-31B-like: 60 layers, 5 window : 1 full; full layers 4 kv x 512, window 16 x 256.
     * Growth: 10 full x 4 x 512 x 2 x 2 B = 81,920 B/token; window layers count 0. */
    struct kvx_plan_model g = gqa("g31", 60, 16, 256);
    snprintf(g.pattern, sizeof g.pattern, "WWWWWF");
    g.window = 1024, g.g_kv_heads = 4, g.g_head_dim = 512;
    struct kvx_plan_kv_cfg c = kvx_plan_kv_cfg_default();
    struct kvx_plan_kv kv;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_plan_kv_from_model(&g, &c, &kv, &err) == KVX_OK);
    KVX_CHECK_EQ_INT(kvx_plan_kv_bytes_per_token(&kv), 81920);
    /* Window constant, page-granular: a 1024 window with 256-token pages holds at most 5 pages
     * of 256 x 16 x 256 x 2 x 2 B = 4 MiB each: 50 layers x 5 x 4,194,304 = 1,048,576,000. */
    KVX_CHECK_EQ_INT(kvx_plan_kv_const_bytes(&kv), 1048576000LL);
    /* At 8192 tokens: window layers hold exactly 4 pages, full layers 32 pages of 2 MiB. */
    KVX_CHECK_EQ_INT(kvx_plan_kv_seq_bytes(&kv, 8192), 50LL * 4 * 4194304 + 10LL * 32 * 2097152);
    kvx_plan_kv_free(&kv);
    /* Gemma-4-E2B-like sharing: 35 layers WWWWF, shared from 15 -> full layers 4, 9, 14 own a
     * cache: 3 x 1 kv head x 512 x 2 x 2 B = 6,144 B/token. */
    struct kvx_plan_model e = gqa("e2b", 35, 1, 256);
    snprintf(e.pattern, sizeof e.pattern, "WWWWF");
    e.window = 512, e.g_kv_heads = 1, e.g_head_dim = 512, e.shared_from = 15;
    KVX_CHECK_EQ_INT(per_token(&e, "f16", "f16"), 6144);
}

KVX_TEST(plan_presets_file)
{
    struct kvx_plan_model *list;
    int32_t n;
    struct kvx_err err = {0};
    if (kvx_plan_models_load("data/plan/models.tsv", &list, &n, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    static const struct { const char *name; long long bpt; } want[] = {
        {"llama-3.1-70b", 327680}, {"deepseek-v3", 70272}, {"smollm2-135m", 23040},
        {"gemma-4-31b", 81920}, {"gemma-4-e2b", 6144}, {"llama-3.1-8b", 131072},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct kvx_plan_model *pm;
        KVX_CHECK(kvx_plan_model_find(list, n, want[i].name, &pm, &err) == KVX_OK);
        if (pm)
            KVX_CHECK_EQ_INT(per_token(pm, "f16", "f16"), want[i].bpt);
    }
    const struct kvx_plan_model *pm = NULL;
    KVX_CHECK(kvx_plan_model_find(list, n, "no-such-model", &pm, &err) == KVX_ERR_NOT_FOUND);
    KVX_CHECK(strstr(err.msg, "no-such-model") != NULL);
    free(list);
    struct kvx_plan_hw *hw;
    KVX_CHECK(kvx_plan_hw_load("data/plan/hardware.tsv", &hw, &n, &err) == KVX_OK);
    const struct kvx_plan_hw *h = NULL;
    KVX_CHECK(kvx_plan_hw_find(hw, n, "H100", &h, &err) == KVX_OK);
    KVX_CHECK(h && h->mem_bytes == 80e9 && h->bw_bytes_s == 3.35e12);
    KVX_CHECK(kvx_plan_hw_find(hw, n, "tpu9", &h, &err) == KVX_ERR_NOT_FOUND);
    KVX_CHECK(strstr(err.msg, "tpu9") != NULL);
    free(hw);
}

/* The planner and the engine declare the same cache through the same code. */
KVX_TEST(plan_matches_engine_layout)
{
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("default model absent");
        return;
    }
    struct kvx_err err = {0};
    struct kvx_plan_kv_cfg c = kvx_plan_kv_cfg_default();
    struct kvx_plan_kv kv;
    KVX_CHECK(kvx_plan_kv_from_path(path, &c, &kv, &err) == KVX_OK);
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    struct kvx_model *m = NULL;
    struct kvx_engine *e = NULL;
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 512;
    ec.n_threads = 1;
    KVX_CHECK(kvx_model_open(&mc, &m, &err) == KVX_OK);
    KVX_CHECK(m && kvx_engine_create(m, &ec, &e, &err) == KVX_OK);
    if (e) {
        const struct kvx_kv_layout *l = kvx_engine_layout(e);
        KVX_CHECK_EQ_INT(kvx_plan_kv_bytes_per_token(&kv), kvx_kv_layout_bytes_per_token(l));
        KVX_CHECK_EQ_INT(kvx_plan_kv_bytes_per_token(&kv), 23040);   /* SmolLM2, as above */
        const int64_t ns[] = {1, 255, 256, 257, 8192, 131072};
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            KVX_CHECK_EQ_INT(kvx_plan_kv_seq_bytes(&kv, ns[i]), kvx_kv_layout_seq_bytes(l, ns[i]));
    }
    kvx_engine_destroy(e);
    kvx_model_close(m);
    kvx_plan_kv_free(&kv);
}

KVX_TEST(plan_fit_and_roofline)
{
    struct kvx_plan_model l70 = gqa("l70", 80, 8, 128);
    l70.n_params = 70e9;
    struct kvx_plan_kv_cfg c = kvx_plan_kv_cfg_default();
    struct kvx_plan_kv kv;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_plan_kv_from_model(&l70, &c, &kv, &err) == KVX_OK);
    struct kvx_plan_hw h100 = {.name = "h100", .mem_bytes = 80e9, .bw_bytes_s = 3.35e12};
    struct kvx_plan_cfg cfg = kvx_plan_cfg_default();
    cfg.ctx[0] = 8192;
    cfg.concurrency = 16;
    cfg.tp = 8;
    cfg.price_per_hour = 2.0;
    struct kvx_plan_result r;
    KVX_CHECK(kvx_plan_compute(&kv, &h100, &cfg, &r, &err) == KVX_OK);
    /* Weights 70e9 x 2 B = 140 GB; usable 8 x 80 GB x 0.9 = 576 GB; KV room 436 GB.
     * One 8192-token sequence: 8192 x 327,680 = 2,684,354,560 B -> 162 sequences. */
    KVX_CHECK_NEAR(r.kv_avail_bytes, 436e9, 1);
    KVX_CHECK_EQ_INT(r.at[0].seq_bytes, 2684354560LL);
    KVX_CHECK_EQ_INT(r.at[0].max_seqs, 162);
    KVX_CHECK(r.at[0].fits);
    /* Roofline: (140e9 + 16 x 2,684,354,560) / (8 x 3.35e12) s per step. */
    double step = (140e9 + 16 * 2684354560.0) / (8 * 3.35e12);
    KVX_CHECK_NEAR(r.at[0].step_s, step, 1e-12);
    KVX_CHECK_NEAR(r.at[0].tok_s_total, 16 / step, 1e-6);
    KVX_CHECK_NEAR(r.at[0].usd_per_mtok, 2.0 * 8 / (16 / step * 3600) * 1e6, 1e-9);
    /* Longest context for 16 sequences, in whole pages: one page of all layers is
     * 256 x 327,680 = 83,886,080 B; 16 x p x 83,886,080 <= 436e9 -> p = 324 -> 82,944 tokens. */
    KVX_CHECK_EQ_INT(r.max_ctx_at_c, 82944);
    /* One H100 cannot hold the weights: valid answer, with the shortfall. */
    cfg.tp = 1;
    KVX_CHECK(kvx_plan_compute(&kv, &h100, &cfg, &r, &err) == KVX_OK);
    KVX_CHECK(!r.weights_fit && !r.at[0].fits);
    KVX_CHECK_NEAR(r.at[0].short_bytes, 140e9 + 16 * 2684354560.0 - 72e9, 1);
    /* Bad input: context 0, concurrency 0. */
    cfg.ctx[0] = 0;
    KVX_CHECK(kvx_plan_compute(&kv, &h100, &cfg, &r, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "context 0") != NULL);
    cfg.ctx[0] = 8192;
    cfg.concurrency = 0;
    KVX_CHECK(kvx_plan_compute(&kv, &h100, &cfg, &r, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "concurrency 0") != NULL);
    KVX_CHECK(kvx_plan_parse_ctx_list("4096,0", &cfg, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_plan_parse_ctx_list("4K,32K,1M", &cfg, &err) == KVX_OK);
    KVX_CHECK(cfg.n_ctx == 3 && cfg.ctx[0] == 4096 && cfg.ctx[1] == 32768 && cfg.ctx[2] == 1048576);
    kvx_plan_kv_free(&kv);
}

KVX_TEST(plan_prefix_sharing)
{
    struct kvx_plan_model l70 = gqa("l70", 80, 8, 128);
    l70.n_params = 70e9;
    struct kvx_plan_kv_cfg c = kvx_plan_kv_cfg_default();
    struct kvx_plan_kv kv;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_plan_kv_from_model(&l70, &c, &kv, &err) == KVX_OK);
    struct kvx_plan_hw hw = {.name = "x", .mem_bytes = 80e9, .bw_bytes_s = 1e12};
    struct kvx_plan_cfg cfg = kvx_plan_cfg_default();
    cfg.tp = 8;
    cfg.concurrency = 4;
    cfg.prefix_shared = 4000;   /* 15 whole pages = 3840 tokens shared */
    struct kvx_plan_result r;
    KVX_CHECK(kvx_plan_compute(&kv, &hw, &cfg, &r, &err) == KVX_OK);
    double page = 256.0 * 327680;   /* one page of every layer */
    KVX_CHECK_NEAR(r.at[0].kv_bytes_at_c, 15 * page + 4 * (32 - 15) * page, 1);
    kvx_plan_kv_free(&kv);
}

/* ---------------------------------------------------------------------------------------------
 * The command */

struct plan_out {
    int status;
    char out[16384], err[2048];
};

static void slurp(int fd, char *buf, size_t cap)
{
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
}

static bool run_plan(const char *const *args, struct plan_out *r)
{
    const char *bin = getenv("KVX_BIN") ? getenv("KVX_BIN") : "build/kvx";
    if (access(bin, X_OK) != 0)
        return false;
    char po[] = "/tmp/kvx-plan-out-XXXXXX", pe[] = "/tmp/kvx-plan-err-XXXXXX";
    int fo = mkstemp(po), fe = mkstemp(pe);
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[32] = {bin, "plan"};
        int n = 2;
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        dup2(fo, 1);
        dup2(fe, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    slurp(fo, r->out, sizeof r->out);
    slurp(fe, r->err, sizeof r->err);
    close(fo), close(fe), unlink(po), unlink(pe);
    return true;
}

static void expect_fail(const char *const *args, const char *needle)
{
    struct plan_out r;
    if (!run_plan(args, &r))
        return;
    if (r.status != 1 || r.out[0] || !strstr(r.err, needle))
        kvx_test_fail(__FILE__, __LINE__, "kvx plan %s: status %d, stderr '%s' (want '%s')",
                      args[0], r.status, r.err, needle);
}

KVX_TEST(plan_cli)
{
    struct plan_out r;
    const char *ok[] = {"--preset", "llama-3.1-70b", "--ctx", "8192,131072", "--gpu", "h100",
                        "--concurrency", "16", "--json", NULL};
    if (!run_plan(ok, &r)) {
        kvx_test_skip("kvx binary absent (set KVX_BIN)");
        return;
    }
    KVX_CHECK_EQ_INT(r.status, 0);   /* does not fit on one H100: still a valid answer */
    char jerr[128];
    struct kvx_json *j = kvx_json_parse(r.out, strlen(r.out), jerr, sizeof jerr);
    KVX_CHECK(j != NULL);
    const struct kvx_json *m0 = kvx_json_at(kvx_json_get(j, "models"), 0);
    KVX_CHECK_NEAR(kvx_json_num(m0, "kv_bytes_per_token", 0), 327680, 0);
    const struct kvx_json *a1 = kvx_json_at(kvx_json_get(m0, "at"), 1);
    KVX_CHECK_NEAR(kvx_json_num(a1, "seq_bytes", 0), 131072.0 * 327680, 0);
    KVX_CHECK(!kvx_json_bool(a1, "fits", true) && kvx_json_num(a1, "short_bytes", 0) > 0);
    kvx_json_free(j);
    const char *table[] = {"--preset", "llama-3.1-70b", "--gpu", "h100", NULL};
    KVX_CHECK(run_plan(table, &r) && r.status == 0 && strstr(r.out, "short by") != NULL);
    expect_fail((const char *[]){"--preset", "llama-9", NULL}, "llama-9");
    expect_fail((const char *[]){"--preset", "mistral-7b", "--gpu", "tpu9", NULL}, "tpu9");
    expect_fail((const char *[]){"--preset", "mistral-7b", "--ctx", "0", NULL}, "context 0");
    expect_fail((const char *[]){"--preset", "mistral-7b", "-C", "0", NULL}, "concurrency 0");
    expect_fail((const char *[]){"--preset", "mistral-7b", "--kv", "q3", NULL}, "q3");
    /* a bare config.json: planned config-only, weights from its parameters x its dtype (FP8) */
    const char *cfg[] = {"-m", "tests/fixtures/configs/deepseek-v3/config.json", "--json", NULL};
    KVX_CHECK(run_plan(cfg, &r) && r.status == 0);
    j = kvx_json_parse(r.out, strlen(r.out), jerr, sizeof jerr);
    KVX_CHECK(j != NULL);
    m0 = kvx_json_at(kvx_json_get(j, "models"), 0);
    KVX_CHECK_NEAR(kvx_json_num(m0, "kv_bytes_per_token", 0), 70272, 0);
    KVX_CHECK(kvx_json_bool(m0, "config_only", false));
    KVX_CHECK_NEAR(kvx_json_num(m0, "weight_bytes", 0), kvx_json_num(m0, "n_params", -1), 0);
    kvx_json_free(j);
    expect_fail((const char *[]){"-m", "tests/fixtures/configs/deepseek-v3", "--mla", "flat",
                                 NULL}, "flat");
    expect_fail((const char *[]){"-m", "/nonexistent/config.json", NULL}, "/nonexistent");
}

/* --kv with a list: one row per codec, ratios to the first; the curve SVG and its CSV. */
KVX_TEST(plan_cli_compare_and_curve)
{
    struct plan_out r;
    const char *cmp[] = {"--preset", "llama-3.1-8b", "--kv", "f16,f32", "--ctx", "8192", NULL};
    if (!run_plan(cmp, &r)) {
        kvx_test_skip("kvx binary absent (set KVX_BIN)");
        return;
    }
    KVX_CHECK_EQ_INT(r.status, 0);
    const char *c = strstr(r.out, "comparison");
    KVX_CHECK(c != NULL);
    /* Llama-3.1-8B f32: 32 layers x 8 heads x 128 x 2 (K, V) x 4 B = 262,144 B, 2x f16 */
    KVX_CHECK(c && strstr(c, "llama-3.1-8b [f32/f32]") && strstr(c, "262144  2.000"));
    expect_fail((const char *[]){"--preset", "mistral-7b", "--kv", "f16,f32", "--kv-k", "f16",
                                 NULL}, "--kv-k");
    char svg[] = "/tmp/kvx-curve-XXXXXX";
    int fd = mkstemp(svg);
    KVX_CHECK(fd >= 0);
    close(fd);
    unlink(svg);
    char svgpath[64], csvpath[64];
    snprintf(svgpath, sizeof svgpath, "%s.svg", svg);
    snprintf(csvpath, sizeof csvpath, "%s.csv", svg);
    const char *curve[] = {"--preset", "llama-3.1-8b,deepseek-v3", "--curve", svgpath, NULL};
    KVX_CHECK(run_plan(curve, &r) && r.status == 0);
    FILE *f = fopen(svgpath, "r");
    char buf[8192] = {0};
    KVX_CHECK(f != NULL);
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    KVX_CHECK(strstr(buf, "<svg") && strstr(buf, "llama-3.1-8b") && strstr(buf, "deepseek-v3"));
    f = fopen(csvpath, "r");
    KVX_CHECK(f != NULL);
    int lines = 0;
    for (int ch; f && (ch = fgetc(f)) != EOF;)
        lines += ch == '\n';
    if (f)
        fclose(f);
    KVX_CHECK(lines >= 2 * 21); /* 21 points per model, 1K..1M */
    unlink(svgpath);
    unlink(csvpath);
}

/* --measure: this machine's read bandwidth as the device (a short, real measurement). */
KVX_TEST(plan_cli_measure)
{
    struct plan_out r;
    const char *args[] = {"--preset", "smollm2-135m", "--measure", "--json", NULL};
    if (!run_plan(args, &r)) {
        kvx_test_skip("kvx binary absent (set KVX_BIN)");
        return;
    }
    KVX_CHECK_EQ_INT(r.status, 0);
    char jerr[128];
    struct kvx_json *j = kvx_json_parse(r.out, strlen(r.out), jerr, sizeof jerr);
    KVX_CHECK(j != NULL);
    const struct kvx_json *hw = kvx_json_get(j, "hardware");
    double bw = kvx_json_num(hw, "bw_bytes_s", 0);
    KVX_CHECK(bw > 1e8 && bw < 1e13); /* 0.1 GB/s .. 10 TB/s */
    const struct kvx_json *m0 = kvx_json_at(kvx_json_get(j, "models"), 0);
    KVX_CHECK(kvx_json_num(kvx_json_at(kvx_json_get(m0, "at"), 0), "tok_s_per_seq", 0) > 0);
    kvx_json_free(j);
}
