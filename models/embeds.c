/* SPDX-License-Identifier: MIT */
/** @brief Input-embedding files (`apb_run --embeds`): layout in models/embeds.h, validation here. */
#include "models/embeds.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/safetensors.h"

static int _apb_embeds_from_set(const apb_st_set *s, const char *what, int dim, int mrope, long long max_rows,
                                apb_embeds *e, apb_err *err)
{
    const apb_st_tensor *x = NULL, *p = NULL;
    for (size_t i = 0; i < apb_st_count(s); i++) {
        const apb_st_tensor *t = apb_st_at(s, i);
        if (strcmp(t->name, "embeds") == 0)
            x = t;
        else if (strcmp(t->name, "position_ids") == 0)
            p = t;
        else
            return apb_fail(err, APB_E_FORMAT, "%s: unknown tensor '%.64s' (an embeddings file holds 'embeds' "
                            "and optionally 'position_ids')", what, t->name);
    }
    if (!x)
        return apb_fail(err, APB_E_FORMAT, "%s: no tensor 'embeds' (rows of the model's hidden size)", what);
    if (x->dtype != APB_F32 && x->dtype != APB_F16 && x->dtype != APB_BF16)
        return apb_fail(err, APB_E_FORMAT, "%s: 'embeds' has dtype %s (F32, F16 or BF16 expected)", what,
                        apb_dtype_name(x->dtype));
    if (x->ndim != 2)
        return apb_fail(err, APB_E_FORMAT, "%s: 'embeds' has %d dimensions (2 expected: rows x %d)", what,
                        x->ndim, dim);
    if (x->shape[1] != dim)
        return apb_fail(err, APB_E_MODEL, "%s: 'embeds' rows have %lld values, the model's hidden size is %d", what,
                        (long long)x->shape[1], dim);
    long long n = x->shape[0];
    if (n < 1)
        return apb_fail(err, APB_E_FORMAT, "%s: 'embeds' has no rows", what);
    if (n > max_rows)
        return apb_fail(err, APB_E_USAGE, "%s: 'embeds' has %lld rows, more than the limit of %lld", what, n,
                        max_rows);
    int pos3 = 0;
    if (p) {
        if (p->dtype != APB_I32 && p->dtype != APB_I64)
            return apb_fail(err, APB_E_FORMAT, "%s: 'position_ids' has dtype %s (I32 or I64 expected)", what,
                            apb_dtype_name(p->dtype));
        if (p->ndim == 2 && p->shape[0] == 3 && p->shape[1] == n)
            pos3 = 1;
        else if (!(p->ndim == 1 && p->shape[0] == n))
            return apb_fail(err, APB_E_FORMAT, "%s: 'position_ids' must have shape (3, %lld) or (%lld,) to match "
                            "'embeds'", what, n, n);
    }
    e->n = (int)n;
    e->dim = dim;
    e->pos3 = pos3;
    e->x = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    e->pos = malloc(sizeof(int32_t) * 3 * (size_t)n);
    if (!e->x || !e->pos)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory for %lld x %d embeddings", what, n, dim);
    int rc = apb_to_f32(e->x, x->data, x->dtype, (size_t)n * (size_t)dim, err);
    if (rc)
        return rc;
    for (long long r = 0; r < n; r++)
        for (int c = 0; c < dim; c++)
            if (!isfinite(e->x[r * dim + c]))
                return apb_fail(err, APB_E_FORMAT, "%s: 'embeds' row %lld has a non-finite value (column %d)", what,
                                r, c);
    long long mx = -1;
    for (long long r = 0; r < n; r++)
        for (int c = 0; c < 3; c++) {
            long long v;
            if (!p) {
                v = r;
            } else {
                size_t k = pos3 ? (size_t)c * (size_t)n + (size_t)r : (size_t)r;
                if (p->dtype == APB_I32) {
                    int32_t w;
                    memcpy(&w, (const uint8_t *)p->data + 4 * k, 4);
                    v = w;
                } else {
                    int64_t w;
                    memcpy(&w, (const uint8_t *)p->data + 8 * k, 8);
                    v = w;
                }
            }
            if (v < 0 || v > APB_EMBEDS_MAX_POS)
                return apb_fail(err, APB_E_FORMAT, "%s: 'position_ids' of row %lld = %lld is out of range [0, %d]",
                                what, r, v, APB_EMBEDS_MAX_POS);
            e->pos[3 * r + c] = (int32_t)v;
            mx = v > mx ? v : mx;
        }
    if (!mrope)
        for (long long r = 0; r < n; r++)
            if (e->pos[3 * r] != e->pos[3 * r + 1] || e->pos[3 * r] != e->pos[3 * r + 2])
                return apb_fail(err, APB_E_MODEL, "%s: row %lld has 3-D position ids (%d, %d, %d) but the model "
                                "has no mRoPE (1-D RoPE: give equal ids or shape (n,))", what, r, e->pos[3 * r],
                                e->pos[3 * r + 1], e->pos[3 * r + 2]);
    e->next_pos = (int)(mx + 1);
    return APB_OK;
}

int apb_embeds_parse(const uint8_t *buf, size_t len, const char *what, int dim, int mrope, long long max_rows,
                     apb_embeds *out, apb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!what)
        what = "embeddings";
    apb_st_set *s = NULL;
    int rc = apb_st_parse(buf, len, what, &s, err);
    if (rc)
        return rc;
    rc = _apb_embeds_from_set(s, what, dim, mrope, max_rows, out, err);
    apb_st_close(s);
    if (rc)
        apb_embeds_free(out);
    return rc;
}

int apb_embeds_load(const char *path, int dim, int mrope, long long max_rows, apb_embeds *out, apb_err *err)
{
    memset(out, 0, sizeof *out);
    apb_st_set *s = NULL;
    int rc = apb_st_open_file(path, &s, err);
    if (rc)
        return rc;
    rc = _apb_embeds_from_set(s, path, dim, mrope, max_rows, out, err);
    apb_st_close(s);
    if (rc)
        apb_embeds_free(out);
    return rc;
}

void apb_embeds_free(apb_embeds *e)
{
    free(e->x);
    free(e->pos);
    memset(e, 0, sizeof *e);
}
