/* SPDX-License-Identifier: MIT */
/** @brief StarPU start/stop, data handles, task names and per-op accounting. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/codelet_common.h"
#include "schedulers/schedulers.h"

/* cblas from OpenBLAS; declared here to avoid a hard dependency on its extension header. */
extern void openblas_set_num_threads(int n);

static char _apb_sched[64];
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

int apb_runtime_cpu_workers(int *ids, int max)
{
    return starpu_worker_get_ids_by_type(STARPU_CPU_WORKER, ids, max);
}

const char *apb_op_name(enum apb_op op) { return op < APB_OP_COUNT ? _apb_op_names[op] : "?"; }

void _apb_op_account(enum apb_op op, double t0_ns, double flops)
{
    _apb_trace_record(op, t0_ns, _apb_now_ns());
    atomic_fetch_add(&_apb_op_ns[op], (long long)(_apb_now_ns() - t0_ns));
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
    if (opts && opts->sched_lib) {
        const char *lib_name;
        int rc = apb_sched_load_lib(opts->sched_lib, &lib_name, err);
        if (rc)
            return rc;
        if (!sched)
            sched = lib_name;
    }
    if (!sched)
        sched = getenv("STARPU_SCHED") && *getenv("STARPU_SCHED") ? getenv("STARPU_SCHED") : "lws";
    /* The policy is always passed as a struct (ours, a loaded one or StarPU's): an unknown name is
     * an error rather than StarPU's fallback, and --sched wins over STARPU_SCHED. */
    struct starpu_sched_policy *policy;
    int rc = apb_sched_lookup(sched, &policy, err);
    if (rc)
        return rc;
    conf.sched_policy = policy;
    conf.sched_policy_name = NULL;
    if (opts && opts->ncpus >= 0)
        conf.ncpus = opts->ncpus;
    if (opts && opts->ncuda >= 0)
        conf.ncuda = opts->ncuda;
    if (opts && opts->calibrate)
        conf.calibrate = opts->calibrate;
    conf.nopencl = 0;
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
    apb_op_stats_reset();
    return APB_OK;
}

void apb_runtime_shutdown(void) { starpu_shutdown(); }

int apb_runtime_wait_all(apb_err *err)
{
    int ret = starpu_task_wait_for_all();
    if (ret != 0)
        return apb_fail(err, APB_E_RUNTIME, "starpu_task_wait_for_all failed (%d)", ret);
    return APB_OK;
}

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

static struct starpu_perfmodel _apb_zero_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_zero",
};

static struct starpu_codelet _apb_zero_cl = {
    .model = &_apb_zero_model,
    .cpu_funcs = {_apb_zero_cpu},
    .cpu_funcs_name = {"_apb_zero_cpu"},
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
    return APB_OK;
}
