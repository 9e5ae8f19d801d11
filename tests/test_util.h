/* SPDX-License-Identifier: MIT */
/** @brief Shared helpers for the Criterion tests: random inputs, poisoned outputs, error norms. */
#ifndef APB_TEST_UTIL_H
#define APB_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codelets/apb_codelets.h"

static inline uint64_t _t_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [-scale, scale] */
static inline void t_fill(float *x, size_t n, float scale, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(((_t_rng(&s) >> 11) * 0x1.0p-53) * 2.0 - 1.0) * scale;
}

static inline float *t_alloc(size_t n)
{
    return malloc(sizeof(float) * (n ? n : 1));
}

/* Outputs are poisoned with NaN before the task runs: an element it forgets to write shows. */
static inline float *t_poisoned(size_t n)
{
    float *p = t_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

/* ||a - ref|| / ||ref|| (ref in double); NaN anywhere gives +inf. */
static inline double t_rel_err(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]))
            return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The runtime every test starts: CPU workers only, unless APB_TEST_DEVICE=cuda (then every task
 * runs on the GPUs: the same tests check the CUDA codelets against the same references, see
 * scripts/gpu-check.sh); APB_TEST_PRECISION=bf16 selects bf16 weights and tensor cores. */
static inline int t_on_gpu(void)
{
    const char *d = getenv("APB_TEST_DEVICE");
    return d && strcmp(d, "cuda") == 0;
}

static inline void t_runtime_up(void)
{
    const char *p = getenv("APB_TEST_PRECISION");
    apb_runtime_opts o = {.sched = NULL, .ncpus = t_on_gpu() ? 0 : -1, .ncuda = t_on_gpu() ? -1 : 0,
                          .precision = p && strcmp(p, "bf16") == 0 ? APB_PREC_BF16 : APB_PREC_FP32};
    apb_err err = {0};
    if (apb_runtime_init(&o, &err))
        abort();
}

/* Path of the bundled model: $APB_HOME/models/smollm2-135m-instruct (APB_HOME default ~/.cache/apb). */
static inline const char *t_model_dir(void)
{
    static char dir[4096];
    const char *home = getenv("APB_HOME");
    if (home)
        snprintf(dir, sizeof dir, "%s/models/smollm2-135m-instruct", home);
    else
        snprintf(dir, sizeof dir, "%s/.cache/apb/models/smollm2-135m-instruct", getenv("HOME"));
    return dir;
}

#endif
