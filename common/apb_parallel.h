/* SPDX-License-Identifier: MIT */
/** @brief A minimal parallel for over host threads, for bulk work outside the task graph
 * (random weights, bf16 conversion of weights) before StarPU's workers start computing. */
#ifndef APB_PARALLEL_H
#define APB_PARALLEL_H

#include <stddef.h>

/* Calls fn(ctx, lo, hi) over [0, n) split into contiguous ranges, one per thread (at most the
 * number of online CPUs, 32 at most); ranges smaller than grain are not split further. Falls back
 * to one call in the calling thread when threads cannot be created. */
void apb_parallel_for(size_t n, size_t grain, void (*fn)(void *ctx, size_t lo, size_t hi), void *ctx);

#endif
