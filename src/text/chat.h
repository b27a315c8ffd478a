/* text/chat: chat templates.  kvx does not run Jinja: it recognises the template family the
 * model carries (tokenizer.chat_template) — ChatML (SmolLM2, Qwen), Llama 3, Mistral/Llama 2
 * [INST], Gemma — and renders it with the model's own default system prompt where the template
 * inserts one (e.g. SmolLM2's "You are a helpful AI assistant named SmolLM, ..."). */
#ifndef KVX_TEXT_CHAT_H
#define KVX_TEXT_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "kvx.h"

enum kvx_chat_family {
    KVX_CHAT_CHATML = 0,
    KVX_CHAT_LLAMA3,
    KVX_CHAT_INST,     /* [INST] ... [/INST] */
    KVX_CHAT_GEMMA,
};

/* Variants of the [INST] family, detected and rendered as llama.cpp's llama-chat.cpp does. */
enum kvx_chat_inst_style {
    KVX_CHAT_INST_LLAMA2 = 0,          /* "[INST] u [/INST]a</s>"; a system message as text */
    KVX_CHAT_INST_LLAMA2_SYS,          /* system message inside <<SYS>> ... <</SYS>> */
    KVX_CHAT_INST_LLAMA2_SYS_BOS,      /* ... and "<s>" before each later [INST] */
    KVX_CHAT_INST_LLAMA2_SYS_STRIP,    /* ... and every message trimmed */
    KVX_CHAT_INST_MISTRAL_V1,          /* " [INST] u [/INST] a</s>" */
    KVX_CHAT_INST_MISTRAL_V3,          /* "[INST] u[/INST] a</s>", assistant trimmed */
    KVX_CHAT_INST_MISTRAL_V3_TEKKEN,   /* "[INST]u[/INST]a</s>" */
    KVX_CHAT_INST_MISTRAL_V7,          /* "[SYSTEM_PROMPT] s[/SYSTEM_PROMPT][INST] u[/INST] a</s>" */
};

struct kvx_chat_template {
    enum kvx_chat_family family;
    char default_system[512];  /* system prompt the template adds when none is given, or "" */
    char bos[64];              /* BOS text the template writes itself, or "" */
    enum kvx_chat_inst_style inst;  /* KVX_CHAT_INST only */
};

/* Recognise the template text (NULL or "" -> ChatML with no default system prompt).
 * KVX_ERR_UNSUPPORTED when the template belongs to no known family. */
enum kvx_status kvx_chat_template_parse(const char *tmpl, size_t len,
                                        struct kvx_chat_template *out, struct kvx_err *err);

/* Render; *out is malloc'd (NUL-terminated).  The BOS named in t->bos is never written:
 * the tokenizer adds it (add_bos) when the model asks, and writing it here too would double
 * it.  ChatML inserts t->default_system as a first system message when the first message is
 * not a system one (as SmolLM2's and Qwen2's templates do); Llama 3 and Gemma trim message
 * contents, Gemma folds system messages into the next user turn and says "model" for
 * "assistant", [INST] templates have no generation prompt (llama.cpp's renderers).
 * KVX_ERR_INVALID_ARG when a message has a NULL role or content. */
enum kvx_status kvx_chat_template_render(const struct kvx_chat_template *t,
                                         const struct kvx_chat_msg *msgs, size_t n,
                                         bool add_generation_prompt, char **out,
                                         struct kvx_err *err);

#endif
