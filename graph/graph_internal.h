/* SPDX-License-Identifier: MIT */
/** @brief Pieces shared by the graph builders (not public). */
#ifndef APB_GRAPH_INTERNAL_H
#define APB_GRAPH_INTERNAL_H

#include "graph/apb_graph.h"

#define _APB_TRY(call, what)                                                                      \
    do {                                                                                          \
        int _r = (call);                                                                          \
        if (_r)                                                                                   \
            return apb_fail(err, APB_E_RUNTIME, "submitting %s failed (%d)", what, _r);           \
    } while (0)

/* Norm, QKV and RoPE of one tile whose first row has position pos0. */
int _apb_pre_attention(apb_model *m, int l, apb_handle x, apb_handle xn, apb_handle q, apb_handle k,
                       apb_handle v, int pos0, apb_task_tag tag, apb_err *err);
/* Under APB_PREC_BF16: replaces the n fp32 K/V tiles of a finished layer by bf16 copies (owned by
 * the rank of owner_host), releasing the fp32 tiles after their last reader. */
int _apb_compact_kv(apb_handle *k, apb_handle *v, int n, int owner_host, int layer, apb_err *err);
/* o-proj (+residual), norm, MLP (+residual). */
int _apb_post_attention(apb_model *m, int l, apb_handle o, apb_handle x, apb_handle xn,
                        apb_task_tag tag, apb_err *err);

#endif
