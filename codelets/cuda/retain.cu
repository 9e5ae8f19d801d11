/* SPDX-License-Identifier: MIT */
/** @brief Glue kernels of the Locret retaining heads (the two GEMMs run on cuBLAS): concat, SiLU. */
#include "codelets/cuda/common.cuh"

__global__ void apb_k_concat3(float *x, const float *q, int ldq, int cq, const float *k, int ldk,
                              int ck, const float *v, int ldv, int cv, int rows)
{
    int in = cq + ck + cv;
    size_t n = (size_t)rows * in;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t r = e / in;
        int c = (int)(e % in);
        x[e] = c < cq ? q[r * ldq + c] : c < cq + ck ? k[r * ldk + c - cq] : v[r * ldv + c - cq - ck];
    }
}

extern "C" void apb_cuda_concat3(float *x, const float *q, int ldq, int cq, const float *k, int ldk,
                                 int ck, const float *v, int ldv, int cv, int rows, cudaStream_t s)
{
    size_t n = (size_t)rows * (cq + ck + cv);
    if (n)
        apb_k_concat3<<<apb_blocks(n, 256), 256, 0, s>>>(x, q, ldq, cq, k, ldk, ck, v, ldv, cv, rows);
}

__global__ void apb_k_silu(float *h, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        h[i] = h[i] / (1.0f + expf(-h[i]));
}

extern "C" void apb_cuda_silu(float *h, size_t n, cudaStream_t s)
{
    if (n)
        apb_k_silu<<<apb_blocks(n, 256), 256, 0, s>>>(h, n);
}
