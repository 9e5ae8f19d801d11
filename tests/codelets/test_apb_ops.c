/* SPDX-License-Identifier: MIT */
/**
 * @brief APB ops against independent references: query-aware selection (max-pool, exclusion of the
 * first positions, top-k per KV head, gather across tiles), the question-mean vector, and the LSE
 * merge of partial attention results.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "tests/test_util.h"

TestSuite(apb_ops, .init = t_runtime_up, .fini = apb_runtime_shutdown);

/* reference top-k: pooled[j] = max(s[j-2..j+2]) (-inf outside), -inf for j < excl, then the k
 * largest by (value desc, index asc), returned ascending. O(n*k), deliberately simple. */
static void ref_topk(const float *s, int n, int excl, int k, int *out)
{
    double *p = malloc(sizeof(double) * n);
    char *taken = calloc(n, 1);
    for (int j = 0; j < n; j++) {
        double m = -INFINITY;
        for (int t = j - 2; t <= j + 2; t++)
            if (t >= 0 && t < n && s[t] > m)
                m = s[t];
        p[j] = j < excl ? -INFINITY : m;
    }
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int j = 0; j < n; j++)
            if (!taken[j] && (best < 0 || p[j] > p[best]))
                best = j;
        if (best < 0)
            break; /* k > n: every row taken */
        taken[best] = 1;
    }
    for (int j = 0, i = 0; j < n; j++)
        if (taken[j])
            out[i++] = j;
    free(p);
    free(taken);
}

Test(apb_ops, topk_matches_reference)
{
    for (int trial = 0; trial < 50; trial++) {
        int n = 20 + trial * 7, excl = trial % 9, k = 1 + (trial * 13) % (n - excl);
        float *s = t_alloc(n), pooled[400];
        int idx[400], order[400], ref[400];
        t_fill(s, n, 1.0f, 100 + trial);
        apb_select_topk(s, n, excl, k, idx, pooled, order);
        ref_topk(s, n, excl, k, ref);
        cr_assert_arr_eq(idx, ref, sizeof(int) * k, "trial %d (n %d, excl %d, k %d)", trial, n, excl, k);
        for (int i = 0; i < k; i++)
            cr_assert_geq(idx[i], excl, "an excluded position was selected");
        free(s);
    }
}

Test(apb_ops, topk_maxpool_spreads_peak)
{
    /* one spike at 10: pooling makes 8..12 tie at the top; ties go to lower indices */
    float s[30] = {0};
    s[10] = 5.0f;
    int idx[3], order[30];
    float pooled[30];
    apb_select_topk(s, 30, 0, 3, idx, pooled, order);
    cr_assert(idx[0] == 8 && idx[1] == 9 && idx[2] == 10, "got %d %d %d", idx[0], idx[1], idx[2]);
    /* excluding the first 9 positions moves the window */
    apb_select_topk(s, 30, 9, 3, idx, pooled, order);
    cr_assert(idx[0] == 9 && idx[1] == 10 && idx[2] == 11, "got %d %d %d", idx[0], idx[1], idx[2]);
}

Test(apb_ops, select_gathers_per_kv_head_across_tiles)
{
    int Hk = 3, d = 8, T = 13, n = 31, K = 7, excl = 4;
    int kd = Hk * d;
    float *k = t_alloc(n * kd), *v = t_alloc(n * kd), qbar[24];
    t_fill(k, n * kd, 1, 200);
    t_fill(v, n * kd, 1, 201);
    t_fill(qbar, kd, 1, 202);
    float *ck = t_poisoned(K * kd), *cv = t_poisoned(K * kd);
    apb_handle kt[3], vt[3];
    for (int t = 0; t < 3; t++) {
        int rows = t < 2 ? T : n - 2 * T;
        kt[t] = apb_tile_from(k + t * T * kd, rows, kd, 4);
        vt[t] = apb_tile_from(v + t * T * kd, rows, kd, 4);
    }
    apb_handle hq = apb_tile_from(qbar, 1, kd, 4), hck = apb_tile_from(ck, K, kd, 4),
               hcv = apb_tile_from(cv, K, kd, 4);
    cr_assert_eq(apb_insert_select(hq, kt, vt, 3, excl, K, d, hck, hcv, (apb_task_tag){0, 0, 0}), 0);
    cr_assert_neq(apb_insert_select(hq, kt, vt, 3, n - 3, K, d, hck, hcv, (apb_task_tag){0, 0, 0}), 0,
                  "K larger than the selectable rows accepted");
    for (int t = 0; t < 3; t++) {
        apb_handle_free_now(kt[t]);
        apb_handle_free_now(vt[t]);
    }
    apb_handle_free_now(hq);
    apb_handle_free_now(hck);
    apb_handle_free_now(hcv);
    for (int g = 0; g < Hk; g++) {
        float s[31];
        for (int j = 0; j < n; j++) {
            float acc = 0;
            for (int c = 0; c < d; c++)
                acc += k[j * kd + g * d + c] * qbar[g * d + c];
            s[j] = acc;
        }
        int ref[7];
        ref_topk(s, n, excl, K, ref);
        for (int i = 0; i < K; i++) {
            cr_assert_arr_eq(ck + i * kd + g * d, k + ref[i] * kd + g * d, sizeof(float) * d,
                             "head %d row %d: K not gathered from row %d", g, i, ref[i]);
            cr_assert_arr_eq(cv + i * kd + g * d, v + ref[i] * kd + g * d, sizeof(float) * d);
        }
    }
    free(k); free(v); free(ck); free(cv);
}

Test(apb_ops, qmean_over_rows_and_gqa_group)
{
    int rows = 9, H = 6, Hk = 2, d = 4, r0 = 3, nr = 5;
    float *q = t_alloc(rows * H * d), qbar[8];
    for (int i = 0; i < Hk * d; i++)
        qbar[i] = NAN;
    t_fill(q, rows * H * d, 1, 300);
    apb_handle hq = apb_tile_from(q, rows, H * d, 4), hb = apb_tile_from(qbar, 1, Hk * d, 4);
    cr_assert_eq(apb_insert_qmean(hq, r0, nr, Hk, d, hb, (apb_task_tag){0, 0, 0}), 0);
    apb_handle_free_now(hq);
    apb_handle_free_now(hb);
    double ref[8];
    for (int g = 0; g < Hk; g++)
        for (int c = 0; c < d; c++) {
            double s = 0;
            for (int i = r0; i < r0 + nr; i++)
                for (int h = g * 3; h < g * 3 + 3; h++)
                    s += q[(i * H + h) * d + c];
            ref[g * d + c] = s / (nr * 3);
        }
    cr_assert_lt(t_rel_err(qbar, ref, Hk * d), 1e-6);
    free(q);
}

Test(apb_ops, lse_merge_matches_double_and_skips_empty_partials)
{
    int rows = 5, H = 3, d = 8, n = 3;
    float *o[3], *l[3];
    for (int i = 0; i < n; i++) {
        o[i] = t_alloc(rows * H * d);
        l[i] = t_alloc(rows * H);
        t_fill(o[i], rows * H * d, 1, 400 + i);
        t_fill(l[i], rows * H, 8, 410 + i);
    }
    for (int h = 0; h < H; h++) /* partial 2 saw no key for row 0 */
        l[2][h] = -INFINITY;
    for (int i = 0; i < n; i++) /* row 4 head 0: nobody saw anything */
        l[i][4 * H] = -INFINITY;
    float *out = t_poisoned(rows * H * d), *lo = t_poisoned(rows * H);
    apb_handle ho[3], hl[3];
    for (int i = 0; i < n; i++) {
        ho[i] = apb_tile_from(o[i], rows, H * d, 4);
        hl[i] = apb_tile_from(l[i], rows, H, 4);
    }
    apb_handle hout = apb_tile_from(out, rows, H * d, 4), hlo = apb_tile_from(lo, rows, H, 4);
    cr_assert_eq(apb_insert_lse_merge(ho, hl, n, d, hout, hlo, (apb_task_tag){0, 0, 0}), 0);
    for (int i = 0; i < n; i++) {
        apb_handle_free_now(ho[i]);
        apb_handle_free_now(hl[i]);
    }
    apb_handle_free_now(hout);
    apb_handle_free_now(hlo);
    double *ref = malloc(sizeof(double) * rows * H * d);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) {
            double Z = 0;
            for (int i = 0; i < n; i++)
                Z += exp((double)l[i][r * H + h]);
            for (int c = 0; c < d; c++) {
                double s = 0;
                for (int i = 0; i < n; i++)
                    if (Z > 0)
                        s += exp((double)l[i][r * H + h]) / Z * o[i][(r * H + h) * d + c];
                ref[(r * H + h) * d + c] = s;
            }
            if (Z > 0)
                cr_assert(fabs(lo[r * H + h] - log(Z)) < 1e-5 * (1 + fabs(log(Z))));
            else
                cr_assert(isinf(lo[r * H + h]) && lo[r * H + h] < 0);
        }
    double e = t_rel_err(out, ref, rows * H * d);
    cr_assert_lt(e, 1e-6, "merge rel err %g", e);
    for (int i = 0; i < n; i++) {
        free(o[i]);
        free(l[i]);
    }
    free(out); free(lo); free(ref);
}

Test(apb_ops, retain_score_matches_double)
{
    int rows = 11, cq = 24, ck = 8, cv = 8, in = cq + ck + cv, hid = 20, hk = 2;
    float *q = t_alloc(rows * cq), *k = t_alloc(rows * ck), *v = t_alloc(rows * cv);
    float *f1 = t_alloc(hid * in), *f2 = t_alloc(hk * hid), *sc = t_poisoned(rows * hk);
    t_fill(q, rows * cq, 1, 500); t_fill(k, rows * ck, 1, 501); t_fill(v, rows * cv, 1, 502);
    t_fill(f1, hid * in, 0.3f, 503); t_fill(f2, hk * hid, 0.3f, 504);
    apb_handle h[6] = {apb_tile_from(q, rows, cq, 4), apb_tile_from(k, rows, ck, 4),
                       apb_tile_from(v, rows, cv, 4), apb_tile_from(f1, hid, in, 4),
                       apb_tile_from(f2, hk, hid, 4), apb_tile_from(sc, rows, hk, 4)};
    cr_assert_eq(apb_insert_retain_score(h[0], h[1], h[2], h[3], h[4], h[5], (apb_task_tag){0, 0, 0}), 0);
    cr_assert_neq(apb_insert_retain_score(h[0], h[1], h[2], h[4], h[3], h[5], (apb_task_tag){0, 0, 0}), 0,
                  "swapped fc1/fc2 accepted");
    for (int i = 0; i < 6; i++)
        apb_handle_free_now(h[i]);
    double ref[22];
    for (int r = 0; r < rows; r++) {
        double x[40], hh[20];
        for (int c = 0; c < in; c++)
            x[c] = c < cq ? q[r * cq + c] : c < cq + ck ? k[r * ck + c - cq] : v[r * cv + c - cq - ck];
        for (int j = 0; j < hid; j++) {
            double s = 0;
            for (int c = 0; c < in; c++)
                s += f1[j * in + c] * x[c];
            hh[j] = s / (1 + exp(-s));
        }
        for (int g = 0; g < hk; g++) {
            double s = 0;
            for (int j = 0; j < hid; j++)
                s += f2[g * hid + j] * hh[j];
            ref[r * hk + g] = s;
        }
    }
    double e = t_rel_err(sc, ref, rows * hk);
    cr_assert_lt(e, 1e-5, "retain scores rel err %g", e);
    free(q); free(k); free(v); free(f1); free(f2); free(sc);
}

Test(apb_ops, select_from_scores)
{
    int Hk = 2, d = 4, n = 20, K = 5, kd = Hk * d;
    float *k = t_alloc(n * kd), *v = t_alloc(n * kd), *s = t_alloc(n * Hk);
    t_fill(k, n * kd, 1, 600); t_fill(v, n * kd, 1, 601); t_fill(s, n * Hk, 1, 602);
    float *ck = t_poisoned(K * kd), *cv = t_poisoned(K * kd);
    apb_handle hk = apb_tile_from(k, n, kd, 4), hv = apb_tile_from(v, n, kd, 4),
               hs = apb_tile_from(s, n, Hk, 4), hck = apb_tile_from(ck, K, kd, 4),
               hcv = apb_tile_from(cv, K, kd, 4);
    cr_assert_eq(apb_insert_select_scored(&hs, &hk, &hv, 1, 3, K, d, hck, hcv, (apb_task_tag){0, 0, 0}), 0);
    apb_handle_free_now(hk); apb_handle_free_now(hv); apb_handle_free_now(hs);
    apb_handle_free_now(hck); apb_handle_free_now(hcv);
    for (int g = 0; g < Hk; g++) {
        float col[20];
        for (int j = 0; j < n; j++)
            col[j] = s[j * Hk + g];
        int ref[5];
        ref_topk(col, n, 3, K, ref);
        for (int i = 0; i < K; i++)
            cr_assert_arr_eq(ck + i * kd + g * d, k + ref[i] * kd + g * d, sizeof(float) * d);
    }
    free(k); free(v); free(s); free(ck); free(cv);
}
