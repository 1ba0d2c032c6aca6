/* Mounts: paths resolved inside the root, bind and filesystem mounts, tmpcopyup, mountinfo. */
#include "runtime/rootfs_internal.h"

#include <dirent.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/util.h"

#define SYMLINK_MAX_HOPS 40

/* statfs f_flags bits that a bind remount must repeat when they are locked
 * (a mount inherited from a more privileged user namespace). */
static const struct {
        unsigned long st, ms;
} lockable_flags[] = {
        { ST_RDONLY, MS_RDONLY },
        { ST_NOSUID, MS_NOSUID },
        { ST_NODEV, MS_NODEV },
        { ST_NOEXEC, MS_NOEXEC },
};

static void mount_options_freep(struct mount_options *mo)
{
        mount_options_free(mo);
}

#define cleanup_mount_options __attribute__((cleanup(mount_options_freep)))

const char *fd_path(char buf[FD_PATH_MAX], int fd)
{
        snprintf(buf, FD_PATH_MAX, "/proc/self/fd/%d", fd);
        return buf;
}

unsigned long locked_flags(int fd)
{
        struct statfs st;
        unsigned long flags = 0;

        if (fstatfs(fd, &st) < 0)
                return 0;
        for (size_t i = 0; i < ARRAY_SIZE(lockable_flags); i++)
                if ((unsigned long)st.f_flags & lockable_flags[i].st)
                        flags |= lockable_flags[i].ms;
        return flags;
}

static int replace_fd(int *fd, int newfd)
{
        if (newfd < 0)
                return -1;
        close(*fd);
        *fd = newfd;
        return 0;
}

/* Open path inside the root directory rootfd, resolving one component at a
 * time so that neither symlinks (absolute or relative) nor ".." lead outside
 * it, as if the process were chrooted there. Missing components are created:
 * directories, and the last one as an empty file with CREATE_FILE. Returns an
 * O_PATH fd; a mount already on the target is crossed, so the fd is its root. */
int open_in_root(int rootfd, const char *path, enum create_mode mode, cap_error_t *err)
{
        struct stat root_st;
        if (fstat(rootfd, &root_st) < 0)
                return cap_fail(err, errno, "stat container root");

        cleanup_close int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
        if (cur < 0)
                return cap_fail(err, errno, "dup");
        cleanup_free char *work = xstrdup(path);
        const char *p = work;
        int hops = 0;

        for (;;) {
                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                size_t len = strcspn(p, "/");
                cleanup_free char *name = strndup(p, len);
                if (!name)
                        abort();
                p += len;
                bool last = p[strspn(p, "/")] == '\0';

                if (strcmp(name, ".") == 0)
                        continue;
                if (strcmp(name, "..") == 0) {
                        struct stat st;
                        if (fstat(cur, &st) < 0)
                                return cap_fail(err, errno, "stat `%s`", path);
                        if (st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino)
                                continue;
                        if (replace_fd(&cur, openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
                                return cap_fail(err, errno, "open `%s`", path);
                        continue;
                }

                struct stat st;
                if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT || mode == CREATE_NONE)
                                return cap_fail(err, errno, "%s", path);
                        if (last && mode == CREATE_FILE) {
                                int fd = openat(cur, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                                if (fd < 0 && errno != EEXIST)
                                        return cap_fail(err, errno, "create `%s`", path);
                                if (fd >= 0)
                                        close(fd);
                        } else if (mkdirat(cur, name, 0755) < 0 && errno != EEXIST) {
                                return cap_fail(err, errno, "mkdir `%s`", path);
                        }
                        if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                return cap_fail(err, errno, "%s", path);
                }

                if (S_ISLNK(st.st_mode)) {
                        if (++hops > SYMLINK_MAX_HOPS)
                                return cap_fail(err, ELOOP, "%s", path);
                        char target[PATH_MAX];
                        ssize_t n = readlinkat(cur, name, target, sizeof(target) - 1);
                        if (n < 0)
                                return cap_fail(err, errno, "readlink `%s`", path);
                        target[n] = '\0';
                        if (target[0] == '/' && replace_fd(&cur, fcntl(rootfd, F_DUPFD_CLOEXEC, 0)) < 0)
                                return cap_fail(err, errno, "dup");
                        /* Continue with the link target followed by what is left. */
                        char *next = xasprintf("%s/%s", target, p);
                        free(work);
                        work = next;
                        p = work;
                        continue;
                }
                if (replace_fd(&cur, openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0)
                        return cap_fail(err, errno, "open `%s`", path);
        }
        return steal_fd(&cur);
}

static void unescape_octal(char *s)
{
        char *w = s;
        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else {
                        *w++ = *r;
                }
        }
        *w = '\0';
}

void mountinfo_free(struct mountinfo *mi, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(mi[i].root);
                free(mi[i].mount_point);
                free(mi[i].optional);
                free(mi[i].fstype);
                free(mi[i].super_options);
        }
        free(mi);
}

int mountinfo_read(struct mountinfo **out, size_t *n_out, cap_error_t *err)
{
        cleanup_free char *text = NULL;
        if (read_file("/proc/self/mountinfo", &text, NULL, 0, err) < 0)
                return -1;

        size_t n = 0, cap = 64;
        struct mountinfo *mi = xmalloc0(cap * sizeof(*mi));
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                cleanup_strv char **f = strv_split(line, " ");
                size_t nf = strv_len(f), sep = 6;
                while (sep < nf && strcmp(f[sep], "-") != 0)
                        sep++;
                if (sep + 2 >= nf)
                        continue;
                if (n == cap) {
                        cap *= 2;
                        struct mountinfo *nm = realloc(mi, cap * sizeof(*mi));
                        if (!nm)
                                abort();
                        mi = nm;
                }
                struct mountinfo *e = &mi[n++];
                *e = (struct mountinfo){ 0 };
                e->id = atoi(f[0]);
                e->root = xstrdup(f[3]);
                e->mount_point = xstrdup(f[4]);
                unescape_octal(e->root);
                unescape_octal(e->mount_point);
                e->optional = xstrdup("");
                for (size_t i = 6; i < sep; i++) {
                        char *o = xasprintf("%s%s%s", e->optional, *e->optional ? " " : "", f[i]);
                        free(e->optional);
                        e->optional = o;
                }
                e->fstype = xstrdup(f[sep + 1]);
                e->super_options = xstrdup(sep + 3 < nf ? f[sep + 3] : "");
        }
        *out = mi;
        *n_out = n;
        return 0;
}

/* pivot_root refuses a new root whose parent mount is shared, and a shared
 * parent would also propagate the rootfs bind to the host: make it private. */
int rootfs_parent_mount_private(const char *root, cap_error_t *err)
{
        struct statx stx;
        if (statx(AT_FDCWD, root, 0, STATX_MNT_ID, &stx) < 0)
                return cap_fail(err, errno, "root.path: statx `%s`", root);
        if (!(stx.stx_mask & STATX_MNT_ID))
                return cap_fail(err, ENOSYS, "root.path: mount id of `%s`", root);

        struct mountinfo *mi;
        size_t n;
        if (mountinfo_read(&mi, &n, err) < 0)
                return -1;
        int ret = 0;
        for (size_t i = 0; i < n; i++) {
                if ((unsigned long long)mi[i].id != stx.stx_mnt_id)
                        continue;
                if (strstr(mi[i].optional, "shared:") && mount(NULL, mi[i].mount_point, NULL, MS_PRIVATE, NULL) < 0)
                        ret = cap_fail(err, errno, "make `%s` private", mi[i].mount_point);
                break;
        }
        mountinfo_free(mi, n);
        return ret;
}

static int set_propagation(int fd, unsigned long propagation, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        if (propagation && mount(NULL, fd_path(buf, fd), NULL, propagation, NULL) < 0)
                return cap_fail(err, errno, "set propagation");
        return 0;
}

static int set_recursive_ro(int fd, cap_error_t *err)
{
        struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY };
        if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
                return cap_fail(err, errno, "mount_setattr rro");
        return 0;
}

/* Flags a bind remount applies: what was asked (binds ignore them on the first mount). */
unsigned long bind_remount_flags(const struct mount_options *mo)
{
        return mo->flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
}

/* Bind source onto dest (created as a directory or a file), then remount it with flags. */
int bind_mount(int rootfd, const char *source, const char *dest, enum create_mode create, unsigned long flags,
                      bool recursive, bool in_userns, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_close int target = open_in_root(rootfd, dest, create, err);
        if (target < 0)
                return -1;
        if (mount(source, fd_path(buf, target), NULL, MS_BIND | (recursive ? MS_REC : 0), NULL) < 0)
                return cap_fail(err, errno, "mount %s", source);
        if (!flags)
                return 0;
        /* The fd still points below the new mount: reopen to reach its root. */
        cleanup_close int mnt = open_in_root(rootfd, dest, CREATE_NONE, err);
        if (mnt < 0)
                return -1;
        if (in_userns)
                flags |= locked_flags(mnt);
        if (mount(NULL, fd_path(buf, mnt), NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
                return cap_fail(err, errno, "remount %s", dest);
        return 0;
}

/* tmpcopyup walks the image's tree with a stack of open directories, not by recursion: a
 * deep tree must not overflow init's stack. Two fds per level bound it under RLIMIT_NOFILE. */
#define COPYUP_MAX_DEPTH 256

/* Copy the entry name of src into dst (both directory fds), keeping its mode and owner. For a
 * directory, *sub_src and *sub_dst receive the pair to copy next. */
static int copy_entry(int src, int dst, const char *name, int *sub_src, int *sub_dst, cap_error_t *err)
{
        struct stat st;
        if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return cap_fail(err, errno, "tmpcopyup: stat `%s`", name);
        if (S_ISDIR(st.st_mode)) {
                if (mkdirat(dst, name, st.st_mode & 07777) < 0)
                        return cap_fail(err, errno, "tmpcopyup: mkdir `%s`", name);
                *sub_src = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                *sub_dst = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (*sub_src < 0 || *sub_dst < 0)
                        return cap_fail(err, errno, "tmpcopyup: open `%s`", name);
        } else if (S_ISLNK(st.st_mode)) {
                char target[PATH_MAX];
                ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);
                if (n < 0)
                        return cap_fail(err, errno, "tmpcopyup: readlink `%s`", name);
                target[n] = '\0';
                if (symlinkat(target, dst, name) < 0)
                        return cap_fail(err, errno, "tmpcopyup: symlink `%s`", name);
        } else if (S_ISREG(st.st_mode)) {
                cleanup_close int s = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                cleanup_close int t = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
                char buf[65536];
                ssize_t n = 0;
                if (s < 0 || t < 0)
                        return cap_fail(err, errno, "tmpcopyup: open `%s`", name);
                while ((n = read(s, buf, sizeof(buf))) > 0)
                        if (write_all(t, buf, (size_t)n) < 0)
                                break;
                if (n != 0)
                        return cap_fail(err, errno, "tmpcopyup: copy `%s`", name);
        } else if (mknodat(dst, name, st.st_mode, st.st_rdev) < 0) {
                return cap_fail(err, errno, "tmpcopyup: mknod `%s`", name);
        }
        if (fchownat(dst, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
            (!S_ISLNK(st.st_mode) && fchmodat(dst, name, st.st_mode & 07777, 0) < 0))
                return cap_fail(err, errno, "tmpcopyup: set owner and mode of `%s`", name);
        return 0;
}

struct copy_level {
        DIR *src;
        int dst;
};

/* Push the pair (src, dst), taking both fds; a full stack is the depth error. */
static int copy_push(struct copy_level *stack, int *depth, int src, int dst, const char *name, cap_error_t *err)
{
        DIR *d = *depth < COPYUP_MAX_DEPTH ? fdopendir(src) : NULL;
        if (!d) {
                int e = errno;
                close(src);
                close(dst);
                if (*depth >= COPYUP_MAX_DEPTH)
                        return cap_fail(err, 0, "tmpcopyup: `%s` is nested deeper than %d directories", name, COPYUP_MAX_DEPTH);
                return cap_fail(err, e, "tmpcopyup: opendir `%s`", name);
        }
        stack[(*depth)++] = (struct copy_level){ d, dst };
        return 0;
}

/* Copy the tree below src into dst (both directory fds, not taken), keeping modes and owners. */
static int copy_tree(int src, int dst, cap_error_t *err)
{
        cleanup_free struct copy_level *stack = xmalloc0(sizeof(*stack) * COPYUP_MAX_DEPTH);
        int depth = 0, ret;
        int s = openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int t = s < 0 ? -1 : fcntl(dst, F_DUPFD_CLOEXEC, 0);
        if (s < 0 || t < 0) {
                ret = cap_fail(err, errno, "tmpcopyup: open");
                cap_closep(&s);
                return ret;
        }
        ret = copy_push(stack, &depth, s, t, ".", err);
        while (ret == 0 && depth > 0) {
                struct copy_level *top = &stack[depth - 1];
                errno = 0;
                struct dirent *de = readdir(top->src);
                if (!de) {
                        if (errno)
                                ret = cap_fail(err, errno, "tmpcopyup: readdir");
                        closedir(top->src);
                        close(top->dst);
                        depth--;
                        continue;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                int sub_src = -1, sub_dst = -1;
                ret = copy_entry(dirfd(top->src), top->dst, de->d_name, &sub_src, &sub_dst, err);
                if (ret == 0 && sub_src >= 0)
                        ret = copy_push(stack, &depth, sub_src, sub_dst, de->d_name, err);
                else if (ret < 0) {
                        cap_closep(&sub_src);
                        cap_closep(&sub_dst);
                }
        }
        while (depth > 0) {
                depth--;
                closedir(stack[depth].src);
                close(stack[depth].dst);
        }
        return ret;
}

/* A filesystem mount (tmpfs, proc, ...) on dest, which must be a directory. */
static int fs_mount(int rootfd, const struct spec_mount *m, const struct mount_options *mo, cap_error_t *err)
{
        char buf[FD_PATH_MAX];
        cleanup_close int target = open_in_root(rootfd, m->destination, CREATE_DIR, err);
        if (target < 0)
                return -1;
        /* Keep the directory below the tmpfs open: it is the tmpcopyup source. */
        cleanup_close int below = -1;
        if (strcmp(m->type, "tmpfs") == 0 && strv_contains(m->options, "tmpcopyup")) {
                below = openat(target, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (below < 0)
                        return cap_fail(err, errno, "open %s", m->destination);
        }
        const char *source = m->source && *m->source ? m->source : m->type;
        if (mount(source, fd_path(buf, target), m->type, mo->flags, mo->data) < 0)
                return cap_fail(err, errno, "mount %s", source);
        if (below >= 0) {
                cleanup_close int mnt = open_in_root(rootfd, m->destination, CREATE_NONE, err);
                if (mnt < 0)
                        return -1;
                cleanup_close int dir = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dir < 0)
                        return cap_fail(err, errno, "open %s", m->destination);
                if (copy_tree(below, dir, err) < 0)
                        return -1;
        }
        return 0;
}

bool is_bind(const struct spec_mount *m, const struct mount_options *mo)
{
        return mo->bind || mo->rbind || (m->type && strcmp(m->type, "bind") == 0);
}

/* Filesystems a user namespace may not mount without owning the matching
 * namespace; runc then binds the host's instance. */
static const char *userns_fallback_source(const char *type)
{
        if (strcmp(type, "sysfs") == 0)
                return "/sys";
        if (strcmp(type, "mqueue") == 0)
                return "/dev/mqueue";
        return NULL;
}

/* Whether dest resolves to the root itself. In the host's mount namespace a mount there would
 * cover the rootfs directory, where it cannot be told from a mount the host made. */
static bool is_root(int rootfd, const char *dest)
{
        cleanup_error cap_error_t ignored = NULL;
        cleanup_close int fd = open_in_root(rootfd, dest, CREATE_NONE, &ignored);
        struct stat a, b;
        return fd >= 0 && fstat(fd, &a) == 0 && fstat(rootfd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int mount_entry(int rootfd, const struct spec *spec, const struct spec_mount *m, bool in_userns,
                       cap_error_t *err)
{
        cleanup_mount_options struct mount_options mo = { 0 };
        if (mount_options_parse(m->options, &mo, err) < 0)
                return -1;
        if (!m->destination || m->destination[0] != '/')
                return cap_fail(err, EINVAL, "destination must be an absolute path");
        if (!spec_namespace(spec, CLONE_NEWNS) && is_root(rootfd, m->destination))
                return cap_fail(err, EINVAL, "destination is the rootfs itself: that needs a mount namespace");

        int ret;
        if (is_bind(m, &mo)) {
                if (!m->source)
                        return cap_fail(err, EINVAL, "bind mount without a source");
                struct stat st;
                if (stat(m->source, &st) < 0)
                        return cap_fail(err, errno, "mount %s", m->source);
                ret = bind_mount(rootfd, m->source, m->destination, S_ISDIR(st.st_mode) ? CREATE_DIR : CREATE_FILE,
                                 bind_remount_flags(&mo), mo.rbind, in_userns, err);
        } else if (!m->type || !*m->type) {
                return cap_fail(err, EINVAL, "type is required unless the mount is a bind");
        } else if (strcmp(m->type, "cgroup") == 0) {
                ret = cgroup_mount(rootfd, spec, m, &mo, in_userns, err);
        } else {
                ret = fs_mount(rootfd, m, &mo, err);
                const char *fallback = userns_fallback_source(m->type);
                if (ret < 0 && in_userns && fallback && (*err)->errnum == EPERM) {
                        /* Without the host's instance to bind, the EPERM is the error that explains. */
                        cleanup_error cap_error_t bind_err = NULL;
                        ret = bind_mount(rootfd, fallback, m->destination, CREATE_DIR, bind_remount_flags(&mo),
                                         true, true, &bind_err);
                        if (ret == 0)
                                cap_error_free(err);
                }
        }
        if (ret < 0)
                return -1;
        if (mo.propagation || mo.recursive_ro) {
                cleanup_close int mnt = open_in_root(rootfd, m->destination, CREATE_NONE, err);
                if (mnt < 0)
                        return -1;
                if (mo.recursive_ro && set_recursive_ro(mnt, err) < 0)
                        return -1;
                if (set_propagation(mnt, mo.propagation, err) < 0)
                        return -1;
        }
        return 0;
}
