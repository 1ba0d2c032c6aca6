/* create: the runtime's side, setup, and init until it execs the container's process. */
#include "runtime/container_internal.h"

#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/hooks.h"
#include "runtime/procfs.h"
#include "runtime/rootfs.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1

/* ---- namespaces ---- */

const int ns_order[N_NS] = { CLONE_NEWUSER, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWTIME };
const char *const ns_proc_names[N_NS] = { "user", "ipc", "uts", "net", "pid", "mnt", "cgroup", "time" };

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
        /* Setup's message with our pidfd may trail behind our own: wait until the runtime has it,
         * or the hooks' state and the saved state would have no pid. */
        if (sync_expect(l->sync_fd, SYNC_GO, NULL, NULL, &err) < 0)
                _exit(1);
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

/* The checks every create makes before anything exists, whatever runs the container. */
int container_load_bundle(const struct container_opts *o, struct spec **spec, cap_error_t *err)
{
        if (state_check_id(o->id, err) < 0 || spec_load(o->bundle, spec, err) < 0)
                return -1;
        if (!(*spec)->process)
                return cap_fail(err, 0, "config.json: process: required to create a container");
        if ((*spec)->process->terminal && o->console_socket_fd < 0)
                return cap_fail(err, 0, "process.terminal is true: --console-socket is required (or run without --detach)");
        return 0;
}


int write_pid_file(const char *path, pid_t pid, cap_error_t *err)
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
                        if (sync_send(sync_fd, SYNC_GO, 0, NULL) < 0)
                                return cap_fail(err, errno, "start container init");
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

void kill_and_reap(pid_t pid)
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
        if (container_load_bundle(o, &spec, err) < 0)
                return -1;
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
        child_pid = child_fork(fds, direct ? l.ns.unshare_flags & ~CLONE_NEWCGROUP : 0, cg, err);
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
