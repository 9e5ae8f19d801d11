/* SPDX-License-Identifier: MIT */
/**
 * @brief GPU telemetry (runtime/telemetry.c): the fold of NVML samples into a summary, checked
 * against sums written out by hand on synthetic samples; the energy counter's mean power; the
 * sampler's behaviour where there is no NVIDIA driver (CI) or where there is one (the GPU machine).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

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
