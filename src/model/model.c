/* model/model: opening a model file, binding tensors, and the public model/tokenizer API. */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

#include "ops/quant.h"
#include "util/err.h"

static const struct kvx_arch *const arch_table[] = {
    &kvx_arch_llama,
    NULL,
};

const struct kvx_arch *kvx_arch_find(const char *name)
{
    for (int i = 0; arch_table[i]; i++)
        if (strcmp(arch_table[i]->name, name) == 0)
            return arch_table[i];
    /* Families whose GGUF layout is the Llama one, with optional biases / qk-norm. */
    static const char *const llama_like[] = {"qwen2", "qwen3", NULL};
    for (int i = 0; llama_like[i]; i++)
        if (strcmp(llama_like[i], name) == 0)
            return &kvx_arch_llama;
    return NULL;
}

struct kvx_model_cfg kvx_model_cfg_default(void)
{
    return (struct kvx_model_cfg){.path = NULL};
}

static void copy_gguf_str(const struct kvx_gguf *g, const char *key, char *dst, size_t cap)
{
    struct kvx_gguf_str s;
    dst[0] = '\0';
    if (kvx_gguf_get_str(g, key, &s, NULL) != KVX_OK)
        return;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static enum kvx_status load_chat_template(struct kvx_model *m, struct kvx_err *err)
{
    struct kvx_gguf_str tmpl = {0, NULL};
    kvx_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl, NULL);
    enum kvx_status st = kvx_chat_template_parse(tmpl.ptr, (size_t)tmpl.len, &m->chat, err);
    if (st == KVX_ERR_UNSUPPORTED) {
        /* An unknown template only matters to --chat; fall back to ChatML silently here. */
        kvx_chat_template_parse(NULL, 0, &m->chat, NULL);
        return KVX_OK;
    }
    return st;
}

enum kvx_status kvx_model_open(const struct kvx_model_cfg *cfg, struct kvx_model **out,
                               struct kvx_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->path)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "no model path given");
    struct kvx_model *m = calloc(1, sizeof *m);
    if (!m)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    enum kvx_status st = kvx_gguf_open(cfg->path, &m->gguf, err);
    if (st != KVX_OK)
        goto fail;
    copy_gguf_str(m->gguf, "general.architecture", m->arch_name, sizeof m->arch_name);
    copy_gguf_str(m->gguf, "general.name", m->name, sizeof m->name);
    if (!m->arch_name[0]) {
        st = kvx_err_set(err, KVX_ERR_FORMAT, "key 'general.architecture' is missing");
        goto fail;
    }
    m->arch = kvx_arch_find(m->arch_name);
    if (!m->arch) {
        st = kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                         "architecture '%s' is not supported (kvx runs: llama, qwen2, qwen3)", m->arch_name);
        goto fail;
    }
    if ((st = kvx_tokenizer_create(m->gguf, &m->tok, err)) != KVX_OK)
        goto fail;
    if ((st = load_chat_template(m, err)) != KVX_OK)
        goto fail;
    if ((st = m->arch->load(m, err)) != KVX_OK)
        goto fail;
    if (kvx_tokenizer_n_vocab(m->tok) != m->hp.n_vocab) {
        st = kvx_err_set(err, KVX_ERR_FORMAT,
                         "the tokenizer has %d tokens but the output layer has %d rows",
                         kvx_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    *out = m;
    return KVX_OK;
fail:
    kvx_err_prefix(err, "%s", cfg->path);
    kvx_model_close(m);
    return st;
}

void kvx_model_close(struct kvx_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned_f32; i++)
        free(m->owned_f32[i]);
    free(m->owned_f32);
    free(m->layers);
    kvx_tokenizer_destroy(m->tok);
    kvx_gguf_close(m->gguf);
    free(m);
}

enum kvx_status kvx_model_bind_mat(struct kvx_model *m, const char *name, int64_t n_in,
                                   int64_t n_out, bool required, struct kvx_mat *out,
                                   struct kvx_err *err)
{
    memset(out, 0, sizeof *out);
    const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(m->gguf, name);
    if (!t)
        return required ? kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name)
                        : KVX_OK;
    if (t->n_dims > 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return kvx_err_set(err, KVX_ERR_FORMAT,
                           "tensor '%s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                           name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                           (long long)n_in, (long long)n_out);
    if (!kvx_quant_kernels((enum kvx_dtype)t->type, KVX_ISA_SCALAR) ||
        t->type == KVX_DTYPE_Q8_1 || t->type == KVX_DTYPE_Q8_K)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has type %s, which kvx "
                           "cannot use as a weight", name, kvx_dtype_name(t->type));
    out->type = t->type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = t->nbytes / (size_t)n_out;
    out->data = t->data;
    return KVX_OK;
}

enum kvx_status kvx_model_bind_vec(struct kvx_model *m, const char *name, int64_t n,
                                   bool required, const float **out, struct kvx_err *err)
{
    *out = NULL;
    const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(m->gguf, name);
    if (!t)
        return required ? kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name)
                        : KVX_OK;
    if (t->n_dims != 1 || t->ne[0] != n)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has %lld elements (%u dims), "
                           "expected a vector of %lld", name, (long long)t->ne[0], t->n_dims,
                           (long long)n);
    const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)t->type, KVX_ISA_SCALAR);
    if (!k)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s",
                           name, kvx_dtype_name(t->type));
    if (m->n_owned_f32 == m->cap_owned_f32) {
        int cap = m->cap_owned_f32 ? 2 * m->cap_owned_f32 : 64;
        float **p = realloc(m->owned_f32, (size_t)cap * sizeof *p);
        if (!p)
            return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        m->owned_f32 = p;
        m->cap_owned_f32 = cap;
    }
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    k->to_float(t->data, v, n);
    m->owned_f32[m->n_owned_f32++] = v;
    *out = v;
    return KVX_OK;
}

void kvx_model_get_info(const struct kvx_model *m, struct kvx_model_info *out)
{
    memset(out, 0, sizeof *out);
    out->arch = m->arch_name;
    out->name = m->name;
    out->n_vocab = m->hp.n_vocab;
    out->n_ctx_train = m->hp.n_ctx_train;
    out->n_layer = m->hp.n_layer;
    out->n_embd = m->hp.n_embd;
    out->n_head = m->hp.n_head;
    out->n_head_kv = m->hp.n_head_kv;
    out->head_dim = m->hp.head_dim;
    out->n_ff = m->hp.n_ff;
    out->bos_id = kvx_tokenizer_bos(m->tok);
    out->eos_id = kvx_tokenizer_eos(m->tok);
    out->add_bos = kvx_tokenizer_add_bos(m->tok);
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const struct kvx_gguf_tensor *t = &m->gguf->tensors[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (uint64_t)t->ne[d];
        out->n_params += n;
        out->weight_bytes += t->nbytes;
    }
}

enum kvx_status kvx_tokenize(const struct kvx_model *m, const char *text, size_t len, bool add_bos,
                             bool parse_special, int32_t *out, int64_t cap, int64_t *n_out,
                             struct kvx_err *err)
{
    return kvx_tokenizer_encode(m->tok, text, len, add_bos, parse_special, out, cap, n_out, err);
}

size_t kvx_token_piece(const struct kvx_model *m, int32_t id, bool special, char *buf, size_t cap)
{
    return kvx_tokenizer_piece(m->tok, id, special, buf, cap);
}

bool kvx_token_is_eog(const struct kvx_model *m, int32_t id)
{
    return kvx_tokenizer_is_eog(m->tok, id);
}

enum kvx_status kvx_chat_render(const struct kvx_model *m, const struct kvx_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, char **out,
                                struct kvx_err *err)
{
    return kvx_chat_template_render(&m->chat, msgs, n_msgs, add_generation_prompt, out, err);
}
