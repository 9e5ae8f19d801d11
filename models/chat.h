/* SPDX-License-Identifier: MIT */
/** @brief Chat prompt formats (ChatML for SmolLM2/Qwen2, Llama-3 headers), chosen by the vocabulary. */
#ifndef APB_CHAT_H
#define APB_CHAT_H

#include "models/tokenizer.h"

/* Wraps a user message in the model's chat format with the assistant turn opened.
 * Returns a malloc'd string, or NULL with err set when the vocabulary has no known chat tokens.
 * (tokenizer_config.json's Jinja chat_template is not interpreted: the two formats below cover the
 * supported families; see docs/DESIGN.md.) */
char *apb_chat_format(const apb_tokenizer *tok, const char *system, const char *user, apb_err *err);

#endif
