/* util/err: the per-object last-error message.
 *
 * Every fallible library call returns an `enum kvx_status` (include/kvx.h) and, when given a
 * `struct kvx_err *`, fills it with one line that names what was wrong (the file, key, tensor,
 * offset or flag). The library never prints; the CLI decides what to show. */
#ifndef KVX_UTIL_ERR_H
#define KVX_UTIL_ERR_H

#include "kvx.h"

/* Record `status` and a printf-style message in `err` (which may be NULL); returns `status`
 * so that callers can write `return kvx_err_set(err, KVX_ERR_FORMAT, "...", ...);`. */
enum kvx_status kvx_err_set(struct kvx_err *err, enum kvx_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the message already in `err` with "<prefix>: " (context added by a caller). */
void kvx_err_prefix(struct kvx_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));


#endif
