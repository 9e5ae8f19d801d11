/* SPDX-License-Identifier: MIT */
/** @brief libFuzzer target: config.json parsing and the values derived from it. */
#include <stdint.h>
#include <stdlib.h>

#include "models/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apb_config c;
    apb_err err = {0};
    if (apb_config_parse((const char *)data, size, "fuzz", &c, &err) == APB_OK) {
        /* an accepted config must be internally consistent */
        if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads || c.head_dim <= 0 || c.head_dim % 2)
            __builtin_trap();
        double *f = malloc(sizeof(double) * (size_t)(c.head_dim / 2));
        if (f) {
            apb_config_rope_inv_freq(&c, f);
            free(f);
        }
        (void)apb_config_n_params(&c);
    }
    return 0;
}
