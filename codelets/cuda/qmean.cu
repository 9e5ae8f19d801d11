/* SPDX-License-Identifier: MIT */
/**
 * @brief Question-mean vector on the GPU: one thread per output element (KV head g, column c) sums
 * in double over the tiles, rows and the G query heads of the group in the CPU's order (tile, row,
 * head), so the result is bit-identical to the CPU codelet's.
 */
#include "codelets/cuda/common.cuh"

__global__ void apb_k_qmean(apb_cuda_qmean_tiles t, int G, int n_kv_heads, int d, float *qbar)
{
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_kv_heads * d)
        return;
    int g = o / d, c = o % d;
    double s = 0;
    long rows = 0;
    for (int ti = 0; ti < t.n_tiles; ti++) {
        const float *q = t.q[ti];
        rows += t.n[ti];
        for (int i = t.row0[ti]; i < t.row0[ti] + t.n[ti]; i++)
            for (int h = g * G; h < (g + 1) * G; h++)
                s += q[(size_t)i * t.ld[ti] + (size_t)h * d + c];
    }
    qbar[o] = (float)(s / ((double)rows * G));
}

extern "C" void apb_cuda_qmean(const apb_cuda_qmean_tiles *t, int n_heads, int n_kv_heads,
                               int head_dim, float *qbar, cudaStream_t s)
{
    int n = n_kv_heads * head_dim;
    apb_k_qmean<<<(n + 127) / 128, 128, 0, s>>>(*t, n_heads / n_kv_heads, n_kv_heads, head_dim, qbar);
}
