/* model/llama: the Llama family (Llama 2/3, SmolLM2, Mistral, Qwen2 with QKV biases, Qwen3
 * with per-head q/k RMSNorm), from GGUF or from safetensors + config.json: hyper-parameters,
 * weights, cache declaration and the forward pass.
 *
 * RoPE layout: Hugging Face's q_proj/k_proj rows are in half-split order (pairs (i, i+d/2),
 * "NeoX"), and so are llama.cpp's Qwen GGUFs; llama.cpp's converter permutes Llama's rows into
 * interleaved pairs (2i, 2i+1).  The weights are used as stored and the rotation follows the
 * source: KVX_ROPE_NORMAL for GGUF llama, KVX_ROPE_NEOX for everything else.
 *
 * Per layer (x is the residual stream, one row per token):
 *   h = RMSNorm(x) * attn_norm
 *   q = h Wq (+bq), k = h Wk (+bk), v = h Wv (+bv)      q: n_head heads, k/v: n_head_kv heads
 *   [q, k per head: RMSNorm * q_norm / k_norm]           (Qwen3)
 *   q, k = RoPE(q, k, pos)                               normal pairs (llama) or NeoX (qwen)
 *   cache[layer][pos] = (k, v)      a FULL layer, or a WINDOW layer of the last sliding_window
 *                                   tokens (Mistral, Qwen2/3 sliding layers: hf_window)
 *   a = softmax(q K^T / sqrt(head_dim)) V  over the visible positions <= pos, head h reading KV head
 *       h / (n_head / n_head_kv)                          (GQA)
 *   x = x + a Wo (+bo)
 *   h = RMSNorm(x) * ffn_norm
 *   x = x + (silu(h Wgate) * (h Wup)) Wdown
 * logits = (RMSNorm(x) * output_norm) Wout, Wout = token_embd when the file has no output. */
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

static enum kvx_status get_u32_key(const struct kvx_model *m, const char *suffix, bool required,
                                   uint32_t def, int32_t *out, struct kvx_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    uint32_t v = def;
    enum kvx_status st = kvx_gguf_get_u32(m->gguf, key, &v, err);
    if (st == KVX_ERR_NOT_FOUND && !required)
        st = KVX_OK;
    else if (st == KVX_ERR_NOT_FOUND)
        return kvx_err_set(err, KVX_ERR_FORMAT, "key '%s' is missing", key);
    if (st != KVX_OK)
        return st;
    if (v > (uint32_t)INT32_MAX)
        return kvx_err_set(err, KVX_ERR_FORMAT, "key '%s' = %u is too large", key, v);
    *out = (int32_t)v;
    return KVX_OK;
}

static enum kvx_status get_f32_key(const struct kvx_model *m, const char *suffix, float def,
                                   float *out, struct kvx_err *err)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch_name, suffix);
    *out = def;
    enum kvx_status st = kvx_gguf_get_f32(m->gguf, key, out, err);
    return st == KVX_ERR_NOT_FOUND ? KVX_OK : st;
}

/* Heads, KV heads and head size must describe a GQA layout. */
static enum kvx_status check_gqa(const struct kvx_hparams *hp, const char *keys,
                                 struct kvx_err *err)
{
    if (hp->n_head_kv < 1 || hp->n_head % hp->n_head_kv != 0 || hp->head_dim < 2 ||
        hp->head_dim % 2 != 0 || hp->head_dim > 4096)
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s = %d, %d, %d do not describe a GQA layout",
                           keys, hp->n_head, hp->n_head_kv, hp->head_dim);
    return KVX_OK;
}

static enum kvx_status load_hparams_gguf(struct kvx_model *m, struct kvx_err *err)
{
    struct kvx_hparams *hp = &m->hp;
    enum kvx_status st;
    int32_t ctx = 0;
    if ((st = get_u32_key(m, "block_count", true, 0, &hp->n_layer, err)) ||
        (st = get_u32_key(m, "embedding_length", true, 0, &hp->n_embd, err)) ||
        (st = get_u32_key(m, "feed_forward_length", true, 0, &hp->n_ff, err)) ||
        (st = get_u32_key(m, "attention.head_count", true, 0, &hp->n_head, err)) ||
        (st = get_u32_key(m, "context_length", false, 4096, &ctx, err)))
        return st;
    hp->n_ctx_train = ctx;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_ff < 1 || ctx < 1)
        return kvx_err_set(err, KVX_ERR_FORMAT, "hyper-parameters out of range: block_count %d, "
                           "embedding_length %d, head_count %d, feed_forward_length %d, "
                           "context_length %d", hp->n_layer, hp->n_embd, hp->n_head, hp->n_ff,
                           ctx);
    if ((st = get_u32_key(m, "attention.head_count_kv", false, (uint32_t)hp->n_head,
                          &hp->n_head_kv, err)) ||
        (st = get_u32_key(m, "attention.key_length", false,
                          (uint32_t)(hp->n_embd / hp->n_head), &hp->head_dim, err)) ||
        (st = check_gqa(hp, "attention.head_count, head_count_kv, key_length", err)))
        return st;
    if ((st = get_u32_key(m, "rope.dimension_count", false, (uint32_t)hp->head_dim, &hp->n_rot,
                          err)) ||
        (st = get_f32_key(m, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps, err)) ||
        (st = get_f32_key(m, "rope.freq_base", 10000.0f, &hp->rope_theta, err)))
        return st;
    if (hp->n_rot < 2 || hp->n_rot > hp->head_dim || hp->n_rot % 2 || hp->n_rot > 1024)
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s.rope.dimension_count = %d is not an even "
                           "number <= key_length %d", m->arch_name, hp->n_rot, hp->head_dim);
    float factor = 0.0f;
    if ((st = get_f32_key(m, "rope.scaling.factor", 0.0f, &factor, err)))
        return st;
    struct kvx_gguf_str stype;
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch_name);
    hp->rope_freq_scale = 1.0f;
    if (kvx_gguf_get_str(m->gguf, key, &stype, NULL) == KVX_OK && !kvx_gguf_str_eq(stype, "none")) {
        if (!kvx_gguf_str_eq(stype, "linear"))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "key '%s' = '%.*s': only linear RoPE "
                               "scaling is supported", key, (int)stype.len, stype.ptr);
        if (factor > 0.0f)
            hp->rope_freq_scale = 1.0f / factor;
    }
    /* llama.cpp's converter permutes Llama's Q/K rows into interleaved pairs; Qwen's it
     * leaves in Hugging Face's half-split order */
    hp->rope_kind = strcmp(m->arch_name, "llama") == 0 ? KVX_ROPE_NORMAL : KVX_ROPE_NEOX;
    return KVX_OK;
}

/* Sliding-window layers of config.json, as transformers applies them: Mistral attends every
 * layer over the last `sliding_window` tokens (when not null); Qwen2/Qwen3 only with
 * use_sliding_window true, on the layers layer_types marks "sliding_attention" (default: layers
 * i >= max_window_layers, default 28); Llama has no window.  Such layers are WINDOW layers of
 * the cache (a query at p sees keys p - w + 1 .. p).  The model's arch_data is then an owned
 * array of n_layer windows (0: a full layer); without any window it stays NULL. */
static enum kvx_status hf_window(struct kvx_model *m, struct kvx_err *err)
{
    const bool mistral = strcmp(m->arch_name, "mistral") == 0;
    const bool qwen = strcmp(m->arch_name, "qwen2") == 0 || strcmp(m->arch_name, "qwen3") == 0;
    const int32_t n_layer = m->hp.n_layer;
    const struct kvx_jv *lt = kvx_jv_get(m->config, "layer_types");
    if (lt && lt->type != KVX_JV_ARRAY && lt->type != KVX_JV_NULL)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'layer_types' is not a list");
    if (lt && lt->type == KVX_JV_NULL)
        lt = NULL;
    if (lt && lt->len != (size_t)n_layer)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'layer_types' has %zu entries, "
                           "num_hidden_layers is %d", lt->len, n_layer);
    for (size_t i = 0; lt && i < lt->len; i++) {
        const struct kvx_jv *v = &lt->items[i];
        const bool full = v->type == KVX_JV_STRING && strcmp(v->str, "full_attention") == 0;
        const bool sliding = v->type == KVX_JV_STRING && strcmp(v->str, "sliding_attention") == 0;
        if (!full && !(sliding && qwen))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: layer_types[%zu] is not "
                               "%s", i, qwen ? "\"full_attention\" or \"sliding_attention\""
                                         : "\"full_attention\" (mistral: sliding_window "
                                           "applies to every layer)");
    }
    bool use_sw = mistral;
    int64_t w = 0, first = 0;
    enum kvx_status st;
    if (qwen && (st = kvx_hf_bool(m->config, "use_sliding_window", false, &use_sw, err)))
        return st;
    if (!use_sw)
        return KVX_OK;
    const struct kvx_jv *wj = kvx_jv_get(m->config, "sliding_window");
    if (wj && wj->type == KVX_JV_NULL)   /* null: no window (absent: transformers' 4096) */
        return KVX_OK;
    if ((st = kvx_hf_int(m->config, "sliding_window", false, 4096, 0, (int64_t)1 << 40, &w,
                         err)) ||
        (qwen && (st = kvx_hf_int(m->config, "max_window_layers", false, 28, 0, 1 << 20, &first,
                                  err))))
        return st;
    if (w == 0)   /* 0: no window */
        return KVX_OK;
    int64_t *win = calloc((size_t)n_layer, sizeof *win);
    if (!win || (st = kvx_model_own(m, win, err)) != KVX_OK)
        return win ? st : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int32_t il = 0; il < n_layer; il++) {
        const bool sliding = lt ? lt->items[il].str[0] == 's' : mistral || il >= first;
        win[il] = sliding ? w : 0;
    }
    m->arch_data = win;
    return KVX_OK;
}

static enum kvx_status load_hparams_hf(struct kvx_model *m, struct kvx_err *err)
{
    struct kvx_hparams *hp = &m->hp;
    const struct kvx_jv *c = m->config;
    int64_t embd, layers, heads, ff, vocab, kv, hd, ctx;
    double eps;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "hidden_size", true, 0, 1, 1 << 20, &embd, err)) ||
        (st = kvx_hf_int(c, "num_hidden_layers", true, 0, 1, 4096, &layers, err)) ||
        (st = kvx_hf_int(c, "num_attention_heads", true, 0, 1, 4096, &heads, err)) ||
        (st = kvx_hf_int(c, "intermediate_size", true, 0, 1, 1 << 24, &ff, err)) ||
        (st = kvx_hf_int(c, "vocab_size", true, 0, 1, INT32_MAX, &vocab, err)) ||
        (st = kvx_hf_int(c, "num_key_value_heads", false, heads, 1, heads, &kv, err)) ||
        (st = kvx_hf_int(c, "max_position_embeddings", false, 4096, 1, (int64_t)1 << 30, &ctx,
                         err)) ||
        (st = kvx_hf_pos_float(c, "rms_norm_eps", 1e-6, &eps, err)))
        return st;
    if (!kvx_jv_get(c, "head_dim") || kvx_jv_get(c, "head_dim")->type == KVX_JV_NULL) {
        if (embd % heads)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'head_dim' is missing and "
                               "hidden_size %lld is not a multiple of num_attention_heads %lld",
                               (long long)embd, (long long)heads);
    }
    if ((st = kvx_hf_int(c, "head_dim", false, embd / heads, 2, 4096, &hd, err)))
        return st;
    *hp = (struct kvx_hparams){
        .n_vocab = (int32_t)vocab, .n_embd = (int32_t)embd, .n_layer = (int32_t)layers,
        .n_head = (int32_t)heads, .n_head_kv = (int32_t)kv, .head_dim = (int32_t)hd,
        .n_ff = (int32_t)ff, .n_ctx_train = ctx, .norm_eps = (float)eps,
        .rope_kind = KVX_ROPE_NEOX,   /* Hugging Face's q/k rows are in half-split order */
    };
    if ((st = check_gqa(hp, "config.json: num_attention_heads, num_key_value_heads, head_dim",
                        err)))
        return st;
    const char *act;
    bool mlp_bias;
    if ((st = kvx_hf_str(c, "hidden_act", "silu", &act, err)) ||
        (st = kvx_hf_bool(c, "mlp_bias", false, &mlp_bias, err)) ||
        (st = kvx_hf_bool(c, "attention_bias", strcmp(m->arch_name, "qwen2") == 0,
                          &hp->attn_bias, err)) ||
        (st = kvx_hf_bool(c, "tie_word_embeddings", false, &hp->tie_embd, err)) ||
        (st = kvx_hf_token_id(c, "bos_token_id", &hp->bos_id, err)) ||
        (st = kvx_hf_token_id(c, "eos_token_id", &hp->eos_id, err)))
        return st;
    if (strcmp(act, "silu") != 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: hidden_act '%.40s' is not "
                           "supported (silu)", act);
    if (mlp_bias)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: mlp_bias true is not "
                           "supported");
    struct kvx_hf_rope rope = {.theta = 10000.0f, .freq_scale = 1.0f, .n_rot = hp->head_dim};
    st = kvx_hf_rope(c, hp->head_dim, &rope, err);
    /* RoPE does not shape the cache: a config-only model (planned, not run) may use a RoPE
     * type the forward pass does not implement (Llama 3.1's "llama3") */
    if (st == KVX_ERR_UNSUPPORTED && m->config_only)
        st = KVX_OK;
    if (st)
        return st;
    hp->rope_theta = rope.theta;
    hp->rope_freq_scale = rope.freq_scale;
    hp->n_rot = rope.n_rot;
    return hf_window(m, err);
}

/* A tensor the file has although config.json says the model has none. */
static enum kvx_status check_absent(const struct kvx_model *m, const char *name, const char *key,
                                    struct kvx_err *err)
{
    struct kvx_wtensor t;
    if (kvx_model_find_tensor(m, name, &t))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is in the file but config.json "
                           "says %s", name, key);
    return KVX_OK;
}

static enum kvx_status load_layer(struct kvx_model *m, int il, struct kvx_err *err)
{
    const struct kvx_hparams *hp = &m->hp;
    struct kvx_llama_layer *L = &m->layers[il];
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim, nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    const bool hf = m->format == KVX_MODEL_SAFETENSORS;
    /* GGUF: every optional tensor is taken when present.  config.json: biases exactly when
     * attention_bias (Qwen2: always, without an output bias), q/k norms exactly for Qwen3. */
    const bool qwen2 = strcmp(m->arch_name, "qwen2") == 0;
    const bool bias = hf && (hp->attn_bias || qwen2), obias = hf && hp->attn_bias && !qwen2;
    const bool qk_norm = hf && strcmp(m->arch_name, "qwen3") == 0;
    char n[160];
    enum kvx_status st;
#define NAME(g, h) kvx_model_wname(m, n, sizeof n, "blk.%d." g, "model.layers.%d." h, il)
    if ((st = kvx_model_bind_vec(m, NAME("attn_norm.weight", "input_layernorm.weight"), hp->n_embd, true, &L->attn_norm, err)) ||
        (st = kvx_model_bind_vec(m, NAME("ffn_norm.weight", "post_attention_layernorm.weight"), hp->n_embd, true, &L->ffn_norm, err)) ||
        (st = kvx_model_bind_mat(m, NAME("attn_q.weight", "self_attn.q_proj.weight"), hp->n_embd, nq, true, &L->wq, err)) ||
        (st = kvx_model_bind_mat(m, NAME("attn_k.weight", "self_attn.k_proj.weight"), hp->n_embd, nkv, true, &L->wk, err)) ||
        (st = kvx_model_bind_mat(m, NAME("attn_v.weight", "self_attn.v_proj.weight"), hp->n_embd, nkv, true, &L->wv, err)) ||
        (st = kvx_model_bind_mat(m, NAME("attn_output.weight", "self_attn.o_proj.weight"), nq, hp->n_embd, true, &L->wo, err)) ||
        (st = kvx_model_bind_mat(m, NAME("ffn_gate.weight", "mlp.gate_proj.weight"), hp->n_embd, hp->n_ff, true, &L->w_gate, err)) ||
        (st = kvx_model_bind_mat(m, NAME("ffn_up.weight", "mlp.up_proj.weight"), hp->n_embd, hp->n_ff, true, &L->w_up, err)) ||
        (st = kvx_model_bind_mat(m, NAME("ffn_down.weight", "mlp.down_proj.weight"), hp->n_ff, hp->n_embd, true, &L->w_down, err)))
        return st;
    if (!hf || bias) {
        if ((st = kvx_model_bind_vec(m, NAME("attn_q.bias", "self_attn.q_proj.bias"), nq, bias, &L->bq, err)) ||
            (st = kvx_model_bind_vec(m, NAME("attn_k.bias", "self_attn.k_proj.bias"), nkv, bias, &L->bk, err)) ||
            (st = kvx_model_bind_vec(m, NAME("attn_v.bias", "self_attn.v_proj.bias"), nkv, bias, &L->bv, err)))
            return st;
    } else if ((st = check_absent(m, NAME("", "self_attn.q_proj.bias"), "attention_bias is false", err))) {
        return st;
    }
    if (!hf || obias) {
        if ((st = kvx_model_bind_vec(m, NAME("attn_output.bias", "self_attn.o_proj.bias"), hp->n_embd, obias, &L->bo, err)))
            return st;
    } else if ((st = check_absent(m, NAME("", "self_attn.o_proj.bias"), qwen2 ? "qwen2" : "attention_bias is false", err))) {
        return st;
    }
    if (!hf || qk_norm) {
        if ((st = kvx_model_bind_vec(m, NAME("attn_q_norm.weight", "self_attn.q_norm.weight"), hp->head_dim, qk_norm, &L->q_norm, err)) ||
            (st = kvx_model_bind_vec(m, NAME("attn_k_norm.weight", "self_attn.k_norm.weight"), hp->head_dim, qk_norm, &L->k_norm, err)))
            return st;
    } else if ((st = check_absent(m, NAME("", "self_attn.q_norm.weight"), "model_type is not qwen3", err))) {
        return st;
    }
#undef NAME
    if (hp->n_ff % 32 || hp->n_embd % 32)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "layer %d: widths %d/%d are not multiples "
                           "of 32", il, hp->n_embd, hp->n_ff);
    return KVX_OK;
}

static enum kvx_status llama_hparams(struct kvx_model *m, struct kvx_err *err)
{
    const bool hf = m->format == KVX_MODEL_SAFETENSORS;
    enum kvx_status st = hf ? load_hparams_hf(m, err) : load_hparams_gguf(m, err);
    if (st != KVX_OK || hf)
        return st;
    /* GGUF: the vocabulary is the embedding's row count */
    struct kvx_wtensor emb;
    if (!kvx_model_find_tensor(m, "token_embd.weight", &emb))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor 'token_embd.weight' is missing");
    if (emb.ne[1] < 1 || emb.ne[1] > INT32_MAX)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor 'token_embd.weight' has %lld rows",
                           (long long)emb.ne[1]);
    m->hp.n_vocab = (int32_t)emb.ne[1];
    return KVX_OK;
}

/* The dense matrices and the output head interleaved for one-token products (ops/repack.h);
 * a tied embedding reads its rows through the same layout. */
static enum kvx_status repack(struct kvx_model *m, struct kvx_err *err)
{
    const int per = 7, n = per * m->hp.n_layer + 1;
    struct kvx_mat **mats = malloc((size_t)n * sizeof *mats);
    if (!mats)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int il = 0; il < m->hp.n_layer; il++) {
        struct kvx_llama_layer *L = &m->layers[il];
        struct kvx_mat *l[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        memcpy(mats + per * il, l, sizeof l);
    }
    mats[n - 1] = &m->output;
    enum kvx_status st = kvx_model_repack(m, mats, n, err);
    free(mats);
    if (m->tok_embd.data == m->output.data)
        m->tok_embd.x16 = m->output.x16;
    return st;
}

static enum kvx_status llama_load_weights(struct kvx_model *m, struct kvx_err *err)
{
    const bool hf = m->format == KVX_MODEL_SAFETENSORS;
    enum kvx_status st;
    if (strcmp(m->arch_name, "qwen3_moe") == 0)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "config.json: model_type 'qwen3_moe': the "
                           "mixture-of-experts FFN is not implemented (its config can be "
                           "planned and inspected without weights)");
    struct kvx_hparams *hp = &m->hp;
    const char *emb_name = hf ? "model.embed_tokens.weight" : "token_embd.weight";
    const char *out_name = hf ? "lm_head.weight" : "output.weight";
    if ((st = kvx_model_bind_mat(m, emb_name, hp->n_embd, hp->n_vocab, true, &m->tok_embd, err)) ||
        (st = kvx_model_bind_vec(m, hf ? "model.norm.weight" : "output_norm.weight", hp->n_embd,
                                 true, &m->output_norm, err)))
        return st;
    /* config.json: a tied model uses the embedding even when the file also has lm_head */
    if ((!hf || !hp->tie_embd) &&
        (st = kvx_model_bind_mat(m, out_name, hp->n_embd, hp->n_vocab, false, &m->output, err)))
        return st;
    if (hf && !hp->tie_embd && !m->output.data)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor 'lm_head.weight' is missing and "
                           "config.json says tie_word_embeddings is false");
    if (!m->output.data)
        m->output = m->tok_embd; /* tied embeddings */
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = load_layer(m, il, err)) != KVX_OK)
            return st;
    return repack(m, err);
}

/* Qwen3-MoE FFN parameters of layer il (HF Qwen3MoeDecoderLayer: a sparse block when il is
 * not in mlp_only_layers and (il + 1) % decoder_sparse_step == 0, else the dense MLP):
 * router D x E and E experts of 3 D x moe_ff; a token reads the router and top_k experts. */
struct moe_cfg {
    int64_t n_expert, top_k, moe_ff, step;
    const struct kvx_jv *only;     /* mlp_only_layers (a list of layer indices) or NULL */
};

static enum kvx_status moe_cfg_read(const struct kvx_model *m, struct moe_cfg *q,
                                    struct kvx_err *err)
{
    const struct kvx_jv *c = m->config;
    enum kvx_status st;
    if ((st = kvx_hf_int(c, "num_experts", true, 0, 1, 1 << 16, &q->n_expert, err)) ||
        (st = kvx_hf_int(c, "num_experts_per_tok", true, 0, 1, q->n_expert, &q->top_k, err)) ||
        (st = kvx_hf_int(c, "moe_intermediate_size", true, 0, 1, 1 << 24, &q->moe_ff, err)) ||
        (st = kvx_hf_int(c, "decoder_sparse_step", false, 1, 1, 4096, &q->step, err)))
        return st;
    q->only = kvx_jv_get(c, "mlp_only_layers");
    if (q->only && q->only->type == KVX_JV_NULL)
        q->only = NULL;
    if (q->only && q->only->type != KVX_JV_ARRAY)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'mlp_only_layers' is not a "
                           "list");
    return KVX_OK;
}

static bool moe_layer(const struct moe_cfg *q, int il)
{
    for (size_t i = 0; q->only && i < q->only->len; i++)
        if (q->only->items[i].is_int && q->only->items[i].i == il)
            return false;
    return (il + 1) % q->step == 0;
}

/* Embeddings (+ lm_head unless tied), final norm; per layer q/k/v/o (+ biases, qk-norms as
 * load_layer binds them), two norms, and the SwiGLU MLP (or Qwen3-MoE's experts). */
static enum kvx_status llama_param_count(const struct kvx_model *m, struct kvx_param_count *out,
                                         struct kvx_err *err)
{
    const struct kvx_hparams *hp = &m->hp;
    const bool hf = m->format == KVX_MODEL_SAFETENSORS;
    const bool qwen2 = strcmp(m->arch_name, "qwen2") == 0;
    const bool moe = hf && strcmp(m->arch_name, "qwen3_moe") == 0;
    const bool qk_norm = hf && (moe || strcmp(m->arch_name, "qwen3") == 0);
    const double D = hp->n_embd, V = hp->n_vocab, F = hp->n_ff, hd = hp->head_dim;
    const double nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    struct kvx_wtensor t;
    const bool tied = hf ? hp->tie_embd : !kvx_model_find_tensor(m, "output.weight", &t);
    double attn = D * nq + 2 * D * nkv + nq * D + 2 * D;   /* q, k, v, o; the two norms */
    if (hf && (hp->attn_bias || qwen2))
        attn += nq + 2 * nkv;
    if (hf && hp->attn_bias && !qwen2)
        attn += D;
    if (qk_norm)
        attn += 2 * hd;
    struct moe_cfg q = {0};
    enum kvx_status st;
    if (moe && (st = moe_cfg_read(m, &q, err)) != KVX_OK)
        return st;
    /* a decoded token reads one embedding row but all of lm_head (or the tied table) */
    double total = V * D * (tied ? 1 : 2) + D, active = V * D + D;
    for (int il = 0; il < hp->n_layer; il++) {
        if (moe && moe_layer(&q, il)) {
            const double expert = 3 * D * (double)q.moe_ff;
            total += attn + D * (double)q.n_expert + (double)q.n_expert * expert;
            active += attn + D * (double)q.n_expert + (double)q.top_k * expert;
        } else {
            total += attn + 3 * D * F;
            active += attn + 3 * D * F;
        }
    }
    out->total = total;
    out->active = active;
    return KVX_OK;
}

static void llama_declare_cache(const struct kvx_model *m, struct kvx_kv_layout *layout,
                                enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec)
{
    const int64_t *win = m->arch_data;   /* sliding windows (hf_window), or NULL */
    for (int il = 0; il < m->hp.n_layer; il++)
        layout->layers[il] = (struct kvx_layer_cache){
            .kind = win && win[il] ? KVX_KV_KIND_WINDOW : KVX_KV_KIND_FULL,
            .window = win ? win[il] : 0,
            .n_kv_heads = m->hp.n_head_kv,
            .k_dim = m->hp.head_dim,
            .v_dim = m->hp.head_dim,
            .k_codec = k_codec,
            .v_codec = v_codec,
        };
}

/* ------------------------------------------------------------------------------------------ */
/* Forward: each step below is one parallel region over the engine's threads. */

struct step {
    const struct kvx_model *m;
    struct kvx_forward *f;
    const struct kvx_llama_layer *L;
    int il;
    const float *norm_w;       /* norm step: weight */
    const float *add;          /* norm step: residual to add to x first (or NULL) */
    int64_t add_ld;
    struct kvx_matmul_job job; /* matmul step */
    const float *mm_in;        /* quantize step: input rows */
    int64_t mm_in_ld;
};

/* Embedding rows and RoPE angles per token. */
static void step_embed(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    const struct kvx_model *m = s->m;
    struct kvx_forward *f = s->f;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++) {
        kvx_mat_row_to_float(&m->tok_embd, f->tokens[t], f->s->x + t * m->hp.n_embd);
        kvx_rope_cache(f->s->rope_cs + t * m->hp.n_rot, m->hp.n_rot, f->pos[t], m->hp.rope_theta,
                       m->hp.rope_freq_scale);
    }
}

/* x += add (optional); xn = RMSNorm(x) * w; xq = quantize(xn) for the next matmul. */
static void step_norm(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t d = s->m->hp.n_embd;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++) {
        float *x = f->s->x + t * d;
        if (s->add)
            kvx_add(x, s->add + t * s->add_ld, d);
        if (s->norm_w) {
            kvx_rmsnorm(f->s->xn + t * d, x, s->norm_w, d, s->m->hp.norm_eps);
            kvx_matmul_quantize_rows(s->job.w[0], f->isa, s->mm_in, s->mm_in_ld, t, t + 1,
                                     f->s->xq, f->s->xq_stride);
        }
    }
}

/* Quantize arbitrary input rows for the job (FFN down projection, attention output). */
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
    struct step *s = ctx;
    kvx_matmul_part(&s->job, ith, nth);
}

static void head_norm(float *x, const float *w, int n_heads, int hd, float eps)
{
    for (int h = 0; h < n_heads; h++)
        kvx_rmsnorm(x + h * hd, x + h * hd, w, hd, eps);
}

/* Biases, q/k norms, RoPE. */
static void step_qk_rope(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    const struct kvx_hparams *hp = &s->m->hp;
    const struct kvx_llama_layer *L = s->L;
    struct kvx_forward *f = s->f;
    const int hd = hp->head_dim, nq = hp->n_head * hd, nkv = hp->n_head_kv * hd;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++) {
        float *q = f->s->q + t * nq, *k = f->s->k + t * nkv, *v = f->s->v + t * nkv;
        if (L->bq) kvx_add(q, L->bq, nq);
        if (L->bk) kvx_add(k, L->bk, nkv);
        if (L->bv) kvx_add(v, L->bv, nkv);
        if (L->q_norm) head_norm(q, L->q_norm, hp->n_head, hd, hp->norm_eps);
        if (L->k_norm) head_norm(k, L->k_norm, hp->n_head_kv, hd, hp->norm_eps);
        const float *cs = f->s->rope_cs + t * hp->n_rot;
        for (int h = 0; h < hp->n_head; h++)
            kvx_rope_apply(q + h * hd, cs, hp->n_rot, hp->rope_kind);
        for (int h = 0; h < hp->n_head_kv; h++)
            kvx_rope_apply(k + h * hd, cs, hp->n_rot, hp->rope_kind);
    }
}

/* xn += bo per token (the attention output bias, when the model has one). */
static void step_out_bias(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t d = s->m->hp.n_embd;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++)
        kvx_add(f->s->xn + t * d, s->L->bo, d);
}

static void step_swiglu(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t nff = s->m->hp.n_ff;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++) {
        kvx_swiglu_isa(f->isa, f->s->gate + t * nff, f->s->gate + t * nff, f->s->up + t * nff, nff);
        kvx_matmul_quantize_rows(s->job.w[0], f->isa, s->mm_in, s->mm_in_ld, t, t + 1,
                                 f->s->xq, f->s->xq_stride);
    }
}

static void set_job(struct step *s, int n, const struct kvx_mat *const *w, float *const *y,
                    const int64_t *ldy)
{
    struct kvx_forward *f = s->f;
    memset(&s->job, 0, sizeof s->job);
    atomic_init(&s->job.next, 0);
    s->job.n_mats = n;
    s->job.n_tok = f->n_tok;
    s->job.isa = f->isa;
    for (int i = 0; i < n; i++) {
        s->job.w[i] = w[i];
        s->job.y[i] = y[i];
        s->job.ldy[i] = ldy[i];
        s->job.xq[i] = f->s->xq;
        s->job.xq_stride[i] = f->s->xq_stride;
    }
}

/* y[i] = mm_in W[i] for each matrix.  `prepare` computes the float input rows s->mm_in (norm,
 * residual, activation) and quantizes them for the first job; matrices in one job share the
 * quantized input, so they must share a vec-dot type, and files that mix types within Q/K/V
 * (or gate/up) run the others as further jobs whose input is re-quantized from s->mm_in. */
static void run_matmuls(struct step *s, int n, const struct kvx_mat *const *w, float *const *y,
                        const int64_t *ldy, kvx_parallel_fn prepare)
{
    int i = 0;
    while (i < n) {
        int j = i + 1;
        while (j < n && kvx_quant_vec_dot_type((enum kvx_dtype)w[j]->type) ==
                            kvx_quant_vec_dot_type((enum kvx_dtype)w[i]->type))
            j++;
        set_job(s, j - i, w + i, y + i, ldy + i);
        kvx_threadpool_run_items(s->f->tp, i == 0 ? prepare : step_quantize, s, s->f->n_tok);
        kvx_threadpool_run(s->f->tp, step_matmul, s);
        i = j;
    }
}

static void attention_block(struct step *s)
{
    const struct kvx_llama_layer *L = s->L;
    const struct kvx_hparams *hp = &s->m->hp;
    struct kvx_forward *f = s->f;
    const int64_t nq = (int64_t)hp->n_head * hp->head_dim, nkv = (int64_t)hp->n_head_kv * hp->head_dim;
    s->norm_w = L->attn_norm;
    s->mm_in = f->s->xn;
    s->mm_in_ld = hp->n_embd;
    const struct kvx_mat *w[3] = {&L->wq, &L->wk, &L->wv};
    float *y[3] = {f->s->q, f->s->k, f->s->v};
    const int64_t ldy[3] = {nq, nkv, nkv};
    run_matmuls(s, 3, w, y, ldy, step_norm);
    kvx_threadpool_run_items(f->tp, step_qk_rope, s, f->n_tok);
    const struct kvx_attn_batch ab = {
        .n_tok = f->n_tok, .pos = f->pos, .seq = f->seq, .layer = s->il,
        .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim,
        .q = f->s->q, .q_ld = nq, .out = f->s->attn, .out_ld = nq,
        .scale = 1.0f / sqrtf((float)hp->head_dim), .acc = f->acc,
    };
    const struct kvx_kv_rows kv = {.k = f->s->k, .v = f->s->v, .k_ld = nkv, .v_ld = nkv};
    kvx_step_store_attend(f, s->il, &kv, &ab);
    /* attention output projection into xn, added to x by the next norm step */
    const struct kvx_mat *wo[1] = {&L->wo};
    float *yo[1] = {f->s->xn};
    const int64_t ldo[1] = {hp->n_embd};
    s->mm_in = f->s->attn;
    s->mm_in_ld = nq;
    run_matmuls(s, 1, wo, yo, ldo, step_quantize);
    if (L->bo)
        kvx_threadpool_run_items(f->tp, step_out_bias, s, f->n_tok);
}

static void ffn_block(struct step *s)
{
    const struct kvx_llama_layer *L = s->L;
    const struct kvx_hparams *hp = &s->m->hp;
    struct kvx_forward *f = s->f;
    /* x += attention output (in xn); xn = norm(x) */
    s->add = f->s->xn;
    s->add_ld = hp->n_embd;
    s->norm_w = L->ffn_norm;
    s->mm_in = f->s->xn;
    s->mm_in_ld = hp->n_embd;
    const struct kvx_mat *w[2] = {&L->w_gate, &L->w_up};
    float *y[2] = {f->s->gate, f->s->up};
    const int64_t ldy[2] = {hp->n_ff, hp->n_ff};
    run_matmuls(s, 2, w, y, ldy, step_norm);
    s->add = NULL;
    s->mm_in = f->s->gate;
    s->mm_in_ld = hp->n_ff;
    const struct kvx_mat *wd[1] = {&L->w_down};
    float *yd[1] = {f->s->xn};
    const int64_t ldd[1] = {hp->n_embd};
    run_matmuls(s, 1, wd, yd, ldd, step_swiglu);
    /* the FFN output (in xn) is added to x by the next layer's norm step or the output step */
    s->add = f->s->xn;
}

/* x += the last layer's FFN output. */
static void step_residual(void *ctx, int ith, int nth)
{
    struct step *s = ctx;
    struct kvx_forward *f = s->f;
    const int64_t d = s->m->hp.n_embd;
    int64_t b, e;
    kvx_split_range(f->n_tok, 1, ith, nth, &b, &e);
    for (int64_t t = b; t < e; t++)
        kvx_add(f->s->x + t * d, s->add + t * d, d);
}

static void llama_forward(const struct kvx_model *m, struct kvx_forward *f)
{
    struct step s = {.m = m, .f = f};
    kvx_threadpool_run_items(f->tp, step_embed, &s, f->n_tok);
    for (int il = 0; il < m->hp.n_layer; il++) {
        s.il = il;
        s.L = &m->layers[il];
        attention_block(&s);
        ffn_block(&s);
    }
    kvx_threadpool_run_items(f->tp, step_residual, &s, f->n_tok);
    s.add = NULL;
    /* gather rows that want logits, normalise, project */
    int64_t n_out = 0;
    const int64_t d = m->hp.n_embd;
    for (int64_t t = 0; t < f->n_tok; t++)
        if (f->want_logits[t]) {
            kvx_rmsnorm(f->s->xn + n_out * d, f->s->x + t * d, m->output_norm, d, m->hp.norm_eps);
            n_out++;
        }
    if (n_out == 0)
        return;
    const int64_t n_tok = f->n_tok;
    f->n_tok = n_out;
    const struct kvx_mat *w[1] = {&m->output};
    float *y[1] = {f->logits};
    const int64_t ldy[1] = {m->hp.n_vocab};
    s.mm_in = f->s->xn;
    s.mm_in_ld = d;
    run_matmuls(&s, 1, w, y, ldy, step_quantize);
    f->n_tok = n_tok;
}

const struct kvx_arch kvx_arch_llama = {
    .name = "llama",
    .hparams = llama_hparams,
    .load_weights = llama_load_weights,
    .declare_cache = llama_declare_cache,
    .forward = llama_forward,
    .param_count = llama_param_count,
};
