/* SPDX-License-Identifier: MIT */
/**
 * @brief Prefill benchmark of published model shapes with random weights, on GPUs (or CPUs):
 * time, tokens/s, achieved TFLOP/s over the counted FLOPs, and the ratio to the FLOP floor at the
 * GEMM and attention rates measured in the same run.
 *
 *   bench/prefill [--preset llama-3.1-8b] [--lengths 32768,65536,131072]
 *                 [--methods full,star,ring,apb,spava] [--hosts 8] [--anchor 4096] [--select 2048]
 *                 [--question 64] [--tile 8192] [--device cuda|cpu] [--ngpus N]
 *                 [--precision bf16|fp32] [--sched NAME] [--json FILE]
 *
 * Each (length, method) prefills the context (and, for the sequence-parallel methods, the
 * question pass) and samples the first token; the time is from the first submission to the last
 * task's end. A warm-up run of every (length, method) is made first and not reported (it uploads
 * the weights to the GPUs, fills StarPU's performance models and builds cuDNN's plans of the
 * method's attention shapes); --warmup-each 0 warms up before the first pair only. --decode N
 * then times N decode steps (after 2 untimed ones), each waited for, against the floor of the
 * bytes a step reads (weights + KV cache) at the device copy rate measured in the same run.
 * --trace-dir DIR adds a traced run before the timed one (trace_<method>_<L>.json in DIR, its
 * time in the JSON as traced_time_s): the reported time is always of an untraced run.
 *
 * FLOP floor: the counted FLOPs split into dense (projections, MLP, LM head) and attention, each
 * divided by the rate this machine reaches on one large bf16 GEMM (rate_gemm, measured here via
 * apb's own linear codelet on a 8192^3 problem) -- floor_s = flops / rate_gemm. ratio = time / floor.
 */
#include <limits.h>
#include <pthread.h>
#include <starpu.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/apb_bf16.h"
#include "graph/apb_graph.h"
#include "apb_build_config.h"
#ifdef APB_HAVE_CUDA
#include <cuda_runtime.h>
#endif

/* Device-to-device copy rate of GPU 0 in GB/s (read + write bytes / time, best of 5 copies of
 * 1 GiB): the bandwidth the decode floor uses. 0 without CUDA. */
static double copy_rate_gbs(void)
{
#ifdef APB_HAVE_CUDA
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) {
        cudaFree(a);
        return 0;
    }
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int r = 0; r < 6; r++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0 && ms < best)
            best = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * n / (best * 1e-3) * 1e-9;
#else
    return 0;
#endif
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Peak GPU memory of a timed run: a thread samples apb_runtime_gpu_used() every 5 ms.
 * APB_MEM_TRACE=FILE writes every sample of every run (warm-up and timed), "seconds GiB" a line.
 * APB_MEM_CPU=1 (with STARPU_LIMIT_CPU_MEM set, so that StarPU accounts main RAM and keeps freed
 * buffers in its cache as it does on GPUs) samples StarPU's main-RAM use instead: the GPU's
 * allocation pattern studied on a CPU run. */
static atomic_int mem_stop;
static double mem_peak;
static FILE *mem_trace;
static double mem_used(int cpu)
{
    if (cpu)
        return (double)(starpu_memory_get_total(STARPU_MAIN_RAM) - starpu_memory_get_available(STARPU_MAIN_RAM));
    return apb_runtime_gpu_used();
}
static void *mem_poll(void *unused)
{
    (void)unused;
    const double t0 = now_s();
    const int cpu = getenv("APB_MEM_CPU") != NULL;
    while (!atomic_load(&mem_stop)) {
        double u = mem_used(cpu);
        mem_peak = u > mem_peak ? u : mem_peak;
        if (mem_trace)
            fprintf(mem_trace, "%.4f %.3f\n", now_s() - t0, u / 1073741824.0);
        struct timespec d = {0, 5000000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

/* Counted FLOPs of the dense part (per token) and of the attention score/value products. */
static double dense_flops(const apb_config *c, double n)
{
    double qd = (double)c->n_heads * c->head_dim, kd = (double)c->n_kv_heads * c->head_dim;
    return c->n_layers * (2.0 * n * c->dim * (qd + 2 * kd) + 2.0 * n * qd * c->dim +
                          6.0 * n * c->dim * c->hidden_dim);
}

/* 4 d H per visible (query, key) pair, summed over layers. */
static double attn_flops(const apb_config *c, double pairs)
{
    return c->n_layers * 4.0 * c->n_heads * c->head_dim * pairs;
}

/* Visible pairs of a method (the work it really does; see docs/PERFORMANCE.md). */
static double method_pairs(apb_method m, const apb_hosts_opts *o, double L, double nq)
{
    double causal = L * (L + 1) / 2;
    if (m == APB_METHOD_FULL || m == APB_METHOD_RING || m == APB_METHOD_ZIGZAG || m == APB_METHOD_ULYSSES)
        return causal + nq * L + nq * (nq + 1) / 2;
    int W = o->hosts;
    double B = L / W, A = o->anchor, K = o->select;
    double own = W * (B * (B + 1) / 2); /* each host's block, causal */
    double anchor = (W - 1) * (B * A + A * (A + 1) / 2);
    double passing = 0;
    if (m == APB_METHOD_APB || m == APB_METHOD_SPAVA)
        for (int r = 1; r < W; r++)
            passing += B * r * K;
    return own + anchor + passing + nq * L + nq * (nq + 1) / 2;
}

/* A tile of random values (uniform in [-1, 1); bf16 when elem is 2) over host memory *mem, which
 * the caller frees after apb_handle_free_now. The kernels' rates are measured on random operands:
 * on zeros an H200 runs the same GEMM or attention faster (less power drawn, higher clocks; one
 * causal cuDNN call at 128K: 704 TFLOP/s on zeros, 541-570 on a model's activations). */
static apb_handle tile_random(int rows, int cols, int elem, uint64_t seed, void **mem)
{
    size_t n = (size_t)rows * cols;
    *mem = malloc(n * (size_t)elem);
    if (!*mem)
        return NULL;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        float f = (float)((x >> 40) * (1.0 / 8388608.0)) - 1.0f; /* 24 bits -> [-1, 1) */
        if (elem == 2)
            ((uint16_t *)*mem)[i] = apb_bf16_from_f32(f);
        else
            ((float *)*mem)[i] = f;
    }
    return apb_tile_from(*mem, rows, cols, (size_t)elem);
}

/* Rate of one large GEMM through apb's linear codelet (bf16 or fp32 weights), TFLOP/s. */
static double gemm_rate(int n, apb_err *err)
{
    void *x, *w;
    int bf16 = apb_runtime_precision() == APB_PREC_BF16;
    apb_handle hx = tile_random(n, n, 4, 1, &x);
    apb_handle hw = tile_random(n, n, bf16 ? 2 : 4, 2, &w);
    if (!hx || !hw) {
        apb_handle_free_now(hx);
        apb_handle_free_now(hw);
        free(x);
        free(w);
        return 0;
    }
    apb_handle ho = apb_tile_new(n, n, 4);
    apb_task_tag tag = {-1, -1, 0};
    double best = 1e30;
    for (int r = 0; r < 4 && !err->code; r++) {
        double t = now_s();
        apb_insert_linear(hx, hw, NULL, ho, 0, tag);
        if (apb_runtime_wait_all(err))
            break;
        t = now_s() - t;
        if (r > 0 && t < best) /* the first run uploads the operands */
            best = t;
    }
    apb_handle_free_now(hx);
    apb_handle_free_now(hw);
    apb_handle_free_now(ho);
    free(x);
    free(w);
    return best < 1e30 ? 2.0 * n * (double)n * n / best * 1e-12 : 0;
}

/* One causal attention task over L tokens with the model's heads: TFLOP/s of the attention
 * kernel alone (the FLOP floor of the attention part uses it). */
static double attn_rate(const apb_config *c, int L, apb_err *err)
{
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    void *mq, *mk, *mv;
    apb_handle q = tile_random(L, qd, 4, 3, &mq), k = tile_random(L, kd, 4, 4, &mk),
               v = tile_random(L, kd, 4, 5, &mv), o = apb_tile_new(L, qd, 4),
               lse = apb_tile_new(L, c->n_heads, 4);
    apb_attn_seg seg = {.k = k, .v = v, .len = L, .coord0 = 0, .causal = 1, .min_q_coord = 0};
    apb_task_tag tag = {-1, -1, 0};
    double best = 1e30;
    for (int r = 0; r < 3 && !err->code; r++) {
        double t = now_s();
        apb_insert_attention(q, 0, &seg, 1, c->n_heads, c->n_kv_heads, c->head_dim, o, lse, tag);
        if (apb_runtime_wait_all(err))
            break;
        t = now_s() - t;
        if (r > 0 && t < best)
            best = t;
    }
    apb_handle_free_now(q); apb_handle_free_now(k); apb_handle_free_now(v);
    apb_handle_free_now(o); apb_handle_free_now(lse);
    free(mq); free(mk); free(mv);
    return best < 1e30 ? attn_flops(c, (double)L * (L + 1) / 2) / c->n_layers / best * 1e-12 : 0;
}

/* --sustain SECS: a kernel alone, run back to back for SECS seconds (each run waited for) while NVML
 * samples the GPU: the rate on a cool card (the best of runs 2-4; the first uploads the operands)
 * and over the last half of the window (the card at its power and thermal steady state), with the
 * power, SM clock and energy a FLOP of that window. A
 * prefill keeps the card busy for seconds, so the steady-state rate is the one inside it. */
typedef int (*probe_fn)(void *arg);
struct probe_attn {
    apb_handle q, k, v, o, lse;
    const apb_config *c;
};
static int probe_attention(void *arg)
{
    const struct probe_attn *p = arg;
    apb_attn_seg seg = {.k = p->k, .v = p->v, .len = apb_tile_rows(p->k), .coord0 = 0, .causal = 1, .min_q_coord = 0};
    return apb_insert_attention(p->q, 0, &seg, 1, p->c->n_heads, p->c->n_kv_heads, p->c->head_dim, p->o, p->lse,
                                (apb_task_tag){-1, -1, 0});
}
static int probe_gemm(void *arg)
{
    apb_handle *h = arg;
    return apb_insert_linear(h[0], h[1], NULL, h[2], 0, (apb_task_tag){-1, -1, 0});
}
static void sustain(const char *what, probe_fn fn, void *arg, double flops, double secs, apb_err *err)
{
    double first = 0, sum_t = 0, t_all = now_s();
    int n_half = 0, runs = 0;
    apb_err te = {0};
    int teling = 0;
    while (!err->code) {
        double t = now_s();
        if (fn(arg) || apb_runtime_wait_all(err))
            break;
        double now = now_s();
        t = now - t;
        if (runs++ >= 1 && runs <= 4 && (first == 0 || t < first))
            first = t; /* cool: the best of runs 2-4 (the first uploads the operands) */
        if (now - t_all >= secs / 2) {
            if (!teling) /* the telemetry window: the second half */
                teling = apb_telemetry_start(10, 0, &te) == APB_OK ? 1 : -1;
            else {
                sum_t += t;
                n_half++;
            }
        }
        if (now - t_all >= secs)
            break;
    }
    apb_gpu_tele tele[APB_TELE_MAX_DEV];
    int nt = teling == 1 ? apb_telemetry_stop(tele, APB_TELE_MAX_DEV) : 0;
    const double steady = n_half ? flops * n_half / sum_t * 1e-12 : 0;
    printf("  %-40s cool %6.1f TFLOP/s; steady (%d runs, last %.1f s) %6.1f TFLOP/s", what,
           first > 0 ? flops / first * 1e-12 : 0, n_half, sum_t, steady);
    if (nt > 0 && tele[0].samples && steady > 0) /* energy a FLOP at the steady state: what a power-capped run pays */
        printf(", %.3f pJ/FLOP", apb_gpu_tele_watts(&tele[0]) / steady);
    printf("\n");
    for (int g = 0; g < nt; g++)
        if (tele[g].samples && tele[g].frac_idle < 1) {
            printf("    ");
            apb_telemetry_print(stdout, &tele[g], 1);
        }
    if (teling == -1)
        printf("    (%s)\n", te.msg);
}

/* Decode kernels alone: one query row against an L-row bf16 KV cache (split-KV attention), and
 * the few-row GEMV over an N x K bf16 weight (one row in), each repeated `reps` times in one
 * submission; returns the bytes each call must read over its mean time (GB/s). */
static double decode_attn_rate(const apb_config *c, int L, double *us, apb_err *err)
{
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim, reps = 50;
    apb_handle q = apb_tile_new_zeroed(1, qd, 4), k = apb_tile_new_zeroed(L, kd, 2),
               v = apb_tile_new_zeroed(L, kd, 2), o = apb_tile_new(1, qd, 4), lse = apb_tile_new(1, c->n_heads, 4);
    apb_attn_seg seg = {.k = k, .v = v, .len = L, .coord0 = 0, .causal = 1, .min_q_coord = 0};
    apb_task_tag tag = {-1, -1, 0};
    double best = 1e30;
    for (int r = 0; r < 3 && !err->code; r++) {
        double t = now_s();
        for (int i = 0; i < (r ? reps : 1); i++)
            apb_insert_attention(q, L, &seg, 1, c->n_heads, c->n_kv_heads, c->head_dim, o, lse, tag);
        if (apb_runtime_wait_all(err))
            break;
        t = (now_s() - t) / reps;
        if (r > 0 && t < best)
            best = t;
    }
    apb_handle_free_now(q); apb_handle_free_now(k); apb_handle_free_now(v);
    apb_handle_free_now(o); apb_handle_free_now(lse);
    *us = best * 1e6;
    return best < 1e30 ? 2.0 * L * kd * 2 / best * 1e-9 : 0;
}

static double decode_gemv_rate(int N, int K, double *us, apb_err *err)
{
    int reps = 50;
    apb_handle x = apb_tile_new_zeroed(1, K, 4), w = apb_tile_new_zeroed(N, K, 2), y = apb_tile_new(1, N, 4);
    apb_task_tag tag = {-1, -1, 0};
    double best = 1e30;
    for (int r = 0; r < 3 && !err->code; r++) {
        double t = now_s();
        for (int i = 0; i < (r ? reps : 1); i++)
            apb_insert_linear(x, w, NULL, y, 0, tag);
        if (apb_runtime_wait_all(err))
            break;
        t = (now_s() - t) / reps;
        if (r > 0 && t < best)
            best = t;
    }
    apb_handle_free_now(x); apb_handle_free_now(w); apb_handle_free_now(y);
    *us = best * 1e6;
    return best < 1e30 ? 2.0 * N * K / best * 1e-9 : 0;
}

int main(int argc, char **argv)
{
    const char *preset = "llama-3.1-8b", *lengths = "32768,65536,131072", *methods = "full,star,ring,apb,spava";
    const char *sched = NULL, *json = NULL, *device = "cuda", *prec = NULL, *trace_dir = NULL;
    int hosts = 8, anchor = 4096, select = 2048, nq = 64, tile = 8192, ngpus = -1, attn_only = 0;
    int attn_decode = 0; /* --attn-decode L: decode kernels alone */
    double sustain_s = 0; /* --sustain SECS (with --attn-only): the kernel and GEMMs run for SECS each */
    const char *sustain_gemm = "8192,8192,8192"; /* --sustain-gemm "M,N,K;M,N,K": the GEMMs it runs */
    int ndec = 32; /* decode steps timed after each prefill (0: none) */
    int warm_each = 1; /* warm-up before every (length, method); 0: before the first only */
    int qshare = 0;    /* --question-share 1: one more run of each method with a question pass,
                        * a barrier before that pass, both phases timed */
    double gpu_mem = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--lengths")) lengths = v;
        else if (!strcmp(a, "--methods")) methods = v;
        else if (!strcmp(a, "--hosts")) hosts = atoi(v);
        else if (!strcmp(a, "--anchor")) anchor = atoi(v);
        else if (!strcmp(a, "--select")) select = atoi(v);
        else if (!strcmp(a, "--question")) nq = atoi(v);
        else if (!strcmp(a, "--tile")) tile = atoi(v);
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--ngpus")) ngpus = atoi(v);
        else if (!strcmp(a, "--gpu-mem")) gpu_mem = atof(v);
        else if (!strcmp(a, "--precision")) prec = v;
        else if (!strcmp(a, "--sched")) sched = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--attn-only")) attn_only = atoi(v);
        else if (!strcmp(a, "--sustain")) sustain_s = atof(v);
        else if (!strcmp(a, "--sustain-gemm")) sustain_gemm = v;
        else if (!strcmp(a, "--decode")) ndec = atoi(v);
        else if (!strcmp(a, "--attn-decode")) attn_decode = atoi(v);
        else if (!strcmp(a, "--trace-dir")) trace_dir = v;
        else if (!strcmp(a, "--warmup-each")) warm_each = atoi(v);
        else if (!strcmp(a, "--question-share")) qshare = atoi(v);
        else goto usage;
        i++;
    }
    apb_err err = {0};
    apb_model m;
    if (attn_only > 0 || attn_decode > 0) { /* the attention kernel alone at attn_only tokens (no weights) */
        apb_config c;
        apb_runtime_opts ro = {.ncpus = 0, .ncuda = 1, .precision = prec && !strcmp(prec, "fp32") ? APB_PREC_FP32 : APB_PREC_BF16};
        if (apb_config_preset(preset, &c, &err) || apb_runtime_init(&ro, &err)) {
            fprintf(stderr, "prefill: %s\n", err.msg);
            return err.code ? err.code : 7;
        }
        if (attn_only > 0)
            printf("causal attention kernel, %s shapes, %d tokens: %.1f TFLOP/s\n", preset, attn_only,
                   attn_rate(&c, attn_only, &err));
        if (attn_only > 0 && sustain_s > 0 && !err.code) { /* the same kernel and GEMMs, sustained */
            int L = attn_only, qd = c.n_heads * c.head_dim, kd = c.n_kv_heads * c.head_dim;
            const int welem = apb_runtime_precision() == APB_PREC_BF16 ? 2 : 4;
            void *mem[3] = {0};
            struct probe_attn pa = {tile_random(L, qd, 4, 3, &mem[0]), tile_random(L, kd, 4, 4, &mem[1]),
                                    tile_random(L, kd, 4, 5, &mem[2]), apb_tile_new(L, qd, 4),
                                    apb_tile_new(L, c.n_heads, 4), &c};
            printf("sustained for %.0f s each (steady = the second half, with NVML's power and clock):\n", sustain_s);
            char lab[96];
            snprintf(lab, sizeof lab, "causal attention, %d tokens", L);
            if (pa.q && pa.k && pa.v && pa.o && pa.lse)
                sustain(lab, probe_attention, &pa, attn_flops(&c, (double)L * (L + 1) / 2) / c.n_layers, sustain_s, &err);
            apb_handle ah[5] = {pa.q, pa.k, pa.v, pa.o, pa.lse};
            for (int i = 0; i < 5; i++)
                apb_handle_free_now(ah[i]);
            for (int i = 0; i < 3; i++)
                free(mem[i]);
            /* GEMMs of the given M,N,K (x M x K in the activations' type, as the prefill's xn; w N x K) */
            char *gs = strdup(sustain_gemm);
            for (char *sv = NULL, *tok = strtok_r(gs, ";", &sv); tok && !err.code; tok = strtok_r(NULL, ";", &sv)) {
                int M = 0, N = 0, K = 0;
                if (!strcmp(tok, "none"))
                    continue;
                if (sscanf(tok, "%d,%d,%d", &M, &N, &K) != 3 || M <= 0 || N <= 0 || K <= 0 || M > 65536 ||
                    N > 65536 || K > 65536) {
                    fprintf(stderr, "prefill: --sustain-gemm: '%s' is not M,N,K (1-65536 each)\n", tok);
                    continue;
                }
                void *gm[2] = {0};
                apb_handle g[3] = {tile_random(M, K, welem, 1, &gm[0]), tile_random(N, K, welem, 2, &gm[1]),
                                   apb_tile_new(M, N, 4)};
                snprintf(lab, sizeof lab, "GEMM %d x %d x %d (linear codelet)", M, N, K);
                if (g[0] && g[1] && g[2])
                    sustain(lab, probe_gemm, g, 2.0 * M * (double)N * K, sustain_s, &err);
                for (int i = 0; i < 3; i++)
                    apb_handle_free_now(g[i]);
                free(gm[0]);
                free(gm[1]);
            }
            free(gs);
        }
        if (attn_decode > 0) {
            double us, bw = copy_rate_gbs();
            printf("decode kernels, %s shapes (calls back to back; device copy rate %.0f GB/s):\n", preset, bw);
            double r = decode_attn_rate(&c, attn_decode, &us, &err);
            printf("  attention, 1 row x %d keys (bf16 cache): %8.1f us  %6.0f GB/s  (%.0f %% of copy)\n",
                   attn_decode, us, r, 100 * r / bw);
            const int shp[4][2] = {{c.n_heads * c.head_dim, c.dim}, {c.n_kv_heads * c.head_dim, c.dim},
                                   {c.hidden_dim, c.dim}, {c.dim, c.hidden_dim}};
            for (int i = 0; i < 4 && !err.code; i++) {
                r = decode_gemv_rate(shp[i][0], shp[i][1], &us, &err);
                printf("  gemv %5d x %5d (bf16 weights):             %8.1f us  %6.0f GB/s  (%.0f %% of copy)\n",
                       shp[i][0], shp[i][1], us, r, 100 * r / bw);
            }
        }
        apb_runtime_shutdown();
        return 0;
    }
    double t_load = now_s();
    if (apb_model_random(preset, 1, &m, &err)) {
        fprintf(stderr, "prefill: %s\n", err.msg);
        return err.code;
    }
    int cuda = strcmp(device, "cuda") == 0;
    apb_runtime_opts ro = {.sched = sched, .ncpus = cuda ? 0 : -1, .ncuda = cuda ? ngpus : 0, .gpu_mem_gib = gpu_mem,
                           .precision = prec ? (strcmp(prec, "bf16") == 0 ? APB_PREC_BF16 : APB_PREC_FP32) : -1};
    if (cuda && apb_runtime_cuda_devices() == 0) {
        fprintf(stderr, "prefill: --device cuda but no GPU is visible\n");
        return 2;
    }
    if (apb_runtime_init(&ro, &err) || apb_model_register(&m, &err)) {
        fprintf(stderr, "prefill: %s\n", err.msg);
        return err.code;
    }
    t_load = now_s() - t_load;
    int ids_w[64];
    int ngw = apb_runtime_cuda_workers(ids_w, 64);
    double rate = gemm_rate(cuda ? 8192 : 1024, &err);
    if (rate <= 0) {
        fprintf(stderr, "prefill: measuring the GEMM rate failed: %s\n", err.msg);
        return 7;
    }
    int la = cuda ? 16384 : 1024;
    double arate = attn_rate(&m.cfg, la, &err);
    const char *pname = apb_runtime_precision() == APB_PREC_BF16 ? "bf16" : "fp32";
    double bw = cuda ? copy_rate_gbs() : 0;
    /* bytes of weights one decode step reads (the large matrices, in the run's precision) */
    const apb_config *cf = &m.cfg;
    double wbytes = (apb_runtime_precision() == APB_PREC_BF16 ? 2.0 : 4.0) *
                    ((double)cf->n_layers * ((double)cf->dim * (cf->n_heads + 2 * cf->n_kv_heads) * cf->head_dim +
                                              (double)cf->n_heads * cf->head_dim * cf->dim + 3.0 * cf->dim * cf->hidden_dim) +
                     (double)cf->vocab_size * cf->dim);
    printf("preset %s (%d layers, dim %d, %d/%d heads, d %d), %s, %d GPU workers, sched %s, tile %d, "
           "weights ready in %.1f s\n", m.cfg.name, m.cfg.n_layers, m.cfg.dim, m.cfg.n_heads,
           m.cfg.n_kv_heads, m.cfg.head_dim, pname, ngw, apb_runtime_sched_name(), tile, t_load);
    printf("GEMM rate (apb linear codelet, %d^3, %s): %.2f TFLOP/s; causal attention kernel "
           "(%d tokens, one task): %.2f TFLOP/s\n\n", cuda ? 8192 : 1024, pname, rate, la, arate);
    if (ndec > 0)
        printf("decode floor: %.2f GB of weights + the KV cache read once per token at the copy rate "
               "measured here (%.0f GB/s, device to device)\n\n", wbytes * 1e-9, bw);
    printf("%8s %-8s %3s %5s %5s %9s %10s %9s %9s %7s %8s %9s %9s\n", "tokens", "method", "W", "A", "K", "time_s",
           "tokens/s", "TFLOP/s", "floor_s", "ratio", "GPU_GiB", "dec_ms", "dfloor_ms");
    FILE *js = json ? fopen(json, "w") : NULL;
    if (js)
        fprintf(js, "{\"preset\": \"%s\", \"precision\": \"%s\", \"gpu_workers\": %d, \"sched\": \"%s\", "
                    "\"tile\": %d, \"gpu_mem_limit_gib\": %.2f, \"gemm_tflops\": %.2f, \"attention_tflops\": %.2f, "
                    "\"runs\": [",
                m.cfg.name, pname, ngw, apb_runtime_sched_name(), tile, gpu_mem, rate, arate);
    char *ls = strdup(lengths), *ms = strdup(methods);
    int first = 1, warm = 0, rc = 0;
    for (char *sl = NULL, *tl = strtok_r(ls, ",", &sl); tl && !rc; tl = strtok_r(NULL, ",", &sl)) {
        int L = atoi(tl);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)(L + nq));
        for (int i = 0; i < L + nq; i++)
            ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)m.cfg.vocab_size);
        char *mc = strdup(ms);
        for (char *sm = NULL, *tm = strtok_r(mc, ",", &sm); tm && !rc; tm = strtok_r(NULL, ",", &sm)) {
            apb_method meth = APB_METHOD_APB;
            int nccl = !strcmp(tm, "apb-nccl"); /* APB with the NCCL allgather (--allgather nccl) */
            if (!nccl && apb_method_parse(tm, &meth, &err)) {
                fprintf(stderr, "prefill: %s\n", err.msg);
                rc = 2;
                break;
            }
            /* every method prefills L tokens: full all of them, the others L - nq context tokens
             * plus the nq question tokens (the question pass) */
            int Lc = meth == APB_METHOD_FULL ? L : L - nq, A = anchor, K = select;
            int blk = (Lc + hosts - 1) / hosts;
            if (meth == APB_METHOD_SPAVA) /* Spava's own defaults (L/64 anchor, L/128 selected) */
                A = K = -1;
            else if (A >= blk) { /* a shorter context than the preset's anchor was meant for */
                A = blk / 2 >= 128 ? blk / 2 / 64 * 64 : blk / 2;
                K = K > blk - A ? blk - A : K;
            }
            apb_hosts_opts o = {.method = meth, .hosts = meth == APB_METHOD_FULL ? 1 : hosts,
                                .anchor = A, .select = K, .tile = tile,
                                .placement = ngw > 1 ? APB_PLACE_PINNED : APB_PLACE_FREE,
                                .allgather = nccl ? APB_ALLGATHER_NCCL : APB_ALLGATHER_STARPU};
            const int cap = ndec > 0 ? ndec + 4 : 0; /* decode rows: warm-up steps + timed steps */
            /* random weights: decoding past the preset's context (128K + a few tokens) is allowed */
            if (m.cfg.max_pos < L + cap)
                m.cfg.max_pos = L + cap;
            if (meth != APB_METHOD_FULL && apb_hosts_resolve(&m.cfg, Lc, nq, cap, &o, &err)) {
                fprintf(stderr, "prefill: %s %d: %s\n", tm, L, err.msg);
                continue;
            }
            apb_sampling smp = {.temperature = 0, .top_p = 1, .seed = 1};
            /* rep 0: warm-up of this (length, method), not reported: the first run of a shape uploads
             * the weights, fills StarPU's performance models and builds cuDNN's plans of its
             * attention shapes (a few hundred ms per new shape); PyTorch's baseline warms up too.
             * With --trace-dir, rep 1 is traced (its time goes to the JSON as traced_time_s) and
             * rep 2 is the timed run, untraced: the table's times never include tracing's cost */
            const int last = trace_dir ? 2 : 1;
            double t_traced = 0;
            for (int rep = warm && !warm_each ? 1 : 0; rep <= last; rep++) {
                apb_seq seq = {0};
                apb_hseq hs = {0};
                apb_op_stats_reset();
                /* the traced run's tasks (prefill and decode); APB_TRACE_WARMUP=1 traces the warm-up too
                 * (trace_<method>_<L>_warmup.json, beside its APB_MEM_TRACE samples) */
                const int traced = trace_dir && (rep == 1 || (rep == 0 && getenv("APB_TRACE_WARMUP") &&
                                                              !strcmp(getenv("APB_TRACE_WARMUP"), "1")));
                const char *what = rep == 0 ? "warm-up" : traced ? "traced" : "timed";
                pthread_t poller;
                mem_peak = 0;
                atomic_store(&mem_stop, 0);
                if (getenv("APB_MEM_TRACE") && *getenv("APB_MEM_TRACE")) {
                    if (!mem_trace)
                        mem_trace = fopen(getenv("APB_MEM_TRACE"), "w");
                    if (mem_trace)
                        fprintf(mem_trace, "# %s %d %s\n", tm, L, what);
                }
                int polling = (cuda || getenv("APB_MEM_CPU")) && pthread_create(&poller, NULL, mem_poll, NULL) == 0;
                /* power, SM clock and their causes over the reported run (NVML; none on CPU runs) */
                apb_gpu_tele tele[APB_TELE_MAX_DEV];
                int ntele = 0, teling = cuda && (rep == last || traced) && apb_telemetry_start(20, traced, NULL) == APB_OK;
                if (traced) {
                    apb_trace_reset();
                    apb_trace_enable(1);
                }
                double t = now_s(), t_start = t;
                int r = meth == APB_METHOD_FULL
                            ? apb_prefill_full(&m, &seq, ids, L, tile, cap, &smp, &err)
                            : apb_prefill_hosts(&m, &hs, ids, Lc, ids + Lc, nq, cap, &o, &smp, &err);
                if (!r)
                    r = apb_runtime_wait_all(&err);
                t = now_s() - t;
                if (teling) /* the prefill's window only, not the decode steps */
                    ntele = apb_telemetry_stop(tele, APB_TELE_MAX_DEV);
                apb_trace_stats ts0;
                if (traced && apb_trace_stats_get(&ts0) == 0) /* the prefill's time outside its tasks */
                    fprintf(stderr, "%s at %d tokens (%s): first task %.1f ms after the call, last task %.1f ms "
                            "before the wait returned (span %.3f s of %.3f s)\n", tm, L, what,
                            (ts0.first_ns * 1e-9 - t_start) * 1e3, (t_start + t - ts0.last_ns * 1e-9) * 1e3,
                            ts0.span_s, t);
                /* decode: 2 warm-up steps, then ndec steps, each waited for (as a generation
                 * loop that reads every token does) */
                double tdec = 0;
                for (int st = 0; !r && rep >= 1 && st < (ndec > 0 ? ndec + 2 : 0); st++) {
                    double t1 = now_s();
                    r = meth == APB_METHOD_FULL ? apb_decode_step(&m, &seq, &smp, &err)
                                                : apb_decode_hosts(&m, &hs, &smp, &err);
                    if (!r)
                        r = apb_runtime_wait_all(&err);
                    if (st >= 2)
                        tdec += now_s() - t1;
                }
                atomic_store(&mem_stop, 1);
                if (polling)
                    pthread_join(poller, NULL);
                if (mem_trace)
                    fflush(mem_trace);
                if (traced) {
                    char tp[1024];
                    snprintf(tp, sizeof tp, "%s/trace_%s_%d%s.json", trace_dir, tm, L, rep ? "" : "_warmup");
                    apb_trace_enable(0);
                    fprintf(stderr, "%s at %d tokens (%s, prefill %.3f s + %d decode steps):\n", tm, L,
                            what, t, rep ? ndec + 2 : 0);
                    apb_trace_summary(stderr);
                    apb_err te = {0};
                    if (apb_trace_write_chrome(tp, &te))
                        fprintf(stderr, "prefill: trace: %s\n", te.msg);
                }
                if (meth == APB_METHOD_FULL)
                    apb_seq_free(&m, &seq);
                else
                    apb_hseq_free(&m, &hs);
                apb_runtime_wait_all(NULL);
                if (r) { /* reported in the table; the next method still runs */
                    fprintf(stderr, "prefill: %s at %d tokens: %s\n", tm, L, err.msg);
                    printf("%8d %-8s %3d   failed: %s\n", L, tm, o.hosts, err.msg);
                    err = (apb_err){0};
                    break;
                }
                warm = 1;
                if (rep < last) {
                    if (rep > 0)
                        t_traced = t;
                    continue;
                }
                double pairs = method_pairs(meth, &o, Lc, meth == APB_METHOD_FULL ? 0 : nq);
                double fl = dense_flops(&m.cfg, L) + attn_flops(&m.cfg, pairs);
                /* floor: dense FLOPs at the GEMM rate + attention FLOPs at the GEMM rate too
                 * (attention is matrix products of the same kind; see docs/PERFORMANCE.md) */
                double floor_s = fl / (rate * 1e12);
                char memc[32] = "       -"; /* no GPU: no device memory to report */
                if (polling)
                    snprintf(memc, sizeof memc, "%8.1f", mem_peak / 1073741824.0);
                /* KV cache a decode step reads: every host's local cache (bf16 under bf16) */
                double kvb = (double)m.cfg.n_layers * 2.0 * m.cfg.n_kv_heads * m.cfg.head_dim *
                             (apb_runtime_precision() == APB_PREC_BF16 ? 2.0 : 4.0) * L;
                double dec_ms = ndec > 0 ? tdec / ndec * 1e3 : 0, dfl_ms = bw > 0 ? (wbytes + kvb) / (bw * 1e9) * 1e3 : 0;
                printf("%8d %-8s %3d %5d %5d %9.3f %10.0f %9.1f %9.3f %7.2f %s %9.2f %9.2f\n", L, tm, o.hosts,
                       meth == APB_METHOD_FULL ? 0 : o.anchor, meth == APB_METHOD_FULL ? 0 : o.select, t, L / t,
                       fl / t * 1e-12, floor_s, t / floor_s, memc, dec_ms, dfl_ms);
                /* the GPUs that worked during the prefill (not idle in every sample) */
                apb_gpu_tele tsum = {.energy_j = -1};
                int nbusy = 0;
                for (int g = 0; g < ntele; g++) {
                    if (!tele[g].samples || tele[g].frac_idle >= 1)
                        continue;
                    printf("%8s %-8s     ", "", "");
                    apb_telemetry_print(stdout, &tele[g], 1);
                    if (!nbusy++)
                        tsum = tele[g];
                }
                fflush(stdout);
                char tj[512] = "null";
                if (nbusy == 1) /* one GPU: its figures; several: see the printed lines */
                    snprintf(tj, sizeof tj,
                             "{\"window_s\": %.3f, \"power_w_mean\": %.1f, \"power_w_max\": %.1f, "
                             "\"power_limit_w\": %.1f, \"energy_j\": %.1f, \"sm_mhz_mean\": %.0f, \"sm_mhz_min\": %.0f, "
                             "\"frac_power_cap\": %.3f, \"frac_thermal\": %.3f, \"temp_c_max\": %.0f, "
                             "\"energy_pj_per_flop\": %.4f}",
                             tsum.seconds, apb_gpu_tele_watts(&tsum),
                             tsum.power_w_max, tsum.power_limit_w, tsum.energy_j, tsum.sm_mhz_mean,
                             tsum.sm_mhz_min, tsum.frac_power_cap, tsum.frac_thermal, tsum.temp_c_max,
                             tsum.energy_j > 0 ? tsum.energy_j / fl * 1e12 : 0);
                if (js)
                    fprintf(js, "%s{\"tokens\": %d, \"method\": \"%s\", \"hosts\": %d, \"anchor\": %d, "
                                "\"select\": %d, \"time_s\": %.4f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, "
                                "\"flops\": %.4e, \"floor_s\": %.4f, \"ratio_to_floor\": %.3f, \"gpu_used_peak_gib\": %.2f, "
                                "\"decode_ms_per_token\": %.3f, \"decode_floor_ms\": %.3f, \"decode_steps\": %d, "
                                "\"traced_time_s\": %.4f, \"gpu_telemetry\": %s}",
                            first ? "" : ", ", L, tm, o.hosts, meth == APB_METHOD_FULL ? 0 : o.anchor,
                            meth == APB_METHOD_FULL ? 0 : o.select, t, L / t, fl / t * 1e-12, fl,
                            floor_s, t / floor_s, mem_peak / 1073741824.0, dec_ms, dfl_ms, ndec, t_traced, tj);
                first = 0;
            }
            /* the question pass alone (issue 16: under 5 % of the prefill at 128K for apb / star):
             * the context layers waited for, then the pass up to the first token; without the
             * barrier the pass overlaps the last layers, so this share is an upper bound */
            if (qshare && warm && meth != APB_METHOD_FULL) { /* Spava (question fused into the layers): 0 s, not printed */
                apb_hseq hs = {0};
                apb_sampling smp = {.temperature = 0, .top_p = 1, .seed = 1};
                apb_hosts_opts oq = o;
                oq.time_question = 1;
                int r = apb_prefill_hosts(&m, &hs, ids, Lc, ids + Lc, nq, cap, &oq, &smp, &err);
                double tc = hs.t_context_s, tq = hs.t_question_s;
                apb_hseq_free(&m, &hs);
                apb_runtime_wait_all(NULL);
                if (r) {
                    fprintf(stderr, "prefill: %s at %d tokens, question pass: %s\n", tm, L, err.msg);
                    err = (apb_err){0};
                } else if (tc > 0) {
                    printf("%8d %-8s     question pass (%d rows, barrier before it): %.4f s after %.3f s of "
                           "context layers, %.2f %% of the prefill\n", L, tm, nq, tq, tc, 100 * tq / (tc + tq));
                    if (js)
                        fprintf(js, "%s{\"tokens\": %d, \"method\": \"%s\", \"kind\": \"question_pass\", "
                                    "\"question_rows\": %d, \"context_s\": %.4f, \"question_s\": %.4f}",
                                first ? "" : ", ", L, tm, nq, tc, tq);
                    first = 0;
                }
            }
        }
        free(mc);
        free(ids);
    }
    free(ls);
    free(ms);
    if (js) {
        fprintf(js, "]}\n");
        fclose(js);
    }
    apb_model_free(&m);
    apb_runtime_shutdown();
    return rc;
usage:
    fprintf(stderr, "usage: %s [--preset NAME] [--lengths L1,L2] [--methods m1,m2] [--hosts W] "
                    "[--anchor A] [--select K] [--question N] [--tile N] [--device cuda|cpu] "
                    "[--ngpus N] [--gpu-mem GIB] [--precision bf16|fp32] [--sched NAME] [--json FILE] [--attn-only TOKENS [--sustain SECS [--sustain-gemm \"M,N,K;...\"]]]\n"
                    "[--decode STEPS (default 32; 0 = prefill only)] [--trace-dir DIR] [--warmup-each 1|0] [--question-share 1]\n"
                    "methods: full, star, ring, zigzag, ulysses, apb, spava, apb-nccl (APB, NCCL allgather)\n", argv[0]);
    return 2;
}
