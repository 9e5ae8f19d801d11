/* SPDX-License-Identifier: MIT */
/**
 * @brief Internal helpers of our policies: a ready queue ordered by a (k1, k2) key, from which a
 * worker takes the best task it can execute. Not part of the public API.
 */
#ifndef APB_SCHED_COMMON_H
#define APB_SCHED_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "schedulers/schedulers.h"

struct apb_squeue_ent {
    struct starpu_task *task;
    int64_t k1;       /* compared first (higher runs first) */
    double k2;        /* then this (higher first) */
    uint64_t seq;     /* then submission order (earlier first) */
    unsigned types;   /* bit t set: a worker of type t (enum starpu_worker_archtype) may take it */
};

/* Sorted ascending (best last), so taking the best is O(1) and inserting is a binary search and
 * a memmove: ready queues hold at most a few thousand tasks. Not locked: the policy locks. */
struct apb_squeue {
    struct apb_squeue_ent *e;
    size_t n, cap;
    uint64_t seq;
    atomic_size_t count;  /* n, readable without the lock (idle workers poll it) */
};

void apb_squeue_init(struct apb_squeue *q);
void apb_squeue_destroy(struct apb_squeue *q);
/* 0, or -ENOMEM. types: worker types allowed to take it (~0u: any that can execute it). */
int apb_squeue_push(struct apb_squeue *q, struct starpu_task *task, int64_t k1, double k2,
                    unsigned types);
/* The best task worker `workerid` can execute (its implementation set), removed; NULL if none.
 * worst != 0 takes the worst such task instead (for stealing). */
struct starpu_task *apb_squeue_take(struct apb_squeue *q, unsigned workerid, int worst);
/* Best key of a task that workerid can execute (without removing it); 0 if there is none. */
int apb_squeue_peek(struct apb_squeue *q, unsigned workerid, int64_t *k1, double *k2);

/* The ordering both our policies use inside a queue: earlier layers first (the layer in the task
 * name; tasks without one first of all), then compress > the dense chain (compute, merge)
 * > attention; ties: lower host first for compress and the chain, longer (more flops) first for
 * attention. */
void apb_sched_rank(const struct starpu_task *task, int64_t *k1, double *k2);

#endif
