/* SPDX-License-Identifier: MIT */
/** @brief apb_run's command line: options, parsing and validation. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli.h"

const char *const apb_run_usage =
    "usage: apb_run (--prompt TEXT | --prompt-file FILE | --prompt-len N | --niah LEN |\n"
    "                --embeds FILE --question TEXT | --cases FILE.jsonl --results OUT.jsonl)\n"
    "                [options]\n"
    "\n"
    "  --model DIR            Hugging Face model directory (config.json, *.safetensors,\n"
    "                         tokenizer.json); default: $APB_HOME/models/smollm2-135m-instruct\n"
    "  --random-weights NAME  preset shapes with random weights instead of --model\n"
    "                         (llama-3.1-8b, qwen-2.5-14b, yi-34b-200k, llama-3-8b-1m, smollm2-135m,\n"
    "                         tiny: 4 small layers for tests; qwen2.5-vl-3b, qwen2.5-vl-7b,\n"
    "                         internvl3-2b: language models; tiny-vl: tiny with mRoPE)\n"
    "  --embeds FILE          context = embedding rows of FILE.safetensors ('embeds' (n, dim),\n"
    "                         optional 'position_ids' (3, n) for mRoPE); needs --question\n"
    "  --prompt TEXT          prompt text\n"
    "  --prompt-file FILE     prompt read from FILE\n"
    "  --prompt-len N         N random token ids as prompt (with --random-weights)\n"
    "  --cases FILE.jsonl     batch: one JSON object a line, {\"id\", \"context\", \"question\",\n"
    "                         \"max_new_tokens\" (optional)}; each case runs as --prompt-file CONTEXT\n"
    "                         --question QUESTION with the other options, in one process (the model\n"
    "                         and the runtime stay loaded); a bad line stops the run before any work,\n"
    "                         a case that cannot run (too long) stops it there (exit 2)\n"
    "  --results OUT.jsonl    batch results, one a case as it finishes: {\"id\", \"prediction\",\n"
    "                         \"prompt_tokens\", \"prefill_s\", \"decode_s\"}\n"
    "  --chat                 wrap the prompt in the model's chat format\n"
    "  --system TEXT          system message for --chat\n"
    "  --max-new-tokens N     tokens to generate (default 32; 0 = prefill only)\n"
    "  --temperature T        0 = greedy (default); > 0 samples\n"
    "  --top-p P              nucleus sampling threshold (default 0.9)\n"
    "  --seed S               sampling / random-weights seed (default 42)\n"
    "  --method NAME          full (default), apb, spava, star, ring, zigzag, ulysses\n"
    "  --hosts W              sequence-parallel hosts (default 4)\n"
    "  --anchor A             APB anchor length (default L/32, multiple of 64, below the block)\n"
    "  --select K             APB selected tokens per host (default L/64, multiple of 64)\n"
    "  --question TEXT        question prefilled after the context (default: the prompt's last token)\n"
    "  --placement free|pinned  hosts left to the scheduler (default) or host h on CPU worker h mod n\n"
    "  --allgather starpu|nccl  apb: compressed blocks move by StarPU data dependencies (default) or\n"
    "                         one NCCL allgather per GPU and layer (GPUs; pins hosts to GPUs)\n"
    "  --pool reference|block  apb: max-pool the selection scores over [anchor | local] before the\n"
    "                         anchor is excluded (default, thunlp/APB's order: the first local\n"
    "                         tokens can take anchor scores), or inside each host's local block\n"
    "  --short-chunk whole|reference  spava: a chunk shorter than --select is passed whole\n"
    "                         (default), or as min(K, 128 floor(chunk/128)) selected rows (thunlp/APB)\n"
    "  --compress query|retain  APB compression: query-aware selection (default) or Locret\n"
    "                         retaining heads: --retain-weights FILE.safetensors, else the heads\n"
    "                         shipped for the model (models/retain/<model dir name>.safetensors)\n"
    "  --niah LEN             needle-in-a-haystack: LEN tokens of filler with a needle, then ask\n"
    "  --depth D              relative needle depth in [0, 1] (default 0.5)\n"
    "  --needle DIGITS        the magic number (default: 7 digits drawn from --seed)\n"
    "  --sched NAME           scheduling policy: ours (apb-critical, apb-affinity) or any StarPU\n"
    "                         built-in (default lws; 'list' prints them all)\n"
    "  --sched-lib FILE.so    load a policy from a shared object exporting 'apb_sched_policy'\n"
    "                         (used unless --sched names another; see docs/SCHEDULERS.md)\n"
    "  --calibrate            calibration pass: every task's time goes into the StarPU perfmodels\n"
    "                         ($STARPU_HOME/.starpu/sampling/codelets; starpu_perfmodel_display)\n"
    "  --ncpus N              CPU workers (default: StarPU's choice, all cores)\n"
    "  --device auto|cpu|cuda  where tasks run: cuda = GPUs only, cpu = CPUs only, auto = cuda when\n"
    "                         a GPU is present (default)\n"
    "  --ngpus N              GPUs to use with --device cuda (default: all)\n"
    "  --gpu-mem GIB          GPU memory StarPU may use per GPU (default: all); the KV cache of\n"
    "                         finished layers then spills to host memory\n"
    "  --precision auto|fp32|bf16  weights and tensor-core math: bf16 (GPU default) or fp32 (CPU\n"
    "                         default; exact fp32 GEMMs and attention on GPUs too)\n"
    "  --tile N               rows per prefill tile (default 256)\n"
    "  --progress / --no-progress  progress on stderr (default: when stderr is a terminal)\n"
    "  --trace FILE.json      Chrome/Perfetto trace of every task (chrome://tracing, ui.perfetto.dev)\n"
    "  --gantt FILE.svg|png   Gantt chart of tasks per worker, colored by kind (PNG via rsvg-convert)\n"
    "                         (over MPI, rank r > 0 writes FILE with .rank<r> before the extension)\n"
    "  --dump-logits FILE     write the float32 logits of every sampled row to FILE (raw, vocab\n"
    "                         floats per generated token), for bitwise comparisons of runs\n"
    "  --mpi-timeout SECS     under mpirun: the longest one wait (start, prefill, one decode step,\n"
    "                         shutdown) may take before the rank aborts the job (default 600; 0 = none)\n"
    "  --summary              per-worker busy %, communication overlap %, scheduler overhead per task\n"
    "                         on stderr (also printed with --trace / --gantt); on GPUs their power and\n"
    "                         SM clock (NVML), which --trace also records as counter tracks\n"
    "  --verbose              StarPU's own messages too (default: apb's only, unless STARPU_SILENT is set)\n"
    "  --help, --version\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 io, 4 format, 5 model, 6 memory, 7 runtime\n";


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

int apb_run_parse_args(int argc, char **argv, struct apb_run_opts *o, apb_err *err)
{
    enum { O_MODEL = 256, O_RANDOM, O_PROMPT, O_PFILE, O_PLEN, O_CHAT, O_SYSTEM, O_MAXNEW, O_TEMP,
           O_TOPP, O_SEED, O_METHOD, O_SCHED, O_NCPUS, O_TILE, O_PROG, O_NOPROG, O_HELP, O_VERSION,
           O_HOSTS, O_ANCHOR, O_SELECT, O_QUESTION, O_NIAH, O_DEPTH, O_NEEDLE, O_TRACE, O_GANTT, O_COMPRESS, O_RETAINW, O_PLACE,
           O_DUMP, O_MPITO, O_DEVICE, O_NGPUS, O_PREC, O_SCHEDLIB, O_CALIB, O_SUMMARY, O_ALLGATHER, O_GPUMEM,
           O_VERBOSE, O_POOL, O_SHORT, O_EMBEDS, O_CASES, O_RESULTS };
    static const struct option lo[] = {
        {"model", 1, 0, O_MODEL}, {"random-weights", 1, 0, O_RANDOM}, {"prompt", 1, 0, O_PROMPT},
        {"prompt-file", 1, 0, O_PFILE}, {"prompt-len", 1, 0, O_PLEN}, {"chat", 0, 0, O_CHAT},
        {"system", 1, 0, O_SYSTEM}, {"max-new-tokens", 1, 0, O_MAXNEW},
        {"temperature", 1, 0, O_TEMP}, {"top-p", 1, 0, O_TOPP}, {"seed", 1, 0, O_SEED},
        {"method", 1, 0, O_METHOD}, {"sched", 1, 0, O_SCHED}, {"ncpus", 1, 0, O_NCPUS},
        {"tile", 1, 0, O_TILE}, {"progress", 0, 0, O_PROG}, {"no-progress", 0, 0, O_NOPROG},
        {"help", 0, 0, O_HELP}, {"version", 0, 0, O_VERSION}, {"hosts", 1, 0, O_HOSTS},
        {"anchor", 1, 0, O_ANCHOR}, {"select", 1, 0, O_SELECT}, {"question", 1, 0, O_QUESTION},
        {"niah", 1, 0, O_NIAH}, {"depth", 1, 0, O_DEPTH}, {"needle", 1, 0, O_NEEDLE}, {"trace", 1, 0, O_TRACE},
        {"gantt", 1, 0, O_GANTT}, {"compress", 1, 0, O_COMPRESS},
        {"retain-weights", 1, 0, O_RETAINW}, {"placement", 1, 0, O_PLACE},
        {"dump-logits", 1, 0, O_DUMP}, {"mpi-timeout", 1, 0, O_MPITO},
        {"device", 1, 0, O_DEVICE}, {"ngpus", 1, 0, O_NGPUS}, {"gpu-mem", 1, 0, O_GPUMEM}, {"precision", 1, 0, O_PREC},
        {"sched-lib", 1, 0, O_SCHEDLIB}, {"calibrate", 0, 0, O_CALIB}, {"summary", 0, 0, O_SUMMARY},
        {"allgather", 1, 0, O_ALLGATHER}, {"verbose", 0, 0, O_VERBOSE},
        {"pool", 1, 0, O_POOL}, {"short-chunk", 1, 0, O_SHORT}, {"embeds", 1, 0, O_EMBEDS},
        {"cases", 1, 0, O_CASES}, {"results", 1, 0, O_RESULTS},
        {0, 0, 0, 0}};
    *o = (struct apb_run_opts){.method = "full", .max_new = 32, .ncpus = -1, .tile = 256,
                       .progress = isatty(2), .top_p = 0.9f, .seed = 42, .hosts = 4,
                       .anchor = -1, .select = -1, .depth = 0.5f, .ngpus = -1, .precision = -1,
                       .mpi_timeout = 600, .progress_opt = -1};
    int c, rc = APB_OK;
    opterr = 0;
    optind = 0; /* 0: glibc re-initializes getopt completely (the parser may run many times) */
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
        case O_HOSTS: rc = parse_int(optarg, "--hosts", 1, 64, &o->hosts, err); break;
        case O_ANCHOR: rc = parse_int(optarg, "--anchor", 0, INT_MAX / 2, &o->anchor, err); break;
        case O_SELECT: rc = parse_int(optarg, "--select", 0, INT_MAX / 2, &o->select, err); break;
        case O_QUESTION: o->question = optarg; break;
        case O_EMBEDS: o->embeds = optarg; break;
        case O_CASES: o->cases = optarg; break;
        case O_RESULTS: o->results = optarg; break;
        case O_NIAH: rc = parse_int(optarg, "--niah", 64, 1 << 24, &o->niah, err); break;
        case O_DEPTH: rc = parse_float(optarg, "--depth", 0, 1, &o->depth, err); break;
        case O_NEEDLE:
            o->needle = optarg;
            if (!*optarg || strspn(optarg, "0123456789") != strlen(optarg) || strlen(optarg) > 32)
                rc = apb_fail(err, APB_E_USAGE, "--needle: expected 1 to 32 digits, got '%s'", optarg);
            break;
        case O_TRACE: o->trace = optarg; break;
        case O_COMPRESS:
            if (!strcmp(optarg, "retain"))
                o->retain = 1;
            else if (strcmp(optarg, "query"))
                rc = apb_fail(err, APB_E_USAGE, "--compress: expected 'query' or 'retain', got '%s'", optarg);
            break;
        case O_RETAINW: o->retain_weights = optarg; break;
        case O_PLACE: rc = apb_placement_parse(optarg, &o->placement, err); break;
        case O_ALLGATHER: rc = apb_allgather_parse(optarg, &o->allgather, err); break;
        case O_POOL: rc = apb_pool_parse(optarg, &o->pool, err), o->pool_set = 1; break;
        case O_SHORT: rc = apb_short_chunk_parse(optarg, &o->short_chunk, err); break;
        case O_DUMP: o->dump_logits = optarg; break;
        case O_MPITO: rc = parse_int(optarg, "--mpi-timeout", 0, 1 << 24, &o->mpi_timeout, err); break;
        case O_GANTT: o->gantt = optarg; break;
        case O_DEVICE:
            if (!strcmp(optarg, "auto") || !strcmp(optarg, "cpu") || !strcmp(optarg, "cuda"))
                o->device = optarg[0] == 'a' ? APB_DEVICE_AUTO : optarg[1] == 'p' ? APB_DEVICE_CPU : APB_DEVICE_CUDA;
            else
                rc = apb_fail(err, APB_E_USAGE, "--device: expected auto, cpu or cuda, got '%s'", optarg);
            break;
        case O_NGPUS: rc = parse_int(optarg, "--ngpus", 1, 64, &o->ngpus, err); break;
        case O_GPUMEM: rc = parse_float(optarg, "--gpu-mem", 0.25, 1 << 20, &o->gpu_mem, err); break;
        case O_PREC:
            if (!strcmp(optarg, "auto"))
                o->precision = -1;
            else if (!strcmp(optarg, "fp32"))
                o->precision = APB_PREC_FP32;
            else if (!strcmp(optarg, "bf16"))
                o->precision = APB_PREC_BF16;
            else
                rc = apb_fail(err, APB_E_USAGE, "--precision: expected auto, fp32 or bf16, got '%s'", optarg);
            break;
        case O_SCHEDLIB: o->sched_lib = optarg; break;
        case O_CALIB: o->calibrate = 1; break;
        case O_SUMMARY: o->summary = 1; break;
        case O_VERBOSE: o->verbose = 1; break;
        case O_PROG: o->progress = o->progress_opt = 1; break;
        case O_NOPROG: o->progress = o->progress_opt = 0; break;
        case O_HELP: o->help = 1; return APB_OK;
        case O_VERSION: o->version = 1; return APB_OK;
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
    int rc2 = apb_method_parse(o->method, &o->meth, err);
    if (rc2)
        return rc2;
    int nsrc = !!o->prompt + !!o->prompt_file + !!o->prompt_len + !!o->niah + !!o->embeds + !!o->cases;
    if (nsrc != 1)
        return apb_fail(err, APB_E_USAGE, "give exactly one of --prompt, --prompt-file, --prompt-len, "
                                          "--niah, --embeds, --cases");
    if (!o->cases != !o->results)
        return apb_fail(err, APB_E_USAGE, "--cases FILE.jsonl and --results OUT.jsonl go together");
    if (o->cases && (o->question || o->random || o->dump_logits))
        return apb_fail(err, APB_E_USAGE, "--cases: each case brings its context and question, and "
                                          "needs the tokenizer (no --question, --random-weights, "
                                          "--dump-logits)");
    if (o->embeds && (!o->question || o->chat))
        return apb_fail(err, APB_E_USAGE, "--embeds needs --question TEXT (and no --chat)");
    if (o->retain_weights && !o->retain)
        return apb_fail(err, APB_E_USAGE, "--retain-weights needs --compress retain");
    if (o->retain && o->meth != APB_METHOD_APB)
        return apb_fail(err, APB_E_USAGE, "--compress retain applies to --method apb");
    if (o->pool_set && o->meth != APB_METHOD_APB)
        return apb_fail(err, APB_E_USAGE, "--pool applies to --method apb (Spava pools "
                                          "inside each chunk; see docs/DESIGN.md)");
    if (o->short_chunk == APB_SHORT_REFERENCE && o->meth != APB_METHOD_SPAVA)
        return apb_fail(err, APB_E_USAGE, "--short-chunk reference applies to --method spava");
    if (o->niah && (o->random || o->question || o->chat))
        return apb_fail(err, APB_E_USAGE, "--niah builds its own prompt and question and needs the "
                                          "tokenizer (no --random-weights, --question, --chat)");
    if (o->random && o->model)
        return apb_fail(err, APB_E_USAGE, "--model and --random-weights exclude each other");
    if (o->random && (o->prompt || o->prompt_file))
        return apb_fail(err, APB_E_USAGE, "--random-weights has no tokenizer: use --prompt-len N");
    if (!o->random && o->prompt_len)
        return apb_fail(err, APB_E_USAGE, "--prompt-len needs --random-weights");
    if (o->gpu_mem > 0 && o->device == APB_DEVICE_CPU)
        return apb_fail(err, APB_E_USAGE, "--gpu-mem needs --device cuda or auto");
    if (o->ngpus > 0 && o->device == APB_DEVICE_CPU)
        return apb_fail(err, APB_E_USAGE, "--ngpus needs --device cuda or auto");
    if (o->chat && o->random)
        return apb_fail(err, APB_E_USAGE, "--chat needs a tokenizer (not with --random-weights)");
    return APB_OK;
}


int apb_run_check_machine(const struct apb_run_opts *o, int ncores, apb_err *err)
{
    /* StarPU runs one busy-polling worker per CPU: more workers than cores only compete for them
     * (--ncpus 1000 on 2 cores ran for minutes on a 1-token prompt) */
    if (ncores > 0 && o->ncpus > ncores)
        return apb_fail(err, APB_E_USAGE, "--ncpus %d: this process may run on %d CPU core%s (one "
                        "StarPU worker per core); give at most %d", o->ncpus, ncores,
                        ncores == 1 ? "" : "s", ncores);
    return APB_OK;
}
