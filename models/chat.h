/* SPDX-License-Identifier: MIT */
/** @brief Chat prompt formats: the model's chat_template when it is a known form (models/chat.c),
 * else ChatML / Llama-3 headers chosen by the vocabulary. */
#ifndef APB_CHAT_H
#define APB_CHAT_H

#include "models/tokenizer.h"

/* Wraps a user message in ChatML or the Llama-3 header format, chosen by the vocabulary, with a
 * built-in system message when system is NULL and the assistant turn opened. The fallback of
 * apb_chat_render: returns a malloc'd string, or NULL with err set when the vocabulary has no
 * known chat tokens. */
char *apb_chat_format(const apb_tokenizer *tok, const char *system, const char *user, apb_err *err);

/* Renders tokenizer_config.json's chat_template for [system (if not NULL), user] with the
 * assistant turn opened, as transformers' apply_chat_template(add_generation_prompt=True) does,
 * when the template is one of the known forms (SmolLM2/Qwen2 ChatML with its default system line,
 * plain ChatML, Llama-3, Llama-3.1/3.2/3.3; see models/chat.c). system = NULL takes the template's
 * own default. bos_token: the config's (NULL: "<|begin_of_text|>" where a form needs it).
 * Returns a malloc'd string, or NULL with err (APB_E_MODEL: not a known form). */
char *apb_chat_render(const char *tmpl, const char *bos_token, const char *system, const char *user,
                      apb_err *err);

/* DIR/tokenizer_config.json's chat_template (a string, or the entry named "default" of a list) and
 * bos_token, malloc'd; each NULL when absent (a missing file is not an error). */
int apb_chat_config_load(const char *dir, char **tmpl, char **bos, apb_err *err);

#endif
