/* SPDX-License-Identifier: MIT */
/** @brief The NCCL glue of runtime/nccl.c in a build without NCCL: --allgather nccl is refused. */
#include "runtime/runtime_internal.h"

int apb_runtime_nccl_init(apb_err *err)
{
    return apb_fail(err, APB_E_USAGE, "--allgather nccl: this apb was built without %s",
                    apb_runtime_has_cuda() ? "NCCL (nccl.h not found by configure)" : "CUDA");
}
int apb_runtime_nccl_size(void) { return 0; }
int apb_runtime_nccl_worker(int g) { (void)g; return -1; }
void *_apb_nccl_comm(void) { return NULL; }
void _apb_nccl_shutdown(void) {}
int apb_runtime_has_nccl(void) { return 0; }
