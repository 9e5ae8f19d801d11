/* SPDX-License-Identifier: MIT */
/**
 * @brief GPU power and clock telemetry through NVML, loaded at run time (dlopen of the driver's
 * libnvidia-ml.so.1): apb links no NVML library and builds without one, and a machine without an
 * NVIDIA driver (CI, CPU runs) gets a clear "not available" instead of a missing symbol.
 *
 * A sampler thread reads, every period, each NVML device's power draw, SM clock, temperature and
 * clock-event reasons ("why the clock is below its maximum": power cap, thermal, idle); at stop the
 * samples are folded into one summary a device (apb_tele_acc_*, pure functions, tested on CPU).
 * The energy of a window comes from the device's energy counter where it has one (Volta and
 * later), so the mean power of a short run is exact even though NVML refreshes the power reading
 * only every ~20-100 ms.
 *
 * Why it exists: under a long prefill an H200 runs at its power limit and lowers its SM clock
 * (docs/PERFORMANCE.md, sessions 11-13), so a kernel's rate alone on an idle card says little about
 * its rate inside the prefill. The summary tells a user which case a run is in.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/apb_runtime.h"

/* ------------------------------------------------------------------ accumulation (pure) */
void apb_tele_acc_init(apb_tele_acc *a, int index, double power_limit_w)
{
    memset(a, 0, sizeof *a);
    a->index = index;
    a->power_limit_w = power_limit_w;
    a->sm_mhz_min = 1e30;
}

void apb_tele_acc_add(apb_tele_acc *a, const apb_gpu_sample *s)
{
    a->samples++;
    a->power_w_sum += s->power_w;
    a->power_w_max = s->power_w > a->power_w_max ? s->power_w : a->power_w_max;
    a->sm_mhz_sum += s->sm_mhz;
    a->sm_mhz_min = s->sm_mhz < a->sm_mhz_min ? s->sm_mhz : a->sm_mhz_min;
    a->sm_mhz_max = s->sm_mhz > a->sm_mhz_max ? s->sm_mhz : a->sm_mhz_max;
    a->temp_c_max = s->temp_c > a->temp_c_max ? s->temp_c : a->temp_c_max;
    if (s->reasons & APB_CLK_POWER_CAP)
        a->n_power_cap++;
    if (s->reasons & APB_CLK_THERMAL)
        a->n_thermal++;
    if (s->reasons & APB_CLK_IDLE)
        a->n_idle++;
    if (s->energy_mj > 0) {
        if (a->energy_mj_first <= 0) {
            a->energy_mj_first = s->energy_mj;
            a->t_first = s->t;
        }
        a->energy_mj_last = s->energy_mj;
        a->t_last = s->t;
    }
}

void apb_tele_acc_finish(const apb_tele_acc *a, double seconds, apb_gpu_tele *out)
{
    memset(out, 0, sizeof *out);
    out->index = a->index;
    out->samples = a->samples;
    out->seconds = seconds;
    out->power_limit_w = a->power_limit_w;
    out->energy_j = -1;
    if (!a->samples)
        return;
    const double n = a->samples;
    out->power_w_mean = a->power_w_sum / n;
    out->power_w_max = a->power_w_max;
    out->sm_mhz_mean = a->sm_mhz_sum / n;
    out->sm_mhz_min = a->sm_mhz_min;
    out->sm_mhz_max = a->sm_mhz_max;
    out->temp_c_max = a->temp_c_max;
    out->frac_power_cap = a->n_power_cap / n;
    out->frac_thermal = a->n_thermal / n;
    out->frac_idle = a->n_idle / n;
    /* the counter's mean power between its first and last sample, scaled to the window */
    if (a->energy_mj_last > a->energy_mj_first && a->t_last > a->t_first) {
        double w = (a->energy_mj_last - a->energy_mj_first) * 1e-3 / (a->t_last - a->t_first);
        out->energy_w_mean = w;
        out->energy_j = w * seconds;
    }
}

/* ------------------------------------------------------------------ NVML, loaded at run time */
typedef void *nvml_dev;
static struct {
    void *lib;
    int n;
    nvml_dev dev[APB_TELE_MAX_DEV];
    double limit_w[APB_TELE_MAX_DEV];
    int (*power)(nvml_dev, unsigned *);
    int (*clock)(nvml_dev, int, unsigned *);
    int (*temp)(nvml_dev, int, unsigned *);
    int (*reasons)(nvml_dev, unsigned long long *);
    int (*energy)(nvml_dev, unsigned long long *);
    char why[160];
} nv;
static pthread_mutex_t nv_mu = PTHREAD_MUTEX_INITIALIZER;

static double _now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 0 when NVML is loaded and initialised (once per process; NVML stays loaded until exit) */
static int _nvml_open(void)
{
    if (nv.lib)
        return 0;
    if (nv.why[0])
        return -1;
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(nv.why, sizeof nv.why, "NVML not available (libnvidia-ml.so.1: no NVIDIA driver here)");
        return -1;
    }
    int (*init)(void) = (int (*)(void))dlsym(lib, "nvmlInit_v2");
    int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(lib, "nvmlDeviceGetCount_v2");
    int (*byidx)(unsigned, nvml_dev *) = (int (*)(unsigned, nvml_dev *))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    int (*limit)(nvml_dev, unsigned *) = (int (*)(nvml_dev, unsigned *))dlsym(lib, "nvmlDeviceGetEnforcedPowerLimit");
    nv.power = (int (*)(nvml_dev, unsigned *))dlsym(lib, "nvmlDeviceGetPowerUsage");
    nv.clock = (int (*)(nvml_dev, int, unsigned *))dlsym(lib, "nvmlDeviceGetClockInfo");
    nv.temp = (int (*)(nvml_dev, int, unsigned *))dlsym(lib, "nvmlDeviceGetTemperature");
    nv.reasons = (int (*)(nvml_dev, unsigned long long *))dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons");
    if (!nv.reasons) /* drivers before 535 */
        nv.reasons = (int (*)(nvml_dev, unsigned long long *))dlsym(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
    nv.energy = (int (*)(nvml_dev, unsigned long long *))dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption");
    unsigned n = 0;
    if (!init || !count || !byidx || !nv.power || !nv.clock || init() != 0 || count(&n) != 0 || n == 0) {
        snprintf(nv.why, sizeof nv.why, "NVML found but unusable (no device, or an old driver)");
        dlclose(lib);
        return -1;
    }
    nv.n = 0;
    for (unsigned i = 0; i < n && nv.n < APB_TELE_MAX_DEV; i++) {
        unsigned mw = 0;
        if (byidx(i, &nv.dev[nv.n]) != 0)
            continue;
        nv.limit_w[nv.n] = limit && limit(nv.dev[nv.n], &mw) == 0 ? mw * 1e-3 : 0;
        nv.n++;
    }
    if (!nv.n) {
        snprintf(nv.why, sizeof nv.why, "NVML lists no device it can open");
        dlclose(lib);
        return -1;
    }
    nv.lib = lib;
    return 0;
}

static void _nvml_sample(int i, double t, apb_gpu_sample *s)
{
    unsigned v = 0;
    unsigned long long r = 0;
    memset(s, 0, sizeof *s);
    s->t = t;
    if (nv.power(nv.dev[i], &v) == 0)
        s->power_w = v * 1e-3;
    if (nv.clock(nv.dev[i], 1 /* NVML_CLOCK_SM */, &v) == 0)
        s->sm_mhz = v;
    if (nv.temp && nv.temp(nv.dev[i], 0 /* NVML_TEMPERATURE_GPU */, &v) == 0)
        s->temp_c = v;
    if (nv.reasons && nv.reasons(nv.dev[i], &r) == 0)
        s->reasons = r;
    if (nv.energy && nv.energy(nv.dev[i], &r) == 0)
        s->energy_mj = (double)r;
}

/* ------------------------------------------------------------------ the sampler thread */
#define APB_TELE_MAX_SERIES (1 << 18) /* samples kept a device: ~87 min at 20 ms */
static struct {
    pthread_t th;
    atomic_int stop;
    int running, period_us, keep;
    double t0;
    apb_tele_acc acc[APB_TELE_MAX_DEV];
    apb_gpu_sample *series[APB_TELE_MAX_DEV];
    int n_series[APB_TELE_MAX_DEV], cap_series[APB_TELE_MAX_DEV];
    int n_replay;                         /* devices given a series by apb_telemetry_series_set */
    double limit_replay[APB_TELE_MAX_DEV];
} tl;

static void _keep(int i, const apb_gpu_sample *s)
{
    if (tl.n_series[i] == tl.cap_series[i]) {
        if (tl.cap_series[i] >= APB_TELE_MAX_SERIES)
            return; /* full: the summary still counts every sample */
        int cap = tl.cap_series[i] ? 2 * tl.cap_series[i] : 1024;
        apb_gpu_sample *p = realloc(tl.series[i], sizeof *p * (size_t)cap);
        if (!p)
            return;
        tl.series[i] = p;
        tl.cap_series[i] = cap;
    }
    tl.series[i][tl.n_series[i]++] = *s;
}

static void _sample_all(void)
{
    double t = _now();
    for (int i = 0; i < nv.n; i++) {
        apb_gpu_sample s;
        _nvml_sample(i, t, &s);
        apb_tele_acc_add(&tl.acc[i], &s);
        if (tl.keep)
            _keep(i, &s);
    }
}

static void *_sampler(void *unused)
{
    (void)unused;
    while (!atomic_load(&tl.stop)) {
        _sample_all();
        struct timespec d = {tl.period_us / 1000000, (long)(tl.period_us % 1000000) * 1000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

int apb_telemetry_available(char *why, size_t n)
{
    pthread_mutex_lock(&nv_mu);
    int rc = _nvml_open();
    if (rc && why && n)
        snprintf(why, n, "%s", nv.why);
    pthread_mutex_unlock(&nv_mu);
    return rc == 0;
}

int apb_telemetry_start(int period_ms, int keep, apb_err *err)
{
    if (period_ms < 1 || period_ms > 10000)
        return apb_fail(err, APB_E_USAGE, "telemetry: the sampling period must be 1-10000 ms, not %d", period_ms);
    pthread_mutex_lock(&nv_mu);
    int rc = _nvml_open();
    if (rc) {
        pthread_mutex_unlock(&nv_mu);
        return apb_fail(err, APB_E_RUNTIME, "telemetry: %s", nv.why);
    }
    if (tl.running) {
        pthread_mutex_unlock(&nv_mu);
        return apb_fail(err, APB_E_USAGE, "telemetry: a sampler is already running");
    }
    for (int i = 0; i < nv.n; i++) {
        apb_tele_acc_init(&tl.acc[i], i, nv.limit_w[i]);
        tl.n_series[i] = 0;
    }
    tl.keep = keep;
    tl.period_us = period_ms * 1000;
    atomic_store(&tl.stop, 0);
    tl.t0 = _now();
    _sample_all(); /* the window's first energy reading */
    if (pthread_create(&tl.th, NULL, _sampler, NULL) != 0) {
        pthread_mutex_unlock(&nv_mu);
        return apb_fail(err, APB_E_RUNTIME, "telemetry: could not start the sampler thread");
    }
    tl.running = 1;
    pthread_mutex_unlock(&nv_mu);
    return APB_OK;
}

int apb_telemetry_stop(apb_gpu_tele *out, int max)
{
    pthread_mutex_lock(&nv_mu);
    if (!tl.running) {
        pthread_mutex_unlock(&nv_mu);
        return 0;
    }
    atomic_store(&tl.stop, 1);
    pthread_join(tl.th, NULL);
    tl.running = 0;
    _sample_all(); /* the window's last energy reading */
    const double secs = _now() - tl.t0;
    int n = nv.n < max ? nv.n : max;
    for (int i = 0; i < n; i++)
        apb_tele_acc_finish(&tl.acc[i], secs, &out[i]);
    pthread_mutex_unlock(&nv_mu);
    return n;
}

int apb_telemetry_series(int dev, const apb_gpu_sample **s)
{
    pthread_mutex_lock(&nv_mu);
    int n = !tl.running && dev >= 0 && dev < (nv.n > tl.n_replay ? nv.n : tl.n_replay) ? tl.n_series[dev] : 0;
    *s = n ? tl.series[dev] : NULL;
    pthread_mutex_unlock(&nv_mu);
    return n;
}

int apb_telemetry_series_set(int dev, const apb_gpu_sample *s, int n, double power_limit_w)
{
    if (dev < 0 || dev >= APB_TELE_MAX_DEV || n < 0 || n > APB_TELE_MAX_SERIES)
        return APB_E_USAGE;
    pthread_mutex_lock(&nv_mu);
    if (tl.running) {
        pthread_mutex_unlock(&nv_mu);
        return APB_E_USAGE;
    }
    tl.n_series[dev] = 0;
    for (int i = 0; i < n; i++)
        _keep(dev, &s[i]);
    int rc = tl.n_series[dev] == n ? APB_OK : APB_E_NOMEM;
    tl.limit_replay[dev] = power_limit_w;
    if (dev >= tl.n_replay)
        tl.n_replay = dev + 1;
    pthread_mutex_unlock(&nv_mu);
    return rc;
}

double apb_telemetry_power_limit(int dev)
{
    if (dev < 0 || dev >= APB_TELE_MAX_DEV)
        return 0;
    pthread_mutex_lock(&nv_mu);
    double w = dev < nv.n && nv.limit_w[dev] > 0 ? nv.limit_w[dev] : tl.limit_replay[dev];
    pthread_mutex_unlock(&nv_mu);
    return w;
}

void apb_telemetry_print(FILE *f, const apb_gpu_tele *t, int n)
{
    for (int i = 0; i < n; i++) {
        const apb_gpu_tele *g = &t[i];
        if (!g->samples)
            continue;
        fprintf(f, "GPU %d power/clock over %.2f s (%d samples): power %.0f W mean", g->index, g->seconds,
                g->samples, apb_gpu_tele_watts(g));
        if (g->energy_j >= 0)
            fprintf(f, " (%.0f J)", g->energy_j);
        fprintf(f, ", %.0f W max", g->power_w_max);
        if (g->power_limit_w > 0)
            fprintf(f, " of a %.0f W limit", g->power_limit_w);
        fprintf(f, "; SM clock %.0f MHz mean (%.0f-%.0f); held back by the power cap in %.0f %% of samples, "
                   "thermal %.0f %%, idle %.0f %%; %.0f C max\n",
                g->sm_mhz_mean, g->sm_mhz_min, g->sm_mhz_max, 100 * g->frac_power_cap, 100 * g->frac_thermal,
                100 * g->frac_idle, g->temp_c_max);
    }
}
