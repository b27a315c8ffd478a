/* eval: what a KV cache configuration costs in quality.
 *
 *   KL divergence, top-1 agreement and perplexity of a test engine against a reference engine
 *   (normally the same model with an uncompressed f32 cache), teacher-forced over windows of
 *   corpus text (kld.c);
 *   passkey retrieval: a random 5-digit key hidden at a depth of a long filler text (passkey.c);
 *   sweep reports: the Pareto frontier of quality against KV bytes per token, written as CSV,
 *   Markdown and SVG (sweep.c).
 *
 * The module drives engines through the public API (include/kvx.h) only, so what it measures is
 * what a library user gets.  It never prints: progress goes through a callback. */
#ifndef KVX_EVAL_H
#define KVX_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

/* ---------------------------------------------------------------------------------------------
 * Per-position math (double precision throughout) */

/* One scored position: reference logits r and test logits t over the vocabulary.
 *   lse(x)   = log sum_i exp(x_i)
 *   kld      = KL(P_ref || P_test) = sum_i p_i (log p_i - log q_i),  p = softmax(r), q = softmax(t)
 *            = (sum_i e^{r_i - m} (r_i - t_i)) / (sum_i e^{r_i - m}) + lse(t) - lse(r),  m = max r
 *              (clamped at 0: it is >= 0 mathematically, rounding can make it -1e-17)
 *   nll_*    = lse(x) - x[target]
 *   top1_same = argmax r == argmax t (first index on ties).
 * Identical logits give kld == 0 exactly. */
struct kvx_eval_pos {
    double kld, nll_ref, nll_test;
    bool top1_same;
};
void kvx_eval_compare(const float *ref, const float *test, int32_t n_vocab, int32_t target,
                      struct kvx_eval_pos *out);

/* Index of the largest of x[0..n) (the first on ties); n >= 1. */
int32_t kvx_eval_argmax(const float *x, int32_t n);

/* The p-quantile (0 <= p <= 1) of v[0..n), interpolated linearly between the order statistics
 * at ranks floor(h) and ceil(h), h = p (n - 1) (numpy's default); sorts v in place.  0 when
 * n == 0. */
double kvx_eval_percentile(double *v, int64_t n, double p);

/* ---------------------------------------------------------------------------------------------
 * KL divergence run: one reference engine, any number of test engines, fed in lockstep so the
 * reference logits are computed once and never held for more than one chunk.
 *
 * The text is cut into non-overlapping windows of `ctx` tokens (as `kvx eval ppl`: the
 * window's first token replaced by BOS when `bos_id` >= 0).  Every engine starts each window
 * from an empty session and is fed the window in chunks of `chunk` tokens with all logits; the
 * positions scored are those of the window's second half, i = ctx/2 .. ctx-2, each predicting
 * token i+1 (llama.cpp's perplexity scoring, so ppl_test equals `kvx eval ppl` with the same
 * cache options): every scored token sees at least ctx/2 tokens of (compressed) cache. */
struct kvx_eval_progress {
    int64_t window, n_windows;     /* window being finished (1-based) */
    double seconds;                /* since the run started */
    double kld_mean;               /* running, first test engine */
};
typedef void (*kvx_eval_progress_fn)(void *ud, const struct kvx_eval_progress *p);

struct kvx_eval_kld_cfg {
    const int32_t *tokens;         /* the text, borrowed */
    int64_t n_tokens;
    int64_t ctx;                   /* window, >= 4 */
    int64_t n_windows;             /* 0: as many as the text holds */
    int64_t chunk;                 /* tokens per feed (0: 512); bounds memory to 2 chunks of logits */
    int32_t n_vocab;               /* the model's */
    int32_t bos_id;                /* -1: keep the text's first token */
    kvx_eval_progress_fn progress; /* NULL: none; called after each window */
    void *progress_ud;
};
struct kvx_eval_kld_cfg kvx_eval_kld_cfg_default(void);

struct kvx_eval_kld_result {
    int64_t n_windows, n_scored;
    double kld_mean, kld_p50, kld_p99, kld_max;
    double top1;                   /* fraction of scored positions with the same argmax */
    double ppl_ref, ppl_test, ppl_ratio;
    size_t kv_bytes_per_token;     /* kv/layout's figure for the test engine's cache */
    double kv_held_per_token;      /* bytes the pool held at the end of each window / ctx, mean */
    double kv_bytes_per_token_eff; /* min of the two: below the layout figure only when the
                                    * cache held fewer tokens than it was fed (eviction, windows) */
};

/* Runs the windows through `ref` and each of tests[0..n_tests); writes n_tests results.  The
 * engines must have a context of at least ctx tokens and no other live session of theirs may
 * be fed meanwhile.  KVX_ERR_INVALID_ARG when the text holds fewer than n_windows (or one)
 * windows, naming the tokens needed and held; an engine's error is passed on prefixed with
 * "reference" or "test engine i". */
enum kvx_status kvx_eval_kld(const struct kvx_eval_kld_cfg *cfg, struct kvx_engine *ref,
                             struct kvx_engine *const *tests, int32_t n_tests,
                             struct kvx_eval_kld_result *out, struct kvx_err *err);

/* ---------------------------------------------------------------------------------------------
 * Passkey retrieval.
 *
 * The prompt, `length` tokens in all:
 *   [template head] INTRO filler[0..a) KEY filler[a..F) QUESTION [template tail]
 * INTRO says a pass key is hidden in the text, KEY is "The pass key is NNNNN. Remember it.
 * NNNNN is the pass key.", QUESTION asks for it and (plain form) ends with "The pass key is".
 * The filler is a contiguous run of F tokens of the corpus starting at `filler_off`; a, the
 * key's place, is round(depth * F) moved back, by at most 32 tokens, to just after a token
 * that ends a line or a sentence, so the key does not split a word.  Chat form: the text is
 * the user message of the model's chat template, followed by the assistant header.
 * The model decodes greedily; the trial is correct when the first run of digits of its answer
 * is the key. */
enum kvx_eval_passkey_form { KVX_EVAL_PASSKEY_PLAIN = 0, KVX_EVAL_PASSKEY_CHAT };

struct kvx_eval_passkey_cfg {
    const struct kvx_model *model;
    const int32_t *filler;         /* corpus tokens (no BOS), borrowed */
    int64_t n_filler;
    enum kvx_eval_passkey_form form;
    int32_t n_gen;                 /* tokens decoded for the answer (0: 8 plain, 16 chat) */
};

struct kvx_eval_passkey_prompt {
    int32_t *tokens;               /* malloc'd; kvx_eval_passkey_prompt_free */
    int64_t n;                     /* == the length asked for */
    int64_t key_at;                /* index of the first token of KEY */
    int64_t filler_len;            /* F */
    double depth;                  /* where KEY sits: a / F */
    int32_t key;                   /* 10000..99999 */
};

/* Build the prompt of `length` tokens with `key` at `depth` (0..1); filler_off is taken
 * modulo the room the corpus leaves.  KVX_ERR_INVALID_ARG when the length cannot hold the
 * fixed parts or the corpus is shorter than the filler needs ("needs N tokens, has M"). */
enum kvx_status kvx_eval_passkey_build(const struct kvx_eval_passkey_cfg *cfg, int64_t length,
                                       double depth, int32_t key, int64_t filler_off,
                                       struct kvx_eval_passkey_prompt *out, struct kvx_err *err);
void kvx_eval_passkey_prompt_free(struct kvx_eval_passkey_prompt *p);

struct kvx_eval_passkey_answer {
    bool correct;                  /* digits is the key */
    char digits[16];               /* the answer's first run of digits ("" if none; cut at 15) */
    char text[160];                /* what the model wrote (cut at 159 bytes) */
};

/* Feed the prompt to a fresh session of `e` and decode greedily (stopping at end of turn). */
enum kvx_status kvx_eval_passkey_trial(struct kvx_engine *e, const struct kvx_eval_passkey_cfg *cfg,
                                       const struct kvx_eval_passkey_prompt *p,
                                       struct kvx_eval_passkey_answer *out, struct kvx_err *err);

/* A grid of trials: for each length, each depth, `trials` trials, each with its own key and
 * filler offset drawn from a generator seeded with `seed` (the same seed gives the same
 * prompts, so configurations are compared on identical prompts). */
struct kvx_eval_passkey_trial_info {
    int64_t length;
    double depth;                  /* asked for (the prompt's actual depth is within 32 tokens) */
    int32_t length_idx, depth_idx, trial, key;
    const struct kvx_eval_passkey_answer *answer;   /* valid during the callback */
    int64_t done, total;           /* trials finished, including this one; all trials */
    double seconds;                /* since the grid started */
};
typedef void (*kvx_eval_trial_fn)(void *ud, const struct kvx_eval_passkey_trial_info *t);

struct kvx_eval_passkey_grid {
    const int64_t *lengths;
    int32_t n_lengths;
    const double *depths;
    int32_t n_depths;
    int32_t trials;
    uint64_t seed;
    kvx_eval_trial_fn on_trial;    /* NULL: none */
    void *ud;
};

/* Run every trial of the grid on `e`; n_correct[l * n_depths + d] counts the correct ones.
 * Every length is checked (kvx_eval_passkey_build's errors) before the first trial. */
enum kvx_status kvx_eval_passkey_run(struct kvx_engine *e, const struct kvx_eval_passkey_cfg *cfg,
                                     const struct kvx_eval_passkey_grid *g, int32_t *n_correct,
                                     struct kvx_err *err);

/* ---------------------------------------------------------------------------------------------
 * Sweep reports */

struct kvx_eval_sweep_row {
    const char *name;              /* borrowed */
    const char *options;           /* the configuration's options as written, borrowed */
    double bytes_per_token;        /* effective KV bytes per token */
    double kld_mean, kld_p99, top1, ppl_ratio;
    double passkey;                /* accuracy 0..1, or < 0 when not measured */
};

/* on_front[i] = row i is on the Pareto frontier of (bytes_per_token, kld_mean), both lower
 * better: no other row is at most as large in both and smaller in one. */
void kvx_eval_pareto(const struct kvx_eval_sweep_row *rows, int32_t n, bool *on_front);

/* Write PREFIX.csv (one row per configuration), PREFIX.md (a Markdown table) and PREFIX.svg
 * (mean KLD, log scale, against KV bytes per token; frontier drawn, points labelled).
 * `title` heads the Markdown and the plot.  KVX_ERR_IO naming the file that failed. */
enum kvx_status kvx_eval_sweep_write(const struct kvx_eval_sweep_row *rows, int32_t n,
                                     const char *prefix, const char *title, struct kvx_err *err);

#endif
