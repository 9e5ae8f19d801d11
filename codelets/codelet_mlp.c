/* SPDX-License-Identifier: MIT */
/** @brief SwiGLU MLP with residual: x += down(silu(gate(xn)) * up(xn)). */
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

static void _apb_mlp_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    double t0 = _apb_now_ns();
    int rows = _APB_ROWS(buffers[0]), dim = _APB_COLS(buffers[0]), ldxn;
    const float *xn = _apb_act_f32(buffers[0], &ldxn); /* a bf16 xn tile: widened */
    int hidden = _APB_ROWS(buffers[1]);
    float *x = _APB_PTR(buffers[4]);
    float *g = _apb_thread_scratch(_APB_SCRATCH_MLP, (size_t)rows * 2 * hidden);
    if (!g || !xn) { /* a codelet cannot return an error: poison x so it shows downstream */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < dim; j++)
                ((float *)_APB_PTR(buffers[4]))[(size_t)i * _APB_LD(buffers[4]) + j] = NAN;
        return;
    }
    float *u = g + (size_t)rows * hidden;
    if (_apb_linear_w(g, hidden, xn, ldxn, buffers[1], NULL, rows, 0) ||
        _apb_linear_w(u, hidden, xn, ldxn, buffers[2], NULL, rows, 0)) {
        _apb_task_fail(APB_E_NOMEM, "mlp: out of host memory");
        return;
    }
    for (size_t i = 0; i < (size_t)rows * hidden; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    if (_apb_linear_w(x, _APB_LD(buffers[4]), g, hidden, buffers[3], NULL, rows, 1))
        _apb_task_fail(APB_E_NOMEM, "mlp: out of host memory");
    _apb_op_account(APB_OP_MLP, t0, 6.0 * rows * dim * hidden);
}

#ifdef APB_CUDA
/* bf16 weights: xn -> bf16, gate and up GEMMs write bf16 (fp32 accumulation), SwiGLU in fp32 math
 * back to bf16, and the down GEMM accumulates into the fp32 residual x (beta = 1). fp32 weights:
 * the same in fp32. */
static void _apb_mlp_cuda(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    cudaStream_t st = starpu_cuda_get_local_stream();
    const void *xn = _APB_PTR(buffers[0]);
    int rows = _APB_ROWS(buffers[0]), dim = _APB_COLS(buffers[0]), ldxn = _APB_LD(buffers[0]);
    int hidden = _APB_ROWS(buffers[1]), es = _apb_elem(buffers[1]), in_elem = _apb_elem(buffers[0]);
    size_t gbytes = (size_t)rows * hidden * es, xbytes = es == 2 && in_elem == 4 ? (size_t)rows * dim * 2 : 0;
    char *scr = _apb_cuda_scratch(_APB_CUDA_SCRATCH_MLP, 2 * gbytes + xbytes);
    if (!scr)
        return;
    void *g = scr, *u = scr + gbytes;
    if (es == 2 && in_elem == 4) { /* an fp32 xn: to bf16 once for the two GEMMs */
        apb_cuda_f32_to_bf16((uint16_t *)(scr + 2 * gbytes), dim, xn, ldxn, rows, dim, st);
        xn = scr + 2 * gbytes;
        ldxn = dim;
        in_elem = 2;
    }
    if (_apb_cuda_gate_up(g, u, es, xn, ldxn, in_elem, _APB_PTR(buffers[1]), _APB_PTR(buffers[2]), rows, dim, hidden))
        return;
    _apb_cuda_gemm(_APB_PTR(buffers[4]), _APB_LD(buffers[4]), 0, g, hidden, es, _APB_PTR(buffers[3]),
                   _apb_elem(buffers[3]), rows, hidden, dim, 1.0f);
    _apb_cuda_check("mlp");
    _apb_op_count(APB_OP_MLP, 6.0 * rows * dim * hidden);
}
#endif

static struct starpu_perfmodel _apb_mlp_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_mlp",
};

static struct starpu_codelet _apb_mlp_cl = {
    .cpu_funcs = {_apb_mlp_cpu},
    .cpu_funcs_name = {"_apb_mlp_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_mlp_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 5,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_R, STARPU_RW},
    .model = &_apb_mlp_model,
    .name = "mlp",
};

int apb_insert_mlp(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                   apb_handle x, apb_task_tag tag)
{
    int rows = apb_tile_rows(xn), dim = apb_tile_cols(xn), hidden = apb_tile_rows(w_gate);
    int ret = apb_task_insert(&_apb_mlp_cl, STARPU_R, xn, STARPU_R, w_gate, STARPU_R, w_up,
                                 STARPU_R, w_down, STARPU_RW, x,
                                 STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_FLOPS, 6.0 * rows * dim * hidden,
                                 STARPU_NAME, _apb_task_name("mlp", tag), 0);
    return _apb_insert_check(ret, "mlp");
}
