/* start, kill, state, delete and exec of a VM container: the agent over its socket, the VMM by
 * its pid, and the runtime's cgroup and hook code on the host. */
#include "sandbox/sandbox.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/cgroup.h"
#include "runtime/hooks.h"
#include "sandbox/sandbox_internal.h"

#define cleanup_record __attribute__((cleanup(sandbox_record_free)))

static const char *agent_status(const struct sandbox_record *rec)
{
        json_t *req = json_pack("{s:s}", "op", "state");
        json_t *rep = NULL;
        cleanup_error cap_error_t err = NULL;
        const char *status = "stopped"; /* an agent that does not answer runs no container */
        if (agent_call(rec->agent_socket, req, &rep, &err) == 0) {
                static const char *const known[] = { "created", "running", "stopped" };
                const char *s = json_string_value(json_object_get(rep, "status"));
                for (size_t i = 0; s && i < ARRAY_SIZE(known); i++) {
                        if (strcmp(s, known[i]) == 0)
                                status = known[i];
                }
        }
        json_decref(req);
        json_decref(rep);
        return status;
}

const char *sandbox_status(const char *root, const struct state *st)
{
        const char *base = state_status(root, st); /* "creating" and a dead VMM, as for any container */
        if (strcmp(base, "creating") == 0 || strcmp(base, "stopped") == 0 || strcmp(base, "paused") == 0)
                return base;
        cleanup_record struct sandbox_record rec = { 0 };
        cleanup_error cap_error_t err = NULL;
        if (sandbox_record_load(root, st->id, &rec, &err) < 0 || !sandbox_vmm_alive(&rec))
                return "stopped";
        return agent_status(&rec);
}

static int load(const char *root, const char *id, struct state **st, struct sandbox_record *rec, const char **status, cap_error_t *err)
{
        if (state_load(root, id, st, err) < 0 || sandbox_record_load(root, id, rec, err) < 0)
                return -1;
        *status = sandbox_status(root, *st);
        if (strcmp(*status, "creating") == 0)
                return cap_fail(err, 0, "container \"%s\" is still being created", id);
        return 0;
}

int sandbox_start(const char *root, const char *id, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        const char *status;
        if (load(root, id, &st, &rec, &status, err) < 0)
                return -1;
        if (strcmp(status, "created") != 0)
                return cap_fail(err, 0, "cannot start container \"%s\": it is %s, not created", id, status);
        json_t *req = json_pack("{s:s}", "op", "start");
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        if (r < 0)
                return cap_error_prefix(err, "start container \"%s\"", id);
        return container_poststart(root, id, st, err);
}

int sandbox_kill(const char *root, const char *id, int sig, bool all, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        const char *status;
        if (load(root, id, &st, &rec, &status, err) < 0)
                return -1;
        if (strcmp(status, "stopped") == 0) {
                if (all)
                        return 0;
                return cap_fail(err, 0, "cannot kill container \"%s\": container not running", id);
        }
        if (strcmp(status, "paused") == 0)
                return cap_fail(err, 0, "cannot kill container \"%s\": it is paused (its VM cannot answer); resume it first", id);
        json_t *req = json_pack("{s:s,s:i,s:b}", "op", "kill", "signal", sig, "all", all);
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        return r < 0 ? cap_error_prefix(err, "kill container \"%s\"", id) : 0;
}

/* The VMM is not our child: wait until it is gone (a zombie counts, its reaper is not us). */
static void vmm_kill(const struct sandbox_record *rec)
{
        if (!sandbox_vmm_alive(rec))
                return;
        kill(rec->pid, SIGKILL);
        for (int i = 0; i < 1000 && sandbox_vmm_alive(rec); i++)
                usleep(5000);
}

int sandbox_delete(const char *root, const char *id, bool force, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        cleanup_cgroup struct cgroup *cg = NULL;
        if (state_check_id(id, err) < 0)
                return -1;
        cleanup_free char *dir = state_dir(root, id);
        bool damaged = false;
        if (state_load(root, id, &st, err) < 0) {
                if (!force)
                        return -1;
                cap_error_free(err);
                st = state_salvage(root, id);
                damaged = true;
        }
        cleanup_error cap_error_t rec_err = NULL;
        if (sandbox_record_load(root, id, &rec, &rec_err) < 0 && !force)
                return cap_fail(err, 0, "%s", rec_err->msg);
        const char *status = sandbox_status(root, st);
        if (!force && strcmp(status, "created") != 0 && strcmp(status, "stopped") != 0)
                return cap_fail(err, 0, "cannot delete container \"%s\" that is not stopped: %s", id, status);
        if (st->cgroup && cgroup_load(st->cgroup, &cg, err) < 0) {
                if (!force)
                        return -1;
                log_warning("%s: deleting without it", (*err)->msg);
                cap_error_free(err);
        }
        /* A frozen (or half-frozen) VMM cannot die: thaw whatever the status says. */
        if (cg)
                cgroup_freeze(cg, false, err);
        cap_error_free(err);
        vmm_kill(&rec);
        /* The one place that says it, for a detached container and for run (which deletes). */
        cleanup_free char *seccomp_death = sandbox_seccomp_death(root, id);
        if (seccomp_death)
                log_warning("container \"%s\": %s", id, seccomp_death);
        /* virtiofsd and anything a half-made create left: the cgroup's processes die with it. */
        if (cg && cgroup_destroy(cg, err) < 0)
                return -1;
        cleanup_spec struct spec *spec = NULL;
        cleanup_error cap_error_t spec_err = NULL;
        if (!damaged && st->creator == 0 && container_load_spec(root, id, &spec, &spec_err) == 0) {
                cleanup_free char *json = state_oci_string(st, "stopped");
                if (hooks_run(&spec->hooks.poststop, "poststop", json, &spec_err) < 0)
                        log_warning("%s", spec_err->msg);
        }
        log_debug("deleted VM container %s (was %s)", id, status);
        return rm_rf(dir, err);
}

/* exec -t: our terminal goes raw while it relays (the guest's pty has the line discipline). */
static struct termios saved_termios;
static bool termios_saved;

static void terminal_raw(void)
{
        if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
                return;
        struct termios raw = saved_termios;
        cfmakeraw(&raw);
        termios_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
}

static void terminal_restore(void)
{
        if (termios_saved)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
        termios_saved = false;
}

/* The second half of exec: the wait, and the relay until the process has ended. */
static int exec_relay(const struct sandbox_record *rec, const char *exec_id, bool tty, const int conns[3], int *status,
                      cap_error_t *err)
{
        long long deadline = now_ms() + 10000;
        json_t *req;
        int r;
        cleanup_close int wait_conn = agent_connect(rec->agent_socket, deadline, -1, err);
        if (wait_conn < 0)
                return -1;
        req = json_pack("{s:s,s:s}", "op", "wait", "exec", exec_id);
        r = frame_send(wait_conn, req, err);
        json_decref(req);
        if (r < 0)
                return -1;
        signal(SIGPIPE, SIG_IGN);
        struct stdio_relay relay = { .host = { 0, 1, 2 }, .conn = { conns[0], conns[1], conns[2] }, .wait_conn = wait_conn,
                                     .stop_fd = -1, .winch_fd = -1, .agent_socket = rec->agent_socket, .exec = exec_id };
        cleanup_close int winch = -1;
        if (tty && isatty(STDIN_FILENO)) {
                sigset_t set;
                sigemptyset(&set);
                sigaddset(&set, SIGWINCH);
                sigprocmask(SIG_BLOCK, &set, NULL);
                relay.winch_fd = winch = signalfd(-1, &set, SFD_CLOEXEC);
                terminal_raw();
        }
        r = stdio_relay_run(&relay, status, err);
        terminal_restore();
        if (r == 0)
                return cap_fail(err, 0, "exec `%s`: the VM stopped before the process ended", exec_id);
        return r < 0 ? -1 : 0;
}

int sandbox_exec(const char *root, const char *id, const char *process_json, bool tty, bool detach, const char *pid_file,
                 int *status, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        const char *st_status;
        if (load(root, id, &st, &rec, &st_status, err) < 0)
                return -1;
        if (strcmp(st_status, "running") != 0)
                return cap_fail(err, 0, "cannot exec in container \"%s\": it is %s, not running", id, st_status);
        static unsigned counter;
        char exec_id[64];
        snprintf(exec_id, sizeof(exec_id), "exec-%d-%u-%lld", (int)getpid(), counter++, now_ms());
        cleanup_stdio int conns[3] = { -1, -1, -1 };
        long long deadline = now_ms() + 10000;
        if (agent_open_stdio(rec.agent_socket, exec_id, tty, conns, deadline, -1, err) < 0)
                return -1;
        cleanup_close int fd = agent_connect(rec.agent_socket, deadline, -1, err);
        if (fd < 0)
                return -1;
        json_t *req = json_pack("{s:s,s:s,s:s,s:s}", "op", "exec", "exec", exec_id, "process", process_json, "stdio",
                                tty ? "tty" : "pipes");
        int r = agent_request(fd, req, NULL, err);
        json_decref(req);
        if (r < 0)
                return cap_error_prefix(err, "exec in container \"%s\"", id);
        /* The host's stand-in for the process: it relays its stdio and exits with its status. With
         * detach it is a child left behind, as runc leaves the exec'd process to a subreaper
         * (conmon), and --pid-file names it. */
        pid_t relay_pid = detach ? fork() : getpid();
        if (relay_pid < 0)
                return cap_fail(err, errno, "fork the exec's relay");
        if (relay_pid > 0 && detach) {
                *status = 0;
                return write_pid_file(pid_file, relay_pid, err);
        }
        if (!detach && write_pid_file(pid_file, relay_pid, err) < 0)
                return -1;
        r = exec_relay(&rec, exec_id, tty, conns, status, err);
        if (detach) {
                if (r < 0)
                        cap_error_report(err);
                _exit(r < 0 ? 255 : *status);
        }
        return r;
}

int sandbox_wait(const char *root, const char *id, pid_t pid, int *status, cap_error_t *err)
{
        static const int forward[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD };
        sigset_t mask;
        sigemptyset(&mask);
        for (size_t i = 0; i < ARRAY_SIZE(forward); i++)
                sigaddset(&mask, forward[i]);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        cleanup_close int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0)
                return cap_fail(err, errno, "signalfd");
        for (;;) {
                int wstatus;
                pid_t w = waitpid(pid, &wstatus, WNOHANG);
                if (w == pid) {
                        *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
                        return 0;
                }
                if (w < 0)
                        return cap_fail(err, errno, "wait for the VM's sandbox process");
                struct pollfd p = { .fd = sfd, .events = POLLIN };
                struct signalfd_siginfo si;
                if (poll(&p, 1, -1) > 0 && read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGCHLD) {
                        cleanup_error cap_error_t ignored = NULL;
                        sandbox_kill(root, id, (int)si.ssi_signo, false, &ignored);
                }
        }
}
