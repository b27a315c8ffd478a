/* model/steps: parallel steps that the forward passes of several architectures share, each
 * one or two regions over the engine's threads (engine/forward.h).
 *
 *   kvx_step_rows      call fn(ctx, t) for every token t of the batch, the tokens split into
 *                      contiguous ranges, one per thread (per-token work: norms, RoPE, ...).
 *   kvx_step_matmul    y_t = x_t W for every token t of the batch: the input rows are first
 *                      quantized to W's vec-dot type into the engine's xq buffer (one region),
 *                      then W's rows are split across the threads (ops/matmul.h).
 *   kvx_step_logits    the output head: RMSNorm (m->output_norm) of the rows of x whose logits
 *                      are wanted, then logits = those rows times m->output.
 *   kvx_step_moe       mixture-of-experts dispatch: every expert runs once, over the rows of
 *                      the tokens that chose it (gathered), and its output is added to their
 *                      rows, weighted: acc_t += w_tk · expert_e(x_t) for each choice k of t.
 *   kvx_step_store_kv  write every token's K and V rows into its sequence's cache in `layer`.
 *                      All tokens of one sequence go to the same thread, in batch order:
 *                      codecs keep per-sequence state that puts update in slot order (kivi)
 *                      and packed codecs share bytes between the tokens of a tile (rot3/rot4).
 *   kvx_step_store_attend  the K/V store, then causal attention (attn/causal.h), with decode's
 *                      semantics whatever the batch: when the layer's codecs keep per-sequence
 *                      state (kivi keeps its newest keys in f16 until their group fills), a
 *                      query at position p must read the keys as they stand after writing p,
 *                      not after writing the whole batch.  Such layers store and attend in
 *                      rounds of tokens of distinct sequences (a prefill: one token a round; a
 *                      multi-session decode: one round), so every logit is the same, up to
 *                      fp32 summation order, for any prefill batch size.  Other layers store
 *                      the whole batch, then attend once.
 *
 * model/llama.c keeps its own fused steps (norm + quantize, several matrices per job). */
#ifndef KVX_MODEL_STEPS_H
#define KVX_MODEL_STEPS_H

#include <stdint.h>

#include "attn/causal.h"
#include "engine/forward.h"
#include "model/model.h"
#include "ops/matmul.h"

typedef void (*kvx_row_fn)(void *ctx, int64_t t);
void kvx_step_rows(struct kvx_forward *f, kvx_row_fn fn, void *ctx);

/* x: n_in floats per token, ldx apart; y: n_out floats per token, ldy apart. */
void kvx_step_matmul(struct kvx_forward *f, const struct kvx_mat *w, const float *x, int64_t ldx,
                     float *y, int64_t ldy);

/* Norms the wanted rows of f->s->x into f->s->xn and writes their logits (in token order) to
 * f->logits; returns how many rows it wrote. */
int64_t kvx_step_logits(const struct kvx_model *m, struct kvx_forward *f);

/* A batch's routing: token t chose experts route_e[t*top_k + k] (ids outside [0, n_expert) —
 * a skip expert — choose nothing) with weights route_w[t*top_k + k].  `expert` computes expert
 * e on the n gathered rows of xbuf into n rows of ybuf (f->n_tok is n meanwhile: the steps
 * above work on them); then acc_t += w · ybuf_j for each row j, in expert order. */
struct kvx_moe_dispatch {
    int32_t n_expert, top_k;
    const int32_t *route_e;
    const float *route_w;
    const float *x;            /* input rows, dim floats apart */
    float *acc;                /* output rows, dim floats apart */
    int64_t dim;
    float *xbuf, *ybuf;        /* n_tok rows of dim floats each */
    int32_t *list_t, *list_k;  /* n_tok each: the gathered rows' tokens and choices */
    void (*expert)(void *ctx, int32_t e, int64_t n);
    void *ctx;
};
void kvx_step_moe(struct kvx_forward *f, const struct kvx_moe_dispatch *d);

/* Carve n scratch regions of sizes[i] floats from `base`, each rounded up to 16 floats (64
 * bytes): *slots[i] = base + offset (nothing is written when base is NULL).  Returns the
 * floats they take. */
int64_t kvx_step_carve(float *base, const int64_t *sizes, float **const *slots, size_t n);

/* A batch's K and V rows: token t's at k + t*k_ld and v + t*v_ld (the layer's n_kv_heads x
 * head dim, and x v_dim); v NULL where the layer stores none (LATENT). */
struct kvx_kv_rows {
    const float *k, *v;
    int64_t k_ld, v_ld;
};
void kvx_step_store_kv(struct kvx_forward *f, int32_t layer, const struct kvx_kv_rows *r);

/* ab: the whole batch (f's tokens, positions and sequences).  r NULL: nothing to store (a
 * layer reading another layer's cache, which was written for the whole batch): one attention
 * over the batch. */
void kvx_step_store_attend(struct kvx_forward *f, int32_t layer, const struct kvx_kv_rows *r,
                           const struct kvx_attn_batch *ab);

#endif
