/* SPDX-License-Identifier: MIT */
/**
 * @brief Attention over KV segments (flash-attention style online softmax on the CPU).
 *
 * One task handles one query tile and all heads. For each KV head, the G = H/Hk query heads of
 * its group are stacked row-interleaved (row i*G + g), so one SGEMM per key chunk serves the whole
 * group and causal chunks skip the rows that see none of their keys. Scores come from
 * S = (Q/sqrt(d)) K^T, the softmax is streamed chunk by chunk (running max m, sum l), and the
 * output accumulates P V with beta = 1. The log-sum-exp of every row is returned so that partial
 * results over disjoint key sets can be merged exactly (ring attention, APB decode).
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"
#include "runtime/apb_runtime.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

enum { _APB_ATTN_KC = 256 };

/* exp(x) for x <= 0, written so GCC vectorizes it (rel. error < 2e-7 on [-87, 0]). Round-to-nearest
 * uses the 1.5*2^23 trick instead of rintf so no libm call blocks vectorization. */
static inline float _apb_exp_neg(float x)
{
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } sc = {.i = ((int32_t)n + 127) << 23};
    return p * sc.f;
}

/* max(mx, s[0..n)), NaN scores ignored as `s[j] > mx ? s[j] : mx` does. Four accumulators: the
 * one-accumulator loop GCC makes of it waited on each max's latency (perf: 13 % of a bf16
 * attention task at 4K). Exact, so the result is the same bits. */
static float _apb_row_max(const float *s, int n, float mx)
{
    int j = 0;
#if defined(__AVX2__)
    if (n >= 32) {
        __m256 a0 = _mm256_set1_ps(mx), a1 = a0, a2 = a0, a3 = a0;
        for (; j + 32 <= n; j += 32) { /* max_ps(x, a): a when x is NaN */
            a0 = _mm256_max_ps(_mm256_loadu_ps(s + j), a0);
            a1 = _mm256_max_ps(_mm256_loadu_ps(s + j + 8), a1);
            a2 = _mm256_max_ps(_mm256_loadu_ps(s + j + 16), a2);
            a3 = _mm256_max_ps(_mm256_loadu_ps(s + j + 24), a3);
        }
        float t[8];
        _mm256_storeu_ps(t, _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
        for (int i = 0; i < 8; i++)
            mx = t[i] > mx ? t[i] : mx;
    }
#endif
    for (; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    return mx;
}

/* s[j] = exp(s[j] - mx) for j < n; returns the sum. AVX2+FMA when compiled for it (configure adds
 * -mavx2 -mfma when the build machine has them), else the scalar loop. */
static float _apb_exp_sum(float *s, int n, float mx)
{
    int j = 0;
    float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 vmx = _mm256_set1_ps(mx), lo = _mm256_set1_ps(-87.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), magic = _mm256_set1_ps(12582912.0f);
    const __m256 ln2hi = _mm256_set1_ps(0.693145751953125f), ln2lo = _mm256_set1_ps(1.428606765330187e-06f);
    __m256 vs = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx), lo);
        __m256 nn = _mm256_sub_ps(_mm256_fmadd_ps(x, log2e, magic), magic);
        __m256 r = _mm256_fnmadd_ps(nn, ln2lo, _mm256_fnmadd_ps(nn, ln2hi, x));
        __m256 p = _mm256_set1_ps(1.9875691500e-4f);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
        p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        _mm256_storeu_ps(s + j, p);
        vs = _mm256_add_ps(vs, p);
    }
    float part[8];
    _mm256_storeu_ps(part, vs);
    for (int i = 0; i < 8; i++)
        sum += part[i];
#endif
    for (; j < n; j++) {
        s[j] = _apb_exp_neg(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

void apb_attention_f32(const float *q, int ld_q, int n_q, int q_coord0,
                       const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                       int n_kv_heads, int head_dim, float *o, int ld_o, float *lse, int ld_lse)
{
    apb_attention_heads_f32(q, ld_q, n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, 0, n_kv_heads,
                            head_dim, o, ld_o, lse, ld_lse);
}

/* dst (rows x d, dense) = the bf16 rows of src (row stride ld) widened to fp32 (exact) */
static void _apb_widen_rows(float *dst, const uint16_t *src, int ld, int rows, int d)
{
    for (int j = 0; j < rows; j++)
        for (int c = 0; c < d; c++)
            dst[(size_t)j * d + c] = apb_bf16_to_f32(src[(size_t)j * ld + c]);
}

/* mm16: the two products of every chunk through oneDNN's bf16 matmul (gemm_dnnl.c; --precision
 * bf16 prefill tiles): Q, K, P and V rounded to bf16, fp32 accumulation, the softmax in fp32 as
 * before. oneDNN compiles a kernel per shape, so the shapes are bounded: the rows of a chunk start
 * at a multiple of 32 from the end (the extra rows see none of its keys: P = 0 there) and the keys
 * are padded to a multiple of 32 with zero K / V rows. A refused call runs the SGEMM pair. */
static void _apb_attention_heads(const float *q, int ld_q, int n_q, int q_coord0,
                                 const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads, int n_kv_heads,
                                 int kvh0, int n_kvh, int head_dim, float *o, int ld_o, float *lse, int ld_lse,
                                 int mm16)
{
    const int d = head_dim, G = n_heads / n_kv_heads, R = n_q * G, KC = _APB_ATTN_KC;
    const float scale = 1.0f / sqrtf((float)d);
    /* per-thread scratch, kept between tasks: fresh multi-100-KiB mallocs page-fault every task */
    float *scratch = _apb_thread_scratch(_APB_SCRATCH_ATTENTION,
                                         (size_t)R * (2 * (size_t)d + KC + 2) + 2 * (size_t)KC * d);
    /* bf16 copies for mm16: Q (R x d), a chunk's K and V (KC x d), P (R x KC) */
    uint16_t *q16 = mm16 ? (uint16_t *)(void *)_apb_thread_scratch(
                               _APB_SCRATCH_ATTENTION16, ((size_t)R * d + 2 * (size_t)KC * d + (size_t)R * KC + 1) / 2)
                         : NULL;
    uint16_t *k16 = q16 ? q16 + (size_t)R * d : NULL, *v16 = q16 ? k16 + (size_t)KC * d : NULL;
    uint16_t *p16 = q16 ? v16 + (size_t)KC * d : NULL;
    mm16 = q16 != NULL;
    float *qs = scratch, *acc = qs ? qs + (size_t)R * d : NULL, *S = qs ? acc + (size_t)R * d : NULL;
    float *m = qs ? S + (size_t)R * KC : NULL, *l = qs ? m + R : NULL;
    float *kw = qs ? l + R : NULL, *vw = qs ? kw + (size_t)KC * d : NULL; /* widened bf16 K/V */
    if (!qs) {
        /* Cannot signal from a codelet: poison the output so the error is visible downstream. */
        for (int i = 0; i < n_q; i++)
            for (int c = 0; c < n_heads * d; c++)
                o[(size_t)i * ld_o + c] = NAN;
        goto out;
    }
    for (int kvh = kvh0; kvh < kvh0 + n_kvh; kvh++) {
        for (int i = 0; i < n_q; i++)
            for (int g = 0; g < G; g++) {
                const float *src = q + (size_t)i * ld_q + (size_t)(kvh * G + g) * d;
                float *dst = qs + (size_t)(i * G + g) * d;
                for (int c = 0; c < d; c++)
                    dst[c] = src[c] * scale;
            }
        if (mm16)
            apb_bf16_from_f32_n(q16, qs, (size_t)R * d);
        memset(acc, 0, sizeof(float) * (size_t)R * d);
        for (int r = 0; r < R; r++) {
            m[r] = -INFINITY;
            l[r] = 0.0f;
        }
        for (int s = 0; s < n_segs; s++) {
            const struct _apb_attn_seg_cpu *sg = &segs[s];
            for (int j0 = 0; j0 < sg->len; j0 += KC) {
                int kc = sg->len - j0 < KC ? sg->len - j0 : KC;
                long lo = sg->min_q_coord;
                if (sg->causal && (long)sg->coord0 + j0 > lo)
                    lo = (long)sg->coord0 + j0;
                long i0 = lo - q_coord0;
                if (i0 < 0)
                    i0 = 0;
                if (i0 >= n_q) {
                    if (sg->causal)
                        break; /* later chunks are later still */
                    continue;
                }
                int r0 = (int)i0 * G, nr = R - r0, ldkv = sg->ld;
                const float *kp, *vp;
                /* bf16 segments: this chunk's rows of head kvh, widened to fp32 (exact) only for
                 * the SGEMM products (the bf16 products take the bits as they are) */
                const uint16_t *kb = NULL, *vb = NULL;
                kp = vp = NULL;
                if (sg->bf16) {
                    kb = (const uint16_t *)(const void *)sg->k + (size_t)j0 * sg->ld + (size_t)kvh * d;
                    vb = (const uint16_t *)(const void *)sg->v + (size_t)j0 * sg->ld + (size_t)kvh * d;
                } else {
                    kp = sg->k + (size_t)j0 * sg->ld + (size_t)kvh * d;
                    vp = sg->v + (size_t)j0 * sg->ld + (size_t)kvh * d;
                }
                /* mm16: rows [rp, R) (rp <= r0, a multiple of 32 from the end), keys padded to np */
                int rp = r0, np = kc, so = 0, use16 = 0;
                if (mm16) {
                    int mp = (nr + 31) / 32 * 32;
                    rp = mp > R ? 0 : R - mp;
                    np = (kc + 31) / 32 * 32;
                    so = r0 - rp;
                    for (int j = 0; j < kc; j++) {
                        if (kb) {
                            memcpy(k16 + (size_t)j * d, kb + (size_t)j * ldkv, sizeof(uint16_t) * d);
                            memcpy(v16 + (size_t)j * d, vb + (size_t)j * ldkv, sizeof(uint16_t) * d);
                        } else {
                            apb_bf16_from_f32_n(k16 + (size_t)j * d, kp + (size_t)j * ldkv, (size_t)d);
                            apb_bf16_from_f32_n(v16 + (size_t)j * d, vp + (size_t)j * ldkv, (size_t)d);
                        }
                    }
                    memset(k16 + (size_t)kc * d, 0, sizeof(uint16_t) * (size_t)(np - kc) * d);
                    memset(v16 + (size_t)kc * d, 0, sizeof(uint16_t) * (size_t)(np - kc) * d);
                    use16 = apb_dnnl_gemm_bf16(R - rp, np, d, q16 + (size_t)rp * d, (size_t)d, k16, (size_t)d, 1, S,
                                               (size_t)KC, 0) == 0;
                    if (!use16)
                        rp = r0, np = kc, so = 0;
                }
                if (!use16 && kb) { /* widen for the SGEMM pair */
                    _apb_widen_rows(kw, kb, ldkv, kc, d);
                    _apb_widen_rows(vw, vb, ldkv, kc, d);
                    kp = kw, vp = vw, ldkv = d;
                }
                if (!use16)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kc, d, 1.0f,
                                qs + (size_t)r0 * d, d, kp, ldkv, 0.0f, S, KC);
                for (int rr = 0; rr < nr; rr++) {
                    int r = r0 + rr;
                    long qc = (long)q_coord0 + r / G;
                    int nvis = kc;
                    if (sg->causal && qc - sg->coord0 - j0 + 1 < nvis)
                        nvis = (int)(qc - sg->coord0 - j0 + 1);
                    float *srow = S + (size_t)(rr + so) * KC;
                    float mx = _apb_row_max(srow, nvis, m[r]);
                    float alpha = m[r] == -INFINITY ? 0.0f : _apb_exp_neg(m[r] - mx);
                    float sum = _apb_exp_sum(srow, nvis, mx);
                    for (int j = nvis; j < kc; j++)
                        srow[j] = 0.0f;
                    l[r] = l[r] * alpha + sum;
                    m[r] = mx;
                    if (alpha != 1.0f) {
                        float *arow = acc + (size_t)r * d;
                        for (int c = 0; c < d; c++)
                            arow[c] *= alpha;
                    }
                }
                if (use16) { /* P in bf16: rows [rp, r0) and keys [kc, np) are 0 */
                    memset(p16, 0, sizeof(uint16_t) * (size_t)so * np);
                    for (int rr = so; rr < R - rp; rr++) {
                        apb_bf16_from_f32_n(p16 + (size_t)rr * np, S + (size_t)rr * KC, (size_t)kc);
                        memset(p16 + (size_t)rr * np + kc, 0, sizeof(uint16_t) * (size_t)(np - kc));
                    }
                    if (apb_dnnl_gemm_bf16(R - rp, d, np, p16, (size_t)np, v16, (size_t)d, 0, acc + (size_t)rp * d,
                                           (size_t)d, 1) == 0)
                        continue;
                    /* refused: the fp32 product of the same P (rows r0.. of S start at row so) */
                    if (kb) {
                        _apb_widen_rows(vw, vb, ldkv, kc, d);
                        vp = vw, ldkv = d;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, kc, 1.0f, S + (size_t)so * KC, KC,
                                vp, ldkv, 1.0f, acc + (size_t)r0 * d, d);
                    continue;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, kc, 1.0f, S, KC, vp,
                            ldkv, 1.0f, acc + (size_t)r0 * d, d);
            }
        }
        for (int i = 0; i < n_q; i++)
            for (int g = 0; g < G; g++) {
                int r = i * G + g, h = kvh * G + g;
                float *dst = o + (size_t)i * ld_o + (size_t)h * d;
                if (l[r] > 0.0f) {
                    float inv = 1.0f / l[r];
                    for (int c = 0; c < d; c++)
                        dst[c] = acc[(size_t)r * d + c] * inv;
                    lse[(size_t)i * ld_lse + h] = m[r] + logf(l[r]);
                } else {
                    memset(dst, 0, sizeof(float) * d);
                    lse[(size_t)i * ld_lse + h] = -INFINITY;
                }
            }
    }
out:
    return;
}

void apb_attention_heads_f32(const float *q, int ld_q, int n_q, int q_coord0,
                             const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                             int n_kv_heads, int kvh0, int n_kvh, int head_dim, float *o, int ld_o,
                             float *lse, int ld_lse)
{
    _apb_attention_heads(q, ld_q, n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh, head_dim, o, ld_o,
                         lse, ld_lse, 0);
}

void apb_attention_heads_bf16mm(const float *q, int ld_q, int n_q, int q_coord0,
                                const struct _apb_attn_seg_cpu *segs, int n_segs, int n_heads,
                                int n_kv_heads, int kvh0, int n_kvh, int head_dim, float *o, int ld_o,
                                float *lse, int ld_lse)
{
    _apb_attention_heads(q, ld_q, n_q, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh, head_dim, o, ld_o,
                         lse, ld_lse, apb_dnnl_enabled());
}

/* ------------------------------------------------------------------ codelet */
/* Buffers: the n_qt query tiles, K and V of every segment, the n_qt output tiles, the n_qt LSE
 * tiles. The query tiles' rows follow each other: tile i starts at q_coord0 + the rows before it. */
struct _apb_attn_args {
    int q_coord0, n_heads, n_kv_heads, kvh0, n_kvh, head_dim, n_segs, n_qt;
    struct _apb_seg_arg seg[];
};
#define _APB_ATTN_Q(b, a, i) ((b)[(i)])
#define _APB_ATTN_K(b, a, s) ((b)[(a)->n_qt + 2 * (s)])
#define _APB_ATTN_V(b, a, s) ((b)[(a)->n_qt + 2 * (s) + 1])
#define _APB_ATTN_O(b, a, i) ((b)[(a)->n_qt + 2 * (a)->n_segs + (i)])
#define _APB_ATTN_L(b, a, i) ((b)[2 * (a)->n_qt + 2 * (a)->n_segs + (i)])

double apb_attn_seg_pairs(int q_coord0, int n_q, int len, int coord0, int causal, int min_q_coord)
{
    /* rows that see the segment at all: [lo, hi) */
    double lo = q_coord0 > min_q_coord ? q_coord0 : min_q_coord, hi = (double)q_coord0 + n_q, L = len;
    if (hi <= lo || len <= 0)
        return 0;
    if (!causal)
        return (hi - lo) * L;
    /* causal: row q sees min(max(q - coord0 + 1, 0), len) keys. The ramp: rows [a, b) below
     * coord0 + len - 1 see q - coord0 + 1 keys each; the rows from coord0 + len - 1 on see all */
    double c0 = coord0, full = c0 + L - 1, pairs = 0;
    double a = lo > c0 ? lo : c0, b = hi < full ? hi : full;
    if (b > a)
        pairs += ((a - c0 + 1) + (b - c0)) * (b - a) / 2;
    a = lo > full ? lo : full;
    if (hi > a)
        pairs += (hi - a) * L;
    return pairs;
}

/* Counted over the visible pairs only (a causal tile is half its square), as FlashAttention and
 * cuDNN count theirs; before session 12 a causal segment counted its whole rectangle, so the
 * traces' attention rates of causal tiles were overstated (up to 2x a tile on the diagonal). */
static double _apb_attn_flops(const struct _apb_attn_args *a, int n_q)
{
    double pairs = 0;
    for (int s = 0; s < a->n_segs; s++)
        pairs += apb_attn_seg_pairs(a->q_coord0, n_q, a->seg[s].len, a->seg[s].coord0, a->seg[s].causal,
                                    a->seg[s].min_q_coord);
    return 4.0 * pairs * a->n_heads * a->head_dim * a->n_kvh / a->n_kv_heads;
}

static void _apb_attention_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_attn_args *a = cl_arg;
    struct _apb_attn_seg_cpu segs_local[16];
    struct _apb_attn_seg_cpu *segs = a->n_segs <= 16 ? segs_local : malloc(sizeof *segs * a->n_segs);
    for (int s = 0; s < a->n_segs; s++)
        segs[s] = _apb_seg_cpu(_APB_ATTN_K(buffers, a, s), _APB_ATTN_V(buffers, a, s), &a->seg[s]);
    int r = 0;
    for (int i = 0; i < a->n_qt; i++) { /* tile after tile (one task per tile keeps the cores busy) */
        void *qb = _APB_ATTN_Q(buffers, a, i), *ob = _APB_ATTN_O(buffers, a, i), *lb = _APB_ATTN_L(buffers, a, i);
        int n_q = _APB_ROWS(qb);
        /* bf16 runs: prefill tiles (many rows) multiply in bf16 through oneDNN, as the GPU's do */
        int mm16 = n_q >= 32 && apb_runtime_precision() == APB_PREC_BF16;
        /* a bf16 o tile: this task's columns computed in fp32, then rounded (nearest even) */
        const int o16 = _apb_elem(ob) == 2, c0 = a->kvh0 * (a->n_heads / a->n_kv_heads) * a->head_dim;
        const int nc = a->n_kvh * (a->n_heads / a->n_kv_heads) * a->head_dim;
        float *o = o16 ? _apb_thread_scratch(_APB_SCRATCH_BF16_OUT, (size_t)n_q * a->n_heads * a->head_dim)
                       : (float *)_APB_PTR(ob);
        int ld_o = o16 ? a->n_heads * a->head_dim : _APB_LD(ob);
        if (!o) {
            _apb_task_fail(APB_E_NOMEM, "attention: out of host memory");
            break;
        }
        (mm16 ? apb_attention_heads_bf16mm : apb_attention_heads_f32)(
            _APB_PTR(qb), _APB_LD(qb), n_q, a->q_coord0 + r, segs, a->n_segs, a->n_heads, a->n_kv_heads,
            a->kvh0, a->n_kvh, a->head_dim, o, ld_o, _APB_PTR(lb), _APB_LD(lb));
        for (int j = 0; o16 && j < n_q; j++)
            apb_bf16_from_f32_n((uint16_t *)_APB_PTR(ob) + (size_t)j * _APB_LD(ob) + c0, o + (size_t)j * ld_o + c0,
                                (size_t)nc);
        r += n_q;
    }
    if (segs != segs_local)
        free(segs);
    _apb_op_account(APB_OP_ATTENTION, t0, _apb_attn_flops(a, r));
}

#ifdef APB_CUDA
static void _apb_attention_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_attn_args *a = cl_arg;
    if (a->n_segs > APB_CUDA_MAX_SEGS) {
        _apb_task_fail(APB_E_RUNTIME, "attention: %d KV segments; the GPU kernel takes at most %d",
                       a->n_segs, APB_CUDA_MAX_SEGS);
        return;
    }
    apb_cuda_seg segs[APB_CUDA_MAX_SEGS];
    for (int s = 0; s < a->n_segs; s++) {
        void *kb = _APB_ATTN_K(buffers, a, s), *vb = _APB_ATTN_V(buffers, a, s);
        segs[s] = _apb_seg_cuda(kb, vb, &a->seg[s]);
        if (_APB_LD(vb) != _APB_LD(kb) || _apb_elem(vb) != _apb_elem(kb)) {
            _apb_task_fail(APB_E_RUNTIME, "attention: K and V tiles of a segment differ in layout");
            return;
        }
    }
    apb_cuda_qtile qt_local[16];
    apb_cuda_qtile *qt = a->n_qt <= 16 ? qt_local : malloc(sizeof *qt * (size_t)a->n_qt);
    if (!qt) {
        _apb_task_fail(APB_E_NOMEM, "attention: out of memory");
        return;
    }
    int n_q = 0;
    for (int i = 0; i < a->n_qt; i++) {
        void *qb = _APB_ATTN_Q(buffers, a, i), *ob = _APB_ATTN_O(buffers, a, i), *lb = _APB_ATTN_L(buffers, a, i);
        qt[i] = (apb_cuda_qtile){.q = _APB_PTR(qb), .o = _APB_PTR(ob), .lse = _APB_PTR(lb), .ld_q = _APB_LD(qb),
                                 .ld_o = _APB_LD(ob), .ld_lse = _APB_LD(lb), .rows = _APB_ROWS(qb),
                                 .o_bf16 = _apb_elem(ob) == 2};
        n_q += qt[i].rows;
    }
    int tc = _apb_precision() == APB_PREC_BF16;
    size_t scr_b = apb_cuda_attention_tiles_scratch(qt, a->n_qt, a->q_coord0, segs, a->n_segs, a->n_heads,
                                                    a->n_kv_heads, a->n_kvh, a->head_dim, tc);
    void *scr = scr_b ? _apb_cuda_scratch(_APB_CUDA_SCRATCH_ATTN, scr_b) : NULL;
    if (scr_b && !scr) { /* out of GPU memory: the sticky error is set */
        if (qt != qt_local)
            free(qt);
        return;
    }
    if (apb_cuda_attention_tiles(qt, a->n_qt, a->q_coord0, segs, a->n_segs, a->n_heads, a->n_kv_heads, a->kvh0,
                                 a->n_kvh, a->head_dim, tc, scr, scr_b, starpu_cuda_get_local_stream()))
        _apb_task_fail(APB_E_RUNTIME, "attention: head_dim %d is not supported on the GPU (at most 256),"
                       " or cuDNN failed", a->head_dim);
    if (qt != qt_local)
        free(qt);
    _apb_cuda_check("attention");
    _apb_op_count(APB_OP_ATTENTION, _apb_attn_flops(a, n_q));
}
#endif

/* Cost follows (query rows x visible keys x heads): a regression on that product. */
static size_t _apb_attention_size_base(struct starpu_task *task, unsigned nimpl)
{
    (void)nimpl;
    const struct _apb_attn_args *a = task->cl_arg;
    size_t keys = 0;
    for (int s = 0; s < a->n_segs; s++)
        keys += (size_t)a->seg[s].len;
    size_t rows = 0;
    for (int i = 0; i < a->n_qt; i++)
        rows += starpu_matrix_get_ny(STARPU_TASK_GET_HANDLE(task, i));
    return keys * rows * (size_t)a->n_heads * (size_t)a->n_kvh / (size_t)a->n_kv_heads;
}

static struct starpu_perfmodel _apb_attention_model = {
    .type = STARPU_NL_REGRESSION_BASED, /* a n^b + c; history when the size was seen */
    .symbol = "apb_attention",
    .size_base = _apb_attention_size_base,
};

static struct starpu_codelet _apb_attention_cl = {
    .cpu_funcs = {_apb_attention_cpu},
    .cpu_funcs_name = {"_apb_attention_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_attention_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_attention_model,
    .name = "attention",
};

int apb_insert_attention(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                         int n_heads, int n_kv_heads, int head_dim, apb_handle o, apb_handle lse,
                         apb_task_tag tag)
{
    return apb_insert_attention_heads(q, q_coord0, segs, n_segs, n_heads, n_kv_heads, 0, n_kv_heads,
                                      head_dim, o, lse, tag);
}

static int _apb_insert_attention(const apb_handle *q, int n_qt, int q_coord0, const apb_attn_seg *segs,
                                 int n_segs, int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                                 const apb_handle *o, const apb_handle *lse, apb_task_tag tag)
{
    if (n_qt <= 0 || n_segs < 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 || kvh0 < 0 ||
        n_kvh <= 0 || kvh0 + n_kvh > n_kv_heads)
        return -EINVAL;
    int rows = 0;
    for (int i = 0; i < n_qt; i++) {
        if (!q[i] || !o[i] || !lse[i] || apb_tile_cols(q[i]) != n_heads * head_dim ||
            apb_tile_cols(o[i]) != n_heads * head_dim || apb_tile_cols(lse[i]) != n_heads ||
            apb_tile_rows(o[i]) != apb_tile_rows(q[i]) || apb_tile_rows(lse[i]) != apb_tile_rows(q[i]))
            return -EINVAL;
        rows += apb_tile_rows(q[i]);
    }
    size_t asz = sizeof(struct _apb_attn_args) + (size_t)n_segs * sizeof(struct _apb_seg_arg);
    struct _apb_attn_args *a = malloc(asz);
    struct starpu_data_descr *d = malloc(sizeof *d * (size_t)(3 * n_qt + 2 * n_segs));
    if (!a || !d) {
        free(a);
        free(d);
        return -ENOMEM;
    }
    *a = (struct _apb_attn_args){.q_coord0 = q_coord0, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                                 .kvh0 = kvh0, .n_kvh = n_kvh, .head_dim = head_dim, .n_segs = n_segs,
                                 .n_qt = n_qt};
    int nd = 0;
    for (int i = 0; i < n_qt; i++)
        d[nd++] = (struct starpu_data_descr){q[i], STARPU_R};
    if (_apb_segs_pack(segs, n_segs, n_kv_heads * head_dim, a->seg, d + nd)) {
        free(a);
        free(d);
        return -EINVAL;
    }
    nd += 2 * n_segs;
    /* a head subset writes only its columns: the others are kept (RW) */
    enum starpu_data_access_mode om = n_kvh == n_kv_heads ? STARPU_W : STARPU_RW;
    for (int i = 0; i < n_qt; i++)
        d[nd++] = (struct starpu_data_descr){o[i], om};
    for (int i = 0; i < n_qt; i++)
        d[nd++] = (struct starpu_data_descr){lse[i], om};
    double flops = _apb_attn_flops(a, rows);
    int ret = apb_task_insert(&_apb_attention_cl, STARPU_DATA_MODE_ARRAY, d, nd,
                                 STARPU_CL_ARGS, a, asz, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                                 STARPU_FLOPS, flops, STARPU_NAME, _apb_task_name("attention", tag), 0);
    free(d);
    return _apb_insert_check(ret, "attention");
}

int apb_insert_attention_heads(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                               int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                               apb_handle o, apb_handle lse, apb_task_tag tag)
{
    return _apb_insert_attention(&q, 1, q_coord0, segs, n_segs, n_heads, n_kv_heads, kvh0, n_kvh, head_dim, &o,
                                 &lse, tag);
}

int apb_insert_attention_tiles(const apb_handle *q, int n_qt, int q_coord0, const apb_attn_seg *segs,
                               int n_segs, int n_heads, int n_kv_heads, int head_dim, const apb_handle *o,
                               const apb_handle *lse, apb_task_tag tag)
{
    return _apb_insert_attention(q, n_qt, q_coord0, segs, n_segs, n_heads, n_kv_heads, 0, n_kv_heads, head_dim,
                                 o, lse, tag);
}
