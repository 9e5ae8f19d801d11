/* SPDX-License-Identifier: MIT */
/**
 * @brief Methods "ring" and "zigzag" (exact): each host attends to its own block (causal) and to
 * every previous host's block as separate partial tasks, merged through their log-sum-exp. Zigzag
 * balances the causal work: host r owns chunks r and 2W-1-r of 2W (graph/split.c).
 */
#include "graph/graph_internal.h"

/* Ring and zigzag attention: query tile t of host r gets one partial result per host block that
 * reaches it around the ring (r, r-1, ..., r+1 mod W) and holds keys at or before the tile's last
 * position, causal by global position, then an exact LSE merge. The blocks "travel" as data
 * dependencies of the partial tasks. */
static int _apb_ring_attend(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, qd = c->n_heads * c->head_dim;
    apb_handle po[64], pl[64];
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        apb_task_tag tag = {l, r, c->n_layers - l};
        apb_runtime_set_owner(r); /* partial results stay on the query's host */
        for (int t = h->n_tiles - 1; t >= 0; t--) {
            int last_pos = h->pos0[t] + h->rows[t] - 1, np = 0;
            for (int s = 0; s < W; s++) {
                const apb_host *hj = &hs->h[(r - s + W) % W];
                int ns = 0;
                for (int u = 0; u < hj->n_tiles; u++)
                    if (hj->pos0[u] <= last_pos)
                        segs[ns++] = apb_seg_causal(hj->k[l * hj->n_tiles + u],
                                                    hj->v[l * hj->n_tiles + u], hj->rows[u],
                                                    hj->pos0[u]);
                if (ns == 0)
                    continue; /* that block lies wholly in this tile's future */
                po[np] = apb_tile_new(h->rows[t], qd, sizeof(float));
                pl[np] = apb_tile_new(h->rows[t], c->n_heads, sizeof(float));
                if (apb_insert_attention(h->q[t], h->pos0[t], segs, ns, c->n_heads, c->n_kv_heads,
                                         c->head_dim, po[np], pl[np], tag))
                    return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
                np++;
            }
            if (apb_insert_lse_merge(po, pl, np, c->head_dim, h->o[t], NULL, tag))
                return apb_fail(err, APB_E_RUNTIME, "submitting lse_merge failed");
            for (int s = 0; s < np; s++) {
                apb_handle_free(po[s]);
                apb_handle_free(pl[s]);
            }
            int rc = _apb_post_attention(m, l, h->o[t], h->x[t], h->xn[t], tag, err);
            if (rc)
                return rc;
        }
    }
    return APB_OK;
}

static int _apb_ring_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    int rc = _apb_pre_attention_hosts(m, hs, l, err);
    return rc ? rc : _apb_ring_attend(m, hs, l, segs, err);
}

static int _apb_ring_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o, apb_err *err)
{
    (void)cfg;
    (void)L;
    (void)block;
    (void)err;
    o->anchor = o->select = 0;
    return APB_OK;
}

static int _apb_zigzag_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o,
                               apb_err *err)
{
    int W = o->hosts;
    if (W > 1) {
        int chunk = _apb_split_chunk(L, W);
        if (L - (2 * W - 1) * chunk < 1)
            return apb_fail(err, APB_E_USAGE, "zigzag: %d context tokens do not fill %d chunks of %d "
                            "(2 per host); use fewer hosts", L, 2 * W, chunk);
    }
    return _apb_ring_resolve(cfg, L, block, o, err);
}

const apb_method_desc apb_method_ring = {
    .id = APB_METHOD_RING, .flags = APB_MF_BY_POSITION, .resolve = _apb_ring_resolve,
    .layer = _apb_ring_layer,
};

const apb_method_desc apb_method_zigzag = {
    .id = APB_METHOD_ZIGZAG, .flags = APB_MF_BY_POSITION | APB_MF_ZIGZAG,
    .resolve = _apb_zigzag_resolve, .layer = _apb_ring_layer,
};
