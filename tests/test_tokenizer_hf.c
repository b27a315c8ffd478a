/* tests/test_tokenizer_hf: tokenizers from Hugging Face tokenizer.json (text/tokenizer_hf.c)
 * against the `tokenizers` library.
 *
 * tests/fixtures/arch/tokenizer_<kind>/ holds a tiny byte-level BPE tokenizer.json of each
 * pre-tokenizer layout kvx recognises (gpt2, smollm, llama3, qwen2) and encodings.json, the
 * ids `tokenizers` gives a list of strings (tools/reference/gen_hf_tokenizer_fixtures.py).  kvx
 * must give the same ids for every string (special tokens parsed, no BOS).  Also: padding to
 * the model's vocabulary, EOS from tokenizer_config.json, a model folder with a tokenizer
 * encodes text, and the errors for tokenizers kvx does not implement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_mini.h"
#include "kvx.h"
#include "test.h"
#include "text/tokenizer_hf.h"

static void check_set(const char *kind)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tokenizer_%s", kvx_test_fixture("arch"), kind);
    snprintf(path, sizeof path, "%s/encodings.json", dir);
    char jerr[256];
    struct kvx_json *j = kvx_json_parse_file(path, jerr, sizeof jerr);
    if (!j) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", path, jerr);
        return;
    }
    const int32_t n_vocab = (int32_t)kvx_json_num(j, "vocab", 0);
    /* the model's vocabulary is larger than the tokenizer's: padded */
    const struct kvx_tokenizer_hf_defaults def = {.n_vocab = n_vocab + 7, .bos_id = -1,
                                                  .eos_id = -1};
    struct kvx_tokenizer *t = NULL;
    struct kvx_err err = {0};
    if (kvx_tokenizer_create_hf(dir, &def, &t, NULL, &err) != KVX_OK) {
        kvx_test_fail(__FILE__, __LINE__, "%s: %s", kind, err.msg);
        kvx_json_free(j);
        return;
    }
    KVX_CHECK_EQ_INT(kvx_tokenizer_n_vocab(t), n_vocab + 7);
    KVX_CHECK_EQ_INT(kvx_tokenizer_eos(t), kvx_tokenizer_find(t, "<|endoftext|>"));
    KVX_CHECK(kvx_tokenizer_is_eog(t, kvx_tokenizer_find(t, "<|im_end|>")));
    const struct kvx_json *enc = kvx_json_get(j, "encodings");
    int ok = 0, n = 0;
    for (size_t i = 0; enc && i < enc->len; i++, n++) {
        const struct kvx_json *e = kvx_json_at(enc, i), *ids = kvx_json_get(e, "ids"),
                              *text = kvx_json_get(e, "text");
        int32_t got[512];
        int64_t n_got = 0;
        if (kvx_tokenizer_encode(t, text->str, text->len, false, true, got, 512, &n_got, &err) !=
            KVX_OK) {
            kvx_test_fail(__FILE__, __LINE__, "%s: '%s': %s", kind, text->str, err.msg);
            continue;
        }
        bool same = (size_t)n_got == ids->len;
        for (size_t k = 0; same && k < ids->len; k++)
            same = got[k] == (int32_t)kvx_json_at(ids, k)->num;
        if (same)
            ok++;
        else
            kvx_test_fail(__FILE__, __LINE__, "%s: '%s': %lld ids, transformers %zu", kind,
                          text->str, (long long)n_got, ids->len);
    }
    fprintf(stderr, "  %-7s %d/%d strings match tokenizers\n", kind, ok, n);
    KVX_CHECK(n >= 20);
    kvx_tokenizer_destroy(t);
    kvx_json_free(j);
}

KVX_TEST(tokenizer_hf_matches_tokenizers)
{
    static const char *const kinds[] = {"gpt2", "smollm", "llama3", "qwen2"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        check_set(kinds[i]);
}

/* A model folder with tokenizer.json encodes text; its chat template comes along. */
KVX_TEST(tokenizer_hf_model_folder)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen3_qknorm", kvx_test_fixture("arch"));
    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = dir;
    struct kvx_model *m = NULL;
    struct kvx_err err = {0};
    KVX_CHECK(kvx_model_open(&mc, &m, &err) == KVX_OK);
    if (!m)
        return;
    struct kvx_model_info info;
    kvx_model_get_info(m, &info);
    KVX_CHECK(info.has_tokenizer && info.n_vocab == 384 && !info.add_bos);
    int32_t ids[64];
    int64_t n = 0;
    KVX_CHECK(kvx_tokenize(m, "Hello world", 11, true, false, ids, 64, &n, &err) == KVX_OK && n > 1);
    char text[256] = "";
    size_t len = 0;
    for (int64_t i = 0; i < n && len < sizeof text - 64; i++) {
        size_t l = kvx_token_piece(m, ids[i], false, text + len, 63);
        len += l < 63 ? l : 63;
    }
    text[len] = '\0';
    KVX_CHECK(strcmp(text, "Hello world") == 0);   /* pieces decode back */
    struct kvx_chat_msg msg = {"user", "Hi"};
    char *out = NULL;
    KVX_CHECK(kvx_chat_render(m, &msg, 1, true, &out, &err) == KVX_OK && out &&
              strstr(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    free(out);
    kvx_model_close(m);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    KVX_CHECK(f && fputs(text, f) >= 0);
    if (f)
        fclose(f);
}

KVX_TEST(tokenizer_hf_refusals)
{
    char dir[] = "/tmp/kvx-tokhf-XXXXXX";
    if (!mkdtemp(dir)) {
        kvx_test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    const struct kvx_tokenizer_hf_defaults def = {.n_vocab = 10, .bos_id = -1, .eos_id = -1};
    const struct { const char *json; enum kvx_status want; const char *needle; } cases[] = {
        {NULL, KVX_ERR_NOT_FOUND, "tokenizer.json"},
        {"{\"model\": {\"type\": \"Unigram\"}}", KVX_ERR_UNSUPPORTED, "byte-level BPE"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true}}", KVX_ERR_UNSUPPORTED,
         "byte_fallback"},
        {"{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\"}}",
         KVX_ERR_UNSUPPORTED, "Lowercase"},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\"}}",
         KVX_ERR_UNSUPPORTED, "pre_tokenizer"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {\"a\": 0, \"b\": 12}, \"merges\": []}}", KVX_ERR_FORMAT, "'b'"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", KVX_ERR_FORMAT, "id 0"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {\"a\": 0}, \"merges\": [3]}}", KVX_ERR_FORMAT, "merges[0]"},
        {"{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", "
         "\"vocab\": {\"a\": 0}, \"merges\": []", KVX_ERR_FORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(path);
        if (cases[i].json)
            write_text(path, cases[i].json);
        struct kvx_tokenizer *t = NULL;
        struct kvx_err err = {0};
        enum kvx_status st = kvx_tokenizer_create_hf(dir, &def, &t, NULL, &err);
        if (st != cases[i].want || t || !strstr(err.msg, cases[i].needle))
            kvx_test_fail(__FILE__, __LINE__, "case %zu: status %d, '%s'", i, st, err.msg);
        kvx_tokenizer_destroy(t);
    }
    unlink(path);
    rmdir(dir);
}
