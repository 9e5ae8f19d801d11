/* SPDX-License-Identifier: MIT */
/**
 * @brief Method "ulysses" (exact): hosts own contiguous blocks for the dense parts, and host g
 * computes the attention of KV-head group g (Hk/W KV heads and their query heads) for every token;
 * the all-to-all over heads is the data dependency q[t] -> every host's attention task.
 */
#include "graph/graph_internal.h"

/* Ulysses: after the sequence-split dense parts, host g runs the attention of KV-head group g for
 * every query tile of every host over all keys before it (causal by position). */
static int _apb_ulysses_attend(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, per = c->n_kv_heads / W;
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        for (int t = h->n_tiles - 1; t >= 0; t--) {
            int last_pos = h->pos0[t] + h->rows[t] - 1, ns = 0;
            for (int j = 0; j < W; j++) {
                const apb_host *hj = &hs->h[j];
                for (int u = 0; u < hj->n_tiles; u++)
                    if (hj->pos0[u] <= last_pos)
                        segs[ns++] = apb_seg_causal(hj->k[l * hj->n_tiles + u],
                                                    hj->v[l * hj->n_tiles + u], hj->rows[u],
                                                    hj->pos0[u]);
            }
            for (int g = 0; g < W; g++)
                if (apb_insert_attention_heads(h->q[t], h->pos0[t], segs, ns, c->n_heads,
                                               c->n_kv_heads, g * per, per, c->head_dim, h->o[t],
                                               h->lse[t], (apb_task_tag){l, g, c->n_layers - l}))
                    return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
            int rc = _apb_post_attention(m, l, h->o[t], h->x[t], h->xn[t],
                                         (apb_task_tag){l, r, c->n_layers - l}, err);
            if (rc)
                return rc;
        }
    }
    return APB_OK;
}

static int _apb_ulysses_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    int rc = _apb_pre_attention_hosts(m, hs, l, err);
    return rc ? rc : _apb_ulysses_attend(m, hs, l, segs, err);
}

static int _apb_ulysses_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o,
                                apb_err *err)
{
    (void)L;
    (void)block;
    int W = o->hosts;
    if (cfg->n_kv_heads % W)
        return apb_fail(err, APB_E_USAGE, "ulysses splits the %d KV heads over hosts: --hosts %d "
                        "must divide %d", cfg->n_kv_heads, W, cfg->n_kv_heads);
    o->anchor = o->select = 0;
    return APB_OK;
}

const apb_method_desc apb_method_ulysses = {
    .id = APB_METHOD_ULYSSES, .flags = APB_MF_BY_POSITION | APB_MF_HEAD_GROUPS,
    .resolve = _apb_ulysses_resolve, .layer = _apb_ulysses_layer,
};
