/* The phases file: when each step of a VM container's create and start happened, for
 * bench/vm_container.py. Always written (a few appends per container); a failure to write it
 * costs the record, never the container. */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

long long sandbox_phase_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int sandbox_phases_open(const char *dir)
{
        cleanup_free char *path = xasprintf("%s/" SANDBOX_PHASES, dir);
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                log_debug("%s: cannot record phases: %s", path, strerror(errno));
        return fd;
}

void sandbox_phase_write(int fd, const char *name, long long value)
{
        char line[96];
        int len = snprintf(line, sizeof(line), "%s %lld\n", name, value);
        /* O_APPEND and one write per line: the sandbox process and `capsule start` both add to it. */
        if (fd < 0 || len < 0 || (size_t)len >= sizeof(line) || write_all(fd, line, (size_t)len) < 0)
                log_debug("cannot record the phase %s", name);
}

void sandbox_phase_mark(const char *dir, const char *name, long long value)
{
        cleanup_close int fd = sandbox_phases_open(dir);
        sandbox_phase_write(fd, name, value);
}
