/* SPDX-License-Identifier: MIT */
/**
 * @brief CUDA codelets against the CPU codelets: each op runs once pinned to a CPU worker and once
 * pinned to a CUDA worker (apb_runtime_place_hosts + tag.host 0) on the same random inputs, with
 * outputs poisoned (NaN) before the task; results are compared by normalized error (fp32 ~1e-5,
 * bf16 ~2e-2), selections (gathered rows) and sampled tokens exactly. Two suites: FP32 and BF16
 * runtime precision (the GPU attention uses tensor cores in BF16). Without a CUDA worker every
 * test skips.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tests/test_util.h"

static void up_fp32(void)
{
    apb_runtime_opts o = {.sched = NULL, .ncpus = -1, .ncuda = -1, .precision = APB_PREC_FP32};
    apb_err err = {0};
    if (apb_runtime_init(&o, &err))
        abort();
}
static void up_bf16(void)
{
    apb_runtime_opts o = {.sched = NULL, .ncpus = -1, .ncuda = -1, .precision = APB_PREC_BF16};
    apb_err err = {0};
    if (apb_runtime_init(&o, &err))
        abort();
}
TestSuite(cuda_fp32, .init = up_fp32, .fini = apb_runtime_shutdown);
TestSuite(cuda_bf16, .init = up_bf16, .fini = apb_runtime_shutdown);

static int w_cpu, w_gpu;
/* (the id lists must hold every worker: StarPU returns -ERANGE when they do not fit) */
static int ids_cpu[STARPU_NMAXWORKERS], ids_gpu[STARPU_NMAXWORKERS];
#define NEED_CUDA()                                                                                \
    do {                                                                                           \
        if (apb_runtime_cuda_workers(ids_gpu, STARPU_NMAXWORKERS) < 1 ||                           \
            apb_runtime_cpu_workers(ids_cpu, STARPU_NMAXWORKERS) < 1)                              \
            cr_skip_test("no CUDA worker");                                                        \
        w_gpu = ids_gpu[0];                                                                        \
        w_cpu = ids_cpu[0];                                                                        \
    } while (0)

static const apb_task_tag TAG = {-1, 0, 0};

/* One buffer of a case: host data (inputs; outputs pre-poisoned), shape, element size. */
typedef struct { void *data; int rows, cols, elem; } tbuf;
typedef int (*tins)(apb_handle *h, const void *ctx);
enum { MAXB = 24 };

/* Registers copies of the buffers, pins host 0 to `worker`, inserts, waits, unregisters (results
 * written back into the copies, returned in res). */
static void run_on(int worker, const tbuf *b, int nb, tins ins, const void *ctx, void **res)
{
    apb_handle h[MAXB];
    for (int i = 0; i < nb; i++) {
        size_t sz = (size_t)b[i].rows * b[i].cols * b[i].elem;
        res[i] = malloc(sz);
        memcpy(res[i], b[i].data, sz);
        h[i] = apb_tile_from(res[i], b[i].rows, b[i].cols, (size_t)b[i].elem);
    }
    apb_runtime_place_hosts(&worker, 1);
    cr_assert_eq(ins(h, ctx), 0, "insert failed");
    apb_err err = {0};
    int rc = apb_runtime_wait_all(&err);
    cr_assert_eq(rc, 0, "task error: %s", err.msg);
    for (int i = 0; i < nb; i++)
        apb_handle_free_now(h[i]);
    apb_runtime_place_hosts(NULL, 0);
}

/* Normalized error of g against c; infinities must match exactly; NaN anywhere fails. */
static double cmp_f(const float *g, const float *c, size_t n)
{
    double *ref = malloc(sizeof(double) * (n ? n : 1));
    float *gg = t_alloc(n);
    for (size_t i = 0; i < n; i++) {
        if (isnan(c[i]) || isnan(g[i])) {
            free(ref);
            free(gg);
            return INFINITY;
        }
        if (isinf(c[i]) || isinf(g[i])) {
            cr_assert(g[i] == c[i], "element %zu: gpu %g, cpu %g", i, g[i], c[i]);
            ref[i] = 0;
            gg[i] = 0;
            continue;
        }
        ref[i] = c[i];
        gg[i] = g[i];
    }
    double e = t_rel_err(gg, ref, n);
    free(ref);
    free(gg);
    return e;
}

/* Runs the case on both workers and checks the buffers in outs[] (tolerance tol; < 0: bitwise). */
static void both(tbuf *b, int nb, tins ins, const void *ctx, const int *outs, int nouts, double tol)
{
    void *rc[MAXB], *rg[MAXB];
    run_on(w_cpu, b, nb, ins, ctx, rc);
    run_on(w_gpu, b, nb, ins, ctx, rg);
    for (int k = 0; k < nouts; k++) {
        int i = outs[k];
        size_t n = (size_t)b[i].rows * b[i].cols;
        if (tol < 0)
            cr_assert(memcmp(rc[i], rg[i], n * b[i].elem) == 0, "buffer %d differs", i);
        else if (b[i].elem == 2) { /* bf16 output: compared widened (exact) */
            float *g = t_alloc(n), *c = t_alloc(n);
            for (size_t j = 0; j < n; j++) {
                uint32_t ug = (uint32_t)((uint16_t *)rg[i])[j] << 16, uc = (uint32_t)((uint16_t *)rc[i])[j] << 16;
                memcpy(&g[j], &ug, 4);
                memcpy(&c[j], &uc, 4);
            }
            double e = cmp_f(g, c, n);
            free(g);
            free(c);
            cr_assert_lt(e, tol, "buffer %d (bf16): normalized error %g (tol %g)", i, e, tol);
        } else {
            double e = cmp_f(rg[i], rc[i], n);
            cr_assert_lt(e, tol, "buffer %d: normalized error %g (tol %g)", i, e, tol);
        }
    }
    for (int i = 0; i < nb; i++) {
        free(rc[i]);
        free(rg[i]);
    }
}

static tbuf rnd(int rows, int cols, float scale, uint64_t seed)
{
    float *p = t_alloc((size_t)rows * cols);
    t_fill(p, (size_t)rows * cols, scale, seed);
    return (tbuf){p, rows, cols, 4};
}
static tbuf nanbuf(int rows, int cols) { return (tbuf){t_poisoned((size_t)rows * cols), rows, cols, 4}; }
static tbuf nanbuf16(int rows, int cols) /* a poisoned bf16 output (quiet NaN) */
{
    uint16_t *p = malloc(2 * (size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        p[i] = 0x7fc0;
    return (tbuf){p, rows, cols, 2};
}
static tbuf bf16_of(tbuf f) /* bf16 copy (round to nearest even) of an fp32 buffer */
{
    size_t n = (size_t)f.rows * f.cols;
    uint16_t *p = malloc(2 * n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, (float *)f.data + i, 4);
        p[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
    free(f.data);
    return (tbuf){p, f.rows, f.cols, 2};
}
static void free_bufs(tbuf *b, int nb)
{
    for (int i = 0; i < nb; i++)
        free(b[i].data);
}

/* ------------------------------------------------------------------ dense ops */
static int ins_rmsnorm(apb_handle *h, const void *c) { (void)c; return apb_insert_rmsnorm(h[0], h[1], h[2], 1e-5f, TAG); }
Test(cuda_fp32, rmsnorm)
{
    NEED_CUDA();
    tbuf b[3] = {rnd(37, 576, 2, 1), rnd(1, 576, 1, 2), nanbuf(37, 576)};
    both(b, 3, ins_rmsnorm, NULL, (int[]){2}, 1, 1e-5);
    free(b[2].data);
    b[2] = nanbuf16(37, 576); /* a bf16 output (the prefill's xn tiles under bf16): both round */
    both(b, 3, ins_rmsnorm, NULL, (int[]){2}, 1, 4e-3);
    b[0].rows = 3; /* few rows: the wide-block launch */
    b[2].rows = 3;
    both(b, 3, ins_rmsnorm, NULL, (int[]){2}, 1, 4e-3);
    free_bufs(b, 3);
}

/* the register-row kernel at the widths it is instantiated for (Llama-3.1-8B's 4096, 8192 at its
 * limit, a width that leaves threads without a column) and the element-wise one where a row is
 * not a multiple of four */
Test(cuda_fp32, rmsnorm_widths)
{
    NEED_CUDA();
    const int widths[] = {4096, 8192, 1000, 30};
    for (int k = 0; k < 4; k++)
        for (int bf16 = 0; bf16 < 2; bf16++)
            for (int rows = 3; rows <= 67; rows += 64) { /* wide block (decode), then 256 threads */
                int c = widths[k];
                tbuf b[3] = {rnd(rows, c, 3, 10 + k), rnd(1, c, 1, 20 + k), bf16 ? nanbuf16(rows, c) : nanbuf(rows, c)};
                both(b, 3, ins_rmsnorm, NULL, (int[]){2}, 1, bf16 ? 4e-3 : 1e-5);
                free_bufs(b, 3);
            }
}

static int ins_embed(apb_handle *h, const void *c) { (void)c; return apb_insert_embed(h[0], h[1], h[2], TAG); }
static void check_embed(int bf16)
{
    int vocab = 1000, dim = 96, n = 23;
    int32_t *ids = malloc(4 * n);
    for (int i = 0; i < n; i++)
        ids[i] = (i * 397) % vocab;
    tbuf e = rnd(vocab, dim, 1, 3);
    tbuf b[3] = {{ids, n, 1, 4}, bf16 ? bf16_of(e) : e, nanbuf(n, dim)};
    both(b, 3, ins_embed, NULL, (int[]){2}, 1, 1e-7);
    free_bufs(b, 3);
}
Test(cuda_fp32, embed) { NEED_CUDA(); check_embed(0); }
Test(cuda_bf16, embed) { NEED_CUDA(); check_embed(1); }

struct lin_ctx { int bias, acc; };
static int ins_linear(apb_handle *h, const void *c)
{
    const struct lin_ctx *l = c;
    return apb_insert_linear(h[0], h[1], l->bias ? h[2] : NULL, h[3], l->acc, TAG);
}
static void check_linear_rows(int bf16, int bias, int acc, int rows)
{
    int n_in = 256, n_out = 192;
    tbuf w = rnd(n_out, n_in, 0.2f, 5);
    tbuf b[4] = {rnd(rows, n_in, 1, 4), bf16 ? bf16_of(w) : w, rnd(1, n_out, 1, 6),
                 acc ? rnd(rows, n_out, 1, 7) : nanbuf(rows, n_out)};
    struct lin_ctx c = {bias, acc};
    both(b, 4, ins_linear, &c, (int[]){3}, 1, bf16 ? 2e-2 : 1e-5);
    free_bufs(b, 4);
}
/* 45 rows: cuBLAS; 1 and 7 rows with bf16 weights: the few-row kernel (gemv.cu) */
static void check_linear(int bf16, int bias, int acc)
{
    check_linear_rows(bf16, bias, acc, 45);
    check_linear_rows(bf16, bias, acc, 1);
    check_linear_rows(bf16, bias, acc, 7);
}
Test(cuda_fp32, linear) { NEED_CUDA(); check_linear(0, 0, 0); check_linear(0, 1, 1); }
Test(cuda_bf16, linear) { NEED_CUDA(); check_linear(1, 0, 0); check_linear(1, 1, 1); }
/* a bf16 input (the o-proj of a bf16 o tile): cuBLAS (45 rows) and the few-row kernel */
Test(cuda_bf16, linear_bf16_input)
{
    NEED_CUDA();
    const int rows_of[] = {45, 1, 7};
    for (int r = 0; r < 3; r++) {
        int rows = rows_of[r], n_in = 256, n_out = 192;
        tbuf b[4] = {bf16_of(rnd(rows, n_in, 1, 8)), bf16_of(rnd(n_out, n_in, 0.2f, 9)), rnd(1, n_out, 1, 6),
                     rnd(rows, n_out, 1, 10)};
        struct lin_ctx c = {0, 1};
        both(b, 4, ins_linear, &c, (int[]){3}, 1, 2e-2);
        free_bufs(b, 4);
    }
}

static int ins_qkv(apb_handle *h, const void *c)
{
    (void)c;
    return apb_insert_qkv(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], TAG);
}
static void check_qkv_rows(int bf16, int rows)
{
    int dim = 128, qd = 128, kd = 64;
    tbuf wq = rnd(qd, dim, 0.2f, 11), wk = rnd(kd, dim, 0.2f, 12), wv = rnd(kd, dim, 0.2f, 13);
    tbuf b[10] = {rnd(rows, dim, 1, 10), bf16 ? bf16_of(wq) : wq, bf16 ? bf16_of(wk) : wk,
                  bf16 ? bf16_of(wv) : wv, rnd(1, qd, 1, 14), rnd(1, kd, 1, 15), rnd(1, kd, 1, 16),
                  nanbuf(rows, qd), nanbuf(rows, kd), nanbuf(rows, kd)};
    both(b, 10, ins_qkv, NULL, (int[]){7, 8, 9}, 3, bf16 ? 2e-2 : 1e-5);
    free_bufs(b, 10);
}
static void check_qkv(int bf16) { check_qkv_rows(bf16, 33); check_qkv_rows(bf16, 1); check_qkv_rows(bf16, 3); }
/* a bf16 xn tile (the prefill's under bf16): read as is by cuBLAS and the few-row kernel */
Test(cuda_bf16, qkv_bf16_input)
{
    NEED_CUDA();
    for (int rows = 1; rows <= 33; rows += 32) {
        int dim = 128, qd = 128, kd = 64;
        tbuf b[10] = {bf16_of(rnd(rows, dim, 1, 17)), bf16_of(rnd(qd, dim, 0.2f, 11)), bf16_of(rnd(kd, dim, 0.2f, 12)),
                      bf16_of(rnd(kd, dim, 0.2f, 13)), rnd(1, qd, 1, 14), rnd(1, kd, 1, 15), rnd(1, kd, 1, 16),
                      nanbuf(rows, qd), nanbuf(rows, kd), nanbuf(rows, kd)};
        both(b, 10, ins_qkv, NULL, (int[]){7, 8, 9}, 3, 2e-2);
        free_bufs(b, 10);
    }
}
Test(cuda_fp32, qkv) { NEED_CUDA(); check_qkv(0); }
Test(cuda_bf16, qkv) { NEED_CUDA(); check_qkv(1); }

static int ins_mlp(apb_handle *h, const void *c) { (void)c; return apb_insert_mlp(h[0], h[1], h[2], h[3], h[4], TAG); }
static void check_mlp_rows(int bf16, int rows)
{
    int dim = 128, hid = 320;
    tbuf g = rnd(hid, dim, 0.2f, 21), u = rnd(hid, dim, 0.2f, 22), d = rnd(dim, hid, 0.2f, 23);
    tbuf b[5] = {rnd(rows, dim, 1, 20), bf16 ? bf16_of(g) : g, bf16 ? bf16_of(u) : u,
                 bf16 ? bf16_of(d) : d, rnd(rows, dim, 1, 24)};
    both(b, 5, ins_mlp, NULL, (int[]){4}, 1, bf16 ? 2e-2 : 1e-5);
    free_bufs(b, 5);
}
static void check_mlp(int bf16) { check_mlp_rows(bf16, 29); check_mlp_rows(bf16, 1); check_mlp_rows(bf16, 8); }
/* a bf16 xn tile: the GEMMs (29 rows) and the fused few-row gate/up kernel (8 rows) read it as is */
Test(cuda_bf16, mlp_bf16_input)
{
    NEED_CUDA();
    for (int rows = 8; rows <= 29; rows += 21) {
        int dim = 128, hid = 320;
        tbuf b[5] = {bf16_of(rnd(rows, dim, 1, 25)), bf16_of(rnd(hid, dim, 0.2f, 21)), bf16_of(rnd(hid, dim, 0.2f, 22)),
                     bf16_of(rnd(dim, hid, 0.2f, 23)), rnd(rows, dim, 1, 24)};
        both(b, 5, ins_mlp, NULL, (int[]){4}, 1, 2e-2);
        free_bufs(b, 5);
    }
}
Test(cuda_fp32, mlp) { NEED_CUDA(); check_mlp(0); }
Test(cuda_bf16, mlp) { NEED_CUDA(); check_mlp(1); }

static int ins_logits(apb_handle *h, const void *c) { (void)c; return apb_insert_logits(h[0], 3, 5, h[1], h[2], h[3], 1e-5f, TAG); }
static void check_logits(int bf16)
{
    int rows = 12, dim = 128, vocab = 999;
    tbuf lm = rnd(vocab, dim, 0.3f, 32);
    tbuf b[4] = {rnd(rows, dim, 1, 30), rnd(1, dim, 1, 31), bf16 ? bf16_of(lm) : lm, nanbuf(5, vocab)};
    both(b, 4, ins_logits, NULL, (int[]){3}, 1, bf16 ? 2e-2 : 1e-5);
    free_bufs(b, 4);
}
Test(cuda_fp32, logits) { NEED_CUDA(); check_logits(0); }
Test(cuda_bf16, logits) { NEED_CUDA(); check_logits(1); }

/* ------------------------------------------------------------------ attention */
struct attn_ctx { int H, Hk, d, q_coord0, ns; struct { int len, coord0, causal, min_q; } s[4]; };
static int g_row0[4]; /* segment s is rows [g_row0[s], + len) of its K/V buffers */
static int g_o16;     /* attn_case / attn_tiles_case: bf16 o tiles (the prefill's under bf16) */
static int ins_attn(apb_handle *h, const void *c)
{
    const struct attn_ctx *a = c;
    apb_attn_seg segs[4];
    for (int s = 0; s < a->ns; s++)
        segs[s] = (apb_attn_seg){h[1 + 2 * s], h[2 + 2 * s], a->s[s].len, a->s[s].coord0,
                                 a->s[s].causal, a->s[s].min_q, g_row0[s]};
    return apb_insert_attention(h[0], a->q_coord0, segs, a->ns, a->H, a->Hk, a->d,
                                h[1 + 2 * a->ns], h[2 + 2 * a->ns], TAG);
}
static void check_attention(int d, double tol, int bf16kv)
{
    /* APB-like: q rows at coordinates 300.., an anchor segment (causal from 0), a passing segment
     * (non-causal, only rows with coordinate >= 340 see it), the local block (causal) */
    int H = 4, Hk = 2, nq = 150, kd = Hk * d;
    struct attn_ctx a = {H, Hk, d, 300, 3, {{64, 0, 1, 0}, {90, 64, 0, 340}, {nq, 300, 1, 0}}};
    tbuf b[9];
    b[0] = rnd(nq, H * d, 1, 40);
    for (int s = 0; s < 3; s++) {
        b[1 + 2 * s] = rnd(a.s[s].len + 3, kd, 1, 41 + s);
        b[2 + 2 * s] = rnd(a.s[s].len + 3, kd, 1, 51 + s);
        if (bf16kv && s < 2) { /* the compacted cache (bf16, read in place) beside fp32 rows */
            b[1 + 2 * s] = bf16_of(b[1 + 2 * s]);
            b[2 + 2 * s] = bf16_of(b[2 + 2 * s]);
        }
    }
    b[7] = nanbuf(nq, H * d);
    b[8] = nanbuf(nq, H);
    both(b, 9, ins_attn, &a, (int[]){7, 8}, 2, tol);
    /* one segment, non-causal, rows below min_q see nothing (o = 0, lse = -inf) */
    struct attn_ctx a2 = {H, Hk, d, 0, 1, {{100, 0, 0, 20}}};
    tbuf c[5] = {rnd(64, H * d, 1, 60), rnd(100, kd, 1, 61), rnd(100, kd, 1, 62), nanbuf(64, H * d),
                 nanbuf(64, H)};
    both(c, 5, ins_attn, &a2, (int[]){3, 4}, 2, tol);
    /* long enough for several 128-row query tiles and 128-key blocks per segment (the kernels'
     * pipelines, partial tiles, the causal diagonal inside a block, the passing segment's
     * min_q boundary inside a query tile) */
    struct attn_ctx a3 = {H, Hk, d, 1000, 3, {{300, 0, 1, 0}, {413, 300, 0, 1130}, {700, 1000, 1, 0}}};
    tbuf e[9];
    e[0] = rnd(700, H * d, 1, 70);
    for (int s = 0; s < 3; s++) {
        e[1 + 2 * s] = rnd(a3.s[s].len + 5, kd, 1, 71 + s);
        e[2 + 2 * s] = rnd(a3.s[s].len + 5, kd, 1, 81 + s);
        if (bf16kv && s < 2) {
            e[1 + 2 * s] = bf16_of(e[1 + 2 * s]);
            e[2 + 2 * s] = bf16_of(e[2 + 2 * s]);
        }
    }
    e[7] = nanbuf(700, H * d);
    e[8] = nanbuf(700, H);
    both(e, 9, ins_attn, &a3, (int[]){7, 8}, 2, tol);
    free_bufs(b, 9);
    free_bufs(c, 5);
    free_bufs(e, 9);
}
Test(cuda_fp32, attention_d64) { NEED_CUDA(); check_attention(64, 1e-5, 0); }
Test(cuda_fp32, attention_d128) { NEED_CUDA(); check_attention(128, 1e-5, 0); }
Test(cuda_bf16, attention_tc_d64) { NEED_CUDA(); check_attention(64, 2e-2, 0); }
Test(cuda_bf16, attention_tc_d128) { NEED_CUDA(); check_attention(128, 2e-2, 0); }
Test(cuda_fp32, attention_bf16_kv_d128) { NEED_CUDA(); check_attention(128, 1e-5, 1); }
Test(cuda_bf16, attention_tc_bf16_kv_d64) { NEED_CUDA(); check_attention(64, 2e-2, 1); }
Test(cuda_bf16, attention_tc_bf16_kv_d128) { NEED_CUDA(); check_attention(128, 2e-2, 1); }

/* One case: nq query rows at q_coord0, segments of ctx (K/V rows row0 + len + 3, the row0 rows
 * before the segment NaN; the first nbf16 segments stored bf16), outputs poisoned, GPU against
 * CPU. */
static void attn_case(const struct attn_ctx *a, int nq, int nbf16, double tol, uint64_t seed)
{
    const int kd = a->Hk * a->d;
    tbuf b[11];
    b[0] = rnd(nq, a->H * a->d, 1, seed);
    for (int s = 0; s < a->ns; s++) {
        b[1 + 2 * s] = rnd(g_row0[s] + a->s[s].len + 3, kd, 1, seed + 1 + s);
        b[2 + 2 * s] = rnd(g_row0[s] + a->s[s].len + 3, kd, 1, seed + 11 + s);
        for (size_t i = 0; i < (size_t)g_row0[s] * kd; i++)
            ((float *)b[1 + 2 * s].data)[i] = ((float *)b[2 + 2 * s].data)[i] = NAN;
        if (s < nbf16) {
            b[1 + 2 * s] = bf16_of(b[1 + 2 * s]);
            b[2 + 2 * s] = bf16_of(b[2 + 2 * s]);
        }
    }
    int no = 1 + 2 * a->ns;
    b[no] = g_o16 ? nanbuf16(nq, a->H * a->d) : nanbuf(nq, a->H * a->d);
    b[no + 1] = nanbuf(nq, a->H);
    both(b, no + 2, ins_attn, a, (int[]){no, no + 1}, 2, tol);
    free_bufs(b, no + 2);
}

/* Segment patterns the cuDNN path maps onto one banded call plus passing calls (BF16 suite), or
 * refuses (then the own kernels run): a causal run shorter than the query tile (top-left band,
 * right bound != S_kv - S_q), a causal run of two segments starting before the first row, two
 * passing groups with different min_q, a causal segment no row reaches from the first row. */
static void check_attention_patterns(int d, double tol, int bf16kv)
{
    int H = 8, Hk = 2, nq = 300;
    struct attn_ctx p1 = {H, Hk, d, 500, 2, {{200, 0, 1, 0}, {250, 500, 1, 0}}};
    attn_case(&p1, nq, bf16kv, tol, 100);
    struct attn_ctx p2 = {H, Hk, d, 500, 3, {{64, 0, 0, 0}, {170, 450, 1, 0}, {230, 620, 1, 0}}};
    attn_case(&p2, nq, bf16kv ? 2 : 0, tol, 200);
    struct attn_ctx p3 = {H, Hk, d, 500, 4, {{128, 0, 1, 0}, {90, 128, 0, 560}, {77, 218, 0, 700}, {nq, 500, 1, 0}}};
    attn_case(&p3, nq, bf16kv ? 3 : 0, tol, 300);
    struct attn_ctx p4 = {H, Hk, d, 500, 2, {{100, 0, 0, 0}, {200, 600, 1, 0}}};
    attn_case(&p4, nq, bf16kv, tol, 400);
}
Test(cuda_bf16, attention_patterns_d128) { NEED_CUDA(); check_attention_patterns(128, 2e-2, 0); }
Test(cuda_bf16, attention_patterns_bf16_kv_d128) { NEED_CUDA(); check_attention_patterns(128, 2e-2, 1); }
Test(cuda_bf16, attention_patterns_d64) { NEED_CUDA(); check_attention_patterns(64, 2e-2, 0); }
Test(cuda_fp32, attention_patterns_d128) { NEED_CUDA(); check_attention_patterns(128, 1e-5, 0); }

/* Few query rows (decode steps, the question pass, per-host partials): the split-KV kernel, for
 * 1..32 rows and GQA groups 1, 4, every segment kind, fp32 and bf16 K/V (bf16: the coalesced Q K^T
 * for up to 4 rows a CTA, d 64 and 128), keys split over many
 * CTAs (several thousand keys). fp32 arithmetic: the fp32 tolerance in both suites. */
static void check_attention_few(int d, int bf16kv)
{
    const int rows[] = {1, 2, 5, 16};
    for (int g = 0; g < 2; g++) {
        int H = g ? 8 : 2, Hk = 2;
        for (unsigned r = 0; r < sizeof rows / sizeof *rows; r++) {
            int nq = rows[r];
            if (nq * (H / Hk) > 64)
                continue;
            /* question / decode row at 5000..: anchor-like prefix, passing block that the first
             * rows skip, a long causal cache, and the rows' own keys */
            struct attn_ctx a = {H, Hk, d, 5000, 4, {{700, 0, 1, 0}, {1500, 700, 0, 5000 + nq / 2},
                                                    {2800, 2200, 1, 0}, {nq, 5000, 1, 0}}};
            attn_case(&a, nq, bf16kv ? 3 : 0, 1e-5, 500 + 10 * r + g);
            /* a non-last host's partial: non-causal over its whole cache */
            struct attn_ctx b = {H, Hk, d, 9000, 1, {{3000, 100, 0, 0}}};
            attn_case(&b, nq, bf16kv, 1e-5, 600 + 10 * r + g);
            /* rows that see nothing (min_q beyond every row): o = 0, lse = -inf */
            struct attn_ctx c = {H, Hk, d, 0, 1, {{100, 0, 0, 50}}};
            attn_case(&c, nq, 0, 1e-5, 700 + 10 * r + g);
        }
    }
}
Test(cuda_fp32, attention_few_rows_d128) { NEED_CUDA(); check_attention_few(128, 0); }

/* Several query tiles in one task (apb_insert_attention_tiles; full's one attention task a layer on
 * one GPU): the prompt as one causal segment, bf16 with the row stride of the cache (cuDNN reads
 * it in place) or fp32, at a row offset; the APB pattern (packed parts, a passing call whose first
 * row is inside the second tile). Tiles of 130, 128 and the rest. */
struct attn_tiles_ctx { struct attn_ctx a; int nt, rows[3]; };
static int ins_attn_tiles(apb_handle *h, const void *c)
{
    const struct attn_tiles_ctx *t = c;
    const struct attn_ctx *a = &t->a;
    apb_attn_seg segs[4];
    for (int s = 0; s < a->ns; s++)
        segs[s] = (apb_attn_seg){h[t->nt + 2 * s], h[t->nt + 2 * s + 1], a->s[s].len, a->s[s].coord0,
                                 a->s[s].causal, a->s[s].min_q, g_row0[s]};
    const int no = t->nt + 2 * a->ns;
    return apb_insert_attention_tiles(h, t->nt, a->q_coord0, segs, a->ns, a->H, a->Hk, a->d, h + no, h + no + t->nt,
                                      TAG);
}
static void attn_tiles_case(const struct attn_tiles_ctx *t, int nbf16, double tol, uint64_t seed)
{
    const struct attn_ctx *a = &t->a;
    const int kd = a->Hk * a->d, nt = t->nt;
    tbuf b[MAXB];
    for (int i = 0; i < nt; i++)
        b[i] = rnd(t->rows[i], a->H * a->d, 1, seed + 50 + i);
    for (int s = 0; s < a->ns; s++) {
        b[nt + 2 * s] = rnd(g_row0[s] + a->s[s].len + 3, kd, 1, seed + 1 + s);
        b[nt + 2 * s + 1] = rnd(g_row0[s] + a->s[s].len + 3, kd, 1, seed + 11 + s);
        for (size_t i = 0; i < (size_t)g_row0[s] * kd; i++)
            ((float *)b[nt + 2 * s].data)[i] = ((float *)b[nt + 2 * s + 1].data)[i] = NAN;
        if (s < nbf16) {
            b[nt + 2 * s] = bf16_of(b[nt + 2 * s]);
            b[nt + 2 * s + 1] = bf16_of(b[nt + 2 * s + 1]);
        }
    }
    const int no = nt + 2 * a->ns;
    int outs[6] = {0};
    for (int i = 0; i < nt; i++) {
        b[no + i] = g_o16 ? nanbuf16(t->rows[i], a->H * a->d) : nanbuf(t->rows[i], a->H * a->d);
        b[no + nt + i] = nanbuf(t->rows[i], a->H);
        outs[i] = no + i;
        outs[nt + i] = no + nt + i;
    }
    both(b, no + 2 * nt, ins_attn_tiles, t, outs, 2 * nt, tol);
    free_bufs(b, no + 2 * nt);
}
static void check_attention_tiles(int d, double tol)
{
    struct attn_tiles_ctx c = {{8, 2, d, 0, 1, {{300, 0, 1, 0}}}, 3, {130, 128, 42}};
    attn_tiles_case(&c, 1, tol, 1100);
    attn_tiles_case(&c, 0, tol, 1200);
    memcpy(g_row0, (int[4]){256, 0, 0, 0}, sizeof g_row0);
    attn_tiles_case(&c, 1, tol, 1300);
    memset(g_row0, 0, sizeof g_row0);
    struct attn_tiles_ctx p = {{8, 2, d, 1000, 3, {{128, 0, 1, 0}, {256, 128, 0, 1150}, {300, 1000, 1, 0}}},
                               3, {130, 128, 42}};
    attn_tiles_case(&p, 2, tol, 1400);
}
Test(cuda_fp32, attention_query_tiles_d128) { NEED_CUDA(); check_attention_tiles(128, 1e-5); }
Test(cuda_bf16, attention_query_tiles_d128) { NEED_CUDA(); check_attention_tiles(128, 2e-2); }
Test(cuda_bf16, attention_query_tiles_d64) { NEED_CUDA(); check_attention_tiles(64, 2e-2); }

/* bf16 o tiles (the prefill's under bf16 precision): every path writes the rounded result. cuDNN
 * writes a whole causal tile in place (one segment; the first tile and a later one), its merge
 * kernel rounds the parts' sum (patterns, query tiles), and the own kernels (fp32 suite; cuDNN
 * refusals) write an fp32 copy that is rounded. Both sides round the same fp32 values, so the
 * tolerance is a bf16 ulp's worth on top of the suite's. */
static void check_attention_o16(int d, double tol)
{
    g_o16 = 1;
    struct attn_ctx first = {8, 2, d, 0, 1, {{300, 0, 1, 0}}};
    attn_case(&first, 300, 1, tol, 1500);
    struct attn_ctx later = {8, 2, d, 300, 1, {{600, 0, 1, 0}}};
    attn_case(&later, 300, 1, tol, 1600);
    attn_case(&later, 300, 0, tol, 1700);
    check_attention_patterns(d, tol, 1);
    check_attention_tiles(d, tol);
    g_o16 = 0;
}
Test(cuda_bf16, attention_bf16_out_d128) { NEED_CUDA(); check_attention_o16(128, 2e-2); }
Test(cuda_bf16, attention_bf16_out_d64) { NEED_CUDA(); check_attention_o16(64, 2e-2); }
Test(cuda_fp32, attention_bf16_out_d128) { NEED_CUDA(); check_attention_o16(128, 4e-3); }

/* Segments inside taller tiles (row0 > 0, NaN rows before them): the contiguous bf16 cache of a
 * finished layer, read by decode steps and the question pass (split-KV) and by prefill-sized row
 * counts (tensor-core / cuDNN paths in the BF16 suite). */
static void check_attention_row0(int d, double tol)
{
    const int nqs[] = {1, 4, 64, 200};
    for (unsigned i = 0; i < sizeof nqs / sizeof *nqs; i++) {
        const int nq = nqs[i];
        struct attn_ctx a = {8, 2, d, 5000, 3, {{1500, 0, 1, 0}, {2200, 1500, 1, 0}, {nq, 5000, 1, 0}}};
        memcpy(g_row0, (int[4]){0, 1500, 37, 0}, sizeof g_row0);
        attn_case(&a, nq, 2, tol, 900 + nq);
        struct attn_ctx b = {8, 2, d, 9000, 1, {{3000, 100, 0, 0}}};
        memcpy(g_row0, (int[4]){4096, 0, 0, 0}, sizeof g_row0);
        attn_case(&b, nq, 1, tol, 950 + nq);
    }
    memset(g_row0, 0, sizeof g_row0);
}
Test(cuda_fp32, attention_row_offset_d128) { NEED_CUDA(); check_attention_row0(128, 1e-5); }
Test(cuda_bf16, attention_row_offset_d128) { NEED_CUDA(); check_attention_row0(128, 2e-2); }
Test(cuda_bf16, attention_row_offset_d64) { NEED_CUDA(); check_attention_row0(64, 2e-2); }
Test(cuda_fp32, attention_few_rows_bf16_kv_d128) { NEED_CUDA(); check_attention_few(128, 1); }
Test(cuda_bf16, attention_few_rows_d64) { NEED_CUDA(); check_attention_few(64, 0); }
Test(cuda_bf16, attention_few_rows_bf16_kv_d128) { NEED_CUDA(); check_attention_few(128, 1); }
Test(cuda_bf16, attention_few_rows_bf16_kv_d64) { NEED_CUDA(); check_attention_few(64, 1); }

/* ------------------------------------------------------------------ APB ops */
struct rope_ctx { int pos0, d, has_k; };
static int ins_rope(apb_handle *h, const void *c)
{
    const struct rope_ctx *r = c;
    return apb_insert_rope(h[1], r->has_k ? h[2] : NULL, h[0], r->pos0, r->d, TAG);
}
Test(cuda_fp32, rope)
{
    NEED_CUDA();
    int d = 64, rows = 40;
    float *inv = t_alloc(d / 2);
    for (int i = 0; i < d / 2; i++)
        inv[i] = (float)pow(10000.0, -2.0 * i / d);
    tbuf b[3] = {{inv, 1, d / 2, 4}, rnd(rows, 9 * d, 1, 70), rnd(rows, 3 * d, 1, 71)};
    struct rope_ctx c = {123456, d, 1};
    both(b, 3, ins_rope, &c, (int[]){1, 2}, 2, 1e-6);
    c.has_k = 0;
    c.pos0 = 7;
    both(b, 3, ins_rope, &c, (int[]){1}, 1, 1e-6);
    free_bufs(b, 3);
}

/* mRoPE: per-row (t, h, w) ids, Qwen2.5-VL sections scaled to d = 64 (8, 12, 12) */
struct rope_m_ctx { int d, has_k, sec[3]; };
static int ins_rope_m(apb_handle *h, const void *c)
{
    const struct rope_m_ctx *r = c;
    return apb_insert_rope_m(h[2], r->has_k ? h[3] : NULL, h[0], h[1], r->sec, r->d, TAG);
}
Test(cuda_fp32, rope_mrope)
{
    NEED_CUDA();
    int d = 64, rows = 40;
    float *inv = t_alloc(d / 2);
    for (int i = 0; i < d / 2; i++)
        inv[i] = (float)pow(1000000.0, -2.0 * i / d);
    int32_t *pos = malloc(sizeof(int32_t) * 3 * rows);
    for (int i = 0; i < rows; i++) { /* a 2 x 4 x 5 grid after 100000 text tokens */
        pos[3 * i] = 100000 + 2 * (i / 20);
        pos[3 * i + 1] = 100000 + (i / 5) % 4;
        pos[3 * i + 2] = 100000 + i % 5;
    }
    tbuf b[4] = {{inv, 1, d / 2, 4}, {pos, rows, 3, 4}, rnd(rows, 9 * d, 1, 72), rnd(rows, 3 * d, 1, 73)};
    struct rope_m_ctx c = {d, 1, {8, 12, 12}};
    both(b, 4, ins_rope_m, &c, (int[]){2, 3}, 2, 1e-6);
    c.has_k = 0;
    both(b, 4, ins_rope_m, &c, (int[]){2}, 1, 1e-6);
    free_bufs(b, 4);
}

static int ins_kv(apb_handle *h, const void *c) { return apb_insert_kv_append(h[0], h[1], h[2], h[3], *(const int *)c, TAG); }
Test(cuda_fp32, kv_append)
{
    NEED_CUDA();
    tbuf b[4] = {rnd(5, 96, 1, 80), rnd(5, 96, 1, 81), rnd(40, 96, 1, 82), rnd(40, 96, 1, 83)};
    int row = 17;
    both(b, 4, ins_kv, &row, (int[]){2, 3}, 2, -1);
    free_bufs(b, 4);
}

/* kv_compact into a later slice of a taller bf16 cache (RW: the other rows kept): bitwise */
static int ins_kvc(apb_handle *h, const void *c) { return apb_insert_kv_compact_at(h[0], h[1], h[2], h[3], *(const int *)c, TAG); }
Test(cuda_fp32, kv_compact_slice)
{
    NEED_CUDA();
    tbuf b[4] = {rnd(37, 1024, 3, 84), rnd(37, 1024, 3, 85), bf16_of(rnd(100, 1024, 1, 86)),
                 bf16_of(rnd(100, 1024, 1, 87))};
    int row = 50;
    both(b, 4, ins_kvc, &row, (int[]){2, 3}, 2, -1);
    free_bufs(b, 4);
}

struct qm_ctx { int row0[2], n[2], nt, Hk, d; };
static int ins_qmean(apb_handle *h, const void *c)
{
    const struct qm_ctx *q = c;
    return apb_insert_qmean_tiles(h, q->row0, q->n, q->nt, q->Hk, q->d, h[q->nt], TAG);
}
Test(cuda_fp32, qmean)
{
    NEED_CUDA();
    struct qm_ctx c = {{3, 0}, {10, 7}, 2, 2, 64};
    tbuf b[3] = {rnd(20, 8 * 64, 1, 90), rnd(9, 8 * 64, 1, 91), nanbuf(1, 2 * 64)};
    both(b, 3, ins_qmean, &c, (int[]){2}, 1, -1);
    c.nt = 1;
    tbuf b1[2] = {b[0], b[2]};
    both(b1, 2, ins_qmean, &c, (int[]){1}, 1, -1);
    free_bufs(b, 3);
}

/* select: buffers [qbar or scores.., K.., V.., ck, cv] */
struct sel_ctx { int nt, excl, K, d, scored; };
static int ins_select(apb_handle *h, const void *c)
{
    const struct sel_ctx *s = c;
    if (s->scored)
        return apb_insert_select_scored(h, h + s->nt, h + 2 * s->nt, s->nt, s->excl, s->K, s->d,
                                        h[3 * s->nt], h[3 * s->nt + 1], TAG);
    return apb_insert_select(h[0], h + 1, h + 1 + s->nt, s->nt, s->excl, s->K, s->d, h[1 + 2 * s->nt],
                             h[2 + 2 * s->nt], TAG);
}
static void check_select(int scored, int ties, int K)
{
    int Hk = 2, d = 64, kd = Hk * d, rows[3] = {1500, 37, 2600}, nt = 3, nb = 0;
    tbuf b[MAXB];
    if (scored)
        for (int t = 0; t < nt; t++) {
            b[nb] = rnd(rows[t], Hk, 1, 100 + t);
            if (ties) /* few distinct values: heavy ties, index order decides */
                for (int i = 0; i < rows[t] * Hk; i++)
                    ((float *)b[nb].data)[i] = roundf(((float *)b[nb].data)[i] * 3) * 0.25f;
            nb++;
        }
    else
        b[nb++] = rnd(1, kd, 1, 110);
    for (int t = 0; t < nt; t++)
        b[nb++] = rnd(rows[t], kd, 1, 120 + t);
    for (int t = 0; t < nt; t++)
        b[nb++] = rnd(rows[t], kd, 1, 130 + t);
    b[nb++] = nanbuf(K, kd);
    b[nb++] = nanbuf(K, kd);
    struct sel_ctx c = {nt, 16, K, d, scored};
    both(b, nb, ins_select, &c, (int[]){nb - 2, nb - 1}, 2, -1);
    free_bufs(b, nb);
}
Test(cuda_fp32, select_qbar) { NEED_CUDA(); check_select(0, 0, 700); check_select(0, 0, 4137 - 16); }
Test(cuda_fp32, select_scored) { NEED_CUDA(); check_select(1, 0, 333); }
Test(cuda_fp32, select_scored_ties) { NEED_CUDA(); check_select(1, 1, 1000); check_select(1, 1, 1); }

static int ins_lse(apb_handle *h, const void *c)
{
    int n = *(const int *)c;
    return apb_insert_lse_merge(h, h + n, n, 32, h[2 * n], h[2 * n + 1], TAG);
}
Test(cuda_fp32, lse_merge)
{
    NEED_CUDA();
    int n = 3, rows = 6, H = 4, d = 32;
    tbuf b[8];
    for (int i = 0; i < n; i++) {
        b[i] = rnd(rows, H * d, 1, 140 + i);
        b[n + i] = rnd(rows, H, 5, 150 + i);
    }
    float *l0 = b[n].data, *l1 = b[n + 1].data, *l2 = b[n + 2].data;
    l0[0] = -INFINITY; /* row 0 head 0: one partial saw nothing */
    for (int i = 0; i < n; i++)
        ((float *)b[n + i].data)[1 * H + 2] = -INFINITY; /* row 1 head 2: none did */
    l1[2 * H] = l2[2 * H] = 1e30f; /* huge and equal */
    (void)l0;
    b[2 * n] = nanbuf(rows, H * d);
    b[2 * n + 1] = nanbuf(rows, H);
    both(b, 2 * n + 2, ins_lse, &n, (int[]){2 * n, 2 * n + 1}, 2, 1e-6);
    free(b[2 * n].data);
    b[2 * n] = nanbuf16(rows, H * d); /* a bf16 output (ring's merge into a bf16 o tile) */
    both(b, 2 * n + 2, ins_lse, &n, (int[]){2 * n, 2 * n + 1}, 2, 4e-3);
    free_bufs(b, 2 * n + 2);
}

static int ins_retain(apb_handle *h, const void *c) { (void)c; return apb_insert_retain_score(h[0], h[1], h[2], h[3], h[4], h[5], TAG); }
Test(cuda_fp32, retain)
{
    NEED_CUDA();
    int rows = 70, cq = 256, ck = 64, hid = 96, Hk = 2;
    tbuf b[6] = {rnd(rows, cq, 1, 160), rnd(rows, ck, 1, 161), rnd(rows, ck, 1, 162),
                 rnd(hid, cq + 2 * ck, 0.1f, 163), rnd(Hk, hid, 0.3f, 164), nanbuf(rows, Hk)};
    both(b, 6, ins_retain, NULL, (int[]){5}, 1, 1e-5);
    free_bufs(b, 6);
}

struct smp_ctx { int row; float t, p; uint64_t seed, step; };
static int ins_sample(apb_handle *h, const void *c)
{
    const struct smp_ctx *s = c;
    return apb_insert_sample(h[0], s->row, h[1], s->t, s->p, s->seed, s->step, TAG);
}
static void check_sample(int vocab, float scale, int quantize)
{
    int32_t tok = -1;
    tbuf b[2] = {rnd(2, vocab, scale, 170 + vocab), {&tok, 1, 1, 4}};
    if (quantize)
        for (int i = 0; i < 2 * vocab; i++)
            ((float *)b[0].data)[i] = roundf(((float *)b[0].data)[i]);
    const float temps[4] = {0.0f, 0.7f, 1.0f, 1.5f}, tops[3] = {0.9f, 1.0f, 0.3f};
    for (int t = 0; t < 4; t++)
        for (int p = 0; p < 3; p++)
            for (uint64_t step = 0; step < 6; step++) {
                struct smp_ctx c = {1, temps[t], tops[p], 42, step};
                both(b, 2, ins_sample, &c, (int[]){1}, 1, -1);
            }
    free(b[0].data);
}
Test(cuda_fp32, sample) { NEED_CUDA(); check_sample(49152, 6, 0); check_sample(1000, 3, 1); check_sample(5, 0, 0); }

/* NCCL allgather of compressed blocks (--allgather nccl): every GPU's gathered copy holds host j's
 * block at rows [j K, (j + 1) K), bitwise (it is a copy), for every host but the last (which has
 * no block); the copies start poisoned. Two hosts per GPU. */
Test(cuda_fp32, allgather_nccl)
{
    NEED_CUDA();
    if (!apb_runtime_has_nccl())
        cr_skip_test("built without NCCL");
    apb_err err = {0};
    cr_assert_eq(apb_runtime_nccl_init(&err), 0, "%s", err.msg);
    int G = apb_runtime_nccl_size(), per = 2, W = G * per, K = 5, cols = 48;
    cr_assert_leq(W, 64);
    float *kd[64], *vd[64], *gkd[64], *gvd[64];
    apb_handle ck[64], cv[64], gk[64], gv[64];
    for (int j = 0; j < W - 1; j++) {
        tbuf k = rnd(K, cols, 1.0f, 100 + (uint64_t)j), v = rnd(K, cols, 1.0f, 200 + (uint64_t)j);
        kd[j] = k.data;
        vd[j] = v.data;
        ck[j] = apb_tile_from(kd[j], K, cols, sizeof(float));
        cv[j] = apb_tile_from(vd[j], K, cols, sizeof(float));
    }
    for (int g = 0; g < G; g++) {
        gkd[g] = t_poisoned((size_t)W * K * cols);
        gvd[g] = t_poisoned((size_t)W * K * cols);
        gk[g] = apb_tile_from(gkd[g], W * K, cols, sizeof(float));
        gv[g] = apb_tile_from(gvd[g], W * K, cols, sizeof(float));
    }
    for (int g = 0; g < G; g++) {
        int slot[64], n = 0;
        apb_handle lk[64], lv[64];
        for (int j = g * per; j < (g + 1) * per && j < W - 1; j++) {
            slot[n] = j;
            lk[n] = ck[j];
            lv[n++] = cv[j];
        }
        cr_assert_eq(apb_insert_allgather_nccl(lk, lv, slot, n, g, per, gk[g], gv[g], NULL, NULL, 0, TAG), 0);
    }
    int bad = per; /* a slot outside GPU 0's range is refused (nothing submitted) */
    cr_assert_neq(apb_insert_allgather_nccl(ck, cv, &bad, 1, 0, per, gk[0], gv[0], NULL, NULL, 0, TAG), 0);
    cr_assert_eq(apb_runtime_wait_all(&err), 0, "%s", err.msg);
    for (int g = 0; g < G; g++) {
        apb_handle_free_now(gk[g]);
        apb_handle_free_now(gv[g]);
        for (int j = 0; j < W - 1; j++) {
            size_t off = (size_t)j * K * cols, sz = sizeof(float) * (size_t)K * cols;
            cr_assert(!memcmp(gkd[g] + off, kd[j], sz), "GPU %d: K block of host %d wrong", g, j);
            cr_assert(!memcmp(gvd[g] + off, vd[j], sz), "GPU %d: V block of host %d wrong", g, j);
        }
        free(gkd[g]);
        free(gvd[g]);
    }
    for (int j = 0; j < W - 1; j++) {
        apb_handle_free_now(ck[j]);
        apb_handle_free_now(cv[j]);
        free(kd[j]);
        free(vd[j]);
    }
}
