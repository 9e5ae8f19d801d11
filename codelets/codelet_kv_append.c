/* SPDX-License-Identifier: MIT */
/** @brief Appends new K/V rows into a preallocated KV-cache tile (decode). */
#include <string.h>

#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_kv_append_args {
    int dst_row;
};

static void _apb_kv_append_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_kv_append_args *a = cl_arg;
    for (int m = 0; m < 2; m++) {
        const float *src = _APB_PTR(buffers[m]);
        float *dst = _APB_PTR(buffers[2 + m]);
        int n = _APB_ROWS(buffers[m]), cols = _APB_COLS(buffers[m]);
        for (int i = 0; i < n; i++)
            memcpy(dst + (size_t)(a->dst_row + i) * _APB_LD(buffers[2 + m]),
                   src + (size_t)i * _APB_LD(buffers[m]), sizeof(float) * cols);
    }
    _apb_op_account(APB_OP_KV_APPEND, t0, 0);
}

#ifdef APB_CUDA
static void _apb_kv_append_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_kv_append_args *a = cl_arg;
    for (int m = 0; m < 2; m++) {
        void *sb = buffers[m], *db = buffers[2 + m];
        int n = _APB_ROWS(sb), cols = _APB_COLS(sb);
        if (n > 0 && cols > 0)
            cudaMemcpy2DAsync((float *)_APB_PTR(db) + (size_t)a->dst_row * _APB_LD(db),
                              sizeof(float) * (size_t)_APB_LD(db), _APB_PTR(sb),
                              sizeof(float) * (size_t)_APB_LD(sb), sizeof(float) * (size_t)cols,
                              (size_t)n, cudaMemcpyDeviceToDevice, starpu_cuda_get_local_stream());
    }
    _apb_cuda_check("kv_append");
    _apb_op_count(APB_OP_KV_APPEND, 0);
}
#endif

static struct starpu_perfmodel _apb_kv_append_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_kv_append",
};

static struct starpu_codelet _apb_kv_append_cl = {
    .cpu_funcs = {_apb_kv_append_cpu},
    .cpu_funcs_name = {"_apb_kv_append_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_kv_append_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 4,
    .modes = {STARPU_R, STARPU_R, STARPU_RW, STARPU_RW},
    .model = &_apb_kv_append_model,
    .name = "kv_append",
};

int apb_insert_kv_append(apb_handle k, apb_handle v, apb_handle kc, apb_handle vc, int dst_row,
                         apb_task_tag tag)
{
    if (dst_row < 0 || dst_row + apb_tile_rows(k) > apb_tile_rows(kc) ||
        apb_tile_cols(k) != apb_tile_cols(kc))
        return -EINVAL;
    struct _apb_kv_append_args a = {.dst_row = dst_row};
    return _apb_insert_check(
        apb_task_insert(&_apb_kv_append_cl, STARPU_R, k, STARPU_R, v, STARPU_RW, kc, STARPU_RW, vc,
                           STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                           STARPU_NAME, _apb_task_name("kv_append", tag), 0),
        "kv_append");
}
