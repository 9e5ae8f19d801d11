/* SPDX-License-Identifier: MIT */
/**
 * @brief Split: which context ranges each host owns, its [anchor | local] rows and their tiles.
 *
 * Host r's rows are [anchor | local]; coordinates (for the attention mask) are row indices in that
 * sequence (APB, Star) or global positions (ring, zigzag, Ulysses, Spava: APB_MF_BY_POSITION);
 * positions (for RoPE) are 0..a-1 for the anchor and the global positions for the local block.
 * One contiguous block of ceil(L / W) tokens per host, or (APB_MF_ZIGZAG) the two chunks r and
 * 2W-1-r of 2W chunks: the chunk arithmetic is _apb_split_chunk, used by the resolve step too.
 */
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"

int _apb_round_up(int x, int m) { return (x + m - 1) / m * m; }

int _apb_split_chunk(int body, int W) { return (body + 2 * W - 1) / (2 * W); }

/* ------------------------------------------------------------------ host state */
int _apb_split_host(apb_model *m, apb_hseq *hs, int r, const int32_t *ctx, const int32_t *question,
                    apb_err *err)
{
    const apb_config *c = &m->cfg;
    apb_host *h = &hs->h[r];
    int W = hs->opt.hosts, T = hs->opt.tile, block = hs->block;
    unsigned f = apb_method_desc_of(hs->opt.method)->flags;
    apb_runtime_set_owner(r); /* every tile of host r lives on its rank */
    if ((f & APB_MF_ZIGZAG) && W > 1) { /* chunks r and 2W-1-r of what follows base */
        int base = f & APB_MF_ANCHOR_ALL ? hs->opt.anchor : 0, body = hs->L - base;
        int chunk = _apb_split_chunk(body, W), last = 2 * W - 1 - r;
        h->n_ranges = 2;
        h->range_pos[0] = base + r * chunk;
        h->range_len[0] = chunk;
        h->range_pos[1] = base + last * chunk;
        h->range_len[1] = last == 2 * W - 1 ? body - last * chunk : chunk;
    } else {
        h->n_ranges = 1;
        h->range_pos[0] = r * block;
        h->range_len[0] = r == W - 1 ? hs->L - (W - 1) * block : block;
    }
    h->n = h->range_len[0] + (h->n_ranges > 1 ? h->range_len[1] : 0);
    h->a = r == 0 && !(f & APB_MF_ANCHOR_ALL) ? 0 : hs->opt.anchor;
    /* ring and zigzag mask by global position, the anchored methods by row in [anchor | local] */
    int by_position = (f & APB_MF_BY_POSITION) != 0;
    h->ids = malloc(sizeof(int32_t) * (size_t)(h->a + h->n));
    if (!h->ids)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    /* anchor assembly */
    if ((f & APB_MF_QUESTION_ANCHOR) && h->a > 0) {
        int p = 0, pre = hs->L < _APB_ANCHOR_PREFIX ? hs->L : _APB_ANCHOR_PREFIX;
        for (int i = 0; i < pre && p < h->a; i++)
            h->ids[p++] = ctx[i];
        for (int i = 0; i < hs->nq && p < h->a; i++)
            h->ids[p++] = question[i];
        for (int i = pre; p < h->a; i++)
            h->ids[p++] = ctx[i]; /* anchor < block <= L, so the context never runs out */
    } else {
        for (int i = 0; i < h->a; i++) /* star: the first block; spava: the first a tokens */
            h->ids[i] = ctx[i];
    }
    int ntl = 0;
    for (int g = 0, off = h->a; g < h->n_ranges; off += h->range_len[g], g++) {
        memcpy(h->ids + off, ctx + h->range_pos[g], sizeof(int32_t) * (size_t)h->range_len[g]);
        h->range_ntiles[g] = (h->range_len[g] + T - 1) / T;
        ntl += h->range_ntiles[g];
    }
    h->n_anchor_tiles = (h->a + T - 1) / T;
    h->n_tiles = h->n_anchor_tiles + ntl;
    int nt = h->n_tiles;
    h->rows = calloc((size_t)nt, sizeof(int));
    h->pos0 = calloc((size_t)nt, sizeof(int));
    h->coord0 = calloc((size_t)nt, sizeof(int));
    apb_handle **arrs[] = {&h->ids_t, &h->x, &h->xn, &h->q, &h->o, &h->lse};
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++)
        *arrs[i] = calloc((size_t)nt, sizeof(apb_handle));
    h->k = calloc((size_t)nt * c->n_layers, sizeof(apb_handle));
    h->v = calloc((size_t)nt * c->n_layers, sizeof(apb_handle));
    h->kc = calloc((size_t)c->n_layers, sizeof(apb_handle));
    h->vc = calloc((size_t)c->n_layers, sizeof(apb_handle));
    h->crow0 = malloc(sizeof(int) * (size_t)nt * (size_t)c->n_layers);
    if (!h->rows || !h->pos0 || !h->coord0 || !h->ids_t || !h->x || !h->xn || !h->q || !h->o ||
        !h->lse || !h->k || !h->v || !h->kc || !h->vc || !h->crow0)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    /* tile geometry: anchor tiles, then the tiles of each owned range */
    int tt = 0;
    for (int off = 0; off < h->a; off += T, tt++) {
        h->rows[tt] = h->a - off < T ? h->a - off : T;
        h->pos0[tt] = off;
        h->coord0[tt] = off;
    }
    for (int g = 0, row = h->a; g < h->n_ranges; g++)
        for (int off = 0; off < h->range_len[g]; off += T, tt++) {
            h->rows[tt] = h->range_len[g] - off < T ? h->range_len[g] - off : T;
            h->pos0[tt] = h->range_pos[g] + off;
            h->coord0[tt] = by_position ? h->pos0[tt] : row;
            row += h->rows[tt];
        }
    const apb_embeds *e = hs->opt.embeds;
    if (e) { /* the file's position ids of each row (ids index its rows); 1-D ids without mRoPE */
        h->mpos = malloc(sizeof(int32_t) * 3 * (size_t)(h->a + h->n));
        h->mpos_t = calloc((size_t)nt, sizeof(apb_handle));
        if (!h->mpos || !h->mpos_t)
            return apb_fail(err, APB_E_NOMEM, "out of memory");
        for (int i = 0; i < h->a + h->n; i++)
            memcpy(h->mpos + 3 * (size_t)i, e->pos + 3 * (size_t)h->ids[i], 3 * sizeof(int32_t));
    }
    for (int t = 0, row = 0; t < nt; row += h->rows[t], t++) {
        int rows = h->rows[t];
        h->ids_t[t] = apb_tile_from(h->ids + row, rows, 1, sizeof(int32_t));
        if (h->mpos_t)
            h->mpos_t[t] = apb_tile_from(h->mpos + 3 * (size_t)row, rows, 3, sizeof(int32_t));
        h->x[t] = apb_tile_new(rows, c->dim, sizeof(float));
        h->xn[t] = apb_tile_new(rows, c->dim, (size_t)_apb_xn_elem());
        h->q[t] = apb_tile_new(rows, qd, sizeof(float));
        if (f & APB_MF_HEAD_GROUPS) { /* head groups read-write their columns */
            h->o[t] = apb_tile_new_zeroed(rows, qd, sizeof(float));
            h->lse[t] = apb_tile_new_zeroed(rows, c->n_heads, sizeof(float));
        } else {
            h->o[t] = apb_tile_new(rows, qd, (size_t)_apb_o_elem());
            h->lse[t] = apb_tile_new(rows, c->n_heads, sizeof(float));
        }
        for (int l = 0; l < c->n_layers; l++) {
            h->k[l * nt + t] = apb_tile_new(rows, kd, sizeof(float));
            h->v[l * nt + t] = apb_tile_new(rows, kd, sizeof(float));
        }
    }
    return APB_OK;
}

static void _apb_host_free(apb_model *m, apb_host *h)
{
    for (int t = 0; h->x && t < h->n_tiles; t++) {
        apb_handle_free(h->ids_t[t]);
        if (h->mpos_t)
            apb_handle_free(h->mpos_t[t]);
        apb_handle_free(h->x[t]);
        apb_handle_free(h->xn[t]);
        apb_handle_free(h->q[t]);
        apb_handle_free(h->o[t]);
        apb_handle_free(h->lse[t]);
        for (int l = 0; l < m->cfg.n_layers; l++) {
            apb_handle_free(h->k[l * h->n_tiles + t]);
            apb_handle_free(h->v[l * h->n_tiles + t]);
        }
    }
    for (int l = 0; h->kc && h->vc && l < m->cfg.n_layers; l++) {
        apb_handle_free(h->kc[l]);
        apb_handle_free(h->vc[l]);
    }
}

static void _apb_host_release(apb_host *h)
{
    free(h->ids);
    free(h->mpos);
    free(h->mpos_t);
    free(h->rows);
    free(h->pos0);
    free(h->coord0);
    free(h->ids_t);
    free(h->x);
    free(h->xn);
    free(h->q);
    free(h->o);
    free(h->lse);
    free(h->k);
    free(h->kc);
    free(h->vc);
    free(h->crow0);
    free(h->v);
}

void apb_hseq_free(apb_model *m, apb_hseq *hs)
{
    int W = hs->opt.hosts;
    for (int r = 0; hs->h && r < W; r++)
        _apb_host_free(m, &hs->h[r]);
    for (int l = 0; hs->kd && l < m->cfg.n_layers; l++) {
        apb_handle_free(hs->kd[l]);
        apb_handle_free(hs->vd[l]);
    }
    for (int i = 0; i < 2; i++) {
        apb_handle hh[] = {hs->t_x[i], hs->t_xn[i], hs->t_q[i], hs->t_k[i], hs->t_v[i], hs->t_o[i]};
        for (size_t j = 0; j < sizeof hh / sizeof *hh; j++)
            apb_handle_free(hh[j]);
        for (int r = 0; hs->t_po[i] && r < W; r++) {
            apb_handle_free(hs->t_po[i][r]);
            apb_handle_free(hs->t_pl[i][r]);
        }
        free(hs->t_po[i]);
        free(hs->t_pl[i]);
    }
    for (int g = 0; g < 64; g++)
        apb_handle_free(hs->ag_order[g]);
    apb_handle_free(hs->q_ids_t);
    apb_handle_free(hs->ctx_table);
    apb_handle_free(hs->logits);
    apb_handle_free(hs->token);
    apb_runtime_wait_all(NULL); /* registered host arrays (ids) must outlive their unregistration */
    for (int r = 0; hs->h && r < W; r++)
        _apb_host_release(&hs->h[r]);
    free(hs->h);
    free(hs->kd);
    free(hs->vd);
    free(hs->q_ids);
    memset(hs, 0, sizeof *hs);
}

/* After layer l's attention is submitted, the anchors' K/V of that layer have no reader left: the
 * question pass and decoding skip anchor tiles (except Spava's host 0, whose anchor is the true
 * context prefix), so they are released now (after their last task) rather than at the end: at
 * 128K tokens with 8 hosts and A = 4096 that is 7 GiB of fp32 K/V in GPU memory. */
void _apb_drop_anchor_kv(apb_hseq *hs, int l, int keep_host0)
{
    for (int r = keep_host0 ? 1 : 0; r < hs->opt.hosts; r++) {
        apb_host *h = &hs->h[r];
        for (int u = 0; u < h->n_anchor_tiles; u++) {
            apb_handle_free(h->k[l * h->n_tiles + u]);
            apb_handle_free(h->v[l * h->n_tiles + u]);
            h->k[l * h->n_tiles + u] = h->v[l * h->n_tiles + u] = NULL;
        }
    }
}
