#include "runtime/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

static int hook_run(const struct spec_hook *hook, const char *state_json, int *status, cap_error_t *err)
{
        int in[2];
        if (pipe2(in, O_CLOEXEC) < 0)
                return cap_fail(err, errno, "pipe");
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                close(in[0]);
                close(in[1]);
                return cap_fail(err, errno, "fork");
        }
        if (pid == 0) {
                /* A hook that blocks dies with a runtime that was killed while waiting for it
                 * (checked again after arming, in case the runtime died first). */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                dup2(in[0], STDIN_FILENO);
                char *default_argv[] = { hook->path, NULL };
                char *empty_env[] = { NULL };
                execve(hook->path, hook->args && hook->args[0] ? hook->args : default_argv, hook->env ? hook->env : empty_env);
                dprintf(STDERR_FILENO, "capsule: hook %s: %s\n", hook->path, strerror(errno));
                _exit(127);
        }
        close(in[0]);
        /* The hook may not read its stdin at all: ignore EPIPE, but only while writing, or later
         * hooks and the container process (forked by this one) would inherit SIGPIPE ignored. */
        void (*old_sigpipe)(int) = signal(SIGPIPE, SIG_IGN);
        write_all(in[1], state_json, strlen(state_json));
        close(in[1]);
        signal(SIGPIPE, old_sigpipe);

        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        long long deadline = hook->timeout.set ? now_ms() + hook->timeout.v * 1000 : -1;
        for (;;) {
                if (pidfd >= 0) {
                        int wait_ms = deadline < 0 ? -1 : (int)(deadline - now_ms());
                        struct pollfd p = { .fd = pidfd, .events = POLLIN };
                        if (wait_ms < 0 && deadline >= 0)
                                wait_ms = 0;
                        int r = poll(&p, 1, wait_ms);
                        if (r == 0) {
                                kill(pid, SIGKILL);
                                waitpid(pid, NULL, 0);
                                close(pidfd);
                                return cap_fail(err, 0, "timed out after %lld s", (long long)hook->timeout.v);
                        }
                }
                pid_t w = waitpid(pid, status, 0);
                if (w == pid)
                        break;
                if (w < 0 && errno != EINTR) {
                        if (pidfd >= 0)
                                close(pidfd);
                        return cap_fail(err, errno, "waitpid");
                }
        }
        if (pidfd >= 0)
                close(pidfd);
        return 0;
}

int hooks_run(const struct spec_hook_list *list, const char *name, const char *state_json, cap_error_t *err)
{
        for (size_t i = 0; i < list->n; i++) {
                const struct spec_hook *hook = &list->hooks[i];
                int status = 0;
                if (hook_run(hook, state_json, &status, err) < 0)
                        return cap_error_prefix(err, "hooks.%s[%zu] (%s)", name, i, hook->path);
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                        continue;
                if (WIFSIGNALED(status))
                        return cap_fail(err, 0, "hooks.%s[%zu] (%s): killed by signal %d", name, i, hook->path, WTERMSIG(status));
                return cap_fail(err, 0, "hooks.%s[%zu] (%s): exited with status %d", name, i, hook->path, WEXITSTATUS(status));
        }
        return 0;
}
