/* SPDX-License-Identifier: MIT */
/**
 * @brief The whole forward pass of the bundled model (SmolLM2-135M-Instruct) as a StarPU task graph
 * against tests/ref/llama_ref.py, an independent numpy float64 implementation that reads the same
 * safetensors: logits of the last rows (relative error bound asserted) and greedy continuation
 * through the KV-cache decode path.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "graph/apb_graph.h"
#include "tests/test_util.h"

#include "tests/graph/test_model.h"

TestSuite(forward, .init = up, .fini = down, .timeout = 600);

static const char *python(void)
{
    const char *p = getenv("APB_PYTHON");
    return p ? p : "python3";
}

static const char *srcdir(void)
{
    const char *s = getenv("top_srcdir");
    return s ? s : ".";
}

/* Runs the numpy reference; returns its stdout's first line in out (or reads binary logits). */
static void run_ref(const char *args, char *out, size_t cap)
{
    char cmd[12288];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/ref/llama_ref.py' --model '%s' %s", python(), srcdir(),
             t_model_dir(), args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0, "reference failed: %s\n%s", cmd, out);
}

static int encode(const char *text, int32_t **ids, size_t *n)
{
    apb_err err = {0};
    int rc = apb_tokenizer_encode(model.tok, text, strlen(text), 1, ids, n, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    return rc;
}

static void ids_arg(char *buf, size_t cap, const int32_t *ids, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += snprintf(buf + off, cap - off, "%s%d", i ? "," : "", ids[i]);
}

Test(forward, logits_match_float64_reference)
{
    int32_t *ids;
    size_t n;
    encode("The capital of France is Paris. The capital of Germany is", &ids, &n);
    int n_last = 3, V = model.cfg.vocab_size;
    char idstr[2048], args[4096], out[4096];
    ids_arg(idstr, sizeof idstr, ids, n);
    char path[] = "/tmp/apb_ref_logits_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    snprintf(args, sizeof args, "--ids %s --last %d --out %s", idstr, n_last, path);
    run_ref(args, out, sizeof out);
    float *ref32 = malloc(sizeof(float) * n_last * V);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(ref32, sizeof(float), (size_t)n_last * V, f), (size_t)n_last * V);
    fclose(f);
    unlink(path);
    double *ref = malloc(sizeof(double) * n_last * V);
    for (int i = 0; i < n_last * V; i++)
        ref[i] = ref32[i];
    /* tile 5 forces several tiles, partial last tile, and cross-tile causal attention */
    float *lg = t_poisoned((size_t)n_last * V);
    apb_err err = {0};
    cr_assert_eq(apb_forward_logits(&model, ids, (int)n, 5, n_last, lg, &err), 0, "%s", err.msg);
    double e = t_rel_err(lg, ref, (size_t)n_last * V);
    cr_log_info("forward: %zu tokens, last %d rows, logits rel err vs float64 %.3g", n, n_last, e);
    printf("forward: %zu tokens, logits relative error vs numpy float64 = %.3g\n", n, e);
    cr_assert_lt(e, 1e-4, "logits rel err %g", e);
    free(ref32); free(ref); free(lg); free(ids);
}

Test(forward, greedy_decode_matches_reference_and_is_sensible)
{
    int32_t *ids;
    size_t n;
    encode("The capital of France is", &ids, &n);
    int K = 8;
    char idstr[2048], args[4096], out[4096];
    ids_arg(idstr, sizeof idstr, ids, n);
    snprintf(args, sizeof args, "--ids %s --generate %d", idstr, K);
    run_ref(args, out, sizeof out);

    apb_seq seq;
    apb_sampling smp = {0.0f, 1.0f, 0};
    apb_err err = {0};
    int32_t got[8];
    cr_assert_eq(apb_prefill_full(&model, &seq, ids, (int)n, 4, K, &smp, &err), 0, "%s", err.msg);
    for (int i = 0; i < K; i++) {
        cr_assert_eq(apb_runtime_wait_all(&err), 0);
        cr_assert_eq(apb_tile_read(seq.token, &got[i], sizeof got[i], &err), 0);
        if (i + 1 < K)
            cr_assert_eq(apb_decode_step(&model, &seq, &smp, &err), 0, "%s", err.msg);
    }
    apb_seq_free(&model, &seq);
    char mine[512];
    ids_arg(mine, sizeof mine, got, K);
    /* reference prints the generated ids comma-separated on its last line */
    char *last = out + strlen(out);
    while (last > out && (last[-1] == '\n' || last[-1] == ' '))
        *--last = 0;
    char *nl = strrchr(out, '\n');
    const char *ref_ids = nl ? nl + 1 : out;
    char *text = apb_tokenizer_decode(model.tok, got, K, 1);
    printf("greedy: \"The capital of France is\" ->%s\n", text);
    cr_assert_str_eq(mine, ref_ids, "greedy ids differ from the float64 reference");
    cr_assert_not_null(strstr(text, "Paris"), "continuation does not name Paris: '%s'", text);
    free(text);
    free(ids);
}

/* The logits of every decode step (the CPU decode splits MLP and LM head over the workers) against
 * the float64 reference over the prompt and the generated tokens: as close as the prefill's. */
Test(forward, decode_logits_match_float64_reference)
{
    int32_t *ids;
    size_t n;
    encode("The capital of France is", &ids, &n);
    enum { K = 4 };
    int V = model.cfg.vocab_size;
    float *lg = t_poisoned((size_t)K * V);
    int32_t all[64];
    cr_assert_lt(n + K, sizeof all / sizeof *all);
    memcpy(all, ids, sizeof(int32_t) * n);
    apb_seq seq;
    apb_sampling smp = {0.0f, 1.0f, 0};
    apb_err err = {0};
    cr_assert_eq(apb_prefill_full(&model, &seq, ids, (int)n, 4, K, &smp, &err), 0, "%s", err.msg);
    for (int i = 0; i < K; i++) {
        cr_assert_eq(apb_runtime_wait_all(&err), 0, "%s", err.msg);
        cr_assert_eq(apb_tile_read(seq.logits, lg + (size_t)i * V, sizeof(float) * V, &err), 0);
        cr_assert_eq(apb_tile_read(seq.token, &all[n + i], sizeof(int32_t), &err), 0);
        if (i + 1 < K)
            cr_assert_eq(apb_decode_step(&model, &seq, &smp, &err), 0, "%s", err.msg);
    }
    apb_seq_free(&model, &seq);
    /* row n - 1 + i of prompt + tokens 0 .. K - 2 gave step i's logits */
    char idstr[2048], args[4096], out[4096];
    ids_arg(idstr, sizeof idstr, all, n + K - 1);
    char path[] = "/tmp/apb_ref_dlogits_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    snprintf(args, sizeof args, "--ids %s --last %d --out %s", idstr, K, path);
    run_ref(args, out, sizeof out);
    float *ref32 = malloc(sizeof(float) * K * V);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(ref32, sizeof(float), (size_t)K * V, f), (size_t)K * V);
    fclose(f);
    unlink(path);
    double *ref = malloc(sizeof(double) * K * V);
    for (int i = 0; i < K * V; i++)
        ref[i] = ref32[i];
    double e = t_rel_err(lg, ref, (size_t)K * V);
    printf("decode: %d steps, logits relative error vs numpy float64 = %.3g\n", K, e);
    cr_assert_lt(e, 1e-4, "decode logits rel err %g", e);
    free(ref32); free(ref); free(lg); free(ids);
}

/* Decode at a long context (the attention splits the cache over the workers and merges by
 * log-sum-exp) against the prefill of the same tokens (itself checked against float64 above). */
/* Greedy prefill of ids[0..n) in 256-row tiles, then k - 1 decode steps: the k rows of logits
 * (k x vocab) and the k sampled tokens. */
static void prefill_decode(const int32_t *ids, int n, int k, float *logits, int32_t *tok)
{
    const int V = model.cfg.vocab_size;
    apb_seq seq;
    apb_sampling smp = {0.0f, 1.0f, 0};
    apb_err err = {0};
    cr_assert_eq(apb_prefill_full(&model, &seq, ids, n, 256, k, &smp, &err), 0, "%s", err.msg);
    for (int i = 0; i < k; i++) {
        cr_assert_eq(apb_runtime_wait_all(&err), 0, "%s", err.msg);
        cr_assert_eq(apb_tile_read(seq.logits, logits + (size_t)i * V, sizeof(float) * V, &err), 0);
        cr_assert_eq(apb_tile_read(seq.token, &tok[i], sizeof(int32_t), &err), 0);
        if (i + 1 < k)
            cr_assert_eq(apb_decode_step(&model, &seq, &smp, &err), 0, "%s", err.msg);
    }
    apb_seq_free(&model, &seq);
}

Test(forward, long_context_decode_matches_prefill)
{
    enum { N = 700, K = 3 };
    int V = model.cfg.vocab_size;
    int32_t ids[N + K];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    float *dec = t_poisoned((size_t)K * V), *ref32 = t_poisoned((size_t)K * V);
    prefill_decode(ids, N, K, dec, ids + N);
    apb_err err = {0};
    cr_assert_eq(apb_forward_logits(&model, ids, N + K - 1, 256, K, ref32, &err), 0, "%s", err.msg);
    double *ref = malloc(sizeof(double) * K * V);
    for (int i = 0; i < K * V; i++)
        ref[i] = ref32[i];
    double e = t_rel_err(dec, ref, (size_t)K * V);
    printf("decode at %d tokens vs prefill: logits relative error %.3g\n", N, e);
    cr_assert_lt(e, 1e-5, "long-context decode vs prefill logits rel err %g", e);
    free(dec); free(ref32); free(ref);
}

/* One attention task a layer over all query tiles (APB_ATTN_GROUP=1) gives the logits of one task
 * a tile (APB_ATTN_GROUP=0, the default) and the same tokens through the decode steps that follow. */
Test(forward, grouped_attention_matches_per_tile)
{
    enum { N = 700, K = 3 };
    int V = model.cfg.vocab_size;
    int32_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    float *lg[2];
    int32_t tok[2][K];
    for (int g = 0; g < 2; g++) {
        setenv("APB_ATTN_GROUP", g ? "1" : "0", 1);
        lg[g] = t_poisoned((size_t)K * V);
        prefill_decode(ids, N, K, lg[g], tok[g]);
    }
    unsetenv("APB_ATTN_GROUP");
    double *ref = malloc(sizeof(double) * K * V);
    for (int i = 0; i < K * V; i++)
        ref[i] = lg[0][i];
    double e = t_rel_err(lg[1], ref, (size_t)K * V);
    printf("one attention task a layer vs one a tile: logits relative error %.3g\n", e);
    cr_assert_lt(e, 1e-6, "grouped vs per-tile attention: logits rel err %g", e);
    for (int i = 0; i < K; i++)
        cr_assert_eq(tok[0][i], tok[1][i], "token %d: %d vs %d", i, tok[0][i], tok[1][i]);
    free(lg[0]); free(lg[1]); free(ref);
}
