/* SPDX-License-Identifier: MIT */
/** @brief Token embedding lookup: x[i] = embed[ids[i]]. */
#include <string.h>

#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

static void _apb_embed_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    double t0 = _apb_now_ns();
    const int32_t *ids = _APB_PTR(buffers[0]);
    int n = _APB_ROWS(buffers[0]);
    int vocab = _APB_ROWS(buffers[1]), dim = _APB_COLS(buffers[1]);
    float *x = _APB_PTR(buffers[2]);
    int ldx = _APB_LD(buffers[2]);
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= vocab) /* validated before submission; never read out of bounds */
            memset(x + (size_t)i * ldx, 0, sizeof(float) * dim);
        else if (_apb_weight_rows_f32(buffers[1], id, 1, x + (size_t)i * ldx) != x + (size_t)i * ldx)
            memcpy(x + (size_t)i * ldx, (const float *)_APB_PTR(buffers[1]) + (size_t)id * _APB_LD(buffers[1]),
                   sizeof(float) * dim);
    }
    _apb_op_account(APB_OP_EMBED, t0, 0);
}

#ifdef APB_CUDA
static void _apb_embed_cuda(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    apb_cuda_embed(_APB_PTR(buffers[2]), _APB_LD(buffers[2]), _APB_PTR(buffers[0]), _APB_PTR(buffers[1]),
                   _APB_LD(buffers[1]), _apb_elem(buffers[1]), _APB_ROWS(buffers[0]), _APB_COLS(buffers[1]),
                   _APB_ROWS(buffers[1]), starpu_cuda_get_local_stream());
    _apb_cuda_check("embed");
    _apb_op_count(APB_OP_EMBED, 0);
}
#endif

static struct starpu_perfmodel _apb_embed_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_embed",
};

static struct starpu_codelet _apb_embed_cl = {
    .cpu_funcs = {_apb_embed_cpu},
    .cpu_funcs_name = {"_apb_embed_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_embed_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 3,
    .modes = {STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_embed_model,
    .name = "embed",
};

int apb_insert_embed(apb_handle ids, apb_handle embed, apb_handle x, apb_task_tag tag)
{
    return _apb_insert_check(
        apb_task_insert(&_apb_embed_cl, STARPU_R, ids, STARPU_R, embed, STARPU_W, x,
                           STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_NAME, _apb_task_name("embed", tag), 0),
        "embed");
}
