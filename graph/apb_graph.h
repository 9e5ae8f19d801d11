/* SPDX-License-Identifier: MIT */
/**
 * @brief Task graphs of a transformer forward pass, built from apb_insert_* calls only.
 *
 * Data flow of a prefill (one host, `full` method), per token tile t (rows [t*T, (t+1)*T)):
 *
 *   ids[t] -embed-> x[t] -rmsnorm-> xn[t] -qkv-> q[t], k[l][t], v[l][t] -rope-> (in place)
 *   q[t], k[l][0..t], v[l][0..t] -attention-> o[t], lse[t] -linear(+x)-> x[t]
 *   x[t] -rmsnorm-> xn[t] -mlp(+x)-> x[t]                      ... next layer
 *   x[last] -logits-> logits -sample-> token
 *
 * Every arrow is a StarPU data dependency; nothing waits between layers, so tile t of layer l+1
 * runs as soon as its own inputs are ready while later tiles of layer l still compute.
 */
#ifndef APB_GRAPH_H
#define APB_GRAPH_H

#include <stdint.h>

#include "codelets/apb_codelets.h"
#include "models/config.h"
#include "models/embeds.h"
#include "models/tokenizer.h"
#include "models/weights.h"

typedef struct apb_layer_handles {
    apb_handle attn_norm, wq, wk, wv, bq, bk, bv, wo, mlp_norm, w_gate, w_up, w_down;
} apb_layer_handles;

typedef struct apb_model {
    apb_config cfg;
    apb_weights w;
    apb_tokenizer *tok;            /* NULL for --random-weights runs */
    /* handles, registered once, read-only (apb_model_register) */
    apb_handle embed, final_norm, lm_head, inv_freq;
    apb_layer_handles *layers;     /* (n_layers) */
    float *inv_freq_data;          /* (head_dim / 2) */
    int registered;
    /* Locret retaining heads (optional, apb_model_load_retain) */
    int retain_hidden;             /* fc1 rows; 0 when not loaded */
    float **fc1, **fc2;            /* (n_layers) (hidden x (H + 2 Hk) d), (Hk x hidden) */
    apb_handle *h_fc1, *h_fc2;
    /* bf16 copies of the large matrices (APB_PREC_BF16), owned */
    void **bf16_bufs;
    int n_bf16;
} apb_model;

/* Loads config.json, weights and tokenizer.json from a Hugging Face directory. */
int apb_model_load(const char *dir, apb_model *m, apb_err *err);
/* Preset shapes with random weights (no tokenizer). */
int apb_model_random(const char *preset, uint64_t seed, apb_model *m, apb_err *err);
/* Loads Locret retaining-head weights (per layer: tensors whose names hold "layers.<l>." and
 * "fc1" / "fc2", HF Linear layout, F32/F16/BF16) from a safetensors file, shapes checked. */
int apb_model_load_retain(apb_model *m, const char *path, apb_err *err);
/* The default retaining heads of a model directory DIR whose last component is NAME: the first
 * file that exists of DIR/retain_heads.safetensors, <source tree>/models/retain/NAME.safetensors
 * (the heads the repository ships, tools/train_retain.py) and <pkgdatadir>/retain/NAME.safetensors
 * (installed); its path into out[n]. APB_E_IO naming every path looked for when none exists. */
int apb_retain_default_path(const char *model_dir, char *out, size_t n, apb_err *err);
/* Registers the weights with StarPU (after apb_runtime_init). */
int apb_model_register(apb_model *m, apb_err *err);
void apb_model_free(apb_model *m);   /* unregisters (if registered) and frees */

/* One host's sequence: prompt tiles and the KV cache of every layer. */
typedef struct apb_seq {
    int n_prompt;                  /* tokens prefilled */
    int tile;                      /* rows per tile */
    int n_tiles;
    int cap_decode;                /* rows reserved for generated tokens */
    int n_decoded;                 /* generated tokens already in the cache */
    int32_t *ids;                  /* (n_prompt) host copy, registered per tile */
    apb_handle *ids_t;             /* (n_tiles) */
    apb_handle *x, *xn, *q, *o, *lse; /* (n_tiles) activations, reused by every layer */
    apb_handle *k, *v;             /* (n_layers * n_tiles) KV cache of the prompt (NULL once compacted) */
    apb_handle *kc, *vc;           /* (n_layers) the compacted bf16 cache of a finished layer, or NULL */
    int *crow0;                    /* (n_layers * n_tiles) tile u's first row in it, -1: not in it */
    apb_handle *kd, *vd;           /* (n_layers) decode KV cache, cap_decode rows */
    apb_handle d_x, d_xn, d_q, d_k, d_v, d_o, d_lse; /* one-token decode activations */
    apb_handle logits;             /* (1 x vocab) */
    apb_handle token;              /* (1 x 1) int32, the last sampled token */
    int n_split;                   /* decode MLP / LM head in this many row blocks (apb_decode.h) */
    apb_handle d_z[8], d_lg[8];    /* their outputs: (1 x dim) MLP parts, (1 x ~vocab/n) logits */
    apb_handle d_po[8], d_plse[8]; /* decode attention over n_split groups of the cache (long contexts) */
} apb_seq;

typedef struct apb_sampling {
    float temperature;             /* <= 0: greedy */
    float top_p;
    uint64_t seed;
} apb_sampling;

/* Submits the full-attention prefill of ids[0..n) and the sampling of the next token into
 * seq->token. Returns without waiting. */
int apb_prefill_full(apb_model *m, apb_seq *seq, const int32_t *ids, int n, int tile, int cap_decode,
                     const apb_sampling *smp, apb_err *err);
/* Submits one decode step: the token in seq->token is embedded at position n_prompt + n_decoded,
 * attends to the whole cache, and the next token is sampled into seq->token. */
int apb_decode_step(apb_model *m, apb_seq *seq, const apb_sampling *smp, apb_err *err);
void apb_seq_free(apb_model *m, apb_seq *seq);

/* Prefill-only variant for tests and benches: logits of rows [n - n_last, n) into out. */
int apb_forward_logits(apb_model *m, const int32_t *ids, int n, int tile, int n_last, float *out,
                       apb_err *err);

/* ------------------------------------------------------------------ sequence-parallel methods
 * W hosts each own a block of the context; see docs/DESIGN.md and ../shared/APB_SPEC.md.
 *   full : one host, exact causal attention (the graph above)
 *   apb  : anchor (first 16 context tokens + question + context) on hosts r > 0, query-aware
 *          compression of each block, passing block of previous hosts, APB mask
 *   spava: anchor = the first A context tokens on every host, 2 virtual hosts per host (zigzag
 *          chunks r and 2W-1-r after the anchor), query-aware selection per chunk, passing
 *          P1/P2, and the question fused into the same pass (first answer token from it)
 *   star : anchor = the whole first block, no passing block
 *   ring : exact; each host attends to its own block (causal) and to every previous host's block
 *          (non-causal) as separate partial tasks, merged through their log-sum-exp
 *   zigzag: ring with balanced causal work: the context is cut into 2W chunks and host r owns
 *          chunks r and 2W-1-r; partials are causal by global position
 *   ulysses: exact; hosts own contiguous blocks for the dense parts, and host g computes the
 *          attention of KV-head group g (Hk/W KV heads and their query heads) for every token
 *          (the all-to-all over heads is the data dependency q[t] -> every host's attention task)
 * The question is then prefilled as a second pass and every generated token attends to every
 * host's cache through LSE-merged partial results (non-last hosts non-causally). */
typedef enum apb_method {
    APB_METHOD_FULL = 0, APB_METHOD_APB = 1, APB_METHOD_STAR = 2, APB_METHOD_RING = 3,
    APB_METHOD_ZIGZAG = 4, APB_METHOD_ULYSSES = 5, APB_METHOD_SPAVA = 6
} apb_method;

int apb_method_parse(const char *name, apb_method *m, apb_err *err);
const char *apb_method_name(apb_method m);

/* Placement of hosts on workers (graph/placement.c). */
typedef enum apb_placement { APB_PLACE_FREE = 0, APB_PLACE_PINNED = 1 } apb_placement;
/* How APB's compressed blocks reach the later hosts: StarPU data dependencies (StarPU copies each
 * block to the GPUs / ranks that read it), or one NCCL allgather task per GPU and layer. */
enum { APB_ALLGATHER_STARPU = 0, APB_ALLGATHER_NCCL = 1 };
int apb_allgather_parse(const char *name, int *mode, apb_err *err);
/* Where APB's max-pool of the selection scores (kernel 5) runs on hosts r > 0: inside the local block
 * only (block, the default), or over the host's whole [anchor | local] sequence before the anchor
 * positions are excluded, as thunlp/APB does (reference: the first local tokens can take the last
 * anchor tokens' scores). Host 0 has no anchor: both rules are the same there. */
enum { APB_POOL_REFERENCE = 0, APB_POOL_BLOCK = 1 }; /* reference: the default (zero) */
int apb_pool_parse(const char *name, int *mode, apb_err *err);
/* Spava, a chunk shorter than the selection size K: the whole chunk is passed (whole, the default:
 * the default K is clamped to the chunk), or min(K, 128 floor(chunk / 128)) selected rows, as
 * thunlp/APB's Spava does (reference; 0 rows when the chunk is shorter than 128). */
enum { APB_SHORT_WHOLE = 0, APB_SHORT_REFERENCE = 1 };
int apb_short_chunk_parse(const char *name, int *mode, apb_err *err);
int apb_placement_parse(const char *name, apb_placement *p, apb_err *err);
/* Maps hosts 0..hosts-1 to workers for every task submitted afterwards. */
int apb_place_hosts(apb_placement p, int hosts, apb_err *err);

typedef struct apb_hosts_opts {
    apb_method method;
    int hosts;                     /* W >= 1 */
    int anchor;                    /* A; -1 = default (L/32 rounded up to 64, below the block) */
    int select;                    /* K; -1 = default (L/64 rounded up to 64, fitting the block) */
    int tile;                      /* rows per tile */
    int retain;                    /* apb: compress with the model's retaining heads (else query-aware) */
    apb_placement placement;       /* free (default) or pinned hosts */
    int allgather;                 /* apb: APB_ALLGATHER_STARPU (default) or APB_ALLGATHER_NCCL */
    int pool;                      /* apb: APB_POOL_REFERENCE (default) or APB_POOL_BLOCK;
                                      * other methods ignore it */
    int short_chunk;               /* spava: APB_SHORT_WHOLE (default) or APB_SHORT_REFERENCE */
    /* --embeds: the context rows come from this file (models/embeds.h) instead of token ids:
     * ctx[i] = i indexes its rows, its position ids drive mRoPE (when the model has it), and the
     * question and generated tokens continue at its next_pos. NULL: token ids. */
    const apb_embeds *embeds;
    /* Measurement only (bench/prefill --question-share): wait for the context layers before the
     * question pass is submitted and record both phases' times (apb_hseq.t_context_s,
     * t_question_s). The barrier removes the overlap of the pass with the last layers, so its
     * share is an upper bound. Methods whose question runs inside the prefill (Spava) ignore it. */
    int time_question;
} apb_hosts_opts;

typedef struct apb_host {
    int a, n;                      /* anchor rows, local rows (all ranges) */
    int n_ranges;                  /* 1, or 2 for zigzag */
    int range_pos[2], range_len[2];/* context ranges owned (global positions) */
    int range_ntiles[2];           /* tiles of each range (after the anchor tiles) */
    int n_tiles, n_anchor_tiles;   /* tiles: [anchor tiles | local tiles] */
    int32_t *ids;                  /* (a + n) */
    int *rows, *pos0, *coord0;     /* per tile */
    apb_handle *ids_t, *x, *xn, *q, *o, *lse; /* per tile */
    apb_handle *k, *v;             /* (n_layers * n_tiles) (NULL once compacted) */
    apb_handle *kc, *vc;           /* (n_layers) the compacted bf16 cache of a finished layer, or NULL */
    int *crow0;                    /* (n_layers * n_tiles) tile u's first row in it, -1: not in it */
    int32_t *mpos;                 /* --embeds: (a + n) x 3 position ids from the file, else NULL */
    apb_handle *mpos_t;            /* (n_tiles) their tiles */
} apb_host;

typedef struct apb_hseq {
    apb_hosts_opts opt;            /* resolved (defaults applied) */
    int L, nq, block;              /* context tokens, question tokens, block size */
    int q_row0, q_rows;            /* question rows inside the anchor of hosts r > 0 */
    apb_host *h;                   /* (W) */
    /* question pass and decoding, owned by the last host */
    int cap, n_cached;             /* decode-cache rows, rows used (question + generated) */
    apb_handle *kd, *vd;           /* (n_layers) (cap x Hk*d) */
    int32_t *q_ids;
    apb_handle q_ids_t;
    apb_handle t_x[2], t_xn[2], t_q[2], t_k[2], t_v[2], t_o[2]; /* [0]: question rows, [1]: 1 row */
    apb_handle *t_po[2], *t_pl[2]; /* per-host partial o / lse */
    apb_handle logits, token;
    apb_handle ctx_table;          /* --embeds: the file's rows (L x dim), the context's embed table */
    int anchor_src;                /* > 0: the host whose anchor (computed once) every later host
                                    * reads instead of computing its own identical one; 0: none */
    int rope_delta;                /* --embeds: RoPE position of question/decode row = coordinate + delta */
    apb_handle ag_order[64];       /* --allgather nccl: per GPU, a token every collective of that
                                    * GPU accesses RW, so it issues them in layer order */
    double t_context_s, t_question_s; /* opt.time_question: context layers, then the question pass
                                       * up to the first token (both waited for); else 0 */
} apb_hseq;

/* Checks and resolves the options for L context and nq question tokens (defaults applied),
 * with a message for every impossible setting. */
int apb_hosts_resolve(const apb_config *cfg, int L, int nq, int max_new, apb_hosts_opts *o, apb_err *err);
/* Submits the prefill of the context on W hosts, then the question pass, and the sampling of the
 * first answer token into hs->token. */
int apb_prefill_hosts(apb_model *m, apb_hseq *hs, const int32_t *ctx, int L, const int32_t *question,
                      int nq, int max_new, const apb_hosts_opts *opt, const apb_sampling *smp,
                      apb_err *err);
/* One decode step (the token in hs->token), LSE-merged over the hosts' caches. */
int apb_decode_hosts(apb_model *m, apb_hseq *hs, const apb_sampling *smp, apb_err *err);
/* Logits (vocab floats) of the last question row after apb_prefill_hosts (blocks until ready). */
int apb_hosts_read_logits(apb_hseq *hs, float *out, size_t n, apb_err *err);
void apb_hseq_free(apb_model *m, apb_hseq *hs);

/* Bytes of activations and KV cache a run will allocate (weights excluded), for the check made
 * before any work starts. o must be resolved (apb_hosts_resolve); full runs pass hosts = 1.
 * kv_bf16: the prompt's KV cache is compacted to bf16 after each layer (APB_PREC_BF16); two
 * layers are counted in fp32 (the one being written, the one being compacted).
 * kv_cache (may be NULL) receives the part that is the KV cache of all layers (what a GPU memory
 * limit lets StarPU evict to host memory once a layer is done). */
double apb_run_memory_estimate(const apb_config *cfg, int L, int nq, int max_new,
                               const apb_hosts_opts *o, int kv_bf16, double *kv_cache);

#endif
