/* SPDX-License-Identifier: MIT */
/** @brief Mean question query per KV head (query-aware selection vector, Spava). */
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

enum { _APB_QMEAN_MAX_TILES = 16 };

struct _apb_qmean_args {
    int n_tiles, n_kv_heads, head_dim;
    int row0[_APB_QMEAN_MAX_TILES], n[_APB_QMEAN_MAX_TILES];
};

static void _apb_qmean_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_qmean_args *a = cl_arg;
    int H = _APB_COLS(buffers[0]) / a->head_dim, d = a->head_dim, G = H / a->n_kv_heads;
    float *qbar = _APB_PTR(buffers[a->n_tiles]);
    long rows = 0;
    for (int t = 0; t < a->n_tiles; t++)
        rows += a->n[t];
    for (int g = 0; g < a->n_kv_heads; g++)
        for (int c = 0; c < d; c++) {
            double s = 0;
            for (int t = 0; t < a->n_tiles; t++) {
                const float *q = _APB_PTR(buffers[t]);
                int ldq = _APB_LD(buffers[t]);
                for (int i = a->row0[t]; i < a->row0[t] + a->n[t]; i++)
                    for (int h = g * G; h < (g + 1) * G; h++)
                        s += q[(size_t)i * ldq + (size_t)h * d + c];
            }
            qbar[g * d + c] = (float)(s / ((double)rows * G));
        }
    _apb_op_account(APB_OP_QMEAN, t0, (double)rows * H * d);
}

#ifdef APB_CUDA
static void _apb_qmean_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_qmean_args *a = cl_arg;
    int H = _APB_COLS(buffers[0]) / a->head_dim;
    apb_cuda_qmean_tiles t = {.n_tiles = a->n_tiles};
    long rows = 0;
    for (int i = 0; i < a->n_tiles; i++) {
        t.q[i] = _APB_PTR(buffers[i]);
        t.ld[i] = _APB_LD(buffers[i]);
        t.row0[i] = a->row0[i];
        t.n[i] = a->n[i];
        rows += a->n[i];
    }
    apb_cuda_qmean(&t, H, a->n_kv_heads, a->head_dim, _APB_PTR(buffers[a->n_tiles]),
                   starpu_cuda_get_local_stream());
    _apb_cuda_check("qmean");
    _apb_op_count(APB_OP_QMEAN, (double)rows * H * a->head_dim);
}
#endif
/* Cost follows the number of question rows averaged. */
static size_t _apb_qmean_size_base(struct starpu_task *task, unsigned nimpl)
{
    (void)nimpl;
    const struct _apb_qmean_args *a = task->cl_arg;
    size_t rows = 0;
    for (int t = 0; t < a->n_tiles; t++)
        rows += (size_t)a->n[t];
    return rows * starpu_matrix_get_nx(STARPU_TASK_GET_HANDLE(task, 0));
}

static struct starpu_perfmodel _apb_qmean_model = {
    .type = STARPU_NL_REGRESSION_BASED, /* a n^b + c; history when the size was seen */
    .symbol = "apb_qmean",
    .size_base = _apb_qmean_size_base,
};

static struct starpu_codelet _apb_qmean_cl = {
    .cpu_funcs = {_apb_qmean_cpu},
    .cpu_funcs_name = {"_apb_qmean_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_qmean_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_qmean_model,
    .name = "qmean",
};

int apb_insert_qmean_tiles(const apb_handle *q, const int *row0, const int *n, int n_tiles,
                           int n_kv_heads, int head_dim, apb_handle qbar, apb_task_tag tag)
{
    if (n_tiles <= 0 || n_tiles > _APB_QMEAN_MAX_TILES || n_kv_heads <= 0 || head_dim <= 0 ||
        apb_tile_cols(qbar) != n_kv_heads * head_dim)
        return -EINVAL;
    struct _apb_qmean_args a = {.n_tiles = n_tiles, .n_kv_heads = n_kv_heads, .head_dim = head_dim};
    struct starpu_data_descr d[_APB_QMEAN_MAX_TILES + 1];
    for (int t = 0; t < n_tiles; t++) {
        if (row0[t] < 0 || n[t] <= 0 || row0[t] + n[t] > apb_tile_rows(q[t]) ||
            apb_tile_cols(q[t]) != apb_tile_cols(q[0]) || apb_tile_cols(q[t]) % (n_kv_heads * head_dim))
            return -EINVAL;
        a.row0[t] = row0[t];
        a.n[t] = n[t];
        d[t] = (struct starpu_data_descr){q[t], STARPU_R};
    }
    d[n_tiles] = (struct starpu_data_descr){qbar, STARPU_W};
    return _apb_insert_check(
        apb_task_insert(&_apb_qmean_cl, STARPU_DATA_MODE_ARRAY, d, n_tiles + 1,
                           STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                           STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_NAME, _apb_task_name("qmean", tag), 0),
        "qmean");
}

int apb_insert_qmean(apb_handle q, int row0, int n, int n_kv_heads, int head_dim, apb_handle qbar,
                     apb_task_tag tag)
{
    return apb_insert_qmean_tiles(&q, &row0, &n, 1, n_kv_heads, head_dim, qbar, tag);
}
