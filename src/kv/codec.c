/* kv/codec: the table of KV codecs and their kernels per ISA.
 *
 * Adding a codec is adding its files (scalar + optional SIMD kernels) and one row here.  The
 * tables are read-only data; nothing here checks the running CPU (callers pick the ISA with
 * ops/cpu.h, the pool refuses an ISA the CPU lacks). */
#include "kv/codec.h"

#include <string.h>

#define KVX_KV_CODEC_OPS(codec, isa)                                                           \
    {                                                                                          \
        .name = #codec,                                                                        \
        .k_region_bytes = kvx_kv_k_region_bytes_##codec,                                      \
        .v_region_bytes = kvx_kv_v_region_bytes_##codec,                                       \
        .k_put = kvx_kv_k_put_##codec,                                                         \
        .v_put = kvx_kv_v_put_##codec,                                                         \
        .k_get = kvx_kv_k_get_##codec,                                                         \
        .v_get = kvx_kv_v_get_##codec,                                                         \
        .qk = kvx_kv_qk_##codec##_##isa,                                                       \
        .pv = kvx_kv_pv_##codec##_##isa,                                                       \
    }

#if defined(__x86_64__) || defined(__i386__)
#define KVX_KV_CODEC_ROW(codec)                                                                \
    {                                                                                          \
        [KVX_ISA_SCALAR] = KVX_KV_CODEC_OPS(codec, scalar),                                    \
        [KVX_ISA_AVX2] = KVX_KV_CODEC_OPS(codec, avx2),                                        \
        [KVX_ISA_AVX512] = KVX_KV_CODEC_OPS(codec, avx512),                                    \
    }
#else
#define KVX_KV_CODEC_ROW(codec)                                                                \
    {                                                                                          \
        [KVX_ISA_SCALAR] = KVX_KV_CODEC_OPS(codec, scalar),                                    \
        [KVX_ISA_AVX2] = KVX_KV_CODEC_OPS(codec, scalar),                                      \
        [KVX_ISA_AVX512] = KVX_KV_CODEC_OPS(codec, scalar),                                    \
    }
#endif

static const struct kvx_kv_codec_ops codec_table[][KVX_ISA_COUNT] = {
    [KVX_KV_CODEC_F32] = KVX_KV_CODEC_ROW(f32),
    [KVX_KV_CODEC_F16] = KVX_KV_CODEC_ROW(f16),
};

#define KVX_KV_N_CODECS ((int)(sizeof codec_table / sizeof codec_table[0]))

const struct kvx_kv_codec_ops *kvx_kv_codec_ops(enum kvx_kv_codec c, enum kvx_isa isa)
{
    if ((int)c < 0 || (int)c >= KVX_KV_N_CODECS)
        return NULL;
    if ((int)isa < 0 || isa >= KVX_ISA_COUNT)
        isa = KVX_ISA_SCALAR;
    return &codec_table[c][isa];
}

const char *kvx_kv_codec_name(enum kvx_kv_codec c)
{
    const struct kvx_kv_codec_ops *ops = kvx_kv_codec_ops(c, KVX_ISA_SCALAR);
    return ops ? ops->name : "unknown";
}

bool kvx_kv_codec_parse(const char *s, enum kvx_kv_codec *out)
{
    for (int c = 0; c < KVX_KV_N_CODECS; c++) {
        if (s && strcmp(s, codec_table[c][KVX_ISA_SCALAR].name) == 0) {
            *out = (enum kvx_kv_codec)c;
            return true;
        }
    }
    return false;
}
