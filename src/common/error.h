/* One error convention for the whole project (as in crun): a fallible function
 * returns a negative value and fills *err; callers pass err up unchanged, or
 * add context with cap_error_prefix(). */
#ifndef CAPSULE_COMMON_ERROR_H
#define CAPSULE_COMMON_ERROR_H

#include <errno.h>
#include <stdarg.h>

struct cap_error {
        int errnum; /* errno that caused the failure, 0 if none */
        char *msg;  /* full one-line message, already includes strerror(errnum) */
};
typedef struct cap_error *cap_error_t;

/* Fill *err (if not already filled) and return -1. errnum may be 0. */
int cap_fail(cap_error_t *err, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int cap_failv(cap_error_t *err, int errnum, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

/* Prepend "context: " to an existing error; returns -1. */
int cap_error_prefix(cap_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void cap_error_free(cap_error_t *err);

/* Print the error as one line on stderr (and to the log file, if any) and free it. */
void cap_error_report(cap_error_t *err);

#define cleanup_error __attribute__((cleanup(cap_error_free)))

#endif
