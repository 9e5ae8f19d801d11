/* SPDX-License-Identifier: MIT */
/** @brief Calls between the files of runtime/ only (StarPU control, CUDA/NCCL glue, traces). */
#ifndef APB_RUNTIME_INTERNAL_H
#define APB_RUNTIME_INTERNAL_H

#include <stdint.h>

#include "runtime/apb_task.h"

/* Traces (runtime/trace.c): a record for the running task when tracing is on; whether it is on;
 * the callback of GPU tasks while tracing (their record from StarPU's profiling times). */
void _apb_trace_record(enum apb_op op, double t0_ns, double t1_ns);
int _apb_trace_active(void);
/* The callback of a traced GPU task; its argument is an apb_trace_cb (malloc'd, freed by StarPU). */
struct apb_trace_cb {
    struct starpu_task *task;
    int64_t bytes_in, bytes_out; /* taken at submission: a handle may be unregistered (and freed) by
                                    the time the callback runs, once this task released it */
};
void _apb_trace_bytes(struct starpu_task *task, int64_t *in, int64_t *out);
void _apb_trace_task_done(void *cb);

/* CUDA glue (runtime/cuda.c with CUDA, runtime/cuda_none.c without): after starpu_init (cuBLAS
 * handles), and before starpu_shutdown (device scratch, cuBLAS, NCCL communicators). */
void _apb_cuda_start(void);
void _apb_cuda_stop(void);

/* NCCL glue (runtime/nccl.c with NCCL, runtime/nccl_none.c without): destroys the communicators. */
void _apb_nccl_shutdown(void);

#endif
