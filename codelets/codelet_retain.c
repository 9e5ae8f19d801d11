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

static struct starpu_perfmodel _apb_retain_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_retain",
};

static struct starpu_codelet _apb_retain_cl = {
    .cpu_funcs = {_apb_retain_cpu},
    .cpu_funcs_name = {"_apb_retain_cpu"},
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
