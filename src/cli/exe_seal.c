/* The commands whose children run in a container start from a copy of capsule that nothing can
 * write (CVE-2019-5736): a process in the container must not reach the host's capsule file
 * through /proc/PID/exe, a #!/proc/self/exe script or a kept descriptor.
 *
 * First choice, as runc does: the binary seen through an overlayfs of its directory, mounted
 * nowhere. An overlay writes only to an upper layer and this one has none, so the file stays
 * read-only for good (a remount cannot change that), with no copy: every container shares the
 * binary's page cache. It needs CAP_SYS_ADMIN and an existing state root (the overlay's second
 * layer, since a lower-only overlay needs two). Otherwise (rootless, no overlayfs) the binary is
 * copied into a sealed memfd. */
#include "cli/exe_seal.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"

#define EXE_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
/* The overlay's mount id, for the copy that runs from it to recognise it. */
#define EXE_OVERLAY_ENV "CAPSULE_EXE_OVERLAY"

static bool exe_mount_id(int dirfd, const char *path, int flags, unsigned long long *id)
{
        struct statx stx;
        if (statx(dirfd, path, flags, STATX_MNT_ID, &stx) < 0 || !(stx.stx_mask & STATX_MNT_ID))
                return false;
        *id = stx.stx_mnt_id;
        return true;
}

/* Running from the overlay that exe_overlay() made: a read-only overlayfs whose mount id the
 * exec passed along. The variable goes at once, so that nothing capsule starts inherits it. */
static bool running_from_overlay(void)
{
        const char *want = getenv(EXE_OVERLAY_ENV);
        if (want == NULL)
                return false;
        unsigned long long id;
        struct statfs sfs;
        char *end;
        unsigned long long expected = strtoull(want, &end, 10);
        bool ok = *want && *end == '\0' && statfs("/proc/self/exe", &sfs) == 0 && sfs.f_type == OVERLAYFS_SUPER_MAGIC &&
                  (sfs.f_flags & ST_RDONLY) && exe_mount_id(AT_FDCWD, "/proc/self/exe", 0, &id) && id == expected;
        unsetenv(EXE_OVERLAY_ENV);
        return ok;
}

static bool running_from_memfd(void)
{
        cleanup_close int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        int seals = fcntl(fd, F_GET_SEALS);
        return seals >= 0 && (seals & EXE_SEALS) == EXE_SEALS;
}

bool exe_sealed(void)
{
        return running_from_overlay() || running_from_memfd();
}

/* dir, with overlayfs's separator and escape character escaped, at out (room for twice dir). */
static char *lower_escape(char *out, const char *dir)
{
        for (; *dir; dir++) {
                if (*dir == ':' || *dir == '\\')
                        *out++ = '\\';
                *out++ = *dir;
        }
        return out;
}

/* An O_PATH descriptor of dir/name through a fresh read-only overlay of dir (on top, so nothing
 * in root hides it) and root; -1 if this host or user cannot make one. */
static int exe_overlay(const char *dir, const char *name, const char *root)
{
        struct stat st;
        if (stat(root, &st) < 0 || !S_ISDIR(st.st_mode))
                return -1;
        cleanup_free char *lower = xmalloc0(2 * (strlen(dir) + strlen(root)) + 3);
        char *end = lower_escape(lower, dir);
        *end++ = ':';
        *lower_escape(end, root) = '\0';
        cleanup_close int ctx = fsopen("overlay", FSOPEN_CLOEXEC);
        if (ctx < 0 || fsconfig(ctx, FSCONFIG_SET_STRING, "lowerdir", lower, 0) < 0)
                return -1;
        /* Only to keep the kernel quiet about layers on different file systems. */
        (void)fsconfig(ctx, FSCONFIG_SET_STRING, "xino", "off", 0);
        if (fsconfig(ctx, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return -1;
        cleanup_close int mnt = fsmount(ctx, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
        if (mnt < 0)
                return -1;
        return openat(mnt, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
}

/* The bytes of the ELF file exe that execve loads: up to the end of its last PT_LOAD segment.
 * The debug sections after it (most of the file) are not copied; on any doubt, the whole file. */
static off_t loaded_size(int exe, off_t file_size)
{
        Elf64_Ehdr eh;
        if (pread(exe, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
            eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
                return file_size;
        off_t end = (off_t)(eh.e_phoff + (Elf64_Off)eh.e_phnum * sizeof(Elf64_Phdr));
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                if (pread(exe, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))) != (ssize_t)sizeof(ph))
                        return file_size;
                if (ph.p_type == PT_LOAD && (off_t)(ph.p_offset + ph.p_filesz) > end)
                        end = (off_t)(ph.p_offset + ph.p_filesz);
        }
        return end < file_size ? end : file_size;
}

static int exe_memfd(cap_error_t *err)
{
        cleanup_close int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (exe < 0 || fstat(exe, &st) < 0)
                return cap_fail(err, errno, "open /proc/self/exe");
        cleanup_close int mem = memfd_create("capsule", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (mem < 0)
                return cap_fail(err, errno, "memfd_create");
        for (off_t left = loaded_size(exe, st.st_size); left > 0;) {
                ssize_t n = sendfile(mem, exe, NULL, (size_t)left);
                if (n <= 0)
                        return cap_fail(err, n < 0 ? errno : EIO, "copy /proc/self/exe to a memfd");
                left -= n;
        }
        if (fcntl(mem, F_ADD_SEALS, EXE_SEALS) < 0)
                return cap_fail(err, errno, "seal the memfd copy of capsule");
        int fd = mem;
        mem = -1;
        return fd;
}

void exe_dir_export(void)
{
        cleanup_free char *exe = realpath("/proc/self/exe", NULL);
        if (exe) {
                char *slash = strrchr(exe, '/');
                *slash = '\0';
                setenv(SANDBOX_EXE_DIR_ENV, slash == exe ? "/" : exe, 1);
        }
}

int exe_reexec_sealed(const char *root, char **argv, cap_error_t *err)
{
        extern char **environ;
        unsigned long long id;
        cleanup_close int fd = -1;
        cleanup_free char *exe = realpath("/proc/self/exe", NULL);
        if (exe) {
                char *slash = strrchr(exe, '/');
                *slash = '\0';
                fd = exe_overlay(slash == exe ? "/" : exe, slash + 1, root);
        }
        if (fd >= 0 && exe_mount_id(fd, "", AT_EMPTY_PATH, &id)) {
                char value[32];
                snprintf(value, sizeof(value), "%llu", id);
                setenv(EXE_OVERLAY_ENV, value, 1);
                fexecve(fd, argv, environ);
                unsetenv(EXE_OVERLAY_ENV);
        }
        cap_closep(&fd);
        fd = exe_memfd(err);
        if (fd < 0)
                return -1;
        fexecve(fd, argv, environ);
        return cap_fail(err, errno, "execute the sealed copy of capsule");
}
