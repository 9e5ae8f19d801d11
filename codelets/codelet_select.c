/* SPDX-License-Identifier: MIT */
/**
 * @brief APB compression by query-aware selection: score, max-pool, top-k per KV head, gather.
 *
 * The output block (select x Hk*d, for K and for V) holds, in the columns of KV head g, the
 * post-RoPE K/V rows chosen for head g; each head chooses its own rows. Positions are not
 * re-rotated: the rows keep the rotation of their original positions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_select_args {
    int n_tiles, exclude_first, select, head_dim;
    int scored; /* 0: buffers [qbar, K.., V.., ck, cv]; 1: [scores.., K.., V.., ck, cv] */
};


static int _apb_cmp_score_desc(const void *a, const void *b, void *ctx)
{
    const float *s = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (s[i] != s[j])
        return s[i] < s[j] ? 1 : -1;
    return i - j;
}

static int _apb_cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

void apb_select_topk(const float *scores, int n, int exclude_first, int select, int *idx,
                     float *pooled, int *order)
{
    for (int j = 0; j < n; j++) {
        float m = -INFINITY;
        for (int t = j - 2; t <= j + 2; t++)
            if (t >= 0 && t < n && scores[t] > m)
                m = scores[t];
        pooled[j] = j < exclude_first ? -INFINITY : m;
    }
    for (int j = 0; j < n; j++)
        order[j] = j;
    qsort_r(order, (size_t)n, sizeof *order, _apb_cmp_score_desc, pooled);
    memcpy(idx, order, sizeof(int) * (size_t)select);
    qsort(idx, (size_t)select, sizeof *idx, _apb_cmp_int);
}

static void _apb_select_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_select_args *a = cl_arg;
    int nt = a->n_tiles, d = a->head_dim, ko = a->scored ? nt : 1; /* first K buffer */
    const float *qbar = a->scored ? NULL : _APB_PTR(buffers[0]);
    int Hk = _APB_COLS(buffers[ko]) / d;
    int n = 0;
    for (int t = 0; t < nt; t++)
        n += _APB_ROWS(buffers[ko + t]);
    float *scores = malloc(sizeof(float) * 2 * (size_t)n);
    int *order = malloc(sizeof(int) * (size_t)n), *idx = malloc(sizeof(int) * (size_t)a->select);
    int *tile_of = malloc(sizeof(int) * (size_t)n), *row_of = malloc(sizeof(int) * (size_t)n);
    void *ckb = buffers[ko + 2 * nt], *cvb = buffers[ko + 2 * nt + 1];
    float *ck = _APB_PTR(ckb), *cv = _APB_PTR(cvb);
    if (!scores || !order || !idx || !tile_of || !row_of) {
        for (int i = 0; i < a->select * Hk * d; i++)
            ck[i] = cv[i] = NAN; /* visible downstream: a codelet cannot return an error */
        goto out;
    }
    for (int t = 0, j = 0; t < nt; t++)
        for (int r = 0; r < _APB_ROWS(buffers[ko + t]); r++, j++) {
            tile_of[j] = t;
            row_of[j] = r;
        }
    for (int g = 0; g < Hk; g++) {
        for (int j = 0; j < n; j++) {
            if (a->scored) { /* retaining-head scores, (rows x Hk) per tile */
                void *sb = buffers[tile_of[j]];
                scores[j] = ((const float *)_APB_PTR(sb))[(size_t)row_of[j] * _APB_LD(sb) + g];
                continue;
            }
            void *kb = buffers[ko + tile_of[j]];
            const float *kr = (const float *)_APB_PTR(kb) + (size_t)row_of[j] * _APB_LD(kb) + (size_t)g * d;
            float s = 0;
            for (int c = 0; c < d; c++)
                s += kr[c] * qbar[g * d + c];
            scores[j] = s;
        }
        apb_select_topk(scores, n, a->exclude_first, a->select, idx, scores + n, order);
        for (int i = 0; i < a->select; i++) {
            int j = idx[i];
            void *kb = buffers[ko + tile_of[j]], *vb = buffers[ko + nt + tile_of[j]];
            memcpy(ck + (size_t)i * _APB_LD(ckb) + (size_t)g * d,
                   (const float *)_APB_PTR(kb) + (size_t)row_of[j] * _APB_LD(kb) + (size_t)g * d,
                   sizeof(float) * d);
            memcpy(cv + (size_t)i * _APB_LD(cvb) + (size_t)g * d,
                   (const float *)_APB_PTR(vb) + (size_t)row_of[j] * _APB_LD(vb) + (size_t)g * d,
                   sizeof(float) * d);
        }
    }
out:
    free(scores);
    free(order);
    free(idx);
    free(tile_of);
    free(row_of);
    _apb_op_account(APB_OP_SELECT, t0, 2.0 * n * Hk * d);
}

#ifdef APB_CUDA
static void _apb_select_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_select_args *a = cl_arg;
    int nt = a->n_tiles, d = a->head_dim, ko = a->scored ? nt : 1;
    int Hk = _APB_COLS(buffers[ko]) / d, n = 0;
    void *ckb = buffers[ko + 2 * nt], *cvb = buffers[ko + 2 * nt + 1];
    apb_cuda_sel_tile *t = malloc(sizeof *t * (size_t)nt);
    if (!t) {
        _apb_task_fail(APB_E_NOMEM, "select: out of host memory");
        return;
    }
    for (int i = 0; i < nt; i++) {
        void *kb = buffers[ko + i], *vb = buffers[ko + nt + i], *sb = a->scored ? buffers[i] : NULL;
        t[i] = (apb_cuda_sel_tile){.k = _APB_PTR(kb), .v = _APB_PTR(vb),
                                   .s = sb ? (const float *)_APB_PTR(sb) : NULL, .ldk = _APB_LD(kb),
                                   .ldv = _APB_LD(vb), .lds = sb ? _APB_LD(sb) : 0, .row0 = n,
                                   .rows = _APB_ROWS(kb)};
        n += _APB_ROWS(kb);
    }
    void *scr = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, apb_cuda_select_scratch(nt, n, Hk, a->select));
    if (scr && apb_cuda_select(t, nt, a->scored ? NULL : (const float *)_APB_PTR(buffers[0]), n, Hk,
                               d, a->exclude_first, a->select, _APB_PTR(ckb), _APB_LD(ckb),
                               _APB_PTR(cvb), _APB_LD(cvb), scr, starpu_cuda_get_local_stream()))
        _apb_task_fail(APB_E_RUNTIME, "select: copying the tile table to the GPU failed");
    free(t);
    _apb_cuda_check("select");
    _apb_op_count(APB_OP_SELECT, 2.0 * n * Hk * d);
}
#endif
/* Cost follows the block length: scoring, pooling and top-K over every row of the block. */
static size_t _apb_select_size_base(struct starpu_task *task, unsigned nimpl)
{
    (void)nimpl;
    const struct _apb_select_args *a = task->cl_arg;
    int ko = a->scored ? a->n_tiles : 1;
    size_t rows = 0;
    for (int t = 0; t < a->n_tiles; t++)
        rows += starpu_matrix_get_ny(STARPU_TASK_GET_HANDLE(task, ko + t));
    return rows * starpu_matrix_get_nx(STARPU_TASK_GET_HANDLE(task, ko));
}

static struct starpu_perfmodel _apb_select_model = {
    .type = STARPU_NL_REGRESSION_BASED, /* a n^b + c; history when the size was seen */
    .symbol = "apb_select",
    .size_base = _apb_select_size_base,
};

static struct starpu_codelet _apb_select_cl = {
    .cpu_funcs = {_apb_select_cpu},
    .cpu_funcs_name = {"_apb_select_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_select_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_select_model,
    .name = "select",
};

static int _apb_insert_select(apb_handle qbar, const apb_handle *scores, const apb_handle *k,
                              const apb_handle *v, int n_tiles, int exclude_first, int select,
                              int head_dim, apb_handle ck, apb_handle cv, apb_task_tag tag)
{
    int n = 0;
    for (int t = 0; t < n_tiles; t++) {
        n += apb_tile_rows(k[t]);
        if (scores && (apb_tile_rows(scores[t]) != apb_tile_rows(k[t]) ||
                       apb_tile_cols(scores[t]) * head_dim != apb_tile_cols(k[0])))
            return -EINVAL;
    }
    if (n_tiles <= 0 || select <= 0 || exclude_first < 0 || select > n - exclude_first ||
        apb_tile_rows(ck) != select || apb_tile_rows(cv) != select ||
        apb_tile_cols(ck) != apb_tile_cols(k[0]) || (qbar && apb_tile_cols(qbar) != apb_tile_cols(k[0])))
        return -EINVAL;
    struct _apb_select_args a = {.n_tiles = n_tiles, .exclude_first = exclude_first,
                                 .select = select, .head_dim = head_dim, .scored = scores != NULL};
    struct starpu_data_descr *d = malloc(sizeof *d * (size_t)(3 + 3 * n_tiles));
    if (!d)
        return -ENOMEM;
    int nd = 0;
    if (scores)
        for (int t = 0; t < n_tiles; t++)
            d[nd++] = (struct starpu_data_descr){scores[t], STARPU_R};
    else
        d[nd++] = (struct starpu_data_descr){qbar, STARPU_R};
    for (int t = 0; t < n_tiles; t++)
        d[nd++] = (struct starpu_data_descr){k[t], STARPU_R};
    for (int t = 0; t < n_tiles; t++)
        d[nd++] = (struct starpu_data_descr){v[t], STARPU_R};
    d[nd++] = (struct starpu_data_descr){ck, STARPU_W};
    d[nd++] = (struct starpu_data_descr){cv, STARPU_W};
    int ret = apb_task_insert(&_apb_select_cl, STARPU_DATA_MODE_ARRAY, d, nd,
                                 STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                                 STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag), STARPU_NAME, _apb_task_name("select", tag), 0);
    free(d);
    return _apb_insert_check(ret, "select");
}

int apb_insert_select(apb_handle qbar, const apb_handle *k, const apb_handle *v, int n_tiles,
                      int exclude_first, int select, int head_dim, apb_handle ck, apb_handle cv,
                      apb_task_tag tag)
{
    return _apb_insert_select(qbar, NULL, k, v, n_tiles, exclude_first, select, head_dim, ck, cv, tag);
}

int apb_insert_select_scored(const apb_handle *scores, const apb_handle *k, const apb_handle *v,
                             int n_tiles, int exclude_first, int select, int head_dim, apb_handle ck,
                             apb_handle cv, apb_task_tag tag)
{
    return _apb_insert_select(NULL, scores, k, v, n_tiles, exclude_first, select, head_dim, ck, cv,
                              tag);
}
