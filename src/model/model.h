/* model/model: a loaded model — its weight source (a GGUF file, or a safetensors model with
 * its config.json), tokenizer and chat template, the hyper-parameters, the bound weights, and
 * the architecture's table of functions.
 *
 * Weight sources.  One model reads its tensors through kvx_model_find_tensor, which presents a
 * GGUF tensor and a safetensors tensor alike (struct kvx_wtensor: ne[0] contiguous); the
 * binding helpers below check shapes and types and convert what the kernels cannot read
 * directly (FP8 E4M3 with block scales is dequantized at load).  Names differ by format (GGUF
 * "blk.N.attn_q.weight", Hugging Face "model.layers.N.self_attn.q_proj.weight"): an
 * architecture names each tensor in both (kvx_model_wname) and reads its hyper-parameters from
 * GGUF metadata or config.json (model/hf_config.h).  A safetensors model takes its tokenizer
 * from tokenizer.json (text/tokenizer_hf.h); one without a tokenizer kvx can read still opens,
 * and only text encoding fails (with a message saying why).
 *
 * An architecture (model/llama.c for the Llama family, later one file per family) provides:
 *   hparams         read the hyper-parameters (GGUF metadata or config.json) — all that
 *                   declare_cache needs, so a config-only model (no weights) can be planned
 *   load_weights    bind the weights (shapes checked against the hyper-parameters)
 *   declare_cache   fill the per-layer struct kvx_layer_cache (kv/layout.h) — the model never
 *                   allocates KV memory itself
 *   forward         one batch through the network (engine/forward.h)
 * The model owns no mutable state after loading and may be shared by several engines. */
#ifndef KVX_MODEL_MODEL_H
#define KVX_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/gguf.h"
#include "io/safetensors.h"
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
    int32_t bos_id, eos_id;    /* from config.json for safetensors models (-1: none) */
    bool attn_bias;            /* config.json attention_bias (Qwen2: always) */
    bool tie_embd;             /* config.json tie_word_embeddings */
};

struct kvx_llama_layer {
    const float *attn_norm, *ffn_norm;         /* n_embd */
    const float *bq, *bk, *bv;                 /* optional biases (Qwen2) */
    const float *bo;                           /* optional output bias (Llama attention_bias) */
    const float *q_norm, *k_norm;              /* optional per-head RMSNorm (Qwen3), head_dim */
    struct kvx_mat wq, wk, wv, wo, w_gate, w_up, w_down;
};

/* DeepSeek-V3 multi-head latent attention (model/deepseek_v3.c). */
struct kvx_mla_hparams {
    int32_t q_lora;            /* 0: a plain q_proj */
    int32_t kv_lora, nope, rope, v;   /* c, qk_nope_head_dim, qk_rope_head_dim, v_head_dim */
    float scale;               /* softmax scale: (nope+rope)^-1/2, times mscale^2 under YaRN */
    float attn_factor;         /* YaRN factor on cos/sin */
    float norm_eps;            /* q_a / kv_a layernorm eps (the class default, 1e-6) */
    enum kvx_rope_kind rope_kind;
    const float *inv_freq;     /* rope/2 inverse frequencies (YaRN-corrected), owned */
    /* mixture of experts (layers >= n_dense) */
    int32_t n_dense;           /* first_k_dense_replace */
    int32_t n_expert, top_k, n_group, topk_group, moe_ff, n_shared;
    bool norm_topk;
    float routed_scale;
};

struct kvx_mla_layer {
    const float *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm;
    struct kvx_mat wq, wq_a, wq_b, wkv_a, wo;
    struct kvx_mat w_gate, w_up, w_down;       /* dense MLP, or the shared experts */
    const float *wkv_b;        /* f32 [n_head * (nope + v), kv_lora]: per head W_UK rows, W_UV rows */
    const float *router, *router_bias;         /* MoE: f32 [n_expert, n_embd], [n_expert] */
    struct kvx_mat *experts;   /* MoE: n_expert x {gate, up, down}, owned */
};

/* Parameters of a model as its hyper-parameters define them (no weights needed). */
struct kvx_param_count {
    double total;              /* every parameter of the network the forward pass uses */
    double active;             /* those one decoded token reads: MoE only the routed experts
                                  it chooses; never the input embedding table (one row) */
};

struct kvx_arch {
    const char *name;                          /* general.architecture / model_type */
    enum kvx_status (*hparams)(struct kvx_model *m, struct kvx_err *err);
    enum kvx_status (*load_weights)(struct kvx_model *m, struct kvx_err *err);
    void (*declare_cache)(const struct kvx_model *m, struct kvx_kv_layout *layout,
                          enum kvx_kv_codec k_codec, enum kvx_kv_codec v_codec);
    void (*forward)(const struct kvx_model *m, struct kvx_forward *f);
    /* Optional: floats of scratch the forward pass needs beyond the engine's standard buffers
     * for n_batch tokens (given it as kvx_forward_scratch.extra); NULL for none. */
    int64_t (*scratch_floats)(const struct kvx_model *m, int64_t n_batch);
    /* Optional: count the parameters from the hyper-parameters alone (it runs on a config-only
     * model; NULL: the planner falls back to the weights' own count, or cannot size weights
     * from a bare config).  It must count every tensor of the checkpoint the forward pass
     * uses — embeddings, a separate lm_head unless tied, every projection, norm weight and
     * bias, routers and experts — and nothing it does not (FP8 block scales, multi-token-
     * prediction layers HF does not instantiate), so that total equals the published count
     * of the released model; active counts the weights one decoded token reads: lm_head
     * but not the input embedding table (one row of it) unless the two are tied, and of the
     * routed experts only the top_k a token chooses (plus the shared ones) — DeepSeek's
     * "activated parameters" convention.
     * Errors name the config.json key that was wrong. */
    enum kvx_status (*param_count)(const struct kvx_model *m, struct kvx_param_count *out,
                                   struct kvx_err *err);
};

enum kvx_model_format { KVX_MODEL_GGUF = 0, KVX_MODEL_SAFETENSORS };

struct kvx_jv;   /* util/json.h */

struct kvx_model {
    enum kvx_model_format format;
    struct kvx_gguf *gguf;                     /* GGUF models */
    struct kvx_safetensors *st;                /* safetensors models ... */
    struct kvx_jv *config;                     /* ... and their config.json */
    int64_t fp8_block[2];                      /* FP8 weight_block_size (rows, cols) */
    char dir[4096];                            /* safetensors: the model folder */
    struct kvx_tokenizer *tok;                 /* NULL when the model has none ... */
    char tok_missing[320];                     /* ... and why (safetensors models) */
    struct kvx_chat_template chat;
    const struct kvx_arch *arch;
    char arch_name[64];
    char name[256];
    struct kvx_hparams hp;
    struct kvx_mat tok_embd, output;           /* output may alias tok_embd (tied) */
    const float *output_norm;
    struct kvx_llama_layer *layers;
    struct kvx_mla_hparams mla;                /* deepseek_v3 */
    struct kvx_mla_layer *mla_layers;
    void *arch_data;           /* an architecture's own weights/hyper-parameters (freed by
                                  free_arch_data at close, or owned through kvx_model_own) */
    void (*free_arch_data)(void *arch_data);
    bool config_only;          /* opened without weights (kvx_model_cfg.config_only) */
    enum kvx_mla_mode mla_mode;                /* deepseek_v3: kvx_model_cfg.mla */
    bool weights_f32;          /* kvx_model_cfg.weights_f32 */
    bool weights_rows;         /* kvx_model_cfg.weights_rows */
    void **owned;                              /* buffers converted at load (f32 vectors, ...) */
    int n_owned, cap_owned;
};

/* A tensor of either source: ne[0] is the contiguous dimension (a safetensors shape reversed),
 * type an enum kvx_dtype, or KVX_WTENSOR_FP8 for F8_E4M3 (kvx reads it only through the
 * binding helpers, which dequantize it), or KVX_WTENSOR_OTHER for a dtype kvx does not use. */
#define KVX_WTENSOR_MAX_DIMS 4
#define KVX_WTENSOR_FP8 1000u
#define KVX_WTENSOR_OTHER 1001u
struct kvx_wtensor {
    const char *name;          /* as looked up */
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[KVX_WTENSOR_MAX_DIMS];
    size_t nbytes;
    const void *data;
    const struct kvx_st_tensor *st;            /* safetensors: the tensor itself */
};

/* Look a tensor up by its name in the model's format.  False when absent; a safetensors tensor
 * of more than 4 dims is reported absent too (no architecture here has one). */
bool kvx_model_find_tensor(const struct kvx_model *m, const char *name, struct kvx_wtensor *out);

/* Format a tensor name into buf: `gguf` for GGUF models, `hf` for safetensors ones, with the
 * layer index (the formats take one %d, or none).  Returns buf. */
const char *kvx_model_wname(const struct kvx_model *m, char *buf, size_t cap, const char *gguf,
                            const char *hf, int layer);

/* Helpers for architecture loaders: bind a 2-D weight of shape [n_in, n_out] (checked), or a
 * 1-D tensor of n floats (converted to f32 and owned by the model).  `required` false: a
 * missing tensor leaves the output empty/NULL.  FP8 weights are dequantized (with the
 * "<name>_scale_inv" block scales, or for "<stem>.weight" the F8_E8M0 "<stem>.scale" of
 * DeepSeek-V4's released checkpoints; m->fp8_block) into BF16 matrices / F32 vectors owned by
 * the model, as Hugging Face dequantizes them.  A 2-D I8/U8 weight with a "<stem>.scale" is
 * packed FP4 E2M1 (DeepSeek-V4's routed experts: shape [n_out, n_in/2], one scale per
 * KVX_FP4_BLOCK inputs; kvx_st_dequant_fp4) and is dequantized into BF16 the same way. */
#define KVX_FP4_BLOCK 32
enum kvx_status kvx_model_bind_mat(struct kvx_model *m, const char *name, int64_t n_in,
                                   int64_t n_out, bool required, struct kvx_mat *out,
                                   struct kvx_err *err);
enum kvx_status kvx_model_bind_vec(struct kvx_model *m, const char *name, int64_t n,
                                   bool required, const float **out, struct kvx_err *err);

/* A 2-D weight of shape [n_in, n_out] (as kvx_model_bind_mat) converted to f32 rows owned by the
 * model: for weights a forward pass reads as floats (routers, small projections). */
enum kvx_status kvx_model_bind_mat_f32(struct kvx_model *m, const char *name, int64_t n_in,
                                       int64_t n_out, const float **out, struct kvx_err *err);

/* A stacked tensor of E matrices, safetensors shape [E, rows, n_in] (mixture-of-experts
 * weights), in F32, F16 or BF16: checks the shape and type, gives the tensor and the bytes of
 * one row; kvx_model_stack_mat then presents rows [first_row, first_row + n_out) of the stack
 * as one [n_in, n_out] matrix (expert e's rows start at e * rows). */
enum kvx_status kvx_model_bind_stack(const struct kvx_model *m, const char *name, int64_t E,
                                     int64_t rows, int64_t n_in, struct kvx_wtensor *t,
                                     size_t *row_bytes, struct kvx_err *err);
struct kvx_mat kvx_model_stack_mat(const struct kvx_wtensor *t, size_t row_bytes,
                                   int64_t first_row, int64_t n_in, int64_t n_out);

/* Interleave the given matrices' rows in place (ops/repack.h) where that pays: a GGUF model
 * read by kvx_gguf_open, q4_0 / q4_1 / q8_0 matrices, a CPU with the SIMD kernel, and
 * kvx_model_cfg.weights_rows not set; sets each repacked matrix's x16.  A matrix sharing its
 * data with one repacked before it in the list is marked, not repacked twice.  Fails only when
 * out of memory for one group's copy (16 rows). */
enum kvx_status kvx_model_repack(struct kvx_model *m, struct kvx_mat *const *mats, int n,
                                 struct kvx_err *err);

/* Keep a malloc'd buffer until the model is closed (freed here on failure). */
enum kvx_status kvx_model_own(struct kvx_model *m, void *p, struct kvx_err *err);

/* True when `path` is to be opened as GGUF: a file with the GGUF magic, or any path that is
 * neither a folder nor named *.safetensors / *.json (those are safetensors models). */
bool kvx_model_path_is_gguf(const char *path);

/* True when `path` names weights kvx can open: a GGUF file, a .safetensors file or index, or
 * a folder / config.json next to model.safetensors or model.safetensors.index.json.  A bare
 * config.json (or a folder holding only it) is opened with kvx_model_cfg.config_only. */
bool kvx_model_path_has_weights(const char *path);

/* The architecture for a GGUF general.architecture or a config.json model_type, or NULL. */
const struct kvx_arch *kvx_arch_find(const char *name);
/* "llama, mistral, qwen2, qwen3": for messages. */
const char *kvx_arch_list(void);

extern const struct kvx_arch kvx_arch_llama;
extern const struct kvx_arch kvx_arch_deepseek_v3;
extern const struct kvx_arch kvx_arch_deepseek_v4;
extern const struct kvx_arch kvx_arch_laguna;
extern const struct kvx_arch kvx_arch_zaya;
extern const struct kvx_arch kvx_arch_gemma4_text;   /* model/gemma4.c */
extern const struct kvx_arch kvx_arch_gemma4;        /* its multimodal checkpoints */

#endif
