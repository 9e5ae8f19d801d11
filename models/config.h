/* SPDX-License-Identifier: MIT */
/** @brief Model configuration: Hugging Face config.json (Llama, Qwen2 families) and shape presets. */
#ifndef APB_CONFIG_H
#define APB_CONFIG_H

#include "common/apb_error.h"

enum apb_arch { APB_ARCH_LLAMA = 0, APB_ARCH_QWEN2 = 1 };
enum apb_rope_scaling { APB_ROPE_NONE = 0, APB_ROPE_LLAMA3 = 1, APB_ROPE_LINEAR = 2 };

#define APB_MAX_EOS 8

typedef struct apb_config {
    char name[64];            /* preset name or directory basename */
    enum apb_arch arch;
    int dim;                  /* hidden_size */
    int n_layers;             /* num_hidden_layers */
    int n_heads;              /* num_attention_heads (query heads, H) */
    int n_kv_heads;           /* num_key_value_heads (Hk) */
    int head_dim;             /* d; head_dim field or dim / n_heads */
    int hidden_dim;           /* intermediate_size (SwiGLU) */
    int vocab_size;
    int max_pos;              /* max_position_embeddings */
    float rope_theta;
    float norm_eps;           /* rms_norm_eps */
    int tie_embeddings;       /* tie_word_embeddings */
    int qkv_bias;             /* Qwen2: q/k/v projections carry a bias (attention_bias for llama) */
    enum apb_rope_scaling rope_scaling;
    float rope_factor;        /* rope_scaling.factor */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;    /* rope_scaling.original_max_position_embeddings */
    int bos_id;               /* -1 when absent */
    int eos_ids[APB_MAX_EOS]; /* eos_token_id may be a list */
    int n_eos;
    /* mRoPE (Qwen2-VL / Qwen2.5-VL language model, model_type qwen2_vl / qwen2_5_vl): three position
     * ids per token (temporal, height, width); frequency pair j < head_dim/2 rotates by the
     * component c(j) = 0 for j < s0, 1 for j < s0 + s1, 2 otherwise (s = mrope_section, in pairs,
     * s0 + s1 + s2 = head_dim / 2). Text tokens carry three equal ids, which is plain RoPE. */
    int mrope;
    int mrope_section[3];
} apb_config;

/* Parses <dir>/config.json (and generation_config.json's eos list when present).
 * Every field is validated (type, range, consistency: dim = n_heads * head_dim unless head_dim is
 * given, n_heads % n_kv_heads == 0, ...); errors name the file and the field. */
int apb_config_load(const char *dir, apb_config *cfg, apb_err *err);

/* Same, from a JSON text in memory (used by the loader and the fuzzer). `what` names the source. */
int apb_config_parse(const char *json, size_t len, const char *what, apb_config *cfg, apb_err *err);

/* Exact shapes of known models, for --random-weights benchmarks:
 * "llama-3.1-8b", "qwen-2.5-14b", "yi-34b-200k", "llama-3-8b-1m", "smollm2-135m", the language
 * models of "qwen2.5-vl-3b", "qwen2.5-vl-7b" (mRoPE) and "internvl3-2b" (1-D RoPE), and the
 * unpublished test shapes "tiny" and "tiny-vl" (tiny with mRoPE). */
int apb_config_preset(const char *name, apb_config *cfg, apb_err *err);
const char *const *apb_config_preset_names(void); /* NULL-terminated */

/* Inverse frequencies for RoPE with the config's scaling rule: out[i], i < head_dim/2. */
void apb_config_rope_inv_freq(const apb_config *cfg, double *out);

/* Parameter count (for FLOP counts and memory estimates). */
long long apb_config_n_params(const apb_config *cfg);

#endif
