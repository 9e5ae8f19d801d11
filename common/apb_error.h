/* SPDX-License-Identifier: MIT */
/** @brief Error reporting: library code returns a status and fills an apb_err; only apps/ exit. */
#ifndef APB_ERROR_H
#define APB_ERROR_H

#include <stddef.h>

/* Status codes; also the exit codes of apps/ (documented in README). */
enum apb_status {
    APB_OK = 0,
    APB_E_USAGE = 2,    /* bad command line or impossible setting */
    APB_E_IO = 3,       /* file missing / unreadable */
    APB_E_FORMAT = 4,   /* malformed or lying file (JSON, safetensors, tokenizer) */
    APB_E_MODEL = 5,    /* files are well-formed but do not describe a supported model */
    APB_E_NOMEM = 6,    /* host or device memory exhausted / would not fit */
    APB_E_RUNTIME = 7,  /* StarPU / CUDA / MPI failure */
};

typedef struct apb_err {
    int code;           /* enum apb_status */
    char msg[1024];
} apb_err;

/* Sets err (when non-NULL) and returns code, so callers can `return apb_fail(err, ...)`. */
int apb_fail(apb_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("loading foo: ") to an existing message; returns err->code. */
int apb_err_prefix(apb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *apb_status_name(int code);

#endif
