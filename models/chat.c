/* SPDX-License-Identifier: MIT */
/** @brief Chat prompt formats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/chat.h"

static char *_apb_asprintf(const char *fmt, const char *a, const char *b)
{
    int n = snprintf(NULL, 0, fmt, a, b);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, a, b);
    return s;
}

char *apb_chat_format(const apb_tokenizer *tok, const char *system, const char *user, apb_err *err)
{
    if (apb_tokenizer_token_id(tok, "<|im_start|>") >= 0) {
        /* ChatML (SmolLM2, Qwen2) */
        if (!system)
            system = "You are a helpful AI assistant.";
        return _apb_asprintf("<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
                             "<|im_start|>assistant\n", system, user);
    }
    if (apb_tokenizer_token_id(tok, "<|start_header_id|>") >= 0) {
        /* Llama-3 instruct */
        if (!system)
            system = "You are a helpful assistant.";
        return _apb_asprintf("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n%s"
                             "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n", system, user);
    }
    apb_fail(err, APB_E_MODEL, "--chat: the tokenizer has neither ChatML (<|im_start|>) nor Llama-3 "
                               "(<|start_header_id|>) tokens");
    return NULL;
}
