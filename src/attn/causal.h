/* attn/causal: causal GQA attention for one layer and a batch of tokens, read from the KV
 * pool, spread over the engine's threads.
 *
 * Each token t (sequence seq[t], position pos[t]) attends to keys [0, pos[t]] of its
 * sequence.  Consecutive tokens of one sequence (a prefill chunk) are grouped into blocks of
 * up to KVX_ATTN_QBLOCK tokens whose queries share every K/V load:
 *   - the keys before the block's first position are visible to all its tokens: they are cut
 *     into chunks, and each (block, KV head, chunk) task runs kvx_attn_partial with the
 *     block's whole query group (tokens x heads sharing the KV head) at once;
 *   - the keys inside the block (the causal triangle) form one more task per (block, KV
 *     head), each token over its own prefix of them;
 *   - the partial softmax results of a token's chunks and triangle are merged exactly
 *     (kvx_attn_merge).
 * A decode step is a block of one token whose history is cut into enough chunks to occupy
 * every thread (flash-decoding).  The result equals one softmax over all visible keys up to
 * fp32 summation order.
 *
 * Keys are addressed by slot: token t sees slots [0, kvx_kv_seq_slot(seq[t], layer, pos[t])],
 * which are its positions [0, pos[t]] until eviction compacts the layer (kv/pool.h).
 *
 * Optionally (b->acc, for eviction policies: kv/evict.h) the softmax probabilities of chosen
 * tokens are summed per slot: for each token t with want[t] and KV head g,
 *   row[j] += sum over the G query heads h of g of  exp(scale q_{t,h} · k_j - lse_{t,h})
 * for every slot j the token sees, lse being the log-sum-exp the attention itself found.
 * This costs one more qk pass for the chosen tokens (no pv); nothing when b->acc is NULL. */
#ifndef KVX_ATTN_CAUSAL_H
#define KVX_ATTN_CAUSAL_H

#include <stddef.h>
#include <stdint.h>

#include "kv/pool.h"
#include "util/threadpool.h"

#define KVX_ATTN_QBLOCK 16

/* One sequence's per-slot probability sums: layer l, KV head g, slot j at
 * layer[l][g * ld + j] (ld >= the slots any token of the step sees); layer[l] NULL: layer l
 * is not summed. */
struct kvx_attn_acc_seq {
    float *const *layer;
    int64_t ld;
};

struct kvx_attn_acc {
    const uint8_t *want;                          /* per token: add its probabilities */
    const struct kvx_attn_acc_seq *const *seq;    /* per token: its sequence's sums */
};

struct kvx_attn_batch {
    int64_t n_tok;
    const int64_t *pos;
    struct kvx_kv_seq *const *seq;
    int32_t layer;
    int32_t n_head, n_head_kv, head_dim;
    int32_t v_dim;           /* values per head (the layer's v_dim); 0: head_dim.  At most the
                                head_dim the workspace was sized for. */
    const float *q;          /* token t, head h: q + t*q_ld + h*head_dim */
    int64_t q_ld;
    float *out;              /* token t, head h: out + t*out_ld + h*v_dim */
    int64_t out_ld;
    float scale;
    const struct kvx_attn_acc *acc;   /* probability sums to add to; NULL: none */
};

/* Buffers sized once for an engine: see kvx_attn_workspace_init. */
struct kvx_attn_workspace {
    int64_t chunk;           /* keys per shared-prefix task in prefill */
    int64_t max_parts;       /* partial results per (token, KV head) */
    float *parts;            /* n_batch x n_head_kv x max_parts x G x (2 + head_dim) */
    float *thread;           /* per thread: thread_floats */
    int64_t thread_floats;
    float *lse;              /* n_batch x n_head log-sum-exps, for the probability sums */
};

/* Floats the workspace needs for batches of up to n_batch tokens and sequences of up to n_ctx
 * tokens; fills the sizes of ws (not the pointers). */
size_t kvx_attn_workspace_size(struct kvx_attn_workspace *ws, int64_t n_batch, int64_t n_ctx,
                               int n_threads, int32_t n_head, int32_t n_head_kv,
                               int32_t head_dim);
/* Point ws at `floats` (kvx_attn_workspace_size floats, 64-byte aligned). */
void kvx_attn_workspace_bind(struct kvx_attn_workspace *ws, float *floats, int64_t n_batch,
                             int32_t n_head, int32_t n_head_kv, int32_t head_dim);

/* Compute b->out for every token (and the probability sums when b->acc). */
void kvx_attn_causal(struct kvx_threadpool *tp, const struct kvx_attn_batch *b,
                     struct kvx_attn_workspace *ws);

/* The probability sums alone (attn/probs.c), given ws->lse of every wanted token: what
 * kvx_attn_causal runs after the attention when b->acc is set. */
void kvx_attn_probs_accumulate(struct kvx_threadpool *tp, const struct kvx_attn_batch *b,
                               struct kvx_attn_workspace *ws);

#endif
