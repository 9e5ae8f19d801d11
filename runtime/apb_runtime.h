/* SPDX-License-Identifier: MIT */
/**
 * @brief The runtime layer: StarPU start/stop, MPI ranks, data handles (tiles), per-op accounting
 * and traces. The insert wrapper of every op is in codelets/apb_codelets.h.
 *
 * graph/ builds task graphs only through these two headers (Chameleon's INSERT_TASK layering): it
 * never calls starpu_* itself. Activations are registered without host memory (StarPU allocates
 * them where the first writer runs); weights are registered once over the loaded arrays, read-only.
 *
 * Matrices are row-major: a (rows x cols) tile is a StarPU matrix with nx = cols, ny = rows.
 */
#ifndef APB_RUNTIME_H
#define APB_RUNTIME_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include <starpu.h>

#include "common/apb_error.h"
#include "common/apb_ops.h"

typedef starpu_data_handle_t apb_handle;

/* ------------------------------------------------------------------ runtime */
/* Storage and math of the large weight matrices and the attention kernel:
 * FP32: fp32 weights, fp32 GEMMs (OpenBLAS / cuBLAS SGEMM), fp32 attention (CPU and GPU);
 * BF16: projection/MLP/embedding weights stored as bf16; on GPUs bf16 tensor-core GEMMs and
 *       attention with fp32 accumulation; CPU codelets widen bf16 weights to fp32 per block.
 * Activations are fp32 tiles in both, so any task can run on any worker. */
typedef enum apb_precision { APB_PREC_FP32 = 0, APB_PREC_BF16 = 1 } apb_precision;

typedef struct apb_runtime_opts {
    const char *sched;     /* StarPU policy name, or one of ours; NULL = STARPU_SCHED or "lws" */
    const char *sched_lib; /* shared object exporting a policy (schedulers/schedulers.h); NULL: none.
                            * Its policy is used when sched is NULL. */
    int ncpus;             /* CPU workers; -1 = StarPU default */
    int ncuda;             /* CUDA workers; -1 = StarPU default, 0 = none */
    double gpu_mem_gib;    /* GPU memory StarPU may allocate per GPU (STARPU_LIMIT_CUDA_MEM);
                            * 0 = all. Data beyond it is evicted to host memory */
    int mpi;               /* start StarPU-MPI (MPI_Init); multi-rank mode when > 1 rank */
    int precision;         /* apb_precision; -1 = auto (bf16 when CUDA workers exist) */
    int calibrate;         /* perfmodel calibration (STARPU_CALIBRATE semantics: 1 adds
                            * measurements to the stored models, 2 discards them first) */
    int verbose;           /* StarPU's own messages on stderr; 0: STARPU_SILENT=1 unless the user
                            * set STARPU_SILENT (the first bus calibration then says one line) */
} apb_runtime_opts;

int apb_runtime_init(const apb_runtime_opts *opts, apb_err *err);
void apb_runtime_shutdown(void);
/* starpu_task_wait_for_all (over MPI: + a barrier), then the first error a task reported (e.g.
 * GPU out of memory). */
int apb_runtime_wait_all(apb_err *err);
apb_precision apb_runtime_precision(void);
const char *apb_runtime_sched_name(void);
int apb_runtime_pending(void);                /* submitted tasks not yet completed */
int apb_runtime_nworkers(void);
/* Pins the tasks of host h (tag.host) to worker worker_of_host[h] (-1: free); NULL/0 unpins all. */
void apb_runtime_place_hosts(const int *worker_of_host, int n);
/* Ids of the CPU workers (the first max of them); returns how many there are. */
int apb_runtime_cpu_workers(int *ids, int max);
/* GPUs visible to CUDA (0 without a driver, a device, or CUDA support); callable before init. */
int apb_runtime_cuda_devices(void);
/* Bytes of GPU memory StarPU may use on the memory nodes of the CUDA workers (0 without). */
double apb_runtime_gpu_memory(void);
/* Device memory in use now (total - free, cudaMemGetInfo), summed over the CUDA workers' GPUs, in
 * bytes; everything on those GPUs counts (StarPU's buffers and cache, scratch, CUDA contexts). */
double apb_runtime_gpu_used(void);
/* Distinct GPUs the CUDA workers drive (0 without CUDA workers). */
int apb_runtime_cuda_devices_used(void);
/* 1 when apb was built with CUDA codelets. */
int apb_runtime_has_cuda(void);
/* Ids of the CUDA workers (at most max); returns their count (0 without CUDA). */
int apb_runtime_cuda_workers(int *ids, int max);
/* NCCL for the allgather of compressed blocks (--allgather nccl): whether apb was built with it;
 * creating one communicator per CUDA worker (idempotent; collective over MPI ranks). NCCL rank
 * g = MPI rank * G + the index of the worker among the rank's G CUDA workers (every rank must
 * have the same G); nccl_size is the number of NCCL ranks over all processes (0 before init);
 * nccl_worker(g) is the local worker of NCCL rank g, or -1 when g belongs to another process. */
int apb_runtime_has_nccl(void);
int apb_runtime_nccl_init(apb_err *err);
int apb_runtime_nccl_size(void);
int apb_runtime_nccl_worker(int g);

/* ------------------------------------------------------------------ MPI ranks
 * With opts.mpi and more than one rank, every process runs the same graph code: each handle is
 * registered with StarPU-MPI (owner rank + a tag from a counter every rank advances identically),
 * every task runs on the rank of its host (tag.host, through apb_runtime_place_ranks) and
 * StarPU-MPI moves the data that a task reads from another rank. See docs/DESIGN.md. */
int apb_runtime_mpi_built(void);              /* 1 if compiled against StarPU-MPI */
/* 1 if this process was started by an MPI launcher with more than one process (environment of
 * Open MPI's mpirun or PMI); rank and size (may be NULL) are then read from it, else 0 and 1. */
int apb_runtime_mpi_launched(int *rank, int *size);
int apb_runtime_rank(void);                   /* 0 in a single process */
int apb_runtime_nranks(void);                 /* 1 in a single process */
/* Host h's tasks run on rank rank_of_host[h] (hosts beyond n and host -1: rank 0). */
void apb_runtime_place_ranks(const int *rank_of_host, int n);
int apb_runtime_rank_of_host(int host);
/* Tiles created from now on (apb_tile_new*) are owned by the rank of `host` (-1: rank 0). */
void apb_runtime_set_owner(int host);
/* Collective (every rank calls it at the same point of the program): every rank contributes n
 * bytes and receives all ranks' bytes, rank r's at all + r n. Goes through StarPU-MPI (one tile
 * per rank), so it is safe beside StarPU-MPI's progression thread. A copy in one process. */
int apb_runtime_exchange(const void *mine, size_t n, void *all, apb_err *err);

/* Per-op execution time accounting (sum over tasks, ns), filled by every codelet body; indexed by
 * enum apb_op, the op table of common/apb_ops.h (apb_op_name, apb_op_kind). */
typedef struct apb_op_stats {
    double ns[APB_OP_COUNT];
    long long ntasks[APB_OP_COUNT];
    double flops[APB_OP_COUNT];
} apb_op_stats;
void apb_op_stats_get(apb_op_stats *out);
void apb_op_stats_reset(void);

/* ------------------------------------------------------------------ GPU power and clock telemetry
 * NVML, loaded at run time (runtime/telemetry.c): a sampler thread reads every period each NVIDIA
 * device's power draw, SM clock, temperature and clock-event reasons, and the energy counter; stop
 * folds the samples into one apb_gpu_tele a device (NVML's device order). Without a driver,
 * available() says why and start() fails with APB_E_RUNTIME; nothing else changes. */
#define APB_TELE_MAX_DEV 16
/* clock-event reason bits (NVML's clocksEventReasons) */
#define APB_CLK_IDLE 0x1ULL
#define APB_CLK_POWER_CAP 0x4ULL                    /* SW power cap */
#define APB_CLK_THERMAL (0x20ULL | 0x40ULL)         /* SW / HW thermal slowdown */
typedef struct apb_gpu_sample {
    double t;                  /* seconds (CLOCK_MONOTONIC) */
    double power_w, sm_mhz, temp_c;
    unsigned long long reasons;
    double energy_mj;          /* the device's energy counter since driver load; 0 = none */
} apb_gpu_sample;
typedef struct apb_tele_acc {
    int index, samples, n_power_cap, n_thermal, n_idle;
    double power_limit_w, power_w_sum, power_w_max, sm_mhz_sum, sm_mhz_min, sm_mhz_max, temp_c_max;
    double energy_mj_first, energy_mj_last, t_first, t_last;
} apb_tele_acc;
typedef struct apb_gpu_tele {
    int index, samples;
    double seconds;            /* the sampled window */
    double power_w_mean, power_w_max, power_limit_w;
    double energy_w_mean;      /* from the energy counter (exact); 0 when the device has none */
    double energy_j;           /* energy_w_mean x seconds; -1 when the device has no counter */
    double sm_mhz_mean, sm_mhz_min, sm_mhz_max, temp_c_max;
    double frac_power_cap, frac_thermal, frac_idle; /* shares of the samples with that reason */
} apb_gpu_tele;
/* the window's mean power: from the energy counter where the device has one, else the samples' */
static inline double apb_gpu_tele_watts(const apb_gpu_tele *t)
{
    return t->energy_j >= 0 ? t->energy_w_mean : t->power_w_mean;
}
void apb_tele_acc_init(apb_tele_acc *a, int index, double power_limit_w);
void apb_tele_acc_add(apb_tele_acc *a, const apb_gpu_sample *s);
void apb_tele_acc_finish(const apb_tele_acc *a, double seconds, apb_gpu_tele *out);
/* 1 when NVML and a device are there; else 0 and why (may be NULL) */
int apb_telemetry_available(char *why, size_t n);
/* keep: also keep every sample (apb_telemetry_series; the Chrome trace draws them as counters) */
int apb_telemetry_start(int period_ms, int keep, apb_err *err);
/* stops the sampler; fills at most max summaries and returns their count (0 if none was running) */
int apb_telemetry_stop(apb_gpu_tele *out, int max);
/* the samples device dev kept in the last window (start with keep; after stop), or 0 */
int apb_telemetry_series(int dev, const apb_gpu_sample **s);
/* replaces device dev's kept series with n given samples (replaying recorded samples into a trace
 * or chart; the tests); not while a sampler runs */
int apb_telemetry_series_set(int dev, const apb_gpu_sample *s, int n, double power_limit_w);
/* device dev's enforced power limit in W (NVML, or the one given with a replayed series; 0 unknown) */
double apb_telemetry_power_limit(int dev);
/* one line a device that has samples */
void apb_telemetry_print(FILE *f, const apb_gpu_tele *t, int n);

/* ------------------------------------------------------------------ traces
 * When enabled, every task body records (name, op, worker, start, end). The records are written as
 * a Chrome/Perfetto trace (JSON, one row per worker) or an SVG Gantt chart colored by the op's kind
 * in the op table (common/apb_ops.h): compute, compress, communication, attention. */
void apb_trace_enable(int on);
void apb_trace_reset(void);
int apb_trace_write_chrome(const char *path, apb_err *err);
int apb_trace_write_gantt(const char *path, apb_err *err);
/* Prints per-worker busy % over the traced span, the time per kind, the communication overlap and
 * the scheduler overhead per task (apb_trace_stats). */
void apb_trace_summary(FILE *out);

/* Figures of the recorded trace. "Communication" is the time of compress-kind (qmean/select/retain)
 * and communication-kind (lse_merge/kv_append/allgather) tasks: the APB allgather is their output
 * read by other hosts.
 * The part of it during which some worker ran a compute or attention task is overlapped; the rest
 * is exposed (nothing else computed). See docs/SCHEDULERS.md. */
typedef struct apb_trace_stats {
    double span_s;                 /* first task start to last task end */
    int nworkers;
    double busy_frac[STARPU_NMAXWORKERS];
    double idle_frac;              /* 1 - sum(busy) / (span x workers) */
    double kind_s[4];              /* compute, compress, communication, attention (task seconds) */
    double comm_s, comm_overlap_s; /* compress + merge/append time, and the overlapped part */
    double overlap_frac;           /* comm_overlap_s / comm_s (1 when there is none) */
    double sched_us_per_task;      /* StarPU profiling: push + pop time per task; -1 unknown */
    double fetch_us_per_task;      /* data acquisition before the body per task; -1 unknown */
    double bytes_in;               /* bytes of the buffers the tasks read */
    double bus_bytes;              /* bytes moved between memory nodes (StarPU bus profiling) */
    long long bus_transfers, ntasks;
    double first_ns, last_ns;      /* first task start, last task end (CLOCK_MONOTONIC, ns) */
} apb_trace_stats;
/* 0, or -1 when nothing was recorded. */
int apb_trace_stats_get(apb_trace_stats *st);

/* ------------------------------------------------------------------ tasks
 * `layer` and `host` only name the task (`<op>-<layer>-h<host>`) and pick its priority; -1 omits. */
typedef struct apb_task_tag {
    int layer, host, prio;
} apb_task_tag;

/* ------------------------------------------------------------------ data */
/* A (rows x cols) tile of elemsize-byte elements, memory allocated lazily by StarPU. */
apb_handle apb_tile_new(int rows, int cols, size_t elemsize);
/* A tile over existing host memory (row-major, ld = cols); data must outlive the handle.
 * Over MPI it is replicated read-only data (STARPU_MPI_PER_NODE): every rank registers its own
 * identical copy (weights, token ids), which no task may write. */
apb_handle apb_tile_from(void *data, int rows, int cols, size_t elemsize);
/* Unregisters after all submitted tasks using it finished; memory is freed (lazy tiles) or the
 * content written back to the host buffer (apb_tile_from). Never blocks. */
void apb_handle_free(apb_handle h);
/* Tells StarPU the data will not be read again soon (lets it evict the copy). */
void apb_handle_wont_use(apb_handle h);
/* Blocking unregister (waits for the tasks using h); for memory the caller frees right after. */
void apb_handle_free_now(apb_handle h);
int apb_tile_rows(apb_handle h);
size_t apb_tile_elemsize(apb_handle h);
int apb_tile_cols(apb_handle h);
/* Blocks until the handle is readable on the host and copies rows x cols out (row-major).
 * Over MPI it is collective: every rank calls it and gets the owner's value. */
int apb_tile_read(apb_handle h, void *dst, size_t dst_bytes, apb_err *err);

#endif
