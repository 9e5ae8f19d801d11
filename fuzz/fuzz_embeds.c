/* SPDX-License-Identifier: MIT */
/**
 * @brief libFuzzer target: `--embeds` files (models/embeds.c) on arbitrary bytes. The first byte
 * picks the model's hidden size (4, 8, 16 or 576) and whether it uses mRoPE; the rest is the file.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "models/embeds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int dims[4] = {4, 8, 16, 576};
    int dim = dims[data[0] & 3], mrope = (data[0] >> 2) & 1;
    apb_embeds e;
    apb_err err = {0};
    if (apb_embeds_parse(data + 1, size - 1, "fuzz", dim, mrope, 1 << 16, &e, &err) == APB_OK) {
        /* an accepted file: rows of dim finite values, ids in range, next_pos above every id */
        if (e.n < 1 || e.dim != dim)
            __builtin_trap();
        for (long long i = 0; i < (long long)e.n * dim; i++)
            if (!isfinite(e.x[i]))
                __builtin_trap();
        for (long long i = 0; i < 3LL * e.n; i++)
            if (e.pos[i] < 0 || e.pos[i] >= e.next_pos)
                __builtin_trap();
        apb_embeds_free(&e);
    } else if (!err.msg[0]) {
        __builtin_trap(); /* every refusal says why */
    }
    return 0;
}
