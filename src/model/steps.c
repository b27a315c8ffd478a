/* model/steps: see steps.h. */
#include "model/steps.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "kv/layout.h"
#include "kv/pool.h"
#include "ops/ops.h"
#include "util/threadpool.h"

struct rows_step {
    const struct kvx_forward *f;
    kvx_row_fn fn;
    void *ctx;
};

static void rows_part(void *ctx, int ith, int nth)
{
    const struct rows_step *s = ctx;
    int64_t b, e;
    kvx_split_range(s->f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++)
        s->fn(s->ctx, t);
}

void kvx_step_rows(struct kvx_forward *f, kvx_row_fn fn, void *ctx)
{
    struct rows_step s = {.f = f, .fn = fn, .ctx = ctx};
    kvx_threadpool_run_items(f->tp, rows_part, &s, f->n_tok);
}

struct matmul_step {
    struct kvx_forward *f;
    struct kvx_matmul_job job;
    const float *x;
    int64_t ldx;
};

static void quantize_part(void *ctx, int ith, int nth)
{
    struct matmul_step *s = ctx;
    int64_t b, e;
    kvx_split_range(s->f->n_tok, 1, ith, nth, &b, &e);
    kvx_matmul_quantize_rows(s->job.w[0], s->f->isa, s->x, s->ldx, b, e, s->f->s->xq,
                             s->f->s->xq_stride);
}

static void matmul_part(void *ctx, int ith, int nth)
{
    kvx_matmul_part(&((struct matmul_step *)ctx)->job, ith, nth);
}

void kvx_step_matmul(struct kvx_forward *f, const struct kvx_mat *w, const float *x, int64_t ldx,
                     float *y, int64_t ldy)
{
    struct matmul_step s = {.f = f, .x = x, .ldx = ldx};
    s.job.n_mats = 1;
    s.job.w[0] = w;
    s.job.y[0] = y;
    s.job.ldy[0] = ldy;
    s.job.xq[0] = f->s->xq;
    s.job.xq_stride[0] = f->s->xq_stride;
    s.job.n_tok = f->n_tok;
    s.job.isa = f->isa;
    atomic_init(&s.job.next, 0);
    kvx_threadpool_run_items(f->tp, quantize_part, &s, f->n_tok);
    kvx_threadpool_run(f->tp, matmul_part, &s);
}

int64_t kvx_step_logits(const struct kvx_model *m, struct kvx_forward *f)
{
    const int64_t D = m->hp.n_embd;
    int64_t n_out = 0;
    for (int64_t t = 0; t < f->n_tok; t++)
        if (f->want_logits[t]) {
            kvx_rmsnorm(f->s->xn + n_out * D, f->s->x + t * D, m->output_norm, D, m->hp.norm_eps);
            n_out++;
        }
    if (n_out == 0)
        return 0;
    const int64_t n_tok = f->n_tok;
    f->n_tok = n_out;
    kvx_step_matmul(f, &m->output, f->s->xn, D, f->logits, m->hp.n_vocab);
    f->n_tok = n_tok;
    return n_out;
}

void kvx_step_moe(struct kvx_forward *f, const struct kvx_moe_dispatch *d)
{
    const int64_t n_tok = f->n_tok, D = d->dim, K = d->top_k;
    for (int32_t e = 0; e < d->n_expert; e++) {
        int64_t n = 0;
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t k = 0; k < K; k++)
                if (d->route_e[t * K + k] == e) {
                    d->list_t[n] = (int32_t)t;
                    d->list_k[n] = (int32_t)k;
                    memcpy(d->xbuf + n * D, d->x + t * D, (size_t)D * sizeof(float));
                    n++;
                }
        if (n == 0)
            continue;
        f->n_tok = n;
        d->expert(d->ctx, e, n);
        f->n_tok = n_tok;
        for (int64_t j = 0; j < n; j++) {
            const int64_t t = d->list_t[j];
            const float w = d->route_w[t * K + d->list_k[j]];
            float *acc = d->acc + t * D;
            const float *y = d->ybuf + j * D;
            for (int64_t i = 0; i < D; i++)
                acc[i] += w * y[i];
        }
    }
}

int64_t kvx_step_carve(float *base, const int64_t *sizes, float **const *slots, size_t n)
{
    int64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (base)
            *slots[i] = base + off;
        off += (sizes[i] + 15) / 16 * 16;
    }
    return off;
}

struct store_step {
    struct kvx_forward *f;
    int32_t layer;
    const struct kvx_kv_rows *r;
};

static void store_part(void *ctx, int ith, int nth)
{
    const struct store_step *s = ctx;
    const struct kvx_forward *f = s->f;
    for (int64_t t = 0; t < f->n_tok; t++) {   /* the sequence's thread: a hash of its address */
        const uint64_t h = (uint64_t)(uintptr_t)f->seq[t] * 0x9e3779b97f4a7c15ull;
        if ((int)((h >> 32) % (uint64_t)nth) != ith)
            continue;
        kvx_kv_seq_write(f->seq[t], s->layer, f->pos[t], s->r->k + t * s->r->k_ld,
                         s->r->v ? s->r->v + t * s->r->v_ld : NULL);
    }
}

void kvx_step_store_kv(struct kvx_forward *f, int32_t layer, const struct kvx_kv_rows *r)
{
    struct store_step s = {.f = f, .layer = layer, .r = r};
    if (f->n_tok == 1)
        store_part(&s, 0, 1);   /* one row: not worth waking the threads */
    else
        kvx_threadpool_run(f->tp, store_part, &s);
}

/* True when `layer`'s codecs keep per-sequence state (kivi's f16 rings): then a key's stored
 * form depends on how many tokens followed it.  The layout says so for every sequence. */
static bool layer_has_codec_state(const struct kvx_forward *f, int32_t layer)
{
    const struct kvx_kv_layout *l = kvx_kv_pool_layout(kvx_kv_seq_pool(f->seq[0]));
    const int32_t src = kvx_kv_layer_source(l, layer);
    return kvx_kv_layer_k_state_bytes(l, src) + kvx_kv_layer_v_state_bytes(l, src) > 0;
}

/* The end of the run of tokens from b on in which no sequence appears twice. */
static int64_t distinct_run_end(const struct kvx_forward *f, int64_t b)
{
    int64_t e = b + 1;
    while (e < f->n_tok) {
        bool seen = false;
        for (int64_t j = b; j < e && !seen; j++)
            seen = f->seq[j] == f->seq[e];
        if (seen)
            break;
        e++;
    }
    return e;
}

void kvx_step_store_attend(struct kvx_forward *f, int32_t layer, const struct kvx_kv_rows *r,
                           const struct kvx_attn_batch *ab)
{
    if (!r || !layer_has_codec_state(f, layer)) {
        if (r)
            kvx_step_store_kv(f, layer, r);
        kvx_attn_causal(f->tp, ab, &f->s->attn_ws);
        return;
    }
    for (int64_t b = 0; b < f->n_tok;) {
        const int64_t e = distinct_run_end(f, b);
        struct kvx_forward sub = *f;
        sub.n_tok = e - b;
        sub.pos = f->pos + b;
        sub.seq = f->seq + b;
        const struct kvx_kv_rows rows = {.k = r->k + b * r->k_ld, .k_ld = r->k_ld,
                                         .v = r->v ? r->v + b * r->v_ld : NULL, .v_ld = r->v_ld};
        kvx_step_store_kv(&sub, layer, &rows);
        struct kvx_attn_batch sb = *ab;
        struct kvx_attn_acc acc;
        sb.n_tok = e - b;
        sb.pos = ab->pos + b;
        sb.seq = ab->seq + b;
        sb.q = ab->q + b * ab->q_ld;
        sb.out = ab->out + b * ab->out_ld;
        if (ab->acc) {
            acc.want = ab->acc->want + b;
            acc.seq = ab->acc->seq + b;
            sb.acc = &acc;
        }
        kvx_attn_causal(f->tp, &sb, &f->s->attn_ws);
        b = e;
    }
}
