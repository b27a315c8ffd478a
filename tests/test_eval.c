/* tests/test_eval.c: eval/ — the KL divergence, percentile, top-1 and Pareto math against
 * hand-computed values; the passkey prompt builder (exact length, key at its depth); and
 * `kvx eval kld|passkey|sweep` on the default model with tiny contexts: an f32 cache gives a
 * KL divergence of exactly 0 and top-1 agreement 1, f16 a small positive one, a sweep writes its
 * three files with one row per configuration, and bad input fails with a clear error. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eval/eval.h"
#include "json_mini.h"
#include "kvx.h"
#include "test.h"

/* ------------------------------------------------------------------------------------------ */
/* Math */

KVX_TEST(eval_kl_of_identical_distributions_is_zero)
{
    float x[1000];
    uint32_t s = 7;
    for (int i = 0; i < 1000; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = 30.0f * ((float)(s >> 8) / 16777216.0f) - 15.0f;
    }
    struct kvx_eval_pos r;
    kvx_eval_compare(x, x, 1000, 17, &r);
    KVX_CHECK(r.kld == 0.0);
    KVX_CHECK(r.top1_same);
    KVX_CHECK(r.nll_ref == r.nll_test);
    KVX_CHECK(r.nll_ref > 0.0);
}

/* p = (1/2, 1/4, 1/4), q = (1/3, 1/3, 1/3):
 * KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 0.0588915...; -ln p[1] = ln 4, -ln q[1] = ln 3. */
KVX_TEST(eval_kl_hand_computed)
{
    const double want = 0.5 * log(1.5) + 0.5 * log(0.75);
    const float ref[3] = {logf(0.5f), logf(0.25f), logf(0.25f)}, test[3] = {0, 0, 0};
    struct kvx_eval_pos r;
    kvx_eval_compare(ref, test, 3, 1, &r);
    KVX_CHECK_NEAR(r.kld, want, 1e-7);
    KVX_CHECK_NEAR(r.kld, 0.0588915, 1e-6);
    KVX_CHECK_NEAR(r.nll_ref, log(4.0), 1e-6);
    KVX_CHECK_NEAR(r.nll_test, log(3.0), 1e-6);
    KVX_CHECK(r.top1_same);                      /* ties in test: the first index, 0 */
    /* Softmax ignores a constant shift, even a large one (the max is subtracted first). */
    const float ref_hi[3] = {ref[0] + 1000.0f, ref[1] + 1000.0f, ref[2] + 1000.0f};
    const float test_lo[3] = {-500.0f, -500.0f, -500.0f};
    kvx_eval_compare(ref_hi, test_lo, 3, 1, &r);
    KVX_CHECK_NEAR(r.kld, want, 1e-4);
    /* The other direction is a different number: KL is not symmetric. */
    kvx_eval_compare(test, ref, 3, 1, &r);
    KVX_CHECK_NEAR(r.kld, log(1.0 / 3.0) - (log(0.5) + 2 * log(0.25)) / 3.0, 1e-6);
    const float test2[3] = {0, 1, 0};
    kvx_eval_compare(ref, test2, 3, 0, &r);
    KVX_CHECK(!r.top1_same);
}

KVX_TEST(eval_argmax_and_percentile)
{
    const float x[6] = {1, 3, -2, 3, 0, 2};
    KVX_CHECK_EQ_INT(kvx_eval_argmax(x, 6), 1);
    KVX_CHECK_EQ_INT(kvx_eval_argmax(x, 1), 0);
    double v[5] = {5, 1, 4, 2, 3};
    KVX_CHECK_NEAR(kvx_eval_percentile(v, 5, 0.99), 4.96, 1e-12);   /* h = 3.96 */
    KVX_CHECK_NEAR(kvx_eval_percentile(v, 5, 0.5), 3.0, 0);
    KVX_CHECK_NEAR(kvx_eval_percentile(v, 5, 0.0), 1.0, 0);
    KVX_CHECK_NEAR(kvx_eval_percentile(v, 5, 1.0), 5.0, 0);
    KVX_CHECK_NEAR(kvx_eval_percentile(v, 5, 0.1), 1.4, 1e-12);
    double one = 7.0;
    KVX_CHECK_NEAR(kvx_eval_percentile(&one, 1, 0.99), 7.0, 0);
    KVX_CHECK_NEAR(kvx_eval_percentile(NULL, 0, 0.99), 0.0, 0);
}

KVX_TEST(eval_pareto_front)
{
    const struct kvx_eval_sweep_row rows[5] = {
        {.name = "f32", .bytes_per_token = 46080, .kld_mean = 0.0},
        {.name = "f16", .bytes_per_token = 23040, .kld_mean = 0.004},
        {.name = "bad", .bytes_per_token = 23040, .kld_mean = 0.01},   /* same bytes, worse */
        {.name = "q4", .bytes_per_token = 7000, .kld_mean = 0.05},
        {.name = "meh", .bytes_per_token = 9000, .kld_mean = 0.06},    /* bigger and worse */
    };
    bool front[5];
    kvx_eval_pareto(rows, 5, front);
    KVX_CHECK(front[0] && front[1] && !front[2] && front[3] && !front[4]);
}

/* ------------------------------------------------------------------------------------------ */
/* Passkey prompts */

/* The evaluation corpus, or one of its sources Debian ships, or NULL. */
static const char *corpus_path(void)
{
    static const char *const paths[] = {"data/corpus/eval.txt", "/usr/share/common-licenses/GPL-3"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], R_OK) == 0)
            return paths[i];
    return NULL;
}

struct pk_fixture {
    struct kvx_model *m;
    int32_t *filler;
    int64_t n_filler;
};

static bool pk_open(struct pk_fixture *f)
{
    memset(f, 0, sizeof *f);
    const char *model = kvx_test_model_path(), *corpus = corpus_path();
    if (!model || !corpus) {
        kvx_test_skip(!model ? "default model not present" : "no corpus text (make corpus)");
        return false;
    }
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = model;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_model_open(&mc, &f->m, &err) == KVX_OK);
    FILE *fp = fopen(corpus, "rb");
    char *text = malloc(40000);
    size_t len = fp && text ? fread(text, 1, 40000, fp) : 0;
    if (fp)
        fclose(fp);
    f->filler = malloc((len + 8) * sizeof *f->filler);
    KVX_CHECK(f->m && f->filler && len > 20000);
    if (!f->m || !f->filler || len <= 20000) {
        free(text);
        return false;
    }
    KVX_CHECK(kvx_tokenize(f->m, text, len, false, false, f->filler, (int64_t)len + 8,
                           &f->n_filler, &err) == KVX_OK);
    free(text);
    return true;
}

static void pk_close(struct pk_fixture *f)
{
    free(f->filler);
    kvx_model_close(f->m);
}

/* The prompt's text from token `from` on. */
static void detok(const struct kvx_model *m, const struct kvx_eval_passkey_prompt *p, int64_t from,
                  char *buf, size_t cap)
{
    size_t n = 0;
    for (int64_t i = from; i < p->n && n + 1 < cap; i++) {
        size_t k = kvx_token_piece(m, p->tokens[i], true, buf + n, cap - 1 - n);
        n += k < cap - 1 - n ? k : cap - 1 - n;
    }
    buf[n] = '\0';
}

KVX_TEST(eval_passkey_prompt_length_and_depth)
{
    struct pk_fixture f;
    if (!pk_open(&f))
        return;
    struct kvx_eval_passkey_cfg c = {.model = f.m, .filler = f.filler, .n_filler = f.n_filler};
    static char text[65536];
    const double depths[] = {0.0, 0.25, 0.5, 0.75, 1.0};
    for (int form = 0; form < 2; form++) {
        c.form = form ? KVX_EVAL_PASSKEY_CHAT : KVX_EVAL_PASSKEY_PLAIN;
        for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
            struct kvx_eval_passkey_prompt p;
            struct kvx_err err = {0};
            KVX_CHECK(kvx_eval_passkey_build(&c, 1000, depths[d], 48213, 12345 + (int64_t)d, &p,
                                             &err) == KVX_OK);
            KVX_CHECK_EQ_INT(p.n, 1000);
            KVX_CHECK_EQ_INT(p.key, 48213);
            /* the key sentence starts at key_at, and within 32 tokens of the asked depth */
            detok(f.m, &p, p.key_at, text, sizeof text);
            KVX_CHECK(strncmp(text, "\n\nThe pass key is 48213. Remember it. 48213 is the pass "
                                    "key.", 56) == 0);
            KVX_CHECK(fabs(p.depth - depths[d]) <= 32.0 / (double)p.filler_len + 1e-9);
            if (depths[d] == 0.0) { /* nothing between the instruction and the key */
                detok(f.m, &p, 0, text, sizeof text);
                const char *k = strstr(text, "The pass key is 48213");
                const char *intro = strstr(text, "asked for it at the end.\n\n");
                KVX_CHECK(k && intro && k - intro == (ptrdiff_t)strlen("asked for it at the end.\n\n\n\n"));
            }
            if (depths[d] == 1.0) { /* the question follows the key */
                detok(f.m, &p, p.key_at, text, sizeof text);
                KVX_CHECK(strstr(text, "is the pass key.\n\n\n\nWhat is the pass key?") != NULL);
            }
            if (form == 0) {
                detok(f.m, &p, 0, text, sizeof text);
                const char *tail = "What is the pass key? The pass key is";
                KVX_CHECK(strlen(text) > strlen(tail) &&
                          strcmp(text + strlen(text) - strlen(tail), tail) == 0);
            } else {
                detok(f.m, &p, 0, text, sizeof text);
                KVX_CHECK(strncmp(text, "<|im_start|>", 12) == 0);
                KVX_CHECK(strstr(text, "<|im_start|>assistant\n") != NULL);
            }
            kvx_eval_passkey_prompt_free(&p);
        }
    }
    /* too short for the fixed parts; longer than the corpus allows */
    struct kvx_eval_passkey_prompt p;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_eval_passkey_build(&c, 20, 0.5, 48213, 0, &p, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "cannot hold") != NULL);
    KVX_CHECK(kvx_eval_passkey_build(&c, f.n_filler + 500, 0.5, 48213, 0, &p, &err) ==
              KVX_ERR_INVALID_ARG);
    KVX_CHECK(strstr(err.msg, "needs") && strstr(err.msg, "has"));
    KVX_CHECK(p.tokens == NULL);
    pk_close(&f);
}

/* ------------------------------------------------------------------------------------------ */
/* The kvx command */

struct run_out {
    int status;
    char out[16384], err[16384];
};

static const char *kvx_bin(void)
{
    const char *b = getenv("KVX_BIN");
    return b ? b : "build/kvx";
}

static void slurp(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    lseek(fd, 0, SEEK_SET);
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
}

static void run_kvx(const char *const *args, struct run_out *r)
{
    char po[] = "/tmp/kvx-eval-out-XXXXXX", pe[] = "/tmp/kvx-eval-err-XXXXXX";
    int fo = mkstemp(po), fe = mkstemp(pe);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        const char *argv[40];
        int n = 0;
        argv[n++] = kvx_bin();
        for (int i = 0; args[i] && n < 39; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    slurp(fo, r->out, sizeof r->out);
    slurp(fe, r->err, sizeof r->err);
    close(fo);
    close(fe);
    unlink(po);
    unlink(pe);
}

/* The model, the corpus and the binary, or a skip. */
static bool cli_ready(const char **model, const char **corpus)
{
    *model = kvx_test_model_path();
    *corpus = corpus_path();
    if (access(kvx_bin(), X_OK) != 0 || !*model || !*corpus) {
        kvx_test_skip(!*model ? "default model not present" : !*corpus ? "no corpus text"
                                                                        : "build/kvx not built");
        return false;
    }
    return true;
}

static struct kvx_json *kld_json(const char *model, const char *corpus, const char *kv)
{
    const char *a[] = {"eval", "kld", "-m", model, "-f", corpus, "-c", "64", "--chunks", "1",
                       "--kv", kv, "--json", NULL};
    static struct run_out r;
    run_kvx(a, &r);
    if (r.status != 0) {
        kvx_test_fail(__FILE__, __LINE__, "eval kld --kv %s: status %d: %s", kv, r.status, r.err);
        return NULL;
    }
    char msg[256];
    struct kvx_json *j = kvx_json_parse(r.out, strlen(r.out), msg, sizeof msg);
    if (!j)
        kvx_test_fail(__FILE__, __LINE__, "eval kld --json: %s: %s", msg, r.out);
    return j;
}

KVX_TEST(eval_cli_kld_f32_exact_f16_close)
{
    const char *model, *corpus;
    if (!cli_ready(&model, &corpus))
        return;
    struct kvx_json *j = kld_json(model, corpus, "f32");
    if (j) {
        KVX_CHECK(kvx_json_num(j, "kld_mean", -1) == 0.0);
        KVX_CHECK(kvx_json_num(j, "kld_max", -1) == 0.0);
        KVX_CHECK(kvx_json_num(j, "top1", -1) == 1.0);
        KVX_CHECK(kvx_json_num(j, "ppl_ratio", -1) == 1.0);
        KVX_CHECK_EQ_INT(kvx_json_num(j, "tokens_scored", -1), 31);   /* 32 .. 62 */
        KVX_CHECK_EQ_INT(kvx_json_num(j, "kv_bytes_per_token", -1), 46080);
    }
    kvx_json_free(j);
    j = kld_json(model, corpus, "f16");
    if (j) {
        const double kld = kvx_json_num(j, "kld_mean", -1);
        KVX_CHECK(kld > 0.0 && kld < 0.05);
        KVX_CHECK(kvx_json_num(j, "kld_p99", -1) >= kld);
        KVX_CHECK(kvx_json_num(j, "top1", -1) > 0.8);
        /* Over 31 scored tokens one flipped 8-bit activation rounding moves the ratio by
         * percents: on GPL-3's first window it reads 1.010-1.076 across the ISAs and the two
         * weight layouts (--isa, --weights rows), with KLD 0.008-0.010 for all of them. */
        KVX_CHECK_NEAR(kvx_json_num(j, "ppl_ratio", -1), 1.0, 0.1);
        KVX_CHECK_EQ_INT(kvx_json_num(j, "kv_bytes_per_token", -1), 23040);
        KVX_CHECK_EQ_INT(kvx_json_num(j, "kv_bytes_per_token_effective", -1), 23040);
    }
    kvx_json_free(j);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    KVX_CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Lines of a file, or -1 when it cannot be read; *has says whether `needle` occurs. */
static int file_lines(const char *path, const char *needle, bool *has)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    *has = strstr(buf, needle) != NULL;
    return lines;
}

KVX_TEST(eval_cli_sweep_writes_three_files)
{
    const char *model, *corpus;
    if (!cli_ready(&model, &corpus))
        return;
    char dir[] = "/tmp/kvx-sweep-XXXXXX";
    KVX_CHECK(mkdtemp(dir) != NULL);
    char cfg[256], prefix[256], path[300];
    snprintf(cfg, sizeof cfg, "%s/configs.txt", dir);
    snprintf(prefix, sizeof prefix, "%s/out", dir);
    write_file(cfg, "# name options\nf32 --kv f32\n\nf16   --kv f16   # the default\n"
                    "mixed --kv-layer 0-9:f32/f16\n");
    const char *a[] = {"eval", "sweep", "-m", model, "-f", corpus, "-c", "64", "--chunks", "1",
                       "--configs", cfg, "--out", prefix, NULL};
    struct run_out r;
    run_kvx(a, &r);
    KVX_CHECK(r.status == 0);
    if (r.status != 0)
        fprintf(stderr, "%s", r.err);
    KVX_CHECK(strstr(r.err, "config 3/3 mixed") != NULL);
    bool has = false;
    snprintf(path, sizeof path, "%s.csv", prefix);
    KVX_CHECK_EQ_INT(file_lines(path, "\"mixed\",", &has), 4);   /* header + 3 rows */
    KVX_CHECK(has);
    unlink(path);
    snprintf(path, sizeof path, "%s.md", prefix);
    KVX_CHECK_EQ_INT(file_lines(path, "| f16 | `--kv f16` |", &has), 7); /* title, blank, 2 + 3 */
    KVX_CHECK(has);
    unlink(path);
    snprintf(path, sizeof path, "%s.svg", prefix);
    KVX_CHECK(file_lines(path, ">mixed</text>", &has) > 10);
    KVX_CHECK(has);
    unlink(path);
    unlink(cfg);
    rmdir(dir);
}

/* Exit status 1, nothing on stdout, the last stderr line names the problem. */
static void expect_error(const char *const *args, const char *needle, const char *what)
{
    struct run_out r;
    run_kvx(args, &r);
    const char *last = r.err, *p = r.err;
    while ((p = strstr(p, "kvx: error: ")) != NULL)
        last = p++;
    if (r.status != 1 || r.out[0] || !strstr(last, needle))
        kvx_test_fail(__FILE__, __LINE__, "%s: status %d, stdout '%.80s', stderr: %s (want '%s')",
                      what, r.status, r.out, r.err, needle);
}

KVX_TEST(eval_cli_bad_input)
{
    const char *model, *corpus;
    if (!cli_ready(&model, &corpus))
        return;
    char dir[] = "/tmp/kvx-evalbad-XXXXXX";
    KVX_CHECK(mkdtemp(dir) != NULL);
    char shortf[256], cfg[256];
    snprintf(shortf, sizeof shortf, "%s/short.txt", dir);
    snprintf(cfg, sizeof cfg, "%s/configs.txt", dir);
    /* a text shorter than one window: the corpus's first 300 bytes */
    FILE *in = fopen(corpus, "rb"), *out = fopen(shortf, "wb");
    char buf[300];
    KVX_CHECK(in && out && fread(buf, 1, sizeof buf, in) == sizeof buf &&
              fwrite(buf, 1, sizeof buf, out) == sizeof buf);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    const char *a1[] = {"eval", "kld", "-m", model, "-f", shortf, "-c", "256", NULL};
    expect_error(a1, "needs 256 tokens, has", "text shorter than the window");
    const char *a2[] = {"eval", "kld", "-m", model, "-f", corpus, "-c", "64", "--chunks", "1",
                        "--kv-layer", "0-3:zz9", NULL};
    expect_error(a2, "unknown codec 'zz9'", "unknown codec");
    const char *a3[] = {"eval", "passkey", "-m", model, "-f", corpus, "--lengths", "1024,9000",
                        NULL};
    expect_error(a3, "exceed the model's context", "length beyond the context");
    const char *a3b[] = {"eval", "passkey", "-m", model, "-f", shortf, "--lengths", "4096", NULL};
    expect_error(a3b, "the filler text is too short", "filler shorter than the prompt");
    const char *a4[] = {"eval", "passkey", "-m", model, "--depths", "0,1.5", NULL};
    expect_error(a4, "--depths", "depth outside 0..1");
    write_file(cfg, "ok --kv f32\n# fine\nbroken --kv\n");
    const char *a5[] = {"eval", "sweep", "-m", model, "-f", corpus, "-c", "64", "--configs", cfg,
                        NULL};
    char want[300];
    snprintf(want, sizeof want, "%s:3: configuration 'broken'", cfg);
    expect_error(a5, want, "malformed configuration line");
    write_file(cfg, "ok --kv f32\n--kv f16\n");
    snprintf(want, sizeof want, "%s:2:", cfg);
    expect_error(a5, want, "configuration line without a name");
    write_file(cfg, "ok --kv f32\nbig -c 128\n");
    expect_error(a5, "-c/--ctx is the same for every configuration", "per-config context");
    write_file(cfg, "ok --kv f32\nok --kv f16\n");
    expect_error(a5, "already defined at line 1", "duplicate name");
    write_file(cfg, "# nothing\n");
    expect_error(a5, "no configurations", "empty configurations file");
    unlink(cfg);
    unlink(shortf);
    rmdir(dir);
}
