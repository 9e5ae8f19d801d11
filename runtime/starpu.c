/* SPDX-License-Identifier: MIT */
/** @brief StarPU control: start/stop (with an already-resolved policy), MPI ranks, data handles
 * (tiles), task submission and names, per-op accounting. CUDA and NCCL glue: runtime/cuda.c,
 * runtime/nccl.c (or their *_none.c stand-ins). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apb_build_config.h"
#include "runtime/runtime_internal.h"
#ifdef APB_HAVE_STARPUMPI
#include <starpu_mpi.h>
#endif
#include "schedulers/schedulers.h"

/* cblas from OpenBLAS; declared here to avoid a hard dependency on its extension header. */
extern void openblas_set_num_threads(int n);

static char _apb_sched[64];
static int _apb_started_mpi; /* started through starpu_mpi_init_conf */
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

static _Atomic long long _apb_op_ns[APB_OP_COUNT];
static _Atomic long long _apb_op_ntasks[APB_OP_COUNT];
static _Atomic long long _apb_op_mflops[APB_OP_COUNT];

/* Task names must outlive the task; they are interned in a small table (names repeat per layer). */
#define _APB_NAME_BUCKETS 4096
struct _apb_name { struct _apb_name *next; char s[]; };
static struct _apb_name *_apb_names[_APB_NAME_BUCKETS];
static starpu_pthread_mutex_t _apb_names_lock = STARPU_PTHREAD_MUTEX_INITIALIZER;

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

/* ------------------------------------------------------------------ MPI ranks
 * _apb_mpi: the runtime was started with StarPU-MPI over more than one rank. Then every handle is
 * registered with StarPU-MPI (a tag from a counter that every rank advances identically, because
 * every rank submits the same graph in the same order) and every task goes through
 * starpu_mpi_task_insert. */
static int _apb_mpi, _apb_rank, _apb_nranks = 1;
static int _apb_host_rank[256];
static int _apb_n_ranked;
static int _apb_owner_host = -1;
static int64_t _apb_next_tag = 1;

int apb_runtime_rank(void) { return _apb_rank; }
int apb_runtime_nranks(void) { return _apb_nranks; }

int apb_runtime_mpi_built(void)
{
#ifdef APB_HAVE_STARPUMPI
    return 1;
#else
    return 0;
#endif
}

int apb_runtime_mpi_launched(int *rank, int *size)
{
    /* Open MPI's mpirun, then the PMI variables of MPICH's hydra / Slurm */
    static const char *const vars[][2] = {{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"},
                                          {"PMI_SIZE", "PMI_RANK"}};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *n = getenv(vars[i][0]), *r = getenv(vars[i][1]);
        if (n && r && atoi(n) > 1) {
            if (rank)
                *rank = atoi(r);
            if (size)
                *size = atoi(n);
            return 1;
        }
    }
    if (rank)
        *rank = 0;
    if (size)
        *size = 1;
    return 0;
}

void apb_runtime_place_ranks(const int *rank_of_host, int n)
{
    _apb_n_ranked = 0;
    for (int h = 0; rank_of_host && h < n && h < 256; h++)
        _apb_host_rank[_apb_n_ranked++] = rank_of_host[h];
}

int apb_runtime_rank_of_host(int host)
{
    if (!_apb_mpi || host < 0)
        return 0;
    return host < _apb_n_ranked ? _apb_host_rank[host] : 0;
}

void apb_runtime_set_owner(int host) { _apb_owner_host = host; }

/* Registers a new handle with StarPU-MPI: owned by `rank`, or replicated (rank < 0: every rank
 * holds its own identical copy, STARPU_MPI_PER_NODE). No-op in a single process. */
static void _apb_mpi_register(apb_handle h, int rank)
{
#ifdef APB_HAVE_STARPUMPI
    if (_apb_mpi && h)
        starpu_mpi_data_register(h, _apb_next_tag++, rank < 0 ? STARPU_MPI_PER_NODE : rank);
#else
    (void)h;
    (void)rank;
#endif
}

/* Scheduler hints given to apb_task_insert, set on the task after it is built. */
struct _apb_hints {
    int has_tag, has_where, has_ctx;
    starpu_tag_t tag;
    unsigned long long where;
    unsigned workerorder, sched_ctx, possibly_parallel;
    int color;
    void *sched_data;
};

static void _apb_hints_apply(struct starpu_task *t, const struct _apb_hints *h)
{
    if (h->has_tag)
        t->tag_id = h->tag;
    if (h->has_where)
        t->where = (uint32_t)h->where;
    if (h->has_ctx)
        t->sched_ctx = h->sched_ctx;
    if (h->workerorder)
        t->workerorder = h->workerorder;
    if (h->possibly_parallel)
        t->possibly_parallel = h->possibly_parallel;
    if (h->color)
        t->color = (unsigned)h->color;
    if (h->sched_data)
        t->sched_data = h->sched_data;
}

/* Submits a built task (NULL: not run here); like starpu_task_insert, a task no worker can run is
 * destroyed and reported as -ENODEV. */
static int _apb_submit_built(struct starpu_task *t, const struct _apb_hints *h)
{
    if (!t)
        return 0;
    _apb_hints_apply(t, h);
    if (_apb_trace_active() && t->cl && t->cl->cuda_funcs[0] && !t->callback_func &&
        starpu_cuda_worker_get_count() > 0) {
        struct apb_trace_cb *cb = malloc(sizeof *cb);
        if (cb) { /* the record of a GPU task (runtime/trace.c); the sizes now, while registered */
            cb->task = t;
            _apb_trace_bytes(t, &cb->bytes_in, &cb->bytes_out);
            t->callback_func = _apb_trace_task_done;
            t->callback_arg = cb;
            t->callback_arg_free = 1; /* StarPU frees cb after the callback */
        }
    }
    int rc = starpu_task_submit(t);
    if (rc == -ENODEV) {
        t->destroy = 0;
        starpu_task_destroy(t);
    }
    return rc;
}

int apb_task_insert(struct starpu_codelet *cl, ...)
{
    struct starpu_data_descr fixed[16], *d = fixed;
    int nd = 0, cap = 16, prio = 0, worker = -1, host = -1, rc = 0, arg_type;
    void *cl_arg = NULL;
    size_t cl_arg_size = 0;
    const char *name = NULL;
    double flops = 0;
    struct _apb_hints hints = {0};
    va_list ap;
    va_start(ap, cl);
    while ((arg_type = va_arg(ap, int)) != 0) {
        struct starpu_data_descr one, *add = NULL;
        int nadd = 0;
        if (arg_type == STARPU_DATA_MODE_ARRAY) {
            add = va_arg(ap, struct starpu_data_descr *);
            nadd = va_arg(ap, int);
        } else if (arg_type == STARPU_CL_ARGS) {
            cl_arg = va_arg(ap, void *);
            cl_arg_size = va_arg(ap, size_t);
        } else if (arg_type == STARPU_PRIORITY) {
            prio = va_arg(ap, int);
        } else if (arg_type == STARPU_EXECUTE_ON_WORKER) {
            worker = va_arg(ap, int);
        } else if (arg_type == _APB_ARG_HOST) {
            host = va_arg(ap, int);
        } else if (arg_type == STARPU_NAME) {
            name = va_arg(ap, const char *);
        } else if (arg_type == STARPU_FLOPS) {
            flops = va_arg(ap, double);
        } else if (arg_type == STARPU_TAG_ONLY) {
            hints.tag = va_arg(ap, starpu_tag_t);
            hints.has_tag = 1;
        } else if (arg_type == STARPU_EXECUTE_WHERE) {
            hints.where = va_arg(ap, unsigned long long);
            hints.has_where = 1;
        } else if (arg_type == STARPU_SCHED_CTX) {
            hints.sched_ctx = va_arg(ap, unsigned);
            hints.has_ctx = 1;
        } else if (arg_type == STARPU_WORKER_ORDER) {
            hints.workerorder = va_arg(ap, unsigned);
        } else if (arg_type == STARPU_POSSIBLY_PARALLEL) {
            hints.possibly_parallel = va_arg(ap, unsigned);
        } else if (arg_type == STARPU_TASK_COLOR) {
            hints.color = va_arg(ap, int);
        } else if (arg_type == STARPU_TASK_SCHED_DATA) {
            hints.sched_data = va_arg(ap, void *);
        } else if (arg_type > 0 && arg_type < STARPU_ACCESS_MODE_MAX) {
            one.handle = va_arg(ap, starpu_data_handle_t);
            one.mode = (enum starpu_data_access_mode)arg_type;
            add = &one;
            nadd = 1;
        } else {
            fprintf(stderr, "apb: apb_task_insert(%s): unsupported argument %d (see "
                            "runtime/apb_task.h)\n", cl && cl->name ? cl->name : "?", arg_type);
            rc = -EINVAL;
            break;
        }
        if (nd + nadd > cap) {
            while (nd + nadd > cap)
                cap *= 2;
            struct starpu_data_descr *grown = malloc(sizeof *d * (size_t)cap);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            memcpy(grown, d, sizeof *d * (size_t)nd);
            if (d != fixed)
                free(d);
            d = grown;
        }
        for (int i = 0; i < nadd; i++)
            d[nd++] = add[i];
    }
    va_end(ap);
    if (rc) {
        free(cl_arg);
        if (d != fixed)
            free(d);
        return rc;
    }
#ifdef APB_HAVE_STARPUMPI
    if (_apb_mpi) {
        /* the task runs on its host's rank; host-less tasks (zero fills) on the owner of what they
         * write. Data owned elsewhere is received before, and written data sent back after
         * (StarPU-MPI's build / submit / post-build sequence, run on every rank). */
        int xrank = host >= 0 ? apb_runtime_rank_of_host(host) : -1;
        for (int i = 0; i < nd && xrank < 0; i++)
            if (d[i].mode & STARPU_W)
                xrank = starpu_mpi_data_get_rank(d[i].handle);
        if (xrank < 0)
            xrank = 0;
#define _APB_MPI_ARGS                                                                             \
    STARPU_EXECUTE_ON_NODE, xrank, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS, cl_arg,          \
        cl_arg_size, STARPU_PRIORITY, prio, STARPU_EXECUTE_ON_WORKER, worker, STARPU_NAME, name,   \
        STARPU_FLOPS, flops, 0
        struct starpu_task *t = starpu_mpi_task_build(MPI_COMM_WORLD, cl, _APB_MPI_ARGS);
        rc = _apb_submit_built(t, &hints);
        int rc2 = starpu_mpi_task_post_build(MPI_COMM_WORLD, cl, _APB_MPI_ARGS);
#undef _APB_MPI_ARGS
        if (!rc)
            rc = rc2;
        if (!t)
            free(cl_arg); /* not run here: StarPU never took the copy */
    } else
#endif
    {
        struct starpu_task *t = starpu_task_build(cl, STARPU_DATA_MODE_ARRAY, d, nd, STARPU_CL_ARGS,
                                                  cl_arg, cl_arg_size, STARPU_PRIORITY, prio,
                                                  STARPU_EXECUTE_ON_WORKER, worker, STARPU_NAME, name,
                                                  STARPU_FLOPS, flops, 0);
        if (t) {
            rc = _apb_submit_built(t, &hints);
        } else {
            free(cl_arg); /* a failed build leaves the copy to us */
            rc = -EINVAL;
        }
    }
    (void)host;
    if (d != fixed)
        free(d);
    return rc;
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

/* Several ranks on one node, each seeing all of its GPUs: unless the user chose
 * (CUDA_VISIBLE_DEVICES, STARPU_WORKERS_CUDAID), local rank i of n drives GPUs i, i + n, ...
 * (GPU i mod count when there are fewer GPUs than ranks), so that ranks do not share GPUs: NCCL
 * takes one rank per GPU, and two processes on one GPU compete for its memory. The local rank
 * comes from the launcher's environment (Open MPI, MPICH/Hydra). */
static void _apb_split_gpus(struct starpu_conf *conf)
{
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK"), *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!lr || !ls) {
        lr = getenv("MPI_LOCALRANKID");
        ls = getenv("MPI_LOCALNRANKS");
    }
    if (conf->ncuda == 0 || !lr || !ls || getenv("CUDA_VISIBLE_DEVICES") ||
        getenv("STARPU_WORKERS_CUDAID"))
        return;
    int rank = atoi(lr), size = atoi(ls), ndev = apb_runtime_cuda_devices(), n = 0;
    if (size <= 1 || rank < 0 || rank >= size || ndev <= 0)
        return;
    if (size <= ndev)
        for (int d = rank; d < ndev && n < STARPU_NMAXWORKERS; d += size)
            conf->workers_cuda_gpuid[n++] = (unsigned)d;
    else
        conf->workers_cuda_gpuid[n++] = (unsigned)(rank % ndev);
    if (conf->ncuda > 0 && conf->ncuda < n)
        n = conf->ncuda;
    conf->use_explicit_workers_cuda_gpuid = 1;
    conf->ncuda = n;
}

/* StarPU's diagnostics (_STARPU_DISP: bus calibration, perfmodel deviations, ...) are off unless
 * asked for (opts->verbose or the user's own STARPU_SILENT). The first start on a machine measures
 * the memory bus for several seconds: say so in one line instead of StarPU's two. */
static void _apb_quiet_starpu(const apb_runtime_opts *opts)
{
    if ((opts && opts->verbose) || getenv("STARPU_SILENT"))
        return;
    setenv("STARPU_SILENT", "1", 0);
    /* StarPU's bus model: $STARPU_PERF_MODEL_DIR/bus/ or <home>/.starpu/sampling/bus/, home from
     * XDG_CACHE_HOME, STARPU_HOME, HOME; file <hostname up to the first dot>.config */
    char host[256] = "", path[4096];
    const char *h = getenv("STARPU_HOSTNAME");
    if (h && *h)
        snprintf(host, sizeof host, "%s", h);
    else if (gethostname(host, sizeof host - 1) == 0 && strchr(host, '.'))
        *strchr(host, '.') = 0;
    const char *dir = getenv("STARPU_PERF_MODEL_DIR"), *home = getenv("XDG_CACHE_HOME");
    if (!home)
        home = getenv("STARPU_HOME");
    if (!home)
        home = getenv("HOME");
    if (dir)
        snprintf(path, sizeof path, "%s/bus/%s.config", dir, host);
    else
        snprintf(path, sizeof path, "%s/.starpu/sampling/bus/%s.config", home ? home : "/tmp", host);
    if (access(path, F_OK) != 0)
        fprintf(stderr, "apb: first run on this machine: StarPU measures the memory bus once (a few "
                        "seconds; kept in %.*s)\n", (int)(strrchr(path, '/') - path), path);
}

int apb_runtime_init(const apb_runtime_opts *opts, apb_err *err)
{
    _apb_quiet_starpu(opts);
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
    if (opts && opts->gpu_mem_gib > 0) { /* StarPU reads it at init; it evicts to RAM beyond */
        char mib[32];
        snprintf(mib, sizeof mib, "%.0f", opts->gpu_mem_gib * 1024.0);
        setenv("STARPU_LIMIT_CUDA_MEM", mib, 1);
    }
    _apb_prec = opts ? opts->precision : APB_PREC_FP32;
    _apb_task_err.code = 0;
    conf.nopencl = 0;
    _apb_blas_single_thread();
    int ret;
    _apb_mpi = 0;
    _apb_rank = 0;
    _apb_nranks = 1;
    _apb_next_tag = 1;
    if (opts && opts->mpi) {
#ifdef APB_HAVE_STARPUMPI
        /* Several ranks on one node: StarPU 1.3 binds worker i to core i in every process, so
         * all ranks would share the first cores. Leave binding to the launcher (its own binding,
         * or none when oversubscribed) unless the user chose; a rank bound to one or two cores
         * gets that many workers and no core reserved for StarPU-MPI's progression thread. */
        const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        if (!local || atoi(local) > 1)
            setenv("STARPU_WORKERS_NOBIND", "1", 0);
        _apb_split_gpus(&conf);
        cpu_set_t cs;
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        if (conf.ncpus < 0 && sched_getaffinity(0, sizeof cs, &cs) == 0 && CPU_COUNT(&cs) < online &&
            CPU_COUNT(&cs) <= 2)
            conf.ncpus = CPU_COUNT(&cs);
        /* StarPU-MPI calls MPI_Init_thread (from its progression thread) and starpu_init */
        ret = starpu_mpi_init_conf(NULL, NULL, 1, MPI_COMM_WORLD, &conf);
        if (ret == 0) {
            starpu_mpi_comm_rank(MPI_COMM_WORLD, &_apb_rank);
            starpu_mpi_comm_size(MPI_COMM_WORLD, &_apb_nranks);
            _apb_mpi = _apb_nranks > 1;
        }
#else
        return apb_fail(err, APB_E_USAGE, "this apb was built without StarPU-MPI: run it as one "
                        "process (reconfigure with starpumpi-1.3 found for mpirun)");
#endif
    } else {
        ret = starpu_init(&conf);
    }
    _apb_started_mpi = opts && opts->mpi && ret == 0;
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
    _apb_cuda_start(); /* cuBLAS handles (runtime/cuda.c) */
    apb_op_stats_reset();
    return APB_OK;
}

void apb_runtime_shutdown(void)
{
    _apb_cuda_stop(); /* device scratch, cuBLAS handles, NCCL communicators (runtime/cuda.c) */
#ifdef APB_HAVE_STARPUMPI
    if (_apb_started_mpi) {
        starpu_mpi_shutdown(); /* waits for every rank, MPI_Finalize, starpu_shutdown */
        _apb_started_mpi = _apb_mpi = 0;
        return;
    }
#endif
    starpu_shutdown();
}

int apb_runtime_wait_all(apb_err *err)
{
#ifdef APB_HAVE_STARPUMPI
    if (_apb_mpi) { /* local tasks, then a barrier: every rank's tasks (and their receives) done */
        starpu_mpi_wait_for_all(MPI_COMM_WORLD);
        return _apb_take_task_error(err);
    }
#endif
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

int apb_runtime_cuda_workers(int *ids, int max) { return _apb_workers_of_type(STARPU_CUDA_WORKER, ids, max); }

const char *apb_runtime_sched_name(void) { return _apb_sched; }
int apb_runtime_pending(void) { return starpu_task_nsubmitted(); }
int apb_runtime_nworkers(void) { return (int)starpu_worker_get_count(); }

/* ------------------------------------------------------------------ data */
apb_handle apb_tile_new(int rows, int cols, size_t elemsize)
{
    apb_handle h;
    starpu_matrix_data_register(&h, -1, 0, cols, cols, rows, elemsize);
    _apb_mpi_register(h, apb_runtime_rank_of_host(_apb_owner_host));
    return h;
}

apb_handle apb_tile_from(void *data, int rows, int cols, size_t elemsize)
{
    apb_handle h;
    starpu_matrix_data_register(&h, STARPU_MAIN_RAM, (uintptr_t)data, cols, cols, rows, elemsize);
    _apb_mpi_register(h, -1); /* replicated: every rank registers its own identical copy */
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
size_t apb_tile_elemsize(apb_handle h) { return starpu_matrix_get_elemsize(h); }
int apb_tile_cols(apb_handle h) { return (int)starpu_matrix_get_nx(h); }

int apb_tile_read(apb_handle h, void *dst, size_t dst_bytes, apb_err *err)
{
    size_t rows = starpu_matrix_get_ny(h), cols = starpu_matrix_get_nx(h);
    size_t es = starpu_matrix_get_elemsize(h);
    if (rows * cols * es > dst_bytes)
        return apb_fail(err, APB_E_RUNTIME, "apb_tile_read: destination too small");
#ifdef APB_HAVE_STARPUMPI
    /* collective: the owner sends its value to every other rank (cached until it is written) */
    if (_apb_mpi && starpu_mpi_data_get_rank(h) >= 0)
        starpu_mpi_get_data_on_all_nodes_detached(MPI_COMM_WORLD, h);
#endif
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

int apb_runtime_exchange(const void *mine, size_t n, void *all, apb_err *err)
{
    if (!_apb_mpi || n == 0) {
        memcpy(all, mine, n);
        return APB_OK;
    }
#ifdef APB_HAVE_STARPUMPI
    /* one n-byte tile per rank, owned by it: the owner writes its bytes, then every rank reads
     * every tile (apb_tile_read is collective); no MPI call of ours beside StarPU-MPI's thread */
    for (int r = 0; r < _apb_nranks; r++) {
        apb_handle h;
        starpu_matrix_data_register(&h, -1, 0, (uint32_t)n, (uint32_t)n, 1, 1);
        _apb_mpi_register(h, r);
        int rc = APB_OK;
        if (r == _apb_rank) {
            if (starpu_data_acquire(h, STARPU_W) != 0) {
                rc = apb_fail(err, APB_E_RUNTIME, "exchange between ranks: acquiring a tile failed");
            } else {
                memcpy(starpu_data_get_local_ptr(h), mine, n);
                starpu_data_release(h);
            }
        }
        if (!rc)
            rc = apb_tile_read(h, (char *)all + (size_t)r * n, n, err);
        starpu_data_unregister(h);
        if (rc)
            return rc;
    }
    return APB_OK;
#else
    return apb_fail(err, APB_E_RUNTIME, "exchange between ranks without StarPU-MPI");
#endif
}
