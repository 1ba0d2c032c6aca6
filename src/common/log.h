/* Logging to stderr and, when --log is given, to a file in runc's text or JSON
 * format (containerd reads the last "error" record from that file). */
#ifndef CAPSULE_COMMON_LOG_H
#define CAPSULE_COMMON_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/* path may be NULL (stderr only); format is "text" or "json". Returns -1 on a bad format. */
int log_init(const char *path, const char *format, bool debug);
bool log_debug_enabled(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
