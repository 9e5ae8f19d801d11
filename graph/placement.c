/* SPDX-License-Identifier: MIT */
/**
 * @brief The placement function: which worker runs each host's tasks (PaRSEC's rank_of).
 *
 * Kept apart from the graph builders: they tag every task with its host, and this one function
 * maps hosts to workers. `free` leaves every task to the scheduler; `pinned` runs host h on CPU
 * worker h mod (number of CPU workers), the layout of W virtual hosts on a multicore node. GPU and
 * MPI placement (host -> GPU memory node, host -> rank) plug in here.
 */
#include "graph/apb_graph.h"

int apb_place_hosts(apb_placement p, int hosts, apb_err *err)
{
    if (p == APB_PLACE_FREE) {
        apb_runtime_place_hosts(NULL, 0);
        return APB_OK;
    }
    int cpus[256], map[256];
    int n = apb_runtime_cpu_workers(cpus, 256);
    if (n <= 0)
        return apb_fail(err, APB_E_USAGE, "--placement pinned needs CPU workers");
    if (hosts > 256)
        return apb_fail(err, APB_E_USAGE, "--placement pinned: at most 256 hosts");
    for (int h = 0; h < hosts; h++)
        map[h] = cpus[h % n];
    apb_runtime_place_hosts(map, hosts);
    return APB_OK;
}
