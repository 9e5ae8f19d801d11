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

/* Encodes UTF-8 text (invalid UTF-8: APB_E_FORMAT naming the byte offset, as `tokenizers` only
 * takes str). Added/special tokens appearing literally in the text are matched first (like
 * `tokenizers`). add_special != 0 applies the post-processor template (BOS...).
 * *ids is malloc'd (also when *n_ids is 0). Result equals tokenizers'
 * Tokenizer.encode(text, add_special_tokens=...).ids (NFC normalizers excepted: taken as no-ops). */
int apb_tokenizer_encode(const apb_tokenizer *t, const char *text, size_t len, int add_special,
                         int32_t **ids, size_t *n_ids, apb_err *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string (skip_special: drop special tokens).
 * Unknown ids are skipped; invalid UTF-8 (a partial character) becomes U+FFFD, as in `tokenizers`.
 * NULL when out of memory. */
char *apb_tokenizer_decode(const apb_tokenizer *t, const int32_t *ids, size_t n, int skip_special);
/* Same, with the length in bytes in *len: the text may hold U+0000 (the token of byte 0). */
char *apb_tokenizer_decode_len(const apb_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                               size_t *len);

int apb_tokenizer_vocab_size(const apb_tokenizer *t);      /* max id + 1 */
int apb_tokenizer_token_id(const apb_tokenizer *t, const char *token); /* -1 if absent */
int apb_tokenizer_is_special(const apb_tokenizer *t, int32_t id);

#endif
