/* The thread pool shared by acoustic.c and elastic.c: POSIX threads started per call, one (model, shot) pair at a
 * time. Included once per library, before the per-type bodies. */
#ifndef PROBINV_POOL_H
#define PROBINV_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Run fn(a, bs) for bs = 0 .. n_bs - 1 on up to a->n_threads threads (the caller's thread included); work is
   handed out one (model, shot) pair at a time. Returns the OR of fn's error codes. */
typedef struct {
    const void *a;
    int (*fn)(const void *, int64_t);
    int64_t n;
    atomic_llong next;
    atomic_int err;
} Pool;

static void *pool_worker(void *arg) {
    Pool *pool = arg;
    for (;;) {
        int64_t bs = atomic_fetch_add(&pool->next, 1);
        if (bs >= pool->n) break;
        int e = pool->fn(pool->a, bs);
        if (e) atomic_fetch_or(&pool->err, e);
    }
    return NULL;
}

static int run_parallel(const void *a, int64_t n, int64_t n_threads, int (*fn)(const void *, int64_t)) {
    Pool pool;
    pool.a = a;
    pool.fn = fn;
    pool.n = n;
    atomic_init(&pool.next, 0);
    atomic_init(&pool.err, 0);
    int64_t nt = n_threads < n ? n_threads : n;
    if (nt > 256) nt = 256;
    pthread_t threads[256];
    int64_t started = 0;
    for (int64_t t = 1; t < nt; t++) {
        if (pthread_create(&threads[started], NULL, pool_worker, &pool) != 0) break;  /* fewer threads: still right */
        started++;
    }
    pool_worker(&pool);
    for (int64_t t = 0; t < started; t++) pthread_join(threads[t], NULL);
    return atomic_load(&pool.err);
}

#endif /* PROBINV_POOL_H */
