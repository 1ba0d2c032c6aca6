#include "common/log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static int log_fd = -1;
static bool log_json;
static bool log_debug_on;

int log_init(const char *path, const char *format, bool debug)
{
        log_debug_on = debug;
        if (format && strcmp(format, "json") == 0)
                log_json = true;
        else if (format && strcmp(format, "text") != 0)
                return -1;
        if (path && *path) {
                log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (log_fd < 0)
                        return -1;
        }
        return 0;
}

bool log_debug_enabled(void)
{
        return log_debug_on;
}

static const char *level_name(enum log_level level)
{
        static const char *names[] = { "error", "warning", "info", "debug" };
        return names[level];
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        char msg[4096];
        va_list ap;

        if (level == LOG_DEBUG && !log_debug_on)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        /* Errors always reach stderr, where podman and conmon look; other levels go
         * there only when no log file was given. */
        if (level == LOG_ERROR)
                dprintf(STDERR_FILENO, "capsule: %s\n", msg);
        else if (log_fd < 0)
                dprintf(STDERR_FILENO, "capsule: %s: %s\n", level_name(level), msg);
        if (log_fd < 0)
                return;

        char ts[64];
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (log_json) {
                json_t *rec = json_pack("{s:s,s:s,s:s}", "level", level_name(level), "msg", msg, "time", ts);
                char *line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
                if (line)
                        dprintf(log_fd, "%s\n", line);
                free(line);
                json_decref(rec);
        } else {
                dprintf(log_fd, "time=\"%s\" level=%s msg=\"%s\"\n", ts, level_name(level), msg);
        }
}
