/* start, kill, state, delete and exec of a VM container: the agent over its socket, the VMM by
 * its pid, and the runtime's cgroup and hook code on the host. */
#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
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

/* req for the container id: a member's names it (its pod's agent runs the pod's first). */
static json_t *for_container(const struct sandbox_record *rec, const char *id, json_t *req)
{
        if (rec->member_of)
                json_object_set_new(req, "id", json_string(id));
        return req;
}

static const char *agent_status(const struct sandbox_record *rec, const char *id)
{
        json_t *req = for_container(rec, id, json_pack("{s:s}", "op", "state"));
        json_t *rep = NULL;
        cleanup_error cap_error_t err = NULL;
        const char *status = "stopped"; /* an agent that does not answer runs no container */
        if (agent_call(rec->agent_socket, req, &rep, &err) == 0) {
                static const char *const known[] = { "created", "running", "paused", "stopped" };
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
        return agent_status(&rec, st->id);
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

/* How long a kill that found the VM's agent silent waits for the VM to end. The guest's power-off
 * runs its kernel's shutdown; a hung guest keeps the kill's error. */
#define SANDBOX_KILL_END_WAIT_MS 10000

/* Whether rec's process (the VMM, or a member's relay, which ends with its pod's VMM) is gone
 * within ms. It is not our child (a zombie counts as gone: its reaper is not us), so polled. */
static bool ends_within(const struct sandbox_record *rec, int ms)
{
        for (int waited = 0; waited < ms && sandbox_vmm_alive(rec); waited += 10)
                usleep(10000);
        return !sandbox_vmm_alive(rec);
}

/* Why the VM under an agent call that lost its connection ended: the guest died, or the VMM's
 * filter killed it, as vmm.log says. NULL if the VMM runs on or ended without a reason there. */
static char *vm_end_reason(const char *root, const char *id, const struct sandbox_record *rec)
{
        if (!ends_within(rec, SANDBOX_DEATH_WAIT_MS))
                return NULL;
        char *why = sandbox_vmm_log_line(root, id, SANDBOX_GUEST_DEATH);
        return why ? why : sandbox_vmm_log_line(root, id, SANDBOX_SECCOMP_DEATH);
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
        json_t *req = for_container(&rec, id, json_pack("{s:s}", "op", "start"));
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        cleanup_free char *why = r == -2 ? vm_end_reason(root, id, &rec) : NULL;
        if (why) {
                cap_error_free(err);
                return cap_fail(err, 0, "start container \"%s\": %s", id, why);
        }
        if (r < 0)
                return cap_error_prefix(err, "start container \"%s\"", id);
        cleanup_free char *dir = state_dir(root, id);
        sandbox_phase_mark(dir, "started", sandbox_phase_now());
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
                /* Its process may still be there, the VM powering off: return once it is gone, so
                 * that the caller's own look at that pid (podman's, after a failed kill) finds the
                 * end. */
                ends_within(&rec, SANDBOX_KILL_END_WAIT_MS);
                if (all)
                        return 0;
                return cap_fail(err, 0, "cannot kill container \"%s\": container not running", id);
        }
        json_t *req = for_container(&rec, id, json_pack("{s:s,s:i,s:b}", "op", "kill", "signal", sig, "all", all));
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        /* A VM powering off (its init ended, or its pod's infra did: podman stops a pod's
         * containers all at once) answers no more, and its processes are ending: once its VMM (a
         * member's relay) is gone, the container has stopped, which is what the kill was for. */
        if (r == -2 && ends_within(&rec, SANDBOX_KILL_END_WAIT_MS)) {
                cap_error_free(err);
                return 0;
        }
        return r < 0 ? cap_error_prefix(err, "kill container \"%s\"", id) : 0;
}

int sandbox_pause(const char *root, const char *id, bool pause, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        const char *status, *want = pause ? "running" : "paused";
        if (load(root, id, &st, &rec, &status, err) < 0)
                return -1;
        /* As for a plain container (and runc): a created one can be paused too. */
        if (strcmp(status, want) != 0 && !(pause && strcmp(status, "created") == 0))
                return cap_fail(err, 0, "container \"%s\" is %s, not %s", id, status, want);
        json_t *req = for_container(&rec, id, json_pack("{s:s}", "op", pause ? "pause" : "resume"));
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        return r < 0 ? cap_error_prefix(err, "%s container \"%s\"", pause ? "pause" : "resume", id) : 0;
}

/* A live container's agent: ps and update have nothing to ask a stopped one. */
static int load_live(const char *root, const char *id, struct state **st, struct sandbox_record *rec, cap_error_t *err)
{
        const char *status;
        if (load(root, id, st, rec, &status, err) < 0)
                return -1;
        if (strcmp(status, "stopped") == 0)
                return cap_fail(err, 0, "container \"%s\" is not running", id);
        return 0;
}

int sandbox_pids(const char *root, const char *id, pid_t **pids, size_t *n, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        *pids = NULL;
        *n = 0;
        if (load_live(root, id, &st, &rec, err) < 0)
                return -1;
        json_t *req = for_container(&rec, id, json_pack("{s:s}", "op", "ps"));
        json_t *rep = NULL;
        int r = agent_call(rec.agent_socket, req, &rep, err);
        json_decref(req);
        if (r < 0)
                return cap_error_prefix(err, "ps of container \"%s\"", id);
        /* The guest's list: pids as the guest numbers them, each checked to be one. */
        json_t *list = json_object_get(rep, "pids");
        size_t count = json_array_size(list);
        if (!json_is_array(list) || count > SANDBOX_PIDS_MAX) {
                json_decref(rep);
                return cap_fail(err, 0, "ps of container \"%s\": the VM's agent sent no list of at most %d pids", id,
                                SANDBOX_PIDS_MAX);
        }
        *pids = xmalloc0((count + 1) * sizeof(pid_t));
        for (size_t i = 0; i < count; i++) {
                json_t *v = json_array_get(list, i);
                if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX) {
                        json_decref(rep);
                        free(*pids);
                        *pids = NULL;
                        return cap_fail(err, 0, "ps of container \"%s\": the VM's agent sent a pid that is not one", id);
                }
                (*pids)[i] = (pid_t)json_integer_value(v);
        }
        *n = count;
        json_decref(rep);
        return 0;
}

int sandbox_update(const char *root, const char *id, const char *resources_json, const struct spec_resources *res,
                   cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        cleanup_record struct sandbox_record rec = { 0 };
        cleanup_cgroup struct cgroup *cg = NULL;
        if (load_live(root, id, &st, &rec, err) < 0)
                return -1;
        /* The guest's RAM cannot shrink: a limit below it and the VMM's share would have the
         * host's OOM killer end the VM once the guest touches its memory. Refused before
         * anything changes, on the host or in the guest. */
        uint64_t need = rec.memory + SANDBOX_VMM_OVERHEAD;
        if (rec.memory && res->memory.limit.set && res->memory.limit.v > 0 && (uint64_t)res->memory.limit.v < need)
                return cap_fail(err, 0, "update container \"%s\": linux.resources.memory.limit (--memory): %lld bytes is below "
                                        "the VM's minimum of %lluM (%lluM of guest RAM, %lluM for the VMM)", id,
                                (long long)res->memory.limit.v, (unsigned long long)(need / SANDBOX_MIB),
                                (unsigned long long)(rec.memory / SANDBOX_MIB), (unsigned long long)(SANDBOX_VMM_OVERHEAD / SANDBOX_MIB));
        /* The host's cgroup bounds the whole VM, as at create. */
        if (st->cgroup) {
                struct spec_resources host_res;
                sandbox_host_resources(res, &host_res);
                if (cgroup_load(st->cgroup, &cg, err) < 0 || cgroup_apply(cg, &host_res, err) < 0)
                        return cap_error_prefix(err, "update container \"%s\"", id);
        }
        json_t *req = for_container(&rec, id, json_pack("{s:s,s:s}", "op", "update", "resources", resources_json));
        int r = agent_call(rec.agent_socket, req, NULL, err);
        json_decref(req);
        return r < 0 ? cap_error_prefix(err, "update container \"%s\"", id) : 0;
}

/* The VMM is not our child: wait until it is gone (a zombie counts, its reaper is not us). */
static void vmm_kill(const struct sandbox_record *rec)
{
        if (!sandbox_vmm_alive(rec))
                return;
        kill(rec->pid, SIGKILL);
        ends_within(rec, 5000);
}

/* A member goes from its pod's guest (killed there first) and from the pod's shared directory;
 * a pod whose VM is gone has neither any more. */
static void member_forget(const char *root, const char *id, const struct sandbox_record *rec)
{
        cleanup_record struct sandbox_record pod = { 0 };
        cleanup_error cap_error_t ignored = NULL;
        if (sandbox_record_load(root, rec->member_of, &pod, &ignored) == 0 && sandbox_vmm_alive(&pod)) {
                json_t *req = json_pack("{s:s,s:s,s:b}", "op", "delete", "id", id, "force", 1);
                if (agent_call(pod.agent_socket, req, NULL, &ignored) < 0)
                        log_warning("delete container \"%s\" in its pod's VM: %s", id, ignored->msg);
                json_decref(req);
        }
        sandbox_member_unmount(root, rec->member_of, rec->member_dir);
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
        if (rec.member_of)
                member_forget(root, id, &rec);
        vmm_kill(&rec);
        /* The one place that says it, for a detached container and for run (which deletes). */
        cleanup_free char *seccomp_death = sandbox_vmm_log_line(root, id, SANDBOX_SECCOMP_DEATH);
        if (seccomp_death)
                log_warning("container \"%s\": %s", id, seccomp_death);
        /* virtiofsd and anything a half-made create left: the cgroup's processes die with it. */
        if (cg && cgroup_destroy(cg, err) < 0)
                return -1;
        cleanup_spec struct spec *spec = NULL;
        cleanup_error cap_error_t spec_err = NULL;
        bool have_spec = !damaged && container_load_spec(root, id, &spec, &spec_err) == 0;
        if (have_spec)
                sandbox_net_forget(spec, &rec);
        if (have_spec && st->creator == 0) {
                cleanup_free char *json = state_oci_string(st, "stopped");
                if (hooks_run(&spec->hooks.poststop, "poststop", json, &spec_err) < 0)
                        log_warning("%s", spec_err->msg);
        }
        log_debug("deleted VM container %s (was %s)", id, status);
        /* The pod's members' mounts go before its state directory (rm_rf would enter them). */
        if (sandbox_pod_unshare(root, id, err) < 0)
                return -1;
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

/* The second half of exec: the wait, and the relay until the process has ended, between the
 * agent and our stdio or, with console >= 0, a console socket's pty. */
static int exec_relay(const struct sandbox_record *rec, const char *exec_id, bool tty, int console, const int conns[3], int *status,
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
        if (console >= 0)
                relay.host[0] = relay.host[1] = console;
        cleanup_close int winch = -1;
        if (tty && isatty(relay.host[0])) {
                sigset_t set;
                sigemptyset(&set);
                sigaddset(&set, SIGWINCH);
                sigprocmask(SIG_BLOCK, &set, NULL);
                relay.winch_fd = winch = signalfd(-1, &set, SFD_CLOEXEC);
                if (console < 0)
                        terminal_raw();
        }
        r = stdio_relay_run(&relay, status, err);
        terminal_restore();
        if (r == 0)
                return cap_fail(err, 0, "exec `%s`: the VM stopped before the process ended", exec_id);
        return r < 0 ? -1 : 0;
}

static void stdio_to_null(void)
{
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        for (int i = 0; null >= 0 && i < 3; i++)
                dup2(null, i);
        if (null > 2)
                close(null);
}

/* The relay as our child: its exit status is the process's (255: the relay failed). */
static int relay_child_wait(pid_t pid, int *status, cap_error_t *err)
{
        int wstatus;
        while (waitpid(pid, &wstatus, 0) < 0) {
                if (errno != EINTR)
                        return cap_fail(err, errno, "wait for the exec's relay");
        }
        *status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        return 0;
}

int sandbox_exec(const char *root, const char *id, const struct sandbox_exec_opts *o, int *status, cap_error_t *err)
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
        if (agent_open_stdio(rec.agent_socket, exec_id, o->tty, conns, deadline, -1, err) < 0)
                return -1;
        cleanup_close int fd = agent_connect(rec.agent_socket, deadline, -1, err);
        if (fd < 0)
                return -1;
        json_t *req = for_container(&rec, id, json_pack("{s:s,s:s,s:s,s:s}", "op", "exec", "exec", exec_id, "process",
                                                        o->process_json, "stdio", o->tty ? "tty" : "pipes"));
        int r = agent_request(fd, req, NULL, err);
        json_decref(req);
        if (r < 0)
                return cap_error_prefix(err, "exec in container \"%s\"", id);
        /* The console socket has the pty's master before we return, as runc hands it over. */
        cleanup_close int console = -1;
        if (o->console_fd >= 0 && (console = console_pty_open(o->console_fd, o->rows, o->cols, false, err)) < 0)
                return -1;
        /* The host's stand-in for the process: a child that relays its stdio, confined once it
         * holds what it relays, and exits with the process's status. With detach it is left
         * behind, as runc leaves the exec'd process to a subreaper (conmon), and --pid-file names
         * it. With a console it has a session of its own, whose controlling terminal is the
         * console's pty, and takes the master's resizes. In the foreground it dies with us: its
         * streams close and the agent ends the process, as when exec itself is killed. We only
         * wait: nothing the guest sends reaches an unconfined process. */
        pid_t parent = getpid();
        pid_t relay_pid = fork();
        if (relay_pid < 0)
                return cap_fail(err, errno, "fork the exec's relay");
        if (relay_pid > 0) {
                *status = 0;
                pid_t named = o->detach || console >= 0 ? relay_pid : parent;
                agent_stdio_close(&conns);
                cap_closep(&console);
                cap_closep(&fd);
                if (write_pid_file(o->pid_file, named, err) < 0)
                        return -1;
                return o->detach ? 0 : relay_child_wait(relay_pid, status, err);
        }
        if (console >= 0 && setsid() >= 0) {
                /* The master's last close hangs up its session: the status still comes. */
                signal(SIGHUP, SIG_IGN);
                ioctl(console, TIOCSCTTY, 0);
        }
        /* A detached relay with a console uses none of exec's stdio: holding the caller's pipes
         * open would keep it (conmon) waiting for their end until the process ends. */
        if (console >= 0 && o->detach) {
                close(o->console_fd);
                stdio_to_null();
        }
        cleanup_free char *dir = state_dir(root, id);
        r = sandbox_relay_jail_enter(dir, rec.agent_socket, err);
        /* After the jail: a change of uid clears the parent-death signal. */
        if (r == 0 && !o->detach && console < 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
                _exit(255);
        if (r == 0)
                r = sandbox_seccomp_relay_load(err);
        if (r == 0)
                r = exec_relay(&rec, exec_id, o->tty, console, conns, status, err);
        if (r < 0)
                cap_error_report(err);
        _exit(r < 0 ? 255 : *status);
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
