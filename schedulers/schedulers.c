/* SPDX-License-Identifier: MIT */
/** @brief Policy registry (ours, --sched-lib objects, StarPU's), task classification, ready queue. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "schedulers/sched_common.h"

/* ------------------------------------------------------------------ task classification */
/* The kinds are the op table's (common/apb_ops.h), shared with the traces. */
const char *apb_sched_kind_name(enum apb_sched_kind k) { return apb_op_kind_name(k); }

enum apb_sched_kind apb_sched_kind_of_op(const char *op) { return apb_op_kind(apb_op_of_name(op)); }

void apb_sched_task_info_get(const struct starpu_task *task, apb_sched_task_info *out)
{
    *out = (apb_sched_task_info){APB_KIND_COMPUTE, -1, -1};
    if (!task)
        return;
    out->kind = apb_sched_kind_of_op(task->cl ? task->cl->name : NULL);
    const char *name = task->name;
    if (!name)
        return;
    /* "<op>[-<layer>][-h<host>]"; op names hold no '-' */
    const char *p = strchr(name, '-');
    while (p) {
        char *end;
        if (p[1] == 'h') {
            long h = strtol(p + 2, &end, 10);
            if (end != p + 2 && !*end)
                out->host = (int)h;
        } else {
            long l = strtol(p + 1, &end, 10);
            if (end != p + 1 && (*end == '-' || !*end))
                out->layer = (int)l;
        }
        p = strchr(p + 1, '-');
    }
}

void apb_sched_rank(const struct starpu_task *task, int64_t *k1, double *k2)
{
    apb_sched_task_info ti;
    apb_sched_task_info_get(task, &ti);
    /* Earlier layers first, from the name when it has a layer: the graph's priority is 0 for the
     * question pass, whose layer-l tasks feed qmean -> select of layer l in Spava (every host waits
     * for them), so they must not queue behind later layers. Tasks without a layer go first:
     * embeds and zero fills start everything (the question's embed has priority 0 too), and
     * logits / sample are only ready at the very end anyway. */
    *k1 = ti.layer >= 0 ? -(int64_t)ti.layer : 1;
    double host_first = 1000.0 - (ti.host >= 0 && ti.host < 1000 ? ti.host : 999);
    switch (ti.kind) {
    case APB_KIND_COMPRESS: *k2 = 3e12 + host_first; break;
    case APB_KIND_ATTENTION: {
        double f = task->flops > 0 ? task->flops * 1e-3 : 0;
        *k2 = 1e12 + (f < 9.9e11 ? f : 9.9e11);
        break;
    }
    default: *k2 = 2e12 + host_first; break;
    }
}

/* ------------------------------------------------------------------ ready queue */
void apb_squeue_init(struct apb_squeue *q)
{
    memset(q, 0, sizeof *q);
    atomic_init(&q->count, 0);
}

void apb_squeue_destroy(struct apb_squeue *q)
{
    free(q->e);
    memset(q, 0, sizeof *q);
}

/* a ranks below b (runs later) */
static int _apb_worse(const struct apb_squeue_ent *a, const struct apb_squeue_ent *b)
{
    if (a->k1 != b->k1)
        return a->k1 < b->k1;
    if (a->k2 != b->k2)
        return a->k2 < b->k2;
    return a->seq > b->seq;
}

int apb_squeue_push(struct apb_squeue *q, struct starpu_task *task, int64_t k1, double k2,
                    unsigned types)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 256;
        struct apb_squeue_ent *e = realloc(q->e, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        q->e = e;
        q->cap = cap;
    }
    struct apb_squeue_ent ent = {task, k1, k2, q->seq++, types};
    size_t lo = 0, hi = q->n; /* first position whose entry is not worse than ent */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (_apb_worse(&q->e[mid], &ent))
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(&q->e[lo + 1], &q->e[lo], (q->n - lo) * sizeof *q->e);
    q->e[lo] = ent;
    q->n++;
    atomic_store(&q->count, q->n);
    return 0;
}

static long _apb_squeue_find(struct apb_squeue *q, unsigned workerid, int worst, unsigned *impl)
{
    unsigned type = 1u << (unsigned)starpu_worker_get_type((int)workerid);
    for (size_t i = 0; i < q->n; i++) {
        size_t at = worst ? i : q->n - 1 - i;
        if ((q->e[at].types & type) &&
            starpu_worker_can_execute_task_first_impl(workerid, q->e[at].task, impl))
            return (long)at;
    }
    return -1;
}

struct starpu_task *apb_squeue_take(struct apb_squeue *q, unsigned workerid, int worst)
{
    unsigned impl = 0;
    long at = _apb_squeue_find(q, workerid, worst, &impl);
    if (at < 0)
        return NULL;
    struct starpu_task *t = q->e[at].task;
    memmove(&q->e[at], &q->e[at + 1], (q->n - (size_t)at - 1) * sizeof *q->e);
    q->n--;
    atomic_store(&q->count, q->n);
    starpu_task_set_implementation(t, impl);
    return t;
}

int apb_squeue_peek(struct apb_squeue *q, unsigned workerid, int64_t *k1, double *k2)
{
    long at = _apb_squeue_find(q, workerid, 0, NULL);
    if (at < 0)
        return 0;
    *k1 = q->e[at].k1;
    *k2 = q->e[at].k2;
    return 1;
}

/* ------------------------------------------------------------------ registry */
static struct starpu_sched_policy *const _apb_ours[] = {&apb_sched_critical_policy,
                                                        &apb_sched_affinity_policy,
                                                        &apb_sched_affinity_steal_policy};
#define _APB_NOURS (sizeof _apb_ours / sizeof *_apb_ours)
#define _APB_MAX_LIBS 8
static struct starpu_sched_policy *_apb_libs[_APB_MAX_LIBS];
static int _apb_nlibs;

static struct starpu_sched_policy *_apb_find(const char *name)
{
    for (size_t i = 0; i < _APB_NOURS; i++)
        if (!strcmp(_apb_ours[i]->policy_name, name))
            return _apb_ours[i];
    for (int i = 0; i < _apb_nlibs; i++)
        if (!strcmp(_apb_libs[i]->policy_name, name))
            return _apb_libs[i];
    for (struct starpu_sched_policy **p = starpu_sched_get_predefined_policies(); *p; p++)
        if ((*p)->policy_name && !strcmp((*p)->policy_name, name))
            return *p;
    return NULL;
}

int apb_sched_lookup(const char *name, struct starpu_sched_policy **out, apb_err *err)
{
    struct starpu_sched_policy *p = name ? _apb_find(name) : NULL;
    if (!p)
        return apb_fail(err, APB_E_USAGE, "unknown scheduler '%s' (see --sched list)",
                        name ? name : "(null)");
    *out = p;
    return APB_OK;
}

int apb_sched_load_lib(const char *path, const char **name_out, apb_err *err)
{
    if (_apb_nlibs == _APB_MAX_LIBS)
        return apb_fail(err, APB_E_USAGE, "--sched-lib: at most %d policy libraries", _APB_MAX_LIBS);
    /* a bare name would search the library path: ask for a path */
    char buf[4096];
    if (!strchr(path, '/')) {
        snprintf(buf, sizeof buf, "./%s", path);
        path = buf;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return apb_fail(err, APB_E_IO, "--sched-lib %s: %s", path, dlerror());
    struct starpu_sched_policy *p = dlsym(h, APB_SCHED_LIB_SYMBOL);
    if (!p) {
        apb_fail(err, APB_E_FORMAT, "--sched-lib %s: no symbol '%s' (a struct starpu_sched_policy)",
                 path, APB_SCHED_LIB_SYMBOL);
        dlclose(h);
        return err->code;
    }
    if (!p->policy_name || !*p->policy_name || !p->push_task || !p->init_sched) {
        apb_fail(err, APB_E_FORMAT, "--sched-lib %s: '%s' needs policy_name, init_sched and "
                 "push_task", path, APB_SCHED_LIB_SYMBOL);
        dlclose(h);
        return err->code;
    }
    if (_apb_find(p->policy_name) != p) {
        if (_apb_find(p->policy_name)) {
            apb_fail(err, APB_E_USAGE, "--sched-lib %s: a policy named '%s' already exists", path,
                     p->policy_name);
            dlclose(h);
            return err->code;
        }
        _apb_libs[_apb_nlibs++] = p; /* the handle stays open until exit */
    }
    if (name_out)
        *name_out = p->policy_name;
    return APB_OK;
}

void apb_sched_list(FILE *out)
{
    for (size_t i = 0; i < _APB_NOURS; i++)
        fprintf(out, "%-16s %s\n", _apb_ours[i]->policy_name, _apb_ours[i]->policy_description);
    for (int i = 0; i < _apb_nlibs; i++)
        fprintf(out, "%-16s %s\n", _apb_libs[i]->policy_name,
                _apb_libs[i]->policy_description ? _apb_libs[i]->policy_description : "(loaded)");
    for (struct starpu_sched_policy **p = starpu_sched_get_predefined_policies(); *p; p++)
        fprintf(out, "%-16s %s\n", (*p)->policy_name, (*p)->policy_description);
}

int apb_sched_names(const char **names, int max)
{
    int n = 0;
    for (size_t i = 0; i < _APB_NOURS && n < max; i++)
        names[n++] = _apb_ours[i]->policy_name;
    for (int i = 0; i < _apb_nlibs && n < max; i++)
        names[n++] = _apb_libs[i]->policy_name;
    for (struct starpu_sched_policy **p = starpu_sched_get_predefined_policies(); *p && n < max; p++)
        names[n++] = (*p)->policy_name;
    return n;
}
