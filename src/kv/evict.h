/* kv/evict: which tokens a layer keeps once it holds more than its budget.
 *
 * After every forward step (a prefill chunk or one decode token) each FULL layer holding more
 * tokens than its budget (plus an optional slack, which batches decode-time evictions) keeps
 * exactly its budget: per KV head,
 *   1. the sinks: slots whose position is below `sinks`;
 *   2. the window: the newest `window` slots;
 *   3. the rest by the policy's priority, highest first, ties to the newer token;
 * then kvx_kv_seq_compact (kv/pool.h) moves the kept tokens down and frees pages.  Kept
 * tokens keep their original positions (K is stored after RoPE); attention runs over slots.
 *
 * A policy (a method table, one file each: evict_<name>.c) says which queries' attention it
 * reads in a step (attn/causal.h sums their softmax probabilities per slot into the
 * sequence's score rows), how those sums become scores, and how scores rank slots:
 *   sinks   StreamingLLM: no attention; recency ranks (sinks default 4).
 *   h2o     every query's probabilities, summed over the query heads of a KV head and over
 *           all steps (accumulated attention); window default half the budget.
 *   snapkv  at a prompt's end (the last chunk of a feed of more than one token) the last
 *           obs_window queries vote; votes are pooled over neighbouring slots (max or avg,
 *           kernel pool_kernel) and kept as scores; tokens that came later score below every
 *           voted one, so between prompts it is "the prompt's selection + the recent window"
 *           (window default obs_window; sinks default 4, see evict_snapkv.c).
 *   tova    the newest query's probabilities (the last token of the step), averaged over all
 *           heads of the layer: one choice for every KV head.
 * Budgets: absolute (tokens per layer) or a ratio of the tokens the sequence has seen, spread
 * uniformly or as a pyramid (PyramidKV: sinks + window in every layer, the rest an arithmetic
 * sequence from 2P - P/beta in the lowest layer to P/beta in the highest, summing to the
 * uniform total exactly).
 *
 * Memory: per sequence, a position (int32) and a score (float) per slot, layer and KV head;
 * rows grow when a layer needs more slots.  Not thread-safe (the engine's thread only). */
#ifndef KVX_KV_EVICT_H
#define KVX_KV_EVICT_H

#include <stdbool.h>
#include <stdint.h>

#include "attn/causal.h"
#include "kv/layout.h"
#include "kv/pool.h"
#include "kvx.h"

struct kvx_kv_evict;       /* per engine: configuration, budgets, scratch */
struct kvx_kv_evict_seq;   /* per sequence: positions and scores of its slots */

/* Where a step stands in its feed (kvx_session_feed). */
struct kvx_kv_evict_step {
    int64_t n_tok;         /* tokens in this step */
    int64_t feed_len;      /* tokens of the whole feed */
    bool last_chunk;       /* this step ends the feed */
};

/* One layer of one sequence as a policy sees it: row h of pos / score at h * ld. */
struct kvx_kv_evict_layer {
    int32_t layer, n_heads;
    int64_t n, ld;         /* slots, row stride */
    int32_t *pos;          /* positions, increasing along a row */
    float *score;          /* the policy's statistic per slot (attention sums land here) */
};

struct kvx_kv_evict_ops {
    const char *name;
    int32_t sinks;         /* default sinks */
    /* Default window for a mean budget. */
    int64_t (*window)(const struct kvx_evict_cfg *c, int64_t budget);
    float new_score;       /* score of a slot added by a step that does not reset scores */
    /* Which of the step's tokens report attention: want[i] for i < n_tok.  *reset: every
     * score restarts at 0 first.  Returns false when the step reads none.  NULL: never. */
    bool (*want)(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_step *st,
                 uint8_t *want, bool *reset);
    /* After a step that read attention, fold the sums into the scores (every FULL layer).
     * NULL: the sums are the scores. */
    void (*absorb)(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_step *st,
                   struct kvx_kv_evict_layer *L);
    /* Priorities prio[h * L->n + j] of a layer about to evict (higher kept first).  NULL: all
     * equal, so recency decides. */
    void (*rank)(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_layer *L, float *prio);
};

extern const struct kvx_kv_evict_ops kvx_kv_evict_sinks;
extern const struct kvx_kv_evict_ops kvx_kv_evict_h2o;
extern const struct kvx_kv_evict_ops kvx_kv_evict_snapkv;
extern const struct kvx_kv_evict_ops kvx_kv_evict_tova;
/* The ops of a policy; NULL for KVX_EVICT_NONE or an unknown value. */
const struct kvx_kv_evict_ops *kvx_kv_evict_ops(enum kvx_evict_policy p);

/* Check cfg against the layout, the context (n_ctx) and the batch size, and resolve its
 * defaults.  KVX_ERR_INVALID_ARG naming the field: an unknown policy or schedule, a budget
 * below 1 token or above the context, a ratio outside (0, 1], sinks + window above the
 * budget, an obs window above the batch, an even pooling kernel.  *out is NULL for
 * KVX_EVICT_NONE. */
enum kvx_status kvx_kv_evict_create(const struct kvx_evict_cfg *cfg,
                                    const struct kvx_kv_layout *layout, int64_t n_ctx,
                                    int32_t n_batch, struct kvx_kv_evict **out,
                                    struct kvx_err *err);
void kvx_kv_evict_destroy(struct kvx_kv_evict *ev);
/* The configuration with its defaults resolved (sinks; window stays -1 for "policy default"). */
const struct kvx_evict_cfg *kvx_kv_evict_get_cfg(const struct kvx_kv_evict *ev);
/* Layer budgets for a sequence that has seen n_seen tokens: out[layer], -1 for layers that do
 * not evict (not FULL).  Uses the evictor's scratch (one thread at a time). */
void kvx_kv_evict_budgets(const struct kvx_kv_evict *ev, int64_t n_seen, int64_t *out);
/* The protected sinks and window of a layer with budget `layer_budget` at mean budget `mean`. */
void kvx_kv_evict_protected(const struct kvx_kv_evict *ev, int64_t mean, int64_t layer_budget,
                            int64_t *sinks, int64_t *window);
/* The fewest tokens the last chunk of a feed must have (snapkv: its obs window), so that the
 * engine can cut chunks accordingly. */
int64_t kvx_kv_evict_last_chunk_min(const struct kvx_kv_evict *ev);

enum kvx_status kvx_kv_evict_seq_create(struct kvx_kv_evict *ev, struct kvx_kv_evict_seq **out,
                                        struct kvx_err *err);
void kvx_kv_evict_seq_destroy(struct kvx_kv_evict_seq *es);

/* Before a step: make room in the rows for its tokens and set their scores; want[i] (i <
 * n_tok) says which tokens must report attention, and *acc the sums they go to (NULL when
 * none does).  KVX_ERR_NOMEM (or KVX_ERR_INVALID_ARG when the rows do not match the cache's
 * slots) leaves everything as it was. */
enum kvx_status kvx_kv_evict_step_begin(struct kvx_kv_evict_seq *es, const struct kvx_kv_seq *s,
                                        const struct kvx_kv_evict_step *st, uint8_t *want,
                                        const struct kvx_attn_acc_seq **acc, struct kvx_err *err);
/* After the step (its tokens written, kvx_kv_seq_set_len done): record their positions and
 * evict in every layer above its budget.  An error (KVX_ERR_NOMEM, or KVX_ERR_UNSUPPORTED for
 * shared pages) leaves the remaining layers above budget, rows and pool consistent. */
enum kvx_status kvx_kv_evict_step_end(struct kvx_kv_evict_seq *es, struct kvx_kv_seq *s,
                                      const struct kvx_kv_evict_step *st, struct kvx_err *err);
/* After kvx_kv_seq_truncate: forget the slots the sequence no longer holds. */
void kvx_kv_evict_seq_sync(struct kvx_kv_evict_seq *es, const struct kvx_kv_seq *s);
/* Tokens evicted so far, summed over layers (since the sequence was last emptied). */
int64_t kvx_kv_evict_seq_evicted(const struct kvx_kv_evict_seq *es);
/* A layer's rows (valid until the next step or sync); tests and policies. */
struct kvx_kv_evict_layer kvx_kv_evict_seq_layer(struct kvx_kv_evict_seq *es, int32_t layer);

/* The selection every policy shares, for one KV head: pos (increasing) and prio of n slots;
 * writes the min(n, budget) kept slots, increasing, to keep.  prio NULL: all equal.  scratch:
 * kvx_kv_evict_select_scratch(n) bytes. */
void kvx_kv_evict_select(const int32_t *pos, const float *prio, int64_t n, int64_t budget,
                         int64_t sinks, int64_t window, int64_t *keep, void *scratch);
size_t kvx_kv_evict_select_scratch(int64_t n);

#endif
