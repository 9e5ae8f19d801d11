/* SPDX-License-Identifier: MIT */
/**
 * @brief Attention codelet against a float64 reference of the visibility rule, on random inputs
 * with poisoned outputs: causal, non-causal, APB-style passing segments that anchor rows skip,
 * GQA, rows that see nothing, the LSE merge identity, and bf16 K/V segments (the compacted KV
 * cache of finished layers) alone and mixed with fp32 ones.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "codelets/apb_kernels_cpu.h"
#include "tests/test_util.h"

TestSuite(attention, .init = t_runtime_up, .fini = apb_runtime_shutdown);

struct seg_spec { int len, coord0, causal, min_q_coord; };

/* float64 reference: o (n_q x H*d), lse (n_q x H) */
static void ref_attention(const float *q, int n_q, int q_coord0, float **k, float **v,
                          const struct seg_spec *sp, int ns, int H, int Hk, int d, double *o,
                          double *lse)
{
    int G = H / Hk;
    for (int i = 0; i < n_q; i++)
        for (int h = 0; h < H; h++) {
            int kvh = h / G;
            long qc = q_coord0 + i;
            double mx = -INFINITY;
            /* pass 1: max */
            for (int s = 0; s < ns; s++)
                for (int j = 0; j < sp[s].len; j++) {
                    if (qc < sp[s].min_q_coord || (sp[s].causal && sp[s].coord0 + j > qc))
                        continue;
                    double dot = 0;
                    for (int c = 0; c < d; c++)
                        dot += (double)q[(i * H + h) * d + c] * k[s][(j * Hk + kvh) * d + c];
                    dot /= sqrt((double)d);
                    if (dot > mx)
                        mx = dot;
                }
            double sum = 0, acc[64] = {0};
            for (int s = 0; s < ns; s++)
                for (int j = 0; j < sp[s].len; j++) {
                    if (qc < sp[s].min_q_coord || (sp[s].causal && sp[s].coord0 + j > qc))
                        continue;
                    double dot = 0;
                    for (int c = 0; c < d; c++)
                        dot += (double)q[(i * H + h) * d + c] * k[s][(j * Hk + kvh) * d + c];
                    double p = exp(dot / sqrt((double)d) - mx);
                    sum += p;
                    for (int c = 0; c < d; c++)
                        acc[c] += p * v[s][(j * Hk + kvh) * d + c];
                }
            for (int c = 0; c < d; c++)
                o[(i * H + h) * d + c] = sum > 0 ? acc[c] / sum : 0.0;
            lse[i * H + h] = sum > 0 ? mx + log(sum) : -INFINITY;
        }
}

/* Segments whose bit is set are passed as bf16 tiles (elemsize 2); check_case rounds their K/V to
 * bf16 first, so the float64 reference sees the same values. */
static unsigned g_bf16_mask;
/* > 0: every segment is passed as rows [g_row0, g_row0 + len) of a taller tile whose first g_row0
 * rows are NaN (the contiguous bf16 cache of a finished layer holds all its tiles that way) */
static int g_row0;
/* > 1: the query rows are split into this many tiles (the last takes the remainder) passed to ONE
 * task (apb_insert_attention_tiles: a whole layer's prompt in one call on a GPU) */
static int g_qtiles;
/* 1: the output tiles are bf16 (the prefill's o tiles under bf16 precision), poisoned with NaN and
 * widened into o after the run; the tolerance adds bf16's rounding */
static int g_o16;

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A bf16 copy of n values (to_bf16 each); the caller frees it. */
static uint16_t *bf16_copy(const float *x, size_t n)
{
    uint16_t *h = malloc(2 * n);
    cr_assert(h);
    for (size_t i = 0; i < n; i++)
        h[i] = to_bf16(x[i]);
    return h;
}

/* Runs the codelet through StarPU; returns o and lse in the given (poisoned) arrays. */
static void run_attention(float *q, int n_q, int q_coord0, float **k, float **v, int *rows,
                          const struct seg_spec *sp, int ns, int H, int Hk, int d, float *o, float *lse)
{
    enum { MAXQ = 8 };
    const int nt = g_qtiles > 1 ? g_qtiles : 1;
    cr_assert(nt <= MAXQ && n_q >= nt);
    apb_handle hq[MAXQ], ho[MAXQ], hl[MAXQ];
    uint16_t *o16 = NULL;
    if (g_o16) {
        o16 = malloc(2 * (size_t)n_q * H * d);
        cr_assert(o16);
        for (size_t i = 0; i < (size_t)n_q * H * d; i++)
            o16[i] = 0x7fc0; /* NaN */
    }
    for (int t = 0, r0 = 0; t < nt; t++) { /* tiles of n_q / nt rows, the last one the rest */
        const int rows_t = t == nt - 1 ? n_q - r0 : n_q / nt;
        hq[t] = apb_tile_from(q + (size_t)r0 * H * d, rows_t, H * d, 4);
        ho[t] = o16 ? apb_tile_from(o16 + (size_t)r0 * H * d, rows_t, H * d, 2)
                    : apb_tile_from(o + (size_t)r0 * H * d, rows_t, H * d, 4);
        hl[t] = apb_tile_from(lse + (size_t)r0 * H, rows_t, H, 4);
        r0 += rows_t;
    }
    apb_attn_seg segs[8];
    uint16_t *k16[8] = {0}, *v16[8] = {0};
    float *kt[8] = {0}, *vt[8] = {0};
    const size_t w = (size_t)Hk * d, off = (size_t)g_row0 * w;
    for (int s = 0; s < ns; s++) {
        apb_handle hk, hv;
        const size_t n = (size_t)rows[s] * w;
        kt[s] = malloc(sizeof(float) * (off + n));
        vt[s] = malloc(sizeof(float) * (off + n));
        cr_assert(kt[s] && vt[s]);
        for (size_t i = 0; i < off; i++)
            kt[s][i] = vt[s][i] = NAN;
        memcpy(kt[s] + off, k[s], sizeof(float) * n);
        memcpy(vt[s] + off, v[s], sizeof(float) * n);
        if (g_bf16_mask >> s & 1u) {
            k16[s] = bf16_copy(kt[s], off + n);
            v16[s] = bf16_copy(vt[s], off + n);
            hk = apb_tile_from(k16[s], g_row0 + rows[s], Hk * d, 2);
            hv = apb_tile_from(v16[s], g_row0 + rows[s], Hk * d, 2);
        } else {
            hk = apb_tile_from(kt[s], g_row0 + rows[s], Hk * d, 4);
            hv = apb_tile_from(vt[s], g_row0 + rows[s], Hk * d, 4);
        }
        segs[s] = (apb_attn_seg){hk, hv, sp[s].len, sp[s].coord0, sp[s].causal, sp[s].min_q_coord, g_row0};
    }
    if (nt > 1)
        cr_assert_eq(apb_insert_attention_tiles(hq, nt, q_coord0, segs, ns, H, Hk, d, ho, hl,
                                                (apb_task_tag){0, 0, 0}), 0);
    else
        cr_assert_eq(apb_insert_attention(hq[0], q_coord0, segs, ns, H, Hk, d, ho[0], hl[0],
                                          (apb_task_tag){0, 0, 0}), 0);
    for (int s = 0; s < ns; s++) {
        apb_handle_free_now(segs[s].k);
        apb_handle_free_now(segs[s].v);
        free(k16[s]);
        free(v16[s]);
        free(kt[s]);
        free(vt[s]);
    }
    for (int t = 0; t < nt; t++) {
        apb_handle_free_now(hq[t]);
        apb_handle_free_now(ho[t]);
        apb_handle_free_now(hl[t]);
    }
    if (o16) {
        for (size_t i = 0; i < (size_t)n_q * H * d; i++)
            o[i] = from_bf16(o16[i]);
        free(o16);
    }
}

/* mm16: the kernel's bf16 products (apb_attention_heads_bf16mm, oneDNN) called directly instead
 * of the codelet, checked at bf16 accuracy */
static void check_case_m(int n_q, int q_coord0, const struct seg_spec *sp, int ns, int H, int Hk,
                         int d, uint64_t seed, int mm16)
{
    float *q = t_alloc(n_q * H * d), *k[8], *v[8];
    int rows[8];
    t_fill(q, n_q * H * d, 2.0f, seed);
    for (int s = 0; s < ns; s++) {
        rows[s] = sp[s].len + 3; /* tiles larger than the valid length: extra rows must be ignored */
        k[s] = t_alloc(rows[s] * Hk * d);
        v[s] = t_alloc(rows[s] * Hk * d);
        t_fill(k[s], rows[s] * Hk * d, 2.0f, seed + 10 + s);
        t_fill(v[s], rows[s] * Hk * d, 1.0f, seed + 20 + s);
        for (int j = sp[s].len; j < rows[s]; j++)
            for (int c = 0; c < Hk * d; c++)
                k[s][j * Hk * d + c] = v[s][j * Hk * d + c] = NAN;
        if (g_bf16_mask >> s & 1u) /* the reference sees the values the bf16 tile holds */
            for (int i = 0; i < rows[s] * Hk * d; i++) {
                k[s][i] = from_bf16(to_bf16(k[s][i]));
                v[s][i] = from_bf16(to_bf16(v[s][i]));
            }
    }
    float *o = t_poisoned(n_q * H * d), *lse = t_poisoned(n_q * H);
    double *ro = malloc(sizeof(double) * n_q * H * d), *rl = malloc(sizeof(double) * n_q * H);
    ref_attention(q, n_q, q_coord0, k, v, sp, ns, H, Hk, d, ro, rl);
    if (mm16) {
        struct _apb_attn_seg_cpu cs[8];
        uint16_t *k16[8] = {0}, *v16[8] = {0};
        for (int s = 0; s < ns; s++) { /* the NaN rows past len are never read */
            int b16 = g_bf16_mask >> s & 1u;
            if (b16) {
                k16[s] = bf16_copy(k[s], (size_t)rows[s] * Hk * d);
                v16[s] = bf16_copy(v[s], (size_t)rows[s] * Hk * d);
            }
            cs[s] = (struct _apb_attn_seg_cpu){.k = b16 ? (const float *)(void *)k16[s] : k[s],
                                               .v = b16 ? (const float *)(void *)v16[s] : v[s], .ld = Hk * d,
                                               .bf16 = b16, .len = sp[s].len, .coord0 = sp[s].coord0,
                                               .causal = sp[s].causal, .min_q_coord = sp[s].min_q_coord};
        }
        apb_attention_heads_bf16mm(q, H * d, n_q, q_coord0, cs, ns, H, Hk, 0, Hk, d, o, H * d, lse, H);
        for (int s = 0; s < ns; s++) {
            free(k16[s]);
            free(v16[s]);
        }
    } else {
        run_attention(q, n_q, q_coord0, k, v, rows, sp, ns, H, Hk, d, o, lse);
    }
    double e = t_rel_err(o, ro, n_q * H * d), tol = mm16 ? 2e-2 : g_o16 ? 4e-3 : 2e-6, ltol = mm16 ? 2e-2 : 1e-4;
    cr_log_info("attention%s rel err %.3g", mm16 ? " (bf16 products)" : "", e);
    cr_assert_lt(e, tol, "attention output rel err %g", e);
    for (int i = 0; i < n_q * H; i++) {
        if (isinf(rl[i]))
            cr_assert(isinf(lse[i]) && lse[i] < 0, "row %d sees nothing: lse %g", i, lse[i]);
        else
            cr_assert(fabs(lse[i] - rl[i]) < ltol * (1 + fabs(rl[i])), "lse[%d] %g vs %g", i, lse[i], rl[i]);
    }
    for (int s = 0; s < ns; s++) {
        free(k[s]);
        free(v[s]);
    }
    free(q); free(o); free(lse); free(ro); free(rl);
}

/* apb_attn_seg_pairs (the task's FLOP count) against a count of the pairs the reference visits */
static void check_pairs(int n_q, int q_coord0, const struct seg_spec *sp, int ns)
{
    for (int s = 0; s < ns; s++) {
        double want = 0;
        for (long qc = q_coord0; qc < (long)q_coord0 + n_q; qc++)
            for (int j = 0; j < sp[s].len; j++)
                want += !(qc < sp[s].min_q_coord || (sp[s].causal && sp[s].coord0 + j > qc));
        double got = apb_attn_seg_pairs(q_coord0, n_q, sp[s].len, sp[s].coord0, sp[s].causal, sp[s].min_q_coord);
        cr_assert_eq(got, want, "segment %d (len %d, coord0 %d, causal %d, min_q %d), rows [%d, %d): %g pairs, "
                     "the reference visits %g", s, sp[s].len, sp[s].coord0, sp[s].causal, sp[s].min_q_coord,
                     q_coord0, q_coord0 + n_q, got, want);
    }
}

static void check_case(int n_q, int q_coord0, const struct seg_spec *sp, int ns, int H, int Hk,
                       int d, uint64_t seed)
{
    check_pairs(n_q, q_coord0, sp, ns);
    check_case_m(n_q, q_coord0, sp, ns, H, Hk, d, seed, 0);
}

/* --precision bf16 prefill tiles on the CPU: Q K^T and P V in bf16 through oneDNN (rows from a
 * multiple of 32 before the end, keys padded to 32); every segment kind, chunk boundaries inside
 * segments, rows that see nothing */
Test(attention, bf16_matmul_products)
{
    if (!apb_dnnl_enabled())
        cr_skip_test("built without oneDNN or APB_DNNL=0");
    struct seg_spec c1[] = {{300, 0, 1, 0}, {300, 300, 1, 0}, {101, 600, 1, 0}};
    check_case_m(101, 600, c1, 3, 6, 2, 64, 31, 1); /* R = 303 rows, causal chunks of 256 */
    struct seg_spec c2[] = {{24, -1000, 0, 20}, {20, 0, 1, 0}, {30, 20, 1, 0}};
    check_case_m(50, 0, c2, 3, 6, 3, 16, 32, 1);
    struct seg_spec c3[] = {{40, 0, 0, 0}, {270, 40, 0, 0}};
    check_case_m(40, 1000, c3, 2, 4, 1, 64, 33, 1);
    struct seg_spec c4[] = {{10, 0, 0, 5}};
    check_case_m(8, 0, c4, 1, 2, 2, 32, 34, 1);
    g_bf16_mask = 5; /* bf16 cache segments (finished layers) taken as they are, beside fp32 ones */
    check_case_m(101, 600, c1, 3, 6, 2, 64, 35, 1);
    g_bf16_mask = 0;
}

/* Segments that start inside their tiles (row0 > 0, NaN rows before them), fp32 and bf16: the
 * contiguous bf16 cache of finished layers; several segments of one causal run and the anchor /
 * passing pattern */
Test(attention, segments_at_a_row_offset)
{
    g_row0 = 7;
    struct seg_spec c1[] = {{150, 0, 1, 0}, {150, 150, 1, 0}, {61, 300, 1, 0}};
    check_case(61, 300, c1, 3, 6, 2, 16, 41);
    struct seg_spec c2[] = {{24, -1000, 0, 20}, {20, 0, 1, 0}, {30, 20, 1, 0}};
    check_case(50, 0, c2, 3, 6, 3, 16, 42);
    g_bf16_mask = 3;
    check_case(61, 300, c1, 3, 6, 2, 16, 43);
    struct seg_spec c3[] = {{300, 0, 0, 0}};
    check_case(1, 5000, c3, 1, 8, 2, 64, 44); /* one decode row over one long past segment */
    g_bf16_mask = 0;
    g_row0 = 0;
}

/* Several query tiles in one task (a layer's whole prompt, apb_insert_attention_tiles): the causal
 * prompt as one segment (the compacted cache), fp32 and bf16, at a row offset; the APB pattern
 * (anchor, passing block the anchor rows skip, local block) with the passing boundary inside the
 * second tile; rows of the first tile that see nothing. */
Test(attention, query_tiles_in_one_task)
{
    g_qtiles = 3;
    struct seg_spec c1[] = {{211, 0, 1, 0}};
    check_case(211, 0, c1, 1, 6, 2, 16, 51);
    g_bf16_mask = 1;
    g_row0 = 5;
    check_case(211, 0, c1, 1, 8, 2, 32, 52);
    g_row0 = 0;
    g_bf16_mask = 0;
    struct seg_spec c2[] = {{40, 0, 1, 0}, {50, 40, 0, 300}, {120, 200, 1, 0}};
    check_case(120, 200, c2, 3, 6, 3, 16, 53);
    struct seg_spec c3[] = {{60, 0, 0, 20}};
    check_case(30, 0, c3, 1, 4, 2, 16, 54);
    g_qtiles = 0;
}

/* bf16 output tiles (the prefill's o under bf16 precision): the result rounded once, rows that see
 * nothing exactly 0, every segment kind, several query tiles, bf16 K/V read in place */
Test(attention, bf16_output_tiles)
{
    g_o16 = 1;
    struct seg_spec c1[] = {{77, 0, 1, 0}};
    check_case(77, 0, c1, 1, 4, 4, 32, 61);
    struct seg_spec c2[] = {{150, 0, 1, 0}, {150, 150, 1, 0}, {61, 300, 1, 0}};
    check_case(61, 300, c2, 3, 6, 2, 16, 62);
    struct seg_spec c3[] = {{24, -1000, 0, 20}, {20, 0, 1, 0}, {30, 20, 1, 0}};
    check_case(50, 0, c3, 3, 6, 3, 16, 63);
    struct seg_spec c4[] = {{10, 0, 0, 5}};
    check_case(8, 0, c4, 1, 2, 2, 8, 64);
    g_bf16_mask = 1;
    check_case(77, 0, c1, 1, 4, 2, 64, 65);
    g_qtiles = 3;
    check_case(211, 0, (struct seg_spec[]){{211, 0, 1, 0}}, 1, 8, 2, 32, 66);
    g_qtiles = 0;
    g_bf16_mask = 0;
    g_o16 = 0;
}

Test(attention, causal_single_segment)
{
    struct seg_spec sp[] = {{77, 0, 1, 0}};
    check_case(77, 0, sp, 1, 4, 4, 32, 1);
}

Test(attention, causal_gqa_multi_tile_long_keys)
{
    /* query tile 2 of a tiled prefill: keys in 3 tiles (chunk boundaries inside tiles) */
    struct seg_spec sp[] = {{150, 0, 1, 0}, {150, 150, 1, 0}, {61, 300, 1, 0}};
    check_case(61, 300, sp, 3, 6, 2, 16, 2);
}

Test(attention, non_causal)
{
    struct seg_spec sp[] = {{40, 0, 0, 0}, {200, 40, 0, 0}};
    check_case(9, 1000, sp, 2, 4, 1, 64, 3);
}

Test(attention, apb_mask_anchor_rows_skip_passing)
{
    /* coordinates: anchor rows 0..a-1, local rows a..a+l-1; passing block visible from a on */
    int a = 20, l = 30;
    struct seg_spec sp[] = {{24, -1000, 0, a}, /* passing block (non-causal, min_q_coord = a) */
                            {a, 0, 1, 0},       /* anchor keys */
                            {l, a, 1, 0}};      /* local keys */
    check_case(a + l, 0, sp, 3, 6, 3, 16, 4);
}

/* the FLOP count's pairs at the edges: keys that start after, inside and before the rows, rows
 * that start below min_q_coord, a causal block offset from the rows (bottom-right aligned) */
Test(attention, visible_pair_count)
{
    const int q0s[] = {0, 5, 37, 100}, nqs[] = {1, 7, 64};
    const struct seg_spec sp[] = {{10, 0, 1, 0}, {64, 37, 1, 0}, {64, 60, 1, 0}, {30, 90, 1, 0},
                                  {200, -50, 1, 40}, {17, 3, 0, 41}, {9, 500, 1, 0}, {0, 0, 1, 0}};
    for (int i = 0; i < 4; i++)
        for (int n = 0; n < 3; n++)
            check_pairs(nqs[n], q0s[i], sp, 8);
}

Test(attention, rows_that_see_nothing)
{
    struct seg_spec sp[] = {{10, 0, 0, 5}}; /* rows with coord < 5 see no key */
    check_case(8, 0, sp, 1, 2, 2, 8, 5);
}

Test(attention, lse_merge_of_two_halves_equals_whole)
{
    int n_q = 16, H = 4, Hk = 2, d = 32, len = 90;
    float *q = t_alloc(n_q * H * d), *k = t_alloc(len * Hk * d), *v = t_alloc(len * Hk * d);
    t_fill(q, n_q * H * d, 2, 7); t_fill(k, len * Hk * d, 2, 8); t_fill(v, len * Hk * d, 1, 9);
    float *kk[1] = {k}, *vv[1] = {v}, *kb[1] = {k + 50 * Hk * d}, *vb[1] = {v + 50 * Hk * d};
    int r_all[1] = {len}, r_a[1] = {50}, r_b[1] = {40};
    struct seg_spec all[] = {{len, 0, 0, 0}}, sa[] = {{50, 0, 0, 0}}, sb[] = {{40, 50, 0, 0}};
    float *o = t_poisoned(n_q * H * d), *lse = t_poisoned(n_q * H);
    float *oa = t_poisoned(n_q * H * d), *la = t_poisoned(n_q * H);
    float *ob = t_poisoned(n_q * H * d), *lb = t_poisoned(n_q * H);
    run_attention(q, n_q, 100, kk, vv, r_all, all, 1, H, Hk, d, o, lse);
    run_attention(q, n_q, 100, kk, vv, r_a, sa, 1, H, Hk, d, oa, la);
    run_attention(q, n_q, 100, kb, vb, r_b, sb, 1, H, Hk, d, ob, lb);
    double *merged = malloc(sizeof(double) * n_q * H * d);
    for (int i = 0; i < n_q; i++)
        for (int h = 0; h < H; h++) {
            double L = log(exp((double)la[i * H + h]) + exp((double)lb[i * H + h]));
            cr_assert(fabs(L - lse[i * H + h]) < 1e-5 * (1 + fabs(L)));
            for (int c = 0; c < d; c++) {
                int idx = (i * H + h) * d + c;
                merged[idx] = exp(la[i * H + h] - L) * oa[idx] + exp(lb[i * H + h] - L) * ob[idx];
            }
        }
    double e = t_rel_err(o, merged, n_q * H * d);
    cr_assert_lt(e, 2e-6, "merged halves differ from whole: %g", e);
    free(q); free(k); free(v); free(o); free(lse); free(oa); free(la); free(ob); free(lb); free(merged);
}

/* The compacted KV cache: bf16 K/V read in place (CPU: widened exactly; GPU: the tensor-core
 * kernel without conversion, or the fp32 kernel), alone and beside fp32 segments (decode reads
 * the bf16 cache of the prompt and the fp32 rows of new tokens). */
Test(attention, bf16_kv_segments)
{
    struct seg_spec one[] = {{200, 0, 1, 0}};
    g_bf16_mask = 1;
    check_case(64, 136, one, 1, 4, 2, 64, 811);
    struct seg_spec mixed[] = {{96, 0, 0, 40}, {70, 0, 1, 0}, {33, 70, 1, 0}};
    g_bf16_mask = 5; /* segments 0 and 2 bf16, segment 1 fp32 */
    check_case(40, 70, mixed, 3, 8, 2, 32, 812);
    check_case(1, 102, mixed, 3, 8, 2, 32, 813); /* one decode row */
    g_bf16_mask = 0;
}

Test(attention, rejects_bad_shapes)
{
    float q[4 * 8], o[4 * 8], l[4 * 2], k[4 * 8], v[4 * 8];
    apb_handle hq = apb_tile_from(q, 4, 8, 4), ho = apb_tile_from(o, 4, 8, 4),
               hl = apb_tile_from(l, 4, 2, 4), hk = apb_tile_from(k, 4, 8, 4),
               hv = apb_tile_from(v, 4, 8, 4);
    apb_attn_seg s = {hk, hv, 5, 0, 1, 0, 0}; /* len > rows */
    cr_assert_neq(apb_insert_attention(hq, 0, &s, 1, 2, 2, 4, ho, hl, (apb_task_tag){0, 0, 0}), 0);
    s.len = 3;
    s.row0 = 2; /* row0 + len > rows */
    cr_assert_neq(apb_insert_attention(hq, 0, &s, 1, 2, 2, 4, ho, hl, (apb_task_tag){0, 0, 0}), 0,
                  "row0 + len beyond the tile accepted");
    s.row0 = -1;
    cr_assert_neq(apb_insert_attention(hq, 0, &s, 1, 2, 2, 4, ho, hl, (apb_task_tag){0, 0, 0}), 0,
                  "negative row0 accepted");
    s.row0 = 0;
    s.len = 4;
    cr_assert_neq(apb_insert_attention(hq, 0, &s, 1, 2, 3, 4, ho, hl, (apb_task_tag){0, 0, 0}), 0,
                  "H %% Hk != 0 accepted");
    apb_handle_free_now(hq); apb_handle_free_now(ho); apb_handle_free_now(hl);
    apb_handle_free_now(hk); apb_handle_free_now(hv);
}
