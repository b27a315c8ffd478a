/* cli/opts: one table of options; parsing and help texts come from it. */
#include "cli/opts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG, OPT_BYTES };

struct opt {
    const char *name;     /* long form, without "--" */
    char short_name;      /* 0 if none */
    enum opt_type type;
    size_t offset;
    unsigned cmds;
    double min, max;      /* numeric range */
    const char *meta, *help;
};

#define ALL (CMD_RUN | CMD_LOGITS | CMD_EVAL | CMD_BENCH | CMD_INSPECT | CMD_PLAN)
#define GEN (CMD_RUN | CMD_LOGITS | CMD_EVAL | CMD_BENCH)
#define O(f) offsetof(struct cli_opts, f)

static const struct opt opts[] = {
    {"model", 'm', OPT_STR, O(model), ALL, 0, 0, "FILE", "model file (GGUF)"},
    {"prompt", 'p', OPT_STR, O(prompt), CMD_RUN | CMD_LOGITS, 0, 0, "TEXT", "prompt text"},
    {"tokens", 0, OPT_STR, O(tokens), CMD_LOGITS, 0, 0, "\"ID ID ...\"", "token ids instead of a prompt"},
    {"file", 'f', OPT_STR, O(file), CMD_EVAL | CMD_RUN, 0, 0, "FILE", "text file (eval: the corpus; run: the prompt)"},
    {"n-predict", 'n', OPT_INT, O(n_predict), CMD_RUN | CMD_BENCH, 0, 1e9, "N", "tokens to generate (bench: decode steps)"},
    {"temp", 0, OPT_FLOAT, O(temp), CMD_RUN, 0, 100, "T", "temperature; 0 = greedy"},
    {"top-k", 0, OPT_INT, O(top_k), CMD_RUN, 0, 1e9, "K", "keep the K most likely tokens; 0 = off"},
    {"top-p", 0, OPT_FLOAT, O(top_p), CMD_RUN, 0, 1, "P", "nucleus sampling; 1 = off"},
    {"min-p", 0, OPT_FLOAT, O(min_p), CMD_RUN, 0, 1, "P", "drop tokens below P x the best; 0 = off"},
    {"repeat-penalty", 0, OPT_FLOAT, O(repeat_penalty), CMD_RUN, 0, 100, "R", "penalty for repeated tokens; 1 = off"},
    {"repeat-last-n", 0, OPT_INT, O(repeat_last_n), CMD_RUN, 0, 1e9, "N", "tokens looked back for the penalty"},
    {"seed", 's', OPT_INT, O(seed), CMD_RUN | CMD_EVAL, 0, 9.2e18, "S", "random seed (eval passkey: keys and filler)"},
    {"chat", 0, OPT_FLAG, O(chat), CMD_RUN | CMD_EVAL, 0, 0, NULL, "wrap the prompt in the model's chat template (eval passkey: the question)"},
    {"system", 0, OPT_STR, O(system), CMD_RUN, 0, 0, "TEXT", "system message for --chat"},
    {"kv-report", 0, OPT_FLAG, O(kv_report), CMD_RUN, 0, 0, NULL, "print the per-layer KV cache report to stderr"},
    {"no-bos", 0, OPT_FLAG, O(no_bos), CMD_RUN | CMD_LOGITS | CMD_EVAL, 0, 0, NULL, "never add a BOS token"},
    {"json", 0, OPT_FLAG, O(json), ALL, 0, 0, NULL, "print one JSON object on stdout"},
    {"top", 0, OPT_INT, O(top), CMD_LOGITS, 1, 1e6, "K", "print the K best (id, logit) per position instead of all logits"},
    {"threads", 't', OPT_INT, O(threads), GEN, 0, 512, "N", "worker threads; 0 = all CPUs"},
    {"ctx", 'c', OPT_INT, O(ctx), GEN | CMD_INSPECT, 0, 1 << 30, "N", "context length (eval: window size)"},
    {"chunks", 0, OPT_INT, O(chunks), CMD_EVAL, 0, 1e9, "N", "eval: number of windows; 0 = all the text allows"},
    {"lengths", 0, OPT_STR, O(lengths), CMD_EVAL, 0, 0, "L[,L...]", "eval passkey: prompt lengths in tokens (default 1024,2048,4096,8000)"},
    {"depths", 0, OPT_STR, O(depths), CMD_EVAL, 0, 0, "D[,D...]", "eval passkey: where the key sits, 0..1 (default 0,0.25,0.5,0.75,1)"},
    {"trials", 0, OPT_INT, O(trials), CMD_EVAL, 1, 10000, "N", "eval passkey: trials per length and depth (default 2)"},
    {"configs", 0, OPT_STR, O(configs), CMD_EVAL, 0, 0, "FILE", "eval sweep: configurations, one per line: NAME OPTIONS..."},
    {"out", 0, OPT_STR, O(out), CMD_EVAL, 0, 0, "PREFIX", "eval sweep: write PREFIX.csv, PREFIX.md, PREFIX.svg (default sweep)"},
    {"passkey", 0, OPT_FLAG, O(passkey), CMD_EVAL, 0, 0, NULL, "eval sweep: measure passkey accuracy of each configuration too"},
    {"n-prompt", 'p', OPT_INT, O(n_prompt), CMD_BENCH, 1, 1e6, "N", "bench: prompt tokens (prefill)"},
    {"depth", 'd', OPT_INT, O(depth), CMD_BENCH, 0, 1e8, "D", "bench: tokens already in the context"},
    {"reps", 'r', OPT_INT, O(reps), CMD_BENCH, 1, 1000, "N", "bench: repetitions (the best is reported)"},
    {"batch", 'b', OPT_INT, O(batch), GEN, 1, 8192, "N", "tokens per forward step during prefill"},
    {"page-tokens", 0, OPT_INT, O(page_tokens), GEN | CMD_INSPECT, 16, 65536, "N", "tokens per KV page (multiple of 16)"},
    {"kv-budget", 0, OPT_BYTES, O(kv_budget), GEN, 1, 1e15, "BYTES", "KV pool budget, e.g. 512M, 2G; default: one full context"},
    {"mla", 0, OPT_STR, O(mla), ALL, 0, 0, "FORM", "DeepSeek-V3 attention: absorbed (default; latent cache) or naive (per-head K/V cache, as transformers)"},
    {"weights", 0, OPT_STR, O(weights), GEN, 0, 0, "FORM", "weight matrices: stored (default: the file's values, q4_0/q4_1/q8_0 rows interleaved 16 at a time where the CPU has AVX2 or AVX-512), rows (the file's layout as is) or f32 (converted when loading: f32 activations, none rounded to 8 bits; 4 bytes a weight, slower)"},
    {"kv", 0, OPT_STR, O(kv), GEN | CMD_INSPECT, 0, 0, "CODEC", "KV storage for K and V: f16 (default), f32, bf16, q8, q4, q4plain, kivi2, kivi4, rot4, rot3"},
    {"kv-k", 0, OPT_STR, O(kv_k), GEN | CMD_INSPECT, 0, 0, "CODEC", "K storage codec"},
    {"kv-v", 0, OPT_STR, O(kv_v), GEN | CMD_INSPECT, 0, 0, "CODEC", "V storage codec"},
    {"kv-layer", 0, OPT_STR, O(kv_layer), GEN | CMD_INSPECT, 0, 0, "SPEC", "per-layer codecs, e.g. 0-3:q8,4-29:q4 or 0-3:q4/q8 (K/V)"},
    {"kivi-group", 0, OPT_INT, O(kivi_group), GEN | CMD_INSPECT | CMD_PLAN, 16, 65536, "G", "kivi2/kivi4: tokens per K quantization group (default 32)"},
    {"kivi-residual", 0, OPT_INT, O(kivi_residual), GEN | CMD_INSPECT | CMD_PLAN, 0, 65536, "R", "kivi2/kivi4: newest V tokens also kept in f16 (default 128)"},
    {"isa", 0, OPT_STR, O(isa), GEN, 0, 0, "ISA", "kernels: auto, scalar, avx2, avx512"},
    {"no-prefix-cache", 0, OPT_FLAG, O(no_prefix_cache), GEN, 0, 0, NULL, "never share KV pages of identical prompt prefixes between sessions"},
    {"sessions", 0, OPT_INT, O(sessions), CMD_BENCH, 1, 1e5, "N", "bench: N sessions, each the shared prefix + its own prompt (-p) + decode (-n)"},
    {"shared-prefix", 0, OPT_INT, O(shared_prefix), CMD_BENCH, 0, 1e8, "P", "bench --sessions: prompt-prefix tokens every session shares"},
    {"serial-decode", 0, OPT_FLAG, O(serial_decode), CMD_BENCH, 0, 0, NULL, "bench --sessions: decode one session per step instead of all in one batched step"},
    {"evict", 0, OPT_STR, O(evict), GEN, 0, 0, "POLICY", "KV eviction: none (default), sinks, h2o, snapkv, tova"},
    {"evict-budget", 0, OPT_STR, O(evict_budget), GEN, 0, 0, "N|RATIO", "tokens kept per layer (1024), or a share of the tokens seen (0.5, 25%)"},
    {"evict-schedule", 0, OPT_STR, O(evict_schedule), GEN, 0, 0, "NAME", "budget per layer: uniform (default) or pyramid (more in lower layers)"},
    {"evict-sinks", 0, OPT_INT, O(evict_sinks), GEN, 0, 1 << 30, "S", "first tokens always kept (default: 4 for sinks and snapkv, else 0)"},
    {"evict-window", 0, OPT_INT, O(evict_window), GEN, 0, 1 << 30, "W", "newest tokens always kept (default: h2o half the budget, snapkv --evict-obs)"},
    {"evict-obs", 0, OPT_INT, O(evict_obs), GEN, 1, 8192, "W", "snapkv: a prompt's last queries that vote (default 32)"},
    {"evict-slack", 0, OPT_INT, O(evict_slack), GEN, 0, 1 << 30, "N", "evict only once a layer is N tokens over its budget (fewer compactions in decode; default 0)"},
    {"evict-pool", 0, OPT_STR, O(evict_pool), GEN, 0, 0, "max|avg[:K]", "snapkv: pooling of the votes and its odd width (default max:7)"},
    {"preset", 0, OPT_STR, O(preset), CMD_PLAN, 0, 0, "NAME[,NAME]", "plan: model preset(s) from data/plan/models.tsv (-m takes FILE[,FILE])"},
    {"ctx", 'c', OPT_STR, O(plan_ctx), CMD_PLAN, 0, 0, "L[,L...]", "plan: context lengths, e.g. 4096,32K,128K (default 8192)"},
    {"kv", 0, OPT_STR, O(kv), CMD_PLAN, 0, 0, "CODEC", "plan: K and V storage: f16 (default), bf16, f32, q8, q4, q4plain, kivi2, kivi4, rot4, rot3, fp8, fp4"},
    {"kv-k", 0, OPT_STR, O(kv_k), CMD_PLAN, 0, 0, "CODEC", "plan: K storage codec"},
    {"kv-v", 0, OPT_STR, O(kv_v), CMD_PLAN, 0, 0, "CODEC", "plan: V storage codec"},
    {"concurrency", 'C', OPT_INT, O(concurrency), CMD_PLAN, 0, 1e9, "C", "plan: sequences decoded together per replica (default 1)"},
    {"gpu", 0, OPT_STR, O(gpu), CMD_PLAN, 0, 0, "NAME", "plan: device from data/plan/hardware.tsv, or cpu (measured); default h100"},
    {"gpus", 0, OPT_INT, O(gpus), CMD_PLAN, 0, 1e6, "N", "plan: devices in all, a multiple of --tp (default = tp)"},
    {"tp", 0, OPT_INT, O(tp), CMD_PLAN, 0, 1024, "N", "plan: tensor-parallel devices per replica (default 1)"},
    {"price", 0, OPT_FLOAT, O(price), CMD_PLAN, 0, 1e6, "USD", "plan: price of one device per hour, for $ per million output tokens"},
    {"util", 0, OPT_FLOAT, O(util), CMD_PLAN, 0, 1, "F", "plan: fraction of device memory usable (default 0.9)"},
    {"reserve-gb", 0, OPT_FLOAT, O(reserve_gb), CMD_PLAN, 0, 1e6, "GB", "plan: memory per replica kept for activations (default 0)"},
    {"prefix-shared", 0, OPT_INT, O(prefix_shared), CMD_PLAN, 0, 1e12, "N", "plan: prompt-prefix tokens all sequences share (stored once)"},
    {"weights-bytes", 0, OPT_BYTES, O(weights_bytes), CMD_PLAN, 1, 1e16, "BYTES", "plan: weight bytes (overrides the model's)"},
    {"weights-dtype", 0, OPT_STR, O(weights_dtype), CMD_PLAN, 0, 0, "DTYPE", "plan: preset weights as bf16 (default), f16, f32, fp8, int8, q8_0, q4_0, q4_1, int4, fp4"},
    {"csv", 0, OPT_FLAG, O(csv), CMD_PLAN, 0, 0, NULL, "plan: one CSV row per model and context"},
    {"compare", 0, OPT_FLAG, O(compare), CMD_PLAN, 0, 0, NULL, "plan: models side by side (also implied by several models)"},
    {"curve", 0, OPT_STR, O(curve), CMD_PLAN, 0, 0, "FILE.svg", "plan: KV bytes vs context (1K..1M) as SVG, and FILE.csv beside it"},
    {"measure", 0, OPT_FLAG, O(measure), CMD_PLAN, 0, 0, NULL, "plan: measure this machine's memory bandwidth (~1 s); implies --gpu cpu"},
    {"help", 'h', OPT_FLAG, O(help), ALL, 0, 0, NULL, "this help"},
};

void cli_opts_default(struct cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 64;
    o->temp = 0.8f;
    o->top_k = 40;
    o->top_p = 0.95f;
    o->min_p = 0.05f;
    o->repeat_penalty = 1.0f;
    o->repeat_last_n = 64;
    o->seed = 0;
    o->ctx = 0;
    o->n_prompt = 512;
    o->reps = 1;
    o->batch = 512;
    o->page_tokens = 256;
    o->kivi_residual = -1;
    o->evict_sinks = -1;
    o->evict_window = -1;
    o->evict_obs = -1;
    o->concurrency = 1;
    o->tp = 1;
    o->util = 0.9f;
}

static const struct opt *find_opt(unsigned cmd, const char *arg)
{
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const struct opt *o = &opts[i];
        if (!(o->cmds & cmd))
            continue;
        if (arg[1] == '-' && strcmp(arg + 2, o->name) == 0)
            return o;
        if (arg[1] != '-' && o->short_name && arg[1] == o->short_name && arg[2] == '\0')
            return o;
    }
    return NULL;
}

static bool parse_bytes(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno)
        return false;
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1048576.0; end++; break;
    case 'g': case 'G': mult = 1073741824.0; end++; break;
    case 't': case 'T': mult = 1099511627776.0; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end += *end == 'i' ? (end[1] == 'B' ? 2 : 1) : 1;
    if (*end)
        return false;
    *out = v * mult;
    return true;
}

static bool set_value(struct cli_opts *dst, const struct opt *o, const char *val, char *err,
                      size_t cap)
{
    char *base = (char *)dst + o->offset;
    if (o->type == OPT_STR) {
        *(const char **)base = val;
        return true;
    }
    double v;
    char *end = NULL;
    errno = 0;
    if (o->type == OPT_BYTES) {
        if (!parse_bytes(val, &v)) {
            snprintf(err, cap, "--%s: '%s' is not a size (e.g. 512M, 2G)", o->name, val);
            return false;
        }
    } else {
        v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v)) {
            snprintf(err, cap, "--%s: '%s' is not a number", o->name, val);
            return false;
        }
        if (o->type == OPT_INT && v != floor(v)) {
            snprintf(err, cap, "--%s: '%s' is not an integer", o->name, val);
            return false;
        }
    }
    if (v < o->min || v > o->max) {
        snprintf(err, cap, "--%s: %s is outside %g..%g", o->name, val, o->min, o->max);
        return false;
    }
    if (o->type == OPT_FLOAT)
        *(float *)base = (float)v;
    else
        *(int64_t *)base = (int64_t)v;
    return true;
}

bool cli_opts_parse(struct cli_opts *o, unsigned cmd, int argc, char **argv, int first, char *err,
                    size_t cap)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            snprintf(err, cap, "unexpected argument '%s'", a);
            return false;
        }
        const struct opt *d = find_opt(cmd, a);
        if (!d) {
            snprintf(err, cap, "unknown option '%s' (see --help)", a);
            return false;
        }
        if (d->type == OPT_FLAG) {
            *(bool *)((char *)o + d->offset) = true;
            continue;
        }
        if (i + 1 >= argc) {
            snprintf(err, cap, "option '%s' needs a value (%s)", a, d->meta);
            return false;
        }
        if (!set_value(o, d, argv[++i], err, cap))
            return false;
    }
    return true;
}

void cli_opts_print_help(unsigned cmd, void *stream)
{
    FILE *f = stream;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const struct opt *o = &opts[i];
        if (!(o->cmds & cmd))
            continue;
        char lhs[64];
        if (o->short_name)
            snprintf(lhs, sizeof lhs, "-%c, --%s %s", o->short_name, o->name, o->meta ? o->meta : "");
        else
            snprintf(lhs, sizeof lhs, "    --%s %s", o->name, o->meta ? o->meta : "");
        fprintf(f, "  %-30s %s\n", lhs, o->help);
    }
}
