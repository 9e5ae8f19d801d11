/* SPDX-License-Identifier: MIT */
/**
 * @brief config.json parsing (Llama, Mistral, Qwen2), generation_config.json eos lists, presets,
 * RoPE inverse frequencies (llama3 and linear scaling) against an independent double computation,
 * parameter counts, and the error paths (code and message).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/config.h"

#include "tests/models/test_tmpdir.h"

TestSuite(cfg, .init = setup, .fini = teardown);

static void write_file(const char *name, const char *text)
{
    char p[PATH_MAX + 256];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

#define expect_err(rc, err, want_code, sub)                                                                  \
    do {                                                                                                     \
        cr_assert_eq((rc), (want_code), "status %d (want %d): %s", (rc), (want_code), (err).msg);           \
        cr_assert(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub));               \
    } while (0)

/* Parses `json` from memory as "config.json". */
static int parse(const char *json, apb_config *c, apb_err *err)
{
    return apb_config_parse(json, strlen(json), "config.json", c, err);
}

/* A valid Llama config with one field replaced: `field` is a "\"key\": value" fragment put first
 * (jansson rejects duplicate keys, so the default for that key is dropped). */
static const char *llama_fields[][2] = {
    {"model_type", "\"llama\""},
    {"architectures", "[\"LlamaForCausalLM\"]"},
    {"hidden_size", "4096"},
    {"intermediate_size", "14336"},
    {"num_attention_heads", "32"},
    {"num_key_value_heads", "8"},
    {"num_hidden_layers", "32"},
    {"max_position_embeddings", "131072"},
    {"vocab_size", "128256"},
    {"rms_norm_eps", "1e-05"},
    {"rope_theta", "500000.0"},
    {"bos_token_id", "128000"},
    {"eos_token_id", "[128001, 128008, 128009]"},
    {"hidden_act", "\"silu\""},
    {"tie_word_embeddings", "false"},
};

/* Builds the config with `key` set to `value` (NULL value: key removed). */
static const char *llama_with(const char *key, const char *value)
{
    static char buf[4096];
    size_t at = (size_t)snprintf(buf, sizeof buf, "{");
    int first = 1;
    for (size_t i = 0; i < sizeof llama_fields / sizeof llama_fields[0]; i++) {
        const char *v = llama_fields[i][1];
        if (key && strcmp(key, llama_fields[i][0]) == 0) {
            if (!value)
                continue;
            v = value;
            key = NULL; /* used */
        }
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s\"%s\": %s", first ? "" : ", ", llama_fields[i][0], v);
        first = 0;
    }
    if (key && value)
        at += (size_t)snprintf(buf + at, sizeof buf - at, ", \"%s\": %s", key, value);
    snprintf(buf + at, sizeof buf - at, "}");
    return buf;
}

/* ------------------------------------------------------------------ valid configs */

Test(cfg, llama_from_dir)
{
    write_file("config.json", llama_with("rope_scaling", "{\"factor\": 8.0, \"low_freq_factor\": 1.0, "
                                                         "\"high_freq_factor\": 4.0, "
                                                         "\"original_max_position_embeddings\": 8192, "
                                                         "\"rope_type\": \"llama3\"}"));
    apb_config c;
    apb_err err = {0};
    char dir[PATH_MAX + 2];
    snprintf(dir, sizeof dir, "%s/", tmp); /* trailing slash: name is still the basename */
    cr_assert_eq(apb_config_load(dir, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_str_eq(c.name, strrchr(tmp, '/') + 1);
    cr_assert_eq(c.arch, APB_ARCH_LLAMA);
    cr_assert_eq(c.dim, 4096);
    cr_assert_eq(c.n_layers, 32);
    cr_assert_eq(c.n_heads, 32);
    cr_assert_eq(c.n_kv_heads, 8);
    cr_assert_eq(c.head_dim, 128);
    cr_assert_eq(c.hidden_dim, 14336);
    cr_assert_eq(c.vocab_size, 128256);
    cr_assert_eq(c.max_pos, 131072);
    cr_assert_float_eq(c.rope_theta, 500000.0f, 0);
    cr_assert_float_eq(c.norm_eps, 1e-5f, 1e-12);
    cr_assert_eq(c.tie_embeddings, 0);
    cr_assert_eq(c.qkv_bias, 0);
    cr_assert_eq(c.rope_scaling, APB_ROPE_LLAMA3);
    cr_assert_float_eq(c.rope_factor, 8.0f, 0);
    cr_assert_float_eq(c.rope_low_freq_factor, 1.0f, 0);
    cr_assert_float_eq(c.rope_high_freq_factor, 4.0f, 0);
    cr_assert_eq(c.rope_orig_max_pos, 8192);
    cr_assert_eq(c.bos_id, 128000);
    cr_assert_eq(c.n_eos, 3);
    cr_assert_eq(c.eos_ids[0], 128001);
    cr_assert_eq(c.eos_ids[2], 128009);

    /* the same shapes as the preset */
    apb_config p;
    cr_assert_eq(apb_config_preset("llama-3.1-8b", &p, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), apb_config_n_params(&p));
}

Test(cfg, defaults)
{
    apb_config c;
    apb_err err = {0};
    const char *min = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                      "\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"vocab_size\": 100, "
                      "\"max_position_embeddings\": 256}";
    cr_assert_eq(parse(min, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_kv_heads, 4, "kv heads default to the query heads");
    cr_assert_eq(c.head_dim, 16);
    cr_assert_float_eq(c.rope_theta, 10000.0f, 0);
    cr_assert_float_eq(c.norm_eps, 1e-6f, 1e-12);
    cr_assert_eq(c.tie_embeddings, 0);
    cr_assert_eq(c.rope_scaling, APB_ROPE_NONE);
    cr_assert_eq(c.bos_id, -1);
    cr_assert_eq(c.n_eos, 0);
}

Test(cfg, qwen2_mistral_and_explicit_head_dim)
{
    apb_config c;
    apb_err err = {0};
    const char *qwen = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 896, "
                       "\"intermediate_size\": 4864, \"num_attention_heads\": 14, \"num_key_value_heads\": 2, "
                       "\"num_hidden_layers\": 24, \"vocab_size\": 151936, \"max_position_embeddings\": 32768, "
                       "\"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, "
                       "\"sliding_window\": 32768, \"use_sliding_window\": false, \"max_window_layers\": 21, "
                       "\"bos_token_id\": 151643, \"eos_token_id\": 151645, \"rope_scaling\": null, "
                       "\"hidden_act\": \"silu\", \"torch_dtype\": \"bfloat16\"}";
    cr_assert_eq(parse(qwen, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.arch, APB_ARCH_QWEN2);
    cr_assert_eq(c.qkv_bias, 1);
    cr_assert_eq(c.head_dim, 64);
    cr_assert_eq(c.tie_embeddings, 1);
    cr_assert_float_eq(c.rope_theta, 1e6f, 0);
    cr_assert_eq(c.n_eos, 1);
    cr_assert_eq(c.eos_ids[0], 151645);

    cr_assert_eq(parse(llama_with("model_type", "\"mistral\""), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.arch, APB_ARCH_LLAMA);
    cr_assert_eq(parse(llama_with("head_dim", "64"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.head_dim, 64, "an explicit head_dim wins over hidden_size / heads");
    cr_assert_eq(parse(llama_with("attention_bias", "true"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.qkv_bias, 1);
    cr_assert_eq(parse(llama_with("tie_word_embeddings", "true"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.tie_embeddings, 1);
    cr_assert_eq(parse(llama_with("rope_scaling", "{\"type\": \"linear\", \"factor\": 4}"), &c, &err), APB_OK, "%s",
                 err.msg);
    cr_assert_eq(c.rope_scaling, APB_ROPE_LINEAR);
    cr_assert_float_eq(c.rope_factor, 4.0f, 0);
    cr_assert_eq(parse(llama_with("eos_token_id", "7"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_eos, 1);
    cr_assert_eq(c.eos_ids[0], 7);
    cr_assert_eq(parse(llama_with("bos_token_id", "null"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.bos_id, -1);
}

Test(cfg, generation_config_replaces_eos)
{
    write_file("config.json", llama_with("eos_token_id", "128001"));
    write_file("generation_config.json", "{\"bos_token_id\": 128000, \"do_sample\": true, "
                                         "\"eos_token_id\": [128001, 128008, 128009], \"temperature\": 0.6}");
    apb_config c;
    apb_err err = {0};
    cr_assert_eq(apb_config_load(tmp, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_eos, 3);
    cr_assert_eq(c.eos_ids[1], 128008);

    write_file("generation_config.json", "{\"eos_token_id\": 5}");
    cr_assert_eq(apb_config_load(tmp, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_eos, 1);
    cr_assert_eq(c.eos_ids[0], 5);

    write_file("generation_config.json", "{\"temperature\": 0.6}");
    cr_assert_eq(apb_config_load(tmp, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_eos, 1, "no eos in generation_config.json: config's list stays");
    cr_assert_eq(c.eos_ids[0], 128001);

    write_file("generation_config.json", "{\"eos_token_id\": \"x\"}");
    expect_err(apb_config_load(tmp, &c, &err), err, APB_E_FORMAT, "generation_config.json: field 'eos_token_id'");
    write_file("generation_config.json", "{");
    expect_err(apb_config_load(tmp, &c, &err), err, APB_E_FORMAT, "generation_config.json: invalid JSON");
}

/* ------------------------------------------------------------------ RoPE */

/* Reference llama3 rule in double, written from the transformers source independently of the library. */
static void ref_llama3(double theta, int d, double factor, double low, double high, double orig, double *out)
{
    for (int i = 0; i < d / 2; i++) {
        double inv = 1.0 / pow(theta, (2.0 * i) / d);
        double wl = 2 * 3.14159265358979323846 / inv;
        double scaled = wl > orig / low ? inv / factor : inv;
        double sm = (orig / wl - low) / (high - low);
        double smoothed = (1 - sm) * scaled / factor + sm * scaled;
        int medium = !(wl < orig / high) && !(wl > orig / low);
        out[i] = medium ? smoothed : scaled;
    }
}

Test(cfg, rope_inv_freq_llama3)
{
    apb_config c;
    apb_err err = {0};
    cr_assert_eq(apb_config_preset("llama-3.1-8b", &c, &err), APB_OK);
    double got[64], want[64];
    apb_config_rope_inv_freq(&c, got);
    ref_llama3(500000.0, 128, 8.0, 1.0, 4.0, 8192.0, want);
    int n_low = 0, n_mid = 0, n_high = 0;
    for (int i = 0; i < 64; i++) {
        cr_assert(fabs(got[i] - want[i]) <= 1e-12 * want[i], "i=%d: %.17g vs %.17g", i, got[i], want[i]);
        double plain = pow(500000.0, -2.0 * i / 128);
        double wl = 2 * 3.14159265358979323846 / plain;
        n_high += wl < 8192.0 / 4;
        n_low += wl > 8192.0;
        n_mid += !(wl < 8192.0 / 4) && !(wl > 8192.0);
    }
    /* all three regimes are exercised */
    cr_assert(n_low > 0 && n_mid > 0 && n_high > 0, "%d %d %d", n_low, n_mid, n_high);
    cr_assert_eq(got[0], 1.0, "i = 0 is high frequency: unchanged");
    cr_assert(fabs(got[63] - pow(500000.0, -126.0 / 128) / 8) < 1e-18, "lowest frequency divided by factor");
}

Test(cfg, rope_inv_freq_plain_and_linear)
{
    apb_config c;
    apb_err err = {0};
    cr_assert_eq(apb_config_preset("smollm2-135m", &c, &err), APB_OK);
    double got[32];
    apb_config_rope_inv_freq(&c, got);
    for (int i = 0; i < 32; i++)
        cr_assert(fabs(got[i] - 1.0 / pow(100000.0, 2.0 * i / 64)) < 1e-15, "i=%d", i);
    c.rope_scaling = APB_ROPE_LINEAR;
    c.rope_factor = 4.0f;
    apb_config_rope_inv_freq(&c, got);
    for (int i = 0; i < 32; i++)
        cr_assert(fabs(got[i] - 0.25 / pow(100000.0, 2.0 * i / 64)) < 1e-15, "i=%d", i);
}

/* ------------------------------------------------------------------ presets */

Test(cfg, presets)
{
    apb_err err = {0};
    apb_config c;
    int n = 0;
    for (const char *const *p = apb_config_preset_names(); *p; p++, n++) {
        cr_assert_eq(apb_config_preset(*p, &c, &err), APB_OK, "%s: %s", *p, err.msg);
        cr_assert_str_eq(c.name, *p);
        cr_assert_eq(c.n_heads % c.n_kv_heads, 0, "%s", *p);
        cr_assert_eq(c.head_dim % 2, 0);
        cr_assert(c.n_eos >= 1 && c.bos_id >= 0 && c.bos_id < c.vocab_size);
    }
    cr_assert_eq(n, 10);
    /* published parameter counts */
    cr_assert_eq(apb_config_preset("llama-3.1-8b", &c, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), 8030261248LL);
    cr_assert_eq(apb_config_preset("smollm2-135m", &c, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), 134515008LL);
    cr_assert_eq(c.tie_embeddings, 1);
    cr_assert_eq(apb_config_preset("qwen-2.5-14b", &c, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), 14770033664LL);
    cr_assert_eq(c.qkv_bias, 1);
    cr_assert_eq(apb_config_preset("yi-34b-200k", &c, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), 34388917248LL);
    cr_assert_eq(c.max_pos, 200000);
    cr_assert_eq(apb_config_preset("llama-3-8b-1m", &c, &err), APB_OK);
    cr_assert_eq(c.max_pos, 1048576);
    cr_assert(fabs(c.rope_theta - 3580165449.0) < 1e3, "theta %.1f", (double)c.rope_theta);
    cr_assert_eq(c.rope_scaling, APB_ROPE_NONE);
    expect_err(apb_config_preset("gpt-2", &c, &err), err, APB_E_USAGE, "unknown model preset 'gpt-2'");
    /* Qwen2.5-VL-3B's language model has Qwen2.5-3B's shapes: 3085938688 parameters (3.09B) */
    cr_assert_eq(apb_config_preset("qwen2.5-vl-3b", &c, &err), APB_OK);
    cr_assert_eq(apb_config_n_params(&c), 3085938688LL);
    cr_assert(c.mrope && c.mrope_section[0] == 16 && c.mrope_section[1] == 24 && c.mrope_section[2] == 24);
    for (const char *const *p = apb_config_preset_names(); *p; p++) {
        cr_assert_eq(apb_config_preset(*p, &c, &err), APB_OK);
        if (c.mrope)
            cr_assert_eq(c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2], c.head_dim / 2, "%s", *p);
    }
    cr_assert_eq(apb_config_preset("internvl3-2b", &c, &err), APB_OK);
    cr_assert_eq(c.mrope, 0);
}

/* ------------------------------------------------------------------ mRoPE (qwen2_vl, qwen2_5_vl) */

/* Qwen2.5-VL-3B-Instruct's config.json, text fields at the top level (transformers < 4.50) */
#define QWEN25VL_FLAT                                                                                        \
    "{\"model_type\": \"qwen2_5_vl\", \"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"], "          \
    "\"hidden_size\": 2048, \"intermediate_size\": 11008, \"num_attention_heads\": 16, "                     \
    "\"num_key_value_heads\": 2, \"num_hidden_layers\": 36, \"max_position_embeddings\": 128000, "           \
    "\"vocab_size\": 151936, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"hidden_act\": \"silu\", "  \
    "\"tie_word_embeddings\": true, \"use_sliding_window\": false, \"sliding_window\": 32768, "              \
    "\"bos_token_id\": 151643, \"eos_token_id\": 151645, \"vision_start_token_id\": 151652, "                \
    "\"vision_config\": {\"depth\": 32, \"hidden_size\": 1280, \"spatial_merge_size\": 2, "                  \
    "\"tokens_per_second\": 2}, "                                                                            \
    "\"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}}"

Test(cfg, qwen2_5_vl_mrope)
{
    apb_err err = {0};
    apb_config c, p;
    cr_assert_eq(parse(QWEN25VL_FLAT, &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_config_preset("qwen2.5-vl-3b", &p, &err), APB_OK);
    cr_assert_eq(c.arch, APB_ARCH_QWEN2);
    cr_assert_eq(c.qkv_bias, 1);
    cr_assert_eq(c.mrope, 1);
    cr_assert(c.mrope_section[0] == 16 && c.mrope_section[1] == 24 && c.mrope_section[2] == 24);
    cr_assert_eq(c.rope_scaling, APB_ROPE_NONE);
    cr_assert(c.dim == p.dim && c.n_layers == p.n_layers && c.n_heads == p.n_heads &&
              c.n_kv_heads == p.n_kv_heads && c.head_dim == p.head_dim && c.hidden_dim == p.hidden_dim &&
              c.vocab_size == p.vocab_size && c.tie_embeddings == p.tie_embeddings);

    /* transformers >= 4.50: the text model's fields under text_config, rope_type default */
    const char *nested =
        "{\"model_type\": \"qwen2_vl\", \"vocab_size\": 151936, \"tie_word_embeddings\": false, "
        "\"text_config\": {\"model_type\": \"qwen2_vl_text\", \"hidden_size\": 1536, \"intermediate_size\": 8960, "
        "\"num_attention_heads\": 12, \"num_key_value_heads\": 2, \"num_hidden_layers\": 28, "
        "\"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, "
        "\"rope_scaling\": {\"rope_type\": \"default\", \"type\": \"default\", \"mrope_section\": [16, 24, 24]}}}";
    cr_assert_eq(parse(nested, &c, &err), APB_OK, "%s", err.msg);
    cr_assert(c.dim == 1536 && c.n_layers == 28 && c.head_dim == 128 && c.vocab_size == 151936 && c.mrope == 1);
    cr_assert_str_eq(c.name, "qwen2_vl");

    /* refusals */
    expect_err(parse("{\"model_type\": \"qwen2_5_vl\", \"hidden_size\": 2048, \"intermediate_size\": 11008, "
                     "\"num_attention_heads\": 16, \"num_hidden_layers\": 2, \"max_position_embeddings\": 128, "
                     "\"vocab_size\": 100}", &c, &err),
               err, APB_E_MODEL, "needs rope_scaling.mrope_section");
    char buf[4096];
    const char *bad[][2] = {
        {"[16, 24, 23]", "sums to 63, not head_dim / 2 = 64"},
        {"[16, 24]", "must be a list of 3 integers"},
        {"[16, -1, 24]", "mrope_section[1] must be an integer"},
        {"\"x\"", "must be a list of 3 integers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "%s", QWEN25VL_FLAT);
        char *ms = strstr(buf, "[16, 24, 24]");
        cr_assert(ms);
        char tail[1024];
        snprintf(tail, sizeof tail, "%s", ms + strlen("[16, 24, 24]"));
        snprintf(ms, sizeof buf - (size_t)(ms - buf), "%s%s", bad[i][0], tail);
        expect_err(parse(buf, &c, &err), err, APB_E_FORMAT, bad[i][1]);
    }
    snprintf(buf, sizeof buf, "%s", QWEN25VL_FLAT);
    memcpy(strstr(buf, "\"mrope\""), "\"yarn\" ", 7);
    expect_err(parse(buf, &c, &err), err, APB_E_MODEL, "rope_scaling type 'yarn' with mRoPE is not supported");
    expect_err(parse("{\"model_type\": \"qwen2_5_vl\", \"text_config\": 3}", &c, &err), err, APB_E_FORMAT,
               "'text_config' must be an object");
    expect_err(parse("{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 64, "
                     "\"num_attention_heads\": 4, \"num_hidden_layers\": 1, \"max_position_embeddings\": 128, "
                     "\"vocab_size\": 100, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}}",
                     &c, &err),
               err, APB_E_MODEL, "qwen2_vl / qwen2_5_vl only");
    snprintf(buf, sizeof buf, "%s", QWEN25VL_FLAT);
    char *ms = strstr(buf, "]}}");
    memcpy(ms, "], \"mrope_interleaved\": true}}", strlen("], \"mrope_interleaved\": true}}") + 1);
    expect_err(parse(buf, &c, &err), err, APB_E_MODEL, "mrope_interleaved");
}

/* ------------------------------------------------------------------ errors */

Test(cfg, bad_json)
{
    apb_config c;
    apb_err err = {0};
    expect_err(parse("{\"model_type\": \"llama\",", &c, &err), err, APB_E_FORMAT, "config.json: invalid JSON");
    expect_err(parse("[1]", &c, &err), err, APB_E_FORMAT, "not an object");
    expect_err(apb_config_load(tmp, &c, &err), err, APB_E_IO, "config.json");
}

Test(cfg, missing_and_mistyped_fields)
{
    apb_config c;
    apb_err err = {0};
    expect_err(parse(llama_with("hidden_size", NULL), &c, &err), err, APB_E_FORMAT,
               "config.json: missing field 'hidden_size'");
    expect_err(parse(llama_with("model_type", NULL), &c, &err), err, APB_E_FORMAT, "missing field 'model_type'");
    expect_err(parse(llama_with("hidden_size", "\"4096\""), &c, &err), err, APB_E_FORMAT,
               "field 'hidden_size' must be an integer, not a string");
    expect_err(parse(llama_with("num_hidden_layers", "32.5"), &c, &err), err, APB_E_FORMAT,
               "field 'num_hidden_layers' must be an integer");
    expect_err(parse(llama_with("vocab_size", "-1"), &c, &err), err, APB_E_FORMAT, "field 'vocab_size' = -1");
    expect_err(parse(llama_with("hidden_size", "1000000"), &c, &err), err, APB_E_FORMAT, "out of range");
    expect_err(parse(llama_with("num_hidden_layers", "0"), &c, &err), err, APB_E_FORMAT, "num_hidden_layers");
    expect_err(parse(llama_with("vocab_size", "99999999"), &c, &err), err, APB_E_FORMAT, "vocab_size");
    expect_err(parse(llama_with("rope_theta", "-5"), &c, &err), err, APB_E_FORMAT, "rope_theta");
    expect_err(parse(llama_with("rms_norm_eps", "\"small\""), &c, &err), err, APB_E_FORMAT, "rms_norm_eps");
    expect_err(parse(llama_with("tie_word_embeddings", "1"), &c, &err), err, APB_E_FORMAT,
               "'tie_word_embeddings' must be a boolean");
    expect_err(parse(llama_with("architectures", "\"LlamaForCausalLM\""), &c, &err), err, APB_E_FORMAT,
               "architectures");
    expect_err(parse(llama_with("bos_token_id", "128256"), &c, &err), err, APB_E_FORMAT, "bos_token_id");
}

Test(cfg, inconsistent_heads)
{
    apb_config c;
    apb_err err = {0};
    expect_err(parse(llama_with("num_key_value_heads", "5"), &c, &err), err, APB_E_FORMAT,
               "config.json: field 'num_key_value_heads' = 5 does not divide num_attention_heads = 32");
    expect_err(parse(llama_with("num_attention_heads", "24"), &c, &err), err, APB_E_FORMAT,
               "field 'hidden_size' = 4096 is not divisible by num_attention_heads = 24");
    expect_err(parse(llama_with("head_dim", "127"), &c, &err), err, APB_E_FORMAT, "head_dim = 127 must be even");
}

Test(cfg, unsupported)
{
    apb_config c;
    apb_err err = {0};
    expect_err(parse(llama_with("model_type", "\"gpt2\""), &c, &err), err, APB_E_MODEL,
               "unsupported model_type 'gpt2'");
    expect_err(parse(llama_with("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}"), &c, &err), err,
               APB_E_MODEL, "unsupported rope_scaling type 'yarn'");
    expect_err(parse(llama_with("rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}"), &c, &err), err,
               APB_E_MODEL, "'dynamic'");
    expect_err(parse(llama_with("rope_scaling", "{\"factor\": 2.0}"), &c, &err), err, APB_E_FORMAT, "rope_type");
    expect_err(parse(llama_with("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}"), &c, &err), err,
               APB_E_FORMAT, "rope_scaling: missing field 'low_freq_factor'");
    expect_err(parse(llama_with("rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 0}"), &c, &err), err,
               APB_E_FORMAT, "rope_scaling: field 'factor'");
    expect_err(parse(llama_with("hidden_act", "\"gelu\""), &c, &err), err, APB_E_MODEL, "hidden_act 'gelu'");
    expect_err(parse(llama_with("mlp_bias", "true"), &c, &err), err, APB_E_MODEL, "mlp_bias");
    expect_err(parse(llama_with("sliding_window", "4096"), &c, &err), err, APB_E_MODEL, "sliding_window = 4096");
    cr_assert_eq(parse(llama_with("sliding_window", "null"), &c, &err), APB_OK, "%s", err.msg);
}

Test(cfg, eos_lists)
{
    apb_config c;
    apb_err err = {0};
    cr_assert_eq(parse(llama_with("eos_token_id", "[1, 2, 3, 4, 5, 6, 7, 8]"), &c, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(c.n_eos, 8);
    cr_assert_eq(c.eos_ids[7], 8);
    expect_err(parse(llama_with("eos_token_id", "[1, 2, 3, 4, 5, 6, 7, 8, 9]"), &c, &err), err, APB_E_FORMAT,
               "9 entries");
    expect_err(parse(llama_with("eos_token_id", "[]"), &c, &err), err, APB_E_FORMAT, "0 entries");
    expect_err(parse(llama_with("eos_token_id", "[1, \"2\"]"), &c, &err), err, APB_E_FORMAT, "entry 1");
    expect_err(parse(llama_with("eos_token_id", "[1, 200000]"), &c, &err), err, APB_E_FORMAT,
               "'eos_token_id' = 200000 is out of range");
}
