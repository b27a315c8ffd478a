/* kv/codec: the list of KV codecs, names, formats and the constraints each places on a head.
 *
 * Adding a codec is adding its files (kv/codec_<name>*.c with a getter) and one row here.
 * The ops tables are read-only data; nothing here checks the running CPU. */
#include "kv/codec.h"

#include <string.h>

#include "util/err.h"

struct codec_row {
    const char *name;
    const struct kvx_kv_codec_ops *(*get)(enum kvx_isa isa);
    int32_t dim_multiple;     /* head dims must be a multiple of this */
    bool grouped;             /* uses kivi's group / residual */
};

static const struct codec_row codecs[KVX_KV_CODEC_COUNT] = {
    [KVX_KV_CODEC_F32] = {"f32", kvx_kv_codec_f32, 1, false},
    [KVX_KV_CODEC_F16] = {"f16", kvx_kv_codec_f16, 1, false},
    [KVX_KV_CODEC_BF16] = {"bf16", kvx_kv_codec_bf16, 1, false},
    [KVX_KV_CODEC_Q8] = {"q8", kvx_kv_codec_q8, 32, false},
    [KVX_KV_CODEC_Q4] = {"q4", kvx_kv_codec_q4, 32, false},
    [KVX_KV_CODEC_KIVI2] = {"kivi2", kvx_kv_codec_kivi2, 32, true},
    [KVX_KV_CODEC_ROT4] = {"rot4", kvx_kv_codec_rot4, 32, false},
    [KVX_KV_CODEC_ROT3] = {"rot3", kvx_kv_codec_rot3, 32, false},
    [KVX_KV_CODEC_KIVI4] = {"kivi4", kvx_kv_codec_kivi4, 32, true},
    [KVX_KV_CODEC_Q4PLAIN] = {"q4plain", kvx_kv_codec_q4plain, 32, false},
};

/* Largest head dimension codec c stores, 0 for no limit (the rotating codecs rotate a head on
 * the stack: kv/codec_rot.c, kv/codec_q4.c). */
static int32_t codec_max_dim(enum kvx_kv_codec c)
{
    return c == KVX_KV_CODEC_ROT4 || c == KVX_KV_CODEC_ROT3 || c == KVX_KV_CODEC_Q4 ? 4096 : 0;
}

const struct kvx_kv_codec_ops *kvx_kv_codec_ops(enum kvx_kv_codec c, enum kvx_isa isa)
{
    if ((int)c < 0 || c >= KVX_KV_CODEC_COUNT)
        return NULL;
    if ((int)isa < 0 || isa >= KVX_ISA_COUNT)
        isa = KVX_ISA_SCALAR;
    return codecs[c].get(isa);
}

const char *kvx_kv_codec_name(enum kvx_kv_codec c)
{
    if ((int)c < 0 || c >= KVX_KV_CODEC_COUNT)
        return "unknown";
    return codecs[c].name;
}

bool kvx_kv_codec_parse(const char *s, enum kvx_kv_codec *out)
{
    for (int c = 0; s && c < KVX_KV_CODEC_COUNT; c++) {
        if (strcmp(s, codecs[c].name) == 0) {
            *out = (enum kvx_kv_codec)c;
            return true;
        }
    }
    return false;
}

struct kvx_kv_fmt kvx_kv_fmt_make(enum kvx_kv_codec c, int32_t page_tokens, int32_t dim,
                                  int32_t group, int32_t residual)
{
    struct kvx_kv_fmt f = {.page_tokens = page_tokens, .dim = dim};
    if ((int)c >= 0 && c < KVX_KV_CODEC_COUNT && codecs[c].grouped) {
        f.group = group;
        f.residual = residual;
    }
    return f;
}

enum kvx_status kvx_kv_codec_check(enum kvx_kv_codec c, int32_t page_tokens, int32_t dim,
                                   int32_t group, int32_t residual, struct kvx_err *err)
{
    if ((int)c < 0 || c >= KVX_KV_CODEC_COUNT)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "unknown KV codec %d", (int)c);
    const struct codec_row *r = &codecs[c];
    if (dim <= 0 || dim % r->dim_multiple)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "KV codec %s needs a head dimension that is a multiple of %d (got %d)",
                           r->name, (int)r->dim_multiple, (int)dim);
    if (codec_max_dim(c) && dim > codec_max_dim(c))
        return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                           "KV codec %s stores head dimensions up to %d (got %d)", r->name,
                           (int)codec_max_dim(c), (int)dim);
    if (r->grouped) {
        if (group < KVX_KV_TILE || group % KVX_KV_TILE || page_tokens % group)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                               "KV codec %s: group %d must be a multiple of %d that divides the "
                               "page size (%d tokens)",
                               r->name, (int)group, KVX_KV_TILE, (int)page_tokens);
        if (residual < 0 || residual > 65536)
            return kvx_err_set(err, KVX_ERR_INVALID_ARG,
                               "KV codec %s: residual %d is outside 0..65536", r->name,
                               (int)residual);
    }
    return KVX_OK;
}
