/* SPDX-License-Identifier: MIT */
/**
 * @brief Query-aware selection on the GPU (apb_insert_select / _scored), same result as the CPU:
 *
 * 1. scores: one thread per (row j, KV head g) computes <k_j, qbar_g> as a sequential fp32 sum
 *    with separately rounded multiplies and adds, in the CPU's order (the CPU build has no FMA
 *    contraction and does not vectorize the reduction): the scores are bit-identical, so the
 *    selection is the same set of indices exactly (no tolerance). Scored variant: a copy.
 * 2. max-pool (kernel 5, pad 2) with the CPU's comparisons; rows j < exclude_first get -inf.
 * 3. top-`select` per KV head, one 1024-thread block per head: a 4-pass radix select (8 bits per
 *    pass) on an order-preserving uint32 key of the pooled value finds the select-th largest key T
 *    and how many of its ties to take; then a scan in index order keeps every value > T and the
 *    lowest-index ties == T. This is the CPU's order (value desc, index asc), and the kept indices
 *    come out ascending. -0.0 is keyed as +0.0 (the CPU comparator treats them as equal).
 *    NaN scores are unspecified on both paths.
 * 4. gather: the selected K and V rows of head g into its columns of ck, cv.
 */
#include "codelets/cuda/common.cuh"

static __device__ __forceinline__ int apb_sel_tile_of(const apb_cuda_sel_tile *t, int nt, int j)
{
    int lo = 0, hi = nt - 1; /* the last tile with row0 <= j */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (t[mid].row0 <= j)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

__global__ void apb_k_sel_score(const apb_cuda_sel_tile *t, int nt, const float *qbar, int n,
                                int Hk, int d, float *scores)
{
    size_t total = (size_t)n * Hk;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(e / Hk), g = (int)(e % Hk);
        const apb_cuda_sel_tile *tl = &t[apb_sel_tile_of(t, nt, j)];
        int r = j - tl->row0;
        float s;
        if (!qbar) {
            s = tl->s[(size_t)r * tl->lds + g];
        } else {
            const float *kr = tl->k + (size_t)r * tl->ldk + (size_t)g * d, *qg = qbar + (size_t)g * d;
            s = 0.0f;
            for (int c = 0; c < d; c++)
                s = __fadd_rn(s, __fmul_rn(kr[c], qg[c]));
        }
        scores[(size_t)g * n + j] = s;
    }
}

__global__ void apb_k_sel_pool(const float *scores, int n, int Hk, int exclude_first, float *pooled)
{
    size_t total = (size_t)n * Hk;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        int g = (int)(e / n), j = (int)(e % n);
        const float *sg = scores + (size_t)g * n;
        float m = -INFINITY;
        for (int t = j - 2; t <= j + 2; t++)
            if (t >= 0 && t < n && sg[t] > m)
                m = sg[t];
        pooled[e] = j < exclude_first ? -INFINITY : m;
    }
}

static __device__ __forceinline__ uint32_t apb_sel_key(float f)
{
    if (f == 0.0f)
        f = 0.0f; /* -0.0 ties with +0.0, as in the CPU comparator */
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void __launch_bounds__(1024) apb_k_sel_topk(const float *pooled, int n, int select, int *idx)
{
    __shared__ int hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int s_k;
    const float *p = pooled + (size_t)blockIdx.x * n;
    int *out = idx + (size_t)blockIdx.x * select;
    uint32_t prefix = 0, mask = 0;
    int k = select; /* rank still to find inside the current prefix's bucket */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x)
            hist[b] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            uint32_t u = apb_sel_key(p[j]);
            if ((u & mask) == prefix)
                atomicAdd(&hist[(u >> shift) & 255u], 1);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            for (; b > 0; b--) {
                if (k <= hist[b])
                    break;
                k -= hist[b];
            }
            s_prefix = prefix | ((uint32_t)b << shift);
            s_k = k;
        }
        __syncthreads();
        prefix = s_prefix;
        k = s_k;
        mask |= 255u << shift;
        __syncthreads(); /* s_prefix, s_k, hist are rewritten by the next pass */
    }
    /* prefix = T, the select-th largest key; take all keys > T and the first k ties, in index order */
    int ties = 0, taken = 0;
    for (int base = 0; base < n; base += blockDim.x) {
        int j = base + threadIdx.x;
        uint32_t u = j < n ? apb_sel_key(p[j]) : 0;
        int eq = j < n && u == prefix, gt = j < n && u > prefix, eq_tot, take_tot;
        int eq_rank = ties + apb_block_scan(eq, &eq_tot) - eq;
        int take = gt || (eq && eq_rank < k);
        int pos = taken + apb_block_scan(take, &take_tot) - take;
        if (take && pos < select)
            out[pos] = j;
        ties += eq_tot;
        taken += take_tot;
    }
}

__global__ void apb_k_sel_gather(const apb_cuda_sel_tile *t, int nt, const int *idx, int select,
                                 int d, float *ck, int ldck, float *cv, int ldcv)
{
    int i = blockIdx.x, g = blockIdx.y;
    int j = idx[(size_t)g * select + i];
    const apb_cuda_sel_tile *tl = &t[apb_sel_tile_of(t, nt, j)];
    int r = j - tl->row0;
    const float *kr = tl->k + (size_t)r * tl->ldk + (size_t)g * d;
    const float *vr = tl->v + (size_t)r * tl->ldv + (size_t)g * d;
    float *ko = ck + (size_t)i * ldck + (size_t)g * d, *vo = cv + (size_t)i * ldcv + (size_t)g * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        ko[c] = kr[c];
        vo[c] = vr[c];
    }
}

static size_t apb_align256(size_t b) { return (b + 255) & ~(size_t)255; }

extern "C" size_t apb_cuda_select_scratch(int n_tiles, int n, int n_kv_heads, int select)
{
    return apb_align256(sizeof(apb_cuda_sel_tile) * (size_t)n_tiles) +
           2 * apb_align256(sizeof(float) * (size_t)n * n_kv_heads) +
           apb_align256(sizeof(int) * (size_t)select * n_kv_heads);
}

extern "C" int apb_cuda_select(const apb_cuda_sel_tile *tiles, int n_tiles, const float *qbar, int n,
                               int n_kv_heads, int head_dim, int exclude_first, int select,
                               float *ck, int ldck, float *cv, int ldcv, void *scratch,
                               cudaStream_t s)
{
    char *b = (char *)scratch;
    apb_cuda_sel_tile *t = (apb_cuda_sel_tile *)b;
    b += apb_align256(sizeof(apb_cuda_sel_tile) * (size_t)n_tiles);
    float *scores = (float *)b;
    b += apb_align256(sizeof(float) * (size_t)n * n_kv_heads);
    float *pooled = (float *)b;
    b += apb_align256(sizeof(float) * (size_t)n * n_kv_heads);
    int *idx = (int *)b;
    /* pageable source: the call returns once the table is staged, so the caller may free it */
    if (cudaMemcpyAsync(t, tiles, sizeof(apb_cuda_sel_tile) * (size_t)n_tiles,
                        cudaMemcpyHostToDevice, s) != cudaSuccess)
        return -1;
    size_t total = (size_t)n * n_kv_heads;
    apb_k_sel_score<<<apb_blocks(total, 256), 256, 0, s>>>(t, n_tiles, qbar, n, n_kv_heads,
                                                           head_dim, scores);
    apb_k_sel_pool<<<apb_blocks(total, 256), 256, 0, s>>>(scores, n, n_kv_heads, exclude_first, pooled);
    apb_k_sel_topk<<<n_kv_heads, 1024, 0, s>>>(pooled, n, select, idx);
    apb_k_sel_gather<<<dim3(select, n_kv_heads), 128, 0, s>>>(t, n_tiles, idx, select, head_dim, ck,
                                                              ldck, cv, ldcv);
    return 0;
}
