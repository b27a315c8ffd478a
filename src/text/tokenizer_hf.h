/* text/tokenizer_hf: the tokenizer of a Hugging Face model folder (tokenizer.json, optional
 * tokenizer_config.json), byte-level BPE only; see tokenizer_hf.c for the translation. */
#ifndef KVX_TEXT_TOKENIZER_HF_H
#define KVX_TEXT_TOKENIZER_HF_H

#include <stdint.h>

#include "kvx.h"
#include "text/tokenizer.h"

struct kvx_tokenizer_hf_defaults {
    int32_t n_vocab;           /* the model's vocabulary (config.json vocab_size): ids up to it */
    int32_t bos_id, eos_id;    /* config.json's, used when tokenizer_config.json names none */
};

/* Create the tokenizer of `dir`.  KVX_ERR_NOT_FOUND (naming the file) when there is no
 * tokenizer.json; KVX_ERR_UNSUPPORTED for a kind of tokenizer kvx does not implement;
 * KVX_ERR_FORMAT for a malformed one.  *chat_tmpl (when not NULL) receives a malloc'd copy of
 * tokenizer_config.json's chat_template, or NULL. */
enum kvx_status kvx_tokenizer_create_hf(const char *dir,
                                        const struct kvx_tokenizer_hf_defaults *def,
                                        struct kvx_tokenizer **out, char **chat_tmpl,
                                        struct kvx_err *err);

#endif
