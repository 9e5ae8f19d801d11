/* SPDX-License-Identifier: MIT */
/**
 * @brief Products with few activation rows and bf16 weights (decode steps, the question pass, the
 * LM head of one row): out (rows x N) = in (rows x K) W^T + beta out, W bf16 (N x K, row-major).
 *
 * cuBLAS runs these as GEMMs after a bf16 copy of the activations and reaches a fraction of the
 * memory bandwidth at M = 1; here one warp owns one output column n, streams W's row n once with
 * 16-byte loads (8 bf16 per lane, K / 256 iterations, 4 in flight) and dots it with every input
 * row (read straight from the fp32 or bf16 tile; it stays in L1/L2), fp32 accumulation, then a
 * warp reduction. The whole GPU reads the weights once: the bandwidth floor of a decode step.
 */
#include "codelets/cuda/common.cuh"

enum { APB_GEMV_WARPS = 8 };

template <int RB, bool IN16>
__global__ void __launch_bounds__(32 * APB_GEMV_WARPS)
apb_k_gemv_bf16(void *__restrict__ out, int ld_out, int out_bf16, const void *__restrict__ in,
                int ld_in, const uint16_t *__restrict__ w, int K, int N, float beta)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * APB_GEMV_WARPS + warp;
    if (n >= N)
        return;
    const uint16_t *wr = w + (size_t)n * K;
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; r++)
        acc[r] = 0.f;
#pragma unroll 4
    for (int c = lane * 8; c < K; c += 256) {
        const uint4 u = __ldg((const uint4 *)(wr + c));
        const uint32_t ww[4] = {u.x, u.y, u.z, u.w};
        float wf[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            wf[2 * i] = __uint_as_float(ww[i] << 16);
            wf[2 * i + 1] = __uint_as_float(ww[i] & 0xffff0000u);
        }
#pragma unroll
        for (int r = 0; r < RB; r++) {
            float xf[8];
            if (IN16) {
                const uint4 xv = *(const uint4 *)((const uint16_t *)in + (size_t)r * ld_in + c);
                const uint32_t xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    xf[2 * i] = __uint_as_float(xx[i] << 16);
                    xf[2 * i + 1] = __uint_as_float(xx[i] & 0xffff0000u);
                }
            } else {
                const float *xp = (const float *)in + (size_t)r * ld_in + c;
                const float4 a = *(const float4 *)xp, b = *(const float4 *)(xp + 4);
                xf[0] = a.x, xf[1] = a.y, xf[2] = a.z, xf[3] = a.w;
                xf[4] = b.x, xf[5] = b.y, xf[6] = b.z, xf[7] = b.w;
            }
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[r] += xf[i] * wf[i];
        }
    }
#pragma unroll
    for (int r = 0; r < RB; r++) {
        const float v = apb_warp_sum(acc[r]);
        if (lane == 0) {
            if (out_bf16) {
                uint16_t *o = (uint16_t *)out + (size_t)r * ld_out + n;
                *o = apb_f32_to_bf16(beta != 0.f ? v + beta * apb_bf16_to_f32(*o) : v);
            } else {
                float *o = (float *)out + (size_t)r * ld_out + n;
                *o = beta != 0.f ? v + beta * *o : v;
            }
        }
    }
}

template <bool IN16>
static void apb_gemv_launch(int rows, dim3 g, cudaStream_t s, void *out, int ld_out, int out_bf16,
                            const void *in, int ld_in, const uint16_t *w, int K, int N, float beta)
{
    const int th = 32 * APB_GEMV_WARPS;
    switch (rows) {
    case 1: apb_k_gemv_bf16<1, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 2: apb_k_gemv_bf16<2, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 3: apb_k_gemv_bf16<3, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 4: apb_k_gemv_bf16<4, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 5: apb_k_gemv_bf16<5, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 6: apb_k_gemv_bf16<6, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    case 7: apb_k_gemv_bf16<7, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    default: apb_k_gemv_bf16<8, IN16><<<g, th, 0, s>>>(out, ld_out, out_bf16, in, ld_in, w, K, N, beta); break;
    }
}

extern "C" int apb_cuda_gemv_bf16(void *out, int ld_out, int out_bf16, const void *in, int ld_in,
                                  int in_elem, const uint16_t *w, int rows, int K, int N, float beta,
                                  cudaStream_t s)
{
    const bool in16 = in_elem == 2;
    if (rows < 1 || rows > APB_GEMV_MAX_ROWS || K % 8 || ((uintptr_t)w & 15u) ||
        ((uintptr_t)in & 15u) || ld_in % (in16 ? 8 : 4))
        return 1; /* not this kernel's shape: the caller runs cuBLAS */
    dim3 g((unsigned)((N + APB_GEMV_WARPS - 1) / APB_GEMV_WARPS));
    if (in16)
        apb_gemv_launch<true>(rows, g, s, out, ld_out, out_bf16, in, ld_in, w, K, N, beta);
    else
        apb_gemv_launch<false>(rows, g, s, out, ld_out, out_bf16, in, ld_in, w, K, N, beta);
    return cudaPeekAtLastError() == cudaSuccess ? 0 : -1;
}
