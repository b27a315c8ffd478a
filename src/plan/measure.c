/* plan/measure: the `cpu` hardware entry, measured — a short multi-threaded memory-read
 * bandwidth test (each thread sums its own slice of a buffer far larger than the caches, for
 * about `seconds`) and the machine's RAM.  The decode roofline on a CPU is this number. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plan/plan.h"
#include "util/err.h"

#define MEASURE_BYTES ((size_t)256 << 20)

struct reader {
    const uint64_t *p;
    size_t n;                 /* words */
    double seconds;
    double bytes;             /* read */
    uint64_t sink;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Four independent accumulators so the loop is bound by loads, not by the add chain. */
static void *read_loop(void *arg)
{
    struct reader *r = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    double t0 = now_s();
    do {
        for (size_t i = 0; i + 4 <= r->n; i += 4) {
            a += r->p[i];
            b += r->p[i + 1];
            c += r->p[i + 2];
            d += r->p[i + 3];
        }
        r->bytes += (double)(r->n / 4 * 4) * sizeof *r->p;
    } while (now_s() - t0 < r->seconds);
    r->sink = a ^ b ^ c ^ d;
    return NULL;
}

enum kvx_status kvx_plan_measure_cpu(int32_t threads, double seconds, struct kvx_plan_hw *out,
                                     struct kvx_err *err)
{
    if (threads <= 0)
        threads = (int32_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0 || threads > 1024)
        threads = 1;
    uint64_t *buf = malloc(MEASURE_BYTES);
    struct reader *rs = calloc((size_t)threads, sizeof *rs);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!buf || !rs || !th) {
        free(buf), free(rs), free(th);
        return kvx_err_set(err, KVX_ERR_NOMEM, "measure: no memory for a %zu MiB buffer",
                           MEASURE_BYTES >> 20);
    }
    memset(buf, 1, MEASURE_BYTES);   /* touch every page before timing */
    size_t words = MEASURE_BYTES / sizeof *buf / (size_t)threads;
    int32_t started = 0;
    double t0 = now_s();
    for (int32_t i = 0; i < threads; i++) {
        rs[i] = (struct reader){.p = buf + (size_t)i * words, .n = words, .seconds = seconds};
        if (pthread_create(&th[i], NULL, read_loop, &rs[i]) == 0)
            started++;
        else
            break;
    }
    double bytes = 0;
    for (int32_t i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        bytes += rs[i].bytes;
    }
    double dt = now_s() - t0;
    free(buf), free(rs), free(th);
    if (started == 0 || dt <= 0)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "measure: could not start threads");
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "cpu");
    out->bw_bytes_s = bytes / dt;
    out->mem_bytes = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    snprintf(out->source, sizeof out->source,
             "measured: %d threads summing a %zu MiB buffer for %.2f s; RAM from sysconf",
             (int)started, MEASURE_BYTES >> 20, dt);
    return KVX_OK;
}
