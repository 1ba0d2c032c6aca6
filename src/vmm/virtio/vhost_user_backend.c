#include "vmm/virtio/vhost_user_backend.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

#define STOP_GRACE_MS 2000
#define KILL_WAIT_MS 10000

static int socket_address(const char *path, struct sockaddr_un *sa, cap_error_t *err)
{
        memset(sa, 0, sizeof(*sa));
        sa->sun_family = AF_UNIX;
        if (strlen(path) >= sizeof(sa->sun_path))
                return cap_fail(err, 0, "socket path %s is longer than %zu bytes", path, sizeof(sa->sun_path) - 1);
        strcpy(sa->sun_path, path);
        return 0;
}

int vhost_user_connect(const char *path, int *sock, cap_error_t *err)
{
        struct sockaddr_un sa;
        if (socket_address(path, &sa, err) < 0)
                return -1;
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return cap_fail(err, errno, "cannot connect to %s", path);
        *sock = steal_fd(&fd);
        return 0;
}

/* A listening socket with a connection to it already queued; the path is gone on return. */
static int socket_pair_listening(int *listen_fd, int *conn_fd, cap_error_t *err)
{
        const char *tmp = getenv("TMPDIR");
        cleanup_free char *dir = xasprintf("%s/capsule-vhost-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir))
                return cap_fail(err, errno, "mkdtemp %s", dir);
        cleanup_free char *path = xasprintf("%s/sock", dir);
        struct sockaddr_un sa;
        cleanup_close int lfd = -1, cfd = -1;
        int rc = socket_address(path, &sa, err);
        if (rc == 0 && (lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
                rc = cap_fail(err, errno, "socket");
        if (rc == 0 && (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0))
                rc = cap_fail(err, errno, "listen on %s", path);
        if (rc == 0 && (cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
                rc = cap_fail(err, errno, "socket");
        if (rc == 0 && connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                rc = cap_fail(err, errno, "connect to %s", path);
        unlink(path);
        rmdir(dir);
        if (rc < 0)
                return -1;
        *listen_fd = steal_fd(&lfd);
        *conn_fd = steal_fd(&cfd);
        return 0;
}

void vhost_user_backend_child_exec(char *const argv[], int fd, pid_t parent, const struct passwd *drop)
{
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (drop && (setgroups(0, NULL) < 0 || setresgid(drop->pw_gid, drop->pw_gid, drop->pw_gid) < 0 ||
                     setresuid(drop->pw_uid, drop->pw_uid, drop->pw_uid) < 0))
                _exit(127);
        /* Dies with capsule; and if capsule died before this line, the child goes too. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(127);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
                _exit(127);
        if (fd == VHOST_USER_BACKEND_LISTEN_FD) {
                if (fcntl(fd, F_SETFD, 0) < 0)
                        _exit(127);
        } else if (dup2(fd, VHOST_USER_BACKEND_LISTEN_FD) < 0) {
                _exit(127);
        }
        /* Nothing of the VMM's (guest memory, KVM, other devices) reaches the back-end. */
        syscall(SYS_close_range, VHOST_USER_BACKEND_LISTEN_FD + 1, ~0U, CLOSE_RANGE_CLOEXEC);
        execv(argv[0], argv);
        _exit(127);
}

int vhost_user_backend_start(struct vhost_user_backend *b, char *const argv[], int *sock, cap_error_t *err)
{
        *b = (struct vhost_user_backend){ .pid = 0, .pidfd = -1 };
        if (access(argv[0], X_OK) < 0)
                return cap_fail(err, errno, "cannot run %s", argv[0]);
        cleanup_close int lfd = -1, cfd = -1;
        if (socket_pair_listening(&lfd, &cfd, err) < 0)
                return -1;
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return cap_fail(err, errno, "fork");
        if (pid == 0)
                vhost_user_backend_child_exec(argv, lfd, parent, NULL);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                int e = errno;
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return cap_fail(err, e, "pidfd_open");
        }
        *b = (struct vhost_user_backend){ .pid = pid, .pidfd = pidfd };
        *sock = steal_fd(&cfd);
        return 0;
}

bool vhost_user_backend_exited(struct vhost_user_backend *b, int timeout_ms, int *status)
{
        if (b->pid <= 0)
                return false;
        struct pollfd p = { .fd = b->pidfd, .events = POLLIN };
        long long deadline = now_ms() + timeout_ms;
        for (;;) {
                long long left = deadline - now_ms();
                int n = poll(&p, 1, left > 0 ? (int)left : 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                break;
        }
        if (waitpid(b->pid, status, 0) != b->pid)
                return false;
        close(b->pidfd);
        *b = (struct vhost_user_backend){ .pid = 0, .pidfd = -1 };
        return true;
}

void vhost_user_backend_stop(struct vhost_user_backend *b)
{
        int status;
        if (b->pid <= 0)
                return;
        /* Through the pidfd: it can only name our child, never a recycled pid, and a confined
         * VMM (the sandbox's seccomp filter) may signal nothing else. A sandbox's VMM, another
         * uid by now, may not signal it at all: the wait then sees it end on its own, as its
         * callers close the vhost-user connection first. */
        syscall(SYS_pidfd_send_signal, b->pidfd, SIGTERM, NULL, 0);
        if (vhost_user_backend_exited(b, STOP_GRACE_MS, &status))
                return;
        /* SIGKILL cannot be refused; the wait only covers a process stuck in the kernel. */
        syscall(SYS_pidfd_send_signal, b->pidfd, SIGKILL, NULL, 0);
        vhost_user_backend_exited(b, KILL_WAIT_MS, &status);
}

const char *vhost_user_backend_describe(int status, char *buf, size_t len)
{
        if (WIFEXITED(status))
                snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
                snprintf(buf, len, "stopped (wait status %#x)", status);
        return buf;
}
