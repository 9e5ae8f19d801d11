/* SPDX-License-Identifier: MIT */
/** @brief Conversions and elementwise kernels used by several codelets (GEMM glue, SwiGLU). */
#include <stdint.h>

#include "codelets/cuda/common.cuh"

__global__ void apb_k_f32_to_bf16(uint16_t *dst, int ld_dst, const float *src, int ld_src, int rows,
                                  int cols)
{
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        dst[r * ld_dst + c] = apb_f32_to_bf16(src[r * ld_src + c]);
    }
}

/* One block a row, four columns a thread (16-byte loads, 8-byte stores), no 64-bit division an
 * element as the kernel above does. Needs cols, ld_src, ld_dst multiples of 4 and 16-byte aligned
 * src / 8-byte aligned dst (checked by the caller). */
__global__ void apb_k_f32_to_bf16_rows4(uint16_t *__restrict__ dst, int ld_dst, const float *__restrict__ src,
                                        int ld_src, int cols4)
{
    const float4 *s = (const float4 *)(src + (size_t)blockIdx.x * ld_src);
    uint2 *d = (uint2 *)(dst + (size_t)blockIdx.x * ld_dst);
    for (int c = threadIdx.x; c < cols4; c += blockDim.x) {
        const float4 v = __ldg(&s[c]);
        d[c] = make_uint2(apb_bf16_pack2(v.x, v.y), apb_bf16_pack2(v.z, v.w));
    }
}

extern "C" void apb_cuda_f32_to_bf16(uint16_t *dst, int ld_dst, const float *src, int ld_src, int rows,
                                     int cols, cudaStream_t s)
{
    size_t n = (size_t)rows * cols;
    if (!n)
        return;
    /* the row kernel where aligned (~1.4 -> ~3 TB/s: 4 % of a 32K prefill, session 11), else the
     * element-wise one */
    if (cols % 4 == 0 && ld_src % 4 == 0 && ld_dst % 4 == 0 && ((uintptr_t)src & 15) == 0 &&
        ((uintptr_t)dst & 7) == 0) {
        const int cols4 = cols / 4, threads = cols4 >= 256 ? 256 : (cols4 + 31) / 32 * 32;
        apb_k_f32_to_bf16_rows4<<<(unsigned)rows, threads, 0, s>>>(dst, ld_dst, src, ld_src, cols4);
        return;
    }
    apb_k_f32_to_bf16<<<apb_blocks(n, 256), 256, 0, s>>>(dst, ld_dst, src, ld_src, rows, cols);
}

__global__ void apb_k_add_bias(float *out, int ld, const float *bias, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[(i / cols) * ld + i % cols] += bias[i % cols];
}

extern "C" void apb_cuda_add_bias(float *out, int ld, const float *bias, int rows, int cols,
                                  cudaStream_t s)
{
    size_t n = (size_t)rows * cols;
    if (n)
        apb_k_add_bias<<<apb_blocks(n, 256), 256, 0, s>>>(out, ld, bias, rows, cols);
}

template <typename T> __device__ __forceinline__ float apb_ld(const T *p, size_t i);
template <> __device__ __forceinline__ float apb_ld<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float apb_ld<uint16_t>(const uint16_t *p, size_t i)
{
    return apb_bf16_to_f32(p[i]);
}
__device__ __forceinline__ void apb_st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void apb_st(uint16_t *p, size_t i, float v) { p[i] = apb_f32_to_bf16(v); }

/* silu(g) * u, the SwiGLU of one element (both kernels below) */
static __device__ __forceinline__ float apb_silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

template <typename T> __global__ void apb_k_swiglu(T *h, const T *g, const T *u, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        apb_st(h, i, apb_silu_mul(apb_ld(g, i), apb_ld(u, i)));
}

/* bf16 SwiGLU, eight elements a thread (16-byte loads and stores); same arithmetic per element as
 * apb_k_swiglu<uint16_t>, so the same bits. For n % 8 == 0 and 16-byte aligned arrays. */
__global__ void apb_k_swiglu_bf16x8(uint4 *h, const uint4 *g, const uint4 *u, size_t n8)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n8; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 gv = g[i], uv = u[i]; /* g may be h (the codelet's in-place call): plain loads */
        const uint32_t ga[4] = {gv.x, gv.y, gv.z, gv.w}, ua[4] = {uv.x, uv.y, uv.z, uv.w};
        uint32_t ha[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            ha[j] = apb_bf16_pack2(apb_silu_mul(apb_bf16_lo(ga[j]), apb_bf16_lo(ua[j])),
                                   apb_silu_mul(apb_bf16_hi(ga[j]), apb_bf16_hi(ua[j])));
        h[i] = make_uint4(ha[0], ha[1], ha[2], ha[3]);
    }
}

extern "C" void apb_cuda_swiglu(void *h, const void *g, const void *u, size_t n, int elem,
                                cudaStream_t s)
{
    if (!n)
        return;
    if (elem == 2 && n % 8 == 0 && (((uintptr_t)h | (uintptr_t)g | (uintptr_t)u) & 15) == 0) {
        apb_k_swiglu_bf16x8<<<apb_blocks(n / 8, 256), 256, 0, s>>>((uint4 *)h, (const uint4 *)g, (const uint4 *)u, n / 8);
        return;
    }
    if (elem == 2)
        apb_k_swiglu<uint16_t><<<apb_blocks(n, 256), 256, 0, s>>>((uint16_t *)h, (const uint16_t *)g,
                                                                  (const uint16_t *)u, n);
    else
        apb_k_swiglu<float><<<apb_blocks(n, 256), 256, 0, s>>>((float *)h, (const float *)g,
                                                              (const float *)u, n);
}

extern "C" void apb_cuda_zero(void *p, int ld, int rows, int cols, int elem, cudaStream_t s)
{
    cudaMemset2DAsync(p, (size_t)ld * elem, 0, (size_t)cols * elem, (size_t)rows, s);
}

/* ------------------------------------------------------------------ rmsnorm and embed */
template <typename TO>
__global__ void apb_k_rmsnorm(TO *out, int ld_out, const float *x, int ld_x, const float *w, int cols, float eps)
{
    const float *xr = x + (size_t)blockIdx.x * ld_x;
    TO *orow = out + (size_t)blockIdx.x * ld_out;
    float ss = 0.0f;
#pragma unroll 4
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        ss += xr[j] * xr[j];
    ss = apb_block_sum(ss);
    float r = rsqrtf(ss / cols + eps);
#pragma unroll 4
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = xr[j] * r * w[j];
        if constexpr (sizeof(TO) == 2)
            orow[j] = apb_f32_to_bf16(v); /* what the GEMMs' conversion of an fp32 xn gives */
        else
            orow[j] = v;
    }
}

/* One block a row held in registers: VPT float4 loads a thread (16 bytes each), one read of x
 * instead of two, 16- or 8-byte stores (fp32 or bf16 out). The same arithmetic per element as
 * apb_k_rmsnorm; only the order of the sum of squares differs. Needs cols, ld_x, ld_out multiples
 * of 4, 16-byte aligned x and w, an out aligned to its 4-element store, cols / 4 <= VPT * blockDim.x
 * (checked by the caller). */
template <typename TO, int VPT>
__global__ void apb_k_rmsnorm_rows4(TO *__restrict__ out, int ld_out, const float *__restrict__ x, int ld_x,
                                    const float *__restrict__ w, int cols4, float eps)
{
    const float4 *xr = (const float4 *)(x + (size_t)blockIdx.x * ld_x);
    const float4 *w4 = (const float4 *)w;
    float4 v[VPT];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        const int c = threadIdx.x + k * blockDim.x;
        v[k] = c < cols4 ? __ldg(&xr[c]) : make_float4(0.f, 0.f, 0.f, 0.f);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = apb_block_sum(ss);
    const float r = rsqrtf(ss / (4 * cols4) + eps);
#pragma unroll
    for (int k = 0; k < VPT; k++) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c >= cols4)
            break;
        const float4 g = __ldg(&w4[c]);
        const float a = v[k].x * r * g.x, b = v[k].y * r * g.y, d = v[k].z * r * g.z, e = v[k].w * r * g.w;
        if constexpr (sizeof(TO) == 2)
            ((uint2 *)(out + (size_t)blockIdx.x * ld_out))[c] = make_uint2(apb_bf16_pack2(a, b), apb_bf16_pack2(d, e));
        else
            ((float4 *)(out + (size_t)blockIdx.x * ld_out))[c] = make_float4(a, b, d, e);
    }
}

template <typename TO>
static int apb_rmsnorm_rows4(TO *out, int ld_out, const float *x, int ld_x, const float *w, int rows, int cols,
                             float eps, int threads, cudaStream_t s)
{
    if (cols % 4 || ld_x % 4 || ld_out % 4 || (((uintptr_t)x | (uintptr_t)w) & 15) ||
        ((uintptr_t)out & (4 * sizeof(TO) - 1)))
        return 0;
    const int cols4 = cols / 4, vpt = (cols4 + threads - 1) / threads;
    switch (vpt) { /* up to 8192 columns at 256 threads a row (and 32768 at 1024) */
    case 1: apb_k_rmsnorm_rows4<TO, 1><<<rows, threads, 0, s>>>(out, ld_out, x, ld_x, w, cols4, eps); return 1;
    case 2: apb_k_rmsnorm_rows4<TO, 2><<<rows, threads, 0, s>>>(out, ld_out, x, ld_x, w, cols4, eps); return 1;
    case 3: case 4: apb_k_rmsnorm_rows4<TO, 4><<<rows, threads, 0, s>>>(out, ld_out, x, ld_x, w, cols4, eps); return 1;
    case 5: case 6: case 7: case 8:
        apb_k_rmsnorm_rows4<TO, 8><<<rows, threads, 0, s>>>(out, ld_out, x, ld_x, w, cols4, eps); return 1;
    default: return 0;
    }
}

extern "C" void apb_cuda_rmsnorm_to(void *out, int ld_out, int out_bf16, const float *x, int ld_x, const float *w,
                                    int rows, int cols, float eps, cudaStream_t s)
{
    if (rows <= 0)
        return;
    /* few rows (decode): a wide block, so each thread's loads are few and in flight together */
    const int threads = rows <= 32 ? 1024 : 256;
    /* the register-row kernel where aligned (~2 -> ~4 TB/s: 100 -> 48 us a 8192 x 4096 tile,
     * session 12), else the element-wise one */
    if (out_bf16 ? apb_rmsnorm_rows4((uint16_t *)out, ld_out, x, ld_x, w, rows, cols, eps, threads, s)
                 : apb_rmsnorm_rows4((float *)out, ld_out, x, ld_x, w, rows, cols, eps, threads, s))
        return;
    if (out_bf16)
        apb_k_rmsnorm<uint16_t><<<rows, threads, 0, s>>>((uint16_t *)out, ld_out, x, ld_x, w, cols, eps);
    else
        apb_k_rmsnorm<float><<<rows, threads, 0, s>>>((float *)out, ld_out, x, ld_x, w, cols, eps);
}

extern "C" void apb_cuda_rmsnorm(float *out, int ld_out, const float *x, int ld_x, const float *w,
                                 int rows, int cols, float eps, cudaStream_t s)
{
    apb_cuda_rmsnorm_to(out, ld_out, 0, x, ld_x, w, rows, cols, eps, s);
}

__global__ void apb_k_embed(float *x, int ld_x, const int32_t *ids, const void *embed, int ld_e,
                            int elem, int dim, int vocab)
{
    int id = ids[blockIdx.x];
    float *xr = x + (size_t)blockIdx.x * ld_x;
    bool ok = id >= 0 && id < vocab;
#pragma unroll 4
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        xr[j] = ok ? apb_load_any(embed, (size_t)id * ld_e + j, elem) : 0.0f; /* ids are validated before submission; like the CPU codelet */
}

extern "C" void apb_cuda_embed(float *x, int ld_x, const int32_t *ids, const void *embed, int ld_e,
                               int elem, int n, int dim, int vocab, cudaStream_t s)
{
    if (n > 0)
        apb_k_embed<<<n, n <= 32 ? 1024 : 256, 0, s>>>(x, ld_x, ids, embed, ld_e, elem, dim, vocab);
}
