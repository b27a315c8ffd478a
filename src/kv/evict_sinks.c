/* kv/evict_sinks: StreamingLLM (Xiao et al., "Efficient Streaming Language Models with
 * Attention Sinks").  Keep the first `sinks` tokens (default 4: the attention sinks most
 * heads dump probability on) and the most recent ones; read no attention.  With every
 * priority equal, the shared selection (kv/evict.c) fills the budget by recency, so the
 * window is "the rest of the budget" and needs no default of its own.  Positions stay the
 * original ones (the paper re-numbers positions inside the cache; kvx caches K after RoPE). */
#include "kv/evict.h"

static int64_t sinks_window(const struct kvx_evict_cfg *c, int64_t budget)
{
    (void)c;
    (void)budget;
    return 0;
}

const struct kvx_kv_evict_ops kvx_kv_evict_sinks = {
    .name = "sinks",
    .sinks = 4,
    .window = sinks_window,
    .new_score = 0.0f,
};
