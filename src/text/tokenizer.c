/* text/tokenizer: the GGUF-embedded tokenizer (see tokenizer.h) — vocabulary loading,
 * special-token partitioning, byte-level BPE and SentencePiece encoding, piece decoding.
 *
 * Owns: its copy of the vocabulary (token texts, types), the BPE merge table, the special
 * token list and the end-of-generation set.  Does not own: pre-tokenizer rules
 * (text/pretok), Unicode tables (text/unicode), the GGUF file (borrowed during create only).
 *
 * Behaviour follows llama.cpp's llama-vocab.cpp so that ids match it exactly:
 *   - token types map to attributes; texts llama.cpp treats as control tokens (EOT/EOG/FIM
 *     names) get the control attribute even when the file says otherwise;
 *   - special tokens (control, user-defined, unknown) are cut out of the text before
 *     pre-tokenization, longest text first, each over the whole text; user-defined ones
 *     even when parse_special is false;
 *   - BPE: symbols start as single bytes (their GPT-2 printable form), the adjacent pair
 *     with the lowest merge rank (leftmost on ties) merges first;
 *   - a final symbol that is not a token is emitted byte by byte as llama.cpp does (each
 *     byte of its printable form looked up as a one-byte token, dropped when none);
 *   - SentencePiece ("llama"): no pre-tokenizer, spaces as U+2581 (plus one in front of text
 *     at the start or after a special token when add_space_prefix), the adjacent pair whose
 *     concatenation is the best-scoring token merges first, leftovers as <0xXX> tokens;
 *   - GGUF strings are cut at their first NUL and empty tokens renamed "[EMPTY_<id>]", as
 *     llama.cpp reads them.
 * Deliberate differences: F5..F7 lead bytes and 4-byte sequences above U+10FFFF become U+FFFD
 * (llama.cpp throws from inside llama_tokenize and aborts); an SPM byte with neither a
 * <0xXX> nor a one-character token becomes the unknown token (llama.cpp throws); among
 * equal-length special tokens and among several EOT/FIM candidate texts the lower id wins
 * (llama.cpp's order there is its hash map's); no model-name attribute hacks (llama.cpp's
 * lstrip/rstrip for Phi-3, Jina, ModernBERT).
 *
 * Merge strings are interned as "symbols": ids below n_vocab are tokens, ids above name
 * strings that occur in merges but are not tokens, so BPE runs on integers. */
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/pretok.h"
#include "text/unicode.h"
#include "util/err.h"

#define U2581 "\xe2\x96\x81"     /* SentencePiece's visible space */

/* Token attributes (llama.cpp's llama_token_attr subset) and our EOG bit. */
enum {
    ATTR_UNKNOWN = 0x01,
    ATTR_UNUSED = 0x02,
    ATTR_NORMAL = 0x04,
    ATTR_CONTROL = 0x08,
    ATTR_USER_DEFINED = 0x10,
    ATTR_BYTE = 0x20,
    ATTR_EOG = 0x80,
};

/* GGUF tokenizer.ggml.token_type values. */
enum {
    TYPE_UNDEFINED = 0,
    TYPE_NORMAL,
    TYPE_UNKNOWN,
    TYPE_CONTROL,
    TYPE_USER_DEFINED,
    TYPE_UNUSED,
    TYPE_BYTE,
};

struct merge_slot {
    uint64_t key;          /* (left symbol << 32) | right symbol; 0 = empty (ids are < 2^31) */
    int32_t rank;
    int32_t result;
};

struct kvx_tokenizer {
    int32_t n_vocab;
    int32_t n_syms;              /* tokens, then interned non-token merge strings */
    int32_t syms_cap;
    char *pool;                  /* all symbol texts */
    size_t pool_len, pool_cap;
    uint32_t *sym_off, *sym_len;
    uint8_t *attr;               /* per token */
    int32_t *hash;               /* open addressing: symbol id or -1 */
    size_t hash_cap;
    struct merge_slot *merges;
    size_t merges_cap;
    int32_t byte_sym[256];       /* BPE: symbol of each byte's printable form */
    const struct kvx_pretok *pre;/* BPE only */
    bool spm;                    /* SentencePiece ("llama") instead of byte-level BPE */
    bool add_space_prefix;       /* SPM: a space before text that starts the input or
                                  * follows a special token */
    float *scores;               /* SPM: per token */
    bool spm_split_words;        /* SPM: no token spans "x\u2581" (x not U+2581), so the text
                                  * can be merged word by word */
    int32_t byte_tok[256];       /* SPM: <0xXX> tokens (or the byte's own text), -1 */
    int32_t *special;            /* control/user-defined/unknown tokens, longest text first */
    int32_t n_special;
    int32_t bos, eos, eot, eom, unk, pad, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos;
};

/* ------------------------------------------------------------------------------------------
 * Symbol table */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static const char *sym_text(const struct kvx_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->sym_len[id];
    return t->pool + t->sym_off[id];
}

/* Slot of `s` in the hash table: where it is, or the empty slot where it would go. */
static size_t sym_slot(const struct kvx_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->hash_cap - 1, i = (size_t)hash_bytes(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        int32_t id = t->hash[i];
        if (id < 0)
            return i;
        if (t->sym_len[id] == n && memcmp(t->pool + t->sym_off[id], s, n) == 0)
            return i;
    }
}

static int32_t sym_find(const struct kvx_tokenizer *t, const char *s, size_t n)
{
    return t->hash[sym_slot(t, s, n)];
}

static bool sym_rehash(struct kvx_tokenizer *t, size_t cap)
{
    int32_t *h = malloc(cap * sizeof *h);
    if (!h)
        return false;
    for (size_t i = 0; i < cap; i++)
        h[i] = -1;
    free(t->hash);
    t->hash = h;
    t->hash_cap = cap;
    for (int32_t id = 0; id < t->n_syms; id++) {
        size_t n;
        const char *s = sym_text(t, id, &n);
        t->hash[sym_slot(t, s, n)] = id;
    }
    return true;
}

static bool grow(void **p, size_t elem, size_t need, size_t *cap)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

/* Append a new symbol with text s[0..n); returns its id or -1 (out of memory). */
static int32_t sym_add(struct kvx_tokenizer *t, const char *s, size_t n)
{
    if (t->n_syms >= INT32_MAX - 1 || n > UINT32_MAX)
        return -1;
    if (t->n_syms == t->syms_cap) {
        size_t cap = t->syms_cap ? (size_t)t->syms_cap * 2 : 1024;
        uint32_t *off = realloc(t->sym_off, cap * sizeof *off);
        if (off)
            t->sym_off = off;
        uint32_t *len = off ? realloc(t->sym_len, cap * sizeof *len) : NULL;
        if (!len)
            return -1;
        t->sym_len = len;
        t->syms_cap = (int32_t)(cap < INT32_MAX ? cap : INT32_MAX);
    }
    if (!grow((void **)&t->pool, 1, t->pool_len + n, &t->pool_cap) ||
        t->pool_len + n > UINT32_MAX)
        return -1;
    memcpy(t->pool + t->pool_len, s, n);
    int32_t id = t->n_syms++;
    t->sym_off[id] = (uint32_t)t->pool_len;
    t->sym_len[id] = (uint32_t)n;
    t->pool_len += n;
    if ((size_t)t->n_syms * 2 > t->hash_cap) {
        if (!sym_rehash(t, t->hash_cap ? t->hash_cap * 2 : 4096))
            return -1;
    } else {
        t->hash[sym_slot(t, s, n)] = id;
    }
    return id;
}

/* Id of text s[0..n), adding a non-token symbol when it is new; -1 when out of memory. */
static int32_t sym_intern(struct kvx_tokenizer *t, const char *s, size_t n)
{
    int32_t id = t->hash_cap ? sym_find(t, s, n) : -1;
    return id >= 0 ? id : sym_add(t, s, n);
}

/* llama.cpp reads GGUF strings as C strings: a token or merge text ends at its first NUL. */
static struct kvx_gguf_str c_string(struct kvx_gguf_str s)
{
    const char *nul = s.len ? memchr(s.ptr, '\0', s.len) : NULL;
    if (nul)
        s.len = (uint64_t)(nul - s.ptr);
    return s;
}

/* ------------------------------------------------------------------------------------------
 * Merge table: (left, right) -> (rank, result) */

static size_t merge_slot(const struct kvx_tokenizer *t, uint64_t key)
{
    size_t mask = t->merges_cap - 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (t->merges[i].key != 0 && t->merges[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static uint64_t merge_key(int32_t left, int32_t right)
{
    /* +1 keeps key 0 free as the empty marker. */
    return ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)right;
}

static const struct merge_slot *merge_find(const struct kvx_tokenizer *t, int32_t left,
                                           int32_t right)
{
    const struct merge_slot *m = &t->merges[merge_slot(t, merge_key(left, right))];
    return m->key ? m : NULL;
}

/* Parse merge line `s` ("left right", split at the first space after the first byte, as
 * llama.cpp does) and record it with `rank` unless the pair is already known. */
static enum kvx_status merge_add(struct kvx_tokenizer *t, struct kvx_gguf_str s, int32_t rank,
                                 char **scratch, size_t *scratch_cap)
{
    const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
    if (!sp)
        return KVX_OK;        /* llama.cpp records ("", "") — a pair BPE never meets */
    size_t nl = (size_t)(sp - s.ptr), nr = s.len - nl - 1;
    if (!grow((void **)scratch, 1, nl + nr, scratch_cap))
        return KVX_ERR_NOMEM;
    memcpy(*scratch, s.ptr, nl);
    memcpy(*scratch + nl, sp + 1, nr);
    int32_t l = sym_intern(t, s.ptr, nl);
    int32_t r = l >= 0 ? sym_intern(t, sp + 1, nr) : -1;
    int32_t m = r >= 0 ? sym_intern(t, *scratch, nl + nr) : -1;
    if (m < 0)
        return KVX_ERR_NOMEM;
    size_t i = merge_slot(t, merge_key(l, r));
    if (t->merges[i].key == 0)
        t->merges[i] = (struct merge_slot){merge_key(l, r), rank, m};
    return KVX_OK;
}

static enum kvx_status load_merges(struct kvx_tokenizer *t, const struct kvx_gguf *g,
                                   struct kvx_err *err)
{
    const struct kvx_gguf_value *arr;
    if (!kvx_gguf_find(g, "tokenizer.ggml.merges"))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: gpt2 vocabulary without "
                           "tokenizer.ggml.merges");
    enum kvx_status st = kvx_gguf_get_arr(g, "tokenizer.ggml.merges", KVX_GGUF_STRING, &arr, err);
    if (st)
        return st;
    if (arr->v.arr.n >= INT32_MAX)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: %llu merges",
                           (unsigned long long)arr->v.arr.n);
    size_t cap = 1024;
    while (cap < arr->v.arr.n * 2)
        cap *= 2;
    t->merges = calloc(cap, sizeof *t->merges);
    if (!t->merges)
        return kvx_err_set(err, KVX_ERR_NOMEM, "tokenizer: merge table");
    t->merges_cap = cap;
    char *scratch = NULL;
    size_t scratch_cap = 0;
    for (uint64_t i = 0; i < arr->v.arr.n && !st; i++)
        st = merge_add(t, c_string(arr->v.arr.strs[i]), (int32_t)i, &scratch, &scratch_cap);
    free(scratch);
    if (st)
        return kvx_err_set(err, st, "tokenizer: out of memory loading merges");
    return KVX_OK;
}

/* ------------------------------------------------------------------------------------------
 * Vocabulary */

static uint8_t attr_of_type(int64_t type)
{
    switch (type) {
    case TYPE_NORMAL: return ATTR_NORMAL;
    case TYPE_UNKNOWN: return ATTR_UNKNOWN;
    case TYPE_CONTROL: return ATTR_CONTROL;
    case TYPE_USER_DEFINED: return ATTR_USER_DEFINED;
    case TYPE_UNUSED: return ATTR_UNUSED;
    case TYPE_BYTE: return ATTR_BYTE;
    default: return 0;
    }
}

static enum kvx_status load_tokens(struct kvx_tokenizer *t, const struct kvx_gguf *g,
                                   struct kvx_err *err)
{
    const struct kvx_gguf_value *toks, *types = NULL;
    enum kvx_status st = kvx_gguf_get_arr(g, "tokenizer.ggml.tokens", KVX_GGUF_STRING, &toks, err);
    if (st)
        return st;
    uint64_t n = toks->v.arr.n;
    if (n == 0 || n >= INT32_MAX / 2)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: %llu tokens", (unsigned long long)n);
    if (kvx_gguf_find(g, "tokenizer.ggml.token_type")) {
        st = kvx_gguf_get_arr(g, "tokenizer.ggml.token_type", KVX_GGUF_INT32, &types, err);
        if (st)
            return st;
    }
    if (types && types->v.arr.n < n)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: %llu token types for %llu tokens",
                           (unsigned long long)types->v.arr.n, (unsigned long long)n);
    t->attr = malloc(n);
    if (!t->attr || !sym_rehash(t, 4096))
        return kvx_err_set(err, KVX_ERR_NOMEM, "tokenizer: vocabulary");
    char empty[32];
    for (uint64_t i = 0; i < n; i++) {
        struct kvx_gguf_str s = c_string(toks->v.arr.strs[i]);
        if (s.len == 0) {    /* llama.cpp renames empty tokens the same way */
            s.len = (uint64_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i);
            s.ptr = empty;
        }
        if (sym_find(t, s.ptr, s.len) >= 0)
            return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: duplicate token '%.*s' (id %llu)",
                               (int)(s.len < 64 ? s.len : 64), s.ptr, (unsigned long long)i);
        if (sym_add(t, s.ptr, s.len) < 0)
            return kvx_err_set(err, KVX_ERR_NOMEM, "tokenizer: vocabulary");
        t->attr[i] = types ? attr_of_type(kvx_gguf_arr_i64(types, i)) : ATTR_NORMAL;
    }
    t->n_vocab = (int32_t)n;
    return KVX_OK;
}

/* Special token ids: llama.cpp's defaults for the vocabulary type, then the GGUF keys
 * (an id outside the vocabulary keeps the default, as llama.cpp does). */
static void load_special_ids(struct kvx_tokenizer *t, const struct kvx_gguf *g)
{
    struct { const char *key; int32_t *id; } keys[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},
        {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.eot_token_id", &t->eot},
        {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.unknown_token_id", &t->unk},
        {"tokenizer.ggml.padding_token_id", &t->pad},
        {"tokenizer.ggml.fim_pad_token_id", &t->fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &t->fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &t->fim_sep},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int32_t *id = keys[i].id;
        if (*id >= t->n_vocab)
            *id = -1;
        uint32_t v;
        if (kvx_gguf_get_u32(g, keys[i].key, &v, NULL) == KVX_OK && v < (uint32_t)t->n_vocab)
            *id = (int32_t)v;
    }
    bool b;
    if (kvx_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b, NULL) == KVX_OK)
        t->add_space_prefix = b;
    if (kvx_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, NULL) == KVX_OK)
        t->add_bos = b;
    if (kvx_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b, NULL) == KVX_OK)
        t->add_eos = b;
}

/* ------------------------------------------------------------------------------------------
 * Special tokens and end of generation, by text as llama.cpp (llama_vocab::impl::load) */

static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
    "<end_of_utterance>", NULL};
static const char *const EOM_TEXTS[] = {"<|eom_id|>", NULL};
static const char *const FIM_PRE_TEXTS[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
    "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const FIM_SUF_TEXTS[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>",
    "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const FIM_MID_TEXTS[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
    "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const FIM_PAD_TEXTS[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const FIM_REP_TEXTS[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~[", NULL};
static const char *const ALWAYS_RENDERED_TEXTS[] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

int32_t kvx_tokenizer_find(const struct kvx_tokenizer *t, const char *text)
{
    if (!t || !text)
        return -1;
    int32_t id = sym_find(t, text, strlen(text));
    return id < t->n_vocab ? id : -1;
}

/* When *slot is unset, the first token (in id order; llama.cpp walks a hash map) whose text
 * is in `texts` becomes it and is made a control token. */
static void detect_by_text(struct kvx_tokenizer *t, int32_t *slot, const char *const *texts)
{
    if (*slot >= 0)
        return;
    int32_t best = -1;
    for (const char *const *p = texts; *p; p++) {
        int32_t id = kvx_tokenizer_find(t, *p);
        if (id >= 0 && (best < 0 || id < best))
            best = id;
    }
    if (best >= 0) {
        *slot = best;
        t->attr[best] |= ATTR_CONTROL;
    }
}

static void mark_eog(struct kvx_tokenizer *t, int32_t id)
{
    if (id >= 0 && id < t->n_vocab)
        t->attr[id] |= ATTR_EOG;
}

/* llama.cpp's workarounds: gpt-oss / solar-open keep <|end|> out of EOG when <|return|> and
 * <|call|> (or <|calls|> and <|flush|>) exist; gemma4 / paddleocr keep </s> out when
 * <|tool_response> exists. */
static void eog_workarounds(struct kvx_tokenizer *t)
{
    int32_t end = kvx_tokenizer_find(t, "<|end|>"), s = kvx_tokenizer_find(t, "</s>");
    bool is_ret = false, is_call = false, is_flush = false, is_tool = false;
    const char *names[] = {"<|return|>", "<|call|>", "<|calls|>", "<|flush|>", "<|tool_response>"};
    bool *flags[] = {&is_ret, &is_call, &is_call, &is_flush, &is_tool};
    for (int i = 0; i < 5; i++) {
        int32_t id = kvx_tokenizer_find(t, names[i]);
        if (id >= 0 && (t->attr[id] & ATTR_EOG))
            *flags[i] = true;
    }
    if (end >= 0 && (t->attr[end] & ATTR_EOG) && is_call && (is_ret || is_flush))
        t->attr[end] = ATTR_USER_DEFINED;
    if (s >= 0 && (t->attr[s] & ATTR_EOG) && is_tool)
        t->attr[s] = ATTR_NORMAL;
}

static void detect_special(struct kvx_tokenizer *t)
{
    int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1;
    detect_by_text(t, &t->eot, EOT_TEXTS);
    detect_by_text(t, &t->eom, EOM_TEXTS);
    detect_by_text(t, &fim_pre, FIM_PRE_TEXTS);
    detect_by_text(t, &fim_suf, FIM_SUF_TEXTS);
    detect_by_text(t, &fim_mid, FIM_MID_TEXTS);
    detect_by_text(t, &t->fim_pad, FIM_PAD_TEXTS);
    detect_by_text(t, &t->fim_rep, FIM_REP_TEXTS);
    detect_by_text(t, &t->fim_sep, FIM_SEP_TEXTS);
    mark_eog(t, t->fim_pad);
    mark_eog(t, t->fim_rep);
    mark_eog(t, t->fim_sep);
    for (const char *const *p = EOG_TEXTS; *p; p++) {
        int32_t id = kvx_tokenizer_find(t, *p);
        if (id >= 0)
            t->attr[id] |= ATTR_CONTROL | ATTR_EOG;
    }
    for (const char *const *p = ALWAYS_RENDERED_TEXTS; *p; p++) {
        int32_t id = kvx_tokenizer_find(t, *p);
        if (id >= 0)
            t->attr[id] = (uint8_t)((t->attr[id] & ATTR_EOG) | ATTR_USER_DEFINED);
    }
    mark_eog(t, t->eos);
    mark_eog(t, t->eot);
    mark_eog(t, t->eom);
    eog_workarounds(t);
}

/* Order of the special list: longer text first, then lower id. */
static bool special_before(const struct kvx_tokenizer *t, int32_t x, int32_t y)
{
    if (t->sym_len[x] != t->sym_len[y])
        return t->sym_len[x] > t->sym_len[y];
    return x < y;
}

/* Insertion sort by (length desc, id asc): the special list is short, and qsort_r is not
 * portable C11.  llama.cpp's std::sort leaves equal lengths in unspecified order. */
static enum kvx_status build_special_list(struct kvx_tokenizer *t)
{
    int32_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        n += (t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) != 0;
    t->special = malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!t->special)
        return KVX_ERR_NOMEM;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!(t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)))
            continue;
        int32_t j = t->n_special++;
        while (j > 0 && special_before(t, id, t->special[j - 1])) {
            t->special[j] = t->special[j - 1];
            j--;
        }
        t->special[j] = id;
    }
    return KVX_OK;
}

/* SPM: token scores (tokenizer.ggml.scores, float or int; 0 when absent). */
static bool find_u2581(const char *s, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, U2581, 3) == 0)
            return true;
    return false;
}

static enum kvx_status load_scores(struct kvx_tokenizer *t, const struct kvx_gguf *g,
                                   struct kvx_err *err)
{
    t->scores = calloc((size_t)t->n_vocab, sizeof *t->scores);
    if (!t->scores)
        return kvx_err_set(err, KVX_ERR_NOMEM, "tokenizer: scores");
    const struct kvx_gguf_kv *kv = kvx_gguf_find(g, "tokenizer.ggml.scores");
    if (!kv)
        return KVX_OK;
    const struct kvx_gguf_value *v = &kv->val;
    if (v->type != KVX_GGUF_ARRAY ||
        (v->v.arr.elem != KVX_GGUF_FLOAT32 && v->v.arr.elem != KVX_GGUF_INT32))
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: tokenizer.ggml.scores is not an "
                           "array of float32 or int32");
    if (v->v.arr.n < (uint64_t)t->n_vocab)
        return kvx_err_set(err, KVX_ERR_FORMAT, "tokenizer: %llu scores for %d tokens",
                           (unsigned long long)v->v.arr.n, t->n_vocab);
    for (int32_t i = 0; i < t->n_vocab; i++)
        t->scores[i] = (float)kvx_gguf_arr_f64(v, (uint64_t)i);
    return KVX_OK;
}

/* SPM: true when every token has U+2581 only in a leading run.  Then no merge can join a
 * non-space character to a following U+2581 (every merge forms a token), and each such
 * boundary splits the text into parts that merge independently, with the same result as
 * one global queue (llama.cpp's) but a small queue per part. */
static bool spm_words_independent(const struct kvx_tokenizer *t)
{
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t n, lead = 0;
        const char *s = sym_text(t, id, &n);
        while (lead + 3 <= n && memcmp(s + lead, U2581, 3) == 0)
            lead += 3;
        if (lead < n && find_u2581(s + lead, n - lead))
            return false;
    }
    return true;
}

/* SPM byte fallback: "<0xXX>", else the byte's own one-character text (llama.cpp's
 * byte_to_token; where it finds neither it throws, we use the unknown token). */
static void load_byte_tokens(struct kvx_tokenizer *t)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        char one = (char)b;
        int32_t id = sym_find(t, name, 6);
        if (id < 0)
            id = sym_find(t, &one, 1);
        t->byte_tok[b] = id >= 0 ? id : t->unk;
    }
}

static enum kvx_status load_byte_symbols(struct kvx_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t n = kvx_utf8_encode(kvx_unicode_byte_to_cp((uint8_t)b), u);
        t->byte_sym[b] = sym_intern(t, (const char *)u, n);
        if (t->byte_sym[b] < 0)
            return KVX_ERR_NOMEM;
    }
    return KVX_OK;
}

/* tokenizer.ggml.model and .pre: which algorithm and which pre-tokenizer. */
static enum kvx_status load_model_kind(struct kvx_tokenizer *t, const struct kvx_gguf *g,
                                       struct kvx_err *err)
{
    struct kvx_gguf_str model, pre = {0, ""};
    enum kvx_status st = kvx_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (st)
        return st;
    if (kvx_gguf_str_eq(model, "llama")) {
        /* llama.cpp's SPM defaults; the GGUF keys override them later. */
        t->spm = t->add_bos = t->add_space_prefix = true;
        t->unk = 0;
        t->bos = 1;
        t->eos = 2;
        return KVX_OK;
    }
    if (!kvx_gguf_str_eq(model, "gpt2"))
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                           "tokenizer: tokenizer.ggml.model '%.*s' is not supported (only "
                           "byte-level BPE 'gpt2' and SentencePiece 'llama')",
                           (int)(model.len < 64 ? model.len : 64), model.ptr);
    if (kvx_gguf_find(g, "tokenizer.ggml.pre")) {
        st = kvx_gguf_get_str(g, "tokenizer.ggml.pre", &pre, err);
        if (st)
            return st;
    }
    t->pre = kvx_pretok_find(pre.ptr, pre.len);
    if (!t->pre)
        return kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                           "tokenizer: pre-tokenizer tokenizer.ggml.pre '%.*s' is not supported",
                           (int)(pre.len < 64 ? pre.len : 64), pre.ptr);
    t->add_bos = t->pre->add_bos;
    t->bos = t->eos = 11;              /* llama.cpp's BPE defaults when the keys are absent */
    return KVX_OK;
}

void kvx_tokenizer_destroy(struct kvx_tokenizer *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->sym_off);
    free(t->sym_len);
    free(t->attr);
    free(t->hash);
    free(t->merges);
    free(t->special);
    free(t->scores);
    free(t);
}

enum kvx_status kvx_tokenizer_create(const struct kvx_gguf *g, struct kvx_tokenizer **out,
                                     struct kvx_err *err)
{
    if (!g || !out)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "tokenizer: NULL argument");
    *out = NULL;
    struct kvx_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return kvx_err_set(err, KVX_ERR_NOMEM, "tokenizer: out of memory");
    t->bos = t->eos = t->eot = t->eom = t->unk = t->pad = -1;
    t->fim_pad = t->fim_rep = t->fim_sep = -1;
    enum kvx_status st = load_model_kind(t, g, err);
    if (!st)
        st = load_tokens(t, g, err);
    if (!st && t->spm)
        st = load_scores(t, g, err);
    if (!st && !t->spm)
        st = load_merges(t, g, err);
    if (!st && !t->spm && (st = load_byte_symbols(t)) != KVX_OK)
        kvx_err_set(err, st, "tokenizer: out of memory");
    if (!st) {
        load_special_ids(t, g);
        if (t->spm) {
            load_byte_tokens(t);
            t->spm_split_words = spm_words_independent(t);
        }
        detect_special(t);
        if ((st = build_special_list(t)) != KVX_OK)
            kvx_err_set(err, st, "tokenizer: out of memory");
    }
    if (!st && t->add_bos && t->bos < 0)
        st = kvx_err_set(err, KVX_ERR_FORMAT,
                         "tokenizer: add_bos_token is true but there is no BOS token");
    if (st) {
        kvx_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return KVX_OK;
}

int32_t kvx_tokenizer_n_vocab(const struct kvx_tokenizer *t) { return t->n_vocab; }
int32_t kvx_tokenizer_bos(const struct kvx_tokenizer *t) { return t->bos; }
int32_t kvx_tokenizer_eos(const struct kvx_tokenizer *t) { return t->eos; }
bool kvx_tokenizer_add_bos(const struct kvx_tokenizer *t) { return t->add_bos; }

bool kvx_tokenizer_is_eog(const struct kvx_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_vocab && (t->attr[id] & ATTR_EOG);
}

/* ------------------------------------------------------------------------------------------
 * Encoding */

struct sym {
    int32_t id;            /* BPE: symbol id; -1 once merged into its left neighbour */
    int32_t prev, next;
    size_t off, n;         /* SPM: bytes of the (escaped) text; n = 0 once merged */
};

/* A candidate merge of symbols left and right.  BPE: by merge rank, valid while the two
 * symbols still have ids lid, rid.  SPM: by the merged token's score, valid while the two
 * still span `size` bytes. */
struct bigram {
    int32_t left, right;
    union {
        struct { int32_t rank, lid, rid; } bpe;
        struct { float score; uint32_t size; } spm;
    } u;                   /* 20 bytes: the heap of a long SPM text is memory-bound */
};

/* Per-call scratch; everything is freed at the end of the call. */
struct enc {
    const struct kvx_tokenizer *t;
    int32_t *ids;
    size_t n_ids, ids_cap;
    uint32_t *cps;
    size_t cps_cap;
    uint8_t *bytes;
    size_t bytes_cap;
    char *word;                  /* byte-level (printable) form, for ignore_merges */
    size_t word_cap;
    struct sym *syms;
    size_t syms_cap;
    struct bigram *heap;
    size_t heap_n, heap_cap;
    struct kvx_pretok_segs segs, tmp;
    bool oom;
};

static void enc_free(struct enc *e)
{
    free(e->ids);
    free(e->cps);
    free(e->bytes);
    free(e->word);
    free(e->syms);
    free(e->heap);
    kvx_pretok_segs_free(&e->segs);
    kvx_pretok_segs_free(&e->tmp);
}

static void emit_id(struct enc *e, int32_t id)
{
    if (!grow((void **)&e->ids, sizeof *e->ids, e->n_ids + 1, &e->ids_cap)) {
        e->oom = true;
        return;
    }
    e->ids[e->n_ids++] = id;
}

/* Pop order.  BPE: lowest rank first (llm_bigram_bpe::comparator); SPM: highest score
 * first (llm_bigram_spm::comparator); ties: leftmost first. */
static bool bigram_before(bool spm, const struct bigram *a, const struct bigram *b)
{
    if (spm)
        return a->u.spm.score > b->u.spm.score ||
               (a->u.spm.score == b->u.spm.score && a->left < b->left);
    return a->u.bpe.rank < b->u.bpe.rank || (a->u.bpe.rank == b->u.bpe.rank && a->left < b->left);
}

static void heap_push(struct enc *e, struct bigram b)
{
    if (!grow((void **)&e->heap, sizeof *e->heap, e->heap_n + 1, &e->heap_cap)) {
        e->oom = true;
        return;
    }
    size_t i = e->heap_n++;
    while (i > 0 && bigram_before(e->t->spm, &b, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = b;
}

static struct bigram heap_pop(struct enc *e)
{
    struct bigram top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && bigram_before(e->t->spm, &e->heap[c + 1], &e->heap[c]))
            c++;
        if (!bigram_before(e->t->spm, &e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_pair(struct enc *e, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const struct merge_slot *m = merge_find(e->t, e->syms[left].id, e->syms[right].id);
    if (m)
        heap_push(e, (struct bigram){left, right,
                                     {.bpe = {m->rank, e->syms[left].id, e->syms[right].id}}});
}

/* A final symbol that is not a token: llama.cpp looks each byte of its printable text up
 * as a one-byte token and drops the bytes that are none. */
static void emit_fallback(struct enc *e, int32_t sym)
{
    size_t n;
    const char *s = sym_text(e->t, sym, &n);
    for (size_t i = 0; i < n; i++) {
        int32_t id = sym_find(e->t, s + i, 1);
        if (id >= 0 && id < e->t->n_vocab)
            emit_id(e, id);
    }
}

/* ignore_merges: a word whose byte-level text is a token is that token. */
static bool whole_word_token(struct enc *e, const uint8_t *b, size_t n)
{
    if (!grow((void **)&e->word, 1, n * 2, &e->word_cap)) {
        e->oom = true;
        return false;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += kvx_utf8_encode(kvx_unicode_byte_to_cp(b[i]), (uint8_t *)e->word + len);
    int32_t id = sym_find(e->t, e->word, len);
    if (id < 0 || id >= e->t->n_vocab)
        return false;
    emit_id(e, id);
    return true;
}

/* BPE over one pre-tokenized word of n raw bytes. */
static void bpe_word(struct enc *e, const uint8_t *b, size_t n)
{
    if (e->t->pre->ignore_merges && whole_word_token(e, b, n))
        return;
    if (n > INT32_MAX || !grow((void **)&e->syms, sizeof *e->syms, n, &e->syms_cap)) {
        e->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        e->syms[i] = (struct sym){e->t->byte_sym[b[i]], (int32_t)i - 1,
                                  i + 1 < n ? (int32_t)i + 1 : -1, 0, 0};
    e->heap_n = 0;
    for (size_t i = 1; i < n; i++)
        try_pair(e, (int32_t)i - 1, (int32_t)i);
    while (e->heap_n > 0 && !e->oom) {
        struct bigram bg = heap_pop(e);
        struct sym *l = &e->syms[bg.left], *r = &e->syms[bg.right];
        if (l->id != bg.u.bpe.lid || r->id != bg.u.bpe.rid || l->next != bg.right)
            continue;                   /* outdated: a neighbour merged since */
        l->id = merge_find(e->t, bg.u.bpe.lid, bg.u.bpe.rid)->result;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = bg.left;
        try_pair(e, l->prev, bg.left);
        try_pair(e, bg.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = e->syms[i].next) {
        int32_t id = e->syms[i].id;
        if (id < e->t->n_vocab)
            emit_id(e, id);
        else
            emit_fallback(e, id);
    }
}

/* Decode, pre-tokenize and BPE one fragment of plain text. */
static void encode_text(struct enc *e, const char *text, size_t len)
{
    if (!grow((void **)&e->cps, sizeof *e->cps, len, &e->cps_cap)) {
        e->oom = true;
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        e->cps[n++] = kvx_utf8_decode((const uint8_t *)text + i, len - i, &used);
        i += used;
    }
    if (kvx_pretok_split(e->t->pre, e->cps, n, &e->segs, &e->tmp) != KVX_OK) {
        e->oom = true;
        return;
    }
    size_t start = 0;
    for (size_t s = 0; s < e->segs.n && !e->oom; s++) {
        size_t cn = e->segs.len[s], bn = 0;
        if (!grow((void **)&e->bytes, 1, cn * 4, &e->bytes_cap)) {
            e->oom = true;
            return;
        }
        /* Re-encode: invalid input bytes became U+FFFD, as in llama.cpp. */
        for (size_t i = start; i < start + cn; i++)
            bn += kvx_utf8_encode(e->cps[i], e->bytes + bn);
        bpe_word(e, e->bytes, bn);
        start += cn;
    }
}

/* ------------------------------------------------------------------------------------------
 * SentencePiece (llama.cpp's llm_tokenizer_spm_session): spaces become U+2581, symbols start
 * as UTF-8 characters, the adjacent pair whose concatenation is the highest-scoring token
 * merges first; a final symbol that is no token is written as byte tokens. */

static void spm_pair(struct enc *e, const char *txt, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const struct sym *l = &e->syms[left], *r = &e->syms[right];
    size_t size = l->n + r->n;
    int32_t id = sym_find(e->t, txt + l->off, size);
    if (id >= 0 && id < e->t->n_vocab)
        heap_push(e, (struct bigram){left, right, {.spm = {e->t->scores[id], (uint32_t)size}}});
}

/* Escape: optional leading space, then ' ' -> U+2581, into e->word. */
static size_t spm_escape(struct enc *e, const char *text, size_t len, bool prefix)
{
    if (!grow((void **)&e->word, 1, 3 * len + 3, &e->word_cap)) {
        e->oom = true;
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < len + prefix; i++) {
        char c = prefix ? (i == 0 ? ' ' : text[i - 1]) : text[i];
        if (c == ' ') {
            memcpy(e->word + n, U2581, 3);
            n += 3;
        } else {
            e->word[n++] = c;
        }
    }
    return n;
}

static void spm_emit(struct enc *e, const char *txt, const struct sym *s)
{
    int32_t id = sym_find(e->t, txt + s->off, s->n);
    if (id >= 0 && id < e->t->n_vocab) {
        emit_id(e, id);
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        int32_t b = e->t->byte_tok[(uint8_t)txt[s->off + i]];
        if (b >= 0)
            emit_id(e, b);
    }
}

/* The merge loop over characters txt[start, end). */
static void spm_merge(struct enc *e, const char *txt, size_t start, size_t end)
{
    size_t count = 0;
    for (size_t off = start; off < end; count++) {
        size_t cl = kvx_utf8_len((uint8_t)txt[off]);
        cl = cl < end - off ? cl : end - off;
        e->syms[count] = (struct sym){0, (int32_t)count - 1,
                                      off + cl < end ? (int32_t)count + 1 : -1, off, cl};
        off += cl;
    }
    e->heap_n = 0;
    for (size_t i = 1; i < count; i++)
        spm_pair(e, txt, (int32_t)i - 1, (int32_t)i);
    while (e->heap_n > 0 && !e->oom) {
        struct bigram bg = heap_pop(e);
        struct sym *l = &e->syms[bg.left], *r = &e->syms[bg.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.u.spm.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = bg.left;
        spm_pair(e, txt, l->prev, bg.left);
        spm_pair(e, txt, bg.left, l->next);
    }
    for (int32_t i = 0; count > 0 && i >= 0 && !e->oom; i = e->syms[i].next)
        spm_emit(e, txt, &e->syms[i]);
}

static void spm_text(struct enc *e, const char *text, size_t len, bool prefix)
{
    size_t n = spm_escape(e, text, len, prefix), start = 0;
    const char *txt = e->word;
    if (e->oom || n == 0)
        return;
    if (n >= INT32_MAX || !grow((void **)&e->syms, sizeof *e->syms, n, &e->syms_cap)) {
        e->oom = true;
        return;
    }
    bool prev_space = true;
    for (size_t off = 0; off < n && e->t->spm_split_words;) {
        size_t cl = kvx_utf8_len((uint8_t)txt[off]);
        cl = cl < n - off ? cl : n - off;
        bool space = cl == 3 && memcmp(txt + off, U2581, 3) == 0;
        if (space && !prev_space) {
            spm_merge(e, txt, start, off);
            start = off;
        }
        prev_space = space;
        off += cl;
    }
    spm_merge(e, txt, start, n);
}

struct frag {
    int32_t tok;           /* a special token, or -1 for text[off, off + len) */
    size_t off, len;
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static bool frags_push(struct frags *f, struct frag x)
{
    if (!grow((void **)&f->v, sizeof *f->v, f->n + 1, &f->cap))
        return false;
    f->v[f->n++] = x;
    return true;
}

static const char *find_bytes(const char *h, size_t hn, const char *s, size_t sn)
{
    if (sn == 0 || sn > hn)
        return NULL;
    const char *end = h + hn - sn + 1;
    for (const char *p = h; p < end; p++) {
        p = memchr(p, s[0], (size_t)(end - p));
        if (!p)
            return NULL;
        if (memcmp(p, s, sn) == 0)
            return p;
    }
    return NULL;
}

/* Cut every occurrence of token `id` out of the text fragments of *in into *out. */
static bool split_on_token(const struct kvx_tokenizer *t, const char *text, int32_t id,
                           const struct frags *in, struct frags *out)
{
    size_t sn;
    const char *s = sym_text(t, id, &sn);
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct frag f = in->v[i];
        if (f.tok >= 0) {
            if (!frags_push(out, f))
                return false;
            continue;
        }
        size_t off = f.off, end = f.off + f.len;
        const char *m;
        while ((m = find_bytes(text + off, end - off, s, sn)) != NULL) {
            size_t at = (size_t)(m - text);
            if (at > off && !frags_push(out, (struct frag){-1, off, at - off}))
                return false;
            if (!frags_push(out, (struct frag){id, at, sn}))
                return false;
            off = at + sn;
        }
        if (off < end && !frags_push(out, (struct frag){-1, off, end - off}))
            return false;
    }
    return true;
}

/* llama.cpp's tokenizer_st_partition. */
static bool partition(const struct kvx_tokenizer *t, const char *text, size_t len,
                      bool parse_special, struct frags *a)
{
    struct frags b = {0};
    a->n = 0;
    if (len > 0 && !frags_push(a, (struct frag){-1, 0, len}))
        return false;
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN)))
            continue;
        size_t sn;
        const char *s = sym_text(t, id, &sn);
        bool found = false;
        for (size_t i = 0; i < a->n && !found; i++)
            found = a->v[i].tok < 0 && find_bytes(text + a->v[i].off, a->v[i].len, s, sn);
        if (!found)
            continue;
        if (!split_on_token(t, text, id, a, &b)) {
            free(b.v);
            return false;
        }
        struct frags x = *a;
        *a = b;
        b = x;
    }
    free(b.v);
    return true;
}

enum kvx_status kvx_tokenizer_encode(const struct kvx_tokenizer *t, const char *text, size_t len,
                                     bool add_bos, bool parse_special, int32_t *out, int64_t cap,
                                     int64_t *n_out, struct kvx_err *err)
{
    if (!t || !n_out || (!text && len) || cap < 0 || (!out && cap > 0))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "tokenize: bad argument");
    *n_out = 0;
    struct enc e = {.t = t};
    struct frags fr = {0};
    if (add_bos && t->add_bos && t->bos >= 0)
        emit_id(&e, t->bos);
    if (!partition(t, text, len, parse_special, &fr))
        e.oom = true;
    bool prev_special = true;          /* SPM: the start counts as after a special token */
    for (size_t i = 0; i < fr.n && !e.oom; i++) {
        if (fr.v[i].tok >= 0)
            emit_id(&e, fr.v[i].tok);
        else if (t->spm)
            spm_text(&e, text + fr.v[i].off, fr.v[i].len, t->add_space_prefix && prev_special);
        else
            encode_text(&e, text + fr.v[i].off, fr.v[i].len);
        prev_special = fr.v[i].tok >= 0;
    }
    if (add_bos && t->add_eos && t->eos >= 0)
        emit_id(&e, t->eos);
    free(fr.v);
    enum kvx_status st = KVX_OK;
    if (e.oom) {
        st = kvx_err_set(err, KVX_ERR_NOMEM, "tokenize: out of memory (%zu bytes of text)", len);
    } else {
        *n_out = (int64_t)e.n_ids;
        size_t n = e.n_ids < (uint64_t)cap ? e.n_ids : (size_t)cap;
        if (n)
            memcpy(out, e.ids, n * sizeof *out);
        if ((int64_t)e.n_ids > cap)
            st = kvx_err_set(err, KVX_ERR_INVALID_ARG, "tokenize: %zu tokens do not fit in %lld",
                             e.n_ids, (long long)cap);
    }
    enc_free(&e);
    return st;
}

/* ------------------------------------------------------------------------------------------
 * Pieces */

struct sink {
    char *buf;
    size_t cap, n;
};

static void put(struct sink *s, const void *p, size_t n)
{
    if (s->n < s->cap)
        memcpy(s->buf + s->n, p, s->n + n <= s->cap ? n : s->cap - s->n);
    s->n += n;
}

/* Byte-level text back to bytes; a code point outside the mapping is written the way
 * llama.cpp's llama_decode_text does: "[UNK_BYTE_0x<utf8 hex><whole token text>]". */
static void put_decoded(struct sink *s, const char *text, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t used;
        uint32_t cp = kvx_utf8_decode((const uint8_t *)text + i, n - i, &used);
        int b = kvx_unicode_cp_to_byte(cp);
        if (b >= 0) {
            uint8_t c = (uint8_t)b;
            put(s, &c, 1);
        } else {
            uint8_t u[4];
            size_t un = kvx_utf8_encode(cp, u);
            char hex[3];
            put(s, "[UNK_BYTE_0x", 12);
            for (size_t k = 0; k < un; k++) {
                snprintf(hex, sizeof hex, "%02x", u[k]);
                put(s, hex, 2);
            }
            put(s, text, n);
            put(s, "]", 1);
        }
        i += used;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 0;
}

size_t kvx_tokenizer_piece(const struct kvx_tokenizer *t, int32_t id, bool special, char *buf,
                           size_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab)
        return 0;
    struct sink s = {buf, buf ? cap : 0, 0};
    uint8_t a = t->attr[id];
    size_t n;
    const char *text = sym_text(t, id, &n);
    if (a & (ATTR_CONTROL | ATTR_UNKNOWN)) {
        if (special)
            put(&s, text, n);
    } else if (a & ATTR_USER_DEFINED) {
        put(&s, text, n);
    } else if ((a & ATTR_NORMAL) && t->spm) {
        for (size_t i = 0; i < n; i++) {           /* U+2581 back to ' ' */
            if (n - i >= 3 && memcmp(text + i, U2581, 3) == 0) {
                put(&s, " ", 1);
                i += 2;
            } else {
                put(&s, text + i, 1);
            }
        }
    } else if (a & ATTR_NORMAL) {
        put_decoded(&s, text, n);
    } else if ((a & ATTR_BYTE) && n >= 5) {          /* "<0xXX>" */
        char c = (char)(hexval(text[3]) * 16 + hexval(text[4]));
        put(&s, &c, 1);
    }
    return s.n;
}
