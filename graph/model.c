/* SPDX-License-Identifier: MIT */
/** @brief Model = config + weights (+ tokenizer), and its StarPU handles. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/apb_bf16.h"
#include "common/apb_parallel.h"
#include "graph/apb_graph.h"

int apb_model_load(const char *dir, apb_model *m, apb_err *err)
{
    memset(m, 0, sizeof *m);
    int rc = apb_config_load(dir, &m->cfg, err);
    if (rc)
        return rc;
    rc = apb_weights_load(dir, &m->cfg, &m->w, err);
    if (rc)
        return rc;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    rc = apb_tokenizer_load(path, &m->tok, err);
    if (rc) {
        apb_weights_free(&m->w);
        return rc;
    }
    if (apb_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size) {
        apb_tokenizer_free(m->tok);
        apb_weights_free(&m->w);
        return apb_fail(err, APB_E_MODEL, "%s: tokenizer has %d tokens but config vocab_size is %d",
                        path, apb_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    }
    return APB_OK;
}

int apb_model_random(const char *preset, uint64_t seed, apb_model *m, apb_err *err)
{
    memset(m, 0, sizeof *m);
    int rc = apb_config_preset(preset, &m->cfg, err);
    if (rc)
        return rc;
    return apb_weights_random(&m->cfg, seed, &m->w, err);
}

static apb_handle _apb_reg(const float *p, int rows, int cols)
{
    /* Weights are only ever read (STARPU_R); the cast is for StarPU's uintptr_t API. */
    return p ? apb_tile_from((void *)p, rows, cols, sizeof(float)) : NULL;
}

struct _apb_bf16_ctx {
    uint16_t *dst;
    const float *src;
};

static void _apb_bf16_range(void *cp, size_t lo, size_t hi)
{
    const struct _apb_bf16_ctx *c = cp;
    for (size_t i = lo; i < hi; i++)
        c->dst[i] = apb_bf16_from_f32(c->src[i]);
}

/* A large weight matrix: registered as is (fp32), or as a bf16 copy under APB_PREC_BF16 (the
 * copy is owned by the model). NULL when p is NULL or out of memory (*oom set). */
static apb_handle _apb_reg_w(apb_model *m, const float *p, int rows, int cols, int *oom)
{
    if (!p || apb_runtime_precision() != APB_PREC_BF16)
        return _apb_reg(p, rows, cols);
    size_t n = (size_t)rows * cols;
    uint16_t *b = malloc(n * sizeof(uint16_t));
    void **list = realloc(m->bf16_bufs, sizeof(void *) * (size_t)(m->n_bf16 + 1));
    if (list)
        m->bf16_bufs = list;
    if (!b || !list) {
        free(b);
        *oom = 1;
        return NULL;
    }
    m->bf16_bufs[m->n_bf16++] = b;
    struct _apb_bf16_ctx c = {b, p};
    apb_parallel_for(n, (size_t)1 << 22, _apb_bf16_range, &c);
    return apb_tile_from(b, rows, cols, sizeof(uint16_t));
}

#ifndef APB_RETAIN_SRCDIR
#define APB_RETAIN_SRCDIR "models/retain"
#endif
#ifndef APB_RETAIN_DATADIR
#define APB_RETAIN_DATADIR "/usr/local/share/apb/retain"
#endif

int apb_retain_default_path(const char *model_dir, char *out, size_t n, apb_err *err)
{
    /* the model's name: the directory's last component, trailing slashes ignored */
    size_t len = strlen(model_dir);
    while (len > 1 && model_dir[len - 1] == '/')
        len--;
    size_t b = len;
    while (b > 0 && model_dir[b - 1] != '/')
        b--;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(len - b), model_dir + b);
    char cand[3][PATH_MAX + 300];
    snprintf(cand[0], sizeof cand[0], "%.*s/retain_heads.safetensors", (int)len, model_dir);
    snprintf(cand[1], sizeof cand[1], "%s/%s.safetensors", APB_RETAIN_SRCDIR, name);
    snprintf(cand[2], sizeof cand[2], "%s/%s.safetensors", APB_RETAIN_DATADIR, name);
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(cand[i], "rb");
        if (!f)
            continue;
        fclose(f);
        if (strlen(cand[i]) >= n)
            return apb_fail(err, APB_E_IO, "retaining heads: path too long: %s", cand[i]);
        snprintf(out, n, "%s", cand[i]);
        return APB_OK;
    }
    return apb_fail(err, APB_E_IO, "no retaining heads for model '%s': looked for %s, %s and %s "
                    "(tools/train_retain.py trains them)", name, cand[0], cand[1], cand[2]);
}

int apb_model_load_retain(apb_model *m, const char *path, apb_err *err)
{
    const apb_config *c = &m->cfg;
    apb_st_set *st = NULL;
    int rc = apb_st_open_file(path, &st, err);
    if (rc)
        return rc;
    int L = c->n_layers, in = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    m->fc1 = calloc((size_t)L, sizeof(float *));
    m->fc2 = calloc((size_t)L, sizeof(float *));
    if (!m->fc1 || !m->fc2) {
        apb_st_close(st);
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    }
    for (int l = 0; l < L && !rc; l++) {
        char key[32];
        snprintf(key, sizeof key, "layers.%d.", l);
        const apb_st_tensor *f1 = NULL, *f2 = NULL;
        for (size_t i = 0; i < apb_st_count(st); i++) {
            const apb_st_tensor *t = apb_st_at(st, i);
            if (!strstr(t->name, key))
                continue;
            if (strstr(t->name, "fc1"))
                f1 = t;
            else if (strstr(t->name, "fc2"))
                f2 = t;
        }
        if (!f1 || !f2) {
            rc = apb_fail(err, APB_E_MODEL, "%s: no fc1/fc2 retaining-head tensors for layer %d", path, l);
            break;
        }
        int hidden = f1->ndim == 2 ? (int)f1->shape[0] : -1;
        if (f1->ndim != 2 || f1->shape[1] != in || f2->ndim != 2 || f2->shape[0] != c->n_kv_heads ||
            f2->shape[1] != hidden || (m->retain_hidden && hidden != m->retain_hidden)) {
            rc = apb_fail(err, APB_E_MODEL, "%s: layer %d: retaining heads must be fc1 [hidden, %d] "
                          "and fc2 [%d, hidden]; found '%s' [%lld, %lld] and '%s' [%lld, %lld]", path,
                          l, in, c->n_kv_heads, f1->name, (long long)f1->shape[0],
                          (long long)(f1->ndim > 1 ? f1->shape[1] : 0), f2->name,
                          (long long)f2->shape[0], (long long)(f2->ndim > 1 ? f2->shape[1] : 0));
            break;
        }
        m->retain_hidden = hidden;
        m->fc1[l] = malloc(sizeof(float) * (size_t)hidden * in);
        m->fc2[l] = malloc(sizeof(float) * (size_t)c->n_kv_heads * hidden);
        if (!m->fc1[l] || !m->fc2[l])
            rc = apb_fail(err, APB_E_NOMEM, "out of memory for the retaining heads");
        if (!rc)
            rc = apb_to_f32(m->fc1[l], f1->data, f1->dtype, (size_t)hidden * in, err);
        if (!rc)
            rc = apb_to_f32(m->fc2[l], f2->data, f2->dtype, (size_t)c->n_kv_heads * hidden, err);
        if (rc)
            apb_err_prefix(err, "%s: layer %d: ", path, l);
    }
    apb_st_close(st);
    if (rc)
        m->retain_hidden = 0;
    return rc;
}

int apb_model_register(apb_model *m, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->inv_freq_data = malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    double *f = malloc(sizeof(double) * (size_t)(c->head_dim / 2));
    if (!m->layers || !m->inv_freq_data || !f) {
        free(f);
        return apb_fail(err, APB_E_NOMEM, "out of memory registering the model");
    }
    apb_config_rope_inv_freq(c, f);
    for (int i = 0; i < c->head_dim / 2; i++)
        m->inv_freq_data[i] = (float)f[i];
    free(f);
    m->inv_freq = apb_tile_from(m->inv_freq_data, 1, c->head_dim / 2, sizeof(float));
    int oom = 0;
    m->embed = _apb_reg_w(m, m->w.embed, c->vocab_size, c->dim, &oom);
    m->final_norm = _apb_reg(m->w.final_norm, 1, c->dim);
    m->lm_head = m->w.lm_head == m->w.embed ? m->embed
                                             : _apb_reg_w(m, m->w.lm_head, c->vocab_size, c->dim, &oom);
    for (int l = 0; l < c->n_layers; l++) {
        const apb_layer_weights *w = &m->w.layers[l];
        apb_layer_handles *h = &m->layers[l];
        h->attn_norm = _apb_reg(w->attn_norm, 1, c->dim);
        h->wq = _apb_reg_w(m, w->wq, qd, c->dim, &oom);
        h->wk = _apb_reg_w(m, w->wk, kd, c->dim, &oom);
        h->wv = _apb_reg_w(m, w->wv, kd, c->dim, &oom);
        h->bq = _apb_reg(w->bq, 1, qd);
        h->bk = _apb_reg(w->bk, 1, kd);
        h->bv = _apb_reg(w->bv, 1, kd);
        h->wo = _apb_reg_w(m, w->wo, c->dim, qd, &oom);
        h->mlp_norm = _apb_reg(w->mlp_norm, 1, c->dim);
        h->w_gate = _apb_reg_w(m, w->w_gate, c->hidden_dim, c->dim, &oom);
        h->w_up = _apb_reg_w(m, w->w_up, c->hidden_dim, c->dim, &oom);
        h->w_down = _apb_reg_w(m, w->w_down, c->dim, c->hidden_dim, &oom);
    }
    if (oom)
        return apb_fail(err, APB_E_NOMEM, "out of host memory for the bf16 copy of the weights");
    if (m->retain_hidden) {
        int in = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
        m->h_fc1 = calloc((size_t)c->n_layers, sizeof(apb_handle));
        m->h_fc2 = calloc((size_t)c->n_layers, sizeof(apb_handle));
        if (!m->h_fc1 || !m->h_fc2)
            return apb_fail(err, APB_E_NOMEM, "out of memory registering the model");
        for (int l = 0; l < c->n_layers; l++) {
            m->h_fc1[l] = _apb_reg(m->fc1[l], m->retain_hidden, in);
            m->h_fc2[l] = _apb_reg(m->fc2[l], c->n_kv_heads, m->retain_hidden);
        }
    }
    m->registered = 1;
    return APB_OK;
}

void apb_model_free(apb_model *m)
{
    if (m->registered) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            apb_handle *hs = (apb_handle *)&m->layers[l];
            for (size_t i = 0; i < sizeof(apb_layer_handles) / sizeof(apb_handle); i++)
                apb_handle_free_now(hs[i]);
        }
        if (m->lm_head != m->embed)
            apb_handle_free_now(m->lm_head);
        apb_handle_free_now(m->embed);
        apb_handle_free_now(m->final_norm);
        apb_handle_free_now(m->inv_freq);
        for (int l = 0; m->h_fc1 && l < m->cfg.n_layers; l++) {
            apb_handle_free_now(m->h_fc1[l]);
            apb_handle_free_now(m->h_fc2[l]);
        }
        m->registered = 0;
    }
    free(m->layers);
    free(m->inv_freq_data);
    for (int i = 0; i < m->n_bf16; i++)
        free(m->bf16_bufs[i]);
    free(m->bf16_bufs);
    for (int l = 0; m->fc1 && l < m->cfg.n_layers; l++) {
        free(m->fc1[l]);
        free(m->fc2[l]);
    }
    free(m->fc1);
    free(m->fc2);
    free(m->h_fc1);
    free(m->h_fc2);
    apb_weights_free(&m->w);
    if (m->tok)
        apb_tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}
