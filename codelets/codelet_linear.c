/* SPDX-License-Identifier: MIT */
/** @brief Linear layer out (+)= in W^T (+ bias); with accumulate it is also the residual add. */
#include <string.h>

#include <cblas.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"
#include "common/apb_env.h"
#ifdef APB_CUDA
#include <cublas_v2.h>
#include <starpu_cublas_v2.h>

#include "codelets/cuda/apb_cuda.h"
#endif

const float *_apb_weight_rows_f32(void *buf, int r0, int n, float *dst)
{
    int ld = _APB_LD(buf), cols = _APB_COLS(buf);
    if (_apb_elem(buf) == 4)
        return (const float *)_APB_PTR(buf) + (size_t)r0 * ld;
    const uint16_t *src = (const uint16_t *)_APB_PTR(buf) + (size_t)r0 * ld;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cols; j++)
            dst[(size_t)i * cols + j] = apb_bf16_to_f32(src[(size_t)i * ld + j]);
    return dst;
}

const float *_apb_act_f32(void *buf, int *ld)
{
    *ld = _APB_LD(buf);
    if (_apb_elem(buf) == 4)
        return _APB_PTR(buf);
    int rows = _APB_ROWS(buf), cols = _APB_COLS(buf);
    float *w = _apb_thread_scratch(_APB_SCRATCH_LINEAR_IN, (size_t)rows * cols);
    if (!w)
        return NULL;
    for (int i = 0; i < rows; i++)
        apb_bf16_to_f32_n(w + (size_t)i * cols, (const uint16_t *)_APB_PTR(buf) + (size_t)i * *ld, (size_t)cols);
    *ld = cols;
    return w;
}

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

int _apb_linear_w(float *out, int ld_out, const float *in, int ld_in, void *wbuf, const float *bias,
                  int rows, int accumulate)
{
    int n_out = _APB_ROWS(wbuf), n_in = _APB_COLS(wbuf);
    if (rows == 1) { /* decode: one streaming pass over the weights, fp32 or bf16 (gemv_cpu.c) */
        apb_gemv(out, in, _APB_PTR(wbuf), _apb_elem(wbuf) == 2, (size_t)_APB_LD(wbuf), bias, n_in,
                 n_out, accumulate);
        return 0;
    }
    if (_apb_elem(wbuf) == 4 && _APB_LD(wbuf) == n_in) {
        apb_linear_f32(out, ld_out, in, ld_in, _APB_PTR(wbuf), bias, rows, n_in, n_out, accumulate);
        return 0;
    }
    if (_apb_elem(wbuf) == 2 && apb_dnnl_enabled()) { /* bf16 weights, several rows: oneDNN (gemm_dnnl.c) */
        if (bias) { /* as apb_linear_f32: the bias first, then the product accumulates onto it */
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < n_out; j++)
                    out[(size_t)i * ld_out + j] = (accumulate ? out[(size_t)i * ld_out + j] : 0.0f) + bias[j];
            accumulate = 1;
            bias = NULL;
        }
        if (apb_dnnl_linear_bf16(out, ld_out, in, ld_in, _APB_PTR(wbuf), (size_t)_APB_LD(wbuf), rows, n_in,
                                 n_out, accumulate) == 0)
            return 0;
        /* refused: the SGEMM path below, the bias already in out */
    }
    enum { BLK = 256 }; /* weight rows widened at a time: 256 x n_in floats stay in cache */
    float *wf = _apb_thread_scratch(_APB_SCRATCH_WEIGHT, (size_t)BLK * n_in);
    if (!wf)
        return -1;
    for (int o0 = 0; o0 < n_out; o0 += BLK) {
        int nb = n_out - o0 < BLK ? n_out - o0 : BLK;
        const float *w = _apb_weight_rows_f32(wbuf, o0, nb, wf);
        if (w != wf) { /* fp32 with a row stride: copy to dense */
            for (int i = 0; i < nb; i++)
                memcpy(wf + (size_t)i * n_in, w + (size_t)i * _APB_LD(wbuf), sizeof(float) * n_in);
        }
        apb_linear_f32(out + o0, ld_out, in, ld_in, wf, bias ? bias + o0 : NULL, rows, n_in, nb, accumulate);
    }
    return 0;
}

static void _apb_linear_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_linear_args *a = cl_arg;
    const float *bias = a->has_bias ? _APB_PTR(buffers[2]) : NULL;
    void *ob = buffers[a->has_bias ? 3 : 2];
    int rows = _APB_ROWS(buffers[0]), n_in = _APB_COLS(buffers[0]), n_out = _APB_COLS(ob), ld_in;
    const float *in = _apb_act_f32(buffers[0], &ld_in); /* a bf16 input (the o tiles): widened */
    if (!in || _apb_linear_w(_APB_PTR(ob), _APB_LD(ob), in, ld_in, buffers[1], bias, rows, a->accumulate))
        _apb_task_fail(APB_E_NOMEM, "linear: out of host memory");
    _apb_op_account(APB_OP_LINEAR, t0, 2.0 * rows * n_in * n_out);
}

#ifdef APB_CUDA
static void _apb_linear_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_linear_args *a = cl_arg;
    void *ib = buffers[0], *wb = buffers[1], *ob = buffers[a->has_bias ? 3 : 2];
    int rows = _APB_ROWS(ib), n_in = _APB_COLS(ib), n_out = _APB_COLS(ob);
    if (_apb_cuda_gemm(_APB_PTR(ob), _APB_LD(ob), 0, _APB_PTR(ib), _APB_LD(ib), _apb_elem(ib), _APB_PTR(wb),
                       _apb_elem(wb), rows, n_in, n_out, a->accumulate ? 1.0f : 0.0f) == 0 &&
        a->has_bias)
        apb_cuda_add_bias(_APB_PTR(ob), _APB_LD(ob), _APB_PTR(buffers[2]), rows, n_out,
                          starpu_cuda_get_local_stream());
    _apb_cuda_check("linear");
    _apb_op_count(APB_OP_LINEAR, 2.0 * rows * n_in * n_out);
}
#endif

static struct starpu_perfmodel _apb_linear_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_linear",
};

static struct starpu_codelet _apb_linear_cl = {
    .cpu_funcs = {_apb_linear_cpu},
    .cpu_funcs_name = {"_apb_linear_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_linear_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
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

#ifdef APB_CUDA
/* The GEMM of every projection (qkv, linear, mlp, logits) on a GPU. */
/* APB_GEMV=0 sends few-row products to cuBLAS too (for comparisons). */
static int _apb_gemv_enabled(void)
{
    static int on = -1;
    return apb_env_switch("APB_GEMV", 1, &on);
}

int _apb_cuda_gemm(void *out, int ld_out, int out_bf16, const void *in, int ld_in, int in_elem,
                   const void *w, int w_elem, int rows, int n_in, int n_out, float beta)
{
    cudaStream_t s = starpu_cuda_get_local_stream();
    cublasHandle_t h = starpu_cublas_get_local_handle();
    const float alpha = 1.0f;
    cudaDataType_t tw = w_elem == 2 ? CUDA_R_16BF : CUDA_R_32F;
    if (w_elem == 2 && rows <= APB_CUDA_GEMV_MAX_ROWS && _apb_gemv_enabled()) {
        /* few rows (decode): our bandwidth-bound kernel, activations read as they are */
        int rc = apb_cuda_gemv_bf16(out, ld_out, out_bf16, in, ld_in, in_elem, w, rows, n_in, n_out, beta, s);
        if (rc < 0) {
            _apb_task_fail(APB_E_RUNTIME, "gemv (%d x %d x %d) failed", rows, n_out, n_in);
            return -1;
        }
        if (rc == 0)
            return 0;
    }
    if (w_elem == 2 && in_elem == 4) { /* bf16 weights: the activation tile goes bf16 too */
        uint16_t *in16 = _apb_cuda_scratch(_APB_CUDA_SCRATCH_GEMM_IN, (size_t)rows * n_in * 2);
        if (!in16)
            return -1;
        apb_cuda_f32_to_bf16(in16, n_in, in, ld_in, rows, n_in, s);
        in = in16;
        ld_in = n_in;
    } else if (w_elem != in_elem) {
        _apb_task_fail(APB_E_RUNTIME, "gemm: fp32 weights with a bf16 activation are not supported");
        return -1;
    }
    /* Row-major out (rows x n_out) = in W^T is column-major out^T = W^T(op T) in^T. */
    cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n_out, rows, n_in, &alpha, w, tw,
                                     n_in, in, tw, ld_in, &beta, out,
                                     out_bf16 ? CUDA_R_16BF : CUDA_R_32F, ld_out,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
        _apb_task_fail(APB_E_RUNTIME, "cublasGemmEx (%d x %d x %d) failed: %s", rows, n_out, n_in,
                       cublasGetStatusString(st));
        return -1;
    }
    return 0;
}

/* outs[m] (rows x n_out[m], fp32) = in W_m^T for the three projections of one input (q, k, v):
 * one few-row GEMV launch over the three bf16 weights when it applies, else three GEMMs. */
int _apb_cuda_gemm3(void *const outs[3], const int ld_outs[3], const void *in, int ld_in, int in_elem,
                    const void *const ws[3], const int w_elems[3], int rows, int n_in, const int n_outs[3])
{
    if (w_elems[0] == 2 && w_elems[1] == 2 && w_elems[2] == 2 && rows <= APB_CUDA_GEMV_MAX_ROWS &&
        _apb_gemv_enabled()) {
        apb_gemv_parts P = {.np = 3, .out_bf16 = 0, .beta = 0.0f};
        for (int m = 0; m < 3; m++) {
            P.out[m] = outs[m];
            P.ld_out[m] = ld_outs[m];
            P.w[m] = ws[m];
            P.n[m] = n_outs[m];
        }
        int rc = apb_cuda_gemv_parts(&P, in, ld_in, in_elem, rows, n_in, starpu_cuda_get_local_stream());
        if (rc < 0) {
            _apb_task_fail(APB_E_RUNTIME, "gemv (%d rows, q/k/v) failed", rows);
            return -1;
        }
        if (rc == 0)
            return 0;
    }
    for (int m = 0; m < 3; m++)
        if (_apb_cuda_gemm(outs[m], ld_outs[m], 0, in, ld_in, in_elem, ws[m], w_elems[m], rows, n_in, n_outs[m], 0.0f))
            return -1;
    return 0;
}

/* h (rows x hidden, es bytes) = silu(in W_gate^T) * (in W_up^T), u scratch of the same size:
 * one fused few-row launch when it applies, else two GEMMs and the swiglu kernel (same bits). */
int _apb_cuda_gate_up(void *h, void *u, int es, const void *in, int ld_in, int in_elem, const void *wg,
                      const void *wu, int rows, int dim, int hidden)
{
    cudaStream_t st = starpu_cuda_get_local_stream();
    if (es == 2 && rows <= APB_CUDA_GEMV_MAX_ROWS && _apb_gemv_enabled()) {
        int rc = apb_cuda_gemv_swiglu(h, hidden, 1, in, ld_in, in_elem, wg, wu, rows, dim, hidden, st);
        if (rc < 0) {
            _apb_task_fail(APB_E_RUNTIME, "gemv (%d rows, gate/up) failed", rows);
            return -1;
        }
        if (rc == 0)
            return 0;
    }
    if (_apb_cuda_gemm(h, hidden, es == 2, in, ld_in, in_elem, wg, es, rows, dim, hidden, 0.0f) ||
        _apb_cuda_gemm(u, hidden, es == 2, in, ld_in, in_elem, wu, es, rows, dim, hidden, 0.0f))
        return -1;
    apb_cuda_swiglu(h, h, u, (size_t)rows * hidden, es, st);
    return 0;
}
#endif
