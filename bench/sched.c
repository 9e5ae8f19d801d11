/* SPDX-License-Identifier: MIT */
/**
 * @brief Scheduler comparison: the same APB / Spava prefill graph (random weights) under each
 * policy, ours and StarPU's; prints makespan, communication overlap % and idle % per policy and
 * writes JSON. Every run is a fresh process (fork) with its own starpu_init, so no policy inherits
 * another's state; runs go in rounds (each policy once per round) and the median of --repeat
 * rounds is reported. See docs/SCHEDULERS.md.
 *
 *   bench/sched [--preset NAME] [--prompt-len N] [--question N] [--hosts W] [--tile T]
 *               [--methods apb,spava] [--policies a,b,..] [--repeat R] [--ncpus N] [--ncuda N]
 *               [--layers N] [--precision fp32|bf16] [--warmup N] [--no-calibrate] [--trace-dir DIR]
 *               [--json FILE]
 * --warmup N: untimed prefills before the timed one in each process (default 1 with GPUs, where
 * the first prefill uploads the weights, 0 on CPUs).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "graph/apb_graph.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct result {
    int ok;
    double makespan_s, overlap, idle, sched_us, work_s, comm_s;
    char sched[64];
};

struct cfg {
    const char *preset, *trace_dir;
    int L, nq, hosts, tile, ncpus, ncuda, layers, precision, warmup;
};

/* One prefill (context on W hosts + the question pass) in a child process. */
static struct result run_child(apb_model *m, const struct cfg *c, apb_method meth, const char *policy,
                               int calibrate, const int32_t *ctx, const int32_t *q)
{
    struct result res = {0};
    int fd[2];
    if (pipe(fd))
        return res;
    pid_t pid = fork();
    if (pid < 0)
        return res;
    if (pid == 0) {
        close(fd[0]);
        apb_err err = {0};
        apb_runtime_opts ro = {.sched = policy, .ncpus = c->ncpus, .ncuda = c->ncuda,
                               .calibrate = calibrate, .precision = c->precision};
        if (apb_runtime_init(&ro, &err) || apb_model_register(m, &err)) {
            fprintf(stderr, "sched: %s: %s\n", policy, err.msg);
            _exit(1);
        }
        apb_hosts_opts o = {.method = meth, .hosts = c->hosts, .anchor = -1, .select = -1,
                            .tile = c->tile};
        apb_sampling smp = {0};
        apb_hseq hs;
        for (int w = 0; w < c->warmup; w++) { /* untimed: uploads the weights to the GPUs */
            if (apb_prefill_hosts(m, &hs, ctx, c->L, q, c->nq, 1, &o, &smp, &err) ||
                apb_runtime_wait_all(&err)) {
                fprintf(stderr, "sched: %s (warm-up): %s\n", policy, err.msg);
                _exit(1);
            }
            apb_hseq_free(m, &hs);
            apb_runtime_wait_all(NULL);
        }
        apb_trace_enable(1);
        double t = now_s();
        int rc = apb_prefill_hosts(m, &hs, ctx, c->L, q, c->nq, 1, &o, &smp, &err);
        if (!rc)
            rc = apb_runtime_wait_all(&err);
        t = now_s() - t;
        if (rc) {
            fprintf(stderr, "sched: %s: %s\n", policy, err.msg);
            _exit(1);
        }
        apb_trace_stats st;
        apb_trace_stats_get(&st);
        struct result r = {1, t, st.overlap_frac, st.idle_frac, st.sched_us_per_task, 0, st.comm_s, ""};
        for (int k = 0; k < 4; k++)
            r.work_s += st.kind_s[k];
        snprintf(r.sched, sizeof r.sched, "%s", apb_runtime_sched_name());
        if (c->trace_dir && !calibrate) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s_%s.json", c->trace_dir, apb_method_name(meth), policy);
            apb_trace_write_chrome(p, &err);
            snprintf(p, sizeof p, "%s/%s_%s.svg", c->trace_dir, apb_method_name(meth), policy);
            apb_trace_write_gantt(p, &err);
        }
        if (write(fd[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(1);
        apb_hseq_free(m, &hs);
        apb_model_free(m);
        apb_runtime_shutdown();
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], &res, sizeof res) != (ssize_t)sizeof res)
        res.ok = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    return res;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    struct cfg c = {.preset = "smollm2-135m", .L = 1024, .nq = 16, .hosts = 4, .tile = 128, .ncpus = -1,
                    .ncuda = 0, .layers = 0, .precision = -1, .warmup = -1};
    const char *methods = "apb,spava", *json = NULL;
    const char *policies = "apb-critical,apb-affinity,apb-affinity-steal,eager,prio,lws,ws,dmda,dmdas,"
                           "modular-heft";
    int repeat = 3, calibrate = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") && v) c.preset = v, i++;
        else if (!strcmp(a, "--prompt-len") && v) c.L = atoi(v), i++;
        else if (!strcmp(a, "--question") && v) c.nq = atoi(v), i++;
        else if (!strcmp(a, "--hosts") && v) c.hosts = atoi(v), i++;
        else if (!strcmp(a, "--tile") && v) c.tile = atoi(v), i++;
        else if (!strcmp(a, "--ncpus") && v) c.ncpus = atoi(v), i++;
        else if (!strcmp(a, "--ncuda") && v) c.ncuda = atoi(v), i++;
        else if (!strcmp(a, "--methods") && v) methods = v, i++;
        else if (!strcmp(a, "--policies") && v) policies = v, i++;
        else if (!strcmp(a, "--repeat") && v) repeat = atoi(v), i++;
        else if (!strcmp(a, "--trace-dir") && v) c.trace_dir = v, i++;
        else if (!strcmp(a, "--json") && v) json = v, i++;
        else if (!strcmp(a, "--no-calibrate")) calibrate = 0;
        else if (!strcmp(a, "--layers") && v) c.layers = atoi(v), i++;
        else if (!strcmp(a, "--warmup") && v) c.warmup = atoi(v), i++;
        else if (!strcmp(a, "--precision") && v && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            c.precision = v[0] == 'f' ? APB_PREC_FP32 : APB_PREC_BF16, i++;
        else {
            fprintf(stderr, "usage: %s [--preset NAME] [--prompt-len N] [--question N] [--hosts W] "
                            "[--tile T] [--methods apb,spava] [--policies a,b] [--repeat R] "
                            "[--ncpus N] [--ncuda N] [--layers N] [--precision fp32|bf16] [--warmup N] [--no-calibrate] "
                            "[--trace-dir DIR] [--json FILE]\n", argv[0]);
            return 2;
        }
    }
    if (c.L < 64 || c.nq < 1 || c.hosts < 2 || c.tile < 16 || repeat < 1 || repeat > 50) {
        fprintf(stderr, "sched: need --prompt-len >= 64, --question >= 1, --hosts >= 2, --tile >= 16, "
                        "1 <= --repeat <= 50\n");
        return 2;
    }
    if (c.warmup < 0) /* GPUs: one untimed prefill first, so the timed one does not upload weights */
        c.warmup = c.ncuda != 0;
    if (!json) /* CPU workers only by default; --ncuda N (or -1: all GPUs) for the GPU results */
        json = c.ncuda == 0 ? "bench/results/sched_cpu.json" : "bench/results/sched_gpu.json";
    setenv("STARPU_SILENT", "1", 0); /* calibration chatter of the model-based policies */
    apb_err err = {0};
    apb_model m;
    /* the preset's shapes; --layers N keeps only the first N layers (the graph of every layer is
     * the same, so a few layers show the scheduling of a large model at a fraction of the memory) */
    memset(&m, 0, sizeof m);
    int mrc = apb_config_preset(c.preset, &m.cfg, &err);
    if (!mrc && c.layers > 0 && c.layers < m.cfg.n_layers)
        m.cfg.n_layers = c.layers;
    if (mrc || apb_weights_random(&m.cfg, 42, &m.w, &err)) {
        fprintf(stderr, "sched: %s\n", err.msg);
        return err.code;
    }
    int32_t *ctx = malloc(sizeof(int32_t) * (size_t)c.L), *q = malloc(sizeof(int32_t) * (size_t)c.nq);
    for (int i = 0; i < c.L; i++)
        ctx[i] = (int32_t)((i * 7919u + 13u) % (unsigned)m.cfg.vocab_size);
    for (int i = 0; i < c.nq; i++)
        q[i] = (int32_t)((i * 104729u + 7u) % (unsigned)m.cfg.vocab_size);
    FILE *js = json ? fopen(json, "w") : NULL;
    if (json && !js)
        fprintf(stderr, "sched: cannot write %s: %s\n", json, strerror(errno));
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    double load[3] = {0};
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("model %s (random weights, %d layers), %d context + %d question tokens, %d hosts, tile %d, %ld cores, "
           "CUDA workers %s, %d warm-up, load average %.2f, median of %d runs\n", m.cfg.name, m.cfg.n_layers, c.L, c.nq, c.hosts,
           c.tile, ncores, c.ncuda == 0 ? "none" : c.ncuda < 0 ? "all" : "some", c.warmup, load[0], repeat);
    if (js)
        fprintf(js, "{\"model\": \"%s\", \"layers\": %d, \"context\": %d, \"question\": %d, \"hosts\": %d, \"tile\": %d, "
                    "\"cores\": %ld, \"ncuda\": %d, \"warmup\": %d, \"load_average\": %.2f, \"repeat\": %d, \"runs\": [",
                m.cfg.name, m.cfg.n_layers, c.L, c.nq, c.hosts, c.tile, ncores, c.ncuda, c.warmup, load[0], repeat);
    int first = 1, failed = 0;
    char *ms = strdup(methods);
    for (char *mt = strtok(ms, ","); mt; mt = strtok(NULL, ",")) {
        apb_method meth;
        if (apb_method_parse(mt, &meth, &err)) {
            fprintf(stderr, "sched: %s\n", err.msg);
            return 2;
        }
        if (calibrate) { /* one dmda pass with STARPU_CALIBRATE=1 so the model-based policies start informed */
            struct result r = run_child(&m, &c, meth, "dmda", 1, ctx, q);
            if (!r.ok)
                fprintf(stderr, "sched: calibration pass failed\n");
        }
        printf("\n%-6s %-14s %10s %10s %9s %7s %8s %10s\n", "method", "policy", "makespan_s", "min_s",
               "overlap%", "idle%", "work_s", "sched_us");
        /* rounds: every policy once per round, so a burst of load on the machine hits them all */
        const char *pol[32];
        int np = 0;
        char *ps = strdup(policies), *save = NULL;
        for (char *p = strtok_r(ps, ",", &save); p && np < 32; p = strtok_r(NULL, ",", &save))
            pol[np++] = p;
        static double mk[32][50], ov[32][50], id[32][50], su[32][50], wk[32][50];
        int ok[32];
        for (int p = 0; p < np; p++)
            ok[p] = 1;
        for (int k = 0; k < repeat; k++)
            for (int p = 0; p < np; p++) {
                if (!ok[p])
                    continue;
                struct result r = run_child(&m, &c, meth, pol[p], 0, ctx, q);
                ok[p] = r.ok;
                mk[p][k] = r.makespan_s; ov[p][k] = r.overlap; id[p][k] = r.idle;
                su[p][k] = r.sched_us; wk[p][k] = r.work_s;
            }
        for (int p = 0; p < np; p++) {
            int n = repeat;
            if (!ok[p]) {
                printf("%-6s %-14s failed\n", mt, pol[p]);
                failed = 1;
                continue;
            }
            double mn = mk[p][0];
            for (int k = 1; k < n; k++)
                mn = mk[p][k] < mn ? mk[p][k] : mn;
            qsort(mk[p], n, sizeof(double), cmp_d); qsort(ov[p], n, sizeof(double), cmp_d);
            qsort(id[p], n, sizeof(double), cmp_d); qsort(su[p], n, sizeof(double), cmp_d);
            qsort(wk[p], n, sizeof(double), cmp_d);
            printf("%-6s %-14s %10.3f %10.3f %8.1f%% %6.1f%% %8.2f %10.2f\n", mt, pol[p], mk[p][n / 2],
                   mn, 100 * ov[p][n / 2], 100 * id[p][n / 2], wk[p][n / 2], su[p][n / 2]);
            fflush(stdout);
            if (js)
                fprintf(js, "%s\n  {\"method\": \"%s\", \"policy\": \"%s\", \"makespan_s\": %.4f, "
                            "\"makespan_min_s\": %.4f, \"overlap\": %.4f, \"idle\": %.4f, "
                            "\"work_s\": %.4f, \"sched_us_per_task\": %.3f}",
                        first ? "" : ",", mt, pol[p], mk[p][n / 2], mn, ov[p][n / 2], id[p][n / 2],
                        wk[p][n / 2], su[p][n / 2]);
            first = 0;
        }
        free(ps);
    }
    free(ms);
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
        printf("\nwrote %s\n", json);
    }
    printf("makespan: prefill wall time (context + question pass); overlap%%: compress/merge time "
           "during which some worker computed; idle%%: 1 - task time / (makespan x workers); work_s: "
           "sum of task times (grows when the machine is shared)\n");
    free(ctx);
    free(q);
    apb_model_free(&m);
    return failed;
}
