/* SPDX-License-Identifier: MIT */
/** @brief apb_run --cases: one JSONL line of a batch, parsed and checked (no I/O; fuzzed). */
#ifndef APB_RUN_CASES_H
#define APB_RUN_CASES_H

#include <stddef.h>

#include "common/apb_error.h"

struct apb_case {
    char *id, *context, *question; /* owned, NUL-terminated, no NUL inside */
    int max_new;                   /* "max_new_tokens", or -1 when absent (the option's value) */
    long line;                     /* its line in the file (1-based) */
};

/* Parses one line (len bytes, no newline) numbered `lineno` (1-based) of a cases file: a JSON
 * object with string "id", non-empty string "context" and "question", optional integer
 * "max_new_tokens" in [0, 2^20]; other fields are ignored. APB_E_FORMAT with a message starting
 * "line N: " otherwise. On success the caller frees c with apb_case_free. */
int apb_case_parse(const char *line, size_t len, long lineno, struct apb_case *c, apb_err *err);

void apb_case_free(struct apb_case *c);

/* Splits text (n bytes, text[n] == 0) into cases: blank lines (spaces, tabs, CR only) are skipped, every other
 * line must parse. *cases (n_cases entries) is owned by the caller (apb_cases_free); on an error
 * nothing is returned. Ids must be unique (the results are matched by id). */
int apb_cases_parse_all(const char *text, size_t n, struct apb_case **cases, int *n_cases, apb_err *err);

void apb_cases_free(struct apb_case *cases, int n);

#endif
