/* SPDX-License-Identifier: MIT */
/**
 * @brief "apb-critical": a critical-path priority policy for the APB / Spava graphs.
 *
 * Idea. In APB, host r's compressed block (the `select` task, fed by `qmean`) is read by the
 * attention of every later host r' > r: the compress -> allgather chain of low hosts is the
 * critical path of a layer, and the attention of the host that is already computable is the
 * work that can wait. So one central ready queue, ordered by
 *   1. the graph's priority (it puts earlier layers first: the layer pipeline),
 *   2. the kind: compress (qmean/select/retain) first, then the layer's dense chain
 *      (norms, QKV, RoPE, o-proj, MLP, merges), and attention last, filling the gaps,
 *   3. within compress and the chain, lower hosts first (more hosts wait for them); within
 *      attention, the longest task (most flops) first, so the tail of a layer is short.
 * Every worker takes the best-ranked task it can execute (starpu_worker_can_execute_task_first_impl),
 * so CPU-only codelets never reach a CUDA worker. With workers of several types (CPU + CUDA), a
 * type whose calibrated perfmodel predicts more than APB_CRIT_SLOWDOWN (4) times the best type's
 * time for a task may not take it (heteroprio's idea), so a CPU worker does not grab an attention
 * task a GPU does 20 times faster; uncalibrated models allow every type. Nothing is pinned: any worker may take any task,
 * which keeps all workers busy (the price: no data locality, which costs nothing on one memory
 * node and is what apb-affinity addresses).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "schedulers/sched_common.h"

#define APB_CRIT_SLOWDOWN 4.0

struct _apb_crit_data {
    struct apb_squeue q;
    starpu_pthread_mutex_t lock;
    int rep[STARPU_NARCH]; /* one worker per type present in the context, -1: none */
    int ntypes;
};

/* The worker types that may take the task (see the top of the file). */
static unsigned _apb_crit_types(struct _apb_crit_data *d, unsigned ctx, struct starpu_task *task)
{
    if (d->ntypes < 2)
        return ~0u;
    double len[STARPU_NARCH], best = INFINITY;
    for (int t = 0; t < STARPU_NARCH; t++) {
        len[t] = NAN;
        unsigned impl;
        if (d->rep[t] < 0 || !starpu_worker_can_execute_task_first_impl((unsigned)d->rep[t], task, &impl))
            continue;
        len[t] = starpu_task_expected_length(task, starpu_worker_get_perf_archtype(d->rep[t], ctx), impl);
        if (isnan(len[t]) || len[t] <= 0)
            return ~0u; /* not calibrated: no information */
        best = len[t] < best ? len[t] : best;
    }
    unsigned types = 0;
    for (int t = 0; t < STARPU_NARCH; t++)
        if (!isnan(len[t]) && len[t] <= APB_CRIT_SLOWDOWN * best)
            types |= 1u << t;
    return types ? types : ~0u;
}

static void _apb_crit_workers_changed(unsigned ctx)
{
    struct _apb_crit_data *d = starpu_sched_ctx_get_policy_data(ctx);
    struct starpu_worker_collection *ws = starpu_sched_ctx_get_worker_collection(ctx);
    struct starpu_sched_ctx_iterator it;
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    for (int t = 0; t < STARPU_NARCH; t++)
        d->rep[t] = -1;
    d->ntypes = 0;
    ws->init_iterator(ws, &it);
    while (ws->has_next(ws, &it)) {
        int w = (int)ws->get_next(ws, &it);
        int t = (int)starpu_worker_get_type(w);
        if (t >= 0 && t < STARPU_NARCH && d->rep[t] < 0) {
            d->rep[t] = w;
            d->ntypes++;
        }
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
}

static void _apb_crit_add(unsigned ctx, int *ids, unsigned n)
{
    (void)ids;
    (void)n;
    _apb_crit_workers_changed(ctx);
}

static void _apb_crit_remove(unsigned ctx, int *ids, unsigned n)
{
    (void)ids;
    (void)n;
    _apb_crit_workers_changed(ctx);
}

static void _apb_crit_init(unsigned ctx)
{
    struct _apb_crit_data *d = calloc(1, sizeof *d);
    STARPU_ASSERT(d);
    apb_squeue_init(&d->q);
    for (int t = 0; t < STARPU_NARCH; t++)
        d->rep[t] = -1;
    STARPU_PTHREAD_MUTEX_INIT(&d->lock, NULL);
    starpu_sched_ctx_set_policy_data(ctx, d);
}

static void _apb_crit_deinit(unsigned ctx)
{
    struct _apb_crit_data *d = starpu_sched_ctx_get_policy_data(ctx);
    STARPU_ASSERT(d->q.n == 0);
    apb_squeue_destroy(&d->q);
    STARPU_PTHREAD_MUTEX_DESTROY(&d->lock);
    free(d);
}

static int _apb_crit_push(struct starpu_task *task)
{
    unsigned ctx = task->sched_ctx;
    struct _apb_crit_data *d = starpu_sched_ctx_get_policy_data(ctx);
    int64_t k1;
    double k2;
    apb_sched_rank(task, &k1, &k2);
    unsigned types = _apb_crit_types(d, ctx, task);
    /* who can run it, decided before the push: once pushed, the task may run and be freed */
    int wake[STARPU_NMAXWORKERS], nwake = 0;
    struct starpu_worker_collection *ws = starpu_sched_ctx_get_worker_collection(ctx);
    struct starpu_sched_ctx_iterator it;
    ws->init_iterator(ws, &it);
    while (ws->has_next(ws, &it)) {
        unsigned w = ws->get_next(ws, &it);
        if (((types >> starpu_worker_get_type((int)w)) & 1) &&
            starpu_worker_can_execute_task_first_impl(w, task, NULL))
            wake[nwake++] = (int)w;
    }
    starpu_worker_relax_on();
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    starpu_worker_relax_off();
    int ret = apb_squeue_push(&d->q, task, k1, k2, types);
    if (ret == 0)
        starpu_push_task_end(task);
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    if (ret)
        return ret;
    /* wake one worker that can run it (workers also poll: non-blocking drivers) */
    for (int i = 0; i < nwake; i++)
        if (starpu_wake_worker_relax_light(wake[i]))
            break;
    return 0;
}

static struct starpu_task *_apb_crit_pop(unsigned ctx)
{
    struct _apb_crit_data *d = starpu_sched_ctx_get_policy_data(ctx);
    if (atomic_load(&d->q.count) == 0)
        return NULL;
    unsigned w = starpu_worker_get_id_check();
    starpu_worker_relax_on();
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    starpu_worker_relax_off();
    struct starpu_task *t = apb_squeue_take(&d->q, w, 0);
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    return t;
}

struct starpu_sched_policy apb_sched_critical_policy = {
    .init_sched = _apb_crit_init,
    .deinit_sched = _apb_crit_deinit,
    .add_workers = _apb_crit_add,
    .remove_workers = _apb_crit_remove,
    .push_task = _apb_crit_push,
    .pop_task = _apb_crit_pop,
    .policy_name = "apb-critical",
    .policy_description = "apb: critical path first (compress/allgather of low hosts, dense "
                          "chain), attention fills the gaps; central queue",
    .worker_type = STARPU_WORKER_LIST,
};
