/* SPDX-License-Identifier: MIT */
/**
 * @brief Hugging Face tokenizer.json: byte-level BPE as used by SmolLM2 (GPT-2 style), Llama-3 and
 * Qwen2, with the results of `tokenizers`' Tokenizer.encode / decode.
 *
 * Pipeline of apb_tokenizer_encode (the same order as `tokenizers`):
 *   1. the text must be valid UTF-8 (`tokenizers` only accepts str): else APB_E_FORMAT;
 *   2. added tokens are cut out first (leftmost-longest, non-overlapping; those with
 *      "normalized": false on the raw text, then those with "normalized": true on the rest), with
 *      the lstrip / rstrip / single_word flags, and emit their ids directly;
 *   3. the normalizer (none, or NFC taken as a no-op: see _apb_parse_normalizer);
 *   4. the pre-tokenizers, each splitting every current piece further: Split (regex or literal,
 *      every SplitDelimiterBehavior, invert), Digits, ByteLevel (optional prefix space, GPT-2
 *      regex, then bytes -> GPT-2 unicode alphabet on the resulting pieces), and Sequence of them;
 *   5. BPE on every piece: vocab lookup of each character, then merges by lowest rank (leftmost on
 *      ties) with a binary heap over the pieces' linked symbols (O(n log n) per piece), or the
 *      whole piece as one token when ignore_merges is set and it is in the vocabulary;
 *   6. the post-processor when add_special: TemplateProcessing (single), Roberta / Bert, ByteLevel
 *      (nothing for ids), Sequence of them.
 * Decoding maps ids back to tokens (added tokens first), drops special ones on request, applies the
 * ByteLevel decoder and replaces invalid UTF-8 the way Rust's String::from_utf8_lossy does.
 *
 * Regexes: `tokenizers` uses Oniguruma, apb uses PCRE2 (UTF + UCP, JIT when available). `\s` and
 * `\S` are rewritten to Oniguruma's meaning (Unicode White_Space; PCRE2's \s also takes U+180E),
 * and empty matches are iterated as the Rust `onig` crate does, so pieces are identical.
 *
 * The tokenizer is immutable after loading: concurrent encode / decode calls are safe (each call
 * has its own scratch space). Every JSON field is type- and range-checked; an error names the
 * source and the field (APB_E_FORMAT: malformed, APB_E_MODEL: well-formed but unsupported).
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <jansson.h>

#include "common/apb_json.h"
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer.h"

#define _APB_TOK_MAX_IDS (1 << 22)         /* 4M ids: far above any released vocabulary */
#define _APB_TOK_MAX_FILE (1L << 30)       /* 1 GiB tokenizer.json */
#define _APB_TOK_MAX_STEPS 64              /* pre-tokenizers / post-processors after flattening */
#define _APB_TOK_MAX_DEPTH 8               /* nesting of "Sequence" */
#define _APB_CHAR_TAB 0x800                /* code points with a direct char -> id table */

/* The GPT-2 pre-tokenizer regex of ByteLevel(use_regex = true). */
static const char _apb_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ================================================================== small helpers */

typedef struct {
    size_t off, len;
} _apb_span;

/* Grows *buf (elements of `size` bytes) to hold at least `need` elements. 0 or APB_E_NOMEM. */
static int _apb_grow(void **buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / size)
            return APB_E_NOMEM;
        n *= 2;
    }
    void *p = realloc(*buf, n * size);
    if (!p)
        return APB_E_NOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* ================================================================== UTF-8 */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid; *bad gets the length of
 * its maximal invalid prefix (at least 1), as in the Unicode "maximal subpart" replacement rule. */
static size_t _apb_utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned c = s[0];
    *bad = 1;
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;  /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;  /* <= U+10FFFF */
    } else {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return 0;
        *bad = i + 1;
    }
    return need;
}

/* Offset of the first invalid UTF-8 byte of s[0..n), or n when all is valid. */
static size_t _apb_utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = _apb_utf8_seq(u + i, n - i, &bad);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

/* Length of the (valid) UTF-8 character starting with byte c. */
static size_t _apb_utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Code point of the valid UTF-8 character at s (length l). */
static uint32_t _apb_utf8_cp(const unsigned char *s, size_t l)
{
    switch (l) {
    case 1: return s[0];
    case 2: return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    case 3: return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    default:
        return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
               (s[3] & 0x3F);
    }
}

/* Start of the character that ends at s[end] (exclusive), for valid UTF-8 with end > 0. */
static size_t _apb_utf8_prev(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

/* Unicode White_Space, which is Rust's char::is_whitespace and Oniguruma's \s. */
static int _apb_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* ================================================================== hash tables */

static uint64_t _apb_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;  /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* String -> id, open addressing with linear probing. Keys live in the tokenizer's pool. */
typedef struct {
    size_t off;
    uint32_t len;
    int32_t id;  /* -1: empty slot */
} _apb_str_slot;

typedef struct {
    _apb_str_slot *slots;
    size_t mask, count;
} _apb_str_map;

static int _apb_str_map_init(_apb_str_map *m, size_t n)
{
    size_t cap = 16;
    while (cap < n + n / 2 + 1)
        cap *= 2;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return APB_E_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].id = -1;
    m->mask = cap - 1;
    m->count = 0;
    return 0;
}

/* Slot of key s (found, or the empty slot where it would go). The map is never full. */
static _apb_str_slot *_apb_str_map_slot(const _apb_str_map *m, const char *pool, const char *s, size_t n)
{
    size_t i = (size_t)_apb_hash_bytes(s, n) & m->mask;
    for (;;) {
        _apb_str_slot *e = &m->slots[i];
        if (e->id < 0 || (e->len == n && memcmp(pool + e->off, s, n) == 0))
            return e;
        i = (i + 1) & m->mask;
    }
}

static int32_t _apb_str_map_get(const _apb_str_map *m, const char *pool, const char *s, size_t n)
{
    if (!m->slots)
        return -1;
    return _apb_str_map_slot(m, pool, s, n)->id;
}

/* Merge ranks: (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key;
    int32_t rank;  /* -1: empty slot */
    int32_t new_id;
} _apb_pair_slot;

typedef struct {
    _apb_pair_slot *slots;
    size_t mask;
    int bits;
} _apb_pair_map;

static int _apb_pair_map_init(_apb_pair_map *m, size_t n)
{
    size_t cap = 16;
    int bits = 4;
    while (cap < n + n / 2 + 1) {
        cap *= 2;
        bits++;
    }
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return APB_E_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].rank = -1;
    m->mask = cap - 1;
    m->bits = bits;
    return 0;
}

static _apb_pair_slot *_apb_pair_map_slot(const _apb_pair_map *m, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - m->bits));
    for (;;) {
        _apb_pair_slot *e = &m->slots[i];
        if (e->rank < 0 || e->key == key)
            return e;
        i = (i + 1) & m->mask;
    }
}

/* ================================================================== the tokenizer */

enum { _APB_PT_SPLIT, _APB_PT_BYTELEVEL };

/* SplitDelimiterBehavior */
enum { _APB_B_REMOVED, _APB_B_ISOLATED, _APB_B_MERGED_PREV, _APB_B_MERGED_NEXT, _APB_B_CONTIGUOUS };

/* One pre-tokenizer (Digits is a Split on \p{N} or \p{N}+). */
typedef struct {
    int kind;
    pcre2_code *re;        /* NULL: ByteLevel without regex */
    int behavior, invert;  /* Split */
    int prefix_space;      /* ByteLevel add_prefix_space */
} _apb_pretok;

/* One post-processor template: ids, with -1 standing for the encoded sequence. */
typedef struct {
    int32_t *items;
    size_t n;
} _apb_template;

typedef struct {
    size_t off;
    uint32_t len;
    int32_t id;
    unsigned char lstrip, rstrip, single_word, normalized, special;
} _apb_added;

enum { _APB_DEC_JOIN, _APB_DEC_BYTELEVEL };

struct apb_tokenizer {
    char *pool;                 /* every token string back to back */
    size_t pool_len;
    int32_t n_ids;              /* max id + 1 */
    _apb_span *id_tok;          /* per id: its string in pool (len SIZE_MAX: no token) */
    unsigned char *id_special;  /* per id: 1 for special added tokens */

    _apb_str_map vocab;         /* model vocabulary */
    _apb_pair_map merges;
    int32_t char_id[_APB_CHAR_TAB]; /* vocab id of each single code point token (-1: none) */
    int ignore_merges, fuse_unk;
    int32_t unk_id;             /* -1: characters missing from the vocabulary are dropped */

    _apb_added *added;          /* unique contents */
    size_t n_added;
    _apb_str_map added_map;     /* content -> index in added[] */
    uint32_t *bucket[2];        /* [normalized]: indices into added[], by first byte, longest first */
    uint32_t bucket_start[2][257];
    pcre2_code *word_re;        /* "is a word character" for single_word; NULL when unused */

    _apb_pretok pretok[_APB_TOK_MAX_STEPS];
    size_t n_pretok;
    _apb_template post[_APB_TOK_MAX_STEPS];
    size_t n_post;
    int decoder;

    unsigned char byte_utf8[256][2]; /* GPT-2 bytes_to_unicode, UTF-8 encoded (1 or 2 bytes) */
    unsigned char byte_utf8_len[256];
    int16_t cp_byte[0x144];          /* inverse: code point -> byte, -1 when not in the alphabet */
};

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the others to U+0100... */
static void _apb_init_byte_map(apb_tokenizer *t)
{
    for (int i = 0; i < 0x144; i++)
        t->cp_byte[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = keep ? b : 256 + n++;
        t->cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->byte_utf8[b][0] = (unsigned char)cp;
            t->byte_utf8_len[b] = 1;
        } else {
            t->byte_utf8[b][0] = (unsigned char)(0xC0 | cp >> 6);
            t->byte_utf8[b][1] = (unsigned char)(0x80 | (cp & 0x3F));
            t->byte_utf8_len[b] = 2;
        }
    }
}

void apb_tokenizer_free(apb_tokenizer *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->id_tok);
    free(t->id_special);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->added);
    free(t->added_map.slots);
    free(t->bucket[0]);
    free(t->bucket[1]);
    pcre2_code_free(t->word_re);
    for (size_t i = 0; i < t->n_pretok; i++)
        pcre2_code_free(t->pretok[i].re);
    for (size_t i = 0; i < t->n_post; i++)
        free(t->post[i].items);
    free(t);
}

/* ================================================================== regexes */

/* Rewrites the Oniguruma pattern's \s / \S into PCRE2 classes with Oniguruma's meaning (Unicode
 * White_Space = \t-\r, U+0085 and \p{Z}; PCRE2's UCP \s also matches U+180E, which Unicode 6.3
 * dropped from White_Space). \S inside a bracket class cannot be spelled as a PCRE2 class item and
 * is kept (it differs only on U+180E). \w, \h and
 * other Oniguruma-specific escapes are not rewritten (the supported tokenizers do not use them).
 * Returns a malloc'd string or NULL (out of memory). */
static char *_apb_regex_from_onig(const char *p, size_t n, size_t *out_len)
{
    static const char sp_in[] = "\\t-\\r\\x{85}\\p{Z}";
    static const char sp_out[] = "[\\t-\\r\\x{85}\\p{Z}]";
    static const char nsp_out[] = "[^\\t-\\r\\x{85}\\p{Z}]";
    size_t cap = n * (sizeof nsp_out) + 1, o = 0;
    char *r = malloc(cap);
    if (!r)
        return NULL;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            const char *rep = NULL;
            if (d == 's')
                rep = in_class ? sp_in : sp_out;
            else if (d == 'S' && !in_class)
                rep = nsp_out;
            if (rep) {
                size_t l = strlen(rep);
                memcpy(r + o, rep, l);
                o += l;
                i++;
                continue;
            }
            if (d == 'Q') {  /* \Q...\E: copied verbatim */
                const char *e = NULL;
                for (size_t k = i + 2; k + 1 < n; k++)
                    if (p[k] == '\\' && p[k + 1] == 'E') {
                        e = p + k;
                        break;
                    }
                size_t end = e ? (size_t)(e - p) + 2 : n;
                memcpy(r + o, p + i, end - i);
                o += end - i;
                i = end - 1;
                continue;
            }
            r[o++] = c;
            r[o++] = d;
            i++;
            if (d == 'c' && i + 1 < n)  /* \cX: X is literal */
                r[o++] = p[++i];
            continue;
        }
        r[o++] = c;
        if (!in_class && c == '[') {
            in_class = 1;
            /* "[]" and "[^]": the ']' right after the opening is a literal */
            if (i + 1 < n && p[i + 1] == '^')
                r[o++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']')
                r[o++] = p[++i];
        } else if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX [:name:] inside a class */
            size_t k = i + 2;
            while (k + 1 < n && !(p[k] == ':' && p[k + 1] == ']'))
                k++;
            size_t end = k + 1 < n ? k + 2 : n;
            memcpy(r + o, p + i + 1, end - i - 1);
            o += end - i - 1;
            i = end - 1;
        } else if (in_class && c == ']') {
            in_class = 0;
        }
    }
    r[o] = 0;
    *out_len = o;
    return r;
}

/* Compiles a pre-tokenizer pattern (UTF + UCP, JIT when available). literal: a plain string. */
static int _apb_compile(const char *pat, size_t len, int literal, pcre2_code **out, const char *what,
                        const char *field, apb_err *err)
{
    size_t rlen = len;
    char *rew = literal ? NULL : _apb_regex_from_onig(pat, len, &rlen);
    if (!literal && !rew)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pat : rew), rlen,
                                   literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP, &ecode, &eoff, NULL);
    free(rew);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return apb_fail(err, APB_E_MODEL, "%s: %s: unsupported regex /%.*s/: %s", what, field,
                        (int)(len > 200 ? 200 : len), pat, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  /* without JIT the interpreter runs */
    *out = re;
    return APB_OK;
}

/* ================================================================== JSON field helpers */

/* Optional boolean: absent or null gives def. */
static int _apb_opt_bool(const json_t *o, const char *what, const char *path, const char *key, int def,
                         int *out, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        *out = def;
        return APB_OK;
    }
    if (!json_is_boolean(j))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.%s: expected a boolean, not %s", what, path, key,
                        apb_json_type_name(j));
    *out = json_is_true(j);
    return APB_OK;
}

/* Optional string: absent or null gives NULL. */
static int _apb_opt_str(const json_t *o, const char *what, const char *path, const char *key,
                        const char **out, size_t *len, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    *out = NULL;
    *len = 0;
    if (!j || json_is_null(j))
        return APB_OK;
    if (!json_is_string(j))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.%s: expected a string, not %s", what, path, key,
                        apb_json_type_name(j));
    *out = json_string_value(j);
    *len = json_string_length(j);
    return APB_OK;
}

/* The "type" of a component object at `path` (which must be an object with a string "type"). */
static int _apb_type(const json_t *o, const char *what, const char *path, const char **type, apb_err *err)
{
    if (!json_is_object(o))
        return apb_fail(err, APB_E_FORMAT, "%s: %s: expected an object, not %s", what, path, apb_json_type_name(o));
    const json_t *j = json_object_get(o, "type");
    if (!j)
        return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'type'", what, path);
    if (!json_is_string(j))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.type: expected a string, not %s", what, path, apb_json_type_name(j));
    *type = json_string_value(j);
    return APB_OK;
}

/* The array field `key` of a Sequence component. */
static int _apb_seq_items(const json_t *o, const char *what, const char *path, const char *key,
                          const json_t **arr, apb_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j)
        return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field '%s'", what, path, key);
    if (!json_is_array(j))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.%s: expected an array, not %s", what, path, key,
                        apb_json_type_name(j));
    *arr = j;
    return APB_OK;
}

/* Token text for messages: at most 64 bytes. */
#define _APB_TOKFMT "'%.*s'"
#define _APB_TOKARG(s, n) (int)((n) > 64 ? 64 : (n)), (s)

/* ================================================================== normalizer */

/* Accepted: null, NFC, and Sequence of those. NFC is taken as a no-op: the text is assumed to be
 * NFC already (almost all real text is; the composition tables are not worth carrying), so a
 * decomposed input (e.g. "e" + U+0301) may tokenize differently from `tokenizers` for Qwen2. */
static int _apb_parse_normalizer(const json_t *n, const char *what, const char *path, int depth, apb_err *err)
{
    if (!n || json_is_null(n))
        return APB_OK;
    const char *type = NULL;
    int rc = _apb_type(n, what, path, &type, err);
    if (rc)
        return rc;
    if (!strcmp(type, "NFC"))
        return APB_OK;
    if (!strcmp(type, "Sequence")) {
        const json_t *arr = NULL;
        if ((rc = _apb_seq_items(n, what, path, "normalizers", &arr, err)))
            return rc;
        if (depth >= _APB_TOK_MAX_DEPTH)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: Sequence nested too deeply", what, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            if ((rc = _apb_parse_normalizer(json_array_get(arr, i), what, sub, depth + 1, err)))
                return rc;
        }
        return APB_OK;
    }
    return apb_fail(err, APB_E_MODEL, "%s: %s: unsupported normalizer type '%s' (supported: NFC, Sequence)",
                    what, path, type);
}

/* ================================================================== pre-tokenizer */

static int _apb_add_pretok(apb_tokenizer *t, const char *what, const char *path, _apb_pretok p, apb_err *err)
{
    if (t->n_pretok >= _APB_TOK_MAX_STEPS) {
        pcre2_code_free(p.re);
        return apb_fail(err, APB_E_FORMAT, "%s: %s: more than %d pre-tokenizers", what, path, _APB_TOK_MAX_STEPS);
    }
    t->pretok[t->n_pretok++] = p;
    return APB_OK;
}

static int _apb_parse_pretok(apb_tokenizer *t, const json_t *n, const char *what, const char *path, int depth,
                             apb_err *err)
{
    if (!n || json_is_null(n))
        return APB_OK;
    const char *type = NULL;
    int rc = _apb_type(n, what, path, &type, err);
    if (rc)
        return rc;
    _apb_pretok p = {0};
    char field[300];
    if (!strcmp(type, "Sequence")) {
        const json_t *arr = NULL;
        if ((rc = _apb_seq_items(n, what, path, "pretokenizers", &arr, err)))
            return rc;
        if (depth >= _APB_TOK_MAX_DEPTH)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: Sequence nested too deeply", what, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
            if ((rc = _apb_parse_pretok(t, json_array_get(arr, i), what, sub, depth + 1, err)))
                return rc;
        }
        return APB_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        int use_regex = 1;
        if ((rc = _apb_opt_bool(n, what, path, "add_prefix_space", 1, &p.prefix_space, err)) ||
            (rc = _apb_opt_bool(n, what, path, "use_regex", 1, &use_regex, err)))
            return rc;
        p.kind = _APB_PT_BYTELEVEL;
        snprintf(field, sizeof field, "%s (GPT-2 regex)", path);
        if (use_regex && (rc = _apb_compile(_apb_gpt2_regex, sizeof _apb_gpt2_regex - 1, 0, &p.re, what, field, err)))
            return rc;
        return _apb_add_pretok(t, what, path, p, err);
    }
    if (!strcmp(type, "Digits")) {
        /* Rust's char::is_numeric is \p{N}; individual: each digit alone, else runs (Contiguous). */
        int individual = 0;
        if ((rc = _apb_opt_bool(n, what, path, "individual_digits", 0, &individual, err)))
            return rc;
        p.kind = _APB_PT_SPLIT;
        p.behavior = _APB_B_ISOLATED;
        const char *pat = individual ? "\\p{N}" : "\\p{N}+";
        if ((rc = _apb_compile(pat, strlen(pat), 0, &p.re, what, path, err)))
            return rc;
        return _apb_add_pretok(t, what, path, p, err);
    }
    if (!strcmp(type, "Split")) {
        const json_t *pat = json_object_get(n, "pattern");
        if (!pat)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'pattern'", what, path);
        const json_t *rx = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
        const json_t *lit = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
        if (!json_is_object(pat) || json_object_size(pat) != 1 || !(rx || lit))
            return apb_fail(err, APB_E_FORMAT, "%s: %s.pattern: expected {\"Regex\": ...} or {\"String\": ...}",
                            what, path);
        const json_t *s = rx ? rx : lit;
        snprintf(field, sizeof field, "%s.pattern.%s", path, rx ? "Regex" : "String");
        if (!json_is_string(s))
            return apb_fail(err, APB_E_FORMAT, "%s: %s: expected a string, not %s", what, field, apb_json_type_name(s));
        const json_t *b = json_object_get(n, "behavior");
        if (!b)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'behavior'", what, path);
        if (!json_is_string(b))
            return apb_fail(err, APB_E_FORMAT, "%s: %s.behavior: expected a string, not %s", what, path,
                            apb_json_type_name(b));
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
        p.behavior = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(json_string_value(b), names[i]))
                p.behavior = i;
        if (p.behavior < 0)
            return apb_fail(err, APB_E_FORMAT, "%s: %s.behavior: unknown behavior '%s'", what, path,
                            json_string_value(b));
        if ((rc = _apb_opt_bool(n, what, path, "invert", 0, &p.invert, err)))
            return rc;
        p.kind = _APB_PT_SPLIT;
        if ((rc = _apb_compile(json_string_value(s), json_string_length(s), lit != NULL, &p.re, what, field, err)))
            return rc;
        return _apb_add_pretok(t, what, path, p, err);
    }
    return apb_fail(err, APB_E_MODEL,
                    "%s: %s: unsupported pre_tokenizer type '%s' (supported: ByteLevel, Split, Digits, Sequence)",
                    what, path, type);
}

/* ================================================================== post-processor */

static int _apb_add_template(apb_tokenizer *t, const char *what, const char *path, const int32_t *items,
                             size_t n, apb_err *err)
{
    if (t->n_post >= _APB_TOK_MAX_STEPS)
        return apb_fail(err, APB_E_FORMAT, "%s: %s: more than %d post-processors", what, path, _APB_TOK_MAX_STEPS);
    int32_t *c = malloc((n ? n : 1) * sizeof *c);
    if (!c)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    memcpy(c, items, n * sizeof *c);
    t->post[t->n_post].items = c;
    t->post[t->n_post].n = n;
    t->n_post++;
    return APB_OK;
}

/* A token id used by a post-processor: an integer naming an existing token. */
static int _apb_post_id(const apb_tokenizer *t, const json_t *j, const char *what, const char *field, int32_t *out,
                        apb_err *err)
{
    if (!json_is_integer(j))
        return apb_fail(err, APB_E_FORMAT, "%s: %s: expected an integer id, not %s", what, field, apb_json_type_name(j));
    json_int_t v = json_integer_value(j);
    if (v < 0 || v >= t->n_ids || t->id_tok[v].len == SIZE_MAX)
        return apb_fail(err, APB_E_FORMAT, "%s: %s: id %lld is not a token of the vocabulary", what, field,
                        (long long)v);
    *out = (int32_t)v;
    return APB_OK;
}

/* TemplateProcessing: the "single" template, SpecialToken entries resolved through special_tokens. */
static int _apb_parse_template(apb_tokenizer *t, const json_t *n, const char *what, const char *path, apb_err *err)
{
    char field[400];
    const json_t *single = json_object_get(n, "single");
    const json_t *specials = json_object_get(n, "special_tokens");
    if (!single)
        return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'single'", what, path);
    if (!json_is_array(single))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.single: expected an array, not %s", what, path,
                        apb_json_type_name(single));
    if (specials && !json_is_null(specials) && !json_is_object(specials))
        return apb_fail(err, APB_E_FORMAT, "%s: %s.special_tokens: expected an object, not %s", what, path,
                        apb_json_type_name(specials));
    int32_t *items = NULL;
    size_t n_items = 0, cap = 0;
    int rc = APB_OK;
    for (size_t i = 0; i < json_array_size(single) && !rc; i++) {
        const json_t *e = json_array_get(single, i);
        const json_t *st = json_is_object(e) ? json_object_get(e, "SpecialToken") : NULL;
        const json_t *sq = json_is_object(e) ? json_object_get(e, "Sequence") : NULL;
        snprintf(field, sizeof field, "%s.single[%zu]", path, i);
        if (!json_is_object(e) || json_object_size(e) != 1 || !(st || sq)) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: %s: expected {\"SpecialToken\": ...} or {\"Sequence\": ...}",
                          what, field);
            break;
        }
        const json_t *id = json_is_object(st ? st : sq) ? json_object_get(st ? st : sq, "id") : NULL;
        if (!json_is_string(id)) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: %s.%s: expected an object with a string 'id'", what, field,
                          st ? "SpecialToken" : "Sequence");
            break;
        }
        if (sq) {
            if (strcmp(json_string_value(id), "A")) {
                rc = apb_fail(err, APB_E_FORMAT, "%s: %s.Sequence.id: the single template can only hold "
                              "sequence 'A', not '%s'", what, field, json_string_value(id));
                break;
            }
            if (_apb_grow((void **)&items, &cap, n_items + 1, sizeof *items)) {
                rc = apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
                break;
            }
            items[n_items++] = -1;
            continue;
        }
        const json_t *sp = json_is_object(specials) ? json_object_get(specials, json_string_value(id)) : NULL;
        if (!sp) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: %s: special token '%s' is missing from %s.special_tokens",
                          what, field, json_string_value(id), path);
            break;
        }
        snprintf(field, sizeof field, "%s.special_tokens[\"%.100s\"].ids", path, json_string_value(id));
        const json_t *ids = json_is_object(sp) ? json_object_get(sp, "ids") : NULL;
        if (!json_is_array(ids)) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: %s: expected an array of ids", what, field);
            break;
        }
        for (size_t k = 0; k < json_array_size(ids) && !rc; k++) {
            char f2[450];
            snprintf(f2, sizeof f2, "%s[%zu]", field, k);
            if (_apb_grow((void **)&items, &cap, n_items + 1, sizeof *items))
                rc = apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
            else
                rc = _apb_post_id(t, json_array_get(ids, k), what, f2, &items[n_items++], err);
        }
    }
    if (!rc)
        rc = _apb_add_template(t, what, path, items, n_items, err);
    free(items);
    return rc;
}

/* RobertaProcessing / BertProcessing: cls A sep, with cls and sep given as [token, id]. */
static int _apb_parse_cls_sep(apb_tokenizer *t, const json_t *n, const char *what, const char *path, apb_err *err)
{
    int32_t items[3] = {0, -1, 0};
    static const char *const keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        char field[300];
        snprintf(field, sizeof field, "%s.%s", path, keys[k]);
        const json_t *j = json_object_get(n, keys[k]);
        if (!json_is_array(j) || json_array_size(j) != 2 || !json_is_string(json_array_get(j, 0)))
            return apb_fail(err, APB_E_FORMAT, "%s: %s: expected [token, id]", what, field);
        int rc = _apb_post_id(t, json_array_get(j, 1), what, field, &items[k ? 2 : 0], err);
        if (rc)
            return rc;
    }
    return _apb_add_template(t, what, path, items, 3, err);
}

static int _apb_parse_post(apb_tokenizer *t, const json_t *n, const char *what, const char *path, int depth,
                           apb_err *err)
{
    if (!n || json_is_null(n))
        return APB_OK;
    const char *type = NULL;
    int rc = _apb_type(n, what, path, &type, err);
    if (rc)
        return rc;
    if (!strcmp(type, "ByteLevel"))
        return APB_OK;  /* it only trims offsets */
    if (!strcmp(type, "TemplateProcessing"))
        return _apb_parse_template(t, n, what, path, err);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing"))
        return _apb_parse_cls_sep(t, n, what, path, err);
    if (!strcmp(type, "Sequence")) {
        const json_t *arr = NULL;
        if ((rc = _apb_seq_items(n, what, path, "processors", &arr, err)))
            return rc;
        if (depth >= _APB_TOK_MAX_DEPTH)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: Sequence nested too deeply", what, path);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", path, i);
            if ((rc = _apb_parse_post(t, json_array_get(arr, i), what, sub, depth + 1, err)))
                return rc;
        }
        return APB_OK;
    }
    return apb_fail(err, APB_E_MODEL,
                    "%s: %s: unsupported post_processor type '%s' (supported: ByteLevel, TemplateProcessing, "
                    "RobertaProcessing, BertProcessing, Sequence)", what, path, type);
}

/* ================================================================== decoder */

/* null (tokens joined by spaces, as `tokenizers` does without a decoder), ByteLevel, or a Sequence
 * holding a single ByteLevel. */
static int _apb_parse_decoder(apb_tokenizer *t, const json_t *n, const char *what, apb_err *err)
{
    t->decoder = _APB_DEC_JOIN;
    if (!n || json_is_null(n))
        return APB_OK;
    const char *type = NULL;
    int rc = _apb_type(n, what, "decoder", &type, err);
    if (rc)
        return rc;
    if (!strcmp(type, "ByteLevel")) {
        t->decoder = _APB_DEC_BYTELEVEL;
        return APB_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const json_t *arr = NULL;
        if ((rc = _apb_seq_items(n, what, "decoder", "decoders", &arr, err)))
            return rc;
        const char *sub = NULL;
        if (json_array_size(arr) == 1 && !_apb_type(json_array_get(arr, 0), what, "decoder.decoders[0]", &sub, err) &&
            !strcmp(sub, "ByteLevel")) {
            t->decoder = _APB_DEC_BYTELEVEL;
            return APB_OK;
        }
    }
    return apb_fail(err, APB_E_MODEL, "%s: decoder: unsupported decoder (supported: ByteLevel)", what);
}

/* ================================================================== model and added tokens */

/* Validates added_tokens and sums the lengths of their contents. */
static int _apb_check_added(const json_t *arr, const char *what, size_t *bytes, apb_err *err)
{
    *bytes = 0;
    if (!arr || json_is_null(arr))
        return APB_OK;
    if (!json_is_array(arr))
        return apb_fail(err, APB_E_FORMAT, "%s: added_tokens: expected an array, not %s", what, apb_json_type_name(arr));
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *e = json_array_get(arr, i);
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        if (!json_is_object(e))
            return apb_fail(err, APB_E_FORMAT, "%s: %s: expected an object, not %s", what, path, apb_json_type_name(e));
        const json_t *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        if (!id)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'id'", what, path);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= _APB_TOK_MAX_IDS)
            return apb_fail(err, APB_E_FORMAT, "%s: %s.id: expected an integer in [0, %d]", what, path,
                            _APB_TOK_MAX_IDS - 1);
        if (!c)
            return apb_fail(err, APB_E_FORMAT, "%s: %s: missing field 'content'", what, path);
        if (!json_is_string(c))
            return apb_fail(err, APB_E_FORMAT, "%s: %s.content: expected a string, not %s", what, path,
                            apb_json_type_name(c));
        static const char *const flags[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
        for (int k = 0; k < 5; k++) {
            int v, rc = _apb_opt_bool(e, what, path, flags[k], 0, &v, err);
            if (rc)
                return rc;
        }
        *bytes += json_string_length(c);
    }
    return APB_OK;
}

/* model.vocab: fills the pool, the vocab map and the max id. */
static int _apb_load_vocab(apb_tokenizer *t, const json_t *vocab, const char *what, int32_t *max_id, apb_err *err)
{
    const char *key;
    json_t *v;
    if (_apb_str_map_init(&t->vocab, json_object_size(vocab)))
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    json_object_foreach((json_t *)vocab, key, v) {
        size_t klen = strlen(key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= _APB_TOK_MAX_IDS)
            return apb_fail(err, APB_E_FORMAT, "%s: model.vocab[" _APB_TOKFMT "]: expected an integer id in [0, %d], "
                            "not %s", what, _APB_TOKARG(key, klen), _APB_TOK_MAX_IDS - 1,
                            json_is_integer(v) ? "out of range" : apb_json_type_name(v));
        if (klen == 0)
            return apb_fail(err, APB_E_FORMAT, "%s: model.vocab: empty token", what);
        if (klen > UINT32_MAX)
            return apb_fail(err, APB_E_FORMAT, "%s: model.vocab: token too long", what);
        int32_t id = (int32_t)json_integer_value(v);
        _apb_str_slot *s = _apb_str_map_slot(&t->vocab, t->pool, key, klen);
        if (s->id >= 0)
            continue;  /* cannot happen: JSON object keys are unique */
        memcpy(t->pool + t->pool_len, key, klen);
        s->off = t->pool_len;
        s->len = (uint32_t)klen;
        s->id = id;
        t->vocab.count++;
        t->pool_len += klen;
        if (id > *max_id)
            *max_id = id;
    }
    return APB_OK;
}

/* added_tokens (already validated): pool, added[] (unique contents) and the content -> index in
 * added[] map. Ids are assigned as `tokenizers` does when it loads the file (its AddedVocabulary):
 * a content already in the model vocabulary keeps its vocabulary id, another one takes the next
 * id after the vocabulary (entries count) or after the largest added id; the "id" field is only
 * type-checked (files written by `tokenizers` agree). A repeated content keeps its first id and
 * normalized flag, takes the last lstrip / rstrip / single_word and is special if any entry is.
 * Empty contents are ignored. */
static int _apb_load_added(apb_tokenizer *t, const json_t *arr, const char *what, int32_t *max_id, apb_err *err)
{
    size_t n = json_array_size(arr);
    int64_t vocab_len = (int64_t)t->vocab.count, max_added = -1;
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || _apb_str_map_init(&t->added_map, n))
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(arr, i);
        const json_t *c = json_object_get(e, "content");
        size_t len = json_string_length(c);
        if (len == 0)
            continue;
        if (len > UINT32_MAX)
            return apb_fail(err, APB_E_FORMAT, "%s: added_tokens[%zu].content: too long", what, i);
        const char *s = json_string_value(c);
        int f[5];
        static const char *const flags[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
        for (int k = 0; k < 5; k++)
            _apb_opt_bool(e, what, "", flags[k], -1, &f[k], NULL);
        if (f[4] < 0)
            f[4] = 0;
        if (f[3] < 0)
            f[3] = !f[4];  /* `tokenizers`' default: special tokens are not normalized */
        _apb_str_slot *slot = _apb_str_map_slot(&t->added_map, t->pool, s, len);
        _apb_added *a;
        if (slot->id >= 0) {
            a = &t->added[slot->id];
            a->special |= f[4] > 0;
        } else {
            int64_t id = _apb_str_map_get(&t->vocab, t->pool, s, len);
            if (id < 0)
                id = max_added < 0 ? vocab_len : max_added >= vocab_len ? max_added + 1 : vocab_len;
            if (id >= _APB_TOK_MAX_IDS)
                return apb_fail(err, APB_E_FORMAT, "%s: added_tokens[%zu]: id %lld is out of range [0, %d]", what,
                                i, (long long)id, _APB_TOK_MAX_IDS - 1);
            if (id > max_added)
                max_added = id;
            slot->id = (int32_t)t->n_added;
            a = &t->added[t->n_added++];
            memcpy(t->pool + t->pool_len, s, len);
            a->off = t->pool_len;
            a->len = (uint32_t)len;
            a->id = (int32_t)id;
            a->normalized = f[3] > 0;
            a->special = f[4] > 0;
            t->pool_len += len;
            slot->off = a->off;
            slot->len = a->len;
            if (a->id > *max_id)
                *max_id = a->id;
        }
        a->single_word = f[0] > 0;
        a->lstrip = f[1] > 0;
        a->rstrip = f[2] > 0;
    }
    return APB_OK;
}

/* One merge: "a b" or ["a", "b"]. */
static int _apb_merge_parts(const json_t *m, size_t i, const char *what, const char **a, size_t *la,
                            const char **b, size_t *lb, apb_err *err)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
            return apb_fail(err, APB_E_FORMAT, "%s: model.merges[%zu]: expected a string 'a b' with exactly one "
                            "space, not " _APB_TOKFMT, what, i, _APB_TOKARG(s, n));
        *a = s;
        *la = (size_t)(sp - s);
        *b = sp + 1;
        *lb = n - *la - 1;
        return APB_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *la = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *lb = json_string_length(json_array_get(m, 1));
        return APB_OK;
    }
    return apb_fail(err, APB_E_FORMAT, "%s: model.merges[%zu]: expected a string 'a b' or a pair [\"a\", \"b\"], "
                    "not %s", what, i, json_is_array(m) ? "another array" : apb_json_type_name(m));
}

static int _apb_load_merges(apb_tokenizer *t, const json_t *merges, const char *what, apb_err *err)
{
    size_t n = json_array_size(merges);
    if (_apb_pair_map_init(&t->merges, n))
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = APB_OK;
    int32_t rank = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const json_t *m = json_array_get(merges, i);
        if (json_is_string(m) && !strncmp(json_string_value(m), "#version", 8))
            continue;  /* header line of merges.txt, skipped by `tokenizers` too */
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if ((rc = _apb_merge_parts(m, i, what, &a, &la, &b, &lb, err)))
            break;
        int32_t ia = _apb_str_map_get(&t->vocab, t->pool, a, la);
        int32_t ib = _apb_str_map_get(&t->vocab, t->pool, b, lb);
        if (ia < 0 || ib < 0) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: model.merges[%zu]: token " _APB_TOKFMT " is not in the vocabulary",
                          what, i, _APB_TOKARG(ia < 0 ? a : b, ia < 0 ? la : lb));
            break;
        }
        if (_apb_grow((void **)&cat, &cat_cap, la + lb + 1, 1)) {
            rc = apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
            break;
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int32_t ic = _apb_str_map_get(&t->vocab, t->pool, cat, la + lb);
        if (ic < 0) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: model.merges[%zu]: merged token " _APB_TOKFMT
                          " is not in the vocabulary", what, i, _APB_TOKARG(cat, la + lb));
            break;
        }
        /* a repeated pair takes its last rank, as in `tokenizers` */
        _apb_pair_slot *s = _apb_pair_map_slot(&t->merges, ia, ib);
        s->key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        s->rank = rank++;
        s->new_id = ic;
    }
    free(cat);
    return rc;
}

static int _apb_parse_model(apb_tokenizer *t, const json_t *model, const char *what, apb_err *err)
{
    int rc;
    const json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!vocab)
        return apb_fail(err, APB_E_FORMAT, "%s: model: missing field 'vocab'", what);
    if (!json_is_object(vocab))
        return apb_fail(err, APB_E_FORMAT, "%s: model.vocab: expected an object, not %s", what, apb_json_type_name(vocab));
    if (!merges)
        return apb_fail(err, APB_E_FORMAT, "%s: model: missing field 'merges'", what);
    if (!json_is_array(merges))
        return apb_fail(err, APB_E_FORMAT, "%s: model.merges: expected an array, not %s", what, apb_json_type_name(merges));
    const char *s;
    size_t l;
    int byte_fallback = 0;
    if ((rc = _apb_opt_bool(model, what, "model", "ignore_merges", 0, &t->ignore_merges, err)) ||
        (rc = _apb_opt_bool(model, what, "model", "fuse_unk", 0, &t->fuse_unk, err)) ||
        (rc = _apb_opt_bool(model, what, "model", "byte_fallback", 0, &byte_fallback, err)))
        return rc;
    if (byte_fallback)
        return apb_fail(err, APB_E_MODEL, "%s: model.byte_fallback: true is not supported", what);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        if ((rc = _apb_opt_str(model, what, "model", affixes[k], &s, &l, err)))
            return rc;
        if (l)
            return apb_fail(err, APB_E_MODEL, "%s: model.%s: not supported (byte-level BPE has none)", what,
                            affixes[k]);
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout)) {
        if (!json_is_number(dropout))
            return apb_fail(err, APB_E_FORMAT, "%s: model.dropout: expected a number, not %s", what,
                            apb_json_type_name(dropout));
        if (json_number_value(dropout) != 0.0)
            return apb_fail(err, APB_E_MODEL, "%s: model.dropout: BPE dropout is not supported", what);
    }
    if ((rc = _apb_load_merges(t, merges, what, err)))
        return rc;
    if ((rc = _apb_opt_str(model, what, "model", "unk_token", &s, &l, err)))
        return rc;
    t->unk_id = -1;
    if (s) {
        t->unk_id = _apb_str_map_get(&t->vocab, t->pool, s, l);
        if (t->unk_id < 0)
            return apb_fail(err, APB_E_FORMAT, "%s: model.unk_token: " _APB_TOKFMT " is not in the vocabulary",
                            what, _APB_TOKARG(s, l));
    }
    return APB_OK;
}

/* Added-token lookup buckets: per set (normalized or not) and first byte, longest first. */
static int _apb_build_buckets(apb_tokenizer *t)
{
    for (int set = 0; set < 2; set++) {
        uint32_t *cnt = t->bucket_start[set];
        memset(cnt, 0, sizeof t->bucket_start[set]);
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == set)
                cnt[(unsigned char)t->pool[t->added[i].off] + 1]++;
        for (int b = 0; b < 256; b++)
            cnt[b + 1] += cnt[b];
        t->bucket[set] = malloc((cnt[256] ? cnt[256] : 1) * sizeof(uint32_t));
        if (!t->bucket[set])
            return APB_E_NOMEM;
        uint32_t fill[256];
        memcpy(fill, cnt, sizeof fill);
        for (size_t i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == set)
                t->bucket[set][fill[(unsigned char)t->pool[t->added[i].off]]++] = (uint32_t)i;
        /* insertion sort by decreasing length inside each bucket (buckets are small) */
        for (int b = 0; b < 256; b++)
            for (uint32_t i = cnt[b] + 1; i < cnt[b + 1]; i++) {
                uint32_t x = t->bucket[set][i], j = i;
                while (j > cnt[b] && t->added[t->bucket[set][j - 1]].len < t->added[x].len) {
                    t->bucket[set][j] = t->bucket[set][j - 1];
                    j--;
                }
                t->bucket[set][j] = x;
            }
    }
    return APB_OK;
}

static int _apb_parse_root(apb_tokenizer *t, const json_t *root, const char *what, apb_err *err)
{
    int rc;
    if (!json_is_object(root))
        return apb_fail(err, APB_E_FORMAT, "%s: expected a JSON object at the top level, not %s", what,
                        apb_json_type_name(root));
    const json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model))
        return apb_fail(err, APB_E_FORMAT, "%s: missing field 'model'", what);
    if (!json_is_object(model))
        return apb_fail(err, APB_E_FORMAT, "%s: model: expected an object, not %s", what, apb_json_type_name(model));
    const json_t *type = json_object_get(model, "type");
    if (type && !json_is_string(type))
        return apb_fail(err, APB_E_FORMAT, "%s: model.type: expected a string, not %s", what, apb_json_type_name(type));
    if (type && strcmp(json_string_value(type), "BPE"))
        return apb_fail(err, APB_E_MODEL, "%s: model.type: unsupported model '%s' (only BPE)", what,
                        json_string_value(type));
    if ((rc = _apb_parse_normalizer(json_object_get(root, "normalizer"), what, "normalizer", 0, err)))
        return rc;

    /* The pool holds every vocab token and added token content. */
    const json_t *added = json_object_get(root, "added_tokens");
    const json_t *vocab = json_object_get(model, "vocab");
    size_t added_bytes, vocab_bytes = 0;
    if ((rc = _apb_check_added(added, what, &added_bytes, err)))
        return rc;
    if (json_is_object(vocab)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)vocab, key, v)
            vocab_bytes += strlen(key);
    }
    t->pool = malloc(added_bytes + vocab_bytes + 1);
    if (!t->pool)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    int32_t max_id = -1;
    if (!json_is_object(vocab))
        return _apb_parse_model(t, model, what, err);  /* reports the problem */
    if ((rc = _apb_load_vocab(t, vocab, what, &max_id, err)))
        return rc;
    if ((rc = _apb_parse_model(t, model, what, err)))
        return rc;
    if ((rc = _apb_load_added(t, json_is_array(added) ? added : NULL, what, &max_id, err)))
        return rc;
    if (max_id < 0)
        return apb_fail(err, APB_E_FORMAT, "%s: model.vocab: the vocabulary is empty", what);

    /* id -> string: the vocab's first token of each id, then added tokens override. */
    t->n_ids = max_id + 1;
    t->id_tok = malloc((size_t)t->n_ids * sizeof *t->id_tok);
    t->id_special = calloc((size_t)t->n_ids, 1);
    if (!t->id_tok || !t->id_special)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    for (int32_t i = 0; i < t->n_ids; i++)
        t->id_tok[i].len = SIZE_MAX;
    for (size_t i = 0; i <= t->vocab.mask; i++) {
        const _apb_str_slot *s = &t->vocab.slots[i];
        if (s->id >= 0 && (t->id_tok[s->id].len == SIZE_MAX || s->off < t->id_tok[s->id].off))
            t->id_tok[s->id] = (_apb_span){s->off, s->len};
    }
    for (size_t i = 0; i < t->n_added; i++) {
        t->id_tok[t->added[i].id] = (_apb_span){t->added[i].off, t->added[i].len};
        t->id_special[t->added[i].id] = t->added[i].special;
    }
    for (int i = 0; i < _APB_CHAR_TAB; i++)
        t->char_id[i] = -1;
    for (size_t i = 0; i <= t->vocab.mask; i++) {
        const _apb_str_slot *s = &t->vocab.slots[i];
        if (s->id >= 0 && s->len <= 2) {
            const unsigned char *u = (const unsigned char *)t->pool + s->off;
            size_t l = _apb_utf8_len(u[0]), bad;
            if (l == s->len && _apb_utf8_seq(u, l, &bad) == l && _apb_utf8_cp(u, l) < _APB_CHAR_TAB)
                t->char_id[_apb_utf8_cp(u, l)] = s->id;
        }
    }
    if (_apb_build_buckets(t))
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].single_word && !t->word_re) {
            /* Rust regex-syntax's \w: alphabetic, marks, decimal digits, connectors, joiners */
            static const char wre[] = "[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
            if ((rc = _apb_compile(wre, sizeof wre - 1, 0, &t->word_re, what, "added_tokens (single_word)", err)))
                return rc;
        }

    if ((rc = _apb_parse_pretok(t, json_object_get(root, "pre_tokenizer"), what, "pre_tokenizer", 0, err)) ||
        (rc = _apb_parse_post(t, json_object_get(root, "post_processor"), what, "post_processor", 0, err)) ||
        (rc = _apb_parse_decoder(t, json_object_get(root, "decoder"), what, err)))
        return rc;
    /* truncation / padding are deliberately ignored: a long-context runtime never truncates prompts */
    return APB_OK;
}

int apb_tokenizer_parse(const char *json, size_t len, const char *what, apb_tokenizer **out, apb_err *err)
{
    if (!out)
        return apb_fail(err, APB_E_USAGE, "apb_tokenizer_parse: NULL output");
    *out = NULL;
    if (!what)
        what = "tokenizer.json";
    if (!json)
        return apb_fail(err, APB_E_USAGE, "%s: NULL text", what);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root)
        return apb_fail(err, APB_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", what, jerr.line,
                        jerr.column, jerr.text);
    apb_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", what);
    }
    _apb_init_byte_map(t);
    int rc = _apb_parse_root(t, root, what, err);
    json_decref(root);
    if (rc) {
        apb_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return APB_OK;
}

int apb_tokenizer_load(const char *path, apb_tokenizer **out, apb_err *err)
{
    if (!out)
        return apb_fail(err, APB_E_USAGE, "apb_tokenizer_load: NULL output");
    *out = NULL;
    if (!path)
        return apb_fail(err, APB_E_USAGE, "apb_tokenizer_load: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f)
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = APB_OK;
    for (;;) {
        if (_apb_grow((void **)&buf, &cap, len + 65536, 1)) {
            rc = apb_fail(err, APB_E_NOMEM, "%s: out of memory", path);
            break;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                rc = apb_fail(err, APB_E_IO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        if (len > (size_t)_APB_TOK_MAX_FILE) {
            rc = apb_fail(err, APB_E_FORMAT, "%s: larger than %ld bytes", path, _APB_TOK_MAX_FILE);
            break;
        }
    }
    fclose(f);
    if (!rc)
        rc = apb_tokenizer_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}

int apb_tokenizer_vocab_size(const apb_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

int apb_tokenizer_token_id(const apb_tokenizer *t, const char *token)
{
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    int32_t i = _apb_str_map_get(&t->added_map, t->pool, token, n);
    return i >= 0 ? t->added[i].id : _apb_str_map_get(&t->vocab, t->pool, token, n);
}

int apb_tokenizer_is_special(const apb_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_ids && t->id_special[id];
}

/* ================================================================== encoding */

typedef struct {
    size_t start, end;
    int match;
} _apb_event;

typedef struct {
    int32_t id;          /* token id */
    int32_t prev, next;  /* neighbours, -1 at the ends */
    uint32_t len;        /* bytes; 0 once merged into its left neighbour */
} _apb_sym;

typedef struct {
    int32_t rank, pos, new_id;
} _apb_cand;

/* Scratch space of one encode call. */
typedef struct {
    const apb_tokenizer *t;
    apb_err *err;
    char *arena;                     /* texts of the current pieces */
    size_t arena_len, arena_cap;
    _apb_span *cur, *nxt;            /* pieces (offsets into arena) */
    size_t n_cur, n_nxt, cap_cur, cap_nxt;
    _apb_event *ev, *ev2;
    size_t cap_ev, cap_ev2;
    int32_t *ids;
    size_t n_ids, cap_ids;
    _apb_sym *syms;
    size_t cap_syms;
    _apb_cand *heap;
    size_t cap_heap;
    _apb_span *segs;                 /* added-token split: offsets into the text */
    int32_t *seg_id;                 /* -1: text to tokenize */
    size_t n_segs, cap_segs, cap_seg_id;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
} _apb_ws;

static int _apb_nomem(_apb_ws *w)
{
    return apb_fail(w->err, APB_E_NOMEM, "tokenizer: out of memory");
}

static int _apb_push_id(_apb_ws *w, int32_t id)
{
    if (_apb_grow((void **)&w->ids, &w->cap_ids, w->n_ids + 1, sizeof *w->ids))
        return _apb_nomem(w);
    w->ids[w->n_ids++] = id;
    return APB_OK;
}

static int _apb_push_piece(_apb_ws *w, size_t off, size_t len)
{
    if (!len)
        return APB_OK;  /* `tokenizers` drops empty pieces */
    if (_apb_grow((void **)&w->nxt, &w->cap_nxt, w->n_nxt + 1, sizeof *w->nxt))
        return _apb_nomem(w);
    w->nxt[w->n_nxt++] = (_apb_span){off, len};
    return APB_OK;
}

static int _apb_push_event(_apb_ws *w, size_t *n, size_t start, size_t end, int match)
{
    if (_apb_grow((void **)&w->ev, &w->cap_ev, *n + 1, sizeof *w->ev))
        return _apb_nomem(w);
    w->ev[(*n)++] = (_apb_event){start, end, match};
    return APB_OK;
}

/* One pcre2_match; retries without JIT when the JIT stack is exhausted. */
static int _apb_match(_apb_ws *w, const pcre2_code *re, const char *s, size_t len, size_t start)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, start, PCRE2_NO_UTF_CHECK, w->md, w->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, len, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, w->md, w->mctx);
    return rc;
}

/* Events (match / non-match ranges covering s[0..len)) of the regex on one piece, with empty
 * matches handled like the Rust `onig` crate's find_iter (used by `tokenizers`). */
static int _apb_find_matches(_apb_ws *w, const pcre2_code *re, const char *s, size_t len, size_t *n_ev)
{
    size_t last_end = 0, prev = 0, last_match_end = SIZE_MAX;
    int rc;
    *n_ev = 0;
    while (last_end <= len) {
        int m = _apb_match(w, re, s, len, last_end);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            return apb_fail(w->err, APB_E_RUNTIME, "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < last_end || me < ms || me > len)  /* \K games: not a usable split */
            return apb_fail(w->err, APB_E_MODEL, "tokenizer: pre-tokenizer regex gave an unusable match");
        if (ms == me && me == last_match_end) {
            last_end += last_end < len ? _apb_utf8_len((unsigned char)s[last_end]) : 1;
            continue;
        }
        last_end = last_match_end = me;
        if (prev != ms && (rc = _apb_push_event(w, n_ev, prev, ms, 0)))
            return rc;
        if ((rc = _apb_push_event(w, n_ev, ms, me, 1)))
            return rc;
        prev = me;
    }
    if (prev != len && (rc = _apb_push_event(w, n_ev, prev, len, 0)))
        return rc;
    return APB_OK;
}

/* Splits the piece at arena[off..off+len) with a regex and a behavior; pushes the new pieces. */
static int _apb_split(_apb_ws *w, const pcre2_code *re, int behavior, int invert, size_t off, size_t len)
{
    size_t n = 0, k = 0;
    int rc = _apb_find_matches(w, re, w->arena + off, len, &n);
    if (rc)
        return rc;
    _apb_event *e = w->ev;
    if (invert)
        for (size_t i = 0; i < n; i++)
            e[i].match = !e[i].match;
    int prev_match = 0;
    switch (behavior) {
    case _APB_B_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!e[i].match)
                e[k++] = e[i];
        break;
    case _APB_B_ISOLATED:
        k = n;
        break;
    case _APB_B_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            if (e[i].match && !prev_match && k > 0)
                e[k - 1].end = e[i].end;
            else
                e[k++] = e[i];
            prev_match = e[i].match;
        }
        break;
    case _APB_B_MERGED_NEXT:
        if (_apb_grow((void **)&w->ev2, &w->cap_ev2, n, sizeof *w->ev2))
            return _apb_nomem(w);
        for (size_t i = n; i-- > 0;) {
            if (e[i].match && !prev_match && k > 0)
                w->ev2[k - 1].start = e[i].start;
            else
                w->ev2[k++] = e[i];
            prev_match = e[i].match;
        }
        for (size_t i = 0; i < k; i++)
            e[i] = w->ev2[k - 1 - i];
        break;
    default: /* _APB_B_CONTIGUOUS */
        for (size_t i = 0; i < n; i++) {
            if (e[i].match == prev_match && k > 0)
                e[k - 1].end = e[i].end;
            else
                e[k++] = e[i];
            prev_match = e[i].match;
        }
        break;
    }
    for (size_t i = 0; i < k; i++)
        if ((rc = _apb_push_piece(w, off + e[i].start, e[i].end - e[i].start)))
            return rc;
    return APB_OK;
}

static int _apb_arena_reserve(_apb_ws *w, size_t extra)
{
    if (extra > SIZE_MAX - w->arena_len || _apb_grow((void **)&w->arena, &w->arena_cap, w->arena_len + extra, 1))
        return _apb_nomem(w);
    return APB_OK;
}

/* ByteLevel on one piece: optional prefix space, GPT-2 regex split, bytes -> GPT-2 alphabet. */
static int _apb_bytelevel(_apb_ws *w, const _apb_pretok *p, size_t off, size_t len)
{
    const apb_tokenizer *t = w->t;
    int rc;
    if (p->prefix_space && w->arena[off] != ' ') {
        if ((rc = _apb_arena_reserve(w, len + 1)))
            return rc;
        w->arena[w->arena_len] = ' ';
        memcpy(w->arena + w->arena_len + 1, w->arena + off, len);
        off = w->arena_len;
        len++;
        w->arena_len += len;
    }
    size_t first = w->n_nxt;
    if (p->re)
        rc = _apb_split(w, p->re, _APB_B_ISOLATED, 0, off, len);
    else
        rc = _apb_push_piece(w, off, len);
    if (rc)
        return rc;
    for (size_t i = first; i < w->n_nxt; i++) {
        _apb_span *s = &w->nxt[i];
        if ((rc = _apb_arena_reserve(w, 2 * s->len)))
            return rc;
        const unsigned char *src = (const unsigned char *)w->arena + s->off;
        unsigned char *dst = (unsigned char *)w->arena + w->arena_len;
        size_t o = 0;
        for (size_t k = 0; k < s->len; k++) {
            dst[o++] = t->byte_utf8[src[k]][0];
            if (t->byte_utf8_len[src[k]] == 2)
                dst[o++] = t->byte_utf8[src[k]][1];
        }
        s->off = w->arena_len;
        s->len = o;
        w->arena_len += o;
    }
    return APB_OK;
}

/* Heap of merge candidates: lowest rank first, then leftmost. */
static int _apb_cand_less(const _apb_cand *a, const _apb_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void _apb_heap_push(_apb_cand *h, size_t *n, _apb_cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!_apb_cand_less(&c, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static _apb_cand _apb_heap_pop(_apb_cand *h, size_t *n)
{
    _apb_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && _apb_cand_less(&h[c + 1], &h[c]))
            c++;
        if (!_apb_cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Pushes the merge candidate (syms[pos], its next) when that pair has a merge. */
static void _apb_bpe_candidate(const apb_tokenizer *t, const _apb_sym *sy, int32_t pos, _apb_cand *h, size_t *n)
{
    int32_t nx = sy[pos].next;
    if (nx < 0)
        return;
    const _apb_pair_slot *m = _apb_pair_map_slot(&t->merges, sy[pos].id, sy[nx].id);
    if (m->rank >= 0)
        _apb_heap_push(h, n, (_apb_cand){m->rank, pos, m->new_id});
}

/* BPE of one piece (the `tokenizers` BPE model: word -> symbols -> merges by rank). */
static int _apb_bpe(_apb_ws *w, const char *s, size_t len)
{
    const apb_tokenizer *t = w->t;
    if (t->ignore_merges) {
        int32_t id = _apb_str_map_get(&t->vocab, t->pool, s, len);
        if (id >= 0)
            return _apb_push_id(w, id);
    }
    if (len > INT32_MAX)
        return apb_fail(w->err, APB_E_USAGE, "tokenizer: a single pre-token of %zu bytes is too long", len);
    if (_apb_grow((void **)&w->syms, &w->cap_syms, len, sizeof *w->syms) ||
        _apb_grow((void **)&w->heap, &w->cap_heap, 3 * len, sizeof *w->heap))
        return _apb_nomem(w);
    _apb_sym *sy = w->syms;
    int32_t n = 0;
    int32_t unk_len = 0;  /* pending unknown run (fuse_unk) */
    for (size_t i = 0; i < len;) {
        size_t l = _apb_utf8_len((unsigned char)s[i]);
        uint32_t cp = _apb_utf8_cp((const unsigned char *)s + i, l);
        int32_t id = cp < _APB_CHAR_TAB ? t->char_id[cp] : _apb_str_map_get(&t->vocab, t->pool, s + i, l);
        if (id >= 0 || t->unk_id >= 0) {
            if (id < 0 && t->fuse_unk && n > 0 && unk_len > 0) {
                sy[n - 1].len += (uint32_t)l;  /* extend the pending unknown */
            } else {
                sy[n] = (_apb_sym){id >= 0 ? id : t->unk_id, n - 1, n + 1, (uint32_t)l};
                n++;
            }
            unk_len = id < 0 ? unk_len + (int32_t)l : 0;
        }  /* else: dropped, as `tokenizers` does without an unk token */
        i += l;
    }
    if (n == 0)
        return APB_OK;
    sy[n - 1].next = -1;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        _apb_bpe_candidate(t, sy, i, w->heap, &nh);
    while (nh) {
        _apb_cand c = _apb_heap_pop(w->heap, &nh);
        _apb_sym *a = &sy[c.pos];
        if (a->len == 0 || a->next < 0)
            continue;
        const _apb_pair_slot *m = _apb_pair_map_slot(&t->merges, a->id, sy[a->next].id);
        if (m->rank < 0 || m->new_id != c.new_id)
            continue;  /* stale candidate */
        _apb_sym *b = &sy[a->next];
        a->id = c.new_id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0)
            sy[a->next].prev = c.pos;
        if (a->prev >= 0)
            _apb_bpe_candidate(t, sy, a->prev, w->heap, &nh);
        _apb_bpe_candidate(t, sy, c.pos, w->heap, &nh);
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next) {
        int rc = _apb_push_id(w, sy[i].id);
        if (rc)
            return rc;
    }
    return APB_OK;
}

/* Pre-tokenization and BPE of one text segment (no added tokens in it). */
static int _apb_encode_text(_apb_ws *w, const char *s, size_t len)
{
    const apb_tokenizer *t = w->t;
    int rc;
    if (len == 0)
        return APB_OK;
    w->arena_len = 0;
    if ((rc = _apb_arena_reserve(w, len)))
        return rc;
    memcpy(w->arena, s, len);
    w->arena_len = len;
    w->n_cur = 0;
    if (_apb_grow((void **)&w->cur, &w->cap_cur, 1, sizeof *w->cur))
        return _apb_nomem(w);
    w->cur[w->n_cur++] = (_apb_span){0, len};
    for (size_t k = 0; k < t->n_pretok; k++) {
        const _apb_pretok *p = &t->pretok[k];
        w->n_nxt = 0;
        for (size_t i = 0; i < w->n_cur; i++) {
            _apb_span c = w->cur[i];
            if (p->kind == _APB_PT_BYTELEVEL)
                rc = _apb_bytelevel(w, p, c.off, c.len);
            else
                rc = _apb_split(w, p->re, p->behavior, p->invert, c.off, c.len);
            if (rc)
                return rc;
        }
        _apb_span *sw = w->cur;
        size_t cap = w->cap_cur;
        w->cur = w->nxt;
        w->cap_cur = w->cap_nxt;
        w->n_cur = w->n_nxt;
        w->nxt = sw;
        w->cap_nxt = cap;
    }
    for (size_t i = 0; i < w->n_cur; i++)
        if ((rc = _apb_bpe(w, w->arena + w->cur[i].off, w->cur[i].len)))
            return rc;
    return APB_OK;
}

/* Is the character starting at s[at] a word character (for single_word)? */
static int _apb_word_char(_apb_ws *w, const char *s, size_t at)
{
    size_t l = _apb_utf8_len((unsigned char)s[at]);
    int rc = pcre2_match(w->t->word_re, (PCRE2_SPTR)s + at, l, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, w->md,
                         w->mctx);
    return rc >= 0;
}

static int _apb_push_seg(_apb_ws *w, size_t off, size_t len, int32_t id)
{
    if (_apb_grow((void **)&w->segs, &w->cap_segs, w->n_segs + 1, sizeof *w->segs) ||
        _apb_grow((void **)&w->seg_id, &w->cap_seg_id, w->n_segs + 1, sizeof *w->seg_id))
        return _apb_nomem(w);
    w->segs[w->n_segs] = (_apb_span){off, len};
    w->seg_id[w->n_segs++] = id;
    return APB_OK;
}

/* Cuts the added tokens of one set out of text[off..off+len) (the `tokenizers` AddedVocabulary
 * find_matches: leftmost-longest, non-overlapping, with single_word / lstrip / rstrip). */
static int _apb_split_added(_apb_ws *w, int set, const char *text, size_t off, size_t len)
{
    const apb_tokenizer *t = w->t;
    const char *s = text + off;
    const uint32_t *bs = t->bucket_start[set];
    size_t start_offset = 0, p = 0;
    int rc;
    while (p < len) {
        unsigned char b = (unsigned char)s[p];
        const _apb_added *hit = NULL;
        for (uint32_t k = bs[b]; k < bs[b + 1]; k++) {
            const _apb_added *a = &t->added[t->bucket[set][k]];
            if (a->len <= len - p && !memcmp(t->pool + a->off, s + p, a->len)) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            p++;
            continue;
        }
        size_t start = p, stop = p + hit->len;
        p = stop;
        if (hit->single_word) {
            int left_ok = start == 0 || !_apb_word_char(w, s, _apb_utf8_prev(s, start));
            int right_ok = stop == len || !_apb_word_char(w, s, stop);
            if (!left_ok || !right_ok)
                continue;
        }
        if (hit->lstrip) {
            size_t ns = start;
            while (ns > start_offset) {
                size_t q = _apb_utf8_prev(s, ns);
                if (!_apb_is_space(_apb_utf8_cp((const unsigned char *)s + q, ns - q)))
                    break;
                ns = q;
            }
            start = ns;
        }
        if (hit->rstrip) {
            while (stop < len) {
                size_t l = _apb_utf8_len((unsigned char)s[stop]);
                if (!_apb_is_space(_apb_utf8_cp((const unsigned char *)s + stop, l)))
                    break;
                stop += l;
            }
            p = stop;
        }
        if (start_offset < start && (rc = _apb_push_seg(w, off + start_offset, start - start_offset, -1)))
            return rc;
        if ((rc = _apb_push_seg(w, off + start, stop - start, hit->id)))
            return rc;
        start_offset = stop;
    }
    if (start_offset < len && (rc = _apb_push_seg(w, off + start_offset, len - start_offset, -1)))
        return rc;
    return APB_OK;
}

static void _apb_ws_free(_apb_ws *w)
{
    free(w->arena);
    free(w->cur);
    free(w->nxt);
    free(w->ev);
    free(w->ev2);
    free(w->ids);
    free(w->syms);
    free(w->heap);
    free(w->segs);
    free(w->seg_id);
    pcre2_match_data_free(w->md);
    pcre2_match_context_free(w->mctx);
    pcre2_jit_stack_free(w->jit);
}

/* Post-processing: each template wraps the current ids. */
static int _apb_post_process(_apb_ws *w)
{
    const apb_tokenizer *t = w->t;
    for (size_t k = 0; k < t->n_post; k++) {
        const _apb_template *tp = &t->post[k];
        size_t total = 0;
        for (size_t i = 0; i < tp->n; i++)
            total += tp->items[i] < 0 ? w->n_ids : 1;
        int32_t *out = malloc((total ? total : 1) * sizeof *out);
        if (!out)
            return _apb_nomem(w);
        size_t o = 0;
        for (size_t i = 0; i < tp->n; i++) {
            if (tp->items[i] < 0) {
                if (w->n_ids)
                    memcpy(out + o, w->ids, w->n_ids * sizeof *out);
                o += w->n_ids;
            } else {
                out[o++] = tp->items[i];
            }
        }
        free(w->ids);
        w->ids = out;
        w->cap_ids = total ? total : 1;
        w->n_ids = total;
    }
    return APB_OK;
}

int apb_tokenizer_encode(const apb_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                         size_t *n_ids, apb_err *err)
{
    if (!ids || !n_ids || !t || (!text && len))
        return apb_fail(err, APB_E_USAGE, "apb_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    size_t bad = _apb_utf8_check(text, len);
    if (bad < len)
        return apb_fail(err, APB_E_FORMAT, "tokenizer: the text is not valid UTF-8 (byte 0x%02x at offset %zu)",
                        (unsigned char)text[bad], bad);
    _apb_ws w = {.t = t, .err = err};
    int rc = APB_OK;
    w.md = pcre2_match_data_create(1, NULL);
    w.mctx = pcre2_match_context_create(NULL);
    w.jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!w.md || !w.mctx) {
        rc = _apb_nomem(&w);
        goto done;
    }
    if (w.jit)
        pcre2_jit_stack_assign(w.mctx, NULL, w.jit);

    /* 1. added tokens: non-normalized ones on the raw text, then normalized ones on the rest */
    if ((rc = _apb_split_added(&w, 0, text, 0, len)))
        goto done;
    if (t->bucket_start[1][256] > 0) {
        _apb_span *segs = w.segs;
        int32_t *seg_id = w.seg_id;
        size_t n = w.n_segs;
        w.segs = NULL;
        w.seg_id = NULL;
        w.n_segs = w.cap_segs = w.cap_seg_id = 0;
        for (size_t i = 0; i < n && !rc; i++)
            rc = seg_id[i] >= 0 ? _apb_push_seg(&w, segs[i].off, segs[i].len, seg_id[i])
                                : _apb_split_added(&w, 1, text, segs[i].off, segs[i].len);
        free(segs);
        free(seg_id);
        if (rc)
            goto done;
    }
    /* 2. the rest: (no-op normalizer), pre-tokenizers, BPE */
    for (size_t i = 0; i < w.n_segs && !rc; i++)
        rc = w.seg_id[i] >= 0 ? _apb_push_id(&w, w.seg_id[i]) : _apb_encode_text(&w, text + w.segs[i].off, w.segs[i].len);
    /* 3. post-processor */
    if (!rc && add_special)
        rc = _apb_post_process(&w);
    if (!rc && !w.ids && !(w.ids = malloc(sizeof *w.ids)))
        rc = _apb_nomem(&w);
    if (!rc) {
        *ids = w.ids;
        *n_ids = w.n_ids;
        w.ids = NULL;
    }
done:
    _apb_ws_free(&w);
    return rc;
}

/* ================================================================== decoding */

char *apb_tokenizer_decode(const apb_tokenizer *t, const int32_t *ids, size_t n, int skip_special)
{
    size_t len;
    return apb_tokenizer_decode_len(t, ids, n, skip_special, &len);
}

char *apb_tokenizer_decode_len(const apb_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                               size_t *out_len)
{
    if (!t || (!ids && n) || !out_len)
        return NULL;
    /* 1. token strings -> bytes (ByteLevel: through the inverse GPT-2 map; a token with a character
     *    outside the alphabet is taken as is; no decoder: tokens joined by spaces) */
    size_t cap = 64, len = 0;
    unsigned char *raw = malloc(cap);
    if (!raw)
        return NULL;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->id_tok[id].len == SIZE_MAX || (skip_special && t->id_special[id]))
            continue;  /* unknown ids are skipped, as `tokenizers` does */
        const unsigned char *s = (const unsigned char *)t->pool + t->id_tok[id].off;
        size_t l = t->id_tok[id].len;
        if (_apb_grow((void **)&raw, &cap, len + l + 2, 1)) {
            free(raw);
            return NULL;
        }
        if (t->decoder == _APB_DEC_JOIN) {
            if (!first)
                raw[len++] = ' ';
            memcpy(raw + len, s, l);
            len += l;
        } else {
            size_t o = len, k = 0;
            while (k < l) {
                size_t cl = _apb_utf8_len(s[k]);
                uint32_t cp = k + cl <= l ? _apb_utf8_cp(s + k, cl) : 0x10000;
                if (cp >= 0x144 || t->cp_byte[cp] < 0)
                    break;
                raw[o++] = (unsigned char)t->cp_byte[cp];
                k += cl;
            }
            if (k < l) {  /* not in the alphabet: the token's own bytes */
                memcpy(raw + len, s, l);
                o = len + l;
            }
            len = o;
        }
        first = 0;
    }
    /* 2. invalid UTF-8 -> U+FFFD per maximal invalid subpart (String::from_utf8_lossy) */
    size_t nbad = 0;
    for (size_t i = 0, b; i < len;) {
        size_t k = _apb_utf8_seq(raw + i, len - i, &b);
        i += k ? k : b;
        nbad += !k;
    }
    char *out = malloc(len + 2 * nbad + 1);
    if (!out) {
        free(raw);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0, b; i < len;) {
        size_t k = _apb_utf8_seq(raw + i, len - i, &b);
        if (k) {
            memcpy(out + o, raw + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += b;
        }
    }
    out[o] = 0;
    *out_len = o;
    free(raw);
    return out;
}
