/* SPDX-License-Identifier: MIT */
/**
 * @brief The placement function: which worker runs each host's tasks (PaRSEC's rank_of).
 *
 * Kept apart from the graph builders: they tag every task with its host, and this one function
 * maps hosts to workers. `free` leaves every task to the scheduler; `pinned` runs host h on CPU
 * worker h mod (number of CPU workers), the layout of W virtual hosts on a multicore node, or,
 * when CUDA workers exist, on GPU worker floor(h * G / W): consecutive hosts share a GPU (virtual
 * hosts), so most passing blocks stay in one GPU's memory and only the blocks of the first host
 * of each GPU cross to the next one. MPI placement (host -> rank) plugs in here.
 */
#include "graph/apb_graph.h"

int apb_place_hosts(apb_placement p, int hosts, apb_err *err)
{
    if (p == APB_PLACE_FREE) {
        apb_runtime_place_hosts(NULL, 0);
        return APB_OK;
    }
    int cpus[256], gpus[256], map[256];
    if (hosts > 256)
        return apb_fail(err, APB_E_USAGE, "--placement pinned: at most 256 hosts");
    int ng = apb_runtime_cuda_workers(gpus, 256);
    if (ng > 0) {
        for (int h = 0; h < hosts; h++)
            map[h] = gpus[(int)((long)h * ng / hosts)];
        apb_runtime_place_hosts(map, hosts);
        return APB_OK;
    }
    int n = apb_runtime_cpu_workers(cpus, 256);
    if (n <= 0)
        return apb_fail(err, APB_E_USAGE, "--placement pinned needs CPU or CUDA workers");
    for (int h = 0; h < hosts; h++)
        map[h] = cpus[h % n];
    apb_runtime_place_hosts(map, hosts);
    return APB_OK;
}
