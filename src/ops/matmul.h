/* ops/matmul: weight matrix × activations, for a batch of tokens, split across threads.
 *
 *   y[t][r] = sum_c W[r][c] * x[t][c]        r < n_out, t < n_tok, c < n_in
 *
 * W is a GGUF tensor (n_in = ne[0] contiguous, n_out = ne[1] rows) in any supported format;
 * x is first quantized to W's vec-dot type (ops/quant.h), once per batch, so that decode is a
 * stream over W at memory bandwidth and prefill reuses each cached block of W rows for every
 * token.  Several matrices that read the same input (Q, K, V; gate, up) run as one job whose
 * rows are split across threads together.  A matrix may be stored in the file's row layout or,
 * with x16 set, interleaved 16 rows at a time (ops/repack.h); only this module and
 * kvx_mat_row_to_float read its rows. */
#ifndef KVX_OPS_MATMUL_H
#define KVX_OPS_MATMUL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/quant.h"

struct kvx_mat {
    uint32_t type;             /* enum kvx_dtype */
    int64_t n_in, n_out;
    size_t row_bytes;
    const uint8_t *data;
    bool x16;                  /* rows interleaved in groups of 16 (ops/repack.h) */
};

/* Row r of w as n_in floats, in either layout (embedding lookups). */
void kvx_mat_row_to_float(const struct kvx_mat *w, int64_t r, float *dst);

#define KVX_MATMUL_MAX 4

struct kvx_matmul_job {
    int n_mats;
    const struct kvx_mat *w[KVX_MATMUL_MAX];
    float *y[KVX_MATMUL_MAX];          /* y[m] + t*ldy[m] + r */
    int64_t ldy[KVX_MATMUL_MAX];
    const uint8_t *xq[KVX_MATMUL_MAX]; /* input rows in w[m]'s vec-dot type */
    size_t xq_stride[KVX_MATMUL_MAX];  /* bytes between tokens */
    int64_t n_tok;
    enum kvx_isa isa;
    atomic_llong next;                 /* the next chunk of rows to take; 0 before the region */
};

/* Thread ith of nth computes rows of the job (call inside a parallel region, with job->next
 * 0 at its start).  Rows go out in chunks of whole row blocks, about 4 per thread, taken from
 * a shared counter: a thread the OS preempts does not hold up the others, which take its
 * remaining chunks.  Any thread may compute any chunk; the result does not depend on it. */
void kvx_matmul_part(struct kvx_matmul_job *job, int ith, int nth);

/* Bytes of one input row of n_in floats in w's vec-dot type. */
size_t kvx_matmul_xq_row_bytes(const struct kvx_mat *w);

/* Quantize rows [t0, t1) of x (n_in floats each, stride ldx) into w's vec-dot type. */
void kvx_matmul_quantize_rows(const struct kvx_mat *w, enum kvx_isa isa, const float *x,
                              int64_t ldx, int64_t t0, int64_t t1, uint8_t *xq, size_t xq_stride);

#endif
