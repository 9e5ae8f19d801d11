/* SPDX-License-Identifier: MIT */
/** @brief Final RMSNorm + LM head for a few rows (the positions that are sampled). */
#include <stdlib.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

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
    const float *nw = _APB_PTR(buffers[1]);
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
    if (_apb_linear_w(logits, _APB_LD(buffers[3]), xn, dim, buffers[2], NULL, a->n, 0))
        _apb_task_fail(APB_E_NOMEM, "logits: out of host memory");
    _apb_op_account(APB_OP_LOGITS, t0, 2.0 * a->n * dim * vocab);
}

#ifdef APB_CUDA
static void _apb_logits_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_logits_args *a = cl_arg;
    cudaStream_t st = starpu_cuda_get_local_stream();
    int dim = _APB_COLS(buffers[0]), ldx = _APB_LD(buffers[0]), vocab = _APB_ROWS(buffers[2]);
    float *xn = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, sizeof(float) * (size_t)a->n * dim);
    if (!xn)
        return;
    apb_cuda_rmsnorm(xn, dim, (const float *)_APB_PTR(buffers[0]) + (size_t)a->row0 * ldx, ldx,
                     _APB_PTR(buffers[1]), a->n, dim, a->eps, st);
    _apb_cuda_gemm(_APB_PTR(buffers[3]), _APB_LD(buffers[3]), 0, xn, dim, 4, _APB_PTR(buffers[2]),
                   _apb_elem(buffers[2]), a->n, dim, vocab, 0.0f);
    _apb_cuda_check("logits");
    _apb_op_count(APB_OP_LOGITS, 2.0 * a->n * dim * vocab);
}
#endif

static struct starpu_perfmodel _apb_logits_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_logits",
};

static struct starpu_codelet _apb_logits_cl = {
    .cpu_funcs = {_apb_logits_cpu},
    .cpu_funcs_name = {"_apb_logits_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_logits_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
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
