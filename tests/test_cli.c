/* tests/test_cli.c: the kvx command on bad input — a missing file, a file that is not GGUF,
 * an unsupported architecture or tensor type, a prompt longer than the context, a KV budget
 * too small, an unknown flag.  Each must exit non-zero with one line on stderr naming the
 * problem, print nothing on stdout, and not die of a signal. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/gguf_write.h"
#include "json_mini.h"
#include "test.h"

struct run_result {
    int status;          /* exit code, or -signal */
    char out[16384], err[4096];
    size_t n_out, n_err;
};

static const char *kvx_bin(void)
{
    const char *b = getenv("KVX_BIN");
    return b ? b : "build/kvx";
}

static void slurp(int fd, char *buf, size_t cap, size_t *n)
{
    *n = 0;
    ssize_t r;
    char tmp[4096];
    while ((r = read(fd, tmp, sizeof tmp)) > 0) {
        size_t take = (size_t)r < cap - 1 - *n ? (size_t)r : cap - 1 - *n;
        memcpy(buf + *n, tmp, take);
        *n += take;
    }
    buf[*n] = '\0';
}

/* Run kvx with argv (NULL-terminated); stdout and stderr go to temporary files. */
static void run_kvx(const char *const *args, struct run_result *r)
{
    char out_path[] = "/tmp/kvx-cli-out-XXXXXX", err_path[] = "/tmp/kvx-cli-err-XXXXXX";
    int fo = mkstemp(out_path), fe = mkstemp(err_path);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        const char *argv[32];
        int n = 0;
        argv[n++] = kvx_bin();
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    lseek(fo, 0, SEEK_SET);
    lseek(fe, 0, SEEK_SET);
    slurp(fo, r->out, sizeof r->out, &r->n_out);
    slurp(fe, r->err, sizeof r->err, &r->n_err);
    close(fo);
    close(fe);
    unlink(out_path);
    unlink(err_path);
}

/* The contract for bad input: exit status 1, nothing on stdout, exactly one line on stderr
 * that contains `needle`. */
static void expect_clean_error(const char *const *args, const char *needle, const char *what)
{
    struct run_result r;
    run_kvx(args, &r);
    int lines = 0;
    for (size_t i = 0; i < r.n_err; i++)
        lines += r.err[i] == '\n';
    if (r.status != 1 || r.n_out != 0 || lines != 1 || !strstr(r.err, needle))
        kvx_test_fail(__FILE__, __LINE__, "%s: status %d, stdout %zu bytes, stderr %d lines "
                      "(want 1 containing '%s'): %s", what, r.status, r.n_out, lines, needle, r.err);
}

static bool have_binary(void)
{
    if (access(kvx_bin(), X_OK) != 0) {
        kvx_test_skip("build/kvx not built");
        return false;
    }
    return true;
}

KVX_TEST(cli_rejects_unknown_flag_and_command)
{
    if (!have_binary())
        return;
    const char *a1[] = {"run", "--bogus", NULL};
    expect_clean_error(a1, "unknown option '--bogus'", "unknown flag");
    const char *a2[] = {"frobnicate", NULL};
    expect_clean_error(a2, "unknown command 'frobnicate'", "unknown command");
    const char *a3[] = {"run", "-n", "many", NULL};
    expect_clean_error(a3, "not a number", "bad number");
}

KVX_TEST(cli_rejects_missing_and_non_gguf_files)
{
    if (!have_binary())
        return;
    const char *a1[] = {"run", "-m", "/nonexistent/model.gguf", "-p", "hi", NULL};
    expect_clean_error(a1, "/nonexistent/model.gguf", "missing file");
    char path[] = "/tmp/kvx-notgguf-XXXXXX";
    int fd = mkstemp(path);
    KVX_CHECK(write(fd, "this is not a model file at all\n", 32) == 32);
    close(fd);
    const char *a2[] = {"run", "-m", path, "-p", "hi", NULL};
    expect_clean_error(a2, "GGUF", "not a GGUF");
    unlink(path);
}

static void write_tiny_gguf(const char *path, const char *arch, uint32_t tensor_type)
{
    struct kvx_gguf_writer *w = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_gguf_writer_create(32, &w, &err) == KVX_OK);
    if (!w)
        return;
    kvx_gguf_writer_add_str(w, "general.architecture", arch);
    const int64_t ne[2] = {32, 4};
    uint8_t data[4 * 32 * 4] = {0};
    KVX_CHECK(kvx_gguf_writer_add_tensor(w, "token_embd.weight", tensor_type, 2, ne, data,
                                         sizeof data) == KVX_OK);
    KVX_CHECK(kvx_gguf_writer_save(w, path, &err) == KVX_OK);
    kvx_gguf_writer_destroy(w);
}

KVX_TEST(cli_rejects_unsupported_architecture)
{
    if (!have_binary())
        return;
    char path[] = "/tmp/kvx-arch-XXXXXX";
    close(mkstemp(path));
    write_tiny_gguf(path, "mamba9", 0 /* f32 */);
    const char *a[] = {"run", "-m", path, "-p", "hi", NULL};
    expect_clean_error(a, "architecture 'mamba9' is not supported", "unsupported architecture");
    unlink(path);
}

KVX_TEST(cli_rejects_unsupported_tensor_type)
{
    if (!have_binary())
        return;
    /* Patch the type field of a valid file to 16 (IQ2_XXS), which kvx does not implement. */
    char path[] = "/tmp/kvx-type-XXXXXX";
    close(mkstemp(path));
    write_tiny_gguf(path, "llama", 0);
    FILE *f = fopen(path, "r+b");
    KVX_CHECK(f != NULL);
    if (!f)
        return;
    uint8_t buf[1024];
    size_t n = fread(buf, 1, sizeof buf, f);
    /* tensor info: name "token_embd.weight", n_dims u32 = 2, ne 32 and 4 (u64), type u32 */
    const char *name = "token_embd.weight";
    for (size_t i = 0; i + 17 + 4 + 16 + 4 <= n; i++)
        if (memcmp(buf + i, name, 17) == 0) {
            size_t off = i + 17 + 4 + 16;
            buf[off] = 16;
            fseek(f, (long)off, SEEK_SET);
            fwrite(buf + off, 1, 1, f);
            break;
        }
    fclose(f);
    const char *a[] = {"run", "-m", path, "-p", "hi", NULL};
    expect_clean_error(a, "token_embd.weight", "unsupported tensor type");
    unlink(path);
}

KVX_TEST(cli_rejects_prompt_longer_than_context_and_tiny_budget)
{
    if (!have_binary())
        return;
    const char *model = kvx_test_model_path();
    if (!model) {
        kvx_test_skip("default model not present");
        return;
    }
    const char *a1[] = {"run", "-m", model, "-c", "8", "-p",
                        "one two three four five six seven eight nine ten eleven twelve", NULL};
    expect_clean_error(a1, "exceed the context", "prompt longer than context");
    const char *a2[] = {"run", "-m", model, "--kv-budget", "100K", "-p", "Hello there", NULL};
    expect_clean_error(a2, "budget", "budget too small");
}

/* `kvx bench --sessions N --shared-prefix P`: the prefix is computed once and its pages held
 * once (P + N * own tokens of KV, not N * (P + own)); the bad values are refused cleanly. */
KVX_TEST(cli_bench_sessions_shared_prefix)
{
    if (!have_binary())
        return;
    const char *model = kvx_test_model_path();
    if (!model) {
        kvx_test_skip("default model not present");
        return;
    }
    const char *a[] = {"bench", "-m", model, "--sessions", "3", "--shared-prefix", "32", "-p", "8",
                       "-n", "2", "--page-tokens", "16", "-t", "2", "--json", NULL};
    struct run_result r;
    run_kvx(a, &r);
    char msg[128];
    struct kvx_json *j = r.status == 0 ? kvx_json_parse(r.out, r.n_out, msg, sizeof msg) : NULL;
    if (!j) {
        kvx_test_fail(__FILE__, __LINE__, "status %d: %s%s", r.status, r.out, r.err);
        return;
    }
    const double held = kvx_json_num(j, "kv_bytes_held", -1);
    /* 2 prefix blocks once + per session 1 block (tokens 32..41) of 30 layers x 16 tokens x
     * 768 bytes of f16 K and V */
    const double block = 30.0 * 16 * 768;
    KVX_CHECK_NEAR(held, (2 + 3 * 1) * block, 0);
    KVX_CHECK_NEAR(kvx_json_num(j, "kv_bytes_expected", -1), held, 0);
    KVX_CHECK_NEAR(kvx_json_num(j, "kv_bytes_independent", -1), 3 * 3 * block, 0);
    KVX_CHECK_NEAR(kvx_json_num(j, "prefill_tokens_skipped", -1), 2 * 32, 0);
    KVX_CHECK_NEAR(kvx_json_num(j, "prefill_tokens", -1), 3 * 40, 0);
    kvx_json_free(j);
    const char *b[] = {"bench", "-m", model, "--sessions", "0", NULL};
    expect_clean_error(b, "--sessions", "zero sessions");
}

/* A safetensors folder: logits from token ids and inspect work as on a GGUF file; text needs a
 * tokenizer, and the error says so; a folder with no model is named. */
KVX_TEST(cli_safetensors_folder)
{
    if (!have_binary())
        return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/arch/llama_gqa", kvx_test_fixture(""));
    struct run_result r;
    const char *a1[] = {"logits", "-m", dir, "--tokens", "203 34 2", "--kv", "f32", "--top", "1",
                        "--json", "-t", "1", NULL};
    run_kvx(a1, &r);
    KVX_CHECK(r.status == 0 && strstr(r.out, "\"tokens\": [203, 34, 2]") && strstr(r.out, "\"top\""));
    const char *a2[] = {"inspect", dir, NULL};
    run_kvx(a2, &r);
    /* (the first 4 KiB of the output) */
    KVX_CHECK(r.status == 0 && strstr(r.out, "safetensors: 1 file") &&
              strstr(r.out, "\"llama\"") && strstr(r.out, "model.embed_tokens.weight"));
    const char *a3[] = {"logits", "-m", dir, "-p", "hello", NULL};
    expect_clean_error(a3, "no tokenizer", "text without a tokenizer");
    const char *a4[] = {"logits", "-m", dir, "--tokens", "256", NULL};
    expect_clean_error(a4, "outside the vocabulary", "token id past the vocabulary");
    const char *a5[] = {"logits", "-m", kvx_test_fixture("arch"), "--tokens", "1", NULL};
    expect_clean_error(a5, "neither model.safetensors.index.json nor model.safetensors",
                       "folder without a model");
}

/* inspect names the layer a SHARED layer reads, and gives the bytes per token with and
 * without KV sharing: Gemma 4 E2B (config only) 6,144 B shared, 14,336 B without (the 4 full
 * layers among the 20 shared ones, 2 x 512 x 2 B each, become owners); the gemma4_e fixture
 * (engine report) 256 B, 512 without. */
KVX_TEST(cli_inspect_shared_layers)
{
    if (!have_binary())
        return;
    char dir[512];
    struct run_result r;
    snprintf(dir, sizeof dir, "%s/configs/gemma-4-e2b", kvx_test_fixture(""));
    const char *a1[] = {"inspect", dir, NULL};
    run_kvx(a1, &r);
    KVX_CHECK(r.status == 0 && strstr(r.out, "layer  15  shared     <- 13 (window)") &&
              strstr(r.out, "layer  19  shared     <- 14 (full)") &&
              strstr(r.out, "KV bytes per token: 6144\n") &&
              strstr(r.out, "without KV sharing: 14336 (sharing saves 57.1%)") &&
              !strstr(r.out, "heads   0"));
    snprintf(dir, sizeof dir, "%s/arch/gemma4_e", kvx_test_fixture(""));
    const char *a2[] = {"inspect", dir, NULL};
    run_kvx(a2, &r);
    KVX_CHECK(r.status == 0 && strstr(r.out, "\n3      shared  <- 2 ") &&
              strstr(r.out, "\n4      shared  <- 1 ") &&
              strstr(r.out, "without KV sharing: 512 (sharing saves 50.0%)"));
}

KVX_TEST(cli_rejects_bad_eviction_options)
{
    if (!have_binary())
        return;
    const char *a1[] = {"run", "-m", "/nonexistent.gguf", "--evict", "lru", NULL};
    expect_clean_error(a1, "unknown policy 'lru'", "unknown eviction policy");
    const char *a2[] = {"run", "-m", "/nonexistent.gguf", "--evict", "h2o", "--evict-budget", "0", NULL};
    expect_clean_error(a2, "--evict-budget", "zero budget");
    const char *a3[] = {"run", "-m", "/nonexistent.gguf", "--evict", "h2o", "--evict-budget", "1.5", NULL};
    expect_clean_error(a3, "outside (0, 1]", "ratio above 1");
    const char *a4[] = {"run", "-m", "/nonexistent.gguf", "--evict", "tova", NULL};
    expect_clean_error(a4, "needs --evict-budget", "no budget");
    const char *a5[] = {"run", "-m", "/nonexistent.gguf", "--evict-budget", "64", NULL};
    expect_clean_error(a5, "need --evict POLICY", "budget without a policy");
    const char *model = kvx_test_model_path();
    if (!model)
        return;
    const char *a6[] = {"run", "-m", model, "-c", "128", "--evict", "sinks", "--evict-budget",
                        "4096", "-p", "hi", NULL};
    expect_clean_error(a6, "outside 1..128", "budget above the context");
}
