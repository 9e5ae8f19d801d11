/* SPDX-License-Identifier: MIT */
/** @brief Decode steps split over the CPU workers: MLP and LM-head row blocks, and their gather. */
#include <math.h>

#include "codelets/apb_decode.h"
#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"

int apb_decode_split(void)
{
    if (starpu_cuda_worker_get_count() > 0 || apb_runtime_nranks() > 1)
        return 1;
    int n = (int)starpu_cpu_worker_get_count();
    return n < 1 ? 1 : n > APB_DECODE_MAX_SPLIT ? APB_DECODE_MAX_SPLIT : n;
}

/* Row r0 of a weight buffer (fp32 or bf16) as a pointer to its first element, column c0. */
static const void *_apb_w_at(void *buf, int r0, int c0)
{
    size_t off = (size_t)r0 * _APB_LD(buf) + c0;
    return _apb_elem(buf) == 2 ? (const void *)((const uint16_t *)_APB_PTR(buf) + off)
                               : (const void *)((const float *)_APB_PTR(buf) + off);
}

struct _apb_mlp_part_args {
    int h0, h1;
};

static void _apb_mlp_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_mlp_part_args *a = cl_arg;
    const float *xn = _APB_PTR(buffers[0]);
    int dim = _APB_COLS(buffers[0]), nh = a->h1 - a->h0;
    float *z = _APB_PTR(buffers[4]);
    float *g = _apb_thread_scratch(_APB_SCRATCH_MLP, 2 * (size_t)nh);
    if (!g) {
        _apb_task_fail(APB_E_NOMEM, "mlp: out of host memory");
        return;
    }
    float *u = g + nh;
    apb_gemv(g, xn, _apb_w_at(buffers[1], a->h0, 0), _apb_elem(buffers[1]) == 2,
             (size_t)_APB_LD(buffers[1]), NULL, dim, nh, 0);
    apb_gemv(u, xn, _apb_w_at(buffers[2], a->h0, 0), _apb_elem(buffers[2]) == 2,
             (size_t)_APB_LD(buffers[2]), NULL, dim, nh, 0);
    for (int i = 0; i < nh; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    apb_gemv(z, g, _apb_w_at(buffers[3], 0, a->h0), _apb_elem(buffers[3]) == 2,
             (size_t)_APB_LD(buffers[3]), NULL, nh, dim, 0);
    _apb_op_account(APB_OP_MLP, t0, 6.0 * dim * nh);
}

static struct starpu_perfmodel _apb_mlp_part_model = {.type = STARPU_HISTORY_BASED,
                                                      .symbol = "apb_mlp_part"};
static struct starpu_codelet _apb_mlp_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_mlp_part_cpu},
    .cpu_funcs_name = {"_apb_mlp_part_cpu"},
    .nbuffers = 5,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_mlp_part_model,
    .name = "mlp_part",
};

int apb_insert_mlp_part(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                        apb_handle z, int h0, int h1, apb_task_tag tag)
{
    if (h0 < 0 || h1 <= h0 || h1 > apb_tile_rows(w_gate))
        return -EINVAL;
    struct _apb_mlp_part_args a = {h0, h1};
    int ret = apb_task_insert(&_apb_mlp_part_cl, STARPU_R, xn, STARPU_R, w_gate, STARPU_R, w_up,
                              STARPU_R, w_down, STARPU_W, z, STARPU_CL_ARGS,
                              _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                              APB_ON_HOST(tag), STARPU_FLOPS, 6.0 * apb_tile_cols(xn) * (h1 - h0),
                              STARPU_NAME, _apb_task_name("mlp_part", tag), 0);
    return _apb_insert_check(ret, "mlp_part");
}

struct _apb_linear_part_args {
    int c0, c1;
};

static void _apb_linear_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_linear_part_args *a = cl_arg;
    int n_out = _APB_ROWS(buffers[1]);
    apb_gemv(_APB_PTR(buffers[2]), (const float *)_APB_PTR(buffers[0]) + a->c0,
             _apb_w_at(buffers[1], 0, a->c0), _apb_elem(buffers[1]) == 2, (size_t)_APB_LD(buffers[1]),
             NULL, a->c1 - a->c0, n_out, 0);
    _apb_op_account(APB_OP_LINEAR, t0, 2.0 * n_out * (a->c1 - a->c0));
}

static struct starpu_perfmodel _apb_linear_part_model = {.type = STARPU_HISTORY_BASED,
                                                         .symbol = "apb_linear_part"};
static struct starpu_codelet _apb_linear_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_linear_part_cpu},
    .cpu_funcs_name = {"_apb_linear_part_cpu"},
    .nbuffers = 3,
    .modes = {STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_linear_part_model,
    .name = "linear_part",
};

int apb_insert_linear_part(apb_handle in, apb_handle w, apb_handle z, int c0, int c1, apb_task_tag tag)
{
    if (c0 < 0 || c1 <= c0 || c1 > apb_tile_cols(w) || apb_tile_cols(in) != apb_tile_cols(w) ||
        apb_tile_cols(z) != apb_tile_rows(w))
        return -EINVAL;
    struct _apb_linear_part_args a = {c0, c1};
    int ret = apb_task_insert(&_apb_linear_part_cl, STARPU_R, in, STARPU_R, w, STARPU_W, z,
                              STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                              STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                              STARPU_FLOPS, 2.0 * apb_tile_rows(w) * (c1 - c0),
                              STARPU_NAME, _apb_task_name("linear_part", tag), 0);
    return _apb_insert_check(ret, "linear_part");
}

struct _apb_logits_part_args {
    int row, v0;
    float eps;
};

static void _apb_logits_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_logits_part_args *a = cl_arg;
    int dim = _APB_COLS(buffers[0]), n = _APB_COLS(buffers[3]);
    float *xn = _apb_thread_scratch(_APB_SCRATCH_LOGITS, (size_t)dim);
    if (!xn) {
        _apb_task_fail(APB_E_NOMEM, "logits: out of host memory");
        return;
    }
    apb_rmsnorm_f32(xn, (const float *)_APB_PTR(buffers[0]) + (size_t)a->row * _APB_LD(buffers[0]),
                    _APB_PTR(buffers[1]), dim, a->eps);
    apb_gemv(_APB_PTR(buffers[3]), xn, _apb_w_at(buffers[2], a->v0, 0), _apb_elem(buffers[2]) == 2,
             (size_t)_APB_LD(buffers[2]), NULL, dim, n, 0);
    _apb_op_account(APB_OP_LOGITS, t0, 2.0 * dim * n);
}

static struct starpu_perfmodel _apb_logits_part_model = {.type = STARPU_HISTORY_BASED,
                                                         .symbol = "apb_logits_part"};
static struct starpu_codelet _apb_logits_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_logits_part_cpu},
    .cpu_funcs_name = {"_apb_logits_part_cpu"},
    .nbuffers = 4,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_logits_part_model,
    .name = "logits_part",
};

int apb_insert_logits_part(apb_handle x, int row, apb_handle norm_w, apb_handle lm_head,
                           apb_handle part, int v0, float eps, apb_task_tag tag)
{
    if (row < 0 || row >= apb_tile_rows(x) || v0 < 0 || v0 + apb_tile_cols(part) > apb_tile_rows(lm_head))
        return -EINVAL;
    struct _apb_logits_part_args a = {row, v0, eps};
    int ret = apb_task_insert(&_apb_logits_part_cl, STARPU_R, x, STARPU_R, norm_w, STARPU_R, lm_head,
                              STARPU_W, part, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                              STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                              STARPU_FLOPS, 2.0 * apb_tile_cols(x) * apb_tile_cols(part),
                              STARPU_NAME, _apb_task_name("logits_part", tag), 0);
    return _apb_insert_check(ret, "logits_part");
}

struct _apb_gather_args {
    int n, sum, norm;
    float eps;
};

static void _apb_gather_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_gather_args *a = cl_arg;
    float *out = _APB_PTR(buffers[a->n]);
    int cols = _APB_COLS(buffers[a->n]);
    if (a->sum) {
        for (int i = 0; i < a->n; i++) {
            const float *p = _APB_PTR(buffers[i]);
            for (int j = 0; j < cols; j++)
                out[j] += p[j];
        }
    } else {
        for (int i = 0, off = 0; i < a->n; off += _APB_COLS(buffers[i]), i++)
            memcpy(out + off, _APB_PTR(buffers[i]), sizeof(float) * (size_t)_APB_COLS(buffers[i]));
    }
    if (a->norm)
        apb_rmsnorm_f32(_APB_PTR(buffers[a->n + 2]), out, _APB_PTR(buffers[a->n + 1]), cols, a->eps);
    _apb_op_account(a->sum ? APB_OP_MLP : APB_OP_LOGITS, t0, a->sum ? (double)a->n * cols : 0);
}

static struct starpu_perfmodel _apb_gather_model = {.type = STARPU_HISTORY_BASED,
                                                    .symbol = "apb_gather"};
static struct starpu_codelet _apb_gather_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_gather_cpu},
    .cpu_funcs_name = {"_apb_gather_cpu"},
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_gather_model,
    .name = "gather",
};

int apb_insert_gather(const apb_handle *parts, int n, apb_handle out, int sum, apb_task_tag tag)
{
    return apb_insert_gather_norm(parts, n, out, sum, NULL, NULL, 0, tag);
}

int apb_insert_gather_norm(const apb_handle *parts, int n, apb_handle out, int sum,
                           apb_handle norm_w, apb_handle xn, float eps, apb_task_tag tag)
{
    if (n < 1 || n > APB_DECODE_MAX_SPLIT || !norm_w != !xn ||
        (xn && (apb_tile_rows(out) != 1 || apb_tile_cols(xn) != apb_tile_cols(out))))
        return -EINVAL;
    struct starpu_data_descr d[APB_DECODE_MAX_SPLIT + 3];
    int cols = 0;
    for (int i = 0; i < n; i++) {
        d[i] = (struct starpu_data_descr){parts[i], STARPU_R};
        cols += apb_tile_cols(parts[i]);
    }
    if (sum ? apb_tile_cols(parts[0]) * n != cols || cols / n != apb_tile_cols(out)
            : cols != apb_tile_cols(out))
        return -EINVAL;
    d[n] = (struct starpu_data_descr){out, sum ? STARPU_RW : STARPU_W};
    int nd = n + 1;
    if (xn) {
        d[nd++] = (struct starpu_data_descr){norm_w, STARPU_R};
        d[nd++] = (struct starpu_data_descr){xn, STARPU_W};
    }
    struct _apb_gather_args a = {n, sum, xn != NULL, eps};
    int ret = apb_task_insert(&_apb_gather_cl, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS,
                              _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                              APB_ON_HOST(tag), STARPU_NAME, _apb_task_name(sum ? "mlp_sum" : "logits_gather", tag), 0);
    return _apb_insert_check(ret, "gather");
}
