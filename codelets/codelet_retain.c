/* SPDX-License-Identifier: MIT */
/**
 * @brief Locret retaining heads (APB's compressor): a small MLP scores every token per KV head,
 * scores = fc2(silu(fc1(cat(q, k, v)))), applied to the projections BEFORE RoPE.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

static void _apb_retain_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    double t0 = _apb_now_ns();
    int rows = _APB_ROWS(buffers[0]);
    int cq = _APB_COLS(buffers[0]), ck = _APB_COLS(buffers[1]), cv = _APB_COLS(buffers[2]);
    int in = cq + ck + cv, hidden = _APB_ROWS(buffers[3]), hk = _APB_ROWS(buffers[4]);
    const float *fc1 = _APB_PTR(buffers[3]), *fc2 = _APB_PTR(buffers[4]);
    void *sb = buffers[5];
    float *x = malloc(sizeof(float) * (size_t)rows * (in + hidden));
    if (!x) {
        for (int i = 0; i < rows; i++)
            for (int g = 0; g < hk; g++)
                ((float *)_APB_PTR(sb))[(size_t)i * _APB_LD(sb) + g] = NAN;
        return;
    }
    float *h = x + (size_t)rows * in;
    for (int i = 0; i < rows; i++) { /* cat(q, k, v) row by row */
        float *xr = x + (size_t)i * in;
        memcpy(xr, (const float *)_APB_PTR(buffers[0]) + (size_t)i * _APB_LD(buffers[0]), sizeof(float) * cq);
        memcpy(xr + cq, (const float *)_APB_PTR(buffers[1]) + (size_t)i * _APB_LD(buffers[1]), sizeof(float) * ck);
        memcpy(xr + cq + ck, (const float *)_APB_PTR(buffers[2]) + (size_t)i * _APB_LD(buffers[2]), sizeof(float) * cv);
    }
    apb_linear_f32(h, hidden, x, in, fc1, NULL, rows, in, hidden, 0);
    for (size_t i = 0; i < (size_t)rows * hidden; i++)
        h[i] = h[i] / (1.0f + expf(-h[i]));
    apb_linear_f32(_APB_PTR(sb), _APB_LD(sb), h, hidden, fc2, NULL, rows, hidden, hk, 0);
    free(x);
    _apb_op_account(APB_OP_RETAIN, t0, 2.0 * rows * hidden * (in + hk));
}

#ifdef APB_CUDA
static void _apb_retain_cuda(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    int rows = _APB_ROWS(buffers[0]);
    int cq = _APB_COLS(buffers[0]), ck = _APB_COLS(buffers[1]), cv = _APB_COLS(buffers[2]);
    int in = cq + ck + cv, hidden = _APB_ROWS(buffers[3]), hk = _APB_ROWS(buffers[4]);
    void *sb = buffers[5];
    cudaStream_t s = starpu_cuda_get_local_stream();
    float *x = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, sizeof(float) * (size_t)rows * (in + hidden));
    if (x) {
        float *h = x + (size_t)rows * in;
        apb_cuda_concat3(x, _APB_PTR(buffers[0]), _APB_LD(buffers[0]), cq, _APB_PTR(buffers[1]),
                         _APB_LD(buffers[1]), ck, _APB_PTR(buffers[2]), _APB_LD(buffers[2]), cv, rows, s);
        if (_apb_cuda_gemm(h, hidden, 0, x, in, 4, _APB_PTR(buffers[3]), _apb_elem(buffers[3]), rows,
                           in, hidden, 0.0f) == 0) {
            apb_cuda_silu(h, (size_t)rows * hidden, s);
            _apb_cuda_gemm(_APB_PTR(sb), _APB_LD(sb), 0, h, hidden, 4, _APB_PTR(buffers[4]),
                           _apb_elem(buffers[4]), rows, hidden, hk, 0.0f);
        }
    }
    _apb_cuda_check("retain");
    _apb_op_count(APB_OP_RETAIN, 2.0 * rows * hidden * (in + hk));
}
#endif

static struct starpu_perfmodel _apb_retain_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_retain",
};

static struct starpu_codelet _apb_retain_cl = {
    .cpu_funcs = {_apb_retain_cpu},
    .cpu_funcs_name = {"_apb_retain_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_retain_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 6,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_retain_model,
    .name = "retain",
};

int apb_insert_retain_score(apb_handle q, apb_handle k, apb_handle v, apb_handle fc1, apb_handle fc2,
                            apb_handle scores, apb_task_tag tag)
{
    int rows = apb_tile_rows(q), in = apb_tile_cols(q) + apb_tile_cols(k) + apb_tile_cols(v);
    if (apb_tile_rows(k) != rows || apb_tile_rows(v) != rows || apb_tile_cols(fc1) != in ||
        apb_tile_cols(fc2) != apb_tile_rows(fc1) || apb_tile_rows(scores) != rows ||
        apb_tile_cols(scores) != apb_tile_rows(fc2))
        return -EINVAL;
    double flops = 2.0 * rows * apb_tile_rows(fc1) * (in + apb_tile_rows(fc2));
    return _apb_insert_check(
        apb_task_insert(&_apb_retain_cl, STARPU_R, q, STARPU_R, k, STARPU_R, v, STARPU_R, fc1,
                           STARPU_R, fc2, STARPU_W, scores, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                           STARPU_FLOPS, flops, STARPU_NAME, _apb_task_name("retain", tag), 0),
        "retain");
}
