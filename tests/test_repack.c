/* tests/test_repack.c: ops/repack, the x16 weight layout.
 *
 *   - pack then unpack gives the file's bytes back; rows past the last whole group are never
 *     touched; every row read through kvx_x16_row_to_float equals the row kernel's
 *     dequantization of the original row;
 *   - the scalar x16 product equals the scalar vec_dot of the original rows bit for bit, and
 *     the AVX-512 VNNI and AVX2 kernels (those the CPU has) are within 1e-5 * sum |w*a| of it, for
 *     1..4 tokens, 1..3 groups, rows of 1, 2, 18 and 48 blocks, int8-extreme quants, at odd
 *     offsets and strides, writing nothing else;
 *   - kvx_matmul_part on a job mixing a repacked matrix whose rows are not a multiple of 16
 *     and a row-layout one equals the same job on the original rows (exactly on the scalar
 *     ISA; AVX2 and AVX-512 within 1e-4 relative), for 1, 3 and 9 tokens;
 *   - on the default model, an engine on the scalar ISA gives bit-equal logits with and
 *     without kvx_model_cfg.weights_rows, and the best ISA stays close;
 *   - repack_bench (KVX_BENCH=1) streams the default model's shapes through both layouts,
 *     from DRAM and from L2. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "model/model.h"
#include "kvx.h"
#include "ops/matmul.h"
#include "ops/quant_internal.h"
#include "ops/repack.h"
#include "test.h"

static const enum kvx_dtype x16_types[] = {KVX_DTYPE_Q4_0, KVX_DTYPE_Q4_1, KVX_DTYPE_Q8_0};

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(mix(s) >> 40) / (double)(1ull << 24));
}

static size_t rbytes(enum kvx_dtype t, int64_t n)
{
    size_t b = 0;
    kvx_dtype_row_bytes(t, n, &b);
    return b;
}

/* n_out rows of random quants and finite fp16 scales (and q4_1 mins); `extreme`: every quant
 * byte 0xff (q4: 15, q8_0: -1) or 0x80 (q8_0: -128), the int32 worst cases. */
static void random_matrix(uint64_t *s, enum kvx_dtype t, int64_t n_in, int64_t n_out,
                          uint8_t *w, bool extreme)
{
    const size_t bb = kvx_dtype_block_bytes(t), bytes = rbytes(t, n_in) * (size_t)n_out;
    for (size_t i = 0; i < bytes; i++)
        w[i] = extreme ? (t == KVX_DTYPE_Q8_0 && (i / bb) % 2 ? 0x80 : 0xff) : (uint8_t)mix(s);
    for (size_t b = 0; b < bytes / bb; b++) {
        kvx_quant_store_f16(w + b * bb, uniform(s, -0.05f, 0.05f));
        if (t == KVX_DTYPE_Q4_1)
            kvx_quant_store_f16(w + b * bb + 2, uniform(s, -0.05f, 0.05f));
    }
}

/* nt activation rows of n_in in t's vec-dot type, a_stride bytes apart; `extreme`: all 127. */
static void random_acts(uint64_t *s, enum kvx_dtype t, int64_t n_in, int nt, uint8_t *a,
                        size_t a_stride, bool extreme)
{
    const enum kvx_dtype at = kvx_quant_vec_dot_type(t);
    float *x = malloc((size_t)n_in * sizeof *x);
    for (int c = 0; c < nt; c++) {
        for (int64_t i = 0; i < n_in; i++)
            x[i] = extreme ? 1.0f : uniform(s, -1.5f, 1.5f);
        kvx_quant_kernels(at, KVX_ISA_SCALAR)->from_float(x, a + (size_t)c * a_stride, n_in);
    }
    free(x);
}

/* sum_i |w_i * a_i| of the dequantized rows: the scale of the tolerance. */
static double abs_dot(enum kvx_dtype t, const uint8_t *w, const uint8_t *a, int64_t n)
{
    float *wf = malloc((size_t)n * sizeof *wf), *af = malloc((size_t)n * sizeof *af);
    kvx_quant_kernels(t, KVX_ISA_SCALAR)->to_float(w, wf, n);
    kvx_quant_kernels(kvx_quant_vec_dot_type(t), KVX_ISA_SCALAR)->to_float(a, af, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += fabs((double)wf[i] * af[i]);
    free(wf), free(af);
    return s;
}

KVX_TEST(repack_round_trip)
{
    uint64_t s = 11;
    const int64_t ins[] = {32, 96, 576};
    const int64_t outs[] = {16, 35, 48};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t i = 0; i < 3; i++)
            for (size_t o = 0; o < 3; o++) {
                const enum kvx_dtype t = x16_types[ti];
                const int64_t n_in = ins[i], n_out = outs[o];
                const size_t rb = rbytes(t, n_in), bytes = rb * (size_t)n_out;
                KVX_CHECK(kvx_x16_supported(t, n_in));
                uint8_t *w = malloc(bytes), *orig = malloc(bytes);
                float *got = malloc((size_t)n_in * sizeof *got);
                float *want = malloc((size_t)n_in * sizeof *want);
                random_matrix(&s, t, n_in, n_out, w, false);
                memcpy(orig, w, bytes);
                KVX_CHECK(kvx_x16_pack(t, n_in, n_out, w));
                const size_t packed = (size_t)(n_out / KVX_X16 * KVX_X16) * rb;
                KVX_CHECK(memcmp(w + packed, orig + packed, bytes - packed) == 0);
                KVX_CHECK(packed == 0 || memcmp(w, orig, packed) != 0);
                for (int64_t r = 0; r < n_out; r++) {
                    kvx_x16_row_to_float(t, n_in, n_out, w, r, got);
                    kvx_quant_kernels(t, KVX_ISA_SCALAR)->to_float(orig + (size_t)r * rb, want,
                                                                   n_in);
                    if (memcmp(got, want, (size_t)n_in * sizeof *got) != 0)
                        kvx_test_fail(__FILE__, __LINE__, "%s %lldx%lld: row %lld differs",
                                      kvx_dtype_name(t), (long long)n_out, (long long)n_in,
                                      (long long)r);
                }
                KVX_CHECK(kvx_x16_unpack(t, n_in, n_out, w));
                KVX_CHECK(memcmp(w, orig, bytes) == 0);
                free(w), free(orig), free(got), free(want);
            }
    KVX_CHECK(!kvx_x16_supported(KVX_DTYPE_Q4_K, 256));
    KVX_CHECK(!kvx_x16_supported(KVX_DTYPE_Q8_0, 48));
    KVX_CHECK(!kvx_x16_supported(KVX_DTYPE_Q8_0, KVX_X16_MAX_IN + 32));
}

/* One kernel case: ng groups of n_in, nt tokens a_stride apart at byte offset oa, output with
 * ldy = 16 * ng + 5 whose other entries must stay untouched. */
static void kernel_case(kvx_x16_matmul_fn fn, bool exact, enum kvx_dtype t, int64_t n_in,
                        int ng, int nt, int oa, bool extreme, uint64_t *s)
{
    const int64_t n_out = (int64_t)ng * KVX_X16, ldy = n_out + 5;
    const size_t rb = rbytes(t, n_in), ab = rbytes(kvx_quant_vec_dot_type(t), n_in);
    const size_t a_stride = ab + 7;
    uint8_t *w = malloc(rb * (size_t)n_out), *orig = malloc(rb * (size_t)n_out);
    uint8_t *abuf = malloc(a_stride * (size_t)nt + (size_t)oa);
    uint8_t *a = abuf + oa;
    float *y = malloc((size_t)(ldy * nt) * sizeof *y);
    random_matrix(s, t, n_in, n_out, w, extreme);
    random_acts(s, t, n_in, nt, a, a_stride, extreme);
    memcpy(orig, w, rb * (size_t)n_out);
    kvx_x16_pack(t, n_in, n_out, w);
    for (int64_t i = 0; i < ldy * nt; i++)
        y[i] = -12345.0f;
    fn(t, n_in, w, ng, nt, a, a_stride, y, ldy);
    for (int c = 0; c < nt; c++) {
        for (int64_t r = 0; r < n_out; r++) {
            float want;
            const uint8_t *ac = a + (size_t)c * a_stride;
            kvx_quant_kernels(t, KVX_ISA_SCALAR)->vec_dot(n_in, &want, orig + (size_t)r * rb, ac);
            const double tol = exact ? 0 : 1e-5 * abs_dot(t, orig + (size_t)r * rb, ac, n_in);
            const float got = y[c * ldy + r];
            if (!(fabs((double)got - want) <= tol))
                kvx_test_fail(__FILE__, __LINE__, "%s n_in %lld groups %d tokens %d%s: row %lld "
                              "token %d: %.9g vs %.9g (tol %.3g)", kvx_dtype_name(t),
                              (long long)n_in, ng, nt, extreme ? " extreme" : "", (long long)r,
                              c, (double)got, (double)want, tol);
        }
        for (int64_t r = n_out; r < ldy; r++)
            KVX_CHECK(y[c * ldy + r] == -12345.0f);
    }
    free(w), free(orig), free(abuf), free(y);
}

KVX_TEST(repack_kernels_match_row_kernel)
{
    uint64_t s = 12;
    const int64_t blocks[] = {1, 2, 18, 48};
    const bool vnni = kvx_x16_matmul(KVX_ISA_AVX512) == kvx_x16_matmul_avx512vnni;
    const bool avx2 = kvx_cpu_has_isa(KVX_ISA_AVX2);
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t b = 0; b < 4; b++)
            for (int ng = 1; ng <= 3; ng++)
                for (int nt = 1; nt <= 4; nt++)
                    for (int ex = 0; ex < 2; ex++) {
                        const int64_t n_in = blocks[b] * KVX_QK;
                        kernel_case(kvx_x16_matmul_scalar, true, x16_types[ti], n_in, ng, nt,
                                    ex, ex, &s);
                        if (vnni)
                            kernel_case(kvx_x16_matmul_avx512vnni, false, x16_types[ti], n_in,
                                        ng, nt, 3 * ex, ex, &s);
                        if (avx2)
                            kernel_case(kvx_x16_matmul_avx2, false, x16_types[ti], n_in, ng, nt,
                                        1 + ex, ex, &s);
                    }
    KVX_CHECK(kvx_x16_matmul(KVX_ISA_SCALAR) == kvx_x16_matmul_scalar);
    if (avx2)
        KVX_CHECK(kvx_x16_matmul(KVX_ISA_AVX2) == kvx_x16_matmul_avx2);
    if (!avx2)
        kvx_test_skip("no AVX2: the scalar x16 kernel only");
}

/* y = W x for a job of (repacked A: n_out 35, row-layout B: n_out 20) on isa, n_tok tokens,
 * against the same job on A's original rows. */
static void job_case(enum kvx_dtype t, enum kvx_isa isa, int64_t n_tok, uint64_t *s)
{
    const int64_t n_in = 96, na = 35, nb = 20;
    const size_t rb = rbytes(t, n_in), ab = rbytes(kvx_quant_vec_dot_type(t), n_in);
    uint8_t *wa = malloc(rb * na), *wa16 = malloc(rb * na), *wb = malloc(rb * nb);
    uint8_t *x = malloc(ab * (size_t)n_tok);
    float *y[4];
    for (int i = 0; i < 4; i++)
        y[i] = calloc((size_t)((na + nb) * n_tok), sizeof(float));
    random_matrix(s, t, n_in, na, wa, false);
    random_matrix(s, t, n_in, nb, wb, false);
    random_acts(s, t, n_in, (int)n_tok, x, ab, false);
    memcpy(wa16, wa, rb * na);
    kvx_x16_pack(t, n_in, na, wa16);
    const struct kvx_mat A = {.type = t, .n_in = n_in, .n_out = na, .row_bytes = rb, .data = wa};
    const struct kvx_mat A16 = {.type = t, .n_in = n_in, .n_out = na, .row_bytes = rb,
                                .data = wa16, .x16 = true};
    const struct kvx_mat B = {.type = t, .n_in = n_in, .n_out = nb, .row_bytes = rb, .data = wb};
    for (int v = 0; v < 2; v++) {
        struct kvx_matmul_job job;
        memset(&job, 0, sizeof job);
        atomic_init(&job.next, 0);
        job.n_mats = 2;
        job.w[0] = v ? &A16 : &A;
        job.w[1] = &B;
        job.y[0] = y[2 * v];
        job.y[1] = y[2 * v + 1];
        job.ldy[0] = na;
        job.ldy[1] = nb;
        job.xq[0] = job.xq[1] = x;
        job.xq_stride[0] = job.xq_stride[1] = ab;
        job.n_tok = n_tok;
        job.isa = isa;
        /* two "threads" in turn: the chunks split between them as a pool would */
        kvx_matmul_part(&job, 0, 2);
        kvx_matmul_part(&job, 1, 2);
    }
    for (int64_t i = 0; i < na * n_tok; i++) {
        const double tol = isa == KVX_ISA_SCALAR ? 0 : 1e-4 * (fabs(y[0][i]) + 1);
        if (!(fabs((double)y[0][i] - y[2][i]) <= tol))
            kvx_test_fail(__FILE__, __LINE__, "%s %s n_tok %lld: y[%lld] %.9g vs rows %.9g",
                          kvx_dtype_name(t), kvx_isa_name(isa), (long long)n_tok, (long long)i,
                          (double)y[2][i], (double)y[0][i]);
    }
    KVX_CHECK(memcmp(y[1], y[3], (size_t)(nb * n_tok) * sizeof(float)) == 0);
    free(wa), free(wa16), free(wb), free(x);
    for (int i = 0; i < 4; i++)
        free(y[i]);
}

KVX_TEST(repack_matmul_job_matches_rows)
{
    uint64_t s = 13;
    const int64_t toks[] = {1, 3, 9};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t k = 0; k < 3; k++) {
            job_case(x16_types[ti], KVX_ISA_SCALAR, toks[k], &s);
            if (kvx_cpu_has_isa(KVX_ISA_AVX2))
                job_case(x16_types[ti], KVX_ISA_AVX2, toks[k], &s);
            if (kvx_cpu_best_isa() > KVX_ISA_AVX2)
                job_case(x16_types[ti], kvx_cpu_best_isa(), toks[k], &s);
        }
}

/* Logits of 8 tokens from a fresh model + engine on `isa`, rows or repacked. */
static bool model_logits(bool rows, int isa, float *out, bool *packed)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = kvx_test_model_path();
    mc.weights_rows = rows;
    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 64;
    ec.n_threads = 2;
    ec.kv_budget_bytes = 16u << 20;
    ec.isa = isa;
    struct kvx_model *m = NULL;
    struct kvx_engine *e = NULL;
    struct kvx_session *se = NULL;
    struct kvx_err err = {0};
    const int32_t toks[8] = {1, 504, 3575, 282, 4649, 314, 1, 28};
    bool ok = kvx_model_open(&mc, &m, &err) == KVX_OK &&
              kvx_engine_create(m, &ec, &e, &err) == KVX_OK &&
              kvx_session_create(e, &se, &err) == KVX_OK &&
              kvx_session_feed(se, toks, 8, false, out, &err) == KVX_OK;
    if (!ok)
        kvx_test_fail(__FILE__, __LINE__, "%s", err.msg);
    if (m)
        *packed = m->layers[0].wq.x16 && m->output.x16 && m->tok_embd.x16;
    kvx_session_destroy(se);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return ok;
}

KVX_TEST(repack_engine_logits)
{
    if (!kvx_test_model_path()) {
        kvx_test_skip("default model not present (make model)");
        return;
    }
    const size_t V = 49152;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    float *c = malloc(V * sizeof *c), *d = malloc(V * sizeof *d);
    bool pa = false, pb = true, pc = false, pd = true;
    if (model_logits(false, KVX_ISA_SCALAR, a, &pa) && model_logits(true, KVX_ISA_SCALAR, b, &pb)) {
        KVX_CHECK(memcmp(a, b, V * sizeof *a) == 0);
        KVX_CHECK(!pb);
        KVX_CHECK(pa == kvx_x16_fast());
    }
    if (model_logits(false, -1, c, &pc) && model_logits(true, -1, d, &pd)) {
        size_t ic = 0, id = 0;
        double mean = 0;
        for (size_t i = 0; i < V; i++) {
            ic = c[i] > c[ic] ? i : ic;
            id = d[i] > d[id] ? i : id;
            mean += fabs((double)c[i] - d[i]) / (double)V;
        }
        KVX_CHECK_EQ_INT((long long)ic, (long long)id);
        KVX_CHECK(!pd && pc == kvx_x16_fast());
        KVX_CHECK(mean < 0.3);
        fprintf(stderr, "  best ISA: mean |logit(x16) - logit(rows)| %.4f\n", mean);
    }
    free(a), free(b), free(c), free(d);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One thread streams `mb` MB of matrices of the default model's shapes through the row kernel
 * and the x16 kernel of `isa`, best of 5 interleaved passes (100 MB: from DRAM; 1 MB: from
 * L2, the kernels' own speed). */
static void bench_shape(enum kvx_dtype t, int64_t n_in, enum kvx_isa isa, double mb_want)
{
    const size_t rb = rbytes(t, n_in), ab = rbytes(kvx_quant_vec_dot_type(t), n_in);
    const int64_t rows = (int64_t)(mb_want * 1e6 / (double)rb) / KVX_X16 * KVX_X16;
    uint8_t *w = malloc(rb * (size_t)rows), *w16 = malloc(rb * (size_t)rows), *a = malloc(ab);
    float *y = malloc((size_t)rows * sizeof *y);
    uint64_t s = 14;
    random_matrix(&s, t, n_in, rows, w, false);
    random_acts(&s, t, n_in, 1, a, ab, false);
    memcpy(w16, w, rb * (size_t)rows);
    kvx_x16_pack(t, n_in, rows, w16);
    const struct kvx_quant_kernels *k = kvx_quant_kernels(t, isa);
    const kvx_x16_matmul_fn fn = kvx_x16_matmul(isa);
    double best_rows = 1e30, best_x16 = 1e30;
    for (int pass = 0; pass < (mb_want < 10 ? 50 : 5); pass++) {
        double t0 = now_s();
        for (int64_t r = 0; r < rows; r++)
            k->vec_dot(n_in, &y[r], w + (size_t)r * rb, a);
        double t1 = now_s();
        fn(t, n_in, w16, rows / KVX_X16, 1, a, ab, y, rows);
        double t2 = now_s();
        best_rows = fmin(best_rows, t1 - t0);
        best_x16 = fmin(best_x16, t2 - t1);
    }
    const double mb = (double)rb * (double)rows;
    printf("  %-6s %s, rows of %lld, %.1f MB, one token, one thread: rows %.1f GB/s, x16 "
           "%.1f GB/s (%.2fx)\n", kvx_isa_name(isa), kvx_dtype_name(t), (long long)n_in,
           mb / 1e6, mb / best_rows / 1e9, mb / best_x16 / 1e9, best_rows / best_x16);
    free(w), free(w16), free(a), free(y);
}

KVX_TEST(repack_bench)
{
    const char *e = getenv("KVX_BENCH");
    if (!e || strcmp(e, "1") != 0) {
        kvx_test_skip("set KVX_BENCH=1");
        return;
    }
    for (int mb = 0; mb < 2; mb++)
        for (int isa = KVX_ISA_AVX2; isa <= (int)kvx_cpu_best_isa(); isa++) {
            bench_shape(KVX_DTYPE_Q4_1, 576, (enum kvx_isa)isa, mb ? 1 : 100);
            bench_shape(KVX_DTYPE_Q4_1, 1536, (enum kvx_isa)isa, mb ? 1 : 100);
            bench_shape(KVX_DTYPE_Q8_0, 576, (enum kvx_isa)isa, mb ? 1 : 100);
        }
}
