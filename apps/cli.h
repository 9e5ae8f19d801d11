/* SPDX-License-Identifier: MIT */
/** @brief apb_run's command line: options, parsing and validation (no exit, no I/O; fuzzed). */
#ifndef APB_RUN_CLI_H
#define APB_RUN_CLI_H

#include "common/apb_error.h"
#include "graph/apb_graph.h"

struct apb_run_opts {
    const char *model, *random, *prompt, *prompt_file, *system, *method, *sched, *question, *needle;
    const char *dump_logits;       /* --dump-logits FILE: float32 logits of every sampled row */
    int mpi_timeout;               /* --mpi-timeout SECS: bound on every wait over MPI (0: none) */
    const char *trace, *gantt, *retain_weights, *sched_lib;
    int calibrate, summary;        /* --calibrate, --summary */
    int verbose;                   /* --verbose: StarPU's own messages too */
    int retain;                    /* --compress retain */
    apb_placement placement;       /* --placement */
    int allgather;                 /* --allgather: APB_ALLGATHER_STARPU or _NCCL */
    int pool;                      /* --pool: APB_POOL_REFERENCE (default) or APB_POOL_BLOCK */
    int pool_set;                  /* --pool given */
    int short_chunk;               /* --short-chunk: APB_SHORT_WHOLE (default) or _REFERENCE */
    int prompt_len, chat, max_new, ncpus, tile, progress, hosts, anchor, select, niah;
    float temperature, top_p, depth;
    apb_method meth;
    unsigned long long seed;
    int device;                    /* APB_DEVICE_* (--device) */
    int ngpus, precision;          /* -1 = all GPUs / auto */
    float gpu_mem;                 /* GiB StarPU may use per GPU; 0 = all */
    int help, version;             /* --help / --version seen: print and exit 0 */
    const char *embeds;            /* --embeds FILE.safetensors: context rows (models/embeds.h) */
    const char *cases, *results;   /* --cases FILE.jsonl --results OUT.jsonl: batch (apps/cases.h) */
    int progress_opt;              /* -1: neither --progress nor --no-progress given; else the last */
};

enum { APB_DEVICE_AUTO = 0, APB_DEVICE_CPU = 1, APB_DEVICE_CUDA = 2 };

extern const char *const apb_run_usage;

/* Parses and checks argv; APB_E_USAGE with a message naming the option on any bad value.
 * Sets o->help / o->version and returns at once when those are given. */
int apb_run_parse_args(int argc, char **argv, struct apb_run_opts *o, apb_err *err);

/* Checks the options against the machine (no I/O; fuzzed): worker counts within the `ncores` CPU
 * cores this process may run on. APB_E_USAGE naming the option and the bound otherwise. */
int apb_run_check_machine(const struct apb_run_opts *o, int ncores, apb_err *err);

#endif
