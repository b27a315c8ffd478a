/* model/deepseek_v3: DeepSeek-V3 multi-head latent attention (MLA) and its mixture of experts,
 * from safetensors + config.json (model_type deepseek_v3).
 *
 * Per layer, for a token at position p (x the residual stream, H heads, c = kv_lora_rank,
 * r = qk_rope_head_dim, n = qk_nope_head_dim, v = v_head_dim):
 *   h   = RMSNorm(x) * input_layernorm
 *   q   = RMSNorm(h Wqa) * q_a_layernorm  Wqb            (or h Wq)      [H, n + r]
 *   kv  = h Wkva = [c_kv (c) | k_rot (r)];  ĉ = RMSNorm(c_kv) * kv_a_layernorm
 *   q_rot, k_rot = RoPE(p)  (interleaved pairs, or half-split when rope_interleave is false;
 *                            YaRN inverse frequencies, cos/sin × attn_factor)
 *   Wkvb rows per head h: W_UK^h (n × c), then W_UV^h (v × c)
 *   absorbed query  q̃_h = W_UK^hᵀ q_nope_h                                 [c]
 *   logit_{h,s} = scale · (q̃_h · ĉ_s + q_rot_h · k_rot_s)    ( = q_h · k_h,s of the naive form)
 *   õ_h = Σ_s softmax(logit)_{h,s} ĉ_s;   o_h = W_UV^h õ_h                 [v]
 *   x  += concat_h(o_h) Wo
 *   h   = RMSNorm(x) * post_attention_layernorm
 *   x  += SwiGLU MLP(h)                                     layers < first_k_dense_replace
 *   x  += Σ_{e in top_k} w_e SwiGLU_e(h) + SwiGLU_shared(h)  the others (MoE):
 *         s = sigmoid(h Wrouter); choice = s + e_score_correction_bias;
 *         keep the topk_group groups (of n_expert / n_group) with the largest sum of their two
 *         best choices, then the top_k experts by choice among them; w_e = s_e (divided by
 *         their sum when norm_topk_prob) × routed_scaling_factor
 * logits = (RMSNorm(x) * norm) lm_head.
 *
 * The cache holds, per token and layer, one vector [ĉ | k_rot] (c + r values), read by every
 * query head as its key and, through its first c values, as its value: a LATENT layer
 * (kv/layout.h).  Attention runs through the same causal kernels as GQA with n_head_kv = 1 and
 * head_dim = c + r; it returns Σ_s p_s [ĉ_s | k_rot_s] per head, whose first c values are õ_h.
 * The absorbed form is used for prefill and decode alike (exact in real arithmetic; checked
 * against transformers' naive form by tests/test_arch_llama.c).
 *
 * The naive form (kvx_model_cfg.mla = KVX_MLA_NAIVE) computes attention as Hugging Face does:
 *   K_h = [W_UK^h ĉ | k_rot] (n + r),  V_h = W_UV^h ĉ (v),  q_h = [q_nope_h | q_rot_h]
 *   o_h = Σ_s softmax(scale · q_h · K_h,s) V_h,s
 * and caches K and V per head: a FULL layer of H KV heads with k_dim = n + r, v_dim = v, the
 * multi-head-equivalent cache (H (n + r + v) values per token and layer), through
 * the same causal kernels with n_head_kv = H.  It is the reference the absorbed form is
 * checked against, and what an MHA engine would hold. */
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

/* ------------------------------------------------------------------------------------------ */
/* Loading */

static double yarn_mscale(double factor, double m)
{
    return factor <= 1 ? 1.0 : 0.1 * m * log(factor) + 1.0;
}

/* rope_parameters (5.x) or rope_theta + rope_scaling (4.x): default or yarn. */
static enum kvx_status mla_rope(struct kvx_model *m, struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    struct kvx_mla_hparams *a = &m->mla;
    const struct kvx_jv *rp = kvx_jv_get(c, "rope_parameters");
    if (!rp || rp->type == KVX_JV_NULL)
        rp = kvx_jv_get(c, "rope_scaling");
    if (rp && rp->type == KVX_JV_NULL)
        rp = NULL;
    if (rp && rp->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters is not an object");
    double theta, factor = 1, orig, bf, bs, ms, ms_all, af = 0;
    const char *type = "default";
    enum kvx_status st;
    if ((st = kvx_hf_pos_float(c, "rope_theta", 10000.0, &theta, err)) ||
        (st = kvx_hf_pos_float(rp, "rope_theta", theta, &theta, err)) ||
        (rp && (st = kvx_hf_str(rp, "type", type, &type, err))) ||
        (rp && (st = kvx_hf_str(rp, "rope_type", type, &type, err))))
        return st;
    float *inv = malloc((size_t)(a->rope / 2) * sizeof *inv);
    if (!inv || (st = kvx_model_own(m, inv, err)) != KVX_OK)
        return inv ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    a->inv_freq = inv;
    a->scale = 1.0f / sqrtf((float)(a->nope + a->rope));
    a->attn_factor = 1.0f;
    if (strcmp(type, "default") == 0) {
        for (int32_t i = 0; i < a->rope / 2; i++)
            inv[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)a->rope);
        return KVX_OK;
    }
    if (strcmp(type, "yarn") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope type '%.40s' is not "
                           "supported for deepseek_v3 (default, yarn)", type);
    if ((st = kvx_hf_pos_float(rp, "factor", 0, &factor, err)) ||
        (st = kvx_hf_pos_float(rp, "original_max_position_embeddings", 0, &orig, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_fast", 32, &bf, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_slow", 1, &bs, err)) ||
        (st = kvx_hf_pos_float(rp, "mscale", 0, &ms, err)) ||
        (st = kvx_hf_pos_float(rp, "mscale_all_dim", 0, &ms_all, err)) ||
        (st = kvx_hf_pos_float(rp, "attention_factor", 0, &af, err)))
        return st;
    if (factor == 0 || orig == 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: yarn RoPE needs 'factor' and "
                           "'original_max_position_embeddings'");
    kvx_rope_yarn_inv_freq(inv, a->rope, theta, factor, orig, bf, bs, true);
    if (af == 0)
        af = ms != 0 && ms_all != 0 ? yarn_mscale(factor, ms) / yarn_mscale(factor, ms_all)
                                    : yarn_mscale(factor, 1);
    a->attn_factor = (float)af;
    if (ms_all != 0) {   /* transformers' yarn_apply_mscale */
        const double s = yarn_mscale(factor, ms_all);
        a->scale = (float)(1.0 / sqrt((double)(a->nope + a->rope)) * s * s);
    }
    return KVX_OK;
}

/* Mixture-of-experts keys (used by layers >= first_k_dense_replace). */
static enum kvx_status mla_moe_hparams(struct kvx_model *m, struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    struct kvx_mla_hparams *a = &m->mla;
    int64_t ne, k, ng, kg, ff, sh;
    double scale;
    const char *scoring;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "n_routed_experts", true, 0, 1, 1024, &ne, err)) ||
        (st = kvx_hf_int(c, "num_experts_per_tok", true, 0, 1, 1 << 16, &k, err)) ||
        (st = kvx_hf_int(c, "n_group", false, 1, 1, 1 << 16, &ng, err)) ||
        (st = kvx_hf_int(c, "topk_group", false, 1, 1, 1 << 16, &kg, err)) ||
        (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 24, &ff, err)) ||
        (st = kvx_hf_int(c, "n_shared_experts", false, 0, 0, 64, &sh, err)) ||
        (st = kvx_hf_pos_float(c, "routed_scaling_factor", 1.0, &scale, err)) ||
        (st = kvx_hf_bool(c, "norm_topk_prob", true, &a->norm_topk, err)) ||
        (st = kvx_hf_str(c, "scoring_func", "sigmoid", &scoring, err)))
        return st;
    if (ne % ng || ne / ng < 2 || kg > ng || k > (ne / ng) * kg)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: n_routed_experts %lld, n_group "
                           "%lld, topk_group %lld, num_experts_per_tok %lld do not describe "
                           "group-limited routing", (long long)ne, (long long)ng, (long long)kg,
                           (long long)k);
    if (strcmp(scoring, "sigmoid") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: scoring_func '%.40s' is not "
                           "supported (sigmoid)", scoring);
    a->n_expert = (int32_t)ne;
    a->top_k = (int32_t)k;
    a->n_group = (int32_t)ng;
    a->topk_group = (int32_t)kg;
    a->moe_ff = (int32_t)ff;
    a->n_shared = (int32_t)sh;
    a->routed_scale = (float)scale;
    return KVX_OK;
}

/* Every matmul input row must fit the engine's quantized-input buffer, which is sized for the
 * widest of n_embd, n_head * head_dim and n_ff (engine.c). */
static enum kvx_status check_widths(const struct kvx_model *m, struct kvx_err *err)
{
    const struct kvx_hparams *hp = &m->hp;
    const struct kvx_mla_hparams *a = &m->mla;
    int64_t widest = hp->n_embd > (int64_t)hp->n_head * hp->head_dim
                         ? hp->n_embd : (int64_t)hp->n_head * hp->head_dim;
    widest = hp->n_ff > widest ? hp->n_ff : widest;
    const int64_t in[] = {a->q_lora, (int64_t)hp->n_head * a->v, a->moe_ff,
                          (int64_t)a->moe_ff * a->n_shared};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (in[i] > widest)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: a projection input of "
                               "%lld values is wider than the engine's widest (%lld)",
                               (long long)in[i], (long long)widest);
    return KVX_OK;
}

static enum kvx_status mla_hparams(struct kvx_model *m, struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    struct kvx_hparams *hp = &m->hp;
    struct kvx_mla_hparams *a = &m->mla;
    int64_t embd, layers, heads, ff, vocab, ctx, qlora, kvlora, nope, rope, v, dense;
    double eps;
    bool interleave, bias;
    const char *act;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 20, &embd, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &layers, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &heads, err)) ||
        (st = kvx_hf_int(c, "intermediate_size", true, 0, 1, 1 << 24, &ff, err)) ||
        (st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 4096, 1, (int64_t)1 << 30, &ctx, err)) ||
        /* q_lora_rank: null means a plain q_proj; absent is an error (transformers would
         * take its class default, 1536) */
        (st = kvx_hf_int(c, "q_lora_rank", !kvx_jv_get(c, "q_lora_rank"), 0, 1, 1 << 20, &qlora,
                         err)) ||
        (st = kvx_hf_int(c, "kv_lora_rank", true, 0, 1, 1 << 16, &kvlora, err)) ||
        (st = kvx_hf_int(c, "qk_nope_head_dim", true, 0, 1, 4096, &nope, err)) ||
        (st = kvx_hf_int(c, "qk_rope_head_dim", true, 0, 2, 1024, &rope, err)) ||
        (st = kvx_hf_int(c, "v_head_dim", true, 0, 1, 4096, &v, err)) ||
        (st = kvx_hf_int(c, "first_k_dense_replace", false, 0, 0, INT32_MAX, &dense, err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-6, &eps, err)) ||
        (st = kvx_hf_bool(c, "rope_interleave", true, &interleave, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", false, &bias, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", false, &hp->tie_embd, err)) ||
        (st = kvx_hf_str(c, "hidden_act", "silu", &act, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (rope % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: qk_rope_head_dim %lld is odd",
                           (long long)rope);
    if (bias || strcmp(act, "silu") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: attention_bias true or "
                           "hidden_act '%.40s' is not supported for deepseek_v3", act);
    *a = (struct kvx_mla_hparams){
        .q_lora = (int32_t)qlora, .kv_lora = (int32_t)kvlora, .nope = (int32_t)nope,
        .rope = (int32_t)rope, .v = (int32_t)v, .norm_eps = 1e-6f,
        .rope_kind = interleave ? KVX_ROPE_NORMAL : KVX_ROPE_NEOX,
        .n_dense = dense < layers ? (int32_t)dense : (int32_t)layers,
    };
    if (a->n_dense < layers && (st = mla_moe_hparams(m, err)) != KVX_OK)
        return st;
    hp->n_vocab = (int32_t)vocab;
    hp->n_embd = (int32_t)embd;
    hp->n_layer = (int32_t)layers;
    hp->n_head = (int32_t)heads;
    hp->n_head_kv = 1;                         /* one latent vector shared by all queries */
    hp->head_dim = (int32_t)(kvlora + rope);
    if (m->mla_mode == KVX_MLA_NAIVE) {         /* per-head K (n + r) and V (v) */
        hp->n_head_kv = (int32_t)heads;
        hp->head_dim = (int32_t)(nope + rope > v ? nope + rope : v);   /* the wider, for buffers */
    }
    hp->n_ff = (int32_t)ff;
    hp->n_ctx_train = ctx;
    hp->norm_eps = (float)eps;
    hp->n_rot = (int32_t)rope;
    hp->rope_kind = a->rope_kind;
    hp->rope_theta = 0;                        /* unused: the RoPE table is in m->mla */
    hp->rope_freq_scale = 1;
    if (embd % 32 || ff % 32 || (a->moe_ff && a->moe_ff % 32))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "widths %lld/%lld/%d are not multiples of "
                           "32", (long long)embd, (long long)ff, a->moe_ff);
    if ((st = check_widths(m, err)) != KVX_OK)
        return st;
    return mla_rope(m, err);
}

/* The routed experts and the router of a MoE layer; the shared experts go in w_gate/up/down. */
static enum kvx_status mla_moe_layer(struct kvx_model *m, int il, struct kvx_mla_layer *L,
                                     struct kvx_err *err)
{
    const struct kvx_mla_hparams *a = &m->mla;
    const int64_t D = m->hp.n_embd, F = a->moe_ff, E = a->n_expert;
    char n[192];
    enum kvx_status st;
    struct kvx_mat *ex = calloc((size_t)(3 * E), sizeof *ex);
    if (!ex || (st = kvx_model_own(m, ex, err)) != KVX_OK)
        return ex ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    L->experts = ex;
    snprintf(n, sizeof n, "model.layers.%d.mlp.gate.weight", il);
    if ((st = kvx_model_bind_mat_f32(m, n, D, E, &L->router, err)))
        return st;
    snprintf(n, sizeof n, "model.layers.%d.mlp.gate.e_score_correction_bias", il);
    if ((st = kvx_model_bind_vec(m, n, E, true, &L->router_bias, err)))
        return st;
    static const char *const part[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int64_t e = 0; e < E; e++)
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%lld.%s.weight", il, (long long)e,
                     part[j]);
            if ((st = kvx_model_bind_mat(m, n, j < 2 ? D : F, j < 2 ? F : D, true, &ex[3 * e + j],
                                         err)))
                return st;
        }
    if (a->n_shared == 0)
        return KVX_OK;
    const int64_t S = F * a->n_shared;
    const char *sh = "mlp.shared_experts";
    if ((snprintf(n, sizeof n, "model.layers.%d.%s.gate_proj.weight", il, sh),
         st = kvx_model_bind_mat(m, n, D, S, true, &L->w_gate, err)) ||
        (snprintf(n, sizeof n, "model.layers.%d.%s.up_proj.weight", il, sh),
         st = kvx_model_bind_mat(m, n, D, S, true, &L->w_up, err)) ||
        (snprintf(n, sizeof n, "model.layers.%d.%s.down_proj.weight", il, sh),
         st = kvx_model_bind_mat(m, n, S, D, true, &L->w_down, err)))
        return st;
    return KVX_OK;
}

static enum kvx_status mla_layer(struct kvx_model *m, int il, struct kvx_err *err)
{
    const struct kvx_hparams *hp = &m->hp;
    const struct kvx_mla_hparams *a = &m->mla;
    struct kvx_mla_layer *L = &m->mla_layers[il];
    const int64_t D = hp->n_embd, H = hp->n_head, qk = a->nope + a->rope;
    char n[160];
    enum kvx_status st;
#define NAME(s) (snprintf(n, sizeof n, "model.layers.%d.%s", il, s), n)
    if ((st = kvx_model_bind_vec(m, NAME("input_layernorm.weight"), D, true, &L->attn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("post_attention_layernorm.weight"), D, true, &L->ffn_norm, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.kv_a_proj_with_mqa.weight"), D, a->kv_lora + a->rope, true, &L->wkv_a, err)) ||
        (st = kvx_model_bind_vec(m, NAME("self_attn.kv_a_layernorm.weight"), a->kv_lora, true, &L->kv_a_norm, err)) ||
        (st = kvx_model_bind_mat_f32(m, NAME("self_attn.kv_b_proj.weight"), a->kv_lora, H * (a->nope + a->v), &L->wkv_b, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.o_proj.weight"), H * a->v, D, true, &L->wo, err)))
        return st;
    if (a->q_lora)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_a_proj.weight"), D, a->q_lora, true, &L->wq_a, err);
    if (a->q_lora && !st)
        st = kvx_model_bind_vec(m, NAME("self_attn.q_a_layernorm.weight"), a->q_lora, true, &L->q_a_norm, err);
    if (a->q_lora && !st)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_b_proj.weight"), a->q_lora, H * qk, true, &L->wq_b, err);
    if (!a->q_lora)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_proj.weight"), D, H * qk, true, &L->wq, err);
    if (st || il >= a->n_dense)
        return st ? st : mla_moe_layer(m, il, L, err);
    if ((st = kvx_model_bind_mat(m, NAME("mlp.gate_proj.weight"), D, hp->n_ff, true, &L->w_gate, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.up_proj.weight"), D, hp->n_ff, true, &L->w_up, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.down_proj.weight"), hp->n_ff, D, true, &L->w_down, err)))
        return st;
#undef NAME
    return KVX_OK;
}

static enum kvx_status mla_load_hparams(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "deepseek_v3 is read from safetensors + "
                           "config.json only");
    return mla_hparams(m, err);
}

static enum kvx_status mla_load(struct kvx_model *m, struct kvx_err *err)
{
    enum kvx_status st;
    const struct kvx_hparams *hp = &m->hp;
    if ((st = kvx_model_bind_mat(m, "model.embed_tokens.weight", hp->n_embd, hp->n_vocab, true,
                                 &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, "model.norm.weight", hp->n_embd, true, &m->output_norm, err)))
        return st;
    if (!hp->tie_embd && (st = kvx_model_bind_mat(m, "lm_head.weight", hp->n_embd, hp->n_vocab,
                                                  true, &m->output, err)))
        return st;
    if (hp->tie_embd)
        m->output = m->tok_embd;
    m->mla_layers = calloc((size_t)hp->n_layer, sizeof *m->mla_layers);
    if (!m->mla_layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = mla_layer(m, il, err)) != KVX_OK)
            return st;
    return KVX_OK;
}

static void mla_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                              enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const struct kvx_mla_hparams *a = &m->mla;
    for (int il = 0; il < m->hp.n_layer && m->mla_mode == KVX_MLA_NAIVE; il++)
        layout->layers[il] = (struct kvx_layer_cache){
            .kind = KVX_KV_KIND_FULL,     /* per head [k_nope | k_rot] and v */
            .n_kv_heads = m->hp.n_head,
            .k_dim = a->nope + a->rope,
            .v_dim = a->v,
            .k_codec = k_codec,
            .v_codec = v_codec,
        };
    for (int il = 0; il < m->hp.n_layer && m->mla_mode != KVX_MLA_NAIVE; il++)
        layout->layers[il] = (struct kvx_layer_cache){
            .kind = KVX_KV_KIND_LATENT,   /* [ĉ | k_rot]: ĉ is the value */
            .n_kv_heads = 1,
            .k_dim = m->hp.head_dim,
            .v_dim = m->mla.kv_lora,
            .k_codec = k_codec,
            .v_codec = v_codec,
        };
}

/* ------------------------------------------------------------------------------------------ */
/* Forward: per-token row steps and matmuls, each a parallel region over the engine's threads */

/* This file's buffers in kvx_forward_scratch.extra, for B tokens. */
struct mla_scratch {
    float *cq;                 /* B x q_lora: q_a output */
    float *qfull;              /* B x H(n + r): the naive query */
    float *o;                  /* B x H v: concat_h(o_h) */
    float *moe_x, *moe_y;      /* B x D: one expert's gathered inputs, outputs */
    float *moe_g, *moe_u;      /* B x max(moe_ff, shared width) */
    float *route_w;            /* B x top_k routing weights */
    int32_t *route_e;          /* B x top_k chosen experts */
    int32_t *list_t, *list_k;  /* B: tokens of one expert and the choice slot of each */
    float *kva;                /* naive form: B x (c + r), the kv_a_proj output */
};

/* Lay the buffers out from `base` (NULL: only count); returns the floats they take. */
static int64_t mla_scratch_layout(const struct kvx_model *m, int64_t B, float *base,
                                  struct mla_scratch *sc)
{
    const struct kvx_mla_hparams *a = &m->mla;
    const int64_t H = m->hp.n_head, D = m->hp.n_embd;
    const int64_t fm = a->moe_ff * (a->n_shared > 1 ? a->n_shared : 1);
    const bool moe = a->n_dense < m->hp.n_layer;
    const int64_t sizes[] = {B * a->q_lora, B * H * (a->nope + a->rope), B * H * a->v,
                             moe ? B * D : 0, moe ? B * D : 0, B * fm, B * fm,
                             B * a->top_k, B * a->top_k, moe ? B : 0, moe ? B : 0,
                             m->mla_mode == KVX_MLA_NAIVE ? B * (a->kv_lora + a->rope) : 0};
    float **slots[] = {&sc->cq, &sc->qfull, &sc->o, &sc->moe_x, &sc->moe_y, &sc->moe_g,
                       &sc->moe_u, &sc->route_w, (float **)&sc->route_e, (float **)&sc->list_t,
                       (float **)&sc->list_k, &sc->kva};
    return kvx_step_carve(base, sizes, slots, sizeof sizes / sizeof sizes[0]);
}

static int64_t mla_scratch_floats(const struct kvx_model *m, int64_t n_batch)
{
    struct mla_scratch sc;
    return mla_scratch_layout(m, n_batch, NULL, &sc);
}

enum phase {
    P_EMBED, P_ATTN_NORM, P_QA_NORM, P_LATENT, P_NAIVE, P_UV, P_FFN_NORM, P_SWIGLU, P_ROUTE,
    P_MOE_SWIGLU, P_RESIDUAL,
};

struct step {
    const struct kvx_model *m;
    struct kvx_forward *f;
    const struct kvx_mla_layer *L;
    struct mla_scratch sc;
    int il;
    enum phase phase;
    bool add_ffn;              /* P_ATTN_NORM: x += the previous layer's FFN output first */
    int64_t ff;                /* P_SWIGLU / P_MOE_SWIGLU: width of the rows */
};

/* One token of the latent attention input: normalise ĉ and rotate k_rot (the cache row, stored
 * by attention_block), rotate q_rot and build the absorbed query [q̃_h | q_rot_h] per head. */
static void latent_row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int H = m->hp.n_head, c = a->kv_lora, r = a->rope, n = a->nope, hd = c + r;
    float *k = f->s->k + t * hd;
    const float *cs = f->s->rope_cs + t * r;
    kvx_rmsnorm(k, k, L->kv_a_norm, c, a->norm_eps);
    kvx_rope_apply(k + c, cs, r, a->rope_kind);
    const float *qf = s->sc.qfull + t * (int64_t)H * (n + r);
    float *q = f->s->q + t * (int64_t)H * hd;
    for (int h = 0; h < H; h++) {
        const float *qn = qf + h * (n + r);
        const float *wuk = L->wkv_b + (int64_t)h * (n + a->v) * c;   /* n rows of c */
        float *qh = q + h * hd;
        for (int j = 0; j < c; j++)
            qh[j] = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < c; j++)
                qh[j] += qn[i] * wuk[i * c + j];
        memcpy(qh + c, qn + n, (size_t)r * sizeof *qh);
        kvx_rope_apply(qh + c, cs, r, a->rope_kind);
    }
}

/* One token of the naive form: normalise ĉ, rotate k_rot, expand per head
 *   K_h = [W_UK^h ĉ | k_rot]  (n + r),   V_h = W_UV^h ĉ  (v)
 * into the engine's k/v rows (the cache rows of a FULL layer of H heads, stored by
 * attention_block), and rotate q_rot_h in place. */
static void naive_row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int H = m->hp.n_head, c = a->kv_lora, r = a->rope, n = a->nope, v = a->v;
    float *kv = s->sc.kva + t * (c + r);
    const float *cs = f->s->rope_cs + t * r;
    kvx_rmsnorm(kv, kv, L->kv_a_norm, c, a->norm_eps);
    kvx_rope_apply(kv + c, cs, r, a->rope_kind);
    float *k = f->s->k + t * (int64_t)H * (n + r), *vv = f->s->v + t * (int64_t)H * v;
    float *q = s->sc.qfull + t * (int64_t)H * (n + r);
    for (int h = 0; h < H; h++) {
        const float *w = L->wkv_b + (int64_t)h * (n + v) * c;   /* n rows W_UK, v rows W_UV */
        float *kh = k + h * (n + r), *vh = vv + h * v;
        for (int i = 0; i < n + v; i++) {
            float acc = 0;
            for (int j = 0; j < c; j++)
                acc += w[(int64_t)i * c + j] * kv[j];
            if (i < n)
                kh[i] = acc;
            else
                vh[i - n] = acc;
        }
        memcpy(kh + n, kv + c, (size_t)r * sizeof *kh);
        kvx_rope_apply(q + h * (n + r) + n, cs, r, a->rope_kind);
    }
}

/* o_h = W_UV^h õ_h (õ_h: the first c values of head h's attention output). */
static void uv_row(const struct step *s, int64_t t)
{
    const struct kvx_mla_hparams *a = &s->m->mla;
    const int H = s->m->hp.n_head, c = a->kv_lora, hd = c + a->rope;
    const float *o_lat = s->f->s->attn + t * (int64_t)H * hd;
    float *o = s->sc.o + t * (int64_t)H * a->v;
    for (int h = 0; h < H; h++) {
        const float *wuv = s->L->wkv_b + ((int64_t)h * (a->nope + a->v) + a->nope) * c;
        for (int i = 0; i < a->v; i++) {
            float acc = 0;
            for (int j = 0; j < c; j++)
                acc += wuv[i * c + j] * o_lat[h * hd + j];
            o[h * a->v + i] = acc;
        }
    }
}

/* Routing of one token (transformers' DeepseekV3TopkRouter, see the file header). */
static void route_row(const struct step *s, int64_t t)
{
    const struct kvx_mla_hparams *a = &s->m->mla;
    const int64_t D = s->m->hp.n_embd;
    const int E = a->n_expert, G = a->n_group, per = E / G;
    const float *h = s->f->s->xn + t * D;
    float score[1024], choice[1024], gscore[1024];   /* E <= 1024: checked at load */
    for (int e = 0; e < E; e++) {
        float z = 0;
        for (int64_t d = 0; d < D; d++)
            z += h[d] * s->L->router[(int64_t)e * D + d];
        score[e] = 1.0f / (1.0f + expf(-z));
        choice[e] = score[e] + s->L->router_bias[e];
    }
    for (int g = 0; g < G; g++) {   /* sum of each group's two best choices */
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (choice[e] > b1) {
                b2 = b1;
                b1 = choice[e];
            } else if (choice[e] > b2) {
                b2 = choice[e];
            }
        }
        gscore[g] = b1 + b2;
    }
    for (int k = 0; k < G - a->topk_group; k++) {   /* drop the weakest groups */
        int worst = -1;
        for (int g = 0; g < G; g++)
            if (gscore[g] != INFINITY && (worst < 0 || gscore[g] < gscore[worst]))
                worst = g;
        gscore[worst] = INFINITY;   /* marks "dropped" */
        for (int e = worst * per; e < (worst + 1) * per; e++)
            choice[e] = -INFINITY;
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
        w[k] = (a->norm_topk ? w[k] / (sum + 1e-20f) : w[k]) * a->routed_scale;
}

static void row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, F = s->ff;
    float *x = f->s->x + t * D, *xn = f->s->xn + t * D;
    switch (s->phase) {
    case P_EMBED: {
        const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)m->tok_embd.type,
                                                              KVX_ISA_SCALAR);
        k->to_float(m->tok_embd.data + (size_t)f->tokens[t] * m->tok_embd.row_bytes, x, D);
        float *cs = f->s->rope_cs + t * a->rope;
        for (int i = 0; i < a->rope / 2; i++) {
            const float ang = (float)f->pos[t] * a->inv_freq[i];
            cs[2 * i] = cosf(ang) * a->attn_factor;
            cs[2 * i + 1] = sinf(ang) * a->attn_factor;
        }
        break;
    }
    case P_ATTN_NORM:
        if (s->add_ffn)
            kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, s->L->attn_norm, D, m->hp.norm_eps);
        break;
    case P_QA_NORM:
        kvx_rmsnorm(s->sc.cq + t * a->q_lora, s->sc.cq + t * a->q_lora, s->L->q_a_norm, a->q_lora,
                    a->norm_eps);
        break;
    case P_LATENT: latent_row(s, t); break;
    case P_NAIVE: naive_row(s, t); break;
    case P_UV: uv_row(s, t); break;
    case P_FFN_NORM:
        kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, s->L->ffn_norm, D, m->hp.norm_eps);
        break;
    case P_SWIGLU:
        kvx_swiglu_isa(f->isa, f->s->gate + t * F, f->s->gate + t * F, f->s->up + t * F, F);
        break;
    case P_ROUTE: route_row(s, t); break;
    case P_MOE_SWIGLU:
        kvx_swiglu_isa(f->isa, s->sc.moe_g + t * F, s->sc.moe_g + t * F, s->sc.moe_u + t * F, F);
        break;
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
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, H = m->hp.n_head, hd = m->hp.head_dim;
    run_rows(s, P_ATTN_NORM);
    if (a->q_lora) {
        kvx_step_matmul(s->f, &L->wq_a, f->s->xn, D, s->sc.cq, a->q_lora);
        run_rows(s, P_QA_NORM);
        kvx_step_matmul(s->f, &L->wq_b, s->sc.cq, a->q_lora, s->sc.qfull, H * (a->nope + a->rope));
    } else {
        kvx_step_matmul(s->f, &L->wq, f->s->xn, D, s->sc.qfull, H * (a->nope + a->rope));
    }
    if (m->mla_mode == KVX_MLA_NAIVE) {
        const int64_t qk = a->nope + a->rope;
        kvx_step_matmul(s->f, &L->wkv_a, f->s->xn, D, s->sc.kva, a->kv_lora + a->rope);
        run_rows(s, P_NAIVE);
        const struct kvx_attn_batch nb = {
            .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
            .n_head = (int32_t)H, .n_head_kv = (int32_t)H, .head_dim = (int32_t)qk,
            .v_dim = a->v, .q = s->sc.qfull, .q_ld = H * qk, .out = s->sc.o, .out_ld = H * a->v,
            .scale = a->scale,
        };
        const struct kvx_kv_rows kv = {.k = f->s->k, .v = f->s->v, .k_ld = H * qk,
                                       .v_ld = H * a->v};
        kvx_step_store_attend(f, s->il, &kv, &nb);
        kvx_step_matmul(s->f, &L->wo, s->sc.o, H * a->v, f->s->xn, D);
        return;
    }
    kvx_step_matmul(s->f, &L->wkv_a, f->s->xn, D, f->s->k, hd);
    run_rows(s, P_LATENT);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = (int32_t)H, .n_head_kv = 1, .head_dim = (int32_t)hd,
        .q = f->s->q, .q_ld = H * hd, .out = f->s->attn, .out_ld = H * hd, .scale = a->scale,
    };
    const struct kvx_kv_rows kv = {.k = f->s->k, .k_ld = hd};   /* LATENT: K only */
    kvx_step_store_attend(f, s->il, &kv, &ab);
    run_rows(s, P_UV);
    kvx_step_matmul(s->f, &L->wo, s->sc.o, H * a->v, f->s->xn, D);
}

/* SwiGLU MLP of the rows in xn into `out` (the dense MLP, or the shared experts), through the
 * given gate/up buffers. */
static void mlp(struct step *s, const struct kvx_mat *wg, const struct kvx_mat *wu,
                const struct kvx_mat *wd, float *g, float *u, enum phase act, float *out)
{
    const int64_t D = s->m->hp.n_embd, F = wg->n_out;
    kvx_step_matmul(s->f, wg, s->f->s->xn, D, g, F);
    kvx_step_matmul(s->f, wu, s->f->s->xn, D, u, F);
    s->ff = F;
    run_rows(s, act);
    kvx_step_matmul(s->f, wd, g, F, out, D);
}

/* Routed expert e over the n gathered rows of moe_x into moe_y. */
static void routed_expert(void *ctx, int32_t e, int64_t n)
{
    (void)n;
    struct step *s = ctx;
    const struct kvx_mla_hparams *a = &s->m->mla;
    const struct kvx_mat *w = &s->L->experts[3 * e];
    const int64_t D = s->m->hp.n_embd;
    kvx_step_matmul(s->f, &w[0], s->sc.moe_x, D, s->sc.moe_g, a->moe_ff);
    kvx_step_matmul(s->f, &w[1], s->sc.moe_x, D, s->sc.moe_u, a->moe_ff);
    s->ff = a->moe_ff;
    run_rows(s, P_MOE_SWIGLU);
    kvx_step_matmul(s->f, &w[2], s->sc.moe_g, a->moe_ff, s->sc.moe_y, D);
}

/* The routed experts: each expert runs once over the tokens that chose it, and adds its
 * weighted output to their residual rows (x; the shared experts' output follows in xn). */
static void routed_experts(struct step *s)
{
    const struct kvx_mla_hparams *a = &s->m->mla;
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
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    run_rows(s, P_FFN_NORM);
    if (s->il < s->m->mla.n_dense) {
        mlp(s, &L->w_gate, &L->w_up, &L->w_down, f->s->gate, f->s->up, P_SWIGLU, f->s->xn);
        return;
    }
    routed_experts(s);
    if (s->m->mla.n_shared)
        mlp(s, &L->w_gate, &L->w_up, &L->w_down, s->sc.moe_g, s->sc.moe_u, P_MOE_SWIGLU,
            f->s->xn);
    else
        memset(f->s->xn, 0, (size_t)(f->n_tok * s->m->hp.n_embd) * sizeof(float));
}

static void mla_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    struct step s = {.m = m, .f = f};
    mla_scratch_layout(m, f->n_tok, f->s->extra, &s.sc);
    run_rows(&s, P_EMBED);
    for (int il = 0; il < m->hp.n_layer; il++) {
        s.il = il;
        s.L = &m->mla_layers[il];
        s.add_ffn = il > 0;
        attention_block(&s);
        ffn_block(&s);
    }
    run_rows(&s, P_RESIDUAL);
    kvx_step_logits(m, f);
}

/* Embeddings (+ lm_head unless tied), final norm; per layer the MLA projections and norms
 * (q_a, q_a_layernorm, q_b or q_proj; kv_a_proj_with_mqa, kv_a_layernorm, kv_b, o), two
 * norms, and the dense MLP or the MoE block (router, its score-correction bias, routed and
 * shared experts; a token reads top_k routed experts).  The checkpoint's multi-token-
 * prediction layer (num_nextn_predict_layers) is not part of the model HF runs: not counted. */
static enum kvx_status mla_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                       struct kvx_err *err)
{
    (void)err;
    const struct kvx_hparams *hp = &m->hp;
    const struct kvx_mla_hparams *a = &m->mla;
    const double D = hp->n_embd, V = hp->n_vocab, H = hp->n_head, c = a->kv_lora;
    const double qk = a->nope + a->rope;
    double attn = a->q_lora ? D * a->q_lora + a->q_lora + a->q_lora * H * qk : D * H * qk;
    attn += D * (c + a->rope) + c + c * H * (a->nope + a->v) + H * a->v * D + 2 * D;
    const double expert = 3 * D * a->moe_ff;
    /* a decoded token reads one embedding row but all of lm_head (or the tied table) */
    double total = V * D * (hp->tie_embd ? 1 : 2) + D, active = V * D + D;
    for (int il = 0; il < hp->n_layer; il++) {
        if (il < a->n_dense) {
            total += attn + 3 * D * hp->n_ff;
            active += attn + 3 * D * hp->n_ff;
            continue;
        }
        const double common = attn + D * a->n_expert + a->n_expert + a->n_shared * expert;
        total += common + (double)a->n_expert * expert;
        active += common + (double)a->top_k * expert;
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

const struct kvx_arch kvx_arch_deepseek_v3 = {
    .name = "deepseek_v3",
    .hparams = mla_load_hparams,
    .load_weights = mla_load,
    .declare_cache = mla_declare_cache,
    .forward = mla_forward,
    .scratch_floats = mla_scratch_floats,
    .param_count = mla_param_count,
};
