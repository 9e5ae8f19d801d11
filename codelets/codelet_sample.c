/* SPDX-License-Identifier: MIT */
/** @brief Token sampling: greedy (argmax) or temperature + top-p (nucleus). */
#include <math.h>
#include <stdlib.h>

#include "codelets/apb_kernels_cpu.h"
#include "codelets/apb_sample_det.h"
#include "codelets/codelet_common.h"
#ifdef APB_CUDA
#include "codelets/cuda/apb_cuda.h"
#endif

struct _apb_sample_args {
    int row;
    float temperature, top_p;
    uint64_t seed, step;
};

/* splitmix64 of (seed, counter): reproducible per step whatever the worker or the order. */
uint64_t apb_rng_u64(uint64_t seed, uint64_t counter)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (counter + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct _apb_prob { float p; int id; };

static int _apb_prob_desc(const void *a, const void *b)
{
    const struct _apb_prob *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

/* Greedy: the first index of the largest logit (NaN never wins, except at index 0).
 * Temperature + top-p, with the exact integer arithmetic of codelets/apb_sample_det.h so that the
 * CUDA kernel draws the same token: p_i = exp((l_i - l_max) / T), weights w_i = floor(p_i 2^40);
 * the nucleus is the shortest prefix of the tokens sorted by (p desc, id asc) whose weight reaches
 * top_p of the total (at least one token); the token is then drawn with probability proportional
 * to w_i inside the nucleus, by walking the nucleus in index order until the cumulative weight
 * exceeds floor(u * nucleus weight). */
int apb_sample_f32(const float *logits, int n, float temperature, float top_p, double u)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    if (!(temperature > 0.0f) || n > APB_SAMPLE_MAX_VOCAB)
        return best;
    struct _apb_prob *pr = malloc(sizeof *pr * (size_t)n);
    uint64_t *w = malloc(sizeof *w * (size_t)n);
    unsigned char *in = calloc((size_t)n, 1);
    int id = best; /* out of memory: degrade to greedy rather than fail the run */
    if (!pr || !w || !in)
        goto out;
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        pr[i].p = apb_sample_prob(logits[i], logits[best], temperature);
        pr[i].id = i;
        w[i] = apb_sample_weight(pr[i].p);
        sum += w[i];
    }
    if (sum == 0)
        goto out;
    qsort(pr, (size_t)n, sizeof *pr, _apb_prob_desc);
    double keep = apb_sample_keep(top_p, sum);
    uint64_t cum = 0;
    for (int m = 0; m < n && (m == 0 || (double)cum < keep); m++) {
        cum += w[pr[m].id];
        in[pr[m].id] = 1;
    }
    uint64_t r53 = (uint64_t)(u * 0x1p53), target = apb_sample_target(r53, cum), acc = 0;
    for (int i = 0; i < n; i++)
        if (in[i]) {
            acc += w[i];
            if (acc > target) {
                id = i;
                break;
            }
        }
out:
    free(pr);
    free(w);
    free(in);
    return id;
}

static void _apb_sample_cpu(void *buffers[], void *cl_arg)
{
    double t0 = _apb_now_ns();
    const struct _apb_sample_args *a = cl_arg;
    const float *logits = (const float *)_APB_PTR(buffers[0]) + (size_t)a->row * _APB_LD(buffers[0]);
    int n = _APB_COLS(buffers[0]);
    int32_t *tok = _APB_PTR(buffers[1]);
    double u = (apb_rng_u64(a->seed, a->step) >> 11) * 0x1.0p-53;
    tok[0] = apb_sample_f32(logits, n, a->temperature, a->top_p, u);
    _apb_op_account(APB_OP_SAMPLE, t0, 0);
}

#ifdef APB_CUDA
static void _apb_sample_cuda(void *buffers[], void *cl_arg)
{
    const struct _apb_sample_args *a = cl_arg;
    const float *logits = (const float *)_APB_PTR(buffers[0]) + (size_t)a->row * _APB_LD(buffers[0]);
    int n = _APB_COLS(buffers[0]);
    void *scr = _apb_cuda_scratch(_APB_CUDA_SCRATCH_OP, apb_cuda_sample_scratch(n));
    if (scr)
        apb_cuda_sample(logits, n, a->temperature, a->top_p, apb_rng_u64(a->seed, a->step) >> 11,
                        _APB_PTR(buffers[1]), scr, starpu_cuda_get_local_stream());
    _apb_cuda_check("sample");
    _apb_op_count(APB_OP_SAMPLE, 0);
}
#endif

static struct starpu_perfmodel _apb_sample_model = {
    .type = STARPU_HISTORY_BASED,
    .symbol = "apb_sample",
};

static struct starpu_codelet _apb_sample_cl = {
    .cpu_funcs = {_apb_sample_cpu},
    .cpu_funcs_name = {"_apb_sample_cpu"},
#ifdef APB_CUDA
    .cuda_funcs = {_apb_sample_cuda},
    .cuda_flags = {STARPU_CUDA_ASYNC},
#endif
    .nbuffers = 2,
    .modes = {STARPU_R, STARPU_W},
    .model = &_apb_sample_model,
    .name = "sample",
};

int apb_insert_sample(apb_handle logits, int row, apb_handle token, float temperature, float top_p,
                      uint64_t seed, uint64_t step, apb_task_tag tag)
{
    if (row < 0 || row >= apb_tile_rows(logits))
        return -EINVAL;
    struct _apb_sample_args a = {.row = row, .temperature = temperature, .top_p = top_p,
                                 .seed = seed, .step = step};
    return _apb_insert_check(
        apb_task_insert(&_apb_sample_cl, STARPU_R, logits, STARPU_W, token, STARPU_CL_ARGS, _apb_args_dup(&a, sizeof a), sizeof a, STARPU_PRIORITY, tag.prio, APB_ON_HOST(tag),
                           STARPU_NAME, _apb_task_name("sample", tag), 0),
        "sample");
}
