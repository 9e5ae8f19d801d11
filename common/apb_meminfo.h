/* SPDX-License-Identifier: MIT */
/** @brief Host memory available to a run. */
#ifndef APB_MEMINFO_H
#define APB_MEMINFO_H

/* MemAvailable from /proc/meminfo in bytes (or sysconf's available pages), -1 if unknown. */
double apb_host_memory_available(void);

#endif
