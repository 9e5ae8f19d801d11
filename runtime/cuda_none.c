/* SPDX-License-Identifier: MIT */
/** @brief The CUDA glue of runtime/cuda.c in a build without CUDA: no devices, nothing to start. */
#include "runtime/runtime_internal.h"

int apb_runtime_cuda_devices(void) { return 0; }
double apb_runtime_gpu_used(void) { return 0; }
int apb_runtime_has_cuda(void) { return 0; }
int apb_runtime_cuda_devices_used(void) { return 0; }
void _apb_cuda_start(void) {}
void _apb_cuda_stop(void) {}
