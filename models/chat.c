/* SPDX-License-Identifier: MIT */
/**
 * @brief Chat prompt formats: the model's own chat_template (tokenizer_config.json) when it is one
 * of the known forms, rendered as Hugging Face's apply_chat_template(add_generation_prompt=True)
 * does; else ChatML / Llama-3 headers chosen by the vocabulary.
 *
 * No Jinja engine: a template is recognised by its text and what the rendering needs is read from
 * it (SmolLM2 / Qwen2's default system line, Llama-3.1's default date). Known forms:
 *   chatml          {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + ...
 *                   with or without the default system line of SmolLM2 / Qwen2:
 *                   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nSYS<|im_end|>\n' }}{% endif %}
 *   llama-3         Meta-Llama-3-Instruct's: bos_token, then per message
 *                   '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>';
 *                   no default system message
 *   llama-3.1       Llama-3.1 / 3.2 / 3.3-Instruct's (tools unused): a system turn always, holding
 *                   "Cutting Knowledge Date: December 2023\nToday Date: DATE\n\n" + the system
 *                   message (trimmed, default empty); DATE = the template's default date_string, or
 *                   today ("%d %b %Y") when the template calls strftime_now, as transformers does.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/chat.h"

static char *_apb_asprintf(const char *fmt, const char *a, const char *b)
{
    int n = snprintf(NULL, 0, fmt, a, b);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, a, b);
    return s;
}

char *apb_chat_format(const apb_tokenizer *tok, const char *system, const char *user, apb_err *err)
{
    if (apb_tokenizer_token_id(tok, "<|im_start|>") >= 0) {
        /* ChatML (SmolLM2, Qwen2) */
        if (!system)
            system = "You are a helpful AI assistant.";
        return _apb_asprintf("<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
                             "<|im_start|>assistant\n", system, user);
    }
    if (apb_tokenizer_token_id(tok, "<|start_header_id|>") >= 0) {
        /* Llama-3 instruct */
        if (!system)
            system = "You are a helpful assistant.";
        return _apb_asprintf("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n%s"
                             "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n", system, user);
    }
    apb_fail(err, APB_E_MODEL, "--chat: the tokenizer has neither ChatML (<|im_start|>) nor Llama-3 "
                               "(<|start_header_id|>) tokens");
    return NULL;
}

/* ------------------------------------------------------------------ the model's chat_template */

/* A growing string. */
struct _apb_sb {
    char *s;
    size_t n, cap;
    int oom;
};

static void _apb_sb_addn(struct _apb_sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void _apb_sb_add(struct _apb_sb *b, const char *s) { _apb_sb_addn(b, s, strlen(s)); }

/* Jinja's `trim` (Python's str.strip(): ASCII whitespace here). */
static void _apb_sb_add_trimmed(struct _apb_sb *b, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    _apb_sb_addn(b, s, n);
}

/* The template with the escapes of Jinja string literals that the known forms use (\n, \', \",
 * \\) decoded: tokenizer_config.json may hold either a newline or a backslash-n inside a literal,
 * and Jinja renders both as a newline. Outside literals the known forms have no backslash. */
static char *_apb_unescape(const char *t)
{
    size_t n = strlen(t);
    char *o = malloc(n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\\' && i + 1 < n && strchr("n'\"\\", t[i + 1])) {
            i++;
            *p++ = t[i] == 'n' ? '\n' : t[i];
        } else {
            *p++ = t[i];
        }
    }
    *p = '\0';
    return o;
}

static const char _apb_chatml_body[] =
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
static const char _apb_chatml_loop[] = "{% for message in messages %}";
static const char _apb_chatml_sys0[] =
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n";
static const char _apb_chatml_sys1[] = "<|im_end|>\n' }}{% endif %}";
static const char _apb_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}";

/* SmolLM2 / Qwen2 ChatML: *sys gets the default system line (malloc'd; NULL when the form has none).
 * Returns 1 when the template is one of the two ChatML forms. */
static int _apb_match_chatml(const char *t, char **sys)
{
    *sys = NULL;
    size_t nl = strlen(_apb_chatml_loop), nb = strlen(_apb_chatml_body), n = strlen(t);
    if (strncmp(t, _apb_chatml_loop, nl) != 0 || n < nl + nb || strcmp(t + n - nb, _apb_chatml_body) != 0)
        return 0;
    const char *mid = t + nl;
    size_t nmid = n - nl - nb;
    if (nmid == 0)
        return 1; /* no default system line */
    size_t n0 = strlen(_apb_chatml_sys0), n1 = strlen(_apb_chatml_sys1);
    if (nmid < n0 + n1 || strncmp(mid, _apb_chatml_sys0, n0) != 0 ||
        strncmp(mid + nmid - n1, _apb_chatml_sys1, n1) != 0)
        return 0;
    size_t ns = nmid - n0 - n1;
    if (memchr(mid + n0, '\'', ns)) /* the line must be one string literal */
        return 0;
    *sys = malloc(ns + 1);
    if (*sys) {
        memcpy(*sys, mid + n0, ns);
        (*sys)[ns] = '\0';
    }
    return *sys ? 1 : -1;
}

/* Llama-3.1 / 3.2 / 3.3: the marks of the form and its default date (into date[], or today when the
 * template calls strftime_now). Returns 1 when recognised. */
static int _apb_match_llama31(const char *t, char *date, size_t date_len)
{
    static const char *const marks[] = {
        "bos_token", "<|start_header_id|>system<|end_header_id|>\n\n",
        "Cutting Knowledge Date: December 2023\n", "\"Today Date: \" + date_string + \"\n\n\"",
        "system_message = messages[0]['content']|trim", "{{- system_message }}",
        "<|end_header_id|>\n\n", "| trim", "<|eot_id|>", "add_generation_prompt",
        "<|start_header_id|>assistant<|end_header_id|>\n\n"};
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++)
        if (!strstr(t, marks[i]))
            return 0;
    if (strstr(t, "strftime_now")) { /* transformers defines it: today's date */
        time_t now = time(NULL);
        struct tm tm;
        if (!gmtime_r(&now, &tm) || strftime(date, date_len, "%d %b %Y", &tm) == 0)
            return 0;
        return 1;
    }
    const char *d = strstr(t, "set date_string = \"");
    if (!d)
        return 0;
    d += strlen("set date_string = \"");
    const char *e = strchr(d, '"');
    if (!e || (size_t)(e - d) >= date_len)
        return 0;
    memcpy(date, d, (size_t)(e - d));
    date[e - d] = '\0';
    return 1;
}

char *apb_chat_render(const char *tmpl, const char *bos_token, const char *system, const char *user,
                      apb_err *err)
{
    char *t = _apb_unescape(tmpl), *sys = NULL, date[64];
    struct _apb_sb b = {0};
    if (!t) {
        apb_fail(err, APB_E_NOMEM, "out of memory");
        return NULL;
    }
    int m = _apb_match_chatml(t, &sys), unknown = 0;
    if (m > 0) {
        const char *s = system ? system : sys; /* the template's default line, if it has one */
        if (s) {
            _apb_sb_add(&b, "<|im_start|>system\n");
            _apb_sb_add(&b, s);
            _apb_sb_add(&b, "<|im_end|>\n");
        }
        _apb_sb_add(&b, "<|im_start|>user\n");
        _apb_sb_add(&b, user);
        _apb_sb_add(&b, "<|im_end|>\n<|im_start|>assistant\n");
    } else if (m == 0 && strcmp(t, _apb_llama3) == 0) {
        _apb_sb_add(&b, bos_token ? bos_token : "<|begin_of_text|>");
        if (system) {
            _apb_sb_add(&b, "<|start_header_id|>system<|end_header_id|>\n\n");
            _apb_sb_add_trimmed(&b, system);
            _apb_sb_add(&b, "<|eot_id|>");
        }
        _apb_sb_add(&b, "<|start_header_id|>user<|end_header_id|>\n\n");
        _apb_sb_add_trimmed(&b, user);
        _apb_sb_add(&b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    } else if (m == 0 && _apb_match_llama31(t, date, sizeof date)) {
        _apb_sb_add(&b, bos_token ? bos_token : "<|begin_of_text|>");
        _apb_sb_add(&b, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                        "December 2023\nToday Date: ");
        _apb_sb_add(&b, date);
        _apb_sb_add(&b, "\n\n");
        _apb_sb_add_trimmed(&b, system ? system : "");
        _apb_sb_add(&b, "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n");
        _apb_sb_add_trimmed(&b, user);
        _apb_sb_add(&b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    } else if (m == 0) {
        unknown = 1;
    }
    free(t);
    free(sys);
    if (unknown || m < 0 || b.oom || !b.s) {
        free(b.s);
        if (unknown)
            apb_fail(err, APB_E_MODEL, "the chat_template is not one of the known forms (SmolLM2/Qwen2 "
                                       "ChatML, Llama-3, Llama-3.1)");
        else
            apb_fail(err, APB_E_NOMEM, "out of memory");
        return NULL;
    }
    return b.s;
}

int apb_chat_config_load(const char *dir, char **tmpl, char **bos, apb_err *err)
{
    *tmpl = *bos = NULL;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/tokenizer_config.json", dir) >= (int)sizeof path)
        return apb_fail(err, APB_E_USAGE, "%s: path too long", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? APB_OK : apb_fail(err, APB_E_IO, "%s: %s", path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(f, 0, &je);
    fclose(f);
    if (!root)
        return apb_fail(err, APB_E_FORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = APB_OK;
    const json_t *ct = json_object_get(root, "chat_template");
    if (json_is_array(ct)) { /* [{"name": ..., "template": ...}]: the one named "default" */
        size_t i;
        const json_t *e, *pick = NULL;
        json_array_foreach(ct, i, e) {
            const char *nm = json_string_value(json_object_get(e, "name"));
            if (nm && !strcmp(nm, "default"))
                pick = json_object_get(e, "template");
        }
        ct = pick;
    }
    const json_t *bt = json_object_get(root, "bos_token");
    if (json_is_object(bt)) /* older configs: {"content": "<s>", ...} */
        bt = json_object_get(bt, "content");
    if (json_is_string(ct) && !(*tmpl = strdup(json_string_value(ct))))
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    if (!rc && json_is_string(bt) && !(*bos = strdup(json_string_value(bt))))
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    json_decref(root);
    if (rc) {
        free(*tmpl);
        free(*bos);
        *tmpl = *bos = NULL;
    }
    return rc;
}
