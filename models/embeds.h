/* SPDX-License-Identifier: MIT */
/**
 * @brief Input-embedding files for `apb_run --embeds` (long-video LMM prefill from precomputed
 * visual embeddings): one safetensors file with
 *   embeds        (n, dim)  F32 | F16 | BF16   the rows the language model reads, in order
 *                                              (vision tower output and/or text embeddings)
 *   position_ids  (3, n) or (n,)  I32 | I64    mRoPE (temporal, height, width) ids per row, or 1-D
 *                                              ids (= three equal ids); optional: 0 .. n-1
 * Nothing else may be in the file. Every check names the file and what is wrong.
 */
#ifndef APB_EMBEDS_H
#define APB_EMBEDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/apb_error.h"

#define APB_EMBEDS_MAX_POS ((1 << 30) - 1) /* largest position id accepted */

typedef struct apb_embeds {
    int n, dim;
    float *x;       /* n x dim, fp32 */
    int32_t *pos;   /* n x 3: (t, h, w) per row; equal for 1-D ids */
    int pos3;       /* the file gave (3, n) ids */
    int next_pos;   /* max id + 1: where following text continues (Qwen2-VL get_rope_index) */
} apb_embeds;

/* Parses a whole file image in memory (the fuzzer's entry); `dim` is the model's hidden size,
 * `mrope` whether the model uses mRoPE (else 3-D ids must be equal per row), `max_rows` the limit
 * on n. On error *out is zeroed. */
int apb_embeds_parse(const uint8_t *buf, size_t len, const char *what, int dim, int mrope, long long max_rows,
                     apb_embeds *out, apb_err *err);
int apb_embeds_load(const char *path, int dim, int mrope, long long max_rows, apb_embeds *out, apb_err *err);
void apb_embeds_free(apb_embeds *e);

#endif
