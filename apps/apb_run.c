/* SPDX-License-Identifier: MIT */
/** @brief apb_run: prefill + generation of a real model as a StarPU task graph. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/apb_graph.h"
#include "models/chat.h"

static const char *const usage =
    "usage: apb_run (--prompt TEXT | --prompt-file FILE | --prompt-len N) [options]\n"
    "\n"
    "  --model DIR            Hugging Face model directory (config.json, *.safetensors,\n"
    "                         tokenizer.json); default: $APB_HOME/models/smollm2-135m-instruct\n"
    "  --random-weights NAME  preset shapes with random weights instead of --model\n"
    "                         (llama-3.1-8b, qwen-2.5-14b, yi-34b-200k, llama-3-8b-1m, smollm2-135m)\n"
    "  --prompt TEXT          prompt text\n"
    "  --prompt-file FILE     prompt read from FILE\n"
    "  --prompt-len N         N random token ids as prompt (with --random-weights)\n"
    "  --chat                 wrap the prompt in the model's chat format\n"
    "  --system TEXT          system message for --chat\n"
    "  --max-new-tokens N     tokens to generate (default 32; 0 = prefill only)\n"
    "  --temperature T        0 = greedy (default); > 0 samples\n"
    "  --top-p P              nucleus sampling threshold (default 0.9)\n"
    "  --seed S               sampling / random-weights seed (default 42)\n"
    "  --method NAME          attention method (default full)\n"
    "  --sched NAME           StarPU scheduling policy (default lws; 'list' prints them)\n"
    "  --ncpus N              CPU workers (default: StarPU's choice, all cores)\n"
    "  --tile N               rows per prefill tile (default 256)\n"
    "  --progress / --no-progress  progress on stderr (default: when stderr is a terminal)\n"
    "  --help, --version\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 io, 4 format, 5 model, 6 memory, 7 runtime\n";

struct opts {
    const char *model, *random, *prompt, *prompt_file, *system, *method, *sched;
    int prompt_len, chat, max_new, ncpus, tile, progress;
    float temperature, top_p;
    unsigned long long seed;
};

static int parse_int(const char *s, const char *name, long lo, long hi, int *out, apb_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return apb_fail(err, APB_E_USAGE, "%s: expected an integer in [%ld, %ld], got '%s'", name, lo,
                        hi, s);
    *out = (int)v;
    return APB_OK;
}

static int parse_float(const char *s, const char *name, double lo, double hi, float *out, apb_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return apb_fail(err, APB_E_USAGE, "%s: expected a number in [%g, %g], got '%s'", name, lo, hi,
                        s);
    *out = (float)v;
    return APB_OK;
}

static int parse_args(int argc, char **argv, struct opts *o, apb_err *err)
{
    enum { O_MODEL = 256, O_RANDOM, O_PROMPT, O_PFILE, O_PLEN, O_CHAT, O_SYSTEM, O_MAXNEW, O_TEMP,
           O_TOPP, O_SEED, O_METHOD, O_SCHED, O_NCPUS, O_TILE, O_PROG, O_NOPROG, O_HELP, O_VERSION };
    static const struct option lo[] = {
        {"model", 1, 0, O_MODEL}, {"random-weights", 1, 0, O_RANDOM}, {"prompt", 1, 0, O_PROMPT},
        {"prompt-file", 1, 0, O_PFILE}, {"prompt-len", 1, 0, O_PLEN}, {"chat", 0, 0, O_CHAT},
        {"system", 1, 0, O_SYSTEM}, {"max-new-tokens", 1, 0, O_MAXNEW},
        {"temperature", 1, 0, O_TEMP}, {"top-p", 1, 0, O_TOPP}, {"seed", 1, 0, O_SEED},
        {"method", 1, 0, O_METHOD}, {"sched", 1, 0, O_SCHED}, {"ncpus", 1, 0, O_NCPUS},
        {"tile", 1, 0, O_TILE}, {"progress", 0, 0, O_PROG}, {"no-progress", 0, 0, O_NOPROG},
        {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION}, {0, 0, 0, 0}};
    *o = (struct opts){.method = "full", .max_new = 32, .ncpus = -1, .tile = 256,
                       .progress = isatty(2), .top_p = 0.9f, .seed = 42};
    int c, rc = APB_OK;
    opterr = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o->model = optarg; break;
        case O_RANDOM: o->random = optarg; break;
        case O_PROMPT: o->prompt = optarg; break;
        case O_PFILE: o->prompt_file = optarg; break;
        case O_PLEN: rc = parse_int(optarg, "--prompt-len", 1, INT_MAX / 2, &o->prompt_len, err); break;
        case O_CHAT: o->chat = 1; break;
        case O_SYSTEM: o->system = optarg; break;
        case O_MAXNEW: rc = parse_int(optarg, "--max-new-tokens", 0, 1 << 20, &o->max_new, err); break;
        case O_TEMP: rc = parse_float(optarg, "--temperature", 0, 100, &o->temperature, err); break;
        case O_TOPP: rc = parse_float(optarg, "--top-p", 0, 1, &o->top_p, err); break;
        case O_SEED: {
            char *end;
            errno = 0;
            o->seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end)
                rc = apb_fail(err, APB_E_USAGE, "--seed: expected a non-negative integer, got '%s'", optarg);
            break;
        }
        case O_METHOD: o->method = optarg; break;
        case O_SCHED: o->sched = optarg; break;
        case O_NCPUS: rc = parse_int(optarg, "--ncpus", 1, 1024, &o->ncpus, err); break;
        case O_TILE: rc = parse_int(optarg, "--tile", 1, 1 << 20, &o->tile, err); break;
        case O_PROG: o->progress = 1; break;
        case O_NOPROG: o->progress = 0; break;
        case O_HELP: fputs(usage, stdout); exit(0);
        case O_VERSION: puts("apb_run 0.1.0"); exit(0);
        case ':': rc = apb_fail(err, APB_E_USAGE, "%s needs a value", argv[optind - 1]); break;
        default: rc = apb_fail(err, APB_E_USAGE, "unknown option '%s' (see --help)", argv[optind - 1]); break;
        }
    }
    if (rc)
        return rc;
    if (optind < argc)
        return apb_fail(err, APB_E_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
    if (o->sched && strcmp(o->sched, "list") == 0)
        return APB_OK;
    if (strcmp(o->method, "full") != 0)
        return apb_fail(err, APB_E_USAGE, "--method %s: this build implements 'full' only", o->method);
    int nsrc = !!o->prompt + !!o->prompt_file + !!o->prompt_len;
    if (nsrc != 1)
        return apb_fail(err, APB_E_USAGE, "give exactly one of --prompt, --prompt-file, --prompt-len");
    if (o->random && o->model)
        return apb_fail(err, APB_E_USAGE, "--model and --random-weights exclude each other");
    if (o->random && (o->prompt || o->prompt_file))
        return apb_fail(err, APB_E_USAGE, "--random-weights has no tokenizer: use --prompt-len N");
    if (!o->random && o->prompt_len)
        return apb_fail(err, APB_E_USAGE, "--prompt-len needs --random-weights");
    if (o->chat && o->random)
        return apb_fail(err, APB_E_USAGE, "--chat needs a tokenizer (not with --random-weights)");
    return APB_OK;
}

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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_eos(const apb_config *c, int id)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id)
            return 1;
    return 0;
}

static int run(const struct opts *o, apb_err *err)
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
    t_load = now_s() - t_load;

    /* prompt -> ids */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (o->prompt_len) {
        n_ids = (size_t)o->prompt_len;
        ids = malloc(sizeof *ids * n_ids);
        for (size_t i = 0; ids && i < n_ids; i++)
            ids[i] = (int32_t)((o->seed * 2654435761u + i * 40503u) % (unsigned)m.cfg.vocab_size);
    } else {
        char *text = o->prompt_file ? read_file(o->prompt_file, err) : strdup(o->prompt);
        if (!text) {
            apb_model_free(&m);
            return err->code ? err->code : apb_fail(err, APB_E_NOMEM, "out of memory");
        }
        int add_special = 1;
        if (o->chat) {
            char *t2 = apb_chat_format(m.tok, o->system, text, err);
            free(text);
            if (!t2) {
                apb_model_free(&m);
                return err->code;
            }
            text = t2;
            add_special = 0; /* the chat format carries its own special tokens */
        }
        rc = apb_tokenizer_encode(m.tok, text, strlen(text), add_special, &ids, &n_ids, err);
        free(text);
        if (rc) {
            apb_model_free(&m);
            return rc;
        }
    }
    if (!ids || n_ids == 0) {
        free(ids);
        apb_model_free(&m);
        return apb_fail(err, APB_E_USAGE, "the prompt is empty after tokenization");
    }

    apb_runtime_opts ro = {.sched = o->sched, .ncpus = o->ncpus, .ncuda = -1};
    if ((rc = apb_runtime_init(&ro, err))) {
        free(ids);
        apb_model_free(&m);
        return rc;
    }
    rc = apb_model_register(&m, err);
    fprintf(stderr, "apb_run: model %s (%d layers, dim %d, %d/%d heads), %zu prompt tokens, "
                    "method %s, sched %s, %d workers, loaded in %.2f s\n",
            m.cfg.name, m.cfg.n_layers, m.cfg.dim, m.cfg.n_heads, m.cfg.n_kv_heads, n_ids, o->method,
            apb_runtime_sched_name(), apb_runtime_nworkers(), t_load);

    apb_sampling smp = {.temperature = o->temperature, .top_p = o->top_p, .seed = o->seed};
    apb_seq seq = {0};
    int32_t *out_ids = malloc(sizeof(int32_t) * ((size_t)o->max_new + 1));
    int n_out = 0;
    double t0 = now_s(), t_prefill = 0, t_decode = 0;
    if (!rc && !out_ids)
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    if (!rc)
        rc = apb_prefill_full(&m, &seq, ids, (int)n_ids, o->tile, o->max_new, &smp, err);
    if (!rc)
        rc = apb_wait_progress("prefill", o->progress, err);
    t_prefill = now_s() - t0;
    char *printed = NULL;
    size_t printed_len = 0;
    t0 = now_s();
    while (!rc && o->max_new > 0) {
        int32_t tok;
        rc = apb_tile_read(seq.token, &tok, sizeof tok, err);
        if (rc)
            break;
        out_ids[n_out++] = tok;
        if (m.tok) {
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
        if (is_eos(&m.cfg, tok) || n_out >= o->max_new)
            break;
        rc = apb_decode_step(&m, &seq, &smp, err);
        if (!rc)
            rc = apb_runtime_wait_all(err);
    }
    t_decode = now_s() - t0;
    free(printed);
    printf("\n");
    if (!rc)
        fprintf(stderr, "apb_run: prefill %zu tokens in %.3f s (%.1f tokens/s); decode %d tokens in "
                        "%.3f s (%.2f tokens/s)\n",
                n_ids, t_prefill, n_ids / t_prefill, n_out > 0 ? n_out - 1 : 0, t_decode,
                n_out > 1 ? (n_out - 1) / t_decode : 0.0);
    if (seq.x)
        apb_seq_free(&m, &seq);
    free(out_ids);
    free(ids);
    apb_model_free(&m);
    apb_runtime_shutdown();
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    apb_err err = {0};
    int rc = parse_args(argc, argv, &o, &err);
    if (!rc && o.sched && strcmp(o.sched, "list") == 0) {
        for (struct starpu_sched_policy **p = starpu_sched_get_predefined_policies(); *p; p++)
            printf("%-16s %s\n", (*p)->policy_name, (*p)->policy_description);
        return 0;
    }
    if (!rc)
        rc = run(&o, &err);
    if (rc) {
        fprintf(stderr, "apb_run: error: %s\n", err.msg);
        return rc;
    }
    return 0;
}
