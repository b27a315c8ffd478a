/* text/tokenizer: the tokenizer embedded in a GGUF file (tokenizer.ggml.*).
 *
 * Implemented: byte-level BPE (tokenizer.ggml.model = "gpt2") with the pre-tokenizer named by
 * tokenizer.ggml.pre (regex splits as llama.cpp applies them), merges by rank; SentencePiece
 * BPE (model "llama": merges by token score, <0xXX> byte fallback, U+2581 for spaces);
 * special tokens (token_type CONTROL / USER_DEFINED) matched in the text when parse_special
 * is set (USER_DEFINED ones always, as llama.cpp).
 * Encoding equals llama.cpp's (tests/fixtures/tokenizer_*.json, made by tools/reference).
 * The tokenizer borrows nothing from the GGUF after creation (it copies what it keeps).
 * After creation it is read-only: encode, piece and the getters may run on several threads
 * at once (encode allocates its scratch per call).
 *
 * Errors at creation: KVX_ERR_UNSUPPORTED naming the tokenizer.ggml.model or .pre value kvx
 * does not implement (the pre-tokenizers are listed in text/pretok.c); KVX_ERR_FORMAT for a
 * malformed vocabulary (missing merges, duplicate token texts, short token_type array). */
#ifndef KVX_TEXT_TOKENIZER_H
#define KVX_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/gguf.h"
#include "kvx.h"

struct kvx_tokenizer;

enum kvx_status kvx_tokenizer_create(const struct kvx_gguf *g, struct kvx_tokenizer **out,
                                     struct kvx_err *err);
void kvx_tokenizer_destroy(struct kvx_tokenizer *t);

int32_t kvx_tokenizer_n_vocab(const struct kvx_tokenizer *t);
int32_t kvx_tokenizer_bos(const struct kvx_tokenizer *t);   /* -1 if none */
int32_t kvx_tokenizer_eos(const struct kvx_tokenizer *t);   /* -1 if none */
bool kvx_tokenizer_add_bos(const struct kvx_tokenizer *t);  /* tokenizer.ggml.add_bos_token */
/* End of generation: eos, eot, <|im_end|> and the like. */
bool kvx_tokenizer_is_eog(const struct kvx_tokenizer *t, int32_t id);
/* Token id of an exact token text (e.g. "<|im_start|>"), or -1. */
int32_t kvx_tokenizer_find(const struct kvx_tokenizer *t, const char *text);

/* Same contract as kvx_tokenize in kvx.h.  add_bos is llama.cpp's add_special: BOS when
 * tokenizer.ggml.add_bos_token (or the pre-tokenizer's default) asks for it, and EOS at the
 * end when tokenizer.ggml.add_eos_token does.  Bytes that are not valid UTF-8 are encoded as
 * U+FFFD, one per byte, as llama.cpp does. */
enum kvx_status kvx_tokenizer_encode(const struct kvx_tokenizer *t, const char *text, size_t len,
                                     bool add_bos, bool parse_special, int32_t *out, int64_t cap,
                                     int64_t *n_out, struct kvx_err *err);
/* Same contract as kvx_token_piece in kvx.h (byte-level pieces decoded to raw bytes). */
size_t kvx_tokenizer_piece(const struct kvx_tokenizer *t, int32_t id, bool special, char *buf,
                           size_t cap);

#endif
