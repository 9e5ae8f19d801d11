/* SPDX-License-Identifier: MIT */
/**
 * @brief CUDA side of the runtime: per-worker device scratch, the GEMM helper every projection
 * uses (cuBLAS on the worker's handle and stream), and the error path of CUDA codelets.
 *
 * Scratch: a codelet needs temporaries that are not StarPU data (bf16 copies of activations, the
 * MLP's gate/up products). Each CUDA worker keeps one growing buffer per slot; growing waits for
 * the worker's stream (tasks queued on it may still use the old buffer) and is rare, since tile
 * shapes repeat. If cudaMalloc fails even after asking StarPU to free its cached copies, the task
 * records a sticky error (apb_runtime_wait_all reports it) and leaves its output poisoned.
 */
#include "apb_build_config.h"
#include "codelets/codelet_common.h"

#ifdef APB_HAVE_CUDA
#include <cublas_v2.h>
#include <starpu_cublas_v2.h>

#include "codelets/cuda/apb_cuda.h"

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

void _apb_cuda_scratch_release(void *unused)
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

int _apb_cuda_gemm(void *out, int ld_out, int out_bf16, const void *in, int ld_in, int in_elem,
                   const void *w, int w_elem, int rows, int n_in, int n_out, float beta)
{
    cudaStream_t s = starpu_cuda_get_local_stream();
    cublasHandle_t h = starpu_cublas_get_local_handle();
    const float alpha = 1.0f;
    cudaDataType_t tw = w_elem == 2 ? CUDA_R_16BF : CUDA_R_32F;
    if (w_elem == 2 && in_elem == 4) { /* bf16 weights: the activation tile goes bf16 too */
        uint16_t *in16 = _apb_cuda_scratch(_APB_CUDA_SCRATCH_GEMM_IN, (size_t)rows * n_in * 2);
        if (!in16)
            return -1;
        apb_cuda_f32_to_bf16(in16, n_in, in, ld_in, rows, n_in, s);
        in = in16;
        ld_in = n_in;
    } else if (w_elem != in_elem) {
        _apb_task_fail(APB_E_RUNTIME, "gemm: fp32 weights with a bf16 activation are not supported");
        return -1;
    }
    /* Row-major out (rows x n_out) = in W^T is column-major out^T = W^T(op T) in^T. */
    cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n_out, rows, n_in, &alpha, w, tw,
                                     n_in, in, tw, ld_in, &beta, out,
                                     out_bf16 ? CUDA_R_16BF : CUDA_R_32F, ld_out,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
        _apb_task_fail(APB_E_RUNTIME, "cublasGemmEx (%d x %d x %d) failed: %s", rows, n_out, n_in,
                       cublasGetStatusString(st));
        return -1;
    }
    return 0;
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

double apb_runtime_gpu_used(void)
{
    int gw[64], seen[64] = {0}, cur = 0;
    int n = apb_runtime_cuda_workers(gw, 64);
    double used = 0;
    (void)cudaGetDevice(&cur);
    for (int i = 0; i < n && i < 64; i++) {
        int dev = starpu_worker_get_devid(gw[i]);
        if (dev < 0 || dev >= 64 || seen[dev])
            continue;
        seen[dev] = 1;
        size_t fr = 0, tot = 0;
        if (cudaSetDevice(dev) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            used += (double)(tot - fr);
        else
            (void)cudaGetLastError();
    }
    (void)cudaSetDevice(cur);
    return used;
}
#else
int apb_runtime_cuda_devices(void) { return 0; }
double apb_runtime_gpu_used(void) { return 0; }
#endif

/* ------------------------------------------------------------------ NCCL (--allgather nccl) */
#if defined(APB_HAVE_NCCL) && defined(APB_CUDA)
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One communicator per CUDA worker. NCCL rank g = MPI rank * G + the worker's index among the
 * process's G CUDA workers (the order placement uses for GPUs), so NCCL ranks follow host order
 * across processes too. */
static ncclComm_t _apb_nccl_of_worker[STARPU_NMAXWORKERS];
static int _apb_nccl_workers[64], _apb_nccl_n, _apb_nccl_first, _apb_nccl_total;

/* What a rank tells the others before NCCL starts (apb_runtime_exchange). */
struct _apb_nccl_info {
    int ngpu;
    char node[64];     /* host name: GPUs are only the same GPU on the same node */
    char bus[16][16];  /* PCI bus id of each GPU (the first 16) */
    ncclUniqueId id;   /* rank 0's */
};

/* MPI ranks: rank 0's unique id goes to everyone through StarPU-MPI, then every rank joins one
 * communicator of N G ranks, one per local GPU (grouped: one thread initializes several). Every
 * check runs on the exchanged data, so all ranks take the same decision and none is left waiting
 * inside NCCL for a peer that refused. */
static int _apb_nccl_init_ranks(ncclComm_t *comms, int G, int *devs, apb_err *err)
{
    int N = apb_runtime_nranks(), me = apb_runtime_rank(), rc = APB_OK;
    struct _apb_nccl_info mine, *all = calloc((size_t)N, sizeof *all);
    if (!all)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    memset(&mine, 0, sizeof mine);
    mine.ngpu = G;
    if (gethostname(mine.node, sizeof mine.node - 1) != 0)
        snprintf(mine.node, sizeof mine.node, "?");
    for (int g = 0; g < G && g < 16; g++)
        if (cudaDeviceGetPCIBusId(mine.bus[g], sizeof mine.bus[g], devs[g]) != cudaSuccess)
            snprintf(mine.bus[g], sizeof mine.bus[g], "dev%d", devs[g]);
    ncclResult_t r = ncclSuccess;
    if (me == 0 && G > 0)
        r = ncclGetUniqueId(&mine.id);
    if (r != ncclSuccess)
        mine.ngpu = -1; /* tells every rank to stop */
    if ((rc = apb_runtime_exchange(&mine, sizeof mine, all, err)))
        goto out;
    for (int q = 0; q < N && !rc; q++) {
        if (all[q].ngpu == 0)
            rc = apb_fail(err, APB_E_USAGE, "--allgather nccl needs CUDA workers (--device cuda) on "
                          "every rank; rank %d has none", q);
        else if (all[q].ngpu < 0)
            rc = apb_fail(err, APB_E_RUNTIME, "NCCL: rank 0 could not create the unique id: %s",
                          ncclGetErrorString(r));
        else if (all[q].ngpu != all[0].ngpu)
            rc = apb_fail(err, APB_E_USAGE, "--allgather nccl over MPI: every rank needs the same "
                          "number of GPUs (rank 0 has %d, rank %d has %d)", all[0].ngpu, q, all[q].ngpu);
    }
    for (int q = 0; q < N && !rc; q++) /* two ranks of one node on one GPU: NCCL refuses */
        for (int p = 0; p <= q && !rc; p++)
            for (int a = 0; a < all[q].ngpu && a < 16 && !rc; a++)
                for (int b = 0; b < (p == q ? a : all[p].ngpu) && b < 16 && !rc; b++)
                    if (!strcmp(all[q].node, all[p].node) && !strcmp(all[q].bus[a], all[p].bus[b]))
                        rc = apb_fail(err, APB_E_USAGE, "--allgather nccl: GPU %s of node %s is driven "
                                      "by rank %d and rank %d; NCCL takes one rank per GPU: give each "
                                      "rank its own GPUs (CUDA_VISIBLE_DEVICES or "
                                      "STARPU_WORKERS_CUDAID)", all[q].bus[a], all[q].node, p, q);
    if (rc)
        goto out;
    r = ncclGroupStart();
    for (int g = 0; g < G && r == ncclSuccess; g++) {
        if (cudaSetDevice(devs[g]) != cudaSuccess) {
            r = ncclUnhandledCudaError;
            break;
        }
        r = ncclCommInitRank(&comms[g], N * G, all[0].id, me * G + g);
    }
    ncclResult_t r2 = ncclGroupEnd();
    if (r == ncclSuccess)
        r = r2;
    if (r != ncclSuccess)
        rc = apb_fail(err, APB_E_RUNTIME, "NCCL: rank %d could not join the communicator of %d GPUs "
                      "over %d ranks: %s", me, N * G, N, ncclGetErrorString(r));
out:
    free(all);
    return rc;
}

int apb_runtime_nccl_init(apb_err *err)
{
    if (_apb_nccl_n)
        return APB_OK;
    int gw[64], devs[64];
    int G = apb_runtime_cuda_workers(gw, 64), ranks = apb_runtime_nranks() > 1;
    if (G <= 0 && !ranks)
        return apb_fail(err, APB_E_USAGE, "--allgather nccl needs CUDA workers (--device cuda)");
    if (G > 64) /* over MPI the exchanged PCI ids cover a rank's first 16 GPUs */
        G = 64;
    if (G < 0)
        G = 0;
    for (int g = 0; g < G; g++) {
        devs[g] = starpu_worker_get_devid(gw[g]);
        for (int i = 0; i < g; i++)
            if (devs[i] == devs[g] && !ranks)
                return apb_fail(err, APB_E_USAGE, "--allgather nccl: two CUDA workers drive GPU %d "
                                "(STARPU_NWORKER_PER_CUDA > 1); NCCL takes one rank per GPU", devs[g]);
    }
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* NVLink SHARP multicast: off on these machines */
    ncclComm_t comms[64];
    int cur = 0, rc = APB_OK;
    (void)cudaGetDevice(&cur);
    if (ranks) {
        rc = _apb_nccl_init_ranks(comms, G, devs, err);
    } else {
        ncclResult_t r = ncclCommInitAll(comms, G, devs); /* one process: local GPUs */
        if (r != ncclSuccess)
            rc = apb_fail(err, APB_E_RUNTIME, "NCCL: creating the communicators of %d GPU(s) failed: %s",
                          G, ncclGetErrorString(r));
    }
    (void)cudaSetDevice(cur);
    if (rc)
        return rc;
    for (int g = 0; g < G; g++) {
        _apb_nccl_of_worker[gw[g]] = comms[g];
        _apb_nccl_workers[g] = gw[g];
    }
    _apb_nccl_n = G;
    _apb_nccl_first = apb_runtime_rank() * G;
    _apb_nccl_total = apb_runtime_nranks() * G;
    return APB_OK;
}

int apb_runtime_nccl_size(void) { return _apb_nccl_total; }

int apb_runtime_nccl_worker(int g)
{
    g -= _apb_nccl_first;
    return g >= 0 && g < _apb_nccl_n ? _apb_nccl_workers[g] : -1;
}

void *_apb_nccl_comm(void)
{
    int w = starpu_worker_get_id();
    return w >= 0 && w < STARPU_NMAXWORKERS ? (void *)_apb_nccl_of_worker[w] : NULL;
}

void _apb_nccl_shutdown(void)
{
    for (int g = 0; g < _apb_nccl_n; g++) {
        ncclCommDestroy(_apb_nccl_of_worker[_apb_nccl_workers[g]]);
        _apb_nccl_of_worker[_apb_nccl_workers[g]] = NULL;
    }
    _apb_nccl_n = _apb_nccl_first = _apb_nccl_total = 0;
}

int apb_runtime_has_nccl(void) { return 1; }
#else
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
#endif
