/* SPDX-License-Identifier: MIT */
/**
 * @brief apb_tokenize: token ids of a corpus (one line per document) with a tokenizer.json, or the
 * text of a list of ids; the C side of the comparison with `tokenizers` (tests/ref/tok_ref.py).
 *
 * The corpus format is the one of tests/ref/tok_ref.py: the file is split into lines at "\n" (a
 * final "\n" ends the last line), a line holding exactly the byte 0x1E separates documents, and a
 * document is its lines joined by "\n". Documents are encoded without the post-processor's special
 * tokens unless --add-special is given; special tokens written in the text are matched.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizer.h"

static const char *const usage =
    "usage: apb_tokenize [--add-special] TOKENIZER_JSON CORPUS_FILE\n"
    "       apb_tokenize --decode [--skip-special] TOKENIZER_JSON ID...\n"
    "\n"
    "  The first form prints, for each document of CORPUS_FILE (documents are separated by a\n"
    "  line holding only the 0x1E character), one line of space-separated token ids;\n"
    "  --add-special applies the post-processor (BOS...).\n"
    "  The second prints the decoded text of the ids followed by a newline; --skip-special\n"
    "  leaves out special tokens.\n";

/* Reads a whole file into a malloc'd buffer. */
static int read_file(const char *path, char **out, size_t *len, apb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return apb_fail(err, APB_E_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = APB_OK;
    while (buf) {
        if (n == cap) {
            char *p = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = apb_fail(err, APB_E_IO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!buf)
        return apb_fail(err, APB_E_NOMEM, "%s: out of memory", path);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return APB_OK;
}

/* Encodes one document and prints its ids on one line. */
static int print_doc(const apb_tokenizer *tok, const char *doc, size_t len, int add_special, size_t index,
                     apb_err *err)
{
    int32_t *ids;
    size_t n;
    int rc = apb_tokenizer_encode(tok, doc, len, add_special, &ids, &n, err);
    if (rc)
        return apb_err_prefix(err, "document %zu: ", index);
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return APB_OK;
}

/* Splits the corpus into documents (see the file comment) and prints their ids. */
static int tokenize_corpus(const apb_tokenizer *tok, const char *path, int add_special, size_t *n_docs,
                           apb_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(path, &text, &len, err);
    if (rc)
        return rc;
    size_t pos = 0, doc_start = 0, doc_end = 0;
    int have_lines = 0;
    *n_docs = 0;
    for (;;) {
        /* the next line is text[pos..end); Python's split("\n") minus the empty piece after a final "\n" */
        if (pos == len && len > 0 && text[len - 1] == '\n')
            break;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (end - pos == 1 && text[pos] == '\x1e') {
            rc = print_doc(tok, text + doc_start, have_lines ? doc_end - doc_start : 0, add_special, (*n_docs)++,
                           err);
            have_lines = 0;
        } else {
            if (!have_lines)
                doc_start = pos;
            have_lines = 1;
            doc_end = end;
        }
        if (rc || !nl)
            break;
        pos = end + 1;
    }
    if (!rc && have_lines)
        rc = print_doc(tok, text + doc_start, doc_end - doc_start, add_special, (*n_docs)++, err);
    free(text);
    if (!rc && fflush(stdout))
        rc = apb_fail(err, APB_E_IO, "cannot write the output: %s", strerror(errno));
    return rc;
}

static int decode_ids(const apb_tokenizer *tok, char **args, int n, int skip_special, apb_err *err)
{
    int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
    if (!ids)
        return apb_fail(err, APB_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = strtol(args[i], &end, 10);
        if (errno || end == args[i] || *end || v < INT32_MIN || v > INT32_MAX) {
            free(ids);
            return apb_fail(err, APB_E_USAGE, "'%s' is not a token id", args[i]);
        }
        ids[i] = (int32_t)v;
    }
    size_t len;
    char *text = apb_tokenizer_decode_len(tok, ids, (size_t)n, skip_special, &len);
    free(ids);
    if (!text)
        return apb_fail(err, APB_E_NOMEM, "out of memory while decoding");
    fwrite(text, 1, len, stdout);  /* the text may hold NUL bytes */
    putchar('\n');
    free(text);
    if (fflush(stdout))
        return apb_fail(err, APB_E_IO, "cannot write the output: %s", strerror(errno));
    return APB_OK;
}

int main(int argc, char **argv)
{
    apb_err err = {0};
    int decode = 0, skip_special = 0, add_special = 0, a = 1;
    for (; a < argc && !strncmp(argv[a], "--", 2); a++) {
        if (!strcmp(argv[a], "--decode")) {
            decode = 1;
        } else if (!strcmp(argv[a], "--skip-special")) {
            skip_special = 1;
        } else if (!strcmp(argv[a], "--add-special")) {
            add_special = 1;
        } else if (!strcmp(argv[a], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "apb_tokenize: unknown option '%s'\n%s", argv[a], usage);
            return APB_E_USAGE;
        }
    }
    if ((decode && argc - a < 1) || (!decode && argc - a != 2) || (skip_special && !decode) ||
        (add_special && decode)) {
        fputs(usage, stderr);
        return APB_E_USAGE;
    }
    apb_tokenizer *tok;
    int rc = apb_tokenizer_load(argv[a], &tok, &err);
    if (!rc) {
        if (decode) {
            rc = decode_ids(tok, argv + a + 1, argc - a - 1, skip_special, &err);
        } else {
            size_t n_docs;
            rc = tokenize_corpus(tok, argv[a + 1], add_special, &n_docs, &err);
        }
        apb_tokenizer_free(tok);
    }
    if (rc) {
        fprintf(stderr, "apb_tokenize: %s\n", err.msg);
        return rc;
    }
    return 0;
}
