/* fuzz/fuzz_tokenizer.c: libFuzzer target for the tokenizer and the chat-template parser.
 *
 * The input's first byte picks the mode; the rest is text (any bytes, invalid UTF-8 included):
 *   even: encode with the default model's vocabulary (models/…gguf, or $KVX_FUZZ_MODEL), with
 *         and without special-token parsing, then decode every id back to bytes;
 *   odd:  parse the text as a chat template and render two messages with it.
 * AddressSanitizer and UBSan catch any out-of-bounds access or undefined behaviour. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "text/chat.h"
#include "text/tokenizer.h"

static struct kvx_tokenizer *tok; /* the harness's one-time setup (libFuzzer runs in-process) */
static int32_t ids[1 << 16];

static void setup(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *path = getenv("KVX_FUZZ_MODEL");
    struct kvx_gguf *g = NULL;
    if (kvx_gguf_open(path ? path : "models/SmolLM2-135M-Instruct.Q4_1.gguf", &g, NULL) != KVX_OK)
        abort(); /* the target needs the model: make model */
    if (kvx_tokenizer_create(g, &tok, NULL) != KVX_OK)
        abort();
    kvx_gguf_close(g);
}

static void fuzz_encode(const char *text, size_t len)
{
    for (int special = 0; special < 2; special++) {
        int64_t n = 0;
        const int64_t cap = (int64_t)(sizeof ids / sizeof ids[0]);
        if (kvx_tokenizer_encode(tok, text, len, false, special, ids, cap, &n, NULL) != KVX_OK)
            continue;
        char piece[256];
        for (int64_t i = 0; i < n && i < cap; i++)
            kvx_tokenizer_piece(tok, ids[i], true, piece, sizeof piece);
    }
}

static void fuzz_chat(const char *text, size_t len)
{
    struct kvx_chat_template t;
    if (kvx_chat_template_parse(text, len, &t, NULL) != KVX_OK)
        return;
    const struct kvx_chat_msg msgs[] = {{"system", "s"}, {"user", "u"}};
    char *out = NULL;
    if (kvx_chat_template_render(&t, msgs, 2, true, &out, NULL) == KVX_OK)
        free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    /* a NUL-terminated copy: the chat parser may treat the text as a C string */
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (data[0] & 1)
        fuzz_chat(text, size - 1);
    else
        fuzz_encode(text, size - 1);
    free(text);
    return 0;
}
