/* The processes of create and exec, and the sync protocol between them and the runtime.
 *
 * Processes in `create`: when the container joins no namespace by path and wants
 * no time namespace, the runtime clones *init* directly into its new namespaces.
 * Otherwise it forks a *setup* process that joins and unshares them, and setup
 * clones init as the runtime's child (a joined pid namespace, or a time namespace,
 * only applies to children) and passes the runtime a pidfd of it. Either way the
 * runtime writes the id maps, and init, pid 1 of a new pid namespace, builds the
 * rootfs and then waits on the exec socket for `start`. `exec` also goes through a
 * setup process. They talk to the runtime over a SEQPACKET socketpair; nothing that
 * comes from the container is trusted: a pid only counts once its pidfd is known to
 * be the runtime's own child, and the children stay non-dumpable until execve. */
#include "runtime/container_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "common/util.h"
#include "runtime/terminal.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int sync_send(int fd, enum sync_type type, int value, const char *text)
{
        size_t len = text ? strlen(text) : 0;
        cleanup_free char *buf = xmalloc0(sizeof(struct sync_hdr) + len);
        struct sync_hdr h = { .type = type, .value = value };
        memcpy(buf, &h, sizeof(h));
        if (len)
                memcpy(buf + sizeof(h), text, len);
        ssize_t n;
        do
                n = send(fd, buf, sizeof(h) + len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        return n < 0 ? -1 : 0;
}

/* Returns 0 on EOF, 1 with a message. *text (may be NULL) is malloc'd and NUL-terminated.
 * *passed (may be NULL: then it is closed) receives an fd sent along with the message, or -1. */
int sync_recv(int fd, struct sync_hdr *h, char **text, int *passed)
{
        cleanup_free char *buf = xmalloc0(SYNC_MAX + 1);
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } ctl;
        struct iovec iov = { .iov_base = buf, .iov_len = SYNC_MAX };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
        ssize_t n;
        if (passed)
                *passed = -1;
        do
                n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
                int got;
                memcpy(&got, CMSG_DATA(c), sizeof(got));
                if (passed)
                        *passed = got;
                else
                        close(got);
        }
        if (n <= 0)
                return n < 0 ? -1 : 0;
        if ((size_t)n < sizeof(*h))
                return -1;
        memcpy(h, buf, sizeof(*h));
        if (text) {
                buf[n] = '\0';
                *text = xstrdup(buf + sizeof(*h));
        }
        return 1;
}

/* In a child: report the error to the runtime and exit. */
__attribute__((noreturn)) void child_fail(int sync_fd, cap_error_t *err)
{
        sync_send(sync_fd, SYNC_ERROR, 0, (*err && (*err)->msg) ? (*err)->msg : "container process failed");
        _exit(1);
}

/* In a setup child: create the process that stays in the container as a child of the
 * runtime (CLONE_PARENT), and hand the runtime a pidfd of it, not a number: the runtime
 * checks that the pidfd is its own child, so a forged message cannot name a host process.
 * The setup process then exits, so only the new child returns. */
void child_fork_report(int sync_fd, const char *what)
{
        cleanup_error cap_error_t err = NULL;
        int pidfd = -1;
        /* The raw syscall, as in child_fork: the process is single-threaded. clone, not clone3,
         * which some seccomp profiles (Docker's) refuse. With CLONE_PARENT the child's exit
         * signal is setup's own, SIGCHLD; CLONE_PIDFD stores the pidfd through parent_tid. */
        long pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | CLONE_PIDFD), NULL, &pidfd, NULL, 0UL);
        if (pid < 0) {
                cap_fail(&err, errno, "%s", what);
                child_fail(sync_fd, &err);
        }
        if (pid > 0) {
                struct sync_hdr h = { .type = SYNC_CHILD_PID };
                send_fd(sync_fd, pidfd, &h, sizeof(h));
                _exit(0);
        }
}

/* The pid behind a pidfd from SYNC_CHILD_PID, once it is known to be our own child: waitid
 * fails with ECHILD for any other process. The pid cannot be reused before we reap it. */
pid_t own_child_pid(int pidfd, cap_error_t *err)
{
        siginfo_t si;
        if (pidfd < 0)
                return cap_fail(err, 0, "the container setup sent no pidfd");
        if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
                return cap_fail(err, errno, "the container setup sent a pidfd of a process that is not capsule's child");
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        cleanup_free char *info = NULL;
        if (read_file(path, &info, NULL, 0, err) < 0)
                return -1;
        const char *line = strstr(info, "\nPid:");
        long long pid;
        if (!line || sscanf(line + strlen("\nPid:"), "%lld", &pid) != 1 || pid <= 0)
                return cap_fail(err, 0, "the container's process is gone before it ran");
        return (pid_t)pid;
}

/* Everything the caller left open past the preserved fds gets close-on-exec before anything
 * from the container runs (CVE-2024-21626). close_range may be missing, or denied by a
 * seccomp filter capsule runs under: then set the flag fd by fd. */
int fds_mark_cloexec(int from, cap_error_t *err)
{
        if (syscall(SYS_close_range, from, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
                return 0;
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return cap_fail(err, errno, "mark inherited fds close-on-exec: open /proc/self/fd");
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                long long fd;
                if (parse_i64(de->d_name, &fd) < 0 || fd < from || fd == dirfd(d))
                        continue;
                if (set_cloexec((int)fd, true) < 0) {
                        ret = cap_fail(err, errno, "mark inherited fd %lld close-on-exec", fd);
                        break;
                }
        }
        closedir(d);
        return ret;
}

/* Open the sync channel and fork a child, in new namespaces when clone_flags asks for them and
 * born in cg's unified cgroup when cg is given (cgroup_fork; the runtime is single-threaded
 * here): the child gets 0 and keeps fds[1], the parent gets its pid and keeps fds[0]. */
pid_t child_fork(int fds[2], int clone_flags, struct cgroup *cg, cap_error_t *err)
{
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0)
                return cap_fail(err, errno, "socketpair");
        pid_t pid = cgroup_fork(cg, (unsigned long)clone_flags);
        if (pid < 0)
                return cap_fail(err, errno, clone_flags ? "linux.namespaces: clone" : "fork");
        if (pid == 0) {
                /* Until execve, nothing in the container may open our /proc/PID/exe, fds or mm,
                 * nor pidfd_getfd the sync socket; children inherit this. */
                prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
                close(fds[0]);
        }
        else
                cap_closep(&fds[1]);
        return pid;
}

/* value (may be NULL) receives the message's value. */
int sync_expect(int fd, enum sync_type want, int *value, char **text, cap_error_t *err)
{
        struct sync_hdr h;
        cleanup_free char *msg = NULL;
        int r = sync_recv(fd, &h, &msg, NULL);
        if (r <= 0)
                return cap_fail(err, 0, "container process exited during setup");
        if (h.type == SYNC_ERROR)
                return cap_fail(err, 0, "%s", msg);
        if (h.type != want)
                return cap_fail(err, 0, "unexpected message %u from the container process", h.type);
        if (value)
                *value = h.value;
        if (text)
                *text = steal_pointer(&msg);
        return 0;
}

/* The address of the unix socket dir/name relative to the returned dirfd (kept open
 * while the address is used), so long --root paths still fit sun_path. */
static int unix_addr_at(const char *dir, const char *name, struct sockaddr_un *addr, cap_error_t *err)
{
        int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return cap_fail(err, errno, "open `%s`", dir);
        *addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
        snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", dirfd, name);
        return dirfd;
}

int unix_connect_at(const char *dir, const char *name, cap_error_t *err)
{
        struct sockaddr_un addr;
        cleanup_close int dirfd = unix_addr_at(dir, name, &addr, err);
        if (dirfd < 0)
                return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                int e = errno;
                close(fd);
                return cap_fail(err, e, "connect `%s/%s`", dir, name);
        }
        return fd;
}

int unix_listen_at(const char *dir, const char *name, cap_error_t *err)
{
        struct sockaddr_un addr;
        cleanup_close int dirfd = unix_addr_at(dir, name, &addr, err);
        if (dirfd < 0)
                return -1;
        cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_fail(err, errno, "socket");
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 4) < 0)
                return cap_fail(err, errno, "listen on `%s/%s`", dir, name);
        return steal_fd(&fd);
}

/* In a child, until it waits on the sync socket for the runtime's last message: die with the
 * runtime, so that a runtime killed while the child is busy (building the rootfs, in a blocking
 * createContainer hook) leaves nothing that runs. Only the death of the parent sends the signal,
 * so arm it only while the runtime is our parent, and check again after arming: a runtime that
 * died before the prctl sends nothing. Otherwise the next message on the sync socket finds the
 * runtime gone. */
void child_die_with_runtime(pid_t runtime)
{
        if (proc_self_parent() != runtime)
                return;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || proc_self_parent() != runtime)
                _exit(1);
}

/* Steps shared by create's init and exec's process once they are inside the container. */
int process_exec_prepare(const struct spec_process *proc, int console_fd, bool console_mount, char **exe, cap_error_t *err)
{
        if (proc->terminal) {
                if (console_fd < 0)
                        return cap_fail(err, 0, "process.terminal is true but no --console-socket was given");
                if (terminal_setup(proc, console_fd, console_mount, err) < 0)
                        return -1;
        }
        const char *cwd = proc->cwd ? proc->cwd : "/";
        if (chdir(cwd) < 0)
                return cap_fail(err, errno, "process.cwd: chdir `%s`", cwd);
        /* A path through an inherited fd (/proc/self/fd/N) can lead outside the root: then the
         * kernel shows the cwd as "(unreachable)" and glibc's getcwd fails. */
        char where[PATH_MAX];
        if (!getcwd(where, sizeof(where)) || where[0] != '/')
                return cap_fail(err, 0, "process.cwd: `%s` is outside the container's root", cwd);
        return process_find_executable(proc, exe, err);
}

/* host_pid: the process's pid as the runtime sees it, for the seccomp listener. An error goes
 * to report_fd as a SYNC_ERROR message when sync, else as plain text (`start`'s connection). */
__attribute__((noreturn)) void process_exec_final(const struct spec_process *proc, const struct process_prep *prep,
                                                         const struct seccomp_prog *seccomp, pid_t host_pid, const char *state_json,
                                                         const char *exe, int report_fd, bool sync)
{
        cleanup_error cap_error_t err = NULL;

        /* The workload outlives the runtime, as with runc: from here on, a runtime killed leaves it
         * to `delete --force`. Before seccomp, which may deny prctl. */
        prctl(PR_SET_PDEATHSIG, 0);
        /* Without noNewPrivileges, loading a filter needs CAP_SYS_ADMIN: load it before dropping
         * capabilities. With it, load as late as possible, so the filter sees only the workload. */
        if (seccomp && !proc->no_new_privileges && seccomp_prog_load(seccomp, host_pid, state_json, &err) < 0)
                goto fail;
        if (process_apply_final(prep, &err) < 0)
                goto fail;
        if (seccomp && proc->no_new_privileges && seccomp_prog_load(seccomp, host_pid, state_json, &err) < 0)
                goto fail;
        execve(exe, proc->args, proc->env ? proc->env : (char *[]){ NULL });
        cap_fail(&err, errno, "exec `%s`", exe);
fail:
        if (sync)
                sync_send(report_fd, SYNC_ERROR, 0, err->msg);
        else
                dprintf(report_fd, "%s", err->msg);
        _exit(127);
}
