/* util/err: formatting of error messages and status names. */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum kvx_status kvx_err_set(struct kvx_err *err, enum kvx_status status, const char *fmt, ...)
{
    if (!err)
        return status;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return status;
}

void kvx_err_prefix(struct kvx_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof err->msg - 2)
        return;
    /* "<prefix>: <old message>", cut at the buffer's end */
    err->msg[n] = ':';
    err->msg[n + 1] = ' ';
    size_t room = sizeof err->msg - (size_t)n - 2;
    size_t len = strnlen(old, room - 1);
    memcpy(err->msg + n + 2, old, len);
    err->msg[(size_t)n + 2 + len] = '\0';
}

const char *kvx_status_str(enum kvx_status s)
{
    switch (s) {
    case KVX_OK: return "ok";
    case KVX_ERR_INVALID_ARG: return "invalid argument";
    case KVX_ERR_IO: return "i/o error";
    case KVX_ERR_FORMAT: return "malformed input";
    case KVX_ERR_UNSUPPORTED: return "unsupported";
    case KVX_ERR_NOMEM: return "out of memory";
    case KVX_ERR_KV_FULL: return "KV budget exhausted";
    case KVX_ERR_CONTEXT: return "context length exceeded";
    case KVX_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}
