/* SPDX-License-Identifier: MIT */
/**
 * @brief The sequence-parallel driver, the same for every method: resolve the options (common
 * checks, then the method's own), split the context over the hosts (split.c), submit every layer
 * through the method's descriptor (methods/) and the shared bf16 compaction (layer.c), then the
 * LSE-merged question pass (attend.c). Also the memory estimate of a run.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/graph_internal.h"
#include "common/apb_env.h"

int apb_hosts_resolve(const apb_config *cfg, int L, int nq, int max_new, apb_hosts_opts *o, apb_err *err)
{
    const apb_method_desc *md = apb_method_desc_of(o->method);
    if (md->fixed_hosts > 0) {
        o->hosts = md->fixed_hosts;
        o->anchor = o->select = 0;
    }
    int W = o->hosts;
    if (W < 1)
        return apb_fail(err, APB_E_USAGE, "--hosts must be >= 1 (got %d)", W);
    if (o->allgather == APB_ALLGATHER_NCCL) {
        if (!(md->flags & APB_MF_PASSING))
            return apb_fail(err, APB_E_USAGE, "--allgather nccl applies to --method apb (got %s)",
                            apb_method_name(o->method));
        /* the G allgather tasks of a layer wait for each other inside NCCL: no host task may
         * queue behind another GPU's collective, so every host is pinned to its GPU */
        o->placement = APB_PLACE_PINNED;
    }
    if (o->short_chunk == APB_SHORT_REFERENCE && o->method != APB_METHOD_SPAVA)
        return apb_fail(err, APB_E_USAGE, "--short-chunk reference applies to --method spava (got %s)",
                        apb_method_name(o->method));
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
    return md->resolve ? md->resolve(cfg, L, block, o, err) : APB_OK;
}

int apb_prefill_hosts(apb_model *m, apb_hseq *hs, const int32_t *ctx, int L, const int32_t *question,
                      int nq, int max_new, const apb_hosts_opts *opt, const apb_sampling *smp,
                      apb_err *err)
{
    const apb_config *c = &m->cfg;
    struct timespec ts0;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    memset(hs, 0, sizeof *hs);
    hs->opt = *opt;
    int rc = apb_hosts_resolve(c, L, nq, max_new, &hs->opt, err);
    if (rc)
        return rc;
    const apb_embeds *e = hs->opt.embeds;
    const apb_method_desc *emd = apb_method_desc_of(hs->opt.method);
    if (e) { /* ctx[i] indexes the file's rows */
        if (e->n != L || e->dim != c->dim)
            return apb_fail(err, APB_E_USAGE, "--embeds: %d rows of %d for %d context positions of a "
                            "model of dim %d", e->n, e->dim, L, c->dim);
        if (emd->flags & APB_MF_QUESTION_ANCHOR)
            return apb_fail(err, APB_E_USAGE, "--embeds: method %s puts question tokens in the anchors; "
                            "not supported with embedding rows (use spava, star, full, ring, zigzag, "
                            "ulysses)", apb_method_name(hs->opt.method));
        if (hs->opt.retain)
            return apb_fail(err, APB_E_USAGE, "--embeds: --compress retain is not supported");
        if ((long)e->next_pos + nq + max_new > (long)c->max_pos)
            return apb_fail(err, APB_E_USAGE, "--embeds: the file's position ids reach %d; with %d question "
                            "and %d new tokens they exceed the model's context of %d", e->next_pos - 1, nq,
                            max_new, c->max_pos);
    }
    for (int i = 0; i < L; i++)
        if (e ? ctx[i] < 0 || ctx[i] >= e->n : ctx[i] < 0 || ctx[i] >= c->vocab_size)
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
    const apb_method_desc *md = apb_method_desc_of(hs->opt.method);
    if (hs->opt.retain && (md->flags & APB_MF_PASSING) && !m->retain_hidden)
        return apb_fail(err, APB_E_USAGE, "--compress retain needs --retain-weights FILE");
    if (hs->opt.retain && (hs->block + hs->opt.tile - 1) / hs->opt.tile > 64)
        return apb_fail(err, APB_E_USAGE, "--compress retain: at most 64 tiles per block (block %d, "
                        "tile %d); use a larger --tile", hs->block, hs->opt.tile);
    hs->L = L;
    hs->nq = nq;
    hs->block = (L + W - 1) / W;
    hs->q_row0 = L < _APB_ANCHOR_PREFIX ? L : _APB_ANCHOR_PREFIX;
    hs->q_rows = nq < hs->opt.anchor - hs->q_row0 ? nq : hs->opt.anchor - hs->q_row0;
    if ((md->flags & APB_MF_QUESTION_ANCHOR) && !hs->opt.retain && hs->q_rows > 0 &&
        (hs->q_row0 + hs->q_rows - 1) / hs->opt.tile - hs->q_row0 / hs->opt.tile + 1 > 16)
        return apb_fail(err, APB_E_USAGE, "the %d question rows span more than 16 anchor tiles of %d "
                        "rows; use a larger --tile", hs->q_rows, hs->opt.tile);
    hs->h = calloc((size_t)W, sizeof *hs->h);
    if (!hs->h)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    for (int r = 0; r < W; r++)
        if ((rc = _apb_split_host(m, hs, r, ctx, question, err)))
            return rc;
    /* The anchors of hosts 1.. (APB: prefix + question + context; Star: the first block; Spava: the
     * first A context tokens) are the
     * same rows and see only themselves, so every layer gives them the same K/V: in one process
     * with at most one GPU, host 1 computes its anchor once and hosts 2.. read it (7 of 8 anchor
     * computations at W = 8 saved; the hosts are not independent any more, which
     * APB_SHARE_ANCHOR=0 restores for studies of the distributed schedule). Not with the
     * retaining heads (they score each host's own anchor rows) nor over MPI ranks or several
     * GPUs, where the copies run in parallel. */
    static int share = -1;
    hs->anchor_src = (md->flags & APB_MF_SHARED_ANCHOR) && W >= 3 && !hs->opt.retain &&
                             apb_runtime_nranks() == 1 && apb_runtime_cuda_workers(NULL, 0) <= 1 &&
                             hs->h[1].n_anchor_tiles > 0 && apb_env_switch("APB_SHARE_ANCHOR", 1, &share)
                         ? 1 : 0;
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
    if (e) { /* the file's rows are the context's embedding table (read-only, every host) */
        hs->ctx_table = apb_tile_from(e->x, e->n, e->dim, sizeof(float));
        hs->rope_delta = e->next_pos - L; /* text after the rows continues at next_pos */
    }

    /* context prefill */
    for (int r = 0; r < W; r++)
        for (int t = 0; t < hs->h[r].n_tiles; t++)
            if (apb_insert_embed(hs->h[r].ids_t[t], e ? hs->ctx_table : m->embed, hs->h[r].x[t],
                                 (apb_task_tag){-1, r, c->n_layers + 1}))
                return apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
    apb_attn_seg *segs = _apb_segs_alloc(hs);
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    if (md->flags & APB_MF_FUSED_QUESTION) { /* Spava: the question runs inside the prefill */
        if (apb_insert_embed(hs->q_ids_t, m->embed, hs->t_x[0], (apb_task_tag){-1, W - 1, 0}))
            rc = apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
        for (int l = 0; l < c->n_layers && !rc; l++)
            if (!(rc = md->layer(m, hs, l, segs, err)))
                rc = _apb_compact_layer(hs, l, _apb_compact_prio(c, l), err);
        free(segs);
        return rc ? rc : _apb_tail_end(m, hs, 0, nq, smp, 0, err);
    }
    for (int l = 0; l < c->n_layers && !rc; l++) /* the method's layer (graph/methods/) */
        if (!(rc = md->layer(m, hs, l, segs, err)))
            rc = _apb_compact_layer(hs, l, _apb_compact_prio(c, l), err);
    free(segs);
    if (rc)
        return rc;
    /* the anchors' hidden states are not needed past the last layer; the KV cache keeps them but the
     * question pass and decoding skip the anchor tiles */
    if (!hs->opt.time_question)
        return _apb_tail(m, hs, 0, hs->q_ids_t, nq, smp, 0, err);
    if ((rc = apb_runtime_wait_all(err)))
        return rc;
    struct timespec ts1, ts2;
    clock_gettime(CLOCK_MONOTONIC, &ts1);
    if (!(rc = _apb_tail(m, hs, 0, hs->q_ids_t, nq, smp, 0, err)))
        rc = apb_runtime_wait_all(err);
    clock_gettime(CLOCK_MONOTONIC, &ts2);
    hs->t_context_s = (double)(ts1.tv_sec - ts0.tv_sec) + 1e-9 * (double)(ts1.tv_nsec - ts0.tv_nsec);
    hs->t_question_s = (double)(ts2.tv_sec - ts1.tv_sec) + 1e-9 * (double)(ts2.tv_nsec - ts1.tv_nsec);
    return rc;
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
