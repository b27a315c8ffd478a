/* text/tokenizer_hf: a tokenizer from a Hugging Face model folder (tokenizer.json and, when
 * present, tokenizer_config.json).
 *
 * kvx has one BPE implementation (text/tokenizer.c, checked against llama.cpp), which reads the
 * tokenizer.ggml.* keys of a GGUF file.  This file translates tokenizer.json into exactly those
 * keys, as llama.cpp's converter does, in a GGUF image built in memory, and hands it to
 * kvx_tokenizer_create (which copies what it keeps; the image is freed here):
 *   tokens          model.vocab by id, added_tokens at their ids; ids the model has beyond the
 *                   tokenizer's ("vocab_size" padding) become "[PAD<id>]", type UNUSED
 *   token_type      NORMAL; CONTROL for special added tokens; USER_DEFINED for other added ones
 *   merges          "a b" (tokenizer.json has "a b" strings or ["a", "b"] pairs)
 *   pre             recognised from the pre_tokenizer: ByteLevel with its regex = gpt-2;
 *                   Digits(individual) + ByteLevel = smollm; Split(Llama-3 regex) + ByteLevel
 *                   without regex = llama3 (BPE ignore_merges) or dbrx; Split(Qwen2 regex) +
 *                   ByteLevel = qwen2.  Anything else is KVX_ERR_UNSUPPORTED naming it.
 *   bos/eos, add_bos_token, add_eos_token, chat_template  from tokenizer_config.json
 *                   (bos/eos ids from config.json when it names none; without add_bos_token
 *                   the pre-tokenizer's llama.cpp default applies: BOS for llama3 only)
 * Byte-level BPE only: SentencePiece-style BPE (byte_fallback), Unigram and WordPiece are
 * refused, and so is any normalizer except NFC (which llama.cpp ignores as well: text that is
 * not in NFC may split differently from transformers). */
#include "text/tokenizer_hf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "io/gguf_write.h"
#include "util/err.h"
#include "util/json.h"

#define TYPE_NORMAL 1
#define TYPE_CONTROL 3
#define TYPE_USER_DEFINED 4
#define TYPE_UNUSED 5

static const char LLAMA3_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static bool str_is(const struct kvx_jv *v, const char *s)
{
    return v && v->type == KVX_JV_STRING && strcmp(v->str, s) == 0;
}

/* A bool member, `def` when absent. */
static bool member_bool(const struct kvx_jv *o, const char *key, bool def)
{
    const struct kvx_jv *v = kvx_jv_get(o, key);
    return v && v->type == KVX_JV_BOOL ? v->b : def;
}

static bool is_byte_level(const struct kvx_jv *p, bool use_regex)
{
    return p && str_is(kvx_jv_get(p, "type"), "ByteLevel") &&
           member_bool(p, "use_regex", true) == use_regex &&
           !member_bool(p, "add_prefix_space", false);
}

/* The llama.cpp pre-tokenizer name for tokenizer.json's pre_tokenizer (and model), or NULL. */
static const char *pre_name(const struct kvx_jv *pre, const struct kvx_jv *model)
{
    if (is_byte_level(pre, true))
        return "gpt-2";
    const struct kvx_jv *seq = kvx_jv_get(pre, "pretokenizers");
    if (!str_is(kvx_jv_get(pre, "type"), "Sequence") || !seq || seq->type != KVX_JV_ARRAY ||
        seq->len != 2)
        return NULL;
    const struct kvx_jv *a = &seq->items[0], *b = &seq->items[1];
    if (str_is(kvx_jv_get(a, "type"), "Digits") && member_bool(a, "individual_digits", false) &&
        is_byte_level(b, true))
        return "smollm";
    const struct kvx_jv *pat = kvx_jv_get(kvx_jv_get(a, "pattern"), "Regex");
    if (!str_is(kvx_jv_get(a, "type"), "Split") || !pat || !is_byte_level(b, false) ||
        !str_is(kvx_jv_get(a, "behavior"), "Isolated") || member_bool(a, "invert", false))
        return NULL;
    if (str_is(pat, LLAMA3_RE))
        return member_bool(model, "ignore_merges", false) ? "llama3" : "dbrx";
    if (str_is(pat, QWEN2_RE))
        return "qwen2";
    return NULL;
}

/* The token text of a tokenizer_config.json entry ("<s>" or {"content": "<s>", ...}). */
static const char *config_token(const struct kvx_jv *cfg, const char *key)
{
    const struct kvx_jv *v = kvx_jv_get(cfg, key);
    if (v && v->type == KVX_JV_OBJECT)
        v = kvx_jv_get(v, "content");
    return v && v->type == KVX_JV_STRING ? v->str : NULL;
}

struct hf_vocab {
    int32_t n;
    const char **text;         /* borrowed from the JSON tree, or pad[] */
    int32_t *type;
    char *pad;                 /* "[PAD<id>]" strings, 16 bytes each */
    const char **merges;
    char *merge_buf;
    uint64_t n_merges;
};

static void vocab_free(struct hf_vocab *v)
{
    free(v->text);
    free(v->type);
    free(v->pad);
    free(v->merges);
    free(v->merge_buf);
}

static enum kvx_status vocab_tokens(const struct kvx_jv *tj, const struct kvx_jv *model,
                                    int32_t n_model, struct hf_vocab *v, struct kvx_err *err)
{
    const struct kvx_jv *voc = kvx_jv_get(model, "vocab");
    const struct kvx_jv *added = kvx_jv_get(tj, "added_tokens");
    if (!voc || voc->type != KVX_JV_OBJECT)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: model.vocab is not an object");
    int64_t n = n_model;
    for (size_t i = 0; i < voc->len; i++) {
        const struct kvx_jv *id = &voc->items[i];
        if (id->type != KVX_JV_NUMBER || !id->is_int || id->i < 0 || id->i >= n_model)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: model.vocab['%.60s'] is "
                               "not an id below the model's vocab_size %d", voc->keys[i], n_model);
    }
    v->n = (int32_t)n;
    v->text = calloc((size_t)n, sizeof *v->text);
    v->type = malloc((size_t)n * sizeof *v->type);
    v->pad = malloc((size_t)n * 16);
    if (!v->text || !v->type || !v->pad)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < voc->len; i++) {
        const int64_t id = voc->items[i].i;
        if (v->text[id])
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: id %lld is given to '%.60s' "
                               "and '%.60s'", (long long)id, v->text[id], voc->keys[i]);
        v->text[id] = voc->keys[i];
        v->type[id] = TYPE_NORMAL;
    }
    for (size_t i = 0; added && added->type == KVX_JV_ARRAY && i < added->len; i++) {
        const struct kvx_jv *a = &added->items[i], *id = kvx_jv_get(a, "id"),
                            *content = kvx_jv_get(a, "content");
        if (!id || !id->is_int || id->i < 0 || id->i >= n || !content ||
            content->type != KVX_JV_STRING)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] has no "
                               "id below %lld or no content", i, (long long)n);
        if (v->text[id->i] && strcmp(v->text[id->i], content->str) != 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: added token '%.60s' takes "
                               "id %lld of '%.60s'", content->str, (long long)id->i,
                               v->text[id->i]);
        v->text[id->i] = content->str;
        v->type[id->i] = member_bool(a, "special", false) ? TYPE_CONTROL : TYPE_USER_DEFINED;
    }
    for (int32_t i = 0; i < v->n; i++)
        if (!v->text[i]) {
            snprintf(v->pad + 16 * (size_t)i, 16, "[PAD%d]", i);
            v->text[i] = v->pad + 16 * (size_t)i;
            v->type[i] = TYPE_UNUSED;
        }
    return KVX_OK;
}

static enum kvx_status vocab_merges(const struct kvx_jv *model, struct hf_vocab *v,
                                    struct kvx_err *err)
{
    const struct kvx_jv *mg = kvx_jv_get(model, "merges");
    if (!mg || mg->type != KVX_JV_ARRAY)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: model.merges is not a list");
    size_t bytes = 1;
    for (size_t i = 0; i < mg->len; i++) {
        const struct kvx_jv *e = &mg->items[i];
        if (e->type == KVX_JV_STRING)
            bytes += e->len + 1;
        else if (e->type == KVX_JV_ARRAY && e->len == 2 && e->items[0].type == KVX_JV_STRING &&
                 e->items[1].type == KVX_JV_STRING)
            bytes += e->items[0].len + e->items[1].len + 2;
        else
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer.json: model.merges[%zu] is "
                               "neither \"a b\" nor [\"a\", \"b\"]", i);
    }
    v->merges = malloc((mg->len ? mg->len : 1) * sizeof *v->merges);
    v->merge_buf = malloc(bytes);
    if (!v->merges || !v->merge_buf)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    char *p = v->merge_buf;
    for (size_t i = 0; i < mg->len; i++) {
        const struct kvx_jv *e = &mg->items[i];
        v->merges[i] = p;
        if (e->type == KVX_JV_STRING)
            p += sprintf(p, "%s", e->str) + 1;
        else
            p += sprintf(p, "%s %s", e->items[0].str, e->items[1].str) + 1;
    }
    v->n_merges = mg->len;
    return KVX_OK;
}

static int32_t find_token(const struct hf_vocab *v, const char *text)
{
    for (int32_t i = 0; text && i < v->n; i++)
        if (strcmp(v->text[i], text) == 0)
            return i;
    return -1;
}

/* The GGUF keys, then the tokenizer from them. */
static enum kvx_status make_tokenizer(const struct hf_vocab *v, const char *pre,
                                      const struct kvx_jv *cfg,
                                      const struct kvx_tokenizer_hf_defaults *def,
                                      struct kvx_tokenizer **out, struct kvx_err *err)
{
    struct kvx_gguf_writer *w = NULL;
    enum kvx_status st = kvx_gguf_writer_create(32, &w, err);
    if (st != KVX_OK)
        return st;
    int32_t bos = find_token(v, config_token(cfg, "bos_token"));
    int32_t eos = find_token(v, config_token(cfg, "eos_token"));
    bos = bos >= 0 ? bos : def->bos_id;
    eos = eos >= 0 ? eos : def->eos_id;
    kvx_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    kvx_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    kvx_gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", v->text, (uint64_t)v->n);
    kvx_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KVX_GGUF_INT32, v->type,
                            (uint64_t)v->n);
    kvx_gguf_writer_add_str_arr(w, "tokenizer.ggml.merges", v->merges, v->n_merges);
    if (bos >= 0)
        kvx_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0)
        kvx_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    /* absent keys leave the pre-tokenizer's default (llama3 adds BOS, as its post_processor
     * does in transformers; the others do not) */
    if (kvx_jv_get(cfg, "add_bos_token"))
        kvx_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token",
                                 member_bool(cfg, "add_bos_token", false) && bos >= 0);
    if (kvx_jv_get(cfg, "add_eos_token"))
        kvx_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token",
                                 member_bool(cfg, "add_eos_token", false) && eos >= 0);
    uint8_t *img = NULL;
    size_t size = 0;
    struct kvx_gguf *g = NULL;
    if ((st = kvx_gguf_writer_finish(w, &img, &size, err)) == KVX_OK &&
        (st = kvx_gguf_parse(img, size, &g, err)) == KVX_OK)
        st = kvx_tokenizer_create(g, out, err);
    kvx_gguf_close(g);
    free(img);
    kvx_gguf_writer_destroy(w);
    return st;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* tokenizer_config.json's chat_template: a string, or a list of {name, template} (the one named
 * "default"). */
static char *chat_template(const struct kvx_jv *cfg)
{
    const struct kvx_jv *t = kvx_jv_get(cfg, "chat_template");
    for (size_t i = 0; t && t->type == KVX_JV_ARRAY && i < t->len; i++)
        if (str_is(kvx_jv_get(&t->items[i], "name"), "default"))
            t = kvx_jv_get(&t->items[i], "template");
    return t && t->type == KVX_JV_STRING ? strdup(t->str) : NULL;
}

enum kvx_status kvx_tokenizer_create_hf(const char *dir,
                                        const struct kvx_tokenizer_hf_defaults *def,
                                        struct kvx_tokenizer **out, char **chat_tmpl,
                                        struct kvx_err *err)
{
    *out = NULL;
    if (chat_tmpl)
        *chat_tmpl = NULL;
    char *tpath = join(dir, "tokenizer.json"), *cpath = join(dir, "tokenizer_config.json");
    struct kvx_jv *tj = NULL, *cfg = NULL;
    struct hf_vocab v = {0};
    enum kvx_status st = tpath && cpath ? kvx_jv_parse_file(tpath, &tj, err)
                                        : kvx_err_set(err, KVX_ERR_NOMEM, "out of memory");
    if (st == KVX_OK) {
        struct kvx_err cerr = {0};   /* tokenizer_config.json is optional */
        if (kvx_jv_parse_file(cpath, &cfg, &cerr) != KVX_OK && cerr.status != KVX_ERR_NOT_FOUND)
            st = kvx_err_set(err, cerr.status, "%s", cerr.msg);
    }
    const struct kvx_jv *model = kvx_jv_get(tj, "model");
    const struct kvx_jv *norm = kvx_jv_get(tj, "normalizer");
    const char *pre = st == KVX_OK ? pre_name(kvx_jv_get(tj, "pre_tokenizer"), model) : NULL;
    if (st != KVX_OK) {
        /* already set */
    } else if (!str_is(kvx_jv_get(model, "type"), "BPE") ||
               member_bool(model, "byte_fallback", false)) {
        st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tokenizer.json: only byte-level BPE "
                         "tokenizers are supported (model type '%.30s'%s)",
                         str_is(kvx_jv_get(model, "type"), "BPE") ? "BPE" : "other",
                         member_bool(model, "byte_fallback", false) ? ", byte_fallback" : "");
    } else if (norm && norm->type != KVX_JV_NULL && !str_is(kvx_jv_get(norm, "type"), "NFC")) {
        const struct kvx_jv *nt = kvx_jv_get(norm, "type");
        st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tokenizer.json: normalizer '%.30s' is not "
                         "supported (NFC or none)", nt && nt->type == KVX_JV_STRING ? nt->str : "?");
    } else if (!pre) {
        st = kvx_err_set(err, KVX_ERR_UNSUPPORTED, "tokenizer.json: this pre_tokenizer is not "
                         "one kvx knows (ByteLevel; Digits + ByteLevel; Split with the Llama-3 "
                         "or Qwen2 regex + ByteLevel)");
    } else if ((st = vocab_tokens(tj, model, def->n_vocab, &v, err)) == KVX_OK &&
               (st = vocab_merges(model, &v, err)) == KVX_OK &&
               (st = make_tokenizer(&v, pre, cfg, def, out, err)) == KVX_OK && chat_tmpl) {
        *chat_tmpl = chat_template(cfg);
    }
    vocab_free(&v);
    kvx_jv_free(tj);
    kvx_jv_free(cfg);
    free(tpath);
    free(cpath);
    return st;
}
