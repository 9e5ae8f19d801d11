/* SPDX-License-Identifier: MIT */
/** @brief Model weights as fp32 arrays (HF Linear layout: [out_features, in_features], row-major). */
#ifndef APB_WEIGHTS_H
#define APB_WEIGHTS_H

#include <stdint.h>

#include "models/config.h"
#include "models/safetensors.h"

typedef struct apb_layer_weights {
    const float *attn_norm;   /* (dim) */
    const float *wq;          /* (n_heads * head_dim, dim) */
    const float *wk;          /* (n_kv_heads * head_dim, dim) */
    const float *wv;          /* (n_kv_heads * head_dim, dim) */
    const float *bq;          /* (n_heads * head_dim) or NULL */
    const float *bk;          /* (n_kv_heads * head_dim) or NULL */
    const float *bv;          /* (n_kv_heads * head_dim) or NULL */
    const float *wo;          /* (dim, n_heads * head_dim) */
    const float *mlp_norm;    /* (dim) */
    const float *w_gate;      /* (hidden_dim, dim) */
    const float *w_up;        /* (hidden_dim, dim) */
    const float *w_down;      /* (dim, hidden_dim) */
} apb_layer_weights;

typedef struct apb_weights {
    const float *embed;       /* (vocab_size, dim) */
    apb_layer_weights *layers;/* (n_layers) */
    const float *final_norm;  /* (dim) */
    const float *lm_head;     /* (vocab_size, dim); == embed when tied */
    /* ownership (private) */
    apb_st_set *_st;
    void **_owned;
    int _n_owned, _cap_owned;
} apb_weights;

/* Loads every tensor named by HF conventions (model.embed_tokens.weight,
 * model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias}, model.layers.N.mlp.{gate,up,down}_proj.weight,
 * model.layers.N.{input,post_attention}_layernorm.weight, model.norm.weight, lm_head.weight).
 * Shapes are checked against cfg; F32 tensors are used in place when 4-byte aligned, F16/BF16 are
 * converted to fp32 copies. Missing tensor / wrong shape / unsupported dtype -> APB_E_MODEL with the
 * tensor name, expected and found shape. */
int apb_weights_load(const char *dir, const apb_config *cfg, apb_weights *w, apb_err *err);

/* Deterministic random weights (N(0, 0.02), norms = 1) for shape-only benchmarks. */
int apb_weights_random(const apb_config *cfg, uint64_t seed, apb_weights *w, apb_err *err);

void apb_weights_free(apb_weights *w);

#endif
