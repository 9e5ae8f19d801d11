/* SPDX-License-Identifier: MIT */
/**
 * @brief Token sampling on the GPU, drawing the same token as apb_sample_f32 for the same u:
 *
 * 1. argmax (one block): the lowest index of the largest logit; NaN never wins, except a NaN at
 *    index 0, which the CPU loop keeps. Written to the token (greedy) and to scratch.
 * 2. probabilities p_i = apb_sample_prob(l_i, l_max, T) (grid-wide; exact same arithmetic as the
 *    CPU, codelets/apb_sample_det.h), integer weights w_i = floor(p_i 2^40).
 * 3. nucleus and draw (one block): the total weight W (exact integer sum); a 4-pass radix select on
 *    the fp32 bits of p (order-preserving for p >= 0) with weight histograms finds the key T of the
 *    last token the CPU's sorted walk takes: weight(> T) < keep <= weight(>= T); the ties at T are
 *    taken in index order while the running weight stays below keep (a binary search on their
 *    count, the predicate being monotone). Then target = floor(u * nucleus weight) and a block scan
 *    in index order finds the first nucleus token whose cumulative weight exceeds it, exactly the
 *    CPU's index-order walk. All comparisons are on exact integers or the same doubles.
 */
#include "codelets/apb_sample_det.h"
#include "codelets/cuda/common.cuh"

__global__ void __launch_bounds__(1024) apb_k_argmax(const float *x, int n, int32_t *tok, int *best_out)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = -INFINITY;
    int bi = n; /* none yet */
#pragma unroll 8
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, bv, o);
        int i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) {
        sv[w] = bv;
        si[w] = bi;
    }
    __syncthreads();
    if (w == 0) {
        bv = l < nw ? sv[l] : -INFINITY;
        bi = l < nw ? si[l] : n;
        for (int o = 16; o > 0; o >>= 1) {
            float v = __shfl_xor_sync(0xffffffffu, bv, o);
            int i = __shfl_xor_sync(0xffffffffu, bi, o);
            if (v > bv || (v == bv && i < bi)) {
                bv = v;
                bi = i;
            }
        }
        if (l == 0) {
            int best = (bi >= n || x[0] != x[0]) ? 0 : bi;
            tok[0] = best;
            best_out[0] = best;
        }
    }
}

__global__ void apb_k_sample_prob(const float *x, int n, const int *best, float temperature, float *p)
{
    float lmax = x[*best];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] = apb_sample_prob(x[i], lmax, temperature);
}

typedef unsigned long long apb_u64;

__global__ void __launch_bounds__(1024) apb_k_sample_nucleus(const float *p, int n, float top_p,
                                                             uint64_t r53, int32_t *tok)
{
    __shared__ apb_u64 hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ apb_u64 s_above;
    apb_u64 loc = 0, sum;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        loc += apb_sample_weight(p[i]);
    apb_block_scan<apb_u64>(loc, &sum);
    if (sum == 0)
        return; /* the token stays the argmax, like the CPU */
    double keep = apb_sample_keep(top_p, sum);
    uint32_t prefix = 0, mask = 0;
    apb_u64 above = 0; /* weight of the keys above the current bucket */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x)
            hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            uint32_t u = __float_as_uint(p[i]);
            apb_u64 wt = apb_sample_weight(p[i]);
            if ((u & mask) == prefix && wt)
                atomicAdd(&hist[(u >> shift) & 255u], wt);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            for (; b > 0; b--) {
                if ((double)(above + hist[b]) >= keep)
                    break;
                above += hist[b];
            }
            s_prefix = prefix | ((uint32_t)b << shift);
            s_above = above;
        }
        __syncthreads();
        prefix = s_prefix;
        above = s_above;
        mask |= 255u << shift;
        __syncthreads();
    }
    const uint32_t T = prefix;
    const apb_u64 wT = apb_sample_weight(__uint_as_float(T));
    int cnt = 0, nT;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        cnt += __float_as_uint(p[i]) == T;
    apb_block_scan<int>(cnt, &nT);
    int lo = 0, hi = nT; /* c = the number of ties r with (double)(above + r wT) < keep */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if ((double)(above + (apb_u64)mid * wT) < keep)
            lo = mid + 1;
        else
            hi = mid;
    }
    const int c = lo;
    const apb_u64 target = apb_sample_target(r53, above + (apb_u64)c * wT);
    apb_u64 acc = 0;
    int ties = 0;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x, eq_tot;
        uint32_t u = i < n ? __float_as_uint(p[i]) : 0;
        int eq = i < n && u == T;
        int rank = ties + apb_block_scan<int>(eq, &eq_tot) - eq;
        apb_u64 inc = 0, tot;
        if (i < n && (u > T || (eq && rank < c)))
            inc = apb_sample_weight(p[i]);
        apb_u64 pre = acc + apb_block_scan<apb_u64>(inc, &tot);
        if (inc && pre > target && pre - inc <= target)
            tok[0] = i;
        acc += tot;
        ties += eq_tot;
        if (acc > target)
            break; /* uniform: every thread has the same acc */
    }
}

extern "C" size_t apb_cuda_sample_scratch(int n)
{
    return 256 + sizeof(float) * (size_t)n;
}

extern "C" void apb_cuda_sample(const float *logits, int n, float temperature, float top_p,
                                uint64_t r53, int32_t *tok, void *scratch, cudaStream_t s)
{
    int *best = (int *)scratch;
    float *p = (float *)((char *)scratch + 256);
    apb_k_argmax<<<1, 1024, 0, s>>>(logits, n, tok, best);
    if (!(temperature > 0.0f) || n > APB_SAMPLE_MAX_VOCAB)
        return;
    apb_k_sample_prob<<<apb_blocks((size_t)n, 256), 256, 0, s>>>(logits, n, best, temperature, p);
    apb_k_sample_nucleus<<<1, 1024, 0, s>>>(p, n, top_p, r53, tok);
}
