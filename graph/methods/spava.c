/* SPDX-License-Identifier: MIT */
/**
 * @brief Method "spava": anchor = the first A context tokens on every host, 2 virtual hosts per host
 * (zigzag chunks r and 2W-1-r after the anchor), query-aware selection per chunk (compress.c),
 * passing P1/P2 as data dependencies, and the question fused into the same pass: its layer-l queries
 * drive the selection of layer l, and the first answer token comes from it. Every host's anchor is
 * the same first A context rows, seeing only themselves: with hs->anchor_src (one process, at most
 * one GPU) hosts after it read its anchor K/V instead of computing their own (host 0 keeps its
 * own: its anchor is the context's prefix, which the question pass reads).
 */
#include "graph/graph_internal.h"

/* Spava, one layer. Host r's rows are [anchor | B1 | B2] with B1 = chunk r, B2 = chunk 2W-1-r of the
 * context after the anchor. The question runs in the same pass (fused): its layer-l queries drive
 * the selection of layer l, and it attends exactly over every host's cache (LSE merge).
 *   B1 rows: [P1 = selections of chunks 0..r-1 | anchor | B1 causal]
 *   B2 rows: [P2 = selections of chunks 0..2W-2-r | anchor | B2 causal]
 *   anchor rows: the anchor, causal. */
static int _apb_spava_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, K = hs->opt.select, A = hs->opt.anchor;
    int nchunks = 2 * W;
    int rc = _apb_tail_pre(m, hs, 0, l, err); /* the fused question's norm, QKV, RoPE, append */
    if (!rc)
        rc = _apb_pre_attention_hosts(m, hs, l, err);
    if (rc)
        return rc;
    apb_handle ck[128] = {0}, cv[128] = {0}, qbar = NULL;
    if (K > 0 && W > 1) {
        if ((rc = _apb_compress_qmean(m, hs, l, hs->t_q[0], hs->nq, W - 1, &qbar, err)))
            return rc;
        for (int v = 0; v < nchunks - 1; v++) { /* the last chunk has no later reader */
            int r = v < W ? v : nchunks - 1 - v, g = v < W ? 0 : 1;
            apb_host *h = &hs->h[r];
            int t0 = h->n_anchor_tiles + (g ? h->range_ntiles[0] : 0), nt = h->range_ntiles[g];
            if (h->range_len[g] < K) /* a short chunk sends everything it has */
                continue;
            if ((rc = _apb_compress_select(m, l, r, qbar, NULL, &h->k[l * h->n_tiles + t0],
                                           &h->v[l * h->n_tiles + t0], nt, 0, K, &ck[v], &cv[v], err)))
                return rc;
        }
        apb_handle_free(qbar);
    }
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        apb_task_tag tag = {l, r, c->n_layers - l};
        for (int t = h->n_tiles - 1; t >= 0; t--) {
            if (_apb_kv_host(hs, r, t) != h)
                break; /* its anchor rows: computed once by host anchor_src */
            int g = t < h->n_anchor_tiles ? -1 : t < h->n_anchor_tiles + h->range_ntiles[0] ? 0 : 1;
            int ns = 0, last_chunk = g == 0 ? r - 1 : g == 1 ? nchunks - 2 - r : -1;
            for (int v = 0; v <= last_chunk && K > 0; v++) {
                int rr = v < W ? v : nchunks - 1 - v, gg = v < W ? 0 : 1;
                const apb_host *hv = &hs->h[rr];
                if (ck[v]) {
                    segs[ns++] = apb_seg_passing(ck[v], cv[v], K, A);
                } else { /* whole short chunk */
                    int u0 = hv->n_anchor_tiles + (gg ? hv->range_ntiles[0] : 0);
                    for (int u = u0; u < u0 + hv->range_ntiles[gg]; u++)
                        segs[ns++] = apb_seg_passing(hv->k[l * hv->n_tiles + u],
                                                     hv->v[l * hv->n_tiles + u], hv->rows[u], A);
                }
            }
            for (int u = 0; u < h->n_anchor_tiles; u++) { /* anchor, causal by position */
                const apb_host *kh = _apb_kv_host(hs, r, u); /* the shared anchor's host, or r */
                segs[ns++] = apb_seg_causal(kh->k[l * kh->n_tiles + u], kh->v[l * kh->n_tiles + u],
                                            h->rows[u], h->pos0[u]);
            }
            if (g >= 0) { /* own range, causal */
                int u0 = h->n_anchor_tiles + (g ? h->range_ntiles[0] : 0);
                for (int u = u0; u <= t; u++)
                    segs[ns++] = apb_seg_causal(h->k[l * h->n_tiles + u], h->v[l * h->n_tiles + u],
                                                h->rows[u], h->pos0[u]);
            }
            if (apb_insert_attention(h->q[t], h->pos0[t], segs, ns, c->n_heads, c->n_kv_heads,
                                     c->head_dim, h->o[t], h->lse[t], tag))
                return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
            if ((rc = _apb_post_attention(m, l, h->o[t], h->x[t], h->xn[t], tag, err)))
                return rc;
        }
    }
    for (int v = 0; v < nchunks; v++) {
        apb_handle_free(ck[v]);
        apb_handle_free(cv[v]);
    }
    rc = _apb_tail_attend(m, hs, 0, l, hs->nq, segs, err);
    _apb_drop_anchor_kv(hs, l, 1); /* Spava: host 0's anchor is the context's prefix, kept */
    return rc;
}

static int _apb_spava_resolve(const apb_config *cfg, int L, int block, apb_hosts_opts *o,
                              apb_err *err)
{
    (void)cfg;
    (void)block;
    int W = o->hosts;
    /* Spava's ratios: a = L/64, k = L/128 per virtual host, rounded up to multiples of 128
     * (64 for short contexts), so that the anchor and 2W chunks fit */
    int m128 = L >= 8192 ? 128 : 64;
    if (o->anchor < 0) {
        o->anchor = _apb_round_up(L / 64 > 0 ? L / 64 : 1, m128);
        if (o->anchor > L / 4) /* short contexts */
            o->anchor = L / 4;
    }
    if (W == 1)
        o->anchor = 0;
    if (o->anchor >= L || (W > 1 && L - o->anchor < 2 * W))
        return apb_fail(err, APB_E_USAGE, "spava: --anchor %d leaves %d context tokens for %d "
                        "chunks (2 per host)", o->anchor, L - o->anchor, 2 * W);
    int body = L - o->anchor, chunk = _apb_split_chunk(body, W);
    if (W > 1 && body - (2 * W - 1) * chunk < 1)
        return apb_fail(err, APB_E_USAGE, "spava: %d tokens after the anchor do not fill %d "
                        "chunks of %d; use fewer hosts", body, 2 * W, chunk);
    int ref = o->short_chunk == APB_SHORT_REFERENCE;
    if (o->select < 0) {
        o->select = _apb_round_up(L / 128 > 0 ? L / 128 : 1, m128);
        if (o->select > chunk && !ref) /* a short chunk is passed whole */
            o->select = chunk;
    }
    if (ref && W > 1 && o->select > 128 * (chunk / 128)) /* thunlp/APB: min(K, 128 floor(chunk/128)) */
        o->select = 128 * (chunk / 128);
    if (o->select > chunk)
        return apb_fail(err, APB_E_USAGE, "spava: --select %d exceeds the chunk of %d tokens",
                        o->select, chunk);
    return APB_OK;
}

const apb_method_desc apb_method_spava = {
    .id = APB_METHOD_SPAVA,
    .flags = APB_MF_ZIGZAG | APB_MF_ANCHOR_ALL | APB_MF_BY_POSITION | APB_MF_FUSED_QUESTION | APB_MF_SHARED_ANCHOR,
    .resolve = _apb_spava_resolve, .layer = _apb_spava_layer,
};
