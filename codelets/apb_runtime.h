/* SPDX-License-Identifier: MIT */
/**
 * @brief The runtime layer: StarPU start/stop, data handles, and one insert wrapper per op.
 *
 * graph/ builds task graphs only through this header (Chameleon's INSERT_TASK layering): it never
 * calls starpu_* itself. Every wrapper sets the task name (`<op>-<layer>-h<host>`), priority and
 * flop count. Activations are registered without host memory (StarPU allocates them where the first
 * writer runs); weights are registered once over the loaded arrays, read-only.
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

/* Per-op execution time accounting (sum over tasks, ns), filled by every codelet body. */
enum apb_op {
    APB_OP_EMBED, APB_OP_RMSNORM, APB_OP_QKV, APB_OP_ROPE, APB_OP_ATTENTION, APB_OP_LINEAR,
    APB_OP_MLP, APB_OP_LOGITS, APB_OP_SAMPLE, APB_OP_KV_APPEND, APB_OP_QMEAN, APB_OP_SELECT,
    APB_OP_LSE_MERGE, APB_OP_RETAIN, APB_OP_ALLGATHER, APB_OP_KV_COMPACT, APB_OP_COUNT
};
typedef struct apb_op_stats {
    double ns[APB_OP_COUNT];
    long long ntasks[APB_OP_COUNT];
    double flops[APB_OP_COUNT];
} apb_op_stats;
void apb_op_stats_get(apb_op_stats *out);
void apb_op_stats_reset(void);
const char *apb_op_name(enum apb_op op);

/* ------------------------------------------------------------------ traces
 * When enabled, every task body records (name, op, worker, start, end). The records are written as
 * a Chrome/Perfetto trace (JSON, one row per worker) or an SVG Gantt chart colored by kind:
 * compute (dense ops), compress (qmean/select), communication (lse_merge/kv_append), attention. */
void apb_trace_enable(int on);
void apb_trace_reset(void);
int apb_trace_write_chrome(const char *path, apb_err *err);
int apb_trace_write_gantt(const char *path, apb_err *err);
/* Prints per-worker busy % over the traced span, the time per kind, the communication overlap and
 * the scheduler overhead per task (apb_trace_stats). */
void apb_trace_summary(FILE *out);

/* Figures of the recorded trace. "Communication" is the time of compress (qmean/select/retain) and
 * merge/append (lse_merge/kv_append) tasks: the APB allgather is their output read by other hosts.
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
} apb_trace_stats;
/* 0, or -1 when nothing was recorded. */
int apb_trace_stats_get(apb_trace_stats *st);

/* ------------------------------------------------------------------ data */
/* A (rows x cols) tile of elemsize-byte elements, memory allocated lazily by StarPU. */
apb_handle apb_tile_new(int rows, int cols, size_t elemsize);
/* Same, zero-filled by a task (for buffers that are first read-modify-written, like KV caches). */
apb_handle apb_tile_new_zeroed(int rows, int cols, size_t elemsize);
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

/* ------------------------------------------------------------------ tasks
 * `layer` and `host` only name the task (`<op>-<layer>-h<host>`) and pick its priority; -1 omits. */
typedef struct apb_task_tag {
    int layer, host, prio;
} apb_task_tag;

/* x (n x dim) = embed[ids[i]] ; ids is an int32 tile (n x 1). */
int apb_insert_embed(apb_handle ids, apb_handle embed, apb_handle x, apb_task_tag tag);
/* out = x / rms(x) * w (rows independently). */
int apb_insert_rmsnorm(apb_handle x, apb_handle w, apb_handle out, float eps, apb_task_tag tag);
/* q = xn Wq^T (+bq), k = xn Wk^T (+bk), v = xn Wv^T (+bv); biases may be NULL. */
int apb_insert_qkv(apb_handle xn, apb_handle wq, apb_handle wk, apb_handle wv,
                   apb_handle bq, apb_handle bk, apb_handle bv,
                   apb_handle q, apb_handle k, apb_handle v, apb_task_tag tag);
/* Rotate-half RoPE in place on q (n x H*d) and k (n x Hk*d); row i has position pos0 + i.
 * inv_freq is a (1 x d/2) fp32 tile. k may be NULL. */
int apb_insert_rope(apb_handle q, apb_handle k, apb_handle inv_freq, int pos0, int head_dim,
                    apb_task_tag tag);
/* out (+)= in W^T (+ bias): accumulate != 0 adds into out (residual). bias may be NULL. */
int apb_insert_linear(apb_handle in, apb_handle w, apb_handle bias, apb_handle out, int accumulate,
                      apb_task_tag tag);
/* x += down(silu(gate(xn)) * up(xn)). */
int apb_insert_mlp(apb_handle xn, apb_handle w_gate, apb_handle w_up, apb_handle w_down,
                   apb_handle x, apb_task_tag tag);
/* logits (n x vocab) = rmsnorm(x[row0 .. row0+n)) lm_head^T. */
int apb_insert_logits(apb_handle x, int row0, int n, apb_handle norm_w, apb_handle lm_head,
                      apb_handle logits, float eps, apb_task_tag tag);
/* token (1 x 1 int32) = sample(logits row `row`): greedy when temperature <= 0, else
 * temperature + top-p (nucleus) with a counter-based RNG (seed, step) so runs are reproducible. */
int apb_insert_sample(apb_handle logits, int row, apb_handle token, float temperature, float top_p,
                      uint64_t seed, uint64_t step, apb_task_tag tag);
/* Copies rows [0, n) of k and v into rows [dst_row, dst_row + n) of the cache tiles. */
int apb_insert_kv_append(apb_handle k, apb_handle v, apb_handle kc, apb_handle vc, int dst_row,
                         apb_task_tag tag);
/* k16, v16 (bf16 tiles, elemsize 2) = k, v rounded to bf16: the KV cache of a finished layer,
 * kept at half the size (APB_PREC_BF16); attention reads bf16 K/V segments in place. */
int apb_insert_kv_compact(apb_handle k, apb_handle v, apb_handle k16, apb_handle v16, apb_task_tag tag);

/* Attention over a list of KV segments. Query row i has coordinate q_coord0 + i. Key j of a
 * segment has coordinate coord0 + j. A key is visible to a query row iff
 *   q_coord >= min_q_coord  and  (!causal or coord0 + j <= q_coord)   and j < len.
 * This expresses full causal attention (one coordinate system), APB (passing segments are
 * non-causal with min_q_coord = anchor length, so anchor rows skip them), Star, ring and
 * the non-causal merge-decode of non-last hosts. Writes o (n x H*d) and lse (n x H), the
 * natural log-sum-exp of the scaled scores; rows that see no key get o = 0, lse = -inf. */
typedef struct apb_attn_seg {
    apb_handle k, v;       /* (rows >= len) x (Hk*d) */
    int len;
    int coord0;
    int causal;
    int min_q_coord;
} apb_attn_seg;

int apb_insert_attention(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                         int n_heads, int n_kv_heads, int head_dim, apb_handle o, apb_handle lse,
                         apb_task_tag tag);

/* Same for KV heads [kvh0, kvh0 + n_kvh) and their query heads only; o and lse are then
 * read-written (other heads' columns kept), so several head groups can fill one tile (Ulysses). */
int apb_insert_attention_heads(apb_handle q, int q_coord0, const apb_attn_seg *segs, int n_segs,
                               int n_heads, int n_kv_heads, int kvh0, int n_kvh, int head_dim,
                               apb_handle o, apb_handle lse, apb_task_tag tag);

/* ------------------------------------------------------------------ APB / Spava ops */
/* qbar (1 x Hk*d) = mean of q rows [row0, row0+n) over rows and over the G query heads of each
 * KV group: the query-aware selection vector (post-RoPE question queries). */
int apb_insert_qmean(apb_handle q, int row0, int n, int n_kv_heads, int head_dim, apb_handle qbar,
                     apb_task_tag tag);
/* Same over rows [row0[t], row0[t] + n[t]) of several tiles (at most 16). */
int apb_insert_qmean_tiles(const apb_handle *q, const int *row0, const int *n, int n_tiles,
                           int n_kv_heads, int head_dim, apb_handle qbar, apb_task_tag tag);
/* Query-aware compression of a host's block given as tiles k[i], v[i] (rows concatenate, in order):
 * score[j] = <k_j, qbar> per KV head (fp32, no scaling), max-pool (kernel 5, stride 1, pad 2),
 * rows j < exclude_first get -inf, top-`select` per KV head (ties: lower index), selected rows
 * kept in sequence order. ck, cv (select x Hk*d) receive the selected post-RoPE K and V. */
int apb_insert_select(apb_handle qbar, const apb_handle *k, const apb_handle *v, int n_tiles,
                      int exclude_first, int select, int head_dim, apb_handle ck, apb_handle cv,
                      apb_task_tag tag);
/* Same selection from precomputed per-token scores (rows x Hk per tile), e.g. Locret's retaining
 * heads (apb_insert_retain_score). */
int apb_insert_select_scored(const apb_handle *scores, const apb_handle *k, const apb_handle *v,
                             int n_tiles, int exclude_first, int select, int head_dim, apb_handle ck,
                             apb_handle cv, apb_task_tag tag);
/* Locret retaining heads: scores (rows x Hk) = fc2(silu(fc1(cat(q, k, v)))) on PRE-RoPE q, k, v
 * (fc1: (hidden x (H + 2 Hk) d), fc2: (Hk x hidden), no biases). */
int apb_insert_retain_score(apb_handle q, apb_handle k, apb_handle v, apb_handle fc1, apb_handle fc2,
                            apb_handle scores, apb_task_tag tag);

/* Exact merge of partial attention results over disjoint key sets:
 * lse = log sum_i exp(lse_i), o = sum_i exp(lse_i - lse) o_i. lse_out may be NULL. */
/* NCCL allgather of compressed blocks (codelets/codelet_allgather.c): GPU gpu's task packs its n
 * local blocks ck/cv (K x cols each) into rows slot[i] K of gk/gv ((per_gpu x G x K) x cols) and
 * gathers every GPU's slots; runs on the CUDA worker of NCCL rank gpu; `order` (RW, may be NULL)
 * and deps (R) only order it. -ENODEV without CUDA+NCCL. */
int apb_insert_allgather_nccl(const apb_handle *ck, const apb_handle *cv, const int *slot, int n,
                              int gpu, int per_gpu, apb_handle gk, apb_handle gv, apb_handle order,
                              const apb_handle *deps, int ndeps, apb_task_tag tag);
int apb_insert_lse_merge(const apb_handle *o, const apb_handle *lse, int n, int head_dim,
                         apb_handle o_out, apb_handle lse_out, apb_task_tag tag);

#endif
