/* SPDX-License-Identifier: MIT */
/**
 * @brief Attention: named segment constructors, the attention of a host's tiles over [passing |
 * own tiles], and the LSE-merged question pass and decoding that follow the prefill.
 *
 * A segment (apb_attn_seg, codelets/apb_codelets.h) is a K/V tile list with a visibility rule; the
 * three kinds the methods use have names here instead of positional {k, v, len, coord0, causal,
 * min_q_coord} literals.
 */
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "common/apb_env.h"

apb_attn_seg apb_seg_causal(apb_handle k, apb_handle v, int len, int coord0)
{
    return (apb_attn_seg){.k = k, .v = v, .len = len, .coord0 = coord0, .causal = 1, .min_q_coord = 0};
}

apb_attn_seg apb_seg_passing(apb_handle k, apb_handle v, int len, int min_q_coord)
{
    return (apb_attn_seg){.k = k, .v = v, .len = len, .coord0 = 0, .causal = 0,
                          .min_q_coord = min_q_coord};
}

apb_attn_seg apb_seg_past(apb_handle k, apb_handle v, int len)
{
    return (apb_attn_seg){.k = k, .v = v, .len = len, .coord0 = 0, .causal = 0, .min_q_coord = 0};
}

int _apb_host_kv_tiles(const apb_hseq *hs, int l, int r, int t0, apb_handle *k, apb_handle *v)
{
    int n = 0;
    for (int t = t0; t < hs->h[r].n_tiles; t++, n++) {
        const apb_host *kh = _apb_kv_host(hs, r, t);
        k[n] = kh->k[l * kh->n_tiles + t];
        v[n] = kh->v[l * kh->n_tiles + t];
    }
    return n;
}

int _apb_attend_host(apb_model *m, apb_hseq *hs, int l, int r, apb_attn_seg *segs, int npass,
                     apb_err *err)
{
    const apb_config *c = &m->cfg;
    apb_host *h = &hs->h[r];
    apb_task_tag tag = {l, r, c->n_layers - l};
    for (int t = h->n_tiles - 1; t >= 0; t--) {
        if (_apb_kv_host(hs, r, t) != h)
            break; /* its anchor rows: computed once by host anchor_src */
        int ns = npass;
        for (int u = 0; u <= t; u++) {
            const apb_host *kh = _apb_kv_host(hs, r, u);
            segs[ns++] = apb_seg_causal(kh->k[l * kh->n_tiles + u], kh->v[l * kh->n_tiles + u],
                                        h->rows[u], h->coord0[u]);
        }
        if (apb_insert_attention(h->q[t], h->coord0[t], segs, ns, c->n_heads, c->n_kv_heads,
                                 c->head_dim, h->o[t], h->lse[t], tag))
            return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
        int rc = _apb_post_attention(m, l, h->o[t], h->x[t], h->xn[t], tag, err);
        if (rc)
            return rc;
    }
    return APB_OK;
}

/* ------------------------------------------------------------------ question pass and decoding */
/* Rows of slot s (0: the question, 1: one generated token) sit at positions L + n_cached ...
 * Per layer: _apb_tail_pre (norm, QKV, RoPE, append to the last host's decode cache), then
 * _apb_tail_attend (one partial attention per host over its cache, LSE merge, o-proj, MLP). */
int _apb_tail_pre(apb_model *m, apb_hseq *hs, int s, int l, apb_err *err)
{
    apb_task_tag tag = {l, hs->opt.hosts - 1, 0};
    if (_apb_fused_decode()) { /* one task: norm, QKV, RoPE, append */
        const apb_config *c = &m->cfg;
        apb_layer_w w = _apb_layer_w(m, l);
        if (apb_insert_layer_pre(hs->t_x[s], &w, hs->t_q[s], hs->kd[l], hs->vd[l],
                                 hs->L + hs->n_cached + hs->rope_delta,
                                 hs->n_cached, c->n_heads, c->n_kv_heads, c->head_dim, c->norm_eps, tag))
            return apb_fail(err, APB_E_RUNTIME, "submitting layer_pre failed");
        return APB_OK;
    }
    int rc = _apb_pre_attention(m, l, hs->t_x[s], hs->t_xn[s], hs->t_q[s], hs->t_k[s], hs->t_v[s],
                                hs->L + hs->n_cached + hs->rope_delta, tag, err);
    if (!rc && apb_insert_kv_append(hs->t_k[s], hs->t_v[s], hs->kd[l], hs->vd[l], hs->n_cached, tag))
        rc = apb_fail(err, APB_E_RUNTIME, "submitting kv_append failed");
    return rc;
}

/* Host r's decode-time cache of layer l as past segments appended at segs: its tiles without the
 * anchors (APB, Star), except Spava's anchor, the true context prefix, which host 0 counts once.
 * Returns how many were written. */
static int _apb_host_cache_segs(const apb_hseq *hs, int l, int r, apb_attn_seg *segs)
{
    const apb_host *h = &hs->h[r];
    int anchor_all = (apb_method_desc_of(hs->opt.method)->flags & APB_MF_ANCHOR_ALL) != 0, ns = 0;
    for (int u = anchor_all && r == 0 ? 0 : h->n_anchor_tiles; u < h->n_tiles; u++) /* past: non-causal */
        ns = _apb_seg_push(segs, ns, _apb_cache_tile(h->k, h->v, h->kc, h->vc, h->crow0, h->n_tiles, l, u,
                                                     h->rows[u]));
    return ns;
}

int _apb_tail_attend(apb_model *m, apb_hseq *hs, int s, int l, int rows, apb_attn_seg *segs,
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
        int ns = _apb_host_cache_segs(hs, l, r, segs);
        if (r == W - 1)
            segs[ns++] = apb_seg_causal(hs->kd[l], hs->vd[l], hs->n_cached + rows, hs->L);
        apb_handle o = W == 1 ? hs->t_o[s] : hs->t_po[s][r];
        if (apb_insert_attention(hs->t_q[s], pos0, segs, ns, c->n_heads, c->n_kv_heads, c->head_dim,
                                 o, hs->t_pl[s][r], (apb_task_tag){l, r, 0}))
            return apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
    }
    if (W > 1 && apb_insert_lse_merge(hs->t_po[s], hs->t_pl[s], W, c->head_dim, hs->t_o[s], NULL, tag))
        return apb_fail(err, APB_E_RUNTIME, "submitting lse_merge failed");
    if (_apb_fused_decode()) { /* one task: o-proj, norm, MLP */
        apb_layer_w w = _apb_layer_w(m, l);
        if (apb_insert_layer_post(hs->t_o[s], &w, hs->t_x[s], c->n_heads, c->n_kv_heads, c->head_dim,
                                  c->norm_eps, tag))
            return apb_fail(err, APB_E_RUNTIME, "submitting layer_post failed");
        return APB_OK;
    }
    return _apb_post_attention(m, l, hs->t_o[s], hs->t_x[s], hs->t_xn[s], tag, err);
}

/* Decode step of a single process with one GPU: every host's cache is on that GPU, so one fused
 * layer task attends over all hosts' segments at once (the split-KV kernel merges the key ranges
 * by their log-sum-exp, as lse_merge merges the hosts' partials) instead of W partial attention
 * tasks and a merge per layer: ~11 dependent tasks per layer become one. Returns the number of
 * segments written to segs, or -1 when it does not apply (MPI ranks, several GPUs or none,
 * APB_DECODE_PER_HOST=1, more than a layer task takes). */
static int _apb_tail_one_task_segs(const apb_hseq *hs, int l, int rows, apb_attn_seg *segs)
{
    static int per_host = -1;
    if (apb_env_switch("APB_DECODE_PER_HOST", 0, &per_host) || !_apb_fused_decode() || rows > 8 || apb_runtime_nranks() != 1 ||
        apb_runtime_cuda_workers(NULL, 0) != 1)
        return -1;
    int ns = 0;
    for (int r = 0; r < hs->opt.hosts; r++)
        ns += _apb_host_cache_segs(hs, l, r, segs + ns);
    return ns + 1 > APB_LAYER_MAX_SEGS ? -1 : ns;
}

int _apb_tail_end(apb_model *m, apb_hseq *hs, int s, int rows, const apb_sampling *smp,
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

apb_attn_seg *_apb_segs_alloc(const apb_hseq *hs)
{
    int maxseg = 4 + 2 * hs->opt.hosts;
    for (int r = 0; r < hs->opt.hosts; r++)
        maxseg += hs->h[r].n_tiles;
    return malloc(sizeof(apb_attn_seg) * (size_t)maxseg);
}

int _apb_tail(apb_model *m, apb_hseq *hs, int s, apb_handle ids, int rows,
                     const apb_sampling *smp, uint64_t step, apb_err *err)
{
    apb_attn_seg *segs = _apb_segs_alloc(hs);
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    int rc = APB_OK;
    if (apb_insert_embed(ids, m->embed, hs->t_x[s], (apb_task_tag){-1, hs->opt.hosts - 1, 0}))
        rc = apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
    for (int l = 0; l < m->cfg.n_layers && !rc; l++) {
        int ns = s == 1 ? _apb_tail_one_task_segs(hs, l, rows, segs) : -1;
        if (ns >= 0) { /* the whole layer in one task */
            const apb_config *c = &m->cfg;
            apb_layer_w w = _apb_layer_w(m, l);
            int pos0 = hs->L + hs->n_cached;
            if (apb_insert_layer(hs->t_x[s], &w, hs->kd[l], hs->vd[l], pos0 + hs->rope_delta, hs->n_cached,
                                 pos0, hs->L, segs, ns, c->n_heads, c->n_kv_heads, c->head_dim, c->norm_eps,
                                 (apb_task_tag){l, hs->opt.hosts - 1, 0}))
                rc = apb_fail(err, APB_E_RUNTIME, "submitting layer failed");
            continue;
        }
        rc = _apb_tail_pre(m, hs, s, l, err);
        if (!rc)
            rc = _apb_tail_attend(m, hs, s, l, rows, segs, err);
    }
    free(segs);
    return rc ? rc : _apb_tail_end(m, hs, s, rows, smp, step, err);
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
