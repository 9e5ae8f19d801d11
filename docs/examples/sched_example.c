/* SPDX-License-Identifier: MIT */
/**
 * @brief Example scheduling policy loaded at run time: copy this file to start your own.
 *
 *   cc -shared -fPIC -O2 $(pkg-config --cflags starpu-1.3 apb) sched_example.c -o my_sched.so
 *   apps/apb_run ... --sched-lib ./my_sched.so          (or --sched-lib F.so --sched NAME)
 *
 * The shared object exports one `struct starpu_sched_policy` named `apb_sched_policy`
 * (APB_SCHED_LIB_SYMBOL); apb_run dlopen()s it and hands it to starpu_init. The rules a policy
 * must keep (StarPU 1.3):
 *   - push_task stores the task and calls starpu_push_task_end(task) before releasing the lock
 *     that protects the store (after that, a worker may run and free the task: do not touch it);
 *   - pop_task returns only a task the calling worker can execute
 *     (starpu_worker_can_execute_task_first_impl) and sets that implementation;
 *   - workers poll pop_task (non-blocking drivers), so pop must be cheap when there is nothing.
 * apb_sched_task_info_get() (schedulers/schedulers.h) tells the op kind, layer and host of a task.
 *
 * The idea of this one ("example-kind-fifo"): one FIFO per kind, taken in the order compress,
 * communication, compute, attention. It ignores priorities and layers: a baseline to edit.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <starpu.h>
#include <starpu_scheduler.h>

#include "schedulers/schedulers.h"

struct kind_fifo_data {
    struct starpu_task_list fifo[APB_KIND_COUNT];
    atomic_int ntasks;
    starpu_pthread_mutex_t lock;
};

static const enum apb_sched_kind order[APB_KIND_COUNT] = {APB_KIND_COMPRESS, APB_KIND_COMM,
                                                          APB_KIND_COMPUTE, APB_KIND_ATTENTION};

static void kf_init(unsigned ctx)
{
    struct kind_fifo_data *d = calloc(1, sizeof *d);
    STARPU_ASSERT(d);
    for (int k = 0; k < APB_KIND_COUNT; k++)
        starpu_task_list_init(&d->fifo[k]);
    STARPU_PTHREAD_MUTEX_INIT(&d->lock, NULL);
    starpu_sched_ctx_set_policy_data(ctx, d);
}

static void kf_deinit(unsigned ctx)
{
    struct kind_fifo_data *d = starpu_sched_ctx_get_policy_data(ctx);
    STARPU_PTHREAD_MUTEX_DESTROY(&d->lock);
    free(d);
}

static int kf_push(struct starpu_task *task)
{
    struct kind_fifo_data *d = starpu_sched_ctx_get_policy_data(task->sched_ctx);
    apb_sched_task_info ti;
    apb_sched_task_info_get(task, &ti);
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    starpu_task_list_push_back(&d->fifo[ti.kind], task);
    atomic_fetch_add(&d->ntasks, 1);
    starpu_push_task_end(task);
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    return 0;
}

static struct starpu_task *kf_pop(unsigned ctx)
{
    struct kind_fifo_data *d = starpu_sched_ctx_get_policy_data(ctx);
    if (atomic_load(&d->ntasks) == 0)
        return NULL;
    unsigned w = starpu_worker_get_id_check();
    struct starpu_task *got = NULL;
    STARPU_PTHREAD_MUTEX_LOCK(&d->lock);
    for (int i = 0; i < APB_KIND_COUNT && !got; i++) {
        struct starpu_task_list *l = &d->fifo[order[i]];
        for (struct starpu_task *t = starpu_task_list_begin(l); t; t = starpu_task_list_next(t)) {
            unsigned impl;
            if (starpu_worker_can_execute_task_first_impl(w, t, &impl)) {
                starpu_task_list_erase(l, t);
                starpu_task_set_implementation(t, impl);
                atomic_fetch_sub(&d->ntasks, 1);
                got = t;
                break;
            }
        }
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&d->lock);
    return got;
}

struct starpu_sched_policy apb_sched_policy = {
    .init_sched = kf_init,
    .deinit_sched = kf_deinit,
    .push_task = kf_push,
    .pop_task = kf_pop,
    .policy_name = "example-kind-fifo",
    .policy_description = "docs/examples/sched_example.c: one FIFO per task kind (compress first)",
    .worker_type = STARPU_WORKER_LIST,
};
