/* SPDX-License-Identifier: MIT */
/** @brief apb_run --cases: JSONL lines of a batch, read with jansson (the config.json parser). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cases.h"
#include "common/apb_json.h"

/* The string field `name` of obj, copied; required: a missing field is an error. */
static int get_string(json_t *obj, const char *name, long lineno, int nonempty, char **out, apb_err *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return apb_fail(err, APB_E_FORMAT, "line %ld: missing field \"%s\"", lineno, name);
    if (!json_is_string(v))
        return apb_fail(err, APB_E_FORMAT, "line %ld: \"%s\" must be a string, got %s", lineno, name,
                        apb_json_type_name(v));
    if (nonempty && json_string_length(v) == 0)
        return apb_fail(err, APB_E_FORMAT, "line %ld: \"%s\" is empty", lineno, name);
    if (!(*out = strdup(json_string_value(v))))
        return apb_fail(err, APB_E_NOMEM, "line %ld: out of memory", lineno);
    return APB_OK;
}

int apb_case_parse(const char *line, size_t len, long lineno, struct apb_case *c, apb_err *err)
{
    memset(c, 0, sizeof *c);
    c->max_new = -1;
    c->line = lineno;
    json_error_t je;
    /* no JSON_ALLOW_NUL: a \u0000 inside a string is refused (the texts are C strings) */
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return apb_fail(err, APB_E_FORMAT, "line %ld: not a JSON object: %s (column %d)", lineno,
                        je.text, je.column);
    int rc = APB_OK;
    if (!json_is_object(root))
        rc = apb_fail(err, APB_E_FORMAT, "line %ld: expected a JSON object, got %s", lineno,
                      apb_json_type_name(root));
    if (!rc)
        rc = get_string(root, "id", lineno, 0, &c->id, err);
    if (!rc)
        rc = get_string(root, "context", lineno, 1, &c->context, err);
    if (!rc)
        rc = get_string(root, "question", lineno, 1, &c->question, err);
    json_t *mn = rc ? NULL : json_object_get(root, "max_new_tokens");
    if (mn && !json_is_null(mn)) {
        if (!json_is_integer(mn))
            rc = apb_fail(err, APB_E_FORMAT, "line %ld: \"max_new_tokens\" must be an integer, got %s",
                          lineno, apb_json_type_name(mn));
        else if (json_integer_value(mn) < 0 || json_integer_value(mn) > (1 << 20))
            rc = apb_fail(err, APB_E_FORMAT, "line %ld: \"max_new_tokens\" %lld is outside [0, %d]",
                          lineno, (long long)json_integer_value(mn), 1 << 20);
        else
            c->max_new = (int)json_integer_value(mn);
    }
    json_decref(root);
    if (rc)
        apb_case_free(c);
    return rc;
}

void apb_case_free(struct apb_case *c)
{
    free(c->id);
    free(c->context);
    free(c->question);
    memset(c, 0, sizeof *c);
    c->max_new = -1;
}

void apb_cases_free(struct apb_case *cases, int n)
{
    for (int i = 0; cases && i < n; i++)
        apb_case_free(&cases[i]);
    free(cases);
}

int apb_cases_parse_all(const char *text, size_t n, struct apb_case **cases, int *n_cases, apb_err *err)
{
    struct apb_case *cs = NULL;
    int nc = 0, cap = 0, rc = APB_OK;
    long lineno = 0;
    for (size_t at = 0; !rc && at < n;) {
        const char *s = text + at, *nl = memchr(s, '\n', n - at);
        size_t len = nl ? (size_t)(nl - s) : n - at;
        at += len + (nl != NULL);
        lineno++;
        if (strspn(s, " \t\r") >= len) /* blank (the text may hold NULs: strspn stops there) */
            continue;
        if (nc == cap) {
            int nc2 = cap ? 2 * cap : 16;
            struct apb_case *c2 = nc2 < (1 << 26) ? realloc(cs, sizeof *cs * (size_t)nc2) : NULL;
            if (c2)
                cs = c2;
            if (!c2) {
                rc = apb_fail(err, APB_E_NOMEM, "line %ld: out of memory", lineno);
                break;
            }
            cap = nc2;
        }
        if ((rc = apb_case_parse(s, len, lineno, &cs[nc], err)))
            break;
        for (int j = 0; j < nc; j++)
            if (!strcmp(cs[j].id, cs[nc].id)) {
                rc = apb_fail(err, APB_E_FORMAT, "line %ld: id \"%s\" repeats line %ld's", lineno,
                              cs[nc].id, cs[j].line);
                apb_case_free(&cs[nc]);
                break;
            }
        if (!rc)
            nc++;
    }
    if (!rc && nc == 0)
        rc = apb_fail(err, APB_E_FORMAT, "no cases (every line is blank)");
    if (rc) {
        apb_cases_free(cs, nc);
        return rc;
    }
    *cases = cs;
    *n_cases = nc;
    return APB_OK;
}
