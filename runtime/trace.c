/* SPDX-License-Identifier: MIT */
/**
 * @brief Task traces: Chrome/Perfetto JSON, SVG Gantt chart, per-worker busy summary.
 *
 * Records of CPU tasks are appended by the task bodies themselves (through _apb_op_account), those
 * of GPU tasks by their callback from StarPU's profiling times; each worker appends to its own
 * array, so recording takes no lock. Times are CLOCK_MONOTONIC nanoseconds.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_internal.h"

struct _apb_trace_rec {
    const char *name; /* interned task name (lives until exit) */
    int op;
    double t0, t1;
    /* from StarPU's task profiling (enabled with the trace): scheduler push + pop time, data
     * acquisition (fetch/transfer + wait for the data) before the body, in ns; -1 = unknown */
    float push_ns, pop_ns, fetch_ns;
    int64_t bytes_in, bytes_out; /* sizes of the buffers read / written */
    double flops;                 /* the task's STARPU_FLOPS (0 when it has none) */
};

struct _apb_trace_worker {
    struct _apb_trace_rec *rec;
    size_t n, cap;
};

static atomic_int _apb_trace_on;
static struct _apb_trace_worker _apb_tw[STARPU_NMAXWORKERS];

/* The kinds are the op table's (common/apb_ops.h), as for the schedulers. */
enum _apb_kind { _APB_K_COMPUTE = APB_KIND_COMPUTE, _APB_K_COMPRESS = APB_KIND_COMPRESS,
                 _APB_K_COMM = APB_KIND_COMM, _APB_K_ATTN = APB_KIND_ATTENTION, _APB_K_COUNT = APB_KIND_COUNT };
static const char *const _apb_kind_color[_APB_K_COUNT] = {"#4e79a7", "#f28e2b", "#e15759", "#59a14f"};

static enum _apb_kind _apb_kind_of(int op) { return (enum _apb_kind)apb_op_kind((enum apb_op)op); }

static const char *_apb_kind_str(enum _apb_kind k) { return apb_op_kind_name((enum apb_sched_kind)k); }

static double _apb_ts_ns(const struct timespec *t) { return t->tv_sec * 1e9 + t->tv_nsec; }

static float _apb_span_ns(const struct timespec *a, const struct timespec *b)
{
    if ((a->tv_sec == 0 && a->tv_nsec == 0) || (b->tv_sec == 0 && b->tv_nsec == 0))
        return -1;
    double d = _apb_ts_ns(b) - _apb_ts_ns(a);
    return d >= 0 ? (float)d : -1;
}

/* StarPU's task profiling gives the push/pop/fetch times of every task (tasks submitted while it is
 * on carry a profiling_info), and the bus statistics. */
void apb_trace_enable(int on)
{
    atomic_store(&_apb_trace_on, on);
    starpu_profiling_status_set(on ? STARPU_PROFILING_ENABLE : STARPU_PROFILING_DISABLE);
}

void apb_trace_reset(void)
{
    for (int w = 0; w < STARPU_NMAXWORKERS; w++)
        _apb_tw[w].n = 0;
}

/* Sizes of the buffers a task reads and writes (its handles must still be registered). */
void _apb_trace_bytes(struct starpu_task *task, int64_t *in, int64_t *out)
{
    *in = *out = 0;
    int nb = STARPU_TASK_GET_NBUFFERS(task);
    for (int i = 0; i < nb; i++) {
        starpu_data_handle_t h = STARPU_TASK_GET_HANDLE(task, i);
        enum starpu_data_access_mode m = STARPU_TASK_GET_MODE(task, i);
        int64_t sz = h ? (int64_t)starpu_data_get_size(h) : 0;
        if (m & STARPU_R)
            *in += sz;
        if (m & STARPU_W)
            *out += sz;
    }
}

/* Appends one record to worker w's array (only that worker's thread appends to it). */
static void _apb_trace_push(int w, struct starpu_task *task, enum apb_op op, double t0_ns, double t1_ns,
                            int64_t bytes_in, int64_t bytes_out)
{
    if (w < 0 || w >= STARPU_NMAXWORKERS)
        return;
    struct _apb_trace_worker *tw = &_apb_tw[w];
    if (tw->n == tw->cap) {
        size_t cap = tw->cap ? tw->cap * 2 : 4096;
        struct _apb_trace_rec *r = realloc(tw->rec, cap * sizeof *r);
        if (!r)
            return; /* drop the record rather than fail the task */
        tw->rec = r;
        tw->cap = cap;
    }
    struct _apb_trace_rec *r = &tw->rec[tw->n++];
    *r = (struct _apb_trace_rec){task && task->name ? task->name : apb_op_name(op), (int)op, t0_ns,
                                 t1_ns, -1, -1, -1, bytes_in, bytes_out, 0.0};
    if (!task)
        return;
    r->flops = task->flops > 0 ? task->flops : 0.0;
    const struct starpu_profiling_task_info *pi = task->profiling_info;
    if (pi) {
        r->push_ns = _apb_span_ns(&pi->push_start_time, &pi->push_end_time);
        r->pop_ns = _apb_span_ns(&pi->pop_start_time, &pi->pop_end_time);
        r->fetch_ns = _apb_span_ns(&pi->acquire_data_start_time, &pi->acquire_data_end_time);
    }
}

/* CPU task bodies record themselves (through _apb_op_account): their start and end are the body's. */
void _apb_trace_record(enum apb_op op, double t0_ns, double t1_ns)
{
    if (!atomic_load_explicit(&_apb_trace_on, memory_order_relaxed))
        return;
    struct starpu_task *task = starpu_task_get_current(); /* running: its handles are registered */
    int64_t in = 0, out = 0;
    if (task)
        _apb_trace_bytes(task, &in, &out);
    _apb_trace_push(starpu_worker_get_id(), task, op, t0_ns, t1_ns, in, out);
}

int _apb_trace_active(void) { return atomic_load_explicit(&_apb_trace_on, memory_order_relaxed); }

/* GPU task bodies (STARPU_CUDA_ASYNC) return as soon as their kernels are queued, so their record
 * comes from StarPU's profiling times instead: start = body called, end = the stream event seen
 * complete by the driver. It is written from the task's callback, which runs on the worker that
 * ran the task; StarPU's clock is converted to ours by the offset between the two clocks now. */
void _apb_trace_task_done(void *arg)
{
    const struct apb_trace_cb *cb = arg;
    struct starpu_task *task = cb ? cb->task : NULL;
    const struct starpu_profiling_task_info *pi = task ? task->profiling_info : NULL;
    int w = starpu_worker_get_id();
    if (!pi || w < 0 || starpu_worker_get_type(w) != STARPU_CUDA_WORKER || !_apb_trace_active())
        return;
    enum apb_op op = apb_op_of_name(task->cl ? task->cl->name : NULL);
    if (op == APB_OP_COUNT)
        return; /* zero fills: not an op of the model */
    double off = _apb_now_ns() - starpu_timing_now() * 1e3;
    _apb_trace_push(w, task, op, _apb_ts_ns(&pi->start_time) + off, _apb_ts_ns(&pi->end_time) + off, cb->bytes_in,
                    cb->bytes_out);
}

static double _apb_trace_origin(double *end)
{
    double t0 = 1e300, t1 = 0;
    for (int w = 0; w < STARPU_NMAXWORKERS; w++)
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            t0 = _apb_tw[w].rec[i].t0 < t0 ? _apb_tw[w].rec[i].t0 : t0;
            t1 = _apb_tw[w].rec[i].t1 > t1 ? _apb_tw[w].rec[i].t1 : t1;
        }
    *end = t1;
    return t0;
}

static int _apb_nworkers(void)
{
    int n = (int)starpu_worker_get_count();
    return n > STARPU_NMAXWORKERS ? STARPU_NMAXWORKERS : n;
}

int apb_trace_write_chrome(const char *path, apb_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return apb_fail(err, APB_E_IO, "%s: cannot write the trace", path);
    double end, t0 = _apb_trace_origin(&end);
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n"
               "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 0, \"args\": {\"name\": "
               "\"apb (%s)\"}}", apb_runtime_sched_name());
    int first = 0;
    for (int w = 0; w < _apb_nworkers(); w++) {
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        fprintf(f, "%s{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, "
                   "\"args\": {\"name\": \"%s\"}}", first ? "" : ",\n", w, wname);
        first = 0;
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
            fprintf(f, ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, "
                       "\"ts\": %.3f, \"dur\": %.3f, \"args\": {\"op\": \"%s\", \"worker\": \"%s\", "
                       "\"bytes_in\": %lld, \"bytes_out\": %lld, \"flops\": %.0f, \"fetch_us\": %.3f, "
                       "\"sched_push_us\": %.3f, \"sched_pop_us\": %.3f}}",
                    r->name, _apb_kind_str(_apb_kind_of(r->op)), w, (r->t0 - t0) * 1e-3,
                    (r->t1 - r->t0) * 1e-3, apb_op_name((enum apb_op)r->op), wname,
                    (long long)r->bytes_in, (long long)r->bytes_out, r->flops,
                    r->fetch_ns >= 0 ? r->fetch_ns * 1e-3 : -1.0,
                    r->push_ns >= 0 ? r->push_ns * 1e-3 : -1.0, r->pop_ns >= 0 ? r->pop_ns * 1e-3 : -1.0);
        }
    }
    /* GPU power and SM clock as counter tracks, where telemetry kept samples over the run
     * (apb_telemetry_start with keep): the tasks' timeline beside what the card did */
    for (int g = 0; g < APB_TELE_MAX_DEV; g++) {
        const apb_gpu_sample *sm;
        int n = apb_telemetry_series(g, &sm);
        for (int i = 0; i < n; i++) {
            double ns = sm[i].t * 1e9;
            if (ns < t0 - 1e8 || ns > end + 1e8)
                continue;
            fprintf(f, ",\n{\"name\": \"GPU%d power (W)\", \"ph\": \"C\", \"pid\": 0, \"ts\": %.3f, "
                       "\"args\": {\"W\": %.1f}}", g, (ns - t0) * 1e-3, sm[i].power_w);
            fprintf(f, ",\n{\"name\": \"GPU%d SM clock (MHz)\", \"ph\": \"C\", \"pid\": 0, \"ts\": %.3f, "
                       "\"args\": {\"MHz\": %.0f}}", g, (ns - t0) * 1e-3, sm[i].sm_mhz);
            fprintf(f, ",\n{\"name\": \"GPU%d held back by the power cap\", \"ph\": \"C\", \"pid\": 0, "
                       "\"ts\": %.3f, \"args\": {\"capped\": %d}}", g, (ns - t0) * 1e-3,
                    (sm[i].reasons & APB_CLK_POWER_CAP) != 0);
        }
    }
    fprintf(f, "\n]}\n");
    if (fclose(f) != 0)
        return apb_fail(err, APB_E_IO, "%s: write failed", path);
    return APB_OK;
}

/* One GPU's band of the Gantt chart: its SM clock (blue, 0 to the highest of 2000 MHz and the
 * samples) and power (red, 0 to its limit or the highest sample) as step lines over [t0, end]. */
static void _apb_gantt_band(FILE *f, int g, double t0, double end, int left, int W, int y, int h)
{
    const apb_gpu_sample *sm;
    int n = apb_telemetry_series(g, &sm);
    double span = end > t0 ? end - t0 : 1, mhz_max = 2000, w_max = apb_telemetry_power_limit(g);
    double mhz_sum = 0, w_sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        mhz_max = sm[i].sm_mhz > mhz_max ? sm[i].sm_mhz : mhz_max;
        w_max = sm[i].power_w > w_max ? sm[i].power_w : w_max;
        if (sm[i].t * 1e9 >= t0 && sm[i].t * 1e9 <= end) {
            mhz_sum += sm[i].sm_mhz;
            w_sum += sm[i].power_w;
            cnt++;
        }
    }
    w_max = w_max > 0 ? w_max : 1;
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f4f4f4\"/>\n"
               "<text x=\"4\" y=\"%d\">GPU%d clock</text><text x=\"4\" y=\"%d\" fill=\"#c0392b\">power</text>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"9\">SM %.0f MHz, %.0f W mean (scales: %.0f MHz, %.0f W)</text>\n",
            left, y, W, h, y + 14, g, y + 28, left + W - 330, y + h - 3, cnt ? mhz_sum / cnt : 0,
            cnt ? w_sum / cnt : 0, mhz_max, w_max);
    for (int c = 0; c < 2; c++) {
        fprintf(f, "<polyline fill=\"none\" stroke-width=\"1\" stroke=\"%s\" points=\"", c ? "#c0392b" : "#2e6fba");
        double prev_y = -1;
        for (int i = 0; i < n; i++) {
            double ns = sm[i].t * 1e9;
            if (ns > end)
                break;
            if (i + 1 < n && sm[i + 1].t * 1e9 < t0)
                continue; /* the last sample before the window starts it */
            double x = left + ((ns > t0 ? ns : t0) - t0) / span * W;
            double v = c ? sm[i].power_w / w_max : sm[i].sm_mhz / mhz_max;
            double yy = y + h - v * (h - 2);
            if (prev_y >= 0)
                fprintf(f, "%.1f,%.1f ", x, prev_y); /* a step: hold the last value until now */
            fprintf(f, "%.1f,%.1f ", x, yy);
            prev_y = yy;
        }
        if (prev_y >= 0)
            fprintf(f, "%d,%.1f", left + W, prev_y);
        fprintf(f, "\"/>\n");
    }
}

int apb_trace_write_gantt(const char *path, apb_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return apb_fail(err, APB_E_IO, "%s: cannot write the Gantt chart", path);
    double end, t0 = _apb_trace_origin(&end), origin = t0;
    /* APB_GANTT_WINDOW=FROM,TO (seconds after the first task) zooms on a part of the run */
    const char *win = getenv("APB_GANTT_WINDOW");
    double wa, wb;
    if (win && sscanf(win, "%lf,%lf", &wa, &wb) == 2 && wa >= 0 && wb > wa) {
        t0 = origin + wa * 1e9;
        end = origin + wb * 1e9 < end ? origin + wb * 1e9 : end;
    }
    double span = end > t0 ? end - t0 : 1;
    int nw = _apb_nworkers(), W = 1200, left = 110, row = 28, top = 30, band = 56;
    /* GPUs with telemetry samples in the window get a band each under the workers: SM clock and
     * power over time (apb_telemetry_start with keep), to read the tasks against the card's state */
    int ng = 0, gdev[APB_TELE_MAX_DEV];
    for (int g = 0; g < APB_TELE_MAX_DEV; g++) {
        const apb_gpu_sample *sm;
        int n = apb_telemetry_series(g, &sm), in = 0;
        for (int i = 0; i < n && in < 2; i++)
            in += sm[i].t * 1e9 >= t0 && sm[i].t * 1e9 <= end;
        if (in >= 2)
            gdev[ng++] = g;
    }
    int H = top + nw * row + ng * band + 60;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" "
               "fill=\"white\"/>\n<text x=\"%d\" y=\"18\" font-size=\"13\">apb tasks per worker "
               "(%.3f s, sched %s)</text>\n", left + W + 20, H, left, span * 1e-9,
            apb_runtime_sched_name());
    for (int w = 0; w < nw; w++) {
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        int y = top + w * row;
        fprintf(f, "<text x=\"4\" y=\"%d\">%.16s</text>\n", y + row / 2 + 4, wname);
        /* compress and communication tasks are short: drawn last (on top) and at least 2 px wide,
         * so that where they run beside attention shows at a glance */
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < _apb_tw[w].n; i++) {
                const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
                enum _apb_kind k = _apb_kind_of(r->op);
                int small = k == _APB_K_COMPRESS || k == _APB_K_COMM;
                if (small != pass || r->t1 < t0 || r->t0 > end)
                    continue;
                double a = r->t0 > t0 ? r->t0 : t0, b = r->t1 < end ? r->t1 : end;
                double x = left + (a - t0) / span * W, wd = (b - a) / span * W;
                double minw = small ? 2.0 : 0.3;
                fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\">"
                           "<title>%s %.3f ms</title></rect>\n",
                        x, y + 2, wd < minw ? minw : wd, row - 4, _apb_kind_color[k], r->name,
                        (r->t1 - r->t0) * 1e-6);
            }
    }
    for (int k = 0; k < ng; k++)
        _apb_gantt_band(f, gdev[k], t0, end, left, W, top + nw * row + k * band + 6, band - 10);
    int ly = top + nw * row + ng * band + 20;
    for (int k = 0; k < _APB_K_COUNT; k++)
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                   "y=\"%d\">%s</text>\n", left + k * 150, ly, _apb_kind_color[k], left + k * 150 + 16,
                ly + 10, _apb_kind_str((enum _apb_kind)k));
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, ly - 6,
            left + W, ly - 6);
    for (int i = 0; i <= 10; i++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"9\">%.2fs</text>\n", left + i * W / 10 - 8,
                ly + 30, (t0 - origin + span * i / 10) * 1e-9);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0)
        return apb_fail(err, APB_E_IO, "%s: write failed", path);
    return APB_OK;
}

struct _apb_iv { double a, b; };

static int _apb_iv_cmp(const void *x, const void *y)
{
    const struct _apb_iv *p = x, *q = y;
    return p->a < q->a ? -1 : p->a > q->a;
}

int apb_trace_stats_get(apb_trace_stats *st)
{
    memset(st, 0, sizeof *st);
    double end, t0 = _apb_trace_origin(&end);
    double span = end > t0 ? end - t0 : 0;
    int nw = _apb_nworkers();
    size_t ntot = 0;
    for (int w = 0; w < nw; w++)
        ntot += _apb_tw[w].n;
    if (span <= 0 || ntot == 0)
        return -1;
    st->span_s = span * 1e-9;
    st->first_ns = t0;
    st->last_ns = end;
    st->nworkers = nw;
    /* union of the compute intervals (dense + attention) of every worker */
    struct _apb_iv *cv = malloc(sizeof *cv * ntot);
    if (!cv)
        return -1;
    size_t nc = 0;
    double busy_all = 0, sched = 0, fetch = 0;
    long long nsched = 0, nfetch = 0;
    for (int w = 0; w < nw; w++) {
        double busy = 0;
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
            enum _apb_kind k = _apb_kind_of(r->op);
            busy += r->t1 - r->t0;
            st->kind_s[k] += (r->t1 - r->t0) * 1e-9;
            if (k == _APB_K_COMPUTE || k == _APB_K_ATTN)
                cv[nc++] = (struct _apb_iv){r->t0, r->t1};
            if (r->push_ns >= 0 && r->pop_ns >= 0) {
                sched += r->push_ns + r->pop_ns;
                nsched++;
            }
            if (r->fetch_ns >= 0) {
                fetch += r->fetch_ns;
                nfetch++;
            }
            st->bytes_in += (double)r->bytes_in;
        }
        if (w < STARPU_NMAXWORKERS)
            st->busy_frac[w] = busy / span;
        busy_all += busy;
        st->ntasks += (long long)_apb_tw[w].n;
    }
    qsort(cv, nc, sizeof *cv, _apb_iv_cmp);
    size_t nu = 0;
    for (size_t i = 0; i < nc; i++) {
        if (nu && cv[i].a <= cv[nu - 1].b) {
            if (cv[i].b > cv[nu - 1].b)
                cv[nu - 1].b = cv[i].b;
        } else
            cv[nu++] = cv[i];
    }
    /* communication = compress + merge/append tasks: the part of each that ran while some
     * (other) worker computed is overlapped, the rest is exposed */
    double comm = 0, over = 0;
    for (int w = 0; w < nw; w++)
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
            enum _apb_kind k = _apb_kind_of(r->op);
            if (k != _APB_K_COMPRESS && k != _APB_K_COMM)
                continue;
            comm += r->t1 - r->t0;
            size_t lo = 0, hi = nu; /* first union interval ending after r->t0 */
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (cv[mid].b <= r->t0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t j = lo; j < nu && cv[j].a < r->t1; j++) {
                double a = cv[j].a > r->t0 ? cv[j].a : r->t0, b = cv[j].b < r->t1 ? cv[j].b : r->t1;
                if (b > a)
                    over += b - a;
            }
        }
    free(cv);
    st->comm_s = comm * 1e-9;
    st->comm_overlap_s = over * 1e-9;
    st->overlap_frac = comm > 0 ? over / comm : 1;
    st->idle_frac = 1 - busy_all / (span * nw);
    st->sched_us_per_task = nsched ? sched / nsched * 1e-3 : -1;
    st->fetch_us_per_task = nfetch ? fetch / nfetch * 1e-3 : -1;
    /* bus statistics (transfers between memory nodes; none with CPU workers only) */
    int nbus = starpu_bus_get_count();
    for (int b = 0; b < nbus; b++) {
        struct starpu_profiling_bus_info bi;
        if (starpu_bus_get_profiling_info(b, &bi) == 0) {
            st->bus_bytes += (double)bi.transferred_bytes;
            st->bus_transfers += bi.transfer_count;
        }
    }
    return 0;
}

void apb_trace_summary(FILE *out)
{
    apb_trace_stats st;
    if (apb_trace_stats_get(&st))
        return;
    fprintf(out, "summary (sched %s): %.3f s span, %lld tasks, idle %.1f%%\n", apb_runtime_sched_name(),
            st.span_s, st.ntasks, 100 * st.idle_frac);
    for (int w = 0; w < st.nworkers; w++) {
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        fprintf(out, "  worker %-16s busy %5.1f%% (%zu tasks)\n", wname, 100 * st.busy_frac[w],
                _apb_tw[w].n);
    }
    fprintf(out, "  time per kind:");
    for (int k = 0; k < _APB_K_COUNT; k++)
        fprintf(out, " %s %.3f s", _apb_kind_str((enum _apb_kind)k), st.kind_s[k]);
    fprintf(out, "\n  communication (compress + merge/append) %.3f s: %.3f s overlapped with "
                 "computation, %.3f s exposed (overlap %.1f%%)\n",
            st.comm_s, st.comm_overlap_s, st.comm_s - st.comm_overlap_s, 100 * st.overlap_frac);
    fprintf(out, "  scheduler overhead %.2f us/task (push + pop), data acquisition %.2f us/task; "
                 "bus: %.0f bytes in %lld transfers\n",
            st.sched_us_per_task, st.fetch_us_per_task, st.bus_bytes, st.bus_transfers);
}
