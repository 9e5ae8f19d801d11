/* SPDX-License-Identifier: MIT */
/**
 * @brief CUDA side of the runtime (compiled when configure found CUDA; runtime/cuda_none.c
 * otherwise): per-worker device scratch, cuBLAS handles, the error path of CUDA codelets, device
 * queries. The cuBLAS GEMM helper of the projections is in codelets/codelet_linear.c.
 *
 * Scratch: a codelet needs temporaries that are not StarPU data (bf16 copies of activations, the
 * MLP's gate/up products). Each CUDA worker keeps one growing buffer per slot; growing waits for
 * the worker's stream (tasks queued on it may still use the old buffer) and is rare, since tile
 * shapes repeat. If cudaMalloc fails even after asking StarPU to free its cached copies, the task
 * records a sticky error (apb_runtime_wait_all reports it) and leaves its output poisoned.
 */
#include <cuda_runtime.h>

#include "runtime/runtime_internal.h"

#include <starpu_cublas_v2.h>

#define _APB_MAX_WORKERS STARPU_NMAXWORKERS

static struct {
    void *p;
    size_t n;
} _apb_cuda_scr[_APB_MAX_WORKERS][_APB_CUDA_SCRATCH_SLOTS];

void *_apb_cuda_scratch(int slot, size_t bytes)
{
    int w = starpu_worker_get_id();
    if (w < 0 || w >= _APB_MAX_WORKERS || slot < 0 || slot >= _APB_CUDA_SCRATCH_SLOTS)
        return NULL;
    if (bytes <= _apb_cuda_scr[w][slot].n)
        return _apb_cuda_scr[w][slot].p;
    const size_t need = bytes;
    cudaStream_t s = starpu_cuda_get_local_stream();
    cudaStreamSynchronize(s);
    cudaFree(_apb_cuda_scr[w][slot].p);
    _apb_cuda_scr[w][slot].p = NULL;
    size_t old_n = _apb_cuda_scr[w][slot].n;
    _apb_cuda_scr[w][slot].n = 0;
    /* at least double: growing sizes (attention over more and more KV tiles) regrow rarely */
    if (bytes < 2 * old_n)
        bytes = 2 * old_n;
    bytes = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess && bytes > need) { /* the doubled size does not fit: the size asked */
        (void)cudaGetLastError();
        bytes = need;
        e = cudaMalloc(&p, bytes);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        /* StarPU caches buffers of unregistered or evictable data: let it give memory back. */
        starpu_memchunk_tidy(starpu_worker_get_memory_node(w));
        e = cudaMalloc(&p, bytes);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        _apb_task_fail(APB_E_NOMEM, "GPU out of memory: %.1f MiB of scratch needed, %.1f MiB free of %.1f MiB",
                       bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
        return NULL;
    }
    _apb_cuda_scr[w][slot].p = p;
    _apb_cuda_scr[w][slot].n = bytes;
    return p;
}

static void _apb_cuda_scratch_release(void *unused)
{
    (void)unused;
    int w = starpu_worker_get_id();
    if (w < 0 || w >= _APB_MAX_WORKERS)
        return;
    for (int s = 0; s < _APB_CUDA_SCRATCH_SLOTS; s++) {
        cudaFree(_apb_cuda_scr[w][s].p);
        _apb_cuda_scr[w][s].p = NULL;
        _apb_cuda_scr[w][s].n = 0;
    }
}

void _apb_cuda_check(const char *op)
{
    cudaError_t e = cudaPeekAtLastError();
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        _apb_task_fail(APB_E_RUNTIME, "%s: CUDA error: %s", op, cudaGetErrorString(e));
    }
}

int apb_runtime_cuda_devices(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* The distinct devices of the CUDA workers (at most 64) into devs; returns their count. */
static int _apb_cuda_worker_devices(int *devs)
{
    int gw[64], seen[64] = {0}, n_dev = 0;
    int n = apb_runtime_cuda_workers(gw, 64);
    for (int i = 0; i < n && i < 64; i++) {
        int dev = starpu_worker_get_devid(gw[i]);
        if (dev >= 0 && dev < 64 && !seen[dev]) {
            seen[dev] = 1;
            devs[n_dev++] = dev;
        }
    }
    return n_dev;
}

double apb_runtime_gpu_used(void)
{
    int devs[64], cur = 0;
    int n = _apb_cuda_worker_devices(devs);
    double used = 0;
    (void)cudaGetDevice(&cur);
    for (int i = 0; i < n; i++) {
        int dev = devs[i];
        size_t fr = 0, tot = 0;
        if (cudaSetDevice(dev) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            used += (double)(tot - fr);
        else
            (void)cudaGetLastError();
    }
    (void)cudaSetDevice(cur);
    return used;
}

int apb_runtime_cuda_devices_used(void)
{
    int devs[64];
    return _apb_cuda_worker_devices(devs);
}

int apb_runtime_has_cuda(void) { return 1; }

void _apb_cuda_start(void)
{
    /* One cuBLAS handle per CUDA worker, bound to the worker's stream (starpu_cublas_get_local_handle). */
    starpu_cublas_init();
}

void _apb_cuda_stop(void)
{
    starpu_task_wait_for_all();
    starpu_execute_on_each_worker(_apb_cuda_scratch_release, NULL, STARPU_CUDA);
    starpu_cublas_shutdown();
    _apb_nccl_shutdown();
}
