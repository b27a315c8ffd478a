/* model/gemma4: the Gemma 4 text model (transformers Gemma4ForCausalLM, model_type gemma4_text;
 * or the text part of a multimodal checkpoint, model_type gemma4, hyper-parameters under
 * "text_config" and weights under "model.language_model."), from safetensors + config.json.
 *
 * Layers are sliding-window or full ("layer_types"), each type with its own head dim and
 * KV-head count (sliding: head_dim, num_key_value_heads; full: global_head_dim, and
 * num_global_key_value_heads when attention_k_eq_v; or "per_layer_config" as transformers 5.x
 * saves it) and its own RoPE.  With D = hidden size, H query heads, d the layer's head dim,
 * every RMSNorm below is RMS(x; w) = x (mean(x²) + eps)^-1/2 w (w used as is, no 1 + w),
 * RMS0 the same without a weight:
 *
 *   e = Embed[tok] · √D             (√D rounded to the embedding's dtype, as transformers does)
 *   PLE (P = hidden_size_per_layer_input > 0), for layer l:
 *     ple_l = (RMS((e Wplm)_l · D^-1/2; per_layer_projection_norm) + EmbedPLE[tok]_l · √P) · 2^-1/2
 *   per layer, x the residual stream:
 *     h = RMS(x; input_layernorm)
 *     q = RoPE(RMS(h Wq per head; q_norm))
 *     owning layers:  k0 = h Wk;  v0 = h Wv, or k0 when attention_k_eq_v on a full layer
 *                     k = RoPE(RMS(k0 per head; k_norm));  v = RMS0(v0 per head);  cache (k, v)
 *     shared layers (the last num_kv_shared_layers): no k/v of their own; they read the cache
 *                     of the donor, the last owning layer of the same type
 *     a = softmax(q Kᵀ · 1.0) V over the visible keys (sliding: the last sliding_window
 *         positions, the query's own included), head h reading KV head h / (H / Hkv)
 *     x = x + RMS(a Wo; post_attention_layernorm)
 *     h = RMS(x; pre_feedforward_layernorm)
 *     m = (gelu_tanh(h Wgate) ⊙ h Wup) Wdown
 *         (shared layers with use_double_wide_mlp: twice intermediate_size)
 *     MoE (enable_moe_block), r the residual x before pre_feedforward_layernorm:
 *         s = softmax((RMS0(r) ⊙ router.scale · D^-1/2) Wrouter)      over the E experts
 *         the top_k experts by s, w_e = s_e / Σ_top s · per_expert_scale[e]
 *         y = Σ_e w_e (gelu_tanh(u Wg_e) ⊙ u Wu_e) Wd_e,  u = RMS(r; pre_feedforward_layernorm_2)
 *           (gate_up_proj[e] holds Wg_e then Wu_e)
 *         m = RMS(m; post_feedforward_layernorm_1) + RMS(y; post_feedforward_layernorm_2)
 *     x = x + RMS(m; post_feedforward_layernorm)
 *     PLE:  x = x + RMS((gelu_tanh(x Wgate_l) ⊙ ple_l) Wproj_l; post_per_layer_input_norm)
 *     x = x · layer_scalar
 *   logits = c · tanh((RMS(x; norm) Embedᵀ) / c), c = final_logit_softcapping (or none)
 *
 * RoPE pairs (j, j + d/2) (rotate_half).  Sliding ("default"): inv_i = θ^(-2i/d) for all d/2
 * pairs.  Full ("proportional", partial factor p): inv_i = θ^(-2i/d) / factor for
 * i < int(p d / 2) — the exponent over the whole d — and 0 (no rotation) for the other pairs.
 *
 * The KV cache: sliding owning layers are WINDOW layers, full owning layers FULL, shared
 * layers SHARED (kv/layout.h); the attention itself is attn/causal.c with scale 1.
 *
 * The experts' weights are the checkpoint's 3-D tensors [E, 2 Im, D] and [E, D, Im], one
 * matrix per expert pointing into them (F32, F16 or BF16). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "engine/forward.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "model/steps.h"
#include "ops/f16.h"
#include "util/err.h"
#include "util/json.h"

enum { G4_SLIDING = 0, G4_FULL = 1 };

struct g4_layer {
    int type;                  /* G4_SLIDING or G4_FULL */
    int32_t hd, nkv, ff;       /* head dim, KV heads, MLP width */
    int32_t donor;             /* shared layers: the layer whose cache is read; -1: owns one */
    bool k_eq_v;               /* V is the raw K projection */
    const float *in_norm, *post_attn_norm, *pre_ff_norm, *post_ff_norm, *q_norm, *k_norm;
    const float *ple_norm, *scalar;
    struct kvx_mat wq, wk, wv, wo, w_gate, w_up, w_down, ple_gate, ple_proj;
    /* MoE */
    const float *post_ff_norm1, *post_ff_norm2, *pre_ff_norm2;
    const float *router, *router_scale, *expert_scale;   /* f32 [E, D], [D], [E] */
    struct kvx_mat *gate_up, *down;                     /* E each, owned by the model */
};

struct g4 {
    const struct kvx_jv *cfg;  /* the text config (inside m->config) */
    const char *prefix;        /* "model." or "model.language_model." */
    int32_t window, n_shared, ple, ple_vocab;
    float softcap;             /* 0: none */
    int32_t hd[2];             /* head dim per type (0: no layer of the type) */
    float *inv[2];             /* per type: hd/2 inverse frequencies */
    int32_t max_kv;            /* widest nkv * hd */
    bool moe;
    int32_t n_expert, top_k, moe_ff;
    struct kvx_mat ple_embd, ple_model_proj;
    const float *ple_proj_norm;
    float embd_scale, ple_embd_scale;
    struct g4_layer *layers;
};

static void g4_free(void *p)
{
    struct g4 *g = p;
    if (!g)
        return;
    free(g->inv[0]);
    free(g->inv[1]);
    free(g->layers);
    free(g);
}

/* ------------------------------------------------------------------------------------------ */
/* Hyper-parameters */

/* rope_parameters[type]: default or proportional inverse frequencies for head dim d. */
static enum kvx_status g4_rope(struct g4 *g, int type, struct kvx_err *err)
{
    static const char *const names[2] = {"sliding_attention", "full_attention"};
    const int32_t d = g->hd[type];
    if (d == 0)
        return KVX_OK;
    const struct kvx_jv *rp = kvx_jv_get(g->cfg, "rope_parameters");
    if (rp && rp->type == KVX_JV_NULL)
        rp = NULL;
    if (rp && rp->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'rope_parameters' is not an "
                           "object");
    const struct kvx_jv *p = rp ? kvx_jv_get(rp, names[type]) : NULL;
    if (rp && (!p || p->type != KVX_JV_OBJECT))
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters.%s is missing or "
                           "not an object", names[type]);
    /* absent rope_parameters: transformers' defaults */
    const char *rtype = p ? "default" : type == G4_FULL ? "proportional" : "default";
    double theta = type == G4_FULL ? 1e6 : 1e4, partial = type == G4_FULL && !p ? 0.25 : 1.0,
           factor = 1.0;
    enum kvx_status st;
    if (p && ((st = kvx_hf_str(p, "rope_type", rtype, &rtype, err)) ||
              (st = kvx_hf_pos_float(p, "rope_theta", theta, &theta, err)) ||
              (st = kvx_hf_pos_float(p, "partial_rotary_factor", partial, &partial, err)) ||
              (st = kvx_hf_pos_float(p, "factor", factor, &factor, err))))
        return kvx_err_prefix(err, "rope_parameters.%s", names[type]), st;
    int32_t angles = d / 2;
    if (strcmp(rtype, "proportional") == 0) {
        if (partial > 1.0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters.%s: "
                               "partial_rotary_factor %g is above 1", names[type], partial);
        angles = (int32_t)floor(partial * d / 2);   /* int(p * d // 2) */
    } else if (strcmp(rtype, "default") == 0) {
        factor = 1.0;                                /* default RoPE ignores both */
    } else {
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope_parameters.%s: rope "
                           "type '%.40s' is not supported for gemma4 (default, proportional)",
                           names[type], rtype);
    }
    float *inv = calloc((size_t)(d / 2), sizeof *inv);
    if (!inv)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < angles; i++)
        inv[i] = (float)(1.0 / pow(theta, (double)(2 * i) / d) / factor);
    g->inv[type] = inv;
    return KVX_OK;
}

/* layer_types: a list of n strings, or absent (5 sliding, 1 full, repeating); the last layer
 * is full whatever the list says (transformers forces it). */
static enum kvx_status g4_layer_types(struct g4 *g, int32_t n, struct kvx_err *err)
{
    const struct kvx_jv *lt = kvx_jv_get(g->cfg, "layer_types");
    if (lt && lt->type != KVX_JV_NULL && (lt->type != KVX_JV_ARRAY || lt->len != (size_t)n))
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'layer_types' is not a list "
                           "of num_hidden_layers (%d) strings", (int)n);
    for (int32_t i = 0; i < n; i++) {
        struct g4_layer *L = &g->layers[i];
        if (!lt || lt->type == KVX_JV_NULL) {
            L->type = (i + 1) % 6 ? G4_SLIDING : G4_FULL;
        } else {
            const struct kvx_jv *v = &lt->items[i];
            if (v->type == KVX_JV_STRING && strcmp(v->str, "sliding_attention") == 0)
                L->type = G4_SLIDING;
            else if (v->type == KVX_JV_STRING && strcmp(v->str, "full_attention") == 0)
                L->type = G4_FULL;
            else
                return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer_types[%d] is not "
                                   "\"sliding_attention\" or \"full_attention\"", (int)i);
        }
    }
    g->layers[n - 1].type = G4_FULL;
    return KVX_OK;
}

/* Head dims and KV heads per layer: per_layer_config when present (transformers 5.x), else
 * global_head_dim / num_global_key_value_heads for full layers. */
static enum kvx_status g4_layer_dims(struct g4 *g, int32_t n, int64_t hd, int64_t nkv,
                                     bool k_eq_v, struct kvx_err *err)
{
    int64_t ghd, gkv;
    enum kvx_status st;
    if ((st = kvx_hf_int(g->cfg, "global_head_dim", false, 512, 1, 1 << 16, &ghd, err)) ||
        (st = kvx_hf_int(g->cfg, "num_global_key_value_heads", false, 0, 1, 1 << 16, &gkv,
                         err)))
        return st;
    const struct kvx_jv *plc = kvx_jv_get(g->cfg, "per_layer_config");
    if (plc && plc->type == KVX_JV_NULL)
        plc = NULL;
    if (plc && plc->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'per_layer_config' is not an "
                           "object");
    for (int32_t i = 0; i < n; i++) {
        struct g4_layer *L = &g->layers[i];
        int64_t d = hd, kv = nkv;
        if (!plc && L->type == G4_FULL) {
            d = ghd;
            kv = k_eq_v && gkv ? gkv : nkv;
        }
        char key[32];
        snprintf(key, sizeof key, "%d", (int)i);
        const struct kvx_jv *o = plc ? kvx_jv_get(plc, key) : NULL;
        if (o && o->type != KVX_JV_OBJECT)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: per_layer_config.%s is not an "
                               "object", key);
        for (size_t j = 0; o && j < o->len; j++)
            if (strcmp(o->keys[j], "head_dim") != 0 &&
                strcmp(o->keys[j], "num_key_value_heads") != 0)
                return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: per_layer_config.%s."
                                   "%.40s is not supported (head_dim, num_key_value_heads)", key,
                                   o->keys[j]);
        if (o && ((st = kvx_hf_int(o, "head_dim", false, d, 2, 1 << 16, &d, err)) ||
                  (st = kvx_hf_int(o, "num_key_value_heads", false, kv, 1, 1 << 16, &kv, err))))
            return kvx_err_prefix(err, "per_layer_config.%s", key), st;
        if (d % 2)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer %d: head dim %lld is "
                               "odd", (int)i, (long long)d);
        L->hd = (int32_t)d;
        L->nkv = (int32_t)kv;
        L->k_eq_v = k_eq_v && L->type == G4_FULL;
        if (g->hd[L->type] && g->hd[L->type] != L->hd)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: layers of one type with "
                               "different head dims (%d and %d) are not supported",
                               (int)g->hd[L->type], (int)L->hd);
        g->hd[L->type] = L->hd;
    }
    return KVX_OK;
}

/* The donor of every shared layer: the last owning layer of its type (transformers'
 * kv_sharing_modes). */
static enum kvx_status g4_sharing(struct g4 *g, int32_t n, struct kvx_err *err)
{
    const int32_t first = n - g->n_shared;
    if (g->n_shared > 0 && first == 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: num_kv_shared_layers = "
                           "num_hidden_layers (no layer owns a cache) is not supported");
    for (int32_t i = 0; i < n; i++) {
        struct g4_layer *L = &g->layers[i];
        L->donor = -1;
        if (i < first)
            continue;
        for (int32_t j = first - 1; j >= 0 && L->donor < 0; j--)
            if (g->layers[j].type == L->type)
                L->donor = j;
        if (L->donor < 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer %d shares the KV cache "
                               "of a %s layer, but no earlier layer of that type owns one",
                               (int)i, L->type == G4_FULL ? "full" : "sliding");
        const struct g4_layer *D = &g->layers[L->donor];
        L->hd = D->hd;   /* the same type: the same dims */
        L->nkv = D->nkv;
    }
    return KVX_OK;
}

static float round_to(uint32_t dtype, float f)
{
    if (dtype == KVX_DTYPE_BF16)
        return kvx_bf16_to_f32(kvx_f32_to_bf16(f));
    if (dtype == KVX_DTYPE_F16)
        return kvx_f16_to_f32(kvx_f32_to_f16(f));
    return f;
}

static enum kvx_status g4_hparams(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "gemma4 is read from safetensors + "
                           "config.json only");
    struct g4 *g = calloc(1, sizeof *g);
    if (!g)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    m->arch_data = g;
    m->free_arch_data = g4_free;
    g->cfg = m->config;
    g->prefix = "model.";
    if (strcmp(m->arch_name, "gemma4") == 0) {
        g->cfg = kvx_jv_get(m->config, "text_config");
        g->prefix = "model.language_model.";
        if (!g->cfg || g->cfg->type != KVX_JV_OBJECT)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: model_type gemma4 without a "
                               "'text_config' object");
    }
    const struct kvx_jv *c = g->cfg;
    struct kvx_hparams *hp = &m->hp;
    int64_t embd, layers, heads, kv, hd, ff, vocab, ctx, window, shared, ple, ple_vocab;
    double eps, softcap = 0;
    bool k_eq_v, wide, bias;
    const char *act, *bidir;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 20, &embd, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &layers, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &heads, err)) ||
        (st = kvx_hf_int(c, "num_key_value_heads", true, 0, 1, 4096, &kv, err)) ||
        (st = kvx_hf_int(c, "head_dim", true, 0, 2, 1 << 16, &hd, err)) ||
        (st = kvx_hf_int(c, "intermediate_size", true, 0, 1, 1 << 24, &ff, err)) ||
        (st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 131072, 1, (int64_t)1 << 30, &ctx,
                         err)) ||
        (st = kvx_hf_int(c, "sliding_window", false, 512, 1, (int64_t)1 << 30, &window, err)) ||
        (st = kvx_hf_int(c, "num_kv_shared_layers", false, 0, 0, layers, &shared, err)) ||
        /* absent: the class default 256; null: none (as transformers reads it) */
        (st = kvx_hf_int(c, "hidden_size_per_layer_input", false,
                         kvx_jv_get(c, "hidden_size_per_layer_input") ? 0 : 256, 0, 1 << 16, &ple,
                         err)) ||
        (st = kvx_hf_int(c, "vocab_size_per_layer_input", false, 262144, 1, INT32_MAX,
                         &ple_vocab, err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-6, &eps, err)) ||
        (st = kvx_hf_pos_float(c, "final_logit_softcapping", 0, &softcap, err)) ||
        (st = kvx_hf_bool(c, "attention_k_eq_v", false, &k_eq_v, err)) ||
        (st = kvx_hf_bool(c, "use_double_wide_mlp", false, &wide, err)) ||
        (st = kvx_hf_bool(c, "enable_moe_block", false, &g->moe, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", false, &bias, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", true, &hp->tie_embd, err)) ||
        (st = kvx_hf_str(c, "hidden_activation", "gelu_pytorch_tanh", &act, err)) ||
        (st = kvx_hf_str(c, "use_bidirectional_attention", "", &bidir, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (hp->eos_id < 0 && c != m->config &&
        (st = kvx_hf_token_id(m->config, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (hp->bos_id < 0 && c != m->config &&
        (st = kvx_hf_token_id(m->config, "bos_token_id", &hp->bos_id, err)))
        return st;
    if (bias || strcmp(act, "gelu_pytorch_tanh") != 0 || strcmp(bidir, "all") == 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: attention_bias true, "
                           "hidden_activation '%.40s' or use_bidirectional_attention \"all\" is "
                           "not supported for gemma4", act);
    if (ple && ple_vocab != vocab)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: vocab_size_per_layer_input "
                           "%lld differs from vocab_size %lld", (long long)ple_vocab,
                           (long long)vocab);
    if (g->moe) {   /* read for the record; the weights are refused at load */
        int64_t ne, k, mff;
        if ((st = kvx_hf_int(c, "num_experts", true, 0, 1, 4096, &ne, err)) ||
            (st = kvx_hf_int(c, "top_k_experts", true, 0, 1, ne, &k, err)) ||
            (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 24, &mff, err)))
            return st;
        g->n_expert = (int32_t)ne;
        g->top_k = (int32_t)k;
        g->moe_ff = (int32_t)mff;
    }
    g->window = (int32_t)window;
    g->n_shared = (int32_t)shared;
    g->ple = (int32_t)ple;
    g->ple_vocab = (int32_t)ple_vocab;
    g->softcap = (float)softcap;
    if (!(g->layers = calloc((size_t)layers, sizeof *g->layers)))
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const int32_t n = (int32_t)layers;
    if ((st = g4_layer_types(g, n, err)) || (st = g4_layer_dims(g, n, hd, kv, k_eq_v, err)) ||
        (st = g4_sharing(g, n, err)) || (st = g4_rope(g, G4_SLIDING, err)) ||
        (st = g4_rope(g, G4_FULL, err)))
        return st;
    int32_t min_kv = INT32_MAX, max_hd = 0, max_ff = 0;
    for (int32_t i = 0; i < n; i++) {
        struct g4_layer *L = &g->layers[i];
        L->ff = (int32_t)ff * (wide && L->donor >= 0 ? 2 : 1);
        if (heads % L->nkv)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer %d: %lld attention "
                               "heads are not a multiple of its %d KV heads", (int)i,
                               (long long)heads, (int)L->nkv);
        min_kv = L->nkv < min_kv ? L->nkv : min_kv;
        max_hd = L->hd > max_hd ? L->hd : max_hd;
        max_ff = L->ff > max_ff ? L->ff : max_ff;
        g->max_kv = L->nkv * L->hd > g->max_kv ? L->nkv * L->hd : g->max_kv;
    }
    /* The engine sizes its buffers from hp: the widest head dim and MLP, and the fewest KV
     * heads (the largest query group) bound every layer's attention workspace.  K and V live
     * in this file's scratch (their widths differ by layer). */
    hp->n_vocab = (int32_t)vocab;
    hp->n_embd = (int32_t)embd;
    hp->n_layer = n;
    hp->n_head = (int32_t)heads;
    hp->n_head_kv = min_kv;
    hp->head_dim = max_hd;
    hp->n_ff = max_ff;
    hp->n_ctx_train = ctx;
    hp->norm_eps = (float)eps;
    hp->n_rot = max_hd;
    hp->rope_kind = KVX_ROPE_NEOX;
    hp->rope_theta = 0;   /* unused: the tables are in g->inv */
    hp->rope_freq_scale = 1;
    if ((ple > embd && ple > heads * max_hd && ple > max_ff) ||
        (g->moe_ff > embd && g->moe_ff > heads * max_hd && g->moe_ff > max_ff))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: hidden_size_per_layer_input "
                           "%lld or moe_intermediate_size %d is wider than every other "
                           "projection input", (long long)ple, (int)g->moe_ff);
    return KVX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Weights */

/* A 3-D expert tensor [E, n_out, n_in] as E matrices of [n_in, n_out] into its data. */
static enum kvx_status bind_experts(struct kvx_model *m, const char *name, int64_t E,
                                    int64_t n_in, int64_t n_out, struct kvx_mat **out,
                                    struct kvx_err *err)
{
    struct kvx_wtensor t;
    size_t row_bytes;
    enum kvx_status st = kvx_model_bind_stack(m, name, E, n_out, n_in, &t, &row_bytes, err);
    if (st != KVX_OK)
        return st;
    struct kvx_mat *w = calloc((size_t)E, sizeof *w);
    if (!w || (st = kvx_model_own(m, w, err)) != KVX_OK)
        return w ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int64_t e = 0; e < E; e++)
        w[e] = kvx_model_stack_mat(&t, row_bytes, e * n_out, n_in, n_out);
    *out = w;
    return KVX_OK;
}

static enum kvx_status g4_layer_weights(struct kvx_model *m, struct g4 *g, int il,
                                        struct kvx_err *err)
{
    struct g4_layer *L = &g->layers[il];
    const int64_t D = m->hp.n_embd, H = m->hp.n_head, hd = L->hd, kvd = (int64_t)L->nkv * hd;
    char n[256];
    enum kvx_status st;
#define NAME(s) (snprintf(n, sizeof n, "%slayers.%d.%s", g->prefix, il, s), n)
    if ((st = kvx_model_bind_vec(m, NAME("input_layernorm.weight"), D, true, &L->in_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("post_attention_layernorm.weight"), D, true, &L->post_attn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("pre_feedforward_layernorm.weight"), D, true, &L->pre_ff_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("post_feedforward_layernorm.weight"), D, true, &L->post_ff_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("layer_scalar"), 1, true, &L->scalar, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.q_proj.weight"), D, H * hd, true, &L->wq, err)) ||
        (st = kvx_model_bind_vec(m, NAME("self_attn.q_norm.weight"), hd, true, &L->q_norm, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.o_proj.weight"), H * hd, D, true, &L->wo, err)))
        return st;
    if (L->donor < 0 &&
        ((st = kvx_model_bind_mat(m, NAME("self_attn.k_proj.weight"), D, kvd, true, &L->wk, err)) ||
         (st = kvx_model_bind_vec(m, NAME("self_attn.k_norm.weight"), hd, true, &L->k_norm, err)) ||
         (!L->k_eq_v &&
          (st = kvx_model_bind_mat(m, NAME("self_attn.v_proj.weight"), D, kvd, true, &L->wv, err)))))
        return st;
    if ((st = kvx_model_bind_mat(m, NAME("mlp.gate_proj.weight"), D, L->ff, true, &L->w_gate, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.up_proj.weight"), D, L->ff, true, &L->w_up, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.down_proj.weight"), L->ff, D, true, &L->w_down, err)))
        return st;
    if (g->ple &&
        ((st = kvx_model_bind_mat(m, NAME("per_layer_input_gate.weight"), D, g->ple, true, &L->ple_gate, err)) ||
         (st = kvx_model_bind_mat(m, NAME("per_layer_projection.weight"), g->ple, D, true, &L->ple_proj, err)) ||
         (st = kvx_model_bind_vec(m, NAME("post_per_layer_input_norm.weight"), D, true, &L->ple_norm, err))))
        return st;
    const int64_t E = g->n_expert, Im = g->moe_ff;
    if (g->moe &&
        ((st = kvx_model_bind_vec(m, NAME("post_feedforward_layernorm_1.weight"), D, true, &L->post_ff_norm1, err)) ||
         (st = kvx_model_bind_vec(m, NAME("post_feedforward_layernorm_2.weight"), D, true, &L->post_ff_norm2, err)) ||
         (st = kvx_model_bind_vec(m, NAME("pre_feedforward_layernorm_2.weight"), D, true, &L->pre_ff_norm2, err)) ||
         (st = kvx_model_bind_mat_f32(m, NAME("router.proj.weight"), D, E, &L->router, err)) ||
         (st = kvx_model_bind_vec(m, NAME("router.scale"), D, true, &L->router_scale, err)) ||
         (st = kvx_model_bind_vec(m, NAME("router.per_expert_scale"), E, true, &L->expert_scale, err)) ||
         (st = bind_experts(m, NAME("experts.gate_up_proj"), E, D, 2 * Im, &L->gate_up, err)) ||
         (st = bind_experts(m, NAME("experts.down_proj"), E, Im, D, &L->down, err))))
        return st;
#undef NAME
    return KVX_OK;
}

static enum kvx_status g4_load_weights(struct kvx_model *m, struct kvx_err *err)
{
    struct g4 *g = m->arch_data;
    const struct kvx_hparams *hp = &m->hp;
    char n[256];
    enum kvx_status st;
#define NAME(s) (snprintf(n, sizeof n, "%s%s", g->prefix, s), n)
    if ((st = kvx_model_bind_mat(m, NAME("embed_tokens.weight"), hp->n_embd, hp->n_vocab, true,
                                 &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, NAME("norm.weight"), hp->n_embd, true, &m->output_norm, err)))
        return st;
    if (g->ple &&
        ((st = kvx_model_bind_mat(m, NAME("embed_tokens_per_layer.weight"),
                                  (int64_t)hp->n_layer * g->ple, g->ple_vocab, true,
                                  &g->ple_embd, err)) ||
         (st = kvx_model_bind_mat(m, NAME("per_layer_model_projection.weight"), hp->n_embd,
                                  (int64_t)hp->n_layer * g->ple, true, &g->ple_model_proj,
                                  err)) ||
         (st = kvx_model_bind_vec(m, NAME("per_layer_projection_norm.weight"), g->ple, true,
                                  &g->ple_proj_norm, err))))
        return st;
#undef NAME
    if (hp->tie_embd)
        m->output = m->tok_embd;
    else if ((st = kvx_model_bind_mat(m, "lm_head.weight", hp->n_embd, hp->n_vocab, true,
                                      &m->output, err)))
        return st;
    /* √D and √P as transformers applies them: a scalar cast to the embedding's dtype */
    g->embd_scale = round_to(m->tok_embd.type, sqrtf((float)hp->n_embd));
    g->ple_embd_scale = g->ple ? round_to(g->ple_embd.type, sqrtf((float)g->ple)) : 0;
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = g4_layer_weights(m, g, il, err)) != KVX_OK)
            return st;
    return KVX_OK;
}

static void g4_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                             enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const struct g4 *g = m->arch_data;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const struct g4_layer *L = &g->layers[il];
        struct kvx_layer_cache *c = &layout->layers[il];
        if (L->donor >= 0) {
            *c = (struct kvx_layer_cache){.kind = KVX_KV_KIND_SHARED, .shared_from = L->donor};
            continue;
        }
        *c = (struct kvx_layer_cache){
            .kind = L->type == G4_FULL ? KVX_KV_KIND_FULL : KVX_KV_KIND_WINDOW,
            .n_kv_heads = L->nkv,
            .k_dim = L->hd,
            .v_dim = L->hd,
            .window = L->type == G4_FULL ? 0 : g->window,
            .k_codec = k_codec,
            .v_codec = v_codec,
        };
    }
}

/* Every tensor the forward pass reads (shared layers have no k/v/k_norm): the embedding (and
 * lm_head unless tied), final norm, PLE tables; per layer q/o (+ k/v on owning layers, no v on
 * K = V layers), q/k norms, four norms, layer_scalar, the GeGLU MLP, PLE gate/projection/norm,
 * and the MoE router, experts and three extra norms.  Active: all of it but the two embedding
 * tables (one row each per token; the main one counts when tied, as lm_head) and all but
 * top_k of the experts. */
static enum kvx_status g4_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                      struct kvx_err *err)
{
    (void)err;
    const struct g4 *g = m->arch_data;
    const struct kvx_hparams *hp = &m->hp;
    const double D = hp->n_embd, V = hp->n_vocab, H = hp->n_head, L = hp->n_layer, P = g->ple;
    const double ple_tab = P > 0 ? (double)g->ple_vocab * L * P : 0;
    const double ple_rest = P > 0 ? L * P * D + P : 0;
    double total = V * D * (hp->tie_embd ? 1 : 2) + D + ple_tab + ple_rest;
    double active = V * D + D + ple_rest;
    for (int il = 0; il < hp->n_layer; il++) {
        const struct g4_layer *Lr = &g->layers[il];
        const double hd = Lr->hd, kvd = (double)Lr->nkv * hd;
        double n = 2 * H * hd * D + hd + 4 * D + 1 + 3 * D * Lr->ff;
        if (Lr->donor < 0)
            n += kvd * D * (Lr->k_eq_v ? 1 : 2) + hd;
        if (P > 0)
            n += 2 * P * D + D;
        double experts = 0, used = 0;
        if (g->moe) {
            const double one = 3 * D * g->moe_ff;
            n += 3 * D + (double)g->n_expert * D + D + g->n_expert;
            experts = g->n_expert * one;
            used = g->top_k * one;
        }
        total += n + experts;
        active += n + used;
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Forward: per-token row steps and matmuls, each a parallel region over the engine's threads */

/* This file's buffers in kvx_forward_scratch.extra, for B tokens. */
struct g4_scratch {
    float *k, *v;              /* B x max_kv */
    float *cs;                 /* B x (hd[0] + hd[1]): cos/sin per type */
    float *ple;                /* B x L*P: per-layer inputs */
    float *ple_proj;           /* B x L*P: their projection part */
    float *ple_g;              /* B x P */
    float *h1, *moe_in, *moe_acc, *moe_x, *moe_y;   /* MoE: B x D each */
    float *moe_gu, *moe_g;     /* B x 2 Im, B x Im */
    float *route_p;            /* B x E router probabilities */
    float *route_w;            /* B x top_k routing weights */
    int32_t *route_e;          /* B x top_k chosen experts */
    int32_t *list_t, *list_k;  /* B: tokens of one expert and the choice slot of each */
};

static int64_t g4_scratch_layout(const struct kvx_model *m, int64_t B, float *base,
                                 struct g4_scratch *sc)
{
    const struct g4 *g = m->arch_data;
    const int64_t lp = (int64_t)m->hp.n_layer * g->ple;
    const int64_t D = g->moe ? m->hp.n_embd : 0, Im = g->moe_ff, K = g->top_k,
                  Bm = g->moe ? B : 0;
    const int64_t sizes[] = {B * g->max_kv, B * g->max_kv, B * (g->hd[0] + g->hd[1]), B * lp,
                             B * lp, B * g->ple, B * D, B * D, B * D, B * D, B * D, B * 2 * Im,
                             B * Im, B * g->n_expert, B * K, B * K, Bm, Bm};
    float **slots[] = {&sc->k, &sc->v, &sc->cs, &sc->ple, &sc->ple_proj, &sc->ple_g, &sc->h1,
                       &sc->moe_in, &sc->moe_acc, &sc->moe_x, &sc->moe_y, &sc->moe_gu,
                       &sc->moe_g, &sc->route_p, &sc->route_w, (float **)&sc->route_e,
                       (float **)&sc->list_t, (float **)&sc->list_k};
    return kvx_step_carve(base, sizes, slots, sizeof sizes / sizeof sizes[0]);
}

static int64_t g4_scratch_floats(const struct kvx_model *m, int64_t n_batch)
{
    struct g4_scratch sc;
    return g4_scratch_layout(m, n_batch, NULL, &sc);
}

enum phase {
    P_EMBED, P_PLE, P_IN_NORM, P_QK, P_POST_ATTN, P_GEGLU, P_POST_FF, P_PLE_GATE, P_PLE_OUT,
    P_SOFTCAP, P_MOE_PREP, P_MOE_ACT, P_MOE_OUT,
};

struct step {
    const struct kvx_model *m;
    const struct g4 *g;
    struct kvx_forward *f;
    const struct g4_layer *L;
    struct g4_scratch sc;
    int il;
    enum phase phase;
};

/* gelu with the tanh approximation: 0.5 z (1 + tanh(√(2/π) (z + 0.044715 z³))). */
static float gelu_tanh(float z)
{
    const float k = 0.7978845608028654f;
    return 0.5f * z * (1.0f + tanhf(k * (z + 0.044715f * z * z * z)));
}

/* cos/sin of pos * inv_i for the d/2 pairs of one type: cs[2i], cs[2i+1]. */
static void rope_table(float *cs, const float *inv, int32_t d, int64_t pos)
{
    for (int32_t i = 0; i < d / 2; i++) {
        const float ang = (float)pos * inv[i];
        cs[2 * i] = cosf(ang);
        cs[2 * i + 1] = sinf(ang);
    }
}

static void embed_row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct g4 *g = s->g;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd;
    float *x = f->s->x + t * D;
    kvx_quant_kernels((enum kvx_dtype)m->tok_embd.type, KVX_ISA_SCALAR)
        ->to_float(m->tok_embd.data + (size_t)f->tokens[t] * m->tok_embd.row_bytes, x, D);
    for (int64_t i = 0; i < D; i++)
        x[i] *= g->embd_scale;
    float *cs = s->sc.cs + t * (g->hd[0] + g->hd[1]);
    if (g->hd[0])
        rope_table(cs, g->inv[0], g->hd[0], f->pos[t]);
    if (g->hd[1])
        rope_table(cs + g->hd[0], g->inv[1], g->hd[1], f->pos[t]);
    if (g->ple) {   /* the token part of the per-layer inputs, until P_PLE */
        const int64_t lp = (int64_t)m->hp.n_layer * g->ple;
        float *p = s->sc.ple + t * lp;
        kvx_quant_kernels((enum kvx_dtype)g->ple_embd.type, KVX_ISA_SCALAR)
            ->to_float(g->ple_embd.data + (size_t)f->tokens[t] * g->ple_embd.row_bytes, p, lp);
        for (int64_t i = 0; i < lp; i++)
            p[i] *= g->ple_embd_scale;
    }
}

/* ple_l = (RMS(proj_l · D^-1/2; norm) + tok_l) · 2^-1/2. */
static void ple_row(const struct step *s, int64_t t)
{
    const struct g4 *g = s->g;
    const int64_t lp = (int64_t)s->m->hp.n_layer * g->ple, P = g->ple;
    const float ps = 1.0f / sqrtf((float)s->m->hp.n_embd), mix = 0.70710678118654752f;
    float *proj = s->sc.ple_proj + t * lp, *p = s->sc.ple + t * lp;
    for (int l = 0; l < s->m->hp.n_layer; l++) {
        float *pr = proj + l * P, *o = p + l * P;
        for (int64_t i = 0; i < P; i++)
            pr[i] *= ps;
        kvx_rmsnorm(pr, pr, g->ple_proj_norm, P, s->m->hp.norm_eps);
        for (int64_t i = 0; i < P; i++)
            o[i] = (pr[i] + o[i]) * mix;
    }
}

/* Per-head norms and RoPE of q (and k, v on owning layers). */
static void qk_row(const struct step *s, int64_t t)
{
    const struct g4 *g = s->g;
    const struct g4_layer *L = s->L;
    const int32_t H = s->m->hp.n_head, hd = L->hd, kvd = L->nkv * hd;
    const float eps = s->m->hp.norm_eps;
    const float *cs = s->sc.cs + t * (g->hd[0] + g->hd[1]) + (L->type == G4_FULL ? g->hd[0] : 0);
    float *q = s->f->s->q + t * (int64_t)H * hd;
    for (int h = 0; h < H; h++) {
        kvx_rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, eps);
        kvx_rope_apply(q + h * hd, cs, hd, KVX_ROPE_NEOX);
    }
    if (L->donor >= 0)
        return;
    float *k = s->sc.k + t * kvd, *v = s->sc.v + t * kvd;
    if (L->k_eq_v)
        memcpy(v, k, (size_t)kvd * sizeof *v);   /* V is the raw K projection */
    for (int h = 0; h < L->nkv; h++) {
        kvx_rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, eps);
        kvx_rope_apply(k + h * hd, cs, hd, KVX_ROPE_NEOX);
        kvx_rmsnorm(v + h * hd, v + h * hd, NULL, hd, eps);
    }
}

/* Routing of one token (transformers' Gemma4TextRouter, see the file header), the dense
 * branch's norm h1 = RMS(m; post_feedforward_layernorm_1) and the experts' input
 * u = RMS(r; pre_feedforward_layernorm_2); r = x, m = xn. */
static void moe_prep_row(const struct step *s, int64_t t)
{
    const struct g4 *g = s->g;
    const struct g4_layer *L = s->L;
    const int64_t D = s->m->hp.n_embd;
    const float eps = s->m->hp.norm_eps, rs = 1.0f / sqrtf((float)D);
    const float *x = s->f->s->x + t * D;
    float *h = s->sc.moe_x + t * D;   /* free until the experts run */
    kvx_rmsnorm(s->sc.h1 + t * D, s->f->s->xn + t * D, L->post_ff_norm1, D, eps);
    kvx_rmsnorm(s->sc.moe_in + t * D, x, L->pre_ff_norm2, D, eps);
    kvx_rmsnorm(h, x, NULL, D, eps);
    for (int64_t d = 0; d < D; d++)
        h[d] = h[d] * L->router_scale[d] * rs;
    const int E = g->n_expert, K = g->top_k;
    float *p = s->sc.route_p + t * E;
    float mx = -INFINITY;
    for (int e = 0; e < E; e++) {
        float z = 0;
        for (int64_t d = 0; d < D; d++)
            z += h[d] * L->router[(int64_t)e * D + d];
        p[e] = z;
        mx = z > mx ? z : mx;
    }
    float sum = 0;
    for (int e = 0; e < E; e++) {
        p[e] = expf(p[e] - mx);
        sum += p[e];
    }
    int32_t *sel = s->sc.route_e + t * K;
    float *w = s->sc.route_w + t * K, top = 0;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < k; j++)
                taken |= sel[j] == e;
            if (!taken && (best < 0 || p[e] > p[best]))
                best = e;
        }
        sel[k] = best;
        w[k] = p[best] / sum;
        top += w[k];
    }
    for (int k = 0; k < K; k++)
        w[k] = w[k] / top * L->expert_scale[sel[k]];
}

static void row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct g4_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd;
    const float eps = m->hp.norm_eps;
    float *x = f->s->x + t * D, *xn = f->s->xn + t * D;
    switch (s->phase) {
    case P_EMBED: embed_row(s, t); break;
    case P_PLE: ple_row(s, t); break;
    case P_IN_NORM: kvx_rmsnorm(xn, x, L->in_norm, D, eps); break;
    case P_QK: qk_row(s, t); break;
    case P_POST_ATTN:
        kvx_rmsnorm(xn, xn, L->post_attn_norm, D, eps);
        kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, L->pre_ff_norm, D, eps);
        break;
    case P_GEGLU: {
        float *gt = f->s->gate + t * m->hp.n_ff;
        const float *up = f->s->up + t * m->hp.n_ff;
        for (int64_t i = 0; i < L->ff; i++)
            gt[i] = gelu_tanh(gt[i]) * up[i];
        break;
    }
    case P_POST_FF:
        kvx_rmsnorm(xn, xn, L->post_ff_norm, D, eps);
        kvx_add(x, xn, D);
        if (!s->g->ple)
            for (int64_t i = 0; i < D; i++)
                x[i] *= L->scalar[0];
        break;
    case P_PLE_GATE: {
        const int64_t P = s->g->ple;
        float *pg = s->sc.ple_g + t * P;
        const float *pl = s->sc.ple + t * (int64_t)m->hp.n_layer * P + (int64_t)s->il * P;
        for (int64_t i = 0; i < P; i++)
            pg[i] = gelu_tanh(pg[i]) * pl[i];
        break;
    }
    case P_PLE_OUT:
        kvx_rmsnorm(xn, xn, L->ple_norm, D, eps);
        kvx_add(x, xn, D);
        for (int64_t i = 0; i < D; i++)
            x[i] *= L->scalar[0];
        break;
    case P_MOE_PREP: moe_prep_row(s, t); break;
    case P_MOE_ACT: {
        const int64_t Im = s->g->moe_ff;
        const float *gu = s->sc.moe_gu + t * 2 * Im;
        float *gt = s->sc.moe_g + t * Im;
        for (int64_t i = 0; i < Im; i++)
            gt[i] = gelu_tanh(gu[i]) * gu[Im + i];
        break;
    }
    case P_MOE_OUT:
        kvx_rmsnorm(xn, s->sc.moe_acc + t * D, L->post_ff_norm2, D, eps);
        kvx_add(xn, s->sc.h1 + t * D, D);
        break;
    case P_SOFTCAP: {
        const float c = s->g->softcap;
        float *lg = f->logits + t * m->hp.n_vocab;
        for (int64_t i = 0; i < m->hp.n_vocab; i++)
            lg[i] = c * tanhf(lg[i] / c);
        break;
    }
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
    const struct kvx_model *m = s->m;
    const struct g4_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, nq = (int64_t)m->hp.n_head * L->hd,
                  kvd = (int64_t)L->nkv * L->hd;
    run_rows(s, P_IN_NORM);
    kvx_step_matmul(s->f, &L->wq, f->s->xn, D, f->s->q, nq);
    if (L->donor < 0) {
        kvx_step_matmul(s->f, &L->wk, f->s->xn, D, s->sc.k, kvd);
        if (!L->k_eq_v)
            kvx_step_matmul(s->f, &L->wv, f->s->xn, D, s->sc.v, kvd);
    }
    run_rows(s, P_QK);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = m->hp.n_head, .n_head_kv = L->nkv, .head_dim = L->hd,
        .q = f->s->q, .q_ld = nq, .out = f->s->attn, .out_ld = nq, .scale = 1.0f,
        .acc = f->acc,
    };
    const struct kvx_kv_rows kv = {.k = s->sc.k, .v = s->sc.v, .k_ld = kvd, .v_ld = kvd};
    kvx_step_store_attend(f, s->il, L->donor < 0 ? &kv : NULL, &ab);
    kvx_step_matmul(s->f, &L->wo, f->s->attn, nq, f->s->xn, D);
    run_rows(s, P_POST_ATTN);
}

/* Expert e over the n gathered rows of moe_x into moe_y. */
static void moe_expert(void *ctx, int32_t e, int64_t n)
{
    (void)n;
    struct step *s = ctx;
    const int64_t D = s->m->hp.n_embd, Im = s->g->moe_ff;
    kvx_step_matmul(s->f, &s->L->gate_up[e], s->sc.moe_x, D, s->sc.moe_gu, 2 * Im);
    run_rows(s, P_MOE_ACT);
    kvx_step_matmul(s->f, &s->L->down[e], s->sc.moe_g, Im, s->sc.moe_y, D);
}

/* The experts: each runs once over the tokens that chose it and adds its weighted output to
 * their rows of moe_acc (experts in ascending order, as transformers sums them); then
 * xn = h1 + RMS(moe_acc; post_feedforward_layernorm_2). */
static void moe_block(struct step *s)
{
    const struct g4 *g = s->g;
    const int64_t D = s->m->hp.n_embd;
    run_rows(s, P_MOE_PREP);
    memset(s->sc.moe_acc, 0, (size_t)(s->f->n_tok * D) * sizeof(float));
    const struct kvx_moe_dispatch d = {
        .n_expert = g->n_expert, .top_k = g->top_k, .route_e = s->sc.route_e,
        .route_w = s->sc.route_w, .x = s->sc.moe_in, .acc = s->sc.moe_acc, .dim = D,
        .xbuf = s->sc.moe_x, .ybuf = s->sc.moe_y, .list_t = s->sc.list_t,
        .list_k = s->sc.list_k, .expert = moe_expert, .ctx = s,
    };
    kvx_step_moe(s->f, &d);
    run_rows(s, P_MOE_OUT);
}

static void ffn_block(struct step *s)
{
    const struct g4_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = s->m->hp.n_embd, F = s->m->hp.n_ff;
    kvx_step_matmul(s->f, &L->w_gate, f->s->xn, D, f->s->gate, F);
    kvx_step_matmul(s->f, &L->w_up, f->s->xn, D, f->s->up, F);
    run_rows(s, P_GEGLU);
    kvx_step_matmul(s->f, &L->w_down, f->s->gate, F, f->s->xn, D);
    if (s->g->moe)
        moe_block(s);
    run_rows(s, P_POST_FF);
    if (!s->g->ple)
        return;
    kvx_step_matmul(s->f, &L->ple_gate, f->s->x, D, s->sc.ple_g, s->g->ple);
    run_rows(s, P_PLE_GATE);
    kvx_step_matmul(s->f, &L->ple_proj, s->sc.ple_g, s->g->ple, f->s->xn, D);
    run_rows(s, P_PLE_OUT);
}

static void g4_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    const struct g4 *g = m->arch_data;
    struct step s = {.m = m, .g = g, .f = f};
    g4_scratch_layout(m, f->n_tok, f->s->extra, &s.sc);
    run_rows(&s, P_EMBED);
    const int64_t D = m->hp.n_embd;
    if (g->ple) {   /* the projection part of the per-layer inputs */
        kvx_step_matmul(f, &g->ple_model_proj, f->s->x, D, s.sc.ple_proj, (int64_t)m->hp.n_layer * g->ple);
        run_rows(&s, P_PLE);
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        s.il = il;
        s.L = &g->layers[il];
        attention_block(&s);
        ffn_block(&s);
    }
    const int64_t n_out = kvx_step_logits(m, f), n_tok = f->n_tok;
    if (n_out > 0 && g->softcap > 0) {   /* on the n_out logits rows */
        f->n_tok = n_out;
        run_rows(&s, P_SOFTCAP);
        f->n_tok = n_tok;
    }
}

#define G4_ARCH(NAME)                                                                          \
    {                                                                                          \
        .name = NAME, .hparams = g4_hparams, .load_weights = g4_load_weights,                 \
        .declare_cache = g4_declare_cache, .forward = g4_forward,                             \
        .scratch_floats = g4_scratch_floats, .param_count = g4_param_count,                   \
    }

const struct kvx_arch kvx_arch_gemma4_text = G4_ARCH("gemma4_text");
/* The multimodal checkpoints (Gemma4ForConditionalGeneration): the same text model. */
const struct kvx_arch kvx_arch_gemma4 = G4_ARCH("gemma4");
