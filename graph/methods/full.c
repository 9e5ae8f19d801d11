/* SPDX-License-Identifier: MIT */
/**
 * @brief Method "full": exact causal attention on one host. Two entries: the plain prompt path
 * (apb_seq: prefill over token tiles, then one-token decode steps, apb_prefill_full) and, when a
 * question is given, the hosts path with W = 1 (the descriptor below; the question pass and
 * decoding of graph/attend.c).
 */
#include <stdlib.h>
#include <string.h>

#include "codelets/apb_decode.h"
#include "common/apb_env.h"
#include "graph/apb_graph.h"
#include "graph/graph_internal.h"

static apb_handle *_apb_handles(int n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(apb_handle));
}

static int _apb_seq_alloc(apb_model *m, apb_seq *s, const int32_t *ids, int n, int tile,
                          int cap_decode, apb_err *err)
{
    const apb_config *c = &m->cfg;
    if (n <= 0)
        return apb_fail(err, APB_E_USAGE, "empty prompt");
    if (tile <= 0)
        return apb_fail(err, APB_E_USAGE, "tile size must be positive (got %d)", tile);
    if (cap_decode < 0 || (long)n + cap_decode > c->max_pos)
        return apb_fail(err, APB_E_USAGE,
                        "%d prompt tokens + %d new tokens exceed the model's context of %d",
                        n, cap_decode, c->max_pos);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return apb_fail(err, APB_E_USAGE, "token id %d at position %d is outside vocab [0, %d)",
                            ids[i], i, c->vocab_size);
    memset(s, 0, sizeof *s);
    /* one host: every task free, every tile on rank 0 (the other ranks of an MPI run idle) */
    apb_runtime_place_hosts(NULL, 0);
    apb_runtime_place_ranks(NULL, 0);
    apb_runtime_set_owner(0);
    s->n_prompt = n;
    s->tile = tile;
    s->n_tiles = (n + tile - 1) / tile;
    s->cap_decode = cap_decode;
    s->ids = malloc(sizeof(int32_t) * (size_t)n);
    s->ids_t = _apb_handles(s->n_tiles);
    s->x = _apb_handles(s->n_tiles);
    s->xn = _apb_handles(s->n_tiles);
    s->q = _apb_handles(s->n_tiles);
    s->o = _apb_handles(s->n_tiles);
    s->lse = _apb_handles(s->n_tiles);
    s->k = _apb_handles(c->n_layers * s->n_tiles);
    s->v = _apb_handles(c->n_layers * s->n_tiles);
    s->kc = _apb_handles(c->n_layers);
    s->vc = _apb_handles(c->n_layers);
    s->crow0 = malloc(sizeof(int) * (size_t)c->n_layers * (size_t)s->n_tiles);
    s->kd = _apb_handles(c->n_layers);
    s->vd = _apb_handles(c->n_layers);
    if (!s->ids || !s->ids_t || !s->x || !s->xn || !s->q || !s->o || !s->lse || !s->k || !s->v ||
        !s->kc || !s->vc || !s->crow0 || !s->kd || !s->vd)
        return apb_fail(err, APB_E_NOMEM, "out of memory allocating sequence state");
    memcpy(s->ids, ids, sizeof(int32_t) * (size_t)n);
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    for (int t = 0; t < s->n_tiles; t++) {
        int rows = t == s->n_tiles - 1 ? n - t * tile : tile;
        s->ids_t[t] = apb_tile_from(s->ids + (size_t)t * tile, rows, 1, sizeof(int32_t));
        s->x[t] = apb_tile_new(rows, c->dim, sizeof(float));
        s->xn[t] = apb_tile_new(rows, c->dim, (size_t)_apb_xn_elem());
        s->q[t] = apb_tile_new(rows, qd, sizeof(float));
        s->o[t] = apb_tile_new(rows, qd, (size_t)_apb_o_elem());
        s->lse[t] = apb_tile_new(rows, c->n_heads, sizeof(float));
        for (int l = 0; l < c->n_layers; l++) {
            s->k[l * s->n_tiles + t] = apb_tile_new(rows, kd, sizeof(float));
            s->v[l * s->n_tiles + t] = apb_tile_new(rows, kd, sizeof(float));
        }
    }
    if (cap_decode > 0) {
        for (int l = 0; l < c->n_layers; l++) {
            s->kd[l] = apb_tile_new_zeroed(cap_decode, kd, sizeof(float));
            s->vd[l] = apb_tile_new_zeroed(cap_decode, kd, sizeof(float));
        }
        s->d_x = apb_tile_new(1, c->dim, sizeof(float));
        s->d_xn = apb_tile_new(1, c->dim, sizeof(float));
        s->d_q = apb_tile_new(1, qd, sizeof(float));
        s->d_k = apb_tile_new(1, kd, sizeof(float));
        s->d_v = apb_tile_new(1, kd, sizeof(float));
        s->d_o = apb_tile_new(1, qd, sizeof(float));
        s->d_lse = apb_tile_new(1, c->n_heads, sizeof(float));
        s->n_split = apb_decode_split();
        for (int i = 0; s->n_split > 1 && i < s->n_split; i++) {
            int v0 = (int)((long)c->vocab_size * i / s->n_split);
            int v1 = (int)((long)c->vocab_size * (i + 1) / s->n_split);
            s->d_z[i] = apb_tile_new(1, c->dim, sizeof(float));
            s->d_lg[i] = apb_tile_new(1, v1 - v0, sizeof(float));
            s->d_po[i] = apb_tile_new(1, qd, sizeof(float));
            s->d_plse[i] = apb_tile_new(1, c->n_heads, sizeof(float));
        }
    }
    s->logits = apb_tile_new(1, c->vocab_size, sizeof(float));
    s->token = apb_tile_new(1, 1, sizeof(int32_t));
    return APB_OK;
}

void apb_seq_free(apb_model *m, apb_seq *s)
{
    int nl = m->cfg.n_layers;
    for (int t = 0; s->x && t < s->n_tiles; t++) {
        apb_handle_free(s->ids_t[t]);
        apb_handle_free(s->x[t]);
        apb_handle_free(s->xn[t]);
        apb_handle_free(s->q[t]);
        apb_handle_free(s->o[t]);
        apb_handle_free(s->lse[t]);
        for (int l = 0; l < nl; l++) {
            apb_handle_free(s->k[l * s->n_tiles + t]);
            apb_handle_free(s->v[l * s->n_tiles + t]);
        }
    }
    for (int l = 0; s->kd && l < nl; l++) {
        apb_handle_free(s->kd[l]);
        apb_handle_free(s->vd[l]);
    }
    for (int l = 0; s->kc && s->vc && l < nl; l++) {
        apb_handle_free(s->kc[l]);
        apb_handle_free(s->vc[l]);
    }
    for (int i = 0; i < s->n_split && s->n_split > 1; i++) {
        apb_handle_free(s->d_z[i]);
        apb_handle_free(s->d_lg[i]);
        apb_handle_free(s->d_po[i]);
        apb_handle_free(s->d_plse[i]);
    }
    apb_handle ones[] = {s->d_x, s->d_xn, s->d_q, s->d_k, s->d_v, s->d_o, s->d_lse, s->logits, s->token};
    for (size_t i = 0; i < sizeof ones / sizeof *ones; i++)
        apb_handle_free(ones[i]);
    apb_runtime_wait_all(NULL); /* ids_t points into s->ids: the unregisters must finish first */
    free(s->ids);
    free(s->ids_t);
    free(s->x);
    free(s->xn);
    free(s->q);
    free(s->o);
    free(s->lse);
    free(s->k);
    free(s->kc);
    free(s->vc);
    free(s->crow0);
    free(s->v);
    free(s->kd);
    free(s->vd);
    memset(s, 0, sizeof *s);
}

/* One attention task per layer over all query tiles (apb_insert_attention_tiles: on a GPU with
 * cuDNN one fused call over the whole prompt) instead of one a tile. Measured on an H200 at 128K
 * tokens (docs/PERFORMANCE.md, session 9): 8.36 s of attention as 32 layer calls against 7.91 s as
 * 512 tile calls (541 against 570 TFLOP/s on random data; the 704 TFLOP/s of one call on zeroed
 * inputs is a clock effect), so it is off by default; APB_ATTN_GROUP=1 turns it on (a run with
 * several GPUs or CPU workers needs one task a tile anyway). Read at every prefill. */
static int _apb_attn_group(void)
{
    const char *e = getenv("APB_ATTN_GROUP");
    return e && !strcmp(e, "1") && apb_runtime_cuda_devices_used() <= 1;
}

static apb_attn_seg _apb_seq_cache_seg(const apb_seq *s, int l, int u);

/* Submits the layers of the prefill; the final norm/LM head is left to the caller. Per layer: the
 * tiles' QKV, then (bf16) the compaction of the layer's K/V into its bf16 cache, which releases the
 * fp32 K/V tiles at once: the attention reads the cache (cuDNN takes it in place). Reading the fp32
 * tiles instead kept every layer's fp32 K/V alive until the last tile of the layer was done, and
 * since tile t of every layer needs only tiles <= t, the scheduler ran tiles through all the layers
 * first: 70 GiB at 128K tokens where the live set is ~40 (docs/PERFORMANCE.md, session 9). */
static int _apb_prefill_layers(apb_model *m, apb_seq *s, apb_err *err)
{
    const apb_config *c = &m->cfg;
    int T = s->n_tiles;
    apb_attn_seg *segs = malloc(sizeof *segs * (size_t)T);
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    const int group = _apb_attn_group() && T > 1;
    static int cf = -1;
    const int cache_first = apb_env_switch("APB_CACHE_FIRST", 1, &cf);
    int rc = APB_OK;
    for (int t = 0; t < T && !rc; t++)
        rc = apb_insert_embed(s->ids_t[t], m->embed, s->x[t], (apb_task_tag){-1, 0, 0})
                 ? apb_fail(err, APB_E_RUNTIME, "submitting embed failed") : APB_OK;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        /* earlier layers first: they feed everything after them */
        apb_task_tag tag = {l, 0, c->n_layers - l};
        for (int t = 0; t < T && !rc; t++)
            rc = _apb_pre_attention(m, l, s->x[t], s->xn[t], s->q[t], s->k[l * T + t],
                                    s->v[l * T + t], t * s->tile, tag, err);
        /* bf16: the layer's cache at half the size, read by the attention below (graph/layer.c);
         * APB_CACHE_FIRST=0: compacted after the attention, which then reads the fp32 tiles */
        if (!rc && cache_first)
            rc = _apb_compact_kv(&s->k[l * T], &s->v[l * T], T, -1, l, _apb_compact_prio(c, l), &s->kc[l], &s->vc[l],
                                 &s->crow0[l * T], err);
        if (group) { /* one task over all the query tiles, then each tile's o-proj and MLP */
            int ns = 0;
            for (int u = 0; u < T; u++)
                ns = _apb_seg_push(segs, ns, _apb_seq_cache_seg(s, l, u));
            if (!rc && apb_insert_attention_tiles(s->q, T, 0, segs, ns, c->n_heads, c->n_kv_heads, c->head_dim,
                                                  s->o, s->lse, tag))
                rc = apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
            for (int t = T - 1; t >= 0 && !rc; t--)
                rc = _apb_post_attention(m, l, s->o[t], s->x[t], s->xn[t], tag, err);
        } else {
            for (int t = T - 1; t >= 0 && !rc; t--) { /* longest attention first */
                int ns = 0;
                for (int u = 0; u <= t; u++)
                    ns = _apb_seg_push(segs, ns, _apb_seq_cache_seg(s, l, u));
                if (apb_insert_attention(s->q[t], t * s->tile, segs, ns, c->n_heads, c->n_kv_heads,
                                         c->head_dim, s->o[t], s->lse[t], tag))
                    rc = apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
                else
                    rc = _apb_post_attention(m, l, s->o[t], s->x[t], s->xn[t], tag, err);
            }
        }
        if (!rc && !cache_first)
            rc = _apb_compact_kv(&s->k[l * T], &s->v[l * T], T, -1, l, _apb_compact_prio(c, l), &s->kc[l], &s->vc[l],
                                 &s->crow0[l * T], err);
    }
    free(segs);
    return rc;
}

int apb_prefill_full(apb_model *m, apb_seq *s, const int32_t *ids, int n, int tile, int cap_decode,
                     const apb_sampling *smp, apb_err *err)
{
    int rc = _apb_seq_alloc(m, s, ids, n, tile, cap_decode, err);
    if (rc)
        return rc;
    rc = _apb_prefill_layers(m, s, err);
    if (rc)
        return rc;
    int last = s->n_tiles - 1;
    apb_task_tag tag = {-1, 0, m->cfg.n_layers + 1};
    if (apb_insert_logits(s->x[last], apb_tile_rows(s->x[last]) - 1, 1, m->final_norm, m->lm_head,
                          s->logits, m->cfg.norm_eps, tag) ||
        apb_insert_sample(s->logits, 0, s->token, smp->temperature, smp->top_p, smp->seed, 0, tag))
        return apb_fail(err, APB_E_RUNTIME, "submitting logits/sample failed");
    return APB_OK;
}

/* Blocks [b0, b1) of n over `len` (aligned to `al` when that leaves every block non-empty). */
static void _apb_block(int len, int n, int i, int al, int *b0, int *b1)
{
    if (len < 2 * al * n)
        al = 1;
    *b0 = (int)((long)len * i / n) / al * al;
    *b1 = i + 1 == n ? len : (int)((long)len * (i + 1) / n) / al * al;
}

/* Decode on CPU workers (s->n_split > 1): q, k and v as three tasks; the o-proj and the MLP in
 * n_split blocks (of inputs, of hidden units) summed into x, so that every core streams part of
 * the weights; the norm after each sum runs in the summing task (the attention norm of layer
 * l > 0 ran in layer l - 1's MLP sum). */
static int _apb_pre_attention_split(apb_model *m, int l, apb_seq *s, int pos, apb_task_tag tag,
                                    apb_err *err)
{
    const apb_layer_handles *L = &m->layers[l];
    int d = m->cfg.head_dim;
    if (l == 0)
        _APB_TRY(apb_insert_rmsnorm(s->d_x, L->attn_norm, s->d_xn, m->cfg.norm_eps, tag), "attn_norm");
    /* q and k rotated in their projection task, k and v written straight into the cache */
    _APB_TRY(apb_insert_proj_row(s->d_xn, L->wq, L->bq, m->inv_freq, pos, d, s->d_q, 0, tag), "q_proj");
    _APB_TRY(apb_insert_proj_row(s->d_xn, L->wk, L->bk, m->inv_freq, pos, d, s->kd[l], s->n_decoded, tag),
             "k_proj");
    _APB_TRY(apb_insert_proj_row(s->d_xn, L->wv, L->bv, NULL, pos, d, s->vd[l], s->n_decoded, tag), "v_proj");
    return APB_OK;
}

static int _apb_post_attention_split(apb_model *m, int l, apb_seq *s, apb_task_tag tag, apb_err *err)
{
    const apb_layer_handles *L = &m->layers[l];
    int n = s->n_split, b0, b1;
    float eps = m->cfg.norm_eps;
    for (int i = 0; i < n; i++) { /* blocks of 16 (the bf16 kernel's step) */
        _apb_block(apb_tile_cols(s->d_o), n, i, 16, &b0, &b1);
        _APB_TRY(apb_insert_linear_part(s->d_o, L->wo, s->d_z[i], b0, b1, tag), "o_proj");
    }
    _APB_TRY(apb_insert_gather_norm(s->d_z, n, s->d_x, 1, L->mlp_norm, s->d_xn, eps, tag), "o_sum");
    for (int i = 0; i < n; i++) {
        _apb_block(m->cfg.hidden_dim, n, i, 16, &b0, &b1);
        _APB_TRY(apb_insert_mlp_part(s->d_xn, L->w_gate, L->w_up, L->w_down, s->d_z[i], b0, b1, tag),
                 "mlp_part");
    }
    if (l + 1 < m->cfg.n_layers)
        _APB_TRY(apb_insert_gather_norm(s->d_z, n, s->d_x, 1, m->layers[l + 1].attn_norm, s->d_xn,
                                        eps, tag), "mlp_sum");
    else
        _APB_TRY(apb_insert_gather(s->d_z, n, s->d_x, 1, tag), "mlp_sum");
    return APB_OK;
}

/* The decode step's attention: on CPU workers (n_split > 1) the one-row kernel (codelet_decode.c) */
static int _apb_decode_attention(apb_seq *s, int pos, const apb_attn_seg *segs, int n,
                                 const apb_config *c, apb_handle o, apb_handle lse, apb_task_tag tag)
{
    if (s->n_split > 1 && n <= 64)
        return apb_insert_attention_row(s->d_q, pos, segs, n, c->n_heads, c->n_kv_heads, c->head_dim,
                                        o, lse, tag);
    return apb_insert_attention(s->d_q, pos, segs, n, c->n_heads, c->n_kv_heads, c->head_dim, o,
                                lse, tag);
}

/* Tile u of layer l's prompt cache as a causal segment (a slice of the compacted cache, or a tile). */
static apb_attn_seg _apb_seq_cache_seg(const apb_seq *s, int l, int u)
{
    const int rows = u == s->n_tiles - 1 ? s->n_prompt - u * s->tile : s->tile;
    apb_attn_seg g = _apb_cache_tile(s->k, s->v, s->kc, s->vc, s->crow0, s->n_tiles, l, u, rows);
    g.coord0 = u * s->tile;
    g.causal = 1;
    return g;
}

int apb_decode_step(apb_model *m, apb_seq *s, const apb_sampling *smp, apb_err *err)
{
    const apb_config *c = &m->cfg;
    if (s->n_decoded >= s->cap_decode)
        return apb_fail(err, APB_E_USAGE, "decode cache full (%d tokens)", s->cap_decode);
    int pos = s->n_prompt + s->n_decoded, T = s->n_tiles;
    apb_attn_seg *segs = malloc(sizeof *segs * (size_t)(T + 1));
    if (!segs)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    int rc = APB_OK;
    if (apb_insert_embed(s->token, m->embed, s->d_x, (apb_task_tag){-1, 0, 0}))
        rc = apb_fail(err, APB_E_RUNTIME, "submitting embed failed");
    for (int l = 0; l < c->n_layers && !rc; l++) {
        apb_task_tag tag = {l, 0, 0};
        if (_apb_fused_decode() && s->n_split <= 1) { /* the whole layer in one task (codelets/codelet_layer.c) */
            int ns = 0; /* the compacted cache: one segment */
            for (int u = 0; u < T; u++)
                ns = _apb_seg_push(segs, ns, _apb_seq_cache_seg(s, l, u));
            apb_layer_w w = _apb_layer_w(m, l);
            if (apb_insert_layer(s->d_x, &w, s->kd[l], s->vd[l], pos, s->n_decoded, pos, s->n_prompt, segs,
                                 ns, c->n_heads, c->n_kv_heads, c->head_dim, c->norm_eps, tag))
                rc = apb_fail(err, APB_E_RUNTIME, "submitting layer failed");
            continue;
        }
        rc = s->n_split > 1 ? _apb_pre_attention_split(m, l, s, pos, tag, err)
                            : _apb_pre_attention(m, l, s->d_x, s->d_xn, s->d_q, s->d_k, s->d_v, pos, tag, err);
        if (rc)
            break;
        if (s->n_split <= 1 && apb_insert_kv_append(s->d_k, s->d_v, s->kd[l], s->vd[l], s->n_decoded, tag)) {
            rc = apb_fail(err, APB_E_RUNTIME, "submitting kv_append failed");
            break;
        }
        for (int u = 0; u < T; u++) /* one segment a tile: the groups below split at tiles */
            segs[u] = _apb_seq_cache_seg(s, l, u);
        segs[T] = apb_seg_causal(s->kd[l], s->vd[l], s->n_decoded + 1, s->n_prompt);
        if (s->n_split > 1 && pos >= 512 && T + 1 >= 2) {
            /* long context: the cache's segments in n_split groups of about equal length, one
             * attention task each, merged by their log-sum-exp */
            int ng = s->n_split < T + 1 ? s->n_split : T + 1, u0 = 0;
            long done = 0;
            for (int g = 0; g < ng && !rc; g++) {
                int u1 = u0 + 1;
                while (u1 < T + 1 - (ng - 1 - g) && (done + segs[u1 - 1].len) * ng < (long)(pos + 1) * (g + 1)) {
                    done += segs[u1 - 1].len;
                    u1++;
                }
                done += segs[u1 - 1].len;
                if (g == ng - 1)
                    u1 = T + 1;
                if (_apb_decode_attention(s, pos, segs + u0, u1 - u0, c, s->d_po[g], s->d_plse[g], tag))
                    rc = apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
                u0 = u1;
            }
            if (!rc && apb_insert_lse_merge(s->d_po, s->d_plse, ng, c->head_dim, s->d_o, s->d_lse, tag))
                rc = apb_fail(err, APB_E_RUNTIME, "submitting lse_merge failed");
            if (rc)
                break;
        } else if (_apb_decode_attention(s, pos, segs, T + 1, c, s->d_o, s->d_lse, tag)) {
            rc = apb_fail(err, APB_E_RUNTIME, "submitting attention failed");
            break;
        }
        rc = s->n_split > 1 ? _apb_post_attention_split(m, l, s, tag, err)
                            : _apb_post_attention(m, l, s->d_o, s->d_x, s->d_xn, tag, err);
    }
    free(segs);
    if (rc)
        return rc;
    s->n_decoded++;
    apb_task_tag tag = {-1, 0, 0};
    for (int i = 0, v0 = 0; s->n_split > 1 && i < s->n_split; v0 += apb_tile_cols(s->d_lg[i]), i++)
        if (apb_insert_logits_part(s->d_x, 0, m->final_norm, m->lm_head, s->d_lg[i], v0, c->norm_eps, tag))
            return apb_fail(err, APB_E_RUNTIME, "submitting logits failed");
    if ((s->n_split > 1 ? apb_insert_gather(s->d_lg, s->n_split, s->logits, 0, tag)
                        : apb_insert_logits(s->d_x, 0, 1, m->final_norm, m->lm_head, s->logits, c->norm_eps, tag)) ||
        apb_insert_sample(s->logits, 0, s->token, smp->temperature, smp->top_p, smp->seed,
                          (uint64_t)s->n_decoded, tag))
        return apb_fail(err, APB_E_RUNTIME, "submitting logits/sample failed");
    return APB_OK;
}

int apb_forward_logits(apb_model *m, const int32_t *ids, int n, int tile, int n_last, float *out,
                       apb_err *err)
{
    if (n_last <= 0 || n_last > n)
        return apb_fail(err, APB_E_USAGE, "n_last must be in [1, %d]", n);
    apb_seq s;
    int rc = _apb_seq_alloc(m, &s, ids, n, tile, 0, err);
    if (!rc)
        rc = _apb_prefill_layers(m, &s, err);
    int V = m->cfg.vocab_size;
    /* one logits tile per prompt tile that holds some of the last n_last rows */
    for (int t = 0; t < s.n_tiles && !rc; t++) {
        int r0 = t * tile, rows = apb_tile_rows(s.x[t]);
        int lo = n - n_last > r0 ? n - n_last : r0;
        if (lo >= r0 + rows)
            continue;
        int cnt = r0 + rows - lo;
        apb_handle lg = apb_tile_new(cnt, V, sizeof(float));
        if (apb_insert_logits(s.x[t], lo - r0, cnt, m->final_norm, m->lm_head, lg, m->cfg.norm_eps,
                              (apb_task_tag){-1, 0, 0}))
            rc = apb_fail(err, APB_E_RUNTIME, "submitting logits failed");
        else
            rc = apb_tile_read(lg, out + (size_t)(lo - (n - n_last)) * V,
                               sizeof(float) * (size_t)cnt * V, err);
        apb_handle_free(lg);
    }
    if (!rc)
        rc = apb_runtime_wait_all(err);
    if (s.x)
        apb_seq_free(m, &s);
    return rc;
}

/* ------------------------------------------------------------------ the hosts path, W = 1 */
static int _apb_full_layer(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err)
{
    int rc = _apb_pre_attention_hosts(m, hs, l, err);
    for (int r = 0; r < hs->opt.hosts && !rc; r++)
        rc = _apb_attend_host(m, hs, l, r, segs, 0, err);
    if (!rc)
        _apb_drop_anchor_kv(hs, l, 0);
    return rc;
}

const apb_method_desc apb_method_full = {
    .id = APB_METHOD_FULL, .flags = 0, .fixed_hosts = 1, .resolve = NULL, .layer = _apb_full_layer,
};
