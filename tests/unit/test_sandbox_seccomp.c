/* The sandbox's seccomp allow-list (src/sandbox/sandbox_seccomp.c), loaded in a forked child:
 * what it allows still works (threads, a listed ioctl, signals to itself), and what a
 * compromised VMM would try next kills the child by SIGSYS with one line naming the syscall.
 * Children leave with _exit: nothing at exit (a sanitizer's leak check) runs under the filter. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "sandbox/sandbox_internal.h"

enum action { DO_THREAD, DO_LISTED_IOCTL, DO_SIGNAL_SELF, DO_EXECVE, DO_OPENAT, DO_KILL_OTHER, DO_TGKILL_OTHER, DO_OTHER_IOCTL, DO_UNIX_SOCKET, DO_INET_SOCKET };

static void *thread_main(void *arg)
{
        return arg;
}

/* prepared: the filter built ahead on its thread (sandbox_seccomp_prepare), as the sandbox
 * does, else at the load. */
static __attribute__((noreturn)) void child(enum action a, bool prepared)
{
        cap_error_t err = NULL;
        pid_t parent = getppid();
        struct sandbox_filter f;
        if (prepared)
                sandbox_seccomp_prepare(&f);
        if (sandbox_seccomp_load(prepared ? &f : NULL, &err) < 0) {
                dprintf(STDERR_FILENO, "load: %s\n", err->msg);
                _exit(2);
        }
        static int token;
        pthread_t t;
        void *ret = NULL;
        struct winsize ws;
        switch (a) {
        case DO_THREAD:
                _exit(pthread_create(&t, NULL, thread_main, &token) == 0 && pthread_join(t, &ret) == 0 && ret == &token ? 0 : 3);
        case DO_LISTED_IOCTL:
                /* A pipe is no terminal: the kernel answers, the filter lets it through. */
                _exit(ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) < 0 && errno == ENOTTY ? 0 : 3);
        case DO_SIGNAL_SELF:
                signal(SIGUSR1, SIG_IGN);
                _exit(syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR1) == 0 ? 0 : 3);
        case DO_EXECVE:
                syscall(SYS_execve, "/bin/true", NULL, NULL);
                break;
        case DO_OPENAT:
                syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
                break;
        case DO_KILL_OTHER:
                kill(parent, 0);
                break;
        case DO_TGKILL_OTHER:
                syscall(SYS_tgkill, parent, parent, 0);
                break;
        case DO_OTHER_IOCTL:
                ioctl(STDERR_FILENO, TIOCSTI, "x");
                break;
        case DO_UNIX_SOCKET:
                _exit(socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 3);
        case DO_INET_SOCKET:
                socket(AF_INET, SOCK_STREAM, 0);
                break;
        }
        _exit(0);
}

/* Runs the action in a filtered child: its wait status, and its stderr in out. */
static int run_filtered(enum action a, bool prepared, char *out, size_t len)
{
        int p[2];
        if (pipe(p) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                dup2(p[1], STDERR_FILENO);
                close(p[0]);
                close(p[1]);
                child(a, prepared);
        }
        close(p[1]);
        ssize_t n = read_all(p[0], out, len - 1);
        out[n > 0 ? n : 0] = '\0';
        close(p[0]);
        int status = -1;
        waitpid(pid, &status, 0);
        return status;
}

static bool killed_for(int status, const char *text, long nr)
{
        char want[128];
        snprintf(want, sizeof(want), "capsule: the VMM was killed by its seccomp filter (syscall %ld)\n", nr);
        return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS && strcmp(text, want) == 0;
}

/* Each filter the same, built at the load or ahead on its thread. */
TEST(seccomp_allows_what_the_sandbox_uses)
{
        char out[256];
        for (int prepared = 0; prepared < 2; prepared++) {
                int st = run_filtered(DO_THREAD, prepared, out, sizeof(out));
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] == '\0');
                st = run_filtered(DO_LISTED_IOCTL, prepared, out, sizeof(out));
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] == '\0');
                st = run_filtered(DO_SIGNAL_SELF, prepared, out, sizeof(out));
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] == '\0');
                st = run_filtered(DO_UNIX_SOCKET, prepared, out, sizeof(out));
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] == '\0');
        }
}

TEST(seccomp_kills_on_an_unlisted_syscall_with_one_line)
{
        char out[256];
        for (int prepared = 0; prepared < 2; prepared++) {
                CHECK(killed_for(run_filtered(DO_EXECVE, prepared, out, sizeof(out)), out, SYS_execve));
                CHECK(killed_for(run_filtered(DO_OPENAT, prepared, out, sizeof(out)), out, SYS_openat));
        }
}

TEST(seccomp_limits_signals_ioctls_and_sockets)
{
        char out[256];
        for (int prepared = 0; prepared < 2; prepared++) {
                CHECK(killed_for(run_filtered(DO_KILL_OTHER, prepared, out, sizeof(out)), out, SYS_kill));
                CHECK(killed_for(run_filtered(DO_TGKILL_OTHER, prepared, out, sizeof(out)), out, SYS_tgkill));
                CHECK(killed_for(run_filtered(DO_OTHER_IOCTL, prepared, out, sizeof(out)), out, SYS_ioctl));
                CHECK(killed_for(run_filtered(DO_INET_SOCKET, prepared, out, sizeof(out)), out, SYS_socket));
        }
}
