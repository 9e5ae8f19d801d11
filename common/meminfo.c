/* SPDX-License-Identifier: MIT */
/** @brief apb_host_memory_available (common/apb_meminfo.h). */
#include <stdio.h>
#include <unistd.h>

#include "common/apb_meminfo.h"

double apb_host_memory_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) {
            fclose(f);
            return kb * 1024.0;
        }
    }
    if (f)
        fclose(f);
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * psz : -1;
}
