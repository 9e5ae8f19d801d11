/* SPDX-License-Identifier: MIT */
/** @brief Linear layer out (+)= in W^T (+ bias); with accumulate it is also the residual add. */
#include <cblas.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"

struct _apb_linear_args {
    int accumulate;
    int has_bias;
};

void apb_linear_f32(float *out, int ld_out, const float *in, int ld_in, const float *w,
                    const float *bias, int rows, int n_in, int n_out, int accumulate)
{
    if (bias) {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n_out; j++)
                out[(size_t)i * ld_out + j] = (accumulate ? out[(size_t)i * ld_out + j] : 0.0f) + bias[j];
        accumulate = 1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_out, n_in, 1.0f, in, ld_in, w,
                n_in, accumulate ? 1.0f : 0.0f, out, ld_out);
}

static void _apb_linear_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_linear_args *a = cl_arg;
    const float *in = _APB_PTR(buffers[0]);
    const float *w = _APB_PTR(buffers[1]);
    const float *bias = a->has_bias ? _APB_PTR(buffers[2]) : NULL;
    void *ob = buffers[a->has_bias ? 3 : 2];
    int rows = _APB_ROWS(buffers[0]), n_in = _APB_COLS(buffers[0]), n_out = _APB_COLS(ob);
    apb_linear_f32(_APB_PTR(ob), _APB_LD(ob), in, _APB_LD(buffers[0]), w, bias, rows, n_in, n_out,
                   a->accumulate);
    _apb_op_account(APB_OP_LINEAR, t0, 2.0 * rows * n_in * n_out);
}

static struct starpu_perfmodel _apb_linear_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_linear",
};

static struct starpu_codelet _apb_linear_cl = {
    .cpu_funcs = {_apb_linear_cpu},
    .cpu_funcs_name = {"_apb_linear_cpu"},
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_linear_model,
    .name = "linear",
};

int apb_insert_linear(apb_handle in, apb_handle w, apb_handle bias, apb_handle out, int accumulate,
                      apb_task_tag tag)
{
    struct _apb_linear_args a = {.accumulate = accumulate, .has_bias = bias != NULL};
    struct starpu_data_descr d[4];
    int n = 0;
    d[n++] = (struct starpu_data_descr){in, STARPU_R};
    d[n++] = (struct starpu_data_descr){w, STARPU_R};
    if (bias)
        d[n++] = (struct starpu_data_descr){bias, STARPU_R};
    d[n++] = (struct starpu_data_descr){out, accumulate ? STARPU_RW : STARPU_W};
    double flops = 2.0 * apb_tile_rows(in) * apb_tile_cols(in) * apb_tile_cols(out);
    return _apb_insert_check(
        apb_task_insert(&_apb_linear_cl, STARPU_DATA_MODE_ARRAY, d, n, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                           STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_FLOPS, flops,
                           STARPU_NAME, _apb_task_name("linear", tag), 0),
        "linear");
}
