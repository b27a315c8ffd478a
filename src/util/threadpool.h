/* util/threadpool: a fixed set of worker threads that run one parallel region at a time.
 *
 * kvx_threadpool_run(tp, fn, ctx) calls fn(ctx, ith, nth) once on each of the nth threads (the
 * calling thread is thread 0) and returns when all have finished.  A decode step runs a few
 * hundred short regions, so workers spin briefly on an atomic generation counter before
 * sleeping on a condition variable: waking costs well under a microsecond while busy, nothing
 * while idle.  Not reentrant: one region at a time, from one thread. */
#ifndef KVX_UTIL_THREADPOOL_H
#define KVX_UTIL_THREADPOOL_H

#include "kvx.h"

struct kvx_threadpool;

typedef void (*kvx_parallel_fn)(void *ctx, int ith, int nth);

enum kvx_status kvx_threadpool_create(int n_threads, struct kvx_threadpool **out,
                                      struct kvx_err *err);
void kvx_threadpool_destroy(struct kvx_threadpool *tp);
int kvx_threadpool_size(const struct kvx_threadpool *tp);
void kvx_threadpool_run(struct kvx_threadpool *tp, kvx_parallel_fn fn, void *ctx);
/* The same for a region over n_items independent items that fn splits by (ith, nth): with
 * fewer than 2 items, fn(ctx, 0, 1) on the calling thread alone.  A decode step's per-token
 * work (a norm, RoPE, quantizing one row) is shorter than waking the other threads and waiting
 * for them to see that they have nothing to do. */
void kvx_threadpool_run_items(struct kvx_threadpool *tp, kvx_parallel_fn fn, void *ctx,
                              int64_t n_items);

/* The half-open share [*begin, *end) of n items that thread ith of nth takes, in chunks
 * rounded to multiples of `align` (the last share takes the remainder). */
void kvx_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin, int64_t *end);

/* Number of online CPUs (at least 1). */
int kvx_cpu_count(void);

#endif
