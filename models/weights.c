/* SPDX-License-Identifier: MIT */
/**
 * @brief Model weights as fp32 arrays: loaded from safetensors (HF names, shapes checked against the
 * config) or generated deterministically for shape-only benchmarks.
 *
 * F32 tensors whose address is 4-byte aligned are used in place from the read-only mapping (no copy);
 * unaligned F32 and every F16 / BF16 tensor are converted into owned fp32 buffers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/apb_parallel.h"
#include "models/weights.h"

/* ------------------------------------------------------------------ ownership */

static int _apb_own(apb_weights *w, void *p)
{
    if (w->_n_owned == w->_cap_owned) {
        int cap = w->_cap_owned ? 2 * w->_cap_owned : 64;
        void **o = realloc(w->_owned, sizeof *o * (size_t)cap);
        if (!o)
            return 0;
        w->_owned = o;
        w->_cap_owned = cap;
    }
    w->_owned[w->_n_owned++] = p;
    return 1;
}

/* Allocates n floats owned by w (zeroed when `zero`); NULL when out of memory. */
static float *_apb_alloc(apb_weights *w, size_t n, int zero)
{
    float *p = zero ? calloc(n ? n : 1, sizeof *p) : malloc(sizeof *p * (n ? n : 1));
    if (p && !_apb_own(w, p)) {
        free(p);
        p = NULL;
    }
    return p;
}

void apb_weights_free(apb_weights *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->_n_owned; i++)
        free(w->_owned[i]);
    free(w->_owned);
    free(w->layers);
    apb_st_close(w->_st);
    memset(w, 0, sizeof *w);
}

/* ------------------------------------------------------------------ loading */

typedef struct _apb_loader {
    const char *dir;
    apb_weights *w;
    apb_st_set *st;
} _apb_loader;

static const char *_apb_shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
    return buf;
}

/* Fetches tensor `name` of shape [rows] (cols == 0) or [rows, cols] as fp32. */
static int _apb_get(_apb_loader *L, const char *name, int rows, int cols, const float **out, apb_err *err)
{
    const apb_st_tensor *t = apb_st_find(L->st, name);
    if (!t)
        return apb_fail(err, APB_E_MODEL, "%s: missing tensor '%s'", L->dir, name);
    if (t->dtype != APB_F32 && t->dtype != APB_F16 && t->dtype != APB_BF16)
        return apb_fail(err, APB_E_MODEL, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 supported)", L->dir,
                        name, apb_dtype_name(t->dtype));
    int64_t want[2] = {rows, cols};
    int want_nd = cols ? 2 : 1;
    if (t->ndim != want_nd || t->shape[0] != want[0] || (want_nd == 2 && t->shape[1] != want[1])) {
        char found[256], exp[64];
        return apb_fail(err, APB_E_MODEL, "%s: tensor '%s' has shape %s but the config expects %s", L->dir, name,
                        _apb_shape_str(found, sizeof found, t->shape, t->ndim),
                        _apb_shape_str(exp, sizeof exp, want, want_nd));
    }
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    if (t->dtype == APB_F32 && ((uintptr_t)t->data & 3) == 0) {
        *out = t->data; /* in place, read-only mapping */
        return APB_OK;
    }
    float *p = _apb_alloc(L->w, n, 0);
    if (!p)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory converting tensor '%s' (%zu floats)", L->dir, name, n);
    int rc = apb_to_f32(p, t->data, t->dtype, n, err);
    if (rc)
        return rc;
    *out = p;
    return APB_OK;
}

/* Tensors the config cannot account for (extra layers, biases the math would ignore) are errors:
 * running without them would silently compute a different model. Unrelated extras (e.g. the
 * rotary_emb.inv_freq buffers of old checkpoints) are ignored. */
static int _apb_check_extras(_apb_loader *L, const apb_config *c, apb_err *err)
{
    for (size_t i = 0; i < apb_st_count(L->st); i++) {
        const char *name = apb_st_at(L->st, i)->name;
        int layer, end = 0;
        if (sscanf(name, "model.layers.%d.%n", &layer, &end) == 1 && end > 0 && (layer < 0 || layer >= c->n_layers))
            return apb_fail(err, APB_E_MODEL, "%s: tensor '%s' is beyond num_hidden_layers = %d", L->dir, name,
                            c->n_layers);
        size_t n = strlen(name);
        if (n < 5 || strcmp(name + n - 5, ".bias") != 0)
            continue;
        const char *rest = name + end;
        int qkv = end > 0 && (strcmp(rest, "self_attn.q_proj.bias") == 0 ||
                              strcmp(rest, "self_attn.k_proj.bias") == 0 ||
                              strcmp(rest, "self_attn.v_proj.bias") == 0);
        if (!(qkv && c->qkv_bias))
            return apb_fail(err, APB_E_MODEL, "%s: tensor '%s' is a bias the model does not support%s", L->dir, name,
                            qkv ? " (the config has no attention bias)" : "");
    }
    return APB_OK;
}

static int _apb_load_all(_apb_loader *L, const apb_config *c, apb_err *err)
{
    apb_weights *w = L->w;
    const int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    char n[160];
    int rc;
    if ((rc = _apb_get(L, "model.embed_tokens.weight", c->vocab_size, c->dim, &w->embed, err)) ||
        (rc = _apb_get(L, "model.norm.weight", c->dim, 0, &w->final_norm, err)))
        return rc;
    /* tied models normally have no lm_head.weight; when one is stored anyway, it is what HF would use */
    if (!c->tie_embeddings || apb_st_find(L->st, "lm_head.weight")) {
        if ((rc = _apb_get(L, "lm_head.weight", c->vocab_size, c->dim, &w->lm_head, err)))
            return rc;
    } else {
        w->lm_head = w->embed;
    }
    for (int l = 0; l < c->n_layers; l++) {
        apb_layer_weights *lw = &w->layers[l];
        const struct {
            const char *suffix;
            int rows, cols;
            const float **dst;
        } spec[] = {
            {"input_layernorm.weight", c->dim, 0, &lw->attn_norm},
            {"self_attn.q_proj.weight", qd, c->dim, &lw->wq},
            {"self_attn.k_proj.weight", kd, c->dim, &lw->wk},
            {"self_attn.v_proj.weight", kd, c->dim, &lw->wv},
            {"self_attn.o_proj.weight", c->dim, qd, &lw->wo},
            {"post_attention_layernorm.weight", c->dim, 0, &lw->mlp_norm},
            {"mlp.gate_proj.weight", c->hidden_dim, c->dim, &lw->w_gate},
            {"mlp.up_proj.weight", c->hidden_dim, c->dim, &lw->w_up},
            {"mlp.down_proj.weight", c->dim, c->hidden_dim, &lw->w_down},
            {"self_attn.q_proj.bias", qd, 0, &lw->bq},
            {"self_attn.k_proj.bias", kd, 0, &lw->bk},
            {"self_attn.v_proj.bias", kd, 0, &lw->bv},
        };
        const int n_spec = c->qkv_bias ? 12 : 9;
        for (int k = 0; k < n_spec; k++) {
            snprintf(n, sizeof n, "model.layers.%d.%s", l, spec[k].suffix);
            if ((rc = _apb_get(L, n, spec[k].rows, spec[k].cols, spec[k].dst, err)))
                return rc;
        }
    }
    return _apb_check_extras(L, c, err);
}

int apb_weights_load(const char *dir, const apb_config *cfg, apb_weights *w, apb_err *err)
{
    memset(w, 0, sizeof *w);
    int rc = apb_st_open_dir(dir, &w->_st, err);
    if (rc)
        return rc;
    w->layers = calloc((size_t)cfg->n_layers, sizeof *w->layers);
    if (!w->layers) {
        apb_weights_free(w);
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    }
    _apb_loader L = {.dir = dir, .w = w, .st = w->_st};
    rc = _apb_load_all(&L, cfg, err);
    if (rc)
        apb_weights_free(w);
    return rc;
}

/* ------------------------------------------------------------------ random weights */

static inline uint64_t _apb_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n samples of N(0, std^2) by Box-Muller, from a stream seeded by (seed, id). The stream is
 * counter-based (splitmix64 adds a constant per draw), so pair i's draw is computed directly and
 * the fill runs on all cores with the same values as a sequential pass. */
struct _apb_fill_ctx {
    float *x;
    size_t n;
    double std;
    uint64_t s0;
};

static void _apb_fill_range(void *ctxp, size_t lo, size_t hi)
{
    const struct _apb_fill_ctx *c = ctxp;
    const double two_pi = 6.28318530717958647692;
    uint64_t s = c->s0 + (uint64_t)lo * 0x9E3779B97F4A7C15ull; /* state before draw `lo` */
    for (size_t p = lo; p < hi; p++) {
        size_t i = 2 * p;
        /* one 64-bit draw gives two 32-bit uniforms; float math is ample for N(0, 0.02) weights */
        uint64_t b = _apb_splitmix64(&s);
        float u1 = ((float)(b >> 40) + 1.0f) * 0x1.0p-24f; /* (0, 1]: log is finite */
        float u2 = (float)((b >> 8) & 0xffffff) * 0x1.0p-24f;
        float r = (float)c->std * sqrtf(-2.0f * logf(u1)), sn, cs;
        sincosf((float)two_pi * u2, &sn, &cs);
        c->x[i] = r * cs;
        if (i + 1 < c->n)
            c->x[i + 1] = r * sn;
    }
}

static void _apb_fill_normal(float *x, size_t n, double std, uint64_t seed, uint64_t id)
{
    struct _apb_fill_ctx c = {x, n, std, seed ^ (id * 0xD1B54A32D192ED03ull)};
    apb_parallel_for((n + 1) / 2, (size_t)1 << 20, _apb_fill_range, &c);
}

/* Bytes of host memory available for new allocations: MemAvailable, else free pages. */
static double _apb_host_avail_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (double)kb * 1024.0;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * (double)psz : INFINITY;
}

/* Host-side generation. GPU runs of the big presets (8B+ parameters: 32 GB and more of fp32) will
 * generate their weights directly on the device later; here they fail cleanly with APB_E_NOMEM. */
int apb_weights_random(const apb_config *cfg, uint64_t seed, apb_weights *w, apb_err *err)
{
    const apb_config *c = cfg;
    memset(w, 0, sizeof *w);
    const double need = (double)apb_config_n_params(c) * sizeof(float), avail = _apb_host_avail_bytes();
    if (need > avail)
        return apb_fail(err, APB_E_NOMEM, "random weights for %s need %.1f GB of host memory; %.1f GB available",
                        c->name[0] ? c->name : "this model", need / 1e9, avail / 1e9);
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers)
        return apb_fail(err, APB_E_NOMEM, "out of memory");

    const size_t dim = (size_t)c->dim, qd = (size_t)c->n_heads * (size_t)c->head_dim,
                 kd = (size_t)c->n_kv_heads * (size_t)c->head_dim, hid = (size_t)c->hidden_dim,
                 voc = (size_t)c->vocab_size;
    const double std = 0.02;
    uint64_t id = 0; /* each matrix has its own stream (seed, id): independent of the others */
    float *p;
#define _APB_MATRIX(dst, n)                                                                              \
    do {                                                                                                 \
        if (!(p = _apb_alloc(w, (n), 0)))                                                                \
            goto nomem;                                                                                  \
        _apb_fill_normal(p, (n), std, seed, ++id);                                                       \
        (dst) = p;                                                                                       \
    } while (0)
#define _APB_CONST(dst, n, v)                                                                            \
    do {                                                                                                 \
        if (!(p = _apb_alloc(w, (n), 1)))                                                                \
            goto nomem;                                                                                  \
        for (size_t i_ = 0; i_ < (n); i_++)                                                              \
            p[i_] = (v);                                                                                 \
        (dst) = p;                                                                                       \
    } while (0)
    _APB_MATRIX(w->embed, voc * dim);
    _APB_CONST(w->final_norm, dim, 1.0f);
    if (c->tie_embeddings)
        w->lm_head = w->embed;
    else
        _APB_MATRIX(w->lm_head, voc * dim);
    for (int l = 0; l < c->n_layers; l++) {
        apb_layer_weights *lw = &w->layers[l];
        _APB_CONST(lw->attn_norm, dim, 1.0f);
        _APB_MATRIX(lw->wq, qd * dim);
        _APB_MATRIX(lw->wk, kd * dim);
        _APB_MATRIX(lw->wv, kd * dim);
        _APB_MATRIX(lw->wo, dim * qd);
        _APB_CONST(lw->mlp_norm, dim, 1.0f);
        _APB_MATRIX(lw->w_gate, hid * dim);
        _APB_MATRIX(lw->w_up, hid * dim);
        _APB_MATRIX(lw->w_down, dim * hid);
        if (c->qkv_bias) {
            _APB_CONST(lw->bq, qd, 0.0f);
            _APB_CONST(lw->bk, kd, 0.0f);
            _APB_CONST(lw->bv, kd, 0.0f);
        }
    }
#undef _APB_MATRIX
#undef _APB_CONST
    return APB_OK;
nomem:
    apb_weights_free(w);
    return apb_fail(err, APB_E_NOMEM, "out of host memory generating random weights for %s (%.1f GB)",
                    c->name[0] ? c->name : "this model", need / 1e9);
}
