/* model/model: a loaded model — the GGUF file, its tokenizer and chat template, the
 * hyper-parameters, the bound weights, and the architecture's table of functions.
 *
 * An architecture (model/llama.c for the Llama family, later one file per family) provides:
 *   load            read hyper-parameters and bind weights from the GGUF (shapes checked)
 *   declare_cache   fill the per-layer struct kvx_layer_cache (kv/layout.h) — the model never
 *                   allocates KV memory itself
 *   forward         one batch through the network (engine/forward.h)
 * The model owns no mutable state after loading and may be shared by several engines. */
#ifndef KVX_MODEL_MODEL_H
#define KVX_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/gguf.h"
#include "kv/layout.h"
#include "kvx.h"
#include "ops/matmul.h"
#include "ops/ops.h"
#include "text/chat.h"
#include "text/tokenizer.h"

struct kvx_forward;   /* engine/forward.h */
struct kvx_model;

struct kvx_hparams {
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int64_t n_ctx_train;
    float norm_eps;
    float rope_theta, rope_freq_scale;
    int32_t n_rot;
    enum kvx_rope_kind rope_kind;
};

struct kvx_llama_layer {
    const float *attn_norm, *ffn_norm;         /* n_embd */
    const float *bq, *bk, *bv;                 /* optional biases (Qwen2) */
    const float *q_norm, *k_norm;              /* optional per-head RMSNorm (Qwen3), head_dim */
    struct kvx_mat wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct kvx_arch {
    const char *name;                          /* general.architecture */
    enum kvx_status (*load)(struct kvx_model *m, struct kvx_err *err);
    void (*declare_cache)(const struct kvx_model *m, struct kvx_kv_layout *layout,
                          enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec);
    void (*forward)(const struct kvx_model *m, struct kvx_forward *f);
};

struct kvx_model {
    struct kvx_gguf *gguf;
    struct kvx_tokenizer *tok;
    struct kvx_chat_template chat;
    const struct kvx_arch *arch;
    char arch_name[64];
    char name[256];
    struct kvx_hparams hp;
    struct kvx_mat tok_embd, output;           /* output may alias tok_embd (tied) */
    const float *output_norm;
    struct kvx_llama_layer *layers;
    float **owned_f32;                         /* small tensors converted to f32 */
    int n_owned_f32, cap_owned_f32;
};

/* Helpers for architecture loaders: bind a 2-D weight of shape [n_in, n_out] (checked), or a
 * 1-D tensor of n floats (converted to f32 and owned by the model).  `required` false: a
 * missing tensor leaves the output empty/NULL. */
enum kvx_status kvx_model_bind_mat(struct kvx_model *m, const char *name, int64_t n_in,
                                   int64_t n_out, bool required, struct kvx_mat *out,
                                   struct kvx_err *err);
enum kvx_status kvx_model_bind_vec(struct kvx_model *m, const char *name, int64_t n,
                                   bool required, const float **out, struct kvx_err *err);

/* The table of every architecture kvx runs; NULL-terminated. */
const struct kvx_arch *kvx_arch_find(const char *name);

extern const struct kvx_arch kvx_arch_llama;

#endif
