/* SPDX-License-Identifier: MIT */
/**
 * @brief Host-side launchers of the CUDA kernels (codelets/cuda/<op>.cu), callable from C.
 *
 * Every launcher enqueues on `stream` (the StarPU worker's local stream) and returns at once;
 * the codelets are STARPU_CUDA_ASYNC, so StarPU waits on the stream, not the host. Matrices are
 * row-major with leading dimensions in elements, like the CPU kernels. bf16 is stored as raw
 * uint16_t (the upper half of an IEEE float, round-to-nearest-even on conversion).
 */
#ifndef APB_CUDA_H
#define APB_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- conversions, elementwise */
/* dst (rows x cols, bf16, ld_dst) = src (fp32, ld_src) */
void apb_cuda_f32_to_bf16(uint16_t *dst, int ld_dst, const float *src, int ld_src, int rows,
                          int cols, cudaStream_t s);
/* out[r][c] += bias[c] */
void apb_cuda_add_bias(float *out, int ld, const float *bias, int rows, int cols, cudaStream_t s);
/* h[r][c] = silu(g[r][c]) * u[r][c]; elem 2 = bf16, 4 = fp32 (g, u, h of one type) */
void apb_cuda_swiglu(void *h, const void *g, const void *u, size_t n, int elem, cudaStream_t s);
/* Sets rows x cols elements of elem bytes to zero (ld in elements). */
void apb_cuda_zero(void *p, int ld, int rows, int cols, int elem, cudaStream_t s);

/* --------------------------------------------------------------- ops */
void apb_cuda_rmsnorm(float *out, int ld_out, const float *x, int ld_x, const float *w, int rows,
                      int cols, float eps, cudaStream_t s);
/* x[i] = embed[ids[i]] (embed fp32 or bf16, elem bytes) */
void apb_cuda_embed(float *x, int ld_x, const int32_t *ids, const void *embed, int ld_e, int elem,
                    int n, int dim, int vocab, cudaStream_t s);

/* Attention: one KV segment as the kernels see it (see apb_insert_attention). */
typedef struct apb_cuda_seg {
    const float *k, *v;
    int ld;               /* row stride of k and v (elements) */
    int len, coord0, causal, min_q_coord;
} apb_cuda_seg;
#define APB_CUDA_MAX_SEGS 256 /* kernel parameters: 10 KiB, within the 32 KiB Hopper allows */
/* o (n_q x H*d) and lse (n_q x H) for query heads of KV heads [kvh0, kvh0 + n_kvh).
 * tensor_cores != 0 uses the bf16 mma.sync kernel (head_dim 64 or 128, 16-byte aligned rows, and
 * device scratch of apb_cuda_attention_scratch() bytes for the bf16 copies of K and V),
 * otherwise the fp32 kernel. Returns 0, or -1 when the shape is unsupported. */
int apb_cuda_attention(const float *q, int ld_q, int n_q, int q_coord0, const apb_cuda_seg *segs,
                       int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                       float *o, int ld_o, float *lse, int ld_lse, int tensor_cores, void *scratch,
                       cudaStream_t s);
/* Bytes of scratch the tensor-core path needs (0: the fp32 kernel will run). */
size_t apb_cuda_attention_scratch(const float *q, int ld_q, int n_q, int q_coord0,
                                  const apb_cuda_seg *segs, int n_segs, int n_kvh, int head_dim,
                                  int tensor_cores);

#ifdef __cplusplus
}
#endif
#endif
