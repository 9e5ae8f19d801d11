/* SPDX-License-Identifier: MIT */
/**
 * @brief `--embeds` files (models/embeds.c): the layout (embeds (n, dim) F32/F16/BF16, position_ids
 * (3, n) or (n,) I32/I64, optional), the ids a row gets, and every refusal (wrong dim, dtype,
 * truncated, lying shapes, NaN rows, ids out of range, 3-D ids without mRoPE, too many rows).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/embeds.h"

#define expect_err(rc, err, want_code, sub)                                                                  \
    do {                                                                                                     \
        cr_assert_eq((rc), (want_code), "status %d (want %d): %s", (rc), (want_code), (err).msg);           \
        cr_assert(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub));               \
    } while (0)

typedef struct {
    const char *name, *dtype, *shape; /* shape as JSON, e.g. "[3, 5]" */
    const void *data;
    size_t nbytes;
} t_tensor;

/* A safetensors image of the tensors (header padded to 8); *len gets its size. */
static uint8_t *st_build(const t_tensor *t, int n, size_t *len)
{
    char hdr[4096];
    size_t off = 0, hl = 0;
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "{");
    for (int i = 0; i < n; i++) {
        hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, "
                               "\"data_offsets\": [%zu, %zu]}", i ? ", " : "", t[i].name, t[i].dtype, t[i].shape,
                               off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    hl += (size_t)snprintf(hdr + hl, sizeof hdr - hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    uint8_t *b = malloc(8 + hl + off);
    uint64_t h64 = hl;
    memcpy(b, &h64, 8);
    memcpy(b + 8, hdr, hl);
    size_t p = 8 + hl;
    for (int i = 0; i < n; i++) {
        memcpy(b + p, t[i].data, t[i].nbytes);
        p += t[i].nbytes;
    }
    *len = p;
    return b;
}

enum { N = 5, D = 4 };
static float x32[N * D];
static int64_t pos64[3 * N] = {0, 1, 1, 1, 3, /* t */ 0, 1, 1, 2, 3, /* h */ 0, 1, 2, 1, 3 /* w */};

static void init_x(void)
{
    for (int i = 0; i < N * D; i++)
        x32[i] = (float)(i % 7) * 0.25f - 0.5f;
}

TestSuite(embeds, .init = init_x);

static int parse_tensors(const t_tensor *t, int n, int dim, int mrope, long long max_rows, apb_embeds *e,
                         apb_err *err)
{
    size_t len;
    uint8_t *b = st_build(t, n, &len);
    int rc = apb_embeds_parse(b, len, "v.safetensors", dim, mrope, max_rows, e, err);
    free(b);
    return rc;
}

Test(embeds, f32_with_3d_ids)
{
    t_tensor t[2] = {{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[3, 5]", pos64, sizeof pos64}};
    apb_embeds e;
    apb_err err = {0};
    cr_assert_eq(parse_tensors(t, 2, D, 1, 1000, &e, &err), APB_OK, "%s", err.msg);
    cr_assert(e.n == N && e.dim == D && e.pos3 == 1 && e.next_pos == 4);
    cr_assert_eq(memcmp(e.x, x32, sizeof x32), 0);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < 3; c++)
            cr_assert_eq(e.pos[3 * r + c], pos64[c * N + r], "row %d id %d", r, c);
    apb_embeds_free(&e);
}

Test(embeds, bf16_1d_ids_and_default_ids)
{
    uint16_t xb[N * D];
    for (int i = 0; i < N * D; i++) {
        uint32_t u;
        memcpy(&u, &x32[i], 4); /* the values are exact in bf16 */
        xb[i] = (uint16_t)(u >> 16);
    }
    int32_t p1[N] = {7, 8, 9, 10, 11};
    t_tensor t[2] = {{"embeds", "BF16", "[5, 4]", xb, sizeof xb}, {"position_ids", "I32", "[5]", p1, sizeof p1}};
    apb_embeds e;
    apb_err err = {0};
    cr_assert_eq(parse_tensors(t, 2, D, 0, 1000, &e, &err), APB_OK, "%s", err.msg);
    cr_assert(e.pos3 == 0 && e.next_pos == 12);
    cr_assert_eq(memcmp(e.x, x32, sizeof x32), 0);
    for (int r = 0; r < N; r++)
        cr_assert(e.pos[3 * r] == 7 + r && e.pos[3 * r + 1] == 7 + r && e.pos[3 * r + 2] == 7 + r);
    apb_embeds_free(&e);
    /* without position_ids: 0 .. n-1 */
    cr_assert_eq(parse_tensors(t, 1, D, 1, 1000, &e, &err), APB_OK, "%s", err.msg);
    cr_assert(e.pos[3 * 4] == 4 && e.pos[3 * 4 + 2] == 4 && e.next_pos == N);
    apb_embeds_free(&e);
}

Test(embeds, refusals)
{
    apb_embeds e;
    apb_err err = {0};
    int32_t p32[3 * N] = {0};
    float xn[N * D];
    memcpy(xn, x32, sizeof xn);
    xn[2 * D + 1] = NAN;
    float xi[N * D];
    memcpy(xi, x32, sizeof xi);
    xi[4 * D + 3] = INFINITY;
    int64_t neg[N] = {0, 1, -2, 3, 4};
    int64_t big[N] = {0, 1, 2, 3, (int64_t)1 << 40};
    struct {
        t_tensor t[2];
        int n, dim, mrope;
        long long max_rows;
        int code;
        const char *msg;
    } bad[] = {
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}}, 1, 8, 1, 1000, APB_E_MODEL,
         "rows have 4 values, the model's hidden size is 8"},
        {{{"embeds", "F32", "[20]", x32, sizeof x32}}, 1, D, 1, 1000, APB_E_FORMAT, "has 1 dimensions"},
        {{{"embeds", "I32", "[5, 4]", x32, sizeof x32}}, 1, D, 1, 1000, APB_E_FORMAT, "dtype I32"},
        {{{"embeds", "F32", "[0, 4]", x32, 0}}, 1, D, 1, 1000, APB_E_FORMAT, "has no rows"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}}, 1, D, 1, 4, APB_E_USAGE, "5 rows, more than the limit of 4"},
        {{{"embeds", "F32", "[5, 4]", xn, sizeof xn}}, 1, D, 1, 1000, APB_E_FORMAT, "row 2 has a non-finite value"},
        {{{"embeds", "F32", "[5, 4]", xi, sizeof xi}}, 1, D, 1, 1000, APB_E_FORMAT, "row 4 has a non-finite value"},
        {{{"x", "F32", "[5, 4]", x32, sizeof x32}}, 1, D, 1, 1000, APB_E_FORMAT, "unknown tensor 'x'"},
        {{{"position_ids", "I32", "[3, 5]", p32, sizeof p32}}, 1, D, 1, 1000, APB_E_FORMAT, "no tensor 'embeds'"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I32", "[3, 4]", p32, 48}}, 2, D, 1, 1000,
         APB_E_FORMAT, "must have shape (3, 5) or (5,)"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "F32", "[3, 5]", p32, sizeof p32}}, 2, D, 1,
         1000, APB_E_FORMAT, "dtype F32 (I32 or I64 expected)"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[5]", neg, sizeof neg}}, 2, D, 1,
         1000, APB_E_FORMAT, "row 2 = -2 is out of range"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[5]", big, sizeof big}}, 2, D, 1,
         1000, APB_E_FORMAT, "row 4 = 1099511627776 is out of range"},
        {{{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[3, 5]", pos64, sizeof pos64}}, 2, D,
         0, 1000, APB_E_MODEL, "row 2 has 3-D position ids (1, 1, 2) but the model has no mRoPE"},
        /* a lying shape: 6 rows declared over 5 rows of data */
        {{{"embeds", "F32", "[6, 4]", x32, sizeof x32}}, 1, D, 1, 1000, APB_E_FORMAT, "v.safetensors"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        int rc = parse_tensors(bad[i].t, bad[i].n, bad[i].dim, bad[i].mrope, bad[i].max_rows, &e, &err);
        cr_log_info("case %zu: %s", i, err.msg);
        expect_err(rc, err, bad[i].code, bad[i].msg);
        cr_assert(e.x == NULL && e.pos == NULL && e.n == 0, "case %zu leaves no allocation", i);
    }
    /* truncated: every cut of a valid file is refused with a message */
    t_tensor ok[2] = {{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[3, 5]", pos64, sizeof pos64}};
    size_t len;
    uint8_t *b = st_build(ok, 2, &len);
    for (size_t cut = 0; cut < len; cut += 7) {
        memset(&err, 0, sizeof err);
        cr_assert_neq(apb_embeds_parse(b, cut, "cut", D, 1, 1000, &e, &err), APB_OK, "cut at %zu accepted", cut);
        cr_assert(err.msg[0]);
    }
    free(b);
}

Test(embeds, load_from_file)
{
    t_tensor t[2] = {{"embeds", "F32", "[5, 4]", x32, sizeof x32}, {"position_ids", "I64", "[3, 5]", pos64, sizeof pos64}};
    size_t len;
    uint8_t *b = st_build(t, 2, &len);
    char path[] = "/tmp/apb_embeds_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
    free(b);
    apb_embeds e;
    apb_err err = {0};
    cr_assert_eq(apb_embeds_load(path, D, 1, 1000, &e, &err), APB_OK, "%s", err.msg);
    cr_assert(e.n == N && e.next_pos == 4);
    apb_embeds_free(&e);
    expect_err(apb_embeds_load(path, 6, 1, 1000, &e, &err), err, APB_E_MODEL, path);
    unlink(path);
    cr_assert_neq(apb_embeds_load(path, D, 1, 1000, &e, &err), APB_OK);
    cr_assert(strstr(err.msg, path), "%s", err.msg);
}

/* scripts/video_embeds.py (skipped without $APB_PYTHON): 4 frames at 448 x 448 after 3 text rows
 * give the Qwen2.5-VL grid (2, 16, 16) = 512 tokens; at 2 fps t ids step by 2; text after at 19. */
Test(embeds, video_script)
{
    const char *py = getenv("APB_PYTHON"), *src = getenv("top_srcdir");
    if (!py || !*py)
        cr_skip_test("APB_PYTHON not set");
    char path[] = "/tmp/apb_video_XXXXXX", cmd[2048];
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s %s/scripts/video_embeds.py %s --frames 4 --height 448 --width 448 --dim 16 "
             "--text-before 3 2>/dev/null", py, src ? src : ".", path);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    apb_embeds e;
    apb_err err = {0};
    cr_assert_eq(apb_embeds_load(path, 16, 1, 1 << 20, &e, &err), APB_OK, "%s", err.msg);
    unlink(path);
    cr_assert_eq(e.n, 3 + 2 * 16 * 16);
    cr_assert(e.pos3 && e.next_pos == 19, "next_pos %d", e.next_pos);
    const int32_t *p = e.pos;
    cr_assert(p[3 * 2] == 2 && p[3 * 2 + 1] == 2 && p[3 * 2 + 2] == 2);          /* last text row */
    cr_assert(p[3 * 3] == 3 && p[3 * 3 + 1] == 3 && p[3 * 3 + 2] == 3);          /* first patch */
    cr_assert(p[3 * 4] == 3 && p[3 * 4 + 1] == 3 && p[3 * 4 + 2] == 4);          /* w steps first */
    cr_assert(p[3 * 19] == 3 && p[3 * 19 + 1] == 4 && p[3 * 19 + 2] == 3);       /* then h */
    cr_assert(p[3 * 259] == 5 && p[3 * 259 + 1] == 3 && p[3 * 259 + 2] == 3);    /* second t: 1 * 2 */
    cr_assert(p[3 * 514] == 5 && p[3 * 514 + 1] == 18 && p[3 * 514 + 2] == 18);  /* last patch */
    apb_embeds_free(&e);
}
