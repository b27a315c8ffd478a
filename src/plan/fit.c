/* plan/fit: what fits in a replica's memory, and a memory-bandwidth roofline for decode.
 *
 * Memory per replica (tp devices):  tp * device_bytes * util  =  weights + reserve + KV.
 * A shared prompt prefix is counted once: its whole pages of FULL and LATENT layers.
 * Decode roofline: one step reads the weights once (MoE: the active parameters) and every
 * sequence's KV, spread over the replica's tp devices:
 *     step_s = (weight_read + C * seq_bytes(L)) / (tp * bandwidth)
 * It is an upper bound on speed (no compute, no overlap losses, peak bandwidth).
 * All KV bytes come from plan/plan.c (kv/layout); this file only adds and divides. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "plan/plan.h"
#include "util/err.h"

struct kvx_plan_cfg kvx_plan_cfg_default(void)
{
    struct kvx_plan_cfg c;
    memset(&c, 0, sizeof c);
    c.ctx[0] = 8192;
    c.n_ctx = 1;
    c.concurrency = 1;
    c.tp = 1;
    c.util = 0.9;
    c.bytes_per_param = 0;    /* the model's own dtype, else bf16 */
    return c;
}

enum kvx_status kvx_plan_parse_ctx_list(const char *s, struct kvx_plan_cfg *cfg,
                                        struct kvx_err *err)
{
    int32_t n = 0;
    const char *p = s;
    while (p && *p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context '%s': not a number", s);
        if (*end == 'k' || *end == 'K')
            v *= 1024, end++;
        else if (*end == 'm' || *end == 'M')
            v *= 1048576, end++;
        if (*end && *end != ',')
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context '%s': unexpected '%c'", s, *end);
        if (v <= 0 || v > (1LL << 40))
            return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                               "context %lld: must be between 1 and 2^40 tokens", v);
        if (n == KVX_PLAN_MAX_CTX)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context list: at most %d values",
                               KVX_PLAN_MAX_CTX);
        cfg->ctx[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context list '%s' is empty", s ? s : "");
    cfg->n_ctx = n;
    return KVX_OK;
}

bool kvx_plan_weight_dtype_bytes(const char *s, double *out)
{
    static const struct { const char *name; double bytes; } table[] = {
        {"f32", 4}, {"f16", 2}, {"bf16", 2}, {"fp8", 1}, {"int8", 1}, {"q8_0", 34.0 / 32},
        {"q4_0", 18.0 / 32}, {"q4_1", 20.0 / 32}, {"int4", 0.5}, {"fp4", 0.5},
    };
    for (size_t i = 0; s && i < sizeof table / sizeof table[0]; i++)
        if (strcasecmp(s, table[i].name) == 0) {
            *out = table[i].bytes;
            return true;
        }
    return false;
}

static enum kvx_status check_cfg(const struct kvx_plan_cfg *c, const struct kvx_plan_hw *hw,
                                 struct kvx_err *err)
{
    if (c->n_ctx <= 0 || c->n_ctx > KVX_PLAN_MAX_CTX)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "plan: no context length given");
    for (int32_t i = 0; i < c->n_ctx; i++)
        if (c->ctx[i] <= 0)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG, "context %lld: must be > 0 tokens",
                               (long long)c->ctx[i]);
    if (c->concurrency <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "concurrency %lld: must be >= 1 sequence",
                           (long long)c->concurrency);
    if (c->tp <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "tp %d: must be >= 1", (int)c->tp);
    if (c->gpus && (c->gpus < c->tp || c->gpus % c->tp))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "gpus %d: must be a multiple of tp %d",
                           (int)c->gpus, (int)c->tp);
    if (!(c->util > 0 && c->util <= 1))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "util %g: must be in (0, 1]", c->util);
    if (!hw || hw->mem_bytes <= 0 || hw->bw_bytes_s <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "plan: hardware without memory or bandwidth");
    return KVX_OK;
}

/* Whole pages of the prefix in the layers that keep every token (the ones prefixes share). */
static double shared_bytes(const struct kvx_plan_kv *kv, int64_t prefix, int64_t ctx)
{
    int64_t p = prefix < ctx ? prefix : ctx;
    p -= p % kv->layout.page_tokens;
    if (p <= 0)
        return 0;
    return (double)kvx_plan_kv_seq_bytes_kind(kv, p, KVX_PLAN_LKIND_FULL) +
           (double)kvx_plan_kv_seq_bytes_kind(kv, p, KVX_PLAN_LKIND_LATENT);
}

/* KV bytes of c sequences of n tokens with the shared prefix counted once. */
static double kv_for(const struct kvx_plan_kv *kv, const struct kvx_plan_cfg *cfg, int64_t c,
                     int64_t n)
{
    double sh = shared_bytes(kv, cfg->prefix_shared, n);
    return sh + (double)c * ((double)kvx_plan_kv_seq_bytes(kv, n) - sh);
}

static int64_t max_ctx(const struct kvx_plan_kv *kv, const struct kvx_plan_cfg *cfg, double avail)
{
    int64_t lo = 0, hi = KVX_PLAN_CTX_UNBOUNDED;   /* invariant: kv_for(lo) fits, kv_for(hi) does not */
    if (avail <= 0 || kv_for(kv, cfg, cfg->concurrency, 1) > avail)
        return 0;
    if (kv_for(kv, cfg, cfg->concurrency, hi) <= avail)
        return hi;   /* e.g. window-only caches: bounded for any length */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (kv_for(kv, cfg, cfg->concurrency, mid) <= avail)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void compute_at(const struct kvx_plan_kv *kv, const struct kvx_plan_hw *hw,
                       const struct kvx_plan_cfg *cfg, struct kvx_plan_result *r, int64_t ctx,
                       struct kvx_plan_at *a)
{
    memset(a, 0, sizeof *a);
    a->ctx = ctx;
    a->seq_bytes = kvx_plan_kv_seq_bytes(kv, ctx);
    for (int k = 0; k < KVX_PLAN_LKIND_COUNT; k++)
        a->kind_bytes[k] = kvx_plan_kv_seq_bytes_kind(kv, ctx, (enum kvx_plan_lkind)k);
    double sh = shared_bytes(kv, cfg->prefix_shared, ctx);
    double per = (double)a->seq_bytes - sh;
    if (r->kv_avail_bytes > sh && per > 0)
        a->max_seqs = (int64_t)floor((r->kv_avail_bytes - sh) / per);
    a->kv_bytes_at_c = kv_for(kv, cfg, cfg->concurrency, ctx);
    a->fits = r->weights_fit && a->kv_bytes_at_c <= r->kv_avail_bytes;
    if (!a->fits)
        a->short_bytes = a->kv_bytes_at_c - r->kv_avail_bytes;
    double bytes = r->weight_read_bytes + (double)cfg->concurrency * (double)a->seq_bytes;
    a->step_s = bytes / ((double)cfg->tp * hw->bw_bytes_s);
    a->tok_s_seq = 1.0 / a->step_s;
    a->tok_s_total = (double)r->replicas * (double)cfg->concurrency / a->step_s;
    int32_t gpus = cfg->gpus ? cfg->gpus : cfg->tp;
    if (cfg->price_per_hour > 0)
        a->usd_per_mtok = cfg->price_per_hour * gpus / (a->tok_s_total * 3600.0) * 1e6;
}

enum kvx_status kvx_plan_compute(const struct kvx_plan_kv *kv, const struct kvx_plan_hw *hw,
                                 const struct kvx_plan_cfg *cfg, struct kvx_plan_result *out,
                                 struct kvx_err *err)
{
    enum kvx_status st = check_cfg(cfg, hw, err);
    if (st != KVX_OK)
        return st;
    memset(out, 0, sizeof *out);
    out->bytes_per_token = kvx_plan_kv_bytes_per_token(kv);
    for (int k = 0; k < KVX_PLAN_LKIND_COUNT; k++)
        out->kind_per_token[k] = kvx_plan_kv_bytes_per_token_kind(kv, (enum kvx_plan_lkind)k);
    out->const_bytes = kvx_plan_kv_const_bytes(kv);
    const double bpp = cfg->bytes_per_param > 0  ? cfg->bytes_per_param
                       : kv->bytes_per_param > 0 ? kv->bytes_per_param
                                                 : 2.0;
    out->weight_bytes = cfg->weight_bytes > 0    ? cfg->weight_bytes
                        : kv->weight_bytes > 0 ? (double)kv->weight_bytes
                                               : kv->n_params * bpp;
    out->weight_read_bytes = kv->n_params > 0 && kv->n_active > 0
                                 ? out->weight_bytes * (kv->n_active / kv->n_params)
                                 : out->weight_bytes;
    out->mem_bytes = (double)cfg->tp * hw->mem_bytes * cfg->util;
    out->kv_avail_bytes = out->mem_bytes - out->weight_bytes - cfg->reserve_bytes;
    out->weights_fit = out->kv_avail_bytes > 0;
    out->replicas = (cfg->gpus ? cfg->gpus : cfg->tp) / cfg->tp;
    out->max_ctx_at_c = max_ctx(kv, cfg, out->kv_avail_bytes);
    out->n_at = cfg->n_ctx;
    for (int32_t i = 0; i < cfg->n_ctx; i++)
        compute_at(kv, hw, cfg, out, cfg->ctx[i], &out->at[i]);
    return KVX_OK;
}
