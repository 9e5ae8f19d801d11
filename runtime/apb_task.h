/* SPDX-License-Identifier: MIT */
/**
 * @brief What the runtime offers the codelet files (not part of the public API): task submission
 * and names, per-op accounting, per-thread and per-GPU scratch, the sticky task error, the NCCL
 * communicator of a CUDA worker.
 */
#ifndef APB_TASK_H
#define APB_TASK_H

#include <stddef.h>
#include <time.h>

#include "apb_build_config.h"
#include "runtime/apb_runtime.h"

static inline double _apb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Adds one task's execution time (and flops) to the per-op totals (and the trace record). */
void _apb_op_account(enum apb_op op, double t0_ns, double flops);

/* Counts a task and its flops without timing it (asynchronous CUDA task bodies return before the
 * kernels ran; their time comes from StarPU's profiling). */
void _apb_op_count(enum apb_op op, double flops);

/* Fills name with "<op>-<layer>-h<host>" (parts < 0 omitted); returns an interned string that
 * outlives the task (StarPU does not free task->name). op is the op table's name. */
const char *_apb_task_name(const char *op, apb_task_tag tag);

/* The worker that runs host tag.host's tasks (apb_runtime_place_hosts), or -1: the scheduler decides. */
int _apb_worker_of(apb_task_tag tag);

/* The one task-submission entry point of every insert wrapper (and of the runtime's own tasks).
 * Takes the subset of starpu_task_insert's arguments the wrappers use (STARPU_R/W/RW + handle,
 * STARPU_DATA_MODE_ARRAY, STARPU_CL_ARGS, STARPU_PRIORITY, STARPU_NAME, STARPU_FLOPS,
 * STARPU_EXECUTE_ON_WORKER and APB_ON_HOST below; scheduler hints STARPU_TAG_ONLY,
 * STARPU_EXECUTE_WHERE, STARPU_SCHED_CTX, STARPU_WORKER_ORDER, STARPU_POSSIBLY_PARALLEL,
 * STARPU_TASK_COLOR, STARPU_TASK_SCHED_DATA), 0-terminated. In a single process it builds and
 * submits the task like starpu_task_insert; when the runtime was started over several MPI ranks it
 * runs StarPU-MPI's build / submit / post-build sequence on MPI_COMM_WORLD, executing on the rank
 * of the task's host (else on the owner of the first written handle), and frees the
 * STARPU_CL_ARGS copy on the other ranks. An argument outside that subset is reported and the call
 * fails with -EINVAL. */
int apb_task_insert(struct starpu_codelet *cl, ...);

/* Private argument code of apb_task_insert (outside StarPU's range): the task's host. */
#define _APB_ARG_HOST (1000 << STARPU_MODE_SHIFT)
/* Where the task of `tag` runs: its host's worker (placement) and, over MPI, its host's rank. */
#define APB_ON_HOST(tag) STARPU_EXECUTE_ON_WORKER, _apb_worker_of(tag), _APB_ARG_HOST, (tag).host

/* Per-thread scratch of at least n floats in one of a few slots, reused across tasks (fresh
 * multi-100-KiB mallocs page-fault on every task) and freed when the thread exits (a pthread key
 * destructor: StarPU's workers end at starpu_shutdown). Unlike STARPU_SCRATCH it needs no data
 * handle per task. NULL when out of memory. */
enum { _APB_SCRATCH_ATTENTION, _APB_SCRATCH_MLP, _APB_SCRATCH_LOGITS, _APB_SCRATCH_WEIGHT,
       _APB_SCRATCH_LAYER, _APB_SCRATCH_ATTENTION16, _APB_SCRATCH_DNNL, _APB_SCRATCH_LINEAR_IN,
       _APB_SCRATCH_BF16_OUT, _APB_SCRATCH_SLOTS };
float *_apb_thread_scratch(int slot, size_t n);
/* _APB_SCRATCH_BF16_OUT: fp32 results before they are rounded into a bf16 output tile (attention,
 * lse_merge, rmsnorm); _APB_SCRATCH_LINEAR_IN: a bf16 input tile widened (_apb_act_f32). */

/* OpenBLAS: one thread per task, StarPU provides the parallelism across tiles. */
void _apb_blas_single_thread(void);

/* Records a failure inside a task body (codelets cannot return errors): the first one is kept
 * and apb_runtime_wait_all returns it. Thread-safe. */
void _apb_task_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The precision the runtime was started with (apb_runtime_opts.precision). */
int _apb_precision(void);

/* The NCCL communicator of the calling CUDA worker (ncclComm_t), NULL when none
 * (runtime/nccl.c, runtime/nccl_none.c). */
void *_apb_nccl_comm(void);

#if defined(APB_HAVE_CUDA) && defined(STARPU_USE_CUDA)
#define APB_CUDA 1
/* Device scratch slots of a CUDA worker (runtime/cuda.c). */
enum { _APB_CUDA_SCRATCH_GEMM_IN, _APB_CUDA_SCRATCH_MLP, _APB_CUDA_SCRATCH_ATTN,
       _APB_CUDA_SCRATCH_OP, _APB_CUDA_SCRATCH_LAYER, _APB_CUDA_SCRATCH_SLOTS };
/* NULL (and a sticky error) when the GPU is out of memory. */
void *_apb_cuda_scratch(int slot, size_t bytes);
/* Turns a pending launch error into a sticky task error naming op. */
void _apb_cuda_check(const char *op);
#endif

#endif
