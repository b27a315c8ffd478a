/* model/deepseek_v3: DeepSeek-V3 multi-head latent attention (MLA), from safetensors +
 * config.json (model_type deepseek_v3), dense layers (first_k_dense_replace covers every layer;
 * the MoE layers are not implemented and refused at load).
 *
 * Per layer, for a token at position p (x the residual stream, H heads, c = kv_lora_rank,
 * r = qk_rope_head_dim, n = qk_nope_head_dim, v = v_head_dim):
 *   h   = RMSNorm(x) * input_layernorm
 *   q   = RMSNorm(h Wqa) * q_a_layernorm  Wqb            (or h Wq)      [H, n + r]
 *   kv  = h Wkva = [c_kv (c) | k_rot (r)];  ĉ = RMSNorm(c_kv) * kv_a_layernorm
 *   q_rot, k_rot = RoPE(p)  (interleaved pairs; YaRN inverse frequencies, cos/sin × attn_factor)
 *   Wkvb rows per head h: W_UK^h (n × c), then W_UV^h (v × c)
 *   absorbed query  q̃_h = W_UK^hᵀ q_nope_h                                 [c]
 *   logit_{h,s} = scale · (q̃_h · ĉ_s + q_rot_h · k_rot_s)    ( = q_h · k_h,s of the naive form)
 *   õ_h = Σ_s softmax(logit)_{h,s} ĉ_s;   o_h = W_UV^h õ_h                 [v]
 *   x  += concat_h(o_h) Wo;   x += SwiGLU MLP(RMSNorm(x) * post_attention_layernorm)
 * logits = (RMSNorm(x) * norm) lm_head.
 *
 * The cache therefore holds, per token and layer, one vector [ĉ | k_rot] (c + r values), read
 * by every query head as its key and, through its first c values, as its value: a LATENT layer
 * (kv/layout.h).  Attention runs through the same causal kernels as GQA with n_head_kv = 1 and
 * head_dim = c + r; it returns Σ_s p_s [ĉ_s | k_rot_s] per head, whose first c values are õ_h.
 *
 * Scratch: the engine sizes its buffers from hparams (n_head × head_dim for q and attention,
 * n_ff for gate/up); this file keeps q_a's output in `gate`, the naive [H, n + r] query in
 * `attn`, and concat_h(o_h) in `q`, which fits when n_ff >= q_lora_rank, c >= n and
 * c + r >= v (true of DeepSeek-V3's 18432/1536, 512/128, 576/128; checked at load). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/causal.h"
#include "engine/forward.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* YaRN (transformers' _compute_yarn_parameters): inv[i] = θ^(-2i/R) blended between
 * extrapolation (1) and interpolation (1/factor) by a linear ramp over [low, high]. */
static void yarn_inv_freq(float *inv, int32_t R, double theta, double factor, double orig_ctx,
                          double beta_fast, double beta_slow)
{
    const double pi = 3.14159265358979323846;
    double low = floor(R * log(orig_ctx / (beta_fast * 2 * pi)) / (2 * log(theta)));
    double high = ceil(R * log(orig_ctx / (beta_slow * 2 * pi)) / (2 * log(theta)));
    low = low > 0 ? low : 0;
    high = high < R - 1 ? high : R - 1;
    if (low == high)
        high += 0.001;
    for (int32_t i = 0; i < R / 2; i++) {
        const float pos_freq = powf((float)theta, (float)(2 * i) / (float)R);
        float ramp = (float)(((double)i - low) / (high - low));
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        const float extra = 1.0f - ramp;   /* weight of the unscaled frequency */
        inv[i] = (1.0f / ((float)factor * pos_freq)) * (1.0f - extra) + (1.0f / pos_freq) * extra;
    }
}

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
    yarn_inv_freq(inv, a->rope, theta, factor, orig, bf, bs);
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
        (st = kvx_hf_int(c, "q_lora_rank", false, 0, 1, 1 << 20, &qlora, err)) ||
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
    if (dense < layers)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: first_k_dense_replace %lld < "
                           "num_hidden_layers %lld: the MoE layers of deepseek_v3 are not "
                           "implemented (dense layers only)", (long long)dense, (long long)layers);
    if (rope % 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: qk_rope_head_dim %lld is odd",
                           (long long)rope);
    if (bias || strcmp(act, "silu") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: attention_bias true or "
                           "hidden_act '%.40s' is not supported for deepseek_v3", act);
    if (ff < qlora || kvlora < nope || kvlora + rope < v)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: intermediate_size %lld < "
                           "q_lora_rank %lld, kv_lora_rank %lld < qk_nope_head_dim %lld or "
                           "kv_lora_rank + qk_rope_head_dim < v_head_dim %lld: kvx's scratch "
                           "layout for MLA does not fit", (long long)ff, (long long)qlora,
                           (long long)kvlora, (long long)nope, (long long)v);
    *a = (struct kvx_mla_hparams){
        .q_lora = (int32_t)qlora, .kv_lora = (int32_t)kvlora, .nope = (int32_t)nope,
        .rope = (int32_t)rope, .v = (int32_t)v, .norm_eps = 1e-6f,
        .rope_kind = interleave ? KVX_ROPE_NORMAL : KVX_ROPE_NEOX,
    };
    hp->n_vocab = (int32_t)vocab;
    hp->n_embd = (int32_t)embd;
    hp->n_layer = (int32_t)layers;
    hp->n_head = (int32_t)heads;
    hp->n_head_kv = 1;                         /* one latent head shared by all queries */
    hp->head_dim = (int32_t)(kvlora + rope);
    hp->n_ff = (int32_t)ff;
    hp->n_ctx_train = ctx;
    hp->norm_eps = (float)eps;
    hp->n_rot = (int32_t)rope;
    hp->rope_kind = a->rope_kind;
    hp->rope_theta = 0;                        /* unused: the YaRN table is in m->mla */
    hp->rope_freq_scale = 1;
    if (embd % 32 || ff % 32)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "widths %lld/%lld are not multiples of 32",
                           (long long)embd, (long long)ff);
    return mla_rope(m, err);
}

/* Bind a matrix and convert it to f32 rows owned by the model. */
static enum kvx_status bind_f32_mat(struct kvx_model *m, const char *name, int64_t n_in,
                                    int64_t n_out, const float **out, struct kvx_err *err)
{
    struct kvx_mat w;
    enum kvx_status st = kvx_model_bind_mat(m, name, n_in, n_out, true, &w, err);
    if (st != KVX_OK)
        return st;
    float *f = malloc((size_t)(n_in * n_out) * sizeof *f);
    if (!f)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)w.type, KVX_ISA_SCALAR);
    for (int64_t r = 0; r < n_out; r++)
        k->to_float(w.data + (size_t)r * w.row_bytes, f + r * n_in, n_in);
    if ((st = kvx_model_own(m, f, err)) != KVX_OK)
        return st;
    *out = f;
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
        (st = bind_f32_mat(m, NAME("self_attn.kv_b_proj.weight"), a->kv_lora, H * (a->nope + a->v), &L->wkv_b, err)) ||
        (st = kvx_model_bind_mat(m, NAME("self_attn.o_proj.weight"), H * a->v, D, true, &L->wo, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.gate_proj.weight"), D, hp->n_ff, true, &L->w_gate, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.up_proj.weight"), D, hp->n_ff, true, &L->w_up, err)) ||
        (st = kvx_model_bind_mat(m, NAME("mlp.down_proj.weight"), hp->n_ff, D, true, &L->w_down, err)))
        return st;
    if (a->q_lora)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_a_proj.weight"), D, a->q_lora, true, &L->wq_a, err);
    if (a->q_lora && !st)
        st = kvx_model_bind_vec(m, NAME("self_attn.q_a_layernorm.weight"), a->q_lora, true, &L->q_a_norm, err);
    if (a->q_lora && !st)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_b_proj.weight"), a->q_lora, H * qk, true, &L->wq_b, err);
    if (!a->q_lora)
        st = kvx_model_bind_mat(m, NAME("self_attn.q_proj.weight"), D, H * qk, true, &L->wq, err);
#undef NAME
    return st;
}

static enum kvx_status mla_load(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "deepseek_v3 is read from safetensors + "
                           "config.json only");
    enum kvx_status st = mla_hparams(m, err);
    if (st != KVX_OK)
        return st;
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
    for (int il = 0; il < m->hp.n_layer; il++)
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

enum phase { P_EMBED, P_ATTN_NORM, P_QA_NORM, P_LATENT, P_UV, P_FFN_NORM, P_SWIGLU, P_RESIDUAL };

struct step {
    const struct kvx_model *m;
    struct kvx_forward *f;
    const struct kvx_mla_layer *L;
    int il;
    enum phase phase;
    bool add_ffn;              /* P_ATTN_NORM: x += the previous layer's FFN output first */
    struct kvx_matmul_job job;
    const float *mm_in;
    int64_t mm_in_ld;
};

/* One token of the latent attention input: normalise ĉ, rotate k_rot and q_rot, write the
 * cache row, and build the absorbed query [q̃_h | q_rot_h] per head. */
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
    kvx_kv_seq_write(f->seq[t], s->il, f->pos[t], k, NULL);   /* LATENT: K only */
    const float *qf = f->s->attn + t * (int64_t)H * hd;   /* naive query [H, n + r] */
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

/* o_h = W_UV^h õ_h, into q (stride H * (c + r), H * v values used). */
static void uv_row(const struct step *s, int64_t t)
{
    const struct kvx_mla_hparams *a = &s->m->mla;
    const int H = s->m->hp.n_head, c = a->kv_lora, hd = c + a->rope;
    const float *o_lat = s->f->s->attn + t * (int64_t)H * hd;
    float *o = s->f->s->q + t * (int64_t)H * hd;
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

static void row(const struct step *s, int64_t t)
{
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, F = m->hp.n_ff;
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
        kvx_rmsnorm(f->s->gate + t * F, f->s->gate + t * F, s->L->q_a_norm, a->q_lora, a->norm_eps);
        break;
    case P_LATENT: latent_row(s, t); break;
    case P_UV: uv_row(s, t); break;
    case P_FFN_NORM:
        kvx_add(x, xn, D);
        kvx_rmsnorm(xn, x, s->L->ffn_norm, D, m->hp.norm_eps);
        break;
    case P_SWIGLU:
        kvx_swiglu(f->s->gate + t * F, f->s->gate + t * F, f->s->up + t * F, F);
        break;
    case P_RESIDUAL: kvx_add(x, xn, D); break;
    }
}

static void step_rows(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    int64_t b, e;
    kvx_split_range(s->f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++)
        row(s, t);
}

static void run_rows(struct step *s, enum phase p)
{
    s->phase = p;
    kvx_threadpool_run(s->f->tp, step_rows, s);
}

static void step_quantize(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    int64_t b, e;
    kvx_split_range(s->f->n_tok, 1, ith, nth, &b, &e);
    kvx_matmul_quantize_rows(s->job.w[0], s->f->isa, s->mm_in, s->mm_in_ld, b, e, s->f->s->xq,
                             s->f->s->xq_stride);
}

static void step_matmul(void *ctx, int ith, int nth)
{
    kvx_matmul_part(&((struct step *)ctx)->job, ith, nth);
}

/* y = in W for every token of the batch (in: n_in floats per token, stride ld_in). */
static void matmul(struct step *s, const struct kvx_mat *w, const float *in, int64_t ld_in,
                   float *y, int64_t ldy)
{
    struct kvx_forward *f = s->f;
    memset(&s->job, 0, sizeof s->job);
    s->job = (struct kvx_matmul_job){
        .n_mats = 1, .w = {w}, .y = {y}, .ldy = {ldy}, .xq = {f->s->xq},
        .xq_stride = {f->s->xq_stride}, .n_tok = f->n_tok, .isa = f->isa,
    };
    s->mm_in = in;
    s->mm_in_ld = ld_in;
    kvx_threadpool_run(f->tp, step_quantize, s);
    kvx_threadpool_run(f->tp, step_matmul, s);
}

static void attention_block(struct step *s)
{
    const struct kvx_model *m = s->m;
    const struct kvx_mla_hparams *a = &m->mla;
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = m->hp.n_embd, F = m->hp.n_ff, H = m->hp.n_head, hd = m->hp.head_dim;
    run_rows(s, P_ATTN_NORM);
    /* the naive query [H, n + r] lands in attn (free until attention runs) */
    if (a->q_lora) {
        matmul(s, &L->wq_a, f->s->xn, D, f->s->gate, F);
        run_rows(s, P_QA_NORM);
        matmul(s, &L->wq_b, f->s->gate, F, f->s->attn, H * hd);
    } else {
        matmul(s, &L->wq, f->s->xn, D, f->s->attn, H * hd);
    }
    matmul(s, &L->wkv_a, f->s->xn, D, f->s->k, hd);
    run_rows(s, P_LATENT);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = (int32_t)H, .n_head_kv = 1, .head_dim = (int32_t)hd,
        .q = f->s->q, .q_ld = H * hd, .out = f->s->attn, .out_ld = H * hd, .scale = a->scale,
    };
    kvx_attn_causal(f->tp, &ab, &f->s->attn_ws);
    run_rows(s, P_UV);
    matmul(s, &L->wo, f->s->q, H * hd, f->s->xn, D);
}

static void ffn_block(struct step *s)
{
    const struct kvx_mla_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int64_t D = s->m->hp.n_embd, F = s->m->hp.n_ff;
    run_rows(s, P_FFN_NORM);
    matmul(s, &L->w_gate, f->s->xn, D, f->s->gate, F);
    matmul(s, &L->w_up, f->s->xn, D, f->s->up, F);
    run_rows(s, P_SWIGLU);
    matmul(s, &L->w_down, f->s->gate, F, f->s->xn, D);
}

static void mla_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    struct step s = {.m = m, .f = f};
    run_rows(&s, P_EMBED);
    for (int il = 0; il < m->hp.n_layer; il++) {
        s.il = il;
        s.L = &m->mla_layers[il];
        s.add_ffn = il > 0;
        attention_block(&s);
        ffn_block(&s);
    }
    run_rows(&s, P_RESIDUAL);
    const int64_t D = m->hp.n_embd;
    int64_t n_out = 0;
    for (int64_t t = 0; t < f->n_tok; t++)
        if (f->want_logits[t]) {
            kvx_rmsnorm(f->s->xn + n_out * D, f->s->x + t * D, m->output_norm, D, m->hp.norm_eps);
            n_out++;
        }
    if (n_out == 0)
        return;
    const int64_t n_tok = f->n_tok;
    f->n_tok = n_out;
    matmul(&s, &m->output, f->s->xn, D, f->logits, m->hp.n_vocab);
    f->n_tok = n_tok;
}

const struct kvx_arch kvx_arch_deepseek_v3 = {
    .name = "deepseek_v3",
    .load = mla_load,
    .declare_cache = mla_declare_cache,
    .forward = mla_forward,
};
