/* tests/test_sampler.c: engine/sampler against the math of each stage.
 *
 * Greedy and the penalty are checked exactly.  The stochastic stages are checked by drawing
 * N tokens from a small vocabulary whose probabilities are known in closed form: tokens a stage
 * must exclude may never appear, and the counts of the rest must pass a chi-square test at
 * p = 1e-4 against the expected distribution (the seeds are fixed, so a pass is deterministic,
 * and a wrong stage order or a wrong normalisation moves the expected counts far outside it). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kvx.h"
#include "test.h"

#define DRAWS 20000

static struct kvx_sampler_cfg cfg_plain(void)
{
    /* Temperature 1 and every filter off: draws follow softmax(logits). */
    struct kvx_sampler_cfg c = kvx_sampler_cfg_default();
    c.temperature = 1.0f;
    c.top_k = 0;
    c.top_p = 1.0f;
    c.min_p = 0.0f;
    c.repeat_penalty = 1.0f;
    c.seed = 1234;
    return c;
}

static struct kvx_sampler *make(const struct kvx_sampler_cfg *c, int32_t n_vocab)
{
    struct kvx_sampler *s = NULL;
    struct kvx_err err = {0};
    enum kvx_status st = kvx_sampler_create(c, n_vocab, &s, &err);
    if (st != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "kvx_sampler_create: %s", err.msg);
    return s;
}

/* Chi-square critical values at p = 1e-4 for 1..6 degrees of freedom. */
static const double chi2_crit[] = {0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86};

/* Draws DRAWS tokens and checks them against `expect` (probabilities summing to 1; a zero
 * means "must never be drawn").  Returns the chi-square statistic. */
static double check_distribution(struct kvx_sampler *s, const float *logits, const double *expect,
                                 int n, int line)
{
    long counts[16] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = kvx_sampler_sample(s, logits);
        if (t < 0 || t >= n) {
            kvx_test_fail(__FILE__, line, "sampled id %d out of [0, %d)", (int)t, n);
            return INFINITY;
        }
        counts[t]++;
    }
    double chi2 = 0.0;
    int df = -1;
    for (int i = 0; i < n; i++) {
        if (expect[i] == 0.0) {
            if (counts[i] != 0)
                kvx_test_fail(__FILE__, line, "token %d must be excluded, drawn %ld times", i,
                              counts[i]);
            continue;
        }
        double e = expect[i] * DRAWS;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        df++;
    }
    if (df >= 1 && !(chi2 <= chi2_crit[df]))
        kvx_test_fail(__FILE__, line, "chi-square %.2f > %.2f (df %d): counts do not match", chi2,
                      chi2_crit[df], df);
    return chi2;
}

static void logits_from_probs(const double *p, float *l, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)log(p[i]) + 3.0f; /* a shift must not matter */
}

KVX_TEST(sampler_greedy_is_argmax_lowest_id_on_ties)
{
    struct kvx_sampler_cfg c = kvx_sampler_cfg_default();
    c.temperature = 0.0f;
    struct kvx_sampler *s = make(&c, 6);
    if (!s)
        return;
    float l[6] = {0.5f, -1.0f, 2.0f, 1.9f, -3.0f, 0.0f};
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 2);
    float tie[6] = {0.5f, 3.0f, 2.0f, 3.0f, -3.0f, 3.0f};
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, tie), 1);
    float nan_first[6] = {NAN, 1.0f, 2.0f, 0.0f, NAN, 1.0f};
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, nan_first), 2);
    kvx_sampler_destroy(s);

    c.temperature = -1.0f; /* negative is greedy too */
    s = make(&c, 6);
    if (!s)
        return;
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 2);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_top_k_1_equals_greedy)
{
    enum { N = 1000 };
    static float l[N];
    uint64_t x = 99;
    struct kvx_sampler_cfg c = cfg_plain();
    c.top_k = 1;
    c.temperature = 1.5f;
    struct kvx_sampler *s = make(&c, N);
    if (!s)
        return;
    for (int step = 0; step < 50; step++) {
        int32_t want = 0;
        for (int i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            l[i] = (float)((x >> 40) % 1000) / 100.0f; /* ties happen: 1000 values, 1000 ids */
            if (l[i] > l[want])
                want = i;
        }
        KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), want);
    }
    kvx_sampler_destroy(s);
}

static void draw_sequence(uint64_t seed, int32_t *out, int n)
{
    enum { V = 64 };
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = 0.01f * (float)(i % 7); /* nearly flat: every draw carries entropy */
    struct kvx_sampler_cfg c = cfg_plain();
    c.seed = seed;
    struct kvx_sampler *s = make(&c, V);
    if (!s)
        return;
    for (int i = 0; i < n; i++)
        out[i] = kvx_sampler_sample(s, l);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_seed_determines_sequence)
{
    int32_t a[64], b[64], d[64];
    draw_sequence(7, a, 64);
    draw_sequence(7, b, 64);
    draw_sequence(8, d, 64);
    KVX_CHECK(memcmp(a, b, sizeof a) == 0);
    int same = 0;
    for (int i = 0; i < 64; i++)
        same += a[i] == d[i];
    KVX_CHECK(same < 16); /* independent streams agree on ~1/64 of the draws */
    int32_t z1[64], z2[64];
    draw_sequence(0, z1, 64); /* seed 0 is a seed like any other */
    draw_sequence(0, z2, 64);
    KVX_CHECK(memcmp(z1, z2, sizeof z1) == 0);
    KVX_CHECK(memcmp(z1, a, sizeof z1) != 0);
}

KVX_TEST(sampler_temperature_1_follows_softmax)
{
    const double p[5] = {0.4, 0.25, 0.2, 0.1, 0.05};
    float l[5];
    logits_from_probs(p, l, 5);
    struct kvx_sampler_cfg c = cfg_plain();
    struct kvx_sampler *s = make(&c, 5);
    if (!s)
        return;
    check_distribution(s, l, p, 5, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_temperature_scales_logits)
{
    /* T = 2: p_i ∝ p_i^(1/2). */
    const double p[4] = {0.6, 0.25, 0.1, 0.05};
    double e[4], z = 0;
    for (int i = 0; i < 4; i++)
        z += e[i] = sqrt(p[i]);
    for (int i = 0; i < 4; i++)
        e[i] /= z;
    float l[4];
    logits_from_probs(p, l, 4);
    struct kvx_sampler_cfg c = cfg_plain();
    c.temperature = 2.0f;
    struct kvx_sampler *s = make(&c, 4);
    if (!s)
        return;
    check_distribution(s, l, e, 4, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_top_k_keeps_k_largest)
{
    const double p[5] = {0.1, 0.4, 0.05, 0.3, 0.15};
    const double e[5] = {0.0, 0.4 / 0.85, 0.0, 0.3 / 0.85, 0.15 / 0.85};
    float l[5];
    logits_from_probs(p, l, 5);
    struct kvx_sampler_cfg c = cfg_plain();
    c.top_k = 3;
    struct kvx_sampler *s = make(&c, 5);
    if (!s)
        return;
    check_distribution(s, l, e, 5, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_top_p_keeps_shortest_prefix_reaching_p)
{
    /* Sorted 0.5, 0.2, 0.15, 0.1, 0.05: cumulative 0.5, 0.7, 0.85 >= 0.8 -> keep 3. */
    const double p[5] = {0.15, 0.05, 0.5, 0.1, 0.2};
    const double e[5] = {0.15 / 0.85, 0.0, 0.5 / 0.85, 0.0, 0.2 / 0.85};
    float l[5];
    logits_from_probs(p, l, 5);
    struct kvx_sampler_cfg c = cfg_plain();
    c.top_p = 0.8f;
    struct kvx_sampler *s = make(&c, 5);
    if (!s)
        return;
    check_distribution(s, l, e, 5, __LINE__);
    kvx_sampler_destroy(s);

    /* top_p = 0 keeps exactly the most likely token. */
    c.top_p = 0.0f;
    s = make(&c, 5);
    if (!s)
        return;
    const double only[5] = {0, 0, 1, 0, 0};
    check_distribution(s, l, only, 5, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_top_p_renormalises_after_top_k)
{
    /* Full softmax 0.4, 0.3, 0.2, 0.1 with top_p 0.5 keeps two tokens; after top_k = 2 the pair
     * is 0.571, 0.429, so top_p 0.5 keeps only the first.  The chain order is observable. */
    const double p[4] = {0.4, 0.3, 0.2, 0.1};
    float l[4];
    logits_from_probs(p, l, 4);
    struct kvx_sampler_cfg c = cfg_plain();
    c.top_p = 0.5f;
    struct kvx_sampler *s = make(&c, 4);
    if (!s)
        return;
    const double both[4] = {0.4 / 0.7, 0.3 / 0.7, 0, 0};
    check_distribution(s, l, both, 4, __LINE__);
    kvx_sampler_destroy(s);

    c.top_k = 2;
    s = make(&c, 4);
    if (!s)
        return;
    const double first[4] = {1, 0, 0, 0};
    check_distribution(s, l, first, 4, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_min_p_before_temperature)
{
    /* p = 0.5, 0.3, 0.2 with min_p 0.5: floor 0.25 keeps {0, 1}.  Then T = 0.5 squares them:
     * 0.25 : 0.09.  (Had temperature come first, the floor would drop token 1 as well.) */
    const double p[3] = {0.5, 0.3, 0.2};
    float l[3];
    logits_from_probs(p, l, 3);
    struct kvx_sampler_cfg c = cfg_plain();
    c.min_p = 0.5f;
    c.temperature = 0.5f;
    struct kvx_sampler *s = make(&c, 3);
    if (!s)
        return;
    const double e[3] = {0.25 / 0.34, 0.09 / 0.34, 0};
    check_distribution(s, l, e, 3, __LINE__);
    kvx_sampler_destroy(s);

    /* min_p at the default 0.05 over a long tail: p_max 0.5, floor 0.025 drops the 0.02s. */
    const double q[6] = {0.5, 0.3, 0.1, 0.06, 0.02, 0.02};
    float lq[6];
    logits_from_probs(q, lq, 6);
    c = cfg_plain();
    c.min_p = 0.05f;
    s = make(&c, 6);
    if (!s)
        return;
    const double eq[6] = {0.5 / 0.96, 0.3 / 0.96, 0.1 / 0.96, 0.06 / 0.96, 0, 0};
    check_distribution(s, lq, eq, 6, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_top_p_normalises_before_min_p)
{
    /* p = 0.4, 0.3, 0.15, 0.05 x3; min_p 0.25 keeps {0, 1, 2} (mass 0.85).  top_p 0.75 is
     * measured against the whole mass: cumulative 0.4, 0.7, 0.85 -> three tokens (a top-p that
     * renormalised after min-p would stop at two).  top_p 0.9 cuts after min-p's cut: three. */
    const double p[6] = {0.4, 0.3, 0.15, 0.05, 0.05, 0.05};
    const double e[6] = {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0, 0};
    float l[6];
    logits_from_probs(p, l, 6);
    const float top_ps[2] = {0.75f, 0.9f};
    for (int i = 0; i < 2; i++) {
        struct kvx_sampler_cfg c = cfg_plain();
        c.min_p = 0.25f;
        c.top_p = top_ps[i];
        struct kvx_sampler *s = make(&c, 6);
        if (!s)
            return;
        check_distribution(s, l, e, 6, __LINE__);
        kvx_sampler_destroy(s);
    }
    /* With top_k 5 first (mass 0.95), top_p 0.7 reaches 0.665 at the second token. */
    struct kvx_sampler_cfg c = cfg_plain();
    c.min_p = 0.25f;
    c.top_p = 0.7f;
    c.top_k = 5;
    struct kvx_sampler *s = make(&c, 6);
    if (!s)
        return;
    const double two[6] = {0.4 / 0.7, 0.3 / 0.7, 0, 0, 0, 0};
    check_distribution(s, l, two, 6, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_chi_square_detects_a_wrong_distribution)
{
    /* The statistical check itself must be able to fail: draws from p tested against q. */
    const double p[3] = {0.5, 0.3, 0.2}, q[3] = {0.45, 0.33, 0.22};
    float l[3];
    logits_from_probs(p, l, 3);
    struct kvx_sampler_cfg c = cfg_plain();
    struct kvx_sampler *s = make(&c, 3);
    if (!s)
        return;
    long counts[3] = {0};
    for (int i = 0; i < DRAWS; i++)
        counts[kvx_sampler_sample(s, l)]++;
    double chi2 = 0;
    for (int i = 0; i < 3; i++)
        chi2 += (counts[i] - q[i] * DRAWS) * (counts[i] - q[i] * DRAWS) / (q[i] * DRAWS);
    KVX_CHECK(chi2 > chi2_crit[2]);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_repeat_penalty_llama_cpp_semantics)
{
    struct kvx_sampler_cfg c = kvx_sampler_cfg_default();
    c.temperature = 0.0f;
    c.repeat_penalty = 1.5f;
    c.repeat_last_n = 3;
    struct kvx_sampler *s = make(&c, 4);
    if (!s)
        return;
    /* Positive logit divided: 2.0 / 1.5 = 1.333 < 1.5. */
    float l[4] = {2.0f, 1.5f, -1.0f, -1.2f};
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 0);
    kvx_sampler_accept(s, 0);
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 1);
    /* The input is not modified. */
    KVX_CHECK(l[0] == 2.0f);
    /* Negative logit multiplied: -1.0 * 1.5 = -1.5 < -1.2. */
    float neg[4] = {-5.0f, -5.0f, -1.0f, -1.2f};
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, neg), 2);
    kvx_sampler_accept(s, 2);
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, neg), 3);
    /* Once per distinct token: 0 twice more is still one division (1.333 > 1.2; two would be
     * 0.889). */
    float once[4] = {2.0f, 1.2f, -9.0f, -9.0f};
    kvx_sampler_accept(s, 0);
    kvx_sampler_accept(s, 0); /* window (3): 2, 0, 0 */
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, once), 0);
    /* The window forgets: after three other tokens neither 0 nor 2 is penalised. */
    kvx_sampler_accept(s, 3);
    kvx_sampler_accept(s, 3);
    kvx_sampler_accept(s, 1);
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 0);
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, neg), 2);
    kvx_sampler_accept(s, -1); /* out of range: ignored, no crash */
    kvx_sampler_accept(s, 4);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_repeat_penalty_changes_probabilities_exactly)
{
    /* Logits (1, 0) with token 0 penalised by 2 -> (0.5, 0): p0 = e^.5 / (e^.5 + 1). */
    struct kvx_sampler_cfg c = cfg_plain();
    c.repeat_penalty = 2.0f;
    struct kvx_sampler *s = make(&c, 2);
    if (!s)
        return;
    kvx_sampler_accept(s, 0);
    float l[2] = {1.0f, 0.0f};
    double p0 = exp(0.5) / (exp(0.5) + 1.0);
    const double e[2] = {p0, 1.0 - p0};
    check_distribution(s, l, e, 2, __LINE__);
    kvx_sampler_destroy(s);

    /* Logits (0, -1) with token 1 penalised by 2 -> (0, -2). */
    s = make(&c, 2);
    if (!s)
        return;
    kvx_sampler_accept(s, 1);
    float m[2] = {0.0f, -1.0f};
    double p1 = exp(-2.0) / (1.0 + exp(-2.0));
    const double f[2] = {1.0 - p1, p1};
    check_distribution(s, m, f, 2, __LINE__);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_default_chain_on_a_real_vocab_size)
{
    /* The defaults over 49152 ids: only the top 40 by logit can come out. */
    enum { N = 49152 };
    static float l[N];
    uint64_t x = 5;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((x >> 33) % 100000) / 20000.0f; /* [0, 5) */
    }
    float kth;
    { /* the 40th largest logit */
        static float sorted[N];
        memcpy(sorted, l, sizeof l);
        for (int k = 0; k < 40; k++) {
            int best = k;
            for (int i = k + 1; i < N; i++)
                if (sorted[i] > sorted[best])
                    best = i;
            float t = sorted[k];
            sorted[k] = sorted[best];
            sorted[best] = t;
        }
        kth = sorted[39];
    }
    struct kvx_sampler_cfg c = kvx_sampler_cfg_default();
    struct kvx_sampler *s = make(&c, N);
    if (!s)
        return;
    int distinct = 0;
    static unsigned char seen[N];
    for (int i = 0; i < 2000; i++) {
        int32_t t = kvx_sampler_sample(s, l);
        KVX_CHECK(t >= 0 && t < N);
        if (t < 0 || t >= N)
            break;
        KVX_CHECK(l[t] >= kth);
        distinct += !seen[t];
        seen[t] = 1;
    }
    KVX_CHECK(distinct > 20); /* nearly flat top: most of the 40 appear */
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_rejects_invalid_cfg)
{
    struct {
        const char *what;
        struct kvx_sampler_cfg c;
        int32_t n_vocab;
        const char *needle;
    } bad[12];
    int n = 0;
    struct kvx_sampler_cfg d = kvx_sampler_cfg_default();
#define BAD(field, value, nv, text)                                                        \
    do {                                                                                   \
        bad[n].what = #field " = " #value;                                                 \
        bad[n].c = d;                                                                      \
        bad[n].c.field = value;                                                            \
        bad[n].n_vocab = nv;                                                               \
        bad[n].needle = text;                                                              \
        n++;                                                                               \
    } while (0)
    BAD(temperature, NAN, 10, "temperature");
    BAD(temperature, INFINITY, 10, "temperature");
    BAD(top_p, -0.1f, 10, "top_p");
    BAD(top_p, NAN, 10, "top_p");
    BAD(min_p, NAN, 10, "min_p");
    BAD(min_p, 1.5f, 10, "min_p");
    BAD(repeat_penalty, 0.0f, 10, "repeat_penalty");
    BAD(repeat_penalty, -1.0f, 10, "repeat_penalty");
    BAD(repeat_penalty, NAN, 10, "repeat_penalty");
    BAD(repeat_last_n, -1, 10, "repeat_last_n");
    BAD(repeat_last_n, 64, 0, "n_vocab");
    BAD(repeat_last_n, 64, -5, "n_vocab");
#undef BAD
    for (int i = 0; i < n; i++) {
        struct kvx_sampler *s = (struct kvx_sampler *)&n; /* must be overwritten with NULL */
        struct kvx_err err = {0};
        enum kvx_status st = kvx_sampler_create(&bad[i].c, bad[i].n_vocab, &s, &err);
        if (st != KVX_ERR_INVALID_ARG || s != NULL || !strstr(err.msg, bad[i].needle))
            kvx_test_fail(__FILE__, __LINE__, "%s: status %d, msg \"%s\"", bad[i].what, (int)st,
                          err.msg);
    }
    struct kvx_sampler *s = NULL;
    KVX_CHECK_EQ_INT(kvx_sampler_create(NULL, 10, &s, NULL), KVX_ERR_INVALID_ARG);
    kvx_sampler_destroy(NULL);

    /* Documented "off" values are accepted. */
    struct kvx_sampler_cfg ok = d;
    ok.top_k = -1;
    ok.top_p = 1.5f;
    ok.min_p = -0.5f;
    ok.repeat_last_n = 0;
    struct kvx_err err = {0};
    KVX_CHECK_EQ_INT(kvx_sampler_create(&ok, 10, &s, &err), KVX_OK);
    kvx_sampler_accept(s, 3); /* repeat_last_n 0: nothing remembered */
    float l[10] = {0};
    l[7] = 50.0f;
    KVX_CHECK_EQ_INT(kvx_sampler_sample(s, l), 7);
    kvx_sampler_destroy(s);
}

KVX_TEST(sampler_defaults_are_llama_cpp_like)
{
    struct kvx_sampler_cfg d = kvx_sampler_cfg_default();
    KVX_CHECK_NEAR(d.temperature, 0.8, 1e-6);
    KVX_CHECK_EQ_INT(d.top_k, 40);
    KVX_CHECK_NEAR(d.top_p, 0.95, 1e-6);
    KVX_CHECK_NEAR(d.min_p, 0.05, 1e-6);
    KVX_CHECK_NEAR(d.repeat_penalty, 1.0, 0);
    KVX_CHECK_EQ_INT(d.repeat_last_n, 64);
    KVX_CHECK(d.seed == 0);
}
