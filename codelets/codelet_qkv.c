/* SPDX-License-Identifier: MIT */
/** @brief QKV projection: q = xn Wq^T (+bq), k = xn Wk^T (+bk), v = xn Wv^T (+bv), before RoPE. */
#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_qkv_args {
    int has_bias;
};

static void _apb_qkv_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_qkv_args *a = cl_arg;
    int rows = _APB_ROWS(buffers[0]), dim = _APB_COLS(buffers[0]), ldx;
    const float *xn = _apb_act_f32(buffers[0], &ldx); /* a bf16 xn tile: widened */
    int nb = a->has_bias ? 3 : 0;
    double flops = 0;
    if (!xn) {
        _apb_task_fail(APB_E_NOMEM, "qkv: out of host memory");
        return;
    }
    for (int m = 0; m < 3; m++) { /* q, k, v */
        void *ob = buffers[4 + nb + m];
        const float *bias = a->has_bias ? _APB_PTR(buffers[4 + m]) : NULL;
        int n_out = _APB_COLS(ob);
        if (_apb_linear_w(_APB_PTR(ob), _APB_LD(ob), xn, ldx, buffers[1 + m], bias, rows, 0))
            _apb_task_fail(APB_E_NOMEM, "qkv: out of host memory");
        flops += 2.0 * rows * dim * n_out;
    }
    _apb_op_account(APB_OP_QKV, t0, flops);
}

#ifdef APB_CUDA
static void _apb_qkv_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_qkv_args *a = cl_arg;
    cudaStream_t st = starpu_cuda_get_local_stream();
    const void *xn = _APB_PTR(buffers[0]);
    int rows = _APB_ROWS(buffers[0]), dim = _APB_COLS(buffers[0]), ldx = _APB_LD(buffers[0]);
    int nb = a->has_bias ? 3 : 0, in_elem = _apb_elem(buffers[0]);
    double flops = 0;
    if (_apb_elem(buffers[1]) == 2 && in_elem == 4) { /* convert xn to bf16 once for the three GEMMs */
        uint16_t *x16 = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, (size_t)rows * dim * 2);
        if (!x16)
            return;
        apb_cuda_f32_to_bf16(x16, dim, xn, ldx, rows, dim, st);
        xn = x16;
        ldx = dim;
        in_elem = 2;
    }
    void *outs[3];
    const void *ws[3];
    int lds[3], n_outs[3], w_elems[3];
    for (int m = 0; m < 3; m++) {
        void *ob = buffers[4 + nb + m];
        outs[m] = _APB_PTR(ob), lds[m] = _APB_LD(ob), n_outs[m] = _APB_COLS(ob);
        ws[m] = _APB_PTR(buffers[1 + m]), w_elems[m] = _apb_elem(buffers[1 + m]);
        flops += 2.0 * rows * dim * n_outs[m];
    }
    if (_apb_cuda_gemm3(outs, lds, xn, ldx, in_elem, ws, w_elems, rows, dim, n_outs))
        return;
    if (a->has_bias)
        for (int m = 0; m < 3; m++)
            apb_cuda_add_bias(outs[m], lds[m], _APB_PTR(buffers[4 + m]), rows, n_outs[m], st);
    _apb_cuda_check("qkv");
    _apb_op_count(APB_OP_QKV, flops);
}
#endif

static struct starpu_perfmodel _apb_qkv_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_qkv",
};

static struct starpu_codelet _apb_qkv_cl = {
    .cpu_funcs = {_apb_qkv_cpu},
    .cpu_funcs_name = {"_apb_qkv_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_qkv_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_qkv_model,
    .name = "qkv",
};

int apb_insert_qkv(apb_handle xn, apb_handle wq, apb_handle wk, apb_handle wv, apb_handle bq,
                   apb_handle bk, apb_handle bv, apb_handle q, apb_handle k, apb_handle v,
                   apb_task_tag tag)
{
    struct _apb_qkv_args a = {.has_bias = bq != NULL};
    struct starpu_data_descr d[10];
    int n = 0;
    d[n++] = (struct starpu_data_descr){xn, STARPU_R};
    d[n++] = (struct starpu_data_descr){wq, STARPU_R};
    d[n++] = (struct starpu_data_descr){wk, STARPU_R};
    d[n++] = (struct starpu_data_descr){wv, STARPU_R};
    if (a.has_bias) {
        d[n++] = (struct starpu_data_descr){bq, STARPU_R};
        d[n++] = (struct starpu_data_descr){bk, STARPU_R};
        d[n++] = (struct starpu_data_descr){bv, STARPU_R};
    }
    d[n++] = (struct starpu_data_descr){q, STARPU_W};
    d[n++] = (struct starpu_data_descr){k, STARPU_W};
    d[n++] = (struct starpu_data_descr){v, STARPU_W};
    double flops = 2.0 * apb_tile_rows(xn) * apb_tile_cols(xn) *
                   (apb_tile_cols(q) + apb_tile_cols(k) + apb_tile_cols(v));
    return _apb_insert_check(
        apb_task_insert(&_apb_qkv_cl, STARPU_DATA_MODE_ARRAY, d, n, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                           STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_FLOPS, flops,
                           STARPU_NAME, _apb_task_name("qkv", tag), 0),
        "qkv");
}
