/* SPDX-License-Identifier: MIT */
/** @brief Device helpers shared by the .cu files: bf16 conversion, warp and block reductions. */
#ifndef APB_CUDA_COMMON_CUH
#define APB_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "codelets/cuda/apb_cuda.h"

static __device__ __forceinline__ float apb_bf16_to_f32(uint16_t b)
{
    return __uint_as_float((uint32_t)b << 16);
}

static __device__ __forceinline__ uint16_t apb_f32_to_bf16(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* The two bf16 values packed in a 32-bit word (low half first, the memory order), as fp32 */
static __device__ __forceinline__ float apb_bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float apb_bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

/* lo and hi rounded to bf16 and packed in a 32-bit word (lo in the low half) */
static __device__ __forceinline__ uint32_t apb_bf16_pack2(float lo, float hi)
{
    return (uint32_t)apb_f32_to_bf16(lo) | ((uint32_t)apb_f32_to_bf16(hi) << 16);
}

/* Loads element i of an fp32 (elem 4) or bf16 (elem 2) array as fp32. */
static __device__ __forceinline__ float apb_load_any(const void *p, size_t i, int elem)
{
    return elem == 2 ? apb_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static __device__ __forceinline__ float apb_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float apb_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. */
static __device__ __forceinline__ float apb_block_sum(float v)
{
    __shared__ float part[32];
    __syncthreads(); /* part[] may still be read by a previous call */
    v = apb_warp_sum(v);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0)
        part[w] = v;
    __syncthreads();
    v = l < nw ? part[l] : 0.0f;
    return apb_warp_sum(v);
}

/* Inclusive scan over the block in thread order (blockDim.x a multiple of 32, at most 1024);
 * *total gets the block's sum. Every thread of the block must call it. */
template <typename T> static __device__ __forceinline__ T apb_block_scan(T v, T *total)
{
    __shared__ T wsum[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        T t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o)
            v += t;
    }
    __syncthreads(); /* wsum may still be read by a previous call */
    if (lane == 31)
        wsum[w] = v;
    __syncthreads();
    if (w == 0) {
        T x = lane < nw ? wsum[lane] : T(0);
        for (int o = 1; o < 32; o <<= 1) {
            T t = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o)
                x += t;
        }
        if (lane < nw)
            wsum[lane] = x;
    }
    __syncthreads();
    *total = wsum[nw - 1];
    return v + (w > 0 ? wsum[w - 1] : T(0));
}

static inline unsigned apb_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 16u ? 65535u * 16u : (b ? b : 1));
}

#endif
