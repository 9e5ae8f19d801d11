/* SPDX-License-Identifier: MIT */
/** @brief The CPU compute kernels behind the codelets, callable directly (tests, reference paths). */
#ifndef APB_KERNELS_CPU_H
#define APB_KERNELS_CPU_H

#include <stddef.h>
#include <stdint.h>

void apb_rmsnorm_f32(float *out, const float *x, const float *w, int n, float eps);
/* out (rows x n_out, ld_out) = in (rows x n_in, ld_in) W^T (+bias) (+ out when accumulate) */
void apb_linear_f32(float *out, int ld_out, const float *in, int ld_in, const float *w,
                    const float *bias, int rows, int n_in, int n_out, int accumulate);
/* One input row: out[j] = (accumulate ? out[j] : 0) + bias[j] + sum_k in[k] w[j * ld + k] for
 * j < n_out (bias may be NULL); w fp32, or bf16 bits (uint16_t) when w_bf16. */
void apb_gemv(float *out, const float *in, const void *w, int w_bf16, size_t ld, const float *bias,
              int n_in, int n_out, int accumulate);
/* Several input rows, bf16 weights (w: n_out rows of ld_w bf16 bits): out (+)= bf16(in) W^T through
 * oneDNN's matmul (gemm_dnnl.c); -1 when not built with oneDNN, disabled (APB_DNNL=0), rows < 2
 * or oneDNN refused, and the caller runs its SGEMM path. */
int apb_dnnl_linear_bf16(float *out, int ld_out, const float *in, int ld_in, const uint16_t *w, size_t ld_w,
                         int rows, int n_in, int n_out, int accumulate);
int apb_dnnl_enabled(void);
/* C (M x N, ldc) (+)= A (M x K, lda) op(B), bf16 inputs, fp32 accumulation and output: B holds
 * N rows of K (ldb; b_nk = 1, C = A B^T) or K rows of N (b_nk = 0). -1 as above. */
int apb_dnnl_gemm_bf16(int M, int N, int K, const uint16_t *A, size_t lda, const uint16_t *B, size_t ldb,
                       int b_nk, float *C, size_t ldc, int accumulate);
/* Rotate-half RoPE on one row of n_heads heads: x[h*d + i], x[h*d + i + d/2]. */
void apb_rope_row_f32(float *x, int n_heads, int head_dim, const float *cos_t, const float *sin_t);
void apb_rope_table(float *cos_t, float *sin_t, const float *inv_freq, int half, int pos);
/* mRoPE table: pair i rotates by pos3[c] with c = 0 for i < section[0], 1 for i < section[0] +
 * section[1], 2 otherwise (Qwen2-VL apply_multimodal_rotary_pos_emb). */
void apb_mrope_table(float *cos_t, float *sin_t, const float *inv_freq, int half, const int32_t pos3[3],
                     const int section[3]);
/* o (n_q x H*d), lse (n_q x H); see apb_insert_attention for the visibility rule. */
struct _apb_attn_seg_cpu {
    const float *k, *v; /* fp32, or bf16 (uint16_t) when bf16 is set */
    int ld;            /* row stride of k and v (elements) */
    int bf16;          /* K/V stored as bf16 (the KV cache of finished layers, APB_PREC_BF16) */
    int len, coord0, causal, min_q_coord;
};
void apb_attention_f32(const float *q, int ld_q, int n_q, int q_coord0,
                       const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                       int n_kv_heads, int head_dim, float *o, int ld_o, float *lse, int ld_lse);
/* Same for KV heads [kvh0, kvh0 + n_kvh) and their query heads only (Ulysses' head split). */
void apb_attention_heads_f32(const float *q, int ld_q, int n_q, int q_coord0,
                             const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                             int n_kv_heads, int kvh0, int n_kvh, int head_dim, float *o, int ld_o,
                             float *lse, int ld_lse);
/* The same with the chunk products in bf16 through oneDNN (--precision bf16 prefill tiles; the
 * fp32 kernel when oneDNN is off or refuses). */
void apb_attention_heads_bf16mm(const float *q, int ld_q, int n_q, int q_coord0,
                                const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                                int n_kv_heads, int kvh0, int n_kvh, int head_dim, float *o, int ld_o,
                                float *lse, int ld_lse);
/* Query-key pairs of one segment visible to query rows [q_coord0, q_coord0 + n_q) under the rule of
 * apb_insert_attention (a causal segment's masked pairs are not counted: the kernels skip them).
 * The attention task's FLOPs are 4 x head_dim x query heads x these pairs, summed over segments. */
double apb_attn_seg_pairs(int q_coord0, int n_q, int len, int coord0, int causal, int min_q_coord);
/* One query row: o (H*d) and lse (H) over the visible keys of segs (the same rules). */
void apb_attention_row_f32(const float *q, int q_coord, const struct _apb_attn_seg_cpu *segs,
                           int n_segs, int n_heads, int n_kv_heads, int d, float *o, float *lse);
/* Returns the sampled token id; u is a uniform number in [0, 1). */
int apb_sample_f32(const float *logits, int n, float temperature, float top_p, double u);
uint64_t apb_rng_u64(uint64_t seed, uint64_t counter);

/* Top-`select` of max-pooled (kernel 5) scores with rows j < exclude_first excluded; writes the
 * chosen row indices in ascending order into idx. pooled: n floats of scratch, order: n ints. */
void apb_select_topk(const float *scores, int n, int exclude_first, int select, int *idx,
                     float *pooled, int *order);
/* Merges n partial rows: o_i (H*d), lse_i (H) per row. */
void apb_lse_merge_row(float *o, float *lse_out, const float *const *o_i, const float *const *lse_i,
                       int n, int n_heads, int head_dim);

#endif
