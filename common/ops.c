/* SPDX-License-Identifier: MIT */
/** @brief The op table (common/apb_ops.h). */
#include <string.h>

#include "common/apb_ops.h"

#define _APB_OP_ROW(op, name, kind) {APB_OP_##op, name, kind},
static const apb_op_info _apb_ops[APB_OP_COUNT] = {APB_OP_TABLE(_APB_OP_ROW)};
#undef _APB_OP_ROW

static const char *const _apb_kind_names[APB_KIND_COUNT] = {"compute", "compress", "communication",
                                                            "attention"};

const apb_op_info *apb_op_info_of(enum apb_op op)
{
    return (unsigned)op < APB_OP_COUNT ? &_apb_ops[op] : NULL;
}

const char *apb_op_name(enum apb_op op) { return (unsigned)op < APB_OP_COUNT ? _apb_ops[op].name : "?"; }

enum apb_sched_kind apb_op_kind(enum apb_op op)
{
    return (unsigned)op < APB_OP_COUNT ? _apb_ops[op].kind : APB_KIND_COMPUTE;
}

enum apb_op apb_op_of_name(const char *name)
{
    for (int i = 0; name && i < APB_OP_COUNT; i++)
        if (!strcmp(_apb_ops[i].name, name))
            return (enum apb_op)i;
    return APB_OP_COUNT;
}

const char *apb_op_kind_name(enum apb_sched_kind k)
{
    return (unsigned)k < APB_KIND_COUNT ? _apb_kind_names[k] : "?";
}
