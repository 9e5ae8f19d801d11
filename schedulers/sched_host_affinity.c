/* SPDX-License-Identifier: MIT */
/**
 * @brief "apb-affinity": a host-affinity policy for virtual hosts (the Spava schedule).
 *
 * Idea. W virtual hosts share fewer workers (or GPUs). A host's KV cache and activations should
 * stay where its tasks run, so every task of host h goes to h's home worker: a CUDA worker when
 * one exists and the codelet has a CUDA implementation, else a CPU worker; a worker that cannot execute the task is never chosen. The policy
 * reads the host from the task name itself (`<op>-<layer>-h<host>`), so it works with
 * `--placement free`; hosts are dealt to workers in boustrophedon order (0 1 1 0 for 4 hosts on 2
 * workers: see _apb_snake); with `--placement pinned` StarPU bypasses every policy for pinned tasks.
 *
 * Each worker then orders its own queue like apb-critical: earlier layers first, then a host's
 * compress tasks (qmean/select: the "communication" the other hosts wait for) before the dense
 * chain, and attention last. A worker that owns hosts a < b therefore runs b's compression as soon
 * as b's keys exist, ahead of a's attention: b's allgather is in flight (being consumed by the
 * other workers' attention) while a's attention runs here -- Spava's overlap of the second
 * virtual host's communication under the first one's attention, obtained by scheduling decisions
 * rather than by a fixed order in the code. Tasks without a host (e.g. zero fills) go to a shared
 * queue every worker reads.
 *
 * Strict by default: an idle worker does not take another host's task. "apb-affinity-steal" (or
 * APB_AFFINITY_STEAL=1) lets an idle worker steal the lowest-ranked task of the longest queue: load
 * balance over locality. Strict affinity pays for every imbalance between the workers' hosts at
 * each layer's allgather (the last host needs every earlier host's select of the layer).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "schedulers/sched_common.h"

struct _apb_aff_data {
    struct apb_squeue q[STARPU_NMAXWORKERS];
    struct apb_squeue shared;
    starpu_pthread_mutex_t lock;
    int cpu[STARPU_NMAXWORKERS], ncpu;
    int cuda[STARPU_NMAXWORKERS], ncuda;
    int all[STARPU_NMAXWORKERS], nall;
    int steal;
};

static void _apb_aff_init(unsigned ctx)
{
    struct _apb_aff_data *d = calloc(1, sizeof *d);
    STARPU_ASSERT(d);
    for (int w = 0; w < STARPU_NMAXWORKERS; w++)
        apb_squeue_init(&d->q[w]);
    apb_squeue_init(&d->shared);
    STARPU_PTHREAD_MUTEX_INIT(&d->lock, NULL);
    const char *s = getenv("APB_AFFINITY_STEAL");
    d->steal = starpu_sched_ctx_get_sched_policy(ctx) == &apb_sched_affinity_steal_policy ||
               (s && atoi(s) > 0);
    starpu_sched_ctx_set_policy_data(ctx, d);
}

static void _apb_aff_deinit(unsigned ctx)
{
    struct _apb_aff_data *d = starpu_sched_ctx_get_policy_data(ctx);
    for (int w = 0; w < STARPU_NMAXWORKERS; w++)
        apb_squeue_destroy(&d->q[w]);
    apb_squeue_destroy(&d->shared);
    STARPU_PTHREAD_MUTEX_DESTROY(&d->lock);
    free(d);
}

/* The home lists are rebuilt from the context's workers whenever they change. */
static void _apb_aff_workers_changed(unsigned ctx)
{
    struct _apb_aff_data *d = starpu_sched_ctx_get_policy_data(ctx);
    struct starpu_worker_collection *ws = starpu_sched_ctx_get_worker_collection(ctx);
    struct starpu_sched_ctx_iterator it;
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    d->ncpu = d->ncuda = d->nall = 0;
    ws->init_iterator(ws, &it);
    while (ws->has_next(ws, &it)) {
        int w = (int)ws->get_next(ws, &it);
        d->all[d->nall++] = w;
        if (starpu_worker_get_type(w) == STARPU_CPU_WORKER)
            d->cpu[d->ncpu++] = w;
        else if (starpu_worker_get_type(w) == STARPU_CUDA_WORKER)
            d->cuda[d->ncuda++] = w;
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
}

static void _apb_aff_add(unsigned ctx, int *ids, unsigned n)
{
    (void)ids;
    (void)n;
    _apb_aff_workers_changed(ctx);
}

static void _apb_aff_remove(unsigned ctx, int *ids, unsigned n)
{
    (void)ids;
    (void)n;
    _apb_aff_workers_changed(ctx);
}

/* Host h's slot among n workers, boustrophedon: 0 1 .. n-1 n-1 .. 1 0 0 1 ... Host r's work grows
 * with r in APB (r passing blocks; host 0 has no anchor; the last host also runs the question
 * pass), so the snake pairs light hosts with heavy ones (the zigzag idea Spava applies to chunks). */
static int _apb_snake(int h, int n)
{
    int round = h / n, pos = h % n;
    return round % 2 ? n - 1 - pos : pos;
}

/* Home worker of host h for this task, or -1 (no host: the shared queue). Called locked. */
static int _apb_aff_home(struct _apb_aff_data *d, struct starpu_task *task, int h)
{
    if (h < 0)
        return -1;
    if (d->ncuda) {
        int w = d->cuda[_apb_snake(h, d->ncuda)];
        if (starpu_worker_can_execute_task_first_impl((unsigned)w, task, NULL))
            return w;
    }
    if (d->ncpu) {
        int w = d->cpu[_apb_snake(h, d->ncpu)];
        if (starpu_worker_can_execute_task_first_impl((unsigned)w, task, NULL))
            return w;
    }
    for (int i = 0; i < d->nall; i++) {
        int w = d->all[(h + i) % d->nall];
        if (starpu_worker_can_execute_task_first_impl((unsigned)w, task, NULL))
            return w;
    }
    return -1;
}

static int _apb_aff_push(struct starpu_task *task)
{
    unsigned ctx = task->sched_ctx;
    struct _apb_aff_data *d = starpu_sched_ctx_get_policy_data(ctx);
    apb_sched_task_info ti;
    apb_sched_task_info_get(task, &ti);
    int64_t k1;
    double k2;
    apb_sched_rank(task, &k1, &k2);
    /* who can run it, decided before the push: once pushed, the task may run and be freed */
    int wake[STARPU_NMAXWORKERS], nwake = 0;
    struct starpu_worker_collection *ws = starpu_sched_ctx_get_worker_collection(ctx);
    struct starpu_sched_ctx_iterator it;
    ws->init_iterator(ws, &it);
    while (ws->has_next(ws, &it)) {
        unsigned w = ws->get_next(ws, &it);
        if (starpu_worker_can_execute_task_first_impl(w, task, NULL))
            wake[nwake++] = (int)w;
    }
    starpu_worker_relax_on();
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    starpu_worker_relax_off();
    int home = _apb_aff_home(d, task, ti.host);
    int ret = apb_squeue_push(home >= 0 ? &d->q[home] : &d->shared, task, k1, k2, ~0u);
    if (ret == 0)
        starpu_push_task_end(task);
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    if (ret)
        return ret;
    if (home >= 0 && !d->steal)
        starpu_wake_worker_relax_light(home);
    else
        for (int i = 0; i < nwake; i++)
            starpu_wake_worker_relax_light(wake[i]);
    return 0;
}

static struct starpu_task *_apb_aff_pop(unsigned ctx)
{
    struct _apb_aff_data *d = starpu_sched_ctx_get_policy_data(ctx);
    unsigned w = starpu_worker_get_id_check();
    if (!d->steal && atomic_load(&d->q[w].count) == 0 && atomic_load(&d->shared.count) == 0)
        return NULL;
    starpu_worker_relax_on();
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    starpu_worker_relax_off();
    struct starpu_task *t = NULL;
    int64_t a1, b1;
    double a2, b2;
    int own = apb_squeue_peek(&d->q[w], w, &a1, &a2), sh = apb_squeue_peek(&d->shared, w, &b1, &b2);
    if (own && (!sh || a1 > b1 || (a1 == b1 && a2 >= b2)))
        t = apb_squeue_take(&d->q[w], w, 0);
    else if (sh)
        t = apb_squeue_take(&d->shared, w, 0);
    if (!t && d->steal) { /* the lowest-ranked task of the longest other queue */
        int victim = -1;
        size_t most = 0;
        for (int i = 0; i < d->nall; i++) {
            int v = d->all[i];
            if (v != (int)w && d->q[v].n > most) {
                most = d->q[v].n;
                victim = v;
            }
        }
        if (victim >= 0)
            t = apb_squeue_take(&d->q[victim], w, 1);
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    return t;
}

struct starpu_sched_policy apb_sched_affinity_policy = {
    .init_sched = _apb_aff_init,
    .deinit_sched = _apb_aff_deinit,
    .add_workers = _apb_aff_add,
    .remove_workers = _apb_aff_remove,
    .push_task = _apb_aff_push,
    .pop_task = _apb_aff_pop,
    .policy_name = "apb-affinity",
    .policy_description = "apb: each host's tasks on its home worker/GPU (snake order), compress of the next "
                          "virtual host ahead of attention (Spava schedule); strict",
    .worker_type = STARPU_WORKER_LIST,
};

/* The same with stealing on (see the top of the file). */
struct starpu_sched_policy apb_sched_affinity_steal_policy = {
    .init_sched = _apb_aff_init,
    .deinit_sched = _apb_aff_deinit,
    .add_workers = _apb_aff_add,
    .remove_workers = _apb_aff_remove,
    .push_task = _apb_aff_push,
    .pop_task = _apb_aff_pop,
    .policy_name = "apb-affinity-steal",
    .policy_description = "apb: apb-affinity, and an idle worker steals the lowest-ranked task of "
                          "the longest queue",
    .worker_type = STARPU_WORKER_LIST,
};
