/* SPDX-License-Identifier: MIT */
/**
 * @brief Attention over KV segments on the GPU: a bf16 tensor-core flash-attention kernel and an
 * fp32 kernel, both with the segment visibility rule of apb_insert_attention and the natural
 * log-sum-exp output that LSE merging needs.
 *
 * Tensor-core kernel (head_dim 64 or 128): a CTA of 4 warps owns 128 query rows of one query head;
 * each warp owns 32 rows (two 16-row m-tiles, so every K/V fragment read from shared memory feeds
 * four mma). Q is converted to bf16 once into shared memory; its A fragments are reloaded per 16
 * columns (with one m-tile per warp, APB_ATTN_SHAPE=4x1, they stay in registers).
 * The visible K/V rows of the task's KV heads are converted fp32 -> bf16 into device scratch once
 * per task; every 64-key block of every visible segment is then copied (two-stage cp.async
 * pipeline) into padded shared memory (row stride d + 8 elements: ldmatrix reads are bank-conflict
 * free), S = Q K^T runs
 * on mma.sync.m16n8k16 (bf16 in, fp32 accumulate), the online softmax works in the log2 domain
 * on the fp32 accumulators, and P (re-packed to bf16 in registers, the FlashAttention-2 layout
 * trick) times V accumulates into fp32 O fragments. Blocks that are wholly visible skip the mask;
 * segments, and causal tails, that no row of the CTA can see are skipped. Heavy (late) query tiles
 * are scheduled first. GQA: the CTA reads the K/V columns of its query head's KV head.
 *
 * fp32 kernel: 4 warps split the keys of one (row, head); each lane holds head_dim/32 elements of
 * q and the output; partial softmax states merge in shared memory. It is the exact path
 * (APB_PREC_FP32) and serves any head_dim <= 256 and one-row decode.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/cuda/common.cuh"
#include "common/apb_env.h"

struct apb_segs {
    apb_cuda_seg s[APB_CUDA_MAX_SEGS];
    /* bf16 K/V rows of KV heads [kvh0, kvh0 + n_kvh) (tensor-core kernel): copies in scratch of
     * fp32 segments (row stride n_kvh d), or bf16 segments in place (their own stride) */
    const uint16_t *k16[APB_CUDA_MAX_SEGS], *v16[APB_CUDA_MAX_SEGS];
    int ld16[APB_CUDA_MAX_SEGS];
    int n;
};

/* Keys of segment sg that rows up to coordinate qhi can see: [0, kend). */
static __host__ __device__ __forceinline__ int apb_seg_kend(const apb_cuda_seg &sg, int qhi)
{
    if (qhi < sg.min_q_coord)
        return 0;
    int k = sg.len;
    if (sg.causal)
        k = min(k, qhi - sg.coord0 + 1);
    return k > 0 ? k : 0;
}

/* Advances (si, kb) to the next BN-key block some row up to qhi sees; false when none is left. */
template <int BN>
static __device__ __forceinline__ bool apb_next_block(const apb_segs &sp, int qhi, int &si, int &kb)
{
    kb += BN;
    while (si < sp.n) {
        if (kb < apb_seg_kend(sp.s[si], qhi))
            return true;
        si++;
        kb = 0;
    }
    return false;
}

/* Asynchronous copy of BN rows x D bf16 (row stride ld) into padded shared memory; rows >= nrows
 * are zero-filled by the copy engine (src-size 0). */
template <int BN, int D, int NT>
static __device__ __forceinline__ void apb_cp_rows(uint16_t *dst, const uint16_t *src, int ld, int r0, int nrows)
{
    constexpr int LDS = D + 8, CH = D / 8;
    for (int i = threadIdx.x; i < BN * CH; i += NT) {
        int r = i / CH, c = (i % CH) * 8;
        bool in = r0 + r < nrows;
        const uint16_t *g = in ? src + (size_t)(r0 + r) * ld + c : src;
        uint32_t sa = (uint32_t)__cvta_generic_to_shared(dst + r * LDS + c);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(in ? 16 : 0));
    }
}

/* ------------------------------------------------------------------ PTX wrappers */
static __device__ __forceinline__ void apb_ldsm_x4(uint32_t r[4], const uint16_t *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void apb_ldsm_x4_t(uint32_t r[4], const uint16_t *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void apb_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t apb_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* Converts rows [r0, r0 + R) of a (ld-strided) fp32 matrix, columns [c0, c0 + D), into bf16
 * shared memory dst[R][D + 8]; rows >= nrows are zero (so masked P * V never meets garbage). */
template <int R, int D, int NT>
static __device__ __forceinline__ void apb_tile_to_smem(uint16_t *dst, const float *src, int ld,
                                                        int r0, int nrows)
{
    constexpr int LDS = D + 8, C4 = D / 4;
    for (int i = threadIdx.x; i < R * C4; i += NT) {
        int r = i / C4, c = (i % C4) * 4;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r0 + r < nrows)
            v = __ldg((const float4 *)(src + (size_t)(r0 + r) * ld + c));
        uint2 p;
        p.x = apb_pack_bf16(v.x, v.y);
        p.y = apb_pack_bf16(v.z, v.w);
        *(uint2 *)(dst + r * LDS + c) = p;
    }
}

/* ------------------------------------------------------------------ tensor-core kernel */
/* MT = 16-row m-tiles per warp. MT = 1: Q fragments stay in registers. MT = 2: a warp owns 32
 * rows and reloads its Q fragments from shared memory per 16 columns (registers go to the two
 * accumulators); each K/V fragment read from shared memory then feeds 4 mma instead of 2. */
template <int D, int NW, int MT>
__global__ void __launch_bounds__(NW * 32)
apb_k_attn_mma(const float *__restrict__ q, int ld_q, int n_q, int q_coord0, const apb_segs sp,
               int group, int qh0, int kvh0, float *__restrict__ o, int ld_o, float *__restrict__ lse,
               int ld_lse, float scale_log2)
{
    constexpr int BM = 16 * NW * MT, BN = 64, LDS = D + 8, NT = NW * 32;
    constexpr int QR = MT == 1 ? D / 16 : 1; /* Q fragments held in registers */
    extern __shared__ __align__(16) uint16_t apb_smem[];
    uint16_t *Qs = apb_smem, *Ks0 = Qs + BM * LDS, *Vs0 = Ks0 + BN * LDS;
    uint16_t *Ks1 = Vs0 + BN * LDS, *Vs1 = Ks1 + BN * LDS; /* second stage of the pipeline */

    const int qh = qh0 + blockIdx.y, kvl = qh / group - kvh0; /* KV head within the bf16 copies */
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM; /* late (heavier, causal) tiles first */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int qlo = q_coord0 + m0, qhi = q_coord0 + min(m0 + BM, n_q) - 1;
    int ra[MT], qca[MT];                                   /* this thread's rows: ra, ra + 8 */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        ra[mt] = m0 + (warp * MT + mt) * 16 + g;
        qca[mt] = q_coord0 + ra[mt];
    }

    apb_tile_to_smem<BM, D, NT>(Qs, q + (size_t)qh * D, ld_q, m0, n_q);
    __syncthreads();
    const uint16_t *qrow = Qs + (warp * MT * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
    uint32_t qf[QR][4];
    if (MT == 1) {
#pragma unroll
        for (int kc = 0; kc < QR; kc++)
            apb_ldsm_x4(qf[kc], qrow + kc * 16);
    }

    float acc[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < D / 8; i++)
            acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
    float ma[MT], mb[MT], la[MT], lb[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        ma[mt] = mb[mt] = -INFINITY;
        la[mt] = lb[mt] = 0.f;
    }

    /* Two-stage pipeline: the copy of the next block runs while this one is computed. */
    int si = 0, kb = -BN, stage = 0;
    bool have = apb_next_block<BN>(sp, qhi, si, kb);
    if (have) {
        int ke = apb_seg_kend(sp.s[si], qhi);
        apb_cp_rows<BN, D, NT>(Ks0, sp.k16[si] + (size_t)kvl * D, sp.ld16[si], kb, ke);
        apb_cp_rows<BN, D, NT>(Vs0, sp.v16[si] + (size_t)kvl * D, sp.ld16[si], kb, ke);
    }
    asm volatile("cp.async.commit_group;\n" ::);
    while (have) {
        int nsi = si, nkb = kb;
        const bool nhave = apb_next_block<BN>(sp, qhi, nsi, nkb);
        if (nhave) {
            int ke = apb_seg_kend(sp.s[nsi], qhi);
            apb_cp_rows<BN, D, NT>(stage ? Ks0 : Ks1, sp.k16[nsi] + (size_t)kvl * D, sp.ld16[nsi], nkb, ke);
            apb_cp_rows<BN, D, NT>(stage ? Vs0 : Vs1, sp.v16[nsi] + (size_t)kvl * D, sp.ld16[nsi], nkb, ke);
        }
        asm volatile("cp.async.commit_group;\n" ::);
        asm volatile("cp.async.wait_group 1;\n" ::); /* this block's copy has landed */
        __syncthreads();
        const uint16_t *Ks = stage ? Ks1 : Ks0, *Vs = stage ? Vs1 : Vs0;
        const apb_cuda_seg sg = sp.s[si];
        const int kend = apb_seg_kend(sg, qhi);
        float s[MT][BN / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < BN / 8; i++)
                s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < D / 16; kc++) {
            uint32_t qm[MT][4];
            if (MT > 1) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    apb_ldsm_x4(qm[mt], qrow + mt * 16 * LDS + kc * 16);
            }
#pragma unroll
            for (int n2 = 0; n2 < BN / 16; n2++) {
                uint32_t b[4];
                apb_ldsm_x4(b, Ks + (n2 * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + kc * 16 +
                                   ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const uint32_t *a = MT == 1 ? qf[kc % QR] : qm[mt];
                    apb_mma(s[mt][2 * n2], a, b[0], b[1]);
                    apb_mma(s[mt][2 * n2 + 1], a, b[2], b[3]);
                }
            }
        }

        const bool whole = kb + BN <= kend && qlo >= sg.min_q_coord &&
                           (!sg.causal || sg.coord0 + kb + BN - 1 <= qlo);
        uint32_t pa[MT][BN / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int qcb = qca[mt] + 8;
            float xa = -INFINITY, xb = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float v = s[mt][nt][e] * scale_log2;
                    if (!whole) {
                        int j = kb + nt * 8 + 2 * t + (e & 1), qc = e < 2 ? qca[mt] : qcb;
                        bool vis = j < kend && qc >= sg.min_q_coord && (!sg.causal || sg.coord0 + j <= qc);
                        v = vis ? v : -INFINITY;
                    }
                    s[mt][nt][e] = v;
                    if (e < 2)
                        xa = fmaxf(xa, v);
                    else
                        xb = fmaxf(xb, v);
                }
            xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
            xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
            xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
            xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
            const float na = fmaxf(ma[mt], xa), nb = fmaxf(mb[mt], xb);
            /* a row that has seen no key yet keeps m = -inf: scale factors and p are then 0 */
            const float fa = na == -INFINITY ? 1.f : exp2f(ma[mt] - na);
            const float fb = nb == -INFINITY ? 1.f : exp2f(mb[mt] - nb);
            const float sa = na == -INFINITY ? 0.f : na, sb = nb == -INFINITY ? 0.f : nb;
            ma[mt] = na;
            mb[mt] = nb;
            float ra_sum = 0.f, rb_sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                s[mt][nt][0] = exp2f(s[mt][nt][0] - sa);
                s[mt][nt][1] = exp2f(s[mt][nt][1] - sa);
                s[mt][nt][2] = exp2f(s[mt][nt][2] - sb);
                s[mt][nt][3] = exp2f(s[mt][nt][3] - sb);
                ra_sum += s[mt][nt][0] + s[mt][nt][1];
                rb_sum += s[mt][nt][2] + s[mt][nt][3];
            }
            la[mt] = la[mt] * fa + ra_sum;
            lb[mt] = lb[mt] * fb + rb_sum;
#pragma unroll
            for (int i = 0; i < D / 8; i++) {
                acc[mt][i][0] *= fa;
                acc[mt][i][1] *= fa;
                acc[mt][i][2] *= fb;
                acc[mt][i][3] *= fb;
            }
            /* P re-packed to bf16 A fragments in registers (the FlashAttention-2 layout trick) */
#pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) {
                pa[mt][kc][0] = apb_pack_bf16(s[mt][2 * kc][0], s[mt][2 * kc][1]);
                pa[mt][kc][1] = apb_pack_bf16(s[mt][2 * kc][2], s[mt][2 * kc][3]);
                pa[mt][kc][2] = apb_pack_bf16(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
                pa[mt][kc][3] = apb_pack_bf16(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
            }
        }
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++)
#pragma unroll
            for (int d2 = 0; d2 < D / 16; d2++) {
                uint32_t b[4];
                apb_ldsm_x4_t(b, Vs + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + d2 * 16 +
                                     (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    apb_mma(acc[mt][2 * d2], pa[mt][kc], b[0], b[1]);
                    apb_mma(acc[mt][2 * d2 + 1], pa[mt][kc], b[2], b[3]);
                }
            }
        __syncthreads(); /* the stage is refilled by the next iteration's copy */
        si = nsi;
        kb = nkb;
        have = nhave;
        stage ^= 1;
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float a_ = la[mt], b_ = lb[mt];
        a_ += __shfl_xor_sync(0xffffffffu, a_, 1);
        a_ += __shfl_xor_sync(0xffffffffu, a_, 2);
        b_ += __shfl_xor_sync(0xffffffffu, b_, 1);
        b_ += __shfl_xor_sync(0xffffffffu, b_, 2);
        const float ia = a_ > 0.f ? 1.f / a_ : 0.f, ib = b_ > 0.f ? 1.f / b_ : 0.f;
        const int r0 = ra[mt], r1 = r0 + 8;
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            int c = qh * D + i * 8 + 2 * t;
            if (r0 < n_q) {
                o[(size_t)r0 * ld_o + c] = acc[mt][i][0] * ia;
                o[(size_t)r0 * ld_o + c + 1] = acc[mt][i][1] * ia;
            }
            if (r1 < n_q) {
                o[(size_t)r1 * ld_o + c] = acc[mt][i][2] * ib;
                o[(size_t)r1 * ld_o + c + 1] = acc[mt][i][3] * ib;
            }
        }
        if (t == 0) {
            const float ln2 = 0.69314718055994531f;
            if (r0 < n_q)
                lse[(size_t)r0 * ld_lse + qh] = a_ > 0.f ? (ma[mt] + log2f(a_)) * ln2 : -INFINITY;
            if (r1 < n_q)
                lse[(size_t)r1 * ld_lse + qh] = b_ > 0.f ? (mb[mt] + log2f(b_)) * ln2 : -INFINITY;
        }
    }
}

/* ------------------------------------------------------------------ fp32 kernel */
enum { APB_F32_WARPS = 4, APB_F32_MAXE = 8 }; /* head_dim <= 32 * APB_F32_MAXE = 256 */

__global__ void __launch_bounds__(32 * APB_F32_WARPS)
apb_k_attn_f32(const float *__restrict__ q, int ld_q, int n_q, int q_coord0, const apb_segs sp,
               int group, int qh0, int D, float *__restrict__ o, int ld_o, float *__restrict__ lse,
               int ld_lse, float scale)
{
    __shared__ float sm_m[APB_F32_WARPS], sm_l[APB_F32_WARPS];
    __shared__ float sm_acc[APB_F32_WARPS][32 * APB_F32_MAXE];
    const int row = blockIdx.x, qh = qh0 + blockIdx.y, kvh = qh / group;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, qc = q_coord0 + row;
    const float *qr = q + (size_t)row * ld_q + (size_t)qh * D;
    float qv[APB_F32_MAXE], acc[APB_F32_MAXE];
#pragma unroll
    for (int e = 0; e < APB_F32_MAXE; e++) {
        int c = lane + 32 * e;
        qv[e] = c < D ? qr[c] * scale : 0.f;
        acc[e] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int si = 0; si < sp.n; si++) {
        const apb_cuda_seg sg = sp.s[si];
        if (qc < sg.min_q_coord)
            continue;
        int kend = sg.causal ? min(sg.len, qc - sg.coord0 + 1) : sg.len;
        for (int j = warp; j < kend; j += APB_F32_WARPS) {
            const size_t at = (size_t)j * sg.ld + (size_t)kvh * D;
            const float *kr = sg.k + at, *vr = sg.v + at;
            const uint16_t *kr16 = (const uint16_t *)(const void *)sg.k + at;
            const uint16_t *vr16 = (const uint16_t *)(const void *)sg.v + at;
            float dot = 0.f;
#pragma unroll
            for (int e = 0; e < APB_F32_MAXE; e++) {
                int c = lane + 32 * e;
                if (c < D)
                    dot += qv[e] * (sg.bf16 ? __uint_as_float((uint32_t)kr16[c] << 16) : kr[c]);
            }
            dot = apb_warp_sum(dot);
            float nm = fmaxf(m, dot), f = expf(m - nm), p = expf(dot - nm);
            l = l * f + p;
#pragma unroll
            for (int e = 0; e < APB_F32_MAXE; e++) {
                int c = lane + 32 * e;
                float vc = c < D ? (sg.bf16 ? __uint_as_float((uint32_t)vr16[c] << 16) : vr[c]) : 0.f;
                acc[e] = acc[e] * f + p * vc;
            }
            m = nm;
        }
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < APB_F32_MAXE; e++)
        sm_acc[warp][lane + 32 * e] = acc[e];
    __syncthreads();
    if (warp != 0)
        return;
    float M = -INFINITY;
    for (int w = 0; w < APB_F32_WARPS; w++)
        M = fmaxf(M, sm_m[w]);
    float L = 0.f, f[APB_F32_WARPS];
    for (int w = 0; w < APB_F32_WARPS; w++) {
        f[w] = sm_m[w] == -INFINITY ? 0.f : expf(sm_m[w] - M);
        L += sm_l[w] * f[w];
    }
    float *orow = o + (size_t)row * ld_o + (size_t)qh * D;
    for (int c = lane; c < D; c += 32) {
        float s = 0.f;
        for (int w = 0; w < APB_F32_WARPS; w++)
            s += sm_acc[w][c] * f[w];
        orow[c] = L > 0.f ? s / L : 0.f;
    }
    if (lane == 0)
        lse[(size_t)row * ld_lse + qh] = L > 0.f ? M + logf(L) : -INFINITY;
}

/* ------------------------------------------------------------------ launcher */
template <int D, int NW, int MT>
static void apb_launch_mma_nw(const float *q, int ld_q, int n_q, int q_coord0, const apb_segs &sp,
                              int group, int qh0, int kvh0, int nqh, float *o, int ld_o, float *lse,
                              int ld_lse, float scale_log2, cudaStream_t s)
{
    constexpr int BM = 16 * NW * MT, BN = 64;
    const size_t smem = (size_t)(BM + 4 * BN) * (D + 8) * sizeof(uint16_t);
    /* the attribute belongs to each device's context: set it on the current one (once per GPU) */
    static bool attr_set[64];
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= 64 || !attr_set[dev]) {
        cudaFuncSetAttribute(apb_k_attn_mma<D, NW, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (dev >= 0 && dev < 64)
            attr_set[dev] = true;
    }
    dim3 grid((n_q + BM - 1) / BM, nqh);
    apb_k_attn_mma<D, NW, MT><<<grid, NW * 32, smem, s>>>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0,
                                                          o, ld_o, lse, ld_lse, scale_log2);
}

/* Kernel shape (APB_ATTN_SHAPE = 4x2, 4x1, 8x1): 4 warps of 32 query rows (the default: on an
 * H100 at Llama-3.1-8B shapes, 236 / 265 TFLOP/s causal at 16K / 64K tokens), 4 warps of 16 rows
 * (202 / 217) or 8 warps of 16 rows (183 / 198). Two CTAs share an SM in the 4-warp shapes. */
static int apb_attn_shape(void)
{
    static int shape = 0;
    if (!shape) {
        const char *e = getenv("APB_ATTN_SHAPE");
        shape = e && !strcmp(e, "8x1") ? 81 : e && !strcmp(e, "4x1") ? 41 : 42;
    }
    return shape;
}

template <int D>
static void apb_launch_mma(const float *q, int ld_q, int n_q, int q_coord0, const apb_segs &sp,
                           int group, int qh0, int kvh0, int nqh, float *o, int ld_o, float *lse,
                           int ld_lse, float scale_log2, cudaStream_t s)
{
    int shape = apb_attn_shape();
    if (shape == 81)
        apb_launch_mma_nw<D, 8, 1>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0, nqh, o, ld_o, lse, ld_lse, scale_log2, s);
    else if (shape == 41)
        apb_launch_mma_nw<D, 4, 1>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0, nqh, o, ld_o, lse, ld_lse, scale_log2, s);
    else
        apb_launch_mma_nw<D, 4, 2>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0, nqh, o, ld_o, lse, ld_lse, scale_log2, s);
}

/* ------------------------------------------------------------------ split-KV kernel (few rows) */
/* Flash-decoding: the visible keys of a task (the concatenation of its segments, clamped for the
 * last row) are cut into nsplit ranges; CTA (split, row group, KV head) streams its range once
 * for up to RB query rows of the KV head's group (rows r = i G + g: query row i, head kvh G + g).
 * Each of the 4 warps takes blocks of 32 keys, one key per lane: a lane computes the RB dot
 * products of its key row (16-byte loads) against the queries held in shared memory, the warp
 * updates each row's running max and sum once per block, then P V runs with lane = D/32 output
 * columns (coalesced V rows, p broadcast by shuffle). Warps merge in shared memory; every CTA
 * writes its unnormalized partial (acc, m, l) and apb_k_attn_splitkv_merge combines the splits
 * per row by their log-sum-exp. fp32 arithmetic (K/V fp32 or bf16): the exact path, used in
 * both precisions. */
enum { APB_SK_WARPS = 4, APB_SK_RB = 8, APB_SK_MAX_ROWS = 64, APB_SK_MAX_SPLITS = 512, APB_SK_MIN_CHUNK = 256 };

/* W consecutive 32-bit words from p (4 * W bytes, aligned to that size up to 16). */
template <int W>
static __device__ __forceinline__ void apb_ldw(uint32_t *w, const void *p)
{
    if (W == 1) {
        w[0] = *(const uint32_t *)p;
    } else if (W == 2) {
        const uint2 u = *(const uint2 *)p;
        w[0] = u.x, w[1] = u.y;
    } else {
#pragma unroll
        for (int i = 0; i < W; i += 4) {
            const uint4 u = *((const uint4 *)p + i / 4);
            w[i] = u.x, w[i + 1] = u.y, w[i + 2] = u.z, w[i + 3] = u.w;
        }
    }
}

/* Element e of words w as float: bf16 pairs (low half first) or fp32. */
template <bool BF16>
static __device__ __forceinline__ float apb_wf(const uint32_t *w, int e)
{
    if (BF16)
        return __uint_as_float(e & 1 ? w[e >> 1] & 0xffff0000u : w[e >> 1] << 16);
    return __uint_as_float(w[e]);
}

/* Q K^T of a block of 32 keys from a bf16 cache, loads coalesced (D <= 128, RB <= 4): LPR = D / 8
 * lanes read one key row in 16-byte pieces, so one warp load covers 32 / LPR whole rows (the
 * lane-per-row pattern touched 32 rows per load: 32 L1 wavefronts for 512 bytes). Lane (kk, sub)
 * holds the partial dot products of dims [8 sub, 8 sub + 8) for keys t KPI + kk, t < LPR; a
 * butterfly reduce-scatter over the LPR lanes of the row (LPR - 1 shuffles a query row) leaves
 * lane (kk, sub) with the whole score of key sub KPI + kk of the block. */
/* One stage per call, N values left (N / 2 = the partner's lane distance o): keep the upper
 * half of the values if bit o of sub is set, add the partner's (lane ^ o) copy of that half;
 * after the last stage value 0 holds key t = sub (template recursion: every index constant). */
template <int LPR, int RB, int N>
static __device__ __forceinline__ void apb_sk_reduce_scatter(float (&v)[RB][LPR], int sub)
{
    if constexpr (N > 1) {
        constexpr int O = N / 2;
        const bool up = sub & O;
#pragma unroll
        for (int i = 0; i < O; i++)
#pragma unroll
            for (int r = 0; r < RB; r++) {
                const float send = up ? v[r][i] : v[r][i + O], keep = up ? v[r][i + O] : v[r][i];
                v[r][i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
            }
        apb_sk_reduce_scatter<LPR, RB, O>(v, sub);
    }
}

template <int D, int RB>
static __device__ __forceinline__ void apb_sk_scores_co(const float (*sq)[D], const char *kb, size_t ld, int kvh,
                                                        int j0, int b, int lane, float *s)
{
    constexpr int LPR = D / 8, KPI = 32 / LPR;
    const int sub = lane % LPR, kk = lane / LPR;
    uint32_t kw[LPR][4];
#pragma unroll
    for (int t = 0; t < LPR; t++) {
        const int jt = j0 + t * KPI + kk;
        if (jt < b)
            apb_ldw<4>(kw[t], kb + ((size_t)jt * ld + (size_t)kvh * D + sub * 8) * 2);
        else
            kw[t][0] = kw[t][1] = kw[t][2] = kw[t][3] = 0u;
    }
    /* the first stage of the reduce-scatter as the dot products are made (keys t and t + LPR / 2
     * meet there), so that half the partial sums are ever live */
    constexpr int H = LPR / 2;
    const bool up = sub & H;
    float v[RB][H];
#pragma unroll
    for (int t = 0; t < H; t++)
#pragma unroll
        for (int r = 0; r < RB; r++) {
            const float4 q0 = *(const float4 *)&sq[r][sub * 8], q1 = *(const float4 *)&sq[r][sub * 8 + 4];
            float d[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t *w = kw[t + h * H];
                d[h] = q0.x * apb_wf<true>(w, 0) + q0.y * apb_wf<true>(w, 1) + q0.z * apb_wf<true>(w, 2) +
                       q0.w * apb_wf<true>(w, 3) + q1.x * apb_wf<true>(w, 4) + q1.y * apb_wf<true>(w, 5) +
                       q1.z * apb_wf<true>(w, 6) + q1.w * apb_wf<true>(w, 7);
            }
            v[r][t] = (up ? d[1] : d[0]) + __shfl_xor_sync(0xffffffffu, up ? d[0] : d[1], H);
        }
    apb_sk_reduce_scatter<H, RB, H>(v, sub);
#pragma unroll
    for (int r = 0; r < RB; r++)
        s[r] = v[r][0];
}

/* One segment's keys [a, b) of a split for one warp, blocks of 32 keys (lane = D / 32 output
 * columns for P V). Every load of a phase is issued before its arithmetic so that a warp keeps
 * 4-8 KB of reads outstanding and the split-KV grid streams the cache near the bandwidth (the
 * loop that loaded one V row at a time waited a memory latency per key). Q K^T: bf16 caches with
 * D <= 128 and RB <= 4 take apb_sk_scores_co (coalesced rows, the key of a lane permuted:
 * kidx); otherwise lane = key, its row in chunks of CK elements (16 loads of 16 bytes in
 * flight). P V: the V rows of a block in groups of VG (a lane's columns of 16-32 rows). */
template <int D, int RB, bool BF16, bool CO_OK>
static __device__ __forceinline__ void
apb_sk_segment(const float (*sq)[D], float (*sp)[32], const apb_cuda_seg &sg, int a, int b, int kvh, int warp,
               int lane, const int *qc, float *m, float *l, float (*acc)[D / 32])
{
    constexpr int DE = D / 32;                          /* output columns per lane */
    constexpr int EB = BF16 ? 2 : 4;                    /* bytes per element */
    constexpr int CK = BF16 ? (D < 128 ? D : 128) : 64; /* K elements per load batch */
    constexpr int VW = DE * EB / 4;                     /* 32-bit words of a lane's V columns */
    constexpr int VG = 64 / VW < 32 ? 64 / VW : 32;     /* V rows per load batch */
    constexpr bool CO = CO_OK && BF16 && D <= 128 && RB <= 4; /* coalesced Q K^T */
    constexpr int LPR = CO ? D / 8 : 32, KPI = 32 / LPR;
    const int kidx = CO ? (lane % LPR) * KPI + lane / LPR : lane; /* the lane's key in a block */
    const char *kb = (const char *)sg.k, *vb = (const char *)sg.v;
    for (int j0 = a + warp * 32; j0 < b; j0 += APB_SK_WARPS * 32) {
        const int j = j0 + kidx;
        const bool valid = j < b;
        const int nk = min(32, b - j0);
        const char *vr = vb + ((size_t)j0 * sg.ld + (size_t)kvh * D + (size_t)lane * DE) * EB;
        const size_t vstride = (size_t)sg.ld * EB;
        float s[RB];
#pragma unroll
        for (int r = 0; r < RB; r++)
            s[r] = 0.f;
        if constexpr (CO) {
            apb_sk_scores_co<D, RB>(sq, kb, sg.ld, kvh, j0, b, lane, s);
        } else if (valid) {
            const char *kr = kb + ((size_t)j * sg.ld + (size_t)kvh * D) * EB;
#pragma unroll
            for (int c0 = 0; c0 < D; c0 += CK) {
                uint32_t kw[CK * EB / 4];
#pragma unroll
                for (int c = 0; c < CK; c += 8)
                    apb_ldw<2 * EB>(kw + c * EB / 4, kr + (size_t)(c0 + c) * EB);
#pragma unroll
                for (int c = 0; c < CK; c += 4) {
                    const float k0 = apb_wf<BF16>(kw, c), k1 = apb_wf<BF16>(kw, c + 1),
                                k2 = apb_wf<BF16>(kw, c + 2), k3 = apb_wf<BF16>(kw, c + 3);
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        const float4 qv = *(const float4 *)&sq[r][c0 + c];
                        s[r] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
                    }
                }
            }
        }
        const int kc = sg.coord0 + j;
        float p[RB];
#pragma unroll
        for (int r = 0; r < RB; r++) {
            const bool vis = valid && qc[r] >= sg.min_q_coord && (!sg.causal || kc <= qc[r]);
            const float sr = vis ? s[r] : -INFINITY;
            const float nm = fmaxf(m[r], apb_warp_max(sr));
            if (nm == -INFINITY) { /* nothing visible to this row yet */
                p[r] = 0.f;
                continue;
            }
            const float f = expf(m[r] - nm);
            p[r] = vis ? expf(sr - nm) : 0.f;
            l[r] = l[r] * f + apb_warp_sum(p[r]);
            m[r] = nm;
#pragma unroll
            for (int e = 0; e < DE; e++)
                acc[r][e] *= f;
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
            sp[r][kidx] = p[r]; /* P V reads a key's p[r] as a broadcast (4 keys per load) */
        __syncwarp();
        if (nk == 32) {
#pragma unroll
            for (int t0 = 0; t0 < 32; t0 += VG) {
                uint32_t vw[VG][VW];
#pragma unroll
                for (int t = 0; t < VG; t++)
                    apb_ldw<VW>(vw[t], vr + (size_t)(t0 + t) * vstride);
#pragma unroll
                for (int t = 0; t < VG; t += 4) {
#pragma unroll
                    for (int r = 0; r < RB; r++) {
                        const float4 p4 = *(const float4 *)&sp[r][t0 + t];
                        const float pt[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
                        for (int u = 0; u < 4; u++)
#pragma unroll
                            for (int e = 0; e < DE; e++)
                                acc[r][e] += pt[u] * apb_wf<BF16>(vw[t + u], e);
                    }
                }
            }
        } else {
            for (int t = 0; t < nk; t++) {
                uint32_t vw[VW];
                apb_ldw<VW>(vw, vr + (size_t)t * vstride);
#pragma unroll
                for (int r = 0; r < RB; r++) {
                    const float pr = sp[r][t];
#pragma unroll
                    for (int e = 0; e < DE; e++)
                        acc[r][e] += pr * apb_wf<BF16>(vw, e);
                }
            }
        }
        __syncwarp(); /* sp is rewritten by the next block */
    }
}

template <int D, int RB, bool CO, int MINB = 1>
__global__ void __launch_bounds__(32 * APB_SK_WARPS, MINB)
apb_k_attn_splitkv(const float *__restrict__ q, int ld_q, int n_q, int q_coord0, const apb_segs sp,
                   int group, int kvh0, int nsplit, int chunk, float *__restrict__ part)
{
    constexpr int DE = D / 32;
    __shared__ __align__(16) float sq[RB][D];
    __shared__ float sm_m[APB_SK_WARPS][RB], sm_l[APB_SK_WARPS][RB];
    __shared__ float sm_acc[APB_SK_WARPS][RB][D];
    __shared__ __align__(16) float sm_p[APB_SK_WARPS][RB][32];
    const int split = blockIdx.x, rg = blockIdx.y, kvl = blockIdx.z, kvh = kvh0 + kvl;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int R = n_q * group, r0 = rg * RB, nr = min(RB, R - r0);
    const int qhi = q_coord0 + n_q - 1;
    const float scale = rsqrtf((float)D);
#pragma unroll
    for (int it = 0; it < (RB * D + 32 * APB_SK_WARPS - 1) / (32 * APB_SK_WARPS); it++) {
        const int x = threadIdx.x + it * 32 * APB_SK_WARPS;
        if (x >= RB * D)
            break;
        const int r = x / D, c = x % D, rr = r0 + (r < nr ? r : 0);
        sq[r][c] = q[(size_t)(rr / group) * ld_q + (size_t)(kvh * group + rr % group) * D + c] * scale;
    }
    int qc[RB];
    float m[RB], l[RB], acc[RB][DE];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        qc[r] = r < nr ? q_coord0 + (r0 + r) / group : INT_MIN;
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int e = 0; e < DE; e++)
            acc[r][e] = 0.f;
    }
    __syncthreads();
    const int lo = split * chunk, hi = lo + chunk;
    int base = 0;
    for (int si = 0; si < sp.n && base < hi; si++) {
        const apb_cuda_seg sg = sp.s[si];
        const int ke = apb_seg_kend(sg, qhi);
        const int a = max(lo, base) - base, b = min(hi, base + ke) - base; /* segment keys [a, b) */
        if (sg.bf16)
            apb_sk_segment<D, RB, true, CO>(sq, sm_p[warp], sg, a, b, kvh, warp, lane, qc, m, l, acc);
        else
            apb_sk_segment<D, RB, false, false>(sq, sm_p[warp], sg, a, b, kvh, warp, lane, qc, m, l, acc);
        base += ke;
    }
#pragma unroll
    for (int r = 0; r < RB; r++) {
        if (lane == 0) {
            sm_m[warp][r] = m[r];
            sm_l[warp][r] = l[r];
        }
#pragma unroll
        for (int e = 0; e < DE; e++)
            sm_acc[warp][r][lane * DE + e] = acc[r][e];
    }
    __syncthreads();
    /* warp w combines rows w, w + 4, ... over the 4 warps and writes the CTA's partial */
    for (int r = warp; r < nr; r += APB_SK_WARPS) {
        float M = -INFINITY;
        for (int w = 0; w < APB_SK_WARPS; w++)
            M = fmaxf(M, sm_m[w][r]);
        float f[APB_SK_WARPS], L = 0.f;
        for (int w = 0; w < APB_SK_WARPS; w++) {
            f[w] = sm_m[w][r] == -INFINITY ? 0.f : expf(sm_m[w][r] - M);
            L += sm_l[w][r] * f[w];
        }
        /* partial layout: [kvl][row][split] x (D + 2) floats: acc, m, l */
        float *pp = part + (((size_t)kvl * R + r0 + r) * nsplit + split) * (D + 2);
        for (int c = lane; c < D; c += 32) {
            float sum = 0.f;
            for (int w = 0; w < APB_SK_WARPS; w++)
                sum += sm_acc[w][r][c] * f[w];
            pp[c] = sum;
        }
        if (lane == 0) {
            pp[D] = M;
            pp[D + 1] = L;
        }
    }
}

/* One CTA of APB_SK_MERGE_THREADS per (KV head, row). The splits' m and l go to shared memory in
 * one round of loads, their weights exp(m_s - M) are made there, then warp w sums the splits
 * w, w + 4, ... with lane = columns c = lane + 32 e (each split's row read coalesced, several
 * splits' loads in flight), and the 4 warps' sums meet in shared memory. ncu, 128K keys, 82
 * splits, 32 rows: the version with thread = column walking all splits took 17 us a call. */
enum { APB_SK_MERGE_THREADS = 128, APB_SK_MERGE_WARPS = APB_SK_MERGE_THREADS / 32 };
template <int D>
__global__ void __launch_bounds__(APB_SK_MERGE_THREADS)
apb_k_attn_splitkv_merge(const float *__restrict__ part, int n_q, int group, int kvh0, int nsplit,
                         float *__restrict__ o, int ld_o, float *__restrict__ lse, int ld_lse)
{
    constexpr int DE = D / 32;
    __shared__ float sw[APB_SK_MAX_SPLITS], sl[APB_SK_MAX_SPLITS], red[APB_SK_MERGE_WARPS];
    __shared__ float sacc[APB_SK_MERGE_WARPS][D];
    const int R = n_q * group, kvl = blockIdx.x / R, r = blockIdx.x % R, i = r / group;
    const int qh = (kvh0 + kvl) * group + r % group, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int stride = D + 2;
    const float *pp = part + ((size_t)kvl * R + r) * nsplit * stride;
    float M = -INFINITY;
    for (int s = tid; s < nsplit; s += APB_SK_MERGE_THREADS) {
        const float ms = pp[(size_t)s * stride + D];
        sw[s] = ms;
        sl[s] = pp[(size_t)s * stride + D + 1];
        M = fmaxf(M, ms);
    }
    M = apb_warp_max(M);
    if (lane == 0)
        red[warp] = M;
    __syncthreads();
    M = red[0];
#pragma unroll
    for (int w = 1; w < APB_SK_MERGE_WARPS; w++)
        M = fmaxf(M, red[w]);
    for (int s = tid; s < nsplit; s += APB_SK_MERGE_THREADS)
        sw[s] = sw[s] == -INFINITY ? 0.f : expf(sw[s] - M);
    __syncthreads();
    float L = 0.f, acc[DE];
#pragma unroll
    for (int e = 0; e < DE; e++)
        acc[e] = 0.f;
#pragma unroll 4
    for (int s = warp; s < nsplit; s += APB_SK_MERGE_WARPS) {
        const float w = sw[s];
        L += sl[s] * w;
#pragma unroll
        for (int e = 0; e < DE; e++)
            acc[e] += pp[(size_t)s * stride + lane + 32 * e] * w;
    }
#pragma unroll
    for (int e = 0; e < DE; e++)
        sacc[warp][lane + 32 * e] = acc[e];
    if (lane == 0)
        red[warp] = L; /* the same sum in every lane of the warp */
    __syncthreads();
    L = 0.f;
#pragma unroll
    for (int w = 0; w < APB_SK_MERGE_WARPS; w++)
        L += red[w];
    float *orow = o + (size_t)i * ld_o + (size_t)qh * D;
    for (int c = tid; c < D; c += APB_SK_MERGE_THREADS) {
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < APB_SK_MERGE_WARPS; w++)
            sum += sacc[w][c];
        orow[c] = L > 0.f ? sum / L : 0.f;
    }
    if (tid == 0)
        lse[(size_t)i * ld_lse + qh] = L > 0.f ? M + logf(L) : -INFINITY;
}

static int apb_sm_count(void)
{
    static int sms[64];
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= 64)
        return 132;
    if (!sms[dev]) {
        int n = 0;
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
        sms[dev] = n > 0 ? n : 132;
    }
    return sms[dev];
}

/* Resident CTAs an SM the coalesced bf16 kernels for 1-4 rows are compiled for (launch bounds):
 * unbounded, ptxas gives the 4-row kernel 255 registers and an SM holds 2 CTAs (197.5 us at 128K
 * keys, 64 % of the copy rate); bounded to 3 (at most 168 registers, no spills) 177.4 us (71 %);
 * 4 (128 registers, 232 bytes of spills) 207.5 us (H200, 2026-12-02, docs/PERFORMANCE.md).
 * APB_SK_MINB=1|4 selects the others. */
static int apb_sk_minb(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("APB_SK_MINB");
        v = e && (!strcmp(e, "1") || !strcmp(e, "4")) ? atoi(e) : 3;
    }
    return v;
}

/* The kernel for rb rows a CTA, compiled for MB resident CTAs an SM (MB > 1: rb <= 4 only). */
template <int D, bool CO, int MB>
static void apb_launch_splitkv_mb(int rb, dim3 grid, cudaStream_t s, const float *q, int ld_q, int n_q,
                                  int q_coord0, const apb_segs &sp, int group, int kvh0, int ns, int ch,
                                  float *part)
{
    const int th = 32 * APB_SK_WARPS;
    if (rb == 1)
        apb_k_attn_splitkv<D, 1, CO, MB><<<grid, th, 0, s>>>(q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else if (rb == 2)
        apb_k_attn_splitkv<D, 2, CO, MB><<<grid, th, 0, s>>>(q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else if (rb == 4)
        apb_k_attn_splitkv<D, 4, CO, MB><<<grid, th, 0, s>>>(q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else
        apb_k_attn_splitkv<D, 8, CO><<<grid, th, 0, s>>>(q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
}

template <int D, bool CO>
static void apb_launch_splitkv_dc(int rb, dim3 grid, cudaStream_t s, const float *q, int ld_q, int n_q,
                                 int q_coord0, const apb_segs &sp, int group, int kvh0, int ns, int ch,
                                 float *part)
{
    if constexpr (CO && D <= 128) { /* the coalesced kernels for 1-4 rows: apb_sk_minb()'s bounds */
        const int mb = rb <= 4 ? apb_sk_minb() : 1;
        if (mb == 3)
            return apb_launch_splitkv_mb<D, CO, 3>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
        if (mb == 4)
            return apb_launch_splitkv_mb<D, CO, 4>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    }
    apb_launch_splitkv_mb<D, CO, 1>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
}

/* APB_SK_COALESCED=0: bf16 caches take the lane-per-key Q K^T (apb_sk_segment) too. */
static bool apb_sk_co(void)
{
    static int co = -1;
    return apb_env_switch("APB_SK_COALESCED", 1, &co);
}

template <int D>
static void apb_launch_splitkv_d(int rb, dim3 grid, cudaStream_t s, const float *q, int ld_q, int n_q,
                                 int q_coord0, const apb_segs &sp, int group, int kvh0, int ns, int ch,
                                 float *part)
{
    if (apb_sk_co())
        apb_launch_splitkv_dc<D, true>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else
        apb_launch_splitkv_dc<D, false>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
}

static void apb_launch_splitkv(int d, int rb, dim3 grid, cudaStream_t s, const float *q, int ld_q, int n_q,
                               int q_coord0, const apb_segs &sp, int group, int kvh0, int ns, int ch,
                               float *part)
{
    if (d == 64)
        apb_launch_splitkv_d<64>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else if (d == 128)
        apb_launch_splitkv_d<128>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
    else
        apb_launch_splitkv_d<256>(rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
}

/* Few rows, a supported head_dim, and K/V rows that allow 16-byte loads (4 fp32 / 8 bf16). */
static bool apb_use_splitkv(int n_q, int group, int head_dim, const apb_cuda_seg *segs, int n_segs)
{
    static int on = -1; /* read once: the check runs for every attention task */
    if (!apb_env_switch("APB_ATTN_SPLITKV", 1, &on))
        return false;
    if (!(head_dim == 64 || head_dim == 128 || head_dim == 256) || n_q * group > APB_SK_MAX_ROWS)
        return false;
    for (int i = 0; i < n_segs; i++)
        if (((uintptr_t)segs[i].k & 15u) || ((uintptr_t)segs[i].v & 15u) ||
            segs[i].ld % (segs[i].bf16 ? 8 : 4))
            return false;
    return true;
}

/* CTAs of apb_k_attn_splitkv<D, RB, CO> one SM holds at once (registers, shared memory). */
template <int D, int RB, bool CO, int MB> static cudaError_t apb_sk_occupancy(int *n)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, apb_k_attn_splitkv<D, RB, CO, MB>, 32 * APB_SK_WARPS, 0);
}

template <int D, int RB, bool CO> static int apb_sk_resident_c(void)
{
    int n = 0;
    const int mb = CO && D <= 128 && RB <= 4 ? apb_sk_minb() : 1; /* as apb_launch_splitkv_dc */
    cudaError_t e = cudaErrorInvalidValue;
    if constexpr (CO && D <= 128 && RB <= 4) {
        if (mb == 3)
            e = apb_sk_occupancy<D, RB, CO, 3>(&n);
        else if (mb == 4)
            e = apb_sk_occupancy<D, RB, CO, 4>(&n);
    }
    if (mb == 1)
        e = apb_sk_occupancy<D, RB, CO, 1>(&n);
    if (e != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        n = 4;
    }
    return n;
}

template <int D, int RB> static int apb_sk_resident_t(void)
{
    return apb_sk_co() ? apb_sk_resident_c<D, RB, true>() : apb_sk_resident_c<D, RB, false>();
}

static int apb_sk_resident(int d, int rb)
{
    static int cache[3][4]; /* d 64 / 128 / 256 x rb 1 / 2 / 4 / 8 (one GPU model per process) */
    const int di = d == 64 ? 0 : d == 128 ? 1 : 2, ri = rb == 1 ? 0 : rb == 2 ? 1 : rb == 4 ? 2 : 3;
    if (!cache[di][ri]) {
        int n = 0;
#define APB_SK_RES(DD)                                                                             \
    n = rb == 1 ? apb_sk_resident_t<DD, 1>() : rb == 2 ? apb_sk_resident_t<DD, 2>()                \
        : rb == 4 ? apb_sk_resident_t<DD, 4>() : apb_sk_resident_t<DD, 8>()
        if (d == 64)
            APB_SK_RES(64);
        else if (d == 128)
            APB_SK_RES(128);
        else
            APB_SK_RES(256);
#undef APB_SK_RES
        cache[di][ri] = n;
    }
    return cache[di][ri];
}

static int apb_sk_rb(int R) { return R >= 8 ? 8 : R >= 4 ? 4 : R >= 2 ? 2 : 1; }

/* Splits for `keys` visible keys: as many CTAs as the GPU holds at once (one full wave: with more,
 * a partial second wave left SMs idle, e.g. 1056 CTAs over 792 slots at 128K keys), at least
 * APB_SK_MIN_CHUNK keys per split (each warp then takes two or more blocks of 32 keys). */
static void apb_splitkv_shape(int n_q, int group, int n_kvh, int keys, int d, int *nsplit, int *chunk)
{
    const int R = n_q * group, rb = apb_sk_rb(R), nrg = (R + rb - 1) / rb;
    int want = apb_sk_resident(d, rb) * apb_sm_count() / (n_kvh * nrg);
    int maxs = (keys + APB_SK_MIN_CHUNK - 1) / APB_SK_MIN_CHUNK;
    int ns = want < maxs ? want : maxs;
    ns = ns < 1 ? 1 : ns > APB_SK_MAX_SPLITS ? APB_SK_MAX_SPLITS : ns;
    int ch = (keys + ns - 1) / ns;
    ch = ch < 1 ? 1 : ch;
    *nsplit = (keys + ch - 1) / ch;
    if (*nsplit < 1)
        *nsplit = 1;
    *chunk = ch;
}

static int apb_visible_keys(const apb_cuda_seg *segs, int n_segs, int qhi)
{
    int n = 0;
    for (int i = 0; i < n_segs; i++)
        n += apb_seg_kend(segs[i], qhi);
    return n;
}

static bool apb_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static bool apb_use_mma(const float *q, int ld_q, int n_q, const apb_cuda_seg *segs, int n_segs,
                        int head_dim, int tensor_cores)
{
    const char *e = getenv("APB_ATTN_IMPL");
    if (e && !strcmp(e, "fp32"))
        return false;
    bool aligned = apb_aligned16(q) && ld_q % 4 == 0;
    for (int i = 0; i < n_segs; i++) /* 16-byte rows for cp.async: 4 fp32 or 8 bf16 elements */
        aligned = aligned && apb_aligned16(segs[i].k) && apb_aligned16(segs[i].v) &&
                  segs[i].ld % (segs[i].bf16 ? 8 : 4) == 0;
    return tensor_cores && aligned && (head_dim == 64 || head_dim == 128) && n_q > 1 &&
           n_segs <= APB_CUDA_MAX_SEGS;
}

static size_t apb_align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* cuDNN's fused SDPA (attention_cudnn.cu) for the tensor-core precision, unless APB_ATTN_IMPL
 * names another kernel; 0 when it does not apply (the own kernels run). */
static size_t apb_cudnn_bytes(int n_q, int q_coord0, const apb_cuda_seg *segs, int n_segs,
                              int n_heads, int n_kv_heads, int n_kvh, int head_dim, int tensor_cores)
{
#ifdef APB_HAVE_CUDNN
    if (!tensor_cores)
        return 0;
    return apb_cudnn_attention_scratch(n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, n_kvh, head_dim);
#else
    (void)n_q, (void)q_coord0, (void)segs, (void)n_segs, (void)n_heads, (void)n_kv_heads, (void)n_kvh;
    (void)head_dim, (void)tensor_cores;
    return 0;
#endif
}

extern "C" size_t apb_cuda_attention_scratch(const float *q, int ld_q, int n_q, int q_coord0,
                                             const apb_cuda_seg *segs, int n_segs, int n_heads,
                                             int n_kv_heads, int n_kvh, int head_dim, int tensor_cores)
{
    if (n_q <= 0 || n_segs > APB_CUDA_MAX_SEGS)
        return 0;
    const int group = n_heads / n_kv_heads, qhi = q_coord0 + n_q - 1;
    if (apb_use_splitkv(n_q, group, head_dim, segs, n_segs)) {
        int ns, ch;
        apb_splitkv_shape(n_q, group, n_kvh, apb_visible_keys(segs, n_segs, qhi), head_dim, &ns, &ch);
        return (size_t)n_kvh * n_q * group * ns * (head_dim + 2) * sizeof(float) + 16;
    }
    size_t cb = apb_cudnn_bytes(n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, n_kvh, head_dim, tensor_cores);
    if (cb)
        return cb;
    if (!apb_use_mma(q, ld_q, n_q, segs, n_segs, head_dim, tensor_cores))
        return 0;
    size_t rows = 0; /* bf16 segments are read in place */
    for (int i = 0; i < n_segs; i++)
        rows += segs[i].bf16 ? 0 : (size_t)apb_seg_kend(segs[i], qhi);
    return 2 * rows * (size_t)n_kvh * head_dim * sizeof(uint16_t) + 16;
}

extern "C" int apb_cuda_attention(const float *q, int ld_q, int n_q, int q_coord0,
                                  const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                  int kvh0, int n_kvh, int head_dim, float *o, int ld_o, float *lse,
                                  int ld_lse, int tensor_cores, void *scratch, size_t scratch_bytes,
                                  cudaStream_t s)
{
    if (n_segs > APB_CUDA_MAX_SEGS || head_dim > 32 * APB_F32_MAXE || n_q <= 0)
        return n_q <= 0 ? 0 : -1;
    const int group = n_heads / n_kv_heads, qh0 = kvh0 * group, nqh = n_kvh * group;
    const int qhi = q_coord0 + n_q - 1;
#ifdef APB_HAVE_CUDNN
    if (scratch && !apb_use_splitkv(n_q, group, head_dim, segs, n_segs) &&
        apb_cudnn_bytes(n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, n_kvh, head_dim, tensor_cores)) {
        int rc = apb_cudnn_attention(q, ld_q, n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0,
                                     n_kvh, head_dim, o, ld_o, lse, ld_lse, scratch, scratch_bytes, s);
        if (rc <= 0)
            return rc;
        /* not applicable after all: the own kernels below (scratch was sized for cuDNN; the mma
         * kernel's need is checked again) */
    }
#endif
    static apb_segs sp; /* 14 KiB: not on the stack; launches copy it (one task per worker thread
                           at a time, so the mutex below is uncontended) */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    sp.n = n_segs;
    for (int i = 0; i < n_segs; i++)
        sp.s[i] = segs[i];
    const float scale = 1.0f / sqrtf((float)head_dim);
    if (scratch && apb_use_splitkv(n_q, group, head_dim, segs, n_segs)) {
        int ns, ch;
        const int keys = apb_visible_keys(segs, n_segs, qhi);
        apb_splitkv_shape(n_q, group, n_kvh, keys, head_dim, &ns, &ch);
        float *part = (float *)scratch;
        const int R = n_q * group;
        const int rb = apb_sk_rb(R);
        dim3 grid(ns, (R + rb - 1) / rb, n_kvh);
        apb_launch_splitkv(head_dim, rb, grid, s, q, ld_q, n_q, q_coord0, sp, group, kvh0, ns, ch, part);
        const unsigned nb = (unsigned)(n_kvh * R);
        if (head_dim == 64)
            apb_k_attn_splitkv_merge<64><<<nb, APB_SK_MERGE_THREADS, 0, s>>>(part, n_q, group, kvh0, ns, o, ld_o, lse, ld_lse);
        else if (head_dim == 128)
            apb_k_attn_splitkv_merge<128><<<nb, APB_SK_MERGE_THREADS, 0, s>>>(part, n_q, group, kvh0, ns, o, ld_o, lse, ld_lse);
        else
            apb_k_attn_splitkv_merge<256><<<nb, APB_SK_MERGE_THREADS, 0, s>>>(part, n_q, group, kvh0, ns, o, ld_o, lse, ld_lse);
        pthread_mutex_unlock(&lock);
        return 0;
    }
    size_t mma_need = 0;
    if (apb_use_mma(q, ld_q, n_q, segs, n_segs, head_dim, tensor_cores)) {
        size_t rows = 0;
        for (int i = 0; i < n_segs; i++)
            rows += segs[i].bf16 ? 0 : (size_t)apb_seg_kend(segs[i], qhi);
        mma_need = 2 * rows * (size_t)n_kvh * head_dim * sizeof(uint16_t);
    }
    if (scratch && mma_need <= scratch_bytes && apb_use_mma(q, ld_q, n_q, segs, n_segs, head_dim, tensor_cores)) {
        /* bf16 copies of the visible rows of this task's KV heads, [rows][n_kvh * d] per segment */
        uint16_t *p = (uint16_t *)scratch;
        const int w = n_kvh * head_dim;
        for (int i = 0; i < n_segs; i++) {
            int ke = apb_seg_kend(segs[i], qhi);
            if (segs[i].bf16) { /* the kernel offsets by the KV head within [kvh0, kvh0 + n_kvh) */
                sp.k16[i] = (const uint16_t *)(const void *)segs[i].k + (size_t)kvh0 * head_dim;
                sp.v16[i] = (const uint16_t *)(const void *)segs[i].v + (size_t)kvh0 * head_dim;
                sp.ld16[i] = segs[i].ld;
                continue;
            }
            sp.ld16[i] = w;
            sp.k16[i] = p;
            apb_cuda_f32_to_bf16(p, w, segs[i].k + (size_t)kvh0 * head_dim, segs[i].ld, ke, w, s);
            p += (size_t)ke * w;
            sp.v16[i] = p;
            apb_cuda_f32_to_bf16(p, w, segs[i].v + (size_t)kvh0 * head_dim, segs[i].ld, ke, w, s);
            p += (size_t)ke * w;
        }
        const float scale_log2 = scale * 1.44269504088896341f;
        if (head_dim == 64)
            apb_launch_mma<64>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0, nqh, o, ld_o, lse, ld_lse, scale_log2, s);
        else
            apb_launch_mma<128>(q, ld_q, n_q, q_coord0, sp, group, qh0, kvh0, nqh, o, ld_o, lse, ld_lse, scale_log2, s);
        pthread_mutex_unlock(&lock);
        return 0;
    }
    dim3 grid(n_q, nqh);
    apb_k_attn_f32<<<grid, 32 * APB_F32_WARPS, 0, s>>>(q, ld_q, n_q, q_coord0, sp, group, qh0, head_dim,
                                                       o, ld_o, lse, ld_lse, scale);
    pthread_mutex_unlock(&lock);
    return 0;
}

extern "C" size_t apb_cuda_attention_tiles_scratch(const apb_cuda_qtile *qt, int n_qt, int q_coord0,
                                                   const apb_cuda_seg *segs, int n_segs, int n_heads,
                                                   int n_kv_heads, int n_kvh, int head_dim, int tensor_cores)
{
    size_t need = 0;
    int n_q = 0;
    for (int i = 0; i < n_qt; i++) { /* the per-tile fallback's need */
        size_t b = apb_cuda_attention_scratch(qt[i].q, qt[i].ld_q, qt[i].rows, q_coord0 + n_q, segs, n_segs,
                                              n_heads, n_kv_heads, n_kvh, head_dim, tensor_cores);
        need = b > need ? b : need;
        n_q += qt[i].rows;
    }
    if (n_qt > 1 && !apb_use_splitkv(n_q, n_heads / n_kv_heads, head_dim, segs, n_segs)) {
        size_t cb = apb_cudnn_bytes(n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, n_kvh, head_dim, tensor_cores);
        if (cb) /* cuDNN's merge writes bf16 o tiles itself */
            return cb > need ? cb : need;
    }
    size_t o32 = 0; /* the own kernels write fp32: a bf16 o tile gets an fp32 copy in the scratch */
    for (int i = 0, r = 0; i < n_qt; r += qt[i].rows, i++)
        if (qt[i].o_bf16 && (n_qt > 1 || apb_use_splitkv(qt[i].rows, n_heads / n_kv_heads, head_dim, segs, n_segs) ||
                             !apb_cudnn_bytes(qt[i].rows, q_coord0 + r, segs, n_segs, n_heads, n_kv_heads, n_kvh,
                                              head_dim, tensor_cores))) {
            size_t b = apb_align256((size_t)qt[i].rows * n_heads * head_dim * sizeof(float));
            o32 = b > o32 ? b : o32;
        }
    return o32 ? apb_align256(need) + o32 + 256 : need;
}

extern "C" int apb_cuda_attention_tiles(const apb_cuda_qtile *qt, int n_qt, int q_coord0,
                                        const apb_cuda_seg *segs, int n_segs, int n_heads, int n_kv_heads,
                                        int kvh0, int n_kvh, int head_dim, int tensor_cores, void *scratch,
                                        size_t scratch_bytes, cudaStream_t s)
{
    int n_q = 0;
    for (int i = 0; i < n_qt; i++)
        n_q += qt[i].rows;
#ifdef APB_HAVE_CUDNN
    if (n_qt > 1 && scratch && !apb_use_splitkv(n_q, n_heads / n_kv_heads, head_dim, segs, n_segs) &&
        apb_cudnn_bytes(n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, n_kvh, head_dim, tensor_cores)) {
        int rc = apb_cudnn_attention_tiles(qt, n_qt, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh,
                                           head_dim, scratch, scratch_bytes, s);
        if (rc <= 0)
            return rc;
    }
#endif
    const int group = n_heads / n_kv_heads, nc = n_kvh * group * head_dim;
    for (int i = 0, r = 0; i < n_qt; r += qt[i].rows, i++) { /* one tile after another on the stream */
        float *o = (float *)qt[i].o;
        int ld_o = qt[i].ld_o;
        size_t sb = scratch_bytes;
        const bool cudnn_here = n_qt == 1 && scratch && !apb_use_splitkv(qt[i].rows, group, head_dim, segs, n_segs) &&
                                apb_cudnn_bytes(qt[i].rows, q_coord0 + r, segs, n_segs, n_heads, n_kv_heads, n_kvh,
                                                head_dim, tensor_cores);
#ifdef APB_HAVE_CUDNN
        if (qt[i].o_bf16 && cudnn_here) { /* cuDNN writes the bf16 tile (in place or by its merge) */
            if (apb_cudnn_attention_tiles(&qt[i], 1, q_coord0 + r, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh,
                                          head_dim, scratch, scratch_bytes, s))
                return -1;
            continue;
        }
#endif
        (void)cudnn_here;
        if (qt[i].o_bf16) { /* the own kernels: an fp32 tile at the scratch's end, then rounded */
            const size_t b = apb_align256((size_t)qt[i].rows * n_heads * head_dim * sizeof(float));
            if (!scratch || scratch_bytes < b + 256)
                return -1;
            sb = (scratch_bytes - b - 256) & ~(size_t)255;
            o = (float *)(((uintptr_t)scratch + sb + 255) & ~(uintptr_t)255);
            ld_o = n_heads * head_dim;
        }
        if (apb_cuda_attention(qt[i].q, qt[i].ld_q, qt[i].rows, q_coord0 + r, segs, n_segs, n_heads, n_kv_heads,
                               kvh0, n_kvh, head_dim, o, ld_o, qt[i].lse, qt[i].ld_lse, tensor_cores,
                               sb ? scratch : nullptr, sb, s))
            return -1;
        if (qt[i].o_bf16)
            apb_cuda_f32_to_bf16((uint16_t *)qt[i].o + (size_t)kvh0 * group * head_dim, qt[i].ld_o,
                                 o + (size_t)kvh0 * group * head_dim, ld_o, qt[i].rows, nc, s);
    }
    return 0;
}
