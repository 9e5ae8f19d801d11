/* SPDX-License-Identifier: MIT */
/** @brief Prefill GEMMs with bf16 weights on the CPU through oneDNN's matmul (AMX or AVX-512 BF16
 * kernels where the CPU has them): out (+)= bf16(in) W^T with fp32 accumulation and output.
 *
 * Under --precision bf16 the weights are bf16; the fp32 path widened them to fp32 and ran
 * OpenBLAS's SGEMM. oneDNN multiplies bf16 x bf16 in hardware instead (Sapphire Rapids, one core,
 * 256 x 576 x 1536: 630-710 GFLOP/s with AMX against 145 for SGEMM), at the cost of rounding the
 * activation tile to bf16, as the GPU's bf16 path (cuBLAS) does. One engine, stream and a small
 * cache of primitives per thread (StarPU's CPU workers each call it); oneDNN's OpenMP runtime runs
 * one thread per call, the workers give the parallelism. APB_DNNL=0 keeps the SGEMM path. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "apb_build_config.h"
#include "codelets/apb_kernels_cpu.h"

#ifdef APB_HAVE_DNNL
#include <dnnl.h>

#include "common/apb_bf16.h"
#include "common/apb_env.h"
#include "runtime/apb_task.h"

void omp_set_num_threads(int n); /* libgomp, oneDNN's runtime */

enum { _APB_DNNL_CACHE = 96 }; /* linear shapes + the attention's (M in steps of 32, N / K padded) */

struct _apb_dnnl_prim {
    int M, N, K, b_nk, accumulate;
    size_t lda, ldb, ldc;
    dnnl_primitive_t p;
    dnnl_memory_desc_t src, wei, dst;
};

struct _apb_dnnl_thread {
    int state; /* 0: not tried, 1: ready, -1: unavailable in this thread */
    dnnl_engine_t eng;
    dnnl_stream_t st;
    struct _apb_dnnl_prim c[_APB_DNNL_CACHE];
    int n, next;
};

/* Per thread, freed with the thread (StarPU's workers end at shutdown) */
static pthread_key_t _apb_dnnl_key;
static pthread_once_t _apb_dnnl_once = PTHREAD_ONCE_INIT;

static void _apb_dnnl_thread_free(void *p)
{
    struct _apb_dnnl_thread *t = p;
    for (int i = 0; i < t->n; i++)
        dnnl_primitive_destroy(t->c[i].p);
    if (t->state > 0) {
        dnnl_stream_destroy(t->st);
        dnnl_engine_destroy(t->eng);
    }
    free(t);
}

static void _apb_dnnl_key_make(void) { pthread_key_create(&_apb_dnnl_key, _apb_dnnl_thread_free); }

static struct _apb_dnnl_thread *_apb_dnnl_thread_get(void)
{
    pthread_once(&_apb_dnnl_once, _apb_dnnl_key_make);
    struct _apb_dnnl_thread *t = pthread_getspecific(_apb_dnnl_key);
    if (!t && (t = calloc(1, sizeof *t)) && pthread_setspecific(_apb_dnnl_key, t)) {
        free(t);
        t = NULL;
    }
    return t;
}

int apb_dnnl_enabled(void)
{
    static int on = -1;
    return apb_env_switch("APB_DNNL", 1, &on);
}

static int _apb_dnnl_thread_init(struct _apb_dnnl_thread *t)
{
    if (t->state)
        return t->state;
    t->state = -1;
    if (dnnl_engine_create(&t->eng, dnnl_cpu, 0) != dnnl_success)
        return -1;
    if (dnnl_stream_create(&t->st, t->eng, dnnl_stream_default_flags) != dnnl_success) {
        dnnl_engine_destroy(t->eng);
        return -1;
    }
    t->state = 1;
    return 1;
}

/* The primitive for this shape: from the thread's cache, or made (oneDNN's own primitive cache
 * then holds the JIT-compiled kernel, so a re-made primitive is cheap too). */
static struct _apb_dnnl_prim *_apb_dnnl_prim_get(struct _apb_dnnl_thread *t, int M, int N, int K, size_t lda,
                                                 size_t ldb, int b_nk, size_t ldc, int accumulate)
{
    for (int i = 0; i < t->n; i++) {
        struct _apb_dnnl_prim *c = &t->c[i];
        if (c->M == M && c->N == N && c->K == K && c->lda == lda && c->ldb == ldb && c->b_nk == b_nk &&
            c->ldc == ldc && c->accumulate == accumulate)
            return c;
    }
    struct _apb_dnnl_prim *c = &t->c[t->n < _APB_DNNL_CACHE ? t->n : t->next];
    if (t->n == _APB_DNNL_CACHE) {
        dnnl_primitive_destroy(c->p);
        t->next = (t->next + 1) % _APB_DNNL_CACHE;
    }
    dnnl_dims_t ds = {M, K}, dw = {K, N}, dd = {M, N};
    dnnl_dims_t ss = {(dnnl_dim_t)lda, 1}, sd = {(dnnl_dim_t)ldc, 1};
    dnnl_dims_t sw = {b_nk ? 1 : (dnnl_dim_t)ldb, b_nk ? (dnnl_dim_t)ldb : 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_memory_desc_init_by_strides(&c->src, 2, ds, dnnl_bf16, ss) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&c->wei, 2, dw, dnnl_bf16, sw) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&c->dst, 2, dd, dnnl_f32, sd) == dnnl_success &&
             dnnl_matmul_desc_init(&md, &c->src, &c->wei, NULL, &c->dst) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && accumulate) /* out += product: a sum post-op over the destination */
        ok = dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &md, attr, t->eng, NULL) == dnnl_success &&
         dnnl_primitive_create(&c->p, pd) == dnnl_success;
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        if (t->n == _APB_DNNL_CACHE) /* the slot's old primitive is gone: drop the slot */
            *c = t->c[--t->n];
        return NULL;
    }
    c->M = M, c->N = N, c->K = K, c->lda = lda, c->ldb = ldb, c->b_nk = b_nk, c->ldc = ldc;
    c->accumulate = accumulate;
    if (t->n < _APB_DNNL_CACHE)
        t->n++;
    return c;
}

/* The thread's state, ready for oneDNN calls; NULL when oneDNN is off or unusable here. */
static struct _apb_dnnl_thread *_apb_dnnl_ready(void)
{
    if (!apb_dnnl_enabled())
        return NULL;
    struct _apb_dnnl_thread *t = _apb_dnnl_thread_get();
    return t && _apb_dnnl_thread_init(t) > 0 ? t : NULL;
}

static int _apb_dnnl_run(struct _apb_dnnl_thread *t, int M, int N, int K, const uint16_t *A, size_t lda,
                         const uint16_t *B, size_t ldb, int b_nk, float *C, size_t ldc, int accumulate)
{
    struct _apb_dnnl_prim *c = _apb_dnnl_prim_get(t, M, N, K, lda, ldb, b_nk, ldc, accumulate);
    if (!c)
        return -1;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL;
    int rc = -1;
    if (dnnl_memory_create(&ms, &c->src, t->eng, (void *)A) == dnnl_success &&
        dnnl_memory_create(&mw, &c->wei, t->eng, (void *)B) == dnnl_success &&
        dnnl_memory_create(&md, &c->dst, t->eng, C) == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
        omp_set_num_threads(1);
        if (dnnl_primitive_execute(c->p, t->st, 3, args) == dnnl_success && dnnl_stream_wait(t->st) == dnnl_success)
            rc = 0;
    }
    if (ms)
        dnnl_memory_destroy(ms);
    if (mw)
        dnnl_memory_destroy(mw);
    if (md)
        dnnl_memory_destroy(md);
    return rc;
}

int apb_dnnl_gemm_bf16(int M, int N, int K, const uint16_t *A, size_t lda, const uint16_t *B, size_t ldb,
                       int b_nk, float *C, size_t ldc, int accumulate)
{
    struct _apb_dnnl_thread *t = _apb_dnnl_ready();
    return t ? _apb_dnnl_run(t, M, N, K, A, lda, B, ldb, b_nk, C, ldc, accumulate) : -1;
}

int apb_dnnl_linear_bf16(float *out, int ld_out, const float *in, int ld_in, const uint16_t *w, size_t ld_w,
                         int rows, int n_in, int n_out, int accumulate)
{
    struct _apb_dnnl_thread *t = rows >= 2 ? _apb_dnnl_ready() : NULL;
    if (!t)
        return -1;
    uint16_t *src16 = (uint16_t *)(void *)_apb_thread_scratch(_APB_SCRATCH_DNNL, ((size_t)rows * n_in + 1) / 2);
    if (!src16)
        return -1;
    for (int i = 0; i < rows; i++) /* the activation tile in bf16 (round to nearest even) */
        apb_bf16_from_f32_n(src16 + (size_t)i * n_in, in + (size_t)i * ld_in, (size_t)n_in);
    return _apb_dnnl_run(t, rows, n_out, n_in, src16, (size_t)n_in, w, ld_w, 1, out, (size_t)ld_out, accumulate);
}

#else /* built without oneDNN (configure did not find dnnl.h / libdnnl): the SGEMM path runs */

int apb_dnnl_enabled(void) { return 0; }

int apb_dnnl_gemm_bf16(int M, int N, int K, const uint16_t *A, size_t lda, const uint16_t *B, size_t ldb,
                       int b_nk, float *C, size_t ldc, int accumulate)
{
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)b_nk, (void)C, (void)ldc;
    (void)accumulate;
    return -1;
}

int apb_dnnl_linear_bf16(float *out, int ld_out, const float *in, int ld_in, const uint16_t *w, size_t ld_w,
                         int rows, int n_in, int n_out, int accumulate)
{
    (void)out, (void)ld_out, (void)in, (void)ld_in, (void)w, (void)ld_w, (void)rows, (void)n_in;
    (void)n_out, (void)accumulate;
    return -1;
}
#endif
