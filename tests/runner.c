/* tests/runner.c: runs every registered test (or those matching argv[1]) and prints
 * "N passed, M failed, K skipped"; exit status 1 when any failed. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define MAX_TESTS 1024

struct test_entry {
    const char *name, *file;
    kvx_test_fn fn;
};

static struct test_entry registry[MAX_TESTS];
static int n_registered;
static int current_failures;
static bool current_skipped;

void kvx_test_register(const char *name, const char *file, kvx_test_fn fn)
{
    if (n_registered == MAX_TESTS) {
        fprintf(stderr, "too many tests (raise MAX_TESTS)\n");
        exit(2);
    }
    registry[n_registered++] = (struct test_entry){name, file, fn};
}

void kvx_test_fail(const char *file, int line, const char *fmt, ...)
{
    if (current_failures < 20) {
        fprintf(stderr, "  %s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    current_failures++;
}

void kvx_test_skip(const char *why)
{
    fprintf(stderr, "  skipped: %s\n", why);
    current_skipped = true;
}

const char *kvx_test_fixture(const char *name)
{
    static char buf[4096]; /* runner is single-threaded */
    const char *dir = getenv("KVX_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/fixtures", name);
    return buf;
}

const char *kvx_test_model_path(void)
{
    const char *p = getenv("KVX_MODEL");
    if (!p)
        p = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    return access(p, R_OK) == 0 ? p : NULL;
}

static int by_file_then_name(const void *a, const void *b)
{
    const struct test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(registry, (size_t)n_registered, sizeof registry[0], by_file_then_name);
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n_registered; i++) {
        if (filter && !strstr(registry[i].name, filter) && !strstr(registry[i].file, filter))
            continue;
        current_failures = 0;
        current_skipped = false;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        registry[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        const char *verdict = current_failures ? "FAIL" : current_skipped ? "skip" : "ok";
        fprintf(stderr, "%-4s %-48s %8.1f ms\n", verdict, registry[i].name, ms);
        if (current_failures)
            failed++;
        else if (current_skipped)
            skipped++;
        else
            passed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
