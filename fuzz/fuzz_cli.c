/* SPDX-License-Identifier: MIT */
/** @brief libFuzzer target: apb_run's option parser on arbitrary argv (NUL-separated arguments). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[66];
    int argc = 0;
    argv[argc++] = "apb_run";
    for (size_t i = 0; i < size && argc < 64; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;
    struct apb_run_opts o;
    apb_err err = {0};
    if (apb_run_parse_args(argc, argv, &o, &err) == APB_OK && !o.help && !o.version) {
        /* accepted options are within their documented ranges */
        if (o.max_new < 0 || o.hosts < 1 || o.hosts > 64 || o.tile < 1 || o.top_p < 0 || o.top_p > 1 ||
            o.temperature < 0 || (o.depth < 0 || o.depth > 1))
            __builtin_trap();
        /* on a 2-core machine, no more CPU workers than cores get past the machine check */
        if (apb_run_check_machine(&o, 2, &err) == APB_OK ? o.ncpus > 2 : !err.msg[0])
            __builtin_trap();
    } else if (err.code && !err.msg[0]) {
        __builtin_trap(); /* every error carries a message */
    }
    free(buf);
    return 0;
}
