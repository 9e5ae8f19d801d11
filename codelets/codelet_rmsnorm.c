/* SPDX-License-Identifier: MIT */
/** @brief RMSNorm: out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, row by row. */
#include <math.h>

#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_rmsnorm_args {
    float eps;
};

void apb_rmsnorm_f32(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0; /* double: dim up to 16K, keeps the mean exact enough for any input scale */
    for (int j = 0; j < n; j++)
        ss += (double)x[j] * x[j];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int j = 0; j < n; j++)
        out[j] = x[j] * r * w[j];
}

static void _apb_rmsnorm_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_rmsnorm_args *a = cl_arg;
    const float *x = _APB_PTR(buffers[0]);
    const float *w = _APB_PTR(buffers[1]);
    int rows = _APB_ROWS(buffers[0]), cols = _APB_COLS(buffers[0]);
    int ldx = _APB_LD(buffers[0]), ldo = _APB_LD(buffers[2]);
    if (_apb_elem(buffers[2]) == 2) { /* a bf16 xn tile: each row rounded (nearest even) */
        float *row = _apb_thread_scratch(_APB_SCRATCH_BF16_OUT, (size_t)cols);
        if (!row) {
            _apb_task_fail(APB_E_NOMEM, "rmsnorm: out of host memory");
            return;
        }
        for (int i = 0; i < rows; i++) {
            apb_rmsnorm_f32(row, x + (size_t)i * ldx, w, cols, a->eps);
            apb_bf16_from_f32_n((uint16_t *)_APB_PTR(buffers[2]) + (size_t)i * ldo, row, (size_t)cols);
        }
    } else {
        float *out = _APB_PTR(buffers[2]);
        for (int i = 0; i < rows; i++)
            apb_rmsnorm_f32(out + (size_t)i * ldo, x + (size_t)i * ldx, w, cols, a->eps);
    }
    _apb_op_account(APB_OP_RMSNORM, t0, 4.0 * rows * cols);
}

#ifdef APB_CUDA
static void _apb_rmsnorm_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_rmsnorm_args *a = cl_arg;
    int rows = _APB_ROWS(buffers[0]), cols = _APB_COLS(buffers[0]);
    apb_cuda_rmsnorm_to(_APB_PTR(buffers[2]), _APB_LD(buffers[2]), _apb_elem(buffers[2]) == 2, _APB_PTR(buffers[0]),
                        _APB_LD(buffers[0]), _APB_PTR(buffers[1]), rows, cols, a->eps,
                        starpu_cuda_get_local_stream());
    _apb_cuda_check("rmsnorm");
    _apb_op_count(APB_OP_RMSNORM, 4.0 * rows * cols);
}
#endif

static struct starpu_perfmodel _apb_rmsnorm_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_rmsnorm",
};

static struct starpu_codelet _apb_rmsnorm_cl = {
    .cpu_funcs = {_apb_rmsnorm_cpu},
    .cpu_funcs_name = {"_apb_rmsnorm_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_rmsnorm_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 3,
    .modes = {STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_rmsnorm_model,
    .name = "rmsnorm",
};

int apb_insert_rmsnorm(apb_handle x, apb_handle w, apb_handle out, float eps, apb_task_tag tag)
{
    struct _apb_rmsnorm_args a = {.eps = eps};
    double flops = 4.0 * apb_tile_rows(x) * apb_tile_cols(x);
    return _apb_insert_check(
        apb_task_insert(&_apb_rmsnorm_cl, STARPU_R, x, STARPU_R, w, STARPU_W, out,
                           STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                           STARPU_FLOPS, flops, STARPU_NAME, _apb_task_name("rmsnorm", tag), 0),
        "rmsnorm");
}
