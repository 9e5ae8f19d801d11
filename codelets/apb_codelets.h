/* SPDX-License-Identifier: MIT */
/**
 * @brief One insert wrapper per op (defined in codelets/codelet_<op>.c), the only way graph/ puts
 * work into StarPU. Every wrapper sets the task name (`<op>-<layer>-h<host>`, op from the op table
 * common/apb_ops.h), priority and flop count.
 */
#ifndef APB_CODELETS_H
#define APB_CODELETS_H

#include <stdint.h>

#include "runtime/apb_runtime.h"

/* A tile like apb_tile_new, zero-filled by a task (for buffers that are first read-modify-written, like KV caches). */
apb_handle apb_tile_new_zeroed(int rows, int cols, size_t elemsize);

/* ------------------------------------------------------------------ tasks (apb_task_tag: runtime/apb_runtime.h) */

/* x (n x dim) = embed[ids[i]] ; ids is an int32 tile (n x 1). */
int apb_insert_embed(apb_handle ids, apb_handle embed, apb_handle x, apb_task_tag tag);
/* out = x / rms(x) * w (rows independently). */
int apb_insert_rmsnorm(apb_handle x, apb_handle w, apb_handle out, float eps, apb_task_tag tag);
/* q = xn Wq^T (+bq), k = xn Wk^T (+bk), v = xn Wv^T (+bv); biases may be NULL. */
int apb_insert_qkv(apb_handle xn, apb_handle wq, apb_handle wk, apb_handle wv,
                   apb_handle bq, apb_handle bk, apb_handle bv,
                   apb_handle q, apb_handle k, apb_handle v, apb_task_tag tag);
/* Rotate-half RoPE in place on q (n x H*d) and k (n x Hk*d); row i has position pos0 + i.
 * inv_freq is a (1 x d/2) fp32 tile. k may be NULL. */
int apb_insert_rope(apb_handle q, apb_handle k, apb_handle inv_freq, int pos0, int head_dim,
                    apb_task_tag tag);
/* mRoPE (Qwen2-VL / Qwen2.5-VL): pos is a (rows of q) x 3 int32 tile of (temporal, height, width)
 * ids; section (in frequency pairs, summing to head_dim / 2) assigns pairs to the three ids. */
int apb_insert_rope_m(apb_handle q, apb_handle k, apb_handle inv_freq, apb_handle pos, const int section[3],
                      int head_dim, apb_task_tag tag);
/* out (+)= in W^T (+ bias): accumulate != 0 adds into out (residual). bias may be NULL. */
int apb_insert_linear(apb_handle in, apb_handle w, apb_handle bias, apb_handle out, int accumulate,
                      apb_task_tag tag);
/* x += down(silu(gate(xn)) * up(xn)). */
int apb_insert_mlp(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                   apb_handle x, apb_task_tag tag);
/* logits (n x vocab) = rmsnorm(x[row0 .. row0+n)) lm_head^T. */
int apb_insert_logits(apb_handle x, int row0, int n, apb_handle norm_w, apb_handle lm_head,
                      apb_handle logits, float eps, apb_task_tag tag);
/* token (1 x 1 int32) = sample(logits row `row`): greedy when temperature <= 0, else
 * temperature + top-p (nucleus) with a counter-based RNG (seed, step) so runs are reproducible. */
int apb_insert_sample(apb_handle logits, int row, apb_handle token, float temperature, float top_p,
                      uint64_t seed, uint64_t step, apb_task_tag tag);
/* Copies rows [0, n) of k and v into rows [dst_row, dst_row + n) of the cache tiles. */
int apb_insert_kv_append(apb_handle k, apb_handle v, apb_handle kc, apb_handle vc, int dst_row,
                         apb_task_tag tag);
/* k16, v16 (bf16 tiles, elemsize 2) = k, v rounded to bf16: the KV cache of a finished layer,
 * kept at half the size (APB_PREC_BF16); attention reads bf16 K/V segments in place. */
int apb_insert_kv_compact(apb_handle k, apb_handle v, apb_handle k16, apb_handle v16, apb_task_tag tag);
/* The same into rows [row0, row0 + rows(k)) of taller k16, v16: the tiles of a finished layer
 * compacted into one contiguous cache, slices submitted in row order from row 0 (row0 = 0 writes
 * the destination (W); a later slice keeps the rows written before (RW)). */
int apb_insert_kv_compact_at(apb_handle k, apb_handle v, apb_handle k16, apb_handle v16, int row0,
                             apb_task_tag tag);

/* Attention over a list of KV segments. Query row i has coordinate q_coord0 + i. Key j of a
 * segment (row row0 + j of its K and V tiles) has coordinate coord0 + j. A key is visible to a query row iff
 *   q_coord >= min_q_coord  and  (!causal or coord0 + j <= q_coord)   and j < len.
 * This expresses full causal attention (one coordinate system), APB (passing segments are
 * non-causal with min_q_coord = anchor length, so anchor rows skip them), Star, ring and
 * the non-causal merge-decode of non-last hosts. Writes o (n x H*d) and lse (n x H), the
 * natural log-sum-exp of the scaled scores; rows that see no key get o = 0, lse = -inf. */
typedef struct apb_attn_seg {
    apb_handle k, v;       /* (rows >= len) x (Hk*d) */
    int len;
    int coord0;
    int causal;
    int min_q_coord;
    int row0;              /* the segment is rows [row0, row0 + len) of k and v */
} apb_attn_seg;

int apb_insert_attention(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                         int n_heads, int n_kv_heads, int head_dim, apb_handle o, apb_handle lse,
                         apb_task_tag tag);

/* Same for KV heads [kvh0, kvh0 + n_kvh) and their query heads only; o and lse are then
 * read-written (other heads' columns kept), so several head groups can fill one tile (Ulysses). */
int apb_insert_attention_heads(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                               int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                               apb_handle o, apb_handle lse, apb_task_tag tag);

/* One task over n_qt query tiles whose rows follow each other (tile i + 1 starts where tile i
 * ends, the first at q_coord0), o[i] and lse[i] per tile: on a GPU with cuDNN one fused call over
 * all the rows (one large call runs at cuDNN's best rate; several tile-sized calls do not), on
 * CPUs tile after tile. */
int apb_insert_attention_tiles(const apb_handle *q, int n_qt, int q_coord0, const apb_attn_seg *segs,
                               int n_segs, int n_heads, int n_kv_heads, int head_dim, const apb_handle *o,
                               const apb_handle *lse, apb_task_tag tag);

/* ------------------------------------------------------------------ APB / Spava ops */
/* qbar (1 x Hk*d) = mean of q rows [row0, row0+n) over rows and over the G query heads of each
 * KV group: the query-aware selection vector (post-RoPE question queries). */
int apb_insert_qmean(apb_handle q, int row0, int n, int n_kv_heads, int head_dim, apb_handle qbar,
                     apb_task_tag tag);
/* Same over rows [row0[t], row0[t] + n[t]) of several tiles (at most 16). */
int apb_insert_qmean_tiles(const apb_handle *q, const int *row0, const int *n, int n_tiles,
                           int n_kv_heads, int head_dim, apb_handle qbar, apb_task_tag tag);
/* Query-aware compression of a host's block given as tiles k[i], v[i] (rows concatenate, in order):
 * score[j] = <k_j, qbar> per KV head (fp32, no scaling), max-pool (kernel 5, stride 1, pad 2),
 * rows j < exclude_first get -inf, top-`select` per KV head (ties: lower index), selected rows
 * kept in sequence order. ck, cv (select x Hk*d) receive the selected post-RoPE K and V. */
int apb_insert_select(apb_handle qbar, const apb_handle *k, const apb_handle *v, int n_tiles,
                      int exclude_first, int select, int head_dim, apb_handle ck, apb_handle cv,
                      apb_task_tag tag);
/* Same selection from precomputed per-token scores (rows x Hk per tile), e.g. Locret's retaining
 * heads (apb_insert_retain_score). */
int apb_insert_select_scored(const apb_handle *scores, const apb_handle *k, const apb_handle *v,
                             int n_tiles, int exclude_first, int select, int head_dim, apb_handle ck,
                             apb_handle cv, apb_task_tag tag);
/* Locret retaining heads: scores (rows x Hk) = fc2(silu(fc1(cat(q, k, v)))) on PRE-RoPE q, k, v
 * (fc1: (hidden x (H + 2 Hk) d), fc2: (Hk x hidden), no biases). */
int apb_insert_retain_score(apb_handle q, apb_handle k, apb_handle v, apb_handle fc1, apb_handle fc2,
                            apb_handle scores, apb_task_tag tag);

/* Exact merge of partial attention results over disjoint key sets:
 * lse = log sum_i exp(lse_i), o = sum_i exp(lse_i - lse) o_i. lse_out may be NULL. */
/* NCCL allgather of compressed blocks (codelets/codelet_allgather.c): GPU gpu's task packs its n
 * local blocks ck/cv (K x cols each) into rows slot[i] K of gk/gv ((per_gpu x G x K) x cols) and
 * gathers every GPU's slots; runs on the CUDA worker of NCCL rank gpu; `order` (RW, may be NULL)
 * and deps (R) only order it. -ENODEV without CUDA+NCCL. */
int apb_insert_allgather_nccl(const apb_handle *ck, const apb_handle *cv, const int *slot, int n,
                              int gpu, int per_gpu, apb_handle gk, apb_handle gv, apb_handle order,
                              const apb_handle *deps, int ndeps, apb_task_tag tag);
int apb_insert_lse_merge(const apb_handle *o, const apb_handle *lse, int n, int head_dim,
                         apb_handle o_out, apb_handle lse_out, apb_task_tag tag);

/* ------------------------------------------------------------------ fused few-row layer steps */
/* The handles one layer's steps read (codelets/codelet_layer.c): the model's layer weights and
 * the RoPE frequencies. bq/bk/bv may be NULL (no QKV bias). */
typedef struct apb_layer_w {
    apb_handle attn_norm, wq, wk, wv, bq, bk, bv, wo, mlp_norm, w_gate, w_up, w_down, inv_freq;
} apb_layer_w;
/* layer_pre: q (rows x H d) = RoPE(norm(x) Wq^T + bq) at positions pos0..; k, v likewise,
 * appended to the fp32 decode cache kd, vd at rows append_row... x is only read. */
int apb_insert_layer_pre(apb_handle x, const apb_layer_w *w, apb_handle q, apb_handle kd, apb_handle vd,
                         int pos0, int append_row, int n_heads, int n_kv_heads, int head_dim, float eps,
                         apb_task_tag tag);
/* layer_post: x += o Wo^T, then x += MLP(norm(x)). */
int apb_insert_layer_post(apb_handle o, const apb_layer_w *w, apb_handle x, int n_heads, int n_kv_heads,
                          int head_dim, float eps, apb_task_tag tag);
/* Most KV segments one layer task takes, its decode cache included (the GPU kernel's parameter
 * block holds the list). */
#define APB_LAYER_MAX_SEGS 256
/* layer: layer_pre, attention of q (coordinates q_coord0..) over segs and the decode cache rows
 * [0, append_row + rows) (causal, coordinates dec_coord0..), layer_post; one task. */
int apb_insert_layer(apb_handle x, const apb_layer_w *w, apb_handle kd, apb_handle vd, int pos0,
                     int append_row, int q_coord0, int dec_coord0, const apb_attn_seg *segs, int n_segs,
                     int n_heads, int n_kv_heads, int head_dim, float eps, apb_task_tag tag);

#endif
