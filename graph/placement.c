/* SPDX-License-Identifier: MIT */
/**
 * @brief The placement function: which rank and which worker run each host's tasks (PaRSEC's
 * rank_of).
 *
 * Kept apart from the graph builders: they tag every task with its host, and this one function
 * maps hosts to ranks and workers. Over MPI (apb_runtime_nranks() > 1) the W hosts are split
 * contiguously over the N ranks: host h runs on rank h * N / W, so each rank holds W / N
 * consecutive hosts (a rank holds none when W < N). Within a rank, `free` leaves every task to the
 * scheduler; `pinned` runs the rank's i-th host on its CPU worker i mod (number of CPU workers),
 * the layout of virtual hosts on a multicore node, or, when CUDA workers exist, on GPU worker
 * floor(i * G / W_rank) of the rank's W_rank hosts: consecutive hosts share a GPU (virtual hosts),
 * so most passing blocks stay in one GPU's memory and only the blocks of the first host of each
 * GPU cross to the next one.
 */

#include "graph/apb_graph.h"

int apb_place_hosts(apb_placement p, int hosts, apb_err *err)
{
    if (hosts > 256)
        return apb_fail(err, APB_E_USAGE, "at most 256 hosts (got %d)", hosts);
    int nranks = apb_runtime_nranks(), ranks[256], first[256], count[256];
    for (int h = 0; h < hosts; h++) {
        ranks[h] = (int)((long)h * nranks / hosts);
        first[h] = h > 0 && ranks[h - 1] == ranks[h] ? first[h - 1] : h;
    }
    for (int h = hosts - 1; h >= 0; h--) /* hosts on h's rank */
        count[h] = h + 1 < hosts && ranks[h + 1] == ranks[h] ? count[h + 1] : h - first[h] + 1;
    apb_runtime_place_ranks(ranks, hosts);
    if (p == APB_PLACE_FREE) {
        apb_runtime_place_hosts(NULL, 0);
        return APB_OK;
    }
    int cpus[256], gpus[256], map[256];
    int ng = apb_runtime_cuda_workers(gpus, 256);
    if (ng > 0) {
        for (int h = 0; h < hosts; h++)
            map[h] = gpus[(int)((long)(h - first[h]) * ng / count[h])];
        apb_runtime_place_hosts(map, hosts);
        return APB_OK;
    }
    int n = apb_runtime_cpu_workers(cpus, 256);
    if (n <= 0)
        return apb_fail(err, APB_E_USAGE, "--placement pinned needs CPU or CUDA workers");
    for (int h = 0; h < hosts; h++) /* the index of h among its rank's hosts */
        map[h] = cpus[(h - first[h]) % n];
    apb_runtime_place_hosts(map, hosts);
    return APB_OK;
}
