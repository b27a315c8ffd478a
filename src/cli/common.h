/* cli/common: what every kvx subcommand shares — error printing, loading the model and the
 * engine from options, reading files, tokenizing into a growable array. */
#ifndef KVX_CLI_COMMON_H
#define KVX_CLI_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/opts.h"
#include "kvx.h"

/* Print "kvx: error: ..." to stderr; returns 1 (the exit status for errors). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, for a library error. */
int cli_fail_err(const struct kvx_err *err);

/* Open the model and an engine configured from the options (threads, ctx, batch, KV codec,
 * budget, page size, ISA).  n_ctx_min raises the context when the command needs more. */
int cli_open(const struct cli_opts *o, int64_t n_ctx, struct kvx_model **m, struct kvx_engine **e);
/* The model options of o (-m, --mla) as a kvx_model_cfg; non-zero after a message. */
int cli_model_cfg(const struct cli_opts *o, struct kvx_model_cfg *mc);
/* The engine part of cli_open, on a model already open (several engines may share it). */
int cli_open_engine(const struct cli_opts *o, int64_t n_ctx, const struct kvx_model *m,
                    struct kvx_engine **e);

/* Whole file into a malloc'd NUL-terminated buffer. */
int cli_read_file(const char *path, char **buf, size_t *len);

/* Tokenize into *ids (malloc'd). */
int cli_tokenize(const struct kvx_model *m, const char *text, size_t len, bool add_bos,
                 bool special, int32_t **ids, int64_t *n);

/* Peak resident set size of this process, bytes. */
size_t cli_peak_rss(void);
double cli_now(void);

int cmd_run(const struct cli_opts *o);
int cmd_logits(const struct cli_opts *o);
int cmd_eval(const struct cli_opts *o, const char *what);
int cmd_bench(const struct cli_opts *o);
int cmd_inspect(const struct cli_opts *o);
int cmd_plan(const struct cli_opts *o);

#endif
