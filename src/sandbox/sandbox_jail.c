/* The sandbox process's confinement, as Firecracker's jailer does for its VMM: once the VM has
 * opened everything it needs (/dev/kvm, guest memory, taps, sockets, the logs, virtiofsd
 * started) and before any of its threads runs, the process enters fresh namespaces, pivots into
 * an empty read-only root that shows only the agent's socket, becomes a uid and gid of its own
 * with no supplementary groups and drops every capability for good; its seccomp allow-list
 * (sandbox_seccomp.c) follows. The uid matters where the filter and the namespaces would not:
 * a signal to virtiofsd (root) through the pidfd the VMM holds is refused, and so is every root
 * file's owner access after an escape from the mount namespace. It also means the kernel no
 * longer delivers virtiofsd's parent-death signal (it checks the dying VMM's right to signal):
 * virtiofsd ends when its vhost-user socket closes with the VMM, and delete kills the cgroup. Its threads are created afterwards, so
 * each of them inherits all of it; namespaces and capabilities are per thread, which is why this
 * must run while the process has a single thread. The host relays that hold no VM (a detached
 * exec's, a pod member's) get the same, as the uid that owns their VM's agent socket. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

/* The network namespace too: every socket the VMM needs is open or path-based (the agent's),
 * and a tap lives in the namespace it was created in, whatever ours is. */
#define JAIL_NAMESPACES (CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP)

/* PATH below root, its parent directories created (mode 0711: the jailed uid walks through to
 * the socket, and lists nothing). */
static int make_path(const char *root, const char *path, cap_error_t *err)
{
        cleanup_free char *full = xasprintf("%s%s", root, path);
        for (char *p = full + strlen(root) + 1; (p = strchr(p, '/')); p++) {
                *p = '\0';
                int r = mkdir(full, 0711);
                *p = '/';
                if (r < 0 && errno != EEXIST)
                        return cap_fail(err, errno, "jail: mkdir for `%s`", path);
        }
        cleanup_close int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_fail(err, errno, "jail: create `%s`", full);
        return 0;
}

/* The mount point DIR/NAME: made here, or with shared, possibly there already (every relay of
 * a container mounts its own tmpfs on it, each in its own mount namespace). */
static int jail_root(const char *dir, const char *name, bool shared, const char *agent_socket, cap_error_t *err)
{
        cleanup_free char *root = xasprintf("%s/%s", dir, name);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return cap_fail(err, errno, "jail: make the mounts private");
        struct stat st;
        if (mkdir(root, 0700) < 0 && !(shared && errno == EEXIST && lstat(root, &st) == 0 && S_ISDIR(st.st_mode)))
                return cap_fail(err, errno, "jail: mkdir `%s`", root);
        if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711,size=64k") < 0)
                return cap_fail(err, errno, "jail: mount a tmpfs on `%s`", root);
        /* The agent's socket keeps its path: the relay and capsule's commands reach the guest
         * through it, and the VMM's threads need nothing else of the host's files. */
        cleanup_free char *target = xasprintf("%s%s", root, agent_socket);
        if (make_path(root, agent_socket, err) < 0)
                return -1;
        if (mount(agent_socket, target, NULL, MS_BIND, NULL) < 0)
                return cap_fail(err, errno, "jail: bind `%s`", agent_socket);
        if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
                return cap_fail(err, errno, "jail: pivot into `%s`", root);
        if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return cap_fail(err, errno, "jail: make the root read-only");
        return 0;
}

/* The bounding set (no execve can give one back) and the ambient set emptied, while
 * CAP_SETPCAP is still there. */
static int caps_drop_bounding(cap_error_t *err)
{
        for (int c = 0; prctl(PR_CAPBSET_READ, c) >= 0; c++)
                if (prctl(PR_CAPBSET_DROP, c) < 0)
                        return cap_fail(err, errno, "jail: drop capability %d from the bounding set", c);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
                return cap_fail(err, errno, "jail: clear the ambient capabilities");
        return 0;
}

/* Real, effective, saved and file-system ids all the sandbox's own (sandbox_internal.h):
 * nothing is left to switch back to. */
static int ids_drop(unsigned int id, cap_error_t *err)
{
        if (setgroups(0, NULL) < 0)
                return cap_fail(err, errno, "jail: drop the supplementary groups");
        if (setresgid(id, id, id) < 0 || setresuid(id, id, id) < 0)
                return cap_fail(err, errno, "jail: become uid and gid %u", id);
        return 0;
}

/* The other sets: setresuid() emptied the permitted and effective ones, not the inheritable. */
static int caps_drop_rest(cap_error_t *err)
{
        cap_t none = cap_init();
        int r = none ? cap_set_proc(none) : -1;
        int e = errno;
        cap_free(none);
        if (r < 0)
                return cap_fail(err, e, "jail: drop the capabilities");
        return 0;
}

static int jail_finish(const char *dir, const char *name, bool shared, const char *agent_socket, unsigned int id,
                       cap_error_t *err)
{
        if (jail_root(dir, name, shared, agent_socket, err) < 0 || caps_drop_bounding(err) < 0 || ids_drop(id, err) < 0 ||
            caps_drop_rest(err) < 0)
                return -1;
        /* Not dumpable: no core of guest memory, no ptrace by anything that lacks CAP_SYS_PTRACE. */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                return cap_fail(err, errno, "jail: prctl");
        return 0;
}

int sandbox_jail_enter(const char *dir, const char *agent_socket, cap_error_t *err)
{
        /* The relay thread connects to the agent's socket, which takes write access to it;
         * capsule's commands are root's. */
        unsigned int id = SANDBOX_ID_BASE + (unsigned int)getpid();
        if (chown(agent_socket, id, id) < 0)
                return cap_fail(err, errno, "jail: chown `%s`", agent_socket);
        if (unshare(JAIL_NAMESPACES) < 0)
                return cap_fail(err, errno, "jail: unshare the namespaces");
        return jail_finish(dir, SANDBOX_JAIL, false, agent_socket, id, err);
}

int sandbox_relay_jail_enter(const char *dir, const char *agent_socket, cap_error_t *err)
{
        /* The socket's owner is the VM's own uid (sandbox_jail_enter()): becoming it is what lets
         * the relay connect once it has no capabilities, and that uid has nothing else. */
        struct stat st;
        if (stat(agent_socket, &st) < 0)
                return cap_fail(err, errno, "relay jail: stat `%s`", agent_socket);
        if (!S_ISSOCK(st.st_mode) || st.st_uid < SANDBOX_ID_BASE || st.st_uid >= SANDBOX_ID_BASE + SANDBOX_ID_PIDS)
                return cap_fail(err, 0, "relay jail: `%s` is not a confined VM's agent socket", agent_socket);
        if (unshare(JAIL_NAMESPACES) < 0)
                return cap_fail(err, errno, "relay jail: unshare the namespaces");
        return jail_finish(dir, SANDBOX_RELAY_JAIL, true, agent_socket, st.st_uid, err);
}
