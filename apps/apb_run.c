/* SPDX-License-Identifier: MIT */
/** @brief apb_run: prefill + generation of a real model as a StarPU task graph. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/apb_graph.h"
#include "codelets/apb_kernels_cpu.h"
#include "apps/cli.h"
#include "models/chat.h"
#include "schedulers/schedulers.h"

static char *read_file(const char *path, apb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        apb_fail(err, APB_E_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) {
        apb_fail(err, APB_E_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* SVG, or PNG through rsvg-convert (librsvg2-bin) when the name ends in .png. */
static int write_gantt(const char *path, apb_err *err)
{
    size_t n = strlen(path);
    int png = n > 4 && strcmp(path + n - 4, ".png") == 0;
    char svg[PATH_MAX];
    snprintf(svg, sizeof svg, png ? "%s.svg" : "%s", path);
    int rc = apb_trace_write_gantt(svg, err);
    if (rc)
        return rc;
    if (png) {
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "rsvg-convert -w 1600 '%s' -o '%s' 2>/dev/null", svg, path);
        if (strchr(path, '\'') || system(cmd) != 0)
            return apb_fail(err, APB_E_IO, "%s: PNG conversion failed (needs rsvg-convert from "
                            "librsvg2-bin); the SVG is in %s", path, svg);
        remove(svg);
    }
    fprintf(stderr, "apb_run: wrote Gantt chart %s\n", path);
    return APB_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ MPI
 * Under mpirun every rank runs this same program; rank 0 prints the result. A watchdog bounds every
 * wait (start, prefill, each decode step, shutdown) by --mpi-timeout seconds: a rank that waits
 * longer (a peer died, hangs, or never started) prints why and exits non-zero, and mpirun then
 * ends the whole job. StarPU-MPI itself waits forever on a missing message. */
static int g_rank, g_nranks = 1, g_mpi;

static struct {
    pthread_mutex_t mu;
    double deadline;               /* 0: disarmed */
    int secs;
    char what[64];
} g_wd = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(100000);
        pthread_mutex_lock(&g_wd.mu);
        int expired = g_wd.deadline > 0 && now_s() > g_wd.deadline;
        char what[64];
        snprintf(what, sizeof what, "%s", g_wd.what);
        pthread_mutex_unlock(&g_wd.mu);
        if (expired) {
            fprintf(stderr, "apb_run: rank %d: error: %s did not finish within %d s (--mpi-timeout): "
                            "a peer rank failed or is unreachable; aborting\n", g_rank, what, g_wd.secs);
            fflush(stderr);
            _exit(APB_E_RUNTIME); /* mpirun sees the non-zero exit and ends the other ranks */
        }
    }
    return NULL;
}

static void watchdog_start(int secs)
{
    pthread_t t;
    g_wd.secs = secs;
    if (secs > 0 && pthread_create(&t, NULL, watchdog_main, NULL) == 0)
        pthread_detach(t);
}

/* (Re)starts the countdown of --mpi-timeout seconds for the wait called `what` (NULL: disarm). */
static void watchdog_arm(const char *what)
{
    if (!g_wd.secs)
        return;
    pthread_mutex_lock(&g_wd.mu);
    g_wd.deadline = what ? now_s() + g_wd.secs : 0;
    snprintf(g_wd.what, sizeof g_wd.what, "%s", what ? what : "");
    pthread_mutex_unlock(&g_wd.mu);
}

/* Over MPI, rank r > 0 writes its trace as NAME.rank<r>.EXT. */
static const char *rank_path(const char *path, char *buf, size_t cap)
{
    if (g_rank == 0)
        return path;
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        dot = path + strlen(path);
    snprintf(buf, cap, "%.*s.rank%d%s", (int)(dot - path), path, g_rank, dot);
    return buf;
}

static int is_eos(const apb_config *c, int id)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id)
            return 1;
    return 0;
}

/* Needle in a haystack: filler sentences with "The special magic number is DIGITS." at relative
 * depth `depth`, LEN context tokens in all; the question asks for the number. */
static const char *const niah_filler =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

static int build_niah(const apb_model *m, const struct apb_run_opts *o, char *needle_out, size_t cap,
                      int32_t **ctx, size_t *n_ctx, int32_t **q, size_t *n_q, apb_err *err)
{
    char needle[96];
    if (o->needle)
        snprintf(needle_out, cap, "%s", o->needle);
    else
        snprintf(needle_out, cap, "%07llu", (unsigned long long)(apb_rng_u64(o->seed, 99) % 10000000ull));
    snprintf(needle, sizeof needle, " The special magic number is %s.", needle_out);
    int32_t *f = NULL, *nd = NULL, *bos = NULL;
    size_t nf = 0, nn = 0, nb = 0;
    int rc = apb_tokenizer_encode(m->tok, niah_filler, strlen(niah_filler), 0, &f, &nf, err);
    if (!rc)
        rc = apb_tokenizer_encode(m->tok, needle, strlen(needle), 0, &nd, &nn, err);
    if (!rc)
        rc = apb_tokenizer_encode(m->tok, "", 0, 1, &bos, &nb, err); /* BOS etc. if the model adds one */
    const char *qtext = "\nWhat is the special magic number mentioned in the text above? "
                        "The special magic number is";
    if (!rc)
        rc = apb_tokenizer_encode(m->tok, qtext, strlen(qtext), 0, q, n_q, err);
    size_t L = (size_t)o->niah;
    if (!rc && L < nb + nn + nf)
        rc = apb_fail(err, APB_E_USAGE, "--niah %zu is too short for the needle", L);
    if (!rc && !(*ctx = malloc(sizeof(int32_t) * L)))
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    if (!rc) {
        size_t body = L - nb - nn, at = (size_t)(o->depth * (double)body);
        at = at / nf * nf; /* at a sentence-group boundary */
        size_t p = 0;
        memcpy(*ctx, bos, sizeof(int32_t) * nb);
        p = nb;
        for (size_t i = 0; i < body; i++) {
            if (i == at) {
                memcpy(*ctx + p, nd, sizeof(int32_t) * nn);
                p += nn;
            }
            (*ctx)[p++] = f[i % nf];
        }
        if (at >= body) {
            memcpy(*ctx + p, nd, sizeof(int32_t) * nn);
            p += nn;
        }
        *n_ctx = p;
    }
    free(f);
    free(nd);
    free(bos);
    return rc;
}

static int encode_text(const apb_model *m, const struct apb_run_opts *o, int32_t **ids, size_t *n_ids,
                       apb_err *err)
{
    if (o->prompt_len) {
        if (o->prompt_len > m->cfg.max_pos) /* before drawing a billion ids */
            return apb_fail(err, APB_E_USAGE, "--prompt-len %d exceeds the model's context of %d",
                            o->prompt_len, m->cfg.max_pos);
        *n_ids = (size_t)o->prompt_len;
        *ids = malloc(sizeof **ids * *n_ids);
        if (!*ids)
            return apb_fail(err, APB_E_NOMEM, "out of memory");
        for (size_t i = 0; i < *n_ids; i++)
            (*ids)[i] = (int32_t)(apb_rng_u64(o->seed, i) % (unsigned)m->cfg.vocab_size);
        return APB_OK;
    }
    char *text = o->prompt_file ? read_file(o->prompt_file, err) : strdup(o->prompt);
    if (!text)
        return err->code ? err->code : apb_fail(err, APB_E_NOMEM, "out of memory");
    int add_special = 1;
    if (o->chat) {
        char *t2 = apb_chat_format(m->tok, o->system, text, err);
        free(text);
        if (!t2)
            return err->code;
        text = t2;
        add_special = 0; /* the chat format carries its own special tokens */
    }
    int rc = apb_tokenizer_encode(m->tok, text, strlen(text), add_special, ids, n_ids, err);
    free(text);
    return rc;
}

/* Bytes of activations and KV cache this rank will hold (apb_run_memory_estimate for the run's
 * hosts, or one host for a plain full run; over MPI a rank's share of at most ceil(W / N)
 * hosts); *cache (may be NULL) gets the KV-cache part of it. */
static double _run_memory(const apb_config *c, int L, int nq, const struct apb_run_opts *o,
                          const apb_hosts_opts *hopt, int hosts_path, int kv_bf16, double *cache)
{
    apb_hosts_opts mo = *hopt;
    if (!hosts_path)
        mo = (apb_hosts_opts){.method = APB_METHOD_FULL, .hosts = 1, .tile = o->tile};
    double kc = 0, need = apb_run_memory_estimate(c, L, nq, o->max_new, &mo, kv_bf16, &kc);
    double share = g_nranks > 1 && hosts_path ? (double)((mo.hosts + g_nranks - 1) / g_nranks) / mo.hosts : 1.0;
    if (cache)
        *cache = kc * share;
    return need * share;
}

static int run(const struct apb_run_opts *o, apb_err *err)
{
    apb_model m;
    int rc;
    char defdir[PATH_MAX];
    const char *dir = o->model;
    if (!o->random && !dir) {
        const char *home = getenv("APB_HOME");
        if (home)
            snprintf(defdir, sizeof defdir, "%s/models/smollm2-135m-instruct", home);
        else
            snprintf(defdir, sizeof defdir, "%s/.cache/apb/models/smollm2-135m-instruct",
                     getenv("HOME") ? getenv("HOME") : ".");
        dir = defdir;
    }
    double t_load = now_s();
    rc = o->random ? apb_model_random(o->random, o->seed, &m, err) : apb_model_load(dir, &m, err);
    if (rc)
        return rc;
    if (!rc && o->retain_weights)
        rc = apb_model_load_retain(&m, o->retain_weights, err);
    if (rc) {
        apb_model_free(&m);
        return rc;
    }
    t_load = now_s() - t_load;

    /* context and question ids */
    int32_t *ids = NULL, *qids = NULL;
    size_t n_ids = 0, n_q = 0;
    char needle[64] = "";
    int hosts_path = o->meth != APB_METHOD_FULL || o->question || o->niah;
    if (o->niah)
        rc = build_niah(&m, o, needle, sizeof needle, &ids, &n_ids, &qids, &n_q, err);
    else
        rc = encode_text(&m, o, &ids, &n_ids, err);
    if (!rc && o->question)
        rc = apb_tokenizer_encode(m.tok, o->question, strlen(o->question), 0, &qids, &n_q, err);
    if (!rc && hosts_path && !qids) { /* the prompt's last token is the question */
        if (n_ids < 2)
            rc = apb_fail(err, APB_E_USAGE, "--method %s needs at least 2 prompt tokens (context + "
                                            "question) or --question", o->method);
        else if ((qids = malloc(sizeof *qids)) == NULL)
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        else {
            qids[0] = ids[--n_ids];
            n_q = 1;
        }
    }
    if (!rc && n_ids == 0)
        rc = apb_fail(err, APB_E_USAGE, "the prompt is empty after tokenization");
    apb_hosts_opts hopt = {.method = o->meth, .hosts = o->hosts, .anchor = o->anchor,
                           .select = o->select, .tile = o->tile, .retain = o->retain,
                           .placement = o->placement, .allgather = o->allgather};
    /* every setting is checked before any work starts */
    /* tile t's attention reads every earlier tile: the graph grows with the square of the count */
    if (!rc && ((long)n_ids + o->tile - 1) / o->tile > 1024)
        rc = apb_fail(err, APB_E_USAGE, "--tile %d: %zu tokens make %ld tiles, at most 1024 (the "
                      "task graph grows with the square of the tile count); use --tile %zu or more",
                      o->tile, n_ids, ((long)n_ids + o->tile - 1) / o->tile, (n_ids + 1023) / 1024);
    if (!rc && hosts_path)
        rc = apb_hosts_resolve(&m.cfg, (int)n_ids, (int)n_q, o->max_new, &hopt, err);
    else if (!rc && (long)n_ids + o->max_new > m.cfg.max_pos)
        rc = apb_fail(err, APB_E_USAGE, "%zu prompt tokens + %d new tokens exceed the model's "
                      "context of %d", n_ids, o->max_new, m.cfg.max_pos);
    if (!rc) {
        /* the precision is settled when the runtime starts (auto: bf16 on GPUs); before that
         * only an explicit --precision bf16 counts the cache in bf16 */
        double need = _run_memory(&m.cfg, (int)n_ids, (int)n_q, o, &hopt, hosts_path,
                                  o->precision == APB_PREC_BF16, NULL);
        double avail = apb_host_memory_available();
        if (avail > 0 && need > 0.9 * avail)
            rc = apb_fail(err, APB_E_NOMEM, "this run needs about %.2f GiB of activations and KV "
                          "cache but only %.2f GiB of host memory is available (weights already "
                          "loaded); use a shorter context or fewer new tokens",
                          need / 1073741824.0, avail / 1073741824.0);
        else if (o->progress && g_rank == 0)
            fprintf(stderr, "apb_run: memory estimate %.2f GiB (available %.2f GiB)\n",
                    need / 1073741824.0, avail / 1073741824.0);
    }
    if (rc) {
        free(ids);
        free(qids);
        apb_model_free(&m);
        return rc;
    }

    int lead = g_rank == 0; /* prints the result; the other ranks print nothing on stdout */
    apb_runtime_opts ro = {.sched = o->sched, .sched_lib = o->sched_lib, .ncpus = o->ncpus,
                           .ncuda = -1, .precision = o->precision, .mpi = g_mpi,
                           .calibrate = o->calibrate, .gpu_mem_gib = o->gpu_mem,
                           .verbose = o->verbose};
    int ndev = apb_runtime_cuda_devices(), dev = o->device;
    if (dev == APB_DEVICE_AUTO)
        dev = ndev > 0 ? APB_DEVICE_CUDA : APB_DEVICE_CPU;
    if (dev == APB_DEVICE_CPU) {
        ro.ncuda = 0;
    } else if (ndev == 0) {
        rc = apb_fail(err, APB_E_USAGE, "--device cuda: no usable GPU found%s",
                      apb_runtime_has_cuda() ? "" : " (apb was built without CUDA)");
    } else if (o->ngpus > ndev) {
        rc = apb_fail(err, APB_E_USAGE, "--ngpus %d: only %d GPU(s) found", o->ngpus, ndev);
    } else {
        ro.ncuda = o->ngpus > 0 ? o->ngpus : ndev;
        if (o->ncpus < 0)
            ro.ncpus = 0; /* every task on the GPUs; --ncpus N adds CPU workers */
    }
    watchdog_arm("the start of MPI (every rank joining)");
    if (rc || (rc = apb_runtime_init(&ro, err))) {
        free(ids);
        free(qids);
        apb_model_free(&m);
        return rc;
    }
    watchdog_arm(NULL);
    double gpu_mem = apb_runtime_gpu_memory();
    if (!rc && gpu_mem > 0) {
        /* GPU runs keep activations, KV cache and weights on the GPUs: refuse what cannot fit
         * rather than let StarPU evict to host memory on every task */
        double cache = 0;
        double act = _run_memory(&m.cfg, (int)n_ids, (int)n_q, o, &hopt, hosts_path,
                                 apb_runtime_precision() == APB_PREC_BF16, &cache);
        if (o->gpu_mem > 0 && m.cfg.n_layers > 2) /* the limit keeps about two layers' cache, the rest goes to RAM */
            act -= cache * (1.0 - 2.0 / m.cfg.n_layers);
        double wts = apb_config_n_params(&m.cfg) * (apb_runtime_precision() == APB_PREC_BF16 ? 2.0 : 4.0);
        if (act + wts > 0.95 * gpu_mem)
            rc = apb_fail(err, APB_E_NOMEM, "this run needs about %.1f GiB of GPU memory (weights %.1f GiB, "
                          "activations and KV cache %.1f GiB) but the GPUs have %.1f GiB; use more "
                          "GPUs (--ngpus), --precision bf16, or a shorter context",
                          (act + wts) / 1073741824.0, wts / 1073741824.0, act / 1073741824.0,
                          gpu_mem / 1073741824.0);
    }
    if (!rc)
        rc = apb_model_register(&m, err);
    int tracing = o->trace || o->gantt || o->summary;
    if (tracing)
        apb_trace_enable(1);
    if (lead) {
        fprintf(stderr, "apb_run: model %s (%d layers, dim %d, %d/%d heads), %zu context + %zu "
                        "question tokens, method %s", m.cfg.name, m.cfg.n_layers, m.cfg.dim,
                m.cfg.n_heads, m.cfg.n_kv_heads, n_ids, n_q, apb_method_name(o->meth));
        if (hosts_path)
            fprintf(stderr, ", hosts %d, anchor %d, select %d", hopt.hosts, hopt.anchor, hopt.select);
        if (apb_runtime_nranks() > 1)
            fprintf(stderr, ", %d MPI ranks", apb_runtime_nranks());
        int gw[64];
        fprintf(stderr, ", sched %s, %d workers (%d GPU)%s, %s, loaded in %.2f s\n",
                apb_runtime_sched_name(), apb_runtime_nworkers(), apb_runtime_cuda_workers(gw, 64),
                apb_runtime_nranks() > 1 ? " per rank" : "",
                apb_runtime_precision() == APB_PREC_BF16 ? "bf16" : "fp32", t_load);
    }
    FILE *dump = NULL;
    float *dump_buf = NULL;
    if (!rc && o->dump_logits) {
        dump_buf = malloc(sizeof(float) * (size_t)m.cfg.vocab_size);
        if (!dump_buf)
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        else if (lead && !(dump = fopen(o->dump_logits, "wb")))
            rc = apb_fail(err, APB_E_IO, "%s: %s", o->dump_logits, strerror(errno));
    }

    apb_sampling smp = {.temperature = o->temperature, .top_p = o->top_p, .seed = o->seed};
    apb_seq seq = {0};
    apb_hseq hs = {0};
    int want = o->max_new > 0 ? o->max_new : hosts_path ? 1 : 0;
    int32_t *out_ids = malloc(sizeof(int32_t) * ((size_t)want + 1));
    int n_out = 0;
    double t0 = now_s(), t_prefill = 0, t_decode = 0;
    if (!rc && !out_ids)
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    watchdog_arm("the prefill");
    if (!rc && hosts_path)
        rc = apb_prefill_hosts(&m, &hs, ids, (int)n_ids, qids, (int)n_q, want, &hopt, &smp, err);
    else if (!rc)
        rc = apb_prefill_full(&m, &seq, ids, (int)n_ids, o->tile, o->max_new, &smp, err);
    if (!rc)
        rc = apb_wait_progress("prefill", o->progress && lead, err);
    t_prefill = now_s() - t0;
    char *printed = NULL;
    size_t printed_len = 0;
    if (o->niah && lead)
        printf("Ground Truth: %s\nPrediction:", needle);
    t0 = now_s();
    while (!rc && want > 0) {
        int32_t tok;
        if (dump_buf) { /* collective over MPI: every rank reads, rank 0 writes */
            rc = apb_tile_read(hosts_path ? hs.logits : seq.logits, dump_buf,
                               sizeof(float) * (size_t)m.cfg.vocab_size, err);
            if (!rc && dump && fwrite(dump_buf, sizeof(float), (size_t)m.cfg.vocab_size, dump) !=
                                   (size_t)m.cfg.vocab_size)
                rc = apb_fail(err, APB_E_IO, "%s: write failed", o->dump_logits);
            if (rc)
                break;
        }
        rc = apb_tile_read(hosts_path ? hs.token : seq.token, &tok, sizeof tok, err);
        if (rc)
            break;
        out_ids[n_out++] = tok;
        if (!lead) {
            /* the other ranks only follow the loop */
        } else if (m.tok) {
            /* print the new suffix of the decoded text (tokens may be partial UTF-8) */
            char *txt = apb_tokenizer_decode(m.tok, out_ids, (size_t)n_out, 1);
            if (txt) {
                size_t len = strlen(txt);
                if (len > printed_len && (!printed || strncmp(txt, printed, printed_len) == 0)) {
                    fwrite(txt + printed_len, 1, len - printed_len, stdout);
                    fflush(stdout);
                    printed_len = len;
                }
                free(printed);
                printed = txt;
            }
        } else {
            printf("%d ", tok);
            fflush(stdout);
        }
        if (is_eos(&m.cfg, tok) || n_out >= want)
            break;
        char step[48];
        snprintf(step, sizeof step, "decode step %d", n_out);
        watchdog_arm(step);
        rc = hosts_path ? apb_decode_hosts(&m, &hs, &smp, err) : apb_decode_step(&m, &seq, &smp, err);
        if (!rc)
            rc = apb_runtime_wait_all(err);
    }
    t_decode = now_s() - t0;
    if (dump && fclose(dump) != 0 && !rc)
        rc = apb_fail(err, APB_E_IO, "%s: write failed", o->dump_logits);
    free(dump_buf);
    if (lead) {
        printf("\n");
        fflush(stdout); /* the text ends before the timing line on stderr */
    }
    if (!rc && o->niah && lead) {
        int hit = printed && strstr(printed, needle) != NULL;
        printf("NIAH: method %s, hosts %d, %zu tokens, depth %.2f: %s\n", apb_method_name(o->meth),
               hopt.hosts, n_ids + n_q, o->depth, hit ? "retrieved" : "missed");
    }
    free(printed);
    if (!rc && lead)
        fprintf(stderr, "apb_run: prefill %zu tokens in %.3f s (%.1f tokens/s); decode %d tokens in "
                        "%.3f s (%.2f tokens/s)\n",
                n_ids + n_q, t_prefill, (n_ids + n_q) / t_prefill, n_out > 0 ? n_out - 1 : 0, t_decode,
                n_out > 1 ? (n_out - 1) / t_decode : 0.0);
    if (!rc && o->calibrate && lead)
        fprintf(stderr, "apb_run: calibration pass done; models in %s/.starpu/sampling/codelets "
                        "(starpu_perfmodel_display -s apb_attention)\n",
                getenv("STARPU_HOME") ? getenv("STARPU_HOME") : "$HOME");
    if (!rc && tracing) {
        char tb[PATH_MAX], gb[PATH_MAX];
        const char *tp = o->trace ? rank_path(o->trace, tb, sizeof tb) : NULL;
        const char *gp = o->gantt ? rank_path(o->gantt, gb, sizeof gb) : NULL;
        if (lead)
            apb_trace_summary(stderr);
        if (tp && !(rc = apb_trace_write_chrome(tp, err)))
            fprintf(stderr, "apb_run: wrote trace %s\n", tp);
        if (!rc && gp)
            rc = write_gantt(gp, err);
    }
    if (rc && g_nranks > 1) /* no collective cleanup: the other ranks may be waiting elsewhere */
        return rc;
    watchdog_arm("the shutdown (every rank finishing)");
    if (seq.x)
        apb_seq_free(&m, &seq);
    if (hs.h)
        apb_hseq_free(&m, &hs);
    free(out_ids);
    free(ids);
    free(qids);
    apb_model_free(&m);
    apb_runtime_shutdown();
    watchdog_arm(NULL);
    return rc;
}

int main(int argc, char **argv)
{
    struct apb_run_opts o;
    apb_err err = {0};
    int rc = apb_run_parse_args(argc, argv, &o, &err);
    if (!rc && o.help) {
        fputs(apb_run_usage, stdout);
        return 0;
    }
    if (!rc && o.version) {
        printf("apb_run 0.1.0 (StarPU-MPI: %s)\n", apb_runtime_mpi_built() ? "yes" : "no");
        return 0;
    }
    if (!rc && o.sched && strcmp(o.sched, "list") == 0) {
        if (o.sched_lib && (rc = apb_sched_load_lib(o.sched_lib, NULL, &err))) {
            fprintf(stderr, "apb_run: error: %s\n", err.msg);
            return rc;
        }
        apb_sched_list(stdout);
        return 0;
    }
    if (!rc && !o.help && !o.version) { /* bounded by this machine, before any work */
        cpu_set_t cs;
        int ncores = sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs)
                                                               : (int)sysconf(_SC_NPROCESSORS_ONLN);
        rc = apb_run_check_machine(&o, ncores, &err);
    }
    g_mpi = apb_runtime_mpi_launched(&g_rank, &g_nranks);
    if (!rc && g_mpi && !apb_runtime_mpi_built())
        rc = apb_fail(&err, APB_E_USAGE, "started by an MPI launcher with %d processes, but this "
                      "apb_run was built without StarPU-MPI (starpumpi-1.3 not found by configure)",
                      g_nranks);
    if (!rc && g_mpi)
        watchdog_start(o.mpi_timeout);
    if (!rc)
        rc = run(&o, &err);
    if (rc) {
        if (g_nranks > 1) {
            /* leave at once, without MPI_Finalize: mpirun sees the exit and ends the other ranks,
             * which may be blocked in a collective this rank will never join */
            fprintf(stderr, "apb_run: rank %d: error: %s\n", g_rank, err.msg);
            fflush(NULL);
            _exit(rc);
        }
        fprintf(stderr, "apb_run: error: %s\n", err.msg);
        return rc;
    }
    return 0;
}
