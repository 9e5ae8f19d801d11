/* SPDX-License-Identifier: MIT */
/**
 * @brief Allgather: how the compressed blocks of hosts 0..W-2 reach every later host.
 *
 * By default it is nothing but data dependencies: the passing segments of host r's attention
 * tasks name the blocks ck[j], cv[j] of every host j < r, and StarPU moves (or, on one memory
 * node, shares) them. With --allgather nccl, one NCCL allgather task per GPU and layer gathers
 * every block into one copy per GPU (codelets/codelet_allgather.c), and host r reads the first
 * r K rows of its GPU's copy. Passing blocks are released (unregister_submit) as soon as the
 * layer's attention tasks are submitted: they are dropped right after their last reader.
 */
#include "graph/graph_internal.h"

int _apb_allgather_nccl(apb_model *m, apb_hseq *hs, int l, apb_passing *p, apb_handle qbar,
                        apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, K = p->K, kd = c->n_kv_heads * c->head_dim, G = p->G;
    /* one gathered copy of every block per GPU (W x K rows, host j at j K) */
    int per = W / G;
    for (int g = 0; g < G; g++) {
        int slot[64], n = 0;
        apb_handle lk[64], lv[64];
        for (int j = g * per; j < (g + 1) * per && j < W - 1; j++) {
            slot[n] = j;
            lk[n] = p->ck[j];
            lv[n++] = p->cv[j];
        }
        apb_runtime_set_owner(g * per); /* over MPI: the rank of the GPU's hosts */
        p->gk[g] = apb_tile_new(W * K, kd, sizeof(float));
        p->gv[g] = apb_tile_new(W * K, kd, sizeof(float));
        /* order only (codelets/codelet_allgather.c): the question mean and this layer's last
         * K tile of the GPU's last host */
        const apb_host *hl = &hs->h[(g + 1) * per - 1];
        apb_handle deps[2] = {hl->k[l * hl->n_tiles + hl->n_tiles - 1], qbar};
        if (!hs->ag_order[g])
            hs->ag_order[g] = apb_tile_new_zeroed(1, 1, sizeof(float));
        if (apb_insert_allgather_nccl(lk, lv, slot, n, g, per, p->gk[g], p->gv[g], hs->ag_order[g],
                                      deps, qbar ? 2 : 1,
                                      (apb_task_tag){l, g * per, c->n_layers - l + 1}))
            return apb_fail(err, APB_E_RUNTIME, "submitting the NCCL allgather failed");
    }
    return APB_OK;
}

int _apb_passing_segs(const apb_hseq *hs, int l, int r, const apb_passing *p, apb_attn_seg *segs)
{
    const apb_host *h = &hs->h[r];
    int ns = 0, W = hs->opt.hosts;
    /* anchor rows skip the passing segments (min_q_coord = the anchor length) */
    if (p->nccl && r > 0) { /* hosts 0..r-1: the first r K rows of this GPU's copy */
        int g = r / (W / p->G);
        segs[ns++] = apb_seg_passing(p->gk[g], p->gv[g], r * p->K, h->a);
    } else if (p->passing) {
        for (int j = 0; j < r; j++) {
            if (p->ck[j]) {
                segs[ns++] = apb_seg_passing(p->ck[j], p->cv[j], p->K, h->a);
            } else { /* select-all: host j's whole local block, in tiles */
                const apb_host *hj = &hs->h[j];
                for (int u = hj->n_anchor_tiles; u < hj->n_tiles; u++)
                    segs[ns++] = apb_seg_passing(hj->k[l * hj->n_tiles + u],
                                                 hj->v[l * hj->n_tiles + u], hj->rows[u], h->a);
            }
        }
    }
    return ns;
}

void _apb_passing_free(apb_passing *p, int W)
{
    for (int r = 0; r < W; r++) { /* discard the passing blocks after their last reader */
        apb_handle_free(p->ck[r]);
        apb_handle_free(p->cv[r]);
    }
    for (int g = 0; p->nccl && g < p->G; g++) {
        apb_handle_free(p->gk[g]);
        apb_handle_free(p->gv[g]);
    }
}
