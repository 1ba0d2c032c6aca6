#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

int cap_fail(cap_error_t *err, int errnum, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        cap_failv(err, errnum, fmt, ap);
        va_end(ap);
        return -1;
}

int cap_failv(cap_error_t *err, int errnum, const char *fmt, va_list ap)
{
        char *text = NULL;

        if (*err)
                return -1; /* keep the first, most precise error */
        if (vasprintf(&text, fmt, ap) < 0)
                text = NULL;

        struct cap_error *e = calloc(1, sizeof(*e));
        if (!e) {
                free(text);
                return -1;
        }
        e->errnum = errnum;
        if (errnum && text) {
                if (asprintf(&e->msg, "%s: %s", text, strerror(errnum)) < 0)
                        e->msg = NULL;
                free(text);
        } else {
                e->msg = text;
        }
        *err = e;
        return -1;
}

int cap_error_prefix(cap_error_t *err, const char *fmt, ...)
{
        char *prefix = NULL, *joined = NULL;
        va_list ap;

        if (!*err)
                return -1;
        va_start(ap, fmt);
        if (vasprintf(&prefix, fmt, ap) < 0)
                prefix = NULL;
        va_end(ap);
        if (prefix && asprintf(&joined, "%s: %s", prefix, (*err)->msg ? (*err)->msg : "") >= 0) {
                free((*err)->msg);
                (*err)->msg = joined;
        }
        free(prefix);
        return -1;
}

void cap_error_free(cap_error_t *err)
{
        if (!err || !*err)
                return;
        free((*err)->msg);
        free(*err);
        *err = NULL;
}

void cap_error_report(cap_error_t *err)
{
        if (!err || !*err)
                return;
        log_error("%s", (*err)->msg ? (*err)->msg : "out of memory");
        cap_error_free(err);
}
