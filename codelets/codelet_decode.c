/* SPDX-License-Identifier: MIT */
/** @brief Decode steps split over the CPU workers: MLP and LM-head row blocks, and their gather. */
#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "codelets/apb_decode.h"
#include "codelets/apb_kernels_cpu.h"
#include "codelets/codelet_common.h"
#include "common/apb_bf16.h"

int apb_decode_split(void)
{
    if (starpu_cuda_worker_get_count() > 0 || apb_runtime_nranks() > 1)
        return 1;
    int n = (int)starpu_cpu_worker_get_count();
    return n < 1 ? 1 : n > APB_DECODE_MAX_SPLIT ? APB_DECODE_MAX_SPLIT : n;
}

/* Row r0 of a weight buffer (fp32 or bf16) as a pointer to its first element, column c0. */
static const void *_apb_w_at(void *buf, int r0, int c0)
{
    size_t off = (size_t)r0 * _APB_LD(buf) + c0;
    return _apb_elem(buf) == 2 ? (const void *)((const uint16_t *)_APB_PTR(buf) + off)
                               : (const void *)((const float *)_APB_PTR(buf) + off);
}

struct _apb_mlp_part_args {
    int h0, h1;
};

static void _apb_mlp_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_mlp_part_args *a = cl_arg;
    const float *xn = _APB_PTR(buffers[0]);
    int dim = _APB_COLS(buffers[0]), nh = a->h1 - a->h0;
    float *z = _APB_PTR(buffers[4]);
    float *g = _apb_thread_scratch(_APB_SCRATCH_MLP, 2 * (size_t)nh);
    if (!g) {
        _apb_task_fail(APB_E_NOMEM, "mlp: out of host memory");
        return;
    }
    float *u = g + nh;
    apb_gemv(g, xn, _apb_w_at(buffers[1], a->h0, 0), _apb_elem(buffers[1]) == 2,
             (size_t)_APB_LD(buffers[1]), NULL, dim, nh, 0);
    apb_gemv(u, xn, _apb_w_at(buffers[2], a->h0, 0), _apb_elem(buffers[2]) == 2,
             (size_t)_APB_LD(buffers[2]), NULL, dim, nh, 0);
    for (int i = 0; i < nh; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    apb_gemv(z, g, _apb_w_at(buffers[3], 0, a->h0), _apb_elem(buffers[3]) == 2,
             (size_t)_APB_LD(buffers[3]), NULL, nh, dim, 0);
    _apb_op_account(APB_OP_MLP, t0, 6.0 * dim * nh);
}

static struct starpu_perfmodel _apb_mlp_part_model = {.type = STARPU_HISTORY_BASED,
                                                      .symbol = "apb_mlp_part"};
static struct starpu_codelet _apb_mlp_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_mlp_part_cpu},
    .cpu_funcs_name = {"_apb_mlp_part_cpu"},
    .nbuffers = 5,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_mlp_part_model,
    .name = "mlp_part",
};

int apb_insert_mlp_part(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                        apb_handle z, int h0, int h1, apb_task_tag tag)
{
    if (h0 < 0 || h1 <= h0 || h1 > apb_tile_rows(w_gate))
        return -EINVAL;
    struct _apb_mlp_part_args a = {h0, h1};
    int ret = apb_task_insert(&_apb_mlp_part_cl, STARPU_R, xn, STARPU_R, w_gate, STARPU_R, w_up,
                              STARPU_R, w_down, STARPU_W, z, STARPU_CL_ARGS,
                              _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                              APB_ON_HOST(tag), STARPU_FLOPS, 6.0 * apb_tile_cols(xn) * (h1 - h0),
                              STARPU_NAME, _apb_task_name("mlp_part", tag), 0);
    return _apb_insert_check(ret, "mlp_part");
}

struct _apb_linear_part_args {
    int c0, c1;
};

static void _apb_linear_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_linear_part_args *a = cl_arg;
    int n_out = _APB_ROWS(buffers[1]);
    apb_gemv(_APB_PTR(buffers[2]), (const float *)_APB_PTR(buffers[0]) + a->c0,
             _apb_w_at(buffers[1], 0, a->c0), _apb_elem(buffers[1]) == 2, (size_t)_APB_LD(buffers[1]),
             NULL, a->c1 - a->c0, n_out, 0);
    _apb_op_account(APB_OP_LINEAR, t0, 2.0 * n_out * (a->c1 - a->c0));
}

static struct starpu_perfmodel _apb_linear_part_model = {.type = STARPU_HISTORY_BASED,
                                                         .symbol = "apb_linear_part"};
static struct starpu_codelet _apb_linear_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_linear_part_cpu},
    .cpu_funcs_name = {"_apb_linear_part_cpu"},
    .nbuffers = 3,
    .modes = {STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_linear_part_model,
    .name = "linear_part",
};

int apb_insert_linear_part(apb_handle in, apb_handle w, apb_handle z, int c0, int c1, apb_task_tag tag)
{
    if (c0 < 0 || c1 <= c0 || c1 > apb_tile_cols(w) || apb_tile_cols(in) != apb_tile_cols(w) ||
        apb_tile_cols(z) != apb_tile_rows(w))
        return -EINVAL;
    struct _apb_linear_part_args a = {c0, c1};
    int ret = apb_task_insert(&_apb_linear_part_cl, STARPU_R, in, STARPU_R, w, STARPU_W, z,
                              STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                              STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                              STARPU_FLOPS, 2.0 * apb_tile_rows(w) * (c1 - c0),
                              STARPU_NAME, _apb_task_name("linear_part", tag), 0);
    return _apb_insert_check(ret, "linear_part");
}

struct _apb_proj_row_args {
    int has_bias, rope, pos, row, head_dim;
};

static void _apb_proj_row_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_proj_row_args *a = cl_arg;
    int b = 2, n_in = _APB_COLS(buffers[0]), n_out = _APB_ROWS(buffers[1]);
    const float *bias = a->has_bias ? _APB_PTR(buffers[b++]) : NULL;
    const float *inv_freq = a->rope ? _APB_PTR(buffers[b++]) : NULL;
    float *out = (float *)_APB_PTR(buffers[b]) + (size_t)a->row * _APB_LD(buffers[b]);
    apb_gemv(out, _APB_PTR(buffers[0]), _APB_PTR(buffers[1]), _apb_elem(buffers[1]) == 2,
             (size_t)_APB_LD(buffers[1]), bias, n_in, n_out, 0);
    if (a->rope) {
        float cs[512], sn[512];
        apb_rope_table(cs, sn, inv_freq, a->head_dim / 2, a->pos);
        apb_rope_row_f32(out, n_out / a->head_dim, a->head_dim, cs, sn);
    }
    _apb_op_account(APB_OP_QKV, t0, 2.0 * n_in * n_out);
}

static struct starpu_perfmodel _apb_proj_row_model = {.type = STARPU_HISTORY_BASED,
                                                      .symbol = "apb_proj_row"};
static struct starpu_codelet _apb_proj_row_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_proj_row_cpu},
    .cpu_funcs_name = {"_apb_proj_row_cpu"},
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_proj_row_model,
    .name = "proj_row",
};

int apb_insert_proj_row(apb_handle xn, apb_handle w, apb_handle bias, apb_handle inv_freq, int pos,
                        int head_dim, apb_handle out, int row, apb_task_tag tag)
{
    if (apb_tile_rows(xn) != 1 || apb_tile_cols(xn) != apb_tile_cols(w) ||
        apb_tile_cols(out) != apb_tile_rows(w) || row < 0 || row >= apb_tile_rows(out) ||
        (inv_freq && (head_dim <= 0 || head_dim > 1024 || apb_tile_rows(w) % head_dim)))
        return -EINVAL;
    struct _apb_proj_row_args a = {bias != NULL, inv_freq != NULL, pos, row, head_dim};
    struct starpu_data_descr d[5];
    int n = 0;
    d[n++] = (struct starpu_data_descr){xn, STARPU_R};
    d[n++] = (struct starpu_data_descr){w, STARPU_R};
    if (bias)
        d[n++] = (struct starpu_data_descr){bias, STARPU_R};
    if (inv_freq)
        d[n++] = (struct starpu_data_descr){inv_freq, STARPU_R};
    /* a row of a bigger tile (the decode cache) keeps the other rows */
    d[n++] = (struct starpu_data_descr){out, apb_tile_rows(out) > 1 ? STARPU_RW : STARPU_W};
    int ret = apb_task_insert(&_apb_proj_row_cl, STARPU_DATA_MODE_ARRAY, d, n, STARPU_CL_ARGS,
                              _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                              APB_ON_HOST(tag), STARPU_FLOPS, 2.0 * apb_tile_cols(w) * apb_tile_rows(w),
                              STARPU_NAME, _apb_task_name("proj_row", tag), 0);
    return _apb_insert_check(ret, "proj_row");
}

struct _apb_logits_part_args {
    int row, v0;
    float eps;
};

static void _apb_logits_part_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_logits_part_args *a = cl_arg;
    int dim = _APB_COLS(buffers[0]), n = _APB_COLS(buffers[3]);
    float *xn = _apb_thread_scratch(_APB_SCRATCH_LOGITS, (size_t)dim);
    if (!xn) {
        _apb_task_fail(APB_E_NOMEM, "logits: out of host memory");
        return;
    }
    apb_rmsnorm_f32(xn, (const float *)_APB_PTR(buffers[0]) + (size_t)a->row * _APB_LD(buffers[0]),
                    _APB_PTR(buffers[1]), dim, a->eps);
    apb_gemv(_APB_PTR(buffers[3]), xn, _apb_w_at(buffers[2], a->v0, 0), _apb_elem(buffers[2]) == 2,
             (size_t)_APB_LD(buffers[2]), NULL, dim, n, 0);
    _apb_op_account(APB_OP_LOGITS, t0, 2.0 * dim * n);
}

static struct starpu_perfmodel _apb_logits_part_model = {.type = STARPU_HISTORY_BASED,
                                                         .symbol = "apb_logits_part"};
static struct starpu_codelet _apb_logits_part_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_logits_part_cpu},
    .cpu_funcs_name = {"_apb_logits_part_cpu"},
    .nbuffers = 4,
    .modes = {STARPU_R, STARPU_R, STARPU_R, STARPU_W},
    .model = &_apb_logits_part_model,
    .name = "logits_part",
};

int apb_insert_logits_part(apb_handle x, int row, apb_handle norm_w, apb_handle lm_head,
                           apb_handle part, int v0, float eps, apb_task_tag tag)
{
    if (row < 0 || row >= apb_tile_rows(x) || v0 < 0 || v0 + apb_tile_cols(part) > apb_tile_rows(lm_head))
        return -EINVAL;
    struct _apb_logits_part_args a = {row, v0, eps};
    int ret = apb_task_insert(&_apb_logits_part_cl, STARPU_R, x, STARPU_R, norm_w, STARPU_R, lm_head,
                              STARPU_W, part, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a,
                              STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                              STARPU_FLOPS, 2.0 * apb_tile_cols(x) * apb_tile_cols(part),
                              STARPU_NAME, _apb_task_name("logits_part", tag), 0);
    return _apb_insert_check(ret, "logits_part");
}

struct _apb_gather_args {
    int n, sum, norm;
    float eps;
};

static void _apb_gather_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_gather_args *a = cl_arg;
    float *out = _APB_PTR(buffers[a->n]);
    int cols = _APB_COLS(buffers[a->n]);
    if (a->sum) {
        for (int i = 0; i < a->n; i++) {
            const float *p = _APB_PTR(buffers[i]);
            for (int j = 0; j < cols; j++)
                out[j] += p[j];
        }
    } else {
        for (int i = 0, off = 0; i < a->n; off += _APB_COLS(buffers[i]), i++)
            memcpy(out + off, _APB_PTR(buffers[i]), sizeof(float) * (size_t)_APB_COLS(buffers[i]));
    }
    if (a->norm)
        apb_rmsnorm_f32(_APB_PTR(buffers[a->n + 2]), out, _APB_PTR(buffers[a->n + 1]), cols, a->eps);
    _apb_op_account(a->sum ? APB_OP_MLP : APB_OP_LOGITS, t0, a->sum ? (double)a->n * cols : 0);
}

static struct starpu_perfmodel _apb_gather_model = {.type = STARPU_HISTORY_BASED,
                                                    .symbol = "apb_gather"};
static struct starpu_codelet _apb_gather_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_gather_cpu},
    .cpu_funcs_name = {"_apb_gather_cpu"},
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_gather_model,
    .name = "gather",
};

int apb_insert_gather(const apb_handle *parts, int n, apb_handle out, int sum, apb_task_tag tag)
{
    return apb_insert_gather_norm(parts, n, out, sum, NULL, NULL, 0, tag);
}

int apb_insert_gather_norm(const apb_handle *parts, int n, apb_handle out, int sum,
                           apb_handle norm_w, apb_handle xn, float eps, apb_task_tag tag)
{
    if (n < 1 || n > APB_DECODE_MAX_SPLIT || !norm_w != !xn ||
        (xn && (apb_tile_rows(out) != 1 || apb_tile_cols(xn) != apb_tile_cols(out))))
        return -EINVAL;
    struct starpu_data_descr d[APB_DECODE_MAX_SPLIT + 3];
    int cols = 0;
    for (int i = 0; i < n; i++) {
        d[i] = (struct starpu_data_descr){parts[i], STARPU_R};
        cols += apb_tile_cols(parts[i]);
    }
    if (sum ? apb_tile_cols(parts[0]) * n != cols || cols / n != apb_tile_cols(out)
            : cols != apb_tile_cols(out))
        return -EINVAL;
    d[n] = (struct starpu_data_descr){out, sum ? STARPU_RW : STARPU_W};
    int nd = n + 1;
    if (xn) {
        d[nd++] = (struct starpu_data_descr){norm_w, STARPU_R};
        d[nd++] = (struct starpu_data_descr){xn, STARPU_W};
    }
    struct _apb_gather_args a = {n, sum, xn != NULL, eps};
    int ret = apb_task_insert(&_apb_gather_cl, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS,
                              _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio,
                              APB_ON_HOST(tag), STARPU_NAME, _apb_task_name(sum ? "mlp_sum" : "logits_gather", tag), 0);
    return _apb_insert_check(ret, "gather");
}

/* ------------------------------------------------------------------ one-row attention
 * A decode step's query row against the cache, read once as a stream of whole key / value rows
 * (every KV head of a row at once): scores of every head, softmax, then the weighted sum of the
 * value rows. The general kernel (codelet_attention.c) multiplies the G query heads of a KV head
 * by 256-key blocks of that head's columns, one SGEMM each: built for many query rows. */
#ifdef __AVX2__
/* exp(x) for x <= 0 (Cephes' expf polynomial, about 1 ulp; 0 below -87) */
static inline __m256 _apb_exp8(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

/* s[0..n) = exp(s - mx); returns their sum */
static float _apb_exp_inplace(float *s, int n, float mx)
{
    int j = 0;
    float sum = 0.0f;
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps(), m8 = _mm256_set1_ps(mx);
    for (; j + 8 <= n; j += 8) {
        __m256 e = _apb_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m8));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float t[8];
    _mm256_storeu_ps(t, acc);
    for (int i = 0; i < 8; i++)
        sum += t[i];
#endif
    for (; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

void apb_attention_row_f32(const float *q, int q_coord, const struct _apb_attn_seg_cpu *segs,
                           int n_segs, int n_heads, int n_kv_heads, int d, float *o, float *lse)
{
    const int H = n_heads, Hk = n_kv_heads, G = H / Hk, W = Hk * d;
    int ntot = 0, nvis[64];
    for (int s = 0; s < n_segs && s < 64; s++) {
        const struct _apb_attn_seg_cpu *sg = &segs[s];
        long v = q_coord < sg->min_q_coord ? 0 : sg->len;
        if (sg->causal && (long)q_coord - sg->coord0 + 1 < v)
            v = (long)q_coord - sg->coord0 + 1;
        nvis[s] = v < 0 ? 0 : (int)v;
        ntot += nvis[s];
    }
    /* scores (H x ntot), then scaled q (H x d), a widened row (W), the accumulators (H x d) */
    float *S = _apb_thread_scratch(_APB_SCRATCH_ATTENTION, (size_t)H * ntot + 2 * (size_t)H * d + W);
    if (!S || n_segs > 64) {
        _apb_task_fail(APB_E_NOMEM, "attention: out of host memory");
        return;
    }
    float *qs = S + (size_t)H * ntot, *row = qs + (size_t)H * d, *acc = row + W;
    const float scale = 1.0f / sqrtf((float)d);
    for (int i = 0; i < H * d; i++)
        qs[i] = q[i] * scale;
    for (int s = 0, t = 0; s < n_segs; t += nvis[s], s++) { /* scores */
        for (int j = 0; j < nvis[s]; j++) {
            const float *k = segs[s].k + (size_t)j * segs[s].ld;
            if (segs[s].bf16) {
                const uint16_t *k16 = (const uint16_t *)(const void *)segs[s].k + (size_t)j * segs[s].ld;
                for (int c = 0; c < W; c++)
                    row[c] = apb_bf16_to_f32(k16[c]);
                k = row;
            }
            for (int h = 0; h < H; h++) {
                const float *kh = k + (size_t)(h / G) * d, *qh = qs + (size_t)h * d;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int c = 0; c < d; c++)
                    dot += qh[c] * kh[c];
                S[(size_t)h * ntot + t + j] = dot;
            }
        }
    }
    for (int h = 0; h < H; h++) { /* softmax: probabilities in place, lse */
        float *sh = S + (size_t)h * ntot, mx = -INFINITY;
        for (int t = 0; t < ntot; t++)
            mx = sh[t] > mx ? sh[t] : mx;
        if (ntot == 0) {
            lse[h] = -INFINITY;
            continue;
        }
        float l = _apb_exp_inplace(sh, ntot, mx);
        lse[h] = mx + logf(l);
        for (int t = 0; t < ntot; t++)
            sh[t] /= l;
    }
    memset(acc, 0, sizeof(float) * (size_t)H * d);
    for (int s = 0, t = 0; s < n_segs; t += nvis[s], s++) { /* weighted sum of the value rows */
        for (int j = 0; j < nvis[s]; j++) {
            const float *v = segs[s].v + (size_t)j * segs[s].ld;
            if (segs[s].bf16) {
                const uint16_t *v16 = (const uint16_t *)(const void *)segs[s].v + (size_t)j * segs[s].ld;
                for (int c = 0; c < W; c++)
                    row[c] = apb_bf16_to_f32(v16[c]);
                v = row;
            }
            for (int h = 0; h < H; h++) {
                const float p = S[(size_t)h * ntot + t + j], *vh = v + (size_t)(h / G) * d;
                float *ah = acc + (size_t)h * d;
#pragma omp simd
                for (int c = 0; c < d; c++)
                    ah[c] += p * vh[c];
            }
        }
    }
    memcpy(o, acc, sizeof(float) * (size_t)H * d);
}

struct _apb_attn_row_args {
    int q_coord, n_heads, n_kv_heads, head_dim, n_segs;
    struct _apb_seg_arg seg[];
};

static void _apb_attention_row_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_attn_row_args *a = cl_arg;
    struct _apb_attn_seg_cpu segs[64];
    double flops = 0;
    for (int s = 0; s < a->n_segs; s++) {
        segs[s] = _apb_seg_cpu(buffers[1 + 2 * s], buffers[2 + 2 * s], &a->seg[s]);
        flops += 4.0 * a->seg[s].len * a->n_heads * a->head_dim;
    }
    apb_attention_row_f32(_APB_PTR(buffers[0]), a->q_coord, segs, a->n_segs, a->n_heads,
                          a->n_kv_heads, a->head_dim, _APB_PTR(buffers[1 + 2 * a->n_segs]),
                          _APB_PTR(buffers[2 + 2 * a->n_segs]));
    _apb_op_account(APB_OP_ATTENTION, t0, flops);
}

static struct starpu_perfmodel _apb_attention_row_model = {.type = STARPU_HISTORY_BASED,
                                                           .symbol = "apb_attention_row"};
static struct starpu_codelet _apb_attention_row_cl = {
    .where = STARPU_CPU,
    .cpu_funcs = {_apb_attention_row_cpu},
    .cpu_funcs_name = {"_apb_attention_row_cpu"},
    .nbuffers = STARPU_VARIABLE_NBUFFERS,
    .model = &_apb_attention_row_model,
    .name = "attention_row",
};

int apb_insert_attention_row(apb_handle q, int q_coord, const apb_attn_seg *segs, int n_segs,
                             int n_heads, int n_kv_heads, int head_dim, apb_handle o, apb_handle lse,
                             apb_task_tag tag)
{
    if (n_segs < 1 || n_segs > 64 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 ||
        apb_tile_rows(q) != 1 || apb_tile_cols(q) != n_heads * head_dim ||
        apb_tile_cols(o) != n_heads * head_dim || apb_tile_rows(o) != 1 || apb_tile_cols(lse) != n_heads)
        return -EINVAL;
    size_t asz = sizeof(struct _apb_attn_row_args) + (size_t)n_segs * sizeof(struct _apb_seg_arg);
    struct _apb_attn_row_args *a = malloc(asz);
    struct starpu_data_descr d[3 + 2 * 64];
    if (!a)
        return -ENOMEM;
    *a = (struct _apb_attn_row_args){q_coord, n_heads, n_kv_heads, head_dim, n_segs};
    int nd = 0;
    d[nd++] = (struct starpu_data_descr){q, STARPU_R};
    if (_apb_segs_pack(segs, n_segs, n_kv_heads * head_dim, a->seg, d + nd)) {
        free(a);
        return -EINVAL;
    }
    nd += 2 * n_segs;
    d[nd++] = (struct starpu_data_descr){o, STARPU_W};
    d[nd++] = (struct starpu_data_descr){lse, STARPU_W};
    int ret = apb_task_insert(&_apb_attention_row_cl, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS,
                              a, asz, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                              STARPU_NAME, _apb_task_name("attention_row", tag), 0);
    return _apb_insert_check(ret, "attention_row");
}
