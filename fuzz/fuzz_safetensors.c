/* SPDX-License-Identifier: MIT */
/** @brief libFuzzer target: safetensors header/data validation on arbitrary bytes. */
#include <stdint.h>
#include <string.h>

#include "models/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apb_st_set *s = NULL;
    apb_err err = {0};
    if (apb_st_parse(data, size, "fuzz", &s, &err) == APB_OK) {
        /* every accepted tensor must lie inside the buffer */
        for (size_t i = 0; i < apb_st_count(s); i++) {
            const apb_st_tensor *t = apb_st_at(s, i);
            const uint8_t *p = t->data;
            if (t->nbytes && (p < data || p + t->nbytes > data + size))
                __builtin_trap();
            volatile uint8_t sink = t->nbytes ? p[t->nbytes - 1] : 0;
            (void)sink;
            if (apb_st_find(s, t->name) == NULL)
                __builtin_trap();
        }
        apb_st_close(s);
    }
    return 0;
}
