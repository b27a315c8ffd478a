/* engine/sampler: turns a row of logits into a token (the kvx.h sampler API).
 *
 * The chain is llama.cpp's common order, with llama.cpp's semantics for each stage:
 *
 *   repetition penalty  over the distinct tokens among the last repeat_last_n accepted ones:
 *                       logit > 0 ? logit / penalty : logit * penalty (once per distinct token)
 *   top-k               keep the k largest logits (ties: the lower id first)
 *   top-p               softmax over what is left (at temperature 1); keep the shortest prefix,
 *                       in descending order, whose probability mass reaches top_p
 *   min-p               keep tokens with p >= min_p * p_max, i.e. logit >= max + log(min_p)
 *   temperature         divide the kept logits by T, softmax, and draw one with the PRNG
 *
 * temperature <= 0 is greedy: the argmax of the penalised logits, ties to the lowest id (top-k,
 * top-p and min-p never remove the argmax, so they are skipped).  NaN logits count as -inf.
 *
 * Nothing sorts the whole vocabulary: top-k scans it with a k-entry heap, min-p is a filter
 * (it may run before top-p's cut: both keep a prefix of the same descending order, and top-p's
 * normaliser is taken before the filter), and top-p heapifies what is left and pops only as
 * far as its cut.  With the defaults a step is a few passes over n_vocab plus O(k log k)
 * (about 0.1 ms for 49,152 ids).  Every buffer is allocated by kvx_sampler_create; sample and
 * accept do not allocate.  The PRNG is xoshiro256** seeded through splitmix64, one state per
 * sampler (no globals), so a seed and the same logits give the same tokens.  The stream is
 * kvx's own: the same seed does not reproduce llama.cpp's (mt19937) draws.
 *
 * Not here: frequency/presence penalties, DRY, XTC, typical-p, mirostat, grammars. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvx.h"
#include "util/err.h"

/* Longest penalty window accepted: far beyond any context kvx runs, small enough that the ring
 * buffer (4 bytes a token) cannot become an accidental multi-gigabyte allocation. */
#define SAMPLER_MAX_LAST_N (1 << 20)

struct kvx_sampler {
    struct kvx_sampler_cfg cfg;
    int32_t n_vocab;

    float *work;       /* [n_vocab] the logits after the penalty (NaN -> -inf) */
    int32_t *cand;     /* [n_vocab] the candidate ids still in the running */
    int32_t n_cand;
    bool cand_sorted;  /* cand is in descending candidate order */
    int32_t *sorted;   /* [n_vocab] scratch: ids popped from a heap, in order */
    float *weight;     /* [n_vocab] unnormalised probabilities of the kept ids, for the draw */

    uint32_t *stamp;   /* [n_vocab] last penalty pass that touched each id (dedup) */
    uint32_t pass;

    int32_t *hist;     /* [repeat_last_n] ring of accepted tokens */
    int32_t hist_head; /* next slot to write */
    int32_t hist_n;    /* valid entries, <= repeat_last_n */

    uint64_t rng[4];   /* xoshiro256** state */
};

/* ---------------------------------------------------------------------------------------------
 * PRNG: splitmix64 to expand the seed, xoshiro256** for the stream (Blackman & Vigna). */

static uint64_t splitmix64_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double xoshiro_uniform(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------------------------------------
 * Configuration */

struct kvx_sampler_cfg kvx_sampler_cfg_default(void)
{
    return (struct kvx_sampler_cfg){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0,
    };
}

static enum kvx_status sampler_cfg_check(const struct kvx_sampler_cfg *c, int32_t n_vocab,
                                         struct kvx_err *err)
{
    if (n_vocab <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "sampler: n_vocab must be > 0 (got %d)",
                           (int)n_vocab);
    if (!isfinite(c->temperature))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "sampler: temperature must be a finite number (got %g)",
                           (double)c->temperature);
    if (!isfinite(c->top_p) || c->top_p < 0.0f)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "sampler: top_p must be a finite number >= 0 "
                           "(got %g; >= 1 turns it off)",
                           (double)c->top_p);
    if (!isfinite(c->min_p) || c->min_p > 1.0f)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "sampler: min_p must be a finite number <= 1 "
                           "(got %g; <= 0 turns it off)",
                           (double)c->min_p);
    if (!isfinite(c->repeat_penalty) || c->repeat_penalty <= 0.0f)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "sampler: repeat_penalty must be a finite number > 0 "
                           "(got %g; 1 turns it off)",
                           (double)c->repeat_penalty);
    if (c->repeat_last_n < 0 || c->repeat_last_n > SAMPLER_MAX_LAST_N)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "sampler: repeat_last_n must be in [0, %d] (got %d)", SAMPLER_MAX_LAST_N,
                           (int)c->repeat_last_n);
    return KVX_OK;
}

enum kvx_status kvx_sampler_create(const struct kvx_sampler_cfg *cfg, int32_t n_vocab,
                                   struct kvx_sampler **out, struct kvx_err *err)
{
    if (!cfg || !out)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "sampler: cfg and out must not be NULL");
    *out = NULL;
    enum kvx_status st = sampler_cfg_check(cfg, n_vocab, err);
    if (st != KVX_OK)
        return st;

    struct kvx_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return kvx_err_set(err, KVX_ERR_NOMEM, "sampler: out of memory");
    s->cfg = *cfg;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->work = malloc(n * sizeof *s->work);
    s->cand = malloc(n * sizeof *s->cand);
    s->sorted = malloc(n * sizeof *s->sorted);
    s->weight = malloc(n * sizeof *s->weight);
    s->stamp = calloc(n, sizeof *s->stamp);
    s->hist = malloc((size_t)(cfg->repeat_last_n > 0 ? cfg->repeat_last_n : 1) * sizeof *s->hist);
    if (!s->work || !s->cand || !s->sorted || !s->weight || !s->stamp || !s->hist) {
        kvx_sampler_destroy(s);
        return kvx_err_set(err, KVX_ERR_NOMEM, "sampler: out of memory for n_vocab %d",
                           (int)n_vocab);
    }
    uint64_t x = cfg->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64_next(&x);
    *out = s;
    return KVX_OK;
}

void kvx_sampler_destroy(struct kvx_sampler *s)
{
    if (!s)
        return;
    free(s->work);
    free(s->cand);
    free(s->sorted);
    free(s->weight);
    free(s->stamp);
    free(s->hist);
    free(s);
}

void kvx_sampler_accept(struct kvx_sampler *s, int32_t token)
{
    /* Out-of-vocabulary ids cannot be penalised; they are not remembered. */
    if (!s || token < 0 || token >= s->n_vocab || s->cfg.repeat_last_n == 0)
        return;
    s->hist[s->hist_head] = token;
    s->hist_head = (s->hist_head + 1) % s->cfg.repeat_last_n;
    if (s->hist_n < s->cfg.repeat_last_n)
        s->hist_n++;
}

/* ---------------------------------------------------------------------------------------------
 * Sampling */

/* Copy the logits into s->work, NaN -> -inf, and apply the repetition penalty once to each
 * distinct token of the window. */
static void sampler_penalize(struct kvx_sampler *s, const float *logits)
{
    for (int32_t i = 0; i < s->n_vocab; i++)
        s->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    float pen = s->cfg.repeat_penalty;
    if (pen == 1.0f || s->hist_n == 0)
        return;
    if (++s->pass == 0) { /* the stamp counter wrapped: forget every stamp */
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->pass = 1;
    }
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (s->stamp[t] == s->pass)
            continue;
        s->stamp[t] = s->pass;
        float *l = &s->work[t];
        *l = *l > 0.0f ? *l / pen : *l * pen;
    }
}

/* The lowest id holding the largest value of v (no NaN in v).  The maximum is reduced over 8
 * independent lanes first (a single running max is one long dependency chain), then found. */
static int32_t sampler_argmax(const float *v, int32_t n)
{
    float lane[8];
    for (int j = 0; j < 8; j++)
        lane[j] = -INFINITY;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] = v[i + j] > lane[j] ? v[i + j] : lane[j];
    float m = -INFINITY;
    for (int j = 0; j < 8; j++)
        m = lane[j] > m ? lane[j] : m;
    for (; i < n; i++)
        m = v[i] > m ? v[i] : m;
    for (i = 0; i < n - 1 && v[i] != m; i++)
        ;
    return i;
}

/* Candidate order: a before b when its logit is larger, or equal with a lower id. */
static bool sampler_before(const float *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/* Binary heaps of ids.  A "best heap" has the first candidate at its root (it pops in
 * descending order); a "worst heap" has the last one there (it holds the top k while the
 * others are scanned, each rejected with one comparison). */
static void sampler_sift_best(const float *v, int32_t *h, int32_t n, int32_t i)
{
    int32_t x = h[i];
    for (int32_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && sampler_before(v, h[c + 1], h[c]))
            c++;
        if (!sampler_before(v, h[c], x))
            break;
        h[i] = h[c];
    }
    h[i] = x;
}

static void sampler_sift_worst(const float *v, int32_t *h, int32_t n, int32_t i)
{
    int32_t x = h[i];
    for (int32_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && sampler_before(v, h[c], h[c + 1]))
            c++;
        if (!sampler_before(v, x, h[c]))
            break;
        h[i] = h[c];
    }
    h[i] = x;
}

/* top-k: s->cand = the k first ids in candidate order, sorted.  O(n_vocab + k log k) for the
 * usual case where few ids beat the k-th. */
static void sampler_top_k(struct kvx_sampler *s, int32_t k)
{
    const float *v = s->work;
    int32_t *h = s->cand;
    for (int32_t i = 0; i < k; i++)
        h[i] = i;
    for (int32_t i = k / 2 - 1; i >= 0; i--)
        sampler_sift_worst(v, h, k, i);
    float worst = v[h[0]]; /* ids after h[0] beat it only with a larger logit */
    for (int32_t id = k; id < s->n_vocab; id++) {
        if (v[id] > worst) {
            h[0] = id;
            sampler_sift_worst(v, h, k, 0);
            worst = v[h[0]];
        }
    }
    for (int32_t n = k - 1; n > 0; n--) { /* heap sort: the worst goes to the back */
        int32_t t = h[0];
        h[0] = h[n];
        h[n] = t;
        sampler_sift_worst(v, h, n, 0);
    }
    s->n_cand = k;
    s->cand_sorted = true;
}

/* min-p: keep (in place, order preserved) the candidates with logit >= max + log(min_p),
 * i.e. p >= min_p * p_max; returns their mass sum(exp(logit - max)). */
static double sampler_min_p(struct kvx_sampler *s, float max_l)
{
    float floor_l = max_l + logf(s->cfg.min_p);
    double mass = 0.0;
    int32_t n = 0;
    for (int32_t i = 0; i < s->n_cand; i++) {
        int32_t id = s->cand[i];
        if (s->work[id] >= floor_l) {
            s->cand[n++] = id;
            mass += exp((double)s->work[id] - max_l);
        }
    }
    s->n_cand = n;
    return mass;
}

/* top-p: keep the shortest prefix, in candidate order, whose mass reaches `target`.  Unsorted
 * candidates are heapified and popped only as far as needed. */
static void sampler_top_p(struct kvx_sampler *s, float max_l, double target)
{
    const float *v = s->work;
    double cum = 0.0;
    if (s->cand_sorted) {
        int32_t i = 0;
        while (i < s->n_cand) {
            cum += exp((double)v[s->cand[i++]] - max_l);
            if (cum >= target)
                break;
        }
        s->n_cand = i;
        return;
    }
    int32_t *h = s->cand, n = s->n_cand, m = 0;
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        sampler_sift_best(v, h, n, i);
    while (n > 0) {
        int32_t id = h[0];
        s->sorted[m++] = id;
        h[0] = h[--n];
        if (n > 0)
            sampler_sift_best(v, h, n, 0);
        cum += exp((double)v[id] - max_l);
        if (cum >= target)
            break;
    }
    memcpy(s->cand, s->sorted, (size_t)m * sizeof *s->cand);
    s->n_cand = m;
    s->cand_sorted = true;
}

int32_t kvx_sampler_sample(struct kvx_sampler *s, const float *logits)
{
    if (!s || !logits)
        return -1;
    sampler_penalize(s, logits);
    const struct kvx_sampler_cfg *c = &s->cfg;
    const float *v = s->work;
    int32_t best = sampler_argmax(v, s->n_vocab);
    float max_l = v[best];
    /* Greedy; and when every logit is -inf nothing has mass, so the lowest id it is. */
    if (c->temperature <= 0.0f || max_l == -INFINITY)
        return best;

    if (c->top_k > 0 && c->top_k < s->n_vocab) {
        sampler_top_k(s, c->top_k);
    } else {
        for (int32_t i = 0; i < s->n_vocab; i++)
            s->cand[i] = i;
        s->n_cand = s->n_vocab;
        s->cand_sorted = false;
    }
    /* top-p's normaliser is the mass that survived top-k; min-p (which comes after top-p)
     * only shortens the same descending order, so it may filter first: whichever cut is
     * shorter wins, and top-p's cut is only searched for when it falls inside min-p's. */
    double total = 0.0;
    if (c->top_p < 1.0f)
        for (int32_t i = 0; i < s->n_cand; i++)
            total += exp((double)v[s->cand[i]] - max_l);
    double mass = total;
    if (c->min_p > 0.0f)
        mass = sampler_min_p(s, max_l);
    double target = (double)c->top_p * total;
    if (c->top_p < 1.0f && mass >= target)
        sampler_top_p(s, max_l, target);

    double sum = 0.0;
    for (int32_t i = 0; i < s->n_cand; i++) {
        s->weight[i] = (float)exp(((double)v[s->cand[i]] - max_l) / c->temperature);
        sum += s->weight[i];
    }
    double u = xoshiro_uniform(s->rng) * sum, cum = 0.0;
    for (int32_t i = 0; i < s->n_cand; i++) {
        cum += s->weight[i];
        if (u < cum)
            return s->cand[i];
    }
    return s->cand[s->n_cand - 1]; /* u rounded up to the sum */
}
