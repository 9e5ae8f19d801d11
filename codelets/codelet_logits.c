/* SPDX-License-Identifier: MIT */
/** @brief Final RMSNorm + LM head for a few rows (the positions that are sampled). */
#include <stdlib.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"

struct _apb_logits_args {
    int row0, n;
    float eps;
};

static void _apb_logits_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_logits_args *a = cl_arg;
    const float *x = _APB_PTR(buffers[0]);
    int dim = _APB_COLS(buffers[0]), ldx = _APB_LD(buffers[0]);
    const float *nw = _APB_PTR(buffers[1]), *head = _APB_PTR(buffers[2]);
    int vocab = _APB_ROWS(buffers[2]);
    float *logits = _APB_PTR(buffers[3]);
    float *xn = _apb_thread_scratch(_APB_SCRATCH_LOGITS, (size_t)a->n * dim);
    if (!xn) {
        for (int i = 0; i < a->n * vocab; i++)
            logits[i] = NAN;
        return;
    }
    for (int i = 0; i < a->n; i++)
        apb_rmsnorm_f32(xn + (size_t)i * dim, x + (size_t)(a->row0 + i) * ldx, nw, dim, a->eps);
    apb_linear_f32(logits, _APB_LD(buffers[3]), xn, dim, head, NULL, a->n, dim, vocab, 0);
    _apb_op_account(APB_OP_LOGITS, t0, 2.0 * a->n * dim * vocab);
}

static struct starpu_perfmodel _apb_logits_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_logits",
};

static struct starpu_codelet _apb_logits_cl = {
    .cpu_funcs = {_apb_logits_cpu},
    .cpu_funcs_name = {"_apb_logits_cpu"},
    .nbuffers = 4,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_logits_model,
    .name = "logits",
};

int apb_insert_logits(apb_handle x, int row0, int n, apb_handle norm_w, apb_handle lm_head,
                      apb_handle logits, float eps, apb_task_tag tag)
{
    if (row0 < 0 || n <= 0 || row0 + n > apb_tile_rows(x) || apb_tile_rows(logits) < n)
        return -EINVAL;
    struct _apb_logits_args a = {.row0 = row0, .n = n, .eps = eps};
    int ret = apb_task_insert(&_apb_logits_cl, STARPU_R, x, STARPU_R, norm_w, STARPU_R, lm_head,
                                 STARPU_W, logits, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                                 STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                                 STARPU_FLOPS, 2.0 * n * apb_tile_cols(x) * apb_tile_rows(lm_head),
                                 STARPU_NAME, _apb_task_name("logits", tag), 0);
    return _apb_insert_check(ret, "logits");
}
