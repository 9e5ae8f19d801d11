/* SPDX-License-Identifier: MIT */
/**
 * @brief Memory-mapped safetensors files (single file or sharded with an index json).
 *
 * File layout: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}),
 * then the data section; offsets are relative to the start of the data section. Files are
 * mapped read-only and every header field is checked against the real file size before any
 * tensor pointer is handed out, so a lying header yields APB_E_FORMAT, never a wild read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/safetensors.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian; F32 tensors are used in place");

#define _APB_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* 100 MB, as the reference implementation */
#define _APB_ST_INDEX "model.safetensors.index.json"

/* One file of the set: either a private read-only mapping or a caller-owned buffer. */
typedef struct _apb_st_file {
    char *path;             /* as given / built, for messages */
    const uint8_t *base;
    size_t len;
    int mapped;             /* munmap on close */
} _apb_st_file;

struct apb_st_set {
    _apb_st_file *files;
    int n_files;
    apb_st_tensor *t;       /* sorted by name once the set is complete */
    size_t n, cap;
};

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} _apb_dtypes[] = {
    [APB_F32] = {"F32", 4}, [APB_F16] = {"F16", 2}, [APB_BF16] = {"BF16", 2}, [APB_F64] = {"F64", 8},
    [APB_I32] = {"I32", 4}, [APB_I64] = {"I64", 8}, [APB_U8] = {"U8", 1},     [APB_I8] = {"I8", 1},
    [APB_BOOL] = {"BOOL", 1}, [APB_I16] = {"I16", 2}, [APB_U16] = {"U16", 2},
};
#define _APB_N_DTYPES ((int)(sizeof _apb_dtypes / sizeof _apb_dtypes[0]))

size_t apb_dtype_size(enum apb_dtype t)
{
    return (int)t >= 0 && (int)t < _APB_N_DTYPES ? _apb_dtypes[t].size : 0;
}

const char *apb_dtype_name(enum apb_dtype t)
{
    return (int)t >= 0 && (int)t < _APB_N_DTYPES ? _apb_dtypes[t].name : "?";
}

static int _apb_dtype_parse(const char *s, enum apb_dtype *out)
{
    for (int i = 0; i < _APB_N_DTYPES; i++)
        if (strcmp(s, _apb_dtypes[i].name) == 0) {
            *out = (enum apb_dtype)i;
            return 1;
        }
    return 0;
}

/* "[a, b, c]" into buf (always terminated). */
static const char *_apb_shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
    return buf;
}

/* ------------------------------------------------------------------ set building */

static int _apb_st_new(apb_st_set **out, apb_err *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? APB_OK : apb_fail(err, APB_E_NOMEM, "out of memory opening safetensors");
}

/* Appends a file record; returns its index or -1 (out of memory). */
static int _apb_st_add_file(apb_st_set *s, const char *path, const uint8_t *base, size_t len, int mapped)
{
    _apb_st_file *f = realloc(s->files, sizeof *f * (size_t)(s->n_files + 1));
    if (!f)
        return -1;
    s->files = f;
    f = &s->files[s->n_files];
    f->path = strdup(path);
    if (!f->path)
        return -1;
    f->base = base;
    f->len = len;
    f->mapped = mapped;
    return s->n_files++;
}

static int _apb_st_reserve(apb_st_set *s, size_t extra)
{
    if (s->n + extra <= s->cap)
        return 1;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + extra)
        cap *= 2;
    apb_st_tensor *t = realloc(s->t, sizeof *t * cap);
    if (!t)
        return 0;
    s->t = t;
    s->cap = cap;
    return 1;
}

/* Reads a JSON integer into *v, rejecting reals, booleans and negatives. */
static int _apb_json_u64(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return 0;
    *v = (uint64_t)json_integer_value(j);
    return 1;
}

typedef struct _apb_span {
    uint64_t begin, end;
    const char *name;
} _apb_span;

static int _apb_span_cmp(const void *a, const void *b)
{
    const _apb_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Validates one tensor entry and fills t (name not yet set). */
static int _apb_st_tensor(const char *what, const char *name, json_t *v, const uint8_t *data,
                          uint64_t data_size, apb_st_tensor *t, _apb_span *span, apb_err *err)
{
    if (!json_is_object(v))
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': entry is not a JSON object", what, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': missing field '%s'", what, name,
                        !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd))
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': dtype is not a string", what, name);
    if (!_apb_dtype_parse(json_string_value(jd), &t->dtype))
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name,
                        json_string_value(jd));
    if (!json_is_array(js))
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': shape is not an array", what, name);
    size_t nd = json_array_size(js);
    if (nd > APB_ST_MAX_DIMS)
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': %zu dimensions (at most %d supported)", what,
                        name, nd, APB_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t count = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!_apb_json_u64(json_array_get(js, i), &d))
            return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                            what, name, i);
        t->shape[i] = (int64_t)d;
        overflow |= __builtin_mul_overflow(count, d, &count);
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(count, (uint64_t)apb_dtype_size(t->dtype), &nbytes);
    if (overflow || nbytes > SIZE_MAX) {
        char sh[256];
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': shape %s of %s overflows the size range", what,
                        name, _apb_shape_str(sh, sizeof sh, t->shape, t->ndim), apb_dtype_name(t->dtype));
    }
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !_apb_json_u64(json_array_get(jo, 0), &b) ||
        !_apb_json_u64(json_array_get(jo, 1), &e))
        return apb_fail(err, APB_E_FORMAT,
                        "%s: tensor '%s': data_offsets is not an array of two non-negative integers", what, name);
    if (b > e)
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", what, name,
                        (unsigned long long)b, (unsigned long long)e);
    if (e > data_size)
        return apb_fail(err, APB_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] exceed data size %llu",
                        what, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
    if (e - b != nbytes) {
        char sh[256];
        return apb_fail(err, APB_E_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
                        what, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b),
                        _apb_shape_str(sh, sizeof sh, t->shape, t->ndim), apb_dtype_name(t->dtype),
                        (unsigned long long)nbytes);
    }
    t->data = data + b;
    t->nbytes = (size_t)nbytes;
    span->begin = b;
    span->end = e;
    span->name = name;
    return APB_OK;
}

/* Parses the image of file `fi` of s and appends its tensors (unsorted). */
static int _apb_st_parse_into(apb_st_set *s, int fi, apb_err *err)
{
    const uint8_t *buf = s->files[fi].base;
    size_t len = s->files[fi].len;
    const char *what = s->files[fi].path;
    if (len < 8)
        return apb_fail(err, APB_E_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                        what, len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    if (hl > len - 8)
        return apb_fail(err, APB_E_FORMAT, "%s: header length %llu exceeds the file size %zu minus 8 (truncated?)",
                        what, (unsigned long long)hl, len);
    if (hl > _APB_ST_MAX_HEADER)
        return apb_fail(err, APB_E_FORMAT, "%s: header length %llu exceeds the 100 MB limit", what,
                        (unsigned long long)hl);
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (strstr(je.text, "duplicate"))
            return apb_fail(err, APB_E_FORMAT, "%s: duplicate tensor name in header: %s", what, je.text);
        return apb_fail(err, APB_E_FORMAT, "%s: invalid JSON header: %s (line %d, column %d)", what, je.text,
                        je.line, je.column);
    }
    int rc = APB_OK;
    _apb_span *spans = NULL;
    size_t n0 = s->n, ns = 0;
    if (!json_is_object(root)) {
        rc = apb_fail(err, APB_E_FORMAT, "%s: header is not a JSON object", what);
        goto out;
    }
    size_t n_entries = json_object_size(root);
    spans = malloc(sizeof *spans * (n_entries ? n_entries : 1));
    if (!spans || !_apb_st_reserve(s, n_entries)) {
        rc = apb_fail(err, APB_E_NOMEM, "%s: out of memory for %zu header entries", what, n_entries);
        goto out;
    }
    const uint8_t *data = buf + 8 + hl;
    uint64_t data_size = len - 8 - hl;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                rc = apb_fail(err, APB_E_FORMAT, "%s: __metadata__ is not a JSON object", what);
                goto out;
            }
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = apb_fail(err, APB_E_FORMAT, "%s: __metadata__ value '%s' is not a string", what, mk);
                    goto out;
                }
            }
            continue;
        }
        if (!*key) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: empty tensor name", what);
            goto out;
        }
        apb_st_tensor *t = &s->t[s->n];
        memset(t, 0, sizeof *t);
        rc = _apb_st_tensor(what, key, v, data, data_size, t, &spans[ns], err);
        if (rc)
            goto out;
        t->name = strdup(key);
        if (!t->name) {
            rc = apb_fail(err, APB_E_NOMEM, "out of memory");
            goto out;
        }
        t->file = fi;
        s->n++;
        ns++;
    }
    /* No two non-empty tensors may share a byte: sort by start, compare each with the furthest end. */
    qsort(spans, ns, sizeof *spans, _apb_span_cmp);
    const _apb_span *prev = NULL;
    for (size_t i = 0; i < ns; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (prev && spans[i].begin < prev->end) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", what,
                          prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end,
                          spans[i].name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
            goto out;
        }
        if (!prev || spans[i].end > prev->end)
            prev = &spans[i];
    }
out:
    if (rc) { /* drop this file's tensors */
        for (size_t i = n0; i < s->n; i++)
            free(s->t[i].name);
        s->n = n0;
    }
    free(spans);
    json_decref(root);
    return rc;
}

static int _apb_name_cmp(const void *a, const void *b)
{
    return strcmp(((const apb_st_tensor *)a)->name, ((const apb_st_tensor *)b)->name);
}

/* Sorts the tensors by name for bsearch and rejects names present twice (across files). */
static int _apb_st_finish(apb_st_set *s, apb_err *err)
{
    if (s->n)
        qsort(s->t, s->n, sizeof *s->t, _apb_name_cmp);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->t[i - 1].name, s->t[i].name) == 0)
            return apb_fail(err, APB_E_FORMAT, "duplicate tensor name '%s' in %s and %s", s->t[i].name,
                            s->files[s->t[i - 1].file].path, s->files[s->t[i].file].path);
    return APB_OK;
}

/* Maps `path` read-only and parses it into s. */
static int _apb_st_map_into(apb_st_set *s, const char *path, apb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return apb_fail(err, APB_E_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return apb_fail(err, APB_E_IO, "cannot read %s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *base = NULL;
    if (len > 0) {
        base = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            int e = errno;
            close(fd);
            return apb_fail(err, e == ENOMEM ? APB_E_NOMEM : APB_E_IO, "cannot map %s (%zu bytes): %s", path,
                            len, strerror(e));
        }
    }
    close(fd);
    int fi = _apb_st_add_file(s, path, base, len, len > 0);
    if (fi < 0) {
        if (base)
            munmap(base, len);
        return apb_fail(err, APB_E_NOMEM, "out of memory opening %s", path);
    }
    return _apb_st_parse_into(s, fi, err);
}

/* ------------------------------------------------------------------ public API */

int apb_st_parse(const uint8_t *buf, size_t len, const char *what, apb_st_set **out, apb_err *err)
{
    *out = NULL;
    apb_st_set *s;
    int rc = _apb_st_new(&s, err);
    if (rc)
        return rc;
    if (_apb_st_add_file(s, what ? what : "<memory>", buf, len, 0) < 0)
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
    if (!rc)
        rc = _apb_st_parse_into(s, 0, err);
    if (!rc)
        rc = _apb_st_finish(s, err);
    if (rc) {
        apb_st_close(s);
        return rc;
    }
    *out = s;
    return APB_OK;
}

int apb_st_open_file(const char *path, apb_st_set **out, apb_err *err)
{
    *out = NULL;
    apb_st_set *s;
    int rc = _apb_st_new(&s, err);
    if (!rc)
        rc = _apb_st_map_into(s, path, err);
    if (!rc)
        rc = _apb_st_finish(s, err);
    if (rc) {
        apb_st_close(s);
        return rc;
    }
    *out = s;
    return APB_OK;
}

/* Reads a small text file whole (NUL-terminated). */
static int _apb_read_text(const char *path, size_t max, char **out, size_t *len, apb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *b = cap <= max + 1 ? realloc(buf, cap + 1) : NULL;
            if (!b) {
                free(buf);
                fclose(f);
                return cap > max + 1 ? apb_fail(err, APB_E_FORMAT, "%s: larger than %zu bytes", path, max)
                                     : apb_fail(err, APB_E_NOMEM, "out of memory reading %s", path);
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return apb_fail(err, APB_E_IO, "error reading %s", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return APB_OK;
}

/* A shard named by the index must be a plain file name inside the model directory. */
static int _apb_plain_basename(const char *s)
{
    return *s && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static int _apb_open_sharded(apb_st_set *s, const char *dir, const char *index_path, apb_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = _apb_read_text(index_path, _APB_ST_MAX_HEADER, &text, &len, err);
    if (rc)
        return rc;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return apb_fail(err, APB_E_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", index_path, je.text,
                        je.line, je.column);
    json_t *map = json_object_get(root, "weight_map");
    const char **shards = NULL;
    int n_shards = 0;
    const char *key;
    json_t *v;
    char path[PATH_MAX];
    if (!json_is_object(map)) {
        rc = apb_fail(err, APB_E_FORMAT, "%s: missing object 'weight_map'", index_path);
        goto out;
    }
    /* unique shard names, in order of first appearance */
    shards = malloc(sizeof *shards * (json_object_size(map) + 1));
    if (!shards) {
        rc = apb_fail(err, APB_E_NOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(map, key, v) {
        if (!json_is_string(v)) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: weight_map['%s'] is not a string", index_path, key);
            goto out;
        }
        const char *f = json_string_value(v);
        if (!_apb_plain_basename(f)) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: weight_map['%s'] = '%s' is not a plain file name", index_path,
                          key, f);
            goto out;
        }
        int k = 0;
        while (k < n_shards && strcmp(shards[k], f) != 0)
            k++;
        if (k == n_shards)
            shards[n_shards++] = f;
    }
    if (n_shards == 0) {
        rc = apb_fail(err, APB_E_FORMAT, "%s: weight_map is empty", index_path);
        goto out;
    }
    for (int k = 0; k < n_shards; k++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, shards[k]) >= sizeof path) {
            rc = apb_fail(err, APB_E_IO, "%s/%s: path too long", dir, shards[k]);
            goto out;
        }
        rc = _apb_st_map_into(s, path, err);
        if (rc) {
            apb_err_prefix(err, "%s: ", index_path);
            goto out;
        }
    }
    rc = _apb_st_finish(s, err);
    if (rc)
        goto out;
    /* every mapped tensor must be in the shard the index names; files are opened in shard order */
    json_object_foreach(map, key, v) {
        const char *f = json_string_value(v);
        int k = 0;
        while (strcmp(shards[k], f) != 0)
            k++;
        const apb_st_tensor *t = apb_st_find(s, key);
        if (!t || t->file != k) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: tensor '%s' is mapped to %s but that file does not contain it%s%s",
                          index_path, key, f, t ? "; it is in " : "", t ? s->files[t->file].path : "");
            goto out;
        }
    }
out:
    free(shards);
    json_decref(root);
    return rc;
}

static int _apb_is_st_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 12 && strcmp(d->d_name + n - 12, ".safetensors") == 0;
}

int apb_st_open_dir(const char *dir, apb_st_set **out, apb_err *err)
{
    *out = NULL;
    apb_st_set *s;
    int rc = _apb_st_new(&s, err);
    if (rc)
        return rc;
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, _APB_ST_INDEX);
    if (stat(path, &st) == 0) {
        rc = _apb_open_sharded(s, dir, path, err);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) == 0) {
            rc = _apb_st_map_into(s, path, err);
        } else {
            /* neither: every *.safetensors in the directory, in name order */
            struct dirent **names = NULL;
            int n = scandir(dir, &names, _apb_is_st_name, alphasort);
            if (n < 0)
                rc = apb_fail(err, APB_E_IO, "cannot list %s: %s", dir, strerror(errno));
            else if (n == 0)
                rc = apb_fail(err, APB_E_IO, "%s: no %s, model.safetensors or *.safetensors", dir, _APB_ST_INDEX);
            for (int i = 0; i < (n > 0 ? n : 0); i++) {
                if (!rc) {
                    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
                    rc = _apb_st_map_into(s, path, err);
                }
                free(names[i]);
            }
            free(names);
        }
        if (!rc)
            rc = _apb_st_finish(s, err);
    }
    if (rc) {
        apb_st_close(s);
        return rc;
    }
    *out = s;
    return APB_OK;
}

size_t apb_st_count(const apb_st_set *s)
{
    return s ? s->n : 0;
}

const apb_st_tensor *apb_st_at(const apb_st_set *s, size_t i)
{
    return s && i < s->n ? &s->t[i] : NULL;
}

const apb_st_tensor *apb_st_find(const apb_st_set *s, const char *name)
{
    if (!s || !s->n)
        return NULL;
    apb_st_tensor key = {.name = (char *)name};
    return bsearch(&key, s->t, s->n, sizeof *s->t, _apb_name_cmp);
}

void apb_st_close(apb_st_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->t[i].name);
    free(s->t);
    for (int i = 0; i < s->n_files; i++) {
        if (s->files[i].mapped)
            munmap((void *)s->files[i].base, s->files[i].len);
        free(s->files[i].path);
    }
    free(s->files);
    free(s);
}

/* ------------------------------------------------------------------ conversion */

/* IEEE binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads). */
static inline float _apb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13; /* inf or NaN (payload kept, stays NaN) */
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | mant << 13; /* rebias 15 -> 127 */
    } else if (mant == 0) {
        bits = sign; /* +-0 */
    } else {
        /* subnormal: mant * 2^-24; normalise so the leading 1 lands on bit 10 */
        int shift = __builtin_clz(mant) - 21; /* mant < 2^10: clz >= 22, shift >= 1 */
        mant = (mant << shift) & 0x3ff;
        bits = sign | (uint32_t)(113 - shift) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int apb_to_f32(float *dst, const void *src, enum apb_dtype t, size_t n, apb_err *err)
{
    const uint8_t *p = src;
    switch (t) {
    case APB_F32:
        memcpy(dst, src, n * sizeof(float)); /* src may be unaligned */
        return APB_OK;
    case APB_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = _apb_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return APB_OK;
    case APB_BF16:
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &bits, sizeof bits);
        }
        return APB_OK;
    default:
        return apb_fail(err, APB_E_MODEL, "cannot convert %s to float (F32, F16 and BF16 only)", apb_dtype_name(t));
    }
}
