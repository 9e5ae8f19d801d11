/* SPDX-License-Identifier: MIT */
/** @brief Internal helpers shared by the codelet files (not part of the public API); what the
 * runtime offers them is in runtime/apb_task.h. */
#ifndef APB_CODELET_COMMON_H
#define APB_CODELET_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apb_build_config.h"
#include "codelets/apb_codelets.h"
#include "codelets/apb_kernels_cpu.h"
#include "runtime/apb_task.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

/* Row-major views of StarPU matrix buffers. */
#define _APB_PTR(buf) ((void *)STARPU_MATRIX_GET_PTR(buf))
#define _APB_ROWS(buf) ((int)STARPU_MATRIX_GET_NY(buf))
#define _APB_COLS(buf) ((int)STARPU_MATRIX_GET_NX(buf))
#define _APB_LD(buf) ((int)STARPU_MATRIX_GET_LD(buf))

/* Runs a prepared starpu_task_insert result check. */
static inline int _apb_insert_check(int ret, const char *op)
{
    if (ret != 0)
        fprintf(stderr, "apb: submitting %s failed: %s\n", op, ret == -ENODEV ? "no worker can run it" : "StarPU error");
    return ret;
}

/* A malloc'd copy of a codelet argument struct, for STARPU_CL_ARGS (StarPU frees it with the task).
 * STARPU_VALUE is not used: it packs arguments in StarPU's own format, needing unpack calls. */
static inline void *_apb_args_dup(const void *a, size_t n)
{
    void *p = malloc(n);
    if (p)
        memcpy(p, a, n);
    return p;
}

/* Weights may be stored as bf16 (elemsize 2, APB_PREC_BF16). CPU kernels read them as fp32:
 * rows [r0, r0 + n) of a (rows x cols, ld) weight tile, converted into `dst` when bf16, or a
 * pointer into the tile itself when fp32 (codelets/codelet_linear.c). */
const float *_apb_weight_rows_f32(void *buf, int r0, int n, float *dst);
static inline int _apb_elem(void *buf) { return (int)STARPU_MATRIX_GET_ELEMSIZE(buf); }
/* apb_linear_f32 with the weight given as a StarPU buffer, fp32 or bf16 (widened by row blocks).
 * Returns -1 (output untouched) when out of memory. */
int _apb_linear_w(float *out, int ld_out, const float *in, int ld_in, void *wbuf, const float *bias,
                  int rows, int accumulate);
/* An activation tile's data as fp32 for the CPU kernels: the tile itself (fp32), or its bf16 rows
 * widened (exact) into this thread's scratch, *ld set to the dense row length (the bf16 o and xn
 * tiles under bf16 precision). NULL when out of memory. */
const float *_apb_act_f32(void *buf, int *ld);

#ifdef APB_CUDA
/* out (rows x n_out, fp32 or bf16) = in (rows x n_in) W^T + beta out, on the worker's cuBLAS
 * handle and stream; W fp32 (fp32 GEMM) or bf16 (in converted to bf16, fp32 accumulation)
 * (codelets/codelet_linear.c). */
int _apb_cuda_gemm(void *out, int ld_out, int out_bf16, const void *in, int ld_in, int in_elem,
                   const void *w, int w_elem, int rows, int n_in, int n_out, float beta);
int _apb_cuda_gemm3(void *const outs[3], const int ld_outs[3], const void *in, int ld_in, int in_elem,
                    const void *const ws[3], const int w_elems[3], int rows, int n_in, const int n_outs[3]);
int _apb_cuda_gate_up(void *h, void *u, int es, const void *in, int ld_in, int in_elem, const void *wg,
                      const void *wu, int rows, int dim, int hidden);
#endif

/* ------------------------------------------------------------------ KV segments in codelets */
/* A segment's scalars as the attention codelets (attention, attention_row, layer) carry them in
 * their arguments; its K and V travel as two read-only buffers. */
struct _apb_seg_arg {
    int len, coord0, causal, min_q_coord, row0;
};

/* Row row0 of a segment's K or V buffer: a segment is rows [row0, row0 + len) of its tiles (the
 * contiguous bf16 cache of a finished layer holds every tile of it, graph/layer.c). */
static inline void *_apb_seg_rows(void *buf, int row0)
{
    return (char *)_APB_PTR(buf) + (size_t)row0 * _APB_LD(buf) * _apb_elem(buf);
}

/* Checks segs (len within its tile, K width kv_cols), copies their scalars into args and writes
 * their K, V data descriptors (2 per segment, read-only) from d on; -EINVAL on a bad segment. */
static inline int _apb_segs_pack(const apb_attn_seg *segs, int n, int kv_cols, struct _apb_seg_arg *args,
                                 struct starpu_data_descr *d)
{
    for (int s = 0; s < n; s++) {
        if (segs[s].len < 0 || segs[s].row0 < 0 || segs[s].row0 + segs[s].len > apb_tile_rows(segs[s].k) ||
            segs[s].row0 + segs[s].len > apb_tile_rows(segs[s].v) || apb_tile_cols(segs[s].k) != kv_cols)
            return -EINVAL;
        args[s] = (struct _apb_seg_arg){segs[s].len, segs[s].coord0, segs[s].causal, segs[s].min_q_coord,
                                        segs[s].row0};
        d[2 * s] = (struct starpu_data_descr){segs[s].k, STARPU_R};
        d[2 * s + 1] = (struct starpu_data_descr){segs[s].v, STARPU_R};
    }
    return 0;
}

/* The CPU kernels' view of a segment: its K and V buffers and its scalars. */
static inline struct _apb_attn_seg_cpu _apb_seg_cpu(void *kb, void *vb, const struct _apb_seg_arg *a)
{
    return (struct _apb_attn_seg_cpu){.k = _apb_seg_rows(kb, a->row0), .v = _apb_seg_rows(vb, a->row0),
                                      .ld = _APB_LD(kb), .bf16 = _apb_elem(kb) == 2, .len = a->len, .coord0 = a->coord0,
                                      .causal = a->causal, .min_q_coord = a->min_q_coord};
}

#ifdef APB_CUDA
/* The CUDA kernels' view of the same segment. */
static inline apb_cuda_seg _apb_seg_cuda(void *kb, void *vb, const struct _apb_seg_arg *a)
{
    return (apb_cuda_seg){.k = _apb_seg_rows(kb, a->row0), .v = _apb_seg_rows(vb, a->row0), .ld = _APB_LD(kb),
                          .bf16 = _apb_elem(kb) == 2, .len = a->len, .coord0 = a->coord0, .causal = a->causal,
                          .min_q_coord = a->min_q_coord};
}
#endif

#endif
