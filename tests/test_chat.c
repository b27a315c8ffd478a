/* tests/test_chat: text/chat against jinja2 renderings of real templates (SmolLM2's own, from
 * the model file, and public ChatML/Llama 3/Gemma/[INST] templates), stored in the tokenizer
 * fixture by tools/reference/gen_tokenizer_fixtures.py; plus family detection, default system
 * prompt extraction and argument errors. */
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "json_mini.h"
#include "test.h"
#include "text/chat.h"

#define FIXTURE "tokenizer_smollm2.json"
#define SMOLLM2_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static struct kvx_json *load_fixture(void)
{
    char msg[256] = "";
    struct kvx_json *fx = kvx_json_parse_file(kvx_test_fixture(FIXTURE), msg, sizeof msg);
    if (!fx)
        kvx_test_fail(__FILE__, __LINE__, "fixture: %s", msg);
    return fx;
}

/* Render one fixture case; returns the malloc'd text or NULL. */
static char *render_case(const struct kvx_json *fx, const struct kvx_json *c, struct kvx_err *err)
{
    const char *name = kvx_json_str(c, "template", "");
    const char *tmpl = kvx_json_str(kvx_json_get(fx, "chat_templates"), name, NULL);
    const struct kvx_json *ms = kvx_json_get(c, "messages");
    if (!tmpl || !ms)
        return NULL;
    struct kvx_chat_template t;
    if (kvx_chat_template_parse(tmpl, strlen(tmpl), &t, err) != KVX_OK)
        return NULL;
    struct kvx_chat_msg msgs[16];
    size_t n = ms->len < 16 ? ms->len : 16;
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = kvx_json_str(kvx_json_at(ms, i), "role", NULL);
        msgs[i].content = kvx_json_str(kvx_json_at(ms, i), "content", NULL);
    }
    char *out = NULL;
    kvx_chat_template_render(&t, msgs, n, kvx_json_bool(c, "add_generation_prompt", false), &out,
                             err);
    return out;
}

KVX_TEST(chat_matches_jinja)
{
    struct kvx_json *fx = load_fixture();
    if (!fx)
        return;
    const struct kvx_json *cases = kvx_json_get(fx, "chat");
    KVX_CHECK(cases && cases->len >= 20);
    size_t n_model = 0;
    for (size_t i = 0; cases && i < cases->len; i++) {
        const struct kvx_json *c = kvx_json_at(cases, i);
        struct kvx_err err = {0};
        char *got = render_case(fx, c, &err);
        const char *want = kvx_json_str(c, "expected", "");
        if (!got || strcmp(got, want) != 0)
            kvx_test_fail(__FILE__, __LINE__, "chat[%zu] (%s): got \"%s\" want \"%s\" %s", i,
                          kvx_json_str(c, "template", ""), got ? got : "(null)", want, err.msg);
        n_model += strcmp(kvx_json_str(c, "template", ""), "model") == 0;
        free(got);
    }
    KVX_CHECK(n_model >= 6);
    kvx_json_free(fx);
}

/* The exact string the brief asks for: SmolLM2, [user: "Hello"], generation prompt. */
KVX_TEST(chat_smollm2_hello)
{
    struct kvx_json *fx = load_fixture();
    if (!fx)
        return;
    const char *tmpl = kvx_json_str(kvx_json_get(fx, "chat_templates"), "model", "");
    struct kvx_chat_template t;
    KVX_CHECK(kvx_chat_template_parse(tmpl, strlen(tmpl), &t, NULL) == KVX_OK);
    KVX_CHECK(t.family == KVX_CHAT_CHATML);
    KVX_CHECK(strcmp(t.default_system, SMOLLM2_SYSTEM) == 0);
    struct kvx_chat_msg hello = {"user", "Hello"};
    char *out = NULL;
    KVX_CHECK(kvx_chat_template_render(&t, &hello, 1, true, &out, NULL) == KVX_OK);
    KVX_CHECK(out && strcmp(out, "<|im_start|>system\n" SMOLLM2_SYSTEM "<|im_end|>\n"
                                 "<|im_start|>user\nHello<|im_end|>\n"
                                 "<|im_start|>assistant\n") == 0);
    free(out);
    kvx_json_free(fx);
}

/* The template in the model file is the one the fixture was rendered from. */
KVX_TEST(chat_model_template)
{
    const char *path = kvx_test_model_path();
    if (!path) {
        kvx_test_skip("model not present");
        return;
    }
    struct kvx_gguf *g = NULL;
    struct kvx_gguf_str s = {0, NULL};
    KVX_CHECK(kvx_gguf_open(path, &g, NULL) == KVX_OK);
    if (!g)
        return;
    KVX_CHECK(kvx_gguf_get_str(g, "tokenizer.chat_template", &s, NULL) == KVX_OK);
    struct kvx_chat_template t;
    KVX_CHECK(kvx_chat_template_parse(s.ptr, s.len, &t, NULL) == KVX_OK);
    KVX_CHECK(t.family == KVX_CHAT_CHATML && strcmp(t.default_system, SMOLLM2_SYSTEM) == 0);
    struct kvx_json *fx = load_fixture();
    if (fx) {
        const char *want = kvx_json_str(kvx_json_get(fx, "chat_templates"), "model", "");
        KVX_CHECK(strlen(want) == s.len && memcmp(want, s.ptr, s.len) == 0);
        kvx_json_free(fx);
    }
    kvx_gguf_close(g);
}

static struct kvx_chat_template parse_ok(const char *tmpl)
{
    struct kvx_chat_template t;
    struct kvx_err err = {0};
    if (kvx_chat_template_parse(tmpl, tmpl ? strlen(tmpl) : 0, &t, &err) != KVX_OK)
        kvx_test_fail(__FILE__, __LINE__, "parse: %s", err.msg);
    return t;
}

/* The default prompt comes from the template text, whatever it says, escaped or not. */
KVX_TEST(chat_default_system_from_template)
{
    struct kvx_chat_template t = parse_ok(
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe \\'brief\\'.\\n"
        "Really.<|im_end|>\\n' }}{% endif %}");
    KVX_CHECK(strcmp(t.default_system, "Be 'brief'.\nReally.") == 0);
    /* An expression after the header is not a default prompt; a later literal is. */
    t = parse_ok("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}"
                 "{{ '<|im_start|>system\nOther.<|im_end|>\n' }}");
    KVX_CHECK(strcmp(t.default_system, "Other.") == 0);
    t = parse_ok("{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' }}");
    KVX_CHECK(t.family == KVX_CHAT_CHATML && t.default_system[0] == '\0');
    t = parse_ok(NULL);
    KVX_CHECK(t.family == KVX_CHAT_CHATML && t.default_system[0] == '\0');
    /* With no messages the Jinja loop never runs, so no default system message either. */
    t = parse_ok("'<|im_start|>system\\nX<|im_end|>'");
    char *out = NULL;
    KVX_CHECK(kvx_chat_template_render(&t, NULL, 0, true, &out, NULL) == KVX_OK);
    KVX_CHECK(out && strcmp(out, "<|im_start|>assistant\n") == 0);
    free(out);
}

KVX_TEST(chat_family_detection)
{
    struct kvx_chat_template t = parse_ok("{{ bos_token }}<|start_header_id|>x<|end_header_id|>");
    KVX_CHECK(t.family == KVX_CHAT_LLAMA3 && strcmp(t.bos, "<|begin_of_text|>") == 0);
    t = parse_ok("<start_of_turn>user");
    KVX_CHECK(t.family == KVX_CHAT_GEMMA && t.bos[0] == '\0');
    t = parse_ok("{{ '[INST] ' + content + ' [/INST]' }}");
    KVX_CHECK(t.family == KVX_CHAT_INST && t.inst == KVX_CHAT_INST_LLAMA2);
    t = parse_ok("[INST] <<SYS>>");
    KVX_CHECK(t.inst == KVX_CHAT_INST_LLAMA2_SYS);
    t = parse_ok("{{ bos_token + '[INST] ' + content.strip() }}<<SYS>>");
    KVX_CHECK(t.inst == KVX_CHAT_INST_LLAMA2_SYS_STRIP && strcmp(t.bos, "<s>") == 0);
    t = parse_ok("[SYSTEM_PROMPT][INST]");
    KVX_CHECK(t.inst == KVX_CHAT_INST_MISTRAL_V7);
    t = parse_ok("[AVAILABLE_TOOLS][INST]");
    KVX_CHECK(t.inst == KVX_CHAT_INST_MISTRAL_V3);
    struct kvx_err err = {0};
    KVX_CHECK(kvx_chat_template_parse("### Human: {{ x }}", 18, &t, &err) == KVX_ERR_UNSUPPORTED);
    KVX_CHECK(strstr(err.msg, "### Human") != NULL);
    KVX_CHECK(kvx_chat_template_parse("<|im_start|><|im_sep|>", 22, &t, &err) ==
              KVX_ERR_UNSUPPORTED);
}

KVX_TEST(chat_inst_and_gemma_rendering)
{
    struct kvx_chat_msg conv[] = {{"system", " Be brief. "}, {"user", " Hi "},
                                  {"assistant", "Hello"}, {"user", "Bye"}};
    struct kvx_chat_template t = parse_ok("[INST] <<SYS>>");
    char *out = NULL;
    KVX_CHECK(kvx_chat_template_render(&t, conv, 4, true, &out, NULL) == KVX_OK);
    KVX_CHECK(out && strcmp(out, "[INST] <<SYS>>\n Be brief. \n<</SYS>>\n\n Hi  [/INST]"
                                 "Hello</s>[INST] Bye [/INST]") == 0);
    free(out);
    t = parse_ok("<start_of_turn>");
    KVX_CHECK(kvx_chat_template_render(&t, conv, 4, true, &out, NULL) == KVX_OK);
    KVX_CHECK(out && strcmp(out, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                                 "<start_of_turn>model\nHello<end_of_turn>\n"
                                 "<start_of_turn>user\nBye<end_of_turn>\n"
                                 "<start_of_turn>model\n") == 0);
    free(out);
}

KVX_TEST(chat_bad_arguments)
{
    struct kvx_chat_template t = parse_ok("<|im_start|>");
    struct kvx_chat_msg bad = {"user", NULL};
    char *out = (char *)"untouched";
    struct kvx_err err = {0};
    KVX_CHECK(kvx_chat_template_render(&t, &bad, 1, true, &out, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(out == NULL && strstr(err.msg, "message 0") != NULL);
    KVX_CHECK(kvx_chat_template_render(&t, NULL, 2, true, &out, &err) == KVX_ERR_INVALID_ARG);
    KVX_CHECK(kvx_chat_template_parse(NULL, 5, &t, &err) == KVX_ERR_INVALID_ARG);
}
