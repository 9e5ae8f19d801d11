/* SPDX-License-Identifier: MIT */
/**
 * @brief Weight loading: a tiny random Llama / Qwen2 written as BF16, F16 and F32 safetensors loads with
 * the exact (rounded) values, tied and untied heads, F32 in place vs copied, and the error paths
 * (missing tensor, wrong shape, wrong dtype, unsupported biases, extra layers); random weights.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/weights.h"

#include "tests/models/test_tmpdir.h"

TestSuite(weights, .init = setup, .fini = teardown);

#define expect_err(rc, err, want_code, sub)                                                                  \
    do {                                                                                                     \
        cr_assert_eq((rc), (want_code), "status %d (want %d): %s", (rc), (want_code), (err).msg);           \
        cr_assert(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub));               \
    } while (0)

/* ------------------------------------------------------------------ tiny model writer */

enum { DIM = 8, LAYERS = 2, HEADS = 2, KV = 1, HD = 4, HID = 16, VOCAB = 32 };

typedef struct {
    char name[96];
    const char *dtype;  /* "F32", "F16", "BF16", "I32" */
    int ndim;
    int64_t shape[2];
    float *src;         /* exact values before rounding to dtype */
} t_tensor;

typedef struct {
    t_tensor t[64];
    int n;
} t_model;

static uint64_t rng_state;

static float t_uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static void add(t_model *m, const char *name, int rows, int cols, const char *dtype)
{
    t_tensor *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    t->src = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        t->src[i] = t_uniform();
}

/* HF tensor list of the tiny model; `bias` adds q/k/v biases, `lm_head` the output matrix. */
static void build(t_model *m, const char *dtype, int bias, int lm_head)
{
    memset(m, 0, sizeof *m);
    rng_state = 42;
    char n[96];
    add(m, "model.embed_tokens.weight", VOCAB, DIM, dtype);
    add(m, "model.norm.weight", DIM, 0, dtype);
    if (lm_head)
        add(m, "lm_head.weight", VOCAB, DIM, dtype);
    for (int l = 0; l < LAYERS; l++) {
#define L_(suffix, r, c)                                                                                     \
    do {                                                                                                     \
        snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                                              \
        add(m, n, r, c, dtype);                                                                              \
    } while (0)
        L_("input_layernorm.weight", DIM, 0);
        L_("self_attn.q_proj.weight", HEADS * HD, DIM);
        L_("self_attn.k_proj.weight", KV * HD, DIM);
        L_("self_attn.v_proj.weight", KV * HD, DIM);
        L_("self_attn.o_proj.weight", DIM, HEADS * HD);
        L_("post_attention_layernorm.weight", DIM, 0);
        L_("mlp.gate_proj.weight", HID, DIM);
        L_("mlp.up_proj.weight", HID, DIM);
        L_("mlp.down_proj.weight", DIM, HID);
        if (bias) {
            L_("self_attn.q_proj.bias", HEADS * HD, 0);
            L_("self_attn.k_proj.bias", KV * HD, 0);
            L_("self_attn.v_proj.bias", KV * HD, 0);
        }
#undef L_
    }
}

static void free_model(t_model *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->t[i].src);
}

static t_tensor *find(t_model *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->t[i].name, name) == 0)
            return &m->t[i];
    cr_assert_fail("test model has no %s", name);
    return NULL;
}

static void drop(t_model *m, const char *name)
{
    t_tensor *t = find(m, name);
    free(t->src);
    *t = m->t[--m->n];
}

static size_t numel(const t_tensor *t)
{
    return (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
}

static uint16_t to_bf16(float f) /* round to nearest even (no NaN in the sources) */
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Value the loader must produce for element i of t. */
static float expected(const t_tensor *t, size_t i)
{
    if (strcmp(t->dtype, "BF16") == 0)
        return from_bf16(to_bf16(t->src[i]));
    if (strcmp(t->dtype, "F16") == 0)
        return (float)(_Float16)t->src[i];
    return t->src[i];
}

/* Writes <tmp>/model.safetensors; the data section starts at 8 + header length, and the header is
 * space-padded so that this offset is == `align_mod` (mod 8). */
static void write_model(t_model *m, int align_mod)
{
    char *hdr = malloc(65536);
    size_t at = (size_t)snprintf(hdr, 65536, "{\"__metadata__\":{\"format\":\"pt\"}"), off = 0;
    for (int i = 0; i < m->n; i++) {
        t_tensor *t = &m->t[i];
        size_t es = strcmp(t->dtype, "F32") == 0 || strcmp(t->dtype, "I32") == 0 ? 4 : 2;
        size_t nb = numel(t) * es;
        char shape[64];
        if (t->ndim == 2)
            snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)t->shape[0]);
        at += (size_t)snprintf(hdr + at, 65536 - at,
                               ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", t->name,
                               t->dtype, shape, off, off + nb);
        off += nb;
    }
    hdr[at++] = '}';
    while ((8 + at) % 8 != (size_t)align_mod)
        hdr[at++] = ' ';
    uint8_t *data = malloc(off + 1);
    size_t p = 0;
    for (int i = 0; i < m->n; i++) {
        t_tensor *t = &m->t[i];
        for (size_t k = 0; k < numel(t); k++) {
            if (strcmp(t->dtype, "F32") == 0) {
                memcpy(data + p, &t->src[k], 4);
                p += 4;
            } else if (strcmp(t->dtype, "I32") == 0) {
                int32_t v = (int32_t)(t->src[k] * 100);
                memcpy(data + p, &v, 4);
                p += 4;
            } else {
                uint16_t h;
                if (strcmp(t->dtype, "BF16") == 0) {
                    h = to_bf16(t->src[k]);
                } else {
                    _Float16 x = (_Float16)t->src[k];
                    memcpy(&h, &x, 2);
                }
                memcpy(data + p, &h, 2);
                p += 2;
            }
        }
    }
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)at >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hdr, 1, at, f);
    fwrite(data, 1, off, f);
    fclose(f);
    free(data);
    free(hdr);
}

static apb_config tiny_config(int tie, int qwen)
{
    apb_config c = {.arch = qwen ? APB_ARCH_QWEN2 : APB_ARCH_LLAMA, .dim = DIM, .n_layers = LAYERS,
                    .n_heads = HEADS, .n_kv_heads = KV, .head_dim = HD, .hidden_dim = HID, .vocab_size = VOCAB,
                    .max_pos = 64, .rope_theta = 10000, .norm_eps = 1e-5f, .tie_embeddings = tie,
                    .qkv_bias = qwen, .bos_id = 1, .eos_ids = {2}, .n_eos = 1};
    snprintf(c.name, sizeof c.name, "tiny");
    return c;
}

/* Every pointer of w holds exactly the expected values of the model's tensor of the same name. */
static void check_all(t_model *m, const apb_weights *w, const apb_config *c)
{
    char n[96];
    struct named {
        const char *name;
        const float *p;
    } map[] = {{"model.embed_tokens.weight", w->embed}, {"model.norm.weight", w->final_norm}};
    const int k = 2;
    for (int l = 0; l < c->n_layers; l++) {
        const apb_layer_weights *lw = &w->layers[l];
        const char *suffix[] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                "mlp.down_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                "self_attn.v_proj.bias"};
        const float *ptr[] = {lw->attn_norm, lw->wq, lw->wk, lw->wv, lw->wo, lw->mlp_norm,
                              lw->w_gate, lw->w_up, lw->w_down, lw->bq, lw->bk, lw->bv};
        for (int s = 0; s < (c->qkv_bias ? 12 : 9); s++) {
            snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix[s]);
            cr_assert_not_null(ptr[s], "%s", n);
            t_tensor *t = find(m, n);
            for (size_t i = 0; i < numel(t); i++)
                cr_assert_eq(ptr[s][i], expected(t, i), "%s[%zu]: %a vs %a", n, i, ptr[s][i], expected(t, i));
        }
        if (!c->qkv_bias)
            cr_assert(!lw->bq && !lw->bk && !lw->bv);
    }
    for (int i = 0; i < k; i++) {
        t_tensor *t = find(m, map[i].name);
        for (size_t j = 0; j < numel(t); j++)
            cr_assert_eq(map[i].p[j], expected(t, j), "%s[%zu]", map[i].name, j);
    }
}

/* ------------------------------------------------------------------ valid loads */

Test(weights, bf16_untied)
{
    t_model m;
    build(&m, "BF16", 0, 1);
    write_model(&m, 0);
    apb_config c = tiny_config(0, 0);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    cr_assert_neq(w.lm_head, w.embed);
    t_tensor *h = find(&m, "lm_head.weight");
    for (size_t i = 0; i < numel(h); i++)
        cr_assert_eq(w.lm_head[i], expected(h, i));
    /* bf16 rounding really happened (values are not the fp32 sources) */
    cr_assert_neq(w.embed[0], find(&m, "model.embed_tokens.weight")->src[0]);
    apb_weights_free(&w);
    cr_assert_null(w.embed);
    apb_weights_free(&w); /* idempotent */
    free_model(&m);
}

Test(weights, tied)
{
    t_model m;
    build(&m, "BF16", 0, 0);
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    cr_assert_eq(w.lm_head, w.embed);
    apb_weights_free(&w);

    /* untied config, file without lm_head */
    c.tie_embeddings = 0;
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL, "missing tensor 'lm_head.weight'");
    cr_assert_null(w.layers, "failed load leaves w empty");
    free_model(&m);
}

Test(weights, tied_but_lm_head_stored)
{
    t_model m;
    build(&m, "BF16", 0, 1);
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    cr_assert_neq(w.lm_head, w.embed, "a stored lm_head.weight is used");
    t_tensor *h = find(&m, "lm_head.weight");
    for (size_t i = 0; i < numel(h); i++)
        cr_assert_eq(w.lm_head[i], expected(h, i));
    apb_weights_free(&w);
    free_model(&m);
}

Test(weights, f32_in_place_when_aligned)
{
    t_model m;
    build(&m, "F32", 0, 0);
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    cr_assert_eq((const void *)w.embed, apb_st_find(w._st, "model.embed_tokens.weight")->data);
    cr_assert_eq(w._n_owned, 0, "no copies");
    apb_weights_free(&w);

    write_model(&m, 2); /* data section at 2 mod 8: every F32 tensor is misaligned */
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    cr_assert_neq((const void *)w.embed, apb_st_find(w._st, "model.embed_tokens.weight")->data);
    cr_assert_eq(((uintptr_t)w.embed) % 4, 0);
    cr_assert_eq(w._n_owned, 2 + 9 * LAYERS, "every tensor copied");
    apb_weights_free(&w);
    free_model(&m);
}

Test(weights, f16)
{
    t_model m;
    build(&m, "F16", 0, 0);
    write_model(&m, 6);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    apb_weights_free(&w);
    free_model(&m);
}

Test(weights, qwen2_biases)
{
    t_model m;
    build(&m, "BF16", 1, 1);
    write_model(&m, 0);
    apb_config c = tiny_config(0, 1);
    apb_weights w;
    apb_err err = {0};
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    check_all(&m, &w, &c);
    apb_weights_free(&w);

    /* the same file with a bias-free config: biases would be ignored, so it is refused */
    c.qkv_bias = 0;
    c.arch = APB_ARCH_LLAMA;
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL,
               "_proj.bias' is a bias the model does not support (the config has no attention bias)");

    drop(&m, "model.layers.1.self_attn.v_proj.bias");
    write_model(&m, 0);
    c = tiny_config(0, 1);
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL,
               "missing tensor 'model.layers.1.self_attn.v_proj.bias'");
    free_model(&m);
}

/* ------------------------------------------------------------------ errors */

Test(weights, missing_tensor)
{
    t_model m;
    build(&m, "BF16", 0, 0);
    drop(&m, "model.layers.1.mlp.down_proj.weight");
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL,
               "missing tensor 'model.layers.1.mlp.down_proj.weight'");
    free_model(&m);
}

Test(weights, shape_mismatch)
{
    t_model m;
    build(&m, "BF16", 0, 0);
    t_tensor *t = find(&m, "model.layers.0.mlp.down_proj.weight");
    t->shape[0] = HID; /* transposed: [16, 8] instead of [8, 16] */
    t->shape[1] = DIM;
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL,
               "tensor 'model.layers.0.mlp.down_proj.weight' has shape [16, 8] but the config expects [8, 16]");

    /* config with more layers than the file */
    free_model(&m);
    build(&m, "BF16", 0, 0);
    write_model(&m, 0);
    c.n_layers = 3;
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL, "'model.layers.2.input_layernorm.weight'");
    /* and fewer */
    c.n_layers = 1;
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL, "beyond num_hidden_layers = 1");
    /* vocab mismatch */
    c = tiny_config(1, 0);
    c.vocab_size = 33;
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL, "[32, 8] but the config expects [33, 8]");
    free_model(&m);
}

Test(weights, wrong_dtype)
{
    t_model m;
    build(&m, "BF16", 0, 0);
    find(&m, "model.norm.weight")->dtype = "I32";
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL, "tensor 'model.norm.weight' has dtype I32");
    free_model(&m);
}

Test(weights, unsupported_extra_tensors)
{
    t_model m;
    build(&m, "BF16", 0, 0);
    add(&m, "model.layers.0.self_attn.o_proj.bias", DIM, 0, "BF16");
    write_model(&m, 0);
    apb_config c = tiny_config(1, 0);
    apb_weights w;
    apb_err err = {0};
    expect_err(apb_weights_load(tmp, &c, &w, &err), err, APB_E_MODEL,
               "'model.layers.0.self_attn.o_proj.bias' is a bias the model does not support");
    drop(&m, "model.layers.0.self_attn.o_proj.bias");
    add(&m, "model.layers.0.self_attn.rotary_emb.inv_freq", HD / 2, 0, "F32"); /* harmless extra */
    write_model(&m, 0);
    cr_assert_eq(apb_weights_load(tmp, &c, &w, &err), APB_OK, "%s", err.msg);
    apb_weights_free(&w);
    expect_err(apb_weights_load("/nonexistent/apb", &c, &w, &err), err, APB_E_IO, "/nonexistent/apb");
    free_model(&m);
}

/* ------------------------------------------------------------------ random weights */

Test(weights, random)
{
    apb_config c = {.arch = APB_ARCH_QWEN2, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                    .head_dim = 16, .hidden_dim = 256, .vocab_size = 1000, .max_pos = 128, .rope_theta = 1e4f,
                    .norm_eps = 1e-6f, .qkv_bias = 1, .tie_embeddings = 1, .name = "rnd"};
    apb_weights a, b, d;
    apb_err err = {0};
    cr_assert_eq(apb_weights_random(&c, 7, &a, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_weights_random(&c, 7, &b, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_weights_random(&c, 8, &d, &err), APB_OK, "%s", err.msg);
    size_t ne = (size_t)c.vocab_size * c.dim;
    cr_assert(memcmp(a.embed, b.embed, ne * 4) == 0, "same seed, same weights");
    cr_assert(memcmp(a.layers[1].w_down, b.layers[1].w_down, (size_t)c.dim * c.hidden_dim * 4) == 0);
    cr_assert(memcmp(a.embed, d.embed, ne * 4) != 0, "another seed, other weights");
    cr_assert(memcmp(a.layers[0].wq, a.layers[0].wk, (size_t)32 * 64 * 4) != 0, "matrices differ");
    cr_assert_eq(a.lm_head, a.embed);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < ne; i++) {
        cr_assert(isfinite(a.embed[i]));
        s += a.embed[i];
        s2 += (double)a.embed[i] * a.embed[i];
    }
    double mean = s / ne, sd = sqrt(s2 / ne - mean * mean);
    cr_assert(fabs(mean) < 0.001 && fabs(sd - 0.02) < 0.0005, "mean %g sd %g", mean, sd);
    for (int l = 0; l < c.n_layers; l++)
        for (int i = 0; i < c.dim; i++) {
            cr_assert_eq(a.layers[l].attn_norm[i], 1.0f);
            cr_assert_eq(a.layers[l].mlp_norm[i], 1.0f);
            cr_assert_eq(a.final_norm[i], 1.0f);
        }
    for (int i = 0; i < c.n_heads * c.head_dim; i++)
        cr_assert_eq(a.layers[1].bq[i], 0.0f);
    cr_assert_eq(a.layers[1].bv[c.n_kv_heads * c.head_dim - 1], 0.0f);
    apb_weights_free(&a);
    apb_weights_free(&b);
    apb_weights_free(&d);

    c.tie_embeddings = 0;
    c.qkv_bias = 0;
    cr_assert_eq(apb_weights_random(&c, 7, &a, &err), APB_OK, "%s", err.msg);
    cr_assert_neq(a.lm_head, a.embed);
    cr_assert_null(a.layers[0].bq);
    apb_weights_free(&a);
}

Test(weights, random_too_big)
{
    apb_config c;
    apb_err err = {0};
    cr_assert_eq(apb_config_preset("llama-3.1-8b", &c, &err), APB_OK);
    c.n_layers = 1000; /* ~877 GB: more than any test machine has */
    char want[128];
    snprintf(want, sizeof want, "random weights for llama-3.1-8b need %.1f GB of host memory;",
             (double)apb_config_n_params(&c) * 4 / 1e9);
    apb_weights w;
    expect_err(apb_weights_random(&c, 1, &w, &err), err, APB_E_NOMEM, want);
    cr_assert(strstr(err.msg, "GB available"), "%s", err.msg);
    cr_assert_null(w.embed);
}
