/* kv/evict_tova: Token Omission Via Attention (Oren et al., "Transformers are Multi-State
 * RNNs").  After each step, drop the tokens the newest query (the step's last token) attends
 * to least, its probabilities averaged over every query head of the layer:
 *   prio[j] = (1 / n_head) sum_h softmax_j(scale q_{last,h} · k_j)
 * (the KV-head sums of attn/causal.h, reset each step, added over KV heads; the constant
 * 1/n_head does not change the order).  One choice for the whole layer, so every KV head keeps
 * the same tokens.  No window: the newest token is kept only if it is attended to. */
#include <string.h>

#include "kv/evict.h"

static int64_t tova_window(const struct kvx_evict_cfg *c, int64_t budget)
{
    (void)c;
    (void)budget;
    return 0;
}

static bool tova_want(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_step *st,
                      uint8_t *want, bool *reset)
{
    (void)c;
    want[st->n_tok - 1] = 1;
    *reset = true;
    return true;
}

static void tova_rank(const struct kvx_evict_cfg *c, const struct kvx_kv_evict_layer *L, float *prio)
{
    (void)c;
    for (int64_t j = 0; j < L->n; j++) {
        float sum = 0;
        for (int32_t h = 0; h < L->n_heads; h++)
            sum += L->score[h * L->ld + j];
        prio[j] = sum;
    }
    for (int32_t h = 1; h < L->n_heads; h++)
        memcpy(prio + h * L->n, prio, (size_t)L->n * sizeof *prio);
}

const struct kvx_kv_evict_ops kvx_kv_evict_tova = {
    .name = "tova",
    .sinks = 0,
    .window = tova_window,
    .new_score = 0.0f,
    .want = tova_want,
    .rank = tova_rank,
};
