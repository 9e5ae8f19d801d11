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

#include <jansson.h>

#include "graph/apb_graph.h"
#include "codelets/apb_kernels_cpu.h"
#include "common/apb_meminfo.h"
#include "apps/cases.h"
#include "apps/cli.h"
#include "models/chat.h"
#include "schedulers/schedulers.h"

static char *read_file_len(const char *path, size_t *len, apb_err *err)
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
    if (len)
        *len = n;
    return buf;
}

static char *read_file(const char *path, apb_err *err)
{
    return read_file_len(path, NULL, err);
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

/* Waits for submitted work, printing "label: NN% (done/total tasks)" on stderr every ~0.2 s
 * when progress != 0. */
static int wait_progress(const char *label, int progress, apb_err *err)
{
    if (progress) {
        int total = apb_runtime_pending(), last_pct = -1;
        while (1) {
            int left = apb_runtime_pending();
            int pct = total > 0 ? (int)(100.0 * (total - left) / total) : 100;
            if (pct != last_pct) {
                fprintf(stderr, "\r%s: %3d%% (%d/%d tasks)", label, pct, total - left, total);
                last_pct = pct;
            }
            if (left == 0)
                break;
            usleep(200000);
        }
        fprintf(stderr, "\n");
    }
    return apb_runtime_wait_all(err);
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

/* --chat: the model's chat_template rendered (models/chat.c) when it is a known form; else the
 * vocabulary's format, with a line on stderr saying so. */
static char *chat_text(const apb_model *m, const char *dir, const struct apb_run_opts *o,
                       const char *text, apb_err *err)
{
    char *tmpl = NULL, *bos = NULL, *out = NULL;
    if (apb_chat_config_load(dir, &tmpl, &bos, err))
        return NULL;
    apb_err e2 = {0};
    if (tmpl && (out = apb_chat_render(tmpl, bos, o->system, text, &e2)) == NULL && e2.code != APB_E_MODEL) {
        *err = e2;
    } else if (!out) {
        if (g_rank == 0)
            fprintf(stderr, "apb_run: --chat: %s; using the %s format of the vocabulary%s\n",
                    tmpl ? e2.msg : "tokenizer_config.json has no chat_template",
                    apb_tokenizer_token_id(m->tok, "<|im_start|>") >= 0 ? "ChatML" : "Llama-3",
                    o->system ? "" : " with a built-in system message");
        out = apb_chat_format(m->tok, o->system, text, err);
    }
    free(tmpl);
    free(bos);
    return out;
}

static int encode_text(const apb_model *m, const char *dir, const struct apb_run_opts *o, int32_t **ids,
                       size_t *n_ids, apb_err *err)
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
        char *t2 = chat_text(m, dir, o, text, err);
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

/* The state of one run, passed through its steps. */
struct run_state {
    apb_model m;
    char model_dir[PATH_MAX];      /* empty with --random-weights */
    int loaded;
    double t_load;
    int32_t *ids, *qids;           /* context and question ids */
    size_t n_ids, n_q;
    char needle[64];
    int hosts_path;                /* apb_prefill_hosts (every method but a plain full prompt) */
    apb_hosts_opts hopt;
    int lead;                      /* prints the result; the other ranks print nothing on stdout */
    int tracing;
    int teling; /* GPU telemetry sampling since the start (with tracing on GPUs) */
    apb_sampling smp;
    apb_seq seq;
    apb_hseq hs;
    int want;                      /* tokens to sample */
    int32_t *out_ids;
    int n_out;
    char *printed;                 /* the decoded text printed so far */
    int quiet;                     /* --cases: the text goes to `shown`, not to stdout */
    char *shown;                   /* --cases: what a single run would have printed on stdout */
    size_t n_shown, cap_shown;
    int shown_oom;                 /* a piece of the text could not be kept */
    FILE *dump;                    /* --dump-logits (rank 0) */
    float *dump_buf;
    double t_prefill, t_decode;
    apb_embeds emb;                /* --embeds: the context rows */
};

/* Step 1: the model (and the retaining heads). */
static int run_load(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
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
    if (dir)
        snprintf(s->model_dir, sizeof s->model_dir, "%s", dir);
    s->t_load = now_s();
    int rc = o->random ? apb_model_random(o->random, o->seed, &s->m, err) : apb_model_load(dir, &s->m, err);
    if (rc)
        return rc;
    s->loaded = 1;
    if (o->retain) { /* --retain-weights, or the heads shipped for this model (models/retain/) */
        char rpath[PATH_MAX + 320];
        const char *rw = o->retain_weights;
        if (!rw && o->random)
            return apb_fail(err, APB_E_USAGE, "--compress retain with --random-weights needs --retain-weights FILE");
        if (!rw && (rc = apb_retain_default_path(dir, rpath, sizeof rpath, err))) {
            apb_err_prefix(err, "--compress retain without --retain-weights: ");
            return rc;
        }
        if ((rc = apb_model_load_retain(&s->m, rw ? rw : rpath, err)))
            return rc;
    }
    s->t_load = now_s() - s->t_load;
    return APB_OK;
}

/* --embeds: the file's rows are the context; its ids are the row indices 0 .. n-1. */
static int load_embeds(const apb_model *m, const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    int rc = apb_embeds_load(o->embeds, m->cfg.dim, m->cfg.mrope, m->cfg.max_pos, &s->emb, err);
    if (rc)
        return rc;
    s->n_ids = (size_t)s->emb.n;
    if (!(s->ids = malloc(sizeof *s->ids * s->n_ids)))
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    for (size_t i = 0; i < s->n_ids; i++)
        s->ids[i] = (int32_t)i;
    return APB_OK;
}

/* Step 2: context and question ids, every setting checked, the host memory estimate. */
static int run_prompt(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    apb_model *m = &s->m;
    int rc;
    s->hosts_path = o->meth != APB_METHOD_FULL || o->question || o->niah;
    if (o->niah)
        rc = build_niah(m, o, s->needle, sizeof s->needle, &s->ids, &s->n_ids, &s->qids, &s->n_q, err);
    else if (o->embeds)
        rc = load_embeds(m, o, s, err);
    else
        rc = encode_text(m, s->model_dir, o, &s->ids, &s->n_ids, err);
    if (!rc && o->question && !m->tok && o->embeds) { /* random weights have no tokenizer: byte ids */
        s->n_q = strlen(o->question);
        if (!(s->qids = malloc(sizeof *s->qids * (s->n_q ? s->n_q : 1))))
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < s->n_q; i++)
            s->qids[i] = (unsigned char)o->question[i] % m->cfg.vocab_size;
    } else if (!rc && o->question)
        rc = apb_tokenizer_encode(m->tok, o->question, strlen(o->question), 0, &s->qids, &s->n_q, err);
    if (!rc && s->hosts_path && !s->qids) { /* the prompt's last token is the question */
        if (s->n_ids < 2)
            rc = apb_fail(err, APB_E_USAGE, "--method %s needs at least 2 prompt tokens (context + "
                                            "question) or --question", o->method);
        else if ((s->qids = malloc(sizeof *s->qids)) == NULL)
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        else {
            s->qids[0] = s->ids[--s->n_ids];
            s->n_q = 1;
        }
    }
    if (!rc && s->n_ids == 0)
        rc = apb_fail(err, APB_E_USAGE, "the prompt is empty after tokenization");
    s->hopt = (apb_hosts_opts){.method = o->meth, .hosts = o->hosts, .anchor = o->anchor,
                               .select = o->select, .tile = o->tile, .retain = o->retain,
                               .placement = o->placement, .allgather = o->allgather,
                               .pool = o->pool, .short_chunk = o->short_chunk,
                               .embeds = o->embeds ? &s->emb : NULL};
    /* every setting is checked before any work starts */
    /* tile t's attention reads every earlier tile: the graph grows with the square of the count */
    if (!rc && ((long)s->n_ids + o->tile - 1) / o->tile > 1024)
        rc = apb_fail(err, APB_E_USAGE, "--tile %d: %zu tokens make %ld tiles, at most 1024 (the "
                      "task graph grows with the square of the tile count); use --tile %zu or more",
                      o->tile, s->n_ids, ((long)s->n_ids + o->tile - 1) / o->tile, (s->n_ids + 1023) / 1024);
    if (!rc && s->hosts_path)
        rc = apb_hosts_resolve(&m->cfg, (int)s->n_ids, (int)s->n_q, o->max_new, &s->hopt, err);
    else if (!rc && (long)s->n_ids + o->max_new > m->cfg.max_pos)
        rc = apb_fail(err, APB_E_USAGE, "%zu prompt tokens + %d new tokens exceed the model's "
                      "context of %d", s->n_ids, o->max_new, m->cfg.max_pos);
    if (!rc) {
        /* the precision is settled when the runtime starts (auto: bf16 on GPUs); before that
         * only an explicit --precision bf16 counts the cache in bf16 */
        double need = _run_memory(&m->cfg, (int)s->n_ids, (int)s->n_q, o, &s->hopt, s->hosts_path,
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
    return rc;
}

static int run_gpu_check(const struct apb_run_opts *o, struct run_state *s, apb_err *err);

/* Step 3: the runtime on the chosen device, the GPU memory check, the weights registered.
 * *started tells whether apb_runtime_init succeeded (the runtime then needs a shutdown).
 * --cases: n_cases cases follow, each checked against the GPU memory by itself. */
static int run_start(const struct apb_run_opts *o, struct run_state *s, int n_cases, int *started,
                     apb_err *err)
{
    apb_model *m = &s->m;
    int rc = APB_OK;
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
    if (rc || (rc = apb_runtime_init(&ro, err)))
        return rc;
    *started = 1;
    watchdog_arm(NULL);
    if (!o->cases)
        rc = run_gpu_check(o, s, err);
    if (!rc)
        rc = apb_model_register(m, err);
    s->tracing = o->trace || o->gantt || o->summary;
    if (s->tracing)
        apb_trace_enable(1);
    /* with a trace on GPUs: their power and SM clock beside the tasks (NVML; silent without it) */
    s->teling = s->tracing && apb_runtime_cuda_devices_used() > 0 && apb_telemetry_start(20, 1, NULL) == APB_OK;
    if (s->lead) {
        if (o->cases)
            fprintf(stderr, "apb_run: model %s (%d layers, dim %d, %d/%d heads), %d cases of %s, "
                            "method %s", m->cfg.name, m->cfg.n_layers, m->cfg.dim, m->cfg.n_heads,
                    m->cfg.n_kv_heads, n_cases, o->cases, apb_method_name(o->meth));
        else
            fprintf(stderr, "apb_run: model %s (%d layers, dim %d, %d/%d heads), %zu context + %zu "
                            "question tokens, method %s", m->cfg.name, m->cfg.n_layers, m->cfg.dim,
                    m->cfg.n_heads, m->cfg.n_kv_heads, s->n_ids, s->n_q, apb_method_name(o->meth));
        if (s->hosts_path && !o->cases)
            fprintf(stderr, ", hosts %d, anchor %d, select %d", s->hopt.hosts, s->hopt.anchor,
                    s->hopt.select);
        else if (o->cases && o->meth != APB_METHOD_FULL)
            fprintf(stderr, ", hosts %d", o->hosts);
        if (apb_runtime_nranks() > 1)
            fprintf(stderr, ", %d MPI ranks", apb_runtime_nranks());
        int gw[64];
        fprintf(stderr, ", sched %s, %d workers (%d GPU)%s, %s, loaded in %.2f s\n",
                apb_runtime_sched_name(), apb_runtime_nworkers(), apb_runtime_cuda_workers(gw, 64),
                apb_runtime_nranks() > 1 ? " per rank" : "",
                apb_runtime_precision() == APB_PREC_BF16 ? "bf16" : "fp32", s->t_load);
    }
    return rc;
}

/* GPU runs keep activations, KV cache and weights on the GPUs: refuse what cannot fit rather
 * than let StarPU evict to host memory on every task (once a run; for --cases, once a case). */
static int run_gpu_check(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    apb_model *m = &s->m;
    int rc = APB_OK;
    double gpu_mem = apb_runtime_gpu_memory();
    if (gpu_mem > 0) {
        double cache = 0;
        double act = _run_memory(&m->cfg, (int)s->n_ids, (int)s->n_q, o, &s->hopt, s->hosts_path,
                                 apb_runtime_precision() == APB_PREC_BF16, &cache);
        if (o->gpu_mem > 0 && m->cfg.n_layers > 2) /* the limit keeps about two layers' cache, the rest goes to RAM */
            act -= cache * (1.0 - 2.0 / m->cfg.n_layers);
        double wts = apb_config_n_params(&m->cfg) * (apb_runtime_precision() == APB_PREC_BF16 ? 2.0 : 4.0);
        if (act + wts > 0.95 * gpu_mem)
            rc = apb_fail(err, APB_E_NOMEM, "this run needs about %.1f GiB of GPU memory (weights %.1f GiB, "
                          "activations and KV cache %.1f GiB) but the GPUs have %.1f GiB; use more "
                          "GPUs (--ngpus), --precision bf16, or a shorter context",
                          (act + wts) / 1073741824.0, wts / 1073741824.0, act / 1073741824.0,
                          gpu_mem / 1073741824.0);
    }
    return rc;
}

/* --dump-logits: the file (rank 0) and a row buffer (every rank reads the logits). */
static int run_dump_open(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    if (!o->dump_logits)
        return APB_OK;
    s->dump_buf = malloc(sizeof(float) * (size_t)s->m.cfg.vocab_size);
    if (!s->dump_buf)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    if (s->lead && !(s->dump = fopen(o->dump_logits, "wb")))
        return apb_fail(err, APB_E_IO, "%s: %s", o->dump_logits, strerror(errno));
    return APB_OK;
}

/* Step 4: the prefill (and the first sampled token), waited for. */
static int run_prefill(const struct apb_run_opts *o, struct run_state *s, int rc, apb_err *err)
{
    double t0 = now_s();
    if (!rc && !s->out_ids)
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    watchdog_arm("the prefill");
    if (!rc && s->hosts_path)
        rc = apb_prefill_hosts(&s->m, &s->hs, s->ids, (int)s->n_ids, s->qids, (int)s->n_q, s->want,
                               &s->hopt, &s->smp, err);
    else if (!rc)
        rc = apb_prefill_full(&s->m, &s->seq, s->ids, (int)s->n_ids, o->tile, o->max_new, &s->smp, err);
    if (!rc)
        rc = wait_progress("prefill", o->progress && s->lead, err);
    s->t_prefill = now_s() - t0;
    return rc;
}

/* The generated text: on stdout, or (--cases) kept in s->shown, byte for byte the same. */
static void emit(struct run_state *s, const char *txt, size_t n)
{
    if (!s->quiet) {
        fwrite(txt, 1, n, stdout);
        fflush(stdout);
        return;
    }
    if (s->n_shown + n + 1 > s->cap_shown) {
        size_t cap = 2 * (s->n_shown + n + 1) + 64;
        char *nb = realloc(s->shown, cap);
        if (!nb) {
            s->shown_oom = 1;
            return;
        }
        s->shown = nb;
        s->cap_shown = cap;
    }
    memcpy(s->shown + s->n_shown, txt, n);
    s->n_shown += n;
    s->shown[s->n_shown] = 0;
}

/* Prints the new suffix of the decoded text (tokens may be partial UTF-8), or the token id. */
static void print_token(struct run_state *s, int32_t tok, size_t *printed_len)
{
    if (!s->lead) {
        /* the other ranks only follow the loop */
    } else if (s->m.tok) {
        char *txt = apb_tokenizer_decode(s->m.tok, s->out_ids, (size_t)s->n_out, 1);
        if (txt) {
            size_t len = strlen(txt);
            if (len > *printed_len && (!s->printed || strncmp(txt, s->printed, *printed_len) == 0)) {
                emit(s, txt + *printed_len, len - *printed_len);
                *printed_len = len;
            }
            free(s->printed);
            s->printed = txt;
        }
    } else {
        printf("%d ", tok);
        fflush(stdout);
    }
}

/* Step 5: read each sampled token (and its logits with --dump-logits), print it, decode the next. */
static int run_decode(const struct apb_run_opts *o, struct run_state *s, int rc, apb_err *err)
{
    apb_model *m = &s->m;
    FILE *dump = s->dump;
    float *dump_buf = s->dump_buf;
    size_t printed_len = 0;
    if (o->niah && s->lead)
        printf("Ground Truth: %s\nPrediction:", s->needle);
    double t0 = now_s();
    while (!rc && s->want > 0) {
        int32_t tok;
        if (dump_buf) { /* collective over MPI: every rank reads, rank 0 writes */
            rc = apb_tile_read(s->hosts_path ? s->hs.logits : s->seq.logits, dump_buf,
                               sizeof(float) * (size_t)m->cfg.vocab_size, err);
            if (!rc && dump && fwrite(dump_buf, sizeof(float), (size_t)m->cfg.vocab_size, dump) !=
                                   (size_t)m->cfg.vocab_size)
                rc = apb_fail(err, APB_E_IO, "%s: write failed", o->dump_logits);
            if (rc)
                break;
        }
        rc = apb_tile_read(s->hosts_path ? s->hs.token : s->seq.token, &tok, sizeof tok, err);
        if (rc)
            break;
        s->out_ids[s->n_out++] = tok;
        print_token(s, tok, &printed_len);
        if (is_eos(&m->cfg, tok) || s->n_out >= s->want)
            break;
        char step[48];
        snprintf(step, sizeof step, "decode step %d", s->n_out);
        watchdog_arm(step);
        rc = s->hosts_path ? apb_decode_hosts(m, &s->hs, &s->smp, err)
                           : apb_decode_step(m, &s->seq, &s->smp, err);
        if (!rc)
            rc = apb_runtime_wait_all(err);
    }
    s->t_decode = now_s() - t0;
    if (dump && fclose(dump) != 0 && !rc)
        rc = apb_fail(err, APB_E_IO, "%s: write failed", o->dump_logits);
    free(dump_buf);
    s->dump = NULL;
    s->dump_buf = NULL;
    if (s->lead && !s->quiet) {
        printf("\n");
        fflush(stdout); /* the text ends before the timing line on stderr */
    }
    return rc;
}

static int run_report_trace(const struct apb_run_opts *o, struct run_state *s, apb_err *err);

/* Step 6: NIAH score, timings, traces. */
static int run_report(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    int rc = APB_OK, lead = s->lead;
    if (o->niah && lead) {
        int hit = s->printed && strstr(s->printed, s->needle) != NULL;
        printf("NIAH: method %s, hosts %d, %zu tokens, depth %.2f: %s\n", apb_method_name(o->meth),
               s->hopt.hosts, s->n_ids + s->n_q, o->depth, hit ? "retrieved" : "missed");
    }
    if (lead)
        fprintf(stderr, "apb_run: prefill %zu tokens in %.3f s (%.1f tokens/s); decode %d tokens in "
                        "%.3f s (%.2f tokens/s)\n",
                s->n_ids + s->n_q, s->t_prefill, (s->n_ids + s->n_q) / s->t_prefill,
                s->n_out > 0 ? s->n_out - 1 : 0, s->t_decode,
                s->n_out > 1 ? (s->n_out - 1) / s->t_decode : 0.0);
    if (o->calibrate && lead)
        fprintf(stderr, "apb_run: calibration pass done; models in %s/.starpu/sampling/codelets "
                        "(starpu_perfmodel_display -s apb_attention)\n",
                getenv("STARPU_HOME") ? getenv("STARPU_HOME") : "$HOME");
    if (s->tracing)
        rc = run_report_trace(o, s, err);
    return rc;
}

/* --trace / --gantt / --summary: what the tasks of the run (or of every case) did. */
static int run_report_trace(const struct apb_run_opts *o, struct run_state *s, apb_err *err)
{
    int rc = APB_OK;
    char tb[PATH_MAX], gb[PATH_MAX];
    const char *tp = o->trace ? rank_path(o->trace, tb, sizeof tb) : NULL;
    const char *gp = o->gantt ? rank_path(o->gantt, gb, sizeof gb) : NULL;
    apb_gpu_tele tele[APB_TELE_MAX_DEV];
    int nt = s->teling ? apb_telemetry_stop(tele, APB_TELE_MAX_DEV) : 0;
    s->teling = 0;
    if (s->lead)
        apb_trace_summary(stderr);
    if (s->lead && o->summary)
        apb_telemetry_print(stderr, tele, nt);
    if (tp && !(rc = apb_trace_write_chrome(tp, err)))
        fprintf(stderr, "apb_run: wrote trace %s\n", tp);
    if (!rc && gp)
        rc = write_gantt(gp, err);
    return rc;
}

/* Everything of one sequence (handles, KV cache, ids, text); the model stays. */
static void run_free_seq(struct run_state *s)
{
    if (s->seq.x)
        apb_seq_free(&s->m, &s->seq);
    if (s->hs.h)
        apb_hseq_free(&s->m, &s->hs);
    free(s->printed);
    free(s->out_ids);
    free(s->ids);
    free(s->qids);
    free(s->shown);
    apb_embeds_free(&s->emb);
    memset(&s->seq, 0, sizeof s->seq);
    memset(&s->hs, 0, sizeof s->hs);
    memset(&s->hopt, 0, sizeof s->hopt);
    memset(&s->emb, 0, sizeof s->emb);
    s->printed = s->shown = NULL;
    s->out_ids = s->ids = s->qids = NULL;
    s->n_ids = s->n_q = s->n_shown = s->cap_shown = 0;
    s->shown_oom = 0;
    s->n_out = s->want = 0;
    s->t_prefill = s->t_decode = 0;
}

static void run_free(struct run_state *s)
{
    run_free_seq(s);
    if (s->loaded)
        apb_model_free(&s->m);
}

static int run(const struct apb_run_opts *o, apb_err *err)
{
    struct run_state s;
    memset(&s, 0, sizeof s);
    int started = 0;
    int rc = run_load(o, &s, err);
    if (!rc)
        rc = run_prompt(o, &s, err);
    if (!rc) {
        s.lead = g_rank == 0;
        rc = run_start(o, &s, 0, &started, err);
    }
    if (!started) { /* nothing submitted: free what was loaded */
        run_free(&s);
        return rc;
    }
    if (!rc)
        rc = run_dump_open(o, &s, err);
    s.smp = (apb_sampling){.temperature = o->temperature, .top_p = o->top_p, .seed = o->seed};
    /* --max-new-tokens 0: prefill only, for every method. The graphs still end with the logits
     * and a sampled token (the hosts' question pass is part of the prefill), but nothing is read,
     * printed or dumped, as for `full`. */
    s.want = o->max_new;
    s.out_ids = malloc(sizeof(int32_t) * ((size_t)s.want + 1));
    rc = run_prefill(o, &s, rc, err);
    rc = run_decode(o, &s, rc, err);
    if (!rc)
        rc = run_report(o, &s, err);
    if (rc && g_nranks > 1) /* no collective cleanup: the other ranks may be waiting elsewhere */
        return rc;
    watchdog_arm("the shutdown (every rank finishing)");
    run_free(&s);
    apb_runtime_shutdown();
    watchdog_arm(NULL);
    return rc;
}

/* --cases: one result line, written and flushed as the case ends (a stopped run keeps them). */
static int write_result(FILE *f, const char *path, const struct apb_case *c, const struct run_state *s,
                        apb_err *err)
{
    json_t *r = json_object();
    int bad = !r || json_object_set_new(r, "id", json_string(c->id)) ||
              json_object_set_new(r, "prediction", json_stringn(s->shown ? s->shown : "", s->n_shown)) ||
              json_object_set_new(r, "prompt_tokens", json_integer((json_int_t)(s->n_ids + s->n_q))) ||
              json_object_set_new(r, "prefill_s", json_real(s->t_prefill)) ||
              json_object_set_new(r, "decode_s", json_real(s->t_decode));
    char *line = bad ? NULL : json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(r);
    if (!line)
        return apb_fail(err, APB_E_NOMEM, "%s: case \"%s\": the result line could not be made", path, c->id);
    int ok = fputs(line, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0;
    free(line);
    return ok ? APB_OK : apb_fail(err, APB_E_IO, "%s: write failed: %s", path, strerror(errno));
}

/* --cases FILE --results OUT: every case through the normal path (context = prompt, question =
 * --question), the model and the runtime loaded once. Every line is parsed before any work
 * (a malformed one stops the run, exit 4, nothing run); a case that cannot run stops the run
 * there with its line in the message, the results of the cases before it kept in OUT. */
static int run_batch(const struct apb_run_opts *o, apb_err *err)
{
    struct apb_case *cases = NULL;
    int n_cases = 0, started = 0, rc;
    size_t n_text = 0;
    char *text = read_file_len(o->cases, &n_text, err);
    if (!text)
        return err->code;
    rc = apb_cases_parse_all(text, n_text, &cases, &n_cases, err);
    free(text);
    if (rc)
        return apb_err_prefix(err, "%s: ", o->cases);
    FILE *out = fopen(o->results, "w");
    if (!out) {
        apb_cases_free(cases, n_cases);
        return apb_fail(err, APB_E_IO, "%s: %s", o->results, strerror(errno));
    }
    struct run_state s;
    memset(&s, 0, sizeof s);
    s.quiet = 1;
    rc = run_load(o, &s, err);
    if (!rc) {
        s.lead = g_rank == 0;
        rc = run_start(o, &s, n_cases, &started, err);
    }
    int show = o->progress_opt != 0;
    double t_all = now_s(), t_pre = 0, t_dec = 0;
    for (int i = 0; !rc && i < n_cases; i++) {
        const struct apb_case *c = &cases[i];
        struct apb_run_opts oc = *o;
        oc.cases = NULL;
        oc.prompt = c->context;
        oc.question = c->question;
        oc.max_new = c->max_new >= 0 ? c->max_new : o->max_new;
        oc.progress = o->progress_opt == 1; /* the prefill's percentage only with --progress */
        if (show) /* with --progress the memory estimate and the prefill's percentage follow */
            fprintf(stderr, "apb_run: case %d/%d (%s)%s", i + 1, n_cases, c->id, oc.progress ? "\n" : "");
        rc = run_prompt(&oc, &s, err);
        if (!rc)
            rc = run_gpu_check(&oc, &s, err);
        s.smp = (apb_sampling){.temperature = o->temperature, .top_p = o->top_p, .seed = o->seed};
        s.want = oc.max_new;
        if (!rc)
            s.out_ids = malloc(sizeof(int32_t) * ((size_t)s.want + 1));
        if (!rc)
            rc = run_prefill(&oc, &s, rc, err);
        if (!rc)
            rc = run_decode(&oc, &s, rc, err);
        if (!rc && s.shown_oom)
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        if (!rc)
            rc = write_result(out, o->results, c, &s, err);
        if (show && oc.progress && !rc) /* the header's line is taken: name the case again */
            fprintf(stderr, "apb_run: case %d/%d (%s)", i + 1, n_cases, c->id);
        if (show && !(oc.progress && rc))
            fprintf(stderr, rc ? "\n" : ": %zu tokens, prefill %.3f s, decode %d tokens in %.3f s\n",
                    s.n_ids + s.n_q, s.t_prefill, s.n_out > 0 ? s.n_out - 1 : 0, s.t_decode);
        if (rc)
            apb_err_prefix(err, "%s: line %ld (case %d/%d, id \"%s\"): ", o->cases, c->line, i + 1,
                           n_cases, c->id);
        t_pre += s.t_prefill;
        t_dec += s.t_decode;
        run_free_seq(&s); /* memory stays flat from case to case */
    }
    if (!rc && s.lead)
        fprintf(stderr, "apb_run: %d cases in %.3f s (prefill %.3f s, decode %.3f s); results in %s\n",
                n_cases, now_s() - t_all, t_pre, t_dec, o->results);
    if (!rc && s.tracing)
        rc = run_report_trace(o, &s, err);
    if (fclose(out) != 0 && !rc)
        rc = apb_fail(err, APB_E_IO, "%s: write failed", o->results);
    run_free(&s);
    if (started)
        apb_runtime_shutdown();
    apb_cases_free(cases, n_cases);
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
    if (!rc && o.cases && g_mpi)
        rc = apb_fail(&err, APB_E_USAGE, "--cases runs in one process (not under an MPI launcher)");
    if (!rc)
        rc = o.cases ? run_batch(&o, &err) : run(&o, &err);
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
