/* model/zaya: Zyphra ZAYA1 (model_type zaya): compressed convolutional grouped-query attention
 * (CCA / CCGQA) with a top-1 mixture of experts and learned residual scaling, from
 * safetensors + config.json.
 *
 * Hq query heads and Hk KV heads of d dims; C = (Hq + Hk) d packed q/k channels;
 * k0 = cca_time0, k1 = cca_time1, K = (k0 - 1) + (k1 - 1) past frames.  Per layer, for the
 * token at position p (res the fp32 residual stream):
 *   h    = RMSNorm(res) * input_layernorm
 *   U_p  = [h Wq | h Wk]                                        C channels (q heads, k heads)
 *   Rq_i = (Pq_i + Pk_{i / (Hq/Hk)}) / 2 per query head i;  Rk_g = mean of Rq over group g
 *   U1_j = b1 + Σ_{i<k0} w1[c][i] U_{j-k0+1+i}[c]            depthwise causal conv, per channel
 *   U2   = b2 + Σ_{j<k1} Σ_{c' in head(c)} w2[c][c'][j] U1_{p-k1+1+j}[c']   grouped conv, one
 *          group per head (d channels), full mixing inside the head
 *          (frames before position 0 are zeros: the convolution input is zero-padded)
 *   q    = U2[q part] + Rq,  k = U2[k part] + Rk
 *   v    = [h Wvc | Vd_{p-1}] viewed [Hk, d]: the first half of the value heads from the current
 *          token, the second half the delayed projection Vd = h Wvd of the previous token
 *          (0 at position 0: Wvd times a zero input)
 *   q_i  = q_i sqrt(d) / max(|q_i|, ε);  k_g = k_g sqrt(d) / max(|k_g|, ε) · temp_g
 *          (ε = FLT_EPSILON, per head)
 *   q, k = RoPE (NeoX pairs) on the first R = d · partial_rotary_factor dims of each head
 *   cache[pos] = (k, v);  o_i = softmax(q_i · K_g / sqrt(d)) V_g over visible keys (GQA)
 *   res  = (o Wo + hb) ⊙ hs + (res + rb) ⊙ rs          post_attention_residual_scale
 *   h    = RMSNorm(res) * post_attention_layernorm
 *   router: r = h Wdown + bdown (+ r_prev ⊙ router_states_scale from layer 1 on: the previous
 *          layer's r of the same token); z = MLP(RMSNorm(r)) with two GELU(Linear) layers and an
 *          output projection to E + 1 classes; π = softmax(z); e = argmax(π + balancing_biases)
 *   m    = π_e SwiGLU_e(h), or 0 when e = E (the skip expert)
 *   res  = (m + hb') ⊙ hs' + (res + rb') ⊙ rs'         post_mlp_residual_scale
 * Before layer 0: res = (embed(token) + input_hidden_states_bias) ⊙ input_hidden_states_scale;
 * logits = (RMSNorm(res) * norm) lm_head.
 *
 * Cache: K and V per token (FULL layers, or WINDOW layers of sliding_window for layer type
 * hybrid_sliding).  The convolution's K past frames of U and the previous token's Vd are the
 * layer's model state per sequence (kvx_layer_cache.state_floats, kv/pool.h): K C + Hk d / 2
 * floats, carried from step to step, so token-by-token decode computes what prefill does. */
#include <float.h>
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

#define ZAYA_MAX_CLASSES 1025

struct zaya_layer {
    bool sliding;
    const float *attn_norm, *ffn_norm;
    struct kvx_mat wq, wk, wvc, wvd, wo;
    const float *dw_w, *dw_b;          /* depthwise conv [C, k0], [C] */
    const float *gw_w, *gw_b;          /* grouped conv [C, d, k1], [C] */
    const float *temp;                 /* [Hk] */
    const float *attn_hs, *attn_hb, *attn_rs, *attn_rb;   /* residual scaling, D each */
    const float *mlp_hs, *mlp_hb, *mlp_rs, *mlp_rb;
    /* router (f32) */
    const float *r_down, *r_down_b;    /* [R, D], [R] */
    const float *r_scale;              /* [R] (layers >= 1) */
    const float *r_norm;               /* [R] */
    const float *r_fc1, *r_fc1_b, *r_fc2, *r_fc2_b;   /* [R, R], [R] */
    const float *r_out;                /* [E + 1, R] */
    const float *r_bias;               /* balancing_biases [E + 1] */
    struct kvx_mat *experts;           /* E x {gate, up, down} */
};

struct zaya {
    int32_t n_layer, n_head, n_head_kv, head_dim, k0, k1, n_frames, n_ch;
    int32_t n_expert, moe_ff, router;
    int64_t window;
    int32_t n_rot[2];                  /* [0] hybrid, [1] hybrid_sliding */
    float *inv[2];
    const float *in_scale, *in_bias;   /* input_hidden_states_scale / _bias */
    struct zaya_layer *layers;
};

static void zaya_free(void *p)
{
    struct zaya *a = p;
    if (!a)
        return;
    free(a->inv[0]);
    free(a->inv[1]);
    free(a->layers);
    free(a);
}

/* ------------------------------------------------------------------------------------------ */
/* Hyper-parameters */

static enum kvx_status zaya_rope(const struct kvx_jv *c, struct zaya *a, int type,
                                 struct kvx_err *err)
{
    const char *name = type ? "hybrid_sliding" : "hybrid";
    const struct kvx_jv *all = kvx_jv_get(c, "rope_parameters");
    const bool none = !all || all->type == KVX_JV_NULL;
    if (!none && all->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'rope_parameters' is not an "
                           "object");
    const struct kvx_jv *rp = none ? NULL : kvx_jv_get(all, name);
    if (!none && (!rp || rp->type != KVX_JV_OBJECT))
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters has no object for "
                           "layer type '%s'", name);
    double theta, partial;
    const char *rtype = "default";
    enum kvx_status st;
    if ((st = kvx_hf_pos_float(rp, "rope_theta", type ? 10000.0 : 5000000.0, &theta, err)) ||
        (st = kvx_hf_pos_float(rp, "partial_rotary_factor", none ? 0.5 : 1.0, &partial, err)) ||
        (st = kvx_hf_str(rp, "rope_type", rtype, &rtype, err)))
        return kvx_err_prefix(err, "rope_parameters.%s", name), st;
    if (strcmp(rtype, "default") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope_parameters.%s: rope type "
                           "'%.40s' is not supported for zaya (default)", name, rtype);
    const double n_rot = a->head_dim * partial;
    if (partial > 1.0 || n_rot != floor(n_rot) || (int32_t)n_rot < 2 || (int32_t)n_rot % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters.%s: "
                           "partial_rotary_factor %g of head_dim %d is not an even number of "
                           "dims >= 2", name, partial, a->head_dim);
    const int32_t R = (int32_t)n_rot;
    a->n_rot[type] = R;
    a->inv[type] = malloc((size_t)(R / 2) * sizeof(float));
    if (!a->inv[type])
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < R / 2; i++)
        a->inv[type][i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)R);
    return KVX_OK;
}

static enum kvx_status zaya_config(struct kvx_model *m, struct zaya *a, struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    struct kvx_hparams *hp = &m->hp;
    int64_t embd, layers, heads, kv, hd, vocab, ctx, ne, k, mff, rh, t0, t1, window = 0;
    double eps;
    bool bias, lm_bias;
    const char *act;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 20, &embd, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &layers, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &heads, err)) ||
        (st = kvx_hf_int(c, "num_key_value_heads", true, 0, 1, 4096, &kv, err)) ||
        /* head_dim: required (transformers would take its class default, 128) */
        (st = kvx_hf_int(c, "head_dim", true, 0, 2, 4096, &hd, err)) ||
        (st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 131072, 1, (int64_t)1 << 30, &ctx,
                         err)) ||
        (st = kvx_hf_int(c, "num_experts", true, 0, 1, ZAYA_MAX_CLASSES - 1, &ne, err)) ||
        (st = kvx_hf_int(c, "num_experts_per_tok", false, 1, 1, 1 << 16, &k, err)) ||
        (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 24, &mff, err)) ||
        (st = kvx_hf_int(c, "router_hidden_size", true, 0, 1, 1 << 12, &rh, err)) ||
        (st = kvx_hf_int(c, "cca_time0", true, 0, 1, 64, &t0, err)) ||
        (st = kvx_hf_int(c, "cca_time1", true, 0, 1, 64, &t1, err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-5, &eps, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", false, &bias, err)) ||
        (st = kvx_hf_bool(c, "lm_head_bias", false, &lm_bias, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", true, &hp->tie_embd, err)) ||
        (st = kvx_hf_str(c, "hidden_act", "silu", &act, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (heads % kv || (kv * hd) % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: num_attention_heads %lld, "
                           "num_key_value_heads %lld, head_dim %lld: heads must be a multiple of "
                           "KV heads and KV heads x head_dim even", (long long)heads,
                           (long long)kv, (long long)hd);
    if (k != 1)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: num_experts_per_tok %lld: zaya "
                           "routes each token to one expert only (as transformers does)",
                           (long long)k);
    if (bias || lm_bias || strcmp(act, "silu") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: attention_bias / lm_head_bias "
                           "true or hidden_act '%.40s' is not supported for zaya", act);
    if (embd % 32 || mff % 32 || (heads * hd) % 32)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: widths %lld/%lld/%lld "
                           "(hidden, moe, attention) are not multiples of 32", (long long)embd,
                           (long long)mff, (long long)(heads * hd));
    a->n_layer = (int32_t)layers;
    a->n_head = (int32_t)heads;
    a->n_head_kv = (int32_t)kv;
    a->head_dim = (int32_t)hd;
    a->k0 = (int32_t)t0;
    a->k1 = (int32_t)t1;
    a->n_frames = (int32_t)(t0 - 1 + t1 - 1);
    a->n_ch = (int32_t)((heads + kv) * hd);
    a->n_expert = (int32_t)ne;
    a->moe_ff = (int32_t)mff;
    a->router = (int32_t)rh;
    a->layers = calloc((size_t)layers, sizeof *a->layers);
    if (!a->layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const struct kvx_jv *lt = kvx_jv_get(c, "layer_types");
    if (lt && lt->type != KVX_JV_NULL && (lt->type != KVX_JV_ARRAY || lt->len != (size_t)layers))
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'layer_types' is not a list of "
                           "num_hidden_layers (%lld) entries", (long long)layers);
    bool any[2] = {false, false};
    for (int32_t il = 0; il < a->n_layer; il++) {
        const struct kvx_jv *v = lt && lt->type == KVX_JV_ARRAY ? &lt->items[il] : NULL;
        const char *t = v ? (v->type == KVX_JV_STRING ? v->str : "") : "hybrid";
        if (strcmp(t, "hybrid") && strcmp(t, "hybrid_sliding"))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: layer_types[%d] is not "
                               "\"hybrid\" or \"hybrid_sliding\"", il);
        a->layers[il].sliding = t[6] == '_';
        any[a->layers[il].sliding] = true;
    }
    if (any[1] && (st = kvx_hf_int(c, "sliding_window", true, 0, 1, (int64_t)1 << 30, &window,
                                   err)))
        return st;
    a->window = window;
    for (int i = 0; i < 2; i++)
        if (any[i] && (st = zaya_rope(c, a, i, err)))
            return st;
    const int r = any[0] ? 0 : 1;
    *hp = (struct kvx_hparams){
        .n_vocab = (int32_t)vocab, .n_embd = (int32_t)embd, .n_layer = (int32_t)layers,
        .n_head = (int32_t)heads, .n_head_kv = (int32_t)kv, .head_dim = (int32_t)hd,
        .n_ff = (int32_t)mff, .n_ctx_train = ctx, .norm_eps = (float)eps, .rope_theta = 0,
        .rope_freq_scale = 1, .n_rot = a->n_rot[r], .rope_kind = KVX_ROPE_NEOX,
        .bos_id = hp->bos_id, .eos_id = hp->eos_id, .tie_embd = hp->tie_embd,
    };
    return KVX_OK;
}

static enum kvx_status zaya_hparams(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "zaya is read from safetensors + "
                           "config.json only");
    struct zaya *a = calloc(1, sizeof *a);
    if (!a)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    m->arch_data = a;
    m->free_arch_data = zaya_free;
    return zaya_config(m, a, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Weights */

/* A tensor of exactly the given safetensors shape (dims outermost first), as f32 owned by the
 * model. */
static enum kvx_status bind_f32(struct kvx_model *m, const char *name, int n_dims,
                                const int64_t *shape, const float **out, struct kvx_err *err)
{
    struct kvx_wtensor t;
    if (!kvx_model_find_tensor(m, name, &t))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name);
    bool ok = (int)t.n_dims == n_dims;
    int64_t n = 1;
    for (int i = 0; ok && i < n_dims; i++) {
        ok = t.ne[n_dims - 1 - i] == shape[i];
        n *= shape[i];
    }
    if (!ok) {
        char want[96] = "", have[96] = "";
        for (int i = 0; i < n_dims; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        for (int i = 0; i < (int)t.n_dims && i < KVX_WTENSOR_MAX_DIMS; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? ", " : "",
                     (long long)t.ne[t.n_dims - 1 - i]);
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has shape [%s], config.json implies "
                           "[%s]", name, have, want);
    }
    if (t.type != KVX_DTYPE_F32 && t.type != KVX_DTYPE_F16 && t.type != KVX_DTYPE_BF16)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s': read in F32, F16 or BF16 only",
                           name);
    float *f = malloc((size_t)n * sizeof *f);
    if (!f)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    kvx_quant_kernels((enum kvx_dtype)t.type, KVX_ISA_SCALAR)->to_float(t.data, f, n);
    enum kvx_status st = kvx_model_own(m, f, err);
    if (st == KVX_OK)
        *out = f;
    return st;
}

static enum kvx_status zaya_layer_weights(struct kvx_model *m, struct zaya *a, int il,
                                          struct kvx_err *err)
{
    struct zaya_layer *L = &a->layers[il];
    const int64_t D = m->hp.n_embd, d = a->head_dim, Hq = a->n_head, Hk = a->n_head_kv;
    const int64_t C = a->n_ch, R = a->router, E = a->n_expert, F = a->moe_ff;
    char n[192];
    enum kvx_status st;
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.%s", il, s), n)
#define VEC(s, len, out) kvx_model_bind_vec(m, NAME(s), len, true, out, err)
    const int64_t s_dw[3] = {C, 1, a->k0}, s_gw[3] = {C, d, a->k1}, s_rr[2] = {R, R};
    const int64_t s_rd[2] = {R, D}, s_ro[2] = {E + 1, R};
    if ((st = VEC("input_layernorm.weight", D, &L->attn_norm)) ||
        (st = VEC("post_attention_layernorm.weight", D, &L->ffn_norm)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.qkv_proj.q_proj.weight"), D, Hq * d, true, &L->wq, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.qkv_proj.k_proj.weight"), D, Hk * d, true, &L->wk, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.qkv_proj.v_proj_current.weight"), D, Hk * d / 2, true, &L->wvc, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.qkv_proj.v_proj_delayed.weight"), D, Hk * d / 2, true, &L->wvd, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.o_proj.weight"), Hq * d, D, true, &L->wo, err)) ||
        (st = bind_f32(m, NAME("self_attn.qkv_proj.conv_qk_depthwise.weight"), 3, s_dw, &L->dw_w, err)) ||
        (st = VEC("self_attn.qkv_proj.conv_qk_depthwise.bias", C, &L->dw_b)) ||
        (st = bind_f32(m, NAME("self_attn.qkv_proj.conv_qk_grouped.weight"), 3, s_gw, &L->gw_w, err)) ||
        (st = VEC("self_attn.qkv_proj.conv_qk_grouped.bias", C, &L->gw_b)) ||
        (st = VEC("self_attn.qk_norm.temp", Hk, &L->temp)) ||
        (st = VEC("post_attention_residual_scale.hidden_states_scale", D, &L->attn_hs)) ||
        (st = VEC("post_attention_residual_scale.hidden_states_bias", D, &L->attn_hb)) ||
        (st = VEC("post_attention_residual_scale.residual_scale", D, &L->attn_rs)) ||
        (st = VEC("post_attention_residual_scale.residual_bias", D, &L->attn_rb)) ||
        (st = VEC("post_mlp_residual_scale.hidden_states_scale", D, &L->mlp_hs)) ||
        (st = VEC("post_mlp_residual_scale.hidden_states_bias", D, &L->mlp_hb)) ||
        (st = VEC("post_mlp_residual_scale.residual_scale", D, &L->mlp_rs)) ||
        (st = VEC("post_mlp_residual_scale.residual_bias", D, &L->mlp_rb)) ||
        (st = bind_f32(m, NAME("mlp.gate.down_proj.weight"), 2, s_rd, &L->r_down, err)) ||
        (st = VEC("mlp.gate.down_proj.bias", R, &L->r_down_b)) ||
        (st = VEC("mlp.gate.router_mlp.norm.weight", R, &L->r_norm)) ||
        (st = bind_f32(m, NAME("mlp.gate.router_mlp.fc1.weight"), 2, s_rr, &L->r_fc1, err)) ||
        (st = VEC("mlp.gate.router_mlp.fc1.bias", R, &L->r_fc1_b)) ||
        (st = bind_f32(m, NAME("mlp.gate.router_mlp.fc2.weight"), 2, s_rr, &L->r_fc2, err)) ||
        (st = VEC("mlp.gate.router_mlp.fc2.bias", R, &L->r_fc2_b)) ||
        (st = bind_f32(m, NAME("mlp.gate.router_mlp.out_proj.weight"), 2, s_ro, &L->r_out, err)) ||
        (st = VEC("mlp.gate.balancing_biases", E + 1, &L->r_bias)) ||
        (il > 0 && (st = VEC("mlp.gate.router_states_scale", R, &L->r_scale))))
        return st;
    struct kvx_wtensor gu, dn;
    size_t gu_rb, dn_rb;
    if ((st = kvx_model_bind_stack(m, NAME("mlp.experts.gate_up_proj"), E, 2 * F, D, &gu, &gu_rb, err)) ||
        (st = kvx_model_bind_stack(m, NAME("mlp.experts.down_proj"), E, D, F, &dn, &dn_rb, err)))
        return st;
#undef VEC
#undef NAME
    struct kvx_mat *ex = calloc((size_t)(3 * E), sizeof *ex);
    if (!ex || (st = kvx_model_own(m, ex, err)) != KVX_OK)
        return ex ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int64_t e = 0; e < E; e++) {
        ex[3 * e] = (struct kvx_mat){.type = gu.type, .n_in = D, .n_out = F, .row_bytes = gu_rb,
                                     .data = (const uint8_t *)gu.data + (size_t)(e * 2 * F) * gu_rb};
        ex[3 * e + 1] = ex[3 * e];
        ex[3 * e + 1].data += (size_t)F * gu_rb;
        ex[3 * e + 2] = (struct kvx_mat){.type = dn.type, .n_in = F, .n_out = D, .row_bytes = dn_rb,
                                         .data = (const uint8_t *)dn.data + (size_t)(e * D) * dn_rb};
    }
    L->experts = ex;
    return KVX_OK;
}

static enum kvx_status zaya_load(struct kvx_model *m, struct kvx_err *err)
{
    struct zaya *a = m->arch_data;
    const struct kvx_hparams *hp = &m->hp;
    enum kvx_status st;
    if ((st = kvx_model_bind_mat(m, "model.embed_tokens.weight", hp->n_embd, hp->n_vocab, true,
                                 &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, "model.norm.weight", hp->n_embd, true, &m->output_norm, err)) ||
        (st = kvx_model_bind_vec(m, "model.input_hidden_states_scale", hp->n_embd, true,
                                 &a->in_scale, err)) ||
        (st = kvx_model_bind_vec(m, "model.input_hidden_states_bias", hp->n_embd, true,
                                 &a->in_bias, err)))
        return st;
    if (!hp->tie_embd && (st = kvx_model_bind_mat(m, "lm_head.weight", hp->n_embd, hp->n_vocab,
                                                  true, &m->output, err)))
        return st;
    if (hp->tie_embd)
        m->output = m->tok_embd;
    for (int il = 0; il < a->n_layer; il++)
        if ((st = zaya_layer_weights(m, a, il, err)) != KVX_OK)
            return st;
    return KVX_OK;
}

/* Model state per sequence and layer: the K past frames of U (K x C), then Vd of the last
 * token (Hk d / 2). */
static int32_t state_floats(const struct zaya *a)
{
    return a->n_frames * a->n_ch + a->n_head_kv * a->head_dim / 2;
}

static void zaya_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                               enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const struct zaya *a = m->arch_data;
    for (int il = 0; il < a->n_layer; il++)
        layout->layers[il] = (struct kvx_layer_cache){
            .kind = a->layers[il].sliding ? KVX_KV_KIND_WINDOW : KVX_KV_KIND_FULL,
            .n_kv_heads = a->n_head_kv,
            .k_dim = a->head_dim,
            .v_dim = a->head_dim,
            .window = a->layers[il].sliding ? a->window : 0,
            .k_codec = k_codec,
            .v_codec = v_codec,
            .state_floats = state_floats(a),
        };
}

/* ------------------------------------------------------------------------------------------ */
/* Forward */

struct zaya_scratch {
    float *u;                  /* B x C: [Pq | Pk] */
    float *vd;                 /* B x Hk d / 2: delayed value projection */
    float *h;                  /* B x D: block output */
    float *r;                  /* B x R: router state carried to the next layer */
    float *cs[2];              /* B x d: cos/sin per rope type */
    float *moe_x, *moe_y;      /* B x D */
    float *route_w;            /* B */
    int32_t *route_e, *list_t, *list_k;   /* B */
    float *frames;             /* B x ((K + 1) x C + k1 x C): each token's conv window, U1 */
};

static int64_t zaya_scratch_layout(const struct kvx_model *m, int64_t B, float *base,
                                   struct zaya_scratch *sc)
{
    const struct zaya *a = m->arch_data;
    const int64_t D = m->hp.n_embd, C = a->n_ch, d = a->head_dim;
    const int64_t sizes[] = {B * C, B * a->n_head_kv * d / 2, B * D, B * a->router, B * d, B * d,
                             B * D, B * D, B, B, B, B,
                             B * (a->n_frames + 1 + a->k1) * C};
    float **slots[] = {&sc->u, &sc->vd, &sc->h, &sc->r, &sc->cs[0], &sc->cs[1], &sc->moe_x,
                       &sc->moe_y, &sc->route_w, (float **)&sc->route_e,
                       (float **)&sc->list_t, (float **)&sc->list_k, &sc->frames};
    return kvx_step_carve(base, sizes, slots, sizeof sizes / sizeof sizes[0]);
}

static int64_t zaya_scratch_floats(const struct kvx_model *m, int64_t n_batch)
{
    struct zaya_scratch sc;
    return zaya_scratch_layout(m, n_batch, NULL, &sc);
}

enum phase { P_EMBED, P_ATTN_NORM, P_ATTN_RESID, P_ROUTE, P_SWIGLU, P_MLP_RESID };

struct step {
    const struct kvx_model *m;
    const struct zaya *a;
    struct kvx_forward *f;
    const struct zaya_layer *L;
    struct zaya_scratch sc;
    int il;
    enum phase phase;
    int64_t ff;
};

/* y = W x + b for a row-major f32 W [n_out, n_in] (b may be NULL). */
static void linear(float *y, const float *W, const float *b, const float *x, int64_t n_in,
                   int64_t n_out)
{
    for (int64_t o = 0; o < n_out; o++) {
        float acc = 0;
        for (int64_t i = 0; i < n_in; i++)
            acc += W[o * n_in + i] * x[i];
        y[o] = acc + (b ? b[o] : 0.0f);
    }
}

/* GELU, exact: x Φ(x) = x (1 + erf(x / √2)) / 2. */
static void gelu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* The router of one token (see the file header): choice into route_e / route_w, r kept in
 * sc.r for the next layer. */
static void route_row(const struct step *s, int64_t t)
{
    const struct zaya *a = s->a;
    const struct zaya_layer *L = s->L;
    const int64_t D = s->m->hp.n_embd, R = a->router, E = a->n_expert;
    float *r = s->sc.r + t * R;
    float h1[1 << 12], h2[1 << 12], z[ZAYA_MAX_CLASSES] = {0};   /* R <= 4096: checked at load */
    float tmp[1 << 12];
    linear(tmp, L->r_down, L->r_down_b, s->f->s->xn + t * D, D, R);
    for (int64_t i = 0; i < R; i++)
        r[i] = L->r_scale ? tmp[i] + r[i] * L->r_scale[i] : tmp[i];
    kvx_rmsnorm(h1, r, L->r_norm, R, s->m->hp.norm_eps);
    linear(h2, L->r_fc1, L->r_fc1_b, h1, R, R);
    gelu(h2, R);
    linear(h1, L->r_fc2, L->r_fc2_b, h2, R, R);
    gelu(h1, R);
    linear(z, L->r_out, NULL, h1, R, E + 1);
    float mx = z[0], sum = 0;
    for (int64_t e = 1; e <= E; e++)
        mx = z[e] > mx ? z[e] : mx;
    for (int64_t e = 0; e <= E; e++) {
        z[e] = expf(z[e] - mx);
        sum += z[e];
    }
    int best = 0;
    for (int e = 1; e <= E; e++)
        if (z[e] / sum + L->r_bias[e] > z[best] / sum + L->r_bias[best])
            best = e;
    s->sc.route_e[t] = best;   /* E: the skip expert */
    s->sc.route_w[t] = z[best] / sum;
}

static void row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct zaya *a = s->a;
    const struct zaya_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, d = a->head_dim, F = s->ff;
    float *x = f->s->x + t * D, *xn = f->s->xn + t * D, *h = s->sc.h + t * D;
    switch (s->phase) {
    case P_EMBED: {
        const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)m->tok_embd.type,
                                                              KVX_ISA_SCALAR);
        k->to_float(m->tok_embd.data + (size_t)f->tokens[t] * m->tok_embd.row_bytes, x, D);
        for (int64_t i = 0; i < D; i++)
            x[i] = (x[i] + a->in_bias[i]) * a->in_scale[i];
        for (int r = 0; r < 2; r++) {
            float *cs = s->sc.cs[r] + t * d;
            for (int i = 0; a->inv[r] && i < a->n_rot[r] / 2; i++) {
                const float ang = (float)f->pos[t] * a->inv[r][i];
                cs[2 * i] = cosf(ang);
                cs[2 * i + 1] = sinf(ang);
            }
        }
        break;
    }
    case P_ATTN_NORM: kvx_rmsnorm(xn, x, L->attn_norm, D, m->hp.norm_eps); break;
    case P_ATTN_RESID:   /* res = (o + hb) hs + (res + rb) rs; xn = norm(res) */
        for (int64_t i = 0; i < D; i++)
            x[i] = (h[i] + L->attn_hb[i]) * L->attn_hs[i] + (x[i] + L->attn_rb[i]) * L->attn_rs[i];
        kvx_rmsnorm(xn, x, L->ffn_norm, D, m->hp.norm_eps);
        break;
    case P_ROUTE: route_row(s, t); break;
    case P_SWIGLU:
        kvx_swiglu_isa(f->isa, f->s->gate + t * F, f->s->gate + t * F, f->s->up + t * F, F);
        break;
    case P_MLP_RESID:
        for (int64_t i = 0; i < D; i++)
            x[i] = (h[i] + L->mlp_hb[i]) * L->mlp_hs[i] + (x[i] + L->mlp_rb[i]) * L->mlp_rs[i];
        break;
    }
}

static void row_fn(void *ctx, int64_t t) { row(ctx, t); }

static void run_rows(struct step *s, enum phase p)
{
    s->phase = p;
    kvx_step_rows(s->f, row_fn, s);
}

/* The convolutions, residual paths, values, QK norm and RoPE of token t, from and into the
 * sequence's model state: its q, k and v rows (attention_block stores k and v). */
static void cca_token(const struct step *s, int64_t t, float *win)
{
    const struct zaya *a = s->a;
    const struct zaya_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t C = a->n_ch, d = a->head_dim, Hq = a->n_head, Hk = a->n_head_kv;
    const int64_t K = a->n_frames, k0 = a->k0, k1 = a->k1, nv = Hk * d / 2, rep = Hq / Hk;
    float *state = kvx_kv_seq_model_state(f->seq[t], s->il);
    if (!state)
        return;   /* not reserved: a caller error (the cache write would do nothing too) */
    const float *u = s->sc.u + t * C;
    if (f->pos[t] == 0)   /* a new sequence: zero frames, Vd(0 input) = 0 */
        memset(state, 0, (size_t)(K * C + nv) * sizeof *state);
    /* the window: K past frames then this token's U */
    memcpy(win, state, (size_t)(K * C) * sizeof *win);
    memcpy(win + K * C, u, (size_t)C * sizeof *win);
    float *u1 = win + (K + 1) * C;   /* k1 frames of the depthwise output */
    for (int64_t j = 0; j < k1; j++)
        for (int64_t c = 0; c < C; c++) {
            float acc = L->dw_b[c];
            for (int64_t i = 0; i < k0; i++)
                acc += L->dw_w[c * k0 + i] * win[(j + i) * C + c];
            u1[j * C + c] = acc;
        }
    float *q = f->s->q + t * Hq * d, *k = f->s->k + t * Hk * d, *v = f->s->v + t * Hk * d;
    for (int64_t c = 0; c < C; c++) {   /* grouped conv into q (first Hq d) and k */
        const int64_t g0 = c / d * d;
        float acc = L->gw_b[c];
        for (int64_t cl = 0; cl < d; cl++)
            for (int64_t j = 0; j < k1; j++)
                acc += L->gw_w[(c * d + cl) * k1 + j] * u1[j * C + g0 + cl];
        if (c < Hq * d)
            q[c] = acc;
        else
            k[c - Hq * d] = acc;
    }
    /* residual paths: Rq_i = (Pq_i + Pk_g) / 2, Rk_g = mean_i Rq_i over the group */
    for (int64_t g = 0; g < Hk; g++) {
        const float *pk = u + Hq * d + g * d;
        for (int64_t e = 0; e < d; e++) {
            float sum = 0;
            for (int64_t r = 0; r < rep; r++) {
                const int64_t i = g * rep + r;
                const float rq = (u[i * d + e] + pk[e]) * 0.5f;
                q[i * d + e] += rq;
                sum += rq;
            }
            k[g * d + e] += sum / (float)rep;
        }
    }
    /* values: [Vc (from the matmul) | Vd of the previous token]; then keep this token's */
    float *vd_state = state + K * C;
    memcpy(v + nv, vd_state, (size_t)nv * sizeof *v);
    memcpy(vd_state, s->sc.vd + t * nv, (size_t)nv * sizeof *v);
    /* slide the frames */
    memcpy(state, win + C, (size_t)(K * C) * sizeof *state);
    /* QK norm and RoPE */
    const float sd = sqrtf((float)d);
    const int rt = L->sliding;
    const float *cs = s->sc.cs[rt] + t * d;
    for (int64_t i = 0; i < Hq + Hk; i++) {
        float *x = i < Hq ? q + i * d : k + (i - Hq) * d;
        float ss = 0;
        for (int64_t e = 0; e < d; e++)
            ss += x[e] * x[e];
        float n = sqrtf(ss);
        n = n > FLT_EPSILON ? n : FLT_EPSILON;
        const float sc = sd / n * (i < Hq ? 1.0f : L->temp[i - Hq]);
        for (int64_t e = 0; e < d; e++)
            x[e] *= sc;
        kvx_rope_apply(x, cs, a->n_rot[rt], KVX_ROPE_NEOX);
    }
}

/* Tokens in batch order, every token of a sequence on the same thread: the model state of a
 * sequence is updated position after position. */
static void step_cca(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t w = (int64_t)(s->a->n_frames + 1 + s->a->k1) * s->a->n_ch;
    for (int64_t t = 0; t < f->n_tok; t++) {
        uint64_t h = (uint64_t)(uintptr_t)f->seq[t] * 0x9e3779b97f4a7c15ull;
        if ((int)((h >> 32) % (uint64_t)nth) != ith)
            continue;
        cca_token(s, t, s->sc.frames + t * w);
    }
}

static void attention_block(struct step *s)
{
    const struct zaya *a = s->a;
    const struct zaya_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = s->m->hp.n_embd, d = a->head_dim, C = a->n_ch;
    const int64_t nq = (int64_t)a->n_head * d, nkv = (int64_t)a->n_head_kv * d;
    run_rows(s, P_ATTN_NORM);
    kvx_step_matmul(s->f, &L->wq, f->s->xn, D, s->sc.u, C);
    kvx_step_matmul(s->f, &L->wk, f->s->xn, D, s->sc.u + nq, C);
    kvx_step_matmul(s->f, &L->wvc, f->s->xn, D, f->s->v, nkv);
    kvx_step_matmul(s->f, &L->wvd, f->s->xn, D, s->sc.vd, nkv / 2);
    kvx_threadpool_run(f->tp, step_cca, s);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = a->n_head, .n_head_kv = a->n_head_kv, .head_dim = (int32_t)d,
        .q = f->s->q, .q_ld = nq, .out = f->s->attn, .out_ld = nq,
        .scale = 1.0f / sqrtf((float)d), .acc = f->acc,
    };
    const struct kvx_kv_rows kv = {.k = f->s->k, .v = f->s->v, .k_ld = nkv, .v_ld = nkv};
    kvx_step_store_attend(f, s->il, &kv, &ab);
    kvx_step_matmul(s->f, &L->wo, f->s->attn, nq, s->sc.h, D);
    run_rows(s, P_ATTN_RESID);
}

/* Expert e (SwiGLU) over the n gathered rows of moe_x into moe_y. */
static void moe_expert(void *ctx, int32_t e, int64_t n)
{
    (void)n;
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t D = s->m->hp.n_embd, F = s->a->moe_ff;
    const struct kvx_mat *w = &s->L->experts[3 * e];
    kvx_step_matmul(f, &w[0], s->sc.moe_x, D, f->s->gate, F);
    kvx_step_matmul(f, &w[1], s->sc.moe_x, D, f->s->up, F);
    s->ff = F;
    run_rows(s, P_SWIGLU);
    kvx_step_matmul(f, &w[2], f->s->gate, F, s->sc.moe_y, D);
}

/* Top-1 experts over xn into sc.h (0 for tokens routed to the skip expert, id n_expert). */
static void moe_block(struct step *s)
{
    const struct zaya *a = s->a;
    const int64_t D = s->m->hp.n_embd;
    run_rows(s, P_ROUTE);
    memset(s->sc.h, 0, (size_t)(s->f->n_tok * D) * sizeof(float));
    const struct kvx_moe_dispatch d = {
        .n_expert = a->n_expert, .top_k = 1, .route_e = s->sc.route_e,
        .route_w = s->sc.route_w, .x = s->f->s->xn, .acc = s->sc.h, .dim = D,
        .xbuf = s->sc.moe_x, .ybuf = s->sc.moe_y, .list_t = s->sc.list_t,
        .list_k = s->sc.list_k, .expert = moe_expert, .ctx = s,
    };
    kvx_step_moe(s->f, &d);
    run_rows(s, P_MLP_RESID);
}

static void zaya_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    const struct zaya *a = m->arch_data;
    struct step s = {.m = m, .a = a, .f = f};
    zaya_scratch_layout(m, f->n_tok, f->s->extra, &s.sc);
    run_rows(&s, P_EMBED);
    for (int il = 0; il < a->n_layer; il++) {
        s.il = il;
        s.L = &a->layers[il];
        attention_block(&s);
        moe_block(&s);
    }
    kvx_step_logits(m, f);
}

/* Parameters as zaya_load binds them: embed_tokens (and lm_head unless tied), the final norm
 * and the input scale and bias; per layer two norms, q/k (Hq d, Hk d outputs), the current and
 * delayed value halves (Hk d / 2 each), o, the two convolutions (C k0 + C and C d k1 + C), the
 * key temperatures (Hk), eight residual-scaling vectors (D each), the router (down R D + R,
 * norm, two R x R layers with biases, the E + 1 class head, balancing biases, and
 * router_states_scale from layer 1 on) and the n_expert SwiGLU experts.  Active: all of it but
 * the input embedding table (counted once as lm_head when tied) and all experts but one (top-1;
 * a token routed to the skip class reads none). */
static enum kvx_status zaya_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                        struct kvx_err *err)
{
    (void)err;
    const struct zaya *a = m->arch_data;
    const double D = m->hp.n_embd, V = m->hp.n_vocab, d = a->head_dim, Hq = a->n_head;
    const double Hk = a->n_head_kv, C = a->n_ch, R = a->router, E = a->n_expert;
    const double expert = 3 * D * a->moe_ff;
    double total = V * D * (m->hp.tie_embd ? 1 : 2) + 3 * D;
    double active = V * D + 3 * D;
    for (int il = 0; il < a->n_layer; il++) {
        double n = 2 * D + 2 * D * Hq * d + 2 * D * Hk * d;          /* norms, q, k, v, o */
        n += C * a->k0 + C + C * d * a->k1 + C + Hk + 8 * D;        /* convs, temp, scales */
        n += R * D + R + R + 2 * (R * R + R) + (E + 1) * R + (E + 1) + (il > 0 ? R : 0);
        total += n + E * expert;
        active += n + expert;
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

const struct kvx_arch kvx_arch_zaya = {
    .name = "zaya",
    .hparams = zaya_hparams,
    .load_weights = zaya_load,
    .declare_cache = zaya_declare_cache,
    .forward = zaya_forward,
    .scratch_floats = zaya_scratch_floats,
    .param_count = zaya_param_count,
};
