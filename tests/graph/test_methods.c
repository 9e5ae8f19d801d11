/* SPDX-License-Identifier: MIT */
/**
 * @brief Sequence-parallel methods on the bundled model. Exact configurations must match `full`:
 * APB with no anchor and K = the whole block (the passing block is then every previous block) and
 * ring, zigzag and ulysses (W dividing the KV heads) for W = 1..4 and lengths that do not divide, and W = 1 for every method. Impossible settings fail with
 * a clear message.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "graph/apb_graph.h"
#include "tests/test_util.h"

#include "tests/graph/test_model.h"

TestSuite(methods, .init = up, .fini = down, .timeout = 600);

static const char *text =
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, and what is the use of a book, thought Alice, without "
    "pictures or conversations?";

/* ids of the text; the last nq are the question */
static int32_t *tokens(size_t *n)
{
    int32_t *ids;
    apb_err err = {0};
    cr_assert_eq(apb_tokenizer_encode(model.tok, text, strlen(text), 1, &ids, n, &err), 0, "%s", err.msg);
    return ids;
}

static int allgather_mode; /* APB_ALLGATHER_STARPU unless a test sets it */
static int pool_mode;      /* APB_POOL_REFERENCE (the default) unless a test sets it */

static int time_question; /* apb_hosts_opts.time_question unless 0 */
static double t_phases[2]; /* the last run's t_context_s, t_question_s */

static void method_logits(apb_method meth, int W, int anchor, int select, const int32_t *ids, int L,
                          int nq, float *out)
{
    apb_hseq hs;
    apb_hosts_opts o = {.method = meth, .hosts = W, .anchor = anchor, .select = select, .tile = 7,
                        .allgather = allgather_mode, .pool = pool_mode, .time_question = time_question};
    apb_sampling smp = {0, 1, 0};
    apb_err err = {0};
    cr_assert_eq(apb_prefill_hosts(&model, &hs, ids, L, ids + L, nq, 1, &o, &smp, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(apb_hosts_read_logits(&hs, out, model.cfg.vocab_size, &err), 0);
    cr_assert_eq(apb_runtime_wait_all(&err), 0);
    t_phases[0] = hs.t_context_s;
    t_phases[1] = hs.t_question_s;
    apb_hseq_free(&model, &hs);
}

/* bench/prefill --question-share: the barrier before the question pass changes the order of
 * nothing but the submission, so the logits are the same bits; both phases are timed, except for
 * Spava, whose question runs inside the layers (0, 0) */
Test(methods, time_question_same_logits_and_phase_times)
{
    size_t n;
    int32_t *ids = tokens(&n);
    int nq = 3, L = (int)n - nq, V = model.cfg.vocab_size;
    const struct { apb_method m; int A, K; } ms[] = {{APB_METHOD_APB, 20, 4}, {APB_METHOD_STAR, -1, -1},
                                                     {APB_METHOD_SPAVA, -1, -1}};
    for (int i = 0; i < 3; i++) {
        float *a = t_poisoned(V), *b = t_poisoned(V);
        method_logits(ms[i].m, 2, ms[i].A, ms[i].K, ids, L, nq, a);
        cr_assert(t_phases[0] == 0 && t_phases[1] == 0, "phases timed without time_question");
        time_question = 1;
        method_logits(ms[i].m, 2, ms[i].A, ms[i].K, ids, L, nq, b);
        time_question = 0;
        cr_assert(memcmp(a, b, sizeof(float) * V) == 0, "%s: time_question changed the logits",
                  apb_method_name(ms[i].m));
        if (ms[i].m == APB_METHOD_SPAVA)
            cr_assert(t_phases[0] == 0 && t_phases[1] == 0, "spava: phases reported");
        else
            cr_assert(t_phases[0] > 0 && t_phases[1] > 0, "%s: phases %g %g", apb_method_name(ms[i].m),
                      t_phases[0], t_phases[1]);
        free(a);
        free(b);
    }
    free(ids);
}

struct exact_case { int W, L; };

ParameterizedTestParameters(methods, apb_exact_config_matches_full)
{
    static struct exact_case cases[] = {{1, 50}, {2, 50}, {3, 50}, {4, 50}, {3, 61}, {4, 61}};
    return cr_make_param_array(struct exact_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct exact_case *c, methods, apb_exact_config_matches_full)
{
    size_t n;
    int32_t *ids = tokens(&n);
    int nq = 3, L = c->L;
    cr_assert_geq((int)n, L + nq);
    int V = model.cfg.vocab_size, block = (L + c->W - 1) / c->W;
    float *ref = t_poisoned(V), *got = t_poisoned(V);
    apb_err err = {0};
    /* full over context + question, last row */
    int32_t *all = malloc(sizeof(int32_t) * (L + nq));
    memcpy(all, ids, sizeof(int32_t) * (L + nq));
    cr_assert_eq(apb_forward_logits(&model, all, L + nq, 16, 1, ref, &err), 0, "%s", err.msg);
    double *rd = malloc(sizeof(double) * V);
    for (int i = 0; i < V; i++)
        rd[i] = ref[i];
    method_logits(APB_METHOD_APB, c->W, 0, block, ids, L, nq, got);
    double e = t_rel_err(got, rd, V);
    cr_log_info("apb W=%d L=%d exact config: rel err vs full %.3g", c->W, L, e);
    cr_assert_lt(e, 1e-4, "apb (anchor 0, select = block) W=%d L=%d differs from full: %g", c->W, L, e);
    method_logits(APB_METHOD_RING, c->W, -1, -1, ids, L, nq, got);
    e = t_rel_err(got, rd, V);
    cr_log_info("ring W=%d L=%d: rel err vs full %.3g", c->W, L, e);
    cr_assert_lt(e, 1e-4, "ring W=%d L=%d differs from full: %g", c->W, L, e);
    method_logits(APB_METHOD_ZIGZAG, c->W, -1, -1, ids, L, nq, got);
    e = t_rel_err(got, rd, V);
    cr_log_info("zigzag W=%d L=%d: rel err vs full %.3g", c->W, L, e);
    cr_assert_lt(e, 1e-4, "zigzag W=%d L=%d differs from full: %g", c->W, L, e);
    /* spava is exact when every chunk is selected whole (K = chunk): P1/P2 are then all earlier chunks */
    {
        int A = 8, chunk;
        for (;; A++) { /* an anchor that leaves 2W non-empty chunks */
            chunk = (L - A + 2 * c->W - 1) / (2 * c->W);
            if (L - A - (2 * c->W - 1) * chunk >= 1)
                break;
        }
        method_logits(APB_METHOD_SPAVA, c->W, A, chunk, ids, L, nq, got);
        e = t_rel_err(got, rd, V);
        cr_log_info("spava W=%d L=%d (select = chunk): rel err vs full %.3g", c->W, L, e);
        cr_assert_lt(e, 1e-4, "spava (select = chunk) W=%d L=%d differs from full: %g", c->W, L, e);
    }
    if (model.cfg.n_kv_heads % c->W == 0) { /* ulysses splits the KV heads over hosts */
        method_logits(APB_METHOD_ULYSSES, c->W, -1, -1, ids, L, nq, got);
        e = t_rel_err(got, rd, V);
        cr_log_info("ulysses W=%d L=%d: rel err vs full %.3g", c->W, L, e);
        cr_assert_lt(e, 1e-4, "ulysses W=%d L=%d differs from full: %g", c->W, L, e);
    }
    /* every method is exact with one host */
    if (c->W == 1) {
        for (int meth = 0; meth <= 6; meth++) {
            method_logits((apb_method)meth, 1, -1, -1, ids, L, nq, got);
            e = t_rel_err(got, rd, V);
            cr_assert_lt(e, 1e-4, "%s with one host differs from full: %g",
                         apb_method_name((apb_method)meth), e);
        }
    }
    free(ids); free(all); free(ref); free(got); free(rd);
}

Test(methods, approximate_methods_run_with_finite_logits)
{
    /* APB with a real anchor and compression, and Star, are approximations: their next-token
     * logits must stay finite; their argmax is logged beside full's. */
    size_t n;
    int32_t *ids = tokens(&n);
    int nq = 3, L = (int)n - nq, V = model.cfg.vocab_size;
    float *ref = t_poisoned(V), *got = t_poisoned(V);
    apb_err err = {0};
    cr_assert_eq(apb_forward_logits(&model, ids, L + nq, 16, 1, ref, &err), 0, "%s", err.msg);
    int best = 0;
    for (int i = 1; i < V; i++)
        best = ref[i] > ref[best] ? i : best;
    struct { apb_method m; int W, a, k; } runs[] = {
        {APB_METHOD_APB, 2, 24, 8}, {APB_METHOD_APB, 3, 17, 3}, {APB_METHOD_STAR, 2, -1, -1},
        {APB_METHOD_STAR, 4, -1, -1}, {APB_METHOD_SPAVA, 2, 16, 4}, {APB_METHOD_SPAVA, 3, -1, -1}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        method_logits(runs[r].m, runs[r].W, runs[r].a, runs[r].k, ids, L, nq, got);
        int gb = 0;
        for (int i = 0; i < V; i++) {
            cr_assert(isfinite(got[i]), "%s W=%d: logit %d not finite", apb_method_name(runs[r].m),
                      runs[r].W, i);
            gb = got[i] > got[gb] ? i : gb;
        }
        cr_log_info("%s W=%d: argmax %d (full %d)", apb_method_name(runs[r].m), runs[r].W, gb, best);
    }
    free(ids); free(ref); free(got);
}

/* The NCCL allgather (one collective per GPU and layer) computes what the data-dependency allgather
 * computes: same logits up to the order of the attention's key segments (on GPUs only). */
Test(methods, apb_nccl_allgather_matches_data_dependencies)
{
    int gw[64];
    if (!t_on_gpu() || apb_runtime_cuda_workers(gw, 64) < 1)
        cr_skip_test("needs CUDA workers (APB_TEST_DEVICE=cuda)");
    if (!apb_runtime_has_nccl())
        cr_skip_test("built without NCCL");
    apb_err err = {0};
    cr_assert_eq(apb_runtime_nccl_init(&err), 0, "%s", err.msg);
    int G = apb_runtime_nccl_size();
    size_t n;
    int32_t *ids = tokens(&n);
    int nq = 3, L = (int)n - nq, V = model.cfg.vocab_size;
    float *ref = t_poisoned(V), *got = t_poisoned(V);
    int shapes[][3] = {{2 * G, 17, 3}, {G, 24, 8}, {G, 17, 3}}; /* W, anchor, select */
    int ran = 0;
    for (int i = 0; i < 3; i++) {
        int W = shapes[i][0] < 2 ? 2 : shapes[i][0];
        if ((L + W - 1) / W <= shapes[i][1] + shapes[i][2])
            continue; /* the block cannot hold anchor + selection at this length */
        ran++;
        allgather_mode = APB_ALLGATHER_STARPU;
        method_logits(APB_METHOD_APB, W, shapes[i][1], shapes[i][2], ids, L, nq, ref);
        allgather_mode = APB_ALLGATHER_NCCL;
        method_logits(APB_METHOD_APB, W, shapes[i][1], shapes[i][2], ids, L, nq, got);
        allgather_mode = APB_ALLGATHER_STARPU;
        double *rd = malloc(sizeof(double) * V);
        for (int v = 0; v < V; v++)
            rd[v] = ref[v];
        double e = t_rel_err(got, rd, V);
        cr_log_info("apb W=%d on %d GPU(s): nccl vs data-dependency allgather rel err %.3g", W, G, e);
        cr_assert_lt(e, 1e-5, "apb W=%d: --allgather nccl differs: %g", W, e);
        free(rd);
    }
    cr_assert_geq(ran, 1, "no shape fits %d tokens on %d GPU(s)", L, G);
    /* hosts that do not split over the GPUs are refused before any task */
    if (G > 1) {
        apb_hseq hs;
        apb_hosts_opts o = {.method = APB_METHOD_APB, .hosts = G + 1, .anchor = 17, .select = 3,
                            .tile = 7, .allgather = APB_ALLGATHER_NCCL};
        apb_sampling smp = {0, 1, 0};
        cr_assert_eq(apb_prefill_hosts(&model, &hs, ids, L, ids + L, nq, 1, &o, &smp, &err), APB_E_USAGE);
        cr_assert(strstr(err.msg, "split evenly"), "%s", err.msg);
    }
    free(ids); free(ref); free(got);
}

/* Spava, chunks shorter than the selection size K: passed whole (default: K clamped to the chunk),
 * or min(K, 128 floor(chunk / 128)) rows as thunlp/APB's Spava (--short-chunk reference). */
Test(methods, spava_short_chunk_rule)
{
    apb_err err = {0};
    apb_config cfg = model.cfg;
    cfg.max_pos = 1 << 20; /* shapes only: nothing runs */
    struct { int L, W, select, ref, want; } cases[] = {
        /* L 20000, W 50: anchor 384, chunk 197, default K = 256 (L/128 rounded up to 128) */
        {20000, 50, -1, 0, 197}, {20000, 50, -1, 1, 128}, {20000, 50, 100, 1, 100},
        {20000, 50, 150, 1, 128}, {20000, 50, 150, 0, 150},
        /* L 200, W 2: anchor 50, chunk 38 < 128: the reference sends nothing */
        {200, 2, -1, 0, 38}, {200, 2, -1, 1, 0},
        /* L 1000, W 2: chunk 234, default K 64 fits: both rules agree */
        {1000, 2, -1, 0, 64}, {1000, 2, -1, 1, 64},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        apb_hosts_opts o = {.method = APB_METHOD_SPAVA, .hosts = cases[i].W, .anchor = -1,
                            .select = cases[i].select, .tile = 64,
                            .short_chunk = cases[i].ref ? APB_SHORT_REFERENCE : APB_SHORT_WHOLE};
        cr_assert_eq(apb_hosts_resolve(&cfg, cases[i].L, 5, 4, &o, &err), 0, "%s", err.msg);
        cr_expect_eq(o.select, cases[i].want, "L %d W %d select %d %s: K %d, want %d", cases[i].L,
                     cases[i].W, cases[i].select, cases[i].ref ? "reference" : "whole", o.select,
                     cases[i].want);
    }
    /* the option is Spava's (--pool is APB's: other methods ignore it, the CLI refuses it) */
    apb_hosts_opts o = {.method = APB_METHOD_APB, .hosts = 2, .anchor = -1, .select = -1, .tile = 64,
                        .short_chunk = APB_SHORT_REFERENCE};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "spava"), "%s", err.msg);
}

Test(methods, impossible_settings_are_refused)
{
    apb_err err = {0};
    apb_hosts_opts o = {.method = APB_METHOD_APB, .hosts = 4, .anchor = 300, .select = 64, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "anchor"), "%s", err.msg);
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 4, .anchor = 100, .select = 200, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "select"), "%s", err.msg);
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 40, .anchor = -1, .select = -1, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 20, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "hosts"), "%s", err.msg);
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 4, .anchor = -1, .select = -1, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 8000, 5, 400, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "context"), "%s", err.msg);
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 4, .anchor = 8, .select = 16, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "question"), "%s", err.msg);
    apb_method m;
    cr_assert_eq(apb_method_parse("ringish", &m, &err), APB_E_USAGE);
    o = (apb_hosts_opts){.method = APB_METHOD_ULYSSES, .hosts = 2, .anchor = -1, .select = -1, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE); /* 3 KV heads */
    cr_assert(strstr(err.msg, "KV heads"), "%s", err.msg);
    /* the NCCL allgather: APB only; it pins the hosts; without CUDA workers it is refused at submission */
    o = (apb_hosts_opts){.method = APB_METHOD_SPAVA, .hosts = 2, .anchor = -1, .select = -1, .tile = 64,
                         .allgather = APB_ALLGATHER_NCCL};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), APB_E_USAGE);
    cr_assert(strstr(err.msg, "--method apb"), "%s", err.msg);
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 2, .anchor = -1, .select = -1, .tile = 64,
                         .allgather = APB_ALLGATHER_NCCL};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 1000, 5, 4, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(o.placement, APB_PLACE_PINNED);
    int gw[64];
    if (apb_runtime_cuda_workers(gw, 64) == 0) {
        size_t n;
        int32_t *ids = tokens(&n);
        apb_hseq hs;
        apb_sampling smp = {0, 1, 0};
        o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 2, .anchor = 17, .select = 3, .tile = 7,
                             .allgather = APB_ALLGATHER_NCCL};
        cr_assert_eq(apb_prefill_hosts(&model, &hs, ids, 60, ids + 60, 3, 1, &o, &smp, &err), APB_E_USAGE);
        cr_assert(strstr(err.msg, "nccl"), "%s", err.msg);
        free(ids);
    }
    /* defaults resolve to the reference ratios, inside the block */
    o = (apb_hosts_opts){.method = APB_METHOD_APB, .hosts = 4, .anchor = -1, .select = -1, .tile = 64};
    cr_assert_eq(apb_hosts_resolve(&model.cfg, 4096, 5, 4, &o, &err), 0, "%s", err.msg);
    cr_assert_eq(o.anchor, 128);
    cr_assert_eq(o.select, 64);
}

/* Writes a retaining-head file: per layer fc1 [hid, (H + 2Hk) d] and fc2 [Hk, hid], F32 random. */
static void write_retain_file(const char *path, const apb_config *c, int hid, int layers)
{
    int in = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    char *hdr = malloc(1 << 16);
    size_t off = 0, n = 0;
    n += snprintf(hdr + n, (1 << 16) - n, "{");
    for (int l = 0; l < layers; l++) {
        size_t a = (size_t)hid * in * 4, b = (size_t)c->n_kv_heads * hid * 4;
        n += snprintf(hdr + n, (1 << 16) - n,
                      "%s\"model.layers.%d.self_attn.fc1.weight\":{\"dtype\":\"F32\",\"shape\":[%d,%d],"
                      "\"data_offsets\":[%zu,%zu]},\"model.layers.%d.self_attn.fc2.weight\":{\"dtype\":"
                      "\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                      l ? "," : "", l, hid, in, off, off + a, l, c->n_kv_heads, hid, off + a, off + a + b);
        off += a + b;
    }
    n += snprintf(hdr + n, (1 << 16) - n, "}");
    while (n % 8)
        hdr[n++] = ' ';
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    uint64_t hl = n;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, n, f);
    float *data = t_alloc(off / 4);
    t_fill(data, off / 4, 0.05f, 77);
    fwrite(data, 4, off / 4, f);
    fclose(f);
    free(data);
    free(hdr);
}

Test(methods, apb_with_retaining_heads)
{
    char path[] = "/tmp/apb_retain_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    apb_model m2;
    apb_err err = {0};
    cr_assert_eq(apb_model_load(t_model_dir(), &m2, &err), 0, "%s", err.msg);
    /* a file missing layers is refused with the layer named */
    write_retain_file(path, &m2.cfg, 16, 3);
    cr_assert_eq(apb_model_load_retain(&m2, path, &err), APB_E_MODEL);
    cr_assert(strstr(err.msg, "layer 3"), "%s", err.msg);
    write_retain_file(path, &m2.cfg, 16, m2.cfg.n_layers);
    cr_assert_eq(apb_model_load_retain(&m2, path, &err), 0, "%s", err.msg);
    unlink(path);
    cr_assert_eq(apb_model_register(&m2, &err), 0, "%s", err.msg);
    size_t n;
    int32_t *ids = tokens(&n);
    int nq = 3, L = (int)n - nq, V = m2.cfg.vocab_size;
    float *got = t_poisoned(V);
    apb_hseq hs;
    /* anchor 4 cannot hold the question, which retaining heads do not need */
    apb_hosts_opts o = {.method = APB_METHOD_APB, .hosts = 3, .anchor = 4, .select = 6, .tile = 7,
                        .retain = 1, .pool = APB_POOL_BLOCK};
    apb_sampling smp = {0, 1, 0};
    cr_assert_eq(apb_prefill_hosts(&m2, &hs, ids, L, ids + L, nq, 1, &o, &smp, &err), 0, "%s", err.msg);
    cr_assert_eq(apb_hosts_read_logits(&hs, got, V, &err), 0);
    cr_assert_eq(apb_runtime_wait_all(&err), 0);
    apb_hseq_free(&m2, &hs);
    for (int i = 0; i < V; i++)
        cr_assert(isfinite(got[i]), "logit %d not finite", i);
    apb_op_stats st;
    apb_op_stats_get(&st);
    cr_assert_gt(st.ntasks[APB_OP_RETAIN], 0, "no retaining-head task ran");
    /* --pool reference: host 1's anchor tiles are scored too (it pools over [anchor | local]) */
    long n_block = (long)st.ntasks[APB_OP_RETAIN];
    o.pool = APB_POOL_REFERENCE;
    cr_assert_eq(apb_prefill_hosts(&m2, &hs, ids, L, ids + L, nq, 1, &o, &smp, &err), 0, "%s", err.msg);
    cr_assert_eq(apb_hosts_read_logits(&hs, got, V, &err), 0);
    cr_assert_eq(apb_runtime_wait_all(&err), 0);
    apb_hseq_free(&m2, &hs);
    for (int i = 0; i < V; i++)
        cr_assert(isfinite(got[i]), "pool reference: logit %d not finite", i);
    apb_op_stats_get(&st);
    cr_assert_gt((long)st.ntasks[APB_OP_RETAIN] - n_block, n_block, "pool reference: %ld retain tasks, "
                 "block %ld: the anchor tiles were not scored", (long)st.ntasks[APB_OP_RETAIN] - n_block,
                 n_block);
    free(ids);
    free(got);
    apb_model_free(&m2);
}

/* APB with a real anchor and compression against tests/ref/apb_ref.py, an independent float64
 * numpy implementation of the spec (anchor assembly and positions, query-aware top-k per KV head
 * with host 0's first A positions excluded, passing blocks of previous hosts only, the anchor rows
 * skipping them, and the exact question pass), for both max-pool rules (--pool block: inside the
 * local block; reference: over [anchor | local], then the anchor excluded, as thunlp/APB). The two
 * rules must choose differently in at least one case, or the test would not tell them apart. */
static void apb_spec_case(const int32_t *ids, int L, int nq, int W, int A, int K, int pool, float *got,
                          double *ref)
{
    int V = model.cfg.vocab_size;
    char ctx[4096] = "", q[256] = "", cmd[8192];
    for (int i = 0, o = 0; i < L; i++)
        o += snprintf(ctx + o, sizeof ctx - o, "%s%d", i ? "," : "", ids[i]);
    for (int i = 0, o = 0; i < nq; i++)
        o += snprintf(q + o, sizeof q - o, "%s%d", i ? "," : "", ids[L + i]);
    char path[] = "/tmp/apb_spec_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    const char *py = getenv("APB_PYTHON") ? getenv("APB_PYTHON") : "python3";
    const char *src = getenv("top_srcdir") ? getenv("top_srcdir") : ".";
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/ref/apb_ref.py' --model '%s' --ctx %s --question %s "
             "--hosts %d --anchor %d --select %d --pool %s --out %s", py, src, t_model_dir(), ctx, q,
             W, A, K, pool == APB_POOL_REFERENCE ? "reference" : "block", path);
    cr_assert_eq(system(cmd), 0, "reference failed: %s", cmd);
    float *ref32 = t_alloc(V);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    cr_assert_eq(fread(ref32, sizeof(float), V, f), (size_t)V);
    fclose(f);
    unlink(path);
    for (int i = 0; i < V; i++)
        ref[i] = ref32[i];
    free(ref32);
    pool_mode = pool;
    method_logits(APB_METHOD_APB, W, A, K, ids, L, nq, got);
    pool_mode = APB_POOL_REFERENCE;
}

Test(methods, apb_matches_numpy_spec_implementation)
{
    size_t n;
    int32_t *ids = tokens(&n);
    int V = model.cfg.vocab_size;
    /* the last case's 6 question rows cross an anchor tile boundary (tile 7, rows 16..21) */
    struct { int W, A, K, nq; } cases[] = {{2, 20, 6, 3}, {3, 18, 3, 3}, {2, 24, 5, 6}};
    double max_diff = 0;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int nq = cases[c].nq, L = (int)n - nq, W = cases[c].W, A = cases[c].A, K = cases[c].K;
        float *got[2] = {t_poisoned(V), t_poisoned(V)};
        double *ref[2] = {malloc(sizeof(double) * V), malloc(sizeof(double) * V)};
        /* with 2 hosts only host 0 compresses, which has no anchor: the rules coincide there */
        for (int pool = APB_POOL_REFERENCE; pool <= (W > 2 ? APB_POOL_BLOCK : APB_POOL_REFERENCE); pool++) {
            apb_spec_case(ids, L, nq, W, A, K, pool, got[pool], ref[pool]);
            const char *pn = pool == APB_POOL_REFERENCE ? "reference" : "block";
            double e = t_rel_err(got[pool], ref[pool], V);
            cr_log_info("apb W=%d A=%d K=%d pool %s vs numpy spec: rel err %.3g", W, A, K, pn, e);
            cr_assert_lt(e, 1e-4, "apb W=%d A=%d K=%d pool %s differs from the numpy spec "
                         "implementation: %g", W, A, K, pn, e);
        }
        if (W > 2) {
            double d = t_rel_err(got[APB_POOL_REFERENCE], ref[APB_POOL_BLOCK], V);
            cr_log_info("apb W=%d A=%d K=%d: pool reference vs block rel diff %.3g", W, A, K, d);
            if (d > max_diff)
                max_diff = d;
        }
        for (int p = 0; p < 2; p++) {
            free(got[p]);
            free(ref[p]);
        }
    }
    cr_assert_gt(max_diff, 1e-3, "--pool reference and block chose the same rows in every case "
                 "(max rel diff %g): the test does not separate them", max_diff);
    free(ids);
}

/* The pre-run memory estimate: the KV cache counted in bf16 for the prompt's rows when the cache
 * is compacted (two layers still fp32), fp32 otherwise; question and decode rows always fp32. */
Test(memory_estimate, kv_cache_bf16_and_fp32)
{
    apb_config c = {0};
    c.n_layers = 32, c.n_kv_heads = 8, c.head_dim = 128, c.n_heads = 32, c.dim = 4096;
    c.hidden_dim = 14336, c.vocab_size = 128256;
    apb_hosts_opts o = {.method = APB_METHOD_FULL, .hosts = 1, .tile = 8192};
    const double L = 131072, nq = 64, mx = 16, kd = 8 * 128;
    double c32 = -1, c16 = -1;
    double t32 = apb_run_memory_estimate(&c, (int)L, (int)nq, (int)mx, &o, 0, &c32);
    double t16 = apb_run_memory_estimate(&c, (int)L, (int)nq, (int)mx, &o, 1, &c16);
    cr_expect_float_eq(c32, 4.0 * 2 * kd * 32 * (L + nq + mx), 1.0);
    cr_expect_float_eq(c16, 2.0 * 2 * kd * 32 * L + 4.0 * 2 * kd * 32 * (nq + mx) + 4.0 * 2 * kd * 2 * L, 1.0);
    cr_expect_float_eq(t32 - t16, c32 - c16, 1.0, "only the cache depends on the KV precision");
    cr_expect_lt(c16, 0.6 * c32);
}
