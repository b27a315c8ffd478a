/* util/threadpool: spin-then-sleep worker threads for short parallel regions. */
#include "util/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/err.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* A waiting thread first spins with pause instructions (the next region usually starts within
 * microseconds), then yields the CPU between checks (so that an oversubscribed machine still
 * runs the thread it waits for), and a worker finally sleeps on the condition variable. */
#define SPIN_PAUSE 2048
#define SPIN_ROUNDS 20000

static void spin_wait(int spins)
{
    if (spins < SPIN_PAUSE)
        cpu_relax();
    else
        sched_yield();
}

struct worker {
    struct kvx_threadpool *tp;
    pthread_t thread;
    int ith;
};

struct kvx_threadpool {
    int n_threads;
    struct worker *workers;          /* n_threads - 1 workers; thread 0 is the caller */
    kvx_parallel_fn fn;
    void *ctx;
    atomic_uint generation;          /* bumped once per region */
    atomic_int pending;              /* workers still running the current region */
    atomic_bool stop;
    atomic_int sleepers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct kvx_threadpool *tp = w->tp;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&tp->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&tp->stop, memory_order_acquire)) {
            if (++spins < SPIN_ROUNDS) {
                spin_wait(spins);
                continue;
            }
            pthread_mutex_lock(&tp->lock);
            atomic_fetch_add(&tp->sleepers, 1);
            while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->stop))
                pthread_cond_wait(&tp->wake, &tp->lock);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->lock);
            spins = 0;
        }
        if (atomic_load_explicit(&tp->stop, memory_order_acquire))
            return NULL;
        seen = gen;
        tp->fn(tp->ctx, w->ith, tp->n_threads);
        atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_release);
    }
}

enum kvx_status kvx_threadpool_create(int n_threads, struct kvx_threadpool **out,
                                      struct kvx_err *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return kvx_err_set(err, KVX_ERR_INVALID_ARG, "thread count %d is outside 1..1024",
                           n_threads);
    struct kvx_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp)
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory for the thread pool");
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->lock, NULL);
    pthread_cond_init(&tp->wake, NULL);
    tp->workers = calloc((size_t)n_threads, sizeof *tp->workers);
    if (!tp->workers) {
        kvx_threadpool_destroy(tp);
        return kvx_err_set(err, KVX_ERR_NOMEM, "out of memory for the thread pool");
    }
    for (int i = 1; i < n_threads; i++) {
        tp->workers[i].tp = tp;
        tp->workers[i].ith = i;
        if (pthread_create(&tp->workers[i].thread, NULL, worker_main, &tp->workers[i]) != 0) {
            tp->n_threads = i; /* destroy joins only the threads that started */
            kvx_threadpool_destroy(tp);
            return kvx_err_set(err, KVX_ERR_NOMEM, "could not start worker thread %d", i);
        }
    }
    *out = tp;
    return KVX_OK;
}

void kvx_threadpool_destroy(struct kvx_threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->lock);
    atomic_store(&tp->stop, true);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->lock);
    if (tp->workers)
        for (int i = 1; i < tp->n_threads; i++)
            pthread_join(tp->workers[i].thread, NULL);
    pthread_cond_destroy(&tp->wake);
    pthread_mutex_destroy(&tp->lock);
    free(tp->workers);
    free(tp);
}

int kvx_threadpool_size(const struct kvx_threadpool *tp) { return tp->n_threads; }

void kvx_threadpool_run(struct kvx_threadpool *tp, kvx_parallel_fn fn, void *ctx)
{
    if (tp->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->pending, tp->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&tp->generation, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->lock);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->lock);
    }
    fn(ctx, 0, tp->n_threads);
    for (int spins = 0; atomic_load_explicit(&tp->pending, memory_order_acquire) > 0; spins++)
        spin_wait(spins);
}

void kvx_threadpool_run_items(struct kvx_threadpool *tp, kvx_parallel_fn fn, void *ctx,
                              int64_t n_items)
{
    if (n_items < 2)
        fn(ctx, 0, 1);
    else
        kvx_threadpool_run(tp, fn, ctx);
}

void kvx_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin, int64_t *end)
{
    if (align < 1)
        align = 1;
    int64_t units = (n + align - 1) / align;
    int64_t per = units / nth, extra = units % nth;
    int64_t b = (int64_t)ith * per + (ith < extra ? ith : extra);
    int64_t e = b + per + (ith < extra ? 1 : 0);
    *begin = b * align < n ? b * align : n;
    *end = e * align < n ? e * align : n;
}

int kvx_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
