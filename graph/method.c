/* SPDX-License-Identifier: MIT */
/** @brief Method names (kept apart from the graph code so the CLI parser links without StarPU). */
#include <string.h>

#include "graph/apb_graph.h"

int apb_method_parse(const char *name, apb_method *m, apb_err *err)
{
    if (!strcmp(name, "full"))
        *m = APB_METHOD_FULL;
    else if (!strcmp(name, "apb"))
        *m = APB_METHOD_APB;
    else if (!strcmp(name, "star"))
        *m = APB_METHOD_STAR;
    else if (!strcmp(name, "ring"))
        *m = APB_METHOD_RING;
    else if (!strcmp(name, "zigzag"))
        *m = APB_METHOD_ZIGZAG;
    else if (!strcmp(name, "ulysses"))
        *m = APB_METHOD_ULYSSES;
    else if (!strcmp(name, "spava"))
        *m = APB_METHOD_SPAVA;
    else
        return apb_fail(err, APB_E_USAGE, "unknown method '%s' (full, apb, spava, star, ring, "
                                          "zigzag, ulysses)", name);
    return APB_OK;
}

const char *apb_method_name(apb_method m)
{
    switch (m) {
    case APB_METHOD_APB: return "apb";
    case APB_METHOD_STAR: return "star";
    case APB_METHOD_RING: return "ring";
    case APB_METHOD_ZIGZAG: return "zigzag";
    case APB_METHOD_ULYSSES: return "ulysses";
    case APB_METHOD_SPAVA: return "spava";
    default: return "full";
    }
}

int apb_placement_parse(const char *name, apb_placement *p, apb_err *err)
{
    if (!strcmp(name, "free"))
        *p = APB_PLACE_FREE;
    else if (!strcmp(name, "pinned"))
        *p = APB_PLACE_PINNED;
    else
        return apb_fail(err, APB_E_USAGE, "--placement: expected 'free' or 'pinned', got '%s'", name);
    return APB_OK;
}

/* Here beside the other option parsers, not in placement.c: apb_run's parser (apps/cli.c) is
 * fuzzed without the runtime. */
int apb_allgather_parse(const char *name, int *mode, apb_err *err)
{
    if (!strcmp(name, "starpu"))
        *mode = APB_ALLGATHER_STARPU;
    else if (!strcmp(name, "nccl"))
        *mode = APB_ALLGATHER_NCCL;
    else
        return apb_fail(err, APB_E_USAGE, "--allgather: expected starpu or nccl, got '%s'", name);
    return APB_OK;
}

int apb_pool_parse(const char *name, int *mode, apb_err *err)
{
    if (!strcmp(name, "block"))
        *mode = APB_POOL_BLOCK;
    else if (!strcmp(name, "reference"))
        *mode = APB_POOL_REFERENCE;
    else
        return apb_fail(err, APB_E_USAGE, "--pool: expected block or reference, got '%s'", name);
    return APB_OK;
}

int apb_short_chunk_parse(const char *name, int *mode, apb_err *err)
{
    if (!strcmp(name, "whole"))
        *mode = APB_SHORT_WHOLE;
    else if (!strcmp(name, "reference"))
        *mode = APB_SHORT_REFERENCE;
    else
        return apb_fail(err, APB_E_USAGE, "--short-chunk: expected whole or reference, got '%s'", name);
    return APB_OK;
}
