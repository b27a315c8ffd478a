/* model/deepseek_v4: DeepSeek-V4 (model_type deepseek_v4) from safetensors + config.json, as
 * transformers' DeepseekV4ForCausalLM computes it.
 *
 * Residual: n = hc_mult streams X_0..X_{n-1} (each D wide), all equal to the token's embedding
 * at the start.  Each sub-block f (attention, then MoE) is wrapped by mHC:
 *   x̄ = flatten(X) (stream-major), r = x̄ / sqrt(mean(x̄²) + eps),  m = fn r   ((2+n)n values)
 *   pre_i  = sigmoid(m_i scale_0 + base_i) + hc_eps
 *   post_i = 2 sigmoid(m_{n+i} scale_1 + base_{n+i})
 *   C_ik   = m_{2n+in+k} scale_2 + base_{2n+in+k};  C = softmax over k (rows) + hc_eps, then
 *            column-normalised; then (iters-1) x (row-, column-normalise), each normalisation
 *            dividing by (sum + hc_eps)                                    (Sinkhorn)
 *   y = f(RMSNorm(Σ_i pre_i X_i) * w_norm);   X'_k = post_k y + Σ_i C_ik X_i
 * Head: a_i = sigmoid((hc_fn r)_i hc_scale + hc_base_i) + hc_eps, h = Σ a_i X_i,
 *   logits = head · (RMSNorm(h) * norm).
 *
 * Attention (every layer; H heads of d dims, one K=V head, R rope dims = the LAST R of a head,
 * rotated in interleaved pairs (2i, 2i+1) by angle pos·inv_i; sliding-window layers use the
 * "main" rope (rope_theta), CSA/HCA layers the "compress" rope (compress_rope_theta, YaRN)):
 *   qr = RMSNorm(wq_a x) * q_norm;  q_h = rope(q_h / sqrt(mean(q_h²) + eps)),  q = wq_b qr
 *   kv = rope(RMSNorm(wkv x) * kv_norm)            (the key and the value)
 *   keys: the window (positions max(0, t-W+1) .. t) + compressed entries (below)
 *   p_s = exp(q_h·k_s / sqrt(d)) / (Σ_s' exp(q_h·k_s' / sqrt(d)) + exp(sink_h))
 *   o_h = rope⁻¹(Σ_s p_s k_s)  (rotation by -t·inv_i);   out = wo_b [wo_a_g · o_group_g]_g
 * Compressors (ratio r; the state machine of ARCHITECTURES.md A.9, one per compressor):
 *   per token c = wkv_c x, z = wgate_c x + ape[t mod r];  when t mod r = r-1 the window closes:
 *   HCA: e = Σ_j softmax_j(z_j) ⊙ c_j over the r tokens (per channel);
 *   CSA: the same over 2r slots: the previous window's first halves (c[0:d], z[0:d]) and this
 *        window's second halves (c[d:2d], z[d:2d]); the first window has no previous half;
 *   entry = rope(RMSNorm(e) * norm) at position t+1-r, visible from the query at t on.
 *   HCA layers attend every entry.  CSA layers attend the top-k entries of the lightning
 *   indexer: its own compressor (width c_I) gives index keys K_w; the query at t scores
 *     I(t,w) = Σ_h (weights_proj x)_h H_I^-1/2 · ReLU(q^I_h · K_w) c_I^-1/2,
 *     q^I = rope(wq_b^I qr) (no norm), keeping min(index_topk, #entries) entries.
 * MoE: s_e = sqrt(softplus(gate_e · x)); experts: tid2eid[token] (hash layers) or the top-k of
 *   s + bias; weights s_e / (Σ s + 1e-20) * routed_scaling_factor; expert and shared expert:
 *   w2 (silu(min(w1 x, L)) * clamp(w3 x, -L, L)), L = swiglu_limit.
 *
 * Cache: sliding-window layers are WINDOW layers (K only, the key is the value); CSA layers
 * are COMPRESSED (entry = K, index key = V), HCA layers HEAVY (entry = K); their window ring
 * (the last W keys, slot t mod W) and compressor state live in the sequence's state block
 * (kvx_kv_seq_state, offsets from kv/layout).  Tokens of one sequence are processed in order
 * within each layer, so prefill and decode run the same steps and give the same result.
 * Weights are converted to f32 at load; the forward pass is scalar, one token after another.
 *
 * Checkpoint formats (told apart by the names present): transformers' save_pretrained writes
 * "model.layers.N.attn.wq_a.weight", "model.embed_tokens.weight", "model.norm.weight",
 * "model.hc_head.hc_fn" and "head.weight"; the released checkpoints (DeepSeek-V4-Flash/-Pro)
 * the same names without "model." ("layers.N.*") and "embed.weight", "norm.weight",
 * "hc_head_fn" / "hc_head_base" / "hc_head_scale", "head.weight", with FP8 E4M3 weights plus
 * F8_E8M0 "<stem>.scale" block scales and FP4 E2M1 routed experts (I8, two a byte) plus
 * per-32-input F8_E8M0 scales, dequantized at load (kvx_model_bind_mat). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "kv/codec.h"
#include "model/hf_config.h"
#include "model/model.h"
#include "model/steps.h"
#include "util/err.h"
#include "util/json.h"

enum v4_kind { V4_SWA = 0, V4_CSA, V4_HCA };

struct v4_comp {               /* one compressor's weights */
    const float *wkv, *wgate;  /* [cw, D], cw = width (CSA: 2 x entry width) */
    const float *ape;          /* [ratio, cw] */
    const float *norm;         /* [entry width] */
};

struct v4_layer {
    enum v4_kind kind;
    bool hash;
    const float *attn_norm, *ffn_norm;
    const float *hc_attn_fn, *hc_attn_base, *hc_attn_scale;
    const float *hc_ffn_fn, *hc_ffn_base, *hc_ffn_scale;
    const float *wq_a, *q_norm, *wq_b, *wkv, *kv_norm, *wo_a, *wo_b, *sinks;
    struct v4_comp comp, icomp;            /* compressor; CSA: the indexer's compressor */
    const float *iwq_b, *iweights;         /* CSA indexer: [HI cI, q_lora], [HI, D] */
    const float *gate, *gate_bias;         /* [E, D], [E] (learned layers) */
    int32_t *tid2eid;                      /* [vocab, top_k] (hash layers), owned */
    const float *const *experts;           /* E x {w1, w2, w3}, owned array */
    const float *sh_w1, *sh_w2, *sh_w3;    /* shared expert (n_shared > 0) */
};

struct v4 {
    int32_t D, L, H, hd, R, q_lora, og, olr, W, n_hc, sk_iters;
    int32_t E, top_k, moe_ff, n_shared, HI, cI, topk, ratio_csa, ratio_hca;
    float eps, hc_eps, routed_scale, limit, comp_af;
    float *inv_main, *inv_comp;            /* R/2 inverse frequencies each */
    enum v4_kind *kinds;                   /* per layer */
    bool *hash;                            /* per layer */
    struct v4_layer *layers;
    const float *hc_head_fn, *hc_head_base, *hc_head_scale;
    const char *pre;                       /* layer-name prefix: "model." or "" (released) */
};

static void v4_free(void *p)
{
    struct v4 *a = p;
    if (!a)
        return;
    if (a->layers)
        for (int i = 0; i < a->L; i++) {
            free(a->layers[i].tid2eid);
            free((void *)a->layers[i].experts);
        }
    free(a->layers);
    free(a->inv_main);
    free(a->inv_comp);
    free(a->kinds);
    free(a->hash);
    free(a);
}

/* ------------------------------------------------------------------------------------------ */
/* Hyper-parameters */

static void default_inv(float *inv, int32_t R, double theta)
{
    for (int32_t i = 0; i < R / 2; i++)
        inv[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)R);
}

/* Both rope tables: nested rope_parameters {main, compress} (what transformers saves), or the
 * released legacy keys (rope_theta, compress_rope_theta, rope_scaling / rope_parameters with
 * the YaRN fields, which go to the compress rope only). */
static enum kvx_status v4_rope(const struct kvx_jv *c, struct v4 *a, struct kvx_err *err)
{
    const struct kvx_jv *rp = kvx_jv_get(c, "rope_parameters");
    if (!rp || rp->type == KVX_JV_NULL)
        rp = kvx_jv_get(c, "rope_scaling");
    if (rp && rp->type == KVX_JV_NULL)
        rp = NULL;
    if (rp && rp->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: rope_parameters is not an object");
    const struct kvx_jv *main = rp ? kvx_jv_get(rp, "main") : NULL;
    const struct kvx_jv *comp = rp ? kvx_jv_get(rp, "compress") : NULL;
    double theta_main, theta_comp, factor = 1, orig = 0, bf, bs, af;
    const char *type = "default";
    enum kvx_status st;
    if ((st = kvx_hf_pos_float(c, "rope_theta", 10000.0, &theta_main, err)) ||
        (st = kvx_hf_pos_float(c, "compress_rope_theta", 160000.0, &theta_comp, err)))
        return st;
    if (main && main->type == KVX_JV_OBJECT && comp && comp->type == KVX_JV_OBJECT) {
        const char *mt = "default";
        if ((st = kvx_hf_pos_float(main, "rope_theta", theta_main, &theta_main, err)) ||
            (st = kvx_hf_str(main, "rope_type", mt, &mt, err)))
            return st;
        if (strcmp(mt, "default") != 0)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: rope_parameters.main "
                               "rope_type '%.40s' is not supported (default only)", mt);
        if ((st = kvx_hf_pos_float(comp, "rope_theta", theta_comp, &theta_comp, err)))
            return st;
        rp = comp;
    }
    if (rp && ((st = kvx_hf_str(rp, "type", type, &type, err)) ||
               (st = kvx_hf_str(rp, "rope_type", type, &type, err))))
        return st;
    const int32_t R = a->R;
    default_inv(a->inv_main, R, theta_main);
    a->comp_af = 1.0f;
    if (strcmp(type, "default") == 0) {
        default_inv(a->inv_comp, R, theta_comp);
        return KVX_OK;
    }
    if (strcmp(type, "yarn") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: compress rope type '%.40s' "
                           "is not supported (default, yarn)", type);
    if ((st = kvx_hf_pos_float(rp, "factor", 1.0, &factor, err)) ||
        (st = kvx_hf_pos_float(rp, "original_max_position_embeddings", 0, &orig, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_fast", 32, &bf, err)) ||
        (st = kvx_hf_pos_float(rp, "beta_slow", 1, &bs, err)) ||
        (st = kvx_hf_pos_float(rp, "attention_factor", 1.0, &af, err)))
        return st;
    if (orig <= 0)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: yarn rope without "
                           "original_max_position_embeddings");
    kvx_rope_yarn_inv_freq(a->inv_comp, R, theta_comp, factor, orig, bf, bs, true);
    a->comp_af = (float)af;   /* transformers forces 1.0 for V4 */
    return KVX_OK;
}

/* The attention kind of every layer: layer_types, or the legacy compress_ratios (0, 4, 128;
 * longer than the layer count: the rest are MTP layers), or transformers' default. */
static enum kvx_status v4_layer_kinds(const struct kvx_jv *c, struct v4 *a, struct kvx_err *err)
{
    const struct kvx_jv *lt = kvx_jv_get(c, "layer_types");
    const struct kvx_jv *cr = kvx_jv_get(c, "compress_ratios");
    if (lt && lt->type != KVX_JV_NULL) {
        if (lt->type != KVX_JV_ARRAY || (int64_t)lt->len < a->L)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer_types is not a list of "
                               "%d layer types", a->L);
        for (int i = 0; i < a->L; i++) {
            const struct kvx_jv *v = &lt->items[i];
            const char *s = v->type == KVX_JV_STRING ? v->str : "";
            if (strcmp(s, "sliding_attention") == 0)
                a->kinds[i] = V4_SWA;
            else if (strcmp(s, "compressed_sparse_attention") == 0)
                a->kinds[i] = V4_CSA;
            else if (strcmp(s, "heavily_compressed_attention") == 0)
                a->kinds[i] = V4_HCA;
            else
                return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: layer_types[%d] '%.60s' "
                                   "is not sliding_attention, compressed_sparse_attention or "
                                   "heavily_compressed_attention", i, s);
        }
        return KVX_OK;
    }
    if (cr && cr->type != KVX_JV_NULL) {
        if (cr->type != KVX_JV_ARRAY || (int64_t)cr->len < a->L)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: compress_ratios is not a list "
                               "of at least %d integers", a->L);
        for (int i = 0; i < a->L; i++) {
            const struct kvx_jv *v = &cr->items[i];
            const int64_t r = v->type == KVX_JV_NUMBER && v->is_int ? v->i : -1;
            if (r == 0)
                a->kinds[i] = V4_SWA;
            else if (r == 4)
                a->kinds[i] = V4_CSA;
            else if (r == 128)
                a->kinds[i] = V4_HCA;
            else
                return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: compress_ratios[%d] is "
                                   "not 0, 4 or 128", i);
        }
        return KVX_OK;
    }
    for (int i = 0; i < a->L; i++)   /* 2 x HCA, then HCA, CSA, HCA, ... */
        a->kinds[i] = i < 2 ? V4_HCA : (i - 2) % 2 ? V4_CSA : V4_HCA;
    return KVX_OK;
}

static enum kvx_status v4_mlp_kinds(const struct kvx_jv *c, struct v4 *a, struct kvx_err *err)
{
    const struct kvx_jv *mt = kvx_jv_get(c, "mlp_layer_types");
    if (mt && mt->type != KVX_JV_NULL) {
        if (mt->type != KVX_JV_ARRAY || (int64_t)mt->len < a->L)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: mlp_layer_types is not a list "
                               "of %d entries", a->L);
        for (int i = 0; i < a->L; i++) {
            const struct kvx_jv *v = &mt->items[i];
            const char *s = v->type == KVX_JV_STRING ? v->str : "";
            if (strcmp(s, "hash_moe") != 0 && strcmp(s, "moe") != 0)
                return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: mlp_layer_types[%d] "
                                   "'%.60s' is not hash_moe or moe", i, s);
            a->hash[i] = strcmp(s, "hash_moe") == 0;
        }
        return KVX_OK;
    }
    int64_t n_hash;
    enum kvx_status st = kvx_hf_int(c, "num_hash_layers", false, 3, 0, INT32_MAX, &n_hash, err);
    for (int i = 0; i < a->L && st == KVX_OK; i++)
        a->hash[i] = i < n_hash;
    return st;
}

static enum kvx_status v4_hparams(struct kvx_model *m, struct kvx_err *err)
{
    if (m->format != KVX_MODEL_SAFETENSORS)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "deepseek_v4 is read from safetensors + "
                           "config.json only");
    const struct kvx_jv *c = m->config;
    struct kvx_hparams *hp = &m->hp;
    struct v4 *a = calloc(1, sizeof *a);
    if (!a)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    m->arch_data = a;
    m->free_arch_data = v4_free;
    int64_t vocab, D, L, H, kvh, hd, ql, og, olr, W, nhc, it, E, k, ff, nsh, HI, cI, topk, ctx;
    int64_t rcsa = 4, rhca = 128, rope = -1;
    double eps, hce, rs, lim, prf = 0;
    const char *score = "sqrtsoftplus", *act = "silu";
    bool bias = false;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 16, &D, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &L, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &H, err)) ||
        (st = kvx_hf_int(c, "num_key_value_heads", false, 1, 1, 1, &kvh, err)) ||
        (st = kvx_hf_int(c, "head_dim", true, 0, 2, 4096, &hd, err)) ||
        (st = kvx_hf_int(c, "q_lora_rank", true, 0, 1, 1 << 16, &ql, err)) ||
        (st = kvx_hf_int(c, "o_groups", true, 0, 1, 4096, &og, err)) ||
        (st = kvx_hf_int(c, "o_lora_rank", true, 0, 1, 1 << 16, &olr, err)) ||
        (st = kvx_hf_int(c, "sliding_window", true, 0, 1, 1 << 20, &W, err)) ||
        (st = kvx_hf_int(c, "hc_mult", false, 4, 1, 16, &nhc, err)) ||
        (st = kvx_hf_int(c, "hc_sinkhorn_iters", false, 20, 1, 1000, &it, err)) ||
        (st = kvx_hf_pos_float(c, "hc_eps", 1e-6, &hce, err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-6, &eps, err)) ||
        (st = kvx_hf_int(c, "n_routed_experts", true, 0, 1, 4096, &E, err)) ||
        (st = kvx_hf_int(c, "num_experts_per_tok", true, 0, 1, 64, &k, err)) ||
        (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 20, &ff, err)) ||
        (st = kvx_hf_int(c, "n_shared_experts", false, 1, 0, 64, &nsh, err)) ||
        (st = kvx_hf_pos_float(c, "routed_scaling_factor", 1.5, &rs, err)) ||
        (st = kvx_hf_pos_float(c, "swiglu_limit", 10.0, &lim, err)) ||
        (st = kvx_hf_str(c, "scoring_func", score, &score, err)) ||
        (st = kvx_hf_str(c, "hidden_act", act, &act, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", false, &bias, err)) ||
        (st = kvx_hf_int(c, "index_n_heads", false, 64, 1, 4096, &HI, err)) ||
        (st = kvx_hf_int(c, "index_head_dim", false, 128, 2, 4096, &cI, err)) ||
        (st = kvx_hf_int(c, "index_topk", false, 512, 1, 1 << 16, &topk, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 1048576, 1, (int64_t)1 << 30, &ctx,
                         err)) ||
        (st = kvx_hf_int(c, "compress_rate_csa", false, rcsa, 2, 65536, &rcsa, err)) ||
        (st = kvx_hf_int(c, "compress_rate_hca", false, rhca, 2, 65536, &rhca, err)) ||
        (st = kvx_hf_int(c, "qk_rope_head_dim", false, -1, 2, 4096, &rope, err)) ||
        (st = kvx_hf_pos_float(c, "partial_rotary_factor", 0, &prf, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", false, &hp->tie_embd, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    const struct kvx_jv *rates = kvx_jv_get(c, "compress_rates");
    if (rates && rates->type == KVX_JV_OBJECT &&
        ((st = kvx_hf_int(rates, "compressed_sparse_attention", false, rcsa, 2, 65536, &rcsa,
                          err)) ||
         (st = kvx_hf_int(rates, "heavily_compressed_attention", false, rhca, 2, 65536, &rhca,
                          err))))
        return st;
    if (strcmp(score, "sqrtsoftplus") != 0 || strcmp(act, "silu") != 0 || bias)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: scoring_func '%.40s', "
                           "hidden_act '%.40s' or attention_bias true is not supported for "
                           "deepseek_v4 (sqrtsoftplus, silu, no bias)", score, act);
    /* rope dims: partial_rotary_factor (transformers), else the legacy qk_rope_head_dim, else
     * the class default 64/512 */
    const int64_t R = prf > 0 ? (int64_t)((double)hd * prf) : rope > 0 ? rope : hd * 64 / 512;
    if (R < 2 || R % 2 || R > hd || cI < R)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: %lld rope dims (partial_rotary_"
                           "factor / qk_rope_head_dim) do not fit head_dim %lld and "
                           "index_head_dim %lld, or are odd", (long long)R, (long long)hd,
                           (long long)cI);
    if ((H * hd) % og)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: o_groups %lld does not divide "
                           "num_attention_heads x head_dim", (long long)og);
    if (k > E)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: num_experts_per_tok %lld > "
                           "n_routed_experts %lld", (long long)k, (long long)E);
    *a = (struct v4){
        .D = (int32_t)D, .L = (int32_t)L, .H = (int32_t)H, .hd = (int32_t)hd, .R = (int32_t)R,
        .q_lora = (int32_t)ql, .og = (int32_t)og, .olr = (int32_t)olr, .W = (int32_t)W,
        .n_hc = (int32_t)nhc, .sk_iters = (int32_t)it, .E = (int32_t)E, .top_k = (int32_t)k,
        .moe_ff = (int32_t)ff, .n_shared = (int32_t)nsh, .HI = (int32_t)HI, .cI = (int32_t)cI,
        .topk = (int32_t)topk, .ratio_csa = (int32_t)rcsa, .ratio_hca = (int32_t)rhca,
        .eps = (float)eps, .hc_eps = (float)hce, .routed_scale = (float)rs, .limit = (float)lim,
    };
    a->inv_main = malloc((size_t)R / 2 * sizeof(float));
    a->inv_comp = malloc((size_t)R / 2 * sizeof(float));
    a->kinds = calloc((size_t)L, sizeof *a->kinds);
    a->hash = calloc((size_t)L, sizeof *a->hash);
    if (!a->inv_main || !a->inv_comp || !a->kinds || !a->hash)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    if ((st = v4_layer_kinds(c, a, err)) || (st = v4_mlp_kinds(c, a, err)) ||
        (st = v4_rope(c, a, err)))
        return st;
    hp->n_vocab = (int32_t)vocab;
    hp->n_embd = (int32_t)D;
    hp->n_layer = (int32_t)L;
    hp->n_head = (int32_t)H;
    hp->n_head_kv = 1;
    hp->head_dim = (int32_t)hd;
    hp->n_ff = (int32_t)ff;
    hp->n_ctx_train = ctx;
    hp->norm_eps = (float)eps;
    hp->n_rot = (int32_t)R;
    hp->rope_kind = KVX_ROPE_NORMAL;
    hp->rope_theta = 0;   /* unused: the rope tables are in arch_data */
    hp->rope_freq_scale = 1;
    return KVX_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Weights (the names transformers' save_pretrained writes for deepseek_v4) */

/* A [rows, cols] tensor (any float type kvx reads) as f32 owned by the model. */
static enum kvx_status bind_f32(struct kvx_model *m, const char *name, int64_t cols,
                                int64_t rows, const float **out, struct kvx_err *err)
{
    struct kvx_mat w;
    enum kvx_status st = kvx_model_bind_mat(m, name, cols, rows, true, &w, err);
    if (st != KVX_OK)
        return st;
    float *f = malloc((size_t)(cols * rows) * sizeof *f);
    if (!f)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)w.type, KVX_ISA_SCALAR);
    for (int64_t r = 0; r < rows; r++)
        k->to_float(w.data + (size_t)r * w.row_bytes, f + r * cols, cols);
    if ((st = kvx_model_own(m, f, err)) != KVX_OK)
        return st;
    *out = f;
    return KVX_OK;
}

/* tid2eid: [vocab, top_k] integers (I64 or I32), every id an expert. */
static enum kvx_status bind_tid2eid(struct kvx_model *m, const char *name, struct v4_layer *Ly,
                                    struct kvx_err *err)
{
    const struct v4 *a = m->arch_data;
    const int64_t V = m->hp.n_vocab, K = a->top_k;
    const struct kvx_st_tensor *t = kvx_st_find(m->st, name);
    if (!t)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name);
    if ((t->dtype != KVX_ST_I64 && t->dtype != KVX_ST_I32) || t->n_dims != 2 ||
        t->shape[0] != V || t->shape[1] != K)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': expected I64 or I32 [%lld, %lld]",
                           name, (long long)V, (long long)K);
    Ly->tid2eid = malloc((size_t)(V * K) * sizeof(int32_t));
    if (!Ly->tid2eid)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < V * K; i++) {
        int64_t e;
        if (t->dtype == KVX_ST_I64) {
            memcpy(&e, t->data + (size_t)i * 8, 8);
        } else {
            int32_t e32;
            memcpy(&e32, t->data + (size_t)i * 4, 4);
            e = e32;
        }
        if (e < 0 || e >= a->E)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s': expert id %lld out of range "
                               "[0, %d)", name, (long long)e, a->E);
        Ly->tid2eid[i] = (int32_t)e;
    }
    return KVX_OK;
}

static enum kvx_status bind_comp(struct kvx_model *m, const char *pre, int il, int64_t cw,
                                 int64_t ew, int64_t ratio, struct v4_comp *c,
                                 struct kvx_err *err)
{
    const struct v4 *a = m->arch_data;
    const int64_t D = m->hp.n_embd;
    char n[192];
    enum kvx_status st;
#define CN(s) (snprintf(n, sizeof n, "%slayers.%d.%s.%s", a->pre, il, pre, s), n)
    if ((st = bind_f32(m, CN("wkv.weight"), D, cw, &c->wkv, err)) ||
        (st = bind_f32(m, CN("wgate.weight"), D, cw, &c->wgate, err)) ||
        (st = bind_f32(m, CN("ape"), cw, ratio, &c->ape, err)) ||
        (st = kvx_model_bind_vec(m, CN("norm.weight"), ew, true, &c->norm, err)))
        return st;
#undef CN
    return KVX_OK;
}

static enum kvx_status v4_layer_load(struct kvx_model *m, int il, struct kvx_err *err)
{
    struct v4 *a = m->arch_data;
    struct v4_layer *Ly = &a->layers[il];
    const int64_t D = a->D, H = a->H, hd = a->hd, n = a->n_hc, nm = (2 + n) * n;
    char nb[192];
    enum kvx_status st;
    Ly->kind = a->kinds[il];
    Ly->hash = a->hash[il];
#define NAME(s) (snprintf(nb, sizeof nb, "%slayers.%d.%s", a->pre, il, s), nb)
    if ((st = kvx_model_bind_vec(m, NAME("attn_norm.weight"), D, true, &Ly->attn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("ffn_norm.weight"), D, true, &Ly->ffn_norm, err)) ||
        (st = bind_f32(m, NAME("hc_attn_fn"), n * D, nm, &Ly->hc_attn_fn, err)) ||
        (st = kvx_model_bind_vec(m, NAME("hc_attn_base"), nm, true, &Ly->hc_attn_base, err)) ||
        (st = kvx_model_bind_vec(m, NAME("hc_attn_scale"), 3, true, &Ly->hc_attn_scale, err)) ||
        (st = bind_f32(m, NAME("hc_ffn_fn"), n * D, nm, &Ly->hc_ffn_fn, err)) ||
        (st = kvx_model_bind_vec(m, NAME("hc_ffn_base"), nm, true, &Ly->hc_ffn_base, err)) ||
        (st = kvx_model_bind_vec(m, NAME("hc_ffn_scale"), 3, true, &Ly->hc_ffn_scale, err)) ||
        (st = bind_f32(m, NAME("attn.wq_a.weight"), D, a->q_lora, &Ly->wq_a, err)) ||
        (st = kvx_model_bind_vec(m, NAME("attn.q_norm.weight"), a->q_lora, true, &Ly->q_norm,
                                 err)) ||
        (st = bind_f32(m, NAME("attn.wq_b.weight"), a->q_lora, H * hd, &Ly->wq_b, err)) ||
        (st = bind_f32(m, NAME("attn.wkv.weight"), D, hd, &Ly->wkv, err)) ||
        (st = kvx_model_bind_vec(m, NAME("attn.norm.weight"), hd, true, &Ly->kv_norm, err)) ||
        (st = bind_f32(m, NAME("attn.wo_a.weight"), H * hd / a->og, (int64_t)a->og * a->olr,
                       &Ly->wo_a, err)) ||
        (st = bind_f32(m, NAME("attn.wo_b.weight"), (int64_t)a->og * a->olr, D, &Ly->wo_b,
                       err)) ||
        (st = kvx_model_bind_vec(m, NAME("attn.attn_sink"), H, true, &Ly->sinks, err)))
        return st;
    if (Ly->kind == V4_HCA &&
        (st = bind_comp(m, "attn.compressor", il, hd, hd, a->ratio_hca, &Ly->comp, err)))
        return st;
    if (Ly->kind == V4_CSA &&
        ((st = bind_comp(m, "attn.compressor", il, 2 * hd, hd, a->ratio_csa, &Ly->comp, err)) ||
         (st = bind_comp(m, "attn.indexer.compressor", il, 2 * (int64_t)a->cI, a->cI,
                         a->ratio_csa, &Ly->icomp, err)) ||
         (st = bind_f32(m, NAME("attn.indexer.wq_b.weight"), a->q_lora, (int64_t)a->HI * a->cI,
                        &Ly->iwq_b, err)) ||
         (st = bind_f32(m, NAME("attn.indexer.weights_proj.weight"), D, a->HI, &Ly->iweights,
                        err))))
        return st;
    /* MoE */
    if ((st = bind_f32(m, NAME("ffn.gate.weight"), D, a->E, &Ly->gate, err)))
        return st;
    if (Ly->hash)
        st = bind_tid2eid(m, NAME("ffn.gate.tid2eid"), Ly, err);
    else
        st = kvx_model_bind_vec(m, NAME("ffn.gate.bias"), a->E, true, &Ly->gate_bias, err);
    if (st)
        return st;
    const float **ex = calloc((size_t)(3 * a->E), sizeof *ex);
    if (!ex)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    Ly->experts = ex;
    const int64_t F = a->moe_ff;
    for (int e = 0; e < a->E; e++) {
        char en[96];
        snprintf(en, sizeof en, "ffn.experts.%d.w1.weight", e);
        if ((st = bind_f32(m, NAME(en), D, F, &ex[3 * e], err)))
            return st;
        snprintf(en, sizeof en, "ffn.experts.%d.w2.weight", e);
        if ((st = bind_f32(m, NAME(en), F, D, &ex[3 * e + 1], err)))
            return st;
        snprintf(en, sizeof en, "ffn.experts.%d.w3.weight", e);
        if ((st = bind_f32(m, NAME(en), D, F, &ex[3 * e + 2], err)))
            return st;
    }
    if (a->n_shared &&
        ((st = bind_f32(m, NAME("ffn.shared_experts.w1.weight"), D, F, &Ly->sh_w1, err)) ||
         (st = bind_f32(m, NAME("ffn.shared_experts.w2.weight"), F, D, &Ly->sh_w2, err)) ||
         (st = bind_f32(m, NAME("ffn.shared_experts.w3.weight"), D, F, &Ly->sh_w3, err))))
        return st;
#undef NAME
    return KVX_OK;
}

static enum kvx_status v4_load(struct kvx_model *m, struct kvx_err *err)
{
    struct v4 *a = m->arch_data;
    const int64_t D = a->D, V = m->hp.n_vocab, n = a->n_hc;
    enum kvx_status st;
    /* the released format: "embed.weight" and no "model.embed_tokens.weight" */
    const bool rel = m->st && kvx_st_find(m->st, "embed.weight") &&
                     !kvx_st_find(m->st, "model.embed_tokens.weight");
    a->pre = rel ? "" : "model.";
    if ((st = kvx_model_bind_mat(m, rel ? "embed.weight" : "model.embed_tokens.weight", D, V,
                                 true, &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, rel ? "norm.weight" : "model.norm.weight", D, true,
                                 &m->output_norm, err)) ||
        (st = bind_f32(m, rel ? "hc_head_fn" : "model.hc_head.hc_fn", n * D, n, &a->hc_head_fn,
                       err)) ||
        (st = kvx_model_bind_vec(m, rel ? "hc_head_base" : "model.hc_head.hc_base", n, true,
                                 &a->hc_head_base, err)) ||
        (st = kvx_model_bind_vec(m, rel ? "hc_head_scale" : "model.hc_head.hc_scale", 1, true,
                                 &a->hc_head_scale, err)))
        return st;
    if (m->hp.tie_embd)
        m->output = m->tok_embd;
    else if ((st = kvx_model_bind_mat(m, "head.weight", D, V, true, &m->output, err)))
        return st;
    a->layers = calloc((size_t)a->L, sizeof *a->layers);
    if (!a->layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int il = 0; il < a->L; il++)
        if ((st = v4_layer_load(m, il, err)) != KVX_OK)
            return st;
    return KVX_OK;
}

/* Sliding-window layers: WINDOW (K only: the key is the value); CSA: COMPRESSED (entry, index
 * key); HCA: HEAVY (entry).  The compressed kinds keep the window ring in their state. */
static void v4_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                             enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const struct v4 *a = m->arch_data;
    for (int il = 0; il < a->L; il++) {
        struct kvx_layer_cache c = {.n_kv_heads = 1, .k_dim = a->hd, .window = a->W,
                                    .shared_from = -1, .k_codec = k_codec, .v_codec = v_codec};
        if (a->kinds[il] == V4_SWA) {
            c.kind = KVX_KV_KIND_WINDOW;
        } else if (a->kinds[il] == V4_CSA) {
            c.kind = KVX_KV_KIND_COMPRESSED;
            c.v_dim = a->cI;
            c.ratio = a->ratio_csa;
        } else {
            c.kind = KVX_KV_KIND_HEAVY;
            c.ratio = a->ratio_hca;
        }
        layout->layers[il] = c;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Forward */

/* Scratch (kvx_forward_scratch.extra): the streams of every token, then one token's work. */
struct v4_scratch {
    float *X;                  /* B x n x D */
    float *Xn, *u, *xa, *y;    /* n x D, D, D, D */
    float *mix, *comb;         /* (2+n) n, n x n */
    float *qr, *q, *kv, *o, *og, *key;     /* q_lora, H d, d, H d, og x olr, d */
    float *c, *z, *ic, *iz, *ent, *ikey;   /* 2d, 2d, 2cI, 2cI, d, cI */
    float *qi, *wi;            /* HI cI, HI */
    float *pool_m, *pool_s;    /* per-channel pooling: max, sum (2d) */
    float *mx, *sum;           /* H: online softmax */
    float *rl, *hg, *hu;       /* E router, moe_ff, moe_ff */
    float *top_s;              /* topk */
    int32_t *top_i;            /* topk */
};

static int64_t v4_scratch_layout(const struct kvx_model *m, int64_t B, float *base,
                                 struct v4_scratch *sc)
{
    const struct v4 *a = m->arch_data;
    const int64_t D = a->D, n = a->n_hc, d = a->hd, H = a->H;
    const int64_t sizes[] = {
        B * n * D, n * D, D, D, D, (2 + n) * n, n * n, a->q_lora, H * d, d, H * d,
        (int64_t)a->og * a->olr, d, 2 * d, 2 * d, 2 * (int64_t)a->cI, 2 * (int64_t)a->cI, d,
        a->cI, (int64_t)a->HI * a->cI, a->HI, 2 * d, 2 * d, H, H, a->E, a->moe_ff, a->moe_ff,
        a->topk, a->topk,
    };
    float **slots[] = {
        &sc->X, &sc->Xn, &sc->u, &sc->xa, &sc->y, &sc->mix, &sc->comb, &sc->qr, &sc->q, &sc->kv,
        &sc->o, &sc->og, &sc->key, &sc->c, &sc->z, &sc->ic, &sc->iz, &sc->ent, &sc->ikey,
        &sc->qi, &sc->wi, &sc->pool_m, &sc->pool_s, &sc->mx, &sc->sum, &sc->rl, &sc->hg,
        &sc->hu, &sc->top_s, (float **)&sc->top_i,
    };
    return kvx_step_carve(base, sizes, slots, sizeof sizes / sizeof sizes[0]);
}

static int64_t v4_scratch_floats(const struct kvx_model *m, int64_t n_batch)
{
    struct v4_scratch sc;
    return v4_scratch_layout(m, n_batch, NULL, &sc);
}

/* y[o] = Σ_i W[o][i] x[i]  (W: [n_out, n_in] rows) */
static void matvec(const float *W, const float *x, int64_t n_in, int64_t n_out, float *y)
{
    for (int64_t o = 0; o < n_out; o++) {
        const float *w = W + o * n_in;
        float acc = 0;
        for (int64_t i = 0; i < n_in; i++)
            acc += w[i] * x[i];
        y[o] = acc;
    }
}

/* x ← x / sqrt(mean(x²) + eps) (then * w when w) */
static void rms(float *x, int64_t n, const float *w, float eps)
{
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    const float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] = w ? w[i] * (x[i] * r) : x[i] * r;
}

/* Interleaved RoPE on the last R dims of x (d wide) at angle sign·pos·inv_i, cos/sin × af:
 * (x_2i, x_2i+1) ← (x_2i cos − x_2i+1 sin, x_2i+1 cos + x_2i sin). */
static void rope_last(float *x, int32_t d, int32_t R, const float *inv, int64_t pos, float sign,
                      float af)
{
    float *r = x + d - R;
    for (int32_t i = 0; i < R / 2; i++) {
        const float ang = (float)pos * inv[i];
        const float cs = cosf(ang) * af, sn = sign * sinf(ang) * af;
        const float x0 = r[2 * i], x1 = r[2 * i + 1];
        r[2 * i] = x0 * cs - x1 * sn;
        r[2 * i + 1] = x1 * cs + x0 * sn;
    }
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* mHC weights of one token (see the file header): pre into mix[0..n), post into
 * mix[n..2n), the Sinkhorn-projected C into comb; collapsed input Σ pre_i X_i into u. */
static void hc_pre(const struct v4 *a, const float *X, const float *fn, const float *base,
                   const float *scale, struct v4_scratch *sc)
{
    const int n = a->n_hc;
    const int64_t D = a->D;
    memcpy(sc->Xn, X, (size_t)(n * D) * sizeof(float));
    rms(sc->Xn, n * D, NULL, a->eps);
    float *mx = sc->mix, *C = sc->comb;
    matvec(fn, sc->Xn, n * D, (int64_t)(2 + n) * n, mx);
    for (int i = 0; i < n; i++) {
        mx[i] = sigmoidf(mx[i] * scale[0] + base[i]) + a->hc_eps;
        mx[n + i] = 2.0f * sigmoidf(mx[n + i] * scale[1] + base[n + i]);
    }
    for (int i = 0; i < n; i++) {   /* row softmax + eps */
        float *row = C + i * n, mval = -INFINITY, s = 0;
        for (int k = 0; k < n; k++) {
            row[k] = mx[2 * n + i * n + k] * scale[2] + base[2 * n + i * n + k];
            mval = row[k] > mval ? row[k] : mval;
        }
        for (int k = 0; k < n; k++)
            s += (row[k] = expf(row[k] - mval));
        for (int k = 0; k < n; k++)
            row[k] = row[k] / s + a->hc_eps;
    }
    for (int iter = 0; iter < a->sk_iters; iter++) {
        if (iter > 0)
            for (int i = 0; i < n; i++) {   /* rows */
                float s = 0;
                for (int k = 0; k < n; k++)
                    s += C[i * n + k];
                for (int k = 0; k < n; k++)
                    C[i * n + k] /= s + a->hc_eps;
            }
        for (int k = 0; k < n; k++) {   /* columns */
            float s = 0;
            for (int i = 0; i < n; i++)
                s += C[i * n + k];
            for (int i = 0; i < n; i++)
                C[i * n + k] /= s + a->hc_eps;
        }
    }
    for (int64_t j = 0; j < D; j++) {
        float acc = 0;
        for (int i = 0; i < n; i++)
            acc += mx[i] * X[i * D + j];
        sc->u[j] = acc;
    }
}

/* X'_k = post_k y + Σ_i C_ik X_i */
static void hc_post(const struct v4 *a, float *X, struct v4_scratch *sc)
{
    const int n = a->n_hc;
    const int64_t D = a->D;
    memcpy(sc->Xn, X, (size_t)(n * D) * sizeof(float));
    for (int k = 0; k < n; k++)
        for (int64_t j = 0; j < D; j++) {
            float acc = sc->mix[n + k] * sc->y[j];
            for (int i = 0; i < n; i++)
                acc += sc->comb[i * n + k] * sc->Xn[i * D + j];
            X[k * D + j] = acc;
        }
}

/* One compressor step for the token at `pos` (state machine of A.9).  st: pending rows
 * (ratio-1) x [c | z] (cw each), then (ov) the overlap, ratio x [Ca | Za] (ew each).  Returns
 * true when the window closed; the normed, rotated entry is then in `out` (ew). */
static bool comp_step(const struct v4 *a, const struct v4_comp *w, bool ov, int32_t ratio,
                      int32_t ew, const float *x, int64_t pos, float *st, float *c, float *z,
                      float *pm, float *ps, float *out)
{
    const int32_t cw = ov ? 2 * ew : ew;
    const int32_t j = (int32_t)(pos % ratio);
    matvec(w->wkv, x, a->D, cw, c);
    matvec(w->wgate, x, a->D, cw, z);
    for (int32_t i = 0; i < cw; i++)
        z[i] += w->ape[(int64_t)j * cw + i];
    float *pend = st, *over = st + (size_t)(ratio - 1) * 2 * cw;
    if (j < ratio - 1) {
        memcpy(pend + (size_t)j * 2 * cw, c, (size_t)cw * sizeof(float));
        memcpy(pend + (size_t)j * 2 * cw + cw, z, (size_t)cw * sizeof(float));
        return false;
    }
    /* softmax over the slots, per channel: slot values/gates of this window's rows (second
     * halves when ov) and, when ov and a previous window exists, its saved first halves */
    const bool prev = ov && pos + 1 > ratio;
    const int32_t off = ov ? ew : 0;
    for (int32_t ch = 0; ch < ew; ch++) {
        float mval = -INFINITY;
        for (int32_t r = 0; r < ratio; r++) {
            const float g = r < ratio - 1 ? pend[(size_t)r * 2 * cw + cw + off + ch] : z[off + ch];
            mval = g > mval ? g : mval;
            if (prev)
                mval = over[(size_t)r * 2 * ew + ew + ch] > mval ? over[(size_t)r * 2 * ew + ew + ch]
                                                                 : mval;
        }
        float s = 0, acc = 0;
        for (int32_t r = 0; r < ratio; r++) {
            const float g = r < ratio - 1 ? pend[(size_t)r * 2 * cw + cw + off + ch] : z[off + ch];
            const float v = r < ratio - 1 ? pend[(size_t)r * 2 * cw + off + ch] : c[off + ch];
            const float e = expf(g - mval);
            s += e;
            acc += e * v;
            if (prev) {
                const float e2 = expf(over[(size_t)r * 2 * ew + ew + ch] - mval);
                s += e2;
                acc += e2 * over[(size_t)r * 2 * ew + ch];
            }
        }
        pm[ch] = mval;
        ps[ch] = s;
        out[ch] = acc / s;
    }
    if (ov)   /* this window's first halves become the next entry's previous window */
        for (int32_t r = 0; r < ratio; r++) {
            const float *cv = r < ratio - 1 ? pend + (size_t)r * 2 * cw : c;
            const float *zv = r < ratio - 1 ? pend + (size_t)r * 2 * cw + cw : z;
            memcpy(over + (size_t)r * 2 * ew, cv, (size_t)ew * sizeof(float));
            memcpy(over + (size_t)r * 2 * ew + ew, zv, (size_t)ew * sizeof(float));
        }
    rms(out, ew, w->norm, a->eps);
    rope_last(out, ew, a->R, a->inv_comp, pos + 1 - ratio, 1.0f, a->comp_af);
    return true;
}

/* Online softmax accumulation of one key k (d) into every head: logit = q_h·k / sqrt(d). */
static void attend_key(const struct v4 *a, struct v4_scratch *sc, const float *k)
{
    const int32_t d = a->hd;
    const float scale = 1.0f / sqrtf((float)d);
    for (int32_t h = 0; h < a->H; h++) {
        const float *q = sc->q + (int64_t)h * d;
        float dot = 0;
        for (int32_t i = 0; i < d; i++)
            dot += q[i] * k[i];
        const float z = dot * scale;
        float *o = sc->o + (int64_t)h * d;
        if (z > sc->mx[h]) {
            const float f = expf(sc->mx[h] - z);
            sc->sum[h] *= f;
            for (int32_t i = 0; i < d; i++)
                o[i] *= f;
            sc->mx[h] = z;
        }
        const float p = expf(z - sc->mx[h]);
        sc->sum[h] += p;
        for (int32_t i = 0; i < d; i++)
            o[i] += p * k[i];
    }
}

/* Top-k of the indexer for the query at `pos` over the n_ent entries (larger score first,
 * lower index on ties): indices into sc->top_i, returns how many. */
static int32_t indexer_topk(const struct v4 *a, const struct v4_layer *Ly,
                            const struct kvx_kv_view *vw, int64_t pos, int64_t n_ent,
                            struct v4_scratch *sc)
{
    const int32_t HI = a->HI, cI = a->cI;
    matvec(Ly->iwq_b, sc->qr, a->q_lora, (int64_t)HI * cI, sc->qi);
    for (int32_t h = 0; h < HI; h++)
        rope_last(sc->qi + (int64_t)h * cI, cI, a->R, a->inv_comp, pos, 1.0f, a->comp_af);
    matvec(Ly->iweights, sc->xa, a->D, HI, sc->wi);
    const float ws = 1.0f / sqrtf((float)HI), ss = 1.0f / sqrtf((float)cI);
    const int32_t k = (int32_t)(n_ent < a->topk ? n_ent : a->topk);
    int32_t nk = 0;
    for (int64_t e = 0; e < n_ent; e++) {
        kvx_kv_view_get_v(vw, 0, e, sc->ikey);
        float score = 0;
        for (int32_t h = 0; h < HI; h++) {
            const float *q = sc->qi + (int64_t)h * cI;
            float dot = 0;
            for (int32_t i = 0; i < cI; i++)
                dot += q[i] * sc->ikey[i];
            score += (dot > 0 ? dot * ss : 0.0f) * (sc->wi[h] * ws);
        }
        /* insert into the sorted list (descending; an equal score keeps the earlier entry) */
        int32_t at = nk;
        while (at > 0 && sc->top_s[at - 1] < score)
            at--;
        if (at >= k)
            continue;
        const int32_t last = nk < k ? nk : k - 1;
        for (int32_t i = last; i > at; i--) {
            sc->top_s[i] = sc->top_s[i - 1];
            sc->top_i[i] = sc->top_i[i - 1];
        }
        sc->top_s[at] = score;
        sc->top_i[at] = (int32_t)e;
        if (nk < k)
            nk++;
    }
    return nk;
}

/* The attention sub-block of layer il for one token (input sc->u; output sc->y). */
static void attention(const struct kvx_model *m, int il, struct kvx_kv_seq *seq, int64_t pos,
                      struct v4_scratch *sc)
{
    const struct v4 *a = m->arch_data;
    const struct v4_layer *Ly = &a->layers[il];
    const struct kvx_kv_layout *l = kvx_kv_pool_layout(kvx_kv_seq_pool(seq));
    const int32_t d = a->hd, H = a->H;
    const float *inv = Ly->kind == V4_SWA ? a->inv_main : a->inv_comp;
    const float af = Ly->kind == V4_SWA ? 1.0f : a->comp_af;
    memcpy(sc->xa, sc->u, (size_t)a->D * sizeof(float));
    rms(sc->xa, a->D, Ly->attn_norm, a->eps);
    matvec(Ly->wq_a, sc->xa, a->D, a->q_lora, sc->qr);
    rms(sc->qr, a->q_lora, Ly->q_norm, a->eps);
    matvec(Ly->wq_b, sc->qr, a->q_lora, (int64_t)H * d, sc->q);
    for (int32_t h = 0; h < H; h++) {
        rms(sc->q + (int64_t)h * d, d, NULL, a->eps);
        rope_last(sc->q + (int64_t)h * d, d, a->R, inv, pos, 1.0f, af);
    }
    matvec(Ly->wkv, sc->xa, a->D, d, sc->kv);
    rms(sc->kv, d, Ly->kv_norm, a->eps);
    rope_last(sc->kv, d, a->R, inv, pos, 1.0f, af);
    for (int32_t h = 0; h < H; h++) {
        sc->mx[h] = -INFINITY;
        sc->sum[h] = 0;
    }
    memset(sc->o, 0, (size_t)H * d * sizeof(float));
    const int64_t first = pos - a->W + 1 > 0 ? pos - a->W + 1 : 0;
    struct kvx_kv_view vw;
    if (Ly->kind == V4_SWA) {   /* the pool's window layer */
        kvx_kv_seq_write(seq, il, pos, sc->kv, sc->kv);
        kvx_kv_seq_view(seq, il, &vw);
        for (int64_t s = first; s <= pos; s++)
            if (kvx_kv_view_get_k(&vw, 0, s, sc->key))
                attend_key(a, sc, sc->key);
    } else {
        /* window ring (K codec, slot pos mod W) and compressor state in the state block */
        uint8_t *stb = kvx_kv_seq_state(seq, il);
        uint8_t *ring = stb + kvx_kv_layer_window_state_offset(l, il);
        float *cst = (float *)(void *)(stb + kvx_kv_layer_compressor_state_offset(l, il));
        const struct kvx_layer_cache *lc = &l->layers[il];
        const int32_t wr = (int32_t)((lc->window + KVX_KV_TILE - 1) / KVX_KV_TILE * KVX_KV_TILE);
        const struct kvx_kv_fmt rf = kvx_kv_fmt_make(lc->k_codec, wr, d, lc->group, lc->residual);
        const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(lc->k_codec, KVX_ISA_SCALAR);
        ops->k_put(ring, NULL, &rf, 0, (int32_t)(pos % a->W), sc->kv);
        const struct kvx_kv_block rb = {ring, NULL, 0};
        for (int64_t s = first; s <= pos; s++) {
            ops->k_get(&rb, &rf, (int32_t)(s % a->W), sc->key);
            attend_key(a, sc, sc->key);
        }
        const bool csa = Ly->kind == V4_CSA;
        const int32_t ratio = csa ? a->ratio_csa : a->ratio_hca;
        const bool closed = comp_step(a, &Ly->comp, csa, ratio, d, sc->xa, pos, cst, sc->c,
                                      sc->z, sc->pool_m, sc->pool_s, sc->ent);
        if (csa) {
            float *ist = cst + (size_t)(ratio - 1) * 4 * d + (size_t)ratio * 2 * d;
            comp_step(a, &Ly->icomp, true, ratio, a->cI, sc->xa, pos, ist, sc->ic, sc->iz,
                      sc->pool_m, sc->pool_s, sc->ikey);
        }
        if (closed)
            kvx_kv_seq_write(seq, il, pos / ratio, sc->ent, csa ? sc->ikey : sc->ent);
        const int64_t n_ent = (pos + 1) / ratio;
        kvx_kv_seq_view(seq, il, &vw);
        if (csa) {
            const int32_t nk = indexer_topk(a, Ly, &vw, pos, n_ent, sc);
            for (int32_t i = 0; i < nk; i++)
                if (kvx_kv_view_get_k(&vw, 0, sc->top_i[i], sc->key))
                    attend_key(a, sc, sc->key);
        } else {
            for (int64_t e = 0; e < n_ent; e++)
                if (kvx_kv_view_get_k(&vw, 0, e, sc->key))
                    attend_key(a, sc, sc->key);
        }
    }
    /* sink: one more logit in the denominator only; then de-rotate each head's output */
    for (int32_t h = 0; h < H; h++) {
        float *o = sc->o + (int64_t)h * d;
        float mval = sc->mx[h] > Ly->sinks[h] ? sc->mx[h] : Ly->sinks[h];
        const float f = expf(sc->mx[h] - mval);
        const float den = sc->sum[h] * f + expf(Ly->sinks[h] - mval);
        for (int32_t i = 0; i < d; i++)
            o[i] = o[i] * f / den;
        rope_last(o, d, a->R, inv, pos, -1.0f, af);
    }
    /* grouped output projection: group g (H d / og values) through wo_a rows g·olr.. */
    const int64_t gw = (int64_t)H * d / a->og;
    for (int32_t g = 0; g < a->og; g++)
        matvec(Ly->wo_a + (int64_t)g * a->olr * gw, sc->o + g * gw, gw, a->olr,
               sc->og + (int64_t)g * a->olr);
    matvec(Ly->wo_b, sc->og, (int64_t)a->og * a->olr, a->D, sc->y);
}

/* w2 (silu(min(w1 x, L)) * clamp(w3 x, -L, L)) added to y with weight wt */
static void expert(const struct v4 *a, const float *w1, const float *w2, const float *w3,
                   float wt, struct v4_scratch *sc)
{
    const int64_t F = a->moe_ff, D = a->D;
    const float L = a->limit;
    matvec(w1, sc->xa, D, F, sc->hg);
    matvec(w3, sc->xa, D, F, sc->hu);
    for (int64_t i = 0; i < F; i++) {
        const float g = sc->hg[i] < L ? sc->hg[i] : L;
        const float u = sc->hu[i] < -L ? -L : sc->hu[i] > L ? L : sc->hu[i];
        sc->hg[i] = g / (1.0f + expf(-g)) * u;
    }
    for (int64_t j = 0; j < D; j++) {
        const float *w = w2 + j * F;
        float acc = 0;
        for (int64_t i = 0; i < F; i++)
            acc += w[i] * sc->hg[i];
        sc->y[j] += wt * acc;
    }
}

/* The MoE sub-block for one token (input sc->u; output sc->y). */
static void moe(const struct kvx_model *m, int il, int32_t token, struct v4_scratch *sc)
{
    const struct v4 *a = m->arch_data;
    const struct v4_layer *Ly = &a->layers[il];
    const int32_t E = a->E, K = a->top_k;
    memcpy(sc->xa, sc->u, (size_t)a->D * sizeof(float));
    rms(sc->xa, a->D, Ly->ffn_norm, a->eps);
    matvec(Ly->gate, sc->xa, a->D, E, sc->rl);
    for (int32_t e = 0; e < E; e++) {   /* sqrt(softplus(z)); softplus = z beyond 20 */
        const float z = sc->rl[e];
        sc->rl[e] = sqrtf(z > 20.0f ? z : log1pf(expf(z)));
    }
    int32_t sel[64];
    if (Ly->hash) {
        for (int32_t k = 0; k < K; k++)
            sel[k] = Ly->tid2eid[(int64_t)token * K + k];
    } else {
        for (int32_t k = 0; k < K; k++) {
            int32_t best = -1;
            for (int32_t e = 0; e < E; e++) {
                bool taken = false;
                for (int32_t j = 0; j < k; j++)
                    taken = taken || sel[j] == e;
                if (!taken && (best < 0 || sc->rl[e] + Ly->gate_bias[e] >
                                               sc->rl[best] + Ly->gate_bias[best]))
                    best = e;
            }
            sel[k] = best;
        }
    }
    float sum = 0;
    for (int32_t k = 0; k < K; k++)
        sum += sc->rl[sel[k]];
    memset(sc->y, 0, (size_t)a->D * sizeof(float));
    for (int32_t k = 0; k < K; k++) {
        const float *const *w = Ly->experts + 3 * sel[k];
        expert(a, w[0], w[1], w[2], sc->rl[sel[k]] / (sum + 1e-20f) * a->routed_scale, sc);
    }
    if (a->n_shared)
        expert(a, Ly->sh_w1, Ly->sh_w2, Ly->sh_w3, 1.0f, sc);
}

static void v4_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    const struct v4 *a = m->arch_data;
    const int64_t D = a->D, n = a->n_hc, B = f->n_tok;
    struct v4_scratch sc;
    v4_scratch_layout(m, B, f->s->extra, &sc);
    const struct kvx_quant_kernels *qk = kvx_quant_kernels((enum kvx_dtype)m->tok_embd.type,
                                                           KVX_ISA_SCALAR);
    for (int64_t t = 0; t < B; t++) {
        float *X = sc.X + t * n * D;
        qk->to_float(m->tok_embd.data + (size_t)f->tokens[t] * m->tok_embd.row_bytes, X, D);
        for (int64_t i = 1; i < n; i++)
            memcpy(X + i * D, X, (size_t)D * sizeof(float));
    }
    for (int il = 0; il < a->L; il++) {
        const struct v4_layer *Ly = &a->layers[il];
        for (int64_t t = 0; t < B; t++) {   /* batch order: each sequence's tokens in order */
            float *X = sc.X + t * n * D;
            hc_pre(a, X, Ly->hc_attn_fn, Ly->hc_attn_base, Ly->hc_attn_scale, &sc);
            attention(m, il, f->seq[t], f->pos[t], &sc);
            hc_post(a, X, &sc);
            hc_pre(a, X, Ly->hc_ffn_fn, Ly->hc_ffn_base, Ly->hc_ffn_scale, &sc);
            moe(m, il, f->tokens[t], &sc);
            hc_post(a, X, &sc);
        }
    }
    const struct kvx_quant_kernels *ok = kvx_quant_kernels((enum kvx_dtype)m->output.type,
                                                           KVX_ISA_SCALAR);
    int64_t row = 0;
    for (int64_t t = 0; t < B; t++) {
        if (!f->want_logits[t])
            continue;
        const float *X = sc.X + t * n * D;
        memcpy(sc.Xn, X, (size_t)(n * D) * sizeof(float));
        rms(sc.Xn, n * D, NULL, a->eps);
        matvec(a->hc_head_fn, sc.Xn, n * D, n, sc.mix);
        for (int64_t j = 0; j < D; j++) {
            float acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += (sigmoidf(sc.mix[i] * a->hc_head_scale[0] + a->hc_head_base[i]) +
                        a->hc_eps) * X[i * D + j];
            sc.u[j] = acc;
        }
        rms(sc.u, D, m->output_norm, a->eps);
        float *lg = f->logits + row * m->hp.n_vocab;
        for (int32_t v = 0; v < m->hp.n_vocab; v++) {
            ok->to_float(m->output.data + (size_t)v * m->output.row_bytes, sc.y, D);
            float acc = 0;
            for (int64_t j = 0; j < D; j++)
                acc += sc.y[j] * sc.u[j];
            lg[v] = acc;
        }
        row++;
    }
}

/* Parameters as v4_load binds them (the hash layers' tid2eid tables are token -> expert
 * maps, not parameters; the multi-token-prediction layer is not counted).  A decoded token
 * reads every layer's attention, compressors, mHC and router weights, its top_k routed
 * experts and the shared ones, the output head and one embedding row. */
static enum kvx_status v4_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                      struct kvx_err *err)
{
    (void)err;
    const struct v4 *a = m->arch_data;
    const double D = a->D, H = a->H, hd = a->hd, n = a->n_hc, nm = (2 + n) * n;
    const double ql = a->q_lora, cI = a->cI, V = m->hp.n_vocab;
    const double expert = 3 * D * a->moe_ff;
    double total = V * D * (m->hp.tie_embd ? 1 : 2) + D + n * D * n + n + 1;
    double active = V * D + D + n * D * n + n + 1;
    for (int il = 0; il < a->L; il++) {
        double common = 2 * D + 2 * (n * D * nm + nm + 3);                 /* norms, mHC */
        common += D * ql + ql + ql * H * hd + D * hd + hd;                   /* q, kv */
        common += H * hd * a->olr + (double)a->og * a->olr * D + H;          /* o, sinks */
        if (a->kinds[il] == V4_HCA)
            common += 2 * D * hd + hd * a->ratio_hca + hd;
        if (a->kinds[il] == V4_CSA)
            common += 4 * D * hd + 2 * hd * a->ratio_csa + hd                /* compressor */
                      + 4 * D * cI + 2 * cI * a->ratio_csa + cI              /* indexer's */
                      + ql * a->HI * cI + D * a->HI;                         /* indexer */
        common += D * a->E + (a->hash[il] ? 0 : a->E) + (a->n_shared ? expert : 0);
        total += common + a->E * expert;
        active += common + a->top_k * expert;
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

const struct kvx_arch kvx_arch_deepseek_v4 = {
    .name = "deepseek_v4",
    .hparams = v4_hparams,
    .load_weights = v4_load,
    .declare_cache = v4_declare_cache,
    .forward = v4_forward,
    .scratch_floats = v4_scratch_floats,
    .param_count = v4_param_count,
};
