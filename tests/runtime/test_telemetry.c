/* SPDX-License-Identifier: MIT */
/**
 * @brief GPU telemetry (runtime/telemetry.c): the fold of NVML samples into a summary, checked
 * against sums written out by hand on synthetic samples; the energy counter's mean power; the
 * sampler's behaviour where there is no NVIDIA driver (CI) or where there is one (the GPU machine);
 * a replayed series drawn into a real run's Chrome trace and Gantt chart.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codelets/apb_codelets.h"
#include "runtime/apb_runtime.h"

static apb_gpu_sample smp(double t, double w, double mhz, double c, unsigned long long why, double mj)
{
    return (apb_gpu_sample){.t = t, .power_w = w, .sm_mhz = mhz, .temp_c = c, .reasons = why, .energy_mj = mj};
}

Test(telemetry, fold_of_samples)
{
    apb_tele_acc a;
    apb_tele_acc_init(&a, 3, 700);
    const apb_gpu_sample s[4] = {
        smp(10.0, 690, 1530, 60, APB_CLK_POWER_CAP, 1000000),
        smp(10.1, 702, 1500, 64, APB_CLK_POWER_CAP | 0x40ULL, 1070000),
        smp(10.2, 650, 1680, 61, 0, 1138000),
        smp(10.4, 80, 1980, 58, APB_CLK_IDLE, 1270000),
    };
    for (int i = 0; i < 4; i++)
        apb_tele_acc_add(&a, &s[i]);
    apb_gpu_tele t;
    memset(&t, 0x5a, sizeof t); /* poisoned: every field must be written */
    apb_tele_acc_finish(&a, 0.5, &t);
    cr_assert_eq(t.index, 3);
    cr_assert_eq(t.samples, 4);
    cr_assert_float_eq(t.seconds, 0.5, 1e-12);
    cr_assert_float_eq(t.power_limit_w, 700, 1e-12);
    cr_assert_float_eq(t.power_w_mean, (690 + 702 + 650 + 80) / 4.0, 1e-9);
    cr_assert_float_eq(t.power_w_max, 702, 1e-12);
    cr_assert_float_eq(t.sm_mhz_mean, (1530 + 1500 + 1680 + 1980) / 4.0, 1e-9);
    cr_assert_float_eq(t.sm_mhz_min, 1500, 1e-12);
    cr_assert_float_eq(t.sm_mhz_max, 1980, 1e-12);
    cr_assert_float_eq(t.temp_c_max, 64, 1e-12);
    cr_assert_float_eq(t.frac_power_cap, 0.5, 1e-12);
    cr_assert_float_eq(t.frac_thermal, 0.25, 1e-12);
    cr_assert_float_eq(t.frac_idle, 0.25, 1e-12);
    /* the counter: 270000 mJ over 0.4 s = 675 W, times the 0.5 s window */
    cr_assert_float_eq(t.energy_w_mean, 675, 1e-9);
    cr_assert_float_eq(t.energy_j, 337.5, 1e-9);
}

Test(telemetry, no_counter_no_samples)
{
    apb_tele_acc a;
    apb_tele_acc_init(&a, 0, 0);
    apb_gpu_tele t;
    memset(&t, 0x5a, sizeof t);
    apb_tele_acc_finish(&a, 1.0, &t);
    cr_assert_eq(t.samples, 0);
    cr_assert_float_eq(t.energy_j, -1, 0);
    cr_assert_float_eq(t.power_w_mean, 0, 0);
    /* samples without an energy counter (energy_mj 0): the power readings' mean only */
    apb_gpu_sample s = smp(1, 300, 1200, 40, 0, 0);
    apb_tele_acc_add(&a, &s);
    s.t = 2;
    apb_tele_acc_add(&a, &s);
    apb_tele_acc_finish(&a, 1.0, &t);
    cr_assert_float_eq(t.energy_j, -1, 0);
    cr_assert_float_eq(t.energy_w_mean, 0, 0);
    cr_assert_float_eq(t.power_w_mean, 300, 1e-12);
}

/* Without a driver: a reason, and start fails with APB_E_RUNTIME and a message. With one (the GPU
 * machine): a window of ~0.2 s gives samples with a plausible clock. */
Test(telemetry, sampler)
{
    char why[200] = "";
    apb_err err = {0};
    cr_assert_eq(apb_telemetry_start(0, 0, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "period"), "%s", err.msg);
    err = (apb_err){0};
    if (!apb_telemetry_available(why, sizeof why)) {
        cr_assert(strlen(why) > 10, "no reason given");
        cr_assert_eq(apb_telemetry_start(10, 0, &err), APB_E_RUNTIME);
        cr_assert(strstr(err.msg, "NVML"), "%s", err.msg);
        apb_gpu_tele t[2];
        cr_assert_eq(apb_telemetry_stop(t, 2), 0);
        return;
    }
    cr_assert_eq(apb_telemetry_start(5, 1, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_telemetry_start(5, 1, &err), APB_E_USAGE); /* one sampler at a time */
    usleep(200000);
    apb_gpu_tele t[APB_TELE_MAX_DEV];
    int n = apb_telemetry_stop(t, APB_TELE_MAX_DEV);
    cr_assert(n >= 1);
    cr_assert(t[0].samples >= 5, "%d samples", t[0].samples);
    cr_assert(t[0].seconds > 0.15 && t[0].seconds < 5, "%g s", t[0].seconds);
    cr_assert(t[0].sm_mhz_max > 100 && t[0].sm_mhz_max < 5000, "%g MHz", t[0].sm_mhz_max);
    cr_assert(t[0].power_w_max > 1 && t[0].power_w_max < 3000, "%g W", t[0].power_w_max);
    cr_assert_eq(apb_telemetry_stop(t, APB_TELE_MAX_DEV), 0); /* stopped already */
    const apb_gpu_sample *s;
    int ns = apb_telemetry_series(0, &s); /* kept: every sample of the window, in time order */
    cr_assert_eq(ns, t[0].samples);
    for (int i = 1; i < ns; i++)
        cr_assert(s[i].t >= s[i - 1].t);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* A traced run (one rmsnorm task on a CPU worker) with a replayed GPU series around it: the Chrome
 * trace gets the three counter tracks with the samples' values, the Gantt chart a band with the
 * clock and power lines and their means over the window. Without a series: neither. */
Test(telemetry, trace_and_gantt_draw_the_series)
{
    apb_runtime_opts o = {.sched = NULL, .ncpus = 1, .ncuda = 0, .precision = APB_PREC_FP32};
    apb_err err = {0};
    cr_assert_eq(apb_runtime_init(&o, &err), APB_OK, "%s", err.msg);
    float x[4 * 8], w[8], y[4 * 8];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 8; i++)
        w[i] = 1.0f;
    apb_handle hx = apb_tile_from(x, 4, 8, 4), hw = apb_tile_from(w, 1, 8, 4), hy = apb_tile_from(y, 4, 8, 4);
    apb_trace_reset();
    apb_trace_enable(1);
    double ta = mono_s();
    cr_assert_eq(apb_insert_rmsnorm(hx, hw, hy, 1e-5f, (apb_task_tag){0, 0, 0}), 0);
    cr_assert_eq(apb_runtime_wait_all(&err), APB_OK, "%s", err.msg);
    double tb = mono_s();
    apb_trace_enable(0);
    char dir[] = "/tmp/apb-tele-XXXXXX", p1[128], p2[128];
    cr_assert(mkdtemp(dir));
    snprintf(p1, sizeof p1, "%s/t.json", dir);
    snprintf(p2, sizeof p2, "%s/g.svg", dir);
    /* no series yet: no counters, no band */
    cr_assert_eq(apb_trace_write_chrome(p1, &err), APB_OK, "%s", err.msg);
    cr_assert_null(strstr(slurp(p1), "SM clock"));
    cr_assert_eq(apb_trace_write_gantt(p2, &err), APB_OK, "%s", err.msg);
    cr_assert_null(strstr(slurp(p2), "polyline"));
    /* a series: a sample before the traced span, two inside it, one after */
    apb_trace_stats st;
    cr_assert_eq(apb_trace_stats_get(&st), 0);
    const double a = st.first_ns * 1e-9, b = st.last_ns * 1e-9;
    cr_assert(b > a && a >= ta - 1 && b <= tb + 1, "span %.9f-%.9f, call %.9f-%.9f", a, b, ta, tb);
    const apb_gpu_sample s[4] = {smp(a - 0.001, 450.0, 1900, 50, 0, 0),
                                 smp(a + (b - a) * 0.25, 687.5, 1234, 60, APB_CLK_POWER_CAP, 0),
                                 smp(a + (b - a) * 0.75, 687.5, 1234, 60, APB_CLK_POWER_CAP, 0),
                                 smp(b + 0.001, 300.0, 1980, 50, 0, 0)};
    cr_assert_eq(apb_telemetry_series_set(0, s, 4, 700), APB_OK);
    cr_assert_float_eq(apb_telemetry_power_limit(0), 700, 1e-12);
    cr_assert_eq(apb_trace_write_chrome(p1, &err), APB_OK, "%s", err.msg);
    const char *t = slurp(p1);
    cr_assert(strstr(t, "\"GPU0 SM clock (MHz)\", \"ph\": \"C\"") && strstr(t, "\"MHz\": 1234"), "%.400s", t);
    cr_assert(strstr(t, "\"GPU0 power (W)\"") && strstr(t, "\"W\": 687.5"));
    cr_assert(strstr(t, "\"GPU0 held back by the power cap\"") && strstr(t, "\"capped\": 1"));
    cr_assert_eq(apb_trace_write_gantt(p2, &err), APB_OK, "%s", err.msg);
    const char *g = slurp(p2);
    cr_assert(strstr(g, "GPU0 clock"), "no band");
    cr_assert_eq(strstr(strstr(g, "<polyline") + 1, "<polyline") != NULL, 1, "two lines expected");
    /* the means over the window are of the two samples inside the task's span */
    cr_assert(strstr(g, "SM 1234 MHz, 688 W mean (scales: 2000 MHz, 700 W)"), "%s", strstr(g, "GPU0 clock"));
    cr_assert_eq(apb_telemetry_series_set(0, s, 0, 0), APB_OK); /* cleared */
    apb_handle_free_now(hx);
    apb_handle_free_now(hw);
    apb_handle_free_now(hy);
    apb_runtime_shutdown();
    unlink(p1);
    unlink(p2);
    rmdir(dir);
}
