/* SPDX-License-Identifier: MIT */
/** @brief apb_err helpers. */
#include "apb_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int apb_fail(apb_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int apb_err_prefix(apb_err *err, const char *fmt, ...)
{
    if (!err)
        return APB_E_RUNTIME;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t at = n < 0 ? 0 : (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    size_t room = sizeof err->msg - 1 - at, len = strnlen(old, sizeof old - 1);
    memcpy(err->msg + at, old, len < room ? len : room);
    err->msg[at + (len < room ? len : room)] = 0;
    return err->code;
}

const char *apb_status_name(int code)
{
    switch (code) {
    case APB_OK: return "ok";
    case APB_E_USAGE: return "usage";
    case APB_E_IO: return "io";
    case APB_E_FORMAT: return "format";
    case APB_E_MODEL: return "model";
    case APB_E_NOMEM: return "nomem";
    case APB_E_RUNTIME: return "runtime";
    default: return "unknown";
    }
}
