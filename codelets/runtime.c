/* SPDX-License-Identifier: MIT */
/** @brief StarPU start/stop, data handles, task names and per-op accounting. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include <starpu_cublas_v2.h>

#include "codelets/cuda/apb_cuda.h"
#endif

/* cblas from OpenBLAS; declared here to avoid a hard dependency on its extension header. */
extern void openblas_set_num_threads(int n);

static char _apb_sched[64];
static int _apb_prec = APB_PREC_FP32;
/* The first error a task body reported (_apb_task_fail); 0 when none. */
static apb_err _apb_task_err;
static starpu_pthread_mutex_t _apb_task_err_lock = STARPU_PTHREAD_MUTEX_INITIALIZER;

void _apb_task_fail(int code, const char *fmt, ...)
{
    STARPU_PTHREAD_MUTEX_LOCK(&_apb_task_err_lock);
    if (!_apb_task_err.code) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(_apb_task_err.msg, sizeof _apb_task_err.msg, fmt, ap);
        va_end(ap);
        _apb_task_err.code = code;
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&_apb_task_err_lock);
}

/* Returns (and clears) the sticky task error into err. */
static int _apb_take_task_error(apb_err *err)
{
    STARPU_PTHREAD_MUTEX_LOCK(&_apb_task_err_lock);
    int code = _apb_task_err.code;
    if (code) {
        apb_fail(err, code, "%s", _apb_task_err.msg);
        _apb_task_err.code = 0;
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&_apb_task_err_lock);
    return code;
}

int _apb_precision(void) { return _apb_prec; }
apb_precision apb_runtime_precision(void) { return (apb_precision)_apb_prec; }

const float *_apb_weight_rows_f32(void *buf, int r0, int n, float *dst)
{
    int ld = _APB_LD(buf), cols = _APB_COLS(buf);
    if (_apb_elem(buf) == 4)
        return (const float *)_APB_PTR(buf) + (size_t)r0 * ld;
    const uint16_t *src = (const uint16_t *)_APB_PTR(buf) + (size_t)r0 * ld;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cols; j++) {
            uint32_t u = (uint32_t)src[(size_t)i * ld + j] << 16;
            memcpy(&dst[(size_t)i * cols + j], &u, 4);
        }
    return dst;
}
static _Atomic long long _apb_op_ns[APB_OP_COUNT];
static _Atomic long long _apb_op_ntasks[APB_OP_COUNT];
static _Atomic long long _apb_op_mflops[APB_OP_COUNT];

/* Task names must outlive the task; they are interned in a small table (names repeat per layer). */
#define _APB_NAME_BUCKETS 4096
struct _apb_name { struct _apb_name *next; char s[]; };
static struct _apb_name *_apb_names[_APB_NAME_BUCKETS];
static starpu_pthread_mutex_t _apb_names_lock = STARPU_PTHREAD_MUTEX_INITIALIZER;

static const char *const _apb_op_names[APB_OP_COUNT] = {
    "embed", "rmsnorm", "qkv", "rope", "attention", "linear", "mlp", "logits", "sample", "kv_append",
    "qmean", "select", "lse_merge", "retain",
};

static int _apb_host_worker[256];
static int _apb_n_placed;

void apb_runtime_place_hosts(const int *worker_of_host, int n)
{
    _apb_n_placed = 0;
    for (int h = 0; worker_of_host && h < n && h < 256; h++)
        _apb_host_worker[_apb_n_placed++] = worker_of_host[h];
}

int _apb_worker_of(apb_task_tag tag)
{
    return tag.host >= 0 && tag.host < _apb_n_placed ? _apb_host_worker[tag.host] : -1;
}

/* Worker ids of one type: the first `max` into ids, the count returned (StarPU's own call fails
 * with -ERANGE when the list is too short). */
static int _apb_workers_of_type(enum starpu_worker_archtype t, int *ids, int max)
{
    int all[STARPU_NMAXWORKERS];
    int n = starpu_worker_get_ids_by_type(t, all, STARPU_NMAXWORKERS);
    for (int i = 0; i < n && i < max; i++)
        ids[i] = all[i];
    return n < 0 ? 0 : n;
}

int apb_runtime_cpu_workers(int *ids, int max) { return _apb_workers_of_type(STARPU_CPU_WORKER, ids, max); }

const char *apb_op_name(enum apb_op op) { return op < APB_OP_COUNT ? _apb_op_names[op] : "?"; }

void _apb_op_account(enum apb_op op, double t0_ns, double flops)
{
    _apb_trace_record(op, t0_ns, _apb_now_ns());
    atomic_fetch_add(&_apb_op_ns[op], (long long)(_apb_now_ns() - t0_ns));
    atomic_fetch_add(&_apb_op_ntasks[op], 1);
    atomic_fetch_add(&_apb_op_mflops[op], (long long)(flops * 1e-6));
}

void _apb_op_count(enum apb_op op, double flops)
{
    atomic_fetch_add(&_apb_op_ntasks[op], 1);
    atomic_fetch_add(&_apb_op_mflops[op], (long long)(flops * 1e-6));
}

void apb_op_stats_get(apb_op_stats *out)
{
    for (int i = 0; i < APB_OP_COUNT; i++) {
        out->ns[i] = (double)atomic_load(&_apb_op_ns[i]);
        out->ntasks[i] = atomic_load(&_apb_op_ntasks[i]);
        out->flops[i] = (double)atomic_load(&_apb_op_mflops[i]) * 1e6;
    }
}

void apb_op_stats_reset(void)
{
    for (int i = 0; i < APB_OP_COUNT; i++) {
        atomic_store(&_apb_op_ns[i], 0);
        atomic_store(&_apb_op_ntasks[i], 0);
        atomic_store(&_apb_op_mflops[i], 0);
    }
}

const char *_apb_task_name(const char *op, apb_task_tag tag)
{
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%s", op);
    if (tag.layer >= 0)
        n += snprintf(buf + n, sizeof buf - n, "-%d", tag.layer);
    if (tag.host >= 0)
        snprintf(buf + n, sizeof buf - n, "-h%d", tag.host);
    unsigned h = 2166136261u;
    for (const char *p = buf; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h %= _APB_NAME_BUCKETS;
    STARPU_PTHREAD_MUTEX_LOCK(&_apb_names_lock);
    struct _apb_name *e;
    for (e = _apb_names[h]; e; e = e->next)
        if (strcmp(e->s, buf) == 0)
            break;
    if (!e) {
        size_t len = strlen(buf) + 1;
        e = malloc(sizeof *e + len);
        if (e) {
            memcpy(e->s, buf, len);
            e->next = _apb_names[h];
            _apb_names[h] = e;
        }
    }
    STARPU_PTHREAD_MUTEX_UNLOCK(&_apb_names_lock);
    return e ? e->s : op;
}

struct _apb_scratch {
    float *p[_APB_SCRATCH_SLOTS];
    size_t n[_APB_SCRATCH_SLOTS];
};
static pthread_key_t _apb_scratch_key;
static pthread_once_t _apb_scratch_once = PTHREAD_ONCE_INIT;

static void _apb_scratch_free(void *v)
{
    struct _apb_scratch *s = v;
    for (int i = 0; i < _APB_SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

static void _apb_scratch_init(void) { pthread_key_create(&_apb_scratch_key, _apb_scratch_free); }

float *_apb_thread_scratch(int slot, size_t n)
{
    pthread_once(&_apb_scratch_once, _apb_scratch_init);
    struct _apb_scratch *s = pthread_getspecific(_apb_scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(_apb_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (n > s->n[slot]) {
        free(s->p[slot]);
        s->p[slot] = malloc(sizeof(float) * n);
        s->n[slot] = s->p[slot] ? n : 0;
    }
    return s->p[slot];
}

void _apb_blas_single_thread(void) { openblas_set_num_threads(1); }

int apb_runtime_init(const apb_runtime_opts *opts, apb_err *err)
{
    struct starpu_conf conf;
    starpu_conf_init(&conf);
    const char *sched = opts && opts->sched ? opts->sched : NULL;
    if (!sched && !getenv("STARPU_SCHED"))
        sched = "lws";
    if (sched)
        conf.sched_policy_name = sched;
    if (opts && opts->ncpus >= 0)
        conf.ncpus = opts->ncpus;
    if (opts && opts->ncuda >= 0)
        conf.ncuda = opts->ncuda;
    if (opts && opts->calibrate)
        conf.calibrate = opts->calibrate;
    _apb_prec = opts ? opts->precision : APB_PREC_FP32;
    _apb_task_err.code = 0;
    conf.nopencl = 0;
    /* StarPU prints a line per unknown policy and falls back; reject unknown names ourselves. */
    if (sched) {
        int found = 0;
        for (struct starpu_sched_policy **p = starpu_sched_get_predefined_policies(); *p; p++)
            if (strcmp((*p)->policy_name, sched) == 0)
                found = 1;
        if (!found)
            return apb_fail(err, APB_E_USAGE, "unknown scheduler '%s' (see --sched list)", sched);
    }
    _apb_blas_single_thread();
    int ret = starpu_init(&conf);
    if (ret == -ENODEV)
        return apb_fail(err, APB_E_RUNTIME, "StarPU found no worker to run on");
    if (ret != 0)
        return apb_fail(err, APB_E_RUNTIME, "starpu_init failed (%d)", ret);
    struct starpu_sched_policy *pol = starpu_sched_ctx_get_sched_policy(0);
    snprintf(_apb_sched, sizeof _apb_sched, "%s", pol && pol->policy_name ? pol->policy_name : "?");
    /* Each CPU worker runs single-threaded BLAS: set it again from every worker thread. */
    starpu_execute_on_each_worker((void (*)(void *))_apb_blas_single_thread, NULL, STARPU_CPU);
    if (_apb_prec < 0) /* auto: bf16 tensor cores when GPUs run the graph */
        _apb_prec = starpu_cuda_worker_get_count() > 0 ? APB_PREC_BF16 : APB_PREC_FP32;
#ifdef APB_CUDA
    /* One cuBLAS handle per CUDA worker, bound to the worker's stream (starpu_cublas_get_local_handle). */
    starpu_cublas_init();
#endif
    apb_op_stats_reset();
    return APB_OK;
}

void apb_runtime_shutdown(void)
{
#ifdef APB_CUDA
    starpu_task_wait_for_all();
    starpu_execute_on_each_worker(_apb_cuda_scratch_release, NULL, STARPU_CUDA);
    starpu_cublas_shutdown();
#endif
    starpu_shutdown();
}

int apb_runtime_wait_all(apb_err *err)
{
    int ret = starpu_task_wait_for_all();
    if (ret != 0)
        return apb_fail(err, APB_E_RUNTIME, "starpu_task_wait_for_all failed (%d)", ret);
    return _apb_take_task_error(err);
}

double apb_runtime_gpu_memory(void)
{
    int ids[STARPU_NMAXWORKERS], seen[STARPU_MAXNODES] = {0};
    int n = _apb_workers_of_type(STARPU_CUDA_WORKER, ids, STARPU_NMAXWORKERS);
    double total = 0;
    for (int i = 0; i < n && i < STARPU_NMAXWORKERS; i++) {
        unsigned node = starpu_worker_get_memory_node(ids[i]);
        if (node < STARPU_MAXNODES && !seen[node]) {
            seen[node] = 1;
            starpu_ssize_t b = starpu_memory_get_total(node);
            total += b > 0 ? (double)b : 0;
        }
    }
    return total;
}

int apb_runtime_has_cuda(void)
{
#ifdef APB_CUDA
    return 1;
#else
    return 0;
#endif
}

int apb_runtime_cuda_workers(int *ids, int max) { return _apb_workers_of_type(STARPU_CUDA_WORKER, ids, max); }

const char *apb_runtime_sched_name(void) { return _apb_sched; }
int apb_runtime_pending(void) { return starpu_task_nsubmitted(); }
int apb_runtime_nworkers(void) { return (int)starpu_worker_get_count(); }

/* ------------------------------------------------------------------ data */
apb_handle apb_tile_new(int rows, int cols, size_t elemsize)
{
    apb_handle h;
    starpu_matrix_data_register(&h, -1, 0, cols, cols, rows, elemsize);
    return h;
}

static void _apb_zero_cpu(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    size_t es = STARPU_MATRIX_GET_ELEMSIZE(buffers[0]), ld = STARPU_MATRIX_GET_LD(buffers[0]);
    size_t nx = STARPU_MATRIX_GET_NX(buffers[0]), ny = STARPU_MATRIX_GET_NY(buffers[0]);
    char *p = (char *)STARPU_MATRIX_GET_PTR(buffers[0]);
    for (size_t r = 0; r < ny; r++)
        memset(p + r * ld * es, 0, nx * es);
}

#ifdef APB_CUDA
static void _apb_zero_cuda(void *buffers[], void *cl_arg)
{
    (void)cl_arg;
    apb_cuda_zero(_APB_PTR(buffers[0]), _APB_LD(buffers[0]), _APB_ROWS(buffers[0]),
                  _APB_COLS(buffers[0]), _apb_elem(buffers[0]), starpu_cuda_get_local_stream());
}
#endif

static struct starpu_codelet _apb_zero_cl = {
    .cpu_funcs = {_apb_zero_cpu},
    .cpu_funcs_name = {"_apb_zero_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_zero_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 1,
    .modes = {STARPU_W},
    .name = "zero",
};

apb_handle apb_tile_new_zeroed(int rows, int cols, size_t elemsize)
{
    apb_handle h = apb_tile_new(rows, cols, elemsize);
    if (starpu_task_insert(&_apb_zero_cl, STARPU_W, h, STARPU_NAME, "zero", 0) != 0)
        fprintf(stderr, "apb: submitting zero fill failed\n");
    return h;
}

apb_handle apb_tile_from(void *data, int rows, int cols, size_t elemsize)
{
    apb_handle h;
    starpu_matrix_data_register(&h, STARPU_MAIN_RAM, (uintptr_t)data, cols, cols, rows, elemsize);
    return h;
}

void apb_handle_free(apb_handle h)
{
    if (h)
        starpu_data_unregister_submit(h);
}

void apb_handle_free_now(apb_handle h)
{
    if (h)
        starpu_data_unregister(h);
}

void apb_handle_wont_use(apb_handle h)
{
    if (h)
        starpu_data_wont_use(h);
}

int apb_tile_rows(apb_handle h) { return (int)starpu_matrix_get_ny(h); }
int apb_tile_cols(apb_handle h) { return (int)starpu_matrix_get_nx(h); }

int apb_tile_read(apb_handle h, void *dst, size_t dst_bytes, apb_err *err)
{
    size_t rows = starpu_matrix_get_ny(h), cols = starpu_matrix_get_nx(h);
    size_t es = starpu_matrix_get_elemsize(h);
    if (rows * cols * es > dst_bytes)
        return apb_fail(err, APB_E_RUNTIME, "apb_tile_read: destination too small");
    int ret = starpu_data_acquire(h, STARPU_R);
    if (ret != 0)
        return apb_fail(err, APB_E_RUNTIME, "starpu_data_acquire failed (%d)", ret);
    const char *src = (const char *)starpu_data_get_local_ptr(h);
    size_t ld = starpu_matrix_get_local_ld(h);
    for (size_t r = 0; r < rows; r++)
        memcpy((char *)dst + r * cols * es, src + r * ld * es, cols * es);
    starpu_data_release(h);
    return _apb_take_task_error(err);
}
