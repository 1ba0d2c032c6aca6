/* exec: a process joining a running container, and waiting for a foreground process. */
#include "runtime/container_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>

#include "common/util.h"
#include "runtime/terminal.h"

/* ---- exec ---- */

struct exec_launch {
        const struct exec_opts *o;
        const struct process_prep *prep;
        const struct seccomp_prog *seccomp;
        const char *state_json;
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
        /* No execve before the runtime holds our pid: a runtime killed before then closes the
         * socket and we exit, however slowly it dies (a parent-death signal would race with
         * its exit, and an execve that regrows capabilities disarms one). The ACK also brings
         * the pid for a seccomp listener, and comes after the runtime, as the console, has
         * sized the pty. */
        int host_pid = 0;
        if (sync_send(l->sync_fd, SYNC_EXEC_WAIT, 0, NULL) < 0 || sync_expect(l->sync_fd, SYNC_EXEC_ACK, &host_pid, NULL, &err) < 0)
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
        if (seccomp && seccomp_prog_connect(seccomp, err) < 0)
                goto out;
        if (own_console) {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, console) < 0) {
                        cap_fail(err, errno, "socketpair");
                        goto out;
                }
                l.console_fd = console[0];
        }
        setup_pid = child_fork(fds, 0, cg, err);
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
