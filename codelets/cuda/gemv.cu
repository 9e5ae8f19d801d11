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

/* Dot products of W's row wr (K bf16) with RB input rows: lane-strided 16-byte loads, fp32
 * accumulation into acc (not yet reduced over the warp). */
template <int RB, bool IN16>
static __device__ __forceinline__ void apb_gemv_dot(const uint16_t *__restrict__ wr, const void *__restrict__ in,
                                                    int ld_in, int K, int lane, float *acc)
{
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
    for (int r = 0; r < RB; r++)
        acc[r] = apb_warp_sum(acc[r]);
}

static __device__ __forceinline__ void apb_gemv_store(void *out, int ld_out, int out_bf16, int r, int n, float v,
                                                      float beta)
{
    if (out_bf16) {
        uint16_t *o = (uint16_t *)out + (size_t)r * ld_out + n;
        *o = apb_f32_to_bf16(beta != 0.f ? v + beta * apb_bf16_to_f32(*o) : v);
    } else {
        float *o = (float *)out + (size_t)r * ld_out + n;
        *o = beta != 0.f ? v + beta * *o : v;
    }
}

/* Up to APB_GEMV_PARTS products of one input in one launch (q, k and v of a decode step): warp
 * n of the grid owns column n of the concatenated outputs. */
template <int RB, bool IN16>
__global__ void __launch_bounds__(32 * APB_GEMV_WARPS)
apb_k_gemv_bf16(apb_gemv_parts P, const void *__restrict__ in, int ld_in, int K)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n = blockIdx.x * APB_GEMV_WARPS + warp;
    const uint16_t *w = nullptr;
    void *out = nullptr;
    int ld_out = 0;
    /* the part of column n, with constant indices only (a dynamic index would copy P to local memory) */
#pragma unroll
    for (int i = 0; i < APB_GEMV_PARTS; i++) {
        if (!w && i < P.np) {
            if (n < P.n[i])
                w = P.w[i], out = P.out[i], ld_out = P.ld_out[i];
            else
                n -= P.n[i];
        }
    }
    if (!w)
        return;
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; r++)
        acc[r] = 0.f;
    apb_gemv_dot<RB, IN16>(w + (size_t)n * K, in, ld_in, K, lane, acc);
    if (lane == 0)
#pragma unroll
        for (int r = 0; r < RB; r++)
            apb_gemv_store(out, ld_out, P.out_bf16, r, n, acc[r], P.beta);
}

/* h = silu(in W_gate^T) * (in W_up^T), column n by warp n: both weight rows streamed together,
 * the two products rounded to the output type first, as the separate gate, up and swiglu
 * kernels do (so the fused step gives the same bits). */
template <int RB, bool IN16>
__global__ void __launch_bounds__(32 * APB_GEMV_WARPS)
apb_k_gemv_swiglu(void *__restrict__ h, int ld_h, int h_bf16, const void *__restrict__ in, int ld_in,
                  const uint16_t *__restrict__ wg, const uint16_t *__restrict__ wu, int K, int N)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * APB_GEMV_WARPS + warp;
    if (n >= N)
        return;
    float g[RB], u[RB];
#pragma unroll
    for (int r = 0; r < RB; r++)
        g[r] = u[r] = 0.f;
    apb_gemv_dot<RB, IN16>(wg + (size_t)n * K, in, ld_in, K, lane, g);
    apb_gemv_dot<RB, IN16>(wu + (size_t)n * K, in, ld_in, K, lane, u);
    if (lane == 0)
#pragma unroll
        for (int r = 0; r < RB; r++) {
            float x = g[r], y = u[r];
            if (h_bf16) {
                x = apb_bf16_to_f32(apb_f32_to_bf16(x));
                y = apb_bf16_to_f32(apb_f32_to_bf16(y));
            }
            apb_gemv_store(h, ld_h, h_bf16, r, n, x / (1.0f + __expf(-x)) * y, 0.f);
        }
}

#define APB_GEMV_ROWS_SWITCH(rows, KERNEL, IN16, ...)                                                    \
    switch (rows) {                                                                                   \
    case 1: KERNEL<1, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 2: KERNEL<2, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 3: KERNEL<3, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 4: KERNEL<4, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 5: KERNEL<5, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 6: KERNEL<6, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    case 7: KERNEL<7, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                   \
    default: KERNEL<8, IN16><<<g, 32 * APB_GEMV_WARPS, 0, s>>>(__VA_ARGS__); break;                  \
    }

static bool apb_gemv_shape_ok(int rows, int K, const void *in, int ld_in, bool in16)
{
    return rows >= 1 && rows <= APB_GEMV_MAX_ROWS && K % 8 == 0 && !((uintptr_t)in & 15u) &&
           ld_in % (in16 ? 8 : 4) == 0;
}

extern "C" int apb_cuda_gemv_parts(const apb_gemv_parts *P, const void *in, int ld_in, int in_elem, int rows,
                                   int K, cudaStream_t s)
{
    const bool in16 = in_elem == 2;
    int N = 0;
    if (P->np < 1 || P->np > APB_GEMV_PARTS || !apb_gemv_shape_ok(rows, K, in, ld_in, in16))
        return 1; /* not this kernel's shape: the caller runs cuBLAS */
    for (int p = 0; p < P->np; p++) {
        if ((uintptr_t)P->w[p] & 15u)
            return 1;
        N += P->n[p];
    }
    dim3 g((unsigned)((N + APB_GEMV_WARPS - 1) / APB_GEMV_WARPS));
    if (in16) {
        APB_GEMV_ROWS_SWITCH(rows, apb_k_gemv_bf16, true, *P, in, ld_in, K)
    } else {
        APB_GEMV_ROWS_SWITCH(rows, apb_k_gemv_bf16, false, *P, in, ld_in, K)
    }
    return cudaPeekAtLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int apb_cuda_gemv_bf16(void *out, int ld_out, int out_bf16, const void *in, int ld_in,
                                  int in_elem, const uint16_t *w, int rows, int K, int N, float beta,
                                  cudaStream_t s)
{
    apb_gemv_parts P = {};
    P.out[0] = out, P.ld_out[0] = ld_out, P.w[0] = w, P.n[0] = N;
    P.np = 1, P.out_bf16 = out_bf16, P.beta = beta;
    return apb_cuda_gemv_parts(&P, in, ld_in, in_elem, rows, K, s);
}

extern "C" int apb_cuda_gemv_swiglu(void *h, int ld_h, int h_bf16, const void *in, int ld_in, int in_elem,
                                    const uint16_t *wg, const uint16_t *wu, int rows, int K, int N,
                                    cudaStream_t s)
{
    const bool in16 = in_elem == 2;
    if (!apb_gemv_shape_ok(rows, K, in, ld_in, in16) || ((uintptr_t)wg & 15u) || ((uintptr_t)wu & 15u))
        return 1;
    dim3 g((unsigned)((N + APB_GEMV_WARPS - 1) / APB_GEMV_WARPS));
    if (in16) {
        APB_GEMV_ROWS_SWITCH(rows, apb_k_gemv_swiglu, true, h, ld_h, h_bf16, in, ld_in, wg, wu, K, N)
    } else {
        APB_GEMV_ROWS_SWITCH(rows, apb_k_gemv_swiglu, false, h, ld_h, h_bf16, in, ld_in, wg, wu, K, N)
    }
    return cudaPeekAtLastError() == cudaSuccess ? 0 : -1;
}
