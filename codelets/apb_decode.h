/* SPDX-License-Identifier: MIT */
/** @brief Decode steps on CPU workers: the big matrix-vector products (MLP, LM head) split into row
 * blocks, one task each, so that every core streams its share of the weights (a decode step is a
 * chain of one-row tasks: unsplit, one core works while the others idle). */
#ifndef APB_DECODE_H
#define APB_DECODE_H

#include "codelets/apb_codelets.h"

/* How many blocks a decode step's MLP and LM head are split into: the CPU workers (at most
 * APB_DECODE_MAX_SPLIT), or 1 (no split) when CUDA workers or several MPI ranks run the graph. */
#define APB_DECODE_MAX_SPLIT 8
int apb_decode_split(void);

/* z (1 x dim) = W_down[:, h0:h1] (silu(W_gate[h0:h1] xn) * W_up[h0:h1] xn): one block of the
 * MLP's hidden units; x += the sum of every block's z is the whole MLP (apb_insert_gather). */
int apb_insert_mlp_part(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                        apb_handle z, int h0, int h1, apb_task_tag tag);
/* part (1 x n) = rmsnorm(x[row]) lm_head[v0 : v0 + n]^T: one block of the vocabulary's logits. */
int apb_insert_logits_part(apb_handle x, int row, apb_handle norm_w, apb_handle lm_head,
                           apb_handle part, int v0, float eps, apb_task_tag tag);
/* Row `row` of out = xn w^T (+ bias), rotated by RoPE at position pos when inv_freq is given:
 * q, k and v of a decode step, k and v written straight into the decode cache (out RW then). */
int apb_insert_proj_row(apb_handle xn, apb_handle w, apb_handle bias, apb_handle inv_freq, int pos,
                        int head_dim, apb_handle out, int row, apb_task_tag tag);
/* z (1 x rows of w) = w[:, c0:c1] in[c0:c1]: one block of a linear layer's inputs; the blocks' z
 * summed (apb_insert_gather) make in w^T. */
int apb_insert_linear_part(apb_handle in, apb_handle w, apb_handle z, int c0, int c1, apb_task_tag tag);
/* sum: out += parts[0] + ... + parts[n - 1] (all 1 x cols of out); else out = the parts side by
 * side (their columns add up to out's). */
int apb_insert_gather(const apb_handle *parts, int n, apb_handle out, int sum, apb_task_tag tag);
/* The same, then xn = rmsnorm(out) * norm_w (one row): the next op's norm in the same task. */
int apb_insert_gather_norm(const apb_handle *parts, int n, apb_handle out, int sum,
                           apb_handle norm_w, apb_handle xn, float eps, apb_task_tag tag);

/* apb_insert_attention for one query row (1 x H*d) at coordinate q_coord, on a CPU worker: the
 * cache read once as whole rows (codelet_decode.c); same segments, visibility and outputs. */
int apb_insert_attention_row(apb_handle q, int q_coord, const apb_attn_seg *segs, int n_segs,
                             int n_heads, int n_kv_heads, int head_dim, apb_handle o, apb_handle lse,
                             apb_task_tag tag);

#endif
