/* SPDX-License-Identifier: MIT */
/**
 * @brief Pieces shared by the graph builders (not public): one section per step file of the
 * design card (split, compress, allgather, attention), the shared layer chain, and the method
 * descriptors (graph/methods/). See docs/DESIGN.md, "Where each step lives".
 */
#ifndef APB_GRAPH_INTERNAL_H
#define APB_GRAPH_INTERNAL_H

#include "graph/apb_graph.h"

#define _APB_TRY(call, what)                                                                      \
    do {                                                                                          \
        int _r = (call);                                                                          \
        if (_r)                                                                                   \
            return apb_fail(err, APB_E_RUNTIME, "submitting %s failed (%d)", what, _r);           \
    } while (0)

enum { _APB_ANCHOR_PREFIX = 16 }; /* BOS + system prompt tokens that open every anchor (APB) */

/* ------------------------------------------------------------------ methods (graph/methods/)
 * One descriptor per method; apb_method_desc_of() finds it (graph/methods/table.c). */
enum {
    APB_MF_ZIGZAG = 1 << 0,         /* host r owns the two chunks r and 2W-1-r (W > 1) */
    APB_MF_ANCHOR_ALL = 1 << 1,     /* host 0 holds the anchor too, chunks start after it, and its
                                     * anchor (the true context prefix) stays in the cache */
    APB_MF_BY_POSITION = 1 << 2,    /* mask coordinates are global positions (else rows of
                                     * [anchor | local]) */
    APB_MF_QUESTION_ANCHOR = 1 << 3,/* anchor = first 16 context tokens + question + context */
    APB_MF_HEAD_GROUPS = 1 << 4,    /* several attention tasks fill one o / lse tile (zeroed) */
    APB_MF_FUSED_QUESTION = 1 << 5, /* the question runs inside the prefill's layers */
    APB_MF_PASSING = 1 << 6,        /* compressed blocks passed to later hosts: --allgather nccl and
                                     * --compress retain apply */
    APB_MF_SHARED_ANCHOR = 1 << 7,  /* the anchors of hosts 1.. are the same rows seeing only
                                     * themselves, and the layer reads host hs->anchor_src's for
                                     * every later host when set (graph/methods/apb.c) */
};

/* Whether host r reads host hs->anchor_src's anchor tiles (apb_hseq.anchor_src > 0) instead of
 * computing its own: its own anchor tiles are then never written. */
static inline int _apb_anchor_shared(const apb_hseq *hs, int r)
{
    return hs->anchor_src > 0 && r > hs->anchor_src;
}
/* The host whose K/V tiles hold host r's tile u: r, or hs->anchor_src for a shared anchor tile. */
static inline const apb_host *_apb_kv_host(const apb_hseq *hs, int r, int u)
{
    return _apb_anchor_shared(hs, r) && u < hs->h[r].n_anchor_tiles ? &hs->h[hs->anchor_src] : &hs->h[r];
}
/* Host r's K/V tiles [t0, n_tiles) of layer l into k[], v[] (_apb_kv_host's). Returns the count. */
int _apb_host_kv_tiles(const apb_hseq *hs, int l, int r, int t0, apb_handle *k, apb_handle *v);

typedef struct apb_method_desc {
    apb_method id;                  /* its name: apb_method_name(id) (graph/method.c) */
    unsigned flags;                 /* APB_MF_* */
    int fixed_hosts;                /* > 0: always this many hosts, no anchor, no selection */
    /* Method part of apb_hosts_resolve, after the common checks (block = ceil(L / W)); NULL: none. */
    int (*resolve)(const apb_config *cfg, int L, int block, apb_hosts_opts *o, apb_err *err);
    /* Submits layer l of the prefill on every host (segs: scratch for _apb_segs_alloc segments). */
    int (*layer)(apb_model *m, apb_hseq *hs, int l, apb_attn_seg *segs, apb_err *err);
} apb_method_desc;

const apb_method_desc *apb_method_desc_of(apb_method id);

extern const apb_method_desc apb_method_full, apb_method_apb, apb_method_star, apb_method_spava,
    apb_method_ring, apb_method_zigzag, apb_method_ulysses;

/* ------------------------------------------------------------------ split (graph/split.c) */
int _apb_round_up(int x, int m);
/* The chunk arithmetic of the two-chunk methods (zigzag, Spava): `body` tokens after `base` cut
 * into 2W chunks; returns the chunk size. */
int _apb_split_chunk(int body, int W);
/* Host r's context ranges, [anchor | local] ids, tile geometry and tiles. */
int _apb_split_host(apb_model *m, apb_hseq *hs, int r, const int32_t *ctx, const int32_t *question,
                    apb_err *err);
/* Releases the anchors' K/V of layer l (kept: host 0's when keep_host0). */
void _apb_drop_anchor_kv(apb_hseq *hs, int l, int keep_host0);

/* ------------------------------------------------------------------ layer chain (graph/layer.c) */
/* Norm, QKV and RoPE of one tile whose first row has position pos0. */
int _apb_pre_attention(apb_model *m, int l, apb_handle x, apb_handle xn, apb_handle q, apb_handle k,
                       apb_handle v, int pos0, apb_task_tag tag, apb_err *err);
/* The same with mRoPE ids (a rows x 3 int32 tile) when mpos is not NULL. */
int _apb_pre_attention_m(apb_model *m, int l, apb_handle x, apb_handle xn, apb_handle q, apb_handle k,
                         apb_handle v, int pos0, apb_handle mpos, apb_task_tag tag, apb_err *err);
/* The same for every tile of every host (host order, tile order). */
int _apb_pre_attention_hosts(apb_model *m, apb_hseq *hs, int l, apb_err *err);
/* o-proj (+residual), norm, MLP (+residual). */
apb_layer_w _apb_layer_w(const apb_model *m, int l);
int _apb_fused_decode(void);
/* Element size of the prefill's GEMM-input activation tiles: the attention output (o) and the
 * normalized rows (xn). 2 (bf16) under APB_PREC_BF16, where the GEMMs round their input to bf16
 * anyway, so the producer writes what the GEMM reads (on the GPU: no fp32 round trip and no
 * conversion, cuDNN's output in place; rmsnorm writes what QKV and the MLP read); 4 otherwise.
 * Head groups keep fp32 o tiles (their tasks read-write their columns of a zeroed tile;
 * graph/split.c). APB_BF16_ACT=0 keeps both fp32 (comparisons; same logits, bitwise). */
int _apb_act_elem(void);
static inline int _apb_o_elem(void) { return _apb_act_elem(); }
static inline int _apb_xn_elem(void) { return _apb_act_elem(); }
int _apb_post_attention(apb_model *m, int l, apb_handle o, apb_handle x, apb_handle xn,
                        apb_task_tag tag, apb_err *err);
/* Under APB_PREC_BF16: compacts the n fp32 K/V tiles of a finished layer to bf16 (owned by the
 * rank of owner_host), releasing the fp32 tiles after their last reader: into one contiguous
 * *kc, *vc (tile u at rows crow0[u].., k[u] = v[u] = NULL), or with APB_KV_CONTIG=0 into one bf16
 * tile each (k[u], v[u] replaced, crow0[u] = -1). */
int _apb_compact_kv(apb_handle *k, apb_handle *v, int n, int owner_host, int layer, int prio, apb_handle *kc,
                    apb_handle *vc, int *crow0, apb_err *err);
/* Tile u of layer l's prompt cache as a segment of len rows (the caller sets coord0, causal and
 * min_q_coord): a slice of the compacted cache when the tile is in it, else its own tiles. */
apb_attn_seg _apb_cache_tile(const apb_handle *k, const apb_handle *v, const apb_handle *kc,
                             const apb_handle *vc, const int *crow0, int n_tiles, int l, int u, int len);
/* Appends s to segs[0..ns), merged into the last segment when it continues it (same buffers, next
 * rows, same visibility rule and, if causal, next coordinates); returns the new count. */
int _apb_seg_push(apb_attn_seg *segs, int ns, apb_attn_seg s);
/* The compaction's priority: above layer l's own tasks (n_layers - l). It reads each fp32 tile
 * once its writer is done, and the fp32 tile is released after its last reader: at the lowest
 * priority (0, before 2026-12-02) every compaction waited for the end of the prefill, so every
 * layer's fp32 K/V stayed in GPU memory (32 GiB at 128K tokens, Llama-3.1-8B shapes). */
static inline int _apb_compact_prio(const apb_config *c, int l) { return c->n_layers - l + 1; }
/* _apb_compact_kv of every host's layer-l tiles. */
int _apb_compact_layer(apb_hseq *hs, int l, int prio, apb_err *err);

/* ------------------------------------------------------------------ compress (graph/compress.c) */
/* Question mean of layer l: over rows [row0, row0 + n) of the tiles holding the question
 * (APB: host 1's anchor, possibly several tiles), or of one tile (Spava: the fused question). */
int _apb_compress_qmean_anchor(apb_model *m, apb_hseq *hs, int l, apb_handle *qbar, apb_err *err);
int _apb_compress_qmean(apb_model *m, apb_hseq *hs, int l, apb_handle q, int n, int owner,
                        apb_handle *qbar, apb_err *err);
/* Norm, QKV, retaining-head scores (on pre-RoPE q, k, v) into *score, then RoPE: tile t of host r. */
int _apb_compress_retain_tile(apb_model *m, apb_hseq *hs, int l, int r, int t, apb_handle *score,
                              apb_err *err);
/* Selects K rows of n tiles k[], v[] (rows before exclude_first excluded) into fresh ck, cv owned
 * by host r, by the question mean qbar or by per-row scores (when scores != NULL). */
int _apb_compress_select(apb_model *m, int l, int r, apb_handle qbar, const apb_handle *scores,
                         const apb_handle *k, const apb_handle *v, int n, int exclude_first, int K,
                         apb_handle *ck, apb_handle *cv, apb_err *err);

/* ------------------------------------------------------------------ allgather (graph/allgather.c) */
/* The compressed blocks of a layer on their way to later hosts. */
typedef struct apb_passing {
    apb_handle ck[64], cv[64];      /* per host, NULL: select-all (the whole block passes) */
    apb_handle gk[64], gv[64];      /* --allgather nccl: per GPU, every host's block */
    int passing;                    /* hosts r > 0 read the blocks of hosts 0..r-1 */
    int K;                          /* rows of a compressed block */
    int nccl, G;
} apb_passing;
/* --allgather nccl: one NCCL allgather task per GPU copies every compressed block to every GPU. */
int _apb_allgather_nccl(apb_model *m, apb_hseq *hs, int l, apb_passing *p, apb_handle qbar,
                        apb_err *err);
/* The passing segments host r reads (hosts 0..r-1): data dependencies on their compressed blocks,
 * their whole blocks (select-all), or the first r K rows of its GPU's gathered copy. */
int _apb_passing_segs(const apb_hseq *hs, int l, int r, const apb_passing *p, apb_attn_seg *segs);
/* Releases the passing blocks after their last reader. */
void _apb_passing_free(apb_passing *p, int W);

/* ------------------------------------------------------------------ attention (graph/attend.c) */
/* Named segments (apb_attn_seg): */
/* keys at coordinates coord0.. seen causally (own tiles, the cache of the last host) */
apb_attn_seg apb_seg_causal(apb_handle k, apb_handle v, int len, int coord0);
/* a passing block: seen whole, but only by query coordinates >= min_q_coord (not the anchor) */
apb_attn_seg apb_seg_passing(apb_handle k, apb_handle v, int len, int min_q_coord);
/* keys wholly in the queries' past: seen whole by every query (decoding over non-last hosts) */
apb_attn_seg apb_seg_past(apb_handle k, apb_handle v, int len);
/* Attention of every tile of host r (last tile first) over segs[0..npass) (the passing segments)
 * and its own tiles 0..t (causal), then o-proj and MLP. */
int _apb_attend_host(apb_model *m, apb_hseq *hs, int l, int r, apb_attn_seg *segs, int npass,
                     apb_err *err);
/* Segment scratch large enough for any attention task of hs. */
apb_attn_seg *_apb_segs_alloc(const apb_hseq *hs);
/* The question / decode pass on the last host, LSE-merged over every host's cache (slot s: 0 the
 * question, 1 one generated token): the layer-l steps, and the logits + sampling at the end. */
int _apb_tail_pre(apb_model *m, apb_hseq *hs, int s, int l, apb_err *err);
int _apb_tail_attend(apb_model *m, apb_hseq *hs, int s, int l, int rows, apb_attn_seg *segs,
                     apb_err *err);
int _apb_tail_end(apb_model *m, apb_hseq *hs, int s, int rows, const apb_sampling *smp,
                  uint64_t step, apb_err *err);
int _apb_tail(apb_model *m, apb_hseq *hs, int s, apb_handle ids, int rows, const apb_sampling *smp,
              uint64_t step, apb_err *err);

#endif
