/* SPDX-License-Identifier: MIT */
/** @brief Shared helpers for the JSON readers (config.json, tokenizer.json, safetensors headers). */
#ifndef APB_JSON_H
#define APB_JSON_H

#include <jansson.h>

/* "an object", "an integer", ... for error messages. */
const char *apb_json_type_name(const json_t *j);

#endif
