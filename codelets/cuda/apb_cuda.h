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

/* --------------------------------------------------------------- few-row products (gemv.cu) */
#define APB_CUDA_GEMV_MAX_ROWS 8
#define APB_GEMV_MAX_ROWS APB_CUDA_GEMV_MAX_ROWS
/* out (rows x N, fp32 or bf16, ld_out) = in (rows x K, fp32 or bf16 = in_elem bytes, ld_in)
 * W^T + beta out, W bf16 (N x K). Returns 0, 1 when the shape is not this kernel's (rows > 8,
 * K % 8, misaligned rows: nothing was queued, the caller runs cuBLAS), -1 on a launch error. */
/* Several products of one input in one launch (q, k, v of a decode step); 1 = not this kernel's shape. */
enum { APB_GEMV_PARTS = 3 };
typedef struct apb_gemv_parts {
    void *out[APB_GEMV_PARTS];
    int ld_out[APB_GEMV_PARTS];
    const uint16_t *w[APB_GEMV_PARTS]; /* bf16, n[p] x K row-major */
    int n[APB_GEMV_PARTS];
    int np, out_bf16;
    float beta;
} apb_gemv_parts;
int apb_cuda_gemv_parts(const apb_gemv_parts *P, const void *in, int ld_in, int in_elem, int rows, int K,
                        cudaStream_t s);
/* h = silu(in W_gate^T) * (in W_up^T) in one launch (the MLP's first half, few rows). */
int apb_cuda_gemv_swiglu(void *h, int ld_h, int h_bf16, const void *in, int ld_in, int in_elem,
                         const uint16_t *wg, const uint16_t *wu, int rows, int K, int N, cudaStream_t s);
int apb_cuda_gemv_bf16(void *out, int ld_out, int out_bf16, const void *in, int ld_in, int in_elem,
                       const uint16_t *w, int rows, int K, int N, float beta, cudaStream_t s);

/* --------------------------------------------------------------- ops */
void apb_cuda_rmsnorm(float *out, int ld_out, const float *x, int ld_x, const float *w, int rows,
                      int cols, float eps, cudaStream_t s);
/* The same into an fp32 or bf16 (out_bf16: each value rounded to nearest even) out. */
void apb_cuda_rmsnorm_to(void *out, int ld_out, int out_bf16, const float *x, int ld_x, const float *w, int rows,
                         int cols, float eps, cudaStream_t s);
/* x[i] = embed[ids[i]] (embed fp32 or bf16, elem bytes) */
void apb_cuda_embed(float *x, int ld_x, const int32_t *ids, const void *embed, int ld_e, int elem,
                    int n, int dim, int vocab, cudaStream_t s);

/* Attention: one KV segment as the kernels see it (see apb_insert_attention). */
typedef struct apb_cuda_seg {
    const float *k, *v;   /* fp32, or bf16 (uint16_t) when bf16 is set */
    int ld;               /* row stride of k and v (elements) */
    int bf16;             /* K/V stored as bf16: read in place, no conversion */
    int len, coord0, causal, min_q_coord;
} apb_cuda_seg;
#define APB_CUDA_MAX_SEGS 256 /* kernel parameters: about 16 KiB, within the 32 KiB Hopper allows */
/* o (n_q x H*d) and lse (n_q x H) for query heads of KV heads [kvh0, kvh0 + n_kvh).
 * Paths (attention.cu), in order: few query rows (n_q G <= 64, head_dim 64/128/256) run the
 * split-KV kernel (fp32 math); with tensor_cores, cuDNN's fused SDPA where the segment pattern
 * maps onto it (attention_cudnn.cu, when built with cuDNN); else the bf16 mma.sync kernel
 * (head_dim 64 or 128, 16-byte aligned rows); else the fp32 kernel. `scratch` must hold
 * apb_cuda_attention_scratch() bytes (0: none needed). APB_ATTN_IMPL=own|cudnn|fp32 and
 * APB_ATTN_SPLITKV=0 select paths for comparisons. Returns 0, or -1 when the shape is
 * unsupported or a launch failed. */
int apb_cuda_attention(const float *q, int ld_q, int n_q, int q_coord0, const apb_cuda_seg *segs,
                       int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                       float *o, int ld_o, float *lse, int ld_lse, int tensor_cores, void *scratch,
                       size_t scratch_bytes, cudaStream_t s);
/* Bytes of scratch the chosen path needs (0: the fp32 kernel will run). */
size_t apb_cuda_attention_scratch(const float *q, int ld_q, int n_q, int q_coord0,
                                  const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                  int n_kvh, int head_dim, int tensor_cores);
/* One query tile of an attention task over several tiles of consecutive coordinates. */
typedef struct apb_cuda_qtile {
    const float *q;
    void *o; /* fp32, or bf16 when o_bf16 (rounded to nearest even once, after any merge) */
    float *lse;
    int ld_q, ld_o, ld_lse, rows, o_bf16;
} apb_cuda_qtile;
/* The same over n_qt query tiles whose rows follow each other (tile i + 1 starts where tile i
 * ends, the first at q_coord0): with cuDNN, one set of fused calls over all the rows (one causal
 * call over a whole layer's prompt: the rate of one large call, not of n_qt smaller ones); else
 * apb_cuda_attention per tile. Scratch: apb_cuda_attention_tiles_scratch() bytes. */
int apb_cuda_attention_tiles(const apb_cuda_qtile *qt, int n_qt, int q_coord0, const apb_cuda_seg *segs,
                             int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                             int tensor_cores, void *scratch, size_t scratch_bytes, cudaStream_t s);
size_t apb_cuda_attention_tiles_scratch(const apb_cuda_qtile *qt, int n_qt, int q_coord0,
                                        const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                        int n_kvh, int head_dim, int tensor_cores);
/* cuDNN fused SDPA (attention_cudnn.cu, built when configure finds cuDNN and cudnn-frontend):
 * scratch bytes, 0 when the task's segments or shape do not map onto it; the run returns 0,
 * 1 = not applicable (nothing was queued), -1 = cuDNN failed. */
size_t apb_cudnn_attention_scratch(int n_q, int q_coord0, const apb_cuda_seg *segs, int n_segs,
                                   int n_heads, int n_kv_heads, int n_kvh, int head_dim);
int apb_cudnn_attention(const float *q, int ld_q, int n_q, int q_coord0, const apb_cuda_seg *segs,
                        int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                        float *o, int ld_o, float *lse, int ld_lse, void *scratch,
                        size_t scratch_bytes, cudaStream_t s);
/* The same over query tiles of consecutive coordinates (apb_cudnn_attention_scratch with their
 * total rows sizes it). A part whose keys are one bf16 segment with row stride n_kvh * head_dim
 * (a layer's compacted cache) is read in place, without a copy. */
int apb_cudnn_attention_tiles(const apb_cuda_qtile *qt, int n_qt, int q_coord0, const apb_cuda_seg *segs,
                              int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                              void *scratch, size_t scratch_bytes, cudaStream_t s);

/* --------------------------------------------------------------- APB ops (rope.cu, apb_ops.cu, ...) */
/* Rotate-half RoPE in place on q (rows x hq*d) and k (rows x hk*d, may be NULL); row i has position
 * pos0 + i; angles in double then rounded to fp32 like apb_rope_table, and the rotation in fp32
 * without FMA like apb_rope_row_f32. */
void apb_cuda_rope(float *q, int ldq, int hq, float *k, int ldk, int hk, const float *inv_freq,
                   int rows, int head_dim, int pos0, cudaStream_t s);

#define APB_CUDA_QMEAN_MAX_TILES 16
typedef struct apb_cuda_qmean_tiles {
    const float *q[APB_CUDA_QMEAN_MAX_TILES];
    int ld[APB_CUDA_QMEAN_MAX_TILES], row0[APB_CUDA_QMEAN_MAX_TILES], n[APB_CUDA_QMEAN_MAX_TILES];
    int n_tiles;
} apb_cuda_qmean_tiles;
/* qbar (1 x Hk*d) = mean over the tiles' rows and the G = H/Hk query heads of each KV head. */
void apb_cuda_qmean(const apb_cuda_qmean_tiles *t, int n_heads, int n_kv_heads, int head_dim,
                    float *qbar, cudaStream_t s);

/* One input tile of select: K, V (and the scores tile of the scored variant), global rows
 * [row0, row0 + rows). */
typedef struct apb_cuda_sel_tile {
    const float *k, *v, *s;
    int ldk, ldv, lds, row0, rows;
} apb_cuda_sel_tile;
/* Device scratch bytes apb_cuda_select needs. */
size_t apb_cuda_select_scratch(int n_tiles, int n, int n_kv_heads, int select);
/* Query-aware selection (see apb_insert_select); qbar NULL = the scored variant (tiles[].s).
 * tiles is a host array: it is copied into scratch on the stream. Returns 0, or -1 on a CUDA error. */
int apb_cuda_select(const apb_cuda_sel_tile *tiles, int n_tiles, const float *qbar, int n,
                    int n_kv_heads, int head_dim, int exclude_first, int select, float *ck, int ldck,
                    float *cv, int ldcv, void *scratch, cudaStream_t s);

#define APB_CUDA_LSE_MAX 64
typedef struct apb_cuda_lse_in {
    const float *o[APB_CUDA_LSE_MAX], *lse[APB_CUDA_LSE_MAX];
    int ldo[APB_CUDA_LSE_MAX], ldl[APB_CUDA_LSE_MAX];
} apb_cuda_lse_in;
/* Merges n partials per row and head (apb_lse_merge_row) into o, fp32 or bf16 (o_bf16: each value
 * rounded once); lse_out may be NULL. */
void apb_cuda_lse_merge(const apb_cuda_lse_in *in, int n, int rows, int n_heads, int head_dim,
                        void *o, int ldo, int o_bf16, float *lse_out, int ld_lse, cudaStream_t s);

/* x (rows x (cq + ck + cv), dense) = cat(q, k, v) row by row. */
void apb_cuda_concat3(float *x, const float *q, int ldq, int cq, const float *k, int ldk, int ck,
                      const float *v, int ldv, int cv, int rows, cudaStream_t s);
/* h[i] = h[i] / (1 + expf(-h[i])) */
void apb_cuda_silu(float *h, size_t n, cudaStream_t s);

/* Device scratch bytes apb_cuda_sample needs for a vocabulary of n. */
size_t apb_cuda_sample_scratch(int n);
/* tok[0] = the token apb_sample_f32 draws from logits (n) with u = r53 2^-53. */
void apb_cuda_sample(const float *logits, int n, float temperature, float top_p, uint64_t r53,
                     int32_t *tok, void *scratch, cudaStream_t s);


#ifdef __cplusplus
}
#endif
#endif
