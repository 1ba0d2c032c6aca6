/* A block-device rootfs: the annotation SANDBOX_ROOTFS_BLOCK_ANNOTATION names a disk image in the
 * bundle directory, which the guest mounts as the container's rootfs instead of the virtio-fs
 * share. config.json is hostile: the name is resolved beneath the bundle directory following no
 * symlink, magic link or `..` out of it, and only a regular file with one link is taken (a device
 * node there could be the host's disk, another hard link the name of a host file). The file is
 * opened O_PATH, so that no device or FIFO is ever opened for real; the VMM reopens this very
 * inode through the descriptor, and nothing can swap the file meanwhile. */
#include "sandbox/sandbox_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

#define WHAT "annotation " SANDBOX_ROOTFS_BLOCK_ANNOTATION

/* Whether a VM (or another program) holds a lock the VMM's would conflict with: it takes the
 * same one again once it runs, but here the refusal can name the annotation. A regular file's
 * reopening has no side effect; the lock goes with this descriptor. */
static bool image_locked(int image, bool readonly)
{
        char path[32];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", image);
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        return fd >= 0 && flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

int sandbox_rootfs_open(const struct spec *spec, const char *bundle, int *fd, cap_error_t *err)
{
        *fd = -1;
        const char *name = sandbox_annotation(spec, SANDBOX_ROOTFS_BLOCK_ANNOTATION);
        if (!name)
                return 0;
        if (!*name || name[0] == '/' || strlen(name) >= PATH_MAX)
                return cap_fail(err, 0, WHAT ": `%.256s` is not a relative path inside the bundle directory", name);
        cleanup_close int dir = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return cap_fail(err, errno, "bundle `%s`", bundle);
        struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        cleanup_close int image = (int)syscall(SYS_openat2, dir, name, &how, sizeof(how));
        if (image < 0 && errno == EXDEV)
                return cap_fail(err, 0, WHAT ": `%s` leads out of the bundle directory", name);
        if (image < 0 && errno == ELOOP)
                return cap_fail(err, 0, WHAT ": `%s` is or passes through a symbolic link, which is not followed", name);
        if (image < 0 && errno == ENOENT)
                return cap_fail(err, 0, WHAT ": `%s` does not exist in the bundle directory", name);
        if (image < 0)
                return cap_fail(err, errno, WHAT ": `%s`", name);
        struct stat st;
        if (fstat(image, &st) < 0)
                return cap_fail(err, errno, WHAT ": `%s`", name);
        if (!S_ISREG(st.st_mode))
                return cap_fail(err, 0, WHAT ": `%s` is not a regular file (a disk image)", name);
        if (st.st_nlink != 1)
                return cap_fail(err, 0, WHAT ": `%s` has other hard links, which may name a file outside the bundle", name);
        if (image_locked(image, spec->root_readonly))
                return cap_fail(err, 0, WHAT ": `%s` is in use by another VM or program (it is locked)", name);
        *fd = steal_fd(&image);
        return 0;
}
