/* examples/generate.c — the smallest complete use of libkvx: load a model, feed a prompt,
 * generate greedily, print the text and the KV cache statistics.  Uses only include/kvx.h.
 *
 *   build/examples/generate MODEL.gguf "The capital of France is" [N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvx.h"

static int fail(const struct kvx_err *err)
{
    fprintf(stderr, "generate: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [N]\n", argv[0]);
        return 1;
    }
    const int n_predict = argc > 3 ? atoi(argv[3]) : 32;
    struct kvx_err err = {0};

    struct kvx_model_cfg mc = kvx_model_cfg_default();
    mc.path = argv[1];
    struct kvx_model *model;
    if (kvx_model_open(&mc, &model, &err) != KVX_OK)
        return fail(&err);
    struct kvx_model_info info;
    kvx_model_get_info(model, &info);

    struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    ec.n_ctx = 2048;
    struct kvx_engine *engine;
    if (kvx_engine_create(model, &ec, &engine, &err) != KVX_OK)
        return fail(&err);
    struct kvx_session *session;
    if (kvx_session_create(engine, &session, &err) != KVX_OK)
        return fail(&err);

    int32_t ids[1024];
    int64_t n_ids;
    if (kvx_tokenize(model, argv[2], strlen(argv[2]), info.add_bos, false, ids, 1024, &n_ids,
                     &err) != KVX_OK)
        return fail(&err);

    struct kvx_sampler_cfg sc = kvx_sampler_cfg_default();
    sc.temperature = 0; /* greedy */
    struct kvx_sampler *sampler;
    if (kvx_sampler_create(&sc, info.n_vocab, &sampler, &err) != KVX_OK)
        return fail(&err);

    float *logits = malloc((size_t)info.n_vocab * sizeof *logits);
    if (!logits || kvx_session_feed(session, ids, n_ids, false, logits, &err) != KVX_OK)
        return fail(&err);
    fputs(argv[2], stdout);
    for (int i = 0; i < n_predict; i++) {
        int32_t tok = kvx_sampler_sample(sampler, logits);
        if (kvx_token_is_eog(model, tok))
            break;
        char piece[128];
        size_t n = kvx_token_piece(model, tok, false, piece, sizeof piece);
        fwrite(piece, 1, n < sizeof piece ? n : sizeof piece, stdout);
        if (kvx_session_feed(session, &tok, 1, false, logits, &err) != KVX_OK)
            return fail(&err);
    }
    putchar('\n');

    struct kvx_kv_stats kv;
    kvx_engine_kv_stats(engine, &kv);
    fprintf(stderr, "KV: %lld tokens, %zu bytes/token, %zu bytes in %lld pages\n",
            (long long)kv.tokens_cached, kv.bytes_per_token, kv.bytes_used,
            (long long)kv.pages_used);

    free(logits);
    kvx_sampler_destroy(sampler);
    kvx_session_destroy(session);
    kvx_engine_destroy(engine);
    kvx_model_close(model);
    return 0;
}
