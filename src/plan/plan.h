/* plan/plan: the KV cost model behind `kvx plan` — how the cache grows, what fits, how fast a
 * memory-bandwidth roofline says decode can go and what an output token costs.
 *
 * Every KV byte comes from kv/layout: a model (a GGUF file's arch->declare_cache, or a preset
 * row of data/plan/models.tsv) is turned into a struct kvx_kv_layout and the planner only asks
 * it for page bytes, pages and bytes per token.  Two things the layout cannot yet express are
 * mapped onto what it has, exactly for the byte count:
 *   - MLA latent layers (DeepSeek V3): one FULL "head" with k_dim = rope_dim (the RoPE'd key)
 *     and v_dim = c_dim (the latent c^KV), so a token costs (c_dim + rope_dim) elements;
 *   - projected codecs without kernels yet (fp8, fp4): the layout is declared in f16 and the
 *     K (V) part of every page is scaled by the codec's bits / 16 (see kvx_plan_codec_parse).
 * Does not print, does not allocate KV memory, and owns no formula of its own for KV bytes. */
#ifndef KVX_PLAN_PLAN_H
#define KVX_PLAN_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/layout.h"
#include "kvx.h"

/* What kind of cache a layer has, as the planner reports it (the layout's kinds plus LATENT). */
enum kvx_plan_lkind {
    KVX_PLAN_LKIND_NONE = 0,
    KVX_PLAN_LKIND_FULL,
    KVX_PLAN_LKIND_WINDOW,
    KVX_PLAN_LKIND_SHARED,
    KVX_PLAN_LKIND_LATENT,
    KVX_PLAN_LKIND_COMPRESSED,
    KVX_PLAN_LKIND_HEAVY,
    KVX_PLAN_LKIND_COUNT,
};
const char *kvx_plan_lkind_name(enum kvx_plan_lkind k);

/* A KV storage format as the planner sizes it.  Native codecs (f32, f16; bf16 has f16's
 * size) are declared to the layout as they are.  Projected ones are declared as f16 and their
 * part of each page is scaled by num/den:
 *   fp8 = e4m3, 1 byte per element, scales ignored        -> 1/2 of f16
 *   fp4 = e2m1 + one 8-bit scale per 32 elements (MXFP4)  -> 4.25 bits = 17/64 of f16 */
struct kvx_plan_codec {
    const char *name;
    enum kvx_kv_codec native;
    int32_t num, den;
};
bool kvx_plan_codec_parse(const char *s, struct kvx_plan_codec *out);

/* A model's cache-relevant hyper-parameters (one row of models.tsv).
 * pattern: one letter per layer, cycled over n_layer: F full, W window, L latent (MLA),
 *   S window with K = V (DeepSeek V4 SWA-only), C compressed (V4 CSA: entry every ratio_c
 *   tokens + index_dim indexer key), H heavily compressed (V4 HCA: every ratio_h tokens); S, C
 *   and H use one head of head_dim, and C/H keep a `window`-token ring per sequence.
 * F layers use g_kv_heads/g_head_dim when set (Gemma's global layers), else kv_heads/head_dim.
 * shared_from S > 0: layers >= S read the last layer < S with the same letter (Gemma 3n/4). */
struct kvx_plan_model {
    char name[64];
    double n_params;          /* all parameters */
    double n_active;          /* parameters read per decoded token (MoE: active); 0 = n_params */
    int32_t n_layer;
    char pattern[256];
    int32_t kv_heads, head_dim, window;
    int32_t g_kv_heads, g_head_dim;
    int32_t shared_from;
    int32_t latent_c, latent_rope;
    int32_t ratio_c, ratio_h, index_dim;   /* DeepSeek V4: CSA / HCA ratios, indexer key dims */
    int64_t ctx_max;          /* trained/advertised context; 0 = unknown */
    char source[256];
};

struct kvx_plan_hw {
    char name[32];
    double mem_bytes;         /* per device */
    double bw_bytes_s;        /* peak memory bandwidth per device */
    char source[256];
};

/* Presets: a TSV file, '#' comments, first non-comment line is the header; '-' = unset. */
enum kvx_status kvx_plan_models_load(const char *path, struct kvx_plan_model **out, int32_t *n,
                                     struct kvx_err *err);
enum kvx_status kvx_plan_hw_load(const char *path, struct kvx_plan_hw **out, int32_t *n,
                                 struct kvx_err *err);
/* Find by name (case-insensitive); KVX_ERR_NOT_FOUND with the name and the known names. */
enum kvx_status kvx_plan_model_find(const struct kvx_plan_model *list, int32_t n, const char *name,
                                    const struct kvx_plan_model **out, struct kvx_err *err);
enum kvx_status kvx_plan_hw_find(const struct kvx_plan_hw *list, int32_t n, const char *name,
                                 const struct kvx_plan_hw **out, struct kvx_err *err);

/* A model's cache as a kv/layout, plus what the planner adds (kinds, projected codecs). */
struct kvx_plan_kv {
    char name[64];
    struct kvx_kv_layout layout;     /* owned */
    uint8_t *kind;                   /* enum kvx_plan_lkind per layer, owned */
    struct kvx_plan_codec k, v;
    double n_params, n_active;
    size_t weight_bytes;             /* a model with weights: bytes of tensor data; presets and
                                        bare configs: 0 (n_params x bytes per parameter) */
    double bytes_per_param;          /* a bare config's own weight dtype (torch_dtype; FP8
                                        quantization_config: 1); 0: unknown */
    bool config_only;                /* planned from config.json alone */
    int64_t ctx_max;
};

struct kvx_plan_kv_cfg {
    struct kvx_plan_codec k, v;
    int32_t page_tokens;
    enum kvx_mla_mode mla;           /* deepseek_v3 models: the cache of this attention form */
    int32_t kivi_group, kivi_residual;   /* kivi codecs: as kvx_engine_cfg (defaults alike) */
};
struct kvx_plan_kv_cfg kvx_plan_kv_cfg_default(void);

enum kvx_status kvx_plan_kv_from_model(const struct kvx_plan_model *pm,
                                       const struct kvx_plan_kv_cfg *cfg, struct kvx_plan_kv *out,
                                       struct kvx_err *err);
/* Open a model and declare its cache with the arch's own declare_cache — the same call the
 * engine makes.  A GGUF file or a safetensors model (weights mmap'd, nothing read) opens as it
 * runs: weight bytes are the tensors' own.  A bare config.json (or a folder holding no
 * weights) opens config-only (kvx_model_cfg.config_only): parameters come from the arch's
 * param_count (0 when it has none), weight bytes from them times a dtype (the config's own,
 * or the plan's --weights-dtype / --weights-bytes).  A key the layout needs that the config
 * lacks fails naming the key. */
enum kvx_status kvx_plan_kv_from_path(const char *path, const struct kvx_plan_kv_cfg *cfg,
                                      struct kvx_plan_kv *out, struct kvx_err *err);
void kvx_plan_kv_free(struct kvx_plan_kv *kv);

/* Bytes one sequence of n tokens holds (whole pages; window layers only their window), all
 * layers or only those of one kind.  Equals kvx_kv_layout_seq_bytes for native codecs. */
size_t kvx_plan_kv_seq_bytes(const struct kvx_plan_kv *kv, int64_t n);
size_t kvx_plan_kv_seq_bytes_kind(const struct kvx_plan_kv *kv, int64_t n, enum kvx_plan_lkind k);
/* Growth per token (window layers count 0); kvx_kv_layout_bytes_per_token for native codecs. */
size_t kvx_plan_kv_bytes_per_token(const struct kvx_plan_kv *kv);
size_t kvx_plan_kv_bytes_per_token_kind(const struct kvx_plan_kv *kv, enum kvx_plan_lkind k);
/* The part that stops growing: window layers' bytes once every window is full. */
size_t kvx_plan_kv_const_bytes(const struct kvx_plan_kv *kv);

/* ---------------------------------------------------------------------------------------------
 * Fit and roofline */

#define KVX_PLAN_MAX_CTX 16
/* max_ctx_at_c when any length fits (a cache of window layers only). */
#define KVX_PLAN_CTX_UNBOUNDED ((int64_t)1 << 32)

struct kvx_plan_cfg {
    int64_t ctx[KVX_PLAN_MAX_CTX];
    int32_t n_ctx;
    int64_t concurrency;       /* sequences per replica */
    int32_t tp;                /* devices one replica spans */
    int32_t gpus;              /* devices in all (a multiple of tp); 0 = tp */
    double util;               /* fraction of device memory usable (0, 1] */
    double reserve_bytes;      /* per replica: activations, workspace */
    double weight_bytes;       /* > 0: overrides; else the model's tensor bytes, or
                                  params x bytes per parameter */
    double bytes_per_param;    /* > 0: for presets and bare configs; 0 (default): a bare
                                  config's own dtype, else 2 (bf16) */
    int64_t prefix_shared;     /* tokens of a prompt prefix every sequence shares (counted once) */
    double price_per_hour;     /* per device; 0 = no cost line */
};
struct kvx_plan_cfg kvx_plan_cfg_default(void);

struct kvx_plan_at {
    int64_t ctx;
    size_t seq_bytes;            /* one sequence, nothing shared */
    size_t kind_bytes[KVX_PLAN_LKIND_COUNT];
    int64_t max_seqs;            /* per replica, with the shared prefix counted once */
    double kv_bytes_at_c;        /* concurrency sequences */
    bool fits;                   /* concurrency sequences fit */
    double short_bytes;          /* when !fits: how much memory is missing */
    double step_s;               /* decode step at concurrency (roofline) */
    double tok_s_seq, tok_s_total, usd_per_mtok;
};

struct kvx_plan_result {
    size_t bytes_per_token;
    size_t kind_per_token[KVX_PLAN_LKIND_COUNT];
    size_t const_bytes;
    double weight_bytes, weight_read_bytes;     /* per replica; read = active params */
    double mem_bytes, kv_avail_bytes;           /* per replica */
    bool weights_fit;
    int64_t replicas;
    int64_t max_ctx_at_c;                       /* largest context for concurrency seqs,
                                                   KVX_PLAN_CTX_UNBOUNDED if any fits */
    struct kvx_plan_at at[KVX_PLAN_MAX_CTX];
    int32_t n_at;
};

/* Check cfg (contexts and concurrency > 0, tp/gpus consistent, util in (0,1]) and compute.
 * A model that does not fit is a valid answer (fits = false, short_bytes), not an error. */
enum kvx_status kvx_plan_compute(const struct kvx_plan_kv *kv, const struct kvx_plan_hw *hw,
                                 const struct kvx_plan_cfg *cfg, struct kvx_plan_result *out,
                                 struct kvx_err *err);

/* Parse "4096,32768,128K" into cfg->ctx (K = 1024, M = 1048576). */
enum kvx_status kvx_plan_parse_ctx_list(const char *s, struct kvx_plan_cfg *cfg,
                                        struct kvx_err *err);
/* Bytes per parameter of a weight dtype name: f32 4, f16/bf16 2, fp8/int8/q8_0 1 (q8_0 1.0625),
 * q4_0 0.5625, q4_1 0.625, int4/fp4 0.5. */
bool kvx_plan_weight_dtype_bytes(const char *s, double *out);

/* A short multi-threaded memory-read measurement: bytes/s (threads <= 0: all CPUs).
 * Also reports the machine's RAM. */
enum kvx_status kvx_plan_measure_cpu(int32_t threads, double seconds, struct kvx_plan_hw *out,
                                     struct kvx_err *err);

/* KV bytes vs context (1K..1M, log-log) for several models: an SVG at svg_path and the same
 * points as CSV at csv_path. */
enum kvx_status kvx_plan_curve_write(const struct kvx_plan_kv *const *kvs, int32_t n,
                                     const char *svg_path, const char *csv_path,
                                     struct kvx_err *err);

#endif
