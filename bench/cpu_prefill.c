/* SPDX-License-Identifier: MIT */
/**
 * @brief CPU prefill and decode benchmark of the bundled model: prefill tokens/s at several lengths,
 * achieved GFLOP/s against OpenBLAS's own SGEMM rate measured in the same run, where the time goes
 * (GEMM, attention, other ops, StarPU overhead + idle), and decode tokens/s after each prefill
 * against the memory-bandwidth floor (a streaming read of the weights, measured in the same run:
 * one decode step reads every weight once).
 *
 *   bench/cpu_prefill [--model DIR] [--lengths 16,1024,4096,8192] [--decode N] [--precision fp32|bf16]
 *                     [--tile N] [--sched NAME] [--json FILE]
 */
#include <cblas.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/apb_parallel.h"
#include "graph/apb_graph.h"

extern void openblas_set_num_threads(int n);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best of 3 SGEMM n^3 with `threads` OpenBLAS threads, in GFLOP/s. */
static double sgemm_rate(int n, int threads)
{
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        t = now_s() - t;
        best = t < best ? t : best;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * n / best * 1e-9;
}

struct _bw {
    const float *const *arr;
    const size_t *len;
    int n;
};
static volatile double bw_sink; /* keeps the reads */

static void bw_range(void *cp, size_t lo, size_t hi)
{
    struct _bw *c = cp;
    double s = 0;
    for (size_t a = lo; a < hi; a++) { /* arrays [lo, hi) */
        const float *p = c->arr[a];
        float acc[16] = {0};
        for (size_t i = 0; i + 16 <= c->len[a]; i += 16)
            for (int j = 0; j < 16; j++)
                acc[j] += p[i + j];
        for (int j = 0; j < 16; j++)
            s += acc[j];
    }
    bw_sink = s;
}

/* Best of 3 streaming reads of the model's weight matrices (what one decode step reads), with
 * every core (apb_parallel_for splits the matrices): GB/s. *bytes gets the fp32 size read. */
static double weights_bandwidth(const apb_model *m, double *bytes)
{
    const apb_config *c = &m->cfg;
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim, n = 0;
    const float **arr = malloc(sizeof(float *) * (size_t)(7 * c->n_layers + 1));
    size_t *len = malloc(sizeof(size_t) * (size_t)(7 * c->n_layers + 1));
    *bytes = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const apb_layer_weights *w = &m->w.layers[l];
        const float *p[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        size_t nn[7] = {(size_t)qd * c->dim, (size_t)kd * c->dim, (size_t)kd * c->dim,
                        (size_t)c->dim * qd, (size_t)c->hidden_dim * c->dim,
                        (size_t)c->hidden_dim * c->dim, (size_t)c->dim * c->hidden_dim};
        for (int i = 0; i < 7; i++) {
            arr[n] = p[i];
            len[n++] = nn[i];
        }
    }
    arr[n] = m->w.lm_head;
    len[n++] = (size_t)c->vocab_size * c->dim;
    for (int i = 0; i < n; i++)
        *bytes += 4.0 * len[i];
    struct _bw b = {arr, len, n};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = now_s();
        apb_parallel_for((size_t)n, 1, bw_range, &b);
        t = now_s() - t;
        best = t < best ? t : best;
    }
    free(arr);
    free(len);
    return *bytes / best * 1e-9;
}

/* Counted FLOPs of a prefill of n tokens (causal attention counts only visible pairs). */
static double prefill_flops(const apb_config *c, double n)
{
    double qd = (double)c->n_heads * c->head_dim, kd = (double)c->n_kv_heads * c->head_dim;
    double lin = 2.0 * n * c->dim * (qd + 2 * kd) + 2.0 * n * qd * c->dim + 6.0 * n * c->dim * c->hidden_dim;
    double attn = 2.0 * 2.0 * c->n_heads * c->head_dim * (n * (n + 1) / 2);
    return c->n_layers * (lin + attn) + 2.0 * c->dim * c->vocab_size;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *lengths = "16,1024,4096,8192", *sched = NULL, *json = NULL;
    int tile = 256, ndec = 32, prec = APB_PREC_FP32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model_dir = argv[++i];
        else if (!strcmp(argv[i], "--lengths") && i + 1 < argc) lengths = argv[++i];
        else if (!strcmp(argv[i], "--tile") && i + 1 < argc) tile = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sched") && i + 1 < argc) sched = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) ndec = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc && !strcmp(argv[i + 1], "fp32")) prec = APB_PREC_FP32, i++;
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc && !strcmp(argv[i + 1], "bf16")) prec = APB_PREC_BF16, i++;
        else {
            fprintf(stderr, "usage: %s [--model DIR] [--lengths L1,L2] [--decode N] [--precision fp32|bf16] "
                            "[--tile N] [--sched NAME] [--json FILE]\n", argv[0]);
            return 2;
        }
    }
    char def[PATH_MAX];
    if (!model_dir) {
        const char *home = getenv("APB_HOME");
        if (home) snprintf(def, sizeof def, "%s/models/smollm2-135m-instruct", home);
        else snprintf(def, sizeof def, "%s/.cache/apb/models/smollm2-135m-instruct", getenv("HOME"));
        model_dir = def;
    }
    int ncores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    double g_all = sgemm_rate(2048, ncores), g_one = sgemm_rate(1024, 1);
    printf("OpenBLAS SGEMM: %.1f GFLOP/s with %d threads (2048^3), %.1f GFLOP/s single thread (1024^3)\n",
           g_all, ncores, g_one);

    apb_err err = {0};
    apb_model m;
    if (apb_model_load(model_dir, &m, &err)) {
        fprintf(stderr, "cpu_prefill: %s\n", err.msg);
        return err.code;
    }
    if (ndec < 0 || ndec > 512)
        ndec = 32;
    double wbytes, bw = weights_bandwidth(&m, &wbytes), dbytes = prec == APB_PREC_BF16 ? wbytes / 2 : wbytes;
    printf("weights: %.0f MB in fp32, %.0f MB read per decode step in %s; streaming read with %d "
           "threads: %.1f GB/s -> decode floor %.1f ms/token (at most %.1f tokens/s)\n",
           wbytes * 1e-6, dbytes * 1e-6, prec == APB_PREC_BF16 ? "bf16" : "fp32", ncores, bw,
           dbytes / bw * 1e-6, bw * 1e9 / dbytes);
    apb_runtime_opts ro = {.sched = sched, .ncpus = -1, .ncuda = 0, .precision = prec};
    if (apb_runtime_init(&ro, &err) || apb_model_register(&m, &err)) {
        fprintf(stderr, "cpu_prefill: %s\n", err.msg);
        return err.code;
    }
    int nw = apb_runtime_nworkers();
    FILE *js = json ? fopen(json, "w") : NULL;
    if (js)
        fprintf(js, "{\"model\": \"%s\", \"sgemm_gflops\": %.2f, \"sgemm_1t_gflops\": %.2f, "
                    "\"workers\": %d, \"sched\": \"%s\", \"tile\": %d, \"precision\": \"%s\", "
                    "\"weights_gbps\": %.2f, \"decode_floor_tokens_per_s\": %.2f, \"runs\": [",
                m.cfg.name, g_all, g_one, nw, apb_runtime_sched_name(), tile,
                prec == APB_PREC_BF16 ? "bf16" : "fp32", bw, bw * 1e9 / dbytes);
    printf("model %s, %d StarPU CPU workers, sched %s, tile %d\n\n", m.cfg.name, nw,
           apb_runtime_sched_name(), tile);
    printf("%7s %9s %10s %9s %8s | %6s %6s %6s %9s | %9s %7s\n", "tokens", "time_s", "tokens/s", "GFLOP/s",
           "%sgemm", "gemm%", "attn%", "other%", "starpu%", "decode/s", "%floor");
    char *ls = strdup(lengths);
    int first = 1;
    for (char *tokn = strtok(ls, ","); tokn; tokn = strtok(NULL, ",")) {
        int n = atoi(tokn);
        if (n <= 0 || n > m.cfg.max_pos) {
            fprintf(stderr, "cpu_prefill: length %d outside [1, %d]\n", n, m.cfg.max_pos);
            continue;
        }
        int32_t *ids = malloc(sizeof(int32_t) * n);
        for (int i = 0; i < n; i++)
            ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)m.cfg.vocab_size);
        int nd = n + ndec > m.cfg.max_pos ? m.cfg.max_pos - n : ndec;
        apb_seq seq;
        apb_sampling smp = {0.0f, 1.0f, 0};
        apb_op_stats_reset();
        double t = now_s();
        if (apb_prefill_full(&m, &seq, ids, n, tile, nd, &smp, &err) || apb_runtime_wait_all(&err)) {
            fprintf(stderr, "cpu_prefill: %s\n", err.msg);
            return err.code;
        }
        t = now_s() - t;
        apb_op_stats st;
        apb_op_stats_get(&st);
        double gemm = (st.ns[APB_OP_QKV] + st.ns[APB_OP_LINEAR] + st.ns[APB_OP_MLP] + st.ns[APB_OP_LOGITS]) * 1e-9;
        double attn = st.ns[APB_OP_ATTENTION] * 1e-9, total = 0;
        for (int i = 0; i < APB_OP_COUNT; i++)
            total += st.ns[i] * 1e-9;
        double other = total - gemm - attn, cap = t * nw, over = cap - total;
        double fl = prefill_flops(&m.cfg, n), gf = fl / t * 1e-9;
        /* decode: nd - 1 steps after the first generated token (greedy), at context ~n */
        double td = now_s();
        for (int i = 1; i < nd; i++)
            if (apb_decode_step(&m, &seq, &smp, &err) || apb_runtime_wait_all(&err)) {
                fprintf(stderr, "cpu_prefill: %s\n", err.msg);
                return err.code;
            }
        td = now_s() - td;
        double dec = nd > 1 ? (nd - 1) / td : 0;
        apb_seq_free(&m, &seq);
        printf("%7d %9.3f %10.1f %9.1f %7.1f%% | %5.1f%% %5.1f%% %5.1f%% %8.1f%% | %9.1f %6.0f%%\n", n, t,
               n / t, gf, 100 * gf / g_all, 100 * gemm / cap, 100 * attn / cap, 100 * other / cap,
               100 * over / cap, dec, 100 * dec * dbytes / (bw * 1e9));
        if (js)
            fprintf(js, "%s{\"tokens\": %d, \"time_s\": %.4f, \"tokens_per_s\": %.2f, \"gflops\": %.2f, "
                        "\"frac_of_sgemm\": %.4f, \"gemm_share\": %.4f, \"attention_share\": %.4f, "
                        "\"other_share\": %.4f, \"starpu_overhead_idle_share\": %.4f, "
                        "\"decode_tokens_per_s\": %.2f}",
                    first ? "" : ", ", n, t, n / t, gf, gf / g_all, gemm / cap, attn / cap, other / cap,
                    over / cap, dec);
        first = 0;
        free(ids);
    }
    free(ls);
    if (js) {
        fprintf(js, "]}\n");
        fclose(js);
        printf("\nwrote %s\n", json);
    }
    printf("\nshares are of (wall time x workers); starpu%% = StarPU overhead + idle workers; decode/s:\n"
           "greedy decode steps after the prefill; %%floor: of the weights' streaming-read rate\n");
    apb_model_free(&m);
    apb_runtime_shutdown();
    return 0;
}
