/* SPDX-License-Identifier: MIT */
/** @brief Decode kernels against float64: the one-row GEMV (fp32 and bf16 weights, odd sizes,
 * row strides), and the split MLP / LM head tasks with their gather. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "codelets/apb_decode.h"
#include "codelets/apb_kernels_cpu.h"
#include "tests/test_util.h"

/* CPU workers only: the split tasks are the CPU decode path (GPUs decode unsplit) */
static void up(void)
{
    apb_runtime_opts o = {.ncpus = -1, .ncuda = 0, .precision = APB_PREC_FP32};
    apb_err err = {0};
    if (apb_runtime_init(&o, &err))
        cr_assert_fail("runtime init: %s", err.msg);
}

TestSuite(decode, .init = up, .fini = apb_runtime_shutdown);

static const apb_task_tag tag = {0, 0, 0};

/* bf16 bits of x (nearest even), x replaced by the value they represent */
static uint16_t to_bf16(float *x)
{
    uint32_t u;
    memcpy(&u, x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(x, &u, 4);
    return (uint16_t)(u >> 16);
}

static void check_gemv(int bf16, int n_in, int n_out, int ld)
{
    float *in = t_alloc(n_in), *w = t_alloc((size_t)n_out * ld), *b = t_alloc(n_out);
    float *out = t_alloc(n_out), *acc = t_alloc(n_out);
    uint16_t *w16 = malloc(sizeof(uint16_t) * (size_t)n_out * ld);
    t_fill(in, n_in, 1.0f, 1);
    t_fill(w, (size_t)n_out * ld, 0.3f, 2);
    t_fill(b, n_out, 1.0f, 3);
    t_fill(out, n_out, 2.0f, 4);
    memcpy(acc, out, sizeof(float) * n_out);
    for (int i = 0; bf16 && i < n_out * ld; i++)
        w16[i] = to_bf16(&w[i]);
    double *ref = malloc(sizeof(double) * n_out);
    for (int o = 0; o < n_out; o++) {
        double s = (double)acc[o] + b[o];
        for (int i = 0; i < n_in; i++)
            s += (double)in[i] * w[(size_t)o * ld + i];
        ref[o] = s;
    }
    apb_gemv(out, in, bf16 ? (const void *)w16 : (const void *)w, bf16, (size_t)ld, b, n_in, n_out, 1);
    double e = t_rel_err(out, ref, n_out);
    cr_assert_lt(e, 1e-6, "gemv(bf16=%d, %d x %d, ld %d) rel err %g", bf16, n_out, n_in, ld, e);
    free(in); free(w); free(b); free(out); free(acc); free(w16); free(ref);
}

Test(decode, gemv_fp32) { check_gemv(0, 576, 1536, 576); check_gemv(0, 37, 7, 45); }
Test(decode, gemv_bf16) { check_gemv(1, 1536, 576, 1536); check_gemv(1, 53, 9, 64); check_gemv(1, 40, 6, 40); }

/* x += W_down (silu(W_gate xn) * W_up xn) for one row, split in 3 blocks of hidden units */
static void check_mlp_split(int bf16)
{
    int dim = 40, hid = 104, n = 3;
    float *xn = t_alloc(dim), *wg = t_alloc(hid * dim), *wu = t_alloc(hid * dim),
          *wd = t_alloc(dim * hid), *x = t_alloc(dim), *x0 = t_alloc(dim);
    t_fill(xn, dim, 1, 30); t_fill(wg, hid * dim, 0.3f, 31); t_fill(wu, hid * dim, 0.3f, 32);
    t_fill(wd, dim * hid, 0.2f, 33); t_fill(x, dim, 1, 34);
    memcpy(x0, x, sizeof(float) * dim);
    uint16_t *g16 = malloc(2 * hid * dim), *u16 = malloc(2 * hid * dim), *d16 = malloc(2 * hid * dim);
    for (int i = 0; bf16 && i < hid * dim; i++) {
        g16[i] = to_bf16(&wg[i]);
        u16[i] = to_bf16(&wu[i]);
        d16[i] = to_bf16(&wd[i]);
    }
    double *h = malloc(sizeof(double) * hid), *ref = malloc(sizeof(double) * dim);
    for (int j = 0; j < hid; j++) {
        double g = 0, u = 0;
        for (int i = 0; i < dim; i++) {
            g += (double)xn[i] * wg[j * dim + i];
            u += (double)xn[i] * wu[j * dim + i];
        }
        h[j] = g / (1 + exp(-g)) * u;
    }
    for (int o = 0; o < dim; o++) {
        double s = x0[o];
        for (int j = 0; j < hid; j++)
            s += h[j] * wd[o * hid + j];
        ref[o] = s;
    }
    size_t es = bf16 ? 2 : 4;
    apb_handle hx = apb_tile_from(xn, 1, dim, 4), hout = apb_tile_from(x, 1, dim, 4);
    apb_handle hg = apb_tile_from(bf16 ? (void *)g16 : wg, hid, dim, es),
               hu = apb_tile_from(bf16 ? (void *)u16 : wu, hid, dim, es),
               hd = apb_tile_from(bf16 ? (void *)d16 : wd, dim, hid, es);
    apb_handle z[3];
    int cut[4] = {0, 32, 80, hid};
    for (int i = 0; i < n; i++) {
        z[i] = apb_tile_new(1, dim, 4);
        cr_assert_eq(apb_insert_mlp_part(hx, hg, hu, hd, z[i], cut[i], cut[i + 1], tag), 0);
    }
    cr_assert_neq(apb_insert_mlp_part(hx, hg, hu, hd, z[0], 80, hid + 1, tag), 0, "block past the end accepted");
    cr_assert_eq(apb_insert_gather(z, n, hout, 1, tag), 0);
    apb_handle all[] = {hx, hout, hg, hu, hd, z[0], z[1], z[2]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        apb_handle_free_now(all[i]);
    double e = t_rel_err(x, ref, dim);
    cr_assert_lt(e, 1e-6, "split mlp (bf16=%d) rel err %g", bf16, e);
    free(xn); free(wg); free(wu); free(wd); free(x); free(x0); free(g16); free(u16); free(d16);
    free(h); free(ref);
}

Test(decode, mlp_split_fp32) { check_mlp_split(0); }
Test(decode, mlp_split_bf16) { check_mlp_split(1); }

Test(decode, logits_split)
{
    int rows = 3, dim = 32, vocab = 57, row = 2;
    float *x = t_alloc(rows * dim), *nw = t_alloc(dim), *head = t_alloc(vocab * dim),
          *lg = t_poisoned(vocab);
    t_fill(x, rows * dim, 2, 50); t_fill(nw, dim, 1, 51); t_fill(head, vocab * dim, 0.3f, 52);
    double *ref = malloc(sizeof(double) * vocab), ss = 0;
    const float *xr = x + row * dim;
    for (int c = 0; c < dim; c++)
        ss += (double)xr[c] * xr[c];
    double inv = 1 / sqrt(ss / dim + 1e-6);
    for (int v = 0; v < vocab; v++) {
        double s = 0;
        for (int c = 0; c < dim; c++)
            s += xr[c] * inv * nw[c] * head[v * dim + c];
        ref[v] = s;
    }
    apb_handle hx = apb_tile_from(x, rows, dim, 4), hn = apb_tile_from(nw, 1, dim, 4),
               hh = apb_tile_from(head, vocab, dim, 4), hl = apb_tile_from(lg, 1, vocab, 4);
    apb_handle p[2] = {apb_tile_new(1, 20, 4), apb_tile_new(1, vocab - 20, 4)};
    cr_assert_eq(apb_insert_logits_part(hx, row, hn, hh, p[0], 0, 1e-6f, tag), 0);
    cr_assert_eq(apb_insert_logits_part(hx, row, hn, hh, p[1], 20, 1e-6f, tag), 0);
    cr_assert_neq(apb_insert_logits_part(hx, row, hn, hh, p[1], 21, 1e-6f, tag), 0, "rows past the vocabulary accepted");
    cr_assert_eq(apb_insert_gather(p, 2, hl, 0, tag), 0);
    apb_handle all[] = {hx, hn, hh, hl, p[0], p[1]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        apb_handle_free_now(all[i]);
    double e = t_rel_err(lg, ref, vocab);
    cr_assert_lt(e, 1e-6, "split logits rel err %g", e);
    free(x); free(nw); free(head); free(lg); free(ref);
}

/* x += o W^T in 2 blocks of o's columns, summed, and the next norm in the summing task */
Test(decode, linear_split_sum_norm)
{
    int n_in = 48, n_out = 40;
    float *o = t_alloc(n_in), *w = t_alloc(n_out * n_in), *x = t_alloc(n_out), *x0 = t_alloc(n_out),
          *nw = t_alloc(n_out), *xn = t_poisoned(n_out);
    t_fill(o, n_in, 1, 60); t_fill(w, n_out * n_in, 0.3f, 61); t_fill(x, n_out, 1, 62); t_fill(nw, n_out, 1, 63);
    memcpy(x0, x, sizeof(float) * n_out);
    double *ref = malloc(sizeof(double) * n_out), *refn = malloc(sizeof(double) * n_out), ss = 0;
    for (int j = 0; j < n_out; j++) {
        double s = x0[j];
        for (int i = 0; i < n_in; i++)
            s += (double)o[i] * w[j * n_in + i];
        ref[j] = s;
        ss += s * s;
    }
    for (int j = 0; j < n_out; j++)
        refn[j] = ref[j] / sqrt(ss / n_out + 1e-5) * nw[j];
    apb_handle ho = apb_tile_from(o, 1, n_in, 4), hw = apb_tile_from(w, n_out, n_in, 4),
               hx = apb_tile_from(x, 1, n_out, 4), hn = apb_tile_from(nw, 1, n_out, 4),
               hxn = apb_tile_from(xn, 1, n_out, 4);
    apb_handle z[2] = {apb_tile_new(1, n_out, 4), apb_tile_new(1, n_out, 4)};
    cr_assert_eq(apb_insert_linear_part(ho, hw, z[0], 0, 16, tag), 0);
    cr_assert_eq(apb_insert_linear_part(ho, hw, z[1], 16, n_in, tag), 0);
    cr_assert_neq(apb_insert_linear_part(ho, hw, z[1], 16, n_in + 1, tag), 0, "block past the end accepted");
    cr_assert_eq(apb_insert_gather_norm(z, 2, hx, 1, hn, hxn, 1e-5f, tag), 0);
    apb_handle all[] = {ho, hw, hx, hn, hxn, z[0], z[1]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        apb_handle_free_now(all[i]);
    double e = t_rel_err(x, ref, n_out), en = t_rel_err(xn, refn, n_out);
    cr_assert_lt(e, 1e-6, "split linear rel err %g", e);
    cr_assert_lt(en, 1e-6, "norm after the sum rel err %g", en);
    free(o); free(w); free(x); free(x0); free(nw); free(xn); free(ref); free(refn);
}

/* The one-row attention against the general kernel (itself checked against float64 in
 * test_attention): three segments, fp32 and bf16, one causal and cut by the query's coordinate,
 * one hidden from it by min_q_coord */
Test(decode, attention_row_matches_general_kernel)
{
    int H = 6, Hk = 2, d = 40, W = Hk * d, len[3] = {70, 33, 20}, q_coord = 120;
    float *q = t_alloc(H * d), *o = t_poisoned(H * d), *lse = t_poisoned(H), *o2 = t_alloc(H * d),
          *lse2 = t_alloc(H);
    t_fill(q, H * d, 2, 70);
    float *kv[6];
    uint16_t *k16 = malloc(2 * len[1] * W), *v16 = malloc(2 * len[1] * W);
    for (int i = 0; i < 6; i++) {
        kv[i] = t_alloc(len[i / 2] * W);
        t_fill(kv[i], len[i / 2] * W, 1, 71 + i);
    }
    for (int i = 0; i < len[1] * W; i++) {
        k16[i] = to_bf16(&kv[2][i]);
        v16[i] = to_bf16(&kv[3][i]);
    }
    struct _apb_attn_seg_cpu segs[3] = {
        {kv[0], kv[1], W, 0, len[0], 0, 0, 0},
        {(const float *)(void *)k16, (const float *)(void *)v16, W, 1, len[1], 100, 1, 0},
        {kv[4], kv[5], W, 0, len[2], 200, 0, 121}, /* visible from coordinate 121 on: not here */
    };
    apb_attention_row_f32(q, q_coord, segs, 3, H, Hk, d, o, lse);
    apb_attention_f32(q, H * d, 1, q_coord, segs, 3, H, Hk, d, o2, H * d, lse2, H);
    double *ref = malloc(sizeof(double) * H * d), *refl = malloc(sizeof(double) * H);
    for (int i = 0; i < H * d; i++)
        ref[i] = o2[i];
    for (int i = 0; i < H; i++)
        refl[i] = lse2[i];
    double e = t_rel_err(o, ref, H * d), el = t_rel_err(lse, refl, H);
    cr_assert_lt(e, 1e-6, "attention_row o rel err %g", e);
    cr_assert_lt(el, 1e-6, "attention_row lse rel err %g", el);
    for (int i = 0; i < 6; i++)
        free(kv[i]);
    free(q); free(o); free(lse); free(o2); free(lse2); free(k16); free(v16); free(ref); free(refl);
}
