/* The rootfs: setting it up, pivot_root into it, sysctls, masked and readonly paths. */
#include "runtime/rootfs_internal.h"

#include <linux/openat2.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/procfs.h"

static int rootfs_propagation_flags(const struct spec *spec, unsigned long *out, cap_error_t *err)
{
        const char *p = spec->linux.rootfs_propagation;
        *out = 0;
        if (!p || !*p)
                return 0;
        *out = propagation_lookup(p);
        if (!*out)
                return cap_fail(err, EINVAL, "linux.rootfsPropagation: unknown propagation `%s`", p);
        return 0;
}

/* In the container's mount namespace: nothing mounted from now on may reach the host, and the
 * rootfs becomes a mount point, which pivot_root needs. */
static int rootfs_private_root(const char *root, unsigned long prop, const char *prop_name, cap_error_t *err)
{
        if (mount(NULL, "/", NULL, prop ? prop : MS_SLAVE | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "make / %s", prop ? prop_name : "rslave");
        if (rootfs_parent_mount_private(root, err) < 0)
                return -1;
        if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "root.path: bind mount `%s`", root);
        return 0;
}

int rootfs_setup(const struct spec *spec, bool in_userns, cap_error_t *err)
{
        const char *root = spec->root_path;
        unsigned long prop;

        if (!root || !*root)
                return cap_fail(err, EINVAL, "root.path: missing");
        if (rootfs_propagation_flags(spec, &prop, err) < 0)
                return -1;
        /* An unbindable / could not be bound from: rootfs_enter makes the new / unbindable
         * once everything is in place. */
        if (prop & MS_UNBINDABLE)
                prop = 0;
        /* Without a mount namespace of its own (as runc allows), the host's mount tree is left
         * as it is: the config's mounts go below the rootfs, which is entered by chroot. */
        if (spec_namespace(spec, CLONE_NEWNS) && rootfs_private_root(root, prop, spec->linux.rootfs_propagation, err) < 0)
                return -1;
        cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return cap_fail(err, errno, "root.path: open `%s`", root);

        for (size_t i = 0; i < spec->n_mounts; i++)
                if (mount_entry(rootfd, spec, &spec->mounts[i], in_userns, err) < 0)
                        return cap_error_prefix(err, "mounts[%zu] (%s)", i,
                                                spec->mounts[i].destination ? spec->mounts[i].destination : "");
        if (!dev_is_bind_mounted(spec) && dev_setup(rootfd, spec, in_userns, err) < 0)
                return -1;
        return 0;
}

static int pivot_into(const char *root, cap_error_t *err)
{
        cleanup_close int oldroot = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (oldroot < 0)
                return cap_fail(err, errno, "open /");
        cleanup_close int newroot = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (newroot < 0)
                return cap_fail(err, errno, "root.path: open `%s`", root);
        if (fchdir(newroot) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        /* Stack the old root under the new one, then detach it from there. */
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return cap_fail(err, errno, "pivot_root `%s`", root);
        if (fchdir(oldroot) < 0)
                return cap_fail(err, errno, "chdir to the old root");
        /* The unmount must not propagate to the host's mounts. */
        if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
                return cap_fail(err, errno, "make the old root rslave");
        if (umount2(".", MNT_DETACH) < 0)
                return cap_fail(err, errno, "unmount the old root");
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

static int chroot_into(const char *root, cap_error_t *err)
{
        if (chdir(root) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        if (mount(root, "/", NULL, MS_MOVE, NULL) < 0)
                return cap_fail(err, errno, "move `%s` to /", root);
        if (chroot(".") < 0)
                return cap_fail(err, errno, "chroot `%s`", root);
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

/* The mount fd refers to, or -1. */
static long long mount_id_of(int fd)
{
        struct statx stx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0 || !(stx.stx_mask & STATX_MNT_ID))
                return -1;
        return (long long)stx.stx_mnt_id;
}

int rootfs_host_mounts_detach(const char *root, cap_error_t *err)
{
        cleanup_free char *real = realpath(root, NULL);
        if (!real)
                return cap_fail(err, errno, "root.path: `%s`", root);
        cleanup_close int rootfd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return cap_fail(err, errno, "root.path: open `%s`", real);
        struct mountinfo *mi;
        size_t n;
        if (mountinfo_read(&mi, &n, err) < 0)
                return -1;
        size_t len = strlen(real);
        int ret = 0;
        /* Newest first: submounts, and the top of a stack, go before what they cover. */
        for (size_t i = n; i-- > 0;) {
                const char *mp = mi[i].mount_point;
                if (strncmp(mp, real, len) != 0 || mp[len] != '/' || mp[len + 1] == '\0')
                        continue;
                /* The container could have swapped a directory on the way for a symlink: reach
                 * the mount beneath the rootfs, following none, and check it is that mount. */
                struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                                        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
                cleanup_close int fd = (int)syscall(SYS_openat2, rootfd, mp + len + 1, &how, sizeof(how));
                if (fd < 0 || mount_id_of(fd) != mi[i].id)
                        continue;
                char buf[FD_PATH_MAX];
                if (umount2(fd_path(buf, fd), MNT_DETACH) < 0 && ret == 0)
                        ret = cap_fail(err, errno, "unmount `%s`", mp);
        }
        mountinfo_free(mi, n);
        return ret;
}

/* In the host's mount namespace: chroot only; moving the rootfs onto / (--no-pivot) would
 * move it over the host's /. */
static int chroot_only(const char *root, cap_error_t *err)
{
        if (chdir(root) < 0)
                return cap_fail(err, errno, "root.path: chdir `%s`", root);
        if (chroot(".") < 0)
                return cap_fail(err, errno, "chroot `%s`", root);
        if (chdir("/") < 0)
                return cap_fail(err, errno, "chdir /");
        return 0;
}

static const char *const ipc_sysctls[] = {
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
        "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
};

/* Only namespaced sysctls may be set, and only in a namespace of the
 * container's own, as runc's validation has it. */
static int sysctl_validate(const struct spec *spec, const char *key, cap_error_t *err)
{
        cleanup_strv char **parts = strv_split(key, "./");
        size_t n_parts = 0;
        for (const char *c = key; *c; c++)
                n_parts += *c == '.' || *c == '/';
        if (strv_len(parts) != n_parts + 1 || strv_contains(parts, ".."))
                return cap_fail(err, EINVAL, "linux.sysctl.%s: invalid key", key);

        bool ipc = str_has_prefix(key, "fs.mqueue.");
        for (size_t i = 0; i < ARRAY_SIZE(ipc_sysctls); i++)
                ipc = ipc || strcmp(key, ipc_sysctls[i]) == 0;
        if (ipc) {
                if (!spec_namespace(spec, CLONE_NEWIPC))
                        return cap_fail(err, EPERM, "linux.sysctl.%s: not allowed in the host's IPC namespace",
                                        key);
                return 0;
        }
        if (str_has_prefix(key, "net.")) {
                if (!spec_namespace(spec, CLONE_NEWNET))
                        return cap_fail(err, EPERM,
                                        "linux.sysctl.%s: not allowed in the host's network namespace", key);
                return 0;
        }
        if (spec_namespace(spec, CLONE_NEWUTS) != NULL) {
                if (strcmp(key, "kernel.domainname") == 0)
                        return 0;
                if (strcmp(key, "kernel.hostname") == 0)
                        return cap_fail(err, EPERM, "linux.sysctl.%s: not allowed, set the \"hostname\" field",
                                        key);
        }
        return cap_fail(err, EPERM, "linux.sysctl.%s: not in a separate kernel namespace", key);
}

static int validate_enter(const struct spec *spec, cap_error_t *err)
{
        char *const *sysctl = spec->linux.sysctl;
        for (size_t i = 0; sysctl && sysctl[i] && sysctl[i + 1]; i += 2)
                if (sysctl_validate(spec, sysctl[i], err) < 0)
                        return -1;
        bool uts = spec_namespace(spec, CLONE_NEWUTS) != NULL;
        if (spec->hostname && *spec->hostname && !uts)
                return cap_fail(err, EPERM, "hostname: setting it requires a private UTS namespace");
        if (spec->domainname && *spec->domainname && !uts)
                return cap_fail(err, EPERM, "domainname: setting it requires a private UTS namespace");
        return 0;
}

static int sysctl_write(const struct spec *spec, cap_error_t *err)
{
        char *const *sysctl = spec->linux.sysctl;
        for (size_t i = 0; sysctl && sysctl[i] && sysctl[i + 1]; i += 2) {
                cleanup_free char *path = xasprintf("/proc/sys/%s", sysctl[i]);
                for (char *c = path + strlen("/proc/sys/"); *c; c++)
                        if (*c == '.')
                                *c = '/';
                if (procfs_write(path, sysctl[i + 1], strlen(sysctl[i + 1]), err) < 0)
                        return cap_error_prefix(err, "linux.sysctl.%s", sysctl[i]);
        }
        return 0;
}

static unsigned long path_locked_flags(const char *path)
{
        cleanup_close int fd = open(path, O_PATH | O_CLOEXEC);
        return fd < 0 ? 0 : locked_flags(fd);
}

static int readonly_paths_apply(const struct spec *spec, cap_error_t *err)
{
        char *const *paths = spec->linux.readonly_paths;
        for (size_t i = 0; paths && paths[i]; i++) {
                const char *p = paths[i];
                if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return cap_fail(err, errno, "linux.readonlyPaths[%zu] (%s): bind mount", i, p);
                }
                unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
                if (mount(NULL, p, NULL, flags | path_locked_flags(p), NULL) < 0)
                        return cap_fail(err, errno, "linux.readonlyPaths[%zu] (%s): remount read-only", i, p);
        }
        return 0;
}

static int masked_paths_apply(const struct spec *spec, cap_error_t *err)
{
        char *const *paths = spec->linux.masked_paths;
        for (size_t i = 0; paths && paths[i]; i++) {
                const char *p = paths[i];
                struct stat st;
                if (stat(p, &st) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return cap_fail(err, errno, "linux.maskedPaths[%zu] (%s): stat", i, p);
                }
                int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL)
                                            : mount("/dev/null", p, NULL, MS_BIND, NULL);
                if (r < 0)
                        return cap_fail(err, errno, "linux.maskedPaths[%zu] (%s): mount", i, p);
        }
        return 0;
}

int rootfs_enter(const struct spec *spec, bool no_pivot, cap_error_t *err)
{
        unsigned long prop;

        if (validate_enter(spec, err) < 0 || rootfs_propagation_flags(spec, &prop, err) < 0)
                return -1;
        if (!spec_namespace(spec, CLONE_NEWNS)) {
                if (chroot_only(spec->root_path, err) < 0)
                        return -1;
        } else if ((no_pivot ? chroot_into(spec->root_path, err) : pivot_into(spec->root_path, err)) < 0) {
                return -1;
        }

        /* runc's order: sysctls before readonlyPaths (which usually hold /proc/sys). */
        if (spec->hostname && *spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
                return cap_fail(err, errno, "hostname: sethostname `%s`", spec->hostname);
        if (spec->domainname && *spec->domainname && setdomainname(spec->domainname, strlen(spec->domainname)) < 0)
                return cap_fail(err, errno, "domainname: setdomainname `%s`", spec->domainname);
        if (sysctl_write(spec, err) < 0 || readonly_paths_apply(spec, err) < 0 || masked_paths_apply(spec, err) < 0)
                return -1;
        if (spec->root_readonly) {
                unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | path_locked_flags("/");
                if (mount(NULL, "/", NULL, flags, NULL) < 0)
                        return cap_fail(err, errno, "root.readonly: remount / read-only");
        }
        /* Last: the paths above are bind mounts, which an unbindable / would refuse. */
        if (prop && mount(NULL, "/", NULL, prop, NULL) < 0)
                return cap_fail(err, errno, "linux.rootfsPropagation: apply `%s` to /", spec->linux.rootfs_propagation);
        return 0;
}
