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
 * fp32 summation order. */
#ifndef KVX_ATTN_CAUSAL_H
#define KVX_ATTN_CAUSAL_H

#include <stddef.h>
#include <stdint.h>

#include "kv/pool.h"
#include "util/threadpool.h"

#define KVX_ATTN_QBLOCK 16

struct kvx_attn_batch {
    int64_t n_tok;
    const int64_t *pos;
    struct kvx_kv_seq *const *seq;
    int32_t layer;
    int32_t n_head, n_head_kv, head_dim;
    const float *q;          /* token t, head h: q + t*q_ld + h*head_dim */
    int64_t q_ld;
    float *out;              /* same layout as q */
    int64_t out_ld;
    float scale;
};

/* Buffers sized once for an engine: see kvx_attn_workspace_init. */
struct kvx_attn_workspace {
    int64_t chunk;           /* keys per shared-prefix task in prefill */
    int64_t max_parts;       /* partial results per (token, KV head) */
    float *parts;            /* n_batch x n_head_kv x max_parts x G x (2 + head_dim) */
    float *thread;           /* per thread: thread_floats */
    int64_t thread_floats;
};

/* Floats the workspace needs for batches of up to n_batch tokens and sequences of up to n_ctx
 * tokens; fills the sizes of ws (not the pointers). */
size_t kvx_attn_workspace_size(struct kvx_attn_workspace *ws, int64_t n_batch, int64_t n_ctx,
                               int n_threads, int32_t n_head, int32_t n_head_kv,
                               int32_t head_dim);
/* Point ws at `floats` (kvx_attn_workspace_size floats, 64-byte aligned). */
void kvx_attn_workspace_bind(struct kvx_attn_workspace *ws, float *floats, int64_t n_batch,
                             int32_t n_head, int32_t n_head_kv, int32_t head_dim);

/* Compute b->out for every token. */
void kvx_attn_causal(struct kvx_threadpool *tp, const struct kvx_attn_batch *b,
                     struct kvx_attn_workspace *ws);

#endif
