/* SPDX-License-Identifier: MIT */
/**
 * @brief Rotate-half RoPE on the GPU, bit-compatible with the CPU codelet: one block per row builds
 * the row's cos/sin table in shared memory (angle pos * inv_freq in double, cos/sin in double,
 * rounded to fp32, like apb_rope_table), then rotates every head with separately rounded fp32
 * multiplies and adds (no FMA contraction, like the -std=c11 CPU build).
 */
#include "codelets/cuda/common.cuh"

__global__ void apb_k_rope(float *q, int ldq, int hq, float *k, int ldk, int hk,
                           const float *inv_freq, int half, int pos0)
{
    __shared__ float cs[512], sn[512]; /* head_dim <= 1024 is checked at insert */
    int row = blockIdx.x;
    double pos = (double)(pos0 + row);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double sd, cd;
        sincos(pos * (double)inv_freq[i], &sd, &cd);
        cs[i] = (float)cd;
        sn[i] = (float)sd;
    }
    __syncthreads();
    for (int m = 0; m < 2; m++) {
        float *x = m == 0 ? q + (size_t)row * ldq : (k ? k + (size_t)row * ldk : nullptr);
        int nh = m == 0 ? hq : hk;
        if (!x)
            continue;
#pragma unroll 4
        for (int t = threadIdx.x; t < nh * half; t += blockDim.x) {
            int h = t / half, i = t % half;
            float *xh = x + (size_t)h * 2 * half;
            float a = xh[i], b = xh[i + half];
            xh[i] = __fsub_rn(__fmul_rn(a, cs[i]), __fmul_rn(b, sn[i]));
            xh[i + half] = __fadd_rn(__fmul_rn(b, cs[i]), __fmul_rn(a, sn[i]));
        }
    }
}

extern "C" void apb_cuda_rope(float *q, int ldq, int hq, float *k, int ldk, int hk,
                              const float *inv_freq, int rows, int head_dim, int pos0, cudaStream_t s)
{
    if (rows > 0)
        apb_k_rope<<<rows, rows <= 32 ? 512 : 128, 0, s>>>(q, ldq, hq, k, ldk, hk, inv_freq, head_dim / 2, pos0);
}

/* mRoPE (Qwen2-VL): the same rotation, with pair i's angle taken from the row's id of i's section */
__global__ void apb_k_rope_m(float *q, int ldq, int hq, float *k, int ldk, int hk, const float *inv_freq,
                             const int32_t *pos, int ldp, int half, int s0, int s1)
{
    __shared__ float cs[512], sn[512];
    int row = blockIdx.x;
    const int32_t *p = pos + (size_t)row * ldp;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        int c = i < s0 ? 0 : i < s0 + s1 ? 1 : 2;
        double sd, cd;
        sincos((double)p[c] * (double)inv_freq[i], &sd, &cd);
        cs[i] = (float)cd;
        sn[i] = (float)sd;
    }
    __syncthreads();
    for (int m = 0; m < 2; m++) {
        float *x = m == 0 ? q + (size_t)row * ldq : (k ? k + (size_t)row * ldk : nullptr);
        int nh = m == 0 ? hq : hk;
        if (!x)
            continue;
#pragma unroll 4
        for (int t = threadIdx.x; t < nh * half; t += blockDim.x) {
            int h = t / half, i = t % half;
            float *xh = x + (size_t)h * 2 * half;
            float a = xh[i], b = xh[i + half];
            xh[i] = __fsub_rn(__fmul_rn(a, cs[i]), __fmul_rn(b, sn[i]));
            xh[i + half] = __fadd_rn(__fmul_rn(b, cs[i]), __fmul_rn(a, sn[i]));
        }
    }
}

extern "C" void apb_cuda_rope_m(float *q, int ldq, int hq, float *k, int ldk, int hk, const float *inv_freq,
                                const int32_t *pos, int ldp, int rows, int head_dim, int s0, int s1,
                                cudaStream_t s)
{
    if (rows > 0)
        apb_k_rope_m<<<rows, 128, 0, s>>>(q, ldq, hq, k, ldk, hk, inv_freq, pos, ldp, head_dim / 2, s0, s1);
}
