/* SPDX-License-Identifier: MIT */
/**
 * @brief NCCL glue (compiled when configure found nccl.h; runtime/nccl_none.c otherwise): one
 * communicator per CUDA worker for the allgather of compressed blocks (--allgather nccl).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "runtime/runtime_internal.h"

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
