/* SPDX-License-Identifier: MIT */
/**
 * @brief Scheduling policies: our own (one file each), StarPU's built-ins, and policies loaded
 * from a shared object at run time, behind one name lookup (`--sched NAME`).
 *
 * A policy of ours is a plain `struct starpu_sched_policy` handed to starpu_init through
 * `conf.sched_policy`. The helpers below give every policy (ours and a researcher's .so) the same
 * view of an apb task: its op kind, layer and host, parsed from the task name
 * `<op>-<layer>-h<host>` that every insert wrapper sets. See docs/SCHEDULERS.md.
 */
#ifndef APB_SCHEDULERS_H
#define APB_SCHEDULERS_H

#include <stdio.h>

#include <starpu.h>
#include <starpu_scheduler.h>

#include "common/apb_error.h"
#include "common/apb_ops.h"

/* The name a shared object loaded with --sched-lib must export (a struct, not a pointer). */
#define APB_SCHED_LIB_SYMBOL "apb_sched_policy"

/* What a task does, for scheduling and for the trace colors: enum apb_sched_kind (compute,
 * compress, communication, attention) is the kind column of the op table, common/apb_ops.h. */
const char *apb_sched_kind_name(enum apb_sched_kind k);
/* Kind of an op name ("select", "attention", ...) from the op table; unknown names are compute. */
enum apb_sched_kind apb_sched_kind_of_op(const char *op);

typedef struct apb_sched_task_info {
    enum apb_sched_kind kind;
    int layer;              /* -1 when the name has none */
    int host;               /* -1 when the name has none */
} apb_sched_task_info;
/* Kind from the codelet name, layer and host from the task name. Never fails. */
void apb_sched_task_info_get(const struct starpu_task *task, apb_sched_task_info *out);

/* Our policies (schedulers/sched_*.c). */
extern struct starpu_sched_policy apb_sched_critical_policy;   /* "apb-critical" */
extern struct starpu_sched_policy apb_sched_affinity_policy;   /* "apb-affinity" */
extern struct starpu_sched_policy apb_sched_affinity_steal_policy; /* "apb-affinity-steal" */

/* Finds a policy by name among ours, the loaded shared objects' and StarPU's built-ins.
 * Unknown names fail with APB_E_USAGE and a message pointing to --sched list. */
int apb_sched_lookup(const char *name, struct starpu_sched_policy **out, apb_err *err);
/* dlopen()s path and registers the policy it exports as APB_SCHED_LIB_SYMBOL; *name_out
 * (optional) receives its name. The object stays loaded until exit. */
int apb_sched_load_lib(const char *path, const char **name_out, apb_err *err);
/* Prints every accepted name with its description, ours first. */
void apb_sched_list(FILE *out);
/* Names of every policy accepted by apb_sched_lookup (ours, loaded, StarPU's); returns the count. */
int apb_sched_names(const char **names, int max);

#endif
