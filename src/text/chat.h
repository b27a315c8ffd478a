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

struct kvx_chat_template {
    enum kvx_chat_family family;
    char default_system[512];  /* system prompt the template adds when none is given, or "" */
    char bos[64];              /* BOS text the template writes itself, or "" */
};

/* Recognise the template text (NULL or "" -> ChatML with no default system prompt).
 * KVX_ERR_UNSUPPORTED when the template belongs to no known family. */
enum kvx_status kvx_chat_template_parse(const char *tmpl, size_t len,
                                        struct kvx_chat_template *out, struct kvx_err *err);

/* Render; *out is malloc'd. */
enum kvx_status kvx_chat_template_render(const struct kvx_chat_template *t,
                                         const struct kvx_chat_msg *msgs, size_t n,
                                         bool add_generation_prompt, char **out,
                                         struct kvx_err *err);

#endif
