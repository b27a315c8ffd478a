/* plan/plan: a model's cache as a kv/layout, and the byte counts the planner reports.
 *
 * Owns the mapping of presets and GGUF files onto kv/layout declarations and the (scaled) sums
 * over the layout's own per-layer numbers.  Owns no KV byte formula: page bytes, pages per
 * sequence and bytes per token all come from kv/layout.  Fit and roofline: plan/fit.c. */
#include "plan/plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/engine.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"

const char *kvx_plan_lkind_name(enum kvx_plan_lkind k)
{
    static const char *const names[KVX_PLAN_LKIND_COUNT] = {
        "none", "full", "window", "shared", "latent", "compressed", "heavy"};
    return k >= 0 && k < KVX_PLAN_LKIND_COUNT ? names[k] : "unknown";
}

bool kvx_plan_codec_parse(const char *s, struct kvx_plan_codec *out)
{
    /* Every kvx codec is planned with its own page layout (exact bytes, scales included);
     * fp8 and fp4 (GPU engines' formats) as f16 pages scaled: 1 byte, and 4 bits plus one
     * 8-bit scale per 32 values (MXFP4: 4.25 bits, 17/64 of f16). */
    enum kvx_kv_codec c;
    if (s && kvx_kv_codec_parse(s, &c)) {
        *out = (struct kvx_plan_codec){kvx_kv_codec_name(c), c, 1, 1};
        return true;
    }
    static const struct kvx_plan_codec table[] = {
        {"fp8", KVX_KV_CODEC_F16, 1, 2},
        {"fp4", KVX_KV_CODEC_F16, 17, 64},
    };
    for (size_t i = 0; s && i < sizeof table / sizeof table[0]; i++)
        if (strcasecmp(s, table[i].name) == 0) {
            *out = table[i];
            return true;
        }
    return false;
}

struct kvx_plan_kv_cfg kvx_plan_kv_cfg_default(void)
{
    struct kvx_plan_kv_cfg c;
    kvx_plan_codec_parse("f16", &c.k);
    kvx_plan_codec_parse("f16", &c.v);
    c.page_tokens = kvx_engine_cfg_default().page_tokens;   /* what the engine would use */
    c.mla = KVX_MLA_ABSORBED;
    c.kivi_group = kvx_engine_cfg_default().kivi_group;
    c.kivi_residual = kvx_engine_cfg_default().kivi_residual;
    return c;
}

static enum kvx_status kv_alloc(struct kvx_plan_kv *out, int32_t n_layer,
                                const struct kvx_plan_kv_cfg *cfg, struct kvx_err *err)
{
    memset(out, 0, sizeof *out);
    enum kvx_status st = kvx_kv_layout_init(&out->layout, n_layer, cfg->page_tokens, err);
    if (st != KVX_OK)
        return st;
    out->kind = calloc((size_t)n_layer, 1);
    if (!out->kind) {
        kvx_kv_layout_free(&out->layout);
        return kvx_err_set(err, KVX_ERR_NOMEM, "plan: no memory for %d layers", (int)n_layer);
    }
    out->k = cfg->k;
    out->v = cfg->v;
    return KVX_OK;
}

void kvx_plan_kv_free(struct kvx_plan_kv *kv)
{
    if (!kv)
        return;
    kvx_kv_layout_free(&kv->layout);
    free(kv->kind);
    kv->kind = NULL;
}

/* The declaration of preset layer i with letter c (F, W or L); SHARED is set by the caller. */
static struct kvx_layer_cache preset_layer(const struct kvx_plan_model *pm, char c,
                                           const struct kvx_plan_kv *kv,
                                           const struct kvx_plan_kv_cfg *cfg, uint8_t *kind)
{
    struct kvx_layer_cache lc = {.kind = KVX_KV_KIND_FULL, .shared_from = -1,
                                 .k_codec = kv->k.native, .v_codec = kv->v.native,
                                 .group = cfg->kivi_group, .residual = cfg->kivi_residual};
    if (c == 'L') {
        /* MLA: one vector [latent c^KV (c_dim) | RoPE'd key (rope_dim)] per token, as the
         * engine declares it (kv/layout.h, LATENT) */
        lc.kind = KVX_KV_KIND_LATENT;
        lc.n_kv_heads = 1;
        lc.k_dim = pm->latent_c + pm->latent_rope;
        lc.v_dim = pm->latent_c;
        *kind = KVX_PLAN_LKIND_LATENT;
    } else if (c == 'S') {
        /* DeepSeek V4 sliding-window-only layer: one K = V vector per token */
        lc.kind = KVX_KV_KIND_WINDOW;
        lc.window = pm->window;
        lc.n_kv_heads = 1;
        lc.k_dim = pm->head_dim;
        *kind = KVX_PLAN_LKIND_WINDOW;
    } else if (c == 'C' || c == 'H') {
        /* DeepSeek V4 CSA / HCA: pooled entries (+ indexer keys for CSA), window in state */
        lc.kind = c == 'C' ? KVX_KV_KIND_COMPRESSED : KVX_KV_KIND_HEAVY;
        lc.ratio = c == 'C' ? pm->ratio_c : pm->ratio_h;
        lc.window = pm->window;
        lc.n_kv_heads = 1;
        lc.k_dim = pm->head_dim;
        lc.v_dim = c == 'C' ? pm->index_dim : 0;
        *kind = c == 'C' ? KVX_PLAN_LKIND_COMPRESSED : KVX_PLAN_LKIND_HEAVY;
    } else if (c == 'W') {
        lc.kind = KVX_KV_KIND_WINDOW;
        lc.window = pm->window;
        lc.n_kv_heads = pm->kv_heads;
        lc.k_dim = lc.v_dim = pm->head_dim;
        *kind = KVX_PLAN_LKIND_WINDOW;
    } else {
        lc.n_kv_heads = pm->g_kv_heads > 0 ? pm->g_kv_heads : pm->kv_heads;
        lc.k_dim = lc.v_dim = pm->g_head_dim > 0 ? pm->g_head_dim : pm->head_dim;
        *kind = KVX_PLAN_LKIND_FULL;
    }
    return lc;
}

enum kvx_status kvx_plan_kv_from_model(const struct kvx_plan_model *pm,
                                       const struct kvx_plan_kv_cfg *cfg, struct kvx_plan_kv *out,
                                       struct kvx_err *err)
{
    size_t plen = strlen(pm->pattern);
    if (plen == 0 || strspn(pm->pattern, "FWLSCH") != plen)
        return kvx_err_set(err, KVX_ERR_FORMAT, "plan: model '%s': pattern '%s' must be letters "
                           "F, W, L, S, C, H", pm->name, pm->pattern);
    enum kvx_status st = kv_alloc(out, pm->n_layer, cfg, err);
    if (st != KVX_OK)
        return st;
    for (int32_t i = 0; i < pm->n_layer; i++) {
        char c = pm->pattern[(size_t)i % plen];
        out->layout.layers[i] = preset_layer(pm, c, out, cfg, &out->kind[i]);
        if (pm->shared_from <= 0 || i < pm->shared_from)
            continue;
        int32_t src = pm->shared_from - 1;
        while (src >= 0 && pm->pattern[(size_t)src % plen] != c)
            src--;
        if (src >= 0) {
            out->layout.layers[i] = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED,
                                                             .shared_from = src};
            out->kind[i] = KVX_PLAN_LKIND_SHARED;
        }
    }
    if ((st = kvx_kv_layout_validate(&out->layout, err)) != KVX_OK) {
        kvx_err_prefix(err, "plan: model '%s'", pm->name);
        kvx_plan_kv_free(out);
        return st;
    }
    snprintf(out->name, sizeof out->name, "%s", pm->name);
    out->n_params = pm->n_params;
    out->n_active = pm->n_active > 0 ? pm->n_active : pm->n_params;
    out->ctx_max = pm->ctx_max;
    return KVX_OK;
}

static enum kvx_plan_lkind kind_of_layout(enum kvx_kv_kind k)
{
    switch (k) {
    case KVX_KV_KIND_FULL: return KVX_PLAN_LKIND_FULL;
    case KVX_KV_KIND_WINDOW: return KVX_PLAN_LKIND_WINDOW;
    case KVX_KV_KIND_SHARED: return KVX_PLAN_LKIND_SHARED;
    case KVX_KV_KIND_LATENT: return KVX_PLAN_LKIND_LATENT;
    case KVX_KV_KIND_COMPRESSED: return KVX_PLAN_LKIND_COMPRESSED;
    case KVX_KV_KIND_HEAVY: return KVX_PLAN_LKIND_HEAVY;
    default: return KVX_PLAN_LKIND_NONE;
    }
}

/* Bytes per parameter of a config's weights: FP8 quantization_config 1, else torch_dtype (or
 * transformers 5's "dtype"): bfloat16 / float16 2, float32 4; 0 when the config does not say. */
static double config_dtype_bytes(const struct kvx_model *m)
{
    const struct kvx_jv *q = kvx_jv_get(m->config, "quantization_config");
    const struct kvx_jv *qm = kvx_jv_get(q, "quant_method");
    if (qm && qm->type == KVX_JV_STRING && strcmp(qm->str, "fp8") == 0)
        return 1.0;
    const struct kvx_jv *d = kvx_jv_get(m->config, "torch_dtype");
    if (!d || d->type != KVX_JV_STRING)
        d = kvx_jv_get(m->config, "dtype");
    if (!d || d->type != KVX_JV_STRING)
        return 0;
    static const struct { const char *name; double bytes; } table[] = {
        {"bfloat16", 2}, {"float16", 2}, {"float32", 4},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(d->str, table[i].name) == 0)
            return table[i].bytes;
    return 0;
}

/* Parameters of a model: the arch's count from its hyper-parameters where it has one (the
 * active share too), else the tensors' own count (all active). */
static enum kvx_status count_params(const struct kvx_model *m, struct kvx_plan_kv *out,
                                    struct kvx_err *err)
{
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    out->n_params = out->n_active = (double)info.n_params;
    out->weight_bytes = info.weight_bytes;
    if (!m->arch->param_count)
        return KVX_OK;
    struct kvx_param_count pc = {0, 0};
    enum kvx_status st = m->arch->param_count(m, &pc, err);
    if (st != KVX_OK || pc.total <= 0)
        return st;
    if (m->config_only) {
        out->n_params = pc.total;
        out->n_active = pc.active;
    } else {   /* the file's own count; the arch says which share a token reads */
        out->n_active = out->n_params * (pc.active / pc.total);
    }
    return KVX_OK;
}

enum kvx_status kvx_plan_kv_from_path(const char *path, const struct kvx_plan_kv_cfg *cfg,
                                      struct kvx_plan_kv *out, struct kvx_err *err)
{
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = path;
    mc.config_only = !kvx_model_path_has_weights(path);
    mc.mla = cfg->mla;
    struct kvx_model *m;
    memset(out, 0, sizeof *out);
    enum kvx_status st = kvx_model_open(&mc, &m, err);
    if (st != KVX_OK)
        return st;
    if ((st = kv_alloc(out, m->hp.n_layer, cfg, err)) != KVX_OK) {
        kvx_model_close(m);
        return st;
    }
    m->arch->declare_cache(m, &out->layout, cfg->k.native, cfg->v.native);   /* as the engine */
    if ((st = kvx_kv_layout_set_codecs(&out->layout, cfg->k.native, cfg->v.native, NULL,
                                       cfg->kivi_group, cfg->kivi_residual, err)) != KVX_OK ||
        (st = kvx_kv_layout_validate(&out->layout, err)) != KVX_OK ||
        (st = count_params(m, out, err)) != KVX_OK) {
        kvx_err_prefix(err, "%s", path);
        kvx_plan_kv_free(out);
        kvx_model_close(m);
        return st;
    }
    for (int32_t i = 0; i < out->layout.n_layer; i++)
        out->kind[i] = (uint8_t)kind_of_layout(out->layout.layers[i].kind);
    const char *base = strrchr(path, '/');
    snprintf(out->name, sizeof out->name, "%.63s", m->name[0] ? m->name : base ? base + 1 : path);
    out->config_only = m->config_only;
    if (m->config_only) {
        out->weight_bytes = 0;
        out->bytes_per_param = config_dtype_bytes(m);
    }
    out->ctx_max = m->hp.n_ctx_train;
    kvx_model_close(m);
    return KVX_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Byte counts: the layout's per-layer numbers, each page's K and V parts scaled for projected
 * codecs (num/den = 1 for native ones, where the sums equal the layout's own totals). */

static bool native(const struct kvx_plan_kv *kv)
{
    return kv->k.num == kv->k.den && kv->v.num == kv->v.den;
}

static size_t scale(size_t b, const struct kvx_plan_codec *c)
{
    return (b * (size_t)c->num + (size_t)c->den - 1) / (size_t)c->den;
}

static size_t page_bytes(const struct kvx_plan_kv *kv, int32_t i)
{
    size_t all = kvx_kv_layer_page_bytes(&kv->layout, i);
    size_t k = kvx_kv_layer_v_offset(&kv->layout, i, 0);   /* every K region comes first */
    return scale(k, &kv->k) + scale(all - k, &kv->v);
}

static bool kind_match(const struct kvx_plan_kv *kv, int32_t i, int k)
{
    return k < 0 || kv->kind[i] == k;
}

static size_t seq_sum(const struct kvx_plan_kv *kv, int64_t n, int k)
{
    size_t bytes = 0;
    for (int32_t i = 0; i < kv->layout.n_layer; i++)
        if (kind_match(kv, i, k))
            bytes += (size_t)kvx_kv_layer_pages(&kv->layout, i, n) * page_bytes(kv, i);
    return bytes;
}

size_t kvx_plan_kv_seq_bytes(const struct kvx_plan_kv *kv, int64_t n)
{
    return native(kv) ? kvx_kv_layout_seq_bytes(&kv->layout, n) : seq_sum(kv, n, -1);
}

size_t kvx_plan_kv_seq_bytes_kind(const struct kvx_plan_kv *kv, int64_t n, enum kvx_plan_lkind k)
{
    return seq_sum(kv, n, (int)k);
}

/* Growth per token of the (scaled) pages: page bytes / page_tokens for FULL and LATENT
 * layers, / (page_tokens x ratio) for COMPRESSED and HEAVY; the layout's own rule. */
static size_t per_token_sum(const struct kvx_plan_kv *kv, int k)
{
    double sum = 0;
    for (int32_t i = 0; i < kv->layout.n_layer; i++) {
        const struct kvx_layer_cache *c = &kv->layout.layers[i];
        if (!kind_match(kv, i, k))
            continue;
        if (c->kind == KVX_KV_KIND_FULL || c->kind == KVX_KV_KIND_LATENT)
            sum += (double)page_bytes(kv, i);
        else if (c->kind == KVX_KV_KIND_COMPRESSED || c->kind == KVX_KV_KIND_HEAVY)
            sum += (double)page_bytes(kv, i) / c->ratio;
    }
    return (size_t)ceil(sum / kv->layout.page_tokens - 1e-9);
}

size_t kvx_plan_kv_bytes_per_token(const struct kvx_plan_kv *kv)
{
    return native(kv) ? kvx_kv_layout_bytes_per_token(&kv->layout) : per_token_sum(kv, -1);
}

size_t kvx_plan_kv_bytes_per_token_kind(const struct kvx_plan_kv *kv, enum kvx_plan_lkind k)
{
    return per_token_sum(kv, (int)k);
}

size_t kvx_plan_kv_const_bytes(const struct kvx_plan_kv *kv)
{
    int64_t wmax = 0;
    for (int32_t i = 0; i < kv->layout.n_layer; i++)
        if (kv->layout.layers[i].kind == KVX_KV_KIND_WINDOW && kv->layout.layers[i].window > wmax)
            wmax = kv->layout.layers[i].window;
    const size_t state = kvx_kv_layout_state_bytes(&kv->layout); /* e.g. kivi2's residual */
    if (wmax == 0)
        return state;
    /* Once every window is full the count is periodic in the page size: take its peak. */
    size_t peak = 0;
    for (int64_t j = 0; j < kv->layout.page_tokens; j++) {
        size_t b = seq_sum(kv, 2 * wmax + j, KVX_PLAN_LKIND_WINDOW);
        peak = b > peak ? b : peak;
    }
    return peak + state;
}
