/* SPDX-License-Identifier: MIT */
/**
 * @brief Exact LSE merge of partial attention results on the GPU, one block per (row, head): thread
 * 0 computes the weights exactly like apb_lse_merge_row (max in fp32, sum of exp in double, weights
 * rounded to fp32, all -inf: o = 0 and lse = -inf), then the threads accumulate the columns in the
 * partials' order with separately rounded fp32 multiply-adds.
 */
#include "codelets/cuda/common.cuh"

template <typename TO>
__global__ void apb_k_lse_merge(apb_cuda_lse_in in, int n, int H, int d, TO *o, int ldo,
                                float *lse_out, int ld_lse)
{
    __shared__ float w[APB_CUDA_LSE_MAX];
    int r = blockIdx.x, h = blockIdx.y;
    if (threadIdx.x == 0) {
        float mx = -INFINITY;
        for (int i = 0; i < n; i++) {
            float l = in.lse[i][(size_t)r * in.ldl[i] + h];
            mx = l > mx ? l : mx;
        }
        if (mx == -INFINITY) { /* no partial saw a key */
            for (int i = 0; i < n; i++)
                w[i] = 0.0f;
            if (lse_out)
                lse_out[(size_t)r * ld_lse + h] = -INFINITY;
        } else {
            double sum = 0;
            for (int i = 0; i < n; i++)
                sum += exp((double)in.lse[i][(size_t)r * in.ldl[i] + h] - mx);
            double L = mx + log(sum);
            for (int i = 0; i < n; i++)
                w[i] = (float)exp((double)in.lse[i][(size_t)r * in.ldl[i] + h] - L);
            if (lse_out)
                lse_out[(size_t)r * ld_lse + h] = (float)L;
        }
    }
    __syncthreads();
    TO *oh = o + (size_t)r * ldo + (size_t)h * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < n; i++)
            if (w[i] != 0.0f)
                acc = __fadd_rn(acc, __fmul_rn(w[i], in.o[i][(size_t)r * in.ldo[i] + (size_t)h * d + c]));
        if constexpr (sizeof(TO) == 2)
            oh[c] = apb_f32_to_bf16(acc);
        else
            oh[c] = acc;
    }
}

extern "C" void apb_cuda_lse_merge(const apb_cuda_lse_in *in, int n, int rows, int n_heads,
                                   int head_dim, void *o, int ldo, int o_bf16, float *lse_out, int ld_lse,
                                   cudaStream_t s)
{
    if (rows <= 0 || n_heads <= 0)
        return;
    if (o_bf16) /* the merged row rounded to bf16 (nearest even) once */
        apb_k_lse_merge<uint16_t><<<dim3(rows, n_heads), 128, 0, s>>>(*in, n, n_heads, head_dim, (uint16_t *)o, ldo,
                                                                       lse_out, ld_lse);
    else
        apb_k_lse_merge<float><<<dim3(rows, n_heads), 128, 0, s>>>(*in, n, n_heads, head_dim, (float *)o, ldo,
                                                                    lse_out, ld_lse);
}
