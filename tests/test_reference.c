/* tests/test_reference.c: kvx against llama.cpp on the default model, from the fixtures that
 * tools/reference/gen_model_fixtures.py wrote with llama-cpp-python (f16 KV, 2 threads):
 *   ppl      — perplexity over 8 windows of 512 tokens within 0.5% (relative);
 *   teacher  — kvx's top-1 is in llama.cpp's top-5 at every one of 1,024 teacher-forced
 *              positions, and equals llama.cpp's top-1 at >= 93% of them (measured: 95-97%);
 *   greedy   — every divergence of the 32-token greedy continuations of 8 prompts sits at a
 *              near-tie of llama.cpp's own logits (top-2 margin < 0.5), and at least 1 of the
 *              8 stays identical (measured: 2-3).
 * Why not 99% and 7 of 8: this model re-quantizes every activation to 8 bits before each
 * matmul, so any last-bit difference (summation order, f16 rounding of Q in llama.cpp's flash
 * attention) flips some roundings and the flips compound over 30 layers.  llama.cpp does not
 * reach those numbers against itself: across its own KV configurations (f16 with and without
 * flash attention, f32) its top-1 agreement is 96.3-96.8% and 2-3 of the 8 greedy
 * continuations stay identical (tools/reference/agreement_floor.py prints the tables).  The
 * thresholds sit just below that floor, with room for other ISAs' summation orders.
 *
 * The _f32 fixtures take that rounding away on both sides: llama.cpp ran a copy of the model
 * with every tensor dequantized to float32 (tools/reference/gguf_f32.py; it then rounds no
 * activation), kvx runs the Q4_1 file with --weights f32 (kvx_model_cfg.weights_f32: the same
 * float32 weights, bit for bit).  There the targets hold as written:
 *   f32 teacher — top-1 equal at >= 99% of 1,024 positions (measured: 100%);
 *   f32 greedy  — at least 7 of the 8 continuations identical for 32 tokens (measured: 8). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_mini.h"
#include "kvx.h"
#include "test.h"

struct ref {
    struct kvx_model *m;
    struct kvx_engine *e;
    struct kvx_session *s;
    int32_t n_vocab;
};

static bool ref_open(struct ref *r, int64_t n_ctx, bool weights_f32)
{
    memset(r, 0, sizeof *r);
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("default model not present (make model)");
        return false;
    }
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    mc.weights_f32 = weights_f32;
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = n_ctx;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &r->m, &err) != KVX_OK ||
        kvx_engine_create(r->m, &ec, &r->e, &err) != KVX_OK ||
        kvx_session_create(r->e, &r->s, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "setup: %s", err.msg);
        return false;
    }
    struct kvx_model_info info;
    kvx_model_get_info(r->m, &info);
    r->n_vocab = info.n_vocab;
    return true;
}

static void ref_close(struct ref *r)
{
    kvx_session_destroy(r->s);
    kvx_engine_destroy(r->e);
    kvx_model_close(r->m);
}

static struct kvx_json *load_fixture(const char *name)
{
    char err[256];
    struct kvx_json *j = kvx_json_parse_file(kvx_test_fixture(name), err, sizeof err);
    if (!j)
        kvx_test_fail(__FILE__, __LINE__, "fixture %s: %s", name, err);
    return j;
}

/* Copy a JSON array of integers. */
static int32_t *int_array(const struct kvx_json *a, int64_t *n)
{
    *n = a ? (int64_t)a->len : 0;
    int32_t *out = malloc((size_t)(*n + 1) * sizeof *out);
    for (int64_t i = 0; i < *n; i++)
        out[i] = (int32_t)a->items[i].num;
    return out;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static double nll_of(const float *x, int32_t n, int32_t target)
{
    float mx = x[argmax(x, n)];
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(x[i] - mx));
    return log(sum) - (double)(x[target] - mx);
}

/* Teacher-forced top-1 over the fixture's first 1,024 positions: the share equal to llama.cpp's
 * top-1 must reach min_rate; with all_in_top5, kvx's top-1 must be in llama.cpp's top-5
 * everywhere. */
static void check_teacher(const char *fixture, bool weights_f32, double min_rate, bool all_in_top5)
{
    struct kvx_json *j = load_fixture(fixture);
    struct ref r;
    if (!j || !ref_open(&r, 1024, weights_f32)) {
        kvx_json_free(j);
        return;
    }
    int64_t n_all;
    int32_t *toks = int_array(kvx_json_get(j, "tokens"), &n_all);
    const struct kvx_json *top5 = kvx_json_get(j, "top5_ids");
    const int64_t n = n_all < 1024 ? n_all : 1024;
    float *logits = malloc((size_t)n * (size_t)r.n_vocab * sizeof *logits);
    struct kvx_err err = {0};
    KVX_CHECK(kvx_session_feed(r.s, toks, n, true, logits, &err) == KVX_OK);
    int64_t agree = 0, in_top5 = 0;
    double nll_kvx = 0;
    for (int64_t t = 0; t < n; t++) {
        const float *row = logits + t * r.n_vocab;
        const int32_t best = argmax(row, r.n_vocab);
        const struct kvx_json *ref5 = kvx_json_at(top5, (size_t)t);
        agree += ref5 && best == (int32_t)ref5->items[0].num;
        for (size_t k = 0; ref5 && k < ref5->len; k++)
            in_top5 += best == (int32_t)ref5->items[k].num;
        if (t + 1 < n)
            nll_kvx += nll_of(row, r.n_vocab, toks[t + 1]);
    }
    const double rate = (double)agree / (double)n;
    fprintf(stderr, "  %s: top-1 agrees at %lld/%lld positions (%.2f%%), kvx top-1 in "
            "llama.cpp's top-5 at %lld; mean NLL kvx %.4f, llama.cpp %.4f\n", fixture,
            (long long)agree, (long long)n, 100.0 * rate, (long long)in_top5,
            nll_kvx / (double)(n - 1), kvx_json_num(j, "mean_nll", NAN));
    KVX_CHECK(!all_in_top5 || in_top5 == n);
    KVX_CHECK(rate >= min_rate);
    free(logits);
    free(toks);
    ref_close(&r);
    kvx_json_free(j);
}

KVX_TEST(reference_teacher_forced_top1)
{
    check_teacher("smollm2_teacher.json", false, 0.93, true);
}

KVX_TEST(reference_f32_teacher_forced_top1)
{
    check_teacher("smollm2_f32_teacher.json", true, 0.99, true);
}

KVX_TEST(reference_perplexity)
{
    struct kvx_json *j = load_fixture("smollm2_ppl.json");
    const int64_t ctx = j ? (int64_t)kvx_json_num(j, "n_ctx", 512) : 512;
    struct ref r;
    if (!j || !ref_open(&r, ctx, false)) {
        kvx_json_free(j);
        return;
    }
    int64_t n_tok;
    int32_t *toks = int_array(kvx_json_get(j, "tokens"), &n_tok);
    const int64_t n_win = (int64_t)kvx_json_num(j, "n_windows", 0);
    const int64_t first = (int64_t)kvx_json_num(j, "first_scored", (double)ctx / 2);
    float *logits = malloc((size_t)ctx * (size_t)r.n_vocab * sizeof *logits);
    struct kvx_err err = {0};
    double total = 0;
    int64_t scored = 0;
    for (int64_t w = 0; w < n_win && (w + 1) * ctx <= n_tok; w++) {
        kvx_session_truncate(r.s, 0, NULL);
        KVX_CHECK(kvx_session_feed(r.s, toks + w * ctx, ctx, true, logits, &err) == KVX_OK);
        for (int64_t i = first; i < ctx - 1; i++)
            total += nll_of(logits + i * r.n_vocab, r.n_vocab, toks[w * ctx + i + 1]);
        scored += ctx - 1 - first;
    }
    const double ppl = exp(total / (double)scored), ref_ppl = kvx_json_num(j, "ppl", 0);
    fprintf(stderr, "  perplexity: kvx %.6f, llama.cpp %.6f (%+.3f%%) over %lld tokens\n", ppl,
            ref_ppl, 100.0 * (ppl / ref_ppl - 1.0), (long long)scored);
    KVX_CHECK_EQ_INT(scored, (int64_t)kvx_json_num(j, "n_scored", -1));
    KVX_CHECK(fabs(ppl / ref_ppl - 1.0) < 0.005);
    free(logits);
    free(toks);
    ref_close(&r);
    kvx_json_free(j);
}

/* The fixture's 8 greedy continuations of 32 tokens: at least min_identical must be identical,
 * and each divergence must sit at a near-tie of llama.cpp's own logits. */
static void check_greedy(const char *fixture, bool weights_f32, int min_identical)
{
    struct kvx_json *j = load_fixture(fixture);
    struct ref r;
    if (!j || !ref_open(&r, 2048, weights_f32)) {
        kvx_json_free(j);
        return;
    }
    const struct kvx_json *prompts = kvx_json_get(j, "prompts");
    float *logits = malloc((size_t)r.n_vocab * sizeof *logits);
    int identical = 0, n_prompts = prompts ? (int)prompts->len : 0;
    for (int p = 0; p < n_prompts; p++) {
        const struct kvx_json *pr = &prompts->items[p];
        int64_t n_prompt, n_gen;
        int32_t *ids = int_array(kvx_json_get(pr, "prompt_ids"), &n_prompt);
        int32_t *want = int_array(kvx_json_get(pr, "greedy_ids"), &n_gen);
        const struct kvx_json *margin = kvx_json_get(pr, "top2_margin");
        struct kvx_err err = {0};
        kvx_session_truncate(r.s, 0, NULL);
        KVX_CHECK(kvx_session_feed(r.s, ids, n_prompt, false, logits, &err) == KVX_OK);
        int64_t diverged = -1;
        for (int64_t i = 0; i < n_gen; i++) {
            int32_t tok = argmax(logits, r.n_vocab);
            if (tok != want[i]) {
                diverged = i;
                break;
            }
            KVX_CHECK(kvx_session_feed(r.s, &tok, 1, false, logits, &err) == KVX_OK);
        }
        if (diverged < 0) {
            identical++;
        } else {
            const double mg = kvx_json_at(margin, (size_t)diverged)->num;
            fprintf(stderr, "  prompt %d (%s): diverges at step %lld, where llama.cpp's top-2 "
                    "margin is %.4f\n", p, kvx_json_str(pr, "kind", "?"), (long long)diverged, mg);
            /* a divergence must sit at a near-tie of llama.cpp's own logits */
            KVX_CHECK(mg < 0.5);
        }
        free(ids);
        free(want);
    }
    fprintf(stderr, "  %s: %d of %d continuations identical for 32 tokens\n", fixture,
            identical, n_prompts);
    KVX_CHECK(n_prompts == 8);
    KVX_CHECK(identical >= min_identical);
    free(logits);
    ref_close(&r);
    kvx_json_free(j);
}

KVX_TEST(reference_greedy_continuations)
{
    check_greedy("smollm2_greedy.json", false, 1);
}

KVX_TEST(reference_f32_greedy_continuations)
{
    check_greedy("smollm2_f32_greedy.json", true, 7);
}
