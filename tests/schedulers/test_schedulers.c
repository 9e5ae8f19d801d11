/* SPDX-License-Identifier: MIT */
/**
 * @brief Scheduling policies: selection by name (ours, StarPU's, a loaded .so), every policy giving
 * bitwise the same logits on an APB and a Spava run of the bundled model, and the Chrome trace being
 * well-formed (every task named, timed, on one worker, never two at once on a worker).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "graph/apb_graph.h"
#include "schedulers/schedulers.h"
#include "tests/test_util.h"

#ifndef APB_LIBAPB_SO /* a shared object that is not a policy library */
#define APB_LIBAPB_SO ".libs/libapb.so"
#endif
#ifndef APB_SCHED_EXAMPLE_SO
#define APB_SCHED_EXAMPLE_SO "docs/examples/.libs/apb_sched_example.so"
#endif

TestSuite(schedulers, .timeout = 300);

#define V 49152 /* the bundled model's vocabulary */

Test(schedulers, every_name_is_accepted_and_unknown_ones_are_refused)
{
    const char *names[128];
    int n = apb_sched_names(names, 128), ours = 0;
    cr_assert_gt(n, 10);
    for (int i = 0; i < n; i++) {
        struct starpu_sched_policy *p = NULL;
        apb_err err = {0};
        cr_assert_eq(apb_sched_lookup(names[i], &p, &err), 0, "%s: %s", names[i], err.msg);
        cr_assert_str_eq(p->policy_name, names[i]);
        ours += !strcmp(names[i], "apb-critical") || !strcmp(names[i], "apb-affinity");
    }
    cr_assert_eq(ours, 2, "our policies are listed");
    const char *builtin[] = {"eager", "prio", "lws", "ws", "dmda", "dmdas", "modular-heft", "heteroprio"};
    for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++) {
        struct starpu_sched_policy *p = NULL;
        apb_err err = {0};
        cr_assert_eq(apb_sched_lookup(builtin[i], &p, &err), 0, "%s", builtin[i]);
    }
    struct starpu_sched_policy *p = NULL;
    apb_err err = {0};
    cr_assert_eq(apb_sched_lookup("nosuch", &p, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "unknown scheduler 'nosuch'") && strstr(err.msg, "--sched list"), "%s",
              err.msg);
    apb_runtime_opts o = {.sched = "nosuch", .ncpus = 1, .ncuda = 0};
    apb_err e2 = {0};
    cr_assert_eq(apb_runtime_init(&o, &e2), APB_E_USAGE, "init refuses an unknown policy");
    /* a file that is no policy library, and one that does not exist */
    apb_err e3 = {0}, e4 = {0};
    cr_assert_eq(apb_sched_load_lib("/nonexistent/x.so", NULL, &e3), APB_E_IO);
    cr_assert_eq(apb_sched_load_lib(APB_LIBAPB_SO, NULL, &e4), APB_E_FORMAT, "%s", e4.msg);
    cr_assert(strstr(e4.msg, APB_SCHED_LIB_SYMBOL), "%s", e4.msg);
}

Test(schedulers, task_info_parses_names)
{
    struct starpu_codelet cl = {.name = "select"};
    struct starpu_task t = {.cl = &cl, .name = "select-12-h3"};
    apb_sched_task_info ti;
    apb_sched_task_info_get(&t, &ti);
    cr_assert(ti.kind == APB_KIND_COMPRESS && ti.layer == 12 && ti.host == 3);
    cl.name = "attention";
    t.name = "attention-h0";
    apb_sched_task_info_get(&t, &ti);
    cr_assert(ti.kind == APB_KIND_ATTENTION && ti.layer == -1 && ti.host == 0);
    cl.name = "embed";
    t.name = "zero";
    apb_sched_task_info_get(&t, &ti);
    cr_assert(ti.kind == APB_KIND_COMPUTE && ti.layer == -1 && ti.host == -1);
    cl.name = "lse_merge";
    t.name = "lse_merge-0-h11";
    apb_sched_task_info_get(&t, &ti);
    cr_assert(ti.kind == APB_KIND_COMM && ti.layer == 0 && ti.host == 11);
}

/* Logits of an APB (and a Spava) prefill of the bundled model under `policy` (a fresh runtime). */
static void run_policy(const char *policy, const char *lib, apb_method meth, float *out,
                       const char *trace_path)
{
    apb_model m;
    apb_err err = {0};
    cr_assert_eq(apb_model_load(t_model_dir(), &m, &err), 0, "%s (run scripts/setup.sh)", err.msg);
    apb_runtime_opts o = {.sched = policy, .sched_lib = lib, .ncpus = 2, .ncuda = 0};
    cr_assert_eq(apb_runtime_init(&o, &err), 0, "%s: %s", policy ? policy : lib, err.msg);
    cr_assert_eq(apb_model_register(&m, &err), 0, "%s", err.msg);
    if (trace_path) {
        apb_trace_reset();
        apb_trace_enable(1);
    }
    cr_assert_eq(m.cfg.vocab_size, V, "the bundled model's vocabulary");
    int L = 200, nq = 5;
    int32_t ids[205];
    for (int i = 0; i < L + nq; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)m.cfg.vocab_size);
    apb_hosts_opts ho = {.method = meth, .hosts = 4, .anchor = meth == APB_METHOD_APB ? 32 : 8,
                         .select = 8, .tile = 16};
    apb_sampling smp = {0, 1, 0};
    apb_hseq hs;
    cr_assert_eq(apb_prefill_hosts(&m, &hs, ids, L, ids + L, nq, 1, &ho, &smp, &err), 0, "%s", err.msg);
    cr_assert_eq(apb_hosts_read_logits(&hs, out, (size_t)m.cfg.vocab_size, &err), 0, "%s", err.msg);
    cr_assert_eq(apb_runtime_wait_all(&err), 0);
    if (trace_path) {
        cr_assert_eq(apb_trace_write_chrome(trace_path, &err), 0, "%s", err.msg);
        apb_trace_stats st;
        cr_assert_eq(apb_trace_stats_get(&st), 0);
        cr_assert(st.overlap_frac >= 0 && st.overlap_frac <= 1 && st.idle_frac >= 0 && st.idle_frac < 1);
        cr_assert_gt(st.comm_s, 0, "APB has compress tasks");
        apb_trace_enable(0);
    }
    apb_hseq_free(&m, &hs);
    apb_model_free(&m);
    apb_runtime_shutdown();
}


static void identical_across(apb_method meth, const char *const *pols)
{
    float *ref = t_poisoned(V), *got = t_poisoned(V);
    run_policy("lws", NULL, meth, ref, NULL);
    for (int i = 0; i < V; i++)
        cr_assert(isfinite(ref[i]));
    for (int p = 0; pols[p]; p++) {
        for (int i = 0; i < V; i++)
            got[i] = NAN;
        run_policy(pols[p], NULL, meth, got, NULL);
        cr_assert_eq(memcmp(ref, got, sizeof(float) * V), 0, "%s: logits differ from lws's",
                     pols[p]);
    }
    /* the example policy, loaded from its shared object */
    for (int i = 0; i < V; i++)
        got[i] = NAN;
    run_policy(NULL, APB_SCHED_EXAMPLE_SO, meth, got, NULL);
    cr_assert_eq(memcmp(ref, got, sizeof(float) * V), 0, "example .so: logits differ");
    free(ref);
    free(got);
}

/* heteroprio is left out: it needs the application to define its buckets (an init callback) */
Test(schedulers, every_policy_gives_identical_apb_logits)
{
    static const char *const pols[] = {"apb-critical", "apb-affinity", "eager", "prio", "lws", "ws",
                                       "dmda", "dmdas", "modular-heft", NULL};
    identical_across(APB_METHOD_APB, pols);
}

Test(schedulers, our_policies_give_identical_spava_logits)
{
    static const char *const pols[] = {"apb-critical", "apb-affinity", "eager", "dmdas", NULL};
    identical_across(APB_METHOD_SPAVA, pols);
}

Test(schedulers, example_library_policy_is_registered)
{
    const char *name = NULL;
    apb_err err = {0};
    cr_assert_eq(apb_sched_load_lib(APB_SCHED_EXAMPLE_SO, &name, &err), 0, "%s", err.msg);
    cr_assert_str_eq(name, "example-kind-fifo");
    struct starpu_sched_policy *p;
    cr_assert_eq(apb_sched_lookup("example-kind-fifo", &p, &err), 0);
    cr_assert_eq(apb_sched_load_lib(APB_SCHED_EXAMPLE_SO, NULL, &err), 0, "loading twice is fine");
}

static int ev_cmp(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

Test(schedulers, chrome_trace_is_well_formed)
{
    static const char *const pols[] = {"apb-critical", "apb-affinity", "lws"};
    for (size_t p = 0; p < sizeof pols / sizeof *pols; p++) {
        char path[] = "/tmp/apb_trace_XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        close(fd);
        float *got = t_alloc(V);
        run_policy(pols[p], NULL, APB_METHOD_APB, got, path);
        free(got);
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        cr_assert(root, "%s: %s line %d", pols[p], je.text, je.line);
        json_t *evs = json_object_get(root, "traceEvents");
        cr_assert(json_is_array(evs));
        size_t n = json_array_size(evs), nx = 0;
        double(*iv)[3] = malloc(sizeof *iv * n); /* ts, end, tid */
        int seen_select = 0, seen_attn_h3 = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(evs, i);
            const char *ph = json_string_value(json_object_get(e, "ph"));
            cr_assert(ph);
            if (strcmp(ph, "X"))
                continue;
            const char *name = json_string_value(json_object_get(e, "name"));
            json_t *ts = json_object_get(e, "ts"), *dur = json_object_get(e, "dur"),
                   *tid = json_object_get(e, "tid"), *args = json_object_get(e, "args");
            cr_assert(name && json_is_number(ts) && json_is_number(dur) && json_is_integer(tid),
                      "%s: event %zu lacks name/ts/dur/tid", pols[p], i);
            cr_assert(json_is_integer(json_object_get(args, "bytes_in")), "bytes_in");
            json_t *fl = json_object_get(args, "flops");
            cr_assert(json_is_number(fl) && json_number_value(fl) >= 0, "%s: %s without flops", pols[p], name);
            if (!strncmp(name, "attention-", 10) || !strncmp(name, "mlp-", 4) || !strncmp(name, "qkv-", 4))
                cr_assert_gt(json_number_value(fl), 0, "%s: %s has no FLOP count", pols[p], name);
            cr_assert(json_string_value(json_object_get(e, "cat")), "cat");
            cr_assert_geq(json_number_value(ts), 0);
            cr_assert_geq(json_number_value(dur), 0);
            seen_select += !strncmp(name, "select-", 7);
            seen_attn_h3 += !strncmp(name, "attention-", 10) && strstr(name, "-h3");
            iv[nx][0] = json_number_value(ts);
            iv[nx][1] = iv[nx][0] + json_number_value(dur);
            iv[nx][2] = (double)json_integer_value(tid);
            nx++;
        }
        cr_assert(nx > 100 && seen_select && seen_attn_h3, "%s: %zu events", pols[p], nx);
        /* one worker runs one task at a time: sorted by start, a task ends before the next starts
         * (1 ns slack for the microsecond rounding of the file) */
        qsort(iv, nx, sizeof *iv, ev_cmp);
        for (int w = 0; w < 2; w++) {
            double last_end = -1;
            for (size_t i = 0; i < nx; i++) {
                if ((int)iv[i][2] != w)
                    continue;
                cr_assert_leq(last_end, iv[i][0] + 0.002, "%s: overlapping tasks on worker %d at %f us",
                              pols[p], w, iv[i][0]);
                last_end = iv[i][1];
            }
        }
        free(iv);
        json_decref(root);
        unlink(path);
    }
}
