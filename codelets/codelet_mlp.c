/* SPDX-License-Identifier: MIT */
/** @brief SwiGLU MLP with residual: x += down(silu(gate(xn)) * up(xn)). */
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"

static void _apb_mlp_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    double t0 = _apb_now_ns();
    const float *xn = _APB_PTR(buffers[0]);
    int rows = _APB_ROWS(buffers[0]), dim = _APB_COLS(buffers[0]), ldxn = _APB_LD(buffers[0]);
    const float *wg = _APB_PTR(buffers[1]), *wu = _APB_PTR(buffers[2]), *wd = _APB_PTR(buffers[3]);
    int hidden = _APB_ROWS(buffers[1]);
    float *x = _APB_PTR(buffers[4]);
    float *g = _apb_thread_scratch(_APB_SCRATCH_MLP, (size_t)rows * 2 * hidden);
    if (!g) { /* a codelet cannot return an error: poison x so it shows downstream */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < dim; j++)
                ((float *)_APB_PTR(buffers[4]))[(size_t)i * _APB_LD(buffers[4]) + j] = NAN;
        return;
    }
    float *u = g + (size_t)rows * hidden;
    apb_linear_f32(g, hidden, xn, ldxn, wg, NULL, rows, dim, hidden, 0);
    apb_linear_f32(u, hidden, xn, ldxn, wu, NULL, rows, dim, hidden, 0);
    for (size_t i = 0; i < (size_t)rows * hidden; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    apb_linear_f32(x, _APB_LD(buffers[4]), g, hidden, wd, NULL, rows, hidden, dim, 1);
    _apb_op_account(APB_OP_MLP, t0, 6.0 * rows * dim * hidden);
}

static struct starpu_perfmodel _apb_mlp_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_mlp",
};

static struct starpu_codelet _apb_mlp_cl = {
    .cpu_funcs = {_apb_mlp_cpu},
    .cpu_funcs_name = {"_apb_mlp_cpu"},
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
