/* SPDX-License-Identifier: MIT */
/**
 * @brief APB's allgather of compressed blocks as one NCCL collective per layer: the second,
 * selectable implementation (`--allgather nccl`); the first is StarPU's data dependencies, where
 * every later host's attention reads host r's block and StarPU copies it peer to peer.
 *
 * One task per GPU g and layer (`allgather-<layer>-h<first host of g>`), pinned to g's CUDA worker,
 * reads the compressed K/V blocks of the hosts on g and writes g's copy of the gathered buffers:
 * W x K rows, host j's block at rows [j K, (j + 1) K). Its body packs the local blocks into their
 * slots and runs ncclAllGather in place on the worker's stream; the G tasks of a layer meet inside
 * NCCL. The attention of host r then reads rows [0, r K) of its GPU's buffer as one segment.
 *
 * Over MPI ranks the same tasks run on the rank of their GPU (StarPU-MPI places a task on the
 * owner of what it writes: gk/gv belong to the GPU's first host) and one communicator spans the
 * GPUs of all ranks, NCCL rank = MPI rank x G + local GPU (apb_runtime_nccl_init); no block goes
 * through StarPU-MPI then, only the question mean that every selection reads anyway.
 *
 * The G tasks block each other's GPU stream until all have started, so the graph guarantees they
 * all can: hosts are pinned to GPUs (no host's task queues behind another GPU's collective) and
 * each GPU holds the same number of hosts (graph/apb.c checks these). `deps`
 * are read-only inputs that only order the task: the graph passes the layer's question mean (the
 * one cross-GPU input of every selection) and a KV tile of the GPU's last host, so no collective
 * is queued before everything the other GPUs' collectives wait for has run (a GPU whose only host
 * is the last one has no block to send, and its collectives would otherwise start at once, one
 * layer after the other, and block the stream that computes the question mean). `order`, accessed
 * RW by every collective of a GPU, makes each GPU issue them in submission (layer) order, the
 * order NCCL matches them in. There
 * is no CPU implementation: NCCL is a GPU library; the CPU path uses the data dependencies.
 */
#include <stdlib.h>
#include <string.h>

#include "codelets/codelet_common.h"

struct _apb_allgather_args {
    int n;            /* local blocks */
    int slot[64];     /* host index of each local block */
    int per_gpu;      /* slots each GPU contributes */
    int gpu;          /* this GPU's index (its NCCL rank) */
    int rows, cols;   /* K, Hk d */
};

#if defined(APB_CUDA) && defined(APB_HAVE_NCCL)
#include <nccl.h>

static void _apb_allgather_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_allgather_args *a = cl_arg;
    void *gkb = buffers[2 * a->n], *gvb = buffers[2 * a->n + 1];
    cudaStream_t s = starpu_cuda_get_local_stream();
    size_t row = (size_t)a->cols * sizeof(float);
    if ((size_t)_APB_LD(gkb) != (size_t)a->cols || (size_t)_APB_LD(gvb) != (size_t)a->cols) {
        _apb_task_fail(APB_E_RUNTIME, "allgather: the gathered buffers are not contiguous");
        return;
    }
    float *gk = _APB_PTR(gkb), *gv = _APB_PTR(gvb);
    for (int i = 0; i < a->n; i++) {
        void *kb = buffers[i], *vb = buffers[a->n + i];
        size_t off = (size_t)a->slot[i] * a->rows * a->cols;
        if (cudaMemcpy2DAsync(gk + off, row, _APB_PTR(kb), (size_t)_APB_LD(kb) * sizeof(float), row,
                              (size_t)a->rows, cudaMemcpyDeviceToDevice, s) != cudaSuccess ||
            cudaMemcpy2DAsync(gv + off, row, _APB_PTR(vb), (size_t)_APB_LD(vb) * sizeof(float), row,
                              (size_t)a->rows, cudaMemcpyDeviceToDevice, s) != cudaSuccess) {
            _apb_cuda_check("allgather (pack)");
            return;
        }
    }
    ncclComm_t comm = (ncclComm_t)_apb_nccl_comm();
    if (!comm) {
        _apb_task_fail(APB_E_RUNTIME, "allgather: no NCCL communicator for CUDA worker %d",
                       starpu_worker_get_id());
        return;
    }
    size_t count = (size_t)a->per_gpu * a->rows * a->cols, mine = (size_t)a->gpu * count;
    ncclResult_t r = ncclGroupStart();
    if (r == ncclSuccess)
        r = ncclAllGather(gk + mine, gk, count, ncclFloat, comm, s);
    if (r == ncclSuccess)
        r = ncclAllGather(gv + mine, gv, count, ncclFloat, comm, s);
    ncclResult_t r2 = ncclGroupEnd();
    if (r == ncclSuccess)
        r = r2;
    if (r != ncclSuccess)
        _apb_task_fail(APB_E_RUNTIME, "allgather: NCCL: %s", ncclGetErrorString(r));
    _apb_cuda_check("allgather");
    _apb_op_count(APB_OP_ALLGATHER, 0);
}
#endif

static struct starpu_perfmodel _apb_allgather_model = {
    .type = STARPU_HISTORY_BASED, /* one shape per run: W x K rows */
    .symbol = "apb_allgather",
};

static struct starpu_codelet _apb_allgather_cl = {
#if defined(APB_CUDA) && defined(APB_HAVE_NCCL)
    .cuda_funcs = {_apb_allgather_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_allgather_model,
    .name = "allgather",
};

int apb_insert_allgather_nccl(const apb_handle *ck, const apb_handle *cv, const int *slot, int n,
                              int gpu, int per_gpu, apb_handle gk, apb_handle gv, apb_handle order,
                              const apb_handle *deps, int ndeps, apb_task_tag tag)
{
#if defined(APB_CUDA) && defined(APB_HAVE_NCCL)
    if (n < 0 || n > 64 || n > per_gpu || gpu < 0 || per_gpu <= 0 || !gk || !gv || ndeps < 0 ||
        ndeps > 64)
        return -EINVAL;
    int K = apb_tile_rows(gk) / (per_gpu * apb_runtime_nccl_size()), cols = apb_tile_cols(gk);
    if (K <= 0 || apb_tile_rows(gk) != K * per_gpu * apb_runtime_nccl_size() ||
        apb_tile_rows(gv) != apb_tile_rows(gk) || apb_tile_cols(gv) != cols)
        return -EINVAL;
    struct _apb_allgather_args a = {.n = n, .per_gpu = per_gpu, .gpu = gpu, .rows = K, .cols = cols};
    struct starpu_data_descr d[130];
    int nd = 0;
    for (int i = 0; i < n; i++) {
        if (apb_tile_rows(ck[i]) != K || apb_tile_cols(ck[i]) != cols || apb_tile_rows(cv[i]) != K ||
            apb_tile_cols(cv[i]) != cols || slot[i] < gpu * per_gpu || slot[i] >= (gpu + 1) * per_gpu)
            return -EINVAL;
        a.slot[i] = slot[i];
        d[nd++] = (struct starpu_data_descr){ck[i], STARPU_R};
    }
    for (int i = 0; i < n; i++)
        d[nd++] = (struct starpu_data_descr){cv[i], STARPU_R};
    d[nd++] = (struct starpu_data_descr){gk, STARPU_W};
    d[nd++] = (struct starpu_data_descr){gv, STARPU_W};
    if (order) /* RW: this GPU's collectives run in submission (layer) order */
        d[nd++] = (struct starpu_data_descr){order, STARPU_RW};
    for (int i = 0; i < ndeps; i++) /* ordering only: the body does not read them */
        d[nd++] = (struct starpu_data_descr){deps[i], STARPU_R};
    int w = apb_runtime_nccl_worker(gpu); /* -1: another rank's GPU, where the task runs */
    if (w < 0 && apb_runtime_nranks() == 1)
        return -EINVAL;
    return _apb_insert_check(
        apb_task_insert(&_apb_allgather_cl, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS,
                        _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                        STARPU_EXECUTE_ON_WORKER, w, STARPU_NAME, _apb_task_name("allgather", tag), 0),
        "allgather");
#else
    (void)ck, (void)cv, (void)slot, (void)n, (void)gpu, (void)per_gpu, (void)gk, (void)gv, (void)tag;
    (void)order, (void)deps, (void)ndeps;
    (void)_apb_allgather_cl;
    return -ENODEV;
#endif
}
