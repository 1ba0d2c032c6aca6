/* The phases file: when each step of a VM container's create and start happened, for
 * bench/vm_container.py. Always written (a few appends per container); a failure to write it
 * costs the record, never the container. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <stdio.h>
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

void sandbox_phase_mark(const char *dir, const char *name, long long value)
{
        char line[96];
        int len = snprintf(line, sizeof(line), "%s %lld\n", name, value);
        cleanup_free char *path = xasprintf("%s/" SANDBOX_PHASES, dir);
        /* O_APPEND and one write per line: the sandbox process and `capsule start` both add to it. */
        cleanup_close int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (len < 0 || (size_t)len >= sizeof(line) || fd < 0 || write_all(fd, line, (size_t)len) < 0)
                log_debug("%s: cannot record the phase %s", path, name);
}
