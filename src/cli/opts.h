/* cli/opts: the kvx command's options, declared once in a table (cli/opts.c) from which the
 * parser and every `--help` text are generated. */
#ifndef KVX_CLI_OPTS_H
#define KVX_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvx.h"

/* Subcommands, as bits so an option can belong to several. */
enum {
    CMD_RUN = 1 << 0,
    CMD_LOGITS = 1 << 1,
    CMD_EVAL = 1 << 2,
    CMD_BENCH = 1 << 3,
    CMD_INSPECT = 1 << 4,
    CMD_PLAN = 1 << 5,
};

struct cli_opts {
    const char *model;
    const char *prompt;
    const char *tokens;
    const char *file;
    int64_t n_predict;
    float temp, top_p, min_p, repeat_penalty;
    int64_t top_k, repeat_last_n;
    int64_t seed;
    bool chat, json, kv_report, no_bos;
    int64_t threads;
    int64_t top;
    int64_t ctx;
    int64_t n_prompt, depth, reps;
    int64_t batch;
    int64_t page_tokens;
    int64_t kv_budget;        /* bytes; 0 = default */
    const char *kv_k, *kv_v, *kv;
    const char *kv_layer;     /* per-layer codec spec */
    const char *mla;          /* deepseek_v3 attention form: absorbed (default) or naive */
    const char *weights;      /* weight matrices: stored (default) or f32 */
    int64_t kivi_group;       /* 0 = default */
    int64_t kivi_residual;    /* -1 = default */
    const char *isa;
    /* eviction */
    const char *evict, *evict_budget, *evict_schedule, *evict_pool;
    int64_t evict_sinks, evict_window, evict_obs;   /* -1 = default */
    int64_t evict_slack;
    int64_t chunks;
    /* eval passkey / sweep */
    const char *lengths, *depths, *configs, *out;
    int64_t trials;
    bool passkey;
    const char *system;
    bool no_prefix_cache;
    bool serial_decode;        /* bench --sessions: one session per decode step */
    int64_t sessions, shared_prefix;   /* bench: sessions sharing a prompt prefix */
    bool help;
    /* plan */
    const char *preset, *plan_ctx, *gpu, *weights_dtype, *curve;
    int64_t concurrency, tp, gpus, prefix_shared;
    int64_t weights_bytes;    /* 0 = from the model */
    float price, util, reserve_gb;
    bool csv, compare, measure;
};

void cli_opts_default(struct cli_opts *o);
/* Parse argv[first..argc) for command `cmd`; prints nothing; on error returns false with a
 * one-line message in err (unknown flag, missing value, value out of range). */
bool cli_opts_parse(struct cli_opts *o, unsigned cmd, int argc, char **argv, int first, char *err,
                    size_t err_cap);
/* The options of `cmd`, one per line, for --help. */
void cli_opts_print_help(unsigned cmd, void *stream);

#endif
