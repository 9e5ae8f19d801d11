/* SPDX-License-Identifier: MIT */
/**
 * @brief tokenizer.json byte-level BPE on small tokenizers built in the test: merge order and ties,
 * ignore_merges, added-token splitting (longest match, lstrip / rstrip / single_word), Digits, the
 * GPT-2 regex pieces, Split behaviors, TemplateProcessing, decoding (round trips on random ASCII
 * and UTF-8, special tokens, partial characters), and the error paths (codes, messages, no crash
 * on mutated JSON or random bytes).
 *
 * Chat prompts (models/chat.c) against tests/ref/chat_ref.py (jinja2 as transformers renders
 * chat_template, ids from `tokenizers`): the bundled SmolLM2's ids, and the known forms' text.
 *
 * Every tokenizer has the 256 GPT-2 byte tokens with id = byte value, then the test's extra tokens
 * with ids 256, 257, ... in order, so expected ids are plain numbers.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "models/chat.h"
#include "models/tokenizer.h"

/* ------------------------------------------------------------------ JSON builder */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_cat(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_cat(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        cr_assert(b->s);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* JSON string literal of s. */
static void sb_str(sbuf *b, const char *s)
{
    sb_cat(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_cat(b, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            sb_cat(b, "\\u%04x", (unsigned char)*s);
        else
            sb_cat(b, "%c", *s);
    }
    sb_cat(b, "\"");
}

/* GPT-2 bytes_to_unicode, written independently of the library: UTF-8 of the code point of b. */
static void byte_char(int b, char out[3])
{
    int cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
        cp = b;
    } else {
        int n = 0;
        for (int k = 0; k < b; k++)
            n += !((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF));
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

typedef struct {
    const char *const *extra;  /* extra tokens (ids 256...), NULL-terminated */
    const char *const *merges; /* "a b" strings, NULL-terminated */
    const char *model_opts;    /* extra "key": value pairs of the model, or NULL */
    const char *added;         /* added_tokens array, or NULL */
    const char *normalizer;    /* JSON or NULL (null) */
    const char *pre;           /* pre_tokenizer JSON, or NULL (default: ByteLevel without prefix space) */
    const char *post;          /* post_processor JSON, or NULL (null) */
    const char *decoder;       /* decoder JSON, or NULL (ByteLevel) */
} spec;

static const char *const bytelevel = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                                     "\"trim_offsets\": true, \"use_regex\": true}";

static char *build_json(const spec *sp)
{
    sbuf b = {0};
    sb_cat(&b, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": %s, ",
           sp->added ? sp->added : "[]");
    sb_cat(&b, "\"normalizer\": %s, \"pre_tokenizer\": %s, \"post_processor\": %s, \"decoder\": %s, ",
           sp->normalizer ? sp->normalizer : "null", sp->pre ? sp->pre : bytelevel, sp->post ? sp->post : "null",
           sp->decoder ? sp->decoder : "{\"type\": \"ByteLevel\"}");
    sb_cat(&b, "\"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, %s%s\"vocab\": {",
           sp->model_opts ? sp->model_opts : "", sp->model_opts ? ", " : "");
    for (int i = 0; i < 256; i++) {
        char c[3];
        byte_char(i, c);
        sb_str(&b, c);
        sb_cat(&b, ": %d, ", i);
    }
    int id = 256;
    for (const char *const *e = sp->extra; e && *e; e++) {
        sb_str(&b, *e);
        sb_cat(&b, ": %d, ", id++);
    }
    b.len -= 2; /* last ", " */
    sb_cat(&b, "}, \"merges\": [");
    for (const char *const *m = sp->merges; m && *m; m++) {
        sb_cat(&b, "%s", m == sp->merges ? "" : ", ");
        sb_str(&b, *m);
    }
    sb_cat(&b, "]}}");
    return b.s;
}

static apb_tokenizer *build(const spec *sp)
{
    char *json = build_json(sp);
    apb_tokenizer *t = NULL;
    apb_err err = {0};
    int rc = apb_tokenizer_parse(json, strlen(json), "test.json", &t, &err);
    cr_assert_eq(rc, APB_OK, "parse failed (%d): %s\n%s", rc, err.msg, json);
    free(json);
    return t;
}

/* Encodes `text` and compares with the expected ids (terminated by -1). */
static void expect_ids_n(const apb_tokenizer *t, const char *text, size_t len, int add_special, const int *want)
{
    int32_t *ids = NULL;
    size_t n = 0, nw = 0;
    apb_err err = {0};
    int rc = apb_tokenizer_encode(t, text, len, add_special, &ids, &n, &err);
    cr_assert_eq(rc, APB_OK, "encode \"%s\": %s", text, err.msg);
    cr_assert(ids, "ids must be allocated even when empty");
    while (want[nw] >= 0)
        nw++;
    char got[1024] = "";
    for (size_t i = 0; i < n && strlen(got) < sizeof got - 16; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids[i]);
    cr_assert_eq(n, nw, "\"%s\": %zu ids (want %zu): %s", text, n, nw, got);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ids[i], want[i], "\"%s\": id %zu is %d (want %d): %s", text, i, ids[i], want[i], got);
    free(ids);
}

static void expect_ids(const apb_tokenizer *t, const char *text, int add_special, const int *want)
{
    expect_ids_n(t, text, strlen(text), add_special, want);
}

#define IDS(...) ((const int[]){__VA_ARGS__, -1})
#define NO_IDS ((const int[]){-1})

#define expect_err(rc, err, want_code, sub)                                                                  \
    do {                                                                                                     \
        cr_assert_eq((rc), (want_code), "status %d (want %d): %s", (rc), (want_code), (err).msg);           \
        cr_assert(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub));               \
    } while (0)

/* ------------------------------------------------------------------ BPE merges */

/* 256 Ġt, 257 he, 258 Ġthe, 259 in, 260 ing */
static const char *const the_extra[] = {"Ġt", "he", "Ġthe", "in", "ing", NULL};
static const char *const the_merges[] = {"Ġ t", "h e", "Ġt he", "i n", "in g", NULL};

Test(bpe, known_merges)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges});
    expect_ids(t, " the", 0, IDS(258));
    expect_ids(t, " thing", 0, IDS(256, 'h', 260));
    expect_ids(t, "the thing", 0, IDS('t', 257, 256, 'h', 260));
    expect_ids(t, "xyz", 0, IDS('x', 'y', 'z'));
    expect_ids(t, "", 0, NO_IDS);
    expect_ids(t, "", 1, NO_IDS);
    cr_assert_eq(apb_tokenizer_vocab_size(t), 261);
    cr_assert_eq(apb_tokenizer_token_id(t, "Ġthe"), 258);
    cr_assert_eq(apb_tokenizer_token_id(t, "nope"), -1);
    apb_tokenizer_free(t);
}

Test(bpe, rank_order_not_position)
{
    /* "abc": the lower-ranked merge wins wherever it is */
    static const char *const ex1[] = {"bc", "ab", NULL}, *const m1[] = {"b c", "a b", NULL};
    apb_tokenizer *t = build(&(spec){.extra = ex1, .merges = m1});
    expect_ids(t, "abc", 0, IDS('a', 256));
    apb_tokenizer_free(t);
    static const char *const m2[] = {"a b", "b c", NULL};
    t = build(&(spec){.extra = ex1, .merges = m2});
    expect_ids(t, "abc", 0, IDS(257, 'c'));
    apb_tokenizer_free(t);
}

Test(bpe, ties_leftmost_and_chains)
{
    /* "aaaaa" with a a -> aa, aa aa -> aaaa: aa aa a, then aaaa a */
    static const char *const ex[] = {"aa", "aaaa", NULL}, *const m[] = {"a a", "aa aa", NULL};
    apb_tokenizer *t = build(&(spec){.extra = ex, .merges = m});
    expect_ids(t, "aaa", 0, IDS(256, 'a'));
    expect_ids(t, "aaaaa", 0, IDS(257, 'a'));
    expect_ids(t, "aaaaaaa", 0, IDS(257, 256, 'a'));
    apb_tokenizer_free(t);
}

Test(bpe, merges_as_pairs_and_version_line)
{
    char *json = build_json(&(spec){.extra = the_extra, .merges = (const char *const[]){"#version: 0.2", NULL}});
    /* replace the merges with the list form */
    char *m = strstr(json, "\"merges\": [");
    cr_assert(m);
    strcpy(m, "\"merges\": [\"#version: 0.2\", [\"Ġ\", \"t\"], [\"h\", \"e\"], [\"Ġt\", \"he\"]]}}");
    apb_tokenizer *t = NULL;
    apb_err err = {0};
    cr_assert_eq(apb_tokenizer_parse(json, strlen(json), "t", &t, &err), APB_OK, "%s", err.msg);
    expect_ids(t, " the", 0, IDS(258));
    apb_tokenizer_free(t);
    free(json);
}

Test(bpe, ignore_merges)
{
    /* "Ġthing" is in the vocabulary (id 261) but no merge builds it */
    static const char *const ex[] = {"Ġt", "he", "Ġthe", "in", "ing", "Ġthing", NULL};
    apb_tokenizer *t = build(&(spec){.extra = ex, .merges = the_merges, .model_opts = "\"ignore_merges\": true"});
    expect_ids(t, " thing", 0, IDS(261));
    expect_ids(t, " things", 0, IDS(256, 'h', 260, 's'));
    apb_tokenizer_free(t);
    t = build(&(spec){.extra = ex, .merges = the_merges, .model_opts = "\"ignore_merges\": false"});
    expect_ids(t, " thing", 0, IDS(256, 'h', 260));
    apb_tokenizer_free(t);
}

Test(bpe, long_piece_is_fast)
{
    /* one 1 MB pre-token: O(n log n) merging, not quadratic */
    static const char *const ex[] = {"aa", "aaaa", NULL}, *const m[] = {"a a", "aa aa", NULL};
    apb_tokenizer *t = build(&(spec){.extra = ex, .merges = m});
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    memset(s, 'a', n);
    s[n] = 0;
    int32_t *ids;
    size_t k;
    apb_err err = {0};
    cr_assert_eq(apb_tokenizer_encode(t, s, n, 0, &ids, &k, &err), APB_OK, "%s", err.msg);
    cr_assert_eq(k, n / 4);
    for (size_t i = 0; i < k; i++)
        cr_assert_eq(ids[i], 257);
    free(ids);
    free(s);
    apb_tokenizer_free(t);
}

/* ------------------------------------------------------------------ pre-tokenizers */

Test(pretok, gpt2_regex_pieces)
{
    /* With ignore_merges and no merges, a piece in the vocabulary is one id: ids show the pieces. */
    /* 256 it, 257 's, 258 Ġcat, 259 ĊĊĠ, 260 Ġx, 261 'll, 262 ĠĠ, 263 ĠI, 264 Ġ!!, 265 " \u0085",
     * 266 " \u180e" */
    static const char *const ex[] = {"it", "'s", "Ġcat", "ĊĊĠ", "Ġx", "'ll", "ĠĠ", "ĠI", "Ġ!!", "ĠÂħ", "Ġáłİ", NULL};
    apb_tokenizer *t = build(&(spec){.extra = ex, .model_opts = "\"ignore_merges\": true"});
    expect_ids(t, "it's  cat's", 0, IDS(256, 257, ' ', 258, 257));
    /* a whitespace run before a word leaves its last space to the word */
    expect_ids(t, "\n\n  x", 0, IDS(259, 260));
    expect_ids(t, " I'll", 0, IDS(263, 261));
    expect_ids(t, " !!x", 0, IDS(264, 'x'));
    /* "'S" is not a contraction of the case-sensitive GPT-2 regex: ' then S */
    expect_ids(t, "it'S", 0, IDS(256, '\'', 'S'));
    /* trailing spaces: \s+(?!\S) keeps them together at the end */
    expect_ids(t, "x  ", 0, IDS('x', 262));
    /* \s is Unicode White_Space as in Oniguruma: U+0085 is whitespace, so " " and U+0085 (C2 85)
     * are two pieces, not one " ?[^\s\p{L}\p{N}]+" piece (which would be id 265); U+180E is not
     * (PCRE2's own \s takes it), so " \u180e" is one piece */
    expect_ids(t, "x \xC2\x85y", 0, IDS('x', ' ', 0xC2, 0x85, 'y'));
    expect_ids(t, "x \xE1\xA0\x8Ey", 0, IDS('x', 266, 'y'));
    apb_tokenizer_free(t);
}

Test(pretok, digits_individual)
{
    static const char *const ex[] = {"12", "123", NULL}, *const m[] = {"1 2", "12 3", NULL};
    const char *pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": "
                      "true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}]}";
    apb_tokenizer *t = build(&(spec){.extra = ex, .merges = m, .pre = pre});
    expect_ids(t, "a123", 0, IDS('a', '1', '2', '3'));
    apb_tokenizer_free(t);
    /* the same without individual digits: the run is one piece and merges */
    pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": false}, "
          "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}]}";
    t = build(&(spec){.extra = ex, .merges = m, .pre = pre});
    expect_ids(t, "a123", 0, IDS('a', 257));
    apb_tokenizer_free(t);
    /* plain ByteLevel: " ?\p{N}+" keeps the space with the digits */
    t = build(&(spec){.extra = ex, .merges = m});
    expect_ids(t, "a 123", 0, IDS('a', ' ', 257));
    apb_tokenizer_free(t);
}

Test(pretok, prefix_space_per_piece)
{
    /* ByteLevel add_prefix_space adds a space to every piece it gets (here each Digits piece) */
    static const char *const ex2[] = {"Ġ1", "ab", "Ġab", NULL}, *const m[] = {"Ġ 1", "a b", "Ġ ab", NULL};
    const char *pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": "
                      "true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}]}";
    apb_tokenizer *t = build(&(spec){.extra = ex2, .merges = m, .pre = pre});
    expect_ids(t, "ab11", 0, IDS(258, 256, 256));
    apb_tokenizer_free(t);
}

Test(pretok, split_behaviors)
{
    const char *fmt = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"%s\": "
                      "\"%s\"}, \"behavior\": \"%s\", \"invert\": %s}, {\"type\": \"ByteLevel\", "
                      "\"add_prefix_space\": false, \"use_regex\": false}]}";
    /* vocabulary of whole pieces, ignore_merges: ids show the pieces of "a-b--c" */
    static const char *const ex[] = {"a-", "-b", "b-", "--", "-c", NULL};
    struct {
        const char *kind, *pat, *beh, *inv;
        const int *want;
    } cases[] = {
        {"String", "-", "Removed", "false", IDS('a', 'b', 'c')},
        {"String", "-", "Isolated", "false", IDS('a', '-', 'b', '-', '-', 'c')},
        {"String", "-", "MergedWithPrevious", "false", IDS(256, 258, '-', 'c')},
        {"String", "-", "MergedWithNext", "false", IDS('a', 257, '-', 260)},
        {"Regex", "-", "Contiguous", "false", IDS('a', '-', 'b', 259, 'c')},
        {"Regex", "[abc]", "Removed", "true", IDS('a', 'b', 'c')},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char pre[512];
        snprintf(pre, sizeof pre, fmt, cases[i].kind, cases[i].pat, cases[i].beh, cases[i].inv);
        apb_tokenizer *t = build(&(spec){.extra = ex, .model_opts = "\"ignore_merges\": true", .pre = pre});
        expect_ids(t, "a-b--c", 0, cases[i].want);
        apb_tokenizer_free(t);
    }
}

/* ------------------------------------------------------------------ added tokens */

static const char *added_json(const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "[{\"id\": 261, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
             "\"normalized\": false, \"special\": true}, "
             "{\"id\": 262, \"content\": \"<s>x\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
             "\"normalized\": false, \"special\": false}%s]",
             extra ? extra : "");
    return buf;
}

Test(added, split_longest_first)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL)});
    cr_assert_eq(apb_tokenizer_vocab_size(t), 263);
    cr_assert_eq(apb_tokenizer_token_id(t, "<s>"), 261);
    cr_assert(apb_tokenizer_is_special(t, 261));
    cr_assert(!apb_tokenizer_is_special(t, 262));
    cr_assert(!apb_tokenizer_is_special(t, 258));
    cr_assert(!apb_tokenizer_is_special(t, -1));
    cr_assert(!apb_tokenizer_is_special(t, 100000));
    expect_ids(t, "<s> the", 0, IDS(261, 258));
    expect_ids(t, " the<s>", 0, IDS(258, 261));
    expect_ids(t, "<s>xy", 0, IDS(262, 'y'));
    expect_ids(t, "<s<s><s>", 0, IDS('<', 's', 261, 261));
    expect_ids(t, "<s", 0, IDS('<', 's'));
    apb_tokenizer_free(t);
}

Test(added, strip_and_single_word)
{
    const char *more = ", {\"id\": 263, \"content\": \"<L>\", \"lstrip\": true, \"special\": true}, "
                       "{\"id\": 264, \"content\": \"<R>\", \"rstrip\": true, \"special\": true}, "
                       "{\"id\": 265, \"content\": \"cat\", \"single_word\": true, \"special\": false}";
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(more)});
    expect_ids(t, "a  <L>b", 0, IDS('a', 263, 'b'));
    expect_ids(t, "a<R> \n b", 0, IDS('a', 264, 'b'));
    expect_ids(t, "a cat.", 0, IDS('a', ' ', 265, '.'));
    expect_ids(t, "cats", 0, IDS('c', 'a', 't', 's'));
    expect_ids(t, "_cat", 0, IDS('_', 'c', 'a', 't'));
    apb_tokenizer_free(t);
}

Test(added, id_from_vocabulary)
{
    /* like `tokenizers`, a content already in the vocabulary keeps its vocabulary id */
    const char *added = "[{\"id\": 999, \"content\": \"Ġthe\", \"special\": true}, "
                        "{\"id\": 5, \"content\": \"<new>\", \"special\": false}]";
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added});
    cr_assert_eq(apb_tokenizer_token_id(t, "Ġthe"), 258);
    cr_assert_eq(apb_tokenizer_token_id(t, "<new>"), 261);
    cr_assert_eq(apb_tokenizer_vocab_size(t), 262);
    cr_assert(apb_tokenizer_is_special(t, 258));
    apb_tokenizer_free(t);
}

/* ------------------------------------------------------------------ post-processor */

Test(post, template_bos)
{
    const char *post = "{\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
                       "\"trim_offsets\": false, \"use_regex\": true}, {\"type\": \"TemplateProcessing\", "
                       "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": "
                       "\"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", "
                       "\"ids\": [261], \"tokens\": [\"<s>\"]}}}]}";
    apb_tokenizer *t =
        build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL), .post = post});
    expect_ids(t, " the", 1, IDS(261, 258));
    expect_ids(t, " the", 0, IDS(258));
    expect_ids(t, "", 1, IDS(261));
    apb_tokenizer_free(t);
}

Test(post, roberta_and_bytelevel)
{
    const char *post = "{\"type\": \"RobertaProcessing\", \"sep\": [\"<s>x\", 262], \"cls\": [\"<s>\", 261]}";
    apb_tokenizer *t =
        build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL), .post = post});
    expect_ids(t, " the", 1, IDS(261, 258, 262));
    apb_tokenizer_free(t);
    t = build(&(spec){.extra = the_extra, .merges = the_merges, .post = "{\"type\": \"ByteLevel\"}"});
    expect_ids(t, " the", 1, IDS(258));
    apb_tokenizer_free(t);
}

/* ------------------------------------------------------------------ decoding */

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static void round_trip(const apb_tokenizer *t, const char *s, size_t n)
{
    int32_t *ids;
    size_t k, len;
    apb_err err = {0};
    cr_assert_eq(apb_tokenizer_encode(t, s, n, 0, &ids, &k, &err), APB_OK, "%s", err.msg);
    char *back = apb_tokenizer_decode_len(t, ids, k, 0, &len);
    cr_assert(back);
    cr_assert_eq(len, n, "round trip length %zu != %zu", len, n);
    cr_assert(!memcmp(back, s, n), "round trip differs");
    free(back);
    free(ids);
}

Test(decode, round_trip_random)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL)});
    uint64_t seed = 42;
    char s[4 * 200 + 1];
    for (int trial = 0; trial < 300; trial++) {
        size_t n = 0, m = rng(&seed) % 200;
        for (size_t i = 0; i < m; i++) {
            uint64_t r = rng(&seed);
            uint32_t c;
            if (trial < 150)
                c = r % 4 == 0 ? (uint32_t)" \t\n"[r / 4 % 3] : (uint32_t)(0x20 + (r >> 8) % 95); /* ASCII */
            else if (r % 3 == 0)
                c = (uint32_t)(0x20 + (r >> 8) % 95);
            else
                do
                    c = (uint32_t)((r >> 8) % 0x110000), r = rng(&seed);
                while (c >= 0xD800 && c <= 0xDFFF); /* any scalar value, NUL included */
            n += put_utf8(s + n, c);
        }
        round_trip(t, s, n);
    }
    apb_tokenizer_free(t);
}

Test(decode, specials_unknown_and_partial_chars)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL)});
    int32_t ids[] = {261, 258, 262, -5, 99999, 'x'};
    char *s = apb_tokenizer_decode(t, ids, 6, 0);
    cr_assert_str_eq(s, "<s> the<s>xx");
    free(s);
    s = apb_tokenizer_decode(t, ids, 6, 1); /* only <s> is special */
    cr_assert_str_eq(s, " the<s>xx");
    free(s);
    /* the first byte of "é" alone is a partial character: U+FFFD */
    int32_t part[] = {0xC3, 'a', 0xC3, 0xA9};
    s = apb_tokenizer_decode(t, part, 4, 0);
    cr_assert_str_eq(s, "\xEF\xBF\xBD" "a\xC3\xA9");
    free(s);
    s = apb_tokenizer_decode(t, NULL, 0, 0);
    cr_assert_str_eq(s, "");
    free(s);
    apb_tokenizer_free(t);
    /* no decoder: `tokenizers` joins the token strings with spaces */
    t = build(&(spec){.extra = the_extra, .merges = the_merges, .decoder = "null"});
    int32_t two[] = {256, 'h', 'e'};
    s = apb_tokenizer_decode(t, two, 3, 0);
    cr_assert_str_eq(s, "Ġt h e");
    free(s);
    apb_tokenizer_free(t);
}

/* ------------------------------------------------------------------ error paths */

static int parse_str(const char *json, apb_tokenizer **t, apb_err *err)
{
    return apb_tokenizer_parse(json, strlen(json), "tokenizer.json", t, err);
}

Test(errors, bad_json_and_missing_model)
{
    apb_tokenizer *t = (apb_tokenizer *)1;
    apb_err err = {0};
    expect_err(parse_str("{\"model\": ", &t, &err), err, APB_E_FORMAT, "invalid JSON");
    cr_assert_null(t);
    expect_err(parse_str("[]", &t, &err), err, APB_E_FORMAT, "top level");
    expect_err(parse_str("{\"version\": \"1.0\"}", &t, &err), err, APB_E_FORMAT, "missing field 'model'");
    expect_err(parse_str("{\"model\": 3}", &t, &err), err, APB_E_FORMAT, "model: expected an object");
    expect_err(parse_str("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", &t, &err), err, APB_E_MODEL,
               "WordPiece");
    expect_err(parse_str("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", &t, &err), err, APB_E_FORMAT,
               "'vocab'");
    expect_err(parse_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", &t, &err), err, APB_E_FORMAT,
               "'merges'");
    expect_err(parse_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", &t, &err), err,
               APB_E_FORMAT, "empty");
    cr_assert_null(t);
}

/* The test tokenizer with one textual replacement applied to its JSON. */
static int parse_with(const spec *sp, const char *from, const char *to, apb_tokenizer **t, apb_err *err)
{
    char *json = build_json(sp);
    char *at = strstr(json, from);
    cr_assert(at, "'%s' not in the JSON", from);
    size_t need = strlen(json) - strlen(from) + strlen(to) + 1;
    char *out = malloc(need);
    memcpy(out, json, (size_t)(at - json));
    strcpy(out + (at - json), to);
    strcat(out, at + strlen(from));
    int rc = parse_str(out, t, err);
    free(out);
    free(json);
    if (!rc)
        apb_tokenizer_free(*t);
    return rc;
}

Test(errors, wrong_fields)
{
    spec sp = {.extra = the_extra, .merges = the_merges};
    apb_tokenizer *t;
    apb_err err = {0};
    expect_err(parse_with(&sp, "\"i n\"", "\"i q\"", &t, &err), err, APB_E_FORMAT,
               "model.merges[3]: merged token 'iq' is not in the vocabulary");
    expect_err(parse_with(&sp, "\"i n\"", "\"i zz\"", &t, &err), err, APB_E_FORMAT,
               "model.merges[3]: token 'zz' is not in the vocabulary");
    expect_err(parse_with(&sp, "\"i n\"", "12", &t, &err), err, APB_E_FORMAT,
               "model.merges[3]: expected a string 'a b'");
    expect_err(parse_with(&sp, "\"i n\"", "\"i n g\"", &t, &err), err, APB_E_FORMAT, "model.merges[3]");
    expect_err(parse_with(&sp, "\"i n\"", "[\"i\"]", &t, &err), err, APB_E_FORMAT, "model.merges[3]");
    expect_err(parse_with(&sp, "\"merges\": [", "\"merges\": {}, \"x\": [", &t, &err), err, APB_E_FORMAT,
               "model.merges: expected an array");
    expect_err(parse_with(&sp, "\"he\": 257", "\"he\": \"257\"", &t, &err), err, APB_E_FORMAT,
               "model.vocab['he']: expected an integer id");
    expect_err(parse_with(&sp, "\"he\": 257", "\"he\": -1", &t, &err), err, APB_E_FORMAT, "model.vocab['he']");
    expect_err(parse_with(&sp, "\"he\": 257", "\"he\": 99999999999", &t, &err), err, APB_E_FORMAT, "model.vocab");
    expect_err(parse_with(&sp, "\"unk_token\": null", "\"unk_token\": \"<unk>\"", &t, &err), err, APB_E_FORMAT,
               "model.unk_token");
    expect_err(parse_with(&sp, "\"dropout\": null", "\"byte_fallback\": true", &t, &err), err, APB_E_MODEL,
               "byte_fallback");
    expect_err(parse_with(&sp, "\"dropout\": null", "\"dropout\": 0.1", &t, &err), err, APB_E_MODEL, "dropout");
    expect_err(parse_with(&sp, "\"added_tokens\": []", "\"added_tokens\": [{\"id\": 1}]", &t, &err), err,
               APB_E_FORMAT, "added_tokens[0]: missing field 'content'");
    expect_err(parse_with(&sp, "\"added_tokens\": []", "\"added_tokens\": [{\"id\": \"1\", \"content\": \"x\"}]",
                          &t, &err), err, APB_E_FORMAT, "added_tokens[0].id");
    expect_err(parse_with(&sp, "\"added_tokens\": []",
                          "\"added_tokens\": [{\"id\": 1, \"content\": \"x\", \"special\": 1}]", &t, &err),
               err, APB_E_FORMAT, "added_tokens[0].special: expected a boolean");
    expect_err(parse_with(&sp, "\"added_tokens\": []", "\"added_tokens\": {}", &t, &err), err, APB_E_FORMAT,
               "added_tokens: expected an array");
    expect_err(parse_with(&sp, "\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}", &t, &err), err,
               APB_E_MODEL, "unsupported normalizer type 'Lowercase'");
    expect_err(parse_with(&sp, "\"normalizer\": null", "\"normalizer\": {\"kind\": \"NFC\"}", &t, &err), err,
               APB_E_FORMAT, "normalizer: missing field 'type'");
    expect_err(parse_with(&sp, "\"pre_tokenizer\": {", "\"pre_tokenizer\": {\"type\": \"Metaspace\"}, \"x\": {",
                          &t, &err), err, APB_E_MODEL, "pre_tokenizer: unsupported pre_tokenizer type 'Metaspace'");
    expect_err(parse_with(&sp, "\"pre_tokenizer\": {",
                          "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                          "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}]}, \"x\": {", &t, &err),
               err, APB_E_MODEL, "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported regex");
    expect_err(parse_with(&sp, "\"pre_tokenizer\": {",
                          "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                          "\"behavior\": \"Sideways\"}, \"x\": {", &t, &err),
               err, APB_E_FORMAT, "behavior: unknown behavior 'Sideways'");
    expect_err(parse_with(&sp, "\"pre_tokenizer\": {", "\"pre_tokenizer\": {\"type\": \"ByteLevel\", "
                          "\"use_regex\": \"yes\"}, \"x\": {", &t, &err), err, APB_E_FORMAT,
               "pre_tokenizer.use_regex: expected a boolean");
    expect_err(parse_with(&sp, "\"post_processor\": null", "\"post_processor\": {\"type\": "
                          "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<x>\"}}], "
                          "\"special_tokens\": {}}", &t, &err), err, APB_E_FORMAT,
               "special token '<x>' is missing");
    expect_err(parse_with(&sp, "\"post_processor\": null", "\"post_processor\": {\"type\": "
                          "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<x>\"}}], "
                          "\"special_tokens\": {\"<x>\": {\"ids\": [5000]}}}", &t, &err), err, APB_E_FORMAT,
               "id 5000 is not a token");
    expect_err(parse_with(&sp, "\"decoder\": {", "\"decoder\": {\"type\": \"WordPiece\"}, \"x\": {", &t, &err), err,
               APB_E_MODEL, "decoder");
}

Test(errors, invalid_utf8_input)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges});
    const char *bad[] = {"abc\xff", "ab\xC3", "\xED\xA0\x80", "\xC0\xAF", "ok \xF4\x90\x80\x80"};
    const char *where[] = {"offset 3", "offset 2", "offset 0", "offset 0", "offset 3"};
    for (size_t i = 0; i < 5; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        apb_err err = {0};
        expect_err(apb_tokenizer_encode(t, bad[i], strlen(bad[i]), 0, &ids, &n, &err), err, APB_E_FORMAT, where[i]);
        cr_assert_null(ids);
        cr_assert_eq(n, 0);
    }
    apb_tokenizer_free(t);
}

Test(errors, missing_file)
{
    apb_tokenizer *t;
    apb_err err = {0};
    expect_err(apb_tokenizer_load("/nonexistent/tokenizer.json", &t, &err), err, APB_E_IO, "/nonexistent");
    cr_assert_null(t);
}

Test(errors, mutated_json_never_crashes)
{
    /* flip / drop / duplicate random bytes of a valid tokenizer.json: parse either fails cleanly with
     * a message or gives a tokenizer that encodes and decodes */
    const char *more = ", {\"id\": 265, \"content\": \"cat\", \"single_word\": true, \"lstrip\": true}";
    const char *post = "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, "
                       "{\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"ids\": [261]}}}";
    const char *pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": "
                      "true}, {\"type\": \"Split\", \"pattern\": {\"Regex\": \" ?[a-z]+\"}, \"behavior\": "
                      "\"MergedWithNext\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": true}]}";
    char *json = build_json(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(more),
                                    .post = post, .pre = pre});
    size_t n = strlen(json);
    /* mutate only the parts after the 256 byte tokens, where everything is exercised */
    size_t from = (size_t)(strstr(json, "\"Ġt\"") - json);
    size_t head = (size_t)(strstr(json, "\"model\"") - json);
    char *m = malloc(n + 8);
    uint64_t seed = 7;
    int ok = 0;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(m, json, n + 1);
        size_t len = n;
        for (int k = 0; k < 1 + (int)(rng(&seed) % 3); k++) {
            uint64_t r = rng(&seed);
            size_t at = (r & 1) ? (size_t)(r >> 8) % head : from + (size_t)(r >> 8) % (len - from);
            const char subst[] = "\"{}[],:0129-ax \\";
            switch ((r >> 1) % 3) {
            case 0: m[at] = subst[(r >> 40) % (sizeof subst - 1)]; break;
            case 1: memmove(m + at, m + at + 1, len - at); len--; break;
            default: memmove(m + at + 1, m + at, len - at + 1); len++; break;
            }
        }
        apb_tokenizer *t = NULL;
        apb_err err = {0};
        int rc = apb_tokenizer_parse(m, len, "fuzz", &t, &err);
        if (rc) {
            cr_assert_null(t);
            cr_assert(err.msg[0], "error %d without a message", rc);
            continue;
        }
        ok++;
        int32_t *ids;
        size_t k;
        const char *txt = "<s>the cat 12 things<s>x";
        cr_assert_eq(apb_tokenizer_encode(t, txt, strlen(txt), 1, &ids, &k, &err), APB_OK, "%s", err.msg);
        for (size_t i = 0; i < k; i++)
            cr_assert(ids[i] >= 0 && ids[i] < apb_tokenizer_vocab_size(t));
        free(apb_tokenizer_decode(t, ids, k, 1));
        free(ids);
        apb_tokenizer_free(t);
    }
    cr_assert(ok > 0, "no mutation parsed: the fuzz exercises nothing");
    free(m);
    free(json);
}

Test(errors, random_bytes_input)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges, .added = added_json(NULL)});
    uint64_t seed = 3;
    unsigned char s[64];
    int valid = 0;
    for (int trial = 0; trial < 2000; trial++) {
        size_t n = rng(&seed) % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = (unsigned char)(rng(&seed) % (trial % 2 ? 256 : 0xC4));
        int32_t *ids;
        size_t k;
        apb_err err = {0};
        int rc = apb_tokenizer_encode(t, (const char *)s, n, trial % 3 == 0, &ids, &k, &err);
        cr_assert(rc == APB_OK || rc == APB_E_FORMAT, "rc %d: %s", rc, err.msg);
        if (rc == APB_OK) {
            valid++;
            size_t len;
            char *back = apb_tokenizer_decode_len(t, ids, k, 0, &len);
            cr_assert(back && len == n && !memcmp(back, s, n), "valid UTF-8 must round-trip");
            free(back);
            free(ids);
        }
    }
    cr_assert(valid > 10);
    apb_tokenizer_free(t);
}

Test(errors, null_arguments)
{
    apb_tokenizer *t = build(&(spec){.extra = the_extra, .merges = the_merges});
    int32_t *ids;
    size_t n;
    apb_err err = {0};
    cr_assert_eq(apb_tokenizer_encode(t, NULL, 3, 0, &ids, &n, &err), APB_E_USAGE);
    cr_assert_eq(apb_tokenizer_encode(NULL, "a", 1, 0, &ids, &n, &err), APB_E_USAGE);
    cr_assert_eq(apb_tokenizer_encode(t, NULL, 0, 0, &ids, &n, &err), APB_OK);
    free(ids);
    cr_assert_null(apb_tokenizer_decode(NULL, NULL, 0, 0));
    cr_assert_eq(apb_tokenizer_vocab_size(NULL), 0);
    cr_assert_eq(apb_tokenizer_token_id(NULL, "a"), -1);
    apb_tokenizer_free(NULL);
    apb_tokenizer_free(t);
}

/* ------------------------------------------------------------------ chat templates */

static const char *chat_model_dir(void)
{
    static char dir[4096];
    const char *home = getenv("APB_HOME");
    if (home)
        snprintf(dir, sizeof dir, "%s/models/smollm2-135m-instruct", home);
    else
        snprintf(dir, sizeof dir, "%s/.cache/apb/models/smollm2-135m-instruct", getenv("HOME"));
    return dir;
}

/* Runs tests/ref/chat_ref.py; *text gets its rendered prompt, *ids (when tok) its ids. */
static void chat_ref(const char *config, const char *tok, const char *system, const char *user,
                     char **text, int **ids, size_t *n_ids)
{
    const char *py = getenv("APB_PYTHON") ? getenv("APB_PYTHON") : "python3";
    const char *src = getenv("top_srcdir") ? getenv("top_srcdir") : ".";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/ref/chat_ref.py' --config '%s' %s%s%s --user '%s'%s%s%s",
             py, src, config, tok ? "--tokenizer '" : "", tok ? tok : "", tok ? "'" : "", user,
             system ? " --system '" : "", system ? system : "", system ? "'" : "");
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    static char line[1 << 16];
    cr_assert_not_null(fgets(line, sizeof line, p), "no output from: %s (jinja2 missing? run scripts/setup.sh)", cmd);
    json_error_t je;
    json_t *j = json_loads(line, JSON_DECODE_ANY, &je);
    cr_assert(json_is_string(j), "bad reference line: %s", line);
    *text = strdup(json_string_value(j));
    json_decref(j);
    if (tok) {
        cr_assert_not_null(fgets(line, sizeof line, p), "no ids from: %s", cmd);
        *n_ids = 0;
        *ids = malloc(sizeof(int) * 4096);
        for (char *q = line, *e; *q && *q != '\n'; q = e) {
            long v = strtol(q, &e, 10);
            if (e == q)
                break;
            (*ids)[(*n_ids)++] = (int)v;
        }
    }
    cr_assert_eq(pclose(p), 0, "reference failed: %s", cmd);
}

/* --chat without --system on the bundled SmolLM2: its template's default system line, the same
 * ids as apply_chat_template; with a system message, that message instead. */
Test(chat, smollm2_ids_match_the_template_reference)
{
    apb_err err = {0};
    char cfg[4200], tjson[4200], *tmpl, *bos;
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", chat_model_dir());
    snprintf(tjson, sizeof tjson, "%s/tokenizer.json", chat_model_dir());
    apb_tokenizer *t;
    cr_assert_eq(apb_tokenizer_load(tjson, &t, &err), 0, "%s (run scripts/setup.sh)", err.msg);
    cr_assert_eq(apb_chat_config_load(chat_model_dir(), &tmpl, &bos, &err), 0, "%s", err.msg);
    cr_assert_not_null(tmpl, "the bundled model has no chat_template");
    struct { const char *system, *user; } cases[] = {
        {NULL, "What is 2+2?"},
        {"Be brief.", "Line one.\nLine two: caf\xc3\xa9 \xe2\x82\xac 12345"},
        {NULL, "  spaces kept  "},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char *rtext, *got = apb_chat_render(tmpl, bos, cases[c].system, cases[c].user, &err);
        cr_assert_not_null(got, "%s", err.msg);
        int *rids;
        size_t nr;
        chat_ref(cfg, tjson, cases[c].system, cases[c].user, &rtext, &rids, &nr);
        cr_expect_str_eq(got, rtext);
        int32_t *ids;
        size_t n;
        cr_assert_eq(apb_tokenizer_encode(t, got, strlen(got), 0, &ids, &n, &err), 0, "%s", err.msg);
        cr_assert_eq(n, nr, "case %zu: %zu ids, reference %zu", c, n, nr);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(ids[i], rids[i], "case %zu, id %zu: %d vs %d", c, i, ids[i], rids[i]);
        if (!cases[c].system)
            cr_assert(strstr(got, "named SmolLM"), "no default system line: %s", got);
        free(ids);
        free(rids);
        free(rtext);
        free(got);
    }
    free(tmpl);
    free(bos);
    apb_tokenizer_free(t);
}

/* The other known forms (tests/data/chat: Llama-3's template, Llama-3.1's without its tool
 * branches, Qwen2's ChatML written with real newlines, plain ChatML) render as jinja2 does;
 * an unknown template is refused. */
Test(chat, known_forms_match_jinja)
{
    const char *src = getenv("top_srcdir") ? getenv("top_srcdir") : ".";
    const char *forms[] = {"llama3", "llama31", "qwen2", "chatml"};
    const char *systems[] = {NULL, "  Be brief. "};
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++)
        for (size_t s = 0; s < 2; s++) {
            apb_err err = {0};
            char dir[4200], cfg[4300], *tmpl, *bos, *rtext;
            snprintf(dir, sizeof dir, "%s/tests/data/chat", src);
            /* apb_chat_config_load reads DIR/tokenizer_config.json: read the form's file directly */
            snprintf(cfg, sizeof cfg, "%s/%s.json", dir, forms[f]);
            json_error_t je;
            json_t *j = json_load_file(cfg, 0, &je);
            cr_assert_not_null(j, "%s: %s", cfg, je.text);
            tmpl = strdup(json_string_value(json_object_get(j, "chat_template")));
            json_t *b = json_object_get(j, "bos_token");
            bos = json_is_object(b) ? strdup(json_string_value(json_object_get(b, "content")))
                  : json_is_string(b) ? strdup(json_string_value(b)) : NULL;
            json_decref(j);
            char *got = apb_chat_render(tmpl, bos, systems[s], " hi there\n", &err);
            cr_assert_not_null(got, "%s: %s", forms[f], err.msg);
            chat_ref(cfg, NULL, systems[s], " hi there\n", &rtext, NULL, NULL);
            cr_expect_str_eq(got, rtext, "%s, system %s", forms[f], systems[s] ? "given" : "none");
            free(got);
            free(rtext);
            free(tmpl);
            free(bos);
        }
    apb_err err = {0};
    char *got = apb_chat_render("{% for message in messages %}{{ message['content'] }}{% endfor %}",
                                NULL, NULL, "hi", &err);
    cr_assert_null(got);
    cr_assert_eq(err.code, APB_E_MODEL);
    cr_assert(strstr(err.msg, "not one of the known forms"), "%s", err.msg);
}

/* The template comes from a model directory: every prefix of the known forms, and random bytes,
 * give a prompt or APB_E_MODEL, never a crash (ASan builds check the reads). */
Test(chat, truncated_and_random_templates)
{
    const char *src = getenv("top_srcdir") ? getenv("top_srcdir") : ".";
    const char *forms[] = {"llama3", "llama31", "qwen2", "chatml"};
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
        char cfg[4300];
        snprintf(cfg, sizeof cfg, "%s/tests/data/chat/%s.json", src, forms[f]);
        json_error_t je;
        json_t *j = json_load_file(cfg, 0, &je);
        cr_assert_not_null(j, "%s: %s", cfg, je.text);
        const char *t = json_string_value(json_object_get(j, "chat_template"));
        size_t n = strlen(t);
        char *buf = malloc(n + 1);
        for (size_t len = 0; len <= n; len++) {
            memcpy(buf, t, len);
            buf[len] = '\0';
            apb_err err = {0};
            char *out = apb_chat_render(buf, NULL, len % 2 ? "sys" : NULL, "hi", &err);
            cr_assert(out || err.code == APB_E_MODEL, "%s prefix %zu: code %d", forms[f], len, err.code);
            free(out);
        }
        free(buf);
        json_decref(j);
    }
    unsigned s = 12345;
    for (int it = 0; it < 500; it++) {
        char buf[256];
        int len = (int)(s % 255);
        for (int i = 0; i < len; i++) {
            s = s * 1103515245u + 12345u;
            buf[i] = (char)(1 + (s >> 16) % 255);
        }
        buf[len] = '\0';
        apb_err err = {0};
        char *out = apb_chat_render(buf, NULL, NULL, "hi", &err);
        cr_assert(out || err.code == APB_E_MODEL, "random template %d: code %d", it, err.code);
        free(out);
    }
}
