/* model/laguna: Poolside Laguna (model_type laguna): layer-wise attention budgeting — a
 * different number of query heads per layer over one KV-head geometry — with global and
 * sliding-window layers, per-head q/k RMSNorm, partial RoPE per layer type (default or YaRN),
 * a softplus output gate, and a sigmoid-routed mixture of experts with a shared expert; from
 * safetensors + config.json.
 *
 * Per layer l (x the residual stream, Hq_l query heads, Hkv KV heads of d dims):
 *   h   = RMSNorm(x) * input_layernorm
 *   q   = h Wq_l (+bq) [Hq_l, d];  k = h Wk (+bk), v = h Wv (+bv) [Hkv, d]
 *   q_h = RMSNorm(q_h) * q_norm;  k_h = RMSNorm(k_h) * k_norm          (per head, d dims)
 *   q, k = RoPE on the first R_t dims of each head, NeoX pairs (j, j + R_t/2), where t is the
 *          layer's type (full_attention / sliding_attention) with its own rope_parameters:
 *          inv_i = θ^(-2i/R) (default) or the YaRN blend; cos/sin × attention_factor
 *   cache[l][pos] = (k, v)      a FULL layer, or a WINDOW layer of sliding_window tokens
 *   o_h = softmax(q_h · K_g / sqrt(d)) V_g  over visible keys, g = h / (Hq_l / Hkv)
 *   o   = o ⊙ softplus(h Wg)   one gate per head (gating true / "per-head", broadcast over d)
 *                              or per element (gating "per-element", or false as in
 *                              transformers)
 *   x  += o Wo_l (+bo)
 *   h   = RMSNorm(x) * post_attention_layernorm
 *   x  += SwiGLU MLP(h)                                    mlp_layer_types[l] == "dense"
 *   x  += routed_scale · Σ_{e in top_k} w_e SwiGLU_e(h) + SwiGLU_shared(h)     "sparse":
 *         z = h Wrouter (tanh-softcapped by c when moe_router_logit_softcapping c > 0),
 *         s = sigmoid(z); top_k experts by s + e_score_correction_bias; w_e = s_e / Σ s_e
 * logits = (RMSNorm(x) * norm) lm_head  (lm_head = embed_tokens when tied).
 *
 * The engine sizes its buffers from m->hp: n_head is the largest per-layer head count and
 * n_ff the widest MLP (dense, routed or shared), so every layer fits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "engine/forward.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "model/steps.h"
#include "util/err.h"
#include "util/json.h"

#define LAG_MAX_EXPERTS 1024

struct lag_rope {
    int32_t n_rot;             /* rotated leading dims of each head */
    float attn_factor;         /* multiplies cos and sin (YaRN) */
    float *inv;                /* n_rot / 2 inverse frequencies */
};

struct lag_layer {
    int32_t n_head;            /* query heads of this layer */
    bool sliding, sparse;
    const float *attn_norm, *ffn_norm, *q_norm, *k_norm;
    const float *bq, *bk, *bv, *bo;            /* attention_bias */
    struct kvx_mat wq, wk, wv, wo, wg;
    struct kvx_mat w_gate, w_up, w_down;       /* dense MLP, or the shared expert */
    const float *router, *router_bias;         /* sparse: f32 [n_expert, D], [n_expert] */
    struct kvx_mat *experts;                   /* sparse: n_expert x {gate, up, down} */
};

struct lag {
    int32_t n_layer, head_dim, n_head_kv;
    int64_t window;
    bool gate_per_head, bias;
    struct lag_rope rope[2];   /* [0] full_attention, [1] sliding_attention */
    int32_t n_ff, n_expert, top_k, moe_ff, shared_ff;
    float routed_scale, softcap;
    struct lag_layer *layers;
};

static void lag_free(void *p)
{
    struct lag *a = p;
    if (!a)
        return;
    free(a->rope[0].inv);
    free(a->rope[1].inv);
    free(a->layers);
    free(a);
}

/* ------------------------------------------------------------------------------------------ */
/* Hyper-parameters */

/* rope_parameters[type] (transformers 5.x, keyed by layer type): default or yarn. */
static enum kvx_status lag_rope_params(const struct kvx_jv *c, const char *type, int32_t hd,
                                       struct lag_rope *r, struct kvx_err *err)
{
    const struct kvx_jv *all = kvx_jv_get(c, "rope_parameters");
    const struct kvx_jv *rp = all && all->type == KVX_JV_OBJECT ? kvx_jv_get(all, type) : NULL;
    /* no rope_parameters: transformers' defaults (full: θ 5e5 on half the dims, sliding: θ 1e4
     * on all); otherwise a key missing from the type's entry is looked up in rope_parameters
     * itself, then at the top of config.json (partial_rotary_factor), else 1.0 */
    const bool none = !all || all->type == KVX_JV_NULL;
    double dtheta = strcmp(type, "full_attention") == 0 ? 500000.0 : 10000.0;
    double dpartial = none && strcmp(type, "full_attention") == 0 ? 0.5 : 1.0;
    if (all && all->type != KVX_JV_NULL && all->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'rope_parameters' is not an "
                           "object");
    if (all && all->type == KVX_JV_OBJECT && (!rp || rp->type != KVX_JV_OBJECT))
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters has no object for "
                           "layer type '%s'", type);
    double theta, partial, factor = 0, orig = 0, bf, bs, af;
    const char *rtype = "default";
    enum kvx_status st;
    const struct kvx_jv *top = none ? NULL : all;
    if ((st = kvx_hf_pos_float(top, "rope_theta", dtheta, &dtheta, err)) ||
        (st = kvx_hf_pos_float(c, "partial_rotary_factor", dpartial, &dpartial, err)) ||
        (st = kvx_hf_pos_float(top, "partial_rotary_factor", dpartial, &dpartial, err)) ||
        (st = kvx_hf_pos_float(top, "factor", 0, &factor, err)) ||
        (st = kvx_hf_pos_float(top, "original_max_position_embeddings", 0, &orig, err)))
        return kvx_err_prefix(err, "rope_parameters"), st;
    if ((st = kvx_hf_pos_float(rp, "rope_theta", dtheta, &theta, err)) ||
        (st = kvx_hf_pos_float(rp, "partial_rotary_factor", dpartial, &partial, err)) ||
        (st = kvx_hf_str(rp, "rope_type", rtype, &rtype, err)))
        return kvx_err_prefix(err, "rope_parameters.%s", type), st;
    const double n_rot = hd * partial;
    if (partial > 1.0 || n_rot != floor(n_rot) || (int32_t)n_rot < 2 || (int32_t)n_rot % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters.%s: "
                           "partial_rotary_factor %g of head_dim %d is not an even number of "
                           "dims >= 2", type, partial, hd);
    r->n_rot = (int32_t)n_rot;
    r->attn_factor = 1.0f;
    r->inv = malloc((size_t)(r->n_rot / 2) * sizeof *r->inv);
    if (!r->inv)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    if (strcmp(rtype, "default") == 0) {
        for (int32_t i = 0; i < r->n_rot / 2; i++)
            r->inv[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)r->n_rot);
        return KVX_OK;
    }
    if (strcmp(rtype, "yarn") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope_parameters.%s: rope type "
                           "'%.40s' is not supported for laguna (default, yarn)", type, rtype);
    if ((st = kvx_hf_pos_float(rp, "factor", factor, &factor, err)) ||
        (st = kvx_hf_pos_float(rp, "original_max_position_embeddings", orig, &orig, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_fast", 32, &bf, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_slow", 1, &bs, err)) ||
        (st = kvx_hf_pos_float(rp, "attention_factor", 0, &af, err)))
        return kvx_err_prefix(err, "rope_parameters.%s", type), st;
    if (factor == 0 || orig == 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters.%s: yarn needs "
                           "'factor' and 'original_max_position_embeddings'", type);
    if (kvx_jv_get(rp, "mscale") || kvx_jv_get(rp, "mscale_all_dim"))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope_parameters.%s: yarn "
                           "mscale / mscale_all_dim are not supported for laguna", type);
    bool truncate = true;
    if ((st = kvx_hf_bool(top, "truncate", true, &truncate, err)))
        return kvx_err_prefix(err, "rope_parameters"), st;
    kvx_rope_yarn_inv_freq(r->inv, r->n_rot, theta, factor, orig, bf, bs, truncate);
    r->attn_factor = (float)(af != 0 ? af : factor <= 1 ? 1.0 : 0.1 * log(factor) + 1.0);
    return KVX_OK;
}

/* A list key of n_layer entries, or NULL when absent/null (the caller takes the default). */
static enum kvx_status layer_list(const struct kvx_jv *c, const char *key, int32_t n_layer,
                                  enum kvx_jv_type item, const struct kvx_jv **out,
                                  struct kvx_err *err)
{
    const struct kvx_jv *v = kvx_jv_get(c, key);
    *out = NULL;
    if (!v || v->type == KVX_JV_NULL)
        return KVX_OK;
    if (v->type != KVX_JV_ARRAY || v->len != (size_t)n_layer)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key '%s' is not a list of "
                           "num_hidden_layers (%d) entries", key, n_layer);
    for (size_t i = 0; i < v->len; i++)
        if (v->items[i].type != item || (item == KVX_JV_NUMBER && !v->items[i].is_int))
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: %s[%zu] is not a%s", key, i,
                               item == KVX_JV_NUMBER ? "n integer" : " string");
    *out = v;
    return KVX_OK;
}

static enum kvx_status lag_config(struct kvx_model *m, struct lag *a, struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    struct kvx_hparams *hp = &m->hp;
    int64_t embd, layers, heads, kv, hd, ff, vocab, ctx, window, ne = 0, k = 0, mff = 0, sff = 0;
    double eps, scale, cap;
    bool on_input;
    const char *act;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 20, &embd, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &layers, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &heads, err)) ||
        (st = kvx_hf_int(c, "num_key_value_heads", true, 0, 1, 4096, &kv, err)) ||
        /* head_dim: required (transformers would take its class default, 128) */
        (st = kvx_hf_int(c, "head_dim", true, 0, 2, 4096, &hd, err)) ||
        (st = kvx_hf_int(c, "intermediate_size", false, 8192, 1, 1 << 24, &ff, err)) ||
        (st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 131072, 1, (int64_t)1 << 30, &ctx,
                         err)) ||
        (st = kvx_hf_int(c, "sliding_window", false, 512, 1, (int64_t)1 << 30, &window, err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-6, &eps, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", false, &a->bias, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", false, &hp->tie_embd, err)) ||
        (st = kvx_hf_bool(c, "moe_apply_router_weight_on_input", false, &on_input, err)) ||
        (st = kvx_hf_str(c, "hidden_act", "silu", &act, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (hd % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: head_dim %lld is odd",
                           (long long)hd);
    if (strcmp(act, "silu") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: hidden_act '%.40s' is not "
                           "supported (silu)", act);
    if (on_input)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: "
                           "moe_apply_router_weight_on_input true is not supported (transformers "
                           "refuses it too)");
    /* gating: true / "per-head" (one gate per head); "per-element" or false (transformers
     * then also gates per element: g_proj has Hq d outputs) */
    const struct kvx_jv *g = kvx_jv_get(c, "gating");
    a->gate_per_head = true;
    if (g && ((g->type == KVX_JV_STRING && strcmp(g->str, "per-element") == 0) ||
              (g->type == KVX_JV_BOOL && !g->b)))
        a->gate_per_head = false;
    else if (g && g->type != KVX_JV_NULL && !(g->type == KVX_JV_BOOL && g->b) &&
             !(g->type == KVX_JV_STRING && strcmp(g->str, "per-head") == 0))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: key 'gating' must be true, "
                           "false, \"per-head\" or \"per-element\"");
    a->n_layer = (int32_t)layers;
    a->head_dim = (int32_t)hd;
    a->n_head_kv = (int32_t)kv;
    a->window = window;
    a->layers = calloc((size_t)layers, sizeof *a->layers);
    if (!a->layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const struct kvx_jv *lt, *mt, *hl;
    if ((st = layer_list(c, "layer_types", a->n_layer, KVX_JV_STRING, &lt, err)) ||
        (st = layer_list(c, "mlp_layer_types", a->n_layer, KVX_JV_STRING, &mt, err)) ||
        (st = layer_list(c, "num_attention_heads_per_layer", a->n_layer, KVX_JV_NUMBER, &hl, err)))
        return st;
    bool any_sparse = false, any_dense = false, any_type[2] = {false, false};
    int32_t max_heads = 0;
    for (int32_t il = 0; il < a->n_layer; il++) {
        struct lag_layer *L = &a->layers[il];
        const char *t = lt ? lt->items[il].str : "full_attention";
        const char *mlp = mt ? mt->items[il].str : il == 0 ? "dense" : "sparse";
        const int64_t h = hl ? hl->items[il].i : heads;
        if (strcmp(t, "full_attention") && strcmp(t, "sliding_attention"))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: layer_types[%d] '%.40s' "
                               "is not supported (full_attention, sliding_attention)", il, t);
        if (strcmp(mlp, "dense") && strcmp(mlp, "sparse"))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: mlp_layer_types[%d] "
                               "'%.40s' is not supported (dense, sparse)", il, mlp);
        if (h < 1 || h > 4096 || h % kv)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer %d has %lld query heads, "
                               "not a positive multiple of num_key_value_heads %lld", il,
                               (long long)h, (long long)kv);
        if ((h * hd) % 32)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: layer %d: attention width "
                               "%lld is not a multiple of 32", il, (long long)(h * hd));
        L->n_head = (int32_t)h;
        L->sliding = t[0] == 's';
        L->sparse = mlp[0] == 's';
        any_type[L->sliding] = true;
        any_sparse |= L->sparse;
        any_dense |= !L->sparse;
        max_heads = L->n_head > max_heads ? L->n_head : max_heads;
    }
    for (int i = 0; i < 2; i++)
        if (any_type[i] && (st = lag_rope_params(c, i ? "sliding_attention" : "full_attention",
                                                 a->head_dim, &a->rope[i], err)))
            return st;
    if (any_sparse) {
        if ((st = kvx_hf_int(c, "num_experts", true, 0, 1, LAG_MAX_EXPERTS, &ne, err)) ||
            (st = kvx_hf_int(c, "num_experts_per_tok", true, 0, 1, LAG_MAX_EXPERTS, &k, err)) ||
            (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 24, &mff, err)) ||
            (st = kvx_hf_int(c, "shared_expert_intermediate_size", true, 0, 1, 1 << 24, &sff,
                             err)) ||
            (st = kvx_hf_pos_float(c, "moe_routed_scaling_factor", 1.0, &scale, err)))
            return st;
        const struct kvx_jv *cj = kvx_jv_get(c, "moe_router_logit_softcapping");
        cap = 0;
        if (cj && cj->type == KVX_JV_NUMBER && cj->num > 0)
            cap = cj->num;
        else if (cj && cj->type != KVX_JV_NULL && !(cj->type == KVX_JV_NUMBER && cj->num == 0))
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key "
                               "'moe_router_logit_softcapping' is not a number >= 0");
        if (k > ne)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: num_experts_per_tok %lld > "
                               "num_experts %lld", (long long)k, (long long)ne);
        a->n_expert = (int32_t)ne;
        a->top_k = (int32_t)k;
        a->moe_ff = (int32_t)mff;
        a->shared_ff = (int32_t)sff;
        a->routed_scale = (float)scale;
        a->softcap = (float)cap;
    }
    int64_t nff = any_dense ? ff : 0;
    nff = mff > nff ? mff : nff;
    nff = sff > nff ? sff : nff;
    if (embd % 32 || (any_dense && ff % 32) || mff % 32 || sff % 32)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: widths %lld/%lld/%lld/%lld "
                           "(hidden, intermediate, moe, shared) are not multiples of 32",
                           (long long)embd, (long long)ff, (long long)mff, (long long)sff);
    a->n_ff = (int32_t)ff;
    const int r = any_type[0] ? 0 : 1;
    *hp = (struct kvx_hparams){
        .n_vocab = (int32_t)vocab, .n_embd = (int32_t)embd, .n_layer = (int32_t)layers,
        .n_head = max_heads, .n_head_kv = (int32_t)kv, .head_dim = (int32_t)hd,
        .n_ff = (int32_t)nff, .n_ctx_train = ctx, .norm_eps = (float)eps,
        .rope_theta = 0,   /* unused: the per-type RoPE tables are in the arch data */
        .rope_freq_scale = 1, .n_rot = a->rope[r].n_rot, .rope_kind = KVX_ROPE_NEOX,
        .bos_id = hp->bos_id, .eos_id = hp->eos_id, .attn_bias = a->bias,
        .tie_embd = hp->tie_embd,
    };
    return KVX_OK;
}

static enum kvx_status lag_hparams(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "laguna is read from safetensors + "
                           "config.json only");
    struct lag *a = calloc(1, sizeof *a);
    if (!a)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    m->arch_data = a;
    m->free_arch_data = lag_free;
    return lag_config(m, a, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Weights */

/* Router, routed experts and the shared expert.  Checkpoints (and transformers'
 * save_pretrained) store one tensor per expert, "mlp.experts.E.{gate,up,down}_proj.weight",
 * with the routing bias at "mlp.experts.e_score_correction_bias" and the shared expert at
 * "mlp.shared_expert."; transformers' in-memory names are also read: stacked
 * "mlp.experts.gate_up_proj" [E, 2F, D] (gate rows then up rows per expert) and
 * "mlp.experts.down_proj" [E, D, F], "mlp.gate.e_score_correction_bias", "mlp.shared_experts.". */
static enum kvx_status lag_moe_layer(struct kvx_model *m, const struct lag *a, int il,
                                     struct lag_layer *L, struct kvx_err *err)
{
    const int64_t D = m->hp.n_embd, F = a->moe_ff, E = a->n_expert, S = a->shared_ff;
    char n[192];
    enum kvx_status st;
    struct kvx_wtensor t;
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.mlp.%s", il, s), n)
    const bool stacked = kvx_model_find_tensor(m, NAME("experts.gate_up_proj"), &t);
    const char *bias = kvx_model_find_tensor(m, NAME("gate.e_score_correction_bias"), &t)
                           ? "gate.e_score_correction_bias" : "experts.e_score_correction_bias";
    const char *sh = kvx_model_find_tensor(m, NAME("shared_experts.gate_proj.weight"), &t)
                         ? "shared_experts" : "shared_expert";
    char sg[64], su[64], sd[64];
    snprintf(sg, sizeof sg, "%s.gate_proj.weight", sh);
    snprintf(su, sizeof su, "%s.up_proj.weight", sh);
    snprintf(sd, sizeof sd, "%s.down_proj.weight", sh);
    if ((st = kvx_model_bind_mat_f32(m, NAME("gate.weight"), D, E, &L->router, err)) ||
        (st = kvx_model_bind_vec(m, NAME(bias), E, true, &L->router_bias, err)) ||
        (st = kvx_model_bind_mat(m, NAME(sg), D, S, true, &L->w_gate, err)) ||
        (st = kvx_model_bind_mat(m, NAME(su), D, S, true, &L->w_up, err)) ||
        (st = kvx_model_bind_mat(m, NAME(sd), S, D, true, &L->w_down, err)))
        return st;
    struct kvx_mat *ex = calloc((size_t)(3 * E), sizeof *ex);
    if (!ex || (st = kvx_model_own(m, ex, err)) != KVX_OK)
        return ex ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    L->experts = ex;
    if (stacked) {
        struct kvx_wtensor gu, dn;
        size_t gu_rb, dn_rb;
        if ((st = kvx_model_bind_stack(m, NAME("experts.gate_up_proj"), E, 2 * F, D, &gu, &gu_rb, err)) ||
            (st = kvx_model_bind_stack(m, NAME("experts.down_proj"), E, D, F, &dn, &dn_rb, err)))
            return st;
        for (int64_t e = 0; e < E; e++) {
            ex[3 * e] = kvx_model_stack_mat(&gu, gu_rb, e * 2 * F, D, F);
            ex[3 * e + 1] = kvx_model_stack_mat(&gu, gu_rb, e * 2 * F + F, D, F);
            ex[3 * e + 2] = kvx_model_stack_mat(&dn, dn_rb, e * D, F, D);
        }
        return KVX_OK;
    }
#undef NAME
    static const char *const part[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int64_t e = 0; e < E; e++)
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%lld.%s.weight", il, (long long)e,
                     part[j]);
            if ((st = kvx_model_bind_mat(m, n, j < 2 ? D : F, j < 2 ? F : D, true, &ex[3 * e + j],
                                         err)))
                return st;
        }
    return KVX_OK;
}

static enum kvx_status lag_layer_weights(struct kvx_model *m, const struct lag *a, int il,
                                         struct kvx_err *err)
{
    struct lag_layer *L = &a->layers[il];
    const int64_t D = m->hp.n_embd, hd = a->head_dim, nq = (int64_t)L->n_head * hd;
    const int64_t nkv = (int64_t)a->n_head_kv * hd;
    const int64_t ng = a->gate_per_head ? L->n_head : nq;
    char n[160];
    enum kvx_status st;
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.%s", il, s), n)
    if ((st = kvx_model_bind_vec(m, NAME("input_layernorm.weight"), D, true, &L->attn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("post_attention_layernorm.weight"), D, true, &L->ffn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("self_attn.q_norm.weight"), hd, true, &L->q_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("self_attn.k_norm.weight"), hd, true, &L->k_norm, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.q_proj.weight"), D, nq, true, &L->wq, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.k_proj.weight"), D, nkv, true, &L->wk, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.v_proj.weight"), D, nkv, true, &L->wv, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.o_proj.weight"), nq, D, true, &L->wo, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.g_proj.weight"), D, ng, true, &L->wg, err)))
        return st;
    if (a->bias) {
        if ((st = kvx_model_bind_vec(m, NAME("self_attn.q_proj.bias"), nq, true, &L->bq, err)) ||
            (st = kvx_model_bind_vec(m, NAME("self_attn.k_proj.bias"), nkv, true, &L->bk, err)) ||
            (st = kvx_model_bind_vec(m, NAME("self_attn.v_proj.bias"), nkv, true, &L->bv, err)) ||
            (st = kvx_model_bind_vec(m, NAME("self_attn.o_proj.bias"), D, true, &L->bo, err)))
            return st;
    } else {
        struct kvx_wtensor t;
        if (kvx_model_find_tensor(m, NAME("self_attn.q_proj.bias"), &t))
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is in the file but config.json "
                               "says attention_bias is false", n);
    }
    if (!L->sparse &&
        ((st = kvx_model_bind_mat(m, NAME("mlp.gate_proj.weight"), D, a->n_ff, true, &L->w_gate, err)) ||
         (st = kvx_model_bind_mat(m, NAME("mlp.up_proj.weight"), D, a->n_ff, true, &L->w_up, err)) ||
         (st = kvx_model_bind_mat(m, NAME("mlp.down_proj.weight"), a->n_ff, D, true, &L->w_down, err))))
        return st;
#undef NAME
    return L->sparse ? lag_moe_layer(m, a, il, L, err) : KVX_OK;
}

static enum kvx_status lag_load(struct kvx_model *m, struct kvx_err *err)
{
    const struct lag *a = m->arch_data;
    const struct kvx_hparams *hp = &m->hp;
    enum kvx_status st;
    if ((st = kvx_model_bind_mat(m, "model.embed_tokens.weight", hp->n_embd, hp->n_vocab, true,
                                 &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, "model.norm.weight", hp->n_embd, true, &m->output_norm, err)))
        return st;
    if (!hp->tie_embd && (st = kvx_model_bind_mat(m, "lm_head.weight", hp->n_embd, hp->n_vocab,
                                                  true, &m->output, err)))
        return st;
    if (hp->tie_embd)
        m->output = m->tok_embd;
    for (int il = 0; il < a->n_layer; il++)
        if ((st = lag_layer_weights(m, a, il, err)) != KVX_OK)
            return st;
    return KVX_OK;
}

static void lag_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                              enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const struct lag *a = m->arch_data;
    for (int il = 0; il < a->n_layer; il++)
        layout->layers[il] = (struct kvx_layer_cache){
            .kind = a->layers[il].sliding ? KVX_KV_KIND_WINDOW : KVX_KV_KIND_FULL,
            .n_kv_heads = a->n_head_kv,
            .k_dim = a->head_dim,
            .v_dim = a->head_dim,
            .window = a->layers[il].sliding ? a->window : 0,
            .k_codec = k_codec,
            .v_codec = v_codec,
        };
}

/* ------------------------------------------------------------------------------------------ */
/* Forward: per-token row steps and matmuls, each a parallel region over the engine's threads */

struct lag_scratch {
    float *gate;               /* B x Hmax (per head) or Hmax d (per element): g_proj output */
    float *cs[2];              /* B x d: cos/sin per rope type */
    float *moe_x, *moe_y;      /* B x D: one expert's gathered inputs, outputs */
    float *route_w;            /* B x top_k routing weights (scaled) */
    int32_t *route_e;          /* B x top_k chosen experts */
    int32_t *list_t, *list_k;  /* B: tokens of one expert and the choice slot of each */
};

static int64_t lag_scratch_layout(const struct kvx_model *m, int64_t B, float *base,
                                  struct lag_scratch *sc)
{
    const struct lag *a = m->arch_data;
    const int64_t D = m->hp.n_embd, hd = a->head_dim, H = m->hp.n_head;
    const int64_t sizes[] = {B * H * hd, B * hd, B * hd, B * D, B * D, B * a->top_k,
                             B * a->top_k, B, B};
    float **slots[] = {&sc->gate, &sc->cs[0], &sc->cs[1], &sc->moe_x, &sc->moe_y, &sc->route_w,
                       (float **)&sc->route_e, (float **)&sc->list_t, (float **)&sc->list_k};
    return kvx_step_carve(base, sizes, slots, sizeof sizes / sizeof sizes[0]);
}

static int64_t lag_scratch_floats(const struct kvx_model *m, int64_t n_batch)
{
    struct lag_scratch sc;
    return lag_scratch_layout(m, n_batch, NULL, &sc);
}

enum phase { P_EMBED, P_ATTN_NORM, P_QK, P_GATE, P_OBIAS, P_FFN_NORM, P_SWIGLU, P_ROUTE,
             P_RESIDUAL };

struct step {
    const struct kvx_model *m;
    const struct lag *a;
    struct kvx_forward *f;
    const struct lag_layer *L;
    struct lag_scratch sc;
    int il;
    enum phase phase;
    bool add_ffn;              /* P_ATTN_NORM: x += the previous layer's FFN output first */
    int64_t ff;                /* P_SWIGLU: width */
};

/* softplus(z) = ln(1 + e^z), linear above 20 (torch's threshold). */
static float softplus(float z)
{
    return z > 20.0f ? z : log1pf(expf(z));
}

/* Biases, per-head q/k RMSNorm and RoPE of one token. */
static void qk_row(const struct step *s, int64_t t)
{
    const struct lag *a = s->a;
    const struct lag_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int hd = a->head_dim, nq = L->n_head * hd, nkv = a->n_head_kv * hd;
    const float eps = s->m->hp.norm_eps;
    float *q = f->s->q + t * nq, *k = f->s->k + t * nkv, *v = f->s->v + t * nkv;
    if (L->bq) {
        kvx_add(q, L->bq, nq);
        kvx_add(k, L->bk, nkv);
        kvx_add(v, L->bv, nkv);
    }
    const struct lag_rope *r = &a->rope[L->sliding];
    const float *cs = s->sc.cs[L->sliding] + t * hd;
    for (int h = 0; h < L->n_head; h++) {
        kvx_rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, eps);
        kvx_rope_apply(q + h * hd, cs, r->n_rot, KVX_ROPE_NEOX);
    }
    for (int h = 0; h < a->n_head_kv; h++) {
        kvx_rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, eps);
        kvx_rope_apply(k + h * hd, cs, r->n_rot, KVX_ROPE_NEOX);
    }
}

/* Routing of one token (transformers' LagunaTopKRouter, see the file header). */
static void route_row(const struct step *s, int64_t t)
{
    const struct lag *a = s->a;
    const int64_t D = s->m->hp.n_embd;
    const int E = a->n_expert;
    const float *h = s->f->s->xn + t * D;
    float score[LAG_MAX_EXPERTS], choice[LAG_MAX_EXPERTS];
    for (int e = 0; e < E; e++) {
        float z = 0;
        for (int64_t d = 0; d < D; d++)
            z += h[d] * s->L->router[(int64_t)e * D + d];
        if (a->softcap > 0)
            z = tanhf(z / a->softcap) * a->softcap;
        score[e] = 1.0f / (1.0f + expf(-z));
        choice[e] = score[e] + s->L->router_bias[e];
    }
    int32_t *sel = s->sc.route_e + t * a->top_k;
    float *w = s->sc.route_w + t * a->top_k, sum = 0;
    for (int k = 0; k < a->top_k; k++) {
        int best = 0;
        for (int e = 1; e < E; e++)
            if (choice[e] > choice[best])
                best = e;
        sel[k] = best;
        w[k] = score[best];
        sum += w[k];
        choice[best] = -INFINITY;
    }
    for (int k = 0; k < a->top_k; k++)
        w[k] = w[k] / sum * a->routed_scale;
}

static void row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct lag *a = s->a;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, F = s->ff, hd = a->head_dim;
    float *x = f->s->x + t * D, *xn = f->s->xn + t * D;
    switch (s->phase) {
    case P_EMBED: {
        const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)m->tok_embd.type,
                                                              KVX_ISA_SCALAR);
        k->to_float(m->tok_embd.data + (size_t)f->tokens[t] * m->tok_embd.row_bytes, x, D);
        for (int r = 0; r < 2; r++) {
            const struct lag_rope *rp = &a->rope[r];
            float *cs = s->sc.cs[r] + t * hd;
            for (int i = 0; rp->inv && i < rp->n_rot / 2; i++) {
                const float ang = (float)f->pos[t] * rp->inv[i];
                cs[2 * i] = cosf(ang) * rp->attn_factor;
                cs[2 * i + 1] = sinf(ang) * rp->attn_factor;
            }
        }
        break;
    }
    case P_ATTN_NORM:
        if (s->add_ffn)
            kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, s->L->attn_norm, D, m->hp.norm_eps);
        break;
    case P_QK: qk_row(s, t); break;
    case P_GATE: {   /* o *= softplus(g) per head or per element */
        const int64_t nq = (int64_t)s->L->n_head * hd, ng = a->gate_per_head ? s->L->n_head : nq;
        float *o = f->s->attn + t * nq;
        const float *g = s->sc.gate + t * ng;
        for (int64_t i = 0; i < nq; i++)
            o[i] *= softplus(g[a->gate_per_head ? i / hd : i]);
        break;
    }
    case P_OBIAS: kvx_add(xn, s->L->bo, D); break;
    case P_FFN_NORM:
        kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, s->L->ffn_norm, D, m->hp.norm_eps);
        break;
    case P_SWIGLU:
        kvx_swiglu_isa(f->isa, f->s->gate + t * F, f->s->gate + t * F, f->s->up + t * F, F);
        break;
    case P_ROUTE: route_row(s, t); break;
    case P_RESIDUAL: kvx_add(x, xn, D); break;
    }
}

static void row_fn(void *ctx, int64_t t) { row(ctx, t); }

static void run_rows(struct step *s, enum phase p)
{
    s->phase = p;
    kvx_step_rows(s->f, row_fn, s);
}

static void attention_block(struct step *s)
{
    const struct lag *a = s->a;
    const struct lag_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = s->m->hp.n_embd, hd = a->head_dim, nq = (int64_t)L->n_head * hd;
    const int64_t nkv = (int64_t)a->n_head_kv * hd;
    run_rows(s, P_ATTN_NORM);
    kvx_step_matmul(s->f, &L->wq, f->s->xn, D, f->s->q, nq);
    kvx_step_matmul(s->f, &L->wk, f->s->xn, D, f->s->k, nkv);
    kvx_step_matmul(s->f, &L->wv, f->s->xn, D, f->s->v, nkv);
    kvx_step_matmul(s->f, &L->wg, f->s->xn, D, s->sc.gate, L->wg.n_out);
    run_rows(s, P_QK);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = L->n_head, .n_head_kv = a->n_head_kv, .head_dim = (int32_t)hd,
        .q = f->s->q, .q_ld = nq, .out = f->s->attn, .out_ld = nq,
        .scale = 1.0f / sqrtf((float)hd), .acc = f->acc,
    };
    const struct kvx_kv_rows kv = {.k = f->s->k, .v = f->s->v, .k_ld = nkv, .v_ld = nkv};
    kvx_step_store_attend(f, s->il, &kv, &ab);
    run_rows(s, P_GATE);
    kvx_step_matmul(s->f, &L->wo, f->s->attn, nq, f->s->xn, D);
    if (L->bo)
        run_rows(s, P_OBIAS);
}

/* SwiGLU MLP of the rows `in` into `out` (width from the gate matrix). */
static void mlp(struct step *s, const struct kvx_mat *wg, const struct kvx_mat *wu,
                const struct kvx_mat *wd, const float *in, float *out)
{
    const int64_t D = s->m->hp.n_embd, F = wg->n_out;
    kvx_step_matmul(s->f, wg, in, D, s->f->s->gate, F);
    kvx_step_matmul(s->f, wu, in, D, s->f->s->up, F);
    s->ff = F;
    run_rows(s, P_SWIGLU);
    kvx_step_matmul(s->f, wd, s->f->s->gate, F, out, D);
}

/* Routed expert e over the n gathered rows of moe_x into moe_y. */
static void routed_expert(void *ctx, int32_t e, int64_t n)
{
    (void)n;
    struct step *s = ctx;
    const struct kvx_mat *w = &s->L->experts[3 * e];
    mlp(s, &w[0], &w[1], &w[2], s->sc.moe_x, s->sc.moe_y);
}

/* The routed experts: each expert runs once over the tokens that chose it and adds its
 * weighted output to their residual rows x (the shared expert's output follows in xn). */
static void routed_experts(struct step *s)
{
    const struct lag *a = s->a;
    run_rows(s, P_ROUTE);
    const struct kvx_moe_dispatch d = {
        .n_expert = a->n_expert, .top_k = a->top_k, .route_e = s->sc.route_e,
        .route_w = s->sc.route_w, .x = s->f->s->xn, .acc = s->f->s->x, .dim = s->m->hp.n_embd,
        .xbuf = s->sc.moe_x, .ybuf = s->sc.moe_y, .list_t = s->sc.list_t,
        .list_k = s->sc.list_k, .expert = routed_expert, .ctx = s,
    };
    kvx_step_moe(s->f, &d);
}

static void ffn_block(struct step *s)
{
    const struct lag_layer *L = s->L;
    struct kvx_forward *f = s->f;
    run_rows(s, P_FFN_NORM);
    if (L->sparse)
        routed_experts(s);
    /* the dense MLP or the shared expert, into xn (added to x by the next norm) */
    mlp(s, &L->w_gate, &L->w_up, &L->w_down, f->s->xn, f->s->xn);
}

static void lag_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    const struct lag *a = m->arch_data;
    struct step s = {.m = m, .a = a, .f = f};
    lag_scratch_layout(m, f->n_tok, f->s->extra, &s.sc);
    run_rows(&s, P_EMBED);
    for (int il = 0; il < a->n_layer; il++) {
        s.il = il;
        s.L = &a->layers[il];
        s.add_ffn = il > 0;
        attention_block(&s);
        ffn_block(&s);
    }
    run_rows(&s, P_RESIDUAL);
    kvx_step_logits(m, f);
}

/* Parameters as lag_load binds them: embed_tokens (and lm_head unless tied), the final norm;
 * per layer two norms, q/k norms (d each), q/k/v/o and the gate projection (Hq_l or Hq_l d
 * outputs), their biases under attention_bias; a dense SwiGLU MLP, or the router (weight and
 * e_score_correction_bias), the shared expert and n_expert routed ones.  Active: all of it
 * but the input embedding table and all but top_k of the routed experts. */
static enum kvx_status lag_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                       struct kvx_err *err)
{
    (void)err;
    const struct lag *a = m->arch_data;
    const double D = m->hp.n_embd, V = m->hp.n_vocab, hd = a->head_dim;
    const double nkv = (double)a->n_head_kv * hd, expert = 3 * D * a->moe_ff;
    double total = V * D * (m->hp.tie_embd ? 1 : 2) + D;
    double active = V * D + D;
    for (int il = 0; il < a->n_layer; il++) {
        const struct lag_layer *L = &a->layers[il];
        const double nq = (double)L->n_head * hd, ng = a->gate_per_head ? L->n_head : nq;
        double n = 2 * D + 2 * hd + 2 * D * nq + 2 * D * nkv + D * ng;
        if (a->bias)
            n += nq + 2 * nkv + D;
        double routed = 0, used = 0;
        if (L->sparse) {
            n += D * a->n_expert + a->n_expert + 3 * D * a->shared_ff;
            routed = a->n_expert * expert;
            used = a->top_k * expert;
        } else {
            n += 3 * D * a->n_ff;
        }
        total += n + routed;
        active += n + used;
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

const struct kvx_arch kvx_arch_laguna = {
    .name = "laguna",
    .hparams = lag_hparams,
    .load_weights = lag_load,
    .declare_cache = lag_declare_cache,
    .forward = lag_forward,
    .scratch_floats = lag_scratch_floats,
    .param_count = lag_param_count,
};
