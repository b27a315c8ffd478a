/* model/model: opening a model (GGUF file or safetensors + config.json), the weight-source
 * abstraction and binding helpers, and the public model/tokenizer API. */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/hf_config.h"
#include "ops/quant.h"
#include "ops/repack.h"
#include "text/tokenizer_hf.h"
#include "util/err.h"
#include "util/json.h"

static const struct kvx_arch *const arch_table[] = {
    &kvx_arch_llama,
    &kvx_arch_deepseek_v3,
    &kvx_arch_deepseek_v4,
    &kvx_arch_laguna,
    &kvx_arch_zaya,
    &kvx_arch_gemma4_text,
    &kvx_arch_gemma4,
    NULL,
};

/* Families whose layout is the Llama one, with optional biases / qk-norm: GGUF names them by
 * general.architecture, Hugging Face by model_type. */
static const char *const llama_like[] = {"mistral", "qwen2", "qwen3", "qwen3_moe", NULL};

const struct kvx_arch *kvx_arch_find(const char *name)
{
    for (int i = 0; arch_table[i]; i++)
        if (strcmp(arch_table[i]->name, name) == 0)
            return arch_table[i];
    for (int i = 0; llama_like[i]; i++)
        if (strcmp(llama_like[i], name) == 0)
            return &kvx_arch_llama;
    return NULL;
}

const char *kvx_arch_list(void)
{
    return "llama, mistral, qwen2, qwen3, qwen3_moe (config only: planned, not run); "
           "deepseek_v3, deepseek_v4, laguna, zaya, gemma4_text, gemma4 (safetensors)";
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
    if (m->gguf)
        kvx_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl, NULL);
    enum kvx_status st = kvx_chat_template_parse(tmpl.ptr, (size_t)tmpl.len, &m->chat, err);
    if (st == KVX_ERR_UNSUPPORTED) {
        /* An unknown template only matters to --chat; fall back to ChatML silently here. */
        kvx_chat_template_parse(NULL, 0, &m->chat, NULL);
        return KVX_OK;
    }
    return st;
}

static bool has_suffix(const char *s, const char *suffix)
{
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

bool kvx_model_path_is_gguf(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return false;
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f)
        fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0)
        return true;
    /* anything else that is not named like a safetensors file gets the GGUF reader's error */
    return !has_suffix(path, ".safetensors") && !has_suffix(path, ".json");
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

bool kvx_model_path_has_weights(const char *path)
{
    if (kvx_model_path_is_gguf(path) || has_suffix(path, ".safetensors") ||
        has_suffix(path, ".safetensors.index.json"))
        return true;
    struct stat sb;
    char dir[4096], p[4200];
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (file_exists(p))
        return true;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    return file_exists(p);
}

static enum kvx_status open_gguf(struct kvx_model *m, const char *path, struct kvx_err *err)
{
    enum kvx_status st = kvx_gguf_open(path, &m->gguf, err);
    if (st != KVX_OK)
        return st;
    m->format = KVX_MODEL_GGUF;
    copy_gguf_str(m->gguf, "general.architecture", m->arch_name, sizeof m->arch_name);
    copy_gguf_str(m->gguf, "general.name", m->name, sizeof m->name);
    if (!m->arch_name[0])
        return kvx_err_set(err, KVX_ERR_FORMAT, "key 'general.architecture' is missing");
    return KVX_OK;
}

/* config.json next to the weights: `path` is the folder, config.json itself, a .safetensors
 * file or the index; config-only, also any other <name>.json config file. */
static enum kvx_status open_safetensors(struct kvx_model *m, const char *path, bool config_only,
                                        struct kvx_err *err)
{
    m->format = KVX_MODEL_SAFETENSORS;
    struct stat sb;
    const bool is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    const size_t n = strlen(path);
    const bool is_config = !is_dir && n >= 11 && strcmp(path + n - 11, "config.json") == 0 &&
                           (n == 11 || path[n - 12] == '/');
    char *dir = m->dir;
    if (is_dir) {
        snprintf(dir, sizeof m->dir, "%s", path);
        for (size_t l = strlen(dir); l > 1 && dir[l - 1] == '/'; l--)
            dir[l - 1] = '\0';   /* "configs/x/" names the model x */
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof m->dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    }
    char cfg_path[4200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    /* config-only: any other *.json file (not a safetensors index) is the config itself
     * (released configs kept under their model's name) */
    const bool is_index = n >= 11 && strcmp(path + n - 11, ".index.json") == 0;
    const bool named_config = config_only && !is_dir && !is_config && !is_index && n >= 5 &&
                              strcmp(path + n - 5, ".json") == 0;
    if (named_config)
        snprintf(cfg_path, sizeof cfg_path, "%s", path);
    enum kvx_status st = config_only ? KVX_OK : kvx_st_open(is_config ? dir : path, &m->st, err);
    if (st != KVX_OK)
        return st;
    if ((st = kvx_jv_parse_file(cfg_path, &m->config, err)) != KVX_OK)
        return st;
    if (m->config->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "%s is not a JSON object", cfg_path);
    const char *type;
    if ((st = kvx_hf_str(m->config, "model_type", NULL, &type, err)) != KVX_OK)
        return st;
    if (!type)
        return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: key 'model_type' is missing");
    snprintf(m->arch_name, sizeof m->arch_name, "%.63s", type);
    const char *base = strrchr(dir, '/');
    snprintf(m->name, sizeof m->name, "%.255s", base && base[1] ? base + 1 : dir);
    if (named_config) {   /* the file's name without .json */
        const char *f = strrchr(path, '/');
        f = f ? f + 1 : path;
        snprintf(m->name, sizeof m->name, "%.*s", (int)(strlen(f) - 5 < 255 ? strlen(f) - 5 : 255), f);
    }
    /* DeepSeek-style FP8 checkpoints: quantization_config.weight_block_size */
    m->fp8_block[0] = m->fp8_block[1] = 128;
    const struct kvx_jv *qc = kvx_jv_get(m->config, "quantization_config");
    const struct kvx_jv *bs = kvx_jv_get(qc, "weight_block_size");
    if (bs) {
        if (bs->type != KVX_JV_ARRAY || bs->len != 2 || !bs->items[0].is_int ||
            !bs->items[1].is_int || bs->items[0].i < 1 || bs->items[1].i < 1 ||
            bs->items[0].i > INT32_MAX || bs->items[1].i > INT32_MAX)
            return kvx_err_set(err, KVX_ERR_FORMAT, "config.json: quantization_config."
                               "weight_block_size is not [rows, cols] of positive integers");
        m->fp8_block[0] = bs->items[0].i;
        m->fp8_block[1] = bs->items[1].i;
    }
    return KVX_OK;
}

/* tokenizer.json and the chat template of tokenizer_config.json.  A model without a tokenizer
 * kvx can read still runs from token ids, so failure here only records why. */
static void load_hf_tokenizer(struct kvx_model *m)
{
    const struct kvx_tokenizer_hf_defaults def = {
        .n_vocab = m->hp.n_vocab, .bos_id = m->hp.bos_id, .eos_id = m->hp.eos_id,
    };
    char *tmpl = NULL;
    struct kvx_err terr = {0};
    if (kvx_tokenizer_create_hf(m->dir, &def, &m->tok, &tmpl, &terr) != KVX_OK) {
        snprintf(m->tok_missing, sizeof m->tok_missing, "%.300s", terr.msg);
        return;
    }
    if (tmpl && kvx_chat_template_parse(tmpl, strlen(tmpl), &m->chat, NULL) != KVX_OK)
        kvx_chat_template_parse(NULL, 0, &m->chat, NULL);   /* unknown: ChatML, as for GGUF */
    free(tmpl);
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
    m->hp.bos_id = m->hp.eos_id = -1;
    m->config_only = cfg->config_only;
    m->mla_mode = cfg->mla;
    m->weights_f32 = cfg->weights_f32;
    m->weights_rows = cfg->weights_rows;
    enum kvx_status st = kvx_model_path_is_gguf(cfg->path)
                             ? open_gguf(m, cfg->path, err)
                             : open_safetensors(m, cfg->path, cfg->config_only, err);
    if (st != KVX_OK)
        goto fail;
    m->arch = kvx_arch_find(m->arch_name);
    if (!m->arch) {
        st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "%s '%s' is not supported (kvx runs: %s)",
                         m->format == KVX_MODEL_GGUF ? "architecture" : "config.json: model_type",
                         m->arch_name, kvx_arch_list());
        goto fail;
    }
    if ((st = m->arch->hparams(m, err)) != KVX_OK)
        goto fail;
    if (m->config_only) {
        snprintf(m->tok_missing, sizeof m->tok_missing, "the model was opened without weights "
                 "or tokenizer (config only)");
        *out = m;
        return KVX_OK;
    }
    if (m->gguf && (st = kvx_tokenizer_create(m->gguf, &m->tok, err)) != KVX_OK)
        goto fail;
    if ((st = load_chat_template(m, err)) != KVX_OK)
        goto fail;
    if ((st = m->arch->load_weights(m, err)) != KVX_OK)
        goto fail;
    if (m->format == KVX_MODEL_SAFETENSORS)
        load_hf_tokenizer(m);
    if (m->tok && kvx_tokenizer_n_vocab(m->tok) != m->hp.n_vocab) {
        st = kvx_err_set(err, KVX_ERR_FORMAT,
                         "the tokenizer has %d tokens but the output layer has %d rows",
                         kvx_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    *out = m;
    return KVX_OK;
fail:
    if (err && !strstr(err->msg, cfg->path))   /* name the path once */
        kvx_err_prefix(err, "%s", cfg->path);
    kvx_model_close(m);
    return st;
}

void kvx_model_close(struct kvx_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->mla_layers);
    if (m->free_arch_data)
        m->free_arch_data(m->arch_data);
    kvx_tokenizer_destroy(m->tok);
    kvx_gguf_close(m->gguf);
    kvx_st_close(m->st);
    kvx_jv_free(m->config);
    free(m);
}

/* w's rows converted to f32 rows owned by the model (kvx_model_bind_mat_f32, and every matrix
 * with kvx_model_cfg.weights_f32). */
static enum kvx_status dequant_mat(struct kvx_model *m, struct kvx_mat *w, struct kvx_err *err)
{
    float *f = malloc((size_t)w->n_in * (size_t)w->n_out * sizeof *f);
    if (!f)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory dequantizing weights to f32");
    const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)w->type, KVX_ISA_SCALAR);
    for (int64_t r = 0; r < w->n_out; r++)
        k->to_float(w->data + (size_t)r * w->row_bytes, f + r * w->n_in, w->n_in);
    enum kvx_status st = kvx_model_own(m, f, err);   /* frees f on failure */
    if (st != KVX_OK)
        return st;
    w->type = KVX_DTYPE_F32;
    w->row_bytes = (size_t)w->n_in * sizeof *f;
    w->data = (const uint8_t *)f;
    return KVX_OK;
}

static enum kvx_status bind_mat_stored(struct kvx_model *m, const char *name, int64_t n_in,
                                       int64_t n_out, bool required, struct kvx_mat *out,
                                       struct kvx_err *err);

enum kvx_status kvx_model_bind_mat_f32(struct kvx_model *m, const char *name, int64_t n_in,
                                       int64_t n_out, const float **out, struct kvx_err *err)
{
    struct kvx_mat w;
    enum kvx_status st = bind_mat_stored(m, name, n_in, n_out, true, &w, err);
    if (st == KVX_OK)
        st = dequant_mat(m, &w, err);   /* a copy, even of f32 rows */
    if (st != KVX_OK)
        return st;
    *out = (const float *)w.data;
    return KVX_OK;
}

enum kvx_status kvx_model_bind_stack(const struct kvx_model *m, const char *name, int64_t E,
                                     int64_t rows, int64_t n_in, struct kvx_wtensor *t,
                                     size_t *row_bytes, struct kvx_err *err)
{
    if (!kvx_model_find_tensor(m, name, t))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name);
    if (t->n_dims != 3 || t->ne[0] != n_in || t->ne[1] != rows || t->ne[2] != E)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld] (%u "
                           "dims), config.json implies [%lld, %lld, %lld]", name,
                           (long long)(t->n_dims > 2 ? t->ne[2] : 0),
                           (long long)(t->n_dims > 1 ? t->ne[1] : 0), (long long)t->ne[0],
                           t->n_dims, (long long)E, (long long)rows, (long long)n_in);
    if (t->type != KVX_DTYPE_F32 && t->type != KVX_DTYPE_F16 && t->type != KVX_DTYPE_BF16)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has type %s: stacked "
                           "expert weights are read in F32, F16 or BF16 only", name,
                           t->st ? kvx_st_dtype_name(t->st->dtype) : "other");
    *row_bytes = t->nbytes / (size_t)(E * rows);
    return KVX_OK;
}

struct kvx_mat kvx_model_stack_mat(const struct kvx_wtensor *t, size_t row_bytes,
                                   int64_t first_row, int64_t n_in, int64_t n_out)
{
    return (struct kvx_mat){.type = t->type, .n_in = n_in, .n_out = n_out,
                            .row_bytes = row_bytes,
                            .data = (const uint8_t *)t->data + (size_t)first_row * row_bytes};
}

enum kvx_status kvx_model_repack(struct kvx_model *m, struct kvx_mat *const *mats, int n,
                                 struct kvx_err *err)
{
    if (m->weights_rows || m->format != KVX_MODEL_GGUF || !kvx_x16_fast() ||
        !kvx_gguf_set_writable(m->gguf, true))
        return KVX_OK;
    enum kvx_status st = KVX_OK;
    for (int i = 0; i < n && st == KVX_OK; i++) {
        struct kvx_mat *w = mats[i];
        for (int j = 0; j < i && !w->x16; j++)
            w->x16 = mats[j]->x16 && mats[j]->data == w->data;
        if (w->x16 || !kvx_x16_supported((enum kvx_dtype)w->type, w->n_in) ||
            w->n_out < KVX_X16)
            continue;
        if (kvx_x16_pack((enum kvx_dtype)w->type, w->n_in, w->n_out, (uint8_t *)w->data))
            w->x16 = true;
        else
            st = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory interleaving weight rows");
    }
    kvx_gguf_set_writable(m->gguf, false);
    return st;
}

enum kvx_status kvx_model_own(struct kvx_model *m, void *p, struct kvx_err *err)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **np = realloc(m->owned, (size_t)cap * sizeof *np);
        if (!np) {
            free(p);
            return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        }
        m->owned = np;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return KVX_OK;
}

static uint32_t st_type(enum kvx_st_dtype d)
{
    switch (d) {
    case KVX_ST_F32: return KVX_DTYPE_F32;
    case KVX_ST_F16: return KVX_DTYPE_F16;
    case KVX_ST_BF16: return KVX_DTYPE_BF16;
    case KVX_ST_F8_E4M3: return KVX_WTENSOR_FP8;
    default: return KVX_WTENSOR_OTHER;
    }
}

bool kvx_model_find_tensor(const struct kvx_model *m, const char *name, struct kvx_wtensor *out)
{
    memset(out, 0, sizeof *out);
    out->name = name;
    if (m->format == KVX_MODEL_GGUF) {
        const struct kvx_gguf_tensor *t = kvx_gguf_find_tensor(m->gguf, name);
        if (!t)
            return false;
        out->type = t->type;
        out->n_dims = t->n_dims;
        for (int d = 0; d < KVX_WTENSOR_MAX_DIMS; d++)
            out->ne[d] = t->ne[d];
        out->nbytes = t->nbytes;
        out->data = t->data;
        return true;
    }
    const struct kvx_st_tensor *t = kvx_st_find(m->st, name);
    if (!t || t->n_dims > KVX_WTENSOR_MAX_DIMS)
        return false;
    out->type = st_type(t->dtype);
    out->n_dims = t->n_dims;
    for (int d = 0; d < KVX_WTENSOR_MAX_DIMS; d++)
        out->ne[d] = d < (int)t->n_dims ? t->shape[t->n_dims - 1 - (uint32_t)d] : 1;
    out->nbytes = t->nbytes;
    out->data = t->data;
    out->st = t;
    return true;
}

const char *kvx_model_wname(const struct kvx_model *m, char *buf, size_t cap, const char *gguf,
                            const char *hf, int layer)
{
    snprintf(buf, cap, m->format == KVX_MODEL_GGUF ? gguf : hf, layer);
    return buf;
}

static const char *type_name(uint32_t t)
{
    return t == KVX_WTENSOR_FP8 ? "F8_E4M3" : t == KVX_WTENSOR_OTHER ? "other" : kvx_dtype_name(t);
}

/* The block scales of weight `name`: "<name>_scale_inv" (DeepSeek-V3), else, for a name ending
 * in ".weight", "<stem>.scale" (DeepSeek-V4's released checkpoints); NULL when neither.  The name
 * looked for last is left in sname (for messages). */
static const struct kvx_st_tensor *find_scale(const struct kvx_model *m, const char *name,
                                              char *sname, size_t cap)
{
    snprintf(sname, cap, "%s_scale_inv", name);
    const struct kvx_st_tensor *s = kvx_st_find(m->st, sname);
    const size_t l = strlen(name);
    if (!s && l > 7 && strcmp(name + l - 7, ".weight") == 0) {
        snprintf(sname, cap, "%.*s.scale", (int)(l - 7), name);
        s = kvx_st_find(m->st, sname);
    }
    return s;
}

/* FP8 → f32 with its block scales (find_scale; malloc'd rows*cols floats). */
static enum kvx_status dequant_fp8(struct kvx_model *m, const struct kvx_wtensor *t, float **out,
                                   struct kvx_err *err)
{
    char sname[512];
    const struct kvx_st_tensor *scale = find_scale(m, t->name, sname, sizeof sname);
    *out = NULL;
    if (t->n_dims == 1) {  /* vectors have no block scales in DeepSeek checkpoints */
        if (!(*out = malloc((size_t)t->ne[0] * sizeof **out)))
            return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        return kvx_st_read_f32(t->st, *out, t->ne[0], err);
    }
    if (!scale) {
        const size_t l = strlen(t->name);
        if (l > 7 && strcmp(t->name + l - 7, ".weight") == 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is F8_E4M3 but its block "
                               "scales ('%s_scale_inv' or '%.*s.scale') are missing", t->name,
                               t->name, (int)(l - 7), t->name);
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is F8_E4M3 but its block scales "
                           "('%s') are missing", t->name, sname);
    }
    if (!(*out = malloc((size_t)t->ne[0] * (size_t)t->ne[1] * sizeof **out)))
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    return kvx_st_dequant_fp8(t->st, scale, m->fp8_block[0], m->fp8_block[1], *out, err);
}

/* A packed FP4 weight: a 2-D I8/U8 safetensors tensor with a "<stem>.scale" sibling (DeepSeek-V4's
 * routed experts, config expert_dtype "fp4"). */
static bool is_fp4(const struct kvx_model *m, const struct kvx_wtensor *t)
{
    char sname[512];
    return t->st && (t->st->dtype == KVX_ST_I8 || t->st->dtype == KVX_ST_U8) &&
           t->n_dims == 2 && find_scale(m, t->name, sname, sizeof sname);
}

static enum kvx_status shape_error(const struct kvx_model *m, const struct kvx_wtensor *t,
                                   int64_t n_in, int64_t n_out, struct kvx_err *err)
{
    if (m->format == KVX_MODEL_GGUF)
        return kvx_err_set(err, KVX_ERR_FORMAT,
                           "tensor '%s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                           t->name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                           (long long)n_in, (long long)n_out);
    /* safetensors shapes are [out, in]: say it that way, against config.json */
    char shape[128] = "";
    size_t k = 0;
    for (int d = (int)t->n_dims - 1; d >= 0 && k < sizeof shape; d--)
        k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", k ? ", " : "",
                              (long long)t->ne[d]);
    if (n_out == 1)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has shape [%s] but config.json "
                           "implies [%lld]", t->name, shape, (long long)n_in);
    return kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has shape [%s] but config.json implies "
                       "[%lld, %lld]", t->name, shape, (long long)n_out, (long long)n_in);
}

/* kvx_model_bind_mat without the f32 conversion of kvx_model_cfg.weights_f32: the tensor as
 * stored (FP8 and FP4 already widened to BF16). */
static enum kvx_status bind_mat_stored(struct kvx_model *m, const char *name, int64_t n_in,
                                       int64_t n_out, bool required, struct kvx_mat *out,
                                       struct kvx_err *err)
{
    memset(out, 0, sizeof *out);
    struct kvx_wtensor t;
    if (!kvx_model_find_tensor(m, name, &t))
        return required ? kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name)
                        : KVX_OK;
    const bool fp4 = is_fp4(m, &t);
    if (fp4)
        t.ne[0] *= 2;   /* two inputs a byte */
    if (t.n_dims > 2 || t.n_dims < 1 || t.ne[0] != n_in || t.ne[1] != n_out)
        return shape_error(m, &t, n_in, n_out, err);
    if (t.type == KVX_WTENSOR_FP8 || fp4) {
        /* dequantize, then store as BF16 (what transformers computes with after its dequant;
         * FP8 or FP4 times a power-of-two scale is exact in BF16) */
        float *f = NULL;
        enum kvx_status st;
        if (fp4) {
            char sname[512];
            const struct kvx_st_tensor *scale = find_scale(m, t.name, sname, sizeof sname);
            f = malloc((size_t)n_in * (size_t)n_out * sizeof *f);
            st = !f ? kvx_err_set(err, KVX_ERR_NOMEM, "out of memory")
                    : kvx_st_dequant_fp4(t.st, scale, KVX_FP4_BLOCK, f, err);
        } else {
            st = dequant_fp8(m, &t, &f, err);
        }
        uint16_t *b = st == KVX_OK ? malloc((size_t)n_in * (size_t)n_out * sizeof *b) : NULL;
        if (st == KVX_OK && !b)
            st = kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
        if (st == KVX_OK)
            kvx_quant_kernels(KVX_DTYPE_BF16, KVX_ISA_SCALAR)->from_float(f, b, n_in * n_out);
        free(f);
        if (st != KVX_OK) {
            free(b);
            return st;
        }
        if ((st = kvx_model_own(m, b, err)) != KVX_OK)   /* frees b on failure */
            return st;
        t.type = KVX_DTYPE_BF16;
        t.data = b;
        t.nbytes = (size_t)n_in * (size_t)n_out * sizeof *b;
    }
    if (t.type == KVX_WTENSOR_OTHER || !kvx_quant_kernels((enum kvx_dtype)t.type, KVX_ISA_SCALAR) ||
        t.type == KVX_DTYPE_Q8_1 || t.type == KVX_DTYPE_Q8_K)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has type %s, which kvx "
                           "cannot use as a weight", name,
                           t.st ? kvx_st_dtype_name(t.st->dtype) : type_name(t.type));
    out->type = t.type;
    out->n_in = n_in;
    out->n_out = n_out;
    out->row_bytes = t.nbytes / (size_t)n_out;
    out->data = t.data;
    return KVX_OK;
}

enum kvx_status kvx_model_bind_mat(struct kvx_model *m, const char *name, int64_t n_in,
                                   int64_t n_out, bool required, struct kvx_mat *out,
                                   struct kvx_err *err)
{
    enum kvx_status st = bind_mat_stored(m, name, n_in, n_out, required, out, err);
    if (st == KVX_OK && out->data && m->weights_f32 && out->type != KVX_DTYPE_F32)
        st = dequant_mat(m, out, err);
    return st;
}

enum kvx_status kvx_model_bind_vec(struct kvx_model *m, const char *name, int64_t n,
                                   bool required, const float **out, struct kvx_err *err)
{
    *out = NULL;
    struct kvx_wtensor t;
    if (!kvx_model_find_tensor(m, name, &t))
        return required ? kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' is missing", name)
                        : KVX_OK;
    if (t.n_dims != 1 || t.ne[0] != n)
        return m->format == KVX_MODEL_GGUF
                   ? kvx_err_set(err, KVX_ERR_FORMAT, "tensor '%s' has %lld elements (%u dims), "
                                 "expected a vector of %lld", name, (long long)t.ne[0], t.n_dims,
                                 (long long)n)
                   : shape_error(m, &t, n, 1, err);
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    enum kvx_status st = KVX_OK;
    if (t.st) {
        st = kvx_st_read_f32(t.st, v, n, err);
    } else {
        const struct kvx_quant_kernels *k = kvx_quant_kernels((enum kvx_dtype)t.type, KVX_ISA_SCALAR);
        if (!k)
            st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s",
                             name, kvx_dtype_name(t.type));
        else
            k->to_float(t.data, v, n);
    }
    if (st != KVX_OK) {
        free(v);
        return st;
    }
    if ((st = kvx_model_own(m, v, err)) != KVX_OK)
        return st;
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
    out->bos_id = m->tok ? kvx_tokenizer_bos(m->tok) : m->hp.bos_id;
    out->eos_id = m->tok ? kvx_tokenizer_eos(m->tok) : m->hp.eos_id;
    out->add_bos = m->tok ? kvx_tokenizer_add_bos(m->tok) : false;
    out->has_tokenizer = m->tok != NULL;
    for (uint64_t i = 0; m->gguf && i < m->gguf->n_tensors; i++) {
        const struct kvx_gguf_tensor *t = &m->gguf->tensors[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (uint64_t)t->ne[d];
        out->n_params += n;
        out->weight_bytes += t->nbytes;
    }
    for (uint64_t i = 0; m->st && i < m->st->n_tensors; i++) {
        /* block scales of FP8/FP4 weights are not parameters; packed FP4 holds two a byte */
        const struct kvx_st_tensor *t = &m->st->tensors[i];
        const size_t l = strlen(t->name);
        struct kvx_wtensor w = {.name = t->name, .st = t, .n_dims = t->n_dims};
        if (l > 10 && strcmp(t->name + l - 10, "_scale_inv") == 0)
            ;
        else if (t->dtype == KVX_ST_F8_E8M0 && l > 6 && strcmp(t->name + l - 6, ".scale") == 0)
            ;
        else
            out->n_params += (uint64_t)t->n_elem * (is_fp4(m, &w) ? 2 : 1);
        out->weight_bytes += t->nbytes;
    }
}

static enum kvx_status no_tokenizer(const struct kvx_model *m, struct kvx_err *err)
{
    return kvx_err_set(err, KVX_ERR_UNSUPPORTED, "model '%s' has no tokenizer kvx can read "
                       "(%s); run it from token ids (kvx logits --tokens)", m->name,
                       m->tok_missing[0] ? m->tok_missing : "none");
}

enum kvx_status kvx_tokenize(const struct kvx_model *m, const char *text, size_t len, bool add_bos,
                             bool parse_special, int32_t *out, int64_t cap, int64_t *n_out,
                             struct kvx_err *err)
{
    if (!m->tok) {
        *n_out = 0;
        return no_tokenizer(m, err);
    }
    return kvx_tokenizer_encode(m->tok, text, len, add_bos, parse_special, out, cap, n_out, err);
}

size_t kvx_token_piece(const struct kvx_model *m, int32_t id, bool special, char *buf, size_t cap)
{
    if (!m->tok)
        return 0;
    return kvx_tokenizer_piece(m->tok, id, special, buf, cap);
}

bool kvx_token_is_eog(const struct kvx_model *m, int32_t id)
{
    if (!m->tok)
        return id >= 0 && id == m->hp.eos_id;
    return kvx_tokenizer_is_eog(m->tok, id);
}

enum kvx_status kvx_chat_render(const struct kvx_model *m, const struct kvx_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, char **out,
                                struct kvx_err *err)
{
    return kvx_chat_template_render(&m->chat, msgs, n_msgs, add_generation_prompt, out, err);
}
