/* SPDX-License-Identifier: MIT */
/**
 * @brief The method table: one descriptor per method (graph/methods/<method>.c), indexed by
 * apb_method. Adding a method: its file, its row here, its enum value and name (graph/apb_graph.h,
 * graph/method.c). See docs/DESIGN.md, "How to add a method".
 */
#include "graph/graph_internal.h"

static const apb_method_desc *const _apb_methods[] = {
    [APB_METHOD_FULL] = &apb_method_full,
    [APB_METHOD_APB] = &apb_method_apb,
    [APB_METHOD_STAR] = &apb_method_star,
    [APB_METHOD_RING] = &apb_method_ring,
    [APB_METHOD_ZIGZAG] = &apb_method_zigzag,
    [APB_METHOD_ULYSSES] = &apb_method_ulysses,
    [APB_METHOD_SPAVA] = &apb_method_spava,
};

const apb_method_desc *apb_method_desc_of(apb_method id)
{
    unsigned i = (unsigned)id;
    return i < sizeof _apb_methods / sizeof *_apb_methods && _apb_methods[i] ? _apb_methods[i]
                                                                              : &apb_method_full;
}
