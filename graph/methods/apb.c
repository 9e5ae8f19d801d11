/* SPDX-License-Identifier: MIT */
/**
 * @brief Methods "apb" and "star". Per layer:
 *
 *   all hosts, all tiles:  rmsnorm -> qkv -> rope           (graph/layer.c; with --compress retain
 *                                                            the retaining heads between qkv and rope)
 *   apb, W > 1:            qmean(question rows of host 1's anchor) -> qbar       (graph/compress.c)
 *                          select(qbar, host r's local K/V) -> ck[r], cv[r]      (r < W-1)
 *                          [--allgather nccl: gather every ck, cv per GPU]       (graph/allgather.c)
 *   host r, tile t:        attention(q[t]; passing ck[0..r-1] (anchor rows skip them),
 *                                      anchor tiles, local tiles <= t) -> o-proj -> mlp  (attend.c)
 *
 * Star: anchor = the whole first block, no passing block. The anchors' K/V are released after the
 * layer (the question pass and decoding skip them). With hs->anchor_src (one process, at most one
 * GPU) hosts after it skip their anchor tiles and read its anchor K/V (docs/DESIGN.md "Shared
 * anchor").
 */
#include <stdlib.h>

#include "graph/graph_internal.h"

static int _apb_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, K = hs->opt.select, rc;
    apb_passing p = {.K = K};
    p.passing = (apb_method_desc_of(hs->opt.method)->flags & APB_MF_PASSING) && W > 1 && K > 0;
    int select_all = hs->opt.anchor == 0 && K == hs->block;
    int retain = p.passing && !select_all && hs->opt.retain;
    /* --pool reference: hosts r > 0 score and max-pool their whole [anchor | local] sequence, the
     * anchor rows are then excluded (thunlp/APB's order); block: the local block only */
    int pool_ref = hs->opt.pool == APB_POOL_REFERENCE;
    apb_handle sc[64][128] = {{0}}; /* retaining-head scores per host and tile */
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        if (retain && r < W - 1 && h->n_tiles > 128)
            return apb_fail(err, APB_E_USAGE, "--compress retain: at most 128 tiles per host (got %d)",
                            h->n_tiles);
        for (int t = 0; t < h->n_tiles; t++) {
            int u = t - h->n_anchor_tiles;
            if (_apb_kv_host(hs, r, t) != h)
                continue; /* host anchor_src's anchor serves this host */
            if (retain && r < W - 1 && (u >= 0 || pool_ref))
                rc = _apb_compress_retain_tile(m, hs, l, r, t, &sc[r][t], err);
            else
                rc = _apb_pre_attention_m(m, l, h->x[t], h->xn[t], h->q[t], h->k[l * h->n_tiles + t],
                                          h->v[l * h->n_tiles + t], h->pos0[t],
                                          h->mpos_t ? h->mpos_t[t] : NULL,
                                          (apb_task_tag){l, r, c->n_layers - l}, err);
            if (rc)
                return rc;
        }
    }
    /* compression: blocks of hosts 0..W-2 (the last host's block has no later reader) */
    apb_handle qbar = NULL;
    if (p.passing) {
        if (!select_all && !retain && (rc = _apb_compress_qmean_anchor(m, hs, l, &qbar, err)))
            return rc;
        for (int r = 0; r < W - 1; r++) {
            apb_host *h = &hs->h[r];
            /* the rows scored and pooled: tiles [t0, n_tiles); the first `excl` are never chosen
             * (host 0: the first A context tokens, the other hosts' anchor content) */
            int t0 = pool_ref ? 0 : h->n_anchor_tiles, nsel = h->n_tiles - t0;
            int excl = r == 0 ? hs->opt.anchor : pool_ref ? h->a : 0;
            if (select_all) /* K = whole block, no anchor: the block itself is the passing block */
                continue;
            apb_handle *kt = malloc(sizeof *kt * 2 * (size_t)nsel), *vt = kt + nsel;
            if (!kt)
                return apb_fail(err, APB_E_NOMEM, "out of memory");
            _apb_host_kv_tiles(hs, l, r, t0, kt, vt);
            rc = _apb_compress_select(m, l, r, qbar, retain ? &sc[r][t0] : NULL, kt, vt, nsel, excl, K,
                                      &p.ck[r], &p.cv[r], err);
            free(kt);
            if (rc)
                return rc;
            for (int t = 0; t < h->n_tiles && t < 128; t++)
                apb_handle_free(sc[r][t]);
        }
    }
    p.G = apb_runtime_nccl_size();
    p.nccl = p.passing && !select_all && hs->opt.allgather == APB_ALLGATHER_NCCL;
    if (p.nccl && (rc = _apb_allgather_nccl(m, hs, l, &p, qbar, err)))
        return rc;
    apb_handle_free(qbar);
    for (int r = 0; r < W; r++) {
        int npass = _apb_passing_segs(hs, l, r, &p, segs);
        if ((rc = _apb_attend_host(m, hs, l, r, segs, npass, err)))
            return rc;
    }
    _apb_passing_free(&p, W);
    _apb_drop_anchor_kv(hs, l, 0);
    return APB_OK;
}

static int _apb_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o, apb_err *err)
{
    (void)cfg;
    int W = o->hosts;
    int pre = L < _APB_ANCHOR_PREFIX ? L : _APB_ANCHOR_PREFIX;
    if (o->anchor < 0 && o->select < 0 && block <= pre + 1) {
        /* blocks too short for an anchor holding the question: the exact configuration
         * (no anchor, every previous block passed whole) */
        o->anchor = 0;
        o->select = block;
    }
    if (o->anchor < 0) {
        o->anchor = _apb_round_up(L / 32 > 0 ? L / 32 : 1, 64);
        while (o->anchor >= block && o->anchor > 0)
            o->anchor = o->anchor > 64 ? o->anchor - 64 : block / 2;
    }
    if (o->select < 0) {
        o->select = _apb_round_up(L / 64 > 0 ? L / 64 : 1, 64);
        if (o->select > block - o->anchor)
            o->select = block - o->anchor;
    }
    if (W > 1 && o->anchor >= block)
        return apb_fail(err, APB_E_USAGE, "--anchor %d must be smaller than the block of %d "
                        "tokens (%d context tokens / %d hosts)", o->anchor, block, L, W);
    if (o->select < 0 || (W > 1 && o->select > block - o->anchor))
        return apb_fail(err, APB_E_USAGE, "--select %d exceeds the %d selectable tokens of a "
                        "block (block %d - anchor %d)", o->select, block - o->anchor, block,
                        o->anchor);
    int full_block = o->select == block - o->anchor && o->anchor == 0;
    if (W > 1 && o->select > 0 && !full_block && !o->retain &&
        o->anchor <= (L < _APB_ANCHOR_PREFIX ? L : _APB_ANCHOR_PREFIX))
        return apb_fail(err, APB_E_USAGE, "--anchor %d cannot hold the question after the first "
                        "%d context tokens, and query-aware selection needs its queries",
                        o->anchor, _APB_ANCHOR_PREFIX);
    if (W == 1)
        o->anchor = o->select = 0;
    return APB_OK;
}

static int _apb_star_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o,
                             apb_err *err)
{
    (void)cfg;
    (void)L;
    (void)err;
    o->anchor = o->hosts > 1 ? block : 0;
    o->select = 0;
    return APB_OK;
}

const apb_method_desc apb_method_apb = {
    .id = APB_METHOD_APB, .flags = APB_MF_QUESTION_ANCHOR | APB_MF_PASSING | APB_MF_SHARED_ANCHOR,
    .resolve = _apb_resolve, .layer = _apb_layer,
};

const apb_method_desc apb_method_star = {
    .id = APB_METHOD_STAR, .flags = APB_MF_SHARED_ANCHOR, .resolve = _apb_star_resolve, .layer = _apb_layer,
};
