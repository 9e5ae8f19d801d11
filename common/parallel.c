/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <unistd.h>

#include "common/apb_parallel.h"

struct _apb_pf {
    void (*fn)(void *, size_t, size_t);
    void *ctx;
    size_t lo, hi;
};

static void *_apb_pf_run(void *p)
{
    struct _apb_pf *a = p;
    a->fn(a->ctx, a->lo, a->hi);
    return NULL;
}

void apb_parallel_for(size_t n, size_t grain, void (*fn)(void *ctx, size_t lo, size_t hi), void *ctx)
{
    enum { MAXT = 32 };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = ncpu > 0 ? (size_t)ncpu : 1;
    if (nt > MAXT)
        nt = MAXT;
    if (grain == 0)
        grain = 1;
    if (nt > (n + grain - 1) / grain)
        nt = (n + grain - 1) / grain;
    if (nt <= 1) {
        if (n)
            fn(ctx, 0, n);
        return;
    }
    pthread_t th[MAXT];
    struct _apb_pf a[MAXT];
    int started[MAXT] = {0};
    for (size_t t = 0; t < nt; t++) {
        a[t] = (struct _apb_pf){fn, ctx, n * t / nt, n * (t + 1) / nt};
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, _apb_pf_run, &a[t]) == 0;
    }
    fn(ctx, a[0].lo, a[0].hi);
    for (size_t t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            fn(ctx, a[t].lo, a[t].hi); /* no thread: do its range here */
    }
}
