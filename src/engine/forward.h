/* engine/forward: what an architecture's forward pass gets from the engine for one step.
 *
 * A batch is a list of tokens, each with its sequence and position; the sequences' caches
 * have already been reserved for those positions (two-phase: the step cannot fail).  Scratch
 * buffers are sized at engine creation for n_batch tokens, so a step does not allocate. */
#ifndef KVX_ENGINE_FORWARD_H
#define KVX_ENGINE_FORWARD_H

#include <stdint.h>

#include "attn/causal.h"
#include "kv/pool.h"
#include "ops/cpu.h"
#include "util/threadpool.h"

struct kvx_forward_scratch {
    float *x, *xn;             /* n_batch x n_embd: residual stream, normed */
    float *q, *k, *v;          /* n_batch x (n_head*head_dim), (n_head_kv*head_dim) */
    float *attn;               /* n_batch x n_head*head_dim */
    float *gate, *up;          /* n_batch x n_ff */
    uint8_t *xq;               /* n_batch quantized input rows (largest vec-dot row) */
    size_t xq_stride;
    struct kvx_attn_workspace attn_ws;  /* batched causal attention (attn/causal.h) */
    float *rope_cs;            /* n_batch x n_rot: cos/sin per position */
    float *extra;              /* the architecture's own buffers (kvx_arch.scratch_floats), or
                                * NULL */
};

struct kvx_forward {
    /* the batch */
    int64_t n_tok;
    const int32_t *tokens;
    const int64_t *pos;
    struct kvx_kv_seq *const *seq;   /* per token */
    /* outputs: logits rows for tokens with want_logits[t] != 0, in token order */
    const uint8_t *want_logits;
    float *logits;
    /* per-slot attention probability sums for eviction policies (attn/causal.h); NULL: off */
    const struct kvx_attn_acc *acc;
    /* the machine */
    struct kvx_threadpool *tp;
    enum kvx_isa isa;
    struct kvx_forward_scratch *s;
};

#endif
