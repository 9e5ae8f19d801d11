/* SPDX-License-Identifier: MIT */
/** @brief Model = config + weights (+ tokenizer), and its StarPU handles. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    m->embed = _apb_reg(m->w.embed, c->vocab_size, c->dim);
    m->final_norm = _apb_reg(m->w.final_norm, 1, c->dim);
    m->lm_head = m->w.lm_head == m->w.embed ? m->embed : _apb_reg(m->w.lm_head, c->vocab_size, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const apb_layer_weights *w = &m->w.layers[l];
        apb_layer_handles *h = &m->layers[l];
        h->attn_norm = _apb_reg(w->attn_norm, 1, c->dim);
        h->wq = _apb_reg(w->wq, qd, c->dim);
        h->wk = _apb_reg(w->wk, kd, c->dim);
        h->wv = _apb_reg(w->wv, kd, c->dim);
        h->bq = _apb_reg(w->bq, 1, qd);
        h->bk = _apb_reg(w->bk, 1, kd);
        h->bv = _apb_reg(w->bv, 1, kd);
        h->wo = _apb_reg(w->wo, c->dim, qd);
        h->mlp_norm = _apb_reg(w->mlp_norm, 1, c->dim);
        h->w_gate = _apb_reg(w->w_gate, c->hidden_dim, c->dim);
        h->w_up = _apb_reg(w->w_up, c->hidden_dim, c->dim);
        h->w_down = _apb_reg(w->w_down, c->dim, c->hidden_dim);
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
        m->registered = 0;
    }
    free(m->layers);
    free(m->inv_freq_data);
    apb_weights_free(&m->w);
    if (m->tok)
        apb_tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}
