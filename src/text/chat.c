/* text/chat: template-family recognition and rendering (see chat.h).
 *
 * Owns: reading a Jinja chat template closely enough to know its family and the default
 * system prompt it inserts, and rendering conversations in that family's format.  It does
 * not evaluate Jinja.  Family detection follows llama.cpp's llm_chat_detect_template (same
 * marker strings, same order); rendering follows llama.cpp's llm_chat_apply_template,
 * except that ChatML also inserts the template's own default system prompt, as the Jinja
 * template does (llama.cpp's built-in ChatML renderer omits it). */
#include "text/chat.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

static bool has(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    if (k == 0 || k > n)
        return k == 0;
    for (size_t i = 0; i + k <= n; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, k) == 0)
            return true;
    return false;
}

static const char *find(const char *s, size_t n, size_t from, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = from; i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

/* Read the literal after `p` up to "<|im_end|>", undoing Jinja string escapes.  Fails (false)
 * when the literal ends first (a quote: the prompt is an expression, not text). */
static bool read_literal(const char *p, const char *end, char *out, size_t cap, size_t *len)
{
    static const char esc_from[] = "n't\"\\r", esc_to[] = "\n'\t\"\\\r";
    size_t n = 0;
    while (p < end) {
        if ((size_t)(end - p) >= 10 && memcmp(p, "<|im_end|>", 10) == 0) {
            *len = n;
            return n > 0;
        }
        char c = *p++;
        if (c == '\'' || c == '"')
            return false;
        if (c == '\\' && p < end) {
            const char *k = strchr(esc_from, *p);
            if (!k || !*p)
                return false;
            c = esc_to[k - esc_from];
            p++;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = c;
    }
    return false;
}

/* The default system prompt of a ChatML template: a string literal
 * "<|im_start|>system\n<text><|im_end|>" ("\n" written as a newline or as an escape). */
static enum kvx_status chatml_default_system(const char *s, size_t n, struct kvx_chat_template *t,
                                             struct kvx_err *err)
{
    static const char head[] = "<|im_start|>system";
    for (const char *p = find(s, n, 0, head); p; p = find(s, n, (size_t)(p - s) + 1, head)) {
        const char *q = p + sizeof head - 1, *end = s + n;
        if (q < end && *q == '\n')
            q++;
        else if (end - q >= 2 && q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        size_t len;
        char buf[2048];
        if (!read_literal(q, end, buf, sizeof buf, &len))
            continue;
        if (len >= sizeof t->default_system)
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                               "chat template: default system prompt of %zu bytes (max %zu)", len,
                               sizeof t->default_system - 1);
        memcpy(t->default_system, buf, len);
        t->default_system[len] = '\0';
        return KVX_OK;
    }
    return KVX_OK;
}

/* llama.cpp's [INST] variant detection. */
static enum kvx_chat_inst_style inst_style(const char *s, size_t n)
{
    if (has(s, n, "[SYSTEM_PROMPT]"))
        return KVX_CHAT_INST_MISTRAL_V7;
    if (has(s, n, "' [INST] ' + system_message") || has(s, n, "[AVAILABLE_TOOLS]")) {
        if (has(s, n, " [INST]"))
            return KVX_CHAT_INST_MISTRAL_V1;
        if (has(s, n, "\"[INST]\""))
            return KVX_CHAT_INST_MISTRAL_V3_TEKKEN;
        return KVX_CHAT_INST_MISTRAL_V3;
    }
    if (has(s, n, "content.strip()"))
        return KVX_CHAT_INST_LLAMA2_SYS_STRIP;
    if (has(s, n, "bos_token + '[INST]"))
        return KVX_CHAT_INST_LLAMA2_SYS_BOS;
    if (has(s, n, "<<SYS>>"))
        return KVX_CHAT_INST_LLAMA2_SYS;
    return KVX_CHAT_INST_LLAMA2;
}

static void set_bos(struct kvx_chat_template *t, const char *s, size_t n, const char *bos)
{
    if (has(s, n, "bos_token") || has(s, n, bos))
        strcpy(t->bos, bos);
}

enum kvx_status kvx_chat_template_parse(const char *tmpl, size_t len,
                                        struct kvx_chat_template *out, struct kvx_err *err)
{
    if (!out || (!tmpl && len))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "chat template: NULL argument");
    memset(out, 0, sizeof *out);
    out->family = KVX_CHAT_CHATML;
    if (len == 0)
        return KVX_OK;
    if (has(tmpl, len, "<|im_start|>")) {
        if (has(tmpl, len, "<|im_sep|>") || has(tmpl, len, "<end_of_utterance>"))
            return kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                               "chat template: ChatML variant (Phi-4 / SmolVLM) not supported");
        return chatml_default_system(tmpl, len, out, err);
    }
    if ((len >= 7 && memcmp(tmpl, "mistral", 7) == 0) || has(tmpl, len, "[INST]")) {
        out->family = KVX_CHAT_INST;
        out->inst = inst_style(tmpl, len);
        set_bos(out, tmpl, len, "<s>");
        return KVX_OK;
    }
    if (has(tmpl, len, "<start_of_turn>")) {
        out->family = KVX_CHAT_GEMMA;
        set_bos(out, tmpl, len, "<bos>");
        return KVX_OK;
    }
    if (has(tmpl, len, "<|start_header_id|>") && has(tmpl, len, "<|end_header_id|>")) {
        out->family = KVX_CHAT_LLAMA3;
        set_bos(out, tmpl, len, "<|begin_of_text|>");
        return KVX_OK;
    }
    return kvx_err_set(err, KVX_ERR_UNSUPPORTED,
                       "chat template: unknown family (not ChatML, Llama 3, [INST] or Gemma): "
                       "\"%.60s...\"", tmpl);
}

/* ------------------------------------------------------------------------------------------
 * Rendering */

struct buf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void put_n(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void put(struct buf *b, const char *s)
{
    put_n(b, s, strlen(s));
}

/* s without leading and trailing C-locale spaces (llama.cpp's trim, Jinja's |trim). */
static void put_trimmed(struct buf *b, const char *s)
{
    size_t i = 0, n = strlen(s);
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    while (n > i && isspace((unsigned char)s[n - 1]))
        n--;
    put_n(b, s + i, n - i);
}

static bool is_role(const struct kvx_chat_msg *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

static void render_chatml(const struct kvx_chat_template *t, const struct kvx_chat_msg *m,
                          size_t n, bool gen, struct buf *b)
{
    if (t->default_system[0] && n > 0 && !is_role(&m[0], "system")) {
        put(b, "<|im_start|>system\n");
        put(b, t->default_system);
        put(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, m[i].role);
        put(b, "\n");
        put(b, m[i].content);
        put(b, "<|im_end|>\n");
    }
    if (gen)
        put(b, "<|im_start|>assistant\n");
}

static void render_llama3(const struct kvx_chat_msg *m, size_t n, bool gen, struct buf *b)
{
    for (size_t i = 0; i < n; i++) {
        put(b, "<|start_header_id|>");
        put(b, m[i].role);
        put(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m[i].content);
        put(b, "<|eot_id|>");
    }
    if (gen)
        put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* System messages are folded into the next user turn (Gemma has no system role). */
static void render_gemma(const struct kvx_chat_msg *m, size_t n, bool gen, struct buf *b)
{
    struct buf sys = {0};
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "system")) {
            put_trimmed(&sys, m[i].content);
            continue;
        }
        bool model = is_role(&m[i], "assistant");
        put(b, "<start_of_turn>");
        put(b, model ? "model" : m[i].role);
        put(b, "\n");
        if (sys.n && !model) {
            put_n(b, sys.p, sys.n);
            put(b, "\n\n");
            sys.n = 0;
        }
        put_trimmed(b, m[i].content);
        put(b, "<end_of_turn>\n");
    }
    b->oom |= sys.oom;
    free(sys.p);
    if (gen)
        put(b, "<start_of_turn>model\n");
}

static void render_mistral_v7(const struct kvx_chat_msg *m, size_t n, struct buf *b)
{
    for (size_t i = 0; i < n; i++) {
        bool sys = is_role(&m[i], "system"), user = is_role(&m[i], "user");
        put(b, sys ? "[SYSTEM_PROMPT] " : user ? "[INST] " : " ");
        put(b, m[i].content);
        put(b, sys ? "[/SYSTEM_PROMPT]" : user ? "[/INST]" : "</s>");
    }
}

static void render_mistral(enum kvx_chat_inst_style st, const struct kvx_chat_msg *m, size_t n,
                           struct buf *b)
{
    const char *lead = st == KVX_CHAT_INST_MISTRAL_V1 ? " " : "";
    const char *trail = st == KVX_CHAT_INST_MISTRAL_V3_TEKKEN ? "" : " ";
    bool in_turn = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            put(b, lead);
            put(b, "[INST]");
            put(b, trail);
            in_turn = true;
        }
        if (is_role(&m[i], "system")) {
            put(b, m[i].content);
            put(b, "\n\n");
        } else if (is_role(&m[i], "user")) {
            put(b, m[i].content);
            put(b, lead);
            put(b, "[/INST]");
        } else {
            put(b, trail);
            if (st == KVX_CHAT_INST_MISTRAL_V3)
                put_trimmed(b, m[i].content);
            else
                put(b, m[i].content);
            put(b, "</s>");
            in_turn = false;
        }
    }
}

static void render_llama2(enum kvx_chat_inst_style st, const struct kvx_chat_msg *m, size_t n,
                          struct buf *b)
{
    bool in_turn = true;               /* the first [INST] is written up front, no <s> */
    put(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            in_turn = true;
            put(b, st == KVX_CHAT_INST_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
        }
        struct buf c = {0};
        if (st == KVX_CHAT_INST_LLAMA2_SYS_STRIP)
            put_trimmed(&c, m[i].content);
        else
            put(&c, m[i].content);
        const char *content = c.p ? c.p : "";
        if (is_role(&m[i], "system")) {
            bool sys = st != KVX_CHAT_INST_LLAMA2;
            put(b, sys ? "<<SYS>>\n" : "");
            put(b, content);
            put(b, sys ? "\n<</SYS>>\n\n" : "\n");
        } else if (is_role(&m[i], "user")) {
            put(b, content);
            put(b, " [/INST]");
        } else {
            put(b, content);
            put(b, "</s>");
            in_turn = false;
        }
        b->oom |= c.oom;
        free(c.p);
    }
}

static void render_inst(const struct kvx_chat_template *t, const struct kvx_chat_msg *m, size_t n,
                        struct buf *b)
{
    switch (t->inst) {
    case KVX_CHAT_INST_MISTRAL_V7: render_mistral_v7(m, n, b); break;
    case KVX_CHAT_INST_MISTRAL_V1:
    case KVX_CHAT_INST_MISTRAL_V3:
    case KVX_CHAT_INST_MISTRAL_V3_TEKKEN: render_mistral(t->inst, m, n, b); break;
    default: render_llama2(t->inst, m, n, b); break;
    }
}

enum kvx_status kvx_chat_template_render(const struct kvx_chat_template *t,
                                         const struct kvx_chat_msg *msgs, size_t n,
                                         bool add_generation_prompt, char **out,
                                         struct kvx_err *err)
{
    if (!t || !out || (!msgs && n))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "chat render: NULL argument");
    *out = NULL;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                               "chat render: message %zu has no %s", i,
                               msgs[i].role ? "content" : "role");
    struct buf b = {0};
    put(&b, "");
    switch (t->family) {
    case KVX_CHAT_CHATML: render_chatml(t, msgs, n, add_generation_prompt, &b); break;
    case KVX_CHAT_LLAMA3: render_llama3(msgs, n, add_generation_prompt, &b); break;
    case KVX_CHAT_GEMMA: render_gemma(msgs, n, add_generation_prompt, &b); break;
    case KVX_CHAT_INST: render_inst(t, msgs, n, &b); break;
    default:
        free(b.p);
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "chat render: bad family %d", t->family);
    }
    if (b.oom) {
        free(b.p);
        return kvx_err_set(err, KVX_ERR_NOMEM, "chat render: out of memory");
    }
    *out = b.p;
    return KVX_OK;
}
