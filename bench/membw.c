/* bench/membw: the machine's memory read bandwidth, the ceiling for LLM decode.
 *
 * A STREAM-like read test: a buffer (default 1 GiB, far larger than any last-level cache) is
 * split into one contiguous slice per thread; each thread first-touches its slice, then all
 * threads (released together by a barrier) read their slices with 64-byte vector loads into
 * four independent accumulators.  The main thread is worker 0 (an extra timing thread would
 * compete for the cores), and a rep's time runs from the first thread's start to the last
 * thread's end, as the threads themselves clock them; the best of --reps reps is reported as
 * bytes read / time (GB/s = 1e9 bytes/s).
 *
 * Built by bench/vs-llamacpp.sh:  cc -O2 -march=native -pthread bench/membw.c -o build/bench/membw
 * Usage: membw [--threads N] [--mib M] [--reps R] [--json]
 * Not here: write or copy bandwidth, latency, NUMA placement (threads are not pinned). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t membw_vec __attribute__((vector_size(64), aligned(64)));

struct membw_job {
    const membw_vec *base;
    size_t n_vec;               /* vectors in this thread's slice */
    pthread_barrier_t *start, *done;
    int reps;
    double *t0, *t1;            /* [reps] this thread's start and end of each rep */
    uint64_t sink;              /* stored where other threads can see it: the loads stay */
};

static double membw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sum of the slice with four accumulators (one would serialise on the add latency). */
static uint64_t membw_read(const membw_vec *p, size_t n)
{
    membw_vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
    }
    for (; i < n; i++)
        a0 += p[i];
    membw_vec a = a0 + a1 + a2 + a3;
    uint64_t s = 0;
    for (int k = 0; k < 8; k++)
        s += a[k];
    return s;
}

static void *membw_worker(void *arg)
{
    struct membw_job *j = arg;
    /* First touch from the reading thread, so pages are local to it (when that matters). */
    memset((void *)j->base, 1, j->n_vec * sizeof(membw_vec));
    for (int r = 0; r < j->reps; r++) {
        pthread_barrier_wait(j->start);
        j->t0[r] = membw_now();
        j->sink += membw_read(j->base, j->n_vec);
        j->t1[r] = membw_now();
        pthread_barrier_wait(j->done); /* no thread starts rep r+1 before all finished rep r */
    }
    return NULL;
}

static int membw_parse_int(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "membw: %s wants an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    long threads = sysconf(_SC_NPROCESSORS_ONLN), mib = 1024, reps = 5;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        long *dst = NULL, lo = 1, hi = 0;
        if (!strcmp(argv[i], "--threads"))
            dst = &threads, hi = 1024;
        else if (!strcmp(argv[i], "--mib"))
            dst = &mib, hi = 1 << 20;
        else if (!strcmp(argv[i], "--reps"))
            dst = &reps, hi = 1000;
        else if (!strcmp(argv[i], "--json")) {
            json = 1;
            continue;
        } else {
            fprintf(stderr, "usage: membw [--threads N] [--mib M] [--reps R] [--json]\n");
            return 2;
        }
        if (i + 1 >= argc || membw_parse_int(argv[i], argv[i + 1], lo, hi, dst))
            return 2;
        i++;
    }
    if (threads < 1)
        threads = 1;

    size_t bytes = (size_t)mib << 20;
    size_t n_vec = bytes / sizeof(membw_vec);
    membw_vec *buf = aligned_alloc(4096, n_vec * sizeof(membw_vec));
    struct membw_job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!buf || !jobs || !tid) {
        fprintf(stderr, "membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    double *times = calloc((size_t)(2 * threads * reps), sizeof *times);
    if (!times) {
        fprintf(stderr, "membw: out of memory\n");
        return 1;
    }
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    pthread_barrier_init(&done, NULL, (unsigned)threads);
    size_t per = n_vec / (size_t)threads;
    for (long t = 0; t < threads; t++) {
        size_t lo = per * (size_t)t, hi = t == threads - 1 ? n_vec : lo + per;
        double *t0 = times + 2 * t * reps;
        jobs[t] = (struct membw_job){buf + lo, hi - lo, &start, &done, (int)reps, t0, t0 + reps, 0};
    }
    for (long t = 1; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, membw_worker, &jobs[t])) {
            fprintf(stderr, "membw: pthread_create failed\n");
            return 1;
        }
    }
    membw_worker(&jobs[0]);
    for (long t = 1; t < threads; t++)
        pthread_join(tid[t], NULL);
    double best = 0.0;
    for (long r = 0; r < reps; r++) {
        double t0 = jobs[0].t0[r], t1 = jobs[0].t1[r];
        for (long t = 1; t < threads; t++) {
            t0 = jobs[t].t0[r] < t0 ? jobs[t].t0[r] : t0;
            t1 = jobs[t].t1[r] > t1 ? jobs[t].t1[r] : t1;
        }
        double gbs = (double)(n_vec * sizeof(membw_vec)) / (t1 - t0) / 1e9;
        if (gbs > best)
            best = gbs;
    }
    if (json)
        printf("{\"bytes\": %zu, \"threads\": %ld, \"reps\": %ld, \"read_gb_s\": %.2f}\n",
               n_vec * sizeof(membw_vec), threads, reps, best);
    else
        printf("membw: read %.2f GB/s (%ld MiB, %ld threads, best of %ld)\n", best, mib, threads,
               reps);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    free(times);
    free(tid);
    free(jobs);
    free(buf);
    return 0;
}
