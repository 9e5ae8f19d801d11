/* SPDX-License-Identifier: MIT */
/**
 * @brief safetensors reader: valid single and sharded files, F16/BF16 conversion (every F16 value),
 * and one test per malformed-header case, each checking the status code and the message.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/safetensors.h"

/* ------------------------------------------------------------------ temp dir helpers */

#include "tests/models/test_tmpdir.h"

TestSuite(st, .init = setup, .fini = teardown);

static const char *path_of(const char *name)
{
    static char p[PATH_MAX + 256];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    return p;
}

static void write_raw(const char *name, const void *buf, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    cr_assert(f, "cannot create %s", name);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

/* header length (little-endian u64) + header + data */
static void write_st(const char *name, const char *header, const void *data, size_t n)
{
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + n + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (n)
        memcpy(buf + 8 + hl, data, n);
    write_raw(name, buf, 8 + hl + n);
    free(buf);
}

/* Opens a one-file set from a header and a zero-filled data section of n bytes. */
static int open_header(const char *header, size_t n, apb_st_set **s, apb_err *err)
{
    uint8_t *zeros = calloc(1, n + 1);
    write_st("t.safetensors", header, zeros, n);
    free(zeros);
    return apb_st_open_file(path_of("t.safetensors"), s, err);
}

#define expect_err(rc, err, want_code, sub)                                                                  \
    do {                                                                                                     \
        cr_assert_eq((rc), (want_code), "status %d (want %d): %s", (rc), (want_code), (err).msg);           \
        cr_assert(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub));               \
    } while (0)

/* Independent binary16 decoder for reference. */
static double ref_half(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e == 0 ? ldexp(m, -24) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* ------------------------------------------------------------------ valid files */

static const uint16_t half_vals[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x8000};
static const float f32_vals[] = {1.5f, -2.25f, 3.0f, 0.0f, 1e-30f, -7.0f};
static const uint16_t bf16_vals[] = {0x3f80, 0xc040, 0x7f80};

/* a: F32 [2, 3]; b: F16 [10]; c: BF16 [3] */
static void write_valid(const char *name)
{
    uint8_t data[24 + 20 + 6];
    memcpy(data, f32_vals, 24);
    for (int i = 0; i < 10; i++) {
        data[24 + 2 * i] = half_vals[i] & 0xff;
        data[24 + 2 * i + 1] = half_vals[i] >> 8;
    }
    for (int i = 0; i < 3; i++) {
        data[44 + 2 * i] = bf16_vals[i] & 0xff;
        data[44 + 2 * i + 1] = bf16_vals[i] >> 8;
    }
    write_st(name,
             "{\"__metadata__\":{\"format\":\"pt\"},"
             "\"c\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[44,50]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"b\":{\"dtype\":\"F16\",\"shape\":[10],\"data_offsets\":[24,44]}}",
             data, sizeof data);
}

Test(st, valid_file_and_conversions)
{
    write_valid("model.safetensors");
    apb_st_set *s;
    apb_err err = {0};
    int rc = apb_st_open_file(path_of("model.safetensors"), &s, &err);
    cr_assert_eq(rc, APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 3);
    cr_assert_str_eq(apb_st_at(s, 0)->name, "a");
    cr_assert_null(apb_st_at(s, 3));
    cr_assert_null(apb_st_find(s, "zz"));
    cr_assert_null(apb_st_find(s, "__metadata__"));

    const apb_st_tensor *a = apb_st_find(s, "a"), *b = apb_st_find(s, "b"), *c = apb_st_find(s, "c");
    cr_assert(a && b && c);
    cr_assert_eq(a->dtype, APB_F32);
    cr_assert_eq(a->ndim, 2);
    cr_assert_eq(a->shape[0], 2);
    cr_assert_eq(a->shape[1], 3);
    cr_assert_eq(a->nbytes, 24);
    cr_assert_eq(b->dtype, APB_F16);
    cr_assert_eq(b->nbytes, 20);
    cr_assert_eq(c->dtype, APB_BF16);
    cr_assert_eq((const uint8_t *)b->data - (const uint8_t *)a->data, 24);

    float f[10];
    cr_assert_eq(apb_to_f32(f, a->data, a->dtype, 6, &err), APB_OK);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(f[i], f32_vals[i]);

    cr_assert_eq(apb_to_f32(f, b->data, b->dtype, 10, &err), APB_OK);
    cr_assert_eq(f[0], 1.0f);
    cr_assert_eq(f[1], -2.0f);
    cr_assert_eq(f[2], ldexpf(1.0f, -24), "smallest subnormal: %a", f[2]);
    cr_assert_eq(f[3], 1023.0f * ldexpf(1.0f, -24), "largest subnormal: %a", f[3]);
    cr_assert_eq(f[4], ldexpf(1.0f, -14));
    cr_assert_eq(f[5], 65504.0f);
    cr_assert(isinf(f[6]) && f[6] > 0);
    cr_assert(isinf(f[7]) && f[7] < 0);
    cr_assert(isnan(f[8]));
    cr_assert(f[9] == 0.0f && signbit(f[9]), "-0 keeps its sign");

    cr_assert_eq(apb_to_f32(f, c->data, c->dtype, 3, &err), APB_OK);
    cr_assert_eq(f[0], 1.0f);
    cr_assert_eq(f[1], -3.0f);
    cr_assert(isinf(f[2]) && f[2] > 0);
    apb_st_close(s);
}

Test(st, f16_every_value)
{
    uint8_t src[2 * 65536];
    for (int h = 0; h < 65536; h++) {
        src[2 * h] = h & 0xff;
        src[2 * h + 1] = (uint8_t)(h >> 8);
    }
    float *f = malloc(sizeof(float) * 65536);
    apb_err err = {0};
    cr_assert_eq(apb_to_f32(f, src, APB_F16, 65536, &err), APB_OK);
    for (int h = 0; h < 65536; h++) {
        double r = ref_half((uint16_t)h);
        if (isnan(r))
            cr_assert(isnan(f[h]), "0x%04x -> %a, want NaN", h, f[h]);
        else
            cr_assert((double)f[h] == r && !signbit(f[h]) == !signbit(r), "0x%04x -> %a, want %a", h, f[h], r);
    }
    free(f);
}

Test(st, bf16_every_value_and_unaligned_f32)
{
    uint8_t src[2 * 65536 + 1];
    for (int h = 0; h < 65536; h++) {
        src[1 + 2 * h] = h & 0xff;
        src[1 + 2 * h + 1] = (uint8_t)(h >> 8);
    }
    float *f = malloc(sizeof(float) * 65536);
    apb_err err = {0};
    cr_assert_eq(apb_to_f32(f, src + 1, APB_BF16, 65536, &err), APB_OK); /* odd address */
    for (int h = 0; h < 65536; h++) {
        uint32_t bits;
        memcpy(&bits, &f[h], 4);
        cr_assert_eq(bits, (uint32_t)h << 16, "0x%04x", h);
    }
    uint8_t raw[4 * 6 + 3];
    memcpy(raw + 3, f32_vals, sizeof f32_vals);
    cr_assert_eq(apb_to_f32(f, raw + 3, APB_F32, 6, &err), APB_OK);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(f[i], f32_vals[i]);
    int32_t ints[2] = {1, 2};
    expect_err(apb_to_f32(f, ints, APB_I32, 2, &err), err, APB_E_MODEL, "I32");
    free(f);
}

Test(st, dtype_table)
{
    cr_assert_eq(apb_dtype_size(APB_F32), 4);
    cr_assert_eq(apb_dtype_size(APB_BF16), 2);
    cr_assert_eq(apb_dtype_size(APB_F64), 8);
    cr_assert_eq(apb_dtype_size(APB_BOOL), 1);
    cr_assert_eq(apb_dtype_size(APB_U16), 2);
    cr_assert_str_eq(apb_dtype_name(APB_I64), "I64");
    cr_assert_str_eq(apb_dtype_name(APB_BF16), "BF16");
}

Test(st, every_dtype_and_empty_tensor)
{
    static const char *names[] = {"F32", "F16", "BF16", "F64", "I32", "I64", "U8", "I8", "BOOL", "I16", "U16"};
    static const size_t sizes[] = {4, 2, 2, 8, 4, 8, 1, 1, 1, 2, 2};
    char h[4096];
    size_t at = (size_t)snprintf(h, sizeof h, "{\"empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]}");
    uint64_t off = 0;
    for (int i = 0; i < 11; i++) {
        at += (size_t)snprintf(h + at, sizeof h - at,
                               ",\"t%d\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[%llu,%llu]}", i, names[i],
                               (unsigned long long)off, (unsigned long long)(off + 3 * sizes[i]));
        off += 3 * sizes[i];
    }
    snprintf(h + at, sizeof h - at, "}");
    apb_st_set *s;
    apb_err err = {0};
    int rc = open_header(h, off, &s, &err);
    cr_assert_eq(rc, APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 12);
    for (int i = 0; i < 11; i++) {
        char n[16];
        snprintf(n, sizeof n, "t%d", i);
        const apb_st_tensor *t = apb_st_find(s, n);
        cr_assert(t);
        cr_assert_eq((int)t->dtype, i);
        cr_assert_eq(t->nbytes, 3 * sizes[i]);
    }
    cr_assert_eq(apb_st_find(s, "empty")->nbytes, 0);
    apb_st_close(s);
}

Test(st, parse_in_memory)
{
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t hl = strlen(hdr);
    uint8_t buf[256] = {0};
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, hdr, hl);
    float v[2] = {4.0f, -1.0f};
    memcpy(buf + 8 + hl, v, 8);
    apb_st_set *s;
    apb_err err = {0};
    cr_assert_eq(apb_st_parse(buf, 8 + hl + 8, "mem", &s, &err), APB_OK, "%s", err.msg);
    const apb_st_tensor *t = apb_st_find(s, "x");
    cr_assert(t);
    cr_assert_eq((const uint8_t *)t->data, buf + 8 + hl, "points into the caller's buffer");
    apb_st_close(s);
    /* one byte short of the data */
    expect_err(apb_st_parse(buf, 8 + hl + 7, "mem", &s, &err), err, APB_E_FORMAT, "mem: tensor 'x'");
    cr_assert_null(s);
}

/* Random byte flips of a valid image: every outcome is either a clean error or tensors inside the buffer. */
Test(st, mutated_headers_never_escape_the_buffer)
{
    write_valid("v.safetensors");
    FILE *f = fopen(path_of("v.safetensors"), "rb");
    uint8_t orig[1024];
    size_t len = fread(orig, 1, sizeof orig, f);
    fclose(f);
    uint64_t r = 12345;
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t buf[1024];
        memcpy(buf, orig, len);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (r >> 33) % len;
            static const char pick[] = "0123456789[]{},:\"-eE. \x01\xff";
            buf[pos] = (it & 1) ? (uint8_t)(r >> 20) : (uint8_t)pick[(r >> 13) % (sizeof pick - 1)];
        }
        apb_st_set *s = NULL;
        apb_err err = {0};
        if (apb_st_parse(buf, len, "fuzz", &s, &err) == APB_OK) {
            ok++;
            for (size_t i = 0; i < apb_st_count(s); i++) {
                const apb_st_tensor *t = apb_st_at(s, i);
                const uint8_t *p = t->data;
                cr_assert(p >= buf + 8 && p + t->nbytes <= buf + len, "tensor %s escapes", t->name);
            }
            apb_st_close(s);
        } else {
            cr_assert(err.code == APB_E_FORMAT && err.msg[0], "code %d", err.code);
            cr_assert_null(s);
        }
    }
    cr_assert(ok > 0, "some mutations (inside data) must still parse");
}

/* ------------------------------------------------------------------ directories and shards */

static const char *shard1_hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
static const char *shard2_hdr = "{\"c\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";

static void write_shards(const char *name1, const char *name2)
{
    float d1[3] = {1, 2, 3}, d2[3] = {4, 5, 6};
    write_st(name1, shard1_hdr, d1, sizeof d1);
    write_st(name2, shard2_hdr, d2, sizeof d2);
}

static void write_index(const char *body)
{
    char text[1024];
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":24},\"weight_map\":%s}", body);
    write_raw("model.safetensors.index.json", text, strlen(text));
}

Test(st, sharded)
{
    write_shards("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    write_index("{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
                "\"c\":\"model-00002-of-00002.safetensors\"}");
    apb_st_set *s;
    apb_err err = {0};
    cr_assert_eq(apb_st_open_dir(tmp, &s, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 3);
    const apb_st_tensor *a = apb_st_find(s, "a"), *c = apb_st_find(s, "c");
    cr_assert(a && c);
    cr_assert_neq(a->file, c->file);
    float f[3];
    apb_to_f32(f, c->data, c->dtype, 3, &err);
    cr_assert(f[0] == 4 && f[1] == 5 && f[2] == 6);
    apb_to_f32(f, a->data, a->dtype, 2, &err);
    cr_assert(f[0] == 1 && f[1] == 2);
    apb_st_close(s);
}

Test(st, dir_prefers_model_safetensors_then_globs)
{
    apb_st_set *s;
    apb_err err = {0};
    write_shards("x1.safetensors", "x2.safetensors");
    cr_assert_eq(apb_st_open_dir(tmp, &s, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 3, "every *.safetensors when there is no index or model.safetensors");
    apb_st_close(s);
    write_valid("model.safetensors");
    cr_assert_eq(apb_st_open_dir(tmp, &s, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 3);
    cr_assert_not_null(apb_st_find(s, "a"));
    cr_assert_eq(apb_st_find(s, "c")->dtype, APB_BF16, "model.safetensors alone is read");
    apb_st_close(s);
}

Test(st, empty_dir_and_missing_dir)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_IO, "no model.safetensors.index.json");
    expect_err(apb_st_open_dir(path_of("nope"), &s, &err), err, APB_E_IO, "nope");
    expect_err(apb_st_open_file(path_of("nope.safetensors"), &s, &err), err, APB_E_IO, "nope.safetensors");
}

Test(st, index_missing_shard)
{
    write_shards("s1.safetensors", "s2.safetensors");
    write_index("{\"a\":\"s1.safetensors\",\"c\":\"missing-00002.safetensors\"}");
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_IO, "missing-00002.safetensors");
    cr_assert(strstr(err.msg, "model.safetensors.index.json"), "%s", err.msg);
}

Test(st, index_path_escape)
{
    write_shards("s1.safetensors", "s2.safetensors");
    apb_st_set *s;
    apb_err err = {0};
    write_index("{\"a\":\"../x\"}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "'../x' is not a plain file name");
    write_index("{\"a\":\"/etc/passwd\"}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "not a plain file name");
    write_index("{\"a\":\"..\"}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "not a plain file name");
}

Test(st, index_tensor_not_in_named_shard)
{
    write_shards("s1.safetensors", "s2.safetensors");
    apb_st_set *s;
    apb_err err = {0};
    write_index("{\"a\":\"s1.safetensors\",\"c\":\"s1.safetensors\",\"x\":\"s2.safetensors\"}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "tensor 'c' is mapped to s1.safetensors");
    write_index("{\"a\":\"s1.safetensors\",\"zz\":\"s2.safetensors\"}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "tensor 'zz'");
}

Test(st, index_malformed)
{
    apb_st_set *s;
    apb_err err = {0};
    write_raw("model.safetensors.index.json", "{\"weight_map\":", 14);
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "invalid JSON");
    write_raw("model.safetensors.index.json", "{\"x\":{}}", 8);
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "weight_map");
    write_index("{\"a\":3}");
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "not a string");
}

Test(st, duplicate_across_shards)
{
    float d[3] = {0};
    write_st("s1.safetensors", shard2_hdr, d, sizeof d);
    write_st("s2.safetensors", shard2_hdr, d, sizeof d);
    write_index("{\"c\":\"s1.safetensors\",\"d\":\"s2.safetensors\"}");
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_dir(tmp, &s, &err), err, APB_E_FORMAT, "duplicate tensor name 'c'");
}

/* ------------------------------------------------------------------ malformed single files */

Test(st, too_short)
{
    write_raw("t.safetensors", "\x05\x00\x00", 3);
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_file(path_of("t.safetensors"), &s, &err), err, APB_E_FORMAT, "too short");
    cr_assert_null(s);
    write_raw("t.safetensors", "", 0);
    expect_err(apb_st_open_file(path_of("t.safetensors"), &s, &err), err, APB_E_FORMAT, "0 bytes");
}

Test(st, truncated)
{
    uint8_t buf[28] = {0xe8, 0x03}; /* header length 1000, file of 28 bytes */
    memcpy(buf + 8, "{\"a\":{}}", 8);
    write_raw("t.safetensors", buf, sizeof buf);
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_file(path_of("t.safetensors"), &s, &err), err, APB_E_FORMAT,
               "header length 1000 exceeds the file size 28");
    buf[7] = 0xff; /* ~2^64: no wrap-around */
    write_raw("t.safetensors", buf, sizeof buf);
    expect_err(apb_st_open_file(path_of("t.safetensors"), &s, &err), err, APB_E_FORMAT, "exceeds the file size");
}

Test(st, header_over_100mb)
{
    /* sparse file: 8-byte length + 101 MB of holes */
    const uint64_t hl = 101000000;
    int fd = open(path_of("big.safetensors"), O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(hl >> (8 * i));
    cr_assert_eq(write(fd, len, 8), 8);
    cr_assert_eq(ftruncate(fd, (off_t)(8 + hl + 16)), 0);
    close(fd);
    apb_st_set *s;
    apb_err err = {0};
    expect_err(apb_st_open_file(path_of("big.safetensors"), &s, &err), err, APB_E_FORMAT, "100 MB");
}

Test(st, invalid_json)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"a\": {\"dtype\": \"F32\",", 0, &s, &err), err, APB_E_FORMAT, "invalid JSON header");
    cr_assert(strstr(err.msg, "t.safetensors"), "%s", err.msg);
    expect_err(open_header("[1, 2]", 0, &s, &err), err, APB_E_FORMAT, "not a JSON object");
}

Test(st, missing_fields)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, &s, &err), err, APB_E_FORMAT,
               "tensor 'w': missing field 'data_offsets'");
    expect_err(open_header("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &s, &err), err, APB_E_FORMAT,
               "missing field 'dtype'");
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, &s, &err), err, APB_E_FORMAT,
               "missing field 'shape'");
    expect_err(open_header("{\"w\":[1]}", 4, &s, &err), err, APB_E_FORMAT, "not a JSON object");
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, &s, &err), err,
               APB_E_FORMAT, "two non-negative integers");
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}", 4, &s, &err), err,
               APB_E_FORMAT, "two non-negative integers");
    expect_err(open_header("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &s, &err), err,
               APB_E_FORMAT, "dtype is not a string");
}

Test(st, offsets_out_of_range)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[10],\"data_offsets\":[10,20]}}",
                           12, &s, &err),
               err, APB_E_FORMAT,
               "t.safetensors: tensor 'model.norm.weight': data_offsets [10, 20] exceed data size 12");
    expect_err(open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12, &s, &err), err,
               APB_E_FORMAT, "reversed");
    expect_err(open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 12, &s, &err), err,
               APB_E_FORMAT, "non-negative");
}

Test(st, overlapping)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                           12, &s, &err),
               err, APB_E_FORMAT, "overlap");
    /* one tensor inside another */
    expect_err(open_header("{\"a\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]},"
                           "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
                           "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[5,7]}}",
                           12, &s, &err),
               err, APB_E_FORMAT, "overlap");
    /* adjacent is fine */
    cr_assert_eq(open_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                             12, &s, &err),
                 APB_OK, "%s", err.msg);
    apb_st_close(s);
}

Test(st, size_mismatch)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, &s, &err), err,
               APB_E_FORMAT, "tensor 'w': data_offsets [0, 12] hold 12 bytes but shape [2, 2] of F32 needs 16");
}

Test(st, unknown_dtype)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 16, &s, &err), err,
               APB_E_FORMAT, "unknown dtype 'Q4'");
}

Test(st, shape_overflow)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,0]}}",
                           16, &s, &err),
               err, APB_E_FORMAT, "overflows");
    /* element count fits but the byte size does not */
    expect_err(open_header("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 16,
                           &s, &err),
               err, APB_E_FORMAT, "overflows");
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,0]}}", 16, &s, &err), err,
               APB_E_FORMAT, "shape[0] is not a non-negative integer");
    expect_err(open_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 16, &s,
                           &err),
               err, APB_E_FORMAT, "9 dimensions");
}

Test(st, duplicate_names)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                           "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                           2, &s, &err),
               err, APB_E_FORMAT, "duplicate");
}

Test(st, bad_metadata)
{
    apb_st_set *s;
    apb_err err = {0};
    expect_err(open_header("{\"__metadata__\":{\"format\":1}}", 0, &s, &err), err, APB_E_FORMAT, "__metadata__");
    expect_err(open_header("{\"__metadata__\":[]}", 0, &s, &err), err, APB_E_FORMAT, "__metadata__");
    cr_assert_eq(open_header("{\"__metadata__\":{\"format\":\"pt\"}}", 0, &s, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(apb_st_count(s), 0);
    apb_st_close(s);
}
