/* tests/test_attn: attention over pool pages (kvx_attn_partial + kvx_attn_merge) against a
 * double-precision softmax reference on the same decoded K/V, the vectorized exp, scratch
 * bounds, window and shared layers; and a benchmark (KVX_BENCH=1) of decode attention for
 * the default model's shape. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn/attn.h"
#include "attn/internal.h"
#include "kv/pool.h"
#include "test.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t rng_int(uint64_t *s, int64_t n) { return n > 0 ? (int64_t)(rng_next(s) % (uint64_t)n) : 0; }

static float rng_float(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 40) / (double)(1ull << 23) - 1.0);
}

static struct kvx_kv_pool *pool_for(const struct kvx_kv_layout *l, size_t budget, enum kvx_isa isa)
{
    struct kvx_kv_pool_cfg cfg = {.layout = l, .budget_bytes = budget, .isa = isa};
    struct kvx_kv_pool *p = NULL;
    struct kvx_err err = {0};
    if (kvx_kv_pool_create(&cfg, &p, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "pool create: %s", err.msg);
    return p;
}

/* Write random K/V (values in [-1, 1)) for positions [from, to) of every owning layer. */
static void write_random(struct kvx_kv_seq *s, const struct kvx_kv_layout *l, int64_t from,
                         int64_t to, uint64_t *rng)
{
    float k[1024], v[1024];
    for (int32_t i = 0; i < l->n_layer; i++) {
        const struct kvx_layer_cache *c = &l->layers[i];
        if (!kvx_kv_layer_owns(c))
            continue;
        for (int64_t pos = from; pos < to; pos++) {
            for (int32_t j = 0; j < c->n_kv_heads * c->k_dim; j++)
                k[j] = rng_float(rng);
            for (int32_t j = 0; j < c->n_kv_heads * c->v_dim; j++)
                v[j] = rng_float(rng);
            kvx_kv_seq_write(s, i, pos, k, v);
        }
    }
}

/* out[i] = softmax(scale q_i . K[k0..k1)) V, in double from the decoded cache; also m, l. */
static void reference(const struct kvx_kv_view *v, int32_t head, int64_t k0, int64_t k1,
                      const float *q, int32_t n_q, float scale, double *out, double *m, double *l)
{
    int64_t n = k1 - k0;
    double *s = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    float kr[256], vr[256];
    for (int32_t i = 0; i < n_q; i++) {
        double mx = -INFINITY;
        for (int64_t t = k0; t < k1; t++) {
            kvx_kv_view_get_k(v, head, t, kr);
            double dot = 0;
            for (int32_t c = 0; c < v->k_dim; c++)
                dot += (double)q[i * v->k_dim + c] * kr[c];
            s[t - k0] = scale * dot;
            mx = s[t - k0] > mx ? s[t - k0] : mx;
        }
        double sum = 0;
        for (int32_t d = 0; d < v->v_dim; d++)
            out[i * v->v_dim + d] = 0;
        for (int64_t t = k0; t < k1; t++) {
            double p = exp(s[t - k0] - mx);
            sum += p;
            kvx_kv_view_get_v(v, head, t, vr);
            for (int32_t d = 0; d < v->v_dim; d++)
                out[i * v->v_dim + d] += p * vr[d];
        }
        for (int32_t d = 0; d < v->v_dim && sum > 0; d++)
            out[i * v->v_dim + d] /= sum;
        m[i] = mx;
        l[i] = sum;
    }
    free(s);
}

#define CANARY 8
#define CANARY_VALUE -7.25e30f

/* [k0, k1) split at n_cuts random points, each part through kvx_attn_partial with exactly
 * kvx_attn_scratch_floats of scratch (canaries after it), then merged.  Returns mismatches. */
static int attn_case(const struct kvx_kv_view *v, int32_t head, int64_t k0, int64_t k1,
                     const float *q, int32_t n_q, float scale, int n_cuts, uint64_t *rng)
{
    int64_t cuts[12] = {k0};
    int n_parts = n_cuts + 1;
    for (int c = 1; c <= n_cuts; c++)
        cuts[c] = k0 + rng_int(rng, k1 - k0 + 1);
    cuts[n_parts] = k1;
    for (int a = 1; a < n_parts; a++) /* sort the inner cuts */
        for (int b = a + 1; b < n_parts; b++)
            if (cuts[b] < cuts[a]) {
                int64_t t = cuts[a];
                cuts[a] = cuts[b];
                cuts[b] = t;
            }
    float *m = malloc(sizeof(float) * (size_t)(n_parts * n_q)), *l = malloc(sizeof(float) * (size_t)(n_parts * n_q));
    float *acc = malloc(sizeof(float) * (size_t)(n_parts * n_q * v->v_dim));
    float *out = malloc(sizeof(float) * (size_t)(n_q * v->v_dim));
    int bad = 0;
    for (int r = 0; r < n_parts; r++) {
        int64_t nf = kvx_attn_scratch_floats(n_q, cuts[r + 1] - cuts[r], v->k_dim);
        float *scratch = malloc(sizeof(float) * (size_t)(nf + CANARY));
        for (int c = 0; c < CANARY; c++)
            scratch[nf + c] = CANARY_VALUE;
        kvx_attn_partial(v, head, cuts[r], cuts[r + 1], q, n_q, scale, scratch, m + r * n_q,
                         l + r * n_q, acc + r * n_q * v->v_dim);
        for (int c = 0; c < CANARY; c++)
            bad += scratch[nf + c] != CANARY_VALUE;
        free(scratch);
    }
    kvx_attn_merge(n_parts, n_q, v->v_dim, m, l, acc, out);
    double *ref = malloc(sizeof(double) * (size_t)(n_q * v->v_dim)), rm[16], rl[16];
    reference(v, head, k0, k1, q, n_q, scale, ref, rm, rl);
    for (int32_t i = 0; i < n_q * v->v_dim; i++)
        bad += !(fabs(out[i] - ref[i]) <= 1e-5); /* |v| <= 1, so |out| <= 1 */
    if (n_parts == 1 && k1 > k0)
        for (int32_t i = 0; i < n_q; i++) /* m and l of one part are the reference's */
            bad += !(fabs(m[i] - rm[i]) <= 1e-6 * (1 + fabs(rm[i])) &&
                     fabs(l[i] - rl[i]) <= 1e-5 * rl[i]);
    free(m);
    free(l);
    free(acc);
    free(out);
    free(ref);
    return bad;
}

static void attn_codec_isa(enum kvx_kv_codec kc, enum kvx_kv_codec vc, enum kvx_isa isa)
{
    struct kvx_kv_layout lay;
    KVX_CHECK(kvx_kv_layout_init(&lay, 2, 32, NULL) == KVX_OK);
    lay.layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 2, .k_dim = 24,
                                             .v_dim = 40, .k_codec = kc, .v_codec = vc};
    lay.layers[1] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED, .shared_from = 0};
    struct kvx_kv_pool *p = pool_for(&lay, (size_t)1 << 20, isa);
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    KVX_CHECK(kvx_kv_seq_reserve(s, 300, NULL) == KVX_OK);
    uint64_t rng = 2024 + (uint64_t)isa * 7 + (uint64_t)kc * 3 + (uint64_t)vc;
    write_random(s, &lay, 0, 300, &rng);
    kvx_kv_seq_set_len(s, 300);
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, 1, &v); /* the shared layer reads layer 0 */
    KVX_CHECK(v.n_pages == 10 && v.k_dim == 24 && v.v_dim == 40 && v.isa == isa);
    float q[5 * 24];
    for (int i = 0; i < 5 * 24; i++)
        q[i] = 3.0f * rng_float(&rng); /* peaked enough that the softmax is not flat */
    const int64_t ranges[][2] = {{0, 300}, {5, 300}, {17, 18}, {31, 33}, {33, 290}, {100, 101},
                                 {0, 16}, {64, 96}, {15, 17}, {299, 300}};
    int bad = 0;
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++)
        for (int cuts = 0; cuts < 5; cuts += 2)
            for (int32_t n_q = 1; n_q <= 5; n_q += 2)
                bad += attn_case(&v, (int32_t)(r % 2), ranges[r][0], ranges[r][1], q, n_q, 0.2f,
                                 cuts, &rng);
    for (int rep = 0; rep < 20; rep++) {
        int64_t k0 = rng_int(&rng, 300), k1 = k0 + 1 + rng_int(&rng, 300 - k0);
        bad += attn_case(&v, (int32_t)(rep % 2), k0, k1, q, 3, 0.2f, (int)rng_int(&rng, 6), &rng);
    }
    if (bad)
        kvx_test_fail(__FILE__, __LINE__, "k %s v %s %s: %d mismatches", kvx_kv_codec_name(kc),
                      kvx_kv_codec_name(vc), kvx_isa_name(isa), bad);
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&lay);
}

KVX_TEST(attn_partial_merge_matches_reference)
{
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        attn_codec_isa(KVX_KV_CODEC_F32, KVX_KV_CODEC_F32, (enum kvx_isa)isa);
        attn_codec_isa(KVX_KV_CODEC_F16, KVX_KV_CODEC_F16, (enum kvx_isa)isa);
        attn_codec_isa(KVX_KV_CODEC_F16, KVX_KV_CODEC_F32, (enum kvx_isa)isa);
    }
}

KVX_TEST(attn_empty_range_and_merge)
{
    struct kvx_kv_view v = {.page_tokens = 16, .v_dim = 3};
    float m[2], l[2], acc[6] = {1, 2, 3, 4, 5, 6}, out[6];
    kvx_attn_partial(&v, 0, 10, 10, NULL, 2, 1.0f, NULL, m, l, acc);
    KVX_CHECK(m[0] == -INFINITY && m[1] == -INFINITY && l[0] == 0 && l[1] == 0);
    for (int i = 0; i < 6; i++)
        KVX_CHECK(acc[i] == 0);
    KVX_CHECK_EQ_INT(kvx_attn_scratch_floats(3, 0, 64), 0);
    /* scores, rotated queries, one decoded key (latent views) */
    KVX_CHECK_EQ_INT(kvx_attn_scratch_floats(3, 1, 64), 3 * (16 + 64) + 64);
    KVX_CHECK_EQ_INT(kvx_attn_scratch_floats(3, 2, 64), 3 * (32 + 64) + 64);
    KVX_CHECK_EQ_INT(kvx_attn_scratch_floats(3, 8000, 64), 3 * (8016 + 64) + 64);
    kvx_attn_merge(1, 2, 3, m, l, acc, out);
    for (int i = 0; i < 6; i++)
        KVX_CHECK(out[i] == 0);
    /* two parts, one empty: the result is the other part divided by its l */
    float m2[2] = {-INFINITY, 0.5f}, l2[2] = {0, 2.0f}, acc2[2] = {7, 1.0f}, out2[1];
    kvx_attn_merge(2, 1, 1, m2, l2, acc2, out2);
    KVX_CHECK_NEAR(out2[0], 0.5f, 1e-7);
    /* two parts with different maxima: weights exp(m_r - M) */
    float m3[2] = {0.0f, 1.0f}, l3[2] = {1.0f, 1.0f}, acc3[2] = {1.0f, 3.0f}, out3[1];
    kvx_attn_merge(2, 1, 1, m3, l3, acc3, out3);
    double w = exp(-1.0);
    KVX_CHECK_NEAR(out3[0], (w * 1 + 3) / (w + 1), 1e-6);
}

KVX_TEST(attn_vectorized_exp_accuracy)
{
    enum { N = 4099 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = -87.0f * (float)i / (N - 1);
    x[7] = -INFINITY;
    x[8] = -100.0f;
    x[9] = -1e-8f;
    int tested = 0;
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        const struct kvx_attn_softmax_ops *sm = kvx_attn_softmax_ops((enum kvx_isa)isa);
        for (int n = N - 3; n <= N; n++) { /* every tail length of the 8- and 16-lane loops */
            memcpy(y, x, sizeof(float) * N);
            if (n < N)
                y[n] = 55.0f; /* past the end: must stay */
            float sum = sm->exp_sum(y, n, 0.0f);
            double ref_sum = 0, worst = 0;
            for (int i = 0; i < n; i++) {
                double e = exp((double)x[i]);
                ref_sum += e;
                /* below FLT_MIN (x < -87.34) an absolute FLT_MIN is allowed: 0 for expf's subnormal */
                double rel = e > 1.1754944e-38 ? fabs(y[i] - e) / e : fabs(y[i] - e) / 1.1754944e-38 * 3e-7;
                worst = rel > worst ? rel : worst;
            }
            if (n < N)
                KVX_CHECK(y[n] == 55.0f);
            if (!(worst <= 3e-7))
                kvx_test_fail(__FILE__, __LINE__, "%s: exp relative error %.3g", kvx_isa_name((enum kvx_isa)isa), worst);
            KVX_CHECK_NEAR(sum, ref_sum, 1e-6 * ref_sum);
        }
        KVX_CHECK(kvx_attn_softmax_ops((enum kvx_isa)isa)->exp_sum(y, 0, 0.0f) == 0.0f);
        tested++;
    }
    KVX_CHECK(tested >= 1);
    free(x);
    free(y);
}

KVX_TEST(attn_scale_max_matches_scalar)
{
    uint64_t rng = 5;
    float a[300], b[300], c[300];
    for (int i = 0; i < 300; i++)
        a[i] = 10.0f * rng_float(&rng);
    for (int isa = 1; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa))
            continue;
        for (int n = 0; n < 140; n += 1 + n / 8) {
            memcpy(b, a, sizeof a);
            memcpy(c, a, sizeof a);
            float mb = kvx_attn_scale_max_scalar(b, n, -0.3f);
            float mc = kvx_attn_softmax_ops((enum kvx_isa)isa)->scale_max(c, n, -0.3f);
            KVX_CHECK(mb == mc);
            KVX_CHECK(memcmp(b, c, sizeof b) == 0);
        }
    }
}

KVX_TEST(attn_window_layer)
{
    struct kvx_kv_layout lay;
    KVX_CHECK(kvx_kv_layout_init(&lay, 1, 16, NULL) == KVX_OK);
    lay.layers[0] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_WINDOW, .n_kv_heads = 1, .k_dim = 16,
                                             .v_dim = 16, .window = 50,
                                             .k_codec = KVX_KV_CODEC_F16, .v_codec = KVX_KV_CODEC_F16};
    struct kvx_kv_pool *p = pool_for(&lay, (size_t)1 << 20, kvx_cpu_best_isa());
    struct kvx_kv_seq *s = NULL;
    KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
    uint64_t rng = 77;
    float q[3 * 16];
    for (int i = 0; i < 3 * 16; i++)
        q[i] = 2.0f * rng_float(&rng);
    int bad = 0;
    for (int64_t n = 1; n <= 200; n++) {
        KVX_CHECK(kvx_kv_seq_reserve(s, n, NULL) == KVX_OK);
        write_random(s, &lay, n - 1, n, &rng);
        kvx_kv_seq_set_len(s, n);
        struct kvx_kv_view v;
        kvx_kv_seq_view(s, 0, &v);
        int64_t k0 = kvx_kv_layer_first_pos(&lay, 0, n - 1);
        bad += attn_case(&v, 0, k0, n, q, 3, 0.25f, (int)(n % 3), &rng);
    }
    KVX_CHECK_EQ_INT(bad, 0);
    struct kvx_kv_view v;
    kvx_kv_seq_view(s, 0, &v);
    KVX_CHECK(v.pages[0] == NULL && v.pages[8] == NULL && v.pages[9] != NULL);
    kvx_kv_seq_destroy(s);
    kvx_kv_pool_destroy(p);
    kvx_kv_layout_free(&lay);
}

/* ---------------------------------------------------------------------------------------------
 * Benchmark: decode attention, default model shape, f16, one thread. */

static double now_s(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Best ms per token (wall clock; *cpu_ms: this thread's CPU time in the same repetition) of
 * one attention pass over all layers and heads at `depth`. */
static double bench_token(struct kvx_kv_seq *s, int32_t n_layer, int64_t depth, const float *q,
                          float *scratch, int reps, double *cpu_ms)
{
    float m[3], l[3], acc[3 * 64], out[3 * 64];
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        for (int32_t layer = 0; layer < n_layer; layer++) {
            struct kvx_kv_view v;
            kvx_kv_seq_view(s, layer, &v);
            for (int32_t h = 0; h < 3; h++) {
                kvx_attn_partial(&v, h, 0, depth, q + h * 3 * 64, 3, 0.125f, scratch, m, l, acc);
                kvx_attn_merge(1, 3, 64, m, l, acc, out);
            }
        }
        double dt = now_s(CLOCK_MONOTONIC) - t0, dc = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
        if (dt < best) {
            best = dt;
            *cpu_ms = dc * 1e3;
        }
    }
    return best * 1e3;
}

/* Fill every page with copies of a random page (bandwidth, not values, is measured). */
static void bench_fill(struct kvx_kv_seq *s, const struct kvx_kv_layout *lay, uint64_t *rng)
{
    write_random(s, lay, 0, lay->page_tokens, rng);
    struct kvx_kv_view v0;
    kvx_kv_seq_view(s, 0, &v0);
    size_t bytes = kvx_kv_layer_page_bytes(lay, 0);
    for (int32_t layer = 0; layer < lay->n_layer; layer++) {
        struct kvx_kv_view v;
        kvx_kv_seq_view(s, layer, &v);
        for (int64_t pg = 0; pg < v.n_pages; pg++)
            if (v.pages[pg] != v0.pages[0])
                memcpy(v.pages[pg], v0.pages[0], bytes);
    }
}

KVX_TEST(attn_bench_decode)
{
    const char *on = getenv("KVX_BENCH");
    if (!on || strcmp(on, "1") != 0) {
        kvx_test_skip("set KVX_BENCH=1");
        return;
    }
    const char *pt_env = getenv("KVX_BENCH_PAGE"); /* tokens per page, default 256 */
    int32_t pt = pt_env ? atoi(pt_env) : 256;
    struct kvx_kv_layout lay;
    KVX_CHECK(kvx_kv_layout_init(&lay, 30, pt, NULL) == KVX_OK);
    for (int32_t i = 0; i < 30; i++)
        lay.layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_FULL, .n_kv_heads = 3, .k_dim = 64,
                                                 .v_dim = 64, .k_codec = KVX_KV_CODEC_F16,
                                                 .v_codec = KVX_KV_CODEC_F16};
    uint64_t rng = 1;
    float q[9 * 64];
    for (int i = 0; i < 9 * 64; i++)
        q[i] = rng_float(&rng);
    float *scratch = malloc(sizeof(float) * (size_t)kvx_attn_scratch_floats(3, 8000, 64));
    const char *only = getenv("KVX_BENCH_ISA"); /* e.g. "avx512": just that one */
    for (int isa = 0; isa < KVX_ISA_COUNT; isa++) {
        if (!kvx_cpu_has_isa((enum kvx_isa)isa) ||
            (only && strcmp(only, kvx_isa_name((enum kvx_isa)isa)) != 0))
            continue;
        struct kvx_kv_pool *p = pool_for(&lay, kvx_kv_layout_seq_bytes(&lay, 8000), (enum kvx_isa)isa);
        struct kvx_kv_seq *s = NULL;
        KVX_CHECK(kvx_kv_seq_create(p, &s, NULL) == KVX_OK);
        KVX_CHECK(kvx_kv_seq_reserve(s, 8000, NULL) == KVX_OK);
        bench_fill(s, &lay, &rng);
        kvx_kv_seq_set_len(s, 8000);
        const int64_t depths[] = {4096, 8000};
        for (int d = 0; d < 2; d++) {
            int reps = isa == KVX_ISA_SCALAR ? 2 : 10;
            double cpu_ms = 0, ms = bench_token(s, 30, depths[d], q, scratch, reps, &cpu_ms);
            double bytes = 30.0 * 3 * (double)depths[d] * (64 * 2 + 64 * 2); /* K + V, f16 */
            fprintf(stderr, "  bench %-6s f16 page %d depth %5lld: %7.3f ms/token %6.1f GB/s "
                    "(cpu %.3f ms)\n", kvx_isa_name((enum kvx_isa)isa), (int)pt,
                    (long long)depths[d], ms, bytes / (ms * 1e-3) / 1e9, cpu_ms);
        }
        kvx_kv_seq_destroy(s);
        kvx_kv_pool_destroy(p);
    }
    free(scratch);
    kvx_kv_layout_free(&lay);
}
