/* attn/causal: task planning, execution and merge of batched causal attention. */
#include "attn/causal.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "attn/attn.h"

/* Shared-prefix chunks per token are capped so that the partial-result buffer stays bounded
 * for any context length; the chunk length grows instead. */
#define MAX_CHUNKS 16
#define MIN_CHUNK 1024

struct plan {
    const struct kvx_attn_batch *b;
    struct kvx_attn_workspace *ws;
    int64_t qblock;          /* tokens per block (1 when the batch is not one run) */
    int64_t n_blocks;
    int64_t chunk;           /* keys per shared-prefix task */
    int64_t n_parts;         /* chunks + 2 (the window head, the triangle) */
    int64_t n_tasks;
    atomic_long next;
};

size_t kvx_attn_workspace_size(struct kvx_attn_workspace *ws, int64_t n_batch, int64_t n_ctx,
                               int n_threads, int32_t n_head, int32_t n_head_kv,
                               int32_t head_dim)
{
    const int64_t G = n_head / n_head_kv;
    ws->chunk = (n_ctx + MAX_CHUNKS - 1) / MAX_CHUNKS;
    ws->chunk = ws->chunk < MIN_CHUNK ? MIN_CHUNK : (ws->chunk + 15) / 16 * 16;
    /* decode splits a history into at most 5 * n_threads chunks (make_plan) */
    ws->max_parts = (MAX_CHUNKS > 5 * n_threads ? MAX_CHUNKS : 5 * n_threads) + 2;
    const int64_t nq = KVX_ATTN_QBLOCK * G;
    /* per thread: scores for nq queries over a chunk (or a decode chunk up to n_ctx keys),
     * the gathered queries, and one task's m, l, acc */
    const int64_t keys = n_ctx > ws->chunk ? n_ctx : ws->chunk;
    ws->thread_floats = kvx_attn_scratch_floats((int32_t)nq, ws->chunk, head_dim);
    const int64_t dec = kvx_attn_scratch_floats((int32_t)G, keys, head_dim);
    ws->thread_floats = ws->thread_floats > dec ? ws->thread_floats : dec;
    ws->thread_floats += nq * head_dim + nq * (2 + head_dim);
    ws->thread_floats = (ws->thread_floats + 15) / 16 * 16;
    const int64_t parts = n_batch * n_head_kv * ws->max_parts * G * (2 + head_dim);
    const int64_t lse = (n_batch * n_head + 15) / 16 * 16;
    return (size_t)(parts + (int64_t)n_threads * ws->thread_floats + lse);
}

void kvx_attn_workspace_bind(struct kvx_attn_workspace *ws, float *floats, int64_t n_batch,
                             int32_t n_head, int32_t n_head_kv, int32_t head_dim)
{
    const int64_t G = n_head / n_head_kv;
    ws->lse = floats;
    ws->parts = floats + (n_batch * n_head + 15) / 16 * 16;
    ws->thread = ws->parts + n_batch * n_head_kv * ws->max_parts * G * (2 + head_dim);
}

/* The slot of token t's own key: its last visible one. */
static int64_t key_slot(const struct kvx_attn_batch *b, int64_t t)
{
    return kvx_kv_seq_slot(b->seq[t], b->layer, b->pos[t]);
}

/* The first slot token t sees (0 but in a window layer). */
static int64_t first_slot(const struct kvx_attn_batch *b, int64_t t)
{
    return kvx_kv_seq_first_slot(b->seq[t], b->layer, b->pos[t]);
}

/* A block of a plan: tokens [t0, t0 + nt).  Every token of it sees keys [lo, hi): from the
 * last token's first slot to the first token's own slot (empty when a window is shorter than
 * the block).  Those are cut into chunks shared by the whole block; the rest of token t's
 * keys are its "head" [first_slot(t), min(lo, hi)) and its "triangle" [max(lo, hi), slot(t)]. */
struct block {
    int64_t t0, nt, lo, hi;
};

static struct block block_of(const struct plan *p, int64_t blk)
{
    const struct kvx_attn_batch *b = p->b;
    struct block k;
    k.t0 = blk * p->qblock;
    k.nt = b->n_tok - k.t0 < p->qblock ? b->n_tok - k.t0 : p->qblock;
    k.lo = first_slot(b, k.t0 + k.nt - 1);
    k.hi = key_slot(b, k.t0);
    if (k.lo > k.hi)
        k.lo = k.hi;   /* no shared keys: heads and triangles cover everything */
    return k;
}

/* Is the batch one run of consecutive positions of one sequence? */
static bool one_run(const struct kvx_attn_batch *b)
{
    for (int64_t t = 1; t < b->n_tok; t++)
        if (b->seq[t] != b->seq[0] || b->pos[t] != b->pos[0] + t)
            return false;
    return true;
}

static void make_plan(struct plan *p, const struct kvx_attn_batch *b,
                      struct kvx_attn_workspace *ws, int nth)
{
    memset(p, 0, sizeof *p);
    p->b = b;
    p->ws = ws;
    p->qblock = b->n_tok > 1 && one_run(b) ? KVX_ATTN_QBLOCK : 1;
    p->n_blocks = (b->n_tok + p->qblock - 1) / p->qblock;
    int64_t longest = 0; /* the longest shared key range of any block */
    for (int64_t blk = 0; blk < p->n_blocks; blk++) {
        const struct block k = block_of(p, blk);
        longest = k.hi - k.lo > longest ? k.hi - k.lo : longest;
    }
    p->chunk = ws->chunk;
    if (b->n_tok == 1) {
        /* decode: enough chunks of at least 256 keys to give every thread work */
        int64_t want = (4 * (int64_t)nth + b->n_head_kv - 1) / b->n_head_kv;
        while ((want * b->n_head_kv) % nth && want < 5 * (int64_t)nth)
            want++;   /* as many tasks per thread: no thread left alone with the last one */
        int64_t c = (longest + want - 1) / (want ? want : 1);
        c = c < 256 ? 256 : (c + 15) / 16 * 16;
        p->chunk = c;
    }
    int64_t n_chunks = (longest + p->chunk - 1) / p->chunk;
    if (n_chunks + 1 > ws->max_parts) { /* cannot happen with the sizes above; stay safe */
        p->chunk = (longest + ws->max_parts - 2) / (ws->max_parts - 1);
        p->chunk = (p->chunk + 15) / 16 * 16;
        n_chunks = (longest + p->chunk - 1) / p->chunk;
    }
    p->n_parts = n_chunks + 2;
    p->n_tasks = p->n_blocks * b->n_head_kv * p->n_parts;
    atomic_store(&p->next, 0);
}

/* Values per head: the layer's v_dim (MLA's naive form has k_dim != v_dim). */
static int64_t v_dim_of(const struct kvx_attn_batch *b)
{
    return b->v_dim > 0 ? b->v_dim : b->head_dim;
}

/* Where the partial result of (token t, KV head g, part r) lives. */
static void part_slot(const struct plan *p, int64_t t, int64_t g, int64_t r, float **m, float **l,
                      float **acc)
{
    const int64_t G = p->b->n_head / p->b->n_head_kv, vd = v_dim_of(p->b);
    const int64_t base = ((t * p->b->n_head_kv + g) * p->n_parts + r) * G;
    const int64_t stride = p->b->n_tok * p->b->n_head_kv * p->n_parts * G;
    *m = p->ws->parts + base;
    *l = p->ws->parts + stride + base;
    *acc = p->ws->parts + 2 * stride + base * vd;
}

/* One shared-prefix chunk for all tokens of a block: their queries are gathered into one
 * n_q = tokens x G matrix so each K/V vector is loaded once for all of them. */
static void run_chunk(const struct plan *p, int64_t blk, int64_t g, int64_t r, float *scr)
{
    const struct kvx_attn_batch *b = p->b;
    const int64_t G = b->n_head / b->n_head_kv, hd = b->head_dim, vd = v_dim_of(b);
    const struct block k = block_of(p, blk);
    const int64_t t0 = k.t0, nt = k.nt;
    const int64_t k0 = k.lo + r * p->chunk, k1 = k0 + p->chunk < k.hi ? k0 + p->chunk : k.hi;
    const int64_t nq = nt * G;
    float *q = scr, *m = q + nq * hd, *l = m + nq, *acc = l + nq, *scores = acc + nq * vd;
    if (k0 >= k1) {
        for (int64_t i = 0; i < nt; i++) {
            float *pm, *pl, *pa;
            part_slot(p, t0 + i, g, r, &pm, &pl, &pa);
            for (int64_t j = 0; j < G; j++) {
                pm[j] = -INFINITY;
                pl[j] = 0;
            }
            memset(pa, 0, (size_t)(G * vd) * sizeof *pa);
        }
        return;
    }
    for (int64_t i = 0; i < nt; i++)
        memcpy(q + i * G * hd, b->q + (t0 + i) * b->q_ld + g * G * hd, (size_t)(G * hd) * sizeof *q);
    struct kvx_kv_view view;
    kvx_kv_seq_view(b->seq[t0], b->layer, &view);
    kvx_attn_partial(&view, (int32_t)g, k0, k1, q, (int32_t)nq, b->scale, scores, m, l, acc);
    for (int64_t i = 0; i < nt; i++) {
        float *pm, *pl, *pa;
        part_slot(p, t0 + i, g, r, &pm, &pl, &pa);
        memcpy(pm, m + i * G, (size_t)G * sizeof *pm);
        memcpy(pl, l + i * G, (size_t)G * sizeof *pl);
        memcpy(pa, acc + i * G * vd, (size_t)(G * vd) * sizeof *pa);
    }
}

/* The keys of a block's tokens outside its shared chunks: token t's window head
 * [first_slot(t), lo) in part n_parts - 2 and its causal triangle [hi, slot(t)] in part
 * n_parts - 1 (an empty range gives m = -inf, l = 0). */
static void run_edges(const struct plan *p, int64_t blk, int64_t g, int edge, float *scr)
{
    const struct kvx_attn_batch *b = p->b;
    const int64_t G = b->n_head / b->n_head_kv, hd = b->head_dim;
    const struct block k = block_of(p, blk);
    for (int64_t i = 0; i < k.nt; i++) {
        const int64_t t = k.t0 + i;
        struct kvx_kv_view view;
        kvx_kv_seq_view(b->seq[t], b->layer, &view);
        float *pm, *pl, *pa;
        part_slot(p, t, g, p->n_parts - 2 + edge, &pm, &pl, &pa);
        int64_t k0 = first_slot(b, t), k1 = k.lo;
        if (edge) {   /* slot(t) = hi + (pos_t - pos_t0) in a run of one sequence */
            k0 = k0 > k.hi ? k0 : k.hi;
            k1 = k.hi + (b->pos[t] - b->pos[k.t0]) + 1;
        }
        kvx_attn_partial(&view, (int32_t)g, k0, k1, b->q + t * b->q_ld + g * G * hd, (int32_t)G,
                         b->scale, scr, pm, pl, pa);
    }
}

static void task_loop(void *ctx, int ith, int nth)
{
    (void)nth;
    struct plan *p = ctx;
    float *scr = p->ws->thread + (int64_t)ith * p->ws->thread_floats;
    const int64_t hkv = p->b->n_head_kv;
    for (;;) {
        const int64_t task = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (task >= p->n_tasks)
            break;
        const int64_t r = task % p->n_parts, bg = task / p->n_parts;
        const int64_t blk = bg / hkv, g = bg % hkv;
        if (r >= p->n_parts - 2)
            run_edges(p, blk, g, (int)(r - (p->n_parts - 2)), scr);
        else
            run_chunk(p, blk, g, r, scr);
    }
}

/* lse_i = M + log(sum_r exp(m_ir - M) l_ir), M = max_r m_ir: the log of the softmax
 * denominator of query i over all its parts (-inf when every part is empty). */
static void merge_lse(int64_t n_parts, int64_t n_q, const float *m, const float *l, float *lse)
{
    for (int64_t i = 0; i < n_q; i++) {
        float mx = -INFINITY;
        for (int64_t r = 0; r < n_parts; r++)
            mx = m[r * n_q + i] > mx ? m[r * n_q + i] : mx;
        double den = 0;
        for (int64_t r = 0; mx > -INFINITY && r < n_parts; r++)
            if (m[r * n_q + i] > -INFINITY)
                den += (double)expf(m[r * n_q + i] - mx) * l[r * n_q + i];
        lse[i] = den > 0 ? mx + (float)log(den) : -INFINITY;
    }
}

static void merge_loop(void *ctx, int ith, int nth)
{
    struct plan *p = ctx;
    const struct kvx_attn_batch *b = p->b;
    const int64_t G = b->n_head / b->n_head_kv, vd = v_dim_of(b);
    int64_t lo, hi;
    kvx_split_range(b->n_tok * b->n_head_kv, 1, ith, nth, &lo, &hi);
    for (int64_t tg = lo; tg < hi; tg++) {
        const int64_t t = tg / b->n_head_kv, g = tg % b->n_head_kv;
        float *pm, *pl, *pa;
        part_slot(p, t, g, 0, &pm, &pl, &pa);
        kvx_attn_merge((int32_t)p->n_parts, (int32_t)G, (int32_t)vd, pm, pl, pa,
                       b->out + t * b->out_ld + g * G * vd);
        if (b->acc && b->acc->want[t])
            merge_lse(p->n_parts, G, pm, pl, p->ws->lse + t * b->n_head + g * G);
    }
}

void kvx_attn_causal(struct kvx_threadpool *tp, const struct kvx_attn_batch *b,
                     struct kvx_attn_workspace *ws)
{
    struct plan p;
    make_plan(&p, b, ws, kvx_threadpool_size(tp));
    kvx_threadpool_run(tp, task_loop, &p);
    kvx_threadpool_run_items(tp, merge_loop, &p, b->n_tok * b->n_head_kv);
    if (b->acc)
        kvx_attn_probs_accumulate(tp, b, ws);
}
