/* create/start/kill/delete/pause/update/exec.
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
#include "runtime/container.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup.h"
#include "runtime/hooks.h"
#include "runtime/procfs.h"
#include "runtime/process.h"
#include "runtime/rootfs.h"
#include "runtime/seccomp.h"
#include "runtime/state.h"
#include "runtime/terminal.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1

enum sync_type {
        SYNC_GO = 1,      /* runtime → setup (or init): you are in the cgroup */
        SYNC_USERMAP,     /* setup (or init) → runtime: write my id maps */
        SYNC_USERMAP_ACK,
        SYNC_CHILD_PID,   /* setup → runtime: carries a pidfd of init (or exec's process), cloned as our child */
        SYNC_HOOKS,       /* init → runtime: rootfs ready, run prestart/createRuntime */
        SYNC_HOOKS_ACK,   /* runtime → init: carries the state JSON, and init's pid as the runtime sees it */
        SYNC_READY,       /* init → runtime: created */
        SYNC_CREATED,     /* runtime → init: the state is saved, create is done */
        SYNC_EXEC_WAIT,   /* exec'd process → runtime: send me SYNC_EXEC_ACK before I execve */
        SYNC_EXEC_ACK,    /* runtime → exec'd process: carries its pid as the runtime sees it */
        SYNC_ERROR,       /* any → runtime: carries the message */
};

struct sync_hdr {
        uint32_t type;
        int32_t value;
};

#define SYNC_MAX (64 * 1024)

static int sync_send(int fd, enum sync_type type, int value, const char *text)
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
static int sync_recv(int fd, struct sync_hdr *h, char **text, int *passed)
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
static __attribute__((noreturn)) void child_fail(int sync_fd, cap_error_t *err)
{
        sync_send(sync_fd, SYNC_ERROR, 0, (*err && (*err)->msg) ? (*err)->msg : "container process failed");
        _exit(1);
}

/* In a setup child: create the process that stays in the container as a child of the
 * runtime (CLONE_PARENT), and hand the runtime a pidfd of it, not a number: the runtime
 * checks that the pidfd is its own child, so a forged message cannot name a host process.
 * The setup process then exits, so only the new child returns. */
static void child_fork_report(int sync_fd, const char *what)
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
static pid_t own_child_pid(int pidfd, cap_error_t *err)
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
static int fds_mark_cloexec(int from, cap_error_t *err)
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

/* Open the sync channel and fork a child, in new namespaces when clone_flags asks
 * for them: the child gets 0 and keeps fds[1], the parent gets its pid and keeps fds[0]. */
static pid_t child_fork(int fds[2], int clone_flags, cap_error_t *err)
{
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0)
                return cap_fail(err, errno, "socketpair");
        /* A fork that also creates namespaces: the runtime is single-threaded here, so the
         * raw syscall leaves glibc's state as consistent as fork() would. */
        pid_t pid = clone_flags ? (pid_t)syscall(SYS_clone, (unsigned long)clone_flags | SIGCHLD, NULL, NULL, NULL, 0UL) : fork();
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
static int sync_expect(int fd, enum sync_type want, int *value, char **text, cap_error_t *err)
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

static int unix_connect_at(const char *dir, const char *name, cap_error_t *err)
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

static int unix_listen_at(const char *dir, const char *name, cap_error_t *err)
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

/* ---- namespaces ---- */

static const int ns_order[] = { CLONE_NEWUSER, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWTIME };
static const char *const ns_proc_names[] = { "user", "ipc", "uts", "net", "pid", "mnt", "cgroup", "time" };
#define N_NS ARRAY_SIZE(ns_order)

struct ns_plan {
        int unshare_flags;
        int join_fd[N_NS]; /* -1 when not joined */
        bool new_userns, in_userns, new_mntns;
};

static void ns_plan_close(struct ns_plan *p)
{
        for (size_t i = 0; i < N_NS; i++)
                cap_closep(&p->join_fd[i]);
}

static int ns_plan_from_spec(const struct spec *spec, struct ns_plan *p, cap_error_t *err)
{
        memset(p, 0, sizeof(*p));
        for (size_t i = 0; i < N_NS; i++)
                p->join_fd[i] = -1;
        for (size_t i = 0; i < N_NS; i++) {
                const struct spec_namespace *ns = spec_namespace(spec, ns_order[i]);
                if (!ns)
                        continue;
                if (!ns->path) {
                        p->unshare_flags |= ns_order[i];
                        continue;
                }
                p->join_fd[i] = open(ns->path, O_RDONLY | O_CLOEXEC);
                if (p->join_fd[i] < 0)
                        return cap_fail(err, errno, "linux.namespaces: %s: open `%s`", ns->name, ns->path);
        }
        p->new_userns = p->unshare_flags & CLONE_NEWUSER;
        p->in_userns = p->new_userns || p->join_fd[0] >= 0;
        p->new_mntns = p->unshare_flags & CLONE_NEWNS;
        /* Offsets can only be written into a time namespace nobody has entered yet. */
        if ((spec->linux.time_monotonic.set || spec->linux.time_boottime.set) && !(p->unshare_flags & CLONE_NEWTIME))
                return cap_fail(err, 0, "linux.timeOffsets: requires a new time namespace in linux.namespaces");
        return 0;
}

static int ns_join(struct ns_plan *p, cap_error_t *err)
{
        for (size_t i = 0; i < N_NS; i++) {
                if (p->join_fd[i] < 0)
                        continue;
                if (setns(p->join_fd[i], ns_order[i]) < 0)
                        return cap_fail(err, errno, "join %s namespace", ns_proc_names[i]);
                cap_closep(&p->join_fd[i]);
        }
        return 0;
}

static int write_id_map(pid_t pid, const char *file, const struct spec_id_mapping *m, size_t n, cap_error_t *err)
{
        cleanup_free char *buf = xmalloc0(n * 40 + 1);
        size_t len = 0;
        for (size_t i = 0; i < n; i++)
                len += (size_t)sprintf(buf + len, "%u %u %u\n", m[i].container_id, m[i].host_id, m[i].size);
        cleanup_free char *path = xasprintf("/proc/%d/%s", (int)pid, file);
        if (procfs_write(path, buf, len, err) < 0)
                return cap_error_prefix(err, "linux.%s", strcmp(file, "uid_map") == 0 ? "uidMappings" : "gidMappings");
        return 0;
}

static int write_id_maps(pid_t pid, const struct spec *spec, cap_error_t *err)
{
        const struct spec_linux *l = &spec->linux;
        if (geteuid() != 0) {
                /* An unprivileged writer must deny setgroups before it may write gid_map. */
                cleanup_free char *path = xasprintf("/proc/%d/setgroups", (int)pid);
                if (procfs_write(path, "deny", 4, err) < 0)
                        return -1;
        }
        if (write_id_map(pid, "uid_map", l->uid_mappings, l->n_uid_mappings, err) < 0)
                return -1;
        return write_id_map(pid, "gid_map", l->gid_mappings, l->n_gid_mappings, err);
}

static int write_time_offsets(const struct spec *spec, cap_error_t *err)
{
        char buf[128];
        int len = 0;
        if (spec->linux.time_monotonic.set)
                len += snprintf(buf + len, sizeof(buf) - (size_t)len, "monotonic %lld %u\n", (long long)spec->linux.time_monotonic.secs,
                                spec->linux.time_monotonic.nanosecs);
        if (spec->linux.time_boottime.set)
                len += snprintf(buf + len, sizeof(buf) - (size_t)len, "boottime %lld %u\n", (long long)spec->linux.time_boottime.secs,
                                spec->linux.time_boottime.nanosecs);
        if (len == 0)
                return 0;
        /* While we are not dumpable, our /proc files belong to the host's root, which a new user
         * namespace cannot write. The setup process is in no pid namespace the container sees. */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        int r = procfs_write("/proc/self/timens_offsets", buf, (size_t)len, err);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        return r < 0 ? cap_error_prefix(err, "linux.timeOffsets") : 0;
}

/* ---- the container init process ---- */

struct launch {
        const struct container_opts *opts;
        const struct spec *spec;
        const struct process_prep *prep;
        const struct seccomp_prog *seccomp;
        struct ns_plan ns;
        pid_t runtime; /* our pid, for the children's parent check */
        int sync_fd;
        int listen_fd;
};

/* In a child, until it waits on the sync socket for the runtime's last message: die with the
 * runtime, so that a runtime killed while the child is busy (building the rootfs, in a blocking
 * createContainer hook) leaves nothing that runs. Only the death of the parent sends the signal,
 * so arm it only while the runtime is our parent, and check again after arming: a runtime that
 * died before the prctl sends nothing. Otherwise the next message on the sync socket finds the
 * runtime gone. */
static void child_die_with_runtime(pid_t runtime)
{
        if (proc_self_parent() != runtime)
                return;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || proc_self_parent() != runtime)
                _exit(1);
}

static void handle_stop_signal(int sig)
{
        _exit(128 + sig);
}

/* As pid 1 of its namespace, init ignores signals without a handler: give the
 * usual stop signals one until execve resets them, so `kill` works on a created container. */
static void init_install_signal_handlers(bool on)
{
        static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
                signal(sigs[i], on ? handle_stop_signal : SIG_DFL);
}

/* Steps shared by create's init and exec's process once they are inside the container. */
static int process_exec_prepare(const struct spec_process *proc, int console_fd, bool console_mount, char **exe, cap_error_t *err)
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
static __attribute__((noreturn)) void process_exec_final(const struct spec_process *proc, const struct process_prep *prep,
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

static __attribute__((noreturn)) void init_main(struct launch *l)
{
        const struct spec *spec = l->spec;
        const struct spec_process *proc = spec->process;
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *state_json = NULL;
        cleanup_free char *exe = NULL;
        int host_pid = 0;

        child_die_with_runtime(l->runtime);
        if (setsid() < 0) {
                cap_fail(&err, errno, "setsid");
                child_fail(l->sync_fd, &err);
        }
        if (!l->opts->no_new_keyring)
                syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL); /* best effort, as runc: seccomp may deny it */
        if (rootfs_setup(spec, l->ns.in_userns, &err) < 0 || process_apply_early(l->prep, &err) < 0)
                child_fail(l->sync_fd, &err);
        if (sync_send(l->sync_fd, SYNC_HOOKS, 0, NULL) < 0 || sync_expect(l->sync_fd, SYNC_HOOKS_ACK, &host_pid, &state_json, &err) < 0)
                _exit(1);
        if (hooks_run(&spec->hooks.create_container, "createContainer", state_json, &err) < 0)
                child_fail(l->sync_fd, &err);
        if (rootfs_enter(spec, l->opts->no_pivot, &err) < 0)
                child_fail(l->sync_fd, &err);
        if (process_exec_prepare(proc, l->opts->console_socket_fd, true, &exe, &err) < 0)
                child_fail(l->sync_fd, &err);
        if (l->opts->console_socket_fd >= 0)
                close(l->opts->console_socket_fd);

        init_install_signal_handlers(true);
        /* Until create is done, init now waits on the sync socket, where the end of a killed runtime
         * shows: the signal can go, before a successful create exits and would send it. */
        if (prctl(PR_SET_PDEATHSIG, 0) < 0 || sync_send(l->sync_fd, SYNC_READY, 0, NULL) < 0 ||
            sync_expect(l->sync_fd, SYNC_CREATED, NULL, NULL, &err) < 0)
                _exit(1);
        close(l->sync_fd);

        int conn;
        do
                conn = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        while (conn < 0 && errno == EINTR);
        if (conn < 0)
                _exit(1);
        close(l->listen_fd);
        /* `start` sends the state JSON and shuts down its side. */
        cleanup_free char *start_state = xmalloc0(SYNC_MAX + 1);
        if (read_all(conn, start_state, SYNC_MAX) <= 0)
                _exit(1); /* nothing: `start` died before it sent the state */
        init_install_signal_handlers(false);
        if (hooks_run(&spec->hooks.start_container, "startContainer", start_state, &err) < 0) {
                dprintf(conn, "%s", err->msg);
                _exit(1);
        }
        process_exec_final(proc, l->prep, l->seccomp, host_pid, start_state, exe, conn, false);
}

/* In a new user namespace: have the runtime write the id maps, then become root of the
 * namespace if it maps 0 (it almost always does). */
static void child_enter_userns(struct launch *l)
{
        cleanup_error cap_error_t err = NULL;
        if (l->ns.new_userns) {
                /* A rootless runtime may only write the maps of a dumpable process. Nothing else
                 * runs yet in the pid namespace we (or setup's children) are in. */
                prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
                if (sync_send(l->sync_fd, SYNC_USERMAP, 0, NULL) < 0 || sync_expect(l->sync_fd, SYNC_USERMAP_ACK, NULL, NULL, &err) < 0)
                        _exit(1);
                prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        if (l->ns.in_userns) {
                if (setresgid(0, 0, 0) == 0)
                        setresuid(0, 0, 0);
        }
}

static __attribute__((noreturn)) void setup_main(struct launch *l)
{
        cleanup_error cap_error_t err = NULL;

        if (sync_expect(l->sync_fd, SYNC_GO, NULL, NULL, &err) < 0)
                _exit(1);
        if (ns_join(&l->ns, &err) < 0)
                child_fail(l->sync_fd, &err);
        if (l->ns.unshare_flags && unshare(l->ns.unshare_flags) < 0) {
                cap_fail(&err, errno, "linux.namespaces: unshare");
                child_fail(l->sync_fd, &err);
        }
        child_enter_userns(l);
        if ((l->ns.unshare_flags & CLONE_NEWTIME) && write_time_offsets(l->spec, &err) < 0)
                child_fail(l->sync_fd, &err);

        child_fork_report(l->sync_fd, "fork container init");
        init_main(l);
}

/* Init cloned straight into its namespaces. The cgroup namespace comes last, once the
 * runtime has moved init into the container's cgroup, so that it is rooted there. */
static __attribute__((noreturn)) void direct_init_main(struct launch *l)
{
        cleanup_error cap_error_t err = NULL;

        if (sync_expect(l->sync_fd, SYNC_GO, NULL, NULL, &err) < 0)
                _exit(1);
        child_enter_userns(l);
        if ((l->ns.unshare_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0) {
                cap_fail(&err, errno, "linux.namespaces: unshare the cgroup namespace");
                child_fail(l->sync_fd, &err);
        }
        init_main(l);
}

/* Whether init can be cloned into its namespaces directly: nothing is joined by path,
 * and there is no time namespace (clone cannot create one). */
static bool ns_plan_direct(const struct ns_plan *p)
{
        for (size_t i = 0; i < N_NS; i++) {
                if (p->join_fd[i] >= 0)
                        return false;
        }
        return !(p->unshare_flags & CLONE_NEWTIME);
}

/* ---- create ---- */

static int write_pid_file(const char *path, pid_t pid, cap_error_t *err)
{
        if (!path)
                return 0;
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "%d", (int)pid);
        if (write_file_atomic(path, buf, (size_t)len, err) < 0)
                return cap_error_prefix(err, "--pid-file");
        return 0;
}

static char *owner_name(void)
{
        struct passwd *pw = getpwuid(geteuid());
        return xstrdup(pw ? pw->pw_name : "");
}

static struct state *state_new(const struct container_opts *o, const struct spec *spec, pid_t pid, struct cgroup *cg)
{
        struct state *st = xmalloc0(sizeof(*st));
        st->id = xstrdup(o->id);
        st->bundle = realpath(o->bundle, NULL);
        if (!st->bundle)
                st->bundle = xstrdup(o->bundle);
        st->rootfs = xstrdup(spec->root_path);
        st->pid = pid;
        st->created = state_now_rfc3339();
        st->owner = owner_name();
        st->annotations = strv_dup(spec->annotations);
        st->cgroup = cg ? cgroup_save(cg) : NULL;
        st->systemd_cgroup = o->systemd_cgroup;
        return st;
}

/* Run the runtime side of the create protocol until init reports READY. */
static int create_talk(int sync_fd, pid_t setup_pid, const struct container_opts *o, const struct spec *spec, struct cgroup *cg,
                       pid_t *init_pid, cap_error_t *err)
{
        if (cg && cgroup_enter(cg, setup_pid, err) < 0)
                return -1;
        if (sync_send(sync_fd, SYNC_GO, 0, NULL) < 0)
                return cap_fail(err, errno, "start container setup");
        for (;;) {
                struct sync_hdr h;
                cleanup_free char *msg = NULL;
                cleanup_close int passed = -1;
                int r = sync_recv(sync_fd, &h, &msg, &passed);
                if (r <= 0)
                        return cap_fail(err, 0, "container process exited during setup");
                switch (h.type) {
                case SYNC_USERMAP:
                        if (write_id_maps(setup_pid, spec, err) < 0)
                                return -1;
                        sync_send(sync_fd, SYNC_USERMAP_ACK, 0, NULL);
                        break;
                case SYNC_CHILD_PID:
                        if (*init_pid > 0)
                                return cap_fail(err, 0, "unexpected second pid from the container setup");
                        if ((*init_pid = own_child_pid(passed, err)) < 0)
                                return -1;
                        waitpid(setup_pid, NULL, 0);
                        break;
                case SYNC_HOOKS: {
                        cleanup_state struct state *st = state_new(o, spec, *init_pid, cg);
                        cleanup_free char *json = state_oci_string(st, "creating");
                        /* The runtime-spec runs prestart after `start` is called, so it sees "created"
                         * (runtime-tools' hooks_stdin checks it; runc says "creating"). */
                        cleanup_free char *prestart_json = state_oci_string(st, "created");
                        if (hooks_run(&spec->hooks.prestart, "prestart", prestart_json, err) < 0 ||
                            hooks_run(&spec->hooks.create_runtime, "createRuntime", json, err) < 0)
                                return -1;
                        sync_send(sync_fd, SYNC_HOOKS_ACK, *init_pid, json);
                        break;
                }
                case SYNC_READY:
                        return 0;
                case SYNC_ERROR:
                        return cap_fail(err, 0, "%s", msg);
                default:
                        return cap_fail(err, 0, "unexpected message %u from the container process", h.type);
                }
        }
}

/* Rewrite cgroup.json if cgroup_create made other than planned: rootless creation leaves
 * hierarchies out, and a sibling may have made or removed a shared parent meanwhile. */
static int state_update_cgroup(const char *root, struct state *st, const struct cgroup *cg, cap_error_t *err)
{
        json_t *made = cgroup_save(cg);
        if (json_equal(made, st->cgroup)) {
                json_decref(made);
                return 0;
        }
        json_decref(st->cgroup);
        st->cgroup = made;
        return state_save_cgroup(root, st->id, made, err);
}

static void kill_and_reap(pid_t pid)
{
        if (pid <= 0)
                return;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, __WALL);
}

static int copy_config(const char *bundle, const char *dir, cap_error_t *err)
{
        cleanup_free char *src = xasprintf("%s/config.json", bundle);
        cleanup_free char *dst = xasprintf("%s/" STATE_CONFIG, dir);
        cleanup_free char *text = NULL;
        size_t len;
        if (read_file(src, &text, &len, 0, err) < 0)
                return -1;
        return write_file(dst, text, len, err);
}

int container_create(const struct container_opts *o, pid_t *init_pid, cap_error_t *err)
{
        cleanup_spec struct spec *spec = NULL;
        struct process_prep *prep = NULL;
        struct seccomp_prog *seccomp = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        cleanup_state struct state *st = NULL;
        struct launch l = { .opts = o, .runtime = getpid(), .sync_fd = -1, .listen_fd = -1 };
        cleanup_free char *dir = NULL;
        pid_t child_pid = -1; /* the setup process, or init itself when cloned directly */
        int fds[2] = { -1, -1 };
        int ret = -1;
        bool dir_created = false, cg_created = false;

        *init_pid = -1;
        for (size_t i = 0; i < N_NS; i++)
                l.ns.join_fd[i] = -1;
        if (fds_mark_cloexec(3 + o->preserve_fds, err) < 0)
                return -1;
        if (state_check_id(o->id, err) < 0 || spec_load(o->bundle, &spec, err) < 0)
                return -1;
        if (!spec->process)
                return cap_fail(err, 0, "config.json: process: required to create a container");
        if (spec->process->terminal && o->console_socket_fd < 0)
                return cap_fail(err, 0, "process.terminal is true: --console-socket is required (or run without --detach)");
        if (process_prepare(spec->process, spec->linux.personality_domain, &prep, err) < 0 || process_apply_oom(prep, err) < 0)
                goto out;
        if (spec->linux.seccomp && seccomp_prepare(spec->linux.seccomp, &seccomp, err) < 0)
                goto out;
        if (cgroup_resolve(spec->linux.cgroups_path, o->id, o->systemd_cgroup, &cg, err) < 0)
                goto out;
        if (ns_plan_from_spec(spec, &l.ns, err) < 0)
                goto out;

        if (state_create_dir(o->root, o->id, err) < 0)
                goto out;
        dir_created = true;
        dir = state_dir(o->root, o->id);
        /* Record the container and where its cgroups go before any of them exists: if we die,
         * `delete` finds everything made from here on. */
        cgroup_plan(cg);
        st = state_new(o, spec, 0, cg);
        st->creator = l.runtime;
        st->creator_start_time = proc_start_time(l.runtime);
        if (state_save(o->root, st, err) < 0 || state_save_cgroup(o->root, o->id, st->cgroup, err) < 0)
                goto out;
        if (copy_config(o->bundle, dir, err) < 0)
                goto out;
        if ((l.listen_fd = unix_listen_at(dir, STATE_EXEC_SOCKET, err)) < 0)
                goto out;
        if (cgroup_create(cg, err) < 0)
                goto out;
        cg_created = true;
        if (state_update_cgroup(o->root, st, cg, err) < 0)
                goto out;
        if (spec->linux.resources && cgroup_apply(cg, spec->linux.resources, err) < 0)
                goto out;
        /* listenerPath is a host path: init loads the filter after pivot_root, so connect here. */
        if (seccomp && seccomp_prog_connect(seccomp, err) < 0)
                goto out;

        l.spec = spec;
        l.prep = prep;
        l.seccomp = seccomp;
        bool direct = ns_plan_direct(&l.ns);
        child_pid = child_fork(fds, direct ? l.ns.unshare_flags & ~CLONE_NEWCGROUP : 0, err);
        if (child_pid < 0)
                goto out;
        if (child_pid == 0) {
                l.sync_fd = fds[1];
                if (direct)
                        direct_init_main(&l);
                setup_main(&l);
        }
        if (direct)
                *init_pid = child_pid;
        ns_plan_close(&l.ns);
        if (create_talk(fds[0], child_pid, o, spec, cg, init_pid, err) < 0)
                goto out;
        st->pid = *init_pid;
        st->start_time = proc_start_time(*init_pid);
        st->creator = 0;
        if (state_save(o->root, st, err) < 0 || write_pid_file(o->pid_file, *init_pid, err) < 0)
                goto out;
        if (sync_send(fds[0], SYNC_CREATED, 0, NULL) < 0) {
                cap_fail(err, errno, "container process exited during setup");
                goto out;
        }
        log_debug("created container %s: init pid %d, bundle %s", o->id, (int)*init_pid, st->bundle);
        ret = 0;
out:
        cap_closep(&fds[0]);
        cap_closep(&fds[1]);
        cap_closep(&l.listen_fd);
        ns_plan_close(&l.ns);
        if (ret < 0) {
                /* A failed create leaves nothing behind. */
                kill_and_reap(*init_pid);
                if (child_pid != *init_pid)
                        kill_and_reap(child_pid);
                cleanup_error cap_error_t ignored = NULL;
                if (child_pid > 0 && !spec_namespace(spec, CLONE_NEWNS))
                        rootfs_host_mounts_detach(spec->root_path, &ignored);
                cap_error_free(&ignored);
                if (cg_created)
                        cgroup_destroy(cg, &ignored);
                cap_error_free(&ignored);
                if (dir_created)
                        rm_rf(dir ? dir : "", &ignored);
                cap_error_free(&ignored);
                *init_pid = -1;
        }
        process_prep_free(prep);
        seccomp_prog_free(seccomp);
        return ret;
}

/* ---- the other operations ---- */

int container_load_spec(const char *root, const char *id, struct spec **out, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s/" STATE_CONFIG, root, id);
        cleanup_free char *text = NULL;
        if (read_file(path, &text, NULL, 0, err) < 0)
                return -1;
        return spec_parse(text, path, out, err);
}

static int load_with_status(const char *root, const char *id, struct state **st, const char **status, cap_error_t *err)
{
        if (state_load(root, id, st, err) < 0)
                return -1;
        *status = state_status(root, *st);
        /* It has no init pid yet; only `delete --force` may act on it. */
        if (strcmp(*status, "creating") == 0) {
                state_freep(st);
                return cap_fail(err, 0, "container \"%s\" is still being created", id);
        }
        return 0;
}

int container_start(const char *root, const char *id, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        const char *status;
        if (load_with_status(root, id, &st, &status, err) < 0)
                return -1;
        if (strcmp(status, "created") != 0)
                return cap_fail(err, 0, "cannot start container \"%s\": it is %s, not created", id, status);
        cleanup_free char *dir = state_dir(root, id);
        cleanup_close int conn = unix_connect_at(dir, STATE_EXEC_SOCKET, err);
        if (conn < 0)
                return -1;
        cleanup_free char *sock = xasprintf("%s/" STATE_EXEC_SOCKET, dir);
        unlink(sock);
        cleanup_free char *json = state_oci_string(st, "created");
        write_all(conn, json, strlen(json));
        shutdown(conn, SHUT_WR);
        /* The socket closes on a successful execve; anything read is init's error. */
        char msg[4096];
        ssize_t n = read_all(conn, msg, sizeof(msg) - 1);
        if (n > 0) {
                msg[n] = '\0';
                return cap_fail(err, 0, "%s", msg);
        }

        cleanup_spec struct spec *spec = NULL;
        if (container_load_spec(root, id, &spec, err) < 0)
                return -1;
        cleanup_free char *running = state_oci_string(st, "running");
        cleanup_error cap_error_t hook_err = NULL;
        /* runtime-spec: a failing poststart hook is only a warning. */
        if (hooks_run(&spec->hooks.poststart, "poststart", running, &hook_err) < 0)
                log_warning("%s", hook_err->msg);
        return 0;
}

static int state_cgroup(const struct state *st, struct cgroup **cg, cap_error_t *err)
{
        *cg = NULL;
        return st->cgroup ? cgroup_load(st->cgroup, cg, err) : 0;
}

/* runc's meaning: --all signals whatever is in the container's cgroup, even once init has exited
 * (a container that shares a pid namespace, as in a CRI pod, can leave processes behind), and
 * succeeds when there is nothing left. Without --all only a live init is signalled. The texts
 * are runc's: containerd's shim takes "container not running" to mean the process is gone. */
int container_kill(const char *root, const char *id, int sig, bool all, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        const char *status;
        if (load_with_status(root, id, &st, &status, err) < 0)
                return -1;
        if (all) {
                if (state_cgroup(st, &cg, err) < 0)
                        return -1;
                if (cg)
                        return cgroup_kill(cg, sig, err);
                if (strcmp(status, "stopped") == 0)
                        return 0;
        } else if (strcmp(status, "stopped") == 0) {
                return cap_fail(err, 0, "cannot kill container \"%s\": container not running", id);
        }
        if (kill(st->pid, sig) < 0)
                return cap_fail(err, errno, "kill container \"%s\": unable to signal init", id);
        /* a task in a frozen v1 cgroup cannot die: thaw for SIGKILL, as runc does */
        if (sig == SIGKILL && strcmp(status, "paused") == 0) {
                if (state_cgroup(st, &cg, err) < 0)
                        return -1;
                if (cg)
                        return cgroup_freeze(cg, false, err);
        }
        return 0;
}

static void wait_gone(const char *root, const struct state *st)
{
        /* A zombie counts as gone: its reaper may be a pid 1 that takes its time, not us. */
        for (int i = 0; i < 1000 && strcmp(state_status(root, st), "stopped") != 0; i++) {
                if (waitpid(st->pid, NULL, WNOHANG) == st->pid)
                        break;
                usleep(5000);
        }
}

int container_delete(const char *root, const char *id, bool force, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        if (state_check_id(id, err) < 0)
                return -1;
        cleanup_free char *dir = state_dir(root, id);
        bool damaged = false;
        if (state_load(root, id, &st, err) < 0) {
                /* --force removes what is left after a create that died before it wrote
                 * state.json, or whatever a damaged state still names. */
                struct stat sb;
                if (!force)
                        return -1;
                if (lstat(dir, &sb) < 0 && errno == ENOENT) {
                        cap_error_free(err);
                        return 0;
                }
                cleanup_free char *file = xasprintf("%s/state.json", dir);
                if (access(file, F_OK) == 0)
                        log_warning("%s: deleting what it names", (*err)->msg);
                cap_error_free(err);
                st = state_salvage(root, id);
                damaged = true;
        }
        const char *status = state_status(root, st);
        bool created = strcmp(status, "created") == 0, paused = strcmp(status, "paused") == 0;
        bool alive = created || paused || strcmp(status, "running") == 0;
        if (!force && !created && strcmp(status, "stopped") != 0)
                return cap_fail(err, 0, "cannot delete container \"%s\" that is not stopped: %s", id, status);
        if (state_cgroup(st, &cg, err) < 0) {
                if (!force)
                        return -1;
                log_warning("%s: deleting without it", (*err)->msg);
                cap_error_free(err);
        }
        if (alive) {
                kill(st->pid, SIGKILL);
                if (cg && paused)
                        cgroup_freeze(cg, false, err);
                wait_gone(root, st);
        }
        /* A half-created container's cgroup may still hold processes that run: this kills them. */
        if (cg && cgroup_destroy(cg, err) < 0)
                return -1;

        /* Poststop hooks follow a container that was created, as on create's own failure path.
         * Without a mount namespace, what create mounted below the rootfs is on the host: detach it. */
        cleanup_spec struct spec *spec = NULL;
        cleanup_error cap_error_t spec_err = NULL;
        if (container_load_spec(root, id, &spec, &spec_err) < 0) {
                if (!damaged)
                        log_warning("%s", spec_err->msg);
        } else {
                if (!damaged && st->creator == 0) {
                        cleanup_free char *json = state_oci_string(st, "stopped");
                        if (hooks_run(&spec->hooks.poststop, "poststop", json, &spec_err) < 0)
                                log_warning("%s", spec_err->msg);
                        cap_error_free(&spec_err);
                }
                if (!spec_namespace(spec, CLONE_NEWNS) && st->rootfs &&
                    rootfs_host_mounts_detach(st->rootfs, &spec_err) < 0)
                        log_warning("%s", spec_err->msg);
        }
        log_debug("deleted container %s (was %s)", id, status);
        return rm_rf(dir, err);
}

static int running_cgroup(const char *root, const char *id, const char *want, struct cgroup **cg, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        const char *status;
        if (load_with_status(root, id, &st, &status, err) < 0)
                return -1;
        if (want && strcmp(status, want) != 0)
                return cap_fail(err, 0, "container \"%s\" is %s, not %s", id, status, want);
        if (!want && strcmp(status, "stopped") == 0)
                return cap_fail(err, 0, "container \"%s\" is not running", id);
        if (state_cgroup(st, cg, err) < 0)
                return -1;
        if (!*cg)
                return cap_fail(err, 0, "container \"%s\" has no cgroup (rootless without delegation)", id);
        return 0;
}

int container_pause(const char *root, const char *id, bool pause, cap_error_t *err)
{
        cleanup_cgroup struct cgroup *cg = NULL;
        if (running_cgroup(root, id, pause ? "running" : "paused", &cg, err) < 0)
                return -1;
        return cgroup_freeze(cg, pause, err);
}

int container_update(const char *root, const char *id, const struct spec_resources *res, cap_error_t *err)
{
        cleanup_cgroup struct cgroup *cg = NULL;
        if (running_cgroup(root, id, NULL, &cg, err) < 0)
                return -1;
        return cgroup_apply(cg, res, err);
}

int container_pids(const char *root, const char *id, pid_t **pids, size_t *n, cap_error_t *err)
{
        cleanup_cgroup struct cgroup *cg = NULL;
        if (running_cgroup(root, id, NULL, &cg, err) < 0)
                return -1;
        return cgroup_pids(cg, pids, n, err);
}

/* ---- exec ---- */

struct exec_launch {
        const struct exec_opts *o;
        const struct process_prep *prep;
        const struct seccomp_prog *seccomp;
        const char *state_json;
        bool wait_ack; /* the process needs SYNC_EXEC_ACK before it may execve */
        int console_fd; /* where the process sends its pty master */
        int ns_fd[N_NS];
        int root_fd;
        int sync_fd;
};

static __attribute__((noreturn)) void exec_process_main(struct exec_launch *l)
{
        const struct spec_process *proc = l->o->process;
        cleanup_error cap_error_t err = NULL;
        cleanup_free char *exe = NULL;

        /* Cloned with CLONE_PARENT, the process is the runtime's child: die with a runtime killed
         * before the execve. Its pid namespace hides the runtime's pid, so the check after arming
         * asks the sync socket instead, whose other end only the runtime holds. */
        struct pollfd hup = { .fd = l->sync_fd, .events = POLLRDHUP };
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || poll(&hup, 1, 0) != 0)
                _exit(1);
        /* setns(mnt) puts us at the namespace's root mount; the container's root may be a
         * chroot below it (--no-pivot), so enter the root init actually sees. */
        if (fchdir(l->root_fd) < 0 || chroot(".") < 0) {
                cap_fail(&err, errno, "enter the container root");
                child_fail(l->sync_fd, &err);
        }
        close(l->root_fd);
        if (proc->terminal && setsid() < 0) {
                cap_fail(&err, errno, "setsid");
                child_fail(l->sync_fd, &err);
        }
        if (process_apply_early(l->prep, &err) < 0 || process_exec_prepare(proc, l->console_fd, false, &exe, &err) < 0)
                child_fail(l->sync_fd, &err);
        int host_pid = 0;
        if (l->wait_ack && (sync_send(l->sync_fd, SYNC_EXEC_WAIT, 0, NULL) < 0 ||
                            sync_expect(l->sync_fd, SYNC_EXEC_ACK, &host_pid, NULL, &err) < 0))
                _exit(1);
        process_exec_final(proc, l->prep, l->seccomp, host_pid, l->state_json, exe, l->sync_fd, true);
}

static __attribute__((noreturn)) void exec_setup_main(struct exec_launch *l)
{
        cleanup_error cap_error_t err = NULL;
        if (sync_expect(l->sync_fd, SYNC_GO, NULL, NULL, &err) < 0)
                _exit(1);
        for (size_t i = 0; i < N_NS; i++) {
                if (l->ns_fd[i] >= 0 && setns(l->ns_fd[i], ns_order[i]) < 0) {
                        cap_fail(&err, errno, "join the container's %s namespace", ns_proc_names[i]);
                        child_fail(l->sync_fd, &err);
                }
        }
        child_fork_report(l->sync_fd, "fork");
        exec_process_main(l);
}

/* The namespaces of pid that differ from ours; joining our own user namespace would fail. */
static int open_container_namespaces(pid_t pid, int fds[N_NS], cap_error_t *err)
{
        for (size_t i = 0; i < N_NS; i++) {
                struct stat theirs, ours;
                cleanup_free char *path = xasprintf("/proc/%d/ns/%s", (int)pid, ns_proc_names[i]);
                cleanup_free char *self = xasprintf("/proc/self/ns/%s", ns_proc_names[i]);
                fds[i] = -1;
                if (stat(path, &theirs) < 0)
                        continue; /* not supported by this kernel */
                if (stat(self, &ours) == 0 && theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev)
                        continue;
                fds[i] = open(path, O_RDONLY | O_CLOEXEC);
                if (fds[i] < 0)
                        return cap_fail(err, errno, "open `%s`", path);
        }
        return 0;
}

int container_exec(const struct exec_opts *o, pid_t *pid, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_spec struct spec *spec = NULL;
        cleanup_cgroup struct cgroup *cg = NULL;
        struct process_prep *prep = NULL;
        struct seccomp_prog *seccomp = NULL;
        struct exec_launch l = { .o = o, .root_fd = -1, .sync_fd = -1, .console_fd = o->console_socket_fd };
        cleanup_free char *state_json = NULL;
        const char *status;
        int fds[2] = { -1, -1 };
        int console[2] = { -1, -1 }; /* the process's end, ours: when capsule is the console */
        pid_t setup_pid = -1;
        int pidfd = -1; /* of the process, once setup has handed it over */
        int ret = -1;

        *pid = -1;
        for (size_t i = 0; i < N_NS; i++)
                l.ns_fd[i] = -1;
        if (fds_mark_cloexec(3 + o->preserve_fds, err) < 0)
                return -1;
        if (load_with_status(o->root, o->id, &st, &status, err) < 0)
                return -1;
        if (strcmp(status, "stopped") == 0)
                return cap_fail(err, 0, "cannot exec in a stopped container \"%s\"", o->id);
        if (strcmp(status, "paused") == 0)
                return cap_fail(err, 0, "cannot exec in a paused container \"%s\"", o->id);
        bool own_console = o->process->terminal && o->console_socket_fd < 0 && o->pty_master;
        if (o->process->terminal && o->console_socket_fd < 0 && !own_console)
                return cap_fail(err, 0, "exec -t: a terminal needs --console-socket (or run without --detach)");
        if (container_load_spec(o->root, o->id, &spec, err) < 0)
                return -1;
        if (process_prepare(o->process, spec->linux.personality_domain, &prep, err) < 0 || process_apply_oom(prep, err) < 0)
                goto out;
        if (spec->linux.seccomp && seccomp_prepare(spec->linux.seccomp, &seccomp, err) < 0)
                goto out;
        if (state_cgroup(st, &cg, err) < 0)
                goto out;
        if (o->cgroups && o->cgroups[0] && !cg) {
                cap_fail(err, 0, "--cgroup: container \"%s\" has no cgroup", o->id);
                goto out;
        }
        if (open_container_namespaces(st->pid, l.ns_fd, err) < 0)
                goto out;
        {
                cleanup_free char *root_path = xasprintf("/proc/%d/root", (int)st->pid);
                if ((l.root_fd = open(root_path, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
                        cap_fail(err, errno, "open `%s`", root_path);
                        goto out;
                }
        }
        state_json = state_oci_string(st, status);
        l.state_json = state_json;
        l.prep = prep;
        l.seccomp = seccomp;
        /* The seccomp listener is told the process's pid, which only the runtime knows; as the
         * console, we size the pty before the process can ask for its size. */
        l.wait_ack = (seccomp && seccomp_prog_notifies(seccomp)) || own_console;
        if (seccomp && seccomp_prog_connect(seccomp, err) < 0)
                goto out;
        if (own_console) {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, console) < 0) {
                        cap_fail(err, errno, "socketpair");
                        goto out;
                }
                l.console_fd = console[0];
        }
        setup_pid = child_fork(fds, 0, err);
        if (setup_pid < 0)
                goto out;
        if (setup_pid == 0) {
                l.sync_fd = fds[1];
                exec_setup_main(&l);
        }
        cap_closep(&console[0]);
        if (cg && cgroup_enter(cg, setup_pid, err) < 0)
                goto out;
        for (size_t i = 0; o->cgroups && o->cgroups[i]; i++)
                if (cgroup_enter_sub(cg, o->cgroups[i], setup_pid, err) < 0)
                        goto out;
        sync_send(fds[0], SYNC_GO, 0, NULL);
        bool child_waits = false;
        for (;;) {
                struct sync_hdr h;
                cleanup_free char *msg = NULL;
                cleanup_close int passed = -1;
                int r = sync_recv(fds[0], &h, &msg, &passed);
                if (r == 0 && *pid > 0)
                        break; /* the socket closed on execve */
                if (r <= 0) {
                        cap_fail(err, 0, "exec: the process exited before running");
                        goto out;
                }
                if (h.type == SYNC_CHILD_PID && pidfd < 0) {
                        if ((*pid = own_child_pid(passed, err)) < 0)
                                goto out;
                        pidfd = steal_fd(&passed);
                        waitpid(setup_pid, NULL, 0);
                        setup_pid = -1;
                } else if (h.type == SYNC_EXEC_WAIT) {
                        child_waits = true;
                } else {
                        cap_fail(err, 0, "exec: %s", h.type == SYNC_ERROR ? msg : "unexpected message");
                        goto out;
                }
                /* The setup process's SYNC_CHILD_PID and the process's SYNC_EXEC_WAIT come in either order. */
                if (child_waits && *pid > 0) {
                        /* The process sent its pty master before it waited. */
                        if (console[1] >= 0 && terminal_receive(console[1], o->pty_master, err) < 0)
                                goto out;
                        if (sync_send(fds[0], SYNC_EXEC_ACK, *pid, NULL) < 0) {
                                cap_fail(err, errno, "exec: let the process run");
                                goto out;
                        }
                        child_waits = false;
                }
        }
        ret = write_pid_file(o->pid_file, *pid, err);
out:
        if (ret < 0) {
                if (pidfd >= 0) {
                        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                        waitpid(*pid, NULL, __WALL);
                }
                kill_and_reap(setup_pid);
                *pid = -1;
                if (own_console)
                        cap_closep(o->pty_master);
        }
        cap_closep(&pidfd);
        cap_closep(&fds[0]);
        cap_closep(&fds[1]);
        cap_closep(&console[0]);
        cap_closep(&console[1]);
        cap_closep(&l.root_fd);
        for (size_t i = 0; i < N_NS; i++)
                cap_closep(&l.ns_fd[i]);
        process_prep_free(prep);
        seccomp_prog_free(seccomp);
        return ret;
}

/* ---- waiting for a foreground process ---- */

static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void)
{
        if (termios_saved)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
}

static void relay(int from, int to, bool *open_flag)
{
        char buf[8192];
        ssize_t n = read(from, buf, sizeof(buf));
        if (n <= 0) {
                *open_flag = false;
                return;
        }
        write_all(to, buf, (size_t)n);
}

int container_wait(pid_t pid, int pty_master, int *status, cap_error_t *err)
{
        sigset_t mask, old;
        sigemptyset(&mask);
        static const int forward[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD };
        for (size_t i = 0; i < ARRAY_SIZE(forward); i++)
                sigaddset(&mask, forward[i]);
        sigprocmask(SIG_BLOCK, &mask, &old);
        cleanup_close int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0) {
                sigprocmask(SIG_SETMASK, &old, NULL);
                return cap_fail(err, errno, "signalfd");
        }
        bool stdin_open = pty_master >= 0, master_open = pty_master >= 0;
        if (pty_master >= 0 && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_termios) == 0) {
                struct termios raw = saved_termios;
                cfmakeraw(&raw);
                termios_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
                terminal_copy_size(STDIN_FILENO, pty_master);
        }
        /* The process may already have exited before the signalfd existed. */
        bool done = false;
        int wstatus = 0;
        while (!done) {
                pid_t w;
                while ((w = waitpid(-1, &wstatus, WNOHANG)) > 0)
                        if (w == pid) {
                                done = true;
                                break;
                        }
                if (done)
                        break;
                struct pollfd p[3] = { { .fd = sfd, .events = POLLIN },
                                       { .fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN },
                                       { .fd = master_open ? pty_master : -1, .events = POLLIN } };
                if (poll(p, 3, -1) < 0 && errno != EINTR)
                        break;
                if (p[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGCHLD) {
                                if (si.ssi_signo == SIGWINCH && pty_master >= 0)
                                        terminal_copy_size(STDIN_FILENO, pty_master);
                                else
                                        kill(pid, (int)si.ssi_signo);
                        }
                }
                if (p[1].revents & (POLLIN | POLLHUP))
                        relay(STDIN_FILENO, pty_master, &stdin_open);
                if (p[2].revents & (POLLIN | POLLHUP))
                        relay(pty_master, STDOUT_FILENO, &master_open);
        }
        /* Drain what the process wrote last. */
        while (master_open) {
                struct pollfd p = { .fd = pty_master, .events = POLLIN };
                if (poll(&p, 1, 50) <= 0)
                        break;
                relay(pty_master, STDOUT_FILENO, &master_open);
        }
        restore_terminal();
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (!done)
                return cap_fail(err, errno, "wait for process %d", (int)pid);
        *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        return 0;
}
