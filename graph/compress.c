/* SPDX-License-Identifier: MIT */
/**
 * @brief Compress: the question mean (qmean) and the query-aware selection (select) of a host's
 * block, or the selection by Locret's retaining heads (retain + select_scored). Used by APB
 * (graph/methods/apb.c) and Spava (graph/methods/spava.c).
 *
 * Compression tasks carry the priority n_layers - l + 1, one above the layer's other tasks:
 * compress -> allgather is the critical path of every later host.
 */
#include "graph/graph_internal.h"

int _apb_compress_qmean_anchor(apb_model *m, apb_hseq *hs, int l, apb_handle *qbar, apb_err *err)
{
    const apb_config *c = &m->cfg;
    const apb_host *h1 = &hs->h[1];
    apb_runtime_set_owner(1);
    *qbar = apb_tile_new(1, c->n_kv_heads * c->head_dim, sizeof(float));
    /* the question rows lie in host 1's anchor, which is identical on every host r > 0;
     * they may span several anchor tiles */
    apb_handle qt[16];
    int r0[16], nr[16], nt = 0, T = hs->opt.tile;
    for (int row = hs->q_row0; row < hs->q_row0 + hs->q_rows && nt < 16; nt++) {
        int t = row / T, off = row % T, end = (t + 1) * T;
        int stop = hs->q_row0 + hs->q_rows < end ? hs->q_row0 + hs->q_rows : end;
        qt[nt] = h1->q[t];
        r0[nt] = off;
        nr[nt] = stop - row;
        row = stop;
    }
    _APB_TRY(apb_insert_qmean_tiles(qt, r0, nr, nt, c->n_kv_heads, c->head_dim, *qbar,
                                    (apb_task_tag){l, 1, c->n_layers - l + 1}),
             "qmean");
    return APB_OK;
}

int _apb_compress_qmean(apb_model *m, apb_hseq *hs, int l, apb_handle q, int n, int owner,
                        apb_handle *qbar, apb_err *err)
{
    const apb_config *c = &m->cfg;
    (void)hs;
    apb_runtime_set_owner(owner);
    *qbar = apb_tile_new(1, c->n_kv_heads * c->head_dim, sizeof(float));
    _APB_TRY(apb_insert_qmean(q, 0, n, c->n_kv_heads, c->head_dim, *qbar,
                              (apb_task_tag){l, owner, c->n_layers - l + 1}),
             "qmean");
    return APB_OK;
}

int _apb_compress_retain_tile(apb_model *m, apb_hseq *hs, int l, int r, int t, apb_handle *score,
                              apb_err *err)
{
    const apb_config *c = &m->cfg;
    apb_host *h = &hs->h[r];
    apb_handle k = h->k[l * h->n_tiles + t], v = h->v[l * h->n_tiles + t];
    apb_task_tag tag = {l, r, c->n_layers - l};
    /* the retaining heads read q, k, v BEFORE RoPE: score between qkv and rope */
    const apb_layer_handles *Lw = &m->layers[l];
    _APB_TRY(apb_insert_rmsnorm(h->x[t], Lw->attn_norm, h->xn[t], c->norm_eps, tag), "attn_norm");
    _APB_TRY(apb_insert_qkv(h->xn[t], Lw->wq, Lw->wk, Lw->wv, Lw->bq, Lw->bk, Lw->bv, h->q[t], k, v,
                            tag), "qkv");
    apb_runtime_set_owner(r);
    *score = apb_tile_new(h->rows[t], c->n_kv_heads, sizeof(float));
    _APB_TRY(apb_insert_retain_score(h->q[t], k, v, m->h_fc1[l], m->h_fc2[l], *score,
                                     (apb_task_tag){l, r, c->n_layers - l + 1}),
             "retain");
    _APB_TRY(apb_insert_rope(h->q[t], k, m->inv_freq, h->pos0[t], c->head_dim, tag), "rope");
    return APB_OK;
}

int _apb_compress_select(apb_model *m, int l, int r, apb_handle qbar, const apb_handle *scores,
                         const apb_handle *k, const apb_handle *v, int n, int exclude_first, int K,
                         apb_handle *ck, apb_handle *cv, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int kd = c->n_kv_heads * c->head_dim;
    apb_runtime_set_owner(r); /* compressed on host r, sent to the ranks of later hosts */
    *ck = apb_tile_new(K, kd, sizeof(float));
    *cv = apb_tile_new(K, kd, sizeof(float));
    apb_task_tag stag = {l, r, c->n_layers - l + 1};
    if (scores)
        _APB_TRY(apb_insert_select_scored(scores, k, v, n, exclude_first, K, c->head_dim, *ck, *cv,
                                          stag), "select");
    else
        _APB_TRY(apb_insert_select(qbar, k, v, n, exclude_first, K, c->head_dim, *ck, *cv, stag),
                 "select");
    return APB_OK;
}
