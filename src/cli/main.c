/* cli/main: `kvx COMMAND [options]` — dispatch and help.  stdout carries only the result of a
 * command; progress, statistics and errors go to stderr. */
#include <stdio.h>
#include <string.h>

#include "cli/common.h"


struct command {
    const char *name;
    unsigned bit;
    const char *usage, *summary;
};

static const struct command commands[] = {
    {"run", CMD_RUN, "kvx run -m MODEL -p TEXT [-n N] [--temp T] [--seed S] [--chat]",
     "generate text from a prompt"},
    {"logits", CMD_LOGITS, "kvx logits -m MODEL (-p TEXT | --tokens \"1 2 3\") [--top K] --json",
     "print the logits of every position as JSON"},
    {"eval", CMD_EVAL,
     "kvx eval ppl -m MODEL -f TEXTFILE [-c CTX] [--json]\n"
     "       kvx eval kld -m MODEL -f TEXTFILE [-c CTX] [cache options] [--chunks N] [--json]\n"
     "       kvx eval passkey -m MODEL [--lengths 1024,4096] [--depths 0,0.5,1] [--trials N] "
     "[-f TEXTFILE] [cache options] [--json]\n"
     "       kvx eval sweep -m MODEL -f TEXTFILE --configs FILE [-c CTX] [--out PREFIX] [--passkey]",
     "quality: perplexity; KL divergence and top-1 against an f32 cache; passkey retrieval; "
     "sweeps over cache configurations"},
    {"bench", CMD_BENCH,
     "kvx bench -m MODEL [-p 512] [-n 128] [-d DEPTH] [--sessions N --shared-prefix P] [--json]",
     "prefill and decode tokens/s at a context depth, peak RSS; KV held by N sessions sharing a prefix"},
    {"inspect", CMD_INSPECT, "kvx inspect -m MODEL | kvx inspect MODEL",
     "metadata, tensors, per-layer KV cache declaration and bytes/token"},
    {"plan", CMD_PLAN,
     "kvx plan (-m MODEL | --preset NAME)[,...] [--ctx 8K,128K] [--gpu h100] [-C 16] [--json|--csv]",
     "KV bytes per token and sequence, what fits, decode roofline and $/Mtok"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "kvx — LLM inference built around its KV cache\n\nusage: kvx COMMAND [options]\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`kvx COMMAND --help` lists a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    const struct command *c = NULL;
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            c = &commands[i];
    if (!c)
        return cli_fail("unknown command '%s' (see kvx --help)", argv[1]);
    int first = 2;
    const char *what = NULL;
    if (c->bit == CMD_EVAL && argc > 2 && argv[2][0] != '-')
        what = argv[first++];
    struct cli_opts o;
    cli_opts_default(&o);
    if (c->bit == CMD_INSPECT && argc > 2 && argv[2][0] != '-')
        o.model = argv[first++];
    char err[512];
    if (!cli_opts_parse(&o, c->bit, argc, argv, first, err, sizeof err))
        return cli_fail("%s: %s", c->name, err);
    if (o.help) {
        printf("usage: %s\n\n%s\n\noptions:\n", c->usage, c->summary);
        cli_opts_print_help(c->bit, stdout);
        return 0;
    }
    switch (c->bit) {
    case CMD_RUN: return cmd_run(&o);
    case CMD_LOGITS: return cmd_logits(&o);
    case CMD_EVAL: return cmd_eval(&o, what);
    case CMD_BENCH: return cmd_bench(&o);
    case CMD_INSPECT: return cmd_inspect(&o);
    case CMD_PLAN: return cmd_plan(&o);
    default: return cli_fail("internal error: command not dispatched");
    }
}
