/* SPDX-License-Identifier: MIT */
/** @brief bf16 <-> fp32 on the CPU: the one rounding (nearest even, NaN kept NaN) used for bf16
 * weight copies and the bf16 KV cache, and the exact widening used by the CPU codelets. */
#ifndef APB_BF16_H
#define APB_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t apb_bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN */
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float apb_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
