/* text/pretok: the pre-tokenizers of byte-level BPE vocabularies — the regex splits that
 * llama.cpp applies (src/llama-vocab.cpp, src/unicode.cpp) before BPE, written by hand.
 *
 * A pre-tokenizer is a table entry: the tokenizer.ggml.pre names it answers to and a short
 * list of split steps applied in order, each one refining the segments of the previous one
 * (a later step never merges across an earlier boundary).  Step kinds:
 *   RUN     isolate runs of a character class, `X{min,max}` / `X+`, leaving the gaps as
 *           segments too (llama.cpp's std::regex path: "\p{N}", "[0-9][0-9][0-9]", ...)
 *   GPT2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   LLAMA3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}
 *           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+      (k = 3, or 1 for Qwen2)
 * Adding a model's pre-tokenizer is adding a row to the table in pretok.c.
 * Works on code points; owns no memory beyond the caller's segment list. */
#ifndef KVX_TEXT_PRETOK_H
#define KVX_TEXT_PRETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

enum kvx_pretok_step_kind {
    KVX_PRETOK_STEP_RUN = 0,
    KVX_PRETOK_STEP_GPT2,
    KVX_PRETOK_STEP_LLAMA3,
};

struct kvx_pretok_step {
    enum kvx_pretok_step_kind kind;
    unsigned flags;             /* RUN: class = code points with any of these flags ... */
    const char *ascii;          /* ... or one of these ASCII characters (may be NULL) */
    uint32_t min, max;          /* RUN: run length bounds, max 0 = unbounded;
                                 * LLAMA3: max = digits per number group */
};

#define KVX_PRETOK_MAX_STEPS 4

struct kvx_pretok {
    const char *names;          /* the tokenizer.ggml.pre values, '|'-separated */
    int n_steps;
    struct kvx_pretok_step steps[KVX_PRETOK_MAX_STEPS];
    bool ignore_merges;         /* a whole word that is a token is emitted as is */
    bool add_bos;               /* llama.cpp's default for add_bos_token (GGUF overrides) */
};

/* The entry for tokenizer.ggml.pre `name` (len bytes; an empty name means "default"), or
 * NULL when kvx does not know it. */
const struct kvx_pretok *kvx_pretok_find(const char *name, size_t len);

/* A growable list of segment lengths, in code points. */
struct kvx_pretok_segs {
    size_t *len;
    size_t n, cap;
};
void kvx_pretok_segs_free(struct kvx_pretok_segs *s);

/* Split cps[0..n) into segments (their lengths, in order, summing to n) written to *out.
 * `tmp` is scratch (both lists are reused across calls; free them with
 * kvx_pretok_segs_free).  KVX_ERR_NOMEM on allocation failure. */
enum kvx_status kvx_pretok_split(const struct kvx_pretok *p, const uint32_t *cps, size_t n,
                                 struct kvx_pretok_segs *out, struct kvx_pretok_segs *tmp);

#endif
