/* SPDX-License-Identifier: MIT */
/** @brief Exact merge of partial attention outputs through their log-sum-exp (APB decode, ring). */
#include <math.h>
#include <stdlib.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_lse_merge_args {
    int n, head_dim, has_lse_out;
};

void apb_lse_merge_row(float *o, float *lse_out, const float *const *o_i, const float *const *lse_i,
                       int n, int n_heads, int head_dim)
{
    for (int h = 0; h < n_heads; h++) {
        float mx = -INFINITY;
        for (int i = 0; i < n; i++)
            mx = lse_i[i][h] > mx ? lse_i[i][h] : mx;
        float *oh = o + (size_t)h * head_dim;
        for (int c = 0; c < head_dim; c++)
            oh[c] = 0.0f;
        if (mx == -INFINITY) { /* no partial saw a key */
            if (lse_out)
                lse_out[h] = -INFINITY;
            continue;
        }
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += exp((double)lse_i[i][h] - mx);
        double L = mx + log(sum);
        for (int i = 0; i < n; i++) {
            float w = (float)exp((double)lse_i[i][h] - L);
            if (w == 0.0f)
                continue;
            const float *src = o_i[i] + (size_t)h * head_dim;
            for (int c = 0; c < head_dim; c++)
                oh[c] += w * src[c];
        }
        if (lse_out)
            lse_out[h] = (float)L;
    }
}

static void _apb_lse_merge_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_lse_merge_args *a = cl_arg;
    int n = a->n, rows = _APB_ROWS(buffers[0]), H = _APB_COLS(buffers[n]);
    const float *oi[64], *li[64];
    void *ob = buffers[2 * n], *lb = a->has_lse_out ? buffers[2 * n + 1] : NULL;
    const int o16 = _apb_elem(ob) == 2, W = H * a->head_dim; /* a bf16 output: each row rounded */
    float *row16 = o16 ? _apb_thread_scratch(_APB_SCRATCH_BF16_OUT, (size_t)W) : NULL;
    if (o16 && !row16) {
        _apb_task_fail(APB_E_NOMEM, "lse_merge: out of host memory");
        return;
    }
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < n; i++) {
            oi[i] = (const float *)_APB_PTR(buffers[i]) + (size_t)r * _APB_LD(buffers[i]);
            li[i] = (const float *)_APB_PTR(buffers[n + i]) + (size_t)r * _APB_LD(buffers[n + i]);
        }
        float *orow = o16 ? row16 : (float *)_APB_PTR(ob) + (size_t)r * _APB_LD(ob);
        apb_lse_merge_row(orow, lb ? (float *)_APB_PTR(lb) + (size_t)r * _APB_LD(lb) : NULL, oi, li, n, H,
                          a->head_dim);
        if (o16)
            apb_bf16_from_f32_n((uint16_t *)_APB_PTR(ob) + (size_t)r * _APB_LD(ob), row16, (size_t)W);
    }
    _apb_op_account(APB_OP_LSE_MERGE, t0, 2.0 * n * rows * H * a->head_dim);
}

#ifdef APB_CUDA
static void _apb_lse_merge_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_lse_merge_args *a = cl_arg;
    int n = a->n, rows = _APB_ROWS(buffers[0]), H = _APB_COLS(buffers[n]);
    void *ob = buffers[2 * n], *lb = a->has_lse_out ? buffers[2 * n + 1] : NULL;
    apb_cuda_lse_in in;
    for (int i = 0; i < n; i++) {
        in.o[i] = _APB_PTR(buffers[i]);
        in.ldo[i] = _APB_LD(buffers[i]);
        in.lse[i] = _APB_PTR(buffers[n + i]);
        in.ldl[i] = _APB_LD(buffers[n + i]);
    }
    apb_cuda_lse_merge(&in, n, rows, H, a->head_dim, _APB_PTR(ob), _APB_LD(ob), _apb_elem(ob) == 2,
                       lb ? (float *)_APB_PTR(lb) : NULL, lb ? _APB_LD(lb) : 0,
                       starpu_cuda_get_local_stream());
    _apb_cuda_check("lse_merge");
    _apb_op_count(APB_OP_LSE_MERGE, 2.0 * n * rows * H * a->head_dim);
}
#endif
/* Cost follows rows x partial results x columns. */
static size_t _apb_lse_merge_size_base(struct starpu_task *task, unsigned nimpl)
{
    (void)nimpl;
    const struct _apb_lse_merge_args *a = task->cl_arg;
    starpu_data_handle_t o0 = STARPU_TASK_GET_HANDLE(task, 0);
    return starpu_matrix_get_ny(o0) * starpu_matrix_get_nx(o0) * (size_t)a->n;
}

static struct starpu_perfmodel _apb_lse_merge_model = {
    .type = STARPU_NL_REGRESSION_BASED, /* a n^b + c; history when the size was seen */
    .symbol = "apb_lse_merge",
    .size_base = _apb_lse_merge_size_base,
};

static struct starpu_codelet _apb_lse_merge_cl = {
    .cpu_funcs = {_apb_lse_merge_cpu},
    .cpu_funcs_name = {"_apb_lse_merge_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_lse_merge_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_lse_merge_model,
    .name = "lse_merge",
};

int apb_insert_lse_merge(const apb_handle *o, const apb_handle *lse, int n, int head_dim,
                         apb_handle o_out, apb_handle lse_out, apb_task_tag tag)
{
    if (n <= 0 || n > 64)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (apb_tile_rows(o[i]) != apb_tile_rows(o_out) || apb_tile_cols(o[i]) != apb_tile_cols(o_out) ||
            apb_tile_cols(lse[i]) * head_dim != apb_tile_cols(o_out))
            return -EINVAL;
    struct _apb_lse_merge_args a = {.n = n, .head_dim = head_dim, .has_lse_out = lse_out != NULL};
    struct starpu_data_descr d[130];
    int nd = 0;
    for (int i = 0; i < n; i++)
        d[nd++] = (struct starpu_data_descr){o[i], STARPU_R};
    for (int i = 0; i < n; i++)
        d[nd++] = (struct starpu_data_descr){lse[i], STARPU_R};
    d[nd++] = (struct starpu_data_descr){o_out, STARPU_W};
    if (lse_out)
        d[nd++] = (struct starpu_data_descr){lse_out, STARPU_W};
    return _apb_insert_check(
        apb_task_insert(&_apb_lse_merge_cl, STARPU_DATA_MODE_ARRAY, d, nd,
                           STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                           STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_NAME, _apb_task_name("lse_merge", tag), 0),
        "lse_merge");
}
