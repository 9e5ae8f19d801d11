/* SPDX-License-Identifier: MIT */
/** @brief Every dense codelet through StarPU against a float64 reference, outputs poisoned. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "tests/test_util.h"

TestSuite(ops, .init = t_runtime_up, .fini = apb_runtime_shutdown);

static const apb_task_tag tag = {0, 0, 0};

/* out[r][o] = sum_i in[r][i] w[o][i] (+ bias[o]) (+ acc[r][o]) in double */
static void ref_linear(double *out, const float *in, const float *w, const float *b,
                       const float *acc, int rows, int n_in, int n_out)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < n_out; o++) {
            double s = (b ? b[o] : 0.0) + (acc ? acc[r * n_out + o] : 0.0);
            for (int i = 0; i < n_in; i++)
                s += (double)in[r * n_in + i] * w[o * n_in + i];
            out[r * n_out + o] = s;
        }
}

Test(ops, rmsnorm)
{
    int rows = 37, cols = 96;
    float *x = t_alloc(rows * cols), *w = t_alloc(cols), *out = t_poisoned(rows * cols);
    double *ref = malloc(sizeof(double) * rows * cols);
    t_fill(x, rows * cols, 3.0f, 1);
    t_fill(w, cols, 1.0f, 2);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++)
            ss += (double)x[r * cols + c] * x[r * cols + c];
        double inv = 1.0 / sqrt(ss / cols + 1e-5);
        for (int c = 0; c < cols; c++)
            ref[r * cols + c] = x[r * cols + c] * inv * w[c];
    }
    apb_handle hx = apb_tile_from(x, rows, cols, 4), hw = apb_tile_from(w, 1, cols, 4),
               ho = apb_tile_from(out, rows, cols, 4);
    cr_assert_eq(apb_insert_rmsnorm(hx, hw, ho, 1e-5f, tag), 0);
    apb_handle_free_now(hx);
    apb_handle_free_now(hw);
    apb_handle_free_now(ho);
    double e = t_rel_err(out, ref, rows * cols);
    cr_log_info("rmsnorm rel err %.3g", e);
    cr_assert_lt(e, 1e-6, "rmsnorm rel err %g", e);
    /* a bf16 output (the prefill's xn tiles under bf16): poisoned, rounded once */
    uint16_t *o16 = malloc(2 * (size_t)rows * cols);
    for (int i = 0; i < rows * cols; i++)
        o16[i] = 0x7fc0;
    hx = apb_tile_from(x, rows, cols, 4), hw = apb_tile_from(w, 1, cols, 4), ho = apb_tile_from(o16, rows, cols, 2);
    cr_assert_eq(apb_insert_rmsnorm(hx, hw, ho, 1e-5f, tag), 0);
    apb_handle_free_now(hx);
    apb_handle_free_now(hw);
    apb_handle_free_now(ho);
    for (int i = 0; i < rows * cols; i++) {
        uint32_t u = (uint32_t)o16[i] << 16;
        memcpy(&out[i], &u, 4);
    }
    e = t_rel_err(out, ref, rows * cols);
    cr_log_info("rmsnorm (bf16 out) rel err %.3g", e);
    cr_assert_lt(e, 4e-3, "rmsnorm bf16 output rel err %g", e);
    free(o16);
    free(x); free(w); free(out); free(ref);
}

/* bf16 (round to nearest even) of x, as raw bits and as the float it represents */
static uint16_t to_bf16(float x, float *back)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(back, &u, 4);
    return (uint16_t)(u >> 16);
}

static void check_linear_w(int with_bias, int accumulate, int bf16)
{
    int rows = 45, n_in = 70, n_out = bf16 ? 300 : 33; /* > 256: the CPU widens bf16 by row blocks */
    float *in = t_alloc(rows * n_in), *w = t_alloc(n_out * n_in), *b = t_alloc(n_out);
    float *out = accumulate ? t_alloc(rows * n_out) : t_poisoned(rows * n_out);
    t_fill(in, rows * n_in, 1.0f, 3);
    t_fill(w, n_out * n_in, 0.2f, 4);
    t_fill(b, n_out, 1.0f, 5);
    float *acc0 = NULL;
    if (accumulate) {
        t_fill(out, rows * n_out, 2.0f, 6);
        acc0 = t_alloc(rows * n_out);
        memcpy(acc0, out, sizeof(float) * rows * n_out);
    }
    double *ref = malloc(sizeof(double) * rows * n_out), *ref16 = malloc(sizeof(double) * rows * n_out);
    uint16_t *w16 = malloc(sizeof(uint16_t) * n_out * n_in);
    for (int i = 0; bf16 && i < n_out * n_in; i++)
        w16[i] = to_bf16(w[i], &w[i]); /* the reference uses the rounded weights */
    ref_linear(ref, in, w, with_bias ? b : NULL, acc0, rows, n_in, n_out);
    /* the CPU with oneDNN (gemm_dnnl.c) rounds the activations to bf16 as well: a second
     * reference with rounded inputs, which it must match to fp32 accumulation error */
    int act16 = bf16 && !t_on_gpu() && apb_dnnl_enabled();
    float *in16 = t_alloc(rows * n_in);
    for (int i = 0; i < rows * n_in; i++)
        in16[i] = in[i];
    for (int i = 0; act16 && i < rows * n_in; i++)
        to_bf16(in[i], &in16[i]);
    ref_linear(ref16, in16, w, with_bias ? b : NULL, acc0, rows, n_in, n_out);
    apb_handle hi = apb_tile_from(in, rows, n_in, 4),
               hw = bf16 ? apb_tile_from(w16, n_out, n_in, 2) : apb_tile_from(w, n_out, n_in, 4),
               hb = with_bias ? apb_tile_from(b, 1, n_out, 4) : NULL,
               ho = apb_tile_from(out, rows, n_out, 4);
    cr_assert_eq(apb_insert_linear(hi, hw, hb, ho, accumulate, tag), 0);
    apb_handle_free_now(hi);
    apb_handle_free_now(hw);
    apb_handle_free_now(hb);
    apb_handle_free_now(ho);
    double e = t_rel_err(out, ref, rows * n_out), e16 = t_rel_err(out, ref16, rows * n_out);
    /* on a GPU, bf16 weights make the GEMM round the activations to bf16 too */
    double tol = bf16 && (t_on_gpu() || act16) ? 1e-2 : 1e-6;
    cr_log_info("linear(bias=%d, acc=%d, bf16=%d) rel err %.3g (%.3g against bf16 inputs)", with_bias,
                accumulate, bf16, e, e16);
    cr_assert_lt(e, tol, "linear(bias=%d, acc=%d, bf16=%d) rel err %g", with_bias, accumulate, bf16, e);
    if (act16)
        cr_assert_lt(e16, 1e-6, "linear bf16 (oneDNN) rel err %g against the bf16-input reference", e16);
    free(in); free(in16); free(w); free(w16); free(b); free(out); free(acc0); free(ref); free(ref16);
}

static void check_linear(int with_bias, int accumulate) { check_linear_w(with_bias, accumulate, 0); }

Test(ops, linear_bf16_weights) { check_linear_w(1, 1, 1); }

/* oneDNN's bf16 matmul called directly: strided weights and output (a view's row stride), plain
 * and accumulating, against float64 with bf16-rounded inputs and weights; one row is refused */
Test(ops, dnnl_bf16_gemm_strided)
{
    if (!apb_dnnl_enabled())
        cr_skip_test("built without oneDNN or APB_DNNL=0");
    int rows = 37, n_in = 96, n_out = 130, ldw = 112, ldo = 150;
    float *in = t_alloc(rows * n_in), *w = t_alloc(n_out * ldw), *out = t_poisoned(rows * ldo);
    uint16_t *w16 = malloc(sizeof(uint16_t) * n_out * ldw);
    t_fill(in, rows * n_in, 1.0f, 11);
    t_fill(w, n_out * ldw, 0.3f, 12);
    for (int i = 0; i < n_out * ldw; i++)
        w16[i] = to_bf16(w[i], &w[i]);
    for (int i = 0; i < rows * n_in; i++)
        to_bf16(in[i], &in[i]);
    for (int acc = 0; acc < 2; acc++) {
        double err = 0, nrm = 0;
        float *before = t_alloc(rows * ldo);
        memcpy(before, out, sizeof(float) * rows * ldo);
        cr_assert_eq(apb_dnnl_linear_bf16(out, ldo, in, n_in, w16, ldw, rows, n_in, n_out, acc), 0);
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < n_out; j++) {
                double r = acc ? before[i * ldo + j] : 0;
                for (int k = 0; k < n_in; k++)
                    r += (double)in[i * n_in + k] * w[j * ldw + k];
                err += (out[i * ldo + j] - r) * (out[i * ldo + j] - r);
                nrm += r * r;
            }
            for (int j = n_out; j < ldo; j++) /* past n_out the output row is untouched */
                cr_assert(memcmp(&out[i * ldo + j], &before[i * ldo + j], sizeof(float)) == 0);
        }
        cr_assert_lt(sqrt(err / nrm), 1e-6, "acc %d: rel err %g", acc, sqrt(err / nrm));
        free(before);
    }
    cr_assert_eq(apb_dnnl_linear_bf16(out, ldo, in, n_in, w16, ldw, 1, n_in, n_out, 0), -1);
    free(in); free(w); free(w16); free(out);
}
Test(ops, linear) { check_linear(0, 0); }
Test(ops, linear_bias) { check_linear(1, 0); }
Test(ops, linear_residual) { check_linear(0, 1); }
Test(ops, linear_bias_residual) { check_linear(1, 1); }

Test(ops, qkv_with_bias)
{
    int rows = 19, dim = 48, qd = 64, kd = 32;
    float *x = t_alloc(rows * dim), *wq = t_alloc(qd * dim), *wk = t_alloc(kd * dim),
          *wv = t_alloc(kd * dim), *bq = t_alloc(qd), *bk = t_alloc(kd), *bv = t_alloc(kd);
    float *q = t_poisoned(rows * qd), *k = t_poisoned(rows * kd), *v = t_poisoned(rows * kd);
    t_fill(x, rows * dim, 1, 10); t_fill(wq, qd * dim, 0.3f, 11); t_fill(wk, kd * dim, 0.3f, 12);
    t_fill(wv, kd * dim, 0.3f, 13); t_fill(bq, qd, 1, 14); t_fill(bk, kd, 1, 15); t_fill(bv, kd, 1, 16);
    apb_handle h[10] = {apb_tile_from(x, rows, dim, 4), apb_tile_from(wq, qd, dim, 4),
                        apb_tile_from(wk, kd, dim, 4), apb_tile_from(wv, kd, dim, 4),
                        apb_tile_from(bq, 1, qd, 4), apb_tile_from(bk, 1, kd, 4),
                        apb_tile_from(bv, 1, kd, 4), apb_tile_from(q, rows, qd, 4),
                        apb_tile_from(k, rows, kd, 4), apb_tile_from(v, rows, kd, 4)};
    cr_assert_eq(apb_insert_qkv(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], tag), 0);
    for (int i = 0; i < 10; i++)
        apb_handle_free_now(h[i]);
    double *ref = malloc(sizeof(double) * rows * qd);
    ref_linear(ref, x, wq, bq, NULL, rows, dim, qd);
    cr_assert_lt(t_rel_err(q, ref, rows * qd), 1e-6);
    ref_linear(ref, x, wk, bk, NULL, rows, dim, kd);
    cr_assert_lt(t_rel_err(k, ref, rows * kd), 1e-6);
    ref_linear(ref, x, wv, bv, NULL, rows, dim, kd);
    cr_assert_lt(t_rel_err(v, ref, rows * kd), 1e-6);
    free(x); free(wq); free(wk); free(wv); free(bq); free(bk); free(bv); free(q); free(k); free(v);
    free(ref);
}

Test(ops, rope)
{
    int rows = 21, d = 32, hq = 4, hk = 2, pos0 = 70000;
    double theta = 500000.0;
    float inv[16];
    for (int i = 0; i < d / 2; i++)
        inv[i] = (float)pow(theta, -2.0 * i / d);
    float *q = t_alloc(rows * hq * d), *k = t_alloc(rows * hk * d);
    t_fill(q, rows * hq * d, 1, 20);
    t_fill(k, rows * hk * d, 1, 21);
    double *rq = malloc(sizeof(double) * rows * hq * d), *rk = malloc(sizeof(double) * rows * hk * d);
    for (int m = 0; m < 2; m++) {
        float *x = m ? k : q;
        double *r = m ? rk : rq;
        int nh = m ? hk : hq;
        for (int i = 0; i < rows; i++)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < d / 2; j++) {
                    double ang = (double)(pos0 + i) * inv[j];
                    double a = x[(i * nh + h) * d + j], b = x[(i * nh + h) * d + j + d / 2];
                    r[(i * nh + h) * d + j] = a * cos(ang) - b * sin(ang);
                    r[(i * nh + h) * d + j + d / 2] = b * cos(ang) + a * sin(ang);
                }
    }
    apb_handle hq_ = apb_tile_from(q, rows, hq * d, 4), hk_ = apb_tile_from(k, rows, hk * d, 4),
               hi = apb_tile_from(inv, 1, d / 2, 4);
    cr_assert_eq(apb_insert_rope(hq_, hk_, hi, pos0, d, tag), 0);
    apb_handle_free_now(hq_);
    apb_handle_free_now(hk_);
    apb_handle_free_now(hi);
    double eq = t_rel_err(q, rq, rows * hq * d), ek = t_rel_err(k, rk, rows * hk * d);
    cr_assert_lt(eq, 1e-6, "rope q rel err %g", eq);
    cr_assert_lt(ek, 1e-6, "rope k rel err %g", ek);
    free(q); free(k); free(rq); free(rk);
}

/* Qwen2-VL get_rope_index for one prompt [text n0][vision grid][text n1], transliterated from
 * transformers (modeling_qwen2_vl.py): text ids count up (all three equal); the vision block's
 * (t, h, w) ids are the LLM grid (T, H / merge, W / merge) indices plus the text offset (Qwen2.5-VL
 * scales t by second_per_grid_t * tokens_per_second, t_scale here); the following text continues at
 * the block's max + 1. pos is n x 3. Returns n. */
static int ref_rope_index(int32_t *pos, int n0, int T, int H, int W, int merge, int t_scale, int n1)
{
    int n = 0;
    for (int i = 0; i < n0; i++, n++)
        pos[3 * n] = pos[3 * n + 1] = pos[3 * n + 2] = i;
    int gt = T, gh = H / merge, gw = W / merge, mx = n0 - 1;
    for (int t = 0; t < gt; t++)
        for (int h = 0; h < gh; h++)
            for (int w = 0; w < gw; w++, n++) {
                pos[3 * n] = t * t_scale + n0;
                pos[3 * n + 1] = h + n0;
                pos[3 * n + 2] = w + n0;
                for (int c = 0; c < 3; c++)
                    mx = pos[3 * n + c] > mx ? pos[3 * n + c] : mx;
            }
    for (int i = 0; i < n1; i++, n++)
        pos[3 * n] = pos[3 * n + 1] = pos[3 * n + 2] = mx + 1 + i;
    return n;
}

Test(ops, rope_mrope)
{
    /* 5 text tokens, a 3-frame grid of 8 x 12 patches (merge 2: 3 x 4 x 6 = 72 tokens), 4 text tokens */
    int32_t pos[81 * 3];
    int rows = ref_rope_index(pos, 5, 3, 8, 12, 2, 2, 4), d = 32, hq = 4, hk = 2, sec[3] = {4, 6, 6};
    cr_assert_eq(rows, 81);
    /* hand-checked ids: first vision token (5,5,5); last (5+2*2, 5+3, 5+5); text after: max 10 + 1 */
    cr_assert(pos[3 * 5] == 5 && pos[3 * 5 + 1] == 5 && pos[3 * 5 + 2] == 5);
    cr_assert(pos[3 * 76] == 9 && pos[3 * 76 + 1] == 8 && pos[3 * 76 + 2] == 10);
    cr_assert(pos[3 * 77] == 11 && pos[3 * 77 + 1] == 11 && pos[3 * 77 + 2] == 11 && pos[3 * 80] == 14);
    for (int i = 0; i < rows * 3; i++) /* large ids too: the angle is taken in double */
        pos[i] += 90000;
    double theta = 1000000.0;
    float inv[16];
    for (int i = 0; i < d / 2; i++)
        inv[i] = (float)pow(theta, -2.0 * i / d);
    float *q = t_alloc(rows * hq * d), *k = t_alloc(rows * hk * d);
    t_fill(q, rows * hq * d, 1, 22);
    t_fill(k, rows * hk * d, 1, 23);
    double *rq = malloc(sizeof(double) * rows * hq * d), *rk = malloc(sizeof(double) * rows * hk * d);
    /* HF's formulation: cos/sin over the full head_dim (emb = cat(freqs, freqs)), split into chunks of
     * mrope_section * 2 = [s0, s1, s2, s0, s1, s2], chunk i taken from id i % 3; then
     * x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1). */
    int comp[32];
    for (int c = 0, j = 0; c < 6; c++)
        for (int r = 0; r < sec[c % 3]; r++)
            comp[j++] = c % 3;
    for (int m = 0; m < 2; m++) {
        float *x = m ? k : q;
        double *r = m ? rk : rq;
        int nh = m ? hk : hq;
        for (int i = 0; i < rows; i++)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < d; j++) {
                    double ang = (double)pos[3 * i + comp[j]] * inv[j % (d / 2)];
                    const float *xh = x + (i * nh + h) * d;
                    double rot = j < d / 2 ? -(double)xh[j + d / 2] : (double)xh[j - d / 2];
                    r[(i * nh + h) * d + j] = xh[j] * cos(ang) + rot * sin(ang);
                }
    }
    apb_handle hq_ = apb_tile_from(q, rows, hq * d, 4), hk_ = apb_tile_from(k, rows, hk * d, 4),
               hi = apb_tile_from(inv, 1, d / 2, 4), hp = apb_tile_from(pos, rows, 3, 4);
    int bad_sec[3] = {4, 6, 5};
    cr_assert_eq(apb_insert_rope_m(hq_, hk_, hi, hp, bad_sec, d, tag), -EINVAL);
    cr_assert_eq(apb_insert_rope_m(hq_, hk_, hi, hp, sec, d, tag), 0);
    apb_handle_free_now(hq_);
    apb_handle_free_now(hk_);
    apb_handle_free_now(hi);
    apb_handle_free_now(hp);
    double eq = t_rel_err(q, rq, rows * hq * d), ek = t_rel_err(k, rk, rows * hk * d);
    cr_log_info("mrope rel err q %.3g k %.3g", eq, ek);
    cr_assert_lt(eq, 1e-6, "mrope q rel err %g", eq);
    cr_assert_lt(ek, 1e-6, "mrope k rel err %g", ek);

    /* text tokens (three equal ids) are plain 1-D RoPE, bit for bit */
    float c1[16], s1[16], c3[16], s3[16];
    int32_t p3[3] = {123457, 123457, 123457};
    apb_rope_table(c1, s1, inv, d / 2, 123457);
    apb_mrope_table(c3, s3, inv, d / 2, p3, sec);
    cr_assert_eq(memcmp(c1, c3, sizeof c1), 0);
    cr_assert_eq(memcmp(s1, s3, sizeof s1), 0);
    free(q); free(k); free(rq); free(rk);
}

Test(ops, mlp_swiglu_residual)
{
    int rows = 13, dim = 40, hid = 72;
    float *xn = t_alloc(rows * dim), *wg = t_alloc(hid * dim), *wu = t_alloc(hid * dim),
          *wd = t_alloc(dim * hid), *x = t_alloc(rows * dim), *x0 = t_alloc(rows * dim);
    t_fill(xn, rows * dim, 1, 30); t_fill(wg, hid * dim, 0.3f, 31); t_fill(wu, hid * dim, 0.3f, 32);
    t_fill(wd, dim * hid, 0.2f, 33); t_fill(x, rows * dim, 1, 34);
    memcpy(x0, x, sizeof(float) * rows * dim);
    double *g = malloc(sizeof(double) * rows * hid), *u = malloc(sizeof(double) * rows * hid);
    double *ref = malloc(sizeof(double) * rows * dim);
    ref_linear(g, xn, wg, NULL, NULL, rows, dim, hid);
    ref_linear(u, xn, wu, NULL, NULL, rows, dim, hid);
    for (int i = 0; i < rows * hid; i++)
        g[i] = g[i] / (1 + exp(-g[i])) * u[i];
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < dim; o++) {
            double s = x0[r * dim + o];
            for (int i = 0; i < hid; i++)
                s += g[r * hid + i] * wd[o * hid + i];
            ref[r * dim + o] = s;
        }
    apb_handle h[5] = {apb_tile_from(xn, rows, dim, 4), apb_tile_from(wg, hid, dim, 4),
                       apb_tile_from(wu, hid, dim, 4), apb_tile_from(wd, dim, hid, 4),
                       apb_tile_from(x, rows, dim, 4)};
    cr_assert_eq(apb_insert_mlp(h[0], h[1], h[2], h[3], h[4], tag), 0);
    for (int i = 0; i < 5; i++)
        apb_handle_free_now(h[i]);
    double e = t_rel_err(x, ref, rows * dim);
    cr_assert_lt(e, 1e-6, "mlp rel err %g", e);
    free(xn); free(wg); free(wu); free(wd); free(x); free(x0); free(g); free(u); free(ref);
}

Test(ops, embed)
{
    int vocab = 50, dim = 24, n = 9;
    float *emb = t_alloc(vocab * dim), *x = t_poisoned(n * dim);
    int32_t ids[9] = {0, 49, 7, 7, 23, 1, 48, 2, 30};
    t_fill(emb, vocab * dim, 1, 40);
    apb_handle hi = apb_tile_from(ids, n, 1, 4), he = apb_tile_from(emb, vocab, dim, 4),
               hx = apb_tile_from(x, n, dim, 4);
    cr_assert_eq(apb_insert_embed(hi, he, hx, tag), 0);
    apb_handle_free_now(hi);
    apb_handle_free_now(he);
    apb_handle_free_now(hx);
    for (int i = 0; i < n; i++)
        cr_assert_arr_eq(x + i * dim, emb + ids[i] * dim, sizeof(float) * dim);
    free(emb); free(x);
}

Test(ops, logits_last_rows)
{
    int rows = 10, dim = 32, vocab = 57, row0 = 7, n = 3;
    float *x = t_alloc(rows * dim), *nw = t_alloc(dim), *head = t_alloc(vocab * dim),
          *lg = t_poisoned(n * vocab);
    t_fill(x, rows * dim, 2, 50); t_fill(nw, dim, 1, 51); t_fill(head, vocab * dim, 0.3f, 52);
    double *ref = malloc(sizeof(double) * n * vocab);
    for (int i = 0; i < n; i++) {
        const float *xr = x + (row0 + i) * dim;
        double ss = 0;
        for (int c = 0; c < dim; c++)
            ss += (double)xr[c] * xr[c];
        double inv = 1 / sqrt(ss / dim + 1e-6);
        for (int v = 0; v < vocab; v++) {
            double s = 0;
            for (int c = 0; c < dim; c++)
                s += xr[c] * inv * nw[c] * head[v * dim + c];
            ref[i * vocab + v] = s;
        }
    }
    apb_handle hx = apb_tile_from(x, rows, dim, 4), hn = apb_tile_from(nw, 1, dim, 4),
               hh = apb_tile_from(head, vocab, dim, 4), hl = apb_tile_from(lg, n, vocab, 4);
    cr_assert_eq(apb_insert_logits(hx, row0, n, hn, hh, hl, 1e-6f, tag), 0);
    cr_assert_neq(apb_insert_logits(hx, 8, 3, hn, hh, hl, 1e-6f, tag), 0, "rows out of range accepted");
    apb_handle_free_now(hx); apb_handle_free_now(hn); apb_handle_free_now(hh); apb_handle_free_now(hl);
    double e = t_rel_err(lg, ref, n * vocab);
    cr_assert_lt(e, 1e-6, "logits rel err %g", e);
    free(x); free(nw); free(head); free(lg); free(ref);
}

Test(ops, kv_append)
{
    int cap = 8, cols = 12;
    float *k = t_alloc(2 * cols), *v = t_alloc(2 * cols), *kc = t_poisoned(cap * cols),
          *vc = t_poisoned(cap * cols);
    t_fill(k, 2 * cols, 1, 60);
    t_fill(v, 2 * cols, 1, 61);
    apb_handle h[4] = {apb_tile_from(k, 2, cols, 4), apb_tile_from(v, 2, cols, 4),
                       apb_tile_from(kc, cap, cols, 4), apb_tile_from(vc, cap, cols, 4)};
    cr_assert_eq(apb_insert_kv_append(h[0], h[1], h[2], h[3], 5, tag), 0);
    cr_assert_neq(apb_insert_kv_append(h[0], h[1], h[2], h[3], 7, tag), 0, "overflow accepted");
    for (int i = 0; i < 4; i++)
        apb_handle_free_now(h[i]);
    cr_assert_arr_eq(kc + 5 * cols, k, sizeof(float) * 2 * cols);
    cr_assert_arr_eq(vc + 5 * cols, v, sizeof(float) * 2 * cols);
    cr_assert(isnan(kc[4 * cols]) && isnan(kc[7 * cols]), "rows outside the append were written");
    free(k); free(v); free(kc); free(vc);
}

/* kv_compact: fp32 K/V tiles rounded to bf16 (nearest even) into slices of one taller bf16 cache,
 * slice 0 first (W) then a later slice (RW): every element of both slices against the reference
 * rounding after both ran; a slice past the end is refused */
Test(ops, kv_compact_slices)
{
    const int cols = 24, r0 = 7, r1 = 5, rows = 20, at1 = 11;
    float *k0 = t_alloc(r0 * cols), *v0 = t_alloc(r0 * cols), *k1 = t_alloc(r1 * cols), *v1 = t_alloc(r1 * cols);
    t_fill(k0, r0 * cols, 3, 90);
    t_fill(v0, r0 * cols, 3, 91);
    t_fill(k1, r1 * cols, 3, 92);
    t_fill(v1, r1 * cols, 3, 93);
    k0[3] = 1.00390625f; /* halfway between two bf16 values: rounds to the even one (1.0) */
    uint16_t *kc = malloc(2 * rows * cols), *vc = malloc(2 * rows * cols);
    memset(kc, 0xff, 2 * rows * cols); /* NaN bits: a slice left unwritten fails */
    memset(vc, 0xff, 2 * rows * cols);
    apb_handle h[6] = {apb_tile_from(k0, r0, cols, 4), apb_tile_from(v0, r0, cols, 4),
                       apb_tile_from(k1, r1, cols, 4), apb_tile_from(v1, r1, cols, 4),
                       apb_tile_from(kc, rows, cols, 2), apb_tile_from(vc, rows, cols, 2)};
    cr_assert_eq(apb_insert_kv_compact_at(h[0], h[1], h[4], h[5], 0, tag), 0);
    cr_assert_eq(apb_insert_kv_compact_at(h[2], h[3], h[4], h[5], at1, tag), 0);
    cr_assert_neq(apb_insert_kv_compact_at(h[2], h[3], h[4], h[5], rows - r1 + 1, tag), 0,
                  "slice past the end accepted");
    for (int i = 0; i < 6; i++)
        apb_handle_free_now(h[i]);
    float back;
    for (int i = 0; i < rows * cols; i++) {
        const int row = i / cols, c = i % cols;
        const float *ks = row < r0 ? k0 : row >= at1 && row < at1 + r1 ? k1 : NULL;
        const float *vs = row < r0 ? v0 : row >= at1 && row < at1 + r1 ? v1 : NULL;
        const int sr = row < r0 ? row : row - at1;
        if (ks) { /* slice 0 still holds its values after the later slice's RW task */
            cr_assert_eq(kc[i], to_bf16(ks[sr * cols + c], &back), "k row %d col %d", row, c);
            cr_assert_eq(vc[i], to_bf16(vs[sr * cols + c], &back), "v row %d col %d", row, c);
        } /* other rows: undefined after slice 0's W (on a GPU the copy is not fetched) */
    }
    cr_assert_eq(kc[3], 0x3f80, "1.00390625 rounds to even: %#x", kc[3]);
    free(k0); free(v0); free(k1); free(v1); free(kc); free(vc);
}

Test(ops, sample_greedy_through_starpu)
{
    int vocab = 100;
    float *lg = t_alloc(2 * vocab);
    t_fill(lg, 2 * vocab, 5, 70);
    lg[vocab + 42] = 100.0f;
    int32_t tok = -1;
    apb_handle hl = apb_tile_from(lg, 2, vocab, 4), ht = apb_tile_from(&tok, 1, 1, 4);
    cr_assert_eq(apb_insert_sample(hl, 1, ht, 0.0f, 0.9f, 1, 0, tag), 0);
    apb_handle_free_now(hl);
    apb_handle_free_now(ht);
    cr_assert_eq(tok, 42);
    free(lg);
}

Test(ops, sample_top_p_distribution)
{
    /* logits ln(p) for p = .5 .3 .15 .05: with top_p = .7 only ids 0 and 1 may appear, in ratio 5:3 */
    float lg[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    int count[4] = {0};
    int n = 20000;
    for (int i = 0; i < n; i++) {
        double u = (apb_rng_u64(7, (uint64_t)i) >> 11) * 0x1.0p-53;
        count[apb_sample_f32(lg, 4, 1.0f, 0.7f, u)]++;
    }
    cr_assert_eq(count[2] + count[3], 0, "tokens outside the nucleus sampled");
    double frac0 = (double)count[0] / n;
    cr_assert(fabs(frac0 - 0.625) < 0.015, "P(id 0) = %g, expected 0.625", frac0);
    /* temperature 0 is greedy */
    cr_assert_eq(apb_sample_f32(lg, 4, 0.0f, 0.8f, 0.99), 0);
}
