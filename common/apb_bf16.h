/* SPDX-License-Identifier: MIT */
/** @brief bf16 <-> fp32 on the CPU: the one rounding (nearest even, NaN kept NaN) used for bf16
 * weight copies and the bf16 KV cache, and the exact widening used by the CPU codelets. */
#ifndef APB_BF16_H
#define APB_BF16_H

#include <stddef.h>
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

/* dst[i] = apb_bf16_from_f32(src[i]) for i < n, written branch-free so that the compiler
 * vectorizes it (the scalar call per element was a third of a bf16 attention task). */
static inline void apb_bf16_from_f32_n(uint16_t *restrict dst, const float *restrict src, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u >> 16) | 0x40u;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

static inline float apb_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* dst[i] = apb_bf16_to_f32(src[i]) for i < n (exact) */
static inline void apb_bf16_to_f32_n(float *restrict dst, const uint16_t *restrict src, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

#endif
