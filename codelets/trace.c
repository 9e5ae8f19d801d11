/* SPDX-License-Identifier: MIT */
/**
 * @brief Task traces: Chrome/Perfetto JSON, SVG Gantt chart, per-worker busy summary.
 *
 * Records are appended by the task bodies themselves (through _apb_op_account), each worker into its
 * own array, so recording takes no lock. Times are CLOCK_MONOTONIC nanoseconds.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/codelet_common.h"

struct _apb_trace_rec {
    const char *name; /* interned task name (lives until exit) */
    int op;
    double t0, t1;
};

struct _apb_trace_worker {
    struct _apb_trace_rec *rec;
    size_t n, cap;
};

static atomic_int _apb_trace_on;
static struct _apb_trace_worker _apb_tw[STARPU_NMAXWORKERS];

enum _apb_kind { _APB_K_COMPUTE, _APB_K_COMPRESS, _APB_K_COMM, _APB_K_ATTN, _APB_K_COUNT };
static const char *const _apb_kind_name[_APB_K_COUNT] = {"compute", "compress", "communication",
                                                         "attention"};
static const char *const _apb_kind_color[_APB_K_COUNT] = {"#4e79a7", "#f28e2b", "#e15759", "#59a14f"};

static enum _apb_kind _apb_kind_of(int op)
{
    switch (op) {
    case APB_OP_ATTENTION: return _APB_K_ATTN;
    case APB_OP_QMEAN:
    case APB_OP_RETAIN:
    case APB_OP_SELECT: return _APB_K_COMPRESS;
    case APB_OP_LSE_MERGE:
    case APB_OP_KV_APPEND: return _APB_K_COMM;
    default: return _APB_K_COMPUTE;
    }
}

void apb_trace_enable(int on) { atomic_store(&_apb_trace_on, on); }

void apb_trace_reset(void)
{
    for (int w = 0; w < STARPU_NMAXWORKERS; w++)
        _apb_tw[w].n = 0;
}

void _apb_trace_record(enum apb_op op, double t0_ns, double t1_ns)
{
    if (!atomic_load_explicit(&_apb_trace_on, memory_order_relaxed))
        return;
    int w = starpu_worker_get_id();
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
    struct starpu_task *task = starpu_task_get_current();
    tw->rec[tw->n++] = (struct _apb_trace_rec){task && task->name ? task->name : apb_op_name(op),
                                               (int)op, t0_ns, t1_ns};
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
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
    int first = 1;
    for (int w = 0; w < _apb_nworkers(); w++) {
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        fprintf(f, "%s{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, "
                   "\"args\": {\"name\": \"%s\"}}", first ? "" : ",\n", w, wname);
        first = 0;
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
            fprintf(f, ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, "
                       "\"ts\": %.3f, \"dur\": %.3f, \"args\": {\"op\": \"%s\"}}",
                    r->name, _apb_kind_name[_apb_kind_of(r->op)], w, (r->t0 - t0) * 1e-3,
                    (r->t1 - r->t0) * 1e-3, apb_op_name((enum apb_op)r->op));
        }
    }
    fprintf(f, "\n]}\n");
    if (fclose(f) != 0)
        return apb_fail(err, APB_E_IO, "%s: write failed", path);
    return APB_OK;
}

int apb_trace_write_gantt(const char *path, apb_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return apb_fail(err, APB_E_IO, "%s: cannot write the Gantt chart", path);
    double end, t0 = _apb_trace_origin(&end);
    double span = end > t0 ? end - t0 : 1;
    int nw = _apb_nworkers(), W = 1200, left = 110, row = 28, top = 30;
    int H = top + nw * row + 60;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" "
               "fill=\"white\"/>\n<text x=\"%d\" y=\"18\" font-size=\"13\">apb tasks per worker "
               "(%.3f s)</text>\n", left + W + 20, H, left, span * 1e-9);
    for (int w = 0; w < nw; w++) {
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        int y = top + w * row;
        fprintf(f, "<text x=\"4\" y=\"%d\">%.16s</text>\n", y + row / 2 + 4, wname);
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            const struct _apb_trace_rec *r = &_apb_tw[w].rec[i];
            double x = left + (r->t0 - t0) / span * W, wd = (r->t1 - r->t0) / span * W;
            fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"%s\">"
                       "<title>%s %.3f ms</title></rect>\n",
                    x, y + 2, wd < 0.3 ? 0.3 : wd, row - 4, _apb_kind_color[_apb_kind_of(r->op)],
                    r->name, (r->t1 - r->t0) * 1e-6);
        }
    }
    int ly = top + nw * row + 20;
    for (int k = 0; k < _APB_K_COUNT; k++)
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                   "y=\"%d\">%s</text>\n", left + k * 150, ly, _apb_kind_color[k], left + k * 150 + 16,
                ly + 10, _apb_kind_name[k]);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, ly - 6,
            left + W, ly - 6);
    for (int i = 0; i <= 10; i++)
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"9\">%.2fs</text>\n", left + i * W / 10 - 8,
                ly + 30, span * 1e-9 * i / 10);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0)
        return apb_fail(err, APB_E_IO, "%s: write failed", path);
    return APB_OK;
}

void apb_trace_summary(FILE *out)
{
    double end, t0 = _apb_trace_origin(&end);
    double span = end > t0 ? end - t0 : 0;
    if (span <= 0)
        return;
    double kind[_APB_K_COUNT] = {0};
    fprintf(out, "trace: %.3f s span\n", span * 1e-9);
    for (int w = 0; w < _apb_nworkers(); w++) {
        double busy = 0;
        for (size_t i = 0; i < _apb_tw[w].n; i++) {
            busy += _apb_tw[w].rec[i].t1 - _apb_tw[w].rec[i].t0;
            kind[_apb_kind_of(_apb_tw[w].rec[i].op)] += _apb_tw[w].rec[i].t1 - _apb_tw[w].rec[i].t0;
        }
        char wname[64];
        starpu_worker_get_name(w, wname, sizeof wname);
        fprintf(out, "  worker %-16s busy %5.1f%% (%zu tasks)\n", wname, 100 * busy / span,
                _apb_tw[w].n);
    }
    fprintf(out, "  time per kind:");
    for (int k = 0; k < _APB_K_COUNT; k++)
        fprintf(out, " %s %.3f s", _apb_kind_name[k], kind[k] * 1e-9);
    fprintf(out, "\n");
}
