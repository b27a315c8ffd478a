/* attn/probs: the softmax probabilities of chosen queries summed per key slot, for eviction
 * policies (kv/evict.h).  Runs after the attention of a layer, which left each wanted
 * query's log-sum-exp in ws->lse:
 *   row_g[j] += sum_{t wanted} sum_{h in group g} exp(scale q_{t,h} · k_j - lse_{t,h})
 * over the slots j each token sees.  One more qk pass over those slots (no pv), split into
 * tasks of (KV head, slot chunk) so that no two tasks write the same sum; inside a task the
 * wanted tokens go in groups of up to KVX_ATTN_QBLOCK consecutive ones whose queries share
 * each K load.  Probabilities are fp32 (the attention's own exp), sums fp32. */
#include <stdatomic.h>
#include <string.h>

#include "attn/attn.h"
#include "attn/causal.h"
#include "attn/internal.h"

/* Slots per task.  At most causal.c's smallest shared-prefix chunk (1024), so that a task's
 * scores (QBLOCK x G rows of PROB_CHUNK) fit in the thread scratch sized for those. */
#define PROB_CHUNK 256

struct probs_plan {
    const struct kvx_attn_batch *b;
    struct kvx_attn_workspace *ws;
    int64_t n_chunks, n_tasks;
    atomic_long next;
};

/* One past token t's last visible slot. */
static int64_t key_end(const struct kvx_attn_batch *b, int64_t t)
{
    return kvx_kv_seq_slot(b->seq[t], b->layer, b->pos[t]) + 1;
}

/* Wanted tokens from t on that can share a qk pass: one sequence, consecutive positions. */
static int64_t group_len(const struct kvx_attn_batch *b, int64_t t)
{
    int64_t n = 1;
    while (n < KVX_ATTN_QBLOCK && t + n < b->n_tok && b->acc->want[t + n] &&
           b->seq[t + n] == b->seq[t] && b->pos[t + n] == b->pos[t] + n)
        n++;
    return n;
}

/* Add the probabilities of tokens [t, t+nt) (KV head g) for slots [k0, k1) to their sums. */
static void group_probs(const struct probs_plan *p, int64_t t, int64_t nt, int64_t g, int64_t k0,
                        int64_t k1, float *scr)
{
    const struct kvx_attn_batch *b = p->b;
    const int64_t G = b->n_head / b->n_head_kv, hd = b->head_dim, nq = nt * G;
    const int64_t ld = PROB_CHUNK;
    float *q = scr, *q_rot = q + nq * hd, *scores = q_rot + nq * hd;
    for (int64_t i = 0; i < nt; i++)
        memcpy(q + i * G * hd, b->q + (t + i) * b->q_ld + g * G * hd, (size_t)(G * hd) * sizeof *q);
    struct kvx_kv_view view;
    kvx_kv_seq_view(b->seq[t], b->layer, &view);
    kvx_attn_scores(&view, (int32_t)g, k0, k1, q, (int32_t)nq, scores, ld, q_rot);
    const struct kvx_attn_softmax_ops *sm = kvx_attn_softmax_ops(view.isa);
    const struct kvx_attn_acc_seq *acc = b->acc->seq[t];
    float *row = acc->layer[b->layer] + g * acc->ld;
    for (int64_t i = 0; i < nt; i++) {
        const int64_t end = key_end(b, t + i) < k1 ? key_end(b, t + i) : k1;
        if (end <= k0)
            continue;
        for (int64_t j = 0; j < G; j++) {
            float *s = scores + (i * G + j) * ld;
            sm->scale_max(s, end - k0, b->scale);
            sm->exp_sum(s, end - k0, p->ws->lse[(t + i) * b->n_head + g * G + j]);
            for (int64_t x = 0; x < end - k0; x++)
                row[k0 + x] += s[x];
        }
    }
}

static void probs_loop(void *ctx, int ith, int nth)
{
    (void)nth;
    struct probs_plan *p = ctx;
    const struct kvx_attn_batch *b = p->b;
    float *scr = p->ws->thread + (int64_t)ith * p->ws->thread_floats;
    for (;;) {
        const int64_t task = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (task >= p->n_tasks)
            break;
        const int64_t g = task % b->n_head_kv, c = task / b->n_head_kv;
        const int64_t k0 = c * PROB_CHUNK;
        for (int64_t t = 0; t < b->n_tok;) {
            if (!b->acc->want[t]) {
                t++;
                continue;
            }
            const int64_t nt = group_len(b, t);
            const int64_t last = key_end(b, t + nt - 1);
            const int64_t k1 = k0 + PROB_CHUNK < last ? k0 + PROB_CHUNK : last;
            if (k1 > k0 && b->acc->seq[t]->layer[b->layer])
                group_probs(p, t, nt, g, k0, k1, scr);
            t += nt;
        }
    }
}

void kvx_attn_probs_accumulate(struct kvx_threadpool *tp, const struct kvx_attn_batch *b,
                               struct kvx_attn_workspace *ws)
{
    struct probs_plan p = {.b = b, .ws = ws};
    int64_t longest = 0;
    for (int64_t t = 0; t < b->n_tok; t++)
        if (b->acc->want[t] && key_end(b, t) > longest)
            longest = key_end(b, t);
    p.n_chunks = (longest + PROB_CHUNK - 1) / PROB_CHUNK;
    p.n_tasks = p.n_chunks * b->n_head_kv;
    if (p.n_tasks == 0)
        return;
    atomic_store(&p.next, 0);
    kvx_threadpool_run(tp, probs_loop, &p);
}
