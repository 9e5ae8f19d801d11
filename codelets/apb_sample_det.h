/* SPDX-License-Identifier: MIT */
/**
 * @brief Sampling arithmetic shared by the CPU codelet and the CUDA kernel, written so both give
 * bit-identical results: only IEEE-754 +, -, *, / (no contraction: the C code is built with
 * -std=c11, which implies -ffp-contract=off; the device code uses the __d*_rn intrinsics), no libm.
 *
 * Token probabilities are p_i = exp_det((l_i - l_max) / T) in (0, 1], turned into integer weights
 * w_i = floor(p_i 2^40): all sums are exact integers, independent of summation order (vocab <= 2^23,
 * so sums stay below 2^63). Tokens whose p_i < 2^-40 (relative to the most likely token) get weight
 * 0 and are never sampled.
 */
#ifndef APB_SAMPLE_DET_H
#define APB_SAMPLE_DET_H

#include <stdint.h>

#ifdef __CUDACC__
#define APB_HD __host__ __device__ __forceinline__
#else
#define APB_HD static inline
#endif
#if defined(__CUDA_ARCH__)
#define APB_DADD(a, b) __dadd_rn((a), (b))
#define APB_DMUL(a, b) __dmul_rn((a), (b))
#define APB_DDIV(a, b) __ddiv_rn((a), (b))
#else
#define APB_DADD(a, b) ((a) + (b))
#define APB_DMUL(a, b) ((a) * (b))
#define APB_DDIV(a, b) ((a) / (b))
#endif

#define APB_SAMPLE_MAX_VOCAB (1 << 23)

/* exp(x) for x <= 0 (1 for x >= 0, 0 for NaN or x < -700), a few ulp accurate, deterministic. */
APB_HD double apb_exp_det(double x)
{
    if (x != x || x < -700.0)
        return 0.0;
    if (x >= 0.0)
        return 1.0;
    /* x = k ln2 + r, |r| <= ln2/2; ln2_hi has 11 trailing zero bits, so k * ln2_hi is exact */
    double k = APB_DADD(APB_DMUL(x, 1.4426950408889634), 0.5);
    k = (double)(int64_t)k - ((double)(int64_t)k > k ? 1.0 : 0.0); /* floor, k in [-1010, 1] */
    double r = APB_DADD(x, -APB_DMUL(k, 0x1.62e42fee00000p-1));
    r = APB_DADD(r, -APB_DMUL(k, 0x1.a39ef35793c76p-33));
    double e = 1.0; /* 1 + r(1 + r/2(1 + r/3(...(1 + r/13)))) */
    for (int m = 13; m >= 1; m--)
        e = APB_DADD(1.0, APB_DDIV(APB_DMUL(r, e), (double)m));
    union { uint64_t u; double d; } s;
    s.u = (uint64_t)((int64_t)k + 1023) << 52; /* 2^k, normal since k >= -1010 */
    return APB_DMUL(e, s.d);
}

/* p_i = exp((l_i - l_max) / T) rounded to float, as both paths compute it. */
APB_HD float apb_sample_prob(float l, float lmax, float temperature)
{
    return (float)apb_exp_det(APB_DDIV(APB_DADD((double)l, -(double)lmax), (double)temperature));
}

/* Integer weight of a probability: floor(p 2^40), 0 for p <= 0 or NaN. */
APB_HD uint64_t apb_sample_weight(float p)
{
    return p > 0.0f ? (uint64_t)APB_DMUL((double)p, 0x1p40) : 0;
}

/* The nucleus mass to reach: top_p of the total when 0 < top_p < 1, else all of it. */
APB_HD double apb_sample_keep(float top_p, uint64_t sum)
{
    return (top_p > 0.0f && top_p < 1.0f) ? APB_DMUL((double)top_p, (double)sum) : (double)sum;
}

/* floor(r53 2^-53 cum), exactly (r53 < 2^53: the uniform draw's 53 bits). */
APB_HD uint64_t apb_sample_target(uint64_t r53, uint64_t cum)
{
#if defined(__CUDA_ARCH__)
    return (__umul64hi(r53, cum) << 11) | ((r53 * cum) >> 53);
#else
    uint64_t lo = (r53 & 0xffffffffu) * (cum & 0xffffffffu);
    uint64_t m1 = (r53 >> 32) * (cum & 0xffffffffu), m2 = (r53 & 0xffffffffu) * (cum >> 32);
    uint64_t hi = (r53 >> 32) * (cum >> 32);
    uint64_t mid = (lo >> 32) + (m1 & 0xffffffffu) + (m2 & 0xffffffffu);
    hi += (m1 >> 32) + (m2 >> 32) + (mid >> 32);
    lo = (mid << 32) | (lo & 0xffffffffu);
    return (hi << 11) | (lo >> 53);
#endif
}

#endif
