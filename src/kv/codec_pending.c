/* TEMPORARY: codecs not yet implemented. */
#include "kv/codec.h"
const struct kvx_kv_codec_ops *kvx_kv_codec_kivi2(enum kvx_isa isa) { (void)isa; return NULL; }
const struct kvx_kv_codec_ops *kvx_kv_codec_rot4(enum kvx_isa isa) { (void)isa; return NULL; }
const struct kvx_kv_codec_ops *kvx_kv_codec_rot3(enum kvx_isa isa) { (void)isa; return NULL; }
