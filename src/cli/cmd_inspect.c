/* cli/cmd_inspect: `kvx inspect MODEL` — metadata (GGUF keys, or config.json), tensor table,
 * and the per-layer KV cache declaration with bytes/token as kv/layout computes them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/common.h"
#include "engine/engine.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kv/layout.h"
#include "model/model.h"
#include "ops/dtype.h"
#include "util/json.h"

static void print_value(const struct kvx_gguf_value *v)
{
    switch (v->type) {
    case KVX_GGUF_STRING: {
        const uint64_t n = v->v.str.len < 80 ? v->v.str.len : 80;
        putchar('"');
        for (uint64_t i = 0; i < n; i++) {
            char c = v->v.str.ptr[i];
            putchar(c == '\n' ? ' ' : c);
        }
        printf("%s\"", v->v.str.len > 80 ? "..." : "");
        break;
    }
    case KVX_GGUF_ARRAY:
        printf("[%s x %llu]", kvx_gguf_type_name(v->v.arr.elem), (unsigned long long)v->v.arr.n);
        break;
    case KVX_GGUF_FLOAT32: case KVX_GGUF_FLOAT64: printf("%g", v->v.f64); break;
    case KVX_GGUF_BOOL: printf("%s", v->v.b ? "true" : "false"); break;
    case KVX_GGUF_INT8: case KVX_GGUF_INT16: case KVX_GGUF_INT32: case KVX_GGUF_INT64:
        printf("%lld", (long long)v->v.i64);
        break;
    default: printf("%llu", (unsigned long long)v->v.u64); break;
    }
}

static int print_file(const char *path)
{
    struct kvx_gguf *g;
    struct kvx_err err = {0};
    if (kvx_gguf_open(path, &g, &err) != KVX_OK)
        return cli_fail_err(&err);
    printf("file: %s\nGGUF v%u, %llu metadata keys, %llu tensors, alignment %llu\n\nmetadata:\n",
           path, g->version, (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors,
           (unsigned long long)g->alignment);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        printf("  %-44.*s ", (int)g->kv[i].key.len, g->kv[i].key.ptr);
        print_value(&g->kv[i].val);
        putchar('\n');
    }
    printf("\ntensors:\n  %-36s %-6s %-22s %12s\n", "name", "type", "shape", "bytes");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const struct kvx_gguf_tensor *t = &g->tensors[i];
        char shape[64] = "";
        size_t n = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", d ? " x " : "",
                                  (long long)t->ne[d]);
        printf("  %-36.*s %-6s %-22s %12zu\n", (int)t->name.len, t->name.ptr,
               kvx_dtype_name(t->type), shape, t->nbytes);
    }
    kvx_gguf_close(g);
    return 0;
}

static void print_json_scalar(const struct kvx_jv *v)
{
    switch (v->type) {
    case KVX_JV_NULL: printf("null"); break;
    case KVX_JV_BOOL: printf("%s", v->b ? "true" : "false"); break;
    case KVX_JV_NUMBER:
        if (v->is_int)
            printf("%lld", (long long)v->i);
        else
            printf("%g", v->num);
        break;
    case KVX_JV_STRING: printf("\"%.80s%s\"", v->str, v->len > 80 ? "..." : ""); break;
    case KVX_JV_ARRAY: printf("[%zu items]", v->len); break;
    case KVX_JV_OBJECT:
        printf("{");
        for (size_t i = 0; i < v->len; i++) {
            printf("%s%s: ", i ? ", " : "", v->keys[i]);
            if (v->items[i].type == KVX_JV_OBJECT)
                printf("{...}");
            else
                print_json_scalar(&v->items[i]);
        }
        printf("}");
        break;
    }
}

/* A safetensors model as the model loader opened it: config.json, shards, tensors. */
static void print_safetensors(const char *path, const struct kvx_model *m)
{
    const struct kvx_safetensors *st = m->st;
    printf("model: %s\nsafetensors: %u file%s, %llu tensors\n", path, st->n_shards,
           st->n_shards == 1 ? "" : "s", (unsigned long long)st->n_tensors);
    for (uint32_t i = 0; i < st->n_shards; i++)
        printf("  %s (%zu bytes)\n", st->shards[i].path ? st->shards[i].path : "-",
               st->shards[i].size);
    printf("\nconfig.json:\n");
    for (size_t i = 0; i < m->config->len; i++) {
        printf("  %-44s ", m->config->keys[i]);
        print_json_scalar(&m->config->items[i]);
        putchar('\n');
    }
    printf("\ntensors:\n  %-52s %-8s %-22s %12s\n", "name", "dtype", "shape", "bytes");
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const struct kvx_st_tensor *t = &st->tensors[i];
        char shape[96] = "";
        size_t n = 0;
        for (uint32_t d = 0; d < t->n_dims && n < sizeof shape; d++)
            n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", d ? " x " : "",
                                  (long long)t->shape[d]);
        printf("  %-52s %-8s %-22s %12zu\n", t->name, kvx_st_dtype_name(t->dtype), shape,
               t->nbytes);
    }
}

/* The same cache with KV sharing undone: every SHARED layer declared as the layer it reads
 * (its own copy).  False (nothing printed) when the layout has no SHARED layer. */
static bool print_unshared(const struct kvx_kv_layout *l)
{
    bool any = false;
    for (int32_t i = 0; i < l->n_layer; i++)
        any |= l->layers[i].kind == KVX_KV_KIND_SHARED;
    struct kvx_kv_layout u;
    struct kvx_err err = {0};
    if (!any || kvx_kv_layout_init(&u, l->n_layer, l->page_tokens, &err) != KVX_OK)
        return false;
    for (int32_t i = 0; i < l->n_layer; i++)
        u.layers[i] = l->layers[kvx_kv_layer_source(l, i)];
    const size_t shared = kvx_kv_layout_bytes_per_token(l);
    const size_t own = kvx_kv_layout_bytes_per_token(&u);
    printf("KV bytes per token without KV sharing: %zu (sharing saves %.1f%%); one sequence of "
           "131072 tokens: %zu bytes with, %zu without\n", own,
           own ? 100.0 * (double)(own - shared) / (double)own : 0.0,
           kvx_kv_layout_seq_bytes(l, 131072), kvx_kv_layout_seq_bytes(&u, 131072));
    kvx_kv_layout_free(&u);
    return true;
}

/* A bare config.json (no weights): its keys, parameters, and the cache its architecture
 * declares, from kv/layout alone (no engine can run it). */
static int inspect_config(const struct cli_opts *o)
{
    struct kvx_model_cfg mc;
    if (cli_model_cfg(o, &mc))
        return 1;
    mc.config_only = true;
    struct kvx_model *m;
    struct kvx_err err = {0};
    if (kvx_model_open(&mc, &m, &err) != KVX_OK)
        return cli_fail_err(&err);
    printf("model: %s (config.json only, no weights)\n\nconfig.json:\n", o->model);
    for (size_t i = 0; i < m->config->len; i++) {
        printf("  %-44s ", m->config->keys[i]);
        print_json_scalar(&m->config->items[i]);
        putchar('\n');
    }
    struct kvx_param_count pc = {0, 0};
    if (m->arch->param_count && m->arch->param_count(m, &pc, &err) != KVX_OK) {
        kvx_model_close(m);
        return cli_fail_err(&err);
    }
    if (pc.total > 0)
        printf("\nparameters: %.0f (%.4gB), read per decoded token: %.0f (%.4gB)\n", pc.total,
               pc.total / 1e9, pc.active, pc.active / 1e9);
    const struct kvx_engine_cfg ec = kvx_engine_cfg_default();
    struct kvx_kv_layout l;
    int rc = 0;
    if (kvx_kv_layout_init(&l, m->hp.n_layer, o->page_tokens ? (int32_t)o->page_tokens
                                                             : ec.page_tokens, &err) != KVX_OK) {
        kvx_model_close(m);
        return cli_fail_err(&err);
    }
    m->arch->declare_cache(m, &l, KVX_KV_CODEC_F16, KVX_KV_CODEC_F16);
    if (kvx_kv_layout_validate(&l, &err) != KVX_OK) {
        rc = cli_fail_err(&err);
    } else {
        printf("\nKV cache (f16), %d layers:\n", (int)l.n_layer);
        for (int32_t i = 0; i < l.n_layer; i++) {
            const struct kvx_layer_cache *c = &l.layers[i];
            if (c->kind == KVX_KV_KIND_SHARED) {
                const int32_t src = kvx_kv_layer_source(&l, i);
                printf("  layer %3d  %-10s <- %d (%s): reads its cache, owns none\n", (int)i,
                       kvx_kv_kind_name(c->kind), (int)src,
                       kvx_kv_kind_name(l.layers[src].kind));
                continue;
            }
            printf("  layer %3d  %-10s heads %3d  k_dim %4d  v_dim %4d  page %zu bytes\n",
                   (int)i, kvx_kv_kind_name(c->kind), (int)c->n_kv_heads, (int)c->k_dim,
                   (int)c->v_dim, kvx_kv_layer_page_bytes(&l, i));
        }
        printf("KV bytes per token: %zu\n", kvx_kv_layout_bytes_per_token(&l));
        print_unshared(&l);
        const int64_t ctxs[] = {1024, 8192, 32768, 131072, 1048576};
        for (size_t i = 0; i < sizeof ctxs / sizeof ctxs[0]; i++)
            printf("KV bytes for one sequence of %7lld tokens: %15zu (%.1f MiB)\n",
                   (long long)ctxs[i], kvx_kv_layout_seq_bytes(&l, ctxs[i]),
                   (double)kvx_kv_layout_seq_bytes(&l, ctxs[i]) / 1048576.0);
    }
    kvx_kv_layout_free(&l);
    kvx_model_close(m);
    return rc;
}

int cmd_inspect(const struct cli_opts *o)
{
    if (!o->model)
        return cli_fail("inspect: no model given");
    if (!kvx_model_path_has_weights(o->model))
        return inspect_config(o);
    const bool gguf = kvx_model_path_is_gguf(o->model);
    if (gguf && print_file(o->model))
        return 1;
    struct cli_opts eo = *o;
    eo.threads = 1;
    eo.batch = 1;
    struct kvx_model *m;
    struct kvx_engine *e;
    if (cli_open(&eo, 0, &m, &e))
        return 1;
    if (!gguf)
        print_safetensors(o->model, m);
    char *rep = kvx_engine_kv_report(e);
    const struct kvx_kv_layout *l = kvx_engine_layout(e);
    printf("\n%s", rep ? rep : "");
    const int64_t ctxs[] = {1024, 8192, 32768, 131072};
    for (size_t i = 0; i < sizeof ctxs / sizeof ctxs[0]; i++)
        printf("KV bytes for one sequence of %7lld tokens: %13zu (%.1f MiB)\n", (long long)ctxs[i],
               kvx_kv_layout_seq_bytes(l, ctxs[i]),
               (double)kvx_kv_layout_seq_bytes(l, ctxs[i]) / 1048576.0);
    print_unshared(l);
    free(rep);
    kvx_engine_destroy(e);
    kvx_model_close(m);
    return 0;
}
