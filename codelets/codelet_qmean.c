/* SPDX-License-Identifier: MIT */
/** @brief Mean question query per KV head (query-aware selection vector, Spava). */
#include "codelets/codelet_common.h"

struct _apb_qmean_args {
    int row0, n, n_kv_heads, head_dim;
};

static void _apb_qmean_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_qmean_args *a = cl_arg;
    const float *q = _APB_PTR(buffers[0]);
    int ldq = _APB_LD(buffers[0]), H = _APB_COLS(buffers[0]) / a->head_dim;
    int d = a->head_dim, G = H / a->n_kv_heads;
    float *qbar = _APB_PTR(buffers[1]);
    for (int g = 0; g < a->n_kv_heads; g++)
        for (int c = 0; c < d; c++) {
            double s = 0;
            for (int i = a->row0; i < a->row0 + a->n; i++)
                for (int h = g * G; h < (g + 1) * G; h++)
                    s += q[(size_t)i * ldq + (size_t)h * d + c];
            qbar[g * d + c] = (float)(s / ((double)a->n * G));
        }
    _apb_op_account(APB_OP_QMEAN, t0, (double)a->n * H * d);
}

static struct starpu_perfmodel _apb_qmean_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_qmean",
};

static struct starpu_codelet _apb_qmean_cl = {
    .cpu_funcs = {_apb_qmean_cpu},
    .cpu_funcs_name = {"_apb_qmean_cpu"},
    .nbuffers = 2,
    .modes = {STARPU_R, STARPU_W},
    .model = &_apb_qmean_model,
    .name = "qmean",
};

int apb_insert_qmean(apb_handle q, int row0, int n, int n_kv_heads, int head_dim, apb_handle qbar,
                     apb_task_tag tag)
{
    if (row0 < 0 || n <= 0 || row0 + n > apb_tile_rows(q) || n_kv_heads <= 0 || head_dim <= 0 ||
        apb_tile_cols(q) % (n_kv_heads * head_dim) || apb_tile_cols(qbar) != n_kv_heads * head_dim)
        return -EINVAL;
    struct _apb_qmean_args a = {.row0 = row0, .n = n, .n_kv_heads = n_kv_heads, .head_dim = head_dim};
    return _apb_insert_check(
        starpu_task_insert(&_apb_qmean_cl, STARPU_R, q, STARPU_W, qbar,
                           STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                           STARPU_PRIORITY, tag.prio, STARPU_NAME, _apb_task_name("qmean", tag), 0),
        "qmean");
}
