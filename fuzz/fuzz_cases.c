/* SPDX-License-Identifier: MIT */
/** @brief libFuzzer target: apb_run --cases JSONL files (apps/cases.c) on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cases.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    struct apb_case *cs = NULL;
    int n = -1;
    apb_err err = {0};
    if (apb_cases_parse_all(buf, size, &cs, &n, &err) == APB_OK) {
        /* accepted cases hold what apb_run relies on */
        if (n < 1)
            __builtin_trap();
        for (int i = 0; i < n; i++) {
            if (!cs[i].id || !cs[i].context[0] || !cs[i].question[0] || cs[i].max_new < -1 ||
                cs[i].line < 1 || (i && cs[i].line <= cs[i - 1].line))
                __builtin_trap();
            for (int j = 0; j < i; j++) /* ids are unique */
                if (!strcmp(cs[i].id, cs[j].id))
                    __builtin_trap();
        }
        apb_cases_free(cs, n);
    } else if (!err.msg[0] || cs || n != -1) {
        __builtin_trap(); /* every error carries a message and returns nothing */
    }
    free(buf);
    return 0;
}
