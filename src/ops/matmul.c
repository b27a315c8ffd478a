/* ops/matmul: the threaded driver around the per-format vec_dot and vec_dot_tile kernels, and
 * the x16 kernels of repacked matrices (ops/repack.h).
 *
 * Threads take chunks of rows (all matrices of a job concatenated, each padded to whole
 * ROW_BLOCKs) from a shared counter; each thread walks its rows a block at a time, and every
 * token of the batch passes over a block while its weights are hot in L1.  One token (decode)
 * is a matvec that streams W: one vec_dot per row, or one x16 call for the chunk's groups of a
 * repacked matrix.  Several tokens (prefill) are compute bound: the format's register tile
 * (vec_dot_tile, up to KVX_QUANT_TILE_MAX rows x tokens) reuses each unpacked weight block for
 * 4 tokens and each activation block for 4 rows; formats without a tile loop over vec_dot; a
 * repacked matrix goes 4 groups x 4 tokens per x16 call. */
#include "ops/matmul.h"

#include "ops/repack.h"
#include "util/threadpool.h"

/* Rows of W kept hot in L1/L2 while every token of the batch passes over them (a multiple of
 * KVX_X16: chunks of a repacked matrix start at a group). */
#define ROW_BLOCK 16
/* Rows of a repacked matrix per x16 call in a batch of several tokens (4 groups). */
#define X16_ROWS 64
_Static_assert(ROW_BLOCK % KVX_X16 == 0 && X16_ROWS % KVX_X16 == 0, "chunks start at groups");

size_t kvx_matmul_xq_row_bytes(const struct kvx_mat *w)
{
    size_t bytes = 0;
    kvx_dtype_row_bytes(kvx_quant_vec_dot_type((enum kvx_dtype)w->type), w->n_in, &bytes);
    return bytes;
}

void kvx_matmul_quantize_rows(const struct kvx_mat *w, enum kvx_isa isa, const float *x,
                              int64_t ldx, int64_t t0, int64_t t1, uint8_t *xq, size_t xq_stride)
{
    const struct kvx_quant_kernels *k =
        kvx_quant_kernels(kvx_quant_vec_dot_type((enum kvx_dtype)w->type), isa);
    for (int64_t t = t0; t < t1; t++)
        k->from_float(x + t * ldx, xq + (size_t)t * xq_stride, w->n_in);
}

/* Rows [r0, r1) of matrix m for every token, in register tiles: per row block, tokens go in
 * groups of KVX_QUANT_TILE_MAX and, inside a group, the block's rows in groups of as many, so
 * that the group's activations (a few KB) stay in L1 across the block and each output line of
 * ROW_BLOCK floats is completed while hot. */
static void matmul_rows_tiled(const struct kvx_matmul_job *job, int m, int64_t r0, int64_t r1,
                              const struct kvx_quant_kernels *k)
{
    const struct kvx_mat *w = job->w[m];
    const int64_t T = KVX_QUANT_TILE_MAX;
    for (int64_t rb = r0; rb < r1; rb += ROW_BLOCK) {
        const int64_t re = rb + ROW_BLOCK < r1 ? rb + ROW_BLOCK : r1;
        for (int64_t t = 0; t < job->n_tok; t += T) {
            const int nc = (int)(job->n_tok - t < T ? job->n_tok - t : T);
            const uint8_t *xt = job->xq[m] + (size_t)t * job->xq_stride[m];
            float *yt = job->y[m] + t * job->ldy[m];
            for (int64_t r = rb; r < re; r += T) {
                const int nr = (int)(re - r < T ? re - r : T);
                k->vec_dot_tile(w->n_in, nr, nc, &yt[r], job->ldy[m],
                                w->data + (size_t)r * w->row_bytes, w->row_bytes, xt,
                                job->xq_stride[m]);
            }
        }
    }
}

static void matmul_rows_plain(const struct kvx_matmul_job *job, int m, int64_t r0, int64_t r1,
                              const struct kvx_quant_kernels *k)
{
    const struct kvx_mat *w = job->w[m];
    if (job->n_tok > 1 && k->vec_dot_tile) {
        matmul_rows_tiled(job, m, r0, r1, k);
        return;
    }
    for (int64_t rb = r0; rb < r1; rb += ROW_BLOCK) {
        const int64_t re = rb + ROW_BLOCK < r1 ? rb + ROW_BLOCK : r1;
        for (int64_t t = 0; t < job->n_tok; t++) {
            const uint8_t *xt = job->xq[m] + (size_t)t * job->xq_stride[m];
            float *yt = job->y[m] + t * job->ldy[m];
            for (int64_t r = rb; r < re; r++)
                k->vec_dot(w->n_in, &yt[r], w->data + (size_t)r * w->row_bytes, xt);
        }
    }
}

/* Rows [r0, r1) of a repacked matrix, r0 at a group: the whole groups through the x16 kernel
 * (one call for one token; for a batch, X16_ROWS rows at a time while the tokens pass over them
 * 4 by 4), the rows past the last group through the row kernels. */
static void matmul_rows_x16(const struct kvx_matmul_job *job, int m, int64_t r0, int64_t r1,
                            const struct kvx_quant_kernels *k)
{
    const struct kvx_mat *w = job->w[m];
    const int64_t packed = w->n_out / KVX_X16 * KVX_X16, g_end = r1 < packed ? r1 : packed;
    const kvx_x16_matmul_fn fn = kvx_x16_matmul(job->isa);
    const int64_t step = job->n_tok == 1 ? g_end - r0 : X16_ROWS;
    for (int64_t rb = r0; rb < g_end; rb += step) {
        const int64_t re = rb + step < g_end ? rb + step : g_end;
        for (int64_t t = 0; t < job->n_tok; t += 4) {
            const int nc = (int)(job->n_tok - t < 4 ? job->n_tok - t : 4);
            fn((enum kvx_dtype)w->type, w->n_in, w->data + (size_t)rb * w->row_bytes,
               (re - rb) / KVX_X16, nc, job->xq[m] + (size_t)t * job->xq_stride[m],
               job->xq_stride[m], job->y[m] + t * job->ldy[m] + rb, job->ldy[m]);
        }
    }
    if (g_end < r1)
        matmul_rows_plain(job, m, g_end > r0 ? g_end : r0, r1, k);
}

static void matmul_rows(const struct kvx_matmul_job *job, int m, int64_t r0, int64_t r1,
                        const struct kvx_quant_kernels *k)
{
    if (job->w[m]->x16)
        matmul_rows_x16(job, m, r0, r1, k);
    else
        matmul_rows_plain(job, m, r0, r1, k);
}

/* Rows of matrix m in the job's row space: each matrix starts at a multiple of ROW_BLOCK. */
static int64_t padded_rows(const struct kvx_mat *w)
{
    return (w->n_out + ROW_BLOCK - 1) / ROW_BLOCK * ROW_BLOCK;
}

void kvx_matmul_part(struct kvx_matmul_job *job, int ith, int nth)
{
    (void)ith;
    /* The concatenated rows of all matrices (each padded to whole row blocks), in chunks of
     * whole row blocks. */
    int64_t total = 0;
    for (int m = 0; m < job->n_mats; m++)
        total += padded_rows(job->w[m]);
    const int64_t blocks = (total + ROW_BLOCK - 1) / ROW_BLOCK;
    int64_t per = blocks / (4 * (int64_t)(nth > 0 ? nth : 1));
    const int64_t chunk = (per > 0 ? per : 1) * ROW_BLOCK;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        const int64_t b = c * chunk, e = b + chunk < total ? b + chunk : total;
        if (b >= total)
            break;
        int64_t base = 0;
        for (int m = 0; m < job->n_mats && base < e; m++) {
            const int64_t n = job->w[m]->n_out;
            const int64_t lo = b > base ? b - base : 0;
            const int64_t hi = e - base < n ? e - base : n;
            if (lo < hi)
                matmul_rows(job, m, lo, hi,
                            kvx_quant_kernels((enum kvx_dtype)job->w[m]->type, job->isa));
            base += padded_rows(job->w[m]);
        }
    }
}

void kvx_mat_row_to_float(const struct kvx_mat *w, int64_t r, float *dst)
{
    if (w->x16) {
        kvx_x16_row_to_float((enum kvx_dtype)w->type, w->n_in, w->n_out, w->data, r, dst);
        return;
    }
    kvx_quant_kernels((enum kvx_dtype)w->type, KVX_ISA_SCALAR)
        ->to_float(w->data + (size_t)r * w->row_bytes, dst, w->n_in);
}
