/* kvx.h — the public interface of libkvx, an LLM inference engine built around its KV cache.
 *
 * Objects and ownership
 *   struct kvx_model    weights (mmap'd), hyper-parameters, tokenizer.  kvx_model_open / _close.
 *   struct kvx_engine   the KV page pool (one byte budget) and the worker threads, for one model.
 *                       kvx_engine_create / _destroy.  The model must outlive the engine.
 *   struct kvx_session  one sequence: its token history and its page table in the engine's pool.
 *                       kvx_session_create / _fork / _destroy.  The engine must outlive its
 *                       sessions.  Sessions of one engine share KV pages where their tokens
 *                       agree (fork, the prefix cache); sharing never changes what a session
 *                       computes, and a page is copied before a session writes into it.
 *   struct kvx_sampler  turns logits into a token.  kvx_sampler_create / _destroy.
 *
 * Errors: every fallible call returns an enum kvx_status and, when `err` is not NULL, fills it
 * with a one-line message naming what was wrong.  The library never prints and never exits.
 *
 * Threads: a model may be shared by several engines; an engine and its sessions must be used
 * from one thread at a time (the engine runs its own worker threads inside each call). */
#ifndef KVX_H
#define KVX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kvx_status {
    KVX_OK = 0,
    KVX_ERR_INVALID_ARG,   /* a caller-supplied value is out of range */
    KVX_ERR_IO,            /* a file could not be opened, mapped or read */
    KVX_ERR_FORMAT,        /* a file or string is malformed (truncated, lying, hostile) */
    KVX_ERR_UNSUPPORTED,   /* well-formed, but kvx does not implement it (architecture, type) */
    KVX_ERR_NOMEM,         /* an allocation failed */
    KVX_ERR_KV_FULL,       /* the KV budget cannot hold the request */
    KVX_ERR_CONTEXT,       /* the request is longer than the context */
    KVX_ERR_NOT_FOUND,     /* a key, tensor or name does not exist */
};

const char *kvx_status_str(enum kvx_status s);

/* A last-error message: the status and one line naming what was wrong. */
struct kvx_err {
    enum kvx_status status;
    char msg[512];
};

/* ---------------------------------------------------------------------------------------------
 * Model */

struct kvx_model;

enum kvx_mla_mode { KVX_MLA_ABSORBED = 0, KVX_MLA_NAIVE };

struct kvx_model_cfg {
    /* A GGUF file, or a safetensors model: its folder (config.json with model.safetensors or
     * model.safetensors.index.json), its config.json, a .safetensors file or the index. */
    const char *path;
    /* Read only the hyper-parameters (config.json, or GGUF metadata): no weights are needed or
     * bound, no tokenizer is loaded.  Such a model can be inspected and planned (its KV layout
     * is complete) but not run: kvx_engine_create refuses it. */
    bool config_only;
    /* Multi-head latent attention (deepseek_v3): how attention is computed and cached.
     * ABSORBED (default): in the latent space, the cache holds one latent + RoPE key per token
     * (a LATENT layer).  NAIVE: as Hugging Face computes it, per head K = [W_UK c ; k_rope],
     * V = W_UV c, cached as a FULL layer of n_head KV heads (the MHA-equivalent cache).  The
     * two give the same logits up to rounding.  Other architectures ignore it. */
    enum kvx_mla_mode mla;
    /* Convert every weight matrix (Q4_1, Q8_0, K-quants, f16, ...) to f32 when loading (the
     * stacked expert tensors of safetensors mixture-of-experts models keep their f16/bf16).
     * Matrix products then take f32 activations instead of rounding them to 8 bits (or f16)
     * for the weights' dot products (the arithmetic of a weight-only quantized GPU kernel):
     * the same weights, 4 bytes per weight in memory, slower.  Quality measurements use it to
     * see a KV cache's own cost, which the 8-bit activation rounding magnifies: a last-bit
     * change of an activation flips roundings in every later layer. */
    bool weights_f32;
    /* Keep q4_0 / q4_1 / q8_0 weight matrices in the file's row layout.  By default, on a CPU
     * with AVX2 or AVX-512, a GGUF model's dense matrices (llama family) are interleaved 16
     * rows at a time in place at load, with the same values (ops/repack.h): one-token products
     * then run at memory speed instead of the row kernel's compute speed.  Costs one pass over
     * those weights at open. */
    bool weights_rows;
};
struct kvx_model_cfg kvx_model_cfg_default(void);

enum kvx_status kvx_model_open(const struct kvx_model_cfg *cfg, struct kvx_model **out,
                               struct kvx_err *err);
void kvx_model_close(struct kvx_model *m);

struct kvx_model_info {
    const char *arch;          /* "llama", "qwen2", ...; borrowed for the model's lifetime */
    const char *name;          /* general.name or "" */
    int32_t n_vocab;
    int64_t n_ctx_train;
    int32_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff;
    int32_t bos_id, eos_id;    /* -1 when absent */
    bool add_bos;
    bool has_tokenizer;        /* false: text cannot be encoded (feed token ids) */
    uint64_t n_params;
    size_t weight_bytes;       /* bytes of tensor data in the file */
};
void kvx_model_get_info(const struct kvx_model *m, struct kvx_model_info *out);

/* ---------------------------------------------------------------------------------------------
 * Tokenizer (the one embedded in the model file) */

/* Encode `len` bytes of UTF-8 `text`.  add_bos: prepend BOS when the model asks for it.
 * parse_special: recognise special-token texts such as "<|im_start|>" in `text`.
 * Writes at most `cap` ids to `out` and the full count to `*n_out` (KVX_ERR_INVALID_ARG
 * with *n_out set when cap is too small, so a caller can retry). */
enum kvx_status kvx_tokenize(const struct kvx_model *m, const char *text, size_t len, bool add_bos,
                             bool parse_special, int32_t *out, int64_t cap, int64_t *n_out,
                             struct kvx_err *err);

/* The bytes of token `id` (special tokens are rendered only when `special`).  Returns the
 * number of bytes the piece has; writes at most `cap` of them to `buf` (no NUL added). */
size_t kvx_token_piece(const struct kvx_model *m, int32_t id, bool special, char *buf, size_t cap);

bool kvx_token_is_eog(const struct kvx_model *m, int32_t id);

struct kvx_chat_msg {
    const char *role;      /* "system", "user", "assistant" */
    const char *content;
};
/* Render messages with the model's chat template (ChatML and the common families);
 * add_generation_prompt appends the assistant header.  *out is malloc'd; free() it. */
enum kvx_status kvx_chat_render(const struct kvx_model *m, const struct kvx_chat_msg *msgs,
                                size_t n_msgs, bool add_generation_prompt, char **out,
                                struct kvx_err *err);

/* ---------------------------------------------------------------------------------------------
 * Engine: the KV pool and worker threads */

/* How the cache stores K or V values (kv/codec.h has the formats). */
enum kvx_kv_codec {
    KVX_KV_CODEC_F32 = 0,
    KVX_KV_CODEC_F16,
    KVX_KV_CODEC_BF16,
    KVX_KV_CODEC_Q8,      /* int8, one scale per 32 values of a token */
    KVX_KV_CODEC_Q4,      /* 4-bit, scale and min per 32 values; centred per page, K rotated */
    KVX_KV_CODEC_KIVI2,   /* 2-bit: K per channel over groups of tokens, V per token; f16 residual */
    KVX_KV_CODEC_ROT4,    /* random Hadamard rotation, then 4-bit */
    KVX_KV_CODEC_ROT3,    /* random Hadamard rotation, then 3-bit */
    KVX_KV_CODEC_KIVI4,   /* kivi2's design at 4 bits */
    KVX_KV_CODEC_Q4PLAIN, /* q4's storage without the centring and rotation (llama.cpp q4_1-like) */
    KVX_KV_CODEC_COUNT,
};

/* KV eviction: once a layer holds more tokens than its budget, a policy chooses the tokens it
 * keeps (kv/evict.h).  Kept tokens keep their original positions (K is cached after RoPE). */
enum kvx_evict_policy {
    KVX_EVICT_NONE = 0,
    KVX_EVICT_SINKS,      /* StreamingLLM: the first `sinks` tokens and the most recent ones */
    KVX_EVICT_H2O,        /* heavy hitters: most attention received so far, plus a recent window */
    KVX_EVICT_SNAPKV,     /* at a prompt's end, the votes of its last queries (pooled), per KV head */
    KVX_EVICT_TOVA,       /* drop the tokens the newest query attends to least (heads averaged) */
    KVX_EVICT_COUNT,
};

/* How the mean budget is spread over layers. */
enum kvx_evict_schedule {
    KVX_EVICT_UNIFORM = 0,  /* every layer the same */
    KVX_EVICT_PYRAMID,      /* PyramidKV: linearly fewer tokens in higher layers, same total */
    KVX_EVICT_SCHEDULE_COUNT,
};

enum kvx_evict_pooling {
    KVX_EVICT_POOL_MAX = 0,
    KVX_EVICT_POOL_AVG,
};

struct kvx_evict_cfg {
    enum kvx_evict_policy policy;
    int64_t budget;            /* tokens per layer (the mean over layers); 0: use ratio */
    double ratio;              /* budget 0: keep this fraction of the tokens seen, in (0, 1] */
    enum kvx_evict_schedule schedule;
    int32_t pyramid_beta;      /* pyramid: the top layer gets 1/beta of the mean's scored part */
    int32_t sinks;             /* first tokens always kept; -1: 4 for sinks and snapkv, else 0 */
    int32_t window;            /* newest tokens always kept; -1: the policy's own (h2o: half the
                                * budget, snapkv: obs_window, sinks and tova: 0) */
    int32_t obs_window;        /* snapkv: the prompt's last queries that vote (default 32) */
    int32_t pool_kernel;       /* snapkv: odd pooling width over slots (default 7; 1: none) */
    enum kvx_evict_pooling pooling;  /* snapkv: max (default) or avg */
    int32_t slack;             /* a layer may exceed its budget by this many tokens before it
                                * evicts (down to the budget): one compaction per slack + 1
                                * decode steps instead of one per step (default 0) */
};
struct kvx_evict_cfg kvx_evict_cfg_default(void);
const char *kvx_evict_policy_name(enum kvx_evict_policy p);
/* "none", "sinks", "h2o", "snapkv", "tova"; false if unknown. */
bool kvx_evict_policy_parse(const char *s, enum kvx_evict_policy *out);

struct kvx_engine;

struct kvx_engine_cfg {
    size_t kv_budget_bytes;    /* 0: enough for n_ctx tokens of one session */
    int64_t n_ctx;             /* longest sequence; 0: the model's training context */
    enum kvx_kv_codec k_codec, v_codec;
    /* Per-layer codecs overriding k_codec/v_codec: "0-3:q8,4-29:q4" (K and V) or
     * "0-3:q4/q8" (K/V), layer ranges inclusive; NULL or "": none. */
    const char *kv_layers;
    int32_t kivi_group;        /* kivi2/kivi4: tokens per K quantization group (default 32) */
    int32_t kivi_residual;     /* kivi2/kivi4: newest V tokens kept in f16 too (default 128) */
    int32_t page_tokens;       /* tokens per KV page (multiple of 16) */
    int32_t n_threads;         /* 0: all online CPUs */
    int32_t n_batch;           /* most tokens per forward step (prefill chunk) */
    int32_t isa;               /* -1: best available; else an enum kvx_isa value (tests, bench) */
    /* Prefix cache (default on): whole blocks of page_tokens tokens that sessions computed stay
     * cached in a radix tree; a session whose tokens begin with cached blocks attaches their
     * pages instead of computing them.  Cached blocks no session uses are released, least
     * recently used first, when the budget runs out.  Models with sliding-window layers, and
     * sessions whose cache dropped tokens, do not take part. */
    bool prefix_cache;
    /* Eviction (policy KVX_EVICT_NONE: off).  With a policy, a feed reserves its pages chunk
     * by chunk, evicting after each, so KVX_ERR_KV_FULL can come after some chunks of a
     * feed ran (kvx_session_n_past says how many tokens are in). */
    struct kvx_evict_cfg evict;
};
struct kvx_engine_cfg kvx_engine_cfg_default(void);

enum kvx_status kvx_engine_create(const struct kvx_model *m, const struct kvx_engine_cfg *cfg,
                                  struct kvx_engine **out, struct kvx_err *err);
void kvx_engine_destroy(struct kvx_engine *e);

struct kvx_kv_stats {
    size_t budget_bytes;       /* the pool's byte budget */
    size_t bytes_used;         /* bytes held by allocated pages */
    size_t bytes_per_token;    /* from kv/layout: all layers, K and V */
    int64_t tokens_cached;     /* tokens held over all sessions */
    int64_t pages_used, pages_free_in_budget;
    int32_t page_tokens;
    int32_t n_layer_caches;    /* layers that own a cache */
    /* sharing (fork, prefix cache) */
    size_t bytes_shared;       /* bytes of pages two or more sessions use (each held once) */
    int64_t prefix_blocks;     /* cached blocks (page_tokens tokens of every layer) */
    size_t prefix_bytes;       /* bytes of the pages the prefix cache references */
    size_t prefix_bytes_idle;  /* of which no session uses: released first when the budget runs out */
    int64_t prefix_tokens_reused;   /* tokens attached instead of computed, since creation */
    int64_t prefix_blocks_evicted;  /* cached blocks released for room, since creation */
    /* eviction (all 0 when off) */
    int32_t evict_policy;      /* enum kvx_evict_policy */
    int64_t layer_tokens;      /* tokens stored, summed over owning layers and sessions */
    int64_t layer_tokens_evicted;   /* tokens evicted, summed likewise (since truncation) */
};
void kvx_engine_kv_stats(const struct kvx_engine *e, struct kvx_kv_stats *out);

/* A human-readable per-layer cache report (kind, codec, bytes/token, pages); malloc'd. */
char *kvx_engine_kv_report(const struct kvx_engine *e);

/* ---------------------------------------------------------------------------------------------
 * Sessions: one sequence each */

struct kvx_session;

enum kvx_status kvx_session_create(struct kvx_engine *e, struct kvx_session **out,
                                   struct kvx_err *err);
void kvx_session_destroy(struct kvx_session *s);

/* Append `n` tokens to the sequence and run them through the model (prefill in chunks of
 * n_batch).  Logits (n_vocab floats per row) are written to `logits` when it is not NULL:
 * for the last token only, or for every token when `all_logits` (n * n_vocab floats).
 * With the prefix cache, when the session's cache ends at a block boundary and the cache
 * holds more of its tokens, those are attached instead of computed (never the last token, and
 * not at all with `all_logits`).
 * On error the session is unchanged (its cache keeps the tokens it had). */
enum kvx_status kvx_session_feed(struct kvx_session *s, const int32_t *tokens, int64_t n,
                                 bool all_logits, float *logits, struct kvx_err *err);

int64_t kvx_session_n_past(const struct kvx_session *s);

/* One decode step for n sessions at once (continuous batching): tokens[i] is appended to
 * sessions[i] and all n tokens go through the model in one forward pass, so each weight
 * matrix is read once for all of them (the attention still reads each session's own cache).
 * The sessions must be distinct sessions of engine e.  logits: n rows of n_vocab floats, row i
 * for sessions[i] (NULL: none).  All or nothing: when one session's token is invalid, its
 * context is full or its page does not fit, no session changes and the error names it.
 * Engines that evict refuse (feed their sessions one at a time). */
enum kvx_status kvx_engine_decode(struct kvx_engine *e, struct kvx_session *const *sessions,
                                  const int32_t *tokens, int64_t n, float *logits,
                                  struct kvx_err *err);

/* A new session with the same tokens as `src`: it shares src's KV pages (no copy; a page is
 * copied when either session first writes into it) and copies its token history, so both can
 * continue differently.  KVX_ERR_KV_FULL (per-sequence codec state that does not fit) or
 * KVX_ERR_NOMEM leave src unchanged and *out NULL. */
enum kvx_status kvx_session_fork(struct kvx_session *src, struct kvx_session **out,
                                 struct kvx_err *err);

/* Drop every token after the first `n_keep`, releasing their pages (whole blocks may stay in
 * the prefix cache, for other sessions, until the budget needs them).  With eviction, n_keep
 * below the length at the last eviction empties the session (its evicted tokens cannot come
 * back): feed it again. */
enum kvx_status kvx_session_truncate(struct kvx_session *s, int64_t n_keep, struct kvx_err *err);

/* ---------------------------------------------------------------------------------------------
 * Sampling */

struct kvx_sampler;

struct kvx_sampler_cfg {
    float temperature;         /* <= 0: greedy */
    int32_t top_k;             /* <= 0: off */
    float top_p;               /* >= 1: off */
    float min_p;               /* <= 0: off */
    float repeat_penalty;      /* 1: off */
    int32_t repeat_last_n;     /* tokens looked back for the penalty */
    uint64_t seed;
};
struct kvx_sampler_cfg kvx_sampler_cfg_default(void);

enum kvx_status kvx_sampler_create(const struct kvx_sampler_cfg *cfg, int32_t n_vocab,
                                   struct kvx_sampler **out, struct kvx_err *err);
void kvx_sampler_destroy(struct kvx_sampler *s);
/* Choose a token from `logits` (n_vocab floats, not modified). */
int32_t kvx_sampler_sample(struct kvx_sampler *s, const float *logits);
/* Tell the sampler a token entered the sequence (prompt or generated), for penalties. */
void kvx_sampler_accept(struct kvx_sampler *s, int32_t token);

#ifdef __cplusplus
}
#endif
#endif
