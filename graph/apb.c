/* SPDX-License-Identifier: MIT */
/**
 * @brief Sequence-parallel prefill over W hosts (APB, Star) and the LSE-merged question pass and
 * decoding that follow.
 *
 * Host r's rows are [anchor | local]; coordinates (for the attention mask) are row indices in that
 * sequence, positions (for RoPE) are 0..a-1 for the anchor and the global positions for the local
 * block. Per layer:
 *
 *   all hosts, all tiles:  rmsnorm -> qkv -> rope
 *   apb, W > 1:            qmean(question rows of host 1's anchor) -> qbar
 *                          select(qbar, host r's local K/V) -> ck[r], cv[r]        (r < W-1)
 *   host r, tile t:        attention(q[t]; passing ck[0..r-1] (anchor rows skip them),
 *                                      anchor tiles, local tiles <= t) -> o-proj -> mlp
 *
 * The "allgather" is nothing but the data dependencies ck[j] -> attention of every host r > j:
 * StarPU moves (or, on one memory node, shares) the compressed blocks. Passing blocks are released
 * (unregister_submit) as soon as the layer's attention tasks are submitted: they are dropped right
 * after their last reader, and the KV cache keeps [anchor | local].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph/graph_internal.h"

enum { _APB_ANCHOR_PREFIX = 16 }; /* BOS + system prompt tokens that open every anchor (APB) */

static int _apb_round_up(int x, int m) { return (x + m - 1) / m * m; }

int apb_hosts_resolve(const apb_config *cfg, int L, int nq, int max_new, apb_hosts_opts *o, apb_err *err)
{
    if (o->method == APB_METHOD_FULL) {
        o->hosts = 1;
        o->anchor = o->select = 0;
    }
    int W = o->hosts;
    if (W < 1)
        return apb_fail(err, APB_E_USAGE, "--hosts must be >= 1 (got %d)", W);
    if (o->allgather == APB_ALLGATHER_NCCL) {
        if (o->method != APB_METHOD_APB)
            return apb_fail(err, APB_E_USAGE, "--allgather nccl applies to --method apb (got %s)",
                            apb_method_name(o->method));
        /* the G allgather tasks of a layer wait for each other inside NCCL: no host task may
         * queue behind another GPU's collective, so every host is pinned to its GPU */
        o->placement = APB_PLACE_PINNED;
    }
    if (L < 1 || nq < 1)
        return apb_fail(err, APB_E_USAGE, "need at least one context and one question token "
                                          "(got %d and %d)", L, nq);
    if (W > L)
        return apb_fail(err, APB_E_USAGE, "--hosts %d exceeds the %d context tokens", W, L);
    int block = (L + W - 1) / W;
    if (L - (W - 1) * block < 1)
        return apb_fail(err, APB_E_USAGE,
                        "%d context tokens do not fill %d hosts with blocks of %d (the last host "
                        "would be empty); use fewer hosts", L, W, block);
    if ((long)L + nq + max_new > cfg->max_pos)
        return apb_fail(err, APB_E_USAGE, "%d context + %d question + %d new tokens exceed the "
                        "model's context of %d", L, nq, max_new, cfg->max_pos);
    if (o->tile <= 0)
        return apb_fail(err, APB_E_USAGE, "tile size must be positive (got %d)", o->tile);
    if (o->method == APB_METHOD_SPAVA) {
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
        int body = L - o->anchor, chunk = (body + 2 * W - 1) / (2 * W);
        if (W > 1 && body - (2 * W - 1) * chunk < 1)
            return apb_fail(err, APB_E_USAGE, "spava: %d tokens after the anchor do not fill %d "
                            "chunks of %d; use fewer hosts", body, 2 * W, chunk);
        if (o->select < 0) {
            o->select = _apb_round_up(L / 128 > 0 ? L / 128 : 1, m128);
            if (o->select > chunk)
                o->select = chunk;
        }
        if (o->select > chunk)
            return apb_fail(err, APB_E_USAGE, "spava: --select %d exceeds the chunk of %d tokens",
                            o->select, chunk);
        return APB_OK;
    }
    if (o->method == APB_METHOD_ZIGZAG && W > 1) {
        int chunk = (L + 2 * W - 1) / (2 * W);
        if (L - (2 * W - 1) * chunk < 1)
            return apb_fail(err, APB_E_USAGE, "zigzag: %d context tokens do not fill %d chunks of %d "
                            "(2 per host); use fewer hosts", L, 2 * W, chunk);
    }
    if (o->method == APB_METHOD_ULYSSES && cfg->n_kv_heads % W)
        return apb_fail(err, APB_E_USAGE, "ulysses splits the %d KV heads over hosts: --hosts %d "
                        "must divide %d", cfg->n_kv_heads, W, cfg->n_kv_heads);
    if (o->method == APB_METHOD_RING || o->method == APB_METHOD_ZIGZAG ||
        o->method == APB_METHOD_ULYSSES) {
        o->anchor = o->select = 0;
    } else if (o->method == APB_METHOD_STAR) {
        o->anchor = W > 1 ? block : 0;
        o->select = 0;
    } else if (o->method == APB_METHOD_APB) {
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
    }
    return APB_OK;
}

/* ------------------------------------------------------------------ host state */
static int _apb_host_alloc(apb_model *m, apb_hseq *hs, int r, const int32_t *ctx,
                           const int32_t *question, apb_err *err)
{
    const apb_config *c = &m->cfg;
    apb_host *h = &hs->h[r];
    int W = hs->opt.hosts, T = hs->opt.tile, block = hs->block;
    apb_runtime_set_owner(r); /* every tile of host r lives on its rank */
    if ((hs->opt.method == APB_METHOD_ZIGZAG || hs->opt.method == APB_METHOD_SPAVA) && W > 1) {
        int base = hs->opt.method == APB_METHOD_SPAVA ? hs->opt.anchor : 0, body = hs->L - base;
        int chunk = (body + 2 * W - 1) / (2 * W), last = 2 * W - 1 - r;
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
    h->a = r == 0 && hs->opt.method != APB_METHOD_SPAVA ? 0 : hs->opt.anchor;
    /* ring and zigzag mask by global position, the anchored methods by row in [anchor | local] */
    int by_position = hs->opt.method == APB_METHOD_RING || hs->opt.method == APB_METHOD_ZIGZAG ||
                      hs->opt.method == APB_METHOD_ULYSSES || hs->opt.method == APB_METHOD_SPAVA;
    h->ids = malloc(sizeof(int32_t) * (size_t)(h->a + h->n));
    if (!h->ids)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    /* anchor assembly */
    if (hs->opt.method == APB_METHOD_APB && h->a > 0) {
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
    if (!h->rows || !h->pos0 || !h->coord0 || !h->ids_t || !h->x || !h->xn || !h->q || !h->o ||
        !h->lse || !h->k || !h->v)
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
    for (int t = 0, row = 0; t < nt; row += h->rows[t], t++) {
        int rows = h->rows[t];
        h->ids_t[t] = apb_tile_from(h->ids + row, rows, 1, sizeof(int32_t));
        h->x[t] = apb_tile_new(rows, c->dim, sizeof(float));
        h->xn[t] = apb_tile_new(rows, c->dim, sizeof(float));
        h->q[t] = apb_tile_new(rows, qd, sizeof(float));
        if (hs->opt.method == APB_METHOD_ULYSSES) { /* head groups read-write their columns */
            h->o[t] = apb_tile_new_zeroed(rows, qd, sizeof(float));
            h->lse[t] = apb_tile_new_zeroed(rows, c->n_heads, sizeof(float));
        } else {
            h->o[t] = apb_tile_new(rows, qd, sizeof(float));
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
}

static void _apb_host_release(apb_host *h)
{
    free(h->ids);
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
static void _apb_drop_anchor_kv(apb_hseq *hs, int l, int keep_host0)
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

/* Under APB_PREC_BF16, once layer l's tasks are all submitted, the K/V tiles that stay (the cache
 * the question pass and decoding read) are compacted to bf16 and the fp32 tiles released after
 * their last reader: the cache of finished layers takes half the memory (at 128K tokens 16 GiB
 * instead of 32 for Llama-3.1-8B shapes). The tensor-core attention kernel rounds K/V to bf16
 * anyway; the exact fp32 mode keeps fp32 tiles. */
int _apb_compact_kv(apb_handle *k, apb_handle *v, int n, int owner_host, int layer, apb_err *err)
{
    if (apb_runtime_precision() != APB_PREC_BF16)
        return APB_OK;
    for (int u = 0; u < n; u++) {
        if (!k[u] || !v[u] || apb_tile_elemsize(k[u]) != sizeof(float))
            continue;
        apb_runtime_set_owner(owner_host);
        apb_handle k16 = apb_tile_new(apb_tile_rows(k[u]), apb_tile_cols(k[u]), 2);
        apb_handle v16 = apb_tile_new(apb_tile_rows(v[u]), apb_tile_cols(v[u]), 2);
        if (!k16 || !v16 || apb_insert_kv_compact(k[u], v[u], k16, v16, (apb_task_tag){layer, owner_host, 0})) {
            apb_handle_free(k16);
            apb_handle_free(v16);
            return apb_fail(err, APB_E_RUNTIME, "submitting the bf16 compaction of the KV cache failed");
        }
        apb_handle_free(k[u]);
        apb_handle_free(v[u]);
        k[u] = k16;
        v[u] = v16;
    }
    return APB_OK;
}

static int _apb_compact_layer(apb_hseq *hs, int l, apb_err *err)
{
    int rc = APB_OK;
    for (int r = 0; r < hs->opt.hosts && !rc; r++) {
        apb_host *h = &hs->h[r];
        rc = _apb_compact_kv(&h->k[l * h->n_tiles], &h->v[l * h->n_tiles], h->n_tiles, r, l, err);
    }
    return rc;
}

/* ------------------------------------------------------------------ prefill */
/* Ring and zigzag attention: query tile t of host r gets one partial result per host block that
 * reaches it around the ring (r, r-1, ..., r+1 mod W) and holds keys at or before the tile's last
 * position, causal by global position, then an exact LSE merge. The blocks "travel" as data
 * dependencies of the partial tasks. */
static int _apb_ring_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
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
                        segs[ns++] = (apb_attn_seg){hj->k[l * hj->n_tiles + u],
                                                    hj->v[l * hj->n_tiles + u], hj->rows[u],
                                                    hj->pos0[u], 1, 0};
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

/* Ulysses: after the sequence-split dense parts, host g runs the attention of KV-head group g for
 * every query tile of every host over all keys before it (causal by position). */
static int _apb_ulysses_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
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
                        segs[ns++] = (apb_attn_seg){hj->k[l * hj->n_tiles + u],
                                                    hj->v[l * hj->n_tiles + u], hj->rows[u],
                                                    hj->pos0[u], 1, 0};
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

static int _apb_prefill_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, K = hs->opt.select, kd = c->n_kv_heads * c->head_dim;
    int passing = hs->opt.method == APB_METHOD_APB && W > 1 && K > 0;
    int select_all = hs->opt.anchor == 0 && K == hs->block;
    int retain = passing && !select_all && hs->opt.retain;
    apb_handle sc[64][64] = {{0}}; /* retaining-head scores per host and local tile */
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        apb_task_tag tag = {l, r, c->n_layers - l};
        for (int t = 0; t < h->n_tiles; t++) {
            apb_handle k = h->k[l * h->n_tiles + t], v = h->v[l * h->n_tiles + t];
            int u = t - h->n_anchor_tiles;
            if (retain && r < W - 1 && u >= 0) {
                /* the retaining heads read q, k, v BEFORE RoPE: score between qkv and rope */
                const apb_layer_handles *Lw = &m->layers[l];
                _APB_TRY(apb_insert_rmsnorm(h->x[t], Lw->attn_norm, h->xn[t], c->norm_eps, tag),
                         "attn_norm");
                _APB_TRY(apb_insert_qkv(h->xn[t], Lw->wq, Lw->wk, Lw->wv, Lw->bq, Lw->bk, Lw->bv,
                                        h->q[t], k, v, tag), "qkv");
                apb_runtime_set_owner(r);
                sc[r][u] = apb_tile_new(h->rows[t], c->n_kv_heads, sizeof(float));
                _APB_TRY(apb_insert_retain_score(h->q[t], k, v, m->h_fc1[l], m->h_fc2[l], sc[r][u],
                                                 (apb_task_tag){l, r, c->n_layers - l + 1}),
                         "retain");
                _APB_TRY(apb_insert_rope(h->q[t], k, m->inv_freq, h->pos0[t], c->head_dim, tag), "rope");
                continue;
            }
            int rc = _apb_pre_attention(m, l, h->x[t], h->xn[t], h->q[t], k, v, h->pos0[t], tag, err);
            if (rc)
                return rc;
        }
    }
    /* compression: blocks of hosts 0..W-2 (the last host's block has no later reader) */
    apb_handle ck[64] = {0}, cv[64] = {0}, qbar = NULL;
    if (passing) {
        if (!select_all && !retain) {
            const apb_host *h1 = &hs->h[1];
            apb_runtime_set_owner(1);
            qbar = apb_tile_new(1, kd, sizeof(float));
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
            _APB_TRY(apb_insert_qmean_tiles(qt, r0, nr, nt, c->n_kv_heads, c->head_dim, qbar,
                                            (apb_task_tag){l, 1, c->n_layers - l + 1}),
                     "qmean");
        }
        for (int r = 0; r < W - 1; r++) {
            apb_host *h = &hs->h[r];
            int nloc = h->n_tiles - h->n_anchor_tiles;
            const apb_handle *kt = &h->k[l * h->n_tiles + h->n_anchor_tiles];
            const apb_handle *vt = &h->v[l * h->n_tiles + h->n_anchor_tiles];
            if (select_all) { /* K = whole block, no anchor: the block itself is the passing block */
                continue;
            }
            apb_runtime_set_owner(r); /* compressed on host r, sent to the ranks of hosts > r */
            ck[r] = apb_tile_new(K, kd, sizeof(float));
            cv[r] = apb_tile_new(K, kd, sizeof(float));
            /* compress -> allgather is every later host's critical path: highest priority */
            apb_task_tag stag = {l, r, c->n_layers - l + 1};
            if (retain)
                _APB_TRY(apb_insert_select_scored(sc[r], kt, vt, nloc, r == 0 ? hs->opt.anchor : 0, K,
                                                  c->head_dim, ck[r], cv[r], stag), "select");
            else
                _APB_TRY(apb_insert_select(qbar, kt, vt, nloc, r == 0 ? hs->opt.anchor : 0, K,
                                           c->head_dim, ck[r], cv[r], stag), "select");
            for (int u = 0; u < nloc && u < 64; u++)
                apb_handle_free(sc[r][u]);
        }
    }
    /* --allgather nccl: one gathered copy of every block per GPU (W x K rows, host j at j K) */
    int G = apb_runtime_nccl_size(), nccl = passing && !select_all && hs->opt.allgather == APB_ALLGATHER_NCCL;
    apb_handle gk[64] = {0}, gv[64] = {0};
    if (nccl) {
        int per = W / G;
        for (int g = 0; g < G; g++) {
            int slot[64], n = 0;
            apb_handle lk[64], lv[64];
            for (int j = g * per; j < (g + 1) * per && j < W - 1; j++) {
                slot[n] = j;
                lk[n] = ck[j];
                lv[n++] = cv[j];
            }
            apb_runtime_set_owner(g * per); /* over MPI: the rank of the GPU's hosts */
            gk[g] = apb_tile_new(W * K, kd, sizeof(float));
            gv[g] = apb_tile_new(W * K, kd, sizeof(float));
            /* order only (codelets/codelet_allgather.c): the question mean and this layer's last
             * K tile of the GPU's last host */
            const apb_host *hl = &hs->h[(g + 1) * per - 1];
            apb_handle deps[2] = {hl->k[l * hl->n_tiles + hl->n_tiles - 1], qbar};
            if (!hs->ag_order[g])
                hs->ag_order[g] = apb_tile_new_zeroed(1, 1, sizeof(float));
            if (apb_insert_allgather_nccl(lk, lv, slot, n, g, per, gk[g], gv[g], hs->ag_order[g],
                                          deps, qbar ? 2 : 1,
                                          (apb_task_tag){l, g * per, c->n_layers - l + 1}))
                return apb_fail(err, APB_E_RUNTIME, "submitting the NCCL allgather failed");
        }
    }
    apb_handle_free(qbar);
    if (hs->opt.method == APB_METHOD_RING || hs->opt.method == APB_METHOD_ZIGZAG)
        return _apb_ring_layer(m, hs, l, segs, err);
    if (hs->opt.method == APB_METHOD_ULYSSES)
        return _apb_ulysses_layer(m, hs, l, segs, err);
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        apb_task_tag tag = {l, r, c->n_layers - l};
        for (int t = h->n_tiles - 1; t >= 0; t--) {
            int ns = 0;
            int is_anchor_row_tile = t < h->n_anchor_tiles;
            if (nccl && r > 0) { /* hosts 0..r-1: the first r K rows of this GPU's copy */
                int g = r / (W / G);
                segs[ns++] = (apb_attn_seg){gk[g], gv[g], r * K, 0, 0, h->a};
            } else if (passing) {
                for (int j = 0; j < r; j++) {
                    if (ck[j]) {
                        segs[ns++] = (apb_attn_seg){ck[j], cv[j], K, 0, 0, h->a};
                    } else { /* select-all: host j's whole local block, in tiles */
                        const apb_host *hj = &hs->h[j];
                        for (int u = hj->n_anchor_tiles; u < hj->n_tiles; u++)
                            segs[ns++] = (apb_attn_seg){hj->k[l * hj->n_tiles + u],
                                                        hj->v[l * hj->n_tiles + u], hj->rows[u], 0,
                                                        0, h->a};
                    }
                }
            }
            (void)is_anchor_row_tile; /* anchor rows skip the passing segments via min_q_coord */
            for (int u = 0; u <= t; u++)
                segs[ns++] = (apb_attn_seg){h->k[l * h->n_tiles + u], h->v[l * h->n_tiles + u],
                                            h->rows[u], h->coord0[u], 1, 0};
            if (apb_insert_attention(h->q[t], h->coord0[t], segs, ns, c->n_heads, c->n_kv_heads,
                                     c->head_dim, h->o[t], h->lse[t], tag))
                return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
            int rc = _apb_post_attention(m, l, h->o[t], h->x[t], h->xn[t], tag, err);
            if (rc)
                return rc;
        }
    }
    for (int r = 0; r < W; r++) { /* discard the passing blocks after their last reader */
        apb_handle_free(ck[r]);
        apb_handle_free(cv[r]);
    }
    for (int g = 0; nccl && g < G; g++) {
        apb_handle_free(gk[g]);
        apb_handle_free(gv[g]);
    }
    _apb_drop_anchor_kv(hs, l, 0);
    return APB_OK;
}

/* ------------------------------------------------------------------ question pass and decoding */
/* Rows of slot s (0: the question, 1: one generated token) sit at positions L + n_cached ...
 * Per layer: _apb_tail_pre (norm, QKV, RoPE, append to the last host's decode cache), then
 * _apb_tail_attend (one partial attention per host over its cache, LSE merge, o-proj, MLP). */
static int _apb_tail_pre(apb_model *m, apb_hseq *hs, int s, int l, apb_err *err)
{
    apb_task_tag tag = {l, hs->opt.hosts - 1, 0};
    int rc = _apb_pre_attention(m, l, hs->t_x[s], hs->t_xn[s], hs->t_q[s], hs->t_k[s], hs->t_v[s],
                                hs->L + hs->n_cached, tag, err);
    if (!rc && apb_insert_kv_append(hs->t_k[s], hs->t_v[s], hs->kd[l], hs->vd[l], hs->n_cached, tag))
        rc = apb_fail(err, APB_E_RUNTIME, "submitting kv_append failed");
    return rc;
}

static int _apb_tail_attend(apb_model *m, apb_hseq *hs, int s, int l, int rows, apb_attn_seg *segs,
                            apb_err *err)
{
    const apb_config *c = &m->cfg;
    int W = hs->opt.hosts, pos0 = hs->L + hs->n_cached;
    apb_task_tag tag = {l, W - 1, 0};
    /* each host attends over its local cache; the last host also over the question and generated
     * tokens. Non-last hosts: non-causal (all of their cache is in the past). The anchors are
     * dropped from the cache (APB, Star), except Spava's, whose anchor is the true context prefix:
     * host 0 counts it once. */
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        int ns = 0;
        int u0 = hs->opt.method == APB_METHOD_SPAVA && r == 0 ? 0 : h->n_anchor_tiles;
        for (int u = u0; u < h->n_tiles; u++)
            segs[ns++] = (apb_attn_seg){h->k[l * h->n_tiles + u], h->v[l * h->n_tiles + u],
                                        h->rows[u], 0, 0, 0};
        if (r == W - 1)
            segs[ns++] = (apb_attn_seg){hs->kd[l], hs->vd[l], hs->n_cached + rows, hs->L, 1, 0};
        apb_handle o = W == 1 ? hs->t_o[s] : hs->t_po[s][r];
        if (apb_insert_attention(hs->t_q[s], pos0, segs, ns, c->n_heads, c->n_kv_heads, c->head_dim,
                                 o, hs->t_pl[s][r], (apb_task_tag){l, r, 0}))
            return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
    }
    if (W > 1 && apb_insert_lse_merge(hs->t_po[s], hs->t_pl[s], W, c->head_dim, hs->t_o[s], NULL, tag))
        return apb_fail(err, APB_E_RUNTIME, "submitting lse_merge failed");
    return _apb_post_attention(m, l, hs->t_o[s], hs->t_x[s], hs->t_xn[s], tag, err);
}

static int _apb_tail_end(apb_model *m, apb_hseq *hs, int s, int rows, const apb_sampling *smp,
                         uint64_t step, apb_err *err)
{
    apb_task_tag tag0 = {-1, hs->opt.hosts - 1, 0};
    hs->n_cached += rows;
    if (apb_insert_logits(hs->t_x[s], rows - 1, 1, m->final_norm, m->lm_head, hs->logits,
                          m->cfg.norm_eps, tag0) ||
        apb_insert_sample(hs->logits, 0, hs->token, smp->temperature, smp->top_p, smp->seed, step,
                          tag0))
        return apb_fail(err, APB_E_RUNTIME, "submitting logits/sample failed");
    return APB_OK;
}

static apb_attn_seg *_apb_segs_alloc(const apb_hseq *hs)
{
    int maxseg = 4 + 2 * hs->opt.hosts;
    for (int r = 0; r < hs->opt.hosts; r++)
        maxseg += hs->h[r].n_tiles;
    return malloc(sizeof(apb_attn_seg) * (size_t)maxseg);
}

static int _apb_tail(apb_model *m, apb_hseq *hs, int s, apb_handle ids, int rows,
                     const apb_sampling *smp, uint64_t step, apb_err *err)
{
    apb_attn_seg *segs = _apb_segs_alloc(hs);
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    int rc = APB_OK;
    if (apb_insert_embed(ids, m->embed, hs->t_x[s], (apb_task_tag){-1, hs->opt.hosts - 1, 0}))
        rc = apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
    for (int l = 0; l < m->cfg.n_layers && !rc; l++) {
        rc = _apb_tail_pre(m, hs, s, l, err);
        if (!rc)
            rc = _apb_tail_attend(m, hs, s, l, rows, segs, err);
    }
    free(segs);
    return rc ? rc : _apb_tail_end(m, hs, s, rows, smp, step, err);
}

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
    int kd = c->n_kv_heads * c->head_dim, nchunks = 2 * W;
    int rc = _apb_tail_pre(m, hs, 0, l, err);
    for (int r = 0; r < W && !rc; r++) {
        apb_host *h = &hs->h[r];
        for (int t = 0; t < h->n_tiles && !rc; t++)
            rc = _apb_pre_attention(m, l, h->x[t], h->xn[t], h->q[t], h->k[l * h->n_tiles + t],
                                    h->v[l * h->n_tiles + t], h->pos0[t],
                                    (apb_task_tag){l, r, c->n_layers - l}, err);
    }
    if (rc)
        return rc;
    apb_handle ck[128] = {0}, cv[128] = {0}, qbar = NULL;
    if (K > 0 && W > 1) {
        apb_runtime_set_owner(W - 1);
        qbar = apb_tile_new(1, kd, sizeof(float));
        _APB_TRY(apb_insert_qmean(hs->t_q[0], 0, hs->nq, c->n_kv_heads, c->head_dim, qbar,
                                  (apb_task_tag){l, W - 1, c->n_layers - l + 1}),
                 "qmean");
        for (int v = 0; v < nchunks - 1; v++) { /* the last chunk has no later reader */
            int r = v < W ? v : nchunks - 1 - v, g = v < W ? 0 : 1;
            apb_host *h = &hs->h[r];
            int t0 = h->n_anchor_tiles + (g ? h->range_ntiles[0] : 0), nt = h->range_ntiles[g];
            if (h->range_len[g] < K) /* a short chunk sends everything it has */
                continue;
            apb_runtime_set_owner(r);
            ck[v] = apb_tile_new(K, kd, sizeof(float));
            cv[v] = apb_tile_new(K, kd, sizeof(float));
            _APB_TRY(apb_insert_select(qbar, &h->k[l * h->n_tiles + t0], &h->v[l * h->n_tiles + t0],
                                       nt, 0, K, c->head_dim, ck[v], cv[v],
                                       (apb_task_tag){l, r, c->n_layers - l + 1}),
                     "select");
        }
        apb_handle_free(qbar);
    }
    for (int r = 0; r < W; r++) {
        apb_host *h = &hs->h[r];
        apb_task_tag tag = {l, r, c->n_layers - l};
        for (int t = h->n_tiles - 1; t >= 0; t--) {
            int g = t < h->n_anchor_tiles ? -1 : t < h->n_anchor_tiles + h->range_ntiles[0] ? 0 : 1;
            int ns = 0, last_chunk = g == 0 ? r - 1 : g == 1 ? nchunks - 2 - r : -1;
            for (int v = 0; v <= last_chunk && K > 0; v++) {
                int rr = v < W ? v : nchunks - 1 - v, gg = v < W ? 0 : 1;
                const apb_host *hv = &hs->h[rr];
                if (ck[v]) {
                    segs[ns++] = (apb_attn_seg){ck[v], cv[v], K, 0, 0, A};
                } else { /* whole short chunk */
                    int u0 = hv->n_anchor_tiles + (gg ? hv->range_ntiles[0] : 0);
                    for (int u = u0; u < u0 + hv->range_ntiles[gg]; u++)
                        segs[ns++] = (apb_attn_seg){hv->k[l * hv->n_tiles + u],
                                                    hv->v[l * hv->n_tiles + u], hv->rows[u], 0, 0, A};
                }
            }
            for (int u = 0; u < h->n_anchor_tiles; u++) /* anchor, causal by position */
                segs[ns++] = (apb_attn_seg){h->k[l * h->n_tiles + u], h->v[l * h->n_tiles + u],
                                            h->rows[u], h->pos0[u], 1, 0};
            if (g >= 0) { /* own range, causal */
                int u0 = h->n_anchor_tiles + (g ? h->range_ntiles[0] : 0);
                for (int u = u0; u <= t; u++)
                    segs[ns++] = (apb_attn_seg){h->k[l * h->n_tiles + u], h->v[l * h->n_tiles + u],
                                                h->rows[u], h->pos0[u], 1, 0};
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

int apb_prefill_hosts(apb_model *m, apb_hseq *hs, const int32_t *ctx, int L, const int32_t *question,
                      int nq, int max_new, const apb_hosts_opts *opt, const apb_sampling *smp,
                      apb_err *err)
{
    const apb_config *c = &m->cfg;
    memset(hs, 0, sizeof *hs);
    hs->opt = *opt;
    int rc = apb_hosts_resolve(c, L, nq, max_new, &hs->opt, err);
    if (rc)
        return rc;
    for (int i = 0; i < L; i++)
        if (ctx[i] < 0 || ctx[i] >= c->vocab_size)
            return apb_fail(err, APB_E_USAGE, "token id %d at position %d is outside vocab [0, %d)",
                            ctx[i], i, c->vocab_size);
    for (int i = 0; i < nq; i++)
        if (question[i] < 0 || question[i] >= c->vocab_size)
            return apb_fail(err, APB_E_USAGE, "question token id %d is outside vocab [0, %d)",
                            question[i], c->vocab_size);
    int W = hs->opt.hosts;
    if (W > 64)
        return apb_fail(err, APB_E_USAGE, "--hosts %d: at most 64 hosts", W);
    if ((rc = apb_place_hosts(hs->opt.placement, W, err)))
        return rc;
    if (hs->opt.allgather == APB_ALLGATHER_NCCL) {
        if ((rc = apb_runtime_nccl_init(err))) /* collective over MPI ranks */
            return rc;
        int G = apb_runtime_nccl_size();
        if (W % G)
            return apb_fail(err, APB_E_USAGE, "--allgather nccl: %d hosts do not split evenly over "
                            "%d GPUs%s (NCCL's allgather takes the same count from every GPU)", W, G,
                            apb_runtime_nranks() > 1 ? " of all ranks" : "");
        if (W > 1 && hs->opt.select > 0 && (size_t)W * hs->opt.select * c->n_kv_heads * c->head_dim > (1u << 30))
            return apb_fail(err, APB_E_USAGE, "--allgather nccl: the gathered buffer (%d x %d rows) "
                            "is too large", W, hs->opt.select);
    }
    if (hs->opt.retain && hs->opt.method == APB_METHOD_APB && !m->retain_hidden)
        return apb_fail(err, APB_E_USAGE, "--compress retain needs --retain-weights FILE");
    if (hs->opt.retain && (hs->block + hs->opt.tile - 1) / hs->opt.tile > 64)
        return apb_fail(err, APB_E_USAGE, "--compress retain: at most 64 tiles per block (block %d, "
                        "tile %d); use a larger --tile", hs->block, hs->opt.tile);
    hs->L = L;
    hs->nq = nq;
    hs->block = (L + W - 1) / W;
    hs->q_row0 = L < _APB_ANCHOR_PREFIX ? L : _APB_ANCHOR_PREFIX;
    hs->q_rows = nq < hs->opt.anchor - hs->q_row0 ? nq : hs->opt.anchor - hs->q_row0;
    if (hs->opt.method == APB_METHOD_APB && !hs->opt.retain && hs->q_rows > 0 &&
        (hs->q_row0 + hs->q_rows - 1) / hs->opt.tile - hs->q_row0 / hs->opt.tile + 1 > 16)
        return apb_fail(err, APB_E_USAGE, "the %d question rows span more than 16 anchor tiles of %d "
                        "rows; use a larger --tile", hs->q_rows, hs->opt.tile);
    hs->h = calloc((size_t)W, sizeof *hs->h);
    if (!hs->h)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    for (int r = 0; r < W; r++)
        if ((rc = _apb_host_alloc(m, hs, r, ctx, question, err)))
            return rc;
    /* question / decode state on the last host */
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    hs->cap = nq + max_new;
    hs->kd = calloc((size_t)c->n_layers, sizeof(apb_handle));
    hs->vd = calloc((size_t)c->n_layers, sizeof(apb_handle));
    hs->q_ids = malloc(sizeof(int32_t) * (size_t)nq);
    if (!hs->kd || !hs->vd || !hs->q_ids)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    memcpy(hs->q_ids, question, sizeof(int32_t) * (size_t)nq);
    apb_runtime_set_owner(W - 1); /* the question pass and decoding run on the last host */
    hs->q_ids_t = apb_tile_from(hs->q_ids, nq, 1, sizeof(int32_t));
    for (int l = 0; l < c->n_layers; l++) {
        hs->kd[l] = apb_tile_new_zeroed(hs->cap, kd, sizeof(float));
        hs->vd[l] = apb_tile_new_zeroed(hs->cap, kd, sizeof(float));
    }
    for (int s = 0; s < 2; s++) {
        int rows = s == 0 ? nq : 1;
        hs->t_x[s] = apb_tile_new(rows, c->dim, sizeof(float));
        hs->t_xn[s] = apb_tile_new(rows, c->dim, sizeof(float));
        hs->t_q[s] = apb_tile_new(rows, qd, sizeof(float));
        hs->t_k[s] = apb_tile_new(rows, kd, sizeof(float));
        hs->t_v[s] = apb_tile_new(rows, kd, sizeof(float));
        hs->t_o[s] = apb_tile_new(rows, qd, sizeof(float));
        hs->t_po[s] = calloc((size_t)W, sizeof(apb_handle));
        hs->t_pl[s] = calloc((size_t)W, sizeof(apb_handle));
        if (!hs->t_po[s] || !hs->t_pl[s])
            return apb_fail(err, APB_E_NOMEM, "out of memory");
        for (int r = 0; r < W; r++) { /* host r's partial result, merged on the last host */
            apb_runtime_set_owner(r);
            hs->t_po[s][r] = apb_tile_new(rows, qd, sizeof(float));
            hs->t_pl[s][r] = apb_tile_new(rows, c->n_heads, sizeof(float));
        }
        apb_runtime_set_owner(W - 1);
    }
    hs->logits = apb_tile_new(1, c->vocab_size, sizeof(float));
    hs->token = apb_tile_new(1, 1, sizeof(int32_t));

    /* context prefill */
    for (int r = 0; r < W; r++)
        for (int t = 0; t < hs->h[r].n_tiles; t++)
            if (apb_insert_embed(hs->h[r].ids_t[t], m->embed, hs->h[r].x[t],
                                 (apb_task_tag){-1, r, c->n_layers + 1}))
                return apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
    apb_attn_seg *segs = _apb_segs_alloc(hs);
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    if (hs->opt.method == APB_METHOD_SPAVA) { /* fused: the question runs inside the prefill */
        if (apb_insert_embed(hs->q_ids_t, m->embed, hs->t_x[0], (apb_task_tag){-1, W - 1, 0}))
            rc = apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
        for (int l = 0; l < c->n_layers && !rc; l++)
            if (!(rc = _apb_spava_layer(m, hs, l, segs, err)))
                rc = _apb_compact_layer(hs, l, err);
        free(segs);
        return rc ? rc : _apb_tail_end(m, hs, 0, nq, smp, 0, err);
    }
    for (int l = 0; l < c->n_layers && !rc; l++)
        if (!(rc = _apb_prefill_layer(m, hs, l, segs, err)))
            rc = _apb_compact_layer(hs, l, err);
    free(segs);
    if (rc)
        return rc;
    /* the anchors' hidden states are not needed past the last layer; the KV cache keeps them but the
     * question pass and decoding skip the anchor tiles */
    return _apb_tail(m, hs, 0, hs->q_ids_t, nq, smp, 0, err);
}

int apb_decode_hosts(apb_model *m, apb_hseq *hs, const apb_sampling *smp, apb_err *err)
{
    if (hs->n_cached + 1 > hs->cap)
        return apb_fail(err, APB_E_USAGE, "decode cache full (%d rows)", hs->cap);
    return _apb_tail(m, hs, 1, hs->token, 1, smp, (uint64_t)(hs->n_cached - hs->nq + 1), err);
}

int apb_hosts_read_logits(apb_hseq *hs, float *out, size_t n, apb_err *err)
{
    return apb_tile_read(hs->logits, out, sizeof(float) * n, err);
}

double apb_run_memory_estimate(const apb_config *c, int L, int nq, int max_new, const apb_hosts_opts *o,
                               int kv_bf16, double *kv_cache)
{
    double W = o->hosts, kd = (double)c->n_kv_heads * c->head_dim, qd = (double)c->n_heads * c->head_dim;
    double rows = L + (W - 1) * (o->anchor > 0 ? o->anchor : 0); /* every host's [anchor | local] */
    /* the cache of every layer (the prompt's rows in bf16 once compacted, question and decode rows
     * fp32), plus one layer's anchors (released after their layer) */
    double cache = (kv_bf16 ? 2.0 : 4.0) * 2 * kd * c->n_layers * L + 4.0 * 2 * kd * c->n_layers * (nq + max_new);
    if (kv_bf16) /* two layers still (or also) in fp32 */
        cache += 4.0 * 2 * kd * (c->n_layers < 2 ? c->n_layers : 2) * L;
    double kv = cache + 4.0 * 2 * kd * (rows - L);
    if (kv_cache)
        *kv_cache = cache;
    double act = 4.0 * rows * (2.0 * c->dim + 2 * qd + c->n_heads); /* x, xn, q, o, lse per tile */
    double per_task = 4.0 * o->tile * (2.0 * c->hidden_dim) * 2;   /* MLP scratch, two workers */
    double passing = 4.0 * 2 * kd * W * (o->select > 0 ? o->select : 0);
    double logits = 4.0 * c->vocab_size * 2;
    return kv + act + per_task + passing + logits;
}

double apb_host_memory_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        long long kb;
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) {
            fclose(f);
            return kb * 1024.0;
        }
    }
    if (f)
        fclose(f);
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * psz : -1;
}
