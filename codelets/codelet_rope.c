/* SPDX-License-Identifier: MIT */
/**
 * @brief Rotate-half RoPE (HF layout) in place on q and k; row i has position pos0 + i.
 * The mRoPE variant (Qwen2-VL / Qwen2.5-VL) reads three position ids per row (temporal, height,
 * width) from an int32 tile and rotates frequency pair j by the id of its section.
 */
#include <math.h>
#include <stdlib.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_rope_args {
    int pos0;
    int head_dim;
    int has_k;
};

void apb_rope_table(float *cos_t, float *sin_t, const float *inv_freq, int half, int pos)
{
    for (int i = 0; i < half; i++) {
        /* angle in double: positions reach 10^6 and fp32 products would lose the phase */
        double ang = (double)pos * (double)inv_freq[i];
        cos_t[i] = (float)cos(ang);
        sin_t[i] = (float)sin(ang);
    }
}

void apb_mrope_table(float *cos_t, float *sin_t, const float *inv_freq, int half, const int32_t pos3[3],
                     const int section[3])
{
    for (int i = 0; i < half; i++) {
        int c = i < section[0] ? 0 : i < section[0] + section[1] ? 1 : 2;
        double ang = (double)pos3[c] * (double)inv_freq[i];
        cos_t[i] = (float)cos(ang);
        sin_t[i] = (float)sin(ang);
    }
}

void apb_rope_row_f32(float *x, int n_heads, int head_dim, const float *cos_t, const float *sin_t)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = xh[i], b = xh[i + half];
            xh[i] = a * cos_t[i] - b * sin_t[i];
            xh[i + half] = b * cos_t[i] + a * sin_t[i];
        }
    }
}

static void _apb_rope_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_rope_args *a = cl_arg;
    int d = a->head_dim, half = d / 2;
    const float *inv_freq = _APB_PTR(buffers[0]);
    float *q = _APB_PTR(buffers[1]);
    int rows = _APB_ROWS(buffers[1]), ldq = _APB_LD(buffers[1]), hq = _APB_COLS(buffers[1]) / d;
    float *k = a->has_k ? _APB_PTR(buffers[2]) : NULL;
    int ldk = a->has_k ? _APB_LD(buffers[2]) : 0, hk = a->has_k ? _APB_COLS(buffers[2]) / d : 0;
    float cs[512], sn[512]; /* head_dim <= 1024 is checked at insert */
    for (int i = 0; i < rows; i++) {
        apb_rope_table(cs, sn, inv_freq, half, a->pos0 + i);
        apb_rope_row_f32(q + (size_t)i * ldq, hq, d, cs, sn);
        if (k)
            apb_rope_row_f32(k + (size_t)i * ldk, hk, d, cs, sn);
    }
    _apb_op_account(APB_OP_ROPE, t0, 6.0 * rows * (hq + hk) * half);
}

#ifdef APB_CUDA
static void _apb_rope_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_rope_args *a = cl_arg;
    int d = a->head_dim, rows = _APB_ROWS(buffers[1]);
    int hq = _APB_COLS(buffers[1]) / d, hk = a->has_k ? _APB_COLS(buffers[2]) / d : 0;
    apb_cuda_rope(_APB_PTR(buffers[1]), _APB_LD(buffers[1]), hq,
                  a->has_k ? (float *)_APB_PTR(buffers[2]) : NULL, a->has_k ? _APB_LD(buffers[2]) : 0,
                  hk, _APB_PTR(buffers[0]), rows, d, a->pos0, starpu_cuda_get_local_stream());
    _apb_cuda_check("rope");
    _apb_op_count(APB_OP_ROPE, 6.0 * rows * (hq + hk) * (d / 2));
}
#endif

static struct starpu_perfmodel _apb_rope_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_rope",
};

static struct starpu_codelet _apb_rope_cl = {
    .cpu_funcs = {_apb_rope_cpu},
    .cpu_funcs_name = {"_apb_rope_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_rope_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_rope_model,
    .name = "rope",
};

int apb_insert_rope(apb_handle q, apb_handle k, apb_handle inv_freq, int pos0, int head_dim,
                    apb_task_tag tag)
{
    if (head_dim <= 0 || head_dim > 1024 || head_dim % 2)
        return -EINVAL;
    struct _apb_rope_args a = {.pos0 = pos0, .head_dim = head_dim, .has_k = k != NULL};
    struct starpu_data_descr d[3] = {{inv_freq, STARPU_R}, {q, STARPU_RW}, {k, STARPU_RW}};
    return _apb_insert_check(
        apb_task_insert(&_apb_rope_cl, STARPU_DATA_MODE_ARRAY, d, k ? 3 : 2, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                           STARPU_NAME, _apb_task_name("rope", tag), 0),
        "rope");
}

/* ------------------------------------------------------------------ mRoPE: per-row (t, h, w) ids */

struct _apb_rope_m_args {
    int head_dim;
    int has_k;
    int section[3];
};

/* buffers: inv_freq (1 x half), pos (rows x 3 int32), q, [k] */
static void _apb_rope_m_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_rope_m_args *a = cl_arg;
    int d = a->head_dim, half = d / 2;
    const float *inv_freq = _APB_PTR(buffers[0]);
    const int32_t *pos = (const int32_t *)STARPU_MATRIX_GET_PTR(buffers[1]);
    int ldp = (int)STARPU_MATRIX_GET_LD(buffers[1]);
    float *q = _APB_PTR(buffers[2]);
    int rows = _APB_ROWS(buffers[2]), ldq = _APB_LD(buffers[2]), hq = _APB_COLS(buffers[2]) / d;
    float *k = a->has_k ? _APB_PTR(buffers[3]) : NULL;
    int ldk = a->has_k ? _APB_LD(buffers[3]) : 0, hk = a->has_k ? _APB_COLS(buffers[3]) / d : 0;
    float cs[512], sn[512];
    for (int i = 0; i < rows; i++) {
        apb_mrope_table(cs, sn, inv_freq, half, pos + (size_t)i * ldp, a->section);
        apb_rope_row_f32(q + (size_t)i * ldq, hq, d, cs, sn);
        if (k)
            apb_rope_row_f32(k + (size_t)i * ldk, hk, d, cs, sn);
    }
    _apb_op_account(APB_OP_ROPE, t0, 6.0 * rows * (hq + hk) * half);
}

#ifdef APB_CUDA
/* codelets/cuda/rope.cu (declared here, not in apb_cuda.h, so adding it rebuilt no other kernel):
 * row i reads ids pos[i * ldp + 0..2]; pair j < s0 uses id 0, j < s0 + s1 id 1, else id 2. */
void apb_cuda_rope_m(float *q, int ldq, int hq, float *k, int ldk, int hk, const float *inv_freq,
                     const int32_t *pos, int ldp, int rows, int head_dim, int s0, int s1, cudaStream_t s);

static void _apb_rope_m_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_rope_m_args *a = cl_arg;
    int d = a->head_dim, rows = _APB_ROWS(buffers[2]);
    int hq = _APB_COLS(buffers[2]) / d, hk = a->has_k ? _APB_COLS(buffers[3]) / d : 0;
    apb_cuda_rope_m(_APB_PTR(buffers[2]), _APB_LD(buffers[2]), hq,
                    a->has_k ? (float *)_APB_PTR(buffers[3]) : NULL, a->has_k ? _APB_LD(buffers[3]) : 0, hk,
                    _APB_PTR(buffers[0]), (const int32_t *)STARPU_MATRIX_GET_PTR(buffers[1]),
                    (int)STARPU_MATRIX_GET_LD(buffers[1]), rows, d, a->section[0], a->section[1],
                    starpu_cuda_get_local_stream());
    _apb_cuda_check("rope_m");
    _apb_op_count(APB_OP_ROPE, 6.0 * rows * (hq + hk) * (d / 2));
}
#endif

static struct starpu_perfmodel _apb_rope_m_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_rope_m",
};

static struct starpu_codelet _apb_rope_m_cl = {
    .cpu_funcs = {_apb_rope_m_cpu},
    .cpu_funcs_name = {"_apb_rope_m_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_rope_m_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_rope_m_model,
    .name = "rope", /* same op (kind, accounting) as 1-D RoPE */
};

int apb_insert_rope_m(apb_handle q, apb_handle k, apb_handle inv_freq, apb_handle pos, const int section[3],
                      int head_dim, apb_task_tag tag)
{
    if (head_dim <= 0 || head_dim > 1024 || head_dim % 2 || !section || section[0] < 0 || section[1] < 0 ||
        section[2] < 0 || section[0] + section[1] + section[2] != head_dim / 2)
        return -EINVAL;
    if (apb_tile_elemsize(pos) != sizeof(int32_t) || apb_tile_cols(pos) != 3 ||
        apb_tile_rows(pos) != apb_tile_rows(q))
        return -EINVAL;
    struct _apb_rope_m_args a = {.head_dim = head_dim, .has_k = k != NULL,
                                 .section = {section[0], section[1], section[2]}};
    struct starpu_data_descr d[4] = {{inv_freq, STARPU_R}, {pos, STARPU_R}, {q, STARPU_RW}, {k, STARPU_RW}};
    return _apb_insert_check(
        apb_task_insert(&_apb_rope_m_cl, STARPU_DATA_MODE_ARRAY, d, k ? 4 : 3, STARPU_CL_ARGS,
                        _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                        STARPU_NAME, _apb_task_name("rope", tag), 0),
        "rope_m");
}
