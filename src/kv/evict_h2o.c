/* kv/evict_h2o: Heavy-Hitter Oracle (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient
 * Generative Inference of Large Language Models").  A token's score is the attention it has
 * received so far:
 *   score_g[j] = sum over every query t since j entered, over the query heads h of KV head g,
 *                of softmax_j(scale q_{t,h} · k_j)
 * (the sums attn/causal.h adds each step; they move with their slots at compaction).  Keep a
 * recent window (default half the budget, as in the paper's equal split) and the heaviest
 * hitters, chosen per KV head. */
#include <string.h>

#include "kv/evict.h"

static int64_t h2o_window(const struct kvx_evict_cfg *c, int64_t budget)
{
    (void)c;
    return budget / 2;
}

static bool h2o_want(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_step *st,
                     uint8_t *want, bool *reset)
{
    (void)c;
    memset(want, 1, (size_t)st->n_tok);
    *reset = false;
    return true;
}

static void h2o_rank(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_layer *L, float *prio)
{
    (void)c;
    for (int32_t h = 0; h < L->n_heads; h++)
        memcpy(prio + h * L->n, L->score + h * L->ld, (size_t)L->n * sizeof *prio);
}

const struct kvx_kv_evict_ops kvx_kv_evict_h2o = {
    .name = "h2o",
    .sinks = 0,
    .window = h2o_window,
    .new_score = 0.0f,
    .want = h2o_want,
    .rank = h2o_rank,
};
