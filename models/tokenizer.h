/* SPDX-License-Identifier: MIT */
/** @brief Hugging Face tokenizer.json: byte-level BPE with the model's pre-tokenizer regex. */
#ifndef APB_TOKENIZER_H
#define APB_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/apb_error.h"

typedef struct apb_tokenizer apb_tokenizer;

int apb_tokenizer_load(const char *path, apb_tokenizer **out, apb_err *err);
/* Same from memory (fuzzing); `what` names the source in messages. */
int apb_tokenizer_parse(const char *json, size_t len, const char *what, apb_tokenizer **out, apb_err *err);
void apb_tokenizer_free(apb_tokenizer *t);

/* Encodes UTF-8 (or arbitrary bytes) text. Added/special tokens appearing literally in the text are
 * matched first (like `tokenizers`). add_special != 0 applies the post-processor template (BOS...).
 * *ids is malloc'd. Result equals tokenizers' Tokenizer.encode(text, add_special_tokens=...).ids */
int apb_tokenizer_encode(const apb_tokenizer *t, const char *text, size_t len, int add_special,
                         int32_t **ids, size_t *n_ids, apb_err *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string (skip_special: drop special tokens). */
char *apb_tokenizer_decode(const apb_tokenizer *t, const int32_t *ids, size_t n, int skip_special);

int apb_tokenizer_vocab_size(const apb_tokenizer *t);      /* max id + 1 */
int apb_tokenizer_token_id(const apb_tokenizer *t, const char *token); /* -1 if absent */
int apb_tokenizer_is_special(const apb_tokenizer *t, int32_t id);

#endif
