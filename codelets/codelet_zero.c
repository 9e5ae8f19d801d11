/* SPDX-License-Identifier: MIT */
/**
 * @brief Zero fill of a fresh tile (apb_tile_new_zeroed): the buffers that are first
 * read-modify-written (decode KV caches, Ulysses' head-group outputs, NCCL order tokens). Not an op
 * of the model (no row in the op table): its tasks are named "zero", neither accounted nor traced.
 */
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

static void _apb_zero_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    size_t es = STARPU_MATRIX_GET_ELEMSIZE(buffers[0]), ld = STARPU_MATRIX_GET_LD(buffers[0]);
    size_t nx = STARPU_MATRIX_GET_NX(buffers[0]), ny = STARPU_MATRIX_GET_NY(buffers[0]);
    char *p = (char *)STARPU_MATRIX_GET_PTR(buffers[0]);
    for (size_t r = 0; r < ny; r++)
        memset(p + r * ld * es, 0, nx * es);
}

#ifdef APB_CUDA
static void _apb_zero_cuda(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    apb_cuda_zero(_APB_PTR(buffers[0]), _APB_LD(buffers[0]), _APB_ROWS(buffers[0]),
                  _APB_COLS(buffers[0]), _apb_elem(buffers[0]), starpu_cuda_get_local_stream());
}
#endif
static struct starpu_perfmodel _apb_zero_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_zero",
};

static struct starpu_codelet _apb_zero_cl = {
    .model = &_apb_zero_model,
    .cpu_funcs = {_apb_zero_cpu},
    .cpu_funcs_name = {"_apb_zero_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_zero_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 1,
    .modes = {STARPU_W},
    .name = "zero",
};

apb_handle apb_tile_new_zeroed(int rows, int cols, size_t elemsize)
{
    apb_handle h = apb_tile_new(rows, cols, elemsize);
    if (apb_task_insert(&_apb_zero_cl, STARPU_W, h, STARPU_NAME, "zero", 0) != 0)
        fprintf(stderr, "apb: submitting zero fill failed\n");
    return h;
}
