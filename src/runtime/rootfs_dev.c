/* /dev: linux.devices and the default devices, by mknod or bind, and its symlinks. */
#include "runtime/rootfs_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"

struct default_device {
        const char *name;
        unsigned int major, minor;
};

static const struct default_device default_devices[] = {
        { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
};

static const char *const default_links[][2] = {
        { "fd", "/proc/self/fd" },
        { "stdin", "/proc/self/fd/0" },
        { "stdout", "/proc/self/fd/1" },
        { "stderr", "/proc/self/fd/2" },
};

/* Create an empty file at dirfd/base and bind source onto it. */
static int device_bind(int dirfd, const char *base, const char *source, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        int fd = openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_fail(err, errno, "create");
        close(fd);
        cleanup_close int target = openat(dirfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (target < 0)
                return cap_fail(err, errno, "open");
        if (mount(source, fd_path(buf, target), NULL, MS_BIND, NULL) < 0)
                return cap_fail(err, errno, "bind mount %s", source);
        return 0;
}

/* mknod was refused (the device cgroup may allow a device but not mknod): bind the host's
 * node at the same path instead, as runc does, if it is the very same device. */
static int device_bind_host(int dirfd, const char *base, const char *path, mode_t type, unsigned int major,
                            unsigned int minor, cap_error_t *err)
{
        char src[FD_PATH_MAX];
        struct stat st;
        cleanup_close int host = open(path, O_PATH | O_CLOEXEC);
        if (host < 0)
                return cap_fail(err, EPERM, "mknod (no host node `%s` to bind instead)", path);
        if (fstat(host, &st) < 0)
                return cap_fail(err, errno, "stat the host's `%s`", path);
        if ((st.st_mode & S_IFMT) != type || st.st_rdev != makedev(major, minor))
                return cap_fail(err, EPERM, "mknod (the host's `%s` is another device, not bound instead)", path);
        return device_bind(dirfd, base, fd_path(src, host), err);
}

/* Create one device node at path inside the root: mknod, or a bind of the
 * host's node at the same path where mknod is not allowed (in a user namespace;
 * or refused by the device cgroup, if the host's node is the same device).
 * An existing node is kept, so linux.devices win over the defaults. */
static int device_create(int rootfd, const char *path, mode_t type, unsigned int major, unsigned int minor,
                         mode_t mode, uid_t uid, gid_t gid, bool in_userns, cap_error_t *err)
{
        cleanup_free char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (slash)
                *slash = '\0';
        if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                return cap_fail(err, EINVAL, "invalid device path");
        cleanup_close int dirfd = open_in_root(rootfd, slash ? dir : "/", CREATE_DIR, err);
        if (dirfd < 0)
                return -1;

        if (in_userns) {
                struct stat st;
                if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        return 0;
                return device_bind(dirfd, base, path, err);
        }
        if (mknodat(dirfd, base, type | (mode & 07777), makedev(major, minor)) < 0) {
                if (errno == EEXIST)
                        return 0;
                if (errno == EPERM)
                        return device_bind_host(dirfd, base, path, type, major, minor, err);
                return cap_fail(err, errno, "mknod");
        }
        /* mknod applied the umask; set the exact mode. */
        if (fchmodat(dirfd, base, mode & 07777, 0) < 0)
                return cap_fail(err, errno, "chmod");
        if (fchownat(dirfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return cap_fail(err, errno, "chown");
        return 0;
}

static int spec_device_create(int rootfd, const struct spec_device *d, bool in_userns, cap_error_t *err)
{
        mode_t type;
        switch (d->type) {
        case 'c':
        case 'u':
                type = S_IFCHR;
                break;
        case 'b':
                type = S_IFBLK;
                break;
        case 'p':
                type = S_IFIFO;
                break;
        default:
                return cap_fail(err, EINVAL, "type: unknown device type `%c`", d->type);
        }
        mode_t mode = d->file_mode.set ? (mode_t)d->file_mode.v : 0666;
        return device_create(rootfd, d->path, type, (unsigned int)d->major, (unsigned int)d->minor, mode,
                             d->uid.set ? (uid_t)d->uid.v : 0, d->gid.set ? (gid_t)d->gid.v : 0, in_userns, err);
}

bool dev_is_bind_mounted(const struct spec *spec)
{
        for (size_t i = 0; i < spec->n_mounts; i++) {
                const struct spec_mount *m = &spec->mounts[i];
                const char *d = m->destination;
                if (!d || strncmp(d, "/dev", 4) != 0 || d[4 + strspn(d + 4, "/")] != '\0')
                        continue;
                struct mount_options mo = { 0 };
                cap_error_t ignored = NULL;
                if (mount_options_parse(m->options, &mo, &ignored) < 0) {
                        cap_error_free(&ignored);
                        continue;
                }
                bool bind = is_bind(m, &mo);
                mount_options_free(&mo);
                if (bind)
                        return true;
        }
        return false;
}

/* /dev as runc sets it up unless /dev is bind-mounted: linux.devices, the
 * default nodes and the standard links. */
int dev_setup(int rootfd, const struct spec *spec, bool in_userns, cap_error_t *err)
{
        for (size_t i = 0; i < spec->linux.n_devices; i++) {
                const struct spec_device *d = &spec->linux.devices[i];
                if (!d->path || d->path[0] != '/')
                        return cap_fail(err, EINVAL, "linux.devices[%zu]: path must be absolute", i);
                if (spec_device_create(rootfd, d, in_userns, err) < 0)
                        return cap_error_prefix(err, "linux.devices[%zu] (%s)", i, d->path);
        }
        for (size_t i = 0; i < ARRAY_SIZE(default_devices); i++) {
                const struct default_device *d = &default_devices[i];
                cleanup_free char *path = xasprintf("/dev/%s", d->name);
                if (device_create(rootfd, path, S_IFCHR, d->major, d->minor, 0666, 0, 0, in_userns, err) < 0)
                        return cap_error_prefix(err, "%s", path);
        }

        cleanup_close int dev = open_in_root(rootfd, "/dev", CREATE_DIR, err);
        if (dev < 0)
                return -1;
        cleanup_close int devdir = openat(dev, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (devdir < 0)
                return cap_fail(err, errno, "open /dev");
        for (size_t i = 0; i < ARRAY_SIZE(default_links); i++)
                if (symlinkat(default_links[i][1], devdir, default_links[i][0]) < 0 && errno != EEXIST)
                        return cap_fail(err, errno, "symlink /dev/%s", default_links[i][0]);
        if (access("/proc/kcore", F_OK) == 0 && symlinkat("/proc/kcore", devdir, "core") < 0 && errno != EEXIST)
                return cap_fail(err, errno, "symlink /dev/core");
        /* The devpts instance mounted on /dev/pts brings its own ptmx. */
        if (unlinkat(devdir, "ptmx", 0) < 0 && errno != ENOENT)
                return cap_fail(err, errno, "remove /dev/ptmx");
        if (symlinkat("pts/ptmx", devdir, "ptmx") < 0)
                return cap_fail(err, errno, "symlink /dev/ptmx");
        return 0;
}
