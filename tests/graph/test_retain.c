/* SPDX-License-Identifier: MIT */
/**
 * @brief The retaining heads shipped for the bundled model (models/retain/, tools/train_retain.py):
 * found by default, loaded with the model's shapes, and the `retain` codelet's scores on real pre-RoPE
 * q, k, v equal the training script's own float64 forward of the heads (tests/data/retain_ref.safetensors)
 * and a float64 recomputation here.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <string.h>

#include "graph/apb_graph.h"
#include "models/safetensors.h"
#include "tests/test_util.h"

TestSuite(retain, .init = t_runtime_up, .fini = apb_runtime_shutdown);

static void load_model_and_heads(apb_model *m, char *path, size_t n)
{
    apb_err err = {0};
    cr_assert_eq(apb_model_load(t_model_dir(), m, &err), 0, "%s (run scripts/setup.sh)", err.msg);
    cr_assert_eq(apb_retain_default_path(t_model_dir(), path, n, &err), 0, "%s", err.msg);
    cr_assert_eq(apb_model_load_retain(m, path, &err), 0, "%s", err.msg);
}

Test(retain, shipped_heads_found_and_shaped)
{
    apb_model m;
    char path[PATH_MAX + 320];
    load_model_and_heads(&m, path, sizeof path);
    const char *tail = "models/retain/smollm2-135m-instruct.safetensors";
    cr_assert(strlen(path) >= strlen(tail) && !strcmp(path + strlen(path) - strlen(tail), tail),
              "default heads: %s", path);
    const apb_config *c = &m.cfg;
    int in = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    cr_assert_eq(in, 960);
    cr_assert(m.retain_hidden >= 8 && m.retain_hidden <= 1024, "hidden %d", m.retain_hidden);
    for (int l = 0; l < c->n_layers; l++) {
        cr_assert(m.fc1[l] && m.fc2[l], "layer %d missing", l);
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < (size_t)m.retain_hidden * in; i++) {
            cr_assert(isfinite(m.fc1[l][i]), "layer %d fc1[%zu] not finite", l, i);
            s1 += fabs(m.fc1[l][i]);
        }
        for (size_t i = 0; i < (size_t)c->n_kv_heads * m.retain_hidden; i++) {
            cr_assert(isfinite(m.fc2[l][i]), "layer %d fc2[%zu] not finite", l, i);
            s2 += fabs(m.fc2[l][i]);
        }
        cr_assert(s1 > 0 && s2 > 0, "layer %d: all-zero heads", l);
    }
    apb_model_free(&m);
}

Test(retain, no_default_heads_names_the_paths)
{
    char path[PATH_MAX];
    apb_err err = {0};
    cr_assert_eq(apb_retain_default_path("/nonexistent/some-model/", path, sizeof path, &err), APB_E_IO);
    cr_assert(strstr(err.msg, "'some-model'"), "%s", err.msg);
    cr_assert(strstr(err.msg, "/nonexistent/some-model/retain_heads.safetensors"), "%s", err.msg);
    cr_assert(strstr(err.msg, "models/retain/some-model.safetensors"), "%s", err.msg);
    cr_assert(strstr(err.msg, "retain/some-model.safetensors"), "%s", err.msg);
}

static const apb_st_tensor *ref_tensor(apb_st_set *st, const char *name, int rows, int cols)
{
    const apb_st_tensor *t = apb_st_find(st, name);
    cr_assert_not_null(t, "reference tensor %s missing", name);
    cr_assert(t->dtype == APB_F32 && t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols,
              "%s: expected F32 [%d, %d]", name, rows, cols);
    return t;
}

/* copy of a reference tensor (its data may be unaligned inside the mapped file) */
static float *ref_copy(const apb_st_tensor *t, size_t n)
{
    float *p = t_alloc(n);
    memcpy(p, t->data, sizeof(float) * n);
    return p;
}

Test(retain, codelet_matches_training_script)
{
    apb_model m;
    char path[PATH_MAX + 320];
    load_model_and_heads(&m, path, sizeof path);
    const apb_config *c = &m.cfg;
    char ref[PATH_MAX];
    const char *src = getenv("top_srcdir") ? getenv("top_srcdir") : ".";
    snprintf(ref, sizeof ref, "%s/tests/data/retain_ref.safetensors", src);
    apb_st_set *st = NULL;
    apb_err err = {0};
    cr_assert_eq(apb_st_open_file(ref, &st, &err), 0, "%s", err.msg);
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim, in = qd + 2 * kd;
    int hid = m.retain_hidden, hk = c->n_kv_heads, layers[3] = {0, c->n_layers / 2, c->n_layers - 1};
    const apb_st_tensor *q0 = apb_st_find(st, "layer0.q");
    cr_assert_not_null(q0);
    int rows = (int)q0->shape[0];
    cr_assert(rows >= 4 && rows <= 64);
    for (int li = 0; li < 3; li++) {
        int l = layers[li];
        char name[64];
        snprintf(name, sizeof name, "layer%d.q", l);
        float *q = ref_copy(ref_tensor(st, name, rows, qd), (size_t)rows * qd);
        snprintf(name, sizeof name, "layer%d.k", l);
        float *k = ref_copy(ref_tensor(st, name, rows, kd), (size_t)rows * kd);
        snprintf(name, sizeof name, "layer%d.v", l);
        float *v = ref_copy(ref_tensor(st, name, rows, kd), (size_t)rows * kd);
        snprintf(name, sizeof name, "layer%d.scores", l);
        float *want = ref_copy(ref_tensor(st, name, rows, hk), (size_t)rows * hk);
        float *sc = t_poisoned((size_t)rows * hk);
        apb_handle h[6] = {apb_tile_from(q, rows, qd, 4), apb_tile_from(k, rows, kd, 4),
                           apb_tile_from(v, rows, kd, 4), apb_tile_from(m.fc1[l], hid, in, 4),
                           apb_tile_from(m.fc2[l], hk, hid, 4), apb_tile_from(sc, rows, hk, 4)};
        cr_assert_eq(apb_insert_retain_score(h[0], h[1], h[2], h[3], h[4], h[5], (apb_task_tag){l, 0, 0}), 0);
        for (int i = 0; i < 6; i++)
            apb_handle_free_now(h[i]);
        /* float64 recomputation from the same q, k, v and the loaded heads */
        double *mine = malloc(sizeof(double) * rows * hk), *script = malloc(sizeof(double) * rows * hk);
        double *hh = malloc(sizeof(double) * hid);
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < hid; j++) {
                const float *w = m.fc1[l] + (size_t)j * in;
                double s = 0;
                for (int x = 0; x < qd; x++)
                    s += (double)w[x] * q[r * qd + x];
                for (int x = 0; x < kd; x++)
                    s += (double)w[qd + x] * k[r * kd + x] + (double)w[qd + kd + x] * v[r * kd + x];
                hh[j] = s / (1 + exp(-s));
            }
            for (int g = 0; g < hk; g++) {
                double s = 0;
                for (int j = 0; j < hid; j++)
                    s += (double)m.fc2[l][g * hid + j] * hh[j];
                mine[r * hk + g] = s;
                script[r * hk + g] = want[r * hk + g];
            }
        }
        double e_script = t_rel_err(sc, script, (size_t)rows * hk);
        double e_mine = t_rel_err(sc, mine, (size_t)rows * hk);
        cr_assert_lt(e_script, 2e-5, "layer %d: codelet vs tools/train_retain.py rel err %g", l, e_script);
        cr_assert_lt(e_mine, 2e-5, "layer %d: codelet vs float64 rel err %g", l, e_mine);
        free(q); free(k); free(v); free(want); free(sc); free(mine); free(script); free(hh);
    }
    apb_st_close(st);
    apb_model_free(&m);
}
