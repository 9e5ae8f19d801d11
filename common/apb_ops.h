/* SPDX-License-Identifier: MIT */
/**
 * @brief The one op table: every op of the model, its name and its kind.
 *
 * Task names (`<op>-<layer>-h<host>`), codelet names, per-op accounting, traces (the colors and the
 * communication-overlap figures) and the schedulers' classification all read this table; adding an
 * op is one row here (plus its codelet file, see docs/DESIGN.md "How to add an op").
 *
 * Kinds (one definition, used by traces and schedulers alike):
 *   compute       dense ops: embed, rmsnorm, qkv, rope, linear, mlp, logits, sample, kv_compact,
 *                 and the fused few-row layer steps layer, layer_pre, layer_post (decoding)
 *   compress      qmean, select, retain: what later hosts wait for (the compressed blocks)
 *   communication lse_merge, kv_append, allgather: gathering partial results, caches and blocks
 *   attention     attention
 *
 * It lives in common/ (no StarPU, no other apb folder) so that schedulers/ and runtime/ both read it
 * without a cycle between them (runtime/ resolves policies through schedulers/).
 */
#ifndef APB_OPS_H
#define APB_OPS_H

/* What a task does, for scheduling and for the trace colors. */
enum apb_sched_kind {
    APB_KIND_COMPUTE = 0,   /* dense ops */
    APB_KIND_COMPRESS = 1,  /* qmean, select, retain */
    APB_KIND_COMM = 2,      /* lse_merge, kv_append, allgather */
    APB_KIND_ATTENTION = 3, /* attention */
    APB_KIND_COUNT
};

/* X(OP, "name", KIND): the table itself, in enum order. */
#define APB_OP_TABLE(X)                                  \
    X(EMBED, "embed", APB_KIND_COMPUTE)                  \
    X(RMSNORM, "rmsnorm", APB_KIND_COMPUTE)              \
    X(QKV, "qkv", APB_KIND_COMPUTE)                      \
    X(ROPE, "rope", APB_KIND_COMPUTE)                    \
    X(ATTENTION, "attention", APB_KIND_ATTENTION)        \
    X(LINEAR, "linear", APB_KIND_COMPUTE)                \
    X(MLP, "mlp", APB_KIND_COMPUTE)                      \
    X(LOGITS, "logits", APB_KIND_COMPUTE)                \
    X(SAMPLE, "sample", APB_KIND_COMPUTE)                \
    X(KV_APPEND, "kv_append", APB_KIND_COMM)             \
    X(QMEAN, "qmean", APB_KIND_COMPRESS)                 \
    X(SELECT, "select", APB_KIND_COMPRESS)               \
    X(LSE_MERGE, "lse_merge", APB_KIND_COMM)             \
    X(RETAIN, "retain", APB_KIND_COMPRESS)               \
    X(ALLGATHER, "allgather", APB_KIND_COMM)             \
    X(KV_COMPACT, "kv_compact", APB_KIND_COMPUTE)        \
    X(LAYER, "layer", APB_KIND_COMPUTE)                  \
    X(LAYER_PRE, "layer_pre", APB_KIND_COMPUTE)          \
    X(LAYER_POST, "layer_post", APB_KIND_COMPUTE)

#define _APB_OP_ENUM(op, name, kind) APB_OP_##op,
enum apb_op { APB_OP_TABLE(_APB_OP_ENUM) APB_OP_COUNT };
#undef _APB_OP_ENUM

typedef struct apb_op_info {
    enum apb_op op;
    const char *name;       /* the codelet name and the first part of every task name */
    enum apb_sched_kind kind;
} apb_op_info;

/* The row of op (NULL when op is out of range). */
const apb_op_info *apb_op_info_of(enum apb_op op);
const char *apb_op_name(enum apb_op op);                 /* "?" when out of range */
enum apb_sched_kind apb_op_kind(enum apb_op op);         /* compute when out of range */
/* The op whose name is `name` (a codelet name); APB_OP_COUNT when none (e.g. "zero" fills). */
enum apb_op apb_op_of_name(const char *name);
const char *apb_op_kind_name(enum apb_sched_kind k);     /* "compute", ..., "?" */

#endif
