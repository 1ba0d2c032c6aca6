/* start/kill/delete/pause/update/pids: the operations on a created container. */
#include "runtime/container_internal.h"

#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/hooks.h"
#include "runtime/rootfs.h"

int container_load_spec(const char *root, const char *id, struct spec **out, cap_error_t *err)
{
        cleanup_free char *path = xasprintf("%s/%s/" STATE_CONFIG, root, id);
        cleanup_free char *text = NULL;
        if (read_file(path, &text, NULL, 0, err) < 0)
                return -1;
        return spec_parse(text, path, out, err);
}

int load_with_status(const char *root, const char *id, struct state **st, const char **status, cap_error_t *err)
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
        send_all(conn, json, strlen(json));
        shutdown(conn, SHUT_WR);
        /* The socket closes on a successful execve; anything read is init's error. */
        char msg[4096];
        ssize_t n = read_all(conn, msg, sizeof(msg) - 1);
        if (n > 0) {
                msg[n] = '\0';
                return cap_fail(err, 0, "%s", msg);
        }

        return container_poststart(root, id, st, err);
}

int container_poststart(const char *root, const char *id, const struct state *st, cap_error_t *err)
{
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

int state_cgroup(const struct state *st, struct cgroup **cg, cap_error_t *err)
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
        /* a task in a frozen cgroup cannot die: thaw for SIGKILL, as runc does */
        bool thaw = sig == SIGKILL && strcmp(status, "paused") == 0;
        if (all) {
                if (state_cgroup(st, &cg, err) < 0)
                        return -1;
                if (cg && cgroup_kill(cg, sig, err) < 0)
                        return -1;
                if (cg)
                        return thaw ? cgroup_freeze(cg, false, err) : 0;
                if (strcmp(status, "stopped") == 0)
                        return 0;
        } else if (strcmp(status, "stopped") == 0) {
                return cap_fail(err, 0, "cannot kill container \"%s\": container not running", id);
        }
        if (kill(st->pid, sig) < 0)
                return cap_fail(err, errno, "kill container \"%s\": unable to signal init", id);
        if (thaw) {
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

/* Whether status is one of list's ("|"-separated). */
static bool status_in(const char *list, const char *status)
{
        size_t n = strlen(status);
        for (const char *p = list; p; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL) {
                if (strncmp(p, status, n) == 0 && (p[n] == '|' || p[n] == '\0'))
                        return true;
        }
        return false;
}

/* The cgroup of a container that is not stopped; with want, one whose status is one of want's
 * ("|"-separated), else refused naming want's first. */
static int running_cgroup(const char *root, const char *id, const char *want, struct cgroup **cg, cap_error_t *err)
{
        cleanup_state struct state *st = NULL;
        const char *status;
        if (load_with_status(root, id, &st, &status, err) < 0)
                return -1;
        if (want && !status_in(want, status))
                return cap_fail(err, 0, "container \"%s\" is %s, not %.*s", id, status, (int)strcspn(want, "|"), want);
        if (!want && strcmp(status, "stopped") == 0)
                return cap_fail(err, 0, "container \"%s\" is not running", id);
        if (state_cgroup(st, cg, err) < 0)
                return -1;
        if (!*cg)
                return cap_fail(err, 0, "container \"%s\" has no cgroup (rootless without delegation)", id);
        return 0;
}

/* As runc: a created container can be paused too (its init waits for start, frozen), and start
 * refuses it until it is resumed. */
int container_pause(const char *root, const char *id, bool pause, cap_error_t *err)
{
        cleanup_cgroup struct cgroup *cg = NULL;
        if (running_cgroup(root, id, pause ? "running|created" : "paused", &cg, err) < 0)
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
