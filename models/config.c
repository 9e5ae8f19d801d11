/* SPDX-License-Identifier: MIT */
/**
 * @brief Model configuration: Hugging Face config.json (Llama, Mistral, Qwen2 families), shape
 * presets, RoPE inverse frequencies (with the llama3 and linear scaling rules) and parameter counts.
 *
 * Every field is type- and range-checked; an error names the file and the field. Unsupported but
 * well-formed features (other architectures, yarn / dynamic RoPE, sliding windows, MLP biases) are
 * APB_E_MODEL so that a model is never run with silently wrong math.
 */
#include <errno.h>
#include <jansson.h>

#include "common/apb_json.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/config.h"

/* Sanity bounds: far above any released model, low enough that products stay in range. */
#define _APB_MAX_DIM 65536
#define _APB_MAX_LAYERS 1024
#define _APB_MAX_HEADS 1024
#define _APB_MAX_HEAD_DIM 1024
#define _APB_MAX_HIDDEN (1 << 20)
#define _APB_MAX_VOCAB (1 << 22)      /* 4M */
#define _APB_MAX_POS (1 << 28)        /* 268M positions */
#define _APB_MAX_CONFIG_BYTES (1 << 24)

#define _APB_PI 3.14159265358979323846

/* Integer field in [lo, hi]. Absent or null: `def` when !required, else an error. */
static int _apb_int(const json_t *o, const char *what, const char *key, int required, long long lo,
                    long long hi, int def, int *out, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        if (required)
            return apb_fail(err, APB_E_FORMAT, "%s: missing field '%s'", what, key);
        *out = def;
        return APB_OK;
    }
    if (!json_is_integer(j))
        return apb_fail(err, APB_E_FORMAT, "%s: field '%s' must be an integer, not %s", what, key,
                        apb_json_type_name(j));
    long long v = json_integer_value(j);
    if (v < lo || v > hi)
        return apb_fail(err, APB_E_FORMAT, "%s: field '%s' = %lld is out of range [%lld, %lld]", what, key, v,
                        lo, hi);
    *out = (int)v;
    return APB_OK;
}

/* Number field (integer or real) in (lo, hi], finite. Absent or null: def. */
static int _apb_num(const json_t *o, const char *what, const char *key, int required, double lo, double hi,
                    double def, double *out, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        if (required)
            return apb_fail(err, APB_E_FORMAT, "%s: missing field '%s'", what, key);
        *out = def;
        return APB_OK;
    }
    if (!json_is_number(j))
        return apb_fail(err, APB_E_FORMAT, "%s: field '%s' must be a number, not %s", what, key,
                        apb_json_type_name(j));
    double v = json_number_value(j);
    if (!isfinite(v) || !(v > lo) || v > hi)
        return apb_fail(err, APB_E_FORMAT, "%s: field '%s' = %g is out of range (%g, %g]", what, key, v, lo, hi);
    *out = v;
    return APB_OK;
}

/* Boolean field. Absent or null: def. */
static int _apb_bool(const json_t *o, const char *what, const char *key, int def, int *out, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        *out = def;
        return APB_OK;
    }
    if (!json_is_boolean(j))
        return apb_fail(err, APB_E_FORMAT, "%s: field '%s' must be a boolean, not %s", what, key,
                        apb_json_type_name(j));
    *out = json_is_true(j);
    return APB_OK;
}

/* eos_token_id: an integer or a list of 1..APB_MAX_EOS integers, each in [0, vocab). */
static int _apb_eos(const json_t *j, const char *what, int vocab, int *ids, int *n, apb_err *err)
{
    size_t cnt = json_is_array(j) ? json_array_size(j) : 1;
    if (!json_is_array(j) && !json_is_integer(j))
        return apb_fail(err, APB_E_FORMAT, "%s: field 'eos_token_id' must be an integer or a list, not %s", what,
                        apb_json_type_name(j));
    if (cnt < 1 || cnt > APB_MAX_EOS)
        return apb_fail(err, APB_E_FORMAT, "%s: field 'eos_token_id' has %zu entries (1 to %d supported)", what,
                        cnt, APB_MAX_EOS);
    for (size_t i = 0; i < cnt; i++) {
        const json_t *e = json_is_array(j) ? json_array_get(j, i) : j;
        if (!json_is_integer(e))
            return apb_fail(err, APB_E_FORMAT, "%s: field 'eos_token_id' entry %zu must be an integer, not %s", what,
                            i, apb_json_type_name(e));
        long long v = json_integer_value(e);
        if (v < 0 || v >= vocab)
            return apb_fail(err, APB_E_FORMAT, "%s: field 'eos_token_id' = %lld is out of range [0, %d)", what, v,
                            vocab);
        ids[i] = (int)v;
    }
    *n = (int)cnt;
    return APB_OK;
}

/* rope_scaling.mrope_section of a qwen2_vl / qwen2_5_vl text model: 3 integers >= 0 summing to
 * head_dim / 2 (frequency pairs given to the temporal, height and width ids). */
static int _apb_mrope(const json_t *rs, const char *what, apb_config *c, apb_err *err)
{
    const json_t *ms = json_is_object(rs) ? json_object_get(rs, "mrope_section") : NULL;
    if (!ms)
        return apb_fail(err, APB_E_MODEL, "%s: model_type %s needs rope_scaling.mrope_section (mRoPE); "
                        "none given", what, c->name);
    if (!json_is_array(ms) || json_array_size(ms) != 3)
        return apb_fail(err, APB_E_FORMAT, "%s: rope_scaling.mrope_section must be a list of 3 integers "
                        "(temporal, height, width)", what);
    const json_t *il = json_object_get(rs, "mrope_interleaved");
    if (il && json_is_true(il))
        return apb_fail(err, APB_E_MODEL, "%s: rope_scaling.mrope_interleaved = true (Qwen3-VL layout) is not "
                        "supported (Qwen2-VL / Qwen2.5-VL sections only)", what);
    long long sum = 0;
    for (int i = 0; i < 3; i++) {
        const json_t *e = json_array_get(ms, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > _APB_MAX_HEAD_DIM)
            return apb_fail(err, APB_E_FORMAT, "%s: rope_scaling.mrope_section[%d] must be an integer in [0, %d]",
                            what, i, _APB_MAX_HEAD_DIM);
        c->mrope_section[i] = (int)json_integer_value(e);
        sum += c->mrope_section[i];
    }
    if (sum != c->head_dim / 2)
        return apb_fail(err, APB_E_FORMAT, "%s: rope_scaling.mrope_section [%d, %d, %d] sums to %lld, not "
                        "head_dim / 2 = %d", what, c->mrope_section[0], c->mrope_section[1],
                        c->mrope_section[2], sum, c->head_dim / 2);
    c->mrope = 1;
    return APB_OK;
}

static int _apb_rope_scaling(const json_t *rs, const char *what, int vl, apb_config *c, apb_err *err)
{
    c->rope_scaling = APB_ROPE_NONE;
    c->rope_factor = 1.0f;
    c->mrope = 0;
    if (vl) {
        int rc = _apb_mrope(rs, what, c, err);
        if (rc)
            return rc;
    } else if (json_is_object(rs) && json_object_get(rs, "mrope_section")) {
        return apb_fail(err, APB_E_MODEL, "%s: rope_scaling.mrope_section (mRoPE) is supported with model_type "
                        "qwen2_vl / qwen2_5_vl only, not %s", what, c->name);
    }
    if (!rs || json_is_null(rs))
        return APB_OK;
    if (!json_is_object(rs))
        return apb_fail(err, APB_E_FORMAT, "%s: field 'rope_scaling' must be an object or null, not %s", what,
                        apb_json_type_name(rs));
    /* transformers >= 4.45 writes "rope_type", older files "type" */
    const json_t *jt = json_object_get(rs, "rope_type");
    if (!jt)
        jt = json_object_get(rs, "type");
    if (!json_is_string(jt))
        return apb_fail(err, APB_E_FORMAT, "%s: field 'rope_scaling' has no string 'rope_type' or 'type'", what);
    const char *t = json_string_value(jt);
    char sub[PATH_MAX + 32]; /* messages read "config.json: rope_scaling: missing field 'factor'" */
    snprintf(sub, sizeof sub, "%s: rope_scaling", what);
    double v;
    int rc;
    if (strcmp(t, "default") == 0)
        return APB_OK;
    if (vl && strcmp(t, "mrope") == 0) /* Qwen2-VL's older spelling of default + mrope_section */
        return APB_OK;
    if (vl)
        return apb_fail(err, APB_E_MODEL, "%s: rope_scaling type '%.64s' with mRoPE is not supported (supported: "
                        "mrope / default with mrope_section)", what, t);
    if (strcmp(t, "linear") == 0) {
        if ((rc = _apb_num(rs, sub, "factor", 1, 0.0, 1e6, 1.0, &v, err)))
            return rc;
        c->rope_scaling = APB_ROPE_LINEAR;
        c->rope_factor = (float)v;
        return APB_OK;
    }
    if (strcmp(t, "llama3") == 0) {
        double lo, hi;
        int orig;
        if ((rc = _apb_num(rs, sub, "factor", 1, 0.0, 1e6, 1.0, &v, err)) ||
            (rc = _apb_num(rs, sub, "low_freq_factor", 1, 0.0, 1e6, 1.0, &lo, err)) ||
            (rc = _apb_num(rs, sub, "high_freq_factor", 1, 0.0, 1e6, 1.0, &hi, err)) ||
            (rc = _apb_int(rs, sub, "original_max_position_embeddings", 1, 1, _APB_MAX_POS, 0, &orig, err)))
            return rc;
        if (!(hi > lo))
            return apb_fail(err, APB_E_FORMAT, "%s: high_freq_factor = %g must exceed low_freq_factor = %g", sub,
                            hi, lo);
        c->rope_scaling = APB_ROPE_LLAMA3;
        c->rope_factor = (float)v;
        c->rope_low_freq_factor = (float)lo;
        c->rope_high_freq_factor = (float)hi;
        c->rope_orig_max_pos = orig;
        return APB_OK;
    }
    return apb_fail(err, APB_E_MODEL, "%s: unsupported rope_scaling type '%.64s' (supported: llama3, linear)",
                    what, t);
}

/* Parses an already-loaded config object. */
static int _apb_config_obj(const json_t *o, const char *what, apb_config *c, apb_err *err)
{
    int rc;
    memset(c, 0, sizeof *c);
    if (!json_is_object(o))
        return apb_fail(err, APB_E_FORMAT, "%s: top level is %s, not an object", what, apb_json_type_name(o));

    const json_t *mt = json_object_get(o, "model_type");
    if (!mt)
        return apb_fail(err, APB_E_FORMAT, "%s: missing field 'model_type'", what);
    if (!json_is_string(mt))
        return apb_fail(err, APB_E_FORMAT, "%s: field 'model_type' must be a string, not %s", what,
                        apb_json_type_name(mt));
    const char *type = json_string_value(mt);
    int vl = strcmp(type, "qwen2_vl") == 0 || strcmp(type, "qwen2_5_vl") == 0;
    if (strcmp(type, "llama") == 0 || strcmp(type, "mistral") == 0)
        c->arch = APB_ARCH_LLAMA;
    else if (strcmp(type, "qwen2") == 0 || vl)
        c->arch = APB_ARCH_QWEN2; /* the VL models' language model is Qwen2 with mRoPE */
    else
        return apb_fail(err, APB_E_MODEL, "%s: unsupported model_type '%.64s' (supported: llama, mistral, qwen2, "
                        "qwen2_vl, qwen2_5_vl)", what, type);
    snprintf(c->name, sizeof c->name, "%s", type);

    const json_t *arch = json_object_get(o, "architectures");
    if (arch && !json_is_null(arch) && !json_is_array(arch))
        return apb_fail(err, APB_E_FORMAT, "%s: field 'architectures' must be a list, not %s", what,
                        apb_json_type_name(arch));

    if ((rc = _apb_int(o, what, "hidden_size", 1, 1, _APB_MAX_DIM, 0, &c->dim, err)) ||
        (rc = _apb_int(o, what, "num_hidden_layers", 1, 1, _APB_MAX_LAYERS, 0, &c->n_layers, err)) ||
        (rc = _apb_int(o, what, "num_attention_heads", 1, 1, _APB_MAX_HEADS, 0, &c->n_heads, err)) ||
        (rc = _apb_int(o, what, "num_key_value_heads", 0, 1, _APB_MAX_HEADS, c->n_heads, &c->n_kv_heads, err)) ||
        (rc = _apb_int(o, what, "intermediate_size", 1, 1, _APB_MAX_HIDDEN, 0, &c->hidden_dim, err)) ||
        (rc = _apb_int(o, what, "vocab_size", 1, 1, _APB_MAX_VOCAB, 0, &c->vocab_size, err)) ||
        (rc = _apb_int(o, what, "max_position_embeddings", 1, 1, _APB_MAX_POS, 0, &c->max_pos, err)))
        return rc;
    if (c->n_heads % c->n_kv_heads != 0)
        return apb_fail(err, APB_E_FORMAT, "%s: field 'num_key_value_heads' = %d does not divide "
                        "num_attention_heads = %d", what, c->n_kv_heads, c->n_heads);

    const json_t *hd = json_object_get(o, "head_dim");
    if (hd && !json_is_null(hd)) {
        if ((rc = _apb_int(o, what, "head_dim", 1, 1, _APB_MAX_HEAD_DIM, 0, &c->head_dim, err)))
            return rc;
    } else {
        if (c->dim % c->n_heads != 0)
            return apb_fail(err, APB_E_FORMAT, "%s: field 'hidden_size' = %d is not divisible by "
                            "num_attention_heads = %d (and no head_dim is given)", what, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
        if (c->head_dim > _APB_MAX_HEAD_DIM)
            return apb_fail(err, APB_E_FORMAT, "%s: head_dim = hidden_size / num_attention_heads = %d exceeds %d",
                            what, c->head_dim, _APB_MAX_HEAD_DIM);
    }
    if (c->head_dim % 2 != 0)
        return apb_fail(err, APB_E_FORMAT, "%s: head_dim = %d must be even (RoPE rotates pairs)", what,
                        c->head_dim);

    double theta, eps;
    if ((rc = _apb_num(o, what, "rope_theta", 0, 0.0, 1e12, 10000.0, &theta, err)) ||
        (rc = _apb_num(o, what, "rms_norm_eps", 0, 0.0, 1.0, 1e-6, &eps, err)))
        return rc;
    c->rope_theta = (float)theta;
    c->norm_eps = (float)eps;

    if ((rc = _apb_bool(o, what, "tie_word_embeddings", 0, &c->tie_embeddings, err)))
        return rc;
    if (c->arch == APB_ARCH_QWEN2) {
        c->qkv_bias = 1; /* Qwen2 q/k/v projections always carry a bias; o_proj has none */
    } else if ((rc = _apb_bool(o, what, "attention_bias", 0, &c->qkv_bias, err))) {
        return rc;
    }
    /* Llama's attention_bias also puts a bias on o_proj; apb_weights_load rejects such a tensor. */

    int flag;
    if ((rc = _apb_bool(o, what, "mlp_bias", 0, &flag, err)))
        return rc;
    if (flag)
        return apb_fail(err, APB_E_MODEL, "%s: mlp_bias = true is not supported", what);
    const json_t *act = json_object_get(o, "hidden_act");
    if (act && !json_is_null(act) && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
        return apb_fail(err, APB_E_MODEL, "%s: hidden_act %s%.32s%s is not supported (silu only)", what,
                        json_is_string(act) ? "'" : "", json_is_string(act) ? json_string_value(act) : "",
                        json_is_string(act) ? "'" : "(not a string)");
    /* Sliding-window attention would change the math once the context exceeds the window. */
    if ((rc = _apb_bool(o, what, "use_sliding_window", 0, &flag, err)))
        return rc;
    if (flag)
        return apb_fail(err, APB_E_MODEL, "%s: use_sliding_window = true is not supported", what);
    if (c->arch == APB_ARCH_LLAMA) { /* Mistral v0.1 */
        const json_t *sw = json_object_get(o, "sliding_window");
        if (sw && !json_is_null(sw)) {
            int win;
            if ((rc = _apb_int(o, what, "sliding_window", 1, 1, INT_MAX, 0, &win, err)))
                return rc;
            if (win < c->max_pos)
                return apb_fail(err, APB_E_MODEL, "%s: sliding_window = %d (< max_position_embeddings = %d) is "
                                "not supported", what, win, c->max_pos);
        }
    }

    if ((rc = _apb_rope_scaling(json_object_get(o, "rope_scaling"), what, vl, c, err)))
        return rc;

    if ((rc = _apb_int(o, what, "bos_token_id", 0, 0, c->vocab_size - 1, -1, &c->bos_id, err)))
        return rc;
    const json_t *eos = json_object_get(o, "eos_token_id");
    if (eos && !json_is_null(eos) && (rc = _apb_eos(eos, what, c->vocab_size, c->eos_ids, &c->n_eos, err)))
        return rc;
    return APB_OK;
}

int apb_config_parse(const char *json, size_t len, const char *what, apb_config *cfg, apb_err *err)
{
    if (!what)
        what = "config.json";
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        memset(cfg, 0, sizeof *cfg);
        return apb_fail(err, APB_E_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", what, je.text, je.line,
                        je.column);
    }
    /* qwen2_vl / qwen2_5_vl: the language model's fields may sit under text_config (transformers
     * >= 4.50); they override the top level's, the top level's model_type is kept. */
    json_t *use = root;
    const json_t *mt = json_is_object(root) ? json_object_get(root, "model_type") : NULL;
    const json_t *tc = json_is_object(root) ? json_object_get(root, "text_config") : NULL;
    if (json_is_string(mt) && (strcmp(json_string_value(mt), "qwen2_vl") == 0 ||
                               strcmp(json_string_value(mt), "qwen2_5_vl") == 0) && tc && !json_is_null(tc)) {
        if (!json_is_object(tc)) { /* the message names tc's type before root (and tc) is freed */
            memset(cfg, 0, sizeof *cfg);
            int rc = apb_fail(err, APB_E_FORMAT, "%s: field 'text_config' must be an object, not %s", what,
                              apb_json_type_name(tc));
            json_decref(root);
            return rc;
        }
        use = json_deep_copy(root);
        if (!use || json_object_update(use, (json_t *)tc) || json_object_set(use, "model_type", (json_t *)mt)) {
            json_decref(use);
            json_decref(root);
            memset(cfg, 0, sizeof *cfg);
            return apb_fail(err, APB_E_NOMEM, "%s: out of memory merging text_config", what);
        }
    }
    int rc = _apb_config_obj(use, what, cfg, err);
    if (use != root)
        json_decref(use);
    json_decref(root);
    return rc;
}

/* Reads a whole small file; *missing is set (and APB_OK returned) when it does not exist. */
static int _apb_slurp(const char *path, char **out, size_t *len, int *missing, apb_err *err)
{
    *out = NULL;
    *len = 0;
    *missing = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) {
            *missing = 1;
            return APB_OK;
        }
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(errno));
    }
    char *buf = malloc(_APB_MAX_CONFIG_BYTES + 1);
    if (!buf) {
        fclose(f);
        return apb_fail(err, APB_E_NOMEM, "out of memory reading %s", path);
    }
    size_t n = fread(buf, 1, _APB_MAX_CONFIG_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > _APB_MAX_CONFIG_BYTES) {
        free(buf);
        return bad ? apb_fail(err, APB_E_IO, "error reading %s", path)
                   : apb_fail(err, APB_E_FORMAT, "%s: larger than %d bytes", path, _APB_MAX_CONFIG_BYTES);
    }
    *out = buf;
    *len = n;
    return APB_OK;
}

int apb_config_load(const char *dir, apb_config *cfg, apb_err *err)
{
    char path[PATH_MAX];
    char *text;
    size_t len;
    int missing;
    memset(cfg, 0, sizeof *cfg);
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return apb_fail(err, APB_E_IO, "%s: path too long", dir);
    int rc = _apb_slurp(path, &text, &len, &missing, err);
    if (rc)
        return rc;
    if (missing)
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(ENOENT));
    rc = apb_config_parse(text, len, path, cfg, err);
    free(text);
    if (rc)
        return rc;

    /* generation_config.json (optional): its eos_token_id replaces the config's list */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    rc = _apb_slurp(path, &text, &len, &missing, err);
    if (rc)
        return rc;
    if (!missing) {
        json_error_t je;
        json_t *root = json_loadb(text, len, 0, &je);
        free(text);
        if (!root)
            return apb_fail(err, APB_E_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line,
                            je.column);
        const json_t *eos = json_is_object(root) ? json_object_get(root, "eos_token_id") : NULL;
        if (!json_is_object(root))
            rc = apb_fail(err, APB_E_FORMAT, "%s: top level is not an object", path);
        else if (eos && !json_is_null(eos))
            rc = _apb_eos(eos, path, cfg->vocab_size, cfg->eos_ids, &cfg->n_eos, err);
        json_decref(root);
        if (rc)
            return rc;
    }

    /* name = basename of dir, ignoring trailing slashes */
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    snprintf(cfg->name, sizeof cfg->name, "%.*s", (int)(end - start), dir + start);
    return APB_OK;
}

/* ------------------------------------------------------------------ presets */

static const char *const _apb_preset_names[] = {"llama-3.1-8b", "qwen-2.5-14b", "yi-34b-200k", "llama-3-8b-1m",
                                                "smollm2-135m", "tiny", "qwen2.5-vl-3b", "qwen2.5-vl-7b",
                                                "internvl3-2b", "tiny-vl", NULL};

const char *const *apb_config_preset_names(void)
{
    return _apb_preset_names;
}

int apb_config_preset(const char *name, apb_config *cfg, apb_err *err)
{
    apb_config *c = cfg;
    memset(c, 0, sizeof *c);
    if (strcmp(name, "llama-3.1-8b") == 0) {
        /* meta-llama/Llama-3.1-8B(-Instruct) */
        *c = (apb_config){.dim = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
                          .hidden_dim = 14336, .vocab_size = 128256, .max_pos = 131072, .rope_theta = 500000.0f,
                          .norm_eps = 1e-5f, .rope_scaling = APB_ROPE_LLAMA3, .rope_factor = 8.0f,
                          .rope_low_freq_factor = 1.0f, .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 8192,
                          .bos_id = 128000, .eos_ids = {128001, 128008, 128009}, .n_eos = 3};
    } else if (strcmp(name, "qwen-2.5-14b") == 0) {
        /* Qwen/Qwen2.5-14B-Instruct. Its config.json says max_position_embeddings = 32768: the 131072
         * context needs yarn rope scaling, which the file leaves off (and which apb does not implement). */
        *c = (apb_config){.arch = APB_ARCH_QWEN2, .dim = 5120, .n_layers = 48, .n_heads = 40, .n_kv_heads = 8,
                          .head_dim = 128, .hidden_dim = 13824, .vocab_size = 152064, .max_pos = 32768,
                          .rope_theta = 1000000.0f, .norm_eps = 1e-6f, .qkv_bias = 1, .rope_factor = 1.0f,
                          .bos_id = 151643, .eos_ids = {151645, 151643}, .n_eos = 2};
    } else if (strcmp(name, "yi-34b-200k") == 0) {
        /* 01-ai/Yi-34B-200K (model_type llama) */
        *c = (apb_config){.dim = 7168, .n_layers = 60, .n_heads = 56, .n_kv_heads = 8, .head_dim = 128,
                          .hidden_dim = 20480, .vocab_size = 64000, .max_pos = 200000, .rope_theta = 5000000.0f,
                          .norm_eps = 1e-5f, .rope_factor = 1.0f, .bos_id = 1, .eos_ids = {2}, .n_eos = 1};
    } else if (strcmp(name, "llama-3-8b-1m") == 0) {
        /* gradientai/Llama-3-8B-Instruct-Gradient-1048k: Llama-3-8B shapes, rope_theta raised to
         * 3580165449 (~3.58e9; float rounds it to 3580165376, 2e-8 relative), no rope_scaling. */
        *c = (apb_config){.dim = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
                          .hidden_dim = 14336, .vocab_size = 128256, .max_pos = 1048576,
                          .rope_theta = 3580165449.0f, .norm_eps = 1e-5f, .rope_factor = 1.0f, .bos_id = 128000,
                          .eos_ids = {128001, 128009}, .n_eos = 2};
    } else if (strcmp(name, "smollm2-135m") == 0) {
        /* HuggingFaceTB/SmolLM2-135M(-Instruct) */
        *c = (apb_config){.dim = 576, .n_layers = 30, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64,
                          .hidden_dim = 1536, .vocab_size = 49152, .max_pos = 8192, .rope_theta = 100000.0f,
                          .norm_eps = 1e-5f, .tie_embeddings = 1, .rope_factor = 1.0f, .bos_id = 1,
                          .eos_ids = {2}, .n_eos = 1};
    } else if (strcmp(name, "tiny") == 0) {
        /* not a published model: 4 small layers for fast multi-process tests (4 KV heads, so
         * ulysses runs on 1, 2 or 4 hosts) */
        *c = (apb_config){.dim = 128, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4, .head_dim = 16,
                          .hidden_dim = 256, .vocab_size = 512, .max_pos = 4096, .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f, .rope_factor = 1.0f, .bos_id = 1, .eos_ids = {2}, .n_eos = 1};
    } else if (strcmp(name, "qwen2.5-vl-3b") == 0) {
        /* Qwen/Qwen2.5-VL-3B-Instruct, language model (the vision tower is not modelled) */
        *c = (apb_config){.arch = APB_ARCH_QWEN2, .dim = 2048, .n_layers = 36, .n_heads = 16, .n_kv_heads = 2,
                          .head_dim = 128, .hidden_dim = 11008, .vocab_size = 151936, .max_pos = 128000,
                          .rope_theta = 1000000.0f, .norm_eps = 1e-6f, .tie_embeddings = 1, .qkv_bias = 1,
                          .rope_factor = 1.0f, .bos_id = 151643, .eos_ids = {151645}, .n_eos = 1, .mrope = 1,
                          .mrope_section = {16, 24, 24}};
    } else if (strcmp(name, "qwen2.5-vl-7b") == 0) {
        /* Qwen/Qwen2.5-VL-7B-Instruct, language model */
        *c = (apb_config){.arch = APB_ARCH_QWEN2, .dim = 3584, .n_layers = 28, .n_heads = 28, .n_kv_heads = 4,
                          .head_dim = 128, .hidden_dim = 18944, .vocab_size = 152064, .max_pos = 128000,
                          .rope_theta = 1000000.0f, .norm_eps = 1e-6f, .qkv_bias = 1, .rope_factor = 1.0f,
                          .bos_id = 151643, .eos_ids = {151645}, .n_eos = 1, .mrope = 1,
                          .mrope_section = {16, 24, 24}};
    } else if (strcmp(name, "internvl3-2b") == 0) {
        /* OpenGVLab/InternVL3-2B, language model (Qwen2.5-1.5B shapes, 1-D RoPE) */
        *c = (apb_config){.arch = APB_ARCH_QWEN2, .dim = 1536, .n_layers = 28, .n_heads = 12, .n_kv_heads = 2,
                          .head_dim = 128, .hidden_dim = 8960, .vocab_size = 151674, .max_pos = 32768,
                          .rope_theta = 1000000.0f, .norm_eps = 1e-6f, .qkv_bias = 1, .rope_factor = 1.0f,
                          .bos_id = 151643, .eos_ids = {151645}, .n_eos = 1};
    } else if (strcmp(name, "tiny-vl") == 0) {
        /* not a published model: tiny with mRoPE (sections in the ratio of Qwen2.5-VL's 16:24:24) */
        *c = (apb_config){.arch = APB_ARCH_QWEN2, .dim = 128, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4,
                          .head_dim = 16, .hidden_dim = 256, .vocab_size = 512, .max_pos = 4096,
                          .rope_theta = 10000.0f, .norm_eps = 1e-6f, .qkv_bias = 1, .rope_factor = 1.0f,
                          .bos_id = 1, .eos_ids = {2}, .n_eos = 1, .mrope = 1, .mrope_section = {2, 3, 3}};
    } else {
        return apb_fail(err, APB_E_USAGE, "unknown model preset '%.64s' (known: llama-3.1-8b, qwen-2.5-14b, "
                        "yi-34b-200k, llama-3-8b-1m, smollm2-135m, tiny, qwen2.5-vl-3b, qwen2.5-vl-7b, "
                        "internvl3-2b, tiny-vl)", name);
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    return APB_OK;
}

/* ------------------------------------------------------------------ derived quantities */

void apb_config_rope_inv_freq(const apb_config *cfg, double *out)
{
    const int half = cfg->head_dim / 2;
    const double d = cfg->head_dim, theta = cfg->rope_theta, factor = cfg->rope_factor;
    for (int i = 0; i < half; i++) {
        double inv = pow(theta, -2.0 * i / d);
        if (cfg->rope_scaling == APB_ROPE_LINEAR) {
            inv /= factor;
        } else if (cfg->rope_scaling == APB_ROPE_LLAMA3) {
            /* transformers' _compute_llama3_parameters */
            const double orig = cfg->rope_orig_max_pos, low = cfg->rope_low_freq_factor,
                         high = cfg->rope_high_freq_factor;
            const double wavelen = 2.0 * _APB_PI / inv;
            const double low_freq_wavelen = orig / low, high_freq_wavelen = orig / high;
            if (wavelen > low_freq_wavelen) {
                inv /= factor;
            } else if (!(wavelen < high_freq_wavelen)) {
                const double smooth = (orig / wavelen - low) / (high - low);
                inv = (1.0 - smooth) * inv / factor + smooth * inv;
            }
        }
        out[i] = inv;
    }
}

long long apb_config_n_params(const apb_config *c)
{
    const long long dim = c->dim, qd = (long long)c->n_heads * c->head_dim,
                    kd = (long long)c->n_kv_heads * c->head_dim, hid = c->hidden_dim, voc = c->vocab_size;
    long long layer = 2 * dim                       /* attention and MLP norms */
                      + qd * dim + 2 * kd * dim     /* q, k, v */
                      + dim * qd                    /* o */
                      + 3 * hid * dim;              /* gate, up, down */
    if (c->qkv_bias)
        layer += qd + 2 * kd;
    return voc * dim                                /* embeddings */
           + (long long)c->n_layers * layer + dim   /* final norm */
           + (c->tie_embeddings ? 0 : voc * dim);   /* lm_head */
}
