/* TEMPORARY: codecs not yet implemented. */
#include "kv/codec.h"
const struct kvx_kv_codec_ops *kvx_kv_codec_bf16(enum kvx_isa isa) { (void)isa; return NULL; }
const struct kvx_kv_codec_ops *kvx_kv_codec_q8(enum kvx_isa isa) { (void)isa; return NULL; }
const struct kvx_kv_codec_ops *kvx_kv_codec_q4(enum kvx_isa isa) { (void)isa; return NULL; }
