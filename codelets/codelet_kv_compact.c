/* SPDX-License-Identifier: MIT */
/**
 * @brief Compacts one tile of a finished layer's KV cache to bf16: k16 = bf16(k), v16 = bf16(v)
 * (round to nearest even). Under APB_PREC_BF16 the graph does this once a layer's last reader of
 * its K/V tiles is submitted, so the cache kept for the question pass and decoding takes half the
 * memory; the attention codelet reads bf16 segments in place (CPU: widened per chunk, exactly).
 * The tensor-core attention kernel rounds K/V to bf16 anyway, so GPU results do not change.
 */
#include <stdint.h>

#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

static void _apb_kv_compact_cpu(void *buffers[], void *cl_arg)
{
    const int row0 = *(const int *)cl_arg;
    double t0 = _apb_now_ns();
    for (int m = 0; m < 2; m++) {
        const float *src = _APB_PTR(buffers[m]);
        uint16_t *dst = _apb_seg_rows(buffers[2 + m], row0);
        int n = _APB_ROWS(buffers[m]), cols = _APB_COLS(buffers[m]);
        size_t lds = _APB_LD(buffers[m]), ldd = _APB_LD(buffers[2 + m]);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < cols; j++)
                dst[(size_t)i * ldd + j] = apb_bf16_from_f32(src[(size_t)i * lds + j]);
    }
    _apb_op_account(APB_OP_KV_COMPACT, t0, 0);
}

#ifdef APB_CUDA
static void _apb_kv_compact_cuda(void *buffers[], void *cl_arg)
{
    const int row0 = *(const int *)cl_arg;
    for (int m = 0; m < 2; m++) {
        void *sb = buffers[m], *db = buffers[2 + m];
        apb_cuda_f32_to_bf16(_apb_seg_rows(db, row0), _APB_LD(db), _APB_PTR(sb), _APB_LD(sb), _APB_ROWS(sb),
                             _APB_COLS(sb), starpu_cuda_get_local_stream());
    }
    _apb_cuda_check("kv_compact");
    _apb_op_count(APB_OP_KV_COMPACT, 0);
}
#endif

static struct starpu_perfmodel _apb_kv_compact_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_kv_compact",
};

/* Four buffers (k, v, k16, v16) whose modes come from the task: the destination is W for the
 * first slice of a cache and RW for a later one (StarPU checks a codelet's fixed modes against
 * the task's, so one codelet with fixed modes could not serve both). */
static struct starpu_codelet _apb_kv_compact_cl = {
    .cpu_funcs = {_apb_kv_compact_cpu},
    .cpu_funcs_name = {"_apb_kv_compact_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_kv_compact_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_kv_compact_model,
    .name = "kv_compact",
};

int apb_insert_kv_compact_at(apb_handle k, apb_handle v, apb_handle k16, apb_handle v16, int row0,
                             apb_task_tag tag)
{
    if (!k || !v || !k16 || !v16 || starpu_matrix_get_elemsize(k) != sizeof(float) ||
        starpu_matrix_get_elemsize(v) != sizeof(float) || starpu_matrix_get_elemsize(k16) != 2 ||
        starpu_matrix_get_elemsize(v16) != 2 || row0 < 0 || apb_tile_rows(v) != apb_tile_rows(k) ||
        row0 + apb_tile_rows(k) > apb_tile_rows(k16) || apb_tile_rows(v16) != apb_tile_rows(k16) ||
        apb_tile_cols(k16) != apb_tile_cols(k) || apb_tile_cols(v16) != apb_tile_cols(k16) ||
        apb_tile_cols(v) != apb_tile_cols(k))
        return -EINVAL;
    /* row 0 on: W, the first slice starts the destination (its other rows undefined until their
     * slices are written; StarPU refuses to read a never-written handle); a later slice: RW, the
     * rows written before are kept (the compactions of one layer run one after the other) */
    const enum starpu_data_access_mode dm = row0 == 0 ? STARPU_W : STARPU_RW;
    return _apb_insert_check(
        apb_task_insert(&_apb_kv_compact_cl, STARPU_R, k, STARPU_R, v, dm, k16, dm, v16,
                        STARPU_CL_ARGS, _apb_args_dup(&row0, sizeof row0), sizeof row0, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                        STARPU_NAME, _apb_task_name("kv_compact", tag), 0),
        "kv_compact");
}

int apb_insert_kv_compact(apb_handle k, apb_handle v, apb_handle k16, apb_handle v16, apb_task_tag tag)
{
    if (k && k16 && apb_tile_rows(k16) != apb_tile_rows(k))
        return -EINVAL;
    return apb_insert_kv_compact_at(k, v, k16, v16, 0, tag);
}
