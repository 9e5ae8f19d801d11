/* SPDX-License-Identifier: MIT */
/**
 * @brief The per-layer chain every method shares: norm -> QKV -> RoPE before attention, o-proj ->
 * norm -> MLP after it, and the bf16 compaction of a finished layer's KV cache.
 */
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "common/apb_env.h"

/* The handles of layer l's fused few-row steps (codelets/codelet_layer.c). */
apb_layer_w _apb_layer_w(const apb_model *m, int l)
{
    const apb_layer_handles *L = &m->layers[l];
    return (apb_layer_w){L->attn_norm, L->wq, L->wk, L->wv, L->bq, L->bk, L->bv, L->wo,
                         L->mlp_norm, L->w_gate, L->w_up, L->w_down, m->inv_freq};
}

/* Decoding and the question pass run each layer's dense steps as fused tasks (layer, layer_pre,
 * layer_post); APB_FUSED_DECODE=0 submits the separate ops instead (same results, bitwise), for
 * comparisons. */
int _apb_fused_decode(void)
{
    static int on = -1;
    return apb_env_switch("APB_FUSED_DECODE", 1, &on);
}

int _apb_act_elem(void)
{
    static int on = -1; /* APB_BF16_ACT=0: fp32 o and xn tiles (comparisons) */
    return apb_runtime_precision() == APB_PREC_BF16 && apb_env_switch("APB_BF16_ACT", 1, &on) ? 2 : 4;
}

/* The per-layer dense chain after attention: o-proj (+residual), norm, MLP (+residual). */
int _apb_post_attention(apb_model *m, int l, apb_handle o, apb_handle x, apb_handle xn,
                        apb_task_tag tag, apb_err *err)
{
    const apb_layer_handles *L = &m->layers[l];
    _APB_TRY(apb_insert_linear(o, L->wo, NULL, x, 1, tag), "o_proj");
    _APB_TRY(apb_insert_rmsnorm(x, L->mlp_norm, xn, m->cfg.norm_eps, tag), "mlp_norm");
    _APB_TRY(apb_insert_mlp(xn, L->w_gate, L->w_up, L->w_down, x, tag), "mlp");
    return APB_OK;
}

/* Norm, QKV and RoPE of one tile (mRoPE from the tile's ids when mpos is given). */
int _apb_pre_attention_m(apb_model *m, int l, apb_handle x, apb_handle xn, apb_handle q, apb_handle k,
                         apb_handle v, int pos0, apb_handle mpos, apb_task_tag tag, apb_err *err)
{
    const apb_layer_handles *L = &m->layers[l];
    _APB_TRY(apb_insert_rmsnorm(x, L->attn_norm, xn, m->cfg.norm_eps, tag), "attn_norm");
    _APB_TRY(apb_insert_qkv(xn, L->wq, L->wk, L->wv, L->bq, L->bk, L->bv, q, k, v, tag), "qkv");
    if (mpos) { /* without mRoPE the ids are equal (checked at load): every pair takes id 0 */
        const int one_d[3] = {m->cfg.head_dim / 2, 0, 0};
        _APB_TRY(apb_insert_rope_m(q, k, m->inv_freq, mpos, m->cfg.mrope ? m->cfg.mrope_section : one_d,
                                   m->cfg.head_dim, tag), "rope");
    }
    else
        _APB_TRY(apb_insert_rope(q, k, m->inv_freq, pos0, m->cfg.head_dim, tag), "rope");
    return APB_OK;
}

int _apb_pre_attention(apb_model *m, int l, apb_handle x, apb_handle xn, apb_handle q,
                       apb_handle k, apb_handle v, int pos0, apb_task_tag tag, apb_err *err)
{
    return _apb_pre_attention_m(m, l, x, xn, q, k, v, pos0, NULL, tag, err);
}

int _apb_pre_attention_hosts(apb_model *m, apb_hseq *hs, int l, apb_err *err)
{
    int rc = APB_OK;
    for (int r = 0; r < hs->opt.hosts && !rc; r++) {
        apb_host *h = &hs->h[r];
        for (int t = 0; t < h->n_tiles && !rc; t++) {
            if (_apb_kv_host(hs, r, t) != h)
                continue; /* a shared anchor tile: host anchor_src computes it */
            rc = _apb_pre_attention_m(m, l, h->x[t], h->xn[t], h->q[t], h->k[l * h->n_tiles + t],
                                      h->v[l * h->n_tiles + t], h->pos0[t], h->mpos_t ? h->mpos_t[t] : NULL,
                                      (apb_task_tag){l, r, m->cfg.n_layers - l}, err);
        }
    }
    return rc;
}

/* Under APB_PREC_BF16, once layer l's tasks are all submitted, the K/V tiles that stay (the cache
 * the question pass and decoding read) are compacted to bf16 and the fp32 tiles released after
 * their last reader: the cache of finished layers takes half the memory (at 128K tokens 16 GiB
 * instead of 32 for Llama-3.1-8B shapes). The tensor-core attention kernel rounds K/V to bf16
 * anyway; the exact fp32 mode keeps fp32 tiles.
 * The tiles go into ONE contiguous bf16 K and V handle per layer (tile u at rows crow0[u]..), so a
 * decode step's layer task reads the cache as one segment (two buffers) instead of two buffers a
 * tile: StarPU's cost of a task grows by ~0.5-1 us a buffer, on the critical path of every decode
 * step (at 128K tokens and tile 8192 that is 32 buffers of each layer task). APB_KV_CONTIG=0 keeps
 * one bf16 tile per fp32 tile. */
static int _apb_kv_contig(void)
{
    static int on = -1;
    return apb_env_switch("APB_KV_CONTIG", 1, &on);
}

int _apb_compact_kv(apb_handle *k, apb_handle *v, int n, int owner_host, int layer, int prio, apb_handle *kc,
                    apb_handle *vc, int *crow0, apb_err *err)
{
    for (int u = 0; u < n; u++)
        crow0[u] = -1;
    if (apb_runtime_precision() != APB_PREC_BF16)
        return APB_OK;
    const apb_task_tag tag = {layer, owner_host, prio};
    int total = 0, cols = 0;
    for (int u = 0; u < n; u++)
        if (k[u] && v[u] && apb_tile_elemsize(k[u]) == sizeof(float)) {
            total += apb_tile_rows(k[u]);
            cols = apb_tile_cols(k[u]);
        }
    if (!total)
        return APB_OK;
    apb_runtime_set_owner(owner_host);
    const int contig = _apb_kv_contig() && !*kc && !*vc;
    if (contig) {
        *kc = apb_tile_new(total, cols, 2);
        *vc = apb_tile_new(total, cols, 2);
        if (!*kc || !*vc)
            return apb_fail(err, APB_E_RUNTIME, "registering the bf16 KV cache failed");
    }
    for (int u = 0, row0 = 0; u < n; u++) {
        if (!k[u] || !v[u] || apb_tile_elemsize(k[u]) != sizeof(float))
            continue;
        const int rows = apb_tile_rows(k[u]);
        apb_handle k16 = contig ? *kc : apb_tile_new(rows, apb_tile_cols(k[u]), 2);
        apb_handle v16 = contig ? *vc : apb_tile_new(rows, apb_tile_cols(v[u]), 2);
        if (!k16 || !v16 || apb_insert_kv_compact_at(k[u], v[u], k16, v16, contig ? row0 : 0, tag)) {
            if (!contig) {
                apb_handle_free(k16);
                apb_handle_free(v16);
            }
            return apb_fail(err, APB_E_RUNTIME, "submitting the bf16 compaction of the KV cache failed");
        }
        apb_handle_free(k[u]);
        apb_handle_free(v[u]);
        if (contig) {
            k[u] = v[u] = NULL;
            crow0[u] = row0;
            row0 += rows;
        } else {
            k[u] = k16;
            v[u] = v16;
        }
    }
    return APB_OK;
}

apb_attn_seg _apb_cache_tile(const apb_handle *k, const apb_handle *v, const apb_handle *kc,
                             const apb_handle *vc, const int *crow0, int n_tiles, int l, int u, int len)
{
    const int i = l * n_tiles + u;
    if (kc && kc[l] && crow0[i] >= 0)
        return (apb_attn_seg){.k = kc[l], .v = vc[l], .len = len, .row0 = crow0[i]};
    return (apb_attn_seg){.k = k[i], .v = v[i], .len = len};
}

int _apb_seg_push(apb_attn_seg *segs, int ns, apb_attn_seg s)
{
    if (ns > 0) {
        apb_attn_seg *p = &segs[ns - 1];
        if (p->k == s.k && p->v == s.v && p->row0 + p->len == s.row0 && p->causal == s.causal &&
            p->min_q_coord == s.min_q_coord && (!s.causal || p->coord0 + p->len == s.coord0)) {
            p->len += s.len;
            return ns;
        }
    }
    segs[ns] = s;
    return ns + 1;
}

int _apb_compact_layer(apb_hseq *hs, int l, int prio, apb_err *err)
{
    int rc = APB_OK;
    for (int r = 0; r < hs->opt.hosts && !rc; r++) {
        apb_host *h = &hs->h[r];
        rc = _apb_compact_kv(&h->k[l * h->n_tiles], &h->v[l * h->n_tiles], h->n_tiles, r, l, prio, &h->kc[l],
                             &h->vc[l], &h->crow0[l * h->n_tiles], err);
    }
    return rc;
}
